//! The dashboard (`src/dashboard/`): its protocol client `tickwire.js` under
//! Node's test runner (against fake sockets, and in `resume.test.mjs` and
//! `bars.test.mjs` against `tickwire serve`), the page itself in Debian's
//! chromium driven by `playwright-core` (`tests/browser/dashboard.e2e.mjs`,
//! with compression on: it checks that chromium negotiated
//! permessage-deflate), and beside them the Node `ws` client with
//! permessage-deflate (`tests/browser/node_ws.e2e.mjs`). Whatever runs a
//! server runs this crate's binary, passed as `TICKWIRE_BIN`.
//!
//! All need Node.js; the browser test also needs `playwright-core` and
//! Debian's chromium, which it provisions itself (`crate::provision`: `npm ci`
//! in `tests/browser`, and `apt-get install chromium` when running as root).
//! What cannot be provisioned fails the test (never a skip) and says what to
//! install.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cli::{BIN, run_to_end};
use crate::provision;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
/// Where Debian's chromium package puts the browser (the path
/// `dashboard.e2e.mjs` launches).
const CHROMIUM: &str = "/usr/bin/chromium";
/// The unit tests take a few seconds (the real-server ones most of it).
const UNIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The browser script caps itself at 100 s and kills its servers; this is the
/// backstop if node itself hangs.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

#[test]
fn tickwire_js_unit_tests() {
    provision::node();
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .expect("tests/browser exists")
        .map(|e| e.expect("readable entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("tests/browser/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/browser/*.test.mjs found");
    let out = run_to_end(
        "node --test tests/browser/*.test.mjs",
        Command::new("node")
            // Node 20's WebSocket (resume.test.mjs talks to a real server);
            // 22+ has it without the flag and still accepts it.
            .arg("--experimental-websocket")
            .arg("--test")
            .args(&files)
            .env("TICKWIRE_BIN", BIN),
        UNIT_TIMEOUT,
    );
    // The TAP summary: which tests ran.
    eprintln!("{}", out.lines().filter(|l| l.starts_with("# ")).collect::<Vec<_>>().join("\n"));
}

#[test]
fn dashboard_in_chromium() {
    provision::npm_ci("tests/browser");
    provision::debian_tool("chromium", CHROMIUM, "the dashboard test (tests/browser.rs)");
    let shot = Path::new(ROOT).join("target/dashboard.png");
    let out = run_to_end(
        "node tests/browser/dashboard.e2e.mjs",
        Command::new("node")
            .arg("tests/browser/dashboard.e2e.mjs")
            .env("TICKWIRE_BIN", BIN)
            .env("SCREENSHOT", &shot),
        BROWSER_TIMEOUT,
    );
    eprintln!("{out}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
}

#[test]
fn node_ws_client_with_permessage_deflate() {
    provision::npm_ci("tests/browser");
    let out = run_to_end(
        "node tests/browser/node_ws.e2e.mjs",
        Command::new("node").arg("tests/browser/node_ws.e2e.mjs").env("TICKWIRE_BIN", BIN),
        UNIT_TIMEOUT,
    );
    eprintln!("{out}");
}
