//! The journal's records and files: encoding round trips (proptest), the committed golden
//! journal of format version 1 (it must keep decoding, and replay to the same run), and
//! damaged files — a torn tail (the file cut at every byte of its last batches), flipped
//! bits (every byte of the last batches, every 500th of the log, and every 500th of the
//! log a real engine wrote), a deleted, emptied or zeroed log — which open with every
//! acknowledged batch or are refused naming the loss, never with less, silently; and the
//! operator's explicit acceptance of a loss, which lists and records it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::definition::JsonObject;
use shipsec_orchestrator::runtime::journal::record::{
    self, AcceptedRecord, ErrorRecord, Fact, FactKind, FinishedRecord, HandledRecord, RunHeader,
    StartRecord,
};
use shipsec_orchestrator::runtime::journal::replay;
use shipsec_orchestrator::runtime::journal::store::Op;
use shipsec_orchestrator::runtime::journal::{
    self as journal, Durability, FjallStore, Journal, JournalStore, LossPolicy, MemoryStore,
    StoreError,
};
use shipsec_orchestrator::runtime::semantics::plan::RunPlan;
use shipsec_orchestrator::{EngineConfig, Orchestrator, ShutdownMode, SubmitOptions};

// ---------------------------------------------------------------------------------------
// Round trips

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9 ]{0,12}",
        any::<String>(),
        Just("{\"k\":[1,2,{\"x\":null}],\"ü\":\"\\u0000\"}".to_owned()),
    ]
}

fn start() -> impl Strategy<Value = StartRecord> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        any::<u64>(),
        prop::collection::vec(any::<u32>(), 0..4),
    )
        .prop_map(
            |(node, attempt, withdraw, first_started, triggered_by)| StartRecord {
                node,
                attempt,
                withdraw,
                first_started,
                triggered_by,
            },
        )
}

fn error() -> impl Strategy<Value = ErrorRecord> {
    (text(), text(), any::<bool>()).prop_map(|(error_type, message, retryable)| ErrorRecord {
        error_type,
        message,
        retryable,
    })
}

fn finished() -> impl Strategy<Value = FinishedRecord> {
    (text(), any::<u64>()).prop_map(|(status, finished_at)| FinishedRecord {
        status,
        finished_at,
    })
}

fn kind() -> impl Strategy<Value = FactKind> {
    let handled = (text(), text(), text()).prop_map(|(at, name, message)| HandledRecord {
        at,
        name,
        message,
    });
    prop_oneof![
        Just(FactKind::Started),
        start().prop_map(FactKind::Queued),
        start().prop_map(FactKind::AttemptStarted),
        (any::<u32>(), any::<u32>(), any::<u64>(), error()).prop_map(
            |(node, attempt, delay_micros, error)| FactKind::Retrying {
                node,
                attempt,
                delay_micros,
                error,
            }
        ),
        (
            any::<u32>(),
            any::<u32>(),
            text(),
            prop::option::of(prop::collection::vec(text(), 0..3))
        )
            .prop_map(
                |(node, attempts, output, active_ports)| FactKind::Completed {
                    node,
                    attempts,
                    output,
                    active_ports,
                }
            ),
        (any::<u32>(), any::<u32>(), error()).prop_map(|(node, attempts, error)| {
            FactKind::Failed {
                node,
                attempts,
                error,
            }
        }),
        any::<u32>().prop_map(|node| FactKind::Skipped { node }),
        (
            any::<u32>(),
            any::<u32>(),
            text(),
            prop::option::of(handled)
        )
            .prop_map(|(node, attempts, reason, handled)| FactKind::Cancelled {
                node,
                attempts,
                reason,
                handled,
            }),
        (any::<u32>(), any::<u32>(), text()).prop_map(|(node, generation, cause)| {
            FactKind::NodeDied {
                node,
                generation,
                cause,
            }
        }),
        any::<bool>().prop_map(|terminate| FactKind::StopRequested { terminate }),
        Just(FactKind::DeadlineHit),
        Just(FactKind::GraceOver),
        Just(FactKind::Resumed),
        finished().prop_map(FactKind::Finished),
    ]
}

