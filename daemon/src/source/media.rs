//! Walking media directories into archive order, and adding what was walked.
//!
//! A walk never follows symlinks. Items come parents first, names sorted (by their
//! bytes), the root itself first as `media/<n>`. Everything that can be restored is
//! kept: names that are not UTF-8 (stored byte-exact, escaped in the manifest) and
//! symlinks whatever they point to (restored as links, never followed). Only sockets,
//! fifos and devices cannot be archived; each is [`Skipped`] with its reason, for the
//! backup to report. The job's `exclude` globs ([`Exclude`]) leave things out on
//! purpose: those are only counted.

use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::archive::{ArchiveError, ArchiveWriter};
use crate::manifest::escape;
use crate::policy::exclude::Exclude;

/// One item found under a media directory, in archive order.
#[derive(Debug)]
pub struct MediaItem {
    /// Path inside the archive (`media/<n>/...`), raw bytes.
    pub archive_path: Vec<u8>,
    pub fs_path: PathBuf,
    pub metadata: Metadata,
    /// For symlinks: the link target as stored (raw bytes).
    pub target: Option<Vec<u8>>,
}

/// A media entry that could not be archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The path it would have had in the archive, escaped as in manifests.
    pub path: String,
    /// "socket", "fifo", "block device" or "character device".
    pub reason: &'static str,
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walked {
    pub items: Vec<MediaItem>,
    pub skipped: Vec<Skipped>,
    /// Entries left out by `exclude` (a directory counts once, its content not at all).
    pub excluded: u64,
}

/// What a file type is when it cannot be archived.
fn unarchivable(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_socket() {
        Some("socket")
    } else if file_type.is_fifo() {
        Some("fifo")
    } else if file_type.is_block_device() {
        Some("block device")
    } else if file_type.is_char_device() {
        Some("character device")
    } else {
        None
    }
}

/// Walks media directory number `index`, without following symlinks, into archive
/// order (parents before children, names sorted). The root itself is the first item.
pub fn walk_media(index: usize, root: &Path, exclude: &Exclude) -> Result<Walked, ArchiveError> {
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
    let prefix = format!("media/{index}").into_bytes();
    let mut walked = Walked {
        items: vec![MediaItem {
            archive_path: prefix.clone(),
            fs_path: root.to_owned(),
            metadata,
            target: None,
        }],
        ..Walked::default()
    };
    let mut stack = vec![(root.to_owned(), prefix)];
    while let Some((dir, prefix)) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| source(&dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| source(&dir, e))?;
        children.sort_by_key(|c| c.file_name());
        let mut subdirs = Vec::new();
        for child in children {
            let path = child.path();
            let metadata = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Deleted between listing and stat: it is simply not in this backup.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(source(&path, e)),
            };
            if exclude.matches(path.strip_prefix(root).unwrap_or(&path)) {
                walked.excluded += 1;
                continue;
            }
            let mut archive_path = prefix.clone();
            archive_path.push(b'/');
            archive_path.extend_from_slice(child.file_name().as_bytes());
            let file_type = metadata.file_type();
            if let Some(reason) = unarchivable(file_type) {
                walked.skipped.push(Skipped {
                    path: escape(&archive_path),
                    reason,
                });
                continue;
            }
            let target = if file_type.is_symlink() {
                let link = std::fs::read_link(&path).map_err(|e| source(&path, e))?;
                Some(link.as_os_str().as_bytes().to_vec())
            } else {
                None
            };
            if file_type.is_dir() {
                subdirs.push((path.clone(), archive_path.clone()));
            }
            walked.items.push(MediaItem {
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
    walked.items[1..].sort_by(|a, b| a.archive_path.cmp(&b.archive_path));
    Ok(walked)
}

/// Adds one walked item to the archive (`progress` gets the bytes of file content).
pub fn add_to_archive(
    writer: &mut ArchiveWriter,
    item: &MediaItem,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ArchiveError> {
    let file_type = item.metadata.file_type();
    if let Some(target) = &item.target {
        writer.add_symlink(&item.archive_path, target, &item.metadata)
    } else if file_type.is_dir() {
        writer.add_dir(&item.archive_path, &item.metadata)
    } else {
        writer.add_file(&item.archive_path, &item.fs_path, &item.metadata, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn everything_restorable_is_walked_and_the_rest_is_skipped_or_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("cache/deep")).unwrap();
        std::fs::write(root.join("cache/deep/x"), b"x").unwrap();
        std::fs::write(root.join("keep.txt"), b"k").unwrap();
        std::fs::write(root.join("drop.tmp"), b"t").unwrap();
        let latin1 = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
        std::fs::write(&latin1, b"latin-1").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("rel")).unwrap();
        nix::unistd::mkfifo(
            &root.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();

        let exclude = Exclude::new(&["*.tmp".into(), "cache/**".into()]).unwrap();
        let walked = walk_media(0, root, &exclude).unwrap();
        let paths: Vec<String> = walked.items.iter().map(|i| escape(&i.archive_path)).collect();
        assert_eq!(
            paths,
            [
                "media/0",
                "media/0/abs",
                "media/0/cache",
                "media/0/caf\\xe9.txt",
                "media/0/keep.txt",
                "media/0/rel"
            ]
        );
        let abs = walked
            .items
            .iter()
            .find(|i| i.archive_path.ends_with(b"abs"))
            .unwrap();
        assert_eq!(abs.target.as_deref(), Some(&b"/etc/passwd"[..]));
        assert_eq!(
            walked.skipped,
            vec![Skipped {
                path: "media/0/pipe".into(),
                reason: "fifo"
            }]
        );
        // `drop.tmp` and `cache/deep` (with its content) are excluded; `cache` itself
        // matches `cache/**` only for what is beneath it.
        assert_eq!(walked.excluded, 2);
    }
}
