//! The trading day of an ITCH file, and the UTC time of its messages.
//!
//! An ITCH 5.0 timestamp is the nanoseconds since midnight of the trading
//! day, in the exchange's time zone (America/New_York for NASDAQ, BX and
//! PSX); the day itself is not in the messages. A [`TradingDay`] supplies it,
//! from `--date YYYY-MM-DD` when given, else from the file's name as NASDAQ
//! names its files (`MMDDYYYY.NASDAQ_ITCH50`, with or without `.gz`: see
//! [`date_from_file_name`]), else 1970-01-01.
//!
//! A message's time is the UTC instant of that day's midnight in New York
//! plus its nanoseconds: the zone is looked up once per file (jiff, with
//! the IANA rules of America/New_York compiled in), so a message costs one
//! addition. On the two Sundays a year when the clocks change at 2 a.m.
//! (no session trades then), the nanoseconds are read as the time elapsed
//! since midnight, which is what they count: times after 2 a.m. stay in
//! order and never repeat, on a day 23 or 25 hours long.

use std::path::Path;

use jiff::civil::Date;
use jiff::tz::{self, TimeZone};

/// The exchange's time zone.
static NEW_YORK: TimeZone = tz::get!("America/New_York");

/// The name of [`NEW_YORK`], for people.
pub const ZONE: &str = "America/New_York";

/// Where a file's trading day came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOrigin {
    /// `--date`.
    Flag,
    /// The file's name.
    FileName,
    /// Neither said: 1970-01-01.
    Unknown,
}

/// The trading day of an ITCH file and the UTC time of its midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradingDay {
    date: Date,
    origin: DateOrigin,
    /// Midnight of `date` in New York, ns since the Unix epoch.
    midnight_ns: u64,
}

/// The first and last dates a [`TradingDay`] can be: midnight in New York
/// must fall between the Unix epoch and the end of `u64` nanoseconds (2554).
const FIRST_YEAR: i16 = 1970;
const LAST_YEAR: i16 = 2500;

impl TradingDay {
    /// `date` in New York; `None` outside 1970..=2500.
    pub fn new(date: Date, origin: DateOrigin) -> Option<TradingDay> {
        if !(FIRST_YEAR..=LAST_YEAR).contains(&date.year()) {
            return None;
        }
        let midnight = NEW_YORK.to_timestamp(date.at(0, 0, 0, 0)).ok()?;
        let midnight_ns = u64::try_from(midnight.as_nanosecond()).ok()?;
        Some(TradingDay { date, origin, midnight_ns })
    }

    /// The day of the file at `path`: `flag` when given (`--date`), else
    /// the date in its name, else 1970-01-01.
    pub fn of_file(path: &Path, flag: Option<Date>) -> TradingDay {
        let named =
            || date_from_file_name(path).and_then(|d| TradingDay::new(d, DateOrigin::FileName));
        flag.and_then(|d| TradingDay::new(d, DateOrigin::Flag))
            .or_else(named)
            .unwrap_or_else(TradingDay::unknown)
    }

    /// 1970-01-01, for a file whose date nobody gave.
    pub fn unknown() -> TradingDay {
        TradingDay::new(jiff::civil::date(1970, 1, 1), DateOrigin::Unknown)
            .expect("1970-01-01 is in range")
    }

    /// The date.
    pub fn date(&self) -> Date {
        self.date
    }

    /// Where the date came from.
    pub fn origin(&self) -> DateOrigin {
        self.origin
    }

    /// Midnight of the day in New York, ns since the Unix epoch (UTC).
    pub fn midnight_ns(&self) -> u64 {
        self.midnight_ns
    }

    /// The UTC time (ns since the Unix epoch) of an ITCH timestamp of this
    /// day (ns since midnight).
    #[inline]
    pub fn utc_ns(&self, since_midnight: u64) -> u64 {
        self.midnight_ns.saturating_add(since_midnight)
    }
}

