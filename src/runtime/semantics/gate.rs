//! Human-input gates, as ShipSec Studio shapes them (`docs/shipsec.md`, "Human-input
//! gates"): what turns a node into a gate, what its request holds, how a resolution is
//! checked and what the node completes with. Pure: the request's id and every instant come
//! in as arguments.
//!
//! - A component's output `{pending: true, inputType, title, description?, timeoutAt?,
//!   contextData?, inputSchema?}` makes its node a gate ([`PendingInput::from_output`]).
//! - The gate's request ([`InputRequest`]) is `pending` until it is resolved, expires at its
//!   deadline, or is cancelled with its run or node; it never goes back to `pending`.
//! - Resolving twice with the same answer is a duplicate (no second effect); a different
//!   answer is refused ([`ResolveError::AlreadyResolved`]), as is any answer to a request
//!   that expired or was cancelled ([`ResolveError::NotPending`]).
//! - Resolved, the node completes with `{approved, rejected, respondedBy, responseNote,
//!   respondedAt, requestId, ...responseData}` on ShipSec's ports ([`resolved_output`]);
//!   expired, it fails with a non-retryable `TimeoutError` ([`timeout_error`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::runtime::components::{ComponentError, ComponentOutput, ComponentResult, TIMEOUT_ERROR};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::validate::Problem;
use crate::runtime::semantics::time::Time;
use crate::runtime::timestamp::Timestamp;

/// The kind of input a gate asks for (ShipSec's `inputType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Approve or reject.
    Approval,
    /// Fill a form described by a JSON schema.
    Form,
    /// Pick one or more of a list of options.
    Selection,
    /// Review something, then approve or reject.
    Review,
    /// Acknowledge something.
    Acknowledge,
}

impl InputType {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Approval => "approval",
            InputType::Form => "form",
            InputType::Selection => "selection",
            InputType::Review => "review",
            InputType::Acknowledge => "acknowledge",
        }
    }
}

/// What a gate asks for: the pending marker a component returned, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingInput {
    /// The kind of input.
    pub input_type: InputType,
    /// What the person is asked.
    pub title: String,
    /// More about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the component set a deadline itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_at: Option<Timestamp>,
    /// How long the request may wait, counted by the engine from when it is made (the
    /// built-in gates' `timeout` param, `30m`, `4h`, `7d`; `0m`: no limit): what a
    /// component that reads no clock says instead of `timeoutAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// What the person needs to decide (findings, a diff, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_data: Option<Value>,
    /// What a resolution's `responseData` must satisfy: a JSON schema for forms, `{options,
    /// multiple}` for selections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
}

/// A pending marker that is not one: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a pending-input output has a bad `{field}`: {problem}")]
pub struct MarkerError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl PendingInput {
    /// `None` when `output` is not a pending marker (`pending` is not `true`); else the
    /// request it describes, or what is wrong with it.
    pub fn from_output(output: &JsonObject) -> Option<Result<PendingInput, MarkerError>> {
        if output.get("pending") != Some(&Value::Bool(true)) {
            return None;
        }
        Some(PendingInput::read(output))
    }

    fn read(output: &JsonObject) -> Result<PendingInput, MarkerError> {
        let input_type = match output.get("inputType") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| MarkerError {
                field: "inputType",
                problem: format!(
                    "expected approval, form, selection, review or acknowledge, got {v}"
                ),
            })?,
            None => return Err(missing("inputType")),
        };
        let title = match output.get("title") {
            Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
            Some(v) => return Err(bad("title", "a non-empty string", v)),
            None => return Err(missing("title")),
        };
        let description = match output.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(v) => return Err(bad("description", "a string", v)),
        };
        let timeout_at = match output.get("timeoutAt") {
            None | Some(Value::Null) => None,
            Some(Value::String(at)) => Some(
                humantime::parse_rfc3339_weak(at)
                    .map(Timestamp::from)
                    .map_err(|e| MarkerError {
                        field: "timeoutAt",
                        problem: format!("not an RFC 3339 instant ({e}): {at}"),
                    })?,
            ),
            Some(v) => return Err(bad("timeoutAt", "an RFC 3339 string", v)),
        };
        let timeout = match output.get("timeout") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => {
                parse_timeout(t).map_err(|e| MarkerError {
                    field: "timeout",
                    problem: e.to_string(),
                })?;
                Some(t.clone())
            }
            Some(v) => return Err(bad("timeout", "a string such as `30m`", v)),
        };
        let context_data = output.get("contextData").filter(|v| !v.is_null()).cloned();
        let input_schema = match output.get("inputSchema") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(v) => return Err(bad("inputSchema", "an object", v)),
        };
        // What an answer is checked against must itself be a schema, or no answer could
        // ever be taken.
        if let Some(schema) = &input_schema
            && let Some(Err(problem)) = response_schema(input_type, schema).map(|s| compile(&s))
        {
            return Err(MarkerError {
                field: "inputSchema",
                problem,
            });
        }
        Ok(PendingInput {
            input_type,
            title,
            description,
            timeout_at,
            timeout,
            context_data,
            input_schema,
        })
    }

    /// Its own `timeout`, when it has one (`Some(ZERO)`: no limit).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.as_deref().and_then(|t| parse_timeout(t).ok())
    }
}

