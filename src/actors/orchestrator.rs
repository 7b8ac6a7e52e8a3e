//! The orchestrator actor: accepts runs, owns the run registry, spawns one supervisor per
//! run, and keeps finished runs' results and events for later queries.
//!
//! Finished runs are kept whole in memory within `retainedRuns`, `retainedNodes` and
//! `retainedBytes`; past that, a run the journal still holds is kept by its summary only
//! (listings show it) and read back from the journal, off the actor, when a question
//! needs its result, trace or graph.
//!
//! If a supervisor dies before reporting its result, the orchestrator ends that run
//! FAILED with the cause, so a run always reaches a terminal status; other runs carry on.
//! If the slot limiter dies, it is restarted and every live run told, so that slots held
//! and waited for carry over (see `actors::limiter`). A shutdown takes no new runs,
//! cancels or drains the live ones, and completes once every supervisor and the limiter
//! have stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::{oneshot, watch};

use std::sync::atomic::AtomicU64;

use crate::actors::clock;
use crate::actors::limiter::{LimiterActor, LimiterArgs};
use crate::actors::supervisor::{RunSupervisor, SupervisorArgs};
use crate::messages::limiter::{LimiterLink, Question};
use crate::messages::orchestrator::{
    OrchestratorMsg, ReloadedRun, RetainedStats, RunCommandError, RunPage, RunQuery, RunSummary,
    ShutdownMode, SubmitOptions, Submitted,
};
use crate::messages::supervisor::{EventFeed, Subscription, SupervisorMsg};
use crate::runtime::components::builtin::missing_runtime_inputs;
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::Graph;
use crate::runtime::definition::limits::json_len_within;
use crate::runtime::definition::parse::{Format, parse_definition};
use crate::runtime::definition::validate::validate;
use crate::runtime::guardrails::config::EngineConfig;
use crate::runtime::journal::record::{self, AcceptedRecord, RunHeader};
use crate::runtime::journal::replay;
use crate::runtime::journal::store::{Op, StoreError};
use crate::runtime::journal::writer::AckSink;
use crate::runtime::journal::{FinishedRun, Journal, Scanned, StoredRunLog};
use crate::runtime::semantics::event::TraceEvent;
use crate::runtime::semantics::outcome::RunStatus;
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::report::StopKind;
use crate::runtime::semantics::result::{RunResult, RunSnapshot};
use crate::runtime::semantics::time::Time;
use crate::runtime::telemetry::Metrics;
use crate::runtime::timestamp::Timestamp;

/// The orchestrator's behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrchestratorActor;

/// Start-up arguments.
#[derive(Debug)]
pub(crate) struct OrchestratorArgs {
    /// Engine settings.
    pub(crate) config: EngineConfig,
    /// Components.
    pub(crate) registry: Arc<ComponentRegistry>,
    /// The journal, when runs are journaled.
    pub(crate) journal: Option<Journal>,
    /// What the journal held at start.
    pub(crate) stored: Vec<Scanned>,
    /// The link to the slot limiter the orchestrator spawns.
    pub(crate) limiter: LimiterLink,
}

/// A run the orchestrator knows.
#[derive(Debug)]
enum RunEntry {
    /// Its supervisor is alive.
    Live {
        supervisor: ActorRef<SupervisorMsg>,
        result_tx: watch::Sender<Option<Arc<RunResult>>>,
        info: RunInfo,
    },
    /// It ended.
    Done {
        result: Arc<RunResult>,
        events: Arc<Vec<TraceEvent>>,
        result_tx: watch::Sender<Option<Arc<RunResult>>>,
        info: RunInfo,
    },
    /// It ended, and only the journal holds its result, trace and graph: read back when
    /// a question needs them (its result channel gets the result then).
    Stored {
        summary: RunSummary,
        order: u64,
        trace_id: Option<String>,
        result_tx: watch::Sender<Option<Arc<RunResult>>>,
        /// A reading task is under way.
        loading: bool,
    },
}

impl RunEntry {
    /// A finished run known by its summary, its result channel waiting for the reading.
    fn stored(summary: RunSummary, order: u64, trace_id: Option<String>) -> RunEntry {
        RunEntry::Stored {
            summary,
            order,
            trace_id,
            result_tx: watch::channel(None).0,
            loading: false,
        }
    }

    /// The same run known by its summary only.
    fn into_stored(self, run_id: &str) -> RunEntry {
        let summary = self.summary(run_id);
        match self {
            RunEntry::Live { info, .. } | RunEntry::Done { info, .. } => {
                RunEntry::stored(summary, info.order, info.trace_id)
            }
            stored @ RunEntry::Stored { .. } => stored,
        }
    }

    /// Its place in the acceptance order.
    fn order(&self) -> u64 {
        match self {
            RunEntry::Live { info, .. } | RunEntry::Done { info, .. } => info.order,
            RunEntry::Stored { order, .. } => *order,
        }
    }

    fn summary(&self, run_id: &str) -> RunSummary {
        match self {
            RunEntry::Stored { summary, .. } => summary.clone(),
            RunEntry::Live { info, .. } => RunSummary {
                run_id: run_id.to_owned(),
                title: info.graph.title.clone(),
                status: RunStatus::Running,
                started_at: info.started_at,
                completed_at: None,
            },
            RunEntry::Done { result, .. } => RunSummary {
                run_id: run_id.to_owned(),
                title: result.title.clone(),
                status: result.status,
                started_at: result.started_at,
                completed_at: Some(result.completed_at),
            },
        }
    }
}

