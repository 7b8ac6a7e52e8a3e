//! The run supervisor: one per run, plumbing around its [`RunCore`].
//!
//! Its nodes' reports, their actors' exits, stop requests and its timers become facts for
//! the core; the effects the core returns are performed here: node actors spawned (linked
//! to the supervisor), edge resolutions sent to children, cancels and kills, timers,
//! trace events appended to the run's log and sent to subscribers, metrics, and finally
//! the result handed to the orchestrator and to waiting handles. The supervisor decides
//! nothing: failure policy, withdrawal, the spawn window, stop rules, crash recovery and
//! the result are the core's.
//!
//! ractor delivers supervision events before ordinary messages, so a node's exit can be
//! seen before the report it sent just before stopping; the core asks for such an exit
//! to be re-checked through the mailbox ([`SupervisorMsg::NodeExited`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use opentelemetry::trace::SpanContext;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{mpsc, watch};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::actors::clock;
use crate::actors::faults::Faults;
use crate::actors::node::{NodeActor, NodeArgs};
use crate::actors::shared::{RunShared, SlotLink};
use crate::actors::slots::Slots;
use crate::messages::node::NodeMsg;
use crate::messages::orchestrator::{OrchestratorMsg, RunCommandError, signal_after_end};
use crate::messages::supervisor::{EventFeed, Subscription, SupervisorMsg};
use crate::runtime::components::registry::{ComponentRegistry, RemoteHost};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{Graph, NodeIx};
use crate::runtime::guardrails::config::EngineConfig;
use crate::runtime::guardrails::slots::RunKey;
use crate::runtime::journal::Journal;
use crate::runtime::journal::record::{self, Fact, FactKind, FinishedRecord, RunHeader};
use crate::runtime::journal::replay::{self, Replayer};
use crate::runtime::journal::store::{Op, StoreError};
use crate::runtime::journal::writer::AckSink;
use crate::runtime::semantics::attempt::AttemptId;
use crate::runtime::semantics::event::{EventType, TraceEvent};
use crate::runtime::semantics::gate::{InputRequest, Resolved};
use crate::runtime::semantics::inbox::{self, Signal, SignalAck, Signaled};
use crate::runtime::semantics::node_core::NodeStart;
use crate::runtime::semantics::outcome::RunStatus;
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::report::{
    CancelReason, NodeEnd, NodeReport, ParentEnded, StartReport,
};
use crate::runtime::semantics::result::{RunResult, RunSnapshot};
use crate::runtime::semantics::run_core::{Metric, RunCore, RunEffect, RunFact, RunPhase};
use crate::runtime::semantics::time::Time;
use crate::runtime::telemetry::spans::NodeSpans;
use crate::runtime::telemetry::{Metrics, RUN_ID, RUN_STATUS, SPAN_RUN, TARGET};

/// The supervisor's behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunSupervisor;

/// Start-up arguments.
#[derive(Debug)]
pub(crate) struct SupervisorArgs {
    /// Run id.
    pub(crate) run_id: Arc<str>,
    /// The validated graph.
    pub(crate) graph: Arc<Graph>,
    /// Components.
    pub(crate) registry: Arc<ComponentRegistry>,
    /// The run's inputs.
    pub(crate) inputs: Arc<JsonObject>,
    /// Engine settings.
    pub(crate) config: EngineConfig,
    /// Seed of the run's retry jitter.
    pub(crate) seed: u64,
    /// Where the result is published.
    pub(crate) result_tx: watch::Sender<Option<Arc<RunResult>>>,
    /// Told when the run ends.
    pub(crate) orchestrator: Option<ActorRef<OrchestratorMsg>>,
    /// The engine's slots, its ticket counter, and this run's key in the slot book.
    pub(crate) limiter: Option<(Slots, Arc<AtomicU64>, RunKey)>,
    /// The engine's fault hooks (none in production).
    pub(crate) faults: Arc<dyn Faults>,
    /// W3C `traceparent` of the caller's trace, which the run span joins.
    pub(crate) traceparent: Option<String>,
    /// The run's metadata.
    pub(crate) metadata: Arc<crate::runtime::semantics::metadata::Metadata>,
    /// The engine's metric instruments.
    pub(crate) metrics: Arc<Metrics>,
    /// The journal, and the run's header in it.
    pub(crate) journal: Option<(Journal, RunHeader)>,
    /// The facts of a run resumed from the journal, to fold before it goes on.
    pub(crate) resume: Option<Vec<Fact>>,
}

