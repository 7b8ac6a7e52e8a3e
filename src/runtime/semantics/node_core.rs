//! The node core: one node's life as a pure state machine — its join, its inputs, its
//! attempts, retries, timeouts and cancellation — taking facts and returning effects.
//!
//! The node actor feeds it every fact it learns (a parent's end, a slot grant, an
//! attempt's result, a timer, a cancel request) with the current [`Time`], and performs
//! the [`NodeEffect`]s it returns: report to the supervisor, ask for slots, start or
//! cancel an attempt, arm a timer, stop. The core never sees an actor, a task, a clock or
//! entropy (retry jitter comes from the seeded [`Jitter`]), so the same facts always give
//! the same effects: the simulation in `tests/simulation.rs` drives it with no actor at
//! all, and a replay of recorded facts reproduces a run.
//!
//! A node is in exactly one [`Phase`]: pending on its join (holding what it will need
//! from its parents), active in one [`Step`] of its attempts once the join fired (holding
//! its resolved inputs), or ended. Timers, grants and attempt results are fenced by the
//! attempt they belong to; one that arrives for an attempt the node has left is ignored.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::components::{
    CRASH_ERROR, ComponentError, ComponentOutput, ComponentResult, FailureInfo, FailureReason,
    OUTPUT_LIMIT_ERROR, QUEUE_TIMEOUT_ERROR, TIMEOUT_ERROR, VALIDATION_ERROR,
};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{EdgeIx, EdgeKind, Join, Node, NodeIx, NodeMode};
use crate::runtime::definition::limits::json_len_within;
use crate::runtime::ids::input_request_id;
use crate::runtime::semantics::edge::DEFAULT_PORT;
use crate::runtime::semantics::gate;
use crate::runtime::semantics::inputs::{ParentOutput, resolve_inputs};
use crate::runtime::semantics::join::{JoinDecision, JoinState};
use crate::runtime::semantics::outcome::{Outcome, SkipCause, Terminal};
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::report::{
    CancelReason, InputAsked, NodeEnd, NodeReport, NodeTimer, ParentEnded, RetryReport, StartReport,
};
use crate::runtime::semantics::retry::{Jitter, delay_after, should_retry_beyond};
use crate::runtime::semantics::shipsec;
use crate::runtime::semantics::time::Time;

/// How a node's actor begins.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeStart {
    /// The run reached it: the resolutions of the parents that have ended, in the order
    /// they ended (at least one, unless the node has no parents).
    Reached(Vec<ParentEnded>),
    /// Its previous actor died after the join fired: carry on from where it was.
    Resumed(Box<Resume>),
}

/// Where a respawned node carries on, as the run core recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// What happened to the attempt the dead actor held.
    pub attempt: ResumeAt,
    /// What the node's last start report said: its join's deciding edges, the failure it
    /// handles, its inputs, when its first attempt began.
    pub started: StartReport,
}

/// The attempt a dead node actor held.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeAt {
    /// Attempt `attempt` was running or backing off: it failed with this `CrashError`.
    Crashed {
        /// The attempt.
        attempt: u32,
        /// Its error.
        error: ComponentError,
        /// Whether the engine died with it (a restart), rather than its node actor: it
        /// then gets the plan's `retry_lost_attempts` beyond the node's budget.
        lost: bool,
    },
    /// Attempt `attempt` was waiting for slots: it queues again.
    Requeue {
        /// The attempt.
        attempt: u32,
    },
    /// The node was waiting out its backoff before attempt `next`: it waits on until
    /// `due`, the time the backoff was to end (at once if that has passed).
    Backoff {
        /// The attempt to start.
        next: u32,
        /// When.
        due: Time,
    },
    /// Attempt `attempt` had asked for input: the node waits on for the answer to
    /// `request_id` (the run core keeps the request and its deadline).
    AwaitingInput {
        /// The attempt.
        attempt: u32,
        /// The request.
        request_id: Arc<str>,
    },
}

/// A fact about one node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeFact {
    /// Its actor started.
    Spawned(NodeStart),
    /// An incoming edge resolved.
    ParentEnded(ParentEnded),
    /// The slots attempt `attempt` waited for are granted.
    SlotsGranted {
        /// The attempt.
        attempt: u32,
    },
    /// Attempt `attempt` ended with `outcome`.
    AttemptFinished {
        /// The attempt.
        attempt: u32,
        /// Its result.
        outcome: ComponentResult,
    },
    /// A timer the core armed fired.
    TimerFired(NodeTimer),
    /// The run asks the node to stop.
    CancelRequested(CancelReason),
    /// The request the node waits on was answered: the node completes with `output` (the
    /// gate's resolved output, on its ports).
    InputAnswered {
        /// The request.
        request_id: Arc<str>,
        /// What the node completes with.
        output: ComponentOutput,
    },
    /// The request the node waits on expired: its attempt fails with `error` (not
    /// retryable).
    InputExpired {
        /// The request.
        request_id: Arc<str>,
        /// The gate's `TimeoutError`.
        error: ComponentError,
    },
}

/// What the node actor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEffect {
    /// Tell the supervisor.
    Report(NodeReport),
    /// Ask the engine's limiter for the slots attempt `attempt` needs.
    AcquireSlots {
        /// The attempt.
        attempt: u32,
    },
    /// Stop waiting for the slots of attempt `attempt`.
    ReleaseQueue {
        /// The attempt.
        attempt: u32,
    },
    /// Run the component.
    StartAttempt(AttemptSpec),
    /// Fire the token of attempt `attempt`: its grace period begins.
    CancelAttempt {
        /// The attempt.
        attempt: u32,
    },
    /// Deliver `timer` back at `due`.
    ArmTimer {
        /// When.
        due: Time,
        /// Which.
        timer: NodeTimer,
    },
    /// The node ended (its end was reported): abandon any attempt and stop the actor.
    Stop,
}

