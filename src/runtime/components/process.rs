//! `core.process`: the process runner. A command (argv, no shell) in a clean
//! environment, the attempt's inputs as JSON on stdin, its output capped, and its whole
//! process group killed when the attempt ends, however it ends.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, LazyLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::components::builtin::{cancelled, port_list, u64_value};
use crate::runtime::components::ledger::ProcessLedger;
use crate::runtime::components::registry::{ComponentMeta, InputKind};
use crate::runtime::components::{
    Component, ComponentError, ComponentOutput, ComponentResult, ExecutionContext,
};
use crate::runtime::definition::{JsonObject, RunnerKindDef};
use crate::runtime::guardrails::service::ProcessPolicy;

/// Error type of a `core.process` that exits non-zero or cannot start.
pub const PROCESS_ERROR: &str = "ProcessError";

/// `core.process`: runs `command` (an argv list) with the inputs as JSON on stdin.
///
/// - **No shell.** `command[0]` is executed with `command[1..]` as its arguments; a shell
///   runs only when `command[0]` is one (`["sh", "-c", "..."]`).
/// - **A clean environment.** The child gets `PATH` (this process's), its attempt's
///   `SHIPSEC_RUN_ID`, `SHIPSEC_NODE_REF`, `SHIPSEC_ATTEMPT` and `SHIPSEC_ATTEMPT_ID`
///   (the attempt's idempotency key) and nothing else,
///   plus the variables of the optional `env: {NAME: value}` param (strings, numbers or
///   booleans; `null` removes the variable, `PATH` included).
/// - **Capped output.** stdout and stderr are each read up to `maxOutputBytes` (default
///   [`DEFAULT_MAX_PROCESS_OUTPUT`], never above the engine's `limits.maxOutputBytes`);
///   one byte more stops the reading, fails the attempt with a
///   [`PROCESS_ERROR`] (`stdout exceeded 4194304 bytes`) and kills the process group.
/// - **No orphans.** The child leads its own process group, and the whole group is killed
///   (`SIGKILL`) when the attempt is cancelled, when its future is dropped (a timeout, the
///   node ending, its actor dying) and when the leader exits, which takes along whatever it
///   left running in the background. The child itself is killed when this process dies,
///   even by kill -9 (`PR_SET_PDEATHSIG`). What it started in the background outlives a
///   kill -9 of this process; with a [`ProcessLedger`] (`shipsec serve`, `run` and
///   `resume` with a journal, `shipsec worker`) the next process to open the ledger kills
///   it before any attempt is retried. A descendant that moves itself to another process
///   group or session escapes the group kill, but not the ledger's sweep.
///
/// The output is `{stdout, stderr, exitCode}`, `stdout` parsed as JSON when it is JSON. A
/// non-zero exit or a death by signal fails the attempt (not retryable) with the end of
/// stderr in the message.
#[derive(Debug, Clone, Default)]
pub struct Process {
    ledger: Option<Arc<ProcessLedger>>,
}

impl Process {
    /// `core.process` recording each attempt in `ledger` while its child runs.
    pub fn recording(ledger: Arc<ProcessLedger>) -> Process {
        Process {
            ledger: Some(ledger),
        }
    }
}
static PROCESS: LazyLock<ComponentMeta> = LazyLock::new(|| {
    ComponentMeta::new("core.process", "runs an argv command with inputs on stdin")
        .required("command")
        .optional("env")
        .optional("maxOutputBytes")
        .taking(InputKind::Count { max: u64::MAX })
        .runner(RunnerKindDef::Process)
});

/// The default cap on each of a `core.process` child's stdout and stderr: 4 MiB.
pub const DEFAULT_MAX_PROCESS_OUTPUT: u64 = 4 * 1024 * 1024;

/// The most of stderr quoted in the message of a failed process.
const STDERR_IN_MESSAGE: usize = 4096;

impl Component for Process {
    fn meta(&self) -> &ComponentMeta {
        &PROCESS
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        run_process(ctx, self.ledger.clone()).boxed()
    }
}

/// `core.process` as a server runs it for its clients: every command and environment is
/// checked against the configuration's [`ProcessPolicy`] as the attempt starts (the
/// check at submission cannot see commands that arrive through inputs). A refused
/// command fails the attempt with a `PermissionError`, not retried, and starts nothing.
#[derive(Debug, Clone)]
pub struct RestrictedProcess {
    policy: Arc<ProcessPolicy>,
    ledger: Option<Arc<ProcessLedger>>,
}

impl RestrictedProcess {
    /// `core.process` within `policy`.
    pub fn new(policy: ProcessPolicy) -> RestrictedProcess {
        RestrictedProcess {
            policy: Arc::new(policy),
            ledger: None,
        }
    }

