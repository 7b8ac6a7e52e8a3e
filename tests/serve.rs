//! `shipsec serve` end to end: a real server process, a real HTTP client (hyper) over
//! 127.0.0.1 and a Unix socket. Every endpoint; idempotency (repeats, conflicts,
//! concurrent duplicates: one run); the SSE stream followed to the end and resumed from
//! every position with no gap or duplicate; cancel and terminate mid-run; auth; each
//! limit; graceful shutdown with a request in flight; SIGKILL and restart; a subscriber
//! that falls behind, disconnected and resumed; the request time limit (and the streams
//! it spares); commands that arrive through inputs, refused as their attempt starts; the
//! HTTP metrics at an OTLP receiver.

mod serve_common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use serve_common::{Client, Server, all_events, result, scratch, start_run};

fn recon() -> Value {
    serde_json::from_str(&std::fs::read_to_string("examples/recon.json").unwrap()).unwrap()
}

/// a -> {b, c} -> d, sleeping `ms` in b and c (retried once, as after a crash).
fn diamond(ms: u64) -> Value {
    let retry = json!({"maxAttempts": 2, "initialIntervalSeconds": 0.01});
    json!({
        "title": "diamond",
        "actions": [
            {"ref": "a", "componentId": "core.echo"},
            {"ref": "b", "componentId": "core.sleep", "params": {"ms": ms}, "dependsOn": ["a"], "retryPolicy": retry},
            {"ref": "c", "componentId": "core.sleep", "params": {"ms": ms}, "dependsOn": ["a"], "retryPolicy": retry},
            {"ref": "d", "componentId": "core.echo", "dependsOn": ["b", "c"]}
        ]
    })
}

/// Field `field` of every element of the array `list`, as numbers.
fn numbers(list: &Value, field: &str) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e[field].as_u64().unwrap())
        .collect()
}

/// Field `field` of every element of the array `list`, as text.
fn texts<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e[field].as_str().unwrap())
        .collect()
}

