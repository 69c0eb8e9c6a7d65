//! A backup dir on a small filesystem (a size-limited tmpfs; root only — elsewhere the
//! tests say why and return): a backup that cannot fit is refused up front with a
//! sentence naming the directory and the sizes; `min-free-space` is honoured; a disk
//! that fills up while the archive is written fails the run cleanly. Either way
//! nothing is left behind (no `.partial`, no sidecar, empty staging), earlier backups
//! stay listed and verifiable, the failed run is recorded, and the daemon answers.

use std::fs;
use std::path::{Path, PathBuf};

use coffer_common::format::bytes;
use coffer_tests::{
    Daemon, Rng, Tmpfs, files_under, job_toml, names_in, sha256_file, short_tempdir, toml_str,
};
use rusqlite::Connection;
use serde_json::Value;
use tempfile::TempDir;

/// A daemon whose backup dir is `backup_dir` (the state dir and staging stay on the
/// normal disk, so space checks of the backup dir decide). Declare it after the
/// [`Tmpfs`] so it stops before the tmpfs is unmounted.
fn daemon_with_backup_dir(backup_dir: &Path, jobs: &str) -> Daemon {
    let mut d = Daemon::configure("", jobs);
    let text = fs::read_to_string(&d.paths.config).unwrap();
    let key = |p: &Path| format!("backup-dir = {}", toml_str(&p.display().to_string()));
    let old = key(&d.paths.backup_dir);
    assert!(text.contains(&old), "{text}");
    fs::write(&d.paths.config, text.replace(&old, &key(backup_dir))).unwrap();
    d.paths.backup_dir = backup_dir.to_owned();
    d.started()
}

/// A rollback-journal database of about `kib` KiB of incompressible blobs.
fn blob_db(path: &Path, kib: usize) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
        .unwrap();
    let mut rng = Rng::new(0xD15C);
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..kib / 16 {
        tx.execute("INSERT INTO blobs(data) VALUES (?1)", [rng.bytes(16 * 1024)])
            .unwrap();
    }
    tx.commit().unwrap();
}

/// Asserts the failed run left nothing in the job's backup dir but `allowed`, nothing
/// in staging, catalogued nothing new, is recorded as failed with `phrase` in its
/// error, and that the daemon still answers.
#[track_caller]
fn assert_failed_cleanly(d: &Daemon, job: &str, allowed: &[PathBuf], listed: &[Value], phrase: &str) {
    let mut allowed = allowed.to_vec();
    allowed.sort();
    assert_eq!(
        files_under(&d.paths.backup_dir.join(job)),
        allowed,
        "the failed run left files behind (or removed some)"
    );
    assert_eq!(
        names_in(&d.paths.staging),
        Vec::<String>::new(),
        "staging is not empty"
    );
    assert_eq!(d.list(Some(job)), listed, "the failed run changed the catalog");
    d.ctl(&["status"]).expect_ok();
    let status = d.job_status(job);
    assert_eq!(status["running"], false, "{status}");
    assert_eq!(status["last-run"]["status"], "failed", "{status}");
    let error = status["last-run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(phrase),
        "the recorded error should contain {phrase:?}: {status}"
    );
}

#[test]
fn a_backup_that_cannot_fit_is_refused_up_front() {
    let Some(tmpfs) = Tmpfs::mount("a_backup_that_cannot_fit_is_refused_up_front", "2m") else {
        return;
    };
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("big.db");
    blob_db(&db, 4096);
    let db_size = fs::metadata(&db).unwrap().len();
    let db_hash = sha256_file(&db);
    let d = daemon_with_backup_dir(tmpfs.path(), &job_toml("app", &db, &[], ""));
    let free = tmpfs.free();
    assert!(free < db_size, "the tmpfs should be smaller than the database");

    let out = d.ctl(&["backup", "app"]);
    let out = out.expect_failure(1, "not enough free space for a backup of job 'app'");
    out.error_sentence();
    let job_dir = tmpfs.path().join("app");
    for part in [
        format!("{} has {} free", job_dir.display(), bytes(free)),
        format!("the backup needs about {}", bytes(db_size)),
        "min-free-space is 0 B".to_owned(),
    ] {
        assert!(
            out.stderr.contains(&part),
            "stderr should contain {part:?}: {out}"
        );
    }
    assert_failed_cleanly(&d, "app", &[], &[], "not enough free space");
    assert_eq!(files_under(tmpfs.path()), Vec::<PathBuf>::new());
    assert_eq!(tmpfs.free(), free, "the refused run used space");
    assert_eq!(sha256_file(&db), db_hash, "the source must be untouched");
}

#[test]
fn min_free_space_is_kept_free() {
    let Some(tmpfs) = Tmpfs::mount("min_free_space_is_kept_free", "8m") else {
        return;
    };
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("small.db");
    blob_db(&db, 192);
    let jobs = [
        job_toml("tight", &db, &[], "min-free-space = \"8MiB\""),
        job_toml("roomy", &db, &[], "min-free-space = \"1MiB\""),
    ]
    .concat();
    let d = daemon_with_backup_dir(tmpfs.path(), &jobs);

    // 8 MiB of tmpfs minus the backup is less than 8 MiB: refused.
    let out = d.ctl(&["backup", "tight"]);
    let out = out.expect_failure(1, "not enough free space for a backup of job 'tight'");
    out.error_sentence();
    assert!(out.stderr.contains("min-free-space is 8.0 MiB"), "{out}");
    assert!(
        out.stderr
            .contains(&tmpfs.path().join("tight").display().to_string()),
        "{out}"
    );
    assert_failed_cleanly(&d, "tight", &[], &[], "min-free-space is 8.0 MiB");

    // With 1 MiB to spare it fits.
    let backup = d.backup("roomy");
    let id = backup["id"].as_str().unwrap();
    assert!(d.paths.archive("roomy", id).is_file());
    assert!(d.paths.sidecar("roomy", id).is_file());
    assert_eq!(d.job_status("roomy")["last-run"]["status"], "succeeded");
    d.ctl(&["verify", id]).expect_ok();

    // The refusal did not disturb the other job, nor the other job the refusal.
    d.ctl(&["backup", "tight"])
        .expect_failure(1, "min-free-space is 8.0 MiB");
    assert_eq!(d.list(None).len(), 1);
}

