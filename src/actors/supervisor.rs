//! The run supervisor: one per run.
//!
//! It spawns a node actor per node when the run reaches it (the roots at start, any other
//! node when its first parent ends), receives their reports, and owns what is run-wide:
//! the event log (dense `seq`), the failure policy, withdrawal for races, cancellation,
//! termination, the deadline, crash recovery of node actors, and the run result. When a
//! node ends, the supervisor resolves its outgoing edges (SEMANTICS.md §1) and tells each
//! child, so a node that dies right after reporting never leaves a child waiting.
//! A node actor lives from its first parent's end to its own end; a node the run never
//! reached when it stops (or when a race withdraws it) ends CANCELLED without an actor.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::actors::node::{NodeActor, NodeArgs, Resume};
use crate::actors::shared::{RunShared, SlotLink};
use crate::messages::event::{ErrorInfo, EventId, EventMetadata, EventType, Level, TraceEvent};
use crate::messages::limiter::LimiterMsg;
use crate::messages::node::{CancelReason, NodeEnd, NodeMsg, ParentEnded};
use crate::messages::orchestrator::OrchestratorMsg;
use crate::messages::result::{NodeRecord, RunResult, RunSnapshot};
use crate::messages::supervisor::{EventFeed, StartReport, StopKind, SupervisorMsg};
use crate::messages::time::Timestamp;
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::components::{CRASH_ERROR, ComponentError, FailureInfo};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{EdgeIx, Graph, NodeIx};
use crate::runtime::guardrails::config::EngineConfig;
use crate::runtime::guardrails::slots::RunKey;
use crate::runtime::semantics::edge::resolve;
use crate::runtime::semantics::failure::{FailureEffect, on_failure};
use crate::runtime::semantics::outcome::{NodeStatus, RunStatus, Terminal};
use crate::runtime::semantics::shipsec;
use crate::runtime::semantics::withdraw::Interest;
use crate::runtime::telemetry::spans::NodeSpans;
use crate::runtime::telemetry::{Metrics, RUN_ID, RUN_STATUS, SPAN_RUN, TARGET};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::sync::atomic::AtomicU64;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Extra time after a grace period before stragglers are abandoned.
const FORCE_MARGIN: Duration = Duration::from_secs(1);

/// Nodes whose every incoming edge has resolved are spawned at most this many at a time
/// until they report (QUEUED, STARTED or their end). Such a node always reports on its
/// own, so the window never waits on a node it holds back; a node still waiting on
/// parents is spawned at once. A 100,000-way fan-out so holds about this many idle
/// actors instead of 100,000.
const SPAWN_WINDOW: usize = 1024;

/// The supervisor's behaviour.
#[derive(Debug, Clone, Copy)]
pub struct RunSupervisor;

/// Start-up arguments.
#[derive(Debug)]
pub struct SupervisorArgs {
    /// Run id.
    pub run_id: Arc<str>,
    /// The validated graph.
    pub graph: Arc<Graph>,
    /// Components.
    pub registry: Arc<ComponentRegistry>,
    /// The run's inputs.
    pub inputs: Arc<JsonObject>,
    /// Engine settings.
    pub config: EngineConfig,
    /// Where the result is published.
    pub result_tx: watch::Sender<Option<Arc<RunResult>>>,
    /// Told when the run ends.
    pub orchestrator: Option<ActorRef<OrchestratorMsg>>,
    /// The engine's slot limiter and this run's key in it.
    pub limiter: Option<(ActorRef<LimiterMsg>, Arc<AtomicU64>, RunKey)>,
    /// W3C `traceparent` of the caller's trace, which the run span joins.
    pub traceparent: Option<String>,
    /// The engine's metric instruments.
    pub metrics: Arc<Metrics>,
}

/// What the supervisor knows of one node.
#[derive(Debug, Default)]
struct Slot {
    actor: Option<ActorRef<NodeMsg>>,
    status: Option<NodeStatus>,
    attempts: u32,
    started_at: Option<SystemTime>,
    completed_at: Option<SystemTime>,
    triggered_by: Option<Arc<[EdgeIx]>>,
    failure: Option<Arc<FailureInfo>>,
    end: Option<Arc<NodeEnd>>,
    /// Set when the node was asked to stop because it lost a race.
    withdrawn: Option<Arc<str>>,
    /// Incoming edges not resolved yet.
    unresolved: u32,
    /// Spawned through the window and not reported yet.
    windowed: bool,
    /// Position among the run's node ends (1-based), for replaying them in order.
    end_order: u32,
}

impl Slot {
    fn status(&self) -> NodeStatus {
        self.status.unwrap_or(NodeStatus::Pending)
    }

    fn ended(&self) -> bool {
        self.end.is_some()
    }
}

