//! Running under systemd and being stopped and reloaded: the `sd_notify` messages
//! (READY only once the socket accepts connections, STATUS lines, WATCHDOG pings more
//! often than the watchdog period, STOPPING on SIGTERM), SIGTERM in the middle of a
//! backup (a clean, prompt exit that leaves no half backup and records the run as
//! cancelled), and SIGHUP reloads (a valid config takes effect, an invalid one or one
//! that changes the socket is refused, audited, and the old config stays in force).

use std::fs;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coffer_tests::{
    App, Daemon, Rng, STOP_TIMEOUT, clean_command, cofferd_bin, files_under, job_toml, make_media, names_in,
    partial_files, short_tempdir, toml_str, wait_timeout, wait_until,
};
use rusqlite::Connection;
use serde_json::Value;

/// Sends `signal` (e.g. "HUP") to `pid` with kill(1): the tests forbid unsafe code.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A `cofferd` started by this module (with an environment the harness does not
/// set); stopped with SIGTERM, then SIGKILL, on drop.
struct Cofferd {
    child: Option<Child>,
}

impl Cofferd {
    /// Starts cofferd on `d`'s config with `env` added. `WATCHDOG_PID` is set to
    /// cofferd's own pid, as systemd does: a shell exports its `$$` and execs cofferd.
    fn spawn(d: &Daemon, env: &[(&str, &str)]) -> Cofferd {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&d.paths.log)
            .unwrap();
        let mut cmd = clean_command(Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(r#"export WATCHDOG_PID=$$; exec "$0" --config "$1""#)
            .arg(cofferd_bin())
            .arg(&d.paths.config)
            .envs(env.iter().copied());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start cofferd");
        Cofferd { child: Some(child) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits for the exit; panics if cofferd does not stop in time.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        send_signal(child.id(), "TERM");
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cofferd did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
        }
    }
}

impl Drop for Cofferd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One datagram received on the notify socket.
#[derive(Debug)]
struct Note {
    at: Instant,
    text: String,
    /// For a READY=1 message: whether cofferd's socket accepted a connection at the
    /// moment the message was read.
    socket_ready: Option<bool>,
}

impl Note {
    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    fn status(&self) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix("STATUS="))
    }
}

/// Binds a notify socket at `path` and forwards what arrives on a channel.
fn notify_listener(path: &Path, daemon_socket: PathBuf) -> mpsc::Receiver<Note> {
    let sock = UnixDatagram::bind(path).expect("cannot bind the notify socket");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let at = Instant::now();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let socket_ready = text
                .lines()
                .any(|l| l == "READY=1")
                .then(|| UnixStream::connect(&daemon_socket).is_ok());
            if tx
                .send(Note {
                    at,
                    text,
                    socket_ready,
                })
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Receives notes until one satisfies `pred` (returned) or `timeout` passes (panic);
/// every note seen is appended to `seen`.
#[track_caller]
fn wait_note(
    rx: &mpsc::Receiver<Note>,
    seen: &mut Vec<Note>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Note) -> bool,
) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(note) => {
                let hit = pred(&note);
                seen.push(note);
                if hit {
                    return seen.len() - 1;
                }
            }
            Err(_) => panic!(
                "no {what} within {timeout:?}; received: {:?}",
                seen.iter().map(|n| &n.text).collect::<Vec<_>>()
            ),
        }
    }
}

