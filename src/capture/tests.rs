//! Round trips, truncation at every offset, corruption and bad files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;

/// A fresh path in the temp directory, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let file = format!("tickwire-capture-{}-{n}-{name}", std::process::id());
        TempPath(std::env::temp_dir().join(file))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn table() -> Arc<SymbolTable> {
    Arc::new(SymbolTable::new(4096))
}

/// `n` ticks over `syms` symbols (interned in `table` as `S0`, `S1`...),
/// quotes and trades mixed, extreme values included.
fn ticks(table: &SymbolTable, n: usize, syms: usize) -> Vec<Tick> {
    let ids: Vec<SymbolId> = (0..syms).map(|i| table.intern(&format!("S{i}")).unwrap()).collect();
    (0..n)
        .map(|i| {
            let sym = ids[(i * 7 + i / 3) % syms];
            let t = 1_764_140_000_000_000_000 + i as u64 * 1_000;
            let x = i as i64;
            match i % 5 {
                0 => Tick::trade(sym, t, Price(1_923_100 + x), (i * 10) as u32),
                1 => Tick::quote(sym, t, Price(i64::MIN + x), u32::MAX, Price(i64::MAX - x), 0),
                _ => Tick::quote(sym, t, Price(1_000_000 - x), 100, Price(1_000_100 + x), 200),
            }
        })
        .collect()
}

/// Writes `ticks` with blocks of `block` ticks; finished or as if killed
/// right after the last block was flushed.
fn write(path: &Path, table: &Arc<SymbolTable>, ticks: &[Tick], block: usize, finish: bool) {
    let config = CaptureConfig { block_ticks: block };
    let mut w = CaptureWriter::create_with(path, table.clone(), config).unwrap();
    for t in ticks {
        w.push(t).unwrap();
    }
    if finish {
        let s = w.finish().unwrap();
        assert_eq!(s.ticks(), ticks.len() as u64);
    } else {
        w.flush_block().unwrap();
        // A kill: no footer, no header patch.
        std::mem::forget(w);
    }
}

/// The bytes of a capture written as [`write`] does.
fn bytes(ticks_: &[Tick], table: &Arc<SymbolTable>, block: usize, finish: bool) -> Vec<u8> {
    let path = TempPath::new("bytes.twc");
    write(&path.0, table, ticks_, block, finish);
    std::fs::read(&path.0).unwrap()
}

fn aligned(b: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::new();
    v.extend_from_slice(b);
    v
}

/// A tick with its symbol as a name, to compare across tables.
type Named = (Arc<str>, u64, Body);

fn named(table: &SymbolTable, ticks: &[Tick]) -> Vec<Named> {
    ticks.iter().map(|t| (table.name(t.sym).unwrap(), t.src_ns, t.body)).collect()
}

/// Everything `next` yields: ticks (named) and skips.
fn read_all(r: &mut CaptureReader, table: &SymbolTable) -> (Vec<Named>, Vec<Skip>) {
    let (mut out, mut skips) = (Vec::new(), Vec::new());
    while let Some(x) = r.next() {
        match x {
            Ok(t) => {
                // Replayed ticks carry only the recorded time.
                assert_eq!((t.seq, t.ingest_ns), (0, 0));
                out.push(t);
            }
            Err(s) => skips.push(s),
        }
    }
    (named(table, &out), skips)
}

/// Everything `next_block` yields.
fn read_blocks(r: &mut CaptureReader, table: &SymbolTable) -> (Vec<Named>, Vec<Skip>) {
    let (mut out, mut skips) = (Vec::new(), Vec::new());
    while let Some(x) = r.next_block(&mut out) {
        if let Err(s) = x {
            skips.push(s);
        }
    }
    (named(table, &out), skips)
}

