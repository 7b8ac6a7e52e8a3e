//! Validation: from a parsed [`WorkflowDefinition`] to an immutable [`Graph`], or to the
//! full list of problems, each with its path and a plain sentence.
//!
//! Every rule runs even after an earlier one failed, so a backend sees all of its mistakes
//! at once. When `edges` are given they are authoritative, whatever `version` says;
//! fields that may be omitted (`nodes` entries, `dependsOn`, `dependencyCounts`, edge ids)
//! are derived from them, and where given but in disagreement the edges win and the
//! disagreement is a *warning* on the graph ([`Graph::warnings`]), never a refusal
//! ([`refuse_warnings`] makes them errors for a strict caller). `dependencyCounts` counts
//! distinct parents, as ShipSec's compiler does. A definition without `edges` gets them
//! from `dependsOn` and `inputMappings`. Nothing runs here.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::graph::{
    Edge, EdgeIx, EdgeKind, ErrorTypePolicy, FailurePolicy, Graph, InputMapping, Join, Node,
    NodeIx, NodeMode, RetryPolicy, RunSettings,
};
use crate::runtime::definition::{
    ActionDef, EdgeKindDef, FailurePolicyDef, JoinStrategyDef, NodeMetadata, NodeModeDef,
    OnFailureDef, RetryPolicyDef, RunnerDef, RunnerKindDef, WorkflowDefinition,
};
use crate::runtime::semantics::retry::NEVER_RETRIED;

/// One thing wrong with a definition (an error, or a warning when the edges decide).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Where, e.g. `actions[3].inputMappings.url.sourceRef`.
    pub path: String,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A definition that does not validate: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct DefinitionError {
    /// The problems, in definition order.
    pub problems: Vec<Problem>,
    /// Disagreements the edges would have decided, found on the way (not why it failed).
    pub warnings: Vec<Problem>,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid workflow definition ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        if !self.warnings.is_empty() {
            writeln!(f, "and {} warning(s):", self.warnings.len())?;
            for w in &self.warnings {
                writeln!(f, "  {w}")?;
            }
        }
        Ok(())
    }
}

/// The largest number of cycles spelled out in one report.
const MAX_CYCLES_REPORTED: usize = 10;

/// Validates a definition against the components of `registry`.
///
/// # Errors
/// [`DefinitionError`] listing every problem found.
pub fn validate(
    def: &WorkflowDefinition,
    registry: &ComponentRegistry,
) -> Result<Graph, DefinitionError> {
    let mut v = Validator {
        def,
        registry,
        problems: Vec::new(),
        warnings: Vec::new(),
        index: HashMap::with_capacity(def.actions.len()),
    };
    let mut graph = v.run();
    if v.problems.is_empty() {
        graph.warnings = v.warnings;
        Ok(graph)
    } else {
        Err(DefinitionError {
            problems: v.problems,
            warnings: v.warnings,
        })
    }
}

/// Refuses a valid graph that carries warnings, as a strict caller asks
/// (`shipsec validate --strict`): each warning becomes a problem.
///
/// # Errors
/// [`DefinitionError`] listing the warnings, when there are any.
pub fn refuse_warnings(graph: &Graph) -> Result<(), DefinitionError> {
    if graph.warnings.is_empty() {
        return Ok(());
    }
    Err(DefinitionError {
        problems: graph.warnings.clone(),
        warnings: Vec::new(),
    })
}

struct Validator<'a> {
    def: &'a WorkflowDefinition,
    registry: &'a ComponentRegistry,
    problems: Vec<Problem>,
    /// Disagreements the edges decide: reported, never refused.
    warnings: Vec<Problem>,
    index: HashMap<&'a str, NodeIx>,
}