#[test]
fn systemd_notifications_ready_status_watchdog_stopping() {
    let app = App::new(true);
    let d = Daemon::configure("", &app.job("app", ""));
    let notify_path = d.paths.root.join("notify.sock");
    let rx = notify_listener(&notify_path, d.paths.socket.clone());

    let spawned = Instant::now();
    let mut daemon = Cofferd::spawn(
        &d,
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            // 2 s: cofferd must ping at least every second.
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut seen = Vec::new();
    let ready = wait_note(&rx, &mut seen, Duration::from_secs(15), "READY=1", |n| {
        n.has("READY=1")
    });
    assert_eq!(
        seen[ready].socket_ready,
        Some(true),
        "READY=1 was sent before {} accepted connections",
        d.paths.socket.display()
    );
    assert!(seen[..ready].iter().all(|n| !n.has("STOPPING=1")), "{seen:?}");
    let ready_at = seen[ready].at;
    eprintln!("READY after {:?}", ready_at - spawned);

    // Watchdog pings: collect for 4 s after READY.
    while Instant::now() < ready_at + Duration::from_secs(4) {
        if let Ok(note) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push(note);
        }
    }
    let pings: Vec<Instant> = seen
        .iter()
        .filter(|n| n.has("WATCHDOG=1"))
        .map(|n| n.at)
        .collect();
    assert!(
        pings.len() >= 2,
        "expected at least two WATCHDOG=1 within 4 s of READY, got {}: {:?}",
        pings.len(),
        seen.iter().map(|n| &n.text).collect::<Vec<_>>()
    );
    // Pings must come well within the 2 s watchdog period (cofferd aims at 1 s).
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap < Duration::from_millis(1900),
            "{gap:?} between two WATCHDOG=1 pings: systemd would kill the daemon"
        );
    }
    let last_ping = *pings.last().unwrap();
    assert!(
        Instant::now() - last_ping < Duration::from_millis(1900),
        "the pings stopped"
    );

    // STATUS lines: an idle one at start-up, progress lines during a backup.
    let statuses: Vec<String> = seen
        .iter()
        .filter_map(|n| n.status().map(str::to_owned))
        .collect();
    assert!(
        statuses.iter().any(|s| s.starts_with("idle")),
        "no idle STATUS line: {statuses:?}"
    );
    d.ctl(&["backup", "app"]).expect_ok();
    wait_note(
        &rx,
        &mut seen,
        Duration::from_secs(10),
        "STATUS=backing up app...",
        |n| n.status().is_some_and(|s| s.starts_with("backing up app")),
    );
    // Back to idle once the backup is done.
    wait_note(
        &rx,
        &mut seen,
        Duration::from_secs(10),
        "STATUS=idle after the backup",
        |n| n.status().is_some_and(|s| s.starts_with("idle")),
    );

    // A reload is bracketed by RELOADING=1 ... READY=1.
    send_signal(daemon.pid(), "HUP");
    let reloading = wait_note(&rx, &mut seen, Duration::from_secs(10), "RELOADING=1", |n| {
        n.has("RELOADING=1")
    });
    let ready_again = wait_note(
        &rx,
        &mut seen,
        Duration::from_secs(10),
        "READY=1 after the reload",
        |n| n.has("READY=1"),
    );
    assert!(ready_again > reloading);

    let status = daemon.stop();
    assert!(status.success(), "cofferd exited {status}; log:\n{}", d.log());
    // Everything it sent before exiting is in the socket's queue now.
    let mut tail = Vec::new();
    while let Ok(note) = rx.recv_timeout(Duration::from_millis(500)) {
        tail.push(note);
    }
    assert!(
        tail.iter().any(|n| n.has("STOPPING=1")),
        "no STOPPING=1 after SIGTERM; received after the stop: {:?}",
        tail.iter().map(|n| &n.text).collect::<Vec<_>>()
    );
    assert!(!d.paths.socket.exists(), "the socket file was not removed");
}

/// A database of about `mib` MiB of random (incompressible) blobs.
fn make_big_db(path: &Path, mib: usize) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB);")
        .unwrap();
    let mut rng = Rng::new(0x5EED_0BAD);
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut insert = tx.prepare("INSERT INTO big(data) VALUES (?1)").unwrap();
        for _ in 0..mib * 4 {
            insert.execute([rng.bytes(256 * 1024)]).unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
}

/// Whether process `pid` (a child of this test) has exited: gone, or a zombie.
fn exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// The shutdown-grace of the harness's config.
const GRACE: Duration = Duration::from_secs(5);

