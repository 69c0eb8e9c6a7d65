//! Damaged backups are detected: a flipped byte anywhere in the archive, a truncated
//! archive, a sidecar that lies, an archive re-packed behind the catalog's back. Each
//! time `verify` exits 1 with one sentence, the catalog records the failed
//! verification, a restore refuses to write anything, and once the original bytes
//! are back the backup verifies again. `verify --deep` runs SQLite's integrity check,
//! which catches a database damaged consistently with its hashes.

use std::fs;
use std::path::Path;

use coffer_tests::{App, Daemon, names_in, read_json, sha256_hex, short_tempdir};
use serde_json::Value;

use crate::hostile::{manifest, manifest_item, pack, place, plausible_items, sidecar, small_db, unpack};
use crate::restore::{LiveState, assert_error_sentence, assert_no_restore_leftovers, backup_id, str_of};

/// The backup's `show --json` document.
fn show(d: &Daemon, id: &str) -> Value {
    d.ctl_json(&["show", id])
}

/// Asserts that the damage to backup `id` (described by `what`) is detected by
/// `verify` (`phrase` in its sentence), recorded in the catalog, and stops a restore
/// into `to` before anything is written.
#[track_caller]
fn assert_detected(d: &Daemon, id: &str, what: &str, phrase: &str, to: &Path) {
    let out = d.ctl(&["verify", id]);
    assert!(!out.success(), "{what}: verify passed: {out}");
    assert_error_sentence(&out, 1, phrase);
    assert!(
        out.stderr.contains(id),
        "{what}: the error should name the backup: {out}"
    );

    let shown = show(d, id);
    let verdict = shown["verify-result"].as_str().unwrap_or_default();
    assert!(
        !verdict.is_empty() && verdict != "ok",
        "{what}: the catalog still says {verdict:?} after a failed verification"
    );
    let listed = d
        .list(None)
        .into_iter()
        .find(|b| b["id"] == id)
        .expect("the backup is still listed");
    assert_eq!(listed["verify-result"], shown["verify-result"]);

    let out = d.ctl(&["restore", id, "--to", to.to_str().unwrap()]);
    assert!(!out.success(), "{what}: restore succeeded: {out}");
    assert_error_sentence(&out, 1, phrase);
    assert!(
        !to.exists() || names_in(to).is_empty(),
        "{what}: the failed restore left {:?} in {}",
        names_in(to),
        to.display()
    );
}

#[test]
fn flipped_bytes_and_truncation_are_detected() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&d, "app");
    let archive = d.paths.archive("app", &id);
    let original = fs::read(&archive).unwrap();
    let size = original.len();
    assert!(size > 200 * 1024, "the archive is only {size} bytes");
    let live = LiveState::of(&app);
    let scratch = short_tempdir("coffer-corrupt-");

    let offsets = [
        0,
        5,
        100,
        1000,
        size / 4,
        size / 2,
        3 * size / 4,
        size - 20,
        size - 1,
    ];
    for (n, &offset) in offsets.iter().enumerate() {
        let mut damaged = original.clone();
        damaged[offset] ^= 0x01;
        fs::write(&archive, &damaged).unwrap();
        let what = format!("byte {offset} of {size} flipped");
        assert_detected(
            &d,
            &id,
            &what,
            "failed verification",
            &scratch.path().join(format!("flip-{n}")),
        );
        fs::write(&archive, &original).unwrap();
        d.ctl(&["verify", &id]).expect_ok();
        assert_eq!(show(&d, &id)["verify-result"], "ok", "{what}, then repaired");
    }

    for (n, keep) in [size - 100, size / 2, 0].into_iter().enumerate() {
        fs::write(&archive, &original[..keep]).unwrap();
        let what = format!("truncated to {keep} of {size} bytes");
        assert_detected(
            &d,
            &id,
            &what,
            "truncated",
            &scratch.path().join(format!("cut-{n}")),
        );
        fs::write(&archive, &original).unwrap();
    }

    // Bytes appended after the zstd frame change the file's hash and size.
    let mut longer = original.clone();
    longer.extend_from_slice(b"trailing garbage");
    fs::write(&archive, &longer).unwrap();
    assert_detected(
        &d,
        &id,
        "bytes appended",
        "failed verification",
        &scratch.path().join("appended"),
    );
    fs::write(&archive, &original).unwrap();

    let out = d.ctl(&["verify", &id]).expect_ok();
    assert!(out.stdout.contains(&id), "{out}");
    assert_eq!(show(&d, &id)["verify-result"], "ok");
    assert_eq!(LiveState::of(&app), live, "the live data changed");
}

