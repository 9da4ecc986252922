//! The reference peers of `tickwire-bench` (`tools/peers/`) follow their
//! contract: `tools/peers/check.py` starts the Node.js and the Python peer
//! on a small workload and checks what a client gets (tools/peers/README.md).
//! The third peer, `tokio-broadcast`, is a package of its own that this
//! binary cannot build; `.ci/run` checks it with the same script.

use std::process::Command;
use std::time::Duration;

use crate::cli::run_to_end;
use crate::provision;

/// check.py gives each peer 30 s at most (about 2 s when all is well).
const CHECK_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn node_and_python_peers_follow_the_contract() {
    let python = provision::python();
    provision::npm_ci("tools/peers/node-ws");
    let out = run_to_end(
        "tools/peers/check.py --only node-ws,python-websockets",
        Command::new(python).args(["tools/peers/check.py", "--only", "node-ws,python-websockets"]),
        CHECK_TIMEOUT,
    );
    eprintln!("{out}");
}
