//! `shipsec serve`: the HTTP control API over an engine, for callers that cannot hold the
//! in-process [`Handle`] (ShipSec's TypeScript backend first). JSON, camelCase; every
//! error is `{"error": {"code", "message", "details"?}}` with a stable code
//! ([`error::ErrorCode`]). docs/api.md describes every endpoint, docs/shipsec.md maps
//! ShipSec's `TemporalService` onto them.
//!
//! - `runs`: start (idempotent), list, status, result (`?wait`), cancel, terminate,
//!   validate, components, health;
//! - `events`: the trace as JSON or a live SSE stream, resumable from any `seq`;
//! - `auth`: bearer tokens compared in constant time, and `Host` checked without them;
//! - `body`: JSON bodies and queries read with their limits and located errors;
//! - `listen`: TCP and Unix-socket listeners, graceful stop;
//! - `metrics`: HTTP server metrics;
//! - `openapi`: the OpenAPI document, derived from the handlers and their types;
//! - `ui`: the run view in the browser (pages embedded in the binary), and HTML reports;
//! - `graph`: the graph of a run as the run view draws it.
//!
//! A [`Service`] is built before its engine exists: it answers `/healthz` at once and
//! `/readyz` (and every other endpoint) with 503 until [`Service::ready`] gives it the
//! engine, once the journal is open and its runs resumed.

pub mod error;
pub mod graph;
pub mod listen;

mod auth;
mod body;
mod events;
mod inputs;
pub mod links;
mod metrics;
pub mod openapi;
mod runs;
pub mod ui;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::actors::handle::Handle;
use crate::net::guard::TrackLayer;
use crate::runtime::guardrails::service::ServiceConfig;
use crate::service::error::{ApiError, ErrorCode};

/// What a server needs besides its engine.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Limits and the definition policy (the engine configuration's `service:`).
    pub config: ServiceConfig,
    /// Bearer tokens accepted; none: every request is taken (listen locally only).
    pub tokens: Vec<String>,
    /// What the run view's pages are told (the Jaeger link).
    pub ui: ui::UiConfig,
    /// Host names the server listens under (`--listen` hosts): a server without tokens
    /// answers requests addressed to them besides loopback ones.
    pub listen_hosts: Vec<String>,
    /// The public input links' key, when `service.publicInputLinks` is on.
    pub links: Option<links::InputLinks>,
}

impl ServiceOptions {
    /// Options with `config` and no token.
    pub fn new(config: ServiceConfig) -> ServiceOptions {
        ServiceOptions {
            config,
            tokens: Vec::new(),
            ui: ui::UiConfig::default(),
            listen_hosts: Vec::new(),
            links: None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    engine: OnceLock<Handle>,
    config: ServiceConfig,
    tokens: auth::Tokens,
    /// `ServiceOptions::listen_hosts`.
    hosts: Vec<String>,
    subscribers: Arc<events::Subscribers>,
    /// Cancelled when the server stops: event streams and waits end.
    stopping: CancellationToken,
    metrics: metrics::HttpMetrics,
    /// The run view's page, told the server's [`ui::UiConfig`].
    page: axum::body::Bytes,
    /// Public input links, when on.
    links: Option<links::InputLinks>,
}

/// The state every handler gets.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    shared: Arc<Shared>,
}

impl AppState {
    /// The engine, once ready.
    fn engine(&self) -> Result<Handle, ApiError> {
        self.shared.engine.get().cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                "the engine is starting: its journal is being opened and its runs resumed",
            )
        })
    }
}

/// The HTTP service of one engine.
#[derive(Debug, Clone)]
pub struct Service {
    state: AppState,
}

impl Service {
    /// A service with no engine yet (every endpoint but `/healthz` answers 503).
    pub fn new(options: ServiceOptions) -> Service {
        Service {
            state: AppState {
                shared: Arc::new(Shared {
                    engine: OnceLock::new(),
                    tokens: auth::tokens(&options.tokens),
                    hosts: options.listen_hosts,
                    config: options.config,
                    subscribers: Arc::default(),
                    stopping: CancellationToken::new(),
                    metrics: metrics::HttpMetrics::from_global(),
                    page: ui::page_html(&options.ui),
                    links: options.links,
                }),
            },
        }
    }

