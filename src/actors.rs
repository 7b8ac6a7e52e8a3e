//! The actors: the orchestrator (accepts runs, owns the run registry), the run supervisor
//! (one per run: status, cancellation, deadline, failure policy, events, result) and the
//! node actor (one per node: join, inputs, attempts, retries, timeouts).
//!
//! Actors are plumbing: they receive messages, ask the pure logic in [`crate::runtime`]
//! what to do, and send messages. They never share mutable state.

pub mod handle;
pub mod limiter;
pub mod node;
pub mod orchestrator;
pub mod shared;
pub mod supervisor;
