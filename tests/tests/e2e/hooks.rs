//! `[job.hooks]`: commands run around backups with `COFFER_JOB`, `COFFER_EVENT`,
//! `COFFER_BACKUP_ID` and `COFFER_ERROR` in their environment. The hooks here write
//! their `COFFER_*` variables to files, so the tests see exactly what a hook saw. A
//! failing or hanging `before-backup` hook aborts the backup (named in the error, no
//! archive, a failed run); `after-backup` and `on-failure` hooks only log.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coffer_tests::{App, Daemon, files_under, names_in, toml_str};

/// A TOML array of strings.
fn argv(args: &[&str]) -> String {
    let items: Vec<String> = args.iter().map(|a| toml_str(a)).collect();
    format!("[{}]", items.join(", "))
}

/// A hook that writes its sorted `COFFER_*` environment to `file`.
fn env_dump(file: &Path) -> String {
    argv(&[
        "/bin/sh",
        "-c",
        &format!("env | grep '^COFFER_' | sort > '{}'", file.display()),
    ])
}

/// The `COFFER_*` variables a hook wrote to `file`.
fn dumped(file: &Path) -> BTreeMap<String, String> {
    let text =
        fs::read_to_string(file).unwrap_or_else(|e| panic!("the hook did not write {}: {e}", file.display()));
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Where the three env-dumping hooks write.
struct Dumps {
    before: PathBuf,
    after: PathBuf,
    failure: PathBuf,
}

impl Dumps {
    fn new(app: &App) -> Dumps {
        Dumps {
            before: app.dir.path().join("before.env"),
            after: app.dir.path().join("after.env"),
            failure: app.dir.path().join("failure.env"),
        }
    }

    fn hooks(&self) -> String {
        format!(
            "[job.hooks]\nbefore-backup = {}\nafter-backup = {}\non-failure = {}\n",
            env_dump(&self.before),
            env_dump(&self.after),
            env_dump(&self.failure)
        )
    }

    fn clear(&self) {
        for f in [&self.before, &self.after, &self.failure] {
            let _ = fs::remove_file(f);
        }
    }
}

/// Asserts a failed backup left no archive, sidecar, `.partial` or staging file and no
/// catalogued backup, and that its run is recorded as failed with `phrase`.
#[track_caller]
fn assert_nothing_left(d: &Daemon, phrase: &str) {
    assert_eq!(files_under(&d.paths.backup_dir), Vec::<PathBuf>::new());
    assert_eq!(names_in(&d.paths.staging), Vec::<String>::new());
    assert!(d.list(None).is_empty());
    let job = d.job_status("app");
    assert_eq!(job["last-run"]["status"], "failed", "{job}");
    assert!(
        job["last-run"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains(phrase),
        "the run's error should say {phrase:?}: {job}"
    );
}

#[test]
fn hooks_see_job_event_and_backup_id() {
    let app = App::new(true);
    let dumps = Dumps::new(&app);
    let d = Daemon::start("", &app.job("app", &dumps.hooks()));
    let id = d.backup("app")["id"].as_str().unwrap().to_owned();

    let before = dumped(&dumps.before);
    assert_eq!(before["COFFER_JOB"], "app");
    assert_eq!(before["COFFER_EVENT"], "before-backup");
    assert_eq!(before["COFFER_BACKUP_ID"], "", "no id exists before the backup");
    assert_eq!(before["COFFER_ERROR"], "");
    let after = dumped(&dumps.after);
    assert_eq!(after["COFFER_JOB"], "app");
    assert_eq!(after["COFFER_EVENT"], "after-backup");
    assert_eq!(after["COFFER_BACKUP_ID"], id);
    assert_eq!(after["COFFER_ERROR"], "");
    assert!(
        !dumps.failure.exists(),
        "on-failure ran after a successful backup"
    );

    // The before hook ran before the archive was written.
    let archive = d.paths.archive("app", &id);
    let hook_time = fs::metadata(&dumps.before).unwrap().modified().unwrap();
    let archive_time = fs::metadata(&archive).unwrap().modified().unwrap();
    assert!(hook_time <= archive_time);
}

#[test]
fn on_failure_hook_gets_the_error() {
    let app = App::new(true);
    let dumps = Dumps::new(&app);
    let d = Daemon::start("", &app.job("app", &dumps.hooks()));
    let away = app.dir.path().join("away.db");
    fs::rename(&app.db, &away).unwrap();

    d.ctl(&["backup", "app"]).expect_failure(1, "does not exist");
    let failure = dumped(&dumps.failure);
    assert_eq!(failure["COFFER_JOB"], "app");
    assert_eq!(failure["COFFER_EVENT"], "on-failure");
    assert_eq!(failure["COFFER_BACKUP_ID"], "");
    let error = &failure["COFFER_ERROR"];
    assert!(
        error.contains("does not exist") && error.contains(&app.db.display().to_string()),
        "COFFER_ERROR should be the run's error: {error:?}"
    );
    assert!(
        dumps.before.exists(),
        "before-backup runs before the snapshot fails"
    );
    assert!(!dumps.after.exists(), "after-backup ran after a failed backup");
    assert_nothing_left(&d, "does not exist");

    // Once the database is back, the next run succeeds and on-failure stays quiet.
    fs::rename(&away, &app.db).unwrap();
    dumps.clear();
    d.backup("app");
    assert!(!dumps.failure.exists());
    assert!(dumps.after.exists());
}

#[test]
fn failing_before_backup_hook_aborts_the_backup() {
    let app = App::new(true);
    let dumps = Dumps::new(&app);
    let hooks = format!(
        "[job.hooks]\nbefore-backup = [\"/bin/false\"]\nafter-backup = {}\non-failure = {}\n",
        env_dump(&dumps.after),
        env_dump(&dumps.failure)
    );
    let d = Daemon::start("", &app.job("app", &hooks));
    let out = d.ctl(&["backup", "app"]).expect_failure(
        1,
        "the before-backup hook of job 'app' (/bin/false) exited with status 1; the operation was not started",
    );
    assert!(
        !out.stderr.contains("snapshot"),
        "the snapshot must not start: {out}"
    );
    assert_nothing_left(&d, "before-backup hook");
    assert!(!dumps.after.exists());
    let failure = dumped(&dumps.failure);
    assert!(
        failure["COFFER_ERROR"].contains("before-backup hook"),
        "{failure:?}"
    );
}

#[test]
fn before_backup_hook_that_cannot_start_aborts_the_backup() {
    let app = App::new(true);
    let missing = app.dir.path().join("no-such-hook");
    let hooks = format!(
        "[job.hooks]\nbefore-backup = {}\n",
        argv(&[missing.to_str().unwrap()])
    );
    let d = Daemon::start("", &app.job("app", &hooks));
    d.ctl(&["backup", "app"]).expect_failure(
        1,
        &format!(
            "the before-backup hook of job 'app' ({}) could not start",
            missing.display()
        ),
    );
    assert_nothing_left(&d, "could not start");
}

#[test]
fn failing_after_backup_hook_does_not_fail_the_backup() {
    let app = App::new(true);
    let d = Daemon::start(
        "",
        &app.job("app", "[job.hooks]\nafter-backup = [\"/bin/false\"]\n"),
    );
    let id = d.backup("app")["id"].as_str().unwrap().to_owned();
    assert!(d.paths.archive("app", &id).exists());
    assert_eq!(d.job_status("app")["last-run"]["status"], "succeeded");
}

/// Pids of live processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted) {
            let zombie = fs::read_to_string(entry.path().join("stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
            if !zombie {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Runs a backup whose before-backup hook is `hook` with `timeout = "1s"`; asserts
/// the backup fails promptly, names the hook and the timeout, and leaves nothing.
fn assert_hook_times_out(hook: &[&str], program: &str) {
    let app = App::new(true);
    let hooks = format!("[job.hooks]\nbefore-backup = {}\ntimeout = \"1s\"\n", argv(hook));
    let d = Daemon::start("", &app.job("app", &hooks));
    let started = Instant::now();
    let out = d.ctl(&["backup", "app"]);
    let took = started.elapsed();
    out.expect_failure(
        1,
        &format!("the before-backup hook of job 'app' ({program}) timed out after 1s"),
    );
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    assert!(
        took < Duration::from_secs(8),
        "the hook ran for {took:?} despite timeout = \"1s\""
    );
    assert_nothing_left(&d, "timed out after 1s");
}

#[test]
fn hook_that_outlives_its_timeout_is_killed() {
    // An odd duration makes the hook's command line unique on this machine.
    let hook = ["sleep", "37.25"];
    assert_hook_times_out(&hook, "sleep");
    assert_eq!(
        processes(&hook),
        Vec::<u32>::new(),
        "the timed-out hook is still running"
    );
}

#[test]
fn shell_hook_that_outlives_its_timeout_is_killed_with_its_children() {
    let sleeper = ["sleep", "31.75"];
    assert_hook_times_out(&["/bin/sh", "-c", "sleep 31.75; echo done"], "/bin/sh");
    assert_eq!(
        processes(&sleeper),
        Vec::<u32>::new(),
        "the hook's child outlived the timeout"
    );
}
