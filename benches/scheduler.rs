//! Scheduler benches: the engine against two minimal baselines on the same DAGs.
//!
//! Workloads ([`workload::Dag`]):
//! - W1: a 10,000-node chain of `core.echo`;
//! - W2: fan-out/fan-in of 10,000 `core.echo` (one source, N-2 middle nodes, one sink);
//! - W3: 100 parallel `core.sleep` of 100 ms between a source and a join (makespan vs the
//!   100 ms critical path);
//! - W4: 1,000 concurrent runs of a 20-node diamond (submit all, then await all).
//!
//! Executors:
//! - `ours`: the engine, end to end (`submit` -> `result`); the graph is validated once,
//!   outside the timing;
//! - `tokio`: one task per node, an unbounded mpsc per node carrying the parents' outputs;
//! - `ractor`: one actor per node, spawned per run; parents cast their outputs to their
//!   children; a node runs when every parent has reported; the sink answers a oneshot.
//!
//! A node's work is the same everywhere: `core.echo` (its params cloned and merged with its
//! inputs, which are empty here: no input mappings), after a sleep for `core.sleep`.
//!
//! `cargo bench --bench scheduler` prints criterion's estimates, then a table of medians
//! per workload. `examples/loadgen.rs` includes this file for the same workloads and
//! baselines.

/// The allocator the `shipsec` binary ships with, so the figures are the product's (the
/// baselines run on it too).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use shipsec_orchestrator::{Orchestrator, ShutdownMode};

/// The DAGs, described once and rendered both as a workflow definition (for the engine)
/// and as plain adjacency lists (for the baselines).
pub mod workload {
    use std::fmt::Write as _;

    use serde_json::{Value, json};
    use shipsec_orchestrator::runtime::definition::JsonObject;

