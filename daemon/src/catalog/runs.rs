//! Runs: one row per run of any kind (backup, verify, restore, prune, upload, drill,
//! ...), with how it ended.
//!
//! A run's end that the database cannot take (its disk is full) is kept in memory
//! ([`Catalog::unrecorded`]) and retried before every later catalog operation; reads
//! see it meanwhile, so a run never stays `running` after it ended.

use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, CatalogError};
use crate::run::{RunKind, RunStatus};

/// One run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub kind: RunKind,
    pub status: RunStatus,
    pub started_at: i64,
    pub finished_at: i64,
    pub error: String,
    pub backup_id: String,
    pub bytes: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    pub status: RunStatus,
    pub finished_at: i64,
    pub error: String,
    pub backup_id: String,
    pub bytes: u64,
}

const RUN_COLUMNS: &str = "id, job, kind, status, started_at, finished_at, error, backup_id, bytes";

pub(super) const UPDATE_RUN: &str =
    "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4, backup_id = ?5, bytes = ?6 WHERE id = ?1";

impl Catalog {
    /// `found` (a row of `job`'s runs of `kind`), or a newer unrecorded run end that
    /// `wanted` accepts.
    fn with_unrecorded(
        &self,
        found: Option<RunRecord>,
        job: &str,
        kind: RunKind,
        wanted: impl Fn(&RunRecord) -> bool,
    ) -> Option<RunRecord> {
        let pending = self
            .unrecorded()
            .iter()
            .filter(|r| r.job == job && r.kind == kind && wanted(r))
            .max_by_key(|r| r.id)
            .cloned();
        match (found, pending) {
            (Some(f), Some(p)) if p.id < f.id => Some(f),
            (found, pending) => pending.or(found),
        }
    }

