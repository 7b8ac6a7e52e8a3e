//! The orchestrator actor: the engine's [`EngineCore`] with hands. It turns handles'
//! commands and its supervisors' reports into engine facts, and performs the effects the
//! core returns: spawn a run's supervisor, answer, read a finished run back from the
//! journal off the actor, drop what it holds of a run, delete a run from the journal,
//! stop the engine. Every decision (admission, idempotency, retention, journal purge,
//! the end of a run whose supervisor died, the engine's phase) is the core's.
//!
//! What the actor holds of each run is its handles and data ([`Held`]): a live run's
//! supervisor and result channel, a finished run's result and trace, or, for a run the
//! core keeps by its summary, only its result channel. Questions about a run that is
//! being read back, or whose supervisor stopped before its result was handled, wait in
//! `pending` and are answered when the run is held whole.
//!
//! The engine's slots ([`Slots`]) are shared by every node directly; the orchestrator
//! only answers questions about them and stops their timer when the engine closes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::watch;

use crate::actors::clock;
use crate::actors::faults::Faults;
use crate::actors::slots::Slots;
use crate::actors::supervisor::{RunSupervisor, SupervisorArgs};
use crate::messages::orchestrator::{
    OrchestratorMsg, RunCommandError, ShutdownMode, SignalIn, SubmitOptions, Submitted,
    signal_after_end,
};
use crate::messages::supervisor::{EventFeed, Subscription, SupervisorMsg};
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::Graph;
use crate::runtime::guardrails::config::{Capacities, EngineConfig};
use crate::runtime::guardrails::gate::Gate;
use crate::runtime::journal::readback::{self, ReadBackError, ReadRun};
use crate::runtime::journal::record::{self, AcceptedRecord, RunHeader};
use crate::runtime::journal::store::Op;
use crate::runtime::journal::writer::Acknowledgement;
use crate::runtime::journal::{FinishedRun, Journal, Scanned, StoredRunLog};
use crate::runtime::semantics::engine::{
    EngineCore, EngineEffect, EngineFact, EngineLimits, IdempotencyKey, JournalRetention, NewRunId,
    ReadOutcome, ResumedRun, StoredRun, Submission, Weight,
};
use crate::runtime::semantics::event::TraceEvent;
use crate::runtime::semantics::gate::{Resolution, ResolveError, Resolved};
use crate::runtime::semantics::inbox::SignalAck;
use crate::runtime::semantics::outcome::RunStatus;
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::report::StopKind;
use crate::runtime::semantics::requests::Route;
use crate::runtime::semantics::result::{RunResult, RunSnapshot, RunSummary};
use crate::runtime::semantics::time::Time;
use crate::runtime::telemetry::{Metrics, traceparent_trace_id};

mod held;
mod questions;
mod runs;

use held::{Held, Pending, ResultTx};
use runs::NewRun;

/// The orchestrator's behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrchestratorActor;

/// Start-up arguments.
#[derive(Debug)]
pub(crate) struct OrchestratorArgs {
    /// Engine settings.
    pub(crate) config: EngineConfig,
    /// Their bounds, validated.
    pub(crate) capacities: Capacities,
    /// Components.
    pub(crate) registry: Arc<ComponentRegistry>,
    /// The journal, when runs are journaled.
    pub(crate) journal: Option<Journal>,
    /// What the journal held at start.
    pub(crate) stored: Vec<Scanned>,
    /// The engine's slots.
    pub(crate) slots: Slots,
    /// The engine's fault hooks (none in production).
    pub(crate) faults: Arc<dyn Faults>,
}

/// What came with a fact, for the effects that need it.
#[derive(Debug)]
enum Arrived {
    Nothing,
    /// A new run's submission.
    Submission(Box<NewRun>),
    /// An unfinished run the journal held, to resume.
    Resumed(Box<NewRun>, Box<StoredRunLog>),
    /// A run's end, from its supervisor.
    Ended {
        result: Arc<RunResult>,
        events: Arc<Vec<TraceEvent>>,
        trace_id: Option<String>,
    },
    /// A run read back from the journal.
    Read(ReadRun),
}

