//! A throwaway MariaDB server for one test: a datadir copied from a per-process
//! template (made once by `mariadb-install-db`, which takes ~2 s; a copy takes ~0.1 s)
//! and `mariadbd --no-defaults --skip-networking` on a Unix socket in the temp dir.
//! As root it runs with `--user=root` (MariaDB allows that explicitly); otherwise as
//! the current user.
//!
//! Layout of the temp dir:
//! ```text
//! data/           the datadir
//! tmp/            mariadbd's tmpdir
//! mysqld.sock     the socket (networking is off)
//! mariadb.log     the error log, appended across restarts
//! coffer.cnf      0600 `[client]` socket/user/password for Coffer (--defaults-extra-file)
//! admin.cnf       0600 the same for the harness's root account
//! ```
//! Coffer's account is [`COFFER_USER`]`@localhost` with a random password and the
//! global privileges of [`COFFER_GRANTS`], which is also what a real deployment's
//! backup account needs (see there).
//!
//! Speed: small buffer pool, `innodb_flush_method = nosync`, no doublewrite,
//! `innodb_flush_log_at_trx_commit = 2` (the redo log reaches the OS at every commit,
//! so `kill9` loses nothing; only an OS crash could), no performance schema.
//!
//! The template lives in `/tmp/coffer-mariadb-tpl-<pid>-*` for the life of the test
//! process; templates of processes that are gone are removed when the next one is
//! made (see `process::template_dir`).

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{
    self, command, find_program, is_root, log_tail, random_hex, run, server_command, spawn_logged, terminate,
    wait_exit, wait_until, write_private,
};
use super::skip::Skip;

/// The account Coffer connects as (`coffer@localhost`).
pub const COFFER_USER: &str = "coffer";

/// The global privileges of Coffer's account, and what a deployment grants its backup
/// account (`GRANT ... ON *.* TO 'coffer'@'localhost'`):
/// - dump (`mariadb-dump --single-transaction --routines --triggers --events`):
///   SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, PROCESS (tablespace info, and
///   seeing other sessions);
/// - restore into a scratch schema and swap with `RENAME TABLE`: CREATE, DROP, ALTER,
///   INSERT, UPDATE, DELETE, INDEX, REFERENCES, CREATE VIEW, CREATE ROUTINE, ALTER
///   ROUTINE, EXECUTE, CREATE TEMPORARY TABLES, SET USER (recreate objects whose
///   DEFINER is another account);
/// - `--force` (end other sessions): CONNECTION ADMIN;
/// - SHOW DATABASES to list schemas.
pub const COFFER_GRANTS: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, \
     REFERENCES, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, \
     CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER, PROCESS, SHOW DATABASES, \
     CONNECTION ADMIN, SET USER";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const SQL_TIMEOUT: Duration = Duration::from_secs(300);

/// Server options used both for the template bootstrap and for every start.
const SERVER_OPTIONS: &[&str] = &[
    "--skip-networking",
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-flush-method=nosync",
    "--innodb-doublewrite=0",
    "--innodb-buffer-pool-load-at-startup=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    "--performance-schema=OFF",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--max-connections=60",
    "--lc-messages=en_US",
];

/// The MariaDB binaries this harness needs.
#[derive(Debug, Clone)]
struct Binaries {
    server: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
    version: String,
}

fn binaries() -> Result<Binaries, Skip> {
    static FOUND: OnceLock<Result<Binaries, Skip>> = OnceLock::new();
    FOUND.get_or_init(find_binaries).clone()
}

fn find_binaries() -> Result<Binaries, Skip> {
    let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/libexec")];
    let find = |names: &[&str]| names.iter().find_map(|n| find_program(n, &sbin));
    let missing = |what: &str| {
        Skip::new(format!(
            "{what} is not installed (package mariadb-server); run test-deps.sh as root"
        ))
    };
    let server = find(&["mariadbd", "mysqld"]).ok_or_else(|| missing("mariadbd"))?;
    let install_db =
        find(&["mariadb-install-db", "mysql_install_db"]).ok_or_else(|| missing("mariadb-install-db"))?;
    let client = find(&["mariadb", "mysql"]).ok_or_else(|| missing("the mariadb client"))?;
    let mut cmd = command(&server);
    cmd.arg("--version");
    let out = run(cmd, None, Duration::from_secs(10)).map_err(Skip::new)?;
    // "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)"
    let text = out.stdout_text();
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "Ver")
        .nth(1)
        .map(|v| v.split('-').next().unwrap_or(v).to_owned())
        .ok_or_else(|| Skip::new(format!("cannot read the version of {}", server.display())))?;
    Ok(Binaries {
        server,
        install_db,
        client,
        version,
    })
}

