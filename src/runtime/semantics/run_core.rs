//! The run core: one run's decisions as a pure state machine — which nodes to spawn and
//! when, how each edge resolves, the failure policy, withdrawal for races, stopping,
//! crash recovery of node actors, the trace events and the result — taking facts and
//! returning effects.
//!
//! The run supervisor feeds it its nodes' reports, their actors' exits, stop requests and
//! its timers, with the current [`Time`], and performs the [`RunEffect`]s: spawn a node
//! actor, tell a child its parent ended, cancel or kill a node, arm a timer, emit a trace
//! event, record a metric, publish the result. The core holds no actor and reads no
//! clock, so the simulation in `tests/simulation.rs` runs it with no actor at all, and a
//! journal replays it.
//!
//! Each node is in one [`Slot`] state: unreached (no parent has ended), ready (every
//! parent has, waiting for the spawn window), live (an actor of a known generation runs
//! it, in a known phase), or ended (its actor may still be exiting). The run is in one
//! [`RunPhase`]: running, stopping for a [`StopCause`], or ended. A node actor's exit is
//! fenced by its generation: the exit of an actor already replaced changes nothing.
//!
//! The decisions are here; what they take and give is in `facts`, the trace events they
//! shape in `trace`, and the result and snapshot they build in `result`.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::runtime::components::{ComponentError, FailureInfo};
use crate::runtime::definition::graph::{EdgeIx, NodeIx};
use crate::runtime::semantics::attempt::AttemptId;
use crate::runtime::semantics::edge::resolve;
use crate::runtime::semantics::event::{
    ErrorInfo, EventId, EventMetadata, EventType, Level, TraceEvent,
};
use crate::runtime::semantics::failure::{FailureEffect, on_failure};
use crate::runtime::semantics::gate::{self, InputRequest, Resolution, ResolveError};
use crate::runtime::semantics::inbox::{
    self, Addressee, HumanInputResolution, Kept, KeptFor, Signal, SignalError, Signaled,
};
use crate::runtime::semantics::node_core::{NodeStart, Resume, ResumeAt, crash};
use crate::runtime::semantics::outcome::{
    CancelCause, NodeStatus, Outcome, RunStatus, StopCause, Terminal,
};
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::report::{
    CancelReason, InputAsked, NodeEnd, NodeReport, ParentEnded, Placed, RetryReport, RunTimer,
    StartReport, StopKind,
};
use crate::runtime::semantics::result::{NodeRecord, RunResult, RunSnapshot};
use crate::runtime::semantics::shipsec;
use crate::runtime::semantics::time::Time;
use crate::runtime::semantics::withdraw::Interest;

mod facts;
mod result;
mod trace;

pub use facts::{Metric, RESTART_CAUSE, RunEffect, RunFact};

/// Nodes whose every incoming edge has resolved are spawned at most this many at a time
/// until they report (QUEUED, STARTED or their end). Such a node always reports on its
/// own, so the window never waits on a node it holds back; a node still waiting on
/// parents is spawned at once. A 100,000-way fan-out so holds about this many idle
/// actors instead of 100,000.
pub const SPAWN_WINDOW: usize = 1024;

/// Extra time after a stop's grace period before nodes that did not end are abandoned.
pub const FORCE_MARGIN: Duration = Duration::from_secs(1);

/// A stop in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// Why (what its cancelled nodes record).
    pub cause: StopCause,
    /// Grace of running attempts.
    pub grace: Duration,
    /// When nodes that have not ended are abandoned.
    pub force_due: Time,
}

impl Stop {
    /// The run's final status when it ends stopped.
    pub fn status(&self) -> RunStatus {
        match self.cause {
            StopCause::Requested(StopKind::Cancel) => RunStatus::Cancelled,
            StopCause::Requested(StopKind::Terminate) => RunStatus::Terminated,
            StopCause::Deadline(_) => RunStatus::TimedOut,
            StopCause::FailRun(_) => RunStatus::Failed,
        }
    }
}

/// Where the run is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunPhase {
    /// Nodes run as their joins decide.
    Running,
    /// Every node is being stopped.
    Stopping(Stop),
    /// Every node ended and every node actor exited; the result is out.
    Ended(RunStatus),
}

/// The phase of a node with a live actor, as the run knows it from the node's reports.
#[derive(Debug, Clone, PartialEq)]
enum LivePhase {
    /// Waiting on its join.
    Pending,
    /// Attempt `attempt` waits for slots.
    Queued(StartReport),
    /// Attempt `attempt` runs.
    Running(StartReport),
    /// Attempt `report.attempt` failed; the next waits out its backoff, until the time
    /// given.
    BackingOff(StartReport, Time),
    /// Attempt `report.attempt` asked for input: the gate waits for the answer to the
    /// request named.
    AwaitingInput(StartReport, Arc<str>),
}

/// A node with a live actor.
#[derive(Debug, Clone, PartialEq)]
struct Live {
    generation: u32,
    phase: LivePhase,
    /// Spawned through the window and not reported yet.
    windowed: bool,
}

/// An ended node.
#[derive(Debug, Clone, PartialEq)]
struct Ended {
    end: Arc<NodeEnd>,
    /// Position among the run's ends (1-based): the order its children see.
    order: u32,
    at: Time,
    /// The generation of its actor while that actor is still exiting.
    exiting: Option<u32>,
}

