//! Folding a run's journal back through the pure cores.
//!
//! The journal holds the facts the run's supervisor applied, in order, keeping only what
//! the cores cannot recompute. [`fact_of`] turns a [`RunFact`] into its record as it is
//! applied; [`Replayer`] turns the records back into the same facts and applies them to
//! a fresh [`RunCore`] with their recorded times, so the core ends in the state it was in
//! (the same trace events, with the same `seq`). What was left out is recomputed by node
//! cores fed the same spawns and edge resolutions the run core sends: a node's inputs and
//! the failure it handles (from the attempt start its join fired), and a skipped node's
//! end. A record the cores do not explain (a start with no fired join, a skip the join did
//! not decide) is a [`ReplayError`]: the journal and this build disagree.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::components::{ComponentError, FailureInfo, FailureReason};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{EdgeIx, NodeIx};
use crate::runtime::journal::record::{ErrorRecord, Fact, FactKind, HandledRecord, StartRecord};
use crate::runtime::semantics::event::TraceEvent;
use crate::runtime::semantics::inbox::Signal;
use crate::runtime::semantics::node_core::{NodeCore, NodeEffect, NodeFact, NodeStart};
use crate::runtime::semantics::outcome::{CancelCause, NodeStatus, Outcome, Terminal};
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::report::{
    InputAsked, NodeEnd, NodeReport, Placed, RetryReport, RunTimer, StartReport, StopKind,
};
use crate::runtime::semantics::result::RunResult;
use crate::runtime::semantics::run_core::{RunCore, RunEffect, RunFact};
use crate::runtime::semantics::time::Time;

/// A journal the cores cannot follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fact {seq}: {reason}")]
pub struct ReplayError {
    /// The fact's number.
    pub seq: u64,
    /// What does not fit.
    pub reason: String,
}

/// The record of `fact`, applied at `now`; `None` for what is not journaled (an actor's
/// exit: on resume no actor is left, and [`RunFact::Resumed`] accounts for all of them).
pub fn fact_of(fact: &RunFact, now: Time) -> Option<Fact> {
    let kind = match fact {
        RunFact::Started => FactKind::Started,
        RunFact::Node(report) => report_kind(report),
        RunFact::ActorExited { .. } | RunFact::ActorsGone => return None,
        RunFact::NodeDied {
            node,
            generation,
            cause,
        } => FactKind::NodeDied {
            node: node.0,
            generation: *generation,
            cause: cause.clone(),
        },
        RunFact::Placed(p) => FactKind::Placed {
            node: p.node.0,
            attempt: p.attempt,
            worker: p.worker.to_string(),
        },
        RunFact::CancelRequested(kind) => FactKind::StopRequested {
            terminate: *kind == StopKind::Terminate,
        },
        RunFact::TimerFired(RunTimer::Deadline) => FactKind::DeadlineHit,
        RunFact::TimerFired(RunTimer::ForceEnd) => FactKind::GraceOver,
        RunFact::InputResolution {
            request_id,
            resolution,
        } => FactKind::InputResolved {
            request_id: request_id.to_string(),
            resolution: serde_json::to_string(resolution).expect("a resolution is JSON"),
        },
        RunFact::TimerFired(RunTimer::InputDeadline { node, attempt }) => FactKind::InputDeadline {
            node: node.0,
            attempt: *attempt,
        },
        RunFact::Signal(signal) => FactKind::SignalReceived {
            signal_id: signal.signal_id.to_string(),
            name: signal.name.to_string(),
            payload: signal.payload.to_string(),
        },
        RunFact::Resumed => FactKind::Resumed,
    };
    Some(Fact {
        at: now.as_micros(),
        kind,
    })
}

fn start_record(s: &StartReport) -> StartRecord {
    StartRecord {
        node: s.node.0,
        attempt: s.attempt,
        withdraw: s.withdraw,
        first_started: s.first_started.as_micros(),
        triggered_by: s.triggered_by.iter().map(|e| e.0).collect(),
    }
}

