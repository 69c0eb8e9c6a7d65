//! Retention through `cofferctl prune`: `--dry-run` reports the decisions with their
//! reasons and changes nothing (catalog, archives, sidecars); a real prune removes
//! exactly the backups the policy lets go, files and all; pinned backups survive
//! prunes and a catalog rebuild; the newest backup is always kept and an empty policy
//! keeps everything.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coffer_tests::{App, Daemon, files_under, wait_until};
use serde_json::Value;

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The archive and sidecar paths of `ids`, sorted.
fn backup_files(d: &Daemon, ids: &[String]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ids
        .iter()
        .flat_map(|id| [d.paths.archive("app", id), d.paths.sidecar("app", id)])
        .collect();
    files.sort();
    files
}

/// Every file in the job's backup dir with its size, mtime and inode: any rewrite,
/// removal or addition shows.
fn disk_state(d: &Daemon) -> BTreeMap<PathBuf, (u64, i64, i64, u64)> {
    files_under(&d.paths.backup_dir.join("app"))
        .into_iter()
        .map(|p| {
            let m = fs::metadata(&p).unwrap();
            (p, (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect()
}

/// Takes a backup in a later second than `previous` (so creation times differ and
/// "newest" is unambiguous); returns its id.
fn backup_after(d: &Daemon, previous: Option<&str>) -> String {
    if previous.is_some() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        std::thread::sleep(Duration::from_nanos(
            1_000_000_000 - u64::from(now.subsec_nanos()),
        ));
    }
    d.backup("app")["id"].as_str().unwrap().to_owned()
}

/// `n` backups, oldest first.
fn backups(d: &Daemon, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for _ in 0..n {
        let id = backup_after(d, out.last().map(String::as_str));
        out.push(id);
    }
    out
}

/// Appends `[job.retention]` lines to the (last) job and reloads with SIGHUP; returns
/// once `jobs` shows the new policy `summary`.
fn set_retention(d: &Daemon, lines: &str, summary: &str) {
    let mut text = fs::read_to_string(&d.paths.config).unwrap();
    text.push_str(&format!("\n[job.retention]\n{lines}\n"));
    fs::write(&d.paths.config, text).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(
        "the new retention policy is in force",
        Duration::from_secs(15),
        || d.ctl_json(&["jobs"])[0]["retention"] == summary,
    );
}

/// The decisions of a `prune --json`, after checking its `dry-run` flag.
fn decisions(out: &Value, dry_run: bool) -> Vec<Value> {
    assert_eq!(out["dry-run"], dry_run, "{out}");
    out["decisions"].as_array().unwrap().clone()
}

fn reasons(decision: &Value) -> Vec<&str> {
    decision["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect()
}

#[test]
fn dry_run_changes_nothing_and_prune_removes_what_it_said() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    assert_eq!(d.ctl_json(&["jobs"])[0]["retention"], "keep everything");
    // Retention runs after every backup; with no policy all five stay.
    let made = backups(&d, 5);
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(ids(&d.list(Some("app"))), newest_first);

    set_retention(&d, "keep-last = 2", "keep-last 2");
    let list_before = d.list(None);
    let disk_before = disk_state(&d);
    assert_eq!(disk_before.len(), 10);

    let out = d.ctl_json(&["prune", "app", "--dry-run"]);
    let plan = decisions(&out, true);
    assert_eq!(ids(&plan), newest_first, "one decision per backup, newest first");
    for (i, decision) in plan.iter().enumerate() {
        assert_eq!(decision["job"], "app", "{decision}");
        assert_eq!(
            decision["removed"], false,
            "a dry run removed something: {decision}"
        );
        match i {
            0 => {
                assert_eq!(decision["keep"], true, "{decision}");
                assert_eq!(reasons(decision), ["keep-last", "newest"], "{decision}");
            }
            1 => {
                assert_eq!(decision["keep"], true, "{decision}");
                assert_eq!(reasons(decision), ["keep-last"], "{decision}");
            }
            _ => {
                assert_eq!(decision["keep"], false, "{decision}");
                assert!(reasons(decision).is_empty(), "{decision}");
            }
        }
    }
    let text = d.ctl(&["prune", "app", "--dry-run"]).expect_ok().stdout;
    assert_eq!(text.matches("would remove").count(), 3, "{text}");
    assert!(
        text.contains("dry run: 3 backup(s) would be removed, nothing was changed"),
        "{text}"
    );
    for id in &newest_first[2..] {
        let line = text.lines().find(|l| l.starts_with(id.as_str())).unwrap();
        assert!(line.contains("would remove"), "{text}");
    }
    // Nothing changed: catalog, archives, sidecars.
    assert_eq!(d.list(None), list_before);
    assert_eq!(disk_state(&d), disk_before);

    // The real prune removes exactly those three, files and all.
    let out = d.ctl_json(&["prune", "app"]);
    let done = decisions(&out, false);
    assert_eq!(ids(&done), newest_first);
    for (i, decision) in done.iter().enumerate() {
        assert_eq!(decision["keep"], i < 2, "{decision}");
        assert_eq!(decision["removed"], i >= 2, "{decision}");
    }
    let kept = newest_first[..2].to_vec();
    assert_eq!(ids(&d.list(None)), kept);
    assert_eq!(
        files_under(&d.paths.backup_dir.join("app")),
        backup_files(&d, &kept)
    );
    for id in &newest_first[2..] {
        d.ctl(&["show", id]).expect_failure(1, "there is no backup");
    }
    // The kept ones are untouched.
    for (path, state) in disk_state(&d) {
        assert_eq!(disk_before.get(&path), Some(&state), "{} changed", path.display());
    }

    // A second prune has nothing left to do.
    let text = d.ctl(&["prune", "app"]).expect_ok().stdout;
    assert!(text.contains("0 backup(s) removed"), "{text}");
    assert_eq!(ids(&d.list(None)), kept);
}

#[test]
fn pinned_backups_survive_prune_and_a_catalog_rebuild() {
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", "[job.retention]\nkeep-last = 1"));
    let old = backup_after(&d, None);
    d.ctl(&["pin", &old]).expect_ok();
    let middle = backup_after(&d, Some(&old));
    let newest = backup_after(&d, Some(&middle));
    // Retention after each backup kept the pin and the newest only.
    assert_eq!(ids(&d.list(None)), [newest.clone(), old.clone()]);
    assert_eq!(
        files_under(&d.paths.backup_dir.join("app")),
        backup_files(&d, &[newest.clone(), old.clone()])
    );

    let check_prune = |d: &Daemon| {
        let plan = decisions(&d.ctl_json(&["prune", "app"]), false);
        assert_eq!(ids(&plan), [newest.clone(), old.clone()]);
        assert_eq!(plan[0]["keep"], true);
        assert_eq!(reasons(&plan[0]), ["keep-last", "newest"]);
        assert_eq!(plan[1]["keep"], true, "the pinned backup must be kept");
        assert_eq!(plan[1]["removed"], false);
        assert_eq!(reasons(&plan[1]), ["protected"]);
        let list = d.list(None);
        assert_eq!(ids(&list), [newest.clone(), old.clone()]);
        assert_eq!(list[0]["protected"], false);
        assert_eq!(list[1]["protected"], true);
    };
    check_prune(&d);

    // Without the catalog, the pin comes back from the sidecar.
    let status = d.stop();
    assert!(status.success(), "cofferd exited {status}; log:\n{}", d.log());
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = d.paths.state_dir.join(format!("catalog.db{suffix}"));
        if path.exists() {
            fs::remove_file(&path).unwrap();
        }
    }
    d.start_again();
    check_prune(&d);
    d.ctl(&["delete", &old, "--yes"])
        .expect_failure(1, "is protected");
    assert!(d.paths.archive("app", &old).exists());

    // Unpinned, the next prune lets it go.
    d.ctl(&["unpin", &old]).expect_ok();
    let plan = decisions(&d.ctl_json(&["prune", "app"]), false);
    assert_eq!(plan[1]["id"], old.as_str());
    assert_eq!(plan[1]["keep"], false);
    assert_eq!(plan[1]["removed"], true);
    let left = vec![newest];
    assert_eq!(ids(&d.list(None)), left);
    assert_eq!(
        files_under(&d.paths.backup_dir.join("app")),
        backup_files(&d, &left)
    );
}

#[test]
fn empty_policy_keeps_everything_and_the_newest_is_always_kept() {
    let app = App::new(true);
    let d = Daemon::start("", &app.job("app", ""));
    let made = backups(&d, 3);
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();

    // No policy: every backup stays, each saying why.
    let plan = decisions(&d.ctl_json(&["prune"]), false);
    assert_eq!(ids(&plan), newest_first);
    for (i, decision) in plan.iter().enumerate() {
        assert_eq!(decision["keep"], true, "{decision}");
        assert_eq!(decision["removed"], false, "{decision}");
        let mut want = vec!["policy keeps everything"];
        if i == 0 {
            want.push("newest");
        }
        assert_eq!(reasons(decision), want, "{decision}");
    }
    assert_eq!(ids(&d.list(None)), newest_first);
    assert_eq!(
        files_under(&d.paths.backup_dir.join("app")),
        backup_files(&d, &made)
    );

    // The tightest policy keeps the newest one: it is the newest of its day.
    set_retention(&d, "keep-daily = 1", "keep-daily 1");
    let plan = decisions(&d.ctl_json(&["prune", "app"]), false);
    assert_eq!(ids(&plan), newest_first);
    assert_eq!(plan[0]["keep"], true);
    assert_eq!(plan[0]["removed"], false);
    assert_eq!(reasons(&plan[0]), ["daily", "newest"]);
    for decision in &plan[1..] {
        assert_eq!(decision["keep"], false, "{decision}");
        assert_eq!(decision["removed"], true, "{decision}");
    }
    let newest = vec![newest_first[0].clone()];
    assert_eq!(ids(&d.list(None)), newest);
    assert_eq!(
        files_under(&d.paths.backup_dir.join("app")),
        backup_files(&d, &newest)
    );
    d.ctl(&["verify", &newest[0]]).expect_ok();
}
