//! The engine core: the orchestrator's decisions as a pure state machine beside the run
//! and node cores — which submissions are admitted, what an idempotency key returns, the
//! run listing, which finished runs are kept whole, kept by their summary or forgotten,
//! when the journal lets a run go, the end of a run whose supervisor died, and the
//! engine's [`EnginePhase`] — taking [`EngineFact`]s and returning [`EngineEffect`]s.
//!
//! The orchestrator actor feeds it what happens (a submission with a fresh run id drawn
//! for it, a run's end, a supervisor's exit, a run read back from the journal, a
//! shutdown) with the current [`Time`], and performs the effects: spawn a supervisor,
//! answer, read a run back, drop what it holds of a run, delete a run from the journal,
//! stop the engine. The core holds no actor, channel or clock, so every decision is
//! tested alone (see the tests below) and the next engine-level decisions (a run that
//! waits for a signal, a child run, a schedule's slot, a run another coordinator owns)
//! are new facts and effects, not branches in the actor.
//!
//! Each run the engine knows is in one [`RunState`]: live (its supervisor runs it), done
//! (ended, its result and trace held whole) or stored (ended, known by its summary only,
//! read back from the journal when a question needs more).

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::semantics::gate::{InputRequest, Resolution};
use crate::runtime::semantics::metadata::{self, Metadata};
use crate::runtime::semantics::outcome::RunStatus;
use crate::runtime::semantics::report::StopKind;
use crate::runtime::semantics::requests::{Filed, InputPage, InputQuery, RequestBook, Route};
use crate::runtime::semantics::result::{RetainedStats, RunPage, RunQuery, RunResult, RunSummary};
use crate::runtime::semantics::time::Time;

/// The bounds the engine core keeps (from the engine's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most runs live at once (`maxActiveRuns`).
    pub max_active_runs: NonZeroUsize,
    /// Most finished runs kept whole (`retainedRuns`).
    pub retained_runs: NonZeroUsize,
    /// Most node records of finished runs kept whole (`retainedNodes`).
    pub retained_nodes: NonZeroUsize,
    /// Most bytes of finished runs' results and traces kept whole (`retainedBytes`).
    pub retained_bytes: NonZeroUsize,
    /// How long the journal keeps finished runs, when runs are journaled.
    pub journal: Option<JournalRetention>,
}

/// How long the journal keeps finished runs: the newest `runs`, each for `age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRetention {
    /// Most finished runs kept.
    pub runs: NonZeroUsize,
    /// How long each is kept after it ended.
    pub age: Duration,
}

/// An idempotency key and what it is bound to: a fingerprint of the definition and
/// inputs it was first submitted with (`None`: not known, anything matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key.
    pub key: String,
    /// The fingerprint.
    pub fingerprint: Option<u64>,
}

/// A new run's id: the one its caller asked for, or a fresh one drawn for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewRunId {
    /// The caller asked for it: refused if in use, and an idempotency key bound to
    /// another run conflicts with it.
    Asked(String),
    /// Drawn for the run (the caller asked for none).
    Fresh(String),
}

/// A submission that passed the definition's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// Its run id.
    pub run_id: NewRunId,
    /// Its idempotency key.
    pub key: Option<IdempotencyKey>,
    /// The workflow's title.
    pub title: String,
    /// The runtime inputs its entrypoint requires that it lacks.
    pub missing_inputs: Vec<String>,
    /// Its metadata.
    pub metadata: Arc<Metadata>,
}

/// An unfinished run the journal held at start, resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumedRun {
    /// Its id.
    pub run_id: String,
    /// Its title.
    pub title: String,
    /// When it was accepted.
    pub accepted_at: Time,
    /// Its metadata.
    pub metadata: Arc<Metadata>,
    /// Its idempotency key.
    pub key: Option<IdempotencyKey>,
}

/// A finished run the journal held at start.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    /// What listings show of it.
    pub summary: RunSummary,
    /// When it ended.
    pub finished_at: Time,
    /// Its gates' input requests, as they ended.
    pub requests: Vec<Arc<InputRequest>>,
    /// The ids of the signals it took.
    pub signals: Vec<String>,
    /// Its idempotency key.
    pub key: Option<IdempotencyKey>,
}

/// What a finished run kept whole weighs: its node records, and the bytes of its
/// result and trace as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weight {
    /// Node records.
    pub nodes: usize,
    /// Bytes.
    pub bytes: usize,
}

/// Something that happened to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineFact {
    /// A run is submitted.
    Submitted(Submission),
    /// The supervisor of a run just admitted could not be spawned.
    SpawnFailed {
        /// The run.
        run_id: String,
    },
    /// At start: an unfinished journaled run is resumed.
    Resumed(ResumedRun),
    /// At start: the finished runs the journal holds, in any order.
    Recovered(Vec<StoredRun>),
    /// A run's supervisor reported its end.
    RunEnded {
        /// What listings show of it now.
        summary: RunSummary,
        /// What its result and trace weigh.
        weight: Weight,
    },
    /// A run's supervisor exited (its result may still be queued behind this).
    SupervisorStopped {
        /// The run.
        run_id: String,
        /// Why.
        cause: String,
    },
    /// A supervisor's exit, re-checked behind any result it sent before exiting.
    SupervisorLost {
        /// The run.
        run_id: String,
        /// Why.
        cause: String,
    },
    /// A live run made an input request, or one of its requests left `pending`.
    InputChanged {
        /// The run.
        run_id: String,
        /// The request as it is now.
        request: Arc<InputRequest>,
    },
    /// A live run took a signal (not a repeat of one).
    SignalTaken {
        /// The run.
        run_id: String,
        /// The signal's id.
        signal_id: Arc<str>,
    },
    /// A question needs the whole of a run (its status, result, trace or graph).
    Asked {
        /// The run.
        run_id: String,
    },
    /// A run was read back from the journal (`Err`: why it could not be).
    ReadBack {
        /// The run.
        run_id: String,
        /// Its weight, or why it could not be read.
        outcome: ReadOutcome,
    },
    /// The engine suspends: no new run is taken.
    Quiesced,
    /// The engine shuts down, cancelling its live runs (`cancel`) or letting them finish.
    ShutdownAsked {
        /// Cancel the live runs.
        cancel: bool,
    },
}

