//! What a careless operator or a hostile environment does to the processes: stdout whose
//! reader went away, a disk that fills under the journal, tokens too short for a port
//! other hosts reach.
//!
//! - `serve` and `worker` with their stdout closed: SIGTERM drains and exits 0.
//! - A journal on a 4 MiB tmpfs (in a mount namespace of the test's own) filled until a
//!   write fails: `/readyz` answers 503 `JOURNAL_UNAVAILABLE` with the reason, a
//!   submission is refused with the same code, the run that was in flight is reported
//!   failed by the journal (not by a component), and no answer carries a storage
//!   library's debug text.
//! - A short API token on a non-loopback listener: refused at start (exit 2).
//! - kill -9 of `serve`, and of `shipsec worker`, while a `core.process` child runs: the
//!   child dies with its parent.
//! - The same with a child that left processes in the background: they outlive the kill,
//!   and the restarted server (or the next worker) kills them before the lost attempt
//!   runs again, once; a lock those processes hold shows no two copies of the node ever
//!   ran at once.

mod serve_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use serve_common::{Addr, Client, binary, scratch};

/// Waits (at most two minutes) for `child` to exit; its code.
fn exit_code(mut child: Child) -> Option<i32> {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().map(|s| s.code()));
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(code) => code.unwrap(),
        Err(_) => {
            // SAFETY: kill only sends a signal to the process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("process {pid} did not exit within two minutes");
        }
    }
}

