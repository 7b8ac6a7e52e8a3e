//! The built-in components (documented in docs/semantics.md): entrypoint, echo, sleep, fail, flaky,
//! branch, and `core.process` from [`super::process`]. Each is a unit struct with its metadata and an `execute` that only
//! reads its context. Waiting is always cancellable through the context's token.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::runtime::components::manual::ManualAction;
use crate::runtime::components::process::Process;
use crate::runtime::components::registry::{ComponentMeta, InputKind};
use crate::runtime::components::{
    Component, ComponentError, ComponentOutput, ComponentResult, ExecutionContext,
};
use crate::runtime::definition::JsonObject;

/// Error type of `core.fail` when `errorType` is not given.
pub const DEFAULT_FAIL_TYPE: &str = "ComponentError";
/// Error type of a `core.flaky` failure.
pub const FLAKY_ERROR: &str = "FlakyError";
/// Error type of a cancelled attempt.
pub const CANCELLED_ERROR: &str = "CancelledError";

/// Every built-in, ready to register.
pub fn all() -> Vec<Arc<dyn Component>> {
    vec![
        Arc::new(Entrypoint),
        Arc::new(Echo),
        Arc::new(Sleep),
        Arc::new(Fail),
        Arc::new(Flaky),
        Arc::new(Branch),
        Arc::new(Process::default()),
        Arc::new(ManualAction::APPROVAL),
        Arc::new(ManualAction::FORM),
        Arc::new(ManualAction::SELECTION),
    ]
}

/// Params merged with inputs, inputs winning: the output of `core.echo`.
fn echo_output(ctx: &ExecutionContext, skip: &[&str]) -> JsonObject {
    let mut out: JsonObject = ctx
        .params
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in ctx.inputs.iter() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Reads a non-negative integer value (param or input) named `name`.
pub(super) fn u64_value(ctx: &ExecutionContext, name: &str) -> Result<Option<u64>, ComponentError> {
    match ctx.value(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ComponentError::fatal(
                crate::runtime::components::VALIDATION_ERROR,
                format!("`{name}` must be a non-negative integer, got {v}"),
            )
        }),
    }
}

/// Waits `ms` milliseconds unless the attempt is cancelled first.
async fn cancellable_wait(ctx: &ExecutionContext, ms: u64) -> Result<(), ComponentError> {
    if ms == 0 {
        return Ok(());
    }
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
        () = ctx.cancel.cancelled() => Err(cancelled()),
    }
}

pub(super) fn cancelled() -> ComponentError {
    ComponentError::fatal(CANCELLED_ERROR, "the attempt was cancelled")
}

macro_rules! meta {
    ($name:ident, $build:expr) => {
        static $name: LazyLock<ComponentMeta> = LazyLock::new(|| $build);
    };
}

/// `core.workflow.entrypoint`: outputs the run's inputs.
#[derive(Debug, Clone, Copy)]
pub struct Entrypoint;
meta!(
    ENTRYPOINT,
    ComponentMeta::new(
        "core.workflow.entrypoint",
        "outputs the run's inputs, checked against `runtimeInputs`"
    )
    .optional("runtimeInputs")
);

/// A runtime input declared by an entrypoint's `params.runtimeInputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInput {
    /// Input id.
    pub id: String,
    /// Whether the run must be given it.
    pub required: bool,
}

/// Reads `runtimeInputs: [{id, required?}]` from an entrypoint's params.
pub fn declared_runtime_inputs(params: &JsonObject) -> Vec<RuntimeInput> {
    let Some(Value::Array(items)) = params.get("runtimeInputs") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let id = item.get("id")?.as_str()?.to_owned();
            let required = item
                .get("required")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            Some(RuntimeInput { id, required })
        })
        .collect()
}

/// The declared required runtime inputs missing from `inputs`.
pub fn missing_runtime_inputs(params: &JsonObject, inputs: &JsonObject) -> Vec<String> {
    declared_runtime_inputs(params)
        .into_iter()
        .filter(|d| d.required && !inputs.contains_key(&d.id))
        .map(|d| d.id)
        .collect()
}

impl Component for Entrypoint {
    fn meta(&self) -> &ComponentMeta {
        &ENTRYPOINT
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        async move {
            let missing = missing_runtime_inputs(&ctx.params, &ctx.inputs);
            if !missing.is_empty() {
                return Err(ComponentError::input(format!(
                    "missing required runtime inputs: {}",
                    missing.join(", ")
                )));
            }
            Ok(ComponentOutput::new((*ctx.inputs).clone()))
        }
        .boxed()
    }
}

