//! `GET /v1/runs/{id}/events`: a run's trace events as a JSON array, or with
//! `Accept: text/event-stream` a live Server-Sent Events stream.
//!
//! The stream: `event: status` first (the run's status then), `event: trace` with
//! `id: <seq>` for every event, `event: status` again and `event: terminal` with the run
//! result when the run ends, after which the stream ends; keep-alive comments meanwhile.
//! It starts after `Last-Event-ID` (or `?after=`), so a client that reconnects gets no
//! gap and no duplicate. A subscriber that falls `service.subscriberBuffer` events behind
//! is disconnected rather than buffered without bound; it reconnects from its last id.
//! Subscribers are counted per run and in all, and refused (429) past the limits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::actors::handle::Handle;
use crate::messages::event::{EventType, TraceEvent};
use crate::messages::supervisor::Subscription;
use crate::service::body::Query;
use crate::service::error::{ApiError, ErrorCode};
use crate::service::{AppState, run_summary};

/// Most events one JSON answer gives; the client asks again `after` the last.
pub(crate) const MAX_EVENTS_PAGE: usize = 10_000;

/// The shape events are given in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventFormat {
    /// docs/semantics.md §9.
    #[default]
    Native,
    /// ShipSec Studio's stored shape (`NODE_STARTED`, `nodeRef`, `sequence`, ...).
    Shipsec,
}

/// The query of the events endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Events after this `seq`.
    after: Option<u64>,
    /// Most events in a JSON answer (at most [`MAX_EVENTS_PAGE`]).
    limit: Option<usize>,
    /// Their shape.
    #[serde(default)]
    format: EventFormat,
}

/// The event in the asked-for shape.
pub(crate) fn shaped(event: &TraceEvent, format: EventFormat) -> Value {
    match format {
        // A trace event always serialises.
        EventFormat::Native => serde_json::to_value(event).unwrap_or(Value::Null),
        EventFormat::Shipsec => shipsec_event(event),
    }
}

/// ShipSec's stored event: `type` `NODE_*`, `nodeRef`, an integer `sequence`, context in
/// `data._metadata`. Transitions ShipSec has no type for keep ours in
/// `data._metadata.engineType` (QUEUED, RETRYING and RESUMED are `NODE_PROGRESS`,
/// CANCELLED is `NODE_SKIPPED` with its reason: ShipSec leaves such nodes without an
/// event today).
pub(crate) fn shipsec_event(event: &TraceEvent) -> Value {
    let kind = match event.kind {
        EventType::Started => "NODE_STARTED",
        EventType::Completed => "NODE_COMPLETED",
        EventType::Failed => "NODE_FAILED",
        EventType::Skipped | EventType::Cancelled => "NODE_SKIPPED",
        EventType::Queued | EventType::Progress | EventType::Retrying | EventType::Resumed => {
            "NODE_PROGRESS"
        }
    };
    let mut data = match event.data.as_deref() {
        Some(Value::Object(map)) => map.clone(),
        Some(other) => Map::from_iter([("value".to_owned(), other.clone())]),
        None => Map::new(),
    };
    let mut metadata = match event.metadata.as_ref().map(serde_json::to_value) {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    };
    // An event always serialises its type.
    metadata.insert(
        "engineType".into(),
        serde_json::to_value(event.kind).unwrap_or_default(),
    );
    data.insert("_metadata".into(), Value::Object(metadata));
    let mut out = json!({
        "id": event.seq.to_string(),
        "runId": event.run_id,
        "nodeRef": event.node_id,
        "sequence": event.seq,
        "type": kind,
        "level": event.level,
        "timestamp": event.timestamp,
        "data": data,
    });
    if let Some(message) = &event.message {
        out["message"] = json!(message);
    }
    if let Some(error) = &event.error {
        out["error"] = json!({ "message": error.message, "type": error.error_type });
    }
    out
}

/// Live subscribers, per run and in all.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    counts: Mutex<(usize, HashMap<String, usize>)>,
}

/// One counted subscriber; uncounted when dropped.
#[derive(Debug)]
struct Counted {
    subscribers: Arc<Subscribers>,
    run_id: String,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self
            .subscribers
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.0 = counts.0.saturating_sub(1);
        if let Some(n) = counts.1.get_mut(&self.run_id) {
            *n -= 1;
            if *n == 0 {
                counts.1.remove(&self.run_id);
            }
        }
    }
}

