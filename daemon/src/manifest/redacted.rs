//! The sidecar that travels with an offsite copy of an encrypted backup.
//!
//! A local sidecar holds the whole manifest — every file name, the database's path,
//! its SQLite facts — which is fine on the machine that has the plaintext anyway, but
//! must not sit in clear beside an archive that was encrypted precisely so that the
//! bucket's owner learns nothing. A [`RedactedSidecar`] keeps only what a store, a
//! fleet view and shallow verification need: id, job, host, times, the ciphertext's
//! size and sha256, and the recipients' fingerprints. The full manifest travels inside
//! the encrypted archive and is recovered from it ([`RedactedSidecar::complete`]) by
//! whoever holds a key.
//!
//! For the offsite copy step: [`for_offsite`] gives the bytes to upload beside an
//! archive (redacted for an encrypted backup, the full sidecar for a plain one, whose
//! archive is readable anyway), and [`parse_any`] reads either form back.
//!
//! ```json
//! {"redacted": true, "id": "app-20261123T020000Z", "job": "app", "hostname": "web1",
//!  "created-at": "2026-11-23T02:00:00Z", "duration-ms": 5120, "protected": false,
//!  "size": 861243392, "sha256": "…",
//!  "encryption": {"format": "age", "recipients": ["age1…", "SHA256:…"]}}
//! ```

use serde::{Deserialize, Serialize};

use super::sidecar::{self, Encryption, Sidecar};
use super::{Manifest, is_sha256_hex};

/// An encrypted backup's sidecar without its manifest (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RedactedSidecar {
    /// Always true: what tells this form from a full sidecar.
    pub redacted: bool,
    pub id: String,
    /// The job the backup belongs to (where it was filed).
    pub job: String,
    pub hostname: String,
    /// RFC 3339 UTC, as in the manifest.
    pub created_at: String,
    /// Milliseconds the backup took.
    #[serde(default)]
    pub duration_ms: u64,
    /// The pin, so that retention in a store keeps a pinned copy that is no longer
    /// local (not a secret: it says nothing about the content).
    #[serde(default)]
    pub protected: bool,
    /// Size and hex sha256 of the encrypted archive.
    pub size: u64,
    pub sha256: String,
    pub encryption: Encryption,
}

/// A sidecar read from a store: the full one or the redacted one.
#[derive(Debug, Clone, PartialEq)]
pub enum AnySidecar {
    Full(Box<Sidecar>),
    Redacted(RedactedSidecar),
}

impl AnySidecar {
    pub fn id(&self) -> &str {
        match self {
            AnySidecar::Full(s) => &s.manifest.id,
            AnySidecar::Redacted(r) => &r.id,
        }
    }

    pub fn job(&self) -> &str {
        match self {
            AnySidecar::Full(s) => s.job(),
            AnySidecar::Redacted(r) => &r.job,
        }
    }

    /// Size and hex sha256 of the archive file.
    pub fn size_and_sha256(&self) -> (u64, &str) {
        match self {
            AnySidecar::Full(s) => (s.size, &s.sha256),
            AnySidecar::Redacted(r) => (r.size, &r.sha256),
        }
    }

    /// Whether the backup is pinned.
    pub fn protected(&self) -> bool {
        match self {
            AnySidecar::Full(s) => s.protected,
            AnySidecar::Redacted(r) => r.protected,
        }
    }

    /// Whether its archive is encrypted.
    pub fn is_encrypted(&self) -> bool {
        !self.recipients().is_empty()
    }

    /// The recipients' fingerprints; empty for a plain archive.
    pub fn recipients(&self) -> &[String] {
        match self {
            AnySidecar::Full(s) => s.recipients(),
            AnySidecar::Redacted(r) => &r.encryption.recipients,
        }
    }
}

impl RedactedSidecar {
    /// The redacted form of an encrypted backup's sidecar; `None` for a plain one
    /// (whose archive is readable anyway: it keeps its full sidecar).
    pub fn of(sidecar: &Sidecar) -> Option<RedactedSidecar> {
        let encryption = sidecar.encryption.clone()?;
        let m = &sidecar.manifest;
        Some(RedactedSidecar {
            redacted: true,
            id: m.id.clone(),
            job: sidecar.job().to_owned(),
            hostname: m.hostname.clone(),
            created_at: m.created_at.clone(),
            duration_ms: sidecar.duration_ms,
            protected: sidecar.protected,
            size: sidecar.size,
            sha256: sidecar.sha256.clone(),
            encryption,
        })
    }

    /// Checks what readers rely on: the marker, the id/job pairing, the hash's form,
    /// the recipients.
    pub fn validate(&self) -> Result<(), String> {
        if !self.redacted {
            return Err("a redacted sidecar must say \"redacted\": true".into());
        }
        match coffer_common::ids::split_backup_id(&self.id) {
            Some(_) if coffer_common::ids::is_valid_job_name(&self.job) => {}
            _ => {
                return Err(format!(
                    "'{}' is not a backup id of a valid job",
                    self.id.escape_debug()
                ));
            }
        }
        if !is_sha256_hex(&self.sha256) {
            return Err("its sha256 is not 64 hex digits".into());
        }
        self.encryption.validate()
    }