/// The supervisor's state.
#[derive(Debug)]
pub(crate) struct SupervisorState {
    core: RunCore,
    run: Arc<RunShared>,
    /// The live actor of each node, by `NodeIx`.
    actors: Vec<Option<ActorRef<NodeMsg>>>,
    /// Which node (and which of its actors) each live actor is.
    by_actor: HashMap<ActorId, (NodeIx, u32), foldhash::fast::RandomState>,
    /// Span contexts of ended nodes, for their children's links (empty when not tracing).
    spans: Vec<Option<SpanContext>>,
    /// Every event, once the run has ended (answers late subscribers while draining).
    final_events: Option<Arc<Vec<TraceEvent>>>,
    subscribers: Vec<mpsc::Sender<TraceEvent>>,
    result_tx: watch::Sender<Option<Arc<RunResult>>>,
    orchestrator: Option<ActorRef<OrchestratorMsg>>,
    /// The run's journal, when it has one.
    log: Option<RunLog>,
    /// The run's trace (32 hex digits), when it has one.
    trace_id: Option<String>,
    /// Events sent to subscribers so far (with a journal, the core may hold later ones
    /// whose facts are not stored yet: those are not given out).
    published: usize,
    /// Who waits to hear what an answer to a request did, by request.
    resolving: Waiters<Resolved>,
    /// Senders of signals waiting for what their signal did, by signal id.
    signalling: Waiters<SignalAck>,
}

/// Callers waiting to hear what their message to the run did, by the id it carried, in
/// the order they came: told when the core's verdict comes out, after the message is
/// stored.
#[derive(Debug)]
struct Waiters<T>(HashMap<Arc<str>, VecDeque<RpcReplyPort<Result<T, RunCommandError>>>>);

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters(HashMap::default())
    }
}

impl<T> Waiters<T> {
    fn wait(&mut self, id: Arc<str>, reply: RpcReplyPort<Result<T, RunCommandError>>) {
        self.0.entry(id).or_default().push_back(reply);
    }

    /// Tells the first caller waiting on `id`.
    fn tell(&mut self, id: &str, answer: Result<T, RunCommandError>) {
        let Some(queue) = self.0.get_mut(id) else {
            return;
        };
        let reply = queue.pop_front();
        if queue.is_empty() {
            self.0.remove(id);
        }
        if let Some(reply) = reply {
            // A caller that stopped waiting needs no answer.
            let _ = reply.send(answer);
        }
    }
}

/// A run's side of the journal: its facts are appended as they are applied, and the
/// effects of each are held until the journal has stored it (in order: effects of later
/// facts wait behind earlier ones), so no child is told, no event published and no result
/// given out for a fact a crash could lose.
#[derive(Debug)]
struct RunLog {
    journal: Journal,
    /// The run's id, shared by every key it writes.
    run_id: Arc<str>,
    header: RunHeader,
    sink: Arc<dyn AckSink>,
    /// The supervisor, told to commit what it queued ([`SupervisorMsg::Commit`]).
    myself: ActorRef<SupervisorMsg>,
    /// A [`SupervisorMsg::Commit`] is on its way.
    commit_sent: bool,
    /// Facts appended.
    appended: u64,
    /// Facts stored.
    durable: u64,
    /// Effects waiting for their fact to be stored, with its number.
    held: VecDeque<(u64, Vec<RunEffect>)>,
    /// Set once a write failed: the run has been failed and nothing more is journaled.
    failed: bool,
}

/// The writer's acknowledgements, as messages to the supervisor.
#[derive(Debug)]
struct SupervisorSink(ActorRef<SupervisorMsg>);

impl AckSink for SupervisorSink {
    fn durable(&self, upto: u64) {
        // A supervisor that is gone has nothing left to hold.
        let _ = self.0.cast(SupervisorMsg::Durable(upto));
    }

    fn failed(&self, error: &StoreError) {
        let _ = self.0.cast(SupervisorMsg::JournalFailed(error.to_string()));
    }
}

impl RunLog {
    fn new(journal: Journal, header: RunHeader, myself: &ActorRef<SupervisorMsg>) -> RunLog {
        RunLog {
            journal,
            run_id: header.accepted.run_id.as_str().into(),
            header,
            sink: Arc::new(SupervisorSink(myself.clone())),
            myself: myself.clone(),
            commit_sent: false,
            appended: 0,
            durable: 0,
            held: VecDeque::new(),
            failed: false,
        }
    }

    /// Appends the record of `fact`, if it has one.
    fn record(&mut self, fact: &RunFact, now: Time) {
        if let Some(record) = replay::fact_of(fact, now) {
            self.append(&record);
        }
    }

    fn append(&mut self, fact: &Fact) {
        self.appended += 1;
        let op = Op::PutFact {
            run_id: self.run_id.clone(),
            seq: self.appended,
            value: record::encode(fact),
        };
        self.queue(op, Some((self.sink.clone(), self.appended)));
    }

