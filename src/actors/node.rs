//! The node actor: one per DAG node.
//!
//! It holds the node's [`JoinState`], collects its parents' ends, resolves its inputs,
//! runs attempts as tasks (so its mailbox stays responsive to `Cancel`), applies the
//! retry policy and timeouts, and reports every transition to its supervisor. Its last
//! act is [`SupervisorMsg::NodeEnded`]; the supervisor then resolves its outgoing edges.
//! A component failure is a message ([`NodeMsg::AttemptFinished`]), never an `Err` from
//! `handle`, which would kill the actor.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actors::shared::RunShared;
use crate::messages::limiter::{LimiterMsg, SlotGrant};
use crate::messages::node::{CancelReason, NodeEnd, NodeMsg, ParentEnded};
use crate::messages::supervisor::{StartReport, SupervisorMsg};
use crate::runtime::components::{
    CRASH_ERROR, ComponentError, ComponentResult, ExecutionContext, FailureInfo, FailureReason,
    OUTPUT_LIMIT_ERROR, QUEUE_TIMEOUT_ERROR, TIMEOUT_ERROR,
};
use crate::runtime::definition::graph::{EdgeIx, EdgeKind, Join, Node, NodeIx, NodeMode};
use crate::runtime::semantics::inputs::{ParentOutput, resolve_inputs};
use crate::runtime::semantics::join::{JoinDecision, JoinState};
use crate::runtime::semantics::outcome::Terminal;
use crate::runtime::semantics::retry::{delay_after, should_retry};
use crate::runtime::telemetry::ATTEMPT;
use crate::runtime::telemetry::spans::NodeSpans;
use opentelemetry::KeyValue;
use tracing::Instrument;

/// The node actor's behaviour.
#[derive(Debug, Clone, Copy)]
pub struct NodeActor;

/// An attempt that died with its actor, handed to the respawned node.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The attempt that crashed.
    pub failed_attempt: u32,
    /// The `CrashError` it ended with.
    pub error: ComponentError,
    /// The join's deciding edges, kept across the crash.
    pub triggered_by: Arc<[EdgeIx]>,
}

/// Start-up arguments.
#[derive(Debug)]
pub struct NodeArgs {
    /// The run.
    pub run: Arc<RunShared>,
    /// Which node.
    pub node: NodeIx,
    /// Set when the node is respawned after its actor died mid-attempt.
    pub resume: Option<Resume>,
    /// The resolution of the incoming edge whose source ended first, handed over at spawn
    /// instead of through the mailbox.
    pub first: Option<ParentEnded>,
}

/// Where the node is in its life.
#[derive(Debug)]
enum Phase {
    /// Waiting on parents.
    Pending,
    /// Join satisfied; waiting for the slots of attempt `attempt` under `ticket`.
    Queued { attempt: u32, ticket: u64 },
    /// Waiting out the backoff before attempt `next`.
    Backoff { next: u32 },
    /// Attempt `attempt` runs under `guard`.
    Running {
        attempt: u32,
        guard: AttemptGuard,
        cancelling: Option<CancelReason>,
    },
    /// Reported to the supervisor; the actor is stopping.
    Ended,
}

/// Owns a running attempt: dropping it (the node ended, or its actor was killed and its
/// state dropped) fires the attempt's token and aborts its task, so no work outlives its
/// node.
#[derive(Debug)]
struct AttemptGuard {
    /// The attempt's task; `None` when it finished at its first poll.
    task: Option<JoinHandle<()>>,
    token: CancellationToken,
    /// Slots held while the attempt runs; released when the guard drops.
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

/// The node actor's state.
#[derive(Debug)]
pub struct NodeState {
    run: Arc<RunShared>,
    ix: NodeIx,
    join: JoinState,
    /// Ends received so far of the parents its mappings read, in arrival order.
    parents: Vec<Arc<NodeEnd>>,
    /// Parents with an `error` edge to this node, sorted.
    error_sources: Vec<NodeIx>,
    triggered_by: Arc<[EdgeIx]>,
    failure: Option<Arc<FailureInfo>>,
    inputs: Option<crate::runtime::definition::JsonObject>,
    first_started: Option<Instant>,
    phase: Phase,
    resume: Option<Resume>,
    spans: NodeSpans,
    /// The start of an attempt that finished at its first poll, not yet reported.
    held_start: Option<StartReport>,
    /// The first resolution, handled as the actor starts.
    first: Option<ParentEnded>,
}

impl NodeState {
    fn node(&self) -> &Node {
        self.run.graph.node(self.ix)
    }
}

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    /// Runs on the spawning supervisor (ractor awaits `pre_start` in `spawn`): kept to
    /// moving the arguments in; the join and the rest are built in `post_start`, on the
    /// node's own task.
    async fn pre_start(
        &self,
        _myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let join = args.run.graph.node(args.node).join;
        Ok(NodeState {
            spans: NodeSpans::new(&args.run.span),
            error_sources: Vec::new(),
            join: JoinState::new(join, &[]),
            run: args.run,
            ix: args.node,
            parents: Vec::new(),
            triggered_by: Arc::from([]),
            failure: None,
            inputs: None,
            first_started: None,
            phase: Phase::Pending,
            resume: args.resume,
            first: args.first,
            held_start: None,
        })
    }