fn missing(field: &'static str) -> MarkerError {
    MarkerError {
        field,
        problem: "missing".into(),
    }
}

fn bad(field: &'static str, expected: &str, got: &Value) -> MarkerError {
    MarkerError {
        field,
        problem: format!("expected {expected}, got {got}"),
    }
}

/// A `timeout` param that is not `<n>m`, `<n>h` or `<n>d`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`timeout` must be a whole number of minutes, hours or days (`30m`, `4h`, `7d`), got `{0}`"
)]
pub struct BadTimeout(pub String);

/// ShipSec's gate `timeout` param (`^(\d+)(m|h|d)$`) as a duration; `0m` is none.
///
/// # Errors
/// [`BadTimeout`] for anything else, or a duration past what an instant can hold.
pub fn parse_timeout(text: &str) -> Result<Duration, BadTimeout> {
    let bad = || BadTimeout(text.to_owned());
    let unit_at = text.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(unit_at);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3_600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| *s <= 100 * 365 * 86_400)
    .ok_or_else(bad)?;
    Ok(Duration::from_secs(secs))
}

/// `template` with each `{{name}}` (or `{{a.b}}`, a path into an object) replaced by the
/// value it names in `inputs`, else in `params`: a string as itself, anything else as its
/// JSON. A name found in neither stays as written, so a missing value shows.
pub fn interpolate(template: &str, params: &JsonObject, inputs: &JsonObject) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = after[..close].trim();
        match lookup(inputs, name).or_else(|| lookup(params, name)) {
            Some(Value::String(s)) => out.push_str(s),
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

fn lookup<'a>(object: &'a JsonObject, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = object.get(parts.next()?)?;
    for part in parts {
        value = match value {
            Value::Object(o) => o.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!value.is_null()).then_some(value)
}

/// The JSON schema an answer's `responseData` must satisfy, when the request has one: a
/// form's own schema; for a selection, `selection` one of the options' values (a list of
/// them, at least one and each once, when `multiple`).
fn response_schema(input_type: InputType, schema: &Value) -> Option<Value> {
    match input_type {
        InputType::Form => Some(schema.clone()),
        InputType::Selection => {
            let values: Vec<Value> = schema
                .get("options")?
                .as_array()?
                .iter()
                .map(|option| match option {
                    Value::Object(o) => o.get("value").cloned().unwrap_or(Value::Null),
                    other => other.clone(),
                })
                .collect();
            let one = serde_json::json!({ "enum": values });
            let selection = if schema.get("multiple") == Some(&Value::Bool(true)) {
                serde_json::json!({
                    "type": "array", "items": one, "minItems": 1, "uniqueItems": true
                })
            } else {
                one
            };
            Some(serde_json::json!({
                "type": "object",
                "required": ["selection"],
                "properties": { "selection": selection }
            }))
        }
        _ => None,
    }
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| format!("not a usable JSON schema: {e}"))
}

