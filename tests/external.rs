//! A client outside the Rust stack: `tests/python/client_check.py`, written
//! from the protocol document alone with Python's `websockets` package (in
//! the tests' venv, `crate::provision::python`), drives a real
//! `tickwire serve` process and must exit 0, once without compression and
//! once with the permessage-deflate `websockets` offers by default.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::{Proc, start_server};
use crate::provision;

/// The Python client check.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");

/// How long the script may run before it is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the script against a server started with `server_args`, expecting
/// `extension` negotiated (`none`: no extension).
fn python_check(server_args: &[&str], extension: &str) {
    let python = provision::python();
    let server = start_server(server_args);
    let url = format!("ws://{}/ws", server.addr);
    let started = Instant::now();
    let mut py = Proc::spawn(
        Command::new(python)
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
