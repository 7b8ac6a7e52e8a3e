//! HTTP load generator for `shipsec serve`: a real server process (the release binary,
//! journal with process durability) and real HTTP/1.1 clients (hyper) over 127.0.0.1.
//!
//! ```text
//! cargo build --release --bins --examples
//! target/release/examples/http_load accept [--clients 32] [--runs 20000] [--width 18]
//! target/release/examples/http_load stream [--subscribers 1000] [--steps 50]
//!                                          [--step-ms 20] [--gate-ms 3000]
//! target/release/examples/http_load gates [--runs 20000] [--clients 32] [--sample 500]
//! ```
//!
//! - `accept`: `--clients` keep-alive connections each send `POST /v1/runs` in a closed
//!   loop until `--runs` were sent. The definition has `--width + 2` nodes (a source, the
//!   fan, a sink joining it: 20 by default). Reports runs accepted per second with the
//!   latency of the answers, then waits for every accepted run's result (all must be
//!   COMPLETED) and reports the server's memory: at start, its peak, and after the load.
//! - `stream`: one run (a `--gate-ms` sleep, then a chain of `--steps` sleeps of
//!   `--step-ms`) followed by `--subscribers` SSE streams, each on its own connection.
//!   For every trace event a subscriber receives, the delay is its arrival time minus
//!   the event's `timestamp` (the transition; the wire carries milliseconds, truncated,
//!   so a delay is over-stated by up to 1 ms). Events from before every subscriber was
//!   connected are left out (and counted), so the figure is that of live delivery.
//!
//! - `gates`: `--runs` runs each waiting at an approval gate (the gate, then an echo on its
//!   `approved` port). Reports the server's memory above its start per waiting run; kills
//!   it (SIGKILL) and reports how long the restart takes until it is ready with every gate
//!   still waiting; answers `--sample` gates one at a time, measuring from the answer's
//!   send to the gate's `completedAt` (milliseconds on the wire); then answers the rest
//!   from `--clients` connections (`POST /v1/inputs/{id}/resolve`) and reports answers
//!   per second and their latency; every run must complete.
//!
//! Client and server share the machine, so the client's own work is in every figure.

#[path = "../tests/serve_common/mod.rs"]
mod serve_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use serve_common::{Addr, Server, scratch};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "HTTP load generator for `shipsec serve`")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Runs accepted per second, then the server's memory after the load.
    Accept {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 20_000)]
        runs: usize,
        /// Nodes between the source and the sink.
        #[arg(long, default_value_t = 18)]
        width: usize,
    },
    /// Delay from a transition to its delivery on many SSE streams of one run.
    Stream {
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 50)]
        steps: usize,
        #[arg(long, default_value_t = 20)]
        step_ms: u64,
        #[arg(long, default_value_t = 3_000)]
        gate_ms: u64,
    },
    /// Runs waiting at gates: memory per waiting run, a restart, answers per second.
    Gates {
        #[arg(long, default_value_t = 20_000)]
        runs: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Gates answered one at a time, for the answer-to-completion delay.
        #[arg(long, default_value_t = 500)]
        sample: usize,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.mode {
            Mode::Accept {
                clients,
                runs,
                width,
            } => accept(clients, runs, width).await,
            Mode::Stream {
                subscribers,
                steps,
                step_ms,
                gate_ms,
            } => stream(subscribers, steps, step_ms, gate_ms).await,
            Mode::Gates {
                runs,
                clients,
                sample,
            } => gates(runs, clients, sample).await,
        }
    })
}

/// Starts a server with `config` (the engine configuration's YAML).
fn server(name: &str, config: &str) -> Result<(Server, String)> {
    let binary = serve_common::binary();
    if !binary.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release --bins --examples)",
            binary.display()
        );
    }
    let dir = scratch(name);
    let file = serve_common::config(&dir, config);
    let server = Server::start(&dir, &["--config", &file]);
    let Addr::Tcp(addr) = server.addr.clone() else {
        bail!("the server did not listen on TCP");
    };
    Ok((server, addr))
}