#[test]
fn round_trip_many_symbols_several_blocks() {
    let wt = table();
    let src = ticks(&wt, 10_000, 300);
    for finish in [true, false] {
        let path = TempPath::new("rt.twc");
        write(&path.0, &wt, &src, 1000, finish);
        let rt = table();
        let mut r = CaptureReader::open(&path.0, rt.clone()).unwrap();
        let info = r.info();
        // The footer is used exactly when the writer finished.
        assert_eq!(info.finished, finish);
        assert_eq!((info.ticks(), info.blocks.len(), info.symbols.len()), (10_000, 10, 300));
        assert!(info.problems.is_empty());
        // Counts by kind and symbol match the input.
        let trades = src.iter().filter(|t| matches!(t.body, Body::Trade { .. })).count();
        assert_eq!(info.trades, trades as u64);
        let s7 = &info.symbols.iter().find(|s| &*s.name == "S7").unwrap();
        let s7_in = src.iter().filter(|t| &*wt.name(t.sym).unwrap() == "S7").count();
        assert_eq!(s7.quotes + s7.trades, s7_in as u64);
        assert_eq!(info.time_range, Some((src[0].src_ns, src[9_999].src_ns)));
        // Values, order and symbols are identical, through both APIs and
        // again after a rewind.
        let want = named(&wt, &src);
        assert_eq!(read_all(&mut r, &rt), (want.clone(), vec![]));
        r.rewind().unwrap();
        assert_eq!(read_blocks(&mut r, &rt), (want.clone(), vec![]));
        r.rewind().unwrap();
        assert_eq!(read_all(&mut r, &rt).0, want);
        // Every symbol was interned at open, before any tick was read.
        assert_eq!(rt.len(), 300);
    }
}

#[test]
fn next_and_next_block_can_be_mixed() {
    let wt = table();
    let src = ticks(&wt, 50, 3);
    let mut r = CaptureReader::from_vec(aligned(&bytes(&src, &wt, 20, true)), wt.clone()).unwrap();
    let first = r.next().unwrap().unwrap();
    let mut out = vec![first];
    // The rest of the first block comes first, then whole blocks.
    assert_eq!(r.next_block(&mut out), Some(Ok(19)));
    assert_eq!(r.next_block(&mut out), Some(Ok(20)));
    assert_eq!(r.next_block(&mut out), Some(Ok(10)));
    assert_eq!(r.next_block(&mut out), None);
    assert_eq!(out, src);
}

#[test]
fn truncated_at_every_offset_replays_the_complete_blocks() {
    let wt = table();
    let src = ticks(&wt, 23, 4);
    for finish in [false, true] {
        let full = bytes(&src, &wt, 4, finish);
        let whole = CaptureReader::from_vec(aligned(&full), table()).unwrap();
        let blocks = whole.info().blocks;
        assert_eq!(blocks.len(), 6);
        // Where the footer's archive ends (its padding may be cut).
        let f_at = whole.header.footer_at as usize;
        let footer_end =
            f_at + FRAME_LEN + Frame::decode(&full[f_at..]).map_or(0, |f| f.len as usize);
        for cut in 0..=full.len() {
            let rt = table();
            let r = CaptureReader::from_vec(aligned(&full[..cut]), rt.clone());
            if cut < HEADER_LEN {
                // Not even a header: a clear error, no panic.
                assert_eq!(r.err().unwrap().kind(), io::ErrorKind::InvalidData, "cut {cut}");
                continue;
            }
            let mut r = r.unwrap();
            let (got, skips) = read_all(&mut r, &rt);
            // Exactly the ticks of the blocks that are complete.
            let complete = blocks.iter().filter(|b| b.at + b.bytes <= cut as u64);
            let n: usize = complete.map(|b| b.ticks as usize).sum();
            assert_eq!(got, named(&wt, &src[..n]), "cut {cut}");
            // The partial block, if any, is reported once with its offset.
            let partial = blocks.iter().find(|b| b.at + b.bytes > cut as u64 && b.at < cut as u64);
            let want: Vec<u64> = partial.map(|b| b.at).into_iter().collect();
            assert_eq!(skips.iter().map(|s| s.at).collect::<Vec<_>>(), want, "cut {cut}");
            assert!(skips.iter().all(|s| s.why == TRUNCATED));
            // Only a finished file with its whole footer uses it.
            assert_eq!(r.info().finished, finish && cut >= footer_end, "cut {cut}");
        }
    }
}

/// Flips one byte at `off` of a copy of `b`.
fn flipped(b: &[u8], off: u64) -> Vec<u8> {
    let mut c = b.to_vec();
    c[off as usize] ^= 0x40;
    c
}

#[test]
fn flipped_payload_byte_skips_that_block_only() {
    let wt = table();
    // Three symbols, all introduced by block 0: losing block 2 loses no name.
    let src = ticks(&wt, 50, 3);
    for finish in [false, true] {
        let full = bytes(&src, &wt, 10, finish);
        let blocks = CaptureReader::from_vec(aligned(&full), table()).unwrap().info().blocks;
        let bad = blocks[2];
        let rt = table();
        let c = flipped(&full, bad.at + FRAME_LEN as u64 + 100);
        let mut r = CaptureReader::from_vec(aligned(&c), rt.clone()).unwrap();
        let (got, skips) = read_all(&mut r, &rt);
        // The block is reported with its offset...
        assert_eq!(skips, vec![Skip { at: bad.at, why: "block checksum mismatch" }]);
        // ...and every other block is replayed, in order.
        let mut want = named(&wt, &src[..20]);
        want.extend(named(&wt, &src[30..]));
        assert_eq!(got, want);
        // inspect sees it too.
        assert_eq!(r.verify().problems, skips);
    }
}

