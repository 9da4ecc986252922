//! tickwire's own binary capture format: a recording of normalized ticks
//! that replays zero-copy from a memory map.
//!
//! [`CaptureWriter`] appends blocks of ticks as they arrive (`tickwire
//! record`, `tickwire convert`) and can be killed at any moment: every
//! complete block stays readable. [`CaptureReader`] maps the file, checks
//! each block (crc32, then rkyv validation) and turns its records into
//! [`Tick`]s; it is a [`RecordReader`] for `serve --replay` and offers
//! [`CaptureReader::next_block`] for batch replay. A block that fails its
//! checks is reported as a [`Skip`] with its byte offset and the reader goes
//! on with the next one; nothing in the file can make it panic or allocate
//! more than the file's size. Pacing, sequencing and publication are left
//! to [`crate::feed::replay`] and the feed thread.
//!
//! # Layout (format version 1)
//!
//! All integers little-endian. Offsets in bytes from the start of the file
//! (after gzip decompression for a `.twc.gz`).
//!
//! ```text
//! offset 0   file header, 64 bytes
//!   0  8  magic 89 54 57 43 41 50 0d 0a ("\x89TWCAP\r\n")
//!   8  2  format version (1); a reader refuses a newer one
//!  10  2  header length (64)
//!  12  4  flags: bit 0 = finished (the footer exists); other bits reserved
//!  16  8  footer offset (0 until finished)
//!  24  4  block size the writer used, in ticks (informational)
//!  28  4  reserved, 0
//!  32  8  creation time, ns since the Unix epoch
//!  40 24  reserved, 0
//! offset 64  block frames, each at a multiple of 16
//! ...        footer frame (finished files only), at a multiple of 16
//!
//! frame = frame header (48 bytes) + archive (len bytes) + zero padding to 16
//!   0  8  sync marker: b1 54 57 42 4c 4b 0d 0a ("\xb1TWBLK\r\n") for a block,
//!                      b1 54 57 45 4e 44 0d 0a ("\xb1TWEND\r\n") for the footer
//!   8  4  len: archive length in bytes (padding excluded)
//!  12  4  count: ticks in the block; blocks in the footer
//!  16  4  crc32 (IEEE) of the archive bytes
//!  20  4  reserved, 0
//!  24  8  earliest src_ns (u64::MAX if none)
//!  32  8  latest src_ns (0 if none)
//!  40  4  reserved, 0
//!  44  4  crc32 of frame-header bytes 0..44
//! ```
//!
//! The archive starts at frame offset + 48, a multiple of 16, and is an
//! rkyv 0.8 archive (default format: little-endian, aligned, 32-bit
//! relative pointers; root at the end) of:
//!
//! ```text
//! block:  BlockBody  { sym_base: u32, new_symbols: Vec<String>, ticks: Vec<Rec> }
//!         Rec        { src_ns: u64, p1: i64, p2: i64, sym: u32, s1: u32, s2: u32,
//!                      kind: Kind (u8: 0 Quote, 1 Trade) }          (40 bytes)
//!         quote: p1/s1 = bid price/size, p2/s2 = ask; trade: p1/s1 = price/size,
//!         p2 = s2 = 0. Prices fixed point with 4 decimals, as in `Price`.
//!         `sym` indexes the file's symbol table; `new_symbols` are the names
//!         first used in this block, with file indices sym_base, sym_base+1...
//! footer: FooterBody { symbols: Vec<String>, per_symbol: Vec<KindCounts>,
//!                      blocks: Vec<BlockEntry> }
//!         KindCounts { quotes: u64, trades: u64 }        (per file symbol)
//!         BlockEntry { at: u64, ticks: u32, len: u32, min_src_ns: u64, max_src_ns: u64 }
//! ```
//!
//! # Writing and crash safety
//!
//! The header (unfinished) is written first; each block goes out with two
//! `write` calls (frame header, archive) when it reaches its size or on
//! [`CaptureWriter::flush_block`]. A killed process loses at most the block
//! in memory and leaves at worst a partial block at the end. `finish`
//! appends the footer, *then* patches the header (finished flag, footer
//! offset) and syncs, so a kill between the two leaves a valid unfinished
//! file. Writes reach the page cache, not the disk: a power loss can lose
//! more than a kill (only `finish` calls `fsync`).
//!
//! # Reading
//!
//! A finished file with a valid footer is opened from the footer alone (the
//! full symbol table, the counts and the block index); its blocks are
//! checked as they are replayed (or all at once by
//! [`CaptureReader::verify`]). Any other file (unfinished, or a footer that
//! fails its checks) is scanned from offset 64 at open: a frame whose header
//! crc fails is reported and the reader looks for the next sync marker at
//! 16-byte offsets; a block whose crc or rkyv validation fails is reported
//! and skipped; a block cut off by the end of the file is reported once.
//! Ticks of a symbol whose introducing block was lost (unfinished file
//! only: a footer names every symbol) are dropped and reported with the
//! block that carried them.

