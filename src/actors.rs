//! The actors: the orchestrator (accepts runs, owns the run registry and the slot
//! limiter), the run supervisor (one per run) and the node actor (one per node), plus the
//! [`handle`] through which an embedder talks to them.
//!
//! Actors are plumbing: they turn messages into facts for the pure cores of
//! [`crate::runtime::semantics`], perform the effects the cores return, and never share
//! mutable state. Everything here but the handle is internal to the crate.

mod clock;
pub mod handle;
pub(crate) mod limiter;
pub(crate) mod node;
pub(crate) mod orchestrator;
pub(crate) mod shared;
pub(crate) mod supervisor;
