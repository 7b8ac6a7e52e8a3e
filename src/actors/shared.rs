//! What every actor of one run shares, immutably: the graph, the run id, the inputs,
//! the components, the supervisor's address and the engine's slot limiter; and the
//! engine configuration they are built from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::ActorRef;
use serde::{Deserialize, Serialize};

use crate::messages::limiter::LimiterMsg;
use crate::messages::supervisor::SupervisorMsg;
use crate::runtime::definition::JsonObject;
use crate::runtime::graph::{Graph, NodeIx, NodeMode};
use crate::runtime::limits::DefinitionLimits;
use crate::runtime::registry::ComponentRegistry;
use crate::runtime::slots::{Needs, Rate, RunKey};

/// A rate limit in configuration form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained attempts per second (> 0).
    pub per_second: f64,
    /// Attempts that may start at once after a quiet period (≥ 1).
    pub burst: u32,
}

/// Per-component overrides of the component's own hints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentLimits {
    /// Most attempts of the component running at once, engine-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Rate limit of the component's attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
}

/// Engine settings: read from a YAML or JSON file and flags by the binary, passed down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Grace period a cancelled attempt gets before it is abandoned (SEMANTICS.md §6).
    #[serde(with = "secs", rename = "cancelGraceSeconds")]
    pub cancel_grace: Duration,
    /// Finished runs kept for `status` and `events` queries.
    pub retained_runs: usize,
    /// Most node records (result entries) kept across those runs: past it the oldest
    /// finished runs are forgotten first, so big runs cannot pile up without bound. The
    /// newest finished run is always kept.
    pub retained_nodes: usize,
    /// Most nodes running at once across all runs.
    pub max_concurrent_nodes: Option<u32>,
    /// Most runs in progress at once; a submission past it is refused, never queued.
    pub max_active_runs: usize,
    /// Per-component limits, by component id, overriding the components' hints.
    pub components: BTreeMap<String, ComponentLimits>,
    /// Limits on definitions and on each node's output.
    pub limits: DefinitionLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cancel_grace: Duration::from_secs(5),
            retained_runs: 10_000,
            retained_nodes: 250_000,
            max_concurrent_nodes: None,
            max_active_runs: 5_000,
            components: BTreeMap::new(),
            limits: DefinitionLimits::default(),
        }
    }
}

/// `Duration` as fractional seconds in configuration files.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

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
