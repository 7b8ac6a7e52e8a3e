//! Messages the orchestrator receives: run commands from handles, and reports from the
//! run supervisors it owns; and the public types of those commands.

use std::sync::Arc;

use ractor::RpcReplyPort;
use tokio::sync::watch;

use crate::messages::result::{RunResult, RunSnapshot};
use crate::messages::supervisor::{EventFeed, StopKind};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::Graph;

/// Options of a submission.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Run id to use; a fresh UUID when absent.
    pub run_id: Option<String>,
    /// A resubmission with the same key returns the existing run.
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` of the caller's trace.
    pub traceparent: Option<String>,
}

/// What [`crate::Handle::shutdown`] does with runs still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownMode {
    /// Cancel them (running attempts get the grace period), then stop.
    Cancel,
    /// Let them finish, then stop.
    Drain,
}

/// Why a command about a run could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunCommandError {
    /// No run has this id.
    #[error("no run with id `{0}`")]
    UnknownRun(String),
    /// A run with this id exists already.
    #[error("a run with id `{0}` exists already")]
    DuplicateRun(String),
    /// The run's inputs do not match the entrypoint's declared runtime inputs.
    #[error("invalid run inputs: {0}")]
    InvalidInputs(String),
    /// The engine runs as many runs as its admission limit allows.
    #[error("too many runs in progress ({active}, the limit is {limit}); retry later")]
    Overloaded {
        /// Runs in progress.
        active: usize,
        /// `maxActiveRuns`.
        limit: usize,
    },
    /// The engine is shutting down and takes no new runs.
    #[error("the engine is shutting down and takes no new runs")]
    ShuttingDown,
    /// The run's supervisor could not be started.
    #[error("cannot start the run: {0}")]
    Spawn(String),
    /// The run's acceptance could not be stored in the journal.
    #[error("cannot journal the run: {0}")]
    Journal(String),
}

/// What a successful submission returns.
#[derive(Debug)]
pub(crate) struct Submitted {
    /// The run id.
    pub(crate) run_id: String,
    /// Becomes `Some` once the run ends.
    pub(crate) result: watch::Receiver<Option<Arc<RunResult>>>,
    /// With a journal: answered once the run's acceptance is stored.
    pub(crate) stored: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
}

/// What the orchestrator receives.
#[derive(Debug)]
pub(crate) enum OrchestratorMsg {
    /// From a handle: start a run of a validated graph.
    Submit {
        /// The validated graph.
        graph: Arc<Graph>,
        /// The definition as JSON text, when the engine journals its runs.
        definition: Option<String>,
        /// The run's inputs.
        inputs: JsonObject,
        /// Options.
        options: SubmitOptions,
        /// Reply.
        reply: RpcReplyPort<Result<Submitted, RunCommandError>>,
    },
    /// From a handle: the current state of a run.
    Status {
        /// Run id.
        run_id: String,
        /// Reply.
        reply: RpcReplyPort<Result<RunSnapshot, RunCommandError>>,
    },
    /// From a handle: subscribe to a run's events.
    Events {
        /// Run id.
        run_id: String,
        /// Reply.
        reply: RpcReplyPort<Result<EventFeed, RunCommandError>>,
    },
    /// From a handle: the result channel of a known run.
    Watch {
        /// Run id.
        run_id: String,
        /// Reply.
        reply: RpcReplyPort<Result<watch::Receiver<Option<Arc<RunResult>>>, RunCommandError>>,
    },
    /// From a handle: cancel or terminate a run.
    Stop {
        /// Run id.
        run_id: String,
        /// How.
        kind: StopKind,
        /// Reply.
        reply: RpcReplyPort<Result<(), RunCommandError>>,
    },
    /// From a supervisor: its run ended with this result and these events.
    RunEnded {
        /// The result.
        result: Arc<RunResult>,
        /// Every event of the run.
        events: Arc<Vec<crate::messages::event::TraceEvent>>,
    },
    /// From a handle: queue depth and active attempts, engine-wide.
    Slots(RpcReplyPort<crate::messages::limiter::SlotStats>),
    /// From a handle: answer once no attempt holds or waits for a slot.
    SlotsIdle(RpcReplyPort<()>),
    /// From a handle: take no new runs, cancel or drain the live ones, answer once every
    /// run ended and every supervisor and the limiter stopped, then stop.
    Shutdown {
        /// Cancel or drain.
        mode: ShutdownMode,
        /// Answered when done.
        reply: RpcReplyPort<()>,
    },
    /// From the orchestrator itself, after a supervisor exited: re-checked through the
    /// queue so that a `RunEnded` sent before the exit is handled first.
    SupervisorExited {
        /// The run.
        run_id: String,
        /// Why it exited.
        cause: String,
    },
    /// From a chaos test: kill the slot limiter (it is restarted).
    #[cfg(feature = "chaos")]
    KillLimiter,
}
