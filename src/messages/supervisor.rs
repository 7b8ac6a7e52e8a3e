//! Messages a run supervisor receives: reports from its nodes, commands from the
//! orchestrator, and its own timers.

use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;
use tokio::sync::mpsc;

use crate::messages::event::TraceEvent;
use crate::messages::node::NodeEnd;
use crate::messages::orchestrator::RunCommandError;
use crate::messages::result::RunSnapshot;
use crate::runtime::components::{ComponentError, FailureInfo};
use crate::runtime::definition::graph::{EdgeIx, NodeIx};

/// How a run is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// Cancel with the grace period.
    Cancel,
    /// Terminate at once.
    Terminate,
}

/// A live event feed: what happened so far, then what happens next (the receiver closes
/// when the run ends).
#[derive(Debug)]
pub struct EventFeed {
    /// Events already emitted, in `seq` order.
    pub backlog: Vec<TraceEvent>,
    /// Later events; `None` when the run has already ended.
    pub live: Option<mpsc::UnboundedReceiver<TraceEvent>>,
}

/// A node's report that an attempt is queued or starts.
#[derive(Debug, Clone)]
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
}

/// What a run supervisor receives.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// From a node: attempt `attempt` waits for slots (QUEUED).
    NodeQueued(StartReport),
    /// From a node: attempt `attempt` starts now (RUNNING).
    NodeStarted(StartReport),
    /// From a node: attempt `attempt` failed and attempt `attempt + 1` follows `delay`.
    NodeRetrying {
        /// The node.
        node: NodeIx,
        /// The failed attempt.
        attempt: u32,
        /// Backoff before the next.
        delay: Duration,
        /// The failure.
        error: ComponentError,
    },
    /// From a node, as its last act: it ended. The supervisor resolves its edges.
    NodeEnded(Arc<NodeEnd>),
    /// From a node whose attempt finished at its first poll: `NodeStarted(start)` and
    /// `NodeEnded(end)` in one message.
    NodeRan {
        /// The attempt's start.
        start: StartReport,
        /// The node's end.
        end: Arc<NodeEnd>,
    },
    /// From the supervisor itself, after a node actor exited: re-checked through the
    /// queue, so a report the node sent before exiting is handled first.
    NodeExited {
        /// The node.
        node: NodeIx,
        /// Actor id of the exited actor (a respawned node has a new one).
        actor: ractor::ActorId,
        /// Panic or kill description.
        cause: String,
    },
    /// From the orchestrator: cancel or terminate the run.
    Stop(StopKind),
    /// From the supervisor's timer: the run deadline passed.
    DeadlinePassed,
    /// From the supervisor's timer: nodes still running after their grace are abandoned.
    ForceEnd,
    /// From the orchestrator, on behalf of a handle: the run's current state.
    Snapshot(RpcReplyPort<Result<RunSnapshot, RunCommandError>>),
    /// From the orchestrator, on behalf of a handle: subscribe to the run's events.
    Subscribe(RpcReplyPort<Result<EventFeed, RunCommandError>>),
}
