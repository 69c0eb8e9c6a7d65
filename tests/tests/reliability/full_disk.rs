//! Full disk: cofferd's state dir (`catalog.db`, `staging/`) and backup dir both on one
//! small tmpfs (root only — elsewhere the tests print `SKIPPED:` and return).
//!
//! The up-front space estimate refuses a backup that cannot fit, so to make the disk
//! fill *during* a run a filler thread starts at a seeded random delay after
//! `cofferctl backup` and writes a file until `ENOSPC`, then holds it. The delays are
//! spread over the backup's measured duration, so the fill lands in different phases:
//! the space check, `VACUUM INTO` into staging, the page stream, media archiving, the
//! manifest and sidecar writes, the rename, the catalog insert (catalog.db is on the
//! same full filesystem), verification and retention. Both snapshot methods take
//! turns. After each run, with the filler still there:
//!
//! - the run either completed (the fill came too late; counted) or failed with exit 1
//!   and one `cofferctl:` sentence that names space or the disk;
//! - no `.partial` anywhere, staging is empty, no sidecar without its archive, every
//!   archive on disk is listed and every listed backup has its files;
//! - the catalog lists exactly the earlier backups (plus the new one if it completed,
//!   minus what `keep-last` then pruned), and every listed backup verifies;
//! - the daemon answers `status`, the job is not running and its last run is recorded
//!   with the right outcome.
//!
//! Then the filler is removed and the next backup must succeed and verify.
//!
//! A second test fills the tmpfs to the last byte *before* backups, with
//! `min-free-space = "0"`, so neither the archive nor the catalog can grow: every
//! attempt must fail cleanly (refused by the space check, or failed at the catalog),
//! the daemon keeps running and answering, and once space is freed a backup succeeds.
//!
//! The seed ([`crate::seed`]) is printed; `COFFER_SEED=N` replays one.

// Test code panics on failure by design.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use coffer_tests::{
    COMMAND_TIMEOUT, Daemon, Output, Rng, Tmpfs, files_under, job_toml, names_in, partial_files, run,
    short_tempdir,
};
use rusqlite::Connection;
use serde_json::Value;

/// The two jobs back up the same data, one per snapshot method.
const JOBS: [(&str, &str); 2] = [("vacuum", "vacuum-into"), ("pages", "page-stream")];
/// What `keep-last` each job has, so the tmpfs never fills with old backups.
const KEEP: usize = 2;

/// A WAL database of about `kib` KiB of incompressible blobs, and a media
/// tree of a few big files and many small ones (so archiving media takes a while).
fn make_data(dir: &Path, kib: usize, seed: u64) -> (PathBuf, PathBuf) {
    let mut rng = Rng::new(seed);
    let db = dir.join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..kib / 16 {
        tx.execute("INSERT INTO blobs(data) VALUES (?1)", [rng.bytes(16 * 1024)])
            .unwrap();
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let media = dir.join("media");
    for d in 0..4 {
        let sub = media.join(format!("d{d}"));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("big.bin"), rng.bytes(kib * 1024 / 4)).unwrap();
        for f in 0..50 {
            let len = 1 + rng.below(4096) as usize;
            fs::write(sub.join(format!("f{f:02}.txt")), rng.bytes(len)).unwrap();
        }
    }
    (db, media)
}

/// The job sections: both methods, `keep-last`, the given `min-free-space`.
fn jobs_toml(db: &Path, media: &Path, min_free: &str) -> String {
    JOBS.iter()
        .map(|(name, method)| {
            job_toml(
                name,
                db,
                &[media],
                &format!(
                    "snapshot-method = \"{method}\"\nmin-free-space = \"{min_free}\"\n[job.retention]\nkeep-last = {KEEP}"
                ),
            )
        })
        .collect()
}

/// A daemon with its state dir and backup dir on `tmpfs` (declare the daemon after
/// the tmpfs so it stops before the unmount).
fn daemon_on(tmpfs: &Tmpfs, jobs: &str) -> Daemon {
    Daemon::configure("", jobs)
        .relocate(&tmpfs.path().join("state"), &tmpfs.path().join("backups"))
        .started()
}

