//! Crash at every append point: a run is journaled into a memory store by a journal
//! staged to crash (`chaos::journal::CrashAt`) after its k-th stored op — for every k, once with the acknowledgements of what was
//! stored delivered before the "process" dies and once without — the engine is killed
//! whole, a new engine resumes from what the store kept, and the resumed run must:
//!
//! - end as the reference evaluator says (`tests/reference`, told which attempts the
//!   `RESUMED` event lists as lost: those fail with `CrashError`, per §8);
//! - run no attempt of a node whose end was stored more than once, and no attempt of any
//!   other node more than twice (once before the crash, once after);
//! - reproduce every event the crashed engine had published, with the same `seq`;
//! - not hang.
//!
//! On every example workflow and on random DAGs (`tests/random`): 40 of each failure mode
//! per CI run, `SHIPSEC_CRASH_CASES` for more (the 500: `SHIPSEC_CRASH_CASES=500`).

mod common;
#[allow(dead_code)] // not every binary uses every generator
mod random;
mod reference;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use shipsec_orchestrator::chaos::journal::CrashAt;
use shipsec_orchestrator::messages::orchestrator::SubmitOptions;
use shipsec_orchestrator::runtime::components::registry::{ComponentMeta, ComponentRegistry};
use shipsec_orchestrator::runtime::components::{Component, ComponentResult, ExecutionContext};
use shipsec_orchestrator::runtime::definition::JsonObject;
use shipsec_orchestrator::runtime::definition::graph::Graph;
use shipsec_orchestrator::runtime::journal::record::FactKind;
use shipsec_orchestrator::runtime::journal::{self, Durability, Journal, MemoryStore};
use shipsec_orchestrator::runtime::semantics::event::TraceEvent;
use shipsec_orchestrator::{EngineConfig, Handle, Orchestrator, ShutdownMode};

use random::{Finished, Mode, case_gen, check_against_reference, check_fail_fast};

/// Longest a run may take to end after a resume (generous: nothing here waits on time).
const NO_HANG: Duration = Duration::from_secs(30);

/// Which attempts ran, while the "process" that ran them was alive.
#[derive(Debug, Default)]
struct Executions(Mutex<HashMap<(String, u32), u32>>);

impl Executions {
    fn count(&self) -> HashMap<(String, u32), u32> {
        self.0.lock().unwrap().clone()
    }
}

/// A built-in that records each of its executions, unless its engine's journal has
/// crashed (a dead process runs nothing).
struct Counted {
    inner: Arc<dyn Component>,
    runs: Arc<Executions>,
    crash: Option<Arc<CrashAt>>,
}

impl Component for Counted {
    fn meta(&self) -> &ComponentMeta {
        self.inner.meta()
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        if !self.crash.as_ref().is_some_and(|c| c.has_crashed()) {
            let key = (ctx.node_ref.to_string(), ctx.attempt);
            *self.runs.0.lock().unwrap().entry(key).or_default() += 1;
        }
        self.inner.execute(ctx)
    }
}

fn registry(runs: &Arc<Executions>, crash: Option<&Arc<CrashAt>>) -> ComponentRegistry {
    let builtins = ComponentRegistry::with_builtins();
    let mut registry = ComponentRegistry::empty();
    for id in builtins.ids() {
        let inner = builtins.get(id).expect("listed").clone();
        registry.register(Arc::new(Counted {
            inner,
            runs: runs.clone(),
            crash: crash.cloned(),
        }));
    }
    registry
}

fn config() -> EngineConfig {
    EngineConfig {
        // Cancelled attempts (failRun, withdrawal) end at once: no test waits on a grace.
        cancel_grace: Duration::ZERO,
        ..EngineConfig::default()
    }
}

/// An engine on `store`; with `crash`, its journal dies there and its executions are
/// counted while it lives.
async fn start(
    store: Arc<MemoryStore>,
    runs: &Arc<Executions>,
    crash: Option<Arc<CrashAt>>,
) -> Handle {
    let registry = registry(runs, crash.as_ref());
    let journal = match crash {
        Some(crash) => Journal::with_faults(store, Durability::Fsync, crash),
        None => Journal::new(store, Durability::Fsync),
    };
    Orchestrator::start_with_journal(config(), registry, Some(journal))
        .await
        .expect("the engine starts on the journal")
}

/// What a crashed engine left: the store, what ran, what it published.
struct Crashed {
    graph: Arc<Graph>,
    store: Arc<MemoryStore>,
    runs: Arc<Executions>,
    published: Vec<TraceEvent>,
}