impl<'a> Validator<'a> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn run(&mut self) -> Graph {
        self.check_top();
        self.index_actions();
        self.check_node_metadata_keys();
        let entrypoint = self.entrypoint();
        let edges = self.edges();
        let mut nodes: Vec<Node> = (0..self.def.actions.len()).map(|i| self.node(i)).collect();
        for (i, e) in edges.iter().enumerate() {
            nodes[e.source.ix()].outgoing.push(EdgeIx(i as u32));
            nodes[e.target.ix()].incoming.push(EdgeIx(i as u32));
            if e.kind == EdgeKind::Error {
                nodes[e.source.ix()].handles_failure = true;
            }
        }
        self.check_depends_on(&nodes, &edges);
        self.check_mappings(&mut nodes, &edges);
        self.check_dependency_counts(&nodes, &edges);
        self.check_joins(&mut nodes);
        let topo = self.topo_order(&nodes, &edges);
        let settings = self.settings();
        Graph::new(
            self.def.title.clone(),
            nodes,
            edges,
            entrypoint,
            settings,
            topo,
        )
    }

    fn check_top(&mut self) {
        if !matches!(self.def.version, 1 | 2) {
            self.problem(
                "version",
                format!("version must be 1 or 2, got {}", self.def.version),
            );
        }
        if self.def.actions.is_empty() {
            self.problem("actions", "a workflow needs at least one action");
        }
    }

    fn index_actions(&mut self) {
        for (i, action) in self.def.actions.iter().enumerate() {
            let path = format!("actions[{i}]");
            if action.node_ref.is_empty() {
                self.problem(format!("{path}.ref"), "ref must not be empty");
            }
            if let Some(&first) = self.index.get(action.node_ref.as_str()) {
                self.problem(
                    format!("{path}.ref"),
                    format!(
                        "duplicate ref `{}` (first used at actions[{}])",
                        action.node_ref, first.0
                    ),
                );
            } else {
                self.index.insert(&action.node_ref, NodeIx(i as u32));
            }
            let remote = self.registry.remote().is_some()
                && (action
                    .runner
                    .as_ref()
                    .is_some_and(|r| r.kind == RunnerKindDef::Remote)
                    || self.registry.configured_remote(&action.component_id));
            // A remote component is the workers' to know: it need not exist here.
            if !remote && self.registry.get(&action.component_id).is_none() {
                self.problem(
                    format!("{path}.componentId"),
                    format!(
                        "unknown component `{}` (known: {})",
                        action.component_id,
                        self.registry.ids().join(", ")
                    ),
                );
            }
            if let Some(runner) = &action.runner {
                self.check_runner(&path, action, runner);
            }
        }
    }

    /// A runner is honoured or refused, never ignored: `inline` and `process` name where
    /// the component runs (in this process, or as a child process), so each must be the
    /// component's own runner and takes no options; `remote` runs on the workers of an
    /// engine that has them, with one option, `queue` (a non-empty string).
    fn check_runner(&mut self, path: &str, action: &ActionDef, runner: &RunnerDef) {
        let kind = |k: RunnerKindDef| match k {
            RunnerKindDef::Inline => "inline",
            RunnerKindDef::Process => "process",
            RunnerKindDef::Remote => "remote",
        };
        let mut allowed: &[&str] = &[];
        match (runner.kind, self.registry.meta(&action.component_id)) {
            (RunnerKindDef::Remote, _) if self.registry.remote().is_none() => {
                return self.problem(
                    format!("{path}.runner.kind"),
                    "the `remote` runner needs workers: this engine has none (start it with `shipsec serve --worker-listen ADDR`)",
                );
            }
            (RunnerKindDef::Remote, _) => {
                allowed = &["queue"];
                if let Some(queue) = runner.options.get("queue")
                    && queue.as_str().is_none_or(|q| q.is_empty())
                {
                    self.problem(
                        format!("{path}.runner.queue"),
                        format!("must be a non-empty string, got {queue}"),
                    );
                }
            }
            (wanted, Some(meta)) if wanted != meta.default_runner => self.problem(
                format!("{path}.runner.kind"),
                format!(
                    "component `{}` runs `{}`, not `{}`",
                    action.component_id,
                    kind(meta.default_runner),
                    kind(wanted)
                ),
            ),
            _ => {}
        }
        let mut options: Vec<&str> = runner
            .options
            .keys()
            .map(String::as_str)
            .filter(|o| !allowed.contains(o))
            .collect();
        if !options.is_empty() {
            options.sort_unstable();
            self.problem(
                format!("{path}.runner"),
                format!(
                    "runner options are not supported: `{}`",
                    options.join("`, `")
                ),
            );
        }
    }

    fn lookup(&self, node_ref: &str) -> Option<NodeIx> {
        self.index.get(node_ref).copied()
    }

    fn check_node_metadata_keys(&mut self) {
        for (key, meta) in &self.def.nodes {
            if self.lookup(key).is_none() {
                self.problem(format!("nodes.{key}"), format!("no action has ref `{key}`"));
            }
            if meta.node_ref != *key {
                self.problem(
                    format!("nodes.{key}.ref"),
                    format!("ref `{}` does not match its key `{key}`", meta.node_ref),
                );
            }
        }
    }

    fn entrypoint(&mut self) -> Option<NodeIx> {
        if let Some(e) = &self.def.entrypoint {
            let found = self.lookup(&e.node_ref);
            if found.is_none() {
                self.problem(
                    "entrypoint.ref",
                    format!("names unknown node `{}`", e.node_ref),
                );
            }
            return found;
        }
        self.def
            .actions
            .iter()
            .position(|a| a.component_id == "core.workflow.entrypoint")
            .map(|i| NodeIx(i as u32))
    }

    fn edges(&mut self) -> Vec<Edge> {
        match &self.def.edges {
            Some(edges) => self.given_edges(edges),
            None => self.derived_edges(),
        }
    }

    fn given_edges(&mut self, defs: &'a [crate::runtime::definition::EdgeDef]) -> Vec<Edge> {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut pair_counts: HashMap<(NodeIx, NodeIx), u32> = HashMap::new();
        let given: HashSet<&str> = defs.iter().filter_map(|e| e.id.as_deref()).collect();
        let mut out = Vec::with_capacity(defs.len());
        for (i, e) in defs.iter().enumerate() {
            let path = format!("edges[{i}]");
            let source = self.known(&e.source_ref, &format!("{path}.sourceRef"));
            let target = self.known(&e.target_ref, &format!("{path}.targetRef"));
            let (Some(source), Some(target)) = (source, target) else {
                continue;
            };
            let id = match &e.id {
                Some(id) => id.clone(),
                None => loop {
                    let id = derived_id(
                        &mut pair_counts,
                        source,
                        target,
                        &e.source_ref,
                        &e.target_ref,
                    );
                    if !given.contains(id.as_str()) {
                        break id;
                    }
                },
            };
            if let Some(&first) = ids.get(&id) {
                self.problem(
                    format!("{path}.id"),
                    format!("duplicate edge id `{id}` (first used at edges[{first}])"),
                );
            } else {
                ids.insert(id.clone(), i);
            }
            out.push(Edge {
                id: id.into(),
                source,
                target,
                source_handle: e.source_handle.clone(),
                target_handle: e.target_handle.clone(),
                kind: edge_kind(e.kind.unwrap_or_default()),
            });
        }
        out
    }

    /// Version 1: one success edge per parent named in `dependsOn` or `inputMappings`.
    fn derived_edges(&mut self) -> Vec<Edge> {
        let mut out = Vec::new();
        let mut pair_counts = HashMap::new();
        for (i, action) in self.def.actions.iter().enumerate() {
            let target = NodeIx(i as u32);
            let mut seen = HashSet::new();
            let depends = action.depends_on.iter().flatten().enumerate();
            let depends =
                depends.map(|(j, r)| (r.as_str(), format!("actions[{i}].dependsOn[{j}]")));
            let mapped = action.input_mappings.iter().map(|(name, m)| {
                (
                    m.source_ref.as_str(),
                    format!("actions[{i}].inputMappings.{name}.sourceRef"),
                )
            });
            let parents: Vec<_> = depends.chain(mapped).collect();
            for (parent_ref, path) in parents {
                let Some(source) = self.known(parent_ref, &path) else {
                    continue;
                };
                if !seen.insert(source) {
                    continue;
                }
                let id = derived_id(
                    &mut pair_counts,
                    source,
                    target,
                    parent_ref,
                    &action.node_ref,
                );
                out.push(Edge {
                    id: id.into(),
                    source,
                    target,
                    source_handle: None,
                    target_handle: None,
                    kind: EdgeKind::Success,
                });
            }
        }
        out
    }

    fn known(&mut self, node_ref: &str, path: &str) -> Option<NodeIx> {
        let found = self.lookup(node_ref);
        if found.is_none() {
            self.problem(path, format!("names unknown node `{node_ref}`"));
        }
        found
    }

    fn node(&mut self, i: usize) -> Node {
        let action = &self.def.actions[i];
        let default_meta = NodeMetadata::default();
        let meta = self
            .def
            .nodes
            .get(&action.node_ref)
            .unwrap_or(&default_meta);
        let mpath = format!("nodes.{}", action.node_ref);
        // A tool-mode node's component does not execute here: the agent calling it
        // supplies the inputs it exposes.
        if meta.mode != Some(NodeModeDef::Tool) {
            self.check_required_inputs(i, action);
        }
        let join = match meta.join_strategy.unwrap_or_default() {
            JoinStrategyDef::All => Join::All,
            JoinStrategyDef::Any => Join::Any,
            JoinStrategyDef::First => Join::First,
            // The quorum is range-checked once the incoming edges are known.
            JoinStrategyDef::Quorum => Join::Quorum(0),
        };
        Node {
            node_ref: action.node_ref.as_str().into(),
            label: meta.label.clone(),
            component_id: action.component_id.as_str().into(),
            params: Arc::new(action.params.clone()),
            input_overrides: action.input_overrides.clone(),
            input_mappings: Vec::new(),
            join,
            mode: match meta.mode.unwrap_or_default() {
                NodeModeDef::Normal => NodeMode::Normal,
                NodeModeDef::Tool => NodeMode::Tool,
            },
            on_failure: meta.on_failure.map(|p| match p {
                OnFailureDef::FailRun => FailurePolicy::FailRun,
                OnFailureDef::SkipDependents => FailurePolicy::SkipDependents,
            }),
            attempt_timeout: self.seconds(meta.timeout_seconds, &format!("{mpath}.timeoutSeconds")),
            queue_timeout: self.seconds(
                meta.queue_timeout_seconds,
                &format!("{mpath}.queueTimeoutSeconds"),
            ),
            total_timeout: self.seconds(
                meta.total_timeout_seconds,
                &format!("{mpath}.totalTimeoutSeconds"),
            ),
            retry: self.retry(
                action.retry_policy.as_ref(),
                &format!("actions[{i}].retryPolicy"),
            ),
            runner: action.runner.clone(),
            group_id: meta.group_id.clone(),
            stream_id: meta.stream_id.clone(),
            max_concurrency: self
                .positive_int(meta.max_concurrency, &format!("{mpath}.maxConcurrency")),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            handles_failure: false,
        }
    }

    fn check_required_inputs(&mut self, i: usize, action: &ActionDef) {
        let Some(meta) = self.registry.meta(&action.component_id) else {
            return;
        };
        let missing: Vec<&str> = meta
            .required_inputs()
            .filter(|input| {
                let given = (input.from_params && action.params.contains_key(input.name))
                    || action.input_overrides.contains_key(input.name)
                    || action.input_mappings.contains_key(input.name);
                !given
            })
            .map(|input| input.name)
            .collect();
        for name in missing {
            self.problem(
                format!("actions[{i}]"),
                format!(
                    "component `{}` requires input `{name}`, which has no value in params or inputOverrides and no mapping",
                    action.component_id
                ),
            );
        }
        let mut wrong = Vec::new();
        for input in &meta.inputs {
            let given = [
                ("params", action.params.get(input.name)),
                ("inputOverrides", action.input_overrides.get(input.name)),
            ];
            for (field, value) in given {
                if let Some(value) = value
                    && let Err(why) = input.kind.check(value)
                {
                    wrong.push((format!("actions[{i}].{field}.{}", input.name), why));
                }
            }
        }
        for (path, why) in wrong {
            let message = format!("component `{}` takes {why}", action.component_id);
            self.problem(path, message);
        }
    }

    /// A non-negative, finite number of seconds; zero means "none".
    fn seconds(&mut self, value: Option<f64>, path: &str) -> Option<Duration> {
        let v = self.non_negative(value, path)?;
        (v > 0.0).then(|| Duration::from_secs_f64(v))
    }

    fn non_negative(&mut self, value: Option<f64>, path: &str) -> Option<f64> {
        let v = value?;
        if !v.is_finite() || v < 0.0 {
            self.problem(path, format!("must be a finite number ≥ 0, got {v}"));
            return None;
        }
        if v > 1.0e9 {
            self.problem(path, format!("is too large ({v}); the most allowed is 1e9"));
            return None;
        }
        Some(v)
    }

    fn positive_int(&mut self, value: Option<f64>, path: &str) -> Option<u32> {
        let v = value?;
        if !v.is_finite() || v < 1.0 || v.fract() != 0.0 || v > f64::from(u32::MAX) {
            self.problem(path, format!("must be a whole number ≥ 1, got {v}"));
            return None;
        }
        Some(v as u32)
    }

    fn retry(&mut self, def: Option<&RetryPolicyDef>, path: &str) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        let Some(def) = def else {
            return policy;
        };
        if let Some(n) = self.max_attempts(def.max_attempts, &format!("{path}.maxAttempts")) {
            policy.max_attempts = n;
        }
        let initial = self.non_negative(
            def.initial_interval_seconds,
            &format!("{path}.initialIntervalSeconds"),
        );
        if let Some(s) = initial {
            policy.initial_interval = Duration::from_secs_f64(s);
        }
        let maximum = self.non_negative(
            def.maximum_interval_seconds,
            &format!("{path}.maximumIntervalSeconds"),
        );
        if let Some(s) = maximum {
            policy.maximum_interval = Duration::from_secs_f64(s);
        }
        if let Some(c) = def.backoff_coefficient {
            if c.is_finite() && (1.0..=1000.0).contains(&c) {
                policy.backoff_coefficient = c;
            } else {
                self.problem(
                    format!("{path}.backoffCoefficient"),
                    format!("must be a number from 1 to 1000, got {c}"),
                );
            }
        }
        if let Some(j) = def.jitter {
            if j.is_finite() && (0.0..=1.0).contains(&j) {
                policy.jitter = j;
            } else {
                self.problem(
                    format!("{path}.jitter"),
                    format!("must be a fraction from 0 to 1, got {j}"),
                );
            }
        }
        policy.non_retryable_error_types =
            def.non_retryable_error_types.clone().unwrap_or_default();
        for (error_type, p) in def.error_type_policies.iter().flatten() {
            let at = format!("{path}.errorTypePolicies.{error_type}");
            if p.retryable == Some(true) && NEVER_RETRIED.contains(&error_type.as_str()) {
                self.problem(
                    format!("{at}.retryable"),
                    format!(
                        "`{error_type}` is never retried; `retryable: true` cannot change that"
                    ),
                );
            }
            let delay = self
                .non_negative(p.retry_delay_ms, &format!("{at}.retryDelayMs"))
                .map(|ms| Duration::from_secs_f64(ms / 1000.0));
            let entry = ErrorTypePolicy {
                retryable: p.retryable,
                delay,
            };
            policy.error_types.insert(error_type.clone(), entry);
        }
        policy
    }

    /// `maxAttempts`: a whole number ≥ 1, or ShipSec's 0 for "unlimited".
    fn max_attempts(&mut self, value: Option<f64>, path: &str) -> Option<u32> {
        if value == Some(0.0) {
            return Some(u32::MAX);
        }
        let v = value?;
        if !v.is_finite() || v < 1.0 || v.fract() != 0.0 || v > f64::from(u32::MAX) {
            self.problem(
                path,
                format!("must be a whole number ≥ 1 (or 0 for unlimited), got {v}"),
            );
            return None;
        }
        Some(v as u32)
    }

    /// With edges given, `dependsOn` is informational (ShipSec's scheduler reads only the
    /// edges): where it disagrees with them, the edges win and the entry is a warning.
    fn check_depends_on(&mut self, nodes: &[Node], edges: &[Edge]) {
        if self.def.edges.is_none() {
            return; // no edges given: they were derived from dependsOn itself
        }
        for (i, action) in self.def.actions.iter().enumerate() {
            let Some(depends) = &action.depends_on else {
                continue;
            };
            let Some(node) = nodes.get(i) else { continue };
            let parents: HashSet<NodeIx> =
                node.incoming.iter().map(|e| edges[e.ix()].source).collect();
            let mut listed = HashSet::new();
            for (j, r) in depends.iter().enumerate() {
                let path = format!("actions[{i}].dependsOn[{j}]");
                let Some(p) = self.lookup(r) else {
                    self.warning(path, format!("names unknown node `{r}`; the edges decide"));
                    continue;
                };
                listed.insert(p);
                if !parents.contains(&p) {
                    self.warning(
                        path,
                        format!(
                            "lists `{r}`, but no edge goes from `{r}` to `{}`; the edges decide",
                            action.node_ref
                        ),
                    );
                }
            }
            let mut unlisted: Vec<&str> = parents
                .iter()
                .filter(|p| !listed.contains(p))
                .map(|p| self.def.actions[p.ix()].node_ref.as_str())
                .collect();
            unlisted.sort_unstable();
            for r in unlisted {
                self.warning(
                    format!("actions[{i}].dependsOn"),
                    format!(
                        "omits `{r}`, which has an edge to `{}`; the edges decide",
                        action.node_ref
                    ),
                );
            }
        }
    }

    fn check_mappings(&mut self, nodes: &mut [Node], edges: &[Edge]) {
        for (i, action) in self.def.actions.iter().enumerate() {
            let parents: HashSet<NodeIx> = nodes[i]
                .incoming
                .iter()
                .map(|e| edges[e.ix()].source)
                .collect();
            for (name, m) in &action.input_mappings {
                let path = format!("actions[{i}].inputMappings.{name}.sourceRef");
                let found = self.lookup(&m.source_ref);
                let Some(source) = found else {
                    if self.def.edges.is_some() {
                        self.problem(path, format!("names unknown node `{}`", m.source_ref));
                    }
                    continue;
                };
                if !parents.contains(&source) {
                    self.problem(
                        path,
                        format!(
                            "`{}` is not a parent of `{}` (no edge {} -> {})",
                            m.source_ref, action.node_ref, m.source_ref, action.node_ref
                        ),
                    );
                    continue;
                }
                nodes[i].input_mappings.push(InputMapping {
                    target: name.clone(),
                    source,
                    source_handle: m.source_handle.clone(),
                });
            }
        }
    }

    /// `dependencyCounts[ref]` is the number of distinct parents (ShipSec's compiler:
    /// the size of `dependsOn`, the set of incoming edge sources), so two ports wired
    /// between one pair count once. A count that disagrees is a warning: the edges decide.
    fn check_dependency_counts(&mut self, nodes: &[Node], edges: &[Edge]) {
        let Some(counts) = &self.def.dependency_counts else {
            return;
        };
        for (r, &count) in counts {
            let path = format!("dependencyCounts.{r}");
            let Some(ix) = self.lookup(r) else {
                self.warning(path, format!("names unknown node `{r}`; the edges decide"));
                continue;
            };
            let parents: HashSet<NodeIx> = nodes[ix.ix()]
                .incoming
                .iter()
                .map(|e| edges[e.ix()].source)
                .collect();
            let actual = parents.len() as u64;
            if actual != count {
                self.warning(
                    path,
                    format!(
                        "says {count} but `{r}` has {actual} distinct parent(s); the edges decide"
                    ),
                );
            }
        }
    }

    fn check_joins(&mut self, nodes: &mut [Node]) {
        for (i, node) in nodes.iter_mut().enumerate() {
            let r = &self.def.actions[i].node_ref;
            let meta = self.def.nodes.get(r);
            let quorum = meta.and_then(|m| m.quorum);
            let path = format!("nodes.{r}.quorum");
            let k = node.incoming.len();
            match (node.join, quorum) {
                (Join::Quorum(_), None) => {
                    self.problems.push(Problem {
                        path,
                        message: "joinStrategy `quorum` needs `quorum: n`".into(),
                    });
                }
                (Join::Quorum(_), Some(n)) => {
                    let ok = n.is_finite() && n.fract() == 0.0 && n >= 1.0 && n <= k as f64;
                    if ok {
                        node.join = Join::Quorum(n as u32);
                    } else {
                        self.problems.push(Problem {
                            path,
                            message: format!(
                                "must be a whole number from 1 to the {k} incoming edge(s), got {n}"
                            ),
                        });
                    }
                }
                (join, Some(_)) => {
                    self.problems.push(Problem {
                        path,
                        message: format!(
                            "is set but joinStrategy is `{}`; use `quorum` or remove it",
                            join.as_str()
                        ),
                    });
                }
                (_, None) => {}
            }
        }
    }

    fn settings(&mut self) -> RunSettings {
        let c = &self.def.config;
        RunSettings {
            timeout: self.seconds(c.timeout_seconds, "config.timeoutSeconds"),
            failure_policy: match c.failure_policy.unwrap_or_default() {
                FailurePolicyDef::Continue => FailurePolicy::SkipDependents,
                FailurePolicyDef::FailFast => FailurePolicy::FailRun,
            },
            max_parallelism: self.positive_int(c.max_parallelism, "config.maxParallelism"),
            environment: c.environment.clone(),
        }
    }

    /// Kahn's algorithm; what remains is cyclic and is spelled out.
    fn topo_order(&mut self, nodes: &[Node], edges: &[Edge]) -> Vec<NodeIx> {
        let mut indegree: Vec<usize> = nodes.iter().map(|n| n.incoming.len()).collect();
        let mut order: Vec<NodeIx> = (0..nodes.len())
            .filter(|&i| indegree[i] == 0)
            .map(|i| NodeIx(i as u32))
            .collect();
        let mut head = 0;
        while head < order.len() {
            let n = order[head];
            head += 1;
            for e in &nodes[n.ix()].outgoing {
                let t = edges[e.ix()].target;
                indegree[t.ix()] -= 1;
                if indegree[t.ix()] == 0 {
                    order.push(t);
                }
            }
        }
        if order.len() < nodes.len() {
            let cyclic: Vec<bool> = indegree.iter().map(|&d| d > 0).collect();
            for cycle in find_cycles(nodes, edges, &cyclic) {
                let text: Vec<&str> = cycle.iter().map(|n| &*nodes[n.ix()].node_ref).collect();
                self.problem("edges", format!("cycle: {}", text.join(" -> ")));
            }
        }
        order
    }
}

