//! The JSON-lines feed format: one quote or trade per line, easy to write by
//! hand for test fixtures (the schema is in `feeds/README.md`):
//!
//! ```text
//! {"type":"q","sym":"AAPL","t":1764140000000000000,"bp":192.31,"bs":200,"ap":192.33,"as":100}
//! {"type":"t","sym":"AAPL","t":1764140000000500000,"p":192.32,"s":50}
//! ```
//!
//! Parsing uses simd-json's tape API with a reused line buffer, tape and
//! scratch buffers, and a local name -> id cache in front of the shared
//! [`SymbolTable`], so a line costs no allocation once the buffers have
//! grown to the longest line (a new symbol name allocates once).
//!
//! A line that cannot be used (not JSON, not an object, a missing field, a
//! wrong type, a bad symbol name, a negative size or price...) is reported as
//! a [`Skip`] with its line number and a reason; blank lines are ignored
//! without a report. Nothing in a line can stop the reader.
//!
//! # Prices
//!
//! simd-json hands numbers over as `f64` (correctly rounded), and the price
//! becomes fixed-point with 4 implied decimals ([`price_from_f64`]) without
//! float surprises:
//!
//! - a number written with at most 4 decimals is exact: `x * 10_000` lands
//!   within a millionth of an integer for any price below 9e11, and that
//!   integer is the price (`192.31` is `1_923_100`; `0.30000000000000004`,
//!   what a naive writer prints for `0.1 + 0.2`, is `3_000`);
//! - a number with more decimals is rounded *as written*, half away from
//!   zero: the shortest decimal form of the `f64` (which is the text of the
//!   file for up to 15 significant digits) is rounded digit by digit, so
//!   `1.00005` gives `10_001` although the nearest `f64` is slightly below.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use simd_json::prelude::*;
use simd_json::tape::{Tape, Value};

use crate::record_reader::{RecordReader, Skip, open_input_counted};
use crate::tick::{Price, SymbolId, SymbolTable, Tick, valid_symbol};

/// Longest line accepted; a longer one is skipped (and the reader
/// resynchronizes at the next newline).
pub const MAX_LINE: usize = 64 * 1024;

/// Largest absolute price accepted (in currency units): below it, a 4-decimal
/// price is exact in an `f64`.
const MAX_PRICE: f64 = 9e11;

/// Reusable parse state for JSON lines: simd-json's buffers, the tape and a
/// name -> id cache.
pub struct LineParser {
    table: Arc<SymbolTable>,
    buffers: simd_json::Buffers,
    /// Kept between lines with its lifetime reset, so its allocation is reused.
    tape: Option<Tape<'static>>,
    names: HashMap<String, SymbolId>,
    /// Scratch for the slow price path.
    digits: String,
}

/// The fields a line may carry, before validation.
#[derive(Default)]
struct Fields<'a> {
    kind: Option<Value<'a, 'a>>,
    sym: Option<Value<'a, 'a>>,
    t: Option<Value<'a, 'a>>,
    bp: Option<Value<'a, 'a>>,
    bs: Option<Value<'a, 'a>>,
    ap: Option<Value<'a, 'a>>,
    ask_size: Option<Value<'a, 'a>>,
    p: Option<Value<'a, 'a>>,
    s: Option<Value<'a, 'a>>,
}

impl LineParser {
    /// A parser that interns symbols in `table`.
    pub fn new(table: Arc<SymbolTable>) -> LineParser {
        LineParser {
            table,
            buffers: simd_json::Buffers::new(512),
            tape: Some(Tape::null().reset()),
            names: HashMap::new(),
            digits: String::with_capacity(32),
        }
    }

    /// Parses one line (without its newline; the bytes are modified in
    /// place). `seq` and `ingest_ns` of the tick are 0.
    pub fn parse(&mut self, line: &mut [u8]) -> Result<Tick, &'static str> {
        let LineParser { table, buffers, tape, names, digits } = self;
        let mut tp: Tape<'_> = tape.take().unwrap_or_else(|| Tape::null().reset()).reset();
        let result = match simd_json::fill_tape(line, buffers, &mut tp) {
            Ok(()) => to_tick(tp.as_value(), table, names, digits),
            Err(_) => Err("not JSON"),
        };
        *tape = Some(tp.reset());
        result
    }
}

