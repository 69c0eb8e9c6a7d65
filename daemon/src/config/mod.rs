//! Loading and validating `cofferd.toml`.
//!
//! The file is parsed into `Raw*` structs (serde, kebab-case, unknown keys rejected),
//! then validated into the typed [`Config`]: durations and sizes parsed, cron
//! expressions and time zones checked, job names unique and well-formed, octal modes
//! read. The rest of the daemon only ever sees a valid `Config`. Every error names the
//! file, the key and what is wrong.
//!
//! A job's database is deliberately *not* checked here: a missing or invalid database
//! must not stop the daemon from starting; its runs fail and its health says why.
//!
//! Areas with keys of their own validate them in a file of their own:
//! [`database`] (the `postgres` and `mariadb` sources).

pub mod database;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod drill;
pub mod encryption;
mod export;

pub use database::{MariadbConfig, PgUri, PostgresConfig, ServerKind};
pub use drill::DrillConfig;
pub use encryption::EncryptionConfig;

use crate::policy::retention::Policy;
use crate::policy::schedule::Schedule;
use crate::selective::profile::{ExportProfile, RawExportProfile};

pub mod offsite;

pub use offsite::{OffsiteConfig, StoreConfig};

/// Where the config is read from when neither `--config` nor `$COFFER_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "/etc/coffer/cofferd.toml";

/// A schedule value that turns scheduling off for a job (backups on demand only).
pub const MANUAL_SCHEDULE: &str = "manual";

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub jobs: Vec<JobConfig>,
    /// `[[store]]`: offsite stores.
    pub stores: Vec<StoreConfig>,
}

/// `[daemon]`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    pub admin_uids: Vec<u32>,
    pub admin_groups: Vec<String>,
    pub read_uids: Vec<u32>,
    pub read_groups: Vec<String>,
    pub log_format: LogFormat,
    pub max_concurrent_runs: usize,
    pub shutdown_grace: Duration,
    pub max_upload_size: u64,
    /// `host-name`: this host in store prefixes (`{host}`) and manifests.
    pub host_name: String,
}

/// How an SQLite database is snapshotted (`snapshot-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMethod {
    /// `VACUUM INTO` a file in staging, then archive that file (the default).
    #[default]
    VacuumInto,
    /// Stream the pages of one read transaction into the archive.
    PageStream,
}

impl SnapshotMethod {
    /// The config value and the name recorded in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMethod::VacuumInto => "vacuum-into",
            SnapshotMethod::PageStream => "page-stream",
        }
    }

    /// Parses the config value.
    pub fn parse(text: &str) -> Option<SnapshotMethod> {
        [SnapshotMethod::VacuumInto, SnapshotMethod::PageStream]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// Where a job's database is, by kind.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// `database = "/path/app.db"`.
    Sqlite(SqliteConfig),
    /// `postgres = "<libpq URI>"`.
    Postgres(PostgresConfig),
    /// `mariadb = "<database>"`.
    Mariadb(MariadbConfig),
}

impl SourceConfig {
    /// The source kind's name, as manifests record it (`sqlite`, `postgres`, `mariadb`).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Sqlite(_) => "sqlite",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mariadb(_) => "mariadb",
        }
    }

    /// What the job backs up, for listings: the SQLite path, the libpq URI (it holds
    /// no password) or the MariaDB database name.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Sqlite(s) => s.path.display().to_string(),
            SourceConfig::Postgres(p) => p.uri.text(),
            SourceConfig::Mariadb(m) => m.database.clone(),
        }
    }

    /// The database name on the server, for the server kinds.
    pub fn database_name(&self) -> Option<&str> {
        match self {
            SourceConfig::Sqlite(_) => None,
            SourceConfig::Postgres(p) => Some(p.uri.database()),
            SourceConfig::Mariadb(m) => Some(&m.database),
        }
    }
}