/// What the orchestrator keeps about every run it knows, live or ended.
#[derive(Debug, Clone)]
struct RunInfo {
    /// Its place in the order runs were accepted (listings are newest first).
    order: u64,
    /// Its graph (its title; the run view draws it after the run ends too).
    graph: Arc<Graph>,
    /// When it was accepted.
    started_at: Timestamp,
    /// Its trace, once known (from its supervisor at its end, or its `traceparent`).
    trace_id: Option<String>,
}

/// The orchestrator's state.
#[derive(Debug)]
pub(crate) struct OrchestratorState {
    config: EngineConfig,
    registry: Arc<ComponentRegistry>,
    runs: HashMap<String, RunEntry>,
    by_supervisor: HashMap<ractor::ActorId, String>,
    /// Idempotency keys: the run each started, and what the key is bound to.
    idempotency: HashMap<String, (String, Option<u64>)>,
    /// The next run's place in the acceptance order.
    next_order: u64,
    /// Finished runs kept, oldest first, with their node counts.
    finished: VecDeque<(String, Weight)>,
    /// Node records of the finished runs kept.
    finished_nodes: usize,
    /// What those runs' results and traces weigh, as JSON.
    finished_bytes: usize,
    limiter: LimiterLink,
    tickets: Arc<AtomicU64>,
    next_run_key: u64,
    live: usize,
    pending: HashMap<String, Vec<Pending>>,
    metrics: Arc<Metrics>,
    /// Set once a shutdown began: answered when every run ended and every actor stopped.
    closing: Option<Vec<RpcReplyPort<()>>>,
    /// The engine is suspending ([`ShutdownMode::Suspend`]): no new run is taken.
    suspending: bool,
    /// The journal, when runs are journaled.
    journal: Option<Journal>,
    /// Finished runs still in the journal, oldest first, with when they ended.
    journaled: VecDeque<(String, Time)>,
    /// This actor, for the tasks that read runs back to report to.
    myself: ActorRef<OrchestratorMsg>,
}

impl Actor for OrchestratorActor {
    type Msg = OrchestratorMsg;
    type State = OrchestratorState;
    type Arguments = OrchestratorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        args: OrchestratorArgs,
    ) -> Result<OrchestratorState, ActorProcessingErr> {
        let engine_cap = args.config.max_concurrent_nodes;
        let limiter = spawn_limiter(&myself, engine_cap, args.limiter).await?;
        let mut state = OrchestratorState {
            limiter,
            tickets: Arc::new(AtomicU64::new(1)),
            next_run_key: 1,
            live: 0,
            pending: HashMap::new(),
            metrics: Arc::new(Metrics::from_global()),
            config: args.config,
            registry: args.registry,
            runs: HashMap::new(),
            by_supervisor: HashMap::new(),
            idempotency: HashMap::new(),
            next_order: 1,
            finished: VecDeque::new(),
            finished_nodes: 0,
            finished_bytes: 0,
            closing: None,
            suspending: false,
            journal: args.journal,
            journaled: VecDeque::new(),
            myself: myself.clone(),
        };
        resume_all(&myself, &mut state, args.stored).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        message: OrchestratorMsg,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        // Reply errors below mean the asker stopped waiting; nothing is owed to it then.
        match message {
            OrchestratorMsg::Submit {
                graph,
                definition,
                inputs,
                options,
                fingerprint,
                reply,
            } => {
                let submission = Submission {
                    graph,
                    definition,
                    inputs,
                    options,
                    fingerprint,
                };
                let outcome = submit(&myself, state, submission).await;
                let _ = reply.send(outcome);
            }
            OrchestratorMsg::Status { run_id, reply } => status(state, run_id, reply),
            OrchestratorMsg::List { query, reply } => {
                let _ = reply.send(list(state, &query));
            }
            OrchestratorMsg::Events {
                run_id,
                asked,
                reply,
            } => events(state, run_id, asked, reply),
            OrchestratorMsg::Graph { run_id, reply } => graph(state, run_id, reply),
            OrchestratorMsg::Watch { run_id, reply } => {
                let rx = state
                    .runs
                    .get(&run_id)
                    .map(entry_result_rx)
                    .ok_or_else(|| RunCommandError::UnknownRun(run_id.clone()));
                // A stored run's channel gets its result once it is read back.
                reload(state, &run_id);
                let _ = reply.send(rx);
            }
            OrchestratorMsg::Reloaded { run_id, outcome } => reloaded(state, run_id, outcome),
            OrchestratorMsg::Retained(reply) => {
                let _ = reply.send(RetainedStats {
                    runs: state.finished.len(),
                    nodes: state.finished_nodes,
                    bytes: state.finished_bytes,
                    stored: state
                        .runs
                        .values()
                        .filter(|e| matches!(e, RunEntry::Stored { .. }))
                        .count(),
                });
            }
            OrchestratorMsg::Stop {
                run_id,
                kind,
                reply,
            } => {
                let _ = reply.send(stop(state, &run_id, kind));
            }
            OrchestratorMsg::RunEnded {
                result,
                trace_id,
                events,
                bytes,
            } => run_ended(state, result, trace_id, events, bytes),
            // The limiter answers the handle directly.
            OrchestratorMsg::SlotsIdle(reply) => state.limiter.ask(Question::Idle(reply)),
            OrchestratorMsg::Slots(reply) => state.limiter.ask(Question::Stats(reply)),
            OrchestratorMsg::Quiesce(reply) => {
                state.suspending = true;
                state.limiter.pause();
                state.limiter.ask(Question::Quiet(reply));
            }
            OrchestratorMsg::SyncRuns(reply) => sync_runs(state, reply),
            OrchestratorMsg::Shutdown { mode, reply } => shutdown(state, mode, reply),
            OrchestratorMsg::SupervisorExited { run_id, cause } => {
                supervisor_exited(state, &run_id, &cause);
            }
            #[cfg(feature = "chaos")]
            OrchestratorMsg::KillLimiter => state.limiter.get().iter().for_each(|l| l.kill()),
        }
        maybe_closed(&myself, state).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        event: SupervisionEvent,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((id, cause)) = exit_of(event) else {
            return Ok(());
        };
        if state.limiter.get().is_some_and(|l| l.get_id() == id) {
            return restart_limiter(&myself, state, &cause).await;
        }
        if let Some(run_id) = state.by_supervisor.remove(&id) {
            // Re-checked through the queue, behind a RunEnded sent before the exit.
            let _ = myself.cast(OrchestratorMsg::SupervisorExited { run_id, cause });
        }
        maybe_closed(&myself, state).await;
        Ok(())
    }
}

