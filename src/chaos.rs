//! Chaos testing (cargo feature `chaos`): [`Chaos`], the engine's [`Faults`] for tests,
//! finds and kills the live actor of a node or a run's supervisor, delays the edge
//! resolutions sent to a node, makes a component panic and records the facts a run's
//! cores were fed; worker faults (a remote worker killed, hung or cut off as it takes an
//! attempt) are struck by a fleet of in-process workers behind faulty links
//! ([`workers`], [`link`]); and a seeded harness ([`harness`]) injects such faults into
//! any workflow and checks the invariants afterwards; [`journal::CrashAt`] kills the
//! "process" between two of the journal's writes. A `Chaos` belongs to the engines
//! started with it (`Orchestrator::start_with_faults`): nothing is shared between
//! engines or tests.

pub mod harness;
pub mod journal;
pub mod link;
pub mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ractor::ActorCell;

use crate::actors::faults::Faults;
use crate::runtime::definition::graph::NodeIx;
use crate::runtime::semantics::node_core::NodeFact;
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::run_core::RunFact;
use crate::runtime::semantics::time::Time;

/// A run and one of its nodes (`None`: the run's supervisor).
type Key = (String, Option<String>);

fn key(run_id: &str, node: Option<&str>) -> Key {
    (run_id.to_owned(), node.map(str::to_owned))
}

/// What to do to an attempt: make its component panic, kill its node actor, or strike
/// the remote worker that takes it; or kill a node actor as soon as it is spawned
/// (`KillPending`, attempt 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AttemptFault {
    Panic,
    Kill,
    KillPending,
    Worker(WorkerFault),
}

/// What a worker fault does to the remote worker that takes the attempt it strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerFault {
    /// The worker dies: its attempts stop where they stand, nothing more is said.
    Kill,
    /// The worker hangs past its lease (its link stalls), then wakes.
    Hang,
    /// The worker's link is cut past its lease, then heals.
    Partition,
}

/// The facts one run's cores were fed, with the times they were fed at: what the replay
/// test gives fresh cores.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// The run's plan.
    pub plan: Option<Arc<RunPlan>>,
    /// The run core's facts, in order.
    pub run: Vec<(RunFact, Time)>,
    /// Each node core's facts, in order, by node (one entry per actor generation, the
    /// facts of each actor's core in the order it got them).
    pub nodes: HashMap<NodeIx, Vec<(NodeFact, Time)>>,
}

/// What a [`Chaos`] knows and has armed.
#[derive(Debug, Default)]
struct State {
    /// The live actor of each node (and supervisor) of each run.
    actors: HashMap<Key, ActorCell>,
    /// Node actors of each run registered and not ended: `(now, most at once)`.
    counts: HashMap<String, (usize, usize)>,
    /// Delays of the resolutions sent to a node.
    delays: HashMap<Key, Duration>,
    /// Armed attempt faults: `(run, node, fault)` to the attempt number it strikes.
    armed: HashMap<(String, String, AttemptFault), u32>,
    /// When each armed pending kill (and worker fault) of a run struck.
    struck: HashMap<Key, Instant>,
    /// Runs whose facts are recorded.
    recordings: HashMap<String, Recording>,
}

/// The faults of the engines a chaos test starts with it, and what it observed of them.
#[derive(Debug, Default)]
pub struct Chaos(Mutex<State>);

