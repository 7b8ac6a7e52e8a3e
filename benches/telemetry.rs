//! The per-node cost of tracing: a 10,000-node fan-out/fan-in of `core.echo` with the OTLP
//! exporter off, then on (exporting over gRPC to an in-process OTLP receiver).
//! `cargo bench --bench telemetry`; per-node cost = (on - off) / 10,000.
//!
//! Each pair is measured twice: in wall time (what a run waits) and in CPU time of the
//! whole process (every thread: the engine, the span processor, the exporter and the
//! receiver). On a shared, noisy machine the CPU figure moves far less between runs; the
//! wall figure can hide work on an idle core, or add queueing on a busy one.
//! `SHIPSEC_BENCH_OTLP_PROTOCOL=http/protobuf` exports over HTTP instead of gRPC.
//!
//! Criterion's groups run the untraced and traced variants one after the other, minutes
//! apart; after them, [`paired`] alternates untraced, recorded-but-discarded and exported
//! runs and prints the medians of the per-node differences, the figure to report.

#[path = "../tests/otlp/mod.rs"]
mod otlp;

/// The allocator the `shipsec` binary ships with, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::definition::WorkflowDefinition;
use shipsec_orchestrator::runtime::telemetry::{
    TARGET, Telemetry, batched_provider, init_for_tests, spans_layer,
};
use shipsec_orchestrator::{EngineConfig, Handle, Orchestrator, ShutdownMode, Workflow};
use tracing_subscriber::layer::SubscriberExt;

const NODES: usize = 10_000;

fn fan(n: usize) -> WorkflowDefinition {
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
    serde_json::from_value(json!({"title": "fan", "actions": actions, "edges": edges}))
        .expect("definition")
}

/// CPU time of the whole process (all threads), read with `CLOCK_PROCESS_CPUTIME_ID`.
struct ProcessCpu;

fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant of the OS.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ProcessCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        process_cpu()
    }
    fn end(&self, started: Duration) -> Duration {
        process_cpu().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds of CPU shown in ms (the scale of one 10,000-node run).
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        for v in values {
            *v /= 1e6;
        }
        "ms cpu"
    }
    fn scale_throughputs(&self, _typical: f64, _: &Throughput, values: &mut [f64]) -> &'static str {
        for v in values {
            *v /= 1e6;
        }
        "ms cpu"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

async fn run_once(handle: &Handle, graph: &Workflow) {
    let mut run = handle
        .submit_workflow(graph, Default::default(), Default::default())
        .await
        .expect("submit");
    run.result().await.expect("result");
}

/// Runs whose spans are not recorded, alternated with runs whose spans are, for
/// [`paired`].
const PAIRS: usize = 30;

fn protocol() -> otlp::Protocol {
    match std::env::var("SHIPSEC_BENCH_OTLP_PROTOCOL").as_deref() {
        Ok("http/protobuf") => otlp::Protocol::HttpProtobuf,
        Ok("grpc") | Err(_) => otlp::Protocol::Grpc,
        Ok(other) => panic!("SHIPSEC_BENCH_OTLP_PROTOCOL `{other}`: use grpc or http/protobuf"),
    }
}

/// Times runs of `graph` on `engine` in `group`, under `name`.
fn time_runs<M: Measurement>(
    group: &mut BenchmarkGroup<'_, M>,
    name: &str,
    rt: &tokio::runtime::Runtime,
    engine: &Handle,
    graph: &Workflow,
) {
    group.bench_function(name, |b| b.to_async(rt).iter(|| run_once(engine, graph)));
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handle = rt
        .block_on(Orchestrator::start(EngineConfig::default()))
        .expect("engine");
    let graph = handle.prepare(fan(NODES)).expect("a valid workflow");
    // The untraced engine of `paired`, started before telemetry is installed, so that it
    // records no metrics either; the engine's run span is disabled on the quiet threads,
    // so their runs record no span (checked against the receiver).
    let untraced = {
        let quiet = runtime_with("untraced", tracing::Dispatch::none());
        let handle = quiet
            .block_on(Orchestrator::start(EngineConfig::default()))
            .expect("engine");
        (quiet, handle)
    };
    let mut cpu = Criterion::default()
        .with_measurement(ProcessCpu)
        .configure_from_args();
    let mut wall_group = c.benchmark_group("telemetry_fan_10k");
    let mut cpu_group = cpu.benchmark_group("telemetry_fan_10k_cpu");
    wall_group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    cpu_group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    time_runs(&mut wall_group, "exporter_off", &rt, &handle, &graph);
    time_runs(&mut cpu_group, "exporter_off", &rt, &handle, &graph);
    // From here on every span is recorded and exported to the in-process receiver, which
    // counts the spans of each request (keeping them would make its own memory grow with
    // every iteration, and decoding every attribute is a collector's work, not the
    // engine's).
    let protocol = protocol();
    let receiver = rt.block_on(otlp::Receiver::start_counting(protocol));
    let telemetry = {
        let _inside = rt.enter();
        init_for_tests(&receiver.endpoint(), protocol.env_value()).expect("telemetry")
    };
    let traced = rt
        .block_on(Orchestrator::start(EngineConfig::default()))
        .expect("engine");
    time_runs(&mut wall_group, "exporter_on", &rt, &traced, &graph);
    time_runs(&mut cpu_group, "exporter_on", &rt, &traced, &graph);
    wall_group.finish();
    cpu_group.finish();
    if std::env::args().any(|a| a == "--bench") {
        paired(&untraced, &graph, &rt, &traced, &telemetry, &receiver);
    }
    let dropped = telemetry.shutdown();
    eprintln!(
        "spans dropped: {dropped}; spans received: {}",
        receiver.spans_seen()
    );
    for (runtime, engine) in [(&rt, &handle), (&rt, &traced), (&untraced.0, &untraced.1)] {
        runtime
            .block_on(engine.shutdown(ShutdownMode::Cancel))
            .expect("the engine shuts down");
    }
}