/// Which child exited, and why; `None` for other supervision events.
fn exit_of(event: SupervisionEvent) -> Option<(ActorId, String)> {
    match event {
        SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell.get_id(),
            reason.unwrap_or_else(|| "the run supervisor stopped".into()),
        )),
        SupervisionEvent::ActorFailed(cell, err) => {
            Some((cell.get_id(), format!("the run supervisor died: {err}")))
        }
        _ => None,
    }
}

/// Spawns the slot limiter, linked, and points `link` at it.
async fn spawn_limiter(
    myself: &ActorRef<OrchestratorMsg>,
    engine_cap: Option<u32>,
    link: LimiterLink,
) -> Result<LimiterLink, ActorProcessingErr> {
    let args = LimiterArgs {
        engine_cap,
        link: link.clone(),
    };
    let (limiter, _) = Actor::spawn_linked(None, LimiterActor, args, myself.get_cell()).await?;
    link.replace(limiter);
    Ok(link)
}

/// The limiter died: a new one takes its place (adopting the link's ledger of grants
/// held), and every live run is told, so nodes ask again for the slots they wait for.
async fn restart_limiter(
    myself: &ActorRef<OrchestratorMsg>,
    state: &mut OrchestratorState,
    cause: &str,
) -> Result<(), ActorProcessingErr> {
    if state.closing.is_some() && state.live == 0 {
        return Ok(()); // stopped by the shutdown
    }
    tracing::error!(target: "shipsec::engine", cause, "the slot limiter died; restarting it");
    let link = state.limiter.clone();
    spawn_limiter(myself, state.config.max_concurrent_nodes, link).await?;
    for entry in state.runs.values() {
        if let RunEntry::Live { supervisor, .. } = entry {
            // A supervisor that is gone has no nodes left to tell.
            let _ = supervisor.cast(SupervisorMsg::LimiterRestarted);
        }
    }
    Ok(())
}

/// Begins a shutdown: no new runs; live ones cancelled or left to finish.
fn shutdown(state: &mut OrchestratorState, mode: ShutdownMode, reply: RpcReplyPort<()>) {
    state.closing.get_or_insert_with(Vec::new).push(reply);
    if mode == ShutdownMode::Cancel {
        for entry in state.runs.values() {
            if let RunEntry::Live { supervisor, .. } = entry {
                // A supervisor that is stopping has already ended its run.
                let _ = supervisor.cast(SupervisorMsg::Stop(StopKind::Cancel));
            }
        }
    }
}

/// Asks every live supervisor to commit what it has, and answers `reply` once all have
/// (from a task: the orchestrator goes on with its mailbox meanwhile).
fn sync_runs(state: &OrchestratorState, reply: RpcReplyPort<()>) {
    let supervisors: Vec<_> = state
        .runs
        .values()
        .filter_map(|e| match e {
            RunEntry::Live { supervisor, .. } => Some(supervisor.clone()),
            RunEntry::Done { .. } | RunEntry::Stored { .. } => None,
        })
        .collect();
    tokio::spawn(async move {
        for supervisor in supervisors {
            // A supervisor that is gone has committed on its way out.
            let _ = ractor::call!(supervisor, SupervisorMsg::Sync);
        }
        let _ = reply.send(());
    });
}

/// Completes a shutdown once every run ended and every supervisor exited: the limiter
/// stops, the callers are answered, the orchestrator stops.
async fn maybe_closed(myself: &ActorRef<OrchestratorMsg>, state: &mut OrchestratorState) {
    if state.closing.is_none() || state.live > 0 || !state.by_supervisor.is_empty() {
        return;
    }
    if let Some(limiter) = state.limiter.get() {
        // A limiter that already stopped needs no waiting for.
        let _ = limiter.stop_and_wait(None, None).await;
    }
    for reply in state.closing.take().into_iter().flatten() {
        // A caller that stopped waiting needs no answer.
        let _ = reply.send(());
    }
    myself.stop(None);
}

