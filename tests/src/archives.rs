//! Reading archives with the `tar` and `zstd` crates directly, never with Coffer's
//! own code, as a user restoring by hand would.

use std::fs;
use std::path::Path;

use serde_json::Value;

/// One tar entry as the `tar` crate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub size: u64,
    pub mode: u32,
    pub link: Option<String>,
}

fn open_archive(
    archive: &Path,
) -> tar::Archive<zstd::stream::read::Decoder<'static, std::io::BufReader<fs::File>>> {
    let file = fs::File::open(archive).unwrap_or_else(|e| panic!("cannot open {}: {e}", archive.display()));
    tar::Archive::new(zstd::stream::read::Decoder::new(file).expect("not a zstd stream"))
}

/// The archive's entries in order, read with the `tar` and `zstd` crates.
pub fn archive_entries(archive: &Path) -> Vec<TarEntry> {
    let mut tar = open_archive(archive);
    tar.entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.expect("unreadable tar entry");
            let header = entry.header();
            TarEntry {
                // Directories may be stored with a trailing slash; compare without.
                path: entry
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_owned(),
                kind: header.entry_type(),
                size: header.size().unwrap(),
                mode: header.mode().unwrap(),
                link: entry
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
            }
        })
        .collect()
}

/// Unpacks `archive` into `into` with the `tar` and `zstd` crates (permissions, mtimes
/// and symlinks preserved) and returns its `manifest.json`.
pub fn extract_archive(archive: &Path, into: &Path) -> Value {
    fs::create_dir_all(into).unwrap();
    let mut tar = open_archive(archive);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.set_overwrite(false);
    tar.unpack(into)
        .unwrap_or_else(|e| panic!("cannot unpack {}: {e}", archive.display()));
    let text = fs::read_to_string(into.join("manifest.json")).expect("the archive has no manifest.json");
    serde_json::from_str(&text).expect("manifest.json is not JSON")
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