/// What the run knows of one node.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    /// No parent has ended, and no actor runs it.
    Unreached,
    /// Every incoming edge resolved: it waits for the spawn window.
    Ready,
    /// An actor runs it.
    Live(Live),
    /// It ended.
    Ended(Ended),
}

/// What the result says of a node beyond its state.
#[derive(Debug, Clone, Default, PartialEq)]
struct Record {
    /// Incoming edges not resolved yet.
    unresolved: u32,
    attempts: u32,
    started_at: Option<Time>,
    /// When its current attempt began to wait for slots.
    queued_at: Option<Time>,
    triggered_by: Option<Arc<[EdgeIx]>>,
    failure: Option<Arc<FailureInfo>>,
    /// Actors spawned for it so far.
    generations: u32,
    /// Why it is being cancelled, once it lost a race (every dependent withdrew).
    withdrawn: Option<CancelCause>,
    /// The remote worker that took its latest placed attempt: `(attempt, worker)`.
    worker: Option<(u32, Arc<str>)>,
}

/// One run's decisions.
#[derive(Debug)]
pub struct RunCore {
    plan: Arc<RunPlan>,
    slots: Vec<Slot>,
    records: Vec<Record>,
    interest: Interest,
    ready: VecDeque<NodeIx>,
    /// Nodes spawned through the window that have not reported yet.
    starting: usize,
    ended: usize,
    live_actors: usize,
    phase: RunPhase,
    /// The first unhandled failure, as the run's error says it.
    unhandled: Option<String>,
    /// Completed nodes whose output reported a failure (`success: false`), in order.
    reported: Vec<(NodeIx, String)>,
    /// The run's trace: every event, in `seq` order (the core is its only writer).
    events: Vec<TraceEvent>,
    /// The input requests of its gates, each with its node, oldest first.
    requests: Vec<(NodeIx, InputRequest)>,
    /// Ids of the signals received, and how many signal facts came.
    signals: HashSet<Arc<str>>,
    signals_received: u64,
    /// Answers that came before their requests.
    kept: Vec<Kept>,
    started_at: Time,
    out: Vec<RunEffect>,
}

