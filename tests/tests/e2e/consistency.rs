//! Snapshots under concurrent writes (WAL mode): a writer thread moves money between
//! ledger accounts every few milliseconds while `cofferctl backup` runs. The snapshot
//! must be one transaction-consistent state (the balances add up and agree with the
//! transfer log), must include committed WAL content, and the writer must keep
//! committing during the backup without a stall anywhere near the backup's length.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coffer_tests::ledger::{self, Commit, percentile};
use coffer_tests::{Daemon, job_toml, short_tempdir, wait_until};

/// Random (incompressible) filler, so that the backup takes a noticeable time.
const FILLER_ROWS: usize = 640;

#[test]
fn snapshot_under_concurrent_writes_is_consistent_and_does_not_stall_the_writer() {
    consistent_under_writes("vacuum-into");
}

#[test]
fn page_stream_snapshot_under_concurrent_writes_is_consistent_and_does_not_stall_the_writer() {
    consistent_under_writes("page-stream");
}

/// A backup with snapshot `method` while a writer moves money between accounts.
fn consistent_under_writes(method: &str) {
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("ledger.db");
    let setup = Instant::now();
    ledger::make(&db, "WAL", FILLER_ROWS);
    eprintln!(
        "ledger with {} MiB of filler made in {:?}",
        (FILLER_ROWS * ledger::FILLER_ROW_BYTES) >> 20,
        setup.elapsed()
    );
    let extra = format!("busy-timeout = \"10s\"\nsnapshot-method = \"{method}\"");
    let d = Daemon::start("", &job_toml("ledger", &db, &[], &extra));

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let handle = {
        let (db, stop, count) = (db.clone(), stop.clone(), count.clone());
        std::thread::spawn(move || ledger::writer(&db, 0x5EED_0004, &count, || !stop.load(Ordering::Relaxed)))
    };
    // Let the writer commit a while first: the snapshot must include WAL content, and
    // these commits are the idle baseline.
    wait_until("the writer commits", Duration::from_secs(30), || {
        count.load(Ordering::Relaxed) >= 50 || handle.is_finished()
    });

    let backup_start = ledger::now();
    let out = d.ctl(&["--json", "backup", "ledger"]);
    let backup_end = ledger::now();
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let commits = handle
        .join()
        .expect("the writer panicked")
        .unwrap_or_else(|e| panic!("the writer failed: {e}"));
    assert!(
        out.success(),
        "backup failed: {out}\n--- daemon log ---\n{}",
        d.log()
    );
    let backup_duration = backup_end - backup_start;

    // The snapshot: one consistent state that includes committed WAL content.
    let id = out.json()["id"].as_str().unwrap().to_owned();
    let archive = d.paths.archive("ledger", &id);
    let extracted = short_tempdir("coffer-x-");
    let manifest = coffer_tests::extract_archive(&archive, extracted.path());
    assert_eq!(manifest["source"]["snapshot-method"], method);
    let snapshot = ledger::check(&extracted.path().join("db/ledger.db"));
    assert!(
        snapshot.transfers >= 50,
        "the snapshot misses commits made before the backup started ({} transfers)",
        snapshot.transfers
    );
    assert_eq!(snapshot.filler, FILLER_ROWS as i64);

    // The writer kept going during the backup, without a long stall.
    let (before, during): (Vec<Commit>, Vec<Commit>) = commits
        .iter()
        .filter(|c| c.start < backup_end)
        .partition(|c| c.start < backup_start);
    let mut idle: Vec<Duration> = before.iter().map(|c| c.latency).collect();
    let mut busy: Vec<Duration> = during.iter().map(|c| c.latency).collect();
    idle.sort();
    busy.sort();
    let max = busy.last().copied().unwrap_or_default();
    eprintln!(
        "backup took {backup_duration:?}; {} commits during it: p50 {:?}, p99 {:?}, max {max:?}; \
         idle ({} commits): p50 {:?}, p99 {:?}",
        busy.len(),
        percentile(&busy, 0.5),
        percentile(&busy, 0.99),
        idle.len(),
        percentile(&idle, 0.5),
        percentile(&idle, 0.99),
    );
    assert!(
        !busy.is_empty(),
        "the writer committed nothing during the {backup_duration:?} backup"
    );
    assert!(
        max < backup_duration / 2,
        "a commit stalled for {max:?} during a {backup_duration:?} backup"
    );
}
