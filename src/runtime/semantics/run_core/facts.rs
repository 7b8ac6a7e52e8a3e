//! What the run core takes (facts) and gives (effects and metrics).

use std::sync::Arc;

use crate::runtime::components::ComponentResult;
use crate::runtime::definition::graph::NodeIx;
use crate::runtime::semantics::gate::{self, InputRequest, Resolution, ResolveError};
use crate::runtime::semantics::inbox::{Signal, SignalError, Signaled};
use crate::runtime::semantics::node_core::NodeStart;
use crate::runtime::semantics::outcome::{RunStatus, Terminal};
use crate::runtime::semantics::report::{
    CancelReason, NodeEnd, NodeReport, ParentEnded, Placed, RunTimer, StopKind,
};
use crate::runtime::semantics::result::RunResult;
use crate::runtime::semantics::time::Time;

/// A fact about the run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunFact {
    /// The run begins.
    Started,
    /// A node reported a transition.
    Node(NodeReport),
    /// A node actor exited (its supervision event): re-checked unless its end is known.
    ActorExited {
        /// The node.
        node: NodeIx,
        /// Which of its actors.
        generation: u32,
        /// Why, as ractor said.
        cause: String,
    },
    /// A node actor exited without its end being recorded, re-checked through the queue:
    /// the node died.
    NodeDied {
        /// The node.
        node: NodeIx,
        /// Which of its actors.
        generation: u32,
        /// Why.
        cause: String,
    },
    /// A remote worker took an attempt (told by the attempt, possibly before the node's
    /// start report arrives): the worker goes on the attempt's end events and the node's
    /// record.
    Placed(Placed),
    /// Cancel or terminate, on request.
    CancelRequested(StopKind),
    /// A timer the core armed fired (`Deadline`: the run deadline was hit).
    TimerFired(RunTimer),
    /// The engine restarted and resumes the run from its journal: no actor of the run is
    /// left. Live nodes are respawned where they were (an attempt that was running is
    /// lost and fails with `CrashError`), the run's timers are armed again at their due
    /// times, and a `RESUMED` event names the attempts lost.
    Resumed,
    /// A person answered input request `request_id` (the answer's time is the fact's).
    InputResolution {
        /// The request.
        request_id: Arc<str>,
        /// The answer.
        resolution: Resolution,
    },
    /// A signal came to the run's inbox (its id given, or drawn by the supervisor from
    /// [`RunCore::signals_received`]).
    Signal(Arc<Signal>),
    /// Every actor of an ended node has exited. The journal's end of a run: exits are not
    /// journaled, so the replay of a finished run learns of them all at once.
    ActorsGone,
}

/// The cause of a node's death recorded when the engine restarts under it.
pub const RESTART_CAUSE: &str = "the engine restarted while the attempt ran";

/// What the supervisor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEffect {
    /// Spawn an actor for `node`.
    Spawn {
        /// The node.
        node: NodeIx,
        /// The actor's generation (its exit names it).
        generation: u32,
        /// How it begins.
        start: NodeStart,
    },
    /// Tell `child` that one of its incoming edges resolved.
    Tell {
        /// The child.
        child: NodeIx,
        /// The resolution.
        resolved: ParentEnded,
    },
    /// Tell a gate how its request ended: `Ok` with what it completes with, or `Err` with
    /// the failure of its expiry.
    Answer {
        /// The gate.
        node: NodeIx,
        /// Its request.
        request_id: Arc<str>,
        /// The answer.
        answer: ComponentResult,
    },
    /// What an answer to a request did, for whoever sent it (once the fact is stored).
    Resolved {
        /// The request.
        request_id: Arc<str>,
        /// Applied, a duplicate, or why it was refused.
        outcome: Result<gate::Resolved, ResolveError>,
    },
    /// A gate's request was made, or left `pending` (resolved, expired, cancelled): it
    /// is shown as it is now to whoever lists requests across runs.
    Request(Arc<InputRequest>),
    /// What a signal did, for whoever sent it (once the fact is stored).
    Signaled {
        /// The signal.
        signal_id: Arc<str>,
        /// What it did, or why it was refused.
        outcome: Result<Signaled, SignalError>,
    },
    /// Ask a live node to stop.
    Cancel {
        /// The node.
        node: NodeIx,
        /// Why, and its grace.
        reason: CancelReason,
    },
    /// Kill a node's actor that outlived its grace period.
    Kill {
        /// The node.
        node: NodeIx,
    },
    /// Re-check a node actor's exit through the mailbox (`NodeDied` if still unexplained).
    Recheck {
        /// The node.
        node: NodeIx,
        /// Its actor's generation.
        generation: u32,
        /// The exit's cause.
        cause: String,
    },
    /// Deliver `timer` back at `due`.
    ArmTimer {
        /// When.
        due: Time,
        /// Which.
        timer: RunTimer,
    },
    /// A node the run never reached ended (CANCELLED) without an actor: its span is the
    /// supervisor's to record.
    Unreached(Arc<NodeEnd>),
    /// The run's log ([`RunCore::events`]) has a new trace event, `seq`: send it to
    /// subscribers.
    Emitted {
        /// Its sequence number.
        seq: u64,
    },
    /// Record a metric.
    Metric(Metric),
    /// The run ended: publish its result.
    Finish(Arc<RunResult>),
}

/// A metric the run records.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// Nodes waiting for slots, up or down.
    Queued(i64),
    /// Nodes running, up or down.
    Running(i64),
    /// An attempt of `node` ended, failed with `error_type` or completed (`None`).
    Attempt {
        /// The node.
        node: NodeIx,
        /// Its error type.
        error_type: Option<String>,
    },
    /// An attempt of `node` waited `seconds` for its slots, then started.
    QueueWait {
        /// The node.
        node: NodeIx,
        /// From its QUEUED report to its start.
        seconds: f64,
    },
    /// `node` ended as `terminal` after running `seconds`.
    NodeEnded {
        /// The node.
        node: NodeIx,
        /// How.
        terminal: Terminal,
        /// From its first start.
        seconds: f64,
    },
    /// The run ended with `status` after `seconds`.
    RunEnded {
        /// How.
        status: RunStatus,
        /// From its start.
        seconds: f64,
    },
}
