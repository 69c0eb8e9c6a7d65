//! What monitoring sees. Health is asked with an independent gRPC client (Python
//! `grpcio` + `grpcio-health-checking`, `tests/py/health_check.py`) and with the
//! Nagios-style `cofferctl health`; metrics are read with Prometheus' own parser
//! (`prometheus_client`, `tests/py/parse_metrics.py`); the audit log is checked entry
//! by entry against the actions that were taken, by hand and by the scheduler.
//!
//! The Python packages are installed with pip once per test run when missing; if that
//! fails (no network, no pip) the tests that need them skip with a message.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coffer_tests::{
    App, COMMAND_TIMEOUT, Daemon, Output, job_toml, run, short_tempdir, wait_timeout, wait_until,
};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Python helpers
// ---------------------------------------------------------------------------

const PY_IMPORTS: &str = "import grpc, grpc_health.v1.health_pb2, prometheus_client.parser";

fn py_imports_ok() -> bool {
    Command::new("python3")
        .args(["-c", PY_IMPORTS])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the Python packages are usable (installing them once per run if needed);
/// prints why `test` is skipped if not.
fn python(test: &str) -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if py_imports_ok() {
            return Ok(());
        }
        let mut pip = Command::new("python3");
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "grpcio",
            "grpcio-health-checking",
            "prometheus-client",
        ]);
        let out = run(pip, Duration::from_secs(600));
        if !out.success() {
            return Err(format!(
                "cannot install grpcio, grpcio-health-checking and prometheus-client with pip: {}",
                out.stderr.trim()
            ));
        }
        if py_imports_ok() {
            Ok(())
        } else {
            Err("pip installed the packages but python3 cannot import them".to_owned())
        }
    });
    match ready {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn py_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py").join(name)
}

/// The `grpc.health.v1` status of each service, as Python's gRPC client sees it:
/// `SERVING`, `NOT_SERVING`, or `ERROR <code> <details>`.
fn py_health(d: &Daemon, services: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("python3");
    cmd.arg(py_script("health_check.py"))
        .arg(&d.paths.socket)
        .args(services);
    let out = run(cmd, COMMAND_TIMEOUT);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), services.len(), "{out}");
    lines
        .iter()
        .zip(services)
        .map(|(line, service)| {
            let prefix = format!("'{service}' ");
            line.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("unexpected line {line:?}: {out}"))
                .to_owned()
        })
        .collect()
}

fn py_health_of(d: &Daemon, service: &str) -> String {
    py_health(d, &[service]).remove(0)
}

/// `cofferctl metrics` parsed by `prometheus_client`: (families, samples).
fn py_metrics(d: &Daemon) -> (Value, Value) {
    let text = d.ctl(&["metrics"]).expect_ok().stdout;
    let mut child = Command::new("python3")
        .arg(py_script("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    assert!(
        wait_timeout(&mut child, COMMAND_TIMEOUT).is_some(),
        "parse_metrics.py hangs"
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Prometheus' parser rejected the metrics:\n{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    (parsed["families"].clone(), parsed["samples"].clone())
}

/// The value of the sample `name` whose labels include all of `labels`; panics unless
/// exactly one matches.
#[track_caller]
fn sample(samples: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    let list = samples[name]
        .as_array()
        .unwrap_or_else(|| panic!("no samples named {name}: {samples}"));
    let hits: Vec<f64> = list
        .iter()
        .filter(|s| labels.iter().all(|(k, v)| s[0][*k] == *v))
        .map(|s| s[1].as_f64().unwrap())
        .collect();
    assert_eq!(hits.len(), 1, "{name}{labels:?}: {list:?}");
    hits[0]
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------

#[test]
fn job_health_over_grpc_follows_backups() {
    if !python("job_health_over_grpc_follows_backups") {
        return;
    }
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    let statuses = py_health(&d, &["", "coffer.v1.Coffer", "coffer.job.app", "coffer.job.nope"]);
    assert_eq!(statuses[0], "SERVING", "the daemon");
    assert_eq!(statuses[1], "SERVING", "the Coffer service");
    assert_eq!(statuses[2], "NOT_SERVING", "a job without backups");
    assert!(
        statuses[3].starts_with("ERROR NOT_FOUND"),
        "an unknown job: {}",
        statuses[3]
    );
    d.backup("app");
    assert_eq!(
        py_health_of(&d, "coffer.job.app"),
        "SERVING",
        "right after a backup"
    );
    assert_eq!(py_health_of(&d, ""), "SERVING");
}

/// Waits until `cofferctl health JOB` exits `code`; returns how long that took.
fn wait_health(d: &Daemon, job: &str, code: i32, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_until(&format!("`cofferctl health {job}` exits {code}"), timeout, || {
        d.ctl(&["health", job]).code == code
    });
    start.elapsed()
}

#[test]
fn job_turns_not_serving_once_its_newest_backup_is_stale() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", "stale-after = \"3s\""));
    let before = Instant::now();
    d.backup("app");
    assert_eq!(d.ctl(&["health", "app"]).code, 0);
    wait_health(&d, "app", 2, Duration::from_secs(10));
    // The backup's time has whole seconds, so staleness may come up to 1 s early.
    assert!(
        before.elapsed() >= Duration::from_millis(1900),
        "stale after {:?} (stale-after 3s)",
        before.elapsed()
    );
    let out = d.ctl(&["health", "app"]);
    assert!(
        out.stdout.starts_with("COFFER CRITICAL - app: newest backup is"),
        "{out}"
    );
    if python("job_turns_not_serving_once_its_newest_backup_is_stale (gRPC part)") {
        assert_eq!(py_health_of(&d, "coffer.job.app"), "NOT_SERVING");
        assert_eq!(
            py_health_of(&d, ""),
            "SERVING",
            "a stale job is not a sick daemon"
        );
    }
}

