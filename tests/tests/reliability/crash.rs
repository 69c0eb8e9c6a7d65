//! Crash anywhere: `kill -9` of cofferd at seeded random moments during a backup, a
//! prune (by `cofferctl prune` and by the retention run after a backup) and an
//! in-place restore; after every restart nothing is half-done.
//!
//! Each test first measures how long one clean run takes, then in every iteration
//! starts the run with `cofferctl` in the background, sleeps a random delay over
//! [0, 1.2 × that duration] (stratified, so early, middle and late moments and a few
//! just after the end are all hit) — or, for the narrow windows that matter most,
//! a few milliseconds after cofferctl reports a phase (the restore's swap, the
//! verification a retention run follows) — SIGKILLs the daemon, reaps the client and
//! starts cofferd again, which must always succeed. Then [`check_invariants`]: no
//! `.partial` file anywhere under the backup or state dir, staging and the restore
//! journal empty, the listed ids == the archives on disk == the sidecars on disk,
//! every listed backup verifies (each new one once, all again at the end), nothing
//! but the database (and SQLite's `-wal`/`-shm`) and the media directory beside the
//! app's live paths, the source database passes `PRAGMA integrity_check`, and
//! `cofferctl status` answers.
//!
//! - [`crash_during_backup`]: 8 MiB of incompressible rows plus 4 MiB of media, with
//!   and without verify-after-backup, with both snapshot methods.
//! - [`crash_during_prune`]: a dozen backups, two pinned, `keep-last = 2`; killed
//!   during `cofferctl prune` or the retention run after a backup. Pinned backups and
//!   the newest survive, and a clean prune afterwards still reaches the policy's
//!   result.
//! - [`crash_during_restore`]: the live data is state B, the restored backup state A;
//!   afterwards the live database and media are exactly A or exactly B — both the same
//!   one — and every "pre-restore" safety backup is pinned.
//!
//! The seed ([`crate::seed`]: `$COFFER_SEED`, else 42) is printed with each killed
//! run's delay and the phase cofferctl last reported, so a failure replays with
//! `COFFER_SEED=N` (the delays replay exactly; where they land in a run depends on
//! the machine's speed).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coffer_tests::{
    App, Daemon, Rng, db_difference, job_toml, names_in, partial_files, tree_difference, wait_timeout,
};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// `n` moments to kill at, as fractions of a clean run's duration over [0, 1.2): one
/// uniformly random point in each of `n` equal slices, in random order, so early,
/// middle and late moments and a few just after the end are all hit.
fn kill_points(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut out: Vec<f64> = (0..n)
        .map(|i| 1.2 * (i as f64 + rng.below(1000) as f64 / 1000.0) / n as f64)
        .collect();
    for i in (1..n).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

/// Adds a `filler` table of `kib` KiB of random (incompressible) rows to `db`.
fn add_filler(db: &Path, kib: usize, rng: &mut Rng) {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch("CREATE TABLE filler(id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..kib / 16 {
        tx.execute("INSERT INTO filler(data) VALUES (?1)", [rng.bytes(16 * 1024)])
            .unwrap();
    }
    tx.commit().unwrap();
}

/// Adds `count` random files of `kib` KiB each under `media/big/`.
fn add_big_files(media: &Path, count: usize, kib: usize, rng: &mut Rng) {
    fs::create_dir_all(media.join("big")).unwrap();
    for i in 0..count {
        fs::write(media.join(format!("big/{i}.bin")), rng.bytes(kib * 1024)).unwrap();
    }
}

/// Replaces the `[[job]]` sections of the daemon's config (read at the next start).
fn set_jobs(d: &Daemon, jobs: &str) {
    let text = fs::read_to_string(&d.paths.config).unwrap();
    let head = &text[..text.find("[[job]]").expect("the config has no [[job]]")];
    fs::write(&d.paths.config, format!("{head}{jobs}\n")).unwrap();
}

/// Copies a file or tree with `cp -a` (modes, symlinks and mtimes kept).
fn copy(src: &Path, dst: &Path) {
    let status = Command::new("cp").arg("-a").arg(src).arg(dst).status().unwrap();
    assert!(
        status.success(),
        "cp -a {} {} failed",
        src.display(),
        dst.display()
    );
}

/// The string `v[key]`.
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// The ids of `list --json`, newest first.
fn ids(list: &[Value]) -> Vec<String> {
    list.iter().map(|b| text(b, "id").to_owned()).collect()
}

/// When to kill the daemon, counted from the start of cofferctl.
#[derive(Debug, Clone, Copy)]
enum Moment {
    After(Duration),
    /// This long after cofferctl reports the phase (or its output ends).
    AfterPhase(&'static str, Duration),
}

/// One run of cofferctl that the daemon was killed under.
struct Killed {
    /// From the start of cofferctl to the kill.
    delay: Duration,
    /// The last progress phase cofferctl printed, `-` if none, `finished` if it had
    /// exited successfully before the kill.
    phase: String,
}

/// Runs `cofferctl args...` in the background, SIGKILLs cofferd at `moment`, waits
/// for cofferctl to exit (so it cannot reach the next daemon) and starts cofferd again.
fn kill_during(d: &mut Daemon, args: &[&str], moment: Moment) -> Killed {
    let started = Instant::now();
    let mut child = d.ctl_spawn(args);
    // Progress lines are "<what>: <phase>[: <message>]", one per new phase.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, phases) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(phase) = line.split(": ").nth(1).filter(|p| !p.contains(' ')) {
                let _ = tx.send(phase.to_owned());
            }
        }
    });
    let mut seen = Vec::new();
    match moment {
        Moment::After(delay) => std::thread::sleep(delay),
        Moment::AfterPhase(phase, delay) => {
            while let Ok(p) = phases.recv_timeout(Duration::from_secs(60)) {
                seen.push(p);
                if seen.last().is_some_and(|p| p == phase) {
                    break;
                }
            }
            std::thread::sleep(delay);
        }
    }
    let delay = started.elapsed();
    let finished = child.try_wait().unwrap().is_some_and(|s| s.success());
    d.kill();
    if wait_timeout(&mut child, Duration::from_secs(30)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("cofferctl {args:?} did not exit within 30 s of the daemon's death");
    }
    reader.join().unwrap();
    seen.extend(phases.try_iter());
    d.start_again();
    Killed {
        delay,
        phase: if finished {
            "finished".to_owned()
        } else {
            seen.pop().unwrap_or_else(|| "-".to_owned())
        },
    }
}