/// An SQLite source.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The live database file (its name is valid UTF-8: it becomes `db/<name>`).
    pub path: PathBuf,
    /// How long the snapshot waits for the app's write lock before failing.
    pub busy_timeout: Duration,
    pub snapshot_method: SnapshotMethod,
}

/// One `[[job]]`.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub source: SourceConfig,
    pub media: Vec<PathBuf>,
    /// What is left out of the media on purpose.
    pub exclude: crate::policy::exclude::Exclude,
    /// `None` when the job runs on demand only.
    pub schedule: Option<Schedule>,
    pub timezone: chrono_tz::Tz,
    pub compression_level: i32,
    pub verify_after_backup: bool,
    pub min_free_space: u64,
    pub stale_after: Duration,
    pub catch_up: bool,
    pub retention: Policy,
    pub hooks: Hooks,
    /// Restore drills (`[job.drill]`).
    pub drill: DrillConfig,
    /// `[[job.export]]`: selective export profiles (syntax checked).
    pub exports: Vec<ExportProfile>,
    /// `[job.encryption]`: archives are `<id>.tar.zst.age` when set.
    pub encryption: Option<EncryptionConfig>,
    /// `[job.offsite]`, if the job is copied to stores.
    pub offsite: Option<OffsiteConfig>,
}

/// `[job.hooks]`: argv arrays run without a shell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub before_backup: Vec<String>,
    pub after_backup: Vec<String>,
    pub on_failure: Vec<String>,
    pub before_restore: Vec<String>,
    pub after_restore: Vec<String>,
    pub timeout: Duration,
}

impl JobConfig {
    /// The SQLite source, for jobs that have one.
    pub fn sqlite(&self) -> Option<&SqliteConfig> {
        match &self.source {
            SourceConfig::Sqlite(c) => Some(c),
            _ => None,
        }
    }
}

impl Config {
    /// Looks a job up by name.
    pub fn job(&self, name: &str) -> Option<&JobConfig> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Looks a store up by name.
    pub fn store(&self, name: &str) -> Option<&StoreConfig> {
        self.stores.iter().find(|s| s.name == name)
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (which only appears in messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned() + &location(text, e.span()),
        })?;
        Validator { path }.config(raw)
    }
}

