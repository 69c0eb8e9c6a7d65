//! Test support for Coffer's end-to-end tests: the real `cofferd` and `cofferctl`
//! binaries, driven from Rust.
//!
//! - [`Daemon`] writes a `cofferd.toml` into a fresh temporary directory, starts
//!   `cofferd` on a socket there, waits until it accepts connections, runs `cofferctl`
//!   against it ([`Daemon::ctl`], [`Daemon::ctl_json`]) and stops it with SIGTERM on
//!   drop. The daemon's stderr goes to a file ([`Daemon::log`]).
//!   [`Daemon::relocate`] moves its state and backup dirs, e.g. onto a [`Tmpfs`]
//!   (a size-limited filesystem; root only, otherwise the test skips).
//! - [`App`] is an application's data: a SQLite database ([`make_app_db`]) and a media
//!   tree ([`make_media`]) with the awkward cases (symlink, empty file, non-ASCII name,
//!   modes 0600/0755), and [`job_toml`] turns it into a `[[job]]` section.
//! - [`extract_archive`] and [`archive_entries`] read archives with the `tar` and `zstd`
//!   crates directly, never with Coffer's own code, as a user restoring by hand would.
//! - [`table_rows`], [`assert_same_db`] and [`assert_tree_eq`] compare what came out
//!   with what went in; [`db_difference`] and [`tree_difference`] say the same without
//!   panicking, for tests that accept one of several states.
//!
//! The binaries are not built by `cargo test`; run `cargo build --workspace --bins`
//! first. They are found next to the test executable (`target/<profile>/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// How long `cofferd` may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `cofferd` may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `cofferctl` (or short-lived `cofferd`) run may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Binaries and processes
// ---------------------------------------------------------------------------

/// The directory holding the workspace's binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries one level up.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the test executable");
    let mut dir = exe
        .parent()
        .expect("the test executable has no directory")
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Path of the `cofferd` binary.
pub fn cofferd_bin() -> PathBuf {
    binary("cofferd")
}

/// Path of the `cofferctl` binary.
pub fn cofferctl_bin() -> PathBuf {
    binary("cofferctl")
}

/// A `Command` with no Coffer-related environment leaking in from the caller.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "COFFER_SOCKET",
        "COFFER_CONFIG",
        "COFFER_LOG",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A `cofferd` command (no arguments yet).
pub fn cofferd_command() -> Command {
    clean_command(&cofferd_bin())
}

/// A `cofferctl` command (no arguments yet).
pub fn cofferctl_command() -> Command {
    clean_command(&cofferctl_bin())
}

/// The outcome of a finished command.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; -1 if killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// What was run, for messages.
    pub command: String,
}

impl Output {
    /// Whether the exit code is 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panics (showing everything) unless the exit code is 0.
    #[track_caller]
    pub fn expect_ok(self) -> Output {
        assert!(self.success(), "expected success from {self}");
        self
    }

    /// Panics unless the exit code is `code` and stderr contains `phrase`.
    #[track_caller]
    pub fn expect_failure(self, code: i32, phrase: &str) -> Output {
        assert_eq!(self.code, code, "wrong exit code from {self}");
        assert!(
            self.stderr.contains(phrase),
            "stderr should contain {phrase:?}; got {self}"
        );
        self
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self}"))
    }

    /// The error sentence of a failed cofferctl: asserts exactly one `cofferctl: `
    /// line on stderr, and that it is the last one.
    #[track_caller]
    pub fn error_sentence(&self) -> String {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("cofferctl: "))
            .collect();
        assert_eq!(errors.len(), 1, "expected one error line: {self}");
        assert_eq!(self.stderr.trim().lines().last(), Some(errors[0]), "{self}");
        errors[0].to_owned()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn code_of(status: ExitStatus) -> i32 {
    status.code().unwrap_or(-1)
}

/// Runs `cmd` to completion with piped stdout/stderr; kills it and panics after
/// `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let command = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{command}` did not finish within {timeout:?}; stderr so far: {}",
                stderr.join().unwrap_or_default()
            );
        }
    };
    Output {
        code: code_of(status),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        command,
    }
}

