//! The file tools behind `tickwire record`, `tickwire convert` and
//! `tickwire inspect`: feed files in, feed files or a summary out.
//!
//! - **Inputs** are whatever `--replay` takes ([`replay::open_reader`]
//!   detects the format from the content): JSON lines, tickwire captures and
//!   NASDAQ ITCH 5.0, each optionally gzip-compressed.
//! - **Outputs** ([`OutFormat`]) are JSON lines (`.jsonl`, gzip-compressed
//!   when the name ends in `.gz`) and captures (`.twc`).
//! - A **[`TickSink`]** takes normalized ticks with their source times; the
//!   symbol names come from the [`SymbolTable`] the reader or source interned
//!   them in.
//!
//! Garbage records are skipped and counted, never fatal: every tool reports
//! how many it skipped and where the first ones were. Long operations show a
//! progress bar on a terminal ([`Progress`]) and stay quiet otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::civil::Date;

use crate::capture::CaptureWriter;
use crate::feed::itch::clock::{self, DateOrigin, TradingDay};
use crate::feed::replay::{self, Format, OpenError};
use crate::feed::{FeedSource, Poll};
use crate::record_reader::{RecordReader, Skip};
use crate::tick::write_price;
use crate::tick::{Body, SymbolTable, Tick};

/// Nanoseconds in a day.
const DAY_NS: u64 = 86_400_000_000_000;

/// How many skipped records a report names one by one.
const SKIPS_SHOWN: usize = 10;

/// The format of an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    /// JSON lines (`feeds/README.md`), gzip-compressed when the name ends in
    /// `.gz`.
    JsonLines,
    /// tickwire's capture format.
    Capture,
}

impl OutFormat {
    /// The format named by `--format` (`jsonl` or `capture`), or else the
    /// one the file name says (`.jsonl`, `.json`, `.jsonl.gz` -> JSON lines;
    /// `.twc` -> capture).
    pub fn choose(path: &Path, explicit: Option<&str>) -> Result<OutFormat, String> {
        match explicit {
            Some("jsonl") => return Ok(OutFormat::JsonLines),
            Some("capture" | "twc") => return Ok(OutFormat::Capture),
            Some(other) => return Err(format!("unknown format {other:?}; use jsonl or capture")),
            None => {}
        }
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase());
        let name = name.unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".jsonl") || name.ends_with(".json") {
            Ok(OutFormat::JsonLines)
        } else if name.ends_with(".twc") {
            Ok(OutFormat::Capture)
        } else {
            Err(format!(
                "cannot tell the output format from {:?}; name it .jsonl[.gz] or .twc, or pass --format",
                path.display().to_string()
            ))
        }
    }
}

/// Where ticks go: a feed file being written.
pub trait TickSink {
    /// Appends one tick (its symbol interned in the sink's table).
    fn push(&mut self, tick: &Tick) -> io::Result<()>;

    /// Makes what was pushed durable as far as the format allows (a capture
    /// writes its current block), so a killed recorder loses little.
    fn flush_block(&mut self) -> io::Result<()>;

    /// Completes the file.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Creates an output file of `format` at `path`, naming symbols from `table`.
pub fn create_sink(
    path: &Path,
    format: OutFormat,
    table: Arc<SymbolTable>,
) -> io::Result<Box<dyn TickSink>> {
    Ok(match format {
        OutFormat::JsonLines => Box::new(JsonLinesWriter::create(path, table)?),
        OutFormat::Capture => Box::new(CaptureSink(CaptureWriter::create(path, table)?)),
    })
}

/// A capture as a [`TickSink`].
struct CaptureSink(CaptureWriter);

impl TickSink for CaptureSink {
    fn push(&mut self, tick: &Tick) -> io::Result<()> {
        self.0.push(tick)
    }

