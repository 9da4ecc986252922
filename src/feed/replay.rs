//! Replay of a recorded feed: a [`Replay`] source paces the records of a
//! [`RecordReader`] by their source timestamps.
//!
//! # Pacing
//!
//! Record `k` with source time `t_k` is due at `start + (t_k - t_0) / speed`,
//! an *absolute* offset from the start of the replay (the first poll, or the
//! first subscription with `--wait-for-subscriber`), so scheduling error
//! never accumulates over a long file. A record whose time is earlier than
//! the one before it (an out-of-order file) is due at once. `--speed max`
//! does not pace at all: records are handed over in batches as fast as the
//! feed thread publishes them. The ring never waits for a writer shard (see
//! [`crate::feed`]), so a subscriber that cannot keep up with a `max` replay
//! gets `overflow` in `mode:"all"`, as with any fast feed.
//!
//! # Source time
//!
//! A replayed tick's `t` is the time recorded in the file, at every speed:
//! UTC as written for JSON lines and captures, and for ITCH the file's
//! trading day in New York plus the message's timestamp (see
//! [`crate::feed::itch::clock`]). Pacing reads the same times and never
//! changes them.
//!
//! A [`TimeShift`] (`--time-shift`) adds one constant to every time of a
//! pass over the file, so every difference between two times is kept: a
//! duration adds itself to every pass; `now` picks, at the start of each
//! pass, the constant that makes the pass's first record read the wall
//! clock of that moment (at `--speed 1` every tick then reads the time it
//! was due). Each pass of `--loop` is an epoch of its own (sessions
//! reconnect in between), so with `now` an epoch's times start at that
//! epoch's start; with a duration every epoch repeats the same times. The
//! window (`--from`/`--to`) reads the file's own times, before the shift.
//!
//! Latency is therefore never measured from `t` on a replay: the server's
//! stamps `ti` (ingest, when the tick was published on the schedule) and
//! `to` (encoding) are on its own clock.
//!
//! # Determinism
//!
//! The reader yields the same ticks in the same order on every run, and the
//! feed thread numbers each (channel, symbol) stream from 1, so the same
//! file gives the same `seq`, values and `t` every time (unless shifted to
//! `now`).
//!
//! # End of file
//!
//! At the end the source answers [`Poll::Done`]: sessions get `status`
//! `replay_done` and the server keeps serving the last values. With
//! `--loop` the reader rewinds and the source answers [`Poll::Restart`]: the
//! feed thread starts a new epoch (numbering from 1 again) and connected
//! sessions are told to reconnect (see [`crate::feed::Market::epoch`]).
//!
//! # Window
//!
//! `--from` and `--to` select a time-of-day window of the file ([`Window`]):
//! earlier records are skipped, and the file ends at the first record after
//! `--to` (recorded feeds are in time order).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::civil::Date;

use super::itch::clock::TradingDay;
use super::itch::{ItchReader, looks_like_itch};
use super::jsonl::JsonLines;
use super::{FeedSource, Poll};
use crate::capture::CaptureReader;
use crate::record_reader::{RecordReader, open_input};
use crate::tick::{SymbolTable, Tick, now_ns};

/// Most ticks handed over per poll.
const MAX_BATCH: usize = 2048;

/// Formats a replay file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`feeds/README.md`).
    JsonLines,
    /// tickwire's capture format ([`crate::capture`]).
    Capture,
    /// NASDAQ TotalView-ITCH 5.0 ([`crate::feed::itch`]).
    Itch,
}

impl Format {
    /// The format's name for people.
    pub fn name(self) -> &'static str {
        match self {
            Format::JsonLines => "JSON lines",
            Format::Capture => "tickwire capture",
            Format::Itch => "NASDAQ ITCH 5.0",
        }
    }

    /// What [`RecordReader::details`] counts in this format.
    pub fn details_title(self) -> &'static str {
        match self {
            Format::JsonLines => "details",
            Format::Capture => "capture",
            Format::Itch => "messages by type",
        }
    }
}

/// Why a replay file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The content is none of the known formats.
    #[error(
        "{path}: unknown feed format ({what}); expected JSON lines, a tickwire capture or NASDAQ ITCH 5.0, optionally gzip-compressed"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        what: String,
    },
}

