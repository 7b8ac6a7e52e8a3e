//! Trace events (docs/semantics.md §9): one per transition, dense `seq` per run.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::runtime::components::FailureInfo;
use crate::runtime::timestamp::Timestamp;

/// The transition an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A gate's attempt asked a person for input; the node waits (`data`: `{requestId,
    /// inputType, title, description, timeoutAt}`).
    AwaitingInput,
    /// Terminal: completed.
    Completed,
    /// Terminal: failed.
    Failed,
    /// Terminal: skipped.
    Skipped,
    /// Terminal: cancelled.
    Cancelled,
    /// The run's own event (its `nodeId` is empty): the engine restarted and resumed the
    /// run from its journal; `data.lostAttempts` lists the attempts that were running.
    Resumed,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    /// Error type.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Message.
    pub message: String,
    /// Structured details, when the engine has them (an expired gate's `TimeoutError`:
    /// `{nodeRef, requestId, timeoutMs}`, as ShipSec gives them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Box<serde_json::Value>>,
}

/// Context carried by an event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// Attempt number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The node's join strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub join_strategy: Option<Cow<'static, str>>,
    /// Refs of the parents whose edges decided the join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub triggered_by: Option<Vec<Arc<str>>>,
    /// The failure a handler node handles (boxed: rare, and events are many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<FailureInfo>)]
    pub failure: Option<Box<FailureInfo>>,
    /// The node's stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// The node's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// The remote worker that ran the attempt, on the attempt's end (RETRYING, COMPLETED,
    /// FAILED, CANCELLED) when a worker took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub worker_id: Option<Arc<str>>,
}

/// One trace event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceEvent {
    /// `<runId>:<seq>`.
    #[schema(value_type = String)]
    pub id: EventId,
    /// The run.
    #[schema(value_type = String)]
    pub run_id: Arc<str>,
    /// The node's ref (empty for the run's own events).
    #[schema(value_type = String)]
    pub node_id: Arc<str>,
    /// Dense, increasing per run, from 1.
    pub seq: u64,
    /// The transition.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Severity.
    pub level: Level,
    /// RFC 3339 time, milliseconds.
    pub timestamp: Timestamp,
    /// Human message (reasons of skips and cancellations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The failure, on FAILED and RETRYING (boxed, like the other rare parts: a run
    /// keeps two events per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ErrorInfo>)]
    pub error: Option<Box<ErrorInfo>>,
    /// Data: `activatedPorts` on completion, `delayMs` on retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Box<Value>>,
    /// Context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<EventMetadata>,
}

/// An event's id, `<runId>:<seq>`: unique across runs, written out only when serialised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The run.
    pub run_id: Arc<str>,
    /// The event's `seq` in it.
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.run_id, self.seq)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventId, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = text
            .rsplit_once(':')
            .and_then(|(run, seq)| Some((run, seq.parse().ok()?)));
        match parsed {
            Some((run, seq)) if !run.is_empty() => Ok(EventId {
                run_id: run.into(),
                seq,
            }),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is not an event id (`<runId>:<seq>`)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_is_run_colon_seq_and_reads_back() {
        let id = EventId {
            run_id: "run:with:colons".into(),
            seq: 42,
        };
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"run:with:colons:42\"");
        assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
        let err = serde_json::from_str::<EventId>("\"no-seq\"").unwrap_err();
        assert!(err.to_string().contains("`no-seq`"), "{err}");
    }
}
