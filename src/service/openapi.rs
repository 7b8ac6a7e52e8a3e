//! The service's OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]`
//! attributes and from the types they read and answer with, so it follows the code.
//! Served at `/v1/openapi.json`, printed by `shipsec openapi`, committed as
//! `docs/openapi.json` (a test checks that the three agree).
//!
//! What every operation shares is added here once: the bearer scheme, 401 where a token
//! is asked for, 503 while the engine starts or a request runs out of time, 500 for a
//! journal that fails.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::service::error::ErrorBody;
use crate::service::events::{self, StreamStatus};
use crate::service::{inputs, runs};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shipsec-orchestrator",
        description = "The control API of `shipsec serve`: start, watch, cancel and terminate \
            workflow runs. Every error is `{\"error\": {\"code\", \"message\", \"details\"?}}` \
            with a stable code (docs/api.md lists them)."
    ),
    paths(
        runs::create,
        runs::list,
        runs::status,
        runs::graph,
        runs::result,
        events::events,
        runs::cancel,
        runs::terminate,
        inputs::signal,
        inputs::list,
        inputs::describe,
        inputs::resolve,
        inputs::resolve_by_token,
        runs::validate,
        runs::components,
        runs::healthz,
        runs::readyz,
        serve,
    ),
    components(schemas(StreamStatus)),
    modifiers(&Shared),
    tags(
        (name = "runs", description = "Runs: start, watch, stop"),
        (name = "inputs", description = "Human-input requests of gates: list, read, resolve"),
        (name = "definitions", description = "Workflow definitions and the components they use"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

/// Adds what every operation shares.
struct Shared;

/// Responses every operation (but `/healthz`) may give.
const SHARED: [(&str, &str, &str); 3] = [
    (
        "401",
        "Unauthenticated",
        "UNAUTHENTICATED: no bearer token, or not one of the server's",
    ),
    (
        "500",
        "Internal",
        "INTERNAL: the engine failed in a way the request could not cause (its journal)",
    ),
    (
        "503",
        "Unavailable",
        "UNAVAILABLE (the engine is starting or stopping; `Retry-After`) or REQUEST_TIMEOUT",
    ),
];

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (_, name, description) in SHARED {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                )
                .build();
            components
                .responses
                .insert(name.to_owned(), response.into());
        }
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        link_new_runs(openapi);
        link_listed_inputs(openapi);
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                for (status, name, _) in SHARED {
                    if path == "/healthz" {
                        continue; // answered by the process itself, without a token
                    }
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

/// Operations on a run, reached from the `runId` that starting it answers with.
const RUN_OPERATIONS: [&str; 7] = [
    "describeRun",
    "runGraph",
    "runResult",
    "runEvents",
    "cancelRun",
    "terminateRun",
    "signalRun",
];

/// Links from a page of input requests to the operations on its first request.
fn link_listed_inputs(openapi: &mut utoipa::openapi::OpenApi) {
    let Some(list) = (openapi.paths.paths.get_mut("/v1/inputs")).and_then(|i| i.get.as_mut())
    else {
        return;
    };
    let Some(RefOr::T(response)) = list.responses.responses.get_mut("200") else {
        return;
    };
    for operation in ["describeInput", "resolveInput"] {
        let link = LinkBuilder::new()
            .operation_id(operation)
            .parameter("requestId", "$response.body#/inputs/0/requestId")
            .description(format!("`{operation}` of the page's first request"))
            .build();
        response.links.insert(operation.to_owned(), link.into());
    }
}

/// Links from `startRun`'s answers to the operations on the run it started (OpenAPI
/// links: what clients and stateful testers follow).
fn link_new_runs(openapi: &mut utoipa::openapi::OpenApi) {
    let Some(start) = (openapi.paths.paths.get_mut("/v1/runs")).and_then(|i| i.post.as_mut())
    else {
        return;
    };
    for status in ["200", "201"] {
        let Some(RefOr::T(response)) = start.responses.responses.get_mut(status) else {
            continue;
        };
        for operation in RUN_OPERATIONS {
            let link = LinkBuilder::new()
                .operation_id(operation)
                .parameter("id", "$response.body#/runId")
                .description(format!("`{operation}` of the run started"))
                .build();
            response.links.insert(operation.to_owned(), link.into());
        }
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON with a final newline (as committed in docs/openapi.json).
pub fn to_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // The document is plain data: it always serialises.
        let mut text = document().to_pretty_json().unwrap_or_default();
        text.push('\n');
        text
    })
    .clone()
}

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", operation_id = "openapi", summary = "This document",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)))]
pub(crate) async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], to_json()).into_response()
}
