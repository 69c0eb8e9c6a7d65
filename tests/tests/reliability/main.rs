//! The reliability suite: Coffer on its worst day. Each test starts the real
//! `cofferd` on a temp socket and drives it with the real `cofferctl`, injecting one
//! kind of fault, bounded in time and iterations so the suite fits in CI.
//! `COFFER_STRESS=1` raises the iteration counts for a long run by hand
//! (see README, "Reliability").
//!
//! - [`crash`]: `kill -9` of cofferd at seeded random moments during backup, prune
//!   and in-place restore; after a restart nothing is half-done.
//! - [`full_disk`]: the backup dir and staging on a small tmpfs that fills at
//!   different points of a backup.
//! - [`writers`]: the app writes in transactions during repeated backups (WAL and
//!   rollback journal); every snapshot is consistent; writer stalls reported.
//! - [`odd_requests`]: RPCs with empty, huge and odd ids and paths.
//! - [`load`]: 50 clients reading while backups run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
mod full_disk;
mod load;
mod odd_requests;
mod writers;

/// Iterations for a fault loop: `ci` normally, `stress` with `COFFER_STRESS=1`.
pub fn iterations(ci: usize, stress: usize) -> usize {
    if self::stress() { stress } else { ci }
}

fn stress() -> bool {
    std::env::var_os("COFFER_STRESS").is_some_and(|v| v != "0")
}

/// The seed of a seeded fault loop, printed with the test's name: `$COFFER_SEED`,
/// else 42 (CI runs are repeatable), or a new one from the clock with
/// `COFFER_STRESS=1` (every long run explores new moments; replay with `COFFER_SEED`).
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("COFFER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            if stress() {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(42, |d| d.as_nanos() as u64)
            } else {
                42
            }
        });
    eprintln!("{test}: seed {seed} (replay with COFFER_SEED={seed})");
    seed
}
