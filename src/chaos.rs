//! Test hooks for chaos testing (cargo feature `chaos`): find the live actor of a node so
//! a test can kill it. Not part of the default API; nothing here changes behaviour.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use ractor::ActorCell;

use std::time::Duration;

type Key = (String, String);

/// The node ref under which a run's supervisor is registered.
const SUPERVISOR: &str = "\u{0}supervisor";

fn registry() -> &'static Mutex<HashMap<Key, ActorCell>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Key, ActorCell>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Records the live actor of `(run, node)`.
pub(crate) fn register(run_id: &str, node_ref: &str, cell: ActorCell) {
    if let Ok(mut map) = registry().lock() {
        map.insert((run_id.to_owned(), node_ref.to_owned()), cell);
    }
}

/// Forgets `(run, node)` once it ended.
pub(crate) fn unregister(run_id: &str, node_ref: &str) {
    if let Ok(mut map) = registry().lock() {
        map.remove(&(run_id.to_owned(), node_ref.to_owned()));
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

/// Node actors across all runs that are still alive (for leak checks).
pub fn live_node_actors() -> usize {
    registry().lock().map_or(0, |m| {
        m.iter()
            .filter(|((_, n), cell)| n != SUPERVISOR && alive(cell))
            .count()
    })
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
    if let Ok(mut map) = delays().lock() {
        map.insert((run_id.to_owned(), node_ref.to_owned()), delay);
    }
}

/// The delay set for messages to `(run, node)`, if any.
pub(crate) fn delay_for(run_id: &str, node_ref: &str) -> Option<Duration> {
    let map = delays().lock().ok()?;
    if map.is_empty() {
        return None;
    }
    map.get(&(run_id.to_owned(), node_ref.to_owned())).copied()
}
