//! Messages a run supervisor receives: reports from its nodes, commands from the
//! orchestrator, and its own timers; and the reports' data, which the run core consumes.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::SpanContext;
use ractor::RpcReplyPort;
use tokio::sync::mpsc;

use crate::messages::event::TraceEvent;
use crate::messages::node::NodeEnd;
use crate::messages::orchestrator::RunCommandError;
use crate::messages::result::RunSnapshot;
use crate::runtime::components::{ComponentError, FailureInfo};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{EdgeIx, NodeIx};
use crate::runtime::semantics::time::Time;

/// How a run is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopKind {
    /// Cancel with the grace period.
    Cancel,
    /// Terminate at once.
    Terminate,
}

/// A live event feed: what happened so far, then what happens next (the receiver closes
/// when the run ends, or when a bounded subscriber fell a whole buffer behind).
#[derive(Debug)]
pub(crate) struct EventFeed {
    /// Events already emitted after the subscription's `after`, in `seq` order.
    pub backlog: Vec<TraceEvent>,
    /// Later events; `None` when the run has already ended.
    pub live: Option<mpsc::Receiver<TraceEvent>>,
}

/// What a subscriber asks for: the events after `after` (0: from the first), and how many
/// live events may wait for it before it is dropped (`None`: as many as come).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Subscription {
    /// The last `seq` the subscriber has; the feed starts at the next.
    pub after: u64,
    /// Most live events buffered for the subscriber; one more and its feed is closed.
    pub buffer: Option<usize>,
}

impl Subscription {
    /// Buffer of an unbounded subscriber: tokio's largest channel, whose blocks are only
    /// allocated as events come.
    const UNBOUNDED: usize = usize::MAX >> 4;

    /// The channel's capacity.
    pub(crate) fn capacity(self) -> usize {
        self.buffer.map_or(Subscription::UNBOUNDED, |b| {
            b.clamp(1, Subscription::UNBOUNDED)
        })
    }

    /// The part of `events` (the run's, from seq 1) the subscriber has not seen.
    pub(crate) fn backlog(self, events: &[TraceEvent]) -> Vec<TraceEvent> {
        let from = usize::try_from(self.after)
            .unwrap_or(usize::MAX)
            .min(events.len());
        events[from..].to_vec()
    }
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

/// What a node core reports to the run: every transition the run records.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeReport {
    /// Attempt `attempt` waits for slots (QUEUED).
    Queued(StartReport),
    /// Attempt `attempt` starts now (RUNNING).
    Started(StartReport),
    /// An attempt failed and another follows.
    Retrying(RetryReport),
    /// The node ended; its actor stops. The supervisor resolves its edges.
    Ended(Arc<NodeEnd>),
}

impl NodeReport {
    /// The node that reports.
    pub fn node(&self) -> NodeIx {
        match self {
            NodeReport::Queued(r) | NodeReport::Started(r) => r.node,
            NodeReport::Retrying(r) => r.node,
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
}

/// What a run supervisor receives.
#[derive(Debug)]
pub(crate) enum SupervisorMsg {
    /// From a node: a transition, with its node span once it ended (for its children's
    /// links).
    Node {
        /// The report.
        report: NodeReport,
        /// The node's span, on its end, when tracing (boxed: most messages have none, and
        /// every slot of a mailbox is as large as its largest message).
        span: Option<Box<SpanContext>>,
    },
    /// From a remote attempt: a worker took it.
    Placed(Placed),
    /// From a node whose attempt finished at its first poll: its start and its end in one
    /// message.
    NodeRan {
        /// The attempt's start.
        start: StartReport,
        /// The node's end.
        end: Arc<NodeEnd>,
        /// The node's span, when tracing (boxed, as above).
        span: Option<Box<SpanContext>>,
    },
    /// From the supervisor itself, after a node actor exited before its end was recorded:
    /// re-checked through the queue, so a report the node sent before exiting is handled
    /// first.
    NodeExited {
        /// The node.
        node: NodeIx,
        /// Which of the node's actors exited (a respawned node has a new one).
        generation: u32,
        /// Panic or kill description.
        cause: String,
    },
    /// From the orchestrator: cancel or terminate the run.
    Stop(StopKind),
    /// From the supervisor's own timers.
    Timer(RunTimer),
    /// From the orchestrator: the engine's slot limiter was restarted; live nodes are
    /// told so that slots held and waited for carry over.
    LimiterRestarted,
    /// From the supervisor itself, sent with the first fact it queues for the journal:
    /// it has handled what was in its mailbox before, so what it queued meanwhile is
    /// committed as one batch.
    Commit,
    /// From the journal's writer: the run's facts up to this number are stored.
    Durable(u64),
    /// From the journal's writer: the run's facts cannot be stored; the run fails.
    JournalFailed(String),
    /// From the orchestrator, on behalf of a handle: the run's current state.
    Snapshot(RpcReplyPort<Result<RunSnapshot, RunCommandError>>),
    /// From the orchestrator of a suspending engine: commit what is queued, then answer
    /// (so every report sent before is stored).
    Sync(RpcReplyPort<()>),
    /// From the orchestrator, on behalf of a handle: subscribe to the run's events.
    Subscribe(
        Subscription,
        RpcReplyPort<Result<EventFeed, RunCommandError>>,
    ),
}