/// The orchestrator's state.
#[derive(Debug)]
pub(crate) struct OrchestratorState {
    core: EngineCore,
    held: HashMap<String, Held>,
    by_supervisor: HashMap<ActorId, String>,
    /// Questions waiting for a run to be held whole.
    pending: HashMap<String, Vec<Pending>>,
    /// The callers of a shutdown, answered once the engine closed.
    closing: Vec<RpcReplyPort<()>>,
    config: EngineConfig,
    registry: Arc<ComponentRegistry>,
    journal: Option<Journal>,
    slots: Slots,
    faults: Arc<dyn Faults>,
    tickets: Arc<AtomicU64>,
    next_run_key: u64,
    metrics: Arc<Metrics>,
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
        let journal = args.journal.is_some().then(|| JournalRetention {
            runs: args.capacities.journal_retained_runs,
            age: args.config.journal.retention(),
        });
        let limits = EngineLimits {
            max_active_runs: args.capacities.max_active_runs,
            retained_runs: args.capacities.retained_runs,
            retained_nodes: args.capacities.retained_nodes,
            retained_bytes: args.capacities.retained_bytes,
            journal,
        };
        let mut state = OrchestratorState {
            core: EngineCore::new(limits),
            held: HashMap::new(),
            by_supervisor: HashMap::new(),
            pending: HashMap::new(),
            closing: Vec::new(),
            config: args.config,
            registry: args.registry,
            journal: args.journal,
            slots: args.slots,
            faults: args.faults,
            tickets: Arc::new(AtomicU64::new(1)),
            next_run_key: 1,
            metrics: Arc::new(Metrics::from_global()),
            myself,
        };
        state.recover(args.stored).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<OrchestratorMsg>,
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
                let run = NewRun {
                    graph,
                    inputs,
                    options,
                    definition,
                };
                let _ = reply.send(state.submit(run, fingerprint).await);
            }
            OrchestratorMsg::Status { run_id, reply } => state.status(run_id, reply).await,
            OrchestratorMsg::List { query, reply } => drop(reply.send(state.core.list(&query))),
            OrchestratorMsg::Events {
                run_id,
                asked,
                reply,
            } => state.events(run_id, asked, reply).await,
            OrchestratorMsg::Graph { run_id, reply } => state.graph(run_id, reply).await,
            OrchestratorMsg::Watch { run_id, reply } => state.watch(run_id, reply).await,
            OrchestratorMsg::Reloaded { run_id, outcome } => state.reloaded(run_id, outcome).await,
            OrchestratorMsg::Retained(reply) => drop(reply.send(state.core.retained())),
            OrchestratorMsg::Inputs { query, reply } => {
                drop(reply.send(state.core.inputs(&query)));
            }
            OrchestratorMsg::Input { request_id, reply } => {
                drop(reply.send(state.core.input(&request_id).cloned()));
            }
            OrchestratorMsg::InputChanged { run_id, request } => {
                state
                    .apply(
                        EngineFact::InputChanged { run_id, request },
                        Arrived::Nothing,
                    )
                    .await;
            }
            OrchestratorMsg::Signal {
                run_id,
                signal,
                reply,
            } => state.signal(run_id, signal, reply),
            OrchestratorMsg::SignalTaken { run_id, signal_id } => {
                let fact = EngineFact::SignalTaken { run_id, signal_id };
                state.apply(fact, Arrived::Nothing).await;
            }
            OrchestratorMsg::Stop {
                run_id,
                kind,
                reply,
            } => drop(reply.send(state.stop(&run_id, kind))),
            OrchestratorMsg::Resolve {
                run_id,
                request_id,
                resolution,
                reply,
            } => state.resolve(run_id, request_id, resolution, reply),
            OrchestratorMsg::RunEnded {
                result,
                trace_id,
                events,
                bytes,
            } => state.run_ended(result, trace_id, events, bytes).await,
            OrchestratorMsg::SlotsIdle(reply) => state.slots.when_idle(reply),
            OrchestratorMsg::Slots(reply) => drop(reply.send(state.slots.stats())),
            OrchestratorMsg::Quiesce(reply) => state.quiesce(reply).await,
            OrchestratorMsg::SyncRuns(reply) => state.sync_runs(reply),
            OrchestratorMsg::Shutdown { mode, reply } => state.shutdown(mode, reply).await,
            OrchestratorMsg::SupervisorExited { run_id, cause } => {
                let fact = EngineFact::SupervisorLost { run_id, cause };
                state.apply(fact, Arrived::Nothing).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<OrchestratorMsg>,
        event: SupervisionEvent,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((id, cause)) = exit_of(event) else {
            return Ok(());
        };
        if let Some(run_id) = state.by_supervisor.remove(&id) {
            let fact = EngineFact::SupervisorStopped { run_id, cause };
            state.apply(fact, Arrived::Nothing).await;
        }
        Ok(())
    }
}