/// Spans recorded and batched like the OTLP export's, then discarded: what recording
/// costs without encoding, sending and receiving.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

/// A runtime whose threads (named `name`, for profiles) all use `dispatch` instead of the
/// global subscriber.
fn runtime_with(name: &str, dispatch: tracing::Dispatch) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&dispatch)))
        .build()
        .expect("runtime")
}

/// The per-node cost of tracing measured on alternated runs, so that the machine's drift
/// (other tenants of a shared host) weighs on every side alike. `PAIRS` times: a run on
/// `untraced` (no span, no metric recorded); a run whose spans (and metrics) are
/// recorded and batched but discarded (a runtime whose threads see a subscriber of their
/// own); a run on the traced engine. Each recorded run is followed by a flush of its
/// spans, so that their export is billed to it and does not bleed into the next run.
/// Prints the medians of the per-run differences to the untraced run.
fn paired(
    (quiet, untraced): &(tokio::runtime::Runtime, Handle),
    graph: &Workflow,
    rt: &tokio::runtime::Runtime,
    traced: &Handle,
    telemetry: &Telemetry,
    receiver: &otlp::Receiver,
) {
    let discarding = batched_provider(Discard, Resource::builder().build());
    let recorder = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(spans_layer(discarding.tracer("shipsec-orchestrator-bench"))),
    );
    let recording = runtime_with("recording", recorder);
    let recorded = recording
        .block_on(Orchestrator::start(EngineConfig::default()))
        .expect("engine");

    // With `RUST_LOG` enabling the engine's spans, callsites may be enabled for every
    // dispatcher (the recorder's included) and spans on the quiet threads would not be
    // disabled: the engine would keep its span bookkeeping in the untraced runs.
    let quiet_probe = quiet.block_on(async {
        tokio::spawn(async { tracing::info_span!(target: TARGET, "probe").is_disabled() })
            .await
            .expect("probe")
    });
    assert!(
        quiet_probe,
        "spans are not disabled on the untraced runtime: unset RUST_LOG"
    );

    let per_node = |d: Duration| d.as_secs_f64() * 1e6 / NODES as f64;
    let timed = |f: &dyn Fn()| {
        let (w0, c0) = (Instant::now(), process_cpu());
        f();
        (per_node(w0.elapsed()), per_node(process_cpu() - c0))
    };
    let flush = || {
        telemetry
            .flush_spans()
            .expect("the receiver takes every span")
    };
    // A node span and an attempt span per node.
    let node_spans = 2 * NODES as u64;
    let mut costs: [Vec<f64>; 4] = Default::default();
    for i in 0..PAIRS {
        // The three runs of a round, in turn forwards and backwards, so that no variant
        // always follows the same one.
        let mut round: [(usize, &dyn Fn()); 3] = [
            (0, &|| quiet.block_on(run_once(untraced, graph))),
            (1, &|| {
                recording.block_on(run_once(&recorded, graph));
                discarding.force_flush().expect("discarding never fails");
            }),
            (2, &|| {
                rt.block_on(run_once(traced, graph));
                flush();
            }),
        ];
        if i % 2 == 1 {
            round.reverse();
        }
        let mut measured = [(0.0, 0.0); 3];
        for (variant, run) in round {
            flush();
            let seen = receiver.spans_seen();
            measured[variant] = timed(run);
            // What reached the receiver, flushed outside the timing: only the traced run
            // exports, every node's two spans. The run span ends as its supervisor stops,
            // just after the result is out, so it may come with the next flush instead.
            flush();
            let exported = receiver.spans_seen() - seen;
            let want = if variant == 2 {
                node_spans..=node_spans + 2
            } else {
                0..=1
            };
            assert!(
                want.contains(&exported),
                "variant {variant} exported {exported} spans, not {want:?}"
            );
        }
        let [(off_wall, off_cpu), (rec_wall, rec_cpu), (on_wall, on_cpu)] = measured;
        for (i, cost) in [
            rec_wall - off_wall,
            rec_cpu - off_cpu,
            on_wall - off_wall,
            on_cpu - off_cpu,
        ]
        .into_iter()
        .enumerate()
        {
            costs[i].push(cost);
        }
    }
    let [rec_wall, rec_cpu, on_wall, on_cpu] = costs.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    eprintln!(
        "tracing cost per node, medians of {PAIRS} alternated runs (CPU: all threads, receiver \
         included):\n  recorded, discarded: {rec_wall:.2} µs wall, {rec_cpu:.2} µs CPU\n  \
         recorded, exported:  {on_wall:.2} µs wall, {on_cpu:.2} µs CPU"
    );
    recording
        .block_on(recorded.shutdown(ShutdownMode::Cancel))
        .expect("the engine shuts down");
    discarding
        .shutdown()
        .expect("the discarding provider stops");
}

criterion_group!(benches, bench);
criterion_main!(benches);
