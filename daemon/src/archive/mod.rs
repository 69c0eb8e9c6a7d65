//! The `.tar.zst` archive: a streaming writer, a reader that trusts nothing, and safe
//! extraction.
//!
//! Layout: `db/<name>` (the snapshot or dump), `media/<n>/...` (the n-th media
//! directory, with `media/<n>` itself as a directory entry), and `manifest.json` last.
//! It is a plain POSIX/GNU tar in one zstd stream, so `tar --zstd -xf` restores it by
//! hand.
//!
//! - [`writer`]: [`ArchiveWriter`] hashes every entry while it streams into the tar,
//!   the tar into a multi-threaded zstd encoder, the encoder into the file.
//! - [`reader`]: [`read_archive`], one streaming pass that checks every entry before a
//!   [`Visitor`] sees it, and everything against the expected manifest.
//! - [`extract`]: a [`Visitor`] that writes entries into fresh directories
//!   ([`Layout`]), never through a link.
//! - [`hash`]: hashing readers and writers.
//!
//! Data flows one way: sources and media feed the writer; stores hand files to the
//! reader. Nothing here knows about jobs, the catalog or gRPC.

pub mod extract;
pub mod hash;
pub mod reader;
pub mod writer;

use std::io::{self, Read, Write};
use std::path::PathBuf;

pub use extract::{Extractor, Layout};
pub use hash::{HashingReader, HashingWriter, hash_file, hex};
pub use reader::{Expected, FoundEntry, HashOnly, Visitor, read_archive, read_followed};
pub use writer::ArchiveWriter;

/// Read and write size for file contents: large enough that syscalls do not matter.
pub const IO_BUFFER: usize = 256 << 10;

/// Copies `reader` to `writer` with an [`IO_BUFFER`]-sized buffer (std's `io::copy`
/// uses 8 KiB, which costs one syscall per 8 KiB here).
pub fn copy_large(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; IO_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Why writing or reading an archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {path}")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed size while it was archived ({expected} bytes expected, {got} read)")]
    Changed { path: PathBuf, expected: u64, got: u64 },
    /// Writing failed; the caller's context names the archive.
    #[error(transparent)]
    Write(io::Error),
    #[error("the archive cannot be read: {0}")]
    Read(#[source] io::Error),
    #[error("the archive is invalid: {0}")]
    Invalid(String),
    #[error("the archive was cancelled")]
    Cancelled,
}

impl ArchiveError {
    /// Whether the failure was the disk filling up.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            ArchiveError::Write(e) | ArchiveError::Read(e) | ArchiveError::Source { source: e, .. } => e,
            _ => return false,
        };
        io.raw_os_error() == Some(nix::libc::ENOSPC)
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(message.into())
}
