//! Compatibility: an archive written before manifest format-version 2 — the v1 fixture
//! in `tests/fixtures/v1`, written by Coffer at commit eb4cf29 and never regenerated —
//! keeps being catalogued, verified (shallow and deep), restored (elsewhere and in
//! place), pinned and uploaded by this build.

use std::fs;
use std::path::{Path, PathBuf};

use coffer_tests::{Daemon, assert_same_db, job_toml, short_tempdir, table_rows};

use crate::restore::{copy_tree, list_ids};

const ID: &str = "legacy-20261130T153641Z";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1")
}

/// The fixture's source: what the v1 backup holds.
fn source() -> PathBuf {
    fixture().join("source")
}

/// Media files of the fixture and their expected content (git keeps no empty
/// directories, so `uploads/empty` exists only inside the archive).
fn assert_media_restored(media: &Path) {
    let src = source().join("uploads");
    for file in ["2026/11/hello.txt", "2026/11/photo.jpg", "2026/straße.txt"] {
        assert_eq!(
            fs::read(media.join(file)).unwrap(),
            fs::read(src.join(file)).unwrap(),
            "{file}"
        );
    }
    assert_eq!(
        fs::read_link(media.join("latest.jpg")).unwrap(),
        Path::new("2026/11/photo.jpg")
    );
    assert!(media.join("empty").is_dir(), "the empty directory comes back");
}

/// A daemon with job `legacy` over a live copy of the fixture's source, and the live
/// paths.
fn daemon(dir: &Path) -> (Daemon, PathBuf, PathBuf) {
    let (db, media) = (dir.join("app.db"), dir.join("uploads"));
    fs::copy(source().join("app.db"), &db).unwrap();
    copy_tree(&source().join("uploads"), &media);
    let d = Daemon::configure("", &job_toml("legacy", &db, &[&media], ""));
    (d, db, media)
}

#[test]
fn a_v1_backup_in_the_backup_dir_is_catalogued_verified_and_restored() {
    let dir = short_tempdir("coffer-compat-");
    let (d, db, media) = daemon(dir.path());
    let job_dir = d.paths.backup_dir.join("legacy");
    fs::create_dir_all(&job_dir).unwrap();
    for ext in ["tar.zst", "json"] {
        fs::copy(
            fixture().join(format!("{ID}.{ext}")),
            job_dir.join(format!("{ID}.{ext}")),
        )
        .unwrap();
    }
    let d = d.started();
    assert_eq!(list_ids(&d), vec![ID.to_owned()], "found by reconciliation");
    d.ctl(&["verify", ID]).expect_ok();
    d.ctl(&["verify", ID, "--deep"]).expect_ok();

    // A pin rewrites the sidecar: it must stay v1 and keep matching the archive.
    d.ctl(&["pin", ID]).expect_ok();
    let sidecar: serde_json::Value =
        serde_json::from_slice(&fs::read(job_dir.join(format!("{ID}.json"))).unwrap()).unwrap();
    assert_eq!(sidecar["format-version"], 1);
    assert_eq!(sidecar["protected"], true);
    assert!(sidecar.get("kind").is_none() && sidecar["source"].get("kind").is_none());
    d.ctl(&["verify", ID]).expect_ok();
    d.ctl(&["unpin", ID]).expect_ok();

    let out = dir.path().join("drill");
    d.ctl(&["restore", ID, "--to", out.to_str().unwrap()]).expect_ok();
    assert_same_db(&source().join("app.db"), &out.join("db/app.db"));
    assert_media_restored(&out.join("media/0"));

    // In place, over changed live data.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM posts WHERE id > 10", []).unwrap();
    drop(conn);
    fs::remove_file(media.join("2026/11/hello.txt")).unwrap();
    d.ctl(&["restore", ID, "--yes"]).expect_ok();
    assert_same_db(&source().join("app.db"), &db);
    assert_eq!(table_rows(&db, "posts").len(), 60);
    assert_media_restored(&media);
}

#[test]
fn a_v1_archive_is_accepted_by_upload() {
    let dir = short_tempdir("coffer-compat-");
    let (d, _db, _media) = daemon(dir.path());
    let d = d.started();
    let archive = fixture().join(format!("{ID}.tar.zst"));
    let uploaded = d.ctl_json(&["upload", archive.to_str().unwrap()]);
    assert_eq!(uploaded["id"], ID);
    d.ctl(&["verify", ID, "--deep"]).expect_ok();
}