/// Detects the format of `path` from its (decompressed) content: the
/// capture magic bytes mean a capture, frames that are valid ITCH 5.0
/// messages (length prefix and type agree, see [`looks_like_itch`]) mean
/// ITCH, a first non-blank byte `{` means JSON lines.
pub fn detect(path: &Path) -> Result<Format, OpenError> {
    let io_err = |source| OpenError::Io { path: path.to_path_buf(), source };
    let mut input = open_input(path).map_err(io_err)?;
    let mut head = Vec::with_capacity(4096);
    (&mut input).take(4096).read_to_end(&mut head).map_err(io_err)?;
    if crate::capture::is_capture(&head) {
        return Ok(Format::Capture);
    }
    if looks_like_itch(&head) {
        return Ok(Format::Itch);
    }
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(Format::JsonLines),
        Some(&b) => Err(OpenError::UnknownFormat {
            path: path.to_path_buf(),
            what: format!("starts with byte 0x{b:02x}"),
        }),
        None => Err(OpenError::UnknownFormat {
            path: path.to_path_buf(),
            what: "empty or blank".into(),
        }),
    }
}

/// Opens a reader for `path`, in the format its content shows. `date` is
/// the trading day of an ITCH file (`--date`), which wins over the date in
/// its name; other formats record full times and ignore it (with a warning).
pub fn open_reader(
    path: &Path,
    table: &Arc<SymbolTable>,
    date: Option<Date>,
) -> Result<Box<dyn RecordReader>, OpenError> {
    let io_err = |source| OpenError::Io { path: path.to_path_buf(), source };
    let format = detect(path)?;
    if date.is_some() && format != Format::Itch {
        tracing::warn!(path = %path.display(), format = format.name(), "--date applies to ITCH files only: ignored");
    }
    match format {
        Format::JsonLines => JsonLines::open(path, table.clone())
            .map(|r| Box::new(r) as Box<dyn RecordReader>)
            .map_err(io_err),
        Format::Capture => CaptureReader::open(path, table.clone())
            .map(|r| Box::new(r) as Box<dyn RecordReader>)
            .map_err(io_err),
        Format::Itch => ItchReader::open_on(path, table.clone(), TradingDay::of_file(path, date))
            .map(|r| Box::new(r) as Box<dyn RecordReader>)
            .map_err(io_err),
    }
}

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// This many times the recorded pace (> 0).
    Factor(f64),
    /// No pacing: as fast as the feed thread publishes.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Speed, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(Speed::Factor(x)),
            _ => Err(format!("{s:?} is neither a number > 0 nor \"max\"")),
        }
    }
}

/// A constant added to every source time of a replay (`--time-shift`); see
/// the [module docs](self#source-time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeShift {
    /// This many nanoseconds (`By(0)`, the default: the recorded times).
    By(i64),
    /// Whatever makes each pass's first record read the wall clock when the
    /// pass starts.
    Now,
}

impl Default for TimeShift {
    fn default() -> TimeShift {
        TimeShift::By(0)
    }
}

/// Options of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    /// The recorded feed.
    pub path: PathBuf,
    /// The trading day of an ITCH file (`--date`); `None`: from its name.
    pub date: Option<Date>,
    /// Pace.
    pub speed: Speed,
    /// Moves every source time by one constant.
    pub shift: TimeShift,
    /// Hold the replay until a session subscribes. The file is read once
    /// ahead to learn its symbols, so subscriptions by name work before the
    /// first tick.
    pub wait_for_subscriber: bool,
    /// Start over at the end of the file, under a new epoch.
    pub looped: bool,
    /// Only the records in this time-of-day window.
    pub window: Window,
}

/// A time-of-day window of a replay (`--from`, `--to`), in nanoseconds since
/// midnight of the file's clock: UTC for JSON lines and captures, New York
/// for ITCH (whose timestamps are ns since midnight there; see
/// [`RecordReader::local_midnight_ns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Records before this time of day are skipped (not counted as bad).
    pub from: Option<u64>,
    /// The replay ends at the first record after this time of day.
    pub to: Option<u64>,
}

/// Nanoseconds in a day.
const DAY_NS: u64 = 86_400_000_000_000;

impl Window {
    /// Where `src_ns` falls: before the window, in it, or after it. Its time
    /// of day counts from `midnight_ns` when the file has a local midnight,
    /// else from the UTC midnight before it.
    fn place(&self, src_ns: u64, midnight_ns: Option<u64>) -> std::cmp::Ordering {
        let tod = match midnight_ns {
            Some(m) => src_ns.saturating_sub(m),
            None => src_ns % DAY_NS,
        };
        if self.from.is_some_and(|f| tod < f) {
            std::cmp::Ordering::Less
        } else if self.to.is_some_and(|t| tod > t) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }
}

