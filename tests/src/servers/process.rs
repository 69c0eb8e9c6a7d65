//! Plumbing shared by the servers: finding binaries, running short commands with a
//! timeout and piped stdin, spawning long-running servers with their output in a log
//! file, signals, free ports, random secrets and 0600 files.
//!
//! Every command starts from [`command`], which drops the caller's PostgreSQL, MySQL,
//! AWS and Coffer environment so nothing from the developer's shell leaks into a test,
//! and pins the locale so messages are the English ones tests match on.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use super::skip::{Skip, one_line};

/// Whether this process runs as root (from /proc: no unsafe code in the tests).
pub(crate) fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The first executable `name` in `dirs`, then on `PATH`.
pub(crate) fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `Command` for `program` without the caller's database/cloud/Coffer environment.
pub(crate) fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if ["PG", "AWS_", "MYSQL", "MARIADB", "COFFER_", "LC_"]
            .iter()
            .any(|p| key_text.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C.UTF-8").env("LANG", "C.UTF-8");
    cmd
}

/// What a finished short command produced.
#[derive(Debug)]
pub(crate) struct Captured {
    /// Exit code; -1 if killed by a signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Captured {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The error text of a failed run: stderr, else stdout, on one line.
    pub fn failure(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            self.stdout_text()
        } else {
            self.stderr.clone()
        };
        format!("exit code {}: {}", self.code, one_line(&text))
    }
}

/// Runs `cmd` with `stdin` (or none) to completion; kills it after `timeout`.
pub(crate) fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Captured, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // Writer and readers on their own threads: a child that fills its stdout pipe
    // before reading all its stdin would otherwise deadlock with us.
    let writer = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(data)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = wait_exit(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    match status {
        Some(status) => Ok(Captured {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{program} did not finish within {timeout:?}: {}",
            one_line(&stderr)
        )),
    }
}

