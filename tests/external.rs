//! A client outside the Rust stack: `tests/python/client_check.py`, written
//! from the protocol document alone with Python's `websockets` package,
//! drives a real `tickwire serve` process and must exit 0, once without
//! compression and once with the permessage-deflate `websockets` offers by
//! default.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::{Proc, start_server};
use crate::util::TIMEOUT;

/// The Python client check.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");

/// How long the script may run before it is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails (never skips) when `python3` or its `websockets` package is missing.
fn require_python_websockets() {
    const HINT: &str =
        "this test needs python3 with the websockets package: run `pip install websockets`";
    let mut p = Proc::try_spawn(Command::new("python3").args(["-c", "import websockets"]))
        .unwrap_or_else(|e| panic!("{HINT} (cannot run python3: {e})"));
    let status = p.wait_exit(TIMEOUT).expect("`python3 -c 'import websockets'` finishes");
    let (_, stderr) = p.output();
    assert!(status.success(), "{HINT} (python3 -c 'import websockets' failed: {status}: {stderr})");
}

/// Runs the script against a server started with `server_args`, expecting
/// `extension` negotiated (`none`: no extension).
fn python_check(server_args: &[&str], extension: &str) {
    require_python_websockets();
    let server = start_server(server_args);
    let url = format!("ws://{}/ws", server.addr);
    let started = Instant::now();
    let mut py = Proc::spawn(
        Command::new("python3")
            .arg("-u")
            .arg(SCRIPT)
            .arg(&url)
            .args(["--expect-extension", extension]),
    );
    let Some(status) = py.wait_exit(SCRIPT_TIMEOUT) else {
        panic!(
            "{SCRIPT} did not finish within {SCRIPT_TIMEOUT:?} (killed); stderr: {}",
            py.stderr()
        );
    };
    let (stdout, stderr) = py.output();
    assert!(
        status.success(),
        "{SCRIPT} {url} failed ({status}):\nstdout: {stdout}\nstderr: {stderr}\nserver stderr: {}",
        server.proc.stderr()
    );
    eprintln!("{stdout} [{:?}]", started.elapsed());
}

#[test]
fn python_websockets_client_follows_the_protocol() {
    python_check(&["--symbols", "50", "--compression", "off"], "none");
}

/// `websockets` offers permessage-deflate by default: the whole check runs
/// over it, every server message inflated by the client.
#[test]
fn python_websockets_client_with_its_default_compression() {
    python_check(&["--symbols", "50", "--compression", "on"], "permessage-deflate");
}
