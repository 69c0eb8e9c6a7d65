//! Failures: every failed backup exits with the documented code and one clear sentence,
//! leaves no archive, sidecar, `.partial` or staging file behind, is recorded as a
//! failed run, and leaves the daemon answering. Failed start-ups (bad config, stale
//! or foreign socket file, second instance) say why and touch nothing.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coffer_tests::{
    App, Daemon, Output, cofferctl_command, cofferd_command, files_under, job_toml, make_app_db, names_in,
    run, short_tempdir, wait_timeout,
};
use rusqlite::Connection;

/// Asserts that `out` failed with `code` and one sentence containing `phrase`, that
/// the run left nothing behind but `allowed` in the backup dir and nothing in staging,
/// that no backup was catalogued, and that the daemon still answers.
#[track_caller]
fn assert_failed_cleanly(d: &Daemon, out: Output, code: i32, phrase: &str, allowed: &[PathBuf]) {
    let out = out.expect_failure(code, phrase);
    assert_one_sentence(&out.stderr, "cofferctl: ");
    let leftovers: Vec<PathBuf> = files_under(&d.paths.backup_dir)
        .into_iter()
        .filter(|p| !allowed.contains(p))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the failed run left files behind: {leftovers:?}"
    );
    assert_eq!(
        names_in(&d.paths.staging),
        Vec::<String>::new(),
        "staging is not empty"
    );
    assert!(d.list(None).is_empty(), "a failed run catalogued a backup");
    d.ctl(&["status"]).expect_ok();
}

/// The error is one line, with the program's prefix, last on stderr, and there is no
/// Rust debug output. (Without a TTY, cofferctl prints progress lines before it.)
#[track_caller]
fn assert_one_sentence(stderr: &str, prefix: &str) {
    let text = stderr.trim();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(
        errors.len(),
        1,
        "expected one error line on stderr, got:\n{stderr}"
    );
    assert_eq!(
        text.lines().last(),
        Some(errors[0]),
        "the error should come last:\n{stderr}"
    );
    for debug in ["Error {", "Os {", "Status {", "code:", "kind:", "panicked"] {
        assert!(
            !text.contains(debug),
            "stderr shows debug output ({debug}): {text}"
        );
    }
}

#[test]
fn unknown_job_is_refused() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    let out = d.ctl(&["backup", "nope"]);
    assert_failed_cleanly(&d, out, 1, "there is no job named 'nope'", &[]);
    d.ctl(&["list", "nope"])
        .expect_failure(1, "there is no job named 'nope'");
}

#[test]
fn missing_database_fails_the_run_not_the_daemon() {
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("missing.db");
    // The daemon starts although the job's database does not exist.
    let d = Daemon::start("", &job_toml("app", &db, &[], ""));
    let out = d.ctl(&["backup", "app"]);
    assert_failed_cleanly(&d, out, 1, "does not exist", &[]);
    assert!(!db.exists(), "a failed snapshot must not create the database");
}

#[test]
fn failed_runs_are_recorded_in_status() {
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("app.db");
    let d = Daemon::start("", &job_toml("app", &db, &[], ""));
    let job = d.job_status("app");
    assert!(job["last-run"].is_null(), "no run yet: {job}");
    assert!(
        job["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("does not exist"),
        "status should name the job's problem: {job}"
    );

    d.ctl(&["backup", "app"]).expect_failure(1, "does not exist");
    let job = d.job_status("app");
    assert_eq!(job["running"], false);
    assert_eq!(job["backup-count"], 0);
    let run = &job["last-run"];
    assert_eq!(run["status"], "failed", "{job}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not exist") && error.contains(&db.display().to_string()),
        "the run's error should say what failed: {job}"
    );

    // Once the database appears, the next run succeeds and is recorded as such.
    make_app_db(&db, true);
    let backup = d.backup("app");
    let job = d.job_status("app");
    assert_eq!(job["last-run"]["status"], "succeeded", "{job}");
    assert_eq!(job["last-run"]["backup-id"], backup["id"], "{job}");
    assert_eq!(job["backup-count"], 1);
}

#[test]
fn non_sqlite_file_is_refused() {
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("notes.db");
    let text = "these are my notes, not a database; ".repeat(100);
    fs::write(&db, &text).unwrap();
    let d = Daemon::start("", &job_toml("app", &db, &[], ""));
    let out = d.ctl(&["backup", "app"]);
    assert_failed_cleanly(&d, out, 1, "is not an SQLite database", &[]);
    assert_eq!(
        fs::read_to_string(&db).unwrap(),
        text,
        "the source must be untouched"
    );
}

#[test]
fn locked_database_fails_after_busy_timeout() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", "busy-timeout = \"300ms\""));
    let holder = Connection::open(&app.db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let started = Instant::now();
    let out = d.ctl(&["backup", "app"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "gave up after {took:?}, before the busy timeout"
    );
    assert_failed_cleanly(&d, out, 1, "busy timeout", &[]);

    // The lock released, the same job backs up.
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    d.backup("app");
}

#[test]
fn unwritable_backup_dir_fails_cleanly() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    // A file where the job's directory should be: portable, root ignores modes.
    let blocker = d.paths.backup_dir.join("app");
    fs::write(&blocker, b"in the way").unwrap();
    let out = d.ctl(&["backup", "app"]);
    assert_failed_cleanly(
        &d,
        out,
        1,
        "cannot create the backup directory",
        std::slice::from_ref(&blocker),
    );
    assert_eq!(fs::read(&blocker).unwrap(), b"in the way");
}

