//! Dumping a MariaDB database: `mariadb-dump --single-transaction --routines
//! --triggers --events --hex-blob DB` into the spool, then validating the file.
//!
//! No `--databases`, so the output has no `CREATE DATABASE`/`USE` and can be fed
//! into any schema (the restore's scratch schema, or by hand). `--single-transaction`
//! is only consistent for transactional engines, so tables of other engines (MyISAM,
//! Aria, MEMORY, CSV..., i.e. every engine whose `information_schema.ENGINES`
//! `TRANSACTIONS` is not `YES`) make the dump refuse with a sentence listing them,
//! unless the job sets `allow-non-transactional`. Exit status 0 and the `-- Dump
//! completed` trailer are both required. mariadb-dump cannot report when its
//! snapshot is taken, so the media follow the dump.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::{MOVABLE, Mariadb, QUERY_TIMEOUT};
use crate::source::dump::names::my_literal;
use crate::source::dump::run::{self, Control, Job, Meter, Sink};
use crate::source::dump::{DbError, DumpCheck, DumpOutcome, ProbeFacts};

/// What a complete mariadb-dump output ends with.
pub(super) const TRAILER: &str = "-- Dump completed";
/// Bytes of a dump's end that are searched for the trailer.
const TAIL: usize = 512;

/// Keeps the last bytes written through it, to check a dump's trailer on the fly.
pub(super) struct TailWriter<'a> {
    pub(super) inner: &'a mut dyn Write,
    pub(super) tail: Vec<u8>,
}

impl Write for TailWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > TAIL {
            let excess = self.tail.len() - TAIL;
            self.tail.drain(..excess);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Whether the end of a dump is the `-- Dump completed` line.
pub(super) fn has_trailer(tail: &[u8]) -> bool {
    let text = String::from_utf8_lossy(tail);
    let text = text.trim_end();
    match text.rfind('\n') {
        Some(pos) => text[pos + 1..].starts_with(TRAILER),
        None => text.starts_with(TRAILER),
    }
}

impl Mariadb {
    /// Refuses tables of non-transactional engines (which `--single-transaction`
    /// cannot make consistent) unless the job allows them.
    pub fn check_transactional(&self) -> Result<(), DbError> {
        if self.settings.allow_non_transactional {
            return Ok(());
        }
        let tables = self.non_transactional_tables(self.database())?;
        if tables.is_empty() {
            Ok(())
        } else {
            Err(DbError::NonTransactional {
                database: self.database().to_owned(),
                tables,
            })
        }
    }

    /// Tables of `database` whose engine is not transactional, as `name (ENGINE)`.
    pub fn non_transactional_tables(&self, database: &str) -> Result<Vec<String>, DbError> {
        let rows = self.sql(
            None,
            format!("looking for non-transactional tables in database '{database}'"),
            &format!(
                "SELECT t.TABLE_NAME, COALESCE(t.ENGINE, 'no engine') FROM information_schema.TABLES t \
                 WHERE t.TABLE_SCHEMA = {} AND t.TABLE_TYPE IN {MOVABLE} \
                 AND (t.ENGINE IS NULL OR t.ENGINE NOT IN \
                 (SELECT ENGINE FROM information_schema.ENGINES WHERE TRANSACTIONS = 'YES')) \
                 ORDER BY t.TABLE_NAME;",
                my_literal(database)
            ),
            QUERY_TIMEOUT,
        )?;
        Ok(rows
            .into_iter()
            .filter(|r| r.len() == 2)
            .map(|r| format!("{} ({})", r[0], r[1]))
            .collect())
    }

    fn dump_args(&self) -> Vec<OsString> {
        let mut args = self.defaults();
        args.extend(
            [
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--no-tablespaces",
                "--default-character-set=utf8mb4",
            ]
            .map(OsString::from),
        );
        args.push(self.database().into());
        args
    }

