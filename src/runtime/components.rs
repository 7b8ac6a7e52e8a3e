//! Components: the work a node does, behind one object-safe async trait.
//!
//! A component gets an immutable [`ExecutionContext`] and returns a [`ComponentOutput`] or
//! a [`ComponentError`] (a type, a message and a retryable flag). It never sees actors or
//! the graph; cancellation reaches it through the context's token. The built-in
//! components live in [`builtin`]; the registry that names them is
//! [`crate::runtime::components::registry`].

pub mod builtin;
pub mod ledger;
pub mod manual;
pub mod process;
pub mod registry;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::runtime::components::registry::ComponentMeta;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::NodeIx;
use crate::runtime::semantics::attempt::AttemptId;

/// Error type of an input that cannot be satisfied (never retried).
pub const INPUT_ERROR: &str = "InputError";
/// Error type of an input that does not validate (never retried).
pub const VALIDATION_ERROR: &str = "ValidationError";
/// Error type of an attempt that ran out of time (retryable).
pub const TIMEOUT_ERROR: &str = "TimeoutError";
/// Error type of a node that waited too long for a slot (never retried).
pub const QUEUE_TIMEOUT_ERROR: &str = "QueueTimeoutError";
/// Error type of an output larger than the engine allows (never retried).
pub const OUTPUT_LIMIT_ERROR: &str = "OutputLimitError";
/// Error type of an attempt whose actor or task died (retryable).
pub const CRASH_ERROR: &str = "CrashError";

/// The failure a node reached through an `error` edge handles (docs/semantics.md §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureInfo {
    /// Ref of the node that failed.
    pub at: String,
    /// What it failed with.
    pub reason: FailureReason,
}

/// `{message, name}` of a handled failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureReason {
    /// The error message.
    pub message: String,
    /// The error type.
    pub name: String,
}

/// Everything a component may know about the attempt it runs. Immutable.
#[derive(Clone)]
pub struct ExecutionContext {
    /// Run id.
    pub run_id: Arc<str>,
    /// Node ref.
    pub node_ref: Arc<str>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Component parameters.
    pub params: Arc<JsonObject>,
    /// Resolved inputs (overrides, then mappings), shared by the node's attempts.
    pub inputs: Arc<JsonObject>,
    /// Refs of the parents whose edges started this node.
    pub triggered_by: Arc<[Arc<str>]>,
    /// The failure this node handles, when reached through an `error` edge.
    pub failure: Option<Arc<FailureInfo>>,
    /// Fires when the attempt must stop (cancel, timeout, withdrawal).
    pub cancel: CancellationToken,
    /// Where a component that hands the attempt to a worker says which worker took it.
    pub placement: Placement,
    /// The most bytes the attempt's output may take (the engine's
    /// `limits.maxOutputBytes`): a component that buffers what it is given (a process's
    /// stdout) stops there rather than hold more than could ever be kept.
    pub output_limit: usize,
}

/// Where an attempt's placement is told: the run's supervisor, which records it.
pub trait PlacementSink: Send + Sync + 'static {
    /// Attempt `attempt` of `node` was taken by `worker`.
    fn placed(&self, node: NodeIx, attempt: u32, worker: Arc<str>);
}

/// How an attempt tells its run which remote worker took it (the worker id goes on the
/// attempt's end events and the node's record). Attempts run in-process have nowhere to
/// tell it, nor need to.
#[derive(Clone, Default)]
pub struct Placement(Option<(Arc<dyn PlacementSink>, NodeIx, u32)>);

impl Placement {
    /// Placement of attempt `attempt` of `node`, told to `sink`.
    pub fn new(sink: Arc<dyn PlacementSink>, node: NodeIx, attempt: u32) -> Placement {
        Placement(Some((sink, node, attempt)))
    }

    /// `worker` took the attempt.
    pub fn placed(&self, worker: &Arc<str>) {
        if let Some((sink, node, attempt)) = &self.0 {
            sink.placed(*node, *attempt, worker.clone());
        }
    }
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Placement(told)"
        } else {
            "Placement(none)"
        })
    }
}

impl fmt::Debug for ExecutionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutionContext")
            .field("run_id", &self.run_id)
            .field("node_ref", &self.node_ref)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl ExecutionContext {
    /// The attempt's stable id, `<run>/<node ref>/<attempt>`: the same however often the
    /// attempt runs (a re-run after an engine restart included), so a component can use it
    /// as an idempotency key with the systems it calls.
    pub fn attempt_id(&self) -> AttemptId {
        AttemptId::new(&self.run_id, &self.node_ref, self.attempt)
    }

    /// A parameter or input by name, inputs winning.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name).or_else(|| self.params.get(name))
    }

    /// Logs a line tagged with run id, node ref and attempt.
    pub fn log(&self, message: &str) {
        tracing::info!(
            target: "shipsec::component",
            run_id = %self.run_id,
            node_ref = %self.node_ref,
            attempt = self.attempt,
            "{message}"
        );
    }
}

/// A successful attempt's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComponentOutput {
    /// The output object children map from.
    pub output: JsonObject,
    /// Ports activated, when the component routes (`None`: every port).
    pub active_ports: Option<Vec<String>>,
}

impl ComponentOutput {
    /// An output with every port active.
    pub fn new(output: JsonObject) -> ComponentOutput {
        ComponentOutput {
            output,
            active_ports: None,
        }
    }
}

/// A failed attempt: a type, a message and whether a retry may help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ComponentError {
    /// Error type, e.g. `TimeoutError`.
    pub error_type: String,
    /// Human message.
    pub message: String,
    /// Whether the retry policy may retry it.
    pub retryable: bool,
    /// The attempt was lost with the worker that ran it (set by the coordinator, never by
    /// a component or a worker; not serialised): like an attempt an engine restart took,
    /// it gets `resume.retryLostAttempts` tries beyond the node's budget.
    #[serde(skip)]
    pub lost: bool,
}

impl ComponentError {
    /// A retryable error of the given type.
    pub fn retryable(error_type: &str, message: impl Into<String>) -> ComponentError {
        ComponentError {
            error_type: error_type.to_owned(),
            message: message.into(),
            retryable: true,
            lost: false,
        }
    }

    /// The `CrashError` of an attempt lost with the worker that ran it.
    pub fn lost_with_worker(message: impl Into<String>) -> ComponentError {
        ComponentError {
            lost: true,
            ..ComponentError::retryable(CRASH_ERROR, message)
        }
    }

    /// A non-retryable error of the given type.
    pub fn fatal(error_type: &str, message: impl Into<String>) -> ComponentError {
        ComponentError {
            error_type: error_type.to_owned(),
            message: message.into(),
            retryable: false,
            lost: false,
        }
    }

    /// An `InputError` (never retried).
    pub fn input(message: impl Into<String>) -> ComponentError {
        ComponentError::fatal(INPUT_ERROR, message)
    }
}

/// The result of one attempt.
pub type ComponentResult = Result<ComponentOutput, ComponentError>;

/// A unit of work a node runs.
pub trait Component: Send + Sync + 'static {
    /// What the component declares about itself.
    fn meta(&self) -> &ComponentMeta;

    /// Runs one attempt. Must return promptly once `ctx.cancel` fires.
    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult>;
}

/// The built-in components.
pub fn builtins() -> Vec<Arc<dyn Component>> {
    builtin::all()
}
