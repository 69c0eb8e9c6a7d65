//! `[job.encryption]`: the public keys a job's archives are encrypted to, and the
//! optional identity file that lets cofferd read them again.
//!
//! ```toml
//! [job.encryption]
//! recipients = ["age1...", "ssh-ed25519 AAAA... admin@laptop"]
//! identity-file = "/etc/coffer/age-identity.txt"   # optional
//! ```
//!
//! The raw table becomes an [`EncryptionConfig`] at load: every recipient is parsed
//! (the first bad one is named by its index, without echoing anything secret), and the
//! identity file is read and checked now — its mode (no group or other access), its
//! format — so a problem is a config error naming the file, caught by
//! `--check-config` and by a reload (which reads the file again, so a replaced key
//! takes effect on SIGHUP). cofferd needs no secret to back up: without an identity
//! file, backups and shallow verification work, and whatever needs the plaintext of an
//! archive (deep verify, restore, upload of an encrypted archive, rekey, drills) is
//! refused with a sentence saying how to provide one.
//!
//! An encrypted job never writes a plaintext copy of its database to disk, so its
//! SQLite snapshot streams pages (`page-stream`, the default for such jobs); asking
//! for `vacuum-into`, which writes a plaintext copy into staging, is a config error.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{ConfigError, Validator};
use crate::archive::crypt::{Identities, Recipients};

/// `[job.encryption]` as written.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawEncryption {
    recipients: Vec<String>,
    identity_file: Option<PathBuf>,
}

/// A job's encryption settings, validated.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    /// The public keys new archives are encrypted to.
    pub recipients: Recipients,
    /// The identity file, when configured.
    pub identity_file: Option<PathBuf>,
    /// Its secret keys, read at load (shared: a config is cloned per reload).
    pub identities: Option<Arc<Identities>>,
}

impl EncryptionConfig {
    /// The recipients' fingerprints, as sidecars record them.
    pub fn fingerprints(&self) -> Vec<String> {
        self.recipients.fingerprints()
    }
}

/// Why an encrypted job cannot use `vacuum-into` (the message of the config error).
pub(super) const VACUUM_INTO_REFUSED: &str = "'vacuum-into' writes a plaintext copy of the database to staging, which an encrypted job never does; remove the key (encrypted jobs stream the database's pages) or set \"page-stream\"";

impl Validator<'_> {
    /// Validates job `job`'s `[job.encryption]`, if it has one.
    pub(super) fn encryption(
        &self,
        job: &str,
        raw: Option<RawEncryption>,
    ) -> Result<Option<EncryptionConfig>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        // The crypt errors start with the key ("encryption.recipients[1]: ...").
        let recipients = Recipients::parse(&raw.recipients)
            .map_err(|e| self.err(format!("job '{job}'"), e.to_string()))?;
        let key = format!("job '{job}': encryption.identity-file");
        let (identity_file, identities) = match raw.identity_file {
            Some(path) => {
                let path = self.absolute(&key, &path)?;
                let identities = Identities::load(&path)
                    .map_err(|e| self.err(&key, coffer_common::format::error_chain(&e)))?;
                (Some(path), Some(Arc::new(identities)))
            }
            None => (None, None),
        };
        Ok(Some(EncryptionConfig {
            recipients,
            identity_file,
            identities,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use crate::config::{Config, SnapshotMethod};

    const AGE_RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/coffer/cofferd.toml"), text).map_err(|e| e.to_string())
    }

    fn job_toml(extra: &str) -> String {
        format!("[[job]]\nname = \"app\"\ndatabase = \"/var/lib/app/app.db\"\n{extra}")
    }

    /// An identity file made by the age crate, with `mode`.
    fn identity_file(dir: &Path, mode: u32) -> (std::path::PathBuf, String) {
        use age::secrecy::ExposeSecret;
        let identity = age::x25519::Identity::generate();
        let path = dir.join("identity.txt");
        std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (path, identity.to_public().to_string())
    }

    #[test]
    fn recipients_and_identity_are_loaded_and_page_stream_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recipient) = identity_file(dir.path(), 0o600);
        let c = parse(&job_toml(&format!(
            "[job.encryption]\nrecipients = [{recipient:?}, {AGE_RECIPIENT:?}]\nidentity-file = {:?}\n",
            path.display().to_string()
        )))
        .unwrap();
        let job = &c.jobs[0];
        let enc = job.encryption.as_ref().unwrap();
        assert_eq!(
            enc.fingerprints(),
            vec![recipient.clone(), AGE_RECIPIENT.to_owned()]
        );
        assert_eq!(enc.identities.as_ref().unwrap().fingerprints(), vec![recipient]);
        assert_eq!(job.sqlite().unwrap().snapshot_method, SnapshotMethod::PageStream);
        // Without the table: as before.
        let plain = parse(&job_toml("")).unwrap();
        assert!(plain.jobs[0].encryption.is_none());
        assert_eq!(
            plain.jobs[0].sqlite().unwrap().snapshot_method,
            SnapshotMethod::VacuumInto
        );
    }

    #[test]
    fn bad_values_are_one_sentence_naming_file_key_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let (open_file, recipient) = identity_file(dir.path(), 0o644);
        let open_file = open_file.display().to_string();
        let cases: Vec<(String, String)> = vec![
            (
                "recipients = []\n".into(),
                "job 'app': encryption.recipients is empty".into(),
            ),
            (
                format!("recipients = [{AGE_RECIPIENT:?}, \"age1nope\"]\n"),
                "job 'app': encryption.recipients[1]: 'age1nope' is not a valid age or SSH public key".into(),
            ),
            (
                "recipients = [\"AGE-SECRET-KEY-1QQQQ\"]\n".into(),
                "it is a secret key".into(),
            ),
            (
                "identity-file = \"/x\"\n".into(),
                "missing field `recipients`".into(),
            ),
            (
                format!("recipients = [{recipient:?}]\nidentity-file = \"rel.txt\"\n"),
                "job 'app': encryption.identity-file: 'rel.txt' must be an absolute path".into(),
            ),
            (
                format!("recipients = [{recipient:?}]\nidentity-file = {open_file:?}\n"),
                format!(
                    "job 'app': encryption.identity-file: the identity file {open_file} has mode 0644, so its secret keys are readable by group or others; run `chmod 600 {open_file}`"
                ),
            ),
            (
                format!("recipients = [{recipient:?}]\nidentity-file = \"/nonexistent/key.txt\"\n"),
                "cannot read the identity file /nonexistent/key.txt".into(),
            ),
            (
                format!("recipients = [{recipient:?}]\nidentty-file = \"/x\"\n"),
                "unknown field `identty-file`".into(),
            ),
        ];
        for (table, want) in cases {
            let text = job_toml(&format!("[job.encryption]\n{table}"));
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(&want), "for {table:?}: got {err:?}, want {want:?}");
            assert!(err.starts_with("config file /etc/coffer/cofferd.toml"), "{err}");
            assert!(
                !err.contains("AGE-SECRET-KEY-1QQQQ"),
                "a secret is never echoed: {err}"
            );
        }
        let err = parse(&job_toml(&format!(
            "snapshot-method = \"vacuum-into\"\n[job.encryption]\nrecipients = [{AGE_RECIPIENT:?}]\n"
        )))
        .unwrap_err();
        assert!(
            err.contains("job 'app': snapshot-method: 'vacuum-into' writes a plaintext copy"),
            "{err}"
        );
    }
}