impl RunCore {
    /// The core of the run `plan` describes, before its `Started` fact.
    pub fn new(plan: Arc<RunPlan>) -> RunCore {
        let graph = &plan.graph;
        let records = graph
            .nodes
            .iter()
            .map(|n| Record {
                unresolved: n.incoming.len() as u32,
                ..Record::default()
            })
            .collect();
        RunCore {
            slots: vec![Slot::Unreached; graph.len()],
            records,
            interest: Interest::new(graph),
            ready: VecDeque::new(),
            starting: 0,
            ended: 0,
            live_actors: 0,
            phase: RunPhase::Running,
            unhandled: None,
            reported: Vec::new(),
            // Two events per node at least (a start and an end, or one end): reserved
            // once, instead of regrowing and copying the log as the run goes. Pages are
            // only touched as events are written.
            requests: Vec::new(),
            signals: HashSet::new(),
            signals_received: 0,
            kept: Vec::new(),
            events: Vec::with_capacity(2 * graph.len() + 1),
            started_at: Time::ZERO,
            out: Vec::new(),
            plan,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Arc<RunPlan> {
        &self.plan
    }

    /// Where the run is.
    pub fn phase(&self) -> &RunPhase {
        &self.phase
    }

    /// The run's trace events so far, in `seq` order.
    pub fn events(&self) -> &[TraceEvent] {
        &self.events
    }

    /// The input requests of its gates, oldest first.
    pub fn requests(&self) -> impl Iterator<Item = &InputRequest> {
        self.requests.iter().map(|(_, request)| request)
    }

    /// The ids of the signals the run has taken (a repeat of one is a duplicate, also
    /// after the run ended).
    pub fn signal_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.signals.iter()
    }

    /// The id of signal `signal_id` when the run took it.
    pub fn took_signal(&self, signal_id: &str) -> Option<Arc<str>> {
        self.signals.get(signal_id).cloned()
    }

    /// How many signals the run has received (the next one without an id is
    /// `sig-<this + 1>`).
    pub fn signals_received(&self) -> u64 {
        self.signals_received
    }

    /// What answering `request_id` with `resolution` would do now, changing nothing: for
    /// a run that has ended, whose requests are all settled.
    pub fn verdict(
        &self,
        request_id: &str,
        resolution: &Resolution,
    ) -> Result<gate::Resolved, ResolveError> {
        match self.request_at(request_id) {
            None => Err(ResolveError::Unknown(request_id.to_owned())),
            Some(at) => self.requests[at].1.verdict_after_end(resolution),
        }
    }

    /// Hands the whole trace over (once the run has ended, to the orchestrator).
    pub fn take_events(&mut self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether `node` has ended.
    pub fn has_ended(&self, node: NodeIx) -> bool {
        matches!(self.slots[node.ix()], Slot::Ended(_))
    }

    /// Whether `fact` is the death of a node that already ended: it only counts the exit
    /// of its actor, which a replay learns of otherwise ([`RunFact::Resumed`],
    /// [`RunFact::ActorsGone`]), so the journal need not keep it.
    pub fn is_late_exit(&self, fact: &RunFact) -> bool {
        matches!(fact, RunFact::NodeDied { node, .. } if self.has_ended(*node))
    }

    /// The only way the run changes: applies `fact` at `now` and returns what to do, in
    /// order. No clock, no I/O, no entropy.
    pub fn apply(&mut self, fact: RunFact, now: Time) -> Vec<RunEffect> {
        if !matches!(self.phase, RunPhase::Ended(_)) {
            match fact {
                RunFact::Started => self.on_started(now),
                RunFact::Node(report) => self.on_report(report, now),
                RunFact::ActorExited {
                    node,
                    generation,
                    cause,
                } => self.on_actor_exited(node, generation, cause),
                RunFact::NodeDied {
                    node,
                    generation,
                    cause,
                } => self.on_node_died(node, generation, cause, false, now),
                RunFact::Placed(placed) => self.on_placed(placed),
                RunFact::CancelRequested(kind) => {
                    let grace = match kind {
                        StopKind::Cancel => self.plan.cancel_grace,
                        StopKind::Terminate => Duration::ZERO,
                    };
                    self.begin_stop(StopCause::Requested(kind), grace, now);
                }
                RunFact::TimerFired(RunTimer::Deadline) => self.on_deadline(now),
                RunFact::TimerFired(RunTimer::ForceEnd) => self.force_end(now),
                RunFact::TimerFired(RunTimer::InputDeadline { node, attempt }) => {
                    self.on_input_deadline(node, attempt, now);
                }
                RunFact::InputResolution {
                    request_id,
                    resolution,
                } => self.on_resolution(request_id, resolution, now),
                RunFact::Signal(signal) => self.on_signal(&signal, now),
                RunFact::Resumed => self.on_resumed(now),
                RunFact::ActorsGone => self.forget_exiting(),
            }
            self.pump();
            self.maybe_finish(now);
        }
        std::mem::take(&mut self.out)
    }

    /// Gives back an emptied effect vector, so the next [`RunCore::apply`] reuses it.
    pub fn recycle(&mut self, mut effects: Vec<RunEffect>) {
        effects.clear();
        if self.out.capacity() == 0 {
            self.out = effects;
        }
    }

    fn on_started(&mut self, now: Time) {
        self.started_at = now;
        let graph = self.plan.graph.clone();
        for ix in graph.node_indices() {
            if graph.node(ix).incoming.is_empty() {
                self.slots[ix.ix()] = Slot::Ready;
                self.ready.push_back(ix);
            }
        }
        if let Some(deadline) = graph.settings.timeout {
            self.out.push(RunEffect::ArmTimer {
                due: now + deadline,
                timer: RunTimer::Deadline,
            });
        }
    }

    fn on_deadline(&mut self, now: Time) {
        let timeout = self.plan.graph.settings.timeout.unwrap_or_default();
        let grace = self.plan.cancel_grace;
        self.begin_stop(StopCause::Deadline(timeout), grace, now);
    }

    fn on_report(&mut self, report: NodeReport, now: Time) {
        match report {
            NodeReport::Queued(start) => {
                let ends = self.on_start(start, true, now);
                self.end_all(ends, now);
            }
            NodeReport::Started(start) => {
                let ends = self.on_start(start, false, now);
                self.end_all(ends, now);
            }
            NodeReport::Retrying(retry) => self.on_retrying(retry, now),
            NodeReport::AwaitingInput(asked) => self.on_awaiting(&asked, now),
            NodeReport::Ended(end) => self.end_all(vec![end], now),
        }
    }

    /// A gate's attempt asked for input: its request is pending until it is answered,
    /// expires (a timer at its deadline) or is cancelled with its node.
    fn on_awaiting(&mut self, asked: &InputAsked, now: Time) {
        let node = asked.node;
        let Slot::Live(live) = &mut self.slots[node.ix()] else {
            return; // ended already: a late report
        };
        let phase = std::mem::replace(&mut live.phase, LivePhase::Pending);
        let LivePhase::Running(start) = phase else {
            live.phase = phase;
            return;
        };
        live.phase = LivePhase::AwaitingInput(start, asked.request_id.clone());
        self.metric(Metric::Running(-1));
        let request = InputRequest::new(
            asked.request_id.to_string(),
            self.plan.node_ref(node).to_string(),
            asked.attempt,
            asked.input.clone(),
            now,
            asked.deadline,
        );
        if let Some(due) = request.deadline {
            self.out.push(RunEffect::ArmTimer {
                due,
                timer: RunTimer::InputDeadline {
                    node,
                    attempt: asked.attempt,
                },
            });
        }
        // The engine hears of the request before its event is published, so whoever
        // reads the event finds the request.
        self.out.push(RunEffect::Request(Arc::new(request.clone())));
        self.trace_awaiting(node, &request, now);
        let request_id = request.request_id.clone();
        self.requests.push((node, request));
        // An answer that came first is taken now (one that does not fit stays kept).
        let kept = self.kept.iter().position(|k| k.answers(node, &request_id));
        if let Some(kept) = kept {
            let at = self.requests.len() - 1;
            let resolution = self.kept[kept].resolution.clone();
            if self.answer(at, resolution, now).is_ok() {
                self.kept.remove(kept);
            }
        }
    }

    /// A person answered request `request_id`: applied, the gate completes with the
    /// resolved output; the same answer again changes nothing; anything else is refused.
    /// Whoever sent it is told which ([`RunEffect::Resolved`]).
    fn on_resolution(&mut self, request_id: Arc<str>, resolution: Resolution, now: Time) {
        let outcome = match self.request_at(&request_id) {
            None => Err(ResolveError::Unknown(request_id.to_string())),
            Some(at) => self.answer(at, resolution, now),
        };
        self.out.push(RunEffect::Resolved {
            request_id,
            outcome,
        });
    }

    fn request_at(&self, request_id: &str) -> Option<usize> {
        self.requests
            .iter()
            .position(|(_, r)| r.request_id == request_id)
    }

    /// Answers the request at `at`: applied, its gate is told what it completes with.
    fn answer(
        &mut self,
        at: usize,
        resolution: Resolution,
        now: Time,
    ) -> Result<gate::Resolved, ResolveError> {
        let outcome = self.requests[at].1.resolve(resolution, now);
        if outcome == Ok(gate::Resolved::Applied) {
            self.settled(at, now);
            self.tell_gate(at);
        }
        outcome
    }

    /// Tells the gate of the request at `at` what it ends with, once the request was
    /// answered or expired.
    fn tell_gate(&mut self, at: usize) {
        let (node, request) = &self.requests[at];
        if let Some(answer) = request.gate_result() {
            self.out.push(RunEffect::Answer {
                node: *node,
                request_id: Arc::from(request.request_id.as_str()),
                answer,
            });
        }
    }

    /// A signal came: a repeat of its id does nothing; `resolveHumanInput` answers its
    /// request, or is kept until the request exists; any other name is only recorded.
    fn on_signal(&mut self, signal: &Signal, now: Time) {
        self.signals_received += 1;
        let outcome = if self.signals.insert(signal.signal_id.clone()) {
            self.deliver(signal, now)
        } else {
            Ok(Signaled::Duplicate)
        };
        self.out.push(RunEffect::Signaled {
            signal_id: signal.signal_id.clone(),
            outcome,
        });
    }

    fn deliver(&mut self, signal: &Signal, now: Time) -> Result<Signaled, SignalError> {
        if &*signal.name != inbox::RESOLVE_HUMAN_INPUT {
            self.trace_signal(signal, now);
            return Ok(Signaled::Unhandled);
        }
        let (to, resolution) = HumanInputResolution::read(&signal.payload)?;
        let (at, target) = match to {
            Addressee::Request(id) => (self.request_at(&id), KeptFor::Request(id.into())),
            Addressee::Gate(node_ref) => {
                let node = self
                    .plan
                    .graph
                    .find(&node_ref)
                    .ok_or(SignalError::UnknownNode(node_ref))?;
                let pending = self
                    .requests
                    .iter()
                    .rposition(|(n, r)| *n == node && r.status == gate::RequestStatus::Pending);
                (pending, KeptFor::Node(node))
            }
        };
        let Some(at) = at else {
            self.kept.push(Kept { target, resolution });
            return Ok(Signaled::Kept);
        };
        let request_id: Arc<str> = Arc::from(self.requests[at].1.request_id.as_str());
        match self.answer(at, resolution, now)? {
            gate::Resolved::Applied => Ok(Signaled::Applied(request_id)),
            gate::Resolved::Duplicate => Ok(Signaled::AlreadyAnswered(request_id)),
        }
    }

    /// A gate ended (answered, expired, cancelled with its run or withdrawn): a request of
    /// its that is still pending is cancelled, so no request outlives its node.
    /// Only a node waiting on a request has one pending, so no other node's end looks.
    fn close_requests(&mut self, node: NodeIx, now: Time) {
        let Slot::Live(Live {
            phase: LivePhase::AwaitingInput(_, request_id),
            ..
        }) = &self.slots[node.ix()]
        else {
            return;
        };
        if let Some(at) = self.request_at(request_id)
            && self.requests[at].1.cancel()
        {
            self.settled(at, now);
        }
    }

    /// The request at `at` left `pending`: its event, and its new state for whoever
    /// lists requests.
    fn settled(&mut self, at: usize, now: Time) {
        let (node, request) = &self.requests[at];
        let (node, request) = (*node, Arc::new(request.clone()));
        self.out.push(RunEffect::Request(request.clone()));
        self.trace_settled(node, &request, now);
    }

    /// The deadline of a gate's request came: a request still pending expires, and its
    /// gate fails with `TimeoutError`.
    fn on_input_deadline(&mut self, node: NodeIx, attempt: u32, now: Time) {
        let Some(at) = self
            .requests
            .iter()
            .position(|(n, r)| *n == node && r.attempt == attempt)
        else {
            return;
        };
        let request = &mut self.requests[at].1;
        if !request.is_due(now) || !request.expire() {
            return;
        }
        self.settled(at, now);
        self.tell_gate(at);
    }

    /// A node queued or started an attempt; a `first` node that just fired withdraws
    /// from its other parents (the ends of those the run never reached are returned).
    fn on_start(&mut self, start: StartReport, queued: bool, now: Time) -> Vec<Arc<NodeEnd>> {
        let node = start.node;
        self.release(node);
        let Slot::Live(live) = &mut self.slots[node.ix()] else {
            return Vec::new(); // ended already: a late report
        };
        let was_queued = matches!(live.phase, LivePhase::Queued(_));
        let withdraw = start.withdraw;
        let record = &mut self.records[node.ix()];
        record.failure = start.failure.clone();
        record.triggered_by = Some(start.triggered_by.clone());
        if !queued {
            record.attempts = start.attempt;
            record.started_at.get_or_insert(now);
        }
        let metadata = self.start_metadata(&start);
        if let Slot::Live(live) = &mut self.slots[node.ix()] {
            live.phase = if queued {
                LivePhase::Queued(start)
            } else {
                LivePhase::Running(start)
            };
        }
        let queued_at = if queued {
            self.records[node.ix()].queued_at.replace(now)
        } else {
            self.records[node.ix()].queued_at.take()
        };
        if was_queued {
            self.metric(Metric::Queued(-1));
            if let (false, Some(since)) = (queued, queued_at) {
                self.metric(Metric::QueueWait {
                    node,
                    seconds: now.since(since).as_secs_f64(),
                });
            }
        }
        self.metric(if queued {
            Metric::Queued(1)
        } else {
            Metric::Running(1)
        });
        self.trace_start(node, queued, metadata, now);
        if withdraw && matches!(self.phase, RunPhase::Running) {
            let winner = self.records[node.ix()]
                .triggered_by
                .as_ref()
                .and_then(|t| t.first())
                .map(|e| self.plan.graph.edge(*e).source);
            let cause = CancelCause::Withdrawn {
                by: self.plan.node_ref(node).clone(),
                winner: winner.map(|w| self.plan.node_ref(w).clone()),
            };
            return self.withdraw_from_parents(node, &cause);
        }
        Vec::new()
    }

    fn on_placed(&mut self, placed: Placed) {
        let Placed {
            node,
            attempt,
            worker,
        } = placed;
        if self.has_ended(node) {
            return; // a late placement: the node's events are written
        }
        let record = &mut self.records[node.ix()];
        if record.worker.as_ref().is_none_or(|(a, _)| *a <= attempt) {
            record.worker = Some((attempt, worker));
        }
    }

    /// The worker that took attempt `attempt` of `node`, when a remote one did.
    pub(super) fn worker_of(&self, node: NodeIx, attempt: u32) -> Option<Arc<str>> {
        match &self.records[node.ix()].worker {
            Some((a, worker)) if *a == attempt => Some(worker.clone()),
            _ => None,
        }
    }

    fn on_retrying(&mut self, retry: RetryReport, now: Time) {
        let RetryReport {
            node,
            attempt,
            delay,
            error,
        } = retry;
        let Slot::Live(live) = &mut self.slots[node.ix()] else {
            return;
        };
        let phase = std::mem::replace(&mut live.phase, LivePhase::Pending);
        live.phase = match phase {
            LivePhase::Running(start)
            | LivePhase::Queued(start)
            | LivePhase::BackingOff(start, _)
            | LivePhase::AwaitingInput(start, _) => LivePhase::BackingOff(start, now + delay),
            LivePhase::Pending => LivePhase::Pending,
        };
        self.metric(Metric::Running(-1));
        self.metric(Metric::Attempt {
            node,
            error_type: Some(error.error_type.clone()),
        });
        self.trace_retry(node, attempt, delay, &error, now);
    }

    /// Records node ends and what follows from each, until nothing is left: the failure
    /// policy, withdrawal (whose cancelled parents may end here too) and the children's
    /// edges.
    fn end_all(&mut self, mut ends: Vec<Arc<NodeEnd>>, now: Time) {
        while let Some(end) = ends.pop() {
            let node = end.node;
            if self.has_ended(node) {
                continue; // each node ends once: a late or repeated report is ignored
            }
            let withdrawn = self.records[node.ix()].withdrawn.clone();
            self.close_requests(node, now);
            self.record_end(&end, now);
            match end.terminal() {
                Terminal::Failed => self.on_node_failed(node, &end, now),
                Terminal::Cancelled => {
                    if let Some(cause) = withdrawn
                        && matches!(self.phase, RunPhase::Running)
                    {
                        ends.extend(self.withdraw_from_parents(node, &cause));
                    }
                }
                Terminal::Completed | Terminal::Skipped => {}
            }
            self.resolve_children(&end);
        }
    }

    fn on_node_failed(&mut self, node: NodeIx, end: &NodeEnd, now: Time) {
        match on_failure(&self.plan.graph, node) {
            FailureEffect::Handled => {}
            FailureEffect::SkipDependents => self.note_unhandled(node, end),
            FailureEffect::FailRun => {
                self.note_unhandled(node, end);
                let failed = self.plan.node_ref(node).clone();
                let grace = self.plan.cancel_grace;
                self.begin_stop(StopCause::FailRun(failed), grace, now);
            }
        }
    }

    fn note_unhandled(&mut self, node: NodeIx, end: &NodeEnd) {
        if self.unhandled.is_none() {
            let what = end.error().map_or_else(String::new, |e| format!(": {e}"));
            self.unhandled = Some(format!("node {} FAILED{what}", self.plan.node_ref(node)));
        }
    }

    fn record_end(&mut self, end: &Arc<NodeEnd>, now: Time) {
        let node = end.node;
        self.end_metrics(end, now);
        self.release(node);
        let exiting = match &self.slots[node.ix()] {
            Slot::Live(live) => Some(live.generation),
            _ => None,
        };
        self.ended += 1;
        self.slots[node.ix()] = Slot::Ended(Ended {
            end: end.clone(),
            order: self.ended as u32,
            at: now,
            exiting,
        });
        let record = &mut self.records[node.ix()];
        record.attempts = record.attempts.max(end.attempts);
        if let Some(message) = end.output().and_then(|o| shipsec::reported_failure(o)) {
            self.reported.push((node, message));
        }
        self.trace_end(end, now);
    }

    /// Node metrics at a node's end: gauges back down, its last attempt, its duration.
    fn end_metrics(&mut self, end: &NodeEnd, now: Time) {
        let node = end.node;
        let running = match &self.slots[node.ix()] {
            Slot::Live(Live {
                phase: LivePhase::Queued(_),
                ..
            }) => {
                self.metric(Metric::Queued(-1));
                false
            }
            Slot::Live(Live {
                phase: LivePhase::Running(_),
                ..
            }) => {
                self.metric(Metric::Running(-1));
                true
            }
            _ => false,
        };
        match (end.terminal(), end.error()) {
            (Terminal::Completed, _) => self.metric(Metric::Attempt {
                node,
                error_type: None,
            }),
            (Terminal::Failed, Some(e)) if running => self.metric(Metric::Attempt {
                node,
                error_type: Some(e.error_type.clone()),
            }),
            _ => {}
        }
        if let Some(started) = self.records[node.ix()].started_at {
            self.metric(Metric::NodeEnded {
                node,
                terminal: end.terminal(),
                seconds: now.since(started).as_secs_f64(),
            });
        }
    }

    /// Resolves each outgoing edge of an ended node and tells the child (§1), spawning the
    /// child if this is the first of its parents to end.
    fn resolve_children(&mut self, end: &Arc<NodeEnd>) {
        let graph = self.plan.graph.clone();
        for e in &graph.node(end.node).outgoing {
            let edge = graph.edge(*e);
            let child = edge.target;
            let record = &mut self.records[child.ix()];
            record.unresolved = record.unresolved.saturating_sub(1);
            let unresolved = record.unresolved;
            match &self.slots[child.ix()] {
                Slot::Ended(_) | Slot::Ready => {}
                Slot::Unreached if unresolved == 0 => {
                    // Every parent has ended: the child waits for the spawn window, and
                    // its resolutions are handed over then, in the order its parents ended.
                    self.slots[child.ix()] = Slot::Ready;
                    self.ready.push_back(child);
                }
                Slot::Unreached => {
                    // The first parent to end while others have not: spawned at once,
                    // since it may wait. (A stopping run has ended every unreached node.)
                    let resolved = resolution(edge, *e, end);
                    self.spawn(child, NodeStart::Reached(vec![resolved]), false);
                }
                Slot::Live(_) => {
                    let resolved = resolution(edge, *e, end);
                    self.out.push(RunEffect::Tell { child, resolved });
                }
            }
        }
    }

    fn spawn(&mut self, node: NodeIx, start: NodeStart, windowed: bool) {
        let record = &mut self.records[node.ix()];
        let generation = record.generations;
        record.generations += 1;
        // A respawned node stays where its dead actor was until the new one reports, so
        // that dying again (or an engine restart) before then resumes it from there too:
        // a crashed attempt is not run again under the same number.
        let phase = match &start {
            NodeStart::Reached(_) => LivePhase::Pending,
            NodeStart::Resumed(resume) => match resume.attempt {
                ResumeAt::Crashed { .. } => LivePhase::Running(resume.started.clone()),
                ResumeAt::Requeue { .. } => LivePhase::Queued(resume.started.clone()),
                ResumeAt::Backoff { due, .. } => LivePhase::BackingOff(resume.started.clone(), due),
                ResumeAt::AwaitingInput { ref request_id, .. } => {
                    LivePhase::AwaitingInput(resume.started.clone(), request_id.clone())
                }
            },
        };
        self.slots[node.ix()] = Slot::Live(Live {
            generation,
            phase,
            windowed,
        });
        if windowed {
            self.starting += 1;
        }
        self.live_actors += 1;
        self.out.push(RunEffect::Spawn {
            node,
            generation,
            start,
        });
    }

    /// Frees the window place of a node that reported, ended or died.
    fn release(&mut self, node: NodeIx) {
        if let Slot::Live(live) = &mut self.slots[node.ix()]
            && std::mem::take(&mut live.windowed)
        {
            self.starting -= 1;
        }
    }

    /// Spawns ready nodes while the window has room.
    fn pump(&mut self) {
        while self.starting < SPAWN_WINDOW {
            let Some(node) = self.ready.pop_front() else {
                break;
            };
            if self.slots[node.ix()] != Slot::Ready {
                continue; // a stop or a withdrawal ended it meanwhile
            }
            let resolved = self.ended_parents(node);
            self.spawn(node, NodeStart::Reached(resolved), true);
        }
    }

    /// The resolutions of `node`'s incoming edges whose sources have ended, in the order
    /// they ended (edge order among one source's edges).
    fn ended_parents(&self, node: NodeIx) -> Vec<ParentEnded> {
        let graph = &self.plan.graph;
        let mut resolved: Vec<(u32, ParentEnded)> = graph
            .node(node)
            .incoming
            .iter()
            .filter_map(|e| {
                let edge = graph.edge(*e);
                let Slot::Ended(ended) = &self.slots[edge.source.ix()] else {
                    return None;
                };
                Some((ended.order, resolution(edge, *e, &ended.end)))
            })
            .collect();
        resolved.sort_by_key(|(order, _)| *order);
        resolved.into_iter().map(|(_, r)| r).collect()
    }

    /// `node` withdraws from its unfinished parents; those no longer needed are cancelled.
    /// A live parent is told; the ends of parents the run never reached are returned, for
    /// the caller to record.
    fn withdraw_from_parents(&mut self, node: NodeIx, cause: &CancelCause) -> Vec<Arc<NodeEnd>> {
        let slots = &self.slots;
        let unneeded = self.interest.withdraw(&self.plan.graph, node, |p| {
            matches!(slots[p.ix()], Slot::Ended(_))
        });
        let mut unreached = Vec::new();
        for parent in unneeded {
            self.records[parent.ix()].withdrawn = Some(cause.clone());
            match &self.slots[parent.ix()] {
                Slot::Live(_) => self.out.push(RunEffect::Cancel {
                    node: parent,
                    reason: CancelReason {
                        cause: cause.clone(),
                        grace: self.plan.cancel_grace,
                    },
                }),
                Slot::Unreached | Slot::Ready => {
                    unreached.push(self.unreached_end(parent, cause.clone()));
                }
                Slot::Ended(_) => {}
            }
        }
        unreached
    }

    /// The end of a node the run never reached, cancelled for `cause`.
    fn unreached_end(&mut self, node: NodeIx, cause: CancelCause) -> Arc<NodeEnd> {
        let end = self.cancelled_end(node, cause);
        self.out.push(RunEffect::Unreached(end.clone()));
        end
    }

    /// The end the run records itself for a node cancelled for `cause`: one it never
    /// reached, one whose actor died while it was being stopped, or one abandoned.
    fn cancelled_end(&self, node: NodeIx, cause: CancelCause) -> Arc<NodeEnd> {
        let record = &self.records[node.ix()];
        Arc::new(NodeEnd {
            node,
            attempts: record.attempts,
            outcome: Outcome::Cancelled(cause),
            handled: record.failure.clone(),
        })
    }

    fn on_actor_exited(&mut self, node: NodeIx, generation: u32, cause: String) {
        match &mut self.slots[node.ix()] {
            Slot::Ended(ended) if ended.exiting == Some(generation) => {
                ended.exiting = None;
                self.live_actors -= 1;
            }
            Slot::Live(live) if live.generation == generation => {
                // A report sent just before the exit may still be queued: re-check behind it.
                self.out.push(RunEffect::Recheck {
                    node,
                    generation,
                    cause,
                });
            }
            _ => {} // the exit of an actor already replaced
        }
    }

    /// A node actor exited and no end of it was recorded: it died. A stopping run (or a
    /// lost race) ends it CANCELLED; otherwise it is respawned where it was.
    fn on_node_died(
        &mut self,
        node: NodeIx,
        generation: u32,
        cause: String,
        restart: bool,
        now: Time,
    ) {
        match &mut self.slots[node.ix()] {
            Slot::Ended(ended) if ended.exiting == Some(generation) => {
                ended.exiting = None;
                self.live_actors -= 1;
                return; // it reported its end before exiting
            }
            Slot::Live(live) if live.generation == generation => {}
            _ => return,
        }
        self.release(node);
        self.live_actors -= 1;
        // No actor is left: the slot holds none until one is respawned.
        let Slot::Live(live) = std::mem::replace(&mut self.slots[node.ix()], Slot::Unreached)
        else {
            unreachable!("checked above")
        };
        let cancelled = match &self.phase {
            RunPhase::Stopping(stop) => Some(CancelCause::RunStopping(stop.cause.clone())),
            _ => self.records[node.ix()].withdrawn.clone(),
        };
        if let Some(cause) = cancelled {
            let end = self.cancelled_end(node, cause);
            return self.end_all(vec![end], now);
        }
        let start = match live.phase {
            LivePhase::Pending => NodeStart::Reached(self.ended_parents(node)),
            LivePhase::Queued(started) => NodeStart::Resumed(Box::new(Resume {
                attempt: ResumeAt::Requeue {
                    attempt: started.attempt,
                },
                started,
            })),
            LivePhase::Running(started) => NodeStart::Resumed(Box::new(Resume {
                attempt: ResumeAt::Crashed {
                    attempt: started.attempt,
                    error: crash(cause),
                    lost: restart,
                },
                started,
            })),
            // Its attempt had already failed and was reported: it waits on.
            LivePhase::BackingOff(started, due) => NodeStart::Resumed(Box::new(Resume {
                attempt: ResumeAt::Backoff {
                    next: started.attempt + 1,
                    due,
                },
                started,
            })),
            // Its attempt had ended asking for input: the gate waits on.
            LivePhase::AwaitingInput(started, request_id) => NodeStart::Resumed(Box::new(Resume {
                attempt: ResumeAt::AwaitingInput {
                    attempt: started.attempt,
                    request_id,
                },
                started,
            })),
        };
        self.spawn(node, start, false);
    }

    /// The engine restarted: no actor of the run is left. The `RESUMED` event comes first,
    /// naming the attempts that were running (lost); then every live node is respawned as
    /// if its actor had died, and the run's timer is armed again at its due time (the
    /// deadline counts from the run's original start).
    fn on_resumed(&mut self, now: Time) {
        self.forget_exiting();
        let mut lost = Vec::new();
        let mut live = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Slot::Live(l) = slot {
                if let LivePhase::Running(start) = &l.phase {
                    lost.push((NodeIx(i as u32), start.attempt));
                }
                live.push((NodeIx(i as u32), l.generation));
            }
        }
        self.emit_resumed(&lost, now);
        for (node, generation) in live {
            self.on_node_died(node, generation, RESTART_CAUSE.into(), true, now);
        }
        // Pending requests keep their deadlines: one that passed fires at once, once. A
        // request answered or expired before the restart whose gate had not ended yet
        // tells its respawned gate again.
        for at in 0..self.requests.len() {
            let (node, request) = &self.requests[at];
            if let (gate::RequestStatus::Pending, Some(due)) = (request.status, request.deadline) {
                self.out.push(RunEffect::ArmTimer {
                    due,
                    timer: RunTimer::InputDeadline {
                        node: *node,
                        attempt: request.attempt,
                    },
                });
            }
            let waits = matches!(
                &self.slots[node.ix()],
                Slot::Live(l) if matches!(&l.phase, LivePhase::AwaitingInput(_, id) if **id == *request.request_id)
            );
            if waits {
                self.tell_gate(at);
            }
        }
        match &self.phase {
            RunPhase::Running => {
                if let Some(deadline) = self.plan.graph.settings.timeout {
                    self.out.push(RunEffect::ArmTimer {
                        due: self.started_at + deadline,
                        timer: RunTimer::Deadline,
                    });
                }
            }
            RunPhase::Stopping(stop) => self.out.push(RunEffect::ArmTimer {
                due: stop.force_due,
                timer: RunTimer::ForceEnd,
            }),
            RunPhase::Ended(_) => {}
        }
    }

    /// The actors of ended nodes are all gone.
    fn forget_exiting(&mut self) {
        for slot in &mut self.slots {
            if let Slot::Ended(ended) = slot
                && ended.exiting.take().is_some()
            {
                self.live_actors -= 1;
            }
        }
    }

    /// Starts stopping the run; a stop with a shorter grace replaces one in progress
    /// (terminate during a cancel's grace). Nodes the run never reached end now; nothing
    /// follows from their ends, since every live node is being stopped too.
    fn begin_stop(&mut self, cause: StopCause, grace: Duration, now: Time) {
        if let RunPhase::Stopping(current) = &self.phase
            && grace >= current.grace
        {
            return;
        }
        let stop = Stop {
            cause,
            grace,
            force_due: now + grace + FORCE_MARGIN,
        };
        let mut unreached = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Slot::Live(_) => self.out.push(RunEffect::Cancel {
                    node: NodeIx(i as u32),
                    reason: CancelReason {
                        cause: CancelCause::RunStopping(stop.cause.clone()),
                        grace: stop.grace,
                    },
                }),
                Slot::Unreached | Slot::Ready => unreached.push(NodeIx(i as u32)),
                Slot::Ended(_) => {}
            }
        }
        for node in unreached {
            let end = self.unreached_end(node, CancelCause::RunStopping(stop.cause.clone()));
            self.record_end(&end, now);
        }
        self.out.push(RunEffect::ArmTimer {
            due: stop.force_due,
            timer: RunTimer::ForceEnd,
        });
        self.phase = RunPhase::Stopping(stop);
    }

    /// Nodes that did not end within their grace are killed and recorded CANCELLED.
    fn force_end(&mut self, now: Time) {
        let RunPhase::Stopping(stop) = &self.phase else {
            return;
        };
        let cause = CancelCause::Abandoned(stop.cause.clone());
        let stragglers: Vec<NodeIx> = self
            .plan
            .graph
            .node_indices()
            .filter(|ix| !self.has_ended(*ix))
            .collect();
        for node in stragglers {
            if matches!(self.slots[node.ix()], Slot::Live(_)) {
                self.out.push(RunEffect::Kill { node });
            }
            let end = self.cancelled_end(node, cause.clone());
            self.end_all(vec![end], now);
        }
    }

    /// The run ends once every node has ended and every node actor has exited, so no
    /// actor of a finished run is left alive.
    fn maybe_finish(&mut self, now: Time) {
        if matches!(self.phase, RunPhase::Ended(_))
            || self.ended < self.slots.len()
            || self.live_actors > 0
        {
            return;
        }
        let result = self.result(now);
        let seconds = now.since(self.started_at).as_secs_f64();
        self.metric(Metric::RunEnded {
            status: result.status,
            seconds,
        });
        self.phase = RunPhase::Ended(result.status);
        self.out.push(RunEffect::Finish(Arc::new(result)));
    }

    fn metric(&mut self, metric: Metric) {
        if self.plan.metrics {
            self.out.push(RunEffect::Metric(metric));
        }
    }
}

fn resolution(
    edge: &crate::runtime::definition::graph::Edge,
    ix: EdgeIx,
    end: &Arc<NodeEnd>,
) -> ParentEnded {
    ParentEnded {
        edge: ix,
        resolution: resolve(edge, end.terminal(), end.active_ports()),
        end: end.clone(),
    }
}

#[cfg(test)]
mod tests;