    /// Queues `op`; the supervisor commits it once it has handled its mailbox's backlog,
    /// so a burst of reports (a fan-out finishing) is one batch, and a lone fact (a chain)
    /// is committed at once.
    fn queue(&mut self, op: Op, ack: Option<(Arc<dyn AckSink>, u64)>) {
        self.journal.append_deferred(op, ack);
        if !self.commit_sent {
            self.commit_sent = true;
            // A supervisor gone commits on drop.
            let _ = self.myself.cast(SupervisorMsg::Commit);
        }
    }

    /// Commits what this run queued (and whatever else is queued).
    fn commit(&mut self) {
        self.commit_sent = false;
        self.journal.commit();
    }

    /// Records the run's end: its last fact, then its header marked finished (so a header
    /// marked finished always follows its run's `Finished` fact into the store).
    fn finished(&mut self, status: RunStatus, now: Time) {
        let finished = FinishedRecord {
            status: status.as_str().to_owned(),
            finished_at: now.as_micros(),
        };
        self.append(&Fact {
            at: now.as_micros(),
            kind: FactKind::Finished(finished.clone()),
        });
        self.mark_finished(finished);
    }

    /// Marks the run's header finished.
    fn mark_finished(&mut self, finished: FinishedRecord) {
        self.header.finished = Some(finished);
        let op = Op::PutRun {
            run_id: self.run_id.clone(),
            value: record::encode(&self.header),
        };
        self.queue(op, None);
    }

    /// Whether effects applied now must wait.
    fn holds(&self) -> bool {
        !self.held.is_empty() || self.appended > self.durable
    }
}

impl Drop for RunLog {
    fn drop(&mut self) {
        // A supervisor stopped before its Commit arrived leaves nothing queued unwritten.
        if self.commit_sent {
            self.journal.commit();
        }
    }
}

impl Actor for RunSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        mut args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let resume = args.resume.take();
        let mut state = SupervisorState::new(&myself, args);
        state
            .run
            .faults
            .spawned(&state.run.plan.run_id, None, &myself);
        // A run accepted and not begun before the engine died begins now.
        match resume.filter(|facts| !facts.is_empty()) {
            None => state.feed(&myself, RunFact::Started).await?,
            Some(facts) => state.resume(&myself, &facts).await?,
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Node { report, span } => state.on_report(&myself, report, span).await,
            SupervisorMsg::NodeRan { start, end, span } => {
                state.on_ran(&myself, start, end, span).await
            }
            SupervisorMsg::NodeExited {
                node,
                generation,
                cause,
            } => state.on_died(&myself, node, generation, cause).await,
            SupervisorMsg::Placed(placed) => state.feed(&myself, RunFact::Placed(placed)).await,
            SupervisorMsg::Stop(kind) => state.feed(&myself, RunFact::CancelRequested(kind)).await,
            SupervisorMsg::Timer(timer) => state.feed(&myself, RunFact::TimerFired(timer)).await,
            SupervisorMsg::Commit => {
                if let Some(log) = &mut state.log {
                    log.commit();
                }
                Ok(())
            }
            SupervisorMsg::Durable(upto) => state.on_durable(&myself, upto).await,
            SupervisorMsg::JournalFailed(error) => {
                state.journal_failed(&myself, &error);
                Ok(())
            }
            SupervisorMsg::Resolve {
                request_id,
                resolution,
                reply,
            } if matches!(state.core.phase(), RunPhase::Ended(_)) => {
                // As the engine's book of requests answers for a run that has ended.
                let verdict = state.core.verdict(&request_id, &resolution);
                answer(reply, verdict.map_err(RunCommandError::from))
            }
            SupervisorMsg::Signal { signal, reply }
                if matches!(state.core.phase(), RunPhase::Ended(_)) =>
            {
                let taken = (signal.signal_id.as_deref()).and_then(|id| state.core.took_signal(id));
                answer(reply, signal_after_end(&state.run.plan.run_id, taken))
            }
            SupervisorMsg::Signal { signal, reply } => {
                let n = state.core.signals_received() + 1;
                let signal_id: Arc<str> = signal
                    .signal_id
                    .unwrap_or_else(|| inbox::signal_id(n))
                    .into();
                state.signalling.wait(signal_id.clone(), reply);
                let fact = RunFact::Signal(Arc::new(Signal {
                    signal_id,
                    name: signal.name.into(),
                    payload: signal.payload,
                }));
                state.feed(&myself, fact).await
            }
            SupervisorMsg::Resolve {
                request_id,
                resolution,
                reply,
            } => {
                state.resolving.wait(request_id.clone(), reply);
                let fact = RunFact::InputResolution {
                    request_id,
                    resolution,
                };
                state.feed(&myself, fact).await
            }
            SupervisorMsg::Snapshot(reply) => answer(reply, Ok(state.snapshot())),
            SupervisorMsg::Sync(reply) => {
                if let Some(log) = &mut state.log {
                    log.commit();
                }
                answer(reply, ())
            }
            // An asker that went away leaves a closed sender, pruned on the next emit.
            SupervisorMsg::Subscribe(asked, reply) => answer(reply, Ok(state.subscribe(asked))),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, cause) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                reason.unwrap_or_else(|| "the node actor stopped".into()),
            ),
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell, format!("the node actor died: {err}"))
            }
            _ => return Ok(()),
        };
        state.on_exit(&myself, cell.get_id(), cause).await
    }
}

