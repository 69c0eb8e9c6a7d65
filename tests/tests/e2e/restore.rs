//! Restores: in place (round trip over changed rows, tables, files and modes, with the
//! pinned "pre-restore" safety backup), into another directory, one part only, and the
//! failures that must leave the live data exactly as it was — a failing hook, a
//! database in use, a swap that cannot complete (rolled back), a missing `--yes` —
//! plus the environment of the restore hooks.
//!
//! The helpers at the top (copies, fingerprints of the live data, the one-sentence
//! error check) are shared with the `corruption`, `hostile` and `transfer` modules.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_tests::{
    App, Daemon, Output, assert_same_db, assert_tree_eq, make_app_db, make_media, names_in, sha256_file,
    short_tempdir, table_rows, toml_str,
};
use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// `v[key]` as a string (panics with the document otherwise).
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// Takes a backup of `job` and returns its id.
#[track_caller]
pub(crate) fn backup_id(d: &Daemon, job: &str) -> String {
    str_of(&d.backup(job), "id").to_owned()
}

/// The ids of `list --json`, newest first.
#[track_caller]
pub(crate) fn list_ids(d: &Daemon) -> Vec<String> {
    d.list(None).iter().map(|b| str_of(b, "id").to_owned()).collect()
}

/// A consistent copy of a database, taken the way an admin would (`VACUUM INTO`).
pub(crate) fn copy_db(src: &Path, dst: &Path) {
    let conn = Connection::open(src).unwrap();
    conn.execute("VACUUM INTO ?1", [dst.to_str().unwrap()]).unwrap();
}

/// The app's database and media as they were at one moment, to compare with later.
pub(crate) struct Saved {
    pub db: PathBuf,
    pub media: PathBuf,
    _dir: TempDir,
}

/// Copies the app's database (`VACUUM INTO`) and media tree aside.
pub(crate) fn save_app(app: &App) -> Saved {
    let dir = short_tempdir("coffer-saved-");
    let saved = Saved {
        db: dir.path().join("app.db"),
        media: dir.path().join("media"),
        _dir: dir,
    };
    copy_db(&app.db, &saved.db);
    copy_tree(&app.media, &saved.media);
    saved
}

/// Copies a tree with its modes and symlinks (symlinks copied, never followed).
pub(crate) fn copy_tree(src: &Path, dst: &Path) {
    let meta = fs::symlink_metadata(src).unwrap();
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src).unwrap(), dst).unwrap();
    } else if file_type.is_dir() {
        fs::create_dir(dst).unwrap();
        for entry in fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &dst.join(entry.file_name()));
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).unwrap();
    } else {
        fs::copy(src, dst).unwrap();
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).unwrap();
    }
}

/// Every path under `root` (the root itself as ""), with its kind, mode, and for files
/// size, sha256 and mtime, for symlinks the target: equal fingerprints mean nothing
/// was touched.
pub(crate) fn fingerprint(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let mode = meta.mode() & 0o7777;
        let what = if meta.file_type().is_symlink() {
            format!("symlink -> {}", fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            format!("dir {mode:o}")
        } else {
            format!(
                "file {mode:o} {} bytes sha256 {} mtime {}.{}",
                meta.len(),
                sha256_file(&path),
                meta.mtime(),
                meta.mtime_nsec()
            )
        };
        out.insert(rel, what);
    }
    out
}

/// The live data of an app, byte for byte: the database file, the media tree, and
/// the names beside them (staging or leftovers would show up there).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LiveState {
    db_sha256: String,
    db_mtime: (i64, i64),
    media: BTreeMap<String, String>,
    beside: Vec<String>,
}

impl LiveState {
    /// Reads the app's live state. Never call it while this process holds an SQLite
    /// connection to the database (closing a file descriptor drops POSIX locks).
    pub(crate) fn of(app: &App) -> LiveState {
        let meta = fs::metadata(&app.db).unwrap();
        LiveState {
            db_sha256: sha256_file(&app.db),
            db_mtime: (meta.mtime(), meta.mtime_nsec()),
            media: fingerprint(&app.media),
            beside: names_in(app.dir.path()),
        }
    }
}

