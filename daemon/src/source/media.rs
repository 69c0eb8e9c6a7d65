//! Walking media directories into archive order, and adding what was walked.
//!
//! A walk never follows symlinks. Items come parents first, names sorted, the root
//! itself first as `media/<n>`. Sockets, devices and fifos cannot be restored and are
//! skipped; so are (today) names that are not UTF-8 and symlinks pointing outside
//! their media directory — each [`Skipped`] with a reason, for the backup to report.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::archive::{ArchiveError, ArchiveWriter};
use crate::manifest::symlink_stays_inside;

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
