//! Running one client tool: arguments in, SQL or a dump on stdin, output streamed,
//! stderr kept (bounded and scrubbed), cancellation and timeouts honoured.
//!
//! `run()` spawns the tool with a clean, predictable environment (`LC_MESSAGES=C` so
//! messages are English and classifiable, no `LC_ALL` override, plus the job's own
//! variables such as `PGPASSFILE`), then works with three helper threads that own
//! what they touch (so a pipe some stray grandchild keeps open cannot block us):
//!
//! ```text
//!   input (bytes | file | a spooled frame's content) --feeder--> child stdin
//!   child stdout --reader--> bounded channel --> this thread --> sink (capture | Write)
//!   child stderr --collector--> head + tail buffer --> scrubbed text
//! ```
//!
//! The calling thread owns the child and the sink, so the caller's `&mut dyn Write`
//! never crosses a thread; it wakes at least every 50 ms (`POLL`) to check the caller's
//! `cancelled()`, the timeout and progress, and kills the child (SIGKILL) on either.
//! A tool that is killed, exits non-zero, or whose input could not be fed in full
//! is a failure, whatever it printed (except a tool given [`Input::Head`], which is
//! meant to stop reading early).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::error::DbError;
use super::scrub::Scrubber;
use super::tools::Tool;
use crate::archive::SpooledFrame;

/// How often the calling thread wakes to check cancellation, timeouts and progress.
const POLL: Duration = Duration::from_millis(50);
/// How often progress is reported at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Size of the chunks moved from the child's stdout to the sink.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the reader thread and the sink (bounds memory to 1 MiB).
const IN_FLIGHT: usize = 4;
/// The size asked for the child's stdout pipe (see [`read_stdout`]).
const PIPE_SIZE: i32 = 1 << 20;
/// Stderr kept: its beginning and its end (where tools put the final error).
const STDERR_HEAD: usize = 16 * 1024;
const STDERR_TAIL: usize = 48 * 1024;
/// The longest tool message put into an error sentence.
const DETAIL_MAX: usize = 700;

/// The caller's hooks into a long operation: a cancellation check (polled at least
/// every 50 ms) and a progress callback `(done, total)` in bytes (`total` is an
/// estimate and may be 0 when unknown; `done` can exceed it).
pub struct Control<'a> {
    cancelled: &'a dyn Fn() -> bool,
    progress: Option<&'a mut dyn FnMut(u64, u64)>,
}