/// Waits for `child` up to `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("cannot wait for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `pid` (through kill(1): the tests forbid unsafe code).
fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// A small fast deterministic PRNG (SplitMix64): test data, not cryptography.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of a file's content.
pub fn sha256_file(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Fills `dir` (created if missing) with a media tree:
///
/// ```text
/// a/b/file.bin            200 KiB of random bytes
/// a/b/c/deep.txt          nested text
/// bin/run.sh              mode 0755
/// empty                   0 bytes
/// empty-dir/              an empty directory
/// link -> a/b/file.bin    relative symlink
/// secret.key              mode 0600
/// straße ünïcødé.txt      non-ASCII name
/// ```
pub fn make_media(dir: &Path) {
    let mut rng = Rng::new(0x5EED_0001);
    fs::create_dir_all(dir.join("a/b/c")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("empty-dir")).unwrap();
    fs::write(dir.join("a/b/file.bin"), rng.bytes(200 * 1024)).unwrap();
    fs::write(dir.join("a/b/c/deep.txt"), "deep inside\n".repeat(50)).unwrap();
    fs::write(dir.join("bin/run.sh"), "#!/bin/sh\necho hello\n").unwrap();
    set_mode(&dir.join("bin/run.sh"), 0o755);
    fs::write(dir.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("a/b/file.bin", dir.join("link")).unwrap();
    fs::write(dir.join("secret.key"), rng.bytes(64)).unwrap();
    set_mode(&dir.join("secret.key"), 0o600);
    fs::write(dir.join("straße ünïcødé.txt"), "Grüße aus Köln — 東京 🎉\n").unwrap();
}

/// Texts with the awkward parts of Unicode.
const TEXTS: &[&str] = &[
    "plain ascii",
    "Zoë Ångström",
    "東京都",
    "emoji 🎉🦀",
    "straße",
    "",
    "quote ' and \" and \\",
    "new\nline",
    "right-to-left עברית",
];

/// Creates a database at `path` with tables of varied types and a few hundred rows:
/// `users` (unique index), `posts` (foreign key to users, AUTOINCREMENT so
/// `sqlite_sequence` exists), `blobs` (BLOB column incl. NULL, empty and an
/// overflow-page-sized one), `tags` (secondary and compound indexes), plus
/// `user_version` 12 and an `application_id`. `wal` selects the journal mode.
pub fn make_app_db(path: &Path, wal: bool) {
    let conn = Connection::open(path).unwrap();
    let mode = if wal { "WAL" } else { "DELETE" };
    let got: String = conn
        .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(got.to_ascii_uppercase(), mode);
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         PRAGMA user_version = 12;
         PRAGMA application_id = 1129268838;
         CREATE TABLE users(
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             email TEXT UNIQUE,
             score REAL,
             bio TEXT,
             created INTEGER
         );
         CREATE TABLE posts(
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             user_id INTEGER NOT NULL REFERENCES users(id),
             title TEXT NOT NULL,
             body TEXT,
             published INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX posts_user ON posts(user_id);
         CREATE TABLE blobs(id INTEGER PRIMARY KEY, name TEXT, data BLOB);
         CREATE TABLE tags(post_id INTEGER NOT NULL REFERENCES posts(id), tag TEXT NOT NULL, weight REAL);
         CREATE INDEX tags_tag ON tags(tag);
         CREATE UNIQUE INDEX tags_post_tag ON tags(post_id, tag);
         CREATE VIEW published AS SELECT * FROM posts WHERE published = 1;",
    )
    .unwrap();
    let mut rng = Rng::new(0x5EED_0002);
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut users = tx
            .prepare(
                "INSERT INTO users(id, name, email, score, bio, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        for i in 1..=300i64 {
            let text = TEXTS[(i as usize) % TEXTS.len()];
            let email: Option<String> = (i % 7 != 0).then(|| format!("user{i}@example.org"));
            let score: Option<f64> = match i % 5 {
                0 => None,
                1 => Some(-1.0e300),
                2 => Some(0.1 * i as f64),
                _ => Some(rng.below(1_000_000) as f64 / 3.0),
            };
            let bio: Option<String> = (i % 3 != 0).then(|| format!("{text} #{i}"));
            let created: i64 = match i {
                1 => i64::MIN,
                2 => i64::MAX,
                3 => 0,
                _ => 1_700_000_000 + rng.below(10_000_000) as i64,
            };
            users
                .execute(rusqlite::params![
                    i,
                    format!("{text} {i}"),
                    email,
                    score,
                    bio,
                    created
                ])
                .unwrap();
        }
        let mut posts = tx
            .prepare("INSERT INTO posts(user_id, title, body, published) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for i in 0..600u64 {
            let user = 1 + rng.below(300) as i64;
            let body: Option<String> =
                (i % 11 != 0).then(|| TEXTS[(i as usize) % TEXTS.len()].repeat(1 + (i % 40) as usize));
            posts
                .execute(rusqlite::params![
                    user,
                    format!("post {i} — {}", TEXTS[(i % 9) as usize]),
                    body,
                    (i % 2) as i64
                ])
                .unwrap();
        }
        // Leave a gap in the AUTOINCREMENT sequence.
        tx.execute("DELETE FROM posts WHERE id % 50 = 0", []).unwrap();
        let mut blobs = tx
            .prepare("INSERT INTO blobs(name, data) VALUES (?1, ?2)")
            .unwrap();
        for i in 0..100usize {
            let data: Option<Vec<u8>> = match i {
                0 => None,
                1 => Some(Vec::new()),
                2 => Some(rng.bytes(100 * 1024)),
                _ => {
                    let len = rng.below(8192) as usize;
                    Some(rng.bytes(len))
                }
            };
            blobs
                .execute(rusqlite::params![format!("blob-{i}"), data])
                .unwrap();
        }
        let mut tags = tx
            .prepare("INSERT OR IGNORE INTO tags(post_id, tag, weight) VALUES (?1, ?2, ?3)")
            .unwrap();
        let post_ids: Vec<i64> = tx
            .prepare("SELECT id FROM posts")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for i in 0..500usize {
            let post = post_ids[rng.below(post_ids.len() as u64) as usize];
            let weight: Option<f64> = (i % 4 != 0).then(|| rng.below(100) as f64 / 7.0);
            tags.execute(rusqlite::params![post, format!("tag-{}", i % 37), weight])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// An application's data in its own temporary directory: `app.db` and `media/`.
pub struct App {
    pub db: PathBuf,
    pub media: PathBuf,
    pub dir: TempDir,
}

impl App {
    /// A database from [`make_app_db`] and a tree from [`make_media`].
    pub fn new(wal: bool) -> App {
        let dir = short_tempdir("coffer-app-");
        let db = dir.path().join("app.db");
        let media = dir.path().join("media");
        make_app_db(&db, wal);
        make_media(&media);
        App { db, media, dir }
    }

    /// The `[[job]]` section backing this app up as `name`.
    pub fn job(&self, name: &str, extra: &str) -> String {
        job_toml(name, &self.db, &[&self.media], extra)
    }
}

/// Every file (not directory) under `dir`, recursively, sorted; empty if `dir` is
/// Every `*.partial` file under `dir` (half-written files that must not outlive a run).
pub fn partial_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect()
}

/// missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Names of the entries directly inside `dir` (sorted; empty if missing).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// Ledger: an application writing in transactions
// ---------------------------------------------------------------------------

/// A ledger database and writers that move money between its accounts, for tests of
/// snapshots under concurrent writes. Every committed state has the same total
/// balance, and every account's balance agrees with the transfer log, so a snapshot
/// that mixes two states is caught by [`ledger::check`].
pub mod ledger {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use rusqlite::{Connection, TransactionBehavior, params};

    use super::Rng;

    /// Accounts in a ledger.
    pub const ACCOUNTS: i64 = 100;
    /// Each account's opening balance; the total is `ACCOUNTS * START_BALANCE` forever.
    pub const START_BALANCE: i64 = 1_000;
    /// Bytes of one random (incompressible) filler row.
    pub const FILLER_ROW_BYTES: usize = 64 * 1024;

    /// Creates a ledger at `path` in `journal_mode` (`WAL` or `DELETE`) with tables
    /// `ledger` (the accounts), `transfers` (the log, empty) and `filler_rows` rows of
    /// filler, so that a backup takes a noticeable time.
    pub fn make(path: &Path, journal_mode: &str, filler_rows: usize) {
        let conn = Connection::open(path).unwrap();
        let mode: String = conn
            .query_row(&format!("PRAGMA journal_mode={journal_mode}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode.to_ascii_uppercase(), journal_mode.to_ascii_uppercase());
        conn.execute_batch(
            "CREATE TABLE ledger(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE TABLE transfers(id INTEGER PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL,
                                    amount INTEGER NOT NULL);
             CREATE TABLE filler(id INTEGER PRIMARY KEY, data BLOB NOT NULL);",
        )
        .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for id in 1..=ACCOUNTS {
            tx.execute(
                "INSERT INTO ledger(id, balance) VALUES (?1, ?2)",
                params![id, START_BALANCE],
            )
            .unwrap();
        }
        let mut rng = Rng::new(0x5EED_0003);
        {
            let mut insert = tx.prepare("INSERT INTO filler(data) VALUES (?1)").unwrap();
            for _ in 0..filler_rows {
                insert.execute([rng.bytes(FILLER_ROW_BYTES)]).unwrap();
            }
        }
        tx.commit().unwrap();
        if mode.eq_ignore_ascii_case("wal") {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
    }

    /// Time since the Unix epoch: commits of several processes line up on it.
    pub fn now() -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is before 1970")
    }

    /// One commit of a writer: when it began (see [`now`]) and how long it took from
    /// `BEGIN IMMEDIATE` to the end of `COMMIT`, busy waits included.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Commit {
        pub start: Duration,
        pub latency: Duration,
    }

    impl Commit {
        /// When the commit had certainly happened.
        pub fn end(&self) -> Duration {
            self.start + self.latency
        }
    }

    /// Moves a random amount between two random accounts and logs it in `transfers`,
    /// one transaction every 2–5 ms, while `keep_going()` says so. Waits for locks up to
    /// 30 s (so a rollback-journal writer waits out a snapshot instead of failing);
    /// any error ends the loop and is returned. `count` is raised after each commit.
    pub fn writer(
        db: &Path,
        seed: u64,
        count: &AtomicUsize,
        mut keep_going: impl FnMut() -> bool,
    ) -> Result<Vec<Commit>, String> {
        let mut conn = Connection::open(db).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        // What applications typically run with: in WAL mode commits do not fsync, so
        // latency reflects locking, not the disk.
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(|e| e.to_string())?;
        let mut rng = Rng::new(seed);
        let mut commits = Vec::new();
        while keep_going() {
            let src = 1 + rng.below(ACCOUNTS as u64) as i64;
            let dst = 1 + rng.below(ACCOUNTS as u64) as i64;
            let amount = 1 + rng.below(50) as i64;
            let start = now();
            let clock = Instant::now();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| format!("BEGIN IMMEDIATE failed: {e}"))?;
            for (sql, account, sign) in [
                ("UPDATE ledger SET balance = balance - ?1 WHERE id = ?2", src, "-"),
                ("UPDATE ledger SET balance = balance + ?1 WHERE id = ?2", dst, "+"),
            ] {
                tx.execute(sql, params![amount, account])
                    .map_err(|e| format!("UPDATE ({sign}) failed: {e}"))?;
            }
            tx.execute(
                "INSERT INTO transfers(src, dst, amount) VALUES (?1, ?2, ?3)",
                params![src, dst, amount],
            )
            .map_err(|e| format!("INSERT failed: {e}"))?;
            tx.commit().map_err(|e| format!("COMMIT failed: {e}"))?;
            commits.push(Commit {
                start,
                latency: clock.elapsed(),
            });
            count.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2 + rng.below(4)));
        }
        Ok(commits)
    }

    /// The `p` quantile (0..=1) of sorted durations; zero when empty.
    pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[index]
    }

    /// What [`check`] counted in a consistent ledger.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Checked {
        pub transfers: i64,
        pub filler: i64,
    }

    /// Asserts that the ledger at `db` is one transaction-consistent state:
    /// `PRAGMA integrity_check` is ok, all accounts are there, the balances add up to
    /// the opening total and agree with the transfer log.
    #[track_caller]
    pub fn check(db: &Path) -> Checked {
        let conn = Connection::open(db).unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()));
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "integrity_check of {}", db.display());
        let (accounts, total): (i64, i64) = conn
            .query_row("SELECT count(*), sum(balance) FROM ledger", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(accounts, ACCOUNTS, "accounts in {}", db.display());
        assert_eq!(
            total,
            ACCOUNTS * START_BALANCE,
            "the balances in {} do not add up",
            db.display()
        );
        let disagreeing: i64 = conn
            .query_row(
                "SELECT count(*) FROM ledger l WHERE l.balance != ?1
                     + coalesce((SELECT sum(amount) FROM transfers WHERE dst = l.id), 0)
                     - coalesce((SELECT sum(amount) FROM transfers WHERE src = l.id), 0)",
                [START_BALANCE],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            disagreeing,
            0,
            "balances in {} disagree with the transfer log",
            db.display()
        );
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        Checked {
            transfers: count("transfers"),
            filler: count("filler"),
        }
    }
}

