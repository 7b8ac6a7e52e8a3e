//! An in-test OTLP receiver that decodes the real wire format.
//!
//! Two transports, each on `127.0.0.1:0`:
//! - gRPC ([`Receiver::start_grpc`]): a tonic server implementing the collector's
//!   `TraceService`, `MetricsService` and `LogsService`;
//! - HTTP/protobuf ([`Receiver::start_http`]): `POST /v1/traces`, `/v1/metrics`,
//!   `/v1/logs` with `application/x-protobuf` bodies decoded with prost. It runs on
//!   tonic's own server (hyper 1, HTTP/1.1 accepted) as a tower service named `v1`, so
//!   tonic's router sends it every `/v1/...` path; no extra dependency.
//!
//! A counting receiver ([`Receiver::start_counting`], for benches) decodes only the
//! envelope of each trace request and counts its spans, keeping nothing.
//!
//! Every export request is stored as received; [`Receiver::spans`] and
//! [`Receiver::metrics`] flatten them for assertions, and the `wait_for_*` methods wake
//! on each arrival (a `watch` channel, no polling). Dropping the receiver aborts its
//! server task, which closes the listening socket.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codegen::{Body as _, BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::transport::Server;

/// gRPC messages up to this size are accepted (tonic's default is 4 MiB).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Which OTLP transport a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