fn error_record(e: &ComponentError) -> ErrorRecord {
    ErrorRecord {
        error_type: e.error_type.clone(),
        message: e.message.clone(),
        retryable: e.retryable,
    }
}

fn component_error(e: &ErrorRecord) -> ComponentError {
    ComponentError {
        error_type: e.error_type.clone(),
        message: e.message.clone(),
        retryable: e.retryable,
        lost: false,
    }
}

fn report_kind(report: &NodeReport) -> FactKind {
    match report {
        NodeReport::Queued(s) => FactKind::Queued(start_record(s)),
        NodeReport::Started(s) => FactKind::AttemptStarted(start_record(s)),
        NodeReport::Retrying(r) => FactKind::Retrying {
            node: r.node.0,
            attempt: r.attempt,
            delay_micros: u64::try_from(r.delay.as_micros()).unwrap_or(u64::MAX),
            error: error_record(&r.error),
        },
        NodeReport::AwaitingInput(asked) => FactKind::InputRequested {
            node: asked.node.0,
            attempt: asked.attempt,
            request_id: asked.request_id.to_string(),
            input: serde_json::to_string(&asked.input).expect("a checked marker is JSON"),
            deadline_micros: asked.deadline.map(Time::as_micros),
        },
        NodeReport::Ended(end) => end_kind(end),
    }
}

fn end_kind(end: &NodeEnd) -> FactKind {
    let node = end.node.0;
    let attempts = end.attempts;
    match &end.outcome {
        Outcome::Completed {
            output,
            active_ports,
        } => FactKind::Completed {
            node,
            attempts,
            // A JSON object always serialises.
            output: serde_json::to_string(&**output).expect("an output serialises"),
            active_ports: active_ports.clone(),
        },
        Outcome::Failed { error } => FactKind::Failed {
            node,
            attempts,
            error: error_record(error),
        },
        Outcome::Skipped(_) => FactKind::Skipped { node },
        Outcome::Cancelled(cause) => FactKind::Cancelled {
            node,
            attempts,
            reason: cause.to_string(),
            handled: end.handled.as_deref().map(|f| HandledRecord {
                at: f.at.clone(),
                name: f.reason.name.clone(),
                message: f.reason.message.clone(),
            }),
        },
    }
}

/// The result and trace of a run whose facts end it.
///
/// # Errors
/// When the cores cannot follow the facts, or the facts leave the run unfinished.
pub fn finished_run(
    plan: Arc<RunPlan>,
    facts: &[Fact],
) -> Result<(Arc<RunResult>, Vec<TraceEvent>), ReplayError> {
    let (mut core, result) = Replayer::fold(plan, facts)?.into_parts();
    let result = result.ok_or_else(|| ReplayError {
        seq: facts.len() as u64,
        reason: "the run is marked finished but its facts leave it unfinished".into(),
    })?;
    Ok((result, core.take_events()))
}

/// What a node's join decided, as the replayed node core computed it.
#[derive(Debug, Clone, Default)]
struct Fired {
    /// Its first start report (inputs, handled failure, deciding edges).
    start: Option<StartReport>,
    /// Its end, when it ended before its join fired: skipped by the join, or cancelled
    /// (a stopping run) while it waited.
    early_end: Option<Arc<NodeEnd>>,
    /// Its end, when its inputs did not resolve (attempt 1 fails as it starts).
    bad_inputs: Option<Arc<NodeEnd>>,
    /// Why the run asked it to stop, each time it did, in order: a cancelled end names
    /// one of them.
    cancels: Vec<CancelCause>,
}

/// Folds one run's facts through fresh cores.
#[derive(Debug)]
pub struct Replayer {
    core: RunCore,
    /// Node cores of nodes whose join has not been seen to decide yet.
    joins: Vec<Option<NodeCore>>,
    fired: Vec<Fired>,
    seq: u64,
    /// When the last fact was applied.
    at: Time,
    /// The run's result, once the facts ended it.
    result: Option<Arc<RunResult>>,
}