/// Waits up to `timeout` for `child`; `None` if it is still running.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // Already reaped elsewhere: treat as gone.
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` every 20 ms; whether it held before `timeout`.
pub(crate) fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends signal `name` (e.g. "TERM") to `pid` through kill(1): no unsafe code here.
pub(crate) fn signal(pid: u32, name: &str) {
    let _ = command("kill")
        .args(["-s", name, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Sends `sig` to the child, waits `grace`, then SIGKILLs it; reaps it either way.
pub(crate) fn terminate(child: &mut Option<Child>, sig: &str, grace: Duration) {
    if let Some(mut c) = child.take() {
        if matches!(c.try_wait(), Ok(None)) {
            signal(c.id(), sig);
            if wait_exit(&mut c, grace).is_none() {
                let _ = c.kill();
            }
        }
        let _ = c.wait();
    }
}

/// An unprivileged account a server runs as (PostgreSQL refuses to run as root).
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The account's uid and primary gid, from the system's user database.
pub(crate) fn lookup_user(name: &str) -> Option<RunAs> {
    let out = run(
        {
            let mut c = command("getent");
            c.args(["passwd", name]);
            c
        },
        None,
        Duration::from_secs(10),
    )
    .ok()?;
    let line = out.stdout_text();
    let fields: Vec<&str> = line.trim().split(':').collect();
    if fields.len() < 4 {
        return None;
    }
    Some(RunAs {
        name: name.to_owned(),
        uid: fields[2].parse().ok()?,
        gid: fields[3].parse().ok()?,
    })
}

/// The dedicated system account for test servers that refuse root.
pub(crate) const SERVICE_USER: &str = "coffer-pgtest";

/// Whom to run such servers as: `None` (ourselves) when not root; as root the
/// dedicated [`SERVICE_USER`], created on first use, or `nobody` if it cannot be.
pub(crate) fn service_user() -> Result<Option<RunAs>, String> {
    static USER: OnceLock<Result<Option<RunAs>, String>> = OnceLock::new();
    USER.get_or_init(|| {
        if !is_root() {
            return Ok(None);
        }
        if let Some(user) = lookup_user(SERVICE_USER) {
            return Ok(Some(user));
        }
        // Created once per process (the OnceLock serialises concurrent tests); a
        // concurrent creation by another test process shows up in the second lookup.
        if let Some(useradd) = find_program("useradd", &[PathBuf::from("/usr/sbin")]) {
            let mut c = command(useradd);
            c.args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "Coffer test servers",
                SERVICE_USER,
            ]);
            let _ = run(c, None, Duration::from_secs(30));
            if let Some(user) = lookup_user(SERVICE_USER) {
                return Ok(Some(user));
            }
        }
        lookup_user("nobody")
            .map(Some)
            .ok_or_else(|| format!("neither the user {SERVICE_USER} nor nobody exists and useradd failed"))
    })
    .clone()
}

/// A server command: `program` run through `setpriv --pdeathsig KILL` (so it dies
/// with the thread that started it) and, with `user`, as that account.
pub(crate) fn server_command(program: &Path, user: Option<&RunAs>) -> Command {
    match find_program("setpriv", &[PathBuf::from("/usr/bin"), PathBuf::from("/bin")]) {
        Some(setpriv) => {
            let mut cmd = command(setpriv);
            cmd.args(["--pdeathsig", "KILL"]);
            if let Some(u) = user {
                cmd.arg(format!("--reuid={}", u.uid))
                    .arg(format!("--regid={}", u.gid))
                    .arg("--clear-groups");
            }
            cmd.arg("--").arg(program);
            cmd
        }
        None => {
            use std::os::unix::process::CommandExt;
            let mut cmd = command(program);
            if let Some(u) = user {
                cmd.uid(u.uid).gid(u.gid);
            }
            cmd
        }
    }
}

/// Spawns a server with stdin closed and stdout+stderr appended to `log`.
pub(crate) fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open the log {}: {e}", log.display()))
    };
    cmd.stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))
}

/// The last `lines` non-empty lines of a log file, on one line (" | " between lines).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(32 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let tail: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = &tail[tail.len().saturating_sub(lines)..];
    let mut joined = one_line(&tail.join(" | "));
    if joined.len() > 1500 {
        let mut cut = joined.len() - 1500;
        while !joined.is_char_boundary(cut) {
            cut += 1;
        }
        joined = format!("...{}", &joined[cut..]);
    }
    joined
}

/// `bytes` random bytes from the kernel, as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let read = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        // Not for secrecy beyond a test run: fall back to time and pid.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh directory `/tmp/coffer-<kind>-<name>-XXXXXX` (short: socket paths live in
/// it), readable by other users so a server running as another account can reach
/// its subdirectories.
pub(crate) fn temp_root(kind: &str, name: &str) -> Result<TempDir, Skip> {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(20)
        .collect();
    let dir = tempfile::Builder::new()
        .prefix(&format!("coffer-{kind}-{name}-"))
        .tempdir_in("/tmp")
        .map_err(|e| Skip::new(format!("cannot create a temporary directory in /tmp: {e}")))?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .map_err(|e| Skip::new(format!("cannot set permissions on {}: {e}", dir.path().display())))?;
    Ok(dir)
}

/// A fresh directory `/tmp/coffer-<kind>-tpl-<pid>-XXXXXX` (0755) for a template
/// made once per test process and copied for every server: it is kept until the
/// process ends (Rust runs no destructor for statics), so the templates of processes
/// that are gone are removed here first.
pub(crate) fn template_dir(kind: &str) -> Result<PathBuf, String> {
    let prefix = format!("coffer-{kind}-tpl-");
    if let Ok(entries) = fs::read_dir("/tmp") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in("/tmp")
        .map_err(|e| format!("cannot create a temporary directory in /tmp: {e}"))?
        .keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot set permissions on {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Copies directory `from` to `to` with `cp -a` (owners, modes and times kept).
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let mut cp = command("cp");
    cp.arg("-a").arg(from).arg(to);
    let out = run(cp, None, Duration::from_secs(300))?;
    if out.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot copy {} to {}: {}",
            from.display(),
            to.display(),
            out.failure()
        ))
    }
}

/// Writes `contents` to `path` with mode 0600 (replacing any existing file).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Creates `path` as a directory owned by `user` (if any) with `mode`.
pub(crate) fn make_dir_for(path: &Path, user: Option<&RunAs>, mode: u32) -> io::Result<()> {
    fs::create_dir_all(path)?;
    if let Some(u) = user {
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Processes whose working directory is `dir` (PostgreSQL's backends chdir into the
/// data directory, which is how orphans of a killed postmaster are found).
pub(crate) fn pids_with_cwd(dir: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// Ports are picked in 15000..22000 with a twin 10000 higher (SeaweedFS puts each
/// service's gRPC port at http port + 10000, and its worker assumes so): both below
/// Linux's ephemeral range (32768+), so outgoing connections never take them between
/// a stop and a `start_again`.
const PORT_LOW: u16 = 15000;
const PORT_SPAN: u16 = 7000;
/// Offset of a port's gRPC twin.
pub(crate) const GRPC_OFFSET: u16 = 10000;

static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Ports held by one server until it is dropped.
#[derive(Debug)]
pub(crate) struct PortLease(Vec<u16>);

impl PortLease {
    pub fn get(&self, i: usize) -> u16 {
        self.0[i]
    }

    pub fn all(&self) -> &[u16] {
        &self.0
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
        for p in &self.0 {
            taken.remove(p);
        }
    }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// `n` ports that are free now (each with a free gRPC twin), not handed to any other
/// server of this process. Another process may still take one before the server
/// binds it; callers retry a failed start with new ports.
pub(crate) fn reserve_ports(n: usize) -> Result<PortLease, String> {
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    // A different starting point per process and call spreads parallel test binaries.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let start = (seed % u32::from(PORT_SPAN)) as u16;
    let mut got = Vec::with_capacity(n);
    for i in 0..PORT_SPAN {
        let port = PORT_LOW + (start + i) % PORT_SPAN;
        if !taken.contains(&port) && bindable(port) && bindable(port + GRPC_OFFSET) {
            got.push(port);
            if got.len() == n {
                break;
            }
        }
    }
    if got.len() < n {
        return Err(format!("cannot find {n} free TCP ports on 127.0.0.1"));
    }
    taken.extend(got.iter().copied());
    Ok(PortLease(got))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_and_released() {
        let a = reserve_ports(5).unwrap();
        let b = reserve_ports(5).unwrap();
        let all: BTreeSet<u16> = a.all().iter().chain(b.all()).copied().collect();
        assert_eq!(all.len(), 10);
        let first = a.get(0);
        drop(a);
        assert!(!TAKEN.lock().unwrap().contains(&first));
    }

    #[test]
    fn runs_with_stdin_and_timeout() {
        let out = run(command("cat"), Some(b"hello"), Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"hello");
        let mut sleep = command("sleep");
        sleep.arg("5");
        assert!(run(sleep, None, Duration::from_millis(100)).is_err());
    }

    #[test]
    fn log_tail_is_one_line_of_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        fs::write(&log, "a\nb\n\nc\nd\n").unwrap();
        assert_eq!(log_tail(&log, 2), "c | d");
    }

    #[test]
    fn private_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        write_private(&f, b"x").unwrap();
        write_private(&f, b"y").unwrap();
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&f).unwrap(), b"y");
    }
}
