//! Test support for Coffer's end-to-end tests: the real `cofferd` and `cofferctl`
//! binaries, driven from Rust.
//!
//! - [`Daemon`] writes a `cofferd.toml` into a fresh temporary directory, starts
//!   `cofferd` on a socket there, waits until it accepts connections, runs `cofferctl`
//!   against it ([`Daemon::ctl`], [`Daemon::ctl_json`]) and stops it with SIGTERM on
//!   drop. The daemon's stderr goes to a file ([`Daemon::log`]).
//!   [`Daemon::relocate`] moves its state and backup dirs, e.g. onto a [`Tmpfs`]
//!   (a size-limited filesystem; root only, otherwise the test skips).
//! - [`App`] is an application's data: a SQLite database ([`make_app_db`]) and a media
//!   tree ([`make_media`]) with the awkward cases (symlink, empty file, non-ASCII name,
//!   modes 0600/0755), and [`job_toml`] turns it into a `[[job]]` section.
//! - [`extract_archive`] and [`archive_entries`] read archives with the `tar` and `zstd`
//!   crates directly, never with Coffer's own code, as a user restoring by hand would.
//! - [`table_rows`], [`assert_same_db`] and [`assert_tree_eq`] compare what came out
//!   with what went in; [`db_difference`] and [`tree_difference`] say the same without
//!   panicking, for tests that accept one of several states.
//!
//! The binaries are not built by `cargo test`; run `cargo build --workspace --bins`
//!
//! Modules: [`process`] (binaries, timeouts), [`daemon`] ([`Daemon`], [`Tmpfs`]),
//! [`app`] (application data), [`ledger`] (transactional writers), [`archives`]
//! (reading archives by hand), [`compare`] (databases and trees), [`files`] (hashes,
//! listings), [`selective`] (three apps with export profiles for the selective export
//! and import tests), [`servers`] (real PostgreSQL, MariaDB, S3 servers and age/SSH keys for the
//! stage-2 tests; installed by `tests/test-deps.sh`). Everything but `servers` and
//! `selective` (whose names are generic) is re-exported at the crate root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod archives;
pub mod compare;
pub mod daemon;
pub mod files;
pub mod ledger;
pub mod process;
pub mod selective;
pub mod servers;

pub use app::*;
pub use archives::*;
pub use compare::*;
pub use daemon::*;
pub use files::*;
pub use process::*;

/// The comparisons must be able to fail: each one is shown a real difference.
#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use rusqlite::Connection;

    use super::*;
    use crate::app::set_mode;

    fn fails(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
        std::panic::catch_unwind(f).is_err()
    }

    #[test]
    fn tree_comparison_sees_content_mode_name_and_link_changes() {
        let dir = short_tempdir("coffer-self-");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        make_media(&a);
        make_media(&b);
        assert_tree_eq(&a, &b);

        let changes: [&dyn Fn(&Path); 5] = [
            &|b| fs::write(b.join("a/b/c/deep.txt"), "changed").unwrap(),
            &|b| set_mode(&b.join("secret.key"), 0o644),
            &|b| set_mode(&b.join("empty-dir"), 0o700),
            &|b| fs::rename(b.join("empty"), b.join("empty2")).unwrap(),
            &|b| {
                fs::remove_file(b.join("link")).unwrap();
                std::os::unix::fs::symlink("a/b/c/deep.txt", b.join("link")).unwrap();
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let c = dir.path().join(format!("c{i}"));
            make_media(&c);
            change(&c);
            let (a, c2) = (a.clone(), c.clone());
            assert!(
                fails(move || assert_tree_eq(&a, &c2)),
                "change {i} went unnoticed"
            );
        }
    }

    #[test]
    fn db_comparison_sees_row_and_schema_changes() {
        let dir = short_tempdir("coffer-self-");
        let (a, b, c) = (
            dir.path().join("a.db"),
            dir.path().join("b.db"),
            dir.path().join("c.db"),
        );
        for p in [&a, &b, &c] {
            make_app_db(p, false);
        }
        assert_same_db(&a, &b);
        let conn = Connection::open(&b).unwrap();
        conn.execute("UPDATE blobs SET data = x'00' WHERE id = 50", [])
            .unwrap();
        drop(conn);
        let (a1, b1) = (a.clone(), b.clone());
        assert!(
            fails(move || assert_same_db(&a1, &b1)),
            "a changed blob went unnoticed"
        );
        let conn = Connection::open(&c).unwrap();
        conn.execute_batch("CREATE INDEX users_score ON users(score)")
            .unwrap();
        drop(conn);
        assert!(
            fails(move || assert_same_db(&a, &c)),
            "a new index went unnoticed"
        );
    }
}