/// Every endpoint once, against `client`.
async fn every_endpoint(client: &Client) {
    assert_eq!(client.get("/healthz").await.status, 200);
    assert_eq!(client.get("/readyz").await.json()["status"], "ready");
    let answer = client
        .post_json(
            "/v1/runs",
            &json!({"definition": recon(), "inputs": {"target": "example.com"}, "runId": "recon-1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
        )
        .await;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.headers["location"], "/v1/runs/recon-1");
    let result = result(client, "recon-1").await;
    assert_eq!(result["runId"], "recon-1");
    let status = client.get("/v1/runs/recon-1").await.json();
    assert_eq!(status["status"], result["status"]);
    assert_eq!(status["progress"]["completed"], status["progress"]["total"]);
    assert_eq!(
        status["traceId"], "0af7651916cd43dd8448eb211c80319c",
        "{status}"
    );
    for (node, record) in status["nodes"].as_object().unwrap() {
        assert_eq!(record["status"], result["nodes"][node]["status"]);
    }
    // The graph the run view draws: every node in a topological order, every edge.
    let graph = client.get("/v1/runs/recon-1/graph").await.json();
    let refs = texts(&graph["nodes"], "ref");
    assert_eq!(refs.len(), 7);
    assert_eq!(refs[0], "start");
    let at = |r: &str| refs.iter().position(|x| *x == r).unwrap();
    assert!(
        at("report") > at("dns") && at("notify") > at("vulnscan"),
        "{refs:?}"
    );
    assert_eq!(graph["edges"].as_array().unwrap().len(), 8);
    let report = &graph["nodes"][at("report")];
    assert_eq!(
        (report["join"].as_str(), report["layer"].as_u64()),
        (Some("all"), Some(2))
    );
    let error_edges = texts(&graph["edges"], "kind")
        .into_iter()
        .filter(|k| *k == "error")
        .count();
    assert_eq!(error_edges, 1);
    let missing = client.get("/v1/runs/no-such-run/graph").await;
    assert_eq!(missing.code(), "RUN_NOT_FOUND");
    let events = client.get("/v1/runs/recon-1/events").await.json();
    let seqs = numbers(&events, "seq");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let later = client
        .get("/v1/runs/recon-1/events?after=3&format=shipsec")
        .await
        .json();
    assert_eq!(later.as_array().unwrap().len(), seqs.len() - 3);
    assert_eq!(later[0]["sequence"], 4);
    assert!(later[0]["type"].as_str().unwrap().starts_with("NODE_"));
    assert!(later[0]["data"]["_metadata"]["engineType"].is_string());
    let list = client.get("/v1/runs?limit=10").await.json();
    assert_eq!(list["runs"][0]["runId"], "recon-1");
    let completed = client
        .get(&format!(
            "/v1/runs?status={}",
            result["status"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(completed["runs"].as_array().unwrap().len(), 1);
    let valid = client
        .post_json("/v1/validate", &json!({"definition": recon()}))
        .await;
    assert_eq!(valid.status, 200);
    assert_eq!(valid.json()["valid"], true);
    assert_eq!(valid.json()["nodes"], 7);
    let components = client.get("/v1/components").await.json();
    let ids = texts(&components["components"], "id");
    assert!(
        ids.contains(&"core.echo") && ids.contains(&"core.process"),
        "{ids:?}"
    );
    let missing = client.get("/v1/runs/no-such-run").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (404, "RUN_NOT_FOUND")
    );
    let missing = client.get("/v1/runs/no-such-run/events").await;
    assert_eq!(missing.code(), "RUN_NOT_FOUND");
    let nowhere = client.get("/v2/nothing").await;
    assert_eq!(
        (nowhere.status, nowhere.code().as_str()),
        (404, "NOT_FOUND")
    );
    let ended = client
        .call("POST", "/v1/runs/recon-1/cancel", &[], b"")
        .await;
    assert_eq!(
        (ended.status, ended.code().as_str()),
        (409, "RUN_ALREADY_ENDED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_over_tcp_and_a_unix_socket() {
    let dir = scratch("endpoints");
    let tcp = Server::start(&dir.join("tcp"), &[]);
    every_endpoint(&tcp.client()).await;
    let socket = dir.join("api.sock");
    let listen = format!("unix:{}", socket.display());
    let unix = Server::start_on(&dir.join("unix"), &["--listen", &listen], &[], None);
    every_endpoint(&unix.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_gives_one_run() {
    let dir = scratch("idempotency");
    let server = Server::start(&dir, &[]);
    let client = server.client();
    let body = json!({"definition": diamond(1), "inputs": {"x": 1}});
    let key = [("idempotency-key", "key-1")];
    let first = client.post_with("/v1/runs", &key, &body).await;
    assert_eq!(first.status, 201);
    let again = client.post_with("/v1/runs", &key, &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["runId"], first.json()["runId"]);
    let other = client
        .post_with(
            "/v1/runs",
            &key,
            &json!({"definition": diamond(1), "inputs": {"x": 2}}),
        )
        .await;
    assert_eq!(
        (other.status, other.code().as_str()),
        (409, "IDEMPOTENCY_CONFLICT")
    );
    // An id that exists, without the key: RUN_EXISTS.
    let id = first.json()["runId"].as_str().unwrap().to_owned();
    let taken = client
        .post_json("/v1/runs", &json!({"definition": diamond(1), "runId": id}))
        .await;
    assert_eq!((taken.status, taken.code().as_str()), (409, "RUN_EXISTS"));
    // Concurrent duplicates: exactly one run.
    let key = [("idempotency-key", "key-2")];
    let body = json!({"definition": diamond(1)});
    let tries = (0..16).map(|_| {
        let (client, body) = (client.clone(), body.clone());
        tokio::spawn(async move { client.post_with("/v1/runs", &key, &body).await })
    });
    let mut created = 0;
    let mut ids = BTreeSet::new();
    for t in tries {
        let answer = t.await.unwrap();
        assert!(matches!(answer.status, 200 | 201), "{}", answer.status);
        created += usize::from(answer.status == 201);
        ids.insert(answer.json()["runId"].as_str().unwrap().to_owned());
    }
    assert_eq!((created, ids.len()), (1, 1));
    let listed = client.get("/v1/runs?limit=100").await.json();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 2);
}

fn traces(events: &[serve_common::SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.event == "trace")
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_a_run_to_its_end_and_resumes_from_every_position() {
    let dir = scratch("sse");
    let server = Server::start(&dir, &[]);
    let client = server.client();
    let run_id = start_run(&client, &diamond(300)).await;
    let (status, mut live) = client
        .stream(&format!("/v1/runs/{run_id}/events"), &[])
        .await;
    assert_eq!(status, 200);
    let all = live.all().await;
    assert_eq!(all.first().unwrap().event, "status");
    let n = traces(&all).len() as u64;
    assert_eq!(traces(&all), (1..=n).collect::<Vec<_>>());
    let tail: Vec<&str> = all.iter().rev().take(2).map(|e| e.event.as_str()).collect();
    assert_eq!(tail, ["terminal", "status"]);
    let terminal: Value = serde_json::from_str(&all.last().unwrap().data).unwrap();
    assert_eq!(terminal["status"], "COMPLETED");
    // Resumed from every position of the finished run's stream.
    for k in 0..=n {
        let id = k.to_string();
        let (_, mut resumed) = client
            .stream(
                &format!("/v1/runs/{run_id}/events"),
                &[("last-event-id", &id)],
            )
            .await;
        let events = resumed.all().await;
        assert_eq!(
            traces(&events),
            (k + 1..=n).collect::<Vec<_>>(),
            "after {k}"
        );
        assert_eq!(events.last().unwrap().event, "terminal");
        let shipsec = client
            .get(&format!(
                "/v1/runs/{run_id}/events?after={k}&format=shipsec"
            ))
            .await
            .json();
        let seqs = numbers(&shipsec, "sequence");
        assert_eq!(seqs, (k + 1..=n).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_terminate_mid_run() {
    let dir = scratch("cancel");
    let server = Server::start(&dir, &[]);
    let client = server.client();
    for (verb, status) in [("cancel", "CANCELLED"), ("terminate", "TERMINATED")] {
        let run_id = start_run(&client, &diamond(60_000)).await;
        // Waits until the sleeps run, on the run's own events.
        let (_, mut live) = client
            .stream(&format!("/v1/runs/{run_id}/events"), &[])
            .await;
        live.until_started("b", 1).await;
        let answer = client
            .call("POST", &format!("/v1/runs/{run_id}/{verb}"), &[], b"")
            .await;
        assert_eq!(
            answer.status,
            202,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let ended = result(&client, &run_id).await;
        assert_eq!(ended["status"], status, "{ended}");
        assert_eq!(live.all().await.last().unwrap().event, "terminal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_when_configured() {
    let dir = scratch("auth");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# operators\nsecret-one\n\nsecret-two\n").unwrap();
    let file = tokens.display().to_string();
    let server = Server::start_on(
        &dir,
        &["--listen", "127.0.0.1:0"],
        &["--token-file", &file],
        None,
    );
    let client = server.client();
    for token in [None, Some("wrong"), Some("secret-on")] {
        let answer = client.with_token(token).get("/v1/runs").await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (401, "UNAUTHENTICATED"),
            "{token:?}"
        );
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(client.with_token(None).get("/healthz").await.status, 200);
    // The run view's pages hold no data: served without a token (their requests carry it).
    for page in ["/", "/runs/any", "/ui/app.js", "/ui/app.css"] {
        assert_eq!(
            client.with_token(None).get(page).await.status,
            200,
            "{page}"
        );
    }
    assert_eq!(
        client
            .with_token(None)
            .get("/v1/runs/any/graph")
            .await
            .status,
        401
    );
    assert_eq!(
        client
            .with_token(Some("secret-one"))
            .get("/v1/runs")
            .await
            .status,
        200
    );
    assert_eq!(
        client
            .with_token(Some("secret-two"))
            .get("/readyz")
            .await
            .status,
        200
    );
}

#[test]
fn without_a_token_it_refuses_to_listen_beyond_loopback() {
    let dir = scratch("open");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shipsec"))
        .args(["serve", "--listen", "0.0.0.0:0", "--durability", "off"])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("SHIPSEC_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without an API token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_is_a_clear_error() {
    let dir = scratch("limits");
    let file = serve_common::config(
        &dir,
        "maxActiveRuns: 1\nservice:\n  maxBodyBytes: 4096\n  maxSubscribersPerRun: 1\n  definitions:\n    process:\n      executables: [/bin/echo]\n",
    );
    let server = Server::start(&dir, &["--config", &file]);
    let client = server.client();
    let big = json!({"definition": {"title": "x".repeat(5000), "actions": []}});
    let answer = client.post_json("/v1/runs", &big).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (413, "PAYLOAD_TOO_LARGE")
    );
    let answer = client
        .call(
            "POST",
            "/v1/runs",
            &[("content-type", "application/json")],
            b"{\n  \"definition\": [1,\n}",
        )
        .await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "MALFORMED_JSON")
    );
    assert_eq!(answer.json()["error"]["details"]["line"], 3);
    let answer = client
        .call("POST", "/v1/runs", &[("content-type", "text/plain")], b"{}")
        .await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (415, "UNSUPPORTED_MEDIA_TYPE")
    );
    let bad = json!({"definition": {"title": "bad", "actions": [{"ref": "a", "componentId": "core.nope"}]}});
    let answer = client.post_json("/v1/runs", &bad).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (422, "INVALID_DEFINITION")
    );
    let problems = &answer.json()["error"]["details"]["problems"];
    assert!(
        problems[0]["path"]
            .as_str()
            .unwrap()
            .starts_with("actions[0]"),
        "{problems}"
    );
    // A token holder cannot start `sh`: the allow-list names /bin/echo only.
    let shell = json!({"definition": {"title": "sh", "actions": [
        {"ref": "pwn", "componentId": "core.process", "params": {"command": ["/bin/sh", "-c", "touch /tmp/pwned"]}}
    ]}});
    let answer = client.post_json("/v1/runs", &shell).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (422, "INVALID_DEFINITION")
    );
    assert!(
        answer.json()["error"]["details"]["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("node `pwn`")
    );
    // Admission: one run at a time.
    let running = start_run(&client, &diamond(60_000)).await;
    let answer = client
        .post_json("/v1/runs", &json!({"definition": diamond(1)}))
        .await;
    assert_eq!((answer.status, answer.code().as_str()), (429, "OVERLOADED"));
    assert_eq!(answer.headers["retry-after"], "1");
    // One subscriber per run.
    let (status, _first) = client
        .stream(&format!("/v1/runs/{running}/events"), &[])
        .await;
    assert_eq!(status, 200);
    let (status, _) = client
        .stream(&format!("/v1/runs/{running}/events"), &[])
        .await;
    assert_eq!(status, 429);
    let answer = client
        .get(&format!("/v1/runs/{running}/result?wait=bogus"))
        .await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "INVALID_REQUEST")
    );
    let answer = client
        .get(&format!("/v1/runs/{running}/result?wait=0.2"))
        .await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.json()["status"], "RUNNING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_the_next_start_resumes() {
    let dir = scratch("sigterm");
    let mut server = Server::start(&dir, &[]);
    let client = server.client();
    let run_id = start_run(&client, &diamond(1_500)).await;
    let waiting = {
        let client = client.clone();
        let path = format!("/v1/runs/{run_id}/result?wait=120");
        tokio::spawn(async move { client.get(&path).await })
    };
    // The waiting request is in: the server said so by starting the sleeps.
    let (_, mut live) = client
        .stream(&format!("/v1/runs/{run_id}/events"), &[])
        .await;
    live.until_started("b", 1).await;
    server.signal(libc::SIGTERM);
    let answer = waiting.await.unwrap();
    assert_eq!(
        answer.status,
        202,
        "the wait ends with the server: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(server.wait(), Some(0));
    let restarted = Server::start(&dir, &[]);
    let ended = result(&restarted.client(), &run_id).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    // Nothing ran twice: the sleeps ended within the grace period before the stop.
    for node in ["a", "b", "c", "d"] {
        assert_eq!(ended["nodes"][node]["attempts"], 1, "{node}: {ended}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_sigkill_resumes_its_runs_and_serves_them() {
    let dir = scratch("sigkill");
    let mut server = Server::start(&dir, &[]);
    let client = server.client();
    let done = start_run(&client, &diamond(1)).await;
    let before = result(&client, &done).await;
    let running = start_run(&client, &diamond(60_000)).await;
    let (_, mut live) = client
        .stream(&format!("/v1/runs/{running}/events"), &[])
        .await;
    live.until_started("c", 1).await;
    server.signal(libc::SIGKILL);
    server.wait();
    let restarted = Server::start(&dir, &[]);
    let client = restarted.client();
    assert_eq!(result(&client, &done).await, before);
    // The sleeps were lost with the process: each runs again, its second attempt.
    let (_, mut live) = client
        .stream(&format!("/v1/runs/{running}/events"), &[])
        .await;
    live.until_started("c", 2).await;
    let status = client.get(&format!("/v1/runs/{running}")).await.json();
    assert_eq!(status["status"], "RUNNING", "{status}");
    assert_eq!(status["nodes"]["c"]["attempts"], 2, "{status}");
    assert_eq!(status["nodes"]["a"]["attempts"], 1, "{status}");
    let answer = client
        .call("POST", &format!("/v1/runs/{running}/terminate"), &[], b"")
        .await;
    assert_eq!(answer.status, 202);
    let ended = result(&client, &running).await;
    assert_eq!(ended["status"], "TERMINATED");
    let events = client
        .get(&format!("/v1/runs/{running}/events"))
        .await
        .json();
    let kinds = texts(&events, "type");
    assert!(kinds.contains(&"RESUMED"), "{kinds:?}");
    let seqs = numbers(&events, "seq");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_limit_in_all_frees_a_place_when_a_client_goes_away() {
    let dir = scratch("subscribers");
    let file = serve_common::config(
        &dir,
        "service:\n  maxSubscribers: 2\n  maxSubscribersPerRun: 2\n",
    );
    let server = Server::start(&dir, &["--config", &file]);
    let client = server.client();
    // Two quiet runs: no event comes while the test holds their streams.
    let one = start_run(&client, &diamond(60_000)).await;
    let two = start_run(&client, &diamond(60_000)).await;
    let (status, mut first) = client.stream(&format!("/v1/runs/{one}/events"), &[]).await;
    assert_eq!(status, 200);
    first.until_started("b", 1).await;
    let (status, mut second) = client.stream(&format!("/v1/runs/{two}/events"), &[]).await;
    assert_eq!(status, 200);
    second.until_started("b", 1).await;
    let refused = client
        .call(
            "GET",
            &format!("/v1/runs/{two}/events"),
            &[("accept", "text/event-stream")],
            b"",
        )
        .await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (429, "TOO_MANY_SUBSCRIBERS")
    );
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("service.maxSubscribers)"),
        "{}",
        refused.json()
    );
    // The first client goes away while its run is quiet; its place frees without an event
    // of the run (generous bound: the server notices the closed connection).
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (status, mut third) = loop {
        let (status, reader) = client.stream(&format!("/v1/runs/{two}/events"), &[]).await;
        if status == 200 {
            break (status, reader);
        }
        assert_eq!(status, 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the place of a closed stream was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200);
    assert_eq!(third.next().await.unwrap().event, "status");
}

/// Polls the run's status until `done` holds (at most a minute).
async fn until_status(client: &Client, run_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = client.get(&format!("/v1/runs/{run_id}")).await.json();
        if done(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never got there: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_disconnected_and_resumes_from_its_last_id() {
    let dir = scratch("slow");
    let file = serve_common::config(&dir, "service:\n  subscriberBuffer: 8\n");
    let server = Server::start(&dir, &["--config", &file]);
    let client = server.client();
    // A burst of 9,000 events, then a quiet node that keeps the run going.
    let width = 3_000;
    let mut actions = vec![
        json!({"ref": "source", "componentId": "core.echo"}),
        json!({"ref": "hold", "componentId": "core.sleep", "params": {"ms": 120_000}}),
    ];
    actions.extend((0..width).map(
        |i| json!({"ref": format!("n{i}"), "componentId": "core.echo", "dependsOn": ["source"]}),
    ));
    let run = start_run(&client, &json!({"title": "burst", "actions": actions})).await;
    let (status, mut slow) = client
        .stream_slow(&format!("/v1/runs/{run}/events"), 4096)
        .await;
    assert_eq!(status, 200);
    assert_eq!(slow.next().await.unwrap().event, "status");
    // The client reads nothing while the burst runs.
    until_status(&client, &run, |s| {
        s["progress"]["completed"].as_u64() == Some(width + 1)
    })
    .await;
    let first = slow.all().await;
    assert!(
        first.iter().all(|e| e.event == "trace"),
        "the stream of a subscriber that fell behind ends without the run's end"
    );
    let first = traces(&first);
    let last = *first.last().unwrap();
    assert_eq!(first, (1..=last).collect::<Vec<_>>(), "no gap, in order");
    // It resumes from its last id, and follows the run to its end.
    let (status, mut resumed) = client
        .stream(
            &format!("/v1/runs/{run}/events"),
            &[("last-event-id", &last.to_string())],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(resumed.next().await.unwrap().event, "status");
    let answer = client
        .post_json(&format!("/v1/runs/{run}/terminate"), &json!({}))
        .await;
    assert_eq!(answer.status, 202);
    let rest = resumed.all().await;
    assert_eq!(rest.last().unwrap().event, "terminal");
    let every: Vec<u64> = first.iter().copied().chain(traces(&rest)).collect();
    let seqs: Vec<u64> = all_events(&client, &run)
        .await
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.len() > 9_000, "{}", seqs.len());
    assert!(
        first.len() < seqs.len() - 3,
        "the slow subscriber was disconnected before the run's last events"
    );
    assert_eq!(
        every, seqs,
        "no gap and no duplicate across the two streams"
    );
}

/// A raw request over TCP: `head` then `body` (maybe shorter than its Content-Length);
/// the status line and the rest of the answer, once the server closes or answers.
async fn raw_request(addr: &str, head: &str, body: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    // The answer is whole once its body (JSON) is.
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if n == 0 || text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (status, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
    (status.to_owned(), rest.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_time_limit_is_answered_503_and_streams_are_not_cut() {
    let dir = scratch("timeout");
    let file = serve_common::config(
        &dir,
        "service:\n  requestTimeoutSeconds: 0.5\n  keepAliveSeconds: 0.1\n",
    );
    let server = Server::start(&dir, &["--config", &file]);
    let client = server.client();
    let serve_common::Addr::Tcp(addr) = &server.addr else {
        unreachable!()
    };
    // A client that sends a tenth of its body and stalls holds no handler past the limit.
    let started = std::time::Instant::now();
    let (status, rest) = raw_request(
        addr,
        "POST /v1/runs HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        b"{\"definition\"",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{rest}");
    assert!(rest.contains("\"REQUEST_TIMEOUT\""), "{rest}");
    assert!(rest.contains("service.requestTimeoutSeconds"), "{rest}");
    assert!(
        took >= Duration::from_millis(500),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    // An event stream and a `?wait` outlive the limit: a run of 1.5 s is followed to its
    // end, with keep-alive comments while its sleeps are quiet.
    let run = start_run(&client, &diamond(1_500)).await;
    let (status, mut stream) = client.stream(&format!("/v1/runs/{run}/events"), &[]).await;
    assert_eq!(status, 200);
    let all = stream.all().await;
    assert_eq!(all.last().unwrap().event, "terminal");
    assert!(stream.comments >= 1, "no keep-alive comment in 1.5 s");
    assert_eq!(result(&client, &run).await["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_arrives_through_an_input_is_checked_as_the_attempt_starts() {
    let dir = scratch("runtime-policy");
    let tools = dir.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    // The allow-list names a link to echo; a link to sh is not on it, and neither is the
    // echo the allowed link leads to (the path executed is checked, as written).
    std::os::unix::fs::symlink("/bin/echo", tools.join("echo")).unwrap();
    std::os::unix::fs::symlink("/bin/sh", tools.join("sh")).unwrap();
    let file = serve_common::config(
        &dir,
        &format!(
            "service:\n  definitions:\n    process:\n      executables: [{}]\n",
            tools.join("echo").display()
        ),
    );
    let server = Server::start(&dir, &["--config", &file]);
    let client = server.client();
    let pwned = dir.join("pwned");
    let touch = format!("touch {}", pwned.display());
    let sh_link = tools.join("sh").display().to_string();
    let echo_link = tools.join("echo").display().to_string();
    let from = |handle: &str| json!({"command": {"sourceRef": "commands", "sourceHandle": handle}});
    let retry = json!({"maxAttempts": 3, "initialIntervalSeconds": 0.01});
    // The commands are outputs of a node: submission cannot see them.
    let definition = json!({"title": "commands from inputs", "actions": [
        {"ref": "commands", "componentId": "core.echo", "params": {
            "allowed": [echo_link, "hello"],
            "target": ["/bin/echo", "hello"],
            "shell": ["/bin/sh", "-c", touch],
            "linked": [sh_link, "-c", touch]
        }},
        {"ref": "ok", "componentId": "core.process", "dependsOn": ["commands"], "inputMappings": from("allowed")},
        {"ref": "target", "componentId": "core.process", "dependsOn": ["commands"], "inputMappings": from("target"), "retryPolicy": retry},
        {"ref": "shell", "componentId": "core.process", "dependsOn": ["commands"], "inputMappings": from("shell"), "retryPolicy": retry},
        {"ref": "linked", "componentId": "core.process", "dependsOn": ["commands"], "inputMappings": from("linked"), "retryPolicy": retry}
    ]});
    let run = start_run(&client, &definition).await;
    let result = result(&client, &run).await;
    let nodes = &result["nodes"];
    assert_eq!(nodes["ok"]["status"], "COMPLETED", "{result}");
    assert_eq!(
        result["outputs"]["ok"]["stdout"].as_str().map(str::trim),
        Some("hello"),
        "{result}"
    );
    for refused in ["target", "shell", "linked"] {
        let node = &nodes[refused];
        assert_eq!(node["status"], "FAILED", "{result}");
        assert_eq!(node["error"]["type"], "PermissionError", "{result}");
        assert_eq!(node["attempts"], 1, "a refusal is not retried: {result}");
        assert!(
            node["error"]["message"]
                .as_str()
                .unwrap()
                .contains("service.definitions.process.executables"),
            "{result}"
        );
    }
    assert!(!pwned.exists(), "a refused command ran");
}

mod otlp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_metrics_reach_an_otlp_receiver_with_their_convention_names() {
    let receiver = otlp::Receiver::start_grpc().await;
    let dir = scratch("metrics");
    let endpoint = receiver.endpoint();
    let mut server = Server::start_with(
        &dir,
        &["--listen", "127.0.0.1:0"],
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "serve-metrics"),
        ],
    );
    let client = server.client();
    let run = start_run(&client, &diamond(1)).await;
    assert_eq!(result(&client, &run).await["status"], "COMPLETED");
    assert_eq!(client.get("/v1/runs/no-such-run").await.status, 404);
    // The last export happens as the server stops.
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(), Some(0));
    let metrics = receiver
        .wait_for_metrics(
            |m| {
                m.iter().any(|m| m.name == "http.server.request.duration")
                    && m.iter().any(|m| m.name == "http.server.active_requests")
            },
            Duration::from_secs(60),
        )
        .await;
    let duration = metrics
        .iter()
        .find(|m| m.name == "http.server.request.duration")
        .unwrap();
    assert_eq!(duration.unit, "s");
    assert_eq!(duration.service_name, "serve-metrics");
    let created = [
        ("http.request.method", "POST"),
        ("http.route", "/v1/runs"),
        ("http.response.status_code", "201"),
    ];
    assert_eq!(duration.count(&created), 1, "{duration:#?}");
    let waited = [
        ("http.route", "/v1/runs/{id}/result"),
        ("http.response.status_code", "200"),
    ];
    assert_eq!(duration.count(&waited), 1, "{duration:#?}");
    let unknown = [
        ("http.route", "/v1/runs/{id}"),
        ("http.response.status_code", "404"),
    ];
    assert_eq!(duration.count(&unknown), 1, "{duration:#?}");
    let active = metrics
        .iter()
        .find(|m| m.name == "http.server.active_requests")
        .unwrap();
    assert_eq!(active.total(&[]), 0.0, "every request ended: {active:#?}");
}