mod format;
mod mmap;

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use rkyv::Serialize;
use rkyv::rancor::{self, Failure};
use rkyv::ser::allocator::{Arena, ArenaHandle};
use rkyv::string::ArchivedString;
use rkyv::util::AlignedVec;
use rkyv::vec::ArchivedVec;

use crate::record_reader::{RecordReader, Skip};
use crate::tick::{Body, Price, SymbolId, SymbolTable, Tick, now_ns, valid_symbol};
use format::{
    ALIGN, ArchivedBlockBody, ArchivedFooterBody, ArchivedKind, BLOCK_MAGIC, BlockBody, BlockEntry,
    FLAG_FINISHED, FOOTER_MAGIC, FRAME_LEN, FileHeader, FooterBody, Frame, HEADER_LEN, Kind,
    KindCounts, MAGIC, Rec, VERSION, align_up,
};

/// The creation time written in a new file's header: now, or
/// `SOURCE_DATE_EPOCH` (seconds) when set, so that regenerated sample files
/// are identical byte for byte (the reproducible-builds convention).
fn created_ns() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(now_ns, |secs| secs.saturating_mul(1_000_000_000))
}

/// The file extension suggested for captures (`.twc`, `.twc.gz` when
/// compressed). Readers never rely on it: see [`is_capture`].
pub const EXTENSION: &str = "twc";

/// Whether `head` (the first bytes of a file, decompressed) starts like a
/// capture. Eight bytes are enough to decide.
pub fn is_capture(head: &[u8]) -> bool {
    head.starts_with(&MAGIC)
}

/// Block size used by [`CaptureWriter::create`].
pub const DEFAULT_BLOCK_TICKS: usize = 4096;

/// Largest block accepted by [`CaptureConfig`] (40 MiB of records).
const MAX_BLOCK_TICKS: usize = 1 << 20;

/// Options of a [`CaptureWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Ticks per block. The default, 4096 (about 160 KiB of records), makes
    /// per-block costs (a crc pass, two `write` calls, one validation, one
    /// frame header) negligible per tick; smaller blocks lose less on a
    /// kill and report corruption at a finer grain, at more overhead.
    /// Clamped to 1..=1,048,576.
    pub block_ticks: usize,
}

impl Default for CaptureConfig {
    fn default() -> CaptureConfig {
        CaptureConfig { block_ticks: DEFAULT_BLOCK_TICKS }
    }
}

/// What [`CaptureWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSummary {
    /// Quotes written.
    pub quotes: u64,
    /// Trades written.
    pub trades: u64,
    /// Distinct symbols.
    pub symbols: usize,
    /// Blocks written.
    pub blocks: usize,
    /// File size in bytes.
    pub bytes: u64,
    /// Earliest and latest `src_ns`; `None` for an empty capture.
    pub time_range: Option<(u64, u64)>,
}

impl CaptureSummary {
    /// Ticks written.
    pub fn ticks(&self) -> u64 {
        self.quotes + self.trades
    }
}

/// Marks a symbol id the file does not know yet in
/// [`CaptureWriter::file_index`].
const NOT_IN_FILE: u32 = u32::MAX;

/// Writes a capture incrementally (layout in the [module docs](self)).
///
/// Dropping a writer without [`finish`](CaptureWriter::finish) writes the
/// block in progress (errors ignored, as `BufWriter` does) and leaves an
/// unfinished but readable file.
pub struct CaptureWriter {
    file: File,
    table: Arc<SymbolTable>,
    header: FileHeader,
    block_ticks: usize,
    /// File index of every [`SymbolId`] seen, by id ([`NOT_IN_FILE`] for the
    /// others): symbols are numbered in order of first appearance in the
    /// file, independent of the table the ids came from.
    file_index: Vec<u32>,
    /// Names by file index.
    names: Vec<Arc<str>>,
    /// Ticks by file index and kind (for the footer).
    per_symbol: Vec<KindCounts>,
    /// The block in progress.
    body: BlockBody,
    /// Earliest and latest `src_ns` of the block in progress.
    block_range: (u64, u64),
    /// Blocks written so far (the footer's index).
    blocks: Vec<BlockEntry>,
    /// Offset of the next frame.
    pos: u64,
    /// rkyv's scratch allocator and the output buffer, reused per block.
    arena: Arena,
    buf: AlignedVec,
    /// A write failed: the file may hold a partial frame and `pos` is not to
    /// be trusted, so every later call fails.
    failed: bool,
    /// `finish` ran (nothing left for `Drop`).
    finished: bool,
}

impl CaptureWriter {
    /// Creates (or truncates) `path` and writes an unfinished header.
    /// Symbol names are taken from `table` when a tick first uses them.
    pub fn create(path: &Path, table: Arc<SymbolTable>) -> io::Result<CaptureWriter> {
        CaptureWriter::create_with(path, table, CaptureConfig::default())
    }