/// Asserts that `out` failed with exit code `code` and one sentence on stderr: the
/// last line, prefixed `cofferctl: `, containing `phrase`, with no debug output.
#[track_caller]
pub(crate) fn assert_error_sentence(out: &Output, code: i32, phrase: &str) {
    assert_eq!(out.code, code, "wrong exit code from {out}");
    let text = out.stderr.trim();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("cofferctl: ")).collect();
    assert_eq!(errors.len(), 1, "expected one error line: {out}");
    assert_eq!(
        text.lines().last(),
        Some(errors[0]),
        "the error should be the last line: {out}"
    );
    assert!(
        errors[0].contains(phrase),
        "the error should contain {phrase:?}: {out}"
    );
    for debug in ["Error {", "Os {", "Status {", "kind:", "panicked"] {
        assert!(!text.contains(debug), "debug output on stderr: {out}");
    }
}

/// Asserts that no restore staging or pre-restore copy is left in `dir`.
#[track_caller]
pub(crate) fn assert_no_restore_leftovers(dir: &Path) {
    let leftovers: Vec<String> = names_in(dir)
        .into_iter()
        .filter(|n| n.starts_with(".coffer-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "restore leftovers in {}: {leftovers:?}",
        dir.display()
    );
}

/// Changes a database the way an app would: updated and deleted rows, a new table.
/// Foreign keys stay valid (the restored copies are checked with `foreign_key_check`).
pub(crate) fn change_db(db: &Path) {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(
        "UPDATE users SET name = 'changed by the test', score = 42.5 WHERE id = 5;
         UPDATE blobs SET data = x'00ff00ff' WHERE id = 3;
         DELETE FROM tags WHERE rowid % 3 = 0;
         DELETE FROM blobs WHERE id > 90;
         CREATE TABLE added_after_backup(x INTEGER, y TEXT);
         INSERT INTO added_after_backup VALUES (1, 'one'), (2, 'two');
         PRAGMA user_version = 13;",
    )
    .unwrap();
}

/// Changes a media tree: a changed file, a deleted file, a new file and directory,
/// a changed mode, a re-pointed symlink.
pub(crate) fn change_media(media: &Path) {
    fs::write(media.join("a/b/c/deep.txt"), "changed after the backup\n").unwrap();
    fs::remove_file(media.join("secret.key")).unwrap();
    fs::create_dir(media.join("new-dir")).unwrap();
    fs::write(media.join("new-dir/new.txt"), "new after the backup\n").unwrap();
    fs::set_permissions(media.join("bin/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(media.join("link")).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", media.join("link")).unwrap();
}

/// The `name` column of user 5 (the row [`change_db`] changes).
pub(crate) fn user5_name(db: &Path) -> SqlValue {
    let rows = table_rows(db, "users");
    rows.iter()
        .find(|r| r[0] == SqlValue::Integer(5))
        .expect("user 5 is missing")[1]
        .clone()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn in_place_round_trip_restores_every_table_and_file() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&d, "app");

    // What the backup holds, copied right after it.
    let saved = save_app(&app);
    assert_tree_eq(&app.media, &saved.media);

    change_db(&app.db);
    change_media(&app.media);
    assert_ne!(user5_name(&app.db), user5_name(&saved.db));

    // A writer that crashed: its committed but uncheckpointed WAL lies beside the
    // database (made on a copy, then put in place, as a crash would leave it).
    let scratch = short_tempdir("coffer-scratch-");
    let scratch_db = scratch.path().join("app.db");
    fs::copy(&app.db, &scratch_db).unwrap();
    let writer = Connection::open(&scratch_db).unwrap();
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             UPDATE users SET bio = 'only in the crashed writer''s WAL' WHERE id = 7;",
        )
        .unwrap();
    let stale_wal = scratch.path().join("app.db-wal");
    assert!(fs::metadata(&stale_wal).unwrap().len() > 0);
    fs::copy(&stale_wal, app.dir.path().join("app.db-wal")).unwrap();
    drop(writer);

    let restored = d.ctl_json(&["restore", "app:latest", "--yes"]);
    assert_eq!(str_of(&restored, "id"), id);
    let safety_id = str_of(&restored, "safety-backup-id").to_owned();
    assert_ne!(safety_id, id);
    assert_eq!(str_of(&restored, "database-path"), app.db.display().to_string());
    assert_eq!(
        restored["media-paths"],
        serde_json::json!([app.media.display().to_string()])
    );

    // Nothing beside the targets but the database and the media directory: no staging,
    // no pre-restore copies, no stale -wal/-shm from before.
    assert_eq!(
        names_in(app.dir.path()),
        ["app.db", "media"],
        "unexpected files beside the restored data"
    );

    // Every table, the schema and the pragmas as backed up; the media tree too.
    assert_same_db(&saved.db, &app.db);
    assert_tree_eq(&saved.media, &app.media);
    let conn = Connection::open(&app.db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);

    // The state before the restore is kept as a pinned "pre-restore" backup...
    let list = d.list(None);
    assert_eq!(list.len(), 2, "{list:?}");
    let safety = list
        .iter()
        .find(|b| b["id"] == safety_id.as_str())
        .unwrap_or_else(|| panic!("the safety backup {safety_id} is not listed: {list:?}"));
    assert_eq!(str_of(safety, "note"), "pre-restore");
    assert_eq!(safety["protected"], true);

    // ... and holds the changed state, including what the crashed writer committed.
    let drill = short_tempdir("coffer-drill-");
    let dir = drill.path().join("pre");
    d.ctl_json(&["restore", &safety_id, "--to", dir.to_str().unwrap()]);
    let pre_db = dir.join("db/app.db");
    assert_eq!(user5_name(&pre_db), SqlValue::Text("changed by the test".into()));
    assert_eq!(table_rows(&pre_db, "added_after_backup").len(), 2);
    let bio: String = Connection::open(&pre_db)
        .unwrap()
        .query_row("SELECT bio FROM users WHERE id = 7", [], |r| r.get(0))
        .unwrap();
    assert_eq!(bio, "only in the crashed writer's WAL");
    let pre_media = dir.join("media/0");
    assert_eq!(
        fs::read_to_string(pre_media.join("a/b/c/deep.txt")).unwrap(),
        "changed after the backup\n"
    );
    assert!(!pre_media.join("secret.key").exists());
    assert_eq!(
        fs::metadata(pre_media.join("bin/run.sh")).unwrap().mode() & 0o777,
        0o700
    );
}

