//! Messages a node actor receives, and the data of a node's end that travels to its
//! supervisor and children.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::SpanContext;

use crate::messages::limiter::SlotGrant;
use crate::runtime::components::{ComponentError, ComponentResult, FailureInfo};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{EdgeIx, NodeIx};
use crate::runtime::semantics::edge::Resolution;
use crate::runtime::semantics::outcome::Terminal;

/// How a node ended, shared (one `Arc`) by the supervisor and every child.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEnd {
    /// The node.
    pub node: NodeIx,
    /// Its terminal state.
    pub terminal: Terminal,
    /// Attempts made.
    pub attempts: u32,
    /// Its output, when it completed. Immutable once written.
    pub output: Option<Arc<JsonObject>>,
    /// Ports it activated, when it routed.
    pub active_ports: Option<Vec<String>>,
    /// Its error, when it failed.
    pub error: Option<ComponentError>,
    /// Why it was skipped or cancelled (docs/semantics.md §10).
    pub reason: Option<String>,
    /// The ref of the node whose failure or cancellation is the origin of a skip chain.
    pub origin: Option<Arc<str>>,
    /// The failure this node handled, when it was reached through an `error` edge.
    pub handled: Option<Arc<FailureInfo>>,
}

/// Why a node is asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReason {
    /// The reason recorded on the node (`withdrawn: w fired on c`, ...).
    pub text: Arc<str>,
    /// Grace period for a running attempt; zero terminates at once.
    pub grace: Duration,
}

/// An incoming edge resolved because its source ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentEnded {
    /// The incoming edge.
    pub edge: EdgeIx,
    /// What it resolved to.
    pub resolution: Resolution,
    /// How the source ended.
    pub end: Arc<NodeEnd>,
}

/// A timer a node core armed, fenced by the attempt it belongs to: a timer that fires
/// for an attempt the node is no longer in is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeTimer {
    /// The backoff before `attempt` is over.
    RetryDue {
        /// The attempt to start.
        attempt: u32,
    },
    /// The grace period of cancelled attempt `attempt` is over.
    GraceOver {
        /// The attempt being cancelled.
        attempt: u32,
    },
    /// Attempt `attempt` has waited `queueTimeoutSeconds` for its slots.
    QueueTimeout {
        /// The waiting attempt.
        attempt: u32,
    },
}

/// What a node actor receives.
#[derive(Debug)]
pub(crate) enum NodeMsg {
    /// From the supervisor: an incoming edge resolved because its source ended (with the
    /// source's span, for the link). A second resolution of the same edge is ignored.
    ParentEnded {
        /// The resolution.
        resolved: ParentEnded,
        /// The span of the source node, when tracing.
        span: Option<SpanContext>,
    },
    /// From the supervisor: stop. A pending node ends CANCELLED at once; a running attempt
    /// sees its token fire and has `grace` to finish before it is abandoned.
    Cancel(CancelReason),
    /// From the node's own attempt task: the attempt ended. Fenced by attempt number.
    AttemptFinished {
        /// Attempt number.
        attempt: u32,
        /// Its result.
        result: ComponentResult,
    },
    /// From the node's own timers.
    Timer(NodeTimer),
    /// From the limiter: the slots of `ticket` are granted. A node that no longer waits
    /// for them drops the grant, which frees them.
    SlotGranted {
        /// The ticket.
        ticket: u64,
        /// The slots, held while the attempt runs.
        grant: SlotGrant,
    },
    /// From the supervisor: the engine's slot limiter was restarted. A node holding slots
    /// hands them to the new one; a node waiting for slots asks it again.
    LimiterRestarted,
}
