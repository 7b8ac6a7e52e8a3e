//! The validated, index-based form of a workflow that the runtime schedules from.
//!
//! A [`Graph`] is built once by [`crate::runtime::definition::validate`] and then shared immutably
//! (one `Arc` per run). Nodes and edges are addressed by dense indices ([`NodeIx`],
//! [`EdgeIx`]); refs are strings only at the edges of the system (events, results), so
//! the scheduler never hashes a ref per message. Nothing here changes after validation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::definition::validate::Problem;
use crate::runtime::definition::{JsonObject, RunnerDef};

/// Dense index of a node in its [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeIx(pub u32);

/// Dense index of an edge in its [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EdgeIx(pub u32);

impl NodeIx {
    /// The index as a `usize`, for slices.
    #[inline]
    pub fn ix(self) -> usize {
        self.0 as usize
    }
}

impl EdgeIx {
    /// The index as a `usize`, for slices.
    #[inline]
    pub fn ix(self) -> usize {
        self.0 as usize
    }
}

/// The kind of an edge (docs/semantics.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EdgeKind {
    /// Satisfied when the source completes (on an active port).
    Success,
    /// Satisfied when the source fails.
    Error,
    /// Satisfied when the source completes, fails or is skipped.
    Always,
}

impl EdgeKind {
    /// The wire name (`success`, `error`, `always`).
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Success => "success",
            EdgeKind::Error => "error",
            EdgeKind::Always => "always",
        }
    }
}

/// A node's join strategy (docs/semantics.md §2), with the quorum resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Join {
    /// Every edge satisfied.
    All,
    /// One edge satisfied.
    Any,
    /// One edge satisfied, then withdraw from the other parents.
    First,
    /// `n` edges satisfied.
    Quorum(u32),
}

impl Join {
    /// The wire name (`all`, `any`, `first`, `quorum`).
    pub fn as_str(self) -> &'static str {
        match self {
            Join::All => "all",
            Join::Any => "any",
            Join::First => "first",
            Join::Quorum(_) => "quorum",
        }
    }
}

/// Policy for an unhandled failure (docs/semantics.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// Dependents resolve by the edge rules; the run ends FAILED.
    SkipDependents,
    /// The run fails at once and everything else is cancelled.
    FailRun,
}

/// Retry policy with defaults applied (docs/semantics.md §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all (≥ 1; ShipSec's `maxAttempts: 0`, unlimited, is `u32::MAX`).
    pub max_attempts: u32,
    /// Delay before attempt 2.
    pub initial_interval: Duration,
    /// Cap on any delay.
    pub maximum_interval: Duration,
    /// Growth factor.
    pub backoff_coefficient: f64,
    /// Error types never retried (besides `InputError` and `ValidationError`).
    pub non_retryable_error_types: Vec<String>,
    /// Random reduction fraction in 0..=1.
    pub jitter: f64,
    /// ShipSec's `errorTypePolicies`: per error type, whether it is retried and the delay
    /// before the next attempt (see [`crate::runtime::semantics::retry`] for precedence).
    pub error_types: BTreeMap<String, ErrorTypePolicy>,
}

/// What `retryPolicy.errorTypePolicies.<type>` says of one error type.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorTypePolicy {
    /// Retried or not, whatever the component said; `None` leaves it to the component.
    pub retryable: Option<bool>,
    /// The delay before the next attempt instead of the backoff; `None` keeps the backoff.
    pub delay: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_interval: Duration::from_secs(1),
            maximum_interval: Duration::from_secs(100),
            backoff_coefficient: 2.0,
            non_retryable_error_types: Vec::new(),
            jitter: 0.0,
            error_types: BTreeMap::new(),
        }
    }
}

/// How a node runs (ShipSec's `nodes.<ref>.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum NodeMode {
    /// Its component executes.
    #[default]
    Normal,
    /// Registered as a tool of the agent it feeds; its component does not execute and
    /// the node completes as [`crate::runtime::semantics::shipsec::tool_registered`] says.
    Tool,
}

/// One input mapping, resolved to a parent index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMapping {
    /// Input name on this node.
    pub target: String,
    /// The parent whose output is read.
    pub source: NodeIx,
    /// Key of the parent's output; `__self__` for all of it.
    pub source_handle: String,
}

/// The handle that maps a parent's whole output.
pub const SELF_HANDLE: &str = "__self__";