/// Parses a time of day `HH:MM:SS[.fffffffff]` (or `HH:MM`) into
/// nanoseconds since midnight.
pub fn parse_time_of_day(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a time of day HH:MM:SS[.fff]");
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts.iter().any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && (frac.is_empty() || parts.len() != 3))
    {
        return Err(bad());
    }
    let n = |i: usize| parts.get(i).map_or(Ok(0), |p| p.parse::<u64>()).map_err(|_| bad());
    let (h, m, sec) = (n(0)?, n(1)?, n(2)?);
    if h > 23 || m > 59 || sec > 59 {
        return Err(bad());
    }
    let frac_ns = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().map_err(|_| bad())? * 10u64.pow(9 - frac.len() as u32)
    };
    Ok(((h * 60 + m) * 60 + sec) * 1_000_000_000 + frac_ns)
}

/// The replay source.
pub struct Replay {
    reader: Box<dyn RecordReader>,
    speed: Speed,
    hold: bool,
    looped: bool,
    /// Whether the current pass over the file handed out any tick.
    pass_had_ticks: bool,
    window: Window,
    /// The reader's [`RecordReader::local_midnight_ns`], for the window.
    midnight_ns: Option<u64>,
    shift: TimeShift,
    /// The constant added to every time of this pass, fixed by its first
    /// record (see [`TimeShift`]).
    pass_shift: Option<i64>,
    /// Monotonic and wall-clock start of this pass, set on its first poll.
    start: Option<(Instant, u64)>,
    /// Source time of the first record of this pass.
    t0: Option<u64>,
    /// A record read but not yet due.
    pending: Option<Tick>,
    /// Records skipped since the feed thread last asked.
    skipped: u64,
    ended: bool,
}

impl Replay {
    /// Opens the file of `config` and builds the source.
    pub fn open(config: &ReplayConfig, table: &Arc<SymbolTable>) -> Result<Replay, OpenError> {
        let reader = open_reader(&config.path, table, config.date)?;
        let mut replay = Replay::new(reader, config.speed, config.wait_for_subscriber)
            .map_err(|source| OpenError::Io { path: config.path.clone(), source })?;
        replay.looped = config.looped;
        replay.window = config.window;
        replay.shift = config.shift;
        Ok(replay)
    }

    /// A replay of `reader` (no loop, no window). With `hold`, the file is
    /// read through once first (interning every symbol) and rewound.
    pub fn new(mut reader: Box<dyn RecordReader>, speed: Speed, hold: bool) -> io::Result<Replay> {
        if hold {
            while reader.next().is_some() {}
            reader.rewind()?;
        }
        let midnight_ns = reader.local_midnight_ns();
        Ok(Replay {
            reader,
            speed,
            hold,
            looped: false,
            pass_had_ticks: false,
            window: Window::default(),
            midnight_ns,
            shift: TimeShift::default(),
            pass_shift: None,
            start: None,
            t0: None,
            pending: None,
            skipped: 0,
            ended: false,
        })
    }

    /// The next usable record, counting skips.
    fn next_record(&mut self) -> Option<Tick> {
        if let Some(t) = self.pending.take() {
            return Some(t);
        }
        while !self.ended {
            match self.reader.next() {
                Some(Ok(t)) => match self.window.place(t.src_ns, self.midnight_ns) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return Some(t),
                    std::cmp::Ordering::Greater => self.ended = true,
                },
                Some(Err(skip)) => {
                    tracing::debug!(at = skip.at, why = skip.why, "skipped a feed record");
                    self.skipped += 1;
                }
                None => self.ended = true,
            }
        }
        None
    }

    /// The constant this pass adds to every source time, fixed when its
    /// first record (source time `first_ns`) goes out; `start_ns` is the
    /// wall clock at the start of the pass.
    fn pass_shift(&mut self, first_ns: u64, start_ns: u64) -> i64 {
        let shift = self.shift;
        *self.pass_shift.get_or_insert_with(|| match shift {
            TimeShift::By(ns) => ns,
            TimeShift::Now => {
                let ns = i128::from(start_ns) - i128::from(first_ns);
                ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
            }
        })
    }
}

/// `ns` moved by `shift`: the same for every time, so differences are kept
/// (a time that would fall before the Unix epoch reads 0).
#[inline]
fn shifted(ns: u64, shift: i64) -> u64 {
    ns.saturating_add_signed(shift)
}