/// " (line N)" for a toml error span.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    job: Vec<RawJob>,
    #[serde(default)]
    store: Vec<offsite::RawStore>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawDaemon {
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    backup_dir: Option<PathBuf>,
    socket_mode: Option<String>,
    socket_group: Option<String>,
    #[serde(default)]
    admin_uids: Vec<u32>,
    #[serde(default)]
    admin_groups: Vec<String>,
    #[serde(default)]
    read_uids: Vec<u32>,
    #[serde(default)]
    read_groups: Vec<String>,
    log_format: Option<String>,
    max_concurrent_runs: Option<usize>,
    shutdown_grace: Option<String>,
    max_upload_size: Option<String>,
    host_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawJob {
    name: String,
    database: Option<PathBuf>,
    postgres: Option<String>,
    postgres_passfile: Option<PathBuf>,
    pg_bin_dir: Option<PathBuf>,
    mariadb: Option<String>,
    mariadb_options_file: Option<PathBuf>,
    mariadb_bin_dir: Option<PathBuf>,
    allow_non_transactional: Option<bool>,
    #[serde(default)]
    media: Vec<PathBuf>,
    #[serde(default)]
    exclude: Vec<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    compression_level: Option<i32>,
    verify_after_backup: Option<bool>,
    min_free_space: Option<String>,
    stale_after: Option<String>,
    catch_up: Option<bool>,
    busy_timeout: Option<String>,
    snapshot_method: Option<String>,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    drill: drill::RawDrill,
    #[serde(default)]
    export: Vec<RawExportProfile>,
    encryption: Option<encryption::RawEncryption>,
    offsite: Option<offsite::RawOffsite>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<u32>,
    keep_within: Option<String>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawHooks {
    #[serde(default)]
    before_backup: Vec<String>,
    #[serde(default)]
    after_backup: Vec<String>,
    #[serde(default)]
    on_failure: Vec<String>,
    #[serde(default)]
    before_restore: Vec<String>,
    #[serde(default)]
    after_restore: Vec<String>,
    timeout: Option<String>,
}

/// Turns raw values into typed ones, naming the key on every error.
struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn duration(&self, key: &str, value: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
        let text = value.unwrap_or(default);
        humantime::parse_duration(text).map_err(|e| {
            self.err(
                key,
                format!("'{text}' is not a duration ({e}); use e.g. 30s, 5m, 26h, 30d"),
            )
        })
    }

    fn size(&self, key: &str, value: Option<&str>, default: &str) -> Result<u64, ConfigError> {
        let text = value.unwrap_or(default);
        parse_size(text).ok_or_else(|| {
            self.err(
                key,
                format!("'{text}' is not a size; use e.g. 0B, 512MiB, 1GiB, 10GB"),
            )
        })
    }

    fn absolute(&self, key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
        if path.is_absolute() {
            Ok(path.to_owned())
        } else {
            Err(self.err(key, format!("'{}' must be an absolute path", path.display())))
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let daemon = self.daemon(raw.daemon)?;
        let stores = self.stores(raw.store, &daemon.host_name)?;
        let mut names = HashSet::new();
        let mut jobs = Vec::with_capacity(raw.job.len());
        for (i, job) in raw.job.into_iter().enumerate() {
            let job = self.job(i, job, &stores)?;
            if !names.insert(job.name.clone()) {
                return Err(self.err(
                    format!("job[{i}].name"),
                    format!("job '{}' is defined twice", job.name),
                ));
            }
            jobs.push(job);
        }
        Ok(Config {
            path: self.path.to_owned(),
            daemon,
            jobs,
            stores,
        })
    }

    fn daemon(&self, raw: RawDaemon) -> Result<DaemonConfig, ConfigError> {
        let state_dir = self.absolute(
            "daemon.state-dir",
            raw.state_dir.as_deref().unwrap_or(Path::new("/var/lib/coffer")),
        )?;
        let backup_dir = match raw.backup_dir {
            Some(dir) => self.absolute("daemon.backup-dir", &dir)?,
            None => state_dir.join("backups"),
        };
        let socket = self.absolute(
            "daemon.socket",
            raw.socket
                .as_deref()
                .unwrap_or(Path::new(coffer_common::client::DEFAULT_SOCKET)),
        )?;
        let mode_text = raw.socket_mode.as_deref().unwrap_or("0660");
        let socket_mode = u32::from_str_radix(mode_text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                self.err(
                    "daemon.socket-mode",
                    format!("'{mode_text}' is not an octal file mode like \"0660\""),
                )
            })?;
        let log_format = match raw.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(self.err(
                    "daemon.log-format",
                    format!("'{other}' is not a log format; use \"text\" or \"json\""),
                ));
            }
        };
        let max_concurrent_runs = raw.max_concurrent_runs.unwrap_or(1);
        if max_concurrent_runs == 0 {
            return Err(self.err("daemon.max-concurrent-runs", "must be at least 1"));
        }
        Ok(DaemonConfig {
            socket,
            state_dir,
            backup_dir,
            socket_mode,
            socket_group: raw.socket_group.filter(|g| !g.is_empty()),
            admin_uids: raw.admin_uids,
            admin_groups: raw.admin_groups,
            read_uids: raw.read_uids,
            read_groups: raw.read_groups,
            log_format,
            max_concurrent_runs,
            shutdown_grace: self.duration("daemon.shutdown-grace", raw.shutdown_grace.as_deref(), "30s")?,
            max_upload_size: self.size("daemon.max-upload-size", raw.max_upload_size.as_deref(), "64GiB")?,
            host_name: self.host_name(raw.host_name)?,
        })
    }

    fn retention(&self, key: &str, raw: RawRetention) -> Result<Policy, ConfigError> {
        let r = raw;
        Ok(Policy {
            keep_last: r.keep_last.unwrap_or(0),
            keep_within: match r.keep_within.as_deref() {
                Some(text) => Some(self.duration(&format!("{key}.keep-within"), Some(text), "0s")?)
                    .filter(|d| !d.is_zero()),
                None => None,
            },
            keep_hourly: r.keep_hourly.unwrap_or(0),
            keep_daily: r.keep_daily.unwrap_or(0),
            keep_weekly: r.keep_weekly.unwrap_or(0),
            keep_monthly: r.keep_monthly.unwrap_or(0),
            keep_yearly: r.keep_yearly.unwrap_or(0),
        })
    }

    fn hooks(&self, key: &str, raw: RawHooks) -> Result<Hooks, ConfigError> {
        let h = raw;
        Ok(Hooks {
            timeout: self.duration(&format!("{key}.timeout"), h.timeout.as_deref(), "5m")?,
            before_backup: h.before_backup,
            after_backup: h.after_backup,
            on_failure: h.on_failure,
            before_restore: h.before_restore,
            after_restore: h.after_restore,
        })
    }

    /// The SQLite source of a job: `database`, `busy-timeout`, `snapshot-method` (for an
    /// encrypted job `page-stream`, which writes no plaintext copy).
    fn sqlite(
        &self,
        key: &dyn Fn(&str) -> String,
        raw: &RawJob,
        encrypted: bool,
    ) -> Result<SourceConfig, ConfigError> {
        let database = self.absolute(&key("database"), raw.database.as_deref().unwrap_or(Path::new("")))?;
        match database.file_name().map(|n| n.to_str()) {
            None => return Err(self.err(key("database"), "must name a database file")),
            // The name becomes the archive entry `db/<name>`, which must be UTF-8. (TOML
            // strings are UTF-8, so this guards other ways of building a config.)
            Some(None) => {
                return Err(self.err(
                    key("database"),
                    format!(
                        "the file name of '{}' is not valid UTF-8; rename the database or link it under a UTF-8 name",
                        database.display()
                    ),
                ));
            }
            Some(Some(_)) => {}
        }
        let busy_timeout = self.duration(&key("busy-timeout"), raw.busy_timeout.as_deref(), "10s")?;
        if busy_timeout > Duration::from_secs(i32::MAX as u64 / 1000) {
            return Err(self.err(key("busy-timeout"), "is too long"));
        }
        let default_method = match encrypted {
            true => SnapshotMethod::PageStream,
            false => SnapshotMethod::VacuumInto,
        };
        let method_text = raw.snapshot_method.as_deref().unwrap_or(default_method.as_str());
        let snapshot_method = SnapshotMethod::parse(method_text).ok_or_else(|| {
            self.err(
                key("snapshot-method"),
                format!("'{method_text}' is not a snapshot method; use \"vacuum-into\" or \"page-stream\""),
            )
        })?;
        if encrypted && snapshot_method == SnapshotMethod::VacuumInto {
            return Err(self.err(key("snapshot-method"), encryption::VACUUM_INTO_REFUSED));
        }
        Ok(SourceConfig::Sqlite(SqliteConfig {
            path: database,
            busy_timeout,
            snapshot_method,
        }))
    }

    /// The job's source: exactly one of `database`, `postgres`, `mariadb`.
    fn source(
        &self,
        key: &dyn Fn(&str) -> String,
        raw: &RawJob,
        encrypted: bool,
    ) -> Result<SourceConfig, ConfigError> {
        let server = database::RawServerKeys {
            postgres: raw.postgres.as_deref(),
            postgres_passfile: raw.postgres_passfile.as_deref(),
            pg_bin_dir: raw.pg_bin_dir.as_deref(),
            mariadb: raw.mariadb.as_deref(),
            mariadb_options_file: raw.mariadb_options_file.as_deref(),
            mariadb_bin_dir: raw.mariadb_bin_dir.as_deref(),
            allow_non_transactional: raw.allow_non_transactional,
        };
        let keys = database::SourceKeys {
            database: raw.database.is_some(),
            busy_timeout: raw.busy_timeout.is_some(),
            snapshot_method: raw.snapshot_method.is_some(),
            server: &server,
        };
        let err = |(k, message): (&str, String)| self.err(key(k), message);
        keys.check().map_err(err)?;
        if encrypted && (server.postgres.is_some() || server.mariadb.is_some()) {
            // Their dumps are spooled in staging as plaintext: not yet.
            return Err(self.err(
                key("encryption"),
                "encryption is for SQLite jobs so far; a database server's dump would be spooled unencrypted",
            ));
        }
        if server.postgres.is_some() {
            database::postgres(&server)
                .map(SourceConfig::Postgres)
                .map_err(err)
        } else if server.mariadb.is_some() {
            database::mariadb(&server).map(SourceConfig::Mariadb).map_err(err)
        } else {
            self.sqlite(key, raw, encrypted)
        }
    }

    fn job(&self, index: usize, mut raw: RawJob, stores: &[StoreConfig]) -> Result<JobConfig, ConfigError> {
        let name = raw.name.clone();
        if !coffer_common::ids::is_valid_job_name(&name) {
            return Err(self.err(
                format!("job[{index}].name"),
                format!(
                    "'{name}' is not a valid job name (lowercase letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters)"
                ),
            ));
        }
        let key = |k: &str| format!("job '{name}': {k}");
        let encryption = self.encryption(&name, raw.encryption.take())?;
        let source = self.source(&key, &raw, encryption.is_some())?;
        let mut media = Vec::with_capacity(raw.media.len());
        for dir in &raw.media {
            media.push(self.absolute(&key("media"), dir)?);
        }
        let timezone_name = raw.timezone.as_deref().unwrap_or("UTC");
        let timezone: chrono_tz::Tz = timezone_name.parse().map_err(|_| {
            self.err(
                key("timezone"),
                format!("'{timezone_name}' is not an IANA time zone name (e.g. UTC, Europe/Berlin)"),
            )
        })?;
        let schedule_text = raw.schedule.as_deref().unwrap_or("@daily").trim();
        let schedule = if schedule_text == MANUAL_SCHEDULE {
            None
        } else {
            Some(
                Schedule::parse(schedule_text, timezone_name)
                    .map_err(|e| self.err(key("schedule"), e.to_string()))?,
            )
        };
        let compression_level = raw.compression_level.unwrap_or(3);
        if !(1..=19).contains(&compression_level) {
            return Err(self.err(
                key("compression-level"),
                format!("{compression_level} is out of range; use 1 (fastest) to 19 (smallest)"),
            ));
        }
        let retention = self.retention(&key("retention"), raw.retention)?;
        let hooks = self.hooks(&key("hooks"), raw.hooks)?;
        let exclude =
            crate::policy::exclude::Exclude::new(&raw.exclude).map_err(|e| self.err(key("exclude"), e))?;
        let drill = self.drill(&name, raw.drill, timezone_name)?;
        let exports = self.exports(&key, &raw.export)?;
        let stale_after = self.duration(&key("stale-after"), raw.stale_after.as_deref(), "26h")?;
        let offsite = self.offsite(&name, raw.offsite, stores, (&retention, stale_after))?;
        Ok(JobConfig {
            drill,
            source,
            media,
            exclude,
            schedule,
            timezone,
            compression_level,
            verify_after_backup: raw.verify_after_backup.unwrap_or(true),
            min_free_space: self.size(&key("min-free-space"), raw.min_free_space.as_deref(), "1GiB")?,
            stale_after,
            catch_up: raw.catch_up.unwrap_or(true),
            retention,
            hooks,
            exports,
            encryption,
            offsite,
            name,
        })
    }
}