/// How reading a run back from the journal went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// It is held whole again; this is what it weighs.
    Whole(Weight),
    /// It could not be read: why.
    Unreadable(String),
}

/// Why a submission is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The engine is shutting down or suspending.
    ShuttingDown,
    /// `maxActiveRuns` runs are live.
    Overloaded {
        /// Runs live.
        active: usize,
        /// The limit.
        limit: usize,
    },
    /// Required runtime inputs are missing.
    MissingInputs(Vec<String>),
    /// A run with the asked id exists.
    DuplicateRun(String),
    /// The key was used for another run id, definition or inputs.
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The run it started.
        run_id: String,
    },
}

/// What the orchestrator actor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEffect {
    /// Spawn the supervisor of `run_id` (a new run, or a resumed one).
    Start {
        /// The run.
        run_id: String,
    },
    /// Answer a submission with the run its idempotency key started.
    Existing {
        /// The run.
        run_id: String,
    },
    /// Refuse a submission.
    Refuse(Refusal),
    /// Hold the ended run's result and trace, and answer the questions that waited.
    Finished {
        /// The run.
        run_id: String,
    },
    /// The supervisor of `run_id` died before the run ended: publish this result.
    Lost {
        /// The run.
        run_id: String,
        /// Its result (FAILED).
        result: Arc<RunResult>,
    },
    /// Re-check the exit of `run_id`'s supervisor through the mailbox.
    Recheck {
        /// The run.
        run_id: String,
        /// Why it exited.
        cause: String,
    },
    /// Read `run_id` back from the journal, off the actor.
    ReadBack {
        /// The run.
        run_id: String,
    },
    /// Hold the run read back whole again, and answer the questions that waited.
    Restored {
        /// The run.
        run_id: String,
    },
    /// The run could not be read back: forget it, and refuse the questions that waited.
    Unreadable {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// Let go of the run's result and trace: its summary stays, the journal holds it.
    Demote {
        /// The run.
        run_id: String,
    },
    /// Let go of everything held of the run.
    Forget {
        /// The run.
        run_id: String,
    },
    /// Delete the run from the journal.
    Purge {
        /// The run.
        run_id: String,
    },
    /// Answer the questions that waited for `run_id` (it is gone, or ended).
    AnswerPending {
        /// The run.
        run_id: String,
    },
    /// Ask a live run to stop.
    StopRun {
        /// The run.
        run_id: String,
        /// How.
        kind: StopKind,
    },
    /// Every run ended and every supervisor exited during a shutdown: stop the engine.
    Close,
}

/// Where the engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnginePhase {
    /// Runs are taken.
    Running,
    /// Suspending: no new run is taken, live ones are left for a later resume.
    Suspending,
    /// Shutting down: no new run is taken; the engine closes once every run ended and
    /// every supervisor exited.
    Closing,
    /// Closed.
    Closed,
}

/// Where one run is, as the engine knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Its supervisor runs it.
    Live,
    /// It ended; its result and trace are held whole.
    Done,
    /// It ended; only its summary is held, the journal has the rest.
    Stored {
        /// A reading back is under way.
        loading: bool,
    },
}

/// What the engine knows of one run.
#[derive(Debug, Clone, PartialEq)]
struct Book {
    /// Its place in the acceptance order (listings are newest first).
    order: u64,
    summary: RunSummary,
    state: RunState,
}

/// The engine's decisions.
#[derive(Debug)]
pub struct EngineCore {
    limits: EngineLimits,
    phase: EnginePhase,
    runs: HashMap<String, Book>,
    /// Idempotency keys: the run each started, and its fingerprint.
    keys: HashMap<String, (String, Option<u64>)>,
    next_order: u64,
    /// Runs in [`RunState::Live`].
    live: usize,
    /// Supervisors spawned and not yet seen to exit.
    supervisors: usize,
    /// Finished runs held whole, oldest first, with their weights.
    finished: VecDeque<(String, Weight)>,
    held: Weight,
    /// Finished runs in the journal, oldest first, with when they ended.
    journaled: VecDeque<(String, Time)>,
    /// The input requests of the runs known.
    requests: RequestBook,
    /// The ids of the signals each run known took, for the runs that took any.
    signals: HashMap<String, HashSet<Arc<str>>>,
    out: Vec<EngineEffect>,
}

impl EngineCore {
    /// An engine with nothing known yet.
    pub fn new(limits: EngineLimits) -> EngineCore {
        EngineCore {
            limits,
            phase: EnginePhase::Running,
            runs: HashMap::new(),
            keys: HashMap::new(),
            next_order: 1,
            live: 0,
            supervisors: 0,
            finished: VecDeque::new(),
            held: Weight::default(),
            journaled: VecDeque::new(),
            requests: RequestBook::new(),
            signals: HashMap::new(),
            out: Vec::new(),
        }
    }

    /// Where the engine is.
    #[cfg(test)]
    pub fn phase(&self) -> EnginePhase {
        self.phase
    }

