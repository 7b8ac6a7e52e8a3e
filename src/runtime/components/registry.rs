//! The component registry: which components exist and what they declare.
//!
//! Validation asks the registry whether a `componentId` is known and which of its inputs
//! are required; the runtime asks it for the component itself. Metadata is data
//! ([`ComponentMeta`]); behaviour lives in [`crate::runtime::components`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::runtime::components::{self, Component};
use crate::runtime::definition::RunnerKindDef;

/// One declared input of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// Input name.
    pub name: &'static str,
    /// Whether a run fails with `InputError` when the input has no value.
    pub required: bool,
    /// Whether `params` may supply the value (checked at validation).
    pub from_params: bool,
}

/// A component's rate-limit hint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitHint {
    /// Sustained tokens per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

/// What a component declares about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentMeta {
    /// Component id, e.g. `core.echo`.
    pub id: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Declared inputs.
    pub inputs: Vec<InputSpec>,
    /// Most attempts of this component running at once, engine-wide.
    pub max_concurrency: Option<u32>,
    /// Rate-limit hint.
    pub rate_limit: Option<RateLimitHint>,
    /// Runner used when the action names none.
    pub default_runner: RunnerKindDef,
}

impl ComponentMeta {
    /// Metadata with no inputs, no hints and the inline runner.
    pub fn new(id: &'static str, summary: &'static str) -> ComponentMeta {
        ComponentMeta {
            id,
            summary,
            inputs: Vec::new(),
            max_concurrency: None,
            rate_limit: None,
            default_runner: RunnerKindDef::Inline,
        }
    }

    /// Adds a required input that `params` may supply.
    pub fn required(mut self, name: &'static str) -> ComponentMeta {
        self.inputs.push(InputSpec {
            name,
            required: true,
            from_params: true,
        });
        self
    }

    /// Adds an optional input.
    pub fn optional(mut self, name: &'static str) -> ComponentMeta {
        self.inputs.push(InputSpec {
            name,
            required: false,
            from_params: true,
        });
        self
    }

    /// Sets the default runner.
    pub fn runner(mut self, kind: RunnerKindDef) -> ComponentMeta {
        self.default_runner = kind;
        self
    }

    /// The declared required inputs.
    pub fn required_inputs(&self) -> impl Iterator<Item = &InputSpec> {
        self.inputs.iter().filter(|i| i.required)
    }
}

/// Components by id.
#[derive(Clone, Default)]
pub struct ComponentRegistry {
    /// Looked up at every attempt: hashed with foldhash, not SipHash (ids are not
    /// attacker-chosen at run time; the registry is built by the engine's owner).
    components: HashMap<String, Arc<dyn Component>, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for ComponentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.components.keys().collect();
        ids.sort();
        f.debug_struct("ComponentRegistry")
            .field("components", &ids)
            .finish()
    }
}

impl ComponentRegistry {
    /// An empty registry.
    pub fn empty() -> ComponentRegistry {
        ComponentRegistry::default()
    }

    /// A registry holding the built-in components (DESIGN.md, Components).
    pub fn with_builtins() -> ComponentRegistry {
        let mut registry = ComponentRegistry::empty();
        for component in components::builtins() {
            registry.register(component);
        }
        registry
    }

    /// Adds or replaces a component under its declared id.
    pub fn register(&mut self, component: Arc<dyn Component>) {
        self.components
            .insert(component.meta().id.to_owned(), component);
    }

    /// The component with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<dyn Component>> {
        self.components.get(id)
    }

    /// The metadata of the component with this id.
    pub fn meta(&self, id: &str) -> Option<&ComponentMeta> {
        self.get(id).map(|c| c.meta())
    }

    /// Known ids, sorted.
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<_> = self.components.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}
