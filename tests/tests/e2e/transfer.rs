//! Moving archives: `download` gives the archive byte for byte and never overwrites a
//! file without `--force`; `upload` into another daemon catalogues a verified backup
//! that restores to the original rows and files, and refuses duplicates, archives of
//! jobs it does not have, and uploads over `max-upload-size` — leaving nothing behind.

use std::fs;

use coffer_tests::{
    App, Daemon, assert_same_db, assert_tree_eq, files_under, job_toml, make_app_db, names_in, sha256_file,
    short_tempdir, table_rows,
};

use crate::restore::{assert_error_sentence, backup_id, list_ids, save_app, str_of};

/// Asserts that the backup dir holds no upload leftovers (`.upload-*`, `.partial`).
#[track_caller]
fn assert_no_upload_leftovers(d: &Daemon) {
    let leftovers: Vec<String> = files_under(&d.paths.backup_dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload-") || n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "upload leftovers: {leftovers:?}");
    assert_eq!(
        names_in(&d.paths.staging),
        Vec::<String>::new(),
        "staging is not empty"
    );
}

#[test]
fn download_is_byte_identical_and_never_overwrites_silently() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&d, "app");
    let archive = d.paths.archive("app", &id);
    let dir = short_tempdir("coffer-dl-");

    let file = dir.path().join("copy.tar.zst");
    let done = d.ctl_json(&["download", &id, "-o", file.to_str().unwrap()]);
    assert_eq!(str_of(&done, "id"), id);
    assert_eq!(fs::read(&file).unwrap(), fs::read(&archive).unwrap());
    let shown = d.ctl_json(&["show", &id]);
    assert_eq!(sha256_file(&file), str_of(&shown, "sha256"));
    assert_eq!(str_of(&done, "sha256"), str_of(&shown, "sha256"));
    assert_eq!(done["size"], shown["size"]);
    assert_eq!(names_in(dir.path()), ["copy.tar.zst"], "no .partial left");

    // `latest` works too, and text output names the file.
    let text_file = dir.path().join("latest.tar.zst");
    let out = d
        .ctl(&["download", "app:latest", "-o", text_file.to_str().unwrap()])
        .expect_ok();
    assert!(out.stdout.contains(&id), "{out}");
    assert_eq!(fs::read(&text_file).unwrap(), fs::read(&archive).unwrap());

    // An existing file is kept unless --force.
    let existing = dir.path().join("existing.tar.zst");
    fs::write(&existing, b"precious").unwrap();
    let out = d.ctl(&["download", &id, "-o", existing.to_str().unwrap()]);
    assert_error_sentence(&out, 2, "--force");
    assert_eq!(fs::read(&existing).unwrap(), b"precious");
    d.ctl(&["download", &id, "-o", existing.to_str().unwrap(), "--force"])
        .expect_ok();
    assert_eq!(fs::read(&existing).unwrap(), fs::read(&archive).unwrap());

    // An unknown backup: a clear sentence and no file.
    let missing = dir.path().join("missing.tar.zst");
    let out = d.ctl(&[
        "download",
        "app-20000101T000000Z",
        "-o",
        missing.to_str().unwrap(),
    ]);
    assert_error_sentence(&out, 1, "no backup");
    assert!(!missing.exists());
    assert!(!dir.path().join("missing.tar.zst.partial").exists());
}