/// A run that is being stopped.
#[derive(Debug, Clone)]
struct Stopping {
    status: RunStatus,
    reason: Arc<str>,
    grace: Duration,
}

/// The supervisor's state.
#[derive(Debug)]
pub struct SupervisorState {
    run: Arc<RunShared>,
    config: EngineConfig,
    slots: Vec<Slot>,
    actors: HashMap<ActorId, NodeIx, foldhash::fast::RandomState>,
    /// Nodes whose incoming edges have all resolved, waiting for the spawn window.
    ready: VecDeque<NodeIx>,
    /// Nodes spawned through the window that have not reported yet.
    starting: usize,
    ended: usize,
    interest: Interest,
    stopping: Option<Stopping>,
    unhandled: Option<String>,
    /// Completed nodes whose output reported a failure (`success: false`), in the order
    /// they completed: the run ends FAILED once the DAG has finished.
    reported: Vec<(NodeIx, String)>,
    events: Vec<TraceEvent>,
    /// Every event, once the run has ended (answers late subscribers while draining).
    final_events: Option<Arc<Vec<TraceEvent>>>,
    subscribers: Vec<mpsc::UnboundedSender<TraceEvent>>,
    started_at: SystemTime,
    started: Instant,
    result_tx: watch::Sender<Option<Arc<RunResult>>>,
    orchestrator: Option<ActorRef<OrchestratorMsg>>,
    done: bool,
}

impl Actor for RunSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let slots = args.limiter.map(|(limiter, tickets, key)| {
            SlotLink::new(
                limiter,
                tickets,
                key,
                &args.graph,
                &args.registry,
                &args.config,
            )
        });
        let span = run_span(&args.run_id, &args.graph.title, args.traceparent.as_deref());
        let run = Arc::new(RunShared {
            span,
            metrics: args.metrics.clone(),
            run_id: args.run_id,
            graph: args.graph.clone(),
            registry: args.registry,
            inputs: args.inputs,
            supervisor: myself.clone(),
            slots,
            max_output_bytes: args.config.limits.max_output_bytes,
        });
        let mut state = SupervisorState {
            interest: Interest::new(&run.graph),
            run,
            config: args.config,
            slots: args
                .graph
                .nodes
                .iter()
                .map(|node| Slot {
                    unresolved: node.incoming.len() as u32,
                    ..Slot::default()
                })
                .collect(),
            actors: HashMap::default(),
            ready: VecDeque::new(),
            starting: 0,
            ended: 0,
            stopping: None,
            unhandled: None,
            reported: Vec::new(),
            // Two events per node at least (a start and an end, or one end): reserved
            // once, instead of regrowing and copying the log as the run goes. Pages are
            // only touched as events are written.
            events: Vec::with_capacity(2 * args.graph.len() + 1),
            final_events: None,
            subscribers: Vec::new(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            result_tx: args.result_tx,
            orchestrator: args.orchestrator,
            done: false,
        };
        #[cfg(feature = "chaos")]
        crate::chaos::register_supervisor(&state.run.run_id, myself.get_cell());
        let graph = state.run.graph.clone();
        state.ready.extend(
            graph
                .node_indices()
                .filter(|ix| graph.node(*ix).incoming.is_empty()),
        );
        pump(&myself, &mut state).await?;
        if let Some(deadline) = state.run.graph.settings.timeout {
            myself.send_after(deadline, || SupervisorMsg::DeadlinePassed);
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
            SupervisorMsg::NodeQueued(report) => {
                let withdrawn = on_start_report(state, &report, true);
                end_all(&myself, state, withdrawn).await?;
            }
            SupervisorMsg::NodeStarted(report) => {
                let withdrawn = on_start_report(state, &report, false);
                end_all(&myself, state, withdrawn).await?;
            }
            SupervisorMsg::NodeRetrying {
                node,
                attempt,
                delay,
                error,
            } => on_retrying(state, node, attempt, delay, &error),
            SupervisorMsg::NodeEnded(end) => end_all(&myself, state, vec![end]).await?,
            SupervisorMsg::NodeRan { start, end } => {
                // The node's own end is recorded after any parents its start withdrew.
                let mut ends = vec![end];
                ends.extend(on_start_report(state, &start, false));
                end_all(&myself, state, ends).await?;
            }
            SupervisorMsg::NodeExited { node, actor, cause } => {
                on_exited(&myself, state, node, actor, cause).await?;
            }
            SupervisorMsg::Stop(kind) => {
                let (status, text, grace) = match kind {
                    StopKind::Cancel => (
                        RunStatus::Cancelled,
                        "cancelled: run cancelled by request",
                        state.config.cancel_grace,
                    ),
                    StopKind::Terminate => (
                        RunStatus::Terminated,
                        "terminated: run terminated by request",
                        Duration::ZERO,
                    ),
                };
                begin_stop(&myself, state, status, text.into(), grace);
                maybe_finish(&myself, state);
            }
            SupervisorMsg::DeadlinePassed => {
                let secs = state
                    .run
                    .graph
                    .settings
                    .timeout
                    .unwrap_or_default()
                    .as_secs_f64();
                let text = format!("cancelled: run deadline of {secs}s passed");
                let grace = state.config.cancel_grace;
                begin_stop(&myself, state, RunStatus::TimedOut, text.into(), grace);
                maybe_finish(&myself, state);
            }
            SupervisorMsg::ForceEnd => force_end(&myself, state).await?,
            SupervisorMsg::Snapshot(reply) => {
                // The asker may have given up waiting: nothing to do then.
                let _ = reply.send(Ok(snapshot(state)));
            }
            SupervisorMsg::Subscribe(reply) => {
                // An asker that went away leaves a closed sender, pruned on the next emit.
                let _ = reply.send(Ok(subscribe(state)));
            }
        }
        pump(&myself, state).await
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
        let id = cell.get_id();
        let Some(node) = state.actors.remove(&id) else {
            return Ok(());
        };
        if state.slots[node.ix()].ended() {
            // Its reference would keep the exited actor's mailboxes allocated until the
            // run ends (kilobytes per node).
            state.slots[node.ix()].actor = None;
            maybe_finish(&myself, state);
            return Ok(());
        }
        // Re-check through the queue: a report sent just before the exit comes first.
        let _ = myself.cast(SupervisorMsg::NodeExited {
            node,
            actor: id,
            cause,
        });
        Ok(())
    }
}