/// Whether `resolution` answers what `input` asks: its `responseData` against the form's
/// schema or the selection's options (a rejection carries no data to check). Each problem
/// names where it is, from `responseData`.
///
/// # Errors
/// The problems, in the order the schema finds them.
pub fn check_response(input: &PendingInput, resolution: &Resolution) -> Result<(), Vec<Problem>> {
    if !resolution.approves() {
        return Ok(());
    }
    let Some(schema) = input
        .input_schema
        .as_ref()
        .and_then(|schema| response_schema(input.input_type, schema))
    else {
        return Ok(());
    };
    let validator = compile(&schema).map_err(|message| {
        vec![Problem {
            path: "inputSchema".into(),
            message,
        }]
    })?;
    let data = Value::Object(resolution.response_data.clone().unwrap_or_default());
    let problems: Vec<Problem> = validator
        .iter_errors(&data)
        .map(|e| Problem {
            path: format!("responseData{}", e.instance_path()),
            message: e.to_string(),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// A person's answer to a request (ShipSec's `HumanInputResolution`, less what the engine
/// knows itself): the body of `POST /v1/inputs/{requestId}/resolve`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"approved": true, "respondedBy": "ana@example.com", "responseNote": "patch window agreed"}))]
pub struct Resolution {
    /// Approved (`true`) or rejected; a form or a selection is approved unless it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// A form's fields (checked against its schema), or `{selection}` (one of the
    /// options' values; a list of them when the selection is `multiple`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub response_data: Option<JsonObject>,
    /// Who answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responded_by: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_note: Option<String>,
}

impl Resolution {
    /// Whether it approves.
    pub fn approves(&self) -> bool {
        self.approved.unwrap_or(true)
    }
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for a person.
    Pending,
    /// Answered.
    Resolved,
    /// Its deadline passed first.
    Expired,
    /// Its run ended, or its node was withdrawn, first.
    Cancelled,
}

impl RequestStatus {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Resolved => "resolved",
            RequestStatus::Expired => "expired",
            RequestStatus::Cancelled => "cancelled",
        }
    }
}

/// One gate's request: what it asks, until when, and how it ended. Serialised (JSON) with
/// a finished run's journal header, so the engine knows a finished run's requests after a
/// restart without replaying it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputRequest {
    /// Its id: derived from the run, the node and the attempt, so stable across resumes
    /// and distinct per attempt.
    pub request_id: String,
    /// The gate's node.
    pub node_ref: String,
    /// The gate's attempt.
    pub attempt: u32,
    /// What it asks.
    pub input: PendingInput,
    /// When it was made.
    pub created_at: Time,
    /// When it expires; `None`: never.
    pub deadline: Option<Time>,
    /// Where it is.
    pub status: RequestStatus,
    /// The answer, once resolved, and when it came.
    pub resolution: Option<(Resolution, Time)>,
}

/// What a resolution did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// It resolved the request: the gate's node completes.
    Applied,
    /// The request already had this very answer: nothing more happens.
    Duplicate,
}

/// Why a resolution is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The run has no such request.
    #[error("no input request `{0}` in this run")]
    Unknown(String),
    /// The request was resolved with another answer.
    #[error("input request `{0}` was already resolved with another answer")]
    AlreadyResolved(String),
    /// The answer's `responseData` does not satisfy the request's schema.
    #[error("the answer to input request `{request_id}` does not fit what it asks: {}", problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; "))]
    InvalidResponse {
        /// The request.
        request_id: String,
        /// Each problem, with its path from `responseData`.
        problems: Vec<Problem>,
    },
    /// The request expired or was cancelled.
    #[error("input request `{request_id}` is {}, not pending", status.as_str())]
    NotPending {
        /// The request.
        request_id: String,
        /// Where it is.
        status: RequestStatus,
    },
}

impl InputRequest {
    /// A pending request made at `now`, expiring at `deadline` (see [`deadline`]).
    pub fn new(
        request_id: String,
        node_ref: String,
        attempt: u32,
        input: PendingInput,
        now: Time,
        deadline: Option<Time>,
    ) -> InputRequest {
        InputRequest {
            request_id,
            node_ref,
            attempt,
            input,
            created_at: now,
            deadline,
            status: RequestStatus::Pending,
            resolution: None,
        }
    }

