//! The TypeScript worker SDK (`clients/typescript`): its own tests and the worker
//! conformance suite, which drives the Rust `shipsec worker` and an SDK worker alike
//! (node's test runner, against real `shipsec serve` processes from this build's binary).
//!
//! Needs Node and `npm ci && npm run build` in `clients/typescript/` (`.ci/run` does it).
//! On a machine without them the test says SKIPPED, unless `SHIPSEC_REQUIRE_NODE=1` (CI)
//! makes that a failure.

mod node;

use std::path::Path;

fn missing(sdk: &Path) -> Option<String> {
    if !node::has_node() {
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
    if !node::may_run(missing(&sdk), "SHIPSEC_REQUIRE_NODE") {
        return;
    }
    let tests = ["test/sdk.test.mjs", "test/conformance.test.mjs"].map(std::ffi::OsStr::new);
    node::run(&sdk, &tests, &[], "the TypeScript SDK's tests");
}
