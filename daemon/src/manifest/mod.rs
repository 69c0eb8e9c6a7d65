//! The archive's `manifest.json` and the `<id>.json` sidecar beside each archive.
//!
//! The manifest is the last entry of every archive and lists every other entry with its
//! kind, size, sha256, mode and mtime, plus what the snapshot was taken from. The
//! sidecar ([`sidecar`]) is the manifest plus the archive's own size and sha256 (and
//! the admin's note and pin), so the catalog can be rebuilt from the backup directory
//! alone, and a download or upload can be checked without opening the archive.
//!
//! Versions: this build writes format-version 2 ([`FORMAT_VERSION`]), whose `source`
//! says its `kind` (`sqlite`, `postgres`, `mariadb`) with kind-specific facts, and whose `kind` says
//! whether the archive is a backup or an export. Version 1 ([`v1`]) is read forever and
//! written back in its own shape. Both parse into the one model here, through
//! [`RawManifest`], so the rest of the daemon never sees a version.
//!
//! Path rules live in [`paths`], shared by the writer and the reader. [`redacted`] is
//! the sidecar an offsite copy of an encrypted backup carries: no names, paths or
//! database facts.

pub mod paths;
pub mod redacted;
pub mod sidecar;
pub mod v1;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use paths::{MANIFEST_PATH, check_entry_path, escape, is_sha256_hex, symlink_stays_inside, unescape};
pub use redacted::{AnySidecar, RedactedSidecar};
pub use sidecar::{Encryption, Sidecar};

use crate::selective::profile::RawExportProfile;

/// The manifest format this build writes.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest manifest format this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// What an archive is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveKind {
    /// A whole backup of a job (the default; every v1 archive).
    #[default]
    Backup,
    /// A selective export (rows and files of a profile); not catalogued.
    Export,
}

/// The `manifest.json` of an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest", into = "RawManifest")]
pub struct Manifest {
    pub format_version: u32,
    pub kind: ArchiveKind,
    pub id: String,
    pub job: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub coffer_version: String,
    pub hostname: String,
    pub source: SourceInfo,
    pub media_roots: Vec<String>,
    pub entries: Vec<Entry>,
    /// The first [`MAX_SKIPPED_LISTED`] media entries that could not be archived
    /// (sockets, fifos, devices); `totals.skipped` counts them all. Version 2.
    pub skipped: Vec<SkippedEntry>,
    pub totals: Totals,
    /// What an export holds (kind `export` only; a backup has none).
    pub export: Option<ExportInfo>,
}

/// The `export` section of an export's manifest: the profile it was made with (as
/// the exporting job configured it: a record, not what an import trusts), the
/// parameter values, and the rows per table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExportInfo {
    pub profile: RawExportProfile,
    pub params: BTreeMap<String, String>,
    /// Rows per table in the export's database.
    pub rows: BTreeMap<String, u64>,
    /// Of those, parent rows added by `follow-foreign-keys`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub followed: BTreeMap<String, u64>,
    /// References whose parent row the source did not have (left as they were).
    #[serde(default)]
    pub dangling_references: u64,
}

/// How many skipped entries a manifest names (the count is always complete).
pub const MAX_SKIPPED_LISTED: usize = 20;

/// A media entry that could not be archived, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SkippedEntry {
    /// The path it would have had in the archive (escaped like entry paths).
    pub path: String,
    /// "socket", "fifo", "block device" or "character device".
    pub reason: String,
}

/// What the database part of an archive was taken from, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourceInfo {
    Sqlite(SqliteInfo),
    /// A `pg_dump --format=custom` of a PostgreSQL database (`db/<name>.pgdump`).
    Postgres(DumpInfo),
    /// A `mariadb-dump` of a MariaDB database (`db/<name>.sql`).
    Mariadb(DumpInfo),
}

impl SourceInfo {
    /// The source kind's name (`sqlite`, `postgres`, `mariadb`).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceInfo::Sqlite(_) => "sqlite",
            SourceInfo::Postgres(_) => "postgres",
            SourceInfo::Mariadb(_) => "mariadb",
        }
    }

    /// The facts of a database dump, for the server kinds.
    pub fn dump(&self) -> Option<&DumpInfo> {
        match self {
            SourceInfo::Sqlite(_) => None,
            SourceInfo::Postgres(info) | SourceInfo::Mariadb(info) => Some(info),
        }
    }
}

/// The facts of a dump taken from a database server (PostgreSQL, MariaDB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DumpInfo {
    /// The server's version string, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// The dump tool's version line, e.g. `pg_dump (PostgreSQL) 15.18 (...)`.
    pub tool_version: String,
    /// The database that was dumped.
    pub database: String,
    /// The database's size on the server when it was dumped (bytes).
    pub size: u64,
}