/// A keep-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends `request` on `sender`; the status and body.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// `clients` keep-alive connections to `addr`, each sending `request(i)` for the next `i`
/// below `count` once its last answer came: each answer as `answer` reads it (on the
/// client's task) with its latency in milliseconds, in no particular order.
async fn closed_loop<T, R, A>(
    addr: &str,
    clients: usize,
    count: usize,
    request: R,
    answer: A,
) -> Result<Vec<(T, f64)>>
where
    T: Send + 'static,
    R: Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
    A: Fn(u16, Bytes) -> Result<T> + Send + Sync + 'static,
{
    let (request, answer) = (Arc::new(request), Arc::new(answer));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, next) = (addr.to_owned(), next.clone());
        let (request, answer) = (request.clone(), answer.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&addr).await?;
            let mut answers = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(answers);
                }
                let sent = Instant::now();
                let (status, body) = send(&mut sender, request(i)).await?;
                let latency = sent.elapsed().as_secs_f64() * 1e3;
                answers.push((answer(status, body)?, latency));
            }
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await??);
    }
    Ok(answers)
}

/// The `runId` of a `POST /v1/runs` answer.
fn run_id_of(body: &[u8]) -> Result<String> {
    let answer: Value = serde_json::from_slice(body)?;
    Ok(answer["runId"].as_str().context("runId")?.to_owned())
}

fn post_run(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("/v1/runs")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The fan definition: `source -> n1..n{width} -> sink`.
fn fan(width: usize) -> Value {
    let mut actions = vec![json!({"ref": "source", "componentId": "core.echo"})];
    let middle: Vec<String> = (1..=width).map(|i| format!("n{i}")).collect();
    for id in &middle {
        actions.push(json!({"ref": id, "componentId": "core.echo", "dependsOn": ["source"]}));
    }
    actions.push(json!({"ref": "sink", "componentId": "core.echo", "dependsOn": middle}));
    json!({"title": format!("fan of {}", width + 2), "actions": actions})
}

/// The `q` quantile of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name}: n {} | p50 {:.2} | p90 {:.2} | p99 {:.2} | max {:.2} ms",
        values.len(),
        quantile(&values, 0.5),
        quantile(&values, 0.9),
        quantile(&values, 0.99),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

/// CPU time (user and system) process `pid` has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command (in parentheses, which may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// `VmRSS` and `VmHWM` of process `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn accept(clients: usize, runs: usize, width: usize) -> Result<()> {
    // Admission and retention large enough that the load, not a limit, is measured.
    let (server, addr) = server(
        "http-load-accept",
        &format!(
            "maxActiveRuns: {}\nretainedRuns: {}\nretainedNodes: {}\n",
            runs + 1,
            runs + 1,
            (runs + 1) * (width + 2)
        ),
    )?;
    let pid = server.child.id();
    let (base_rss, _) = memory(pid);
    let (server_cpu, client_cpu) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let body = Bytes::from(json!({"definition": fan(width)}).to_string());
    let started = Instant::now();
    let answers = closed_loop(
        &addr,
        clients,
        runs,
        move |_| post_run(&body),
        |status, answer| match status {
            201 => run_id_of(&answer).map(Some),
            429 => Ok(None),
            other => bail!("POST /v1/runs answered {other}"),
        },
    )
    .await?;
    let latencies: Vec<f64> = answers.iter().map(|(_, l)| *l).collect();
    let refused = answers.iter().filter(|(id, _)| id.is_none()).count();
    let ids: Vec<String> = answers.into_iter().filter_map(|(id, _)| id).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let (_, peak_accepting) = memory(pid);
    let server_cpu = cpu_seconds(pid) - server_cpu;
    let client_cpu = cpu_seconds(std::process::id()) - client_cpu;
    println!(
        "accept: {} runs of {} nodes sent by {clients} clients in {elapsed:.2} s: \
         {} accepted ({:.0}/s), {refused} refused (429)",
        runs,
        width + 2,
        ids.len(),
        ids.len() as f64 / elapsed
    );
    summary("POST /v1/runs latency", latencies);
    println!(
        "cpu while accepting: server {server_cpu:.2} s ({:.0} us per run, executing it included), client {client_cpu:.2} s",
        server_cpu * 1e6 / ids.len().max(1) as f64
    );
    // Every accepted run must complete.
    let mut sender = connect(&addr).await?;
    let mut completed = 0usize;
    for id in &ids {
        let (status, answer) =
            send(&mut sender, get(&format!("/v1/runs/{id}/result?wait=300"))).await?;
        let answer: Value = serde_json::from_slice(&answer)?;
        if status != 200 || answer["status"] != "COMPLETED" {
            bail!("run {id} ended {status} {}", answer["status"]);
        }
        completed += 1;
    }
    let drained = started.elapsed().as_secs_f64();
    let (after_rss, peak) = memory(pid);
    println!(
        "completed: {completed} runs ({} nodes) {drained:.2} s after the first request: {:.0} runs/s",
        completed * (width + 2),
        completed as f64 / drained
    );
    println!(
        "server memory: {base_rss:.1} MiB at start, peak {peak:.1} MiB (while accepting {peak_accepting:.1}), \
         {after_rss:.1} MiB after the load ({} finished runs retained)",
        completed
    );
    Ok(())
}

