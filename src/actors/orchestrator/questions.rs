//! Questions about one run: its status, events, graph and result channel, and a request
//! to stop it. A live run's supervisor answers for itself; a finished run held whole is
//! answered here; one known by its summary only is read back first (the question waits).

use super::*;

impl OrchestratorState {
    /// Asks for the whole of `run_id` (read back when the core keeps its summary only).
    pub(super) async fn ask(&mut self, run_id: &str) {
        let fact = EngineFact::Asked {
            run_id: run_id.to_owned(),
        };
        self.apply(fact, Arrived::Nothing).await;
    }

    pub(super) async fn status(
        &mut self,
        run_id: String,
        reply: RpcReplyPort<Result<RunSnapshot, RunCommandError>>,
    ) {
        match self.held.get(&run_id) {
            None => drop(reply.send(Err(RunCommandError::UnknownRun(run_id)))),
            Some(Held::Done {
                result, trace_id, ..
            }) => drop(reply.send(Ok(RunSnapshot::of_result(result, trace_id.clone())))),
            Some(Held::Stored { .. }) => {
                self.wait_for_end(run_id.clone(), Pending::Status(reply));
                self.ask(&run_id).await;
            }
            Some(Held::Live { supervisor, .. }) => {
                // The supervisor answers the handle itself; one that is gone has its
                // RunEnded (or its exit) queued here, and the question waits for it.
                if let Err(MessagingErr::SendErr(SupervisorMsg::Snapshot(reply))) =
                    supervisor.cast(SupervisorMsg::Snapshot(reply))
                {
                    self.wait_for_end(run_id, Pending::Status(reply));
                }
            }
        }
    }

    pub(super) async fn graph(
        &mut self,
        run_id: String,
        reply: RpcReplyPort<Result<Arc<Graph>, RunCommandError>>,
    ) {
        match self.held.get(&run_id) {
            None => drop(reply.send(Err(RunCommandError::UnknownRun(run_id)))),
            Some(Held::Live { graph, .. } | Held::Done { graph, .. }) => {
                drop(reply.send(Ok(graph.clone())));
            }
            Some(Held::Stored { .. }) => {
                self.wait_for_end(run_id.clone(), Pending::Graph(reply));
                self.ask(&run_id).await;
            }
        }
    }

    pub(super) async fn events(
        &mut self,
        run_id: String,
        asked: Subscription,
        reply: RpcReplyPort<Result<EventFeed, RunCommandError>>,
    ) {
        match self.held.get(&run_id) {
            None => drop(reply.send(Err(RunCommandError::UnknownRun(run_id)))),
            Some(Held::Done { events, .. }) => {
                let feed = EventFeed {
                    backlog: asked.backlog(events),
                    live: None,
                };
                drop(reply.send(Ok(feed)));
            }
            Some(Held::Stored { .. }) => {
                self.wait_for_end(run_id.clone(), Pending::Events(asked, reply));
                self.ask(&run_id).await;
            }
            Some(Held::Live { supervisor, .. }) => {
                if let Err(MessagingErr::SendErr(SupervisorMsg::Subscribe(asked, reply))) =
                    supervisor.cast(SupervisorMsg::Subscribe(asked, reply))
                {
                    self.wait_for_end(run_id, Pending::Events(asked, reply));
                }
            }
        }
    }

    pub(super) async fn watch(
        &mut self,
        run_id: String,
        reply: RpcReplyPort<Result<watch::Receiver<Option<Arc<RunResult>>>, RunCommandError>>,
    ) {
        let rx = self
            .held
            .get(&run_id)
            .map(|held| held.result_tx().subscribe())
            .ok_or_else(|| RunCommandError::UnknownRun(run_id.clone()));
        // A stored run's channel gets its result once it is read back.
        self.ask(&run_id).await;
        let _ = reply.send(rx);
    }