/// The run's span, joining the caller's trace when a `traceparent` was given.
fn run_span(run_id: &str, title: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(target: TARGET, SPAN_RUN, workflow.title = %title);
    if span.is_disabled() {
        return span;
    }
    span.set_attribute(RUN_ID, run_id.to_owned());
    if let Some(tp) = traceparent {
        let mut carrier = HashMap::new();
        carrier.insert("traceparent".to_owned(), tp.to_owned());
        let cx = TraceContextPropagator::new().extract(&carrier);
        // A malformed traceparent leaves the run a root span of its own trace.
        let _ = span.set_parent(cx);
    }
    span
}

async fn spawn_node(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    ix: NodeIx,
    resume: Option<Resume>,
    first: Option<ParentEnded>,
) -> Result<(), ActorProcessingErr> {
    let args = NodeArgs {
        run: state.run.clone(),
        node: ix,
        resume,
        first,
    };
    let (actor, _) = Actor::spawn_linked(None, NodeActor, args, myself.get_cell()).await?;
    state.actors.insert(actor.get_id(), ix);
    #[cfg(feature = "chaos")]
    crate::chaos::register(
        &state.run.run_id,
        &state.run.graph.node(ix).node_ref,
        actor.get_cell(),
    );
    state.slots[ix.ix()].actor = Some(actor);
    Ok(())
}

fn node_ref(state: &SupervisorState, ix: NodeIx) -> Arc<str> {
    state.run.graph.node(ix).node_ref.clone()
}

fn refs_of(state: &SupervisorState, edges: &[EdgeIx]) -> Vec<Arc<str>> {
    let g = &state.run.graph;
    edges
        .iter()
        .map(|e| g.node(g.edge(*e).source).node_ref.clone())
        .collect()
}

/// Appends one event with the next `seq` and sends it to live subscribers.
fn emit(
    state: &mut SupervisorState,
    node: NodeIx,
    kind: EventType,
    level: Level,
    fill: impl FnOnce(&mut TraceEvent),
) {
    let seq = state.events.len() as u64 + 1;
    let n = state.run.graph.node(node);
    let mut event = TraceEvent {
        id: EventId {
            run_id: state.run.run_id.clone(),
            seq,
        },
        run_id: state.run.run_id.clone(),
        node_id: n.node_ref.clone(),
        seq,
        kind,
        level,
        timestamp: Timestamp::now(),
        message: None,
        error: None,
        data: None,
        metadata: None,
    };
    fill(&mut event);
    if !state.subscribers.is_empty() {
        state.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }
    state.events.push(event);
}

fn base_metadata(state: &SupervisorState, node: NodeIx) -> EventMetadata {
    let n = state.run.graph.node(node);
    EventMetadata {
        join_strategy: Some(Cow::Borrowed(n.join.as_str())),
        stream_id: n.stream_id.clone(),
        group_id: n.group_id.clone(),
        ..EventMetadata::default()
    }
}

