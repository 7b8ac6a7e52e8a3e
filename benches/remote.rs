//! Remote attempts on loopback: a coordinator (the gateway served by tonic on 127.0.0.1)
//! and four Rust workers (`worker::client`, 256 slots each, hosting `core.echo`), all in
//! this process but speaking gRPC over TCP (`tests/remote/mod.rs`, as the remote property
//! test), against the same engine running the same nodes in-process.
//!
//! - Round trip: 2,000 one-node runs one after another, remote and local; the median and
//!   p99 of submit-to-result, and their difference (what going remote adds per attempt).
//! - Throughput: a fan-out of 10,000 `core.echo` between a source and a join, remote and
//!   local; attempts per second (median of 5 runs).
//!
//! No journal: the Ack waits for the engine to store the attempt's end, which here is
//! the end's event. `cargo bench --bench remote` prints the table.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/remote/mod.rs"]
mod remote;

use std::time::{Duration, Instant};

use serde_json::json;
use shipsec_orchestrator::messages::orchestrator::SubmitOptions;
use shipsec_orchestrator::runtime::definition::{JsonObject, WorkflowDefinition};
use shipsec_orchestrator::runtime::semantics::outcome::RunStatus;
use shipsec_orchestrator::{EngineConfig, Handle, ShutdownMode, Workflow};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 4;
const SLOTS: u32 = 256;
const ROUND_TRIPS: usize = 2_000;
const FAN_OUT: usize = 10_000;
const FAN_OUT_RUNS: usize = 5;

fn definition(remote: bool, width: usize) -> WorkflowDefinition {
    let runner = if remote {
        json!({"kind": "remote"})
    } else {
        json!({"kind": "inline"})
    };
    let mut actions = Vec::new();
    if width == 1 {
        actions.push(json!({"ref": "only", "componentId": "core.echo", "params": {"n": 1}, "runner": runner}));
    } else {
        actions.push(json!({"ref": "source", "componentId": "core.echo"}));
        for i in 0..width {
            actions.push(json!({"ref": format!("n{i}"), "componentId": "core.echo", "params": {"n": i}, "dependsOn": ["source"], "runner": runner}));
        }
        let all: Vec<String> = (0..width).map(|i| format!("n{i}")).collect();
        actions.push(json!({"ref": "join", "componentId": "core.echo", "dependsOn": all}));
    }
    serde_json::from_value(json!({"title": "remote bench", "actions": actions}))
        .expect("definition")
}

async fn run(handle: &Handle, workflow: &Workflow) {
    let mut run = handle
        .submit_workflow(workflow, JsonObject::new(), SubmitOptions::default())
        .await
        .expect("submit");
    let result = run.result().await.expect("result");
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn round_trips(handle: &Handle, workflow: &Workflow) -> (Duration, Duration) {
    for _ in 0..100 {
        run(handle, workflow).await; // warm-up
    }
    let mut took = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        run(handle, workflow).await;
        took.push(start.elapsed());
    }
    took.sort();
    (percentile(&took, 0.5), percentile(&took, 0.99))
}

async fn throughput(handle: &Handle, workflow: &Workflow) -> f64 {
    run(handle, workflow).await; // warm-up
    let mut rates: Vec<f64> = Vec::new();
    for _ in 0..FAN_OUT_RUNS {
        let start = Instant::now();
        run(handle, workflow).await;
        rates.push(FAN_OUT as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// The engine with a coordinator on 127.0.0.1 and its workers, registered.
async fn engine() -> (Handle, CancellationToken) {
    let mut config = EngineConfig::default();
    config.limits.max_nodes = config.limits.max_nodes.max(FAN_OUT + 2);
    config.limits.max_edges = config.limits.max_edges.max(2 * FAN_OUT);
    config.limits.max_definition_bytes = usize::MAX;
    let stop = CancellationToken::new();
    let handle = remote::start(config, WORKERS, SLOTS, "core.echo", &stop).await;
    (handle, stop)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (handle, stop) = engine().await;
        let prepare = |remote, width| handle.prepare(definition(remote, width)).expect("valid");
        let (local_1, remote_1) = (prepare(false, 1), prepare(true, 1));
        let (local_n, remote_n) = (prepare(false, FAN_OUT), prepare(true, FAN_OUT));
        let (local_median, local_p99) = round_trips(&handle, &local_1).await;
        let (remote_median, remote_p99) = round_trips(&handle, &remote_1).await;
        let local_rate = throughput(&handle, &local_n).await;
        let remote_rate = throughput(&handle, &remote_n).await;
        println!("| one-node run, submit to result | median | p99 |");
        println!("|---|---|---|");
        println!("| in-process | {} | {} |", ms(local_median), ms(local_p99));
        println!(
            "| remote (gRPC, loopback) | {} | {} |",
            ms(remote_median),
            ms(remote_p99)
        );
        println!(
            "| remote minus in-process | {} | {} |",
            ms(remote_median.saturating_sub(local_median)),
            ms(remote_p99.saturating_sub(local_p99))
        );
        println!();
        println!("| {FAN_OUT}-node fan-out | attempts/s (median of {FAN_OUT_RUNS}) |");
        println!("|---|---|");
        println!("| in-process | {local_rate:.0} |");
        println!("| remote, {WORKERS} workers x {SLOTS} slots | {remote_rate:.0} |");
        stop.cancel();
        handle
            .shutdown(ShutdownMode::Drain)
            .await
            .expect("shutdown");
    });
}