    /// What the node's work leaves behind is dropped here, on its own task, not in the
    /// supervisor that receives the final state with the exit.
    async fn post_stop(
        &self,
        _myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        state.join = JoinState::new(state.node().join, &[]);
        state.parents = Vec::new();
        state.error_sources = Vec::new();
        state.inputs = None;
        state.phase = Phase::Ended;
        Ok(())
    }

    async fn post_start(
        &self,
        myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let graph = &state.run.graph;
        let node = graph.node(state.ix);
        let mut error_sources: Vec<NodeIx> = node
            .incoming
            .iter()
            .map(|e| graph.edge(*e))
            .filter(|e| e.kind == EdgeKind::Error)
            .map(|e| e.source)
            .collect();
        error_sources.sort_unstable();
        error_sources.dedup();
        state.error_sources = error_sources;
        state.join = JoinState::new(node.join, &node.incoming);
        if let Some(resume) = state.resume.take() {
            state.triggered_by = resume.triggered_by.clone();
            let run = state.run.clone();
            let node = run.graph.node(state.ix);
            state
                .spans
                .open(&run.span, &run.graph, node, &state.triggered_by);
            state.first_started = Some(Instant::now());
            after_failure(&myself, state, resume.failed_attempt, resume.error);
        } else if let JoinDecision::Run { triggered_by } = state.join.initial() {
            fire(&myself, state, triggered_by);
        } else if let Some(first) = state.first.take() {
            on_parent_ended(&myself, state, first);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        message: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::ParentEnded(parent) => on_parent_ended(&myself, state, parent),
            NodeMsg::Cancel(reason) => on_cancel(&myself, state, reason),
            NodeMsg::AttemptFinished { attempt, result } => {
                on_attempt_finished(&myself, state, attempt, result);
            }
            NodeMsg::RetryDue { attempt } => {
                if matches!(state.phase, Phase::Backoff { next } if next == attempt) {
                    begin_attempt(&myself, state, attempt, false);
                }
            }
            NodeMsg::GraceExpired { attempt } => on_grace_expired(&myself, state, attempt),
            NodeMsg::SlotGranted { ticket, grant } => {
                on_slot_granted(&myself, state, ticket, grant)
            }
            NodeMsg::QueueTimedOut { ticket } => on_queue_timed_out(&myself, state, ticket),
        }
        Ok(())
    }
}

fn on_parent_ended(myself: &ActorRef<NodeMsg>, state: &mut NodeState, parent: ParentEnded) {
    let ParentEnded {
        edge,
        resolution,
        end,
    } = parent;
    if !matches!(state.phase, Phase::Pending) || state.join.is_decided() {
        return; // decided already: later edges change nothing (SEMANTICS.md §2)
    }
    remember_parent(state, &end);
    state
        .spans
        .parent_ended(state.run.graph.node(state.ix), &end);
    match state.join.on_edge(edge, resolution) {
        JoinDecision::Run { triggered_by } => fire(myself, state, triggered_by),
        JoinDecision::Skip { dead_edge } => skip(myself, state, dead_edge, &end),
        JoinDecision::Wait | JoinDecision::Ignored => {}
    }
}