    /// [`create`](CaptureWriter::create) with options.
    pub fn create_with(
        path: &Path,
        table: Arc<SymbolTable>,
        config: CaptureConfig,
    ) -> io::Result<CaptureWriter> {
        let block_ticks = config.block_ticks.clamp(1, MAX_BLOCK_TICKS);
        let mut file = File::create(path)?;
        let header = FileHeader {
            version: VERSION,
            flags: 0,
            footer_at: 0,
            block_ticks: block_ticks as u32,
            created_ns: created_ns(),
        };
        file.write_all(&header.encode())?;
        Ok(CaptureWriter {
            file,
            table,
            header,
            block_ticks,
            file_index: Vec::new(),
            names: Vec::new(),
            per_symbol: Vec::new(),
            body: BlockBody {
                sym_base: 0,
                new_symbols: Vec::new(),
                ticks: Vec::with_capacity(block_ticks),
            },
            block_range: (u64::MAX, 0),
            blocks: Vec::new(),
            pos: HEADER_LEN as u64,
            arena: Arena::new(),
            buf: AlignedVec::new(),
            failed: false,
            finished: false,
        })
    }

    /// Appends a tick to the block in progress, writing the block out when
    /// it is full. `seq` and `ingest_ns` are not recorded.
    ///
    /// Hot path: no allocation except for a symbol's first tick.
    pub fn push(&mut self, tick: &Tick) -> io::Result<()> {
        if self.failed {
            return Err(failed_earlier());
        }
        let sym = match self.file_index.get(tick.sym.index()) {
            Some(&i) if i != NOT_IN_FILE => i,
            _ => self.add_symbol(tick.sym)?,
        };
        let (kind, p1, p2, s1, s2) = match tick.body {
            Body::Quote { bid, bid_size, ask, ask_size } => {
                (Kind::Quote, bid.0, ask.0, bid_size, ask_size)
            }
            Body::Trade { price, size } => (Kind::Trade, price.0, 0, size, 0),
            // Bars are built from the trades on every replay: not recorded.
            Body::Bar(_) => return Ok(()),
        };
        let counts = &mut self.per_symbol[sym as usize];
        match kind {
            Kind::Quote => counts.quotes += 1,
            Kind::Trade => counts.trades += 1,
        }
        let (lo, hi) = &mut self.block_range;
        *lo = (*lo).min(tick.src_ns);
        *hi = (*hi).max(tick.src_ns);
        self.body.ticks.push(Rec { src_ns: tick.src_ns, p1, p2, sym, s1, s2, kind });
        if self.body.ticks.len() >= self.block_ticks {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Gives `id` the next file index and queues its name for the block in
    /// progress.
    fn add_symbol(&mut self, id: SymbolId) -> io::Result<u32> {
        let name = self.table.name(id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("symbol id {} is not in the writer's symbol table", id.0),
            )
        })?;
        let index = u32::try_from(self.names.len())
            .ok()
            .filter(|&i| i != NOT_IN_FILE)
            .ok_or_else(|| io::Error::other("too many symbols for one capture"))?;
        if self.file_index.len() <= id.index() {
            self.file_index.resize(id.index() + 1, NOT_IN_FILE);
        }
        self.file_index[id.index()] = index;
        self.body.new_symbols.push(name.to_string());
        self.names.push(name);
        self.per_symbol.push(KindCounts::default());
        Ok(index)
    }

    /// Writes the block in progress, if it holds any tick. The recorder
    /// calls this periodically so that a kill loses little.
    pub fn flush_block(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(failed_earlier());
        }
        if self.body.ticks.is_empty() {
            return Ok(());
        }
        let count = self.body.ticks.len() as u32;
        let (min, max) = self.block_range;
        let at = self.pos;
        let written = write_frame(
            &mut self.file,
            &mut self.buf,
            &mut self.arena,
            (BLOCK_MAGIC, count, min, max),
            &self.body,
        );
        let (total, len) = written.inspect_err(|_| self.failed = true)?;
        self.blocks.push(BlockEntry { at, ticks: count, len, min_src_ns: min, max_src_ns: max });
        self.pos += total;
        self.body.sym_base = self.names.len() as u32;
        self.body.new_symbols.clear();
        self.body.ticks.clear();
        self.block_range = (u64::MAX, 0);
        Ok(())
    }

    /// Writes the last block, the footer and the finished header, and syncs
    /// the file to disk.
    pub fn finish(mut self) -> io::Result<CaptureSummary> {
        self.flush_block()?;
        let summary = self.summary();
        let (min, max) = summary.time_range.unwrap_or((u64::MAX, 0));
        let footer = FooterBody {
            symbols: self.names.iter().map(|n| n.to_string()).collect(),
            per_symbol: self.per_symbol.clone(),
            blocks: self.blocks.clone(),
        };
        let footer_at = self.pos;
        let written = write_frame(
            &mut self.file,
            &mut self.buf,
            &mut self.arena,
            (FOOTER_MAGIC, self.blocks.len() as u32, min, max),
            &footer,
        );
        let (total, _) = written.inspect_err(|_| self.failed = true)?;
        self.pos += total;
        self.header.flags |= FLAG_FINISHED;
        self.header.footer_at = footer_at;
        self.finished = true;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&self.header.encode())?;
        self.file.sync_all()?;
        Ok(CaptureSummary { bytes: self.pos, ..summary })
    }

    /// Counts of what has been pushed so far (the block in progress
    /// included).
    pub fn summary(&self) -> CaptureSummary {
        let quotes = self.per_symbol.iter().map(|c| c.quotes).sum();
        let trades = self.per_symbol.iter().map(|c| c.trades).sum();
        let (mut min, mut max) = self.block_range;
        for b in &self.blocks {
            min = min.min(b.min_src_ns);
            max = max.max(b.max_src_ns);
        }
        CaptureSummary {
            quotes,
            trades,
            symbols: self.names.len(),
            blocks: self.blocks.len(),
            bytes: self.pos,
            time_range: (min <= max).then_some((min, max)),
        }
    }
}

