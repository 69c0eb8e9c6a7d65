//! Settings of one S3 store, and where its credentials come from.
//!
//! The daemon's `config` module parses a `[[store]]` table (kind `s3`) and builds an
//! [`S3Config`] from it: the prefix already has `{host}` expanded (see
//! [`super::layout::expand_prefix`]), the credentials are already loaded with
//! [`Credentials::load`]. Nothing here touches the network.
//!
//! Credentials are looked up in this order, the first one present wins:
//! 1. `credentials-file = PATH` from the config (an AWS shared-credentials INI file);
//! 2. `$CREDENTIALS_DIRECTORY/<store name>` (systemd `LoadCredential=offsite:/etc/...`),
//!    same INI format;
//! 3. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
//!
//! Secrets live in [`Secret`], whose `Debug` prints `***` and which has no `Display`, so a
//! stray `{:?}` of a config cannot leak them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A secret string (secret key, session token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; only the request signer should call this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An access key pair, optionally with a session token (temporary credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `aws_access_key_id`; not a secret, but kept out of messages anyway.
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: Secret,
    /// `aws_session_token`, for temporary credentials.
    pub session_token: Option<Secret>,
    /// Where they came from, for error messages ("credentials-file /etc/...").
    pub source: String,
}

/// Credentials that could not be found or read. No variant ever carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The credentials file could not be read.
    #[error("cannot read the credentials file {}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has no such `[profile]` section.
    #[error("the credentials file {} has no [{profile}] section", .path.display())]
    NoProfile { path: PathBuf, profile: String },
    /// A required key is missing from the profile.
    #[error("the credentials file {} lacks {key} in [{profile}]", .path.display())]
    MissingKey {
        path: PathBuf,
        profile: String,
        key: &'static str,
    },
    /// A line is not `key = value`, a section or a comment.
    #[error("the credentials file {} has an unreadable line {line}", .path.display())]
    Syntax { path: PathBuf, line: usize },
    /// Only one of the two environment variables is set.
    #[error("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set")]
    IncompleteEnv,
    /// No source had credentials.
    #[error(
        "no credentials for the store '{store}': set credentials-file, load a systemd credential \
         named '{store}', or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    None { store: String },
}

impl Credentials {
    /// Finds the credentials of store `store_name` (see the module docs for the order).
    /// `profile` is the INI section to use, normally `default`.
    pub fn load(
        credentials_file: Option<&Path>,
        store_name: &str,
        profile: &str,
    ) -> Result<Credentials, CredentialsError> {
        Self::load_with(credentials_file, store_name, profile, &|k| std::env::var(k).ok())
    }

    /// [`Credentials::load`] with the environment passed in (tests cannot set variables
    /// safely in a multi-threaded test binary).
    pub(crate) fn load_with(
        credentials_file: Option<&Path>,
        store_name: &str,
        profile: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, CredentialsError> {
        if let Some(path) = credentials_file {
            return Self::from_file(path, profile);
        }
        if let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
            let path = Path::new(&dir).join(store_name);
            if path.exists() {
                let mut c = Self::from_file(&path, profile)?;
                c.source = format!("the systemd credential '{store_name}'");
                return Ok(c);
            }
        }
        match Self::from_env_with(env)? {
            Some(c) => Ok(c),
            None => Err(CredentialsError::None {
                store: store_name.to_string(),
            }),
        }
    }

    /// Reads an AWS shared-credentials file (`[default]` with `aws_access_key_id`,
    /// `aws_secret_access_key`, optional `aws_session_token`).
    pub fn from_file(path: &Path, profile: &str) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_readable_by_others(path);
        let mut c = parse_ini(&text, profile, path)?;
        c.source = format!("credentials-file {}", path.display());
        Ok(c)
    }

    /// Reads `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`;
    /// `Ok(None)` when neither key variable is set.
    pub fn from_env() -> Result<Option<Credentials>, CredentialsError> {
        Self::from_env_with(&|k| std::env::var(k).ok())
    }

    fn from_env_with(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Credentials>, CredentialsError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: Secret(secret),
                session_token: get("AWS_SESSION_TOKEN").map(Secret),
                source: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".to_string(),
            })),
            (None, None) => Ok(None),
            _ => Err(CredentialsError::IncompleteEnv),
        }
    }
}