    fn flush_block(&mut self) -> io::Result<()> {
        self.0.flush_block()
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish().map(|_| ())
    }
}

/// Writes JSON lines, one quote or trade per line, in the schema of
/// `feeds/README.md` (prices in their shortest exact decimal form).
pub struct JsonLinesWriter {
    out: Box<dyn Write + Send>,
    table: Arc<SymbolTable>,
    names: Vec<Option<Arc<str>>>,
    line: Vec<u8>,
}

impl JsonLinesWriter {
    /// Creates `path`, gzip-compressed when its name ends in `.gz`.
    pub fn create(path: &Path, table: Arc<SymbolTable>) -> io::Result<JsonLinesWriter> {
        let file = BufWriter::with_capacity(1 << 16, File::create(path)?);
        let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
        let out: Box<dyn Write + Send> = if gz {
            Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()))
        } else {
            Box::new(file)
        };
        Ok(JsonLinesWriter::new(out, table))
    }

    /// A writer into `out`.
    pub fn new(out: Box<dyn Write + Send>, table: Arc<SymbolTable>) -> JsonLinesWriter {
        JsonLinesWriter { out, table, names: Vec::new(), line: Vec::with_capacity(160) }
    }

    fn name(&mut self, tick: &Tick) -> io::Result<Arc<str>> {
        let i = tick.sym.index();
        if i >= self.names.len() {
            self.names.resize(i + 1, None);
        }
        if self.names[i].is_none() {
            self.names[i] = self.table.name(tick.sym);
        }
        self.names[i].clone().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("unknown symbol id {i}"))
        })
    }
}

/// Appends `"key":value` for an integer.
fn int(line: &mut Vec<u8>, key: &str, v: u64) {
    line.extend_from_slice(b",\"");
    line.extend_from_slice(key.as_bytes());
    line.extend_from_slice(b"\":");
    line.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

impl TickSink for JsonLinesWriter {
    fn push(&mut self, tick: &Tick) -> io::Result<()> {
        let name = self.name(tick)?;
        let line = &mut self.line;
        line.clear();
        let kind = if matches!(tick.body, Body::Quote { .. }) { "q" } else { "t" };
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"sym\":\"");
        line.extend_from_slice(name.as_bytes());
        line.push(b'"');
        int(line, "t", tick.src_ns);
        match tick.body {
            Body::Quote { bid, bid_size, ask, ask_size } => {
                line.extend_from_slice(b",\"bp\":");
                write_price(line, bid);
                int(line, "bs", bid_size.into());
                line.extend_from_slice(b",\"ap\":");
                write_price(line, ask);
                int(line, "as", ask_size.into());
            }
            Body::Trade { price, size } => {
                line.extend_from_slice(b",\"p\":");
                write_price(line, price);
                int(line, "s", size.into());
            }
            // Bars are built from the trades on every replay: not written.
            Body::Bar(_) => return Ok(()),
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(line)
    }

    fn flush_block(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.out.flush()?;
        // Dropping a GzEncoder writes its trailer; do it here to see errors.
        drop(self.out);
        Ok(())
    }
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// A bar over `total` bytes of input (bytes, rate, ETA).
    pub fn bytes(total: u64, what: &str) -> Progress {
        if !io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        Progress(Some(bar))
    }

    /// A spinner with a running count (for open-ended work: recording).
    pub fn counter(what: &str) -> Progress {
        if !io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {human_pos} ticks ({per_sec}) {elapsed}",
        );
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        Progress(Some(bar))
    }

    /// Moves the bar to `pos`.
    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.0 {
            b.set_position(pos);
        }
    }

    /// Removes the bar.
    pub fn done(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Why a file tool failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The input cannot be opened or is of no known format.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_path_buf(), source }
}

/// Skipped records: how many, and the first few.
#[derive(Debug, Default, Clone)]
pub struct Skips {
    /// Records skipped.
    pub count: u64,
    /// The first ten of them.
    pub first: Vec<Skip>,
}

impl Skips {
    fn add(&mut self, skip: Skip) {
        self.count += 1;
        if self.first.len() < SKIPS_SHOWN {
            self.first.push(skip);
        }
    }
}