impl Drop for CaptureWriter {
    fn drop(&mut self) {
        if !self.finished && !self.failed {
            let _ = self.flush_block();
        }
    }
}

fn failed_earlier() -> io::Error {
    io::Error::other("an earlier write to this capture failed; the file ends before that point")
}

/// Serializes `value` into `buf` and writes one frame (header, archive,
/// padding) at the file's current position. Returns the bytes written and
/// the archive length.
fn write_frame<T>(
    file: &mut File,
    buf: &mut AlignedVec,
    arena: &mut Arena,
    (magic, count, min_src_ns, max_src_ns): ([u8; 8], u32, u64, u64),
    value: &T,
) -> io::Result<(u64, u32)>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>,
    >,
{
    let mut out = std::mem::take(buf);
    out.clear();
    let mut out =
        rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(value, out, arena.acquire())
            .map_err(io::Error::other)?;
    let len = u32::try_from(out.len()).map_err(|_| io::Error::other("capture frame over 4 GiB"))?;
    let crc = crc32fast::hash(&out);
    let frame = Frame { magic, len, count, crc, min_src_ns, max_src_ns };
    let padded = (align_up((FRAME_LEN + out.len()) as u64) as usize) - FRAME_LEN;
    out.resize(padded, 0);
    let result = file.write_all(&frame.encode()).and_then(|()| file.write_all(&out));
    *buf = out;
    result?;
    Ok(((FRAME_LEN + padded) as u64, len))
}

/// One block's place in the file and what the reader knows about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Offset of the block's frame header.
    pub at: u64,
    /// Frame header plus archive, in bytes (padding excluded): the block is
    /// complete in a file of at least `at + bytes` bytes.
    pub bytes: u64,
    /// Ticks in the block.
    pub ticks: u32,
    /// Earliest and latest `src_ns` in the block.
    pub time_range: (u64, u64),
}

/// Ticks of one symbol, for [`CaptureInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolStats {
    /// The symbol.
    pub name: Arc<str>,
    /// Quotes recorded.
    pub quotes: u64,
    /// Trades recorded.
    pub trades: u64,
}

/// What `tickwire inspect` shows about a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureInfo {
    /// Format version of the file.
    pub version: u16,
    /// The writer finished the file and its footer is valid (counts and
    /// symbols come from the footer; blocks are checked when replayed or
    /// by [`CaptureReader::verify`]).
    pub finished: bool,
    /// The writer's block size, in ticks.
    pub block_ticks: u32,
    /// When the file was created, ns since the Unix epoch.
    pub created_ns: u64,
    /// Size of the file (decompressed), in bytes.
    pub bytes: u64,
    /// Earliest and latest `src_ns`; `None` when there is no tick.
    pub time_range: Option<(u64, u64)>,
    /// Quotes in the usable blocks (a finished file: as recorded).
    pub quotes: u64,
    /// Trades, likewise.
    pub trades: u64,
    /// Symbols in file order with their tick counts.
    pub symbols: Vec<SymbolStats>,
    /// Blocks not known to be bad, in file order.
    pub blocks: Vec<BlockInfo>,
    /// Corrupt or partial blocks and an unusable footer, by offset.
    pub problems: Vec<Skip>,
}

impl CaptureInfo {
    /// Quotes plus trades.
    pub fn ticks(&self) -> u64 {
        self.quotes + self.trades
    }
}

/// The bytes of a capture: mapped, or read (and maybe decompressed) into an
/// aligned buffer.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(AlignedVec),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// What the reader knows about a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Listed in the footer, not read yet: check its crc when reading it.
    Unchecked,
    /// Its crc matched once; rkyv still validates it on every access.
    Good,
    /// Unusable, for this reason.
    Bad(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    info: BlockInfo,
    state: State,
}

/// Why a block's symbols could not be learnt because the shared table is
/// full; turned into an error at open.
const TABLE_FULL: &str = "symbol table full";

/// Why ticks were dropped from an otherwise good block.
const LOST_SYMBOL: &str = "ticks of a symbol introduced in a lost block";

/// Why the scan stopped at the end of the file.
const TRUNCATED: &str = "truncated block (file cut off)";

