//! Messages a node actor receives.

use std::sync::Arc;

use opentelemetry::trace::SpanContext;

use crate::actors::slots::SlotGrant;
use crate::runtime::components::ComponentResult;
use crate::runtime::semantics::report::{CancelReason, NodeTimer, ParentEnded};

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
    /// From the supervisor: the request the gate waits on was answered (`Ok`: what it
    /// completes with) or expired (`Err`: its failure).
    Input {
        /// The request.
        request_id: Arc<str>,
        /// The answer.
        answer: ComponentResult,
    },
    /// From the node's own timers.
    Timer(NodeTimer),
    /// From the engine's slots: the slots of `ticket` are granted. A node that no longer waits
    /// for them drops the grant, which frees them.
    SlotGranted {
        /// The ticket.
        ticket: u64,
        /// The slots, held while the attempt runs.
        grant: SlotGrant,
    },
}