/// The join fired: record why, find the failure it handles, start attempt 1.
fn fire(myself: &ActorRef<NodeMsg>, state: &mut NodeState, triggered_by: Vec<EdgeIx>) {
    let run = state.run.clone();
    state.spans.open(
        &run.span,
        &run.graph,
        run.graph.node(state.ix),
        &triggered_by,
    );
    state.triggered_by = triggered_by.into();
    state.first_started = Some(Instant::now());
    begin_attempt(myself, state, 1, true);
}

/// Keeps what the node will need from a parent's end: its output when a mapping reads
/// it, and its failure when the parent has an `error` edge to this node, whichever of
/// its edges arrives first (the first such parent to fail is the failure this node
/// handles). O(mappings) per edge, so wide fan-ins stay linear.
fn remember_parent(state: &mut NodeState, end: &Arc<NodeEnd>) {
    let graph = &state.run.graph;
    if state.failure.is_none()
        && end.terminal == Terminal::Failed
        && state.error_sources.binary_search(&end.node).is_ok()
        && let Some(error) = &end.error
    {
        state.failure = Some(Arc::new(FailureInfo {
            at: graph.node(end.node).node_ref.to_string(),
            reason: FailureReason {
                message: error.message.clone(),
                name: error.error_type.clone(),
            },
        }));
    }
    let mapped = state
        .node()
        .input_mappings
        .iter()
        .any(|m| m.source == end.node);
    if mapped && !state.parents.iter().any(|p| p.node == end.node) {
        state.parents.push(end.clone());
    }
}

fn skip(myself: &ActorRef<NodeMsg>, state: &mut NodeState, dead_edge: EdgeIx, end: &NodeEnd) {
    let graph = &state.run.graph;
    let edge = graph.edge(dead_edge);
    let source = &graph.node(edge.source).node_ref;
    let target = &graph.node(edge.target).node_ref;
    let mut reason = format!(
        "skipped: edge {source}->{target} dead because {source} {}",
        end.terminal.as_str()
    );
    if end.terminal == Terminal::Completed && edge.kind == EdgeKind::Success {
        let port = edge
            .source_handle
            .as_deref()
            .unwrap_or(crate::runtime::semantics::edge::DEFAULT_PORT);
        reason.push_str(&format!(" without activating port `{port}`"));
    }
    let origin = match end.terminal {
        Terminal::Failed | Terminal::Completed => Some(source.clone()),
        Terminal::Skipped | Terminal::Cancelled => end.origin.clone().or(Some(source.clone())),
    };
    if let Some(o) = origin.as_ref().filter(|o| o.as_ref() != source.as_ref()) {
        reason.push_str(&format!(" (origin: {o})"));
    }
    finish(
        myself,
        state,
        Terminal::Skipped,
        EndDetail::reason(reason, origin),
    );
}

/// Resolves inputs, then queues for slots or starts attempt `attempt` at once. `fired`
/// is true for the first attempt right after the join fired (a `first` join withdraws
/// then).
fn begin_attempt(myself: &ActorRef<NodeMsg>, state: &mut NodeState, attempt: u32, fired: bool) {
    let withdraw = fired && state.node().join == Join::First;
    let inputs = match current_inputs(state) {
        Ok(inputs) => inputs,
        Err(error) => {
            report(
                state,
                SupervisorMsg::NodeStarted(start_report(state, attempt, withdraw)),
            );
            return fail(myself, state, attempt, error);
        }
    };
    let Some(link) = state.run.slots.as_ref() else {
        return start_now(myself, state, attempt, withdraw, inputs, None);
    };
    let Some(needs) = link.needs(state.ix).cloned() else {
        return start_now(myself, state, attempt, withdraw, inputs, None);
    };
    let ticket = link.ticket();
    let acquire = LimiterMsg::Acquire {
        ticket,
        needs,
        node: myself.clone(),
    };
    // A limiter that is gone means the engine is shutting down; the run is torn down.
    let _ = link.limiter.cast(acquire);
    report(
        state,
        SupervisorMsg::NodeQueued(start_report(state, attempt, withdraw)),
    );
    state.spans.event("queued", || {
        vec![KeyValue::new(ATTEMPT, i64::from(attempt))]
    });
    state.phase = Phase::Queued { attempt, ticket };
    if let Some(limit) = state.node().queue_timeout {
        myself.send_after(limit, move || NodeMsg::QueueTimedOut { ticket });
    }
}