/// Parses the INI dialect of `~/.aws/credentials`: `[name]` (or `[profile name]`, as in
/// `~/.aws/config`) sections of `key = value`; `#` and `;` start comments.
pub(crate) fn parse_ini(text: &str, profile: &str, path: &Path) -> Result<Credentials, CredentialsError> {
    let mut in_profile = false;
    let mut seen = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = section.trim();
            let name = name.strip_prefix("profile ").map(str::trim).unwrap_or(name);
            in_profile = name == profile;
            seen |= in_profile;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(CredentialsError::Syntax {
                path: path.to_path_buf(),
                line: n + 1,
            });
        };
        if !in_profile {
            continue;
        }
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(Secret(v)),
            "aws_session_token" | "aws_security_token" => token = Some(Secret(v)),
            _ => {}
        }
    }
    if !seen {
        return Err(CredentialsError::NoProfile {
            path: path.to_path_buf(),
            profile: profile.to_string(),
        });
    }
    let missing = |key| CredentialsError::MissingKey {
        path: path.to_path_buf(),
        profile: profile.to_string(),
        key,
    };
    Ok(Credentials {
        access_key_id: id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("aws_access_key_id"))?,
        secret_access_key: secret
            .filter(|s| !s.0.is_empty())
            .ok_or_else(|| missing("aws_secret_access_key"))?,
        session_token: token.filter(|s| !s.0.is_empty()),
        source: String::new(),
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the credentials file is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// S3 Object Lock retention mode.
///
/// Coffer defaults to GOVERNANCE: it stops the threat object lock is for here — a
/// compromised or buggy host deleting or overwriting its own backups — as long as the
/// daemon's key lacks `s3:BypassGovernanceRetention`, while an administrator with a
/// privileged key can still remove objects locked by mistake (a typo of
/// `object-lock-days = 3650` under COMPLIANCE can only be undone by closing the AWS
/// account). COMPLIANCE is for regulated WORM storage and is an explicit opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Deletable before expiry only with `s3:BypassGovernanceRetention` (never used by Coffer).
    #[default]
    Governance,
    /// Not deletable by anyone before expiry.
    Compliance,
}

impl LockMode {
    /// The value of `x-amz-object-lock-mode`.
    pub fn as_header(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    pub(crate) fn from_header(s: &str) -> Option<LockMode> {
        match s {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// Object Lock applied to every object the store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// Retention in days from the start of the upload (`object-lock-days`).
    pub days: u32,
    /// Retention mode.
    pub mode: LockMode,
}

/// Retries of single requests (including each multipart part), with exponential backoff.
/// They are done by object_store's retry layer for its requests and by the same policy
/// in `raw` for ours; nothing else in this crate retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Attempts after the first one.
    pub max_retries: usize,
    /// First backoff; doubles each retry up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15),
            retry_timeout: Duration::from_secs(180),
        }
    }
}

/// Transfer tuning. The defaults keep the upload buffers at
/// `(concurrency + 1) × part_size` = 24 MiB (see [`Tuning::peak_buffer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Size of multipart parts; also the largest file sent with a single PUT.
    /// S3 needs at least 5 MiB; grown automatically for files of more than 9,000 parts.
    pub part_size: u64,
    /// Parts uploaded at the same time.
    pub concurrency: usize,
    /// Timeout of one request, including sending its body (one part).
    pub request_timeout: Duration,
    /// Timeout to open a connection.
    pub connect_timeout: Duration,
    /// Keys per LIST page (S3 caps at 1000; lower only for tests).
    pub list_page_size: usize,
    /// Request retries.
    pub retry: RetrySettings,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            part_size: 8 << 20,
            concurrency: 2,
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            list_page_size: 1000,
            retry: RetrySettings::default(),
        }
    }
}

/// S3 allows at most 10,000 parts; stay clearly below.
const MAX_PARTS: u64 = 9_000;
const MIN_PART: u64 = 5 << 20;
const MAX_PART: u64 = 5 << 30;

impl Tuning {
    /// The part size used for a file of `size` bytes: `part_size`, or larger when the
    /// file would need more than 9,000 parts (whole MiB, at most 5 GiB).
    pub fn part_size_for(&self, size: u64) -> u64 {
        let base = self.part_size.clamp(MIN_PART, MAX_PART);
        let needed = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
        base.max(needed).min(MAX_PART)
    }

    /// Largest amount of file data held in memory by one upload of `size` bytes:
    /// the parts in flight plus the one being read.
    pub fn peak_buffer(&self, size: u64) -> u64 {
        let part = self.part_size_for(size);
        if size <= part {
            size
        } else {
            part * (self.concurrency.max(1) as u64 + 1)
        }
    }
}

/// Everything needed to talk to one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The store's name from `[[store]] name`, used in every message.
    pub name: String,
    /// `https://s3.eu-central-1.amazonaws.com`, `http://127.0.0.1:8333`, ...
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix of this host, `{host}` already expanded, no leading or trailing `/`.
    pub prefix: String,
    /// Signing region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-hosted
    /// (`bucket.endpoint/key`); needed for IP endpoints and most self-hosted servers.
    pub path_style: bool,
    /// The access key.
    pub credentials: Credentials,
    /// Object Lock for every written object; `None` when `object-lock-days = 0`.
    pub object_lock: Option<ObjectLock>,
    /// Transfer tuning.
    pub tuning: Tuning,
}

