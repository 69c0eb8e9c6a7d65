//! The `<id>.json` sidecar beside each archive: the manifest plus facts about the
//! archive file (its size and sha256) and about the backup here (note, pin, duration,
//! the job an upload was filed under).
//!
//! Sidecars are written crash-safely ([`write`]) and always read through [`read`],
//! which parses and validates, so every reader agrees on what a bad sidecar is.
//!
//! An encrypted backup's sidecar says so in `encryption` (the archive is then
//! `<id>.tar.zst.age`, and `size`/`sha256` are the ciphertext's, so shallow verification
//! and offsite copies need no key) and lists the recipients' fingerprints. It still
//! holds the full manifest: it stays on this machine, which has the plaintext anyway.
//! What leaves the machine is [`super::redacted`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Manifest;

/// The `<id>.json` file beside an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Sidecar {
    #[serde(flatten)]
    pub manifest: Manifest,
    /// Archive size in bytes.
    pub size: u64,
    /// Hex sha256 of the archive file.
    pub sha256: String,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub protected: bool,
    /// Milliseconds the backup took.
    #[serde(default)]
    pub duration_ms: u64,
    /// The job an uploaded archive was filed under, when not its manifest's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filed_under: Option<String>,
    /// How the archive is encrypted; `None` for a plain `.tar.zst` (and then absent
    /// from the file, so plain sidecars are as they always were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// The encryption of an archive, as its sidecar records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Encryption {
    pub format: EncryptionFormat,
    /// The recipients' fingerprints (`age1...` for age keys, `SHA256:...` as
    /// `ssh-keygen -l` prints it for SSH keys); never a secret.
    pub recipients: Vec<String>,
}

/// The encryption format of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionFormat {
    /// age v1 (age-encryption.org/v1), X25519 and SSH recipients.
    Age,
}

impl Encryption {
    /// age encryption to the recipients with these fingerprints.
    pub fn age(recipients: Vec<String>) -> Encryption {
        Encryption {
            format: EncryptionFormat::Age,
            recipients,
        }
    }

    /// Checks what readers rely on: at least one recipient, none empty.
    pub fn validate(&self) -> Result<(), String> {
        if self.recipients.is_empty() || self.recipients.iter().any(|r| r.trim().is_empty()) {
            return Err("its encryption lists no recipients".into());
        }
        Ok(())
    }
}

impl Sidecar {
    /// The job this backup belongs to here.
    pub fn job(&self) -> &str {
        self.filed_under.as_deref().unwrap_or(&self.manifest.job)
    }

    /// Whether the archive is encrypted (`<id>.tar.zst.age`).
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// The recipients' fingerprints of an encrypted archive; empty for a plain one.
    pub fn recipients(&self) -> &[String] {
        self.encryption.as_ref().map_or(&[], |e| &e.recipients)
    }
}

/// Reads, parses and validates a sidecar file; the error says why in a few words.
pub fn read(path: &Path) -> Result<Sidecar, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    parse(&bytes)
}

/// Parses and validates sidecar bytes.
pub fn parse(bytes: &[u8]) -> Result<Sidecar, String> {
    let sidecar: Sidecar = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    sidecar.manifest.validate()?;
    if let Some(encryption) = &sidecar.encryption {
        encryption.validate()?;
    }
    Ok(sidecar)
}

/// The sidecar's bytes as written (pretty JSON).
pub fn to_bytes(sidecar: &Sidecar) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(sidecar).map_err(std::io::Error::other)
}

/// Writes a sidecar crash-safely (partial, fsync, rename, fsync dir).
pub fn write(path: &Path, sidecar: &Sidecar) -> std::io::Result<()> {
    crate::fsutil::write_atomic(path, &to_bytes(sidecar)?)
}