impl Chaos {
    /// A chaos with nothing armed, for `Orchestrator::start_with_faults`.
    pub fn new() -> Arc<Chaos> {
        Arc::new(Chaos::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is one map operation: still whole after a panic elsewhere.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live actor of node `node_ref` in run `run_id`, if it has not ended.
    pub fn node_actor(&self, run_id: &str, node_ref: &str) -> Option<ActorCell> {
        self.state()
            .actors
            .get(&key(run_id, Some(node_ref)))
            .cloned()
    }

    /// The live supervisor of run `run_id`.
    pub fn supervisor_actor(&self, run_id: &str) -> Option<ActorCell> {
        self.state().actors.get(&key(run_id, None)).cloned()
    }

    /// Node actors of one run that are still alive (registered and not stopped).
    pub fn live_node_actors_of(&self, run_id: &str) -> usize {
        self.state()
            .actors
            .iter()
            .filter(|((r, n), cell)| r == run_id && n.is_some() && alive(cell))
            .count()
    }

    /// The most node actors of run `run_id` that were alive at once (spawned and not yet
    /// ended).
    pub fn peak_node_actors_of(&self, run_id: &str) -> usize {
        self.state().counts.get(run_id).map_or(0, |(_, peak)| *peak)
    }

    /// Delays every edge resolution sent to node `node_ref` of run `run_id` by `delay`.
    pub fn delay_messages_to(&self, run_id: &str, node_ref: &str, delay: Duration) {
        self.state()
            .delays
            .insert(key(run_id, Some(node_ref)), delay);
    }

    fn arm(&self, run_id: &str, node_ref: &str, fault: AttemptFault, attempt: u32) {
        let armed = (run_id.to_owned(), node_ref.to_owned(), fault);
        self.state().armed.insert(armed, attempt);
    }

    fn armed(&self, run_id: &str, node_ref: &str, fault: AttemptFault, attempt: u32) -> bool {
        let state = self.state();
        !state.armed.is_empty()
            && state
                .armed
                .get(&(run_id.to_owned(), node_ref.to_owned(), fault))
                == Some(&attempt)
    }

    /// Kills the actor of node `node_ref` in run `run_id` just after its attempt `attempt`
    /// started (the attempt fails with `CrashError`).
    pub fn kill_on_attempt(&self, run_id: &str, node_ref: &str, attempt: u32) {
        self.arm(run_id, node_ref, AttemptFault::Kill, attempt);
    }

    /// Kills the actor of node `node_ref` in run `run_id` once, right after it is spawned
    /// (when its first parent ended) with that parent's edge resolution in its mailbox;
    /// the supervisor respawns it and replays its parents' ends.
    pub fn kill_when_pending(&self, run_id: &str, node_ref: &str) {
        self.arm(run_id, node_ref, AttemptFault::KillPending, 0);
    }

    /// Makes attempt `attempt` of node `node_ref` in run `run_id` panic before its
    /// component runs (the attempt fails with `CrashError`).
    pub fn panic_on_attempt(&self, run_id: &str, node_ref: &str, attempt: u32) {
        self.arm(run_id, node_ref, AttemptFault::Panic, attempt);
    }

    /// Strikes the remote worker that takes attempt `attempt` of node `node_ref` in run
    /// `run_id` with `fault` (a [`workers::WorkerFleet`] worker performs it).
    pub fn arm_worker_fault(&self, run_id: &str, node_ref: &str, attempt: u32, fault: WorkerFault) {
        self.arm(run_id, node_ref, AttemptFault::Worker(fault), attempt);
    }

    /// The worker fault armed for attempt `attempt` of `(run, node)`, taken: it strikes
    /// once, and the moment it struck is kept with the pending kills'.
    pub fn take_worker_fault(
        &self,
        run_id: &str,
        node_ref: &str,
        attempt: u32,
    ) -> Option<WorkerFault> {
        let armed = |f| {
            (
                run_id.to_owned(),
                node_ref.to_owned(),
                AttemptFault::Worker(f),
            )
        };
        let mut state = self.state();
        let faults = [WorkerFault::Kill, WorkerFault::Hang, WorkerFault::Partition];
        let fault = faults
            .into_iter()
            .find(|f| state.armed.get(&armed(*f)) == Some(&attempt))?;
        state.armed.remove(&armed(fault));
        state
            .struck
            .insert(key(run_id, Some(node_ref)), Instant::now());
        Some(fault)
    }

    /// The moments the pending kills and worker faults armed for `run_id` struck (a node
    /// the run never reached was never struck).
    pub fn pending_kills_of(&self, run_id: &str) -> Vec<Instant> {
        self.state()
            .struck
            .iter()
            .filter(|((r, _), _)| r == run_id)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Records every fact the cores of run `run_id` are fed, from its start.
    pub fn record_facts(&self, run_id: &str) {
        self.state()
            .recordings
            .insert(run_id.to_owned(), Recording::default());
    }

    /// The facts recorded for `run_id`, forgetting them.
    pub fn take_recording(&self, run_id: &str) -> Option<Recording> {
        self.state().recordings.remove(run_id)
    }

    /// Removes every fault registered for `run_id` (delays, panics, kills, worker faults)
    /// and its actors.
    pub fn clear_run(&self, run_id: &str) {
        let mut state = self.state();
        state.armed.retain(|(r, _, _), _| r != run_id);
        state.delays.retain(|(r, _), _| r != run_id);
        state.struck.retain(|(r, _), _| r != run_id);
        state.counts.remove(run_id);
        state.actors.retain(|(r, _), _| r != run_id);
    }

    /// Waits (up to `bound`) for every registered actor of `run_id` to exit.
    pub async fn wait_for_run_actors(&self, run_id: &str, bound: Duration) {
        let cells: Vec<ActorCell> = self
            .state()
            .actors
            .iter()
            .filter(|((r, _), _)| r == run_id)
            .map(|(_, c)| c.clone())
            .collect();
        for cell in cells {
            // A timeout leaves the actor alive, which the caller's check then reports.
            let _ = cell.wait(Some(bound)).await;
        }
    }

    fn with_recording(&self, run_id: &str, f: impl FnOnce(&mut Recording)) {
        let mut state = self.state();
        if let Some(recording) = state.recordings.get_mut(run_id) {
            f(recording);
        }
    }
}

impl Faults for Chaos {
    fn spawned(&self, run_id: &str, node: Option<&str>, cell: &ActorCell) {
        let mut state = self.state();
        let fresh = state
            .actors
            .insert(key(run_id, node), cell.clone())
            .is_none();
        if fresh && node.is_some() {
            let (now, peak) = state.counts.entry(run_id.to_owned()).or_default();
            *now += 1;
            *peak = (*peak).max(*now);
        }
    }

    fn ended(&self, run_id: &str, node: Option<&str>) {
        let mut state = self.state();
        if state.actors.remove(&key(run_id, node)).is_some()
            && node.is_some()
            && let Some((now, _)) = state.counts.get_mut(run_id)
        {
            *now = now.saturating_sub(1);
        }
    }

    fn kill_at_spawn(&self, run_id: &str, node: &str) -> bool {
        let mut state = self.state();
        let armed = (
            run_id.to_owned(),
            node.to_owned(),
            AttemptFault::KillPending,
        );
        if state.armed.remove(&armed).is_none() {
            return false;
        }
        state.struck.insert(key(run_id, Some(node)), Instant::now());
        true
    }

    fn kill_at_attempt(&self, run_id: &str, node: &str, attempt: u32) -> bool {
        self.armed(run_id, node, AttemptFault::Kill, attempt)
    }

    fn panic_at_attempt(&self, run_id: &str, node: &str, attempt: u32) -> bool {
        self.armed(run_id, node, AttemptFault::Panic, attempt)
    }

    fn delay_resolutions(&self, run_id: &str, node: &str) -> Option<Duration> {
        let state = self.state();
        if state.delays.is_empty() {
            return None;
        }
        state.delays.get(&key(run_id, Some(node))).copied()
    }

    fn plan(&self, plan: &Arc<RunPlan>) {
        self.with_recording(&plan.run_id, |r| r.plan = Some(plan.clone()));
    }

    fn run_fact(&self, run_id: &str, fact: &RunFact, now: Time) {
        self.with_recording(run_id, |r| r.run.push((fact.clone(), now)));
    }

    fn node_fact(&self, run_id: &str, node: NodeIx, fact: &NodeFact, now: Time) {
        self.with_recording(run_id, |r| {
            r.nodes.entry(node).or_default().push((fact.clone(), now));
        });
    }
}

/// Kills every actor of `handle`'s engine at once, as a crash of the process would:
/// nothing is shut down or flushed (a test then starts an engine on what the journal
/// kept).
pub async fn crash(handle: &crate::Handle) {
    handle.abort().await;
}

fn alive(cell: &ActorCell) -> bool {
    matches!(
        cell.get_status(),
        ractor::ActorStatus::Unstarted
            | ractor::ActorStatus::Starting
            | ractor::ActorStatus::Running
            | ractor::ActorStatus::Upgrading
    )
}
