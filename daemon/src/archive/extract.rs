//! Safe extraction: a [`Visitor`] that writes an archive's entries to their
//! destinations in a [`Layout`].
//!
//! It only ever writes into fresh directories its caller created: files are created
//! with `O_EXCL`, nothing is written beneath a symlink (the reader refuses such
//! entries before they get here), symlinks are restored as links, and modes (without
//! setuid/setgid) and mtimes are applied — directories last, deepest first.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::crypt::Identities;
use super::{ArchiveError, Expected, FoundEntry, Visitor, copy_large, data_error, read_archive_keyed};
use crate::manifest::{EntryKind, unescape};

/// Where each part of an archive is extracted; `None` skips that part.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The file the `db/<name>` entry is written to.
    pub db: Option<PathBuf>,
    /// The directory each `media/<n>` root becomes.
    pub media: Vec<Option<PathBuf>>,
}

impl Layout {
    /// The destination of an archive path, or `None` if that part is not extracted.
    /// Paths were checked by the reader (relative, no `..`), so joining is safe.
    fn target(&self, path: &str) -> Option<PathBuf> {
        let bytes = unescape(path).ok()?;
        let mut parts = bytes.splitn(3, |b| *b == b'/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(b"db"), Some(_), None) => self.db.clone(),
            (Some(b"media"), Some(n), rest) => {
                let n: usize = std::str::from_utf8(n).ok()?.parse().ok()?;
                let root = self.media.get(n)?.as_ref()?;
                Some(match rest {
                    Some(rest) => root.join(OsStr::from_bytes(rest)),
                    None => root.clone(),
                })
            }
            _ => None,
        }
    }
}

/// Writes archive entries to their [`Layout`] destinations.
pub struct Extractor<'a> {
    layout: &'a Layout,
    /// Directories whose mode and mtime are applied at the end.
    dirs: Vec<(PathBuf, u32, i64)>,
}

impl<'a> Extractor<'a> {
    pub fn new(layout: &'a Layout) -> Self {
        Extractor {
            layout,
            dirs: Vec::new(),
        }
    }

    /// Applies directory modes and mtimes, deepest first (writing into a directory
    /// changes its mtime, and a read-only mode would block the writes).
    pub fn finish(mut self) -> Result<(), ArchiveError> {
        self.dirs
            .sort_by_key(|(path, _, _)| std::cmp::Reverse(path.components().count()));
        for (path, mode, mtime) in &self.dirs {
            set_mode(path, *mode)?;
            set_mtime(path, *mtime)?;
        }
        Ok(())
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Source { path, source }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ArchiveError> {
    use std::os::unix::fs::PermissionsExt;
    // No setuid/setgid from an archive.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o1777)).map_err(write_err(path))
}

fn set_mtime(path: &Path, mtime: i64) -> Result<(), ArchiveError> {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64);
    File::open(path)
        .and_then(|f| f.set_modified(when))
        .map_err(write_err(path))
}

impl Visitor for Extractor<'_> {
    fn entry(&mut self, entry: &FoundEntry, content: &mut dyn Read) -> Result<(), ArchiveError> {
        let Some(dest) = self.layout.target(&entry.path) else {
            return Ok(());
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        match entry.kind {
            EntryKind::File => {
                let mut file = File::create_new(&dest).map_err(write_err(&dest))?;
                copy_large(content, &mut file).map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => data_error(e),
                    _ => ArchiveError::Source {
                        path: dest.clone(),
                        source: e,
                    },
                })?;
                drop(file);
                set_mode(&dest, entry.mode)?;
                set_mtime(&dest, entry.mtime)?;
            }
            EntryKind::Dir => {
                match std::fs::create_dir(&dest) {
                    Ok(()) => {}
                    // Created earlier as the parent of an entry listed before it.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                    Err(e) => return Err(write_err(&dest)(e)),
                }
                self.dirs.push((dest, entry.mode, entry.mtime));
            }
            EntryKind::Symlink => {
                // The link itself, whatever it points to; nothing is written through it
                // (the reader refuses entries beneath a link).
                let target = unescape(entry.target.as_deref().unwrap_or_default()).map_err(|e| {
                    ArchiveError::Invalid(format!("symlink '{}' has a bad target: {e}", entry.path))
                })?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &dest).map_err(write_err(&dest))?;
            }
        }
        Ok(())
    }
}

/// Extracts the archive at `path` (decrypted with `keys` if it is age-encrypted) into
/// `layout` in one verifying pass against `expected`; `progress` gets the bytes read so
/// far. Returns only after the whole archive (for an encrypted one: age's final chunk
/// too) checked out, so the caller commits what was written only on `Ok`.
pub fn extract(
    path: &Path,
    keys: Option<&Identities>,
    expected: Option<Expected<'_>>,
    layout: &Layout,
    progress: &mut dyn FnMut(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<(), ArchiveError> {
    let mut extractor = Extractor::new(layout);
    read_archive_keyed(path, keys, expected, &mut extractor, progress, cancelled)?;
    extractor.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_targets() {
        let layout = Layout {
            db: Some(PathBuf::from("/s/db/app.db")),
            media: vec![Some(PathBuf::from("/s/m0")), None],
        };
        assert_eq!(layout.target("db/app.db"), Some(PathBuf::from("/s/db/app.db")));
        assert_eq!(layout.target("media/0"), Some(PathBuf::from("/s/m0")));
        assert_eq!(
            layout.target("media/0/a/b.png"),
            Some(PathBuf::from("/s/m0/a/b.png"))
        );
        assert_eq!(layout.target("media/1/x"), None);
        assert_eq!(layout.target("media/2/x"), None);
        assert_eq!(layout.target("manifest.json"), None);
    }
}
