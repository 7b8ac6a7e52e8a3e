//! The definition a backend sends, from text to an immutable graph: [`model`] (the wire
//! form, ShipSec Studio's compiled `WorkflowDefinition`), [`parse`] (JSON or YAML, with
//! paths), [`limits`] (size and shape bounds checked before validation), [`validate`]
//! (meaning, every problem at once, into a [`graph::Graph`]), [`load`] (all of it in one
//! call) and [`mermaid`] (the DAG as a flowchart).

pub mod graph;
pub mod limits;
pub mod load;
pub mod mermaid;
pub mod model;
pub mod parse;
pub mod validate;

pub use model::*;
