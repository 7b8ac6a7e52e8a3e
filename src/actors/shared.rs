//! What every actor of one run shares, immutably: the graph, the run id, the inputs,
//! the components, the supervisor's address and the engine's slot limiter; and the
//! engine configuration they are built from.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::ActorRef;

use crate::messages::limiter::LimiterMsg;
use crate::messages::supervisor::SupervisorMsg;
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{Graph, NodeIx, NodeMode};
use crate::runtime::guardrails::config::EngineConfig;
use crate::runtime::guardrails::slots::{Needs, Rate, RunKey};

/// How a run reaches the engine's slot limiter, and what its nodes need from it.
#[derive(Debug)]
pub struct SlotLink {
    /// The limiter actor.
    pub limiter: ActorRef<LimiterMsg>,
    /// Ticket numbers, engine-wide.
    pub tickets: Arc<AtomicU64>,
    /// This run's key.
    pub run: RunKey,
    /// Needs of each node, by `NodeIx`; `None` where the node needs no slot at all.
    needs: Vec<Option<Needs>>,
}

impl SlotLink {
    /// Works out what each node of `graph` needs under `config`.
    pub fn new(
        limiter: ActorRef<LimiterMsg>,
        tickets: Arc<AtomicU64>,
        run: RunKey,
        graph: &Graph,
        registry: &ComponentRegistry,
        config: &EngineConfig,
    ) -> SlotLink {
        let mut group_caps: HashMap<&str, u32> = HashMap::new();
        for node in &graph.nodes {
            if let (Some(g), Some(cap)) = (&node.group_id, node.max_concurrency) {
                let entry = group_caps.entry(g.as_str()).or_insert(cap);
                *entry = (*entry).min(cap);
            }
        }
        let run_cap = graph.settings.max_parallelism;
        let needs = graph
            .nodes
            .iter()
            .map(|node| {
                let id = &*node.component_id;
                let meta = registry.meta(id);
                let limits = config.components.get(id);
                let component_cap = limits
                    .and_then(|l| l.max_concurrency)
                    .or_else(|| meta.and_then(|m| m.max_concurrency));
                let rate = limits
                    .and_then(|l| l.rate_limit)
                    .map(|r| Rate {
                        per_second: r.per_second,
                        burst: r.burst,
                    })
                    .or_else(|| {
                        meta.and_then(|m| m.rate_limit).map(|r| Rate {
                            per_second: r.per_second,
                            burst: r.burst,
                        })
                    });
                let group = node
                    .group_id
                    .as_deref()
                    .and_then(|g| group_caps.get(g).map(|cap| (Arc::from(g), *cap)));
                // A tool-mode node runs no component: it holds no slot.
                let trivial = node.mode == NodeMode::Tool
                    || config.max_concurrent_nodes.is_none()
                        && run_cap.is_none()
                        && component_cap.is_none()
                        && group.is_none()
                        && rate.is_none();
                (!trivial).then(|| Needs {
                    run: (run, run_cap),
                    component: (node.component_id.clone(), component_cap),
                    group,
                    rate,
                })
            })
            .collect();
        SlotLink {
            limiter,
            tickets,
            run,
            needs,
        }
    }

    /// What `node` needs, or `None` when it may start at once.
    pub fn needs(&self, node: NodeIx) -> Option<&Needs> {
        self.needs[node.ix()].as_ref()
    }

    /// A fresh ticket number.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
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
    /// The engine's slot limiter; `None` when the run was started without one.
    pub slots: Option<SlotLink>,
    /// Largest output a node may produce, in bytes of JSON.
    pub max_output_bytes: usize,
    /// The run's span (disabled when not tracing); node spans are its children.
    pub span: tracing::Span,
    /// The engine's metric instruments.
    pub metrics: Arc<crate::runtime::telemetry::Metrics>,
}