fn start_report(state: &NodeState, attempt: u32, withdraw: bool) -> StartReport {
    StartReport {
        node: state.ix,
        attempt,
        triggered_by: state.triggered_by.clone(),
        withdraw,
        failure: state.failure.clone(),
    }
}

fn on_slot_granted(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    ticket: u64,
    grant: SlotGrant,
) {
    let Phase::Queued {
        attempt,
        ticket: waiting,
    } = state.phase
    else {
        return; // not waiting any more: dropping the grant frees the slots
    };
    if waiting != ticket {
        return;
    }
    // Resolved again (or taken from the retry cache): they were valid when queued.
    match current_inputs(state) {
        Ok(inputs) => start_now(myself, state, attempt, false, inputs, Some(grant)),
        Err(error) => fail(myself, state, attempt, error),
    }
}

fn on_queue_timed_out(myself: &ActorRef<NodeMsg>, state: &mut NodeState, ticket: u64) {
    let Phase::Queued {
        attempt,
        ticket: waiting,
    } = state.phase
    else {
        return;
    };
    if waiting != ticket {
        return;
    }
    cancel_ticket(state, ticket);
    let limit = state.node().queue_timeout.unwrap_or_default();
    let error = ComponentError::fatal(
        QUEUE_TIMEOUT_ERROR,
        format!("waited more than {:.3}s for a slot", limit.as_secs_f64()),
    );
    fail(myself, state, attempt - 1, error);
}

fn cancel_ticket(state: &NodeState, ticket: u64) {
    if let Some(link) = &state.run.slots {
        // A limiter that is gone holds no queue any more.
        let _ = link.limiter.cast(LimiterMsg::Cancel { ticket });
    }
}

/// Starts attempt `attempt` as a task, holding `slot` until it ends.
fn start_now(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    attempt: u32,
    withdraw: bool,
    inputs: crate::runtime::definition::JsonObject,
    slot: Option<SlotGrant>,
) {
    let start = start_report(state, attempt, withdraw);
    let token = CancellationToken::new();
    let (limit, budget_bound) = attempt_limit(state);
    let graph = &state.run.graph;
    let ctx = ExecutionContext {
        run_id: state.run.run_id.clone(),
        node_ref: state.node().node_ref.clone(),
        attempt,
        params: state.node().params.clone(),
        inputs,
        triggered_by: state
            .triggered_by
            .iter()
            .map(|e| graph.node(graph.edge(*e).source).node_ref.clone())
            .collect(),
        failure: state.failure.clone(),
        cancel: token.clone(),
    };
    let span = state.spans.attempt(attempt);
    state.spans.event("started", || {
        vec![KeyValue::new(ATTEMPT, i64::from(attempt))]
    });
    let mut work = attempt_future(state, ctx);
    let must_die = chaos_kill(state, attempt);
    // A component that finishes at its first poll (echo, branch, ...) is handled here,
    // without a task or a message: the common case of a scheduler-bound workflow.
    let done = if must_die {
        None
    } else {
        span.in_scope(|| work.as_mut().now_or_never())
    };
    // The start of an attempt that already finished travels with what follows it.
    match done {
        Some(_) => state.held_start = Some(start),
        None => report(state, SupervisorMsg::NodeStarted(start)),
    }
    let task = match done {
        Some(_) => None,
        None => Some(spawn_attempt(
            myself.clone(),
            work,
            attempt,
            limit,
            budget_bound,
            token.clone(),
            span.clone(),
        )),
    };
    state.phase = Phase::Running {
        attempt,
        guard: AttemptGuard {
            task,
            token,
            _slot: slot,
            span,
        },
        cancelling: None,
    };
    if let Some(result) = done {
        on_attempt_finished(myself, state, attempt, result);
    } else if must_die {
        myself.kill();
    }
}

