//! The binaries and running them: paths, a clean environment, timeouts, waiting.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long `cofferd` may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `cofferd` may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `cofferctl` (or short-lived `cofferd`) run may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

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
pub(crate) fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