impl SupervisorState {
    fn new(myself: &ActorRef<SupervisorMsg>, args: SupervisorArgs) -> SupervisorState {
        let slots = args.limiter.as_ref().map(|(link, tickets, key)| {
            let (graph, registry) = (&args.graph, &args.registry);
            SlotLink::new(
                link.clone(),
                tickets.clone(),
                *key,
                graph,
                registry,
                &args.config,
            )
        });
        let plan = plan_of(&args, slots.as_ref());
        let span = run_span(&args.run_id, &args.graph.title, args.traceparent.as_deref());
        let trace_id = trace_id_of(&span, args.traceparent.as_deref());
        let n = args.graph.len();
        SupervisorState {
            core: RunCore::new(plan.clone()),
            spans: if span.is_disabled() {
                Vec::new()
            } else {
                vec![None; n]
            },
            run: Arc::new(RunShared {
                plan,
                supervisor: myself.clone(),
                slots,
                span,
                metrics: args.metrics,
                faults: args.faults,
            }),
            actors: vec![None; n],
            by_actor: HashMap::default(),
            resolving: Waiters::default(),
            signalling: Waiters::default(),
            final_events: None,
            subscribers: Vec::new(),
            result_tx: args.result_tx,
            orchestrator: args.orchestrator,
            log: args
                .journal
                .map(|(journal, header)| RunLog::new(journal, header, myself)),
            published: 0,
            trace_id,
        }
    }

    /// Resumes a run from its journaled facts: folds them into its core with the ends the
    /// cores compute that were not stored (journaled now), and goes on with
    /// [`RunFact::Resumed`]. A run whose facts end it (its own end was not stored, or its
    /// header was not marked) ends as it did.
    async fn resume(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        facts: &[Fact],
    ) -> Result<(), ActorProcessingErr> {
        let mut replayer = Replayer::fold(self.core.plan().clone(), facts)
            .map_err(|e| format!("run `{}` cannot be resumed: {e}", self.run.plan.run_id))?;
        let settled = replayer.settle();
        let (core, result) = replayer.into_parts();
        self.core = core;
        // Every replayed event was published before the engine died, or could have been.
        self.published = self.core.events().len();
        // The orchestrator learns the requests and signals the run took before its restart.
        for request in self.core.requests() {
            self.request_changed(Arc::new(request.clone()));
        }
        for signal_id in self.core.signal_ids() {
            self.signal_taken(signal_id.clone());
        }
        let Some(log) = &mut self.log else {
            return Ok(()); // a resume always has its journal
        };
        log.appended = facts.len() as u64;
        log.durable = log.appended;
        for fact in &settled {
            log.append(fact);
        }
        let Some(result) = result else {
            return self.feed(myself, RunFact::Resumed).await;
        };
        (log.header).keep_settled(self.core.requests(), self.core.signal_ids());
        match facts.last() {
            Some(Fact {
                kind: FactKind::Finished(f),
                ..
            }) => log.mark_finished(f.clone()),
            last => log.finished(result.status, Time::from_micros(last.map_or(0, |f| f.at))),
        }
        log.held
            .push_back((log.appended, vec![RunEffect::Finish(result)]));
        // Performed once what it follows is stored (it may be already).
        let _ = myself.cast(SupervisorMsg::Durable(log.durable));
        Ok(())
    }

    /// The journal stored facts up to `upto`: their effects are performed, in order.
    async fn on_durable(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        upto: u64,
    ) -> Result<(), ActorProcessingErr> {
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        log.durable = log.durable.max(upto);
        let mut ready = Vec::new();
        while log.held.front().is_some_and(|(seq, _)| *seq <= log.durable) {
            ready.extend(log.held.pop_front().map(|(_, effects)| effects));
        }
        for effects in ready {
            self.perform_all(myself, effects, clock::now()).await?;
        }
        Ok(())
    }

