//! The component registry: which components exist and what they declare.
//!
//! Validation asks the registry whether a `componentId` is known and which of its inputs
//! are required; the runtime asks it for the component itself. Metadata is data
//! ([`ComponentMeta`]); behaviour lives in [`crate::runtime::components`].
//!
//! A registry may also have a [`RemoteHost`]: the coordinator of remote workers. A node
//! whose definition says `runner: {kind: remote, queue?}`, or whose component the engine
//! configuration makes remote, then runs through the host's component, on a worker that
//! registered it, whether or not this process knows the component itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::runtime::components::{self, Component};
use crate::runtime::definition::RunnerKindDef;
use crate::runtime::definition::graph::Node;

/// The queue of remote attempts whose node and configuration name none.
pub const DEFAULT_QUEUE: &str = "default";

/// Where remote attempts go: the coordinator of the workers (`crate::worker::gateway`).
pub trait RemoteHost: Send + Sync + 'static {
    /// The component that runs `node`'s attempts on a worker serving `queue`.
    fn component(&self, node: &Node, queue: &str) -> Arc<dyn Component>;

    /// The end of attempt `attempt_id` (`<run>/<node ref>/<attempt>`) is stored by the
    /// engine (journaled, when the engine has a journal): a worker's completion of it may
    /// be acknowledged now.
    fn stored(&self, attempt_id: &str);
}

/// One declared input of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// Input name.
    pub name: &'static str,
    /// Whether a run fails with `InputError` when the input has no value.
    pub required: bool,
    /// Whether `params` may supply the value (checked at validation).
    pub from_params: bool,
    /// What values it takes; a constant given in `params` or `inputOverrides` is checked
    /// against it when the definition is validated, so a run is refused at submission,
    /// not failed when the node starts.
    pub kind: InputKind,
}

/// The values an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputKind {
    /// Any JSON value (the component checks it).
    #[default]
    Any,
    /// A whole number from 0 to `max`.
    Count {
        /// The largest taken.
        max: u64,
    },
}

/// A value an input does not take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("a whole number from 0 to {max}, got {value}")]
pub struct OutOfRange {
    /// The largest value taken.
    pub max: u64,
    /// The value given.
    pub value: serde_json::Value,
}

impl InputKind {
    /// Why `value` is not one of these values, if it is not.
    ///
    /// # Errors
    /// The range it is out of.
    pub fn check(self, value: &serde_json::Value) -> Result<(), OutOfRange> {
        match self {
            InputKind::Any => Ok(()),
            // No value: the component's default.
            InputKind::Count { .. } if value.is_null() => Ok(()),
            InputKind::Count { max } => match value.as_u64() {
                Some(n) if n <= max => Ok(()),
                _ => Err(OutOfRange {
                    max,
                    value: value.clone(),
                }),
            },
        }
    }
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
            kind: InputKind::Any,
        });
        self
    }

    /// Adds an optional input.
    pub fn optional(mut self, name: &'static str) -> ComponentMeta {
        self.inputs.push(InputSpec {
            name,
            required: false,
            from_params: true,
            kind: InputKind::Any,
        });
        self
    }

    /// Says what values the input declared last takes.
    pub fn taking(mut self, kind: InputKind) -> ComponentMeta {
        if let Some(input) = self.inputs.last_mut() {
            input.kind = kind;
        }
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
    /// The coordinator of remote workers, if this engine has one.
    remote: Option<Arc<dyn RemoteHost>>,
    /// Components the engine configuration runs remotely, with their queue.
    remote_components: BTreeMap<String, String>,
}

impl std::fmt::Debug for ComponentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.components.keys().collect();
        ids.sort();
        f.debug_struct("ComponentRegistry")
            .field("components", &ids)
            .field("remote", &self.remote.is_some())
            .field("remote_components", &self.remote_components)
            .finish()
    }
}

impl ComponentRegistry {
    /// An empty registry.
    pub fn empty() -> ComponentRegistry {
        ComponentRegistry::default()
    }

    /// A registry holding the built-in components (documented in docs/semantics.md and docs/shipsec.md).
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

    /// Sends remote attempts to `host`; the components of `configured` (id → queue) run
    /// remotely wherever they are used.
    pub fn set_remote(&mut self, host: Arc<dyn RemoteHost>, configured: BTreeMap<String, String>) {
        self.remote = Some(host);
        self.remote_components = configured;
    }

    /// The coordinator of remote workers, if any.
    pub fn remote(&self) -> Option<&Arc<dyn RemoteHost>> {
        self.remote.as_ref()
    }

    /// Whether attempts of `id` run on workers by the engine configuration.
    pub fn configured_remote(&self, id: &str) -> bool {
        self.remote.is_some() && self.remote_components.contains_key(id)
    }

    /// The queue of the workers `node` runs on, or `None` when it runs here: its
    /// definition's `runner: {kind: remote, queue?}`, else the configuration's entry for
    /// its component.
    pub fn remote_queue<'a>(&'a self, node: &'a Node) -> Option<&'a str> {
        self.remote.as_ref()?;
        match &node.runner {
            Some(runner) if runner.kind == RunnerKindDef::Remote => Some(
                runner
                    .options
                    .get("queue")
                    .and_then(|q| q.as_str())
                    .unwrap_or(DEFAULT_QUEUE),
            ),
            _ => self
                .remote_components
                .get(&*node.component_id)
                .map(String::as_str),
        }
    }

    /// The component an attempt of `node` runs: the remote host's when the node runs on
    /// workers, else the registered one.
    pub fn for_node(&self, node: &Node) -> Option<Arc<dyn Component>> {
        match (self.remote_queue(node), &self.remote) {
            (Some(queue), Some(host)) => Some(host.component(node, queue)),
            _ => self.get(&node.component_id).cloned(),
        }
    }

    /// Known ids, sorted.
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<_> = self.components.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}
