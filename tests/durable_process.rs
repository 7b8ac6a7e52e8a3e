//! The kill -9 loop: a real `shipsec run --data-dir` process is killed with SIGKILL at a
//! random moment, `shipsec resume --data-dir` finishes its run (and is itself killed, up
//! to a few times per run), and the finished run must be what the reference evaluator
//! says (`tests/reference`, told which attempts the `RESUMED` events list as lost).
//!
//! Every node is a `core.process` whose script appends `(run, node, attempt)` to a
//! side-effect log and fsyncs it before it answers, so the log says what really ran.
//! After each kill the test reads the journal the dead process left: a node whose end
//! was stored there must never run again (its log lines stay as they were), and every
//! completed node's completing attempt must be in the log (nothing was lost).
//!
//! At least 200 kills per run of this test; `SHIPSEC_KILLS` for more. A failure prints
//! the seed of its workflow, replayed with `SHIPSEC_KILL_SEED`.

mod common;
#[allow(dead_code)]
mod random;
#[allow(dead_code)]
mod reference;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::definition::graph::Graph;
use shipsec_orchestrator::runtime::journal::record::FactKind;
use shipsec_orchestrator::runtime::journal::{self, FjallStore};
use shipsec_orchestrator::runtime::semantics::event::TraceEvent;
use shipsec_orchestrator::{EngineConfig, Orchestrator, ShutdownMode};

use random::{Finished, check_against_reference};

/// The script of every node: log the attempt durably, then fail or echo the inputs.
const SCRIPT: &str = r#"printf '%s %s %s\n' "$SHIPSEC_RUN_ID" "$SHIPSEC_NODE_REF" "$SHIPSEC_ATTEMPT" >> "$LOG" && sync "$LOG" || exit 9
if [ "$FAIL" = 1 ]; then exit 3; fi
cat"#;

/// Longest a killed process's children may take to exit (they see their stdin close).
const ORPHANS_GONE: Duration = Duration::from_secs(30);

/// Longest one `shipsec` process may take to end a run by itself.
const NO_HANG: Duration = Duration::from_secs(60);

/// A small, seeded generator (xorshift64*): the test's randomness, replayable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A random workflow of `core.process` nodes on `log`.
fn workflow(rng: &mut Rng, log: &Path) -> Value {
    let n = 4 + rng.below(9) as usize;
    let mut actions = vec![json!({"ref": "n0", "componentId": "core.workflow.entrypoint"})];
    let mut edges = Vec::new();
    let mut nodes = serde_json::Map::new();
    for i in 1..n {
        let node_ref = format!("n{i}");
        let fail = rng.chance(12);
        let mut env = json!({"LOG": log.to_str().expect("a UTF-8 path")});
        if fail {
            env["FAIL"] = json!("1");
        }
        let mut action = json!({
            "ref": node_ref,
            "componentId": "core.process",
            "params": {"command": ["sh", "-c", SCRIPT], "env": env},
        });
        if rng.chance(60) {
            action["retryPolicy"] = json!({
                "maxAttempts": 2 + rng.below(2),
                "initialIntervalSeconds": 0,
            });
        }
        actions.push(action);
        let parents: BTreeSet<usize> = (0..=rng.below(2.min(i as u64 - 1) + 1))
            .map(|_| rng.below(i as u64) as usize)
            .collect();
        for p in &parents {
            let kind = match rng.below(10) {
                0 => "always",
                1 => "error",
                _ => "success",
            };
            edges.push(json!({"sourceRef": format!("n{p}"), "targetRef": node_ref, "kind": kind}));
        }
        let join = match rng.below(10) {
            0..=5 => "all",
            6..=7 => "any",
            _ => "first",
        };
        nodes.insert(
            node_ref.clone(),
            json!({"ref": node_ref, "joinStrategy": join}),
        );
    }
    json!({
        "version": 2,
        "title": "kill loop",
        "actions": actions,
        "edges": edges,
        "nodes": nodes,
        "entrypoint": {"ref": "n0"},
    })
}