    /// The same, recording each attempt in `ledger` while its child runs.
    #[must_use]
    pub fn recording(self, ledger: Arc<ProcessLedger>) -> RestrictedProcess {
        RestrictedProcess {
            ledger: Some(ledger),
            ..self
        }
    }
}

/// The error type of a command the policy refuses.
pub const PERMISSION_ERROR: &str = "PermissionError";

impl Component for RestrictedProcess {
    fn meta(&self) -> &ComponentMeta {
        &PROCESS
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        let (policy, ledger) = (self.policy.clone(), self.ledger.clone());
        async move {
            check_policy(&policy, &ctx)?;
            run_process(ctx, ledger).await
        }
        .boxed()
    }
}

/// Whether the command and environment of a `core.process` attempt are within `policy`
/// (as [`RestrictedProcess`] checks them, and the coordinator before an attempt leaves
/// for a worker).
///
/// # Errors
/// A `PermissionError` (not retried) naming what is refused, or the `ValidationError` of
/// a command that is not a list of strings.
pub fn check_policy(policy: &ProcessPolicy, ctx: &ExecutionContext) -> Result<(), ComponentError> {
    let argv = argv(ctx)?;
    let env: Vec<String> = match ctx.value("env") {
        Some(Value::Object(env)) => env.keys().cloned().collect(),
        _ => Vec::new(),
    };
    policy
        .check(&argv, env.iter().map(String::as_str))
        .map_err(|refused| ComponentError::fatal(PERMISSION_ERROR, refused.to_string()))
}

fn invalid(message: impl Into<String>) -> ComponentError {
    ComponentError::fatal(crate::runtime::components::VALIDATION_ERROR, message)
}

fn argv(ctx: &ExecutionContext) -> Result<Vec<String>, ComponentError> {
    let bad = || invalid("`command` must be a non-empty list of strings");
    let list = ctx.value("command").and_then(port_list).ok_or_else(bad)?;
    if list.is_empty() {
        return Err(bad());
    }
    Ok(list)
}

/// The child's environment: `PATH`, then the `env` param (`None` values unset).
fn environment(ctx: &ExecutionContext) -> Result<Vec<(String, Option<String>)>, ComponentError> {
    let mut vars = vec![
        ("PATH".to_owned(), std::env::var("PATH").ok()),
        ("SHIPSEC_RUN_ID".to_owned(), Some(ctx.run_id.to_string())),
        (
            "SHIPSEC_NODE_REF".to_owned(),
            Some(ctx.node_ref.to_string()),
        ),
        ("SHIPSEC_ATTEMPT".to_owned(), Some(ctx.attempt.to_string())),
        (
            "SHIPSEC_ATTEMPT_ID".to_owned(),
            Some(ctx.attempt_id().into()),
        ),
    ];
    let given = match ctx.value("env") {
        None | Some(Value::Null) => return Ok(vars),
        Some(Value::Object(given)) => given,
        Some(other) => return Err(invalid(format!("`env` must be an object, got {other}"))),
    };
    for (name, value) in given {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(invalid(format!(
                "`env` names must be non-empty, without `=` or NUL: {name:?}"
            )));
        }
        let value = match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                return Err(invalid(format!(
                    "`env.{name}` must be a string, a number, a boolean or null, got {other}"
                )));
            }
        };
        if value.as_ref().is_some_and(|v| v.contains('\0')) {
            return Err(invalid(format!("`env.{name}` must not contain NUL")));
        }
        vars.retain(|(n, _)| n != name);
        vars.push((name.clone(), value));
    }
    Ok(vars)
}

/// Kills a child's whole process group when dropped: at the end of the attempt, whichever
/// way it ends, and when the attempt's future is dropped mid-run.
#[derive(Debug)]
struct GroupGuard {
    pgid: Option<libc::pid_t>,
}

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.pgid.filter(|&p| p > 1) {
            // SAFETY: killpg only sends a signal. While the leader is unreaped (a cancel, a
            // dropped future) the group id cannot be reused. After it is reaped the group id
            // stays taken while any member lives; an empty group answers ESRCH, and its id
            // could only name another group after the pid space had wrapped in between.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end, failing once it has given more than `cap` bytes.
async fn read_capped<R>(
    pipe: Option<R>,
    cap: u64,
    name: &'static str,
) -> Result<Vec<u8>, ComponentError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    let Some(pipe) = pipe else { return Ok(buf) };
    pipe.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .await
        .map_err(|e| ComponentError::retryable(PROCESS_ERROR, format!("reading {name}: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(ComponentError::fatal(
            PROCESS_ERROR,
            format!("{name} exceeded {cap} bytes"),
        ));
    }
    Ok(buf)
}

