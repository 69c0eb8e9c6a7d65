//! The in-place swap as a small state machine whose record fits in the caller's
//! journal.
//!
//! A swap replaces the live database by the restored copy `<db>__coffer_restore`,
//! keeping the previous copy as `<db>__coffer_old` until the new one is in place.
//! Its [`SwapRecord`] names all three databases and the phase reached; the engine
//! ([`drive`], with the engines' steps) calls the caller's
//! `persist` with the record *before* each phase's work starts (write-ahead), so a
//! crash anywhere leaves a record that says what may have begun. Every phase can
//! be undone or finished from the record and the names alone, and doing it twice
//! is harmless:
//!
//! ```text
//!  Prepared --> Detaching --> Renaming --> Attaching --> Committed --> Done
//!  \_______________ rollback() undoes _______________/   \ recover() finishes /
//! ```
//!
//! * `Prepared`: the restored copy exists and was checked; nothing live changed.
//! * `Detaching`: the live database is being freed for the renames (PostgreSQL:
//!   `--force` blocks new connections and ends sessions; MariaDB: its views,
//!   triggers, routines and events are dropped, after being saved to a file).
//! * `Renaming`: the renames (PostgreSQL: both `ALTER DATABASE ... RENAME` in one
//!   transaction; MariaDB: one atomic multi-table `RENAME TABLE`).
//! * `Attaching`: MariaDB recreates the restored copy's views, triggers, routines
//!   and events in the live schema (nothing to do for PostgreSQL).
//! * `Committed`: the new state is live; recovery finishes by dropping the old copy.
//!
//! [`SwapRecord::encode`]/[`SwapRecord::decode`] give a plain `key=value` text so
//! the caller can store it as one string field of its JSON journal.

use std::path::PathBuf;

use super::error::DbError;
use crate::config::ServerKind;

/// How far a swap got (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SwapPhase {
    Prepared,
    Detaching,
    Renaming,
    Attaching,
    Committed,
    Done,
}

impl SwapPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SwapPhase::Prepared => "prepared",
            SwapPhase::Detaching => "detaching",
            SwapPhase::Renaming => "renaming",
            SwapPhase::Attaching => "attaching",
            SwapPhase::Committed => "committed",
            SwapPhase::Done => "done",
        }
    }

    pub fn parse(text: &str) -> Option<SwapPhase> {
        Some(match text {
            "prepared" => SwapPhase::Prepared,
            "detaching" => SwapPhase::Detaching,
            "renaming" => SwapPhase::Renaming,
            "attaching" => SwapPhase::Attaching,
            "committed" => SwapPhase::Committed,
            "done" => SwapPhase::Done,
            _ => return None,
        })
    }

    /// The phase after this one.
    pub fn next(self) -> SwapPhase {
        match self {
            SwapPhase::Prepared => SwapPhase::Detaching,
            SwapPhase::Detaching => SwapPhase::Renaming,
            SwapPhase::Renaming => SwapPhase::Attaching,
            SwapPhase::Attaching => SwapPhase::Committed,
            SwapPhase::Committed | SwapPhase::Done => SwapPhase::Done,
        }
    }
}

/// Everything needed to finish or undo a swap: to be kept in the caller's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRecord {
    pub engine: ServerKind,
    /// The live database (PostgreSQL) or schema (MariaDB).
    pub live: String,
    /// The restored copy, `<live>__coffer_restore`.
    pub scratch: String,
    /// Where the previous live copy waits, `<live>__coffer_old`.
    pub old: String,
    pub phase: SwapPhase,
    /// Whether other sessions are ended (`--force`).
    pub force: bool,
    /// PostgreSQL: we switched off `ALLOW_CONNECTIONS` on the live database and must
    /// switch it back on if we roll back.
    pub blocked_connections: bool,
    /// MariaDB: the live schema's views, triggers, routines and events, saved
    /// before anything changed (put back by a rollback).
    pub old_objects: Option<PathBuf>,
    /// MariaDB: the restored copy's views, triggers, routines and events (created
    /// in the live schema after the renames).
    pub new_objects: Option<PathBuf>,
}