fn on_start_report(
    state: &mut SupervisorState,
    report: &StartReport,
    queued: bool,
) -> Vec<Arc<NodeEnd>> {
    let node = report.node;
    release(state, node);
    let slot = &mut state.slots[node.ix()];
    if slot.ended() {
        return Vec::new();
    }
    let metrics = &state.run.metrics;
    if slot.status() == NodeStatus::Queued {
        metrics.queued(-1);
    }
    if queued {
        metrics.queued(1);
        slot.status = Some(NodeStatus::Queued);
    } else {
        metrics.running(1);
        slot.status = Some(NodeStatus::Running);
        slot.attempts = report.attempt;
        slot.started_at.get_or_insert_with(SystemTime::now);
    }
    slot.failure = report.failure.clone();
    slot.triggered_by = Some(report.triggered_by.clone());
    let mut metadata = base_metadata(state, node);
    metadata.attempt = Some(report.attempt);
    metadata.triggered_by =
        (!report.triggered_by.is_empty()).then(|| refs_of(state, &report.triggered_by));
    metadata.failure = report.failure.as_deref().cloned().map(Box::new);
    let kind = if queued {
        EventType::Queued
    } else {
        EventType::Started
    };
    emit(state, node, kind, Level::Info, |e| {
        e.metadata = Some(metadata)
    });
    if report.withdraw && state.stopping.is_none() {
        let winner = report
            .triggered_by
            .first()
            .map(|e| state.run.graph.edge(*e).source);
        let reason: Arc<str> = format!(
            "withdrawn: {} fired on {}",
            node_ref(state, node),
            winner.map_or_else(|| "?".into(), |w| node_ref(state, w))
        )
        .into();
        return withdraw_from_parents(state, node, &reason);
    }
    Vec::new()
}

/// `node` withdraws from its unfinished parents; those no longer needed are cancelled.
/// A parent with an actor is told; the ends of parents the run never reached are
/// returned, for the caller to record.
fn withdraw_from_parents(
    state: &mut SupervisorState,
    node: NodeIx,
    reason: &Arc<str>,
) -> Vec<Arc<NodeEnd>> {
    let slots = &state.slots;
    let unneeded = state
        .interest
        .withdraw(&state.run.graph, node, |p| slots[p.ix()].ended());
    let mut unreached = Vec::new();
    for parent in unneeded {
        let slot = &mut state.slots[parent.ix()];
        slot.withdrawn = Some(reason.clone());
        if let Some(actor) = &slot.actor {
            // A parent actor that already stopped has reported its end, which stands.
            let _ = actor.cast(NodeMsg::Cancel(CancelReason {
                text: reason.clone(),
                grace: state.config.cancel_grace,
            }));
        } else {
            unreached.push(Arc::new(unreached_end(state, parent, reason.to_string())));
        }
    }
    unreached
}

/// The end of a node the run never reached, cancelled for `reason`: no attempts, and a
/// node span of its own so the whole DAG shows in the trace.
fn unreached_end(state: &SupervisorState, node: NodeIx, reason: String) -> NodeEnd {
    let mut end = synthetic_end(state, node, Terminal::Cancelled, Some(reason));
    let run = &state.run;
    end.span = NodeSpans::new(&run.span).close(&run.span, &run.graph, run.graph.node(node), &end);
    end
}

fn on_retrying(
    state: &mut SupervisorState,
    node: NodeIx,
    attempt: u32,
    delay: Duration,
    error: &ComponentError,
) {
    let metrics = &state.run.metrics;
    metrics.running(-1);
    metrics.attempt(
        &state.run.graph.node(node).component_id,
        Some(&error.error_type),
    );
    // The node is no longer running during its backoff.
    state.slots[node.ix()].status = Some(NodeStatus::Pending);
    let mut metadata = base_metadata(state, node);
    metadata.attempt = Some(attempt);
    emit(state, node, EventType::Retrying, Level::Warn, |e| {
        e.message = Some(format!(
            "attempt {attempt} failed; attempt {} in {} ms",
            attempt + 1,
            delay.as_millis()
        ));
        e.error = Some(Box::new(error_info(error)));
        e.data = Some(Box::new(
            json!({"delayMs": delay.as_millis() as u64, "nextAttempt": attempt + 1}),
        ));
        e.metadata = Some(metadata);
    });
}

fn error_info(error: &ComponentError) -> ErrorInfo {
    ErrorInfo {
        error_type: error.error_type.clone(),
        message: error.message.clone(),
    }
}

