//! Runs coming in and going out: a submission, the runs the journal held at start
//! (resumed, or known by their summaries), a supervisor's spawn (journaling a new run's
//! acceptance first), a run's end, and a finished run read back from the journal.

use super::*;
use crate::runtime::semantics::gate::InputRequest;

/// What a run's supervisor starts from.
#[derive(Debug)]
pub(super) struct NewRun {
    pub(super) graph: Arc<Graph>,
    pub(super) inputs: JsonObject,
    pub(super) options: SubmitOptions,
    /// The definition's text, journaled with the run.
    pub(super) definition: Option<Arc<str>>,
}

impl OrchestratorState {
    pub(super) async fn submit(
        &mut self,
        run: NewRun,
        fingerprint: Option<u64>,
    ) -> Result<Submitted, RunCommandError> {
        let missing_inputs = Gate::missing_inputs(&run.graph, &run.inputs);
        let submission = Submission {
            run_id: match &run.options.run_id {
                Some(id) => NewRunId::Asked(id.clone()),
                None => NewRunId::Fresh(uuid::Uuid::new_v4().to_string()),
            },
            key: run
                .options
                .idempotency_key
                .clone()
                .map(|key| IdempotencyKey { key, fingerprint }),
            title: run.graph.title.clone(),
            missing_inputs,
            metadata: run.options.metadata.clone(),
        };
        let fact = EngineFact::Submitted(submission);
        let answer = self.apply(fact, Arrived::Submission(Box::new(run))).await;
        answer.unwrap_or_else(|| Err(RunCommandError::Spawn("the engine gave no answer".into())))
    }

    /// Resumes every unfinished run the journal held at start; finished ones are known
    /// by their summaries, and read back when a question needs them.
    pub(super) async fn recover(&mut self, stored: Vec<Scanned>) -> Result<(), ActorProcessingErr> {
        if self.journal.is_none() {
            return Ok(());
        }
        let mut finished = Vec::new();
        for run in stored {
            match run {
                Scanned::Finished(run) => finished.push(run),
                Scanned::Unfinished(log) => self.resume(log).await?,
            }
        }
        let mut recovered = Vec::with_capacity(finished.len());
        for run in finished {
            recovered.push(stored_run(&run));
            let trace_id = run.traceparent.as_deref().and_then(traceparent_trace_id);
            let held = Held::Stored {
                result_tx: watch::channel(None).0,
                trace_id,
            };
            self.held.insert(run.run_id, held);
        }
        self.apply(EngineFact::Recovered(recovered), Arrived::Nothing)
            .await;
        Ok(())
    }

    /// Starts the supervisor of an unfinished run the journal held.
    pub(super) async fn resume(&mut self, log: StoredRunLog) -> Result<(), ActorProcessingErr> {
        let accepted = &log.header.accepted;
        let (graph, inputs) = readback::submission(&self.registry, accepted)?;
        let run = NewRun {
            graph: Arc::new(graph),
            inputs,
            options: options_of(accepted),
            definition: None,
        };
        let resumed = ResumedRun {
            run_id: accepted.run_id.clone(),
            title: run.graph.title.clone(),
            accepted_at: Time::from_micros(accepted.accepted_at),
            metadata: run.options.metadata.clone(),
            key: accepted
                .idempotency()
                .map(|(key, fingerprint)| IdempotencyKey {
                    key,
                    fingerprint: Some(fingerprint),
                }),
        };
        let run_id = resumed.run_id.clone();
        let arrived = Arrived::Resumed(Box::new(run), Box::new(log));
        match self.apply(EngineFact::Resumed(resumed), arrived).await {
            Some(Err(e)) => Err(format!("run `{run_id}` cannot be resumed: {e}").into()),
            _ => Ok(()),
        }
    }

    /// Spawns a run's supervisor (journaling a new run's acceptance first) and holds it
    /// as live.
    pub(super) async fn start(
        &mut self,
        run_id: &str,
        run: NewRun,
        resume: Option<StoredRunLog>,
        now: Time,
    ) -> Result<Submitted, RunCommandError> {
        let (result_tx, result_rx) = watch::channel(None);
        let graph = run.graph.clone();
        let mut args =
            self.supervisor_args(run_id, run.graph, run.inputs, &run.options, &result_tx);
        let mut stored = None;
        match (&self.journal, resume, run.definition) {
            (Some(journal), Some(log), _) => {
                args.journal = Some((journal.clone(), log.header));
                args.resume = Some(log.facts);
            }
            (Some(journal), None, Some(definition)) => {
                let header =
                    accepted_header(run_id, &graph, definition, &args.inputs, &run.options, now);
                let (sink, acknowledged) = Acknowledgement::pair();
                let op = Op::PutRun {
                    run_id: run_id.into(),
                    value: record::encode(&header),
                };
                journal.append(op, Some((sink, 1)));
                args.journal = Some((journal.clone(), header));
                stored = Some(acknowledged);
            }
            _ => {}
        }
        let (supervisor, _) =
            Actor::spawn_linked(None, RunSupervisor, args, self.myself.get_cell())
                .await
                .map_err(|e| RunCommandError::Spawn(e.to_string()))?;
        self.by_supervisor
            .insert(supervisor.get_id(), run_id.to_owned());
        let held = Held::Live {
            supervisor,
            result_tx,
            graph,
        };
        self.held.insert(run_id.to_owned(), held);
        Ok(Submitted {
            run_id: run_id.to_owned(),
            existing: false,
            result: result_rx,
            stored,
        })
    }