impl S3Config {
    /// A config with default tuning.
    pub fn new(
        name: impl Into<String>,
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
        credentials: Credentials,
    ) -> S3Config {
        let endpoint = endpoint.into();
        S3Config {
            name: name.into(),
            path_style: default_path_style(&endpoint),
            endpoint,
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: "us-east-1".to_string(),
            credentials,
            object_lock: None,
            tuning: Tuning::default(),
        }
    }
}

/// Path style by default for endpoints virtual-hosted URLs cannot work with: an IP
/// address or `localhost`. Everything else (AWS, most providers) gets virtual-hosted.
pub fn default_path_style(endpoint: &str) -> bool {
    match url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(_) => true,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/etc/coffer/x.credentials";

    #[test]
    fn ini_default_profile() {
        let text = "# comment\n[other]\naws_access_key_id = NO\n\n[default]\naws_access_key_id = AKID\n\
                    aws_secret_access_key=SECRET/with=equals\n; note\naws_session_token = TOK\n";
        let c = parse_ini(text, "default", Path::new(P)).unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.secret_access_key.expose(), "SECRET/with=equals");
        assert_eq!(c.session_token.as_ref().map(Secret::expose), Some("TOK"));
        assert!(!format!("{c:?}").contains("SECRET"));
    }

    #[test]
    fn ini_profile_prefix_and_errors() {
        let c = parse_ini(
            "[profile b]\naws_access_key_id=A\naws_secret_access_key=S\n",
            "b",
            Path::new(P),
        )
        .unwrap();
        assert_eq!(c.access_key_id, "A");
        let e = parse_ini("[x]\naws_access_key_id=A\n", "default", Path::new(P)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the credentials file /etc/coffer/x.credentials has no [default] section"
        );
        let e = parse_ini("[default]\naws_access_key_id=A\n", "default", Path::new(P)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the credentials file /etc/coffer/x.credentials lacks aws_secret_access_key in [default]"
        );
        let e = parse_ini("[default]\nsecret\n", "default", Path::new(P)).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn credentials_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        std::fs::write(
            dir.path().join("offsite"),
            "[default]\naws_access_key_id=FROMDIR\naws_secret_access_key=s\n",
        )
        .unwrap();
        let file = dir.path().join("explicit");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id=FROMFILE\naws_secret_access_key=s\n",
        )
        .unwrap();
        let env_all = |k: &str| match k {
            "CREDENTIALS_DIRECTORY" => Some(d.clone()),
            "AWS_ACCESS_KEY_ID" => Some("FROMENV".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("s".to_string()),
            _ => None,
        };
        // 1. explicit file wins
        let c = Credentials::load_with(Some(&file), "offsite", "default", &env_all).unwrap();
        assert_eq!(c.access_key_id, "FROMFILE");
        assert_eq!(c.source, format!("credentials-file {}", file.display()));
        // 2. then $CREDENTIALS_DIRECTORY/<store>
        let c = Credentials::load_with(None, "offsite", "default", &env_all).unwrap();
        assert_eq!(c.access_key_id, "FROMDIR");
        assert_eq!(c.source, "the systemd credential 'offsite'");
        // 3. then the environment (no credential of that name in the directory)
        let c = Credentials::load_with(None, "other", "default", &env_all).unwrap();
        assert_eq!(c.access_key_id, "FROMENV");
        // nothing at all
        let e = Credentials::load_with(None, "offsite", "default", &|_| None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no credentials for the store 'offsite'"),
            "{e}"
        );
        let half = |k: &str| (k == "AWS_ACCESS_KEY_ID").then(|| "A".to_string());
        assert!(matches!(
            Credentials::load_with(None, "x", "default", &half),
            Err(CredentialsError::IncompleteEnv)
        ));
        let e = Credentials::from_file(&dir.path().join("missing"), "default").unwrap_err();
        assert!(e.to_string().starts_with("cannot read the credentials file"));
    }

    #[test]
    fn part_sizes_grow_for_huge_files() {
        let t = Tuning::default();
        assert_eq!(t.part_size_for(100 << 20), 8 << 20);
        assert_eq!(t.part_size_for(70 << 30), 8 << 20);
        let big = 200u64 << 30;
        let p = t.part_size_for(big);
        assert!(big.div_ceil(p) <= MAX_PARTS && p % (1 << 20) == 0, "{p}");
        assert_eq!(t.peak_buffer(1 << 30), 24 << 20);
        assert_eq!(t.peak_buffer(1000), 1000);
    }

    #[test]
    fn path_style_defaults() {
        assert!(default_path_style("http://127.0.0.1:8333"));
        assert!(default_path_style("http://localhost:9000"));
        assert!(default_path_style("http://[::1]:9000"));
        assert!(!default_path_style("https://s3.eu-central-1.amazonaws.com"));
    }
}
