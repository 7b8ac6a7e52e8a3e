//! What each node of a run needs before an attempt may start: the run's
//! `maxParallelism`, its component's cap and rate limit (the engine configuration's entry
//! for the component, else the component's own hints), and its group's cap — or nothing
//! at all, when no cap or limit applies and the node starts at once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::graph::{Graph, Node, NodeMode};
use crate::runtime::guardrails::config::EngineConfig;
use crate::runtime::guardrails::slots::{Needs, Rate, RunKey};

/// The needs of every node of `graph` (by `NodeIx`), the run being `run` in the book.
pub fn node_needs(
    graph: &Graph,
    registry: &ComponentRegistry,
    config: &EngineConfig,
    run: RunKey,
) -> Vec<Option<Needs>> {
    let groups = group_caps(graph);
    let run_cap = graph.settings.max_parallelism;
    graph
        .nodes
        .iter()
        .map(|node| {
            let needs = Needs {
                run: (run, run_cap),
                component: (
                    node.component_id.clone(),
                    component_cap(node, registry, config),
                ),
                group: node
                    .group_id
                    .as_deref()
                    .and_then(|g| groups.get(g).map(|cap| (Arc::from(g), *cap))),
                rate: rate_of(node, registry, config),
                pool: registry
                    .remote_queue(node)
                    .map(|queue| remote_pool(&node.component_id, queue)),
            };
            // A tool-mode node runs no component: it holds no slot. A remote one always
            // waits for a worker's slot.
            let free = node.mode == NodeMode::Tool
                || config.max_concurrent_nodes.is_none()
                    && needs.pool.is_none()
                    && unlimited(&needs);
            (!free).then_some(needs)
        })
        .collect()
}

/// The remote pool of a component's attempts on workers serving `queue`.
pub fn remote_pool(component_id: &str, queue: &str) -> Arc<str> {
    format!("{component_id}@{queue}").into()
}

/// Whether nothing caps or limits `needs` (the engine cap aside).
fn unlimited(needs: &Needs) -> bool {
    needs.run.1.is_none()
        && needs.component.1.is_none()
        && needs.group.is_none()
        && needs.rate.is_none()
}

/// Each group's cap: the smallest `maxConcurrency` declared among its nodes.
fn group_caps(graph: &Graph) -> HashMap<&str, u32> {
    let mut caps: HashMap<&str, u32> = HashMap::new();
    for node in &graph.nodes {
        if let (Some(g), Some(cap)) = (&node.group_id, node.max_concurrency) {
            let entry = caps.entry(g.as_str()).or_insert(cap);
            *entry = (*entry).min(cap);
        }
    }
    caps
}

/// The component's cap: the configuration's, else the component's hint.
fn component_cap(node: &Node, registry: &ComponentRegistry, config: &EngineConfig) -> Option<u32> {
    let id = &*node.component_id;
    config
        .components
        .get(id)
        .and_then(|l| l.max_concurrency)
        .or_else(|| registry.meta(id).and_then(|m| m.max_concurrency))
}

/// The component's rate limit: the configuration's, else the component's hint.
fn rate_of(node: &Node, registry: &ComponentRegistry, config: &EngineConfig) -> Option<Rate> {
    let id = &*node.component_id;
    let configured = config.components.get(id).and_then(|l| l.rate_limit);
    match configured {
        Some(r) => Some(Rate {
            per_second: r.per_second,
            burst: r.burst,
        }),
        None => registry.meta(id).and_then(|m| m.rate_limit).map(|r| Rate {
            per_second: r.per_second,
            burst: r.burst,
        }),
    }
}
