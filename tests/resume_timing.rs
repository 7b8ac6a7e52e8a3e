//! Resuming 1,000 unfinished 20-node runs takes under a second: the engine's start on a
//! journal holding them (every run read back, folded and given its `Resumed` fact, each
//! with 18 lost attempts) returns within that. Alone in its test binary, so that no other
//! test shares the two cores while it is timed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::definition::JsonObject;
use shipsec_orchestrator::runtime::journal::{Durability, Journal, MemoryStore};
use shipsec_orchestrator::runtime::semantics::event::EventType;
use shipsec_orchestrator::{
    ComponentRegistry, EngineConfig, Handle, Orchestrator, ShutdownMode, SubmitOptions,
};

const RUNS: usize = 1_000;

/// A 20-node run that stays unfinished: an entrypoint, 18 long sleeps, a join.
fn long_run() -> Value {
    let mut actions = vec![json!({"ref": "start", "componentId": "core.workflow.entrypoint"})];
    let mut edges = Vec::new();
    for i in 0..18 {
        let node = format!("sleep{i}");
        actions.push(json!({"ref": node, "componentId": "core.sleep", "params": {"ms": 600_000}}));
        edges.push(json!({"sourceRef": "start", "targetRef": node}));
        edges.push(json!({"sourceRef": node, "targetRef": "join"}));
    }
    actions.push(json!({"ref": "join", "componentId": "core.echo"}));
    json!({"version": 2, "title": "long", "actions": actions, "edges": edges,
           "entrypoint": {"ref": "start"}})
}

async fn start(store: Arc<MemoryStore>) -> Handle {
    let config = EngineConfig {
        cancel_grace: Duration::ZERO,
        ..EngineConfig::default()
    };
    let journal = Journal::new(store, Durability::Fsync);
    Orchestrator::start_with_journal(config, ComponentRegistry::with_builtins(), Some(journal))
        .await
        .expect("the engine starts on the journal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_1000_unfinished_runs_takes_under_a_second() {
    let store = Arc::new(MemoryStore::new());
    let handle = start(store.clone()).await;
    let workflow = common::workflow(&handle, long_run());
    for i in 0..RUNS {
        let options = SubmitOptions {
            run_id: Some(format!("run-{i}")),
            ..SubmitOptions::default()
        };
        handle
            .submit_workflow(&workflow, JsonObject::new(), options)
            .await
            .unwrap();
    }
    // Every run has its sleeps' starts stored (their events are published once they
    // are): each resumes with 18 lost attempts.
    for i in 0..RUNS {
        let mut events = handle.events(&format!("run-{i}")).await.unwrap();
        let mut started = 0;
        while started < 19 {
            let e = events.next().await.expect("the run goes on");
            started += usize::from(e.kind == EventType::Started);
        }
    }
    shipsec_orchestrator::chaos::crash(&handle).await;
    let recovered = Arc::new(store.recovered());
    let begun = Instant::now();
    let handle = start(recovered).await;
    let took = begun.elapsed();
    assert_eq!(handle.resumed().len(), RUNS);
    eprintln!("{RUNS} unfinished 20-node runs resumed in {took:?}");
    assert!(took < Duration::from_secs(1), "resuming took {took:?}");
    handle.shutdown(ShutdownMode::Cancel).await.unwrap();
}
