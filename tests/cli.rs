//! The `shipsec run` command line: exit codes, `--json` output, `--events` file, `--html`
//! reports and `shipsec report`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn shipsec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shipsec"))
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shipsec-cli-{}-{name}", std::process::id()))
}

#[test]
fn run_json_prints_exactly_the_run_result_and_exits_0() {
    let out = shipsec()
        .args([
            "run",
            &example("recon.json"),
            "--json",
            "--input",
            "target=example.com",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(result["status"], "COMPLETED");
    assert_eq!(result["success"], true);
    assert_eq!(result["nodes"]["vulnscan"]["status"], "FAILED");
    assert_eq!(result["nodes"]["notify"]["failure"]["at"], "vulnscan");
    assert_eq!(
        result["outputs"]["report"]["registrar"],
        "Example Registrar"
    );
    for key in [
        "runId",
        "title",
        "startedAt",
        "completedAt",
        "durationMs",
        "outputs",
        "nodes",
    ] {
        assert!(result.get(key).is_some(), "result has {key}");
    }
}

#[test]
fn run_writes_every_event_as_json_lines() {
    let events = temp("events.jsonl");
    let out = shipsec()
        .args(["run", &example("race.yaml"), "--events"])
        .arg(&events)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=lines.len() as u64).collect::<Vec<_>>());
    let terminal = lines
        .iter()
        .filter(|e| {
            ["COMPLETED", "FAILED", "SKIPPED", "CANCELLED"].contains(&e["type"].as_str().unwrap())
        })
        .count();
    assert_eq!(terminal, 6, "one terminal event per node");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("withdrawn: fetch fired on mirror-us"),
        "{summary}"
    );
    let _ = std::fs::remove_file(events);
}

#[test]
fn a_failed_run_exits_1() {
    let file = temp("fail.json");
    std::fs::write(
        &file,
        r#"{"title":"f","actions":[{"ref":"a","componentId":"core.fail","params":{"message":"no"}}]}"#,
    )
    .unwrap();
    let out = shipsec()
        .args(["run", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "FAILED");
    assert_eq!(result["nodes"]["a"]["error"]["message"], "no");
    let _ = std::fs::remove_file(file);
}

#[test]
fn missing_runtime_inputs_and_bad_definitions_exit_2() {
    let out = shipsec()
        .args(["run", &example("recon.json")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("target"));
    let file = temp("bad.json");
    std::fs::write(
        &file,
        r#"{"title":"b","actions":[{"ref":"a","componentId":"core.nope"}]}"#,
    )
    .unwrap();
    let out = shipsec().arg("run").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("actions[0].componentId"));
    let out = shipsec()
        .args(["run", &example("race.json"), "--input", "novalue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_file(file);
}

#[test]
fn inputs_come_from_a_file_and_from_flags_with_flags_winning() {
    let inputs = temp("inputs.yaml");
    std::fs::write(&inputs, "target: from-file.example\n").unwrap();
    let out = shipsec()
        .args(["run", &example("recon.yaml"), "--json", "--inputs"])
        .arg(&inputs)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["outputs"]["start"]["target"], "from-file.example");
    let out = shipsec()
        .args([
            "run",
            &example("recon.yaml"),
            "--json",
            "--input",
            "target=flag.example",
            "--inputs",
        ])
        .arg(&inputs)
        .output()
        .unwrap();
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["outputs"]["start"]["target"], "flag.example");
    let _ = std::fs::remove_file(inputs);
}

#[test]
fn the_summary_lists_nodes_in_topological_order() {
    let file = temp("order.yaml");
    std::fs::write(
        &file,
        "title: order\n\
         edges:\n  - { sourceRef: zulu, targetRef: alpha }\n  - { sourceRef: alpha, targetRef: mike }\n\
         actions:\n  - { ref: mike, componentId: core.echo }\n  - { ref: alpha, componentId: core.echo }\n  - { ref: zulu, componentId: core.echo }\n",
    )
    .unwrap();
    let out = shipsec().arg("run").arg(&file).output().unwrap();
    let _ = std::fs::remove_file(file);
    assert_eq!(out.status.code(), Some(0));
    let summary = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = summary
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["zulu", "alpha", "mike"].contains(w))
        .collect();
    assert_eq!(rows, ["zulu", "alpha", "mike"], "{summary}");
}

/// The data a report embeds.
fn report_data(html: &str) -> Value {
    let start = html
        .find(r#"<script id="shipsec-report" type="application/json">"#)
        .expect("the report embeds its run");
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</script>").unwrap();
    serde_json::from_str(&rest[open..close].replace("<\\/", "</")).unwrap()
}

#[test]
fn run_html_and_report_write_the_same_self_contained_view() {
    let (html, events, again) = (temp("run.html"), temp("events.jsonl"), temp("again.html"));
    let out = shipsec()
        .args(["run", &example("retry.yaml"), "--json", "--html"])
        .arg(&html)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    // Nothing to fetch: styles and script inline.
    assert!(!page.contains(r#"src="/ui/"#) && !page.contains(r#"href="/ui/"#));
    let data = report_data(&page);
    assert_eq!(data["result"], result);
    assert_eq!(data["graph"]["nodes"].as_array().unwrap().len(), 4);
    let lines = std::fs::read_to_string(&events).unwrap().lines().count();
    assert_eq!(data["events"].as_array().unwrap().len(), lines);
    // The same view from the files, with the definition for the edges.
    let json = temp("result.json");
    std::fs::write(&json, &out.stdout).unwrap();
    let out = shipsec()
        .arg("report")
        .arg(&json)
        .arg(&events)
        .args(["--definition", &example("retry.yaml"), "--html"])
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = report_data(&std::fs::read_to_string(&again).unwrap());
    assert_eq!(again["result"], data["result"]);
    assert_eq!(again["graph"], data["graph"]);
    assert_eq!(again["events"], data["events"]);
    // A bad events file is refused with its line.
    let bad = temp("bad.jsonl");
    let first = std::fs::read_to_string(&events).unwrap();
    let first = first.lines().next().unwrap();
    std::fs::write(&bad, format!("{first}\n{{\"seq\": 2\n")).unwrap();
    let out = shipsec()
        .arg("report")
        .arg(&json)
        .arg(&bad)
        .arg("--html")
        .arg(temp("never.html"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:", bad.display())),
        "{stderr}"
    );
    assert!(!temp("never.html").exists());
}
