//! Telemetry set-up and names: spans through `tracing` exported with OTLP, metrics through
//! the OpenTelemetry meter, both configured only by the standard `OTEL_*` variables.
//!
//! Span names and attribute keys are constants here, and nowhere else. With no endpoint set
//! no exporter is installed and spans cost a disabled callsite check. An unreachable
//! collector never blocks a run: exports time out quickly, and the spans they carried are
//! counted as dropped ([`Telemetry::dropped_spans`]).
//!
//! [`export`] installs the exporters, [`metrics`] holds the instruments, `spans` opens
//! and closes the spans of one node.

pub mod export;
pub mod metrics;
pub(crate) mod spans;

pub use export::{
    ExportConfig, SPAN_QUEUE, Telemetry, TelemetryError, batched_provider, init_for_tests,
    span_link_limit, spans_layer,
};
pub use metrics::Metrics;

/// The span of one run.
pub const SPAN_RUN: &str = "workflow.run";
/// The span of one node.
pub const SPAN_NODE: &str = "workflow.node";
/// The span of one attempt.
pub const SPAN_ATTEMPT: &str = "workflow.node.attempt";
/// `tracing` target of the engine's spans and span events.
pub const TARGET: &str = "shipsec::workflow";

/// Run id.
pub const RUN_ID: &str = "workflow.run.id";
/// Run status, on the run span and the runs counter.
pub const RUN_STATUS: &str = "workflow.run.status";
/// Node ref.
pub const NODE_REF: &str = "workflow.node.ref";
/// Component id.
pub const COMPONENT_ID: &str = "workflow.component.id";
/// Join strategy.
pub const JOIN_STRATEGY: &str = "workflow.join.strategy";
/// Parents whose edges decided an `any`/`first`/`quorum` join, comma-separated.
pub const JOIN_TRIGGERED_BY: &str = "workflow.join.triggered_by";
/// Parents of a node whose links were left off its span, past the span link limit
/// (`OTEL_SPAN_LINK_COUNT_LIMIT`, default 128); absent when every link is there.
pub const JOIN_LINKS_DROPPED: &str = "workflow.join.links_dropped";
/// Attempt number.
pub const ATTEMPT: &str = "workflow.attempt";
/// Final node status.
pub const NODE_STATUS: &str = "workflow.node.status";
/// Error type of a failure.
pub const ERROR_TYPE: &str = "error.type";
/// Outcome of an attempt on the attempts counter (`completed`, `failed`).
pub const OUTCOME: &str = "outcome";
