//! The node actor: one per DAG node, plumbing around its [`NodeCore`].
//!
//! Every message becomes one fact for the core, and every effect the core returns is
//! performed here: reports go to the supervisor, slots are asked of the limiter, attempts
//! run as tasks (so the mailbox stays responsive to `Cancel`) owned by an
//! [`AttemptGuard`], timers are armed with `send_after`, spans are opened and closed. The
//! actor decides nothing: no join, no retry budget, no policy. A component failure is a
//! message ([`NodeMsg::AttemptFinished`]), never an `Err` from `handle`, which would kill
//! the actor. Its last act is its end's report; the supervisor then resolves its edges.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanContext;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::actors::clock;
use crate::actors::shared::RunShared;
use crate::actors::slots::SlotGrant;
use crate::messages::node::NodeMsg;
use crate::messages::supervisor::SupervisorMsg;
use crate::runtime::components::{
    CRASH_ERROR, ComponentError, ComponentResult, ExecutionContext, Placement, VALIDATION_ERROR,
};
use crate::runtime::definition::RunnerKindDef;
use crate::runtime::definition::graph::NodeIx;
use crate::runtime::semantics::node_core::{
    AttemptLimit, AttemptSpec, NodeCore, NodeEffect, NodeFact, NodeStart,
};
use crate::runtime::semantics::report::{
    InputAsked, NodeEnd, NodeReport, RetryReport, StartReport,
};
use crate::runtime::semantics::time::Time;
use crate::runtime::telemetry::spans::NodeSpans;
use crate::runtime::telemetry::{ATTEMPT, ERROR_TYPE};

/// The node actor's behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeActor;

/// Start-up arguments.
#[derive(Debug)]
pub(crate) struct NodeArgs {
    /// The run.
    pub(crate) run: Arc<RunShared>,
    /// Which node.
    pub(crate) node: NodeIx,
    /// How it begins (its parents' resolutions so far, or a resume after a crash).
    pub(crate) start: NodeStart,
    /// The spans of the parents whose resolutions `start` carries, for the links.
    pub(crate) parent_spans: Vec<(NodeIx, SpanContext)>,
}