impl Replayer {
    /// A replay of the run `plan` describes.
    pub fn new(plan: Arc<RunPlan>) -> Replayer {
        let n = plan.graph.len();
        Replayer {
            core: RunCore::new(plan),
            joins: (0..n).map(|_| None).collect(),
            fired: vec![Fired::default(); n],
            seq: 0,
            at: Time::ZERO,
            result: None,
        }
    }

    /// A replay of the run `plan` describes, with `facts` applied.
    ///
    /// # Errors
    /// When the cores cannot explain one of them.
    pub fn fold(plan: Arc<RunPlan>, facts: &[Fact]) -> Result<Replayer, ReplayError> {
        let mut replayer = Replayer::new(plan);
        for fact in facts {
            replayer.apply(fact)?;
        }
        Ok(replayer)
    }

    /// Applies the next fact.
    ///
    /// # Errors
    /// When the cores cannot explain it.
    pub fn apply(&mut self, fact: &Fact) -> Result<(), ReplayError> {
        self.seq += 1;
        let now = Time::from_micros(fact.at);
        self.at = now;
        let run_fact = self.run_fact(&fact.kind)?;
        let effects = self.core.apply(run_fact, now);
        self.route(effects, now);
        Ok(())
    }

    /// The core, in the state the facts left it, and the run's result if they ended it.
    pub fn into_parts(self) -> (RunCore, Option<Arc<RunResult>>) {
        (self.core, self.result)
    }

    /// Applies the ends the cores compute that the journal did not keep, and returns their
    /// records (to be journaled): a node its join skipped or that a stop cancelled while
    /// it waited, and a node whose inputs did not resolve (its attempt 1 fails as it
    /// starts), when the crash came before their end was stored. They follow from the
    /// stored facts, so they are part of the replay, not lost; what they decide in turn
    /// (a skip cascading down) is applied too, in node order, until nothing follows.
    pub fn settle(&mut self) -> Vec<Fact> {
        let mut records = Vec::new();
        loop {
            let ends = self.unstored_ends();
            if ends.is_empty() {
                return records;
            }
            for end in ends {
                let fact = RunFact::Node(NodeReport::Ended(end));
                if let Some(record) = fact_of(&fact, self.at) {
                    records.push(record);
                }
                self.seq += 1;
                let effects = self.core.apply(fact, self.at);
                self.route(effects, self.at);
            }
        }
    }

    fn unstored_ends(&self) -> Vec<Arc<NodeEnd>> {
        let mut ends = Vec::new();
        for (i, fired) in self.fired.iter().enumerate() {
            let node = NodeIx(i as u32);
            if let Some(end) = &fired.early_end
                && !self.core.has_ended(node)
            {
                ends.push(end.clone());
            } else if let Some(end) = &fired.bad_inputs
                && self.core.status_of(node) == NodeStatus::Running
            {
                ends.push(end.clone());
            }
        }
        ends
    }

    /// What the cores cannot follow in the fact being applied.
    fn mismatch(&self, reason: String) -> ReplayError {
        ReplayError {
            seq: self.seq,
            reason,
        }
    }

    fn plan(&self) -> &Arc<RunPlan> {
        self.core.plan()
    }

    fn node(&self, node: u32) -> Result<NodeIx, ReplayError> {
        if (node as usize) < self.plan().graph.len() {
            Ok(NodeIx(node))
        } else {
            Err(self.mismatch(format!("node {node} is not in the definition")))
        }
    }

