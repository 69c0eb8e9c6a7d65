//! Deleting, pinning and unpinning backups.
//!
//! Deletion is crash-safe: the row is marked `deleting` (no longer listed), the files
//! are removed (archive, then sidecar), then the row is dropped; reconcile finishes an
//! interrupted deletion at start-up. A pin is written to the sidecar first, so a
//! rebuilt catalog keeps it.

use super::Ctx;
use crate::catalog::BackupRecord;
use crate::error::Error;

/// Deletes a backup unless it is pinned.
pub fn delete(ctx: &Ctx, id_text: &str) -> Result<BackupRecord, Error> {
    let record = ctx.resolve(id_text)?;
    if record.protected {
        return Err(Error::Protected(record.id));
    }
    remove(ctx, &record)?;
    Ok(record)
}

/// Removes a backup's files and row (no protection check).
pub fn remove(ctx: &Ctx, record: &BackupRecord) -> Result<(), Error> {
    ctx.catalog.mark_deleting(&record.id)?;
    ctx.store.remove_files(&record.job, &record.id)?;
    ctx.catalog.remove_backup(&record.id)?;
    tracing::info!(id = record.id, "backup deleted");
    Ok(())
}

/// Pins or unpins a backup.
pub fn set_protected(ctx: &Ctx, id_text: &str, protected: bool) -> Result<BackupRecord, Error> {
    let record = ctx.resolve(id_text)?;
    let paths = ctx.store.paths(&record.job, &record.id);
    let mut sidecar = ctx.store.read_sidecar(&record.job, &record.id)?;
    sidecar.protected = protected;
    ctx.store.write_sidecar(&paths, &sidecar)?;
    ctx.catalog.set_protected(&record.id, protected)?;
    ctx.get(&record.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::TestCtx;

    #[test]
    fn pinned_backups_refuse_deletion_and_keep_the_pin_in_the_sidecar() {
        let (_src, t) = TestCtx::app("verify-after-backup = false");
        let record = t.backup();
        let ctx = t.ctx();
        set_protected(&ctx, &record.id, true).unwrap();
        assert!(ctx.store.read_sidecar("app", &record.id).unwrap().protected);
        let err = delete(&ctx, &record.id).unwrap_err();
        assert!(matches!(err, Error::Protected(_)), "{err}");
        set_protected(&ctx, "app:latest", false).unwrap();
        delete(&ctx, "latest").unwrap();
        assert!(ctx.store.scan().unwrap().is_empty());
        assert!(matches!(ctx.resolve(&record.id), Err(Error::NoSuchBackup(_))));
    }
}