/// What a start-up recovery of a swap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// The swap had not committed: the previous database is live again.
    RolledBack,
    /// The swap had committed: the old copy was removed.
    Finished,
}

fn escape(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
}

fn unescape(value: &str) -> String {
    value
        .replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%25", "%")
}

impl SwapRecord {
    /// `key=value` lines (values escaped), stable across versions.
    pub fn encode(&self) -> String {
        let mut lines = vec![
            format!("engine={}", self.engine.as_str()),
            format!("live={}", escape(&self.live)),
            format!("scratch={}", escape(&self.scratch)),
            format!("old={}", escape(&self.old)),
            format!("phase={}", self.phase.as_str()),
            format!("force={}", self.force),
            format!("blocked-connections={}", self.blocked_connections),
        ];
        if let Some(p) = &self.old_objects {
            lines.push(format!("old-objects={}", escape(&p.to_string_lossy())));
        }
        if let Some(p) = &self.new_objects {
            lines.push(format!("new-objects={}", escape(&p.to_string_lossy())));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    /// Parses [`SwapRecord::encode`]'s text.
    pub fn decode(text: &str) -> Result<SwapRecord, DbError> {
        let bad = |what: &str| DbError::Config(format!("the swap record is damaged: {what}"));
        let mut get = std::collections::HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| bad("a line has no '='"))?;
            get.insert(key.to_owned(), unescape(value));
        }
        let field = |key: &str| {
            get.get(key)
                .cloned()
                .ok_or_else(|| bad(&format!("'{key}' is missing")))
        };
        let flag = |key: &str| -> Result<bool, DbError> {
            match get.get(key).map(String::as_str) {
                Some("true") => Ok(true),
                Some("false") | None => Ok(false),
                Some(_) => Err(bad(&format!("'{key}' is not true or false"))),
            }
        };
        let engine = match field("engine")?.as_str() {
            "postgres" => ServerKind::Postgres,
            "mariadb" => ServerKind::Mariadb,
            _ => return Err(bad("unknown engine")),
        };
        Ok(SwapRecord {
            engine,
            live: field("live")?,
            scratch: field("scratch")?,
            old: field("old")?,
            phase: SwapPhase::parse(&field("phase")?).ok_or_else(|| bad("unknown phase"))?,
            force: flag("force")?,
            blocked_connections: flag("blocked-connections")?,
            old_objects: get.get("old-objects").map(PathBuf::from),
            new_objects: get.get("new-objects").map(PathBuf::from),
        })
    }
}

/// Runs the phases of `record` from where it is up to `until` (`Done` for all):
/// for each phase, the record is persisted first, then `step` does its work. On a failure, `rollback`
/// undoes everything (unless the swap had committed: then the failure is only in
/// cleaning up, and the error says so). The error tells whether the rollback
/// worked; if it did not, the caller must keep its journal for start-up recovery.
pub fn drive(
    record: &mut SwapRecord,
    until: SwapPhase,
    persist: &mut dyn FnMut(&SwapRecord) -> std::io::Result<()>,
    step: &mut dyn FnMut(&SwapRecord) -> Result<(), DbError>,
    rollback: &mut dyn FnMut(&SwapRecord) -> Result<(), DbError>,
) -> Result<(), DbError> {
    while record.phase < until {
        let next = record.phase.next();
        record.phase = next;
        let (cause, began) = match persist(record) {
            Err(source) => (
                DbError::Journal {
                    database: record.live.clone(),
                    source,
                },
                false,
            ),
            Ok(()) => match step(record) {
                Ok(()) => continue,
                Err(cause) => (cause, true),
            },
        };
        // A failure once "committed" is on record (its step, or recording "done")
        // only concerns removing the old copy: the new database stays live. Before
        // that, undo everything; the record says `next`, the furthest phase that
        // may have begun, and every rollback step is harmless if it had not.
        let committed = next == SwapPhase::Done || (next == SwapPhase::Committed && began);
        if committed {
            return Err(DbError::Swap {
                live: record.live.clone(),
                cause: Box::new(cause),
                outcome: SwapFailure::CleanupFailed,
            });
        }
        let outcome = match rollback(record) {
            Ok(()) => {
                record.phase = SwapPhase::Done;
                SwapFailure::RolledBack
            }
            Err(e) => SwapFailure::RollbackFailed(Box::new(e)),
        };
        return Err(DbError::Swap {
            live: record.live.clone(),
            cause: Box::new(cause),
            outcome,
        });
    }
    Ok(())
}

