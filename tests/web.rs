//! The run view in headless Chromium: `web/test/*.test.mjs` (node's test runner and
//! playwright-core) against real `shipsec serve` processes started from this build's
//! binary. Screenshots of every case go to `target/web-screenshots/`.
//!
//! Needs Node, `npm ci` in `web/`, and Debian's Chromium (`.ci/run` installs them). On a
//! machine without them the test says SKIPPED, unless `SHIPSEC_REQUIRE_BROWSER=1`
//! (CI) makes that a failure.

mod node;

use std::path::Path;

fn missing() -> Option<String> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let chromium = std::env::var("SHIPSEC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !node::has_node() {
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
    if !node::may_run(missing(), "SHIPSEC_REQUIRE_BROWSER") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let artefacts = root.join("target/web-screenshots");
    node::run(
        &root.join("web"),
        &[root.join("web/test").as_os_str()],
        &[("SHIPSEC_ARTEFACTS", artefacts.as_os_str())],
        "the browser tests",
    );
}