    /// Runs live now.
    #[cfg(test)]
    pub fn live_runs(&self) -> usize {
        self.live
    }

    /// Where `run_id` is, when the engine knows it.
    pub fn state_of(&self, run_id: &str) -> Option<RunState> {
        self.runs.get(run_id).map(|b| b.state)
    }

    /// What listings show of `run_id`.
    #[cfg(test)]
    pub fn summary(&self, run_id: &str) -> Option<&RunSummary> {
        self.runs.get(run_id).map(|b| &b.summary)
    }

    /// The only way the engine changes: applies `fact` at `now` and returns what to do,
    /// in order. No clock, no I/O, no entropy (a new run's id comes in the fact).
    pub fn apply(&mut self, fact: EngineFact, now: Time) -> Vec<EngineEffect> {
        match fact {
            EngineFact::Submitted(submission) => self.on_submitted(submission, now),
            EngineFact::SpawnFailed { run_id } => self.on_spawn_failed(&run_id),
            EngineFact::Resumed(run) => self.on_resumed(run),
            EngineFact::Recovered(runs) => self.on_recovered(runs, now),
            EngineFact::RunEnded { summary, weight } => self.on_run_ended(summary, weight, now),
            EngineFact::SupervisorStopped { run_id, cause } => {
                self.on_supervisor_stopped(run_id, cause);
            }
            EngineFact::SupervisorLost { run_id, cause } => self.on_lost(&run_id, &cause, now),
            EngineFact::InputChanged { run_id, request } => self.on_input(&run_id, request),
            EngineFact::SignalTaken { run_id, signal_id } => {
                if self.runs.contains_key(&run_id) {
                    self.signals.entry(run_id).or_default().insert(signal_id);
                }
            }
            EngineFact::Asked { run_id } => self.on_asked(&run_id),
            EngineFact::ReadBack { run_id, outcome } => self.on_read_back(run_id, outcome),
            EngineFact::Quiesced => {
                if self.phase == EnginePhase::Running {
                    self.phase = EnginePhase::Suspending;
                }
            }
            EngineFact::ShutdownAsked { cancel } => self.on_shutdown(cancel),
        }
        self.maybe_close();
        std::mem::take(&mut self.out)
    }

    /// A page of the runs known, newest first.
    pub fn list(&self, query: &RunQuery) -> RunPage {
        let limit = query.limit.max(1);
        let mut found: Vec<&Book> = self
            .runs
            .values()
            .filter(|b| query.before.is_none_or(|before| b.order < before))
            .filter(|b| query.status.is_none_or(|s| b.summary.status == s))
            .filter(|b| metadata::matches(&b.summary.metadata, query.metadata.as_ref()))
            .collect();
        found.sort_unstable_by_key(|b| std::cmp::Reverse(b.order));
        let more = found.len() > limit;
        found.truncate(limit);
        RunPage {
            next: more.then(|| found.last().map(|b| b.order)).flatten(),
            runs: found.iter().map(|b| b.summary.clone()).collect(),
        }
    }

    /// A page of the input requests of the runs known, newest first.
    pub fn inputs(&self, query: &InputQuery) -> InputPage {
        self.requests.list(query)
    }

    /// The input request `request_id`, when its run is known.
    pub fn input(&self, request_id: &str) -> Option<&Filed> {
        self.requests.get(request_id)
    }

    /// Where an answer to `request_id` goes: its live run, or the book's own verdict
    /// once the run has ended.
    pub fn route_answer(&self, request_id: &str, resolution: &Resolution) -> Route {
        self.requests.route(request_id, resolution, |run| {
            self.state_of(run) == Some(RunState::Live)
        })
    }

    /// The id of signal `signal_id` when run `run_id` took it.
    pub fn signal_taken(&self, run_id: &str, signal_id: &str) -> Option<Arc<str>> {
        self.signals.get(run_id)?.get(signal_id).cloned()
    }

    /// What finished runs are held, whole and by their summary.
    pub fn retained(&self) -> RetainedStats {
        RetainedStats {
            runs: self.finished.len(),
            nodes: self.held.nodes,
            bytes: self.held.bytes,
            stored: self
                .runs
                .values()
                .filter(|b| matches!(b.state, RunState::Stored { .. }))
                .count(),
        }
    }

    fn on_submitted(&mut self, submission: Submission, now: Time) {
        let Submission {
            run_id,
            key,
            title,
            missing_inputs,
            metadata,
        } = submission;
        if let Some(key) = &key {
            let asked = match &run_id {
                NewRunId::Asked(id) => Some(id.as_str()),
                NewRunId::Fresh(_) => None,
            };
            match self.bound_run(key, asked) {
                Ok(Some(run_id)) => {
                    self.out.push(EngineEffect::Existing {
                        run_id: run_id.clone(),
                    });
                    return self.on_asked(&run_id);
                }
                Ok(None) => {}
                Err(refusal) => return self.out.push(EngineEffect::Refuse(refusal)),
            }
        }
        if let Err(refusal) = self.admit(missing_inputs) {
            return self.out.push(EngineEffect::Refuse(refusal));
        }
        let (NewRunId::Asked(run_id) | NewRunId::Fresh(run_id)) = run_id;
        if self.runs.contains_key(&run_id) {
            return self
                .out
                .push(EngineEffect::Refuse(Refusal::DuplicateRun(run_id)));
        }
        self.start(run_id, title, now, key, metadata);
    }

