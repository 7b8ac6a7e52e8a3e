//! Limits on what a definition may be: its size as text, its node and edge counts, the
//! length of its strings and the nesting depth of its JSON values.
//!
//! A definition comes from a backend, and a backend may be wrong or hostile. These limits
//! are what keeps a bad one from exhausting memory, time or the stack before validation
//! has said a word about it. [`crate::runtime::definition::load::load_str_with`] checks the text size
//! before parsing and everything else right after, so a definition over a limit is refused
//! with a [`LimitError`] that names the limit, where it was broken, the limit's value and
//! the value found; nothing is validated or run.
//!
//! The parsers cap nesting themselves, counted over the whole document (the definition
//! object is level 1, a `params` object level 4): JSON at 128 (`serde_json`'s fixed
//! recursion limit), YAML at
//! [`YAML_MAX_DEPTH`]. Deeper input is a syntax error whatever
//! [`DefinitionLimits::max_nesting_depth`] says, and never a stack overflow.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::runtime::definition::{JsonObject, WorkflowDefinition};

/// One mebibyte.
const MIB: usize = 1024 * 1024;

/// The deepest nesting YAML may have: room for the default `params` depth (64) and the
/// four levels above it, with a margin. The YAML deserializer recurses once per level and
/// its frames are large in unoptimised builds (about 17 KiB a level in a debug build, 2 to
/// 3 KiB in release): 80 levels stay well inside a 2 MiB thread stack in either.
pub const YAML_MAX_DEPTH: usize = 80;

/// What a definition may be. Every field has a default; a configuration names only what it
/// changes (`{"maxNodes": 1000}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct DefinitionLimits {
    /// Largest definition text, in bytes (default 16 MiB). Checked before parsing.
    pub max_definition_bytes: usize,
    /// Most actions (nodes) in one definition (default 200,000).
    pub max_nodes: usize,
    /// Most edges in one definition (default 1,000,000). For a version 1 definition, whose
    /// edges are derived, the count is that of its `dependsOn` entries plus its
    /// `inputMappings`, which bounds the edges derived from them.
    pub max_edges: usize,
    /// Longest string anywhere in the definition, object keys included, in bytes
    /// (default 1 MiB).
    pub max_string_bytes: usize,
    /// Deepest nesting of a `params`, `inputOverrides` or runner-options object (default
    /// 64). The object itself is level 1, so `{"a": {"b": 1}}` is 2 deep.
    pub max_nesting_depth: usize,
    /// Largest output of one node attempt, in bytes of JSON (default 16 MiB). Not a check
    /// on the definition: the runtime enforces it on what components return.
    pub max_output_bytes: usize,
}

impl Default for DefinitionLimits {
    fn default() -> Self {
        DefinitionLimits {
            max_definition_bytes: 16 * MIB,
            max_nodes: 200_000,
            max_edges: 1_000_000,
            max_string_bytes: MIB,
            max_nesting_depth: 64,
            max_output_bytes: 16 * MIB,
        }
    }
}

/// Which limit a definition broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`DefinitionLimits::max_definition_bytes`].
    DefinitionBytes,
    /// [`DefinitionLimits::max_nodes`].
    Nodes,
    /// [`DefinitionLimits::max_edges`].
    Edges,
    /// [`DefinitionLimits::max_string_bytes`].
    StringBytes,
    /// [`DefinitionLimits::max_nesting_depth`].
    NestingDepth,
    /// [`DefinitionLimits::max_output_bytes`].
    OutputBytes,
}

impl Limit {
    /// The limit's name in a configuration, e.g. `maxNodes`.
    pub fn setting(self) -> &'static str {
        match self {
            Limit::DefinitionBytes => "maxDefinitionBytes",
            Limit::Nodes => "maxNodes",
            Limit::Edges => "maxEdges",
            Limit::StringBytes => "maxStringBytes",
            Limit::NestingDepth => "maxNestingDepth",
            Limit::OutputBytes => "maxOutputBytes",
        }
    }

    /// What is measured, as words.
    pub fn measure(self) -> &'static str {
        match self {
            Limit::DefinitionBytes => "definition size in bytes",
            Limit::Nodes => "number of nodes",
            Limit::Edges => "number of edges",
            Limit::StringBytes => "string length in bytes",
            Limit::NestingDepth => "nesting depth",
            Limit::OutputBytes => "output size in bytes",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.setting())
    }
}

