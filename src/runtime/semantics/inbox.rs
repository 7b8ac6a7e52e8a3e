//! The run inbox: signals sent to a run from outside (`POST /v1/runs/{id}/signals/{name}`,
//! `Handle::signal`), as the run core takes them. Each is journaled before it is
//! acknowledged and is idempotent by its id (one without an id gets `sig-<n>`, the run's
//! own count, so a replay names it the same).
//!
//! One name is handled today: ShipSec's `resolveHumanInput`, whose payload
//! ([`HumanInputResolution`]) answers a gate's request by `requestId`, or else the current
//! request of the gate `nodeRef`. An answer whose request does not exist yet is kept for it
//! ([`Kept`]): one naming a request id only ever answers that request, so a retried gate (a
//! new request id) never consumes an old answer. A name nothing handles is recorded as a
//! trace event and acknowledged, not refused (ShipSec sends `toolCallCompleted`, which
//! nothing handles). Pure: no clock, no I/O.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::NodeIx;
use crate::runtime::semantics::gate::{Resolution, ResolveError};

/// ShipSec's signal that answers a gate.
pub const RESOLVE_HUMAN_INPUT: &str = "resolveHumanInput";

/// A signal, as the run takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Its id: the sender's, or `sig-<n>` ([`signal_id`]).
    pub signal_id: Arc<str>,
    /// Its name.
    pub name: Arc<str>,
    /// What it carries.
    pub payload: Value,
}

/// The id of the `n`-th signal a run received (from 1), when its sender gave none.
pub fn signal_id(n: u64) -> String {
    format!("sig-{n}")
}

/// ShipSec's `HumanInputResolution`: the answer, and which request it is for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanInputResolution {
    /// The request it answers.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The gate whose current request it answers, when no `requestId` is given.
    #[serde(default)]
    pub node_ref: Option<String>,
    /// Approved or rejected.
    #[serde(default)]
    pub approved: Option<bool>,
    /// Who answered.
    #[serde(default)]
    pub responded_by: Option<String>,
    /// Why.
    #[serde(default)]
    pub response_note: Option<String>,
    /// The form's fields, or `{selection}`.
    #[serde(default)]
    pub response_data: Option<JsonObject>,
    /// When the sender says it answered (the engine keeps its own time).
    #[serde(default)]
    pub responded_at: Option<String>,
}

/// Which request an answer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressee {
    /// The request with this id.
    Request(String),
    /// The current request of the gate with this ref.
    Gate(String),
}

impl HumanInputResolution {
    /// Reads a `resolveHumanInput` payload: whom it answers (its `requestId`, else its
    /// `nodeRef`) and the answer.
    ///
    /// # Errors
    /// [`SignalError::BadPayload`] naming what is wrong.
    pub fn read(payload: &Value) -> Result<(Addressee, Resolution), SignalError> {
        let read: HumanInputResolution = serde_json::from_value(payload.clone())
            .map_err(|e| SignalError::BadPayload(format!("not a HumanInputResolution: {e}")))?;
        let to = match (read.request_id, read.node_ref) {
            (Some(id), _) => Addressee::Request(id),
            (None, Some(node_ref)) => Addressee::Gate(node_ref),
            (None, None) => {
                return Err(SignalError::BadPayload(
                    "a HumanInputResolution names its `requestId` or its gate's `nodeRef`".into(),
                ));
            }
        };
        let resolution = Resolution {
            approved: read.approved,
            response_data: read.response_data,
            responded_by: read.responded_by,
            response_note: read.response_note,
        };
        Ok((to, resolution))
    }
}

/// What a signal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signaled {
    /// It answered request `0`.
    Applied(Arc<str>),
    /// It answered what its request already had: nothing more happened.
    AlreadyAnswered(Arc<str>),
    /// Its wait does not exist yet: it is kept for it.
    Kept,
    /// Nothing handles its name: it is recorded as a trace event.
    Unhandled,
    /// The same signal id came before: nothing more happened.
    Duplicate,
}

/// What a signal did, as its sender is told once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalAck {
    /// Its id (the one given, or the one drawn for it).
    pub signal_id: Arc<str>,
    /// What it did.
    pub outcome: Signaled,
}

/// Why a signal was refused (it is journaled all the same, and refused again on replay).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Its payload is not what its name takes.
    #[error("bad signal payload: {0}")]
    BadPayload(String),
    /// It names a node the run does not have.
    #[error("the run has no node `{0}`")]
    UnknownNode(String),
    /// Its answer was refused.
    #[error(transparent)]
    Input(#[from] ResolveError),
}

/// What an answer waiting for its request is kept for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptFor {
    /// That request only.
    Request(Arc<str>),
    /// The next request of that gate.
    Node(NodeIx),
}

/// An answer that came before its request, kept for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// What it waits for.
    pub target: KeptFor,
    /// The answer.
    pub resolution: Resolution,
}

impl Kept {
    /// Whether it answers the request `request_id` of `node`.
    pub fn answers(&self, node: NodeIx, request_id: &str) -> bool {
        match &self.target {
            KeptFor::Request(id) => **id == *request_id,
            KeptFor::Node(n) => *n == node,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_resolution_payload_names_its_request_or_its_gate() {
        let (to, resolution) = HumanInputResolution::read(&json!({
            "requestId": "q1", "approved": false, "respondedBy": "ana",
            "respondedAt": "2026-12-07T10:00:00Z", "extra": 1
        }))
        .expect("read");
        assert_eq!(to, Addressee::Request("q1".into()));
        assert_eq!(resolution.approved, Some(false));
        let neither = HumanInputResolution::read(&json!({"approved": true}));
        assert!(matches!(neither, Err(SignalError::BadPayload(_))));
        let wrong = HumanInputResolution::read(&json!({"nodeRef": 3}));
        assert!(matches!(wrong, Err(SignalError::BadPayload(_))));
    }

    #[test]
    fn a_kept_answer_for_a_request_answers_only_that_request() {
        let kept = Kept {
            target: KeptFor::Request("q1".into()),
            resolution: Resolution::default(),
        };
        assert!(kept.answers(NodeIx(0), "q1"));
        assert!(!kept.answers(NodeIx(0), "q2"));
        let for_node = Kept {
            target: KeptFor::Node(NodeIx(1)),
            resolution: Resolution::default(),
        };
        assert!(for_node.answers(NodeIx(1), "q9"));
        assert!(!for_node.answers(NodeIx(0), "q9"));
    }
}
