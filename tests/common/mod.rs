//! Shared helpers of the integration tests: building graphs from JSON, running them
//! through a real orchestrator, and checking the trace invariants of docs/semantics.md §9
//! (the one checker, `chaos::harness::check_trace`); the shared test components are in
//! [`kit`].
#![allow(dead_code, unreachable_pub)]

pub mod kit;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use shipsec_orchestrator::actors::faults::{Faults, NoFaults};
use shipsec_orchestrator::gates::Resolution;
use shipsec_orchestrator::messages::orchestrator::SubmitOptions;
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::definition::graph::Graph;
use shipsec_orchestrator::runtime::definition::validate::validate;
use shipsec_orchestrator::runtime::definition::{JsonObject, WorkflowDefinition};
use shipsec_orchestrator::runtime::semantics::event::{EventType, TraceEvent};
use shipsec_orchestrator::runtime::semantics::outcome::NodeStatus;
use shipsec_orchestrator::runtime::semantics::result::RunResult;
use shipsec_orchestrator::{EngineConfig, Handle, Orchestrator, ShutdownMode, Workflow};

/// A definition from JSON (panics with the path if it has the wrong shape).
pub fn definition(def: Value) -> WorkflowDefinition {
    serde_json::from_value(def).expect("definition shape")
}

/// A validated graph using the built-in components, for tests that look at the graph.
pub fn graph(def: Value) -> Arc<Graph> {
    let registry = ComponentRegistry::with_builtins();
    Arc::new(validate(&definition(def), &registry).unwrap_or_else(|e| panic!("{e}")))
}

/// A definition prepared by `handle`: within its limits, valid against its components
/// (panics with the problems otherwise).
pub fn workflow(handle: &Handle, def: Value) -> Workflow {
    handle
        .prepare(definition(def))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// An orchestrator with the built-ins and default settings.
pub async fn engine() -> Handle {
    Orchestrator::start(EngineConfig::default())
        .await
        .expect("orchestrator starts")
}

/// A finished run: its result and every event.
#[derive(Debug)]
pub struct Finished {
    pub result: Arc<RunResult>,
    pub events: Vec<TraceEvent>,
}

impl Finished {
    pub fn status(&self, node: &str) -> NodeStatus {
        self.result
            .nodes
            .get(node)
            .unwrap_or_else(|| panic!("no node {node}"))
            .status
    }

    pub fn attempts(&self, node: &str) -> u32 {
        self.result.nodes[node].attempts
    }

    pub fn reason(&self, node: &str) -> String {
        self.result.nodes[node].reason.clone().unwrap_or_default()
    }

    pub fn error_type(&self, node: &str) -> String {
        self.result.nodes[node]
            .error
            .as_ref()
            .map(|e| e.error_type.clone())
            .unwrap_or_default()
    }

    pub fn output(&self, node: &str) -> &JsonObject {
        self.result
            .outputs
            .get(node)
            .unwrap_or_else(|| panic!("no output for {node}"))
    }

    pub fn events_of(&self, node: &str, kind: EventType) -> Vec<&TraceEvent> {
        self.events
            .iter()
            .filter(|e| &*e.node_id == node && e.kind == kind)
            .collect()
    }
}

/// Submits, waits for the result, collects the events and checks the trace invariants.
pub async fn run_on(handle: &Handle, workflow: &Workflow, inputs: JsonObject) -> Finished {
    let graph = workflow.graph().clone();
    let mut run = handle
        .submit_workflow(workflow, inputs, SubmitOptions::default())
        .await
        .expect("submit");
    let result = run.result().await.expect("result");
    let events: Vec<TraceEvent> = handle
        .events(run.run_id())
        .await
        .expect("events")
        .collect()
        .await;
    check_trace(&graph, &result, &events);
    Finished { result, events }
}

/// Runs a JSON definition on a fresh orchestrator with no inputs.
pub async fn run(def: Value) -> Finished {
    let handle = engine().await;
    let finished = run_on(&handle, &workflow(&handle, def), JsonObject::new()).await;
    shutdown(&handle).await;
    finished
}

/// One multi-thread runtime and one orchestrator (cancel grace 1 s) for every case of a
/// test binary's properties.
pub fn shared_engine() -> &'static (tokio::runtime::Runtime, Handle) {
    static ENGINE: OnceLock<(tokio::runtime::Runtime, Handle)> = OnceLock::new();
    ENGINE.get_or_init(|| engine_on_own_runtime(Arc::new(NoFaults)))
}