fn terminate(child: &Child) {
    // SAFETY: kill only sends a signal to the process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

/// Reads `child`'s stdout until a line starting with `last`; every line read. The pipe's
/// reading end is closed when this returns.
fn read_until(child: &mut Child, last: &str) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with(last);
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

#[test]
fn serve_and_worker_drain_and_exit_0_when_their_stdout_is_gone() {
    let dir = scratch("stdout-gone");
    let mut server = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--worker-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("SHIPSEC_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = read_until(&mut server, "ready:");
    let workers = lines
        .iter()
        .find_map(|l| l.strip_prefix("serving workers on "))
        .expect("the server serves workers")
        .to_owned();
    let mut worker = Command::new(binary())
        .args(["worker", "--coordinator", &format!("http://{workers}")])
        .args(["--id", "w1", "--slots", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    read_until(&mut worker, "registered as ");
    // Both readers are gone: every status line from now on meets a closed pipe.
    terminate(&worker);
    assert_eq!(exit_code(worker), Some(0), "the worker exits 0");
    terminate(&server);
    assert_eq!(exit_code(server), Some(0), "the server exits 0");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_short_token_is_refused_on_a_listener_other_hosts_reach() {
    let dir = scratch("weak-token");
    let out = Command::new(binary())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("SHIPSEC_API_TOKEN", "short")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("shorter than 16 bytes"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether this process may make a mount namespace and mount a tmpfs in it.
fn can_mount() -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_server_unready_and_refuse_work_with_a_stable_code() {
    if !can_mount() {
        assert!(
            std::env::var_os("SHIPSEC_REQUIRE_NAMESPACES").is_none(),
            "this test needs root (a mount namespace and a tmpfs)"
        );
        eprintln!("skipped: cannot make a mount namespace here (needs root)");
        return;
    }
    let dir = scratch("full-disk");
    let data = dir.join("tmpfs");
    std::fs::create_dir_all(&data).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs '{}' && exec '{}' serve --listen 127.0.0.1:0 --data-dir '{}/data' --durability process",
        data.display(),
        binary().display(),
        data.display()
    );
    let mut server = Killed(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .env_remove("SHIPSEC_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let lines = read_until(&mut server.0, "ready:");
    let addr = lines
        .iter()
        .find_map(|l| l.strip_prefix("listening on http://"))
        .expect("the server listens")
        .to_owned();
    let client = Client {
        addr: Addr::Tcp(addr),
        token: None,
    };
    assert_eq!(client.get("/readyz").await.status, 200);
    // A run that waits while the disk fills, then a stream of large submissions.
    let waiting = json!({"title": "in flight", "actions": [
        {"ref": "wait", "componentId": "core.sleep", "params": {"ms": 2000}},
        {"ref": "after", "componentId": "core.echo", "params": {"text": "done"}}
    ], "edges": [{"sourceRef": "wait", "targetRef": "after"}]});
    let in_flight = serve_common::start_run(&client, &waiting).await;
    let echo = json!({"title": "large", "actions": [
        {"ref": "a", "componentId": "core.echo", "params": {"text": "x"}}]});
    let mut refused = None;
    for i in 0..64 {
        // Text no compression shrinks much: the journal compresses large values.
        let padding = noise(i, 512 * 1024);
        let answer = client
            .post_json(
                "/v1/runs",
                &json!({"definition": echo, "inputs": {"padding": padding}}),
            )
            .await;
        if answer.status != 201 {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("a 4 MiB disk fills before 64 runs of 512 KiB");
    let body = String::from_utf8_lossy(&refused.body).into_owned();
    assert_eq!(refused.status, 503, "{body}");
    assert_eq!(refused.code(), "JOURNAL_UNAVAILABLE", "{body}");
    for debug_text in ["FjallError", "Os {", "Poisoned", "LsmTreeError"] {
        assert!(!body.contains(debug_text), "{body}");
    }
    let ready = client.get("/readyz").await;
    let ready_body = String::from_utf8_lossy(&ready.body).into_owned();
    assert_eq!(ready.status, 503, "{ready_body}");
    assert_eq!(ready.code(), "JOURNAL_UNAVAILABLE", "{ready_body}");
    assert!(ready_body.contains("cannot write"), "{ready_body}");
    let again = client
        .post_json("/v1/runs", &json!({"definition": echo}))
        .await;
    assert_eq!(again.code(), "JOURNAL_UNAVAILABLE");
    // The run in flight ends FAILED by the journal; its nodes were not failed by a component.
    let result = serve_common::result(&client, &in_flight).await;
    assert_eq!(result["status"], "FAILED", "{result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains("journal"), "{result}");
    for (node, record) in result["nodes"].as_object().unwrap() {
        assert_ne!(record["status"], "FAILED", "{node}: {record}");
    }
    // Healthy, though not ready: the process answers.
    assert_eq!(client.get("/healthz").await.status, 200);
    terminate(&server.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child killed when dropped (a failed assertion leaves no server behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `len` characters of hexadecimal noise (a xorshift stream seeded by `seed`).
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect()
}

/// The children of process `pid` (every thread's), from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether process `pid` still exists (a zombie counts as gone: it runs nothing).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'))
    })
}

/// Polls `what` (a state of /proc, which has no event to wait on) until it holds, for
/// at most a minute.
fn eventually(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !holds() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A run of one `core.process` node sleeping five minutes, remote when `remote`.
fn sleeper(remote: bool) -> serde_json::Value {
    let mut action = json!({"ref": "sleep", "componentId": "core.process",
        "params": {"command": ["/bin/sleep", "300"]}});
    if remote {
        action["runner"] = json!({"kind": "remote"});
    }
    json!({"title": "a long child", "actions": [action]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_child_outlives_a_kill_9_of_serve_or_of_a_worker() {
    let dir = scratch("orphans");
    let config = serve_common::config(
        &dir,
        "workers:\n  heartbeatSeconds: 0.2\n  leaseSeconds: 2\nservice:\n  definitions:\n    process:\n      executables: [/bin/sleep]\n",
    );
    let server = serve_common::Server::start(
        &dir,
        &["--config", &config, "--worker-listen", "127.0.0.1:0"],
    );
    let client = server.client();
    let mut worker = start_worker(&server, "w1");
    // A child of the worker, then the worker killed -9: the child dies with it.
    serve_common::start_run(&client, &sleeper(true)).await;
    let worker_pid = worker.0.id();
    eventually("the worker starts its child", || {
        !children(worker_pid).is_empty()
    });
    let child = children(worker_pid)[0];
    assert!(alive(child));
    // SAFETY: kill only sends a signal to the process this test started.
    unsafe { libc::kill(worker_pid as i32, libc::SIGKILL) };
    let _ = worker.0.wait();
    eventually("the worker's child dies with it", || !alive(child));
    // A child of the server, then the server killed -9: the child dies with it.
    serve_common::start_run(&client, &sleeper(false)).await;
    let server_pid = server.child.id();
    eventually("the server starts its child", || {
        children(server_pid).iter().any(|c| {
            std::fs::read_to_string(format!("/proc/{c}/cmdline"))
                .is_ok_and(|cmd| cmd.starts_with("/bin/sleep"))
        })
    });
    let child = children(server_pid)
        .into_iter()
        .find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/cmdline"))
                .is_ok_and(|cmd| cmd.starts_with("/bin/sleep"))
        })
        .unwrap();
    server.signal(libc::SIGKILL);
    drop(server);
    eventually("the server's child dies with it", || !alive(child));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pids of every process whose environment says it belongs to run `run_id`.
fn processes_of(run_id: &str) -> Vec<u32> {
    let mark = format!("SHIPSEC_RUN_ID={run_id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == mark.as_bytes()))
        })
        .collect()
}

/// The lines of `path` (none while it does not exist).
fn log_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A run of one `core.process` node whose side effect is a log in `dir`: it takes an
/// exclusive lock first (logging `overlap N` and failing when it is held: another copy
/// of the node is running), logs `start N`, and on its first attempt leaves a sleeper
/// in the background and sleeps itself, both holding the lock; later attempts log
/// `end N` and succeed.
fn locked_sleeper(dir: &std::path::Path, remote: bool) -> serde_json::Value {
    let script = r#"exec 9>>"$LOG_DIR/lock"
if ! flock -n 9; then echo "overlap $SHIPSEC_ATTEMPT" >> "$LOG_DIR/log"; exit 1; fi
echo "start $SHIPSEC_ATTEMPT" >> "$LOG_DIR/log"
if [ "$SHIPSEC_ATTEMPT" = 1 ]; then sleep 300 & sleep 300; fi
echo "end $SHIPSEC_ATTEMPT" >> "$LOG_DIR/log"
echo '{"done": true}'"#;
    let mut action = json!({"ref": "locked", "componentId": "core.process",
        "params": {"command": ["/bin/sh", "-c", script],
                   "env": {"LOG_DIR": dir.display().to_string()}}});
    if remote {
        action["runner"] = json!({"kind": "remote"});
    }
    json!({"title": "a child that leaves processes behind", "actions": [action]})
}

/// Starts `shipsec worker` for `server`, waiting until it is registered.
fn start_worker(server: &serve_common::Server, id: &str) -> Killed {
    let mut worker = Killed(
        Command::new(binary())
            .arg("worker")
            .arg("--coordinator")
            .arg(format!("http://{}", server.workers.as_ref().unwrap()))
            .args(["--id", id, "--slots", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    read_until(&mut worker.0, "registered as ");
    worker
}

/// Waits for the first attempt of `run_id` to log its start, then returns its processes
/// (the shell and its two sleepers).
fn first_attempt_running(log: &std::path::Path, run_id: &str) -> Vec<u32> {
    eventually("the first attempt starts", || {
        log_lines(log) == ["start 1"] && processes_of(run_id).len() >= 3
    });
    processes_of(run_id)
}

/// After the kill: the shell died with its parent, its sleepers did not.
fn leftovers_survive(before: &[u32]) {
    eventually("the shell dies with its parent", || {
        before.iter().filter(|&&p| alive(p)).count() == 2
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_each_lost_attempt_runs_once_and_never_beside_what_it_left() {
    let dir = scratch("leftovers");
    let config = serve_common::config(
        &dir,
        "workers:\n  heartbeatSeconds: 0.2\n  leaseSeconds: 2\nservice:\n  definitions:\n    process:\n      executables: [/bin/sh]\n      env: [LOG_DIR]\n",
    );
    let args = [
        "--config",
        config.as_str(),
        "--worker-listen",
        "127.0.0.1:0",
    ];
    let server = serve_common::Server::start(&dir, &args);
    let client = server.client();

    // On a worker: killed -9, the next worker sweeps what it left, then runs the retry.
    let remote = dir.join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let worker = start_worker(&server, "w1");
    let run = serve_common::start_run(&client, &locked_sleeper(&remote, true)).await;
    let before = first_attempt_running(&remote.join("log"), &run);
    // SAFETY: kill only sends a signal to the process this test started.
    unsafe { libc::kill(worker.0.id() as i32, libc::SIGKILL) };
    drop(worker);
    leftovers_survive(&before);
    let _next = start_worker(&server, "w2");
    let result = serve_common::result(&client, &run).await;
    assert_eq!(result["status"], "COMPLETED", "{result}");
    assert_eq!(
        log_lines(&remote.join("log")),
        ["start 1", "start 2", "end 2"]
    );
    assert!(before.iter().all(|&p| !alive(p)), "leftovers of the worker");

    // On the server: killed -9, restarted on its journal, it sweeps, then resumes.
    let local = dir.join("local");
    std::fs::create_dir_all(&local).unwrap();
    let run = serve_common::start_run(&client, &locked_sleeper(&local, false)).await;
    let before = first_attempt_running(&local.join("log"), &run);
    server.signal(libc::SIGKILL);
    drop(server);
    leftovers_survive(&before);
    let server = serve_common::Server::start(&dir, &args);
    let result = serve_common::result(&server.client(), &run).await;
    assert_eq!(result["status"], "COMPLETED", "{result}");
    assert_eq!(
        log_lines(&local.join("log")),
        ["start 1", "start 2", "end 2"]
    );
    assert!(before.iter().all(|&p| !alive(p)), "leftovers of the server");
    assert!(processes_of(&run).is_empty());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