/// One attempt to run.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptSpec {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Its inputs.
    pub inputs: Arc<JsonObject>,
    /// Refs of the parents whose edges decided the join.
    pub triggered_by: Arc<[Arc<str>]>,
    /// The failure the node handles.
    pub failure: Option<Arc<FailureInfo>>,
    /// How long it may run, when anything bounds it.
    pub limit: Option<AttemptLimit>,
}

/// The time limit of an attempt: its timeout, or what is left of the node's total budget.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptLimit {
    /// How long it may run.
    pub after: Duration,
    /// What it fails with when that passes.
    pub error: ComponentError,
}

/// A node's join fired: what every attempt needs.
#[derive(Debug, Clone)]
struct Fired {
    triggered_by: Arc<[EdgeIx]>,
    /// The refs of `triggered_by`'s sources, as every attempt's context gives them.
    triggered_refs: Arc<[Arc<str>]>,
    failure: Option<Arc<FailureInfo>>,
    inputs: Arc<JsonObject>,
    first_started: Time,
}

/// Where an active node is among its attempts.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Attempt `attempt` waits for its slots.
    Queued { attempt: u32 },
    /// Attempt `attempt` runs; `cancelling` once its grace period began.
    Running {
        attempt: u32,
        cancelling: Option<CancelReason>,
    },
    /// Waiting out the backoff before attempt `next`.
    BackingOff { next: u32 },
    /// Attempt `attempt` asked for input: waiting for the answer to request `request_id`
    /// (or its expiry), holding no slot.
    AwaitingInput { attempt: u32, request_id: Arc<str> },
}

/// Where the node is in its life.
#[derive(Debug)]
enum Phase {
    /// Waiting on its join, keeping the ends of the parents its mappings read and the
    /// failure it will handle.
    Pending {
        join: JoinState,
        parents: Vec<Arc<NodeEnd>>,
        failure: Option<Arc<FailureInfo>>,
    },
    /// The join fired.
    Active { fired: Fired, step: Step },
    /// Reported its end.
    Ended,
}

/// One node's decisions.
#[derive(Debug)]
pub struct NodeCore {
    plan: Arc<RunPlan>,
    ix: NodeIx,
    phase: Phase,
    jitter: Jitter,
    out: Vec<NodeEffect>,
}

impl NodeCore {
    /// The core of node `ix` of the run `plan` describes, waiting for its first fact.
    pub fn new(plan: Arc<RunPlan>, ix: NodeIx) -> NodeCore {
        let node = plan.graph.node(ix);
        let join = JoinState::new(node.join, &node.incoming);
        let jitter = Jitter::new(plan.seed, ix.0);
        NodeCore {
            plan,
            ix,
            phase: Phase::Pending {
                join,
                parents: Vec::new(),
                failure: None,
            },
            jitter,
            out: Vec::new(),
        }
    }

    /// The node's definition.
    pub fn node(&self) -> &Node {
        self.plan.graph.node(self.ix)
    }

    /// The node.
    pub fn ix(&self) -> NodeIx {
        self.ix
    }

    /// Whether its join is still open (a parent's end still matters to it).
    pub fn is_pending(&self) -> bool {
        matches!(self.phase, Phase::Pending { .. })
    }

