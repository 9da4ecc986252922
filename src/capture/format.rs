//! The bytes of a capture file: the file header, the frame header in front
//! of every block and of the footer, and the rkyv-archived bodies (layout in
//! the [parent module's docs](super)). Pure encoding and decoding, no I/O:
//! [`super::CaptureWriter`] and [`super::CaptureReader`] decide what to do
//! with a frame that does not check out.

use std::io;

use rkyv::{Archive, Serialize};

/// First 8 bytes of every capture: a non-ASCII byte first (so no text
/// format matches), then `TWCAP`, then CR LF (so a text-mode transfer that
/// rewrote line ends is caught at once), as PNG does.
pub const MAGIC: [u8; 8] = *b"\x89TWCAP\r\n";

/// The format version this code writes and the newest it reads. Bumped for
/// any change a version-1 reader would misread; flags cover compatible
/// additions.
pub const VERSION: u16 = 1;

/// Size of the file header at offset 0.
pub const HEADER_LEN: usize = 64;

/// Size of the frame header in front of every block and of the footer; a
/// multiple of [`ALIGN`] so that the archive behind it is aligned too.
pub const FRAME_LEN: usize = 48;

/// Every frame starts at a multiple of this offset in the file, so every
/// archive is aligned for its widest field (rkyv `aligned` format: `u64`
/// fields need 8) and a scan for the next block only looks at these offsets.
pub const ALIGN: u64 = 16;

/// Sync marker at the start of a block frame.
pub const BLOCK_MAGIC: [u8; 8] = *b"\xb1TWBLK\r\n";

/// Sync marker at the start of the footer frame.
pub const FOOTER_MAGIC: [u8; 8] = *b"\xb1TWEND\r\n";

/// Header flag: the writer finished the file and `footer_at` points at a
/// footer.
pub const FLAG_FINISHED: u32 = 1;

/// Rounds `x` up to a multiple of [`ALIGN`].
pub fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// Little-endian `u16` at `at` (the caller checked the length).
fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Little-endian `u32` at `at` (the caller checked the length).
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Little-endian `u64` at `at` (the caller checked the length).
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

/// The fixed file header at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Format version ([`VERSION`] when written by this code).
    pub version: u16,
    /// [`FLAG_FINISHED`] and reserved bits (ignored when unknown).
    pub flags: u32,
    /// Offset of the footer frame, 0 until the file is finished.
    pub footer_at: u64,
    /// The writer's block size in ticks (informational).
    pub block_ticks: u32,
    /// Wall-clock time the file was created, ns since the Unix epoch.
    pub created_ns: u64,
}

impl FileHeader {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.footer_at.to_le_bytes());
        b[24..28].copy_from_slice(&self.block_ticks.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ns.to_le_bytes());
        b
    }

    /// Parses the start of a file. A wrong magic, a short file or a version
    /// this code cannot read is an `InvalidData` error saying which.
    pub fn decode(b: &[u8]) -> io::Result<FileHeader> {
        let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
        if b.is_empty() {
            return Err(bad("empty file, not a tickwire capture".into()));
        }
        if !b.starts_with(&MAGIC[..b.len().min(MAGIC.len())]) {
            return Err(bad("not a tickwire capture (wrong magic bytes)".into()));
        }
        if b.len() < HEADER_LEN {
            return Err(bad(format!(
                "truncated tickwire capture: {} bytes, shorter than the {HEADER_LEN}-byte header",
                b.len()
            )));
        }
        let version = le16(b, 8);
        if version == 0 || version > VERSION {
            return Err(bad(format!(
                "capture format version {version} is not supported: this tickwire reads \
                 versions 1 to {VERSION} (a newer tickwire wrote it? upgrade)"
            )));
        }
        let header_len = le16(b, 10);
        if usize::from(header_len) != HEADER_LEN {
            return Err(bad(format!("capture header length {header_len}, expected {HEADER_LEN}")));
        }
        Ok(FileHeader {
            version,
            flags: le32(b, 12),
            footer_at: le64(b, 16),
            block_ticks: le32(b, 24),
            created_ns: le64(b, 32),
        })
    }
}

/// The header in front of a block's or the footer's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// [`BLOCK_MAGIC`] or [`FOOTER_MAGIC`].
    pub magic: [u8; 8],
    /// Length of the archive that follows (without the zero padding to
    /// [`ALIGN`]).
    pub len: u32,
    /// Ticks in a block; blocks in the footer.
    pub count: u32,
    /// crc32 (IEEE, `crc32fast`) of the archive bytes.
    pub crc: u32,
    /// Earliest `src_ns` in a block (in the whole file for the footer);
    /// `u64::MAX` when there is none.
    pub min_src_ns: u64,
    /// Latest `src_ns`; 0 when there is none.
    pub max_src_ns: u64,
}

