//! What the cores exchange about nodes: a node's end, its reports to the run, why it is
//! asked to stop, the resolutions it receives from its parents, and the timers the node
//! and run cores arm. The engine's mailboxes carry these; the cores decide
//! with them, and the journal's replay rebuilds them.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::components::{ComponentError, FailureInfo};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{EdgeIx, NodeIx};
use crate::runtime::semantics::edge::Resolution;
use crate::runtime::semantics::gate::PendingInput;
use crate::runtime::semantics::outcome::{CancelCause, Outcome, Terminal};
use crate::runtime::semantics::time::Time;

/// How a node ended, shared (one `Arc`) by the supervisor and every child.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEnd {
    /// The node.
    pub node: NodeIx,
    /// Attempts made.
    pub attempts: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The failure this node handled, when it was reached through an `error` edge.
    pub handled: Option<Arc<FailureInfo>>,
}

impl NodeEnd {
    /// Its terminal state.
    pub fn terminal(&self) -> Terminal {
        self.outcome.terminal()
    }

    /// Its output, when it completed.
    pub fn output(&self) -> Option<&Arc<JsonObject>> {
        match &self.outcome {
            Outcome::Completed { output, .. } => Some(output),
            _ => None,
        }
    }

    /// The ports it activated, when it completed and routed.
    pub fn active_ports(&self) -> Option<&[String]> {
        match &self.outcome {
            Outcome::Completed { active_ports, .. } => active_ports.as_deref(),
            _ => None,
        }
    }

    /// Its error, when it failed.
    pub fn error(&self) -> Option<&ComponentError> {
        match &self.outcome {
            Outcome::Failed { error } => Some(error),
            _ => None,
        }
    }

    /// Why it was skipped or cancelled (docs/semantics.md §10).
    pub fn reason(&self) -> Option<String> {
        self.outcome.reason()
    }

    /// The node whose failure or cancellation began a chain of skips ending here.
    pub fn origin(&self) -> Option<&Arc<str>> {
        match &self.outcome {
            Outcome::Skipped(skip) => Some(&skip.origin),
            _ => None,
        }
    }
}

/// Why a node is asked to stop, and how long a running attempt has to finish.
#[derive(Debug, Clone, PartialEq)]
pub struct CancelReason {
    /// Why: what the node records when it ends cancelled.
    pub cause: CancelCause,
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

/// How a run is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopKind {
    /// Cancel with the grace period.
    Cancel,
    /// Terminate at once.
    Terminate,
}

/// A node's report that an attempt is queued or starts.
#[derive(Debug, Clone, PartialEq)]
pub struct StartReport {
    /// The node.
    pub node: NodeIx,
    /// Attempt number.
    pub attempt: u32,
    /// Edges that decided its join (`any`/`first`/`quorum`).
    pub triggered_by: Arc<[EdgeIx]>,
    /// Set once, right after a `first` join fired: withdraw from the other parents.
    pub withdraw: bool,
    /// The failure it handles, when reached through an `error` edge.
    pub failure: Option<Arc<FailureInfo>>,
    /// The inputs its join resolved (shared, not copied): what a node respawned after a
    /// crash runs its next attempt with.
    pub inputs: Arc<JsonObject>,
    /// When its first attempt began: a respawned node's total budget counts from it.
    pub first_started: Time,
}

/// A remote worker took attempt `attempt` of `node`.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The node.
    pub node: NodeIx,
    /// The attempt.
    pub attempt: u32,
    /// The worker's id.
    pub worker: Arc<str>,
}

/// A node's report that attempt `attempt` failed and attempt `attempt + 1` follows `delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryReport {
    /// The node.
    pub node: NodeIx,
    /// The failed attempt.
    pub attempt: u32,
    /// Backoff before the next.
    pub delay: Duration,
    /// The failure.
    pub error: ComponentError,
}

/// A node's report that attempt `attempt` asked a person for input: the node is a gate
/// and waits for request `request_id`, holding no slot (the attempt has ended).
#[derive(Debug, Clone, PartialEq)]
pub struct InputAsked {
    /// The node.
    pub node: NodeIx,
    /// The attempt that asked.
    pub attempt: u32,
    /// The request's id (derived from the run, the node and the attempt).
    pub request_id: Arc<str>,
    /// What it asks.
    pub input: PendingInput,
    /// When it expires (decided when it is made; `None`: never).
    pub deadline: Option<Time>,
}

/// What a node core reports to the run: every transition the run records.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeReport {
    /// Attempt `attempt` waits for slots (QUEUED).
    Queued(StartReport),
    /// Attempt `attempt` starts now (RUNNING).
    Started(StartReport),
    /// An attempt failed and another follows.
    Retrying(RetryReport),
    /// An attempt asked a person for input: the node waits (AWAITING_INPUT).
    AwaitingInput(Arc<InputAsked>),
    /// The node ended; its actor stops. The supervisor resolves its edges.
    Ended(Arc<NodeEnd>),
}

impl NodeReport {
    /// The node that reports.
    pub fn node(&self) -> NodeIx {
        match self {
            NodeReport::Queued(r) | NodeReport::Started(r) => r.node,
            NodeReport::Retrying(r) => r.node,
            NodeReport::AwaitingInput(asked) => asked.node,
            NodeReport::Ended(end) => end.node,
        }
    }
}

/// A timer the run core armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunTimer {
    /// The run deadline (`config.timeoutSeconds`) passed.
    Deadline,
    /// The grace period of a stop is over: nodes still running are abandoned.
    ForceEnd,
    /// The deadline of the input request of `node`'s attempt `attempt` came.
    InputDeadline {
        /// The gate.
        node: NodeIx,
        /// Its attempt.
        attempt: u32,
    },
}