/// Owns a running attempt: dropping it (the node ended, or its actor was killed and its
/// state dropped) fires the attempt's token and aborts its task, so no work outlives its
/// node, and gives its slots back.
#[derive(Debug)]
struct AttemptGuard {
    attempt: u32,
    /// The attempt's task; `None` when it finished at its first poll.
    task: Option<JoinHandle<()>>,
    token: CancellationToken,
    /// Slots held while the attempt runs: given back when the guard goes.
    _slot: Option<SlotGrant>,
    /// The attempt's span, closed when the attempt ends.
    span: tracing::Span,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

thread_local! {
    /// One effect vector per worker thread, lent to the node core a node actor feeds.
    static EFFECTS: std::cell::Cell<Vec<NodeEffect>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The node actor's state.
#[derive(Debug)]
pub(crate) struct NodeState {
    core: NodeCore,
    run: Arc<RunShared>,
    spans: NodeSpans,
    attempt: Option<AttemptGuard>,
    /// The slots asked for: `(ticket, attempt)`.
    waiting: Option<(u64, u32)>,
    /// A grant that arrived, until the attempt it is for takes it (or it is dropped).
    grant: Option<SlotGrant>,
    /// The start of an attempt not reported yet: one that finishes at its first poll
    /// travels with its end as one [`SupervisorMsg::NodeRan`].
    held: Option<StartReport>,
    /// How the node begins, handled as the actor starts.
    start: Option<NodeStart>,
    /// The spans of the parents `start` carries, for the links, handled with it.
    parent_spans: Vec<(NodeIx, SpanContext)>,
}

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    /// Runs on the spawning supervisor (ractor awaits `pre_start` in `spawn`): kept to
    /// moving the arguments in; the core's first fact is applied in `post_start`, on the
    /// node's own task.
    async fn pre_start(
        &self,
        _myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        Ok(NodeState {
            core: NodeCore::new(args.run.plan.clone(), args.node),
            spans: NodeSpans::new(&args.run.span),
            parent_spans: args.parent_spans,
            run: args.run,
            attempt: None,
            waiting: None,
            grant: None,
            held: None,
            start: Some(args.start),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        for (parent, span) in std::mem::take(&mut state.parent_spans) {
            state
                .spans
                .parent_ended(state.core.node(), parent, Some(span));
        }
        if let Some(start) = state.start.take() {
            state.feed(&myself, NodeFact::Spawned(start));
        }
        Ok(())
    }

    /// What the node's work leaves behind is dropped here, on its own task, not in the
    /// supervisor that receives the final state with the exit.
    async fn post_stop(
        &self,
        _myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        state.attempt = None;
        state.grant = None;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        message: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(fact) = state.fact_of(message) {
            state.feed(&myself, fact);
        }
        Ok(())
    }
}

impl NodeState {
    /// The fact a message carries, after the plumbing it needs (a parent's span for the
    /// links, an attempt span's error, a grant put aside). `None`: nothing for the core.
    fn fact_of(&mut self, message: NodeMsg) -> Option<NodeFact> {
        match message {
            NodeMsg::ParentEnded { resolved, span } => {
                if self.core.is_pending() {
                    self.spans
                        .parent_ended(self.core.node(), resolved.end.node, span);
                }
                Some(NodeFact::ParentEnded(resolved))
            }
            NodeMsg::Cancel(reason) => Some(NodeFact::CancelRequested(reason)),
            NodeMsg::AttemptFinished { attempt, result } => {
                self.attempt_over(attempt, &result);
                Some(NodeFact::AttemptFinished {
                    attempt,
                    outcome: result,
                })
            }
            NodeMsg::Timer(timer) => Some(NodeFact::TimerFired(timer)),
            NodeMsg::Input {
                request_id,
                answer: Ok(output),
            } => Some(NodeFact::InputAnswered { request_id, output }),
            NodeMsg::Input {
                request_id,
                answer: Err(error),
            } => Some(NodeFact::InputExpired { request_id, error }),
            NodeMsg::SlotGranted { ticket, grant } => self.on_grant(ticket, grant),
        }
    }

    /// Applies a fact and performs its effects; an attempt that finishes at its first
    /// poll is the next fact.
    fn feed(&mut self, myself: &ActorRef<NodeMsg>, fact: NodeFact) {
        // One clock read per message: an attempt that finished at its first poll took
        // no time worth a second read.
        let now = clock::now();
        let mut next = Some(fact);
        while let Some(fact) = next.take() {
            (self.run.faults).node_fact(&self.run.plan.run_id, self.core.ix(), &fact, now);
            // The effect vector is the worker thread's, lent to the core: a node lives
            // for a few facts, and would otherwise allocate one of its own.
            self.core.recycle(EFFECTS.take());
            let mut effects = self.core.apply(fact, now);
            for effect in effects.drain(..) {
                // Only a starting attempt yields a fact, and it is its batch's last effect.
                if let Some(fact) = self.perform(myself, effect, now) {
                    next = Some(fact);
                }
            }
            EFFECTS.set(effects);
        }
        self.flush_held();
        // A grant no attempt took is dropped here, which frees its slots.
        self.grant = None;
    }

    fn perform(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        effect: NodeEffect,
        now: Time,
    ) -> Option<NodeFact> {
        match effect {
            NodeEffect::Report(report) => self.report(report),
            NodeEffect::AcquireSlots { attempt } => self.acquire(myself, attempt),
            NodeEffect::ReleaseQueue { attempt } => self.release_queue(attempt),
            NodeEffect::StartAttempt(spec) => return self.start_attempt(myself, spec),
            NodeEffect::CancelAttempt { attempt } => {
                if let Some(guard) = self.attempt.as_ref().filter(|g| g.attempt == attempt) {
                    guard.token.cancel();
                }
            }
            NodeEffect::ArmTimer { due, timer } => {
                myself.send_after(due.since(now), move || NodeMsg::Timer(timer));
            }
            NodeEffect::Stop => {
                // Dropping the guard stops the attempt's work.
                self.attempt = None;
                myself.stop(None);
            }
        }
        None
    }

    /// Sends a report; a start waits for what follows it (see [`NodeState::held`]).
    fn report(&mut self, report: NodeReport) {
        if !matches!(report, NodeReport::Ended(_)) {
            self.flush_held();
        }
        match report {
            NodeReport::Queued(start) => self.report_queued(start),
            NodeReport::Started(start) => {
                self.open_spans(&start);
                self.held = Some(start);
            }
            NodeReport::Retrying(retry) => self.report_retrying(retry),
            NodeReport::AwaitingInput(asked) => self.report_awaiting(asked),
            NodeReport::Ended(end) => self.report_end(end),
        }
    }

    fn report_awaiting(&mut self, asked: Arc<InputAsked>) {
        self.spans.event("awaiting_input", || {
            vec![
                KeyValue::new(ATTEMPT, i64::from(asked.attempt)),
                KeyValue::new("request_id", asked.request_id.to_string()),
            ]
        });
        let report = NodeReport::AwaitingInput(asked);
        self.send(SupervisorMsg::Node { report, span: None });
    }

    fn report_queued(&mut self, start: StartReport) {
        self.open_spans(&start);
        self.spans.event("queued", || {
            vec![KeyValue::new(ATTEMPT, i64::from(start.attempt))]
        });
        let report = NodeReport::Queued(start);
        self.send(SupervisorMsg::Node { report, span: None });
    }

    fn report_retrying(&mut self, retry: RetryReport) {
        self.spans.event("retrying", || {
            vec![
                KeyValue::new(ATTEMPT, i64::from(retry.attempt)),
                KeyValue::new("delay_ms", retry.delay.as_millis() as i64),
                KeyValue::new(ERROR_TYPE, retry.error.error_type.clone()),
            ]
        });
        let report = NodeReport::Retrying(retry);
        self.send(SupervisorMsg::Node { report, span: None });
    }

    /// The end, with the start it follows when that start was held back.
    fn report_end(&mut self, end: Arc<NodeEnd>) {
        let run = &self.run;
        let span = self
            .spans
            .close(&run.span, &run.plan.graph, self.core.node(), &end)
            .map(Box::new);
        let msg = match self.held.take() {
            Some(start) => SupervisorMsg::NodeRan { start, end, span },
            None => SupervisorMsg::Node {
                report: NodeReport::Ended(end),
                span,
            },
        };
        self.send(msg);
    }

    fn open_spans(&mut self, start: &StartReport) {
        let run = &self.run;
        self.spans.open(
            &run.span,
            &run.plan.graph,
            self.core.node(),
            &start.triggered_by,
        );
    }

    fn flush_held(&mut self) {
        if let Some(start) = self.held.take() {
            self.send(SupervisorMsg::Node {
                report: NodeReport::Started(start),
                span: None,
            });
        }
    }

    fn send(&self, msg: SupervisorMsg) {
        // The supervisor outlives its nodes; if it is gone the run is being torn down and
        // the orchestrator ends it, so a lost report changes nothing.
        let _ = self.run.supervisor.cast(msg);
    }

    fn acquire(&mut self, myself: &ActorRef<NodeMsg>, attempt: u32) {
        let Some(link) = self.run.slots.as_ref() else {
            return;
        };
        let Some(needs) = link.needs(self.core.ix()).cloned() else {
            return;
        };
        let ticket = link.ticket();
        self.waiting = Some((ticket, attempt));
        link.slots().acquire(ticket, needs, myself.clone());
    }

    fn release_queue(&mut self, attempt: u32) {
        if let (Some((ticket, waiting)), Some(link)) = (self.waiting, &self.run.slots)
            && waiting == attempt
        {
            self.waiting = None;
            link.slots().cancel(ticket);
        }
    }

    fn on_grant(&mut self, ticket: u64, grant: SlotGrant) -> Option<NodeFact> {
        let (waiting, attempt) = self.waiting?;
        if waiting != ticket {
            return None; // a stale grant: dropping it frees the slots
        }
        self.waiting = None;
        self.grant = Some(grant);
        Some(NodeFact::SlotsGranted { attempt })
    }

    /// Runs the component of attempt `spec.attempt` as a task, holding the slots it was
    /// granted; one that finishes at its first poll is returned as the next fact instead.
    fn start_attempt(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        mut spec: AttemptSpec,
    ) -> Option<NodeFact> {
        let (attempt, limit) = (spec.attempt, spec.limit.take());
        let token = CancellationToken::new();
        let span = self.spans.attempt(attempt);
        self.spans.event("started", || {
            vec![KeyValue::new(ATTEMPT, i64::from(attempt))]
        });
        let mut work = self.attempt_future(self.context(spec, token.clone()));
        let node_ref = &self.core.node().node_ref;
        let must_die = (self.run.faults).kill_at_attempt(&self.run.plan.run_id, node_ref, attempt);
        // A component that finishes at its first poll (echo, branch, ...) is handled at
        // once, without a task or a message: the common case of a scheduler-bound run.
        let done = (!must_die)
            .then(|| span.in_scope(|| work.as_mut().now_or_never()))
            .flatten();
        let task = done.is_none().then(|| {
            self.flush_held();
            let run = run_with_limit(work, limit, token.clone());
            spawn_attempt(myself.clone(), run, attempt, span.clone())
        });
        let _slot = self.grant.take();
        self.attempt = Some(AttemptGuard {
            attempt,
            task,
            token,
            _slot,
            span,
        });
        if must_die {
            myself.kill();
        }
        let outcome = done?;
        self.attempt_over(attempt, &outcome);
        Some(NodeFact::AttemptFinished { attempt, outcome })
    }

    /// What the component of attempt `spec` sees.
    fn context(&self, spec: AttemptSpec, cancel: CancellationToken) -> ExecutionContext {
        let node = self.core.node();
        ExecutionContext {
            run_id: self.run.plan.run_id.clone(),
            node_ref: node.node_ref.clone(),
            attempt: spec.attempt,
            params: node.params.clone(),
            inputs: spec.inputs,
            triggered_by: spec.triggered_by,
            failure: spec.failure,
            cancel,
            placement: Placement::default(),
            output_limit: self.run.plan.max_output_bytes,
        }
    }

    /// The attempt's work: the component's future, its panics turned into `CrashError`.
    /// A component that hands the attempt to a worker gets where to say which took it
    /// (only those: it costs the run's `Arc` on every attempt otherwise).
    fn attempt_future(&self, mut ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        let component = self.run.plan.registry.for_node(self.core.node());
        if component
            .as_ref()
            .is_some_and(|c| c.meta().default_runner == RunnerKindDef::Remote)
        {
            ctx.placement = Placement::new(self.run.clone(), self.core.ix(), ctx.attempt);
        }
        let inject_panic =
            (self.run.faults).panic_at_attempt(&ctx.run_id, &ctx.node_ref, ctx.attempt);
        async move {
            let Some(component) = component else {
                return Err(ComponentError::fatal(
                    VALIDATION_ERROR,
                    "component vanished from the registry",
                ));
            };
            let caught = AssertUnwindSafe(async move {
                assert!(!inject_panic, "chaos: injected panic");
                component.execute(ctx).await
            })
            .catch_unwind()
            .await;
            caught.unwrap_or_else(|panic| {
                Err(ComponentError::retryable(CRASH_ERROR, panic_text(&panic)))
            })
        }
        .boxed()
    }

    /// Attempt `attempt` ended: its span records a failure, and its guard goes, which
    /// gives its slots back before anything that follows (a retry queues again).
    fn attempt_over(&mut self, attempt: u32, result: &ComponentResult) {
        if self.attempt.as_ref().is_none_or(|g| g.attempt != attempt) {
            return; // a stale attempt: the current one is another
        }
        if let (Err(error), Some(guard)) = (result, &self.attempt) {
            NodeSpans::attempt_failed(&guard.span, error);
        }
        self.attempt = None;
    }
}

/// Runs the rest of an attempt as a task and reports its end.
fn spawn_attempt(
    myself: ActorRef<NodeMsg>,
    work: BoxFuture<'static, ComponentResult>,
    attempt: u32,
    span: tracing::Span,
) -> JoinHandle<()> {
    tokio::spawn(
        async move {
            let result = work.await;
            // The node may have ended (abandoned this attempt) and stopped: nothing to tell.
            let _ = myself.cast(NodeMsg::AttemptFinished { attempt, result });
        }
        .instrument(span),
    )
}

/// The attempt under its time limit: past it, the token fires and the attempt fails with
/// the error the core gave for it.
fn run_with_limit(
    work: BoxFuture<'static, ComponentResult>,
    limit: Option<AttemptLimit>,
    token: CancellationToken,
) -> BoxFuture<'static, ComponentResult> {
    let Some(limit) = limit else {
        return work;
    };
    async move {
        match tokio::time::timeout(limit.after, work).await {
            Ok(result) => result,
            Err(_) => {
                token.cancel();
                Err(limit.error)
            }
        }
    }
    .boxed()
}

/// The message of a caught panic.
pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("component panicked: {msg}")
}
