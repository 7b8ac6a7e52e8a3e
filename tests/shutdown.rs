//! Shutdown as a value: `Handle::shutdown(Cancel)` cancels the runs still going,
//! `Drain` lets them finish; both refuse new runs at once and complete only when every
//! run has ended and every actor of the engine has stopped.

mod common;

use std::sync::Arc;

use futures::StreamExt;
use serde_json::json;
use shipsec_orchestrator::chaos::Chaos;
use shipsec_orchestrator::messages::orchestrator::{RunCommandError, ShutdownMode};
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::semantics::event::EventType;
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};
use shipsec_orchestrator::{EngineConfig, EngineError, Handle, Orchestrator, RunHandle, Workflow};

use common::kit::{Held, Release};

/// An engine with `test.held`, what releases it, a workflow of one held node after an
/// echo, and the chaos the engine was started with (to find its actors).
async fn engine() -> (Handle, Release, Workflow, Arc<Chaos>) {
    let chaos = Chaos::new();
    let (held, release) = Held::new();
    let mut registry = ComponentRegistry::with_builtins();
    registry.register(held);
    let handle = Orchestrator::start_with_faults(EngineConfig::default(), registry, chaos.clone())
        .await
        .unwrap();
    let workflow = common::workflow(
        &handle,
        json!({
            "title": "held",
            "actions": [
                {"ref": "first", "componentId": "core.echo", "params": {"v": 1}},
                {"ref": "held", "componentId": "test.held",
                 "inputMappings": {"v": {"sourceRef": "first", "sourceHandle": "v"}}}
            ],
            "edges": [{"sourceRef": "first", "targetRef": "held"}]
        }),
    );
    (handle, release, workflow, chaos)
}

/// Submits `n` runs and waits until each has its held node running.
async fn running(handle: &Handle, workflow: &Workflow, n: usize) -> Vec<RunHandle> {
    let mut runs = Vec::new();
    for _ in 0..n {
        let run = handle
            .submit_workflow(workflow, Default::default(), Default::default())
            .await
            .unwrap();
        let mut events = handle.events(run.run_id()).await.unwrap();
        while let Some(e) = events.next().await {
            if &*e.node_id == "held" && e.kind == EventType::Started {
                break;
            }
        }
        runs.push(run);
    }
    runs
}

fn assert_refused(refused: Result<RunHandle, EngineError>) {
    match refused {
        Err(EngineError::Run(RunCommandError::ShuttingDown) | EngineError::Unavailable) => {}
        other => panic!("a submit during or after shutdown must be refused, got {other:?}"),
    }
}

fn assert_no_actor_left(chaos: &Chaos, runs: &[RunHandle]) {
    for run in runs {
        assert_eq!(chaos.live_node_actors_of(run.run_id()), 0);
        assert!(
            chaos
                .supervisor_actor(run.run_id())
                .is_none_or(|s| !matches!(
                    s.get_status(),
                    ractor::ActorStatus::Running | ractor::ActorStatus::Starting
                ))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_cancel_cancels_running_runs_and_completes_when_every_actor_stopped() {
    let (handle, _release, workflow, chaos) = engine().await;
    let mut runs = running(&handle, &workflow, 3).await;
    handle.shutdown(ShutdownMode::Cancel).await.unwrap();
    // Completed: every run has its result already.
    for run in &mut runs {
        let result = run.result().await.unwrap();
        assert_eq!(result.status, RunStatus::Cancelled, "{result:#?}");
        assert_eq!(result.nodes["first"].status, NodeStatus::Completed);
        assert_eq!(result.nodes["held"].status, NodeStatus::Cancelled);
    }
    assert_no_actor_left(&chaos, &runs);
    assert_refused(
        handle
            .submit_workflow(&workflow, Default::default(), Default::default())
            .await,
    );
    // A second shutdown completes at once.
    handle.shutdown(ShutdownMode::Drain).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drain_refuses_new_runs_and_lets_running_ones_finish() {
    let (handle, release, workflow, chaos) = engine().await;
    let mut runs = running(&handle, &workflow, 2).await;
    let draining = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.shutdown(ShutdownMode::Drain).await })
    };
    // Refused once the orchestrator took the shutdown; a submit that came first is a
    // run the drain waits for, and is released with the others.
    let mut late = Vec::new();
    loop {
        match handle
            .submit_workflow(&workflow, Default::default(), Default::default())
            .await
        {
            Ok(run) => late.push(run),
            refused => {
                assert_refused(refused);
                break;
            }
        }
    }
    // The held nodes cannot end unreleased, so the drain cannot have completed.
    assert!(!draining.is_finished(), "the drain waits for its runs");
    release.let_go(runs.len() + late.len());
    draining.await.unwrap().unwrap();
    for run in runs.iter_mut().chain(late.iter_mut()) {
        let result = run.result().await.unwrap();
        assert_eq!(result.status, RunStatus::Completed, "{result:#?}");
        assert_eq!(result.outputs["held"]["v"], json!(1));
    }
    assert_no_actor_left(&chaos, &runs);
}
