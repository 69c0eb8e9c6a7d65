//! Concurrent writers during repeated backups. For each journal mode (WAL, rollback
//! journal `DELETE`) and each snapshot method (`vacuum-into`, `page-stream`), a ledger
//! database (100 accounts, a constant total, filler so a backup takes about a second)
//! is written by 4 writer threads and 2 writer processes (this test binary re-run as
//! [`writer_process`]), each moving money between two accounts in a transaction every
//! 2–5 ms, while `cofferctl backup` runs back to back.
//!
//! What it proves:
//! - every snapshot is one transaction-consistent state: `integrity_check` is ok, the
//!   total balance is constant, every balance agrees with the transfer log;
//! - every snapshot lies inside its backup's time window: it holds at least the
//!   commits that ended before the backup began and at most those that began before it
//!   ended (so the transfer count is also monotonic across backups);
//! - no writer ever fails (they wait up to 30 s for a lock), and every writer commits
//!   again after each backup;
//! - WAL mode: writers keep committing during every backup, and no commit stalls for
//!   half a backup's length (the design's 100 ms target is printed, not asserted: a
//!   shared 2-core CI box makes hard latency limits flaky);
//! - rollback-journal mode: writers wait for the snapshot's read lock only, so no
//!   stretch without any commit lasts longer than the backup (the lock lies within
//!   it). One commit may wait longer, queued behind the other writers by SQLite's
//!   busy handler (that happens when idle too): printed, not asserted.
//!
//! Commit latency is BEGIN IMMEDIATE → end of COMMIT, busy waits included. Figures per
//! mode and method (idle and during-backup p50/p99/max, the longest time without any
//! commit, backup and snapshot times) are printed as `writers MODE/METHOD: ...`. The four tests run one at a time so their
//! figures do not disturb each other. `COFFER_STRESS=1` takes 20 backups per test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coffer_tests::ledger::{self, Commit, percentile};
use coffer_tests::{Daemon, extract_archive, job_toml, short_tempdir, wait_timeout};

/// Filler rows of [`ledger::FILLER_ROW_BYTES`]: 16 MiB, a backup of about a second in
/// a debug build.
const FILLER_ROWS: usize = 256;
const THREADS: usize = 4;
const PROCESSES: usize = 2;
/// How long the writers' idle latency is measured before the first backup.
const IDLE: Duration = Duration::from_secs(1);

/// Environment of a writer process: the database, the file whose existence keeps it
/// going, the file it writes its commits to, its seed.
const ENV_DB: &str = "COFFER_WRITER_DB";
const ENV_GO: &str = "COFFER_WRITER_GO";
const ENV_OUT: &str = "COFFER_WRITER_OUT";
const ENV_SEED: &str = "COFFER_WRITER_SEED";
/// A writer process stops by itself after this, should its test have vanished.
const PROCESS_LIMIT: Duration = Duration::from_secs(600);

/// The tests of this file run one at a time: their latency figures are the point.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn wal_vacuum_into_snapshots_stay_consistent_under_writers() {
    writers_during_backups("WAL", "vacuum-into");
}

#[test]
fn wal_page_stream_snapshots_stay_consistent_under_writers() {
    writers_during_backups("WAL", "page-stream");
}

#[test]
fn rollback_journal_vacuum_into_snapshots_stay_consistent_under_writers() {
    writers_during_backups("DELETE", "vacuum-into");
}

#[test]
fn rollback_journal_page_stream_snapshots_stay_consistent_under_writers() {
    writers_during_backups("DELETE", "page-stream");
}

/// Not a test of its own: the body of a writer process, which the tests above start
/// by running this test binary with `--exact writers::writer_process --ignored` and
/// the `COFFER_WRITER_*` environment. It runs [`ledger::writer`] while the go file
/// exists, telling its commit count after each commit in `<out>.progress`, then writes its
/// commits (`start-ns latency-ns` per line) to the out file; a writer error fails the
/// process.
#[test]
#[ignore = "the body of a writer process, started by the writers tests"]
fn writer_process() {
    let Some(db) = std::env::var_os(ENV_DB).map(PathBuf::from) else {
        eprintln!("SKIPPED: writer_process runs only as a writer process of the writers tests");
        return;
    };
    let var = |name: &str| std::env::var_os(name).unwrap_or_else(|| panic!("{name} is not set"));
    let go = PathBuf::from(var(ENV_GO));
    let out = PathBuf::from(var(ENV_OUT));
    let seed: u64 = var(ENV_SEED).to_string_lossy().parse().expect("a numeric seed");
    let progress = out.with_extension("progress");
    let deadline = Instant::now() + PROCESS_LIMIT;
    let count = AtomicUsize::new(0);
    let mut told = 0;
    let commits = ledger::writer(&db, seed, &count, || {
        let now = count.load(Ordering::Relaxed);
        if now != told {
            fs::write(&progress, now.to_string()).expect("cannot write the progress file");
            told = now;
        }
        go.exists() && Instant::now() < deadline
    })
    .unwrap_or_else(|e| panic!("writer process {seed:#x} failed: {e}"));
    let text: String = commits
        .iter()
        .map(|c| format!("{} {}\n", c.start.as_nanos(), c.latency.as_nanos()))
        .collect();
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, text).expect("cannot write the commits");
    fs::rename(&tmp, &out).expect("cannot rename the commits file");
}

