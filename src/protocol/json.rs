//! JSON encoding of server messages, written by hand into byte buffers.
//!
//! Why not serde: a market-data message is a dozen fixed fields, and the
//! writer shards encode a million of them a second. Encoding straight into a
//! reused `Vec<u8>` with `itoa` and an integer-only price formatter costs a
//! few tens of nanoseconds and no allocation; prices are fixed-point, so no
//! float is ever formatted. Each update is split in two parts so it can be
//! encoded once and shared: a per-connection *head* (`{"type":"q","cseq":9,
//! "cf":6,`) and a *tail* that is the same for every subscriber of a batch
//! (`"sym":"AAPL","seq":1047,...}`).
//!
//! Control messages are typed and serialized with serde:
//! [`super::control`].

use crate::tick::{Body, Channel, Tick, write_price};

/// The unit of time fields on a session (`time_unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeUnit {
    /// Milliseconds (the default; safe for JavaScript numbers).
    #[default]
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds (exceeds 2^53: only for non-JavaScript clients).
    Ns,
}

impl TimeUnit {
    /// Parses the query-string value.
    pub fn parse(s: &str) -> Option<TimeUnit> {
        match s {
            "ms" => Some(TimeUnit::Ms),
            "us" => Some(TimeUnit::Us),
            "ns" => Some(TimeUnit::Ns),
            _ => None,
        }
    }

    /// The protocol name.
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Ms => "ms",
            TimeUnit::Us => "us",
            TimeUnit::Ns => "ns",
        }
    }

    /// Converts nanoseconds since the epoch to this unit (truncating).
    pub fn from_ns(self, ns: u64) -> u64 {
        match self {
            TimeUnit::Ms => ns / 1_000_000,
            TimeUnit::Us => ns / 1_000,
            TimeUnit::Ns => ns,
        }
    }
}

/// How a session wants its updates encoded: the part of the encoding that
/// differs between sessions and so keys the shared-encoding cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Format {
    /// Unit of `t`, `ti`, `to`.
    pub time_unit: TimeUnit,
    /// Whether `ti`/`to` are added.
    pub stamps: bool,
    /// Market data as binary records (`tickwire.v1.bin`, see
    /// [`crate::protocol::binary`]) instead of JSON; control stays JSON.
    pub binary: bool,
    /// Binary records long enough for bars (a session that subscribed to a
    /// bars channel: [`crate::protocol::binary::record_len`]). Always false
    /// on a JSON session.
    pub bars: bool,
}

impl Format {
    /// Number of distinct formats (for cache tables).
    pub const COUNT: usize = 24;

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self.time_unit as usize * 8
            + usize::from(self.bars) * 4
            + usize::from(self.binary) * 2
            + usize::from(self.stamps)
    }
}

/// Appends an unsigned integer.
#[inline]
pub fn write_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends the shared tail of a quote or trade: everything after the
/// per-connection head, closing brace included.
///
/// Hot path: no allocation beyond `buf`'s growth.
pub fn write_tail(buf: &mut Vec<u8>, tick: &Tick, name: &str, format: Format, to_ns: u64) {
    let tu = format.time_unit;
    buf.extend_from_slice(b"\"sym\":\"");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\",\"seq\":");
    write_u64(buf, tick.seq);
    match tick.body {
        Body::Quote { bid, bid_size, ask, ask_size } => {
            buf.extend_from_slice(b",\"bp\":");
            write_price(buf, bid);
            buf.extend_from_slice(b",\"bs\":");
            write_u64(buf, bid_size.into());
            buf.extend_from_slice(b",\"ap\":");
            write_price(buf, ask);
            buf.extend_from_slice(b",\"as\":");
            write_u64(buf, ask_size.into());
        }
        Body::Trade { price, size } => {
            buf.extend_from_slice(b",\"p\":");
            write_price(buf, price);
            buf.extend_from_slice(b",\"s\":");
            write_u64(buf, size.into());
        }
        Body::Bar(b) => {
            for (key, p) in [
                (&b",\"o\":"[..], b.open),
                (b",\"h\":", b.high),
                (b",\"l\":", b.low),
                (b",\"c\":", b.close),
            ] {
                buf.extend_from_slice(key);
                write_price(buf, p);
            }
            buf.extend_from_slice(b",\"v\":");
            write_u64(buf, b.volume.into());
            buf.extend_from_slice(b",\"n\":");
            write_u64(buf, b.trades.into());
            buf.extend_from_slice(b",\"vw\":");
            write_price(buf, b.vwap);
            buf.extend_from_slice(if b.closed { b",\"x\":true" } else { b",\"x\":false" });
        }
    }
    buf.extend_from_slice(b",\"t\":");
    write_u64(buf, tu.from_ns(tick.src_ns));
    if format.stamps {
        buf.extend_from_slice(b",\"ti\":");
        write_u64(buf, tu.from_ns(tick.ingest_ns));
        buf.extend_from_slice(b",\"to\":");
        write_u64(buf, tu.from_ns(to_ns));
    }
    buf.push(b'}');
}

/// Appends the head of an update (`{"type":"q","cseq":N[,"cf":K],`; a bar
/// names its channel: `{"type":"b","ch":"bars_1s","cseq":N,`).
#[inline]
pub fn write_update_head(buf: &mut Vec<u8>, tick: &Tick, cseq: u64, cf: u64) {
    buf.extend_from_slice(match tick.body {
        Body::Quote { .. } => b"{\"type\":\"q\",\"cseq\":",
        Body::Trade { .. } => b"{\"type\":\"t\",\"cseq\":",
        Body::Bar(b) if b.interval == Channel::Bars1m => {
            b"{\"type\":\"b\",\"ch\":\"bars_1m\",\"cseq\":"
        }
        Body::Bar(_) => b"{\"type\":\"b\",\"ch\":\"bars_1s\",\"cseq\":",
    });
    write_u64(buf, cseq);
    if cf > 1 {
        buf.extend_from_slice(b",\"cf\":");
        write_u64(buf, cf);
    }
    buf.push(b',');
}

/// Appends the head of a snapshot (`{"type":"snapshot","ch":"quotes","cseq":N,`).
#[inline]
pub fn write_snapshot_head(buf: &mut Vec<u8>, tick: &Tick, cseq: u64) {
    buf.extend_from_slice(b"{\"type\":\"snapshot\",\"ch\":\"");
    buf.extend_from_slice(tick.channel().name().as_bytes());
    buf.extend_from_slice(b"\",\"cseq\":");
    write_u64(buf, cseq);
    buf.push(b',');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::{Price, SymbolId};

    #[test]
    fn update_is_valid_json_with_every_field() {
        let tick = Tick {
            seq: 1047,
            ingest_ns: 2_000_000,
            ..Tick::quote(SymbolId(0), 1_000_000, Price(1_923_100), 300, Price(1_923_300), 100)
        };
        let mut buf = Vec::new();
        write_update_head(&mut buf, &tick, 9, 6);
        write_tail(
            &mut buf,
            &tick,
            "AAPL",
            Format { time_unit: TimeUnit::Ms, stamps: true, binary: false, bars: false },
            3_000_000,
        );
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        // The message carries exactly the protocol's fields, in the session's unit.
        assert_eq!(
            v,
            serde_json::json!({"type":"q","cseq":9,"cf":6,"sym":"AAPL","seq":1047,"bp":192.31,
                "bs":300,"ap":192.33,"as":100,"t":1,"ti":2,"to":3})
        );
    }
}