/// The trading date in an ITCH file's name as NASDAQ names its files:
/// `MMDDYYYY.` then the feed's name (`NASDAQ_ITCH50`, or `BX_ITCH_50`,
/// `PSX_ITCH_50` for the other NASDAQ books), optionally `.gz`; `None` for
/// any other name or an impossible date.
pub fn date_from_file_name(path: &Path) -> Option<Date> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let (digits, feed) = name.split_once('.')?;
    let feed = feed.to_ascii_uppercase();
    if !["NASDAQ_ITCH50", "BX_ITCH_50", "PSX_ITCH_50"].contains(&feed.as_str()) {
        return None;
    }
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits[r].parse::<i16>().ok();
    Date::new(n(4..8)?, n(0..2)? as i8, n(2..4)? as i8).ok()
}

/// Parses `--date`: `YYYY-MM-DD`, a real date from 1970 to 2500.
pub fn parse_date(s: &str) -> Result<Date, String> {
    let bad = || format!("{s:?} is not a date YYYY-MM-DD from 1970 to 2500");
    let shape = s.len() == 10
        && s.bytes()
            .enumerate()
            .all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !shape {
        return Err(bad());
    }
    let date: Date = s.parse().map_err(|_| bad())?;
    TradingDay::new(date, DateOrigin::Flag).map(|d| d.date()).ok_or_else(bad)
}

