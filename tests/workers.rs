//! Remote workers as real processes: a `shipsec serve --worker-listen` coordinator and
//! `shipsec worker` processes, killed, stopped and drained with real signals. What the
//! attempts did is read from a side-effect log their commands append to (`start` and
//! `end` lines with the attempt id and the worker's pid), and from the run's status and
//! events.

mod serve_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use serve_common::{Server, all_events, result, scratch, start_run};

/// One worker test at a time: each starts several processes, and a loaded machine
/// stretches heartbeats toward their lease.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Heartbeats every 0.2 s, leases of 2 s: expiry within seconds, yet far from a heartbeat.
const WORKERS: &str = "workers:\n  heartbeatSeconds: 0.2\n  leaseSeconds: 2\n";

/// The coordinator's configuration: fast leases, `/bin/sh` allowed for `core.process`.
fn coordinator_config(dir: &Path) -> String {
    serve_common::config(
        dir,
        &format!("{WORKERS}service:\n  definitions:\n    process:\n      executables: [/bin/sh]\n"),
    )
}

/// A coordinator with [`coordinator_config`], serving workers on 127.0.0.1, in a scratch
/// directory named after `name`; and the path of the side-effect log there.
fn coordinator(name: &str) -> (Server, PathBuf) {
    let dir = scratch(name);
    let config = coordinator_config(&dir);
    let server = Server::start(
        &dir,
        &["--config", &config, "--worker-listen", "127.0.0.1:0"],
    );
    (server, dir.join("effects.log"))
}

/// A `shipsec worker` process; killed when dropped.
struct Worker {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Worker {
    /// Starts a worker of `coordinator` (`HOST:PORT`, or a URL) and waits for its
    /// registration.
    fn start(coordinator: &str, id: &str, slots: u32) -> Worker {
        Worker::start_with(&[], coordinator, id, slots, &[])
    }

    /// As [`Worker::start`], run through `prefix` (`ip netns exec NS`), with `extra`
    /// arguments.
    fn start_with(
        prefix: &[&str],
        coordinator: &str,
        id: &str,
        slots: u32,
        extra: &[&str],
    ) -> Worker {
        let mut command = serve_common::command(prefix);
        command
            .arg("worker")
            .arg("--coordinator")
            .arg(if coordinator.contains("://") {
                coordinator.to_owned()
            } else {
                format!("http://{coordinator}")
            })
            .args([
                "--id",
                id,
                "--slots",
                &slots.to_string(),
                "--print-attempts",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().unwrap();
        let lines = serve_common::lines(child.stdout.take().unwrap());
        let worker = Worker { child, lines };
        worker.until(|l| l.starts_with("registered as "));
        worker
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The first line (within a minute) that `wanted` accepts.
    fn until(&self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the worker printed the line awaited");
            if wanted(&line) {
                return line;
            }
        }
    }

    /// The ids of the next `count` attempts it starts (its `started <attemptId>` lines):
    /// from then on it holds their leases.
    fn started(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| {
                let line = self.until(|l| l.starts_with("started "));
                line["started ".len()..].to_owned()
            })
            .collect()
    }

    /// Waits for the exit; its code.
    fn wait(&mut self) -> Option<i32> {
        self.child.wait().unwrap().code()
    }

    /// SIGTERM, then its tally: `(acknowledged, stale, stopped)`; it must exit 0.
    fn drain(mut self) -> (u64, u64, u64) {
        self.signal(libc::SIGTERM);
        let line = self.until(|l| l.starts_with("stopped: "));
        assert_eq!(self.wait(), Some(0));
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .collect();
        (numbers[0], numbers[1], numbers[2])
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command that appends `start <attemptId> <workerPid>` to `log`, runs for about `ms`
/// (ending early, without a trace, when its worker dies), then appends `end ...` and
/// prints `{"pid": <workerPid>}`.
fn logged(log: &Path, ms: u64) -> Value {
    let ticks = ms.div_ceil(20);
    let log = log.display();
    let script = format!(
        "echo \"start $SHIPSEC_ATTEMPT_ID $PPID\" >> {log}; i=0; \
         while [ $i -lt {ticks} ] && kill -0 $PPID 2>/dev/null; do sleep 0.02; i=$((i+1)); done; \
         kill -0 $PPID 2>/dev/null || exit 9; \
         echo \"end $SHIPSEC_ATTEMPT_ID $PPID\" >> {log}; echo \"{{\\\"pid\\\": $PPID}}\""
    );
    json!(["/bin/sh", "-c", script])
}

/// A remote `core.process` node running [`logged`].
fn remote(node: &str, log: &Path, ms: u64, depends_on: &[&str]) -> Value {
    json!({
        "ref": node,
        "componentId": "core.process",
        "params": {"command": logged(log, ms)},
        "dependsOn": depends_on,
        "runner": {"kind": "remote"},
        "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 0.01}
    })
}

/// `root -> n1..n<count> (remote, ms each) -> join`.
fn fan_out(log: &Path, count: usize, ms: u64) -> Value {
    let mut actions = vec![json!({"ref": "root", "componentId": "core.echo"})];
    let names: Vec<String> = (1..=count).map(|i| format!("n{i}")).collect();
    for name in &names {
        actions.push(remote(name, log, ms, &["root"]));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    actions.push(json!({"ref": "join", "componentId": "core.echo", "dependsOn": refs}));
    json!({"title": "fan-out", "actions": actions})
}

/// One line of the side-effect log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Effect {
    end: bool,
    attempt_id: String,
    worker_pid: u32,
}

fn effects(log: &Path) -> Vec<Effect> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut words = l.split(' ');
            let kind = words.next().unwrap();
            Effect {
                end: kind == "end",
                attempt_id: words.next().unwrap().to_owned(),
                worker_pid: words.next().unwrap().parse().unwrap(),
            }
        })
        .collect()
}

/// Each attempt's ending events (`COMPLETED`, `FAILED`, `RETRYING`), by `<node>/<attempt>`:
/// the outcomes the run counted.
fn outcomes(events: &[Value]) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    for e in events {
        if matches!(
            e["type"].as_str(),
            Some("COMPLETED" | "FAILED" | "RETRYING")
        ) && let Some(attempt) = e["metadata"]["attempt"].as_u64()
        {
            *counted
                .entry(format!("{}/{attempt}", e["nodeId"].as_str().unwrap()))
                .or_default() += 1;
        }
    }
    counted
}

