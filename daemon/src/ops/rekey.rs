//! `cofferctl rekey ID`: re-encrypting an encrypted backup to its job's current
//! recipients, so that a retired key can be dropped.
//!
//! Key rotation: the admin adds the new public key to `[job.encryption] recipients`
//! (new backups are encrypted to it from the next one on) and removes the old one; the
//! identity file still holds a key of the old recipients. `rekey` then, per backup:
//!
//! 1. verifies it (decrypting it with the identity file, every entry against the
//!    manifest): a damaged backup is never re-encrypted into a valid-looking one;
//! 2. decrypts and re-encrypts it, streaming, into `<archive>.rekey-tmp`, fsyncs it
//!    and reads it back — decrypting it again when the identity file holds a new
//!    recipient's key (same plaintext size and sha256), else hashing it (the disk
//!    holds what was written);
//! 3. replaces archive and sidecar in the crash-safe order of
//!    [`crate::store::rekey`], then updates the catalog row (size, sha256,
//!    fingerprints; the verification stands, the plaintext is the same).
//!
//! The old archive is never removed before the new one is complete, checked and
//! renamed over it. A backup already encrypted to exactly the current recipients is
//! left as it is. Only encrypted backups are rekeyed.

use super::{Ctx, verify};
use crate::archive::crypt::{self, RekeyCheck};
use crate::catalog::BackupRecord;
use crate::error::Error;
use crate::manifest::Encryption;
use crate::run::{Event, Phase, Progress};
use crate::store::rekey::temp_archive;

/// What a rekey did.
#[derive(Debug, Clone)]
pub struct Rekeyed {
    /// The backup as catalogued afterwards.
    pub record: BackupRecord,
    /// False when it was encrypted to the current recipients already.
    pub changed: bool,
}

