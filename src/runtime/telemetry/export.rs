//! Installing telemetry: the OTLP span and metric exporters from the standard `OTEL_*`
//! variables, the `tracing` layer, the batch processor, and the count of dropped spans.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{
    Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::TARGET;
use super::metrics::METRICS_ON;

/// Where spans and metrics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Collector base URL (`http://host:4317` for gRPC, `http://host:4318` for HTTP).
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
}

impl ExportConfig {
    /// From `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_EXPORTER_OTLP_PROTOCOL` (default
    /// `http/protobuf`, as the OpenTelemetry specification says). `None` without an
    /// endpoint.
    pub fn from_env() -> Option<ExportConfig> {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
        if endpoint.trim().is_empty() {
            return None;
        }
        let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
            .unwrap_or_else(|_| "http/protobuf".to_owned());
        Some(ExportConfig { endpoint, protocol })
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The protocol is neither `grpc` nor `http/protobuf`.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL `{0}` is not supported (use grpc or http/protobuf)")]
    Protocol(String),
    /// The exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// Spans could not be flushed.
    #[error("flushing spans: {0}")]
    Flush(String),
    /// A global subscriber is already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installed telemetry. Call [`Telemetry::shutdown`] before the process exits to flush.
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    dropped: Arc<AtomicU64>,
}

/// Spans are exported within this time or dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans buffered before export; a 10,000-node run makes about 20,000.
pub const SPAN_QUEUE: usize = 262_144;

impl Telemetry {
    /// Installs the global subscriber: component and engine logs on stderr filtered by
    /// `RUST_LOG` (default `warn`), and, when `export` is given, the engine's spans and
    /// metrics exported with OTLP. Must run inside a tokio runtime when exporting with gRPC.
    ///
    /// # Errors
    /// [`TelemetryError`].
    pub fn install(export: Option<ExportConfig>) -> Result<Telemetry, TelemetryError> {
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(env_filter());
        let dropped = Arc::new(AtomicU64::new(0));
        let Some(export) = export else {
            tracing_subscriber::registry()
                .with(logs)
                .try_init()
                .map_err(|_| TelemetryError::AlreadyInstalled)?;
            return Ok(Telemetry {
                tracer: None,
                meter: None,
                dropped,
            });
        };
        let resource = resource();
        let tracer = tracer_provider(&export, resource.clone(), dropped.clone())?;
        let meter = meter_provider(&export, resource)?;
        global::set_meter_provider(meter.clone());
        METRICS_ON.store(true, Ordering::Relaxed);
        global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let spans = spans_layer(tracer.tracer("shipsec-orchestrator"));
        tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        Ok(Telemetry {
            tracer: Some(tracer),
            meter: Some(meter),
            dropped,
        })
    }

    /// Spans whose export failed (collector down or too slow).
    pub fn dropped_spans(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Exports every span ended so far and waits until the exporter is done with them. A
    /// run's spans are all ended when its result is out. Blocks the calling thread: call
    /// it outside async code, or through `spawn_blocking`.
    ///
    /// # Errors
    /// [`TelemetryError::Flush`] when the export failed (its spans are counted as dropped)
    /// or did not finish in time.
    pub fn flush_spans(&self) -> Result<(), TelemetryError> {
        match &self.tracer {
            Some(tracer) => tracer
                .force_flush()
                .map_err(|e| TelemetryError::Flush(e.to_string())),
            None => Ok(()),
        }
    }

    /// Flushes and stops the exporters. Returns the number of spans dropped.
    pub fn shutdown(self) -> u64 {
        if let Some(tracer) = &self.tracer {
            // Errors mean the collector is gone; the drop count says what was lost.
            let _ = tracer.force_flush();
            let _ = tracer.shutdown();
        }
        if let Some(meter) = &self.meter {
            let _ = meter.force_flush();
            let _ = meter.shutdown();
        }
        self.dropped_spans()
    }
}

/// Installs telemetry exporting to `endpoint` with `protocol` (`grpc` or
/// `http/protobuf`), whatever the environment says: for tests and embedders.
///
/// # Errors
/// [`TelemetryError`].
pub fn init_for_tests(endpoint: &str, protocol: &str) -> Result<Telemetry, TelemetryError> {
    Telemetry::install(Some(ExportConfig {
        endpoint: endpoint.to_owned(),
        protocol: protocol.to_owned(),
    }))
}

/// The layer that records the engine's spans (and component logs inside them) as
/// OpenTelemetry spans of `tracer`: `workflow.*` attributes only (no source location,
/// thread, `tracing` target, nor busy/idle timings, which cost two clock reads per poll).
/// [`Telemetry::install`] uses it; embedders and benches that export elsewhere can too.
pub fn spans_layer<S>(tracer: SdkTracer) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(EnvFilter::new(format!(
            "warn,{TARGET}=info,shipsec::component=info,ractor=warn"
        )))
}

/// Links a span keeps when none is configured (the OpenTelemetry specification's default).
const DEFAULT_LINK_LIMIT: u32 = 128;

/// Links kept per span: `OTEL_SPAN_LINK_COUNT_LIMIT` (a value that is not a number counts
/// as unset: 128), read once. [`batched_provider`] gives it to the SDK and node spans stop
/// adding links there, counting the others in [`JOIN_LINKS_DROPPED`] (a 10,000-way fan-in
/// would otherwise build 10,000 links for the SDK to keep 128). A provider built
/// otherwise should be given the same limit.
pub fn span_link_limit() -> u32 {
    static LIMIT: OnceLock<u32> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("OTEL_SPAN_LINK_COUNT_LIMIT")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_LINK_LIMIT)
    })
}

