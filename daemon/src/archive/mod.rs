//! The `.tar.zst` archive: a streaming writer, a reader that trusts nothing, and safe
//! extraction.
//!
//! Layout: `db/<name>` (the snapshot or dump), `media/<n>/...` (the n-th media
//! directory, with `media/<n>` itself as a directory entry), and `manifest.json` last.
//! It is a plain POSIX/GNU tar in one zstd stream (one frame, or several where a
//! precompressed dump was spliced in), so `tar --zstd -xf` restores it by hand.
//!
//! - [`writer`]: [`ArchiveWriter`] hashes every entry while it streams into the tar,
//!   the tar into a multi-threaded zstd encoder, the encoder into the file.
//! - [`reader`]: [`read_archive`], one streaming pass that checks every entry before a
//!   [`Visitor`] sees it, and everything against the expected manifest.
//! - [`extract`]: a [`Visitor`] that writes entries into fresh directories
//!   ([`Layout`]), never through a link.
//! - [`frame`]: content compressed into a zstd frame as it arrives (a dump from a
//!   pipe), which the writer splices into the archive once it is complete.
//! - [`hash`]: hashing readers and writers; the fingerprints a backup's read-back
//!   compares with what was written.
//! - [`crypt`]: the age layer of `.tar.zst.age` archives (keys, streaming encryption
//!   and decryption, re-encryption, scratch copies under a key that never leaves
//!   memory). The writer encrypts when given recipients; the reader decrypts when the
//!   file starts with age's magic and it was given identities.
//!
//! Data flows one way: sources and media feed the writer; stores hand files to the
//! reader. Nothing here knows about jobs, the catalog or gRPC.

pub mod crypt;
pub mod extract;
pub mod frame;
pub mod hash;
pub mod reader;
pub mod writer;

use std::io::{self, Read, Write};
use std::path::PathBuf;

pub use extract::{Extractor, Layout};
pub use frame::{FrameSpool, SpooledFrame};
pub use hash::{Digested, Digesting, Digests, Fingerprint, HashingReader, HashingWriter, hash_file, hex};
pub use reader::{
    Expected, Followed, FoundEntry, HashOnly, Visitor, check_file, hash_followed, hash_reader, read_archive,
    read_archive_keyed, read_followed,
};
pub use writer::{ArchiveWriter, Finished, Follow};

/// Bytes per zstd worker job (see [`ArchiveWriter::new`]).
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// Compression threads: one per core.
pub fn compression_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// A zstd encoder with the archive's settings: level, content checksum, and with
/// `workers > 1` that many threads on small jobs (see [`ZSTD_JOB_SIZE`]).
pub fn encoder<W: Write>(
    out: W,
    level: i32,
    workers: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    encoder.include_checksum(true)?;
    if workers > 1 {
        encoder.multithread(workers)?;
        // zstd's default job is 4x the window (8 MiB at level 3), and it keeps input
        // and output buffers for several jobs per worker: ~65 MiB here. 2 MiB jobs
        // keep cofferd's peak near 50 MiB (4 MiB jobs: 64-72 MiB, at or over the
        // 64 MiB target, and no faster on 2 cores).
        encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    }
    Ok(encoder)
}

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
    /// The age layer refused (no or the wrong key, damaged or tampered ciphertext).
    /// Boxed: it is large, and errors travel in every `Result`.
    #[error(transparent)]
    Crypt(Box<crypt::CryptError>),
}

impl From<crypt::CryptError> for ArchiveError {
    fn from(e: crypt::CryptError) -> ArchiveError {
        ArchiveError::Crypt(Box::new(e))
    }
}

impl ArchiveError {
    /// Whether the failure was the disk filling up.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            ArchiveError::Write(e) | ArchiveError::Read(e) | ArchiveError::Source { source: e, .. } => e,
            ArchiveError::Crypt(c) => match &**c {
                crypt::CryptError::Write(e) | crypt::CryptError::Read(e) => e,
                _ => return false,
            },
            _ => return false,
        };
        io.raw_os_error() == Some(nix::libc::ENOSPC)
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(message.into())
}

/// An error reading an archive's data: the age layer's verdict when it is one (it
/// travels inside the io error through zstd and tar), else corrupt data or an io error.
pub(crate) fn data_error(e: io::Error) -> ArchiveError {
    if let Some(found) = crypt::crypt_error(&e) {
        // Straight from the decrypting reader: keep the error itself; wrapped by a
        // layer above (tar names its entry): its sentence.
        return match e.get_ref().is_some_and(|inner| inner.is::<crypt::CryptError>()) {
            true => crypt::CryptError::from_read(e).into(),
            false => invalid(found.to_string()),
        };
    }
    // The tar and zstd crates report malformed input as io errors.
    if matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other
    ) {
        invalid(format!("its data is corrupt or truncated ({e})"))
    } else {
        ArchiveError::Read(e)
    }
}