/// A chain: a `gate_ms` sleep, then `steps` sleeps of `step_ms`.
fn chain(steps: usize, step_ms: u64, gate_ms: u64) -> Value {
    let mut actions =
        vec![json!({"ref": "gate", "componentId": "core.sleep", "params": {"ms": gate_ms}})];
    let mut previous = "gate".to_owned();
    for i in 1..=steps {
        let id = format!("s{i}");
        actions.push(json!({"ref": id, "componentId": "core.sleep", "params": {"ms": step_ms}, "dependsOn": [previous]}));
        previous = id;
    }
    json!({"title": format!("chain of {steps}"), "actions": actions})
}

fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

async fn stream(subscribers: usize, steps: usize, step_ms: u64, gate_ms: u64) -> Result<()> {
    let (server, _) = server(
        "http-load-stream",
        &format!(
            "service:\n  maxSubscribersPerRun: {subscribers}\n  maxSubscribers: {}\n",
            subscribers + 16
        ),
    )?;
    let pid = server.child.id();
    let (base_rss, _) = memory(pid);
    let client = server.client();
    let created = client
        .post_json(
            "/v1/runs",
            &json!({"definition": chain(steps, step_ms, gate_ms)}),
        )
        .await;
    if created.status != 201 {
        bail!("POST /v1/runs answered {}", created.status);
    }
    let run = created.json()["runId"]
        .as_str()
        .context("runId")?
        .to_owned();
    let connected = Arc::new(AtomicUsize::new(0));
    let all_connected = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let (client, run) = (client.clone(), run.clone());
        let (connected, all_connected) = (connected.clone(), all_connected.clone());
        tasks.push(tokio::spawn(async move {
            let (status, mut reader) = client.stream(&format!("/v1/runs/{run}/events"), &[]).await;
            if status != 200 {
                bail!("the event stream answered {status}");
            }
            // Connected once the first message (the run's status) came.
            let first = reader.next().await.context("the stream ended at once")?;
            if connected.fetch_add(1, Ordering::AcqRel) + 1 == subscribers {
                all_connected.notify_one();
            }
            let mut seen = vec![(first, SystemTime::now())];
            while let Some(event) = reader.next().await {
                seen.push((event, SystemTime::now()));
            }
            anyhow::Ok(seen)
        }));
    }
    let connecting = Instant::now();
    all_connected.notified().await;
    let live_from = epoch_ms(SystemTime::now());
    println!(
        "stream: {subscribers} subscribers connected in {:.2} s",
        connecting.elapsed().as_secs_f64()
    );
    let (_, peak_connected) = memory(pid);
    let (server_cpu, client_cpu) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await??);
    }
    let server_cpu = cpu_seconds(pid) - server_cpu;
    let client_cpu = cpu_seconds(std::process::id()) - client_cpu;
    let mut delays = Vec::new();
    let mut early = 0usize;
    let mut terminals = 0usize;
    for seen in results {
        for (event, arrived) in seen {
            match event.event.as_str() {
                "trace" => {
                    let trace: Value = serde_json::from_str(&event.data)?;
                    let at = humantime::parse_rfc3339(
                        trace["timestamp"].as_str().context("timestamp")?,
                    )?;
                    let at = epoch_ms(at);
                    if at < live_from {
                        early += 1;
                    } else {
                        delays.push(epoch_ms(arrived) - at);
                    }
                }
                "terminal" => terminals += 1,
                _ => {}
            }
        }
    }
    if terminals != subscribers {
        bail!("{terminals} of {subscribers} streams saw the terminal event");
    }
    let (after_rss, peak) = memory(pid);
    println!(
        "live trace events delivered: {} ({early} sent before every subscriber was connected, left out)",
        delays.len()
    );
    let delivered = delays.len() + early;
    summary("delay, transition to delivery", delays);
    println!(
        "cpu while live: server {server_cpu:.2} s ({:.1} us per delivery), client {client_cpu:.2} s ({:.1} us)",
        server_cpu * 1e6 / delivered as f64,
        client_cpu * 1e6 / delivered as f64
    );
    println!(
        "server memory: {base_rss:.1} MiB at start, {peak_connected:.1} MiB peak with every stream open, \
         peak {peak:.1} MiB, {after_rss:.1} MiB after"
    );
    Ok(())
}