    /// Applies `resolution`, answered at `now`.
    ///
    /// # Errors
    /// [`ResolveError`] when the request is not pending and this is not its answer.
    pub fn resolve(&mut self, resolution: Resolution, now: Time) -> Result<Resolved, ResolveError> {
        if self.status != RequestStatus::Pending {
            return self.answered_again(&resolution, self.status);
        }
        check_response(&self.input, &resolution).map_err(|problems| {
            ResolveError::InvalidResponse {
                request_id: self.request_id.clone(),
                problems,
            }
        })?;
        self.status = RequestStatus::Resolved;
        self.resolution = Some((resolution, now));
        Ok(Resolved::Applied)
    }

    /// What answering it with `resolution` does once its run has ended, changing nothing:
    /// a request still pending then counts as cancelled with its run.
    ///
    /// # Errors
    /// As [`InputRequest::resolve`].
    pub fn verdict_after_end(&self, resolution: &Resolution) -> Result<Resolved, ResolveError> {
        let status = match self.status {
            RequestStatus::Pending => RequestStatus::Cancelled,
            settled => settled,
        };
        self.answered_again(resolution, status)
    }

    /// An answer to a request that left `pending` as `status`: a duplicate of the answer
    /// it took, or refused.
    fn answered_again(
        &self,
        resolution: &Resolution,
        status: RequestStatus,
    ) -> Result<Resolved, ResolveError> {
        match (status, &self.resolution) {
            (RequestStatus::Resolved, Some((answer, _))) if answer == resolution => {
                Ok(Resolved::Duplicate)
            }
            (RequestStatus::Resolved, _) => {
                Err(ResolveError::AlreadyResolved(self.request_id.clone()))
            }
            (status, _) => Err(ResolveError::NotPending {
                request_id: self.request_id.clone(),
                status,
            }),
        }
    }

    /// Whether its deadline has come at `now` (a pending request only).
    pub fn is_due(&self, now: Time) -> bool {
        self.status == RequestStatus::Pending && self.deadline.is_some_and(|d| d <= now)
    }

    /// Expires it; `false` when it was no longer pending.
    pub fn expire(&mut self) -> bool {
        self.end_as(RequestStatus::Expired)
    }

    /// Cancels it (its run ended or its node was withdrawn); `false` when it was no
    /// longer pending.
    pub fn cancel(&mut self) -> bool {
        self.end_as(RequestStatus::Cancelled)
    }

    fn end_as(&mut self, status: RequestStatus) -> bool {
        if self.status != RequestStatus::Pending {
            return false;
        }
        self.status = status;
        true
    }

    /// The gate's output and active ports once resolved (`None` until then).
    pub fn output(&self) -> Option<ComponentOutput> {
        let (resolution, at) = self.resolution.as_ref()?;
        Some(resolved_output(self, resolution, *at))
    }

    /// What its gate ends with once it left `pending` by an answer or its deadline: the
    /// resolved output, or the `TimeoutError`; `None` while pending or once cancelled.
    pub fn gate_result(&self) -> Option<ComponentResult> {
        match self.status {
            RequestStatus::Resolved => self.output().map(Ok),
            RequestStatus::Expired => Some(Err(timeout_error(self))),
            RequestStatus::Pending | RequestStatus::Cancelled => None,
        }
    }
}

/// When a request for `input` made at `now` expires: the marker's own `timeoutAt`, else
/// `now` plus the marker's `timeout`, else `now` plus the engine's `default_timeout`; a
/// zero timeout, or none, means never. Decided once, when the request is made, and
/// journaled with it, so a restart under another configuration keeps it.
pub fn deadline(
    input: &PendingInput,
    now: Time,
    default_timeout: Option<Duration>,
) -> Option<Time> {
    match input.timeout_at {
        Some(at) => Some(Time::from_system_time(at.system_time())),
        None => input
            .timeout()
            .or(default_timeout)
            .filter(|t| !t.is_zero())
            .map(|t| now + t),
    }
}

