//! Catalogued backups: one row per archive, with its manifest summary, pin and
//! verification state.

use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, CatalogError};
use crate::manifest::{Manifest, Sidecar};

/// A catalogued backup.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRecord {
    pub id: String,
    pub job: String,
    /// Unix seconds.
    pub created_at: i64,
    pub size: u64,
    pub sha256: String,
    pub protected: bool,
    pub note: String,
    pub verified_at: i64,
    pub verify_result: String,
    pub duration_ms: u64,
    /// The manifest without its entries (the sidecar has them all).
    pub summary: Manifest,
    /// The recipients' fingerprints of an encrypted archive (`<id>.tar.zst.age`);
    /// empty for a plain one.
    pub recipients: Vec<String>,
}

impl BackupRecord {
    /// Whether the archive is encrypted.
    pub fn is_encrypted(&self) -> bool {
        !self.recipients.is_empty()
    }
}

/// Counts over one job's backups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobStats {
    pub count: u64,
    pub bytes: u64,
    pub newest_at: i64,
}

const BACKUP_COLUMNS: &str = "id, job, created_at, size, sha256, protected, note, verified_at, verify_result, duration_ms, summary, recipients";

/// Newest first; equal times by id descending in the order of
/// [`coffer_common::ids::cmp_ids`] (length, then bytes: `-10` after `-9`).
const NEWEST_FIRST: &str = "created_at DESC, length(id) DESC, id DESC";

impl Catalog {
    /// Adds a backup from its sidecar.
    pub fn insert_backup(&self, sidecar: &Sidecar) -> Result<(), CatalogError> {
        let summary = summary_json(&sidecar.manifest);
        let created_at = created_at(&sidecar.manifest);
        self.conn().execute(
            "INSERT OR REPLACE INTO backups (id, job, created_at, size, sha256, protected, note, duration_ms, summary, recipients)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                sidecar.manifest.id,
                sidecar.job(),
                created_at,
                sidecar.size as i64,
                sidecar.sha256,
                sidecar.protected,
                sidecar.note,
                sidecar.duration_ms as i64,
                summary,
                recipients_json(sidecar.recipients())
            ],
        )?;
        Ok(())
    }

    /// Takes a re-encrypted archive's new size, sha256 and recipients from its
    /// sidecar (after `rekey`, or a rekey finished at start-up). Its verification is
    /// kept: the plaintext, which verification checks, did not change.
    pub fn update_encryption(&self, sidecar: &Sidecar) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE backups SET size = ?2, sha256 = ?3, recipients = ?4 WHERE id = ?1",
            params![
                sidecar.manifest.id,
                sidecar.size as i64,
                sidecar.sha256,
                recipients_json(sidecar.recipients())
            ],
        )?;
        Ok(())
    }

    /// Backups, newest first; all jobs when `job` is `None`. Rows being deleted are
    /// not listed.
    pub fn list_backups(&self, job: Option<&str>) -> Result<Vec<BackupRecord>, CatalogError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE deleting = 0 AND (?1 IS NULL OR job = ?1)
             ORDER BY {NEWEST_FIRST}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([job], backup_row)?;
        rows.map(|r| r?).collect()
    }

    /// One backup by id (not one being deleted).
    pub fn get_backup(&self, id: &str) -> Result<Option<BackupRecord>, CatalogError> {
        let conn = self.conn();
        let sql = format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE id = ?1 AND deleting = 0");
        conn.query_row(&sql, [id], backup_row).optional()?.transpose()
    }

    /// The newest backup, of one job or of any.
    pub fn latest(&self, job: Option<&str>) -> Result<Option<BackupRecord>, CatalogError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE deleting = 0 AND (?1 IS NULL OR job = ?1)
             ORDER BY {NEWEST_FIRST} LIMIT 1"
        );
        conn.query_row(&sql, [job], backup_row).optional()?.transpose()
    }

    /// Whether an id is taken (by a listed backup or one being deleted).
    pub fn id_exists(&self, id: &str) -> Result<bool, CatalogError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM backups WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Marks a backup as being deleted: from here on it is not listed, and a crash
    /// before [`Catalog::remove_backup`] is finished by the next reconcile.
    pub fn mark_deleting(&self, id: &str) -> Result<(), CatalogError> {
        self.conn()
            .execute("UPDATE backups SET deleting = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Drops a backup's row.
    pub fn remove_backup(&self, id: &str) -> Result<(), CatalogError> {
        self.conn().execute("DELETE FROM backups WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Pins or unpins a backup.
    pub fn set_protected(&self, id: &str, protected: bool) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE backups SET protected = ?2 WHERE id = ?1",
            params![id, protected],
        )?;
        Ok(())
    }

    /// Records a verification: when, and "ok" or the error sentence.
    pub fn set_verified(&self, id: &str, at: i64, result: &str) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE backups SET verified_at = ?2, verify_result = ?3 WHERE id = ?1",
            params![id, at, result],
        )?;
        Ok(())
    }

    /// Count, bytes and newest time of a job's backups.
    pub fn job_stats(&self, job: &str) -> Result<JobStats, CatalogError> {
        Ok(self.conn().query_row(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(max(created_at), 0)
             FROM backups WHERE job = ?1 AND deleting = 0",
            [job],
            |r| {
                Ok(JobStats {
                    count: r.get::<_, i64>(0)? as u64,
                    bytes: r.get::<_, i64>(1)? as u64,
                    newest_at: r.get(2)?,
                })
            },
        )?)
    }

    /// Ids and jobs of every row (listed or being deleted), for reconciliation.
    pub(super) fn all_ids(&self) -> Result<Vec<(String, String, bool)>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, job, deleting FROM backups")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The stored form of recipients: '' for a plain archive, else a JSON array.
fn recipients_json(recipients: &[String]) -> String {
    if recipients.is_empty() {
        String::new()
    } else {
        serde_json::to_string(recipients).unwrap_or_default()
    }
}

fn summary_json(manifest: &Manifest) -> String {
    let summary = Manifest {
        entries: Vec::new(),
        ..manifest.clone()
    };
    serde_json::to_string(&summary).unwrap_or_default()
}

/// The manifest's creation time as Unix seconds (0 if unparsable).
pub fn created_at(manifest: &Manifest) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&manifest.created_at)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn backup_row(r: &Row<'_>) -> rusqlite::Result<Result<BackupRecord, CatalogError>> {
    let id: String = r.get(0)?;
    let summary: String = r.get(10)?;
    let summary = match serde_json::from_str(&summary) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Err(CatalogError::Corrupt {
                id,
                message: e.to_string(),
            }));
        }
    };
    let recipients: String = r.get(11)?;
    let recipients = match recipients.as_str() {
        "" => Vec::new(),
        text => match serde_json::from_str(text) {
            Ok(list) => list,
            Err(e) => {
                return Ok(Err(CatalogError::Corrupt {
                    id,
                    message: e.to_string(),
                }));
            }
        },
    };
    Ok(Ok(BackupRecord {
        id,
        job: r.get(1)?,
        created_at: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        sha256: r.get(4)?,
        protected: r.get(5)?,
        note: r.get(6)?,
        verified_at: r.get(7)?,
        verify_result: r.get(8)?,
        duration_ms: r.get::<_, i64>(9)? as u64,
        summary,
        recipients,
    }))
}