/// Counts of a summary ("3 snapshot, 2 verify, ...").
fn tally(items: impl IntoIterator<Item = String>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `PRAGMA integrity_check` of `db` (read-only).
fn integrity(db: &Path) -> String {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()));
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// The ids of the files in the job directories that end in `suffix`; panics on any
/// other file there (a leftover).
fn ids_on_disk(backup_dir: &Path, suffix: &str, context: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for job in names_in(backup_dir) {
        for name in names_in(&backup_dir.join(&job)) {
            if let Some(id) = name.strip_suffix(suffix) {
                out.insert(id.to_owned());
            } else {
                assert!(
                    name.ends_with(".tar.zst") || name.ends_with(".json"),
                    "{context}: leftover {name} in {}",
                    backup_dir.join(&job).display()
                );
            }
        }
    }
    out
}

/// Asserts the state a crash must never break (see the module doc) and returns the
/// list. Backups in `verified` are not verified again; new ones are added to it.
#[track_caller]
fn check_invariants(d: &Daemon, app: &App, verified: &mut HashSet<String>, context: &str) -> Vec<Value> {
    let status = d.ctl(&["status"]);
    assert!(status.success(), "{context}: status does not answer: {status}");
    for dir in [&d.paths.backup_dir, &d.paths.state_dir] {
        let partials = partial_files(dir);
        assert!(
            partials.is_empty(),
            "{context}: leftover partial files {partials:?}"
        );
    }
    let staging = names_in(&d.paths.staging);
    assert!(staging.is_empty(), "{context}: staging is not empty: {staging:?}");
    let journal = names_in(&d.paths.state_dir.join("journal"));
    assert!(journal.is_empty(), "{context}: restore journal left: {journal:?}");
    // SQLite's own -wal/-shm may stay after a kill; anything else is Coffer's leftover.
    let beside: Vec<String> = names_in(app.dir.path())
        .into_iter()
        .filter(|n| !["app.db", "app.db-wal", "app.db-shm", "media"].contains(&n.as_str()))
        .collect();
    assert!(
        beside.is_empty(),
        "{context}: leftovers beside the live data: {beside:?}"
    );

    let list = d.list(None);
    let listed: HashSet<String> = ids(&list).into_iter().collect();
    assert_eq!(listed.len(), list.len(), "{context}: an id is listed twice");
    let archives = ids_on_disk(&d.paths.backup_dir, ".tar.zst", context);
    let sidecars = ids_on_disk(&d.paths.backup_dir, ".json", context);
    assert_eq!(listed, archives, "{context}: listed backups != archives on disk");
    assert_eq!(listed, sidecars, "{context}: listed backups != sidecars on disk");
    for id in &listed {
        if verified.contains(id) {
            continue;
        }
        let out = d.ctl(&["verify", id]);
        assert!(
            out.success(),
            "{context}: listed backup {id} does not verify: {out}"
        );
        verified.insert(id.clone());
    }
    assert_eq!(
        integrity(&app.db),
        "ok",
        "{context}: the source database is damaged"
    );
    list
}