/// The answer to a submission, once its effects are performed.
type Answer = Option<Result<Submitted, RunCommandError>>;

impl OrchestratorState {
    /// Applies `fact` now and performs what the core decided (with what came with the
    /// fact), including what performing that decides in turn; returns the answer to a
    /// submission, when the fact was one.
    async fn apply(&mut self, fact: EngineFact, mut arrived: Arrived) -> Answer {
        let now = clock::now();
        let mut queue: VecDeque<EngineEffect> = self.core.apply(fact, now).into();
        let mut answer = None;
        while let Some(effect) = queue.pop_front() {
            let more = self.perform(effect, &mut arrived, &mut answer, now).await;
            queue.extend(more);
        }
        answer
    }

    /// Performs one effect; returns what the core decides when told how it went.
    async fn perform(
        &mut self,
        effect: EngineEffect,
        arrived: &mut Arrived,
        answer: &mut Answer,
        now: Time,
    ) -> Vec<EngineEffect> {
        match effect {
            EngineEffect::Start { run_id } => {
                return self.launch(run_id, arrived, answer, now).await;
            }
            EngineEffect::Existing { run_id } => *answer = self.existing(run_id),
            EngineEffect::Refuse(refusal) => {
                *answer = Some(Err(RunCommandError::refused(refusal)));
            }
            EngineEffect::Finished { run_id } => {
                if let Arrived::Ended {
                    result,
                    events,
                    trace_id,
                } = std::mem::replace(arrived, Arrived::Nothing)
                {
                    self.hold_done(&run_id, result, events, trace_id, None);
                }
            }
            EngineEffect::Lost { run_id, result } => {
                self.publish(&run_id, &result);
                self.hold_done(&run_id, result, Arc::new(Vec::new()), None, None);
            }
            EngineEffect::Restored { run_id } => {
                if let Arrived::Read(run) = std::mem::replace(arrived, Arrived::Nothing) {
                    self.restored(&run_id, run);
                }
            }
            EngineEffect::Recheck { run_id, cause } => {
                // Re-checked through the queue, behind a RunEnded sent before the exit.
                let exited = OrchestratorMsg::SupervisorExited { run_id, cause };
                let _ = self.myself.cast(exited);
            }
            EngineEffect::ReadBack { run_id } => self.read_back(run_id),
            EngineEffect::Unreadable { run_id, reason } => self.unreadable(&run_id, &reason),
            EngineEffect::Demote { run_id } => self.demote(run_id),
            EngineEffect::Forget { run_id } => drop(self.held.remove(&run_id)),
            EngineEffect::Purge { run_id } => self.purge(&run_id),
            EngineEffect::AnswerPending { run_id } => self.answer_pending(&run_id),
            EngineEffect::StopRun { run_id, kind } => self.stop_live(&run_id, kind),
            EngineEffect::Close => self.close().await,
        }
        Vec::new()
    }

