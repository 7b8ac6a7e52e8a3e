//! Telemetry, end to end: the real `shipsec` binary exports OTLP to an in-test receiver
//! (`tests/otlp`) that decodes the wire format, and the tests check the spans and
//! metrics against the contract of docs/operations.md:
//! - one trace per run: a root `workflow.run` span, one `workflow.node` span per node
//!   (child of the run span, linked to the node spans of the parents that triggered it),
//!   one `workflow.node.attempt` span per attempt (child of its node span);
//! - metrics `workflow.runs`, `workflow.node.attempts`, `workflow.node.duration`,
//!   `workflow.run.duration`, `workflow.nodes.running`, `workflow.nodes.queued`;
//! - a collector that is down slows nothing;
//! - `otel-collector.yaml` is self-consistent.
//!
//! `receiver_*` tests check the receiver itself, with no instrumentation involved.

mod otlp;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use otlp::{FlatSpan, MetricKind, Protocol, Receiver, SpanStatus, summarize_spans};
use prost::Message;
use serde_json::Value;
use shipsec_orchestrator::runtime::components::builtin::FLAKY_ERROR;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "shipsec-test";
const RUN: &str = "workflow.run";
/// Node spans are named after their node ref (`otel.name`), not `workflow.node`.
const NODE: &str = "node";
const ATTEMPT: &str = "workflow.node.attempt";
/// How long exported data may take to show up after the binary exits (it flushes on
/// shutdown, so it is normally there already).
const ARRIVAL: Duration = Duration::from_secs(10);
/// Links a span keeps (`OTEL_SPAN_LINK_COUNT_LIMIT` is not set for the binary).
const LINK_LIMIT: usize = 128;

// ---------------------------------------------------------------------------------------
// The receiver itself

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![text("service.name", service)],
        ..Default::default()
    })
}

/// One export request with one span, named `name`, shaped like what the contract asks.
fn one_span(name: &str, trace_id: [u8; 16], span_id: [u8; 8]) -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: vec![0xab; 8],
        name: name.into(),
        kind: 1,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 2_000,
        attributes: vec![
            text("workflow.node.ref", "enrich"),
            kv("workflow.attempt", any_value::Value::IntValue(2)),
            kv("flag", any_value::Value::BoolValue(true)),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
        ],
        events: vec![span::Event {
            time_unix_nano: 1_500,
            name: "retrying".into(),
            ..Default::default()
        }],
        links: vec![span::Link {
            trace_id: trace_id.to_vec(),
            span_id: vec![0xcd; 8],
            ..Default::default()
        }],
        status: Some(Status {
            message: "scanner lost its connection".into(),
            code: 2,
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("receiver-self-test"),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "self-test".into(),
                    ..Default::default()
                }),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Checks the flattening of a span made by [`one_span`].
fn check_flat_span(span: &FlatSpan, trace_id: [u8; 16], span_id: [u8; 8]) {
    assert_eq!(span.trace_id, otlp::hex(&trace_id));
    assert_eq!(span.trace_id.len(), 32);
    assert_eq!(span.span_id, otlp::hex(&span_id));
    assert_eq!(span.parent_span_id, "abababababababab");
    assert!(!span.is_root());
    assert_eq!(span.service_name, "receiver-self-test");
    assert_eq!(span.scope, "self-test");
    assert!(span.attr_is("workflow.node.ref", "enrich"));
    assert_eq!(span.attr_i64("workflow.attempt"), Some(2));
    assert_eq!(span.attr("flag"), Some(&Value::Bool(true)));
    assert_eq!(span.attr("ratio"), Some(&serde_json::json!(0.5)));
    assert_eq!(span.status, SpanStatus::Error);
    assert_eq!(span.status_message, "scanner lost its connection");
    assert_eq!(span.events, ["retrying"]);
    assert!(span.has_event("retrying"));
    assert_eq!(span.links.len(), 1);
    assert_eq!(span.links[0].trace_id, span.trace_id);
    assert_eq!(span.links[0].span_id, "cdcdcdcdcdcdcdcd");
}

