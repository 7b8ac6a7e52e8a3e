//! `shipsec serve` end to end: a real server process, a real HTTP client (hyper) over
//! 127.0.0.1 and a Unix socket. Every endpoint; idempotency (repeats, conflicts,
//! concurrent duplicates: one run); the SSE stream followed to the end and resumed from
//! every position with no gap or duplicate; cancel and terminate mid-run; auth; each
//! limit; graceful shutdown with a request in flight; SIGKILL and restart.

mod serve_common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use serve_common::{Client, Server, scratch};

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

async fn start_run(client: &Client, def: Value) -> String {
    let answer = client
        .post_json("/v1/runs", &json!({"definition": def}))
        .await;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["runId"].as_str().unwrap().to_owned()
}

async fn result(client: &Client, run_id: &str) -> Value {
    let answer = client
        .get(&format!("/v1/runs/{run_id}/result?wait=60"))
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()
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
    let run_id = start_run(&client, diamond(300)).await;
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
        let run_id = start_run(&client, diamond(60_000)).await;
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
    let running = start_run(&client, diamond(60_000)).await;
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
    let run_id = start_run(&client, diamond(1_500)).await;
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
    let done = start_run(&client, diamond(1)).await;
    let before = result(&client, &done).await;
    let running = start_run(&client, diamond(60_000)).await;
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
    let one = start_run(&client, diamond(60_000)).await;
    let two = start_run(&client, diamond(60_000)).await;
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
