//! Re-encrypting an archive in place (`cofferctl rekey`), the file side: the order in
//! which the new archive and its sidecar replace the old ones, and what start-up does
//! with a rekey that a crash interrupted.
//!
//! An archive and its sidecar cannot be replaced in one atomic step, so a rekey goes
//! (all in the job directory, each write fsynced, each rename followed by an fsync of
//! the directory):
//!
//! 1. `<archive>.rekey-tmp`: the re-encrypted archive, written and read back.
//! 2. `<id>.json.rekey`: the new sidecar (new size, sha256, fingerprints), written
//!    crash-safely before anything of the old backup changes.
//! 3. the temp archive is renamed over the archive — **the commit point**;
//! 4. the new sidecar replaces `<id>.json`, then the caller updates the catalog row;
//! 5. `<id>.json.rekey` is removed ([`LocalStore::end_rekey`]).
//!
//! The old archive is never removed before the new one is complete, checked and in
//! its place. Start-up ([`LocalStore::recover_rekeys`], run before the sweep) looks at
//! every `<id>.json.rekey`:
//! - its temp archive still exists: step 3 did not happen, the old backup stands; the
//!   pending sidecar and the temp archive are removed;
//! - the temp archive is gone and the archive has the pending sidecar's size and
//!   sha256: step 3 happened; the sidecar is replaced, and the caller refreshes the
//!   catalog row from it and then ends the rekey (step 5);
//! - otherwise (neither the old nor the new state: not made by cofferd) everything is
//!   left as it is and reported, for the admin to look at; `verify` says more.
//!
//! A temp archive without a pending sidecar (a crash in step 1 or 2) is swept.

use std::path::{Path, PathBuf};

use super::{BackupPaths, LocalStore, StoreError};
use crate::archive::hash_file;
use crate::fsutil;
use crate::manifest::{Sidecar, sidecar};

/// The suffix of an archive being re-encrypted, beside the archive.
pub const TEMP_SUFFIX: &str = ".rekey-tmp";

/// The suffix of a new sidecar waiting for its archive, beside the sidecar.
pub const PENDING_SUFFIX: &str = ".rekey";

/// `path` with `suffix` appended.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where the re-encrypted archive of `paths` is written before it replaces it.
pub fn temp_archive(paths: &BackupPaths) -> PathBuf {
    with_suffix(&paths.archive, TEMP_SUFFIX)
}

/// Where the new sidecar of `paths` waits for its archive.
pub fn pending_sidecar(paths: &BackupPaths) -> PathBuf {
    with_suffix(&paths.sidecar, PENDING_SUFFIX)
}

/// What start-up did with one interrupted rekey.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovered {
    /// The new archive never replaced the old: the old backup stands, leftovers gone.
    RolledBack { job: String, id: String },
    /// The new archive was in place: its sidecar is now too; the catalog row must be
    /// refreshed from it.
    Finished {
        job: String,
        id: String,
        sidecar: Box<Sidecar>,
    },
    /// Neither state could be recognised; nothing was touched.
    LeftAlone { path: PathBuf, why: String },
}

impl LocalStore {
    /// Step 2: writes the new sidecar beside the old one, crash-safely.
    pub fn write_pending_sidecar(&self, paths: &BackupPaths, new: &Sidecar) -> Result<(), StoreError> {
        let pending = pending_sidecar(paths);
        sidecar::write(&pending, new).map_err(StoreError::io("cannot write the new sidecar", &pending))
    }

    /// Step 4, the file: the new sidecar replaces the old. Call after the new archive
    /// was renamed into place; then update the catalog and [`LocalStore::end_rekey`].
    pub fn replace_sidecar(&self, paths: &BackupPaths, new: &Sidecar) -> Result<(), StoreError> {
        sidecar::write(&paths.sidecar, new)
            .map_err(StoreError::io("cannot write the sidecar", &paths.sidecar))
    }

    /// Step 5 (or the end of a rekey abandoned before its commit point): removes the
    /// pending sidecar. Missing is fine.
    pub fn end_rekey(&self, paths: &BackupPaths) -> Result<(), StoreError> {
        let pending = pending_sidecar(paths);
        remove_if_there(&pending).map_err(StoreError::io("cannot remove", &pending))?;
        fsutil::sync_dir(&paths.dir).map_err(StoreError::io("cannot sync", &paths.dir))
    }

    /// Finishes or rolls back every rekey a crash interrupted (see the module doc).
    /// Run at start-up before [`LocalStore::sweep`], which would remove the temp
    /// archives this looks at.
    pub fn recover_rekeys(&self) -> Result<Vec<Recovered>, StoreError> {
        let mut done = Vec::new();
        let Ok(jobs) = std::fs::read_dir(self.backup_dir()) else {
            return Ok(done);
        };
        for job_dir in jobs.flatten() {
            let Some(job) = job_dir.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !job_dir.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = job_dir.path();
            let files = std::fs::read_dir(&dir).map_err(StoreError::io("cannot read", &dir))?;
            for file in files.flatten() {
                let name = file.file_name();
                let Some(id) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(&format!(".json{PENDING_SUFFIX}")))
                else {
                    continue;
                };
                if coffer_common::ids::is_valid_backup_id(id) {
                    done.push(self.recover_one(&job, id)?);
                }
            }
        }
        Ok(done)
    }

    fn recover_one(&self, job: &str, id: &str) -> Result<Recovered, StoreError> {
        // The encrypted name: only encrypted archives are rekeyed.
        let paths = self.paths_for(job, id, true);
        let pending_path = pending_sidecar(&paths);
        let temp = temp_archive(&paths);
        let left_alone = |why: String| Recovered::LeftAlone {
            path: pending_path.clone(),
            why,
        };
        if temp.exists() {
            remove_if_there(&temp).map_err(StoreError::io("cannot remove", &temp))?;
            remove_if_there(&pending_path).map_err(StoreError::io("cannot remove", &pending_path))?;
            fsutil::sync_dir(&paths.dir).map_err(StoreError::io("cannot sync", &paths.dir))?;
            return Ok(Recovered::RolledBack {
                job: job.to_owned(),
                id: id.to_owned(),
            });
        }
        let new = match sidecar::read(&pending_path) {
            Ok(new) => new,
            // Written crash-safely, so an unreadable one was not written by cofferd.
            Err(e) => return Ok(left_alone(format!("it is unreadable: {e}"))),
        };
        let (size, sha256) = match hash_file(&paths.archive) {
            Ok(found) => found,
            Err(e) => return Ok(left_alone(format!("its archive cannot be read: {e}"))),
        };
        if (size, sha256.as_str()) != (new.size, new.sha256.as_str()) {
            return Ok(left_alone(
                "the archive is neither the new one it names nor was a rekey under way".into(),
            ));
        }
        self.replace_sidecar(&paths, &new)?;
        Ok(Recovered::Finished {
            job: job.to_owned(),
            id: id.to_owned(),
            sidecar: Box::new(new),
        })
    }
}