    /// The journal cannot store this run's facts: the run fails now, visibly, with what
    /// was held back never performed; its node actors are stopped.
    fn journal_failed(&mut self, myself: &ActorRef<SupervisorMsg>, error: &str) {
        let Some(log) = &mut self.log else { return };
        if log.failed {
            return;
        }
        log.failed = true;
        log.held.clear();
        let reason = format!(
            "the run's journal could not be written ({error}); the run stopped at its last stored fact ({})",
            log.durable
        );
        tracing::error!(target: "shipsec::journal", run_id = %self.run.plan.run_id, %reason);
        for actor in self.actors.iter().flatten() {
            actor.kill();
        }
        let result = Arc::new(self.core.abandoned(reason, clock::now(), self.published));
        self.finish(myself, result);
    }

    /// An exit re-checked through the queue and still unexplained: the node died.
    async fn on_died(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        node: NodeIx,
        generation: u32,
        cause: String,
    ) -> Result<(), ActorProcessingErr> {
        let fact = RunFact::NodeDied {
            node,
            generation,
            cause,
        };
        self.feed(myself, fact).await
    }

    async fn on_report(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        report: NodeReport,
        span: Option<Box<SpanContext>>,
    ) -> Result<(), ActorProcessingErr> {
        self.keep_span(report.node(), span.map(|s| *s));
        self.feed(myself, RunFact::Node(report)).await
    }

    /// A start and an end in one message: two facts, in that order.
    async fn on_ran(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        start: StartReport,
        end: Arc<NodeEnd>,
        span: Option<Box<SpanContext>>,
    ) -> Result<(), ActorProcessingErr> {
        self.feed(myself, RunFact::Node(NodeReport::Started(start)))
            .await?;
        self.on_report(myself, NodeReport::Ended(end), span).await
    }

