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
    // another process may write or truncate. Invariant we rely on: a capture
    // being replayed is complete on disk and nobody modifies it: the
    // recorder writes a *new* file (`CaptureWriter::create` truncates
    // before writing, never an open reader's file), and tickwire maps only
    // for reading, privately. Residual risk: another process truncating
    // the file while it is mapped makes a later access raise SIGBUS (the
    // replay dies, it does not read garbage silently), and one rewriting
    // bytes in place can change data that rkyv already validated, which
    // breaks the `&[u8]` immutability promise. Replaying a file that is
    // still being recorded is therefore not supported; copy it first.
    unsafe { Mmap::map(file) }
}