    /// The full sidecar, once the archive was decrypted and verified and `manifest`
    /// read from inside it: the manifest must be this backup's (same id, host and
    /// time). The note and the pin do not travel; the job stays the one it was filed
    /// under.
    pub fn complete(self, manifest: Manifest) -> Result<Sidecar, String> {
        if manifest.id != self.id
            || manifest.hostname != self.hostname
            || manifest.created_at != self.created_at
        {
            return Err(format!(
                "the archive's manifest is backup {} of {}, not the {} its sidecar names",
                manifest.id.escape_debug(),
                manifest.hostname.escape_debug(),
                self.id.escape_debug()
            ));
        }
        let filed_under = (manifest.job != self.job).then_some(self.job);
        Ok(Sidecar {
            manifest,
            size: self.size,
            sha256: self.sha256,
            note: String::new(),
            protected: false,
            duration_ms: self.duration_ms,
            filed_under,
            encryption: Some(self.encryption),
        })
    }
}

/// The sidecar bytes to store beside an offsite copy of the backup with `sidecar`:
/// redacted for an encrypted archive, the full sidecar for a plain one.
pub fn for_offsite(sidecar: &Sidecar) -> std::io::Result<Vec<u8>> {
    match RedactedSidecar::of(sidecar) {
        Some(redacted) => serde_json::to_vec_pretty(&redacted).map_err(std::io::Error::other),
        None => sidecar::to_bytes(sidecar),
    }
}

/// Parses and validates sidecar bytes of either form; the error says why in a few
/// words.
pub fn parse_any(bytes: &[u8]) -> Result<AnySidecar, String> {
    #[derive(Deserialize)]
    struct Marker {
        #[serde(default)]
        redacted: bool,
    }
    let marker: Marker = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if marker.redacted {
        let redacted: RedactedSidecar = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        redacted.validate()?;
        Ok(AnySidecar::Redacted(redacted))
    } else {
        sidecar::parse(bytes).map(|s| AnySidecar::Full(Box::new(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = include_str!("../../../tests/fixtures/v1/legacy-20261130T153641Z.json");

    fn encrypted() -> Sidecar {
        let mut sidecar: Sidecar = serde_json::from_str(V1).unwrap();
        sidecar.note = "before dropping table customers".into();
        sidecar.encryption = Some(Encryption::age(vec![
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            "SHA256:abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ".into(),
        ]));
        sidecar
    }

    #[test]
    fn the_offsite_sidecar_of_an_encrypted_backup_holds_no_names_paths_or_database_facts() {
        let sidecar = encrypted();
        let bytes = for_offsite(&sidecar).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "created-at",
            "duration-ms",
            "encryption",
            "hostname",
            "id",
            "job",
            "protected",
            "redacted",
            "sha256",
            "size",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        // Nothing of the manifest but id, job, host and time: no entry path, no
        // database path or fact, no media root, no note.
        let m = &sidecar.manifest;
        let mut secrets: Vec<String> = m.entries.iter().map(|e| e.path.clone()).collect();
        secrets.extend(m.media_roots.iter().cloned());
        let info = m.sqlite().unwrap();
        secrets.extend([info.path.clone(), info.journal_mode.clone(), sidecar.note.clone()]);
        for secret in secrets {
            assert!(!text.contains(&secret), "{secret:?} leaked into {text}");
        }
        assert!(!text.contains("sqlite"), "{text}");
        match parse_any(&bytes).unwrap() {
            AnySidecar::Redacted(r) => {
                assert_eq!(
                    (r.size, r.sha256.as_str()),
                    (sidecar.size, sidecar.sha256.as_str())
                );
                assert_eq!(r.encryption, sidecar.encryption.clone().unwrap());
                let full = r.complete(sidecar.manifest.clone()).unwrap();
                assert_eq!(full.manifest, sidecar.manifest);
                assert_eq!(
                    (full.size, full.encryption),
                    (sidecar.size, sidecar.encryption.clone())
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_backup_keeps_its_full_sidecar_and_both_forms_parse() {
        let plain: Sidecar = serde_json::from_str(V1).unwrap();
        assert!(RedactedSidecar::of(&plain).is_none());
        let bytes = for_offsite(&plain).unwrap();
        assert_eq!(bytes, sidecar::to_bytes(&plain).unwrap());
        assert_eq!(parse_any(&bytes).unwrap(), AnySidecar::Full(Box::new(plain)));
        // Encrypted full sidecars round-trip too, and say what they are.
        let enc = encrypted();
        let parsed = parse_any(&sidecar::to_bytes(&enc).unwrap()).unwrap();
        assert_eq!(parsed.recipients(), enc.recipients());
    }

    #[test]
    fn bad_redacted_sidecars_are_refused() {
        let good = RedactedSidecar::of(&encrypted()).unwrap();
        let bytes = |r: &RedactedSidecar| serde_json::to_vec(r).unwrap();
        let mut bad = good.clone();
        bad.sha256 = "xyz".into();
        assert!(parse_any(&bytes(&bad)).unwrap_err().contains("sha256"));
        let mut bad = good.clone();
        bad.encryption.recipients.clear();
        assert!(parse_any(&bytes(&bad)).unwrap_err().contains("recipients"));
        let mut bad = good.clone();
        bad.id = "../x".into();
        assert!(parse_any(&bytes(&bad)).is_err());
        let mut value = serde_json::to_value(&good).unwrap();
        value["entries"] = serde_json::json!([]);
        assert!(
            parse_any(&serde_json::to_vec(&value).unwrap()).is_err(),
            "unknown keys"
        );
        // A manifest of another backup does not complete it.
        let mut other = encrypted().manifest;
        other.id = "legacy-20270101T000000Z".into();
        assert!(good.complete(other).is_err());
    }
}