fn edge_kind(kind: EdgeKindDef) -> EdgeKind {
    match kind {
        EdgeKindDef::Success => EdgeKind::Success,
        EdgeKindDef::Error => EdgeKind::Error,
        EdgeKindDef::Always => EdgeKind::Always,
    }
}

/// `source->target`, then `source->target#2`, ... for repeats of the same pair.
fn derived_id(
    counts: &mut HashMap<(NodeIx, NodeIx), u32>,
    source: NodeIx,
    target: NodeIx,
    source_ref: &str,
    target_ref: &str,
) -> String {
    let n = counts.entry((source, target)).or_insert(0);
    *n += 1;
    if *n == 1 {
        format!("{source_ref}->{target_ref}")
    } else {
        format!("{source_ref}->{target_ref}#{n}")
    }
}

/// Spells out cycles among the nodes flagged `cyclic` (iterative DFS, one cycle per back
/// edge found, at most [`MAX_CYCLES_REPORTED`]). Each cycle starts and ends at one node.
fn find_cycles(nodes: &[Node], edges: &[Edge], cyclic: &[bool]) -> Vec<Vec<NodeIx>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark = vec![Mark::New; nodes.len()];
    let mut cycles = Vec::new();
    for start in (0..nodes.len()).filter(|&i| cyclic[i]) {
        if mark[start] != Mark::New {
            continue;
        }
        // Stack of (node, next outgoing edge position).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnStack;
        while let Some(&mut (n, ref mut pos)) = stack.last_mut() {
            let out = &nodes[n].outgoing;
            if *pos == out.len() {
                mark[n] = Mark::Done;
                stack.pop();
                continue;
            }
            let t = edges[out[*pos].ix()].target.ix();
            *pos += 1;
            if !cyclic[t] {
                continue;
            }
            match mark[t] {
                Mark::New => {
                    mark[t] = Mark::OnStack;
                    stack.push((t, 0));
                }
                Mark::OnStack => {
                    let from = stack.iter().position(|&(s, _)| s == t).unwrap_or(0);
                    let mut cycle: Vec<NodeIx> = stack[from..]
                        .iter()
                        .map(|&(s, _)| NodeIx(s as u32))
                        .collect();
                    cycle.push(NodeIx(t as u32));
                    cycles.push(cycle);
                    if cycles.len() >= MAX_CYCLES_REPORTED {
                        return cycles;
                    }
                }
                Mark::Done => {}
            }
        }
    }
    cycles
}
