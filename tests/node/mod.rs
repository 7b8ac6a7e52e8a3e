//! Node's test runner driven from `cargo test`: the suites of the run view (`web/`) and
//! of the TypeScript SDK (`clients/typescript/`) run against this build's binary.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Whether the suite may run: `missing` says what it lacks, if anything. Lacking it is
/// a SKIPPED line, or a failure when `require` (CI's variable) is `1`.
pub fn may_run(missing: Option<String>, require: &str) -> bool {
    let Some(why) = missing else {
        return true;
    };
    assert!(
        std::env::var(require).as_deref() != Ok("1"),
        "{require}=1 but {why}"
    );
    eprintln!("SKIPPED: {why}");
    false
}

/// Whether `node` can be started.
pub fn has_node() -> bool {
    Command::new("node").arg("--version").output().is_ok()
}

/// Runs `node --test` on `tests` from `dir`, one file at a time, with `SHIPSEC_BIN`
/// naming this build's binary and `env` set; prints the report and fails with it unless
/// every test passed.
pub fn run(dir: &Path, tests: &[&OsStr], env: &[(&str, &OsStr)], suite: &str) {
    let out = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .args(tests)
        .current_dir(dir)
        .env("SHIPSEC_BIN", env!("CARGO_BIN_EXE_shipsec"))
        .envs(env.iter().copied())
        .output()
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "{suite} failed:\n{report}");
}
