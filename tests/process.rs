//! `core.process`: argv only, a clean environment, capped output, and no orphans.
//!
//! Most cases call the component directly with a hand-made context; the orphan cases run a
//! shell that leaves two `sleep 30` behind it as a node of a real run, end the run by a
//! timeout, a cancel or a terminate, and then look in `/proc` for any process left in the
//! shell's process group. The shell writes its pid (its group id: the child leads its own
//! group) and the sleepers' pids to a file named in its argv once the sleepers are started.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::components::builtin::CANCELLED_ERROR;
use shipsec_orchestrator::runtime::components::process::{
    DEFAULT_MAX_PROCESS_OUTPUT, PROCESS_ERROR, Process,
};
use shipsec_orchestrator::runtime::components::{
    Component, ComponentResult, ExecutionContext, Placement, VALIDATION_ERROR,
};
use shipsec_orchestrator::runtime::definition::JsonObject;
use shipsec_orchestrator::runtime::semantics::event::EventType;
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

fn context(params: Value, inputs: Value, cancel: CancellationToken) -> ExecutionContext {
    ExecutionContext {
        run_id: "run".into(),
        node_ref: "proc".into(),
        attempt: 1,
        params: Arc::new(object(params)),
        inputs: Arc::new(object(inputs)),
        triggered_by: Arc::from(Vec::new()),
        failure: None,
        cancel,
        placement: Placement::default(),
        output_limit: 16 << 20,
    }
}

/// Runs `core.process` with these params and inputs.
async fn process(params: Value, inputs: Value) -> ComponentResult {
    Process::default()
        .execute(context(params, inputs, CancellationToken::new()))
        .await
}

async fn output(params: Value, inputs: Value) -> JsonObject {
    match process(params, inputs).await {
        Ok(out) => out.output,
        Err(e) => panic!("expected the process to succeed, got {e}"),
    }
}

/// A file under the system temp dir, unique to this test; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("shipsec-process-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A shell that starts two `sleep 30` in the background, writes `$$ pid1 pid2` to `$1`, then
/// waits for them.
fn orphan_maker(pid_file: &TempFile) -> Value {
    json!([
        "sh",
        "-c",
        r#"sleep 30 & a=$!; sleep 30 & b=$!; echo "$$ $a $b" > "$1.tmp" && mv "$1.tmp" "$1"; wait"#,
        "sh",
        pid_file.arg()
    ])
}

/// Waits for the pid file (written once the sleepers are started) and reads it.
async fn pids(file: &Path) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            let pids: Vec<i32> = text
                .split_whitespace()
                .map(|p| p.parse().expect("a pid"))
                .collect();
            assert_eq!(pids.len(), 3, "pid file: {text:?}");
            return pids;
        }
        assert!(Instant::now() < deadline, "the shell never wrote {file:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `(pid, pgid, state)` of every process, from `/proc/*/stat`.
fn processes() -> Vec<(i32, i32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // ended while we looked
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(state), Some(pgid)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let (Some(state), Ok(pgid)) = (state.chars().next(), pgid.parse()) else {
            continue;
        };
        found.push((pid, pgid, state));
    }
    found
}

/// Live (not zombie) processes of group `pgid`, or among `pids`.
fn alive(pgid: i32, pids: &[i32]) -> Vec<(i32, i32, char)> {
    processes()
        .into_iter()
        .filter(|&(pid, group, state)| (group == pgid || pids.contains(&pid)) && state != 'Z')
        .collect()
}