/// Starts `cofferctl backup app`, waits until `in_phase` says the run has reached the
/// phase to interrupt, sends SIGTERM and checks the whole clean-shutdown contract:
/// cofferd exits 0 within shutdown-grace, leaves no `.partial`, archive, sidecar or
/// staging file, removes its socket; the client fails; after a restart the run is
/// recorded as cancelled and nothing is catalogued.
fn interrupt_backup(d: &mut Daemon, in_phase: impl Fn(&Daemon) -> bool) {
    let mut client = d.ctl_spawn(&["backup", "app"]);
    wait_until(
        "the backup reaches the phase to interrupt",
        Duration::from_secs(60),
        || {
            if let Some(status) = client.try_wait().unwrap() {
                panic!("the backup finished ({status}) before it could be interrupted");
            }
            in_phase(d)
        },
    );
    assert_eq!(d.job_status("app")["running"], true);

    let pid = d.pid();
    let signalled = Instant::now();
    send_signal(pid, "TERM");
    // Wait longer than the contract allows, to report how long it really took.
    let patience = Duration::from_secs(90);
    while !exited(pid) && signalled.elapsed() < patience {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = signalled.elapsed();
    let status = d.stop();
    assert!(status.success(), "cofferd exited {status}; log:\n{}", d.log());
    assert!(
        took < GRACE + Duration::from_secs(2),
        "cofferd took {took:?} to stop after SIGTERM (shutdown-grace {GRACE:?}); log:\n{}",
        d.log()
    );
    assert_eq!(
        partial_files(&d.paths.backup_dir),
        Vec::<PathBuf>::new(),
        "a .partial was left behind"
    );
    assert_eq!(
        files_under(&d.paths.backup_dir),
        Vec::<PathBuf>::new(),
        "half a backup was left behind"
    );
    assert_eq!(
        names_in(&d.paths.staging),
        Vec::<String>::new(),
        "staging is not empty"
    );
    assert!(!d.paths.socket.exists(), "the socket file was not removed");

    let status = wait_timeout(&mut client, Duration::from_secs(30)).expect("the backup client hangs");
    let out = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        status.code(),
        Some(1),
        "the interrupted backup should fail: {stderr}"
    );
    assert!(
        stderr.contains("cancelled because cofferd is shutting down"),
        "the client should say why: {stderr}"
    );

    d.start_again();
    let job = d.job_status("app");
    let run = &job["last-run"];
    assert_eq!(run["status"], "cancelled", "{job}");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("shutting down"),
        "{job}"
    );
    assert_eq!(job["backup-count"], 0);
    assert!(d.list(None).is_empty());
    let audit = d.ctl_json(&["audit"]);
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "backup")
        .unwrap_or_else(|| panic!("the interrupted backup is not audited: {audit}"));
    assert_eq!(entry["result"], "failed", "{entry}");
}

#[test]
fn sigterm_during_a_backup_cancels_it_cleanly() {
    // Many media files at the slowest level: cancellation is checked between files.
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("app.db");
    coffer_tests::make_app_db(&db, true);
    let media = data.path().join("media");
    let mut rng = Rng::new(0x5EED_0CA7);
    for dir in 0..20 {
        let sub = media.join(format!("d{dir:02}"));
        fs::create_dir_all(&sub).unwrap();
        for file in 0..50 {
            fs::write(sub.join(format!("f{file:02}.bin")), rng.bytes(32 * 1024)).unwrap();
        }
    }
    let mut d = Daemon::start("", &job_toml("app", &db, &[&media], "compression-level = 19"));
    let job_dir = d.paths.backup_dir.join("app");
    interrupt_backup(&mut d, |_| !partial_files(&job_dir).is_empty());
}

#[test]
fn sigterm_while_archiving_a_big_database_stops_within_shutdown_grace() {
    let data = short_tempdir("coffer-app-");
    let db = data.path().join("big.db");
    let media = data.path().join("media");
    make_big_db(&db, 100);
    make_media(&media);
    // Level 19 over 100 MiB of random bytes takes far longer than shutdown-grace.
    let mut d = Daemon::start("", &job_toml("app", &db, &[&media], "compression-level = 19"));
    let job_dir = d.paths.backup_dir.join("app");
    interrupt_backup(&mut d, |_| !partial_files(&job_dir).is_empty());
}

#[test]
fn sigterm_while_waiting_for_a_locked_database_stops_within_shutdown_grace() {
    let app = App::new(false);
    let mut d = Daemon::start("", &app.job("app", "busy-timeout = \"20s\""));
    let holder = Connection::open(&app.db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    interrupt_backup(&mut d, |d| d.job_status("app")["running"] == true);
    drop(holder);
}

/// The `name`s of `jobs --json`.
fn job_names(d: &Daemon) -> Vec<String> {
    match d.ctl_json(&["jobs"]) {
        Value::Array(jobs) => jobs
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_owned())
            .collect(),
        other => panic!("jobs is not a JSON array: {other}"),
    }
}

