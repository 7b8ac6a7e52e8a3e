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

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::actors::handle::{EventStream, Handle};
use crate::messages::supervisor::Subscription;
use crate::runtime::semantics::event::{ErrorInfo, EventType, Level, TraceEvent};
use crate::runtime::semantics::outcome::RunStatus;
use crate::runtime::semantics::result::{Progress, RunSnapshot};
use crate::runtime::timestamp::Timestamp;
use crate::service::AppState;
use crate::service::body::{PathId, Query};
use crate::service::error::ErrorBody;
use crate::service::error::{ApiError, ErrorCode};

/// Most events one JSON answer gives; the client asks again `after` the last.
pub(crate) const MAX_EVENTS_PAGE: usize = 10_000;

/// The shape events are given in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventFormat {
    /// docs/semantics.md §9.
    #[default]
    Native,
    /// ShipSec Studio's stored shape (`NODE_STARTED`, `nodeRef`, `sequence`, ...).
    Shipsec,
}

/// The query of the events endpoint.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Events after this `seq` (`Last-Event-ID` wins over it).
    after: Option<u64>,
    /// Most events in a JSON answer (10,000 by default and at most).
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// Their shape: `native` (docs/semantics.md §9) or `shipsec` (ShipSec's stored events).
    #[serde(default)]
    #[param(inline)]
    format: EventFormat,
}

/// A JSON page of events, in the asked-for shape (its schema is written out below: an
/// empty page is either shape).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum EventPage {
    /// `format=native`.
    Native(Vec<TraceEvent>),
    /// `format=shipsec`.
    Shipsec(Vec<ShipsecEvent>),
}

impl utoipa::PartialSchema for EventPage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::ToSchema;
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder};
        use utoipa::openapi::{Ref, RefOr};
        let page_of = |name: std::borrow::Cow<'static, str>, format: &str| {
            ArrayBuilder::new()
                .items(RefOr::Ref(Ref::from_schema_name(name)))
                .description(Some(format!("`format={format}`")))
        };
        AnyOfBuilder::new()
            .item(page_of(TraceEvent::name(), "native"))
            .item(page_of(ShipsecEvent::name(), "shipsec"))
            .description(Some("A page of events, in the asked-for shape"))
            .into()
    }
}

impl utoipa::ToSchema for EventPage {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((TraceEvent::name().into(), TraceEvent::schema()));
        <TraceEvent as utoipa::ToSchema>::schemas(schemas);
        schemas.push((ShipsecEvent::name().into(), ShipsecEvent::schema()));
        <ShipsecEvent as utoipa::ToSchema>::schemas(schemas);
    }
}

/// One event in ShipSec Studio's stored shape.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShipsecEvent {
    /// The event's `seq`, as text.
    id: String,
    /// The run.
    #[schema(value_type = String)]
    run_id: Arc<str>,
    /// The node's ref (empty for the run's own events).
    #[schema(value_type = String)]
    node_ref: Arc<str>,
    /// The event's `seq`.
    sequence: u64,
    /// ShipSec's event type.
    #[serde(rename = "type")]
    kind: ShipsecType,
    /// Severity.
    level: Level,
    /// When.
    timestamp: Timestamp,
    /// The event's data, with its context in `_metadata` (and our own type in
    /// `_metadata.engineType`).
    #[schema(value_type = Object)]
    data: Map<String, Value>,
    /// Human message.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// The failure, on `NODE_FAILED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
}

/// ShipSec's event types.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub(crate) enum ShipsecType {
    /// An attempt started.
    #[serde(rename = "NODE_STARTED")]
    Started,
    /// The node completed.
    #[serde(rename = "NODE_COMPLETED")]
    Completed,
    /// The node failed.
    #[serde(rename = "NODE_FAILED")]
    Failed,
    /// The node was skipped or cancelled.
    #[serde(rename = "NODE_SKIPPED")]
    Skipped,
    /// Anything else: queued, progress, retrying, resumed.
    #[serde(rename = "NODE_PROGRESS")]
    Progress,
    /// A gate waits for a person.
    #[serde(rename = "NODE_AWAITING_INPUT")]
    AwaitingInput,
}

/// What an event stream's `status` events carry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StreamStatus {
    /// The run.
    pub(crate) run_id: String,
    /// Its status.
    pub(crate) status: RunStatus,
    /// How far it is (while it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) progress: Option<Progress>,
    /// When it ended (once it has).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) completed_at: Option<Timestamp>,
}