/// Re-encrypts `record` to its job's current recipients (see the module doc).
pub fn rekey(ctx: &Ctx, record: &BackupRecord, progress: Progress<'_>) -> Result<Rekeyed, Error> {
    let job = ctx.job(&record.job)?;
    let Some(encryption) = &job.encryption else {
        return Err(Error::InvalidArgument(format!(
            "job '{}' has no [job.encryption] recipients to re-encrypt backup {} to",
            job.name, record.id
        )));
    };
    let sidecar = verify::load_sidecar(ctx, record)?;
    if !sidecar.is_encrypted() {
        return Err(Error::InvalidArgument(format!(
            "backup {} is not encrypted; rekey re-encrypts encrypted backups (new backups of an encrypted job are encrypted as they are written)",
            record.id
        )));
    }
    let Some(keys) = verify::keys(ctx, &record.job, &sidecar)? else {
        return Err(Error::Internal("an encrypted backup without keys".into()));
    };
    let mut wanted = encryption.fingerprints();
    let mut current = sidecar.recipients().to_vec();
    wanted.sort();
    current.sort();
    if wanted == current {
        progress(Event::new(
            Phase::Archive,
            format!("{} is encrypted to the current recipients already", record.id),
        ));
        return Ok(Rekeyed {
            record: record.clone(),
            changed: false,
        });
    }

    // 1. Only a backup that verifies is re-encrypted.
    verify::verify(ctx, record, false, progress)?;

    // 2. The new archive beside the old, checked.
    progress(Event::new(
        Phase::Archive,
        "re-encrypting to the current recipients",
    ));
    let paths = ctx.store.paths_for(&record.job, &record.id, true);
    let temp = temp_archive(&paths);
    let pending = crypt::rekey_file(
        &paths.archive,
        &temp,
        keys,
        &encryption.recipients,
        &|| ctx.cancel.is_cancelled(),
        &mut |done, total| progress(Event::bytes(Phase::Archive, done, total)),
    )
    .map_err(|e| match e {
        crypt::CryptError::Cancelled => Error::Cancelled,
        e => Error::from(e),
    })?;
    let mut new = sidecar.clone();
    new.size = pending.size;
    new.sha256 = pending.sha256.clone();
    new.encryption = Some(Encryption::age(pending.fingerprints.clone()));
    let check = pending.check;

    // 3. Pending sidecar, commit point, sidecar, catalog, end (crate::store::rekey).
    ctx.store.write_pending_sidecar(&paths, &new)?;
    if ctx.catalog.get_backup(&record.id)?.is_none() {
        // Deleted meanwhile: do not bring it back.
        drop(pending);
        ctx.store.end_rekey(&paths)?;
        return Err(Error::NoSuchBackup(record.id.clone()));
    }
    if let Err(e) = pending.commit() {
        // The rename may or may not have happened; the temp file says which.
        if temp.exists() {
            let _ = std::fs::remove_file(&temp);
            ctx.store.end_rekey(&paths)?;
            return Err(Error::from(e));
        }
        tracing::warn!(id = record.id, "the re-encrypted archive is in place, but: {e}");
    }
    ctx.store.replace_sidecar(&paths, &new)?;
    ctx.catalog.update_encryption(&new)?;
    ctx.store.end_rekey(&paths)?;
    let how = match check {
        RekeyCheck::Decrypted => "read back and decrypted with the identity file",
        RekeyCheck::Hashed => {
            "read back and hashed (the identity file holds none of the new recipients' keys, so cofferd cannot decrypt it any more)"
        }
    };
    tracing::info!(id = record.id, recipients = ?new.recipients(), "backup re-encrypted; {how}");
    progress(Event::new(Phase::Verify, format!("re-encrypted; {how}")));
    Ok(Rekeyed {
        record: ctx.get(&record.id)?,
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use age::secrecy::ExposeSecret;

    use super::*;
    use crate::ops::backup;
    use crate::ops::testing::TestCtx;
    use crate::source::sqlite::test_db::make_db;

    /// An age key pair: (identity file, recipient).
    fn key(dir: &Path, name: &str) -> (PathBuf, String) {
        let identity = age::x25519::Identity::generate();
        let path = dir.join(name);
        std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, identity.to_public().to_string())
    }

    fn encryption(recipients: &[&str], identity: &Path) -> String {
        let list: Vec<String> = recipients.iter().map(|r| format!("{r:?}")).collect();
        format!(
            "[job.encryption]\nrecipients = [{}]\nidentity-file = {:?}\n",
            list.join(", "),
            identity.display().to_string()
        )
    }

    #[test]
    fn rekey_to_new_recipients_replaces_archive_sidecar_and_row() {
        let src = tempfile::tempdir().unwrap();
        let db = src.path().join("app.db");
        make_db(&db, true);
        let (old_key, old) = key(src.path(), "old.txt");
        let (new_key, new) = key(src.path(), "new.txt");
        let both = src.path().join("both.txt");
        let text = std::fs::read_to_string(&old_key).unwrap() + &std::fs::read_to_string(&new_key).unwrap();
        std::fs::write(&both, text).unwrap();
        std::fs::set_permissions(&both, std::fs::Permissions::from_mode(0o600)).unwrap();

        let t = TestCtx::new(&db, &[], &encryption(&[&old], &old_key));
        let record = {
            let ctx = t.ctx();
            backup::take(&ctx, ctx.job("app").unwrap(), "", false, &mut |_| {}).unwrap()
        };
        assert_eq!(record.recipients, vec![old.clone()]);
        // Same recipients: nothing to do.
        let same = rekey(&t.ctx(), &record, &mut |_| {}).unwrap();
        assert!(!same.changed);

        // Rotated: the config now lists the new key; the identity file holds both.
        let rotated = TestCtx::with_dirs(&t, &db, &encryption(&[&new], &both));
        let ctx = rotated.ctx();
        let done = rekey(&ctx, &record, &mut |_| {}).unwrap();
        assert!(done.changed);
        assert_eq!(done.record.recipients, vec![new.clone()]);
        assert_ne!(done.record.sha256, record.sha256);
        let paths = ctx.store.paths_for("app", &record.id, true);
        let on_disk = crate::archive::hash_file(&paths.archive).unwrap();
        assert_eq!(on_disk, (done.record.size, done.record.sha256.clone()));
        let sidecar = ctx.store.read_sidecar("app", &record.id).unwrap();
        assert_eq!(sidecar.recipients(), std::slice::from_ref(&new));
        assert!(!crate::store::rekey::pending_sidecar(&paths).exists());
        assert!(!temp_archive(&paths).exists());
        // Deep verification with only the new key works; the old key alone cannot read it.
        let new_only = TestCtx::with_dirs(&t, &db, &encryption(&[&new], &new_key));
        verify::verify(&new_only.ctx(), &done.record, true, &mut |_| {}).unwrap();
        let old_only = TestCtx::with_dirs(&t, &db, &encryption(&[&new], &old_key));
        let err = verify::verify(&old_only.ctx(), &done.record, true, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("none of the identities in"), "{err}");
    }

    #[test]
    fn plain_backups_and_missing_keys_are_refused_and_nothing_changes() {
        let src = tempfile::tempdir().unwrap();
        let db = src.path().join("app.db");
        make_db(&db, false);
        let t = TestCtx::new(&db, &[], "");
        let plain = {
            let ctx = t.ctx();
            backup::take(&ctx, ctx.job("app").unwrap(), "", false, &mut |_| {}).unwrap()
        };
        let (key_file, recipient) = key(src.path(), "k.txt");
        let enc = TestCtx::with_dirs(&t, &db, &encryption(&[&recipient], &key_file));
        let err = rekey(&enc.ctx(), &plain, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("is not encrypted"), "{err}");

        // An encrypted backup, then the identity file is no longer configured.
        let encrypted = {
            let ctx = enc.ctx();
            backup::take(&ctx, ctx.job("app").unwrap(), "", false, &mut |_| {}).unwrap()
        };
        let (_, other) = key(src.path(), "other.txt");
        let no_identity =
            TestCtx::with_dirs(&t, &db, &format!("[job.encryption]\nrecipients = [{other:?}]\n"));
        let before = std::fs::read(enc.ctx().archive_path(&encrypted)).unwrap();
        let err = rekey(&no_identity.ctx(), &encrypted, &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Precondition, "{err}");
        assert!(
            err.to_string().contains("set identity-file in [job.encryption]"),
            "{err}"
        );
        assert_eq!(std::fs::read(enc.ctx().archive_path(&encrypted)).unwrap(), before);
    }
}
