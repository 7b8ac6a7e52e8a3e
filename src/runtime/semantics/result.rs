//! The run result (docs/api.md, `GET /v1/runs/{id}/result`), the run snapshot served while
//! it runs, and the run listing.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::runtime::components::FailureInfo;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::limits::json_len_within;
use crate::runtime::definition::validate::Problem;
use crate::runtime::semantics::event::ErrorInfo;
use crate::runtime::semantics::metadata::Metadata;
use crate::runtime::semantics::outcome::{NodeStatus, RunStatus};
use crate::runtime::timestamp::Timestamp;

/// What the result says about one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Current or final status.
    pub status: NodeStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the node ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Refs of the parents whose edges decided the join (`any`/`first`/`quorum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub triggered_by: Option<Vec<Arc<str>>>,
    /// Ports activated on completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_ports: Option<Vec<String>>,
    /// The failure this node handled (reached through an `error` edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureInfo>,
    /// Its own error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Why it was skipped or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The remote worker that took its latest attempt (none for attempts run in-process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub worker_id: Option<Arc<str>>,
}

/// The result of a run, as `shipsec run --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// Run id.
    pub run_id: String,
    /// Workflow title.
    pub title: String,
    /// Final status.
    pub status: RunStatus,
    /// `status == COMPLETED`.
    pub success: bool,
    /// Why the run did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Start time.
    pub started_at: Timestamp,
    /// End time.
    pub completed_at: Timestamp,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Output of each COMPLETED node, by ref.
    #[schema(value_type = BTreeMap<String, Object>)]
    pub outputs: BTreeMap<Arc<str>, Arc<JsonObject>>,
    /// Every node, by ref.
    #[schema(value_type = BTreeMap<String, NodeRecord>)]
    pub nodes: BTreeMap<Arc<str>, NodeRecord>,
    /// Where the definition's `dependsOn` or `dependencyCounts` disagreed with its edges
    /// (the edges decided), with paths; absent when they agree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Problem>,
    /// The run's metadata, as submitted; absent when it has none.
    #[serde(default, skip_serializing_if = "is_empty")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Arc<Metadata>,
}

fn is_empty(metadata: &Arc<Metadata>) -> bool {
    metadata.is_empty()
}

/// The state of a run at one moment (`handle.status`, `GET /v1/runs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSnapshot {
    /// Run id.
    pub run_id: String,
    /// Workflow title.
    pub title: String,
    /// Current status.
    pub status: RunStatus,
    /// When the run started.
    pub started_at: Timestamp,
    /// When it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Wall time in milliseconds, once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Nodes ended, of all.
    pub progress: Progress,
    /// The OpenTelemetry trace of the run (32 hex digits), when it has one: the caller's
    /// (`traceparent`) or the one its run span began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Nodes by status.
    #[schema(value_type = BTreeMap<String, usize>)]
    pub counts: BTreeMap<NodeStatus, usize>,
    /// Refs of the nodes running now.
    pub running: Vec<String>,
    /// Every node, by ref.
    #[schema(value_type = BTreeMap<String, NodeRecord>)]
    pub nodes: BTreeMap<Arc<str>, NodeRecord>,
    /// The run's metadata, as submitted; absent when it has none.
    #[serde(default, skip_serializing_if = "is_empty")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Arc<Metadata>,
}

/// How far a run is: nodes ended, of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Nodes in a terminal status.
    pub completed: usize,
    /// Nodes in the run.
    pub total: usize,
}

impl RunSnapshot {
    /// The snapshot of an ended run, from its result.
    pub fn of_result(result: &RunResult, trace_id: Option<String>) -> RunSnapshot {
        let mut counts = BTreeMap::new();
        for record in result.nodes.values() {
            *counts.entry(record.status).or_insert(0) += 1;
        }
        RunSnapshot {
            metadata: result.metadata.clone(),
            run_id: result.run_id.clone(),
            title: result.title.clone(),
            status: result.status,
            started_at: result.started_at,
            completed_at: Some(result.completed_at),
            duration_ms: Some(result.duration_ms),
            progress: Progress {
                completed: result.nodes.len(),
                total: result.nodes.len(),
            },
            trace_id,
            counts,
            running: Vec::new(),
            nodes: result.nodes.clone(),
        }
    }
}

/// Which runs a listing asks for ([`crate::Handle::list`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Most runs in the page (at least 1).
    pub limit: usize,
    /// Runs older than this position (a page's [`RunPage::next`]).
    pub before: Option<u64>,
    /// Only runs whose metadata has this key set to this value.
    pub metadata: Option<(String, String)>,
}

/// One run of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Workflow title.
    pub title: String,
    /// Status now (a live run is RUNNING).
    pub status: RunStatus,
    /// When it was accepted.
    pub started_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// The run's metadata, as submitted; absent when it has none.
    #[serde(default, skip_serializing_if = "is_empty")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Arc<Metadata>,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<RunSummary>,
    /// The position to ask for the next page from, when there are older runs.
    pub next: Option<u64>,
}

impl RunSummary {
    /// What listings show of a finished run.
    pub fn of_result(result: &RunResult) -> RunSummary {
        RunSummary {
            run_id: result.run_id.clone(),
            title: result.title.clone(),
            status: result.status,
            started_at: result.started_at,
            completed_at: Some(result.completed_at),
            metadata: result.metadata.clone(),
        }
    }
}

/// The finished runs an engine keeps in memory for queries ([`crate::Handle::retained`]);
/// those the journal holds beyond them are read back when asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetainedStats {
    /// Finished runs held whole in memory.
    pub runs: usize,
    /// Their node records.
    pub nodes: usize,
    /// What their results and traces take as JSON.
    pub bytes: usize,
    /// Finished runs the journal holds that are known by their summary only.
    pub stored: usize,
}

/// What a finished run's result (inputs and outputs included) and trace take as JSON:
/// what the engine counts against `retainedBytes`.
pub fn retained_bytes(
    result: &RunResult,
    events: &[crate::runtime::semantics::event::TraceEvent],
) -> usize {
    // Without a limit the count always completes.
    let len = |bytes: Option<usize>| bytes.unwrap_or_default();
    len(json_len_within(result, usize::MAX)) + len(json_len_within(events, usize::MAX))
}
