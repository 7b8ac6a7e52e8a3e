//! The seam where faults are injected into the engine, and where the facts its cores are
//! fed can be watched: a [`Faults`] trait object in the engine's shared state, reaching
//! every run's supervisor and node actors. The engine's own is [`NoFaults`], which does
//! nothing; the chaos suite (the `chaos` feature, `crate::chaos::Chaos`) implements it to
//! find and kill actors, make attempts panic and hold back the edge resolutions sent to a
//! node, and to record the facts a run's cores were fed.
//!
//! Every hook has a default that does nothing, so the actors call them unconditionally
//! and a production engine pays one virtual call that returns at once.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorCell;

use crate::runtime::definition::graph::NodeIx;
use crate::runtime::semantics::node_core::NodeFact;
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::run_core::RunFact;
use crate::runtime::semantics::time::Time;

/// Hooks into the engine's actors, for fault injection and observation.
pub trait Faults: Send + Sync + std::fmt::Debug {
    /// A node's actor (`node`: its ref) or, with `node` `None`, the run's supervisor
    /// started.
    fn spawned(&self, _run_id: &str, _node: Option<&str>, _cell: &ActorCell) {}

    /// A node ended (its terminal event is published), or with `node` `None`, the run did.
    fn ended(&self, _run_id: &str, _node: Option<&str>) {}

    /// Whether the actor of `node`, just spawned, is killed now.
    fn kill_at_spawn(&self, _run_id: &str, _node: &str) -> bool {
        false
    }

    /// Whether the actor of `node` is killed as its attempt `attempt` starts.
    fn kill_at_attempt(&self, _run_id: &str, _node: &str, _attempt: u32) -> bool {
        false
    }

    /// Whether attempt `attempt` of `node` panics before its component runs.
    fn panic_at_attempt(&self, _run_id: &str, _node: &str, _attempt: u32) -> bool {
        false
    }

    /// How late the edge resolutions sent to `node` arrive (none with its spawn).
    fn delay_resolutions(&self, _run_id: &str, _node: &str) -> Option<Duration> {
        None
    }

    /// The plan of a run that starts.
    fn plan(&self, _plan: &Arc<RunPlan>) {}

    /// The run core of `run_id` is fed `fact` at `now` (besides the journal).
    fn run_fact(&self, _run_id: &str, _fact: &RunFact, _now: Time) {}

    /// The core of node `node` of `run_id` is fed `fact` at `now`.
    fn node_fact(&self, _run_id: &str, _node: NodeIx, _fact: &NodeFact, _now: Time) {}
}

/// No fault, no observation: the engine's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFaults;

impl Faults for NoFaults {}