    /// The run an earlier submit with the same key started, if it is known; a conflict
    /// when that submit asked for another id, or had another definition or other inputs.
    fn bound_run(
        &self,
        key: &IdempotencyKey,
        asked_id: Option<&str>,
    ) -> Result<Option<String>, Refusal> {
        let Some((existing, bound)) = self.keys.get(&key.key) else {
            return Ok(None);
        };
        if !self.runs.contains_key(existing) {
            return Ok(None);
        }
        let same_id = asked_id.is_none_or(|id| id == existing);
        let fingerprints_differ =
            bound.is_some() && key.fingerprint.is_some() && *bound != key.fingerprint;
        if !same_id || fingerprints_differ {
            return Err(Refusal::IdempotencyConflict {
                key: key.key.clone(),
                run_id: existing.clone(),
            });
        }
        Ok(Some(existing.clone()))
    }

    /// Refuses a run while shutting down or suspending, past `maxActiveRuns`, or
    /// without its required runtime inputs.
    fn admit(&self, missing_inputs: Vec<String>) -> Result<(), Refusal> {
        if self.phase != EnginePhase::Running {
            return Err(Refusal::ShuttingDown);
        }
        if self.live >= self.limits.max_active_runs.get() {
            return Err(Refusal::Overloaded {
                active: self.live,
                limit: self.limits.max_active_runs.get(),
            });
        }
        if !missing_inputs.is_empty() {
            return Err(Refusal::MissingInputs(missing_inputs));
        }
        Ok(())
    }

    /// Records a live run, accepted at `accepted_at`, and has its supervisor spawned.
    fn start(
        &mut self,
        run_id: String,
        title: String,
        accepted_at: Time,
        key: Option<IdempotencyKey>,
        metadata: Arc<Metadata>,
    ) {
        let summary = RunSummary {
            run_id: run_id.clone(),
            title,
            status: RunStatus::Running,
            started_at: accepted_at.timestamp(),
            completed_at: None,
            metadata,
        };
        self.book(summary, RunState::Live, key);
        self.live += 1;
        self.supervisors += 1;
        self.out.push(EngineEffect::Start { run_id });
    }

    fn book(&mut self, summary: RunSummary, state: RunState, key: Option<IdempotencyKey>) {
        let order = self.next_order;
        self.next_order += 1;
        if let Some(key) = key {
            self.keys
                .insert(key.key, (summary.run_id.clone(), key.fingerprint));
        }
        let book = Book {
            order,
            summary,
            state,
        };
        self.runs.insert(book.summary.run_id.clone(), book);
    }

    fn on_spawn_failed(&mut self, run_id: &str) {
        if self.runs.get(run_id).map(|b| b.state) == Some(RunState::Live) {
            self.live -= 1;
            self.supervisors -= 1;
            self.forget(run_id);
        }
    }

    fn on_resumed(&mut self, run: ResumedRun) {
        let ResumedRun {
            run_id,
            title,
            accepted_at,
            metadata,
            key,
        } = run;
        self.start(run_id, title, accepted_at, key, metadata);
    }

    /// The finished runs the journal holds are known by their summaries, in the order
    /// they ended; the journal's retention applies at once.
    fn on_recovered(&mut self, mut runs: Vec<StoredRun>, now: Time) {
        runs.sort_by_key(|run| run.finished_at);
        for run in runs {
            let run_id = run.summary.run_id.clone();
            for request in run.requests {
                self.requests
                    .update(&run_id, &run.summary.metadata, request);
            }
            if !run.signals.is_empty() {
                let taken = run.signals.into_iter().map(Arc::from).collect();
                self.signals.insert(run_id.clone(), taken);
            }
            let state = RunState::Stored { loading: false };
            self.book(run.summary, state, run.key);
            self.journaled.push_back((run_id, run.finished_at));
        }
        self.purge(now);
    }

    fn on_run_ended(&mut self, summary: RunSummary, weight: Weight, now: Time) {
        let run_id = summary.run_id.clone();
        let Some(book) = self.runs.get_mut(&run_id) else {
            return;
        };
        if book.state != RunState::Live {
            return;
        }
        book.state = RunState::Done;
        book.summary = summary;
        self.live -= 1;
        // Its core settled them all; one whose news was lost is cancelled all the same.
        self.requests.cancel_run(&run_id);
        self.out.push(EngineEffect::Finished {
            run_id: run_id.clone(),
        });
        if self.limits.journal.is_some() {
            self.journaled.push_back((run_id.clone(), now));
            self.purge(now);
        }
        self.remember(run_id, weight);
    }

    /// A live run's request changed: the book keeps it, and the run shows as
    /// `AWAITING_INPUT` while one of its requests is pending (as ShipSec derives it).
    fn on_input(&mut self, run_id: &str, request: Arc<InputRequest>) {
        let Some(book) = self.runs.get_mut(run_id) else {
            return; // forgotten already
        };
        if book.state != RunState::Live {
            return; // ended: its requests are settled
        }
        self.requests
            .update(run_id, &book.summary.metadata, request);
        book.summary.status = if self.requests.waits(run_id) {
            RunStatus::AwaitingInput
        } else {
            RunStatus::Running
        };
    }

    fn on_supervisor_stopped(&mut self, run_id: String, cause: String) {
        self.supervisors = self.supervisors.saturating_sub(1);
        if self.state_of(&run_id) == Some(RunState::Live) {
            self.out.push(EngineEffect::Recheck { run_id, cause });
        }
    }

    /// The supervisor of a run died before the run ended: the run ends FAILED with the
    /// cause, from the time it was accepted to now.
    fn on_lost(&mut self, run_id: &str, cause: &str, now: Time) {
        let Some(book) = self.runs.get_mut(run_id) else {
            return;
        };
        if book.state != RunState::Live {
            return; // it reported its result before exiting
        }
        let result = Arc::new(lost_run(&book.summary, cause, now));
        book.state = RunState::Done;
        book.summary = RunSummary::of_result(&result);
        self.live -= 1;
        self.requests.cancel_run(run_id);
        self.out.push(EngineEffect::Lost {
            run_id: run_id.to_owned(),
            result,
        });
        self.remember(run_id.to_owned(), Weight::default());
    }