/// Writes `path` until the filesystem is full (`ENOSPC`) and keeps it; returns the
/// bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let chunk = vec![0xA5u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("the filler failed with something other than ENOSPC: {e}"),
        }
    }
    written
}

/// How long a backup of `job` takes until its writes are done (the client sees the
/// `verify` phase begin), and the whole run.
fn time_backup(d: &Daemon, job: &str) -> (Duration, Duration) {
    let clock = Instant::now();
    let mut child = d.ctl_spawn(&["backup", job]);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut writes = None;
    for line in stderr.lines() {
        if line.unwrap().contains(": verify") {
            writes.get_or_insert(clock.elapsed());
        }
    }
    assert!(child.wait().unwrap().success(), "a backup failed");
    let whole = clock.elapsed();
    (writes.expect("no verify phase seen"), whole)
}

/// The phase the client last heard of (`backing up JOB: PHASE...` lines on stderr).
fn last_phase(out: &Output) -> &str {
    out.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("backing up "))
        .filter_map(|l| l.split(": ").nth(1))
        .next_back()
        .unwrap_or("start")
}

/// Ids of a `list --json` answer.
fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether an error sentence names the disk or space as the cause.
fn names_space(error: &str) -> bool {
    let e = error.to_lowercase();
    e.contains("space") || e.contains("disk is full") || e.contains("disk full")
}

/// Where a run stopped, as its error says.
fn phase_of(error: &str) -> &'static str {
    let e = error.to_lowercase();
    if e.contains("not enough free space") {
        "refused by the space check"
    } else if e.contains("the catalog") {
        "catalog write"
    } else if e.contains("sidecar") {
        "sidecar write"
    } else if e.contains("cannot finish the archive") {
        "rename/fsync of the archive"
    } else if e.contains("failed verification") {
        "verification"
    } else if e.contains("sqlite failed on") || e.contains("snapshot") {
        "snapshot (VACUUM INTO / page stream)"
    } else if e.contains("cannot write the archive") {
        "archive write (database or media)"
    } else if e.contains("staging") {
        "staging directory"
    } else {
        "other"
    }
}

/// The state every run must leave behind, whatever it hit: nothing half-written,
/// catalog and directory in agreement, `expected` listed per job, every backup
/// verifiable (checked when `verify`), and the daemon answering.
#[track_caller]
fn assert_consistent(d: &Daemon, root: &Path, expected: &BTreeMap<&str, Vec<String>>, verify: bool) {
    let partials = partial_files(root);
    assert!(partials.is_empty(), "left behind: {partials:?}");
    assert_eq!(
        names_in(&d.paths.staging),
        Vec::<String>::new(),
        "staging is not empty"
    );
    d.ctl(&["status"]).expect_ok();
    for (job, want) in expected {
        let listed = ids(&d.list(Some(job)));
        assert_eq!(
            &listed, want,
            "job {job}: the catalog lists other backups than expected"
        );
        let dir = d.paths.backup_dir.join(job);
        let mut on_disk: Vec<String> = Vec::new();
        for name in names_in(&dir) {
            if let Some(id) = name.strip_suffix(".tar.zst") {
                on_disk.push(id.to_owned());
            } else if let Some(id) = name.strip_suffix(".json") {
                assert!(
                    dir.join(format!("{id}.tar.zst")).is_file(),
                    "sidecar {name} has no archive"
                );
            } else {
                panic!("unexpected file {name} in {}", dir.display());
            }
        }
        on_disk.sort();
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(on_disk, sorted, "job {job}: archives on disk and catalog differ");
        for id in &listed {
            assert!(d.paths.sidecar(job, id).is_file(), "{id} has no sidecar");
            if verify {
                let out = d.ctl(&["verify", id]);
                assert!(out.success(), "an earlier backup no longer verifies: {out}");
            }
        }
        let status = d.job_status(job);
        assert_eq!(status["running"], false, "{status}");
    }
}

