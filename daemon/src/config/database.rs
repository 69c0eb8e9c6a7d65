//! The database-server keys of a job: `postgres` (a libpq URI) with
//! `postgres-passfile` and `pg-bin-dir`, or `mariadb` (a database name) with
//! `mariadb-options-file`, `mariadb-bin-dir` and `allow-non-transactional`.
//!
//! A job names exactly one of `database`, `postgres` and `mariadb`; the keys of one
//! kind are refused on a job of another. What can be checked without touching the
//! system is checked here, at load: the URI's shape (a password in it is refused, and
//! its value is never echoed, since it may hold one), database names, absolute paths.
//! What depends on the machine — the passfile or options file, the client tools, the
//! server — is checked when the job runs and shown in its `status` and health, so a
//! job that cannot run does not stop the daemon.

use std::path::{Path, PathBuf};

/// Which database server a job backs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Postgres,
    Mariadb,
}

impl ServerKind {
    /// The config key and the manifest's `source.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Postgres => "postgres",
            ServerKind::Mariadb => "mariadb",
        }
    }

    /// Whether `name` fits the server's identifier limit (PostgreSQL: 63 bytes;
    /// MariaDB: 64 characters).
    pub fn fits(self, name: &str) -> bool {
        match self {
            ServerKind::Postgres => name.len() <= 63,
            ServerKind::Mariadb => name.chars().count() <= 64,
        }
    }

    /// Why `name` cannot be a database name on this server, if it cannot.
    pub fn name_problem(self, name: &str) -> Option<&'static str> {
        if name.is_empty() {
            Some("is empty")
        } else if name.contains('\0') {
            Some("contains a NUL character")
        } else if name.starts_with('-') {
            Some("starts with '-'")
        } else if !self.fits(name) {
            Some(match self {
                ServerKind::Postgres => "is longer than 63 bytes",
                ServerKind::Mariadb => "is longer than 64 characters",
            })
        } else if self == ServerKind::Mariadb
            && (name.ends_with(' ') || name.contains('/') || name.contains('\\'))
        {
            Some("contains '/', '\\' or a trailing space, which MariaDB does not allow in a database name")
        } else {
            None
        }
    }
}

/// A parsed libpq URI without password, able to name another database on the same
/// server (the scratch databases of restores and verifies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUri {
    /// `postgresql://authority` (scheme and authority as given).
    prefix: String,
    /// The query string without `?` (may be empty).
    query: String,
    /// The database named in the path (decoded).
    database: String,
}

const PASSWORD_HINT: &str = "Coffer never puts passwords on command lines: remove it and put it in a passfile (postgres-passfile, or $CREDENTIALS_DIRECTORY/pgpass)";

impl PgUri {
    /// Parses a `postgresql://` or `postgres://` URI. Errors never echo the value
    /// (it may hold a password).
    pub fn parse(text: &str) -> Result<PgUri, String> {
        let rest = text
            .strip_prefix("postgresql://")
            .map(|r| ("postgresql://", r))
            .or_else(|| text.strip_prefix("postgres://").map(|r| ("postgres://", r)));
        let Some((scheme, rest)) = rest else {
            return Err("is not a libpq URI; write it as postgresql:///DBNAME?host=/run/postgresql".into());
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@')
            && authority[..at].contains(':')
        {
            return Err(format!("the URI contains a password; {PASSWORD_HINT}"));
        }
        let after = &rest[authority_end..];
        let (path, query) = after.split_once('?').unwrap_or((after, ""));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split('=').next().unwrap_or("") {
                "password" => return Err(format!("the URI contains a password; {PASSWORD_HINT}")),
                "dbname" => {
                    return Err("names the database in a dbname= parameter; put it in the path instead (postgresql:///DBNAME?...)".into());
                }
                _ => {}
            }
        }
        let database = percent_decode(path.trim_start_matches('/'))
            .ok_or("the database name in the URI is not valid percent-encoded UTF-8")?;
        if database.is_empty() {
            return Err("the URI does not name a database; write it as postgresql:///DBNAME?host=...".into());
        }
        if let Some(problem) = ServerKind::Postgres.name_problem(&database) {
            return Err(format!("the database name '{database}' in the URI {problem}"));
        }
        Ok(PgUri {
            prefix: format!("{scheme}{authority}"),
            query: query.to_owned(),
            database,
        })
    }