/// Records node ends and what follows from each, until nothing is left: failure policy,
/// withdrawal (whose cancelled parents may end here too) and the children's edges.
async fn end_all(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    mut ends: Vec<Arc<NodeEnd>>,
) -> Result<(), ActorProcessingErr> {
    while let Some(end) = ends.pop() {
        let node = end.node;
        if state.slots[node.ix()].ended() {
            continue; // each node ends once: a late or repeated report is ignored
        }
        record_end(state, &end);
        match end.terminal {
            Terminal::Failed => match on_failure(&state.run.graph, node) {
                FailureEffect::Handled => {}
                FailureEffect::SkipDependents => note_unhandled(state, node, &end),
                FailureEffect::FailRun => {
                    note_unhandled(state, node, &end);
                    let reason =
                        format!("cancelled: failRun after {} FAILED", node_ref(state, node));
                    let grace = state.config.cancel_grace;
                    begin_stop(myself, state, RunStatus::Failed, reason.into(), grace);
                }
            },
            Terminal::Cancelled => {
                if let Some(reason) = state.slots[node.ix()].withdrawn.clone()
                    && state.stopping.is_none()
                {
                    ends.extend(withdraw_from_parents(state, node, &reason));
                }
            }
            Terminal::Completed | Terminal::Skipped => {}
        }
        resolve_children(myself, state, &end).await?;
    }
    maybe_finish(myself, state);
    Ok(())
}

/// The run ends once every node has ended and every node actor has exited, so no actor
/// of a finished run is left alive.
fn maybe_finish(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
    if !state.done && state.ended == state.slots.len() && state.actors.is_empty() {
        finish_run(myself, state);
    }
}

fn note_unhandled(state: &mut SupervisorState, node: NodeIx, end: &NodeEnd) {
    if state.unhandled.is_none() {
        let what = end
            .error
            .as_ref()
            .map_or_else(String::new, |e| format!(": {e}"));
        state.unhandled = Some(format!("node {} FAILED{what}", node_ref(state, node)));
    }
}

/// Node metrics at a node's end: gauges back down, its last attempt, its duration.
fn node_metrics(state: &SupervisorState, end: &NodeEnd) {
    let slot = &state.slots[end.node.ix()];
    let metrics = &state.run.metrics;
    match slot.status() {
        NodeStatus::Queued => metrics.queued(-1),
        NodeStatus::Running => metrics.running(-1),
        _ => {}
    }
    let component = &state.run.graph.node(end.node).component_id;
    let ran = slot.status() == NodeStatus::Running;
    match (end.terminal, &end.error) {
        (Terminal::Completed, _) => metrics.attempt(component, None),
        (Terminal::Failed, Some(e)) if ran => metrics.attempt(component, Some(&e.error_type)),
        _ => {}
    }
    if let Some(started) = slot.started_at {
        let secs = started.elapsed().unwrap_or_default().as_secs_f64();
        metrics.node_ended(component, end.terminal.as_str(), secs);
    }
}

fn record_end(state: &mut SupervisorState, end: &Arc<NodeEnd>) {
    node_metrics(state, end);
    let node = end.node;
    release(state, node);
    let slot = &mut state.slots[node.ix()];
    slot.end_order = state.ended as u32 + 1;
    slot.status = Some(end.terminal.status());
    slot.attempts = slot.attempts.max(end.attempts);
    slot.completed_at = Some(SystemTime::now());
    slot.end = Some(end.clone());
    #[cfg(feature = "chaos")]
    crate::chaos::unregister(&state.run.run_id, &state.run.graph.node(node).node_ref);
    state.ended += 1;
    if let Some(message) = end.output.as_deref().and_then(shipsec::reported_failure) {
        state.reported.push((node, message));
    }
    let (kind, level) = match end.terminal {
        Terminal::Completed => (EventType::Completed, Level::Info),
        Terminal::Failed => (EventType::Failed, Level::Error),
        Terminal::Skipped => (EventType::Skipped, Level::Warn),
        Terminal::Cancelled => (EventType::Cancelled, Level::Warn),
    };
    let mut metadata = base_metadata(state, node);
    metadata.attempt = (end.attempts > 0).then_some(end.attempts);
    metadata.failure = end.handled.as_deref().cloned().map(Box::new);
    let triggered = state.slots[node.ix()].triggered_by.clone();
    metadata.triggered_by = triggered
        .filter(|t| !t.is_empty())
        .map(|t| refs_of(state, &t));
    emit(state, node, kind, level, |e| {
        e.message = end.reason.clone();
        e.error = end.error.as_ref().map(|e| Box::new(error_info(e)));
        e.data = end
            .active_ports
            .as_ref()
            .map(|p| Box::new(json!({"activatedPorts": p})));
        e.metadata = Some(metadata);
    });
}

