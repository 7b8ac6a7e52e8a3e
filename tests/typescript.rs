//! The TypeScript worker SDK (`clients/typescript`): its own tests and the worker
//! conformance suite, which drives the Rust `shipsec worker` and an SDK worker alike
//! (node's test runner, against real `shipsec serve` processes from this build's binary).
//!
//! Needs Node and `npm ci && npm run build` in `clients/typescript/` (`.ci/run` does it).
//! On a machine without them the test says SKIPPED, unless `SHIPSEC_REQUIRE_NODE=1` (CI)
//! makes that a failure.

use std::path::Path;
use std::process::Command;

fn missing(sdk: &Path) -> Option<String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !sdk.join("node_modules/@grpc/grpc-js").exists() {
        return Some("clients/typescript/node_modules is missing (run `npm ci` there)".into());
    }
    if !sdk.join("dist/index.js").exists() {
        return Some("clients/typescript/dist is missing (run `npm run build` there)".into());
    }
    None
}

#[test]
fn the_typescript_sdk_and_the_worker_conformance_suite_pass() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript");
    if let Some(why) = missing(&sdk) {
        assert!(
            std::env::var("SHIPSEC_REQUIRE_NODE").as_deref() != Ok("1"),
            "SHIPSEC_REQUIRE_NODE=1 but {why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    let tests = ["test/sdk.test.mjs", "test/conformance.test.mjs"];
    let out = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .args(tests)
        .current_dir(&sdk)
        .env("SHIPSEC_BIN", env!("CARGO_BIN_EXE_shipsec"))
        .output()
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(
        out.status.success(),
        "the TypeScript SDK's tests failed:\n{report}"
    );
}
