//! The local channel: [`Orchestrator::start`] gives a [`Handle`], a thin typed wrapper
//! over the orchestrator actor's mailbox, and [`Handle::submit`] gives a [`RunHandle`]
//! whose [`RunHandle::result`] resolves when the run ends.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use ractor::{Actor, ActorRef};
use tokio::sync::watch;

use crate::actors::orchestrator::{OrchestratorActor, OrchestratorArgs};
use crate::messages::event::TraceEvent;
use crate::messages::limiter::SlotStats;
use crate::messages::orchestrator::{OrchestratorMsg, RunCommandError, SubmitOptions};
use crate::messages::result::{RunResult, RunSnapshot};
use crate::messages::supervisor::StopKind;
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::graph::Graph;
use crate::runtime::definition::validate::{DefinitionError, validate};
use crate::runtime::definition::{JsonObject, WorkflowDefinition};
use crate::runtime::guardrails::config::{ConfigError, EngineConfig};

/// Errors of the engine's public API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The definition does not validate.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
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
}

/// Entry point of the library.
#[derive(Debug, Clone, Copy)]
pub struct Orchestrator;

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
        config.validate(&registry)?;
        let registry = Arc::new(registry);
        let args = OrchestratorArgs {
            config,
            registry: registry.clone(),
        };
        let (actor, _) = Actor::spawn(None, OrchestratorActor, args)
            .await
            .map_err(|e| EngineError::Start(e.to_string()))?;
        Ok(Handle { actor, registry })
    }
}

/// A typed handle on a running orchestrator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    actor: ActorRef<OrchestratorMsg>,
    registry: Arc<ComponentRegistry>,
}

/// A stream of a run's trace events, ending when the run ends.
pub type EventStream = Pin<Box<dyn Stream<Item = TraceEvent> + Send>>;

impl Handle {
    /// The components this orchestrator knows.
    pub fn registry(&self) -> &ComponentRegistry {
        &self.registry
    }

    /// Validates a definition and submits it.
    ///
    /// # Errors
    /// [`EngineError::Definition`] when it does not validate; see [`Handle::submit`].
    ///
    /// # Cancel safety
    /// Dropping the future may leave the run started; its id is then unknown to the caller
    /// unless `options.run_id` was set.
    pub async fn submit_definition(
        &self,
        definition: &WorkflowDefinition,
        inputs: JsonObject,
        options: SubmitOptions,
    ) -> Result<RunHandle, EngineError> {
        let graph = Arc::new(validate(definition, &self.registry)?);
        self.submit(graph, inputs, options).await
    }

    /// Starts a run of a validated graph.
    ///
    /// # Errors
    /// [`RunCommandError::InvalidInputs`] when required runtime inputs are missing,
    /// [`RunCommandError::DuplicateRun`] for a reused run id, [`EngineError::Unavailable`]
    /// when the orchestrator is gone.
    ///
    /// # Cancel safety
    /// As [`Handle::submit_definition`].
    pub async fn submit(
        &self,
        graph: Arc<Graph>,
        inputs: JsonObject,
        options: SubmitOptions,
    ) -> Result<RunHandle, EngineError> {
        let submitted = ractor::call!(self.actor, |reply| OrchestratorMsg::Submit {
            graph,
            inputs,
            options,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??;
        Ok(RunHandle {
            run_id: submitted.run_id,
            result: submitted.result,
        })
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
        let run_id = run_id.to_owned();
        let feed = ractor::call!(self.actor, |reply| OrchestratorMsg::Events {
            run_id,
            reply
        })
        .map_err(|_| EngineError::Unavailable)??;
        let backlog = futures::stream::iter(feed.backlog);
        Ok(match feed.live {
            None => Box::pin(backlog),
            Some(rx) => {
                use futures::StreamExt;
                Box::pin(backlog.chain(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)))
            }
        })
    }

    /// Cancels a run: pending nodes end CANCELLED, running attempts get the grace period.
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn cancel(&self, run_id: &str) -> Result<(), EngineError> {
        self.stop(run_id, StopKind::Cancel).await
    }

    /// Terminates a run: as cancel, without the grace period.
    ///
    /// # Errors
    /// [`RunCommandError::UnknownRun`], or [`EngineError::Unavailable`].
    pub async fn terminate(&self, run_id: &str) -> Result<(), EngineError> {
        self.stop(run_id, StopKind::Terminate).await
    }

    async fn stop(&self, run_id: &str, kind: StopKind) -> Result<(), EngineError> {
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

    /// Stops the orchestrator (runs still going are abandoned).
    pub fn shutdown(&self) {
        self.actor.stop(None);
    }
}

/// A submitted run.
#[derive(Debug, Clone)]
pub struct RunHandle {
    run_id: String,
    result: watch::Receiver<Option<Arc<RunResult>>>,
}

impl RunHandle {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
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