/// Resolves each outgoing edge of an ended node and tells the child (SEMANTICS.md §1),
/// spawning the child's actor if this is the first of its parents to end.
async fn resolve_children(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    end: &Arc<NodeEnd>,
) -> Result<(), ActorProcessingErr> {
    let graph = state.run.graph.clone();
    for e in &graph.node(end.node).outgoing {
        let edge = graph.edge(*e);
        let child = edge.target;
        let slot = &mut state.slots[child.ix()];
        slot.unresolved = slot.unresolved.saturating_sub(1);
        if slot.ended() {
            continue;
        }
        if slot.actor.is_none() && slot.unresolved == 0 {
            // Every parent has ended: the child waits for the spawn window, and its
            // resolutions are handed over then, in the order its parents ended.
            state.ready.push_back(child);
            continue;
        }
        let resolved = ParentEnded {
            edge: *e,
            resolution: resolve(edge, end.terminal, end.active_ports.as_deref()),
            end: end.clone(),
        };
        match &state.slots[child.ix()].actor {
            // The first parent to end while others have not: spawned at once, since it
            // may wait. (A stopping run has already ended every node it never reached.)
            None => spawn_with(myself, state, child, vec![resolved]).await?,
            Some(actor) => deliver(state, actor, child, resolved),
        }
    }
    Ok(())
}

/// Frees the window place of a node that reported, ended or died.
fn release(state: &mut SupervisorState, node: NodeIx) {
    let slot = &mut state.slots[node.ix()];
    if std::mem::take(&mut slot.windowed) {
        state.starting -= 1;
    }
}

/// Spawns ready nodes while the window has room.
async fn pump(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
) -> Result<(), ActorProcessingErr> {
    while state.starting < SPAWN_WINDOW {
        let Some(node) = state.ready.pop_front() else {
            break;
        };
        let slot = &state.slots[node.ix()];
        // A stopping run or a withdrawal ended it meanwhile.
        if slot.ended() || slot.actor.is_some() {
            continue;
        }
        spawn_resolved(myself, state, node).await?;
    }
    Ok(())
}

/// Spawns a node whose incoming edges have all resolved, through the window, with their
/// resolutions in the order the parents ended.
async fn spawn_resolved(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    node: NodeIx,
) -> Result<(), ActorProcessingErr> {
    let mut resolved = ended_parents(state, node);
    resolved.sort_by_key(|r| state.slots[r.end.node.ix()].end_order);
    spawn_with(myself, state, node, resolved).await?;
    state.slots[node.ix()].windowed = true;
    state.starting += 1;
    Ok(())
}

/// Spawns `node`'s actor and hands it `resolved`, in order: the first in its start-up
/// arguments, the others as messages.
async fn spawn_with(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    node: NodeIx,
    resolved: Vec<ParentEnded>,
) -> Result<(), ActorProcessingErr> {
    let mut resolved = resolved.into_iter();
    // A delayed node gets every resolution late, so none travels with the spawn.
    let first = if delay_to(state, node).is_none() {
        resolved.next()
    } else {
        None
    };
    spawn_node(myself, state, node, None, first).await?;
    let Some(actor) = &state.slots[node.ix()].actor else {
        return Ok(());
    };
    for rest in resolved {
        deliver(state, actor, node, rest);
    }
    #[cfg(feature = "chaos")]
    if crate::chaos::should_kill_pending(&state.run.run_id, &state.run.graph.node(node).node_ref) {
        // Killed as it starts: it is respawned and its parents' ends replayed.
        actor.kill();
    }
    Ok(())
}

/// Sends an edge resolution to `node`'s live actor (late, when chaos delays it). A child
/// actor that just died is respawned and replayed from the records, so a lost message
/// changes nothing.
fn deliver(
    state: &SupervisorState,
    actor: &ActorRef<NodeMsg>,
    node: NodeIx,
    resolved: ParentEnded,
) {
    let msg = NodeMsg::ParentEnded(resolved);
    match delay_to(state, node) {
        Some(delay) => {
            actor.send_after(delay, move || msg);
        }
        None => {
            let _ = actor.cast(msg);
        }
    }
}

/// The delay chaos tests put on the resolutions sent to `node`.
#[cfg(feature = "chaos")]
fn delay_to(state: &SupervisorState, node: NodeIx) -> Option<Duration> {
    crate::chaos::delay_for(&state.run.run_id, &state.run.graph.node(node).node_ref)
}

/// Without the `chaos` feature nothing is delayed.
#[cfg(not(feature = "chaos"))]
fn delay_to(_state: &SupervisorState, _node: NodeIx) -> Option<Duration> {
    None
}

/// The resolutions of `node`'s incoming edges whose sources have ended, in edge order.
fn ended_parents(state: &SupervisorState, node: NodeIx) -> Vec<ParentEnded> {
    let graph = &state.run.graph;
    graph
        .node(node)
        .incoming
        .iter()
        .filter_map(|e| {
            let edge = graph.edge(*e);
            let end = state.slots[edge.source.ix()].end.clone()?;
            Some(ParentEnded {
                edge: *e,
                resolution: resolve(edge, end.terminal, end.active_ports.as_deref()),
                end,
            })
        })
        .collect()
}

