//! A throwaway PostgreSQL cluster for one test: `initdb` into a temp dir, then
//! `postgres` on a Unix socket in that dir only (`listen_addresses = ''`), as an
//! unprivileged account (the server refuses root): the dedicated system user
//! `coffer-pgtest`, created on first use, or `nobody` if that fails; when the tests do
//! not run as root, as the current user.
//!
//! Layout of the temp dir (0755, owned by the test's user):
//! ```text
//! data/          the cluster (0700, owned by the server's account)
//! sock/          .s.PGSQL.<port> (the port only names the socket: no TCP)
//! postgres.log   the server's output, appended across restarts
//! coffer.pgpass  0600 passfile for the Coffer role (PGPASSFILE)
//! admin.pgpass   0600 passfile for the harness's superuser and the `app` role
//! ```
//! Authentication is `scram-sha-256` for every connection. The harness talks as the
//! superuser `postgres`; Coffer gets the login role [`COFFER_ROLE`] with a random
//! password, holding what a real deployment's backup role needs:
//! - `LOGIN CREATEDB`: create the scratch database `<db>__coffer_restore` and the
//!   `--to-database` target, which it then owns;
//! - `pg_read_all_data` (PostgreSQL 14+): `pg_dump` of databases owned by others;
//! - `pg_signal_backend`: `--force` terminates other sessions (not superusers');
//! - to restore *in place* (rename the live database away, drop it after the swap) a
//!   role must own the database (or be a member of its owner role) as well as have
//!   CREATEDB: a deployment grants the application's owner role to the Coffer role
//!   (`GRANT app_owner TO coffer`). [`PgCluster::create_database`] makes Coffer the
//!   owner; [`PgCluster::create_database_owned_by`] tests the other case.
//!
//! Speed: `fsync = off` and `full_page_writes = off` (a test never survives an OS
//! crash, but `kill9` keeps every committed row: commits still write the WAL to the
//! OS); the data dir is a copy of a template made by `initdb --no-sync` once per
//! test process (`/tmp/coffer-pg-tpl-<pid>-*`, see `process::template_dir`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{
    self, Captured, PortLease, RunAs, command, find_program, log_tail, make_dir_for, pids_with_cwd,
    random_hex, reserve_ports, run, server_command, spawn_logged, terminate, wait_exit, wait_until,
    write_private,
};
use super::skip::Skip;

/// The login role Coffer connects as.
pub const COFFER_ROLE: &str = "coffer";
/// The superuser the harness connects as.
pub const SUPERUSER: &str = "postgres";
/// An ordinary login role standing for the application ([`PgCluster::open_session`]).
pub const APP_ROLE: &str = "app";
/// How long a start (initdb excluded) may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one psql run may take.
const SQL_TIMEOUT: Duration = Duration::from_secs(300);

/// A cluster made by initdb once per test process and copied for every server
/// (initdb takes ~1 s, a copy ~0.05 s).
#[derive(Clone)]
struct Template {
    data: PathBuf,
    /// The superuser's password (shared by the clusters of one process).
    admin_password: String,
}

fn template(bin: &Path, user: Option<&RunAs>) -> Result<Template, Skip> {
    static TEMPLATE: OnceLock<Result<Template, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let root = process::template_dir("pg")?;
            let data = root.join("data");
            let io =
                |what: &str, e: std::io::Error| format!("cannot prepare {what} in {}: {e}", root.display());
            make_dir_for(&data, user, 0o700).map_err(|e| io("the data directory", e))?;
            // initdb reads the superuser's password from a file the server's account
            // can read; it is removed right after.
            let admin_password = random_hex(16);
            let pwfile = root.join("initdb.pw");
            write_private(&pwfile, admin_password.as_bytes())
                .map_err(|e| io("the initdb password file", e))?;
            if let Some(u) = user {
                std::os::unix::fs::chown(&pwfile, Some(u.uid), Some(u.gid))
                    .map_err(|e| io("the initdb password file", e))?;
            }
            let mut initdb = server_command(&bin.join("initdb"), user);
            initdb
                .current_dir(&root)
                .env("HOME", &root)
                .arg("--pgdata")
                .arg(&data)
                .args(["--username", SUPERUSER, "--auth", "scram-sha-256", "--pwfile"])
                .arg(&pwfile)
                .args([
                    "--no-sync",
                    "--no-instructions",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                ]);
            let out = run(initdb, None, Duration::from_secs(300));
            let _ = fs::remove_file(&pwfile);
            let out = out.map_err(|e| format!("initdb failed: {e}"))?;
            if !out.success() {
                let _ = fs::remove_dir_all(&root);
                return Err(format!("initdb failed: {}", out.failure()));
            }
            Ok(Template { data, admin_password })
        })
        .clone()
        .map_err(Skip::new)
}

