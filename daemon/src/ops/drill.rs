//! Restore drills: proof that the newest backup brings the app back.
//!
//! A drill takes the job's newest backup, restores all of it (database and media) into
//! a fresh staging directory in one verifying pass — every entry against the manifest
//! and its sha256 — runs SQLite's `integrity_check` and `foreign_key_check` on the
//! restored database (so it is a deep verification too, and recorded as one), then the
//! job's `[job.drill] checks`: each query must return exactly one truthy value. The
//! staging copy is removed whatever happens. A drill reads the backup and writes only
//! to staging: live data is never touched. An encrypted backup is decrypted with the
//! job's identity file; without one the drill is refused, saying how to provide it.
//!
//! Truthy: any value but NULL, 0, 0.0, and the texts '', '0', 'false', 'f', 'no'
//! (case-insensitive) — what an admin's `SELECT count(*) > 0 ...` returns is 0 or 1.
//!
//! A PostgreSQL or MariaDB job's drill restores the dump into the scratch database
//! `<db>__coffer_drill` on the job's server instead
//! ([`restore::database::drill_database`]) and runs the checks there with `psql` /
//! `mariadb`, whose values arrive as text (PostgreSQL's booleans as `t`/`f`, NULL as
//! an empty value: both judged as above); the scratch database is dropped afterwards.

use std::time::Instant;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::verify::{self, Stage};
use super::{Ctx, restore};
use crate::archive::Layout;
use crate::config::JobConfig;
use crate::error::Error;
use crate::run::{Event, Phase, Progress};

/// What a drill proved.
#[derive(Debug, Clone, PartialEq)]
pub struct Drilled {
    pub job: String,
    pub backup_id: String,
    /// Each check with the value it returned.
    pub checks: Vec<(String, String)>,
    pub duration_ms: u64,
}

/// Runs a drill of `job`'s newest backup (see the module doc).
pub fn drill(ctx: &Ctx, job: &JobConfig, progress: Progress<'_>) -> Result<Drilled, Error> {
    let clock = Instant::now();
    let record = ctx
        .catalog
        .latest(Some(&job.name))?
        .ok_or_else(|| Error::NoBackups(job.name.clone()))?;
    let failed = |why: String| Error::Drill {
        id: record.id.clone(),
        why,
    };
    if record.summary.source.dump().is_some() {
        return drill_server(ctx, job, &record, clock, progress);
    }
    let sidecar = verify::load_sidecar(ctx, &record)?;
    // An encrypted backup needs the identity: refused before anything is staged.
    let keys = verify::keys(ctx, &record.job, &sidecar)?;
    let stage = Stage::new(ctx, &format!("drill-{}", record.id))?;
    let db = stage.dir.join("db").join(restore::db_name(&sidecar));
    let layout = Layout {
        db: Some(db.clone()),
        media: (0..sidecar.manifest.media_roots.len())
            .map(|n| Some(stage.dir.join("media").join(n.to_string())))
            .collect(),
    };
    progress(Event::new(
        Phase::Extract,
        format!("restoring backup {} into staging", record.id),
    ));
    let restored = verify::extract_checked(
        ctx,
        &ctx.archive_path(&record),
        keys,
        Some(verify::expected(&sidecar)),
        &layout,
        &format!("backup {} failed verification", record.id),
        Phase::Extract,
        sidecar.size,
        progress,
    );
    verify::record_verdict(ctx, &record, restored.as_ref().map(drop));
    restored?;
    progress(Event::new(
        Phase::Drill,
        format!("{} check(s)", job.drill.checks.len()),
    ));
    let conn = Connection::open_with_flags(
        &db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| failed(format!("the restored database cannot be opened ({e})")))?;
    let mut checks = Vec::with_capacity(job.drill.checks.len());
    for query in &job.drill.checks {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let value = run_check(&conn, query).map_err(|why| failed(format!("check '{query}' {why}")))?;
        checks.push((query.clone(), value));
    }
    Ok(Drilled {
        job: job.name.clone(),
        backup_id: record.id.clone(),
        checks,
        duration_ms: clock.elapsed().as_millis() as u64,
    })
}

/// The drill of a database-server job: the dump restored into `<db>__coffer_drill`,
/// the checks run there, the database dropped (see the module doc).
fn drill_server(
    ctx: &Ctx,
    job: &JobConfig,
    record: &crate::catalog::BackupRecord,
    clock: Instant,
    progress: Progress<'_>,
) -> Result<Drilled, Error> {
    progress(Event::new(
        Phase::Extract,
        format!("restoring backup {} into a scratch database", record.id),
    ));
    let outcomes = restore::database::drill_database(ctx, record, job, &job.drill.checks, progress);
    // The dump was extracted, validated and loaded: as good as a deep verification.
    verify::record_verdict(ctx, record, outcomes.as_ref().map(drop));
    let mut checks = Vec::with_capacity(job.drill.checks.len());
    for (query, outcome) in job.drill.checks.iter().zip(outcomes?) {
        let why = match outcome {
            Ok(value) => {
                let text = format!("'{value}'");
                if judge(ValueRef::Text(value.as_bytes())).1 {
                    checks.push((query.clone(), text));
                    continue;
                }
                format!("returned {text}, which is false")
            }
            Err(e) => format!("failed: {e}"),
        };
        return Err(Error::Drill {
            id: record.id.clone(),
            why: format!("check '{query}' {why}"),
        });
    }
    Ok(Drilled {
        job: job.name.clone(),
        backup_id: record.id.clone(),
        checks,
        duration_ms: clock.elapsed().as_millis() as u64,
    })
}

