//! Telemetry set-up and names: spans through `tracing` exported with OTLP, metrics through
//! the OpenTelemetry meter, both configured only by the standard `OTEL_*` variables.
//!
//! Span names and attribute keys are constants here, and nowhere else. With no endpoint set
//! no exporter is installed and spans cost a disabled callsite check. An unreachable
//! collector never blocks a run: exports time out quickly, and the spans they carried are
//! counted as dropped ([`Telemetry::dropped_spans`]).
//!
//! [`export`] installs the exporters, [`metrics`] holds the instruments, `spans` opens
//! and closes the spans of one node. The `traceparent` helpers (W3C Trace Context) live
//! here and nowhere else.

pub mod export;
pub mod metrics;
pub(crate) mod spans;

pub use export::{
    ExportConfig, SPAN_QUEUE, Telemetry, TelemetryError, batched_provider, init_for_tests,
    span_link_limit, spans_layer,
};
pub use metrics::Metrics;

/// The W3C `traceparent` of `span`, when it is recorded.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// What the W3C propagator reads from `traceparent`: its remote span context, or, when
/// it is not one, the current context unchanged.
pub fn extract_traceparent(traceparent: &str) -> opentelemetry::Context {
    use opentelemetry::propagation::TextMapPropagator;
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier)
}

/// The context a `traceparent` names, for a span to join (an invalid one: none).
pub fn context_of(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt;
    let cx = extract_traceparent(traceparent);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace id of a W3C `traceparent` (Trace Context, level 1: `version-traceid-
/// parentid-flags`, lower-case hex of 2, 32, 16 and 2 digits), or `None` when it is not
/// one: version `ff` is invalid, version `00` has exactly those four fields, a later
/// version may add fields after a `-`, and neither id may be all zeros.
pub fn traceparent_trace_id(traceparent: &str) -> Option<String> {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut fields = traceparent.splitn(5, '-');
    let (version, trace_id, parent_id, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let rest = fields.next();
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (rest.is_none() || version != "00");
    valid.then(|| trace_id.to_owned())
}

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
/// Component id.
pub const COMPONENT_ID: &str = "workflow.component.id";
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

#[cfg(test)]
mod tests {
    use super::traceparent_trace_id;

    #[test]
    fn a_traceparent_is_checked_as_w3c_trace_context_says() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let good = format!("00-{id}-00f067aa0ba902b7-01");
        assert_eq!(traceparent_trace_id(&good).as_deref(), Some(id));
        // A later version may carry more fields.
        assert!(traceparent_trace_id(&format!("01-{id}-00f067aa0ba902b7-01-extra")).is_some());
        for bad in [
            format!("ff-{id}-00f067aa0ba902b7-01"),
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}-00f067aa0ba902b7-1"),
            format!("00-{id}x-00f067aa0ba902b7-01"),
            format!("0-{id}-00f067aa0ba902b7-01"),
            "garbage".to_owned(),
        ] {
            assert_eq!(traceparent_trace_id(&bad), None, "{bad}");
        }
    }
}