/// Runs `definition` on a journal crashing per `plan`; `None` when the run ended first.
async fn run_until_crash(
    definition: &Value,
    inputs: &JsonObject,
    plan: CrashAt,
) -> Result<Option<Crashed>, String> {
    let store = Arc::new(MemoryStore::new());
    let plan = Arc::new(plan);
    let runs = Arc::new(Executions::default());
    let handle = start(store.clone(), &runs, Some(plan.clone())).await;
    let workflow = common::try_workflow(&handle, definition)?;
    let options = SubmitOptions {
        run_id: Some("run".into()),
        ..SubmitOptions::default()
    };
    let mut crash = plan.signal();
    let submitted = tokio::select! {
        s = handle.submit_workflow(&workflow, inputs.clone(), options) => match s {
            Ok(run) => Some(run),
            // Its acceptance died with the "process".
            Err(_) if plan.has_crashed() => None,
            Err(e) => return Err(e.to_string()),
        },
        _ = crash.wait_for(|c| *c) => None,
    };
    let published = Arc::new(Mutex::new(Vec::new()));
    let ended = match submitted {
        None => false,
        Some(mut run) => {
            let mut events = handle.events("run").await.map_err(|e| e.to_string())?;
            let sink = published.clone();
            tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    sink.lock().unwrap().push(e);
                }
            });
            tokio::select! {
                r = run.result() => { r.map_err(|e| e.to_string())?; true }
                _ = crash.wait_for(|c| *c) => false,
            }
        }
    };
    if ended {
        handle
            .shutdown(ShutdownMode::Cancel)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(None);
    }
    shipsec_orchestrator::chaos::crash(&handle).await;
    let published = published.lock().unwrap().clone();
    Ok(Some(Crashed {
        graph: workflow.graph().clone(),
        store,
        runs,
        published,
    }))
}

/// Nodes whose end the store kept.
fn ended_in(store: &MemoryStore, graph: &Graph) -> Vec<String> {
    let runs = journal::load(store).expect("the store reads back");
    runs.iter()
        .flat_map(|r| r.facts.iter())
        .filter_map(|f| match &f.kind {
            FactKind::Completed { node, .. } | FactKind::Failed { node, .. } => {
                Some(graph.nodes[*node as usize].node_ref.to_string())
            }
            _ => None,
        })
        .collect()
}

/// Resumes a crashed run and checks it.
async fn resume_and_check(
    crashed: Crashed,
    check: fn(&Finished) -> Result<(), String>,
) -> Result<(), String> {
    let store = Arc::new(crashed.store.recovered());
    let handle = start(store.clone(), &crashed.runs, None).await;
    let outcome = async {
        let mut run = match handle.run("run").await {
            Ok(run) => run,
            // The acceptance itself was lost: the run never existed.
            Err(_) if crashed.published.is_empty() => return Ok(()),
            Err(e) => return Err(format!("the run was lost: {e}")),
        };
        let result = match tokio::time::timeout(NO_HANG, run.result()).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => return Err(hang_report(&handle, &store).await),
        };
        let events: Vec<TraceEvent> = handle
            .events("run")
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await;
        for (i, e) in crashed.published.iter().enumerate() {
            if events.get(i) != Some(e) {
                return Err(format!(
                    "published event {} differs after the resume:\n{e:#?}\n{:#?}",
                    i + 1,
                    events.get(i)
                ));
            }
        }
        let stored_ends = ended_in(&crashed.store, &crashed.graph);
        for ((node, attempt), n) in crashed.runs.count() {
            let limit = if stored_ends.contains(&node) { 1 } else { 2 };
            if n > limit {
                return Err(format!(
                    "{node} attempt {attempt} ran {n} times (at most {limit})"
                ));
            }
        }
        check(&Finished {
            graph: crashed.graph.clone(),
            result,
            events,
        })
    }
    .await;
    handle
        .shutdown(ShutdownMode::Cancel)
        .await
        .map_err(|e| e.to_string())?;
    outcome
}

/// What a hung run shows: its stored facts and its status.
async fn hang_report(handle: &Handle, store: &MemoryStore) -> String {
    let facts: Vec<String> = journal::load(store)
        .map(|runs| {
            runs.iter()
                .flat_map(|r| r.facts.iter())
                .map(|f| format!("{:?}", f.kind))
                .collect()
        })
        .unwrap_or_default();
    let status = handle.status("run").await;
    format!(
        "the resumed run hangs\nstored facts:\n  {}\nstatus: {status:#?}",
        facts.join("\n  ")
    )
}

/// Crashes `definition` at every append point, both ways, resuming each.
async fn crash_everywhere(
    definition: &Value,
    inputs: &JsonObject,
    check: fn(&Finished) -> Result<(), String>,
) -> Result<u64, String> {
    let mut points = 0;
    for acked in [true, false] {
        for after in 0.. {
            let plan = CrashAt::new(after, acked);
            let Some(crashed) = run_until_crash(definition, inputs, plan).await? else {
                break; // the run ended before its `after`-th op: every point is done
            };
            resume_and_check(crashed, check)
                .await
                .map_err(|e| format!("crash after op {after} (acked: {acked}): {e}"))?;
            points += 1;
        }
    }
    Ok(points)
}

