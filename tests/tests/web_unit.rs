//! The viewer's pure JS modules (web/state.js: the URL round-trip; web/layout.js: the
//! flamegraph layout the viewer and the HTML export share) under node's built-in test
//! runner (`node --test web/tests/`): no browser.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use prof_e2e::run_captured;
use prof_e2e::vmprof::require;

#[test]
fn web_modules_pass_their_node_tests() {
    require("node", &["--version"], "apt-get install -y nodejs");
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let o = run_captured(
        Command::new("node")
            .arg("--test")
            .arg("tests/")
            .current_dir(&web),
        Duration::from_secs(120),
    );
    assert!(
        o.status.success(),
        "node --test web/tests/ failed:\n{}\n{}",
        o.stdout,
        o.stderr
    );
    let passed = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        passed >= 10,
        "only {passed} node tests passed:\n{}",
        o.stdout
    );
}