    fn run_fact(&self, kind: &FactKind) -> Result<RunFact, ReplayError> {
        Ok(match kind {
            FactKind::Started => RunFact::Started,
            FactKind::Queued(s) => RunFact::Node(NodeReport::Queued(self.start(s)?)),
            FactKind::AttemptStarted(s) => RunFact::Node(NodeReport::Started(self.start(s)?)),
            FactKind::Retrying {
                node,
                attempt,
                delay_micros,
                error,
            } => RunFact::Node(NodeReport::Retrying(RetryReport {
                node: self.node(*node)?,
                attempt: *attempt,
                delay: Duration::from_micros(*delay_micros),
                error: component_error(error),
            })),
            FactKind::InputRequested {
                node,
                attempt,
                request_id,
                input,
                deadline_micros,
            } => RunFact::Node(NodeReport::AwaitingInput(Arc::new(InputAsked {
                node: self.node(*node)?,
                attempt: *attempt,
                request_id: request_id.as_str().into(),
                input: serde_json::from_str(input).map_err(|e| {
                    self.mismatch(format!(
                        "the input request of node {node} does not read: {e}"
                    ))
                })?,
                deadline: deadline_micros.map(Time::from_micros),
            }))),
            FactKind::InputResolved {
                request_id,
                resolution,
            } => RunFact::InputResolution {
                request_id: request_id.as_str().into(),
                resolution: serde_json::from_str(resolution).map_err(|e| {
                    self.mismatch(format!("the answer to `{request_id}` does not read: {e}"))
                })?,
            },
            FactKind::SignalReceived {
                signal_id,
                name,
                payload,
            } => RunFact::Signal(Arc::new(Signal {
                signal_id: signal_id.as_str().into(),
                name: name.as_str().into(),
                payload: serde_json::from_str(payload).map_err(|e| {
                    self.mismatch(format!(
                        "the payload of signal `{signal_id}` does not read: {e}"
                    ))
                })?,
            })),
            FactKind::InputDeadline { node, attempt } => {
                RunFact::TimerFired(RunTimer::InputDeadline {
                    node: self.node(*node)?,
                    attempt: *attempt,
                })
            }
            FactKind::Completed { .. }
            | FactKind::Failed { .. }
            | FactKind::Skipped { .. }
            | FactKind::Cancelled { .. } => {
                RunFact::Node(NodeReport::Ended(Arc::new(self.end(kind)?)))
            }
            FactKind::NodeDied {
                node,
                generation,
                cause,
            } => RunFact::NodeDied {
                node: self.node(*node)?,
                generation: *generation,
                cause: cause.clone(),
            },
            FactKind::Placed {
                node,
                attempt,
                worker,
            } => RunFact::Placed(Placed {
                node: self.node(*node)?,
                attempt: *attempt,
                worker: worker.as_str().into(),
            }),
            FactKind::StopRequested { terminate } => RunFact::CancelRequested(if *terminate {
                StopKind::Terminate
            } else {
                StopKind::Cancel
            }),
            FactKind::DeadlineHit => RunFact::TimerFired(RunTimer::Deadline),
            FactKind::GraceOver => RunFact::TimerFired(RunTimer::ForceEnd),
            FactKind::Resumed => RunFact::Resumed,
            // The run ended: the exits of its last actors, never journaled, happened.
            FactKind::Finished(_) => RunFact::ActorsGone,
        })
    }

    /// A start report: what the record kept, and what the node's join computed.
    fn start(&self, s: &StartRecord) -> Result<StartReport, ReplayError> {
        let node = self.node(s.node)?;
        let fired = self.fired[node.ix()].start.as_ref().ok_or_else(|| {
            self.mismatch(format!(
                "{} started attempt {} but its join never fired",
                self.plan().node_ref(node),
                s.attempt
            ))
        })?;
        let triggered_by: Arc<[EdgeIx]> = s.triggered_by.iter().map(|e| EdgeIx(*e)).collect();
        if triggered_by != fired.triggered_by {
            return Err(self.mismatch(format!(
                "{}: the journal says its join was decided by edges {:?}, the join by {:?}",
                self.plan().node_ref(node),
                s.triggered_by,
                fired.triggered_by
            )));
        }
        Ok(StartReport {
            node,
            attempt: s.attempt,
            triggered_by,
            withdraw: s.withdraw,
            failure: fired.failure.clone(),
            inputs: fired.inputs.clone(),
            first_started: Time::from_micros(s.first_started),
        })
    }