// ---------------------------------------------------------------------------
// Archives
// ---------------------------------------------------------------------------

/// One tar entry as the `tar` crate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub size: u64,
    pub mode: u32,
    pub link: Option<String>,
}

fn open_archive(
    archive: &Path,
) -> tar::Archive<zstd::stream::read::Decoder<'static, std::io::BufReader<fs::File>>> {
    let file = fs::File::open(archive).unwrap_or_else(|e| panic!("cannot open {}: {e}", archive.display()));
    tar::Archive::new(zstd::stream::read::Decoder::new(file).expect("not a zstd stream"))
}

/// The archive's entries in order, read with the `tar` and `zstd` crates.
pub fn archive_entries(archive: &Path) -> Vec<TarEntry> {
    let mut tar = open_archive(archive);
    tar.entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.expect("unreadable tar entry");
            let header = entry.header();
            TarEntry {
                // Directories may be stored with a trailing slash; compare without.
                path: entry
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_owned(),
                kind: header.entry_type(),
                size: header.size().unwrap(),
                mode: header.mode().unwrap(),
                link: entry
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
            }
        })
        .collect()
}

/// Unpacks `archive` into `into` with the `tar` and `zstd` crates (permissions, mtimes
/// and symlinks preserved) and returns its `manifest.json`.
pub fn extract_archive(archive: &Path, into: &Path) -> Value {
    fs::create_dir_all(into).unwrap();
    let mut tar = open_archive(archive);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.set_overwrite(false);
    tar.unpack(into)
        .unwrap_or_else(|e| panic!("cannot unpack {}: {e}", archive.display()));
    let text = fs::read_to_string(into.join("manifest.json")).expect("the archive has no manifest.json");
    serde_json::from_str(&text).expect("manifest.json is not JSON")
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------

fn open_ro(db: &Path) -> Connection {
    Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()))
}

