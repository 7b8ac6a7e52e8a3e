//! The run endpoints: start (with idempotency), list, status, result (with `?wait`),
//! cancel and terminate; and the definition endpoints: validate, components.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::actors::handle::{Handle, Workflow};
use crate::messages::orchestrator::SubmitOptions;
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::parse::from_value;
use crate::runtime::definition::validate::Problem;
use crate::runtime::semantics::metadata;
use crate::runtime::semantics::outcome::RunStatus;
use crate::runtime::semantics::result::{RunQuery, RunSummary};
use crate::runtime::semantics::result::{RunResult, RunSnapshot};
use crate::service::AppState;
use crate::service::body::{JsonBody, PathId, Query};
use crate::service::error::{ApiError, ErrorBody, ErrorCode};
use crate::service::graph::RunGraph;

/// Longest run id and idempotency key taken.
const MAX_ID_LEN: usize = 256;

/// `POST /v1/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "definition": {
        "title": "hello",
        "actions": [
            {"ref": "greet", "componentId": "core.echo", "params": {"text": "hello"}},
            {"ref": "pause", "componentId": "core.sleep", "params": {"ms": 200}, "dependsOn": ["greet"]}
        ]
    },
    "inputs": {}
}))]
pub(crate) struct CreateRun {
    /// The workflow definition (ShipSec's `WorkflowDefinition`; docs/definition.md).
    #[schema(value_type = Object)]
    definition: Value,
    /// The run's inputs.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    inputs: Option<JsonObject>,
    /// The run's id; a fresh UUID when absent.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,256}$")]
    run_id: Option<String>,
    /// W3C `traceparent` of the caller's trace (Trace Context level 1; version `ff`, wrong
    /// lengths, upper-case hex and all-zero ids are refused with 400 `INVALID_REQUEST`).
    #[serde(default)]
    #[schema(pattern = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$")]
    traceparent: Option<String>,
    /// The run's metadata: an object of strings (at most 64 keys of 1–128 bytes, values of
    /// at most 1,024), journaled and returned with the run and its input requests
    /// (ShipSec's `organizationId`, `workflowId`, `workflowVersionId`, ...).
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    metadata: Option<Value>,
}

/// `POST /v1/validate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "definition": {
        "title": "hello",
        "actions": [{"ref": "greet", "componentId": "core.echo", "params": {"text": "hello"}}]
    }
}))]
pub(crate) struct ValidateBody {
    /// The workflow definition.
    #[schema(value_type = Object)]
    definition: Value,
}

/// A definition that validates.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Validated {
    /// Always true (a definition that does not validate is a 422).
    valid: bool,
    /// Nodes in its graph.
    nodes: usize,
    /// Edges in its graph.
    edges: usize,
    /// Where `dependsOn` or `dependencyCounts` disagreed with the edges (the edges decide).
    warnings: Vec<Problem>,
}

/// `GET /v1/components`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ComponentList {
    /// Every component of the engine, by id.
    components: Vec<ComponentInfo>,
}

/// What a definition may know of a component.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ComponentInfo {
    /// Its id (a node's `componentId`).
    id: &'static str,
    /// What it does.
    summary: &'static str,
    /// The inputs it reads.
    inputs: Vec<ComponentInput>,
    /// Most attempts of it at once, when capped.
    max_concurrency: Option<u32>,
    /// Its rate limit, when it has one.
    rate_limit: Option<ComponentRate>,
    /// Whether this server's definition policy lets a definition use it.
    allowed: bool,
}

/// One input of a component.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ComponentInput {
    /// Input name.
    name: &'static str,
    /// Whether a run fails with `InputError` when it has no value.
    required: bool,
}

/// A component's token bucket.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ComponentRate {
    /// Sustained attempts per second.
    per_second: f64,
    /// Bucket size.
    burst: u32,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Health {
    /// `ok` (alive) or `ready`.
    status: &'static str,
    /// Runs resumed from the journal at start (`/readyz` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_runs: Option<usize>,
}

/// Checks a definition as the server would run it: its shape, the engine's limits, the
/// server's definition policy, then validation against the engine's components.
fn prepare(state: &AppState, engine: &Handle, definition: Value) -> Result<Workflow, ApiError> {
    let definition =
        from_value(definition).map_err(crate::runtime::definition::load::LoadError::from)?;
    Ok(engine.prepare_under(&state.shared.config.definitions, definition)?)
}

