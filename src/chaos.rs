//! Chaos testing (cargo feature `chaos`): hooks to find and kill the live actor of a node
//! or a run's supervisor, to delay the edge resolutions sent to a node and to make a
//! component panic; worker faults (a remote worker killed, hung or cut off as it takes an
//! attempt) struck by a fleet of in-process workers behind faulty links ([`workers`],
//! [`link`]); and a seeded harness ([`harness`]) that injects such faults into any
//! workflow and checks the invariants afterwards. Not part of the default API; until
//! [`enable`] is called (or a fault armed) the hooks do nothing and record nothing.

pub mod harness;
pub mod link;
pub mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use ractor::ActorCell;

use std::time::{Duration, Instant};

type Key = (String, String);

/// The node ref under which a run's supervisor is registered.
const SUPERVISOR: &str = "\u{0}supervisor";

/// Whether the hooks are on: nothing is registered or looked up until a test turns them
/// on, so benches built with the feature pay one relaxed load per hook.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the hooks on for this process: from now on every actor is registered, so
/// [`node_actor`] and [`supervisor_actor`] find the actors of runs submitted after this
/// call. Arming any fault turns them on too.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn registry() -> &'static Mutex<HashMap<Key, ActorCell>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Key, ActorCell>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Records the live actor of `(run, node)`.
pub(crate) fn register(run_id: &str, node_ref: &str, cell: ActorCell) {
    if !enabled() {
        return;
    }
    if let Ok(mut map) = registry().lock() {
        let fresh = map
            .insert((run_id.to_owned(), node_ref.to_owned()), cell)
            .is_none();
        if fresh && node_ref != SUPERVISOR {
            count_node_actors(run_id, 1);
        }
    }
}

/// Node actors of each run registered and not ended: `(now, most at once)`.
fn node_actor_counts() -> &'static Mutex<HashMap<String, (usize, usize)>> {
    static COUNTS: OnceLock<Mutex<HashMap<String, (usize, usize)>>> = OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

fn count_node_actors(run_id: &str, up: isize) {
    if let Ok(mut counts) = node_actor_counts().lock() {
        let (now, peak) = counts.entry(run_id.to_owned()).or_default();
        *now = now.saturating_add_signed(up);
        *peak = (*peak).max(*now);
    }
}

/// The most node actors of run `run_id` that were alive at once (spawned and not yet
/// ended), since the hooks were enabled.
pub fn peak_node_actors_of(run_id: &str) -> usize {
    node_actor_counts()
        .lock()
        .map_or(0, |c| c.get(run_id).map_or(0, |(_, peak)| *peak))
}

/// Forgets `(run, node)` once it ended.
pub(crate) fn unregister(run_id: &str, node_ref: &str) {
    if !enabled() {
        return;
    }
    if let Ok(mut map) = registry().lock()
        && map
            .remove(&(run_id.to_owned(), node_ref.to_owned()))
            .is_some()
        && node_ref != SUPERVISOR
    {
        count_node_actors(run_id, -1);
    }
}

/// The live actor of node `node_ref` in run `run_id`, if it has not ended.
pub fn node_actor(run_id: &str, node_ref: &str) -> Option<ActorCell> {
    registry()
        .lock()
        .ok()?
        .get(&(run_id.to_owned(), node_ref.to_owned()))
        .cloned()
}

/// Records the live supervisor of `run`.
pub(crate) fn register_supervisor(run_id: &str, cell: ActorCell) {
    register(run_id, SUPERVISOR, cell);
}

/// Forgets the supervisor of `run`.
pub(crate) fn unregister_supervisor(run_id: &str) {
    unregister(run_id, SUPERVISOR);
}

/// The live supervisor of run `run_id`.
pub fn supervisor_actor(run_id: &str) -> Option<ActorCell> {
    node_actor(run_id, SUPERVISOR)
}

/// Node actors of one run that are still alive (registered and not stopped).
pub fn live_node_actors_of(run_id: &str) -> usize {
    registry().lock().map_or(0, |m| {
        m.iter()
            .filter(|((r, n), cell)| r == run_id && n != SUPERVISOR && alive(cell))
            .count()
    })
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

fn delays() -> &'static Mutex<HashMap<Key, Duration>> {
    static DELAYS: OnceLock<Mutex<HashMap<Key, Duration>>> = OnceLock::new();
    DELAYS.get_or_init(Default::default)
}

/// Delays every edge resolution sent to node `node_ref` of run `run_id` by `delay`.
pub fn delay_messages_to(run_id: &str, node_ref: &str, delay: Duration) {
    enable();
    if let Ok(mut map) = delays().lock() {
        map.insert((run_id.to_owned(), node_ref.to_owned()), delay);
    }
}