/// Writes the inputs to the child's stdin and closes it. A child that exits or closes its
/// stdin without reading it all is not an error.
async fn feed(pipe: Option<tokio::process::ChildStdin>, bytes: Vec<u8>) {
    if let Some(mut pipe) = pipe {
        let _ = pipe.write_all(&bytes).await;
        let _ = pipe.shutdown().await;
    }
}

async fn run_process(ctx: ExecutionContext, ledger: Option<Arc<ProcessLedger>>) -> ComponentResult {
    let argv = argv(&ctx)?;
    let env = environment(&ctx)?;
    // Written down before the child starts, crossed out after its group is killed (it is
    // declared before `group`, so dropped after it).
    let _entry =
        match &ledger {
            Some(ledger) => Some(ledger.enter(ctx.attempt_id().as_str()).map_err(|e| {
                ComponentError::retryable(PROCESS_ERROR, format!("cannot start: {e}"))
            })?),
            None => None,
        };
    // Never more than the engine keeps of an output: reading stops (and the group is
    // killed) there, not after buffering all the child writes.
    let cap = u64_value(&ctx, "maxOutputBytes")?
        .unwrap_or(DEFAULT_MAX_PROCESS_OUTPUT)
        .min(ctx.output_limit as u64);
    let stdin = serde_json::to_vec(&ctx.inputs).unwrap_or_default();
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut command);
    for (name, value) in &env {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    let mut child = command.spawn().map_err(|e| {
        ComponentError::fatal(PROCESS_ERROR, format!("cannot start `{}`: {e}", argv[0]))
    })?;
    // Declared after `child`, so dropped (the group killed) before the child is.
    let group = GroupGuard {
        pgid: child.id().and_then(|p| libc::pid_t::try_from(p).ok()),
    };
    let (pipe_in, pipe_out, pipe_err) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let io = async {
        let (_, stdout, stderr) = tokio::try_join!(
            async {
                feed(pipe_in, stdin).await;
                Ok(())
            },
            read_capped(pipe_out, cap, "stdout"),
            read_capped(pipe_err, cap, "stderr"),
        )?;
        Ok::<_, ComponentError>((stdout, stderr))
    };
    let run = async {
        tokio::pin!(io);
        // Whichever ends first: the pipes (then the exit follows), or the leader (then what
        // it left in its group is killed, which closes the pipes it held).
        let status = tokio::select! {
            biased;
            output = &mut io => {
                let output = output?;
                return Ok((wait(&mut child).await?, output));
            }
            status = child.wait() => status,
        };
        let status = status.map_err(waiting_failed)?;
        group.kill();
        Ok::<_, ComponentError>((status, io.await?))
    };
    let (status, (stdout, stderr)) = tokio::select! {
        result = run => result?,
        () = ctx.cancel.cancelled() => return Err(cancelled()),
    };
    drop(group);
    process_result(status, &stdout, &stderr)
}

/// Has the child killed (`SIGKILL`) when the process that started it dies, however it
/// dies (a kill -9 included), so that no attempt keeps running beside its retry after a
/// restart: Linux's `PR_SET_PDEATHSIG`, set in the child before it executes its program.
/// It fires when the thread that spawned the child ends; attempts are spawned from the
/// runtime's worker threads, which live as long as the process.
fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid); it allocates nothing.
    let parent = std::process::id();
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between the fork and the prctl: nobody is left to wait.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

async fn wait(child: &mut tokio::process::Child) -> Result<ExitStatus, ComponentError> {
    child.wait().await.map_err(waiting_failed)
}

fn waiting_failed(e: std::io::Error) -> ComponentError {
    ComponentError::retryable(PROCESS_ERROR, format!("waiting failed: {e}"))
}

/// The end of `text`, at most `max` bytes of it, cut at a character boundary.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

fn process_result(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> ComponentResult {
    let stdout = String::from_utf8_lossy(stdout).into_owned();
    let stderr = String::from_utf8_lossy(stderr).into_owned();
    let code = status.code();
    if !status.success() {
        let how = match (code, status.signal()) {
            (Some(c), _) => format!("exited with {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => "ended abnormally".to_owned(),
        };
        return Err(ComponentError::fatal(
            PROCESS_ERROR,
            format!("process {how}: {}", tail(stderr.trim(), STDERR_IN_MESSAGE)),
        ));
    }
    let parsed = serde_json::from_str::<Value>(&stdout).unwrap_or(Value::String(stdout));
    let mut out = JsonObject::new();
    out.insert("stdout".into(), parsed);
    out.insert("stderr".into(), Value::String(stderr));
    out.insert("exitCode".into(), code.map_or(Value::Null, Value::from));
    Ok(ComponentOutput::new(out))
}
