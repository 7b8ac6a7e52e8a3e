//! The actors: the orchestrator (accepts runs, holds the engine core), the run supervisor
//! (one per run) and the node actor (one per node), the engine's [`slots`] they share,
//! and the [`handle`] through which an embedder talks to them.
//!
//! Actors are plumbing: they turn messages into facts for the pure cores of
//! [`crate::runtime::semantics`] and perform the effects the cores return. The one
//! mutable state they share is the slot book, behind one lock (see [`slots`]).
//! Everything here but the handle and [`slots::RemotePools`] is internal to the crate.

mod clock;
pub mod faults;
pub mod handle;
pub(crate) mod node;
pub(crate) mod orchestrator;
pub(crate) mod shared;
pub(crate) mod slots;
pub(crate) mod supervisor;
