//! The `tickwire` binary: parse flags, then serve (until a signal; SIGHUP
//! reloads the API keys and the JWT key), record, convert, inspect or hash
//! an API key.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use tickwire::config::{
    Args, BusRole, Command, Config, ConvertArgs, IngestArgs, InspectArgs, RecordArgs, ServeArgs,
};
use tickwire::files::{self, OutFormat, RecordOptions};
use tickwire::tick::SymbolTable;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Transparent huge pages off for this process: mimalloc asks for them
    // on its arenas, and with thousands of sessions' sparse buffers they
    // turned about 40 MB of the 200,000 updates/s latest row's 103 MB into
    // resident memory without making it faster (BENCHMARKS.md, "The
    // latest-mode row"). This is what mimalloc's own `MIMALLOC_ALLOW_THP=0`
    // does; the flag applies to every page faulted from here on.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match Args::parse().command {
        Command::Serve(a) => serve(&a),
        Command::Ingest(a) => ingest(&a),
        Command::Record(a) => record(&a),
        Command::Convert(a) => convert(&a),
        Command::Inspect(a) => inspect(&a),
        Command::HashKey => hash_key(),
    }
}

/// A usage error: exit status 2, as clap's own.
fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tickwire: {msg}");
    ExitCode::from(2)
}

/// A failure while running.
fn failed(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tickwire: {msg}");
    ExitCode::FAILURE
}

fn serve(a: &ServeArgs) -> ExitCode {
    match Config::from_args(a) {
        Ok(c) => run_server(&c),
        Err(e) => usage(e),
    }
}

/// `tickwire ingest`: a server that also publishes its feed on the bus.
fn ingest(a: &IngestArgs) -> ExitCode {
    match Config::from_ingest_args(a) {
        Ok(c) => run_server(&c),
        Err(e) => usage(e),
    }
}

/// Runs a server until SIGINT or SIGTERM (SIGHUP reloads the keys).
fn run_server(config: &Config) -> ExitCode {
    let server = match tickwire::start(config) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let addr = server.local_addr();
    let (http, ws) = if config.tls.is_some() { ("https", "wss") } else { ("http", "ws") };
    let signals = Signals::install();
    println!("tickwire listening on {http}://{addr}/ (WebSocket: {ws}://{addr}/ws)");
    if config.echo_endpoint {
        println!("conformance echo (--echo-endpoint): {ws}://{addr}/echo");
    }
    match &config.bus {
        Some(BusRole::Ingest(bus)) => println!("ingest: publishing the feed on {}", bus.url),
        Some(BusRole::Edge(bus)) => println!("edge: the feed comes from the bus at {}", bus.url),
        None => {}
    }
    // The reload logs its outcome and counts it in /metrics.
    signals.wait(|| {
        tracing::info!("SIGHUP: reloading the API keys and the JWT key");
        let _ = server.reload_auth();
    });
    tracing::info!("shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}

fn record(a: &RecordArgs) -> ExitCode {
    let max_symbols = 1 << 16;
    let (choice, synthetic) = match a.source.choice(false, max_symbols) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let format = match OutFormat::choose(&a.out, a.format.as_deref()) {
        Ok(f) => f,
        Err(e) => return usage(format!("invalid --out: {e}")),
    };
    let duration = match a.duration.as_deref().map(files::parse_duration).transpose() {
        Ok(d) => d,
        Err(e) => return usage(format!("invalid --duration: {e}")),
    };
    let table = Arc::new(SymbolTable::new(max_symbols));
    let hb = std::time::Duration::from_secs(1);
    let source = match tickwire::server::build_source(&choice, synthetic, hb, &table) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    // SIGINT/SIGTERM end the recording cleanly (the file is finished).
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        wait_for_signal();
        flag.store(true, Ordering::Release);
    });
    let options = RecordOptions { out: a.out.clone(), format, duration };
    match files::record(source, table, &options, &stop) {
        Ok(r) => {
            eprintln!(
                "tickwire: recorded {} ticks to {} ({} source records skipped)",
                r.ticks,
                a.out.display(),
                r.skipped
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

fn convert(a: &ConvertArgs) -> ExitCode {
    let format = match OutFormat::choose(&a.output, a.format.as_deref()) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    match files::convert(&a.input, &a.output, format, a.date) {
        Ok(c) => {
            eprintln!(
                "tickwire: converted {} ({}) to {}: {} ticks, {} records skipped",
                a.input.display(),
                c.from.name(),
                a.output.display(),
                c.ticks,
                c.skips.count
            );
            for s in &c.skips.first {
                eprintln!("  skipped at {}: {}", s.at, s.why);
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

fn inspect(a: &InspectArgs) -> ExitCode {
    match files::inspect(&a.file, a.date) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

/// Reads one API key from standard input (the first line, without its line
/// end) and prints its SHA-256 in hex, for the `--api-keys` file.
fn hash_key() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        return failed(format!("cannot read the key from stdin: {e}"));
    }
    let key = line.trim_end_matches(['\r', '\n']);
    if key.is_empty() {
        return usage("hash-key: give the key on standard input");
    }
    println!("{}", tickwire::auth::keys::hash_key(key));
    ExitCode::SUCCESS
}

/// The signals `serve` reacts to, installed before the URL is printed (a
/// SIGHUP that arrived before its handler would end the process).
struct Signals {
    rt: tokio::runtime::Runtime,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        let _guard = rt.enter();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
            drop(_guard);
            Signals { rt, term, hup }
        }
        #[cfg(not(unix))]
        {
            drop(_guard);
            Signals { rt }
        }
    }

    /// Blocks until SIGINT or SIGTERM, calling `reload` on every SIGHUP.
    fn wait(mut self, mut reload: impl FnMut()) {
        self.rt.block_on(async {
            loop {
                #[cfg(unix)]
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = self.term.recv() => return,
                    _ = self.hup.recv() => reload(),
                }
                #[cfg(not(unix))]
                {
                    let _ = &mut reload;
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            }
        });
    }
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("signal runtime");
    rt.block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    });
}