/// Reads every record of `reader`, handing ticks to `each` and moving the
/// progress bar; returns the skipped records.
fn drain(
    reader: &mut dyn RecordReader,
    progress: &Progress,
    mut each: impl FnMut(&Tick) -> io::Result<()>,
) -> io::Result<Skips> {
    let mut skips = Skips::default();
    let mut n = 0u64;
    while let Some(record) = reader.next() {
        match record {
            Ok(tick) => each(&tick)?,
            Err(skip) => skips.add(skip),
        }
        n += 1;
        if n.is_multiple_of(65_536) {
            progress.set(reader.bytes_read());
        }
    }
    progress.set(reader.bytes_read());
    Ok(skips)
}

/// What [`convert`] did.
#[derive(Debug)]
pub struct Converted {
    /// The input's format.
    pub from: Format,
    /// Ticks written.
    pub ticks: u64,
    /// Input records skipped.
    pub skips: Skips,
}

/// Converts the feed file `input` (any readable format) into `output`.
/// Times go over as they are read: full UTC times, an ITCH file's on its
/// trading day (`date`, or the one in its name; see [`TradingDay`]).
pub fn convert(
    input: &Path,
    output: &Path,
    format: OutFormat,
    date: Option<Date>,
) -> Result<Converted, FileError> {
    let from = replay::detect(input)?;
    let table = Arc::new(SymbolTable::new(1 << 20));
    let mut reader = replay::open_reader(input, &table, date)?;
    let mut sink = create_sink(output, format, table).map_err(io_err(output))?;
    let total = std::fs::metadata(input).map_or(0, |m| m.len());
    let progress = Progress::bytes(total, "converting");
    let mut ticks = 0u64;
    let skips = drain(reader.as_mut(), &progress, |t| {
        ticks += 1;
        sink.push(t)
    })
    .map_err(io_err(output))?;
    sink.finish().map_err(io_err(output))?;
    progress.done();
    Ok(Converted { from, ticks, skips })
}

/// A feed file's summary: what `tickwire inspect` prints.
#[derive(Debug)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its size in bytes.
    pub bytes: u64,
    /// Quotes read.
    pub quotes: u64,
    /// Trades read.
    pub trades: u64,
    /// Records skipped.
    pub skips: Skips,
    /// Earliest and latest source time (ns since the Unix epoch).
    pub time_range: Option<(u64, u64)>,
    /// For ITCH: the trading day its times count from.
    pub trading_day: Option<TradingDay>,
    /// (quotes, trades) per symbol.
    pub per_symbol: BTreeMap<String, (u64, u64)>,
    /// Format-specific counts (ITCH: messages per type).
    pub details: Vec<(String, u64)>,
    /// How long the inspection took.
    pub elapsed: Duration,
}

/// Reads `path` through and summarizes it; `date` is the trading day of an
/// ITCH file, as `--date` gives it.
pub fn inspect(path: &Path, date: Option<Date>) -> Result<Inspection, FileError> {
    let started = Instant::now();
    let format = replay::detect(path)?;
    let table = Arc::new(SymbolTable::new(1 << 20));
    let mut reader = replay::open_reader(path, &table, date)?;
    let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let progress = Progress::bytes(bytes, "inspecting");
    let mut counts: Vec<(u64, u64)> = Vec::new();
    let mut range: Option<(u64, u64)> = None;
    let skips = drain(reader.as_mut(), &progress, |t| {
        let i = t.sym.index();
        if i >= counts.len() {
            counts.resize(i + 1, (0, 0));
        }
        match t.body {
            Body::Quote { .. } => counts[i].0 += 1,
            Body::Trade { .. } => counts[i].1 += 1,
            Body::Bar(_) => {}
        }
        range =
            Some(range.map_or((t.src_ns, t.src_ns), |(a, b)| (a.min(t.src_ns), b.max(t.src_ns))));
        Ok(())
    })
    .map_err(io_err(path))?;
    progress.done();
    let mut per_symbol = BTreeMap::new();
    for (i, &(q, t)) in counts.iter().enumerate() {
        if q + t > 0
            && let Some(name) = table.name(crate::tick::SymbolId(i as u32))
        {
            per_symbol.insert(name.to_string(), (q, t));
        }
    }
    Ok(Inspection {
        path: path.to_path_buf(),
        format,
        bytes,
        quotes: per_symbol.values().map(|c| c.0).sum(),
        trades: per_symbol.values().map(|c| c.1).sum(),
        skips,
        time_range: range,
        trading_day: (format == Format::Itch).then(|| TradingDay::of_file(path, date)),
        per_symbol,
        details: reader.details(),
        elapsed: started.elapsed(),
    })
}

