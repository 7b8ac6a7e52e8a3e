//! Everything that is not an actor: the definition model, parsing and validation, the
//! pure decision logic, components and their registry.
//!
//! Nothing in this module tree spawns actors; the decision modules do no I/O and read
//! no clocks (time is passed in), so they can be tested and replayed on their own.

pub mod components;
pub mod definition;
pub mod edge;
pub mod failure;
pub mod graph;
pub mod inputs;
pub mod join;
pub mod limits;
pub mod load;
pub mod mermaid;
pub mod outcome;
pub mod parse;
pub mod registry;
pub mod retry;
pub mod shipsec;
pub mod slots;
pub mod telemetry;
pub mod validate;
pub mod withdraw;