/// The delay set for messages to `(run, node)`, if any.
pub(crate) fn delay_for(run_id: &str, node_ref: &str) -> Option<Duration> {
    if !enabled() {
        return None;
    }
    let map = delays().lock().ok()?;
    if map.is_empty() {
        return None;
    }
    map.get(&(run_id.to_owned(), node_ref.to_owned())).copied()
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

/// Armed attempt faults: `(run, node, fault)` to the attempt number it strikes.
type Armed = Mutex<HashMap<(String, String, AttemptFault), u32>>;

fn panics() -> &'static Armed {
    static ARMED: OnceLock<Armed> = OnceLock::new();
    ARMED.get_or_init(Default::default)
}

fn arm(run_id: &str, node_ref: &str, fault: AttemptFault, attempt: u32) {
    enable();
    if let Ok(mut map) = panics().lock() {
        map.insert((run_id.to_owned(), node_ref.to_owned(), fault), attempt);
    }
}

fn armed(run_id: &str, node_ref: &str, fault: AttemptFault, attempt: u32) -> bool {
    if !enabled() {
        return false;
    }
    let Ok(map) = panics().lock() else {
        return false;
    };
    !map.is_empty() && map.get(&(run_id.to_owned(), node_ref.to_owned(), fault)) == Some(&attempt)
}

/// Kills the actor of node `node_ref` in run `run_id` just after its attempt `attempt`
/// started (the attempt fails with `CrashError`).
pub fn kill_on_attempt(run_id: &str, node_ref: &str, attempt: u32) {
    arm(run_id, node_ref, AttemptFault::Kill, attempt);
}

/// Whether the node actor must die now that attempt `attempt` started.
pub(crate) fn should_kill(run_id: &str, node_ref: &str, attempt: u32) -> bool {
    armed(run_id, node_ref, AttemptFault::Kill, attempt)
}

/// Kills the actor of node `node_ref` in run `run_id` once, right after it is spawned
/// (when its first parent ended) with that parent's edge resolution in its mailbox; the
/// supervisor respawns it and replays its parents' ends.
pub fn kill_when_pending(run_id: &str, node_ref: &str) {
    arm(run_id, node_ref, AttemptFault::KillPending, 0);
}

/// Whether the freshly spawned actor of `(run, node)` must die now; true once.
pub(crate) fn should_kill_pending(run_id: &str, node_ref: &str) -> bool {
    if !enabled() {
        return false;
    }
    let Ok(mut map) = panics().lock() else {
        return false;
    };
    if map.is_empty() {
        return false;
    }
    let fault = (
        run_id.to_owned(),
        node_ref.to_owned(),
        AttemptFault::KillPending,
    );
    let Some(((run, node, _), _)) = map.remove_entry(&fault) else {
        return false;
    };
    drop(map);
    if let Ok(mut kills) = pending_kills().lock() {
        kills.insert((run, node), Instant::now());
    }
    true
}

/// When each armed pending kill (and worker fault) of a run struck.
fn pending_kills() -> &'static Mutex<HashMap<Key, Instant>> {
    static KILLS: OnceLock<Mutex<HashMap<Key, Instant>>> = OnceLock::new();
    KILLS.get_or_init(Default::default)
}

