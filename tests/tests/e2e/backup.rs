//! Backups: one round trip checked entry by entry with plain `tar` + `zstd`, and the
//! catalog commands (`list`, `show`, `delete`) over two backups.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use coffer_tests::{
    App, Daemon, TarEntry, archive_entries, assert_same_db, assert_tree_eq, extract_archive, names_in,
    read_json, sha256_file, short_tempdir, table_rows,
};
use serde_json::Value;

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned number in {v}"))
}

/// The manifest kind of a tar entry type.
fn kind_of(entry: &TarEntry) -> &'static str {
    match entry.kind {
        tar::EntryType::Regular => "file",
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        other => panic!("{} has an unexpected tar type {other:?}", entry.path),
    }
}

/// The source path in the app's tree of an archive path `media/0/...`.
fn source_of(app: &App, archive_path: &str) -> std::path::PathBuf {
    let rel = archive_path
        .strip_prefix("media/0")
        .unwrap_or_else(|| panic!("{archive_path} is not under media/0"));
    app.media.join(rel.trim_start_matches('/'))
}

fn integrity_check(db: &Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn backup_round_trip_with_plain_tar_and_zstd() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));

    let out = d.ctl(&["backup", "app", "--note", "hello"]).expect_ok();

    // Exactly one archive and its sidecar, named after the id.
    let job_dir = d.paths.backup_dir.join("app");
    let names = names_in(&job_dir);
    let archive_name = names
        .iter()
        .find(|n| n.ends_with(".tar.zst"))
        .unwrap_or_else(|| panic!("no archive in {}: {names:?}", job_dir.display()));
    let id = archive_name.trim_end_matches(".tar.zst").to_owned();
    assert_eq!(names, [format!("{id}.json"), format!("{id}.tar.zst")]);
    assert!(id.starts_with("app-"), "{id}");
    assert!(
        out.stdout.contains(&id),
        "the output should name the new backup: {out}"
    );
    let archive = d.paths.archive("app", &id);

    // Entry order (vacuum-into): media/0 first — compressed while SQLite copies the
    // database — then the database, the manifest last.
    let entries = archive_entries(&archive);
    assert!(entries.len() > 3, "{entries:?}");
    assert_eq!(entries.last().unwrap().path, "manifest.json");
    let db = &entries[entries.len() - 2];
    assert_eq!(db.path, "db/app.db");
    assert_eq!(db.kind, tar::EntryType::Regular);
    let media_entries = &entries[..entries.len() - 2];
    for e in media_entries {
        assert!(
            e.path == "media/0" || e.path.starts_with("media/0/"),
            "unexpected entry {} before the database",
            e.path
        );
    }
    assert_eq!(media_entries.first().map(|e| e.path.as_str()), Some("media/0"));

    // Unpack by hand and compare with the source.
    let out_dir = short_tempdir("coffer-x-");
    let manifest = extract_archive(&archive, out_dir.path());
    let snapshot = out_dir.path().join("db/app.db");
    assert_eq!(integrity_check(&snapshot), "ok");
    assert_same_db(&app.db, &snapshot);
    assert_eq!(table_rows(&snapshot, "users").len(), 300);
    assert!(table_rows(&snapshot, "posts").len() > 500);
    assert_eq!(table_rows(&snapshot, "blobs").len(), 100);
    let extracted_media = out_dir.path().join("media/0");
    assert_tree_eq(&app.media, &extracted_media);
    let link = extracted_media.join("link");
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("a/b/file.bin"));
    assert_eq!(
        fs::read(&link).unwrap(),
        fs::read(app.media.join("a/b/file.bin")).unwrap(),
        "the symlink resolves to the file inside the tree"
    );
    let meta = |p: &str| fs::metadata(extracted_media.join(p)).unwrap();
    assert_eq!(meta("secret.key").mode() & 0o777, 0o600);
    assert_eq!(meta("bin/run.sh").mode() & 0o777, 0o755);
    assert_eq!(meta("empty").len(), 0);
    assert!(extracted_media.join("straße ünïcødé.txt").is_file());
    assert!(extracted_media.join("empty-dir").is_dir());

    // The manifest's header fields (format-version 2: a backup, with an SQLite source).
    assert_eq!(manifest["format-version"], 2);
    assert_eq!(str_of(&manifest, "kind"), "backup");
    assert_eq!(str_of(&manifest, "id"), id);
    assert_eq!(str_of(&manifest, "job"), "app");
    let created = str_of(&manifest, "created-at");
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "created-at {created} is not RFC 3339 UTC with seconds"
    );
    assert_eq!(
        format!("app-{}", created.replace(['-', ':'], "")),
        id,
        "the id is the job and the creation time"
    );
    assert_eq!(str_of(&manifest, "coffer-version"), coffer_common::VERSION);
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert!(!str_of(&manifest, "hostname").is_empty());
    if !hostname.trim().is_empty() {
        assert_eq!(str_of(&manifest, "hostname"), hostname.trim());
    }
    let source = &manifest["source"];
    assert_eq!(str_of(source, "kind"), "sqlite");
    assert_eq!(str_of(source, "sqlite-version"), rusqlite::version());
    assert_eq!(str_of(source, "path"), app.db.display().to_string());
    let conn = rusqlite::Connection::open(&app.db).unwrap();
    let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    drop(conn);
    assert_eq!(u64_of(source, "page-size"), page_size);
    assert!(u64_of(source, "page-count") > 10, "{source}");
    assert_eq!(source["user-version"], 12);
    assert_eq!(source["application-id"], 1_129_268_838);
    assert_eq!(str_of(source, "journal-mode"), "wal");
    assert_eq!(str_of(source, "snapshot-method"), "vacuum-into");
    assert_eq!(
        manifest["media-roots"],
        serde_json::json!([app.media.display().to_string()])
    );

    // Every entry: listed once, matching the archive and the files.
    let listed: Vec<&Value> = manifest["entries"].as_array().expect("entries").iter().collect();
    let by_path: BTreeMap<&str, &Value> = listed.iter().map(|e| (str_of(e, "path"), *e)).collect();
    assert_eq!(by_path.len(), listed.len(), "an entry is listed twice");
    let in_archive: Vec<&str> = entries[..entries.len() - 1]
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        by_path.keys().copied().collect::<Vec<_>>(),
        {
            let mut v = in_archive.clone();
            v.sort();
            v
        },
        "the manifest lists exactly the archive's entries"
    );
    let (mut files, mut dirs, mut symlinks, mut bytes) = (0, 0, 0, 0);
    for tar_entry in &entries[..entries.len() - 1] {
        let e = by_path[tar_entry.path.as_str()];
        let kind = str_of(e, "kind");
        assert_eq!(kind, kind_of(tar_entry), "{}", tar_entry.path);
        let extracted = out_dir.path().join(&tar_entry.path);
        let fs_meta = fs::symlink_metadata(&extracted).unwrap();
        assert_eq!(
            u64_of(e, "mode") as u32,
            tar_entry.mode & 0o7777,
            "{}",
            tar_entry.path
        );
        if tar_entry.path.starts_with("media/") {
            let src = fs::symlink_metadata(source_of(&app, &tar_entry.path)).unwrap();
            assert_eq!(
                u64_of(e, "mode") as u32,
                src.mode() & 0o7777,
                "mode of {}",
                tar_entry.path
            );
            assert_eq!(
                e["mtime"].as_i64(),
                Some(src.mtime()),
                "mtime of {}",
                tar_entry.path
            );
        }
        match kind {
            "file" => {
                files += 1;
                bytes += fs_meta.len();
                assert_eq!(u64_of(e, "size"), fs_meta.len(), "size of {}", tar_entry.path);
                assert_eq!(
                    str_of(e, "sha256"),
                    sha256_file(&extracted),
                    "sha256 of {}",
                    tar_entry.path
                );
                assert_eq!(u64_of(e, "mode") as u32, fs_meta.mode() & 0o7777);
            }
            "dir" => dirs += 1,
            "symlink" => {
                symlinks += 1;
                assert_eq!(
                    e["target"].as_str(),
                    tar_entry.link.as_deref(),
                    "{}",
                    tar_entry.path
                );
                assert_eq!(
                    fs::read_link(&extracted).unwrap().to_str(),
                    e["target"].as_str(),
                    "{}",
                    tar_entry.path
                );
            }
            other => panic!("unknown kind {other}"),
        }
    }
    assert_eq!(
        (files, dirs, symlinks),
        (7, 6, 1),
        "db + 6 media files, 6 dirs, 1 link"
    );
    let totals = &manifest["totals"];
    assert_eq!(u64_of(totals, "files"), files);
    assert_eq!(u64_of(totals, "dirs"), dirs);
    assert_eq!(u64_of(totals, "symlinks"), symlinks);
    assert_eq!(u64_of(totals, "bytes"), bytes);

    // The sidecar: the manifest plus the archive's real size and sha256.
    let sidecar = read_json(&d.paths.sidecar("app", &id));
    for (key, value) in manifest.as_object().unwrap() {
        assert_eq!(
            &sidecar[key], value,
            "sidecar field {key} differs from the manifest"
        );
    }
    assert_eq!(u64_of(&sidecar, "size"), fs::metadata(&archive).unwrap().len());
    assert_eq!(str_of(&sidecar, "sha256"), sha256_file(&archive));
    assert_eq!(str_of(&sidecar, "note"), "hello");

    // Nothing left in staging; the catalog knows the backup with its note.
    assert_eq!(names_in(&d.paths.staging), Vec::<String>::new());
    let shown = d.ctl_json(&["show", &id]);
    assert_eq!(str_of(&shown, "note"), "hello");
    assert_eq!(u64_of(&shown, "size"), fs::metadata(&archive).unwrap().len());
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter().map(|b| str_of(b, "id").to_owned()).collect()
}

