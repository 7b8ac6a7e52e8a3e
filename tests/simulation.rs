//! The simulation: the pure cores alone — one [`RunCore`], a [`NodeCore`] per spawned node,
//! the engine's [`SlotBook`] as the limiter, with the needs the engine gives each node — with no actor, no tokio and no clock, under
//! a seeded scheduler, over the random workflows of `tests/random/mod.rs`, checked against
//! the sequential reference evaluator exactly as the actor runs of `tests/property.rs` are.
//!
//! ## The model
//! Every actor of a run is a mailbox: the supervisor's (its nodes' reports, its own
//! re-checks and timers) with a second one for supervision events that it drains first,
//! as ractor does; one per live node actor (its start, its parents' ends, cancellations,
//! slot grants, its attempts' ends, its timers); the limiter's. Each mailbox is FIFO, as
//! ractor's are. At every step the scheduler picks, from a seeded source, one non-empty
//! mailbox and delivers its next message — or, now and then (and always when every
//! mailbox is empty), moves virtual time to the next due timer or attempt end. So every
//! interleaving the actors allow can happen, reports and exits in either order, a
//! parent's end racing a withdrawal, a grant racing a cancel.
//!
//! Components run for real (the built-ins of the registry), at their first poll: a
//! component's `ms` wait is taken out of its context and becomes virtual time, so an
//! attempt ends `ms` later unless it is cancelled first (then it ends at once with the
//! cancellation error) or outlives its limit (then with the error the core gave for it).
//!
//! Besides the reference checks, every case must end — a run with no message and no timer
//! left and no result is a hang — and after its result every node actor has stopped and
//! every slot was given back. 10,000 cases of each property per run unless
//! `PROPTEST_CASES` says otherwise.

#[allow(dead_code)] // not every binary uses every generator
mod random;
mod reference;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use shipsec_orchestrator::EngineConfig;
use shipsec_orchestrator::runtime::components::builtin::CANCELLED_ERROR;
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::components::{
    ComponentError, ComponentResult, ExecutionContext, Placement,
};
use shipsec_orchestrator::runtime::definition::graph::NodeIx;
use shipsec_orchestrator::runtime::definition::validate::validate;
use shipsec_orchestrator::runtime::definition::{JsonObject, WorkflowDefinition};
use shipsec_orchestrator::runtime::guardrails::needs::node_needs;
use shipsec_orchestrator::runtime::guardrails::slots::{Needs, SlotBook};
use shipsec_orchestrator::runtime::semantics::node_core::{
    AttemptSpec, NodeCore, NodeEffect, NodeFact,
};
use shipsec_orchestrator::runtime::semantics::plan::RunPlan;
use shipsec_orchestrator::runtime::semantics::report::RunTimer;
use shipsec_orchestrator::runtime::semantics::result::RunResult;
use shipsec_orchestrator::runtime::semantics::run_core::{RunCore, RunEffect, RunFact};
use shipsec_orchestrator::runtime::semantics::time::Time;
use tokio_util::sync::CancellationToken;

use random::{Case, Finished, Mode, check_against_reference, check_fail_fast, gated_case_gen};
use shipsec_orchestrator::gates::RequestStatus;

/// More steps than any generated run needs by orders of magnitude: past it, the run is
/// livelocked.
const MAX_STEPS: usize = 1_000_000;

/// One step in this many moves time on while messages wait (a slow mailbox)...
const TIME_SKEW: u64 = 8;

/// ... to a timer due at most this far ahead: mailboxes are served within it. Past it
/// (a stop's grace), time moves only when every mailbox is empty, as a stall that long
/// would rightly abandon the nodes that did not answer.
const MAX_SKEW: Duration = Duration::from_millis(50);

/// splitmix64: the scheduler's seeded source.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What a node actor's mailbox holds.
#[derive(Debug)]
enum NodeIn {
    Fact(NodeFact),
    Grant {
        ticket: u64,
    },
    Finished {
        attempt: u32,
        result: ComponentResult,
    },
}