/// A submission, as a handle sent it.
struct Submission {
    graph: Arc<Graph>,
    definition: Option<String>,
    inputs: JsonObject,
    options: SubmitOptions,
    fingerprint: Option<u64>,
}

async fn submit(
    myself: &ActorRef<OrchestratorMsg>,
    state: &mut OrchestratorState,
    submission: Submission,
) -> Result<Submitted, RunCommandError> {
    let Submission {
        graph,
        definition,
        inputs,
        options,
        fingerprint,
    } = submission;
    if let Some(existing) = idempotent_run(state, &options, fingerprint)? {
        reload(state, &existing.run_id);
        return Ok(existing);
    }
    admit(state, &graph, &inputs)?;
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if state.runs.contains_key(&run_id) {
        return Err(RunCommandError::DuplicateRun(run_id));
    }
    let (result_tx, result_rx) = watch::channel(None);
    let info = new_info(state, &graph, Timestamp::now(), None);
    let (journal, stored) = match (&state.journal, definition) {
        (Some(journal), Some(definition)) => {
            let header = accepted_header(&run_id, &graph, definition, &inputs, &options);
            let (sink, stored) = StoredSink::pair();
            let op = Op::PutRun {
                run_id: run_id.as_str().into(),
                value: record::encode(&header),
            };
            journal.append(op, Some((sink, 1)));
            (Some((journal.clone(), header)), Some(stored))
        }
        _ => (None, None),
    };
    let mut args = supervisor_args(myself, state, &run_id, graph, inputs, &options, &result_tx);
    args.journal = journal;
    let key = options.idempotency_key.map(|k| (k, fingerprint));
    start_run(myself, state, &run_id, args, result_tx, info, key)
        .await
        .map_err(RunCommandError::Spawn)?;
    Ok(Submitted {
        run_id,
        existing: false,
        result: result_rx,
        stored,
    })
}

/// The journal header of a new run.
fn accepted_header(
    run_id: &str,
    graph: &Graph,
    definition: String,
    inputs: &JsonObject,
    options: &SubmitOptions,
) -> RunHeader {
    RunHeader {
        accepted: AcceptedRecord {
            run_id: run_id.to_owned(),
            definition_hash: record::definition_hash(&definition),
            definition,
            // A JSON object always serialises.
            inputs: serde_json::to_string(inputs).expect("inputs serialise"),
            idempotency_key: options.idempotency_key.clone(),
            traceparent: options.traceparent.clone(),
            accepted_at: clock::now().as_micros(),
            nodes: graph.len() as u32,
        },
        finished: None,
    }
}

/// Tells a submitter that its run's acceptance is stored.
#[derive(Debug)]
struct StoredSink(std::sync::Mutex<Option<oneshot::Sender<Result<(), String>>>>);

impl StoredSink {
    fn pair() -> (Arc<dyn AckSink>, oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = oneshot::channel();
        (Arc::new(StoredSink(std::sync::Mutex::new(Some(tx)))), rx)
    }

    fn answer(&self, outcome: Result<(), String>) {
        let tx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            // A submitter that stopped waiting needs no answer.
            let _ = tx.send(outcome);
        }
    }
}

impl AckSink for StoredSink {
    fn durable(&self, _upto: u64) {
        self.answer(Ok(()));
    }

    fn failed(&self, error: &StoreError) {
        self.answer(Err(error.to_string()));
    }
}

/// Resumes every unfinished run the journal held at start; finished ones are read back
/// for queries (their result and trace, folded from their facts) and kept for retention.
async fn resume_all(
    myself: &ActorRef<OrchestratorMsg>,
    state: &mut OrchestratorState,
    stored: Vec<Scanned>,
) -> Result<(), ActorProcessingErr> {
    let Some(journal) = state.journal.clone() else {
        return Ok(());
    };
    let mut finished = Vec::new();
    for run in stored {
        match run {
            Scanned::Finished(run) => finished.push(run),
            Scanned::Unfinished(log) => resume_run(myself, state, &journal, log).await?,
        }
    }
    // Known by their summaries, in the order they ended; read back when asked for.
    finished.sort_by_key(|run| run.finished.finished_at);
    for run in finished {
        let at = Time::from_micros(run.finished.finished_at);
        let run_id = run.run_id.clone();
        store_finished(state, run);
        state.journaled.push_back((run_id, at));
    }
    purge_journal(state);
    Ok(())
}

/// Records a finished run the journal holds by its summary.
fn store_finished(state: &mut OrchestratorState, run: FinishedRun) {
    let order = state.next_order;
    state.next_order += 1;
    let status = RunStatus::parse(&run.finished.status).unwrap_or(RunStatus::Failed);
    let summary = RunSummary {
        run_id: run.run_id.clone(),
        title: run.title,
        status,
        started_at: Time::from_micros(run.accepted_at).timestamp(),
        completed_at: Some(Time::from_micros(run.finished.finished_at).timestamp()),
    };
    if let Some((key, fingerprint)) = run.idempotency {
        state
            .idempotency
            .insert(key, (run.run_id.clone(), Some(fingerprint)));
    }
    let trace_id = run
        .traceparent
        .as_deref()
        .and_then(crate::runtime::telemetry::traceparent_trace_id);
    state
        .runs
        .insert(run.run_id, RunEntry::stored(summary, order, trace_id));
}

