//! Restore drills: `cofferctl drill JOB` (and `[job.drill] schedule`) restores the newest
//! backup into staging, verifies it, runs the job's SQL checks and removes the copy.
//! A passing drill shows in status and metrics; a failing check or a damaged archive
//! fails the drill with the query or the damage named, turns `health` WARNING and
//! counts in metrics; the live data is never touched.

use std::collections::BTreeMap;

use coffer_tests::{App, Daemon, names_in, wait_until};
use serde_json::Value;

use crate::restore::{assert_error_sentence, backup_id, fingerprint};

/// A daemon over `app` whose job runs `checks` in its drills (and `extra` keys).
fn daemon(app: &App, checks: &[&str], extra: &str) -> Daemon {
    let checks: Vec<String> = checks.iter().map(|c| coffer_tests::toml_str(c)).collect();
    Daemon::start(
        "",
        &app.job(
            "app",
            &format!("{extra}\n[job.drill]\nchecks = [{}]", checks.join(", ")),
        ),
    )
}

/// The value of the metric `name{job="app"}`.
fn metric(d: &Daemon, name: &str) -> f64 {
    let text = d.ctl(&["metrics"]).expect_ok().stdout;
    let prefix = format!("{name}{{job=\"app\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in the metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn job_status(d: &Daemon) -> Value {
    d.job_status("app")
}

/// Live database and media, fingerprinted (content, modes, mtimes).
fn live(app: &App) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    (fingerprint(app.db.parent().unwrap()), fingerprint(&app.media))
}

#[test]
fn a_drill_of_a_good_backup_passes_and_shows_in_status_and_metrics() {
    let app = App::new(true);
    let d = daemon(
        &app,
        &["SELECT count(*) > 0 FROM users", "SELECT count(*) FROM posts"],
        "",
    );
    let id = backup_id(&d, "app");
    let before = live(&app);
    let drilled = d.ctl_json(&["drill", "app"]);
    assert_eq!(drilled["backup-id"], id.as_str());
    assert_eq!(drilled["checks"][0]["value"], "1");
    assert_eq!(drilled["checks"][1]["query"], "SELECT count(*) FROM posts");
    assert_eq!(live(&app), before, "a drill never touches live data");
    assert!(
        names_in(&d.paths.staging).is_empty(),
        "the staging copy is removed"
    );

    let status = job_status(&d);
    assert_eq!(status["last-drill"]["status"], "succeeded", "{status}");
    assert_eq!(status["warnings"], serde_json::json!([]));
    assert_eq!(d.ctl(&["health", "app"]).code, 0);
    assert!(metric(&d, "coffer_drill_last_success_timestamp_seconds") > 0.0);
    assert_eq!(metric(&d, "coffer_drill_failures_total"), 0.0);
    let text = d.ctl(&["drill", "app"]).expect_ok().stdout;
    assert!(text.contains("restore drill of app passed"), "{text}");
    // A drill is a deep verification of the backup it restored.
    let shown = d.ctl_json(&["show", &id]);
    assert_eq!(shown["verify-result"], "ok");
}

#[test]
fn a_failing_check_or_a_query_error_fails_the_drill_and_turns_health_warning() {
    let app = App::new(true);
    let check = "SELECT count(*) FROM users WHERE name = 'nobody'";
    let d = daemon(&app, &[check], "");
    backup_id(&d, "app");
    let before = live(&app);
    let out = d.ctl(&["drill", "app"]);
    assert_error_sentence(&out, 1, &format!("check '{check}' returned 0, which is false"));
    assert_eq!(live(&app), before);
    assert!(names_in(&d.paths.staging).is_empty());

    let health = d.ctl(&["health", "app"]);
    assert_eq!(health.code, 1, "WARNING: {health}");
    assert!(health.stdout.contains(check), "the query is named: {health}");
    assert!(health.stdout.contains("WARNING"), "{health}");
    assert_eq!(metric(&d, "coffer_drill_failures_total"), 1.0);
    let status = job_status(&d);
    assert_eq!(status["last-drill"]["status"], "failed");
    assert!(
        status["warnings"][0].as_str().unwrap().contains(check),
        "{status}"
    );
    let audit = d.ctl_json(&["audit"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "drill" && e["result"] == "failed"),
        "{audit}"
    );

    // A query that is not even valid is a failure naming it too.
    let app2 = App::new(false);
    let d2 = daemon(&app2, &["SELECT nope FROM users"], "");
    backup_id(&d2, "app");
    let out = d2.ctl(&["drill", "app"]);
    assert_error_sentence(
        &out,
        1,
        "check 'SELECT nope FROM users' failed: no such column: nope",
    );
}

#[test]
fn a_drill_of_a_damaged_archive_fails() {
    let app = App::new(true);
    let d = daemon(&app, &["SELECT 1"], "");
    let id = backup_id(&d, "app");
    let archive = d.paths.archive("app", &id);
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&archive, bytes).unwrap();
    let before = live(&app);
    let out = d.ctl(&["drill", "app"]);
    assert_error_sentence(&out, 1, &format!("backup {id} failed verification"));
    assert_eq!(live(&app), before);
    assert!(names_in(&d.paths.staging).is_empty());
    assert_eq!(d.ctl(&["health", "app"]).code, 1);
}

#[test]
fn scheduled_drills_run_on_their_own_and_are_audited() {
    let app = App::new(true);
    let d = Daemon::start(
        "",
        &app.job(
            "app",
            "[job.drill]\nschedule = \"*/2 * * * * *\"\nchecks = [\"SELECT count(*) > 0 FROM users\"]",
        ),
    );
    backup_id(&d, "app");
    wait_until("a scheduled drill", std::time::Duration::from_secs(20), || {
        job_status(&d)["last-drill"]["status"] == "succeeded"
    });
    let audit = d.ctl_json(&["audit"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "drill" && e["actor"] == "scheduler"),
        "{audit}"
    );
}
