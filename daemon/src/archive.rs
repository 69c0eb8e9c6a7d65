//! The `.tar.zst` archive: a streaming writer and a reader that trusts nothing.
//!
//! Layout: `db/<name>` (the snapshot), `media/<n>/...` (the n-th media directory, with
//! `media/<n>` itself as a directory entry), and `manifest.json` last. It is a plain
//! POSIX/GNU tar in one zstd stream, so `tar --zstd -xf` restores it by hand.
//!
//! **Writing** ([`ArchiveWriter`]): each entry's sha256 is computed while its bytes
//! stream into the tar, the tar into a multi-threaded zstd encoder, and the encoder into
//! the file through a hashing counter, so the archive's own size and sha256 come for
//! free. Symlinks are stored as symlinks and never followed; sockets, devices, fifos,
//! names that are not UTF-8 and symlinks that point outside their media directory are
//! skipped with a warning (they could not be restored safely).
//!
//! **Reading** ([`read_archive`]): one streaming pass. Every entry is checked before a
//! visitor sees it — path shape, type (no hard links, devices or fifos), no duplicates,
//! nothing after the manifest — and, when the expected manifest is known (a catalogued
//! backup's sidecar), against that manifest's entry *before* its bytes are read. Each
//! entry's sha256 is computed as the visitor reads; at the end the archive's manifest
//! must list exactly the entries seen, with the same kinds, sizes and hashes, and the
//! file's own sha256 must match the sidecar.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::fsutil::StreamedFile;
use crate::manifest::{self, Entry, EntryKind, MANIFEST_PATH, Manifest, Totals};

/// The largest `manifest.json` the reader accepts (a manifest of a million entries is
/// about 250 MiB; anything larger is hostile).
const MAX_MANIFEST_BYTES: u64 = 512 << 20;

/// Bytes per zstd worker job (see [`ArchiveWriter::new`]).
const ZSTD_JOB_SIZE: u32 = 2 << 20;

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

fn invalid(message: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(message.into())
}

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

/// Counts and hashes the bytes written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the byte count and the hex sha256.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.count, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes the bytes read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The byte count and the hex sha256 of what was read.
    pub fn finish(self) -> (u64, String) {
        (self.count, hex(&self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes a whole file: its size and hex sha256.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut reader = HashingReader::new(File::open(path)?);
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.finish())
}

/// One item found under a media directory, in archive order.
#[derive(Debug)]
pub struct MediaItem {
    /// Path inside the archive (`media/<n>/...`).
    pub archive_path: String,
    pub fs_path: PathBuf,
    pub metadata: Metadata,
    /// For symlinks: the link target as stored.
    pub target: Option<String>,
}

/// Why a media item was skipped.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub why: &'static str,
}

/// Walks media directory number `index`, without following symlinks, into archive
/// order (parents before children, names sorted). The root itself is the first item.
pub fn walk_media(index: usize, root: &Path) -> Result<(Vec<MediaItem>, Vec<Skipped>), ArchiveError> {
    let source = |path: &Path, source| ArchiveError::Source {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(root).map_err(|e| source(root, e))?;
    if !metadata.is_dir() {
        return Err(ArchiveError::Source {
            path: root.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "media path is not a directory"),
        });
    }
    let mut items = vec![MediaItem {
        archive_path: format!("media/{index}"),
        fs_path: root.to_owned(),
        metadata,
        target: None,
    }];
    let mut skipped = Vec::new();
    let mut stack = vec![(root.to_owned(), format!("media/{index}"), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| source(&dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| source(&dir, e))?;
        children.sort_by_key(|c| c.file_name());
        let mut subdirs = Vec::new();
        for child in children {
            let path = child.path();
            let Some(name) = child.file_name().to_str().map(str::to_owned) else {
                skipped.push(Skipped {
                    path,
                    why: "its name is not valid UTF-8",
                });
                continue;
            };
            let metadata = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Deleted between listing and stat: it is simply not in this backup.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(source(&path, e)),
            };
            let archive_path = format!("{prefix}/{name}");
            let file_type = metadata.file_type();
            let mut target = None;
            if file_type.is_symlink() {
                let link = std::fs::read_link(&path).map_err(|e| source(&path, e))?;
                match link.to_str() {
                    Some(t) if symlink_stays_inside(depth, t) => target = Some(t.to_owned()),
                    Some(_) => {
                        skipped.push(Skipped {
                            path,
                            why: "it is a symlink pointing outside its media directory",
                        });
                        continue;
                    }
                    None => {
                        skipped.push(Skipped {
                            path,
                            why: "its symlink target is not valid UTF-8",
                        });
                        continue;
                    }
                }
            } else if file_type.is_socket()
                || file_type.is_fifo()
                || file_type.is_block_device()
                || file_type.is_char_device()
            {
                skipped.push(Skipped {
                    path,
                    why: "it is a socket, fifo or device",
                });
                continue;
            }
            if file_type.is_dir() {
                subdirs.push((path.clone(), archive_path.clone(), depth + 1));
            }
            items.push(MediaItem {
                archive_path,
                fs_path: path,
                metadata,
                target,
            });
        }
        // Depth-first in sorted order: push in reverse so the first name pops first.
        stack.extend(subdirs.into_iter().rev());
    }
    // Directories were visited depth-first but their children listed after all
    // siblings; sort for a stable parent-before-child order.
    items[1..].sort_by(|a, b| a.archive_path.as_bytes().cmp(b.archive_path.as_bytes()));
    Ok((items, skipped))
}

