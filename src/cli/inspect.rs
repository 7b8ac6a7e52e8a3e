//! `shipsec journal inspect DIR`: what a journal holds, for operators — each run with its
//! status, how many of its nodes ended (and how), its facts and bytes, and the journal's
//! disk use.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use shipsec_orchestrator::journal::FactKind;
use shipsec_orchestrator::journal::{self, FjallStore, JournalStore, StoredRunLog};

/// Prints the journal in `dir`.
pub(crate) fn inspect(dir: &Path) -> Result<()> {
    // A journal that lost acknowledged data is refused here as on start, with the loss.
    let (store, _) = FjallStore::open(dir)?;
    let mut runs = journal::load(&store)?;
    runs.sort_by_key(|r| std::cmp::Reverse(r.header.accepted.accepted_at));
    say!(
        "{:36}  {:10}  {:>13}  {:>7}  {:>10}  ended by kind",
        "run",
        "status",
        "nodes ended",
        "facts",
        "bytes"
    );
    for run in &runs {
        print_run(run);
    }
    let unfinished = runs.iter().filter(|r| r.header.finished.is_none()).count();
    say!(
        "{} runs ({unfinished} unfinished), {} bytes of records, {} bytes on disk, at {}",
        runs.len(),
        runs.iter().map(|r| r.bytes).sum::<u64>(),
        store.disk_space()?,
        store.location()
    );
    Ok(())
}

fn print_run(run: &StoredRunLog) {
    let mut ended: BTreeMap<&str, u32> = BTreeMap::new();
    for fact in &run.facts {
        let kind = match fact.kind {
            FactKind::Completed { .. } => "completed",
            FactKind::Failed { .. } => "failed",
            FactKind::Skipped { .. } => "skipped",
            FactKind::Cancelled { .. } => "cancelled",
            _ => continue,
        };
        *ended.entry(kind).or_default() += 1;
    }
    let status = run
        .header
        .finished
        .as_ref()
        .map_or("UNFINISHED", |f| f.status.as_str());
    let total: u32 = ended.values().sum();
    let kinds: Vec<String> = ended.iter().map(|(k, n)| format!("{k} {n}")).collect();
    say!(
        "{:36}  {:10}  {:>13}  {:>7}  {:>10}  {}",
        run.header.accepted.run_id,
        status,
        format!("{total}/{}", run.header.accepted.nodes),
        run.facts.len(),
        run.bytes,
        kinds.join(", ")
    );
}
