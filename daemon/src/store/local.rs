//! The local backup directory: `<backup-dir>/<job>/<id>.tar.zst` (or, for an encrypted
//! backup, `<id>.tar.zst.age`) + `<id>.json`, and the staging directory
//! `<state-dir>/staging` beside it. The sidecar says which of the two suffixes its
//! archive has (`encryption`); the catalog keeps it too, so paths are known without a
//! look at the disk, and [`LocalStore::paths`] (for callers without a record) looks.
//!
//! Writing follows the crash-safe rule of [`crate::fsutil`]: an archive is written as
//! `<id>.tar.zst.partial` ([`LocalStore::create_partial`]), fsynced, and renamed into
//! place ([`LocalStore::commit`]); its sidecar is written before the rename, so a crash
//! leaves at most an orphan sidecar, which reconciliation removes. `.partial` files and
//! staging are swept at start-up ([`LocalStore::sweep`]). Deleting removes the archive
//! first, then the sidecar.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use coffer_common::format::bytes;

use super::{Listed, Store, StoreError};
use crate::fsutil;
use crate::manifest::{Sidecar, sidecar};

/// The suffix of archives.
pub const ARCHIVE_SUFFIX: &str = ".tar.zst";

/// The suffix of age-encrypted archives.
pub const ENCRYPTED_SUFFIX: &str = ".tar.zst.age";

/// The file name of backup `id`'s archive (also its object name in a store).
pub fn archive_name(id: &str, encrypted: bool) -> String {
    let suffix = if encrypted {
        ENCRYPTED_SUFFIX
    } else {
        ARCHIVE_SUFFIX
    };
    format!("{id}{suffix}")
}

/// Where a backup's files live.
#[derive(Debug, Clone)]
pub struct BackupPaths {
    pub dir: PathBuf,
    pub archive: PathBuf,
    pub sidecar: PathBuf,
}

impl BackupPaths {
    fn new(backup_dir: &Path, job: &str, id: &str, encrypted: bool) -> BackupPaths {
        let dir = backup_dir.join(job);
        BackupPaths {
            archive: dir.join(archive_name(id, encrypted)),
            sidecar: dir.join(format!("{id}.json")),
            dir,
        }
    }

    /// Both names the archive could have (plain, encrypted).
    fn archive_names(&self) -> [PathBuf; 2] {
        let id = self
            .sidecar
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        [false, true].map(|encrypted| self.dir.join(archive_name(&id, encrypted)))
    }

    /// Removes the archive (whichever suffix it has), then the sidecar (so a crash
    /// between leaves an orphan sidecar, which reconcile sweeps), then fsyncs the
    /// directory. Missing files are fine: this finishes interrupted deletions too.
    fn remove_files(&self) -> std::io::Result<()> {
        let [plain, encrypted] = self.archive_names();
        for path in [&plain, &encrypted, &self.sidecar] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        fsutil::sync_dir(&self.dir)
    }
}

/// What [`LocalStore::scan`] found for one id in a job directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub job: String,
    pub id: String,
    pub has_archive: bool,
    pub has_sidecar: bool,
    /// The archive found is `<id>.tar.zst.age`.
    pub encrypted: bool,
}

/// The local backup directory and the staging directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    backup_dir: PathBuf,
    staging: PathBuf,
}

impl LocalStore {
    /// The store for `backup_dir`, staging under `state_dir`.
    pub fn new(backup_dir: &Path, state_dir: &Path) -> LocalStore {
        LocalStore {
            backup_dir: backup_dir.to_owned(),
            staging: state_dir.join("staging"),
        }
    }

    pub fn backup_dir(&self) -> &Path {
        &self.backup_dir
    }

    /// The staging directory (same filesystem as the state dir).
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// The files of backup `id` of `job`, as they are on disk: the archive is
    /// `<id>.tar.zst.age` if that exists, else `<id>.tar.zst` (one `stat`). Callers
    /// that know whether the backup is encrypted use [`LocalStore::paths_for`].
    pub fn paths(&self, job: &str, id: &str) -> BackupPaths {
        let encrypted = BackupPaths::new(&self.backup_dir, job, id, true);
        if encrypted.archive.exists() {
            encrypted
        } else {
            BackupPaths::new(&self.backup_dir, job, id, false)
        }
    }

    /// The files of backup `id` of `job`, plain or `encrypted`.
    pub fn paths_for(&self, job: &str, id: &str, encrypted: bool) -> BackupPaths {
        BackupPaths::new(&self.backup_dir, job, id, encrypted)
    }

    /// Whether any file of `id` exists (a free id has none).
    pub fn has_files(&self, job: &str, id: &str) -> bool {
        let paths = self.paths_for(job, id, false);
        paths.archive_names().iter().any(|p| p.exists()) || paths.sidecar.exists()
    }

    /// Creates the job's directory and a new `<archive>.partial` in it.
    pub fn create_partial(&self, paths: &BackupPaths) -> Result<(PathBuf, File), StoreError> {
        std::fs::create_dir_all(&paths.dir)
            .map_err(StoreError::io("cannot create the backup directory", &paths.dir))?;
        let partial = fsutil::partial_path(&paths.archive);
        let file =
            File::create_new(&partial).map_err(StoreError::io("cannot create the archive", &partial))?;
        Ok((partial, file))
    }