/// Formats a source time (ns since the Unix epoch) as a UTC date and time:
/// `2025-11-26 14:30:00.000000000 UTC`.
pub fn format_time(ns: u64) -> String {
    let (days, tod) = (ns / DAY_NS, ns % DAY_NS);
    let secs = tod / 1_000_000_000;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:09} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        tod % 1_000_000_000
    )
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as u32, d as u32)
}

/// What a [`Skip`]'s position means in each format.
fn skip_place(format: Format) -> &'static str {
    match format {
        Format::JsonLines => "line",
        Format::Capture => "byte offset",
        Format::Itch => "byte offset",
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ticks = self.quotes + self.trades;
        writeln!(f, "file      {}", self.path.display())?;
        writeln!(f, "format    {} ({} bytes)", self.format.name(), self.bytes)?;
        writeln!(
            f,
            "ticks     {ticks} (quotes {}, trades {}), {} records skipped",
            self.quotes, self.trades, self.skips.count
        )?;
        if let Some(day) = &self.trading_day {
            let origin = match day.origin() {
                DateOrigin::Flag => "from --date",
                DateOrigin::FileName => "from the file name",
                DateOrigin::Unknown => {
                    "no date: the name is not MMDDYYYY.NASDAQ_ITCH50 and no --date was given"
                }
            };
            writeln!(f, "date      {} in {} ({origin})", day.date(), clock::ZONE)?;
        }
        if let Some((a, b)) = self.time_range {
            let span = (b - a) as f64 / 1e9;
            write!(f, "time      {} to {} ({span:.3} s", format_time(a), format_time(b))?;
            if span > 0.0 {
                write!(f, ", {:.0} ticks/s", ticks as f64 / span)?;
            }
            writeln!(f, ")")?;
            if self.trading_day.is_some() {
                let (a, b) = (clock::format_new_york(a), clock::format_new_york(b));
                writeln!(f, "          {a} to {b} ({})", clock::ZONE)?;
            }
        }
        writeln!(f, "symbols   {}", self.per_symbol.len())?;
        for (name, (q, t)) in &self.per_symbol {
            writeln!(f, "  {name:<16} quotes {q:>10}  trades {t:>10}")?;
        }
        if !self.details.is_empty() {
            writeln!(f, "{}", self.format.details_title())?;
            for (label, n) in &self.details {
                writeln!(f, "  {label:<16} {n:>10}")?;
            }
        }
        if self.skips.count > 0 {
            let shown = self.skips.first.len();
            writeln!(f, "skipped   {} (first {shown}):", self.skips.count)?;
            for s in &self.skips.first {
                writeln!(f, "  {} {}: {}", skip_place(self.format), s.at, s.why)?;
            }
        }
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(f, "read in   {:.3} s ({:.0} ticks/s)", secs, ticks as f64 / secs)
    }
}

/// Options of [`record`].
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The file to write.
    pub out: PathBuf,
    /// Its format.
    pub format: OutFormat,
    /// Stop after this long (else at the end of the source, or on `stop`).
    pub duration: Option<Duration>,
}

/// What [`record`] wrote.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Ticks written.
    pub ticks: u64,
    /// Source records skipped.
    pub skipped: u64,
}

/// How often a recording makes its data durable (a killed recorder loses at
/// most about this much).
const RECORD_FLUSH: Duration = Duration::from_millis(200);

/// Longest the recorder sleeps, so it notices `stop` and the deadline.
const RECORD_MAX_SLEEP: Duration = Duration::from_millis(50);