/// ShipSec's stored event: `type` `NODE_*`, `nodeRef`, an integer `sequence`, context in
/// `data._metadata`. Transitions ShipSec has no type for keep ours in
/// `data._metadata.engineType` (QUEUED, RETRYING and RESUMED are `NODE_PROGRESS`,
/// CANCELLED is `NODE_SKIPPED` with its reason: ShipSec leaves such nodes without an
/// event today).
pub(crate) fn shipsec_event(event: &TraceEvent) -> ShipsecEvent {
    let kind = match event.kind {
        EventType::Started => ShipsecType::Started,
        EventType::Completed => ShipsecType::Completed,
        EventType::Failed => ShipsecType::Failed,
        EventType::Skipped | EventType::Cancelled => ShipsecType::Skipped,
        EventType::AwaitingInput => ShipsecType::AwaitingInput,
        EventType::Queued | EventType::Progress | EventType::Retrying | EventType::Resumed => {
            ShipsecType::Progress
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
    ShipsecEvent {
        id: event.seq.to_string(),
        run_id: event.run_id.clone(),
        node_ref: event.node_id.clone(),
        sequence: event.seq,
        kind,
        level: event.level,
        timestamp: event.timestamp,
        data,
        message: event.message.clone(),
        error: event.error.as_deref().cloned(),
    }
}

/// Live subscribers, per run and in all.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    counts: Mutex<(usize, HashMap<String, RunSubscribers>)>,
}

/// The subscribers of one run.
#[derive(Debug, Default)]
struct RunSubscribers {
    count: usize,
    frames: Arc<Frames>,
}

/// The recent trace frames of one run, shared by its subscribers: an event is serialised
/// once however many streams carry it (they move through the same events at about the
/// same time, so the recent ones are what they ask for).
#[derive(Debug, Default)]
struct Frames {
    recent: Mutex<BTreeMap<(u64, EventFormat), Bytes>>,
}

impl Frames {
    /// Frames kept per run.
    const KEPT: usize = 1_024;

    /// The SSE frame of `event` in `format`.
    fn get(&self, event: &TraceEvent, format: EventFormat) -> Bytes {
        let key = (event.seq, format);
        let lock = || {
            self.recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(frame) = lock().get(&key) {
            return frame.clone();
        }
        let frame = trace(event, format);
        let mut recent = lock();
        recent.insert(key, frame.clone());
        while recent.len() > Self::KEPT {
            recent.pop_first();
        }
        frame
    }
}

/// One counted subscriber; uncounted when dropped.
#[derive(Debug)]
struct Counted {
    subscribers: Arc<Subscribers>,
    run_id: String,
    frames: Arc<Frames>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self
            .subscribers
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.0 = counts.0.saturating_sub(1);
        if let Some(run) = counts.1.get_mut(&self.run_id) {
            run.count -= 1;
            if run.count == 0 {
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
    let of_run = counts.1.get(run_id).map_or(0, |run| run.count);
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
    let run = counts.1.entry(run_id.to_owned()).or_default();
    run.count += 1;
    Ok(Counted {
        subscribers: subscribers.clone(),
        run_id: run_id.to_owned(),
        frames: run.frames.clone(),
    })
}

/// `GET /v1/runs/{id}/events`: the run's events as JSON, or a live SSE stream.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", operation_id = "runEvents", summary = "A run's events, as JSON or a live SSE stream",
    description = "The run's trace events after `after` as a JSON array. With `Accept: text/event-stream`, a live \
Server-Sent Events stream: `event: status` (a StreamStatus) first; `event: trace` with `id: <seq>` and the event \
as `data` for every event; `event: status` and `event: terminal` (the RunResult) when the run ends, after which \
the stream ends; keep-alive comments meanwhile. `Last-Event-ID` resumes with no gap and no duplicate. A \
subscriber that falls `service.subscriberBuffer` events behind is disconnected and resumes from its last id.",
    params(("id" = String, Path, description = "The run's id"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^ *[0-9]{1,19} *$", description = "Resume after this seq"),
        EventsQuery),
    responses(
        (status = 200, description = "The events (JSON), or the live stream (SSE)", content(
            (EventPage = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "INVALID_REQUEST: a malformed query or Last-Event-ID", body = ErrorBody),
        (status = 404, description = "RUN_NOT_FOUND", body = ErrorBody),
        (status = 429, description = "TOO_MANY_SUBSCRIBERS (`Retry-After`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
pub(crate) async fn events(
    State(state): State<AppState>,
    PathId(run_id): PathId,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            seq_header(v.as_bytes()).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "Last-Event-ID must be an event's seq: 1 to 19 digits, at most {}, spaces around allowed",
                        i64::MAX
                    ),
                )
            })?,
        ),
    };
    if let Some(after) = query.after.filter(|&a| a > i64::MAX as u64) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("after={after} is past the largest seq ({})", i64::MAX),
        ));
    }
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
            Some(Some(event)) => page.push(event),
            _ => break,
        }
    }
    let page = match query.format {
        EventFormat::Native => EventPage::Native(page),
        EventFormat::Shipsec => EventPage::Shipsec(page.iter().map(shipsec_event).collect()),
    };
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
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stop = state.shared.stopping.clone();
    let status = frame("status", None, &stream_status(&first));
    let gone = tx.clone();
    // A zero interval would spin (the configuration refuses it; a library caller may not).
    let keep_alive = config.keep_alive.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let frames = counted.frames.clone();
        let _counted = counted;
        let stream = Stream {
            engine,
            run_id,
            format,
            frames,
            tx,
            keep_alive,
        };
        tokio::select! {
            () = stream.follow(after, feed, status) => {}
            // The server stops: the stream ends, and the client reconnects to the next.
            () = stop.cancelled() => {}
            // The client went away (its body was dropped): its place is free at once, not
            // at the run's next event.
            () = gone.closed() => {}
        }
    });
    let body = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// One SSE message: `event`, `id` when given, and `value` as JSON `data` (compact JSON