/// Every row of `table`, ordered by rowid.
pub fn table_rows(db: &Path, table: &str) -> Vec<Vec<SqlValue>> {
    let conn = open_ro(db);
    rows_of(&conn, table)
}

fn rows_of(conn: &Connection, table: &str) -> Vec<Vec<SqlValue>> {
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {quoted} ORDER BY rowid"))
        .unwrap();
    let columns = stmt.column_count();
    stmt.query_map([], |row| {
        (0..columns).map(|i| row.get::<_, SqlValue>(i)).collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The schema (type, name, table, sql) without root pages, which `VACUUM` renumbers.
fn schema_of(conn: &Connection) -> Vec<(String, String, String, Option<String>)> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Asserts that two databases have the same schema, `user_version`, `application_id`
/// and, table by table (from `sqlite_master`), the same rows in rowid order.
#[track_caller]
pub fn assert_same_db(a: &Path, b: &Path) {
    if let Some(difference) = db_difference(a, b) {
        panic!("{difference}");
    }
}

/// The first difference [`assert_same_db`] would report, or `None` if the databases
/// agree (for tests that accept one of several states).
pub fn db_difference(a: &Path, b: &Path) -> Option<String> {
    let (ca, cb) = (open_ro(a), open_ro(b));
    let (sa, sb) = (schema_of(&ca), schema_of(&cb));
    if sa != sb {
        return Some(format!(
            "schemas differ between {} and {}: {sa:?} != {sb:?}",
            a.display(),
            b.display()
        ));
    }
    for pragma in ["user_version", "application_id"] {
        let get = |c: &Connection| {
            c.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        let (x, y) = (get(&ca), get(&cb));
        if x != y {
            return Some(format!("PRAGMA {pragma} differs: {x} != {y}"));
        }
    }
    let tables: Vec<&String> = sa.iter().filter(|s| s.0 == "table").map(|s| &s.1).collect();
    if tables.is_empty() {
        return Some(format!("{} has no tables", a.display()));
    }
    for table in tables {
        let (ra, rb) = (rows_of(&ca, table), rows_of(&cb, table));
        if ra.len() != rb.len() {
            return Some(format!(
                "table {table}: row counts differ: {} != {}",
                ra.len(),
                rb.len()
            ));
        }
        for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
            if x != y {
                return Some(format!("table {table}: row {i} differs: {x:?} != {y:?}"));
            }
        }
    }
    None
}

/// What [`assert_tree_eq`] compares for each path.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, sha256: String, size: u64 },
    Symlink { target: PathBuf },
}

fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
        let rel = path.strip_prefix(root).unwrap().to_owned();
        let mode = meta.mode() & 0o7777;
        let node = if meta.file_type().is_symlink() {
            Node::Symlink {
                target: fs::read_link(&path).unwrap(),
            }
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            Node::Dir { mode }
        } else if meta.is_file() {
            Node::File {
                mode,
                sha256: sha256_file(&path),
                size: meta.len(),
            }
        } else {
            panic!("{} is neither a file, a directory nor a symlink", path.display());
        };
        out.insert(rel, node);
    }
    out
}