#[test]
fn stale_backup_found_at_start_up_turns_not_serving_on_time() {
    // The health task knows when the newest backup turns stale if the backup existed
    // when it last looked (here: at start-up).
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", "stale-after = \"4s\""));
    let before = Instant::now();
    d.backup("app");
    d.restart();
    let early = d.ctl(&["health", "app"]);
    if before.elapsed() < Duration::from_secs(2) {
        assert_ne!(early.code, 2, "stale too early: {early}");
    }
    wait_health(&d, "app", 2, Duration::from_secs(12));
    assert!(before.elapsed() >= Duration::from_millis(2900));
    let out = d.ctl(&["health", "app"]);
    assert!(
        out.stdout.starts_with("COFFER CRITICAL - app: newest backup is"),
        "{out}"
    );
    if python("stale_backup_found_at_start_up_turns_not_serving_on_time (gRPC part)") {
        assert_eq!(py_health_of(&d, "coffer.job.app"), "NOT_SERVING");
        assert_eq!(
            py_health_of(&d, ""),
            "SERVING",
            "a stale job is not a sick daemon"
        );
    }
    // A new backup makes it healthy again.
    d.backup("app");
    assert_eq!(d.ctl(&["health", "app"]).code, 0);
}

#[test]
fn scheduled_backup_updates_job_health() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", "schedule = \"*/2 * * * * *\""));
    assert_eq!(d.ctl(&["health", "app"]).code, 2, "no backup yet");
    wait_until("a scheduled backup succeeds", Duration::from_secs(15), || {
        d.job_status("app")["backup-count"].as_u64().unwrap_or(0) >= 1
    });
    wait_health(&d, "app", 0, Duration::from_secs(5));
}