    /// A run known by its summary only is read back once, when a question needs it.
    fn on_asked(&mut self, run_id: &str) {
        if self.limits.journal.is_none() {
            return;
        }
        if let Some(Book {
            state: RunState::Stored { loading },
            ..
        }) = self.runs.get_mut(run_id)
            && !std::mem::replace(loading, true)
        {
            self.out.push(EngineEffect::ReadBack {
                run_id: run_id.to_owned(),
            });
        }
    }

    /// A run read back is held whole again, as if it had just ended; one that cannot be
    /// read is forgotten. One purged meanwhile only has its questions answered.
    fn on_read_back(&mut self, run_id: String, outcome: ReadOutcome) {
        let Some(book) = self.runs.get_mut(&run_id) else {
            return self.out.push(EngineEffect::AnswerPending { run_id });
        };
        if !matches!(book.state, RunState::Stored { .. }) {
            return self.out.push(EngineEffect::AnswerPending { run_id });
        }
        match outcome {
            ReadOutcome::Whole(weight) => {
                book.state = RunState::Done;
                self.out.push(EngineEffect::Restored {
                    run_id: run_id.clone(),
                });
                self.remember(run_id, weight);
            }
            ReadOutcome::Unreadable(reason) => {
                self.forget(&run_id);
                self.out.push(EngineEffect::Unreadable { run_id, reason });
            }
        }
    }

    fn on_shutdown(&mut self, cancel: bool) {
        if self.phase == EnginePhase::Closed {
            return;
        }
        self.phase = EnginePhase::Closing;
        if cancel {
            let mut live: Vec<&Book> = self
                .runs
                .values()
                .filter(|b| b.state == RunState::Live)
                .collect();
            live.sort_unstable_by_key(|b| b.order);
            self.out
                .extend(live.into_iter().map(|b| EngineEffect::StopRun {
                    run_id: b.summary.run_id.clone(),
                    kind: StopKind::Cancel,
                }));
        }
    }

    /// A shutdown completes once every run ended and every supervisor exited.
    fn maybe_close(&mut self) {
        if self.phase == EnginePhase::Closing && self.live == 0 && self.supervisors == 0 {
            self.phase = EnginePhase::Closed;
            self.out.push(EngineEffect::Close);
        }
    }

    /// Keeps `run_id` whole and lets go of the oldest finished runs past `retainedRuns`
    /// runs, `retainedNodes` node records or `retainedBytes` bytes (the newest is always
    /// kept): one the journal holds is kept by its summary, to be read back when asked
    /// for; others are forgotten.
    fn remember(&mut self, run_id: String, weight: Weight) {
        self.finished.push_back((run_id, weight));
        self.held.nodes += weight.nodes;
        self.held.bytes += weight.bytes;
        while self.over_bounds() {
            let Some((old, weight)) = self.finished.pop_front() else {
                break;
            };
            self.held.nodes -= weight.nodes;
            self.held.bytes -= weight.bytes;
            let journaled = self.journaled.iter().any(|(id, _)| *id == old);
            match self.runs.get_mut(&old) {
                Some(book) if book.state == RunState::Done && journaled => {
                    book.state = RunState::Stored { loading: false };
                    self.out.push(EngineEffect::Demote { run_id: old });
                }
                _ => self.forget(&old),
            }
        }
    }

    /// Whether the finished runs held whole exceed the bounds (the newest alone never
    /// does, but for `retainedRuns`).
    fn over_bounds(&self) -> bool {
        let limits = &self.limits;
        self.finished.len() > limits.retained_runs.get()
            || (self.finished.len() > 1
                && (self.held.nodes > limits.retained_nodes.get()
                    || self.held.bytes > limits.retained_bytes.get()))
    }

    /// Deletes the oldest finished runs from the journal past its retention; one known
    /// by its summary only is forgotten with it.
    fn purge(&mut self, now: Time) {
        let Some(retention) = self.limits.journal else {
            return;
        };
        while let Some((run_id, at)) = self.journaled.front() {
            let expired = now.since(*at) > retention.age;
            if self.journaled.len() <= retention.runs.get() && !expired {
                break;
            }
            let run_id = run_id.clone();
            self.journaled.pop_front();
            self.out.push(EngineEffect::Purge {
                run_id: run_id.clone(),
            });
            if matches!(self.state_of(&run_id), Some(RunState::Stored { .. })) {
                self.forget(&run_id);
            }
        }
    }

    /// Lets go of everything known of `run_id` and of the keys bound to it.
    fn forget(&mut self, run_id: &str) {
        if self.runs.remove(run_id).is_some() {
            self.keys.retain(|_, (id, _)| id != run_id);
            self.requests.forget_run(run_id);
            self.signals.remove(run_id);
            self.out.push(EngineEffect::Forget {
                run_id: run_id.to_owned(),
            });
        }
    }
}