fn to_tick(
    v: Value<'_, '_>,
    table: &SymbolTable,
    names: &mut HashMap<String, SymbolId>,
    digits: &mut String,
) -> Result<Tick, &'static str> {
    let obj = v.as_object().ok_or("not an object")?;
    let mut f = Fields::default();
    for (k, v) in obj.iter() {
        let slot = match k {
            "type" => &mut f.kind,
            "sym" => &mut f.sym,
            "t" => &mut f.t,
            "bp" => &mut f.bp,
            "bs" => &mut f.bs,
            "ap" => &mut f.ap,
            "as" => &mut f.ask_size,
            "p" => &mut f.p,
            "s" => &mut f.s,
            _ => continue,
        };
        *slot = Some(v);
    }
    let (kind, name) = (f.kind.ok_or("missing type")?, f.sym.ok_or("missing sym")?);
    let kind = kind.as_str().ok_or("type is not a string")?;
    let name = name.as_str().ok_or("sym is not a string")?;
    let t = f.t.ok_or("missing t")?.as_u64().ok_or("t is not a non-negative integer")?;
    let sym = match names.get(name) {
        Some(&id) => id,
        None => {
            if !valid_symbol(name) {
                return Err("invalid symbol name");
            }
            let id = table.intern(name).map_err(|_| "symbol table full")?;
            names.insert(name.to_string(), id);
            id
        }
    };
    match kind {
        "q" => {
            let bid = price(f.bp.ok_or("missing bp")?, digits)?;
            let bid_size = size(f.bs.ok_or("missing bs")?)?;
            let ask = price(f.ap.ok_or("missing ap")?, digits)?;
            let ask_size = size(f.ask_size.ok_or("missing as")?)?;
            Ok(Tick::quote(sym, t, bid, bid_size, ask, ask_size))
        }
        "t" => {
            let px = price(f.p.ok_or("missing p")?, digits)?;
            let sz = size(f.s.ok_or("missing s")?)?;
            Ok(Tick::trade(sym, t, px, sz))
        }
        _ => Err("unknown type"),
    }
}

fn size(v: Value<'_, '_>) -> Result<u32, &'static str> {
    if let Some(n) = v.as_u64() {
        return u32::try_from(n).map_err(|_| "size too large");
    }
    if v.as_i64().is_some() { Err("negative size") } else { Err("size is not an integer") }
}

fn price(v: Value<'_, '_>, digits: &mut String) -> Result<Price, &'static str> {
    let x = v.cast_f64().ok_or("price is not a number")?;
    if x < 0.0 {
        return Err("negative price");
    }
    price_from_f64(x, digits).ok_or("price out of range")
}

/// Converts a price in currency units to fixed point with 4 implied
/// decimals, exactly for up to 4 decimals and rounding half away from zero
/// on the shortest decimal form otherwise (see the module docs). `None` when
/// not finite or beyond ±9e11. `scratch` is reused for the slow path.
pub fn price_from_f64(x: f64, scratch: &mut String) -> Option<Price> {
    if !x.is_finite() || x.abs() >= MAX_PRICE {
        return None;
    }
    let scaled = x * Price::SCALE as f64;
    let nearest = scaled.round();
    if (scaled - nearest).abs() < 1e-6 {
        return Some(Price(nearest as i64));
    }
    // More than 4 decimals: round the decimal text (shortest round-trip form;
    // `{}` never uses an exponent for f64).
    scratch.clear();
    let _ = write!(scratch, "{}", x.abs());
    let (int, frac) = scratch.split_once('.').unwrap_or((scratch.as_str(), ""));
    let mut units: i64 = 0;
    for b in int.bytes().chain(frac.bytes().chain(std::iter::repeat(b'0')).take(4)) {
        units = units * 10 + i64::from(b - b'0');
    }
    if frac.as_bytes().get(4).is_some_and(|&d| d >= b'5') {
        units += 1;
    }
    Some(Price(if x < 0.0 { -units } else { units }))
}

