//! What durability costs: the same runs with the journal off, in `process` mode (buffered
//! writes) and in `fsync` mode (fdatasync per batch), on fjall in a temporary directory.
//!
//! Workloads: a chain of 1,000 `core.echo`, a fan-out of 1,000 and a fan-out of 100,000
//! (the workload DAGs of `benches/scheduler.rs`). The machine's fdatasync latency is
//! measured in the same run (4 KiB appended then fdatasync'd, 200 times), since the
//! `fsync` target is stated against it: a chain of 1,000 within 1.2 × (1,000 × its
//! median) of `off` — one fdatasync per node at most, as each node's start and end are
//! stored before its child is told.
//!
//! `cargo bench --bench journal` prints criterion's estimates, then a table of medians
//! and the ratios the targets are stated in (docs/performance.md records them).

#[path = "scheduler.rs"]
#[allow(dead_code)]
mod scheduler;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use scheduler::{engine, workload::Dag};
use shipsec_orchestrator::runtime::journal::Durability;
use shipsec_orchestrator::{ComponentRegistry, Orchestrator, ShutdownMode};

/// Per (workload, mode): the per-iteration times of every sample.
static TIMES: Mutex<Vec<(&'static str, &'static str, Duration)>> = Mutex::new(Vec::new());

const MODES: [(&str, Durability); 3] = [
    ("off", Durability::Off),
    ("process", Durability::Process),
    ("fsync", Durability::Fsync),
];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shipsec-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Median of 200 fdatasyncs of a 4 KiB append, in the directory the journals use.
fn fdatasync_median() -> Duration {
    let dir = scratch("fdatasync");
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = std::fs::File::create(dir.join("probe")).unwrap();
    let block = [0x5a_u8; 4096];
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            file.write_all(&block).unwrap();
            let start = Instant::now();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    let _ = std::fs::remove_dir_all(&dir);
    times[times.len() / 2]
}

fn bench(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    id: &'static str,
    dag: &Dag,
    samples: usize,
) {
    let mut group = c.benchmark_group(id);
    group
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(dag.node_count() as u64));
    for (mode, durability) in MODES {
        let dir = scratch(&format!("{id}-{mode}"));
        let mut config = engine::config_for(dag);
        config.journal.durability = durability;
        config.journal.data_dir = Some(dir.clone());
        // Finished runs are purged as the next ends: the journal holds about two runs.
        config.journal.retained_runs = 1;
        let handle = rt
            .block_on(Orchestrator::start_with(
                config,
                ComponentRegistry::with_builtins(),
            ))
            .expect("the engine starts");
        let workflow = engine::workflow(dag, &handle);
        group.bench_function(mode, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (handle, workflow) = (handle.clone(), workflow.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        engine::run(&handle, &workflow).await;
                    }
                    let elapsed = start.elapsed();
                    TIMES
                        .lock()
                        .unwrap()
                        .push((id, mode, elapsed / iters as u32));
                    elapsed
                }
            });
        });
        rt.block_on(handle.shutdown(ShutdownMode::Drain))
            .expect("the engine shuts down");
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

fn median(id: &str, mode: &str) -> Duration {
    let mut times: Vec<Duration> = TIMES
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, m, _)| *i == id && *m == mode)
        .map(|(_, _, t)| *t)
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sync = fdatasync_median();
    let cases = [
        ("chain-1k", Dag::chain(1_000), 10),
        ("fan-1k", Dag::fan(1_000), 10),
        ("fan-100k", Dag::fan(100_000), 10),
    ];
    let mut c = Criterion::default().configure_from_args();
    for (id, dag, samples) in &cases {
        bench(&mut c, &rt, id, dag, *samples);
    }
    c.final_summary();
    println!();
    println!(
        "fdatasync of a 4 KiB append: median {:.3} ms",
        sync.as_secs_f64() * 1e3
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>14} {:>14} {:>16}",
        "workload", "off", "process", "fsync", "process/off", "fsync-off", "process nodes/s"
    );
    for (id, dag, _) in &cases {
        let [off, process, fsync] = MODES.map(|(mode, _)| median(id, mode));
        println!(
            "{:<10} {:>12} {:>12} {:>12} {:>13.2}x {:>14} {:>16.0}",
            id,
            ms(off),
            ms(process),
            ms(fsync),
            process.as_secs_f64() / off.as_secs_f64(),
            ms(fsync.saturating_sub(off)),
            dag.node_count() as f64 / process.as_secs_f64()
        );
    }
    let chain_budget = sync.mul_f64(1_000.0 * 1.2);
    println!(
        "fsync chain-1k target: fsync - off within 1.2 x 1,000 x fdatasync = {}",
        ms(chain_budget)
    );
}