/// What a resolved gate completes with, on ShipSec's ports: always `respondedBy`,
/// `responseNote`, `respondedAt` and `requestId`; `approved` or `rejected`; and for a
/// selection `selection` and `option:<value>` for each value chosen.
pub fn resolved_output(
    request: &InputRequest,
    resolution: &Resolution,
    at: Time,
) -> ComponentOutput {
    let approved = resolution.approves();
    let mut output = Map::new();
    output.insert("approved".into(), Value::Bool(approved));
    output.insert("rejected".into(), Value::Bool(!approved));
    output.insert(
        "respondedBy".into(),
        resolution
            .responded_by
            .clone()
            .map_or(Value::Null, Value::String),
    );
    output.insert(
        "responseNote".into(),
        resolution
            .response_note
            .clone()
            .map_or(Value::Null, Value::String),
    );
    output.insert(
        "respondedAt".into(),
        Value::String(at.timestamp().to_string()),
    );
    output.insert(
        "requestId".into(),
        Value::String(request.request_id.clone()),
    );
    if let Some(data) = &resolution.response_data {
        for (k, v) in data {
            output.insert(k.clone(), v.clone());
        }
    }
    let mut ports: Vec<String> = ["respondedBy", "responseNote", "respondedAt", "requestId"]
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    ports.push(if approved { "approved" } else { "rejected" }.to_owned());
    if request.input.input_type == InputType::Selection {
        ports.push("selection".to_owned());
        for value in selected(resolution) {
            ports.push(format!("option:{value}"));
        }
    }
    ComponentOutput {
        output,
        active_ports: Some(ports),
    }
}

/// The values a selection's resolution chose (`responseData.selection`: one value or a
/// list), as text.
pub fn selected(resolution: &Resolution) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match resolution
        .response_data
        .as_ref()
        .and_then(|d| d.get("selection"))
    {
        Some(Value::Array(values)) => values.iter().map(text).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(value) => vec![text(value)],
    }
}