/// Replays every resolved incoming edge to a freshly spawned node.
fn replay_parents(state: &SupervisorState, node: NodeIx) {
    let Some(actor) = &state.slots[node.ix()].actor else {
        return;
    };
    for parent in ended_parents(state, node) {
        let _ = actor.cast(NodeMsg::ParentEnded(parent));
    }
}

async fn on_exited(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    node: NodeIx,
    actor: ActorId,
    cause: String,
) -> Result<(), ActorProcessingErr> {
    let current = state.slots[node.ix()].actor.as_ref().map(|a| a.get_id());
    if current != Some(actor) {
        return Ok(()); // the exit of an actor already replaced
    }
    if state.slots[node.ix()].ended() {
        state.slots[node.ix()].actor = None;
        maybe_finish(myself, state); // it reported its end before exiting
        return Ok(());
    }
    release(state, node);
    let slot = &state.slots[node.ix()];
    if let Some(stop) = state.stopping.clone().or_else(|| {
        slot.withdrawn.clone().map(|reason| Stopping {
            status: RunStatus::Running,
            reason,
            grace: Duration::ZERO,
        })
    }) {
        let end = synthetic_end(
            state,
            node,
            Terminal::Cancelled,
            Some(stop.reason.to_string()),
        );
        return end_all(myself, state, vec![Arc::new(end)]).await;
    }
    let running = slot.status() == NodeStatus::Running;
    let resume = running.then(|| Resume {
        failed_attempt: slot.attempts.max(1),
        error: ComponentError::retryable(CRASH_ERROR, cause),
        triggered_by: slot.triggered_by.clone().unwrap_or_else(|| Arc::from([])),
    });
    spawn_node(myself, state, node, resume, None).await?;
    if !running {
        replay_parents(state, node);
    }
    Ok(())
}

fn synthetic_end(
    state: &SupervisorState,
    node: NodeIx,
    terminal: Terminal,
    reason: Option<String>,
) -> NodeEnd {
    let slot = &state.slots[node.ix()];
    NodeEnd {
        node,
        terminal,
        attempts: slot.attempts,
        output: None,
        active_ports: None,
        error: None,
        reason,
        origin: None,
        handled: slot.failure.clone(),
        span: None,
    }
}

fn begin_stop(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    status: RunStatus,
    reason: Arc<str>,
    grace: Duration,
) {
    let upgrade = matches!(&state.stopping, Some(s) if grace < s.grace);
    if state.stopping.is_some() && !upgrade {
        return;
    }
    let stop = match state.stopping.take() {
        Some(mut s) if upgrade => {
            s.grace = grace;
            s.status = status;
            s.reason = reason;
            s
        }
        _ => Stopping {
            status,
            reason,
            grace,
        },
    };
    let mut unreached = Vec::new();
    for (i, slot) in state.slots.iter().enumerate().filter(|(_, s)| !s.ended()) {
        match &slot.actor {
            // A node actor that already stopped has reported its end.
            Some(actor) => {
                let _ = actor.cast(NodeMsg::Cancel(CancelReason {
                    text: stop.reason.clone(),
                    grace: stop.grace,
                }));
            }
            None => unreached.push(NodeIx(i as u32)),
        }
    }
    // Nodes the run never reached end now; nothing follows from their ends, since every
    // node still running is being cancelled too.
    for node in unreached {
        let end = unreached_end(state, node, stop.reason.to_string());
        record_end(state, &Arc::new(end));
    }
    myself.send_after(stop.grace + FORCE_MARGIN, || SupervisorMsg::ForceEnd);
    state.stopping = Some(stop);
}

/// Nodes that did not end within their grace are killed and recorded CANCELLED.
async fn force_end(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
) -> Result<(), ActorProcessingErr> {
    let Some(stop) = state.stopping.clone() else {
        return Ok(());
    };
    let stragglers: Vec<NodeIx> = state
        .run
        .graph
        .node_indices()
        .filter(|ix| !state.slots[ix.ix()].ended())
        .collect();
    for ix in stragglers {
        if let Some(actor) = &state.slots[ix.ix()].actor {
            actor.kill();
        }
        let reason = format!("{} (abandoned after the grace period)", stop.reason);
        let end = synthetic_end(state, ix, Terminal::Cancelled, Some(reason));
        end_all(myself, state, vec![Arc::new(end)]).await?;
    }
    Ok(())
}

/// The events so far, and the live ones to come unless the run has ended.
fn subscribe(state: &mut SupervisorState) -> EventFeed {
    if let Some(done) = &state.final_events {
        return EventFeed {
            backlog: done.as_ref().clone(),
            live: None,
        };
    }
    let (tx, rx) = mpsc::unbounded_channel();
    state.subscribers.push(tx);
    EventFeed {
        backlog: state.events.clone(),
        live: Some(rx),
    }
}