#[test]
fn a_disk_filling_up_at_any_point_of_a_backup_fails_the_run_cleanly() {
    let test = "a_disk_filling_up_at_any_point_of_a_backup_fails_the_run_cleanly";
    let Some(tmpfs) = Tmpfs::mount(test, "64m") else {
        return;
    };
    let seed = crate::seed(test);
    let mut rng = Rng::new(seed);
    let data = short_tempdir("coffer-app-");
    let (db, media) = make_data(data.path(), 2048, seed);
    let d = daemon_on(&tmpfs, &jobs_toml(&db, &media, "0B"));
    let filler = tmpfs.path().join("filler");

    // Earlier backups, and how long each method takes to write a backup.
    let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut duration: BTreeMap<&str, Duration> = BTreeMap::new();
    for (job, _) in JOBS {
        for _ in 0..KEEP {
            let (writes, whole) = time_backup(&d, job);
            eprintln!("{test}: a backup of {job} writes for {writes:?} of {whole:?}");
            duration.insert(job, writes);
        }
        expected.insert(job, ids(&d.list(Some(job))));
    }
    // What a run may write at most: the snapshot in staging and the archive.
    let db_size = fs::metadata(&db).unwrap().len();
    let need = 2 * db_size
        + files_under(&media)
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum::<u64>();
    let ballast = tmpfs.path().join("ballast");
    assert_consistent(&d, tmpfs.path(), &expected, true);

    let iterations = crate::iterations(12, 80);
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    let (mut completed, mut failed) = (0usize, 0usize);
    for i in 0..iterations {
        let (job, method) = JOBS[i % JOBS.len()];
        // Stratified over 0..1.15 × the time the run writes: every phase gets its
        // turn, and some fills come after the writes.
        let span = duration[job].as_micros() as u64 * 23 / 20;
        let slot = span / iterations as u64;
        let delay = Duration::from_micros(slot * i as u64 + rng.below(slot.max(1)));

        // Ballast leaves room for the run plus 4 MiB, so the filler fills the disk
        // within a few milliseconds of its start.
        let spare = tmpfs.free().saturating_sub(need + (4 << 20));
        fs::write(&ballast, vec![0x5Au8; (spare / 4096 * 4096) as usize]).unwrap();

        let cmd = d.ctl_command(&["--json", "backup", job]);
        let backup = thread::spawn(move || run(cmd, COMMAND_TIMEOUT));
        let path = filler.clone();
        let fill_thread: JoinHandle<u64> = thread::spawn(move || {
            thread::sleep(delay);
            fill(&path)
        });
        let out = backup.join().expect("the backup thread panicked");
        let filled = fill_thread.join().expect("the filler thread panicked");
        assert!(filled > 0 || tmpfs.free() < 1 << 20, "the filler wrote nothing");

        let status = d.job_status(job);
        let before = expected[job].clone();
        if out.success() {
            completed += 1;
            let new = out.json()["id"].as_str().unwrap().to_owned();
            assert_eq!(status["last-run"]["status"], "succeeded", "{status}");
            let mut now = vec![new];
            now.extend(before);
            // Retention after the backup may have failed on the full disk (that does
            // not fail the backup); the next backup's retention catches up.
            let listed = d.list(Some(job)).len();
            assert!(
                (KEEP..=now.len()).contains(&listed),
                "{listed} backups listed after a completed run"
            );
            now.truncate(listed);
            expected.insert(job, now);
        } else {
            failed += 1;
            assert_eq!(out.code, 1, "a full disk must fail the run with exit 1: {out}");
            let sentence = out.error_sentence();
            assert!(
                names_space(&sentence),
                "the error should name the disk or space: {out}"
            );
            *phases
                .entry(format!(
                    "{} (client saw: {})",
                    phase_of(&sentence),
                    last_phase(&out)
                ))
                .or_default() += 1;
            // The run is recorded (unless the catalog itself could not be written).
            let last = &status["last-run"];
            if !sentence.contains("the catalog") {
                assert_eq!(
                    last["status"], "failed",
                    "the failed run is not recorded: {status}"
                );
                assert!(
                    names_space(last["error"].as_str().unwrap_or_default()),
                    "the recorded error should name the cause: {status}"
                );
            }
            assert_ne!(last["status"], "running", "{status}");
        }
        eprintln!(
            "{test}: #{i} {method} fill after {delay:?}: {}",
            if out.success() {
                "completed".to_owned()
            } else {
                out.stderr.trim().lines().last().unwrap_or_default().to_owned()
            }
        );
        assert_consistent(&d, tmpfs.path(), &expected, true);

        // Space again: the next backup succeeds and verifies.
        fs::remove_file(&filler).unwrap();
        fs::remove_file(&ballast).unwrap();
        let next = d.backup(job);
        let next_id = next["id"].as_str().unwrap().to_owned();
        d.ctl(&["verify", &next_id]).expect_ok();
        assert_eq!(d.job_status(job)["last-run"]["status"], "succeeded");
        let mut now = vec![next_id];
        now.extend(expected[job].clone());
        now.truncate(KEEP);
        expected.insert(job, now);
        assert_consistent(&d, tmpfs.path(), &expected, false);
    }
    eprintln!(
        "{test}: {iterations} iterations (seed {seed}): {failed} failed cleanly on the full disk, \
         {completed} completed before the fill; where they stopped: {phases:?}; \
         writes took {duration:?}"
    );
    let refused: usize = phases
        .iter()
        .filter(|(k, _)| k.starts_with("refused"))
        .map(|(_, n)| n)
        .sum();
    let mid_run = failed - refused;
    assert!(
        mid_run > 0,
        "no fill landed inside a run: the test did not exercise a full disk mid-backup"
    );
}