/// `ns` (since the Unix epoch) as a wall-clock time in New York, with its
/// offset: `2024-01-30 09:30:00.000000000 EST`.
pub fn format_new_york(ns: u64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(ts) => {
            ts.to_zoned_datetime(NEW_YORK.clone()).strftime("%Y-%m-%d %H:%M:%S.%N %Z").to_string()
        }
        Err(_) => format!("{ns} ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    const HOUR_NS: u64 = 3_600_000_000_000;

    /// Seconds since the Unix epoch of a UTC date at 00:00, computed
    /// without any time-zone code (days since 1970-01-01 by counting).
    fn utc_midnight_s(y: i64, m: i64, d: i64) -> u64 {
        let days_before_year: i64 = (1970..y).map(|y| if is_leap(y) { 366 } else { 365 }).sum();
        let month_days =
            [31, if is_leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let days = days_before_year + month_days[..(m - 1) as usize].iter().sum::<i64>() + d - 1;
        (days * 86_400) as u64
    }

    fn is_leap(y: i64) -> bool {
        y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
    }

    fn midnight(y: i16, m: i8, d: i8) -> u64 {
        TradingDay::new(date(y, m, d), DateOrigin::Flag).unwrap().midnight_ns()
    }

    #[test]
    fn midnight_in_new_york_follows_daylight_saving() {
        let s = 1_000_000_000;
        // Winter (EST, UTC-5) and summer (EDT, UTC-4).
        assert_eq!(midnight(2024, 1, 30), utc_midnight_s(2024, 1, 30) * s + 5 * HOUR_NS);
        assert_eq!(midnight(2024, 7, 15), utc_midnight_s(2024, 7, 15) * s + 4 * HOUR_NS);
        // The Friday before and the Monday after the spring change
        // (Sunday 2024-03-10, 2 a.m.), and the change day itself, whose
        // midnight is still standard time.
        assert_eq!(midnight(2024, 3, 8), utc_midnight_s(2024, 3, 8) * s + 5 * HOUR_NS);
        assert_eq!(midnight(2024, 3, 10), utc_midnight_s(2024, 3, 10) * s + 5 * HOUR_NS);
        assert_eq!(midnight(2024, 3, 11), utc_midnight_s(2024, 3, 11) * s + 4 * HOUR_NS);
        // The autumn change (Sunday 2024-11-03): midnight is still daylight time.
        assert_eq!(midnight(2024, 11, 1), utc_midnight_s(2024, 11, 1) * s + 4 * HOUR_NS);
        assert_eq!(midnight(2024, 11, 3), utc_midnight_s(2024, 11, 3) * s + 4 * HOUR_NS);
        assert_eq!(midnight(2024, 11, 4), utc_midnight_s(2024, 11, 4) * s + 5 * HOUR_NS);
        // The rules of the day, not today's: before 2007 daylight time
        // began in April, so mid-March 2006 was standard time.
        assert_eq!(midnight(2006, 3, 13), utc_midnight_s(2006, 3, 13) * s + 5 * HOUR_NS);
        assert_eq!(midnight(2007, 3, 13), utc_midnight_s(2007, 3, 13) * s + 4 * HOUR_NS);
    }

    #[test]
    fn a_change_day_counts_elapsed_time_from_midnight() {
        // 2024-03-10 springs forward at 2 a.m.: 3 h after midnight is
        // 08:00 UTC (04:00 EDT on the wall), one hour after 2 h, not two.
        let day = TradingDay::new(date(2024, 3, 10), DateOrigin::Flag).unwrap();
        assert_eq!(day.utc_ns(3 * HOUR_NS) - day.utc_ns(2 * HOUR_NS), HOUR_NS);
        assert_eq!(format_new_york(day.utc_ns(3 * HOUR_NS)), "2024-03-10 04:00:00.000000000 EDT");
        // 2024-11-03 falls back: 1.5 h and 2.5 h after midnight both read
        // 01:30 on the wall, an hour apart.
        let day = TradingDay::new(date(2024, 11, 3), DateOrigin::Flag).unwrap();
        let (a, b) = (day.utc_ns(3 * HOUR_NS / 2), day.utc_ns(5 * HOUR_NS / 2));
        assert_eq!(b - a, HOUR_NS);
        assert_eq!(format_new_york(a), "2024-11-03 01:30:00.000000000 EDT");
        assert_eq!(format_new_york(b), "2024-11-03 01:30:00.000000000 EST");
    }

    #[test]
    fn dates_come_from_nasdaq_file_names() {
        let d = |name: &str| date_from_file_name(Path::new(name));
        assert_eq!(d("01302024.NASDAQ_ITCH50"), Some(date(2024, 1, 30)));
        assert_eq!(d("/data/itch/07152024.NASDAQ_ITCH50.gz"), Some(date(2024, 7, 15)));
        assert_eq!(d("12302019.nasdaq_itch50"), Some(date(2019, 12, 30)));
        assert_eq!(d("01022020.BX_ITCH_50.gz"), Some(date(2020, 1, 2)));
        assert_eq!(d("01022020.PSX_ITCH_50"), Some(date(2020, 1, 2)));
        for name in [
            "sample.itch",
            "01302024.NASDAQ_ITCH50.zip",
            "0130202.NASDAQ_ITCH50",
            "2024-01-30.NASDAQ_ITCH50",
            "13302024.NASDAQ_ITCH50",
            "02302024.NASDAQ_ITCH50",
            "01302024.txt",
        ] {
            assert_eq!(d(name), None, "{name}");
        }
    }

    #[test]
    fn the_flag_wins_then_the_name_then_1970() {
        let named = Path::new("01302024.NASDAQ_ITCH50");
        let flag = Some(date(2024, 7, 15));
        assert_eq!(TradingDay::of_file(named, flag).date(), date(2024, 7, 15));
        assert_eq!(TradingDay::of_file(named, flag).origin(), DateOrigin::Flag);
        assert_eq!(TradingDay::of_file(named, None).date(), date(2024, 1, 30));
        assert_eq!(TradingDay::of_file(named, None).origin(), DateOrigin::FileName);
        let unknown = TradingDay::of_file(Path::new("sample.itch"), None);
        assert_eq!((unknown.date(), unknown.origin()), (date(1970, 1, 1), DateOrigin::Unknown));
        // 1970-01-01 in New York (EST) starts at 05:00 UTC.
        assert_eq!(unknown.midnight_ns(), 5 * HOUR_NS);
    }

    #[test]
    fn date_flag_parses() {
        assert_eq!(parse_date("2024-01-30"), Ok(date(2024, 1, 30)));
        assert_eq!(parse_date("1970-01-01"), Ok(date(1970, 1, 1)));
        for bad in [
            "",
            "2024-1-30",
            "2024-02-30",
            "1969-12-31",
            "2501-01-01",
            "30-01-2024",
            "2024-01-30T09:30",
            "20240130",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
