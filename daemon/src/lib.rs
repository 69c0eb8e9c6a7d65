//! cofferd, the Coffer backup daemon, as a library (the binary is `main.rs`).
//!
//! # Layout
//! - [`config`]: load and validate `cofferd.toml` into typed values.
//! - [`catalog`]: the daemon's own SQLite (backups, runs, audit) and its
//!   reconciliation with the sidecars in the backup directory.
//! - [`snapshot`]: consistent copies of a live SQLite database (`VACUUM INTO`), checks.
//! - [`manifest`]: `manifest.json` and the `<id>.json` sidecar; archive path rules.
//! - [`archive`]: the `.tar.zst` writer and the verifying reader.
//! - [`memory`]: glibc's allocator tuned to give a run's buffers back afterwards.
//! - [`fsutil`]: crash-safe writes (partial, fsync, rename, fsync dir), sweeping,
//!   free space.
//! - [`hooks`]: `[job.hooks]` commands with timeout and `COFFER_*` environment.
//! - [`restore`]: safe extraction, restore to a directory or in place with
//!   safety backup and rollback.
//! - [`retention`]: the pure retention policy (restic `forget` semantics).
//! - [`schedule`]: cron schedules in a time zone, computed fire times.
//! - [`scheduler`]: one task per scheduled job: no overlap, catch-up.
//! - [`engine`]: one backup / verify / delete run, with progress events.
//! - [`auth`]: roles from the caller's socket credentials (SO_PEERCRED).
//! - [`health`]: keeps grpc.health.v1 per-job statuses current.
//! - [`metrics`]: the Prometheus text exposition.
//! - [`notify`]: sd_notify READY/STATUS/WATCHDOG/STOPPING (no-op outside systemd).
//! - [`service`]: the tonic service; maps engine errors to gRPC statuses.
//! - [`server`]: single-instance lock, socket setup, serving and shutdown.

pub mod archive;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod engine;
pub mod fsutil;
pub mod health;
pub mod hooks;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod snapshot;