/// What a journaled run was submitted with: its graph, inputs and options.
fn stored_submission(
    registry: &ComponentRegistry,
    accepted: &AcceptedRecord,
) -> Result<(Graph, JsonObject, SubmitOptions), String> {
    let fail = |reason: String| format!("run `{}` cannot be read back: {reason}", accepted.run_id);
    let definition = parse_definition(&accepted.definition, Format::Json)
        .map_err(|e| fail(format!("its definition does not parse: {e}")))?;
    let graph = validate(&definition, registry)
        .map_err(|e| fail(format!("its definition is no longer valid here: {e}")))?;
    let inputs: JsonObject = serde_json::from_str(&accepted.inputs)
        .map_err(|e| fail(format!("its inputs do not parse: {e}")))?;
    let options = SubmitOptions {
        run_id: Some(accepted.run_id.clone()),
        idempotency_key: accepted.idempotency_key.clone(),
        traceparent: accepted.traceparent.clone(),
    };
    Ok((graph, inputs, options))
}

/// A new run's entry in the acceptance order.
fn new_info(
    state: &mut OrchestratorState,
    graph: &Arc<Graph>,
    started_at: Timestamp,
    trace_id: Option<String>,
) -> RunInfo {
    let order = state.next_order;
    state.next_order += 1;
    RunInfo {
        order,
        graph: graph.clone(),
        started_at,
        trace_id,
    }
}

/// Reads a finished run back from the journal and replays its result and trace: the
/// work of a blocking task, never of the actor.
fn read_back(
    journal: &Journal,
    registry: &Arc<ComponentRegistry>,
    config: &EngineConfig,
    run_id: &str,
) -> Result<ReloadedRun, String> {
    let log = journal
        .read_run(run_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("run `{run_id}` is no longer in the journal"))?;
    let (graph, inputs, _) = stored_submission(registry, &log.header.accepted)?;
    let plan = Arc::new(RunPlan::for_replay(
        run_id,
        Arc::new(graph),
        registry.clone(),
        Arc::new(inputs),
        config.limits.max_output_bytes,
        config.cancel_grace,
    ));
    let (result, events) = replay::finished_run(plan.clone(), &log.facts)
        .map_err(|e| format!("run `{run_id}` cannot be read back: {e}"))?;
    Ok(ReloadedRun {
        bytes: retained_bytes(&result, &events),
        result,
        events: Arc::new(events),
        graph: plan.graph.clone(),
    })
}

/// Starts reading `run_id` back from the journal when it is known by its summary only
/// and no reading is under way; the questions about it wait in `pending`.
fn reload(state: &mut OrchestratorState, run_id: &str) {
    let Some(RunEntry::Stored { loading, .. }) = state.runs.get_mut(run_id) else {
        return;
    };
    let Some(journal) = state.journal.clone() else {
        return;
    };
    if std::mem::replace(loading, true) {
        return;
    }
    let (registry, config) = (state.registry.clone(), state.config.clone());
    let (myself, run_id) = (state.myself.clone(), run_id.to_owned());
    tokio::task::spawn_blocking(move || {
        let outcome = read_back(&journal, &registry, &config, &run_id);
        // An orchestrator that stopped meanwhile has nobody left to answer.
        let _ = myself.cast(OrchestratorMsg::Reloaded { run_id, outcome });
    });
}

/// A run read back: kept whole again (within the bounds, as if it had just ended) and
/// its questions answered; one that cannot be read is forgotten, and its questions and
/// result watchers told.
fn reloaded(state: &mut OrchestratorState, run_id: String, outcome: Result<ReloadedRun, String>) {
    let Some(RunEntry::Stored { .. }) = state.runs.get(&run_id) else {
        // Purged from the journal meanwhile: the questions learn it is gone.
        answer_pending(state, &run_id);
        return;
    };
    let Some(RunEntry::Stored {
        summary,
        order,
        trace_id,
        result_tx,
        ..
    }) = state.runs.remove(&run_id)
    else {
        return;
    };
    match outcome {
        Ok(run) => {
            result_tx.send_replace(Some(run.result.clone()));
            let weight = Weight {
                nodes: run.result.nodes.len(),
                bytes: run.bytes,
            };
            let info = RunInfo {
                order,
                graph: run.graph,
                started_at: summary.started_at,
                trace_id,
            };
            let entry = RunEntry::Done {
                result: run.result,
                events: run.events,
                result_tx,
                info,
            };
            state.runs.insert(run_id.clone(), entry);
            answer_pending(state, &run_id);
            remember_finished(state, run_id, weight);
        }
        Err(e) => {
            tracing::warn!(target: "shipsec::journal", run_id = %run_id, "{e}");
            state.idempotency.retain(|_, (id, _)| *id != run_id);
            if let Some(pending) = state.pending.remove(&run_id) {
                for question in pending {
                    question.refuse(RunCommandError::Unreadable {
                        run_id: run_id.clone(),
                        reason: e.clone(),
                    });
                }
            }
        }
    }
}