impl FeedSource for Replay {
    fn poll(&mut self, out: &mut Vec<Tick>) -> Poll {
        let now = Instant::now();
        let (start, start_ns) = *self.start.get_or_insert_with(|| (now, now_ns()));
        if self.speed == Speed::Max && self.window == Window::default() && !self.ended {
            // The fast path: whole batches, no schedule, no window.
            if !self.reader.read_batch(out, MAX_BATCH, &mut self.skipped) {
                self.ended = true;
            }
            if let Some(first) = out.first() {
                let shift = self.pass_shift(first.src_ns, start_ns);
                if shift != 0 {
                    for t in out.iter_mut() {
                        t.src_ns = shifted(t.src_ns, shift);
                    }
                }
                self.pass_had_ticks = true;
                return Poll::Ready;
            }
        }
        while out.len() < MAX_BATCH {
            let Some(mut tick) = self.next_record() else {
                if !out.is_empty() {
                    return Poll::Ready;
                }
                if !self.looped {
                    return Poll::Done;
                }
                if !self.pass_had_ticks {
                    // Looping a file with no usable record would restart
                    // (and close every session) as fast as the thread spins.
                    tracing::warn!("the replay file has no usable record; not looping");
                    return Poll::Done;
                }
                self.pass_had_ticks = false;
                // Start over: a new schedule and shift from now, a new epoch.
                if let Err(e) = self.reader.rewind() {
                    tracing::error!(error = %e, "cannot rewind the replay; it ends here");
                    return Poll::Done;
                }
                self.ended = false;
                self.start = None;
                self.t0 = None;
                self.pass_shift = None;
                return Poll::Restart;
            };
            if let Speed::Factor(speed) = self.speed {
                let t0 = *self.t0.get_or_insert(tick.src_ns);
                let offset = (tick.src_ns.saturating_sub(t0) as f64 / speed) as u64;
                let due = start + Duration::from_nanos(offset);
                if due > now {
                    self.pending = Some(tick);
                    return if out.is_empty() { Poll::WaitUntil(due) } else { Poll::Ready };
                }
            }
            tick.src_ns = shifted(tick.src_ns, self.pass_shift(tick.src_ns, start_ns));
            out.push(tick);
            self.pass_had_ticks = true;
        }
        Poll::Ready
    }

    fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    fn hold_for_subscriber(&self) -> bool {
        self.hold
    }

    /// The schedule's clock: the first record's time plus the wall time
    /// since the pass started, times the speed (shifted like the records).
    fn source_time(&self, now: Instant) -> Option<u64> {
        let Speed::Factor(speed) = self.speed else { return None };
        let ((start, _), t0, shift) = (self.start?, self.t0?, self.pass_shift?);
        let elapsed = now.saturating_duration_since(start).as_nanos() as f64 * speed;
        // Every record before `pending` has been handed over; the ones after
        // it may be due already but are unread: the clock stops at it.
        // Without one (a full batch was handed over) nothing is known.
        let next = self.pending.as_ref()?.src_ns;
        Some(shifted((t0 + elapsed as u64).min(next), shift))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_reader::Skip;
    use crate::tick::{Price, SymbolId};

    /// A reader over ticks in memory.
    struct Vec_ {
        ticks: Vec<Result<Tick, Skip>>,
        at: usize,
    }

    impl RecordReader for Vec_ {
        fn next(&mut self) -> Option<Result<Tick, Skip>> {
            let r = self.ticks.get(self.at).copied();
            self.at += 1;
            r
        }
        fn rewind(&mut self) -> io::Result<()> {
            self.at = 0;
            Ok(())
        }
    }

    fn trade(t: u64) -> Result<Tick, Skip> {
        Ok(Tick::trade(SymbolId(0), t, Price(1), 1))
    }

    #[test]
    fn speed_parses() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("2.5".parse::<Speed>(), Ok(Speed::Factor(2.5)));
        for bad in ["0", "-1", "nan", "inf", "fast"] {
            assert!(bad.parse::<Speed>().is_err(), "{bad}");
        }
    }

