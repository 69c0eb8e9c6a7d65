//! Restoring a PostgreSQL dump into a new database, and checking a restored copy.
//!
//! The dump's own `CREATE DATABASE` options (encoding, locale, template0) and owner
//! are read with `pg_restore --create` limited to the database entries
//! ([`super::toc`]), the database is created under the new name, `pg_restore
//! --exit-on-error` fills it (keeping owners and privileges unless told otherwise),
//! and the dump's database settings, grants and comment are applied to the new name
//! last. A failure drops what was created. Deep verify restores into
//! `<db>__coffer_verify` without owners and runs `pg_amcheck` where it can.

use std::ffi::OsString;
use std::path::Path;

use super::toc::{DatabaseEntry, TARGET, parse_database_entry};
use super::{Postgres, QUERY_TIMEOUT};
use crate::config::ServerKind;
use crate::source::dump::names::{self, pg_ident};
use crate::source::dump::run::{self, Control, Input, Job, Meter, Sink, never_cancelled};
use crate::source::dump::{DbError, RestoreOptions, Scratch, VerifyOutcome};

impl Postgres {
    fn database_entry(&self, dump: &Path) -> Result<DatabaseEntry, DbError> {
        let scan = self.list(dump, true)?;
        if scan.database_lines.is_empty() {
            // A dump taken without --create (by hand, or by another tool).
            return Ok(DatabaseEntry::default());
        }
        let mut list = scan.database_lines.join("\n");
        list.push('\n');
        let mut dump_arg = OsString::new();
        dump_arg.push(dump);
        let job = Job::new(
            &self.tools.pg_restore,
            format!("reading the database settings in {}", dump.display()),
        )
        .args(["--create", "--use-list=/dev/stdin", "--file=-", "--"])
        .arg(dump_arg)
        .envs(&self.env)
        .stdin(Input::Bytes(list.as_bytes()))
        .sink(Sink::Capture(1 << 20))
        .timeout(QUERY_TIMEOUT);
        let sql = run::run(job, &mut Control::cancel_only(&never_cancelled), self.scrubber())?.text();
        parse_database_entry(&sql).map_err(|reason| DbError::InvalidDump {
            path: dump.to_owned(),
            reason: format!("its database entry cannot be read ({reason})"),
        })
    }

    /// Restores `dump` into a new database `target` (refused if it exists): creates
    /// it with the dump's encoding and locale (and owner, settings, grants and
    /// comment when `opts.keep_owners`), then runs `pg_restore --exit-on-error`.
    /// Progress counts the dump bytes pg_restore has read. On failure, `target` is
    /// dropped again.
    pub fn restore_into(
        &self,
        dump: &Path,
        target: &str,
        opts: &RestoreOptions,
        ctl: &mut Control<'_>,
    ) -> Result<(), DbError> {
        names::check_name(target, ServerKind::Postgres, "target database name")?;
        if self.exists(target)? {
            return Err(DbError::Exists {
                database: target.to_owned(),
                hint: "restore into a database that does not exist yet".into(),
            });
        }
        let total = std::fs::metadata(dump)
            .map_err(DbError::io("cannot read the dump", dump))?
            .len();
        let entry = self.database_entry(dump)?;
        let mut create = format!("CREATE DATABASE {}", pg_ident(target));
        match &entry.create_options {
            Some(options) if !options.is_empty() => {
                create.push_str(" WITH ");
                create.push_str(options);
            }
            _ => create.push_str(" WITH TEMPLATE = template0"),
        }
        if opts.keep_owners
            && let Some(owner) = &entry.owner
        {
            create.push_str(" OWNER = ");
            create.push_str(owner);
        }
        create.push(';');
        self.admin(format!("creating database '{target}'"), &create)?;
        let result = self.fill(dump, target, &entry, opts, total, ctl);
        if result.is_err() {
            let _ = self.drop_database(target);
        }
        result
    }