/// The file's symbol table: file index -> id in the shared table.
struct Symbols {
    table: Arc<SymbolTable>,
    ids: Vec<Option<SymbolId>>,
    names: Vec<Option<Arc<str>>>,
    /// Most file indices the file can hold: an archived name takes at least
    /// 8 bytes, so a larger index is garbage and is never allocated for.
    limit: usize,
}

impl Symbols {
    /// Learns `names` as file indices `base..`: all checked first, so a bad
    /// block teaches nothing.
    fn learn(
        &mut self,
        base: u32,
        names: &ArchivedVec<ArchivedString>,
    ) -> Result<(), &'static str> {
        if names.is_empty() {
            return Ok(());
        }
        let base = base as usize;
        let end = base
            .checked_add(names.len())
            .filter(|&e| e <= self.limit)
            .ok_or("symbol index out of range")?;
        for (i, name) in names.iter().enumerate() {
            if !valid_symbol(name.as_str()) {
                return Err("invalid symbol name");
            }
            if let Some(Some(known)) = self.names.get(base + i)
                && **known != *name.as_str()
            {
                return Err("symbol index reused for another name");
            }
        }
        if self.ids.len() < end {
            self.ids.resize(end, None);
            self.names.resize(end, None);
        }
        for (i, name) in names.iter().enumerate() {
            if self.ids[base + i].is_none() {
                let id = self.table.intern(name.as_str()).map_err(|_| TABLE_FULL)?;
                self.ids[base + i] = Some(id);
                self.names[base + i] = Some(Arc::from(name.as_str()));
            }
        }
        Ok(())
    }
}

/// Reads a capture (layout in the [module docs](self)): a [`RecordReader`]
/// with a batch method, [`next_block`](CaptureReader::next_block).
///
/// Ticks come out in file order with `seq` and `ingest_ns` 0 and `src_ns`
/// as recorded.
pub struct CaptureReader {
    bytes: Bytes,
    header: FileHeader,
    /// The footer was valid and is used.
    finished: bool,
    syms: Symbols,
    /// Ticks per file symbol (footer, or counted by the scan).
    per_symbol: Vec<KindCounts>,
    /// Earliest and latest `src_ns`.
    time_range: (u64, u64),
    /// Blocks in file order (the footer's index, or found by the scan,
    /// bad ones included).
    entries: Vec<Entry>,
    footer_problem: Option<Skip>,
    /// Next entry to replay.
    next_entry: usize,
    /// A report owed after the ticks of the last block.
    pending: Option<Skip>,
    /// The block being handed out by `next`, and the position in it.
    buf: Vec<Tick>,
    buf_pos: usize,
}

