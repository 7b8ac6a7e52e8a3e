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
//! `messages` (the actors' mailboxes and their replies), `actors` (who receives them;
//! internal but for the handle), `runtime` (everything that is not an actor: the
//! definition, the semantics and the cores with what they exchange — node ends and
//! reports, trace events, results —, components, guardrails, the journal, telemetry;
//! crate-private, public only under the `testing` feature), `service` (`shipsec serve`:
//! the HTTP API and the run view), `worker` (the gRPC protocol of remote workers,
//! `shipsec.worker.v1`), `net` (what the two ports share: connection caps and timeouts,
//! bearer tokens).
//!
//! An embedder's API is the root's re-exports and the small modules beside them:
//! [`config`], [`definition`], [`components`], [`journal`], [`telemetry`]. The `shipsec`
//! binary is built on that API alone.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![warn(clippy::mod_module_files)]

pub mod actors;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod messages;
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
        Capacities, ComponentLimits, ConfigError, EngineConfig, MAX_CANCEL_GRACE, RateLimitConfig,
        ResumeConfig, WorkerConfig,
    };
    pub use crate::runtime::guardrails::connections::{
        BudgetError, ConnectionLimits, DescriptorBudget,
    };
    pub use crate::runtime::guardrails::service::ServiceConfig;
    pub use crate::runtime::journal::{Durability, JournalConfig, LossPolicy};
}

/// Workflow definitions: parse them (JSON or YAML), check them into a graph, draw them.
pub mod definition {
    pub use crate::runtime::definition::graph::Graph;
    pub use crate::runtime::definition::load::{
        LoadError, Loaded, load_file, load_file_with, load_str,
    };
    pub use crate::runtime::definition::parse::{Format, ParseError, parse_typed};
    pub use crate::runtime::definition::validate::{Problem, refuse_warnings};
    pub use crate::runtime::definition::{JsonObject, WorkflowDefinition, mermaid};
}

/// Components beyond the built-ins' registry: `core.process` and the ledger that lets an
/// engine kill what a dead predecessor's processes left running.
pub mod components {
    pub use crate::runtime::components::ledger::ProcessLedger;
    pub use crate::runtime::components::process::{Process, RestrictedProcess};
    pub use crate::runtime::semantics::shipsec::reported_failure;
}

/// The run journal: an engine's own (`Orchestrator::start_with_journal`), in memory for an
/// embedder's tests, or read back by tools (`shipsec inspect`).
pub mod journal {
    pub use crate::runtime::journal::record::FactKind;
    pub use crate::runtime::journal::{
        FjallStore, Journal, JournalError, JournalStore, Loss, MemoryStore, ProcessDeath,
        StoreError, StoredRunLog, WriteFaults, load,
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