/// A run that waits at an approval gate, then goes on along its `approved` port.
fn gated() -> Value {
    json!({
        "title": "waits for a person",
        "actions": [
            {"ref": "g", "componentId": "core.manual_action.approval", "params": {"title": "Go?"}},
            {"ref": "after", "componentId": "core.echo"}
        ],
        "edges": [{"sourceRef": "g", "targetRef": "after", "sourceHandle": "approved"}]
    })
}

/// Every pending request the server lists, paged.
async fn pending(addr: &str) -> Result<Vec<String>> {
    let mut sender = connect(addr).await?;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/inputs?status=pending&limit=1000".to_owned(),
            Some(c) => format!("/v1/inputs?status=pending&limit=1000&cursor={c}"),
        };
        let (status, body) = send(&mut sender, get(&path)).await?;
        if status != 200 {
            bail!("GET /v1/inputs answered {status}");
        }
        let page: Value = serde_json::from_slice(&body)?;
        for input in page["inputs"].as_array().context("inputs")? {
            ids.push(input["requestId"].as_str().context("requestId")?.to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(ids),
        }
    }
}

fn post_resolve(request_id: &str) -> Request<Full<Bytes>> {
    Request::post(format!("/v1/inputs/{request_id}/resolve"))
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"approved":true,"respondedBy":"load"}"#,
        )))
        .unwrap()
}

/// Starts `runs` of [`gated`] from `clients` connections; their ids.
async fn start_gated(addr: &str, clients: usize, runs: usize) -> Result<Vec<String>> {
    let body = Bytes::from(json!({"definition": gated()}).to_string());
    let answers = closed_loop(
        addr,
        clients,
        runs,
        move |_| post_run(&body),
        |status, answer| match status {
            201 => run_id_of(&answer),
            other => bail!("POST /v1/runs answered {other}"),
        },
    )
    .await?;
    Ok(answers.into_iter().map(|(id, _)| id).collect())
}

