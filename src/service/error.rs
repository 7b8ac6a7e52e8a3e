//! The service's errors: every one is `{"error": {"code", "message", "details"?}}` with a
//! stable upper-case code and the HTTP status that goes with it (docs/api.md lists them).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::actors::handle::EngineError;
use crate::messages::orchestrator::RunCommandError;
use crate::runtime::definition::load::LoadError;
use crate::runtime::definition::parse::ParseError;
use crate::runtime::definition::validate::Problem;
use crate::runtime::semantics::gate::ResolveError;
use crate::runtime::semantics::inbox::SignalError;

/// The stable codes of the service's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 401: no bearer token, or not one of the server's.
    Unauthenticated,
    /// 403: a server without tokens answers only requests addressed to loopback (or a
    /// `--listen` host); the `Host` header named another (DNS rebinding).
    HostNotAllowed,
    /// 404: no run has this id (distinct from every other error: ShipSec infers STALE).
    RunNotFound,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint does not take this method.
    MethodNotAllowed,
    /// 409: a run with this id exists already (and no matching idempotency key).
    RunExists,
    /// 409: the idempotency key was used for another definition or other inputs.
    IdempotencyConflict,
    /// 409: the run has ended; there is nothing to cancel or terminate.
    RunAlreadyEnded,
    /// 404: the run has no input request with this id.
    InputNotFound,
    /// 409: the input request was resolved with another answer.
    InputAlreadyResolved,
    /// 409: the input request expired or was cancelled.
    InputNotPending,
    /// 400: the body is not well-formed JSON (`details`: line and column).
    MalformedJson,
    /// 400: a query parameter or header is malformed.
    InvalidRequest,
    /// 413: the body is over `service.maxBodyBytes`.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: the definition does not validate, is over a limit, or uses what this server
    /// does not allow (`details.problems`: `[{path, message}]`).
    InvalidDefinition,
    /// 422: the body is JSON of the wrong shape, or the run's inputs do not fit.
    InvalidInput,
    /// 429: the engine runs as many runs as its admission limit allows (`Retry-After`).
    Overloaded,
    /// 429: too many event-stream subscribers, for the run or in all (`Retry-After`).
    TooManySubscribers,
    /// 503: the engine is still resuming its runs, or shutting down (`Retry-After`).
    Unavailable,
    /// 503: the request took longer than `service.requestTimeoutSeconds`.
    RequestTimeout,
    /// 503: the server holds as many connections as `service.connections.maxConnections`
    /// (answered on the connection itself, which is then closed; `Retry-After`).
    TooManyConnections,
    /// 503: the journal cannot write (a write failed: a full disk, a dead device); the
    /// server takes no new work until it restarts (`/readyz` says the same).
    JournalUnavailable,
    /// 500: the engine failed in a way the request could not cause.
    Internal,
}

impl ErrorCode {
    /// The HTTP status of the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::HostNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::RunNotFound | ErrorCode::NotFound | ErrorCode::InputNotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RunExists
            | ErrorCode::IdempotencyConflict
            | ErrorCode::RunAlreadyEnded
            | ErrorCode::InputAlreadyResolved
            | ErrorCode::InputNotPending => StatusCode::CONFLICT,
            ErrorCode::MalformedJson | ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidDefinition | ErrorCode::InvalidInput => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::Overloaded | ErrorCode::TooManySubscribers => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable
            | ErrorCode::RequestTimeout
            | ErrorCode::TooManyConnections
            | ErrorCode::JournalUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds a client should wait before it asks again, for the codes that say so.
    fn retry_after(self) -> Option<u32> {
        match self {
            ErrorCode::Overloaded
            | ErrorCode::TooManySubscribers
            | ErrorCode::Unavailable
            | ErrorCode::TooManyConnections => Some(1),
            _ => None,
        }
    }
}

/// Problems a 422 lists; past them it says how many it left out (`omittedProblems`), so
/// that a request with a million faults gets an answer of bounded size.
pub const PROBLEMS_LISTED: usize = 100;

/// An error answer of the service.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, as a sentence.
    pub message: String,
    /// Structured details (problems, line and column, ...).
    pub details: Option<Value>,
}

impl ApiError {
    /// An error without details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The same error with `details`.
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// A definition refused for `problems` (422 `INVALID_DEFINITION`): the first
    /// [`PROBLEMS_LISTED`] of them, and how many more were left out.
    pub fn invalid_definition(problems: &[Problem]) -> ApiError {
        ApiError::problems(
            ErrorCode::InvalidDefinition,
            "invalid workflow definition",
            problems,
        )
    }