    /// Spawns the supervisor of a run the core admitted (from what came with the fact),
    /// and answers with it; a spawn that fails is told to the core.
    async fn launch(
        &mut self,
        run_id: String,
        arrived: &mut Arrived,
        answer: &mut Answer,
        now: Time,
    ) -> Vec<EngineEffect> {
        let outcome = match std::mem::replace(arrived, Arrived::Nothing) {
            Arrived::Submission(run) => self.start(&run_id, *run, None, now).await,
            Arrived::Resumed(run, log) => self.start(&run_id, *run, Some(*log), now).await,
            other => {
                *arrived = other;
                Err(RunCommandError::Spawn("nothing to start it from".into()))
            }
        };
        let failed = outcome.is_err();
        *answer = Some(outcome);
        if failed {
            return self.core.apply(EngineFact::SpawnFailed { run_id }, now);
        }
        Vec::new()
    }

    /// The answer to a submission its idempotency key ties to `run_id`.
    fn existing(&self, run_id: String) -> Answer {
        let held = self.held.get(&run_id)?;
        Some(Ok(Submitted {
            run_id,
            existing: true,
            result: held.result_tx().subscribe(),
            stored: None,
        }))
    }

    /// A run read back is held whole again; its result channel gets its result.
    fn restored(&mut self, run_id: &str, run: ReadRun) {
        self.publish(run_id, &run.result);
        let trace_id = self.held.get(run_id).and_then(Held::trace_id);
        self.hold_done(run_id, run.result, run.events, trace_id, Some(run.graph));
    }

    /// A run that could not be read back: the questions that waited for it are refused.
    fn unreadable(&mut self, run_id: &str, reason: &str) {
        tracing::warn!(target: "shipsec::journal", run_id = %run_id, "{reason}");
        for question in self.pending.remove(run_id).into_iter().flatten() {
            question.refuse(RunCommandError::Unreadable {
                run_id: run_id.to_owned(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Lets go of a finished run's result and trace, keeping its result channel.
    fn demote(&mut self, run_id: String) {
        if let Some(held) = self.held.remove(&run_id) {
            let trace_id = held.trace_id();
            let result_tx = held.into_result_tx();
            self.held.insert(
                run_id,
                Held::Stored {
                    result_tx,
                    trace_id,
                },
            );
        }
    }

    /// Deletes a run from the journal.
    fn purge(&self, run_id: &str) {
        if let Some(journal) = &self.journal {
            let op = Op::DeleteRun {
                run_id: run_id.into(),
            };
            journal.append(op, None);
        }
    }

    /// Asks a live run to stop.
    fn stop_live(&self, run_id: &str, kind: StopKind) {
        if let Some(Held::Live { supervisor, .. }) = self.held.get(run_id) {
            // A supervisor that is stopping has already ended its run.
            let _ = supervisor.cast(SupervisorMsg::Stop(kind));
        }
    }

    /// The engine suspends: no new run is taken, the slots hand out no more grants, and
    /// `reply` is answered once no attempt runs.
    async fn quiesce(&mut self, reply: RpcReplyPort<()>) {
        self.apply(EngineFact::Quiesced, Arrived::Nothing).await;
        self.slots.pause_until_quiet(reply);
    }

    /// Asks every live supervisor to commit what it has, and answers `reply` once all
    /// have (from a task: the orchestrator goes on with its mailbox meanwhile).
    fn sync_runs(&self, reply: RpcReplyPort<()>) {
        let supervisors: Vec<_> = self
            .held
            .values()
            .filter_map(|held| match held {
                Held::Live { supervisor, .. } => Some(supervisor.clone()),
                Held::Done { .. } | Held::Stored { .. } => None,
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

    /// Begins a shutdown: no new runs; live ones cancelled or left to finish.
    async fn shutdown(&mut self, mode: ShutdownMode, reply: RpcReplyPort<()>) {
        self.closing.push(reply);
        let fact = EngineFact::ShutdownAsked {
            cancel: mode == ShutdownMode::Cancel,
        };
        self.apply(fact, Arrived::Nothing).await;
    }

    /// Every run ended and every supervisor exited: the slots' timer stops, the callers are
    /// answered, the orchestrator stops.
    async fn close(&mut self) {
        self.slots.close();
        for reply in self.closing.drain(..) {
            // A caller that stopped waiting needs no answer.
            let _ = reply.send(());
        }
        self.myself.stop(None);
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