/// Waits until `count` requests are pending; how many are.
async fn until_pending(addr: &str, count: usize) -> Result<Vec<String>> {
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let ids = pending(addr).await?;
        if ids.len() >= count || Instant::now() > deadline {
            return Ok(ids);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn gates(runs: usize, clients: usize, sample: usize) -> Result<()> {
    // Every run kept, in memory and in the journal, so that each result can be checked.
    let n = runs + 1;
    let config = format!(
        "maxActiveRuns: {n}\nretainedRuns: {n}\nretainedNodes: {}\nretainedBytes: {}\njournal:\n  retainedRuns: {n}\n",
        n * 2,
        n * 8192,
    );
    let (mut server, addr) = server("http-load-gates", &config)?;
    let pid = server.child.id();
    let (base_rss, _) = memory(pid);
    let started = Instant::now();
    let run_ids = start_gated(&addr, clients, runs).await?;
    let waiting = until_pending(&addr, runs).await?;
    if waiting.len() != runs {
        bail!("{} of {runs} gates are waiting", waiting.len());
    }
    let (rss, _) = memory(pid);
    println!(
        "gates: {runs} runs waiting at a gate after {:.2} s; server memory {base_rss:.1} MiB at start, \
         {rss:.1} MiB with them waiting: {:.1} KiB per waiting run",
        started.elapsed().as_secs_f64(),
        (rss - base_rss) * 1024.0 / runs as f64
    );

    // A restart with every gate waiting.
    server.signal(libc::SIGKILL);
    server.wait();
    let dir = server.dir.clone();
    let file = dir.join("engine.yaml").display().to_string();
    let restarting = Instant::now();
    let server = Server::start(&dir, &["--config", &file]);
    let ready = restarting.elapsed().as_secs_f64();
    let Addr::Tcp(addr) = server.addr.clone() else {
        bail!("the server did not listen on TCP");
    };
    let pid = server.child.id();
    let again = until_pending(&addr, runs).await?;
    println!(
        "restart (SIGKILL) with {runs} waiting runs: ready in {ready:.2} s, every gate listed again {:.2} s after the start ({} waiting)",
        restarting.elapsed().as_secs_f64(),
        again.len()
    );
    let (rss_after_restart, _) = memory(pid);
    println!("server memory after the restart: {rss_after_restart:.1} MiB");

    // One at a time: from the answer's send to the gate's completion.
    let mut sender = connect(&addr).await?;
    let mut sent_at = Vec::new();
    for id in again.iter().take(sample) {
        let sent = epoch_ms(SystemTime::now());
        let (status, body) = send(&mut sender, post_resolve(id)).await?;
        if status != 200 {
            bail!(
                "resolve answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let answer: Value = serde_json::from_slice(&body)?;
        sent_at.push((answer["runId"].as_str().context("runId")?.to_owned(), sent));
    }
    let mut delays = Vec::new();
    for (run, sent) in &sent_at {
        let (_, body) = send(&mut sender, get(&format!("/v1/runs/{run}/result?wait=60"))).await?;
        let result: Value = serde_json::from_slice(&body)?;
        let done = result["nodes"]["g"]["completedAt"]
            .as_str()
            .context("completedAt")?;
        let done = humantime::parse_rfc3339_weak(done)?;
        delays.push((epoch_ms(done) - sent).max(0.0));
    }
    summary(
        // `completedAt` carries milliseconds, truncated: under 1 ms may read as 0.
        "answer sent to gate COMPLETED (live run, sequential)",
        delays,
    );

    // The rest, from many connections.
    let rest: Arc<Vec<String>> = Arc::new(again.iter().skip(sample).cloned().collect());
    let answering = Instant::now();
    let to_answer = rest.clone();
    let answers = closed_loop(
        &addr,
        clients,
        rest.len(),
        move |i| post_resolve(&to_answer[i]),
        |status, _| match status {
            200 => Ok(()),
            other => bail!("resolve answered {other}"),
        },
    )
    .await?;
    let latencies: Vec<f64> = answers.into_iter().map(|(_, l)| l).collect();
    let elapsed = answering.elapsed().as_secs_f64();
    println!(
        "answers: {} by {clients} clients in {elapsed:.2} s: {:.0}/s",
        rest.len(),
        rest.len() as f64 / elapsed
    );
    summary("POST /v1/inputs/{id}/resolve latency", latencies);
    let mut completed = 0;
    for run in &run_ids {
        let (status, body) =
            send(&mut sender, get(&format!("/v1/runs/{run}/result?wait=300"))).await?;
        let result: Value = serde_json::from_slice(&body)?;
        if status != 200 || result["status"] != "COMPLETED" {
            bail!("run {run} ended {status} {}", result["status"]);
        }
        completed += 1;
    }
    println!("completed: {completed} runs");
    Ok(())
}
