//! Hostile archives, crafted here with the `tar` and `zstd` crates (raw headers, so
//! names like `../x` or `/tmp/x` go in byte for byte): each is a *plausible* backup —
//! a real SQLite database, media entries, a manifest listing them with correct
//! sha256s — plus one hostile entry. Uploads of them are refused with one sentence and
//! write nothing anywhere; ones placed straight into the backup directory with a
//! self-consistent sidecar are catalogued but cannot be verified or restored, and
//! leave the live data and the restore target untouched.
//!
//! The builders ([`Item`], [`pack`], [`manifest`], [`sidecar`], [`place`]) are shared
//! with the `corruption` and `transfer` modules.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use coffer_tests::{App, Daemon, names_in, sha256_file, sha256_hex, short_tempdir};
use rusqlite::Connection;
use serde_json::{Value, json};
use tar::EntryType;

use crate::restore::{LiveState, assert_error_sentence, assert_no_restore_leftovers, backup_id, list_ids};

/// The id of crafted backups of job `app`.
pub(crate) const CRAFTED_ID: &str = "app-20200101T000000Z";

/// 2020-01-01T00:00:00Z.
const MTIME: u64 = 1_577_836_800;

/// One tar entry to write, exactly as given.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub path: String,
    pub kind: EntryType,
    pub mode: u32,
    pub mtime: u64,
    pub data: Vec<u8>,
    pub link: Option<String>,
}

impl Item {
    pub(crate) fn file(path: &str, data: impl Into<Vec<u8>>) -> Item {
        Item {
            path: path.to_owned(),
            kind: EntryType::Regular,
            mode: 0o644,
            mtime: MTIME,
            data: data.into(),
            link: None,
        }
    }

    pub(crate) fn dir(path: &str) -> Item {
        Item {
            mode: 0o755,
            kind: EntryType::Directory,
            ..Item::file(path, Vec::new())
        }
    }

    pub(crate) fn symlink(path: &str, target: &str) -> Item {
        Item {
            mode: 0o777,
            kind: EntryType::Symlink,
            link: Some(target.to_owned()),
            ..Item::file(path, Vec::new())
        }
    }

    /// Any other entry type (hard link, device, fifo), with an optional link name.
    pub(crate) fn special(path: &str, kind: EntryType, link: Option<&str>) -> Item {
        Item {
            kind,
            link: link.map(str::to_owned),
            ..Item::file(path, Vec::new())
        }
    }

    /// This entry as the manifest lists it (other types are listed as files).
    pub(crate) fn manifest_entry(&self) -> Value {
        let mut entry = json!({
            "path": self.path,
            "kind": match self.kind {
                EntryType::Directory => "dir",
                EntryType::Symlink => "symlink",
                _ => "file",
            },
            "size": if self.kind == EntryType::Regular { self.data.len() } else { 0 },
            "mode": self.mode & 0o7777,
            "mtime": self.mtime,
        });
        match self.kind {
            EntryType::Directory => {}
            EntryType::Symlink => entry["target"] = json!(self.link),
            _ => entry["sha256"] = json!(sha256_hex(&self.data)),
        }
        entry
    }
}

/// A raw GNU header: the name and link name are copied byte for byte (the `tar`
/// crate's setters refuse `..`), so they must fit the 100-byte fields.
fn header(item: &Item) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(item.kind);
    header.set_size(item.data.len() as u64);
    header.set_mode(item.mode);
    header.set_mtime(item.mtime);
    header.set_uid(0);
    header.set_gid(0);
    let old = header.as_old_mut();
    let name = item.path.as_bytes();
    assert!(name.len() < 100, "crafted name too long: {}", item.path);
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name);
    if let Some(link) = &item.link {
        let link = link.as_bytes();
        assert!(link.len() < 100, "crafted link too long");
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link);
    }
    header.set_cksum();
    header
}

/// A `.tar.zst` of `items`, in order.
pub(crate) fn pack(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        builder.append(&header(item), item.data.as_slice()).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    zstd::stream::encode_all(tar.as_slice(), 3).unwrap()
}

/// The entries of a `.tar.zst` file, for re-packing.
pub(crate) fn unpack(archive: &Path) -> Vec<Item> {
    let file = fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(zstd::stream::read::Decoder::new(file).unwrap());
    let mut items = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let header = entry.header();
        items.push(Item {
            path: String::from_utf8(entry.path_bytes().into_owned()).unwrap(),
            kind: header.entry_type(),
            mode: header.mode().unwrap(),
            mtime: header.mtime().unwrap(),
            link: entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap()),
            data,
        });
    }
    items
}