/// A multi-thread runtime and an orchestrator (cancel grace 1 s, the built-ins) started
/// on it, whose actors call `faults`.
pub fn engine_on_own_runtime(faults: Arc<dyn Faults>) -> (tokio::runtime::Runtime, Handle) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let config = EngineConfig {
        cancel_grace: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let start = Orchestrator::start_with_faults(config, ComponentRegistry::with_builtins(), faults);
    let handle = runtime.block_on(start).expect("the orchestrator starts");
    (runtime, handle)
}

/// A generated definition prepared by `handle`, or why not (property tests report a case
/// rather than panic on it).
pub fn try_workflow(handle: &Handle, def: &Value) -> Result<Workflow, String> {
    let def: WorkflowDefinition = serde_json::from_value(def.clone())
        .map_err(|e| format!("generated definition does not parse: {e}"))?;
    handle
        .prepare(def)
        .map_err(|e| format!("generated definition is invalid: {e}"))
}

/// Runs `workflow` on the [`shared_engine`]: its result and every event, or what failed.
pub fn run_blocking(
    workflow: &Workflow,
    inputs: JsonObject,
    options: SubmitOptions,
) -> Result<(Arc<RunResult>, Vec<TraceEvent>), String> {
    run_blocking_on(shared_engine(), workflow, inputs, options)
}

/// Runs `workflow` on `engine` (a runtime and the engine started on it): its result and
/// every event, or what failed.
pub fn run_blocking_on(
    engine: &(tokio::runtime::Runtime, Handle),
    workflow: &Workflow,
    inputs: JsonObject,
    options: SubmitOptions,
) -> Result<(Arc<RunResult>, Vec<TraceEvent>), String> {
    block_on_run(engine, workflow, inputs, options, None)
}

/// A person beside a run: the answer to give a gate that asked `title` (`None`: let it
/// expire).
pub type Person = fn(&str) -> Option<Resolution>;

/// As [`run_blocking_on`], with `person` answering each gate of the run as it asks
/// (following the run's events). A refused answer (the gate was withdrawn or its run
/// stopped first) is what a person would meet too, and is not an error.
pub fn run_answering_on(
    engine: &(tokio::runtime::Runtime, Handle),
    workflow: &Workflow,
    inputs: JsonObject,
    options: SubmitOptions,
    person: Person,
) -> Result<(Arc<RunResult>, Vec<TraceEvent>), String> {
    block_on_run(engine, workflow, inputs, options, Some(person))
}

fn block_on_run(
    (runtime, handle): &(tokio::runtime::Runtime, Handle),
    workflow: &Workflow,
    inputs: JsonObject,
    options: SubmitOptions,
    person: Option<Person>,
) -> Result<(Arc<RunResult>, Vec<TraceEvent>), String> {
    runtime.block_on(async {
        let submitted = handle.submit_workflow(workflow, inputs, options).await;
        let mut run = submitted.map_err(|e| format!("submit: {e}"))?;
        let answering = person
            .map(|person| tokio::spawn(answer_gates(handle.clone(), run.run_id().into(), person)));
        let result = run.result().await.map_err(|e| format!("result: {e}"))?;
        if let Some(answering) = answering {
            answering.await.map_err(|e| format!("the person: {e}"))?;
        }
        let events = handle
            .events(run.run_id())
            .await
            .map_err(|e| format!("events after the result: {e}"))?
            .collect()
            .await;
        Ok((result, events))
    })
}

async fn answer_gates(handle: Handle, run_id: String, person: Person) {
    let Ok(mut events) = handle.events(&run_id).await else {
        return;
    };
    while let Some(event) = events.next().await {
        if event.kind != EventType::AwaitingInput {
            continue;
        }
        let data = event.data.as_deref();
        let asked = |key: &str| data.and_then(|d| d[key].as_str()).unwrap_or_default();
        if let Some(answer) = person(asked("title")) {
            let _ = handle.resolve(asked("requestId"), answer).await;
        }
    }
}

/// Shuts the engine down, cancelling what is left, and waits until every actor stopped.
pub async fn shutdown(handle: &Handle) {
    handle
        .shutdown(ShutdownMode::Cancel)
        .await
        .expect("the engine shuts down");
}

/// docs/semantics.md §9 (see `chaos::harness::check_trace`), as a test assertion.
pub fn check_trace(graph: &Graph, result: &RunResult, events: &[TraceEvent]) {
    if let Err(broken) = shipsec_orchestrator::chaos::harness::check_trace(graph, result, events) {
        panic!("trace invariant broken: {broken}\n{events:#?}");
    }
}
