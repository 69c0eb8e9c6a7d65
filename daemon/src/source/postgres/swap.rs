//! The in-place swap on PostgreSQL, and the sessions it must see and end.
//!
//! The restored copy `<db>__coffer_restore` replaces the live database by two
//! `ALTER DATABASE ... RENAME` in one transaction (both or neither, even across a
//! crash); the previous database waits as `<db>__coffer_old` until the swap commits
//! and is then dropped. A rename needs the database to have no sessions: without
//! `--force` any other session refuses the swap; with it, new connections are blocked
//! (`ALLOW_CONNECTIONS false`, put back by a rollback) and the sessions are ended.
//! Phases and their undoing: [`crate::source::dump::swap`].

use std::time::{Duration, Instant};

use super::{Postgres, QUERY_TIMEOUT};
use crate::config::ServerKind;
use crate::source::dump::names::{pg_ident, pg_literal};
use crate::source::dump::{DbError, Recovered, Scratch, Session, SwapPhase, SwapRecord};

/// How long terminated sessions get to go away.
const TERMINATE_WAIT: Duration = Duration::from_secs(10);

impl Postgres {
    /// Client sessions connected to `database`, other than our own.
    pub fn other_sessions(&self, database: &str) -> Result<Vec<Session>, DbError> {
        let sql = format!(
            "SELECT pid, coalesce(usename, ''), translate(coalesce(application_name, ''), E'\\n\\r', '  '), \
             coalesce(host(client_addr), 'local') FROM pg_stat_activity \
             WHERE datname = {} AND pid <> pg_backend_pid() AND backend_type = 'client backend' ORDER BY pid;",
            pg_literal(database)
        );
        let rows = self.psql(
            self.maintenance_db(),
            format!("listing the sessions of database '{database}'"),
            &sql,
            QUERY_TIMEOUT,
        )?;
        Ok(rows
            .into_iter()
            .filter(|r| r.len() == 4)
            .map(|r| Session {
                id: r[0].parse().unwrap_or(0),
                user: r[1].clone(),
                application: r[2].clone(),
                client: r[3].clone(),
            })
            .collect())
    }