/// One node of a validated graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node's ref.
    pub node_ref: Arc<str>,
    /// Display label.
    pub label: Option<String>,
    /// Component id.
    pub component_id: Arc<str>,
    /// Component parameters.
    pub params: Arc<JsonObject>,
    /// Input values given up front.
    pub input_overrides: JsonObject,
    /// Inputs read from parents.
    pub input_mappings: Vec<InputMapping>,
    /// Join strategy.
    pub join: Join,
    /// Normal, or a tool registered for an agent.
    pub mode: NodeMode,
    /// Explicit failure policy; `None` falls back to the run's.
    pub on_failure: Option<FailurePolicy>,
    /// Per-attempt timeout.
    pub attempt_timeout: Option<Duration>,
    /// Longest QUEUED wait.
    pub queue_timeout: Option<Duration>,
    /// Budget for attempts plus backoff.
    pub total_timeout: Option<Duration>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Runner override.
    pub runner: Option<RunnerDef>,
    /// Concurrency group.
    pub group_id: Option<String>,
    /// Stream id (for events).
    pub stream_id: Option<String>,
    /// Declared group concurrency cap.
    pub max_concurrency: Option<u32>,
    /// Incoming edges, in definition order.
    pub incoming: Vec<EdgeIx>,
    /// Outgoing edges, in definition order.
    pub outgoing: Vec<EdgeIx>,
    /// Whether a failure of this node is handled (it has an outgoing `error` edge).
    pub handles_failure: bool,
}

/// One edge of a validated graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Edge id.
    pub id: Arc<str>,
    /// Source node.
    pub source: NodeIx,
    /// Target node.
    pub target: NodeIx,
    /// Port of the source this edge leaves from.
    pub source_handle: Option<String>,
    /// Port of the target it arrives at.
    pub target_handle: Option<String>,
    /// Edge kind.
    pub kind: EdgeKind,
}

/// Run-wide settings with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// Run deadline.
    pub timeout: Option<Duration>,
    /// Policy for unhandled failures of nodes without `onFailure`.
    pub failure_policy: FailurePolicy,
    /// Most nodes of this run running at once.
    pub max_parallelism: Option<u32>,
    /// Environment name.
    pub environment: Option<String>,
}

/// A validated workflow: immutable, index-based, shared by every actor of a run.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Workflow title.
    pub title: String,
    /// Nodes by [`NodeIx`], in definition order.
    pub nodes: Vec<Node>,
    /// Edges by [`EdgeIx`].
    pub edges: Vec<Edge>,
    /// The entrypoint node, if any.
    pub entrypoint: Option<NodeIx>,
    /// Run settings.
    pub settings: RunSettings,
    /// A topological order of all nodes.
    pub topo_order: Vec<NodeIx>,
    /// Disagreements between the definition's derived fields and its edges, which the
    /// edges decided (`dependsOn`, `dependencyCounts`); empty for a consistent definition.
    pub warnings: Vec<Problem>,
    by_ref: HashMap<Arc<str>, NodeIx>,
    /// Node indices sorted by ref: results keyed by ref are built from it in one pass.
    ref_order: Vec<NodeIx>,
}

impl Graph {
    pub(crate) fn new(
        title: String,
        nodes: Vec<Node>,
        edges: Vec<Edge>,
        entrypoint: Option<NodeIx>,
        settings: RunSettings,
        topo_order: Vec<NodeIx>,
    ) -> Graph {
        let by_ref = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node_ref.clone(), NodeIx(i as u32)))
            .collect();
        let mut ref_order: Vec<NodeIx> = (0..nodes.len() as u32).map(NodeIx).collect();
        ref_order.sort_unstable_by(|a, b| nodes[a.ix()].node_ref.cmp(&nodes[b.ix()].node_ref));
        Graph {
            title,
            nodes,
            edges,
            entrypoint,
            settings,
            topo_order,
            warnings: Vec::new(),
            by_ref,
            ref_order,
        }
    }

    /// Node indices in the order of their refs.
    pub fn ref_order(&self) -> &[NodeIx] {
        &self.ref_order
    }

    /// The node at `ix`.
    #[inline]
    pub fn node(&self, ix: NodeIx) -> &Node {
        &self.nodes[ix.ix()]
    }

    /// The edge at `ix`.
    #[inline]
    pub fn edge(&self, ix: EdgeIx) -> &Edge {
        &self.edges[ix.ix()]
    }

    /// Looks a node up by ref (boundary use only: events, results, tests).
    pub fn find(&self, node_ref: &str) -> Option<NodeIx> {
        self.by_ref.get(node_ref).copied()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The failure policy that applies to an unhandled failure of `ix`.
    pub fn failure_policy(&self, ix: NodeIx) -> FailurePolicy {
        self.node(ix)
            .on_failure
            .unwrap_or(self.settings.failure_policy)
    }

    /// Iterates over node indices.
    pub fn node_indices(&self) -> impl Iterator<Item = NodeIx> + '_ {
        (0..self.nodes.len() as u32).map(NodeIx)
    }
}
