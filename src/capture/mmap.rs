//! The one `unsafe` call outside the rules: memory-mapping a capture file
//! for zero-copy replay (after ripgrep's `searcher/mmap.rs`). Everything
//! that reads the mapping goes through rkyv's validating `access`, so what
//! the bytes say can never cause undefined behaviour; only the mapping
//! itself needs an argument.

use std::fs::File;
use std::io;

use memmap2::Mmap;

/// Maps `file` read-only. The caller falls back to reading the file into
/// memory when this fails (some file systems, pipes, empty files).
#[allow(unsafe_code)]
pub(crate) fn map(file: &File) -> io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the returned `&[u8]` must not
    // change while it is borrowed, and the OS cannot promise that for a file
    // another process may write or truncate. Invariant we rely on: nobody
    // writes or truncates a capture while it is being replayed. tickwire
    // itself maps read-only and privately, and its writer never appends to
    // an existing capture; but recording onto the very path being replayed
    // (`CaptureWriter::create` truncates) or any other process editing the
    // file breaks the invariant. Residual risk: a truncation while mapped
    // makes a later access raise SIGBUS (the process dies, it does not read
    // garbage silently); bytes rewritten in place can change data rkyv has
    // already validated. Replaying a file that is still being recorded is
    // therefore not supported: copy it first.
    unsafe { Mmap::map(file) }
}
