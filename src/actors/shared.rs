//! What every actor of one run shares, immutably: the run's plan (graph, inputs,
//! components, seed), the supervisor's address, the engine's slots and what each
//! node needs of them, the run's span and the engine's metrics. It is also where a remote
//! attempt tells which worker took it ([`PlacementSink`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::ActorRef;

use crate::actors::slots::Slots;
use crate::messages::supervisor::SupervisorMsg;
use crate::runtime::components::PlacementSink;
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::graph::{Graph, NodeIx};
use crate::runtime::guardrails::config::EngineConfig;
use crate::runtime::guardrails::needs::node_needs;
use crate::runtime::guardrails::slots::{Needs, RunKey};
use crate::runtime::semantics::plan::RunPlan;
use crate::runtime::semantics::report::Placed;

/// How a run reaches the engine's slots, and what its nodes need of them.
#[derive(Debug)]
pub(crate) struct SlotLink {
    /// The engine's slots.
    pub(crate) slots: Slots,
    /// Ticket numbers, engine-wide.
    pub(crate) tickets: Arc<AtomicU64>,
    /// Needs of each node, by `NodeIx`; `None` where the node needs no slot at all.
    needs: Vec<Option<Needs>>,
}

impl SlotLink {
    /// Works out what each node of `graph` needs under `config`.
    pub(crate) fn new(
        slots: Slots,
        tickets: Arc<AtomicU64>,
        run: RunKey,
        graph: &Graph,
        registry: &ComponentRegistry,
        config: &EngineConfig,
    ) -> SlotLink {
        let needs = node_needs(graph, registry, config, run);
        SlotLink {
            slots,
            tickets,
            needs,
        }
    }

    /// What `node` needs, or `None` when it may start at once.
    pub(crate) fn needs(&self, node: NodeIx) -> Option<&Needs> {
        self.needs[node.ix()].as_ref()
    }

    /// A fresh ticket number.
    pub(crate) fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// The engine's slots.
    pub(crate) fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Which nodes wait for slots, by `NodeIx`.
    pub(crate) fn queued(&self) -> Vec<bool> {
        self.needs.iter().map(Option::is_some).collect()
    }
}

/// A remote attempt's placement goes to the supervisor, which records it as a fact.
impl PlacementSink for RunShared {
    fn placed(&self, node: NodeIx, attempt: u32, worker: Arc<str>) {
        // A supervisor gone is a run torn down: the placement no longer matters.
        let placed = Placed {
            node,
            attempt,
            worker,
        };
        let _ = self.supervisor.cast(SupervisorMsg::Placed(placed));
    }
}

/// One run's shared, immutable context.
#[derive(Debug)]
pub(crate) struct RunShared {
    /// What the run's cores share: graph, inputs, components, limits, seed.
    pub(crate) plan: Arc<RunPlan>,
    /// The run's supervisor.
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    /// The engine's slot limiter; `None` when the run was started without one.
    pub(crate) slots: Option<SlotLink>,
    /// The run's span (disabled when not tracing); node spans are its children.
    pub(crate) span: tracing::Span,
    /// The engine's metric instruments.
    pub(crate) metrics: Arc<crate::runtime::telemetry::Metrics>,
    /// The engine's fault hooks (none in production).
    pub(crate) faults: Arc<dyn crate::actors::faults::Faults>,
}