/// Inputs are resolved when the join fires; a node that may retry keeps them for its
/// later attempts, others resolve them again if they must (after queueing).
fn current_inputs(
    state: &mut NodeState,
) -> Result<crate::runtime::definition::JsonObject, ComponentError> {
    if let Some(inputs) = &state.inputs {
        return Ok(inputs.clone());
    }
    let run = &state.run;
    let node = run.graph.node(state.ix);
    let meta = run.registry.meta(&node.component_id);
    let extra = (run.graph.entrypoint == Some(state.ix)).then_some(&*run.inputs);
    let parents = &state.parents;
    let inputs = resolve_inputs(
        node,
        meta,
        extra,
        |ix| {
            parents
                .iter()
                .find(|p| p.node == ix)
                .and_then(|p| p.output.as_deref())
                .map_or(ParentOutput::Absent, ParentOutput::Completed)
        },
        |ix| &run.graph.node(ix).node_ref,
    )?;
    if node.retry.max_attempts > 1 {
        state.inputs = Some(inputs.clone());
    }
    Ok(inputs)
}

/// The time limit of the next attempt, and whether it is the total budget's.
fn attempt_limit(state: &NodeState) -> (Option<Duration>, bool) {
    let node = state.node();
    let remaining = node.total_timeout.map(|total| {
        let spent = state.first_started.map_or(Duration::ZERO, |t| t.elapsed());
        total.saturating_sub(spent)
    });
    match (node.attempt_timeout, remaining) {
        (Some(a), Some(r)) if r < a => (Some(r), true),
        (Some(a), _) => (Some(a), false),
        (None, Some(r)) => (Some(r), true),
        (None, None) => (None, false),
    }
}

/// The attempt's work: the component's future, its panics turned into `CrashError`; for a
/// tool-mode node, its registration (which completes at once).
fn attempt_future(state: &NodeState, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
    if state.node().mode == NodeMode::Tool {
        return std::future::ready(Ok(crate::runtime::semantics::shipsec::tool_registered()))
            .boxed();
    }
    let component = state.run.registry.get(&state.node().component_id).cloned();
    let inject_panic = chaos_panic(&ctx);
    async move {
        let Some(component) = component else {
            return Err(ComponentError::fatal(
                crate::runtime::components::VALIDATION_ERROR,
                "component vanished from the registry",
            ));
        };
        let caught = AssertUnwindSafe(async move {
            assert!(!inject_panic, "chaos: injected panic");
            component.execute(ctx).await
        })
        .catch_unwind()
        .await;
        caught
            .unwrap_or_else(|panic| Err(ComponentError::retryable(CRASH_ERROR, panic_text(&panic))))
    }
    .boxed()
}

/// Runs the rest of an attempt as a task, under its time limit, and reports its end.
fn spawn_attempt(
    myself: ActorRef<NodeMsg>,
    work: BoxFuture<'static, ComponentResult>,
    attempt: u32,
    limit: Option<Duration>,
    budget_bound: bool,
    token: CancellationToken,
    span: tracing::Span,
) -> JoinHandle<()> {
    tokio::spawn(
        async move {
            let result = run_with_limit(work, limit, budget_bound, &token).await;
            // The node may have ended (abandoned this attempt) and stopped: nothing to tell.
            let _ = myself.cast(NodeMsg::AttemptFinished { attempt, result });
        }
        .instrument(span),
    )
}

/// Whether the chaos plan kills this node's actor as attempt `attempt` starts.
#[cfg(feature = "chaos")]
fn chaos_kill(state: &NodeState, attempt: u32) -> bool {
    crate::chaos::should_kill(&state.run.run_id, &state.node().node_ref, attempt)
}

/// Without the `chaos` feature no actor is ever killed on purpose.
#[cfg(not(feature = "chaos"))]
fn chaos_kill(_state: &NodeState, _attempt: u32) -> bool {
    false
}

/// Whether the chaos plan asks this attempt's component to panic.
#[cfg(feature = "chaos")]
fn chaos_panic(ctx: &ExecutionContext) -> bool {
    crate::chaos::should_panic(&ctx.run_id, &ctx.node_ref, ctx.attempt)
}

/// Without the `chaos` feature no panic is ever injected.
#[cfg(not(feature = "chaos"))]
fn chaos_panic(_ctx: &ExecutionContext) -> bool {
    false
}

async fn run_with_limit(
    work: BoxFuture<'static, ComponentResult>,
    limit: Option<Duration>,
    budget_bound: bool,
    token: &CancellationToken,
) -> ComponentResult {
    let Some(limit) = limit else {
        return work.await;
    };
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => {
            token.cancel();
            let secs = limit.as_secs_f64();
            Err(if budget_bound {
                ComponentError::fatal(
                    TIMEOUT_ERROR,
                    format!("total budget of the node ran out after {secs:.3}s"),
                )
            } else {
                ComponentError::retryable(
                    TIMEOUT_ERROR,
                    format!("attempt exceeded its {secs:.3}s limit"),
                )
            })
        }
    }
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