/// An id given by a client: printable, URL-safe, bounded, and not `.` or `..` (which
/// name no resource in a URL path: clients and proxies resolve them away).
fn checked_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id == "." || id == ".." {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{what} cannot be `.` or `..`"),
        ));
    }
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{what} must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 - _ . : @"),
        ))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // Visible ASCII only (`^[!-~]{1,256}$`): no spaces, which proxies may fold or trim.
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_ID_LEN)
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("Idempotency-Key must be 1 to {MAX_ID_LEN} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// `POST /v1/runs`: 201 and the run's snapshot for a new run; 200 and the same run for a
/// repeated idempotency key with the same body.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", operation_id = "startRun", summary = "Start a run",
    request_body = CreateRun,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,256}$",
        description = "Repeating a key with the same body gives the same run (200); with another body, 409 IDEMPOTENCY_CONFLICT")),
    responses(
        (status = 201, description = "A new run", body = RunSnapshot,
            headers(("Location" = String, description = "The run's URL"))),
        (status = 200, description = "The run of a repeated idempotency key", body = RunSnapshot,
            headers(("Location" = String, description = "The run's URL"))),
        (status = 400, description = "MALFORMED_JSON or INVALID_REQUEST", body = ErrorBody),
        (status = 409, description = "RUN_EXISTS or IDEMPOTENCY_CONFLICT", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "INVALID_DEFINITION (`details.problems`) or INVALID_INPUT", body = ErrorBody),
        (status = 429, description = "OVERLOADED: the admission limit (`Retry-After`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRun>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let idempotency_key = idempotency_key(&headers)?;
    if let Some(id) = &body.run_id {
        checked_id("runId", id)?;
    }
    if let Some(traceparent) = &body.traceparent
        && crate::runtime::telemetry::traceparent_trace_id(traceparent).is_none()
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "traceparent must be a W3C traceparent: version-traceid-parentid-flags, lower-case hex of 2, 32, 16 and 2 digits, version not ff, ids not all zeros",
        ));
    }
    let metadata = match &body.metadata {
        None => Default::default(),
        Some(value) => metadata::read(value).map_err(|problems| {
            ApiError::problems(ErrorCode::InvalidInput, "invalid run metadata", &problems)
        })?,
    };
    let workflow = prepare(&state, &engine, body.definition)?;
    let options = SubmitOptions {
        run_id: body.run_id,
        idempotency_key,
        traceparent: body.traceparent,
        metadata,
    };
    let run = engine
        .submit_workflow(&workflow, body.inputs.unwrap_or_default(), options)
        .await?;
    let snapshot = engine.status(run.run_id()).await?;
    let status = if run.existing() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, axum::Json(&snapshot)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/runs/{}", snapshot.run_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/runs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only runs in this status.
    status: Option<RunStatus>,
    /// With `metadataValue`: only runs whose metadata has this key set to that value.
    #[serde(rename = "metadataKey")]
    metadata_key: Option<String>,
    /// The value `metadataKey` must have.
    #[serde(rename = "metadataValue")]
    metadata_value: Option<String>,
    /// Most runs in the page (100 by default, at most `service.maxPage`).
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// `nextCursor` of the page before.
    #[param(pattern = "^[0-9]{1,19}$")]
    cursor: Option<String>,
}

/// A page of runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunPage {
    /// Newest first.
    runs: Vec<RunSummary>,
    /// The cursor of the next (older) page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /v1/runs`: newest first, a page at a time.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", operation_id = "listRuns", summary = "List runs, newest first",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of runs, newest first", body = RunPage),
        (status = 400, description = "INVALID_REQUEST: a malformed query", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let (limit, before) = paging(&state, query.limit, query.cursor.as_deref())?;
    let page = engine
        .list(RunQuery {
            status: query.status,
            limit,
            before,
            metadata: metadata_filter(query.metadata_key, query.metadata_value)?,
        })
        .await?;
    Ok(axum::Json(RunPage {
        runs: page.runs,
        next_cursor: page.next.map(|n| n.to_string()),
    })
    .into_response())
}

/// A listing's page size (100 by default, at most `service.maxPage`) and the position
/// its `cursor` (a page's `nextCursor`) names.
pub(crate) fn paging(
    state: &AppState,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<(usize, Option<u64>), ApiError> {
    let max = state.shared.config.max_page.max(1);
    let before = match cursor {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`{c}` is not a cursor this server gave"),
            )
        })?),
    };
    Ok((limit.unwrap_or(100).clamp(1, max), before))
}