/// The failure of a gate whose deadline passed: non-retryable `TimeoutError`, "Human input
/// request timed out for node <ref>".
pub fn timeout_error(request: &InputRequest) -> ComponentError {
    ComponentError::fatal(
        TIMEOUT_ERROR,
        format!(
            "Human input request timed out for node {}",
            request.node_ref
        ),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    use crate::runtime::definition::object;

    fn at(secs: u64) -> Time {
        Time::from_micros(1_700_000_000_000_000 + secs * 1_000_000)
    }

    fn approval() -> PendingInput {
        PendingInput::from_output(&object(json!({
            "pending": true, "inputType": "approval", "title": "Ship it?"
        })))
        .expect("a marker")
        .expect("a good one")
    }

    fn request(input: PendingInput, timeout: Option<Duration>) -> InputRequest {
        let due = deadline(&input, at(0), timeout);
        InputRequest::new("req-1".into(), "gate".into(), 1, input, at(0), due)
    }

    #[test]
    fn only_pending_true_makes_a_gate_and_a_bad_marker_names_its_field() {
        assert!(PendingInput::from_output(&object(json!({"pending": false}))).is_none());
        assert!(PendingInput::from_output(&object(json!({"pending": "yes"}))).is_none());
        assert!(PendingInput::from_output(&object(json!({"title": "x"}))).is_none());
        let full = PendingInput::from_output(&object(json!({
            "pending": true, "inputType": "form", "title": "Fill",
            "description": "d", "timeoutAt": "2026-12-08T10:00:00.000Z",
            "contextData": {"findings": 3}, "inputSchema": {"type": "object"}
        })))
        .unwrap()
        .unwrap();
        assert_eq!(full.input_type, InputType::Form);
        assert_eq!(full.description.as_deref(), Some("d"));
        assert_eq!(
            full.timeout_at.map(|t| t.to_string()).as_deref(),
            Some("2026-12-08T10:00:00.000Z")
        );
        for (marker, field) in [
            (json!({"pending": true, "title": "t"}), "inputType"),
            (
                json!({"pending": true, "inputType": "vote", "title": "t"}),
                "inputType",
            ),
            (json!({"pending": true, "inputType": "form"}), "title"),
            (
                json!({"pending": true, "inputType": "form", "title": " "}),
                "title",
            ),
            (
                json!({"pending": true, "inputType": "form", "title": "t", "timeoutAt": "soon"}),
                "timeoutAt",
            ),
            (
                json!({"pending": true, "inputType": "form", "title": "t", "inputSchema": []}),
                "inputSchema",
            ),
            (
                json!({"pending": true, "inputType": "form", "title": "t", "timeout": "5s"}),
                "timeout",
            ),
        ] {
            let err = PendingInput::from_output(&object(marker.clone()))
                .unwrap()
                .expect_err(&marker.to_string());
            assert_eq!(err.field, field, "{marker}");
        }
    }

    #[test]
    fn timeouts_are_whole_minutes_hours_or_days() {
        assert_eq!(parse_timeout("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_timeout("4h"), Ok(Duration::from_secs(14_400)));
        assert_eq!(parse_timeout("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_timeout("0m"), Ok(Duration::ZERO));
        for bad in [
            "",
            "m",
            "5",
            "5s",
            "1.5h",
            "-1d",
            " 5m",
            "5m ",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_timeout(bad), Err(BadTimeout(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn interpolation_takes_inputs_before_params_and_keeps_unknown_names() {
        let params = object(json!({"host": "p.example", "n": 3, "team": {"name": "red"}}));
        let inputs = object(json!({"host": "i.example"}));
        assert_eq!(
            interpolate(
                "Patch {{host}} ({{ n }} findings, {{team.name}}), {{missing}} {{",
                &params,
                &inputs
            ),
            "Patch i.example (3 findings, red), {{missing}} {{"
        );
    }

    #[test]
    fn a_deadline_comes_from_the_marker_else_from_the_timeout() {
        let r = request(approval(), Some(Duration::from_secs(60)));
        assert_eq!(r.deadline, Some(at(60)));
        assert!(!r.is_due(at(59)) && r.is_due(at(60)));
        assert_eq!(request(approval(), None).deadline, None);
        let mut own = approval();
        own.timeout_at = Some(Timestamp::from(at(10).system_time()));
        assert_eq!(
            request(own, Some(Duration::from_secs(60))).deadline,
            Some(at(10))
        );
        let mut relative = approval();
        relative.timeout = Some("2m".into());
        assert_eq!(
            request(relative.clone(), Some(Duration::from_secs(60))).deadline,
            Some(at(120))
        );
        relative.timeout = Some("0m".into());
        assert_eq!(
            request(relative, Some(Duration::from_secs(60))).deadline,
            None,
            "0m: no limit, said explicitly"
        );
        assert_eq!(request(approval(), Some(Duration::ZERO)).deadline, None);
    }

    #[test]
    fn the_same_answer_twice_is_a_duplicate_and_another_is_refused() {
        let mut r = request(approval(), None);
        let yes = Resolution {
            approved: Some(true),
            responded_by: Some("ana".into()),
            ..Resolution::default()
        };
        assert_eq!(r.resolve(yes.clone(), at(5)), Ok(Resolved::Applied));
        assert_eq!(r.resolve(yes.clone(), at(9)), Ok(Resolved::Duplicate));
        let no = Resolution {
            approved: Some(false),
            ..yes.clone()
        };
        assert_eq!(
            r.resolve(no, at(9)),
            Err(ResolveError::AlreadyResolved("req-1".into()))
        );
        assert_eq!(r.resolution.as_ref().map(|(_, t)| *t), Some(at(5)));
        assert!(
            !r.expire() && !r.cancel(),
            "a resolved request stays resolved"
        );
    }

    #[test]
    fn an_expired_or_cancelled_request_takes_no_answer() {
        for end in [InputRequest::expire, InputRequest::cancel] {
            let mut r = request(approval(), Some(Duration::from_secs(1)));
            assert!(end(&mut r));
            assert!(!r.is_due(at(5)), "only a pending request is due");
            let err = r.resolve(Resolution::default(), at(5)).unwrap_err();
            assert!(matches!(err, ResolveError::NotPending { .. }), "{err}");
        }
    }

    #[test]
    fn a_resolved_gate_outputs_shipsec_s_fields_on_shipsec_s_ports() {
        let mut r = request(approval(), None);
        let no = Resolution {
            approved: Some(false),
            responded_by: Some("ana".into()),
            response_note: Some("too risky".into()),
            response_data: Some(object(json!({"ticket": "SEC-1"}))),
        };
        r.resolve(no, at(5)).unwrap();
        let out = r.output().expect("resolved");
        assert_eq!(
            Value::Object(out.output),
            json!({
                "approved": false, "rejected": true, "respondedBy": "ana",
                "responseNote": "too risky", "respondedAt": at(5).timestamp().to_string(),
                "requestId": "req-1", "ticket": "SEC-1"
            })
        );
        assert_eq!(
            out.active_ports.unwrap(),
            [
                "respondedBy",
                "responseNote",
                "respondedAt",
                "requestId",
                "rejected"
            ]
        );
    }

    #[test]
    fn a_selection_activates_one_port_per_value_chosen() {
        let mut input = approval();
        input.input_type = InputType::Selection;
        let mut r = request(input, None);
        r.resolve(
            Resolution {
                response_data: Some(object(json!({"selection": ["low", "high"]}))),
                ..Resolution::default()
            },
            at(1),
        )
        .unwrap();
        let ports = r.output().unwrap().active_ports.unwrap();
        assert_eq!(
            ports[4..],
            ["approved", "selection", "option:low", "option:high"]
        );
    }

    #[test]
    fn an_expired_gate_fails_with_shipsec_s_timeout_error() {
        let r = request(approval(), Some(Duration::from_secs(90)));
        let err = timeout_error(&r);
        assert_eq!(err.error_type, "TimeoutError");
        assert!(!err.retryable);
        assert_eq!(err.message, "Human input request timed out for node gate");
    }

    fn marker(kind: &str, schema: Value) -> Result<PendingInput, MarkerError> {
        PendingInput::from_output(&object(json!({
            "pending": true, "inputType": kind, "title": "t", "inputSchema": schema
        })))
        .expect("a marker")
    }

    fn data(approved: Option<bool>, data: Value) -> Resolution {
        Resolution {
            approved,
            response_data: Some(object(data)),
            ..Resolution::default()
        }
    }

    fn paths(input: &PendingInput, answer: &Resolution) -> Vec<String> {
        let mut paths: Vec<String> = check_response(input, answer)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.path)
            .collect();
        paths.sort();
        paths
    }

    #[test]
    fn a_form_answer_is_checked_against_its_schema_unless_rejected() {
        let form = marker(
            "form",
            json!({"type": "object", "required": ["ticket"],
                   "properties": {"ticket": {"type": "string"}, "n": {"maximum": 3}}}),
        )
        .expect("a usable schema");
        assert_eq!(
            paths(&form, &data(None, json!({"ticket": "A"}))),
            Vec::<String>::new()
        );
        assert_eq!(
            paths(&form, &data(None, json!({"ticket": 1, "n": 4}))),
            ["responseData/n", "responseData/ticket"]
        );
        assert_eq!(paths(&form, &data(None, json!({}))), ["responseData"]);
        assert!(check_response(&form, &data(Some(false), json!({}))).is_ok());
        let bad = marker("form", json!({"type": "no-such-type"})).expect_err("unusable");
        assert_eq!(bad.field, "inputSchema");
    }

    #[test]
    fn a_selection_takes_only_its_options_and_one_unless_multiple() {
        let options = json!([{"label": "Low", "value": "low"}, "high"]);
        let one = marker("selection", json!({"options": options, "multiple": false})).unwrap();
        assert!(check_response(&one, &data(None, json!({"selection": "low"}))).is_ok());
        assert!(check_response(&one, &data(None, json!({"selection": "high"}))).is_ok());
        let off = paths(&one, &data(None, json!({"selection": "mid"})));
        assert_eq!(off, ["responseData/selection"]);
        assert!(check_response(&one, &data(None, json!({"selection": ["low"]}))).is_err());
        assert_eq!(paths(&one, &data(None, json!({}))), ["responseData"]);
        let many = marker("selection", json!({"options": options, "multiple": true})).unwrap();
        let both = data(None, json!({"selection": ["low", "high"]}));
        assert!(check_response(&many, &both).is_ok());
        for wrong in [
            json!([]),
            json!(["low", "low"]),
            json!(["low", "mid"]),
            json!("low"),
        ] {
            let answer = data(None, json!({"selection": wrong}));
            assert!(check_response(&many, &answer).is_err(), "{wrong}");
        }
    }

    #[test]
    fn a_refused_answer_leaves_the_request_pending() {
        let form = marker("form", json!({"required": ["x"]})).unwrap();
        let mut r = request(form, None);
        let refused = r.resolve(data(None, json!({})), at(1));
        assert!(matches!(refused, Err(ResolveError::InvalidResponse { .. })));
        assert_eq!(r.status, RequestStatus::Pending);
        assert_eq!(
            r.resolve(data(None, json!({"x": 1})), at(2)),
            Ok(Resolved::Applied)
        );
    }
}
