//! The run view in headless Chromium: `web/test/*.test.mjs` (node's test runner and
//! playwright-core) against real `shipsec serve` processes started from this build's
//! binary. Screenshots of every case go to `target/web-screenshots/`.
//!
//! Needs Node, `npm ci` in `web/`, and Debian's Chromium (`.ci/run` installs them). On a
//! machine without them the test says SKIPPED, unless `SHIPSEC_REQUIRE_BROWSER=1`
//! (CI) makes that a failure.

use std::path::Path;
use std::process::Command;

fn missing() -> Option<String> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let chromium = std::env::var("SHIPSEC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !web.join("node_modules/playwright-core").exists() {
        return Some("web/node_modules is missing (run `npm ci` in web/)".into());
    }
    if !Path::new(&chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    None
}

#[test]
fn the_run_view_passes_its_browser_tests() {
    if let Some(why) = missing() {
        assert!(
            std::env::var("SHIPSEC_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "SHIPSEC_REQUIRE_BROWSER=1 but {why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .arg(root.join("web/test"))
        .current_dir(root.join("web"))
        .env("SHIPSEC_BIN", env!("CARGO_BIN_EXE_shipsec"))
        .env("SHIPSEC_ARTEFACTS", root.join("target/web-screenshots"))
        .output()
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "the browser tests failed:\n{report}");
}