fn header() -> impl Strategy<Value = RunHeader> {
    let accepted = (
        (text(), text(), any::<u64>(), text()),
        (
            prop::option::of(text()),
            prop::option::of(text()),
            any::<u64>(),
            any::<u32>(),
            text(),
        ),
    )
        .prop_map(
            |(
                (run_id, definition, definition_hash, inputs),
                (idempotency_key, traceparent, accepted_at, nodes, metadata),
            )| AcceptedRecord {
                run_id,
                definition: definition.into(),
                definition_hash,
                inputs,
                idempotency_key,
                traceparent,
                accepted_at,
                nodes,
                metadata,
            },
        );
    (accepted, prop::option::of(finished()), text(), text()).prop_map(
        |(accepted, finished, requests, signals)| RunHeader {
            accepted,
            finished,
            requests,
            signals,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_fact_round_trips(at in any::<u64>(), kind in kind()) {
        let fact = Fact { at, kind };
        let bytes = record::encode(&fact);
        prop_assert_eq!(record::decode::<Fact>(&bytes), Ok(fact));
    }

    #[test]
    fn every_header_round_trips(header in header()) {
        let bytes = record::encode(&header);
        prop_assert_eq!(record::decode::<RunHeader>(&bytes), Ok(header));
    }

    #[test]
    fn a_damaged_fact_is_refused(at in any::<u64>(), kind in kind(), bit in any::<prop::sample::Index>()) {
        let mut bytes = record::encode(&Fact { at, kind });
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(record::decode::<Fact>(&bytes).is_err());
    }
}

// ---------------------------------------------------------------------------------------
// The golden journal of format version 1

/// The golden journal: a run's header, then its facts, each `[u32 LE length][record]`,
/// written by format version 1 (`SHIPSEC_BLESS=1` writes it again, which a change of
/// format must never need).
const GOLDEN: &str = "tests/golden/journal-v1.records";

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN)
}

fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let (record, tail) = tail.split_at(len);
        out.push(record);
        rest = tail;
    }
    out
}

/// Runs `examples/retry.json` on a memory journal and writes its records as the golden.
fn bless() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = Arc::new(MemoryStore::new());
    runtime.block_on(async {
        let journal = Journal::new(store.clone(), Durability::Fsync);
        let handle = Orchestrator::start_with_journal(
            EngineConfig::default(),
            ComponentRegistry::with_builtins(),
            Some(journal),
        )
        .await
        .unwrap();
        let text = std::fs::read_to_string("examples/retry.json").unwrap();
        let workflow = common::workflow(&handle, serde_json::from_str(&text).unwrap());
        let options = SubmitOptions {
            run_id: Some("golden".into()),
            ..SubmitOptions::default()
        };
        let mut run = handle
            .submit_workflow(&workflow, JsonObject::new(), options)
            .await
            .unwrap();
        run.result().await.unwrap();
        handle.shutdown(ShutdownMode::Drain).await.unwrap();
    });
    let runs = store.runs().unwrap();
    let (run_id, header) = &runs[0];
    let mut out = Vec::new();
    let mut push = |record: &[u8]| {
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record);
    };
    push(header);
    for (_, fact) in store.facts(run_id).unwrap() {
        push(&fact);
    }
    std::fs::create_dir_all(golden_path().parent().unwrap()).unwrap();
    std::fs::write(golden_path(), out).unwrap();
}

#[test]
fn the_golden_journal_of_format_1_still_decodes_and_replays() {
    if std::env::var_os("SHIPSEC_BLESS").is_some() {
        bless();
    }
    let bytes = std::fs::read(golden_path()).expect("the golden journal is committed");
    let frames = frames(&bytes);
    assert!(
        frames.iter().all(|f| f[0] == 1),
        "every record is of format 1"
    );
    let header: RunHeader = record::decode_header(frames[0]).expect("the header decodes");
    assert_eq!(
        header.accepted.metadata, "{}",
        "a format 1 run has no metadata"
    );
    let facts: Vec<Fact> = frames[1..]
        .iter()
        .map(|f| record::decode(f).expect("every fact decodes"))
        .collect();
    // Decoding is exact: a fact encoded again (as format 2, whose facts are format 1's)
    // gives the payload that was written.
    for (fact, frame) in facts.iter().zip(&frames[1..]) {
        assert_eq!(&record::encode(fact)[1..], &frame[1..]);
    }
    insta::assert_debug_snapshot!("golden_journal_v1_records", (&header, &facts));
    // And the facts still replay, through this build's cores, to the run they recorded.
    let registry = Arc::new(ComponentRegistry::with_builtins());
    let graph = common::graph(serde_json::from_str(&header.accepted.definition).unwrap());
    let plan = Arc::new(RunPlan::for_replay(
        &header.accepted.run_id,
        graph,
        registry,
        Arc::new(serde_json::from_str(&header.accepted.inputs).unwrap()),
        usize::MAX,
        std::time::Duration::from_secs(5),
    ));
    let (result, events) = replay::finished_run(plan, &facts).expect("the facts replay");
    let statuses: BTreeMap<String, (String, u32)> = result
        .nodes
        .iter()
        .map(|(node, r)| (node.to_string(), (r.status.as_str().to_owned(), r.attempts)))
        .collect();
    insta::assert_debug_snapshot!(
        "golden_journal_v1_replayed",
        (result.status, statuses, events.len())
    );
}

