//! tickwire-feedgen: writes a deterministic JSON-lines feed file from the
//! synthetic feed's random walk (or, with `--format itch`, a NASDAQ ITCH 5.0
//! file from `tickwire::feed::itch::generate`), and measures how fast
//! tickwire parses one.
//!
//! ```text
//! cargo run --bin tickwire-feedgen -- --out feeds/sample.jsonl
//! cargo run --bin tickwire-feedgen -- --format itch --messages 9000 --seed 1 --out feeds/sample.itch
//! cargo run --release --bin tickwire-feedgen -- --out /tmp/big.jsonl --lines 1000000 --symbols 500
//! cargo run --release --bin tickwire-feedgen -- --check /tmp/big.jsonl
//! ```
//!
//! The values (which symbol, prices, sizes, quote or trade) are those of
//! `tickwire::feed::synthetic` for the same seed and symbol count; the
//! timestamps are generated here (Poisson arrivals at `--rate` from
//! `--start-ns`, from a second SplitMix64 stream), so the same flags always
//! write the same bytes. `--gzip` compresses the output.
//!
//! For ITCH, `--messages` and `--seed` choose the content (see
//! `tickwire::feed::itch::generate` for what a generated day holds); `--gzip`
//! applies too, the other flags do not.
//!
//! `--check FILE` reads a feed file with tickwire's own reader on one thread
//! and prints the number of records, skipped records and the parse rate
//! (`records` are ticks; for ITCH, `lines` counts ticks and bad frames).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use tickwire::feed::FeedSource;
use tickwire::feed::itch::{ItchReader, looks_like_itch};
use tickwire::feed::replay::open_reader;
use tickwire::feed::synthetic::{SplitMix64, Synthetic, SyntheticConfig};
use tickwire::record_reader::{RecordReader, open_input};
use tickwire::tick::{Body, SymbolTable, Tick};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes deterministic JSON-lines feed files; measures the parser.
#[derive(Debug, Parser)]
#[command(name = "tickwire-feedgen", version, about, long_about = None)]
struct Args {
    /// What to write.
    #[arg(long, value_enum, default_value_t = OutFormat::Jsonl)]
    format: OutFormat,
    /// Number of ITCH messages to write (`--format itch`).
    #[arg(long, default_value_t = 9_000)]
    messages: usize,
    /// Output file.
    #[arg(long, required_unless_present = "check")]
    out: Option<PathBuf>,
    /// Number of lines (ticks) to write.
    #[arg(long, default_value_t = 400)]
    lines: u64,
    /// Number of symbols (the busiest names of the synthetic list).
    #[arg(long, default_value_t = 8)]
    symbols: usize,
    /// Seed of the random walk and of the arrival times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mean updates per second of source time.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Source time of the first line, ns since the Unix epoch
    /// (default 2025-11-26 14:30:00 UTC, the US market open).
    #[arg(long, default_value_t = 1_764_167_400_000_000_000)]
    start_ns: u64,
    /// Gzip the output.
    #[arg(long)]
    gzip: bool,
    /// Instead of writing: read FILE with tickwire's reader and print the parse rate.
    #[arg(long, value_name = "FILE", conflicts_with = "out")]
    check: Option<PathBuf>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutFormat {
    /// JSON lines from the synthetic random walk.
    Jsonl,
    /// NASDAQ TotalView-ITCH 5.0, 2-byte length-prefixed messages.
    Itch,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match (&args.check, &args.out) {
        (Some(path), _) => check(path),
        (None, Some(out)) if args.format == OutFormat::Itch => generate_itch(&args, out),
        (None, Some(out)) => generate(&args, out),
        (None, None) => Err("--out or --check is required".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickwire-feedgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(args: &Args, out: &Path) -> Result<(), String> {
    if !(args.rate.is_finite() && args.rate > 0.0) || args.symbols == 0 {
        return Err("--rate must be > 0 and --symbols >= 1".into());
    }
    let table = Arc::new(SymbolTable::new(args.symbols.max(1)));
    // A rate far above real time: every poll hands over a full batch, and
    // the synthetic source times (wall clock) are replaced below.
    let config =
        SyntheticConfig { symbols: args.symbols, rate: 1e12, seed: args.seed, burst: None };
    let mut feed = Synthetic::new(config, &table).map_err(|e| e.to_string())?;
    let mut clock = SplitMix64::new(args.seed ^ 0x7469_636b_7769_7265);
    let mut w = create_output(out, args.gzip)?;
    let mean_gap_ns = 1e9 / args.rate;
    let mut t = args.start_ns;
    let mut batch: Vec<Tick> = Vec::with_capacity(4096);
    let mut written = 0u64;
    let mut line = String::with_capacity(160);
    while written < args.lines {
        batch.clear();
        feed.poll(&mut batch);
        for tick in &batch {
            if written == args.lines {
                break;
            }
            if written > 0 {
                // Exponential gaps, at least 1 µs, rounded to the µs like most feeds.
                let u = 1.0 - clock.unit();
                let gap = (-u.ln() * mean_gap_ns).max(1_000.0) as u64;
                t += gap - gap % 1_000;
            }
            let name = table.name(tick.sym).ok_or("symbol without name")?;
            line.clear();
            format_line(&mut line, &name, t, tick);
            w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
            written += 1;
        }
    }
    w.flush().map_err(|e| e.to_string())?;
    drop(w);
    eprintln!("wrote {written} lines to {}", out.display());
    Ok(())
}

/// Creates `out` for buffered writing, gzip-compressed with `gzip`.
fn create_output(out: &Path, gzip: bool) -> Result<Box<dyn Write>, String> {
    let file = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let buffered = BufWriter::new(file);
    Ok(if gzip {
        Box::new(flate2::write::GzEncoder::new(buffered, flate2::Compression::default()))
    } else {
        Box::new(buffered)
    })
}

fn generate_itch(args: &Args, out: &Path) -> Result<(), String> {
    let bytes = tickwire::feed::itch::generate(args.seed, args.messages);
    let mut w = create_output(out, args.gzip)?;
    w.write_all(&bytes).and_then(|()| w.flush()).map_err(|e| e.to_string())?;
    drop(w);
    let messages = tickwire::feed::itch::Frames::new(&bytes).count();
    eprintln!("wrote {messages} ITCH messages ({} bytes) to {}", bytes.len(), out.display());
    Ok(())
}

fn format_line(out: &mut String, sym: &str, t: u64, tick: &Tick) {
    use std::fmt::Write as _;
    let _ = match tick.body {
        Body::Quote { bid, bid_size, ask, ask_size } => writeln!(
            out,
            r#"{{"type":"q","sym":"{sym}","t":{t},"bp":{bid},"bs":{bid_size},"ap":{ask},"as":{ask_size}}}"#
        ),
        Body::Trade { price, size } => {
            writeln!(out, r#"{{"type":"t","sym":"{sym}","t":{t},"p":{price},"s":{size}}}"#)
        }
        // The server builds bars from the trades; a feed file has none.
        Body::Bar(_) => Ok(()),
    };
}

/// `--check` for an ITCH file: messages (not ticks) per second, decoded and
/// booked, and what they became.
fn check_itch(path: &Path, table: Arc<SymbolTable>) -> Result<(), String> {
    let mut reader = ItchReader::open(path, table.clone()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (mut ticks, mut skipped) = (0u64, 0u64);
    while let Some(r) = reader.next() {
        match r {
            Ok(_) => ticks += 1,
            Err(_) => skipped += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = reader.stats();
    let types: String = stats.types().map(|(k, n)| format!(" {}={n}", char::from(k))).collect();
    println!(
        "{}: ITCH, {} messages ({skipped} bad), {ticks} ticks ({} quotes, {} trades), {} symbols, {:.3} s, {:.0} messages/s\n  by type:{types}",
        path.display(),
        stats.messages(),
        stats.quotes,
        stats.trades,
        table.len(),
        secs,
        (stats.messages() + stats.bad_records) as f64 / secs.max(1e-9),
    );
    Ok(())
}

/// Whether the (decompressed) content of `path` is ITCH.
fn is_itch(path: &Path) -> Result<bool, String> {
    let mut head = Vec::with_capacity(256);
    open_input(path)
        .and_then(|input| input.take(256).read_to_end(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(looks_like_itch(&head))
}

fn check(path: &Path) -> Result<(), String> {
    let table = Arc::new(SymbolTable::new(1 << 20));
    if is_itch(path)? {
        return check_itch(path, table);
    }
    let mut reader = open_reader(path, &table, None).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (mut records, mut skipped, mut checksum) = (0u64, 0u64, 0u64);
    while let Some(r) = reader.next() {
        match r {
            Ok(t) => {
                records += 1;
                checksum = checksum.wrapping_add(t.src_ns);
            }
            Err(_) => skipped += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let lines = records + skipped;
    println!(
        "{}: {records} records, {skipped} skipped, {} symbols, {:.3} s, {:.0} lines/s (checksum {checksum:x})",
        path.display(),
        table.len(),
        secs,
        lines as f64 / secs.max(1e-9),
    );
    Ok(())
}
