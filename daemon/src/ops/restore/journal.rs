//! The restore journal, `<state-dir>/journal/<id>.json`: where an in-place restore is,
//! on disk, so that start-up can undo or finish it.
//!
//! It names the staging directories before they exist and, before the first rename,
//! the planned moves; [`recover`] at start-up rolls an uncommitted swap back (or
//! finishes a committed one) and removes the staging directories.
//!
//! A restore of a database-server job also keeps its job and its database swap's
//! record ([`SwapRecord::encode`], rewritten before each phase of the swap) here,
//! and the MariaDB swap keeps the saved views, triggers, routines and events in
//! `<id>.objects/` beside it (outside staging, which start-up sweeps first). The
//! database part is recovered through the job's server; when that is not possible
//! (the server is down, the job is gone) the journal stays, start-up goes on, and the
//! job's next restore — or the next start — tries again.

use std::path::{Path, PathBuf};

use super::swap::{Swap, with_suffix};
use crate::config::Config;
use crate::error::Error;
use crate::fsutil;
use crate::source::dump::SwapRecord;

/// Where an in-place restore is, on disk, so that start-up can undo or finish it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum JournalState {
    /// Extracting into the staging directories; nothing live touched.
    Staging,
    /// Swapping; an interruption is rolled back.
    Swapping,
    /// Swapped; an interruption only leaves old copies to remove.
    Committed,
}

/// One planned move of the swap.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PlannedMove {
    live: PathBuf,
    aside: PathBuf,
    /// Whether `live` existed before the swap.
    had_live: bool,
    /// Moved into `live` after `live` was set aside (none: `live` just goes away).
    staged: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct JournalRecord {
    id: String,
    state: JournalState,
    stages: Vec<PathBuf>,
    moves: Vec<PlannedMove>,
    /// The job of a database-server restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    /// Its database swap ([`SwapRecord::encode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    database: Option<String>,
}

/// The journal file `<state-dir>/journal/<id>.json` of a running in-place restore.
/// Removed when the restore ends, unless a failed rollback left work for start-up.
pub(super) struct Journal {
    path: PathBuf,
    record: JournalRecord,
    keep: bool,
}

impl Journal {
    pub(super) fn begin(state_dir: &Path, id: &str, stages: &[PathBuf]) -> Result<Journal, Error> {
        let dir = state_dir.join(JOURNAL_DIR);
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create the journal directory", &dir))?;
        let journal = Journal {
            path: dir.join(format!("{id}.json")),
            record: JournalRecord {
                id: id.to_owned(),
                state: JournalState::Staging,
                stages: stages.to_vec(),
                moves: Vec::new(),
                job: None,
                database: None,
            },
            keep: false,
        };
        journal.write()?;
        Ok(journal)
    }

    fn write(&self) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(&self.record).map_err(|e| Error::Internal(e.to_string()))?;
        fsutil::write_atomic(&self.path, &json)
            .map_err(Error::io("cannot write the restore journal", &self.path))
    }

    pub(super) fn swapping(&mut self, swap: &Swap, plan: &[(PathBuf, Option<PathBuf>)]) -> Result<(), Error> {
        self.record.moves = plan
            .iter()
            .map(|(live, staged)| PlannedMove {
                live: live.clone(),
                aside: with_suffix(live, &swap.tag),
                had_live: std::fs::symlink_metadata(live).is_ok(),
                staged: staged.clone(),
            })
            .collect();
        self.record.state = JournalState::Swapping;
        self.write()
    }

    pub(super) fn committed(&mut self) -> Result<(), Error> {
        self.record.state = JournalState::Committed;
        self.write()
    }

    pub(super) fn keep(&mut self) {
        self.keep = true;
    }

    /// Records the job and its database swap as it stands; at `Committed` and later
    /// the whole restore is committed in the same write.
    pub(super) fn database(&mut self, job: &str, record: &SwapRecord) -> Result<(), Error> {
        self.record.job = Some(job.to_owned());
        self.record.database = Some(record.encode());
        if record.phase >= crate::source::dump::SwapPhase::Committed {
            self.record.state = JournalState::Committed;
        }
        self.write()
    }

    /// Drops the database swap from the journal (nothing of it to undo any more).
    pub(super) fn forget_database(&mut self) {
        self.record.database = None;
    }

    /// A directory beside the journal for files the swap needs after a crash.
    pub(super) fn objects_dir(&self) -> Result<PathBuf, Error> {
        let dir = objects_dir(&self.path);
        fsutil::remove_any(&dir).map_err(Error::io("cannot clear", &dir))?;
        std::fs::create_dir(&dir).map_err(Error::io("cannot create", &dir))?;
        Ok(dir)
    }
}