/// Records `source` (symbols interned in `table`) into a file until the
/// source ends, `duration` passes, or `stop` is set. Ticks keep the source
/// times the source gave them (for the synthetic feed: when each tick was
/// due; for a replay: the recorded times, moved by `--time-shift` if any).
pub fn record(
    mut source: Box<dyn FeedSource>,
    table: Arc<SymbolTable>,
    options: &RecordOptions,
    stop: &AtomicBool,
) -> Result<Recorded, FileError> {
    let out = options.out.as_path();
    let mut sink = create_sink(out, options.format, table).map_err(io_err(out))?;
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let progress = Progress::counter("recording");
    let mut done = Recorded::default();
    let mut batch = Vec::with_capacity(4096);
    let mut last_flush = started;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Acquire) || deadline.is_some_and(|d| now >= d) {
            break;
        }
        batch.clear();
        let polled = source.poll(&mut batch);
        done.skipped += source.take_skipped();
        match polled {
            Poll::Ready => {
                for t in &batch {
                    sink.push(t).map_err(io_err(out))?;
                }
                done.ticks += batch.len() as u64;
            }
            Poll::WaitUntil(at) => {
                let mut until = at.min(now + RECORD_MAX_SLEEP);
                if let Some(d) = deadline {
                    until = until.min(d);
                }
                std::thread::sleep(until.saturating_duration_since(now));
            }
            Poll::State(state) => tracing::info!(feed = state.name(), "feed state changed"),
            // A recording keeps one numbering (`record` numbers nothing).
            Poll::Epoch(_) => {}
            Poll::Done | Poll::Restart => break,
        }
        if now.duration_since(last_flush) >= RECORD_FLUSH {
            sink.flush_block().map_err(io_err(out))?;
            progress.set(done.ticks);
            last_flush = now;
        }
    }
    sink.finish().map_err(io_err(out))?;
    progress.done();
    Ok(done)
}

/// Parses a positive duration (`--duration`): see
/// [`crate::config::parse_duration`]; zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match crate::config::parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} is not a positive duration")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::{Price, SymbolId};

    #[test]
    fn output_format_from_flag_or_name() {
        let choose = |p: &str, f: Option<&str>| OutFormat::choose(Path::new(p), f);
        assert_eq!(choose("a.jsonl", None), Ok(OutFormat::JsonLines));
        assert_eq!(choose("a.JSONL.gz", None), Ok(OutFormat::JsonLines));
        assert_eq!(choose("dir/a.twc", None), Ok(OutFormat::Capture));
        assert_eq!(choose("a.bin", Some("capture")), Ok(OutFormat::Capture));
        assert!(choose("a.bin", None).is_err());
        assert!(choose("a.twc", Some("xml")).is_err());
    }

    #[test]
    fn json_lines_writer_writes_the_documented_schema() {
        let table = Arc::new(SymbolTable::new(4));
        let aapl = table.intern("AAPL").unwrap();
        let buf = SharedBuf::default();
        let mut w = JsonLinesWriter::new(Box::new(buf.clone()), table);
        let q = Tick::quote(aapl, 7, Price(1_923_100), 200, Price(1_923_300), 100);
        w.push(&q).unwrap();
        w.push(&Tick::trade(aapl, 8, Price(4_101_235), 7)).unwrap();
        Box::new(w).finish().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "{\"type\":\"q\",\"sym\":\"AAPL\",\"t\":7,\"bp\":192.31,\"bs\":200,\"ap\":192.33,\"as\":100}\n\
             {\"type\":\"t\",\"sym\":\"AAPL\",\"t\":8,\"p\":410.1235,\"s\":7}\n"
        );
        // An id the table does not know is an error, not a panic.
        let mut w =
            JsonLinesWriter::new(Box::new(SharedBuf::default()), Arc::new(SymbolTable::new(1)));
        assert!(w.push(&Tick::trade(SymbolId(3), 0, Price(1), 1)).is_err());
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn times_format_as_dates() {
        assert_eq!(format_time(34_200_000_000_001), "1970-01-01 09:30:00.000000001 UTC");
        // 2025-11-26 14:30:00 UTC.
        assert_eq!(format_time(1_764_167_400_000_000_000), "2025-11-26 14:30:00.000000000 UTC");
        assert_eq!(format_time(DAY_NS * 11_017), "2000-03-01 00:00:00.000000000 UTC");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0", "-1s", "ten", "1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
