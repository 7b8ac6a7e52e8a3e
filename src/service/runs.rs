//! The run endpoints: start (with idempotency), list, status, result (with `?wait`),
//! cancel and terminate; and the definition endpoints: validate, components.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::actors::handle::{Handle, Workflow};
use crate::messages::orchestrator::{RunQuery, SubmitOptions};
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::parse::from_value;
use crate::runtime::semantics::outcome::RunStatus;
use crate::service::AppState;
use crate::service::body::{JsonBody, Query};
use crate::service::error::{ApiError, ErrorCode};

/// Longest run id and idempotency key taken.
const MAX_ID_LEN: usize = 256;

/// `POST /v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateRun {
    /// The workflow definition (ShipSec's `WorkflowDefinition`).
    definition: Value,
    /// The run's inputs.
    #[serde(default)]
    inputs: Option<JsonObject>,
    /// The run's id; a fresh UUID when absent.
    #[serde(default)]
    run_id: Option<String>,
    /// W3C `traceparent` of the caller's trace.
    #[serde(default)]
    traceparent: Option<String>,
}

/// `POST /v1/validate`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ValidateBody {
    /// The workflow definition.
    definition: Value,
}

/// Checks a definition as the server would run it: its shape, the engine's limits, the
/// server's definition policy, then validation against the engine's components.
fn prepare(state: &AppState, engine: &Handle, definition: Value) -> Result<Workflow, ApiError> {
    let definition =
        from_value(definition).map_err(crate::runtime::definition::load::LoadError::from)?;
    let problems = state.shared.config.definitions.check(&definition);
    if !problems.is_empty() {
        return Err(ApiError::invalid_definition(&problems));
    }
    Ok(engine.prepare(definition)?)
}

/// An id given by a client: printable, URL-safe, bounded.
fn checked_id(what: &str, id: &str) -> Result<(), ApiError> {
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
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_ID_LEN)
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
    let workflow = prepare(&state, &engine, body.definition)?;
    let options = SubmitOptions {
        run_id: body.run_id,
        idempotency_key,
        traceparent: body.traceparent,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<RunStatus>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A page of runs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    runs: Vec<crate::messages::orchestrator::RunSummary>,
    /// The cursor of the next (older) page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /v1/runs`: newest first, a page at a time.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let before = match &query.cursor {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`{c}` is not a cursor this server gave"),
            )
        })?),
    };
    let max = state.shared.config.max_page.max(1);
    let page = engine
        .list(RunQuery {
            status: query.status,
            limit: query.limit.unwrap_or(100).clamp(1, max),
            before,
        })
        .await?;
    Ok(axum::Json(Page {
        runs: page.runs,
        next_cursor: page.next.map(|n| n.to_string()),
    })
    .into_response())
}

/// `GET /v1/runs/{id}`.
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    Ok(axum::Json(engine.status(&run_id).await?).into_response())
}

/// `GET /v1/runs/{id}/result` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultQuery {
    /// Seconds to hold the request for the run to end.
    wait: Option<f64>,
}

/// `GET /v1/runs/{id}/result`: 200 and the result once the run has ended; else (after
/// `wait` seconds at most) 202 and its snapshot.
pub(crate) async fn result(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
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

/// `POST /v1/runs/{id}/cancel`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let stopped = engine.cancel(&run_id).await?;
    stopped_answer(&engine, &run_id, stopped).await
}

/// `POST /v1/runs/{id}/terminate`.
pub(crate) async fn terminate(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
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
pub(crate) async fn validate(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ValidateBody>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let workflow = prepare(&state, &engine, body.definition)?;
    let graph = workflow.graph();
    Ok(axum::Json(json!({
        "valid": true,
        "nodes": graph.len(),
        "edges": graph.edges.len(),
        "warnings": workflow.warnings(),
    }))
    .into_response())
}

/// `GET /v1/components`: the components a definition may use here, with what they take.
pub(crate) async fn components(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    Ok(axum::Json(json!({ "components": describe(engine.registry(), &state) })).into_response())
}

fn describe(registry: &ComponentRegistry, state: &AppState) -> Vec<Value> {
    let policy = &state.shared.config.definitions;
    let mut ids = registry.ids();
    ids.sort_unstable();
    ids.into_iter()
        .filter_map(|id| registry.meta(id))
        .map(|meta| {
            let allowed = policy.allows(meta.id);
            json!({
                "id": meta.id,
                "summary": meta.summary,
                "inputs": meta.inputs.iter().map(|i| json!({"name": i.name, "required": i.required})).collect::<Vec<_>>(),
                "maxConcurrency": meta.max_concurrency,
                "rateLimit": meta.rate_limit.as_ref().map(|r| json!({"perSecond": r.per_second, "burst": r.burst})),
                "allowed": allowed,
            })
        })
        .collect()
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: 200 once the journal is open and its runs resumed; 503 before.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    Ok(
        axum::Json(json!({ "status": "ready", "resumedRuns": engine.resumed().len() }))
            .into_response(),
    )
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