/// Starts the supervisor of a run read back from the journal.
async fn resume_run(
    myself: &ActorRef<OrchestratorMsg>,
    state: &mut OrchestratorState,
    journal: &Journal,
    log: StoredRunLog,
) -> Result<(), ActorProcessingErr> {
    let run_id = log.header.accepted.run_id.clone();
    let (graph, inputs, options) = stored_submission(&state.registry, &log.header.accepted)?;
    let (result_tx, _) = watch::channel(None);
    let accepted_at = Time::from_micros(log.header.accepted.accepted_at).timestamp();
    let graph = Arc::new(graph);
    let info = new_info(state, &graph, accepted_at, None);
    let key = log
        .header
        .accepted
        .idempotency()
        .map(|(key, fingerprint)| (key, Some(fingerprint)));
    let mut args = supervisor_args(myself, state, &run_id, graph, inputs, &options, &result_tx);
    args.journal = Some((journal.clone(), log.header));
    args.resume = Some(log.facts);
    start_run(myself, state, &run_id, args, result_tx, info, key)
        .await
        .map_err(|e| format!("run `{run_id}` cannot be resumed: {e}"))?;
    Ok(())
}

/// Spawns a run's supervisor and records the run as live.
async fn start_run(
    myself: &ActorRef<OrchestratorMsg>,
    state: &mut OrchestratorState,
    run_id: &str,
    args: SupervisorArgs,
    result_tx: watch::Sender<Option<Arc<RunResult>>>,
    info: RunInfo,
    key: Option<(String, Option<u64>)>,
) -> Result<(), String> {
    let (supervisor, _) = Actor::spawn_linked(None, RunSupervisor, args, myself.get_cell())
        .await
        .map_err(|e| e.to_string())?;
    let entry = RunEntry::Live {
        supervisor,
        result_tx,
        info,
    };
    register(state, run_id, entry, key);
    Ok(())
}

/// Purges the oldest finished runs from the journal past its retention.
fn purge_journal(state: &mut OrchestratorState) {
    let Some(journal) = &state.journal else {
        return;
    };
    let config = &state.config.journal;
    let now = clock::now();
    while let Some((run_id, at)) = state.journaled.front() {
        let expired = now.since(*at) > config.retention();
        if state.journaled.len() <= config.retained_runs && !expired {
            break;
        }
        journal.append(
            Op::DeleteRun {
                run_id: run_id.as_str().into(),
            },
            None,
        );
        // Known by its summary only: nothing is left to answer from.
        if matches!(state.runs.get(run_id), Some(RunEntry::Stored { .. })) {
            let run_id = run_id.clone();
            state.runs.remove(&run_id);
            state.idempotency.retain(|_, (id, _)| *id != run_id);
        }
        state.journaled.pop_front();
    }
}

/// The run an earlier submit with the same idempotency key started, if it is known; a
/// conflict when that submit had another definition or other inputs.
fn idempotent_run(
    state: &OrchestratorState,
    options: &SubmitOptions,
    fingerprint: Option<u64>,
) -> Result<Option<Submitted>, RunCommandError> {
    let Some(key) = options.idempotency_key.as_ref() else {
        return Ok(None);
    };
    let Some((existing, bound)) = state.idempotency.get(key) else {
        return Ok(None);
    };
    let Some(entry) = state.runs.get(existing) else {
        return Ok(None);
    };
    let same_id = options.run_id.as_ref().is_none_or(|id| id == existing);
    if !same_id || (bound.is_some() && fingerprint.is_some() && *bound != fingerprint) {
        return Err(RunCommandError::IdempotencyConflict {
            key: key.clone(),
            run_id: existing.clone(),
        });
    }
    Ok(Some(Submitted {
        run_id: existing.clone(),
        existing: true,
        result: entry_result_rx(entry),
        stored: None,
    }))
}

/// Refuses a run while shutting down, past the admission limit, or without its required
/// runtime inputs.
fn admit(
    state: &OrchestratorState,
    graph: &Graph,
    inputs: &JsonObject,
) -> Result<(), RunCommandError> {
    if state.closing.is_some() || state.suspending {
        return Err(RunCommandError::ShuttingDown);
    }
    if state.live >= state.config.max_active_runs {
        return Err(RunCommandError::Overloaded {
            active: state.live,
            limit: state.config.max_active_runs,
        });
    }
    let Some(entry) = graph.entrypoint else {
        return Ok(());
    };
    let missing = missing_runtime_inputs(&graph.node(entry).params, inputs);
    if missing.is_empty() {
        return Ok(());
    }
    Err(RunCommandError::InvalidInputs(format!(
        "missing required runtime inputs: {}",
        missing.join(", ")
    )))
}

/// What a new run's supervisor starts from (and the run's key in the slot book).
fn supervisor_args(
    myself: &ActorRef<OrchestratorMsg>,
    state: &mut OrchestratorState,
    run_id: &str,
    graph: Arc<Graph>,
    inputs: JsonObject,
    options: &SubmitOptions,
    result_tx: &watch::Sender<Option<Arc<RunResult>>>,
) -> SupervisorArgs {
    let key = state.next_run_key;
    state.next_run_key += 1;
    SupervisorArgs {
        run_id: run_id.into(),
        graph,
        registry: state.registry.clone(),
        inputs: Arc::new(inputs),
        config: state.config.clone(),
        seed: RunPlan::seed_for(run_id),
        result_tx: result_tx.clone(),
        orchestrator: Some(myself.clone()),
        limiter: Some((state.limiter.clone(), state.tickets.clone(), key)),
        traceparent: options.traceparent.clone(),
        metrics: state.metrics.clone(),
        journal: None,
        resume: None,
    }
}