/// Asserts that two directory trees hold the same names, file bytes, permission bits
/// (directories included) and symlink targets. Symlinks are compared, never followed.
#[track_caller]
pub fn assert_tree_eq(a: &Path, b: &Path) {
    if let Some(difference) = tree_difference(a, b) {
        panic!("{difference}");
    }
}

/// The first difference [`assert_tree_eq`] would report, or `None` if the trees
/// agree (for tests that accept one of several states).
pub fn tree_difference(a: &Path, b: &Path) -> Option<String> {
    let (ta, tb) = (tree(a), tree(b));
    let names_a: Vec<&PathBuf> = ta.keys().collect();
    let names_b: Vec<&PathBuf> = tb.keys().collect();
    if names_a != names_b {
        return Some(format!(
            "{} and {} hold different names: {names_a:?} != {names_b:?}",
            a.display(),
            b.display()
        ));
    }
    ta.iter()
        .find(|(path, node)| tb.get(*path) != Some(*node))
        .map(|(path, node)| {
            format!(
                "{} differs between {} and {}: {node:?} != {:?}",
                path.display(),
                a.display(),
                b.display(),
                tb.get(path)
            )
        })
}

/// The comparisons must be able to fail: each one is shown a real difference.
#[cfg(test)]
mod tests {
    use super::*;