/// The result of a run whose supervisor died before the run ended.
fn lost_run(summary: &RunSummary, cause: &str, now: Time) -> RunResult {
    let started = Time::from_system_time(summary.started_at.system_time());
    RunResult {
        metadata: summary.metadata.clone(),
        run_id: summary.run_id.clone(),
        title: summary.title.clone(),
        status: RunStatus::Failed,
        success: false,
        error: Some(format!(
            "the run's supervisor died before the run ended: {cause}"
        )),
        started_at: summary.started_at,
        completed_at: now.timestamp(),
        duration_ms: now.since(started).as_millis() as u64,
        outputs: Default::default(),
        nodes: Default::default(),
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n`, which a test gives above 0.
    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("a test bound is at least 1")
    }

    fn limits() -> EngineLimits {
        EngineLimits {
            max_active_runs: nz(2),
            retained_runs: nz(2),
            retained_nodes: nz(100),
            retained_bytes: nz(1_000),
            journal: None,
        }
    }

    fn journaled(runs: usize, age: Duration) -> EngineLimits {
        EngineLimits {
            journal: Some(JournalRetention {
                runs: nz(runs),
                age,
            }),
            ..limits()
        }
    }

    fn at(secs: u64) -> Time {
        Time::from_micros(1_700_000_000_000_000 + secs * 1_000_000)
    }

    fn submission(fresh: &str) -> Submission {
        Submission {
            run_id: NewRunId::Fresh(fresh.into()),
            key: None,
            title: "t".into(),
            missing_inputs: Vec::new(),
            metadata: Arc::default(),
        }
    }

    fn keyed(fresh: &str, key: &str, fingerprint: u64) -> Submission {
        Submission {
            key: Some(IdempotencyKey {
                key: key.into(),
                fingerprint: Some(fingerprint),
            }),
            ..submission(fresh)
        }
    }

    fn submit(core: &mut EngineCore, s: Submission, now: Time) -> Vec<EngineEffect> {
        core.apply(EngineFact::Submitted(s), now)
    }

    fn started(run_id: &str) -> Vec<EngineEffect> {
        vec![EngineEffect::Start {
            run_id: run_id.into(),
        }]
    }

    fn end(core: &mut EngineCore, run_id: &str, now: Time, weight: Weight) -> Vec<EngineEffect> {
        let mut summary = core.summary(run_id).expect("known").clone();
        summary.status = RunStatus::Completed;
        summary.completed_at = Some(now.timestamp());
        let effects = core.apply(EngineFact::RunEnded { summary, weight }, now);
        let stopped = EngineFact::SupervisorStopped {
            run_id: run_id.into(),
            cause: "stopped".into(),
        };
        let mut more = core.apply(stopped, now);
        let mut all = effects;
        all.append(&mut more);
        all
    }

    fn light() -> Weight {
        Weight {
            nodes: 1,
            bytes: 10,
        }
    }

    #[test]
    fn a_run_gets_the_id_it_asked_for_or_the_fresh_one_and_an_id_in_use_is_refused() {
        let mut core = EngineCore::new(limits());
        assert_eq!(submit(&mut core, submission("r1"), at(0)), started("r1"));
        let asked = Submission {
            run_id: NewRunId::Asked("mine".into()),
            ..submission("r2")
        };
        assert_eq!(submit(&mut core, asked.clone(), at(1)), started("mine"));
        end(&mut core, "mine", at(2), light());
        assert_eq!(
            submit(&mut core, asked, at(3)),
            vec![EngineEffect::Refuse(Refusal::DuplicateRun("mine".into()))]
        );
        assert_eq!(core.state_of("r1"), Some(RunState::Live));
        assert_eq!(core.state_of("mine"), Some(RunState::Done));
    }

    #[test]
    fn an_idempotency_key_returns_its_run_and_refuses_other_inputs_or_another_id() {
        let mut core = EngineCore::new(limits());
        assert_eq!(submit(&mut core, keyed("r1", "k", 7), at(0)), started("r1"));
        let existing = vec![EngineEffect::Existing {
            run_id: "r1".into(),
        }];
        assert_eq!(submit(&mut core, keyed("r2", "k", 7), at(1)), existing);
        let unknown_fingerprint = Submission {
            key: Some(IdempotencyKey {
                key: "k".into(),
                fingerprint: None,
            }),
            ..submission("r3")
        };
        assert_eq!(submit(&mut core, unknown_fingerprint, at(1)), existing);
        let conflict = vec![EngineEffect::Refuse(Refusal::IdempotencyConflict {
            key: "k".into(),
            run_id: "r1".into(),
        })];
        assert_eq!(submit(&mut core, keyed("r4", "k", 8), at(2)), conflict);
        let other_id = Submission {
            run_id: NewRunId::Asked("elsewhere".into()),
            ..keyed("r5", "k", 7)
        };
        assert_eq!(submit(&mut core, other_id, at(2)), conflict);
        // The key holds after the run ended, even when the engine is full.
        end(&mut core, "r1", at(3), light());
        submit(&mut core, submission("a"), at(4));
        submit(&mut core, submission("b"), at(4));
        assert_eq!(submit(&mut core, keyed("r6", "k", 7), at(5)), existing);
    }

    #[test]
    fn admission_refuses_past_max_active_runs_and_without_required_inputs() {
        let mut core = EngineCore::new(limits());
        submit(&mut core, submission("a"), at(0));
        submit(&mut core, submission("b"), at(0));
        assert_eq!(
            submit(&mut core, submission("c"), at(1)),
            vec![EngineEffect::Refuse(Refusal::Overloaded {
                active: 2,
                limit: 2
            })]
        );
        end(&mut core, "a", at(2), light());
        let lacking = Submission {
            missing_inputs: vec!["target".into()],
            ..submission("d")
        };
        assert_eq!(
            submit(&mut core, lacking, at(3)),
            vec![EngineEffect::Refuse(Refusal::MissingInputs(vec![
                "target".into()
            ]))]
        );
        assert_eq!(submit(&mut core, submission("e"), at(3)), started("e"));
        // A run whose supervisor could not be spawned frees its place and its id.
        core.apply(EngineFact::SpawnFailed { run_id: "e".into() }, at(4));
        assert_eq!(core.state_of("e"), None);
        assert_eq!(core.live_runs(), 1);
    }

    #[test]
    fn finished_runs_past_the_bounds_are_forgotten_or_kept_by_summary_when_journaled() {
        let mut core = EngineCore::new(limits());
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            submit(&mut core, keyed(id, id, 1), at(i as u64));
            end(&mut core, id, at(i as u64), light());
        }
        assert_eq!(core.state_of("a"), None, "past retainedRuns, not journaled");
        assert_eq!(core.retained().runs, 2);
        // Its key went with it: the same key starts a new run.
        assert_eq!(submit(&mut core, keyed("a2", "a", 1), at(9)), started("a2"));

        let mut core = EngineCore::new(journaled(100, Duration::from_secs(3600)));
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            submit(&mut core, submission(id), at(i as u64));
            let effects = end(&mut core, id, at(i as u64), light());
            if id == "c" {
                assert!(effects.contains(&EngineEffect::Demote { run_id: "a".into() }));
            }
        }
        assert_eq!(
            core.state_of("a"),
            Some(RunState::Stored { loading: false })
        );
        assert_eq!(core.retained().stored, 1);
        let page = core.list(&RunQuery {
            limit: 10,
            ..RunQuery::default()
        });
        let ids: Vec<&str> = page.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"], "a stored run is still listed");
    }

    #[test]
    fn the_newest_run_is_kept_whole_however_heavy() {
        let mut core = EngineCore::new(limits());
        submit(&mut core, submission("small"), at(0));
        end(&mut core, "small", at(0), light());
        submit(&mut core, submission("huge"), at(1));
        let heavy = Weight {
            nodes: 1_000,
            bytes: 1_000_000,
        };
        let effects = end(&mut core, "huge", at(1), heavy);
        assert!(effects.contains(&EngineEffect::Forget {
            run_id: "small".into()
        }));
        assert_eq!(core.state_of("huge"), Some(RunState::Done));
        assert_eq!(core.retained().nodes, 1_000);
    }

    #[test]
    fn the_journal_lets_go_of_runs_past_its_count_and_age() {
        let mut core = EngineCore::new(journaled(2, Duration::from_secs(60)));
        let stored = |id: &str, ended: u64| StoredRun {
            summary: RunSummary {
                run_id: id.into(),
                title: "t".into(),
                status: RunStatus::Completed,
                started_at: at(0).timestamp(),
                completed_at: Some(at(ended).timestamp()),
                metadata: Arc::default(),
            },
            finished_at: at(ended),
            requests: Vec::new(),
            signals: Vec::new(),
            key: None,
        };
        // Recovered in any order: the oldest ending goes first.
        let effects = core.apply(
            EngineFact::Recovered(vec![
                stored("new", 50),
                stored("old", 10),
                stored("mid", 30),
            ]),
            at(55),
        );
        assert_eq!(
            effects,
            vec![
                EngineEffect::Purge {
                    run_id: "old".into()
                },
                EngineEffect::Forget {
                    run_id: "old".into()
                }
            ]
        );
        // Later, "mid" is past its age when the next run ends.
        submit(&mut core, submission("r"), at(91));
        let effects = end(&mut core, "r", at(91), light());
        assert!(effects.contains(&EngineEffect::Purge {
            run_id: "mid".into()
        }));
        assert_eq!(core.state_of("mid"), None);
        assert_eq!(
            core.state_of("new"),
            Some(RunState::Stored { loading: false })
        );
    }

    #[test]
    fn a_run_whose_supervisor_died_fails_from_its_true_start() {
        let mut core = EngineCore::new(limits());
        submit(&mut core, submission("r"), at(10));
        let stopped = EngineFact::SupervisorStopped {
            run_id: "r".into(),
            cause: "panicked".into(),
        };
        assert_eq!(
            core.apply(stopped, at(20)),
            vec![EngineEffect::Recheck {
                run_id: "r".into(),
                cause: "panicked".into()
            }]
        );
        let lost = EngineFact::SupervisorLost {
            run_id: "r".into(),
            cause: "panicked".into(),
        };
        let effects = core.apply(lost.clone(), at(25));
        let [EngineEffect::Lost { result, .. }] = effects.as_slice() else {
            panic!("{effects:#?}");
        };
        assert_eq!(result.status, RunStatus::Failed);
        assert_eq!(result.started_at, at(10).timestamp());
        assert_eq!(result.completed_at, at(25).timestamp());
        assert_eq!(result.duration_ms, 15_000);
        assert_eq!(
            result.error.as_deref(),
            Some("the run's supervisor died before the run ended: panicked")
        );
        assert_eq!(core.summary("r").map(|s| s.status), Some(RunStatus::Failed));
        assert!(core.apply(lost, at(26)).is_empty(), "once");
    }

    #[test]
    fn a_supervisor_that_reported_its_end_before_exiting_is_not_a_loss() {
        let mut core = EngineCore::new(limits());
        submit(&mut core, submission("r"), at(0));
        let effects = end(&mut core, "r", at(1), light());
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, EngineEffect::Recheck { .. } | EngineEffect::Lost { .. }))
        );
    }

    #[test]
    fn a_stored_run_is_read_back_once_and_held_whole_again_or_forgotten() {
        let mut core = EngineCore::new(journaled(100, Duration::from_secs(3600)));
        let stored = |id: &str| StoredRun {
            summary: RunSummary {
                run_id: id.into(),
                title: "t".into(),
                status: RunStatus::Completed,
                started_at: at(0).timestamp(),
                completed_at: Some(at(1).timestamp()),
                metadata: Arc::default(),
            },
            finished_at: at(1),
            requests: Vec::new(),
            signals: Vec::new(),
            key: Some(IdempotencyKey {
                key: format!("key-{id}"),
                fingerprint: Some(3),
            }),
        };
        core.apply(EngineFact::Recovered(vec![stored("a"), stored("b")]), at(2));
        let asked = |id: &str| EngineFact::Asked { run_id: id.into() };
        assert_eq!(
            core.apply(asked("a"), at(3)),
            vec![EngineEffect::ReadBack { run_id: "a".into() }]
        );
        assert!(core.apply(asked("a"), at(3)).is_empty(), "one reading");
        let read = EngineFact::ReadBack {
            run_id: "a".into(),
            outcome: ReadOutcome::Whole(light()),
        };
        assert_eq!(
            core.apply(read, at(4)),
            vec![EngineEffect::Restored { run_id: "a".into() }]
        );
        assert_eq!(core.state_of("a"), Some(RunState::Done));
        // An idempotent resubmit of a stored run reads it back too.
        assert_eq!(
            submit(&mut core, keyed("x", "key-b", 3), at(5)),
            vec![
                EngineEffect::Existing { run_id: "b".into() },
                EngineEffect::ReadBack { run_id: "b".into() }
            ]
        );
        let unreadable = EngineFact::ReadBack {
            run_id: "b".into(),
            outcome: ReadOutcome::Unreadable("torn".into()),
        };
        assert_eq!(
            core.apply(unreadable, at(6)),
            vec![
                EngineEffect::Forget { run_id: "b".into() },
                EngineEffect::Unreadable {
                    run_id: "b".into(),
                    reason: "torn".into()
                }
            ]
        );
        assert_eq!(
            submit(&mut core, keyed("y", "key-b", 3), at(7)),
            started("y"),
            "its key went with it"
        );
        // A reading that comes back for a run purged meanwhile answers its questions.
        let late = EngineFact::ReadBack {
            run_id: "gone".into(),
            outcome: ReadOutcome::Whole(light()),
        };
        assert_eq!(
            core.apply(late, at(8)),
            vec![EngineEffect::AnswerPending {
                run_id: "gone".into()
            }]
        );
    }

    #[test]
    fn without_a_journal_nothing_is_read_back() {
        let mut core = EngineCore::new(limits());
        let asked = EngineFact::Asked { run_id: "r".into() };
        assert!(core.apply(asked, at(0)).is_empty());
    }

    #[test]
    fn the_phases_take_no_new_run_once_suspending_or_closing_and_close_once() {
        let mut core = EngineCore::new(limits());
        submit(&mut core, submission("a"), at(0));
        submit(&mut core, submission("b"), at(0));
        end(&mut core, "b", at(1), light());
        assert!(core.apply(EngineFact::Quiesced, at(2)).is_empty());
        assert_eq!(core.phase(), EnginePhase::Suspending);
        let refused = vec![EngineEffect::Refuse(Refusal::ShuttingDown)];
        assert_eq!(submit(&mut core, submission("c"), at(2)), refused);
        assert_eq!(
            core.apply(EngineFact::ShutdownAsked { cancel: true }, at(3)),
            vec![EngineEffect::StopRun {
                run_id: "a".into(),
                kind: StopKind::Cancel
            }],
            "only the live run is stopped"
        );
        assert_eq!(core.phase(), EnginePhase::Closing);
        assert_eq!(submit(&mut core, submission("d"), at(3)), refused);
        let mut summary = core.summary("a").unwrap().clone();
        summary.status = RunStatus::Cancelled;
        let ended = core.apply(
            EngineFact::RunEnded {
                summary,
                weight: light(),
            },
            at(4),
        );
        assert!(
            !ended.contains(&EngineEffect::Close),
            "its supervisor lives"
        );
        let stopped = EngineFact::SupervisorStopped {
            run_id: "a".into(),
            cause: "stopped".into(),
        };
        assert_eq!(core.apply(stopped, at(5)), vec![EngineEffect::Close]);
        assert_eq!(core.phase(), EnginePhase::Closed);
        assert!(
            core.apply(EngineFact::ShutdownAsked { cancel: false }, at(6))
                .is_empty()
        );
    }

    #[test]
    fn an_idle_engine_closes_as_soon_as_it_is_asked() {
        let mut core = EngineCore::new(limits());
        assert_eq!(
            core.apply(EngineFact::ShutdownAsked { cancel: false }, at(0)),
            vec![EngineEffect::Close]
        );
    }

    #[test]
    fn listings_page_newest_first_and_filter_by_status() {
        let mut core = EngineCore::new(EngineLimits {
            max_active_runs: nz(10),
            retained_runs: nz(10),
            ..limits()
        });
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            submit(&mut core, submission(id), at(i as u64));
        }
        end(&mut core, "b", at(5), light());
        let page = core.list(&RunQuery {
            limit: 2,
            ..RunQuery::default()
        });
        let ids: Vec<&str> = page.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["d", "c"]);
        let rest = core.list(&RunQuery {
            limit: 2,
            before: page.next,
            ..RunQuery::default()
        });
        let ids: Vec<&str> = rest.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!((ids, rest.next), (vec!["b", "a"], None));
        let done = core.list(&RunQuery {
            limit: 10,
            status: Some(RunStatus::Completed),
            ..RunQuery::default()
        });
        assert_eq!(done.runs.len(), 1);
        assert_eq!(done.runs[0].run_id, "b");
    }
}
