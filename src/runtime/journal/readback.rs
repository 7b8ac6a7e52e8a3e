//! Reading a run back from the journal: what it was submitted with (to resume it), and
//! the result and trace of a finished one (folded from its facts), for the questions the
//! engine answers about runs it no longer holds whole. Blocking work: the orchestrator
//! runs it off its actor.

use std::sync::Arc;

use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::Graph;
use crate::runtime::definition::parse::{Format, parse_definition};
use crate::runtime::definition::validate::validate;
use crate::runtime::guardrails::config::EngineConfig;
use crate::runtime::journal::record::AcceptedRecord;
use crate::runtime::journal::replay::{self, ReplayError};
use crate::runtime::journal::{Journal, JournalError};
use crate::runtime::semantics::event::TraceEvent;
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::result::{RunResult, retained_bytes};

/// Why a journaled run cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadBackError {
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The run was purged.
    #[error("run `{0}` is no longer in the journal")]
    Gone(String),
    /// What the journal holds of the run does not fit this build.
    #[error("run `{run_id}` cannot be read back: {why}")]
    Unfit {
        /// The run.
        run_id: String,
        /// What does not fit.
        why: Unfit,
    },
}

/// What of a journaled run does not fit this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// Its definition does not parse.
    #[error("its definition does not parse: {0}")]
    Definition(String),
    /// Its definition does not validate against this engine's components.
    #[error("its definition is no longer valid here: {0}")]
    Invalid(String),
    /// Its inputs are not a JSON object.
    #[error("its inputs do not parse: {0}")]
    Inputs(String),
    /// The cores cannot follow its facts.
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// A finished run read back whole.
#[derive(Debug)]
pub struct ReadRun {
    /// Its result.
    pub result: Arc<RunResult>,
    /// Its trace.
    pub events: Arc<Vec<TraceEvent>>,
    /// Its graph.
    pub graph: Arc<Graph>,
    /// What its result and trace take as JSON.
    pub bytes: usize,
}

/// What a journaled run was submitted with: its graph and inputs.
///
/// # Errors
/// When its definition or inputs no longer fit.
pub fn submission(
    registry: &ComponentRegistry,
    accepted: &AcceptedRecord,
) -> Result<(Graph, JsonObject), ReadBackError> {
    let unfit = |why: Unfit| ReadBackError::Unfit {
        run_id: accepted.run_id.clone(),
        why,
    };
    let definition = parse_definition(&accepted.definition, Format::Json)
        .map_err(|e| unfit(Unfit::Definition(e.to_string())))?;
    let graph =
        validate(&definition, registry).map_err(|e| unfit(Unfit::Invalid(e.to_string())))?;
    let inputs: JsonObject =
        serde_json::from_str(&accepted.inputs).map_err(|e| unfit(Unfit::Inputs(e.to_string())))?;
    Ok((graph, inputs))
}

/// Reads the finished run `run_id` back and replays its result and trace.
///
/// # Errors
/// When the journal cannot be read, no longer holds the run, or holds what does not fit.
pub fn finished_run(
    journal: &Journal,
    registry: &Arc<ComponentRegistry>,
    config: &EngineConfig,
    run_id: &str,
) -> Result<ReadRun, ReadBackError> {
    let log = journal
        .read_run(run_id)?
        .ok_or_else(|| ReadBackError::Gone(run_id.to_owned()))?;
    let (graph, inputs) = submission(registry, &log.header.accepted)?;
    let plan = Arc::new(RunPlan {
        metadata: Arc::new(log.header.accepted.metadata()),
        ..RunPlan::for_replay(
            run_id,
            Arc::new(graph),
            registry.clone(),
            Arc::new(inputs),
            config.limits.max_output_bytes,
            config.cancel_grace,
        )
    });
    let (result, events) =
        replay::finished_run(plan.clone(), &log.facts).map_err(|e| ReadBackError::Unfit {
            run_id: run_id.to_owned(),
            why: Unfit::Replay(e),
        })?;
    Ok(ReadRun {
        bytes: retained_bytes(&result, &events),
        result,
        events: Arc::new(events),
        graph: plan.graph.clone(),
    })
}
