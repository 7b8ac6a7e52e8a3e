//! What a run does (`docs/semantics.md`), as pure decisions: [`edge`] resolution, [`join`]
//! strategies, [`inputs`], [`failure`] policy, [`withdraw`]al for races, [`retry`]
//! budgets and delays, node and run [`outcome`]s, ShipSec's in-band conventions
//! ([`shipsec`]) human-input [`gate`]s and the run's [`inbox`] of signals, and the two cores built from them: [`node_core`] (one node's life)
//! and [`run_core`] (the run's), sharing one [`plan::RunPlan`], with [`time`] passed in.
//! The [`engine`] core decides what the orchestrator does: admission, idempotency,
//! retention and the engine's phase, with the [`requests`] of every run it knows. What the cores exchange lives here too: a node's [`report`]s and end, the trace
//! [`event`]s they shape and the run's [`result`].
//!
//! No tokio, no clocks, no randomness: time is an argument and jitter comes from a
//! seeded source, so every decision can be tested alone, simulated and replayed.

pub mod attempt;
pub mod edge;
pub mod engine;
pub mod event;
pub mod failure;
pub mod gate;
pub mod inbox;
pub mod inputs;
pub mod join;
pub mod metadata;
pub mod node_core;
pub mod outcome;
pub mod plan;
pub mod report;
pub mod requests;
pub mod result;
pub mod retry;
pub mod run_core;
pub mod shipsec;
pub mod time;
pub mod withdraw;
