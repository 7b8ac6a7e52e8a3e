//! Load generator: one big run through the engine and through each baseline of
//! `benches/scheduler.rs`, each in its own child process, reporting wall time, time per
//! node and peak RSS.
//!
//! ```text
//! cargo run --release --example loadgen -- <w1|w2|w5> <nodes> [--all] [--only EXEC]
//!                                          [--timeout SECS] [--max-rss-gb GB]
//! ```
//!
//! - `w1`: a chain; `w2` and `w5`: fan-out/fan-in (one source, `nodes - 2` middle nodes,
//!   one sink; `w5` is the name of the 1,000,000-node case).
//! - The bare-ractor baseline is skipped above 200,000 nodes unless `--all`.
//! - `--only ours|tokio|ractor` runs one executor.
//! - A child is killed when its run phase exceeds `--timeout` (default 180 s) or its RSS
//!   exceeds `--max-rss-gb` (default 16).
//!
//! Peak RSS is per process, so each executor runs in a child (this binary re-executed
//! with `--child`). The child builds its input (the validated graph for the engine, the
//! adjacency lists for the baselines), drops what it no longer needs, returns free heap
//! to the OS, resets the high-water mark (`5` into `/proc/self/clear_refs`), runs once,
//! and prints its `VmHWM` before exiting: the peak is that of the run, counting the
//! input structure it started from (`rss before run`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

// Also brings the global allocator the `shipsec` binary ships with (mimalloc).
#[path = "../benches/scheduler.rs"]
#[allow(dead_code)]
mod scheduler;

use scheduler::{baseline, engine, workload::Dag};
use shipsec_orchestrator::SubmitOptions;
use shipsec_orchestrator::runtime::definition::JsonObject;
use shipsec_orchestrator::{Handle, Orchestrator, Workflow};

const EXECS: [&str; 3] = ["ours", "tokio", "ractor"];
/// Above this many nodes the bare-ractor baseline runs only with `--all`.
const RACTOR_LIMIT: usize = 200_000;

fn usage() -> ! {
    eprintln!(
        "usage: loadgen <w1|w2|w5> <nodes> [--all] [--only ours|tokio|ractor] \
         [--timeout SECS] [--max-rss-gb GB]"
    );
    std::process::exit(2);
}

fn dag(workload: &str, nodes: usize) -> Dag {
    match workload {
        "w1" => Dag::chain(nodes),
        "w2" | "w5" => Dag::fan(nodes),
        _ => usage(),
    }
}

/// A field of `/proc/<pid>/status`, in kB.
fn proc_status_kb(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn gb(kb: u64) -> String {
    format!("{:.2} GB", kb as f64 / (1024.0 * 1024.0))
}

fn mb(kb: u64) -> String {
    if kb >= 1024 * 1024 {
        gb(kb)
    } else {
        format!("{:.1} MB", kb as f64 / 1024.0)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let [_, exec, workload, nodes] = args.as_slice() else {
            usage()
        };
        child(exec, workload, nodes.parse().unwrap_or_else(|_| usage()));
        return;
    }
    parent(&args);
}

// ---- the parent: runs each executor in a child, watches it, prints a table ----------

struct Options {
    workload: String,
    nodes: usize,
    all: bool,
    only: Option<String>,
    timeout: Duration,
    max_rss_kb: u64,
}

fn parse(args: &[String]) -> Options {
    let mut positional = Vec::new();
    let mut o = Options {
        workload: String::new(),
        nodes: 0,
        all: false,
        only: None,
        timeout: Duration::from_secs(180),
        max_rss_kb: 16 * 1024 * 1024,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--all" => o.all = true,
            "--only" => o.only = Some(value()),
            "--timeout" => {
                o.timeout = Duration::from_secs_f64(value().parse().unwrap_or_else(|_| usage()))
            }
            "--max-rss-gb" => {
                let g: f64 = value().parse().unwrap_or_else(|_| usage());
                o.max_rss_kb = (g * 1024.0 * 1024.0) as u64;
            }
            s if s.starts_with('-') => usage(),
            s => positional.push(s.to_owned()),
        }
    }
    let [workload, nodes] = positional.as_slice() else {
        usage()
    };
    o.workload = workload.clone();
    o.nodes = nodes.replace('_', "").parse().unwrap_or_else(|_| usage());
    if !matches!(o.workload.as_str(), "w1" | "w2" | "w5")
        || o.nodes < 3
        || o.only.as_deref().is_some_and(|e| !EXECS.contains(&e))
    {
        usage();
    }
    o
}

