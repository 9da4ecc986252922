//! The `tickwire` binary itself: the URL it prints at start, graceful exit on
//! SIGTERM and SIGINT (the listener closes first, every client gets
//! `shutdown` and a close with 1012, the process exits 0 within 2 s), and a non-zero exit naming a bad flag.
//!
//! [`Proc`], [`start_server`] and [`run_to_end`] are shared with the tests
//! that run other programs.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{Client, TIMEOUT, http_get};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tickwire");

/// The longest the process may take to exit after SIGTERM or SIGINT.
const EXIT_DEADLINE: Duration = Duration::from_secs(2);

/// A child process with its stdout read line by line and its stderr
/// collected, both on their own threads (so the child never blocks on a
/// full pipe). Killed and reaped when dropped, so a failing test never
/// leaks a process.
pub(crate) struct Proc {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured.
    pub(crate) fn spawn(cmd: &mut Command) -> Proc {
        Proc::try_spawn(cmd).unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"))
    }

    /// [`Proc::spawn`], returning the error when `cmd` cannot start.
    pub(crate) fn try_spawn(cmd: &mut Command) -> std::io::Result<Proc> {
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, stdout) = mpsc::channel();
        let stdout_thread = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                // Keep draining even when nobody listens any more.
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Proc {
            child,
            stdout,
            stdout_thread: Some(stdout_thread),
            stderr,
            stderr_thread: Some(stderr_thread),
            status: None,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of stdout, waiting until `deadline`; `Err` says why
    /// there is none (timeout, or stdout closed).
    pub(crate) fn line_before(&self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        self.stdout.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    /// Polls until the process exits or `timeout` passes.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// After the process exited: all of its stdout and stderr.
    pub(crate) fn output(&mut self) -> (String, String) {
        assert!(self.status.is_some(), "output() before the process exited");
        // The pipes hit EOF when the process exits (tickwire and python3
        // start no children of their own), so the readers end promptly.
        if let Some(t) = self.stdout_thread.take() {
            t.join().expect("stdout reader");
        }
        if let Some(t) = self.stderr_thread.take() {
            t.join().expect("stderr reader");
        }
        let out: Vec<String> = self.stdout.try_iter().collect();
        (out.join("\n"), self.stderr())
    }

    /// Sends `signal` (a name such as `TERM`) with `kill(1)`.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed: {status}", self.pid());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `cmd` in the crate root, in a process group of its own, and returns
/// its stdout; panics with its output unless it exits 0 within `timeout`.
/// On a timeout the whole group is killed, so that the servers or workers
/// the command started do not outlive the test.
pub(crate) fn run_to_end(what: &str, cmd: &mut Command, timeout: Duration) -> String {
    let started = Instant::now();
    let mut p = Proc::try_spawn(cmd.current_dir(env!("CARGO_MANIFEST_DIR")).process_group(0))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let Some(status) = p.wait_exit(timeout) else {
        let group = format!("-{}", p.pid());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        panic!("{what} did not finish within {timeout:?} (killed); stderr so far:\n{}", p.stderr());
    };
    let (stdout, stderr) = p.output();
    assert!(status.success(), "{what} failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("{what}: ok in {:?}", started.elapsed());
    stdout
}

/// A `tickwire serve` process and the address it printed.
pub(crate) struct ServerProc {
    pub(crate) proc: Proc,
    pub(crate) addr: SocketAddr,
}

/// Starts `tickwire serve --listen 127.0.0.1:0 <extra>` and reads the bound
/// address from the `http://127.0.0.1:PORT/` it prints on stdout.
pub(crate) fn start_server(extra: &[&str]) -> ServerProc {
    start_tickwire("serve", extra)
}

/// Starts `tickwire <command> --listen 127.0.0.1:0 <extra>` (`serve` or
/// `ingest`) and reads the bound address it prints.
pub(crate) fn start_tickwire(command: &str, extra: &[&str]) -> ServerProc {
    let proc =
        Proc::spawn(Command::new(BIN).args([command, "--listen", "127.0.0.1:0"]).args(extra));
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let line = match proc.line_before(deadline) {
            Ok(line) => line,
            Err(e) => panic!(
                "no http://127.0.0.1:PORT/ line on stdout ({e:?}); stdout so far: {seen:?}; stderr: {}",
                proc.stderr()
            ),
        };
        if let Some(port) = url_port(&line) {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            return ServerProc { proc, addr };
        }
        seen.push(line);
    }
}

/// The port of the first `http://127.0.0.1:PORT/` in `line`.
fn url_port(line: &str) -> Option<u16> {
    const PREFIX: &str = "http://127.0.0.1:";
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    let (port, tail) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit())?);
    if !tail.starts_with('/') {
        return None;
    }
    port.parse().ok().filter(|&p| p != 0)
}

#[test]
fn url_port_parses_the_printed_line() {
    let line = "tickwire listening on http://127.0.0.1:41234/ (WebSocket: ws://127.0.0.1:41234/ws)";
    assert_eq!(url_port(line), Some(41234));
    assert_eq!(url_port("http://127.0.0.1:0/"), None);
    assert_eq!(url_port("http://127.0.0.1:80"), None);
    assert_eq!(url_port("listening"), None);
}

#[tokio::test]
async fn prints_its_url_and_serves_healthz() {
    let s = start_server(&["--rate", "500", "--symbols", "50"]);
    let (status, body) = http_get(s.addr, "/healthz").await;
    assert_eq!(status, 200, "GET /healthz on the printed port: body {body:?}");
}

/// After `signal`, new connections are refused, a subscribed client sees
/// `shutdown` then a close with 1012 (server restarting), and the process
/// exits 0 within [`EXIT_DEADLINE`].
async fn graceful_exit_on(signal: &str) {
    let mut s = start_server(&["--rate", "500", "--symbols", "50"]);
    let mut c = Client::connect(s.addr, "").await;
    let reply = c.subscribe(json!({"symbols": ["AAPL", "MSFT"]})).await;
    assert_eq!(reply["rejected"], json!([]), "{reply}");
    // Streaming: at least one update arrived before the signal.
    c.until(|m| m["type"] == "q" || m["type"] == "t").await;

    let sent = Instant::now();
    s.proc.signal(signal);
    let bye = c.until_type("shutdown").await;
    let after = bye["reconnect_after_ms"].as_u64();
    assert!(after.is_some_and(|ms| (1000..2000).contains(&ms)), "jittered reconnect hint: {bye}");
    // Listening stopped before the sessions were told.
    let again = tokio::net::TcpStream::connect(s.addr).await;
    assert!(again.is_err(), "a new connection after `shutdown` must be refused");
    let code = c.closed().await;
    assert_eq!(code, Some(1012), "close code after SIGTERM/SIGINT; stderr: {}", s.proc.stderr());
    drop(c);

    let left = EXIT_DEADLINE.saturating_sub(sent.elapsed());
    let status = s.proc.wait_exit(left).unwrap_or_else(|| {
        panic!("still running {EXIT_DEADLINE:?} after SIG{signal}; stderr: {}", s.proc.stderr())
    });
    assert!(status.success(), "exit after SIG{signal}: {status}; stderr: {}", s.proc.stderr());
    eprintln!("SIG{signal}: exited 0 {:?} after the signal", sent.elapsed());
}

#[tokio::test]
async fn sigterm_closes_clients_with_1012_and_exits_0() {
    graceful_exit_on("TERM").await;
}

#[tokio::test]
async fn sigint_closes_clients_with_1012_and_exits_0() {
    graceful_exit_on("INT").await;
}

#[test]
fn bad_flags_exit_nonzero_naming_the_flag() {
    for (flag, value) in [("rate", "0"), ("rate", "abc"), ("symbols", "0"), ("listen", "nope")] {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", &format!("--{flag}"), value]);
        if flag != "listen" {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut p = Proc::spawn(&mut cmd);
        let status = p
            .wait_exit(TIMEOUT)
            .unwrap_or_else(|| panic!("`serve --{flag} {value}` did not exit: {}", p.stderr()));
        let (_, stderr) = p.output();
        assert!(!status.success(), "`serve --{flag} {value}` must fail, got {status}");
        assert!(
            stderr.contains(&format!("--{flag}")),
            "stderr of `serve --{flag} {value}` must name --{flag}: {stderr:?}"
        );
    }
}

/// `tickwire hash-key` prints the SHA-256 of the key on stdin, as
/// `printf %s KEY | sha256sum` does.
#[test]
fn hash_key_prints_the_sha256_of_stdin() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hash-key");
    child.stdin.take().unwrap().write_all(b"test\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}

/// SIGHUP reloads `--api-keys`: a session whose key left the file gets
/// `error` 401 and close 4001 within 1 s; the server keeps running.
#[tokio::test]
async fn sighup_reloads_api_keys_and_closes_revoked_sessions() {
    let path = std::env::temp_dir().join(format!("tickwire-cli-keys-{}", std::process::id()));
    let line = |id: &str, key: &str| {
        let hash = tickwire::auth::keys::hash_key(key);
        format!("{{\"id\":\"{id}\",\"sha256\":\"{hash}\",\"symbols\":[\"*\"]}}\n")
    };
    std::fs::write(&path, line("a", "key-a") + &line("b", "key-b")).unwrap();
    let p = path.to_str().unwrap();
    let s = start_server(&["--rate", "500", "--symbols", "50", "--api-keys", p]);
    let mut c = Client::connect(s.addr, "token=key-a").await;
    c.subscribe(json!({"symbols": ["AAPL"]})).await;
    std::fs::write(&path, line("b", "key-b")).unwrap();
    let sent = Instant::now();
    s.proc.signal("HUP");
    let err = c.until_type("error").await;
    assert_eq!(err["code"], 401, "{err}");
    let code = c.closed().await;
    assert_eq!(code, Some(4001), "stderr: {}", s.proc.stderr());
    assert!(sent.elapsed() < Duration::from_secs(1), "closed {:?} after SIGHUP", sent.elapsed());
    // Still serving, with the new keys.
    let (status, _) = http_get(s.addr, "/healthz").await;
    assert_eq!(status, 200);
    let c = Client::connect(s.addr, "token=key-b").await;
    assert_eq!(c.welcome["auth"], "ok");
    let _ = std::fs::remove_file(&path);
}
