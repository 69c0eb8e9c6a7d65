//! Hashing while bytes flow: counting, sha256-ing readers and writers, and
//! [`Digesting`], which computes an entry's sha256 and/or its [`Fingerprint`].
//!
//! Why two hashes: the manifest records each entry's sha256, computed once, as the
//! writer reads the source. Reading a backup back while it is written
//! (verify-after-backup) must prove that every entry decodes to exactly those bytes;
//! it does so by comparing an XXH3-128 fingerprint taken on both sides of the same
//! bytes — the writer's beside its sha256, the reader's of what it decoded — which
//! costs a small fraction of a second sha256 pass. A fingerprint is never stored and
//! never compared across runs: it only tells one backup's two passes over the same
//! bytes apart from a corruption between them (random, not chosen by anyone, which
//! 128 bits catch with certainty for any practical purpose). Everything that checks an
//! archive later (`verify`, restore, fetch) checks the sha256 in its manifest.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Counts and hashes the bytes written through it (a [`Digesting`] of sha256 only).
pub struct HashingWriter<W>(Digesting<W>);

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter(Digesting::new(inner, Digests::SHA256))
    }

    /// The inner writer, the byte count and the hex sha256.
    pub fn finish(self) -> (W, u64, String) {
        let (inner, digested) = self.0.finish();
        (inner, digested.size, digested.sha256.unwrap_or_default())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Counts and hashes the bytes read through it (a [`Digesting`] of sha256 only).
pub struct HashingReader<R>(Digesting<R>);

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader(Digesting::new(inner, Digests::SHA256))
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.0.size()
    }

    /// The byte count and the hex sha256 of what was read.
    pub fn finish(self) -> (u64, String) {
        let (_, digested) = self.0.finish();
        (digested.size, digested.sha256.unwrap_or_default())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// An XXH3-128 fingerprint of some content (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u128);

/// Which digests a [`Digesting`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub sha256: bool,
    pub fingerprint: bool,
}

impl Digests {
    /// The manifest's hash only: what checks an archive against its manifest compute.
    pub const SHA256: Digests = Digests {
        sha256: true,
        fingerprint: false,
    };
    /// The fingerprint only: what a backup's read-back computes.
    pub const FINGERPRINT: Digests = Digests {
        sha256: false,
        fingerprint: true,
    };
    /// Both: what the writer of a followed archive computes.
    pub const BOTH: Digests = Digests {
        sha256: true,
        fingerprint: true,
    };
}

/// What a [`Digesting`] computed over the bytes that passed through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub size: u64,
    /// Hex sha256, if asked for.
    pub sha256: Option<String>,
    pub fingerprint: Option<Fingerprint>,
}

/// Counts what is read from or written to `inner` and computes the [`Digests`] asked
/// for on the way.
pub struct Digesting<T> {
    inner: T,
    sha256: Option<Sha256>,
    // Boxed: XXH3's streaming state is several hundred bytes.
    xxh3: Option<Box<Xxh3>>,
    size: u64,
}

impl<T> Digesting<T> {
    pub fn new(inner: T, digests: Digests) -> Self {
        Digesting {
            inner,
            sha256: digests.sha256.then(Sha256::new),
            xxh3: digests.fingerprint.then(|| Box::new(Xxh3::new())),
            size: 0,
        }
    }

    /// Bytes so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn update(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.xxh3 {
            h.update(bytes);
        }
        self.size += bytes.len() as u64;
    }

    /// The inner reader or writer, and the digests.
    pub fn finish(self) -> (T, Digested) {
        let digested = Digested {
            size: self.size,
            sha256: self.sha256.map(|h| hex(&h.finalize())),
            fingerprint: self.xxh3.map(|h| Fingerprint(h.digest128())),
        };
        (self.inner, digested)
    }
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes a whole file: its size and hex sha256.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut reader = HashingReader::new(File::open(path)?);
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digesting_computes_what_it_is_asked_for_over_what_passes() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let both = Digests::BOTH;
        let mut reader = Digesting::new(data.as_slice(), both);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let (_, read) = reader.finish();
        let mut writer = Digesting::new(Vec::new(), both);
        for chunk in data.chunks(7_777) {
            writer.write_all(chunk).unwrap();
        }
        let (written, wrote) = writer.finish();
        assert_eq!(written, data);
        assert_eq!(
            read, wrote,
            "the same bytes, read or written, give the same digests"
        );
        assert_eq!(read.size, data.len() as u64);
        assert_eq!(read.sha256.as_deref(), Some(hex(&Sha256::digest(&data)).as_str()));
        assert_eq!(
            read.fingerprint,
            Some(Fingerprint(xxhash_rust::xxh3::xxh3_128(&data)))
        );

        let mut flipped = data.clone();
        flipped[123_456] ^= 1;
        let mut other = Digesting::new(flipped.as_slice(), Digests::FINGERPRINT);
        io::copy(&mut other, &mut io::sink()).unwrap();
        let (_, other) = other.finish();
        assert_eq!(other.sha256, None);
        assert_ne!(
            other.fingerprint, read.fingerprint,
            "one flipped bit went unnoticed"
        );
    }
}
