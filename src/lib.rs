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
//!    [`runtime::definition::parse`], or built in code), checks it against the engine's
//!    [`runtime::definition::limits`], validates it into an index-based
//!    [`runtime::definition::graph::Graph`] ([`runtime::definition::validate`]: every
//!    problem at once, with its path) and starts a run; [`Handle::prepare`] does the
//!    checking alone, for a [`Workflow`] run many times.
//! 3. The orchestrator spawns the run's supervisor, which holds the run's
//!    [`runtime::semantics::run_core::RunCore`]; each node reached gets a node actor
//!    holding its [`runtime::semantics::node_core::NodeCore`]. The actors turn messages
//!    into facts and perform the effects the cores return: spawn, tell a child its
//!    parent ended, run an attempt of a [`Component`] (found in the
//!    [`ComponentRegistry`]), arm a timer, emit a [`TraceEvent`].
//! 4. The run's events stream from [`Handle::events`]; [`RunHandle::result`] resolves
//!    to the [`RunResult`] once every node ended and every node actor exited.
//! 5. [`Handle::shutdown`] cancels or drains what is left and completes when every actor
//!    has stopped.
//!
//! ## Layout
//! `messages` (the actors' mailboxes and their replies), `actors` (who receives them;
//! internal but for the handle), `runtime` (everything that is not an actor: the
//! definition, the semantics and the two cores with what they exchange — node ends and
//! reports, trace events, results —, components, guardrails, the journal, telemetry), `service` (`shipsec serve`: the HTTP API and the run view),
//! `worker` (the gRPC protocol of remote workers, `shipsec.worker.v1`), `net` (what the
//! two ports share: connection caps and timeouts, bearer tokens).

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![warn(clippy::mod_module_files)]

pub mod actors;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod messages;
pub mod net;
pub mod runtime;
pub mod service;
pub mod worker;

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
pub use runtime::semantics::event::TraceEvent;
pub use runtime::semantics::outcome::{NodeStatus, RunStatus};
pub use runtime::semantics::result::{
    NodeRecord, Progress, RetainedStats, RunPage, RunQuery, RunResult, RunSnapshot, RunSummary,
};