    async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        actor: ActorId,
        cause: String,
    ) -> Result<(), ActorProcessingErr> {
        let Some((node, generation)) = self.by_actor.remove(&actor) else {
            return Ok(());
        };
        // Its reference would keep the exited actor's mailboxes allocated until the run
        // ends (kilobytes per node).
        if self.actors[node.ix()]
            .as_ref()
            .is_some_and(|a| a.get_id() == actor)
        {
            self.actors[node.ix()] = None;
        }
        let fact = RunFact::ActorExited {
            node,
            generation,
            cause,
        };
        self.feed(myself, fact).await
    }

    fn keep_span(&mut self, node: NodeIx, span: Option<SpanContext>) {
        if let (Some(slot), Some(span)) = (self.spans.get_mut(node.ix()), span) {
            *slot = Some(span);
        }
    }

    /// The run's one fact sink: every fact the run core is fed goes, in order, to the
    /// engine's fault hooks (the chaos recorder, in tests) and to the journal (its record,
    /// unless it is the late exit of a node that ended, which the journal need not keep).
    /// `false` once the journal failed: the run was failed and nothing more is applied.
    fn record(&mut self, fact: &RunFact, now: Time) -> bool {
        self.run.faults.run_fact(&self.run.plan.run_id, fact, now);
        let Some(log) = &mut self.log else {
            return true;
        };
        if log.failed {
            return false;
        }
        if !self.core.is_late_exit(fact) {
            log.record(fact, now);
        }
        true
    }

    /// Applies a fact to the core and performs what it returns. Only a spawn awaits (the
    /// node's `pre_start`); the other effects are performed in place, so the future of a
    /// message stays small.
    async fn feed(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        fact: RunFact,
    ) -> Result<(), ActorProcessingErr> {
        let now = clock::now();
        if !self.record(&fact, now) {
            return Ok(()); // the run was failed; nothing more is applied
        }
        let effects = self.core.apply(fact, now);
        if let Some(log) = &mut self.log {
            if let RunPhase::Ended(status) = self.core.phase()
                && log.header.finished.is_none()
            {
                (log.header).keep_settled(self.core.requests(), self.core.signal_ids());
                log.finished(*status, now);
            }
            if log.holds() {
                log.held.push_back((log.appended, effects));
                return Ok(());
            }
        }
        self.perform_all(myself, effects, now).await
    }

    /// Performs effects in order. Only a spawn awaits.
    async fn perform_all(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        mut effects: Vec<RunEffect>,
        now: Time,
    ) -> Result<(), ActorProcessingErr> {
        for effect in effects.drain(..) {
            match effect {
                // A spawn that failed fails the supervisor: the orchestrator ends the run.
                RunEffect::Spawn {
                    node,
                    generation,
                    start,
                } => self.spawn(myself, node, generation, start).await?,
                effect => self.perform(myself, effect, now),
            }
        }
        self.core.recycle(effects);
        Ok(())
    }

    fn perform(&mut self, myself: &ActorRef<SupervisorMsg>, effect: RunEffect, now: Time) {
        match effect {
            RunEffect::Spawn { .. } => {} // awaited by `feed`
            RunEffect::Tell { child, resolved } => self.tell(child, resolved),
            RunEffect::Cancel { node, reason } => self.cancel(node, reason),
            RunEffect::Answer {
                node,
                request_id,
                answer,
            } => {
                if let Some(actor) = &self.actors[node.ix()] {
                    // A gate that already stopped has reported its end: nothing waits.
                    let _ = actor.cast(NodeMsg::Input { request_id, answer });
                }
            }
            RunEffect::Resolved {
                request_id,
                outcome,
            } => (self.resolving).tell(&request_id, outcome.map_err(RunCommandError::from)),
            RunEffect::Request(request) => self.request_changed(request),
            RunEffect::Signaled { signal_id, outcome } => {
                if !matches!(outcome, Ok(Signaled::Duplicate)) {
                    self.signal_taken(signal_id.clone());
                }
                let ack = outcome
                    .map(|outcome| SignalAck {
                        signal_id: signal_id.clone(),
                        outcome,
                    })
                    .map_err(RunCommandError::Signal);
                self.signalling.tell(&signal_id, ack);
            }
            RunEffect::Kill { node } => self.actors[node.ix()].iter().for_each(|a| a.kill()),
            RunEffect::Recheck {
                node,
                generation,
                cause,
            } => {
                // Our own mailbox: only gone once the supervisor itself is stopping.
                let _ = myself.cast(SupervisorMsg::NodeExited {
                    node,
                    generation,
                    cause,
                });
            }
            RunEffect::ArmTimer { due, timer } => {
                myself.send_after(due.since(now), move || SupervisorMsg::Timer(timer));
            }
            RunEffect::Unreached(end) => self.unreached_span(&end),
            RunEffect::Emitted { seq } => self.emitted(seq),
            RunEffect::Metric(metric) => self.metric(&metric),
            RunEffect::Finish(result) => self.finish(myself, result),
        }
    }

    /// Tells the orchestrator the run took a signal, so that a repeat after its end is
    /// known as one.
    fn signal_taken(&self, signal_id: Arc<str>) {
        if let Some(orchestrator) = &self.orchestrator {
            let _ = orchestrator.cast(OrchestratorMsg::SignalTaken {
                run_id: self.run.plan.run_id.to_string(),
                signal_id,
            });
        }
    }

    /// Tells the orchestrator how a request is now, for listings and answers by id.
    fn request_changed(&self, request: Arc<InputRequest>) {
        if let Some(orchestrator) = &self.orchestrator {
            // An orchestrator that is gone has nobody left to ask.
            let _ = orchestrator.cast(OrchestratorMsg::InputChanged {
                run_id: self.run.plan.run_id.to_string(),
                request,
            });
        }
    }

    fn cancel(&self, node: NodeIx, reason: CancelReason) {
        if let Some(actor) = &self.actors[node.ix()] {
            // An actor that already stopped has reported its end, or its exit is on its
            // way: either way the core hears of it.
            let _ = actor.cast(NodeMsg::Cancel(reason));
        }
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        node: NodeIx,
        generation: u32,
        start: NodeStart,
    ) -> Result<(), ActorProcessingErr> {
        let (start, late) = self.hold_back(node, start);
        let args = NodeArgs {
            run: self.run.clone(),
            node,
            parent_spans: self.parent_spans(&start),
            start,
        };
        // Boxed: ractor's spawn future is large, and this one is awaited inside every
        // message's handler, whose future would otherwise carry (and move) it whole.
        let spawning = Box::pin(Actor::spawn_linked(
            None,
            NodeActor,
            args,
            myself.get_cell(),
        ));
        let (actor, _) = spawning.await?;
        self.by_actor.insert(actor.get_id(), (node, generation));
        self.faults_on_spawn(node, &actor, late);
        self.actors[node.ix()] = Some(actor);
        Ok(())
    }

    /// A node the faults delay gets every resolution late, none with the spawn.
    fn hold_back(
        &self,
        node: NodeIx,
        start: NodeStart,
    ) -> (NodeStart, Option<(std::time::Duration, Vec<ParentEnded>)>) {
        match (delay_to(self, node), start) {
            (Some(delay), NodeStart::Reached(resolved)) => {
                (NodeStart::Reached(Vec::new()), Some((delay, resolved)))
            }
            (_, start) => (start, None),
        }
    }

    /// The spans of the parents a start carries, for the node span's links.
    fn parent_spans(&self, start: &NodeStart) -> Vec<(NodeIx, SpanContext)> {
        let NodeStart::Reached(resolved) = start else {
            return Vec::new();
        };
        if self.spans.is_empty() {
            return Vec::new();
        }
        resolved
            .iter()
            .filter_map(|r| Some((r.end.node, self.spans[r.end.node.ix()].clone()?)))
            .collect()
    }

    /// The fault hooks of a new node actor: registered, sent its held-back resolutions
    /// late, killed as it starts when the faults say so.
    fn faults_on_spawn(
        &self,
        node: NodeIx,
        actor: &ActorRef<NodeMsg>,
        late: Option<(std::time::Duration, Vec<ParentEnded>)>,
    ) {
        let (run_id, node_ref) = (&self.run.plan.run_id, self.run.plan.node_ref(node));
        let faults = &self.run.faults;
        faults.spawned(run_id, Some(node_ref), actor);
        for (delay, r) in late
            .into_iter()
            .flat_map(|(d, rs)| rs.into_iter().map(move |r| (d, r)))
        {
            let msg = self.parent_ended(r);
            actor.send_after(delay, move || msg);
        }
        if faults.kill_at_spawn(run_id, node_ref) {
            // Killed as it starts: it is respawned and its parents' ends replayed.
            actor.kill();
        }
    }

    fn parent_ended(&self, resolved: ParentEnded) -> NodeMsg {
        let span = self.spans.get(resolved.end.node.ix()).cloned().flatten();
        NodeMsg::ParentEnded { resolved, span }
    }

    /// Sends an edge resolution to the child's live actor (late, when the faults delay it). A
    /// child actor that just died is respawned and replayed, so a lost message changes
    /// nothing.
    fn tell(&self, child: NodeIx, resolved: ParentEnded) {
        let Some(actor) = &self.actors[child.ix()] else {
            return;
        };
        let msg = self.parent_ended(resolved);
        match delay_to(self, child) {
            Some(delay) => {
                actor.send_after(delay, move || msg);
            }
            None => {
                let _ = actor.cast(msg);
            }
        }
    }

    /// A node the run never reached gets a span of its own, so the whole DAG shows in the
    /// trace.
    fn unreached_span(&mut self, end: &NodeEnd) {
        let run = &self.run;
        let graph = &run.plan.graph;
        let span = NodeSpans::new(&run.span).close(&run.span, graph, graph.node(end.node), end);
        self.keep_span(end.node, span);
    }

    /// Sends the run's new event to live subscribers.
    fn emitted(&mut self, seq: u64) {
        let Some(event) = self.core.events().get(seq as usize - 1) else {
            return;
        };
        self.published = seq as usize;
        if let Some(host) = self.run.plan.registry.remote() {
            attempt_stored(&**host, event);
        }
        if event.kind.is_terminal() {
            self.run
                .faults
                .ended(&self.run.plan.run_id, Some(&event.node_id));
        }
        if !self.subscribers.is_empty() {
            // A subscriber a whole buffer behind is dropped: its feed closes, and it
            // subscribes again after the last event it has.
            self.subscribers
                .retain(|s| s.try_send(event.clone()).is_ok());
        }
    }

    fn metric(&self, metric: &Metric) {
        let metrics = &self.run.metrics;
        let component = |node: NodeIx| &self.run.plan.graph.node(node).component_id;
        match metric {
            Metric::Queued(delta) => metrics.queued(*delta),
            Metric::Running(delta) => metrics.running(*delta),
            Metric::Attempt { node, error_type } => {
                metrics.attempt(component(*node), error_type.as_deref());
            }
            Metric::QueueWait { node, seconds } => metrics.queue_wait(component(*node), *seconds),
            Metric::NodeEnded {
                node,
                terminal,
                seconds,
            } => metrics.node_ended(component(*node), terminal.as_str(), *seconds),
            Metric::RunEnded { status, seconds } => metrics.run_ended(status.as_str(), *seconds),
        }
    }

    /// The events so far, and the live ones to come unless the run has ended.
    fn subscribe(&mut self, asked: Subscription) -> EventFeed {
        if let Some(done) = &self.final_events {
            return EventFeed {
                backlog: asked.backlog(done),
                live: None,
            };
        }
        let (tx, rx) = mpsc::channel(asked.capacity());
        self.subscribers.push(tx);
        EventFeed {
            backlog: asked.backlog(&self.core.events()[..self.published]),
            live: Some(rx),
        }
    }

    /// The run's state now: from its result once it has one.
    fn snapshot(&self) -> RunSnapshot {
        if let Some(result) = self.result_tx.borrow().as_ref() {
            return RunSnapshot::of_result(result, self.trace_id.clone());
        }
        RunSnapshot {
            trace_id: self.trace_id.clone(),
            ..self.core.snapshot()
        }
    }

    fn finish(&mut self, myself: &ActorRef<SupervisorMsg>, result: Arc<RunResult>) {
        self.run.faults.ended(&self.run.plan.run_id, None);
        run_span_status(&self.run.span, &result);
        // The orchestrator learns first, so that anyone who sees the result and then asks
        // the orchestrator about the run finds it finished (its mailbox is FIFO).
        let events = Arc::new(self.core.take_events());
        self.final_events = Some(events.clone());
        if let Some(orchestrator) = &self.orchestrator {
            // An orchestrator that is gone has no registry left to update.
            let _ = orchestrator.cast(OrchestratorMsg::RunEnded {
                bytes: crate::runtime::semantics::result::retained_bytes(&result, &events),
                result: result.clone(),
                trace_id: self.trace_id.clone(),
                events,
            });
        }
        // Stored even when nobody waits yet (a resumed run): whoever asks later sees it.
        self.result_tx.send_replace(Some(result));
        // Their feeds close only now: a subscriber that sees its feed end finds the result
        // there (one whose feed closed before the run ended fell behind).
        self.subscribers.clear();
        // Drain rather than stop: requests already queued (status, events) are answered.
        let _ = myself.drain();
    }
}

