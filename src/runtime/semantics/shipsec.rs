//! ShipSec Studio's in-band conventions, which the engine honours so that ShipSec's
//! definitions and components behave here as they do on its own scheduler
//! (`docs/shipsec.md` lists every rule and every deliberate difference):
//!
//! - a **tool-mode** node (`nodes.<ref>.mode: tool`) is registered as a tool of the agent
//!   it feeds, not executed: it completes with [`tool_registered`];
//! - a component output `{success: false, error?}` is a **reported failure**: the node
//!   stays COMPLETED, and the run ends FAILED once the DAG has finished
//!   ([`reported_failure`], [`run_failure_message`]);
//! - an output that is a **spill marker** (`{__spilled__: true, storageRef, ...}`, put in
//!   place of an output too large to carry) passes through untouched; a mapping that
//!   selects one handle of it gets the marker with `__spilled_handle__` added
//!   ([`select_handle`]), and the component host fetches and selects.
//!
//! Pure functions over JSON; the actors and [`crate::runtime::semantics::inputs`] call them.

use serde_json::{Value, json};

use crate::runtime::components::ComponentOutput;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::SELF_HANDLE;

/// The ports a registered tool node activates: `default` (its ordinary children) and
/// `tools` (the agent it is wired to).
pub const TOOL_PORTS: [&str; 2] = ["default", "tools"];

/// Key of a spill marker that says it is one.
pub const SPILLED: &str = "__spilled__";
/// Key of a spill marker naming where the full output is stored.
pub const STORAGE_REF: &str = "storageRef";
/// Key added to a spill marker to say which handle of the stored output a mapping wants.
pub const SPILLED_HANDLE: &str = "__spilled_handle__";

/// What a tool-mode node completes with: `{mode: "tool", status: "ready", tools: []}` on
/// the ports [`TOOL_PORTS`], so the agent it feeds runs.
///
/// Registering the tool with the agent is an orchestration callback that arrives with
/// remote workers; until then it is a no-op, and `tools` is empty.
pub fn tool_registered() -> ComponentOutput {
    let Value::Object(output) = json!({"mode": "tool", "status": "ready", "tools": []}) else {
        unreachable!("a JSON object literal is an object")
    };
    ComponentOutput {
        output,
        active_ports: Some(TOOL_PORTS.iter().map(|p| (*p).to_owned()).collect()),
    }
}

/// The message of a reported failure: `Some` when `output.success` is `false` — its
/// `error` when that is a non-blank string, else `Component reported failure`.
pub fn reported_failure(output: &JsonObject) -> Option<String> {
    if output.get("success") != Some(&Value::Bool(false)) {
        return None;
    }
    let message = match output.get("error") {
        Some(Value::String(e)) if !e.trim().is_empty() => e.clone(),
        _ => "Component reported failure".to_owned(),
    };
    Some(message)
}

/// The run's error when nodes reported failures: `Workflow failed: [a] x; [b] y`, in the
/// order the nodes completed (ShipSec's wording).
pub fn run_failure_message<'a>(reported: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let details: Vec<String> = reported
        .into_iter()
        .map(|(node, message)| format!("[{node}] {message}"))
        .collect();
    format!("Workflow failed: {}", details.join("; "))
}

/// Whether `output` is a spill marker: `__spilled__` is `true` and `storageRef` a string.
pub fn is_spill_marker(output: &JsonObject) -> bool {
    output.get(SPILLED) == Some(&Value::Bool(true))
        && output.get(STORAGE_REF).is_some_and(Value::is_string)
}

/// What a mapping of `handle` takes from a spill marker: the whole marker for
/// `__self__`, else the marker with `__spilled_handle__: handle` added.
pub fn select_handle(marker: &JsonObject, handle: &str) -> Value {
    let mut value = marker.clone();
    if handle != SELF_HANDLE {
        value.insert(SPILLED_HANDLE.to_owned(), Value::String(handle.to_owned()));
    }
    Value::Object(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::runtime::definition::object;

    #[test]
    fn tool_registration_is_ready_on_default_and_tools() {
        let out = tool_registered();
        assert_eq!(
            Value::Object(out.output),
            json!({"mode": "tool", "status": "ready", "tools": []})
        );
        assert_eq!(
            out.active_ports,
            Some(vec!["default".into(), "tools".into()])
        );
    }

    #[test]
    fn only_success_false_is_a_reported_failure() {
        assert_eq!(reported_failure(&object(json!({"success": true}))), None);
        assert_eq!(reported_failure(&object(json!({"success": "false"}))), None);
        assert_eq!(reported_failure(&object(json!({"error": "x"}))), None);
        assert_eq!(
            reported_failure(&object(json!({"success": false, "error": "quota"}))).as_deref(),
            Some("quota")
        );
        for blank in [
            json!({"success": false}),
            json!({"success": false, "error": "  "}),
            json!({"success": false, "error": 3}),
        ] {
            assert_eq!(
                reported_failure(&object(blank)).as_deref(),
                Some("Component reported failure")
            );
        }
    }

    #[test]
    fn run_failure_message_lists_nodes_in_the_order_given() {
        let msg = run_failure_message([("scan", "quota"), ("notify", "down")]);
        assert_eq!(msg, "Workflow failed: [scan] quota; [notify] down");
    }

    #[test]
    fn a_spill_marker_needs_the_flag_and_a_string_storage_ref() {
        assert!(is_spill_marker(&object(
            json!({"__spilled__": true, "storageRef": "f1", "originalSize": 9})
        )));
        assert!(!is_spill_marker(&object(json!({"__spilled__": true}))));
        assert!(!is_spill_marker(&object(
            json!({"__spilled__": 1, "storageRef": "f1"})
        )));
        assert!(!is_spill_marker(&object(
            json!({"__spilled__": true, "storageRef": 7})
        )));
    }

    #[test]
    fn a_selected_handle_travels_with_the_marker() {
        let marker = object(json!({"__spilled__": true, "storageRef": "f1", "originalSize": 9}));
        assert_eq!(
            select_handle(&marker, SELF_HANDLE),
            Value::Object(marker.clone())
        );
        assert_eq!(
            select_handle(&marker, "hosts"),
            json!({"__spilled__": true, "storageRef": "f1", "originalSize": 9,
                   "__spilled_handle__": "hosts"})
        );
    }
}
