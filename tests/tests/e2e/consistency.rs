//! Snapshots under concurrent writes (WAL mode): a writer thread moves money between
//! ledger accounts every few milliseconds while `cofferctl backup` runs. The snapshot
//! must be one transaction-consistent state (the balances add up and agree with the
//! transfer log), must include committed WAL content, and the writer must keep
//! committing during the backup without a stall anywhere near the backup's length.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coffer_tests::{Daemon, Rng, job_toml, short_tempdir, wait_until};
use rusqlite::{Connection, TransactionBehavior, params};

const ACCOUNTS: i64 = 100;
const START_BALANCE: i64 = 1_000;
/// Random (incompressible) filler, so that the backup takes a noticeable time.
const FILLER_ROWS: usize = 640;
const FILLER_ROW_BYTES: usize = 64 * 1024;

/// One commit of the writer: when it started (since the test's epoch) and how long
/// the transaction took from BEGIN IMMEDIATE to COMMIT.
#[derive(Debug, Clone, Copy)]
struct Commit {
    start: Duration,
    latency: Duration,
}

fn make_ledger(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
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
        for _ in 0..FILLER_ROWS {
            insert.execute([rng.bytes(FILLER_ROW_BYTES)]).unwrap();
        }
    }
    tx.commit().unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

/// Moves random amounts between accounts until `stop`, one transaction every ~2 ms.
fn writer(
    db: std::path::PathBuf,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> Result<Vec<Commit>, String> {
    let conn = Connection::open(&db).map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    // What WAL applications typically run with: commits do not fsync, so latency
    // reflects locking, not the disk.
    conn.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(|e| e.to_string())?;
    let mut conn = conn;
    let mut rng = Rng::new(0x5EED_0004);
    let mut commits = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let src = 1 + rng.below(ACCOUNTS as u64) as i64;
        let dst = 1 + rng.below(ACCOUNTS as u64) as i64;
        let amount = 1 + rng.below(50) as i64;
        let started = Instant::now();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| format!("BEGIN failed: {e}"))?;
        tx.execute(
            "UPDATE ledger SET balance = balance - ?1 WHERE id = ?2",
            params![amount, src],
        )
        .map_err(|e| e.to_string())?;
        tx.execute(
            "UPDATE ledger SET balance = balance + ?1 WHERE id = ?2",
            params![amount, dst],
        )
        .map_err(|e| e.to_string())?;
        tx.execute(
            "INSERT INTO transfers(src, dst, amount) VALUES (?1, ?2, ?3)",
            params![src, dst, amount],
        )
        .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| format!("COMMIT failed: {e}"))?;
        commits.push(Commit {
            start: started - epoch,
            latency: started.elapsed(),
        });
        count.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(commits)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

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
    make_ledger(&db);
    eprintln!(
        "ledger with {} MiB of filler made in {:?}",
        (FILLER_ROWS * FILLER_ROW_BYTES) >> 20,
        setup.elapsed()
    );
    let extra = format!("busy-timeout = \"10s\"\nsnapshot-method = \"{method}\"");
    let d = Daemon::start("", &job_toml("ledger", &db, &[], &extra));

    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let handle = {
        let (db, stop, count) = (db.clone(), stop.clone(), count.clone());
        std::thread::spawn(move || writer(db, epoch, stop, count))
    };
    // Let the writer commit a while first: the snapshot must include WAL content, and
    // these commits are the idle baseline.
    wait_until("the writer commits", Duration::from_secs(30), || {
        count.load(Ordering::Relaxed) >= 50 || handle.is_finished()
    });

    let backup_start = epoch.elapsed();
    let out = d.ctl(&["--json", "backup", "ledger"]);
    let backup_end = epoch.elapsed();
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
    let snapshot = Connection::open(extracted.path().join("db/ledger.db")).unwrap();
    let check: String = snapshot
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (accounts, total): (i64, i64) = snapshot
        .query_row("SELECT count(*), sum(balance) FROM ledger", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(accounts, ACCOUNTS);
    assert_eq!(
        total,
        ACCOUNTS * START_BALANCE,
        "the snapshot's balances do not add up"
    );
    let transfers: i64 = snapshot
        .query_row("SELECT count(*) FROM transfers", [], |r| r.get(0))
        .unwrap();
    assert!(
        transfers >= 50,
        "the snapshot misses commits made before the backup started ({transfers} transfers)"
    );
    let disagreeing: i64 = snapshot
        .query_row(
            "SELECT count(*) FROM ledger l WHERE l.balance != ?1
                 + coalesce((SELECT sum(amount) FROM transfers WHERE dst = l.id), 0)
                 - coalesce((SELECT sum(amount) FROM transfers WHERE src = l.id), 0)",
            [START_BALANCE],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        disagreeing, 0,
        "balances disagree with the transfer log in the snapshot"
    );
    let filler: i64 = snapshot
        .query_row("SELECT count(*) FROM filler", [], |r| r.get(0))
        .unwrap();
    assert_eq!(filler, FILLER_ROWS as i64);

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