    fn handled(&self, node: NodeIx) -> Option<Arc<FailureInfo>> {
        self.fired[node.ix()]
            .start
            .as_ref()
            .and_then(|s| s.failure.clone())
    }

    fn end(&self, kind: &FactKind) -> Result<NodeEnd, ReplayError> {
        let plan = self.plan();
        let end = |node: NodeIx, attempts: u32, outcome: Outcome| NodeEnd {
            node,
            attempts,
            outcome,
            handled: self.handled(node),
        };
        Ok(match kind {
            FactKind::Completed {
                node,
                attempts,
                output,
                active_ports,
            } => {
                let node = self.node(*node)?;
                let output: JsonObject = serde_json::from_str(output).map_err(|e| {
                    self.mismatch(format!(
                        "the output of {} is not a JSON object: {e}",
                        plan.node_ref(node)
                    ))
                })?;
                let outcome = Outcome::Completed {
                    output: Arc::new(output),
                    active_ports: active_ports.clone(),
                };
                end(node, *attempts, outcome)
            }
            FactKind::Failed {
                node,
                attempts,
                error,
            } => {
                let error = component_error(error);
                end(self.node(*node)?, *attempts, Outcome::Failed { error })
            }
            FactKind::Cancelled {
                node,
                attempts,
                reason,
                handled,
            } => {
                let node = self.node(*node)?;
                let cause = self.cancel_cause(node, reason)?;
                NodeEnd {
                    handled: handled.as_ref().map(|h| {
                        Arc::new(FailureInfo {
                            at: h.at.clone(),
                            reason: FailureReason {
                                message: h.message.clone(),
                                name: h.name.clone(),
                            },
                        })
                    }),
                    ..end(node, *attempts, Outcome::Cancelled(cause))
                }
            }
            FactKind::Skipped { node } => {
                let node = self.node(*node)?;
                let skipped = self.fired[node.ix()].early_end.as_ref();
                let skipped = skipped.filter(|e| e.terminal() == Terminal::Skipped);
                let skipped = skipped.ok_or_else(|| {
                    self.mismatch(format!(
                        "{} was skipped but its join did not skip it",
                        plan.node_ref(node)
                    ))
                })?;
                (**skipped).clone()
            }
            _ => unreachable!("only ends are passed"),
        })
    }

