//! [`read_archive`]: one streaming pass over an archive that trusts nothing.
//!
//! Every entry is checked before a visitor sees it — path shape, type (no hard links,
//! devices or fifos), no duplicates, nothing after the manifest — and, when the
//! expected manifest is known (a catalogued backup's sidecar), against that manifest's
//! entry *before* its bytes are read. Each entry's sha256 is computed as the visitor
//! reads; at the end the archive's manifest must list exactly the entries seen, with
//! the same kinds, sizes and hashes, and the file's own sha256 must match the sidecar.
//! [`read_followed`] reads a backup back while it is written: it fingerprints the
//! content instead, and [`Followed::check`] compares that with what the writer read.
//!
//! An age-encrypted archive (`.tar.zst.age`, told by its first bytes) is decrypted as
//! it streams when keys are given ([`read_archive_keyed`], [`read_followed`]); the
//! hashes are the ciphertext's, and nothing counts as read until age's final chunk
//! was authenticated. [`check_file`] checks only the file's size and sha256, which is
//! what can be verified of an encrypted archive without a key.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::crypt::{self, CryptError, Identities};
use super::hash::{Digested, Digesting, Digests, Fingerprint};
use super::writer::Finished;
use super::{ArchiveError, HashingReader, IO_BUFFER, copy_large, data_error, invalid};
use crate::manifest::{self, Entry, EntryKind, MANIFEST_PATH, Manifest, escape};

/// The largest `manifest.json` the reader accepts (a manifest of a million entries is
/// about 250 MiB; anything larger is hostile).
const MAX_MANIFEST_BYTES: u64 = 512 << 20;

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

