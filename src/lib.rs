//! # shipsec-orchestrator
//!
//! An actor-model runtime for compiled security-automation workflows.
//!
//! ## A tour
//! A backend sends a [`runtime::definition::WorkflowDefinition`] (ShipSec Studio's compiled
//! JSON, or YAML). [`runtime::definition::parse`] reads it, naming the path of any shape error;
//! [`runtime::definition::validate`] checks its meaning, reports every problem at once and builds an
//! immutable, index-based [`runtime::definition::graph::Graph`]. Components (the work a node does)
//! implement [`runtime::components::Component`] and are found through the
//! [`runtime::components::registry::ComponentRegistry`].
//!
//! Layout: `messages` (what flows between actors), `actors` (who receives it), `runtime`
//! (the pure logic and the parts).

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![warn(clippy::mod_module_files)]

pub mod actors;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod messages;
pub mod runtime;

pub use actors::handle::{EngineError, EventStream, Handle, Orchestrator, RunHandle};
pub use runtime::guardrails::config::EngineConfig;
