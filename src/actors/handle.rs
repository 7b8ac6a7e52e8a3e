//! The local channel: [`Orchestrator::start`] gives a [`Handle`], a thin typed wrapper
//! over the orchestrator actor's mailbox. [`Handle::submit`] takes a definition, checks
//! it against this engine's limits and components, and gives a [`RunHandle`] whose
//! [`RunHandle::result`] resolves when the run ends. [`Handle::shutdown`] cancels or
//! drains what is running and completes once every actor has stopped.

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::Stream;
use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actors::faults::{Faults, NoFaults};
use crate::actors::orchestrator::{OrchestratorActor, OrchestratorArgs};
use crate::actors::slots::{RemotePools, Slots};
use crate::messages::orchestrator::{
    OrchestratorMsg, RunCommandError, ShutdownMode, SignalIn, SubmitOptions,
};
use crate::messages::supervisor::Subscription;
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::graph::Graph;
use crate::runtime::definition::limits::DefinitionLimits;
use crate::runtime::definition::load::{self, LoadError};
use crate::runtime::definition::parse::Format;
use crate::runtime::definition::validate::Problem;
use crate::runtime::definition::{JsonObject, WorkflowDefinition};
use crate::runtime::guardrails::config::{Capacities, ConfigError, EngineConfig};
use crate::runtime::guardrails::gate::Gate;
use crate::runtime::guardrails::service::DefinitionPolicy;
use crate::runtime::guardrails::slots::SlotStats;
use crate::runtime::journal::record;
use crate::runtime::journal::{Durability, Journal, JournalError, Scanned};
use crate::runtime::semantics::event::TraceEvent;
use crate::runtime::semantics::gate::{Resolution, ResolveError, Resolved};
use crate::runtime::semantics::inbox::SignalAck;
use crate::runtime::semantics::report::StopKind;
use crate::runtime::semantics::requests::{Filed, InputPage, InputQuery};
use crate::runtime::semantics::result::{RetainedStats, RunPage, RunQuery};
use crate::runtime::semantics::result::{RunResult, RunSnapshot};

