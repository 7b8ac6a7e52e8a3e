//! The spans of one node: a `workflow.node` span (child of the run span, linked to the
//! node spans of the parents whose edges triggered it) and one `workflow.node.attempt`
//! span per attempt. Skipped and cancelled nodes get their node span too, so the whole DAG
//! shows in a trace. When the run span is disabled (no exporter) nothing is recorded and
//! nothing is kept.

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::runtime::components::ComponentError;
use crate::runtime::definition::graph::{EdgeIx, Graph, Join, Node, NodeIx};
use crate::runtime::semantics::outcome::Outcome;
use crate::runtime::semantics::report::NodeEnd;
use crate::runtime::telemetry::{
    ERROR_TYPE, JOIN_LINKS_DROPPED, JOIN_TRIGGERED_BY, NODE_STATUS, SPAN_ATTEMPT, SPAN_NODE,
    TARGET, span_link_limit,
};

/// Spans of one node actor.
#[derive(Debug)]
pub(crate) struct NodeSpans {
    enabled: bool,
    node: Option<Span>,
    /// Span contexts of the parents that ended, for links (for an `all` join, no more than
    /// the span link limit: the others are only counted in `links_dropped`).
    parents: Vec<(NodeIx, SpanContext)>,
    /// Links left off past the span link limit.
    links_dropped: usize,
}

impl NodeSpans {
    /// Spans under `run`; records nothing when `run` is disabled.
    pub(crate) fn new(run: &Span) -> NodeSpans {
        NodeSpans {
            enabled: !run.is_disabled(),
            node: None,
            parents: Vec::new(),
            links_dropped: 0,
        }
    }

    /// Remembers a parent's span for the links of this node's span. An `all` join links
    /// every parent: past the link limit they are counted, not kept.
    pub(crate) fn parent_ended(&mut self, node: &Node, parent: NodeIx, span: Option<SpanContext>) {
        let (true, Some(cx), None) = (self.enabled, span, &self.node) else {
            return;
        };
        if matches!(node.join, Join::All) {
            let limit = span_link_limit() as usize;
            if self.parents.len() >= limit {
                self.links_dropped += 1;
                return;
            }
            if self.parents.is_empty() {
                self.parents.reserve_exact(node.incoming.len().min(limit));
            }
        }
        self.parents.push((parent, cx));
    }

    /// Opens the node span (once), linked to the parents whose edges triggered it (every
    /// parent seen for `all`).
    pub(crate) fn open(&mut self, run: &Span, graph: &Graph, node: &Node, triggered_by: &[EdgeIx]) {
        if !self.enabled || self.node.is_some() {
            return;
        }
        // Attributes are declared as fields, recorded as the span opens (cheaper than one
        // `set_attribute` lookup each); the names are the constants of `telemetry`.
        let span = tracing::info_span!(
            target: TARGET,
            parent: run,
            SPAN_NODE,
            otel.name = &*node.node_ref,
            workflow.node.ref = &*node.node_ref,
            workflow.component.id = &*node.component_id,
            workflow.join.strategy = node.join.as_str(),
            workflow.join.triggered_by = tracing::field::Empty,
            workflow.join.links_dropped = tracing::field::Empty,
            workflow.node.status = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let all = matches!(node.join, Join::All);
        // The parents that decided an any/first/quorum join (an `all` join links every
        // parent), sorted for the lookups below: a wide quorum has as many as parents.
        let mut sources: Vec<NodeIx> = Vec::new();
        if !all && !triggered_by.is_empty() {
            sources = triggered_by.iter().map(|e| graph.edge(*e).source).collect();
            let refs: Vec<&str> = sources.iter().map(|s| &*graph.node(*s).node_ref).collect();
            span.record(JOIN_TRIGGERED_BY, refs.join(","));
            sources.sort_unstable();
        }
        let limit = span_link_limit() as usize;
        let mut linked = 0;
        for (parent, cx) in &self.parents {
            if all || sources.binary_search(parent).is_ok() {
                if linked < limit {
                    span.add_link(cx.clone());
                    linked += 1;
                } else {
                    self.links_dropped += 1;
                }
            }
        }
        if self.links_dropped > 0 {
            span.record(JOIN_LINKS_DROPPED, self.links_dropped as i64);
        }
        self.parents = Vec::new();
        self.node = Some(span);
    }

    /// Adds a transition event to the node span; `attrs` is built only when recording.
    pub(crate) fn event(&self, name: &'static str, attrs: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(span) = &self.node {
            span.add_event(name, attrs());
        }
    }

    /// A new attempt span, child of the node span (disabled when not recording).
    pub(crate) fn attempt(&self, attempt: u32) -> Span {
        let Some(node) = &self.node else {
            return Span::none();
        };
        tracing::info_span!(
            target: TARGET,
            parent: node,
            SPAN_ATTEMPT,
            workflow.attempt = i64::from(attempt),
            error.type = tracing::field::Empty,
        )
    }

    /// Marks an attempt span failed.
    pub(crate) fn attempt_failed(span: &Span, error: &ComponentError) {
        if !span.is_disabled() {
            span.record(ERROR_TYPE, error.error_type.as_str());
            span.set_status(Status::error(error.message.clone()));
        }
    }

    /// Closes the node span with its final status; returns its context for the children's
    /// links. A node that never opened its span (skipped, cancelled early) opens it now.
    pub(crate) fn close(
        &mut self,
        run: &Span,
        graph: &Graph,
        node: &Node,
        end: &NodeEnd,
    ) -> Option<SpanContext> {
        if !self.enabled {
            return None;
        }
        self.open(run, graph, node, &[]);
        let span = self.node.take()?;
        span.record(NODE_STATUS, end.terminal().as_str());
        let event = match &end.outcome {
            Outcome::Completed { .. } => "completed",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped(_) => "skipped",
            Outcome::Cancelled(cause) if cause.is_withdrawal() => "withdrawn",
            Outcome::Cancelled(_) => "cancelled",
        };
        let mut attrs = Vec::new();
        if let Some(reason) = end.reason() {
            attrs.push(KeyValue::new("reason", reason));
        }
        span.add_event(event, attrs);
        if let Some(error) = end.error() {
            span.record(ERROR_TYPE, error.error_type.as_str());
            span.set_status(Status::error(error.message.clone()));
        }
        let cx = span.context().span().span_context().clone();
        Some(cx)
    }
}