impl Frame {
    /// The 48 frame-header bytes, with their own crc in the last 4.
    pub fn encode(&self) -> [u8; FRAME_LEN] {
        let mut b = [0u8; FRAME_LEN];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..16].copy_from_slice(&self.count.to_le_bytes());
        b[16..20].copy_from_slice(&self.crc.to_le_bytes());
        b[24..32].copy_from_slice(&self.min_src_ns.to_le_bytes());
        b[32..40].copy_from_slice(&self.max_src_ns.to_le_bytes());
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a frame header: `None` when `b` is shorter than
    /// [`FRAME_LEN`] or the header's own crc does not match (then no field,
    /// the length least of all, can be trusted).
    pub fn decode(b: &[u8]) -> Option<Frame> {
        let b = b.get(..FRAME_LEN)?;
        if !super::crc_ok(&b[..44], le32(b, 44)) {
            return None;
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[..8]);
        Some(Frame {
            magic,
            len: le32(b, 8),
            count: le32(b, 12),
            crc: le32(b, 16),
            min_src_ns: le64(b, 24),
            max_src_ns: le64(b, 32),
        })
    }
}

/// What a tick record is.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A quote: `p1`/`s1` bid, `p2`/`s2` ask.
    Quote,
    /// A trade: `p1` price, `s1` size, `p2` and `s2` zero.
    Trade,
}

/// One tick in a block. Fields ordered widest first: 40 bytes archived.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    /// Source time, ns since the Unix epoch.
    pub src_ns: u64,
    /// Bid (quote) or price (trade), fixed point with 4 decimals.
    pub p1: i64,
    /// Ask (quote) or 0.
    pub p2: i64,
    /// Index in the file's symbol table.
    pub sym: u32,
    /// Bid size (quote) or size (trade).
    pub s1: u32,
    /// Ask size (quote) or 0.
    pub s2: u32,
    /// Quote or trade.
    pub kind: Kind,
}

/// The archived body of a block.
#[derive(Archive, Serialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockBody {
    /// File index of `new_symbols[0]`: the number of symbols the file had
    /// before this block.
    pub sym_base: u32,
    /// Symbols first used in this block, in file-index order.
    pub new_symbols: Vec<String>,
    /// The ticks, in arrival order.
    pub ticks: Vec<Rec>,
}

/// Ticks of one symbol by kind.
#[derive(Archive, Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCounts {
    /// Quotes.
    pub quotes: u64,
    /// Trades.
    pub trades: u64,
}

/// Where a block is and what it holds, as listed in the footer.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    /// Offset of the block's frame header.
    pub at: u64,
    /// Ticks in the block.
    pub ticks: u32,
    /// Length of the block's archive.
    pub len: u32,
    /// Earliest `src_ns` in the block.
    pub min_src_ns: u64,
    /// Latest `src_ns` in the block.
    pub max_src_ns: u64,
}

/// The archived body of the footer.
#[derive(Archive, Serialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct FooterBody {
    /// Every symbol of the file, by file index.
    pub symbols: Vec<String>,
    /// Ticks per symbol, same order as `symbols`.
    pub per_symbol: Vec<KindCounts>,
    /// Every block, in file order.
    pub blocks: Vec<BlockEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_names_its_errors() {
        let h = FileHeader {
            version: VERSION,
            flags: FLAG_FINISHED,
            footer_at: 12345,
            block_ticks: 4096,
            created_ns: 77,
        };
        let b = h.encode();
        assert_eq!(FileHeader::decode(&b).unwrap(), h);
        // Each kind of bad start gets its own message.
        let msg = |b: &[u8]| FileHeader::decode(b).unwrap_err().to_string();
        assert!(msg(&[]).contains("empty"));
        assert!(msg(b"{\"type\"").contains("wrong magic"));
        assert!(msg(&b[..20]).contains("truncated"));
        let mut newer = b;
        newer[8] = 2;
        assert!(msg(&newer).contains("version 2"));
    }

    #[test]
    fn frame_round_trips_and_rejects_any_flipped_bit() {
        let f = Frame {
            magic: BLOCK_MAGIC,
            len: 1000,
            count: 7,
            crc: 0xdead_beef,
            min_src_ns: 1,
            max_src_ns: u64::MAX - 1,
        };
        let b = f.encode();
        assert_eq!(Frame::decode(&b), Some(f));
        assert_eq!(Frame::decode(&b[..FRAME_LEN - 1]), None);
        for i in 0..FRAME_LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            // crc32 catches every single-bit error.
            assert_eq!(Frame::decode(&c), None, "bit {i}");
        }
    }

    #[test]
    fn archived_record_is_40_bytes() {
        assert_eq!(std::mem::size_of::<ArchivedRec>(), 40);
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), 16);
        assert_eq!(align_up(64), 64);
    }
}