/// Errors of the engine's public API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The definition cannot be read, is over a limit, or does not validate.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    /// The command about a run could not be carried out.
    #[error(transparent)]
    Run(#[from] RunCommandError),
    /// The engine configuration cannot run an engine.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The orchestrator could not be started.
    #[error("cannot start the orchestrator: {0}")]
    Start(String),
    /// The orchestrator is gone (shut down).
    #[error("the orchestrator is not running")]
    Unavailable,
    /// The journal cannot be opened or read: the engine does not start.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Entry point of the library.
#[derive(Debug, Clone, Copy)]
pub struct Orchestrator;

/// Engines started in this process, so a [`Workflow`] knows which engine checked it.
static ENGINES: AtomicU64 = AtomicU64::new(1);

impl Orchestrator {
    /// Starts an orchestrator with the built-in components.
    ///
    /// # Errors
    /// As [`Orchestrator::start_with`].
    pub async fn start(config: EngineConfig) -> Result<Handle, EngineError> {
        Orchestrator::start_with(config, ComponentRegistry::with_builtins()).await
    }

    /// Starts an orchestrator with the given components.
    ///
    /// # Errors
    /// [`EngineError::Config`] when the configuration does not validate (every problem,
    /// with its path); [`EngineError::Start`] when the actor cannot be spawned.
    pub async fn start_with(
        config: EngineConfig,
        registry: ComponentRegistry,
    ) -> Result<Handle, EngineError> {
        Orchestrator::start_faulty(config, registry, Arc::new(NoFaults)).await
    }

    /// Starts an orchestrator with the given components whose actors call `faults` (the
    /// chaos suite's `Chaos`, for tests).
    ///
    /// # Errors
    /// As [`Orchestrator::start_with`].
    #[cfg(feature = "testing")]
    pub async fn start_with_faults(
        config: EngineConfig,
        registry: ComponentRegistry,
        faults: Arc<dyn Faults>,
    ) -> Result<Handle, EngineError> {
        Orchestrator::start_faulty(config, registry, faults).await
    }

    /// Starts an orchestrator whose actors call `faults` (none but in tests).
    async fn start_faulty(
        config: EngineConfig,
        registry: ComponentRegistry,
        faults: Arc<dyn Faults>,
    ) -> Result<Handle, EngineError> {
        let capacities = config.validate(&registry)?;
        let journal = match (&config.journal.data_dir, config.journal.durability) {
            (Some(dir), durability) if durability != Durability::Off => {
                Some(Journal::open(dir, durability, config.journal.loss)?)
            }
            _ => None,
        };
        Orchestrator::start_engine(config, capacities, registry, journal, faults).await
    }

    /// Starts an engine over `journal` (whatever `config.journal` says): every unfinished
    /// run in it is resumed before this returns.
    ///
    /// # Errors
    /// An invalid `config`, a journal that cannot be read (the file and the reason), or a
    /// journaled run that cannot be resumed (its id and the reason).
    pub async fn start_with_journal(
        config: EngineConfig,
        registry: ComponentRegistry,
        journal: Option<Journal>,
    ) -> Result<Handle, EngineError> {
        let capacities = config.validate(&registry)?;
        Orchestrator::start_engine(config, capacities, registry, journal, Arc::new(NoFaults)).await
    }

    /// Starts an engine over `journal` with `faults`, `config` validated.
    async fn start_engine(
        config: EngineConfig,
        capacities: Capacities,
        registry: ComponentRegistry,
        journal: Option<Journal>,
        faults: Arc<dyn Faults>,
    ) -> Result<Handle, EngineError> {
        let stored = match &journal {
            Some(j) => j.scan()?,
            None => Vec::new(),
        };
        let resumed = stored
            .iter()
            .filter_map(|r| match r {
                Scanned::Unfinished(log) => Some(log.header.accepted.run_id.clone()),
                Scanned::Finished(_) => None,
            })
            .collect();
        let registry = Arc::new(registry);
        let limits = config.limits;
        let slots = Slots::start(capacities.max_concurrent_nodes);
        let args = OrchestratorArgs {
            config,
            capacities,
            registry: registry.clone(),
            journal: journal.clone(),
            stored,
            slots: slots.clone(),
            faults,
        };
        let (actor, join) = Actor::spawn(None, OrchestratorActor, args)
            .await
            .map_err(|e| EngineError::Start(e.to_string()))?;
        Ok(Handle {
            actor,
            registry,
            journal,
            resumed: Arc::new(resumed),
            limits,
            pools: RemotePools(slots),
            engine: ENGINES.fetch_add(1, Ordering::Relaxed),
            join: Arc::new(Mutex::new(Some(join))),
        })
    }
}

/// A definition this engine checked — within its limits, valid against its components —
/// ready to run any number of times. Made by [`Handle::prepare`] and its siblings only.
#[derive(Debug, Clone)]
pub struct Workflow {
    definition: Arc<WorkflowDefinition>,
    /// The definition as JSON text, written once (when a run of it is first journaled or
    /// keyed) and shared by every run of it.
    text: Arc<OnceLock<Arc<str>>>,
    graph: Arc<Graph>,
    /// The engine that checked it, and the limits it was checked under.
    engine: u64,
    limits: DefinitionLimits,
}

impl Workflow {
    /// The definition as given.
    pub fn definition(&self) -> &WorkflowDefinition {
        &self.definition
    }

    /// The definition as JSON text, written once.
    fn text(&self) -> Arc<str> {
        self.text
            .get_or_init(|| {
                // A definition always serialises.
                let text =
                    serde_json::to_string(&*self.definition).expect("a definition serialises");
                Arc::from(text)
            })
            .clone()
    }

    /// Its validated graph.
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// Where its `dependsOn` or `dependencyCounts` disagreed with its edges.
    pub fn warnings(&self) -> &[Problem] {
        &self.graph.warnings
    }
}

/// A typed handle on a running orchestrator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    actor: ActorRef<OrchestratorMsg>,
    registry: Arc<ComponentRegistry>,
    journal: Option<Journal>,
    resumed: Arc<Vec<String>>,
    limits: DefinitionLimits,
    /// Where remote workers' slots are told.
    pools: RemotePools,
    engine: u64,
    /// The orchestrator's task, awaited by the first shutdown.
    join: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// A stream of a run's trace events, ending when the run ends.
pub type EventStream = Pin<Box<dyn Stream<Item = TraceEvent> + Send>>;

impl Handle {
    /// The components this orchestrator knows.
    pub fn registry(&self) -> &ComponentRegistry {
        &self.registry
    }

    /// Where the coordinator of remote workers tells this engine the worker slots of
    /// each remote pool.
    pub fn remote_pools(&self) -> RemotePools {
        self.pools.clone()
    }

    /// Checks a definition against this engine's limits, then validates it against its
    /// components.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the limit broken, or every validation problem.
    pub fn prepare(&self, definition: WorkflowDefinition) -> Result<Workflow, EngineError> {
        let graph = Gate::new(&self.registry, &self.limits).admit(&definition)?;
        Ok(self.adopt(load::Loaded { definition, graph }))
    }

    /// As [`Handle::prepare`], under a server's definition policy too (what the HTTP
    /// service lets its clients run).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] with every problem the policy finds, or as
    /// [`Handle::prepare`].
    pub fn prepare_under(
        &self,
        policy: &DefinitionPolicy,
        definition: WorkflowDefinition,
    ) -> Result<Workflow, EngineError> {
        let gate = Gate::new(&self.registry, &self.limits).under(policy);
        let graph = gate.admit(&definition)?;
        Ok(self.adopt(load::Loaded { definition, graph }))
    }

    /// Parses definition text (JSON or YAML) under this engine's limits, then prepares it.
    ///
    /// # Errors
    /// [`EngineError::Invalid`]: a limit, the shape, or validation.
    pub fn load_str(&self, text: &str, format: Format) -> Result<Workflow, EngineError> {
        let loaded = load::load_str_with(text, format, &self.registry, &self.limits)?;
        Ok(self.adopt(loaded))
    }

    /// Reads a definition file (format from its extension or content) under this
    /// engine's limits, then prepares it.
    ///
    /// # Errors
    /// [`EngineError::Invalid`]: the file, a limit, the shape, or validation.
    pub fn load_file(&self, path: &Path) -> Result<Workflow, EngineError> {
        let loaded = load::load_file_with(path, &self.registry, &self.limits)?;
        Ok(self.adopt(loaded))
    }

    /// Whether `workflow` passed this engine's checks (or ones just like them).
    fn checked(&self, workflow: &Workflow) -> bool {
        workflow.engine == self.engine
            || (workflow.limits == self.limits
                && workflow
                    .graph
                    .nodes
                    .iter()
                    .all(|n| self.registry.get(&n.component_id).is_some()))
    }

    fn adopt(&self, loaded: load::Loaded) -> Workflow {
        Workflow {
            definition: Arc::new(loaded.definition),
            text: Arc::default(),
            graph: loaded.graph,
            engine: self.engine,
            limits: self.limits,
        }
    }

    /// Starts a run of a definition: checked against the limits, validated, started.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for the definition; [`RunCommandError::InvalidInputs`]
    /// when required runtime inputs are missing, [`RunCommandError::DuplicateRun`] for a
    /// reused run id, [`RunCommandError::Overloaded`] past the admission limit,
    /// [`RunCommandError::ShuttingDown`]; [`EngineError::Unavailable`] when the
    /// orchestrator is gone.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the run started; its id is then unknown to the caller
    /// unless `options.run_id` was set.
    pub async fn submit(
        &self,
        definition: WorkflowDefinition,
        inputs: JsonObject,
        options: SubmitOptions,
    ) -> Result<RunHandle, EngineError> {
        let workflow = self.prepare(definition)?;
        self.submit_workflow(&workflow, inputs, options).await
    }

    /// Starts a run of a prepared workflow (checked once, run many times). A workflow
    /// another engine prepared is taken when it was checked under the same limits and
    /// this engine has every component it uses; else it is checked again here.
    ///
    /// # Errors
    /// As [`Handle::submit`].
    ///
    /// # Cancel safety
    /// As [`Handle::submit`].
    pub async fn submit_workflow(
        &self,
        workflow: &Workflow,
        inputs: JsonObject,
        options: SubmitOptions,
    ) -> Result<RunHandle, EngineError> {
        // Work the journal cannot keep is not taken.
        if let Some(failure) = self.journal.as_ref().and_then(Journal::failure) {
            return Err(RunCommandError::Journal(failure.to_string()).into());
        }
        let graph = if self.checked(workflow) {
            workflow.graph.clone()
        } else {
            self.prepare((*workflow.definition).clone())?.graph
        };
        // Serialised once per workflow, on the caller's task, not in the orchestrator.
        let text =
            (self.journal.is_some() || options.idempotency_key.is_some()).then(|| workflow.text());
        let fingerprint = match (&options.idempotency_key, &text) {
            (Some(_), Some(text)) => Some(record::submission_fingerprint(
                text,
                // A JSON object always serialises.
                &serde_json::to_string(&inputs).expect("inputs serialise"),
            )),
            _ => None,
        };
        let definition = self.journal.as_ref().and(text);
        let submitted = ractor::call!(self.actor, |reply| OrchestratorMsg::Submit {
            graph,
            definition,
            inputs,
            options,
            fingerprint,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??;
        if let Some(stored) = submitted.stored {
            // Accepted only once the journal holds it.
            stored
                .await
                .map_err(|_| EngineError::Unavailable)?
                .map_err(|e| RunCommandError::Journal(e.to_string()))?;
        }
        Ok(RunHandle {
            run_id: submitted.run_id,
            existing: submitted.existing,
            result: submitted.result,
        })
    }

    /// A page of the runs this engine knows (live, and finished ones still retained),
    /// newest first.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`].
    pub async fn list(&self, query: RunQuery) -> Result<RunPage, EngineError> {
        ractor::call!(self.actor, |reply| OrchestratorMsg::List { query, reply })
            .map_err(|_| EngineError::Unavailable)
    }

    /// The current state of a run.
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn status(&self, run_id: &str) -> Result<RunSnapshot, EngineError> {
        let run_id = run_id.to_owned();
        Ok(ractor::call!(self.actor, |reply| OrchestratorMsg::Status {
            run_id,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??)
    }

    /// Every event of a run from the first, then live ones until the run ends.
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn events(&self, run_id: &str) -> Result<EventStream, EngineError> {
        self.subscribe(run_id, Subscription::default()).await
    }

    /// The events of a run after `asked.after`, then live ones until the run ends. With
    /// `asked.buffer`, a subscriber that lets that many live events wait is dropped: its
    /// stream ends early, before the run's last event, and it subscribes again after the
    /// last `seq` it has (no gap, no duplicate).
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn subscribe(
        &self,
        run_id: &str,
        asked: Subscription,
    ) -> Result<EventStream, EngineError> {
        let run_id = run_id.to_owned();
        let feed = ractor::call!(self.actor, |reply| OrchestratorMsg::Events {
            run_id,
            asked,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??;
        let backlog = futures::stream::iter(feed.backlog);
        Ok(match feed.live {
            None => Box::pin(backlog),
            Some(rx) => {
                use futures::StreamExt;
                Box::pin(backlog.chain(tokio_stream::wrappers::ReceiverStream::new(rx)))
            }
        })
    }

    /// Cancels a run: pending nodes end CANCELLED, running attempts get the grace period.
    /// `false` when the run had ended already (nothing to cancel).
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn cancel(&self, run_id: &str) -> Result<bool, EngineError> {
        self.stop(run_id, StopKind::Cancel).await
    }

    /// Terminates a run: as cancel, without the grace period. `false` when the run had
    /// ended already.
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn terminate(&self, run_id: &str) -> Result<bool, EngineError> {
        self.stop(run_id, StopKind::Terminate).await
    }

    /// Answers input request `request_id` of run `run_id` (a gate's), once the answer is
    /// stored: [`Resolved::Applied`] when it resolved the request (the gate completes with
    /// it), [`Resolved::Duplicate`] when the request already had this very answer.
    ///
    /// # Errors
    /// [`RunCommandError::Input`] when the request is unknown, was resolved with another
    /// answer, or expired or was cancelled; [`RunCommandError::RunEnded`],
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn resolve_input(
        &self,
        run_id: &str,
        request_id: &str,
        resolution: Resolution,
    ) -> Result<Resolved, EngineError> {
        self.answer(Some(run_id.to_owned()), request_id, resolution)
            .await
    }

    /// Answers input request `request_id`, whichever run made it: the answer is stored
    /// before this returns. The same answer again is [`Resolved::Duplicate`], even after
    /// the run ended.
    ///
    /// # Errors
    /// [`RunCommandError::Input`] when no run the engine knows made the request, it was
    /// resolved with another answer, or it expired or was cancelled; or
    /// [`EngineError::Unavailable`].
    pub async fn resolve(
        &self,
        request_id: &str,
        resolution: Resolution,
    ) -> Result<Resolved, EngineError> {
        self.answer(None, request_id, resolution).await
    }

    /// Sends a signal to run `run_id`'s inbox: stored before this returns, idempotent by
    /// `signal_id` (one without is given `sig-<n>`). `resolveHumanInput` answers a gate (its
    /// payload is ShipSec's `HumanInputResolution`), or is kept until the gate asks; any
    /// other name is recorded as a trace event ([`Signaled::Unhandled`](crate::runtime::semantics::inbox::Signaled::Unhandled)).
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], [`RunCommandError::RunEnded`],
    /// [`RunCommandError::Signal`] when its payload, node or answer is refused, or
    /// [`EngineError::Unavailable`].
    pub async fn signal(
        &self,
        run_id: &str,
        name: &str,
        signal_id: Option<&str>,
        payload: serde_json::Value,
    ) -> Result<SignalAck, EngineError> {
        let signal = SignalIn {
            signal_id: signal_id.map(str::to_owned),
            name: name.to_owned(),
            payload,
        };
        let run_id = run_id.to_owned();
        Ok(ractor::call!(self.actor, |reply| OrchestratorMsg::Signal {
            run_id,
            signal,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??)
    }

    /// A page of the input requests of the runs the engine knows, newest first.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`].
    pub async fn inputs(&self, query: InputQuery) -> Result<InputPage, EngineError> {
        ractor::call!(self.actor, |reply| OrchestratorMsg::Inputs { query, reply })
            .map_err(|_| EngineError::Unavailable)
    }

    /// Input request `request_id` as it is now, with its run.
    ///
    /// # Errors
    /// [`RunCommandError::Input`] when no run the engine knows made it, or
    /// [`EngineError::Unavailable`].
    pub async fn input(&self, request_id: &str) -> Result<Filed, EngineError> {
        let asked = request_id.to_owned();
        let found = ractor::call!(self.actor, |reply| OrchestratorMsg::Input {
            request_id: asked,
            reply
        })
        .map_err(|_| EngineError::Unavailable)?;
        found.ok_or_else(|| {
            RunCommandError::Input(ResolveError::Unknown(request_id.to_owned())).into()
        })
    }

    async fn answer(
        &self,
        run_id: Option<String>,
        request_id: &str,
        resolution: Resolution,
    ) -> Result<Resolved, EngineError> {
        let request_id: Arc<str> = request_id.into();
        Ok(ractor::call!(self.actor, |reply| OrchestratorMsg::Resolve {
            run_id,
            request_id,
            resolution,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??)
    }

    async fn stop(&self, run_id: &str, kind: StopKind) -> Result<bool, EngineError> {
        let run_id = run_id.to_owned();
        Ok(ractor::call!(self.actor, |reply| OrchestratorMsg::Stop {
            run_id,
            kind,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??)
    }

    /// Nodes waiting for a slot (queue depth) and attempts holding slots, engine-wide.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`].
    pub async fn slots(&self) -> Result<SlotStats, EngineError> {
        ractor::call!(self.actor, OrchestratorMsg::Slots).map_err(|_| EngineError::Unavailable)
    }

    /// What the finished runs kept whole in memory weigh (bounded by `retainedRuns`,
    /// `retainedNodes` and `retainedBytes`), and how many more the journal holds by their
    /// summaries, read back when asked for.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`].
    pub async fn retained(&self) -> Result<RetainedStats, EngineError> {
        ractor::call!(self.actor, OrchestratorMsg::Retained).map_err(|_| EngineError::Unavailable)
    }

    /// Waits until no attempt holds or waits for a slot (every slot is back).
    ///
    /// # Errors
    /// [`EngineError::Unavailable`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn slots_idle(&self) -> Result<(), EngineError> {
        ractor::call!(self.actor, OrchestratorMsg::SlotsIdle).map_err(|_| EngineError::Unavailable)
    }

    /// Stops the engine: no new runs are taken; runs still going are cancelled
    /// ([`ShutdownMode::Cancel`]) or left to finish ([`ShutdownMode::Drain`]). Completes
    /// once every run has ended and every actor of the engine has stopped. Calling it
    /// again, or on a stopped engine, completes at once.
    ///
    /// # Errors
    /// None in practice: an orchestrator that is already gone has nothing left to stop.
    ///
    /// # Cancel safety
    /// Dropping the future does not undo the shutdown: it goes on, and a later call waits
    /// for it.
    pub async fn shutdown(&self, mode: ShutdownMode) -> Result<(), EngineError> {
        if let ShutdownMode::Suspend { grace } = mode {
            self.suspend(grace).await;
        } else {
            // An orchestrator that is gone has stopped already.
            let _ = ractor::call!(self.actor, |reply| OrchestratorMsg::Shutdown {
                mode,
                reply
            });
        }
        self.wait_stopped().await;
        if let Some(journal) = &self.journal {
            let journal = journal.clone();
            // Blocking: everything written is stored before the shutdown completes.
            let _ = tokio::task::spawn_blocking(move || journal.close()).await;
        }
        Ok(())
    }

    /// Stops the engine leaving its runs to resume: no attempt starts any more, those
    /// running get up to `grace` to end, every supervisor commits what it was told, then
    /// every actor is stopped at once (nothing more is journaled: the runs stay
    /// unfinished).
    async fn suspend(&self, grace: std::time::Duration) {
        // The limiter answers once no attempt holds a slot; `grace` is a deadline on
        // that, after which the attempts still running are lost.
        let quiet = async { ractor::call!(self.actor, OrchestratorMsg::Quiesce) };
        let _ = tokio::time::timeout(grace, quiet).await;
        // An orchestrator that is gone has nothing left to commit.
        let _ = ractor::call!(self.actor, OrchestratorMsg::SyncRuns);
        self.actor.kill();
    }

    async fn wait_stopped(&self) {
        let join = self.join.lock().ok().and_then(|mut j| j.take());
        if let Some(join) = join {
            // The orchestrator's task ends after its own stop; a panic there left it
            // stopped too.
            let _ = join.await;
        }
    }

    /// The runs this engine resumed from its journal when it started.
    pub fn resumed(&self) -> &[String] {
        &self.resumed
    }

    /// A handle on a run the engine knows (live, or finished and still retained).
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`].
    pub async fn run(&self, run_id: &str) -> Result<RunHandle, EngineError> {
        let id = run_id.to_owned();
        let result = ractor::call!(self.actor, |reply| OrchestratorMsg::Watch {
            run_id: id,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??;
        Ok(RunHandle {
            run_id: run_id.to_owned(),
            existing: true,
            result,
        })
    }

    /// The validated graph of a run (live or ended, while it is retained).
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn graph(&self, run_id: &str) -> Result<Arc<Graph>, EngineError> {
        let run_id = run_id.to_owned();
        Ok(
            ractor::call!(self.actor, |reply| OrchestratorMsg::Graph { run_id, reply })
                .map_err(|_| EngineError::Unavailable)??,
        )
    }

    /// The journal, when the engine has one.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Stops the engine at once, as a crash of the process would: every actor is killed,
    /// nothing is cancelled, drained or flushed. Runs in a journal are resumed by the next
    /// engine started on it, with the attempts that were running lost (and retried per
    /// their policy); without a journal they are lost. Returns once every actor stopped.
    pub async fn abort(&self) {
        self.actor.kill();
        self.wait_stopped().await;
    }
}

/// A submitted run.
#[derive(Debug, Clone)]
pub struct RunHandle {
    run_id: String,
    existing: bool,
    result: watch::Receiver<Option<Arc<RunResult>>>,
}

impl RunHandle {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether the run existed before this handle was asked for (a submission with an
    /// idempotency key already used, or [`Handle::run`]).
    pub fn existing(&self) -> bool {
        self.existing
    }

    /// The result, if the run has ended.
    pub fn try_result(&self) -> Option<Arc<RunResult>> {
        self.result.borrow().clone()
    }

    /// Waits for the run to end and returns its result.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`] if the orchestrator went away before the run ended.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing; call again.
    pub async fn result(&mut self) -> Result<Arc<RunResult>, EngineError> {
        let seen = self
            .result
            .wait_for(Option::is_some)
            .await
            .map_err(|_| EngineError::Unavailable)?;
        seen.clone().ok_or(EngineError::Unavailable)
    }
}