/// `core.echo`: outputs its params merged with its inputs (inputs win).
#[derive(Debug, Clone, Copy)]
pub struct Echo;
meta!(
    ECHO,
    ComponentMeta::new("core.echo", "outputs its params merged with its inputs")
);

impl Component for Echo {
    fn meta(&self) -> &ComponentMeta {
        &ECHO
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        std::future::ready(Ok(ComponentOutput::new(echo_output(&ctx, &[])))).boxed()
    }
}

/// `core.sleep`: waits `ms` (cancellable), then echoes its other params and inputs.
#[derive(Debug, Clone, Copy)]
pub struct Sleep;
meta!(
    SLEEP,
    ComponentMeta::new("core.sleep", "waits `ms` milliseconds, then echoes")
        .required("ms")
        .taking(MILLIS)
);

/// What a wait in milliseconds takes: up to a year.
const MILLIS: InputKind = InputKind::Count {
    max: 365 * 86_400_000,
};

impl Component for Sleep {
    fn meta(&self) -> &ComponentMeta {
        &SLEEP
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        async move {
            let ms = u64_value(&ctx, "ms")?.unwrap_or(0);
            cancellable_wait(&ctx, ms).await?;
            Ok(ComponentOutput::new(echo_output(&ctx, &["ms"])))
        }
        .boxed()
    }
}

/// `core.fail`: waits `ms` (default 0), then fails with `message`.
#[derive(Debug, Clone, Copy)]
pub struct Fail;
meta!(
    FAIL,
    ComponentMeta::new("core.fail", "waits `ms`, then fails with `message`")
        .optional("ms")
        .taking(MILLIS)
        .optional("message")
        .optional("retryable")
        .optional("errorType")
);

impl Component for Fail {
    fn meta(&self) -> &ComponentMeta {
        &FAIL
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        async move {
            let ms = u64_value(&ctx, "ms")?.unwrap_or(0);
            cancellable_wait(&ctx, ms).await?;
            let message = ctx
                .value("message")
                .and_then(Value::as_str)
                .unwrap_or("core.fail failed as asked");
            let error_type = ctx
                .value("errorType")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_FAIL_TYPE);
            let retryable = ctx
                .value("retryable")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Err(ComponentError {
                error_type: error_type.to_owned(),
                message: message.to_owned(),
                retryable,
                lost: false,
            })
        }
        .boxed()
    }
}

/// `core.flaky`: fails (retryable) on attempts `1..=failures`, then echoes.
#[derive(Debug, Clone, Copy)]
pub struct Flaky;
meta!(
    FLAKY,
    ComponentMeta::new(
        "core.flaky",
        "fails its first `failures` attempts, then echoes"
    )
    .required("failures")
);

impl Component for Flaky {
    fn meta(&self) -> &ComponentMeta {
        &FLAKY
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        let result = u64_value(&ctx, "failures").and_then(|failures| {
            if u64::from(ctx.attempt) <= failures.unwrap_or(0) {
                Err(ComponentError::retryable(
                    FLAKY_ERROR,
                    format!("attempt {} fails as asked", ctx.attempt),
                ))
            } else {
                Ok(ComponentOutput::new(echo_output(&ctx, &[])))
            }
        });
        std::future::ready(result).boxed()
    }
}

/// `core.branch`: echoes and activates the ports in `ports` (or input `port`).
#[derive(Debug, Clone, Copy)]
pub struct Branch;
meta!(
    BRANCH,
    ComponentMeta::new("core.branch", "echoes and activates the listed ports")
        .optional("ports")
        .optional("port")
);

pub(super) fn port_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

impl Component for Branch {
    fn meta(&self) -> &ComponentMeta {
        &BRANCH
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        let chosen = ctx
            .inputs
            .get("port")
            .or_else(|| ctx.params.get("ports"))
            .or_else(|| ctx.params.get("port"));
        let result = match chosen.map(port_list) {
            Some(Some(ports)) => Ok(ComponentOutput {
                output: echo_output(&ctx, &[]),
                active_ports: Some(ports),
            }),
            Some(None) => Err(ComponentError::fatal(
                crate::runtime::components::VALIDATION_ERROR,
                "`ports` must be a string or a list of strings",
            )),
            None => Ok(ComponentOutput {
                output: echo_output(&ctx, &[]),
                active_ports: Some(Vec::new()),
            }),
        };
        std::future::ready(result).boxed()
    }
}
