//! HTTP server metrics with OpenTelemetry's semantic-convention names:
//! `http.server.request.duration` (seconds, by `http.request.method`, `http.route` and
//! `http.response.status_code`) and `http.server.active_requests`, beside the engine's.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, UpDownCounter};

use crate::service::AppState;

/// The instruments.
#[derive(Debug, Clone)]
pub(crate) struct HttpMetrics {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
}

impl HttpMetrics {
    /// From the global meter provider (telemetry installed first, or a no-op).
    pub(crate) fn from_global() -> HttpMetrics {
        let meter = opentelemetry::global::meter("shipsec-orchestrator");
        HttpMetrics {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_unit("{request}")
                .with_description("Number of active HTTP server requests.")
                .build(),
        }
    }
}

/// Records every request.
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let metrics = &state.shared.metrics;
    let method = KeyValue::new("http.request.method", request.method().as_str().to_owned());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| KeyValue::new("http.route", p.as_str().to_owned()));
    let started = Instant::now();
    metrics.active.add(1, std::slice::from_ref(&method));
    let response = next.run(request).await;
    metrics.active.add(-1, std::slice::from_ref(&method));
    let mut attributes = vec![
        method,
        KeyValue::new(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        ),
        KeyValue::new("url.scheme", "http"),
    ];
    attributes.extend(route);
    metrics
        .duration
        .record(started.elapsed().as_secs_f64(), &attributes);
    response
}