fn snapshot(state: &SupervisorState) -> RunSnapshot {
    let mut counts = std::collections::BTreeMap::new();
    let mut running = Vec::new();
    for (i, slot) in state.slots.iter().enumerate() {
        *counts.entry(slot.status()).or_insert(0) += 1;
        if slot.status() == NodeStatus::Running {
            running.push(state.run.graph.nodes[i].node_ref.to_string());
        }
    }
    RunSnapshot {
        run_id: state.run.run_id.to_string(),
        status: if state.done {
            final_status(state)
        } else {
            RunStatus::Running
        },
        counts,
        running,
    }
}

fn final_status(state: &SupervisorState) -> RunStatus {
    match (&state.stopping, &state.unhandled) {
        (Some(s), _) => s.status,
        (None, Some(_)) => RunStatus::Failed,
        (None, None) if !state.reported.is_empty() => RunStatus::Failed,
        (None, None) => RunStatus::Completed,
    }
}

/// Why the run did not complete: an unhandled failure first, then the stop, then the
/// failures components reported in their outputs.
fn run_error(state: &SupervisorState) -> Option<String> {
    match (&state.stopping, &state.unhandled) {
        (_, Some(u)) => Some(u.clone()),
        (Some(s), None) => Some(s.reason.to_string()),
        (None, None) if !state.reported.is_empty() => {
            let graph = &state.run.graph;
            Some(shipsec::run_failure_message(state.reported.iter().map(
                |(node, message)| (&*graph.node(*node).node_ref, message.as_str()),
            )))
        }
        (None, None) => None,
    }
}

fn build_result(state: &SupervisorState) -> RunResult {
    let graph = &state.run.graph;
    let status = final_status(state);
    let error = run_error(state);
    // Built in ref order, so the maps are filled in one pass without searching.
    let mut outputs = Vec::new();
    let mut nodes = Vec::with_capacity(graph.len());
    for &ix in graph.ref_order() {
        let slot = &state.slots[ix.ix()];
        let node_ref = &graph.node(ix).node_ref;
        let end = slot.end.as_ref();
        if let Some(out) = end.and_then(|e| e.output.clone()) {
            outputs.push((node_ref.clone(), out));
        }
        let triggered = slot
            .triggered_by
            .as_ref()
            .filter(|t| !t.is_empty())
            .map(|t| refs_of(state, t));
        let record = NodeRecord {
            status: slot.status(),
            attempts: slot.attempts,
            started_at: slot.started_at.map(Timestamp::from),
            completed_at: slot.completed_at.map(Timestamp::from),
            triggered_by: triggered,
            active_ports: end.and_then(|e| e.active_ports.clone()),
            failure: slot.failure.as_deref().cloned(),
            error: end.and_then(|e| e.error.as_ref()).map(error_info),
            reason: end.and_then(|e| e.reason.clone()),
        };
        nodes.push((node_ref.clone(), record));
    }
    RunResult {
        run_id: state.run.run_id.to_string(),
        title: graph.title.clone(),
        status,
        success: status == RunStatus::Completed,
        error,
        started_at: Timestamp::from(state.started_at),
        completed_at: Timestamp::now(),
        duration_ms: state.started.elapsed().as_millis() as u64,
        outputs: outputs.into_iter().collect(),
        nodes: nodes.into_iter().collect(),
        warnings: graph.warnings.clone(),
    }
}

/// The run span's final status, and the run metrics.
fn run_telemetry(state: &SupervisorState, result: &RunResult) {
    let metrics = &state.run.metrics;
    metrics.run_ended(
        result.status.as_str(),
        state.started.elapsed().as_secs_f64(),
    );
    let span = &state.run.span;
    if !span.is_disabled() {
        span.set_attribute(RUN_STATUS, result.status.as_str());
        if let (false, Some(error)) = (result.success, &result.error) {
            span.set_status(opentelemetry::trace::Status::error(error.clone()));
        }
    }
}

fn finish_run(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
    state.done = true;
    #[cfg(feature = "chaos")]
    crate::chaos::unregister_supervisor(&state.run.run_id);
    let result = Arc::new(build_result(state));
    run_telemetry(state, &result);
    state.subscribers.clear();
    // The orchestrator learns first, so that anyone who sees the result and then asks
    // the orchestrator about the run finds it finished (its mailbox is FIFO).
    let events = Arc::new(std::mem::take(&mut state.events));
    state.final_events = Some(events.clone());
    if let Some(orchestrator) = &state.orchestrator {
        // An orchestrator that is gone has no registry left to update.
        let _ = orchestrator.cast(OrchestratorMsg::RunEnded {
            result: result.clone(),
            events,
        });
    }
    // Receivers may all be gone (nobody waits for this run); the orchestrator keeps it.
    let _ = state.result_tx.send(Some(result));
    // Drain rather than stop: requests already queued (status, events) are answered.
    let _ = myself.drain();
}
