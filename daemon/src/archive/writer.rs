//! [`ArchiveWriter`]: one archive, streamed.
//!
//! Each entry's sha256 is computed while its bytes stream into the tar, the tar into a
//! multi-threaded zstd encoder, and the encoder into the file through a hashing
//! counter, so the archive's own size and sha256 come for free. Symlinks are stored as
//! symlinks and never followed. [`ArchiveWriter::finish`] appends the manifest (with
//! every entry and the totals) as the last entry and fsyncs the file. A writer that is
//! followed (verify-after-backup, [`Follow`]) also fingerprints each entry's content
//! for its follower to compare ([`Finished::fingerprints`]).
//!
//! Given recipients ([`ArchiveWriter::with`]), age sits between zstd and the file:
//! `zstd -> BackgroundWriter -> EncryptWriter -> HashingWriter -> file`, so only
//! ciphertext is written and the size and sha256 are the ciphertext's. Encryption,
//! hashing and the writes run on a thread of their own (a core zstd leaves idle on
//! incompressible media); [`ArchiveWriter::finish`] finishes age's stream before the
//! fsync, and nothing else can (see [`crate::archive::crypt::EncryptWriter`]).

use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::crypt::{BackgroundWriter, EncryptWriter, Recipients};
use super::frame::SpooledFrame;
use super::hash::{Digesting, Digests, Fingerprint};
use super::{ArchiveError, HashingWriter, IO_BUFFER, encoder};
use crate::fsutil::{Front, StreamedFile};
use crate::manifest::{Entry, EntryKind, MANIFEST_PATH, Manifest, Totals, escape};

/// A raw archive path as a `Path` (bytes on Unix; the tar crate writes them as they
/// are, with a GNU long-name entry when needed).
fn os_path(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// The tar stream's destination: zstd frames into the sink. Normally one frame; a
/// precompressed frame spliced in ([`ArchiveWriter::add_frame`]) ends the current
/// frame, its bytes follow as they are, and a new frame starts after them.
struct Frames {
    encoder: Option<zstd::stream::write::Encoder<'static, Sink>>,
    level: i32,
    workers: u32,
}

impl Frames {
    fn new(sink: Sink, level: i32, workers: u32) -> io::Result<Frames> {
        Ok(Frames {
            encoder: Some(encoder(sink, level, workers)?),
            level,
            workers,
        })
    }

    fn current(&mut self) -> io::Result<&mut zstd::stream::write::Encoder<'static, Sink>> {
        self.encoder.as_mut().ok_or_else(broken_off)
    }

    /// Ends the current frame, copies `frame` (a complete zstd frame) into the sink
    /// and starts the next frame.
    fn splice(&mut self, frame: &mut dyn Read) -> io::Result<()> {
        let mut sink = self.encoder.take().ok_or_else(broken_off)?.finish()?;
        super::copy_large(frame, &mut sink)?;
        self.encoder = Some(encoder(sink, self.level, self.workers)?);
        Ok(())
    }

    /// Ends the last frame; the sink, to be finished.
    fn finish(mut self) -> io::Result<Sink> {
        self.encoder.take().ok_or_else(broken_off)?.finish()
    }
}

/// A splice that failed half-way leaves no encoder: the archive is unusable.
fn broken_off() -> io::Error {
    io::Error::other("the archive stream broke off while a frame was spliced in")
}

impl Write for Frames {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.current()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current()?.flush()
    }
}

/// The archive file as the compressed (or encrypted) stream reaches it.
enum Output {
    /// Hashed as it is written.
    Hashed(HashingWriter<StreamedFile>),
    /// Only counted: a follower that decodes every byte of the file as it is written
    /// hashes it instead (see [`Follow::hashes_file`]), so the bytes are hashed once.
    Counted(StreamedFile),
}