impl Protocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` for this transport.
    pub fn env_value(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// One HTTP request the HTTP/protobuf receiver saw (whatever its outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestSeen {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body_len: usize,
    /// The HTTP status the receiver answered with.
    pub status: u16,
}

/// Everything received, shared by the server tasks and the [`Receiver`].
#[derive(Debug)]
struct Store {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    logs: Mutex<Vec<ExportLogsServiceRequest>>,
    http: Mutex<Vec<HttpRequestSeen>>,
    /// Bumped after every stored request; waiters subscribe to it.
    arrivals: watch::Sender<u64>,
    /// Whether decoded trace requests are kept; a counting receiver only counts them.
    keep_traces: bool,
    /// Spans decoded so far.
    spans_seen: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide what was received from the others.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    fn new(keep_traces: bool) -> Self {
        Store {
            traces: Mutex::default(),
            metrics: Mutex::default(),
            logs: Mutex::default(),
            http: Mutex::default(),
            arrivals: watch::Sender::new(0),
            keep_traces,
            spans_seen: AtomicU64::new(0),
        }
    }

    fn arrived(&self) {
        self.arrivals.send_modify(|n| *n += 1);
    }

    fn count_spans(&self, spans: usize) {
        self.spans_seen.fetch_add(spans as u64, Ordering::Relaxed);
        self.arrived();
    }

    fn push_traces(&self, req: ExportTraceServiceRequest) {
        let spans: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans_seen.fetch_add(spans as u64, Ordering::Relaxed);
        if self.keep_traces {
            lock(&self.traces).push(req);
        }
        self.arrived();
    }

    fn push_metrics(&self, req: ExportMetricsServiceRequest) {
        lock(&self.metrics).push(req);
        self.arrived();
    }

    fn push_logs(&self, req: ExportLogsServiceRequest) {
        lock(&self.logs).push(req);
        self.arrived();
    }
}

/// A running OTLP receiver. Its servers stop when it is dropped.
#[derive(Debug)]
pub struct Receiver {
    protocol: Protocol,
    addr: SocketAddr,
    store: Arc<Store>,
    server: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The accepted connections of `listener`, as the stream tonic's `serve_with_incoming`
/// takes.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = Result<TcpStream, std::io::Error>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

impl Receiver {
    /// Starts an OTLP/gRPC receiver on `127.0.0.1:0`.
    pub async fn start_grpc() -> Receiver {
        Self::start(Protocol::Grpc).await
    }

    /// Starts an OTLP/HTTP (protobuf) receiver on `127.0.0.1:0`.
    pub async fn start_http() -> Receiver {
        Self::start(Protocol::HttpProtobuf).await
    }

    /// Starts a receiver for `protocol` on `127.0.0.1:0`.
    pub async fn start(protocol: Protocol) -> Receiver {
        Self::start_with(protocol, true).await
    }

    /// Starts a receiver that decodes every trace request and counts its spans
    /// ([`Receiver::spans_seen`]) without keeping them: for benches, whose runs would
    /// otherwise pile up in its memory.
    pub async fn start_counting(protocol: Protocol) -> Receiver {
        Self::start_with(protocol, false).await
    }

    /// Spans decoded so far (kept or not).
    pub fn spans_seen(&self) -> u64 {
        self.store.spans_seen.load(Ordering::Relaxed)
    }

    async fn start_with(protocol: Protocol, keep_traces: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let store = Arc::new(Store::new(keep_traces));
        let server = match protocol {
            Protocol::Grpc => {
                let grpc = Grpc {
                    store: store.clone(),
                };
                // A counting receiver decodes only the envelope of trace requests.
                let traces = keep_traces.then(|| {
                    TraceServiceServer::new(grpc.clone()).max_decoding_message_size(MAX_MESSAGE)
                });
                let counting = (!keep_traces).then(|| CountingTraces {
                    store: store.clone(),
                });
                let router = Server::builder()
                    .add_optional_service(traces)
                    .add_optional_service(counting)
                    .add_service(
                        MetricsServiceServer::new(grpc.clone())
                            .max_decoding_message_size(MAX_MESSAGE),
                    )
                    .add_service(
                        LogsServiceServer::new(grpc).max_decoding_message_size(MAX_MESSAGE),
                    );
                tokio::spawn(async move {
                    if let Err(e) = router.serve_with_incoming(incoming(listener)).await {
                        eprintln!("OTLP gRPC receiver stopped: {e}");
                    }
                })
            }
            Protocol::HttpProtobuf => {
                let router = Server::builder().accept_http1(true).add_service(OtlpHttp {
                    store: store.clone(),
                });
                tokio::spawn(async move {
                    if let Err(e) = router.serve_with_incoming(incoming(listener)).await {
                        eprintln!("OTLP HTTP receiver stopped: {e}");
                    }
                })
            }
        };
        Receiver {
            protocol,
            addr,
            store,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`: the value of `OTEL_EXPORTER_OTLP_ENDPOINT` (for
    /// HTTP/protobuf, exporters append `/v1/traces` and `/v1/metrics`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The transport this receiver speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Every trace export request received so far, as decoded.
    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        lock(&self.store.traces).clone()
    }

    /// Every metrics export request received so far, as decoded.
    pub fn metric_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        lock(&self.store.metrics).clone()
    }

    /// Every logs export request received so far, as decoded.
    pub fn log_requests(&self) -> Vec<ExportLogsServiceRequest> {
        lock(&self.store.logs).clone()
    }

    /// Every HTTP request the HTTP/protobuf receiver answered (empty for gRPC).
    pub fn http_requests(&self) -> Vec<HttpRequestSeen> {
        lock(&self.store.http).clone()
    }

    /// Every span received so far, flattened, in arrival order.
    pub fn spans(&self) -> Vec<FlatSpan> {
        flatten_spans(&lock(&self.store.traces))
    }

    /// Every metric received so far, merged across export requests (see [`FlatMetric`]).
    pub fn metrics(&self) -> Vec<FlatMetric> {
        flatten_metrics(&lock(&self.store.metrics))
    }

    /// The metric named `name`, if it arrived.
    pub fn metric(&self, name: &str) -> Option<FlatMetric> {
        self.metrics().into_iter().find(|m| m.name == name)
    }

    /// Waits until `pred` holds for the spans received so far, or `timeout` passes.
    /// `Ok` with the spans that satisfied it, `Err` with the spans at the deadline.
    pub async fn try_wait_for_spans(
        &self,
        pred: impl Fn(&[FlatSpan]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<FlatSpan>, Vec<FlatSpan>> {
        self.wait_until(|| self.spans(), |s| pred(s), timeout).await
    }

    /// As [`Receiver::try_wait_for_spans`], panicking with a summary of what arrived
    /// when `pred` still does not hold at the deadline.
    pub async fn wait_for_spans(
        &self,
        pred: impl Fn(&[FlatSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<FlatSpan> {
        match self.try_wait_for_spans(pred, timeout).await {
            Ok(spans) => spans,
            Err(spans) => panic!(
                "the expected spans did not arrive at {} ({:?}) within {timeout:?}; received {}",
                self.endpoint(),
                self.protocol,
                summarize_spans(&spans)
            ),
        }
    }

    /// Waits until `pred` holds for the metrics received so far, or `timeout` passes.
    pub async fn try_wait_for_metrics(
        &self,
        pred: impl Fn(&[FlatMetric]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<FlatMetric>, Vec<FlatMetric>> {
        self.wait_until(|| self.metrics(), |m| pred(m), timeout)
            .await
    }

    /// As [`Receiver::try_wait_for_metrics`], panicking at the deadline.
    pub async fn wait_for_metrics(
        &self,
        pred: impl Fn(&[FlatMetric]) -> bool,
        timeout: Duration,
    ) -> Vec<FlatMetric> {
        match self.try_wait_for_metrics(pred, timeout).await {
            Ok(metrics) => metrics,
            Err(metrics) => {
                let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
                panic!(
                    "the expected metrics did not arrive at {} ({:?}) within {timeout:?}; received {names:?}",
                    self.endpoint(),
                    self.protocol
                )
            }
        }
    }

    async fn wait_until<T>(
        &self,
        snapshot: impl Fn() -> T,
        pred: impl Fn(&T) -> bool,
        timeout: Duration,
    ) -> Result<T, T> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribing marks the current generation as seen, and the snapshot is taken
        // after it: an arrival between the two wakes the next `changed()`.
        let mut arrivals = self.store.arrivals.subscribe();
        loop {
            let now = snapshot();
            if pred(&now) {
                return Ok(now);
            }
            match tokio::time::timeout_at(deadline, arrivals.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in the store we hold: cannot close; and a deadline.
                Ok(Err(_)) | Err(_) => {
                    let last = snapshot();
                    return if pred(&last) { Ok(last) } else { Err(last) };
                }
            }
        }
    }
}

/// `name ×count` of each span name, then the trace ids: for failure messages.
pub fn summarize_spans(spans: &[FlatSpan]) -> String {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for s in spans {
        *names.entry(s.name.as_str()).or_default() += 1;
    }
    let traces: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.trace_id.as_str()).collect();
    let mut out = format!("{} spans in {} traces:", spans.len(), traces.len());
    for (name, n) in names {
        let _ = write!(out, " {name}×{n}");
    }
    out
}

// ---------------------------------------------------------------------------------------
// gRPC

#[derive(Debug, Clone)]
struct Grpc {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.store.push_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.store.push_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.store.push_logs(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// The trace service of a counting receiver: decodes each request's envelope
/// ([`TraceEnvelope`]) and counts its spans.
#[derive(Debug, Clone)]
struct CountingTraces {
    store: Arc<Store>,
}

impl NamedService for CountingTraces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::server::UnaryService<TraceEnvelope> for CountingTraces {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<ExportTraceServiceResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<TraceEnvelope>) -> Self::Future {
        self.store.count_spans(request.get_ref().spans());
        Box::pin(async { Ok(tonic::Response::new(ExportTraceServiceResponse::default())) })
    }
}

impl Service<http::Request<tonic::body::Body>> for CountingTraces {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<HttpResponse, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            if req.uri().path() != "/opentelemetry.proto.collector.trace.v1.TraceService/Export" {
                return Ok(tonic::Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            let codec =
                tonic_prost::ProstCodec::<ExportTraceServiceResponse, TraceEnvelope>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_MESSAGE), None);
            Ok(grpc.unary(service, req).await)
        })
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/protobuf

/// The OTLP/HTTP endpoints as one tower service. Tonic's router mounts a named service
/// at `/{NAME}/{*rest}`, so the name `v1` receives `/v1/traces`, `/v1/metrics` and
/// `/v1/logs`.
#[derive(Debug, Clone)]
struct OtlpHttp {
    store: Arc<Store>,
}

impl NamedService for OtlpHttp {
    const NAME: &'static str = "v1";
}

type HttpResponse = http::Response<tonic::body::Body>;

impl Service<http::Request<tonic::body::Body>> for OtlpHttp {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<HttpResponse, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let store = self.store.clone();
        Box::pin(async move { Ok(handle_http(&store, req).await) })
    }
}

fn reply(status: u16, message: &str) -> HttpResponse {
    let body = if message.is_empty() {
        tonic::body::Body::empty()
    } else {
        tonic::body::Body::new(message.to_owned())
    };
    let content_type = if status == 200 {
        "application/x-protobuf"
    } else {
        "text/plain; charset=utf-8"
    };
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("a valid response")
}

async fn handle_http(store: &Store, req: http::Request<tonic::body::Body>) -> HttpResponse {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let (content_type, encoding) = {
        let header = |name: http::header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        (
            header(http::header::CONTENT_TYPE),
            header(http::header::CONTENT_ENCODING),
        )
    };

    let mut body = req.into_body();
    let mut bytes = Vec::new();
    let mut read_error = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(status) => {
                read_error = Some(status.to_string());
                break;
            }
        }
    }

    let (status, message) = match read_error {
        Some(e) => (400, format!("reading the body: {e}")),
        None => match decode_http(store, &method, &path, &content_type, &encoding, &bytes) {
            Ok(()) => (200, String::new()),
            Err(refused) => refused,
        },
    };
    lock(&store.http).push(HttpRequestSeen {
        method,
        path,
        content_type,
        body_len: bytes.len(),
        status,
    });
    reply(status, &message)
}

fn decode_http(
    store: &Store,
    method: &str,
    path: &str,
    content_type: &str,
    encoding: &str,
    bytes: &[u8],
) -> Result<(), (u16, String)> {
    if method != "POST" {
        return Err((405, format!("{method} {path}: only POST")));
    }
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("application/x-protobuf")
        && !mime.eq_ignore_ascii_case("application/protobuf")
    {
        return Err((
            415,
            format!("content type `{content_type}`: this receiver decodes protobuf only"),
        ));
    }
    if !encoding.is_empty() && !encoding.eq_ignore_ascii_case("identity") {
        return Err((
            415,
            format!("content encoding `{encoding}` is not supported"),
        ));
    }
    let bad = |e: prost::DecodeError| (400, format!("{path}: {e}"));
    match path {
        "/v1/traces" if !store.keep_traces => {
            store.count_spans(TraceEnvelope::decode(bytes).map_err(bad)?.spans())
        }
        "/v1/traces" => store.push_traces(ExportTraceServiceRequest::decode(bytes).map_err(bad)?),
        "/v1/metrics" => {
            store.push_metrics(ExportMetricsServiceRequest::decode(bytes).map_err(bad)?)
        }
        "/v1/logs" => store.push_logs(ExportLogsServiceRequest::decode(bytes).map_err(bad)?),
        _ => return Err((404, format!("no OTLP endpoint at {path}"))),
    }
    Ok(())
}

/// The envelope of an `ExportTraceServiceRequest` with every span left encoded: a counting
/// receiver checks the request's framing and counts its spans without building them
/// (decoding every attribute and event is the collector's work, not the exporter's).
#[derive(Clone, PartialEq, prost::Message)]
struct TraceEnvelope {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpansEnvelope>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpansEnvelope {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpansEnvelope>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpansEnvelope {
    #[prost(bytes = "vec", repeated, tag = "2")]
    spans: Vec<Vec<u8>>,
}

impl TraceEnvelope {
    fn spans(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }
}

// ---------------------------------------------------------------------------------------
// Flattening

/// Lower-case hex of an id (empty for an absent one).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// An OTLP `AnyValue` as JSON: strings, booleans, integers, doubles, arrays, key-value
/// lists as objects, bytes as a hex string.
pub fn any_value_to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_value_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map_or(Value::Null, any_value_to_json);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(*i),
    }
}

/// Attributes as a sorted map of JSON values.
pub fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| {
            let v = kv.value.as_ref().map_or(Value::Null, any_value_to_json);
            (kv.key.clone(), v)
        })
        .collect()
}