/// Reads the plain archive at `path` in one streaming pass, checking everything the
/// module doc lists, and hands each entry to `visitor`. `progress` gets the archive's
/// bytes read so far (its size is the total). Returns the archive's manifest, its size
/// and its sha256. An age-encrypted archive is refused: see [`read_archive_keyed`].
pub fn read_archive(
    path: &Path,
    expected: Option<Expected<'_>>,
    visitor: &mut dyn Visitor,
    progress: &mut dyn FnMut(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<(Manifest, u64, String), ArchiveError> {
    read_archive_keyed(path, None, expected, visitor, progress, cancelled)
}

/// [`read_archive`] for a `.tar.zst` or a `.tar.zst.age` archive, told apart by its
/// first bytes: an age file is decrypted with `keys` as it streams (the size and
/// sha256 are the ciphertext's, as the sidecar records them), and trusted only once
/// age's final chunk was authenticated ([`crypt::DecryptReader::finish`]), which this
/// does before returning. A visitor that wrote entries out must treat them as
/// provisional until then: restores extract into staging and commit afterwards.
pub fn read_archive_keyed(
    path: &Path,
    keys: Option<&Identities>,
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
    let (manifest, size, sha256, seen) = read_stream(
        file,
        keys,
        expected.as_ref(),
        Digests::SHA256,
        visitor,
        progress,
        cancelled,
    )?;
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

/// Reads an archive being written, arriving through `reader` (a
/// [`crate::fsutil::Follower`]; decrypted with `keys` if it is age-encrypted), in one
/// streaming pass: every entry is checked as [`read_archive`] checks it without a
/// sidecar, and its content is fingerprinted rather than hashed (see
/// [`crate::archive::hash`]). What it found means nothing until
/// [`Followed::check`] compared it with what the writer wrote.
pub fn read_followed(
    reader: impl Read,
    keys: Option<&Identities>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Followed, ArchiveError> {
    let (manifest, size, sha256, seen) = read_stream(
        reader,
        keys,
        None,
        Digests::FINGERPRINT,
        &mut HashOnly,
        &mut |_| {},
        cancelled,
    )?;
    check_all_listed(&manifest, &seen)?;
    let fingerprints = seen
        .into_iter()
        .filter(|(found, _)| found.kind == EntryKind::File)
        .filter_map(|(found, digested)| Some((found.path, digested.fingerprint?)))
        .collect();
    Ok(Followed {
        size,
        sha256,
        decoded: Some((manifest, fingerprints)),
    })
}

/// Hashes an archive being written without opening it (ciphertext read back without
/// a key): only its size and sha256 can be compared with the writer's.
pub fn hash_followed(reader: impl Read, cancelled: &dyn Fn() -> bool) -> Result<Followed, ArchiveError> {
    let (size, sha256) = hash_reader(reader, &mut |_| {}, cancelled)?;
    Ok(Followed {
        size,
        sha256,
        decoded: None,
    })
}

/// What reading an archive back while it was written found.
#[must_use = "what was read back proves nothing until it is checked against what was written"]
#[derive(Debug)]
pub struct Followed {
    size: u64,
    sha256: String,
    /// The manifest and each file entry's fingerprint, in archive order, if the
    /// archive was decoded (not for ciphertext read without a key).
    decoded: Option<(Manifest, Vec<(String, Fingerprint)>)>,
}

impl Followed {
    /// What was read back must be exactly what was written: the same manifest, every
    /// file entry's content the bytes the writer read and hashed into it (equal
    /// fingerprints), the same file size and, where the writer hashed the file too, the
    /// same sha256. Returns the file's sha256.
    pub fn check(self, written: &Finished) -> Result<String, ArchiveError> {
        let differs = || invalid("what was read back differs from what was written");
        if self.size != written.size || written.sha256.as_ref().is_some_and(|s| *s != self.sha256) {
            return Err(differs());
        }
        match &self.decoded {
            Some((manifest, fingerprints))
                if *manifest != written.manifest || *fingerprints != written.fingerprints =>
            {
                return Err(differs());
            }
            // Only the hashes of the file were compared: there must have been two.
            None if written.sha256.is_none() => {
                return Err(invalid(
                    "the archive was neither decoded nor hashed as it was written",
                ));
            }
            _ => {}
        }
        Ok(self.sha256)
    }
}

/// The pass shared by [`read_archive`] and [`read_followed`]: the manifest, the
/// archive's size and sha256, and every entry seen with its content's digests.
type PassResult = (Manifest, u64, String, Vec<(FoundEntry, Digested)>);

fn read_stream(
    reader: impl io::Read,
    keys: Option<&Identities>,
    expected: Option<&Expected<'_>>,
    digests: Digests,
    visitor: &mut dyn Visitor,
    progress: &mut dyn FnMut(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<PassResult, ArchiveError> {
    // Progress is the archive's own bytes read: its size is always known (uploads
    // included), where the content's total is only known from a sidecar.
    let read = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut counted = Counted {
        inner: reader,
        read: read.clone(),
    };
    // The first bytes say whether it is age-encrypted (a followed file may come a
    // few bytes at a time, so read until there are enough or it ends).
    let mut head = Vec::with_capacity(crypt::AGE_MAGIC.len());
    (&mut counted)
        .take(crypt::AGE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(ArchiveError::Read)?;
    let encrypted = crypt::is_age_file(&head);
    let input = io::Cursor::new(head).chain(counted);
    let mut hashing = HashingReader::new(io::BufReader::with_capacity(1 << 20, input));
    let progress = &mut |_content: u64| progress(read.get());
    let mut pass = Pass::new(expected, digests);
    if encrypted {
        let keys = keys.ok_or_else(|| {
            ArchiveError::from(CryptError::NoIdentity {
                recipients: "(the archive's header does not say which)".into(),
            })
        })?;
        let mut plain = crypt::decrypt_reader(&mut hashing, keys).map_err(ArchiveError::from)?;
        pass.read_tar(&mut plain, visitor, progress, cancelled)?;
        // The final chunk's check: until it passed, everything read is provisional.
        plain.finish().map_err(ArchiveError::from)?;
    } else {
        pass.read_tar(&mut hashing, visitor, progress, cancelled)?;
    }
    // Whatever follows the zstd frame (or age's last chunk) still counts toward the
    // file's hash.
    io::copy(&mut hashing, &mut io::sink()).map_err(ArchiveError::Read)?;
    let (size, sha256) = hashing.finish();
    let (manifest, seen) = pass.finish()?;
    Ok((manifest, size, sha256, seen))
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: io::Read> io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Checks only the size and sha256 of the file at `path` against `size` and
/// `sha256`, without opening the archive inside: what can be verified of an encrypted
/// archive without its key. `progress(bytes read, file size)`.
pub fn check_file(
    path: &Path,
    size: u64,
    sha256: &str,
    progress: &mut dyn FnMut(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<(), ArchiveError> {
    let file = File::open(path).map_err(|source| ArchiveError::Source {
        path: path.to_owned(),
        source,
    })?;
    let actual = file.metadata().map_err(ArchiveError::Read)?.len();
    if actual != size {
        return Err(invalid(format!(
            "its size is {actual} bytes but its sidecar says {size} (truncated or replaced)"
        )));
    }
    let (read, got) = hash_reader(file, &mut |done| progress(done, size), cancelled)?;
    progress(read, size);
    if got != sha256 {
        return Err(invalid(format!(
            "its sha256 is {got} but its sidecar says {sha256}"
        )));
    }
    Ok(())
}

/// The size and hex sha256 of everything `reader` yields (a file, or a follower of one
/// being written); `progress(bytes read)` every few MiB.
pub fn hash_reader(
    reader: impl Read,
    progress: &mut dyn FnMut(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<(u64, String), ArchiveError> {
    let mut reader = HashingReader::new(reader);
    let mut buf = vec![0u8; IO_BUFFER];
    let mut reported = 0;
    loop {
        if cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        match reader.read(&mut buf) {
            Ok(0) => return Ok(reader.finish()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArchiveError::Read(e)),
        }
        if reader.count() >= reported + (4 << 20) {
            reported = reader.count();
            progress(reported);
        }
    }
}

/// The state of one pass over an archive's entries.
struct Pass<'a> {
    /// The expected manifest's entries by path, when known.
    expected: Option<HashMap<&'a str, &'a Entry>>,
    /// What is computed over each entry's content.
    digests: Digests,
    seen: Vec<(FoundEntry, Digested)>,
    seen_paths: HashSet<String>,
    symlinks: HashSet<String>,
    manifest_bytes: Option<Vec<u8>>,
    done: u64,
    last_report: u64,
}

impl<'a> Pass<'a> {
    fn new(expected: Option<&Expected<'a>>, digests: Digests) -> Pass<'a> {
        Pass {
            expected: expected.map(|e| {
                e.manifest
                    .entries
                    .iter()
                    .map(|entry| (entry.path.as_str(), entry))
                    .collect()
            }),
            digests,
            seen: Vec::new(),
            seen_paths: HashSet::new(),
            symlinks: HashSet::new(),
            manifest_bytes: None,
            done: 0,
            last_report: 0,
        }
    }

    /// Reads the zstd-compressed tar from `input`, entry by entry, to the end of the
    /// zstd stream (end-of-archive blocks and frame checksum included).
    fn read_tar(
        &mut self,
        input: &mut dyn Read,
        visitor: &mut dyn Visitor,
        progress: &mut dyn FnMut(u64),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), ArchiveError> {
        let decoder = zstd::stream::read::Decoder::new(input).map_err(data_error)?;
        let mut archive = tar::Archive::new(decoder);
        for entry in archive.entries().map_err(data_error)? {
            if cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            self.entry(&mut entry.map_err(read_error)?, visitor, progress)?;
        }
        progress(self.done);
        let mut decoder = archive.into_inner();
        io::copy(&mut decoder, &mut io::sink()).map_err(read_error)?;
        Ok(())
    }

    /// Checks one entry, hands it to `visitor`, hashes its content and checks that.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        visitor: &mut dyn Visitor,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ArchiveError> {
        let Some(found) = self.found(entry)? else {
            return Ok(());
        };
        let want = match &self.expected {
            Some(map) => {
                let want = map.get(found.path.as_str()).copied().ok_or_else(|| {
                    invalid(format!(
                        "entry '{}' is not in the manifest",
                        found.path.escape_debug()
                    ))
                })?;
                check_against(&found, want)?;
                Some(want)
            }
            None => None,
        };
        let mut content = Digesting::new(entry, self.digests);
        visitor.entry(&found, &mut content)?;
        copy_large(&mut content, &mut io::sink()).map_err(read_error)?;
        let (_, digested) = content.finish();
        if digested.size != found.size {
            return Err(invalid(format!(
                "entry '{}' is truncated",
                found.path.escape_debug()
            )));
        }
        if let Some(want) = want
            && want.kind == EntryKind::File
            && digested.sha256.as_ref() != Some(&want.sha256)
        {
            return Err(invalid(format!(
                "the content of '{}' does not match its sha256 in the manifest",
                found.path.escape_debug()
            )));
        }
        self.done += found.size;
        self.seen.push((found, digested));
        if self.done >= self.last_report + (4 << 20) {
            self.last_report = self.done;
            progress(self.done);
        }
        Ok(())
    }

    /// The entry as checked from its header (path, type, place, link target); `None`
    /// for the manifest, which is kept for [`Pass::finish`].
    fn found<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<Option<FoundEntry>, ArchiveError> {
        let mut raw = entry.path_bytes().into_owned();
        // A directory's name may end in '/'.
        while raw.len() > 1 && raw.ends_with(b"/") {
            raw.pop();
        }
        let path = escape(&raw);
        if self.manifest_bytes.is_some() {
            return Err(invalid(format!(
                "entry '{}' follows the manifest",
                path.escape_debug()
            )));
        }
        let kind = entry_kind(entry.header().entry_type(), &path)?;
        let size = entry.size();
        if path == MANIFEST_PATH {
            if kind != EntryKind::File || size > MAX_MANIFEST_BYTES {
                return Err(invalid("the manifest entry is not a plausible file"));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(read_error)?;
            self.manifest_bytes = Some(bytes);
            return Ok(None);
        }
        manifest::check_entry_path(&path, usize::MAX).map_err(invalid)?;
        if !self.seen_paths.insert(path.clone()) {
            return Err(invalid(format!("entry '{}' appears twice", path.escape_debug())));
        }
        if let Some(through) = ancestors(&path).find(|a| self.symlinks.contains(*a)) {
            return Err(invalid(format!(
                "entry '{}' lies beneath the symlink '{through}'",
                path.escape_debug()
            )));
        }
        let target = match kind {
            EntryKind::Symlink => {
                let link = symlink_target(entry, &path)?;
                self.symlinks.insert(path.clone());
                Some(link)
            }
            _ => None,
        };
        let header = entry.header();
        Ok(Some(FoundEntry {
            path,
            kind,
            size: if kind == EntryKind::File { size } else { 0 },
            mode: header.mode().map_err(read_error)? & 0o7777,
            mtime: header.mtime().map_err(read_error)? as i64,
            target,
        }))
    }

    /// The archive's manifest (parsed and valid) and the entries seen with their
    /// digests.
    fn finish(self) -> Result<(Manifest, Vec<(FoundEntry, Digested)>), ArchiveError> {
        let bytes = self
            .manifest_bytes
            .ok_or_else(|| invalid("it has no manifest.json (truncated?)"))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("manifest.json cannot be parsed: {e}")))?;
        manifest.validate().map_err(invalid)?;
        Ok((manifest, self.seen))
    }
}

/// The kind of entry a tar type is, or why it is refused.
fn entry_kind(entry_type: tar::EntryType, path: &str) -> Result<EntryKind, ArchiveError> {
    match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous => Ok(EntryKind::File),
        tar::EntryType::Directory => Ok(EntryKind::Dir),
        tar::EntryType::Symlink => Ok(EntryKind::Symlink),
        tar::EntryType::Link => Err(invalid(format!("entry '{}' is a hard link", path.escape_debug()))),
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
            Err(invalid(format!(
                "entry '{}' is {what}; only files, directories and symlinks are allowed",
                path.escape_debug()
            )))
        }
    }
}

/// A symlink entry's target (any target: a link is restored as a link and never
/// followed; only media directories hold links).
fn symlink_target<R: Read>(entry: &tar::Entry<'_, R>, path: &str) -> Result<String, ArchiveError> {
    let link = entry
        .link_name_bytes()
        .ok_or_else(|| invalid(format!("symlink '{}' has no target", path.escape_debug())))?;
    if !path.starts_with("media/") || link.is_empty() || link.contains(&0) {
        return Err(invalid(format!(
            "symlink '{}' is not a link a backup can hold",
            path.escape_debug()
        )));
    }
    Ok(escape(&link))
}

fn read_error(e: io::Error) -> ArchiveError {
    data_error(e)
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
    // The header holds no time before 1970; manifests written before this rule could
    // record one for such a file.
    if found.mtime != want.mtime.max(0) {
        return Err(what("modification time"));
    }
    Ok(())
}

/// The manifest must list exactly the entries seen, with the same facts and (where
/// they were computed) sha256 hashes.
fn check_all_listed(manifest: &Manifest, seen: &[(FoundEntry, Digested)]) -> Result<(), ArchiveError> {
    let listed: HashMap<&str, &Entry> = manifest.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    for (found, digested) in seen {
        let want = listed.get(found.path.as_str()).ok_or_else(|| {
            invalid(format!(
                "entry '{}' is not in the manifest",
                found.path.escape_debug()
            ))
        })?;
        check_against(found, want)?;
        if want.kind == EntryKind::File
            && let Some(sha256) = &digested.sha256
            && want.sha256 != *sha256
        {
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
