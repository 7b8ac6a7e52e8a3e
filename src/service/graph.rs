//! The graph of a run as the run view draws it (`GET /v1/runs/{id}/graph`, and the data
//! of an HTML report): nodes with their join, layer and place in a topological order;
//! edges with their kind. Taken from the validated graph, so it is what the engine ran,
//! derived fields already reconciled with the edges.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::runtime::definition::JsonObject;

use crate::runtime::definition::graph::{Graph, Join, NodeMode};

/// The nodes and edges of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunGraph {
    /// Workflow title.
    pub title: String,
    /// Nodes in a topological order (parents before children).
    pub nodes: Vec<GraphNode>,
    /// Edges, in definition order.
    pub edges: Vec<GraphEdge>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphNode {
    /// The node's ref.
    #[serde(rename = "ref")]
    pub node_ref: String,
    /// Display label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Component id.
    pub component_id: String,
    /// Join strategy: `all`, `any`, `first` or `quorum`.
    pub join: String,
    /// Edges a `quorum` join waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// Incoming edges.
    pub parents: u32,
    /// Longest path from a node without parents (0 for those).
    pub layer: u32,
    /// Concurrency group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Registered as an agent's tool (its component does not execute).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tool: bool,
    /// Component parameters.
    #[schema(value_type = Object)]
    pub params: Arc<JsonObject>,
    /// Input values given up front.
    #[schema(value_type = Object)]
    pub input_overrides: JsonObject,
    /// Inputs read from parents' outputs.
    pub inputs: Vec<GraphInput>,
}

/// An input read from a parent's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphInput {
    /// The input's name.
    pub name: String,
    /// The parent read.
    pub source_ref: String,
    /// The key of its output (`__self__`: all of it).
    pub source_handle: String,
}

/// One edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphEdge {
    /// Edge id.
    pub id: String,
    /// Source ref.
    pub source: String,
    /// Target ref.
    pub target: String,
    /// `success`, `error` or `always`.
    pub kind: String,
    /// The port of the source it leaves from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_handle: Option<String>,
}

impl RunGraph {
    /// The view's graph of `graph`.
    pub fn of(graph: &Graph) -> RunGraph {
        let mut layer = vec![0u32; graph.nodes.len()];
        for &ix in &graph.topo_order {
            let node = graph.node(ix);
            layer[ix.ix()] = node
                .incoming
                .iter()
                .map(|&e| layer[graph.edge(e).source.ix()] + 1)
                .max()
                .unwrap_or(0);
        }
        let nodes = graph
            .topo_order
            .iter()
            .map(|&ix| {
                let node = graph.node(ix);
                GraphNode {
                    node_ref: node.node_ref.to_string(),
                    label: node.label.clone(),
                    component_id: node.component_id.to_string(),
                    join: node.join.as_str().to_owned(),
                    quorum: match node.join {
                        Join::Quorum(n) => Some(n),
                        _ => None,
                    },
                    parents: node.incoming.len() as u32,
                    layer: layer[ix.ix()],
                    group_id: node.group_id.clone(),
                    max_attempts: node.retry.max_attempts,
                    tool: node.mode == NodeMode::Tool,
                    params: node.params.clone(),
                    input_overrides: node.input_overrides.clone(),
                    inputs: node
                        .input_mappings
                        .iter()
                        .map(|m| GraphInput {
                            name: m.target.clone(),
                            source_ref: graph.node(m.source).node_ref.to_string(),
                            source_handle: m.source_handle.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        let edges = graph
            .edges
            .iter()
            .map(|edge| GraphEdge {
                id: edge.id.to_string(),
                source: graph.node(edge.source).node_ref.to_string(),
                target: graph.node(edge.target).node_ref.to_string(),
                kind: edge.kind.as_str().to_owned(),
                source_handle: edge.source_handle.clone(),
            })
            .collect();
        RunGraph {
            title: graph.title.clone(),
            nodes,
            edges,
        }
    }
}
