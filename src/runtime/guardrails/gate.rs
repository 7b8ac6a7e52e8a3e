//! The one gate a definition passes before it may run here, whoever brings it: the
//! command line, an embedder's handle or the HTTP service. In order: the server's
//! definition policy (components allowed, `core.process` within its bounds; only the
//! service sets one), the engine's definition limits, validation against the engine's
//! components; and, when a run of it is submitted, the runtime inputs its entrypoint
//! requires. Every refusal names its path.

use std::sync::Arc;

use crate::runtime::components::builtin::missing_runtime_inputs;
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::graph::Graph;
use crate::runtime::definition::limits::DefinitionLimits;
use crate::runtime::definition::load::{self, LoadError};
use crate::runtime::definition::validate::DefinitionError;
use crate::runtime::definition::{JsonObject, WorkflowDefinition};
use crate::runtime::guardrails::service::DefinitionPolicy;

/// What decides whether a definition may run here.
#[derive(Debug, Clone)]
pub struct Gate<'a> {
    registry: &'a ComponentRegistry,
    limits: &'a DefinitionLimits,
    policy: Option<&'a DefinitionPolicy>,
}

impl<'a> Gate<'a> {
    /// The gate of an engine with these components and limits.
    pub fn new(registry: &'a ComponentRegistry, limits: &'a DefinitionLimits) -> Gate<'a> {
        Gate {
            registry,
            limits,
            policy: None,
        }
    }

    /// The same gate, under a server's definition policy too.
    #[must_use]
    pub fn under(self, policy: &'a DefinitionPolicy) -> Gate<'a> {
        Gate {
            policy: Some(policy),
            ..self
        }
    }

    /// The definition's validated graph, if it may run here.
    ///
    /// # Errors
    /// [`LoadError::Invalid`] with every problem the policy finds, or else the limit
    /// broken ([`LoadError::Limit`]) or every validation problem.
    pub fn admit(&self, definition: &WorkflowDefinition) -> Result<Arc<Graph>, LoadError> {
        if let Some(policy) = self.policy {
            let problems = policy.check(definition);
            if !problems.is_empty() {
                return Err(LoadError::Invalid(DefinitionError {
                    problems,
                    warnings: Vec::new(),
                }));
            }
        }
        load::checked(definition, self.registry, self.limits)
    }

    /// The runtime inputs `graph`'s entrypoint requires that `inputs` lacks.
    pub fn missing_inputs(graph: &Graph, inputs: &JsonObject) -> Vec<String> {
        match graph.entrypoint {
            Some(entry) => missing_runtime_inputs(&graph.node(entry).params, inputs),
            None => Vec::new(),
        }
    }
}
