//! Every mailbox of the engine: what a node, a run supervisor and the orchestrator
//! receive, and the replies they send back. What the cores exchange (a node's end and
//! reports, trace events, results) lives in `crate::runtime::semantics`; these enums
//! carry it.
//!
//! No behaviour lives here. Each message type says who sends it and what the receiver
//! guarantees; the actors in [`crate::actors`] implement those guarantees.

pub mod node;
pub mod orchestrator;
pub mod supervisor;