#[test]
fn list_show_and_delete() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    assert_eq!(d.list(None), Vec::<Value>::new());

    // Two backups, possibly in the same second (then the second gets a -2 suffix).
    let id1 = str_of(&d.backup("app"), "id").to_owned();
    let id2 = str_of(&d.backup("app"), "id").to_owned();
    assert_ne!(id1, id2);

    let list = d.list(None);
    assert_eq!(ids(&list), [id2.clone(), id1.clone()], "newest first");
    for b in &list {
        let id = str_of(b, "id");
        let archive = d.paths.archive("app", id);
        assert_eq!(str_of(b, "job"), "app");
        assert!(str_of(b, "created-at").ends_with('Z'), "{b}");
        assert_eq!(u64_of(b, "size"), fs::metadata(&archive).unwrap().len());
        assert_eq!(str_of(b, "sha256"), sha256_file(&archive));
        assert_eq!(b["protected"], false);
        assert!(
            b["verified-at"].is_string(),
            "verify-after-backup should have set verified-at: {b}"
        );
    }
    assert_eq!(d.list(Some("app")), list);

    // The three ways of naming the newest backup agree.
    let latest = d.ctl_json(&["show", "latest"]);
    assert_eq!(d.ctl_json(&["show", "app:latest"]), latest);
    assert_eq!(d.ctl_json(&["show", &id2]), latest);
    assert_eq!(latest, list[0]);
    assert_eq!(d.ctl_json(&["show", &id1]), list[1]);
    let text = d.ctl(&["show", "latest"]).expect_ok();
    assert!(text.stdout.contains(&id2), "{text}");

    // Without --yes nothing is deleted.
    let refused = d.ctl(&["delete", &id1]).expect_failure(2, "--yes");
    assert_eq!(refused.stderr.trim().lines().count(), 1, "{refused}");
    assert!(d.paths.archive("app", &id1).exists());
    assert!(d.paths.sidecar("app", &id1).exists());
    assert_eq!(d.list(None).len(), 2);

    // With --yes the archive, the sidecar and the row go.
    let deleted = d.ctl(&["delete", &id1, "--yes"]).expect_ok();
    assert!(deleted.stdout.contains(&id1), "{deleted}");
    assert!(!d.paths.archive("app", &id1).exists());
    assert!(!d.paths.sidecar("app", &id1).exists());
    assert_eq!(ids(&d.list(None)), std::slice::from_ref(&id2));
    assert!(
        d.paths.archive("app", &id2).exists(),
        "the other backup is untouched"
    );

    let gone = d.ctl(&["show", &id1]).expect_failure(1, "there is no backup");
    assert_eq!(gone.stderr.trim().lines().count(), 1, "{gone}");
    d.ctl(&["delete", &id1, "--yes"])
        .expect_failure(1, "there is no backup");
}

/// `cofferctl list | head -1`: a reader that stops reading ends cofferctl quietly
/// with status 0, for the table and the JSON output, instead of a panic.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    d.backup("app");
    for args in [&["list"][..], &["--json", "list"], &["metrics"]] {
        let mut child = d.ctl_spawn(args);
        // Close the read end before cofferctl writes: its first write gets EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("cannot wait for cofferctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cofferctl {args:?} into a closed pipe: {stderr}"
        );
        assert!(stderr.is_empty(), "cofferctl {args:?} wrote to stderr: {stderr}");
    }
}
