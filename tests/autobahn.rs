//! WebSocket conformance: `tools/autobahn.sh` runs the Autobahn test cases
//! (the fuzzing client of the PyPI package `kosoku`, from the tests' venv)
//! against `tickwire serve --echo-endpoint` and compares every case's
//! verdict with `tests/autobahn/expected.json`: every group but the
//! compression ones (12-13, which `.ci/run` runs on the release build).
//! About 10 s.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cli::{BIN, run_to_end};
use crate::provision;

/// The script bounds kosoku at 300 s (`AUTOBAHN_TIMEOUT`) and the server's
/// start at 10 s; this is the backstop if the script itself hangs.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(360);

#[test]
fn every_autobahn_case_as_expected() {
    let kosoku = provision::python().with_file_name("kosoku");
    let out = run_to_end(
        "tools/autobahn.sh",
        Command::new("bash")
            .arg("tools/autobahn.sh")
            .env("TICKWIRE_BIN", BIN)
            // permessage-deflate (groups 12-13) runs in .ci/run, on the
            // release build: on this debug build it would take minutes.
            .env("AUTOBAHN_GROUPS", "core")
            .env("KOSOKU", &kosoku)
            .env("AUTOBAHN_OUT", Path::new(env!("CARGO_TARGET_TMPDIR")).join("autobahn")),
        SCRIPT_TIMEOUT,
    );
    eprintln!("{out}");
}
