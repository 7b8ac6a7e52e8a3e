//! The built-in human-input gates of ShipSec's definitions: `core.manual_action.approval`,
//! `core.manual_action.form` and `core.manual_action.selection`. They do no waiting: each
//! returns the pending marker of [`crate::runtime::semantics::gate`] built from its params
//! and inputs, and the engine turns the node into a gate. They read no clock either: the
//! `timeout` param travels in the marker and the engine counts it from when the request is
//! made.
//!
//! Params (ShipSec's): `title` and `description` with `{{var}}` interpolation from params
//! and inputs; `timeout` as `<n>m`, `<n>h` or `<n>d`; a form's `schema` (a JSON schema
//! object); a selection's `options` (strings, or `{label, value}`) and `multiple`. The
//! node's inputs travel as the request's `contextData`.

use std::sync::LazyLock;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::runtime::components::registry::ComponentMeta;
use crate::runtime::components::{
    Component, ComponentError, ComponentOutput, ComponentResult, ExecutionContext, VALIDATION_ERROR,
};
use crate::runtime::definition::JsonObject;
use crate::runtime::semantics::gate::{InputType, interpolate, parse_timeout};

/// A human-input gate component of one kind.
#[derive(Debug, Clone, Copy)]
pub struct ManualAction(InputType);

static APPROVAL: LazyLock<ComponentMeta> = LazyLock::new(|| {
    ComponentMeta::new(
        "core.manual_action.approval",
        "waits for a person to approve or reject",
    )
    .optional("title")
    .optional("description")
    .optional("timeout")
});

static FORM: LazyLock<ComponentMeta> = LazyLock::new(|| {
    ComponentMeta::new(
        "core.manual_action.form",
        "waits for a person to fill a form",
    )
    .optional("title")
    .optional("description")
    .optional("timeout")
    .optional("schema")
});

static SELECTION: LazyLock<ComponentMeta> = LazyLock::new(|| {
    ComponentMeta::new(
        "core.manual_action.selection",
        "waits for a person to pick among options",
    )
    .optional("title")
    .optional("description")
    .optional("timeout")
    .required("options")
    .optional("multiple")
});

impl ManualAction {
    /// `core.manual_action.approval`.
    pub const APPROVAL: ManualAction = ManualAction(InputType::Approval);
    /// `core.manual_action.form`.
    pub const FORM: ManualAction = ManualAction(InputType::Form);
    /// `core.manual_action.selection`.
    pub const SELECTION: ManualAction = ManualAction(InputType::Selection);

    /// The pending marker this gate returns for `params` and `inputs`.
    ///
    /// # Errors
    /// A `ValidationError` naming the param that is wrong.
    pub fn marker(
        self,
        params: &JsonObject,
        inputs: &JsonObject,
    ) -> Result<JsonObject, ComponentError> {
        let text = |name: &str| -> Result<Option<String>, ComponentError> {
            match params.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(interpolate(s, params, inputs))),
                Some(v) => Err(invalid(name, format!("must be a string, got {v}"))),
            }
        };
        let title = text("title")?.unwrap_or_else(|| self.default_title().to_owned());
        let description = text("description")?;
        let timeout = match params.get("timeout") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => {
                parse_timeout(t).map_err(|e| invalid("timeout", e.to_string()))?;
                Some(t.clone())
            }
            Some(v) => {
                return Err(invalid(
                    "timeout",
                    format!("must be a string such as `4h`, got {v}"),
                ));
            }
        };
        let mut marker = JsonObject::new();
        marker.insert("pending".into(), Value::Bool(true));
        marker.insert("inputType".into(), json!(self.0.as_str()));
        marker.insert("title".into(), Value::String(title));
        if let Some(d) = description {
            marker.insert("description".into(), Value::String(d));
        }
        if let Some(t) = timeout {
            marker.insert("timeout".into(), Value::String(t));
        }
        if !inputs.is_empty() {
            marker.insert("contextData".into(), Value::Object(inputs.clone()));
        }
        if let Some(schema) = self.schema(params)? {
            marker.insert("inputSchema".into(), schema);
        }
        Ok(marker)
    }

    fn default_title(self) -> &'static str {
        match self.0 {
            InputType::Form => "Input required",
            InputType::Selection => "Selection required",
            _ => "Approval required",
        }
    }

    /// A form's JSON schema, or a selection's `{options: [{label, value}], multiple}`.
    fn schema(self, params: &JsonObject) -> Result<Option<Value>, ComponentError> {
        match self.0 {
            InputType::Form => match params.get("schema") {
                None | Some(Value::Null) => Ok(None),
                Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
                Some(v) => Err(invalid(
                    "schema",
                    format!("must be a JSON schema object, got {v}"),
                )),
            },
            InputType::Selection => {
                let options = selection_options(params.get("options"))?;
                let multiple = match params.get("multiple") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => {
                        return Err(invalid(
                            "multiple",
                            format!("must be true or false, got {v}"),
                        ));
                    }
                };
                Ok(Some(json!({"options": options, "multiple": multiple})))
            }
            _ => Ok(None),
        }
    }
}