/// Records a live run.
fn register(
    state: &mut OrchestratorState,
    run_id: &str,
    entry: RunEntry,
    key: Option<(String, Option<u64>)>,
) {
    if let RunEntry::Live { supervisor, .. } = &entry {
        state
            .by_supervisor
            .insert(supervisor.get_id(), run_id.to_owned());
    }
    state.live += 1;
    if let Some((key, fingerprint)) = key {
        state
            .idempotency
            .insert(key, (run_id.to_owned(), fingerprint));
    }
    state.runs.insert(run_id.to_owned(), entry);
}

fn entry_result_rx(entry: &RunEntry) -> watch::Receiver<Option<Arc<RunResult>>> {
    match entry {
        RunEntry::Live { result_tx, .. }
        | RunEntry::Done { result_tx, .. }
        | RunEntry::Stored { result_tx, .. } => result_tx.subscribe(),
    }
}

/// A question about a run whose supervisor stopped before its `RunEnded` was handled,
/// or about a finished run being read back from the journal; answered from the finished
/// run as soon as it is recorded.
#[derive(Debug)]
enum Pending {
    Status(RpcReplyPort<Result<RunSnapshot, RunCommandError>>),
    Events(
        Subscription,
        RpcReplyPort<Result<EventFeed, RunCommandError>>,
    ),
    Graph(RpcReplyPort<Result<Arc<Graph>, RunCommandError>>),
}

impl Pending {
    /// Answers the question with `error`.
    fn refuse(self, error: RunCommandError) {
        // A reply that fails means the asker stopped waiting.
        match self {
            Pending::Status(reply) => drop(reply.send(Err(error))),
            Pending::Events(_, reply) => drop(reply.send(Err(error))),
            Pending::Graph(reply) => drop(reply.send(Err(error))),
        }
    }
}

fn status(
    state: &mut OrchestratorState,
    run_id: String,
    reply: RpcReplyPort<Result<RunSnapshot, RunCommandError>>,
) {
    match state.runs.get(&run_id) {
        None => {
            let _ = reply.send(Err(RunCommandError::UnknownRun(run_id)));
        }
        Some(RunEntry::Done { result, info, .. }) => {
            let _ = reply.send(Ok(RunSnapshot::of_result(result, info.trace_id.clone())));
        }
        Some(RunEntry::Stored { .. }) => {
            reload(state, &run_id);
            wait_for_end(state, run_id, Pending::Status(reply));
        }
        Some(RunEntry::Live { supervisor, .. }) => {
            // The supervisor answers the handle itself; one that is gone has its
            // RunEnded (or its exit) queued here, and the question waits for it.
            if let Err(MessagingErr::SendErr(SupervisorMsg::Snapshot(reply))) =
                supervisor.cast(SupervisorMsg::Snapshot(reply))
            {
                wait_for_end(state, run_id, Pending::Status(reply));
            }
        }
    }
}

fn graph(
    state: &mut OrchestratorState,
    run_id: String,
    reply: RpcReplyPort<Result<Arc<Graph>, RunCommandError>>,
) {
    match state.runs.get(&run_id) {
        None => {
            let _ = reply.send(Err(RunCommandError::UnknownRun(run_id)));
        }
        Some(RunEntry::Live { info, .. } | RunEntry::Done { info, .. }) => {
            let _ = reply.send(Ok(info.graph.clone()));
        }
        Some(RunEntry::Stored { .. }) => {
            reload(state, &run_id);
            wait_for_end(state, run_id, Pending::Graph(reply));
        }
    }
}

/// A page of the runs known, newest first.
fn list(state: &OrchestratorState, query: &RunQuery) -> RunPage {
    let limit = query.limit.max(1);
    let mut found: Vec<(u64, &String, &RunEntry)> = state
        .runs
        .iter()
        .filter(|(_, e)| query.before.is_none_or(|b| e.order() < b))
        .filter(|(id, e)| query.status.is_none_or(|s| e.summary(id).status == s))
        .map(|(id, e)| (e.order(), id, e))
        .collect();
    found.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
    let more = found.len() > limit;
    found.truncate(limit);
    RunPage {
        next: more
            .then(|| found.last().map(|(order, ..)| *order))
            .flatten(),
        runs: found.iter().map(|(_, id, e)| e.summary(id)).collect(),
    }
}

fn events(
    state: &mut OrchestratorState,
    run_id: String,
    asked: Subscription,
    reply: RpcReplyPort<Result<EventFeed, RunCommandError>>,
) {
    match state.runs.get(&run_id) {
        None => {
            let _ = reply.send(Err(RunCommandError::UnknownRun(run_id)));
        }
        Some(RunEntry::Done { events, .. }) => {
            let _ = reply.send(Ok(EventFeed {
                backlog: asked.backlog(events),
                live: None,
            }));
        }
        Some(RunEntry::Stored { .. }) => {
            reload(state, &run_id);
            wait_for_end(state, run_id, Pending::Events(asked, reply));
        }
        Some(RunEntry::Live { supervisor, .. }) => {
            if let Err(MessagingErr::SendErr(SupervisorMsg::Subscribe(asked, reply))) =
                supervisor.cast(SupervisorMsg::Subscribe(asked, reply))
            {
                wait_for_end(state, run_id, Pending::Events(asked, reply));
            }
        }
    }
}

/// Keeps a question until `run_id` is recorded as finished.
fn wait_for_end(state: &mut OrchestratorState, run_id: String, question: Pending) {
    state.pending.entry(run_id).or_default().push(question);
}

