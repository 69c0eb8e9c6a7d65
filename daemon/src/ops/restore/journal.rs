//! The restore journal, `<state-dir>/journal/<id>.json`: where an in-place restore is,
//! on disk, so that start-up can undo or finish it.
//!
//! It names the staging directories before they exist and, before the first rename,
//! the planned moves; [`recover`] at start-up rolls an uncommitted swap back (or
//! finishes a committed one) and removes the staging directories.

use std::path::{Path, PathBuf};

use super::swap::{Swap, with_suffix};
use crate::error::Error;
use crate::fsutil;

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
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where restore journals live, under the state dir.
const JOURNAL_DIR: &str = "journal";

/// Undoes or finishes in-place restores that a crash interrupted: a swap that had
/// not committed is rolled back move by move (the old data comes back; the restored
/// copy is dropped — it is still in the archive), a committed one has its old copies
/// removed, and staging directories beside the targets are removed. Returns the ids
/// handled. Run at start-up, before anything else touches the app's paths.
pub fn recover(state_dir: &Path) -> std::io::Result<Vec<String>> {
    let dir = state_dir.join(JOURNAL_DIR);
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
        let record: JournalRecord = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(record)) => record,
            _ => {
                tracing::error!(journal = %path.display(), "unreadable restore journal; left for inspection");
                continue;
            }
        };
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
                tracing::warn!(
                    id = record.id,
                    "rolled back an in-place restore interrupted during its swap"
                );
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
        std::fs::remove_file(&path)?;
        handled.push(record.id);
    }
    Ok(handled)
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

        assert_eq!(recover(&state).unwrap(), vec!["x".to_owned()]);
        assert_eq!(std::fs::read(&db).unwrap(), b"old db");
        assert_eq!(std::fs::read(media.join("f")).unwrap(), b"old file");
        assert!(!stage.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "only app.db, uploads and state remain: {names:?}");
        assert!(recover(&state).unwrap().is_empty(), "the journal is gone");
    }
}