    /// Ends every other session on `database` and waits until they are gone.
    /// Returns how many were ended.
    pub fn terminate_sessions(&self, database: &str) -> Result<usize, DbError> {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = {} AND pid <> pg_backend_pid();",
            pg_literal(database)
        );
        let rows = self.admin(format!("ending the sessions of database '{database}'"), &sql)?;
        let ended = rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let deadline = Instant::now() + TERMINATE_WAIT;
        loop {
            let left = self.other_sessions(database)?;
            if left.is_empty() {
                return Ok(ended);
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

    /// Checks that an in-place swap can start: the live and restored databases
    /// exist, no old copy is left over, and (unless `force`) no other session is
    /// connected. Returns the record to keep in the journal.
    pub fn prepare_swap(&self, force: bool) -> Result<SwapRecord, DbError> {
        let live = self.database().to_owned();
        let scratch = self.scratch_name(Scratch::Restore);
        let old = self.scratch_name(Scratch::Old);
        let action = format!("the swap of database '{live}'");
        let rows = self.admin(
            format!("looking up database '{live}'"),
            &format!(
                "SELECT datname, datallowconn FROM pg_database WHERE datname IN ({}, {}, {});",
                pg_literal(&live),
                pg_literal(&scratch),
                pg_literal(&old)
            ),
        )?;
        let find = |name: &str| rows.iter().find(|r| r.first().map(String::as_str) == Some(name));
        let Some(live_row) = find(&live) else {
            return Err(DbError::DatabaseMissing {
                action,
                database: live,
                detail: String::new(),
            });
        };
        if find(&scratch).is_none() {
            return Err(DbError::DatabaseMissing {
                action,
                database: scratch,
                detail: "nothing was restored to swap in".into(),
            });
        }
        if find(&old).is_some() {
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
        let allows = live_row.get(1).map(String::as_str) == Some("t");
        Ok(SwapRecord {
            engine: ServerKind::Postgres,
            live,
            scratch,
            old,
            phase: SwapPhase::Prepared,
            force,
            blocked_connections: force && allows,
            old_objects: None,
            new_objects: None,
        })
    }

    pub fn swap_step(&self, r: &SwapRecord) -> Result<(), DbError> {
        let (live, scratch, old) = (pg_ident(&r.live), pg_ident(&r.scratch), pg_ident(&r.old));
        match r.phase {
            SwapPhase::Prepared | SwapPhase::Done | SwapPhase::Attaching => Ok(()),
            SwapPhase::Detaching => {
                if r.blocked_connections {
                    self.admin(
                        format!("blocking new connections to database '{}'", r.live),
                        &format!("ALTER DATABASE {live} WITH ALLOW_CONNECTIONS false;"),
                    )?;
                }
                if r.force {
                    self.terminate_sessions(&r.live)?;
                    self.terminate_sessions(&r.scratch)?;
                    Ok(())
                } else {
                    let sessions = self.other_sessions(&r.live)?;
                    if sessions.is_empty() {
                        Ok(())
                    } else {
                        Err(DbError::InUse {
                            database: r.live.clone(),
                            sessions,
                        })
                    }
                }
            }
            SwapPhase::Renaming => {
                // One transaction: both renames or neither, even across a crash.
                self.admin(
                    format!("renaming database '{}' to '{}' and '{}' to '{}'", r.live, r.old, r.scratch, r.live),
                    &format!(
                        "BEGIN;\nALTER DATABASE {live} RENAME TO {old};\nALTER DATABASE {scratch} RENAME TO {live};\nCOMMIT;"
                    ),
                )
                .map_err(|e| self.explain_in_use(e, &r.live))?;
                Ok(())
            }
            SwapPhase::Committed => self.drop_database(&r.old),
        }
    }

    /// A rename refused because of sessions becomes the in-use sentence.
    fn explain_in_use(&self, e: DbError, database: &str) -> DbError {
        match &e {
            DbError::Tool { detail, .. } if detail.contains("is being accessed by other users") => {
                match self.other_sessions(database) {
                    Ok(sessions) if !sessions.is_empty() => DbError::InUse {
                        database: database.to_owned(),
                        sessions,
                    },
                    _ => e,
                }
            }
            _ => e,
        }
    }

    /// Undoes a swap that has not committed, from any phase, idempotently: the old
    /// copy gets its name back (the restored copy, if live, is renamed away first),
    /// connections are allowed again if we blocked them, and the restored copy is
    /// dropped (it is still in the archive).
    pub fn rollback(&self, r: &SwapRecord) -> Result<(), DbError> {
        let (live, scratch, old) = (pg_ident(&r.live), pg_ident(&r.scratch), pg_ident(&r.old));
        let live_exists = self.exists(&r.live)?;
        let old_exists = self.exists(&r.old)?;
        if old_exists {
            if live_exists {
                if self.exists(&r.scratch)? {
                    return Err(DbError::Config(format!(
                        "databases '{}', '{}' and '{}' all exist, so it is not clear which one holds the previous data; fix by hand",
                        r.live, r.scratch, r.old
                    )));
                }
                // The restored copy is live: whoever connected to it since goes.
                self.terminate_sessions(&r.live)?;
                self.admin(
                    format!("putting database '{}' back", r.live),
                    &format!(
                        "BEGIN;\nALTER DATABASE {live} RENAME TO {scratch};\nALTER DATABASE {old} RENAME TO {live};\nCOMMIT;"
                    ),
                )?;
            } else {
                self.admin(
                    format!("putting database '{}' back", r.live),
                    &format!("ALTER DATABASE {old} RENAME TO {live};"),
                )?;
            }
        }
        if r.blocked_connections {
            self.admin(
                format!("allowing connections to database '{}' again", r.live),
                &format!("ALTER DATABASE {live} WITH ALLOW_CONNECTIONS true;"),
            )?;
        }
        self.drop_database(&r.scratch)
    }

    /// Waits (up to [`TERMINATE_WAIT`]) until no other session of ours is busy on the
    /// maintenance database: a statement a killed cofferd's psql was running (a
    /// rename, a drop) finishes before recovery looks at the databases.
    fn wait_for_orphans(&self) -> Result<(), DbError> {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid() \
             AND application_name = current_setting('application_name') AND state <> 'idle';",
            pg_literal(self.maintenance_db())
        );
        let deadline = Instant::now() + TERMINATE_WAIT;
        loop {
            let rows = self.admin("looking for an interrupted restore's statements".into(), &sql)?;
            let busy = rows.first().and_then(|r| r.first()).is_some_and(|n| n != "0");
            if !busy || Instant::now() > deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start-up recovery of a swap a crash interrupted: rolls back one that had
    /// not committed, finishes (drops the old copy of) one that had.
    pub fn recover(&self, r: &SwapRecord) -> Result<Recovered, DbError> {
        self.wait_for_orphans()?;
        if r.phase >= SwapPhase::Committed {
            self.drop_database(&r.old)?;
            Ok(Recovered::Finished)
        } else {
            self.rollback(r)?;
            Ok(Recovered::RolledBack)
        }
    }
}