/// Answers the questions that waited for `run_id` to be recorded as finished.
fn answer_pending(state: &mut OrchestratorState, run_id: &str) {
    let Some(pending) = state.pending.remove(run_id) else {
        return;
    };
    for question in pending {
        match question {
            Pending::Status(reply) => status(state, run_id.to_owned(), reply),
            Pending::Events(asked, reply) => events(state, run_id.to_owned(), asked, reply),
            Pending::Graph(reply) => graph(state, run_id.to_owned(), reply),
        }
    }
}

/// Tells a live run to stop; `false` when it had ended already.
fn stop(state: &OrchestratorState, run_id: &str, kind: StopKind) -> Result<bool, RunCommandError> {
    match state.runs.get(run_id) {
        None => Err(RunCommandError::UnknownRun(run_id.to_owned())),
        Some(RunEntry::Done { .. } | RunEntry::Stored { .. }) => Ok(false),
        Some(RunEntry::Live { supervisor, .. }) => {
            // A supervisor that is stopping has already ended the run.
            let _ = supervisor.cast(SupervisorMsg::Stop(kind));
            Ok(true)
        }
    }
}

fn run_ended(
    state: &mut OrchestratorState,
    result: Arc<RunResult>,
    trace_id: Option<String>,
    events: Arc<Vec<TraceEvent>>,
    bytes: usize,
) {
    let run_id = result.run_id.clone();
    if !matches!(state.runs.get(&run_id), Some(RunEntry::Live { .. })) {
        return;
    }
    let Some(RunEntry::Live {
        result_tx,
        mut info,
        ..
    }) = state.runs.remove(&run_id)
    else {
        return;
    };
    state.live -= 1;
    let weight = Weight {
        nodes: result.nodes.len(),
        bytes,
    };
    info.trace_id = trace_id;
    state.runs.insert(
        run_id.clone(),
        RunEntry::Done {
            result,
            events,
            result_tx,
            info,
        },
    );
    answer_pending(state, &run_id);
    if state.journal.is_some() {
        let now = clock::now();
        state.journaled.push_back((run_id.clone(), now));
        purge_journal(state);
    }
    remember_finished(state, run_id, weight);
}

/// What a finished run kept for queries weighs: its node records, and the bytes of its
/// result (inputs and outputs included) and trace as JSON.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    bytes: usize,
}

/// What a finished run's result (inputs and outputs included) and trace take as JSON:
/// measured by its supervisor as the run ends (not here, where every run's end passes),
/// and here for runs read back from the journal.
pub(crate) fn retained_bytes(result: &RunResult, events: &[TraceEvent]) -> usize {
    // Without a limit the count always completes.
    let len = |bytes: Option<usize>| bytes.unwrap_or_default();
    len(json_len_within(result, usize::MAX)) + len(json_len_within(events, usize::MAX))
}

/// Keeps `run_id` for queries and lets go of the oldest finished runs past
/// `retainedRuns` runs, `retainedNodes` node records or `retainedBytes` bytes (the newest
/// is always kept): one the journal holds is kept by its summary, to be read back when
/// asked for; others are forgotten.
fn remember_finished(state: &mut OrchestratorState, run_id: String, weight: Weight) {
    state.finished.push_back((run_id, weight));
    state.finished_nodes += weight.nodes;
    state.finished_bytes += weight.bytes;
    let config = &state.config;
    while state.finished.len() > config.retained_runs
        || (state.finished.len() > 1
            && (state.finished_nodes > config.retained_nodes
                || state.finished_bytes > config.retained_bytes))
    {
        let Some((old, weight)) = state.finished.pop_front() else {
            break;
        };
        state.finished_nodes -= weight.nodes;
        state.finished_bytes -= weight.bytes;
        let journaled = state.journaled.iter().any(|(id, _)| *id == old);
        match state.runs.remove(&old) {
            Some(entry @ RunEntry::Done { .. }) if journaled => {
                let stored = entry.into_stored(&old);
                state.runs.insert(old, stored);
            }
            _ => state.idempotency.retain(|_, (id, _)| *id != old),
        }
    }
}

fn supervisor_exited(state: &mut OrchestratorState, run_id: &str, cause: &str) {
    if !matches!(state.runs.get(run_id), Some(RunEntry::Live { .. })) {
        return; // it reported its result before exiting
    }
    let Some(RunEntry::Live {
        result_tx, info, ..
    }) = state.runs.remove(run_id)
    else {
        return;
    };
    state.live -= 1;
    let result = Arc::new(lost_run(run_id, info.graph.title.clone(), cause));
    result_tx.send_replace(Some(result.clone()));
    let entry = RunEntry::Done {
        result,
        events: Arc::new(Vec::new()),
        result_tx,
        info,
    };
    state.runs.insert(run_id.to_owned(), entry);
    answer_pending(state, run_id);
    remember_finished(state, run_id.to_owned(), Weight::default());
}

/// The result of a run whose supervisor died before the run ended.
fn lost_run(run_id: &str, title: String, cause: &str) -> RunResult {
    let now = Timestamp::now();
    RunResult {
        run_id: run_id.to_owned(),
        title,
        status: RunStatus::Failed,
        success: false,
        error: Some(format!(
            "the run's supervisor died before the run ended: {cause}"
        )),
        started_at: now,
        completed_at: now,
        duration_ms: 0,
        outputs: Default::default(),
        nodes: Default::default(),
        warnings: Vec::new(),
    }
}
