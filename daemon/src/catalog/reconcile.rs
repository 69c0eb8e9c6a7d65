//! Making the catalog agree with the local store at start-up.
//!
//! In order: deletions that a crash interrupted are finished (files, then row); every
//! archive with a valid sidecar but no row is catalogued (so deleting catalog.db loses
//! nothing); sidecars without an archive (written by a run that then failed or died)
//! are removed; rows whose archive is gone (deleted by hand) are dropped. Archives
//! without a valid sidecar (or whose sidecar describes the other kind of archive: a
//! `.tar.zst` for an encrypted backup, a `.tar.zst.age` for a plain one) are reported
//! and left alone: an archive is never deleted here.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{Catalog, CatalogError};
use crate::store::{LocalStore, StoreError};

/// What [`Catalog::reconcile`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: Vec<String>,
    pub dropped: Vec<String>,
    pub finished_deletes: Vec<String>,
    pub orphan_sidecars: Vec<PathBuf>,
    pub unknown_archives: Vec<PathBuf>,
}

fn scan_error(e: StoreError) -> CatalogError {
    match e {
        StoreError::Io { path, source, .. } => CatalogError::Scan { path, source },
        other => CatalogError::Scan {
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

impl Catalog {
    /// Makes the catalog agree with `store` (see the module doc).
    pub fn reconcile(&self, store: &LocalStore) -> Result<Reconciled, CatalogError> {
        let mut report = Reconciled::default();
        let rows = self.all_ids()?;

        // 1. Finish deletions a crash interrupted.
        for (id, job, _) in rows.iter().filter(|(_, _, deleting)| *deleting) {
            store.remove_files(job, id).map_err(scan_error)?;
            self.remove_backup(id)?;
            report.finished_deletes.push(id.clone());
        }

        // 2. Sidecars with archives must have rows.
        let known: HashSet<&str> = rows
            .iter()
            .filter(|(_, _, deleting)| !deleting)
            .map(|(id, _, _)| id.as_str())
            .collect();
        let mut on_disk = HashSet::new();
        for found in store.scan().map_err(scan_error)? {
            let paths = store.paths(&found.job, &found.id);
            if found.has_archive {
                on_disk.insert(found.id.clone());
            }
            match (found.has_archive, found.has_sidecar) {
                (true, false) if !known.contains(found.id.as_str()) => {
                    report.unknown_archives.push(paths.archive);
                }
                (false, true) => {
                    let removed = store
                        .remove_orphan_sidecar(&found.job, &found.id)
                        .map_err(scan_error)?;
                    report.orphan_sidecars.push(removed);
                }
                (true, true) if !known.contains(found.id.as_str()) => {
                    match store.read_sidecar(&found.job, &found.id) {
                        // The sidecar says which archive it belongs to: `.tar.zst.age`
                        // for an encrypted one.
                        Ok(sidecar)
                            if sidecar.manifest.id == found.id
                                && sidecar.job() == found.job
                                && sidecar.is_encrypted() == found.encrypted =>
                        {
                            self.insert_backup(&sidecar)?;
                            report.added.push(found.id.clone());
                        }
                        Ok(_) => report.unknown_archives.push(paths.archive),
                        Err(e) => {
                            tracing::warn!("archive not catalogued: {e}");
                            report.unknown_archives.push(paths.archive);
                        }
                    }
                }
                _ => {}
            }
        }

        // 3. Rows whose archive is gone are dropped.
        for id in known.iter().filter(|id| !on_disk.contains(**id)) {
            self.remove_backup(id)?;
            report.dropped.push((*id).to_owned());
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::TestCtx;

    #[test]
    fn a_lost_catalog_is_rebuilt_and_strays_are_handled() {
        let (_src, t) = TestCtx::app("verify-after-backup = false");
        let (kept, gone) = (t.backup(), t.backup());

        // A fresh catalog finds the backups again.
        let fresh = Catalog::open(&t.dir_path().join("fresh.db")).unwrap();
        let report = fresh.reconcile(&t.store).unwrap();
        assert_eq!(report.added.len(), 2);
        assert_eq!(fresh.list_backups(None).unwrap().len(), 2);

        // An archive deleted by hand drops its row; its orphan sidecar goes too.
        std::fs::remove_file(t.store.paths("app", &gone.id).archive).unwrap();
        let report = fresh.reconcile(&t.store).unwrap();
        assert_eq!(report.dropped, vec![gone.id.clone()]);
        assert_eq!(report.orphan_sidecars.len(), 1);
        assert!(!t.store.paths("app", &gone.id).sidecar.exists());

        // A deletion a crash interrupted is finished.
        fresh.mark_deleting(&kept.id).unwrap();
        let report = fresh.reconcile(&t.store).unwrap();
        assert_eq!(report.finished_deletes, vec![kept.id.clone()]);
        assert!(t.store.scan().unwrap().is_empty());
        assert!(fresh.list_backups(None).unwrap().is_empty());
    }

    #[test]
    fn an_archive_without_a_valid_sidecar_is_left_alone() {
        let (_src, t) = TestCtx::app("verify-after-backup = false");
        let record = t.backup();
        let paths = t.store.paths("app", &record.id);
        std::fs::write(&paths.sidecar, b"not json").unwrap();
        let fresh = Catalog::open(&t.dir_path().join("fresh.db")).unwrap();
        let report = fresh.reconcile(&t.store).unwrap();
        assert_eq!(report.unknown_archives, vec![paths.archive.clone()]);
        assert!(paths.archive.exists(), "never deleted");
    }
}
