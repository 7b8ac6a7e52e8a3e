//! Human-input gates through `shipsec serve`: a real server process and a real HTTP client.
//! Each gate kind routes its run on the port its answer activates, answered by request id
//! or through the run's inbox (signals); answers are checked
//! against the request's schema (422 with the path of each problem); repeats are
//! duplicates and other answers conflicts, also after the run ended; gates wait through a
//! SIGKILL with their deadlines, and a deadline that passed while the server was down
//! fires once at resume.

mod serve_common;

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use serve_common::{Client, Server, all_events, result, scratch, start_run};
use shipsec_orchestrator::events::Timestamp;

/// Waits (on the run's event stream) until gate `gate` of `run_id` asks for input; its
/// request id.
async fn request_of(client: &Client, run_id: &str, gate: &str) -> String {
    let (status, mut events) = client
        .stream(&format!("/v1/runs/{run_id}/events"), &[])
        .await;
    assert_eq!(status, 200);
    let event = events
        .until_trace("AWAITING_INPUT", |e| {
            e["type"] == "AWAITING_INPUT" && e["nodeId"] == gate
        })
        .await;
    event["data"]["requestId"]
        .as_str()
        .expect("an id")
        .to_owned()
}

async fn resolve(client: &Client, request_id: &str, body: Value) -> serve_common::Answer {
    client
        .post_json(&format!("/v1/inputs/{request_id}/resolve"), &body)
        .await
}