    /// The database the URI names.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The URI of `database` on the same server, with the same parameters.
    pub fn for_database(&self, database: &str) -> String {
        let mut uri = format!("{}/{}", self.prefix, percent_encode(database));
        if !self.query.is_empty() {
            uri.push('?');
            uri.push_str(&self.query);
        }
        uri
    }

    /// Whether the query string sets `key`.
    pub fn has_param(&self, key: &str) -> bool {
        self.query.split('&').any(|p| p.split('=').next() == Some(key))
    }

    /// Whether the server is reached over TCP (a host that is not a socket
    /// directory), which the systemd drop-in must allow.
    pub fn is_tcp(&self) -> bool {
        let authority = self.prefix.split("://").nth(1).unwrap_or("");
        let host_in_authority = authority.rsplit('@').next().unwrap_or("");
        let host_param = self.query.split('&').find_map(|p| p.strip_prefix("host="));
        match host_param {
            Some(host) => !percent_decode(host).unwrap_or_default().starts_with('/'),
            None => !host_in_authority.is_empty() && !host_in_authority.starts_with('%'),
        }
    }

    /// The URI as written (it holds no password).
    pub fn text(&self) -> String {
        self.for_database(&self.database)
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A PostgreSQL source: `postgres = "<libpq URI>"`.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub uri: PgUri,
    /// `postgres-passfile`: handed to libpq as `PGPASSFILE`. Unset: the
    /// `pgpass` credential of systemd (`$CREDENTIALS_DIRECTORY/pgpass`) if present,
    /// else libpq's own defaults (`~/.pgpass`, peer authentication).
    pub passfile: Option<PathBuf>,
    /// `pg-bin-dir`: where pg_dump, pg_restore, psql (and pg_amcheck) are; unset:
    /// `$PATH`, then the newest `/usr/lib/postgresql/<major>/bin`.
    pub bin_dir: Option<PathBuf>,
}

/// A MariaDB source: `mariadb = "<database>"`.
#[derive(Debug, Clone)]
pub struct MariadbConfig {
    pub database: String,
    /// `mariadb-options-file`: a `[client]` file given to every tool
    /// (`--defaults-extra-file`); unset, the client's own defaults apply.
    pub options_file: Option<PathBuf>,
    /// `mariadb-bin-dir`: where mariadb-dump, mariadb (and mariadb-check) are; unset:
    /// `$PATH`.
    pub bin_dir: Option<PathBuf>,
    /// `allow-non-transactional`: back up tables of non-transactional engines
    /// (MyISAM, Aria...) although `--single-transaction` cannot make them consistent.
    pub allow_non_transactional: bool,
}

/// The raw database-server keys of one job (fields of the job's raw section).
#[derive(Debug, Default)]
pub struct RawServerKeys<'a> {
    pub postgres: Option<&'a str>,
    pub postgres_passfile: Option<&'a Path>,
    pub pg_bin_dir: Option<&'a Path>,
    pub mariadb: Option<&'a str>,
    pub mariadb_options_file: Option<&'a Path>,
    pub mariadb_bin_dir: Option<&'a Path>,
    pub allow_non_transactional: Option<bool>,
}

/// Which source keys a job sets.
pub struct SourceKeys<'a> {
    pub database: bool,
    pub busy_timeout: bool,
    pub snapshot_method: bool,
    pub server: &'a RawServerKeys<'a>,
}