#[test]
fn upload_into_a_fresh_daemon_round_trips() {
    let app = App::new(true);
    let source = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&source, "app");
    let saved = save_app(&app);
    let dir = short_tempdir("coffer-up-");
    let file = dir.path().join("app.tar.zst");
    source.ctl_json(&["download", &id, "-o", file.to_str().unwrap()]);
    let source_sha = str_of(&source.ctl_json(&["show", &id]), "sha256").to_owned();

    // Another machine: its own app (other data), a job of the same name.
    let other = App::new(false);
    let d = Daemon::start("", &other.job("app", ""));
    let uploaded = d.ctl_json(&["upload", file.to_str().unwrap()]);
    assert_eq!(str_of(&uploaded, "id"), id);
    let list = d.list(None);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(str_of(&list[0], "id"), id);
    assert_eq!(str_of(&list[0], "sha256"), source_sha);
    assert_eq!(list[0]["verify-result"], "ok");
    assert!(list[0]["verified-at"].is_string(), "{}", list[0]);
    assert_eq!(
        fs::read(d.paths.archive("app", &id)).unwrap(),
        fs::read(&file).unwrap()
    );
    assert!(d.paths.sidecar("app", &id).is_file());
    assert_no_upload_leftovers(&d);

    let to = dir.path().join("restored");
    d.ctl_json(&["restore", &id, "--to", to.to_str().unwrap()]);
    assert_same_db(&saved.db, &to.join("db/app.db"));
    assert_eq!(
        table_rows(&to.join("db/app.db"), "posts"),
        table_rows(&saved.db, "posts")
    );
    assert_tree_eq(&saved.media, &to.join("media/0"));
    d.ctl(&["verify", &id, "--deep"]).expect_ok();

    // The same archive again: refused, nothing left behind.
    let again = d.ctl(&["upload", file.to_str().unwrap()]);
    assert_error_sentence(&again, 1, "already exists");
    assert_eq!(list_ids(&d), std::slice::from_ref(&id));
    assert_eq!(
        names_in(&d.paths.backup_dir.join("app")),
        [format!("{id}.json"), format!("{id}.tar.zst")]
    );
    assert_no_upload_leftovers(&d);

    // A daemon without job "app" does not take it.
    let third_dir = short_tempdir("coffer-other-");
    let third_db = third_dir.path().join("other.db");
    make_app_db(&third_db, false);
    let third = Daemon::start("", &job_toml("other", &third_db, &[], ""));
    let refused = third.ctl(&["upload", file.to_str().unwrap()]);
    assert_error_sentence(&refused, 2, "not configured");
    assert!(list_ids(&third).is_empty());
    assert!(
        files_under(&third.paths.backup_dir).is_empty(),
        "the refused upload left {:?}",
        files_under(&third.paths.backup_dir)
    );
    assert_no_upload_leftovers(&third);

    // Filed under another configured job with --job: listed there, kept there by a
    // catalog rebuild, and restorable.
    let mut third = third;
    let filed = third.ctl_json(&["upload", file.to_str().unwrap(), "--job", "other"]);
    assert_eq!(str_of(&filed, "id"), id);
    assert_eq!(str_of(&filed, "job"), "other");
    assert!(third.paths.archive("other", &id).is_file());
    assert_eq!(list_ids(&third), std::slice::from_ref(&id));
    third.stop();
    for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = fs::remove_file(third.paths.state_dir.join(name));
    }
    third.start_again();
    let rebuilt = third.list(Some("other"));
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert_eq!(str_of(&rebuilt[0], "job"), "other");
    let drill = third_dir.path().join("drill");
    third.ctl_json(&["restore", "other:latest", "--to", drill.to_str().unwrap()]);
    assert_same_db(&saved.db, &drill.join("db/app.db"));
    let nowhere = third.ctl(&["upload", file.to_str().unwrap(), "--job", "nope"]);
    assert_error_sentence(&nowhere, 2, "there is no job named 'nope'");
}

#[test]
fn upload_over_max_upload_size_is_refused() {
    let app = App::new(false);
    let d = Daemon::start("max-upload-size = \"1KiB\"", &app.job("app", ""));
    let id = backup_id(&d, "app");
    let dir = short_tempdir("coffer-up-");
    let file = dir.path().join("app.tar.zst");
    d.ctl_json(&["download", &id, "-o", file.to_str().unwrap()]);
    assert!(fs::metadata(&file).unwrap().len() > 1024);
    let before = files_under(&d.paths.backup_dir);

    let out = d.ctl(&["upload", file.to_str().unwrap()]);
    assert_error_sentence(&out, 1, "max-upload-size");
    assert_eq!(files_under(&d.paths.backup_dir), before);
    assert_no_upload_leftovers(&d);
    assert_eq!(list_ids(&d), [id]);
    // The daemon still answers.
    d.ctl(&["status"]).expect_ok();
}
