//! A MariaDB job's settings: its database and options file, checked the way the
//! client uses them, and the job's known secrets.
//!
//! The options file (`mariadb-options-file`, a `[client]` section with
//! socket/host/user/password) is given to every tool as its first argument,
//! `--defaults-extra-file=FILE`. The client ignores one that is writable by others,
//! so that is refused with a sentence, as is one holding a password that others may
//! read; its passwords go to the job's [`Scrubber`].

use std::path::{Path, PathBuf};

use crate::config::{MariadbConfig, ServerKind};
use crate::source::dump::names;
use crate::source::dump::{DbError, Scrubber};

/// The validated settings of a MariaDB job.
#[derive(Debug, Clone)]
pub struct MariaSettings {
    pub(super) database: String,
    pub(super) options_file: Option<PathBuf>,
    pub(super) allow_non_transactional: bool,
    pub(super) scrubber: Scrubber,
}

/// Passwords in an options file (`password = x`, quoted or not, any section).
fn options_file_passwords(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with(['#', ';', '[', '!']) {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            let key = key.trim().to_ascii_lowercase().replace('_', "-");
            if !key.starts_with("pass") {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            (!value.is_empty()).then(|| value.to_owned())
        })
        .collect()
}

impl MariaSettings {
    /// Validates the job's database name and options file (readable, a regular
    /// file, not writable by others — the client would ignore it — and not readable
    /// by others when it holds a password).
    pub fn new(config: &MariadbConfig) -> Result<MariaSettings, DbError> {
        let (database, options_file) = (config.database.as_str(), config.options_file.as_deref());
        let allow_non_transactional = config.allow_non_transactional;
        names::check_name(database, ServerKind::Mariadb, "mariadb database name")?;
        let mut scrubber = Scrubber::default();
        if let Some(path) = options_file {
            use std::os::unix::fs::PermissionsExt;
            let shown = path.display();
            let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    DbError::Config(format!("the mariadb options file {shown} does not exist"))
                }
                _ => DbError::Config(format!("the mariadb options file {shown} cannot be read: {e}")),
            })?;
            if !meta.is_file() {
                return Err(DbError::Config(format!(
                    "the mariadb options file {shown} is not a regular file"
                )));
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o002 != 0 {
                return Err(DbError::Config(format!(
                    "the mariadb options file {shown} is writable by everyone (mode {mode:04o}), so the client would ignore it; run chmod 600 {shown}"
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                DbError::Config(format!("the mariadb options file {shown} cannot be read: {e}"))
            })?;
            let passwords = options_file_passwords(&text);
            if mode & 0o004 != 0 && !passwords.is_empty() {
                return Err(DbError::Config(format!(
                    "the mariadb options file {shown} holds a password but can be read by everyone (mode {mode:04o}); run chmod 600 {shown}"
                )));
            }
            for password in passwords {
                scrubber.add_secret(&password);
            }
        }
        Ok(MariaSettings {
            database: database.to_owned(),
            options_file: options_file.map(Path::to_owned),
            allow_non_transactional,
            scrubber,
        })
    }

    pub fn database(&self) -> &str {
        &self.database
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(options_file: Option<&Path>) -> MariadbConfig {
        MariadbConfig {
            database: "shop".into(),
            options_file: options_file.map(Path::to_owned),
            bin_dir: None,
            allow_non_transactional: false,
        }
    }

    #[test]
    fn options_file_passwords_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let text = "[client]\nuser = coffer\npassword = \"s3 cr#t\"\n# password = old\n[mysqldump]\npassword=plain\n";
        assert_eq!(options_file_passwords(text), ["s3 cr#t", "plain"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my.cnf");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MariaSettings::new(&config(Some(&path))).unwrap_err().to_string();
        assert!(
            err.contains("can be read by everyone") && !err.contains("s3 cr#t"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let settings = MariaSettings::new(&config(Some(&path))).unwrap();
        assert_eq!(settings.scrubber.scrub("x s3 cr#t y"), "x *** y");
        assert!(MariaSettings::new(&config(Some(&dir.path().join("none")))).is_err());
    }
}