// ---------------------------------------------------------------------------------------
// Damaged files

/// A journal's contents as read back: per run, its header and its facts in order.
type Contents = BTreeMap<String, (Vec<u8>, Vec<Vec<u8>>)>;

fn contents(store: &FjallStore) -> Contents {
    // Every record must decode, and the facts be dense.
    journal::load(store).unwrap();
    store
        .runs()
        .unwrap()
        .into_iter()
        .map(|(run, header)| {
            let facts = store
                .facts(&run)
                .unwrap()
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            (run.to_string(), (header, facts))
        })
        .collect()
}

/// Writes `batches` batches of three runs' facts into a fresh journal in `dir`; returns
/// what it held after each (index `b`: after `b` batches).
/// The header [`write_journal`] writes for `run` in batch `b`, encoded.
fn written_header(run: &str, b: u64) -> Vec<u8> {
    record::encode(&RunHeader {
        accepted: AcceptedRecord {
            run_id: run.to_owned(),
            definition: "{}".into(),
            definition_hash: 0,
            inputs: "{}".into(),
            idempotency_key: None,
            traceparent: None,
            accepted_at: b,
            nodes: 1,
            metadata: "{}".into(),
        },
        finished: None,
        requests: String::new(),
        signals: String::new(),
    })
}

fn write_journal(dir: &Path, batches: u64) -> Vec<Contents> {
    let (store, _) = FjallStore::open(dir).unwrap();
    let mut after = vec![Contents::new()];
    let mut facts = [0u64; 3];
    for b in 1..=batches {
        let mut ops = Vec::new();
        for r in 0..3 {
            let run = format!("run-{r}");
            if b == 1 || b % 7 == r {
                ops.push(Op::PutRun {
                    run_id: run.as_str().into(),
                    value: written_header(&run, b),
                });
            }
            facts[r as usize] += 1;
            ops.push(Op::PutFact {
                run_id: run.as_str().into(),
                seq: facts[r as usize],
                value: record::encode(&Fact {
                    at: b * 10 + r,
                    kind: FactKind::Skipped { node: b as u32 },
                }),
            });
        }
        store.commit(&ops, Durability::Fsync).unwrap();
        after.push(contents(&store));
    }
    after
}

