//! Everything that is not an actor, in folders named after what they own:
//!
//! - [`definition`]: what a backend sends — the model, parsing, limits, validation into
//!   an index-based [`definition::graph::Graph`], loading, Mermaid rendering;
//! - [`semantics`]: what a run does — edge resolution, joins, inputs, failure policy,
//!   withdrawal, retries, outcomes, and the two pure cores that decide a node's and a
//!   run's transitions;
//! - [`components`]: the work a node does — the component trait, the registry, the
//!   built-ins and the process runner;
//! - [`guardrails`]: what keeps the engine within bounds — the slot book, rate limits and
//!   the engine configuration with its validation;
//! - [`ids`]: the ids the engine derives from their causes (input requests);
//! - [`telemetry`]: spans, metrics and their export;
//! - [`timestamp`]: wall-clock instants as the wire carries them.
//!
//! Nothing in this tree spawns actors. The decision code does no I/O and reads no clocks
//! (time is passed in), so it can be tested, simulated and replayed on its own.

pub mod components;
pub mod definition;
pub mod guardrails;
pub mod ids;
pub mod journal;
pub mod semantics;
pub mod telemetry;
pub mod timestamp;