/// The per-process template datadir, made on first use.
fn template() -> Result<PathBuf, Skip> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let bins = binaries().map_err(|s| s.0)?;
            let dir = process::template_dir("mariadb")?;
            let data = dir.join("data");
            // Its own tmpdir: bootstraps running side by side must not share /tmp's
            // temporary tables.
            let tmp = dir.join("tmp");
            fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            let mut cmd = command(&bins.install_db);
            cmd.current_dir(&dir)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                .args(SERVER_OPTIONS.iter().filter(|o| !o.starts_with("--lc-messages")));
            if is_root() {
                cmd.arg("--user=root");
            }
            let out = run(cmd, None, Duration::from_secs(300))?;
            if !out.success() {
                let _ = fs::remove_dir_all(&dir);
                return Err(format!("mariadb-install-db failed: {}", out.failure()));
            }
            Ok(data)
        })
        .clone()
        .map_err(Skip::new)
}

/// A running (or stopped) private MariaDB server; dropping it kills the server and
/// removes its directory.
pub struct MariaDb {
    bins: Binaries,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    options_file: PathBuf,
    admin_file: PathBuf,
    password: String,
    child: Option<Child>,
    startup: Duration,
    // Last: removed once the server is gone.
    dir: TempDir,
}

impl MariaDb {
    /// Creates and starts a server for the test `name` (used in the dir name); Coffer's
    /// account and options file are ready when this returns.
    pub fn start(name: &str) -> Result<MariaDb, Skip> {
        let began = Instant::now();
        let bins = binaries()?;
        let template = template()?;
        let dir = process::temp_root("my", name)?;
        let root = dir.path().to_owned();
        let data = root.join("data");
        let io = |what: &str, e: std::io::Error| {
            Skip::new(format!("cannot prepare {what} in {}: {e}", root.display()))
        };
        process::copy_tree(&template, &data).map_err(Skip::new)?;
        fs::create_dir_all(root.join("tmp")).map_err(|e| io("tmp/", e))?;
        let socket = root.join("mysqld.sock");
        let admin_file = root.join("admin.cnf");
        let options_file = root.join("coffer.cnf");
        // The template's root has an empty password until the setup below.
        write_private(&admin_file, client_options(&socket, "root", "").as_bytes())
            .map_err(|e| io("admin.cnf", e))?;
        let mut db = MariaDb {
            bins,
            data,
            socket,
            log: root.join("mariadb.log"),
            options_file,
            admin_file,
            password: random_hex(16),
            child: None,
            startup: Duration::ZERO,
            dir,
        };
        db.spawn().map_err(Skip::new)?;

        let root_password = random_hex(16);
        let setup = format!(
            "ALTER USER 'root'@'localhost' IDENTIFIED BY '{root_password}';\n\
             CREATE USER '{COFFER_USER}'@'localhost' IDENTIFIED BY '{}';\n\
             GRANT {COFFER_GRANTS} ON *.* TO '{COFFER_USER}'@'localhost';\n",
            db.password
        );
        db.try_sql("", &setup)
            .map_err(|e| Skip::new(format!("cannot create the {COFFER_USER} account: {e}")))?;
        write_private(
            &db.admin_file,
            client_options(&db.socket, "root", &root_password).as_bytes(),
        )
        .map_err(|e| io("admin.cnf", e))?;
        write_private(
            &db.options_file,
            client_options(&db.socket, COFFER_USER, &db.password).as_bytes(),
        )
        .map_err(|e| io("coffer.cnf", e))?;
        db.startup = began.elapsed();
        Ok(db)
    }