/// The journal file that holds the batches (fjall's active write-ahead log).
fn log_file(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.join("fjall"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    logs.sort();
    logs.pop().expect("a non-empty write-ahead log")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shipsec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A journal of 40 batches, closed and opened once more (which trims its log file to
/// what it holds), with what it held after each batch.
fn prepared(dir: &Path) -> Vec<Contents> {
    let after = write_journal(dir, 40);
    drop(FjallStore::open(dir).unwrap());
    after
}

/// Says the last acknowledged batch was `batch` (the side file a crash between a batch's
/// write and its acknowledgement leaves).
fn acknowledged_up_to(dir: &Path, batch: u64) {
    std::fs::write(dir.join("batches"), batch.to_be_bytes()).unwrap();
}

/// How opening damaged copies went.
#[derive(Debug, Default)]
struct Tally {
    /// Opened with `contents[i]` for each `i` allowed.
    opened: u32,
    /// Refused, naming the loss.
    refused: u32,
}

/// Damages a copy of `original` with `damage` (given its log file) at each of `places`
/// and opens it: it must open with one of `allowed` or refuse with a [`StoreError::Loss`].
fn damage_at(
    original: &Path,
    work: &Path,
    places: impl Iterator<Item = u64>,
    allowed: &[&Contents],
    damage: impl Fn(&Path, u64),
) -> Tally {
    let mut tally = Tally::default();
    for at in places {
        let _ = std::fs::remove_dir_all(work);
        copy_dir(original, work);
        damage(&log_file(work), at);
        match FjallStore::open(work) {
            Ok((store, _)) => {
                let found = contents(&store);
                assert!(
                    allowed.contains(&&found),
                    "damaged at byte {at}: opened with less than was acknowledged ({} runs)",
                    found.len()
                );
                tally.opened += 1;
            }
            Err(StoreError::Loss(loss)) => {
                if tally.refused == 0 {
                    eprintln!("first refusal, damaged at byte {at}: {loss}");
                }
                assert!(loss.to_string().contains("lost acknowledged data"));
                tally.refused += 1;
            }
            Err(other) => panic!("damaged at byte {at}: refused without naming a loss: {other}"),
        }
    }
    tally
}

/// Bytes at the end of the write-ahead log damaged one by one: more than its last batches.
const WINDOW: u64 = 1_200;

fn cut(log: &Path, at: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(log).unwrap();
    file.set_len(at).unwrap();
}

fn flip(log: &Path, at: u64) {
    let mut bytes = std::fs::read(log).unwrap();
    bytes[at as usize] ^= 1 << (at % 8);
    std::fs::write(log, bytes).unwrap();
}

#[test]
fn a_torn_unacknowledged_tail_opens_and_a_cut_into_acknowledged_batches_is_refused() {
    let dir = scratch("torn");
    let original = dir.join("original");
    let after = prepared(&original);
    // The process died after writing batch 40 and before acknowledging it.
    acknowledged_up_to(&original, 39);
    let len = std::fs::metadata(log_file(&original)).unwrap().len();
    let tally = damage_at(
        &original,
        &dir.join("work"),
        len - WINDOW..len,
        &[&after[39], &after[40]],
        cut,
    );
    eprintln!("cut at {WINDOW} places: {tally:?}");
    assert!(tally.opened > 0, "a cut in the unacknowledged batch opens");
    assert!(
        tally.refused > 0,
        "a cut into acknowledged batches is refused"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_flipped_bit_is_refused_with_the_loss_or_changes_nothing() {
    let dir = scratch("flipped");
    let original = dir.join("original");
    let after = prepared(&original);
    let len = std::fs::metadata(log_file(&original)).unwrap().len();
    // Every byte of the last batches, and every 500th byte of the whole log.
    let places = (len - WINDOW..len).chain((0..len).step_by(500));
    let tally = damage_at(&original, &dir.join("work"), places, &[&after[40]], flip);
    eprintln!(
        "flipped at {} places: {tally:?}",
        WINDOW + len.div_ceil(500)
    );
    assert!(tally.refused > 0, "flipped bits are noticed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A way to damage a journal, given its log file.
type Damage = fn(&Path);

#[test]
fn a_deleted_emptied_or_zeroed_log_is_refused_with_the_numbers() {
    let dir = scratch("gone");
    let original = dir.join("original");
    prepared(&original);
    let work = dir.join("work");
    let damages: [(&str, Damage); 4] = [
        ("deleted", |log| std::fs::remove_file(log).unwrap()),
        ("emptied", |log| cut(log, 0)),
        ("zeroed", |log| {
            let len = std::fs::metadata(log).unwrap().len();
            std::fs::write(log, vec![0; len as usize]).unwrap();
        }),
        ("database gone", |log| {
            std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&original, &work);
        damage(&log_file(&work));
        let refused = FjallStore::open(&work).map(|_| ()).unwrap_err();
        let StoreError::Loss(loss) = &refused else {
            panic!("{what}: {refused}");
        };
        assert_eq!(loss.acknowledged, Some(40), "{what}: {refused}");
        assert!(loss.found.is_none_or(|f| f < 40), "{what}: {refused}");
        eprintln!("{what}: {refused}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_accepted_loss_opens_without_it_lists_its_runs_and_records_it() {
    let dir = scratch("accepted");
    let original = dir.join("original");
    let after = prepared(&original);
    let work = dir.join("work");
    copy_dir(&original, &work);
    // A flip in the log's first batch (its first item's tag, right after the batch's
    // start marker, whatever the records' sizes): the 39 after it are readable, and would
    // be dropped.
    flip(&log_file(&work), 13);
    let refused = FjallStore::open(&work).map(|_| ()).unwrap_err();
    let message = refused.to_string();
    assert!(message.contains("damage, not a torn tail"), "{message}");
    assert!(
        message.contains("runs written in what is lost: run-0, run-1, run-2"),
        "{message}"
    );
    assert!(message.contains("--accept-journal-loss"), "{message}");
    let (store, opened) = FjallStore::open_with(&work, LossPolicy::Accept).unwrap();
    let loss = opened.loss.expect("the loss is reported");
    assert_eq!(loss.acknowledged, Some(40));
    assert_eq!(loss.runs.as_ref().map(|r| r.len()), Some(3));
    let found = contents(&store);
    assert!(
        after.contains(&found),
        "what is left is a prefix of what was written"
    );
    drop(store);
    let recorded = std::fs::read_to_string(work.join("losses")).unwrap();
    let line: serde_json::Value = serde_json::from_str(recorded.trim()).unwrap();
    assert_eq!(line["acknowledged"], 40);
    assert_eq!(line["runs"], serde_json::json!(["run-0", "run-1", "run-2"]));
    // Accepted once: the next open starts from what is left, with nothing more to say.
    let (_, reopened) = FjallStore::open(&work).unwrap();
    assert_eq!(reopened.loss, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_real_engine_s_log_with_a_flipped_bit_is_refused_or_opens_whole() {
    let dir = scratch("real-log");
    let original = dir.join("original");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = EngineConfig::default();
        config.journal.data_dir = Some(original.clone());
        let handle = Orchestrator::start(config).await.unwrap();
        let text = std::fs::read_to_string("examples/retry.json").unwrap();
        let workflow = common::workflow(&handle, serde_json::from_str(&text).unwrap());
        for i in 0..12 {
            // Inputs past 4 KiB: fjall compresses such values in its log.
            let mut inputs = JsonObject::new();
            inputs.insert(
                "padding".into(),
                "x".repeat(if i % 3 == 0 { 6_000 } else { 10 }).into(),
            );
            let mut run = handle
                .submit_workflow(&workflow, inputs, SubmitOptions::default())
                .await
                .unwrap();
            run.result().await.unwrap();
        }
        handle.shutdown(ShutdownMode::Drain).await.unwrap();
    });
    let whole = {
        let (store, _) = FjallStore::open(&original).unwrap();
        contents(&store)
    };
    assert_eq!(whole.len(), 12);
    let len = std::fs::metadata(log_file(&original)).unwrap().len();
    assert!(len > 20_000, "the log holds the runs ({len} bytes)");
    let tally = damage_at(
        &original,
        &dir.join("work"),
        (0..len).step_by(500),
        &[&whole],
        flip,
    );
    eprintln!(
        "flipped at {} places of a {len}-byte log: {tally:?}",
        len.div_ceil(500)
    );
    assert!(tally.refused > 0, "flipped bits are noticed");
    // The engine refuses it too, with the loss in its error.
    let work = dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    copy_dir(&original, &work);
    flip(&log_file(&work), 100);
    let mut config = EngineConfig::default();
    config.journal.data_dir = Some(work.clone());
    let refused = runtime
        .block_on(Orchestrator::start(config))
        .map(|_| ())
        .unwrap_err();
    assert!(
        refused.to_string().contains("lost acknowledged data"),
        "{refused}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every run the engine lists, newest first.
async fn listed(handle: &shipsec_orchestrator::Handle) -> Vec<shipsec_orchestrator::RunSummary> {
    let query = shipsec_orchestrator::RunQuery {
        status: None,
        limit: 10_000,
        before: None,
        metadata: None,
    };
    handle.list(query).await.unwrap().runs
}

/// Reads every run the engine lists, checking each result carries its own 1 MiB
/// payload (`i` then `x`s); how many were listed.
async fn read_every_run(handle: &shipsec_orchestrator::Handle) -> usize {
    let runs = listed(handle).await;
    for run in &runs {
        let mut run = handle.run(&run.run_id).await.unwrap();
        let result = run.result().await.unwrap();
        let payload = result.outputs["start"]["payload"].as_str().unwrap().len();
        assert!(payload > 1 << 20, "{} lost its payload", run.run_id());
        let events: Vec<_> =
            futures::StreamExt::collect(handle.events(run.run_id()).await.unwrap()).await;
        assert!(!events.is_empty(), "{} lost its trace", run.run_id());
    }
    runs.len()
}

#[test]
fn finished_runs_kept_in_memory_stay_under_retained_bytes_and_the_rest_read_back_from_the_journal()
{
    const LIMIT: usize = 8 << 20;
    let dir = scratch("retained-bytes");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = || {
        let mut config = EngineConfig {
            retained_bytes: LIMIT,
            ..EngineConfig::default()
        };
        config.journal.data_dir = Some(dir.clone());
        config.journal.durability = Durability::Process;
        config
    };
    runtime.block_on(async {
        let handle = Orchestrator::start(config()).await.unwrap();
        let text = std::fs::read_to_string("examples/retry.json").unwrap();
        let workflow = common::workflow(&handle, serde_json::from_str(&text).unwrap());
        // 30 runs of 1 MiB inputs: about 60 MiB of results (the entrypoint echoes them).
        for i in 0..30 {
            let mut inputs = JsonObject::new();
            let payload = format!("{i}{}", "x".repeat(1 << 20));
            inputs.insert("payload".into(), payload.into());
            let mut run = handle
                .submit_workflow(&workflow, inputs, SubmitOptions::default())
                .await
                .unwrap();
            run.result().await.unwrap();
        }
        let kept = handle.retained().await.unwrap();
        eprintln!("before a restart: {kept:?}");
        assert!(kept.runs > 1 && kept.runs < 30, "{kept:?}");
        assert!(kept.bytes <= LIMIT, "{kept:?}");
        assert_eq!(kept.runs + kept.stored, 30, "{kept:?}");
        // Every run answers, those let go read back from the journal, within the bound.
        assert_eq!(read_every_run(&handle).await, 30);
        let kept = handle.retained().await.unwrap();
        assert!(
            kept.bytes <= LIMIT && kept.runs + kept.stored == 30,
            "{kept:?}"
        );
        handle.shutdown(ShutdownMode::Drain).await.unwrap();
        drop(handle);
        // The journal keeps all 30; the next engine knows them by their summaries and
        // reads each back when asked, within the bound.
        let handle = Orchestrator::start(config()).await.unwrap();
        let kept = handle.retained().await.unwrap();
        eprintln!("after a restart: {kept:?}");
        assert_eq!((kept.runs, kept.bytes, kept.stored), (0, 0, 30), "{kept:?}");
        assert_eq!(read_every_run(&handle).await, 30);
        let kept = handle.retained().await.unwrap();
        eprintln!("after reading every run: {kept:?}");
        assert!(kept.runs > 1 && kept.runs < 30, "{kept:?}");
        assert!(
            kept.bytes <= LIMIT && kept.runs + kept.stored == 30,
            "{kept:?}"
        );
        handle.shutdown(ShutdownMode::Drain).await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_finished_run_that_no_longer_reads_back_is_listed_then_refused_with_its_reason_then_forgotten()
{
    let dir = scratch("unreadable");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = || {
        let mut config = EngineConfig::default();
        config.journal.data_dir = Some(dir.clone());
        config.journal.durability = Durability::Process;
        config
    };
    let definition = serde_json::json!({"title": "sleeps", "actions": [
        {"ref": "start", "componentId": "core.workflow.entrypoint", "params": {}},
        {"ref": "nap", "componentId": "core.sleep", "params": {"ms": 1}, "dependsOn": ["start"]}
    ]});
    runtime.block_on(async {
        let handle = Orchestrator::start(config()).await.unwrap();
        let workflow = common::workflow(&handle, definition);
        let mut run = handle
            .submit_workflow(&workflow, JsonObject::new(), SubmitOptions::default())
            .await
            .unwrap();
        let run_id = run.run_id().to_owned();
        assert!(run.result().await.unwrap().success);
        handle.shutdown(ShutdownMode::Drain).await.unwrap();
        drop(handle);
        // The next engine lacks `core.sleep`: the run is still listed from its summary,
        let mut registry = ComponentRegistry::empty();
        for component in shipsec_orchestrator::runtime::components::builtin::all() {
            if component.meta().id != "core.sleep" {
                registry.register(component);
            }
        }
        let handle = Orchestrator::start_with(config(), registry).await.unwrap();
        let runs = listed(&handle).await;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].run_id, run_id);
        assert_eq!(runs[0].title, "sleeps");
        // its details are refused with the reason, not answered as unknown,
        let refused = handle.status(&run_id).await.unwrap_err().to_string();
        assert!(
            refused.contains("cannot be read back") && refused.contains("core.sleep"),
            "{refused}"
        );
        // and then it is forgotten.
        let gone = handle.status(&run_id).await.unwrap_err().to_string();
        assert!(gone.contains("no run with id"), "{gone}");
        handle.shutdown(ShutdownMode::Drain).await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