/// A definition over one of its limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct LimitError {
    /// The limit broken.
    pub what: Limit,
    /// Where, e.g. `actions[3].params.blob`; `(top level)` for the whole definition.
    pub path: String,
    /// The limit's value.
    pub limit: u64,
    /// The value found (for a depth, the depth reached when the check stopped).
    pub actual: u64,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} is {}, over the limit {} = {}",
            self.path,
            self.what.measure(),
            self.actual,
            self.what.setting(),
            self.limit
        )
    }
}

/// Where a check applies to the definition as a whole.
const TOP_LEVEL: &str = "(top level)";

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl DefinitionLimits {
    /// Checks the size of a definition's text; run it before parsing.
    ///
    /// # Errors
    /// [`LimitError`] for [`Limit::DefinitionBytes`].
    pub fn check_text(&self, text: &str) -> Result<(), LimitError> {
        self.check_len(
            text.len(),
            self.max_definition_bytes,
            Limit::DefinitionBytes,
            || TOP_LEVEL.to_owned(),
        )
    }

    /// Checks a parsed definition: node and edge counts, then every string's length and the
    /// nesting depth of every JSON object it carries. Reports the first limit broken.
    ///
    /// # Errors
    /// [`LimitError`] naming the limit, where, and the value found.
    pub fn check(&self, def: &WorkflowDefinition) -> Result<(), LimitError> {
        self.check_counts(def)?;
        self.check_strings(def)
    }

    /// Checks the size of one node's output (for the runtime).
    ///
    /// # Errors
    /// [`LimitError`] for [`Limit::OutputBytes`], at `node_ref`.
    pub fn check_output(&self, node_ref: &str, bytes: usize) -> Result<(), LimitError> {
        self.check_len(bytes, self.max_output_bytes, Limit::OutputBytes, || {
            node_ref.to_owned()
        })
    }

    fn check_len(
        &self,
        actual: usize,
        limit: usize,
        what: Limit,
        path: impl FnOnce() -> String,
    ) -> Result<(), LimitError> {
        if actual > limit {
            return Err(LimitError {
                what,
                path: path(),
                limit: as_u64(limit),
                actual: as_u64(actual),
            });
        }
        Ok(())
    }

    fn check_counts(&self, def: &WorkflowDefinition) -> Result<(), LimitError> {
        let nodes = def.actions.len();
        self.check_len(nodes, self.max_nodes, Limit::Nodes, || "actions".to_owned())?;
        self.check_len(def.nodes.len(), self.max_nodes, Limit::Nodes, || {
            "nodes".to_owned()
        })?;
        if let Some(counts) = &def.dependency_counts {
            self.check_len(counts.len(), self.max_nodes, Limit::Nodes, || {
                "dependencyCounts".to_owned()
            })?;
        }
        match &def.edges {
            Some(edges) => {
                self.check_len(edges.len(), self.max_edges, Limit::Edges, || {
                    "edges".to_owned()
                })?;
            }
            None => {
                let derived = def
                    .actions
                    .iter()
                    .map(|a| a.depends_on.as_ref().map_or(0, Vec::len) + a.input_mappings.len())
                    .fold(0usize, usize::saturating_add);
                self.check_len(derived, self.max_edges, Limit::Edges, || {
                    "actions[*].dependsOn+inputMappings".to_owned()
                })?;
            }
        }
        // dependsOn lists are not edges in version 2 but are as long as a node's parents.
        for (i, a) in def.actions.iter().enumerate() {
            if let Some(depends) = &a.depends_on {
                self.check_len(depends.len(), self.max_edges, Limit::Edges, || {
                    format!("actions[{i}].dependsOn")
                })?;
            }
        }
        Ok(())
    }

    fn string(&self, s: &str, path: impl FnOnce() -> String) -> Result<(), LimitError> {
        self.check_len(s.len(), self.max_string_bytes, Limit::StringBytes, path)
    }

    fn opt_string(
        &self,
        s: Option<&String>,
        path: impl FnOnce() -> String,
    ) -> Result<(), LimitError> {
        s.map_or(Ok(()), |s| self.string(s, path))
    }

    fn check_strings(&self, def: &WorkflowDefinition) -> Result<(), LimitError> {
        self.string(&def.title, || "title".to_owned())?;
        self.opt_string(def.description.as_ref(), || "description".to_owned())?;
        if let Some(e) = &def.entrypoint {
            self.string(&e.node_ref, || "entrypoint.ref".to_owned())?;
        }
        for (key, meta) in &def.nodes {
            let at = |field: &str| format!("nodes.{}.{field}", short(key));
            self.string(key, || format!("nodes.{}", short(key)))?;
            self.string(&meta.node_ref, || at("ref"))?;
            self.opt_string(meta.label.as_ref(), || at("label"))?;
            self.opt_string(meta.group_id.as_ref(), || at("groupId"))?;
            self.opt_string(meta.stream_id.as_ref(), || at("streamId"))?;
            if let Some(tc) = &meta.tool_config {
                for (j, s) in tc.bound_input_ids.iter().enumerate() {
                    self.string(s, || at(&format!("toolConfig.boundInputIds[{j}]")))?;
                }
                for (j, s) in tc.exposed_input_ids.iter().enumerate() {
                    self.string(s, || at(&format!("toolConfig.exposedInputIds[{j}]")))?;
                }
            }
            for (j, s) in meta.connected_tool_node_ids.iter().flatten().enumerate() {
                self.string(s, || at(&format!("connectedToolNodeIds[{j}]")))?;
            }
        }
        for (i, e) in def.edges.iter().flatten().enumerate() {
            let at = |field: &str| format!("edges[{i}].{field}");
            self.opt_string(e.id.as_ref(), || at("id"))?;
            self.string(&e.source_ref, || at("sourceRef"))?;
            self.string(&e.target_ref, || at("targetRef"))?;
            self.opt_string(e.source_handle.as_ref(), || at("sourceHandle"))?;
            self.opt_string(e.target_handle.as_ref(), || at("targetHandle"))?;
        }
        for key in def.dependency_counts.iter().flat_map(|c| c.keys()) {
            self.string(key, || format!("dependencyCounts.{}", short(key)))?;
        }
        for (i, a) in def.actions.iter().enumerate() {
            let at = |field: &str| format!("actions[{i}].{field}");
            self.string(&a.node_ref, || at("ref"))?;
            self.string(&a.component_id, || at("componentId"))?;
            self.object(&a.params, || at("params"))?;
            self.object(&a.input_overrides, || at("inputOverrides"))?;
            for (j, s) in a.depends_on.iter().flatten().enumerate() {
                self.string(s, || at(&format!("dependsOn[{j}]")))?;
            }
            for (name, m) in &a.input_mappings {
                let mpath = || at(&format!("inputMappings.{}", short(name)));
                self.string(name, mpath)?;
                self.string(&m.source_ref, || format!("{}.sourceRef", mpath()))?;
                self.string(&m.source_handle, || format!("{}.sourceHandle", mpath()))?;
            }
            if let Some(r) = &a.retry_policy {
                for (j, s) in r.non_retryable_error_types.iter().flatten().enumerate() {
                    self.string(s, || {
                        at(&format!("retryPolicy.nonRetryableErrorTypes[{j}]"))
                    })?;
                }
                for key in r.error_type_policies.iter().flat_map(|p| p.keys()) {
                    self.string(key, || {
                        at(&format!("retryPolicy.errorTypePolicies.{}", short(key)))
                    })?;
                }
            }
            if let Some(runner) = &a.runner {
                self.object(&runner.options, || at("runner"))?;
            }
        }
        let c = &def.config;
        self.opt_string(c.environment.as_ref(), || "config.environment".to_owned())
    }

    /// Walks a JSON object without recursion: every key and string within the string limit,
    /// the nesting within the depth limit (the object itself is level 1).
    fn object(&self, object: &JsonObject, path: impl Fn() -> String) -> Result<(), LimitError> {
        if object.is_empty() {
            return Ok(());
        }
        // Each entry: the value, its depth, and how to name it (parent entry + step).
        enum Step<'a> {
            Key(&'a str),
            Index(usize),
        }
        struct Entry<'a> {
            value: &'a Value,
            depth: usize,
            parent: usize,
            step: Step<'a>,
        }
        let mut entries: Vec<Entry<'_>> = Vec::new();
        let mut todo: Vec<usize> = Vec::new();
        let name = |entries: &[Entry<'_>], mut at: usize| {
            let mut steps = Vec::new();
            while at != usize::MAX {
                let e = &entries[at];
                steps.push(match e.step {
                    Step::Key(k) => format!(".{}", short(k)),
                    Step::Index(i) => format!("[{i}]"),
                });
                at = e.parent;
            }
            steps.reverse();
            format!("{}{}", path(), steps.concat())
        };
        for (k, v) in object {
            self.string(k, || format!("{}.{}", path(), short(k)))?;
            entries.push(Entry {
                value: v,
                depth: 1,
                parent: usize::MAX,
                step: Step::Key(k),
            });
            todo.push(entries.len() - 1);
        }
        while let Some(at) = todo.pop() {
            let (value, depth) = (entries[at].value, entries[at].depth);
            match value {
                Value::String(s) => self.string(s, || name(&entries, at))?,
                Value::Array(items) if !items.is_empty() => {
                    self.depth(depth + 1, || name(&entries, at))?;
                    for (i, v) in items.iter().enumerate() {
                        entries.push(Entry {
                            value: v,
                            depth: depth + 1,
                            parent: at,
                            step: Step::Index(i),
                        });
                        todo.push(entries.len() - 1);
                    }
                }
                Value::Object(map) if !map.is_empty() => {
                    self.depth(depth + 1, || name(&entries, at))?;
                    for (k, v) in map {
                        self.string(k, || format!("{}.{}", name(&entries, at), short(k)))?;
                        entries.push(Entry {
                            value: v,
                            depth: depth + 1,
                            parent: at,
                            step: Step::Key(k),
                        });
                        todo.push(entries.len() - 1);
                    }
                }
                // An empty array or object is one level, like a scalar inside its parent.
                Value::Array(_) | Value::Object(_) => {
                    self.depth(depth + 1, || name(&entries, at))?;
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        Ok(())
    }

    fn depth(&self, depth: usize, path: impl FnOnce() -> String) -> Result<(), LimitError> {
        self.check_len(depth, self.max_nesting_depth, Limit::NestingDepth, path)
    }
}

/// A key as it appears in a path: cut short when long, so that an error about a 1 MiB key
/// does not repeat the key.
fn short(key: &str) -> String {
    const MAX: usize = 64;
    if key.len() <= MAX {
        return key.to_owned();
    }
    let mut end = MAX;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end])
}