    /// Which of the cancellations the run sent `node` its journaled end records (the
    /// journal keeps the cause as the text it displays).
    fn cancel_cause(&self, node: NodeIx, recorded: &str) -> Result<CancelCause, ReplayError> {
        let asked = &self.fired[node.ix()].cancels;
        asked
            .iter()
            .rev()
            .find(|cause| cause.to_string() == recorded)
            .cloned()
            .ok_or_else(|| {
                self.mismatch(format!(
                    "{} ended cancelled for `{recorded}`, but the run asked it to stop for {}",
                    self.plan().node_ref(node),
                    if asked.is_empty() {
                        "no reason".to_owned()
                    } else {
                        asked
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))
            })
    }

    /// Feeds the run core's spawns, edge resolutions and cancellations to node cores until
    /// each node's join decides; the rest of the effects concern actors and are dropped.
    fn route(&mut self, effects: Vec<RunEffect>, now: Time) {
        for effect in effects {
            match effect {
                RunEffect::Spawn { node, start, .. } => match start {
                    NodeStart::Reached(resolved) => {
                        self.fired[node.ix()] = Fired::default();
                        let core = NodeCore::new(self.plan().clone(), node);
                        self.joins[node.ix()] = Some(core);
                        self.feed(node, NodeFact::Spawned(NodeStart::Reached(resolved)), now);
                    }
                    NodeStart::Resumed(resume) => {
                        // A respawned node carries its fired join in the resume.
                        self.joins[node.ix()] = None;
                        self.fired[node.ix()].start = Some(resume.started);
                    }
                },
                RunEffect::Tell { child, resolved } => {
                    self.feed(child, NodeFact::ParentEnded(resolved), now);
                }
                RunEffect::Cancel { node, reason } => {
                    self.fired[node.ix()].cancels.push(reason.cause.clone());
                    self.feed(node, NodeFact::CancelRequested(reason), now);
                }
                RunEffect::Finish(result) => self.result = Some(result),
                _ => {}
            }
        }
    }

    fn feed(&mut self, node: NodeIx, fact: NodeFact, now: Time) {
        let Some(core) = self.joins[node.ix()].as_mut() else {
            return;
        };
        let effects = core.apply(fact, now);
        let mut reports = effects.into_iter().filter_map(|e| match e {
            NodeEffect::Report(report) => Some(report),
            _ => None,
        });
        let fired = &mut self.fired[node.ix()];
        match reports.next() {
            None => return,
            Some(NodeReport::Queued(s) | NodeReport::Started(s)) => {
                fired.start = Some(s);
                if let Some(NodeReport::Ended(end)) = reports.next() {
                    fired.bad_inputs = Some(end);
                }
            }
            Some(NodeReport::Ended(end)) => fired.early_end = Some(end),
            // Only an attempt's end makes a gate, never a join.
            Some(NodeReport::Retrying(_) | NodeReport::AwaitingInput(_)) => {}
        }
        // Decided: later resolutions change nothing for it.
        self.joins[node.ix()] = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-node run whose node started attempt 1, and was then asked to stop.
    fn stopped_run(terminate: bool) -> Replayer {
        let plan = RunPlan::for_tests(
            r#"{"title": "t", "actions": [{"ref": "a", "componentId": "core.echo"}]}"#,
            1,
        );
        let start = StartRecord {
            node: 0,
            attempt: 1,
            withdraw: false,
            first_started: 10,
            triggered_by: Vec::new(),
        };
        let facts = [
            Fact {
                at: 0,
                kind: FactKind::Started,
            },
            Fact {
                at: 10,
                kind: FactKind::AttemptStarted(start),
            },
            Fact {
                at: 20,
                kind: FactKind::StopRequested { terminate },
            },
        ];
        Replayer::fold(plan, &facts).expect("the cores follow the facts")
    }

    fn cancelled(reason: &str) -> Fact {
        Fact {
            at: 30,
            kind: FactKind::Cancelled {
                node: 0,
                attempts: 1,
                reason: reason.into(),
                handled: None,
            },
        }
    }

    #[test]
    fn a_cancelled_end_takes_the_cause_the_run_asked_for() {
        let mut replay = stopped_run(false);
        replay
            .apply(&cancelled("cancelled: run cancelled by request"))
            .expect("the cause the run sent");
        let (core, _) = replay.into_parts();
        let end = core.events().last().expect("the end's event");
        assert_eq!(
            end.kind,
            crate::runtime::semantics::event::EventType::Cancelled
        );
        assert_eq!(
            end.message.as_deref(),
            Some("cancelled: run cancelled by request")
        );
    }

    #[test]
    fn a_cancelled_end_for_a_cause_the_run_never_sent_is_refused() {
        let mut replay = stopped_run(true);
        let error = replay
            .apply(&cancelled("cancelled: run cancelled by request"))
            .expect_err("the run asked it to terminate, not to cancel");
        assert_eq!(error.seq, 4);
        assert!(
            error
                .reason
                .contains("the run asked it to stop for `terminated: run terminated by request`"),
            "{error}"
        );
    }
}
