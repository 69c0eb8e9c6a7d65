//! How a PostgreSQL job reaches its server: the passfile convention and the
//! job's known secrets.
//!
//! The password comes from a passfile handed to libpq as `PGPASSFILE`: the job's
//! `postgres-passfile`, else `$CREDENTIALS_DIRECTORY/pgpass` (systemd
//! `LoadCredential=pgpass:/etc/coffer/pgpass`), else libpq's own defaults
//! (`~/.pgpass`, peer authentication). The passfile is checked the way libpq uses it
//! (libpq silently ignores one readable by group or others), and its passwords are
//! given to the job's [`Scrubber`], so no tool output can carry them into an error.

use std::path::{Path, PathBuf};

use crate::config::{PgUri, PostgresConfig};
use crate::source::dump::{DbError, Scrubber};

/// The passfile name looked for in `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_NAME: &str = "pgpass";

/// The passwords in a libpq passfile (`host:port:db:user:password`, `\:` and `\\`
/// escaped), for the scrubber.
fn passfile_passwords(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = 0;
        let mut chars = line.chars();
        let mut password = String::new();
        while let Some(c) = chars.next() {
            if fields < 4 {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    ':' => fields += 1,
                    _ => {}
                }
            } else if c == '\\' {
                if let Some(next) = chars.next() {
                    password.push(next);
                }
            } else {
                password.push(c);
            }
        }
        if fields == 4 && !password.is_empty() {
            out.push(password);
        }
    }
    out
}

/// Checks a passfile the way libpq would use it: present, a regular file, and not
/// accessible by group or others (libpq silently ignores such files).
fn check_passfile(path: &Path) -> Result<String, DbError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            DbError::Config(format!("the passfile {} does not exist", path.display()))
        }
        _ => DbError::Config(format!("the passfile {} cannot be read: {e}", path.display())),
    })?;
    if !meta.is_file() {
        return Err(DbError::Config(format!(
            "the passfile {} is not a regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DbError::Config(format!(
            "the passfile {} can be read by group or others (mode {mode:04o}) and libpq ignores such files; run chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| DbError::Config(format!("the passfile {} cannot be read: {e}", path.display())))
}

/// How a PostgreSQL job reaches its database (no tools needed).
#[derive(Debug, Clone)]
pub struct PgConnection {
    pub(super) uri: PgUri,
    pub(super) passfile: Option<PathBuf>,
    pub(super) scrubber: Scrubber,
}

impl PgConnection {
    /// The job's connection: its passfile is the job's `postgres-passfile` if set,
    /// else `<credentials_directory>/pgpass` if that exists (pass
    /// `$CREDENTIALS_DIRECTORY`), else none (libpq's defaults apply). A passfile that
    /// libpq would ignore or cannot read is refused with a sentence.
    pub fn new(
        config: &PostgresConfig,
        credentials_directory: Option<&Path>,
    ) -> Result<PgConnection, DbError> {
        let mut scrubber = Scrubber::default();
        let chosen = match &config.passfile {
            Some(p) => Some(p.clone()),
            None => credentials_directory
                .map(|dir| dir.join(CREDENTIAL_NAME))
                .filter(|p| p.exists()),
        };
        match &chosen {
            Some(path) => {
                let text = check_passfile(path)?;
                for password in passfile_passwords(&text) {
                    scrubber.add_secret(&password);
                }
            }
            None => {
                // libpq will use PGPASSFILE or ~/.pgpass: mask their passwords too.
                let default = std::env::var_os("PGPASSFILE")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
                if let Some(text) = default.and_then(|p| std::fs::read_to_string(p).ok()) {
                    for password in passfile_passwords(&text) {
                        scrubber.add_secret(&password);
                    }
                }
            }
        }
        Ok(PgConnection {
            uri: config.uri.clone(),
            passfile: chosen,
            scrubber,
        })
    }

    /// The database the job backs up.
    pub fn database(&self) -> &str {
        self.uri.database()
    }

    /// The passfile handed to libpq, if any.
    pub fn passfile(&self) -> Option<&Path> {
        self.passfile.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(passfile: Option<&Path>) -> PostgresConfig {
        PostgresConfig {
            uri: PgUri::parse("postgresql:///x").unwrap(),
            passfile: passfile.map(Path::to_owned),
            bin_dir: None,
        }
    }

    #[test]
    fn passfile_passwords_are_unescaped() {
        let text = "# comment\n*:*:*:coffer:S3cr\\:et pw\nlocalhost:5432:shop:app:a\\\\b\nbad:line\n";
        assert_eq!(passfile_passwords(text), ["S3cr:et pw", "a\\b"]);
    }

    #[test]
    fn passfile_permissions_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:u:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = PgConnection::new(&config(Some(&path)), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conn = PgConnection::new(&config(Some(&path)), None).unwrap();
        assert_eq!(conn.scrubber.scrub("a pw b"), "a *** b");
        // The credentials directory convention.
        let conn = PgConnection::new(&config(None), Some(dir.path())).unwrap();
        assert_eq!(conn.passfile(), Some(path.as_path()));
        let missing = PgConnection::new(&config(Some(&dir.path().join("nope"))), None).unwrap_err();
        assert!(missing.to_string().contains("does not exist"));
    }
}