/// has no line break, so it is one `data` line).
fn frame(kind: &str, id: Option<u64>, value: &impl serde::Serialize) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    // Plain data always serialises.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn trace(event: &TraceEvent, format: EventFormat) -> Bytes {
    match format {
        EventFormat::Native => frame("trace", Some(event.seq), event),
        EventFormat::Shipsec => frame("trace", Some(event.seq), &shipsec_event(event)),
    }
}

/// The `status` an event stream starts with.
fn stream_status(snapshot: &RunSnapshot) -> StreamStatus {
    StreamStatus {
        run_id: snapshot.run_id.clone(),
        status: snapshot.status,
        progress: Some(snapshot.progress),
        completed_at: snapshot.completed_at,
    }
}

/// Most events written to a stream in one frame batch.
const BATCH: usize = 64;

/// One SSE stream being followed.
struct Stream {
    engine: Handle,
    run_id: String,
    format: EventFormat,
    frames: Arc<Frames>,
    tx: mpsc::Sender<Bytes>,
    keep_alive: Duration,
}

impl Stream {
    /// Sends the run's events until the run ends (then the terminal events), the client
    /// goes away, or the subscriber falls behind (its feed closes early). Events already
    /// waiting go out together in one write; a keep-alive comment goes out every
    /// `keep_alive` meanwhile.
    async fn follow(self, after: u64, mut feed: EventStream, status: Bytes) {
        if self.tx.send(status).await.is_err() {
            return;
        }
        let mut last = after;
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.keep_alive,
            self.keep_alive,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        while open {
            let first = tokio::select! {
                biased;
                event = feed.next() => event,
                _ = ticks.tick() => {
                    if self.tx.send(Bytes::from_static(b":\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut batch = Vec::with_capacity(512);
            last = first.seq;
            batch.extend_from_slice(&self.frames.get(&first, self.format));
            // What is already waiting joins the write; the first poll that finds nothing
            // ends the batch.
            for _ in 1..BATCH {
                match feed.next().now_or_never() {
                    Some(Some(event)) => {
                        last = event.seq;
                        batch.extend_from_slice(&self.frames.get(&event, self.format));
                    }
                    Some(None) => {
                        open = false;
                        break;
                    }
                    None => break,
                }
            }
            if self.tx.send(Bytes::from(batch)).await.is_err() {
                return;
            }
        }
        self.finish(last).await;
    }

    /// After the feed closed: the run ended (the events a dropped feed did not deliver,
    /// then `status` and `terminal`), or this subscriber fell a buffer behind (nothing:
    /// the client reconnects from its last id).
    async fn finish(self, last: u64) {
        let Ok(run) = self.engine.run(&self.run_id).await else {
            return;
        };
        let Some(result) = run.try_result() else {
            return;
        };
        if let Ok(mut rest) = self
            .engine
            .subscribe(
                &self.run_id,
                Subscription {
                    after: last,
                    buffer: None,
                },
            )
            .await
        {
            while let Some(event) = rest.next().await {
                if self.tx.send(trace(&event, self.format)).await.is_err() {
                    return;
                }
            }
        }
        let summary = StreamStatus {
            run_id: result.run_id.clone(),
            status: result.status,
            progress: None,
            completed_at: Some(result.completed_at),
        };
        if self.tx.send(frame("status", None, &summary)).await.is_ok() {
            let _ = self.tx.send(frame("terminal", None, &*result)).await;
        }
    }
}

/// A `Last-Event-ID` as documented (`^ *[0-9]{1,19} *$`): digits only (no sign), spaces
/// around, and a seq is at most `i64::MAX` (the document says int64; clients in other
/// languages hold it in one).
fn seq_header(value: &[u8]) -> Option<u64> {
    let start = value.iter().position(|b| *b != b' ')?;
    let end = value.iter().rposition(|b| *b != b' ')? + 1;
    let digits = &value[start..end];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|seq| *seq <= i64::MAX as u64)
}

#[cfg(test)]
mod seq_tests {
    use super::seq_header;

    #[test]
    fn last_event_id_takes_digits_with_spaces_around_and_nothing_else() {
        assert_eq!(seq_header(b"42"), Some(42));
        assert_eq!(seq_header(b"  7 "), Some(7));
        assert_eq!(seq_header(b"9223372036854775807"), Some(i64::MAX as u64));
        for bad in [
            &b"+3"[..],
            b"-1",
            b"3 4",
            b"\t3",
            b"",
            b"  ",
            b"9223372036854775808",
            b"99999999999999999999",
            b"0x10",
        ] {
            assert_eq!(seq_header(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