impl Output {
    /// The file, its size and, if it was hashed here, its sha256.
    fn finish(self) -> (StreamedFile, u64, Option<String>) {
        match self {
            Output::Hashed(hashing) => {
                let (file, size, sha256) = hashing.finish();
                (file, size, Some(sha256))
            }
            Output::Counted(file) => {
                let size = file.written();
                (file, size, None)
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Hashed(w) => w.write(buf),
            Output::Counted(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Hashed(w) => w.flush(),
            Output::Counted(w) => w.flush(),
        }
    }
}

/// Where the compressed stream goes: straight to the file, or through age.
enum Sink {
    Plain(Output),
    Encrypted(BackgroundWriter<EncryptWriter<Output>>),
}

impl Sink {
    /// Completes the stream (age's final chunk) and returns the file's output.
    fn finish(self) -> io::Result<Output> {
        match self {
            Sink::Plain(file) => Ok(file),
            Sink::Encrypted(background) => background.finish()?.finish(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Encrypted(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Encrypted(w) => w.flush(),
        }
    }
}

/// A reader of the archive file while it is written (verify-after-backup).
pub struct Follow {
    /// How far the file has been written, for the [`crate::fsutil::Follower`].
    pub front: Front,
    /// The follower decodes (and decrypts) every byte of the file and checks what it
    /// holds, so the file's sha256 is taken from what it read: the writer then only
    /// counts its bytes. Otherwise (ciphertext it cannot decrypt) the writer hashes
    /// them and the follower's hash is checked against that.
    pub hashes_file: bool,
}

/// A finished archive: what [`ArchiveWriter::finish`] returns.
#[derive(Debug)]
pub struct Finished {
    /// The manifest written as the last entry.
    pub manifest: Manifest,
    /// The archive file's size.
    pub size: u64,
    /// The file's sha256; `None` if its follower hashes it (see [`Follow::hashes_file`]).
    pub sha256: Option<String>,
    /// For a followed archive, each file entry's path and the [`Fingerprint`] of the
    /// content the writer read (and hashed into the manifest), in archive order: what
    /// the follower's [`crate::archive::reader::Followed::check`] compares with what
    /// it decoded. Empty otherwise.
    pub fingerprints: Vec<(String, Fingerprint)>,
}

/// Writes one archive. Call [`ArchiveWriter::finish`] to complete it; dropping it
/// leaves an incomplete file for the caller to remove.
pub struct ArchiveWriter {
    tar: tar::Builder<Frames>,
    /// Checked on every read of entry content, so a shutdown stops a long entry.
    cancel: CancellationToken,
    entries: Vec<Entry>,
    totals: Totals,
    /// Followed archives only: see [`Finished::fingerprints`].
    fingerprints: Option<Vec<(String, Fingerprint)>>,
}

impl ArchiveWriter {
    /// Starts an archive in `file` at zstd `level` with `workers` compression threads.
    pub fn new(
        file: File,
        level: i32,
        workers: u32,
        cancel: CancellationToken,
    ) -> Result<Self, ArchiveError> {
        Self::with(file, None, None, level, workers, cancel)
    }

    /// Starts an archive in `file`, read while it is written as `follow` says if
    /// given, and encrypted to `recipients` as it is written if given (see the module
    /// doc); otherwise as [`ArchiveWriter::new`].
    pub fn with(
        file: File,
        follow: Option<Follow>,
        recipients: Option<&Recipients>,
        level: i32,
        workers: u32,
        cancel: CancellationToken,
    ) -> Result<Self, ArchiveError> {
        let file = StreamedFile::new(file);
        let fingerprints = follow.as_ref().map(|_| Vec::new());
        let output = match follow {
            None => Output::Hashed(HashingWriter::new(file)),
            Some(Follow { front, hashes_file }) => {
                let file = file.followed(front);
                match hashes_file {
                    true => Output::Counted(file),
                    false => Output::Hashed(HashingWriter::new(file)),
                }
            }
        };
        let sink = match recipients {
            None => Sink::Plain(output),
            Some(recipients) => {
                let age = EncryptWriter::new(output, recipients).map_err(ArchiveError::from)?;
                Sink::Encrypted(BackgroundWriter::new(age).map_err(ArchiveError::Write)?)
            }
        };
        let frames = Frames::new(sink, level, workers).map_err(ArchiveError::Write)?;
        let mut tar = tar::Builder::new(frames);
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        Ok(ArchiveWriter {
            tar,
            cancel,
            entries: Vec::new(),
            totals: Totals::default(),
            fingerprints,
        })
    }

    fn header(kind: tar::EntryType, metadata: &Metadata, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(metadata.mode() & 0o7777);
        header.set_mtime(metadata.mtime().max(0) as u64);
        header.set_uid(u64::from(metadata.uid()));
        header.set_gid(u64::from(metadata.gid()));
        header
    }

    fn push(&mut self, entry: Entry, fingerprint: Option<Fingerprint>) {
        if let (Some(list), Some(fingerprint)) = (&mut self.fingerprints, fingerprint) {
            list.push((entry.path.clone(), fingerprint));
        }
        self.totals.count(&entry);
        self.entries.push(entry);
    }

    /// Adds the regular file at `fs_path` as `archive_path`, hashing it on the way,
    /// and calls `progress` with the bytes added.
    pub fn add_file(
        &mut self,
        archive_path: &[u8],
        fs_path: &Path,
        metadata: &Metadata,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ArchiveError> {
        let file = File::open(fs_path).map_err(|source| ArchiveError::Source {
            path: fs_path.to_owned(),
            source,
        })?;
        let mut reader = io::BufReader::with_capacity(IO_BUFFER, file);
        self.add_stream(archive_path, &mut reader, metadata.len(), metadata, progress)
            .map_err(|e| match e {
                ArchiveError::Changed { expected, got, .. } => ArchiveError::Changed {
                    path: fs_path.to_owned(),
                    expected,
                    got,
                },
                e => e,
            })
    }

    /// Adds `size` bytes from `reader` as a regular file `archive_path` with the mode,
    /// owner and mtime of `metadata`, hashing them on the way (and fingerprinting them
    /// for a follower, see [`Finished::fingerprints`]).
    pub fn add_stream(
        &mut self,
        archive_path: &[u8],
        reader: &mut dyn Read,
        size: u64,
        metadata: &Metadata,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ArchiveError> {
        let digests = Digests {
            sha256: true,
            fingerprint: self.fingerprints.is_some(),
        };
        let mut reader = ProgressReader {
            inner: Digesting::new(reader.take(size), digests),
            progress,
            cancel: &self.cancel,
        };
        let mut header = Self::header(tar::EntryType::Regular, metadata, size);
        self.tar
            .append_data(&mut header, os_path(archive_path), &mut reader)
            .map_err(|e| {
                if self.cancel.is_cancelled() {
                    ArchiveError::Cancelled
                } else {
                    ArchiveError::Write(e)
                }
            })?;
        let (_, digested) = reader.inner.finish();
        if digested.size != size {
            return Err(ArchiveError::Changed {
                path: PathBuf::from(os_path(archive_path)),
                expected: size,
                got: digested.size,
            });
        }
        self.push(
            Entry {
                path: escape(archive_path),
                kind: EntryKind::File,
                size,
                sha256: digested.sha256.unwrap_or_default(),
                mode: metadata.mode() & 0o7777,
                mtime: metadata.mtime().max(0),
                target: None,
            },
            digested.fingerprint,
        );
        Ok(())
    }

    /// Adds the content of `frame` (see [`super::frame`]) as the regular file
    /// `archive_path`: its tar header goes into the current zstd frame, the frame's
    /// compressed bytes follow as they are, and the padding starts the next frame. The
    /// content is not read here; reading the archive back checks it against `sha256`
    /// like any entry's. `archive_path` must fit a tar header's name (100 bytes).
    pub fn add_frame(
        &mut self,
        archive_path: &[u8],
        frame: &SpooledFrame,
        metadata: &Metadata,
    ) -> Result<(), ArchiveError> {
        if self.cancel.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        let mut header = Self::header(tar::EntryType::Regular, metadata, frame.size);
        header
            .set_path(os_path(archive_path))
            .map_err(ArchiveError::Write)?;
        header.set_cksum();
        let mut compressed = File::open(&frame.path).map_err(|source| ArchiveError::Source {
            path: frame.path.clone(),
            source,
        })?;
        let padding = (512 - frame.size % 512) % 512;
        let frames = self.tar.get_mut();
        frames
            .write_all(header.as_bytes())
            .and_then(|()| frames.splice(&mut compressed))
            .and_then(|()| frames.write_all(&[0u8; 512][..padding as usize]))
            .map_err(ArchiveError::Write)?;
        self.push(
            Entry {
                path: escape(archive_path),
                kind: EntryKind::File,
                size: frame.size,
                sha256: frame.sha256.clone(),
                mode: metadata.mode() & 0o7777,
                mtime: metadata.mtime().max(0),
                target: None,
            },
            Some(frame.fingerprint),
        );
        Ok(())
    }

    /// Adds a directory entry.
    pub fn add_dir(&mut self, archive_path: &[u8], metadata: &Metadata) -> Result<(), ArchiveError> {
        let mut header = Self::header(tar::EntryType::Directory, metadata, 0);
        self.tar
            .append_data(&mut header, os_path(archive_path), io::empty())
            .map_err(ArchiveError::Write)?;
        self.push(
            Entry {
                path: escape(archive_path),
                kind: EntryKind::Dir,
                size: 0,
                sha256: String::new(),
                mode: metadata.mode() & 0o7777,
                mtime: metadata.mtime().max(0),
                target: None,
            },
            None,
        );
        Ok(())
    }

    /// Adds a symlink entry pointing at `target` (stored, never followed).
    pub fn add_symlink(
        &mut self,
        archive_path: &[u8],
        target: &[u8],
        metadata: &Metadata,
    ) -> Result<(), ArchiveError> {
        let mut header = Self::header(tar::EntryType::Symlink, metadata, 0);
        self.tar
            .append_link(&mut header, os_path(archive_path), os_path(target))
            .map_err(ArchiveError::Write)?;
        self.push(
            Entry {
                path: escape(archive_path),
                kind: EntryKind::Symlink,
                size: 0,
                sha256: String::new(),
                mode: metadata.mode() & 0o7777,
                mtime: metadata.mtime().max(0),
                target: Some(escape(target)),
            },
            None,
        );
        Ok(())
    }

    /// Notes media entries that could not be archived and those excluded on purpose,
    /// for the manifest's totals.
    pub fn count_left_out(&mut self, skipped: u64, excluded: u64) {
        self.totals.skipped += skipped;
        self.totals.excluded += excluded;
    }

    /// Writes `manifest` (with the entries and totals filled in) as the last entry,
    /// completes the tar and zstd streams and fsyncs the file.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<Finished, ArchiveError> {
        manifest.entries = std::mem::take(&mut self.entries);
        manifest.totals = self.totals.clone();
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::Write(e.into()))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        self.tar
            .append_data(&mut header, MANIFEST_PATH, json.as_slice())
            .map_err(ArchiveError::Write)?;
        let frames = self.tar.into_inner().map_err(ArchiveError::Write)?;
        let output = frames
            .finish()
            .and_then(Sink::finish)
            .map_err(ArchiveError::Write)?;
        let (file, size, sha256) = output.finish();
        file.into_inner().sync_all().map_err(ArchiveError::Write)?;
        Ok(Finished {
            manifest,
            size,
            sha256,
            fingerprints: self.fingerprints.unwrap_or_default(),
        })
    }
}

/// Reports progress every few MiB as a file streams into the archive.
struct ProgressReader<'a, R> {
    inner: Digesting<R>,
    progress: &'a mut dyn FnMut(u64),
    cancel: &'a CancellationToken,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not `Interrupted`: io::copy (inside tar) would retry that forever.
            return Err(io::Error::other("the archive was cancelled"));
        }
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{HashOnly, read_archive};
    use crate::manifest::{ArchiveKind, FORMAT_VERSION, SourceInfo, SqliteInfo};

    fn manifest() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            kind: ArchiveKind::Backup,
            id: "app-20260101T000000Z".into(),
            job: "app".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            coffer_version: "test".into(),
            hostname: "host".into(),
            source: SourceInfo::Sqlite(SqliteInfo {
                path: "/x/app.db".into(),
                sqlite_version: "3".into(),
                page_size: 4096,
                page_count: 1,
                user_version: 0,
                application_id: 0,
                journal_mode: "wal".into(),
                snapshot_method: "vacuum-into".into(),
            }),
            media_roots: vec!["/x/media".into()],
            entries: Vec::new(),
            skipped: Vec::new(),
            totals: Totals::default(),
            export: None,
        }
    }