/// Tells the remote host that the attempt `event` ends is stored: its events are
/// published only once their facts are journaled, so a worker's completion of it may be
/// acknowledged now.
fn attempt_stored(host: &dyn RemoteHost, event: &TraceEvent) {
    let ends = event.kind == EventType::Retrying || event.kind.is_terminal();
    if let (true, Some(attempt)) = (ends, event.metadata.as_ref().and_then(|m| m.attempt)) {
        host.stored(AttemptId::new(&event.run_id, &event.node_id, attempt).as_str());
    }
}

/// Answers a question; the asker may have given up waiting, which is no error.
fn answer<T>(reply: RpcReplyPort<T>, value: T) -> Result<(), ActorProcessingErr> {
    let _ = reply.send(value);
    Ok(())
}

/// The plan the run's cores share.
fn plan_of(args: &SupervisorArgs, slots: Option<&SlotLink>) -> Arc<RunPlan> {
    let queued = slots.map_or_else(|| vec![false; args.graph.len()], SlotLink::queued);
    let plan = Arc::new(RunPlan {
        run_id: args.run_id.clone(),
        graph: args.graph.clone(),
        registry: args.registry.clone(),
        inputs: args.inputs.clone(),
        max_output_bytes: args.config.limits.max_output_bytes,
        cancel_grace: args.config.cancel_grace,
        seed: args.seed,
        queued,
        metrics: args.metrics.enabled(),
        retry_lost_attempts: args.config.resume.retry_lost_attempts,
        gate_timeout: args.config.gates.default_timeout(),
        metadata: args.metadata.clone(),
    });
    args.faults.plan(&plan);
    plan
}

