//! The OpenAPI document: the committed `docs/openapi.json` is the one the code derives
//! and the one a real server serves; schemathesis, run against a real server, finds no
//! server error and no answer that disagrees with the document.
//!
//! schemathesis is a Python tool: `.ci/run` installs it and names it in
//! `SHIPSEC_SCHEMATHESIS` (with `SHIPSEC_REQUIRE_SCHEMATHESIS=1`, so that CI cannot skip
//! it). Elsewhere the test looks for `st` on the PATH and says so when it skips.

mod serve_common;

use std::path::PathBuf;
use std::process::Command;

use serve_common::{Server, scratch};
use shipsec_orchestrator::service::openapi;

const DOCUMENT: &str = "docs/openapi.json";

#[test]
fn the_committed_document_is_the_one_the_code_derives() {
    let committed = std::fs::read_to_string(DOCUMENT).unwrap();
    let derived = openapi::to_json();
    assert!(
        committed == derived,
        "{DOCUMENT} is not the document the code derives: run \
         `cargo run --release -- openapi > {DOCUMENT}` and commit it"
    );
    let document: serde_json::Value = serde_json::from_str(&derived).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    // Every route of the router is in it, with each method it takes.
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/runs", "post"),
        ("/v1/runs", "get"),
        ("/v1/runs/{id}", "get"),
        ("/v1/runs/{id}/graph", "get"),
        ("/v1/runs/{id}/result", "get"),
        ("/v1/runs/{id}/events", "get"),
        ("/v1/runs/{id}/cancel", "post"),
        ("/v1/runs/{id}/terminate", "post"),
        ("/v1/runs/{id}/signals/{name}", "post"),
        ("/v1/inputs", "get"),
        ("/v1/inputs/{requestId}", "get"),
        ("/v1/inputs/{requestId}/resolve", "post"),
        ("/v1/inputs/resolve/{token}", "post"),
        ("/v1/validate", "post"),
        ("/v1/components", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/openapi.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}");
    }
    // The run view's pages (`/`, `/runs/{id}`, `/ui/*`) are not API operations.
    assert_eq!(paths.len(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_serves_the_committed_document() {
    let dir = scratch("openapi-served");
    let server = Server::start(&dir, &[]);
    let answer = server.client().get("/v1/openapi.json").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(
        answer.body,
        std::fs::read_to_string(DOCUMENT).unwrap().as_bytes()
    );
}

/// The schemathesis CLI, when there is one.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SHIPSEC_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("st"))
        .find(|st| st.is_file())
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var_os("SHIPSEC_REQUIRE_SCHEMATHESIS").is_none(),
            "SHIPSEC_REQUIRE_SCHEMATHESIS is set but no schemathesis was found"
        );
        eprintln!(
            "SKIPPED: schemathesis not found (set SHIPSEC_SCHEMATHESIS, or `pip install \
             schemathesis` for `st` on the PATH)"
        );
        return;
    };
    let dir = scratch("schemathesis");
    // Short waits: a fuzzer holding `?wait=` for a minute per case would take hours.
    let config = serve_common::config(
        &dir,
        "service:\n  maxWaitSeconds: 1\n  requestTimeoutSeconds: 10\n",
    );
    let token = "schemathesis-token";
    let server = Server::start_on(
        &dir,
        &["--listen", "127.0.0.1:0"],
        &["--config", &config],
        Some(token),
    );
    let serve_common::Addr::Tcp(addr) = &server.addr else {
        unreachable!("listening on TCP");
    };
    let examples = std::env::var("SHIPSEC_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "50".into());
    // Every check but `positive_data_acceptance`: a definition is schema-valid as any JSON
    // object, and the server answers a definition that does not validate (a missing
    // title, an unknown component) with 422 INVALID_DEFINITION, as it must.
    let output = Command::new(&st)
        .arg("run")
        .arg(format!("http://{addr}/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", &examples, "--seed", "1"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "20"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found failures (above); stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "schemathesis ran no case");
    assert!(!report.contains("Server error"), "a 5xx answer");
}
