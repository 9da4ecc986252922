//! Outside tools the tests need, provisioned by the tests themselves so that
//! `cargo test` passes on a fresh machine with nothing installed beforehand:
//!
//! - [`python`]: a virtual environment at `target/tmp/venv` with the pinned
//!   packages of `tests/python/requirements.txt` (no system site-packages,
//!   so what the system's Python has installed never matters);
//! - [`npm_ci`]: `npm ci` of a folder holding a `package-lock.json`;
//! - [`debian_tool`]: a Debian package installed with `apt-get` when its
//!   binary is missing and the tests run as root;
//! - [`node`]: Node.js itself, which is only checked (it is not installed).
//!
//! Each is done once: a stamp written after a successful install records
//! what was installed (the requirements or lock file's contents), and a
//! later call, in this run or the next, finds it and returns at once. Test
//! processes that provision at the same time (threads under `cargo test`,
//! processes under cargo-nextest) take turns through a file lock under
//! `target/tmp`. Whatever cannot be provisioned (no network, not root, no
//! Node.js) fails the test with one line saying what to install and why.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::Duration;

use crate::cli::Proc;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Cargo's scratch directory for integration tests (`target/tmp`): the venv,
/// the lock files and the stamps live here, so `cargo clean` removes them.
const CACHE: &str = env!("CARGO_TARGET_TMPDIR");

/// The pinned Python packages the tests run with.
const REQUIREMENTS: &str = "tests/python/requirements.txt";

/// Creating the venv and installing three small packages takes about 10 s.
const PIP_TIMEOUT: Duration = Duration::from_secs(300);
/// `npm ci` of one or two packages; generous for a slow registry.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// `apt-get update`, then `apt-get install` (chromium is about 100 MB with
/// its dependencies); each step gets this long.
const APT_TIMEOUT: Duration = Duration::from_secs(900);
/// `node --version` and `npm --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python interpreter of the tests' venv, with the packages of
/// `tests/python/requirements.txt` installed; creates the venv on first use.
pub(crate) fn python() -> PathBuf {
    // The tests of one process that ask together wait for one attempt and
    // share its outcome (a failed `pip install` is not retried per test).
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(provision_venv).clone().unwrap_or_else(|e| panic!("{e}"))
}

fn provision_venv() -> Result<PathBuf, String> {
    let venv = Path::new(CACHE).join("venv");
    let python = venv.join("bin/python");
    let wanted = read(&Path::new(ROOT).join(REQUIREMENTS));
    let stamp = venv.join("tickwire-requirements.txt");
    let done = || python.exists() && fs::read(&stamp).is_ok_and(|s| s == wanted);
    if done() {
        return Ok(python);
    }
    let _turn = Turn::take("venv", 2 * PIP_TIMEOUT);
    if done() {
        return Ok(python);
    }
    let fail = |e: String| {
        format!(
            "cannot provision {REQUIREMENTS} (the tests' Python clients and oracles) into {}: \
             {e}; this needs python3 with its venv module (Debian: python3-venv) and access to PyPI",
            venv.display()
        )
    };
    eprintln!("provisioning: {REQUIREMENTS} into {}", venv.display());
    let mut create = Command::new("python3");
    create.args(["-m", "venv", "--clear"]).arg(&venv);
    step("python3 -m venv", &mut create, PIP_TIMEOUT).map_err(fail)?;
    let mut install = Command::new(&python);
    install
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .arg("--requirement")
        .arg(Path::new(ROOT).join(REQUIREMENTS));
    step("pip install", &mut install, PIP_TIMEOUT).map_err(fail)?;
    fs::write(&stamp, &wanted).map_err(|e| fail(format!("writing {}: {e}", stamp.display())))?;
    Ok(python)
}

/// Checks that Node.js and npm can run; they are not provisioned.
pub(crate) fn node() {
    for tool in ["node", "npm"] {
        step(&format!("{tool} --version"), Command::new(tool).arg("--version"), VERSION_TIMEOUT)
            .unwrap_or_else(|e| {
                panic!(
                    "this test runs JavaScript: it needs Node.js 20+ with npm on PATH \
                     (install it from nodejs.org, or Debian's nodejs and npm): {e}"
                )
            });
    }
}

