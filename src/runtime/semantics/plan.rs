//! What the cores of one run share, immutably: the graph, the components' metadata, the
//! run's inputs, the limits and the seed. Built once when the run is accepted; a journal
//! replay rebuilds the same plan from what it recorded.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{Graph, NodeIx};
use crate::runtime::semantics::metadata::Metadata;

/// One run's immutable facts.
#[derive(Debug, Clone)]
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
    /// Extra tries of an attempt lost to an engine restart (`resume.retryLostAttempts`).
    pub retry_lost_attempts: u32,
    /// How long a gate without a timeout of its own waits (`gates.defaultTimeoutSeconds`;
    /// `None`: no limit).
    pub gate_timeout: Option<Duration>,
    /// The run's metadata, which its status and result carry.
    pub metadata: Arc<Metadata>,
}

impl RunPlan {
    /// The plan a replay folds a finished run's facts with, outside any engine: the
    /// run's seed, no limiter (which nodes waited for slots is in the facts), no metrics.
    pub fn for_replay(
        run_id: &str,
        graph: Arc<Graph>,
        registry: Arc<ComponentRegistry>,
        inputs: Arc<JsonObject>,
        max_output_bytes: usize,
        cancel_grace: Duration,
    ) -> RunPlan {
        RunPlan {
            run_id: run_id.into(),
            graph,
            registry,
            inputs,
            max_output_bytes,
            cancel_grace,
            seed: RunPlan::seed_for(run_id),
            queued: Vec::new(),
            metrics: false,
            // A replay folds decisions already taken; it takes none of its own (a gate's
            // deadline is in its fact).
            retry_lost_attempts: 0,
            gate_timeout: None,
            metadata: Arc::default(),
        }
    }

    /// The jitter seed of run `run_id`: a stable hash of the id (FNV-1a, 64 bits), so a
    /// run's retry delays follow from what identifies it, and a journal that kept the id
    /// replays them. Run ids are unique (fresh UUIDs unless the caller names them), so
    /// runs still spread their retries apart.
    pub fn seed_for(run_id: &str) -> u64 {
        run_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// Whether `node`'s attempts wait for slots.
    pub fn needs_slots(&self, node: NodeIx) -> bool {
        self.queued.get(node.ix()).copied().unwrap_or(false)
    }

    /// The ref of `node`.
    pub fn node_ref(&self, node: NodeIx) -> &Arc<str> {
        &self.graph.node(node).node_ref
    }
}

/// Plans for the cores' unit tests.
#[cfg(test)]
impl RunPlan {
    /// The plan of a run of `definition` (JSON) on the built-ins: no slots, no metrics,
    /// no run inputs.
    pub(crate) fn for_tests(definition: &str, seed: u64) -> Arc<RunPlan> {
        use crate::runtime::definition::parse::{Format, parse_definition};
        let definition = parse_definition(definition, Format::Json).expect("parses");
        let registry = Arc::new(ComponentRegistry::with_builtins());
        let graph = Arc::new(
            crate::runtime::definition::validate::validate(&definition, &registry).expect("valid"),
        );
        Arc::new(RunPlan {
            run_id: "r".into(),
            queued: vec![false; graph.len()],
            graph,
            registry,
            inputs: Arc::new(JsonObject::new()),
            max_output_bytes: 1 << 20,
            cancel_grace: Duration::from_secs(1),
            seed,
            retry_lost_attempts: 1,
            metrics: false,
            gate_timeout: Some(Duration::from_secs(7 * 86_400)),
            metadata: Arc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_a_function_of_the_run_id() {
        assert_eq!(RunPlan::seed_for("run-1"), RunPlan::seed_for("run-1"));
        assert_ne!(RunPlan::seed_for("run-1"), RunPlan::seed_for("run-2"));
        // FNV-1a of the empty string is its offset basis.
        assert_eq!(RunPlan::seed_for(""), 0xcbf2_9ce4_8422_2325);
    }
}