impl<'a> Control<'a> {
    /// Hooks with progress reporting.
    pub fn new(cancelled: &'a dyn Fn() -> bool, progress: &'a mut dyn FnMut(u64, u64)) -> Control<'a> {
        Control {
            cancelled,
            progress: Some(progress),
        }
    }

    /// Hooks without progress reporting.
    pub fn cancel_only(cancelled: &'a dyn Fn() -> bool) -> Control<'a> {
        Control {
            cancelled,
            progress: None,
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        (self.cancelled)()
    }

    pub(crate) fn report(&mut self, done: u64, total: u64) {
        if let Some(progress) = self.progress.as_mut() {
            progress(done, total);
        }
    }
}

/// A cancellation check that never fires, for quick operations and tests.
pub fn never_cancelled() -> bool {
    false
}

/// What the child reads on stdin.
pub(crate) enum Input<'a> {
    Null,
    /// Small SQL scripts (never secrets: those live in passfiles/options files).
    Bytes(&'a [u8]),
    /// A dump file, streamed.
    File(&'a Path),
    /// The content of a spooled zstd frame (a dump compressed as it was taken), for a
    /// tool that reads only as much as it needs (`pg_restore --list` stops after the
    /// table of contents): its stopping early is no error.
    Head(&'a SpooledFrame),
}

/// Where the child's stdout goes.
pub(crate) enum Sink<'a> {
    /// Kept in memory, failing beyond this many bytes.
    Capture(usize),
    /// Streamed to the caller.
    Writer(&'a mut dyn Write),
}

/// What "done" means for progress.
#[derive(Clone, Copy)]
pub(crate) enum Meter {
    /// Bytes written to the sink.
    Sink,
    /// Bytes fed from the input.
    Fed,
    /// Bytes the tool and its children have read (`rchar` in /proc/<pid>/io): a tool
    /// reading a file.
    ToolRead,
}

/// One invocation of a tool.
pub(crate) struct Job<'a> {
    pub tool: &'a Tool,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub input: Input<'a>,
    pub sink: Sink<'a>,
    /// What the run is, for messages: "the dump of database 'shop'".
    pub action: String,
    pub timeout: Option<Duration>,
    pub meter: Meter,
    /// The progress total to report (an estimate; 0 if unknown).
    pub total: u64,
}

impl<'a> Job<'a> {
    /// A job with captured output (at most 4 MiB), no input and no progress.
    pub fn new(tool: &'a Tool, action: String) -> Job<'a> {
        Job {
            tool,
            args: Vec::new(),
            env: Vec::new(),
            input: Input::Null,
            sink: Sink::Capture(4 << 20),
            action,
            timeout: None,
            meter: Meter::Sink,
            total: 0,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn envs(mut self, env: &[(OsString, OsString)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    pub fn stdin(mut self, input: Input<'a>) -> Self {
        self.input = input;
        self
    }

    pub fn sink(mut self, sink: Sink<'a>) -> Self {
        self.sink = sink;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn meter(mut self, meter: Meter, total: u64) -> Self {
        self.meter = meter;
        self.total = total;
        self
    }
}

/// What a successful run left behind.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Stdout when captured (empty when streamed to a writer).
    pub stdout: Vec<u8>,
    /// Stderr, scrubbed (warnings of a successful run, for logs).
    pub stderr: String,
    /// Bytes of stdout produced.
    pub written: u64,
}

impl Outcome {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// How a process ended, as words: "exited with status 1", "was killed by signal 9".
pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(9)) => "was killed (signal 9, SIGKILL)".to_owned(),
        (None, Some(15)) => "was terminated (signal 15, SIGTERM)".to_owned(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended abnormally".to_owned(),
    }
}

/// Keeps the beginning and the end of a stream that may be long.
struct HeadTail {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl HeadTail {
    fn new() -> HeadTail {
        HeadTail {
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        let room = STDERR_HEAD.saturating_sub(self.head.len());
        let take = room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        self.tail.extend(bytes);
        while self.tail.len() > STDERR_TAIL {
            let excess = self.tail.len() - STDERR_TAIL;
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn into_text(self) -> String {
        let mut bytes = self.head;
        if self.dropped > 0 {
            bytes.extend_from_slice(format!("\n[... {} bytes omitted ...]\n", self.dropped).as_bytes());
        }
        bytes.extend(self.tail);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The part of a tool's (scrubbed) stderr that goes into an error sentence: all of
/// it on one line when short, else its error lines and its last line.
pub(crate) fn condense(stderr: &str) -> String {
    let lines: Vec<String> = stderr
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines.join(" ");
    if joined.chars().count() <= DETAIL_MAX {
        return joined;
    }
    let mut picked: Vec<&str> = lines
        .iter()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error") || lower.contains("fatal")
        })
        .take(3)
        .map(String::as_str)
        .collect();
    if let Some(last) = lines.last()
        && !picked.contains(&last.as_str())
    {
        picked.push(last);
    }
    let text = picked.join(" … ");
    if text.chars().count() <= DETAIL_MAX {
        text
    } else {
        let mut cut: String = text.chars().take(DETAIL_MAX).collect();
        cut.push('…');
        cut
    }
}

/// Turns a failed run into the most specific error its stderr allows.
pub(crate) fn classify(action: &str, tool: &'static str, status: String, stderr: &str) -> DbError {
    let detail = condense(stderr);
    if let Some(database) = missing_database(stderr) {
        return DbError::DatabaseMissing {
            action: action.to_owned(),
            database,
            detail,
        };
    }
    const UNREACHABLE: &[&str] = &[
        "Connection refused",
        "No such file or directory\n\tIs the server running",
        "Is the server running",
        "could not translate host name",
        "timeout expired",
        "Can't connect to local server",
        "Can't connect to server on",
        "Can't connect to local MySQL server",
        "Can't connect to MySQL server",
        "Unknown server host",
        "Lost connection to server at 'handshake",
    ];
    if UNREACHABLE.iter().any(|needle| stderr.contains(needle)) {
        return DbError::Unreachable {
            action: action.to_owned(),
            detail,
        };
    }
    DbError::Tool {
        action: action.to_owned(),
        tool,
        status,
        detail,
    }
}

/// The database named in a "does not exist" message (PostgreSQL: `database "x" does
/// not exist`; MariaDB: `Unknown database 'x'`).
fn missing_database(stderr: &str) -> Option<String> {
    if let Some(start) = stderr.find("database \"") {
        let rest = &stderr[start + "database \"".len()..];
        if let Some(end) = rest.find("\" does not exist") {
            return Some(rest[..end].to_owned());
        }
    }
    if let Some(start) = stderr.find("Unknown database '") {
        let rest = &stderr[start + "Unknown database '".len()..];
        if let Some(end) = rest.find('\'') {
            return Some(rest[..end].to_owned());
        }
    }
    None
}

fn proc_rchar(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Bytes read by `pid` and its child processes (`pg_restore -j` reads in workers).
fn tree_rchar(pid: u32) -> u64 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    proc_rchar(pid).unwrap_or(0)
        + children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .filter_map(proc_rchar)
            .sum::<u64>()
}

/// Why the calling thread stopped the child early.
enum Stop {
    Cancelled,
    TimedOut(Duration),
    Sink(std::io::Error),
    TooMuchOutput(usize),
}

impl Stop {
    fn into_error(self, action: String, tool: &'static str) -> DbError {
        match self {
            Stop::Cancelled => DbError::Cancelled { action },
            Stop::TimedOut(limit) => DbError::TimedOut {
                action,
                seconds: limit.as_secs(),
            },
            Stop::Sink(source) => DbError::Output { action, source },
            Stop::TooMuchOutput(limit) => DbError::Unexpected {
                action,
                tool,
                detail: format!("more than {limit} bytes of output"),
            },
        }
    }
}

/// Waits up to `grace` for a helper thread, then takes its result (or `None`: it
/// is stuck on a pipe some grandchild still holds, and is left to finish alone).
fn join_within<T>(handle: Option<std::thread::JoinHandle<T>>, grace: Duration) -> Option<T> {
    let handle = handle?;
    let deadline = Instant::now() + grace;
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if handle.is_finished() {
        handle.join().ok()
    } else {
        None
    }
}

/// How long helper threads get to finish once the child has exited.
const GRACE: Duration = Duration::from_secs(2);

/// What the child reads, opened before it is spawned.
enum Feed {
    Bytes(Vec<u8>),
    /// A stream; with `may_stop`, a child that stops reading it early is no error.
    Stream {
        reader: Box<dyn Read + Send>,
        may_stop: bool,
    },
}

impl Feed {
    /// Opens the input before spawning, so a missing dump file is our error, not the
    /// tool's. Bytes are copied: the helper threads own everything they touch, so a
    /// pipe held open by a stray grandchild can never block [`run`].
    fn open(input: &Input<'_>) -> Result<Option<Feed>, DbError> {
        Ok(match input {
            Input::Null => None,
            Input::Bytes(bytes) => Some(Feed::Bytes(bytes.to_vec())),
            Input::File(path) => Some(Feed::Stream {
                reader: Box::new(
                    std::fs::File::open(path).map_err(DbError::io("cannot open the dump", path))?,
                ),
                may_stop: false,
            }),
            Input::Head(frame) => Some(Feed::Stream {
                reader: Box::new(
                    frame
                        .content()
                        .map_err(DbError::io("cannot open the dump", &frame.path))?,
                ),
                may_stop: true,
            }),
        })
    }

    /// Writes everything into `stdin` on a thread of its own, counting into `fed`;
    /// the child sees EOF when the thread ends.
    fn start(
        self,
        mut stdin: std::process::ChildStdin,
        fed: Arc<AtomicU64>,
    ) -> std::thread::JoinHandle<std::io::Result<()>> {
        std::thread::spawn(move || match self {
            Feed::Bytes(bytes) => {
                stdin.write_all(&bytes)?;
                fed.store(bytes.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Feed::Stream { mut reader, may_stop } => {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    match stdin.write_all(&buf[..n]) {
                        Ok(()) => {}
                        Err(e) if may_stop && e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                        Err(e) => return Err(e),
                    }
                    fed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    }
}

/// Keeps the head and tail of the child's stderr on a thread of its own.
fn collect_stderr(mut stderr: std::process::ChildStderr) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = HeadTail::new();
        let mut buf = [0u8; 8192];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => kept.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        kept.into_text()
    })
}

/// The child's stdout as chunks arriving from its reader thread. Each chunk's buffer
/// goes back to the reader once taken ([`Stdout::recycle`]), so a large dump costs no
/// allocation (and no zeroing) per read.
struct Stdout {
    chunks: mpsc::Receiver<(Vec<u8>, usize)>,
    free: mpsc::Sender<Vec<u8>>,
}

impl Stdout {
    fn recycle(&self, buf: Vec<u8>) {
        // A reader that has stopped no longer wants buffers back.
        let _ = self.free.send(buf);
    }
}

/// Moves the child's stdout into a bounded channel on a thread of its own. The pipe
/// is enlarged (best effort; Linux allows 1 MiB unprivileged) so a dump tool can run
/// ahead of us by more than the default 64 KiB and wakes us far less often.
fn read_stdout(stdout: Option<std::process::ChildStdout>) -> Stdout {
    let (tx, chunks) = mpsc::sync_channel::<(Vec<u8>, usize)>(IN_FLIGHT);
    let (free, recycled) = mpsc::channel::<Vec<u8>>();
    if let Some(mut stdout) = stdout {
        let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        std::thread::spawn(move || {
            loop {
                let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                match stdout.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send((buf, n)).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
    }
    Stdout { chunks, free }
}

/// A child being run, with what the calling thread watches.
struct Running {
    child: std::process::Child,
    pid: u32,
    fed: Arc<AtomicU64>,
    started: Instant,
    timeout: Option<Duration>,
    meter: Meter,
    total: u64,
    last_report: Option<Instant>,
    /// The highest progress reported so far.
    reported: u64,
    written: u64,
    captured: Vec<u8>,
}

impl Running {
    fn report(&mut self, ctl: &mut Control<'_>, force: bool) {
        if !force && self.last_report.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.last_report = Some(Instant::now());
        let done = match self.meter {
            Meter::Sink => self.written,
            Meter::Fed => self.fed.load(Ordering::Relaxed),
            Meter::ToolRead => tree_rchar(self.pid),
        };
        // Workers that exited take their count with them: never report less.
        self.reported = self.reported.max(done);
        ctl.report(self.reported, self.total);
    }

    fn check(&self, ctl: &Control<'_>) -> Option<Stop> {
        if ctl.is_cancelled() {
            return Some(Stop::Cancelled);
        }
        match self.timeout {
            Some(limit) if self.started.elapsed() > limit => Some(Stop::TimedOut(limit)),
            _ => None,
        }
    }

    /// Hands one chunk of stdout to the sink.
    fn take(&mut self, sink: &mut Sink<'_>, chunk: &[u8]) -> Option<Stop> {
        self.written += chunk.len() as u64;
        match sink {
            Sink::Capture(limit) => {
                if self.captured.len() + chunk.len() > *limit {
                    return Some(Stop::TooMuchOutput(*limit));
                }
                self.captured.extend_from_slice(chunk);
            }
            Sink::Writer(out) => {
                if let Err(e) = out.write_all(chunk) {
                    return Some(Stop::Sink(e));
                }
            }
        }
        None
    }

    /// Moves stdout to the sink until EOF, or until the child has exited and its
    /// output stopped coming (a grandchild may hold the pipe), or a stop.
    fn pump(
        &mut self,
        stdout: &Stdout,
        sink: &mut Sink<'_>,
        ctl: &mut Control<'_>,
    ) -> (Option<Stop>, Option<ExitStatus>) {
        let mut exited: Option<(ExitStatus, Instant)> = None;
        loop {
            let mut stop = None;
            match stdout.chunks.recv_timeout(POLL) {
                Ok((chunk, n)) => {
                    stop = self.take(sink, &chunk[..n]);
                    stdout.recycle(chunk);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if exited.is_none()
                        && let Ok(Some(status)) = self.child.try_wait()
                    {
                        exited = Some((status, Instant::now()));
                    }
                    if exited.is_some_and(|(_, at)| at.elapsed() > GRACE) {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if stop.is_none() && exited.is_none() {
                stop = self.check(ctl);
            }
            if stop.is_some() {
                return (stop, None);
            }
            self.report(ctl, false);
        }
        (None, exited.map(|(status, _)| status))
    }

    /// Waits for the child to exit (killing it on a stop), returning its status.
    fn wait(
        &mut self,
        stop: &mut Option<Stop>,
        exited: Option<ExitStatus>,
        ctl: &mut Control<'_>,
    ) -> Option<ExitStatus> {
        if stop.is_some() {
            let _ = self.child.kill();
            return self.child.wait().ok();
        }
        if exited.is_some() {
            return exited;
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(_) => return None,
            }
            if let Some(s) = self.check(ctl) {
                *stop = Some(s);
                let _ = self.child.kill();
                return self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
            self.report(ctl, false);
        }
    }
}

/// Spawns the tool with a clean, predictable environment and piped streams.
fn spawn(
    tool: &Tool,
    args: &[OsString],
    env: &[(OsString, OsString)],
    stdin: bool,
) -> Result<std::process::Child, DbError> {
    let mut command = Command::new(&tool.path);
    command
        .args(args)
        .env_remove("LC_ALL")
        .env("LC_MESSAGES", "C")
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().map_err(|source| DbError::Spawn {
        tool: tool.name,
        path: tool.path.clone(),
        source,
    })
}

/// Runs `job` to completion (see the module doc). Non-zero exits, signals, feeding
/// failures, cancellation and timeouts are errors whose text is scrubbed.
pub(crate) fn run(job: Job<'_>, ctl: &mut Control<'_>, scrubber: &Scrubber) -> Result<Outcome, DbError> {
    let Job {
        tool,
        args,
        env,
        input,
        mut sink,
        action,
        timeout,
        meter,
        total,
    } = job;
    let feed = Feed::open(&input)?;
    let mut child = spawn(tool, &args, &env, feed.is_some())?;
    let fed = Arc::new(AtomicU64::new(0));
    let feeder = match (child.stdin.take(), feed) {
        (Some(stdin), Some(feed)) => Some(feed.start(stdin, Arc::clone(&fed))),
        _ => None,
    };
    let collector = child.stderr.take().map(collect_stderr);
    let stdout = read_stdout(child.stdout.take());
    let mut running = Running {
        pid: child.id(),
        child,
        fed,
        started: Instant::now(),
        timeout,
        meter,
        total,
        last_report: None,
        reported: 0,
        written: 0,
        captured: Vec::new(),
    };
    let (mut stop, exited) = running.pump(&stdout, &mut sink, ctl);
    drop(stdout);
    let status = running.wait(&mut stop, exited, ctl);
    let feed_result = join_within(feeder, GRACE).unwrap_or(Ok(()));
    let stderr_text = scrubber.scrub(&join_within(collector, GRACE).unwrap_or_default());
    if let Some(stop) = stop {
        return Err(stop.into_error(action, tool.name));
    }
    running.report(ctl, true);
    let Some(status) = status else {
        return Err(DbError::Tool {
            action,
            tool: tool.name,
            status: "could not be waited for".to_owned(),
            detail: condense(&stderr_text),
        });
    };
    if !status.success() {
        return Err(classify(
            &action,
            tool.name,
            describe_status(status),
            &stderr_text,
        ));
    }
    if let Err(e) = feed_result {
        // The tool stopped reading early (broken pipe) or the dump could not be read:
        // either way it did not see all of its input.
        return Err(DbError::Tool {
            action,
            tool: tool.name,
            status: "did not read all of its input".to_owned(),
            detail: scrubber.scrub(&e.to_string()),
        });
    }
    Ok(Outcome {
        stdout: running.captured,
        stderr: stderr_text,
        written: running.written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sh() -> Tool {
        Tool {
            name: "sh",
            path: PathBuf::from("/bin/sh"),
        }
    }

    #[test]
    fn captures_stdout_and_feeds_stdin() {
        let tool = sh();
        let job = Job::new(&tool, "a test".into())
            .args(["-c", "tr a-z A-Z"])
            .stdin(Input::Bytes(b"hello"));
        let out = run(
            job,
            &mut Control::cancel_only(&never_cancelled),
            &Scrubber::default(),
        )
        .unwrap();
        assert_eq!(out.text(), "HELLO");
    }

    #[test]
    fn failure_is_one_sentence_with_scrubbed_stderr() {
        let tool = sh();
        let scrubber = Scrubber::new(["pa55word".to_owned()]);
        let job = Job::new(&tool, "the dump of database 'x'".into())
            .args(["-c", "echo 'error: login with pa55word failed' >&2; exit 3"]);
        let err = run(job, &mut Control::cancel_only(&never_cancelled), &scrubber).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text,
            "the dump of database 'x' failed: sh exited with status 3: error: login with *** failed"
        );
    }

    #[test]
    fn cancellation_kills_a_silent_child() {
        let tool = sh();
        let started = Instant::now();
        let cancel = || started.elapsed() > Duration::from_millis(200);
        let job = Job::new(&tool, "a wait".into()).args(["-c", "sleep 30"]);
        let err = run(job, &mut Control::cancel_only(&cancel), &Scrubber::default()).unwrap_err();
        assert!(matches!(err, DbError::Cancelled { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn timeout_and_signal_are_reported() {
        let tool = sh();
        let job = Job::new(&tool, "a wait".into())
            .args(["-c", "sleep 30"])
            .timeout(Duration::from_millis(200));
        let err = run(
            job,
            &mut Control::cancel_only(&never_cancelled),
            &Scrubber::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "a wait took longer than 0 s and was stopped");
        let job = Job::new(&tool, "a suicide".into()).args(["-c", "kill -9 $$"]);
        let err = run(
            job,
            &mut Control::cancel_only(&never_cancelled),
            &Scrubber::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a suicide failed: sh was killed (signal 9, SIGKILL)"
        );
    }

    #[test]
    fn streams_large_output_to_a_writer_with_progress() {
        let tool = sh();
        let mut out = Vec::new();
        let mut last = 0;
        let mut progress = |done: u64, _total: u64| last = done;
        let job = Job::new(&tool, "a stream".into())
            .args(["-c", "head -c 3000000 /dev/zero"])
            .sink(Sink::Writer(&mut out));
        let outcome = run(
            job,
            &mut Control::new(&never_cancelled, &mut progress),
            &Scrubber::default(),
        )
        .unwrap();
        assert_eq!(outcome.written, 3_000_000);
        assert_eq!(out.len(), 3_000_000);
        assert_eq!(last, 3_000_000);
    }

    #[test]
    fn condense_keeps_error_lines_of_long_stderr() {
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("pg_restore: processing item {i}\n"));
        }
        text.push_str("pg_restore: error: could not execute query: ERROR: boom\n");
        let short = condense(&text);
        assert!(short.contains("ERROR: boom"), "{short}");
        assert!(short.chars().count() <= DETAIL_MAX + 1);
    }

    #[test]
    fn classify_recognises_missing_databases_and_dead_servers() {
        let e = classify(
            "x",
            "pg_dump",
            "exited with status 1".into(),
            "pg_dump: error: connection to server on socket \"/tmp/s/.s.PGSQL.5432\" failed: FATAL:  database \"nope\" does not exist",
        );
        assert!(
            matches!(&e, DbError::DatabaseMissing { database, .. } if database == "nope"),
            "{e}"
        );
        let e = classify(
            "x",
            "mariadb",
            "exited with status 1".into(),
            "ERROR 1049 (42000): Unknown database 'gone'",
        );
        assert!(
            matches!(&e, DbError::DatabaseMissing { database, .. } if database == "gone"),
            "{e}"
        );
        let e = classify(
            "x",
            "psql",
            "exited with status 2".into(),
            "psql: error: connection to server on socket \"/tmp/x/.s.PGSQL.5432\" failed: No such file or directory\n\tIs the server running locally and accepting connections on that socket?",
        );
        assert!(matches!(e, DbError::Unreachable { .. }), "{e}");
    }
}
