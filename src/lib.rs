//! # shipsec-orchestrator
//!
//! An actor-model runtime for compiled security-automation workflows (ShipSec Studio's
//! `WorkflowDefinition`s): a supervisor actor owns each run and spawns one actor per
//! node; every decision is made by pure cores that take facts and return effects.
//!
//! ## A tour, from submit to result
//! 1. An embedder starts an engine with [`Orchestrator::start`] (an [`EngineConfig`],
//!    validated first) and gets a [`Handle`], a typed wrapper over the orchestrator
//!    actor's mailbox.
//! 2. [`Handle::submit`] takes a [`WorkflowDefinition`] (parsed from JSON or YAML by
//!    [`definition::parse_typed`], or built in code), checks it against the engine's
//!    [`config::DefinitionLimits`], validates it into an index-based
//!    [`definition::Graph`] (every problem at once, each a [`definition::Problem`] with
//!    its path) and starts a run; [`Handle::prepare`] does the checking alone, for a
//!    [`Workflow`] run many times.
//! 3. The orchestrator spawns the run's supervisor, which holds the run's core (the
//!    runtime's `semantics::run_core`); each node reached gets a node actor holding its
//!    node core. The actors turn messages into facts and perform the effects the cores
//!    return: spawn, tell a child its parent ended, run an attempt of a [`Component`]
//!    (found in the [`ComponentRegistry`]), arm a timer, emit a [`TraceEvent`].
//! 4. The run's events stream from [`Handle::events`]; [`RunHandle::result`] resolves
//!    to the [`RunResult`] once every node ended and every node actor exited.
//! 5. [`Handle::shutdown`] cancels or drains what is left and completes when every actor
//!    has stopped.
//!
//! ## Layout
//! `messages` (the actors' mailboxes and their replies), `actors` (who receives them),
//! `runtime` (everything that is not an actor: the definition, the semantics and the
//! cores with what they exchange — node ends and reports, trace events, results —,
//! components, guardrails, the journal, telemetry) — these three crate-private, public
//! only under the `testing` feature —, `service` (`shipsec serve`:
//! the HTTP API and the run view), `worker` (the gRPC protocol of remote workers,
//! `shipsec.worker.v1`), `net` (what the two ports share: connection caps and timeouts,
//! bearer tokens).
//!
//! An embedder's API is the root's re-exports and the small modules beside them:
//! [`config`], [`definition`], [`components`], [`events`], [`journal`], [`telemetry`].
//! The `shipsec`
//! binary is built on that API alone.

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unnameable_types
)]
#![warn(clippy::mod_module_files)]

/// The actors: the orchestrator, the run supervisors and node actors, the engine's slots
/// and fault hooks. Public only under the `testing` feature: an embedder uses the
/// [`Handle`] and the other re-exports at the root.
#[cfg(feature = "testing")]
pub mod actors;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub)]
pub(crate) mod actors;
#[cfg(feature = "chaos")]
pub mod chaos;
/// The actors' mailboxes and their replies. Public only under the `testing` feature.
#[cfg(feature = "testing")]
pub mod messages;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub)]
pub(crate) mod messages;
pub mod net;
/// The engine's insides. Public only under the `testing` feature (the tests and benches):
/// an embedder uses what the root re-exports.
#[cfg(feature = "testing")]
pub mod runtime;
// What is `pub` inside is what the layers give each other, and the tests with `testing`.
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub)]
pub(crate) mod runtime;
pub mod service;
pub mod worker;

/// The engine's settings, as read from a configuration file or built in code.
pub mod config {
    pub use crate::runtime::definition::limits::DefinitionLimits;
    pub use crate::runtime::guardrails::config::{
        Capacities, ComponentLimits, ConfigError, EngineConfig, GateConfig, MAX_CANCEL_GRACE,
        RateLimitConfig, ResumeConfig, WorkerConfig,
    };
    pub use crate::runtime::guardrails::connections::{
        BudgetError, ConnectionLimits, DescriptorBudget,
    };
    pub use crate::runtime::guardrails::service::{
        DefinitionPolicy, Executable, ProcessPolicy, Refused, ServiceConfig,
    };
    pub use crate::runtime::journal::{Durability, JournalConfig, LossPolicy, UnknownDurability};
}

