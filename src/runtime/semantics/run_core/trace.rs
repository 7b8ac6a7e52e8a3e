//! The run's trace events (docs/semantics.md §9), shaped by the run core as it decides:
//! one per transition, `seq` dense from 1, with the metadata every event of a node
//! carries.

use super::*;

impl RunCore {
    /// The metadata of a node's QUEUED or STARTED event.
    pub(super) fn start_metadata(&self, start: &StartReport) -> EventMetadata {
        let mut metadata = self.base_metadata(start.node);
        metadata.attempt = Some(start.attempt);
        metadata.triggered_by =
            (!start.triggered_by.is_empty()).then(|| self.refs_of(&start.triggered_by));
        metadata.failure = start.failure.as_deref().cloned().map(Box::new);
        metadata
    }

    /// A node's attempt waits for slots (QUEUED) or starts (STARTED).
    pub(super) fn trace_start(
        &mut self,
        node: NodeIx,
        queued: bool,
        metadata: EventMetadata,
        now: Time,
    ) {
        let kind = if queued {
            EventType::Queued
        } else {
            EventType::Started
        };
        self.emit(node, kind, Level::Info, now, |e| {
            e.metadata = Some(metadata)
        });
    }

    /// A node's attempt `attempt` failed with `error`; the next follows after `delay`.
    pub(super) fn trace_retry(
        &mut self,
        node: NodeIx,
        attempt: u32,
        delay: Duration,
        error: &ComponentError,
        now: Time,
    ) {
        let mut metadata = self.base_metadata(node);
        metadata.attempt = Some(attempt);
        metadata.worker_id = self.worker_of(node, attempt);
        self.emit(node, EventType::Retrying, Level::Warn, now, |e| {
            e.message = Some(format!(
                "attempt {attempt} failed; attempt {} in {} ms",
                attempt + 1,
                delay.as_millis()
            ));
            e.error = Some(Box::new(error_info(error)));
            e.data = Some(Box::new(
                json!({"delayMs": delay.as_millis() as u64, "nextAttempt": attempt + 1}),
            ));
            e.metadata = Some(metadata);
        });
    }

    /// A node's terminal event: its reason, error or activated ports.
    pub(super) fn trace_end(&mut self, end: &NodeEnd, now: Time) {
        let node = end.node;
        let (kind, level) = match end.terminal() {
            Terminal::Completed => (EventType::Completed, Level::Info),
            Terminal::Failed => (EventType::Failed, Level::Error),
            Terminal::Skipped => (EventType::Skipped, Level::Warn),
            Terminal::Cancelled => (EventType::Cancelled, Level::Warn),
        };
        let mut metadata = self.base_metadata(node);
        metadata.attempt = (end.attempts > 0).then_some(end.attempts);
        metadata.worker_id = self.worker_of(node, end.attempts);
        metadata.failure = end.handled.as_deref().cloned().map(Box::new);
        let error = self.end_error(end);
        let triggered = self.records[node.ix()].triggered_by.clone();
        metadata.triggered_by = triggered
            .filter(|t| !t.is_empty())
            .map(|t| self.refs_of(&t));
        self.emit(node, kind, level, now, |e| {
            e.message = end.reason();
            e.error = error.map(Box::new);
            e.data = end
                .active_ports()
                .map(|p| Box::new(json!({"activatedPorts": p})));
            e.metadata = Some(metadata);
        });
    }

    /// The run-level `RESUMED` event (its `nodeId` is empty): the attempts lost, each with
    /// its attempt id.
    /// A gate's attempt asked for input (AWAITING_INPUT, ShipSec's event): `data` is
    /// `{requestId, inputType, title, description, timeoutAt}`.
    pub(super) fn trace_awaiting(&mut self, node: NodeIx, request: &InputRequest, now: Time) {
        let mut metadata = self.base_metadata(node);
        metadata.attempt = Some(request.attempt);
        let input = &request.input;
        let data = json!({
            "requestId": request.request_id,
            "inputType": input.input_type.as_str(),
            "title": input.title,
            "description": input.description,
            "timeoutAt": request.deadline.map(|d| d.timestamp().to_string()),
        });
        self.emit(node, EventType::AwaitingInput, Level::Info, now, |e| {
            e.message = Some(format!("waiting for input: {}", input.title));
            e.data = Some(Box::new(data));
            e.metadata = Some(metadata);
        });
    }

    /// A request left `pending`: a `PROGRESS` event of its gate says how (`data`:
    /// `{requestId, status, respondedBy?}`), before the gate's own end.
    pub(super) fn trace_settled(&mut self, node: NodeIx, request: &InputRequest, now: Time) {
        let mut metadata = self.base_metadata(node);
        metadata.attempt = Some(request.attempt);
        let status = request.status.as_str();
        let by = request
            .resolution
            .as_ref()
            .and_then(|(r, _)| r.responded_by.clone());
        let message = match &by {
            Some(by) => format!("input request {status} by {by}"),
            None => format!("input request {status}"),
        };
        let data = json!({
            "requestId": request.request_id,
            "status": status,
            "respondedBy": by,
        });
        self.emit(node, EventType::Progress, Level::Info, now, |e| {
            e.message = Some(message);
            e.data = Some(Box::new(data));
            e.metadata = Some(metadata);
        });
    }

