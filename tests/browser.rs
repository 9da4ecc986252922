//! The dashboard (`src/dashboard/`): its protocol client `tickwire.js` under
//! Node's test runner, and the page itself in Debian's chromium driven by
//! `playwright-core` (`tests/browser/dashboard.e2e.mjs`, which starts its own
//! `tickwire serve` processes from this crate's binary, with compression on,
//! and checks that chromium negotiated permessage-deflate). Beside them, the
//! Node `ws` client with permessage-deflate (`tests/browser/node_ws.e2e.mjs`).
//!
//! All need Node.js, and the browser test needs `/usr/bin/chromium`; when
//! either is missing they fail (never skip) and say what to install.
//! `npm ci` runs first when a package of `tests/browser` is missing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::{BIN, Proc};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const CHROMIUM: &str = "/usr/bin/chromium";

/// `npm ci` downloads one package; generous for a slow registry.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// The unit tests take well under a second.
const UNIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The browser script caps itself at 100 s and kills its servers; this is the
/// backstop if node itself hangs.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

/// Runs `cmd` in the crate root; panics with its output unless it exits 0
/// within `timeout`. Returns its stdout.
fn run(what: &str, cmd: &mut Command, timeout: Duration) -> String {
    let started = Instant::now();
    let mut p =
        Proc::try_spawn(cmd.current_dir(ROOT)).unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let Some(status) = p.wait_exit(timeout) else {
        panic!("{what} did not finish within {timeout:?} (killed); stderr so far:\n{}", p.stderr());
    };
    let (stdout, stderr) = p.output();
    assert!(status.success(), "{what} failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("{what}: ok in {:?}", started.elapsed());
    stdout
}

/// Runs `npm ci` in `tests/browser` unless `package` is installed there.
fn npm_ci_unless_installed(package: &str) {
    if !Path::new(DIR).join("node_modules").join(package).exists() {
        run(
            "npm ci --prefix tests/browser",
            Command::new("npm").args([
                "ci",
                "--prefix",
                "tests/browser",
                "--no-audit",
                "--no-fund",
            ]),
            NPM_TIMEOUT,
        );
    }
}

/// Fails (never skips) when `node` cannot run.
fn require_node() {
    const HINT: &str = "the dashboard tests need Node.js 20+ with npm on PATH";
    let mut p = Proc::try_spawn(Command::new("node").arg("--version"))
        .unwrap_or_else(|e| panic!("{HINT} (cannot run node: {e})"));
    let status = p.wait_exit(Duration::from_secs(10)).expect("`node --version` finishes");
    assert!(status.success(), "{HINT} (`node --version` failed: {status})");
}

#[test]
fn tickwire_js_unit_tests() {
    require_node();
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .expect("tests/browser exists")
        .map(|e| e.expect("readable entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("tests/browser/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/browser/*.test.mjs found");
    let out = run(
        "node --test tests/browser/*.test.mjs",
        Command::new("node").arg("--test").args(&files),
        UNIT_TIMEOUT,
    );
    // The TAP summary: which tests ran.
    eprintln!("{}", out.lines().filter(|l| l.starts_with("# ")).collect::<Vec<_>>().join("\n"));
}

#[test]
fn dashboard_in_chromium() {
    require_node();
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser test needs Debian's chromium at {CHROMIUM}: run `apt-get install -y chromium` \
         (never a Playwright browser download)"
    );
    npm_ci_unless_installed("playwright-core");
    let shot = Path::new(ROOT).join("target/dashboard.png");
    let out = run(
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
    require_node();
    npm_ci_unless_installed("ws");
    let out = run(
        "node tests/browser/node_ws.e2e.mjs",
        Command::new("node").arg("tests/browser/node_ws.e2e.mjs").env("TICKWIRE_BIN", BIN),
        UNIT_TIMEOUT,
    );
    eprintln!("{out}");
}
