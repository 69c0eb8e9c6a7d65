//! The `<id>.json` sidecar beside each archive: the manifest plus facts about the
//! archive file (its size and sha256) and about the backup here (note, pin, duration,
//! the job an upload was filed under).
//!
//! Sidecars are written crash-safely ([`write`]) and always read through [`read`],
//! which parses and validates, so every reader agrees on what a bad sidecar is.

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
}

impl Sidecar {
    /// The job this backup belongs to here.
    pub fn job(&self) -> &str {
        self.filed_under.as_deref().unwrap_or(&self.manifest.job)
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
