//! Nothing is silently left out of a backup. Names that are not UTF-8 and symlinks
//! pointing anywhere (absolute, or escaping their directory) are stored and come back
//! byte-exact — through cofferd's restore (elsewhere and in place) and through plain
//! `tar --zstd -x`. What cannot be stored (a fifo) is counted and shown by `backup`,
//! `show`, `health` and the metrics; what the job's `exclude` globs leave out is only
//! counted.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use coffer_tests::{App, Daemon, assert_tree_eq, short_tempdir};

use crate::restore::{backup_id, copy_tree};

/// `caf\xe9.txt` (Latin-1), an absolute symlink and one leaving the directory.
fn awkward(media: &Path) {
    fs::write(media.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1 name").unwrap();
    fs::create_dir(media.join(OsStr::from_bytes(b"dir-\xff"))).unwrap();
    fs::write(media.join(OsStr::from_bytes(b"dir-\xff/inner\\name")), b"inner").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", media.join("absolute-link")).unwrap();
    std::os::unix::fs::symlink("../../outside/x", media.join("escaping-link")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9.txt"), media.join("latin1-link")).unwrap();
}

#[test]
fn odd_names_and_any_symlinks_round_trip_byte_exact() {
    let app = App::new(true);
    awkward(&app.media);
    let d = Daemon::start("", &app.job("app", ""));
    let out = d.ctl_json(&["backup", "app"]);
    assert_eq!(out["skipped-count"], 0, "{out}");
    let id = out["id"].as_str().unwrap().to_owned();
    let show = d.ctl_json(&["show", &id]);
    assert_eq!(show["totals"]["symlinks"], 4, "{show}");

    // Through cofferd, elsewhere.
    let dir = short_tempdir("coffer-leftout-");
    let to = dir.path().join("r");
    d.ctl(&["restore", &id, "--to", to.to_str().unwrap()]).expect_ok();
    assert_tree_eq(&app.media, &to.join("media/0"));
    assert_eq!(
        fs::read_link(to.join("media/0/absolute-link")).unwrap(),
        Path::new("/etc/hostname")
    );

    // Through plain tar.
    let by_hand = dir.path().join("tar");
    fs::create_dir(&by_hand).unwrap();
    let tar = Command::new("tar")
        .args(["--zstd", "-xf"])
        .arg(d.paths.archive("app", &id))
        .arg("-C")
        .arg(&by_hand)
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", String::from_utf8_lossy(&tar.stderr));
    assert_tree_eq(&app.media, &by_hand.join("media/0"));
    assert_eq!(
        fs::read(by_hand.join("media/0").join(OsStr::from_bytes(b"caf\xe9.txt"))).unwrap(),
        b"latin-1 name"
    );

    // In place, after the media changed.
    let saved = dir.path().join("saved");
    copy_tree(&app.media, &saved);
    fs::remove_file(app.media.join(OsStr::from_bytes(b"caf\xe9.txt"))).unwrap();
    fs::remove_file(app.media.join("escaping-link")).unwrap();
    d.ctl(&["restore", &id, "--yes"]).expect_ok();
    assert_tree_eq(&saved, &app.media);
}

#[test]
fn a_fifo_is_reported_by_backup_show_health_and_metrics_and_excludes_are_only_counted() {
    let app = App::new(true);
    let made = Command::new("mkfifo")
        .arg(app.media.join("app.fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    fs::write(app.media.join("scratch.tmp"), b"temporary").unwrap();
    let d = Daemon::start("", &app.job("app", "exclude = [\"*.tmp\"]"));

    let text = d.ctl(&["backup", "app"]).expect_ok().stdout;
    assert!(
        text.contains("1 media entry could not be stored: media/0/app.fifo (fifo)"),
        "{text}"
    );
    assert!(text.contains("1 excluded by the job's exclude globs"), "{text}");
    let id = backup_id(&d, "app");
    let show = d.ctl_json(&["show", &id]);
    assert_eq!(show["skipped-count"], 1);
    assert_eq!(show["skipped"][0]["path"], "media/0/app.fifo");
    assert_eq!(show["skipped"][0]["reason"], "fifo");
    assert_eq!(show["excluded-count"], 1);
    let shown = d.ctl(&["show", &id]).expect_ok().stdout;
    assert!(shown.contains("media/0/app.fifo (fifo)"), "{shown}");

    let health = d.ctl(&["health", "app"]);
    assert_eq!(
        health.code, 1,
        "WARNING while the newest backup has skipped entries: {health}"
    );
    assert!(
        health.stdout.contains("could not store 1 media entries"),
        "{health}"
    );
    let metrics = d.ctl(&["metrics"]).expect_ok().stdout;
    assert!(
        metrics.contains("coffer_backup_skipped_entries{job=\"app\"} 1"),
        "{metrics}"
    );

    // Without the fifo the next backup is whole again, and so is the job's health.
    fs::remove_file(app.media.join("app.fifo")).unwrap();
    d.backup("app");
    assert_eq!(d.ctl(&["health", "app"]).code, 0);
}