#[test]
fn restore_to_a_directory_leaves_the_live_data_alone() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&d, "app");
    let saved = short_tempdir("coffer-saved-");
    let saved_db = saved.path().join("app.db");
    copy_db(&app.db, &saved_db);
    let before = LiveState::of(&app);

    let out = short_tempdir("coffer-to-");
    let dir = out.path().join("drill/nested");
    let restored = d.ctl_json(&["restore", &id, "--to", dir.to_str().unwrap()]);
    assert_eq!(str_of(&restored, "id"), id);
    assert!(restored["safety-backup-id"].is_null(), "{restored}");
    assert_eq!(
        str_of(&restored, "database-path"),
        dir.join("db/app.db").display().to_string()
    );
    assert_eq!(names_in(&dir), ["db", "media"]);
    assert_eq!(names_in(&dir.join("db")), ["app.db"]);
    assert_eq!(names_in(&dir.join("media")), ["0"]);
    assert_same_db(&saved_db, &dir.join("db/app.db"));
    assert_eq!(
        table_rows(&dir.join("db/app.db"), "users"),
        table_rows(&saved_db, "users")
    );
    assert_tree_eq(&app.media, &dir.join("media/0"));

    // The live data and the catalog are untouched: no safety backup for a drill.
    assert_eq!(LiveState::of(&app), before);
    assert_eq!(list_ids(&d), std::slice::from_ref(&id));

    // A directory that is not empty is refused, and nothing is written into it.
    let busy = out.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep.txt"), "mine").unwrap();
    let refused = d.ctl(&["restore", &id, "--to", busy.to_str().unwrap()]);
    assert_error_sentence(&refused, 2, "not empty");
    assert_eq!(names_in(&busy), ["keep.txt"]);
    assert_eq!(fs::read_to_string(busy.join("keep.txt")).unwrap(), "mine");
    assert_eq!(LiveState::of(&app), before);
}

