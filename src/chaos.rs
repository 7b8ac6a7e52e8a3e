//! Test hooks for chaos testing (cargo feature `chaos`): find the live actor of a node so
//! a test can kill it. Not part of the default API; nothing here changes behaviour.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use ractor::ActorCell;

type Key = (String, String);

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

/// Live node actors across all runs (for leak checks).
pub fn live_node_actors() -> usize {
    registry().lock().map_or(0, |m| m.len())
}