/// One writer thread: its commit count (live) and its result.
struct WriterThread {
    count: Arc<AtomicUsize>,
    handle: Option<JoinHandle<Result<Vec<Commit>, String>>>,
}

/// One writer process and its files.
struct WriterProcess {
    child: Child,
    out: PathBuf,
    progress: PathBuf,
    log: PathBuf,
}

impl WriterProcess {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its commits so far, as it last told (0 before the first or mid-write).
    fn commits(&self) -> usize {
        fs::read_to_string(&self.progress)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }
}

/// The running writers. Dropping it (e.g. when an assert failed) stops them all.
struct Writers {
    stop: Arc<AtomicBool>,
    go: PathBuf,
    threads: Vec<WriterThread>,
    processes: Vec<WriterProcess>,
}

impl Writers {
    /// Starts the threads and processes on `db`; their files go into `dir`.
    fn start(db: &Path, dir: &Path) -> Writers {
        let go = dir.join("go");
        fs::write(&go, "").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..THREADS as u64)
            .map(|i| {
                let count = Arc::new(AtomicUsize::new(0));
                let (db, stop, counter) = (db.to_owned(), stop.clone(), count.clone());
                let handle = std::thread::spawn(move || {
                    ledger::writer(&db, 0x5EED_1000 + i, &counter, || !stop.load(Ordering::Relaxed))
                });
                WriterThread {
                    count,
                    handle: Some(handle),
                }
            })
            .collect();
        // This very executable even if cargo has rebuilt the file meanwhile (Linux).
        let exe = Path::new("/proc/self/exe");
        let exe = if exe.exists() {
            exe.to_owned()
        } else {
            std::env::current_exe().expect("cannot find the test executable")
        };
        // libtest names tests by their path inside the crate: `writers::writer_process`.
        let module = module_path!().split_once("::").map_or(module_path!(), |(_, m)| m);
        let name = format!("{module}::writer_process");
        let processes = (0..PROCESSES as u64)
            .map(|i| {
                let out = dir.join(format!("process-{i}.commits"));
                let log = dir.join(format!("process-{i}.log"));
                let file = fs::File::create(&log).unwrap();
                let child = Command::new(&exe)
                    .args(["--exact", &name, "--ignored", "--nocapture", "--test-threads=1"])
                    .env(ENV_DB, db)
                    .env(ENV_GO, &go)
                    .env(ENV_OUT, &out)
                    .env(ENV_SEED, (0x5EED_2000 + i).to_string())
                    .stdin(Stdio::null())
                    .stdout(file.try_clone().unwrap())
                    .stderr(file)
                    .spawn()
                    .expect("cannot start a writer process");
                WriterProcess {
                    child,
                    progress: out.with_extension("progress"),
                    out,
                    log,
                }
            })
            .collect();
        Writers {
            stop,
            go,
            threads,
            processes,
        }
    }

    fn count(&self) -> usize {
        THREADS + PROCESSES
    }

    /// Panics with the cause if a writer ended while it should be running.
    fn assert_running(&mut self) {
        for (i, t) in self.threads.iter_mut().enumerate() {
            if t.handle.as_ref().is_some_and(|h| h.is_finished()) {
                let result = t.handle.take().unwrap().join();
                panic!("writer thread {i} ended early: {result:?}");
            }
        }
        for (i, p) in self.processes.iter_mut().enumerate() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!(
                    "writer process {i} ended early ({status}); its output:\n{}",
                    p.log()
                );
            }
        }
    }

    /// Commits of each writer so far (those of the processes as they last told).
    fn commits(&self) -> Vec<usize> {
        let threads = self.threads.iter().map(|t| t.count.load(Ordering::Relaxed));
        threads
            .chain(self.processes.iter().map(WriterProcess::commits))
            .collect()
    }

    /// Waits until every writer has committed `n` more times than `since` (60 s at
    /// most; panics if a writer ends meanwhile).
    fn wait_for_commits(&mut self, what: &str, since: &[usize], n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .commits()
            .iter()
            .zip(since)
            .all(|(now, then)| *now >= then + n)
        {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{what}: not every writer committed within 60 s ({:?} commits, {since:?} before)",
                self.commits()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the writers and returns each one's commits (panics on a writer error).
    fn finish(mut self) -> Vec<Vec<Commit>> {
        self.stop.store(true, Ordering::Relaxed);
        fs::remove_file(&self.go).unwrap();
        let mut all = Vec::new();
        for (i, t) in self.threads.iter_mut().enumerate() {
            let result = t.handle.take().unwrap().join().expect("a writer thread panicked");
            all.push(result.unwrap_or_else(|e| panic!("writer thread {i} failed: {e}")));
        }
        for (i, p) in self.processes.iter_mut().enumerate() {
            let status = wait_timeout(&mut p.child, Duration::from_secs(60))
                .unwrap_or_else(|| panic!("writer process {i} did not stop; its output:\n{}", p.log()));
            assert!(
                status.success(),
                "writer process {i} failed ({status}); its output:\n{}",
                p.log()
            );
            let text = fs::read_to_string(&p.out).unwrap_or_else(|e| {
                panic!(
                    "writer process {i} left no commits ({e}); its output:\n{}",
                    p.log()
                )
            });
            let nanos = |n: &str| Duration::from_nanos(n.parse().expect("a number of nanoseconds"));
            all.push(
                text.lines()
                    .map(|line| {
                        let (start, latency) = line.split_once(' ').expect("two numbers");
                        Commit {
                            start: nanos(start),
                            latency: nanos(latency),
                        }
                    })
                    .collect(),
            );
        }
        all
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = fs::remove_file(&self.go);
        for p in &mut self.processes {
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// One backup as the test saw it.
struct Backup {
    start: Duration,
    end: Duration,
    transfers: i64,
}

impl Backup {
    fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// Whether `c` was in flight at some moment of this backup.
    fn overlaps(&self, c: &Commit) -> bool {
        c.start < self.end && c.end() > self.start
    }
}

/// `12.3ms`, or `45µs` below a millisecond.
fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    }
}

/// The daemon's own time for each snapshot (`db_ms` of its "archive written" lines).
fn snapshot_times(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("archive written"))
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("db_ms="))
                .map_or_else(|| "?".to_owned(), |n| format!("{n}ms"))
        })
        .collect()
}