/// A `shipsec` child: `run` of `definition`, or `resume`, on `dir`.
fn spawn(dir: &Path, definition: Option<&Path>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shipsec"));
    match definition {
        Some(file) => command.arg("run").arg(file).args([
            "--input",
            "seed=42",
            "--input",
            "who=proptest",
            "--json",
        ]),
        None => command.args(["resume", "--json"]),
    };
    command
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shipsec starts")
}

/// Processes whose environment names `run_id` (a killed engine's orphaned children).
fn children_of(run_id: &str) -> Vec<i32> {
    let needle = format!("SHIPSEC_RUN_ID={run_id}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// Waits until the children a killed engine left for `run_id` have exited.
fn wait_for_orphans(run_id: &str) -> Result<(), String> {
    let since = Instant::now();
    while !children_of(run_id).is_empty() {
        if since.elapsed() > ORPHANS_GONE {
            return Err(format!(
                "processes of run {run_id} outlived their engine: {:?}",
                children_of(run_id)
            ));
        }
        // Polls /proc: a killed engine's children are no one's to wait for.
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// What a dead engine's journal holds: the run's id and the nodes whose end it stored.
fn stored(dir: &Path, graph: &Graph) -> Result<Option<(String, BTreeSet<String>)>, String> {
    let (store, _) = FjallStore::open(dir).map_err(|e| e.to_string())?;
    let runs = journal::load(&store).map_err(|e| e.to_string())?;
    let Some(run) = runs.into_iter().next() else {
        return Ok(None);
    };
    let ended = run
        .facts
        .iter()
        .filter_map(|f| match &f.kind {
            FactKind::Completed { node, .. }
            | FactKind::Failed { node, .. }
            | FactKind::Cancelled { node, .. } => {
                Some(graph.nodes[*node as usize].node_ref.to_string())
            }
            _ => None,
        })
        .collect();
    Ok(Some((run.header.accepted.run_id, ended)))
}

/// The side-effect log's executions of `run_id`: `(node, attempt)` → times run.
fn executions(log: &Path, run_id: &str) -> HashMap<(String, u32), u32> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(run), Some(node), Some(attempt)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if run == run_id {
            let attempt = attempt.parse().unwrap_or(0);
            *counts.entry((node.to_owned(), attempt)).or_insert(0) += 1;
        }
    }
    counts
}

fn runs_of(executions: &HashMap<(String, u32), u32>, node: &str) -> u32 {
    executions
        .iter()
        .filter(|((n, _), _)| n == node)
        .map(|(_, c)| c)
        .sum()
}

/// Fails when a node whose end a dead engine had stored (`settled`: how often it had run
/// then) has run since.
fn ran_again(
    settled: &HashMap<String, u32>,
    ran: &HashMap<(String, u32), u32>,
) -> Result<(), String> {
    for (node, before) in settled {
        let now = runs_of(ran, node);
        if now != *before {
            return Err(format!(
                "{node} ran again after its end was stored ({before} → {now} runs)"
            ));
        }
    }
    Ok(())
}

/// One workflow driven through kills until a process ends its run by itself; the kills.
fn kill_loop(seed: u64, scratch: &Path) -> Result<u32, String> {
    let mut rng = Rng::new(seed);
    let dir = scratch.join(format!("run-{seed}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let log = dir.join("effects.log");
    let definition = workflow(&mut rng, &log);
    let file = dir.join("workflow.json");
    std::fs::write(&file, definition.to_string()).map_err(|e| e.to_string())?;
    let graph = common::graph(definition);
    let data_dir = dir.join("data");
    let planned = 1 + rng.below(3) as u32;
    let (mut kills, mut run_id) = (0, None::<String>);
    // Per node whose end a dead engine had stored: how often it had run then.
    let mut settled: HashMap<String, u32> = HashMap::new();
    loop {
        let mut child = spawn(&data_dir, run_id.is_none().then_some(file.as_path()));
        if kills < planned {
            std::thread::sleep(Duration::from_millis(rng.below(60)));
        }
        if kills < planned && child.try_wait().map_err(|e| e.to_string())?.is_none() {
            child.kill().map_err(|e| e.to_string())?;
            child.wait().map_err(|e| e.to_string())?;
            kills += 1;
            let Some((id, ended)) = stored(&data_dir, &graph)? else {
                continue; // killed before its run was accepted: it never existed
            };
            wait_for_orphans(&id)?;
            let ran = executions(&log, &id);
            ran_again(&settled, &ran)?;
            for node in ended {
                let now = runs_of(&ran, &node);
                settled.entry(node).or_insert(now);
            }
            run_id = Some(id);
            continue;
        }
        let output = wait_with_timeout(child)?;
        if !output.status.success() && output.status.code() != Some(1) {
            return Err(format!(
                "shipsec exited {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        if run_id.is_none() {
            run_id = stored(&data_dir, &graph)?.map(|(id, _)| id);
        }
        break;
    }
    let run_id = run_id.ok_or("the run left nothing in its journal")?;
    let ran = executions(&log, &run_id);
    ran_again(&settled, &ran)?;
    let finished = read_back(&data_dir, graph, &run_id)?;
    for (node, record) in &finished.result.nodes {
        if record.status == shipsec_orchestrator::NodeStatus::Completed
            && finished
                .graph
                .entrypoint
                .map(|e| &*finished.graph.node(e).node_ref)
                != Some(&**node)
            && !ran.contains_key(&(node.to_string(), record.attempts))
        {
            return Err(format!(
                "{node} completed on attempt {} but that attempt never ran",
                record.attempts
            ));
        }
    }
    check_against_reference(&finished)?;
    Ok(kills)
}

/// Waits for a process that is to end by itself, failing (and killing it) after
/// [`NO_HANG`].
fn wait_with_timeout(child: Child) -> Result<std::process::Output, String> {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(NO_HANG) {
        Ok(output) => output.map_err(|e| e.to_string()),
        Err(_) => {
            // SAFETY: kill(2) on a child this test spawned and has not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            Err("a shipsec process did not end its run".into())
        }
    }
}

/// The finished run as an engine on the journal reads it back: result and trace.
fn read_back(data_dir: &Path, graph: Arc<Graph>, run_id: &str) -> Result<Finished, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut config = EngineConfig::default();
        config.journal.data_dir = Some(data_dir.to_path_buf());
        let handle = Orchestrator::start_with(config, ComponentRegistry::with_builtins())
            .await
            .map_err(|e| e.to_string())?;
        let result = handle
            .run(run_id)
            .await
            .map_err(|e| e.to_string())?
            .result()
            .await
            .map_err(|e| e.to_string())?;
        let events: Vec<TraceEvent> = handle
            .events(run_id)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await;
        handle
            .shutdown(ShutdownMode::Cancel)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Finished {
            graph,
            result,
            events,
        })
    })
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shipsec-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

#[test]
fn killed_processes_lose_nothing_and_repeat_nothing() {
    let target: u32 = std::env::var("SHIPSEC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seeds: Box<dyn Iterator<Item = u64>> = match std::env::var("SHIPSEC_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => Box::new(std::iter::once(seed)),
        None => {
            let first = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            Box::new((0..).map(move |i: u64| first.wrapping_add(i)))
        }
    };
    let scratch = scratch();
    let (mut kills, mut runs) = (0, 0);
    for seed in seeds {
        kills += kill_loop(seed, &scratch)
            .unwrap_or_else(|e| panic!("seed {seed} (replay: SHIPSEC_KILL_SEED={seed}): {e}"));
        runs += 1;
        let _ = std::fs::remove_dir_all(scratch.join(format!("run-{seed}")));
        if kills >= target {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("{runs} runs, {kills} kills, every run ended as the reference says");
}