/// `<id>.objects` beside the journal `<id>.json`.
fn objects_dir(journal: &Path) -> PathBuf {
    journal.with_extension("objects")
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fsutil::remove_any(&objects_dir(&self.path));
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where restore journals live, under the state dir.
const JOURNAL_DIR: &str = "journal";

/// Undoes or finishes in-place restores that a crash interrupted: a swap that had
/// not committed is rolled back move by move (the old data comes back; the restored
/// copy is dropped — it is still in the archive), a committed one has its old copies
/// removed, and staging directories beside the targets are removed. A database swap
/// is rolled back or finished through its job's server; if that fails, it is logged
/// and its journal kept for the next try. Returns the ids handled. Run at start-up,
/// before anything else touches the app's paths.
pub fn recover(config: &Config) -> std::io::Result<Vec<String>> {
    recover_where(config, |_| true)
}

/// [`recover`] for the journals of one job only: run before a restore of that job,
/// so a swap left pending by an unreachable server is finished first.
pub fn recover_job(config: &Config, job: &str) -> std::io::Result<Vec<String>> {
    recover_where(config, |record| record.job.as_deref() == Some(job))
}

fn recover_where(config: &Config, wanted: impl Fn(&JournalRecord) -> bool) -> std::io::Result<Vec<String>> {
    let dir = config.daemon.state_dir.join(JOURNAL_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut handled = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            // A rewrite the crash interrupted: the journal it was to replace (if any)
            // is still beside it and complete, and no step after the write began.
            if path.to_string_lossy().ends_with(fsutil::PARTIAL_SUFFIX) {
                fsutil::remove_any(&path)?;
            }
            continue;
        }
        let mut record: JournalRecord = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(record)) => record,
            _ => {
                tracing::error!(journal = %path.display(), "unreadable restore journal; left for inspection");
                continue;
            }
        };
        if !wanted(&record) {
            continue;
        }
        recover_files(&record)?;
        if record.database.is_some() && !recover_database(config, &record) {
            // The files are done; the database part waits for the next try.
            record.moves.clear();
            record.stages.clear();
            let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
            fsutil::write_atomic(&path, &json)?;
            continue;
        }
        fsutil::remove_any(&objects_dir(&path))?;
        std::fs::remove_file(&path)?;
        handled.push(record.id);
    }
    Ok(handled)
}

/// The file part of a journal: moves rolled back or finished, stages removed.
fn recover_files(record: &JournalRecord) -> std::io::Result<()> {
    match record.state {
        JournalState::Staging => {}
        JournalState::Swapping => {
            for m in record.moves.iter().rev() {
                if std::fs::symlink_metadata(&m.aside).is_ok() {
                    fsutil::remove_any(&m.live)?;
                    std::fs::rename(&m.aside, &m.live)?;
                } else if !m.had_live && m.staged.is_some() {
                    fsutil::remove_any(&m.live)?;
                }
                if let Some(parent) = m.live.parent() {
                    fsutil::sync_dir(parent)?;
                }
            }
            if !record.moves.is_empty() {
                tracing::warn!(
                    id = record.id,
                    "rolled back an in-place restore interrupted during its swap"
                );
            }
        }
        JournalState::Committed => {
            for m in &record.moves {
                fsutil::remove_any(&m.aside)?;
            }
            tracing::info!(
                id = record.id,
                "finished an in-place restore interrupted after its swap"
            );
        }
    }
    for stage in &record.stages {
        fsutil::remove_any(stage)?;
    }
    Ok(())
}

/// The database part of a journal, through the job's server. Returns whether it is
/// done (else it is logged and must be tried again).
fn recover_database(config: &Config, record: &JournalRecord) -> bool {
    let job_name = record.job.as_deref().unwrap_or_default();
    let attempt = || -> Result<(), String> {
        let swap =
            SwapRecord::decode(record.database.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
        let job = config
            .job(job_name)
            .ok_or_else(|| format!("job '{job_name}' is no longer configured"))?;
        let server = crate::source::server_for(job).map_err(|e| e.to_string())?;
        let done = server.recover(&swap).map_err(|e| e.to_string())?;
        tracing::warn!(
            id = record.id,
            job = job_name,
            "{} the database swap of an in-place restore a crash interrupted",
            match done {
                crate::source::dump::Recovered::RolledBack => "rolled back",
                crate::source::dump::Recovered::Finished => "finished",
            }
        );
        Ok(())
    };
    match attempt() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(
                id = record.id,
                job = job_name,
                "cannot recover the database swap of an interrupted in-place restore yet ({e}); the journal is kept and recovery is retried at the job's next restore and at the next start"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_rolls_back_a_swap_interrupted_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let db = dir.path().join("app.db");
        let media = dir.path().join("uploads");
        let stage = dir.path().join(".coffer-restore-x-app.db");
        std::fs::write(&db, b"old db").unwrap();
        std::fs::create_dir(&media).unwrap();
        std::fs::write(media.join("f"), b"old file").unwrap();
        std::fs::create_dir(&stage).unwrap();
        std::fs::write(stage.join("db"), b"new db").unwrap();
        let staged_media = stage.join("root");
        std::fs::create_dir(&staged_media).unwrap();

        let mut journal = Journal::begin(&state, "x", std::slice::from_ref(&stage)).unwrap();
        let mut swap = Swap::new("x");
        let plan = vec![
            (db.clone(), Some(stage.join("db"))),
            (media.clone(), Some(staged_media.clone())),
        ];
        journal.swapping(&swap, &plan).unwrap();
        // The database was swapped, then the daemon died before the media swap.
        swap.replace(&db, &stage.join("db")).unwrap();
        std::mem::forget(swap);
        journal.keep();
        drop(journal);

        let config = config_with_state(&state);
        assert_eq!(recover(&config).unwrap(), vec!["x".to_owned()]);
        assert_eq!(std::fs::read(&db).unwrap(), b"old db");
        assert_eq!(std::fs::read(media.join("f")).unwrap(), b"old file");
        assert!(!stage.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "only app.db, uploads and state remain: {names:?}");
        assert!(recover(&config).unwrap().is_empty(), "the journal is gone");
    }

    fn config_with_state(state: &Path) -> Config {
        let text = format!("[daemon]\nstate-dir = {:?}\n", state.display().to_string());
        Config::parse(Path::new("/test/cofferd.toml"), &text).unwrap()
    }
}
