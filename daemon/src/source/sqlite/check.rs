//! Checks of SQLite copies: `quick_check` before a snapshot is archived,
//! `integrity_check` + `foreign_key_check` for deep verification and restores.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::source::SourceError;

/// Runs `PRAGMA quick_check` (or, when `deep`, `integrity_check` and
/// `foreign_key_check`) on a copy that no one else uses.
pub fn check(path: &Path, deep: bool) -> Result<(), SourceError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| SourceError::from_sqlite(path, Duration::ZERO, e))?;
    run_check(&conn, path, deep)
}

/// The checks of [`check`] on an open connection (in its current transaction). The
/// error is one line: SQLite's first finding and how many there were.
pub(crate) fn run_check(conn: &Connection, path: &Path, deep: bool) -> Result<(), SourceError> {
    let fail = |message: String| SourceError::Check {
        path: path.to_owned(),
        message,
    };
    let sql_err = |e| SourceError::from_sqlite(path, Duration::ZERO, e);
    let pragma = if deep {
        "PRAGMA integrity_check"
    } else {
        "PRAGMA quick_check"
    };
    let mut stmt = conn.prepare(pragma).map_err(sql_err)?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(sql_err)?
        .collect::<Result<_, _>>()
        .map_err(sql_err)?;
    if rows.as_slice() != ["ok"] {
        // SQLite's findings can span lines ("*** in database main ***\nPage 5: ...").
        let findings: Vec<&str> = rows
            .iter()
            .flat_map(|r| r.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("***"))
            .collect();
        let first = findings.first().copied().unwrap_or("unknown problem");
        return Err(fail(match findings.len() {
            0 | 1 => first.to_owned(),
            n => format!("{first} (and {} more problem(s))", n - 1),
        }));
    }
    if deep {
        let mut stmt = conn.prepare("PRAGMA foreign_key_check").map_err(sql_err)?;
        let violations: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        if let Some(table) = violations.first() {
            return Err(fail(format!(
                "{} foreign key violation(s), first in table {table}",
                violations.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sqlite::test_db::make_db;

    #[test]
    fn check_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        make_db(&db, false);
        check(&db, true).unwrap();
        // Overwrite the second page (the table's b-tree) with garbage.
        let mut bytes = std::fs::read(&db).unwrap();
        for b in &mut bytes[4096..4200] {
            *b = 0xA5;
        }
        std::fs::write(&db, bytes).unwrap();
        let err = check(&db, true).unwrap_err().to_string();
        assert!(!err.contains('\n'), "one line: {err}");
    }
}