    /// What a new run's supervisor starts from (and the run's key in the slot book).
    pub(super) fn supervisor_args(
        &mut self,
        run_id: &str,
        graph: Arc<Graph>,
        inputs: JsonObject,
        options: &SubmitOptions,
        result_tx: &ResultTx,
    ) -> SupervisorArgs {
        let key = self.next_run_key;
        self.next_run_key += 1;
        SupervisorArgs {
            run_id: run_id.into(),
            graph,
            registry: self.registry.clone(),
            inputs: Arc::new(inputs),
            config: self.config.clone(),
            seed: RunPlan::seed_for(run_id),
            result_tx: result_tx.clone(),
            orchestrator: Some(self.myself.clone()),
            limiter: Some((self.slots.clone(), self.tickets.clone(), key)),
            faults: self.faults.clone(),
            traceparent: options.traceparent.clone(),
            metadata: options.metadata.clone(),
            metrics: self.metrics.clone(),
            journal: None,
            resume: None,
        }
    }

    pub(super) async fn run_ended(
        &mut self,
        result: Arc<RunResult>,
        trace_id: Option<String>,
        events: Arc<Vec<TraceEvent>>,
        bytes: usize,
    ) {
        let weight = Weight {
            nodes: result.nodes.len(),
            bytes,
        };
        let fact = EngineFact::RunEnded {
            summary: RunSummary::of_result(&result),
            weight,
        };
        let arrived = Arrived::Ended {
            result,
            events,
            trace_id,
        };
        self.apply(fact, arrived).await;
    }

    /// Starts reading `run_id` back from the journal on a blocking thread.
    pub(super) fn read_back(&self, run_id: String) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let (registry, config) = (self.registry.clone(), self.config.clone());
        let myself = self.myself.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = readback::finished_run(&journal, &registry, &config, &run_id);
            // An orchestrator that stopped meanwhile has nobody left to answer.
            let _ = myself.cast(OrchestratorMsg::Reloaded { run_id, outcome });
        });
    }

    pub(super) async fn reloaded(
        &mut self,
        run_id: String,
        outcome: Result<ReadRun, ReadBackError>,
    ) {
        let (read, arrived) = match outcome {
            Ok(run) => {
                let weight = Weight {
                    nodes: run.result.nodes.len(),
                    bytes: run.bytes,
                };
                (ReadOutcome::Whole(weight), Arrived::Read(run))
            }
            Err(e) => (ReadOutcome::Unreadable(e.to_string()), Arrived::Nothing),
        };
        let fact = EngineFact::ReadBack {
            run_id,
            outcome: read,
        };
        self.apply(fact, arrived).await;
    }
}

/// What a journaled run was submitted with, as options.
fn options_of(accepted: &AcceptedRecord) -> SubmitOptions {
    SubmitOptions {
        run_id: Some(accepted.run_id.clone()),
        idempotency_key: accepted.idempotency_key.clone(),
        traceparent: accepted.traceparent.clone(),
        metadata: Arc::new(accepted.metadata()),
    }
}

/// What the engine core knows of a finished run the journal holds.
fn stored_run(run: &FinishedRun) -> StoredRun {
    StoredRun {
        summary: RunSummary {
            run_id: run.run_id.clone(),
            title: run.title.clone(),
            status: RunStatus::parse(&run.finished.status).unwrap_or(RunStatus::Failed),
            started_at: Time::from_micros(run.accepted_at).timestamp(),
            completed_at: Some(Time::from_micros(run.finished.finished_at).timestamp()),
            metadata: Arc::new(run.metadata.clone()),
        },
        finished_at: Time::from_micros(run.finished.finished_at),
        // Written by the engine; a list that does not read is left out, not fatal.
        requests: (record::list_of(&run.requests).into_iter())
            .map(Arc::<InputRequest>::new)
            .collect(),
        signals: record::list_of(&run.signals),
        key: run
            .idempotency
            .clone()
            .map(|(key, fingerprint)| IdempotencyKey {
                key,
                fingerprint: Some(fingerprint),
            }),
    }
}

/// The journal header of a new run, accepted at `now`.
fn accepted_header(
    run_id: &str,
    graph: &Graph,
    definition: Arc<str>,
    inputs: &JsonObject,
    options: &SubmitOptions,
    now: Time,
) -> RunHeader {
    RunHeader {
        accepted: AcceptedRecord {
            run_id: run_id.to_owned(),
            definition_hash: record::definition_hash(&definition),
            definition,
            // A JSON object always serialises.
            inputs: serde_json::to_string(inputs).expect("inputs serialise"),
            idempotency_key: options.idempotency_key.clone(),
            traceparent: options.traceparent.clone(),
            accepted_at: now.as_micros(),
            nodes: graph.len() as u32,
            // A map of strings always serialises.
            metadata: serde_json::to_string(&*options.metadata).expect("metadata serialises"),
        },
        finished: None,
        requests: String::new(),
        signals: String::new(),
    }
}