fn count(
    subscribers: &Arc<Subscribers>,
    run_id: &str,
    per_run: usize,
    total: usize,
) -> Result<Counted, ApiError> {
    let mut counts = subscribers
        .counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let of_run = counts.1.get(run_id).copied().unwrap_or(0);
    if counts.0 >= total || of_run >= per_run {
        let which = if of_run >= per_run {
            format!(
                "run `{run_id}` has {of_run} event-stream subscribers (service.maxSubscribersPerRun)"
            )
        } else {
            format!(
                "the server has {} event-stream subscribers (service.maxSubscribers)",
                counts.0
            )
        };
        return Err(ApiError::new(ErrorCode::TooManySubscribers, which));
    }
    counts.0 += 1;
    *counts.1.entry(run_id.to_owned()).or_insert(0) += 1;
    Ok(Counted {
        subscribers: subscribers.clone(),
        run_id: run_id.to_owned(),
    })
}

/// `GET /v1/runs/{id}/events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        "Last-Event-ID must be an event's seq (a whole number)",
                    )
                })?,
        ),
    };
    let after = last_event_id.or(query.after).unwrap_or(0);
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if streaming {
        return stream(state, engine, run_id, after, query.format).await;
    }
    let limit = query
        .limit
        .unwrap_or(MAX_EVENTS_PAGE)
        .clamp(1, MAX_EVENTS_PAGE);
    let mut feed = engine
        .subscribe(
            &run_id,
            Subscription {
                after,
                buffer: Some(1),
            },
        )
        .await?;
    // What the run has emitted so far: the backlog, and any live event already there.
    let mut page = Vec::new();
    while page.len() < limit {
        match feed.next().now_or_never() {
            Some(Some(event)) => page.push(shaped(&event, query.format)),
            _ => break,
        }
    }
    Ok(axum::Json(page).into_response())
}

/// Starts the SSE stream of a run.
async fn stream(
    state: AppState,
    engine: Handle,
    run_id: String,
    after: u64,
    format: EventFormat,
) -> Result<Response, ApiError> {
    let config = &state.shared.config;
    // Known before counted: an unknown run is 404, whatever the counts.
    let first = engine.status(&run_id).await?;
    let counted = count(
        &state.shared.subscribers,
        &run_id,
        config.max_subscribers_per_run,
        config.max_subscribers,
    )?;
    let buffer = config.subscriber_buffer.max(1);
    let feed = engine
        .subscribe(
            &run_id,
            Subscription {
                after,
                buffer: Some(buffer),
            },
        )
        .await?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    let stop = state.shared.stopping.clone();
    let status = sse_json("status", &run_summary(&first));
    tokio::spawn(async move {
        let _counted = counted;
        let follow = follow(engine, run_id, after, format, feed, status, tx);
        tokio::select! {
            () = follow => {}
            // The server stops: the stream ends, and the client reconnects to the next.
            () = stop.cancelled() => {}
        }
    });
    let body = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(state.shared.keep_alive))
        .into_response())
}

fn sse_json(kind: &str, value: &impl serde::Serialize) -> Event {
    // Plain data always serialises.
    Event::default()
        .event(kind)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(kind))
}

fn trace(event: &TraceEvent, format: EventFormat) -> Event {
    Event::default()
        .event("trace")
        .id(event.seq.to_string())
        .json_data(shaped(event, format))
        .unwrap_or_else(|_| Event::default().event("trace"))
}

/// Sends the run's events to `tx` until the run ends (then the terminal events), the
/// client goes away, or the subscriber falls behind (its feed closes early).
async fn follow(
    engine: Handle,
    run_id: String,
    after: u64,
    format: EventFormat,
    mut feed: crate::actors::handle::EventStream,
    status: Event,
    tx: mpsc::Sender<Event>,
) {
    if tx.send(status).await.is_err() {
        return;
    }
    let mut last = after;
    while let Some(event) = feed.next().await {
        last = event.seq;
        if tx.send(trace(&event, format)).await.is_err() {
            return;
        }
    }
    // The feed closed: the run ended, or this subscriber fell a buffer behind.
    let Ok(run) = engine.run(&run_id).await else {
        return;
    };
    let Some(result) = run.try_result() else {
        return; // fell behind: the client reconnects from `last`
    };
    // What a dropped feed did not deliver before the end.
    if let Ok(mut rest) = engine
        .subscribe(
            &run_id,
            Subscription {
                after: last,
                buffer: None,
            },
        )
        .await
    {
        while let Some(event) = rest.next().await {
            if tx.send(trace(&event, format)).await.is_err() {
                return;
            }
        }
    }
    let summary = json!({
        "runId": result.run_id,
        "status": result.status,
        "completedAt": result.completed_at,
    });
    if tx.send(sse_json("status", &summary)).await.is_ok() {
        let _ = tx.send(sse_json("terminal", &*result)).await;
    }
}
