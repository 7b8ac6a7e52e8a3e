//! The per-node cost of tracing: a 10,000-node fan-out/fan-in of `core.echo` with the OTLP
//! exporter off, then on (exporting over gRPC to an in-process OTLP receiver).
//! `cargo bench --bench telemetry`; per-node cost = (on - off) / 10,000.

#[path = "../tests/otlp/mod.rs"]
mod otlp;

/// The allocator the `shipsec` binary ships with, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::definition::WorkflowDefinition;
use shipsec_orchestrator::runtime::graph::Graph;
use shipsec_orchestrator::runtime::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::telemetry::init_for_tests;
use shipsec_orchestrator::runtime::validate::validate;
use shipsec_orchestrator::{EngineConfig, Handle, Orchestrator};

const NODES: usize = 10_000;

fn fan(n: usize) -> Arc<Graph> {
    let mut actions: Vec<Value> = vec![
        json!({"ref": "src", "componentId": "core.echo"}),
        json!({"ref": "sink", "componentId": "core.echo"}),
    ];
    let mut edges = Vec::new();
    for i in 0..n - 2 {
        actions
            .push(json!({"ref": format!("n{i}"), "componentId": "core.echo", "params": {"i": i}}));
        edges.push(json!({"sourceRef": "src", "targetRef": format!("n{i}")}));
        edges.push(json!({"sourceRef": format!("n{i}"), "targetRef": "sink"}));
    }
    let def: WorkflowDefinition =
        serde_json::from_value(json!({"title": "fan", "actions": actions, "edges": edges}))
            .expect("definition");
    Arc::new(validate(&def, &ComponentRegistry::with_builtins()).expect("valid"))
}

async fn run_once(handle: &Handle, graph: &Arc<Graph>) {
    let mut run = handle
        .submit(graph.clone(), Default::default(), Default::default())
        .await
        .expect("submit");
    run.result().await.expect("result");
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let graph = fan(NODES);
    let handle = rt
        .block_on(Orchestrator::start(EngineConfig::default()))
        .expect("engine");
    let mut group = c.benchmark_group("telemetry_fan_10k");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("exporter_off", |b| {
        b.to_async(&rt).iter(|| run_once(&handle, &graph))
    });
    // From here on every span is recorded and exported to the in-process receiver, which
    // decodes each request and counts its spans (keeping them would make its own memory
    // grow with every iteration, a cost that is not the engine's).
    let receiver = rt.block_on(otlp::Receiver::start_grpc_counting());
    let telemetry = {
        let _inside = rt.enter();
        init_for_tests(&receiver.endpoint(), "grpc").expect("telemetry")
    };
    let traced = rt
        .block_on(Orchestrator::start(EngineConfig::default()))
        .expect("engine");
    group.bench_function("exporter_on", |b| {
        b.to_async(&rt).iter(|| run_once(&traced, &graph))
    });
    group.finish();
    let dropped = telemetry.shutdown();
    eprintln!(
        "spans dropped: {dropped}; spans received: {}",
        receiver.spans_seen()
    );
    handle.shutdown();
    traced.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