/// Parses sizes like `0`, `512B`, `512MiB`, `1GiB`, `10GB`, `1.5 GiB` (case-insensitive
/// units; KiB/MiB/... are powers of 1024, KB/MB/... of 1000).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000_u64.pow(2),
        "mib" => 1 << 20,
        "g" | "gb" => 1000_u64.pow(3),
        "gib" => 1 << 30,
        "t" | "tb" => 1000_u64.pow(4),
        "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = number * factor as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/coffer/cofferd.toml"), text)
    }

    const MINIMAL: &str = r#"
[[job]]
name = "app"
database = "/var/lib/app/app.db"
"#;

    #[test]
    fn encryption_is_refused_on_database_server_jobs() {
        let err = parse(
            "[[job]]\nname = \"shop\"\npostgres = \"postgresql:///shop?host=/run/postgresql\"\n[job.encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("job 'shop': encryption: encryption is for SQLite jobs so far"),
            "{err}"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.daemon.socket, Path::new("/run/coffer/cofferd.sock"));
        assert_eq!(c.daemon.backup_dir, Path::new("/var/lib/coffer/backups"));
        assert_eq!(c.daemon.socket_mode, 0o660);
        assert_eq!(c.daemon.max_concurrent_runs, 1);
        let job = &c.jobs[0];
        assert_eq!(job.compression_level, 3);
        assert_eq!(job.min_free_space, 1 << 30);
        assert_eq!(job.stale_after, Duration::from_secs(26 * 3600));
        assert_eq!(job.schedule.as_ref().map(|s| s.expr()), Some("@daily"));
        assert!(job.retention.is_empty());
    }

    #[test]
    fn full_example_parses() {
        let text = include_str!("../../../examples/cofferd.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.jobs.len(), 1);
        let job = &c.jobs[0];
        assert_eq!(job.retention.keep_daily, 7);
        assert_eq!(job.retention.keep_within, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(job.hooks.timeout, Duration::from_secs(300));
    }

    /// Each bad input, and a piece of the one-sentence error it must give.
    #[test]
    fn errors_name_key_and_problem() {
        let cases: &[(&str, &str)] = &[
            ("[daemon]\nsokcet = \"/x\"\n", "unknown field `sokcet`"),
            (
                "[daemon]\nsocket = \"rel/x.sock\"\n",
                "daemon.socket: 'rel/x.sock' must be an absolute path",
            ),
            (
                "[daemon]\nsocket-mode = \"rw\"\n",
                "daemon.socket-mode: 'rw' is not an octal",
            ),
            (
                "[daemon]\nshutdown-grace = \"soon\"\n",
                "daemon.shutdown-grace: 'soon' is not a duration",
            ),
            ("[daemon]\nlog-format = \"xml\"\n", "daemon.log-format"),
            ("[daemon]\nmax-concurrent-runs = 0\n", "must be at least 1"),
            (
                "[[job]]\nname = \"App\"\ndatabase = \"/a.db\"\n",
                "'App' is not a valid job name",
            ),
            (
                "[[job]]\nname = \"app\"\n",
                "job 'app': database: the job needs exactly one of database (SQLite), postgres or mariadb; it has none",
            ),
            (
                "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\npostgres = \"postgresql:///x\"\n",
                "it has database and postgres",
            ),
            (
                "[[job]]\nname = \"app\"\npostgres = \"postgresql://u:hunter2@h/x\"\n",
                "job 'app': postgres: the URI contains a password",
            ),
            (
                "[[job]]\nname = \"app\"\nmariadb = \"shop\"\nsnapshot-method = \"page-stream\"\n",
                "job 'app': snapshot-method: only applies to a job with database = ..., and this job has mariadb",
            ),
            (
                "[[job]]\nname = \"app\"\npostgres = \"postgresql:///x\"\nallow-non-transactional = true\n",
                "job 'app': allow-non-transactional: only applies to a job with mariadb",
            ),
            (
                "[[job]]\nname = \"app\"\npostgres = \"postgresql:///x\"\npg-bin-dir = \"bin\"\n",
                "job 'app': pg-bin-dir: 'bin' must be an absolute path",
            ),
            (
                "[[job]]\nname = \"app\"\nmariadb = \"-x\"\n",
                "job 'app': mariadb: the database name '-x' starts with '-'",
            ),
            (
                "[[job]]\nname = \"app\"\ndatabase = \"a.db\"\n",
                "job 'app': database: 'a.db' must be an absolute path",
            ),
            (
                "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\nmin-free-space = \"lots\"\n",
                "job 'app': min-free-space: 'lots' is not a size",
            ),
            (
                "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\ntimezone = \"Mars/Base\"\n",
                "job 'app': timezone: 'Mars/Base' is not an IANA",
            ),
            (
                "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\ncompression-level = 40\n",
                "compression-level: 40 is out of range",
            ),
            (
                "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\n[job.retention]\nkeep-dayly = 3\n",
                "unknown field `keep-dayly`",
            ),
            (
                "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\n[[job]]\nname = \"app\"\ndatabase = \"/b.db\"\n",
                "job 'app' is defined twice",
            ),
            (
                "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\nmedia = \"/x\"\n",
                "invalid type",
            ),
            ("[[job]\n", "is not valid"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "for {text:?}: got {err:?}, want {want:?}");
            assert!(err.contains("/etc/coffer/cofferd.toml"), "{err}");
            assert!(!err.contains("hunter2"), "a password was echoed: {err}");
        }
    }

    #[test]
    fn database_server_jobs() {
        let c = parse(
            "[[job]]\nname = \"shop\"\npostgres = \"postgresql:///shop?host=/run/postgresql\"\n\
             postgres-passfile = \"/etc/coffer/pgpass\"\npg-bin-dir = \"/usr/lib/postgresql/15/bin\"\n\
             [[job]]\nname = \"cms\"\nmariadb = \"cms\"\nmariadb-options-file = \"/etc/coffer/my.cnf\"\n\
             allow-non-transactional = true\n",
        )
        .unwrap();
        match &c.jobs[0].source {
            SourceConfig::Postgres(p) => {
                assert_eq!(p.uri.database(), "shop");
                assert_eq!(p.passfile.as_deref(), Some(Path::new("/etc/coffer/pgpass")));
                assert_eq!(
                    p.bin_dir.as_deref(),
                    Some(Path::new("/usr/lib/postgresql/15/bin"))
                );
            }
            other => panic!("not a postgres source: {other:?}"),
        }
        assert_eq!(
            c.jobs[0].source.describe(),
            "postgresql:///shop?host=/run/postgresql"
        );
        match &c.jobs[1].source {
            SourceConfig::Mariadb(m) => {
                assert_eq!(m.database, "cms");
                assert!(m.allow_non_transactional);
            }
            other => panic!("not a mariadb source: {other:?}"),
        }
        assert_eq!(c.jobs[1].source.database_name(), Some("cms"));
        assert!(c.jobs[1].sqlite().is_none());
    }

    #[test]
    fn manual_schedule_turns_scheduling_off() {
        let c = parse(&format!("{MINIMAL}schedule = \"manual\"\n")).unwrap();
        assert!(c.jobs[0].schedule.is_none());
    }

    #[test]
    fn sizes() {
        let cases = [
            ("0", Some(0)),
            ("0B", Some(0)),
            ("512MiB", Some(512 << 20)),
            ("1GiB", Some(1 << 30)),
            ("1 gib", Some(1 << 30)),
            ("10GB", Some(10_000_000_000)),
            ("1.5KiB", Some(1536)),
            ("", None),
            ("MiB", None),
            ("-1B", None),
            ("12 parsecs", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), want, "{text}");
        }
    }
}
