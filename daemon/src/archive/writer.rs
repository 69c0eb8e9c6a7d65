//! [`ArchiveWriter`]: one archive, streamed.
//!
//! Each entry's sha256 is computed while its bytes stream into the tar, the tar into a
//! multi-threaded zstd encoder, and the encoder into the file through a hashing
//! counter, so the archive's own size and sha256 come for free. The tar stream is GNU
//! tar's format, written here ([`put_header`]); content goes to the encoder in
//! [`IO_BUFFER`]-sized chunks read straight from the source. Symlinks are stored as
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

/// A raw archive path as a `Path` (bytes on Unix, written as they are).
fn os_path(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// The manifest's entry of `kind` for `archive_path`, with the mode and mtime of
/// `metadata` (as its tar header has them); no content, no link target.
fn entry(archive_path: &[u8], kind: EntryKind, metadata: &Metadata) -> Entry {
    Entry {
        path: escape(archive_path),
        kind,
        size: 0,
        sha256: String::new(),
        mode: metadata.mode() & 0o7777,
        mtime: metadata.mtime().max(0),
        target: None,
    }
}

/// A tar block: headers and content are padded to it.
const BLOCK: usize = 512;

/// Writes zeros up to the next tar block after `len` bytes of content.
fn pad(out: &mut dyn Write, len: u64) -> io::Result<()> {
    let rest = (BLOCK - (len % BLOCK as u64) as usize) % BLOCK;
    out.write_all(&[0u8; BLOCK][..rest])
}

/// Writes the GNU extension entry (`kind` `L` for a long path, `K` for a long link
/// target) that holds `name` for the header after it.
fn put_long_name(out: &mut dyn Write, kind: tar::EntryType, name: &[u8]) -> io::Result<()> {
    let mut long = tar::Header::new_gnu();
    let marker = b"././@LongLink";
    long.as_old_mut().name[..marker.len()].copy_from_slice(marker);
    long.set_mode(0o644);
    long.set_uid(0);
    long.set_gid(0);
    long.set_mtime(0);
    // The name and a NUL, as GNU tar writes it.
    long.set_size(name.len() as u64 + 1);
    long.set_entry_type(kind);
    long.set_cksum();
    out.write_all(long.as_bytes())?;
    out.write_all(name)?;
    out.write_all(&[0])?;
    pad(out, name.len() as u64 + 1)
}

/// Writes `header` for the entry at `path` (and, for a link, pointing at `target`)
/// as GNU tar does: a path or target that does not fit the header's 100 bytes goes
/// into a long-name entry before it (the header keeps the path's first 100 bytes).
/// Anything else the header refuses (an absolute path, `..`) is an error.
fn put_header(
    out: &mut dyn Write,
    header: &mut tar::Header,
    path: &[u8],
    target: Option<&[u8]>,
) -> io::Result<()> {
    if let Err(e) = header.set_path(os_path(path)) {
        let name = &mut header.as_old_mut().name;
        let max = name.len();
        if path.len() < max {
            return Err(e);
        }
        name.copy_from_slice(&path[..max]);
        put_long_name(out, tar::EntryType::GNULongName, path)?;
    }
    if let Some(target) = target
        && let Err(e) = header.set_link_name(os_path(target))
    {
        if target.len() < header.as_old().linkname.len() {
            return Err(e);
        }
        put_long_name(out, tar::EntryType::GNULongLink, target)?;
    }
    header.set_cksum();
    out.write_all(header.as_bytes())
}

/// The tar stream's destination: zstd frames into the sink. A frame starts with the
/// first byte written after the previous one ended. Normally there is one; a
/// precompressed frame spliced in ([`ArchiveWriter::add_frame`]) ends the current
/// frame and its bytes follow as they are, and a change of the number of compression
/// threads ([`ArchiveWriter::set_workers`]) ends the current frame too.
struct Frames {
    state: FrameState,
    level: i32,
    workers: u32,
}

enum FrameState {
    /// Between frames: the next byte starts one.
    Between(Sink),
    Frame(zstd::stream::write::Encoder<'static, Sink>),
    /// A frame that could not be ended or spliced in: the archive is unusable.
    Broken,
}

impl Frames {
    fn new(sink: Sink, level: i32, workers: u32) -> Frames {
        Frames {
            state: FrameState::Between(sink),
            level,
            workers,
        }
    }

    /// The sink after ending the current frame, if there is one.
    fn end_frame(&mut self) -> io::Result<&mut Sink> {
        self.state = match std::mem::replace(&mut self.state, FrameState::Broken) {
            FrameState::Frame(encoder) => FrameState::Between(encoder.finish()?),
            state => state,
        };
        match &mut self.state {
            FrameState::Between(sink) => Ok(sink),
            _ => Err(broken_off()),
        }
    }

    /// The encoder of the current frame, starting one if need be.
    fn current(&mut self) -> io::Result<&mut zstd::stream::write::Encoder<'static, Sink>> {
        self.state = match std::mem::replace(&mut self.state, FrameState::Broken) {
            FrameState::Between(sink) => FrameState::Frame(encoder(sink, self.level, self.workers)?),
            state => state,
        };
        match &mut self.state {
            FrameState::Frame(encoder) => Ok(encoder),
            _ => Err(broken_off()),
        }
    }

    /// Ends the current frame and copies `frame` (a complete zstd frame) into the sink.
    fn splice(&mut self, frame: &mut dyn Read) -> io::Result<()> {
        super::copy_large(frame, self.end_frame()?)?;
        Ok(())
    }

    /// Compresses what follows with `workers` threads: ends the current frame if it
    /// has another number.
    fn set_workers(&mut self, workers: u32) -> io::Result<()> {
        if workers != self.workers {
            self.end_frame()?;
            self.workers = workers;
        }
        Ok(())
    }

    /// Ends the last frame; the sink, to be finished.
    fn finish(mut self) -> io::Result<Sink> {
        self.end_frame()?;
        match self.state {
            FrameState::Between(sink) => Ok(sink),
            _ => Err(broken_off()),
        }
    }
}

/// A frame that failed to end leaves no encoder and no sink.
fn broken_off() -> io::Error {
    io::Error::other("the archive stream broke off where one zstd frame ended")
}

impl Write for Frames {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.current()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            FrameState::Frame(encoder) => encoder.flush(),
            FrameState::Between(sink) => sink.flush(),
            FrameState::Broken => Err(broken_off()),
        }
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
    /// The tar stream's destination.
    out: Frames,
    /// Entry content on its way from the source to the encoder.
    chunk: Vec<u8>,
    /// Checked on every chunk of entry content, so a shutdown stops a long entry.
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
        let out = Frames::new(sink, level, workers);
        Ok(ArchiveWriter {
            out,
            chunk: vec![0u8; IO_BUFFER],
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
        // Read in chunks of `IO_BUFFER` by `add_stream`: a buffer here would only copy.
        let mut file = File::open(fs_path).map_err(|source| ArchiveError::Source {
            path: fs_path.to_owned(),
            source,
        })?;
        self.add_stream(archive_path, &mut file, metadata.len(), metadata, progress)
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
    /// for a follower, see [`Finished::fingerprints`]). `reader` is read in chunks of
    /// [`IO_BUFFER`] bytes.
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
        let mut content = Digesting::new(reader.take(size), digests);
        let mut header = Self::header(tar::EntryType::Regular, metadata, size);
        put_header(&mut self.out, &mut header, archive_path, None).map_err(ArchiveError::Write)?;
        let copied = self.copy_content(&mut content, progress)?;
        pad(&mut self.out, copied).map_err(ArchiveError::Write)?;
        let (_, digested) = content.finish();
        if digested.size != size {
            return Err(ArchiveError::Changed {
                path: PathBuf::from(os_path(archive_path)),
                expected: size,
                got: digested.size,
            });
        }
        self.push(
            Entry {
                size,
                sha256: digested.sha256.unwrap_or_default(),
                ..entry(archive_path, EntryKind::File, metadata)
            },
            digested.fingerprint,
        );
        Ok(())
    }

    /// Copies `content` into the tar stream a chunk at a time, checking for a shutdown
    /// and reporting each chunk to `progress`. Returns the bytes copied.
    fn copy_content(
        &mut self,
        content: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, ArchiveError> {
        let mut copied = 0u64;
        loop {
            if self.cancel.is_cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            let n = match content.read(&mut self.chunk) {
                Ok(0) => return Ok(copied),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ArchiveError::Write(e)),
            };
            self.out
                .write_all(&self.chunk[..n])
                .map_err(ArchiveError::Write)?;
            copied += n as u64;
            progress(n as u64);
        }
    }

    /// Adds the content of `frame` (see [`super::frame`]) as the regular file
    /// `archive_path`: its tar header goes into the current zstd frame, the frame's
    /// compressed bytes follow as they are, and the padding starts the next frame. The
    /// content is not read here; reading the archive back checks it against `sha256`
    /// like any entry's.
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
        let mut compressed = File::open(&frame.path).map_err(|source| ArchiveError::Source {
            path: frame.path.clone(),
            source,
        })?;
        let out = &mut self.out;
        put_header(out, &mut header, archive_path, None)
            .and_then(|()| out.splice(&mut compressed))
            .and_then(|()| pad(out, frame.size))
            .map_err(ArchiveError::Write)?;
        self.push(
            Entry {
                size: frame.size,
                sha256: frame.sha256.clone(),
                ..entry(archive_path, EntryKind::File, metadata)
            },
            Some(frame.fingerprint),
        );
        Ok(())
    }

    /// Adds a directory entry.
    pub fn add_dir(&mut self, archive_path: &[u8], metadata: &Metadata) -> Result<(), ArchiveError> {
        let mut header = Self::header(tar::EntryType::Directory, metadata, 0);
        put_header(&mut self.out, &mut header, archive_path, None).map_err(ArchiveError::Write)?;
        self.push(entry(archive_path, EntryKind::Dir, metadata), None);
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
        put_header(&mut self.out, &mut header, archive_path, Some(target)).map_err(ArchiveError::Write)?;
        self.push(
            Entry {
                target: Some(escape(target)),
                ..entry(archive_path, EntryKind::Symlink, metadata)
            },
            None,
        );
        Ok(())
    }

    /// Compresses what follows with `workers` threads (in a new zstd frame if that
    /// is another number).
    pub fn set_workers(&mut self, workers: u32) -> Result<(), ArchiveError> {
        self.out.set_workers(workers).map_err(ArchiveError::Write)
    }

    /// Notes media entries that could not be archived and those excluded on purpose,
    /// for the manifest's totals.
    pub fn count_left_out(&mut self, skipped: u64, excluded: u64) {
        self.totals.skipped += skipped;
        self.totals.excluded += excluded;
    }

    /// Writes `manifest` (with the entries and totals filled in) as the last entry,
    /// ends the tar stream (two zero blocks), completes the zstd stream and fsyncs the
    /// file.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<Finished, ArchiveError> {
        manifest.entries = std::mem::take(&mut self.entries);
        manifest.totals = self.totals.clone();
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::Write(e.into()))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        let out = &mut self.out;
        put_header(out, &mut header, MANIFEST_PATH.as_bytes(), None)
            .and_then(|()| out.write_all(&json))
            .and_then(|()| pad(out, json.len() as u64))
            .and_then(|()| out.write_all(&[0u8; 2 * BLOCK]))
            .map_err(ArchiveError::Write)?;
        let output = self
            .out
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
    fn long_names_and_link_targets_go_into_gnu_long_name_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        let content: Vec<u8> = (0..700_001u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&file, &content).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        // 100 bytes exactly fit the header; 101 and more need the extension; a name
        // that is not UTF-8 is written byte for byte either way.
        let mut long_file = b"media/0/".to_vec();
        long_file.extend(std::iter::repeat_n(b'x', 140));
        long_file.extend_from_slice(b"/caf\xe9.bin");
        let fits = [b"media/0/".as_slice(), &[b'y'; 92]].concat();
        let long_dir = [b"media/0/".as_slice(), &[b'd'; 120]].concat();
        let long_target = [b"/".as_slice(), &[b't'; 150]].concat();
        let out = dir.path().join("a.tar.zst");
        let mut writer =
            ArchiveWriter::new(File::create(&out).unwrap(), 3, 1, CancellationToken::new()).unwrap();
        writer.add_file(b"db/app.db", &file, &meta, &mut |_| {}).unwrap();
        writer.add_dir(&long_dir, &meta).unwrap();
        writer.add_file(&long_file, &file, &meta, &mut |_| {}).unwrap();
        writer.add_file(&fits, &file, &meta, &mut |_| {}).unwrap();
        writer.add_symlink(b"media/0/link", &long_target, &meta).unwrap();
        let Finished { manifest, sha256, .. } = writer.finish(manifest()).unwrap();
        let (read, _, read_sha) = read_archive(&out, None, &mut HashOnly, &mut |_| {}, &|| false).unwrap();
        assert_eq!((read, Some(read_sha)), (manifest, sha256));
        // What another tar reader sees: the full names, the target, the content.
        let tar_bytes = zstd::stream::decode_all(File::open(&out).unwrap()).unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path_bytes().into_owned();
            let target = entry.link_name_bytes().map(|t| t.into_owned());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if entry.header().entry_type().is_file() && path != b"manifest.json" {
                assert!(
                    data == content,
                    "the content of {}",
                    String::from_utf8_lossy(&path)
                );
            }
            seen.push((path, target));
        }
        assert_eq!(
            seen,
            [
                (b"db/app.db".to_vec(), None),
                (long_dir, None),
                (long_file, None),
                (fits, None),
                (b"media/0/link".to_vec(), Some(long_target)),
                (b"manifest.json".to_vec(), None),
            ]
        );
    }

    #[test]
    fn a_change_of_compression_threads_starts_a_frame_and_reads_back_as_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        let content: Vec<u8> = (0..1_500_000u32).map(|i| (i * 31 % 247) as u8).collect();
        std::fs::write(&file, &content).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let out = dir.path().join("a.tar.zst");
        let mut writer =
            ArchiveWriter::new(File::create(&out).unwrap(), 3, 2, CancellationToken::new()).unwrap();
        // Before anything is written no frame has started: nothing to end.
        writer.set_workers(1).unwrap();
        writer.add_file(b"db/app.db", &file, &meta, &mut |_| {}).unwrap();
        writer.set_workers(1).unwrap();
        writer
            .add_file(b"media/0/a.bin", &file, &meta, &mut |_| {})
            .unwrap();
        writer.set_workers(2).unwrap();
        writer
            .add_file(b"media/0/b.bin", &file, &meta, &mut |_| {})
            .unwrap();
        let Finished { manifest, sha256, .. } = writer.finish(manifest()).unwrap();
        let (read, _, read_sha) = read_archive(&out, None, &mut HashOnly, &mut |_| {}, &|| false).unwrap();
        assert_eq!((read, Some(read_sha)), (manifest, sha256));
        let bytes = std::fs::read(&out).unwrap();
        let frames = bytes
            .windows(4)
            .filter(|w| *w == [0x28, 0xb5, 0x2f, 0xfd])
            .count();
        assert!(
            frames >= 2,
            "one frame per number of threads, found {frames} frame magics"
        );
        let tar_bytes = zstd::stream::decode_all(bytes.as_slice()).unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut files = 0;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if entry.path_bytes().as_ref() != b"manifest.json" {
                assert!(data == content);
                files += 1;
            }
        }
        assert_eq!(files, 3);
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