/// A scalar attribute as text (`"x"` → `x`, `3` → `3`, `true` → `true`).
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn resource_attributes(resource: Option<&Resource>) -> BTreeMap<String, Value> {
    resource
        .map(|r| attributes(&r.attributes))
        .unwrap_or_default()
}

/// A span status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error,
}

/// A span link.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatLink {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: BTreeMap<String, Value>,
}

/// A span event.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatEvent {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: BTreeMap<String, Value>,
}

/// One span with its resource and scope, ids in lower-case hex.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// The OTLP `SpanKind` number (1 internal, 2 server, 3 client...).
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, Value>,
    pub status: SpanStatus,
    pub status_message: String,
    pub links: Vec<FlatLink>,
    /// Event names, in order.
    pub events: Vec<String>,
    pub event_details: Vec<FlatEvent>,
    /// The resource's `service.name` (empty when absent).
    pub service_name: String,
    pub resource: BTreeMap<String, Value>,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl FlatSpan {
    /// Whether this is a node span: named after its node ref (`otel.name`), it carries
    /// `workflow.node.ref`.
    pub fn is_node(&self) -> bool {
        self.name != "workflow.node.attempt" && self.attributes.contains_key("workflow.node.ref")
    }

    /// The attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// The attribute `key` as text, whatever its scalar type.
    pub fn attr_text(&self, key: &str) -> Option<String> {
        self.attr(key).map(value_text)
    }

    /// The attribute `key` as an integer (an integer, or a string holding one).
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Whether the attribute `key` is the text `value`.
    pub fn attr_is(&self, key: &str, value: &str) -> bool {
        self.attr_text(key).as_deref() == Some(value)
    }

    /// Whether this span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    /// Whether an event named `name` was recorded on this span.
    pub fn has_event(&self, name: &str) -> bool {
        self.events.iter().any(|e| e == name)
    }

    /// The span ids this span links to.
    pub fn linked_span_ids(&self) -> Vec<&str> {
        self.links.iter().map(|l| l.span_id.as_str()).collect()
    }
}

