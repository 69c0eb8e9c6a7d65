//! Real external servers for the end-to-end tests, started by the tests themselves in
//! throwaway directories: never mocks, never a machine-wide service.
//!
//! # Layout
//! - [`skip`]: [`Skip`], the error every `start` returns when the server cannot run
//!   here, and [`require!`](crate::require), which turns it into a visible
//!   `SKIPPED <test>: <reason>` line and returns from the test.
//! - [`postgres`]: [`PgCluster`], a private PostgreSQL cluster (a copy of a per-process
//!   initdb template, `postgres` as an unprivileged user) on a Unix socket in its temp
//!   dir, with a password-authenticated login role for Coffer and a passfile for it.
//! - [`mariadb`]: [`MariaDb`], a private `mariadbd` (a copy of a per-process
//!   `mariadb-install-db` template) on a Unix socket in its temp dir, with a
//!   password-authenticated user for Coffer and a `[client]` options file.
//! - [`s3`]: [`S3Server`], a SeaweedFS `weed mini` with S3 authentication on, on free
//!   ports, with a plain bucket and an Object Lock bucket; [`S3Client`] inspects it
//!   independently of Coffer through boto3.
//! - [`keys`]: age and SSH ed25519 key pairs made by the real `age-keygen` and
//!   `ssh-keygen`, and decryption by the real `age`.
//! - `process` (private): finding binaries, spawning servers, signals, ports, secrets.
//!
//! # How a test uses them
//! ```ignore
//! let pg = require!(PgCluster::start("pg_backup_roundtrip"));
//! pg.create_database("shop");
//! pg.psql("shop", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
//! // configure cofferd with `postgres = pg.uri("shop")`, env PGPASSFILE = pg.passfile()
//! ```
//! Every server lives in one temp dir under /tmp (short paths: Unix socket paths are
//! limited to 108 bytes); dropping the value kills the server and removes the dir.
//! `stop()`, `kill9()` and `start_again()` (same data dir, socket and ports) let a test
//! take the server away in the middle of an operation and bring it back.
//!
//! # Process lifetime
//! Servers are spawned through `setpriv --pdeathsig KILL` when available, so they die
//! with the test instead of lingering when the test binary is killed (Ctrl-C, CI
//! timeout). The kernel sends that signal when the *thread* that spawned the server
//! exits: start a server on the test's own thread (the normal case), never on a helper
//! thread that ends before the server is dropped.
//!
//! # Skips
//! A missing binary, package or privilege makes `start` return [`Skip`] with one line
//! saying what is missing (and the server's log tail when it failed to start); the
//! test prints `SKIPPED <test>: <reason>` on the real stderr (visible even when libtest
//! captures output) and returns. Set `COFFER_TEST_NO_SKIP=1` (CI, after `test-deps.sh`
//! ran as root) to turn every skip into a failure, so a broken install cannot hide
//! behind green skips. `test-deps.sh` installs everything these servers need.

pub mod keys;
pub mod mariadb;
pub mod postgres;
mod process;
pub mod s3;
pub mod skip;

pub use keys::{age_decrypt, age_encrypt, age_keygen, ssh_ed25519_keygen};
pub use mariadb::MariaDb;
pub use postgres::PgCluster;
pub use s3::{S3Client, S3Error, S3Object, S3ObjectVersion, S3Server, S3Upload};
pub use skip::Skip;