#[test]
fn only_db_and_only_media_restore_one_part() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&d, "app");
    let saved = save_app(&app);

    change_db(&app.db);
    change_media(&app.media);
    let changed_media = fingerprint(&app.media);

    // --only db: the database goes back, the media stay as changed.
    let restored = d.ctl_json(&["restore", &id, "--only", "db", "--yes"]);
    assert_eq!(str_of(&restored, "database-path"), app.db.display().to_string());
    assert_eq!(restored["media-paths"], serde_json::json!([]));
    assert_same_db(&saved.db, &app.db);
    assert_eq!(
        fingerprint(&app.media),
        changed_media,
        "--only db touched the media"
    );
    assert_no_restore_leftovers(app.dir.path());

    // Change the database again; --only media puts the media back, the database stays.
    change_db(&app.db);
    let db_before = sha256_file(&app.db);
    let restored = d.ctl_json(&["restore", &id, "--only", "media", "--yes"]);
    assert_eq!(str_of(&restored, "database-path"), "");
    assert_eq!(
        restored["media-paths"],
        serde_json::json!([app.media.display().to_string()])
    );
    assert_tree_eq(&saved.media, &app.media);
    assert_eq!(
        sha256_file(&app.db),
        db_before,
        "--only media touched the database"
    );
    assert_eq!(user5_name(&app.db), SqlValue::Text("changed by the test".into()));
    assert_no_restore_leftovers(app.dir.path());

    // Each in-place restore kept a pinned safety backup.
    let safety: Vec<Value> = d
        .list(None)
        .into_iter()
        .filter(|b| b["note"] == "pre-restore")
        .collect();
    assert_eq!(safety.len(), 2, "{safety:?}");
    assert!(safety.iter().all(|b| b["protected"] == true));
}

/// A backup with changes made after it: restoring it would change the live data.
fn changed_app(extra: &str) -> (App, Daemon, String) {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", extra));
    let id = backup_id(&d, "app");
    change_db(&app.db);
    change_media(&app.media);
    (app, d, id)
}

#[test]
fn failing_before_restore_hook_changes_nothing() {
    let (app, d, id) = changed_app("[job.hooks]\nbefore-restore = [\"/bin/false\"]");
    let before = LiveState::of(&app);

    let out = d.ctl(&["restore", &id, "--yes"]);
    assert_error_sentence(&out, 1, "before-restore hook");
    assert!(out.stderr.contains("/bin/false"), "{out}");

    assert_eq!(
        LiveState::of(&app),
        before,
        "a failed restore changed the live data"
    );
    assert_no_restore_leftovers(app.dir.path());
    assert_eq!(names_in(&d.paths.staging), Vec::<String>::new());
    assert_eq!(list_ids(&d), [id], "no safety backup before the hooks passed");
}

