//! The wire form of a workflow: ShipSec Studio's compiled `WorkflowDefinition`.
//!
//! These types mirror the JSON the backend's compiler emits (camelCase), field for field,
//! plus the engine's optional additions (`quorum`, `onFailure`, timeouts, `failurePolicy`,
//! `maxParallelism`, edge kind `always`, `runner`). Unknown fields are refused so that a typo
//! never silently changes a run. Everything here is plain data: no checks beyond the shape
//! (those live in [`crate::runtime::definition::validate`]) and no behaviour. Fields the engine does
//! not interpret yet are kept so that a definition round-trips unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object, as carried by `params`, `inputOverrides` and outputs.
pub type JsonObject = Map<String, Value>;

/// `v`'s object, in unit tests written with `json!`.
#[cfg(test)]
pub(crate) fn object(v: Value) -> JsonObject {
    let Value::Object(o) = v else {
        panic!("not an object: {v}")
    };
    o
}

/// A compiled workflow, as a backend submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowDefinition {
    /// Format version: 1 (edges derived from `dependsOn`/`inputMappings`) or 2.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Human title of the workflow.
    pub title: String,
    /// Optional longer description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The node that receives the run's inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<EntrypointRef>,
    /// Per-node scheduling metadata, keyed by ref. Entries may be omitted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeMetadata>,
    /// The DAG's edges. Absent in version 1 definitions, which derive them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<EdgeDef>>,
    /// Number of incoming edges per node; derived when absent, checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_counts: Option<BTreeMap<String, u64>>,
    /// The actions (one per node).
    pub actions: Vec<ActionDef>,
    /// Run-wide configuration.
    #[serde(default)]
    pub config: RunConfigDef,
}

fn default_version() -> u32 {
    2
}

/// `{ "ref": "..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrypointRef {
    /// The entrypoint node's ref.
    #[serde(rename = "ref")]
    pub node_ref: String,
}

/// How a node with several incoming edges decides to run (docs/semantics.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JoinStrategyDef {
    /// Run when every edge is satisfied.
    #[default]
    All,
    /// Run at the first satisfied edge.
    Any,
    /// Run at the first satisfied edge and withdraw from the other parents.
    First,
    /// Run when `quorum` edges are satisfied.
    Quorum,
}

/// What an unhandled failure of a node does (docs/semantics.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnFailureDef {
    /// Cancel the whole run.
    FailRun,
    /// Skip what depends on the node; let independent branches finish.
    SkipDependents,
}

/// Run-wide failure policy (`config.failurePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailurePolicyDef {
    /// Unhandled failures skip their dependents (the default).
    #[default]
    Continue,
    /// Unhandled failures cancel the run.
    FailFast,
}

/// ShipSec's node mode (`normal` or `tool`: registered as an agent's tool, not executed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeModeDef {
    /// An ordinary node.
    #[default]
    Normal,
    /// A node exposed as a tool to an agent node.
    Tool,
}

/// Tool binding configuration; kept, not interpreted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolConfigDef {
    /// Inputs bound by the workflow.
    #[serde(default)]
    pub bound_input_ids: Vec<String>,
    /// Inputs exposed to the calling agent.
    #[serde(default)]
    pub exposed_input_ids: Vec<String>,
}

/// Scheduling metadata of one node (`nodes.<ref>`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeMetadata {
    /// Must equal the key it is stored under.
    #[serde(rename = "ref")]
    pub node_ref: String,
    /// Display label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Join strategy; `all` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_strategy: Option<JoinStrategyDef>,
    /// Required number of satisfied edges for `quorum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<f64>,
    /// Concurrency cap shared by the node's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<f64>,
    /// Group sharing a concurrency cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Stream the node's events belong to (UI lanes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// Policy for an unhandled failure of this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailureDef>,
    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Longest time the node may wait QUEUED for a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout_seconds: Option<f64>,
    /// Budget for all attempts plus backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_timeout_seconds: Option<f64>,
    /// ShipSec node mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<NodeModeDef>,
    /// ShipSec tool configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfigDef>,
    /// Tool nodes connected to an agent node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_tool_node_ids: Option<Vec<String>>,
}

/// Which outcome of its source an edge follows (docs/semantics.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EdgeKindDef {
    /// Followed when the source completes.
    #[default]
    Success,
    /// Followed when the source fails.
    Error,
    /// Followed when the source completes, fails or is skipped.
    Always,
}

/// One edge of the DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeDef {
    /// Edge id; derived (`source->target`, numbered on repeats) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Source node ref.
    pub source_ref: String,
    /// Target node ref.
    pub target_ref: String,
    /// Output port of the source this edge leaves from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_handle: Option<String>,
    /// Input port of the target this edge arrives at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_handle: Option<String>,
    /// Edge kind; `success` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EdgeKindDef>,
}

/// `{sourceRef, sourceHandle}`: where an input's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputMappingDef {
    /// The parent node.
    pub source_ref: String,
    /// Key of the parent's output (`__self__` for the whole output).
    pub source_handle: String,
}

/// Per-error-type retry override (ShipSec); kept, not interpreted yet.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorTypePolicyDef {
    /// Whether this error type is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Delay before the retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_ms: Option<f64>,
}

/// Retry policy of an action (docs/semantics.md §7).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicyDef {
    /// Attempts in all, first included (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<f64>,
    /// Delay before the second attempt (default 1 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_interval_seconds: Option<f64>,
    /// Cap on the delay (default 100 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_interval_seconds: Option<f64>,
    /// Growth factor of the delay (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_coefficient: Option<f64>,
    /// Error types that are never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_retryable_error_types: Option<Vec<String>>,
    /// ShipSec's per-type overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type_policies: Option<BTreeMap<String, ErrorTypePolicyDef>>,
    /// Random reduction of each delay, a fraction in 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

/// Where a node's component executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunnerKindDef {
    /// A task in this process.
    Inline,
    /// A child process.
    Process,
    /// A worker on another host.
    Remote,
}

/// `runner: {kind, ...}`; extra fields are runner options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerDef {
    /// Runner kind.
    pub kind: RunnerKindDef,
    /// Runner-specific options, kept as given.
    #[serde(flatten)]
    pub options: JsonObject,
}

/// One action: the work of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionDef {
    /// Unique node ref.
    #[serde(rename = "ref")]
    pub node_ref: String,
    /// Component that does the work.
    pub component_id: String,
    /// Component parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: JsonObject,
    /// Input values given up front; mappings win over them.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub input_overrides: JsonObject,
    /// Parent refs; derived from edges when absent, checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// Inputs taken from parents' outputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_mappings: BTreeMap<String, InputMappingDef>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicyDef>,
    /// Runner override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerDef>,
}

/// `config`: run-wide settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunConfigDef {
    /// Environment name (ShipSec); kept, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Run deadline; 0 or absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Default policy for unhandled failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicyDef>,
    /// Most nodes of this run running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallelism: Option<f64>,
}