#[test]
fn lying_sidecar_and_repacked_archive_are_detected() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&d, "app");
    let archive = d.paths.archive("app", &id);
    let sidecar_path = d.paths.sidecar("app", &id);
    let original_archive = fs::read(&archive).unwrap();
    let original_sidecar = fs::read(&sidecar_path).unwrap();
    let scratch = short_tempdir("coffer-corrupt-");
    let restore_sidecar = || fs::write(&sidecar_path, &original_sidecar).unwrap();

    // The sidecar claims another (valid) sha256 for one file.
    let mut lying = read_json(&sidecar_path);
    let entry = lying["entries"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["path"] == "media/0/a/b/file.bin")
        .expect("file.bin is in the manifest");
    entry["sha256"] = Value::String(sha256_hex(b"some other content"));
    fs::write(&sidecar_path, serde_json::to_vec_pretty(&lying).unwrap()).unwrap();
    assert_detected(
        &d,
        &id,
        "a sidecar with a wrong file hash",
        "does not match its sha256",
        &scratch.path().join("hash"),
    );
    restore_sidecar();
    d.ctl(&["verify", &id]).expect_ok();

    // The sidecar claims another archive size and hash than the catalog knows.
    let mut lying = read_json(&sidecar_path);
    lying["size"] = Value::from(lying["size"].as_u64().unwrap() + 1);
    fs::write(&sidecar_path, serde_json::to_vec_pretty(&lying).unwrap()).unwrap();
    assert_detected(
        &d,
        &id,
        "a sidecar with a wrong size",
        "does not match the catalog",
        &scratch.path().join("size"),
    );
    restore_sidecar();
    d.ctl(&["verify", &id]).expect_ok();

    // Re-packed with one manifest entry changed, the sidecar updated to match the new
    // file: the catalog still knows the original's hash.
    let mut items = unpack(&archive);
    let manifest_entry = items.last_mut().unwrap();
    assert_eq!(manifest_entry.path, "manifest.json");
    let mut manifest: Value = serde_json::from_slice(&manifest_entry.data).unwrap();
    let entry = manifest["entries"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["path"] == "media/0/empty")
        .expect("media/0/empty is in the manifest");
    entry["mtime"] = Value::from(entry["mtime"].as_i64().unwrap() - 3600);
    manifest_entry.data = serde_json::to_vec_pretty(&manifest).unwrap();
    let repacked = pack(&items);
    let mut new_sidecar = manifest.clone();
    for key in ["note", "protected", "duration-ms"] {
        new_sidecar[key] = read_json(&sidecar_path)[key].clone();
    }
    new_sidecar["size"] = Value::from(repacked.len());
    new_sidecar["sha256"] = Value::String(sha256_hex(&repacked));
    fs::write(&archive, &repacked).unwrap();
    fs::write(&sidecar_path, serde_json::to_vec_pretty(&new_sidecar).unwrap()).unwrap();
    assert_detected(
        &d,
        &id,
        "a re-packed archive with a matching sidecar",
        "does not match the catalog",
        &scratch.path().join("repacked"),
    );

    // With only the archive replaced (the sidecar the original), its hash gives it away.
    restore_sidecar();
    assert_detected(
        &d,
        &id,
        "a re-packed archive",
        "failed verification",
        &scratch.path().join("repacked2"),
    );

    fs::write(&archive, &original_archive).unwrap();
    d.ctl(&["verify", &id]).expect_ok();
    assert_eq!(show(&d, &id)["verify-result"], "ok");
}