    /// What a node does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Work {
        /// `core.echo`.
        Echo,
        /// `core.sleep` for this many milliseconds.
        Sleep(u64),
    }

    /// A DAG whose node indices are in topological order (every edge goes from a lower
    /// to a higher index) with exactly one sink, the last node.
    #[derive(Debug)]
    pub struct Dag {
        /// Title of the workflow.
        pub name: String,
        /// Per node.
        pub work: Vec<Work>,
        /// Per node: the component's params (`{"from": ref}`, plus `ms` for sleeps).
        pub params: Vec<JsonObject>,
        /// Per node: its children.
        pub children: Vec<Vec<u32>>,
        /// Per node: its number of parents.
        pub indegree: Vec<u32>,
    }

    impl Dag {
        fn new(name: String, work: Vec<Work>) -> Dag {
            let n = work.len();
            let params = work
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let mut p = JsonObject::new();
                    if let Work::Sleep(ms) = w {
                        p.insert("ms".into(), json!(ms));
                    }
                    p.insert("from".into(), Value::String(node_ref(i)));
                    p
                })
                .collect();
            Dag {
                name,
                work,
                params,
                children: vec![Vec::new(); n],
                indegree: vec![0; n],
            }
        }

        fn edge(&mut self, source: usize, target: usize) {
            assert!(source < target, "indices are in topological order");
            self.children[source].push(target as u32);
            self.indegree[target] += 1;
        }

        /// W1: `n0 -> n1 -> ... -> n(n-1)`.
        pub fn chain(n: usize) -> Dag {
            assert!(n >= 1);
            let mut dag = Dag::new(format!("chain-{n}"), vec![Work::Echo; n]);
            for i in 1..n {
                dag.edge(i - 1, i);
            }
            dag.checked()
        }

        /// W2/W5: one source, `n - 2` middle nodes, one sink.
        pub fn fan(n: usize) -> Dag {
            assert!(n >= 3);
            let mut dag = Dag::new(format!("fan-{n}"), vec![Work::Echo; n]);
            for i in 1..n - 1 {
                dag.edge(0, i);
                dag.edge(i, n - 1);
            }
            dag.checked()
        }

        /// W3: a source, `width` sleeps of `ms` milliseconds, a join.
        pub fn sleeps(width: usize, ms: u64) -> Dag {
            let mut work = vec![Work::Echo];
            work.extend(std::iter::repeat_n(Work::Sleep(ms), width));
            work.push(Work::Echo);
            let mut dag = Dag::new(format!("sleeps-{width}x{ms}ms"), work);
            for i in 1..=width {
                dag.edge(0, i);
                dag.edge(i, width + 1);
            }
            dag.checked()
        }

        /// W4: layers of 1, 2, 4, 6, 4, 2, 1 nodes (20), each layer fully connected to
        /// the next (68 edges).
        pub fn diamond() -> Dag {
            const LAYERS: [usize; 7] = [1, 2, 4, 6, 4, 2, 1];
            let n = LAYERS.iter().sum();
            let mut dag = Dag::new("diamond-20".into(), vec![Work::Echo; n]);
            let mut start = 0;
            for pair in LAYERS.windows(2) {
                let next = start + pair[0];
                for s in start..next {
                    for t in next..next + pair[1] {
                        dag.edge(s, t);
                    }
                }
                start = next;
            }
            dag.checked()
        }

        /// Number of nodes.
        pub fn node_count(&self) -> usize {
            self.work.len()
        }

        /// Number of edges.
        pub fn edges(&self) -> usize {
            self.children.iter().map(Vec::len).sum()
        }

        /// The only sink, the last node (checked when the DAG is built).
        pub fn sink(&self) -> usize {
            self.node_count() - 1
        }

        /// Checks that the last node is the only sink.
        fn checked(self) -> Dag {
            let sinks: Vec<usize> = (0..self.node_count())
                .filter(|&i| self.children[i].is_empty())
                .collect();
            assert_eq!(sinks, [self.sink()], "exactly one sink, the last node");
            self
        }

        /// The workflow definition (JSON text): one action per node, one edge per edge,
        /// no input mappings, default join (`all`).
        pub fn definition_json(&self) -> String {
            let mut s = String::with_capacity(self.node_count() * 160);
            write!(s, "{{\"title\":{},\"actions\":[", json!(self.name)).unwrap();
            for i in 0..self.node_count() {
                let component = match self.work[i] {
                    Work::Echo => "core.echo",
                    Work::Sleep(_) => "core.sleep",
                };
                if i > 0 {
                    s.push(',');
                }
                write!(
                    s,
                    "{{\"ref\":\"{}\",\"componentId\":\"{component}\",\"params\":{}}}",
                    node_ref(i),
                    Value::Object(self.params[i].clone())
                )
                .unwrap();
            }
            s.push_str("],\"edges\":[");
            let mut first = true;
            for (i, children) in self.children.iter().enumerate() {
                for &c in children {
                    if !first {
                        s.push(',');
                    }
                    first = false;
                    write!(
                        s,
                        "{{\"sourceRef\":\"{}\",\"targetRef\":\"{}\"}}",
                        node_ref(i),
                        node_ref(c as usize)
                    )
                    .unwrap();
                }
            }
            s.push_str("]}");
            s
        }
    }

    /// The ref of node `i`.
    pub fn node_ref(i: usize) -> String {
        format!("n{i}")
    }

    /// `core.echo`'s output: params (minus `skip`) merged with inputs, inputs winning.
    pub fn echo(params: &JsonObject, inputs: &JsonObject, skip: &[&str]) -> JsonObject {
        let mut out: JsonObject = params
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in inputs {
            out.insert(k.clone(), v.clone());
        }
        out
    }
}

/// Running a [`workload::Dag`] on the engine through its public handle.
pub mod engine {
    use std::sync::Arc;

    use shipsec_orchestrator::messages::orchestrator::SubmitOptions;
    use shipsec_orchestrator::runtime::definition::{JsonObject, WorkflowDefinition};
    use shipsec_orchestrator::runtime::semantics::outcome::RunStatus;
    use shipsec_orchestrator::runtime::semantics::result::RunResult;
    use shipsec_orchestrator::{EngineConfig, Handle, Workflow};

    use super::workload::Dag;

