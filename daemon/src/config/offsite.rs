//! Offsite keys: `[[store]]` tables, each job's `[job.offsite]`, and `[daemon]
//! host-name` (the `{host}` of store prefixes).
//!
//! ```toml
//! [daemon]
//! host-name = "web1"                    # default: the machine's host name
//!
//! [[store]]
//! name = "offsite"                      # [a-z0-9][a-z0-9_-]*, not "local"
//! kind = "s3"
//! endpoint = "https://s3.eu-central-1.amazonaws.com"
//! bucket = "backups"
//! prefix = "coffer/{host}"              # default
//! region = "us-east-1"                  # default
//! path-style = true                     # default: true for IP/localhost endpoints
//! credentials-file = "/etc/coffer/offsite.credentials"
//! object-lock-days = 0                  # > 0: Object Lock retention on every object
//! object-lock-mode = "governance"       # or "compliance"
//! retries = 8                           # retries of each request (transient errors)
//! copy-retry = "30s"                    # a failed copy is retried after this, doubling to 1h
//!
//! [[job]]
//! ...
//! [job.offsite]
//! stores = ["offsite"]
//! stale-after = "26h"                   # default: the job's stale-after
//! [job.offsite.retention]               # default: the job's retention
//! keep-daily = 7
//! ```
//!
//! Only the shape is checked here (URL, bucket name, prefix, numbers); whether the
//! credentials exist and the bucket answers is the store's business at run time, so a
//! missing credentials file or an unreachable store never stops the daemon or a local
//! backup. A job naming an unknown store is a config error naming the job.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, JobConfig, RawRetention, Validator};
use crate::policy::retention::Policy;

/// The location name of the local backup directory (not usable as a store name).
pub const LOCAL: &str = "local";

/// The prefix template when none is configured.
pub const DEFAULT_PREFIX: &str = "coffer/{host}";

/// Object Lock retention mode (`object-lock-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Deletable before expiry only with `s3:BypassGovernanceRetention` (never used by
    /// cofferd): stops a compromised host, leaves an administrator a way out.
    #[default]
    Governance,
    /// Not deletable by anyone before expiry.
    Compliance,
}

/// One validated `[[store]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    pub name: String,
    pub endpoint: String,
    pub bucket: String,
    /// The prefix as configured, with `{host}` (for the fleet view).
    pub prefix_template: String,
    /// This host's prefix: `{host}` expanded, no leading or trailing `/`.
    pub prefix: String,
    pub region: String,
    /// `None`: decided from the endpoint (path style for IPs and localhost).
    pub path_style: Option<bool>,
    pub credentials_file: Option<PathBuf>,
    /// 0: no Object Lock.
    pub object_lock_days: u32,
    pub object_lock_mode: LockMode,
    /// Retries of each request on transient errors.
    pub retries: usize,
    /// The first wait before a failed copy is tried again (doubling up to an hour).
    pub copy_retry: Duration,
}

/// A job's `[job.offsite]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsiteConfig {
    /// Stores every new backup is copied to, in order.
    pub stores: Vec<String>,
    /// Retention in the stores (default: the job's own policy).
    pub retention: Policy,
    /// Health warns when the newest backup is not in a store after this long.
    pub stale_after: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawStore {
    name: String,
    kind: Option<String>,
    endpoint: String,
    bucket: String,
    prefix: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    credentials_file: Option<PathBuf>,
    object_lock_days: Option<u32>,
    object_lock_mode: Option<String>,
    retries: Option<usize>,
    copy_retry: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawOffsite {
    #[serde(default)]
    stores: Vec<String>,
    stale_after: Option<String>,
    retention: Option<RawRetention>,
}

/// The machine's host name, if it is usable in a key.
pub fn system_host_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| is_valid_host_name(h))
}