/// The length of `value` as JSON, counted without keeping the text; `None` once it
/// passes `limit` (the serialisation stops there).
pub fn json_len_within<T: Serialize + ?Sized>(value: &T, limit: usize) -> Option<usize> {
    struct Counter {
        bytes: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { bytes: 0, limit };
    // JSON values and the engine's records always serialise: only the limit stops it.
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::definition::parse::{Format, parse_definition};
    use serde_json::json;

    fn def(value: Value) -> WorkflowDefinition {
        parse_definition(&value.to_string(), Format::Json).expect("test definition parses")
    }

    fn one_action(params: Value) -> WorkflowDefinition {
        def(json!({"title": "t", "actions": [
            {"ref": "a", "componentId": "core.echo", "params": params}
        ]}))
    }

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let l = DefinitionLimits::default();
        assert_eq!(l.max_definition_bytes, 16 * 1024 * 1024);
        assert_eq!(l.max_nodes, 200_000);
        assert_eq!(l.max_edges, 1_000_000);
        assert_eq!(l.max_string_bytes, 1024 * 1024);
        assert_eq!(l.max_nesting_depth, 64);
        assert_eq!(l.max_output_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn limits_deserialize_camel_case_with_defaults() {
        let l: DefinitionLimits = serde_json::from_value(json!({"maxNodes": 5})).unwrap();
        assert_eq!(l.max_nodes, 5);
        assert_eq!(l.max_edges, 1_000_000);
        assert!(serde_json::from_value::<DefinitionLimits>(json!({"maxNode": 5})).is_err());
        let back = serde_json::to_value(DefinitionLimits::default()).unwrap();
        assert_eq!(back["maxNestingDepth"], 64);
    }

    #[test]
    fn text_size_is_checked() {
        let l = DefinitionLimits {
            max_definition_bytes: 4,
            ..DefinitionLimits::default()
        };
        assert!(l.check_text("1234").is_ok());
        let e = l.check_text("12345").unwrap_err();
        assert_eq!((e.what, e.limit, e.actual), (Limit::DefinitionBytes, 4, 5));
        assert_eq!(
            e.to_string(),
            "(top level): definition size in bytes is 5, over the limit maxDefinitionBytes = 4"
        );
    }

    #[test]
    fn depth_counts_the_object_as_level_one() {
        let l = DefinitionLimits {
            max_nesting_depth: 3,
            ..DefinitionLimits::default()
        };
        // params (1) -> x: [ (2) -> [ (3) -> 1
        assert!(l.check(&one_action(json!({"x": nested(2)}))).is_ok());
        let e = l.check(&one_action(json!({"x": nested(3)}))).unwrap_err();
        assert_eq!((e.what, e.limit, e.actual), (Limit::NestingDepth, 3, 4));
        assert_eq!(e.path, "actions[0].params.x[0][0]");
        let e = l
            .check(&one_action(json!({"x": {"y": {"z": {}}}})))
            .unwrap_err();
        assert_eq!(e.path, "actions[0].params.x.y.z");
    }

    #[test]
    fn long_strings_and_keys_are_found_anywhere() {
        let l = DefinitionLimits {
            max_string_bytes: 10,
            ..DefinitionLimits::default()
        };
        assert!(l.check(&one_action(json!({"k": "1234567890"}))).is_ok());
        let e = l
            .check(&one_action(json!({"k": [1, {"deep": "12345678901"}]})))
            .unwrap_err();
        assert_eq!(e.path, "actions[0].params.k[1].deep");
        assert_eq!((e.what, e.limit, e.actual), (Limit::StringBytes, 10, 11));
        let e = l
            .check(&one_action(json!({"k": {"12345678901": 1}})))
            .unwrap_err();
        assert_eq!(e.path, "actions[0].params.k.12345678901");
        let e = l
            .check(&def(json!({"title": "a title too long", "actions": []})))
            .unwrap_err();
        assert_eq!(e.path, "title");
    }

    #[test]
    fn node_and_edge_counts_are_checked() {
        let l = DefinitionLimits {
            max_nodes: 2,
            max_edges: 1,
            ..DefinitionLimits::default()
        };
        let actions: Vec<Value> = (0..3)
            .map(|i| json!({"ref": format!("n{i}"), "componentId": "core.echo"}))
            .collect();
        let e = l
            .check(&def(json!({"title": "t", "actions": actions})))
            .unwrap_err();
        assert_eq!((e.what, e.limit, e.actual), (Limit::Nodes, 2, 3));
        assert_eq!(e.path, "actions");
        let e = l
            .check(&def(
                json!({"title": "t", "actions": actions[..2], "edges": [
                    {"sourceRef": "n0", "targetRef": "n1"},
                    {"sourceRef": "n0", "targetRef": "n1"}
                ]}),
            ))
            .unwrap_err();
        assert_eq!((e.what, e.limit, e.actual), (Limit::Edges, 1, 2));
        let e = l
            .check(&def(json!({"version": 1, "title": "t", "actions": [
                {"ref": "a", "componentId": "core.echo"},
                {"ref": "b", "componentId": "core.echo", "dependsOn": ["a", "a"]}
            ]})))
            .unwrap_err();
        assert_eq!(e.what, Limit::Edges);
    }
}
