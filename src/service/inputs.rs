//! The input endpoints, an action centre's inbox across runs: list the gates' requests,
//! read one, and resolve one by its id; and a run's own inbox, its signals. A resolution is answered only once the run has
//! stored it; the same answer again is a duplicate, another is refused (`docs/gates.md`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::definition::JsonObject;
use crate::runtime::semantics::gate::{InputType, RequestStatus, Resolution, Resolved};
use crate::runtime::semantics::inbox::Signaled;
use crate::runtime::semantics::requests::{Filed, InputQuery};
use crate::runtime::timestamp::Timestamp;
use crate::service::AppState;
use crate::service::body::{JsonBody, PathId, PathIds, Query};
use crate::service::error::{ApiError, ErrorBody, ErrorCode};
use crate::service::links::InputLinks;
use crate::service::runs::{metadata_filter, paging};

/// One input request, as the inbox shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InputView {
    /// Its id: stable across restarts, distinct per attempt of its gate.
    request_id: String,
    /// The run that made it.
    run_id: String,
    /// That run's metadata (absent when it has none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    /// The gate's node.
    node_ref: String,
    /// The gate's attempt.
    attempt: u32,
    /// `pending`, `resolved`, `expired` or `cancelled`.
    status: RequestStatus,
    /// What kind of input it asks for.
    input_type: InputType,
    /// What the person is asked.
    title: String,
    /// More about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// What the person needs to decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    context_data: Option<Value>,
    /// What `responseData` must satisfy: a form's JSON schema, or a selection's
    /// `{options, multiple}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    input_schema: Option<Value>,
    /// When it was made.
    created_at: Timestamp,
    /// When it expires (none: never).
    timeout_at: Option<Timestamp>,
    /// When it was answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    responded_at: Option<Timestamp>,
    /// The answer, once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    resolution: Option<Resolution>,
    /// With `service.publicInputLinks` on, while pending: the token that answers it once
    /// without a bearer token (`POST /v1/inputs/resolve/{token}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    public_token: Option<String>,
}

impl InputView {
    fn of(filed: &Filed, links: Option<&InputLinks>) -> InputView {
        let request = &*filed.request;
        let pending = request.status == RequestStatus::Pending;
        InputView {
            public_token: links
                .filter(|_| pending)
                .and_then(|l| l.token(&request.request_id)),
            request_id: request.request_id.clone(),
            run_id: filed.run_id.to_string(),
            metadata: (*filed.metadata).clone(),
            node_ref: request.node_ref.clone(),
            attempt: request.attempt,
            status: request.status,
            input_type: request.input.input_type,
            title: request.input.title.clone(),
            description: request.input.description.clone(),
            context_data: request.input.context_data.clone(),
            input_schema: request.input.input_schema.clone(),
            created_at: request.created_at.timestamp(),
            timeout_at: request.deadline.map(|d| d.timestamp()),
            responded_at: request.resolution.as_ref().map(|(_, at)| at.timestamp()),
            resolution: request.resolution.as_ref().map(|(r, _)| r.clone()),
        }
    }
}

/// `GET /v1/inputs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListInputs {
    /// Only requests in this status.
    status: Option<RequestStatus>,
    /// Only requests of this run.
    run_id: Option<String>,
    /// With `metadataValue`: only requests of runs whose metadata has this key set to that
    /// value (an organization's inbox).
    metadata_key: Option<String>,
    /// The value `metadataKey` must have.
    metadata_value: Option<String>,
    /// Most requests in the page (100 by default, at most `service.maxPage`).
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// `nextCursor` of the page before.
    #[param(pattern = "^[0-9]{1,19}$")]
    cursor: Option<String>,
}

/// A page of input requests.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InputPage {
    /// Newest first.
    inputs: Vec<InputView>,
    /// The cursor of the next (older) page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /v1/inputs`: the requests of the runs the server knows, newest first.