fn three_kinds() -> Value {
    json!({
        "title": "triage",
        "actions": [
            {"ref": "approve", "componentId": "core.manual_action.approval",
             "params": {"title": "Deploy to {{env}}?", "env": "prod", "timeout": "2h"}},
            {"ref": "yes", "componentId": "core.echo"},
            {"ref": "no", "componentId": "core.echo"},
            {"ref": "form", "componentId": "core.manual_action.form",
             "params": {"title": "Ticket", "schema": {
                 "type": "object", "required": ["ticket"],
                 "properties": {
                     "ticket": {"type": "string", "pattern": "^SEC-[0-9]+$"},
                     "severity": {"type": "integer", "minimum": 1, "maximum": 5}
                 }}}},
            {"ref": "filed", "componentId": "core.echo",
             "inputMappings": {"ticket": {"sourceRef": "form", "sourceHandle": "ticket"}}},
            {"ref": "pick", "componentId": "core.manual_action.selection",
             "params": {"options": [{"label": "Low", "value": "low"}, "high"]}},
            {"ref": "low", "componentId": "core.echo"},
            {"ref": "high", "componentId": "core.echo"}
        ],
        "edges": [
            {"sourceRef": "approve", "targetRef": "yes", "sourceHandle": "approved"},
            {"sourceRef": "approve", "targetRef": "no", "sourceHandle": "rejected"},
            {"sourceRef": "form", "targetRef": "filed", "sourceHandle": "approved"},
            {"sourceRef": "pick", "targetRef": "low", "sourceHandle": "option:low"},
            {"sourceRef": "pick", "targetRef": "high", "sourceHandle": "option:high"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gate_kind_routes_its_run_and_answers_are_checked() {
    let dir = scratch("gates-kinds");
    let server = Server::start(&dir, &[]);
    let client = server.client();
    let bad_metadata = client
        .post_json(
            "/v1/runs",
            &json!({"definition": three_kinds(), "metadata": {"organizationId": 7}}),
        )
        .await;
    assert_eq!(
        (bad_metadata.status, bad_metadata.code()),
        (422, "INVALID_INPUT".into())
    );
    assert_eq!(
        bad_metadata.json()["error"]["details"]["problems"][0]["path"],
        "metadata.organizationId"
    );
    let metadata = json!({"organizationId": "acme", "workflowId": "wf-7"});
    let started = client
        .post_json(
            "/v1/runs",
            &json!({"definition": three_kinds(), "metadata": metadata}),
        )
        .await;
    assert_eq!(started.status, 201, "{:?}", started.json());
    assert_eq!(started.json()["metadata"], metadata);
    let run_id = started.json()["runId"].as_str().expect("an id").to_owned();
    let other_org = start_run(&client, &many_gates(1)).await;
    let approve = request_of(&client, &run_id, "approve").await;
    let form = request_of(&client, &run_id, "form").await;
    let pick = request_of(&client, &run_id, "pick").await;

    let status = client.get(&format!("/v1/runs/{run_id}")).await.json();
    assert_eq!(status["status"], "AWAITING_INPUT", "{status}");
    assert_eq!(
        status["nodes"]["form"]["status"], "AWAITING_INPUT",
        "{status}"
    );
    let listed = client.get("/v1/runs?status=AWAITING_INPUT").await.json();
    let waiting: Vec<&Value> = listed["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| &r["runId"])
        .collect();
    assert!(waiting.contains(&&json!(run_id)), "{listed}");
    let inbox = client
        .get(&format!("/v1/inputs?status=pending&runId={run_id}&limit=2"))
        .await
        .json();
    assert_eq!(inbox["inputs"].as_array().map(Vec::len), Some(2), "{inbox}");
    let rest = client
        .get(&format!(
            "/v1/inputs?status=pending&runId={run_id}&cursor={}",
            inbox["nextCursor"].as_str().expect("a cursor")
        ))
        .await
        .json();
    assert_eq!(rest["inputs"].as_array().map(Vec::len), Some(1), "{rest}");
    let asked = client.get(&format!("/v1/inputs/{approve}")).await.json();
    assert_eq!(asked["title"], "Deploy to prod?");
    assert_eq!(asked["inputType"], "approval");
    assert_eq!(asked["status"], "pending");
    assert_eq!(asked["runId"], json!(run_id));
    assert!(asked["timeoutAt"].is_string(), "{asked}");
    assert_eq!(
        asked["metadata"], metadata,
        "a request carries its run's metadata"
    );
    // An organization's inbox and its runs: scoped by one metadata key.
    request_of(&client, &other_org, "g0").await;
    let acme = client
        .get("/v1/inputs?status=pending&metadataKey=organizationId&metadataValue=acme")
        .await
        .json();
    assert_eq!(acme["inputs"].as_array().map(Vec::len), Some(3), "{acme}");
    let all_pending = client.get("/v1/inputs?status=pending").await.json();
    assert_eq!(all_pending["inputs"].as_array().map(Vec::len), Some(4));
    let acme_runs = client
        .get("/v1/runs?metadataKey=organizationId&metadataValue=acme")
        .await
        .json();
    let ids: Vec<&Value> = acme_runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| &r["runId"])
        .collect();
    assert_eq!(ids, [&json!(run_id)], "{acme_runs}");
    let half = client.get("/v1/runs?metadataKey=organizationId").await;
    assert_eq!((half.status, half.code()), (400, "INVALID_REQUEST".into()));

    // The run's inbox: a name nothing handles is stored and recorded (202).
    let unhandled_path = format!("/v1/runs/{run_id}/signals/toolCallCompleted");
    let unhandled_body = json!({"signalId": "u-1", "payload": {"callId": "c-1"}});
    let unhandled = client.post_json(&unhandled_path, &unhandled_body).await;
    assert_eq!(unhandled.status, 202);
    assert_eq!(unhandled.json()["outcome"], "unhandled");
    let repeated = client.post_json(&unhandled_path, &unhandled_body).await;
    assert_eq!(
        repeated.status, 200,
        "a repeat is a duplicate with no second effect"
    );
    assert_eq!(repeated.json()["duplicate"], true);

    // An approval: approved goes along `approved`; a repeat is a duplicate, another
    // answer a conflict.
    let yes = json!({"approved": true, "respondedBy": "ana", "responseNote": "window agreed"});
    let answer = resolve(&client, &approve, yes.clone()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(answer.json()["status"], "resolved");
    assert_eq!(answer.json()["duplicate"], false);
    let again = resolve(&client, &approve, yes.clone()).await;
    assert_eq!(
        (again.status, again.json()["duplicate"].clone()),
        (200, json!(true))
    );
    let other = resolve(&client, &approve, json!({"approved": false})).await;
    assert_eq!(
        (other.status, other.code()),
        (409, "INPUT_ALREADY_RESOLVED".into())
    );
    let nobody = resolve(&client, "no-such-request", yes.clone()).await;
    assert_eq!(
        (nobody.status, nobody.code()),
        (404, "INPUT_NOT_FOUND".into())
    );
    let unknown_field = resolve(&client, &form, json!({"approve": true})).await;
    assert_eq!(unknown_field.status, 422, "{:?}", unknown_field.json());

    // A form: every field that does not fit its schema is named; a fitting one is taken.
    let bad = resolve(
        &client,
        &form,
        json!({"responseData": {"ticket": "JIRA-1", "severity": 9}}),
    )
    .await;
    assert_eq!((bad.status, bad.code()), (422, "INVALID_INPUT".into()));
    let mut paths: Vec<String> = bad.json()["error"]["details"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    paths.sort();
    assert_eq!(paths, ["responseData/severity", "responseData/ticket"]);
    let still = client.get(&format!("/v1/inputs/{form}")).await.json();
    assert_eq!(
        still["status"], "pending",
        "a refused answer changes nothing"
    );
    let filled = resolve(
        &client,
        &form,
        json!({"responseData": {"ticket": "SEC-42", "severity": 2}}),
    )
    .await;
    assert_eq!(filled.status, 200, "{:?}", filled.json());

    // A selection: only its options; the chosen one's port routes the run.
    let off = resolve(
        &client,
        &pick,
        json!({"responseData": {"selection": "medium"}}),
    )
    .await;
    assert_eq!((off.status, off.code()), (422, "INVALID_INPUT".into()));
    let chosen = resolve(
        &client,
        &pick,
        json!({"responseData": {"selection": "high"}}),
    )
    .await;
    assert_eq!(chosen.status, 200, "{:?}", chosen.json());

    let ended = result(&client, &run_id).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    let status_of = |node: &str| ended["nodes"][node]["status"].clone();
    assert_eq!(status_of("yes"), "COMPLETED");
    assert_eq!(status_of("no"), "SKIPPED");
    assert_eq!(status_of("high"), "COMPLETED");
    assert_eq!(status_of("low"), "SKIPPED");
    assert_eq!(ended["outputs"]["filed"]["ticket"], "SEC-42");
    assert_eq!(ended["outputs"]["approve"]["respondedBy"], "ana");
    assert_eq!(ended["outputs"]["approve"]["requestId"], json!(approve));
    assert_eq!(ended["metadata"], metadata);

    // The run has ended: a repeat is still a duplicate, another answer still refused.
    let late = resolve(&client, &approve, yes).await;
    assert_eq!(
        (late.status, late.json()["duplicate"].clone()),
        (200, json!(true))
    );
    let late_other = resolve(
        &client,
        &pick,
        json!({"responseData": {"selection": "low"}}),
    )
    .await;
    assert_eq!(late_other.code(), "INPUT_ALREADY_RESOLVED");
    let repeat = client.post_json(&unhandled_path, &unhandled_body).await;
    assert_eq!(
        (repeat.status, repeat.json()["duplicate"].clone()),
        (200, json!(true))
    );
    let signal = json!({"signalId": "late", "payload": {"nodeRef": "approve"}});
    let ended_run = client
        .post_json(
            &format!("/v1/runs/{run_id}/signals/resolveHumanInput"),
            &signal,
        )
        .await;
    assert_eq!(
        (ended_run.status, ended_run.code()),
        (409, "RUN_ALREADY_ENDED".into())
    );
    let no_run = client
        .post_json("/v1/runs/no-such-run/signals/resolveHumanInput", &signal)
        .await;
    assert_eq!(
        (no_run.status, no_run.code()),
        (404, "RUN_NOT_FOUND".into())
    );
    let left = client.get("/v1/inputs?status=pending").await.json();
    assert_eq!(left["inputs"][0]["runId"], json!(other_org), "{left}");
    assert_eq!(left["inputs"].as_array().map(Vec::len), Some(1), "{left}");
}

/// A gate that is `core.echo` returning a pending marker whose deadline is `at`.
fn expiring(at: &str) -> Value {
    json!({
        "title": "expiring",
        "actions": [
            {"ref": "before", "componentId": "core.echo"},
            {"ref": "g", "componentId": "core.echo",
             "params": {"pending": true, "inputType": "approval", "title": "Too late?",
                        "timeoutAt": at}},
            {"ref": "after", "componentId": "core.echo"}
        ],
        "edges": gate_edges()
    })
}

fn waiting_long() -> Value {
    json!({
        "title": "waiting",
        "actions": [
            {"ref": "before", "componentId": "core.echo"},
            {"ref": "g", "componentId": "core.manual_action.approval",
             "params": {"timeout": "3d"}},
            {"ref": "after", "componentId": "core.echo"}
        ],
        "edges": gate_edges()
    })
}

/// `before -> g -> after`, `after` on the gate's `approved` port (a gate's output
/// activates only ShipSec's ports, so an edge without a handle would be dead).
fn gate_edges() -> Value {
    json!([
        {"sourceRef": "before", "targetRef": "g"},
        {"sourceRef": "g", "targetRef": "after", "sourceHandle": "approved"}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_wait_through_a_sigkill_and_a_deadline_missed_while_down_fires_once() {
    let dir = scratch("gates-sigkill");
    let mut server = Server::start(&dir, &[]);
    let client = server.client();
    let metadata = json!({"organizationId": "acme"});
    let started = client
        .post_json(
            "/v1/runs",
            &json!({"definition": waiting_long(), "metadata": metadata}),
        )
        .await;
    assert_eq!(started.status, 201);
    let long = started.json()["runId"].as_str().expect("an id").to_owned();
    let long_request = request_of(&client, &long, "g").await;
    let deadline = SystemTime::now() + Duration::from_secs(2);
    let short = start_run(&client, &expiring(&Timestamp::from(deadline).to_string())).await;
    let short_request = request_of(&client, &short, "g").await;
    let asked = client
        .get(&format!("/v1/inputs/{long_request}"))
        .await
        .json();

    server.signal(libc::SIGKILL);
    server.wait();
    // The subject of the test: the short gate's deadline passes while nothing runs.
    while SystemTime::now() <= deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let restarted = Server::start(&dir, &[]);
    let client = restarted.client();

    let expired = result(&client, &short).await;
    assert_eq!(expired["status"], "FAILED", "{expired}");
    assert_eq!(expired["nodes"]["g"]["status"], "FAILED");
    assert_eq!(
        expired["nodes"]["g"]["error"]["type"], "TimeoutError",
        "{expired}"
    );
    assert_eq!(expired["nodes"]["after"]["status"], "SKIPPED");
    let details = &expired["nodes"]["g"]["error"]["details"];
    assert_eq!(
        details["nodeRef"], "g",
        "ShipSec's TimeoutError details: {details}"
    );
    assert_eq!(details["requestId"], json!(short_request));
    assert!(
        details["timeoutMs"].as_u64().is_some_and(|ms| ms <= 2_000),
        "{details}"
    );
    let gone = client
        .get(&format!("/v1/inputs/{short_request}"))
        .await
        .json();
    assert_eq!(gone["status"], "expired", "{gone}");
    let events = all_events(&client, &short).await;
    let failures = events
        .iter()
        .filter(|e| e["nodeId"] == "g" && e["type"] == "FAILED")
        .count();
    assert_eq!(failures, 1, "the deadline fires once");

    // The long gate still waits, with the deadline it was given before the kill.
    let still = client
        .get(&format!("/v1/inputs/{long_request}"))
        .await
        .json();
    assert_eq!(still["status"], "pending", "{still}");
    assert_eq!(still["timeoutAt"], asked["timeoutAt"]);
    let status = client.get(&format!("/v1/runs/{long}")).await.json();
    assert_eq!(status["status"], "AWAITING_INPUT", "{status}");
    assert_eq!(
        status["metadata"], metadata,
        "the journal keeps the run's metadata"
    );
    assert_eq!(still["metadata"], metadata);
    // Answered through the run's inbox, as ShipSec signals it.
    let signal = json!({"signalId": "ok-1", "payload": {"nodeRef": "g", "approved": true}});
    let path = format!("/v1/runs/{long}/signals/resolveHumanInput");
    let answer = client.post_json(&path, &signal).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(answer.json()["outcome"], "applied");
    assert_eq!(answer.json()["requestId"], json!(long_request));

    let done = result(&client, &long).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["nodes"]["before"]["attempts"], 1,
        "nothing completed runs again"
    );
    assert_eq!(done["nodes"]["g"]["attempts"], 1);
    assert_eq!(done["nodes"]["after"]["status"], "COMPLETED");
}

/// `ROUNDS` independent approval gates `g<i>`, each leading to `n<i>` when approved.
fn many_gates(rounds: usize) -> Value {
    let mut actions = Vec::new();
    let mut edges = Vec::new();
    for i in 0..rounds {
        actions.push(json!({"ref": format!("g{i}"), "componentId": "core.manual_action.approval"}));
        actions.push(json!({"ref": format!("n{i}"), "componentId": "core.echo"}));
        edges.push(
            json!({"sourceRef": format!("g{i}"), "targetRef": format!("n{i}"),
                          "sourceHandle": "approved"}),
        );
    }
    json!({"title": "many gates", "actions": actions, "edges": edges})
}

/// The request id of each pending gate of `run_id`, by node.
async fn pending_by_node(
    client: &Client,
    run_id: &str,
) -> std::collections::BTreeMap<String, String> {
    let page = client
        .get(&format!(
            "/v1/inputs?runId={run_id}&status=pending&limit=1000"
        ))
        .await
        .json();
    page["inputs"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|r| {
            let node = r["nodeRef"].as_str().unwrap_or_default().to_owned();
            (node, r["requestId"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_resolution_survives_a_sigkill_right_after_it_once() {
    const ROUNDS: usize = 50;
    let dir = scratch("gates-kill-loop");
    let mut server = Server::start(&dir, &[]);
    let client = server.client();
    let run_id = start_run(&client, &many_gates(ROUNDS)).await;
    let (_, mut events) = client
        .stream(&format!("/v1/runs/{run_id}/events"), &[])
        .await;
    let mut asked = 0;
    while asked < ROUNDS {
        events
            .until_trace("AWAITING_INPUT", |e| e["type"] == "AWAITING_INPUT")
            .await;
        asked += 1;
    }
    let ids = pending_by_node(&client, &run_id).await;
    assert_eq!(ids.len(), ROUNDS);
    let note_path = format!("/v1/runs/{run_id}/signals/note");
    let note = json!({"signalId": "note-1", "payload": {"text": "on call: ana"}});
    assert_eq!(client.post_json(&note_path, &note).await.status, 202);

    for round in 0..ROUNDS {
        let client = server.client();
        if round > 0 {
            // What was answered 200 before the last kill is still answered, once.
            let before = &ids[&format!("g{}", round - 1)];
            let kept = client.get(&format!("/v1/inputs/{before}")).await.json();
            assert_eq!(kept["status"], "resolved", "round {round}: {kept}");
        }
        let request = &ids[&format!("g{round}")];
        let answer = resolve(
            &client,
            request,
            json!({"approved": true, "respondedBy": "ops"}),
        )
        .await;
        assert_eq!(answer.status, 200, "round {round}: {:?}", answer.json());
        server.signal(libc::SIGKILL);
        server.wait();
        server = Server::start(&dir, &[]);
    }

    let client = server.client();
    let ended = result(&client, &run_id).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    for i in 0..ROUNDS {
        assert_eq!(ended["nodes"][format!("g{i}")]["attempts"], 1, "g{i}");
        assert_eq!(
            ended["nodes"][format!("n{i}")]["status"],
            "COMPLETED",
            "n{i}"
        );
        assert_eq!(
            ended["outputs"][format!("g{i}")]["respondedBy"],
            "ops",
            "g{i}"
        );
    }
    let all = all_events(&client, &run_id).await;
    for i in 0..ROUNDS {
        let gate = format!("g{i}");
        let completions = all
            .iter()
            .filter(|e| e["nodeId"] == json!(gate) && e["type"] == "COMPLETED")
            .count();
        assert_eq!(completions, 1, "{gate} completes once");
    }
    // After one more restart the run is a finished one the journal holds: its requests
    // are still known, and a client that retries an answer it got no reply to learns
    // it was taken.
    server.signal(libc::SIGKILL);
    server.wait();
    let server = Server::start(&dir, &[]);
    let client = server.client();
    let repeat = client.post_json(&note_path, &note).await;
    assert_eq!(
        (repeat.status, repeat.json()["duplicate"].clone()),
        (200, json!(true))
    );
    let kept = client
        .get(&format!("/v1/inputs/{}", ids["g7"]))
        .await
        .json();
    assert_eq!(kept["status"], "resolved", "{kept}");
    assert_eq!(kept["resolution"]["respondedBy"], "ops");
    let again = resolve(
        &client,
        &ids["g0"],
        json!({"approved": true, "respondedBy": "ops"}),
    )
    .await;
    assert_eq!(
        (again.status, again.json()["duplicate"].clone()),
        (200, json!(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_link_answers_its_request_once_without_a_bearer_token() {
    let dir = scratch("gates-links");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "operator-secret\n").unwrap();
    let config = serve_common::config(&dir, "service:\n  publicInputLinks: true\n");
    let (tokens, data) = (tokens.display().to_string(), dir.join("data"));
    let server = Server::start_on(
        &dir,
        &["--listen", "127.0.0.1:0"],
        &["--token-file", &tokens, "--config", &config],
        None,
    );
    let operator = server.client().with_token(Some("operator-secret"));
    let anyone = server.client().with_token(None);
    let run_id = start_run(&operator, &waiting_long()).await;
    let request = request_of(&operator, &run_id, "g").await;
    let asked = operator.get(&format!("/v1/inputs/{request}")).await.json();
    let token = asked["publicToken"]
        .as_str()
        .expect("a public token")
        .to_owned();
    assert_eq!(token.len(), 43, "{asked}");
    assert!(
        data.join("input-links.key").exists(),
        "the key is kept with the journal"
    );

    // Without a bearer token: a tampered link is unknown, the link answers, once.
    let mut tampered = token.clone().into_bytes();
    tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let wrong = anyone
        .post_json(
            &format!("/v1/inputs/resolve/{tampered}"),
            &json!({"action": "approve"}),
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (404, "INPUT_NOT_FOUND".into())
    );
    let path = format!("/v1/inputs/resolve/{token}");
    let used = anyone
        .post_json(&path, &json!({"action": "approve", "respondedBy": "ana"}))
        .await;
    assert_eq!(used.status, 200, "{:?}", used.json());
    assert_eq!(used.json()["status"], "resolved");
    assert!(
        used.json().get("publicToken").is_none(),
        "a link shows no token"
    );
    let again = anyone.post_json(&path, &json!({"action": "approve"})).await;
    assert_eq!(
        (again.status, again.code()),
        (409, "INPUT_NOT_PENDING".into())
    );
    // Every other endpoint still wants the bearer token.
    let listed = anyone.get("/v1/inputs").await;
    assert_eq!(listed.status, 401);
    let done = result(&operator, &run_id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["outputs"]["g"]["respondedBy"], "ana");
}