    #[test]
    fn what_is_written_reads_back_with_the_same_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.bin");
        std::fs::write(&db, vec![7u8; 100_000]).unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir(&media).unwrap();
        let out = dir.path().join("a.tar.zst");
        let mut writer =
            ArchiveWriter::new(File::create(&out).unwrap(), 3, 2, CancellationToken::new()).unwrap();
        let mut added = 0;
        writer
            .add_file(b"db/app.db", &db, &std::fs::metadata(&db).unwrap(), &mut |n| {
                added += n
            })
            .unwrap();
        writer
            .add_dir(b"media/0", &std::fs::metadata(&media).unwrap())
            .unwrap();
        let link_meta = std::fs::metadata(&media).unwrap();
        writer.add_symlink(b"media/0/link", b"x", &link_meta).unwrap();
        let Finished {
            manifest,
            size,
            sha256: sha,
            fingerprints,
        } = writer.finish(manifest()).unwrap();
        assert!(fingerprints.is_empty(), "fingerprints for no follower");
        assert_eq!(added, 100_000);
        assert_eq!(manifest.totals.files, 1);
        assert_eq!((manifest.totals.dirs, manifest.totals.symlinks), (1, 1));
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
        let (read, read_size, read_sha) =
            read_archive(&out, None, &mut HashOnly, &mut |_| {}, &|| false).unwrap();
        assert_eq!((read, read_size, Some(read_sha)), (manifest, size, sha));
    }

    #[test]
    fn a_follower_that_decodes_hashes_the_file_and_must_match_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.bin");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&db, &content).unwrap();
        let out = dir.path().join("a.tar.zst");
        let file = File::create(&out).unwrap();
        let front = Front::default();
        let follower = crate::fsutil::Follower::open(&out, front.clone()).unwrap();
        let reader = std::thread::spawn(move || crate::archive::read_followed(follower, None, &|| false));
        let follow = Follow {
            front,
            hashes_file: true,
        };
        let mut writer =
            ArchiveWriter::with(file, Some(follow), None, 3, 2, CancellationToken::new()).unwrap();
        writer
            .add_file(b"db/app.db", &db, &std::fs::metadata(&db).unwrap(), &mut |_| {})
            .unwrap();
        let mut finished = writer.finish(manifest()).unwrap();
        assert_eq!(
            finished.sha256, None,
            "the writer hashed what its follower hashes"
        );
        assert_eq!(finished.fingerprints.len(), 1);
        let followed = reader.join().unwrap().unwrap();
        let tampered = {
            let mut t = finished.fingerprints.clone();
            t[0].1 = crate::archive::Digesting::new(io::empty(), Digests::FINGERPRINT)
                .finish()
                .1
                .fingerprint
                .unwrap();
            t
        };
        // The follower's findings are compared with the writer's, fingerprint and all.
        let original = std::mem::replace(&mut finished.fingerprints, tampered);
        let read_again = crate::archive::read_followed(File::open(&out).unwrap(), None, &|| false).unwrap();
        let err = read_again.check(&finished).unwrap_err();
        assert!(err.to_string().contains("differs from what was written"), "{err}");
        finished.fingerprints = original;
        let sha = followed.check(&finished).unwrap();
        assert_eq!(sha, crate::archive::hash_file(&out).unwrap().1);
        assert_eq!(finished.size, std::fs::metadata(&out).unwrap().len());
    }

    #[test]
    fn a_spliced_frame_reads_back_as_an_ordinary_entry() {
        let dir = tempfile::tempdir().unwrap();
        let before = dir.path().join("before.bin");
        std::fs::write(&before, vec![3u8; 70_000]).unwrap();
        let dump: Vec<u8> = (0..2_000_003u32).map(|i| (i % 241) as u8).collect();
        let mut spool = crate::archive::FrameSpool::create(&dir.path().join("dump.zst"), 3, 2).unwrap();
        spool.write_all(&dump).unwrap();
        let frame = spool.finish().unwrap();
        let out = dir.path().join("a.tar.zst");
        let mut writer =
            ArchiveWriter::new(File::create(&out).unwrap(), 3, 2, CancellationToken::new()).unwrap();
        let meta = std::fs::metadata(&before).unwrap();
        writer
            .add_file(b"media/0/before.bin", &before, &meta, &mut |_| {})
            .unwrap();
        writer.add_frame(b"db/shop.pgdump", &frame, &meta).unwrap();
        writer
            .add_file(b"media/0/after.bin", &before, &meta, &mut |_| {})
            .unwrap();
        let Finished {
            manifest,
            size,
            sha256: sha,
            ..
        } = writer.finish(manifest()).unwrap();
        let (read, read_size, read_sha) =
            read_archive(&out, None, &mut HashOnly, &mut |_| {}, &|| false).unwrap();
        assert_eq!((read, read_size, Some(read_sha)), (manifest.clone(), size, sha));
        let entry = manifest
            .entries
            .iter()
            .find(|e| e.path == "db/shop.pgdump")
            .unwrap();
        assert_eq!(
            (entry.size, entry.sha256.as_str()),
            (frame.size, frame.sha256.as_str())
        );
        // What plain tools see: one zstd stream of several frames, one tar.
        let tar_bytes = zstd::stream::decode_all(File::open(&out).unwrap()).unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "db/shop.pgdump" {
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                assert!(content == dump, "the dump differs");
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "media/0/before.bin",
                "db/shop.pgdump",
                "media/0/after.bin",
                "manifest.json"
            ]
        );
    }

    #[test]
    fn a_file_that_shrinks_while_archived_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("grows.bin");
        std::fs::write(&file, vec![1u8; 10]).unwrap();
        let mut meta_bigger = std::fs::metadata(&file).unwrap();
        std::fs::write(&file, vec![1u8; 20]).unwrap();
        meta_bigger = {
            let _ = &meta_bigger;
            std::fs::metadata(&file).unwrap()
        };
        std::fs::write(&file, vec![1u8; 5]).unwrap();
        let out = dir.path().join("a.tar.zst");
        let mut writer =
            ArchiveWriter::new(File::create(&out).unwrap(), 3, 1, CancellationToken::new()).unwrap();
        let err = writer
            .add_file(b"media/0/grows.bin", &file, &meta_bigger, &mut |_| {})
            .unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Changed {
                    expected: 20,
                    got: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("grows.bin"), "{err}");
    }

    #[test]
    fn a_cancelled_writer_stops() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, vec![1u8; 1 << 20]).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let out = dir.path().join("a.tar.zst");
        let mut writer = ArchiveWriter::new(File::create(&out).unwrap(), 3, 1, cancel).unwrap();
        let err = writer
            .add_file(b"db/f", &file, &std::fs::metadata(&file).unwrap(), &mut |_| {})
            .unwrap_err();
        assert!(matches!(err, ArchiveError::Cancelled), "{err}");
    }
}