/// The facts of an SQLite snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SqliteInfo {
    pub path: String,
    /// The SQLite library that took the snapshot.
    pub sqlite_version: String,
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
    /// Media entries that could not be archived (sockets, fifos, devices).
    #[serde(default)]
    pub skipped: u64,
    /// Media entries left out on purpose by the job's `exclude` globs. Version 2.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub excluded: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

impl Manifest {
    /// The database entry (`db/<name>`), if any.
    pub fn database_entry(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path.starts_with("db/"))
    }

    /// The SQLite facts, for an SQLite source.
    pub fn sqlite(&self) -> Option<&SqliteInfo> {
        match &self.source {
            SourceInfo::Sqlite(info) => Some(info),
            _ => None,
        }
    }

    /// Checks what the reader relies on: the format version, the id/job pairing,
    /// every path, and exactly one database file.
    pub fn validate(&self) -> Result<(), String> {
        check_version(self.format_version)?;
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
        if self.skipped.len() > MAX_SKIPPED_LISTED || self.skipped.len() as u64 > self.totals.skipped {
            return Err("manifest lists more skipped entries than it counts".into());
        }
        for s in &self.skipped {
            check_entry_path(&s.path, self.media_roots.len())?;
        }
        Ok(())
    }
}

fn check_version(version: u32) -> Result<(), String> {
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "manifest format-version {version} is not supported (this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
        ));
    }
    Ok(())
}

/// The manifest as it is on disk, in any supported version.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawManifest {
    format_version: u32,
    /// Version 2 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<ArchiveKind>,
    id: String,
    job: String,
    created_at: String,
    coffer_version: String,
    hostname: String,
    /// Version 1 only (later versions keep it in the SQLite source's facts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sqlite_version: Option<String>,
    source: RawSource,
    media_roots: Vec<String>,
    entries: Vec<Entry>,
    /// Version 2 and later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<SkippedEntry>,
    totals: Totals,
    /// Exports only (version 2 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    export: Option<ExportInfo>,
}

/// A `source` of any version: tagged with its `kind` (v2) or the v1 SQLite shape.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawSource {
    Tagged(SourceInfo),
    V1(v1::SourceV1),
}

impl TryFrom<RawManifest> for Manifest {
    type Error = String;

    fn try_from(raw: RawManifest) -> Result<Manifest, String> {
        check_version(raw.format_version)?;
        let source = match (raw.format_version, raw.source, raw.sqlite_version, raw.kind) {
            (1, RawSource::V1(source), Some(sqlite_version), None) => {
                SourceInfo::Sqlite(source.upgrade(sqlite_version))
            }
            (1, _, _, _) => {
                return Err("a format-version 1 manifest needs an SQLite source and sqlite-version".into());
            }
            (_, RawSource::Tagged(source), None, _) => source,
            (version, _, _, _) => {
                return Err(format!(
                    "a format-version {version} manifest needs a source with a kind and no top-level sqlite-version"
                ));
            }
        };
        let kind = raw.kind.unwrap_or_default();
        match (kind, &raw.export) {
            (ArchiveKind::Export, None) => {
                return Err("a manifest of kind export needs an export section".into());
            }
            (ArchiveKind::Backup, Some(_)) => {
                return Err("a manifest of kind backup has no export section".into());
            }
            _ => {}
        }
        Ok(Manifest {
            format_version: raw.format_version,
            kind,
            id: raw.id,
            job: raw.job,
            created_at: raw.created_at,
            coffer_version: raw.coffer_version,
            hostname: raw.hostname,
            source,
            media_roots: raw.media_roots,
            entries: raw.entries,
            skipped: raw.skipped,
            totals: raw.totals,
            export: raw.export,
        })
    }
}