/// The job section of the tests' app.
fn app_job(app: &App, extra: &str) -> String {
    app.job("app", extra)
}

// ---------------------------------------------------------------------------
// Backup
// ---------------------------------------------------------------------------

/// The job's settings that change from run to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Variant {
    verify: bool,
    page_stream: bool,
}

impl Variant {
    fn extra(self) -> String {
        format!(
            "verify-after-backup = {}\nsnapshot-method = \"{}\"",
            self.verify,
            if self.page_stream {
                "page-stream"
            } else {
                "vacuum-into"
            }
        )
    }
}

#[test]
fn crash_during_backup() {
    let clock = Instant::now();
    let seed = crate::seed("crash/backup");
    let mut rng = Rng::new(seed);
    let app = App::new(true);
    add_filler(&app.db, 8 * 1024, &mut rng);
    add_big_files(&app.media, 4, 1024, &mut rng);
    let variants =
        [false, true].map(|verify| [false, true].map(|page_stream| Variant { verify, page_stream }));
    let variants: Vec<Variant> = variants.into_iter().flatten().collect();
    let mut d = Daemon::start("", &app_job(&app, &variants[0].extra()));
    let mut verified = HashSet::new();

    // One clean backup per variant: how long a run takes.
    let mut took = BTreeMap::new();
    for &variant in &variants {
        d.stop();
        set_jobs(&d, &app_job(&app, &variant.extra()));
        d.start_again();
        let started = Instant::now();
        d.backup("app");
        took.insert(variant, started.elapsed());
    }
    eprintln!("crash/backup: clean backups took {took:?}");
    check_invariants(&d, &app, &mut verified, "after the clean backups");

    let n = crate::iterations(12, 200);
    let points = kill_points(&mut rng, n);
    // The config is read at start-up: each restart brings the next run's variant.
    let plan: Vec<Variant> = (0..n)
        .map(|_| variants[rng.below(variants.len() as u64) as usize])
        .collect();
    d.stop();
    set_jobs(&d, &app_job(&app, &plan[0].extra()));
    d.start_again();
    let mut outcomes = Vec::new();
    let mut kept = 0;
    for (i, (&variant, fraction)) in plan.iter().zip(points).enumerate() {
        let delay = took[&variant].mul_f64(fraction);
        if let Some(next) = plan.get(i + 1) {
            set_jobs(&d, &app_job(&app, &next.extra()));
        }
        let before: HashSet<String> = ids(&d.list(None)).into_iter().collect();
        let killed = kill_during(&mut d, &["backup", "app"], Moment::After(delay));
        let context = format!(
            "crash/backup seed {seed} iteration {i} ({variant:?}, killed after {:?} during {})",
            killed.delay, killed.phase
        );
        let list = check_invariants(&d, &app, &mut verified, &context);
        let new: Vec<String> = ids(&list).into_iter().filter(|id| !before.contains(id)).collect();
        assert!(new.len() <= 1, "{context}: more than one new backup: {new:?}");
        if killed.phase == "finished" {
            assert_eq!(new.len(), 1, "{context}: the finished backup is not listed");
        }
        kept += new.len();
        eprintln!(
            "crash/backup: iteration {i}: {variant:?}, killed after {:?} during {}: {}",
            killed.delay,
            killed.phase,
            if new.is_empty() {
                "no backup"
            } else {
                "backup kept"
            }
        );
        outcomes.push(killed.phase);
    }
    verified.clear();
    let list = check_invariants(&d, &app, &mut verified, "crash/backup at the end (all verified)");
    eprintln!(
        "crash/backup: {n} iterations, seed {seed}, killed during: {}; {kept} backups kept, {} listed; \
         all invariants held ({:.1} s)",
        tally(outcomes),
        list.len(),
        clock.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Prune
// ---------------------------------------------------------------------------

/// How a prune round's removals are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PruneBy {
    /// `cofferctl prune app`.
    Prune,
    /// `cofferctl backup app`, whose retention run prunes.
    Backup,
}

/// Backups per prune round, and how many of them are pinned.
const ROUND_BACKUPS: usize = 12;
const ROUND_PINNED: usize = 2;

/// What a prune round saw.
struct Round {
    /// How long the run took (clean) or ran until the kill.
    took: Duration,
    /// Where it was killed (see [`Killed::phase`]), or `clean`.
    phase: String,
    /// How far the removals got: none, some or all.
    removed: &'static str,
}

/// One prune round: `ROUND_BACKUPS` backups (no retention), two pinned; restart with
/// `keep-last = 2`; run `by` (killed, or to the end); restart and
/// check; a clean prune reaches the policy's result; unpin and prune again.
/// Killed after `kill`, or run to the end when `None`.
fn prune_round(
    d: &mut Daemon,
    app: &App,
    rng: &mut Rng,
    verified: &mut HashSet<String>,
    by: PruneBy,
    kill: Option<Moment>,
    context: &str,
) -> Round {
    let keep_all = job_toml("app", &app.db, &[], "");
    let keep_two = job_toml("app", &app.db, &[], "[job.retention]\nkeep-last = 2");
    d.stop();
    set_jobs(d, &keep_all);
    d.start_again();
    let already = d.list(None).len();
    for _ in already..ROUND_BACKUPS {
        d.backup("app");
    }
    let before = ids(&d.list(None));
    let newest = before[0].clone();
    let mut pinned = HashSet::new();
    while pinned.len() < ROUND_PINNED {
        let id = &before[1 + rng.below(before.len() as u64 - 1) as usize];
        if pinned.insert(id.clone()) {
            d.ctl(&["pin", id]).expect_ok();
        }
    }
    d.stop();
    set_jobs(d, &keep_two);
    d.start_again();

    let args: &[&str] = match by {
        PruneBy::Prune => &["prune", "app"],
        PruneBy::Backup => &["backup", "app"],
    };
    let (took, phase) = match kill {
        Some(moment) => {
            let killed = kill_during(d, args, moment);
            (killed.delay, killed.phase)
        }
        None => {
            let started = Instant::now();
            d.ctl(args).expect_ok();
            (started.elapsed(), "clean".to_owned())
        }
    };
    let context = format!("{context} ({by:?}, killed after {took:?} during {phase})");
    let after = ids(&check_invariants(d, app, verified, &context));
    for id in pinned.iter().chain([&newest]) {
        assert!(after.contains(id), "{context}: {id} (pinned or newest) is gone");
    }
    let new: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
    assert!(new.len() <= 1, "{context}: unexpected new backups {new:?}");

    // A clean prune now reaches what the policy says: the pins plus the two newest.
    let mut expected: HashSet<String> = after.iter().take(2).cloned().collect();
    expected.extend(pinned.iter().cloned());
    let removed = if before.iter().all(|id| after.contains(id)) {
        "none removed"
    } else if after.len() == expected.len() {
        "all removed"
    } else {
        "some removed"
    };
    d.ctl(&["prune", "app"]).expect_ok();
    let pruned: HashSet<String> = ids(&d.list(None)).into_iter().collect();
    assert_eq!(pruned, expected, "{context}: a clean prune after the crash");
    for id in &pinned {
        d.ctl(&["unpin", id]).expect_ok();
    }
    d.ctl(&["prune", "app"]).expect_ok();
    assert_eq!(d.list(None).len(), 2, "{context}: keep-last = 2 after unpinning");
    check_invariants(d, app, verified, &context);
    Round { took, phase, removed }
}

#[test]
fn crash_during_prune() {
    let clock = Instant::now();
    let seed = crate::seed("crash/prune");
    let mut rng = Rng::new(seed);
    let app = App::new(false);
    let mut d = Daemon::start("", &job_toml("app", &app.db, &[], ""));
    let mut verified = HashSet::new();

    let mut took = BTreeMap::new();
    for by in [PruneBy::Prune, PruneBy::Backup] {
        let round = prune_round(&mut d, &app, &mut rng, &mut verified, by, None, "clean round");
        took.insert(by, round.took);
    }
    eprintln!("crash/prune: clean runs took {took:?}");

    // Half the runs are `prune`, killed anywhere; half are backups, killed within
    // 60 ms after their verification began, when the retention run follows.
    let n = crate::iterations(8, 100);
    let mut points = kill_points(&mut rng, n - n / 2).into_iter();
    let mut outcomes = Vec::new();
    for i in 0..n {
        let (by, moment) = if i % 2 == 0 {
            let fraction = points.next().unwrap();
            (
                PruneBy::Prune,
                Moment::After(took[&PruneBy::Prune].mul_f64(fraction)),
            )
        } else {
            let delay = Duration::from_millis(rng.below(60));
            (PruneBy::Backup, Moment::AfterPhase("verify", delay))
        };
        let context = format!("crash/prune seed {seed} iteration {i}");
        let round = prune_round(&mut d, &app, &mut rng, &mut verified, by, Some(moment), &context);
        // `prune` reports no progress: "-" means it was running.
        let phase = if round.phase == "-" && by == PruneBy::Prune {
            "running"
        } else {
            &round.phase
        };
        eprintln!(
            "crash/prune: iteration {i}: {by:?} killed after {:?} during {phase}: {}",
            round.took, round.removed
        );
        outcomes.push(format!("{by:?} during {phase} ({})", round.removed));
    }
    verified.clear();
    check_invariants(&d, &app, &mut verified, "crash/prune at the end (all verified)");
    eprintln!(
        "crash/prune: {n} iterations, seed {seed}, killed during: {}; pins and newest kept, \
         all invariants held ({:.1} s)",
        tally(outcomes),
        clock.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// In-place restore
// ---------------------------------------------------------------------------

/// Which saved state the live data equals.
fn state_of(app: &App, saved: &Path) -> (Option<&'static str>, Option<&'static str>) {
    let db = ["A", "B"]
        .into_iter()
        .find(|s| db_difference(&app.db, &saved.join(format!("{s}.db"))).is_none());
    let media = ["A", "B"]
        .into_iter()
        .find(|s| tree_difference(&app.media, &saved.join(format!("{s}-media"))).is_none());
    (db, media)
}

/// Makes the live data state B again (the daemon is idle).
fn reset_to_b(app: &App, saved: &Path) {
    fs::remove_file(&app.db).unwrap();
    fs::remove_dir_all(&app.media).unwrap();
    copy(&saved.join("B.db"), &app.db);
    copy(&saved.join("B-media"), &app.media);
}

/// Turns state A into B: rows updated, deleted and inserted; files changed, removed,
/// added; a mode changed.
fn change_to_b(app: &App, rng: &mut Rng) {
    let conn = Connection::open(&app.db).unwrap();
    conn.execute_batch(
        "UPDATE users SET name = name || ' (B)', score = 7.5 WHERE id % 3 = 0;
         DELETE FROM tags WHERE rowid % 4 = 0;
         INSERT INTO posts(user_id, title, body) VALUES (1, 'state B', 'only in B');",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO blobs(name, data) VALUES ('b', ?1)",
        [rng.bytes(50_000)],
    )
    .unwrap();
    drop(conn);
    let m = &app.media;
    fs::write(m.join("a/b/c/deep.txt"), "state B\n").unwrap();
    fs::remove_file(m.join("secret.key")).unwrap();
    fs::remove_file(m.join("big/0.bin")).unwrap();
    fs::create_dir_all(m.join("new/dir")).unwrap();
    fs::write(m.join("new/dir/b.bin"), rng.bytes(300 * 1024)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.join("bin/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn crash_during_restore() {
    let clock = Instant::now();
    let seed = crate::seed("crash/restore");
    let mut rng = Rng::new(seed);
    let app = App::new(false);
    add_big_files(&app.media, 6, 1024, &mut rng);
    let saved_dir = coffer_tests::short_tempdir("coffer-saved-");
    let saved = saved_dir.path();
    let mut d = Daemon::start("", &app_job(&app, ""));
    let mut verified = HashSet::new();

    let id_a = text(&d.backup("app"), "id").to_owned();
    copy(&app.db, &saved.join("A.db"));
    copy(&app.media, &saved.join("A-media"));
    change_to_b(&app, &mut rng);
    copy(&app.db, &saved.join("B.db"));
    copy(&app.media, &saved.join("B-media"));
    assert_eq!(
        state_of(&app, saved),
        (Some("B"), Some("B")),
        "A and B must differ"
    );

    // One clean restore: how long it takes, and that it reaches A.
    let started = Instant::now();
    d.ctl(&["restore", &id_a, "--yes"]).expect_ok();
    let took = started.elapsed();
    eprintln!("crash/restore: a clean restore took {took:?}");
    assert_eq!(state_of(&app, saved), (Some("A"), Some("A")), "a clean restore");
    check_invariants(&d, &app, &mut verified, "after the clean restore");

    let n = crate::iterations(12, 200);
    let mut outcomes = Vec::new();
    let mut ended = BTreeMap::new();
    // Every third run is killed within 40 ms of the swap's start, the narrow window
    // the restore journal is for; the others anywhere.
    let mut points = kill_points(&mut rng, n - n / 3).into_iter();
    for i in 0..n {
        let moment = if i % 3 == 2 {
            Moment::AfterPhase("swap", Duration::from_millis(rng.below(40)))
        } else {
            Moment::After(took.mul_f64(points.next().unwrap()))
        };
        reset_to_b(&app, saved);
        let killed = kill_during(&mut d, &["restore", &id_a, "--yes"], moment);
        let context = format!(
            "crash/restore seed {seed} iteration {i} (killed after {:?} during {})",
            killed.delay, killed.phase
        );
        let list = check_invariants(&d, &app, &mut verified, &context);
        let state = match state_of(&app, saved) {
            (Some(db), Some(media)) if db == media => db,
            other => panic!("{context}: the live data is a mix (database, media): {other:?}"),
        };
        if killed.phase == "finished" {
            assert_eq!(state, "A", "{context}: a finished restore was undone");
        }
        for b in &list {
            if b["note"] == "pre-restore" {
                assert_eq!(
                    b["protected"], true,
                    "{context}: safety backup {} is not pinned",
                    b["id"]
                );
            }
        }
        eprintln!(
            "crash/restore: iteration {i}: {moment:?}: killed after {:?} during {}: state {state}",
            killed.delay, killed.phase
        );
        *ended.entry(state).or_insert(0) += 1;
        outcomes.push(killed.phase);
    }
    verified.clear();
    check_invariants(&d, &app, &mut verified, "crash/restore at the end (all verified)");
    eprintln!(
        "crash/restore: {n} iterations, seed {seed}, killed during: {}; ended in {ended:?}; \
         never a mix, all invariants held ({:.1} s)",
        tally(outcomes),
        clock.elapsed().as_secs_f64()
    );
}