    /// Renames a finished, fsynced partial archive into place (and fsyncs the dir).
    pub fn commit(&self, partial: &Path, paths: &BackupPaths) -> Result<(), StoreError> {
        fsutil::commit_partial(partial, &paths.archive)
            .map_err(StoreError::io("cannot finish the archive", &paths.archive))
    }

    /// Writes a backup's sidecar crash-safely.
    pub fn write_sidecar(&self, paths: &BackupPaths, sidecar: &Sidecar) -> Result<(), StoreError> {
        std::fs::create_dir_all(&paths.dir)
            .map_err(StoreError::io("cannot create the backup directory", &paths.dir))?;
        sidecar::write(&paths.sidecar, sidecar)
            .map_err(StoreError::io("cannot write the sidecar", &paths.sidecar))
    }

    /// Where upload number `n` of this process is received: inside the backup dir, so
    /// cataloguing it is a rename on one filesystem (swept at start-up).
    pub fn upload_partial(&self, n: u64) -> PathBuf {
        self.backup_dir.join(format!(
            ".upload-{}-{n}{}",
            std::process::id(),
            fsutil::PARTIAL_SUFFIX
        ))
    }

    /// Removes `*.partial` files (job directories and uploads), temp archives of
    /// rekeys and everything in staging: what interrupted runs left. Returns what was
    /// removed. Run [`LocalStore::recover_rekeys`] first.
    pub fn sweep(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut removed = fsutil::sweep_leftovers(&self.backup_dir, &self.staging)?;
        removed.extend(super::rekey::sweep_temps(&self.backup_dir)?);
        Ok(removed)
    }

    /// Bytes available to cofferd on the backup directory's filesystem.
    pub fn free_space(&self) -> std::io::Result<u64> {
        fsutil::free_space(&self.backup_dir)
    }

    /// Refuses a run of `job` when writing `needs` bytes to each directory would leave
    /// less than `min_free` on its filesystem. Directories on one filesystem add up.
    pub fn check_space(&self, job: &str, min_free: u64, needs: &[(&Path, u64)]) -> Result<(), StoreError> {
        let mut per_fs: Vec<(u64, &Path, u64)> = Vec::new();
        for (dir, need) in needs {
            let dev = std::fs::metadata(dir)
                .map_err(StoreError::io("cannot stat", dir))?
                .dev();
            match per_fs.iter_mut().find(|(d, _, _)| *d == dev) {
                Some(entry) => entry.2 += need,
                None => per_fs.push((dev, dir, *need)),
            }
        }
        for (_, dir, need) in per_fs {
            let free =
                fsutil::free_space(dir).map_err(StoreError::io("cannot read the free space of", dir))?;
            if free < need.saturating_add(min_free) {
                return Err(StoreError::NoSpace(format!(
                    "not enough free space for a backup of job '{job}': {} has {} free, the backup needs about {} and min-free-space is {}",
                    dir.display(),
                    bytes(free),
                    bytes(need),
                    bytes(min_free)
                )));
            }
        }
        Ok(())
    }

    /// Removes a backup's files (archive, then sidecar); missing files are fine, so
    /// this also finishes an interrupted deletion.
    pub fn remove_files(&self, job: &str, id: &str) -> Result<(), StoreError> {
        let paths = self.paths(job, id);
        paths
            .remove_files()
            .map_err(StoreError::io("cannot delete the backup files in", &paths.dir))
    }

    /// Removes a sidecar whose archive is missing.
    pub fn remove_orphan_sidecar(&self, job: &str, id: &str) -> Result<PathBuf, StoreError> {
        let path = self.paths(job, id).sidecar;
        std::fs::remove_file(&path).map_err(StoreError::io("cannot remove the orphan sidecar", &path))?;
        Ok(path)
    }

