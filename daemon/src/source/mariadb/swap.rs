//! The in-place swap on MariaDB, and the sessions it must see and end.
//!
//! Tables move with one atomic multi-table `RENAME TABLE`, but MariaDB refuses to
//! move a table that has triggers to another schema ("Trigger in wrong schema") and
//! views cannot change schema at all; routines and events belong to their schema.
//! So before anything changes, `mariadb-dump` saves the live schema's views,
//! triggers, routines and events to a file (and the restored copy's to another, both
//! beside the restore journal, where start-up recovery finds them); the swap then
//! drops them from both schemas, renames the tables (live -> `<db>__coffer_old`,
//! restored -> live, plus a marker table that tells recovery whether the rename ran),
//! and recreates the restored copy's objects in the live schema. A rollback drops
//! whatever objects the live schema has, renames the tables back, and replays the
//! saved file. Grants stay with the schema and table names, so they keep applying.
//! Phases and their undoing: [`crate::source::dump::swap`].

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use super::dump::{TRAILER, TailWriter, has_trailer};
use super::{ADMIN_TIMEOUT, MOVABLE, Mariadb, QUERY_TIMEOUT};
use crate::config::ServerKind;
use crate::source::dump::names::{my_ident, my_literal};
use crate::source::dump::run::{self, Control, Input, Job, Sink, never_cancelled};
use crate::source::dump::{DbError, Recovered, Scratch, Session, SwapPhase, SwapRecord};

/// How long killed sessions get to go away.
const TERMINATE_WAIT: Duration = Duration::from_secs(10);
/// File names, in the caller's directory, of the saved schema objects.
const OLD_OBJECTS: &str = "coffer-swap-live-objects.sql";
const NEW_OBJECTS: &str = "coffer-swap-restored-objects.sql";
/// A table moved into the old schema by the same atomic `RENAME TABLE` that swaps
/// the tables, so recovery can tell whether that statement ran.
const MARKER: &str = "__coffer_swap_marker";

/// A schema object that is not a table, as the swap drops and recreates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SchemaObject {
    /// `TRIGGER`, `VIEW`, `FUNCTION`, `PROCEDURE`, `PACKAGE`, `PACKAGE BODY`, `EVENT`.
    pub(super) kind: String,
    pub(super) name: String,
}

impl Mariadb {
    /// Other client sessions whose current database is `database`. (Sessions that
    /// use it without selecting it are not visible here; the swap's lock wait
    /// timeout covers them.)
    pub fn other_sessions(&self, database: &str) -> Result<Vec<Session>, DbError> {
        let rows = self.sql(
            None,
            format!("listing the sessions of database '{database}'"),
            &format!(
                "SELECT ID, USER, HOST, COALESCE(COMMAND, '') FROM information_schema.PROCESSLIST \
                 WHERE DB = {} AND ID <> CONNECTION_ID() AND USER NOT IN ('event_scheduler', 'system user') \
                 AND COMMAND <> 'Daemon' ORDER BY ID;",
                my_literal(database)
            ),
            QUERY_TIMEOUT,
        )?;
        Ok(rows
            .into_iter()
            .filter(|r| r.len() == 4)
            .map(|r| Session {
                id: r[0].parse().unwrap_or(0),
                user: r[1].clone(),
                client: r[2].clone(),
                application: r[3].clone(),
            })
            .collect())
    }