fn on_attempt_finished(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    attempt: u32,
    result: ComponentResult,
) {
    let Phase::Running {
        attempt: running,
        cancelling,
        ..
    } = &state.phase
    else {
        return;
    };
    if *running != attempt {
        return; // a stale attempt: fenced
    }
    if let Some(reason) = cancelling.clone() {
        finish(
            myself,
            state,
            Terminal::Cancelled,
            EndDetail::cancelled(&reason),
        );
        return;
    }
    match result {
        Ok(out) => {
            if let Err(error) = check_output_size(state, &out.output) {
                return after_failure(myself, state, attempt, error);
            }
            let detail = EndDetail {
                output: Some(Arc::new(out.output)),
                active_ports: out.active_ports,
                ..EndDetail::default()
            };
            finish(myself, state, Terminal::Completed, detail);
        }
        Err(error) => {
            if let Phase::Running { guard, .. } = &state.phase {
                NodeSpans::attempt_failed(&guard.span, &error);
            }
            after_failure(myself, state, attempt, error);
        }
    }
}

/// Refuses an output larger than the engine allows (`OutputLimitError`, not retried).
fn check_output_size(
    state: &NodeState,
    output: &crate::runtime::definition::JsonObject,
) -> Result<(), ComponentError> {
    let limit = state.run.max_output_bytes;
    let mut counter = ByteCounter { bytes: 0, limit };
    // Serialising into the counter cannot fail but by going past the limit.
    let over = serde_json::to_writer(&mut counter, output).is_err() || counter.bytes > limit;
    if over {
        return Err(ComponentError::fatal(
            OUTPUT_LIMIT_ERROR,
            format!(
                "output of {} exceeds the limit of {limit} bytes of JSON",
                state.node().node_ref
            ),
        ));
    }
    Ok(())
}