/// The run's span, joining the caller's trace when a `traceparent` was given.
fn run_span(run_id: &str, title: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(target: TARGET, SPAN_RUN, workflow.title = %title);
    if span.is_disabled() {
        return span;
    }
    span.set_attribute(RUN_ID, run_id.to_owned());
    if let Some(tp) = traceparent {
        // A malformed traceparent leaves the run a root span of its own trace.
        let _ = span.set_parent(crate::runtime::telemetry::extract_traceparent(tp));
    }
    span
}

/// The trace of the run span, or else of the caller's `traceparent`.
fn trace_id_of(span: &tracing::Span, traceparent: Option<&str>) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    if !span.is_disabled() {
        let cx = span.context();
        let span_context = cx.span().span_context().clone();
        if span_context.is_valid() {
            return Some(span_context.trace_id().to_string());
        }
    }
    traceparent.and_then(crate::runtime::telemetry::traceparent_trace_id)
}

/// The run span's final status.
fn run_span_status(span: &tracing::Span, result: &RunResult) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute(RUN_STATUS, result.status.as_str());
    if let (false, Some(error)) = (result.success, &result.error) {
        span.set_status(opentelemetry::trace::Status::error(error.clone()));
    }
}

/// How late the resolutions sent to `node` arrive (the faults' say).
fn delay_to(state: &SupervisorState, node: NodeIx) -> Option<std::time::Duration> {
    let plan = &state.run.plan;
    state
        .run
        .faults
        .delay_resolutions(&plan.run_id, plan.node_ref(node))
}