/// How a failed swap ended.
#[derive(Debug)]
pub enum SwapFailure {
    /// Everything was undone: the previous database is live, as before.
    RolledBack,
    /// Undoing failed too; the journal must be kept for start-up recovery.
    RollbackFailed(Box<DbError>),
    /// The new database is live; only removing the old copy failed.
    CleanupFailed,
}

impl std::fmt::Display for SwapFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwapFailure::RolledBack => write!(f, "the previous database was put back unchanged"),
            SwapFailure::RollbackFailed(e) => write!(
                f,
                "ROLLBACK FAILED ({e}); keep the restore journal, start-up recovery will retry"
            ),
            SwapFailure::CleanupFailed => write!(
                f,
                "the restored database is live, but the previous copy could not be removed; start-up recovery will retry"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SwapRecord {
        SwapRecord {
            engine: ServerKind::Mariadb,
            live: "we=ird\nname%".into(),
            scratch: "s".into(),
            old: "o".into(),
            phase: SwapPhase::Renaming,
            force: true,
            blocked_connections: false,
            old_objects: Some(PathBuf::from("/staging/old.sql")),
            new_objects: None,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let r = record();
        assert_eq!(SwapRecord::decode(&r.encode()).unwrap(), r);
        assert!(SwapRecord::decode("engine=postgres\n").is_err());
    }

    #[test]
    fn drive_stops_at_until_and_goes_on_from_there() {
        let mut r = record();
        r.phase = SwapPhase::Prepared;
        let mut persisted = Vec::new();
        let mut steps = Vec::new();
        drive(
            &mut r,
            SwapPhase::Attaching,
            &mut |r| {
                persisted.push(r.phase);
                Ok(())
            },
            &mut |r| {
                steps.push(r.phase);
                Ok(())
            },
            &mut |_| panic!("nothing failed"),
        )
        .unwrap();
        assert_eq!(r.phase, SwapPhase::Attaching);
        assert_eq!(
            steps,
            [SwapPhase::Detaching, SwapPhase::Renaming, SwapPhase::Attaching]
        );
        drive(
            &mut r,
            SwapPhase::Done,
            &mut |r| {
                persisted.push(r.phase);
                Ok(())
            },
            &mut |_| Ok(()),
            &mut |_| panic!("nothing failed"),
        )
        .unwrap();
        assert_eq!(r.phase, SwapPhase::Done);
        assert_eq!(&persisted[3..], [SwapPhase::Committed, SwapPhase::Done]);
    }

    #[test]
    fn drive_persists_before_each_step_and_rolls_back_on_failure() {
        let mut r = record();
        r.phase = SwapPhase::Prepared;
        let mut log = Vec::new();
        let log_ref = std::cell::RefCell::new(&mut log);
        let mut persist = |r: &SwapRecord| {
            log_ref.borrow_mut().push(format!("persist {}", r.phase.as_str()));
            Ok(())
        };
        let mut step = |r: &SwapRecord| {
            log_ref.borrow_mut().push(format!("step {}", r.phase.as_str()));
            if r.phase == SwapPhase::Attaching {
                Err(DbError::Config("boom".into()))
            } else {
                Ok(())
            }
        };
        let mut rollback = |r: &SwapRecord| {
            log_ref
                .borrow_mut()
                .push(format!("rollback from {}", r.phase.as_str()));
            Ok(())
        };
        let err = drive(&mut r, SwapPhase::Done, &mut persist, &mut step, &mut rollback).unwrap_err();
        assert!(
            err.to_string().contains("boom") && err.to_string().contains("put back"),
            "{err}"
        );
        assert_eq!(
            log,
            [
                "persist detaching",
                "step detaching",
                "persist renaming",
                "step renaming",
                "persist attaching",
                "step attaching",
                "rollback from attaching"
            ]
        );
    }
}
