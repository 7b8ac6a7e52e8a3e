//! What the cores of one run share, immutably: the graph, the components' metadata, the
//! run's inputs, the limits and the seed. Built once when the run is accepted; a journal
//! replay rebuilds the same plan from what it recorded.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{Graph, NodeIx};

/// One run's immutable facts.
#[derive(Debug)]
pub struct RunPlan {
    /// Run id.
    pub run_id: Arc<str>,
    /// The validated graph.
    pub graph: Arc<Graph>,
    /// The components (their declared inputs are checked at fire time).
    pub registry: Arc<ComponentRegistry>,
    /// The run's inputs (the entrypoint's).
    pub inputs: Arc<JsonObject>,
    /// Largest output a node may produce, in bytes of JSON.
    pub max_output_bytes: usize,
    /// Grace period of a cancelled attempt.
    pub cancel_grace: Duration,
    /// Seed of the run's retry jitter.
    pub seed: u64,
    /// Which nodes wait for slots (caps or rate limits apply to them), by `NodeIx`.
    pub queued: Vec<bool>,
    /// Whether the run records metrics (when none are exported, the core returns none).
    pub metrics: bool,
}

impl RunPlan {
    /// Whether `node`'s attempts wait for slots.
    pub fn needs_slots(&self, node: NodeIx) -> bool {
        self.queued.get(node.ix()).copied().unwrap_or(false)
    }

    /// The ref of `node`.
    pub fn node_ref(&self, node: NodeIx) -> &Arc<str> {
        &self.graph.node(node).node_ref
    }
}
