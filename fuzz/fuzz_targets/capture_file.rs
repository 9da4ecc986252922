//! A capture file (`capture::CaptureReader::from_vec`) made of any bytes:
//! open it, read every record, then `info()` and `verify()`. Oracle: the
//! batch path (`next_block`) yields the same ticks as the record path
//! (`next`), and `info()` counts no more ticks than the file's blocks hold.
//!
//! Under `cfg(fuzzing)` the capture reader does not check crc32s (see
//! `capture::crc_ok`): otherwise nearly every mutation would stop at a
//! checksum and the fuzzer would never reach the block and footer logic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;
use tickwire::capture::CaptureReader;
use tickwire::record_reader::RecordReader;
use tickwire::tick::{SymbolTable, Tick};

fuzz_target!(|data: &[u8]| {
    let bytes = || {
        let mut v = AlignedVec::<16>::with_capacity(data.len());
        v.extend_from_slice(data);
        v
    };
    let table = Arc::new(SymbolTable::new(1 << 16));
    let Ok(mut records) = CaptureReader::from_vec(bytes(), table.clone()) else { return };
    let mut by_record: Vec<Tick> = Vec::new();
    while let Some(r) = records.next() {
        if let Ok(t) = r {
            by_record.push(t);
        }
    }
    let info = records.info();
    let _ = records.verify();
    let _ = records.rewind();

    let mut blocks = CaptureReader::from_vec(bytes(), table).expect("opened once already");
    let mut by_block: Vec<Tick> = Vec::new();
    while let Some(r) = blocks.next_block(&mut by_block) {
        let _ = r;
    }
    assert_eq!(by_record, by_block, "next and next_block disagree");
    let _ = info.ticks();
});
