//! End-to-end tests: each test starts the real `cofferd` binary on a private socket
//! in a temporary directory and drives it with the real `cofferctl`, then checks real
//! outcomes — archive contents read with the `tar` and `zstd` crates, rows of the
//! snapshot, exit codes, error sentences, files left behind.
//!
//! Build the binaries first: `cargo build --workspace --bins`, then
//! `cargo test -p coffer-tests`. The harness lives in `coffer_tests` (`tests/src/lib.rs`).
//!
//! - [`backup`]: a backup round trip and the list/show/delete commands.
//! - [`errors`]: failing runs and failing start-ups, each with its exit code and sentence.
//! - [`catalog`]: the catalog is rebuilt from the backup directory; leftovers are swept.
//! - [`consistency`]: a snapshot taken under concurrent writes is consistent and does
//!   not stall the writer.

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup;
mod catalog;
mod consistency;
mod errors;