/// The test: writers in `journal_mode` during repeated backups with `method`.
fn writers_during_backups(journal_mode: &str, method: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let wal = journal_mode == "WAL";
    let label = format!("{}/{method}", if wal { "wal" } else { "rollback" });
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("ledger.db");
    ledger::make(&db, journal_mode, FILLER_ROWS);
    // verify-after-backup is off: the test checks each archive itself, and the
    // backup's window is then the snapshot and archiving that the writers live with.
    let extra =
        format!("busy-timeout = \"30s\"\nsnapshot-method = \"{method}\"\nverify-after-backup = false");
    let d = Daemon::start("", &job_toml("ledger", &db, &[], &extra));

    let mut writers = Writers::start(&db, data.path());
    writers.wait_for_commits(&format!("{label}: start"), &[0; THREADS + PROCESSES], 1);
    let idle_start = ledger::now();
    std::thread::sleep(IDLE);
    let idle_end = ledger::now();

    let rounds = crate::iterations(3, 20);
    let mut backups: Vec<Backup> = Vec::with_capacity(rounds);
    for round in 0..rounds {
        writers.assert_running();
        let start = ledger::now();
        let out = d.ctl(&["--json", "backup", "ledger"]);
        let end = ledger::now();
        assert!(
            out.success(),
            "{label}: backup {round} failed: {out}\n--- daemon log ---\n{}",
            d.log()
        );
        let id = out.json()["id"]
            .as_str()
            .expect("the backup has an id")
            .to_owned();
        let extracted = short_tempdir("coffer-x-");
        let manifest = extract_archive(&d.paths.archive("ledger", &id), extracted.path());
        assert_eq!(manifest["source"]["snapshot-method"], method);
        assert_eq!(
            manifest["source"]["journal-mode"],
            journal_mode.to_ascii_lowercase()
        );
        let snapshot = ledger::check(&extracted.path().join("db/ledger.db"));
        assert_eq!(
            snapshot.filler, FILLER_ROWS as i64,
            "{label}: backup {round}: filler rows"
        );
        if let Some(last) = backups.last() {
            assert!(
                snapshot.transfers >= last.transfers,
                "{label}: backup {round} holds {} transfers, the one before it {}",
                snapshot.transfers,
                last.transfers
            );
        }
        backups.push(Backup {
            start,
            end,
            transfers: snapshot.transfers,
        });
        // Every writer commits again after the backup: three times, so that (with a
        // process's count told up to one commit late) one surely began after the
        // backup ended (checked on the commits below).
        let after = writers.commits();
        writers.wait_for_commits(&format!("{label}: after backup {round}"), &after, 3);
    }
    let left: Vec<String> = coffer_tests::names_in(&d.paths.staging);
    assert!(
        left.is_empty(),
        "{label}: staging holds {left:?} after the backups"
    );
    let writer_count = writers.count();
    let commits = writers.finish();
    let log = d.log();

    // Each snapshot lies within its backup's window, and each writer commits after it.
    let all: Vec<Commit> = commits.iter().flatten().copied().collect();
    for (round, b) in backups.iter().enumerate() {
        let before = all.iter().filter(|c| c.end() < b.start).count() as i64;
        let begun = all.iter().filter(|c| c.start < b.end).count() as i64;
        assert!(
            (before..=begun).contains(&b.transfers),
            "{label}: backup {round} holds {} transfers, but {before} commits had ended before it \
             began and {begun} had begun before it ended",
            b.transfers
        );
        for (w, list) in commits.iter().enumerate() {
            assert!(
                list.iter().any(|c| c.start > b.end),
                "{label}: writer {w} never committed after backup {round}"
            );
        }
    }

    // Latencies: idle, and of commits in flight during a backup.
    let sorted = |it: &mut dyn Iterator<Item = Duration>| {
        let mut v: Vec<Duration> = it.collect();
        v.sort();
        v
    };
    let idle = sorted(
        &mut all
            .iter()
            .filter(|c| c.start >= idle_start && c.end() <= idle_end)
            .map(|c| c.latency),
    );
    let busy = sorted(
        &mut all
            .iter()
            .filter(|c| backups.iter().any(|b| b.overlaps(c)))
            .map(|c| c.latency),
    );
    let max = busy.last().copied().unwrap_or_default();
    // Per backup: the longest commit, and the longest time in which no writer
    // committed at all (in rollback-journal mode about how long the daemon held its
    // read lock; a single commit may wait longer, queued behind the other writers).
    let mut ends: Vec<Duration> = all.iter().map(Commit::end).collect();
    ends.sort();
    let per_backup: Vec<(Duration, Duration)> = backups
        .iter()
        .map(|b| {
            let stall = all
                .iter()
                .filter(|c| b.overlaps(c))
                .map(|c| c.latency)
                .max()
                .unwrap_or_default();
            let gap = ends
                .windows(2)
                .filter(|w| w[0] < b.end && w[1] > b.start)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(b.duration());
            (stall, gap)
        })
        .collect();
    let total: Duration = backups.iter().map(Backup::duration).sum();
    let list = |f: &dyn Fn(usize) -> Duration| -> String {
        (0..rounds).map(|i| ms(f(i))).collect::<Vec<_>>().join(", ")
    };
    eprintln!(
        "writers {label}: {writer_count} writers ({THREADS} threads, {PROCESSES} processes), {rounds} backups \
         of {} MiB ({} avg: {}; daemon's snapshot phase {}); {} commits during backups: p50 {} p99 {} max {} \
         (per backup: {}); longest time without any commit per backup: {}; idle ({} commits in {IDLE:?}): \
         p50 {} p99 {} max {}. Design target for WAL: p99 <= 2x idle, no stall over 100ms",
        (FILLER_ROWS * ledger::FILLER_ROW_BYTES) >> 20,
        ms(total / rounds as u32),
        list(&|i| backups[i].duration()),
        snapshot_times(&log).join(", "),
        busy.len(),
        ms(percentile(&busy, 0.5)),
        ms(percentile(&busy, 0.99)),
        ms(max),
        list(&|i| per_backup[i].0),
        list(&|i| per_backup[i].1),
        idle.len(),
        ms(percentile(&idle, 0.5)),
        ms(percentile(&idle, 0.99)),
        ms(idle.last().copied().unwrap_or_default()),
    );
    assert!(!idle.is_empty(), "{label}: no commits while idle");
    for (round, (b, &(stall, gap))) in backups.iter().zip(&per_backup).enumerate() {
        if wal {
            // WAL: the snapshot is a reader, and writers do not wait for readers.
            assert!(
                all.iter().any(|c| b.overlaps(c)),
                "{label}: no commit during backup {round} ({})",
                ms(b.duration())
            );
            assert!(
                stall < b.duration() / 2,
                "{label}: a commit stalled for {} during backup {round} of {} (design target: 100ms)",
                ms(stall),
                ms(b.duration())
            );
        } else {
            // Rollback journal: commits wait for the snapshot's read lock, which lies
            // within the backup, plus up to SQLite's longest busy-handler nap (100 ms).
            let limit = b.duration() + Duration::from_millis(500);
            assert!(
                gap < limit,
                "{label}: no writer could commit for {} during backup {round} of {}",
                ms(gap),
                ms(b.duration())
            );
        }
    }
}