impl CaptureReader {
    /// Opens a capture: maps it (or reads it into memory when mapping fails
    /// or it is gzip-compressed), checks the header, and learns its symbols
    /// (interning them in `table`) from the footer or by scanning every
    /// block. Errors: unreadable file, not a capture, a newer format
    /// version, or more symbols than `table` has room for.
    pub fn open(path: &Path, table: Arc<SymbolTable>) -> io::Result<CaptureReader> {
        let mut file = File::open(path)?;
        let mut head = [0u8; 2];
        let mut got = 0;
        while got < head.len() {
            match file.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        file.seek(SeekFrom::Start(0))?;
        let bytes = if head[..got] == [0x1f, 0x8b] {
            let mut v = AlignedVec::new();
            let mut gz = flate2::bufread::MultiGzDecoder::new(BufReader::new(file));
            io::copy(&mut gz, &mut v)?;
            Bytes::Owned(v)
        } else {
            match mmap::map(&file) {
                Ok(m) => Bytes::Mapped(m),
                Err(_) => {
                    let mut v = AlignedVec::new();
                    v.reserve(usize::try_from(file.metadata()?.len()).unwrap_or(0));
                    io::copy(&mut file, &mut v)?;
                    Bytes::Owned(v)
                }
            }
        };
        CaptureReader::from_bytes(bytes, table)
    }

    /// A reader over a capture already in memory (for example decompressed
    /// from a stream).
    pub fn from_vec(bytes: AlignedVec, table: Arc<SymbolTable>) -> io::Result<CaptureReader> {
        CaptureReader::from_bytes(Bytes::Owned(bytes), table)
    }

    fn from_bytes(bytes: Bytes, table: Arc<SymbolTable>) -> io::Result<CaptureReader> {
        let header = FileHeader::decode(bytes.as_slice())?;
        let limit = bytes.as_slice().len() / 8;
        let mut r = CaptureReader {
            bytes,
            header,
            finished: false,
            syms: Symbols { table, ids: Vec::new(), names: Vec::new(), limit },
            per_symbol: Vec::new(),
            time_range: (u64::MAX, 0),
            entries: Vec::new(),
            footer_problem: None,
            next_entry: 0,
            pending: None,
            buf: Vec::new(),
            buf_pos: 0,
        };
        if header.flags & FLAG_FINISHED != 0 {
            match r.load_footer() {
                Ok(()) => {
                    r.finished = true;
                    return Ok(r);
                }
                Err(TABLE_FULL) => return Err(table_full(&r.syms.table)),
                Err(why) => r.footer_problem = Some(Skip { at: header.footer_at, why }),
            }
        }
        r.scan()?;
        Ok(r)
    }

    /// Reads the footer the header points at. Everything is checked before
    /// anything is learnt.
    fn load_footer(&mut self) -> Result<(), &'static str> {
        let data = self.bytes.as_slice();
        let at = self.header.footer_at;
        if at < HEADER_LEN as u64 || !at.is_multiple_of(ALIGN) {
            return Err("footer offset in the header is invalid");
        }
        let rest = usize::try_from(at)
            .ok()
            .and_then(|a| data.get(a..))
            .filter(|r| !r.is_empty())
            .ok_or("footer missing (file cut off)")?;
        let frame = Frame::decode(rest).ok_or("footer frame header corrupt or cut off")?;
        if frame.magic != FOOTER_MAGIC {
            return Err("no footer at the offset in the header");
        }
        let payload =
            rest.get(FRAME_LEN..FRAME_LEN + frame.len as usize).ok_or("footer cut off")?;
        if !crc_ok(payload, frame.crc) {
            return Err("footer checksum mismatch");
        }
        let footer = rkyv::access::<ArchivedFooterBody, Failure>(payload)
            .map_err(|_| "footer failed rkyv validation")?;
        // The per-symbol counts must add up to the ticks of the indexed
        // blocks (so that no sum of them can overflow either).
        let counted = footer.per_symbol.iter().try_fold(0u64, |n, c| {
            n.checked_add(c.quotes.to_native())?.checked_add(c.trades.to_native())
        });
        let indexed =
            footer.blocks.iter().fold(0u64, |n, b| n.saturating_add(b.ticks.to_native().into()));
        if footer.per_symbol.len() != footer.symbols.len() || counted != Some(indexed) {
            return Err("footer symbol counts inconsistent");
        }
        let mut min_next = HEADER_LEN as u64;
        for b in footer.blocks.iter() {
            let (a, len) = (b.at.to_native(), u64::from(b.len.to_native()));
            if a < min_next || !a.is_multiple_of(ALIGN) || a + FRAME_LEN as u64 + len > at {
                return Err("footer block index inconsistent");
            }
            min_next = a + FRAME_LEN as u64 + len;
        }
        self.syms.learn(0, &footer.symbols)?;
        self.per_symbol = footer
            .per_symbol
            .iter()
            .map(|c| KindCounts { quotes: c.quotes.to_native(), trades: c.trades.to_native() })
            .collect();
        self.entries = footer
            .blocks
            .iter()
            .map(|b| Entry {
                info: BlockInfo {
                    at: b.at.to_native(),
                    bytes: FRAME_LEN as u64 + u64::from(b.len.to_native()),
                    ticks: b.ticks.to_native(),
                    time_range: (b.min_src_ns.to_native(), b.max_src_ns.to_native()),
                },
                state: State::Unchecked,
            })
            .collect();
        self.time_range = (frame.min_src_ns, frame.max_src_ns);
        Ok(())
    }

    /// Walks the frames from offset 64, checking every block and learning
    /// its symbols, and records good and bad blocks.
    fn scan(&mut self) -> io::Result<()> {
        let data = self.bytes.as_slice();
        let len = data.len() as u64;
        // A finished file whose footer is unusable: blocks end at the footer.
        let stop = if self.header.flags & FLAG_FINISHED != 0 { self.header.footer_at } else { 0 };
        let mut pos = HEADER_LEN as u64;
        while pos < len && pos != stop {
            let rest = &data[pos as usize..];
            let bad = |why| Entry {
                info: BlockInfo { at: pos, bytes: 0, ticks: 0, time_range: (u64::MAX, 0) },
                state: State::Bad(why),
            };
            let frame = match Frame::decode(rest) {
                Some(f) if f.magic == FOOTER_MAGIC => break,
                Some(f) if f.magic == BLOCK_MAGIC => f,
                Some(_) | None if rest.len() < FRAME_LEN => {
                    self.entries.push(bad(TRUNCATED));
                    break;
                }
                Some(_) | None => {
                    self.entries.push(bad("corrupt block header"));
                    match resync(data, pos + ALIGN) {
                        Some(next) => {
                            pos = next;
                            continue;
                        }
                        None => break,
                    }
                }
            };
            let end = pos + FRAME_LEN as u64 + u64::from(frame.len);
            if end > len {
                // Cut off, or a length that passed the header crc by chance.
                match resync(data, pos + ALIGN) {
                    Some(next) => {
                        self.entries.push(bad("block length beyond the end of the file"));
                        pos = next;
                        continue;
                    }
                    None => {
                        self.entries.push(bad(TRUNCATED));
                        break;
                    }
                }
            }
            let checked = load_block(data, pos, true).and_then(|(_, body)| {
                self.syms.learn(body.sym_base.to_native(), &body.new_symbols).map(|()| body)
            });
            match checked {
                Ok(body) => {
                    if self.per_symbol.len() < self.syms.ids.len() {
                        self.per_symbol.resize(self.syms.ids.len(), KindCounts::default());
                    }
                    for r in body.ticks.iter() {
                        if let Some(c) = self.per_symbol.get_mut(r.sym.to_native() as usize) {
                            match r.kind {
                                ArchivedKind::Quote => c.quotes += 1,
                                ArchivedKind::Trade => c.trades += 1,
                            }
                        }
                    }
                    let info = BlockInfo {
                        at: pos,
                        bytes: end - pos,
                        ticks: frame.count,
                        time_range: (frame.min_src_ns, frame.max_src_ns),
                    };
                    self.time_range.0 = self.time_range.0.min(frame.min_src_ns);
                    self.time_range.1 = self.time_range.1.max(frame.max_src_ns);
                    self.entries.push(Entry { info, state: State::Good });
                    pos = align_up(end);
                }
                Err(TABLE_FULL) => return Err(table_full(&self.syms.table)),
                Err(why) => {
                    self.entries.push(bad(why));
                    // The header passed its crc, so its length is probably
                    // right; if no frame follows, look for one.
                    let next = align_up(end);
                    pos = if next >= len || frame_at(data, next) {
                        next
                    } else {
                        match resync(data, pos + ALIGN) {
                            Some(p) => p,
                            None => break,
                        }
                    };
                }
            }
        }
        Ok(())
    }