/// What the limiter's mailbox holds.
#[derive(Debug)]
enum LimiterIn {
    Acquire {
        ticket: u64,
        node: NodeIx,
        generation: u32,
    },
    Cancel {
        ticket: u64,
    },
    Release {
        ticket: u64,
    },
}

/// Something due at a virtual time.
#[derive(Debug)]
enum Due {
    Run(RunTimer),
    /// A person's answer to a gate, coming to the supervisor's mailbox.
    Answer(RunFact),
    Node {
        node: NodeIx,
        generation: u32,
        msg: NodeIn,
    },
}

/// An attempt in flight.
#[derive(Debug)]
struct Attempt {
    attempt: u32,
    /// The ticket of the slots it holds.
    slot: Option<u64>,
    /// Its end, in the timer queue.
    end: (Time, u64),
}

/// A live node actor.
struct NodeActor {
    generation: u32,
    core: NodeCore,
    mail: VecDeque<NodeIn>,
    waiting: Option<(u64, u32)>,
    grant: Option<u64>,
    attempt: Option<Attempt>,
}

/// The limiter: the engine's slot book behind a mailbox.
struct Limiter {
    book: SlotBook,
    base: Instant,
    mail: VecDeque<LimiterIn>,
    /// Every ticket asked for: its owner and needs, until released or cancelled.
    tickets: HashMap<u64, (NodeIx, u32, Needs)>,
    next_ticket: u64,
    /// What each node needs, by `NodeIx` (`None`: starts at once).
    needs: Vec<Option<Needs>>,
}

/// One simulated run.
struct Sim {
    plan: Arc<RunPlan>,
    core: RunCore,
    now: Time,
    rng: Seeded,
    supervisor: VecDeque<RunFact>,
    exits: VecDeque<RunFact>,
    nodes: Vec<Option<NodeActor>>,
    limiter: Limiter,
    timers: BTreeMap<(Time, u64), Due>,
    timer_seq: u64,
    result: Option<Arc<RunResult>>,
}

/// Which mailbox a step serves.
#[derive(Debug, Clone, Copy)]
enum Turn {
    Supervisor,
    Node(usize),
    Limiter,
    Clock,
}

impl Sim {
    fn new(plan: Arc<RunPlan>, needs: Vec<Option<Needs>>, seed: u64) -> Sim {
        let n = plan.graph.len();
        Sim {
            core: RunCore::new(plan.clone()),
            plan,
            now: Time::from_micros(1_000_000),
            rng: Seeded(seed),
            supervisor: VecDeque::new(),
            exits: VecDeque::new(),
            nodes: (0..n).map(|_| None).collect(),
            limiter: Limiter {
                book: SlotBook::new(None),
                base: Instant::now(),
                mail: VecDeque::new(),
                tickets: HashMap::new(),
                next_ticket: 1,
                needs,
            },
            timers: BTreeMap::new(),
            timer_seq: 0,
            result: None,
        }
    }

    /// Runs until nothing is left to deliver; `Err` on a hang or a livelock.
    fn run(&mut self) -> Result<(), String> {
        self.feed_run(RunFact::Started);
        for _ in 0..MAX_STEPS {
            match self.pick() {
                Some(turn) => self.step(turn),
                None if self.result.is_some() => return self.check_quiet(),
                None => return Err(self.hang("no message and no timer left, and no result")),
            }
            self.now = self.now + Duration::from_micros(1);
        }
        Err(self.hang("still running after the step limit"))
    }

    fn hang(&self, what: &str) -> String {
        let states: Vec<String> = self
            .plan
            .graph
            .node_indices()
            .map(|ix| format!("{}={:?}", self.plan.node_ref(ix), self.core.status_of(ix)))
            .collect();
        format!(
            "the run hung: {what}; phase {:?}; nodes {states:?}",
            self.core.phase()
        )
    }