    /// Records the start of a run; returns its id.
    pub fn start_run(&self, job: &str, kind: RunKind, started_at: i64) -> Result<i64, CatalogError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (job, kind, status, started_at) VALUES (?1, ?2, 'running', ?3)",
            params![job, kind.as_str(), started_at],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records a run's end. If the database cannot take it, the end is kept to be
    /// written later (and read in its place meanwhile).
    pub fn finish_run(&self, run: i64, end: &RunEnd) -> Result<(), CatalogError> {
        let conn = self.conn();
        let updated = conn.execute(
            UPDATE_RUN,
            params![
                run,
                end.status.as_str(),
                end.finished_at,
                end.error,
                end.backup_id,
                end.bytes as i64
            ],
        );
        if let Err(e) = updated {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
            if let Ok(Ok(mut record)) = conn.query_row(&sql, [run], run_row) {
                record.status = end.status;
                record.finished_at = end.finished_at;
                record.error = end.error.clone();
                record.backup_id = end.backup_id.clone();
                record.bytes = end.bytes;
                self.unrecorded().push(record);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Records a run that never started (e.g. skipped because one was running).
    pub fn record_run(
        &self,
        job: &str,
        kind: RunKind,
        status: RunStatus,
        at: i64,
        error: &str,
    ) -> Result<(), CatalogError> {
        let run = self.start_run(job, kind, at)?;
        self.finish_run(
            run,
            &RunEnd {
                status,
                finished_at: at,
                error: error.to_owned(),
                backup_id: String::new(),
                bytes: 0,
            },
        )
    }

    /// The newest run of `job` of `kind` whose status is one of `statuses` (any
    /// status when empty).
    fn newest_run(
        &self,
        job: &str,
        kind: RunKind,
        statuses: &[RunStatus],
    ) -> Result<Option<RunRecord>, CatalogError> {
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let filter = if names.is_empty() {
            String::new()
        } else {
            format!(
                " AND status IN ({})",
                names
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE job = ?1 AND kind = ?2{filter} ORDER BY id DESC LIMIT 1"
        );
        let found = self
            .conn()
            .query_row(&sql, params![job, kind.as_str()], run_row)
            .optional()?
            .transpose()?;
        Ok(self.with_unrecorded(found, job, kind, |r| {
            statuses.is_empty() || statuses.contains(&r.status)
        }))
    }

    /// The newest run of `job` of `kind` (any status).
    pub fn last_run(&self, job: &str, kind: RunKind) -> Result<Option<RunRecord>, CatalogError> {
        self.newest_run(job, kind, &[])
    }

    /// The newest finished (succeeded or failed) run of `job` of `kind`: what its
    /// health is judged by. Skipped and cancelled runs say nothing about the backups.
    pub fn last_finished_run(&self, job: &str, kind: RunKind) -> Result<Option<RunRecord>, CatalogError> {
        self.newest_run(job, kind, &[RunStatus::Succeeded, RunStatus::Failed])
    }

    /// The newest successful run of `job` of `kind`.
    pub fn last_successful_run(&self, job: &str, kind: RunKind) -> Result<Option<RunRecord>, CatalogError> {
        self.newest_run(job, kind, &[RunStatus::Succeeded])
    }

    /// The newest runs of `job`, newest first.
    pub fn runs(&self, job: &str, limit: u32) -> Result<Vec<RunRecord>, CatalogError> {
        let conn = self.conn();
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT ?2");
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![job, limit], run_row)?;
        rows.map(|r| r?).collect()
    }

    /// Number of finished runs per (job, kind, status), for metrics.
    pub fn run_counts(&self) -> Result<Vec<(String, String, String, u64)>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT job, kind, status, count(*) FROM runs WHERE status != 'running'
             GROUP BY job, kind, status ORDER BY job, kind, status",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks runs left `running` by a daemon that died as failed.
    pub fn fail_interrupted_runs(&self, at: i64) -> Result<usize, CatalogError> {
        Ok(self.conn().execute(
            "UPDATE runs SET status = 'failed', finished_at = ?1,
             error = 'cofferd stopped before the run finished' WHERE status = 'running'",
            [at],
        )?)
    }
}

fn run_row(r: &Row<'_>) -> rusqlite::Result<Result<RunRecord, CatalogError>> {
    let id: i64 = r.get(0)?;
    let kind: String = r.get(2)?;
    let status: String = r.get(3)?;
    let (Some(kind), Some(status)) = (RunKind::parse(&kind), RunStatus::parse(&status)) else {
        return Ok(Err(CatalogError::Corrupt {
            id: format!("run {id}"),
            message: format!("unknown run kind '{kind}' or status '{status}'"),
        }));
    };
    Ok(Ok(RunRecord {
        id,
        job: r.get(1)?,
        kind,
        status,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        error: r.get(6)?,
        backup_id: r.get(7)?,
        bytes: r.get::<_, i64>(8)? as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        (dir, catalog)
    }

    fn end(status: RunStatus, at: i64) -> RunEnd {
        RunEnd {
            status,
            finished_at: at,
            error: if status == RunStatus::Failed {
                "boom".into()
            } else {
                String::new()
            },
            backup_id: String::new(),
            bytes: 0,
        }
    }

    #[test]
    fn runs_of_every_kind_are_kept_apart() {
        let (_dir, c) = catalog();
        let backup = c.start_run("app", RunKind::Backup, 10).unwrap();
        c.finish_run(backup, &end(RunStatus::Succeeded, 11)).unwrap();
        let verify = c.start_run("app", RunKind::Verify, 12).unwrap();
        c.finish_run(verify, &end(RunStatus::Failed, 13)).unwrap();
        c.record_run("app", RunKind::Backup, RunStatus::Skipped, 14, "busy")
            .unwrap();

        let last = c.last_run("app", RunKind::Backup).unwrap().unwrap();
        assert_eq!((last.kind, last.status), (RunKind::Backup, RunStatus::Skipped));
        let finished = c.last_finished_run("app", RunKind::Backup).unwrap().unwrap();
        assert_eq!((finished.id, finished.status), (backup, RunStatus::Succeeded));
        let verify_run = c.last_finished_run("app", RunKind::Verify).unwrap().unwrap();
        assert_eq!(verify_run.error, "boom");
        assert!(c.last_successful_run("app", RunKind::Verify).unwrap().is_none());
        assert_eq!(c.runs("app", 10).unwrap().len(), 3);
        let counts = c.run_counts().unwrap();
        assert!(
            counts.contains(&("app".into(), "verify".into(), "failed".into(), 1)),
            "{counts:?}"
        );
    }

    #[test]
    fn runs_left_running_by_a_dead_daemon_are_failed() {
        let (_dir, c) = catalog();
        c.start_run("app", RunKind::Restore, 10).unwrap();
        assert_eq!(c.fail_interrupted_runs(20).unwrap(), 1);
        let run = c.last_run("app", RunKind::Restore).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert!(run.error.contains("stopped before the run finished"));
    }
}