#[test]
fn a_catalog_that_cannot_grow_fails_runs_cleanly_and_the_daemon_keeps_running() {
    let test = "a_catalog_that_cannot_grow_fails_runs_cleanly_and_the_daemon_keeps_running";
    let Some(tmpfs) = Tmpfs::mount(test, "24m") else {
        return;
    };
    let data = short_tempdir("coffer-app-");
    let (db, media) = make_data(data.path(), 1024, 7);
    let d = daemon_on(&tmpfs, &jobs_toml(&db, &media, "0"));
    let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (job, _) in JOBS {
        d.backup(job);
        expected.insert(job, ids(&d.list(Some(job))));
    }

    // To the last byte: the filler writes until ENOSPC, then a second file takes any
    // page freed meanwhile.
    let filler = tmpfs.path().join("filler");
    fill(&filler);
    fill(&tmpfs.path().join("filler2"));
    assert_eq!(tmpfs.free(), 0, "the tmpfs is not full");

    // Repeated attempts: each one's run and audit rows need catalog space, so sooner
    // or later the catalog's WAL cannot grow either.
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..12 {
        let (job, _) = JOBS[i % JOBS.len()];
        let out = d.ctl(&["backup", job]);
        assert_eq!(
            out.code, 1,
            "a backup on a full disk must fail with exit 1: {out}"
        );
        let sentence = out.error_sentence();
        assert!(
            names_space(&sentence),
            "the error should name the disk or space: {out}"
        );
        *outcomes.entry(phase_of(&sentence)).or_default() += 1;
        // Still answering, nothing half-done, nothing lost.
        let status = d.job_status(job);
        assert_eq!(status["running"], false, "{status}");
        d.ctl(&["--json", "list"]).expect_ok();
        d.ctl(&["metrics"]).expect_ok();
        let partials = partial_files(tmpfs.path());
        assert!(partials.is_empty(), "left behind: {partials:?}");
        assert_eq!(
            names_in(&d.paths.staging),
            Vec::<String>::new(),
            "staging is not empty"
        );
    }
    eprintln!("{test}: 12 attempts on a full disk (catalog included): {outcomes:?}");
    assert_consistent(&d, tmpfs.path(), &expected, true);

    // Space again: the next backups succeed and verify, the last runs say so.
    fs::remove_file(&filler).unwrap();
    fs::remove_file(tmpfs.path().join("filler2")).unwrap();
    for (job, _) in JOBS {
        let id = d.backup(job)["id"].as_str().unwrap().to_owned();
        d.ctl(&["verify", &id]).expect_ok();
        let status = d.job_status(job);
        assert_eq!(status["last-run"]["status"], "succeeded", "{status}");
        let mut now = vec![id];
        now.extend(expected[job].clone());
        now.truncate(KEEP);
        expected.insert(job, now);
    }
    assert_consistent(&d, tmpfs.path(), &expected, true);
}
