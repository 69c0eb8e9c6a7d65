//! Restoring a MariaDB dump into a new schema, and checking a restored copy with
//! `mariadb-check` (CHECK TABLE) where it is installed.

use std::path::Path;

use super::dump::validate_file;
use super::swap::SchemaObject;
use super::{ADMIN_TIMEOUT, MOVABLE, Mariadb, QUERY_TIMEOUT};
use crate::config::ServerKind;
use crate::source::dump::names::{self, my_ident, my_literal};
use crate::source::dump::run::{self, Control, Input, Job, Meter};
use crate::source::dump::{DbError, RestoreOptions, Scratch, VerifyOutcome};

impl Mariadb {
    /// `CHARACTER SET x COLLATE y` of the live schema (empty if it does not exist),
    /// so scratch schemas behave like it for objects that inherit the defaults.
    pub(super) fn charset_clause(&self) -> Result<String, DbError> {
        let rows = self.sql(
            None,
            format!("reading the character set of database '{}'", self.database()),
            &format!(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
                my_literal(self.database())
            ),
            QUERY_TIMEOUT,
        )?;
        Ok(match rows.first() {
            Some(r) if r.len() == 2 => {
                format!(" CHARACTER SET {} COLLATE {}", my_ident(&r[0]), my_ident(&r[1]))
            }
            _ => String::new(),
        })
    }

    /// Restores `dump` into a new schema `target` (refused if it exists), created
    /// with the live schema's character set. The dump is fed to the client as is
    /// (mariadb-dump of one database has no `USE`). Progress counts dump bytes fed.
    /// On failure `target` is dropped again. `opts` has no effect: definers and
    /// grants in the dump need the privileges they need.
    pub fn restore_into(
        &self,
        dump: &Path,
        target: &str,
        _opts: &RestoreOptions,
        ctl: &mut Control<'_>,
    ) -> Result<(), DbError> {
        names::check_name(target, ServerKind::Mariadb, "target database name")?;
        validate_file(dump)?;
        if self.exists(target)? {
            return Err(DbError::Exists {
                database: target.to_owned(),
                hint: "restore into a database that does not exist yet".into(),
            });
        }
        let total = std::fs::metadata(dump)
            .map_err(DbError::io("cannot read the dump", dump))?
            .len();
        let charset = self.charset_clause()?;
        self.sql(
            None,
            format!("creating database '{target}'"),
            &format!("CREATE DATABASE {}{charset};", my_ident(target)),
            ADMIN_TIMEOUT,
        )?;
        let job = self
            .client_job(Some(target), format!("the restore into database '{target}'"))
            .arg("--max-allowed-packet=1G")
            .stdin(Input::File(dump))
            .meter(Meter::Fed, total);
        let result = run::run(job, ctl, self.scrubber());
        if result.is_err() {
            let _ = self.drop_database(target);
        }
        result.map(|_| ())
    }

    fn count_tables(&self, database: &str) -> Result<u64, DbError> {
        let action = format!("counting the tables of database '{database}'");
        let rows = self.sql(
            None,
            action.clone(),
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE IN {MOVABLE};",
                my_literal(database)
            ),
            QUERY_TIMEOUT,
        )?;
        Self::number(&action, rows.first().and_then(|r| r.first()))
    }

    /// Checks every table of `database` with `mariadb-check` (CHECK TABLE) when
    /// installed; returns the table count and the checker used.
    pub fn check(
        &self,
        database: &str,
        ctl: &mut Control<'_>,
    ) -> Result<(u64, Option<&'static str>), DbError> {
        let tables = self.count_tables(database)?;
        let Some(tool) = &self.tools.check else {
            return Ok((tables, None));
        };
        let action = format!("mariadb-check of database '{database}'");
        let job = Job::new(tool, action.clone())
            .args(self.defaults())
            .args(["--check", "--default-character-set=utf8mb4"])
            .arg(database);
        let out = run::run(job, ctl, self.scrubber())?;
        // Lines are "db.table   OK", or the table followed by "error : ..." lines.
        let problems: Vec<String> = out
            .text()
            .lines()
            .map(str::trim)
            .filter(|l| {
                let lower = l.to_ascii_lowercase();
                lower.starts_with("error") || lower.contains("corrupt")
            })
            .map(str::to_owned)
            .collect();
        if !problems.is_empty() {
            return Err(DbError::Tool {
                action,
                tool: "mariadb-check",
                status: "found problems".into(),
                detail: run::condense(&problems.join("\n")),
            });
        }
        Ok((tables, Some("mariadb-check")))
    }

    /// Deep verify: restores `dump` into `<db>__coffer_verify`, drops its events
    /// (so they do not run against the copy), runs `mariadb-check` over it, and drops
    /// it whatever happened.
    pub fn verify_deep(&self, dump: &Path, ctl: &mut Control<'_>) -> Result<VerifyOutcome, DbError> {
        let name = self.scratch_name(Scratch::Verify);
        self.drop_database(&name)?;
        let result = self
            .restore_into(dump, &name, &RestoreOptions::default(), ctl)
            .and_then(|()| {
                let events: Vec<SchemaObject> = self
                    .objects(&name)?
                    .into_iter()
                    .filter(|o| o.kind == "EVENT")
                    .collect();
                self.drop_objects(&name, &events)?;
                let (tables, checker) = self.check(&name, ctl)?;
                Ok(VerifyOutcome {
                    database: name.clone(),
                    tables,
                    checker,
                    note: checker
                        .is_none()
                        .then(|| "mariadb-check is not installed".to_owned()),
                })
            });
        let dropped = self.drop_database(&name);
        let outcome = result?;
        dropped?;
        Ok(outcome)
    }
}
