//! A ledger database and writers that move money between its accounts, for tests of
//! snapshots under concurrent writes. Every committed state has the same total
//! balance, and every account's balance agrees with the transfer log, so a snapshot
//! that mixes two states is caught by [`ledger::check`].

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
