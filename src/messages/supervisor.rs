//! Messages a run supervisor receives: reports from its nodes, commands from the
//! orchestrator, and its own timers.

use std::sync::Arc;

use opentelemetry::trace::SpanContext;
use ractor::RpcReplyPort;
use tokio::sync::mpsc;

use crate::messages::orchestrator::RunCommandError;
use crate::runtime::definition::graph::NodeIx;
use crate::runtime::semantics::event::TraceEvent;
use crate::runtime::semantics::gate::{Resolution, Resolved};
use crate::runtime::semantics::report::{
    NodeEnd, NodeReport, Placed, RunTimer, StartReport, StopKind,
};
use crate::runtime::semantics::result::RunSnapshot;

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
    /// From the supervisor itself, sent with the first fact it queues for the journal:
    /// it has handled what was in its mailbox before, so what it queued meanwhile is
    /// committed as one batch.
    Commit,
    /// From the journal's writer: the run's facts up to this number are stored.
    Durable(u64),
    /// From the journal's writer: the run's facts cannot be stored; the run fails.
    JournalFailed(String),
    /// From the orchestrator, on behalf of a handle: a person answered an input request
    /// of the run. Answered once the answer is stored.
    Resolve {
        /// The request.
        request_id: Arc<str>,
        /// The answer.
        resolution: Resolution,
        /// What it did.
        reply: RpcReplyPort<Result<Resolved, RunCommandError>>,
    },
    /// From the orchestrator, on behalf of a handle: a signal for the run's inbox.
    Signal {
        /// The signal.
        signal: crate::messages::orchestrator::SignalIn,
        /// What it did.
        reply: RpcReplyPort<Result<crate::runtime::semantics::inbox::SignalAck, RunCommandError>>,
    },
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