    /// Kills every other session on `database` and waits until they are gone.
    pub fn terminate_sessions(&self, database: &str) -> Result<usize, DbError> {
        let sessions = self.other_sessions(database)?;
        if sessions.is_empty() {
            return Ok(0);
        }
        let script: String = sessions
            .iter()
            .map(|s| format!("KILL CONNECTION {};\n", s.id))
            .collect();
        // --force: a session that ended by itself meanwhile is not an error.
        let job = self
            .client_job(None, format!("ending the sessions of database '{database}'"))
            .arg("--force")
            .stdin(Input::Bytes(script.as_bytes()))
            .timeout(QUERY_TIMEOUT);
        let _ = run::run(job, &mut Control::cancel_only(&never_cancelled), self.scrubber());
        let deadline = Instant::now() + TERMINATE_WAIT;
        loop {
            let left = self.other_sessions(database)?;
            if left.is_empty() {
                return Ok(sessions.len());
            }
            if Instant::now() > deadline {
                return Err(DbError::InUse {
                    database: database.to_owned(),
                    sessions: left,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn tables(&self, database: &str) -> Result<Vec<String>, DbError> {
        let rows = self.sql(
            None,
            format!("listing the tables of database '{database}'"),
            &format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE IN {MOVABLE} ORDER BY TABLE_NAME;",
                my_literal(database)
            ),
            QUERY_TIMEOUT,
        )?;
        Ok(rows.into_iter().filter_map(|r| r.into_iter().next()).collect())
    }

    pub(super) fn objects(&self, database: &str) -> Result<Vec<SchemaObject>, DbError> {
        let db = my_literal(database);
        let rows = self.sql(
            None,
            format!("listing the views, triggers, routines and events of database '{database}'"),
            &format!(
                "SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {db} \
                 UNION ALL SELECT 'VIEW', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {db} \
                 UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {db} \
                 UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db};"
            ),
            QUERY_TIMEOUT,
        )?;
        Ok(rows
            .into_iter()
            .filter(|r| r.len() == 2)
            .map(|r| SchemaObject {
                kind: r[0].clone(),
                name: r[1].clone(),
            })
            .collect())
    }

    pub(super) fn drop_objects(&self, database: &str, objects: &[SchemaObject]) -> Result<(), DbError> {
        if objects.is_empty() {
            return Ok(());
        }
        let db = my_ident(database);
        // Package bodies before packages; everything else in any order.
        let mut sorted: Vec<&SchemaObject> = objects.iter().collect();
        sorted.sort_by_key(|o| o.kind != "PACKAGE BODY");
        let script: String = sorted
            .iter()
            .map(|o| format!("DROP {} IF EXISTS {db}.{};\n", o.kind, my_ident(&o.name)))
            .collect();
        self.sql(
            None,
            format!("dropping the views, triggers, routines and events of database '{database}'"),
            &script,
            ADMIN_TIMEOUT,
        )?;
        Ok(())
    }

    /// Saves the views, triggers, routines and events of `database` to `path` as
    /// SQL that recreates them in whatever schema it is fed into.
    fn save_objects(&self, database: &str, path: &Path) -> Result<(), DbError> {
        let mut file = std::fs::File::create(path).map_err(DbError::io("cannot create", path))?;
        let action = format!("saving the views, triggers, routines and events of database '{database}'");
        let run_dump = |args: Vec<OsString>, file: &mut std::fs::File| -> Result<(), DbError> {
            let mut tail = TailWriter {
                inner: file,
                tail: Vec::new(),
            };
            let job = Job::new(&self.tools.dump, action.clone())
                .args(self.defaults())
                .args(args)
                .sink(Sink::Writer(&mut tail))
                .timeout(ADMIN_TIMEOUT);
            run::run(job, &mut Control::cancel_only(&never_cancelled), self.scrubber())?;
            if has_trailer(&tail.tail) {
                Ok(())
            } else {
                Err(DbError::Unexpected {
                    action: action.clone(),
                    tool: "mariadb-dump",
                    detail: format!("its output does not end with '{TRAILER}'"),
                })
            }
        };
        let common = [
            "--no-data",
            "--skip-lock-tables",
            "--default-character-set=utf8mb4",
        ];
        let mut args: Vec<OsString> = common.iter().map(OsString::from).collect();
        args.extend(
            [
                "--no-create-info",
                "--skip-add-drop-table",
                "--routines",
                "--events",
                "--triggers",
            ]
            .map(OsString::from),
        );
        args.push(database.into());
        run_dump(args, &mut file)?;
        // --no-create-info leaves views out; they are dumped by name.
        let views: Vec<String> = self
            .objects(database)?
            .into_iter()
            .filter(|o| o.kind == "VIEW")
            .map(|o| o.name)
            .collect();
        if !views.is_empty() {
            let mut args: Vec<OsString> = common.iter().map(OsString::from).collect();
            args.extend(["--skip-triggers", "--skip-routines", "--skip-events"].map(OsString::from));
            args.push(database.into());
            args.extend(views.into_iter().map(OsString::from));
            run_dump(args, &mut file)?;
        }
        file.sync_all().map_err(DbError::io("cannot write", path))
    }

    /// Feeds a saved objects file into `database`.
    fn apply_objects(&self, database: &str, path: &Path) -> Result<(), DbError> {
        let job = self
            .client_job(
                Some(database),
                format!("recreating the views, triggers, routines and events of database '{database}'"),
            )
            .stdin(Input::File(path))
            .timeout(ADMIN_TIMEOUT);
        run::run(job, &mut Control::cancel_only(&never_cancelled), self.scrubber())?;
        Ok(())
    }

    /// Checks that an in-place swap can start (the live and restored schemas
    /// exist, no old copy is left, no other session unless `force`) and saves the
    /// non-table objects of both schemas into `staging` (a directory the caller
    /// owns and keeps until the swap is over). Returns the record for the journal.
    pub fn prepare_swap(&self, force: bool, staging: &Path) -> Result<SwapRecord, DbError> {
        let live = self.database().to_owned();
        let scratch = self.scratch_name(Scratch::Restore);
        let old = self.scratch_name(Scratch::Old);
        let action = format!("the swap of database '{live}'");
        if !self.exists(&live)? {
            return Err(DbError::DatabaseMissing {
                action,
                database: live,
                detail: String::new(),
            });
        }
        if !self.exists(&scratch)? {
            return Err(DbError::DatabaseMissing {
                action,
                database: scratch,
                detail: "nothing was restored to swap in".into(),
            });
        }
        if self.exists(&old)? {
            return Err(DbError::Exists {
                database: old,
                hint: "an earlier in-place restore did not finish; let start-up recovery handle it, or drop it by hand once you are sure the live database is right".into(),
            });
        }
        if !force {
            let sessions = self.other_sessions(&live)?;
            if !sessions.is_empty() {
                return Err(DbError::InUse {
                    database: live,
                    sessions,
                });
            }
        }
        let old_objects = staging.join(OLD_OBJECTS);
        let new_objects = staging.join(NEW_OBJECTS);
        self.save_objects(&live, &old_objects)?;
        self.save_objects(&scratch, &new_objects)?;
        Ok(SwapRecord {
            engine: ServerKind::Mariadb,
            live,
            scratch,
            old,
            phase: SwapPhase::Prepared,
            force,
            blocked_connections: false,
            old_objects: Some(old_objects),
            new_objects: Some(new_objects),
        })
    }

    fn objects_file(r: &SwapRecord, new: bool) -> Result<&Path, DbError> {
        let path = if new { &r.new_objects } else { &r.old_objects };
        path.as_deref().ok_or_else(|| {
            DbError::Config(format!(
                "the swap record of database '{}' names no saved objects file",
                r.live
            ))
        })
    }

    /// One `RENAME TABLE` statement (atomic: all or nothing) making the `moves` in
    /// order: every table of a schema (`None`), or one named table (`Some`).
    fn rename_tables(&self, moves: &[(&str, &str, Option<&str>)], action: String) -> Result<(), DbError> {
        let mut pairs = Vec::new();
        for (from, to, only) in moves {
            let tables = match only {
                Some(table) => vec![(*table).to_owned()],
                None => self.tables(from)?.into_iter().filter(|t| t != MARKER).collect(),
            };
            for table in tables {
                pairs.push(format!(
                    "{}.{} TO {}.{}",
                    my_ident(from),
                    my_ident(&table),
                    my_ident(to),
                    my_ident(&table)
                ));
            }
        }
        if pairs.is_empty() {
            return Ok(());
        }
        // A session holding a table lock makes RENAME wait; fail instead of hanging.
        let sql = format!(
            "SET SESSION lock_wait_timeout = 30;\nRENAME TABLE {};",
            pairs.join(", ")
        );
        self.sql(None, action, &sql, ADMIN_TIMEOUT)?;
        Ok(())
    }

    fn create_schema(&self, name: &str) -> Result<(), DbError> {
        let charset = self.charset_clause()?;
        self.sql(
            None,
            format!("creating database '{name}'"),
            &format!("CREATE DATABASE IF NOT EXISTS {}{charset};", my_ident(name)),
            ADMIN_TIMEOUT,
        )?;
        Ok(())
    }

    /// Whether the tables were swapped: the marker moved into the old schema in the
    /// same atomic statement.
    fn swapped(&self, r: &SwapRecord) -> Result<bool, DbError> {
        Ok(self.exists(&r.old)? && self.tables(&r.old)?.iter().any(|t| t == MARKER))
    }

    pub fn swap_step(&self, r: &SwapRecord) -> Result<(), DbError> {
        match r.phase {
            SwapPhase::Prepared | SwapPhase::Done => Ok(()),
            SwapPhase::Detaching => {
                if r.force {
                    self.terminate_sessions(&r.live)?;
                } else {
                    let sessions = self.other_sessions(&r.live)?;
                    if !sessions.is_empty() {
                        return Err(DbError::InUse {
                            database: r.live.clone(),
                            sessions,
                        });
                    }
                }
                self.drop_objects(&r.live, &self.objects(&r.live)?)?;
                self.drop_objects(&r.scratch, &self.objects(&r.scratch)?)
            }
            SwapPhase::Renaming => {
                self.create_schema(&r.old)?;
                self.sql(
                    None,
                    format!("marking database '{}'", r.scratch),
                    &format!(
                        "CREATE TABLE IF NOT EXISTS {}.{} (swapped INT) ENGINE=InnoDB;",
                        my_ident(&r.scratch),
                        my_ident(MARKER)
                    ),
                    ADMIN_TIMEOUT,
                )?;
                self.rename_tables(
                    &[
                        (&r.live, &r.old, None),
                        (&r.scratch, &r.old, Some(MARKER)),
                        (&r.scratch, &r.live, None),
                    ],
                    format!(
                        "moving the tables of database '{}' to '{}' and of '{}' to '{}'",
                        r.live, r.old, r.scratch, r.live
                    ),
                )
            }
            SwapPhase::Attaching => self.apply_objects(&r.live, Self::objects_file(r, true)?),
            SwapPhase::Committed => {
                self.drop_database(&r.old)?;
                self.drop_database(&r.scratch)?;
                for path in [&r.old_objects, &r.new_objects].into_iter().flatten() {
                    let _ = std::fs::remove_file(path);
                }
                Ok(())
            }
        }
    }

    /// Undoes a swap that has not committed, from any phase, idempotently: drops
    /// whatever views/triggers/routines/events the live schema has now, moves the
    /// tables back if the marker says they were swapped (restored copy out, old copy
    /// in, one statement), replays the saved live objects, and drops the scratch
    /// schemas.
    pub fn rollback(&self, r: &SwapRecord) -> Result<(), DbError> {
        let detached = r.phase >= SwapPhase::Detaching;
        if detached && self.exists(&r.live)? {
            self.drop_objects(&r.live, &self.objects(&r.live)?)?;
        }
        if self.swapped(r)? {
            if !self.exists(&r.live)? {
                self.create_schema(&r.live)?;
            }
            self.create_schema(&r.scratch)?;
            self.rename_tables(
                &[
                    (&r.live, &r.scratch, None),
                    (&r.old, &r.live, None),
                    (&r.old, &r.scratch, Some(MARKER)),
                ],
                format!("moving the tables of database '{}' back", r.live),
            )?;
        }
        if detached {
            self.apply_objects(&r.live, Self::objects_file(r, false)?)?;
        }
        self.drop_database(&r.scratch)?;
        if self.exists(&r.old)? {
            if self.tables(&r.old)?.is_empty() {
                self.drop_database(&r.old)?;
            } else {
                return Err(DbError::Config(format!(
                    "database '{}' still holds tables after the rollback; check it by hand before dropping it",
                    r.old
                )));
            }
        }
        for path in [&r.old_objects, &r.new_objects].into_iter().flatten() {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Waits (up to [`TERMINATE_WAIT`]) until no other session of our account runs a
    /// statement: one a killed cofferd's client was running (a rename, a drop)
    /// finishes before recovery looks at the schemas.
    fn wait_for_orphans(&self) -> Result<(), DbError> {
        let sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                   WHERE USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND ID <> CONNECTION_ID() AND COMMAND = 'Query';";
        let deadline = Instant::now() + TERMINATE_WAIT;
        loop {
            let rows = self.sql(
                None,
                "looking for an interrupted restore's statements".into(),
                sql,
                QUERY_TIMEOUT,
            )?;
            let busy = rows.first().and_then(|r| r.first()).is_some_and(|n| n != "0");
            if !busy || Instant::now() > deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start-up recovery of a swap a crash interrupted: rolls back one that had not
    /// committed, finishes one that had.
    pub fn recover(&self, r: &SwapRecord) -> Result<Recovered, DbError> {
        self.wait_for_orphans()?;
        if r.phase >= SwapPhase::Committed {
            let mut done = r.clone();
            done.phase = SwapPhase::Committed;
            self.swap_step(&done)?;
            Ok(Recovered::Finished)
        } else {
            self.rollback(r)?;
            Ok(Recovered::RolledBack)
        }
    }
}
