//! [`Swap`]: moving staged paths over live ones, undoable step by step until
//! committed.
//!
//! Each live path is renamed aside (`<path>.coffer-old-<id>`) before the staged one is
//! renamed in (same filesystem, so every step is one rename), and each step's
//! directory is fsynced. [`Swap::rollback`] undoes every step newest first;
//! [`Swap::commit`] removes the old copies.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fsutil;

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Flushes the staged data to disk before it replaces the live data (whose old copy is
/// deleted once the swap commits, so a power cut must not find the new one only in
/// the page cache): one `syncfs` per staged path, the second on a filesystem is cheap.
pub fn sync_staged(plan: &[(PathBuf, Option<PathBuf>)]) -> Result<(), Error> {
    for staged in plan.iter().filter_map(|(_, staged)| staged.as_ref()) {
        let file = File::open(staged).map_err(Error::io("cannot open the restored data", staged))?;
        nix::unistd::syncfs(&file)
            .map_err(|e| Error::io("cannot flush the restored data to disk", staged)(e.into()))?;
    }
    Ok(())
}

/// One swapped path: the live path, where its old content went, and whether a new
/// one was moved in.
struct Step {
    live: PathBuf,
    aside: Option<PathBuf>,
    replaced: bool,
}

/// Moves staged paths over live ones, able to undo everything until committed.
pub struct Swap {
    pub(super) tag: String,
    steps: Vec<Step>,
}

impl Swap {
    pub fn new(id: &str) -> Swap {
        Swap {
            tag: format!(".coffer-old-{id}"),
            steps: Vec::new(),
        }
    }

    /// Moves `live` aside (if it exists) and `staged` into its place.
    pub fn replace(&mut self, live: &Path, staged: &Path) -> std::io::Result<()> {
        self.set_aside(live)?;
        std::fs::rename(staged, live)?;
        if let Some(step) = self.steps.last_mut() {
            step.replaced = true;
        }
        fsutil::sync_dir(live.parent().unwrap_or(Path::new("/")))
    }

    /// Moves `live` aside if it exists (for files that must go, like a stale `-wal`).
    pub fn set_aside(&mut self, live: &Path) -> std::io::Result<()> {
        let aside = with_suffix(live, &self.tag);
        let moved = match std::fs::rename(live, &aside) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        self.steps.push(Step {
            live: live.to_owned(),
            aside: moved.then_some(aside),
            replaced: false,
        });
        Ok(())
    }

    /// Undoes every step, newest first. Returns the first error, after trying all.
    pub fn rollback(mut self) -> std::io::Result<()> {
        let mut first_error = None;
        while let Some(step) = self.steps.pop() {
            let result = (|| {
                if step.replaced {
                    fsutil::remove_any(&step.live)?;
                }
                if let Some(aside) = &step.aside {
                    std::fs::rename(aside, &step.live)?;
                }
                fsutil::sync_dir(step.live.parent().unwrap_or(Path::new("/")))
            })();
            if let Err(e) = result {
                tracing::error!(path = %step.live.display(), "rollback step failed: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Keeps the new state: removes the old copies.
    pub fn commit(self) {
        for step in self.steps {
            if let Some(aside) = step.aside
                && let Err(e) = fsutil::remove_any(&aside)
            {
                tracing::warn!(path = %aside.display(), "cannot remove the pre-restore copy: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_rolls_back_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let live_db = dir.path().join("app.db");
        let wal = dir.path().join("app.db-wal");
        let media = dir.path().join("uploads");
        std::fs::write(&live_db, b"old db").unwrap();
        std::fs::write(&wal, b"old wal").unwrap();
        std::fs::create_dir(&media).unwrap();
        std::fs::write(media.join("f"), b"old file").unwrap();
        let staged_db = dir.path().join("staged.db");
        std::fs::write(&staged_db, b"new db").unwrap();

        let mut swap = Swap::new("app-20260101T000000Z");
        swap.set_aside(&wal).unwrap();
        swap.replace(&live_db, &staged_db).unwrap();
        // The staged media directory does not exist: the swap fails half-way.
        assert!(swap.replace(&media, &dir.path().join("missing")).is_err());
        swap.rollback().unwrap();

        assert_eq!(std::fs::read(&live_db).unwrap(), b"old db");
        assert_eq!(std::fs::read(&wal).unwrap(), b"old wal");
        assert_eq!(std::fs::read(media.join("f")).unwrap(), b"old file");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "nothing left aside: {names:?}");
    }

    #[test]
    fn swap_commit_removes_old_copies() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("uploads");
        let staged = dir.path().join("staged");
        std::fs::create_dir(&live).unwrap();
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("new"), b"n").unwrap();
        let mut swap = Swap::new("x");
        swap.replace(&live, &staged).unwrap();
        swap.commit();
        assert!(live.join("new").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