    /// Starts `mariadbd` on the datadir and waits until its socket accepts connections.
    fn spawn(&mut self) -> Result<(), String> {
        let root = self.dir.path();
        let mut cmd = server_command(&self.bins.server, None);
        cmd.current_dir(root)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data.display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--pid-file={}", root.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", self.log.display()))
            .arg(format!("--tmpdir={}", root.join("tmp").display()))
            .args(SERVER_OPTIONS);
        if is_root() {
            cmd.arg("--user=root");
        }
        let mut child = spawn_logged(cmd, &self.log)?;
        let mut exited = None;
        let ready = wait_until(START_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            UnixStream::connect(&self.socket).is_ok()
        });
        if let Some(status) = exited {
            return Err(format!(
                "mariadbd exited during start-up ({status}); log: {}",
                log_tail(&self.log, 8)
            ));
        }
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "mariadbd did not accept connections within {START_TIMEOUT:?}; log: {}",
                log_tail(&self.log, 8)
            ));
        }
        self.child = Some(child);
        Ok(())
    }

    /// How long [`MariaDb::start`] took (template copy, start, account setup; the
    /// first start of a process also makes the template).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The server version, e.g. "10.11.19".
    pub fn version(&self) -> &str {
        &self.bins.version
    }

    /// The path of a client tool next to the `mariadb` client, e.g. `tool("mariadb-dump")`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bins
            .client
            .parent()
            .map(|d| d.join(name))
            .unwrap_or_else(|| PathBuf::from(name))
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Coffer's options file (0600): `[client]` socket, user, password; for
    /// `mariadb-options-file` / `--defaults-extra-file`.
    pub fn options_file(&self) -> &Path {
        &self.options_file
    }

    /// Coffer's account name ([`COFFER_USER`]).
    pub fn user(&self) -> &str {
        COFFER_USER
    }

    /// Coffer's password. Never put it on a command line.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client_command(&self, defaults: &Path, db: &str) -> Command {
        let mut cmd = command(&self.bins.client);
        cmd.arg(format!("--defaults-file={}", defaults.display())).args([
            "--batch",
            "--skip-column-names",
            "--raw",
            "--connect-timeout=10",
        ]);
        if !db.is_empty() {
            cmd.arg(format!("--database={db}"));
        }
        cmd
    }

    fn sql_result(&self, defaults: &Path, db: &str, sql: &str) -> Result<String, String> {
        let out = run(
            self.client_command(defaults, db),
            Some(sql.as_bytes()),
            SQL_TIMEOUT,
        )?;
        if out.success() {
            Ok(out.stdout_text().trim_end_matches('\n').to_owned())
        } else {
            Err(out.stderr.trim().to_owned())
        }
    }

    /// Runs `sql` (on stdin) in `db` ("" for none) as root; one row per line, tab
    /// between columns, values raw, trailing newline removed. Panics on error.
    #[track_caller]
    pub fn sql(&self, db: &str, sql: &str) -> String {
        match self.try_sql(db, sql) {
            Ok(out) => out,
            Err(e) => panic!("SQL in {db:?} failed: {e}\n--- sql ---\n{sql}"),
        }
    }

    /// [`MariaDb::sql`] returning the client's stderr on failure.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.sql_result(&self.admin_file, db, sql)
    }

    /// Runs `sql` as Coffer's account (through its options file).
    pub fn sql_as_coffer(&self, db: &str, sql: &str) -> Result<String, String> {
        self.sql_result(&self.options_file, db, sql)
    }

    /// Creates database `db` (utf8mb4).
    #[track_caller]
    pub fn create_database(&self, db: &str) {
        self.sql("", &format!("CREATE DATABASE {};", ident(db)));
    }

    /// Drops database `db` if it exists.
    #[track_caller]
    pub fn drop_database(&self, db: &str) {
        self.sql("", &format!("DROP DATABASE IF EXISTS {};", ident(db)));
    }

    /// The user databases (system schemas excluded), sorted.
    pub fn databases(&self) -> Vec<String> {
        self.sql(
            "",
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN \
             ('mysql','information_schema','performance_schema','sys') ORDER BY 1;",
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// An open session on `db` as root (a client waiting on its stdin), closed on drop.
    pub fn open_session(&self, db: &str) -> Session {
        let count = || {
            self.try_sql(
                "",
                &format!(
                    "SELECT count(*) FROM information_schema.processlist WHERE db = {} AND id <> connection_id();",
                    literal(db)
                ),
            )
            .ok()
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
        };
        let before = count();
        let mut child = self
            .client_command(&self.admin_file, db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the mariadb client");
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = std::io::Write::write_all(stdin, b"SELECT 1;\n");
        }
        assert!(
            wait_until(Duration::from_secs(20), || count() > before),
            "the session on {db} did not show up in the processlist"
        );
        Session { child }
    }

    /// The server's pid. Panics if it is not running.
    #[track_caller]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mariadbd is not running").id()
    }

    /// Whether the server is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Clean shutdown (SIGTERM); SIGKILL after 60 s.
    pub fn stop(&mut self) {
        terminate(&mut self.child, "TERM", Duration::from_secs(60));
    }

    /// SIGKILLs the server, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same datadir and socket (InnoDB recovers after
    /// [`MariaDb::kill9`]). Panics with the log tail if it does not come up.
    #[track_caller]
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: mariadbd is still running");
        if let Err(e) = self.spawn() {
            panic!("cannot start mariadbd again: {e}");
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.wait();
            }
        }
    }
}

/// A client session held open by [`MariaDb::open_session`]; killed on drop.
pub struct Session {
    child: Child,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[client]` options file body.
fn client_options(socket: &Path, user: &str, password: &str) -> String {
    format!(
        "[client]\nsocket=\"{}\"\nuser=\"{user}\"\npassword=\"{password}\"\n",
        socket.display()
    )
}

/// A quoted MariaDB identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A MariaDB string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}