    /// Gives the service its engine: it is ready. A second engine is refused.
    ///
    /// # Errors
    /// The engine given, when the service has one already.
    pub fn ready(&self, engine: Handle) -> Result<(), Handle> {
        self.state.shared.engine.set(engine)
    }

    /// Whether the service has no token, so must listen locally only.
    pub fn is_open(&self) -> bool {
        self.state.shared.tokens.is_empty()
    }

    /// Ends the event streams and the waits in flight (the server is stopping).
    pub fn stop_streams(&self) {
        self.state.shared.stopping.cancel();
    }

    /// What is cancelled when the server stops.
    pub fn stopping(&self) -> CancellationToken {
        self.state.shared.stopping.clone()
    }

    /// The routes.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let timeout = state.shared.config.request_timeout;
        // Bounded by the request timeout: everything but what holds a request on purpose.
        let bounded = Router::new()
            .route("/v1/runs", post(runs::create).get(runs::list))
            .route("/v1/runs/{id}", get(runs::status))
            .route("/v1/runs/{id}/graph", get(runs::graph))
            .route("/v1/runs/{id}/cancel", post(runs::cancel))
            .route("/v1/runs/{id}/terminate", post(runs::terminate))
            .route("/v1/runs/{id}/signals/{name}", post(inputs::signal))
            .route("/v1/inputs", get(inputs::list))
            .route("/v1/inputs/{requestId}", get(inputs::describe))
            .route("/v1/inputs/{requestId}/resolve", post(inputs::resolve))
            .route("/v1/validate", post(runs::validate))
            .route("/v1/components", get(runs::components))
            .route("/healthz", get(runs::healthz))
            .route("/readyz", get(runs::readyz))
            .route("/v1/openapi.json", get(openapi::serve))
            .route_layer(middleware::from_fn_with_state(timeout, time_limit));
        let held = Router::new()
            .route("/v1/runs/{id}/result", get(runs::result))
            .route("/v1/runs/{id}/events", get(events::events));
        // A public input link is its own credential: no bearer token.
        let public = match &state.shared.links {
            Some(_) => Router::new().route(
                "/v1/inputs/resolve/{token}",
                post(inputs::resolve_by_token)
                    .route_layer(middleware::from_fn_with_state(timeout, time_limit)),
            ),
            None => Router::new(),
        };
        // The pages hold no data: no token (their requests carry it).
        let pages = Router::new()
            .route("/", get(page))
            .route("/runs/{id}", get(page))
            .route("/inputs", get(page))
            .route("/ui/app.js", get(ui::app_js))
            .route("/ui/app.css", get(ui::app_css));
        bounded
            .merge(held)
            .fallback(runs::not_found)
            .method_not_allowed_fallback(runs::method_not_allowed)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_token,
            ))
            .merge(pages)
            .merge(public)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                auth::check_host,
            ))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                metrics::record,
            ))
            .layer(DefaultBodyLimit::max(state.shared.config.max_body_bytes))
            .layer(middleware::from_fn_with_state(
                state.shared.config.max_body_bytes,
                declared_length,
            ))
            .layer(TrackLayer)
            .with_state(state)
    }
}

/// The run view's page.
async fn page(State(state): State<AppState>) -> Response {
    ui::page(state.shared.page.clone())
}

/// 413 `PAYLOAD_TOO_LARGE` at once for a request whose `Content-Length` is over `limit`,
/// and the connection closed after it: the body is never waited for.
async fn declared_length(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => {
            let mut response = ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the body is {length} bytes, more than the {limit} this server takes (service.maxBodyBytes)"
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        _ => next.run(request).await,
    }
}

/// 503 `REQUEST_TIMEOUT` for a request that takes longer than `limit`.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request took longer than {} s (service.requestTimeoutSeconds)",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}