#[test]
fn database_in_use_is_refused_and_nothing_changes() {
    let (app, d, id) = changed_app("");
    let before = LiveState::of(&app);

    // Another program holds the (rollback-journal) database in a write transaction.
    let holder = Connection::open(&app.db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = d.ctl(&["restore", &id, "--yes"]);
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    assert_error_sentence(&out, 1, "in use");
    assert!(
        out.stderr.contains("--force"),
        "the error should name the way out: {out}"
    );
    assert_eq!(
        LiveState::of(&app),
        before,
        "a refused restore changed the live data"
    );
    assert_no_restore_leftovers(app.dir.path());
    assert_eq!(list_ids(&d), [id]);
}

/// A tmpfs mounted on a directory; unmounted (lazily) on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs on `dir`, or says why not (not root, no mount permission).
    fn tmpfs(dir: &Path) -> Result<Mount, String> {
        if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
            return Err("not running as root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755,size=64m", "coffer-e2e"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Mount(dir.to_owned()))
        } else {
            Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn failed_swap_is_rolled_back() {
    // The media directory is a mount point: renaming it fails (EBUSY) during the swap,
    // after the database was already swapped, so the database must be put back.
    let dir = short_tempdir("coffer-app-");
    let db = dir.path().join("app.db");
    let media = dir.path().join("media");
    make_app_db(&db, false);
    fs::create_dir(&media).unwrap();
    let app = App { db, media, dir };
    let _mount = match Mount::tmpfs(&app.media) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED failed_swap_is_rolled_back: {why}");
            return;
        }
    };
    make_media(&app.media);

    let d = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&d, "app");
    change_db(&app.db);
    change_media(&app.media);
    let before = LiveState::of(&app);
    let saved = short_tempdir("coffer-saved-");
    let changed_db = saved.path().join("changed.db");
    copy_db(&app.db, &changed_db);

    let out = d.ctl(&["restore", &id, "--yes"]);
    assert_error_sentence(&out, 1, "put back");
    assert!(
        out.stderr.contains("swapping"),
        "the error should say the swap failed: {out}"
    );

    assert_eq!(
        LiveState::of(&app),
        before,
        "the rolled-back restore changed the live data"
    );
    assert_same_db(&changed_db, &app.db);
    assert_no_restore_leftovers(app.dir.path());
    // The safety backup was taken before the swap and is kept.
    let list = d.list(None);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .any(|b| b["note"] == "pre-restore" && b["protected"] == true)
    );
}

#[test]
fn in_place_restore_without_yes_is_refused() {
    let (app, d, id) = changed_app("");
    let before = LiveState::of(&app);
    // stdin is not a terminal, so there is nobody to ask.
    let out = d.ctl(&["restore", &id]);
    assert_error_sentence(&out, 2, "--yes");
    let out = d.ctl(&["restore", "latest", "--only", "db"]);
    assert_error_sentence(&out, 2, "--yes");
    assert_eq!(LiveState::of(&app), before);
    assert_eq!(list_ids(&d), [id]);
}

#[test]
fn restore_hooks_see_the_job_event_and_backup() {
    let out = short_tempdir("coffer-hook-");
    let before_file = out.path().join("before.env");
    let after_file = out.path().join("after.env");
    let hook = |file: &Path| {
        format!(
            "[\"/bin/sh\", \"-c\", {}]",
            toml_str(&format!("env | grep ^COFFER_ > '{}'", file.display()))
        )
    };
    let extra = format!(
        "[job.hooks]\nbefore-restore = {}\nafter-restore = {}",
        hook(&before_file),
        hook(&after_file)
    );
    let (app, d, id) = changed_app(&extra);

    d.ctl(&["restore", &id, "--yes"]).expect_ok();
    for (file, event) in [(&before_file, "before-restore"), (&after_file, "after-restore")] {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{event} hook did not run: {e}"));
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "COFFER_JOB=app".to_owned(),
            format!("COFFER_EVENT={event}"),
            format!("COFFER_BACKUP_ID={id}"),
        ] {
            assert!(
                lines.contains(&want.as_str()),
                "{event}: {want} missing from {text:?}"
            );
        }
    }
    assert_ne!(
        user5_name(&app.db),
        SqlValue::Text("changed by the test".into()),
        "the restore did not happen"
    );
}