    /// Streams a dump of the database, probed as `facts` just before, to `out` and
    /// checks the trailer of what it wrote. Progress counts bytes against the table
    /// data size.
    pub fn dump(
        &self,
        out: &mut dyn Write,
        facts: ProbeFacts,
        ctl: &mut Control<'_>,
    ) -> Result<DumpOutcome, DbError> {
        let action = format!("the dump of database '{}'", self.database());
        let mut tail = TailWriter {
            inner: out,
            tail: Vec::new(),
        };
        let job = Job::new(&self.tools.dump, action.clone())
            .args(self.dump_args())
            .sink(Sink::Writer(&mut tail))
            .meter(Meter::Sink, facts.data_bytes);
        let outcome = run::run(job, ctl, self.scrubber())?;
        if !has_trailer(&tail.tail) {
            return Err(DbError::Unexpected {
                action,
                tool: "mariadb-dump",
                detail: format!("its output does not end with '{TRAILER}', so it is incomplete"),
            });
        }
        Ok(DumpOutcome {
            bytes: outcome.written,
            facts,
            snapshot: None,
            entries: 0,
            warnings: outcome.stderr,
            frame: None,
        })
    }

    /// Dumps into `path` (created or truncated; a staging file the caller then
    /// archives) and validates it. On any failure `path` is removed.
    pub fn dump_file(
        &self,
        path: &Path,
        facts: ProbeFacts,
        ctl: &mut Control<'_>,
    ) -> Result<DumpOutcome, DbError> {
        let result = (|| {
            let mut file =
                std::fs::File::create(path).map_err(DbError::io("cannot create the dump file", path))?;
            let outcome = self.dump(&mut file, facts, ctl)?;
            file.flush()
                .map_err(DbError::io("cannot write the dump file", path))?;
            drop(file);
            self.validate(path)?;
            Ok(outcome)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Checks a dump file: not empty, starts like a mariadb-dump output and ends
    /// with its `-- Dump completed` trailer.
    pub fn validate(&self, path: &Path) -> Result<DumpCheck, DbError> {
        validate_file(path)
    }
}

/// [`Mariadb::validate`] without a source (the check needs no server).
pub fn validate_file(path: &Path) -> Result<DumpCheck, DbError> {
    let invalid = |reason: String| DbError::InvalidDump {
        path: path.to_owned(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| invalid(format!("it cannot be read ({e})")))?;
    let bytes = file
        .metadata()
        .map_err(|e| invalid(format!("it cannot be read ({e})")))?
        .len();
    if bytes == 0 {
        return Err(invalid("it is empty".into()));
    }
    let mut head = vec![0u8; 1024.min(bytes as usize)];
    file.read_exact(&mut head)
        .map_err(|e| invalid(format!("it cannot be read ({e})")))?;
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.contains("-- MariaDB dump") && !head.contains("-- MySQL dump") {
        return Err(invalid("it does not start like a mariadb-dump output".into()));
    }
    let database = head
        .lines()
        .find_map(|l| l.split_once("Database: ").map(|(_, db)| db.trim().to_owned()))
        .unwrap_or_default();
    let tail_len = (TAIL as u64).min(bytes);
    file.seek(SeekFrom::Start(bytes - tail_len))
        .map_err(|e| invalid(format!("it cannot be read ({e})")))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)
        .map_err(|e| invalid(format!("it cannot be read ({e})")))?;
    if !has_trailer(&tail) {
        return Err(invalid(format!(
            "it does not end with '{TRAILER}', so it is incomplete"
        )));
    }
    Ok(DumpCheck {
        bytes,
        entries: 0,
        database,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_detection() {
        assert!(has_trailer(b"...\n-- Dump completed on 2026-11-30 15:41:30\n"));
        assert!(has_trailer(b"x;\n-- Dump completed\n"));
        assert!(!has_trailer(b"INSERT INTO t VALUES (1);\n"));
        assert!(!has_trailer(
            b"-- Dump completed on x\nINSERT INTO t VALUES (1);\n"
        ));
    }

    #[test]
    fn validate_file_checks_head_and_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sql");
        std::fs::write(&path, "").unwrap();
        assert!(validate_file(&path).unwrap_err().to_string().contains("is empty"));
        std::fs::write(
            &path,
            "-- MariaDB dump 10.19\n-- Host: localhost    Database: shop\nINSERT INTO t VALUES (1);\n",
        )
        .unwrap();
        let err = validate_file(&path).unwrap_err().to_string();
        assert!(err.contains("does not end with '-- Dump completed'"), "{err}");
        std::fs::write(
            &path,
            "-- MariaDB dump 10.19\n-- Host: localhost    Database: shop\nINSERT INTO t VALUES (1);\n-- Dump completed on 2026-01-01\n",
        )
        .unwrap();
        let check = validate_file(&path).unwrap();
        assert_eq!(check.database, "shop");
    }
}