/// A listing's metadata filter: `metadataKey` and `metadataValue` together, or neither.
pub(crate) fn metadata_filter(
    key: Option<String>,
    value: Option<String>,
) -> Result<Option<(String, String)>, ApiError> {
    match (key, value) {
        (None, None) => Ok(None),
        (Some(key), Some(value)) => Ok(Some((key, value))),
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "metadataKey and metadataValue filter together: give both or neither",
        )),
    }
}

/// `GET /v1/runs/{id}`: the run's status snapshot.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", operation_id = "describeRun", summary = "A run's status snapshot",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run now", body = RunSnapshot),
        (status = 404, description = "RUN_NOT_FOUND", body = ErrorBody),
    ))]
pub(crate) async fn status(
    State(state): State<AppState>,
    PathId(run_id): PathId,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    Ok(axum::Json(engine.status(&run_id).await?).into_response())
}

/// `GET /v1/runs/{id}/graph`: the run's nodes and edges, for the run view.
#[utoipa::path(get, path = "/v1/runs/{id}/graph", tag = "runs", operation_id = "runGraph", summary = "A run's nodes and edges",
    description = "What the run view draws: every node in a topological order with its join strategy and layer, every \
edge with its kind. The graph the engine validated and ran.",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's graph", body = RunGraph),
        (status = 404, description = "RUN_NOT_FOUND", body = ErrorBody),
    ))]
pub(crate) async fn graph(
    State(state): State<AppState>,
    PathId(run_id): PathId,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let graph = engine.graph(&run_id).await?;
    Ok(axum::Json(RunGraph::of(&graph)).into_response())
}

/// `GET /v1/runs/{id}/result` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResultQuery {
    /// Seconds to hold the request for the run to end (at most `service.maxWaitSeconds`).
    #[param(minimum = 0)]
    wait: Option<f64>,
}

/// `GET /v1/runs/{id}/result`: 200 and the result once the run has ended; else (after
/// `wait` seconds at most) 202 and its snapshot.
#[utoipa::path(get, path = "/v1/runs/{id}/result", tag = "runs", operation_id = "runResult", summary = "A run's result, waiting for it up to `wait` seconds",
    params(("id" = String, Path, description = "The run's id"), ResultQuery),
    responses(
        (status = 200, description = "The run has ended: its result (as `shipsec run --json`)", body = RunResult),
        (status = 202, description = "The run is still going: its snapshot", body = RunSnapshot),
        (status = 400, description = "INVALID_REQUEST: a malformed query", body = ErrorBody),
        (status = 404, description = "RUN_NOT_FOUND", body = ErrorBody),
    ))]
pub(crate) async fn result(
    State(state): State<AppState>,
    PathId(run_id): PathId,
    Query(query): Query<ResultQuery>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let mut run = engine.run(&run_id).await?;
    let wait = match query.wait {
        Some(w) if w.is_finite() && w >= 0.0 => {
            Duration::from_secs_f64(w.min(state.shared.config.max_wait.as_secs_f64()))
        }
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "wait must be a number of seconds, 0 or more",
            ));
        }
        None => Duration::ZERO,
    };
    let ended = match run.try_result() {
        Some(result) => Some(result),
        None if wait.is_zero() => None,
        None => {
            let stop = state.shared.stopping.clone();
            tokio::select! {
                ended = tokio::time::timeout(wait, run.result()) => ended.ok().and_then(Result::ok),
                () = stop.cancelled() => None,
            }
        }
    };
    match ended {
        Some(result) => Ok(axum::Json(&*result).into_response()),
        None => Ok((
            StatusCode::ACCEPTED,
            axum::Json(engine.status(&run_id).await?),
        )
            .into_response()),
    }
}

/// `POST /v1/runs/{id}/cancel`: running attempts get the grace period.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", operation_id = "cancelRun", summary = "Cancel a run (running attempts get the grace period)",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Cancelling: the run's snapshot", body = RunSnapshot),
        (status = 404, description = "RUN_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "RUN_ALREADY_ENDED", body = ErrorBody),
    ))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    PathId(run_id): PathId,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let stopped = engine.cancel(&run_id).await?;
    stopped_answer(&engine, &run_id, stopped).await
}

/// `POST /v1/runs/{id}/terminate`: running attempts are killed, without a grace period.
#[utoipa::path(post, path = "/v1/runs/{id}/terminate", tag = "runs", operation_id = "terminateRun", summary = "Terminate a run (running attempts are killed at once)",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Terminating: the run's snapshot", body = RunSnapshot),
        (status = 404, description = "RUN_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "RUN_ALREADY_ENDED", body = ErrorBody),
    ))]