    /// Appends the next block's ticks to `out`: `Some(Ok(n))` with the
    /// number appended, `Some(Err(skip))` for a block that cannot be used
    /// (`skip.at` is its byte offset), `None` at the end. Ticks `next` has
    /// decoded but not returned yet come first.
    ///
    /// Hot path: one crc pass (first read of a footer-indexed block only),
    /// one rkyv validation and one pass over the records per block; no
    /// allocation once `out` has grown to a block.
    pub fn next_block(&mut self, out: &mut Vec<Tick>) -> Option<Result<usize, Skip>> {
        if self.buf_pos < self.buf.len() {
            let n = self.buf.len() - self.buf_pos;
            out.extend_from_slice(&self.buf[self.buf_pos..]);
            self.buf.clear();
            self.buf_pos = 0;
            return Some(Ok(n));
        }
        if let Some(skip) = self.pending.take() {
            return Some(Err(skip));
        }
        let i = self.next_entry;
        let entry = *self.entries.get(i)?;
        self.next_entry += 1;
        let at = entry.info.at;
        let data = self.bytes.as_slice();
        let checked = match entry.state {
            State::Bad(why) => Err(why),
            state => load_block(data, at, state == State::Unchecked).and_then(|(_, body)| {
                self.syms.learn(body.sym_base.to_native(), &body.new_symbols).map(|()| body)
            }),
        };
        match checked {
            Err(why) => {
                self.entries[i].state = State::Bad(why);
                Some(Err(Skip { at, why }))
            }
            Ok(body) => {
                self.entries[i].state = State::Good;
                let before = out.len();
                if push_ticks(body, &self.syms.ids, out) > 0 {
                    self.pending = Some(Skip { at, why: LOST_SYMBOL });
                }
                Some(Ok(out.len() - before))
            }
        }
    }

    /// Checks every block not checked yet (crc and validation) without
    /// replaying, and returns the updated [`info`](CaptureReader::info).
    pub fn verify(&mut self) -> CaptureInfo {
        let data = self.bytes.as_slice();
        for e in &mut self.entries {
            if e.state == State::Unchecked {
                e.state = match load_block(data, e.info.at, true) {
                    Ok(_) => State::Good,
                    Err(why) => State::Bad(why),
                };
            }
        }
        self.info()
    }

    /// What is known about the file: header, symbols, counts, blocks and
    /// problems (for a finished file, only the blocks read so far have been
    /// checked; see [`verify`](CaptureReader::verify)).
    pub fn info(&self) -> CaptureInfo {
        let mut symbols = Vec::new();
        let (mut quotes, mut trades) = (0, 0);
        for (i, name) in self.syms.names.iter().enumerate() {
            let c = self.per_symbol.get(i).copied().unwrap_or_default();
            quotes += c.quotes;
            trades += c.trades;
            if let Some(name) = name {
                symbols.push(SymbolStats {
                    name: name.clone(),
                    quotes: c.quotes,
                    trades: c.trades,
                });
            }
        }
        let mut problems: Vec<Skip> = self
            .entries
            .iter()
            .filter_map(|e| match e.state {
                State::Bad(why) => Some(Skip { at: e.info.at, why }),
                _ => None,
            })
            .collect();
        problems.extend(self.footer_problem);
        problems.sort_by_key(|s| s.at);
        let (min, max) = self.time_range;
        CaptureInfo {
            version: self.header.version,
            finished: self.finished,
            block_ticks: self.header.block_ticks,
            created_ns: self.header.created_ns,
            bytes: self.bytes.as_slice().len() as u64,
            time_range: (min <= max).then_some((min, max)),
            quotes,
            trades,
            symbols,
            blocks: self
                .entries
                .iter()
                .filter(|e| !matches!(e.state, State::Bad(_)))
                .map(|e| e.info)
                .collect(),
            problems,
        }
    }
}

