//! What every actor of one run shares, immutably: the graph, the run id, the inputs,
//! the components and the supervisor's address.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;

use crate::messages::supervisor::SupervisorMsg;
use crate::runtime::definition::JsonObject;
use crate::runtime::graph::Graph;
use crate::runtime::registry::ComponentRegistry;

/// Engine settings the actors read.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Grace period a cancelled attempt gets before it is abandoned (SEMANTICS.md §6).
    pub cancel_grace: Duration,
    /// Finished runs kept for `status` and `events` queries.
    pub retained_runs: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cancel_grace: Duration::from_secs(5),
            retained_runs: 10_000,
        }
    }
}

/// One run's shared, immutable context.
#[derive(Debug)]
pub struct RunShared {
    /// Run id.
    pub run_id: Arc<str>,
    /// The validated graph.
    pub graph: Arc<Graph>,
    /// Components.
    pub registry: Arc<ComponentRegistry>,
    /// The run's inputs (the entrypoint's output).
    pub inputs: Arc<JsonObject>,
    /// The run's supervisor.
    pub supervisor: ActorRef<SupervisorMsg>,
}