/// Counts bytes written, failing as soon as they pass `limit` (no buffer is kept).
struct ByteCounter {
    bytes: usize,
    limit: usize,
}

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len();
        if self.bytes > self.limit {
            return Err(std::io::Error::other("over the output limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Retries per policy and budget, or ends FAILED.
fn after_failure(
    myself: &ActorRef<NodeMsg>,
    state: &mut NodeState,
    attempt: u32,
    mut error: ComponentError,
) {
    let node = state.node();
    if !should_retry(&node.retry, attempt, &error) {
        return fail(myself, state, attempt, error);
    }
    let delay = delay_after(&node.retry, attempt, &error, rand::random::<f64>());
    if let (Some(total), Some(started)) = (node.total_timeout, state.first_started)
        && started.elapsed() + delay >= total
    {
        error = ComponentError::fatal(
            TIMEOUT_ERROR,
            format!(
                "total budget of {:.3}s ran out before attempt {} (last error: {error})",
                total.as_secs_f64(),
                attempt + 1
            ),
        );
        return fail(myself, state, attempt, error);
    }
    state.spans.event("retrying", || {
        vec![
            KeyValue::new(ATTEMPT, i64::from(attempt)),
            KeyValue::new("delay_ms", delay.as_millis() as i64),
            KeyValue::new(
                crate::runtime::telemetry::ERROR_TYPE,
                error.error_type.clone(),
            ),
        ]
    });
    report(
        state,
        SupervisorMsg::NodeRetrying {
            node: state.ix,
            attempt,
            delay,
            error,
        },
    );
    state.phase = Phase::Backoff { next: attempt + 1 };
    let next = attempt + 1;
    if delay.is_zero() {
        begin_attempt(myself, state, next, false);
    } else {
        myself.send_after(delay, move || NodeMsg::RetryDue { attempt: next });
    }
}

fn fail(myself: &ActorRef<NodeMsg>, state: &mut NodeState, attempts: u32, error: ComponentError) {
    let origin = Some(state.node().node_ref.clone());
    let detail = EndDetail {
        error: Some(error),
        origin,
        attempts: Some(attempts),
        ..EndDetail::default()
    };
    finish(myself, state, Terminal::Failed, detail);
}

fn on_cancel(myself: &ActorRef<NodeMsg>, state: &mut NodeState, reason: CancelReason) {
    match &mut state.phase {
        Phase::Pending | Phase::Backoff { .. } => {
            finish(
                myself,
                state,
                Terminal::Cancelled,
                EndDetail::cancelled(&reason),
            );
        }
        Phase::Queued { ticket, .. } => {
            let ticket = *ticket;
            cancel_ticket(state, ticket);
            finish(
                myself,
                state,
                Terminal::Cancelled,
                EndDetail::cancelled(&reason),
            );
        }
        Phase::Running {
            attempt,
            guard,
            cancelling,
        } => {
            if cancelling.is_some() && !reason.grace.is_zero() {
                return;
            }
            guard.token.cancel();
            let attempt = *attempt;
            if reason.grace.is_zero() {
                finish(
                    myself,
                    state,
                    Terminal::Cancelled,
                    EndDetail::cancelled(&reason),
                );
            } else {
                let grace = reason.grace;
                *cancelling = Some(reason);
                myself.send_after(grace, move || NodeMsg::GraceExpired { attempt });
            }
        }
        Phase::Ended => {}
    }
}

fn on_grace_expired(myself: &ActorRef<NodeMsg>, state: &mut NodeState, attempt: u32) {
    if let Phase::Running {
        attempt: running,
        cancelling: Some(reason),
        ..
    } = &state.phase
        && *running == attempt
    {
        let reason = reason.clone();
        finish(
            myself,
            state,
            Terminal::Cancelled,
            EndDetail::cancelled(&reason),
        );
    }
}

/// The parts of a [`NodeEnd`] that depend on how the node ended.
#[derive(Debug, Default)]
struct EndDetail {
    output: Option<Arc<crate::runtime::definition::JsonObject>>,
    active_ports: Option<Vec<String>>,
    error: Option<ComponentError>,
    reason: Option<String>,
    origin: Option<Arc<str>>,
    attempts: Option<u32>,
}

impl EndDetail {
    fn reason(reason: String, origin: Option<Arc<str>>) -> EndDetail {
        EndDetail {
            reason: Some(reason),
            origin,
            ..EndDetail::default()
        }
    }

    fn cancelled(reason: &CancelReason) -> EndDetail {
        EndDetail::reason(reason.text.to_string(), None)
    }
}

/// Ends the node: abandons a running attempt, reports to the supervisor, stops.
fn finish(myself: &ActorRef<NodeMsg>, state: &mut NodeState, terminal: Terminal, d: EndDetail) {
    let attempts = match std::mem::replace(&mut state.phase, Phase::Ended) {
        // Dropping the guard stops the attempt's work.
        Phase::Running { attempt, .. } => attempt,
        Phase::Backoff { next } => next - 1,
        Phase::Queued { attempt, .. } => attempt - 1,
        Phase::Pending | Phase::Ended => 0,
    };
    let mut end = NodeEnd {
        node: state.ix,
        terminal,
        attempts: d.attempts.unwrap_or(attempts),
        output: d.output,
        active_ports: d.active_ports,
        error: d.error,
        reason: d.reason,
        origin: d.origin,
        handled: state.failure.clone(),
        span: None,
    };
    let run = state.run.clone();
    end.span = state
        .spans
        .close(&run.span, &run.graph, run.graph.node(state.ix), &end);
    report(state, SupervisorMsg::NodeEnded(Arc::new(end)));
    myself.stop(None);
}

/// Sends a report to the supervisor. A start held back by an attempt that finished at its
/// first poll goes first, or with the end in one [`SupervisorMsg::NodeRan`].
fn report(state: &mut NodeState, msg: SupervisorMsg) {
    let msg = match (state.held_start.take(), msg) {
        (Some(start), SupervisorMsg::NodeEnded(end)) => SupervisorMsg::NodeRan { start, end },
        (Some(start), msg) => {
            send(state, SupervisorMsg::NodeStarted(start));
            msg
        }
        (None, msg) => msg,
    };
    send(state, msg);
}

fn send(state: &NodeState, msg: SupervisorMsg) {
    // The supervisor outlives its nodes; if it is gone the run is being torn down and
    // the orchestrator ends it, so a lost report changes nothing.
    let _ = state.run.supervisor.cast(msg);
}