/// The attempt ids' node refs (`<run>/<node>/<attempt>`).
fn node_of(attempt_id: &str) -> String {
    attempt_id.split('/').nth(1).unwrap().to_owned()
}

fn workers_addr(server: &Server) -> String {
    server.workers.clone().expect("the server serves workers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_attempts_are_reassigned_and_run_once_more() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (server, log) = coordinator("worker-kill");
    let client = server.client();
    let mut doomed = Worker::start(&workers_addr(&server), "doomed", 3);
    let run = start_run(&client, &fan_out(&log, 6, 1_500)).await;
    let held = doomed.started(3);
    let survivor = Worker::start(&workers_addr(&server), "survivor", 3);
    let killed_at = std::time::Instant::now();
    doomed.signal(libc::SIGKILL);
    // Reaped: its commands see it gone.
    doomed.wait();
    let ended = result(&client, &run).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    let held_nodes: BTreeSet<String> = held.iter().map(|a| node_of(a)).collect();
    for i in 1..=6 {
        let node = format!("n{i}");
        let attempts = ended["nodes"][&node]["attempts"].as_u64().unwrap();
        let expected = if held_nodes.contains(&node) { 2 } else { 1 };
        assert_eq!(attempts, expected, "{node}: {ended}");
        assert_eq!(
            ended["outputs"][&node]["stdout"]["pid"],
            survivor.pid(),
            "{node}"
        );
    }
    assert_eq!(ended["nodes"]["root"]["attempts"], 1);
    // Reassigned within a lease and a heartbeat (2.2 s), then 1.5 s of work: generously.
    assert!(killed_at.elapsed() < Duration::from_secs(30));
    let events = all_events(&client, &run).await;
    let counted = outcomes(&events);
    assert!(counted.values().all(|&n| n == 1), "{counted:?}");
    // Each attempt's end names its worker: the lost ones the killed worker, their retries
    // (and every node's record) the survivor.
    for e in &events {
        let node = e["nodeId"].as_str().unwrap();
        let worker = &e["metadata"]["workerId"];
        match e["type"].as_str() {
            Some("RETRYING") => assert_eq!(worker, "doomed", "{e}"),
            Some("COMPLETED") if node.starts_with('n') => assert_eq!(worker, "survivor", "{e}"),
            // root and join run in-process.
            Some("COMPLETED") => assert!(worker.is_null(), "{e}"),
            _ => {}
        }
    }
    let retried = events.iter().filter(|e| e["type"] == "RETRYING").count();
    assert_eq!(retried, held_nodes.len());
    assert_eq!(ended["nodes"]["n1"]["workerId"], "survivor", "{ended}");
    // The killed worker's commands stopped with it; each other attempt ran to its end once.
    let effects = effects(&log);
    let ends: Vec<&Effect> = effects.iter().filter(|e| e.end).collect();
    assert!(
        ends.iter().all(|e| e.worker_pid == survivor.pid()),
        "{ends:?}"
    );
    let distinct: BTreeSet<&str> = ends.iter().map(|e| e.attempt_id.as_str()).collect();
    assert_eq!(distinct.len(), 6);
    assert_eq!(ends.len(), 6);
    let (acknowledged, stale, stopped) = survivor.drain();
    assert_eq!((acknowledged, stale, stopped), (6, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_past_its_lease_is_stale_and_stops_its_attempts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (server, log) = coordinator("worker-stop");
    let client = server.client();
    let hung = Worker::start(&workers_addr(&server), "hung", 2);
    let mut def = fan_out(&log, 2, 1_000);
    // One attempt ends while its worker is stopped (its completion comes late), the
    // other is still running when it wakes.
    def["actions"][2]["params"]["command"] = logged(&log, 6_000);
    let run = start_run(&client, &def).await;
    hung.started(2);
    hung.signal(libc::SIGSTOP);
    let other = Worker::start(&workers_addr(&server), "other", 2);
    other.started(2);
    hung.signal(libc::SIGCONT);
    let ended = result(&client, &run).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    for node in ["n1", "n2"] {
        assert_eq!(ended["nodes"][node]["attempts"], 2, "{ended}");
        assert_eq!(
            ended["outputs"][node]["stdout"]["pid"],
            other.pid(),
            "{ended}"
        );
    }
    let counted = outcomes(&all_events(&client, &run).await);
    assert!(counted.values().all(|&n| n == 1), "{counted:?}");
    // Neither of its attempts was acknowledged: each was stale or stopped by itself.
    let (acknowledged, stale, stopped) = hung.drain();
    assert_eq!(acknowledged, 0);
    assert_eq!(stale + stopped, 2, "stale {stale}, stopped {stopped}");
    let (acknowledged, ..) = other.drain();
    assert_eq!(acknowledged, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_its_attempt_finishes_there_and_runs_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (server, log) = coordinator("worker-drain");
    let client = server.client();
    let mut draining = Worker::start(&workers_addr(&server), "draining", 2);
    let def = json!({"title": "drain", "actions": [
        remote("first", &log, 1_500, &[]),
        remote("second", &log, 10, &["first"]),
    ]});
    let run = start_run(&client, &def).await;
    let first = draining.started(1);
    draining.signal(libc::SIGTERM);
    draining.until(|l| l == "draining");
    let tally = draining.until(|l| l.starts_with("stopped: "));
    assert_eq!(tally, "stopped: 1 acknowledged, 0 stale, 0 stopped");
    assert_eq!(draining.wait(), Some(0));
    // The next node waits for a worker: the drained one took nothing more.
    let status = client.get(&format!("/v1/runs/{run}")).await.json();
    assert_eq!(status["nodes"]["first"]["status"], "COMPLETED", "{status}");
    let next = Worker::start(&workers_addr(&server), "next", 1);
    let ended = result(&client, &run).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    assert_eq!(ended["nodes"]["first"]["attempts"], 1);
    assert_eq!(ended["outputs"]["first"]["stdout"]["pid"], draining.pid());
    assert_eq!(ended["outputs"]["second"]["stdout"]["pid"], next.pid());
    let of_first: Vec<Effect> = effects(&log)
        .into_iter()
        .filter(|e| e.attempt_id == first[0])
        .collect();
    assert_eq!(of_first.len(), 2, "one start, one end: {of_first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_two_slots_never_holds_more_than_two_attempts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (server, log) = coordinator("worker-slots");
    let client = server.client();
    let worker = Worker::start(&workers_addr(&server), "narrow", 2);
    let run = start_run(&client, &fan_out(&log, 200, 20)).await;
    let ended = result(&client, &run).await;
    assert_eq!(ended["status"], "COMPLETED");
    // Replaying the log: the commands running at once, at every line.
    let (mut running, mut most) = (0_i32, 0_i32);
    let effects = effects(&log);
    for e in &effects {
        running += if e.end { -1 } else { 1 };
        most = most.max(running);
    }
    assert_eq!(effects.len(), 400);
    assert_eq!(most, 2, "at most two at once, and two were");
    let tally = worker.drain();
    assert_eq!(tally, (200, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_with_sigkill_resumes_and_old_fences_are_stale() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = scratch("worker-coordinator-kill");
    let log = dir.join("effects.log");
    let config = coordinator_config(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--config",
        config.as_str(),
        "--worker-listen",
        listen.as_str(),
    ];
    let mut server = Server::start(&dir, &args);
    let client = server.client();
    let worker = Worker::start(&listen, "steady", 4);
    let def = json!({"title": "restart", "actions": [
        remote("quick", &log, 10, &[]),
        remote("slow1", &log, 2_500, &["quick"]),
        remote("slow2", &log, 2_500, &["quick"]),
    ]});
    let run = start_run(&client, &def).await;
    let started = worker.started(3);
    server.signal(libc::SIGKILL);
    server.wait();
    let restarted = Server::start(&dir, &args);
    let client = restarted.client();
    let ended = result(&client, &run).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    assert_eq!(
        ended["nodes"]["quick"]["attempts"], 1,
        "not run again: {ended}"
    );
    let quick: Vec<Effect> = effects(&log)
        .into_iter()
        .filter(|e| node_of(&e.attempt_id) == "quick")
        .collect();
    assert_eq!(quick.len(), 2, "one start, one end: {quick:?}");
    for node in ["slow1", "slow2"] {
        assert_eq!(ended["nodes"][node]["attempts"], 2, "{ended}");
        assert_eq!(ended["nodes"][node]["workerId"], "steady", "{ended}");
    }
    // The attempts that ran across the crash were answered stale or stopped by the
    // worker; their retries were acknowledged.
    let (acknowledged, stale, stopped) = worker.drain();
    assert_eq!(
        stale + stopped,
        2,
        "{started:?}: stale {stale}, stopped {stopped}"
    );
    assert!(
        acknowledged >= 3,
        "quick, and the two retries: {acknowledged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_command_from_an_input_is_checked_by_the_coordinator_before_it_leaves() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (server, log) = coordinator("worker-policy");
    let client = server.client();
    let worker = Worker::start(&workers_addr(&server), "checked", 2);
    let pwned = log.with_file_name("pwned");
    let from = |handle: &str| json!({"command": {"sourceRef": "commands", "sourceHandle": handle}});
    let remote = json!({"kind": "remote"});
    // The commands are a node's outputs: the check at submission cannot see them.
    let def = json!({"title": "remote commands from inputs", "actions": [
        {"ref": "commands", "componentId": "core.echo", "params": {
            "allowed": logged(&log, 10),
            "refused": ["/usr/bin/touch", pwned.display().to_string()]
        }},
        {"ref": "ok", "componentId": "core.process", "dependsOn": ["commands"],
         "runner": remote, "inputMappings": from("allowed")},
        {"ref": "refused", "componentId": "core.process", "dependsOn": ["commands"],
         "runner": remote, "inputMappings": from("refused"),
         "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 0.01}}
    ]});
    let run = start_run(&client, &def).await;
    let ended = result(&client, &run).await;
    let nodes = &ended["nodes"];
    assert_eq!(nodes["ok"]["status"], "COMPLETED", "{ended}");
    assert_eq!(nodes["ok"]["workerId"], "checked", "{ended}");
    let refused = &nodes["refused"];
    assert_eq!(refused["status"], "FAILED", "{ended}");
    assert_eq!(refused["error"]["type"], "PermissionError", "{ended}");
    assert_eq!(refused["attempts"], 1, "a refusal is not retried: {ended}");
    assert!(refused["workerId"].is_null(), "it never left: {ended}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("service.definitions.process.executables"),
        "{message}"
    );
    assert!(!pwned.exists(), "the refused command ran");
    let summary = worker.drain();
    assert_eq!(
        summary,
        (1, 0, 0),
        "only the allowed command reached the worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_worker_a_remote_node_stays_queued_until_its_queue_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (server, log) = coordinator("worker-none");
    let client = server.client();
    let def = json!({
        "title": "alone",
        "actions": [remote("alone", &log, 10, &[])],
        "nodes": {"alone": {"ref": "alone", "queueTimeoutSeconds": 1.5}}
    });
    let run = start_run(&client, &def).await;
    let (_, mut live) = client.stream(&format!("/v1/runs/{run}/events"), &[]).await;
    live.until_trace("alone was queued", |e| {
        e["type"] == "QUEUED" && e["nodeId"] == "alone"
    })
    .await;
    let status = client.get(&format!("/v1/runs/{run}")).await.json();
    assert_eq!(status["nodes"]["alone"]["status"], "QUEUED", "{status}");
    let ended = result(&client, &run).await;
    assert_eq!(ended["status"], "FAILED", "{ended}");
    let events = all_events(&client, &run).await;
    let failed = events.iter().find(|e| e["type"] == "FAILED").unwrap();
    assert_eq!(failed["error"]["type"], "QueueTimeoutError", "{failed}");
    assert!(effects(&log).is_empty());
}

/// The engine's definition check: a remote node needs workers, and takes only `queue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_node_needs_a_coordinator_with_workers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = scratch("worker-refused");
    let log = dir.join("effects.log");
    let config = coordinator_config(&dir);
    let server = Server::start(&dir, &["--config", &config]);
    let client = server.client();
    let def = json!({"title": "x", "actions": [remote("r", &log, 10, &[])]});
    let answer = client
        .post_json("/v1/runs", &json!({"definition": def}))
        .await;
    assert_eq!(
        answer.status,
        422,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let text = String::from_utf8_lossy(&answer.body).to_string();
    assert!(text.contains("actions[0].runner.kind"), "{text}");
    assert!(text.contains("--worker-listen"), "{text}");
}

mod calls {
    //! Bad calls against a real coordinator, each with its own gRPC status.

    use shipsec_orchestrator::worker::PROTOCOL_VERSION;
    use shipsec_orchestrator::worker::proto::{self, worker_client::WorkerClient};
    use tonic::Code;
    use tonic::transport::Channel;

    /// A message that puts a number where `worker_id`'s text belongs: not decodable as
    /// any of the service's requests.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Garbled {
        #[prost(uint64, tag = "1")]
        worker_id: u64,
    }

    fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    }

    fn registration(worker: &str) -> proto::RegisterRequest {
        proto::RegisterRequest {
            worker_id: worker.into(),
            sdk: "test/0".into(),
            protocol_version: PROTOCOL_VERSION,
            components: vec![proto::ComponentSpec {
                id: "core.echo".into(),
                summary: String::new(),
            }],
            slots: 1,
            ..proto::RegisterRequest::default()
        }
    }

    async fn register(
        client: &mut WorkerClient<Channel>,
        message: proto::RegisterRequest,
        token: Option<&str>,
    ) -> Code {
        match client.register(with_token(message, token)).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    }

    async fn complete(
        client: &mut WorkerClient<Channel>,
        outcome: Option<proto::complete_request::Outcome>,
    ) -> Result<proto::Verdict, Code> {
        let call = proto::CompleteRequest {
            attempt_id: "no-run/nothing/1".into(),
            fence: 1,
            outcome,
            worker_id: "w1".into(),
        };
        client
            .complete(with_token(call, Some("secret-1")))
            .await
            .map(|a| a.into_inner().verdict())
            .map_err(|s| s.code())
    }

    fn success(output: &str) -> Option<proto::complete_request::Outcome> {
        Some(proto::complete_request::Outcome::Success(proto::Success {
            output_json: output.into(),
            active_ports: vec![],
            routes: false,
        }))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_calls_get_their_own_grpc_statuses_and_the_coordinator_goes_on() {
        let _one = super::ONE_AT_A_TIME.lock().await;
        let dir = super::scratch("worker-calls");
        let tokens = dir.join("workers.tokens");
        std::fs::write(&tokens, "# worker token\nw1 secret-1\nw2 secret-2\n").unwrap();
        let tokens = tokens.display().to_string();
        let server = super::Server::start(
            &dir,
            &[
                "--worker-listen",
                "127.0.0.1:0",
                "--worker-token-file",
                &tokens,
            ],
        );
        let url = format!("http://{}", super::workers_addr(&server));
        let mut client = WorkerClient::connect(url.clone()).await.unwrap();
        let w1 = Some("secret-1");

        // Who calls.
        assert_eq!(
            register(&mut client, registration("w1"), None).await,
            Code::Unauthenticated
        );
        assert_eq!(
            register(&mut client, registration("w1"), Some("nope")).await,
            Code::Unauthenticated
        );
        assert_eq!(
            register(&mut client, registration("w2"), w1).await,
            Code::PermissionDenied
        );
        // What it says.
        let mut other_version = registration("w1");
        other_version.protocol_version = PROTOCOL_VERSION + 1;
        assert_eq!(
            register(&mut client, other_version, w1).await,
            Code::FailedPrecondition
        );
        let mut no_slots = registration("w1");
        no_slots.slots = 0;
        assert_eq!(
            register(&mut client, no_slots, w1).await,
            Code::InvalidArgument
        );
        let mut nothing_hosted = registration("w1");
        nothing_hosted.components.clear();
        assert_eq!(
            register(&mut client, nothing_hosted, w1).await,
            Code::InvalidArgument
        );
        let mut long_id = registration("w1");
        long_id.components[0].id = "c".repeat(300);
        assert_eq!(
            register(&mut client, long_id, w1).await,
            Code::InvalidArgument
        );
        // Out of order: polls and heartbeats before registering.
        let poll = proto::PollRequest {
            worker_id: "w1".into(),
            free_slots: 1,
            wait_ms: 0,
        };
        let polled = client.poll_attempts(with_token(poll.clone(), w1)).await;
        assert_eq!(polled.unwrap_err().code(), Code::FailedPrecondition);
        let beat = proto::HeartbeatRequest {
            worker_id: "w1".into(),
            attempts: vec![],
        };
        let beaten = client.heartbeat(with_token(beat, w1)).await;
        assert_eq!(beaten.unwrap_err().code(), Code::FailedPrecondition);
        let drained = client
            .drain(with_token(
                proto::DrainRequest {
                    worker_id: "w1".into(),
                },
                w1,
            ))
            .await;
        assert_eq!(drained.unwrap_err().code(), Code::FailedPrecondition);

        assert_eq!(
            register(&mut client, registration("w1"), w1).await,
            Code::Ok
        );
        assert!(client.poll_attempts(with_token(poll, w1)).await.is_ok());
        // Completions: malformed ones refused, one of an attempt nobody leased is stale.
        assert_eq!(
            complete(&mut client, None).await,
            Err(Code::InvalidArgument)
        );
        assert_eq!(
            complete(&mut client, success("[1, 2]")).await,
            Err(Code::InvalidArgument)
        );
        assert_eq!(
            complete(&mut client, success("{\"a\":")).await,
            Err(Code::InvalidArgument)
        );
        let untyped = Some(proto::complete_request::Outcome::Failure(
            proto::Failure::default(),
        ));
        assert_eq!(
            complete(&mut client, untyped).await,
            Err(Code::InvalidArgument)
        );
        let unrouted = Some(proto::complete_request::Outcome::Success(proto::Success {
            output_json: "{}".into(),
            active_ports: vec!["a".into()],
            routes: false,
        }));
        assert_eq!(
            complete(&mut client, unrouted).await,
            Err(Code::InvalidArgument)
        );
        assert_eq!(
            complete(&mut client, success("{}")).await,
            Ok(proto::Verdict::Stale)
        );

        // Oversized: past the 64 MiB message limit.
        let mut huge = registration("w1");
        huge.components[0].summary = "x".repeat(65 << 20);
        let mut big_client = WorkerClient::connect(url.clone())
            .await
            .unwrap()
            .max_encoding_message_size(128 << 20);
        assert_eq!(register(&mut big_client, huge, w1).await, Code::OutOfRange);
        // Malformed bytes: not a request of this service.
        let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut raw = tonic::client::Grpc::new(channel);
        raw.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/shipsec.worker.v1.Worker/Register",
        );
        let garbled: Result<tonic::Response<Garbled>, tonic::Status> = raw
            .unary(
                with_token(Garbled { worker_id: 7 }, w1),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(garbled.unwrap_err().code(), Code::Internal);

        // Nothing broke: the coordinator still registers workers and serves the API.
        assert_eq!(
            register(&mut client, registration("w1"), w1).await,
            Code::Ok
        );
        let health = server.client().get("/readyz").await;
        assert_eq!(health.status, 200);
    }
}

mod hosts {
    //! The coordinator and three workers in network namespaces of the test's own, joined
    //! by veth pairs; one worker's link is cut mid-run.

    use std::collections::BTreeSet;
    use std::process::Command;

    use super::{Server, Worker, effects, fan_out, node_of, result, start_run};

    /// Namespaces and links made by the test, deleted when dropped (their veths go with
    /// them).
    struct Namespaces(Vec<String>);

    impl Drop for Namespaces {
        fn drop(&mut self) {
            for ns in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }

    fn ip(args: &[&str]) {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {}", args.join(" "));
    }

    /// The coordinator's namespace and three workers', each worker `i` on its own veth
    /// pair: the coordinator at 10.201.i.1, the worker at 10.201.i.2. `None` where
    /// namespaces cannot be made (not root, no support).
    fn namespaces() -> Option<Namespaces> {
        let tag = std::process::id() % 100_000;
        let coordinator = format!("shipsec-c{tag}");
        let made = Command::new("ip")
            .args(["netns", "add", &coordinator])
            .status();
        if !made.is_ok_and(|s| s.success()) {
            return None;
        }
        let mut all = Namespaces(vec![coordinator.clone()]);
        for i in 1..=3 {
            let worker = format!("shipsec-w{tag}-{i}");
            ip(&["netns", "add", &worker]);
            all.0.push(worker.clone());
            let (near, far) = (format!("sc{tag}-{i}"), format!("sw{tag}-{i}"));
            ip(&[
                "link",
                "add",
                &near,
                "netns",
                &coordinator,
                "type",
                "veth",
                "peer",
                "name",
                &far,
                "netns",
                &worker,
            ]);
            let c = |args: &[&str]| ip(&[&["-n", &coordinator][..], args].concat());
            let w = |args: &[&str]| ip(&[&["-n", &worker][..], args].concat());
            c(&["addr", "add", &format!("10.201.{i}.1/24"), "dev", &near]);
            w(&["addr", "add", &format!("10.201.{i}.2/24"), "dev", &far]);
            c(&["link", "set", &near, "up"]);
            w(&["link", "set", &far, "up"]);
            w(&["link", "set", "lo", "up"]);
        }
        ip(&["-n", &coordinator, "link", "set", "lo", "up"]);
        Some(all)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_cut_off_mid_run_loses_its_attempts_to_the_others() {
        let _one = super::ONE_AT_A_TIME.lock().await;
        let Some(ns) = namespaces() else {
            eprintln!(
                "SKIPPED a_worker_cut_off_mid_run_loses_its_attempts_to_the_others: cannot make network namespaces here (needs root and `ip netns`)"
            );
            return;
        };
        let tag = std::process::id() % 100_000;
        let dir = super::scratch("worker-hosts");
        let log = dir.join("effects.log");
        let config = super::coordinator_config(&dir);
        let tokens = dir.join("workers.tokens");
        std::fs::write(
            &tokens,
            "w1 token-1-of-the-hosts-test\nw2 token-2-of-the-hosts-test\nw3 token-3-of-the-hosts-test\n",
        )
        .unwrap();
        for i in 1..=3 {
            std::fs::write(
                dir.join(format!("w{i}.token")),
                format!("token-{i}-of-the-hosts-test\n"),
            )
            .unwrap();
        }
        let socket = format!("unix:{}", dir.join("api.sock").display());
        let server = Server::start_through(
            &["ip", "netns", "exec", &ns.0[0]],
            &dir,
            &["--listen", &socket],
            &[
                "--config",
                &config,
                "--worker-listen",
                "0.0.0.0:7233",
                "--worker-token-file",
                &tokens.display().to_string(),
            ],
            &[],
        );
        let client = server.client();
        let workers: Vec<Worker> = (1..=3)
            .map(|i| {
                let token = dir.join(format!("w{i}.token")).display().to_string();
                Worker::start_with(
                    &["ip", "netns", "exec", &ns.0[i]],
                    &format!("10.201.{i}.1:7233"),
                    &format!("w{i}"),
                    3,
                    &["--token-file", &token],
                )
            })
            .collect();
        let run = start_run(&client, &fan_out(&log, 9, 3_000)).await;
        let cut = workers[1].started(3);
        ip(&["-n", &ns.0[0], "link", "set", &format!("sc{tag}-2"), "down"]);
        let ended = result(&client, &run).await;
        assert_eq!(ended["status"], "COMPLETED", "{ended}");
        let moved: BTreeSet<String> = cut.iter().map(|a| node_of(a)).collect();
        let others = [workers[0].pid(), workers[2].pid()];
        for i in 1..=9 {
            let node = format!("n{i}");
            let expected = if moved.contains(&node) { 2 } else { 1 };
            assert_eq!(
                ended["nodes"][&node]["attempts"], expected,
                "{node}: {ended}"
            );
            let pid = ended["outputs"][&node]["stdout"]["pid"].as_u64().unwrap();
            assert!(
                others.contains(&u32::try_from(pid).unwrap()),
                "{node} ran on {pid}"
            );
        }
        // The cut-off worker ran its three to their end too, but none was counted.
        let ends = effects(&log).into_iter().filter(|e| e.end).count();
        assert!(ends >= 9, "{ends}");
        // The processes go before their namespaces.
        drop(workers);
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_over_tls_run_attempts_and_plaintext_is_not_spoken() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = scratch("worker-tls");
    let log = dir.join("effects.log");
    let config = coordinator_config(&dir);
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let (cert, key, ca) = (
        tls.join("coordinator.pem").display().to_string(),
        tls.join("coordinator.key").display().to_string(),
        tls.join("ca.pem").display().to_string(),
    );
    let tokens = dir.join("workers.tokens");
    std::fs::write(&tokens, "sealed secret-sealed\n").unwrap();
    std::fs::write(dir.join("sealed.token"), "secret-sealed\n").unwrap();
    let server = Server::start(
        &dir,
        &[
            "--config",
            &config,
            "--worker-listen",
            "127.0.0.1:0",
            "--worker-token-file",
            &tokens.display().to_string(),
            "--worker-tls-cert",
            &cert,
            "--worker-tls-key",
            &key,
        ],
    );
    let addr = workers_addr(&server);
    let token = dir.join("sealed.token").display().to_string();
    let url = format!("https://{addr}");
    let extra = ["--tls-ca", ca.as_str(), "--token-file", token.as_str()];
    let sealed = Worker::start_with(&[], &url, "sealed", 2, &extra);
    let client = server.client();
    let run = start_run(&client, &fan_out(&log, 3, 10)).await;
    let ended = result(&client, &run).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    assert_eq!(ended["outputs"]["n1"]["stdout"]["pid"], sealed.pid());
    // Plaintext gRPC gets no answer from a TLS listener.
    let plain = shipsec_orchestrator::worker::proto::worker_client::WorkerClient::connect(format!(
        "http://{addr}"
    ))
    .await;
    if let Ok(mut plain) = plain {
        let call = shipsec_orchestrator::worker::proto::DrainRequest {
            worker_id: "sealed".into(),
        };
        assert!(plain.drain(call).await.is_err());
    }
    assert_eq!(sealed.drain(), (3, 0, 0));
}

/// The engine's caps count local and remote attempts together (docs/semantics.md §8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_cap_holds_across_local_and_remote_attempts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = scratch("worker-caps");
    let log = dir.join("effects.log");
    let config = serve_common::config(
        &dir,
        &format!(
            "{WORKERS}maxConcurrentNodes: 2\nservice:\n  definitions:\n    process:\n      executables: [/bin/sh]\n"
        ),
    );
    let server = Server::start(
        &dir,
        &["--config", &config, "--worker-listen", "127.0.0.1:0"],
    );
    let client = server.client();
    let worker = Worker::start(&workers_addr(&server), "roomy", 8);
    let mut def = fan_out(&log, 12, 60);
    // Every other node runs on the coordinator's host instead.
    for i in (1..=12).step_by(2) {
        def["actions"][i].as_object_mut().unwrap().remove("runner");
    }
    let run = start_run(&client, &def).await;
    let ended = result(&client, &run).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    // Replaying the side-effect log: the commands running at once, local and remote.
    let (mut running, mut most) = (0_i32, 0_i32);
    let effects = effects(&log);
    for e in &effects {
        running += if e.end { -1 } else { 1 };
        most = most.max(running);
    }
    let remote = effects
        .iter()
        .filter(|e| e.worker_pid == worker.pid())
        .count();
    assert_eq!(remote, 12, "six remote attempts, a start and an end each");
    assert_eq!(most, 2, "never more than the cap, and the cap was reached");
    let (acknowledged, ..) = worker.drain();
    assert_eq!(acknowledged, 6);
}