/// A hand-written HTTP/1.1 request; the status code and body of the answer.
async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the receiver answers")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn receiver_decodes_what_an_otlp_exporter_sends() {
    // gRPC, through tonic's generated client.
    let grpc = Receiver::start_grpc().await;
    assert!(grpc.endpoint().starts_with("http://127.0.0.1:"));
    let (trace_id, span_id) = ([0x11; 16], [0x22; 8]);
    let mut client = TraceServiceClient::connect(grpc.endpoint())
        .await
        .expect("connect to the gRPC receiver");
    client
        .export(one_span("grpc-span", trace_id, span_id))
        .await
        .expect("the gRPC receiver accepts the export");
    let spans = grpc
        .wait_for_spans(
            |s| s.iter().any(|s| s.name == "grpc-span"),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    check_flat_span(&spans[0], trace_id, span_id);
    assert_eq!(grpc.trace_requests().len(), 1);

    // HTTP/protobuf, with a request written by hand.
    let http = Receiver::start_http().await;
    let (trace_id, span_id) = ([0x33; 16], [0x44; 8]);
    let body = one_span("http-span", trace_id, span_id).encode_to_vec();
    let (status, answer) =
        http_post(http.addr(), "/v1/traces", "application/x-protobuf", &body).await;
    assert_eq!(status, 200, "{answer}");
    let spans = http
        .wait_for_spans(
            |s| s.iter().any(|s| s.name == "http-span"),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    check_flat_span(&spans[0], trace_id, span_id);
    let seen = http.http_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/traces");
    assert_eq!(seen[0].content_type, "application/x-protobuf");
    assert_eq!(seen[0].body_len, body.len());

    // What it refuses, it refuses clearly and does not store.
    let (status, _) = http_post(http.addr(), "/v1/traces", "application/json", b"{}").await;
    assert_eq!(status, 415);
    let (status, _) = http_post(
        http.addr(),
        "/v1/traces",
        "application/x-protobuf",
        b"\xff\xff",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http_post(http.addr(), "/v1/profiles", "application/x-protobuf", b"").await;
    assert_eq!(status, 404);
    assert_eq!(http.spans().len(), 1);

    // Nothing crossed over, and a wait that cannot be satisfied times out.
    assert_eq!(grpc.spans().len(), 1);
    let started = Instant::now();
    let missing = grpc
        .try_wait_for_spans(|s| s.len() > 1, Duration::from_millis(200))
        .await;
    assert!(missing.is_err());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// A request of `shape[r][s]` spans in scope `s` of resource `r`.
fn spans_request(shape: &[&[usize]]) -> ExportTraceServiceRequest {
    let mut next = 0u8;
    ExportTraceServiceRequest {
        resource_spans: shape
            .iter()
            .map(|scopes| ResourceSpans {
                resource: resource("counting"),
                scope_spans: scopes
                    .iter()
                    .map(|&n| ScopeSpans {
                        spans: (0..n)
                            .map(|_| {
                                next += 1;
                                one_span("counted", [next; 16], [next; 8]).resource_spans[0]
                                    .scope_spans[0]
                                    .spans[0]
                                    .clone()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counting_receiver_counts_spans_without_keeping_them() {
    // The bench's receiver decodes each request's envelope only; its count must still be
    // exact, over both transports, and what it cannot read it refuses.
    let request = spans_request(&[&[3, 2], &[], &[4, 0, 1]]);
    let grpc = Receiver::start_counting(Protocol::Grpc).await;
    let mut client = TraceServiceClient::connect(grpc.endpoint())
        .await
        .expect("connect to the counting gRPC receiver");
    client
        .export(request.clone())
        .await
        .expect("the counting receiver accepts the export");
    client
        .export(spans_request(&[&[5]]))
        .await
        .expect("a second export");
    assert_eq!(grpc.spans_seen(), 15, "counted before answering");
    assert!(grpc.trace_requests().is_empty(), "nothing kept");

    let http = Receiver::start_counting(Protocol::HttpProtobuf).await;
    let body = request.encode_to_vec();
    let (status, answer) =
        http_post(http.addr(), "/v1/traces", "application/x-protobuf", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(http.spans_seen(), 10);
    let (status, _) = http_post(
        http.addr(),
        "/v1/traces",
        "application/x-protobuf",
        b"\xff\xff",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(http.spans_seen(), 10);
    assert!(http.trace_requests().is_empty());
}

fn sum_metric(
    name: &str,
    temporality: AggregationTemporality,
    points: &[(&str, i64, u64)],
) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points
                .iter()
                .map(|(component, value, time)| NumberDataPoint {
                    attributes: vec![text("workflow.component.id", component)],
                    time_unix_nano: *time,
                    value: Some(number_data_point::Value::AsInt(*value)),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn metrics_request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("receiver-self-test"),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn receiver_merges_metric_exports() {
    use AggregationTemporality::{Cumulative, Delta};
    // Two exports: cumulative totals are re-sent (the latest wins), deltas add up.
    let first = metrics_request(vec![
        sum_metric(
            "cumulative",
            Cumulative,
            &[("core.echo", 2, 10), ("core.flaky", 1, 10)],
        ),
        sum_metric("delta", Delta, &[("core.echo", 1, 10)]),
        Metric {
            name: "histogram".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: 10,
                    count: 2,
                    sum: Some(1.5),
                    ..Default::default()
                }],
                aggregation_temporality: Cumulative as i32,
            })),
            ..Default::default()
        },
    ]);
    let second = metrics_request(vec![
        sum_metric("cumulative", Cumulative, &[("core.echo", 3, 20)]),
        sum_metric("delta", Delta, &[("core.echo", 2, 20)]),
    ]);

    let grpc = Receiver::start_grpc().await;
    let mut client = MetricsServiceClient::connect(grpc.endpoint())
        .await
        .expect("connect");
    client.export(first.clone()).await.expect("export 1");
    client.export(second.clone()).await.expect("export 2");

    let http = Receiver::start_http().await;
    for req in [&first, &second] {
        let (status, answer) = http_post(
            http.addr(),
            "/v1/metrics",
            "application/x-protobuf",
            &req.encode_to_vec(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }

    for receiver in [&grpc, &http] {
        let metrics = receiver
            .wait_for_metrics(
                |m| m.iter().any(|m| m.name == "delta" && m.total(&[]) == 3.0),
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(metrics.len(), 3, "{metrics:#?}");
        let cumulative = receiver.metric("cumulative").unwrap();
        assert_eq!(cumulative.kind, MetricKind::Sum { monotonic: true });
        assert_eq!(cumulative.service_name, "receiver-self-test");
        assert_eq!(
            cumulative.total(&[("workflow.component.id", "core.echo")]),
            3.0
        );
        assert_eq!(
            cumulative.total(&[("workflow.component.id", "core.flaky")]),
            1.0
        );
        assert_eq!(cumulative.total(&[]), 4.0);
        assert_eq!(cumulative.total(&[("workflow.component.id", "nope")]), 0.0);
        let histogram = receiver.metric("histogram").unwrap();
        assert_eq!(histogram.kind, MetricKind::Histogram);
        assert_eq!(histogram.count(&[]), 2);
        assert_eq!(histogram.total(&[]), 1.5);
        assert_eq!(receiver.metric_requests().len(), 2);
    }
}

// ---------------------------------------------------------------------------------------
// The binary, exporting

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// What a `shipsec run --json` printed and how long it took.
#[derive(Debug)]
struct CliRun {
    code: Option<i32>,
    result: Value,
    stderr: String,
    elapsed: Duration,
}

impl CliRun {
    fn run_id(&self) -> &str {
        self.result["runId"].as_str().expect("runId in the result")
    }

    fn node_statuses(&self) -> BTreeMap<String, String> {
        self.result["nodes"]
            .as_object()
            .expect("nodes in the result")
            .iter()
            .map(|(r, n)| (r.clone(), n["status"].as_str().unwrap_or_default().into()))
            .collect()
    }
}

/// Runs `shipsec run <file> --json <args>`, exporting to `endpoint` with `protocol`
/// (`None`: no OTel variable at all, whatever the test's own environment holds).
async fn shipsec_run(file: &str, args: &[&str], otel: Option<(&str, &str)>) -> CliRun {
    shipsec_run_with(file, args, otel, &[]).await
}

/// `shipsec run` with `env` set on top of the OTLP variables.
async fn shipsec_run_with(
    file: &str,
    args: &[&str],
    otel: Option<(&str, &str)>,
    env: &[(&str, &str)],
) -> CliRun {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_shipsec"));
    cmd.arg("run").arg(file).arg("--json").args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    if let Some((endpoint, protocol)) = otel {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_SERVICE_NAME", SERVICE);
    }
    cmd.envs(env.iter().copied());
    cmd.kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("shipsec run {file} did not finish within 60 s"))
        .expect("start shipsec");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout of shipsec run {file} is not one JSON document ({e}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    CliRun {
        code: out.status.code(),
        result,
        stderr,
        elapsed,
    }
}

/// Runs an example against a fresh receiver speaking `protocol`.
async fn run_exporting(protocol: Protocol, file: &str, args: &[&str]) -> (Receiver, CliRun) {
    let receiver = Receiver::start(protocol).await;
    let run = shipsec_run(
        file,
        args,
        Some((&receiver.endpoint(), protocol.env_value())),
    )
    .await;
    assert_eq!(run.code, Some(0), "shipsec run {file}:\n{}", run.stderr);
    (receiver, run)
}

/// What the tests need of an example definition.
#[derive(Debug)]
struct Definition {
    components: BTreeMap<String, String>,
    joins: BTreeMap<String, String>,
    parents: BTreeMap<String, BTreeSet<String>>,
}

fn definition(file: &str) -> Definition {
    let text = std::fs::read_to_string(file).expect("read the definition");
    let def: Value = serde_json::from_str(&text).expect("the example is JSON");
    let mut components = BTreeMap::new();
    let mut joins = BTreeMap::new();
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for action in def["actions"].as_array().expect("actions") {
        let r = action["ref"].as_str().expect("ref").to_owned();
        components.insert(
            r.clone(),
            action["componentId"].as_str().unwrap().to_owned(),
        );
        let join = def["nodes"][&r]["joinStrategy"].as_str().unwrap_or("all");
        joins.insert(r.clone(), join.to_owned());
        parents.entry(r).or_default();
    }
    for edge in def["edges"].as_array().expect("the examples have edges") {
        parents
            .entry(edge["targetRef"].as_str().unwrap().to_owned())
            .or_default()
            .insert(edge["sourceRef"].as_str().unwrap().to_owned());
    }
    Definition {
        components,
        joins,
        parents,
    }
}

/// The spans of one run's trace.
#[derive(Debug)]
struct RunTrace {
    run: FlatSpan,
    /// Every span of the run's trace.
    spans: Vec<FlatSpan>,
    /// Every span received.
    received: Vec<FlatSpan>,
}

impl RunTrace {
    fn nodes(&self) -> Vec<&FlatSpan> {
        self.spans.iter().filter(|s| s.is_node()).collect()
    }

    fn node(&self, node: &str) -> &FlatSpan {
        let found: Vec<&FlatSpan> = self
            .nodes()
            .into_iter()
            .filter(|s| s.attr_is("workflow.node.ref", node))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {NODE} span for {node}; the trace holds {}",
            summarize_spans(&self.spans)
        );
        found[0]
    }

    /// The attempt spans of `node`, by attempt number.
    fn attempts(&self, node: &str) -> Vec<&FlatSpan> {
        let parent = &self.node(node).span_id;
        let mut attempts: Vec<&FlatSpan> = self
            .spans
            .iter()
            .filter(|s| s.name == ATTEMPT && &s.parent_span_id == parent)
            .collect();
        attempts.sort_by_key(|s| s.attr_i64("workflow.attempt"));
        attempts
    }
}

/// Waits for the spans of the run `run` (its run span, a node span per node and an
/// attempt span per attempt of its result) and returns its trace. When some never
/// arrive, returns what did, for the assertions to name what is missing.
async fn trace_of(receiver: &Receiver, run: &CliRun) -> RunTrace {
    let run_id = run.run_id().to_owned();
    let nodes = run.result["nodes"].as_object().unwrap();
    let node_count = nodes.len();
    let attempt_count: u64 = nodes
        .values()
        .map(|n| n["attempts"].as_u64().unwrap())
        .sum();
    let find_run = |spans: &[FlatSpan]| {
        spans
            .iter()
            .find(|s| s.name == RUN && s.attr_is("workflow.run.id", &run_id))
            .cloned()
    };
    let complete = |spans: &[FlatSpan]| {
        find_run(spans).is_some_and(|r| {
            let count = |which: &dyn Fn(&FlatSpan) -> bool| {
                spans
                    .iter()
                    .filter(|s| s.trace_id == r.trace_id && which(s))
                    .count()
            };
            count(&|s| s.is_node()) >= node_count
                && count(&|s| s.name == ATTEMPT) as u64 >= attempt_count
        })
    };
    let received = match receiver.try_wait_for_spans(complete, ARRIVAL).await {
        Ok(spans) | Err(spans) => spans,
    };
    let run_span = find_run(&received).unwrap_or_else(|| {
        panic!(
            "no {RUN} span with workflow.run.id = {run_id} arrived; received {}\nstderr of the run:\n{}",
            summarize_spans(&received),
            run.stderr
        )
    });
    let spans = received
        .iter()
        .filter(|s| s.trace_id == run_span.trace_id)
        .cloned()
        .collect();
    RunTrace {
        run: run_span,
        spans,
        received,
    }
}

/// The contract's shape of a run's trace, checked against its `--json` result and its
/// definition: one trace, a root run span, a node span per node, an attempt span per
/// attempt, the statuses, the join attributes and the links.
fn check_dag(trace: &RunTrace, run: &CliRun, def: &Definition) {
    let result = &run.result;
    let run_span = &trace.run;
    assert_eq!(trace.run.trace_id.len(), 32);
    assert!(
        run_span.is_root(),
        "the run span is the root of its trace: {run_span:#?}"
    );
    assert_eq!(
        run_span.attr_text("workflow.run.status").as_deref(),
        result["status"].as_str(),
        "workflow.run.status of {run_span:#?}"
    );
    let runs: Vec<&FlatSpan> = trace
        .received
        .iter()
        .filter(|s| s.name == RUN && s.attr_is("workflow.run.id", run.run_id()))
        .collect();
    assert_eq!(runs.len(), 1, "one run span per run");
    // One trace per run: every workflow span of this (single-run) process is in it.
    for span in &trace.received {
        if span.name.starts_with("workflow.") {
            assert_eq!(
                span.trace_id, run_span.trace_id,
                "every workflow span is in the run's trace: {span:#?}"
            );
        }
    }
    for span in &trace.spans {
        assert_eq!(span.service_name, SERVICE, "service.name of {span:#?}");
    }

    let nodes = result["nodes"].as_object().unwrap();
    assert_eq!(
        trace.nodes().len(),
        nodes.len(),
        "one node span per node, skipped and cancelled ones too; the trace holds {}",
        summarize_spans(&trace.spans)
    );
    let node_span_ids: BTreeMap<&str, &str> = nodes
        .keys()
        .map(|r| (r.as_str(), trace.node(r).span_id.as_str()))
        .collect();
    for (node, info) in nodes {
        let span = trace.node(node);
        let status = info["status"].as_str().unwrap();
        assert_eq!(
            span.parent_span_id, run_span.span_id,
            "{node}: the node span is a child of the run span"
        );
        assert_eq!(
            span.attr_text("workflow.component.id").as_deref(),
            Some(def.components[node].as_str()),
            "{node}: workflow.component.id"
        );
        assert_eq!(
            span.attr_text("workflow.join.strategy").as_deref(),
            Some(def.joins[node].as_str()),
            "{node}: workflow.join.strategy"
        );
        assert_eq!(
            span.attr_text("workflow.node.status").as_deref(),
            Some(status),
            "{node}: workflow.node.status"
        );
        if status == "FAILED" {
            assert_eq!(span.status, SpanStatus::Error, "{node}: {span:#?}");
            assert!(!span.status_message.is_empty(), "{node}: a status message");
            assert_eq!(
                span.attr_text("error.type").as_deref(),
                info["error"]["type"].as_str(),
                "{node}: error.type"
            );
        }
        if status == "COMPLETED" {
            assert_ne!(span.status, SpanStatus::Error, "{node}: {span:#?}");
        }

        // Attempts: one span each, numbered from 1, children of the node span.
        let attempts = trace.attempts(node);
        let expected = info["attempts"].as_u64().unwrap();
        assert_eq!(
            attempts.len() as u64,
            expected,
            "{node}: one attempt span per attempt"
        );
        let numbers: Vec<Option<i64>> = attempts
            .iter()
            .map(|a| a.attr_i64("workflow.attempt"))
            .collect();
        let want: Vec<Option<i64>> = (1..=expected as i64).map(Some).collect();
        assert_eq!(numbers, want, "{node}: workflow.attempt");

        // Joins and links.
        let join = def.joins[node].as_str();
        let triggered_by: Option<BTreeSet<String>> = span
            .attr_text("workflow.join.triggered_by")
            .map(|t| t.split(',').map(|r| r.trim().to_owned()).collect());
        if join == "all" {
            assert_eq!(
                triggered_by, None,
                "{node}: workflow.join.triggered_by is only for any/first/quorum"
            );
        }
        if expected == 0 {
            continue; // never started: the contract says nothing of its links
        }
        let linked_parents: BTreeSet<String> = if join == "all" {
            def.parents[node].clone()
        } else {
            let by: BTreeSet<String> = info["triggeredBy"]
                .as_array()
                .map(|a| a.iter().map(|r| r.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            assert_eq!(
                triggered_by.as_ref(),
                Some(&by),
                "{node}: workflow.join.triggered_by"
            );
            by
        };
        let want: BTreeSet<&str> = linked_parents
            .iter()
            .map(|p| node_span_ids[p.as_str()])
            .collect();
        let got: BTreeSet<&str> = span.linked_span_ids().into_iter().collect();
        assert!(
            got.is_subset(&want),
            "{node} ({join}) links to the node spans of {linked_parents:?}"
        );
        assert_eq!(
            got.len(),
            want.len().min(LINK_LIMIT),
            "{node} ({join}) links to every parent of {linked_parents:?}, up to the limit"
        );
        assert_eq!(span.links.len(), got.len(), "{node}: no duplicate links");
        let dropped = want.len().saturating_sub(LINK_LIMIT) as i64;
        assert_eq!(
            span.attr_i64("workflow.join.links_dropped"),
            (dropped > 0).then_some(dropped),
            "{node}: the links left off are counted"
        );
        for link in &span.links {
            assert_eq!(
                link.trace_id, run_span.trace_id,
                "{node}: links stay in the trace"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recon_over_grpc_exports_the_whole_dag_as_one_trace() {
    let (receiver, run) = run_exporting(
        Protocol::Grpc,
        &example("recon.json"),
        &["--input", "target=example.com"],
    )
    .await;
    let trace = trace_of(&receiver, &run).await;
    check_dag(&trace, &run, &definition(&example("recon.json")));

    assert!(trace.run.attr_is("workflow.run.status", "COMPLETED"));
    let vulnscan = trace.node("vulnscan");
    assert_eq!(vulnscan.status, SpanStatus::Error, "{vulnscan:#?}");
    assert!(
        vulnscan.attr_is("error.type", "ScannerError"),
        "{vulnscan:#?}"
    );
    assert!(vulnscan.attr_is("workflow.node.status", "FAILED"));
    let attempt = trace.attempts("vulnscan");
    assert_eq!(attempt.len(), 1);
    assert_eq!(attempt[0].status, SpanStatus::Error, "{:#?}", attempt[0]);
    assert!(attempt[0].attr_is("error.type", "ScannerError"));

    let notify = trace.node("notify");
    assert_eq!(
        notify.linked_span_ids(),
        [vulnscan.span_id.as_str()],
        "notify links to vulnscan's node span"
    );
    let report = trace.node("report");
    let parents: BTreeSet<&str> = ["dns", "ports", "whois"]
        .iter()
        .map(|n| trace.node(n).span_id.as_str())
        .collect();
    assert_eq!(
        report
            .linked_span_ids()
            .into_iter()
            .collect::<BTreeSet<_>>(),
        parents
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn race_cancels_the_losers_and_links_the_winner_only() {
    let (receiver, run) = run_exporting(Protocol::Grpc, &example("race.json"), &[]).await;
    let trace = trace_of(&receiver, &run).await;
    check_dag(&trace, &run, &definition(&example("race.json")));

    for loser in ["mirror-ap", "mirror-eu"] {
        assert_eq!(run.result["nodes"][loser]["status"], "CANCELLED");
        let span = trace.node(loser);
        assert!(
            span.attr_is("workflow.node.status", "CANCELLED"),
            "{loser}: {span:#?}"
        );
    }
    let fetch = trace.node("fetch");
    assert!(fetch.attr_is("workflow.join.strategy", "first"));
    assert_eq!(
        fetch.links.len(),
        1,
        "fetch links to the winner only: {fetch:#?}"
    );
    assert_eq!(fetch.links[0].span_id, trace.node("mirror-us").span_id);
    assert_eq!(fetch.links[0].trace_id, trace.run.trace_id);
    assert!(
        fetch.attr_is("workflow.join.triggered_by", "mirror-us"),
        "{fetch:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_exports_one_span_per_attempt() {
    let (receiver, run) = run_exporting(Protocol::Grpc, &example("retry.json"), &[]).await;
    let trace = trace_of(&receiver, &run).await;
    check_dag(&trace, &run, &definition(&example("retry.json")));

    let enrich = trace.node("enrich");
    assert!(enrich.attr_is("workflow.node.status", "COMPLETED"));
    assert!(
        enrich.has_event("retrying"),
        "a `retrying` event on the flaky node: {:?}",
        enrich.events
    );
    let attempts = trace.attempts("enrich");
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    for failed in &attempts[..2] {
        assert_eq!(failed.status, SpanStatus::Error, "{failed:#?}");
        assert!(failed.attr_is("error.type", FLAKY_ERROR), "{failed:#?}");
    }
    assert_ne!(attempts[2].status, SpanStatus::Error, "{:#?}", attempts[2]);
    assert!(
        attempts
            .windows(2)
            .all(|w| w[0].end_unix_nano <= w[1].start_unix_nano),
        "attempts run one after the other"
    );

    // The error handler never ran: a node span, no attempt span.
    assert_eq!(run.result["nodes"]["alert"]["status"], "SKIPPED");
    assert!(
        trace
            .node("alert")
            .attr_is("workflow.node.status", "SKIPPED")
    );
    assert!(trace.attempts("alert").is_empty());
}

/// The metrics every run records. `workflow.nodes.queued` is recorded only when a node
/// waits for a slot, and an instrument with no measurement is not exported: see
/// [`queued_nodes_are_counted_while_they_wait`].
const RUN_METRICS: [&str; 5] = [
    "workflow.runs",
    "workflow.node.attempts",
    "workflow.node.duration",
    "workflow.run.duration",
    "workflow.nodes.running",
];

/// Waits for the metrics `wanted` of a finished single-run process.
async fn run_metrics(receiver: &Receiver, wanted: &[&str]) -> Vec<otlp::FlatMetric> {
    match receiver
        .try_wait_for_metrics(
            |m| wanted.iter().all(|w| m.iter().any(|m| m.name == *w)),
            ARRIVAL,
        )
        .await
    {
        Ok(metrics) => metrics,
        Err(metrics) => {
            let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
            panic!("expected the metrics {wanted:?}; received {names:?}")
        }
    }
}

/// The metrics every run exports, checked against its result.
fn check_run_metrics(metrics: &[otlp::FlatMetric], run: &CliRun) {
    let get = |name: &str| metrics.iter().find(|m| m.name == name).unwrap();
    for m in metrics {
        if m.name.starts_with("workflow.") {
            assert_eq!(m.service_name, SERVICE, "service.name of {}", m.name);
        }
    }
    let status = run.result["status"].as_str().unwrap();
    let runs = get("workflow.runs");
    assert_eq!(runs.kind, MetricKind::Sum { monotonic: true }, "a counter");
    assert_eq!(runs.total(&[]), 1.0, "{runs:#?}");
    assert_eq!(
        runs.total(&[("workflow.run.status", status)]),
        1.0,
        "{runs:#?}"
    );

    let attempts = get("workflow.node.attempts");
    assert_eq!(attempts.kind, MetricKind::Sum { monotonic: true });
    let started: u64 = run.result["nodes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(attempts.total(&[]), started as f64, "{attempts:#?}");
    for point in &attempts.points {
        let outcome = point.attributes.get("outcome").map(otlp::value_text);
        assert!(
            matches!(outcome.as_deref(), Some("completed" | "failed")),
            "outcome of {point:?}"
        );
        assert!(point.attributes.contains_key("workflow.component.id"));
        if outcome.as_deref() == Some("failed") {
            assert!(point.attributes.contains_key("error.type"), "{point:?}");
        }
    }

    for name in ["workflow.node.duration", "workflow.run.duration"] {
        let m = get(name);
        assert!(
            matches!(
                m.kind,
                MetricKind::Histogram | MetricKind::ExponentialHistogram
            ),
            "{name} is a histogram: {m:#?}"
        );
    }
    assert_eq!(get("workflow.run.duration").count(&[]), 1);
    assert!(get("workflow.node.duration").count(&[]) >= 1);
    for name in ["workflow.nodes.running", "workflow.nodes.queued"] {
        let Some(m) = metrics.iter().find(|m| m.name == name) else {
            continue; // queued: only when a node waited (see RUN_METRICS)
        };
        assert_eq!(
            m.kind,
            MetricKind::Sum { monotonic: false },
            "{name} is an up-down counter"
        );
        assert_eq!(
            m.total(&[]),
            0.0,
            "{name} is back to 0 after the run: {m:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_metrics_count_every_attempt_by_outcome() {
    let (receiver, run) = run_exporting(Protocol::Grpc, &example("retry.json"), &[]).await;
    let metrics = run_metrics(&receiver, &RUN_METRICS).await;
    check_run_metrics(&metrics, &run);
    let attempts = receiver.metric("workflow.node.attempts").unwrap();
    let flaky = ("workflow.component.id", "core.flaky");
    assert_eq!(attempts.total(&[flaky]), 3.0, "{attempts:#?}");
    assert_eq!(attempts.total(&[flaky, ("outcome", "failed")]), 2.0);
    assert_eq!(
        attempts.total(&[flaky, ("outcome", "failed"), ("error.type", FLAKY_ERROR)]),
        2.0
    );
    assert_eq!(attempts.total(&[flaky, ("outcome", "completed")]), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn recon_metrics_count_the_failure_by_error_type() {
    let (receiver, run) = run_exporting(
        Protocol::Grpc,
        &example("recon.json"),
        &["--input", "target=example.com"],
    )
    .await;
    let metrics = run_metrics(&receiver, &RUN_METRICS).await;
    check_run_metrics(&metrics, &run);
    let attempts = receiver.metric("workflow.node.attempts").unwrap();
    assert_eq!(
        attempts.total(&[
            ("workflow.component.id", "core.fail"),
            ("outcome", "failed"),
            ("error.type", "ScannerError"),
        ]),
        1.0,
        "{attempts:#?}"
    );
    assert_eq!(
        attempts.total(&[
            ("workflow.component.id", "core.sleep"),
            ("outcome", "completed")
        ]),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_exports_the_same_spans_and_metrics() {
    let (receiver, run) = run_exporting(Protocol::HttpProtobuf, &example("retry.json"), &[]).await;
    let trace = trace_of(&receiver, &run).await;
    check_dag(&trace, &run, &definition(&example("retry.json")));
    assert_eq!(trace.attempts("enrich").len(), 3);
    let metrics = run_metrics(&receiver, &RUN_METRICS).await;
    check_run_metrics(&metrics, &run);

    let seen = receiver.http_requests();
    for path in ["/v1/traces", "/v1/metrics"] {
        assert!(
            seen.iter().any(|r| r.path == path
                && r.status == 200
                && r.content_type.starts_with("application/x-protobuf")),
            "a protobuf POST to {path}: {seen:#?}"
        );
    }
    assert!(seen.iter().all(|r| r.status == 200), "{seen:#?}");
}

/// Writes `def` to a file of its own in the temp dir (the caller removes it).
fn temp_definition(name: &str, def: &Value) -> std::path::PathBuf {
    let file = std::env::temp_dir().join(format!(
        "shipsec-telemetry-{}-{name}.json",
        std::process::id()
    ));
    std::fs::write(&file, def.to_string()).expect("write the definition");
    file
}

/// `parents` root echo nodes `p0`, `p1`, ... each leading into every one of `joins` (echo
/// nodes too; `nodes` holds their join settings).
fn fan_in(parents: usize, joins: &[&str], nodes: Value) -> Value {
    let mut actions: Vec<Value> = joins
        .iter()
        .map(|j| serde_json::json!({"ref": j, "componentId": "core.echo"}))
        .collect();
    let mut edges = Vec::new();
    for i in 0..parents {
        let p = format!("p{i}");
        actions.push(serde_json::json!({"ref": p, "componentId": "core.echo"}));
        for j in joins {
            edges.push(serde_json::json!({"sourceRef": p, "targetRef": j}));
        }
    }
    serde_json::json!({
        "version": 2,
        "title": "Fan-in",
        "edges": edges,
        "actions": actions,
        "nodes": nodes
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wide_join_links_up_to_the_limit_and_counts_the_rest() {
    // 150 parents into an `all` join and into a `quorum` of 140: past the span link
    // limit, links are left off and counted in `workflow.join.links_dropped`.
    const PARENTS: usize = 150;
    let def = fan_in(
        PARENTS,
        &["all", "quorum"],
        serde_json::json!({"quorum": {"ref": "quorum", "joinStrategy": "quorum", "quorum": 140}}),
    );
    let file = temp_definition("wide-join", &def);
    let path = file.to_string_lossy().into_owned();
    let (receiver, run) = run_exporting(Protocol::HttpProtobuf, &path, &[]).await;
    let trace = trace_of(&receiver, &run).await;
    check_dag(&trace, &run, &definition(&path));
    let all = trace.node("all");
    assert_eq!(all.links.len(), LINK_LIMIT);
    assert_eq!(
        all.attr_i64("workflow.join.links_dropped"),
        Some((PARENTS - LINK_LIMIT) as i64)
    );
    let quorum = trace.node("quorum");
    assert_eq!(quorum.links.len(), LINK_LIMIT);
    assert_eq!(
        quorum.attr_i64("workflow.join.links_dropped"),
        Some(140 - LINK_LIMIT as i64)
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_link_limit_follows_otel_span_link_count_limit() {
    // Six parents into an `all` join under a limit of 4: four links, two counted.
    let file = temp_definition("link-limit", &fan_in(6, &["join"], serde_json::json!({})));
    let path = file.to_string_lossy().into_owned();
    let receiver = Receiver::start(Protocol::Grpc).await;
    let run = shipsec_run_with(
        &path,
        &[],
        Some((&receiver.endpoint(), Protocol::Grpc.env_value())),
        &[("OTEL_SPAN_LINK_COUNT_LIMIT", "4")],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let trace = trace_of(&receiver, &run).await;
    let join = trace.node("join");
    let parents: BTreeSet<&str> = (0..6)
        .map(|i| trace.node(&format!("p{i}")).span_id.as_str())
        .collect();
    assert_eq!(join.links.len(), 4, "{join:#?}");
    assert!(join.linked_span_ids().iter().all(|id| parents.contains(id)));
    assert_eq!(join.attr_i64("workflow.join.links_dropped"), Some(2));
    let _ = std::fs::remove_file(file);
}

/// With no `OTEL_SERVICE_NAME` (nor `service.name` in `OTEL_RESOURCE_ATTRIBUTES`), spans
/// and metrics say `shipsec-orchestrator`, not the SDK's `unknown_service`.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_is_named_shipsec_orchestrator_unless_the_environment_names_it() {
    let receiver = Receiver::start(Protocol::Grpc).await;
    let run = shipsec_run_with(
        &example("retry.json"),
        &[],
        Some((&receiver.endpoint(), Protocol::Grpc.env_value())),
        &[("OTEL_SERVICE_NAME", "")],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let trace = trace_of(&receiver, &run).await;
    for span in &trace.spans {
        assert_eq!(span.service_name, "shipsec-orchestrator", "{span:#?}");
    }
    let metrics = run_metrics(&receiver, &RUN_METRICS).await;
    for m in metrics.iter().filter(|m| m.name.starts_with("workflow.")) {
        assert_eq!(m.service_name, "shipsec-orchestrator", "{}", m.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_nodes_are_counted_while_they_wait() {
    // Three parallel sleeps under `maxParallelism: 1`: two of them wait for the slot.
    let def = serde_json::json!({
        "version": 2,
        "title": "Three scans, one slot",
        "edges": [
            {"sourceRef": "start", "targetRef": "a"},
            {"sourceRef": "start", "targetRef": "b"},
            {"sourceRef": "start", "targetRef": "c"}
        ],
        "actions": [
            {"ref": "start", "componentId": "core.workflow.entrypoint"},
            {"ref": "a", "componentId": "core.sleep", "params": {"ms": 50}},
            {"ref": "b", "componentId": "core.sleep", "params": {"ms": 50}},
            {"ref": "c", "componentId": "core.sleep", "params": {"ms": 50}}
        ],
        "config": {"maxParallelism": 1}
    });
    let file = temp_definition("queue", &def);
    let path = file.to_string_lossy().into_owned();
    let (receiver, run) = run_exporting(Protocol::Grpc, &path, &[]).await;
    let mut wanted = RUN_METRICS.to_vec();
    wanted.extend(["workflow.nodes.queued", "workflow.node.queue_wait"]);
    let metrics = run_metrics(&receiver, &wanted).await;
    check_run_metrics(&metrics, &run);
    // Every attempt under a run cap waits in the queue, if only for an instant: the
    // entrypoint's and the three sleeps'. Each left it for RUNNING once.
    let waits = metrics
        .iter()
        .find(|m| m.name == "workflow.node.queue_wait")
        .unwrap();
    assert_eq!(waits.count(&[]), 4, "{waits:#?}");
    assert_eq!(
        waits.count(&[("workflow.component.id", "core.sleep")]),
        3,
        "{waits:#?}"
    );
    // One sleep waited for another (50 ms), one for two (100 ms): about 150 ms in all,
    // less the moments between the first sleep's start and the others' queueing. A
    // generous bound: two sleeps' worth.
    let waited = waits.total(&[]);
    assert!(waited >= 0.1, "queue waits sum to {waited} s: {waits:#?}");
    let trace = trace_of(&receiver, &run).await;
    check_dag(&trace, &run, &definition(&path));
    let queued: usize = ["a", "b", "c"]
        .iter()
        .filter(|n| trace.node(n).has_event("queued"))
        .count();
    assert_eq!(queued, 3, "each sleep's span records its wait");
    let _ = std::fs::remove_file(file);
}

/// A local port with nothing listening on it.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_slows_nothing() {
    let args = ["--input", "target=example.com"];
    let baseline = shipsec_run(&example("recon.json"), &args, None).await;
    assert_eq!(baseline.code, Some(0), "{}", baseline.stderr);
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let endpoint = format!("http://127.0.0.1:{}", dead_port());
        let run = shipsec_run(
            &example("recon.json"),
            &args,
            Some((&endpoint, protocol.env_value())),
        )
        .await;
        assert_eq!(run.code, Some(0), "{protocol:?}: {}", run.stderr);
        assert_eq!(run.result["status"], baseline.result["status"]);
        assert_eq!(
            run.node_statuses(),
            baseline.node_statuses(),
            "{protocol:?}"
        );
        assert!(
            run.elapsed < baseline.elapsed + Duration::from_secs(3),
            "{protocol:?}: {:?} with a dead collector against {:?} without one",
            run.elapsed,
            baseline.elapsed
        );
    }
}

// ---------------------------------------------------------------------------------------
// otel-collector.yaml

fn collector_config() -> Value {
    let path = format!("{}/otel-collector.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_saphyr::from_str::<Value>(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// The ids defined under a top-level section (`receivers`, `exporters`...).
fn defined(config: &Value, section: &str) -> BTreeSet<String> {
    config[section]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The ids a pipeline lists under `key`.
fn listed(pipeline: &Value, key: &str) -> Vec<String> {
    match &pipeline[key] {
        Value::Null => Vec::new(),
        Value::Array(ids) => ids
            .iter()
            .map(|id| {
                id.as_str()
                    .unwrap_or_else(|| panic!("{key}: {id} is not an id"))
                    .to_owned()
            })
            .collect(),
        other => panic!("{key} is not a list: {other}"),
    }
}

#[test]
fn collector_config_pipelines_name_only_defined_components() {
    let config = collector_config();
    let receivers = defined(&config, "receivers");
    let processors = defined(&config, "processors");
    let exporters = defined(&config, "exporters");
    let connectors = defined(&config, "connectors");
    let extensions = defined(&config, "extensions");
    let pipelines = config["service"]["pipelines"]
        .as_object()
        .expect("service.pipelines");
    assert!(!pipelines.is_empty());
    let mut types = BTreeSet::new();
    for (name, pipeline) in pipelines {
        types.insert(name.split('/').next().unwrap().to_owned());
        let rs = listed(pipeline, "receivers");
        let es = listed(pipeline, "exporters");
        assert!(!rs.is_empty(), "pipeline {name} has receivers");
        assert!(!es.is_empty(), "pipeline {name} has exporters");
        for r in &rs {
            assert!(
                receivers.contains(r) || connectors.contains(r),
                "pipeline {name}: receiver {r} is not defined (defined: {receivers:?})"
            );
        }
        for p in listed(pipeline, "processors") {
            assert!(
                processors.contains(&p),
                "pipeline {name}: processor {p} is not defined (defined: {processors:?})"
            );
        }
        for e in &es {
            assert!(
                exporters.contains(e) || connectors.contains(e),
                "pipeline {name}: exporter {e} is not defined (defined: {exporters:?})"
            );
        }
    }
    for t in ["traces", "metrics"] {
        assert!(types.contains(t), "a {t} pipeline: {types:?}");
    }
    for e in listed(&config["service"], "extensions") {
        assert!(extensions.contains(&e), "extension {e} is not defined");
    }
}

#[test]
fn collector_config_has_the_documented_receivers_processors_and_exporters() {
    let config = collector_config();
    let protocols = &config["receivers"]["otlp"]["protocols"];
    for (protocol, port) in [("grpc", ":4317"), ("http", ":4318")] {
        let endpoint = protocols[protocol]["endpoint"]
            .as_str()
            .unwrap_or_else(|| panic!("receivers.otlp.protocols.{protocol}.endpoint: {protocols}"));
        assert!(endpoint.ends_with(port), "{protocol} endpoint {endpoint}");
    }
    let processors = defined(&config, "processors");
    for p in ["batch", "memory_limiter"] {
        assert!(processors.contains(p), "processor {p}: {processors:?}");
    }
    let exporters = defined(&config, "exporters");
    for e in ["otlp/jaeger", "debug", "prometheus"] {
        assert!(exporters.contains(e), "exporter {e}: {exporters:?}");
    }
    let pipelines = &config["service"]["pipelines"];
    for (pipeline, exporter) in [("traces", "otlp/jaeger"), ("metrics", "prometheus")] {
        assert!(
            listed(&pipelines[pipeline], "receivers").contains(&"otlp".to_owned()),
            "the {pipeline} pipeline receives OTLP"
        );
        assert!(
            listed(&pipelines[pipeline], "exporters").contains(&exporter.to_owned()),
            "the {pipeline} pipeline exports to {exporter}"
        );
        let ps = listed(&pipelines[pipeline], "processors");
        for p in ["batch", "memory_limiter"] {
            assert!(
                ps.contains(&p.to_owned()),
                "the {pipeline} pipeline uses {p}"
            );
        }
    }
}