impl SourceKeys<'_> {
    /// Checks "exactly one of database, postgres, mariadb" and that no key of another
    /// kind is set. Returns the key and the sentence of the first problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let s = self.server;
        let named: Vec<&str> = [
            ("database", self.database),
            ("postgres", s.postgres.is_some()),
            ("mariadb", s.mariadb.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        match named.as_slice() {
            [_] => {}
            [] => {
                return Err((
                    "database",
                    "the job needs exactly one of database (SQLite), postgres or mariadb; it has none".into(),
                ));
            }
            many => {
                return Err((
                    "database",
                    format!(
                        "the job needs exactly one of database (SQLite), postgres or mariadb; it has {}",
                        many.join(" and ")
                    ),
                ));
            }
        }
        let kind = named[0];
        let owners: [(&'static str, bool, &str); 7] = [
            ("busy-timeout", self.busy_timeout, "database"),
            ("snapshot-method", self.snapshot_method, "database"),
            ("postgres-passfile", s.postgres_passfile.is_some(), "postgres"),
            ("pg-bin-dir", s.pg_bin_dir.is_some(), "postgres"),
            (
                "mariadb-options-file",
                s.mariadb_options_file.is_some(),
                "mariadb",
            ),
            ("mariadb-bin-dir", s.mariadb_bin_dir.is_some(), "mariadb"),
            (
                "allow-non-transactional",
                s.allow_non_transactional.is_some(),
                "mariadb",
            ),
        ];
        for (key, set, owner) in owners {
            if set && owner != kind {
                return Err((
                    key,
                    format!("only applies to a job with {owner} = ..., and this job has {kind}"),
                ));
            }
        }
        Ok(())
    }
}

/// Parses the PostgreSQL keys (`postgres` set). Errors are (key, sentence).
pub fn postgres(raw: &RawServerKeys) -> Result<PostgresConfig, (&'static str, String)> {
    let uri = PgUri::parse(raw.postgres.unwrap_or_default()).map_err(|e| ("postgres", e))?;
    Ok(PostgresConfig {
        uri,
        passfile: absolute("postgres-passfile", raw.postgres_passfile)?,
        bin_dir: absolute("pg-bin-dir", raw.pg_bin_dir)?,
    })
}

/// Parses the MariaDB keys (`mariadb` set). Errors are (key, sentence).
pub fn mariadb(raw: &RawServerKeys) -> Result<MariadbConfig, (&'static str, String)> {
    let database = raw.mariadb.unwrap_or_default().to_owned();
    if let Some(problem) = ServerKind::Mariadb.name_problem(&database) {
        return Err(("mariadb", format!("the database name '{database}' {problem}")));
    }
    Ok(MariadbConfig {
        database,
        options_file: absolute("mariadb-options-file", raw.mariadb_options_file)?,
        bin_dir: absolute("mariadb-bin-dir", raw.mariadb_bin_dir)?,
        allow_non_transactional: raw.allow_non_transactional.unwrap_or(false),
    })
}

fn absolute(key: &'static str, path: Option<&Path>) -> Result<Option<PathBuf>, (&'static str, String)> {
    match path {
        Some(p) if !p.is_absolute() => Err((key, format!("'{}' must be an absolute path", p.display()))),
        other => Ok(other.map(Path::to_owned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parsing_refuses_passwords_without_echoing_them() {
        let uri = PgUri::parse("postgresql:///techstore?host=/run/postgresql").unwrap();
        assert_eq!(uri.database(), "techstore");
        assert!(!uri.is_tcp());
        assert_eq!(
            uri.for_database("x y"),
            "postgresql:///x%20y?host=/run/postgresql"
        );
        let uri = PgUri::parse("postgres://app@db.example:5433/shop%2Dx").unwrap();
        assert_eq!(uri.database(), "shop-x");
        assert!(uri.is_tcp());
        assert_eq!(uri.for_database("other"), "postgres://app@db.example:5433/other");
        assert!(!PgUri::parse("postgresql:///shop").unwrap().is_tcp());
        assert!(PgUri::parse("postgresql:///shop?host=db.lan").unwrap().is_tcp());

        for bad in [
            "postgresql://app:hunter2@db/shop",
            "postgresql:///shop?password=hunter2",
            "host=/tmp dbname=x password=hunter2",
        ] {
            let err = PgUri::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert!(
            PgUri::parse("postgresql://app:hunter2@db/shop")
                .unwrap_err()
                .contains("contains a password")
        );
        assert!(
            PgUri::parse("postgresql:///?host=/tmp")
                .unwrap_err()
                .contains("does not name a database")
        );
        assert!(PgUri::parse("postgresql:///x?dbname=y").is_err());
        assert!(PgUri::parse(&format!("postgresql:///{}", "x".repeat(64))).is_err());
    }

    #[test]
    fn database_names() {
        assert_eq!(ServerKind::Mariadb.name_problem("-rf"), Some("starts with '-'"));
        assert!(ServerKind::Mariadb.name_problem("a/b").is_some());
        assert!(ServerKind::Postgres.name_problem("a/b").is_none());
        assert!(ServerKind::Postgres.name_problem(&"ä".repeat(32)).is_some());
        assert!(ServerKind::Mariadb.name_problem(&"ä".repeat(32)).is_none());
        assert!(ServerKind::Mariadb.name_problem("shop").is_none());
    }
}
