//! A real `cofferd` in a temporary directory ([`Daemon`]), its paths, job sections,
//! and size-limited filesystems for full-disk tests ([`Tmpfs`]).

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::*;

/// Where a test daemon keeps things (all inside one temporary directory).
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub staging: PathBuf,
    /// The daemon's stderr (appended across restarts).
    pub log: PathBuf,
}

impl Paths {
    fn new(root: &Path) -> Paths {
        let state_dir = root.join("state");
        Paths {
            root: root.to_owned(),
            config: root.join("cofferd.toml"),
            socket: root.join("cofferd.sock"),
            staging: state_dir.join("staging"),
            state_dir,
            backup_dir: root.join("backups"),
            log: root.join("cofferd.log"),
        }
    }

    /// `<backup-dir>/<job>/<id>.tar.zst`.
    pub fn archive(&self, job: &str, id: &str) -> PathBuf {
        self.backup_dir.join(job).join(format!("{id}.tar.zst"))
    }

    /// `<backup-dir>/<job>/<id>.json`.
    pub fn sidecar(&self, job: &str, id: &str) -> PathBuf {
        self.backup_dir.join(job).join(format!("{id}.json"))
    }
}

/// A temporary directory under /tmp with a short path, so socket paths stay well under
/// the 108-byte limit of `sun_path`.
pub fn short_tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("cannot create a temporary directory in /tmp")
}

