//! Finding the client tools a database job needs: at start-up (a missing one is
//! logged for that job), cheaply for every `status` ([`PgTools::locate`]), and for
//! real at the start of every run.
//!
//! [`PgTools::find`] and [`MariaTools::find`] resolve every tool to an absolute path
//! and read its version, so that a job whose tools are missing fails with one clear
//! sentence when the daemon starts (the daemon itself still starts) instead of at
//! 2 a.m. Where we look:
//!
//! * PostgreSQL: only in `pg-bin-dir` when the job sets it (an explicit choice must
//!   not silently fall back to another version); otherwise `$PATH`, then the newest
//!   `/usr/lib/postgresql/<major>/bin` (Debian/Ubuntu keep the real binaries there
//!   and put `pg_wrapper` links on `$PATH`). `pg_amcheck` is optional and has no
//!   link on `$PATH` on Debian, so it is also looked for beside the versioned
//!   binaries of `pg_dump`'s major version.
//! * MariaDB: in the configured directory or on `$PATH`, the `mariadb-*` names first
//!   and the old `mysql*` names second. `mariadb-check` is optional.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::DbError;

/// One resolved client program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The name it is known by in messages (`pg_dump`, `mariadb-dump`).
    pub name: &'static str,
    /// Absolute path to run.
    pub path: PathBuf,
}

/// The PostgreSQL client tools of one job.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub pg_dump: Tool,
    pub pg_restore: Tool,
    pub psql: Tool,
    /// Optional: used by deep verify when present.
    pub pg_amcheck: Option<Tool>,
    /// `pg_dump --version`, e.g. `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// The major version of `pg_dump` (15); it must be >= the server's.
    pub major: u32,
}

/// The MariaDB client tools of one job.
#[derive(Debug, Clone)]
pub struct MariaTools {
    pub dump: Tool,
    pub client: Tool,
    /// Optional: used by the restore check and deep verify when present.
    pub check: Option<Tool>,
    /// `mariadb-dump --version`.
    pub version: String,
}

const PG_HINT: &str = "install the PostgreSQL client tools (Debian: postgresql-client) or set pg-bin-dir";
const MARIA_HINT: &str = "install the MariaDB client (Debian: mariadb-client) or set mariadb-bin-dir";
/// Where Debian and Ubuntu keep the versioned PostgreSQL binaries.
const DEBIAN_PG_LIB: &str = "/usr/lib/postgresql";

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn path_dirs(path_var: Option<OsString>) -> Vec<PathBuf> {
    path_var
        .map(|p| std::env::split_paths(&p).filter(|d| d.is_absolute()).collect())
        .unwrap_or_default()
}