/// What one child reported, or why it was stopped.
#[derive(Default)]
struct Outcome {
    build_s: Option<f64>,
    rss_before_kb: Option<u64>,
    wall_s: Option<f64>,
    submit_s: Option<f64>,
    hwm_kb: Option<u64>,
    hwm_reset: bool,
    /// The largest RSS the parent saw while polling.
    polled_max_kb: u64,
    note: String,
}

fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

fn parent(args: &[String]) {
    let o = parse(args);
    let exe = std::env::current_exe().expect("current exe");
    println!(
        "loadgen {} {} nodes ({}): each executor in a child process, run-phase timeout {:?}, RSS cap {}",
        o.workload,
        o.nodes,
        if o.workload == "w1" {
            "chain"
        } else {
            "fan-out/fan-in"
        },
        o.timeout,
        gb(o.max_rss_kb)
    );
    let mut rows = Vec::new();
    for exec in EXECS {
        if o.only.as_deref().is_some_and(|only| only != exec) {
            continue;
        }
        if exec == "ractor" && o.nodes > RACTOR_LIMIT && !o.all {
            rows.push((
                exec,
                Outcome {
                    note: format!("skipped (> {RACTOR_LIMIT} nodes; --all runs it)"),
                    ..Outcome::default()
                },
            ));
            continue;
        }
        eprintln!("[{exec}] starting");
        let outcome = watch(&exe, exec, &o);
        rows.push((exec, outcome));
    }
    println!();
    println!(
        "{:<8} {:>9} {:>10} {:>10} {:>10} {:>12} {:>12}  note",
        "executor", "build s", "submit s", "wall s", "µs/node", "rss before", "peak rss"
    );
    for (exec, r) in &rows {
        let f = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
        };
        let k = |v: Option<u64>| v.map_or_else(|| "-".into(), mb);
        let per_node = r.wall_s.map(|w| w * 1e6 / o.nodes as f64);
        let mut note = r.note.clone();
        if r.hwm_kb.is_some() && !r.hwm_reset {
            note.push_str(" (HWM not reset: includes the build)");
        }
        println!(
            "{:<8} {:>9} {:>10} {:>10} {:>10} {:>12} {:>12}  {}",
            exec,
            f(r.build_s, 2),
            f(r.submit_s, 3),
            f(r.wall_s, 3),
            f(per_node, 2),
            k(r.rss_before_kb),
            k(r.hwm_kb),
            note.trim()
        );
    }
}