    /// Parses the DAG's definition and has `handle` check it (done once, outside any
    /// timing).
    pub fn workflow(dag: &Dag, handle: &Handle) -> Workflow {
        let def: WorkflowDefinition =
            serde_json::from_str(&dag.definition_json()).expect("definition shape");
        handle.prepare(def).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An engine configuration whose definition limits admit `dag`.
    pub fn config_for(dag: &Dag) -> EngineConfig {
        let mut config = EngineConfig::default();
        let limits = &mut config.limits;
        limits.max_nodes = limits.max_nodes.max(dag.node_count());
        limits.max_edges = limits.max_edges.max(dag.edges());
        limits.max_definition_bytes = usize::MAX;
        config
    }

    /// One run, submit to result.
    pub async fn run(handle: &Handle, workflow: &Workflow) -> Arc<RunResult> {
        let mut run = handle
            .submit_workflow(workflow, JsonObject::new(), SubmitOptions::default())
            .await
            .expect("submit");
        let result = run.result().await.expect("result");
        check(&result, workflow.graph().len());
        result
    }

    /// `runs` runs: every submission first, then every result.
    pub async fn run_many(handle: &Handle, workflow: &Workflow, runs: usize) {
        let mut pending = Vec::with_capacity(runs);
        for _ in 0..runs {
            let run = handle
                .submit_workflow(workflow, JsonObject::new(), SubmitOptions::default())
                .await
                .expect("submit");
            pending.push(run);
        }
        for mut run in pending {
            check(&run.result().await.expect("result"), workflow.graph().len());
        }
    }

    /// The run completed every node.
    pub fn check(result: &RunResult, nodes: usize) {
        assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
        assert_eq!(result.outputs.len(), nodes, "every node completed");
    }
}

/// Minimal executors of a [`workload::Dag`] on bare tokio and bare ractor.
pub mod baseline {
    use std::sync::Arc;
    use std::time::Duration;

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use shipsec_orchestrator::runtime::definition::JsonObject;
    use tokio::sync::{mpsc, oneshot};

    use super::workload::{Dag, Work, echo};

    /// A node's work: `core.echo` on its params and (empty) inputs, after a sleep for
    /// `core.sleep`.
    async fn work(dag: &Dag, ix: usize) -> JsonObject {
        let inputs = JsonObject::new();
        match dag.work[ix] {
            Work::Echo => echo(&dag.params[ix], &inputs, &[]),
            Work::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                echo(&dag.params[ix], &inputs, &["ms"])
            }
        }
    }

