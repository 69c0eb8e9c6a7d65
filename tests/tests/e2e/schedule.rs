//! The scheduler: a job on a two-second cron schedule keeps exactly what its retention
//! policy says (plus a pinned backup) with nothing half-written beside it; a fire while
//! the previous run is still going is skipped and recorded, never run twice at once;
//! catch-up takes one backup at start-up when a slot was missed (and none when none
//! was, or when catch-up is off); `jobs`/`status` show the next run and the last one.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coffer_tests::{App, Daemon, files_under, wait_until};
use rusqlite::Connection;
use serde_json::Value;

const EVERY_2S: &str = "schedule = \"*/2 * * * * *\"";
/// Daily at 03:00 UTC: never fires while a test runs (see [`away_from`]).
const NIGHTLY: &str = "schedule = \"0 0 3 * * *\"";
const THREE_AM: i64 = 3 * 3600;

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 UTC (`2026-11-23T02:00:05Z`) of Unix seconds, as cofferctl prints times.
fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Unix seconds of an RFC 3339 UTC time as cofferctl prints it.
fn parse_time(text: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 {
        text.get(r)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 UTC time: {text:?}"))
    };
    assert!(
        text.len() == 20 && text.ends_with('Z'),
        "not an RFC 3339 UTC time: {text:?}"
    );
    days_from_civil(n(0..4), n(5..7), n(8..10)) * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// The next time of day `at` (seconds after midnight UTC) strictly after `now`.
fn next_at(now: i64, at: i64) -> i64 {
    let today = now - now.rem_euclid(86_400) + at;
    if today > now { today } else { today + 86_400 }
}

/// Waits while a daily fire time (seconds after midnight UTC) is less than a minute
/// away, so a test of "no fire due" never straddles a real fire.
fn away_from(times: &[i64]) {
    loop {
        let of_day = now_unix().rem_euclid(86_400);
        let close = times.iter().any(|t| (t - of_day).rem_euclid(86_400) <= 60);
        if !close {
            return;
        }
        eprintln!("waiting for a daily fire time to pass before testing");
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// `audit --json`, oldest first.
fn audit(d: &Daemon) -> Vec<Value> {
    let Value::Array(mut entries) = d.ctl_json(&["audit", "--limit", "10000"]) else {
        panic!("audit is not a JSON array");
    };
    entries.reverse();
    entries
}

/// Targets of the audit entries with this actor, action and result.
fn audited(entries: &[Value], actor: &str, action: &str, result: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["actor"] == actor && e["action"] == action && e["result"] == result)
        .map(|e| e["target"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The archive and sidecar paths of `ids`, sorted.
fn backup_files(d: &Daemon, job: &str, ids: &[String]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ids
        .iter()
        .flat_map(|id| [d.paths.archive(job, id), d.paths.sidecar(job, id)])
        .collect();
    files.sort();
    files
}

/// Replaces `from` by `to` in the daemon's config file (which must contain it).
fn edit_config(d: &Daemon, from: &str, to: &str) {
    let text = fs::read_to_string(&d.paths.config).unwrap();
    assert!(text.contains(from), "the config has no {from:?}:\n{text}");
    fs::write(&d.paths.config, text.replace(from, to)).unwrap();
}

/// Stops the daemon and asserts a clean exit.
#[track_caller]
fn stop(d: &mut Daemon) {
    let status = d.stop();
    assert!(
        status.success(),
        "cofferd exited {status} on SIGTERM; log:\n{}",
        d.log()
    );
}

/// Moves every catalogued backup of `job` `seconds` into the past (daemon stopped).
fn age_backups(d: &Daemon, job: &str, seconds: i64) {
    let conn = Connection::open(d.paths.state_dir.join("catalog.db")).unwrap();
    let changed = conn
        .execute(
            "UPDATE backups SET created_at = created_at - ?1 WHERE job = ?2",
            rusqlite::params![seconds, job],
        )
        .unwrap();
    assert!(changed > 0, "no catalogued backup of {job} to age");
}

#[test]
fn every_two_seconds_keeps_the_three_newest_and_the_pinned_one() {
    let app = App::new(true);
    let mut d = Daemon::start(
        "",
        &app.job("app", &format!("{EVERY_2S}\n[job.retention]\nkeep-last = 3")),
    );
    let mut list = Vec::new();
    wait_until("the first scheduled backup", Duration::from_secs(30), || {
        list = d.list(Some("app"));
        !list.is_empty()
    });
    let pinned = list.last().unwrap()["id"].as_str().unwrap().to_owned();
    d.ctl(&["pin", &pinned]).expect_ok();

    // The pinned backup and at least four more: retention has had to remove some.
    let mut entries = Vec::new();
    wait_until("five scheduled backups", Duration::from_secs(45), || {
        entries = audit(&d);
        audited(&entries, "scheduler", "backup", "ok").len() >= 5
    });

    // Stop the schedule to look at a still picture: a run cut short by SIGTERM must
    // clean up after itself.
    stop(&mut d);
    let on_disk = files_under(&d.paths.backup_dir.join("app"));
    let partials: Vec<&PathBuf> = on_disk
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with(".tar.zst") && !p.to_string_lossy().ends_with(".json"))
        .collect();
    assert!(partials.is_empty(), "left behind after SIGTERM: {partials:?}");
    edit_config(&d, EVERY_2S, "schedule = \"manual\"");
    d.start_again();

    let entries = audit(&d);
    let mut made = audited(&entries, "scheduler", "backup", "ok");
    assert!(made.len() >= 5, "{entries:#?}");
    assert!(
        made.contains(&pinned),
        "the pinned backup was not a scheduled one"
    );
    let failed = audited(&entries, "scheduler", "backup", "failed");
    // Only the run that SIGTERM cut short may have failed (as cancelled).
    assert!(failed.len() <= 1, "scheduled backups failed: {entries:#?}");
    // Ids embed their UTC time: sorting them sorts by time (no two in one second).
    made.sort();
    made.dedup();
    let newest3: Vec<String> = made.iter().rev().take(3).cloned().collect();
    let mut expected = newest3.clone();
    if !newest3.contains(&pinned) {
        expected.push(pinned.clone());
    }

    let list = d.list(Some("app"));
    assert_eq!(
        ids(&list),
        expected,
        "the 3 newest and the pinned one, newest first"
    );
    for b in &list {
        assert_eq!(b["protected"], b["id"] == pinned.as_str(), "{b}");
    }
    assert_eq!(
        files_under(&d.paths.backup_dir.join("app")),
        backup_files(&d, "app", &expected),
        "the backup dir must hold exactly the listed archives and sidecars"
    );
    // Everything else was removed by retention, and audited as such.
    let removed: BTreeSet<String> = audited(&entries, "scheduler", "retention-remove", "ok")
        .into_iter()
        .chain(audited(&entries, "retention", "retention-remove", "ok"))
        .collect();
    let gone: BTreeSet<String> = made.iter().filter(|id| !expected.contains(id)).cloned().collect();
    assert!(!gone.is_empty());
    assert_eq!(removed, gone, "{entries:#?}");

    // The pin protects it from delete too, until it is unpinned.
    d.ctl(&["delete", &pinned, "--yes"])
        .expect_failure(1, "is protected");
    assert!(d.paths.archive("app", &pinned).exists());
    d.ctl(&["unpin", &pinned]).expect_ok();
    d.ctl(&["delete", &pinned, "--yes"]).expect_ok();
    assert!(!d.paths.archive("app", &pinned).exists());
    assert!(!d.paths.sidecar("app", &pinned).exists());
    assert!(!ids(&d.list(Some("app"))).contains(&pinned));
}

#[test]
fn a_fire_during_a_running_backup_is_skipped_not_doubled() {
    // Rollback-journal mode: our EXCLUSIVE lock keeps the snapshot waiting (up to the
    // busy timeout), so the first scheduled run lasts as long as we hold it.
    let app = App::new(false);
    let holder = Connection::open(&app.db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut d = Daemon::start(
        "",
        &app.job("app", &format!("{EVERY_2S}\nbusy-timeout = \"60s\"")),
    );

    wait_until("a scheduled run starts", Duration::from_secs(15), || {
        d.job_status("app")["running"] == true
    });
    let blocked_since = Instant::now();

    // A manual backup is refused while the scheduled one runs.
    d.ctl(&["backup", "app"])
        .expect_failure(1, "a backup of job 'app' is already running");

    // The next fires are skipped and recorded while the run is blocked.
    let mut job = Value::Null;
    wait_until("a skipped run is recorded", Duration::from_secs(15), || {
        job = d.job_status("app");
        job["last-run"]["status"] == "skipped"
    });
    assert_eq!(job["running"], true, "{job}");
    assert!(
        job["last-run"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("still running"),
        "{job}"
    );
    assert_eq!(job["backup-count"], 0, "{job}");
    // The audit log has the skips too (with the reason as their error).
    let entries = audit(&d);
    let skips: Vec<&Value> = entries
        .iter()
        .filter(|e| e["actor"] == "scheduler" && e["action"] == "backup skipped")
        .collect();
    assert!(!skips.is_empty(), "{entries:#?}");
    for skip in skips {
        assert_eq!(skip["target"], "app", "{skip}");
        assert!(
            skip["error"]
                .as_str()
                .unwrap_or_default()
                .contains("still running"),
            "{skip}"
        );
    }

    // Hold the lock about five seconds in all, then let the run finish.
    if let Some(rest) = Duration::from_secs(5).checked_sub(blocked_since.elapsed()) {
        std::thread::sleep(rest);
    }
    assert_eq!(d.job_status("app")["running"], true);
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);

    // The blocked run succeeds, and scheduled runs go on afterwards.
    wait_until(
        "two backups after the lock is released",
        Duration::from_secs(30),
        || d.list(Some("app")).len() >= 2,
    );
    stop(&mut d);

    // The runs as the daemon recorded them.
    let conn = Connection::open(d.paths.state_dir.join("catalog.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT status, started_at, finished_at, error, backup_id FROM runs
             WHERE job = 'app' AND kind = 'backup' ORDER BY id",
        )
        .unwrap();
    let runs: Vec<(String, i64, i64, String, String)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(stmt);
    drop(conn);
    let show = format!("{runs:#?}");
    let first = &runs[0];
    assert_eq!(first.0, "succeeded", "the blocked run should succeed: {show}");
    assert!(
        first.2 - first.1 >= 4,
        "the first run should have waited for the lock: {show}"
    );
    let skipped: Vec<_> = runs.iter().filter(|r| r.0 == "skipped").collect();
    assert!(!skipped.is_empty(), "{show}");
    for s in &skipped {
        assert!(s.4.is_empty(), "a skipped run made a backup: {show}");
    }
    assert!(
        skipped.iter().any(|s| s.1 >= first.1 && s.1 <= first.2),
        "no fire was skipped while the first run was blocked: {show}"
    );
    // Never a failed run, never one refused as "already running".
    for r in &runs {
        assert!(
            matches!(r.0.as_str(), "succeeded" | "skipped" | "cancelled"),
            "unexpected run: {show}"
        );
        assert!(
            r.0 == "skipped" || !r.3.contains("already running"),
            "a run collided with another: {show}"
        );
    }
    // Runs that did work never overlap in time.
    let worked: Vec<_> = runs.iter().filter(|r| r.0 != "skipped").collect();
    for pair in worked.windows(2) {
        assert!(pair[1].1 >= pair[0].2, "two runs overlapped: {show}");
    }
    // Each succeeded run made exactly one backup, and nothing else made any.
    let made: Vec<String> = runs
        .iter()
        .filter(|r| r.0 == "succeeded")
        .map(|r| r.4.clone())
        .collect();
    let unique: BTreeSet<&String> = made.iter().collect();
    assert_eq!(unique.len(), made.len(), "{show}");
    let archives: BTreeSet<String> = files_under(&d.paths.backup_dir.join("app"))
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .strip_suffix(".tar.zst")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(archives, made.into_iter().collect::<BTreeSet<_>>(), "{show}");
}

#[test]
fn catch_up_runs_once_at_start_up_when_a_slot_was_missed() {
    away_from(&[THREE_AM]);
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", &format!("{NIGHTLY}\ncatch-up = true")));

    // No backup yet: the last 03:00 slot was missed, so one backup right away.
    let mut list = Vec::new();
    wait_until("the catch-up backup", Duration::from_secs(30), || {
        list = d.list(Some("app"));
        !list.is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    let list = d.list(Some("app"));
    assert_eq!(list.len(), 1, "catch-up must run once: {list:#?}");
    let first = list[0]["id"].as_str().unwrap().to_owned();
    let entries = audit(&d);
    assert_eq!(
        audited(&entries, "scheduler", "backup", "ok"),
        vec![first.clone()]
    );
    let job = d.job_status("app");
    assert_eq!(job["last-run"]["status"], "succeeded", "{job}");
    assert_eq!(job["last-run"]["backup-id"], first.as_str(), "{job}");

    // A restart with a backup newer than the last slot: nothing to catch up.
    d.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ids(&d.list(Some("app"))), vec![first.clone()]);

    // Two days without a backup (the catalog says so): one catch-up, not one per
    // missed slot.
    stop(&mut d);
    age_backups(&d, "app", 2 * 86_400);
    d.start_again();
    let mut list = Vec::new();
    wait_until("the second catch-up backup", Duration::from_secs(30), || {
        list = d.list(Some("app"));
        list.len() >= 2
    });
    std::thread::sleep(Duration::from_secs(3));
    let list = d.list(Some("app"));
    assert_eq!(list.len(), 2, "catch-up must run once: {list:#?}");
    assert_eq!(list[1]["id"], first.as_str());
    let second = list[0]["id"].as_str().unwrap().to_owned();
    assert!(second > first, "{second} should be newer than {first}");
    assert!(d.paths.archive("app", &second).exists());
    assert_eq!(
        audited(&audit(&d), "scheduler", "backup", "ok"),
        vec![first, second]
    );
}

#[test]
fn no_catch_up_when_it_is_off() {
    away_from(&[THREE_AM]);
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", &format!("{NIGHTLY}\ncatch-up = false")));
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.list(Some("app")).is_empty(), "catch-up is off");
    assert!(d.job_status("app")["last-run"].is_null());

    // Even with a backup two days old, a restart takes no backup.
    let id = d.backup("app")["id"].as_str().unwrap().to_owned();
    stop(&mut d);
    age_backups(&d, "app", 2 * 86_400);
    d.start_again();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ids(&d.list(Some("app"))), vec![id]);
    assert!(audited(&audit(&d), "scheduler", "backup", "ok").is_empty());
}

#[test]
fn jobs_and_status_show_next_and_last_runs() {
    // 03:30 in Kolkata (UTC+05:30, no DST) is 22:00 UTC.
    let ten_pm = 22 * 3600;
    away_from(&[THREE_AM, ten_pm]);
    let app = App::new(true);
    let jobs = [
        app.job("nightly", &format!("{NIGHTLY}\ncatch-up = false")),
        app.job(
            "kolkata",
            "schedule = \"0 30 3 * * *\"\ntimezone = \"Asia/Kolkata\"\ncatch-up = false",
        ),
        app.job("ondemand", ""),
    ]
    .concat();
    let d = Daemon::start("", &jobs);
    let now = now_unix();
    let next_nightly = rfc3339(next_at(now, THREE_AM));
    let next_kolkata = rfc3339(next_at(now, ten_pm));

    let listed = d.ctl_json(&["jobs"]);
    let find = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("jobs does not list {name}: {listed}"))
            .clone()
    };
    let nightly = find("nightly");
    assert_eq!(nightly["schedule"], "0 0 3 * * *", "{nightly}");
    assert_eq!(nightly["next-run-at"], next_nightly.as_str(), "{nightly}");
    assert_eq!(nightly["catch-up"], false, "{nightly}");
    let kolkata = find("kolkata");
    assert_eq!(kolkata["timezone"], "Asia/Kolkata", "{kolkata}");
    assert_eq!(kolkata["next-run-at"], next_kolkata.as_str(), "{kolkata}");
    let ondemand = find("ondemand");
    assert_eq!(ondemand["schedule"], "manual", "{ondemand}");
    assert!(ondemand["next-run-at"].is_null(), "{ondemand}");

    for (name, next) in [
        ("nightly", Some(&next_nightly)),
        ("kolkata", Some(&next_kolkata)),
        ("ondemand", None),
    ] {
        let job = d.job_status(name);
        match next {
            Some(next) => assert_eq!(job["next-run-at"], next.as_str(), "{job}"),
            None => assert!(job["next-run-at"].is_null(), "{job}"),
        }
        assert!(job["last-run"].is_null(), "{job}");
        assert_eq!(job["backup-count"], 0, "{job}");
        assert!(job["last-success-at"].is_null(), "{job}");
    }

    // After a run, status has its result and timing.
    let before = now_unix();
    let backup = d.backup("ondemand");
    let after = now_unix();
    let job = d.job_status("ondemand");
    let run = &job["last-run"];
    assert_eq!(run["status"], "succeeded", "{job}");
    assert_eq!(run["backup-id"], backup["id"], "{job}");
    assert_eq!(run["error"], "", "{job}");
    let started = parse_time(run["started-at"].as_str().unwrap());
    let finished = parse_time(run["finished-at"].as_str().unwrap());
    assert!(
        before <= started && started <= finished && finished <= after,
        "{job}"
    );
    assert_eq!(job["backup-count"], 1, "{job}");
    assert_eq!(job["backup-bytes"], backup["size"], "{job}");
    assert_eq!(job["last-success-at"], backup["created-at"], "{job}");
    assert!(job["next-run-at"].is_null(), "{job}");
    assert!(backup["duration-ms"].as_u64().is_some(), "{backup}");

    // The human table says the same.
    let text = d.ctl(&["status"]).expect_ok().stdout;
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("status has no row for {name}:\n{text}"))
            .to_owned()
    };
    assert!(row("ondemand").contains("succeeded"), "{text}");
    assert!(row("nightly").contains("never"), "{text}");
    assert!(row("nightly").contains(&next_nightly), "{text}");
}

#[test]
fn time_helpers_round_trip() {
    for (unix, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (1_795_399_205, "2026-11-23T02:00:05Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
    ] {
        assert_eq!(rfc3339(unix), text);
        assert_eq!(parse_time(text), unix);
    }
    assert_eq!(next_at(1_795_399_205, THREE_AM), 1_795_399_205 - 7205 + 3 * 3600);
    assert_eq!(next_at(1_795_399_205, 3600), 1_795_399_205 - 7205 + 86_400 + 3600);
}
