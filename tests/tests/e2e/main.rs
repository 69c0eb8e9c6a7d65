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
//! - [`compat`]: a v1 archive (a fixture written before format-version 2) keeps
//!   verifying, restoring and uploading.
//! - [`consistency`]: a snapshot taken under concurrent writes is consistent and does
//!   not stall the writer.
//! - [`daemon_ops`]: systemd notifications, SIGTERM during a backup, SIGHUP reloads.
//! - [`access`]: who may do what over the socket (uids, groups; root only).
//! - [`monitoring`]: health with an external gRPC client, metrics through a real
//!   Prometheus parser, the audit log.
//! - [`drill`]: restore drills with SQL checks: pass, fail (health WARNING, metrics),
//!   damaged archives, schedules; live data never touched.
//! - [`leftout`]: names that are not UTF-8 and any symlinks round-trip byte-exact;
//!   what cannot be stored (a fifo) is shown by backup, show, health, metrics.
//! - [`hooks`]: hook commands, their environment, failures and timeouts.
//! - [`restore`]: in-place and `--to` restores, one part only, failures that change
//!   nothing (hook, database in use, rolled-back swap, no `--yes`), restore hooks.
//! - [`corruption`]: flipped bytes, truncation, lying sidecars and re-packed archives
//!   are detected; `verify --deep` checks the database.
//! - [`hostile`]: crafted archives (`..`, absolute paths, escaping symlinks, links,
//!   devices, unlisted entries...) are refused on upload and on restore.
//! - [`transfer`]: download and upload.
//! - [`schedule`]: cron runs with retention and a pin, skipped overlapping fires,
//!   catch-up at start-up, next and last runs in `jobs`/`status`.
//! - [`retention`]: `prune --dry-run` changes nothing, `prune` removes what it said;
//!   pins survive prunes and catalog rebuilds; the newest is always kept.
//! - [`disk`]: a small backup filesystem (tmpfs; root only): refused runs,
//!   `min-free-space`, a disk filling up mid-archive.
//! - [`servers`]: the harness's real PostgreSQL, MariaDB and S3 servers start, take
//!   data, survive SIGKILL and do not clash when run side by side.
//! - [`encryption`]: `.tar.zst.age` archives decrypted by the real `age` with age and
//!   SSH keys, no plaintext on disk during or after a backup, keys needed for deep
//!   verify and restore, rekey, kill -9 during encrypted backups and rekeys.
//! - [`export`]: selective export and import with three realistic apps (a CMS, a
//!   package registry, a media server's configuration), conflicts, dry runs, a
//!   failure midway, hostile export files.
//! - [`mariadb`]: MariaDB jobs against a real server, as [`postgres`] for PostgreSQL,
//!   plus tables that are not transactional.
//! - [`postgres`]: PostgreSQL jobs against a real server: consistent dumps under a
//!   writer, in-place restores with their failures, `--to-database`, errors, secrets.
//! - [`systemd`]: the shipped units pass `systemd-analyze verify` and score ≤ 2.5 on
//!   `systemd-analyze security` (skipped when systemd's tools cannot be installed).
//! - [`offsite`]: copies to a real S3 server (SeaweedFS, inspected with boto3): byte
//!   equality, a server or cofferd dying mid-copy, disaster recovery, two hosts in one
//!   bucket, retention per location, Object Lock, tampering, broken stores.

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod backup;
mod catalog;
mod compat;
mod consistency;
mod corruption;
mod daemon_ops;
mod disk;
mod drill;
mod encryption;
mod errors;
mod export;
mod hooks;
mod hostile;
mod leftout;
mod mariadb;
mod monitoring;
mod offsite;
mod postgres;
mod restore;
mod retention;
mod schedule;
mod servers;
mod systemd;
mod transfer;
