//! Trace events (SEMANTICS.md §9): one per transition, dense `seq` per run.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::components::FailureInfo;

/// The transition an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// Join satisfied, waiting for a slot.
    Queued,
    /// An attempt started.
    Started,
    /// Progress reported by a component.
    Progress,
    /// An attempt failed and another follows.
    Retrying,
    /// Terminal: completed.
    Completed,
    /// Terminal: failed.
    Failed,
    /// Terminal: skipped.
    Skipped,
    /// Terminal: cancelled.
    Cancelled,
}

impl EventType {
    /// Whether the event ends its node.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventType::Completed | EventType::Failed | EventType::Skipped | EventType::Cancelled
        )
    }
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Normal progress.
    Info,
    /// Something did not run or will be retried.
    Warn,
    /// A failure.
    Error,
}

/// `{type, message}` of a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Error type.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Message.
    pub message: String,
}

/// Context carried by an event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// Attempt number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The node's join strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_strategy: Option<String>,
    /// Refs of the parents whose edges decided the join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<Vec<String>>,
    /// The failure a handler node handles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureInfo>,
    /// The node's stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// The node's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
}

/// One trace event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceEvent {
    /// `<runId>:<seq>`.
    pub id: String,
    /// The run.
    pub run_id: Arc<str>,
    /// The node's ref.
    pub node_id: Arc<str>,
    /// Dense, increasing per run, from 1.
    pub seq: u64,
    /// The transition.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Severity.
    pub level: Level,
    /// RFC 3339 time, milliseconds.
    pub timestamp: String,
    /// Human message (reasons of skips and cancellations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The failure, on FAILED and RETRYING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Data: `activatedPorts` on completion, `delayMs` on retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<EventMetadata>,
}