/// A running (or stopped) private PostgreSQL cluster; dropping it kills the server
/// and removes its directory.
pub struct PgCluster {
    bin: PathBuf,
    version: String,
    user: Option<RunAs>,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    passfile: PathBuf,
    admin_passfile: PathBuf,
    password: String,
    ports: PortLease,
    child: Option<Child>,
    startup: Duration,
    // Last: removed once the server is gone.
    dir: TempDir,
}

impl PgCluster {
    /// The directory holding the server binaries (initdb, postgres, psql, pg_dump,
    /// pg_restore, pgbench): `$COFFER_TEST_PG_BINDIR`, /usr/lib/postgresql/15/bin,
    /// `pg_config --bindir`, the newest /usr/lib/postgresql/*/bin, or initdb's dir on
    /// PATH.
    pub fn bin_dir() -> Result<PathBuf, Skip> {
        let complete = |d: &Path| ["initdb", "postgres", "psql"].iter().all(|t| d.join(t).is_file());
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os("COFFER_TEST_PG_BINDIR") {
            candidates.push(dir.into());
        }
        candidates.push("/usr/lib/postgresql/15/bin".into());
        if let Ok(out) = run(
            {
                let mut c = command("pg_config");
                c.arg("--bindir");
                c
            },
            None,
            Duration::from_secs(10),
        ) && out.success()
        {
            candidates.push(out.stdout_text().trim().into());
        }
        if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
            let mut versions: Vec<(u32, PathBuf)> = entries
                .flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect();
            versions.sort();
            candidates.extend(versions.into_iter().rev().map(|(_, p)| p));
        }
        if let Some(initdb) = find_program("initdb", &[])
            && let Ok(real) = fs::canonicalize(initdb)
            && let Some(dir) = real.parent()
        {
            candidates.push(dir.to_owned());
        }
        candidates.into_iter().find(|d| complete(d)).ok_or_else(|| {
            Skip::new(
                "the PostgreSQL server binaries (initdb, postgres, psql) are not installed \
                 (looked in /usr/lib/postgresql/*/bin, pg_config --bindir and PATH); \
                 run test-deps.sh as root",
            )
        })
    }

    /// Creates and starts a cluster for the test `name` (used in the dir name); the
    /// Coffer role and its passfile are ready when this returns.
    pub fn start(name: &str) -> Result<PgCluster, Skip> {
        let began = Instant::now();
        static FOUND: OnceLock<Result<(PathBuf, String), Skip>> = OnceLock::new();
        let (bin, version) = FOUND
            .get_or_init(|| {
                let bin = PgCluster::bin_dir()?;
                let version = version_of(&bin.join("postgres"))?;
                Ok((bin, version))
            })
            .clone()?;
        let user =
            process::service_user().map_err(|e| Skip::new(format!("PostgreSQL cannot run as root: {e}")))?;
        let template = template(&bin, user.as_ref())?;
        let admin_password = template.admin_password.clone();
        let dir = process::temp_root("pg", name)?;
        let root = dir.path().to_owned();
        let data = root.join("data");
        let sock = root.join("sock");
        let io = |what: &str, e: std::io::Error| {
            Skip::new(format!("cannot prepare {what} in {}: {e}", root.display()))
        };
        process::copy_tree(&template.data, &data).map_err(Skip::new)?;
        make_dir_for(&sock, user.as_ref(), 0o755).map_err(|e| io("the socket directory", e))?;
        let ports = reserve_ports(1).map_err(Skip::new)?;
        let port = ports.get(0);
        let conf = format!(
            "\n# coffer test harness\n\
             listen_addresses = ''\n\
             unix_socket_directories = {}\n\
             port = {port}\n\
             fsync = off\n\
             full_page_writes = off\n\
             max_connections = 40\n\
             shared_buffers = 32MB\n\
             lc_messages = 'C'\n\
             timezone = 'UTC'\n\
             log_line_prefix = '%m [%p] '\n",
            conf_quote(&sock.to_string_lossy())
        );
        fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .map_err(|e| io("postgresql.conf", e))?;

        let password = random_hex(16);
        let passfile = root.join("coffer.pgpass");
        let admin_passfile = root.join("admin.pgpass");
        write_private(
            &passfile,
            passfile_line(&sock, port, COFFER_ROLE, &password).as_bytes(),
        )
        .map_err(|e| io("the Coffer passfile", e))?;
        let app_password = random_hex(16);
        let admin_lines = passfile_line(&sock, port, SUPERUSER, &admin_password)
            + &passfile_line(&sock, port, APP_ROLE, &app_password);
        write_private(&admin_passfile, admin_lines.as_bytes()).map_err(|e| io("the admin passfile", e))?;

        let mut pg = PgCluster {
            bin,
            version,
            user,
            data: fs::canonicalize(&data).unwrap_or(data),
            sock,
            log: root.join("postgres.log"),
            passfile,
            admin_passfile,
            password,
            ports,
            child: None,
            startup: Duration::ZERO,
            dir,
        };
        pg.spawn().map_err(Skip::new)?;
        let setup = format!(
            "CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{pw}';\n\
             GRANT pg_read_all_data TO {role};\n\
             GRANT pg_signal_backend TO {role};\n\
             CREATE ROLE {app} LOGIN PASSWORD '{app_pw}';\n",
            role = ident(COFFER_ROLE),
            pw = pg.password,
            app = ident(APP_ROLE),
            app_pw = app_password,
        );
        pg.try_psql("postgres", &setup)
            .map_err(|e| Skip::new(format!("cannot create the {COFFER_ROLE} role: {e}")))?;
        pg.startup = began.elapsed();
        Ok(pg)
    }

    /// Starts `postgres` on the data dir and waits until it accepts connections.
    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = server_command(&self.bin.join("postgres"), self.user.as_ref());
        cmd.current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .arg("-D")
            .arg(&self.data);
        let mut child = spawn_logged(cmd, &self.log)?;
        let pidfile = self.data.join("postmaster.pid");
        let socket = self.sock.join(format!(".s.PGSQL.{}", self.port()));
        let mut exited = None;
        let ready = wait_until(START_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            // postmaster.pid: line 1 the pid (a killed server leaves its file behind,
            // saying "ready"), line 8 the status ("ready" once it accepts connections).
            let pid = child.id().to_string();
            fs::read_to_string(&pidfile).is_ok_and(|t| {
                let lines: Vec<&str> = t.lines().map(str::trim).collect();
                lines.first() == Some(&pid.as_str()) && lines.get(7) == Some(&"ready")
            }) && socket.exists()
        });
        if let Some(status) = exited {
            return Err(format!(
                "postgres exited during start-up ({status}); log: {}",
                log_tail(&self.log, 8)
            ));
        }
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "postgres did not become ready within {START_TIMEOUT:?}; log: {}",
                log_tail(&self.log, 8)
            ));
        }
        self.child = Some(child);
        Ok(())
    }

    /// How long [`PgCluster::start`] took (initdb, start, role setup).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The server version, e.g. "15.18".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The path of a PostgreSQL tool of the same version, e.g. `pg.tool("pg_dump")`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The directory holding the server's Unix socket (libpq's `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// The port (it only names the socket file `.s.PGSQL.<port>`: no TCP).
    pub fn port(&self) -> u16 {
        self.ports.get(0)
    }

    /// The account the server runs as (`coffer-pgtest`, `nobody`), or `None` when it
    /// runs as the test's own user (tests not run as root).
    pub fn server_user(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.name.as_str())
    }

    /// The Coffer login role's name ([`COFFER_ROLE`]).
    pub fn role(&self) -> &str {
        COFFER_ROLE
    }

    /// The Coffer role's passfile (0600), for `PGPASSFILE`.
    pub fn passfile(&self) -> &Path {
        &self.passfile
    }

    /// The Coffer role's password, for tests that hand it over another way (e.g. a
    /// `$CREDENTIALS_DIRECTORY` file). Never put it on a command line.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The cluster's temp dir (data/, sock/, logs, passfiles).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A libpq URI for `db` as the Coffer role, without password:
    /// `postgresql:///db?host=<socket dir>&port=<port>&user=coffer`.
    pub fn uri(&self, db: &str) -> String {
        self.uri_as(COFFER_ROLE, db)
    }

    fn uri_as(&self, user: &str, db: &str) -> String {
        format!(
            "postgresql:///{}?host={}&port={}&user={}",
            pct(db, false),
            pct(&self.sock.to_string_lossy(), true),
            self.port(),
            pct(user, false)
        )
    }

    fn psql_command(&self, user: &str, passfile: &Path, db: &str) -> Command {
        let mut cmd = command(self.bin.join("psql"));
        cmd.env("PGPASSFILE", passfile)
            .env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-q", "-t", "-A", "-w", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.uri_as(user, db));
        cmd
    }

    fn psql_result(&self, user: &str, passfile: &Path, db: &str, sql: &str) -> Result<String, String> {
        let out: Captured = run(
            self.psql_command(user, passfile, db),
            Some(sql.as_bytes()),
            SQL_TIMEOUT,
        )?;
        if out.success() {
            Ok(out.stdout_text().trim_end_matches('\n').to_owned())
        } else {
            Err(out.stderr.trim().to_owned())
        }
    }

    /// Runs `sql` (on stdin) in `db` as the superuser; tuples only, unaligned (`|`
    /// between columns, one row per line), trailing newline removed. Panics on error.
    #[track_caller]
    pub fn psql(&self, db: &str, sql: &str) -> String {
        match self.try_psql(db, sql) {
            Ok(out) => out,
            Err(e) => panic!("psql in {db} failed: {e}\n--- sql ---\n{sql}"),
        }
    }

    /// [`PgCluster::psql`] returning psql's stderr on failure instead of panicking.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.psql_result(SUPERUSER, &self.admin_passfile, db, sql)
    }

    /// Runs `sql` in `db` as the Coffer role (through its passfile), to check what
    /// that role may and may not do.
    pub fn psql_as_coffer(&self, db: &str, sql: &str) -> Result<String, String> {
        self.psql_result(COFFER_ROLE, &self.passfile, db, sql)
    }

    /// Creates database `db` owned by the Coffer role.
    #[track_caller]
    pub fn create_database(&self, db: &str) {
        self.create_database_owned_by(db, COFFER_ROLE);
    }

    /// Creates database `db` owned by `owner`, creating `owner` (NOLOGIN) if missing.
    #[track_caller]
    pub fn create_database_owned_by(&self, db: &str, owner: &str) {
        let role = literal(owner);
        self.psql(
            "postgres",
            &format!(
                "SELECT format('CREATE ROLE %I', {role}) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {role}) \\gexec\n\
                 CREATE DATABASE {} OWNER {};",
                ident(db),
                ident(owner)
            ),
        );
    }

    /// Drops database `db` (terminating its sessions) if it exists.
    #[track_caller]
    pub fn drop_database(&self, db: &str) {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE);", ident(db)),
        );
    }

    /// The names of the non-template databases, sorted.
    pub fn databases(&self) -> Vec<String> {
        let out = self.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1;",
        );
        out.lines().map(str::to_owned).collect()
    }

    /// `pg_database_size(db)` in bytes.
    pub fn database_size(&self, db: &str) -> u64 {
        self.psql("postgres", &format!("SELECT pg_database_size({});", literal(db)))
            .trim()
            .parse()
            .expect("pg_database_size is a number")
    }

    /// Makes database `db` (owned by the Coffer role) of about `mib` MiB with
    /// `pgbench -i` (scale ~ mib/16, at least 1), as the Coffer role; returns its size
    /// in bytes. About 10 s per GiB here.
    #[track_caller]
    pub fn pgbench_database(&self, db: &str, mib: u64) -> u64 {
        // pgbench's scale 1 is 100,000 accounts: ~15 MiB of tables and indexes plus
        // ~7.5 MiB for an empty database's catalog.
        let scale = (mib.saturating_sub(7) / 15).max(1);
        self.create_database(db);
        let mut cmd = command(self.bin.join("pgbench"));
        cmd.env("PGPASSFILE", &self.passfile)
            .args(["-i", "-q", "-s", &scale.to_string(), "-h"])
            .arg(&self.sock)
            .args(["-p", &self.port().to_string(), "-U", COFFER_ROLE, db]);
        let out = run(cmd, None, Duration::from_secs(1800)).unwrap_or_else(|e| panic!("pgbench: {e}"));
        assert!(
            out.success(),
            "pgbench -i -s {scale} {db} failed: {}",
            out.failure()
        );
        self.database_size(db)
    }

    /// An open session on `db` as the application role [`APP_ROLE`] (a `psql`
    /// waiting on its stdin), e.g. to make a restore in place find "other sessions";
    /// closed on drop. (Coffer's role may not end superusers' sessions.)
    pub fn open_session(&self, db: &str) -> Session {
        let mut cmd = self.psql_command(APP_ROLE, &self.admin_passfile, db);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start psql");
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = std::io::Write::write_all(stdin, b"SELECT 1;\n");
        }
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid();",
            literal(db)
        );
        let opened = wait_until(Duration::from_secs(20), || {
            self.try_psql("postgres", &sql).is_ok_and(|n| n.trim() != "0")
        });
        assert!(opened, "the session on {db} did not show up in pg_stat_activity");
        Session { child }
    }

    /// The postmaster's pid. Panics if the server is not running.
    #[track_caller]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("postgres is not running").id()
    }

    /// Whether the postmaster is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Fast shutdown (SIGINT: sessions are disconnected, a checkpoint is written);
    /// SIGKILL after 30 s.
    pub fn stop(&mut self) {
        terminate(&mut self.child, "INT", Duration::from_secs(30));
        self.wait_orphans(Duration::from_secs(10));
    }

    /// SIGKILLs the postmaster, as a crash would, and waits until its backends (which
    /// notice their parent is gone) have exited, so [`PgCluster::start_again`] runs
    /// crash recovery on a free data dir.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.wait_orphans(Duration::from_secs(10));
    }

    /// Waits for processes still working in the data dir; SIGKILLs them after `timeout`.
    fn wait_orphans(&self, timeout: Duration) {
        if !wait_until(timeout, || pids_with_cwd(&self.data).is_empty()) {
            for pid in pids_with_cwd(&self.data) {
                process::signal(pid, "KILL");
            }
            wait_until(Duration::from_secs(5), || pids_with_cwd(&self.data).is_empty());
        }
    }

    /// Starts the server again on the same data dir, socket and port (after
    /// [`PgCluster::stop`] or [`PgCluster::kill9`]). Panics with the log tail if it
    /// does not come up.
    #[track_caller]
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: postgres is still running");
        if let Err(e) = self.spawn() {
            panic!("cannot start postgres again: {e}");
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate shutdown: nothing here needs to survive.
        if let Some(mut child) = self.child.take() {
            process::signal(child.id(), "QUIT");
            if wait_exit(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.wait_orphans(Duration::from_secs(5));
    }
}

/// A `psql` session held open by [`PgCluster::open_session`]; killed on drop.
pub struct Session {
    child: Child,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "15.18" from `postgres --version` ("postgres (PostgreSQL) 15.18 (Debian ...)").
fn version_of(postgres: &Path) -> Result<String, Skip> {
    let mut cmd = command(postgres);
    cmd.arg("--version");
    let out = run(cmd, None, Duration::from_secs(10)).map_err(Skip::new)?;
    out.stdout_text()
        .split_whitespace()
        .nth(2)
        .map(str::to_owned)
        .ok_or_else(|| Skip::new(format!("cannot read the version of {}", postgres.display())))
}

/// A SQL identifier, always quoted.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A postgresql.conf string value.
fn conf_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// One `.pgpass` line; for a socket connection libpq matches the host field against
/// the socket directory.
fn passfile_line(sock: &Path, port: u16, user: &str, password: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!(
        "{}:{port}:*:{}:{}\n",
        esc(&sock.to_string_lossy()),
        esc(user),
        esc(password)
    )
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn pct(text: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parts_are_encoded() {
        assert_eq!(pct("my db/ä", false), "my%20db%2F%C3%A4");
        assert_eq!(pct("/tmp/x-1", true), "/tmp/x-1");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            passfile_line(Path::new("/tmp/a:b"), 5, "u", "p:w\\"),
            "/tmp/a\\:b:5:*:u:p\\:w\\\\\n"
        );
    }
}