    /// Tells a live run to stop; `false` when it had ended already.
    pub(super) fn stop(&self, run_id: &str, kind: StopKind) -> Result<bool, RunCommandError> {
        match self.held.get(run_id) {
            None => Err(RunCommandError::UnknownRun(run_id.to_owned())),
            Some(Held::Done { .. } | Held::Stored { .. }) => Ok(false),
            Some(Held::Live { supervisor, .. }) => {
                // A supervisor that is stopping has already ended the run.
                let _ = supervisor.cast(SupervisorMsg::Stop(kind));
                Ok(true)
            }
        }
    }

    /// Routes a person's answer: to the supervisor of the live run that made the
    /// request, which answers once it is stored; for a run that ended, the engine core
    /// answers (the same answer again is a duplicate). A request of another run than
    /// the one named is unknown to it.
    pub(super) fn resolve(
        &self,
        run_id: Option<String>,
        request_id: Arc<str>,
        resolution: Resolution,
        reply: RpcReplyPort<Result<Resolved, RunCommandError>>,
    ) {
        let unknown = || RunCommandError::Input(ResolveError::Unknown(request_id.to_string()));
        let made_by = self.core.input(&request_id).map(|f| f.run_id.clone());
        if let (Some(asked), Some(made_by)) = (&run_id, &made_by)
            && **made_by != **asked
        {
            return drop(reply.send(Err(unknown())));
        }
        let run_id = match (self.core.route_answer(&request_id, &resolution), run_id) {
            (Route::Decided(verdict), _) => return drop(reply.send(verdict.map_err(Into::into))),
            (Route::Live(run_id), _) => run_id.to_string(),
            // Not in the book: the named run's core says what it knows of it.
            (Route::Unknown, Some(run_id)) => run_id,
            (Route::Unknown, None) => return drop(reply.send(Err(unknown()))),
        };
        self.to_supervisor(run_id, request_id, resolution, reply);
    }

    fn to_supervisor(
        &self,
        run_id: String,
        request_id: Arc<str>,
        resolution: Resolution,
        reply: RpcReplyPort<Result<Resolved, RunCommandError>>,
    ) {
        match self.held.get(&run_id) {
            None => drop(reply.send(Err(RunCommandError::UnknownRun(run_id)))),
            Some(Held::Done { .. } | Held::Stored { .. }) => {
                drop(reply.send(Err(RunCommandError::RunEnded(run_id))));
            }
            Some(Held::Live { supervisor, .. }) => {
                let msg = SupervisorMsg::Resolve {
                    request_id,
                    resolution,
                    reply,
                };
                // A supervisor that is gone has ended its run.
                if let Err(MessagingErr::SendErr(SupervisorMsg::Resolve { reply, .. })) =
                    supervisor.cast(msg)
                {
                    drop(reply.send(Err(RunCommandError::RunEnded(run_id))));
                }
            }
        }
    }

    /// Hands a signal to the run's supervisor, which answers once it is stored.
    pub(super) fn signal(
        &self,
        run_id: String,
        signal: SignalIn,
        reply: RpcReplyPort<Result<SignalAck, RunCommandError>>,
    ) {
        match self.held.get(&run_id) {
            None => drop(reply.send(Err(RunCommandError::UnknownRun(run_id)))),
            Some(Held::Done { .. } | Held::Stored { .. }) => {
                let taken = (signal.signal_id.as_deref())
                    .and_then(|id| self.core.signal_taken(&run_id, id));
                drop(reply.send(signal_after_end(&run_id, taken)));
            }
            Some(Held::Live { supervisor, .. }) => {
                let msg = SupervisorMsg::Signal { signal, reply };
                // A supervisor that is gone has ended its run.
                if let Err(MessagingErr::SendErr(SupervisorMsg::Signal { reply, .. })) =
                    supervisor.cast(msg)
                {
                    drop(reply.send(Err(RunCommandError::RunEnded(run_id))));
                }
            }
        }
    }

    /// Keeps a question until `run_id` is held whole.
    pub(super) fn wait_for_end(&mut self, run_id: String, question: Pending) {
        self.pending.entry(run_id).or_default().push(question);
    }
}