impl From<Manifest> for RawManifest {
    fn from(m: Manifest) -> RawManifest {
        let (kind, source, sqlite_version) = match (m.format_version, m.source) {
            (1, SourceInfo::Sqlite(info)) => {
                let (source, version) = v1::SourceV1::downgrade(info);
                (None, RawSource::V1(source), Some(version))
            }
            (_, source) => (Some(m.kind), RawSource::Tagged(source), None),
        };
        RawManifest {
            format_version: m.format_version,
            kind,
            id: m.id,
            job: m.job,
            created_at: m.created_at,
            coffer_version: m.coffer_version,
            hostname: m.hostname,
            sqlite_version,
            source,
            media_roots: m.media_roots,
            entries: m.entries,
            skipped: m.skipped,
            totals: m.totals,
            export: m.export,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = include_str!("../../../tests/fixtures/v1/legacy-20261130T153641Z.json");

    fn sidecar_value(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_v1_sidecar_reads_into_the_model_and_writes_back_unchanged() {
        let sidecar: Sidecar = serde_json::from_str(V1).unwrap();
        assert_eq!(sidecar.manifest.format_version, 1);
        assert_eq!(sidecar.manifest.kind, ArchiveKind::Backup);
        let info = sidecar.manifest.sqlite().unwrap();
        assert_eq!(info.sqlite_version, "3.50.2");
        assert_eq!(info.user_version, 3);
        sidecar.manifest.validate().unwrap();
        let written = serde_json::to_value(&sidecar).unwrap();
        assert_eq!(written, sidecar_value(V1), "v1 keeps its shape");
    }

    #[test]
    fn v2_has_a_kind_and_keeps_sqlite_facts_in_the_source() {
        let mut sidecar: Sidecar = serde_json::from_str(V1).unwrap();
        sidecar.manifest.format_version = FORMAT_VERSION;
        let written = serde_json::to_value(&sidecar.manifest).unwrap();
        assert_eq!(written["format-version"], 2);
        assert_eq!(written["kind"], "backup");
        assert_eq!(written["source"]["kind"], "sqlite");
        assert_eq!(written["source"]["sqlite-version"], "3.50.2");
        assert!(written.get("sqlite-version").is_none());
        let back: Manifest = serde_json::from_value(written).unwrap();
        assert_eq!(back, sidecar.manifest);
    }

    #[test]
    fn an_export_carries_its_section_and_a_backup_none() {
        let mut sidecar: Sidecar = serde_json::from_str(V1).unwrap();
        sidecar.manifest.format_version = FORMAT_VERSION;
        let backup = serde_json::to_value(&sidecar.manifest).unwrap();
        assert!(backup.get("export").is_none(), "backups are unchanged");
        let mut export = backup.clone();
        export["kind"] = "export".into();
        let err = serde_json::from_value::<Manifest>(export.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs an export section"), "{err}");
        export["export"] = serde_json::json!({
            "profile": {"name": "site", "params": ["site"], "tables": {"sites": "id = :site"}},
            "params": {"site": "3"},
            "rows": {"sites": 1},
        });
        let m: Manifest = serde_json::from_value(export.clone()).unwrap();
        let info = m.export.as_ref().unwrap();
        assert_eq!((info.params["site"].as_str(), info.rows["sites"]), ("3", 1));
        assert_eq!(info.profile.name, "site");
        let mut stray = backup;
        stray["export"] = export["export"].clone();
        assert!(serde_json::from_value::<Manifest>(stray).is_err());
    }

    #[test]
    fn a_dump_source_is_tagged_with_its_kind_and_reads_back() {
        let mut sidecar: Sidecar = serde_json::from_str(V1).unwrap();
        sidecar.manifest.format_version = FORMAT_VERSION;
        sidecar.manifest.source = SourceInfo::Postgres(DumpInfo {
            server_version: "15.18 (Debian 15.18-0+deb12u1)".into(),
            tool_version: "pg_dump (PostgreSQL) 15.18".into(),
            database: "shop".into(),
            size: 1234,
        });
        let written = serde_json::to_value(&sidecar.manifest).unwrap();
        assert_eq!(
            written["source"],
            serde_json::json!({
                "kind": "postgres",
                "server-version": "15.18 (Debian 15.18-0+deb12u1)",
                "tool-version": "pg_dump (PostgreSQL) 15.18",
                "database": "shop",
                "size": 1234
            })
        );
        let back: Manifest = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(back, sidecar.manifest);
        assert!(back.sqlite().is_none() && back.source.dump().is_some());
        // A MariaDB source in a v1 manifest is not a v1 manifest.
        let mut v1 = written;
        v1["format-version"] = 1.into();
        v1["source"]["kind"] = "mariadb".into();
        assert!(serde_json::from_value::<Manifest>(v1).is_err());
    }

    #[test]
    fn versions_and_shapes_that_do_not_match_are_refused() {
        let mut v = sidecar_value(V1);
        v["format-version"] = 3.into();
        let err = serde_json::from_value::<Sidecar>(v).unwrap_err().to_string();
        assert!(err.contains("format-version 3 is not supported"), "{err}");
        // A v2 manifest in the v1 shape.
        let mut v = sidecar_value(V1);
        v["format-version"] = 2.into();
        assert!(serde_json::from_value::<Sidecar>(v).is_err());
        // A v1 manifest with a kind.
        let mut v = sidecar_value(V1);
        v["kind"] = "backup".into();
        assert!(serde_json::from_value::<Sidecar>(v).is_err());
    }
}
