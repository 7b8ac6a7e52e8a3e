//! The run's result and snapshot, built from what the run core knows of each node: the
//! final status and error, the per-node records, and the result of a run given up when
//! its journal failed.

use super::*;

impl RunCore {
    pub(super) fn final_status(&self) -> RunStatus {
        match (&self.phase, &self.unhandled) {
            (RunPhase::Ended(status), _) => *status,
            (RunPhase::Stopping(stop), _) => stop.status(),
            (RunPhase::Running, Some(_)) => RunStatus::Failed,
            (RunPhase::Running, None) if !self.reported.is_empty() => RunStatus::Failed,
            (RunPhase::Running, None) => RunStatus::Completed,
        }
    }

    /// Why the run did not complete: an unhandled failure first, then the stop, then the
    /// failures components reported in their outputs.
    pub(super) fn run_error(&self) -> Option<String> {
        if let Some(u) = &self.unhandled {
            return Some(u.clone());
        }
        if let RunPhase::Stopping(stop) = &self.phase {
            return Some(stop.cause.to_string());
        }
        if self.reported.is_empty() {
            return None;
        }
        let graph = &self.plan.graph;
        Some(shipsec::run_failure_message(self.reported.iter().map(
            |(node, message)| (&*graph.node(*node).node_ref, message.as_str()),
        )))
    }

    pub(super) fn result(&self, now: Time) -> RunResult {
        let graph = &self.plan.graph;
        let status = self.final_status();
        // Built in ref order, so the maps are filled in one pass without searching.
        let mut outputs = Vec::new();
        let mut nodes = Vec::with_capacity(graph.len());
        for &ix in graph.ref_order() {
            let node_ref = &graph.node(ix).node_ref;
            let ended = match &self.slots[ix.ix()] {
                Slot::Ended(ended) => Some(ended),
                _ => None,
            };
            let end = ended.map(|e| &e.end);
            if let Some(out) = end.and_then(|e| e.output().cloned()) {
                outputs.push((node_ref.clone(), out));
            }
            nodes.push((node_ref.clone(), self.node_record(ix, ended)));
        }
        RunResult {
            run_id: self.plan.run_id.to_string(),
            title: graph.title.clone(),
            status,
            success: status == RunStatus::Completed,
            error: self.run_error(),
            started_at: self.started_at.timestamp(),
            completed_at: now.timestamp(),
            duration_ms: now.since(self.started_at).as_millis() as u64,
            outputs: outputs.into_iter().collect(),
            nodes: nodes.into_iter().collect(),
            warnings: graph.warnings.clone(),
            metadata: self.plan.metadata.clone(),
        }
    }

    /// The result of a run given up before it ended (its journal failed): FAILED with
    /// `error`. Only what was published stands — the first `published` events, and the
    /// ends they told; every other node (running, waiting, or ended without its end
    /// stored) is CANCELLED, and its output dropped. The unpublished events are dropped.
    pub fn abandoned(&mut self, error: String, now: Time, published: usize) -> RunResult {
        let unconfirmed: HashSet<Arc<str>> = self.events[published.min(self.events.len())..]
            .iter()
            .filter(|e| e.kind.is_terminal())
            .map(|e| e.node_id.clone())
            .collect();
        self.events.truncate(published);
        let mut result = RunResult {
            status: RunStatus::Failed,
            success: false,
            error: Some(error),
            ..self.result(now)
        };
        for (node_ref, record) in &mut result.nodes {
            if record.status.is_terminal() && !unconfirmed.contains(node_ref) {
                continue;
            }
            record.status = NodeStatus::Cancelled;
            record.reason =
                Some("the run's journal failed before this node's end was stored".into());
            record.error = None;
            record.active_ports = None;
            record.completed_at = Some(now.timestamp());
            result.outputs.remove(node_ref);
        }
        result
    }

    pub(super) fn node_record(&self, ix: NodeIx, ended: Option<&Ended>) -> NodeRecord {
        let record = &self.records[ix.ix()];
        let end = ended.map(|e| &e.end);
        NodeRecord {
            status: self.status_of(ix),
            attempts: record.attempts,
            started_at: record.started_at.map(Time::timestamp),
            completed_at: ended.map(|e| e.at.timestamp()),
            triggered_by: record
                .triggered_by
                .as_ref()
                .filter(|t| !t.is_empty())
                .map(|t| self.refs_of(t)),
            active_ports: end.and_then(|e| e.active_ports().map(<[String]>::to_vec)),
            failure: record.failure.as_deref().cloned(),
            error: end.and_then(|e| self.end_error(e)),
            reason: end.and_then(|e| e.reason()),
            worker_id: record.worker.as_ref().map(|(_, w)| w.clone()),
        }
    }

    /// A node's status as the run knows it.
    pub fn status_of(&self, node: NodeIx) -> NodeStatus {
        match &self.slots[node.ix()] {
            Slot::Unreached | Slot::Ready => NodeStatus::Pending,
            Slot::Live(live) => match live.phase {
                LivePhase::Pending | LivePhase::BackingOff(..) => NodeStatus::Pending,
                LivePhase::Queued(_) => NodeStatus::Queued,
                LivePhase::Running(_) => NodeStatus::Running,
                LivePhase::AwaitingInput(..) => NodeStatus::AwaitingInput,
            },
            Slot::Ended(ended) => ended.end.terminal().status(),
        }
    }

    /// The run's state now (`handle.status`); the trace id is the actor's to fill in.
    pub fn snapshot(&self) -> RunSnapshot {
        let graph = &self.plan.graph;
        let mut counts = std::collections::BTreeMap::new();
        let mut running = Vec::new();
        let mut nodes = Vec::with_capacity(graph.len());
        let mut completed = 0;
        for &ix in graph.ref_order() {
            let ended = match &self.slots[ix.ix()] {
                Slot::Ended(ended) => Some(ended),
                _ => None,
            };
            let record = self.node_record(ix, ended);
            *counts.entry(record.status).or_insert(0) += 1;
            if record.status == NodeStatus::Running {
                running.push(graph.node(ix).node_ref.to_string());
            }
            completed += usize::from(record.status.is_terminal());
            nodes.push((graph.node(ix).node_ref.clone(), record));
        }
        RunSnapshot {
            run_id: self.plan.run_id.to_string(),
            title: graph.title.clone(),
            status: match &self.phase {
                RunPhase::Ended(status) => *status,
                _ if self
                    .requests()
                    .any(|r| r.status == gate::RequestStatus::Pending) =>
                {
                    RunStatus::AwaitingInput
                }
                _ => RunStatus::Running,
            },
            started_at: self.started_at.timestamp(),
            completed_at: None,
            duration_ms: None,
            progress: crate::runtime::semantics::result::Progress {
                completed,
                total: graph.len(),
            },
            trace_id: None,
            counts,
            running,
            nodes: nodes.into_iter().collect(),
            metadata: self.plan.metadata.clone(),
        }
    }
}