/// `options` as `[{label, value}]`: each a string (its own label) or `{label?, value}`,
/// values distinct.
fn selection_options(options: Option<&Value>) -> Result<Vec<Value>, ComponentError> {
    let Some(Value::Array(items)) = options else {
        return Err(invalid(
            "options",
            format!(
                "must be a list of options, got {}",
                options.map_or("nothing".to_owned(), Value::to_string)
            ),
        ));
    };
    if items.is_empty() {
        return Err(invalid("options", "must list at least one option".into()));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (label, value) = match item {
            Value::String(s) => (s.clone(), s.clone()),
            Value::Object(o) => match o.get("value") {
                Some(Value::String(v)) => {
                    let label = match o.get("label") {
                        Some(Value::String(l)) => l.clone(),
                        _ => v.clone(),
                    };
                    (label, v.clone())
                }
                _ => {
                    return Err(invalid(
                        &format!("options[{i}].value"),
                        "must be a string".into(),
                    ));
                }
            },
            other => {
                return Err(invalid(
                    &format!("options[{i}]"),
                    format!("must be a string or {{label, value}}, got {other}"),
                ));
            }
        };
        if !seen.insert(value.clone()) {
            return Err(invalid(
                &format!("options[{i}].value"),
                format!("`{value}` is listed twice"),
            ));
        }
        out.push(json!({"label": label, "value": value}));
    }
    Ok(out)
}

fn invalid(param: &str, problem: String) -> ComponentError {
    ComponentError::fatal(VALIDATION_ERROR, format!("params.{param} {problem}"))
}

impl Component for ManualAction {
    fn meta(&self) -> &ComponentMeta {
        match self.0 {
            InputType::Form => &FORM,
            InputType::Selection => &SELECTION,
            _ => &APPROVAL,
        }
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        let result = self
            .marker(&ctx.params, &ctx.inputs)
            .map(ComponentOutput::new);
        std::future::ready(result).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::semantics::gate::PendingInput;

    use crate::runtime::definition::object;

    #[test]
    fn an_approval_interpolates_its_texts_and_carries_its_inputs_as_context() {
        let params = object(json!({
            "title": "Patch {{host}}?", "description": "{{count}} findings", "timeout": "4h"
        }));
        let inputs = object(json!({"host": "db1", "count": 3}));
        let marker = ManualAction::APPROVAL.marker(&params, &inputs).unwrap();
        assert_eq!(
            Value::Object(marker.clone()),
            json!({
                "pending": true, "inputType": "approval", "title": "Patch db1?",
                "description": "3 findings", "timeout": "4h",
                "contextData": {"host": "db1", "count": 3}
            })
        );
        let input = PendingInput::from_output(&marker).unwrap().unwrap();
        assert_eq!(
            input.timeout(),
            Some(std::time::Duration::from_secs(14_400))
        );
    }

    #[test]
    fn a_selection_lists_its_options_and_a_form_its_schema() {
        let params = object(json!({
            "options": ["low", {"label": "High", "value": "high"}], "multiple": true
        }));
        let marker = ManualAction::SELECTION
            .marker(&params, &JsonObject::new())
            .unwrap();
        assert_eq!(
            marker["inputSchema"],
            json!({"options": [{"label": "low", "value": "low"}, {"label": "High", "value": "high"}], "multiple": true})
        );
        assert_eq!(marker["title"], "Selection required");
        let schema = json!({"type": "object", "required": ["reason"]});
        let marker = ManualAction::FORM
            .marker(&object(json!({"schema": schema})), &JsonObject::new())
            .unwrap();
        assert_eq!(marker["inputSchema"], schema);
    }

    #[test]
    fn bad_params_fail_with_their_path() {
        for (gate, params, path) in [
            (
                ManualAction::APPROVAL,
                json!({"timeout": "5s"}),
                "params.timeout",
            ),
            (ManualAction::APPROVAL, json!({"title": 3}), "params.title"),
            (ManualAction::FORM, json!({"schema": "x"}), "params.schema"),
            (ManualAction::SELECTION, json!({}), "params.options"),
            (
                ManualAction::SELECTION,
                json!({"options": []}),
                "params.options",
            ),
            (
                ManualAction::SELECTION,
                json!({"options": [1]}),
                "params.options[0]",
            ),
            (
                ManualAction::SELECTION,
                json!({"options": ["a", "a"]}),
                "params.options[1].value",
            ),
            (
                ManualAction::SELECTION,
                json!({"options": ["a"], "multiple": "yes"}),
                "params.multiple",
            ),
        ] {
            let err = gate
                .marker(&object(params.clone()), &JsonObject::new())
                .expect_err(&params.to_string());
            assert_eq!(err.error_type, VALIDATION_ERROR);
            assert!(!err.retryable);
            assert!(
                err.message.starts_with(&format!("{path} ")),
                "{params}: {}",
                err.message
            );
        }
    }
}