/// A tracer provider batching ended spans into `exporter` as the OTLP export does (a
/// queue of [`SPAN_QUEUE`] spans, exports of up to 4,096), keeping up to
/// `OTEL_SPAN_LINK_COUNT_LIMIT` links per span.
pub fn batched_provider<E: SpanExporter + 'static>(
    exporter: E,
    resource: Resource,
) -> SdkTracerProvider {
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(SPAN_QUEUE)
        .with_max_export_batch_size(4_096)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .with_max_links_per_span(span_link_limit())
        .build()
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,ractor=warn"))
}

fn protocol(export: &ExportConfig) -> Result<Protocol, TelemetryError> {
    match export.protocol.as_str() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpBinary),
        other => Err(TelemetryError::Protocol(other.to_owned())),
    }
}

/// `{endpoint}/v1/{signal}` for HTTP; the endpoint itself for gRPC.
fn signal_endpoint(export: &ExportConfig, signal: &str) -> Result<String, TelemetryError> {
    let base = export.endpoint.trim_end_matches('/');
    Ok(match protocol(export)? {
        Protocol::Grpc => base.to_owned(),
        _ => format!("{base}/v1/{signal}"),
    })
}

/// One quick retry: a collector that is down must not hold a run's exit for seconds.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::recommended()
        .with_max_retries(1)
        .with_initial_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(100))
}

/// Builds an OTLP exporter of one signal (`traces`, `metrics`) over the configured
/// protocol, with the short timeout and retry policy above. A macro: the span and metric
/// exporter builders share methods but no trait.
macro_rules! otlp_exporter {
    ($exporter:path, $export:expr, $signal:expr) => {{
        let endpoint = signal_endpoint($export, $signal)?;
        match protocol($export)? {
            Protocol::Grpc => <$exporter>::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .with_retry_policy(retry_policy())
                .build(),
            _ => <$exporter>::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .with_retry_policy(retry_policy())
                .build(),
        }
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?
    }};
}

fn tracer_provider(
    export: &ExportConfig,
    resource: Resource,
    dropped: Arc<AtomicU64>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = otlp_exporter!(opentelemetry_otlp::SpanExporter, export, "traces");
    let counting = CountingExporter {
        inner: exporter,
        dropped,
    };
    Ok(batched_provider(counting, resource))
}

fn meter_provider(
    export: &ExportConfig,
    resource: Resource,
) -> Result<SdkMeterProvider, TelemetryError> {
    let exporter = otlp_exporter!(opentelemetry_otlp::MetricExporter, export, "metrics");
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_secs(10))
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build())
}

/// Counts the spans of every failed export: `shutdown` returns Ok even when all failed.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    dropped: Arc<AtomicU64>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if result.is_err() {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names
/// one (the SDK's own fallback, `unknown_service`, tells an SRE nothing).
pub const DEFAULT_SERVICE_NAME: &str = "shipsec-orchestrator";

/// The resource of every export: the standard variables, else the default service name.
fn resource() -> Resource {
    let set = |key: &str| std::env::var(key).is_ok_and(|v| !v.trim().is_empty());
    let named_in_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attrs| {
        attrs.split(',').any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| k.trim() == "service.name")
        })
    });
    let builder = Resource::builder();
    if set("OTEL_SERVICE_NAME") || named_in_attributes {
        builder.build()
    } else {
        builder.with_service_name(DEFAULT_SERVICE_NAME).build()
    }
}
