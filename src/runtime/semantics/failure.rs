//! Failure handling (docs/semantics.md §4): what an ended node means for its run.

use crate::runtime::definition::graph::{FailurePolicy, Graph, NodeIx};

/// What a node's failure does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    /// The node has an `error` edge: its handler's outcome counts instead.
    Handled,
    /// Unhandled under `skipDependents`: dependents resolve by the edge rules; the run
    /// will end FAILED.
    SkipDependents,
    /// Unhandled under `failRun`: cancel everything now; the run ends FAILED.
    FailRun,
}

/// The effect of `node` failing.
pub fn on_failure(graph: &Graph, node: NodeIx) -> FailureEffect {
    if graph.node(node).handles_failure {
        FailureEffect::Handled
    } else {
        match graph.failure_policy(node) {
            FailurePolicy::SkipDependents => FailureEffect::SkipDependents,
            FailurePolicy::FailRun => FailureEffect::FailRun,
        }
    }
}