#[test]
fn a_lost_block_loses_its_symbols_only_without_a_footer() {
    let wt = table();
    let src = ticks(&wt, 40, 4);
    for finish in [false, true] {
        let full = bytes(&src, &wt, 10, finish);
        let blocks = CaptureReader::from_vec(aligned(&full), table()).unwrap().info().blocks;
        let rt = table();
        // Block 0 introduced every symbol.
        let c = flipped(&full, blocks[0].at + FRAME_LEN as u64 + 20);
        let mut r = CaptureReader::from_vec(aligned(&c), rt.clone()).unwrap();
        let (got, skips) = read_all(&mut r, &rt);
        assert_eq!(skips[0], Skip { at: blocks[0].at, why: "block checksum mismatch" });
        if finish {
            // The footer names every symbol: blocks 1.. replay in full.
            assert_eq!(got, named(&wt, &src[10..]));
            assert_eq!(skips.len(), 1);
        } else {
            // Without it, ticks of the unnamed symbols are dropped and each
            // block that had some is reported.
            assert!(got.is_empty());
            let at: Vec<u64> = blocks[1..].iter().map(|b| b.at).collect();
            assert_eq!(skips[1..].iter().map(|s| s.at).collect::<Vec<_>>(), at);
            assert!(skips[1..].iter().all(|s| s.why == LOST_SYMBOL));
        }
    }
}

/// Overwrites the length of the frame at `at` and re-seals its header crc,
/// so the header looks sane and only the length is garbage.
fn with_length(b: &[u8], at: u64, len: u32) -> Vec<u8> {
    let mut c = b.to_vec();
    let a = at as usize;
    let mut f = Frame::decode(&c[a..]).unwrap();
    f.len = len;
    c[a..a + FRAME_LEN].copy_from_slice(&f.encode());
    c
}

#[test]
fn garbage_length_is_survived() {
    let wt = table();
    let src = ticks(&wt, 50, 3);
    for finish in [false, true] {
        let full = bytes(&src, &wt, 10, finish);
        let blocks = CaptureReader::from_vec(aligned(&full), table()).unwrap().info().blocks;
        let b1 = blocks[1].at;
        let cases = [
            // A length field hit by noise: the header crc catches it.
            flipped(&full, b1 + 10),
            // A sealed header with a huge length: never allocated, never read.
            with_length(&full, b1, u32::MAX - 15),
            // A sealed header with a too-short length.
            with_length(&full, b1, 64),
        ];
        for (k, c) in cases.iter().enumerate() {
            let rt = table();
            let mut r = CaptureReader::from_vec(aligned(c), rt.clone()).unwrap();
            let (got, skips) = read_all(&mut r, &rt);
            // Block 1 is reported, blocks 0 and 2.. replay.
            assert_eq!(skips.iter().map(|s| s.at).collect::<Vec<_>>(), [b1], "{k} {finish}");
            let mut want = named(&wt, &src[..10]);
            want.extend(named(&wt, &src[20..]));
            assert_eq!(got, want, "case {k} finish {finish}");
        }
    }
}

#[test]
fn garbage_between_blocks_is_skipped_to_the_next_sync_marker() {
    let wt = table();
    let src = ticks(&wt, 30, 3);
    let full = bytes(&src, &wt, 10, false);
    let blocks = CaptureReader::from_vec(aligned(&full), table()).unwrap().info().blocks;
    // Wipe block 1 entirely, header included.
    let mut c = full.clone();
    c[blocks[1].at as usize..blocks[2].at as usize].fill(0xAB);
    let rt = table();
    let mut r = CaptureReader::from_vec(aligned(&c), rt.clone()).unwrap();
    let (got, skips) = read_all(&mut r, &rt);
    assert_eq!(skips, vec![Skip { at: blocks[1].at, why: "corrupt block header" }]);
    let mut want = named(&wt, &src[..10]);
    want.extend(named(&wt, &src[20..]));
    assert_eq!(got, want);
}

