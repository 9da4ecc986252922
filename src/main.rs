//! The `tickwire` binary: parse flags, start the server, wait for a signal.

use std::process::ExitCode;

use clap::Parser;
use tickwire::config::{Args, Command, Config};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args = Args::parse();
    match args.command {
        Command::Serve(serve) => {
            let config = match Config::from_args(&serve) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tickwire: {e}");
                    return ExitCode::from(2);
                }
            };
            let server = match tickwire::start(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tickwire: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let addr = server.local_addr();
            println!("tickwire listening on http://{addr}/ (WebSocket: ws://{addr}/ws)");
            wait_for_signal();
            tracing::info!("shutting down");
            server.shutdown();
            ExitCode::SUCCESS
        }
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
