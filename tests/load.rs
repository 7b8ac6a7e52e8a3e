//! Load: 4 x 1,000 concurrent runs of a 20-node DAG through one orchestrator all complete
//! with correct results, and leave neither actors, slots nor memory behind. Alone in its
//! test binary so that its memory readings are its own.

mod common;

use std::time::Instant;

use serde_json::{Value, json};
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};
use shipsec_orchestrator::{EngineConfig, Orchestrator};

fn diamond20() -> Value {
    // s -> 18 middle nodes in two layers of nine -> t.
    let mut actions = vec![
        json!({"ref": "s", "componentId": "core.echo"}),
        json!({"ref": "t", "componentId": "core.echo"}),
    ];
    let mut edges = Vec::new();
    for i in 0..9 {
        actions
            .push(json!({"ref": format!("a{i}"), "componentId": "core.echo", "params": {"i": i}}));
        actions.push(json!({"ref": format!("b{i}"), "componentId": "core.echo", "params": {"i": i},
                            "inputMappings": {"v": {"sourceRef": format!("a{i}"), "sourceHandle": "i"}}}));
        edges.push(json!({"sourceRef": "s", "targetRef": format!("a{i}")}));
        edges.push(json!({"sourceRef": format!("a{i}"), "targetRef": format!("b{i}")}));
        edges.push(json!({"sourceRef": format!("b{i}"), "targetRef": "t"}));
    }
    json!({"title": "diamond20", "actions": actions, "edges": edges})
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_runs_complete_and_leave_nothing_behind() {
    let config = EngineConfig {
        retained_runs: 10,
        ..EngineConfig::default()
    };
    let handle = Orchestrator::start(config).await.unwrap();
    let graph = common::workflow(&handle, diamond20());
    let batch = || async {
        let t = Instant::now();
        let mut runs = Vec::new();
        for _ in 0..1000 {
            runs.push(
                handle
                    .submit_workflow(&graph, Default::default(), Default::default())
                    .await
                    .unwrap(),
            );
        }
        for run in &mut runs {
            let result = run.result().await.unwrap();
            assert_eq!(result.status, RunStatus::Completed);
            assert_eq!(result.nodes["t"].status, NodeStatus::Completed);
            assert_eq!(result.outputs["b3"]["v"], json!(3));
        }
        t.elapsed()
    };
    let before = trimmed_rss_kb();
    let first = batch().await;
    let after_first = trimmed_rss_kb();
    let mut took = Vec::new();
    for _ in 0..3 {
        took.push(batch().await);
    }
    let after = trimmed_rss_kb();
    eprintln!(
        "load: 4 x 1000 runs x 20 nodes in {first:?}, {took:?}; RSS before {before} KB, after one batch {after_first} KB, after four {after} KB"
    );
    assert_eq!(handle.slots().await.unwrap(), Default::default());
    // No leak: three more batches leave memory where the first left it (finished runs
    // beyond `retainedRuns` are dropped).
    assert!(
        after < after_first + after_first / 5,
        "RSS grew from {after_first} KB to {after} KB"
    );
    common::shutdown(&handle).await;
}

/// Resident memory after giving freed heap pages back to the system.
fn trimmed_rss_kb() -> u64 {
    // SAFETY: malloc_trim only returns unused heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_kb()
}
