//! Input resolution (docs/semantics.md §3): a node's inputs are its `inputOverrides`, then every
//! mapping whose source COMPLETED, mapped values winning. A completed source without the
//! mapped handle, or a required input left without a value, is an `InputError` — never a
//! silent null. A parent whose output is a spill marker hands it on with the selected
//! handle named ([`crate::runtime::semantics::shipsec::select_handle`]). A tool-mode node is not
//! executed, so its required inputs are not checked. Pure: the caller supplies the
//! parents' outputs.

use serde_json::Value;

use crate::runtime::components::ComponentError;
use crate::runtime::components::registry::ComponentMeta;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{Node, NodeIx, NodeMode, SELF_HANDLE};
use crate::runtime::semantics::shipsec;

/// What a parent left for its children.
#[derive(Debug, Clone, Copy)]
pub enum ParentOutput<'a> {
    /// The parent completed with this output.
    Completed(&'a JsonObject),
    /// The parent ended otherwise, or had not ended when the join fired.
    Absent,
}

/// Resolves the inputs of `node`. `output(ix)` tells what parent `ix` left; `extra` are
/// values merged after the overrides (the run's inputs, for the entrypoint).
///
/// # Errors
/// An `InputError` naming the input and its source.
pub fn resolve_inputs<'a>(
    node: &Node,
    meta: Option<&ComponentMeta>,
    extra: Option<&JsonObject>,
    output: impl Fn(NodeIx) -> ParentOutput<'a>,
    node_ref: impl Fn(NodeIx) -> &'a str,
) -> Result<JsonObject, ComponentError> {
    let mut inputs = node.input_overrides.clone();
    if let Some(extra) = extra {
        inputs.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for m in &node.input_mappings {
        let ParentOutput::Completed(out) = output(m.source) else {
            continue;
        };
        let value = if m.source_handle == SELF_HANDLE {
            Value::Object(out.clone())
        } else if shipsec::is_spill_marker(out) {
            shipsec::select_handle(out, &m.source_handle)
        } else {
            out.get(&m.source_handle).cloned().ok_or_else(|| {
                ComponentError::input(format!(
                    "input `{}`: `{}` completed but its output has no `{}`",
                    m.target,
                    node_ref(m.source),
                    m.source_handle
                ))
            })?
        };
        inputs.insert(m.target.clone(), value);
    }
    if let Some(meta) = meta.filter(|_| node.mode == NodeMode::Normal) {
        for spec in meta.required_inputs() {
            let given = inputs.contains_key(spec.name)
                || (spec.from_params && node.params.contains_key(spec.name));
            if !given {
                let from = node
                    .input_mappings
                    .iter()
                    .find(|m| m.target == spec.name)
                    .map(|m| format!(" (its source `{}` did not complete)", node_ref(m.source)))
                    .unwrap_or_default();
                return Err(ComponentError::input(format!(
                    "required input `{}` has no value{from}",
                    spec.name
                )));
            }
        }
    }
    Ok(inputs)
}