/// The audit entries with action "reload", oldest first.
fn reloads(d: &Daemon) -> Vec<Value> {
    let Value::Array(entries) = d.ctl_json(&["audit", "--limit", "1000"]) else {
        panic!("audit is not a JSON array");
    };
    let mut out: Vec<Value> = entries.into_iter().filter(|e| e["action"] == "reload").collect();
    out.reverse();
    out
}

#[test]
fn sighup_reloads_a_valid_config_and_refuses_a_bad_one() {
    let app = App::new(true);
    let other = App::new(false);
    let d = Daemon::start("", &app.job("app", ""));
    let pid = d.pid();
    let original = fs::read_to_string(&d.paths.config).unwrap();
    assert_eq!(job_names(&d), ["app"]);

    // 1. A new job is picked up without a restart.
    let with_two = format!("{original}\n{}", other.job("other", ""));
    fs::write(&d.paths.config, &with_two).unwrap();
    send_signal(pid, "HUP");
    wait_until("the reload is audited", Duration::from_secs(15), || {
        !reloads(&d).is_empty()
    });
    let first = &reloads(&d)[0];
    assert_eq!(first["result"], "ok", "{first}");
    assert_eq!(first["actor"], "SIGHUP", "{first}");
    assert_eq!(job_names(&d), ["app", "other"]);
    let backup = d.backup("other");
    assert_eq!(backup["job"], "other");

    // 2. An unknown key: refused, audited with the error, the old jobs stay.
    let broken = with_two.replacen("[daemon]\n", "[daemon]\nbogus-key = 1\n", 1);
    fs::write(&d.paths.config, &broken).unwrap();
    send_signal(pid, "HUP");
    wait_until("the failed reload is audited", Duration::from_secs(15), || {
        reloads(&d).len() >= 2
    });
    let failed = &reloads(&d)[1];
    assert_eq!(failed["result"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("bogus-key"),
        "the error should name the key: {failed}"
    );
    assert!(
        error.contains(&d.paths.config.display().to_string()),
        "the error should name the file: {failed}"
    );
    assert_eq!(job_names(&d), ["app", "other"]);
    d.backup("app");
    assert_eq!(d.pid(), pid, "the daemon is the same process");

    // 3. A new socket path needs a restart: refused, the old socket keeps serving.
    let moved = d.paths.root.join("moved.sock");
    let new_socket = with_two.replace(
        &toml_str(&d.paths.socket.display().to_string()),
        &toml_str(&moved.display().to_string()),
    );
    assert_ne!(new_socket, with_two);
    // ...together with a job change that must not take effect either.
    let new_socket = new_socket.replace(&other.job("other", ""), "");
    fs::write(&d.paths.config, &new_socket).unwrap();
    send_signal(pid, "HUP");
    wait_until("the refused reload is audited", Duration::from_secs(15), || {
        reloads(&d).len() >= 3
    });
    let refused = &reloads(&d)[2];
    assert_eq!(refused["result"], "failed", "{refused}");
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("socket") && error.contains("needs a restart"),
        "{refused}"
    );
    assert!(!moved.exists(), "cofferd must not listen on the new path");
    assert_eq!(job_names(&d), ["app", "other"]);
    d.ctl(&["status"]).expect_ok();
}

#[test]
fn cofferd_spawn_helper_sets_the_watchdog_pid_to_cofferd() {
    // The helper above relies on `exec` keeping the shell's pid: check it, so the
    // notification test cannot pass or fail for the wrong reason.
    let d = Daemon::configure("", "");
    let mut daemon = Cofferd::spawn(&d, &[]);
    wait_until("cofferd listens", Duration::from_secs(15), || {
        UnixStream::connect(&d.paths.socket).is_ok()
    });
    let comm = fs::read_to_string(format!("/proc/{}/comm", daemon.pid())).unwrap();
    assert_eq!(comm.trim(), "cofferd");
    let environ = fs::read(format!("/proc/{}/environ", daemon.pid())).unwrap();
    let wanted = format!("WATCHDOG_PID={}", daemon.pid());
    assert!(
        environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes()),
        "cofferd's environment lacks {wanted}"
    );
    assert!(daemon.stop().success());
}
