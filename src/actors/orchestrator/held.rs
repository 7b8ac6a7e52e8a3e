//! What the orchestrator holds of each run the engine core knows (handles and data, not
//! decisions), and the questions waiting for a run to be held whole.

use super::*;

/// What a result channel carries.
pub(super) type ResultTx = watch::Sender<Option<Arc<RunResult>>>;

/// What the actor holds of a run the core knows.
#[derive(Debug)]
pub(super) enum Held {
    /// Its supervisor runs it.
    Live {
        supervisor: ActorRef<SupervisorMsg>,
        result_tx: ResultTx,
        graph: Arc<Graph>,
    },
    /// It ended; its result and trace are held.
    Done {
        result: Arc<RunResult>,
        events: Arc<Vec<TraceEvent>>,
        result_tx: ResultTx,
        graph: Arc<Graph>,
        trace_id: Option<String>,
    },
    /// It ended; the journal holds the rest (its result channel gets the result when it
    /// is read back).
    Stored {
        result_tx: ResultTx,
        trace_id: Option<String>,
    },
}

impl Held {
    pub(super) fn result_tx(&self) -> &ResultTx {
        match self {
            Held::Live { result_tx, .. }
            | Held::Done { result_tx, .. }
            | Held::Stored { result_tx, .. } => result_tx,
        }
    }

    /// Its result channel, the rest let go.
    pub(super) fn into_result_tx(self) -> ResultTx {
        match self {
            Held::Live { result_tx, .. }
            | Held::Done { result_tx, .. }
            | Held::Stored { result_tx, .. } => result_tx,
        }
    }

    pub(super) fn trace_id(&self) -> Option<String> {
        match self {
            Held::Live { .. } => None,
            Held::Done { trace_id, .. } | Held::Stored { trace_id, .. } => trace_id.clone(),
        }
    }
}

impl OrchestratorState {
    /// Gives `result` to those who wait on `run_id`'s result channel.
    pub(super) fn publish(&self, run_id: &str, result: &Arc<RunResult>) {
        if let Some(held) = self.held.get(run_id) {
            held.result_tx().send_replace(Some(result.clone()));
        }
    }

    /// Holds a finished run whole (its graph is the one held, or `graph` for a run known
    /// by its summary only) and answers the questions that waited for it.
    pub(super) fn hold_done(
        &mut self,
        run_id: &str,
        result: Arc<RunResult>,
        events: Arc<Vec<TraceEvent>>,
        trace_id: Option<String>,
        graph: Option<Arc<Graph>>,
    ) {
        let graph = match (self.held.get(run_id), graph) {
            (Some(Held::Live { graph, .. } | Held::Done { graph, .. }), _) => graph.clone(),
            (Some(Held::Stored { .. }), Some(graph)) => graph,
            _ => return,
        };
        let Some(held) = self.held.remove(run_id) else {
            return;
        };
        let result_tx = held.into_result_tx();
        let done = Held::Done {
            result,
            events,
            result_tx,
            graph,
            trace_id,
        };
        self.held.insert(run_id.to_owned(), done);
        self.answer_pending(run_id);
    }

    /// Answers the questions that waited for `run_id`.
    pub(super) fn answer_pending(&mut self, run_id: &str) {
        for question in self.pending.remove(run_id).into_iter().flatten() {
            question.answer(&self.held, run_id);
        }
    }
}

/// A question about a run whose supervisor stopped before its `RunEnded` was handled,
/// or about a finished run being read back from the journal; answered once the run is
/// held whole.
#[derive(Debug)]
pub(super) enum Pending {
    Status(RpcReplyPort<Result<RunSnapshot, RunCommandError>>),
    Events(
        Subscription,
        RpcReplyPort<Result<EventFeed, RunCommandError>>,
    ),
    Graph(RpcReplyPort<Result<Arc<Graph>, RunCommandError>>),
}

impl Pending {
    /// Answers the question from what is held of `run_id` now (a run still not held
    /// whole answers as unknown: it is gone).
    pub(super) fn answer(self, held: &HashMap<String, Held>, run_id: &str) {
        let unknown = || RunCommandError::UnknownRun(run_id.to_owned());
        let done = match held.get(run_id) {
            Some(Held::Done {
                result,
                events,
                graph,
                trace_id,
                ..
            }) => Some((result, events, graph, trace_id)),
            _ => None,
        };
        // A reply that fails means the asker stopped waiting.
        match (self, done) {
            (Pending::Status(reply), Some((result, _, _, trace_id))) => {
                drop(reply.send(Ok(RunSnapshot::of_result(result, trace_id.clone()))));
            }
            (Pending::Events(asked, reply), Some((_, events, _, _))) => {
                let feed = EventFeed {
                    backlog: asked.backlog(events),
                    live: None,
                };
                drop(reply.send(Ok(feed)));
            }
            (Pending::Graph(reply), Some((_, _, graph, _))) => drop(reply.send(Ok(graph.clone()))),
            (question, None) => question.refuse(unknown()),
        }
    }

    /// Answers the question with `error`.
    pub(super) fn refuse(self, error: RunCommandError) {
        // A reply that fails means the asker stopped waiting.
        match self {
            Pending::Status(reply) => drop(reply.send(Err(error))),
            Pending::Events(_, reply) => drop(reply.send(Err(error))),
            Pending::Graph(reply) => drop(reply.send(Err(error))),
        }
    }
}