/// Runs `npm ci` in `dir` (relative to the crate root) unless its
/// `node_modules` already holds what its `package-lock.json` names; returns
/// that `node_modules`.
pub(crate) fn npm_ci(dir: &str) -> PathBuf {
    let folder = Path::new(ROOT).join(dir);
    let modules = folder.join("node_modules");
    let wanted = read(&folder.join("package-lock.json"));
    // Inside node_modules, which `npm ci` deletes first: present only after
    // a complete install.
    let stamp = modules.join(".tickwire-package-lock.json");
    let done = || fs::read(&stamp).is_ok_and(|s| s == wanted);
    if done() {
        return modules;
    }
    node();
    let _turn = Turn::take(&format!("npm-{}", dir.replace('/', "-")), 2 * NPM_TIMEOUT);
    if done() {
        return modules;
    }
    let fail = |e: String| -> ! {
        panic!(
            "cannot install the npm packages of {dir} (npm ci needs access to the npm registry): {e}"
        )
    };
    eprintln!("provisioning: npm ci in {dir}");
    step(
        &format!("npm ci --prefix {dir}"),
        Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix"]).arg(&folder),
        NPM_TIMEOUT,
    )
    .unwrap_or_else(|e| fail(e));
    fs::write(&stamp, &wanted)
        .unwrap_or_else(|e| fail(format!("writing {}: {e}", stamp.display())));
    modules
}

/// Returns `binary`, a file of the Debian package `package`; when it is
/// missing and the tests run as root, installs the package with `apt-get`
/// first. `why` says what needs it, for the message when it cannot be
/// installed.
pub(crate) fn debian_tool(package: &str, binary: &str, why: &str) -> PathBuf {
    let path = PathBuf::from(binary);
    if path.exists() {
        return path;
    }
    let hint = format!(
        "{why} needs {binary}: install Debian's {package} (`apt-get install -y {package}`)"
    );
    assert!(
        rustix::process::geteuid().is_root(),
        "{hint}; the tests install it themselves only when they run as root"
    );
    let _turn = Turn::take("apt", 3 * APT_TIMEOUT);
    if path.exists() {
        return path;
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        // Waits for another apt or dpkg (outside these tests) to finish.
        cmd.args(["-q", "-y", "-o", "DPkg::Lock::Timeout=300"]).args(args);
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        step(&format!("apt-get {}", args.join(" ")), &mut cmd, APT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{hint}; installing it failed: {e}"))
    };
    eprintln!("provisioning: apt-get install {package}");
    // The package lists of a fresh machine may be missing or stale.
    apt(&["update"]);
    apt(&["install", package]);
    assert!(path.exists(), "{hint}; apt-get installed {package} but {binary} is still missing");
    path
}

/// One provisioning step at a time per `name`, across threads and
/// processes: an exclusive `flock` on `target/tmp/provision-NAME.lock`,
/// released when dropped.
struct Turn {
    _file: File,
}

impl Turn {
    /// Waits up to `timeout` (longer than the step another process may be
    /// doing) for the lock.
    fn take(name: &str, timeout: Duration) -> Turn {
        let path = Path::new(CACHE).join(format!("provision-{name}.lock"));
        fs::create_dir_all(CACHE).unwrap_or_else(|e| panic!("cannot create {CACHE}: {e}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        // flock(2) has no timeout: it blocks on a helper thread, and the
        // wait here is bounded. The helper's descriptor shares the lock, so
        // the lock is released once both are closed.
        let shared = file.try_clone().expect("dup the lock file's descriptor");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let locked = rustix::fs::flock(&shared, rustix::fs::FlockOperation::LockExclusive);
            let _ = tx.send(locked);
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => Turn { _file: file },
            Ok(Err(e)) => panic!("cannot lock {}: {e}", path.display()),
            Err(_) => panic!(
                "waited {timeout:?} for {}: another test process is still provisioning",
                path.display()
            ),
        }
    }
}

/// Runs `cmd` with a deadline; on failure, one line: the exit status (or
/// the timeout) and the last line the command wrote to stderr.
fn step(what: &str, cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    let mut p = Proc::try_spawn(cmd).map_err(|e| format!("cannot run {what}: {e}"))?;
    let Some(status) = p.wait_exit(timeout) else {
        return Err(format!("{what} did not finish within {timeout:?} (killed)"));
    };
    if status.success() {
        return Ok(());
    }
    let (_, stderr) = p.output();
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    Err(format!("{what} failed ({status}): {last}"))
}

/// The contents of a file the tests ship.
fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