#[test]
fn failed_backup_turns_the_job_not_serving() {
    if !python("failed_backup_turns_the_job_not_serving") {
        return;
    }
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    d.backup("app");
    assert_eq!(py_health_of(&d, "coffer.job.app"), "SERVING");

    let away = app.dir.path().join("away.db");
    fs::rename(&app.db, &away).unwrap();
    d.ctl(&["backup", "app"]).expect_failure(1, "does not exist");
    assert_eq!(
        py_health_of(&d, "coffer.job.app"),
        "NOT_SERVING",
        "the last backup failed, although a fresh one exists"
    );
    let out = d.ctl(&["health"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stdout.starts_with("COFFER CRITICAL"), "{out}");
    assert!(out.stdout.contains("app: last backup failed"), "{out}");
    assert!(out.stdout.contains("does not exist"), "{out}");

    fs::rename(&away, &app.db).unwrap();
    d.backup("app");
    assert_eq!(py_health_of(&d, "coffer.job.app"), "SERVING");
}

/// The perfdata after `|` as name → value (units stripped).
fn perfdata(out: &Output) -> BTreeMap<String, String> {
    let line = out.stdout.lines().next().unwrap_or_default();
    let (_, perf) = line
        .split_once(" | ")
        .unwrap_or_else(|| panic!("no perfdata after '|': {out}"));
    perf.split_whitespace()
        .map(|item| {
            let (name, rest) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("bad perfdata item {item:?}: {out}"));
            let value = rest.split(';').next().unwrap();
            (
                name.to_owned(),
                value
                    .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn health_command_exit_codes() {
    let app = App::new(true);
    let mut d = Daemon::start(
        "",
        &format!(
            "{}\n{}",
            app.job("app", "stale-after = \"1h\""),
            app.job("quick", "")
        ),
    );

    // No backups yet: CRITICAL.
    let out = d.ctl(&["health", "app"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stdout.starts_with("COFFER CRITICAL - app: no backup yet"),
        "{out}"
    );
    assert_eq!(perfdata(&out)["app_backups"], "0");

    // A fresh backup: OK, with numbers.
    let backup = d.backup("app");
    let out = d.ctl(&["health", "app"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.starts_with("COFFER OK"), "{out}");
    let perf = perfdata(&out);
    assert_eq!(perf["app_backups"], "1", "{out}");
    assert_eq!(perf["app_bytes"], backup["size"].to_string(), "{out}");
    assert!(perf["free"].parse::<u64>().unwrap() > 0, "{out}");
    let json = d.ctl(&["--json", "health", "app"]).expect_ok().json();
    assert_eq!(json["state"], "OK");
    assert_eq!(json["code"], 0);

    // The database disappears: WARNING while the last backup is still fresh.
    let away = app.dir.path().join("away.db");
    fs::rename(&app.db, &away).unwrap();
    let out = d.ctl(&["health", "app"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.starts_with("COFFER WARNING"), "{out}");
    assert!(out.stdout.contains("does not exist"), "{out}");
    fs::rename(&away, &app.db).unwrap();

    // The whole check reports the worst job: `quick` has no backup.
    let out = d.ctl(&["health"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stdout.starts_with("COFFER CRITICAL - quick: no backup yet"),
        "{out}"
    );
    let perf = perfdata(&out);
    assert_eq!(perf["app_backups"], "1", "{out}");
    assert_eq!(perf["quick_backups"], "0", "{out}");
    d.backup("quick");
    assert_eq!(d.ctl(&["health"]).code, 0);

    let out = d.ctl(&["health", "nope"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.starts_with("COFFER UNKNOWN"), "{out}");
    assert!(out.stdout.contains("there is no job named 'nope'"), "{out}");

    // The daemon is gone: UNKNOWN.
    let status = d.stop();
    assert!(status.success());
    let out = d.ctl(&["health"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.starts_with("COFFER UNKNOWN"), "{out}");
    assert!(out.stdout.contains("cannot reach cofferd"), "{out}");
    d.start_again();
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

#[test]
fn metrics_parse_with_the_prometheus_parser() {
    if !python("metrics_parse_with_the_prometheus_parser") {
        return;
    }
    let app = App::new(true);
    let missing = short_tempdir("coffer-app-");
    let d = Daemon::start(
        "",
        &format!(
            "{}\n{}",
            app.job("app", "[job.retention]\nkeep-last = 2"),
            job_toml("broken", &missing.path().join("gone.db"), &[], "")
        ),
    );
    for _ in 0..3 {
        d.backup("app");
    }
    d.ctl(&["backup", "broken"]).expect_failure(1, "does not exist");
    let list = d.list(Some("app"));
    assert_eq!(list.len(), 2, "keep-last 2: {list:?}");

    let (families, samples) = py_metrics(&d);
    for (family, kind) in [
        ("coffer_up", "gauge"),
        ("coffer_build_info", "gauge"),
        ("coffer_backups", "gauge"),
        ("coffer_backup_bytes", "gauge"),
        ("coffer_backup_last_success_timestamp_seconds", "gauge"),
        ("coffer_backup_last_duration_seconds", "gauge"),
        ("coffer_backup_last_size_bytes", "gauge"),
        // The parser names counter families without `_total`.
        ("coffer_runs", "counter"),
        ("coffer_retention_removed", "counter"),
        ("coffer_verify_failures", "counter"),
        ("coffer_backup_dir_free_bytes", "gauge"),
    ] {
        assert_eq!(families[family]["type"], kind, "{family}: {families}");
        assert!(
            !families[family]["help"].as_str().unwrap_or_default().is_empty(),
            "{family} has no HELP"
        );
    }

    assert_eq!(sample(&samples, "coffer_up", &[]), 1.0);
    let status = d.ctl_json(&["status"]);
    let version = status["version"].as_str().unwrap();
    assert_eq!(
        sample(&samples, "coffer_build_info", &[("version", version)]),
        1.0
    );
    assert!(
        samples["coffer_build_info"][0][0]["sqlite_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{samples}"
    );

    let app_job = [("job", "app")];
    assert_eq!(sample(&samples, "coffer_backups", &app_job), 2.0);
    assert_eq!(sample(&samples, "coffer_backups", &[("job", "broken")]), 0.0);
    let bytes: u64 = list.iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(sample(&samples, "coffer_backup_bytes", &app_job), bytes as f64);
    assert_eq!(
        sample(&samples, "coffer_backup_last_size_bytes", &app_job),
        list[0]["size"].as_u64().unwrap() as f64
    );
    let last = sample(&samples, "coffer_backup_last_success_timestamp_seconds", &app_job);
    assert!(
        (now_unix() - last).abs() < 120.0,
        "the newest backup is from {last}, now is {}",
        now_unix()
    );
    assert_eq!(
        sample(
            &samples,
            "coffer_backup_last_success_timestamp_seconds",
            &[("job", "broken")]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &samples,
            "coffer_runs_total",
            &[("job", "app"), ("kind", "backup"), ("result", "succeeded")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &samples,
            "coffer_runs_total",
            &[("job", "broken"), ("kind", "backup"), ("result", "failed")]
        ),
        1.0
    );
    assert_eq!(sample(&samples, "coffer_retention_removed_total", &app_job), 1.0);
    assert_eq!(
        sample(&samples, "coffer_retention_removed_total", &[("job", "broken")]),
        0.0
    );
    assert_eq!(sample(&samples, "coffer_verify_failures_total", &app_job), 0.0);
    assert!(sample(&samples, "coffer_backup_dir_free_bytes", &[]) > 0.0);
}

// ---------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------

/// `audit --json`, oldest first.
fn audit(d: &Daemon) -> Vec<Value> {
    let Value::Array(mut entries) = d.ctl_json(&["audit", "--limit", "1000"]) else {
        panic!("audit is not a JSON array");
    };
    entries.reverse();
    entries
}

/// Runs `cofferctl args...` and returns its output and pid.
fn ctl_with_pid(d: &Daemon, args: &[&str]) -> (Output, u32) {
    let child = d
        .ctl_command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            command: args.join(" "),
        },
        pid,
    )
}

#[test]
fn audit_records_every_action_with_actor_target_and_result() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    let started = now_unix();
    let b1 = d.backup("app")["id"].as_str().unwrap().to_owned();
    let b2 = d.backup("app")["id"].as_str().unwrap().to_owned();
    let (out, pin_pid) = ctl_with_pid(&d, &["pin", &b1]);
    out.expect_ok();
    d.ctl(&["delete", &b1, "--yes"]).expect_failure(1, "is protected");
    d.ctl(&["unpin", &b1]).expect_ok();
    let work = short_tempdir("coffer-audit-");
    let file = work.path().join("b1.tar.zst");
    d.ctl(&["download", &b1, "-o", file.to_str().unwrap()])
        .expect_ok();
    d.ctl(&["delete", &b1, "--yes"]).expect_ok();
    d.ctl(&["upload", file.to_str().unwrap()]).expect_ok();
    d.ctl(&["prune", "app"]).expect_ok();
    d.ctl(&["prune", "--dry-run"]).expect_ok();
    d.ctl(&["verify", &b2]).expect_ok();
    d.ctl(&["verify", &b2, "--deep"]).expect_ok();
    let to = work.path().join("restored");
    d.ctl(&["restore", &b2, "--to", to.to_str().unwrap()]).expect_ok();
    assert!(to.exists());
    d.ctl(&["backup", "nope"])
        .expect_failure(1, "there is no job named 'nope'");

    let to_text = format!("{b2} to {}", to.display());
    let expected: Vec<(&str, &str, &str)> = vec![
        ("backup", &b1, "ok"),
        ("backup", &b2, "ok"),
        ("pin", &b1, "ok"),
        ("delete", &b1, "failed"),
        ("unpin", &b1, "ok"),
        ("download", &b1, "ok"),
        ("delete", &b1, "ok"),
        ("upload", &b1, "ok"),
        ("prune", "app", "ok"),
        ("prune --dry-run", "all jobs", "ok"),
        ("verify", &b2, "ok"),
        ("verify --deep", &b2, "ok"),
        ("restore", &to_text, "ok"),
        ("backup", "nope", "failed"),
    ];
    let entries = audit(&d);
    let got: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected, "{entries:#?}");

    for e in &entries {
        let actor = e["actor"].as_str().unwrap();
        assert!(actor.starts_with("uid=0 pid="), "{e}");
        match e["result"].as_str().unwrap() {
            "ok" => assert!(e["error"].is_null(), "{e}"),
            _ => assert!(
                !e["error"].as_str().unwrap_or_default().is_empty(),
                "a failure without its error: {e}"
            ),
        }
        assert!(e["at"].is_string(), "{e}");
    }
    // The pid is the client's.
    assert_eq!(entries[2]["actor"], format!("uid=0 pid={pin_pid}"));
    // The failed delete says why.
    let refused = entries[3]["error"].as_str().unwrap();
    assert!(
        refused.contains(&format!("backup {b1} is protected (pinned)")),
        "{refused}"
    );
    assert!(
        entries[13]["error"]
            .as_str()
            .unwrap()
            .contains("there is no job named 'nope'")
    );
    assert!(now_unix() - started < 600.0);

    // --limit takes the newest.
    let newest = d.ctl_json(&["audit", "--limit", "2"]);
    assert_eq!(newest.as_array().unwrap().len(), 2);
    assert_eq!(newest[0]["action"], "backup");
    assert_eq!(newest[0]["target"], "nope");
    assert_eq!(newest[1]["action"], "restore");
}

#[test]
fn scheduled_backups_are_audited_as_the_scheduler() {
    let app = App::new(true);
    let d = Daemon::start(
        "",
        &app.job(
            "app",
            "schedule = \"*/2 * * * * *\"\n[job.retention]\nkeep-last = 1",
        ),
    );
    let scheduled = |entries: &[Value]| -> Vec<Value> {
        entries
            .iter()
            .filter(|e| e["actor"] == "scheduler" && e["action"] == "backup")
            .cloned()
            .collect()
    };
    let mut entries = Vec::new();
    wait_until(
        "two scheduled backups are audited",
        Duration::from_secs(20),
        || {
            entries = audit(&d);
            scheduled(&entries).len() >= 2
        },
    );
    let runs = scheduled(&entries);
    for run in &runs {
        assert_eq!(run["result"], "ok", "a scheduled backup failed: {run}");
        assert!(run["target"].as_str().unwrap().starts_with("app-"), "{run}");
    }
    // The audited backups are real: each is catalogued, or was removed by retention
    // (keep-last 1) after it was audited.
    let listed: Vec<Value> = d.list(None).iter().map(|b| b["id"].clone()).collect();
    let later = audit(&d);
    for run in &runs {
        let id = &run["target"];
        assert!(
            listed.contains(id)
                || later
                    .iter()
                    .any(|e| e["action"] == "retention-remove" && e["target"] == *id),
            "{id} is neither listed nor removed by retention: {listed:?}"
        );
    }

    // Retention after scheduled backups (keep-last 1) is audited too, without a
    // client: it happens on the scheduler's behalf.
    let removals: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "retention-remove")
        .collect();
    assert!(!removals.is_empty(), "no retention-remove entry: {entries:#?}");
    for r in &removals {
        assert_eq!(r["result"], "ok", "{r}");
        let actor = r["actor"].as_str().unwrap();
        assert!(
            actor == "scheduler" || actor == "retention",
            "retention after a scheduled backup is attributed to {actor:?}"
        );
        assert!(!actor.starts_with("uid="), "{r}");
    }
    // No client ever connected: nothing is attributed to a uid except our reads.
    assert!(
        entries
            .iter()
            .all(|e| !e["actor"].as_str().unwrap().starts_with("uid=")),
        "{entries:#?}"
    );
}