/// Runs one executor in a child and watches its time and memory.
fn watch(exe: &std::path::Path, exec: &str, o: &Options) -> Outcome {
    let mut child = Command::new(exe)
        .args(["--child", exec, &o.workload, &o.nodes.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a child");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let build_limit = o.timeout.max(Duration::from_secs(300));
    let mut run_started: Option<Instant> = None;
    let mut r = Outcome::default();
    loop {
        while let Ok(line) = rx.try_recv() {
            on_line(exec, &line, &mut r, &mut run_started);
        }
        if let Some(status) = child.try_wait().expect("wait for a child") {
            if !status.success() {
                r.note = format!("child exited with {status}");
            }
            break;
        }
        let rss = proc_status_kb(&pid, "VmRSS").unwrap_or(0);
        r.polled_max_kb = r.polled_max_kb.max(rss);
        let over_time = match run_started {
            Some(t) => (t.elapsed() > o.timeout).then(|| format!("run phase over {:?}", o.timeout)),
            None => (started.elapsed() > build_limit)
                .then(|| format!("build phase over {build_limit:?}")),
        };
        let over_rss = (rss > o.max_rss_kb).then(|| format!("RSS {} over the cap", mb(rss)));
        if let Some(why) = over_time.or(over_rss) {
            let _ = child.kill();
            let _ = child.wait();
            let ran = run_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            r.note = format!(
                "KILLED: {why} (ran {ran:.1} s; largest RSS seen {})",
                mb(r.polled_max_kb)
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = reader.join();
    while let Ok(line) = rx.try_recv() {
        on_line(exec, &line, &mut r, &mut run_started);
    }
    r
}

/// Records what a child's line reports, and echoes it on stderr.
fn on_line(exec: &str, line: &str, r: &mut Outcome, run_started: &mut Option<Instant>) {
    eprintln!("[{exec}] {line}");
    if line.starts_with("BUILT") {
        *run_started = Some(Instant::now());
        r.build_s = field(line, "build_s");
        r.rss_before_kb = field(line, "rss_kb");
    } else if line.starts_with("SUBMITTED") {
        r.submit_s = field(line, "submit_s");
    } else if line.starts_with("RESULT") {
        r.wall_s = field(line, "wall_s");
        r.hwm_kb = field(line, "hwm_kb");
        r.hwm_reset = field::<u8>(line, "hwm_reset") == Some(1);
    }
}

// ---- the child: builds, resets the high-water mark, runs once, reports ---------------

/// Gives freed heap back to the OS so that the RSS before the run is the live data.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0). Never inlined: it marks the start
/// of the run for profilers (`valgrind --tool=callgrind --dump-before=*reset_hwm*`).
#[inline(never)]
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn child(exec: &str, workload: &str, nodes: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let t0 = Instant::now();
    let dag = Arc::new(dag(workload, nodes));
    let edges = dag.edges();
    let (dag, graph, handle) = if exec == "ours" {
        let handle = rt
            .block_on(Orchestrator::start(engine::config_for(&dag)))
            .expect("orchestrator starts");
        let workflow = engine::workflow(&dag, &handle);
        (None, Some(workflow), Some(handle))
    } else {
        (Some(dag), None, None)
    };
    let build_s = t0.elapsed().as_secs_f64();
    trim_heap();
    let rss_kb = proc_status_kb("self", "VmRSS").unwrap_or(0);
    say(format!(
        "BUILT build_s={build_s:.3} rss_kb={rss_kb} nodes={nodes} edges={edges}"
    ));
    let hwm_reset = reset_hwm();
    let start = Instant::now();
    rt.block_on(async {
        match exec {
            "ours" => {
                engine_run(&handle.expect("engine"), &graph.expect("graph"), start).await;
            }
            "tokio" => {
                baseline::tokio_run(&dag.expect("dag")).await;
            }
            "ractor" => {
                baseline::ractor_run(&dag.expect("dag")).await;
            }
            _ => usage(),
        }
    });
    let wall_s = start.elapsed().as_secs_f64();
    let hwm_kb = proc_status_kb("self", "VmHWM").unwrap_or(0);
    say(format!(
        "RESULT wall_s={wall_s:.4} hwm_kb={hwm_kb} hwm_reset={} per_node_us={:.3}",
        u8::from(hwm_reset),
        wall_s * 1e6 / nodes as f64
    ));
    // Exit at once: tearing down millions of actors or tasks is not part of the run.
    std::process::exit(0);
}

/// The engine's run, with a known id so that progress can be asked for while it runs.
async fn engine_run(handle: &Handle, workflow: &Workflow, start: Instant) {
    let id = "loadgen-run";
    let progress = {
        let handle = handle.clone();
        tokio::spawn(async move { report_progress(&handle, id, start).await })
    };
    let options = SubmitOptions {
        run_id: Some(id.to_owned()),
        ..SubmitOptions::default()
    };
    let mut run = handle
        .submit_workflow(workflow, JsonObject::new(), options)
        .await
        .expect("submit");
    // `submit` returns once the supervisor has spawned every node actor.
    say(format!(
        "SUBMITTED submit_s={:.4}",
        start.elapsed().as_secs_f64()
    ));
    let result = run.result().await.expect("result");
    progress.abort();
    engine::check(&result, workflow.graph().len());
}

/// For long engine runs: every 10 s, the run's node counts (through `status`), so that a
/// run that is killed shows how far it got.
async fn report_progress(handle: &Handle, id: &str, start: Instant) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss = mb(proc_status_kb("self", "VmRSS").unwrap_or(0));
        let at = start.elapsed().as_secs_f64();
        match tokio::time::timeout(Duration::from_secs(5), handle.status(id)).await {
            Ok(Ok(snap)) => eprintln!("  progress at {at:.0} s: {:?} (RSS {rss})", snap.counts),
            Ok(Err(e)) => eprintln!("  progress at {at:.0} s: {e} (RSS {rss})"),
            Err(_) => eprintln!("  progress at {at:.0} s: no status within 5 s (RSS {rss})"),
        }
    }
}