#[utoipa::path(get, path = "/v1/inputs", tag = "inputs", operation_id = "listInputs", summary = "List input requests across runs, newest first",
    params(ListInputs),
    responses(
        (status = 200, description = "A page of input requests, newest first", body = InputPage),
        (status = 400, description = "INVALID_REQUEST: a malformed query", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListInputs>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let (limit, before) = paging(&state, query.limit, query.cursor.as_deref())?;
    let page = engine
        .inputs(InputQuery {
            status: query.status,
            run_id: query.run_id,
            metadata: metadata_filter(query.metadata_key, query.metadata_value)?,
            limit,
            before,
        })
        .await?;
    Ok(axum::Json(InputPage {
        inputs: page
            .requests
            .iter()
            .map(|f| InputView::of(f, state.shared.links.as_ref()))
            .collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    })
    .into_response())
}

/// `GET /v1/inputs/{requestId}`.
#[utoipa::path(get, path = "/v1/inputs/{requestId}", tag = "inputs", operation_id = "describeInput", summary = "An input request",
    params(("requestId" = String, Path, description = "The request's id")),
    responses(
        (status = 200, description = "The request as it is now", body = InputView),
        (status = 404, description = "INPUT_NOT_FOUND", body = ErrorBody),
    ))]
pub(crate) async fn describe(
    State(state): State<AppState>,
    PathId(request_id): PathId,
) -> Result<Response, ApiError> {
    let filed = state.engine()?.input(&request_id).await?;
    let view = InputView::of(&filed, state.shared.links.as_ref());
    Ok(axum::Json(view).into_response())
}

/// What resolving did: the request as it is now, and whether this answer was a repeat.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResolvedView {
    /// The request.
    #[serde(flatten)]
    request: InputView,
    /// `true` when the request already had this very answer (nothing more happened).
    duplicate: bool,
}

/// `POST /v1/inputs/{requestId}/resolve`: answered once the run has stored the answer.
#[utoipa::path(post, path = "/v1/inputs/{requestId}/resolve", tag = "inputs", operation_id = "resolveInput", summary = "Answer an input request",
    params(("requestId" = String, Path, description = "The request's id")),
    request_body = Resolution,
    responses(
        (status = 200, description = "Resolved and stored (or the same answer again: `duplicate`)", body = ResolvedView),
        (status = 400, description = "MALFORMED_JSON", body = ErrorBody),
        (status = 404, description = "INPUT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "INPUT_ALREADY_RESOLVED (another answer was taken) or INPUT_NOT_PENDING (expired or cancelled)", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "INVALID_INPUT: `responseData` does not fit the request's schema (`details.problems`: `[{path, message}]`)", body = ErrorBody),
    ))]
pub(crate) async fn resolve(
    State(state): State<AppState>,
    PathId(request_id): PathId,
    JsonBody(resolution): JsonBody<Resolution>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let done = engine.resolve(&request_id, resolution).await?;
    let filed = engine.input(&request_id).await?;
    Ok(axum::Json(ResolvedView {
        request: InputView::of(&filed, state.shared.links.as_ref()),
        duplicate: done == Resolved::Duplicate,
    })
    .into_response())
}

/// What a public input link answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LinkAction {
    /// Approve.
    Approve,
    /// Reject.
    Reject,
    /// Answer with `data` (a form's fields, or `{selection}`).
    Resolve,
}

/// `POST /v1/inputs/resolve/{token}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LinkBody {
    /// What to answer.
    action: LinkAction,
    /// With `resolve`: the form's fields, or `{selection}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<JsonObject>,
    /// Who answered.
    #[serde(default)]
    responded_by: Option<String>,
    /// Why.
    #[serde(default)]
    response_note: Option<String>,
}

/// `POST /v1/inputs/resolve/{token}` (only with `service.publicInputLinks` on): answers
/// the request the token names, without a bearer token, once.
#[utoipa::path(post, path = "/v1/inputs/resolve/{token}", tag = "inputs", operation_id = "resolveInputByLink", summary = "Answer an input request through its public link (no bearer token; only with service.publicInputLinks)",
    params(("token" = String, Path, description = "The request's public token (`publicToken`)")),
    request_body = LinkBody,
    security(()),
    responses(
        (status = 200, description = "Answered and stored", body = InputView),
        (status = 400, description = "MALFORMED_JSON", body = ErrorBody),
        (status = 404, description = "INPUT_NOT_FOUND (not a link of this server), or NOT_FOUND when links are off", body = ErrorBody),
        (status = 409, description = "INPUT_NOT_PENDING: the link was used, or its request expired or was cancelled", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "INVALID_INPUT: `data` does not fit the request's schema (`details.problems`)", body = ErrorBody),
    ))]