pub(crate) async fn terminate(
    State(state): State<AppState>,
    PathId(run_id): PathId,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let stopped = engine.terminate(&run_id).await?;
    stopped_answer(&engine, &run_id, stopped).await
}

async fn stopped_answer(
    engine: &Handle,
    run_id: &str,
    stopped: bool,
) -> Result<Response, ApiError> {
    let snapshot = engine.status(run_id).await?;
    if !stopped {
        return Err(ApiError::new(
            ErrorCode::RunAlreadyEnded,
            format!(
                "run `{run_id}` has ended already ({})",
                snapshot.status.as_str()
            ),
        )
        .with_details(json!({ "runId": run_id, "status": snapshot.status })));
    }
    Ok((StatusCode::ACCEPTED, axum::Json(snapshot)).into_response())
}

/// `POST /v1/validate`: 200 `{valid, nodes, edges, warnings}` or 422.
#[utoipa::path(post, path = "/v1/validate", tag = "definitions", operation_id = "validateDefinition", summary = "Validate a definition as this server would run it",
    request_body = ValidateBody,
    responses(
        (status = 200, description = "The definition would run here", body = Validated),
        (status = 400, description = "MALFORMED_JSON", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "INVALID_DEFINITION (`details.problems`) or INVALID_INPUT", body = ErrorBody),
    ))]
pub(crate) async fn validate(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ValidateBody>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let workflow = prepare(&state, &engine, body.definition)?;
    let graph = workflow.graph();
    Ok(axum::Json(Validated {
        valid: true,
        nodes: graph.len(),
        edges: graph.edges.len(),
        warnings: workflow.warnings().to_vec(),
    })
    .into_response())
}

/// `GET /v1/components`: the components a definition may use here, with what they take.
#[utoipa::path(get, path = "/v1/components", tag = "definitions", operation_id = "listComponents", summary = "The components a definition may use",
    responses((status = 200, description = "The engine's components", body = ComponentList)))]
pub(crate) async fn components(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let components = describe(engine.registry(), &state);
    Ok(axum::Json(ComponentList { components }).into_response())
}

fn describe(registry: &ComponentRegistry, state: &AppState) -> Vec<ComponentInfo> {
    let policy = &state.shared.config.definitions;
    let mut ids = registry.ids();
    ids.sort_unstable();
    ids.into_iter()
        .filter_map(|id| registry.meta(id))
        .map(|meta| ComponentInfo {
            id: meta.id,
            summary: meta.summary,
            inputs: (meta.inputs.iter())
                .map(|i| ComponentInput {
                    name: i.name,
                    required: i.required,
                })
                .collect(),
            max_concurrency: meta.max_concurrency,
            rate_limit: meta.rate_limit.as_ref().map(|r| ComponentRate {
                per_second: r.per_second,
                burst: r.burst,
            }),
            allowed: policy.allows(meta.id),
        })
        .collect()
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz", summary = "Liveness: the process answers", security(()),
    responses((status = 200, description = "The process answers", body = Health)))]
pub(crate) async fn healthz() -> Response {
    let health = Health {
        status: "ok",
        resumed_runs: None,
    };
    axum::Json(health).into_response()
}

/// `GET /readyz`: 200 once the journal is open and its runs resumed; 503 before, and
/// once the journal cannot write (`JOURNAL_UNAVAILABLE`, with the reason).
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz", summary = "Readiness: the journal is open, its runs resumed, and it can write", security(()),
    responses((status = 200, description = "The journal is open, its runs resumed, and it can write", body = Health),
        (status = 503, description = "UNAVAILABLE (starting or stopping) or JOURNAL_UNAVAILABLE (a journal write failed: the reason)", body = ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    if let Some(failure) = engine.journal().and_then(|j| j.failure()) {
        return Err(ApiError::new(
            ErrorCode::JournalUnavailable,
            format!(
                "the journal cannot write ({failure}); restart the server once the cause is fixed"
            ),
        ));
    }
    let health = Health {
        status: "ready",
        resumed_runs: Some(engine.resumed().len()),
    };
    Ok(axum::Json(health).into_response())
}

/// Unknown paths.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such endpoint (see /v1/openapi.json)",
    )
}

/// Known paths, wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take this method",
    )
}