    /// One tokio task per node; each node has an unbounded mpsc on which its parents send
    /// their outputs. Returns the sink's output.
    pub async fn tokio_run(dag: &Arc<Dag>) -> Arc<JsonObject> {
        let sink = dag.sink();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..dag.node_count())
            .map(|_| mpsc::unbounded_channel::<Arc<JsonObject>>())
            .unzip();
        let senders = Arc::new(senders);
        let (done_tx, done_rx) = oneshot::channel();
        let mut done_tx = Some(done_tx);
        for (ix, mut rx) in receivers.into_iter().enumerate() {
            let dag = dag.clone();
            let senders = senders.clone();
            let done = if ix == sink { done_tx.take() } else { None };
            tokio::spawn(async move {
                let want = dag.indegree[ix] as usize;
                let mut parents = Vec::with_capacity(want);
                while parents.len() < want {
                    parents.push(rx.recv().await.expect("a parent's output"));
                }
                let out = Arc::new(work(&dag, ix).await);
                for &c in &dag.children[ix] {
                    let _ = senders[c as usize].send(out.clone());
                }
                if let Some(done) = done {
                    let _ = done.send(out);
                }
            });
        }
        done_rx.await.expect("the sink reports")
    }

    /// A node actor of the ractor baseline.
    #[derive(Debug, Clone, Copy)]
    struct NodeActor;

    /// A parent's output.
    #[derive(Debug)]
    struct ParentDone(Arc<JsonObject>);

    /// Start-up arguments of a node actor.
    #[derive(Debug)]
    struct NodeArgs {
        dag: Arc<Dag>,
        ix: usize,
        children: Vec<ActorRef<ParentDone>>,
        done: Option<oneshot::Sender<Arc<JsonObject>>>,
    }

    /// A node actor's state: its arguments and the outputs received so far.
    #[derive(Debug)]
    struct NodeState {
        args: NodeArgs,
        parents: Vec<Arc<JsonObject>>,
    }

    impl Actor for NodeActor {
        type Msg = ParentDone;
        type State = NodeState;
        type Arguments = NodeArgs;

        async fn pre_start(
            &self,
            _myself: ActorRef<ParentDone>,
            args: NodeArgs,
        ) -> Result<NodeState, ActorProcessingErr> {
            let want = args.dag.indegree[args.ix] as usize;
            Ok(NodeState {
                args,
                parents: Vec::with_capacity(want),
            })
        }

        async fn post_start(
            &self,
            myself: ActorRef<ParentDone>,
            state: &mut NodeState,
        ) -> Result<(), ActorProcessingErr> {
            if state.args.dag.indegree[state.args.ix] == 0 {
                complete(&myself, state).await;
            }
            Ok(())
        }

        async fn handle(
            &self,
            myself: ActorRef<ParentDone>,
            ParentDone(out): ParentDone,
            state: &mut NodeState,
        ) -> Result<(), ActorProcessingErr> {
            state.parents.push(out);
            if state.parents.len() == state.args.dag.indegree[state.args.ix] as usize {
                complete(&myself, state).await;
            }
            Ok(())
        }
    }

    /// Runs the node, casts its output to its children, answers for the sink, stops.
    async fn complete(myself: &ActorRef<ParentDone>, state: &mut NodeState) {
        let out = Arc::new(work(&state.args.dag, state.args.ix).await);
        for child in &state.args.children {
            let _ = child.cast(ParentDone(out.clone()));
        }
        if let Some(done) = state.args.done.take() {
            let _ = done.send(out);
        }
        myself.stop(None);
    }

    /// One ractor actor per node, spawned for this run, children first (so each actor
    /// is given its children's addresses); sources start as soon as they are spawned.
    /// Returns the sink's output.
    pub async fn ractor_run(dag: &Arc<Dag>) -> Arc<JsonObject> {
        let sink = dag.sink();
        let (done_tx, done_rx) = oneshot::channel();
        let mut done_tx = Some(done_tx);
        let mut refs: Vec<Option<ActorRef<ParentDone>>> = vec![None; dag.node_count()];
        for ix in (0..dag.node_count()).rev() {
            let children = dag.children[ix]
                .iter()
                .map(|&c| refs[c as usize].clone().expect("children spawn first"))
                .collect();
            let args = NodeArgs {
                dag: dag.clone(),
                ix,
                children,
                done: if ix == sink { done_tx.take() } else { None },
            };
            let (actor, _) = Actor::spawn(None, NodeActor, args)
                .await
                .expect("spawn a node actor");
            refs[ix] = Some(actor);
        }
        drop(refs);
        done_rx.await.expect("the sink reports")
    }

    /// `runs` concurrent runs of `run` (each in its own task), then every result.
    pub async fn run_many<F, Fut>(dag: &Arc<Dag>, runs: usize, run: F)
    where
        F: Fn(Arc<Dag>) -> Fut,
        Fut: Future<Output = Arc<JsonObject>> + Send + 'static,
    {
        let tasks: Vec<_> = (0..runs).map(|_| tokio::spawn(run(dag.clone()))).collect();
        for task in tasks {
            task.await.expect("a baseline run");
        }
    }
}

/// Which executor a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    Ours,
    Tokio,
    Ractor,
}

impl Exec {
    const ALL: [Exec; 3] = [Exec::Ours, Exec::Tokio, Exec::Ractor];

    fn name(self) -> &'static str {
        match self {
            Exec::Ours => "ours",
            Exec::Tokio => "tokio",
            Exec::Ractor => "ractor",
        }
    }
}

/// Criterion's samples: this many per benchmark.
const SAMPLES: usize = 10;

