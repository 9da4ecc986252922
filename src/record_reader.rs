//! What every reader of a recorded feed file shares: the [`RecordReader`]
//! trait that JSON lines ([`crate::feed::jsonl`]), NASDAQ ITCH 5.0
//! ([`crate::feed::itch`]) and captures ([`crate::capture`]) implement, the
//! [`Skip`] they report for a record they cannot use, and [`open_input`],
//! which opens a file and decompresses it when it is gzip.
//!
//! It sits below all of them (it knows only [`crate::tick`]), so that a
//! format module never imports the replay that dispatches on it
//! ([`crate::feed::replay`]), and the replay, `tickwire convert` and
//! `inspect` reach every format through the one trait.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::tick::Tick;

/// A record that could not be used: where and why. Skipped and counted
/// (`tickwire_feed_bad_records_total`), never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skip {
    /// Position of the record: the line number in JSON lines, the byte
    /// offset of the block in a capture, the byte offset of the frame in
    /// (decompressed) ITCH.
    pub at: u64,
    /// What was wrong with it.
    pub why: &'static str,
}

/// A reader of one recorded-feed format, yielding normalized ticks in file
/// order (symbols interned in the table it was built with; `seq` and
/// `ingest_ns` left at 0; `src_ns` the record's own time, as UTC ns since
/// the Unix epoch).
pub trait RecordReader: Send {
    /// The next record; `None` at the end of the file.
    fn next(&mut self) -> Option<Result<Tick, Skip>>;

    /// Starts again from the first record.
    fn rewind(&mut self) -> io::Result<()>;

    /// Appends the ticks of up to `max` more records to `out` and counts
    /// the skipped ones in `skipped`; returns `false` once the file has
    /// ended. The default calls [`RecordReader::next`] in a loop; being a
    /// default method, it is compiled for each reader, so the per-record
    /// call is static (the replay calls this once per batch through the
    /// trait object, not once per record).
    fn read_batch(&mut self, out: &mut Vec<Tick>, max: usize, skipped: &mut u64) -> bool {
        for _ in 0..max {
            match self.next() {
                Some(Ok(t)) => out.push(t),
                Some(Err(skip)) => {
                    tracing::debug!(at = skip.at, why = skip.why, "skipped a feed record");
                    *skipped += 1;
                }
                None => return false,
            }
        }
        true
    }

    /// Bytes of the file consumed so far (compressed bytes for a compressed
    /// file), for progress bars; 0 when the reader cannot tell.
    fn bytes_read(&self) -> u64 {
        0
    }

    /// The UTC time (ns since the Unix epoch) of the midnight that the
    /// file's times of day count from, when that is not a UTC midnight:
    /// for ITCH, midnight in New York on the file's trading day. `None`:
    /// times of day are UTC (`--from`/`--to` read them so).
    fn local_midnight_ns(&self) -> Option<u64> {
        None
    }

    /// Format-specific counts for `tickwire inspect` (for ITCH: messages per
    /// type), as (label, count) pairs.
    fn details(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// A reader that counts the bytes read through it into a shared counter.
#[derive(Debug)]
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Opens `path` for buffered reading, decompressing it when it starts with
/// the gzip magic bytes (whatever its name).
pub fn open_input(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    open_input_counted(path).map(|(input, _)| input)
}

/// [`open_input`], plus a counter of the bytes read from the file itself
/// (compressed bytes for a gzip file), for progress reports.
pub fn open_input_counted(path: &Path) -> io::Result<(Box<dyn BufRead + Send>, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let counted = Counting { inner: File::open(path)?, count: count.clone() };
    let mut file = BufReader::with_capacity(1 << 16, counted);
    let head = file.fill_buf()?;
    let input: Box<dyn BufRead + Send> = if head.starts_with(&GZIP_MAGIC) {
        let gz = flate2::bufread::MultiGzDecoder::new(file);
        Box::new(BufReader::with_capacity(1 << 16, gz))
    } else {
        Box::new(file)
    };
    Ok((input, count))
}