/// The moments the pending kills and worker faults armed for `run_id` struck (a node the
/// run never reached was never struck).
pub fn pending_kills_of(run_id: &str) -> Vec<Instant> {
    pending_kills().lock().map_or_else(
        |_| Vec::new(),
        |m| {
            m.iter()
                .filter(|((r, _), _)| r == run_id)
                .map(|(_, t)| *t)
                .collect()
        },
    )
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

/// Strikes the remote worker that takes attempt `attempt` of node `node_ref` in run
/// `run_id` with `fault` (a [`workers::WorkerFleet`] worker performs it).
pub fn arm_worker_fault(run_id: &str, node_ref: &str, attempt: u32, fault: WorkerFault) {
    arm(run_id, node_ref, AttemptFault::Worker(fault), attempt);
}

/// The worker fault armed for attempt `attempt` of `(run, node)`, taken: it strikes
/// once, and the moment it struck is kept with the pending kills'.
pub fn take_worker_fault(run_id: &str, node_ref: &str, attempt: u32) -> Option<WorkerFault> {
    if !enabled() {
        return None;
    }
    let key = |f| {
        (
            run_id.to_owned(),
            node_ref.to_owned(),
            AttemptFault::Worker(f),
        )
    };
    let mut map = panics().lock().ok()?;
    let faults = [WorkerFault::Kill, WorkerFault::Hang, WorkerFault::Partition];
    let fault = faults
        .into_iter()
        .find(|f| map.get(&key(*f)) == Some(&attempt))?;
    map.remove(&key(fault));
    drop(map);
    if let Ok(mut struck) = pending_kills().lock() {
        struck.insert((run_id.to_owned(), node_ref.to_owned()), Instant::now());
    }
    Some(fault)
}

/// Makes attempt `attempt` of node `node_ref` in run `run_id` panic before its component
/// runs (the attempt fails with `CrashError`).
pub fn panic_on_attempt(run_id: &str, node_ref: &str, attempt: u32) {
    arm(run_id, node_ref, AttemptFault::Panic, attempt);
}

/// Whether attempt `attempt` of `(run, node)` must panic.
pub(crate) fn should_panic(run_id: &str, node_ref: &str, attempt: u32) -> bool {
    armed(run_id, node_ref, AttemptFault::Panic, attempt)
}

/// Removes every fault registered for `run_id` (delays, panics, kills, worker faults) and
/// its actors.
pub fn clear_run(run_id: &str) {
    if let Ok(mut map) = panics().lock() {
        map.retain(|(r, _, _), _| r != run_id);
    }
    if let Ok(mut map) = delays().lock() {
        map.retain(|(r, _), _| r != run_id);
    }
    if let Ok(mut map) = pending_kills().lock() {
        map.retain(|(r, _), _| r != run_id);
    }
    if let Ok(mut counts) = node_actor_counts().lock() {
        counts.remove(run_id);
    }
    if let Ok(mut map) = registry().lock() {
        map.retain(|(r, _), _| r != run_id);
    }
}

/// Waits (up to `bound`) for every registered actor of `run_id` to exit.
pub async fn wait_for_run_actors(run_id: &str, bound: Duration) {
    let cells: Vec<ActorCell> = registry().lock().map_or_else(
        |_| Vec::new(),
        |m| {
            m.iter()
                .filter(|((r, _), _)| r == run_id)
                .map(|(_, c)| c.clone())
                .collect()
        },
    );
    for cell in cells {
        // A timeout leaves the actor alive, which the caller's check then reports.
        let _ = cell.wait(Some(bound)).await;
    }
}

/// The facts one run's cores were fed, with the times they were fed at: what the replay
/// test gives fresh cores.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// The run's plan.
    pub plan: Option<std::sync::Arc<crate::runtime::semantics::plan::RunPlan>>,
    /// The run core's facts, in order.
    pub run: Vec<(
        crate::runtime::semantics::run_core::RunFact,
        crate::runtime::semantics::time::Time,
    )>,
    /// Each node core's facts, in order, by node (one entry per actor generation, the
    /// facts of each actor's core in the order it got them).
    pub nodes: HashMap<
        crate::runtime::definition::graph::NodeIx,
        Vec<(
            crate::runtime::semantics::node_core::NodeFact,
            crate::runtime::semantics::time::Time,
        )>,
    >,
}

fn recordings() -> &'static Mutex<HashMap<String, Recording>> {
    static RECORDINGS: OnceLock<Mutex<HashMap<String, Recording>>> = OnceLock::new();
    RECORDINGS.get_or_init(Default::default)
}

/// Records every fact the cores of run `run_id` are fed, from its start.
pub fn record_facts(run_id: &str) {
    enable();
    if let Ok(mut map) = recordings().lock() {
        map.insert(run_id.to_owned(), Recording::default());
    }
}

/// The facts recorded for `run_id`, forgetting them.
pub fn take_recording(run_id: &str) -> Option<Recording> {
    recordings().lock().ok()?.remove(run_id)
}

fn with_recording(run_id: &str, f: impl FnOnce(&mut Recording)) {
    if !enabled() {
        return;
    }
    if let Ok(mut map) = recordings().lock()
        && let Some(recording) = map.get_mut(run_id)
    {
        f(recording);
    }
}

pub(crate) fn record_plan(plan: &std::sync::Arc<crate::runtime::semantics::plan::RunPlan>) {
    with_recording(&plan.run_id, |r| r.plan = Some(plan.clone()));
}

pub(crate) fn record_run_fact(
    run_id: &str,
    fact: &crate::runtime::semantics::run_core::RunFact,
    now: crate::runtime::semantics::time::Time,
) {
    with_recording(run_id, |r| r.run.push((fact.clone(), now)));
}

pub(crate) fn record_node_fact(
    run_id: &str,
    node: crate::runtime::definition::graph::NodeIx,
    fact: &crate::runtime::semantics::node_core::NodeFact,
    now: crate::runtime::semantics::time::Time,
) {
    with_recording(run_id, |r| {
        r.nodes.entry(node).or_default().push((fact.clone(), now));
    });
}