#[test]
fn empty_and_unfinished_files() {
    let t = table();
    // Zero bytes: not a capture, and the error says so.
    let err = CaptureReader::from_vec(AlignedVec::new(), t.clone()).err().unwrap();
    assert!(err.to_string().contains("empty"), "{err}");
    // A recorder killed before its first tick: a valid, empty capture.
    let path = TempPath::new("empty.twc");
    std::mem::forget(CaptureWriter::create(&path.0, t.clone()).unwrap());
    let mut r = CaptureReader::open(&path.0, t.clone()).unwrap();
    assert_eq!(r.next(), None);
    let info = r.info();
    assert!(!info.finished && info.problems.is_empty());
    assert_eq!((info.ticks(), info.time_range, info.version), (0, None, VERSION));
    // Finished without ticks: finished and empty.
    let s = CaptureWriter::create(&path.0, t.clone()).unwrap().finish().unwrap();
    assert_eq!((s.ticks(), s.blocks, s.time_range), (0, 0, None));
    let mut r = CaptureReader::open(&path.0, t.clone()).unwrap();
    assert!(r.info().finished);
    assert_eq!(r.next(), None);
}

#[test]
fn a_dropped_writer_keeps_its_last_block() {
    let wt = table();
    let src = ticks(&wt, 7, 2);
    let path = TempPath::new("drop.twc");
    let mut w = CaptureWriter::create(&path.0, wt.clone()).unwrap();
    for t in &src {
        w.push(t).unwrap();
    }
    drop(w);
    let mut r = CaptureReader::open(&path.0, wt.clone()).unwrap();
    assert_eq!(read_all(&mut r, &wt), (named(&wt, &src), vec![]));
}

#[test]
fn wrong_magic_or_newer_version_is_a_clear_error() {
    let t = table();
    let path = TempPath::new("bad.twc");
    std::fs::write(&path.0, b"{\"type\":\"t\"}\n").unwrap();
    let err = CaptureReader::open(&path.0, t.clone()).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("not a tickwire capture"), "{err}");
    let wt = table();
    let mut b = bytes(&ticks(&wt, 5, 1), &wt, 4, true);
    b[8] = 2;
    let err = CaptureReader::from_vec(aligned(&b), t.clone()).err().unwrap();
    assert!(err.to_string().contains("version 2"), "{err}");
    // Content detection.
    assert!(is_capture(&b));
    assert!(!is_capture(b"{\"type\""));
    assert!(!is_capture(&b[..7]));
}

#[test]
fn a_full_symbol_table_is_an_error_at_open() {
    let wt = table();
    let src = ticks(&wt, 20, 5);
    for finish in [false, true] {
        let b = bytes(&src, &wt, 4, finish);
        let err = CaptureReader::from_vec(aligned(&b), Arc::new(SymbolTable::new(3))).err();
        assert!(err.unwrap().to_string().contains("--max-symbols"));
    }
}