#[test]
fn second_backup_of_a_running_job_is_refused() {
    let app = App::new(false);
    let d = Daemon::start("", &app.job("app", "busy-timeout = \"10s\""));
    // Hold the database so that backup #1 waits in its busy handler.
    let holder = Connection::open(&app.db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let mut first = d.ctl_spawn(&["--json", "backup", "app"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = first.try_wait().unwrap() {
            let out = first.wait_with_output().unwrap();
            panic!(
                "backup #1 finished ({status}) before it could be seen running: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if d.job_status("app")["running"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "status never showed the job running");
        std::thread::sleep(Duration::from_millis(20));
    }

    let second = d.ctl(&["backup", "app"]).expect_failure(1, "already running");
    assert_one_sentence(&second.stderr, "cofferctl: ");

    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let status = wait_timeout(&mut first, Duration::from_secs(120)).expect("backup #1 did not finish");
    let out = first.wait_with_output().unwrap();
    assert!(
        status.success(),
        "backup #1 failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = d.list(None);
    assert_eq!(list.len(), 1, "only backup #1 exists: {list:?}");
    assert_eq!(list[0]["id"], created["id"]);
    assert_eq!(d.job_status("app")["running"], false);
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        names_in(&d.paths.backup_dir.join("app")),
        [format!("{id}.json"), format!("{id}.tar.zst")],
        "the refused run must leave nothing behind"
    );
    assert_eq!(names_in(&d.paths.staging), Vec::<String>::new());
}

#[test]
fn unreachable_daemon_exits_3() {
    let dir = short_tempdir("coffer-e2e-");
    let socket = dir.path().join("does-not-exist.sock");
    let mut cmd = cofferctl_command();
    cmd.arg("--socket").arg(&socket).arg("list");
    let out = run(cmd, Duration::from_secs(60)).expect_failure(3, "cannot reach cofferd");
    assert_one_sentence(&out.stderr, "cofferctl: ");
    assert!(out.stderr.contains(&socket.display().to_string()), "{out}");
}

fn check_config(path: &Path) -> Output {
    let mut cmd = cofferd_command();
    cmd.arg("--config").arg(path).arg("--check-config");
    run(cmd, Duration::from_secs(60))
}

#[test]
fn check_config_reports_file_and_key() {
    let dir = short_tempdir("coffer-e2e-");
    let socket = dir.path().join("c.sock");
    let valid = format!(
        "[daemon]\nsocket = \"{}\"\nstate-dir = \"{}\"\n\n{}",
        socket.display(),
        dir.path().join("state").display(),
        job_toml("app", &dir.path().join("app.db"), &[], "")
    );

    let good = dir.path().join("good.toml");
    fs::write(&good, &valid).unwrap();
    check_config(&good).expect_ok();

    let unknown_key = dir.path().join("bad.toml");
    fs::write(&unknown_key, valid.replace("socket =", "sokcet =")).unwrap();
    let out = check_config(&unknown_key).expect_failure(2, "sokcet");
    assert!(out.stderr.contains(&unknown_key.display().to_string()), "{out}");
    assert_one_sentence(&out.stderr, "cofferd: ");

    let upper = dir.path().join("upper.toml");
    fs::write(&upper, valid.replace("name = \"app\"", "name = \"App\"")).unwrap();
    let out = check_config(&upper).expect_failure(2, "'App'");
    assert!(out.stderr.contains(&upper.display().to_string()), "{out}");
    assert!(out.stderr.contains("name"), "{out}");
    assert_one_sentence(&out.stderr, "cofferd: ");

    // Without --check-config an invalid file stops the daemon the same way, before it
    // creates anything.
    let mut cmd = cofferd_command();
    cmd.arg("--config").arg(&unknown_key);
    run(cmd, Duration::from_secs(60)).expect_failure(2, "sokcet");
    assert!(!socket.exists());
    assert!(!dir.path().join("state").exists());
}

#[test]
fn stale_socket_of_a_killed_daemon_is_replaced() {
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", ""));
    let id = d.backup("app")["id"].clone();
    d.kill();
    let meta = fs::symlink_metadata(&d.paths.socket).expect("SIGKILL leaves the socket file behind");
    assert!(meta.file_type().is_socket());
    assert!(
        UnixStream::connect(&d.paths.socket).is_err(),
        "nothing listens any more"
    );

    d.start_again();
    d.ctl(&["status"]).expect_ok();
    let list = d.list(None);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);
}

#[test]
fn regular_file_at_socket_path_is_not_replaced() {
    let d = Daemon::configure("", "");
    fs::write(&d.paths.socket, b"precious").unwrap();
    let out = run(d.cofferd_command(), Duration::from_secs(60)).expect_failure(1, "is not a socket");
    assert!(
        out.stderr.contains(&d.paths.socket.display().to_string()),
        "{out}"
    );
    assert_eq!(fs::read(&d.paths.socket).unwrap(), b"precious");
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    let out = run(d.cofferd_command(), Duration::from_secs(60)).expect_failure(1, "already running");
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert!(
        fs::symlink_metadata(&d.paths.socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    d.ctl(&["status"]).expect_ok();
    d.backup("app");
}