/// A manifest for backup `id` of job `app` listing `listed`.
pub(crate) fn manifest(id: &str, listed: &[Item]) -> Value {
    let entries: Vec<Value> = listed.iter().map(Item::manifest_entry).collect();
    let count = |kind: &str| entries.iter().filter(|e| e["kind"] == kind).count();
    let bytes: u64 = entries
        .iter()
        .filter(|e| e["kind"] == "file")
        .map(|e| e["size"].as_u64().unwrap())
        .sum();
    let db_size = listed
        .iter()
        .find(|i| i.path.starts_with("db/"))
        .map_or(0, |i| i.data.len());
    json!({
        "format-version": 1,
        "id": id,
        "job": "app",
        "created-at": "2020-01-01T00:00:00Z",
        "coffer-version": "0.1.0",
        "hostname": "elsewhere",
        "sqlite-version": rusqlite::version(),
        "source": {
            "path": "/srv/app/app.db",
            "page-size": 4096,
            "page-count": db_size / 4096,
            "user-version": 0,
            "application-id": 0,
            "journal-mode": "delete",
            "snapshot-method": "vacuum-into",
        },
        "media-roots": ["/srv/app/media"],
        "entries": entries,
        "totals": {
            "files": count("file"),
            "dirs": count("dir"),
            "symlinks": count("symlink"),
            "bytes": bytes,
            "skipped": 0,
        },
    })
}

/// The `manifest.json` entry.
pub(crate) fn manifest_item(manifest: &Value) -> Item {
    Item::file("manifest.json", serde_json::to_vec_pretty(manifest).unwrap())
}

/// The bytes of a small valid SQLite database (several pages, rollback journal).
pub(crate) fn small_db() -> Vec<u8> {
    let dir = short_tempdir("coffer-craft-");
    let path = dir.path().join("app.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA page_size = 4096;
         CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
         CREATE INDEX notes_body ON notes(body);",
    )
    .unwrap();
    for i in 0..300 {
        conn.execute(
            "INSERT INTO notes(body) VALUES (?1)",
            [format!("note {i} {}", "x".repeat(100))],
        )
        .unwrap();
    }
    drop(conn);
    fs::read(&path).unwrap()
}

/// A database, the media root, two files and a directory: what a real backup holds.
pub(crate) fn plausible_items(db: Vec<u8>) -> Vec<Item> {
    vec![
        Item::file("db/app.db", db),
        Item::dir("media/0"),
        Item::file("media/0/a.txt", "hello from a plausible archive\n"),
        Item::dir("media/0/sub"),
        Item::file("media/0/sub/b.txt", "nested\n"),
    ]
}

/// The sidecar of `archive` (the manifest plus the archive's size and sha256).
pub(crate) fn sidecar(manifest: &Value, archive: &[u8]) -> Value {
    let mut sidecar = manifest.clone();
    let map = sidecar.as_object_mut().unwrap();
    map.insert("size".into(), json!(archive.len()));
    map.insert("sha256".into(), json!(sha256_hex(archive)));
    map.insert("note".into(), json!("crafted"));
    map.insert("protected".into(), json!(false));
    map.insert("duration-ms".into(), json!(0));
    sidecar
}

/// Writes an archive and its sidecar into the daemon's backup directory, as if it had
/// taken the backup itself (restart the daemon to have it catalogued).
pub(crate) fn place(d: &Daemon, id: &str, archive: &[u8], sidecar: &Value) {
    let dir = d.paths.backup_dir.join("app");
    fs::create_dir_all(&dir).unwrap();
    fs::write(d.paths.archive("app", id), archive).unwrap();
    fs::write(
        d.paths.sidecar("app", id),
        serde_json::to_vec_pretty(sidecar).unwrap(),
    )
    .unwrap();
}

/// Where hostile entries try to write; unique to this test process.
fn evil(suffix: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/coffer-evil-{}{suffix}", std::process::id()))
}