    /// A signal nothing handles: a run-level `PROGRESS` event records it (`data`:
    /// `{signalId, name}`).
    pub(super) fn trace_signal(&mut self, signal: &Signal, now: Time) {
        let data = json!({ "signalId": &*signal.signal_id, "name": &*signal.name });
        let message = format!("signal `{}` received; nothing handles it", signal.name);
        self.emit_as("".into(), EventType::Progress, Level::Info, now, |e| {
            e.message = Some(message);
            e.data = Some(Box::new(data));
        });
    }

    pub(super) fn emit_resumed(&mut self, lost: &[(NodeIx, u32)], now: Time) {
        let plan = self.plan.clone();
        let attempts: Vec<serde_json::Value> = lost
            .iter()
            .map(|(node, attempt)| {
                let node_ref = plan.node_ref(*node);
                json!({
                    "nodeId": &**node_ref,
                    "attempt": attempt,
                    "attemptId": AttemptId::new(&plan.run_id, node_ref, *attempt).as_str(),
                })
            })
            .collect();
        let message = match lost.len() {
            0 => "run resumed after an engine restart; no attempt was lost".to_owned(),
            1 => "run resumed after an engine restart; 1 attempt was lost".to_owned(),
            n => format!("run resumed after an engine restart; {n} attempts were lost"),
        };
        self.emit_as("".into(), EventType::Resumed, Level::Warn, now, |e| {
            e.message = Some(message);
            e.data = Some(Box::new(json!({ "lostAttempts": attempts })));
        });
    }

    pub(super) fn base_metadata(&self, node: NodeIx) -> EventMetadata {
        let n = self.plan.graph.node(node);
        EventMetadata {
            join_strategy: Some(std::borrow::Cow::Borrowed(n.join.as_str())),
            stream_id: n.stream_id.clone(),
            group_id: n.group_id.clone(),
            ..EventMetadata::default()
        }
    }

    pub(super) fn refs_of(&self, edges: &[EdgeIx]) -> Vec<Arc<str>> {
        let g = &self.plan.graph;
        edges
            .iter()
            .map(|e| g.node(g.edge(*e).source).node_ref.clone())
            .collect()
    }

    /// One trace event with the next `seq` (dense from 1: the core is its run's only
    /// writer).
    pub(super) fn emit(
        &mut self,
        node: NodeIx,
        kind: EventType,
        level: Level,
        now: Time,
        fill: impl FnOnce(&mut TraceEvent),
    ) {
        let node_id = self.plan.node_ref(node).clone();
        self.emit_as(node_id, kind, level, now, fill);
    }

    /// One trace event of `node_id` (empty for the run's own events).
    pub(super) fn emit_as(
        &mut self,
        node_id: Arc<str>,
        kind: EventType,
        level: Level,
        now: Time,
        fill: impl FnOnce(&mut TraceEvent),
    ) {
        let seq = self.events.len() as u64 + 1;
        let run_id = &self.plan.run_id;
        let mut event = TraceEvent {
            id: EventId {
                run_id: run_id.clone(),
                seq,
            },
            run_id: run_id.clone(),
            node_id,
            seq,
            kind,
            level,
            timestamp: now.timestamp(),
            message: None,
            error: None,
            data: None,
            metadata: None,
        };
        fill(&mut event);
        self.events.push(event);
        self.out.push(RunEffect::Emitted { seq });
    }
}

pub(super) fn error_info(error: &ComponentError) -> ErrorInfo {
    ErrorInfo {
        error_type: error.error_type.clone(),
        message: error.message.clone(),
        details: None,
    }
}

impl RunCore {
    /// The error a node ended with, as its terminal event and record show it: an expired
    /// gate's `TimeoutError` carries `{nodeRef, requestId, timeoutMs}` (derived from its
    /// request, so a replay shows the same).
    pub(super) fn end_error(&self, end: &NodeEnd) -> Option<ErrorInfo> {
        let error = end.error()?;
        let mut info = error_info(error);
        if error.error_type == crate::runtime::components::TIMEOUT_ERROR {
            let expired = self.requests.iter().find(|(n, r)| {
                *n == end.node
                    && r.attempt == end.attempts
                    && r.status == gate::RequestStatus::Expired
            });
            if let Some((_, request)) = expired {
                let timeout = request
                    .deadline
                    .map(|d| d.since(request.created_at).as_millis() as u64);
                info.details = Some(Box::new(json!({
                    "nodeRef": request.node_ref,
                    "requestId": request.request_id,
                    "timeoutMs": timeout,
                })));
            }
        }
        Some(info)
    }
}