/// Quotes `text` as a TOML basic string.
pub fn toml_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `[[job]]` section for tests: on demand only, no free-space floor, verified after
/// each backup. `extra` adds or overrides keys (e.g. `busy-timeout = "300ms"`).
pub fn job_toml(name: &str, database: &Path, media: &[&Path], extra: &str) -> String {
    let media: Vec<String> = media.iter().map(|m| toml_str(&m.display().to_string())).collect();
    let mut text = format!(
        "[[job]]\nname = {}\ndatabase = {}\nmedia = [{}]\n",
        toml_str(name),
        toml_str(&database.display().to_string()),
        media.join(", ")
    );
    let has = |key: &str| extra.lines().any(|l| l.trim_start().starts_with(key));
    for (key, line) in [
        ("schedule", "schedule = \"manual\""),
        ("min-free-space", "min-free-space = \"0B\""),
        ("verify-after-backup", "verify-after-backup = true"),
        ("catch-up", "catch-up = false"),
    ] {
        if !has(key) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(extra);
    text.push('\n');
    text
}

/// A `[[job]]` section for a job whose source is given as TOML lines (e.g.
/// `postgres = "..."` and `postgres-passfile = "..."`), with the defaults of
/// [`job_toml`].
pub fn source_job_toml(name: &str, source: &str, media: &[&Path], extra: &str) -> String {
    let media: Vec<String> = media.iter().map(|m| toml_str(&m.display().to_string())).collect();
    let mut text = format!(
        "[[job]]\nname = {}\n{source}\nmedia = [{}]\n",
        toml_str(name),
        media.join(", ")
    );
    let has = |key: &str| extra.lines().any(|l| l.trim_start().starts_with(key));
    for (key, line) in [
        ("schedule", "schedule = \"manual\""),
        ("min-free-space", "min-free-space = \"0B\""),
        ("verify-after-backup", "verify-after-backup = true"),
        ("catch-up", "catch-up = false"),
    ] {
        if !has(key) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(extra);
    text.push('\n');
    text
}

/// Whether this process runs as root (from /proc: the tests forbid unsafe code).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A size-limited tmpfs mounted on a fresh temporary directory; unmounted on drop.
/// Declare it before the [`Daemon`] using it, so the daemon stops first.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m"); `None` (with `SKIPPED:` and the reason
    /// printed) when this is not possible here, in which case the test skips.
    pub fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("SKIPPED: {test}: mounting a tmpfs needs root");
            return None;
        }
        let dir = short_tempdir("coffer-tmpfs-");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: {test}: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: {test}: cannot run mount: {e}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes available on the tmpfs, as `statvfs` reports them.
    pub fn free(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.path())
            .output()
            .expect("cannot run stat");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        parts.next().unwrap() * parts.next().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still has a file open there: detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// A running (or stopped) `cofferd` on a private socket, state dir and backup dir.
/// Dropping it stops the daemon with SIGTERM (SIGKILL after [`STOP_TIMEOUT`]) and
/// removes the directory.
pub struct Daemon {
    pub paths: Paths,
    child: Option<Child>,
    // Last: removed after the daemon is stopped.
    _dir: TempDir,
}

impl Daemon {
    /// Writes the config (`[daemon]` with socket/state-dir/backup-dir plus
    /// `daemon_extra` lines, then `jobs`) and starts cofferd; returns once it accepts
    /// connections.
    pub fn start(daemon_extra: &str, jobs: &str) -> Daemon {
        let daemon = Daemon::configure(daemon_extra, jobs);
        daemon.started()
    }

    /// Like [`Daemon::start`] but does not start the daemon (for tests that prepare
    /// the directories first or expect start-up to fail).
    pub fn configure(daemon_extra: &str, jobs: &str) -> Daemon {
        let dir = short_tempdir("coffer-e2e-");
        let paths = Paths::new(dir.path());
        let config = format!(
            "[daemon]\nsocket = {}\nstate-dir = {}\nbackup-dir = {}\nshutdown-grace = \"5s\"\n{daemon_extra}\n\n{jobs}\n",
            toml_str(&paths.socket.display().to_string()),
            toml_str(&paths.state_dir.display().to_string()),
            toml_str(&paths.backup_dir.display().to_string()),
        );
        fs::write(&paths.config, config).expect("cannot write cofferd.toml");
        Daemon {
            paths,
            child: None,
            _dir: dir,
        }
    }

    /// Moves the state dir (catalog.db, staging/) and the backup dir of a configured,
    /// not yet started daemon elsewhere (e.g. onto a [`Tmpfs`]).
    pub fn relocate(mut self, state_dir: &Path, backup_dir: &Path) -> Daemon {
        assert!(self.child.is_none(), "relocate the daemon before starting it");
        let mut text = fs::read_to_string(&self.paths.config).expect("cannot read cofferd.toml");
        let key = |name: &str, p: &Path| format!("{name} = {}", toml_str(&p.display().to_string()));
        for (name, old, new) in [
            ("state-dir", &self.paths.state_dir, state_dir),
            ("backup-dir", &self.paths.backup_dir, backup_dir),
        ] {
            let old = key(name, old);
            assert!(text.contains(&old), "{old} is not in cofferd.toml:\n{text}");
            text = text.replacen(&old, &key(name, new), 1);
        }
        fs::write(&self.paths.config, text).expect("cannot write cofferd.toml");
        self.paths.state_dir = state_dir.to_owned();
        self.paths.staging = state_dir.join("staging");
        self.paths.backup_dir = backup_dir.to_owned();
        self
    }

    /// Starts the configured daemon (see [`Daemon::configure`]).
    pub fn started(mut self) -> Daemon {
        self.spawn_and_wait();
        self
    }

    /// The `cofferd --config <this config>` command, for running extra instances.
    pub fn cofferd_command(&self) -> Command {
        let mut cmd = cofferd_command();
        cmd.arg("--config").arg(&self.paths.config);
        cmd
    }

    fn spawn_and_wait(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .expect("cannot open the daemon's log file");
        let mut cmd = self.cofferd_command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone the log file"))
            .stderr(log);
        let mut child = cmd.spawn().expect("cannot start cofferd");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("cannot wait for cofferd") {
                panic!(
                    "cofferd exited during start-up ({status}); its log:\n{}",
                    self.log()
                );
            }
            if UnixStream::connect(&self.paths.socket).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cofferd did not accept connections on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.paths.socket.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is not running").id()
    }

    /// Stops the daemon with SIGTERM and returns its exit status (SIGKILL and a panic
    /// if it does not stop within [`STOP_TIMEOUT`]).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon is not running");
        sigterm(child.id());
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cofferd did not stop within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Kills the daemon with SIGKILL (no clean-up: the socket file stays behind).
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the daemon is not running");
        child.kill().expect("cannot kill cofferd");
        child.wait().expect("cannot reap cofferd");
    }

    /// Starts the daemon again on the same config and directories.
    pub fn start_again(&mut self) {
        self.spawn_and_wait();
    }

    /// Stops the daemon with SIGTERM (asserting a clean exit) and starts it again.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "cofferd exited {status} on SIGTERM; log:\n{}",
            self.log()
        );
        self.start_again();
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.paths.log).unwrap_or_default()
    }

    /// A `cofferctl --socket <socket>` command.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = cofferctl_command();
        cmd.arg("--socket").arg(&self.paths.socket).args(args);
        cmd
    }

    /// Runs `cofferctl --socket <socket> args...` to completion.
    pub fn ctl(&self, args: &[&str]) -> Output {
        run(self.ctl_command(args), COMMAND_TIMEOUT)
    }

    /// Starts `cofferctl ... args...` in the background (output discarded into pipes
    /// the caller may read).
    pub fn ctl_spawn(&self, args: &[&str]) -> Child {
        self.ctl_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start cofferctl")
    }

    /// Runs `cofferctl --json args...`, asserts success and parses stdout.
    #[track_caller]
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        assert!(
            out.success(),
            "expected success from {out}\n--- daemon log ---\n{}",
            self.log()
        );
        out.json()
    }

    /// Takes a backup of `job` and returns its JSON (asserting success).
    #[track_caller]
    pub fn backup(&self, job: &str) -> Value {
        self.ctl_json(&["backup", job])
    }

    /// `cofferctl --json list [job]`.
    #[track_caller]
    pub fn list(&self, job: Option<&str>) -> Vec<Value> {
        let mut args = vec!["list"];
        args.extend(job);
        match self.ctl_json(&args) {
            Value::Array(list) => list,
            other => panic!("list is not a JSON array: {other}"),
        }
    }

    /// The `status --json` object of one job.
    #[track_caller]
    pub fn job_status(&self, job: &str) -> Value {
        let status = self.ctl_json(&["status"]);
        status["jobs"]
            .as_array()
            .expect("status has no jobs array")
            .iter()
            .find(|j| j["name"] == job)
            .unwrap_or_else(|| panic!("status does not list job {job}: {status}"))
            .clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(child.id());
            if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
