//! Messages the orchestrator receives: run commands from handles, and reports from the
//! run supervisors it owns; and the public types of those commands.

use std::sync::Arc;

use ractor::RpcReplyPort;
use tokio::sync::watch;

use crate::messages::supervisor::{EventFeed, Subscription};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::Graph;
use crate::runtime::journal::StoreError;
use crate::runtime::journal::readback::{ReadBackError, ReadRun};
use crate::runtime::semantics::engine::Refusal;
use crate::runtime::semantics::report::StopKind;
use crate::runtime::semantics::result::{RetainedStats, RunPage, RunQuery, RunResult, RunSnapshot};

/// Options of a submission.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Run id to use; a fresh UUID when absent.
    pub run_id: Option<String>,
    /// A resubmission with the same key returns the existing run.
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` of the caller's trace.
    pub traceparent: Option<String>,
    /// The run's metadata (see [`crate::runtime::semantics::metadata`]).
    pub metadata: Arc<crate::runtime::semantics::metadata::Metadata>,
}

/// What [`crate::Handle::shutdown`] does with runs still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownMode {
    /// Cancel them (running attempts get the grace period), then stop.
    Cancel,
    /// Let them finish, then stop.
    Drain,
    /// Leave them unfinished in the journal, for the next engine on it to resume: no
    /// attempt starts any more, those running get up to `grace` to end (and their ends
    /// are stored), then the engine stops. An attempt still running after `grace` is
    /// lost, as in a crash (the resumed run retries it per its policy). Without a journal
    /// the runs are lost. Attempts are held back and waited for through the engine's
    /// slots: an engine with no cap at all (`maxConcurrentNodes` and every other
    /// unset) runs attempts without it, and they are not waited for.
    Suspend {
        /// Longest the running attempts are waited for.
        grace: std::time::Duration,
    },
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
    /// The idempotency key was used before for another definition or other inputs.
    #[error(
        "idempotency key `{key}` was used for run `{run_id}` with another definition or other inputs"
    )]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The run it started.
        run_id: String,
    },
    /// The engine is shutting down and takes no new runs.
    #[error("the engine is shutting down and takes no new runs")]
    ShuttingDown,
    /// The run's supervisor could not be started.
    #[error("cannot start the run: {0}")]
    Spawn(String),
    /// The run's acceptance could not be stored in the journal (a write failed, and the
    /// journal takes no more until the engine restarts).
    #[error("cannot journal the run: {0}")]
    Journal(String),
    /// An answer to an input request was refused: the request is unknown, was resolved
    /// with another answer, or expired or was cancelled.
    #[error(transparent)]
    Input(#[from] crate::runtime::semantics::gate::ResolveError),
    /// A signal was refused (its payload, its node, or its answer).
    #[error(transparent)]
    Signal(crate::runtime::semantics::inbox::SignalError),
    /// The run has ended: its input requests take no answer.
    #[error("run `{0}` has ended")]
    RunEnded(String),
    /// A finished run the journal holds cannot be read back from it.
    #[error("run `{run_id}` cannot be read back from the journal: {reason}")]
    Unreadable {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
}

/// A signal on its way to a run: its id, when its sender gave one, its name and payload.
#[derive(Debug, Clone)]
pub struct SignalIn {
    /// The sender's id for it.
    pub signal_id: Option<String>,
    /// Its name.
    pub name: String,
    /// What it carries.
    pub payload: serde_json::Value,
}

/// The answer to signal a run that has ended: a repeat of one it took (`taken`: its id) is
/// a duplicate, with no effect; any other comes too late.
pub(crate) fn signal_after_end(
    run_id: &str,
    taken: Option<Arc<str>>,
) -> Result<crate::runtime::semantics::inbox::SignalAck, RunCommandError> {
    match taken {
        Some(signal_id) => Ok(crate::runtime::semantics::inbox::SignalAck {
            signal_id,
            outcome: crate::runtime::semantics::inbox::Signaled::Duplicate,
        }),
        None => Err(RunCommandError::RunEnded(run_id.to_owned())),
    }
}

/// What a successful submission returns.
#[derive(Debug)]
pub(crate) struct Submitted {
    /// The run id.
    pub(crate) run_id: String,
    /// The run existed already: an idempotent retry.
    pub(crate) existing: bool,
    /// Becomes `Some` once the run ends.
    pub(crate) result: watch::Receiver<Option<Arc<RunResult>>>,
    /// With a journal: answered once the run's acceptance is stored.
    pub(crate) stored: Option<tokio::sync::oneshot::Receiver<Result<(), StoreError>>>,
}

/// What the orchestrator receives.
#[derive(Debug)]
pub(crate) enum OrchestratorMsg {
    /// From a handle: start a run of a validated graph.
    Submit {
        /// The validated graph.
        graph: Arc<Graph>,
        /// The definition as JSON text, when the engine journals its runs.
        definition: Option<Arc<str>>,
        /// The run's inputs.
        inputs: JsonObject,
        /// Options.
        options: SubmitOptions,
        /// With an idempotency key: what the key is bound to
        /// ([`crate::runtime::journal::record::submission_fingerprint`]).
        fingerprint: Option<u64>,
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
    /// From a handle: a page of the runs the engine knows, newest first.
    List {
        /// Which runs, from where.
        query: RunQuery,
        /// Reply.
        reply: RpcReplyPort<RunPage>,
    },
    /// From a handle: subscribe to a run's events.
    Events {
        /// Run id.
        run_id: String,
        /// From where, and how far behind the subscriber may fall.
        asked: Subscription,
        /// Reply.
        reply: RpcReplyPort<Result<EventFeed, RunCommandError>>,
    },
    /// From a handle: the graph of a known run.
    Graph {
        /// Run id.
        run_id: String,
        /// Reply.
        reply: RpcReplyPort<Result<Arc<Graph>, RunCommandError>>,
    },
    /// From a handle: the result channel of a known run.
    Watch {
        /// Run id.
        run_id: String,
        /// Reply.
        reply: RpcReplyPort<Result<watch::Receiver<Option<Arc<RunResult>>>, RunCommandError>>,
    },
    /// From a handle: a person answered input request `request_id` of run `run_id`.
    Resolve {
        /// The run the caller says the request belongs to (`None`: whichever made it).
        run_id: Option<String>,
        /// The request.
        request_id: Arc<str>,
        /// The answer.
        resolution: crate::runtime::semantics::gate::Resolution,
        /// What it did, once stored.
        reply: RpcReplyPort<Result<crate::runtime::semantics::gate::Resolved, RunCommandError>>,
    },
    /// From a handle: a page of the input requests across runs.
    Inputs {
        /// Which.
        query: crate::runtime::semantics::requests::InputQuery,
        /// Reply.
        reply: RpcReplyPort<crate::runtime::semantics::requests::InputPage>,
    },
    /// From a handle: one input request.
    Input {
        /// The request.
        request_id: String,
        /// Reply.
        reply: RpcReplyPort<Option<crate::runtime::semantics::requests::Filed>>,
    },
    /// From a supervisor: its run made an input request, or one left `pending` (sent
    /// once the fact is stored, before the request's event is published).
    InputChanged {
        /// The run.
        run_id: String,
        /// The request now.
        request: Arc<crate::runtime::semantics::gate::InputRequest>,
    },
    /// From a handle: a signal for a run's inbox.
    Signal {
        /// Run id.
        run_id: String,
        /// The signal (its id `None`: the run draws one).
        signal: SignalIn,
        /// What it did, once stored.
        reply: RpcReplyPort<Result<crate::runtime::semantics::inbox::SignalAck, RunCommandError>>,
    },
    /// From a supervisor: its run took a signal (not a repeat), so that a repeat after the
    /// run's end is answered as one.
    SignalTaken {
        /// The run.
        run_id: String,
        /// The signal's id.
        signal_id: Arc<str>,
    },
    /// From a handle: cancel or terminate a run.
    Stop {
        /// Run id.
        run_id: String,
        /// How.
        kind: StopKind,
        /// Reply.
        reply: RpcReplyPort<Result<bool, RunCommandError>>,
    },
    /// From a supervisor: its run ended with this result and these events.
    RunEnded {
        /// The result.
        result: Arc<RunResult>,
        /// The run's trace, when it has one.
        trace_id: Option<String>,
        /// Every event of the run.
        events: Arc<Vec<crate::runtime::semantics::event::TraceEvent>>,
        /// What the result and the events take as JSON (the orchestrator's bound on the
        /// finished runs it keeps, `retainedBytes`).
        bytes: usize,
    },
    /// From a handle: queue depth and active attempts, engine-wide.
    Slots(RpcReplyPort<crate::runtime::guardrails::slots::SlotStats>),
    /// From a handle: answer once no attempt holds or waits for a slot.
    SlotsIdle(RpcReplyPort<()>),
    /// From a suspending handle: take no new runs and start no attempt; answer once no
    /// attempt holds a slot.
    Quiesce(RpcReplyPort<()>),
    /// From a suspending handle: answer once every live supervisor has handled what its
    /// mailbox holds and committed its facts.
    SyncRuns(RpcReplyPort<()>),
    /// From a handle: take no new runs, cancel or drain the live ones, answer once every
    /// run ended and every supervisor stopped, then stop.
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
    /// From the orchestrator's own reading task: a finished run no longer kept in memory,
    /// read back from the journal for the questions waiting on it, or why it could not be.
    Reloaded {
        /// The run.
        run_id: String,
        /// The run read back, or why not.
        outcome: Result<ReadRun, ReadBackError>,
    },
    /// From a handle: what the finished runs kept in memory weigh.
    Retained(RpcReplyPort<RetainedStats>),
}

impl RunCommandError {
    /// What the submitter is told of the engine core's refusal.
    pub(crate) fn refused(refusal: Refusal) -> RunCommandError {
        match refusal {
            Refusal::ShuttingDown => RunCommandError::ShuttingDown,
            Refusal::Overloaded { active, limit } => RunCommandError::Overloaded { active, limit },
            Refusal::MissingInputs(missing) => RunCommandError::InvalidInputs(format!(
                "missing required runtime inputs: {}",
                missing.join(", ")
            )),
            Refusal::DuplicateRun(run_id) => RunCommandError::DuplicateRun(run_id),
            Refusal::IdempotencyConflict { key, run_id } => {
                RunCommandError::IdempotencyConflict { key, run_id }
            }
        }
    }
}