/// Runs one check; its value as text, or why it failed (a phrase that follows
/// "check '<query>'").
fn run_check(conn: &Connection, query: &str) -> Result<String, String> {
    let mut stmt = conn.prepare(query).map_err(|e| format!("failed: {e}"))?;
    if stmt.column_count() != 1 {
        return Err(format!(
            "returned {} columns; a check must return exactly one value",
            stmt.column_count()
        ));
    }
    let mut rows = stmt.query([]).map_err(|e| format!("failed: {e}"))?;
    let Some(row) = rows.next().map_err(|e| format!("failed: {e}"))? else {
        return Err("returned no row; a check must return exactly one value".into());
    };
    let value = row.get_ref(0).map_err(|e| format!("failed: {e}"))?;
    let (text, truthy) = judge(value);
    if rows.next().map_err(|e| format!("failed: {e}"))?.is_some() {
        return Err("returned more than one row; a check must return exactly one value".into());
    }
    if !truthy {
        return Err(format!("returned {text}, which is false"));
    }
    Ok(text)
}

/// A value as text, and whether it is truthy (see the module doc).
fn judge(value: ValueRef<'_>) -> (String, bool) {
    match value {
        ValueRef::Null => ("NULL".into(), false),
        ValueRef::Integer(i) => (i.to_string(), i != 0),
        ValueRef::Real(f) => (f.to_string(), f != 0.0),
        ValueRef::Text(t) => {
            let text = String::from_utf8_lossy(t).into_owned();
            let falsy = matches!(
                text.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "f" | "no"
            );
            (format!("'{text}'"), !falsy)
        }
        ValueRef::Blob(b) => (format!("a blob of {} bytes", b.len()), !b.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backup;
    use crate::ops::testing::TestCtx;
    use crate::source::sqlite::test_db::make_db;

    fn ctx_with_checks(checks: &[&str]) -> (tempfile::TempDir, TestCtx) {
        let src = tempfile::tempdir().unwrap();
        let db = src.path().join("app.db");
        make_db(&db, true);
        let media = src.path().join("media");
        std::fs::create_dir_all(&media).unwrap();
        std::fs::write(media.join("f.txt"), b"media").unwrap();
        let checks: Vec<String> = checks.iter().map(|c| format!("{c:?}")).collect();
        let t = TestCtx::new(
            &db,
            &[media],
            &format!("[job.drill]\nchecks = [{}]", checks.join(", ")),
        );
        {
            let ctx = t.ctx();
            backup::take(&ctx, ctx.job("app").unwrap(), "", false, &mut |_| {}).unwrap();
        }
        (src, t)
    }

    #[test]
    fn a_good_backup_passes_its_checks_and_staging_is_removed() {
        let (_src, t) = ctx_with_checks(&["SELECT count(*) = 3 FROM t", "SELECT 'yes'"]);
        let ctx = t.ctx();
        let drilled = drill(&ctx, ctx.job("app").unwrap(), &mut |_| {}).unwrap();
        assert_eq!(drilled.checks[0].1, "1");
        assert_eq!(drilled.checks[1].1, "'yes'");
        assert_eq!(std::fs::read_dir(ctx.store.staging_dir()).unwrap().count(), 0);
        assert_eq!(ctx.get(&drilled.backup_id).unwrap().verify_result, "ok");
    }

    #[test]
    fn a_falsy_value_or_an_error_fails_naming_the_query() {
        for (check, why) in [
            (
                "SELECT count(*) FROM t WHERE v = 'zzz'",
                "returned 0, which is false",
            ),
            ("SELECT nope FROM t", "failed: no such column: nope"),
            ("SELECT 1, 2", "returned 2 columns"),
            ("SELECT v FROM t", "returned more than one row"),
            ("SELECT 1 WHERE 0", "returned no row"),
        ] {
            let (_src, t) = ctx_with_checks(&[check]);
            let ctx = t.ctx();
            let err = drill(&ctx, ctx.job("app").unwrap(), &mut |_| {})
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("check '{check}' {why}")), "{err}");
            assert_eq!(std::fs::read_dir(ctx.store.staging_dir()).unwrap().count(), 0);
        }
    }

    #[test]
    fn truthiness() {
        assert!(!judge(ValueRef::Null).1);
        assert!(!judge(ValueRef::Integer(0)).1 && judge(ValueRef::Integer(-1)).1);
        assert!(!judge(ValueRef::Text(b"False")).1 && judge(ValueRef::Text(b"ok")).1);
        assert!(!judge(ValueRef::Real(0.0)).1);
    }
}