/// Every per-iteration time measured, by (workload, executor), in call order. Criterion
/// calls the routine for its warm-up first, then once per sample: the last [`SAMPLES`]
/// entries are the samples.
static TIMES: Mutex<Vec<(&'static str, Exec, Duration)>> = Mutex::new(Vec::new());

fn record(workload: &'static str, exec: Exec, per_iter: Duration) {
    TIMES.lock().unwrap().push((workload, exec, per_iter));
}

/// Median of the last [`SAMPLES`] per-iteration times of one benchmark.
fn median(workload: &str, exec: Exec) -> Option<Duration> {
    let times = TIMES.lock().unwrap();
    let mut v: Vec<Duration> = times
        .iter()
        .filter(|(w, e, _)| *w == workload && *e == exec)
        .map(|(_, _, t)| *t)
        .collect();
    let keep = v.len().min(SAMPLES);
    v.drain(..v.len() - keep);
    v.sort();
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// One workload: a DAG, how many concurrent runs make one iteration.
struct Case {
    id: &'static str,
    dag: Arc<workload::Dag>,
    runs: usize,
}

impl Case {
    fn nodes(&self) -> u64 {
        (self.dag.node_count() * self.runs) as u64
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "W1-chain-10k",
            dag: Arc::new(workload::Dag::chain(10_000)),
            runs: 1,
        },
        Case {
            id: "W2-fan-10k",
            dag: Arc::new(workload::Dag::fan(10_000)),
            runs: 1,
        },
        Case {
            id: "W3-sleep-100x100ms",
            dag: Arc::new(workload::Dag::sleeps(100, 100)),
            runs: 1,
        },
        Case {
            id: "W4-diamond20-x1000",
            dag: Arc::new(workload::Dag::diamond()),
            runs: 1_000,
        },
    ]
}

fn bench_case(c: &mut Criterion, rt: &tokio::runtime::Runtime, case: &Case) {
    let handle = rt
        .block_on(Orchestrator::start(engine::config_for(&case.dag)))
        .expect("orchestrator starts");
    let graph = engine::workflow(&case.dag, &handle);
    let mut group = c.benchmark_group(case.id);
    group
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(case.nodes()));
    let (id, runs) = (case.id, case.runs);
    for exec in Exec::ALL {
        group.bench_function(exec.name(), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (handle, graph, dag) = (handle.clone(), graph.clone(), case.dag.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        match (exec, runs) {
                            (Exec::Ours, 1) => {
                                engine::run(&handle, &graph).await;
                            }
                            (Exec::Ours, _) => engine::run_many(&handle, &graph, runs).await,
                            (Exec::Tokio, 1) => {
                                baseline::tokio_run(&dag).await;
                            }
                            (Exec::Tokio, _) => {
                                baseline::run_many(&dag, runs, |d| async move {
                                    baseline::tokio_run(&d).await
                                })
                                .await;
                            }
                            (Exec::Ractor, 1) => {
                                baseline::ractor_run(&dag).await;
                            }
                            (Exec::Ractor, _) => {
                                baseline::run_many(&dag, runs, |d| async move {
                                    baseline::ractor_run(&d).await
                                })
                                .await;
                            }
                        }
                    }
                    let elapsed = start.elapsed();
                    record(id, exec, elapsed / iters as u32);
                    elapsed
                }
            });
        });
    }
    group.finish();
    rt.block_on(handle.shutdown(ShutdownMode::Cancel))
        .expect("the engine shuts down");
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The table of medians, after criterion's own report.
fn summary(cases: &[Case]) {
    println!();
    println!("Medians of the last {SAMPLES} samples (per iteration):");
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "workload", "ours", "bare tokio", "bare ractor", "ours/ractor", "ours/tokio"
    );
    for case in cases {
        let [ours, tokio, ractor] = Exec::ALL.map(|e| median(case.id, e));
        let show = |d: Option<Duration>| d.map_or_else(|| "-".into(), ms);
        let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
            _ => "-".into(),
        };
        println!(
            "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12}",
            case.id,
            show(ours),
            show(tokio),
            show(ractor),
            ratio(ours, ractor),
            ratio(ours, tokio)
        );
        let critical: u64 = case
            .dag
            .work
            .iter()
            .map(|w| match w {
                workload::Work::Sleep(ms) => *ms,
                workload::Work::Echo => 0,
            })
            .max()
            .unwrap_or(0);
        for (exec, t) in Exec::ALL.iter().zip([ours, tokio, ractor]) {
            let Some(t) = t else { continue };
            if critical > 0 {
                let overhead = t.as_secs_f64() * 1e3 - critical as f64;
                println!(
                    "    {:<8} makespan {} vs {critical} ms critical path: +{overhead:.2} ms",
                    exec.name(),
                    ms(t)
                );
            } else {
                let per_node = t.as_secs_f64() * 1e6 / case.nodes() as f64;
                let rate = case.nodes() as f64 / t.as_secs_f64();
                println!(
                    "    {:<8} {per_node:.2} µs/node, {rate:.0} nodes/s",
                    exec.name()
                );
            }
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cases = cases();
    let mut c = Criterion::default().configure_from_args();
    for case in &cases {
        bench_case(&mut c, &rt, case);
    }
    c.final_summary();
    summary(&cases);
}