/// A [`RecordReader`] over a JSON-lines file, plain or gzip-compressed.
pub struct JsonLines {
    path: PathBuf,
    input: Box<dyn BufRead + Send>,
    parser: LineParser,
    line: Vec<u8>,
    /// Number of the line read last (1-based).
    line_no: u64,
    /// The input failed or ended: report nothing more until a rewind.
    ended: bool,
    /// Bytes read from the file (see [`open_input_counted`]).
    read: Arc<AtomicU64>,
}

impl JsonLines {
    /// Opens `path` (gzip detected from its magic bytes).
    pub fn open(path: &Path, table: Arc<SymbolTable>) -> io::Result<JsonLines> {
        let (input, read) = open_input_counted(path)?;
        Ok(JsonLines {
            path: path.to_path_buf(),
            input,
            read,
            parser: LineParser::new(table),
            line: Vec::with_capacity(512),
            line_no: 0,
            ended: false,
        })
    }

    /// Reads the next line into `self.line` (without newline). Returns
    /// `Ok(false)` at the end, `Ok(true)` with an empty buffer for a line
    /// over [`MAX_LINE`] (its content is discarded).
    fn read_line(&mut self) -> io::Result<Option<bool>> {
        self.line.clear();
        let mut overlong = false;
        let mut any = false;
        loop {
            let buf = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(any.then_some(overlong));
            }
            any = true;
            let (chunk, used, done) = match memchr_nl(buf) {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if !overlong {
                if self.line.len() + chunk.len() > MAX_LINE {
                    overlong = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            self.input.consume(used);
            if done {
                return Ok(Some(overlong));
            }
        }
    }
}

fn memchr_nl(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

impl RecordReader for JsonLines {
    fn next(&mut self) -> Option<Result<Tick, Skip>> {
        while !self.ended {
            let overlong = match self.read_line() {
                Ok(Some(o)) => o,
                Ok(None) => {
                    self.ended = true;
                    return None;
                }
                Err(e) => {
                    // A truncated gzip stream or a failing disk: report it
                    // once as a skipped record and end there.
                    tracing::warn!(path = %self.path.display(), line = self.line_no + 1, error = %e, "feed file unreadable past this point");
                    self.ended = true;
                    return Some(Err(Skip { at: self.line_no + 1, why: "read error" }));
                }
            };
            self.line_no += 1;
            if overlong {
                return Some(Err(Skip { at: self.line_no, why: "line too long" }));
            }
            let text = self.line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let (start, len) = (text.as_ptr() as usize - self.line.as_ptr() as usize, text.len());
            let at = self.line_no;
            return Some(
                self.parser
                    .parse(&mut self.line[start..start + len])
                    .map_err(|why| Skip { at, why }),
            );
        }
        None
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn rewind(&mut self) -> io::Result<()> {
        (self.input, self.read) = open_input_counted(&self.path)?;
        self.line_no = 0;
        self.ended = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::Body;

    fn parser() -> LineParser {
        LineParser::new(Arc::new(SymbolTable::new(16)))
    }

    fn parse(p: &mut LineParser, s: &str) -> Result<Tick, &'static str> {
        let mut line = s.as_bytes().to_vec();
        p.parse(&mut line)
    }

    #[test]
    fn quote_fields() {
        let mut p = parser();
        let t = parse(
            &mut p,
            r#"{"type":"q","sym":"AAPL","t":1764140000123456789,"bp":192.31,"bs":200,"ap":192.33,"as":100}"#,
        )
        .unwrap();
        // Every field lands where it belongs, prices as 4-decimal fixed point.
        assert_eq!(t.src_ns, 1_764_140_000_123_456_789);
        assert_eq!((t.seq, t.ingest_ns), (0, 0));
        assert_eq!(
            t.body,
            Body::Quote {
                bid: Price(1_923_100),
                bid_size: 200,
                ask: Price(1_923_300),
                ask_size: 100
            }
        );
        assert_eq!(&*p.table.name(t.sym).unwrap(), "AAPL");
    }

    #[test]
    fn trade_fields_any_key_order_extra_keys_ignored() {
        let mut p = parser();
        let t =
            parse(&mut p, r#"{"s":50,"p":5,"extra":[1,{"a":2}],"t":7,"sym":"BRK.B","type":"t"}"#)
                .unwrap();
        assert_eq!(t.body, Body::Trade { price: Price(50_000), size: 50 });
        assert_eq!(t.src_ns, 7);
        // The same name maps to the same id on the next line.
        let u = parse(&mut p, r#"{"type":"t","sym":"BRK.B","t":8,"p":0.0001,"s":0}"#).unwrap();
        assert_eq!(u.sym, t.sym);
        assert_eq!(u.body, Body::Trade { price: Price(1), size: 0 });
    }

    #[test]
    fn bad_lines_are_named() {
        let mut p = parser();
        let q = r#""type":"q","sym":"AAPL","t":1"#;
        let cases = [
            ("not json", "not JSON"),
            (r#"{"type":"q","sym":"AAPL""#, "not JSON"),
            ("[1,2]", "not an object"),
            (r#"{"sym":"AAPL","t":1,"p":1,"s":1}"#, "missing type"),
            (r#"{"type":"x","sym":"AAPL","t":1,"p":1,"s":1}"#, "unknown type"),
            (r#"{"type":"t","t":1,"p":1,"s":1}"#, "missing sym"),
            (r#"{"type":"t","sym":7,"t":1,"p":1,"s":1}"#, "sym is not a string"),
            (r#"{"type":"t","sym":"has space","t":1,"p":1,"s":1}"#, "invalid symbol name"),
            (
                r#"{"type":"t","sym":"WAYTOOLONGSYMBOLNAME","t":1,"p":1,"s":1}"#,
                "invalid symbol name",
            ),
            (r#"{"type":"t","sym":"AAPL","p":1,"s":1}"#, "missing t"),
            (r#"{"type":"t","sym":"AAPL","t":-1,"p":1,"s":1}"#, "t is not a non-negative integer"),
            (r#"{"type":"t","sym":"AAPL","t":1.5,"p":1,"s":1}"#, "t is not a non-negative integer"),
            (r#"{"type":"t","sym":"AAPL","t":1,"p":"1","s":1}"#, "price is not a number"),
            (r#"{"type":"t","sym":"AAPL","t":1,"p":-1,"s":1}"#, "negative price"),
            (r#"{"type":"t","sym":"AAPL","t":1,"p":1e12,"s":1}"#, "price out of range"),
            (r#"{"type":"t","sym":"AAPL","t":1,"p":1,"s":-5}"#, "negative size"),
            (r#"{"type":"t","sym":"AAPL","t":1,"p":1,"s":1.5}"#, "size is not an integer"),
            (r#"{"type":"t","sym":"AAPL","t":1,"p":1,"s":4294967296}"#, "size too large"),
            (r#"{"type":"t","sym":"AAPL","t":1,"s":1}"#, "missing p"),
        ];
        for (line, why) in cases {
            assert_eq!(parse(&mut p, line).unwrap_err(), why, "{line}");
        }
        for missing in ["bp", "bs", "ap", "as"] {
            let mut fields = vec![r#""bp":1"#, r#""bs":1"#, r#""ap":1"#, r#""as":1"#];
            fields.retain(|f| !f.contains(&format!("\"{missing}\"")));
            let line = format!("{{{q},{}}}", fields.join(","));
            assert!(parse(&mut p, &line).unwrap_err().contains(missing), "{line}");
        }
        // A bad line leaves the parser usable.
        assert!(parse(&mut p, r#"{"type":"t","sym":"AAPL","t":1,"p":1,"s":1}"#).is_ok());
    }

    #[test]
    fn prices_round_without_float_surprises() {
        let mut s = String::new();
        let px = |x: f64, s: &mut String| price_from_f64(x, s).unwrap().0;
        // Up to 4 decimals: exact, including values with no exact binary form.
        assert_eq!(px(192.31, &mut s), 1_923_100);
        assert_eq!(px(0.1 + 0.2, &mut s), 3_000);
        assert_eq!(px(0.30000000000000004, &mut s), 3_000);
        assert_eq!(px(1.0001, &mut s), 10_001);
        assert_eq!(px(123456789.9999, &mut s), 1_234_567_899_999);
        assert_eq!(px(0.0, &mut s), 0);
        assert_eq!(px(1.1 * 3.0, &mut s), 33_000); // 3.3000000000000003
        // More decimals: rounded half away from zero on the decimal as written,
        // although 1.00005 and 2.00015 are stored slightly below the tie.
        assert_eq!(px(1.00005, &mut s), 10_001);
        assert_eq!(px(2.00015, &mut s), 20_002);
        assert_eq!(px(1.00004999, &mut s), 10_000);
        assert_eq!(px(-1.00005, &mut s), -10_001);
        assert_eq!(px(0.00004, &mut s), 0);
        assert_eq!(px(0.00005, &mut s), 1);
        // Out of range or not a number.
        assert_eq!(price_from_f64(f64::NAN, &mut s), None);
        assert_eq!(price_from_f64(1e12, &mut s), None);
        // Every 4-decimal price in a sweep comes back exactly.
        for units in (0..2_000_000i64).step_by(7) {
            let text = format!("{}.{:04}", units / 10_000, units % 10_000);
            let x: f64 = text.parse().unwrap();
            assert_eq!(px(x, &mut s), units, "{text}");
        }
    }

    #[test]
    fn reader_numbers_lines_skips_and_rewinds() {
        let good = r#"{"type":"t","sym":"A","t":1,"p":1,"s":1}"#;
        let long = format!(
            r#"{{"type":"t","sym":"A","t":1,"p":1,"s":1,"pad":"{}"}}"#,
            "x".repeat(MAX_LINE)
        );
        // CRLF endings, blank lines, an overlong line, garbage, no final newline.
        let text = format!("{good}\r\n\n   \n{long}\nnope\n{good}");
        let dir = std::env::temp_dir();
        let plain = dir.join(format!("tickwire-jsonl-{}.jsonl", std::process::id()));
        std::fs::write(&plain, &text).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let zipped = dir.join(format!("tickwire-jsonl-{}.jsonl.gz", std::process::id()));
        std::fs::write(&zipped, gz.finish().unwrap()).unwrap();
        for path in [&plain, &zipped] {
            let mut r = JsonLines::open(path, Arc::new(SymbolTable::new(4))).unwrap();
            let mut seen = Vec::new();
            for _ in 0..2 {
                let mut pass = Vec::new();
                while let Some(x) = r.next() {
                    pass.push(x.map(|t| t.src_ns).map_err(|s| (s.at, s.why)));
                }
                // The end is sticky until a rewind.
                assert!(r.next().is_none());
                r.rewind().unwrap();
                seen.push(pass);
            }
            let want = vec![Ok(1), Err((4, "line too long")), Err((5, "not JSON")), Ok(1)];
            assert_eq!(seen[0], want, "{}", path.display());
            // A rewind reads the same records again.
            assert_eq!(seen[1], want);
        }
        let _ = std::fs::remove_file(plain);
        let _ = std::fs::remove_file(zipped);
    }

    #[test]
    fn parsed_prices_match_the_text() {
        // Through simd-json's number parser, not just Rust's.
        let mut p = parser();
        for (text, units) in
            [("192.31", 1_923_100), ("0.30000000000000004", 3_000), ("1.00005", 10_001)]
        {
            let line = format!(r#"{{"type":"t","sym":"X","t":1,"p":{text},"s":1}}"#);
            let t = parse(&mut p, &line).unwrap();
            assert_eq!(t.body, Body::Trade { price: Price(units), size: 1 }, "{text}");
        }
    }
}