/// Flattens trace export requests into spans, in arrival order.
pub fn flatten_spans(requests: &[ExportTraceServiceRequest]) -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for req in requests {
        for rs in &req.resource_spans {
            let resource = resource_attributes(rs.resource.as_ref());
            let service_name = resource
                .get("service.name")
                .map(value_text)
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                let scope = ss
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for span in &ss.spans {
                    let (status, status_message) = match &span.status {
                        None => (SpanStatus::Unset, String::new()),
                        Some(s) => (
                            match s.code {
                                1 => SpanStatus::Ok,
                                2 => SpanStatus::Error,
                                _ => SpanStatus::Unset,
                            },
                            s.message.clone(),
                        ),
                    };
                    let event_details: Vec<FlatEvent> = span
                        .events
                        .iter()
                        .map(|e| FlatEvent {
                            name: e.name.clone(),
                            time_unix_nano: e.time_unix_nano,
                            attributes: attributes(&e.attributes),
                        })
                        .collect();
                    out.push(FlatSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        kind: span.kind,
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                        attributes: attributes(&span.attributes),
                        status,
                        status_message,
                        links: span
                            .links
                            .iter()
                            .map(|l| FlatLink {
                                trace_id: hex(&l.trace_id),
                                span_id: hex(&l.span_id),
                                attributes: attributes(&l.attributes),
                            })
                            .collect(),
                        events: event_details.iter().map(|e| e.name.clone()).collect(),
                        event_details,
                        service_name: service_name.clone(),
                        resource: resource.clone(),
                        scope: scope.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// A counter (monotonic) or an up-down counter (not monotonic).
    Sum {
        monotonic: bool,
    },
    Histogram,
    ExponentialHistogram,
    Summary,
}

/// One time series of a metric: its attributes and its value over everything received.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatPoint {
    pub attributes: BTreeMap<String, Value>,
    /// Sums: the value; gauges: the last value; histograms and summaries: the sum of
    /// the recorded values.
    pub value: f64,
    /// Histograms and summaries: how many values were recorded (0 otherwise).
    pub count: u64,
}

impl FlatPoint {
    /// Whether every `(key, value)` of `filter` is an attribute of this point (compared
    /// as text).
    pub fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter
            .iter()
            .all(|(k, v)| self.attributes.get(*k).is_some_and(|a| value_text(a) == *v))
    }
}

/// A metric merged over every export request: one point per attribute set. Delta
/// points are added up; for cumulative points and gauges the latest export wins (an
/// exporter re-sends cumulative totals at every interval, so adding them would count
/// twice).
#[derive(Debug, Clone, PartialEq)]
pub struct FlatMetric {
    pub name: String,
    pub description: String,
    pub unit: String,
    pub kind: MetricKind,
    /// `None` for gauges and summaries.
    pub temporality: Option<AggregationTemporality>,
    pub service_name: String,
    pub points: Vec<FlatPoint>,
}

impl FlatMetric {
    /// The value summed over the points matching `filter` (all points for `&[]`).
    pub fn total(&self, filter: &[(&str, &str)]) -> f64 {
        self.points
            .iter()
            .filter(|p| p.matches(filter))
            .map(|p| p.value)
            .sum()
    }

    /// The count summed over the points matching `filter` (histograms, summaries).
    pub fn count(&self, filter: &[(&str, &str)]) -> u64 {
        self.points
            .iter()
            .filter(|p| p.matches(filter))
            .map(|p| p.count)
            .sum()
    }

    /// The points matching `filter`.
    pub fn points_matching(&self, filter: &[(&str, &str)]) -> Vec<&FlatPoint> {
        self.points.iter().filter(|p| p.matches(filter)).collect()
    }
}

/// One raw point, before merging.
struct RawPoint {
    attributes: BTreeMap<String, Value>,
    time: u64,
    value: f64,
    count: u64,
}

/// Merges metrics export requests (see [`FlatMetric`]), in order of first arrival.
pub fn flatten_metrics(requests: &[ExportMetricsServiceRequest]) -> Vec<FlatMetric> {
    /// Attribute-set key (as JSON) -> (merged point, latest time).
    type Series = BTreeMap<String, (FlatPoint, u64)>;
    // One entry per (service, metric name).
    let mut metrics: Vec<(FlatMetric, Series)> = Vec::new();
    for req in requests {
        for rm in &req.resource_metrics {
            let resource = resource_attributes(rm.resource.as_ref());
            let service_name = resource
                .get("service.name")
                .map(value_text)
                .unwrap_or_default();
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let Some(data) = &m.data else { continue };
                    let (kind, temporality, raw) = raw_points(data);
                    let slot = match metrics
                        .iter()
                        .position(|(f, _)| f.name == m.name && f.service_name == service_name)
                    {
                        Some(i) => i,
                        None => {
                            metrics.push((
                                FlatMetric {
                                    name: m.name.clone(),
                                    description: m.description.clone(),
                                    unit: m.unit.clone(),
                                    kind,
                                    temporality,
                                    service_name: service_name.clone(),
                                    points: Vec::new(),
                                },
                                BTreeMap::new(),
                            ));
                            metrics.len() - 1
                        }
                    };
                    let series = &mut metrics[slot].1;
                    let delta = temporality == Some(AggregationTemporality::Delta);
                    for p in raw {
                        let key = serde_json::to_string(&p.attributes).unwrap_or_default();
                        match series.get_mut(&key) {
                            Some((point, time)) if delta => {
                                point.value += p.value;
                                point.count += p.count;
                                *time = (*time).max(p.time);
                            }
                            Some((point, time)) => {
                                if p.time >= *time {
                                    point.value = p.value;
                                    point.count = p.count;
                                    *time = p.time;
                                }
                            }
                            None => {
                                series.insert(
                                    key,
                                    (
                                        FlatPoint {
                                            attributes: p.attributes,
                                            value: p.value,
                                            count: p.count,
                                        },
                                        p.time,
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    metrics
        .into_iter()
        .map(|(mut metric, series)| {
            metric.points = series.into_values().map(|(p, _)| p).collect();
            metric
        })
        .collect()
}

fn number(value: Option<&number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        #[allow(clippy::cast_precision_loss)]
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

fn raw_points(data: &Data) -> (MetricKind, Option<AggregationTemporality>, Vec<RawPoint>) {
    let temporality = |t: i32| AggregationTemporality::try_from(t).ok();
    match data {
        Data::Gauge(g) => (
            MetricKind::Gauge,
            None,
            g.data_points
                .iter()
                .map(|p| RawPoint {
                    attributes: attributes(&p.attributes),
                    time: p.time_unix_nano,
                    value: number(p.value.as_ref()),
                    count: 0,
                })
                .collect(),
        ),
        Data::Sum(s) => (
            MetricKind::Sum {
                monotonic: s.is_monotonic,
            },
            temporality(s.aggregation_temporality),
            s.data_points
                .iter()
                .map(|p| RawPoint {
                    attributes: attributes(&p.attributes),
                    time: p.time_unix_nano,
                    value: number(p.value.as_ref()),
                    count: 0,
                })
                .collect(),
        ),
        Data::Histogram(h) => (
            MetricKind::Histogram,
            temporality(h.aggregation_temporality),
            h.data_points
                .iter()
                .map(|p| RawPoint {
                    attributes: attributes(&p.attributes),
                    time: p.time_unix_nano,
                    value: p.sum.unwrap_or_default(),
                    count: p.count,
                })
                .collect(),
        ),
        Data::ExponentialHistogram(h) => (
            MetricKind::ExponentialHistogram,
            temporality(h.aggregation_temporality),
            h.data_points
                .iter()
                .map(|p| RawPoint {
                    attributes: attributes(&p.attributes),
                    time: p.time_unix_nano,
                    value: p.sum.unwrap_or_default(),
                    count: p.count,
                })
                .collect(),
        ),
        Data::Summary(s) => (
            MetricKind::Summary,
            None,
            s.data_points
                .iter()
                .map(|p| RawPoint {
                    attributes: attributes(&p.attributes),
                    time: p.time_unix_nano,
                    value: p.sum,
                    count: p.count,
                })
                .collect(),
        ),
    }
}
