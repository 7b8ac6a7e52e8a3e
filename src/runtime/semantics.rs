//! What a run does (`docs/semantics.md`), as pure decisions: [`edge`] resolution, [`join`]
//! strategies, [`inputs`], [`failure`] policy, [`withdraw`]al for races, [`retry`]
//! budgets and delays, node and run [`outcome`]s, ShipSec's in-band conventions
//! ([`shipsec`]), and the two cores built from them.
//!
//! No tokio, no clocks, no randomness: time is an argument and jitter comes from a
//! seeded source, so every decision can be tested alone, simulated and replayed.

pub mod edge;
pub mod failure;
pub mod inputs;
pub mod join;
pub mod outcome;
pub mod retry;
pub mod shipsec;
pub mod withdraw;
