//! The outside probe (`tests/probe/probe.py`, Python's standard library only) against a
//! real `shipsec serve`: idle and slow sockets are closed at their timeouts on the HTTP
//! API and on the worker port while authenticated requests keep working, the connection
//! cap refuses the excess and leaves the server whole, an unauthenticated gRPC call is
//! ended before its 64 MiB message is read (and the server's memory does not grow with
//! 32 of them), a DNS-rebinding `Host` is refused by a tokenless server, a
//! `Content-Length` over the limit is answered 413 at once, and each smaller defect of the
//! hardening issue (ids `.` and `..`, `Idempotency-Key`, `Last-Event-ID`, `traceparent`,
//! an undecodable path, a mistyped parameter, a huge problem list, what the HTTP library
//! answers itself) gets its documented answer.

mod serve_common;

use std::path::Path;
use std::process::Command;

use serve_common::{Addr, Server, config, scratch};

const PROBE: &str = "tests/probe/probe.py";

/// The limits the probe is told about, and the server is configured with.
const CAP: usize = 24;
const HEADER_TIMEOUT: f64 = 1.0;
const IDLE_TIMEOUT: f64 = 1.0;

const API_TOKEN: &str = "probe-api-token-0123456789";

fn tcp(server: &Server) -> String {
    match &server.addr {
        Addr::Tcp(addr) => addr.clone(),
        Addr::Unix(_) => unreachable!("the probe's servers listen on TCP"),
    }
}

/// A server with tokens on both ports and small connection limits.
fn guarded(dir: &Path) -> Server {
    let limits = format!(
        "{{maxConnections: {CAP}, headerReadTimeoutSeconds: {HEADER_TIMEOUT}, idleTimeoutSeconds: {IDLE_TIMEOUT}}}"
    );
    let yaml = format!("service:\n  connections: {limits}\nworkers:\n  connections: {limits}\n");
    let config = config(dir, &yaml);
    let tokens = dir.join("workers.tokens");
    std::fs::write(&tokens, "w1 probe-worker-token-0123456789\n").unwrap();
    let tokens = tokens.display().to_string();
    Server::start_on(
        dir,
        &["--listen", "127.0.0.1:0"],
        &[
            "--config",
            &config,
            "--worker-listen",
            "127.0.0.1:0",
            "--worker-token-file",
            &tokens,
        ],
        Some(API_TOKEN),
    )
}

/// Runs one check of the probe; its report. Fails the test when the check did not hold.
fn probe(check: &str, server: &Server, token: Option<&str>) -> serde_json::Value {
    let mut command = Command::new("python3");
    command.arg(PROBE).arg(check).args(["--api", &tcp(server)]);
    if let Some(workers) = &server.workers {
        command.args(["--workers", workers]);
    }
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    command.args([
        "--cap",
        &CAP.to_string(),
        "--header-timeout",
        &HEADER_TIMEOUT.to_string(),
        "--idle-timeout",
        &IDLE_TIMEOUT.to_string(),
    ]);
    let out = command.output().expect("python3 runs the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{check}: no report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{check}: {report}");
    assert!(out.status.success(), "{check} did not hold: {report}");
    report
}

/// The resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn idle_and_slow_sockets_are_closed_on_both_ports_while_authenticated_requests_work() {
    let dir = scratch("probe-slow");
    let server = guarded(&dir);
    probe("api-slow", &server, Some(API_TOKEN));
    probe("workers-slow", &server, Some(API_TOKEN));
    probe("api-idle", &server, Some(API_TOKEN));
}

#[test]
fn the_connection_cap_refuses_the_excess_and_leaves_the_server_whole() {
    let dir = scratch("probe-cap");
    let server = guarded(&dir);
    probe("cap", &server, Some(API_TOKEN));
}

#[test]
fn an_unauthenticated_grpc_message_is_refused_before_it_is_read() {
    let dir = scratch("probe-grpc");
    let server = guarded(&dir);
    let before = rss_kib(server.child.id());
    probe("workers-unauthenticated", &server, Some(API_TOKEN));
    let after = rss_kib(server.child.id());
    // 32 calls announcing 64 MiB each: reading them would take 2 GiB.
    assert!(
        after < before + 256 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_content_length_over_the_limit_is_answered_at_once() {
    let dir = scratch("probe-length");
    let server = guarded(&dir);
    probe("declared-length", &server, Some(API_TOKEN));
}

#[test]
fn each_smaller_defect_is_answered_as_documented() {
    let dir = scratch("probe-defects");
    let server = guarded(&dir);
    probe("defects", &server, Some(API_TOKEN));
}

#[test]
fn a_tokenless_server_refuses_a_rebound_host() {
    let dir = scratch("probe-rebinding");
    let server = Server::start(&dir, &[]);
    probe("dns-rebinding", &server, None);
}