    #[test]
    fn time_of_day_parses() {
        assert_eq!(parse_time_of_day("00:00"), Ok(0));
        assert_eq!(parse_time_of_day("09:30:00"), Ok(34_200_000_000_000));
        assert_eq!(parse_time_of_day("09:30:00.25"), Ok(34_200_250_000_000));
        assert_eq!(parse_time_of_day("23:59:59.999999999"), Ok(DAY_NS - 1));
        for bad in ["", "9:30", "09:30:", "24:00", "09:60", "09:30.5", "09:30:00.", "a:b:c"] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn window_skips_before_and_ends_after() {
        let sec = 1_000_000_000;
        // A day boundary in the Unix times changes nothing: time of day counts.
        let day = 20_000 * DAY_NS;
        let ticks = (0..10).map(|i| trade(day + i * sec)).collect();
        let mut r = Replay::new(Box::new(Vec_ { ticks, at: 0 }), Speed::Max, false).unwrap();
        r.window = Window { from: Some(3 * sec), to: Some(5 * sec) };
        let mut out = Vec::new();
        assert_eq!(r.poll(&mut out), Poll::Ready);
        assert_eq!(out.len(), 3);
        assert_eq!(r.take_skipped(), 0, "records outside the window are not bad");
        assert_eq!(r.poll(&mut Vec::new()), Poll::Done);
    }

    #[test]
    fn loop_restarts_after_the_last_record() {
        let ticks = vec![trade(1), trade(2)];
        let mut r = Replay::new(Box::new(Vec_ { ticks, at: 0 }), Speed::Max, false).unwrap();
        r.looped = true;
        for _ in 0..3 {
            let mut out = Vec::new();
            assert_eq!(r.poll(&mut out), Poll::Ready);
            assert_eq!(out.len(), 2);
            assert_eq!(r.poll(&mut Vec::new()), Poll::Restart);
        }
    }

    #[test]
    fn a_file_without_usable_records_does_not_loop() {
        let ticks = vec![Err(Skip { at: 1, why: "not JSON" })];
        let mut r = Replay::new(Box::new(Vec_ { ticks, at: 0 }), Speed::Max, false).unwrap();
        r.looped = true;
        assert_eq!(r.poll(&mut Vec::new()), Poll::Done);
        assert_eq!(r.take_skipped(), 1);
    }

    #[test]
    fn max_speed_hands_everything_over_then_done() {
        let ticks = vec![trade(5), Err(Skip { at: 2, why: "x" }), trade(1), trade(9)];
        let mut r = Replay::new(Box::new(Vec_ { ticks, at: 0 }), Speed::Max, false).unwrap();
        let mut out = Vec::new();
        assert_eq!(r.poll(&mut out), Poll::Ready);
        // File order, skips counted once.
        assert_eq!(out.len(), 3);
        assert_eq!(r.take_skipped(), 1);
        assert_eq!(r.take_skipped(), 0);
        out.clear();
        assert_eq!(r.poll(&mut out), Poll::Done);
        assert!(out.is_empty());
    }

    #[test]
    fn paced_schedule_is_absolute() {
        // Records 0, 1 s and 2 s apart at speed 1000: due at +0, +1 ms, +2 ms.
        let ticks = vec![trade(10_000_000_000), trade(11_000_000_000), trade(12_000_000_000)];
        let mut r =
            Replay::new(Box::new(Vec_ { ticks, at: 0 }), Speed::Factor(1000.0), false).unwrap();
        let mut out = Vec::new();
        assert_eq!(r.poll(&mut out), Poll::Ready);
        assert_eq!(out.len(), 1);
        let (start, _) = r.start.unwrap();
        // The next record is due exactly 1 ms after the start, not after "now".
        let mut waits = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut batch = Vec::new();
        loop {
            // As the feed thread does: a fresh batch per poll.
            batch.clear();
            let polled = r.poll(&mut batch);
            out.append(&mut batch);
            match polled {
                Poll::WaitUntil(at) => {
                    let expect = if out.len() == 1 { 1 } else { 2 };
                    assert_eq!(at, start + Duration::from_millis(expect));
                    waits += 1;
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                Poll::Ready => {}
                Poll::Done => break,
                other => panic!("{other:?}"),
            }
            assert!(Instant::now() < deadline);
        }
        assert!(waits >= 2);
        // Pacing leaves the recorded times as they are.
        let times: Vec<u64> = out.iter().map(|t| t.src_ns).collect();
        assert_eq!(times, [10_000_000_000, 11_000_000_000, 12_000_000_000]);
    }

    #[test]
    fn the_clock_stops_at_the_first_record_not_handed_over() {
        // Records 1 s apart at speed 1: the first poll hands over one and
        // keeps the next, due in a second.
        let ticks = vec![trade(10_000_000_000), trade(11_000_000_000), trade(12_000_000_000)];
        let mut r =
            Replay::new(Box::new(Vec_ { ticks, at: 0 }), Speed::Factor(1.0), false).unwrap();
        assert_eq!(r.source_time(Instant::now()), None, "nothing read yet");
        let mut out = Vec::new();
        assert_eq!(r.poll(&mut out), Poll::Ready);
        assert_eq!(out.len(), 1);
        let (start, _) = r.start.unwrap();
        // Half a second in, the clock reads the schedule.
        let half = r.source_time(start + Duration::from_millis(500)).unwrap();
        assert_eq!(half, 10_500_000_000);
        // Five seconds in (a feed thread woken late), two records are due but
        // only the first was handed over: the clock waits at the next one,
        // so no bar that the 11 s record belongs to can close before it.
        let late = r.source_time(start + Duration::from_secs(5)).unwrap();
        assert_eq!(late, 11_000_000_000);
    }

    /// The source times of every tick of one pass at `--speed max`.
    fn max_pass(r: &mut Replay) -> Vec<u64> {
        let mut times = Vec::new();
        loop {
            let mut out = Vec::new();
            match r.poll(&mut out) {
                Poll::Ready => times.extend(out.iter().map(|t| t.src_ns)),
                Poll::Done | Poll::Restart => return times,
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn max_speed_keeps_the_recorded_times() {
        // More records than one batch, some sharing a time, one out of order.
        let mut file: Vec<u64> = (0..5000u64).map(|i| 1_000 + i / 2 * 7).collect();
        file.swap(10, 11);
        let ticks = file.iter().map(|&t| trade(t)).collect();
        let mut r = Replay::new(Box::new(Vec_ { ticks, at: 0 }), Speed::Max, false).unwrap();
        assert_eq!(max_pass(&mut r), file);
    }

    #[test]
    fn a_time_shift_moves_every_time_by_one_constant_per_pass() {
        let file = [5_000_000_000u64, 5_000_000_000, 5_000_000_100, 9_000_000_000];
        let replay = |shift, looped| {
            let ticks = file.iter().map(|&t| trade(t)).collect();
            let mut r = Replay::new(Box::new(Vec_ { ticks, at: 0 }), Speed::Max, false).unwrap();
            r.shift = shift;
            r.looped = looped;
            r
        };
        // A duration: the same constant on every pass of a loop.
        let mut r = replay(TimeShift::By(-1_000_000_000), true);
        for _ in 0..2 {
            assert_eq!(max_pass(&mut r), file.map(|t| t - 1_000_000_000));
        }
        // `now`: the first record reads the wall clock at the start of the
        // pass, every difference is kept, and each pass of a loop anchors
        // again (its own epoch).
        let mut r = replay(TimeShift::Now, true);
        let mut firsts = Vec::new();
        for _ in 0..2 {
            let before = now_ns();
            let got = max_pass(&mut r);
            assert!((before..=now_ns()).contains(&got[0]), "{} not in the pass", got[0]);
            let diffs: Vec<u64> = got.iter().map(|t| t - got[0]).collect();
            assert_eq!(diffs, file.map(|t| t - file[0]));
            firsts.push(got[0]);
        }
        assert!(firsts[1] >= firsts[0]);
        // A shift below the Unix epoch stops at 0 rather than wrapping.
        assert_eq!(shifted(5, -10), 0);
        assert_eq!(shifted(5, 10), 15);
    }

    #[test]
    fn the_window_of_a_file_with_a_local_midnight_counts_from_it() {
        // A reader whose times of day count from a midnight at 05:00 UTC.
        struct Local(Vec_);
        impl RecordReader for Local {
            fn next(&mut self) -> Option<Result<Tick, Skip>> {
                self.0.next()
            }
            fn rewind(&mut self) -> io::Result<()> {
                self.0.rewind()
            }
            fn local_midnight_ns(&self) -> Option<u64> {
                Some(5 * 3_600_000_000_000)
            }
        }
        let hour = 3_600_000_000_000u64;
        // 09:00, 10:00, 11:00 after that midnight: 14:00, 15:00, 16:00 UTC.
        let ticks = (9..12).map(|h| trade((5 + h) * hour)).collect();
        let mut r = Replay::new(Box::new(Local(Vec_ { ticks, at: 0 })), Speed::Max, false).unwrap();
        r.window = Window { from: Some(10 * hour), to: Some(10 * hour) };
        assert_eq!(max_pass(&mut r), [15 * hour]);
    }
}