/// Paths of everything under the daemon's directory (directories with a trailing
/// `/`) except the files it changes on every call (catalog, log).
fn daemon_files(d: &Daemon) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![d.paths.root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(&d.paths.root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("state/catalog.db") || rel == "cofferd.log" {
                continue;
            }
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                out.push(format!("{rel}/"));
                stack.push(path);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

struct Case {
    name: &'static str,
    /// The tar entries in order (the manifest included where it belongs).
    items: Vec<Item>,
    phrase: &'static str,
}

fn cases(db: &[u8]) -> Vec<Case> {
    let good = plausible_items(db.to_vec());
    // The good entries, then `hostile`, then a manifest listing good + `listed`.
    let with = |hostile: Vec<Item>, listed: Vec<Item>| -> Vec<Item> {
        let mut all_listed = good.clone();
        all_listed.extend(listed);
        let mut items = good.clone();
        items.extend(hostile);
        items.push(manifest_item(&manifest(CRAFTED_ID, &all_listed)));
        items
    };
    let dotdot = format!(
        "media/0/{}{}",
        "../".repeat(12),
        evil("-dotdot").strip_prefix("/").unwrap().display()
    );
    let absolute = evil("-abs").display().to_string();
    let escape_target = format!("../../../../../..{}", evil("").display());
    let escape = vec![
        Item::symlink("media/0/evil", &escape_target),
        Item::file("media/0/evil/pwned", "pwned\n"),
    ];
    let up = vec![
        Item::symlink("media/0/up", "../.."),
        Item::file("media/0/up/x", "pwned\n"),
    ];
    let beneath = vec![
        Item::symlink("media/0/in", "sub"),
        Item::file("media/0/in/x", "through a link\n"),
    ];
    let big = Item::file("media/0/big.txt", vec![b'b'; 1000]);
    let mut no_manifest = good.clone();
    no_manifest.push(Item::file("media/0/c.txt", "no manifest follows\n"));
    let late = Item::file("media/0/late.txt", "after the manifest\n");
    let mut after_manifest = with(Vec::new(), vec![late.clone()]);
    after_manifest.push(late);
    vec![
        Case {
            name: "a path with ..",
            items: with(vec![Item::file(&dotdot, "pwned\n")], Vec::new()),
            phrase: "'..'",
        },
        Case {
            name: "an absolute path",
            items: with(vec![Item::file(&absolute, "pwned\n")], Vec::new()),
            phrase: "absolute",
        },
        Case {
            // A link may point anywhere (it is restored as a link); writing through
            // it is what is refused.
            name: "a symlink out of the tree, then a file through it",
            items: with(escape.clone(), escape),
            phrase: "beneath the symlink",
        },
        Case {
            name: "a symlink to ../.., then a file through it",
            items: with(up.clone(), up),
            phrase: "beneath the symlink",
        },
        Case {
            name: "a file beneath a symlink that stays inside",
            items: with(beneath.clone(), beneath),
            phrase: "beneath the symlink",
        },
        Case {
            name: "a hard link",
            items: with(
                vec![Item::special(
                    "media/0/passwd",
                    EntryType::Link,
                    Some("/etc/passwd"),
                )],
                vec![Item::file("media/0/passwd", Vec::new())],
            ),
            phrase: "hard link",
        },
        Case {
            name: "a character device",
            items: with(
                vec![Item::special("media/0/null", EntryType::Char, None)],
                vec![Item::file("media/0/null", Vec::new())],
            ),
            phrase: "only files, directories and symlinks",
        },
        Case {
            name: "a fifo",
            items: with(
                vec![Item::special("media/0/fifo", EntryType::Fifo, None)],
                vec![Item::file("media/0/fifo", Vec::new())],
            ),
            phrase: "only files, directories and symlinks",
        },
        Case {
            name: "an entry the manifest does not list",
            items: with(
                vec![Item::file("media/0/unlisted.txt", "not in the manifest\n")],
                Vec::new(),
            ),
            phrase: "not in the manifest",
        },
        Case {
            name: "an entry larger than the manifest says",
            items: with(vec![big], vec![Item::file("media/0/big.txt", vec![b'b'; 10])]),
            phrase: "size that differs",
        },
        Case {
            name: "the same path twice",
            items: with(vec![Item::file("media/0/a.txt", "a second a.txt\n")], Vec::new()),
            phrase: "twice",
        },
        Case {
            name: "no manifest",
            items: no_manifest,
            phrase: "no manifest.json",
        },
        Case {
            name: "an entry after the manifest",
            items: after_manifest,
            phrase: "follows the manifest",
        },
    ]
}

#[test]
fn crafted_plausible_archive_uploads_and_restores() {
    // The control: without a hostile entry the crafted archive is accepted, so the
    // refusals below are about the hostile entries and nothing else.
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let dir = short_tempdir("coffer-craft-");
    let db = small_db();
    let mut items = plausible_items(db.clone());
    items.push(manifest_item(&manifest(CRAFTED_ID, &items)));
    let file = dir.path().join("good.tar.zst");
    fs::write(&file, pack(&items)).unwrap();
    let uploaded = d.ctl_json(&["upload", file.to_str().unwrap()]);
    assert_eq!(uploaded["id"], CRAFTED_ID);
    let to = dir.path().join("restored");
    d.ctl_json(&["restore", CRAFTED_ID, "--to", to.to_str().unwrap()]);
    assert_eq!(fs::read(to.join("db/app.db")).unwrap(), db);
    assert_eq!(
        fs::read_to_string(to.join("media/0/sub/b.txt")).unwrap(),
        "nested\n"
    );
}

#[test]
fn hostile_uploads_are_refused_and_write_nothing() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let dir = short_tempdir("coffer-hostile-");
    let db = small_db();
    let targets = [evil(""), evil("-dotdot"), evil("-abs")];
    for target in &targets {
        assert!(
            fs::symlink_metadata(target).is_err(),
            "{} exists before the test",
            target.display()
        );
    }
    let passwd = sha256_file(Path::new("/etc/passwd"));
    let before = daemon_files(&d);
    let live = LiveState::of(&app);

    for (n, case) in cases(&db).into_iter().enumerate() {
        let file = dir.path().join(format!("case-{n}.tar.zst"));
        fs::write(&file, pack(&case.items)).unwrap();
        let out = d.ctl(&["upload", file.to_str().unwrap()]);
        assert!(!out.success(), "{}: accepted: {out}", case.name);
        assert_error_sentence(&out, 1, "rejected");
        assert!(
            out.stderr.contains(case.phrase),
            "{}: the error should say {:?}: {out}",
            case.name,
            case.phrase
        );
        for target in &targets {
            assert!(
                fs::symlink_metadata(target).is_err(),
                "{}: {} was created",
                case.name,
                target.display()
            );
        }
        assert_eq!(daemon_files(&d), before, "{}: files were left behind", case.name);
        assert_eq!(names_in(&d.paths.staging), Vec::<String>::new(), "{}", case.name);
        assert!(list_ids(&d).is_empty(), "{}: catalogued", case.name);
    }
    assert_eq!(sha256_file(Path::new("/etc/passwd")), passwd);
    assert_eq!(LiveState::of(&app), live);
}

#[test]
fn hostile_archive_in_the_backup_dir_cannot_be_restored() {
    let app = App::new(false);
    let mut d = Daemon::start("", &app.job("app", ""));
    let real = backup_id(&d, "app");

    // Self-consistent: manifest, sidecar and archive agree; the manifest itself lists
    // a symlink leaving the tree and a file written through it (a second archive: a
    // file beneath a symlink that stays inside).
    let target = evil("2");
    let escape_target = format!("../../../..{}", target.display());
    let escape = vec![
        Item::symlink("media/0/evil", &escape_target),
        Item::file("media/0/evil/pwned", "pwned\n"),
    ];
    let beneath = vec![
        Item::symlink("media/0/in", "sub"),
        Item::file("media/0/in/x", "through a link\n"),
    ];
    let db = small_db();
    let mut placed = BTreeMap::new();
    for (id, hostile, phrase) in [
        ("app-20200101T000000Z", escape, "beneath the symlink"),
        ("app-20200102T000000Z", beneath, "beneath the symlink"),
    ] {
        let mut items = plausible_items(db.clone());
        items.extend(hostile);
        let manifest = manifest(id, &items);
        items.push(manifest_item(&manifest));
        let archive = pack(&items);
        place(&d, id, &archive, &sidecar(&manifest, &archive));
        placed.insert(id, phrase);
    }
    d.restart();
    let ids = list_ids(&d);
    for id in placed.keys() {
        assert!(ids.contains(&id.to_string()), "{id} was not catalogued: {ids:?}");
    }
    let live = LiveState::of(&app);
    let scratch = short_tempdir("coffer-to-");

    for (id, phrase) in placed {
        let out = d.ctl(&["verify", id]);
        assert_error_sentence(&out, 1, phrase);

        let to = scratch.path().join(id);
        let out = d.ctl(&["restore", id, "--to", to.to_str().unwrap()]);
        assert_error_sentence(&out, 1, phrase);
        assert!(
            !to.exists() || names_in(&to).is_empty(),
            "{id}: the failed restore left {:?}",
            names_in(&to)
        );

        let out = d.ctl(&["restore", id, "--yes"]);
        assert_error_sentence(&out, 1, phrase);
        assert_eq!(LiveState::of(&app), live, "{id}: the live data changed");
        assert_no_restore_leftovers(app.dir.path());
        assert!(
            fs::symlink_metadata(&target).is_err(),
            "{} was created",
            target.display()
        );
        assert_eq!(names_in(&d.paths.staging), Vec::<String>::new());
    }
    // No safety backup was taken: the archives failed before anything live was touched.
    let mut now = list_ids(&d);
    now.sort();
    let mut want = vec![
        real,
        "app-20200101T000000Z".to_owned(),
        "app-20200102T000000Z".to_owned(),
    ];
    want.sort();
    assert_eq!(now, want);
}