/// Workflow definitions: the model (to build one in code), parsing (JSON or YAML), checking
/// into a [`definition::Graph`], drawing.
pub mod definition {
    pub use crate::runtime::definition::graph::{
        Edge, EdgeIx, EdgeKind, ErrorTypePolicy, FailurePolicy, Graph, InputMapping, Join, Node,
        NodeIx, NodeMode, RetryPolicy, RunSettings, SELF_HANDLE,
    };
    pub use crate::runtime::definition::limits::{Limit, LimitError};
    pub use crate::runtime::definition::load::{
        LoadError, Loaded, load_file, load_file_with, load_str,
    };
    pub use crate::runtime::definition::model::*;
    pub use crate::runtime::definition::parse::{Format, ParseError, parse_typed};
    pub use crate::runtime::definition::validate::{DefinitionError, Problem, refuse_warnings};
    pub use crate::runtime::definition::{JsonObject, mermaid};
}

/// What a component sees and declares beyond the root's `Component` types: the failure a
/// handler node handles, where an attempt runs, input kinds, the error types the engine
/// gives; and `core.process` with the ledger that lets an engine kill what a dead
/// predecessor's processes left running.
pub mod components {
    pub use crate::runtime::components::builtin::{
        CANCELLED_ERROR, DEFAULT_FAIL_TYPE, FLAKY_ERROR,
    };
    pub use crate::runtime::components::ledger::{Entry, LedgerError, ProcessLedger, Sweep};
    pub use crate::runtime::components::process::{Process, RestrictedProcess};
    pub use crate::runtime::components::registry::{
        InputKind, InputSpec, OutOfRange, RateLimitHint, RemoteHost,
    };
    pub use crate::runtime::components::{
        CRASH_ERROR, FailureInfo, FailureReason, INPUT_ERROR, OUTPUT_LIMIT_ERROR, Placement,
        PlacementSink, QUEUE_TIMEOUT_ERROR, TIMEOUT_ERROR, VALIDATION_ERROR,
    };
    pub use crate::runtime::semantics::attempt::AttemptId;
    pub use crate::runtime::semantics::shipsec::reported_failure;
}

/// Human-input gates and the run inbox: what a gate asks, a person's answer, a signal,
/// and what answering or signalling did.
pub mod gates {
    pub use crate::runtime::semantics::gate::{
        InputRequest, InputType, MarkerError, PendingInput, RequestStatus, Resolution,
        ResolveError, Resolved,
    };
    pub use crate::runtime::semantics::inbox::{
        Addressee, HumanInputResolution, RESOLVE_HUMAN_INPUT, SignalAck, SignalError, Signaled,
    };
    pub use crate::runtime::semantics::requests::{Filed, InputPage, InputQuery};
}

/// What a run's trace and result are made of, beyond the root's `TraceEvent` and
/// `RunResult`, and the instants they carry: a `Timestamp` on the wire, a `Time` (what the
/// cores and the worker lease book count in) inside.
pub mod events {
    pub use crate::runtime::semantics::event::{ErrorInfo, EventId, EventMetadata, Level};
    pub use crate::runtime::semantics::time::Time;
    pub use crate::runtime::timestamp::Timestamp;
}

/// The run journal: an engine's own (`Orchestrator::start_with_journal`), in memory for an
/// embedder's tests, or read back by tools (`shipsec inspect`).
pub mod journal {
    pub use crate::runtime::journal::record::{
        AcceptedRecord, ErrorRecord, Fact, FactKind, FinishedRecord, HandledRecord, RecordError,
        RunHeader, StartRecord,
    };
    pub use crate::runtime::journal::store::{Op, Opened};
    pub use crate::runtime::journal::{
        FinishedRun, FjallStore, Journal, JournalError, JournalStore, Loss, MemoryStore,
        ProcessDeath, Scanned, StoreError, StoredRunLog, WriteFaults, load,
    };
}

/// Traces and metrics: install the OpenTelemetry export once per process.
pub mod telemetry {
    pub use crate::runtime::telemetry::{
        ExportConfig, SPAN_QUEUE, Telemetry, TelemetryError, batched_provider, init_for_tests,
        spans_layer,
    };
}

pub use actors::handle::{EngineError, EventStream, Handle, Orchestrator, RunHandle, Workflow};
pub use actors::slots::RemotePools;
pub use messages::orchestrator::{RunCommandError, ShutdownMode, SubmitOptions};
pub use messages::supervisor::Subscription;
pub use runtime::components::registry::{ComponentMeta, ComponentRegistry};
pub use runtime::components::{
    Component, ComponentError, ComponentOutput, ComponentResult, ExecutionContext,
};
pub use runtime::definition::WorkflowDefinition;
pub use runtime::guardrails::config::{ConfigError, EngineConfig};
pub use runtime::guardrails::slots::SlotStats;
pub use runtime::semantics::event::{EventType, TraceEvent};
pub use runtime::semantics::outcome::{NodeStatus, RunStatus};
pub use runtime::semantics::result::{
    NodeRecord, Progress, RetainedStats, RunPage, RunQuery, RunResult, RunSnapshot, RunSummary,
};