/// Whether `name` can stand for `{host}` in keys: `[A-Za-z0-9][A-Za-z0-9._-]*`, at
/// most 253 bytes.
pub fn is_valid_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether `bucket` is an S3 bucket name: 3 to 63 of `[a-z0-9.-]`, starting and ending
/// with a letter or digit.
fn is_valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl Validator<'_> {
    /// `[daemon] host-name`, or the machine's host name.
    pub(super) fn host_name(&self, raw: Option<String>) -> Result<String, ConfigError> {
        match raw {
            Some(name) if is_valid_host_name(&name) => Ok(name),
            Some(name) => Err(self.err(
                "daemon.host-name",
                format!(
                    "'{name}' is not usable as a host name (letters, digits, '.', '_' and '-', starting with a letter or digit)"
                ),
            )),
            // Checked only where `{host}` is used (a store prefix).
            None => Ok(system_host_name().unwrap_or_default()),
        }
    }

    /// All `[[store]]` tables.
    pub(super) fn stores(&self, raw: Vec<RawStore>, host: &str) -> Result<Vec<StoreConfig>, ConfigError> {
        let mut stores: Vec<StoreConfig> = Vec::with_capacity(raw.len());
        for (i, raw) in raw.into_iter().enumerate() {
            let store = self.store(i, raw, host)?;
            if stores.iter().any(|s| s.name == store.name) {
                return Err(self.err(
                    format!("store[{i}].name"),
                    format!("store '{}' is defined twice", store.name),
                ));
            }
            stores.push(store);
        }
        Ok(stores)
    }

    fn store(&self, index: usize, raw: RawStore, host: &str) -> Result<StoreConfig, ConfigError> {
        let name = raw.name;
        if !coffer_common::ids::is_valid_job_name(&name) || name == LOCAL {
            return Err(self.err(
                format!("store[{index}].name"),
                format!(
                    "'{name}' is not a valid store name (lowercase letters, digits, '-' and '_', starting with a letter or digit; not \"local\")"
                ),
            ));
        }
        let key = |k: &str| format!("store '{name}': {k}");
        match raw.kind.as_deref().unwrap_or("s3") {
            "s3" => {}
            other => {
                return Err(self.err(
                    key("kind"),
                    format!("'{other}' is not a store kind; use \"s3\" (any S3-compatible service)"),
                ));
            }
        }
        let endpoint = self.endpoint(&key("endpoint"), &raw.endpoint)?;
        if !is_valid_bucket(&raw.bucket) {
            return Err(self.err(
                key("bucket"),
                format!(
                    "'{}' is not a valid bucket name (3 to 63 of a-z, 0-9, '.' and '-')",
                    raw.bucket
                ),
            ));
        }
        let prefix_template = raw.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        let prefix = self.prefix(&key("prefix"), &prefix_template, host)?;
        let region = raw.region.unwrap_or_else(|| "us-east-1".to_owned());
        if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(self.err(key("region"), format!("'{region}' is not a region name")));
        }
        let credentials_file = match raw.credentials_file {
            Some(path) => Some(self.absolute(&key("credentials-file"), &path)?),
            None => None,
        };
        let object_lock_days = raw.object_lock_days.unwrap_or(0);
        if object_lock_days > 36_500 {
            return Err(self.err(
                key("object-lock-days"),
                format!("{object_lock_days} is more than 100 years; use 0 (off) to 36500"),
            ));
        }
        let object_lock_mode = match raw.object_lock_mode.as_deref().unwrap_or("governance") {
            "governance" => LockMode::Governance,
            "compliance" => LockMode::Compliance,
            other => {
                return Err(self.err(
                    key("object-lock-mode"),
                    format!("'{other}' is not a lock mode; use \"governance\" or \"compliance\""),
                ));
            }
        };
        let retries = raw.retries.unwrap_or(8);
        if retries > 100 {
            return Err(self.err(key("retries"), format!("{retries} is too many; use 0 to 100")));
        }
        let copy_retry = self.duration(&key("copy-retry"), raw.copy_retry.as_deref(), "30s")?;
        if copy_retry.is_zero() {
            return Err(self.err(key("copy-retry"), "must be longer than 0s"));
        }
        Ok(StoreConfig {
            name,
            endpoint,
            bucket: raw.bucket,
            prefix_template,
            prefix,
            region,
            path_style: raw.path_style,
            credentials_file,
            object_lock_days,
            object_lock_mode,
            retries,
            copy_retry,
        })
    }

    /// An `http://` or `https://` URL with a host and nothing secret in it.
    fn endpoint(&self, key: &str, text: &str) -> Result<String, ConfigError> {
        let bad = |why: &str| self.err(key, format!("'{text}' {why}"));
        let url = url::Url::parse(text).map_err(|_| bad("is not a URL (e.g. https://s3.example.com)"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must start with http:// or https://"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Never echo what may be a secret.
            return Err(self.err(key, "must not contain a user or password; use credentials-file"));
        }
        if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must be scheme://host[:port][/path]"));
        }
        Ok(text.trim_end_matches('/').to_owned())
    }

    /// The prefix template, expanded for `host`: relative, plain segments.
    fn prefix(&self, key: &str, template: &str, host: &str) -> Result<String, ConfigError> {
        if template.contains("{host}") && host.is_empty() {
            return Err(self.err(
                key,
                "uses {host}, but this machine's host name cannot be used in a key; set [daemon] host-name",
            ));
        }
        let expanded = template.replace("{host}", host);
        let prefix = expanded.trim_matches('/');
        let plain = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !prefix.is_empty() && !prefix.split('/').all(plain) {
            return Err(self.err(
                key,
                format!(
                    "'{template}' must be a relative path of letters, digits, '.', '_' and '-' (with an optional {{host}})"
                ),
            ));
        }
        Ok(prefix.to_owned())
    }

    /// A job's `[job.offsite]`; store names are checked against `stores`.
    pub(super) fn offsite(
        &self,
        job: &str,
        raw: Option<RawOffsite>,
        stores: &[StoreConfig],
        own: (&Policy, Duration),
    ) -> Result<Option<OffsiteConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let key = |k: &str| format!("job '{job}': offsite.{k}");
        let mut names: Vec<String> = Vec::with_capacity(raw.stores.len());
        for name in raw.stores {
            if !stores.iter().any(|s| s.name == name) {
                return Err(self.err(
                    key("stores"),
                    format!("job '{job}' names the store '{name}', which is not defined by any [[store]]"),
                ));
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let retention = match raw.retention {
            Some(r) => self.retention(&key("retention"), r)?,
            None => own.0.clone(),
        };
        let stale_after = match raw.stale_after {
            Some(text) => self.duration(&key("stale-after"), Some(&text), "26h")?,
            None => own.1,
        };
        Ok(Some(OffsiteConfig {
            stores: names,
            retention,
            stale_after,
        }))
    }
}