/// Removes temp archives of rekeys (recovery has looked at them already); returns
/// what was removed.
pub(super) fn sweep_temps(backup_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(jobs) = std::fs::read_dir(backup_dir) else {
        return Ok(removed);
    };
    for job in jobs.flatten() {
        if !job.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for file in std::fs::read_dir(job.path())?.flatten() {
            if file.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                remove_if_there(&file.path())?;
                removed.push(file.path());
            }
        }
    }
    Ok(removed)
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Encryption;

    const V1: &str = include_str!("../../../tests/fixtures/v1/legacy-20261130T153641Z.json");
    const ID: &str = "legacy-20261130T153641Z";

    /// A store with an "encrypted" backup `legacy/ID` (bytes `old`, its sidecar), and
    /// the sidecar a rekey to bytes `new` would write.
    fn setup(old: &[u8], new: &[u8]) -> (tempfile::TempDir, LocalStore, BackupPaths, Sidecar, Sidecar) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(&dir.path().join("backups"), &dir.path().join("state"));
        let paths = store.paths_for("legacy", ID, true);
        std::fs::create_dir_all(&paths.dir).unwrap();
        std::fs::write(&paths.archive, old).unwrap();
        let mut current: Sidecar = serde_json::from_str(V1).unwrap();
        let (size, sha256) = hash_file(&paths.archive).unwrap();
        (current.size, current.sha256) = (size, sha256);
        current.encryption = Some(Encryption::age(vec!["age1old".into()]));
        sidecar::write(&paths.sidecar, &current).unwrap();
        let mut next = current.clone();
        next.size = new.len() as u64;
        next.sha256 = crate::archive::hex(&<sha2::Sha256 as sha2::Digest>::digest(new));
        next.encryption = Some(Encryption::age(vec!["age1new".into()]));
        (dir, store, paths, current, next)
    }

    #[test]
    fn a_crash_before_the_commit_point_keeps_the_old_backup() {
        let (_dir, store, paths, current, next) = setup(b"old ciphertext", b"new ciphertext!");
        std::fs::write(temp_archive(&paths), b"new ciphertext!").unwrap();
        store.write_pending_sidecar(&paths, &next).unwrap();
        let done = store.recover_rekeys().unwrap();
        assert_eq!(
            done,
            vec![Recovered::RolledBack {
                job: "legacy".into(),
                id: ID.into()
            }]
        );
        assert_eq!(std::fs::read(&paths.archive).unwrap(), b"old ciphertext");
        assert_eq!(sidecar::read(&paths.sidecar).unwrap(), current);
        assert!(!temp_archive(&paths).exists() && !pending_sidecar(&paths).exists());
    }

    #[test]
    fn a_crash_after_the_commit_point_finishes_the_rekey() {
        for crash_after_sidecar in [false, true] {
            let (_dir, store, paths, _current, next) = setup(b"old ciphertext", b"new ciphertext!");
            store.write_pending_sidecar(&paths, &next).unwrap();
            std::fs::write(&paths.archive, b"new ciphertext!").unwrap();
            if crash_after_sidecar {
                sidecar::write(&paths.sidecar, &next).unwrap();
            }
            let done = store.recover_rekeys().unwrap();
            assert!(
                matches!(&done[..], [Recovered::Finished { id, sidecar, .. }] if id == ID && **sidecar == next),
                "{done:?}"
            );
            assert_eq!(sidecar::read(&paths.sidecar).unwrap(), next);
            // Until the catalog is updated, the pending sidecar stays: a crash here
            // finishes the same way at the next start.
            assert!(pending_sidecar(&paths).exists());
            assert!(matches!(
                &store.recover_rekeys().unwrap()[..],
                [Recovered::Finished { .. }]
            ));
            store.end_rekey(&paths).unwrap();
            assert!(!pending_sidecar(&paths).exists());
            assert!(store.recover_rekeys().unwrap().is_empty(), "nothing left to do");
        }
    }

    #[test]
    fn an_unrecognised_state_is_left_alone() {
        let (_dir, store, paths, current, next) = setup(b"old ciphertext", b"new ciphertext!");
        store.write_pending_sidecar(&paths, &next).unwrap();
        std::fs::write(&paths.archive, b"something else").unwrap();
        let done = store.recover_rekeys().unwrap();
        assert!(matches!(&done[..], [Recovered::LeftAlone { .. }]), "{done:?}");
        assert!(pending_sidecar(&paths).exists());
        assert_eq!(sidecar::read(&paths.sidecar).unwrap(), current);
    }
}