    fn fails(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
        std::panic::catch_unwind(f).is_err()
    }

    #[test]
    fn tree_comparison_sees_content_mode_name_and_link_changes() {
        let dir = short_tempdir("coffer-self-");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        make_media(&a);
        make_media(&b);
        assert_tree_eq(&a, &b);

        let changes: [&dyn Fn(&Path); 5] = [
            &|b| fs::write(b.join("a/b/c/deep.txt"), "changed").unwrap(),
            &|b| set_mode(&b.join("secret.key"), 0o644),
            &|b| set_mode(&b.join("empty-dir"), 0o700),
            &|b| fs::rename(b.join("empty"), b.join("empty2")).unwrap(),
            &|b| {
                fs::remove_file(b.join("link")).unwrap();
                std::os::unix::fs::symlink("a/b/c/deep.txt", b.join("link")).unwrap();
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let c = dir.path().join(format!("c{i}"));
            make_media(&c);
            change(&c);
            let (a, c2) = (a.clone(), c.clone());
            assert!(
                fails(move || assert_tree_eq(&a, &c2)),
                "change {i} went unnoticed"
            );
        }
    }

    #[test]
    fn db_comparison_sees_row_and_schema_changes() {
        let dir = short_tempdir("coffer-self-");
        let (a, b, c) = (
            dir.path().join("a.db"),
            dir.path().join("b.db"),
            dir.path().join("c.db"),
        );
        for p in [&a, &b, &c] {
            make_app_db(p, false);
        }
        assert_same_db(&a, &b);
        let conn = Connection::open(&b).unwrap();
        conn.execute("UPDATE blobs SET data = x'00' WHERE id = 50", [])
            .unwrap();
        drop(conn);
        let (a1, b1) = (a.clone(), b.clone());
        assert!(
            fails(move || assert_same_db(&a1, &b1)),
            "a changed blob went unnoticed"
        );
        let conn = Connection::open(&c).unwrap();
        conn.execute_batch("CREATE INDEX users_score ON users(score)")
            .unwrap();
        drop(conn);
        assert!(
            fails(move || assert_same_db(&a, &c)),
            "a new index went unnoticed"
        );
    }
}