    /// `what` was refused for `problems`: the first [`PROBLEMS_LISTED`] of them in
    /// `details.problems`, and how many more were left out.
    pub(crate) fn problems(code: ErrorCode, what: &str, problems: &[Problem]) -> ApiError {
        let n = problems.len();
        let first = problems.first().map_or(String::new(), |p| format!(": {p}"));
        let listed = &problems[..n.min(PROBLEMS_LISTED)];
        let mut details = json!({ "problems": listed });
        if listed.len() < n {
            details["omittedProblems"] = json!(n - listed.len());
        }
        let plural = if n == 1 { "" } else { "s" };
        ApiError::new(code, format!("{what} ({n} problem{plural}){first}")).with_details(details)
    }

    /// The JSON body of the error.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                code: self.code,
                message: &self.message,
                details: self.details.as_ref(),
            },
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorObject<'a>,
}

/// `{code, message, details?}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorObject<'a> {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, as a sentence.
    #[schema(value_type = String)]
    pub message: &'a str,
    /// Structured details: `problems` (`[{path, message}]`) of a refused definition, `line`
    /// and `column` of malformed JSON, the `runId` concerned, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<&'a Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code.status(), axum::Json(self.body())).into_response();
        if let Some(seconds) = self.code.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> ApiError {
        match e {
            LoadError::Invalid(e) => ApiError::invalid_definition(&e.problems),
            LoadError::Parse(ParseError::Shape { path, message }) => {
                ApiError::invalid_definition(&[Problem { path, message }])
            }
            LoadError::Limit(limit) => ApiError::invalid_definition(&[Problem {
                path: limit.path.clone(),
                message: limit.to_string(),
            }]),
            // A definition arrives as JSON the server parsed already; these are reads of
            // files and text.
            e @ (LoadError::Parse(ParseError::Syntax { .. }) | LoadError::Io { .. }) => {
                ApiError::new(ErrorCode::InvalidDefinition, e.to_string())
            }
        }
    }
}

impl From<RunCommandError> for ApiError {
    fn from(e: RunCommandError) -> ApiError {
        let message = e.to_string();
        match e {
            RunCommandError::UnknownRun(id) => {
                ApiError::new(ErrorCode::RunNotFound, message).with_details(json!({ "runId": id }))
            }
            RunCommandError::DuplicateRun(id) => {
                ApiError::new(ErrorCode::RunExists, message).with_details(json!({ "runId": id }))
            }
            RunCommandError::InvalidInputs(_) => ApiError::new(ErrorCode::InvalidInput, message),
            RunCommandError::Overloaded { active, limit } => {
                ApiError::new(ErrorCode::Overloaded, message)
                    .with_details(json!({ "activeRuns": active, "maxActiveRuns": limit }))
            }
            RunCommandError::IdempotencyConflict { key, run_id } => {
                ApiError::new(ErrorCode::IdempotencyConflict, message)
                    .with_details(json!({ "idempotencyKey": key, "runId": run_id }))
            }
            RunCommandError::ShuttingDown => ApiError::new(ErrorCode::Unavailable, message),
            RunCommandError::Journal(_) => ApiError::new(ErrorCode::JournalUnavailable, message),
            RunCommandError::Spawn(_) => ApiError::new(ErrorCode::Internal, message),
            RunCommandError::RunEnded(id) => ApiError::new(ErrorCode::RunAlreadyEnded, message)
                .with_details(json!({ "runId": id })),
            RunCommandError::Signal(SignalError::Input(refused)) => {
                RunCommandError::Input(refused).into()
            }
            RunCommandError::Signal(_) => ApiError::new(ErrorCode::InvalidInput, message),
            RunCommandError::Input(refused) => match refused {
                ResolveError::Unknown(_) => ApiError::new(ErrorCode::InputNotFound, message),
                ResolveError::AlreadyResolved(_) => {
                    ApiError::new(ErrorCode::InputAlreadyResolved, message)
                }
                ResolveError::NotPending { status, .. } => {
                    ApiError::new(ErrorCode::InputNotPending, message)
                        .with_details(json!({ "status": status }))
                }
                ResolveError::InvalidResponse { problems, .. } => ApiError::problems(
                    ErrorCode::InvalidInput,
                    "the answer does not fit what the request asks",
                    &problems,
                ),
            },
            RunCommandError::Unreadable { run_id, .. } => {
                ApiError::new(ErrorCode::Internal, message).with_details(json!({ "runId": run_id }))
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Invalid(e) => e.into(),
            EngineError::Run(e) => e.into(),
            EngineError::Unavailable => ApiError::new(ErrorCode::Unavailable, e.to_string()),
            EngineError::Config(_) | EngineError::Start(_) | EngineError::Journal(_) => {
                ApiError::new(ErrorCode::Internal, e.to_string())
            }
        }
    }
}