    fn fill(
        &self,
        dump: &Path,
        target: &str,
        entry: &DatabaseEntry,
        opts: &RestoreOptions,
        total: u64,
        ctl: &mut Control<'_>,
    ) -> Result<(), DbError> {
        let mut args: Vec<OsString> = vec!["-w".into(), "--exit-on-error".into()];
        if !opts.keep_owners {
            args.push("--no-owner".into());
            args.push("--no-privileges".into());
        }
        if opts.jobs > 1 {
            args.push(format!("--jobs={}", opts.jobs).into());
        }
        args.push(format!("--dbname={}", self.uri(target)).into());
        args.push("--".into());
        args.push(dump.into());
        let job = Job::new(
            &self.tools.pg_restore,
            format!("the restore into database '{target}'"),
        )
        .args(args)
        .envs(&self.env)
        .meter(Meter::ToolRead, total);
        run::run(job, ctl, self.scrubber())?;
        // Settings and grants last: a setting such as default_transaction_read_only
        // or a grant that leaves our role out must not get in pg_restore's way.
        if opts.keep_owners && !entry.properties.is_empty() {
            let ident = pg_ident(target);
            let sql: Vec<String> = entry
                .properties
                .iter()
                .map(|s| s.replace(TARGET, &ident))
                .collect();
            self.admin(
                format!("applying the settings, grants and comment of database '{target}'"),
                &sql.join("\n"),
            )?;
        }
        Ok(())
    }

    /// Counts the user tables of `database`: the quick check after a restore
    /// (pg_restore --exit-on-error already stopped at the first failed statement).
    pub fn check(&self, database: &str) -> Result<u64, DbError> {
        let rows = self.psql(
            database,
            format!("checking database '{database}'"),
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%';",
            QUERY_TIMEOUT,
        )?;
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| DbError::Unexpected {
                action: format!("checking database '{database}'"),
                tool: "psql",
                detail: "no table count".into(),
            })
    }

    /// Deep verify: restores `dump` into `<db>__coffer_verify` (without owners, so
    /// no role memberships are needed), checks it with `pg_amcheck` where that
    /// works, and drops it again whatever happened.
    pub fn verify_deep(&self, dump: &Path, ctl: &mut Control<'_>) -> Result<VerifyOutcome, DbError> {
        let name = self.scratch_name(Scratch::Verify);
        // Ours by name: a leftover of an interrupted verify.
        self.drop_database(&name)?;
        let opts = RestoreOptions {
            keep_owners: false,
            jobs: 1,
        };
        let result = self.restore_into(dump, &name, &opts, ctl).and_then(|()| {
            let tables = self.check(&name)?;
            let (checker, note) = self.amcheck(&name, ctl)?;
            Ok(VerifyOutcome {
                database: name.clone(),
                tables,
                checker,
                note,
            })
        });
        let dropped = self.drop_database(&name);
        let outcome = result?;
        dropped?;
        Ok(outcome)
    }

    /// Runs pg_amcheck on `database` if installed. Corruption is an error; being
    /// unable to run it (no superuser to install the extension) is a note.
    fn amcheck(
        &self,
        database: &str,
        ctl: &mut Control<'_>,
    ) -> Result<(Option<&'static str>, Option<String>), DbError> {
        let Some(tool) = &self.tools.pg_amcheck else {
            return Ok((None, Some("pg_amcheck is not installed".into())));
        };
        let job = Job::new(tool, format!("pg_amcheck of database '{database}'"))
            .args(["-w", "--install-missing"])
            .arg(self.uri(database))
            .envs(&self.env);
        match run::run(job, ctl, self.scrubber()) {
            Ok(_) => Ok((Some("pg_amcheck"), None)),
            Err(DbError::Tool { detail, .. })
                if detail.contains("permission denied")
                    || detail.contains("must be superuser")
                    || detail.contains("is not available")
                    || detail.contains("not allowed") =>
            {
                Ok((None, Some(format!("pg_amcheck could not run: {detail}"))))
            }
            Err(e) => Err(e),
        }
    }
}