    /// Whether it has ended.
    #[cfg(test)]
    pub fn has_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// The only way the node changes: applies `fact` at `now` and returns what to do, in
    /// order. No clock, no I/O, no entropy.
    pub fn apply(&mut self, fact: NodeFact, now: Time) -> Vec<NodeEffect> {
        match fact {
            NodeFact::Spawned(start) => self.on_spawned(start, now),
            NodeFact::ParentEnded(parent) => self.on_parent_ended(parent, now),
            NodeFact::SlotsGranted { attempt } => self.on_slots_granted(attempt, now),
            NodeFact::AttemptFinished { attempt, outcome } => {
                self.on_attempt_finished(attempt, outcome, now);
            }
            NodeFact::TimerFired(timer) => self.on_timer(timer, now),
            NodeFact::CancelRequested(reason) => self.on_cancel(reason, now),
            NodeFact::InputAnswered { request_id, output } => {
                self.on_input(&request_id, Ok(output), now);
            }
            NodeFact::InputExpired { request_id, error } => {
                self.on_input(&request_id, Err(error), now);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Gives back an emptied effect vector, so the next [`NodeCore::apply`] reuses it.
    pub fn recycle(&mut self, mut effects: Vec<NodeEffect>) {
        effects.clear();
        if self.out.capacity() == 0 {
            self.out = effects;
        }
    }

    fn on_spawned(&mut self, start: NodeStart, now: Time) {
        match start {
            NodeStart::Reached(resolved) => {
                if self.node().incoming.is_empty() {
                    return self.fire(Vec::new(), now);
                }
                for parent in resolved {
                    self.on_parent_ended(parent, now);
                }
            }
            NodeStart::Resumed(resume) => self.resume(*resume, now),
        }
    }

    fn resume(&mut self, resume: Resume, now: Time) {
        let started = resume.started;
        let fired = Fired {
            triggered_refs: self.refs_of(&started.triggered_by),
            triggered_by: started.triggered_by,
            failure: started.failure,
            inputs: started.inputs,
            first_started: started.first_started,
        };
        match resume.attempt {
            ResumeAt::Crashed {
                attempt,
                error,
                lost,
            } => {
                let step = Step::Running {
                    attempt,
                    cancelling: None,
                };
                self.phase = Phase::Active { fired, step };
                self.after_failure_beyond(attempt, error, self.extra_tries(lost), now);
            }
            ResumeAt::Requeue { attempt } => {
                let step = Step::Queued { attempt };
                self.phase = Phase::Active { fired, step };
                self.begin_attempt(attempt, false, now);
            }
            ResumeAt::Backoff { next, due } => {
                let step = Step::BackingOff { next };
                self.phase = Phase::Active { fired, step };
                self.back_off(next, due, now);
            }
            ResumeAt::AwaitingInput {
                attempt,
                request_id,
            } => {
                let step = Step::AwaitingInput {
                    attempt,
                    request_id,
                };
                self.phase = Phase::Active { fired, step };
            }
        }
    }

    fn on_parent_ended(&mut self, parent: ParentEnded, now: Time) {
        let ParentEnded {
            edge,
            resolution,
            end,
        } = parent;
        let graph = &self.plan.graph;
        let node = graph.node(self.ix);
        let Phase::Pending {
            join,
            parents,
            failure,
        } = &mut self.phase
        else {
            return; // decided already: later edges change nothing (§2)
        };
        if join.is_decided() {
            return;
        }
        remember_parent(graph, node, parents, failure, &end);
        match join.on_edge(edge, resolution) {
            JoinDecision::Run { triggered_by } => self.fire(triggered_by, now),
            JoinDecision::Skip { dead_edge } => self.skip(dead_edge, &end),
            JoinDecision::Wait | JoinDecision::Ignored => {}
        }
    }

    /// The join fired: resolve the inputs once, then attempt 1.
    fn fire(&mut self, triggered_by: Vec<EdgeIx>, now: Time) {
        let Phase::Pending {
            parents, failure, ..
        } = std::mem::replace(&mut self.phase, Phase::Ended)
        else {
            return;
        };
        let (inputs, error) = match self.resolve(&parents) {
            Ok(inputs) => (inputs, None),
            Err(error) => (JsonObject::new(), Some(error)),
        };
        let fired = Fired {
            triggered_refs: self.refs_of(&triggered_by),
            triggered_by: triggered_by.into(),
            failure,
            inputs: Arc::new(inputs),
            first_started: now,
        };
        self.phase = Phase::Active {
            fired,
            step: Step::Queued { attempt: 1 },
        };
        match error {
            None => self.begin_attempt(1, true, now),
            Some(error) => {
                // A failed input resolution counts as attempt 1.
                let report = self.start_report(1, self.withdraws(true));
                self.out
                    .push(NodeEffect::Report(NodeReport::Started(report)));
                self.fail(1, error);
            }
        }
    }

    fn resolve(&self, parents: &[Arc<NodeEnd>]) -> Result<JsonObject, ComponentError> {
        let plan = &self.plan;
        let node = self.node();
        let meta = plan.registry.meta(&node.component_id);
        let extra = (plan.graph.entrypoint == Some(self.ix)).then_some(&*plan.inputs);
        resolve_inputs(
            node,
            meta,
            extra,
            |ix| {
                parents
                    .iter()
                    .find(|p| p.node == ix)
                    .and_then(|p| p.output().map(|o| &**o))
                    .map_or(ParentOutput::Absent, ParentOutput::Completed)
            },
            |ix| &plan.graph.node(ix).node_ref,
        )
    }

    /// Whether attempt 1 right after the join fired withdraws from the other parents.
    fn withdraws(&self, fired_now: bool) -> bool {
        fired_now && self.node().join == Join::First
    }

    fn start_report(&self, attempt: u32, withdraw: bool) -> StartReport {
        let Phase::Active { fired, .. } = &self.phase else {
            unreachable!("only an active node reports a start")
        };
        StartReport {
            node: self.ix,
            attempt,
            triggered_by: fired.triggered_by.clone(),
            withdraw,
            failure: fired.failure.clone(),
            inputs: fired.inputs.clone(),
            first_started: fired.first_started,
        }
    }

    fn set_step(&mut self, next: Step) {
        if let Phase::Active { step, .. } = &mut self.phase {
            *step = next;
        }
    }

    /// Queues attempt `attempt` for its slots, or starts it at once.
    fn begin_attempt(&mut self, attempt: u32, fired_now: bool, now: Time) {
        let withdraw = self.withdraws(fired_now);
        if !self.plan.needs_slots(self.ix) {
            return self.start(attempt, withdraw, now);
        }
        let report = self.start_report(attempt, withdraw);
        self.out
            .push(NodeEffect::Report(NodeReport::Queued(report)));
        self.out.push(NodeEffect::AcquireSlots { attempt });
        if let Some(limit) = self.node().queue_timeout {
            self.out.push(NodeEffect::ArmTimer {
                due: now + limit,
                timer: NodeTimer::QueueTimeout { attempt },
            });
        }
        self.set_step(Step::Queued { attempt });
    }

    fn on_slots_granted(&mut self, attempt: u32, now: Time) {
        if matches!(&self.phase, Phase::Active { step: Step::Queued { attempt: a }, .. } if *a == attempt)
        {
            self.start(attempt, false, now);
        }
    }

    /// Starts attempt `attempt`: its report, then its work (a tool-mode node's is its
    /// registration, which completes at once).
    fn start(&mut self, attempt: u32, withdraw: bool, now: Time) {
        let report = self.start_report(attempt, withdraw);
        self.out
            .push(NodeEffect::Report(NodeReport::Started(report)));
        self.set_step(Step::Running {
            attempt,
            cancelling: None,
        });
        if self.node().mode == NodeMode::Tool {
            return self.on_attempt_finished(attempt, Ok(shipsec::tool_registered()), now);
        }
        let spec = self.attempt_spec(attempt, now);
        self.out.push(NodeEffect::StartAttempt(spec));
    }

    fn attempt_spec(&self, attempt: u32, now: Time) -> AttemptSpec {
        let Phase::Active { fired, .. } = &self.phase else {
            unreachable!("only an active node starts attempts")
        };
        AttemptSpec {
            attempt,
            inputs: fired.inputs.clone(),
            triggered_by: fired.triggered_refs.clone(),
            failure: fired.failure.clone(),
            limit: self.attempt_limit(fired.first_started, now),
        }
    }

    /// The refs of the sources of `edges`.
    fn refs_of(&self, edges: &[EdgeIx]) -> Arc<[Arc<str>]> {
        let graph = &self.plan.graph;
        edges
            .iter()
            .map(|e| graph.node(graph.edge(*e).source).node_ref.clone())
            .collect()
    }

    /// The time limit of the next attempt — its timeout, or what is left of the node's
    /// total budget when that is shorter — and the error its passing means.
    fn attempt_limit(&self, first_started: Time, now: Time) -> Option<AttemptLimit> {
        let node = self.node();
        let remaining = node
            .total_timeout
            .map(|total| total.saturating_sub(now.since(first_started)));
        let (after, budget) = match (node.attempt_timeout, remaining) {
            (Some(a), Some(r)) if r < a => (r, true),
            (Some(a), _) => (a, false),
            (None, Some(r)) => (r, true),
            (None, None) => return None,
        };
        let secs = after.as_secs_f64();
        let error = if budget {
            ComponentError::fatal(
                TIMEOUT_ERROR,
                format!("total budget of the node ran out after {secs:.3}s"),
            )
        } else {
            ComponentError::retryable(
                TIMEOUT_ERROR,
                format!("attempt exceeded its {secs:.3}s limit"),
            )
        };
        Some(AttemptLimit { after, error })
    }

    fn on_attempt_finished(&mut self, attempt: u32, outcome: ComponentResult, now: Time) {
        let Phase::Active {
            step:
                Step::Running {
                    attempt: running,
                    cancelling,
                },
            ..
        } = &self.phase
        else {
            return;
        };
        if *running != attempt {
            return; // a stale attempt: fenced
        }
        if let Some(reason) = cancelling.clone() {
            return self.end(Outcome::Cancelled(reason.cause), None);
        }
        let outcome = outcome.and_then(|out| self.check_output_size(out));
        match outcome.map(|out| (gate::PendingInput::from_output(&out.output), out)) {
            Ok((None, out)) => self.complete(out),
            Ok((Some(Ok(input)), _)) => self.await_input(attempt, input, now),
            Ok((Some(Err(marker)), _)) => {
                let error = ComponentError::fatal(VALIDATION_ERROR, marker.to_string());
                self.after_failure_beyond(attempt, error, 0, now);
            }
            Err(error) => {
                let extra = self.extra_tries(error.lost);
                self.after_failure_beyond(attempt, error, extra, now);
            }
        }
    }

    fn complete(&mut self, out: ComponentOutput) {
        let outcome = Outcome::Completed {
            output: Arc::new(out.output),
            active_ports: out.active_ports,
        };
        self.end(outcome, None);
    }

    /// Attempt `attempt` returned a pending marker: the node becomes a gate and waits for
    /// the answer to its request, whose id the run, the node and the attempt give.
    fn await_input(&mut self, attempt: u32, input: gate::PendingInput, now: Time) {
        let request_id: Arc<str> =
            input_request_id(&self.plan.run_id, &self.node().node_ref, attempt).into();
        self.set_step(Step::AwaitingInput {
            attempt,
            request_id: request_id.clone(),
        });
        let deadline = gate::deadline(&input, now, self.plan.gate_timeout);
        let asked = InputAsked {
            node: self.ix,
            attempt,
            request_id,
            input,
            deadline,
        };
        self.out
            .push(NodeEffect::Report(NodeReport::AwaitingInput(Arc::new(
                asked,
            ))));
    }

    /// The request the node waits on was answered (`Ok`) or expired (`Err`); a fact about
    /// any other request is stale and fenced.
    fn on_input(&mut self, request_id: &str, answer: ComponentResult, now: Time) {
        let Phase::Active {
            step:
                Step::AwaitingInput {
                    attempt,
                    request_id: waiting,
                },
            ..
        } = &self.phase
        else {
            return;
        };
        if &**waiting != request_id {
            return;
        }
        let attempt = *attempt;
        match answer.and_then(|out| self.check_output_size(out)) {
            Ok(out) => self.complete(out),
            Err(error) => self.after_failure_beyond(attempt, error, 0, now),
        }
    }

    /// Refuses an output larger than the engine allows (`OutputLimitError`, not retried).
    fn check_output_size(&self, out: ComponentOutput) -> ComponentResult {
        let limit = self.plan.max_output_bytes;
        if json_len_within(&out.output, limit).is_none() {
            return Err(ComponentError::fatal(
                OUTPUT_LIMIT_ERROR,
                format!(
                    "output of {} exceeds the limit of {limit} bytes of JSON",
                    self.node().node_ref
                ),
            ));
        }
        Ok(out)
    }

    /// The tries beyond the node's budget for an attempt that ended so: the plan's
    /// `retry_lost_attempts` when an engine or worker death took it, else none.
    fn extra_tries(&self, lost: bool) -> u32 {
        if lost {
            self.plan.retry_lost_attempts
        } else {
            0
        }
    }

    /// After attempt `attempt` failed with `error`: a retry (the policy's budget plus
    /// `extra` tries for an attempt an engine or worker death took) or the node's end.
    fn after_failure_beyond(&mut self, attempt: u32, error: ComponentError, extra: u32, now: Time) {
        let Phase::Active { fired, .. } = &self.phase else {
            return;
        };
        let first_started = fired.first_started;
        let policy = &self.plan.graph.node(self.ix).retry;
        if !should_retry_beyond(policy, attempt, &error, extra) {
            return self.fail(attempt, error);
        }
        // An extra try (beyond the policy's budget) repeats work an engine death took, not
        // a failure of the component: it starts at once.
        let delay = if attempt >= policy.max_attempts {
            Duration::ZERO
        } else {
            delay_after(policy, attempt, &error, self.jitter.after(attempt))
        };
        if let Some(total) = self.node().total_timeout
            && now.since(first_started) + delay >= total
        {
            let error = ComponentError::fatal(
                TIMEOUT_ERROR,
                format!(
                    "total budget of {:.3}s ran out before attempt {} (last error: {error})",
                    total.as_secs_f64(),
                    attempt + 1
                ),
            );
            return self.fail(attempt, error);
        }
        let retry = RetryReport {
            node: self.ix,
            attempt,
            delay,
            error,
        };
        self.out
            .push(NodeEffect::Report(NodeReport::Retrying(retry)));
        self.back_off(attempt + 1, now + delay, now);
    }

    /// Waits until `due` before attempt `next` (starts it now if `due` has come).
    fn back_off(&mut self, next: u32, due: Time, now: Time) {
        self.set_step(Step::BackingOff { next });
        if due <= now {
            self.begin_attempt(next, false, now);
        } else {
            self.out.push(NodeEffect::ArmTimer {
                due,
                timer: NodeTimer::RetryDue { attempt: next },
            });
        }
    }

    fn on_timer(&mut self, timer: NodeTimer, now: Time) {
        let Phase::Active { step, .. } = &self.phase else {
            return;
        };
        match (timer, step) {
            (NodeTimer::RetryDue { attempt }, Step::BackingOff { next }) if *next == attempt => {
                self.begin_attempt(attempt, false, now);
            }
            (NodeTimer::QueueTimeout { attempt }, Step::Queued { attempt: a }) if *a == attempt => {
                self.out.push(NodeEffect::ReleaseQueue { attempt });
                let limit = self.node().queue_timeout.unwrap_or_default();
                let error = ComponentError::fatal(
                    QUEUE_TIMEOUT_ERROR,
                    format!("waited more than {:.3}s for a slot", limit.as_secs_f64()),
                );
                self.fail(attempt - 1, error);
            }
            (
                NodeTimer::GraceOver { attempt },
                Step::Running {
                    attempt: a,
                    cancelling: Some(reason),
                },
            ) if *a == attempt => {
                let cause = reason.cause.clone();
                self.end(Outcome::Cancelled(cause), None);
            }
            _ => {} // a timer of an attempt the node has left: fenced
        }
    }

    fn on_cancel(&mut self, reason: CancelReason, now: Time) {
        let step = match &mut self.phase {
            Phase::Ended => return,
            Phase::Pending { .. } => None,
            Phase::Active { step, .. } => Some(step),
        };
        match step {
            None | Some(Step::BackingOff { .. } | Step::AwaitingInput { .. }) => {}
            Some(Step::Queued { attempt }) => {
                let attempt = *attempt;
                self.out.push(NodeEffect::ReleaseQueue { attempt });
            }
            Some(Step::Running {
                attempt,
                cancelling,
            }) => {
                if cancelling.is_some() && !reason.grace.is_zero() {
                    return; // already in its grace period
                }
                let attempt = *attempt;
                self.out.push(NodeEffect::CancelAttempt { attempt });
                if !reason.grace.is_zero() {
                    let due = now + reason.grace;
                    *cancelling = Some(reason);
                    self.out.push(NodeEffect::ArmTimer {
                        due,
                        timer: NodeTimer::GraceOver { attempt },
                    });
                    return;
                }
            }
        }
        self.end(Outcome::Cancelled(reason.cause), None);
    }

    fn skip(&mut self, dead_edge: EdgeIx, end: &NodeEnd) {
        let graph = &self.plan.graph;
        let edge = graph.edge(dead_edge);
        let source = &graph.node(edge.source).node_ref;
        let source_ended = end.terminal();
        let port = (source_ended == Terminal::Completed && edge.kind == EdgeKind::Success)
            .then(|| Arc::from(edge.source_handle.as_deref().unwrap_or(DEFAULT_PORT)));
        let origin = match source_ended {
            Terminal::Failed | Terminal::Completed => source.clone(),
            Terminal::Skipped | Terminal::Cancelled => end.origin().unwrap_or(source).clone(),
        };
        let cause = SkipCause {
            edge: dead_edge,
            source: source.clone(),
            target: graph.node(edge.target).node_ref.clone(),
            source_ended,
            port,
            origin,
        };
        self.end(Outcome::Skipped(cause), None);
    }

    fn fail(&mut self, attempts: u32, error: ComponentError) {
        self.end(Outcome::Failed { error }, Some(attempts));
    }

    /// Ends the node: reports its end (after `attempts`, when not the attempts it made),
    /// then stops.
    fn end(&mut self, outcome: Outcome, attempts: Option<u32>) {
        let (made, handled) = match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::Ended => return,
            Phase::Pending { failure, .. } => (0, failure),
            Phase::Active { fired, step } => {
                let attempts = match step {
                    Step::Running { attempt, .. } | Step::AwaitingInput { attempt, .. } => attempt,
                    Step::BackingOff { next } => next - 1,
                    Step::Queued { attempt } => attempt - 1,
                };
                (attempts, fired.failure)
            }
        };
        let end = NodeEnd {
            node: self.ix,
            attempts: attempts.unwrap_or(made),
            outcome,
            handled,
        };
        self.out
            .push(NodeEffect::Report(NodeReport::Ended(Arc::new(end))));
        self.out.push(NodeEffect::Stop);
    }
}

/// Keeps what a pending node will need from a parent's end: its output when a mapping
/// reads it, and its failure when the parent has an `error` edge to this node and is the
/// first such parent to fail. O(mappings) per edge, so wide fan-ins stay linear.
fn remember_parent(
    graph: &crate::runtime::definition::graph::Graph,
    node: &Node,
    parents: &mut Vec<Arc<NodeEnd>>,
    failure: &mut Option<Arc<FailureInfo>>,
    end: &Arc<NodeEnd>,
) {
    if failure.is_none()
        && let Some(error) = end.error()
        && node.incoming.iter().any(|e| {
            let edge = graph.edge(*e);
            edge.source == end.node && edge.kind == EdgeKind::Error
        })
    {
        *failure = Some(Arc::new(FailureInfo {
            at: graph.node(end.node).node_ref.to_string(),
            reason: FailureReason {
                message: error.message.clone(),
                name: error.error_type.clone(),
            },
        }));
    }
    let mapped = node.input_mappings.iter().any(|m| m.source == end.node);
    if mapped && !parents.iter().any(|p| p.node == end.node) {
        parents.push(end.clone());
    }
}

/// The `CrashError` of an attempt whose actor or task died.
pub fn crash(cause: impl Into<String>) -> ComponentError {
    ComponentError::retryable(CRASH_ERROR, cause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::semantics::outcome::{CancelCause, StopCause};
    use crate::runtime::semantics::report::StopKind;

    /// The plan of a one-node run of `action` (JSON), no slots.
    fn plan(action: &str) -> Arc<RunPlan> {
        seeded(action, 7)
    }

    fn seeded(action: &str, seed: u64) -> Arc<RunPlan> {
        let text = format!(r#"{{"title": "t", "actions": [{action}], "edges": []}}"#);
        RunPlan::for_tests(&text, seed)
    }

    fn failed(attempt: u32) -> NodeFact {
        NodeFact::AttemptFinished {
            attempt,
            outcome: Err(ComponentError::retryable("Flaky", "try again")),
        }
    }

    fn started(effects: &[NodeEffect]) -> Option<u32> {
        effects.iter().find_map(|e| match e {
            NodeEffect::StartAttempt(spec) => Some(spec.attempt),
            _ => None,
        })
    }

    const FLAKY: &str = r#"{"ref": "a", "componentId": "core.echo",
        "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 2}}"#;

    #[test]
    fn a_root_starts_attempt_one_at_once() {
        let mut core = NodeCore::new(plan(FLAKY), NodeIx(0));
        let effects = core.apply(
            NodeFact::Spawned(NodeStart::Reached(Vec::new())),
            Time::ZERO,
        );
        assert_eq!(started(&effects), Some(1), "{effects:#?}");
        assert!(matches!(
            effects[0],
            NodeEffect::Report(NodeReport::Started(_))
        ));
    }

    #[test]
    fn a_failed_attempt_backs_off_and_only_its_own_timer_starts_the_next() {
        let mut core = NodeCore::new(plan(FLAKY), NodeIx(0));
        core.apply(
            NodeFact::Spawned(NodeStart::Reached(Vec::new())),
            Time::ZERO,
        );
        let t1 = Time::from_micros(1_000);
        let effects = core.apply(failed(1), t1);
        let due = effects.iter().find_map(|e| match e {
            NodeEffect::ArmTimer {
                due,
                timer: NodeTimer::RetryDue { attempt: 2 },
            } => Some(*due),
            _ => None,
        });
        // 2 s with jitter in [1 − j, 1]: never later than 2 s, never now.
        let due = due.expect("a retry timer");
        assert!(due > t1 && due <= t1 + Duration::from_secs(2), "{due:?}");
        assert!(matches!(
            effects[0],
            NodeEffect::Report(NodeReport::Retrying(_))
        ));
        // A stale timer (an attempt the node is not waiting for) changes nothing.
        let stale = core.apply(
            NodeFact::TimerFired(NodeTimer::RetryDue { attempt: 3 }),
            due,
        );
        assert!(stale.is_empty(), "{stale:#?}");
        // A stale result too.
        assert!(core.apply(failed(1), due).is_empty());
        let next = core.apply(
            NodeFact::TimerFired(NodeTimer::RetryDue { attempt: 2 }),
            due,
        );
        assert_eq!(started(&next), Some(2), "{next:#?}");
    }

    #[test]
    fn the_last_attempt_failing_ends_the_node_failed_and_stops_it() {
        let mut core = NodeCore::new(plan(FLAKY), NodeIx(0));
        core.apply(
            NodeFact::Spawned(NodeStart::Reached(Vec::new())),
            Time::ZERO,
        );
        let mut now = Time::ZERO;
        for attempt in 1..=2 {
            now = now + Duration::from_secs(3);
            core.apply(failed(attempt), now);
            now = now + Duration::from_secs(3);
            let timer = NodeTimer::RetryDue {
                attempt: attempt + 1,
            };
            core.apply(NodeFact::TimerFired(timer), now);
        }
        let effects = core.apply(failed(3), now + Duration::from_secs(1));
        let end = effects.iter().find_map(|e| match e {
            NodeEffect::Report(NodeReport::Ended(end)) => Some(end.clone()),
            _ => None,
        });
        let end = end.expect("an end");
        assert_eq!((end.terminal(), end.attempts), (Terminal::Failed, 3));
        assert_eq!(effects.last(), Some(&NodeEffect::Stop));
        assert!(core.has_ended());
    }

    /// A node respawned after its attempt `attempt` was lost (`lost`: to an engine restart).
    fn resumed_after_loss(plan: Arc<RunPlan>, attempt: u32, lost: bool) -> Vec<NodeEffect> {
        let mut core = NodeCore::new(plan, NodeIx(0));
        let started = StartReport {
            node: NodeIx(0),
            attempt,
            triggered_by: Arc::from(Vec::new()),
            withdraw: false,
            failure: None,
            inputs: Arc::new(JsonObject::new()),
            first_started: Time::ZERO,
        };
        let resume = Resume {
            attempt: ResumeAt::Crashed {
                attempt,
                error: crash("the engine restarted"),
                lost,
            },
            started,
        };
        core.apply(
            NodeFact::Spawned(NodeStart::Resumed(Box::new(resume))),
            Time::from_micros(10),
        )
    }

    fn ended(effects: &[NodeEffect]) -> Option<(Terminal, u32)> {
        effects.iter().find_map(|e| match e {
            NodeEffect::Report(NodeReport::Ended(end)) => Some((end.terminal(), end.attempts)),
            _ => None,
        })
    }

    fn retried(effects: &[NodeEffect]) -> bool {
        effects
            .iter()
            .any(|e| matches!(e, NodeEffect::Report(NodeReport::Retrying(_))))
    }

    #[test]
    fn an_attempt_lost_to_a_restart_gets_retry_lost_attempts_beyond_the_budget() {
        const ONCE: &str = r#"{"ref": "a", "componentId": "core.echo"}"#;
        // No retry policy (one attempt), the default of one extra try: retried once.
        assert!(retried(&resumed_after_loss(plan(ONCE), 1, true)));
        // The extra try lost too: the budget (1 + 1) is spent.
        let effects = resumed_after_loss(plan(ONCE), 2, true);
        assert_eq!(ended(&effects), Some((Terminal::Failed, 2)), "{effects:#?}");
        // A node actor's death is no restart: the node's own budget alone.
        let effects = resumed_after_loss(plan(ONCE), 1, false);
        assert_eq!(ended(&effects), Some((Terminal::Failed, 1)), "{effects:#?}");
        // retryLostAttempts 0 keeps the old rule.
        let mut strict = (*plan(ONCE)).clone();
        strict.retry_lost_attempts = 0;
        let effects = resumed_after_loss(Arc::new(strict), 1, true);
        assert_eq!(ended(&effects), Some((Terminal::Failed, 1)), "{effects:#?}");
        // With a policy of 3, a loss at attempt 3 still gets its extra try.
        assert!(retried(&resumed_after_loss(plan(FLAKY), 3, true)));
        // An attempt lost with its worker gets the same extra try; a crash a component
        // reports itself does not.
        for (error, retries) in [
            (ComponentError::lost_with_worker("lost worker `w1`"), true),
            (crash("a panic"), false),
        ] {
            let mut core = NodeCore::new(plan(ONCE), NodeIx(0));
            core.apply(
                NodeFact::Spawned(NodeStart::Reached(Vec::new())),
                Time::ZERO,
            );
            let outcome = Err(error);
            let effects = core.apply(
                NodeFact::AttemptFinished {
                    attempt: 1,
                    outcome,
                },
                Time::from_micros(5),
            );
            assert_eq!(retried(&effects), retries, "{effects:#?}");
        }
    }

    #[test]
    fn the_same_facts_give_the_same_effects() {
        let run = |seed: u64| {
            let mut core = NodeCore::new(seeded(FLAKY, seed), NodeIx(0));
            core.apply(
                NodeFact::Spawned(NodeStart::Reached(Vec::new())),
                Time::ZERO,
            );
            core.apply(failed(1), Time::from_micros(5))
        };
        assert_eq!(run(1), run(1));
    }

    #[test]
    fn a_cancel_while_backing_off_ends_the_node_cancelled_at_once() {
        let mut core = NodeCore::new(plan(FLAKY), NodeIx(0));
        core.apply(
            NodeFact::Spawned(NodeStart::Reached(Vec::new())),
            Time::ZERO,
        );
        core.apply(failed(1), Time::from_micros(10));
        let reason = CancelReason {
            cause: CancelCause::RunStopping(StopCause::Requested(StopKind::Cancel)),
            grace: Duration::from_secs(1),
        };
        let effects = core.apply(NodeFact::CancelRequested(reason), Time::from_micros(20));
        let end = effects.iter().find_map(|e| match e {
            NodeEffect::Report(NodeReport::Ended(end)) => Some(end.terminal()),
            _ => None,
        });
        assert_eq!(end, Some(Terminal::Cancelled), "{effects:#?}");
        assert!(started(&effects).is_none());
    }
}

#[cfg(test)]
mod gate_tests {
    use serde_json::json;

    use super::*;
    use crate::runtime::definition::object;
    use crate::runtime::semantics::outcome::{CancelCause, StopCause};
    use crate::runtime::semantics::report::StopKind;

    const GATE: &str = r#"{"ref": "g", "componentId": "core.echo",
        "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 1}}"#;

    fn at(secs: u64) -> Time {
        Time::from_micros(secs * 1_000_000)
    }

    fn marker(extra: serde_json::Value) -> ComponentOutput {
        let mut marker =
            object(json!({"pending": true, "inputType": "approval", "title": "Ship?"}));
        marker.extend(object(extra));
        ComponentOutput::new(marker)
    }

    /// A gate whose attempt 1 returned `output`: the core and the effects of that.
    fn gate_after(output: ComponentOutput) -> (NodeCore, Vec<NodeEffect>) {
        let text = format!(r#"{{"title": "t", "actions": [{GATE}], "edges": []}}"#);
        let mut core = NodeCore::new(RunPlan::for_tests(&text, 1), NodeIx(0));
        core.apply(NodeFact::Spawned(NodeStart::Reached(Vec::new())), at(0));
        let effects = core.apply(
            NodeFact::AttemptFinished {
                attempt: 1,
                outcome: Ok(output),
            },
            at(10),
        );
        (core, effects)
    }

    fn asked(effects: &[NodeEffect]) -> Arc<InputAsked> {
        match effects {
            [NodeEffect::Report(NodeReport::AwaitingInput(asked))] => asked.clone(),
            other => panic!("expected only an AwaitingInput report, got {other:#?}"),
        }
    }

    fn ended(effects: &[NodeEffect]) -> Arc<NodeEnd> {
        effects
            .iter()
            .find_map(|e| match e {
                NodeEffect::Report(NodeReport::Ended(end)) => Some(end.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("expected an end, got {effects:#?}"))
    }

    #[test]
    fn a_pending_marker_makes_the_node_a_gate_with_a_request_of_its_attempt() {
        let (_, effects) = gate_after(marker(json!({"timeout": "2m"})));
        let asked = asked(&effects);
        assert_eq!(asked.attempt, 1);
        assert_eq!(&*asked.request_id, input_request_id("r", "g", 1));
        assert_eq!(asked.input.title, "Ship?");
        assert_eq!(asked.deadline, Some(at(130)), "2m from when it asked");
        let (_, plain) = gate_after(marker(json!({})));
        assert_eq!(
            asked_deadline(&plain),
            Some(at(10) + Duration::from_secs(7 * 86_400)),
            "no timeout of its own: the engine's default"
        );
    }

    fn asked_deadline(effects: &[NodeEffect]) -> Option<Time> {
        asked(effects).deadline
    }

    #[test]
    fn the_answer_to_its_request_completes_the_gate_and_another_is_fenced() {
        let (mut core, effects) = gate_after(marker(json!({})));
        let request_id = asked(&effects).request_id.clone();
        let answer = |id: &str| NodeFact::InputAnswered {
            request_id: id.into(),
            output: ComponentOutput::new(
                json!({"approved": true})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        };
        assert!(core.apply(answer("another"), at(20)).is_empty());
        let end = ended(&core.apply(answer(&request_id), at(20)));
        assert_eq!(end.terminal(), Terminal::Completed);
        assert_eq!(end.attempts, 1);
        assert!(core.apply(answer(&request_id), at(21)).is_empty(), "once");
    }

    #[test]
    fn an_expired_request_fails_the_gate_without_a_retry() {
        let (mut core, effects) = gate_after(marker(json!({})));
        let request_id = asked(&effects).request_id.clone();
        let effects = core.apply(
            NodeFact::InputExpired {
                request_id,
                error: ComponentError::fatal(
                    TIMEOUT_ERROR,
                    "Human input request timed out for node g",
                ),
            },
            at(30),
        );
        let end = ended(&effects);
        assert_eq!(end.terminal(), Terminal::Failed);
        assert_eq!(end.attempts, 1, "a TimeoutError is not retried");
    }

    #[test]
    fn a_bad_marker_fails_the_attempt_with_the_field_named() {
        let (_, effects) = gate_after(marker(json!({"inputType": "vote"})));
        let end = ended(&effects);
        let Outcome::Failed { error } = &end.outcome else {
            panic!("expected a failure, got {end:#?}");
        };
        assert_eq!(error.error_type, VALIDATION_ERROR);
        assert!(error.message.contains("`inputType`"), "{}", error.message);
    }

    #[test]
    fn a_waiting_gate_is_cancelled_at_once() {
        let (mut core, _) = gate_after(marker(json!({})));
        let reason = CancelReason {
            cause: CancelCause::RunStopping(StopCause::Requested(StopKind::Cancel)),
            grace: Duration::from_secs(5),
        };
        let effects = core.apply(NodeFact::CancelRequested(reason), at(40));
        assert_eq!(ended(&effects).terminal(), Terminal::Cancelled);
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, NodeEffect::CancelAttempt { .. })),
            "no attempt runs: nothing to cancel or wait for"
        );
    }

    #[test]
    fn a_resumed_gate_waits_on_without_asking_again() {
        let text = format!(r#"{{"title": "t", "actions": [{GATE}], "edges": []}}"#);
        let plan = RunPlan::for_tests(&text, 1);
        let mut core = NodeCore::new(plan, NodeIx(0));
        let started = StartReport {
            node: NodeIx(0),
            attempt: 1,
            triggered_by: Arc::from(Vec::new()),
            withdraw: false,
            failure: None,
            inputs: Arc::new(JsonObject::new()),
            first_started: at(0),
        };
        let request_id: Arc<str> = input_request_id("r", "g", 1).into();
        let resume = Resume {
            attempt: ResumeAt::AwaitingInput {
                attempt: 1,
                request_id: request_id.clone(),
            },
            started,
        };
        let effects = core.apply(
            NodeFact::Spawned(NodeStart::Resumed(Box::new(resume))),
            at(50),
        );
        assert!(effects.is_empty(), "{effects:#?}");
        let effects = core.apply(
            NodeFact::InputAnswered {
                request_id,
                output: ComponentOutput::default(),
            },
            at(60),
        );
        assert_eq!(ended(&effects).terminal(), Terminal::Completed);
    }
}
