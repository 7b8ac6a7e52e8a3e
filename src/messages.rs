//! Every message an actor receives or sends, and the wire types of runs: node protocol,
//! supervisor reports, orchestrator commands, trace events and run results.
//!
//! No behaviour lives here. Each message type says who sends it and what the receiver
//! guarantees; the actors in [`crate::actors`] implement those guarantees.

pub mod event;
pub mod limiter;
pub mod node;
pub mod orchestrator;
pub mod result;
pub mod supervisor;