/// A daemon whose next backup of job `app` runs out of space while it writes the
/// archive, after one earlier backup that fitted.
///
/// The space check is an estimate: the database snapshot plus the media bytes. A test
/// cannot reliably fill the disk in the instant between that check and the archive
/// write, so this makes the estimate pass and the write fail deterministically
/// instead: 2000 tiny files with random contents cost far more in the archive (tar
/// headers, their own sha256 in manifest.json) than their 16 bytes each, and a filler
/// file leaves just enough room for the estimate.
struct FullDisk {
    // Fields drop in order: the daemon stops before the tmpfs is unmounted.
    d: Daemon,
    tmpfs: Tmpfs,
    _data: TempDir,
    earlier: Value,
    filler: PathBuf,
}

fn full_disk(test: &str) -> Option<FullDisk> {
    let tmpfs = Tmpfs::mount(test, "4m")?;
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("app.db");
    blob_db(&db, 256);
    let media = data.path().join("media");
    let mut rng = Rng::new(0xF111);
    fs::create_dir_all(&media).unwrap();
    fs::write(media.join("big.bin"), rng.bytes(1 << 20)).unwrap();
    for dir in 0..20 {
        let sub = media.join(format!("d{dir:02}"));
        fs::create_dir_all(&sub).unwrap();
        for file in 0..100 {
            fs::write(sub.join(format!("f{file:03}")), rng.bytes(16)).unwrap();
        }
    }
    // The most the space checks ask for: the snapshot (VACUUM INTO, as ours) plus media.
    let copy = data.path().join("copy.db");
    Connection::open(&db)
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let estimate = fs::metadata(&copy).unwrap().len() + (1 << 20) + 2000 * 16;
    fs::remove_file(&copy).unwrap();

    let d = daemon_with_backup_dir(tmpfs.path(), &job_toml("app", &db, &[&media], ""));
    let earlier = d.backup("app");

    // Leave room for the estimate plus a little (the archive needs much more).
    let filler = tmpfs.path().join("filler");
    let room = estimate + 16 * 1024;
    let free = tmpfs.free();
    assert!(
        free > room,
        "the tmpfs is too small for this test: {free} < {room}"
    );
    fs::write(&filler, vec![0xA5u8; ((free - room) / 4096 * 4096) as usize]).unwrap();
    assert!(tmpfs.free() >= estimate);
    Some(FullDisk {
        d,
        tmpfs,
        _data: data,
        earlier,
        filler,
    })
}

#[test]
fn a_disk_that_fills_up_during_the_archive_fails_the_run_cleanly() {
    let Some(full) = full_disk("a_disk_that_fills_up_during_the_archive_fails_the_run_cleanly") else {
        return;
    };
    let d = &full.d;
    let earlier_id = full.earlier["id"].as_str().unwrap().to_owned();
    let earlier_files = vec![
        d.paths.archive("app", &earlier_id),
        d.paths.sidecar("app", &earlier_id),
    ];
    let listed = d.list(Some("app"));
    assert_eq!(listed.len(), 1);

    let out = d.ctl(&["backup", "app"]);
    let out = out.expect_failure(1, "No space left on device");
    out.error_sentence();
    assert!(out.stderr.contains("cannot write the archive"), "{out}");
    assert_failed_cleanly(d, "app", &earlier_files, &listed, "cannot write the archive");
    // Only the filler is left at the top of the backup dir.
    assert_eq!(names_in(full.tmpfs.path()), ["app", "filler"]);
    d.ctl(&["verify", &earlier_id]).expect_ok();
    assert_eq!(
        d.ctl_json(&["show", &earlier_id])["sha256"],
        full.earlier["sha256"]
    );
    assert_eq!(
        sha256_file(&earlier_files[0]),
        full.earlier["sha256"].as_str().unwrap()
    );

    // With room again the next backup succeeds.
    fs::remove_file(&full.filler).unwrap();
    let next = d.backup("app");
    let next_id = next["id"].as_str().unwrap();
    assert_eq!(d.list(Some("app")).len(), 2);
    d.ctl(&["verify", next_id]).expect_ok();
    assert_eq!(d.job_status("app")["last-run"]["status"], "succeeded");
}

#[test]
fn a_disk_full_run_is_recorded_with_its_cause() {
    let Some(full) = full_disk("a_disk_full_run_is_recorded_with_its_cause") else {
        return;
    };
    let d = &full.d;
    d.ctl(&["backup", "app"])
        .expect_failure(1, "No space left on device");
    // What status, health and the on-failure hook see must say why, as the client's
    // message does.
    let status = d.job_status("app");
    assert_eq!(status["last-run"]["status"], "failed", "{status}");
    let error = status["last-run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("No space left on device"),
        "the recorded error should name the cause: {status}"
    );
    let text = d.ctl(&["status"]).expect_ok().stdout;
    assert!(text.contains("No space left on device"), "{text}");
}
