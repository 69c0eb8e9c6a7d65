//! The archive's `manifest.json` and the `<id>.json` sidecar beside each archive.
//!
//! The manifest is the last entry of every archive and lists every other entry with its
//! kind, size, sha256, mode and mtime. The sidecar is the manifest plus the archive's
//! own size and sha256 (and the admin's note and pin), so the catalog can be rebuilt
//! from the backup directory alone, and a download or upload can be checked without
//! opening the archive.
//!
//! Paths inside an archive are checked here once, for the writer and the reader alike:
//! [`check_entry_path`] admits only relative, normalised paths under `db/` or
//! `media/<n>/`.

use serde::{Deserialize, Serialize};

/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The name of the manifest entry, always last in the archive.
pub const MANIFEST_PATH: &str = "manifest.json";

/// The `manifest.json` of an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub id: String,
    pub job: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub coffer_version: String,
    pub hostname: String,
    pub sqlite_version: String,
    pub source: SourceInfo,
    pub media_roots: Vec<String>,
    pub entries: Vec<Entry>,
    pub totals: Totals,
}

/// What the snapshot was taken from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SourceInfo {
    pub path: String,
    pub page_size: u64,
    pub page_count: u64,
    pub user_version: i64,
    pub application_id: i64,
    pub journal_mode: String,
    pub snapshot_method: String,
}

/// The kind of an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One archive entry as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Entry {
    /// Path inside the archive, e.g. `db/app.db` or `media/0/a/b.png`.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Hex sha256 of the content; empty for directories and symlinks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    pub mode: u32,
    /// Unix seconds.
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Counts over all entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Totals {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of all regular files, uncompressed.
    pub bytes: u64,
    /// Media entries left out (sockets, devices, names that are not UTF-8).
    #[serde(default)]
    pub skipped: u64,
}

impl Totals {
    /// Adds one entry to the counts.
    pub fn count(&mut self, entry: &Entry) {
        match entry.kind {
            EntryKind::File => {
                self.files += 1;
                self.bytes += entry.size;
            }
            EntryKind::Dir => self.dirs += 1,
            EntryKind::Symlink => self.symlinks += 1,
        }
    }
}

/// The `<id>.json` file beside an archive: the manifest plus facts about the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Sidecar {
    #[serde(flatten)]
    pub manifest: Manifest,
    /// Archive size in bytes.
    pub size: u64,
    /// Hex sha256 of the archive file.
    pub sha256: String,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub protected: bool,
    /// Milliseconds the backup took.
    #[serde(default)]
    pub duration_ms: u64,
    /// The job an uploaded archive was filed under, when not its manifest's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filed_under: Option<String>,
}

impl Sidecar {
    /// The job this backup belongs to here.
    pub fn job(&self) -> &str {
        self.filed_under.as_deref().unwrap_or(&self.manifest.job)
    }
}

impl Manifest {
    /// The database entry (`db/<name>`), if any.
    pub fn database_entry(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path.starts_with("db/"))
    }

    /// Checks what the reader relies on: the format version, the id/job pairing,
    /// every path, and exactly one database file.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "manifest format-version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        match coffer_common::ids::split_backup_id(&self.id) {
            Some((job, _)) if job == self.job => {}
            _ => {
                return Err(format!(
                    "manifest id '{}' does not belong to job '{}'",
                    self.id, self.job
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut databases = 0;
        for entry in &self.entries {
            check_entry_path(&entry.path, self.media_roots.len())?;
            if !seen.insert(entry.path.as_str()) {
                return Err(format!("manifest lists '{}' twice", entry.path));
            }
            if entry.path.starts_with("db/") {
                if entry.kind != EntryKind::File || entry.path.matches('/').count() != 1 {
                    return Err(format!("manifest entry '{}' is not a database file", entry.path));
                }
                databases += 1;
            }
            if entry.kind == EntryKind::File && !is_sha256_hex(&entry.sha256) {
                return Err(format!("manifest entry '{}' has no valid sha256", entry.path));
            }
            if entry.kind == EntryKind::Symlink && entry.target.is_none() {
                return Err(format!("manifest symlink '{}' has no target", entry.path));
            }
        }
        if databases != 1 {
            return Err(format!("manifest lists {databases} database files; expected 1"));
        }
        Ok(())
    }
}

/// Whether `s` looks like a hex sha256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Admits `db/<name>`, `media/<n>` and `media/<n>/<relative path>` with `n` below
/// `media_roots`: no absolute paths, no `.`/`..`, no empty components, no NUL.
pub fn check_entry_path(path: &str, media_roots: usize) -> Result<(), String> {
    let bad = |why: &str| Err(format!("archive path '{}' {why}", path.escape_debug()));
    if path.is_empty() || path.contains('\0') || path.contains('\\') {
        return bad("is not a valid path");
    }
    if path.starts_with('/') {
        return bad("is absolute");
    }
    if path.ends_with('/') || path.contains("//") {
        return bad("is not normalised");
    }
    // Split by hand: `Path::components` silently drops interior `.` parts.
    for part in path.split('/') {
        match part {
            ".." => return bad("contains '..'"),
            "." => return bad("is not normalised"),
            _ => {}
        }
    }
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some("db"), Some(_)) => Ok(()),
        (Some("media"), Some(n)) => match n.parse::<usize>() {
            Ok(i) if i < media_roots && i.to_string() == n => Ok(()),
            _ => bad("names a media directory the manifest does not have"),
        },
        _ => bad("is outside db/ and media/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        let ok = ["db/app.db", "media/0", "media/0/a/b.png", "media/1/ü ñ.txt"];
        for p in ok {
            assert_eq!(check_entry_path(p, 2), Ok(()), "{p}");
        }
        let bad = [
            ("", "not a valid"),
            ("/etc/passwd", "absolute"),
            ("media/0/../../x", "'..'"),
            ("media/0/./x", "normalised"),
            ("media/0//x", "normalised"),
            ("media/0/", "normalised"),
            ("media/2/x", "media directory"),
            ("media/01/x", "media directory"),
            ("etc/x", "outside"),
            ("db", "outside"),
            ("manifest.json", "outside"),
        ];
        for (p, why) in bad {
            let err = check_entry_path(p, 2).expect_err(p);
            assert!(err.contains(why), "{p}: {err}");
        }
    }

    #[test]
    fn sha_hex() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
    }
}