/// Whether `bytes` have the crc32 `expected`. Always true when built for
/// fuzzing (`cfg(fuzzing)`, set by cargo-fuzz): a fuzzer cannot forge
/// checksums, and would otherwise never get past them to the block and
/// footer logic that must survive any bytes (`fuzz/fuzz_targets/capture_file.rs`).
fn crc_ok(bytes: &[u8], expected: u32) -> bool {
    cfg!(fuzzing) || crc32fast::hash(bytes) == expected
}

fn table_full(table: &SymbolTable) -> io::Error {
    io::Error::other(format!(
        "the capture has more symbols than the symbol table holds ({}); raise --max-symbols",
        table.capacity()
    ))
}

/// Whether a frame with a valid header starts at `at`.
fn frame_at(data: &[u8], at: u64) -> bool {
    usize::try_from(at)
        .ok()
        .and_then(|a| data.get(a..))
        .and_then(Frame::decode)
        .is_some_and(|f| f.magic == BLOCK_MAGIC || f.magic == FOOTER_MAGIC)
}

/// The first offset at or after `from` (rounded up to [`ALIGN`]) where a
/// frame with a valid header starts.
fn resync(data: &[u8], from: u64) -> Option<u64> {
    let mut at = align_up(from);
    while at + FRAME_LEN as u64 <= data.len() as u64 {
        let a = at as usize;
        if (data[a..a + 8] == BLOCK_MAGIC || data[a..a + 8] == FOOTER_MAGIC) && frame_at(data, at) {
            return Some(at);
        }
        at += ALIGN;
    }
    None
}

/// The frame and validated body of the block at `at`, its crc checked if
/// asked.
fn load_block(
    data: &[u8],
    at: u64,
    check_crc: bool,
) -> Result<(Frame, &ArchivedBlockBody), &'static str> {
    let rest = usize::try_from(at)
        .ok()
        .and_then(|a| data.get(a..))
        .ok_or("block offset beyond the end of the file")?;
    let frame = Frame::decode(rest).ok_or(if rest.len() < FRAME_LEN {
        TRUNCATED
    } else {
        "corrupt block header"
    })?;
    if frame.magic != BLOCK_MAGIC {
        return Err("no block at this offset");
    }
    let payload = rest.get(FRAME_LEN..FRAME_LEN + frame.len as usize).ok_or(TRUNCATED)?;
    if check_crc && !crc_ok(payload, frame.crc) {
        return Err("block checksum mismatch");
    }
    let body = rkyv::access::<ArchivedBlockBody, Failure>(payload)
        .map_err(|_| "block failed rkyv validation")?;
    if body.ticks.len() != frame.count as usize {
        return Err("block tick count mismatch");
    }
    Ok((frame, body))
}

/// Converts a block's records to ticks, appended to `out`; returns how many
/// were dropped because their symbol is unknown.
///
/// Hot path: no allocation once `out` has the capacity, one table lookup
/// per record.
fn push_ticks(body: &ArchivedBlockBody, ids: &[Option<SymbolId>], out: &mut Vec<Tick>) -> usize {
    out.reserve(body.ticks.len());
    let mut dropped = 0;
    for r in body.ticks.iter() {
        let Some(&Some(sym)) = ids.get(r.sym.to_native() as usize) else {
            dropped += 1;
            continue;
        };
        let body = match r.kind {
            ArchivedKind::Quote => Body::Quote {
                bid: Price(r.p1.to_native()),
                bid_size: r.s1.to_native(),
                ask: Price(r.p2.to_native()),
                ask_size: r.s2.to_native(),
            },
            ArchivedKind::Trade => {
                Body::Trade { price: Price(r.p1.to_native()), size: r.s1.to_native() }
            }
        };
        out.push(Tick { sym, seq: 0, src_ns: r.src_ns.to_native(), ingest_ns: 0, body });
    }
    dropped
}

impl RecordReader for CaptureReader {
    fn next(&mut self) -> Option<Result<Tick, Skip>> {
        loop {
            if let Some(&t) = self.buf.get(self.buf_pos) {
                self.buf_pos += 1;
                return Some(Ok(t));
            }
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            self.buf_pos = 0;
            let got = self.next_block(&mut buf);
            self.buf = buf;
            match got? {
                Ok(_) => {}
                Err(skip) => return Some(Err(skip)),
            }
        }
    }

    fn details(&self) -> Vec<(String, u64)> {
        let info = self.info();
        vec![
            ("format version".into(), u64::from(info.version)),
            ("finished".into(), u64::from(info.finished)),
            ("blocks".into(), info.blocks.len() as u64),
            ("block size (ticks)".into(), u64::from(info.block_ticks)),
            ("bad blocks".into(), info.problems.len() as u64),
        ]
    }

    fn rewind(&mut self) -> io::Result<()> {
        self.next_entry = 0;
        self.pending = None;
        self.buf.clear();
        self.buf_pos = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