/// A database whose last page (a b-tree leaf) is garbage after its header, so
/// `PRAGMA integrity_check` reports it; the file hashes stay consistent.
fn corrupt_db() -> Vec<u8> {
    let mut db = small_db();
    let last = db.len() - 4096;
    for (i, byte) in db[last + 8..last + 4000].iter_mut().enumerate() {
        *byte = (i * 7) as u8;
    }
    db
}

#[test]
fn deep_verify_checks_the_database() {
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", ""));
    let id = backup_id(&d, "app");

    let out = d.ctl(&["verify", &id, "--deep"]).expect_ok();
    assert!(out.stdout.contains("integrity checked"), "{out}");
    let verified = d.ctl_json(&["verify", &id, "--deep"]);
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["deep"], true);
    assert_eq!(str_of(&verified, "id"), id);
    let shallow = d.ctl_json(&["verify", &id]);
    assert_eq!(shallow["deep"], false);

    // A backup whose database is damaged but whose hashes all agree: the shallow
    // verification passes, the deep one does not.
    let damaged_id = "app-20200103T000000Z";
    let mut items = plausible_items(corrupt_db());
    let manifest = manifest(damaged_id, &items);
    items.push(manifest_item(&manifest));
    let archive = pack(&items);
    place(&d, damaged_id, &archive, &sidecar(&manifest, &archive));
    d.restart();
    d.ctl(&["verify", damaged_id]).expect_ok();
    let out = d.ctl(&["verify", damaged_id, "--deep"]);
    assert!(!out.success(), "deep verify passed a damaged database: {out}");
    assert!(out.stderr.contains("integrity"), "{out}");
    assert_ne!(show(&d, damaged_id)["verify-result"], "ok");

    // An in-place restore checks the staged database before touching anything.
    let live = LiveState::of(&app);
    let before = d.list(None).len();
    let out = d.ctl(&["restore", damaged_id, "--yes"]);
    assert!(!out.success(), "a damaged database was restored in place: {out}");
    assert!(out.stderr.contains("integrity"), "{out}");
    assert_eq!(LiveState::of(&app), live, "the live data changed");
    assert_no_restore_leftovers(app.dir.path());
    assert_eq!(d.list(None).len(), before, "a safety backup was taken");
}

#[test]
fn upload_of_a_damaged_database_is_rejected() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let dir = short_tempdir("coffer-deep-");
    let mut items = plausible_items(corrupt_db());
    let manifest = manifest("app-20200104T000000Z", &items);
    items.push(manifest_item(&manifest));
    let file = dir.path().join("damaged.tar.zst");
    fs::write(&file, pack(&items)).unwrap();

    let out = d.ctl(&["upload", file.to_str().unwrap()]);
    assert!(!out.success(), "a damaged database was accepted: {out}");
    assert!(out.stderr.contains("integrity"), "{out}");
    assert!(d.list(None).is_empty());
    assert_eq!(names_in(&d.paths.staging), Vec::<String>::new());
    let left: Vec<String> = names_in(&d.paths.backup_dir);
    assert!(left.is_empty(), "the rejected upload left {left:?}");
}

#[test]
fn damaged_database_error_is_one_line() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let dir = short_tempdir("coffer-deep-");
    let mut items = plausible_items(corrupt_db());
    let manifest = manifest("app-20200105T000000Z", &items);
    items.push(manifest_item(&manifest));
    let file = dir.path().join("damaged.tar.zst");
    fs::write(&file, pack(&items)).unwrap();
    let out = d.ctl(&["upload", file.to_str().unwrap()]);
    assert_error_sentence(&out, 1, "integrity");
}
