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
    if std::env::var_os("COFFER_STRESS").is_some_and(|v| v != "0") {
        stress
    } else {
        ci
    }
}