/// Whether a symlink at `depth` directories below its media root, with `target`,
/// resolves (lexically) inside that root.
pub fn symlink_stays_inside(depth: usize, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut level = depth as isize;
    for component in Path::new(target).components() {
        match component {
            Component::ParentDir => level -= 1,
            Component::Normal(_) => level += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if level < 0 {
            return false;
        }
    }
    true
}

type Encoder = zstd::stream::write::Encoder<'static, HashingWriter<StreamedFile>>;

/// Writes one archive. Call [`ArchiveWriter::finish`] to complete it; dropping it
/// leaves an incomplete file for the caller to remove.
pub struct ArchiveWriter {
    tar: tar::Builder<Encoder>,
    /// Checked on every read of entry content, so a shutdown stops a long entry.
    cancel: CancellationToken,
    entries: Vec<Entry>,
    totals: Totals,
}

impl ArchiveWriter {
    /// Starts an archive in `file` at zstd `level` with `workers` compression threads.
    pub fn new(
        file: File,
        level: i32,
        workers: u32,
        cancel: CancellationToken,
    ) -> Result<Self, ArchiveError> {
        let mut encoder =
            zstd::stream::write::Encoder::new(HashingWriter::new(StreamedFile::new(file)), level)
                .map_err(ArchiveError::Write)?;
        encoder.include_checksum(true).map_err(ArchiveError::Write)?;
        if workers > 1 {
            encoder.multithread(workers).map_err(ArchiveError::Write)?;
            // zstd's default job is 4x the window (8 MiB at level 3), and it keeps
            // input and output buffers for several jobs per worker: ~65 MiB here.
            // 2 MiB jobs keep cofferd's peak near 56 MiB (4 MiB jobs: 72 MiB, over
            // the 64 MiB target) for ~10% of zstd's speed (zstd CLI, -B2M vs default).
            encoder
                .set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))
                .map_err(ArchiveError::Write)?;
        }
        let mut tar = tar::Builder::new(encoder);
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        Ok(ArchiveWriter {
            tar,
            cancel,
            entries: Vec::new(),
            totals: Totals::default(),
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

    fn push(&mut self, entry: Entry) {
        self.totals.count(&entry);
        self.entries.push(entry);
    }

    /// Adds the regular file at `fs_path` as `archive_path`, hashing it on the way,
    /// and calls `progress` with the bytes added.
    pub fn add_file(
        &mut self,
        archive_path: &str,
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
    /// owner and mtime of `metadata`, hashing them on the way.
    pub fn add_stream(
        &mut self,
        archive_path: &str,
        reader: &mut dyn Read,
        size: u64,
        metadata: &Metadata,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ArchiveError> {
        let mut reader = ProgressReader {
            inner: HashingReader::new(reader.take(size)),
            progress,
            cancel: &self.cancel,
        };
        let mut header = Self::header(tar::EntryType::Regular, metadata, size);
        self.tar
            .append_data(&mut header, archive_path, &mut reader)
            .map_err(|e| {
                if self.cancel.is_cancelled() {
                    ArchiveError::Cancelled
                } else {
                    ArchiveError::Write(e)
                }
            })?;
        let (got, sha256) = reader.inner.finish();
        if got != size {
            return Err(ArchiveError::Changed {
                path: PathBuf::from(archive_path),
                expected: size,
                got,
            });
        }
        self.push(Entry {
            path: archive_path.to_owned(),
            kind: EntryKind::File,
            size,
            sha256,
            mode: metadata.mode() & 0o7777,
            mtime: metadata.mtime(),
            target: None,
        });
        Ok(())
    }

    /// Adds a directory entry.
    pub fn add_dir(&mut self, archive_path: &str, metadata: &Metadata) -> Result<(), ArchiveError> {
        let mut header = Self::header(tar::EntryType::Directory, metadata, 0);
        self.tar
            .append_data(&mut header, archive_path, io::empty())
            .map_err(ArchiveError::Write)?;
        self.push(Entry {
            path: archive_path.to_owned(),
            kind: EntryKind::Dir,
            size: 0,
            sha256: String::new(),
            mode: metadata.mode() & 0o7777,
            mtime: metadata.mtime(),
            target: None,
        });
        Ok(())
    }

    /// Adds a symlink entry pointing at `target` (stored, never followed).
    pub fn add_symlink(
        &mut self,
        archive_path: &str,
        target: &str,
        metadata: &Metadata,
    ) -> Result<(), ArchiveError> {
        let mut header = Self::header(tar::EntryType::Symlink, metadata, 0);
        self.tar
            .append_link(&mut header, archive_path, target)
            .map_err(ArchiveError::Write)?;
        self.push(Entry {
            path: archive_path.to_owned(),
            kind: EntryKind::Symlink,
            size: 0,
            sha256: String::new(),
            mode: metadata.mode() & 0o7777,
            mtime: metadata.mtime(),
            target: Some(target.to_owned()),
        });
        Ok(())
    }

    /// Adds one walked media item.
    pub fn add_media_item(
        &mut self,
        item: &MediaItem,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ArchiveError> {
        let file_type = item.metadata.file_type();
        if let Some(target) = &item.target {
            self.add_symlink(&item.archive_path, target, &item.metadata)
        } else if file_type.is_dir() {
            self.add_dir(&item.archive_path, &item.metadata)
        } else {
            self.add_file(&item.archive_path, &item.fs_path, &item.metadata, progress)
        }
    }

    /// Notes entries left out, for the manifest's totals.
    pub fn count_skipped(&mut self, n: u64) {
        self.totals.skipped += n;
    }

    /// Writes `manifest` (with the entries and totals filled in) as the last entry,
    /// completes the tar and zstd streams and fsyncs the file. Returns the manifest, the
    /// archive's size and its sha256.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<(Manifest, u64, String), ArchiveError> {
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
        let encoder = self.tar.into_inner().map_err(ArchiveError::Write)?;
        let hashing = encoder.finish().map_err(ArchiveError::Write)?;
        let (file, size, sha256) = hashing.finish();
        file.into_inner().sync_all().map_err(ArchiveError::Write)?;
        Ok((manifest, size, sha256))
    }
}

/// Reports progress every few MiB as a file streams into the archive.
struct ProgressReader<'a, R> {
    inner: HashingReader<R>,
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

/// An entry as the reader found it in the archive, already checked.
#[derive(Debug, Clone)]
pub struct FoundEntry {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub target: Option<String>,
}

/// What the reader does with each entry's content.
pub trait Visitor {
    /// Called for each entry except the manifest. `content` yields the entry's bytes
    /// (empty for directories and symlinks); whatever is not read is drained and hashed
    /// by the reader.
    fn entry(&mut self, entry: &FoundEntry, content: &mut dyn Read) -> Result<(), ArchiveError>;
}

/// A visitor that only reads (for verification).
pub struct HashOnly;

impl Visitor for HashOnly {
    fn entry(&mut self, _entry: &FoundEntry, _content: &mut dyn Read) -> Result<(), ArchiveError> {
        Ok(())
    }
}

/// What the reader expects, when it knows (a catalogued backup's sidecar).
pub struct Expected<'a> {
    pub manifest: &'a Manifest,
    pub size: u64,
    pub sha256: &'a str,
}

/// Reads the archive at `path` in one streaming pass, checking everything the module
/// doc lists, and hands each entry to `visitor`. `progress` gets the uncompressed
/// bytes of entries read so far (the sidecar's `totals.bytes` is the total). Returns the archive's manifest, its size and its sha256.
pub fn read_archive(
    path: &Path,
    expected: Option<Expected<'_>>,
    visitor: &mut dyn Visitor,
    progress: &mut dyn FnMut(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<(Manifest, u64, String), ArchiveError> {
    let file = File::open(path).map_err(|source| ArchiveError::Source {
        path: path.to_owned(),
        source,
    })?;
    if let Some(exp) = &expected {
        let actual = file.metadata().map_err(ArchiveError::Read)?.len();
        if actual != exp.size {
            return Err(invalid(format!(
                "its size is {actual} bytes but its sidecar says {} (truncated or replaced)",
                exp.size
            )));
        }
    }
    let mut hashing = HashingReader::new(io::BufReader::with_capacity(1 << 20, file));
    let expected_entries: Option<HashMap<&str, &Entry>> = expected.as_ref().map(|e| {
        e.manifest
            .entries
            .iter()
            .map(|entry| (entry.path.as_str(), entry))
            .collect()
    });

    let mut seen: Vec<(FoundEntry, String)> = Vec::new();
    let mut seen_paths: HashSet<String> = HashSet::new();
    let mut symlinks: HashSet<String> = HashSet::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    {
        let decoder = zstd::stream::read::Decoder::new(&mut hashing).map_err(ArchiveError::Read)?;
        let mut archive = tar::Archive::new(decoder);
        let entries = archive.entries().map_err(ArchiveError::Read)?;
        let (mut done, mut last_report) = (0u64, 0u64);
        for entry in entries {
            if cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            let mut entry = entry.map_err(read_error)?;
            let raw_path = entry.path_bytes().into_owned();
            let path =
                String::from_utf8(raw_path).map_err(|_| invalid("an entry's path is not valid UTF-8"))?;
            if manifest_bytes.is_some() {
                return Err(invalid(format!(
                    "entry '{}' follows the manifest",
                    path.escape_debug()
                )));
            }
            let header = entry.header();
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink,
                tar::EntryType::Link => {
                    return Err(invalid(format!("entry '{}' is a hard link", path.escape_debug())));
                }
                other => {
                    let what = match other {
                        tar::EntryType::Char => "a character device".to_owned(),
                        tar::EntryType::Block => "a block device".to_owned(),
                        tar::EntryType::Fifo => "a fifo".to_owned(),
                        tar::EntryType::GNUSparse => "a sparse file".to_owned(),
                        // Named by its type byte: `{other:?}` would print Rust's
                        // `__Nonexhaustive(..)` for unknown types.
                        t => format!("of tar type '{}'", t.as_byte().escape_ascii()),
                    };
                    return Err(invalid(format!(
                        "entry '{}' is {what}; only files, directories and symlinks are allowed",
                        path.escape_debug()
                    )));
                }
            };
            let size = entry.size();
            if path == MANIFEST_PATH {
                if kind != EntryKind::File || size > MAX_MANIFEST_BYTES {
                    return Err(invalid("the manifest entry is not a plausible file"));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes).map_err(read_error)?;
                manifest_bytes = Some(bytes);
                continue;
            }
            manifest::check_entry_path(&path, usize::MAX).map_err(invalid)?;
            let path = path.trim_end_matches('/').to_owned();
            if !seen_paths.insert(path.clone()) {
                return Err(invalid(format!("entry '{}' appears twice", path.escape_debug())));
            }
            if let Some(through) = ancestors(&path).find(|a| symlinks.contains(*a)) {
                return Err(invalid(format!(
                    "entry '{}' lies beneath the symlink '{through}'",
                    path.escape_debug()
                )));
            }
            let target = match kind {
                EntryKind::Symlink => {
                    let link = entry
                        .link_name_bytes()
                        .ok_or_else(|| invalid(format!("symlink '{}' has no target", path.escape_debug())))?;
                    let link = String::from_utf8(link.into_owned()).map_err(|_| {
                        invalid(format!(
                            "symlink '{}' has a target that is not UTF-8",
                            path.escape_debug()
                        ))
                    })?;
                    let depth = path.split('/').count().saturating_sub(3);
                    if !path.starts_with("media/") || !symlink_stays_inside(depth, &link) {
                        return Err(invalid(format!(
                            "symlink '{}' points outside its directory ('{}')",
                            path.escape_debug(),
                            link.escape_debug()
                        )));
                    }
                    symlinks.insert(path.clone());
                    Some(link)
                }
                _ => None,
            };
            let found = FoundEntry {
                path,
                kind,
                size: if kind == EntryKind::File { size } else { 0 },
                mode: header.mode().map_err(read_error)? & 0o7777,
                mtime: header.mtime().map_err(read_error)? as i64,
                target,
            };
            if let Some(map) = &expected_entries {
                let want = map.get(found.path.as_str()).ok_or_else(|| {
                    invalid(format!(
                        "entry '{}' is not in the manifest",
                        found.path.escape_debug()
                    ))
                })?;
                check_against(&found, want)?;
            }
            let mut content = HashingReader::new(&mut entry);
            visitor.entry(&found, &mut content)?;
            copy_large(&mut content, &mut io::sink()).map_err(read_error)?;
            let (got, sha256) = content.finish();
            if got != found.size {
                return Err(invalid(format!(
                    "entry '{}' is truncated",
                    found.path.escape_debug()
                )));
            }
            if let Some(map) = &expected_entries
                && let Some(want) = map.get(found.path.as_str())
                && want.kind == EntryKind::File
                && want.sha256 != sha256
            {
                return Err(invalid(format!(
                    "the content of '{}' does not match its sha256 in the manifest",
                    found.path.escape_debug()
                )));
            }
            done += found.size;
            seen.push((found, sha256));
            if done >= last_report + (4 << 20) {
                last_report = done;
                progress(done);
            }
        }
        progress(done);
        // Read the rest of the zstd stream (end-of-archive blocks, frame checksum).
        let mut decoder = archive.into_inner();
        io::copy(&mut decoder, &mut io::sink()).map_err(read_error)?;
    }
    // Whatever follows the zstd frame still counts toward the file's hash.
    io::copy(&mut hashing, &mut io::sink()).map_err(ArchiveError::Read)?;
    let (size, sha256) = hashing.finish();

    let bytes = manifest_bytes.ok_or_else(|| invalid("it has no manifest.json (truncated?)"))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("manifest.json cannot be parsed: {e}")))?;
    manifest.validate().map_err(invalid)?;
    if let Some(exp) = &expected {
        if &manifest != exp.manifest {
            return Err(invalid("manifest.json differs from the backup's sidecar"));
        }
        if sha256 != exp.sha256 {
            return Err(invalid(format!(
                "its sha256 is {sha256} but its sidecar says {}",
                exp.sha256
            )));
        }
    }
    check_all_listed(&manifest, &seen)?;
    Ok((manifest, size, sha256))
}

fn read_error(e: io::Error) -> ArchiveError {
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

/// The strict ancestors of an archive path (`media/0/a/b` → `media/0/a`, `media/0`, `media`).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Compares an entry's header with its manifest record.
fn check_against(found: &FoundEntry, want: &Entry) -> Result<(), ArchiveError> {
    let what = |field: &str| {
        invalid(format!(
            "entry '{}' has a {field} that differs from the manifest",
            found.path.escape_debug()
        ))
    };
    if found.kind != want.kind {
        return Err(what("type"));
    }
    if found.size != want.size {
        return Err(what("size"));
    }
    if found.mode != want.mode {
        return Err(what("mode"));
    }
    if found.target != want.target {
        return Err(what("link target"));
    }
    Ok(())
}

/// The manifest must list exactly the entries seen, with the same facts and hashes.
fn check_all_listed(manifest: &Manifest, seen: &[(FoundEntry, String)]) -> Result<(), ArchiveError> {
    let listed: HashMap<&str, &Entry> = manifest.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    for (found, sha256) in seen {
        let want = listed.get(found.path.as_str()).ok_or_else(|| {
            invalid(format!(
                "entry '{}' is not in the manifest",
                found.path.escape_debug()
            ))
        })?;
        check_against(found, want)?;
        if want.kind == EntryKind::File && &want.sha256 != sha256 {
            return Err(invalid(format!(
                "the content of '{}' does not match its sha256 in the manifest",
                found.path.escape_debug()
            )));
        }
        manifest::check_entry_path(&found.path, manifest.media_roots.len()).map_err(invalid)?;
    }
    if seen.len() != manifest.entries.len() {
        let seen_paths: HashSet<&str> = seen.iter().map(|(f, _)| f.path.as_str()).collect();
        let missing = manifest
            .entries
            .iter()
            .find(|e| !seen_paths.contains(e.path.as_str()))
            .map(|e| e.path.clone())
            .unwrap_or_default();
        return Err(invalid(format!(
            "the manifest lists '{}' but the archive does not contain it",
            missing.escape_debug()
        )));
    }
    Ok(())
}