impl JobConfig {
    /// The stores this job copies to (empty without `[job.offsite]`).
    pub fn offsite_stores(&self) -> &[String] {
        self.offsite.as_ref().map_or(&[], |o| o.stores.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/coffer/cofferd.toml"), text)
    }

    const STORE: &str =
        "[[store]]\nname = \"offsite\"\nendpoint = \"http://127.0.0.1:8333\"\nbucket = \"backups\"\n";
    const JOB: &str = "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\n[job.retention]\nkeep-last = 3\n";

    #[test]
    fn stores_and_offsite_get_defaults() {
        let c = parse(&format!(
            "[daemon]\nhost-name = \"web1\"\n{STORE}{JOB}[job.offsite]\nstores = [\"offsite\"]\n"
        ))
        .unwrap();
        let s = &c.stores[0];
        assert_eq!(s.prefix_template, "coffer/{host}");
        assert_eq!(s.prefix, "coffer/web1");
        assert_eq!(s.region, "us-east-1");
        assert_eq!(
            (s.object_lock_days, s.object_lock_mode),
            (0, LockMode::Governance)
        );
        assert_eq!((s.retries, s.copy_retry), (8, Duration::from_secs(30)));
        let job = &c.jobs[0];
        let offsite = job.offsite.as_ref().unwrap();
        assert_eq!(job.offsite_stores(), ["offsite"]);
        assert_eq!(offsite.retention.keep_last, 3, "the job's own policy by default");
        assert_eq!(offsite.stale_after, job.stale_after);

        let c = parse(&format!(
            "{STORE}{JOB}[job.offsite]\nstores = [\"offsite\"]\nstale-after = \"2h\"\n[job.offsite.retention]\nkeep-daily = 7\n"
        ))
        .unwrap();
        let offsite = c.jobs[0].offsite.as_ref().unwrap();
        assert_eq!(
            (offsite.retention.keep_last, offsite.retention.keep_daily),
            (0, 7)
        );
        assert_eq!(offsite.stale_after, Duration::from_secs(7200));
        assert!(parse(JOB).unwrap().jobs[0].offsite_stores().is_empty());
    }

    #[test]
    fn errors_name_the_key_and_never_echo_secrets() {
        let store = |extra: &str| format!("[daemon]\nhost-name = \"h\"\n{STORE}{extra}\n");
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{STORE}{JOB}[job.offsite]\nstores = [\"elsewhere\"]\n"),
                "job 'app' names the store 'elsewhere', which is not defined",
            ),
            (
                store("kind = \"ftp\""),
                "store 'offsite': kind: 'ftp' is not a store kind",
            ),
            (store("region = \"\""), "store 'offsite': region"),
            (
                store("prefix = \"../x\""),
                "store 'offsite': prefix: '../x' must be a relative path",
            ),
            (
                store("object-lock-days = 40000"),
                "object-lock-days: 40000 is more than 100 years",
            ),
            (
                store("object-lock-mode = \"strict\""),
                "'strict' is not a lock mode",
            ),
            (
                store("credentials-file = \"rel\""),
                "credentials-file: 'rel' must be an absolute path",
            ),
            (store("copy-retry = \"0s\""), "copy-retry: must be longer than 0s"),
            (store("secret = \"x\""), "unknown field `secret`"),
            (format!("{STORE}{STORE}"), "store 'offsite' is defined twice"),
            (
                "[[store]]\nname = \"local\"\nendpoint = \"http://h\"\nbucket = \"bbb\"\n".to_owned(),
                "'local' is not a valid store name",
            ),
            (
                "[[store]]\nname = \"s\"\nendpoint = \"http://h\"\nbucket = \"B_b\"\n".to_owned(),
                "'B_b' is not a valid bucket name",
            ),
            (
                "[[store]]\nname = \"s\"\nendpoint = \"ftp://h\"\nbucket = \"bbb\"\n".to_owned(),
                "must start with http:// or https://",
            ),
            (
                "[daemon]\nhost-name = \"a/b\"\n".to_owned(),
                "daemon.host-name: 'a/b' is not usable",
            ),
        ];
        for (text, want) in &cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "for {text:?}: got {err:?}, want {want:?}");
        }
        let err = parse("[[store]]\nname = \"s\"\nendpoint = \"https://AKID:hunter2@h\"\nbucket = \"bbb\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not contain a user or password"), "{err}");
        assert!(!err.contains("hunter2") && !err.contains("AKID"), "{err}");
    }

    #[test]
    fn the_example_config_has_a_store() {
        let text = include_str!("../../../examples/cofferd.toml");
        let c = parse(text).unwrap();
        let store = c.store("offsite").unwrap();
        assert_eq!(store.bucket, "example-backups");
        assert_eq!(c.jobs[0].offsite_stores(), ["offsite"]);
        assert_eq!(c.jobs[0].offsite.as_ref().unwrap().retention.keep_monthly, 24);
    }

    #[test]
    fn host_names() {
        for good in ["web1", "db-2.example.org", "A_b"] {
            assert!(is_valid_host_name(good), "{good}");
        }
        for bad in ["", "-x", "a/b", "a b", "ä"] {
            assert!(!is_valid_host_name(bad), "{bad}");
        }
    }
}