pub(crate) async fn resolve_by_token(
    State(state): State<AppState>,
    PathId(token): PathId,
    JsonBody(body): JsonBody<LinkBody>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let unknown = || ApiError::new(ErrorCode::InputNotFound, "no input request has this link");
    let links = state.shared.links.as_ref().ok_or_else(unknown)?;
    let request_id = links.request_of(&token).ok_or_else(unknown)?;
    let filed = engine.input(&request_id).await?;
    // A link works once: its request must still be pending.
    if filed.request.status != RequestStatus::Pending {
        return Err(ApiError::new(
            ErrorCode::InputNotPending,
            format!(
                "this link was used, or its request is {}",
                filed.request.status.as_str()
            ),
        )
        .with_details(serde_json::json!({ "status": filed.request.status })));
    }
    let resolution = Resolution {
        approved: Some(body.action != LinkAction::Reject),
        response_data: body.data.filter(|_| body.action == LinkAction::Resolve),
        responded_by: body.responded_by,
        response_note: body.response_note,
    };
    if engine.resolve(&request_id, resolution).await? == Resolved::Duplicate {
        // Another use of the link got there first.
        return Err(ApiError::new(
            ErrorCode::InputNotPending,
            "this link was used",
        ));
    }
    let filed = engine.input(&request_id).await?;
    Ok(axum::Json(InputView::of(&filed, None)).into_response())
}

/// `POST /v1/runs/{id}/signals/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"signalId": "approve-42", "payload": {"nodeRef": "approve", "approved": true, "respondedBy": "ana"}}))]
pub(crate) struct SignalBody {
    /// The signal's id: the same id again has no second effect. One is drawn (`sig-<n>`)
    /// when absent.
    #[serde(default)]
    signal_id: Option<String>,
    /// What it carries (`resolveHumanInput`: ShipSec's `HumanInputResolution`,
    /// `{requestId?, nodeRef?, approved?, respondedBy?, responseNote?, responseData?}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: Value,
}

/// What a signal did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignalView {
    /// Its id (the one given, or the one drawn).
    signal_id: String,
    /// `applied` (it answered a request), `alreadyAnswered` (the request had this very
    /// answer), `kept` (its wait does not exist yet), `unhandled` (nothing handles its
    /// name: recorded as a trace event) or `duplicate` (this signal id came before).
    outcome: &'static str,
    /// Whether this signal id came before (nothing more happened).
    duplicate: bool,
    /// The request it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

/// `POST /v1/runs/{id}/signals/{name}`: stored before it is answered.
#[utoipa::path(post, path = "/v1/runs/{id}/signals/{name}", tag = "runs", operation_id = "signalRun", summary = "Send a signal to a run's inbox",
    params(
        ("id" = String, Path, description = "The run's id"),
        ("name" = String, Path, description = "The signal's name (`resolveHumanInput` answers a gate)"),
    ),
    request_body = SignalBody,
    responses(
        (status = 200, description = "Stored and delivered, kept for its wait, or a repeat (`duplicate`)", body = SignalView),
        (status = 202, description = "Stored; nothing handles its name (recorded as a trace event)", body = SignalView),
        (status = 400, description = "MALFORMED_JSON", body = ErrorBody),
        (status = 404, description = "RUN_NOT_FOUND, or INPUT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "RUN_ALREADY_ENDED, INPUT_ALREADY_RESOLVED or INPUT_NOT_PENDING", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "INVALID_INPUT: a payload its name does not take, a node the run lacks, or an answer that does not fit its request", body = ErrorBody),
    ))]
pub(crate) async fn signal(
    State(state): State<AppState>,
    PathIds(run_id, name): PathIds,
    JsonBody(body): JsonBody<SignalBody>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let ack = engine
        .signal(&run_id, &name, body.signal_id.as_deref(), body.payload)
        .await?;
    let (outcome, request_id) = match ack.outcome {
        Signaled::Applied(id) => ("applied", Some(id.to_string())),
        Signaled::AlreadyAnswered(id) => ("alreadyAnswered", Some(id.to_string())),
        Signaled::Kept => ("kept", None),
        Signaled::Unhandled => ("unhandled", None),
        Signaled::Duplicate => ("duplicate", None),
    };
    let status = if outcome == "unhandled" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let view = SignalView {
        signal_id: ack.signal_id.to_string(),
        outcome,
        duplicate: outcome == "duplicate",
        request_id,
    };
    Ok((status, axum::Json(view)).into_response())
}