    /// After the result: no node actor left, every slot back.
    fn check_quiet(&self) -> Result<(), String> {
        let live: Vec<&str> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .map(|i| &**self.plan.node_ref(NodeIx(i as u32)))
            .collect();
        if !live.is_empty() {
            return Err(format!(
                "node actors still live after the run ended: {live:?}"
            ));
        }
        let book = &self.limiter.book;
        if book.active() != 0 || book.queued() != 0 || !self.limiter.tickets.is_empty() {
            return Err(format!(
                "slots not given back: {} active, {} queued, tickets {:?}",
                book.active(),
                book.queued(),
                self.limiter.tickets.keys().collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    /// The next turn, from the seeded source; `None` when nothing is left.
    fn pick(&mut self) -> Option<Turn> {
        let mut ready = Vec::new();
        if !self.supervisor.is_empty() || !self.exits.is_empty() {
            ready.push(Turn::Supervisor);
        }
        if !self.limiter.mail.is_empty() {
            ready.push(Turn::Limiter);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.as_ref().is_some_and(|n| !n.mail.is_empty()) {
                ready.push(Turn::Node(i));
            }
        }
        let next_due = self.timers.first_key_value().map(|(&(due, _), _)| due);
        if ready.is_empty() {
            return next_due.map(|_| Turn::Clock);
        }
        if next_due.is_some_and(|due| due <= self.now + MAX_SKEW)
            && self.rng.next().is_multiple_of(TIME_SKEW)
        {
            return Some(Turn::Clock);
        }
        Some(ready[self.rng.below(ready.len())])
    }

    fn step(&mut self, turn: Turn) {
        match turn {
            // Supervision events first, as ractor's actor loop takes them.
            Turn::Supervisor => {
                let fact = self
                    .exits
                    .pop_front()
                    .or_else(|| self.supervisor.pop_front());
                if let Some(fact) = fact {
                    self.feed_run(fact);
                }
            }
            Turn::Node(i) => {
                let msg = self.nodes[i].as_mut().and_then(|n| n.mail.pop_front());
                if let Some(msg) = msg {
                    self.node_message(NodeIx(i as u32), msg);
                }
            }
            Turn::Limiter => {
                if let Some(msg) = self.limiter.mail.pop_front() {
                    self.limiter_message(msg);
                }
            }
            Turn::Clock => self.tick(),
        }
    }

    /// Moves time to the earliest due entry and delivers every entry due then.
    fn tick(&mut self) {
        let Some((&(due, _), _)) = self.timers.first_key_value() else {
            return;
        };
        self.now = self.now.max(due);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            match entry.remove() {
                Due::Run(timer) => self.supervisor.push_back(RunFact::TimerFired(timer)),
                Due::Answer(fact) => self.supervisor.push_back(fact),
                Due::Node {
                    node,
                    generation,
                    msg,
                } => {
                    // A timer of an actor that is gone is dropped, as ractor drops it.
                    if let Some(actor) = self.actor(node, generation) {
                        actor.mail.push_back(msg);
                    }
                }
            }
        }
    }

    fn at(&mut self, due: Time, what: Due) -> (Time, u64) {
        self.timer_seq += 1;
        let key = (due, self.timer_seq);
        self.timers.insert(key, what);
        key
    }

    fn actor(&mut self, node: NodeIx, generation: u32) -> Option<&mut NodeActor> {
        self.nodes[node.ix()]
            .as_mut()
            .filter(|a| a.generation == generation)
    }

    // -----------------------------------------------------------------------------------
    // The supervisor
    // -----------------------------------------------------------------------------------

    fn feed_run(&mut self, fact: RunFact) {
        let effects = self.core.apply(fact, self.now);
        for effect in effects {
            self.perform_run(effect);
        }
    }

    fn perform_run(&mut self, effect: RunEffect) {
        match effect {
            RunEffect::Spawn {
                node,
                generation,
                start,
            } => {
                self.nodes[node.ix()] = Some(NodeActor {
                    generation,
                    core: NodeCore::new(self.plan.clone(), node),
                    mail: VecDeque::from([NodeIn::Fact(NodeFact::Spawned(start))]),
                    waiting: None,
                    grant: None,
                    attempt: None,
                });
            }
            RunEffect::Tell { child, resolved } => {
                if let Some(actor) = self.nodes[child.ix()].as_mut() {
                    actor
                        .mail
                        .push_back(NodeIn::Fact(NodeFact::ParentEnded(resolved)));
                }
            }
            RunEffect::Cancel { node, reason } => {
                if let Some(actor) = self.nodes[node.ix()].as_mut() {
                    actor
                        .mail
                        .push_back(NodeIn::Fact(NodeFact::CancelRequested(reason)));
                }
            }
            RunEffect::Answer {
                node,
                request_id,
                answer,
            } => {
                if let Some(actor) = self.nodes[node.ix()].as_mut() {
                    let fact = match answer {
                        Ok(output) => NodeFact::InputAnswered { request_id, output },
                        Err(error) => NodeFact::InputExpired { request_id, error },
                    };
                    actor.mail.push_back(NodeIn::Fact(fact));
                }
            }
            // A gate asked: the person answers as its title says, a few virtual
            // milliseconds later (or never: it expires).
            RunEffect::Request(request) if request.status == RequestStatus::Pending => {
                if let Some(resolution) = random::answer_for(&request.input.title) {
                    let delay = Duration::from_millis(self.rng.below(6) as u64);
                    let fact = RunFact::InputResolution {
                        request_id: request.request_id.as_str().into(),
                        resolution,
                    };
                    self.at(self.now + delay, Due::Answer(fact));
                }
            }
            // Nobody waits for what an answer did, and no engine lists requests here.
            RunEffect::Request(_) | RunEffect::Resolved { .. } | RunEffect::Signaled { .. } => {}
            RunEffect::Kill { node } => {
                if let Some(generation) = self.nodes[node.ix()].as_ref().map(|a| a.generation) {
                    self.stop_node(node, generation, "killed".into());
                }
            }
            RunEffect::Recheck {
                node,
                generation,
                cause,
            } => self.supervisor.push_back(RunFact::NodeDied {
                node,
                generation,
                cause,
            }),
            RunEffect::ArmTimer { due, timer } => {
                self.at(due, Due::Run(timer));
            }
            RunEffect::Finish(result) => self.result = Some(result),
            RunEffect::Unreached(_) | RunEffect::Emitted { .. } | RunEffect::Metric(_) => {}
        }
    }

    // -----------------------------------------------------------------------------------
    // Node actors
    // -----------------------------------------------------------------------------------

    fn node_message(&mut self, node: NodeIx, msg: NodeIn) {
        let fact = match msg {
            NodeIn::Fact(fact) => Some(fact),
            NodeIn::Grant { ticket } => self.on_grant(node, ticket),
            NodeIn::Finished { attempt, result } => {
                self.attempt_over(node, attempt);
                Some(NodeFact::AttemptFinished {
                    attempt,
                    outcome: result,
                })
            }
        };
        if let Some(fact) = fact {
            self.feed_node(node, fact);
        }
        // A grant no attempt took is given back.
        if let Some(ticket) = self.nodes[node.ix()].as_mut().and_then(|a| a.grant.take()) {
            self.limiter.mail.push_back(LimiterIn::Release { ticket });
        }
    }

    fn on_grant(&mut self, node: NodeIx, ticket: u64) -> Option<NodeFact> {
        let actor = self.nodes[node.ix()].as_mut()?;
        match actor.waiting {
            Some((waiting, attempt)) if waiting == ticket => {
                actor.waiting = None;
                actor.grant = Some(ticket);
                Some(NodeFact::SlotsGranted { attempt })
            }
            _ => {
                self.limiter.mail.push_back(LimiterIn::Release { ticket });
                None
            }
        }
    }

    fn attempt_over(&mut self, node: NodeIx, attempt: u32) {
        let Some(actor) = self.nodes[node.ix()].as_mut() else {
            return;
        };
        if actor.attempt.as_ref().is_some_and(|a| a.attempt == attempt) {
            let over = actor.attempt.take().and_then(|a| a.slot);
            if let Some(ticket) = over {
                self.limiter.mail.push_back(LimiterIn::Release { ticket });
            }
        }
    }

    fn feed_node(&mut self, node: NodeIx, fact: NodeFact) {
        let mut next = Some(fact);
        while let Some(fact) = next.take() {
            let Some(actor) = self.nodes[node.ix()].as_mut() else {
                return;
            };
            let generation = actor.generation;
            let effects = actor.core.apply(fact, self.now);
            for effect in effects {
                if let Some(fact) = self.perform_node(node, generation, effect) {
                    next = Some(fact);
                }
            }
        }
    }

    fn perform_node(
        &mut self,
        node: NodeIx,
        generation: u32,
        effect: NodeEffect,
    ) -> Option<NodeFact> {
        match effect {
            NodeEffect::Report(report) => self.supervisor.push_back(RunFact::Node(report)),
            NodeEffect::AcquireSlots { attempt } => self.acquire(node, generation, attempt),
            NodeEffect::ReleaseQueue { attempt } => {
                let actor = self.nodes[node.ix()].as_mut()?;
                if let Some((ticket, waiting)) = actor.waiting
                    && waiting == attempt
                {
                    actor.waiting = None;
                    self.limiter.mail.push_back(LimiterIn::Cancel { ticket });
                }
            }
            NodeEffect::StartAttempt(spec) => return self.start_attempt(node, generation, spec),
            NodeEffect::CancelAttempt { attempt } => self.cancel_attempt(node, generation, attempt),
            NodeEffect::ArmTimer { due, timer } => {
                self.at(
                    due,
                    Due::Node {
                        node,
                        generation,
                        msg: NodeIn::Fact(NodeFact::TimerFired(timer)),
                    },
                );
            }
            NodeEffect::Stop => self.stop_node(node, generation, "the node actor stopped".into()),
        }
        None
    }

    fn acquire(&mut self, node: NodeIx, generation: u32, attempt: u32) {
        if self.limiter.needs[node.ix()].is_none() {
            return;
        }
        let ticket = self.limiter.next_ticket;
        self.limiter.next_ticket += 1;
        if let Some(actor) = self.nodes[node.ix()].as_mut() {
            actor.waiting = Some((ticket, attempt));
        }
        self.limiter.mail.push_back(LimiterIn::Acquire {
            ticket,
            node,
            generation,
        });
    }

    /// Runs the component at once, its wait turned into virtual time: the attempt's end
    /// is due `ms` later (or at its limit), unless it finished at its first poll.
    fn start_attempt(
        &mut self,
        node: NodeIx,
        generation: u32,
        spec: AttemptSpec,
    ) -> Option<NodeFact> {
        let graph_node = self.plan.graph.node(node);
        let component = self.plan.registry.get(&graph_node.component_id)?.clone();
        // Only a component that declares `ms` waits (sleep, fail); others keep theirs.
        let waits = component.meta().inputs.iter().any(|i| i.name == "ms");
        let (params, ms) = without_wait(&graph_node.params, waits);
        let (inputs, input_ms) = without_wait(&spec.inputs, waits);
        let wait = input_ms.or(ms).unwrap_or(0);
        let ctx = ExecutionContext {
            run_id: self.plan.run_id.clone(),
            node_ref: graph_node.node_ref.clone(),
            attempt: spec.attempt,
            params: Arc::new(params),
            inputs: Arc::new(inputs),
            triggered_by: spec.triggered_by,
            failure: spec.failure,
            cancel: CancellationToken::new(),
            placement: Placement::default(),
            output_limit: self.plan.max_output_bytes,
        };
        let result = component.execute(ctx).now_or_never().unwrap_or_else(|| {
            Err(ComponentError::fatal(
                "SimulationError",
                "a component without a wait did not finish at its first poll",
            ))
        });
        let actor = self.nodes[node.ix()].as_mut()?;
        let slot = actor.grant.take();
        let (wait, result) = match spec.limit {
            Some(limit) if Duration::from_millis(wait) > limit.after => {
                (limit.after, Err(limit.error))
            }
            _ => (Duration::from_millis(wait), result),
        };
        if wait.is_zero() {
            if let Some(ticket) = slot {
                self.limiter.mail.push_back(LimiterIn::Release { ticket });
            }
            return Some(NodeFact::AttemptFinished {
                attempt: spec.attempt,
                outcome: result,
            });
        }
        let attempt = spec.attempt;
        let end = self.at(
            self.now + wait,
            Due::Node {
                node,
                generation,
                msg: NodeIn::Finished { attempt, result },
            },
        );
        if let Some(actor) = self.nodes[node.ix()].as_mut() {
            actor.attempt = Some(Attempt { attempt, slot, end });
        }
        None
    }

    /// The component sees its token fire and ends at once, cancelled.
    fn cancel_attempt(&mut self, node: NodeIx, generation: u32, attempt: u32) {
        let Some(actor) = self.nodes[node.ix()].as_mut() else {
            return;
        };
        let Some(running) = actor.attempt.as_mut().filter(|a| a.attempt == attempt) else {
            return;
        };
        let old = running.end;
        if self.timers.remove(&old).is_none() {
            return; // already delivered: its end is in the mailbox
        }
        let result = Err(ComponentError::fatal(
            CANCELLED_ERROR,
            "the attempt was cancelled",
        ));
        let end = self.at(
            self.now,
            Due::Node {
                node,
                generation,
                msg: NodeIn::Finished { attempt, result },
            },
        );
        if let Some(running) = self.nodes[node.ix()]
            .as_mut()
            .and_then(|a| a.attempt.as_mut())
        {
            running.end = end;
        }
    }

    /// The actor stops (or is killed): its attempt is abandoned, its slots given back,
    /// its mailbox dropped, and the supervisor gets the exit.
    fn stop_node(&mut self, node: NodeIx, generation: u32, cause: String) {
        let Some(actor) = self.nodes[node.ix()].take() else {
            return;
        };
        if let Some(attempt) = actor.attempt {
            self.timers.remove(&attempt.end);
            if let Some(ticket) = attempt.slot {
                self.limiter.mail.push_back(LimiterIn::Release { ticket });
            }
        }
        // A grant is a guard: one still in the dropped mailbox frees its slots too.
        let undelivered = actor.mail.iter().filter_map(|msg| match msg {
            NodeIn::Grant { ticket } => Some(*ticket),
            _ => None,
        });
        for ticket in actor.grant.into_iter().chain(undelivered) {
            self.limiter.mail.push_back(LimiterIn::Release { ticket });
        }
        self.exits.push_back(RunFact::ActorExited {
            node,
            generation,
            cause,
        });
    }

    // -----------------------------------------------------------------------------------
    // The limiter
    // -----------------------------------------------------------------------------------

    fn limiter_message(&mut self, msg: LimiterIn) {
        let now = self.limiter.base + Duration::from_micros(self.now.as_micros());
        let granted = match msg {
            LimiterIn::Acquire {
                ticket,
                node,
                generation,
            } => {
                let Some(needs) = self.limiter.needs[node.ix()].clone() else {
                    return;
                };
                self.limiter
                    .tickets
                    .insert(ticket, (node, generation, needs.clone()));
                self.limiter.book.request(ticket, needs, now)
            }
            LimiterIn::Cancel { ticket } => {
                let (was_waiting, granted) = self.limiter.book.cancel(ticket, now);
                if was_waiting {
                    self.limiter.tickets.remove(&ticket);
                }
                granted
            }
            LimiterIn::Release { ticket } => match self.limiter.tickets.remove(&ticket) {
                Some((_, _, needs)) => self.limiter.book.release(&needs, now),
                None => Vec::new(),
            },
        };
        for ticket in granted {
            self.grant(ticket);
        }
    }

    /// Sends a grant to the ticket's node; one whose actor is gone is given back.
    fn grant(&mut self, ticket: u64) {
        let Some(&(node, generation, _)) = self.limiter.tickets.get(&ticket) else {
            return;
        };
        match self.actor(node, generation) {
            Some(actor) => actor.mail.push_back(NodeIn::Grant { ticket }),
            None => self.limiter.mail.push_back(LimiterIn::Release { ticket }),
        }
    }
}

/// An object without its `ms` wait (when the component `waits`), and the wait.
fn without_wait(object: &JsonObject, waits: bool) -> (JsonObject, Option<u64>) {
    let mut object = object.clone();
    // A wait that is not a whole number stays, for the component to refuse.
    let ms = if waits && object.get("ms").is_some_and(Value::is_u64) {
        object.remove("ms")
    } else {
        None
    };
    (object, ms.and_then(|v| v.as_u64()))
}

/// Validates the case and runs it in the simulation under `seed`.
fn simulate(case: &Case, seed: u64) -> Result<Finished, String> {
    let definition: WorkflowDefinition = serde_json::from_value(case.definition.clone())
        .map_err(|e| format!("generated definition does not parse: {e}"))?;
    let registry = Arc::new(ComponentRegistry::with_builtins());
    let graph = Arc::new(
        validate(&definition, &registry)
            .map_err(|e| format!("generated definition is invalid: {e}"))?,
    );
    let config = EngineConfig::default();
    let mut plan = RunPlan {
        run_id: Arc::from(format!("sim-{seed:016x}")),
        graph: graph.clone(),
        registry,
        inputs: Arc::new(random::run_inputs()),
        max_output_bytes: config.limits.max_output_bytes,
        cancel_grace: Duration::from_secs(1),
        seed,
        queued: Vec::new(),
        metrics: true,
        retry_lost_attempts: config.resume.retry_lost_attempts,
        gate_timeout: config.gates.default_timeout(),
        metadata: Arc::default(),
    };
    let needs = node_needs(&plan.graph, &plan.registry, &config, 1);
    plan.queued = needs.iter().map(Option::is_some).collect();
    let mut sim = Sim::new(Arc::new(plan), needs, seed);
    sim.run().map_err(|e| format!("seed {seed:#x}: {e}"))?;
    let result = sim.result.take().ok_or("no result")?;
    Ok(Finished {
        graph,
        result,
        events: sim.core.take_events(),
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: random::cases(10_000),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// docs/semantics.md §1–§5, §7, §9 under `skipDependents`, over every interleaving
    /// the scheduler picks.
    #[test]
    fn simulated_runs_end_as_the_reference_evaluator_says(
        case in gated_case_gen(Mode::Continue, 40),
        seed in any::<u64>(),
    ) {
        simulate(&case, seed)
            .and_then(|f| check_against_reference(&f))
            .map_err(TestCaseError::fail)?;
    }

    /// docs/semantics.md §4 `failRun` over every interleaving the scheduler picks.
    #[test]
    fn simulated_fail_fast_runs_are_explained(
        case in gated_case_gen(Mode::FailFast, 20),
        seed in any::<u64>(),
    ) {
        simulate(&case, seed)
            .and_then(|f| check_fail_fast(&f))
            .map_err(TestCaseError::fail)?;
    }
}

/// The same seed gives the same run, event for event: the cores and the scheduler hold
/// no hidden source of nondeterminism.
#[test]
fn a_seed_reproduces_its_run() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..200 {
        let case = gated_case_gen(Mode::FailFast, 20)
            .new_tree(&mut runner)
            .expect("a case")
            .current();
        let seed = runner.rng().next_u64();
        let first = simulate(&case, seed).expect("the first run");
        let second = simulate(&case, seed).expect("the second run");
        let strip = |f: &Finished| -> Vec<Value> {
            f.events
                .iter()
                .map(|e| serde_json::to_value(e).expect("events serialize"))
                .collect()
        };
        assert_eq!(strip(&first), strip(&second), "{case:?}");
        assert_eq!(first.result, second.result, "{case:?}");
    }
}