/// `/usr/lib/postgresql/<major>/bin` directories, newest major first.
fn debian_pg_dirs() -> Vec<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_PG_LIB)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((major, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    majors.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    majors.into_iter().map(|(_, dir)| dir).collect()
}

fn search(names: &[&'static str], dirs: &[PathBuf]) -> Option<Tool> {
    dirs.iter().find_map(|dir| {
        names.iter().find_map(|name| {
            let path = dir.join(name);
            is_executable(&path).then_some(Tool { name, path })
        })
    })
}

fn describe_dirs(dirs: &[PathBuf]) -> String {
    match dirs {
        [] => "(no directory to search: $PATH is empty)".to_owned(),
        [one] => format!("in {}", one.display()),
        many => format!(
            "in {}",
            many.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn require(names: &[&'static str], dirs: &[PathBuf], hint: &'static str) -> Result<Tool, DbError> {
    search(names, dirs).ok_or_else(|| DbError::ToolMissing {
        tool: names[0],
        searched: describe_dirs(dirs),
        hint,
    })
}

/// Runs `tool --version` and returns its first line.
pub(crate) fn version_of(tool: &Tool) -> Result<String, DbError> {
    let output = Command::new(&tool.path)
        .arg("--version")
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| DbError::Spawn {
            tool: tool.name,
            path: tool.path.clone(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if !output.status.success() || line.is_empty() {
        let detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(DbError::ToolUnusable {
            tool: tool.name,
            path: tool.path.clone(),
            detail: if detail.is_empty() {
                format!("'--version' {}", super::run::describe_status(output.status))
            } else {
                detail
            },
        });
    }
    Ok(line)
}

/// The major version in `pg_dump (PostgreSQL) 15.18 (...)` (`10`+ style) or in a
/// server version string (`15.18 (Debian ...)`).
pub fn pg_major(version: &str) -> Option<u32> {
    let after = match version.find("(PostgreSQL) ") {
        Some(pos) => &version[pos + "(PostgreSQL) ".len()..],
        None => version.trim_start_matches("PostgreSQL "),
    };
    let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Where the PostgreSQL tools are looked for.
fn pg_dirs(pg_bin_dir: Option<&Path>, path_var: Option<OsString>) -> Vec<PathBuf> {
    match pg_bin_dir {
        Some(dir) => vec![dir.to_owned()],
        None => {
            let mut dirs = path_dirs(path_var);
            dirs.extend(debian_pg_dirs());
            dirs
        }
    }
}

/// Where the MariaDB tools are looked for.
fn maria_dirs(bin_dir: Option<&Path>, path_var: Option<OsString>) -> Vec<PathBuf> {
    match bin_dir {
        Some(dir) => vec![dir.to_owned()],
        None => path_dirs(path_var),
    }
}

impl PgTools {
    /// Checks that the required tools are where [`PgTools::find`] looks, without
    /// running them: cheap enough for every `status` call.
    pub fn locate(pg_bin_dir: Option<&Path>) -> Result<(), DbError> {
        let dirs = pg_dirs(pg_bin_dir, std::env::var_os("PATH"));
        for name in ["pg_dump", "pg_restore", "psql"] {
            require(&[name], &dirs, PG_HINT)?;
        }
        Ok(())
    }

    /// Finds `pg_dump`, `pg_restore`, `psql` (required) and `pg_amcheck` (optional),
    /// in `pg_bin_dir` only when given, else on `$PATH` and then in the newest
    /// `/usr/lib/postgresql/<major>/bin`.
    pub fn find(pg_bin_dir: Option<&Path>) -> Result<PgTools, DbError> {
        Self::find_in(pg_bin_dir, std::env::var_os("PATH"))
    }

    /// [`PgTools::find`] with an explicit `$PATH` (for tests).
    pub fn find_in(pg_bin_dir: Option<&Path>, path_var: Option<OsString>) -> Result<PgTools, DbError> {
        let dirs = pg_dirs(pg_bin_dir, path_var);
        let pg_dump = require(&["pg_dump"], &dirs, PG_HINT)?;
        // pg_restore and psql from the same directory as pg_dump when possible, so
        // one job never mixes versions.
        let same_dir: Vec<PathBuf> = pg_dump.path.parent().map(Path::to_owned).into_iter().collect();
        let near = |name: &'static str| {
            search(&[name], &same_dir).map_or_else(|| require(&[name], &dirs, PG_HINT), Ok)
        };
        let pg_restore = near("pg_restore")?;
        let psql = near("psql")?;
        let version = version_of(&pg_dump)?;
        let major = pg_major(&version).ok_or_else(|| DbError::ToolUnusable {
            tool: "pg_dump",
            path: pg_dump.path.clone(),
            detail: format!("its version '{version}' is not a PostgreSQL version"),
        })?;
        let mut amcheck_dirs = same_dir.clone();
        if pg_bin_dir.is_none() {
            amcheck_dirs.push(Path::new(DEBIAN_PG_LIB).join(major.to_string()).join("bin"));
        }
        let pg_amcheck = search(&["pg_amcheck"], &amcheck_dirs);
        Ok(PgTools {
            pg_dump,
            pg_restore,
            psql,
            pg_amcheck,
            version,
            major,
        })
    }
}

impl MariaTools {
    /// Checks that the required tools are where [`MariaTools::find`] looks, without
    /// running them: cheap enough for every `status` call.
    pub fn locate(bin_dir: Option<&Path>) -> Result<(), DbError> {
        let dirs = maria_dirs(bin_dir, std::env::var_os("PATH"));
        require(&["mariadb-dump", "mysqldump"], &dirs, MARIA_HINT)?;
        require(&["mariadb", "mysql"], &dirs, MARIA_HINT)?;
        Ok(())
    }

    /// Finds `mariadb-dump` and `mariadb` (required; `mysqldump`/`mysql` accepted)
    /// and `mariadb-check` (optional), in `bin_dir` only when given, else on `$PATH`.
    pub fn find(bin_dir: Option<&Path>) -> Result<MariaTools, DbError> {
        Self::find_in(bin_dir, std::env::var_os("PATH"))
    }

    /// [`MariaTools::find`] with an explicit `$PATH` (for tests).
    pub fn find_in(bin_dir: Option<&Path>, path_var: Option<OsString>) -> Result<MariaTools, DbError> {
        let dirs = maria_dirs(bin_dir, path_var);
        let dump = require(&["mariadb-dump", "mysqldump"], &dirs, MARIA_HINT)?;
        let client = require(&["mariadb", "mysql"], &dirs, MARIA_HINT)?;
        let check = search(&["mariadb-check", "mysqlcheck"], &dirs);
        let version = version_of(&dump)?;
        Ok(MariaTools {
            dump,
            client,
            check,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_major_parses_tool_and_server_versions() {
        assert_eq!(
            pg_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(pg_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(pg_major("16.2 (Ubuntu 16.2-1)"), Some(16));
        assert_eq!(pg_major("PostgreSQL 17.0 on x86_64"), Some(17));
        assert_eq!(pg_major("nonsense"), None);
    }

    #[test]
    fn missing_tools_are_one_sentence_naming_the_search() {
        let empty = tempfile::tempdir().unwrap();
        let err = PgTools::find(Some(empty.path())).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("pg_dump was not found in "), "{text}");
        assert!(text.contains("pg-bin-dir"), "{text}");
        let err = MariaTools::find_in(None, Some(empty.path().as_os_str().to_owned())).unwrap_err();
        assert!(
            err.to_string().starts_with("mariadb-dump was not found in "),
            "{err}"
        );
        assert!(matches!(err.kind(), super::super::DbErrorKind::ToolMissing));
    }

    #[test]
    fn finds_installed_tools() {
        let pg_bin = Path::new("/usr/lib/postgresql/15/bin");
        if !pg_bin.join("pg_dump").exists() {
            eprintln!("skipped: no PostgreSQL 15 binaries in {}", pg_bin.display());
        } else {
            let tools = PgTools::find(Some(pg_bin)).unwrap();
            assert_eq!(tools.major, 15);
            assert!(tools.pg_amcheck.is_some());
            assert_eq!(tools.psql.path, pg_bin.join("psql"));
        }
        match MariaTools::find(None) {
            Ok(tools) => assert!(tools.version.contains("MariaDB"), "{}", tools.version),
            Err(e) => eprintln!("skipped: {e}"),
        }
    }
}