#[test]
fn gzip_compressed_capture_reads_the_same() {
    let wt = table();
    let src = ticks(&wt, 100, 5);
    let raw = bytes(&src, &wt, 16, true);
    let path = TempPath::new("c.twc.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    std::fs::write(&path.0, gz.finish().unwrap()).unwrap();
    let mut r = CaptureReader::open(&path.0, wt.clone()).unwrap();
    assert!(r.info().finished);
    assert_eq!(read_all(&mut r, &wt), (named(&wt, &src), vec![]));
}

#[test]
fn a_tick_with_an_unknown_symbol_is_refused() {
    let path = TempPath::new("unknown.twc");
    let mut w = CaptureWriter::create(&path.0, table()).unwrap();
    let err = w.push(&Tick::trade(SymbolId(3), 1, Price(1), 1)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

fn arb_tick(syms: u32) -> impl Strategy<Value = Tick> {
    let quote = (0..syms, any::<u64>(), any::<i64>(), any::<u32>(), any::<i64>(), any::<u32>())
        .prop_map(|(s, t, b, bs, a, as_)| Tick::quote(SymbolId(s), t, Price(b), bs, Price(a), as_));
    let trade = (0..syms, any::<u64>(), any::<i64>(), any::<u32>())
        .prop_map(|(s, t, p, sz)| Tick::trade(SymbolId(s), t, Price(p), sz));
    prop_oneof![quote, trade]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_ticks_round_trip(
        src in proptest::collection::vec(arb_tick(40), 0..300),
        block in 1usize..50,
        finish in any::<bool>(),
    ) {
        let wt = table();
        for i in 0..40 {
            wt.intern(&format!("P{i}")).unwrap();
        }
        let b = bytes(&src, &wt, block, finish);
        let rt = table();
        let mut r = CaptureReader::from_vec(aligned(&b), rt.clone()).unwrap();
        prop_assert_eq!(read_all(&mut r, &rt), (named(&wt, &src), vec![]));
        let info = r.info();
        prop_assert_eq!(info.ticks(), src.len() as u64);
        prop_assert_eq!(info.blocks.len(), src.len().div_ceil(block));
    }
}

// Regressions found by fuzzing (`fuzz/fuzz_targets/capture_file.rs`). The
// fuzz build skips crc checks (`crc_ok`), so each input is kept as the
// fuzzer wrote it and given valid crcs here, as a crafted file would have.

/// Decodes hex rows into a capture and recomputes the crc of every frame
/// (block or footer) that starts at an aligned offset.
fn crafted(rows: &[&str]) -> Vec<u8> {
    let hex: String = rows.concat();
    let mut b: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut at = HEADER_LEN;
    while at + FRAME_LEN <= b.len() {
        let magic = &b[at..at + 8];
        if magic == BLOCK_MAGIC || magic == FOOTER_MAGIC {
            let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            if let Some(payload) = b.get(at + FRAME_LEN..at + FRAME_LEN + len) {
                let crc = crc32fast::hash(payload);
                b[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
            }
            let crc = crc32fast::hash(&b[at..at + 44]);
            b[at + 44..at + 48].copy_from_slice(&crc.to_le_bytes());
        }
        at += ALIGN as usize;
    }
    b
}

/// A finished capture whose footer claims per-symbol counts that add up to
/// more than `u64::MAX`: `info()` overflowed summing them (a panic in debug
/// builds, a wrapped count in release). The footer's counts must add up to
/// the ticks its block index holds; this one is refused and the blocks are
/// scanned instead.
#[test]
fn fuzz_footer_counts_overflowing_u64_are_refused() {
    let b = crafted(&[
        "8954574341500d0a010040000100000090020000000000000010000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000b15457424c4b0d0a1c0200000c000000584f720500000000",
        "00105341e7947b18289fac44e7947b1800000000d3b60ce354534c41ffffffff535059ffffffffff515151ff",
        "ffffffff4e564441ffffffff414d5a4effffffff00105341e7947b18b4902e00000000007c912e0000000000",
        "0000000014050000dc0500000000000088a47c41e7947b18b4902e00000000007c912e000000000000000000",
        "f4010000400600000000000020e6e341e7947b18d4285d0000000000002a5d000000000001000000b0040000",
        "400600000000000008c06742e7947b1894bb5000000000005cbc50000000000002000000f401000084030000",
        "0000000068aa6842e7947b1838295d0000000000642a5d00000000000100000084030000d007000000000000",
        "801aa942e7947b182caf15000000000058b015000000000003000000bc0200000807000000000000c87cea42",
        "e7947b189c295d00000000000800000000000000010000002c01000000000000010000006800a843e7947b18",
        "2caf15000000000058b01500000000000300000078050000900100004c4b0d0a1c0200000c000000584f7205",
        "0000000000105341e7947b18289fac44e7947b1800000000d3b60ce354534c41ffffffff535059ffffffffff",
        "515151ffffffffff4e564441ffffffff414d5a4effffffff00105341e7947b18b4902e00000000007cb01500",
        "000000000300000058020000a406000000000000289fac44e7947b18acd01e000000000074d11e0000000000",
        "04000000c8000000400600000000000000000000f4fdffff0500000014feffff0c00000000000000b1545745",
        "4e440d0ab0000000010000008fe85b820000000000105341e7947b18289fac44e7947b1800000000097197af",
        "54534c41ffffffff535059ffffffffff515151ffffffffff4e564441ffffffff414d5a4effffffff02000000",
        "0000000000000000000000ff00105341e7947b18b4902e00000000007c912e00000000000000000014050000",
        "dc0500000000000000000000000000000100000000000000000000000000000040000000000000000c000000",
        "1c02000000105341e7947b18289fac44e7947b1868ffffff0500000088ffffff05000000d0ffffff01000000",
    ]);
    let t = table();
    let mut r = CaptureReader::from_vec(aligned(&b), t.clone()).unwrap();
    let (ticks, _) = read_all(&mut r, &t);
    let info = r.info();
    // The footer is reported as unusable...
    assert!(!info.finished);
    assert!(info.problems.iter().any(|p| p.why == "footer symbol counts inconsistent"));
    // ...and the counts are those of the blocks actually read.
    assert_eq!(info.ticks(), ticks.len() as u64);
}