/// Asserts that every process of the group dies within a moment (SIGKILL is delivered at
/// once, but a process leaves `/proc` or turns zombie only when the kernel has run it down).
async fn assert_no_survivors(pids: &[i32]) {
    let pgid = pids[0];
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = alive(pgid, pids);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of group {pgid} outlived the attempt: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn process_node(command: Value) -> Value {
    json!({"ref": "proc", "componentId": "core.process", "params": {"command": command}})
}

// ---------------------------------------------------------------------------------------
// What a process does
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn json_through_cat_comes_back_parsed() {
    let inputs = json!({"target": "example.org", "ports": [22, 443], "deep": {"ok": true}});
    let out = output(json!({"command": ["cat"]}), inputs.clone()).await;
    assert_eq!(out["stdout"], inputs);
    assert_eq!(out["stderr"], "");
    assert_eq!(out["exitCode"], 0);
    // Text that is not JSON stays text.
    let out = output(json!({"command": ["echo", "not json"]}), json!({})).await;
    assert_eq!(out["stdout"], "not json\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_through_cat_in_a_run() {
    let mut cat = process_node(json!(["cat"]));
    cat["inputMappings"] = json!({"payload": {"sourceRef": "src", "sourceHandle": "__self__"}});
    let f = common::run(json!({
        "title": "cat",
        "actions": [
            {"ref": "src", "componentId": "core.echo", "params": {"msg": "hi", "n": 3}},
            cat
        ],
        "edges": [{"sourceRef": "src", "targetRef": "proc"}]
    }))
    .await;
    assert_eq!(f.result.status, RunStatus::Completed, "{:#?}", f.result);
    assert_eq!(
        f.output("proc")["stdout"],
        json!({"payload": {"msg": "hi", "n": 3}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_input_through_cat_does_not_deadlock() {
    // Far more than a pipe holds: stdin is written while stdout is read.
    let blob = "x".repeat(3 * 1024 * 1024);
    let started = Instant::now();
    let out = output(json!({"command": ["cat"]}), json!({"blob": blob})).await;
    assert_eq!(
        out["stdout"]["blob"].as_str().map(str::len),
        Some(blob.len())
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_zero_exit_fails_with_stderr_in_the_message() {
    let command = json!(["sh", "-c", "echo 'scan failed: no route' >&2; exit 3"]);
    let e = process(json!({"command": command}), json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.error_type, PROCESS_ERROR);
    assert!(!e.retryable);
    assert_eq!(e.message, "process exited with 3: scan failed: no route");
    let e = process(json!({"command": ["sh", "-c", "kill -9 $$"]}), json!({}))
        .await
        .unwrap_err();
    assert!(
        e.message.starts_with("process was killed by signal 9"),
        "{e}"
    );
    // Only the end of a long stderr is quoted.
    let command = json!([
        "sh",
        "-c",
        "head -c 100000 /dev/zero | tr '\\0' a >&2; echo END >&2; exit 1"
    ]);
    let e = process(json!({"command": command}), json!({}))
        .await
        .unwrap_err();
    assert!(e.message.len() < 5_000, "{} bytes", e.message.len());
    assert!(
        e.message.ends_with("aaaEND"),
        "{}",
        &e.message[e.message.len() - 20..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn argv_is_not_a_shell_command() {
    // One argument, spaces, `;` and `$` included: nothing is interpreted.
    let arg = "a; echo injected $HOME `id`";
    let out = output(json!({"command": ["echo", arg]}), json!({})).await;
    assert_eq!(out["stdout"], format!("{arg}\n"));
    let e = process(json!({"command": ["no-such-program-xyz"]}), json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.error_type, PROCESS_ERROR);
    assert!(
        e.message.starts_with("cannot start `no-such-program-xyz`"),
        "{e}"
    );
    for bad in [json!([]), json!({"a": 1}), json!([1, 2])] {
        let e = process(json!({"command": bad}), json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.error_type, VALIDATION_ERROR);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_is_path_and_the_given_variables_only() {
    // The test runs under cargo, with dozens of variables: none of them reaches the child.
    assert!(std::env::vars().count() > 3);
    // Its attempt's identity, and nothing else of ours.
    let attempt = [
        "SHIPSEC_RUN_ID=run",
        "SHIPSEC_NODE_REF=proc",
        "SHIPSEC_ATTEMPT=1",
        "SHIPSEC_ATTEMPT_ID=run/proc/1",
    ];
    let env_of = |out: JsonObject| -> BTreeSet<String> {
        let text = out["stdout"].as_str().expect("env prints text").to_owned();
        text.lines()
            .filter(|l| !attempt.contains(l))
            .map(str::to_owned)
            .collect()
    };
    let out = output(json!({"command": ["env"]}), json!({})).await;
    let stdout = out["stdout"].as_str().unwrap_or_default().to_owned();
    for var in attempt {
        assert!(stdout.lines().any(|l| l == var), "{var} missing: {stdout}");
    }
    let path = std::env::var("PATH").expect("the test has a PATH");
    assert_eq!(env_of(out), BTreeSet::from([format!("PATH={path}")]));
    let params = json!({"command": ["env"], "env": {"TOKEN": "s3cret", "N": 5, "DEBUG": true}});
    let out = output(params, json!({})).await;
    assert_eq!(
        env_of(out),
        BTreeSet::from([
            format!("PATH={path}"),
            "TOKEN=s3cret".to_owned(),
            "N=5".to_owned(),
            "DEBUG=true".to_owned()
        ])
    );
    // `PATH` may be replaced or removed like any other.
    let params = json!({"command": ["/usr/bin/env"], "env": {"PATH": "/nowhere"}});
    assert_eq!(
        env_of(output(params, json!({})).await),
        BTreeSet::from(["PATH=/nowhere".to_owned()])
    );
    let params = json!({"command": ["/usr/bin/env"], "env": {"PATH": null}});
    assert_eq!(env_of(output(params, json!({})).await), BTreeSet::new());
    for bad in [
        json!({"A": [1]}),
        json!({"A=B": "x"}),
        json!({"": "x"}),
        json!({"A": "nul\u{0}"}),
        json!(["A"]),
    ] {
        let e = process(json!({"command": ["env"], "env": bad}), json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.error_type, VALIDATION_ERROR, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn output_past_the_cap_fails_the_attempt() {
    assert_eq!(DEFAULT_MAX_PROCESS_OUTPUT, 4 * 1024 * 1024);
    let head = |n: u64| json!(["head", "-c", n.to_string(), "/dev/zero"]);
    // The default cap: 4 MiB exactly is fine, one byte more is not.
    let out = output(
        json!({"command": head(DEFAULT_MAX_PROCESS_OUTPUT)}),
        json!({}),
    )
    .await;
    assert_eq!(out["stdout"].as_str().map(str::len), Some(4 * 1024 * 1024));
    let e = process(
        json!({"command": head(DEFAULT_MAX_PROCESS_OUTPUT + 1)}),
        json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.error_type, PROCESS_ERROR);
    assert_eq!(e.message, "stdout exceeded 4194304 bytes");
    assert!(!e.retryable);
    // A cap of its own, on stderr too.
    let e = process(
        json!({"command": head(1001), "maxOutputBytes": 1000}),
        json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.message, "stdout exceeded 1000 bytes");
    let command = json!(["sh", "-c", "head -c 2000 /dev/zero >&2"]);
    let e = process(
        json!({"command": command, "maxOutputBytes": 1000}),
        json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.message, "stderr exceeded 1000 bytes");
    let e = process(
        json!({"command": ["true"], "maxOutputBytes": -1}),
        json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.error_type, VALIDATION_ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_output_is_cut_off_and_its_group_killed() {
    let file = TempFile::new("endless");
    let command = json!([
        "sh",
        "-c",
        r#"sleep 30 & a=$!; sleep 30 & b=$!; echo "$$ $a $b" > "$1"; yes"#,
        "sh",
        file.arg()
    ]);
    let started = Instant::now();
    let e = process(
        json!({"command": command, "maxOutputBytes": 100000}),
        json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.message, "stdout exceeded 100000 bytes");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_no_survivors(&pids(&file.0).await).await;
}

// ---------------------------------------------------------------------------------------
// No orphans
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn background_children_die_with_a_leader_that_exits() {
    let file = TempFile::new("leader-exits");
    let command = json!([
        "sh",
        "-c",
        r#"sleep 30 & a=$!; sleep 30 & b=$!; echo "$$ $a $b" > "$1"; echo '{"done": true}'"#,
        "sh",
        file.arg()
    ]);
    let started = Instant::now();
    let out = output(json!({"command": command}), json!({})).await;
    assert_eq!(out["stdout"], json!({"done": true}));
    // The sleepers held stdout open: the attempt did not wait for them.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_no_survivors(&pids(&file.0).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_node_leaves_no_process_behind() {
    let file = TempFile::new("timeout");
    let started = Instant::now();
    let f = common::run(json!({
        "title": "orphans",
        "nodes": {"proc": {"ref": "proc", "timeoutSeconds": 1}},
        "actions": [process_node(orphan_maker(&file))]
    }))
    .await;
    assert_eq!(f.status("proc"), NodeStatus::Failed, "{:#?}", f.result);
    assert_eq!(f.error_type("proc"), "TimeoutError");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the run waited for the sleepers"
    );
    let pids = pids(&file.0).await;
    assert_no_survivors(&pids).await;
}

/// Starts the orphan maker in a run, waits until its sleepers run, then stops the run.
async fn stop_mid_run(name: &str, terminate: bool) {
    let file = TempFile::new(name);
    let handle = common::engine().await;
    let definition = common::definition(json!({
        "title": "orphans",
        "actions": [process_node(orphan_maker(&file))]
    }));
    let mut run = handle
        .submit(definition, JsonObject::new(), Default::default())
        .await
        .expect("submit");
    let mut events = handle.events(run.run_id()).await.expect("events");
    while let Some(ev) = events.next().await {
        if ev.kind == EventType::Started {
            break;
        }
    }
    let pids = pids(&file.0).await;
    assert_eq!(
        alive(pids[0], &pids).len(),
        3,
        "the shell and its two sleepers run"
    );
    if terminate {
        handle.terminate(run.run_id()).await.expect("terminate");
    } else {
        handle.cancel(run.run_id()).await.expect("cancel");
    }
    let result = run.result().await.expect("result");
    common::shutdown(&handle).await;
    let expected = if terminate {
        RunStatus::Terminated
    } else {
        RunStatus::Cancelled
    };
    assert_eq!(result.status, expected);
    assert_no_survivors(&pids).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_leaves_no_process_behind() {
    stop_mid_run("cancel", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_run_leaves_no_process_behind() {
    stop_mid_run("terminate", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_attempt_kills_the_group() {
    let file = TempFile::new("drop");
    let mut attempt = Process::default().execute(context(
        json!({"command": orphan_maker(&file)}),
        json!({}),
        CancellationToken::new(),
    ));
    let pids = tokio::select! {
        result = &mut attempt => panic!("the shell ended early: {result:?}"),
        pids = pids(&file.0) => pids,
    };
    assert_eq!(alive(pids[0], &pids).len(), 3);
    drop(attempt);
    assert_no_survivors(&pids).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_attempt_returns_at_once_and_kills_the_group() {
    let file = TempFile::new("token");
    let token = CancellationToken::new();
    let attempt = tokio::spawn(Process::default().execute(context(
        json!({"command": orphan_maker(&file)}),
        json!({}),
        token.clone(),
    )));
    let pids = pids(&file.0).await;
    let started = Instant::now();
    token.cancel();
    let e = attempt.await.expect("no panic").unwrap_err();
    assert_eq!(e.error_type, CANCELLED_ERROR);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_no_survivors(&pids).await;
}