    /// Every archive and sidecar file in the job directories, by id (names that are
    /// not a valid job or backup id are ignored).
    pub fn scan(&self) -> Result<Vec<Scanned>, StoreError> {
        fn scan_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
            StoreError::io("cannot read the backup directory", path)
        }
        let mut found: Vec<Scanned> = Vec::new();
        let job_dirs = match std::fs::read_dir(&self.backup_dir) {
            Ok(dirs) => dirs,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(scan_err(&self.backup_dir)(e)),
        };
        for job_dir in job_dirs {
            let job_dir = job_dir.map_err(scan_err(&self.backup_dir))?;
            let Some(job) = job_dir.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !coffer_common::ids::is_valid_job_name(&job) || !job_dir.path().is_dir() {
                continue;
            }
            let mut ids: std::collections::BTreeMap<String, Scanned> = Default::default();
            for file in std::fs::read_dir(job_dir.path()).map_err(scan_err(&job_dir.path()))? {
                let file = file.map_err(scan_err(&job_dir.path()))?;
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                // (archive, encrypted)
                let (id, kind) = if let Some(id) = name.strip_suffix(ENCRYPTED_SUFFIX) {
                    (id, Some(true))
                } else if let Some(id) = name.strip_suffix(ARCHIVE_SUFFIX) {
                    (id, Some(false))
                } else if let Some(id) = name.strip_suffix(".json") {
                    (id, None)
                } else {
                    continue;
                };
                if !coffer_common::ids::is_valid_backup_id(id) {
                    continue;
                }
                let seen = ids.entry(id.to_owned()).or_insert_with(|| Scanned {
                    job: job.clone(),
                    id: id.to_owned(),
                    has_archive: false,
                    has_sidecar: false,
                    encrypted: false,
                });
                match kind {
                    Some(encrypted) => {
                        seen.has_archive = true;
                        seen.encrypted |= encrypted;
                    }
                    None => seen.has_sidecar = true,
                }
            }
            found.extend(ids.into_values());
        }
        Ok(found)
    }

    /// Reads a local sidecar, naming the backup in the error.
    pub fn read_sidecar(&self, job: &str, id: &str) -> Result<Sidecar, StoreError> {
        let path = self.paths(job, id).sidecar;
        sidecar::read(&path).map_err(|message| StoreError::Sidecar {
            id: id.to_owned(),
            location: path.display().to_string(),
            message,
        })
    }
}

impl Store for LocalStore {
    fn name(&self) -> &str {
        "local"
    }

    fn list(&self, job: Option<&str>) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        for s in self.scan()? {
            if !(s.has_archive && s.has_sidecar) || job.is_some_and(|j| j != s.job) {
                continue;
            }
            let archive = self.paths(&s.job, &s.id).archive;
            let size = std::fs::metadata(&archive)
                .map_err(StoreError::io("cannot stat", &archive))?
                .len();
            out.push(Listed {
                job: s.job,
                id: s.id,
                size,
            });
        }
        Ok(out)
    }

    fn sidecar(&self, job: &str, id: &str) -> Result<Sidecar, StoreError> {
        self.read_sidecar(job, id)
    }

    fn open_archive(&self, job: &str, id: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let path = self.paths(job, id).archive;
        let file = File::open(&path).map_err(StoreError::io("cannot open the archive", &path))?;
        Ok(Box::new(file))
    }

    fn remove(&self, job: &str, id: &str) -> Result<(), StoreError> {
        self.remove_files(job, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(&dir.path().join("backups"), &dir.path().join("state"));
        std::fs::create_dir_all(store.backup_dir()).unwrap();
        std::fs::create_dir_all(store.staging_dir()).unwrap();
        (dir, store)
    }

    #[test]
    fn partial_commit_scan_and_remove() {
        let (_dir, store) = store();
        let paths = store.paths("app", "app-20260101T000000Z");
        let (partial, mut file) = store.create_partial(&paths).unwrap();
        std::io::Write::write_all(&mut file, b"archive").unwrap();
        drop(file);
        assert!(store.scan().unwrap().is_empty(), "a partial is not an archive");
        store.commit(&partial, &paths).unwrap();
        std::fs::write(&paths.sidecar, b"{}").unwrap();
        assert_eq!(
            store.scan().unwrap(),
            vec![Scanned {
                job: "app".into(),
                id: "app-20260101T000000Z".into(),
                has_archive: true,
                has_sidecar: true,
                encrypted: false,
            }]
        );
        let listed = Store::list(&store, Some("app")).unwrap();
        assert_eq!(listed[0].size, 7);
        assert!(Store::list(&store, Some("other")).unwrap().is_empty());
        store.remove_files("app", "app-20260101T000000Z").unwrap();
        assert!(store.scan().unwrap().is_empty());
        // Removing again is fine (an interrupted deletion finished twice).
        store.remove_files("app", "app-20260101T000000Z").unwrap();
    }

    #[test]
    fn sweep_removes_partials_and_staging() {
        let (_dir, store) = store();
        let paths = store.paths("app", "app-20260101T000000Z");
        let (partial, _file) = store.create_partial(&paths).unwrap();
        let upload = store.upload_partial(1);
        std::fs::write(&upload, b"x").unwrap();
        std::fs::create_dir(store.staging_dir().join("run")).unwrap();
        let removed = store.sweep().unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(!partial.exists() && !upload.exists());
    }

    #[test]
    fn space_check_names_the_directory_and_the_numbers() {
        let (_dir, store) = store();
        let dir = store.backup_dir().to_owned();
        store.check_space("app", 0, &[(&dir, 1)]).unwrap();
        let err = store
            .check_space("app", u64::MAX / 2, &[(&dir, 1)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("not enough free space for a backup of job 'app': "),
            "{err}"
        );
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }

    #[test]
    fn unreadable_sidecar_is_one_sentence_naming_the_backup() {
        let (_dir, store) = store();
        let paths = store.paths("app", "app-20260101T000000Z");
        std::fs::create_dir_all(&paths.dir).unwrap();
        std::fs::write(&paths.sidecar, b"{ not json").unwrap();
        let err = store
            .read_sidecar("app", "app-20260101T000000Z")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("backup app-20260101T000000Z cannot be read: its sidecar "),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }
}