fn cases() -> usize {
    std::env::var("SHIPSEC_CRASH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| random::cases(40) as usize)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn every_example_survives_a_crash_at_every_append() {
    let rt = runtime();
    let examples = [
        ("recon.json", json!({"target": "example.com"})),
        ("race.json", json!({})),
        ("retry.json", json!({})),
        ("shipsec-recon.json", json!({"domains": ["example.com"]})),
        ("v1-upgrade.json", json!({})),
    ];
    for (file, inputs) in examples {
        let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let definition: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let inputs = inputs.as_object().unwrap().clone();
        let points = rt
            .block_on(crash_everywhere(&definition, &inputs, |_| Ok(())))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(points > 4, "{file}: only {points} crash points");
    }
}

/// The seed of the first random case: `SHIPSEC_CRASH_SEED` to replay one, else fresh.
fn first_seed() -> u64 {
    std::env::var("SHIPSEC_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand_seed)
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn random_cases(mode: Mode, check: fn(&Finished) -> Result<(), String>) {
    let rt = runtime();
    let strategy = case_gen(mode, 10);
    let first = first_seed();
    let mut points = 0;
    for i in 0..cases() {
        let seed = first.wrapping_add(i as u64);
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let mut runner = TestRunner::new_with_rng(Config::default(), rng);
        let case = strategy.new_tree(&mut runner).unwrap().current();
        points += rt
            .block_on(crash_everywhere(
                &case.definition,
                &random::run_inputs(),
                check,
            ))
            .unwrap_or_else(|e| {
                panic!(
                    "case {i} (replay: SHIPSEC_CRASH_SEED={seed} SHIPSEC_CRASH_CASES=1): {e}\n{case:?}"
                )
            });
    }
    eprintln!(
        "{} cases from seed {first}, {points} crash points resumed",
        cases()
    );
}

#[test]
fn random_runs_survive_a_crash_at_every_append() {
    random_cases(Mode::Continue, check_against_reference);
}

#[test]
fn random_stopped_runs_survive_a_crash_at_every_append() {
    random_cases(Mode::FailFast, check_fail_fast);
}

#[test]
fn a_journal_that_cannot_be_written_fails_its_runs_visibly() {
    let rt = runtime();
    let path = format!("{}/examples/recon.json", env!("CARGO_MANIFEST_DIR"));
    let definition: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let inputs = json!({"target": "example.com"})
        .as_object()
        .unwrap()
        .clone();
    rt.block_on(async {
        let mut failed = 0;
        for after in 0.. {
            let store = Arc::new(MemoryStore::failing(after));
            let runs = Arc::new(Executions::default());
            let handle = start(store.clone(), &runs, None).await;
            let workflow = common::try_workflow(&handle, &definition).unwrap();
            let options = SubmitOptions {
                run_id: Some("run".into()),
                ..SubmitOptions::default()
            };
            let submitted = handle
                .submit_workflow(&workflow, inputs.clone(), options)
                .await;
            let Ok(mut run) = submitted else {
                // Its acceptance could not be stored: refused, and said so.
                let e = submitted.err().unwrap().to_string();
                assert!(e.contains("journal"), "op {after}: {e}");
                handle.shutdown(ShutdownMode::Cancel).await.unwrap();
                continue;
            };
            let result = tokio::time::timeout(NO_HANG, run.result())
                .await
                .unwrap_or_else(|_| panic!("op {after}: the run hangs"))
                .unwrap();
            let events: Vec<TraceEvent> = handle.events("run").await.unwrap().collect().await;
            handle.shutdown(ShutdownMode::Cancel).await.unwrap();
            // Every completion anyone saw was stored first.
            let graph = workflow.graph();
            let stored = ended_in(&store, graph);
            for e in events.iter().filter(|e| {
                e.kind == shipsec_orchestrator::runtime::semantics::event::EventType::Completed
            }) {
                assert!(
                    stored.contains(&e.node_id.to_string()),
                    "op {after}: {} was published COMPLETED but its end was not stored",
                    e.node_id
                );
            }
            if result.status == shipsec_orchestrator::RunStatus::Completed {
                break; // the store held out to the run's end: every point is done
            }
            let error = result.error.clone().unwrap_or_default();
            assert!(
                error.contains("journal could not be written"),
                "op {after}: FAILED for another reason: {error}"
            );
            failed += 1;
        }
        assert!(failed > 5, "only {failed} write failures hit a running run");
    });
}
