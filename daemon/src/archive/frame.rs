//! Precompressed zstd frames: content whose size is known only at its end.
//!
//! A tar header needs an entry's size before its content, so content read from a pipe
//! (a database dump) cannot stream straight into an archive. Rather than spooling it
//! raw and compressing it again afterwards, it is compressed as it arrives into a
//! [`FrameSpool`] — one zstd frame in staging, with the content's size, sha256 and
//! fingerprint counted on the way. Once the content is complete (and validated by its
//! source), [`crate::archive::ArchiveWriter::add_frame`] writes the tar header and
//! copies the frame's bytes into the archive as they are. zstd frames concatenate, so
//! the archive is still one standard `.tar.zst` that `zstd -d` and `tar --zstd` read
//! whole, and reading it back checks the content like any entry's (against the
//! manifest's sha256, or, while a backup is written, against the fingerprint).
//!
//! ```text
//! pipe ─▶ FrameSpool (sha256, size) ─▶ zstd frame in staging ─▶ validate (content())
//! archive: …frame n: entries, header ─▶ frame n+1: the spool, verbatim ─▶ frame n+2: padding, …
//! ```

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::encoder;
use super::hash::{Digesting, Digests, Fingerprint};

/// Content being compressed into a zstd frame at a path (created; removed by the
/// caller, e.g. with the run's staging directory).
pub struct FrameSpool {
    out: Digesting<zstd::stream::write::Encoder<'static, File>>,
    path: PathBuf,
}

impl FrameSpool {
    /// Creates `path` (it must not exist) for content compressed at zstd `level` with
    /// `workers` threads, as the archive writer compresses.
    pub fn create(path: &Path, level: i32, workers: u32) -> io::Result<FrameSpool> {
        let file = File::create_new(path)?;
        Ok(FrameSpool {
            out: Digesting::new(encoder(file, level, workers)?, Digests::BOTH),
            path: path.to_owned(),
        })
    }

    /// Where the frame is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends the frame; what the archive writer needs to add it.
    pub fn finish(self) -> io::Result<SpooledFrame> {
        let (encoder, digested) = self.out.finish();
        encoder.finish()?.flush()?;
        let missing = || io::Error::other("the frame spool lost a digest");
        Ok(SpooledFrame {
            path: self.path,
            size: digested.size,
            sha256: digested.sha256.ok_or_else(missing)?,
            fingerprint: digested.fingerprint.ok_or_else(missing)?,
        })
    }
}

impl Write for FrameSpool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A finished [`FrameSpool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledFrame {
    /// The file holding the frame.
    pub path: PathBuf,
    /// The content's size.
    pub size: u64,
    /// The content's sha256 (hex).
    pub sha256: String,
    /// The content's fingerprint, for a follower of the archive it goes into.
    pub fingerprint: Fingerprint,
}

impl SpooledFrame {
    /// The content, decompressed as it is read.
    pub fn content(&self) -> io::Result<impl Read + Send + 'static> {
        let file = File::open(&self.path)?;
        zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(super::IO_BUFFER, file))
            .map(|d| d.single_frame())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spooled_frame_gives_back_its_content_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.zst");
        let content: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut spool = FrameSpool::create(&path, 3, 2).unwrap();
        for chunk in content.chunks(70_001) {
            spool.write_all(chunk).unwrap();
        }
        let frame = spool.finish().unwrap();
        assert_eq!(frame.size, content.len() as u64);
        assert_eq!(
            frame.sha256,
            crate::archive::hex(&<sha2::Sha256 as sha2::Digest>::digest(&content))
        );
        assert!(
            std::fs::metadata(&path).unwrap().len() < frame.size / 10,
            "not compressed"
        );
        let mut back = Vec::new();
        frame.content().unwrap().read_to_end(&mut back).unwrap();
        assert!(back == content, "the content differs");
        assert!(
            FrameSpool::create(&path, 3, 1).is_err(),
            "an existing spool was overwritten"
        );
    }
}
