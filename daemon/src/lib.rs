//! cofferd, the Coffer backup daemon, as a library (the binary is `main.rs`).
//!
//! # Layout
//!
//! Data flows one way, from the socket down to the disks:
//!
//! ```text
//! api ─▶ engine ─▶ ops ─▶ source, archive, manifest, store, catalog, policy ─▶ fsutil
//! ```
//!
//! - Process: `main.rs` (arguments, logging), [`server`] (single-instance lock,
//!   socket, signals, start-up recovery, shutdown), [`scheduler`] (cron wiring, no
//!   overlap, catch-up), [`notify`] (sd_notify), [`memory`] (allocator tuning),
//!   [`hooks`] (`[job.hooks]` commands), [`copier`] (the background copies to
//!   offsite stores).
//! - [`api`]: the tonic service, access control, health, metrics, proto conversion.
//! - [`engine`]: the facade every run goes through: config swap, run guard (a job
//!   claim and a `max-concurrent-runs` slot for every kind of run), run records,
//!   counters; the entry point of each kind of run (`engine/runs.rs`,
//!   `engine/offsite.rs`).
//! - [`ops`]: one module per operation (backup, verify, restore, upload, download,
//!   prune, delete, export, import), each a blocking function of an [`ops::Ctx`].
//! - [`source`]: where a backup's database part comes from ([`source::Source`]: SQLite
//!   today) and the media walk.
//! - [`archive`]: the `.tar.zst` writer, the verifying reader, safe extraction.
//! - [`manifest`]: `manifest.json` (format-version 2; v1 read forever), the sidecar,
//!   path rules.
//! - [`store`]: where backups are kept ([`store::Store`]; the local backup directory
//!   and S3-compatible offsite stores).
//! - [`catalog`]: the daemon's own SQLite (backups, offsite locations and the copy
//!   queue, runs, audit), migrations, reconciliation with the local store.
//! - [`policy`]: pure retention and schedule logic.
//! - [`selective`]: selective export and import (`[[job.export]]` profiles, row
//!   selection, import planning and apply, the import journal); used by `config`
//!   and `ops`, using only `fsutil`.
//! - [`config`]: load and validate `cofferd.toml`; [`error`]: the one error type and
//!   its kinds; [`run`]: run kinds, statuses, phases and progress events; [`fsutil`]:
//!   crash-safe file writing.

pub mod api;
pub mod archive;
pub mod catalog;
pub mod config;
pub mod copier;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod hooks;
pub mod manifest;
pub mod memory;
pub mod notify;
pub mod ops;
pub mod policy;
pub mod run;
pub mod scheduler;
pub mod selective;
pub mod server;
pub mod source;
pub mod store;
