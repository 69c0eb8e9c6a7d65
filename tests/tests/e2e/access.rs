//! Who may do what through the socket. The daemon runs as root; `cofferctl` runs as
//! other uids and gids through `setpriv` (util-linux), so the kernel's peer credentials
//! are real. A stranger is refused everything (health included), a reader may look but
//! not touch, an admin may do everything; membership of a group — as the primary gid
//! or as a supplementary group in the user database — grants the group's role.
//!
//! These tests need root (to change uid and to add groups and users); without it, or
//! without `setpriv`, `groupadd` or `useradd`, they skip with a message.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_tests::{App, COMMAND_TIMEOUT, Daemon, Output, cofferctl_bin, run, short_tempdir};
use serde_json::Value;

const STRANGER: u32 = 4242;
const READER: u32 = 4343;
const ADMIN: u32 = 4444;

/// `setpriv`'s path when this test can change uid (root and util-linux present);
/// otherwise prints why the test is skipped.
fn setpriv(test: &str) -> Option<PathBuf> {
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if uid != 0 {
        eprintln!("SKIPPED {test}: needs root to run cofferctl as other uids (running as uid {uid})");
        return None;
    }
    match which("setpriv") {
        Some(path) => Some(path),
        None => {
            eprintln!("SKIPPED {test}: setpriv (util-linux) is not installed");
            None
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// Starts a daemon whose socket any uid can reach: `socket-mode = "0666"` and a
/// temporary directory others may traverse.
fn start(daemon_extra: &str, jobs: &str) -> Daemon {
    let d = Daemon::configure(&format!("socket-mode = \"0666\"\n{daemon_extra}"), jobs);
    fs::set_permissions(&d.paths.root, fs::Permissions::from_mode(0o755)).unwrap();
    d.started()
}

/// Runs `cofferctl --socket S args...` as `uid`/`gid` with no supplementary groups.
fn ctl_as(setpriv: &Path, d: &Daemon, uid: u32, gid: u32, args: &[&str]) -> Output {
    let mut cmd = Command::new(setpriv);
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(cofferctl_bin())
        .arg("--socket")
        .arg(&d.paths.socket)
        .args(args);
    for var in ["COFFER_SOCKET", "COFFER_CONFIG", "NOTIFY_SOCKET"] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    run(cmd, COMMAND_TIMEOUT)
}

/// Asserts that `out` was refused with exit 1 and the daemon's sentence.
#[track_caller]
fn assert_denied(out: Output, uid: u32, what: &str, role: &str) {
    let sentence = format!("uid {uid} may not {what}: that needs the {role} role");
    let out = out.expect_failure(1, &sentence);
    assert!(
        out.stdout.trim().is_empty(),
        "a refused call printed output: {out}"
    );
}

#[test]
fn strangers_readers_and_admins_by_uid() {
    let Some(setpriv) = setpriv("strangers_readers_and_admins_by_uid") else {
        return;
    };
    let app = App::new(true);
    let d = start(
        &format!("read-uids = [{READER}]\nadmin-uids = [{ADMIN}]"),
        &app.job("app", ""),
    );
    let id = d.backup("app")["id"].as_str().unwrap().to_owned();
    let out_dir = short_tempdir("coffer-dl-");
    fs::set_permissions(out_dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let download_to = out_dir.path().join("x.tar.zst");
    let download_to = download_to.to_str().unwrap();

    // A stranger may do nothing, not even read.
    let as_stranger = |args: &[&str]| ctl_as(&setpriv, &d, STRANGER, STRANGER, args);
    assert_denied(as_stranger(&["list"]), STRANGER, "list backups", "reader");
    assert_denied(as_stranger(&["status"]), STRANGER, "read the status", "reader");
    assert_denied(as_stranger(&["jobs"]), STRANGER, "list jobs", "reader");
    assert_denied(as_stranger(&["show", &id]), STRANGER, "show backups", "reader");
    assert_denied(as_stranger(&["metrics"]), STRANGER, "read metrics", "reader");
    assert_denied(as_stranger(&["audit"]), STRANGER, "read the audit log", "reader");
    assert_denied(as_stranger(&["backup", "app"]), STRANGER, "take backups", "admin");
    // Health too: the check cannot tell, so it is UNKNOWN, and says why.
    let health = as_stranger(&["health"]);
    assert_eq!(health.code, 3, "{health}");
    assert!(health.stdout.starts_with("COFFER UNKNOWN"), "{health}");
    assert!(
        health.stdout.contains(&format!(
            "uid {STRANGER} may not read health: that needs the reader role"
        )),
        "{health}"
    );

    // A reader may look...
    let as_reader = |args: &[&str]| ctl_as(&setpriv, &d, READER, READER, args);
    let list = as_reader(&["--json", "list"]).expect_ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    let status = as_reader(&["--json", "status"]).expect_ok().json();
    assert_eq!(status["jobs"][0]["backup-count"], 1);
    assert_eq!(
        as_reader(&["--json", "jobs"]).expect_ok().json()[0]["name"],
        "app"
    );
    assert_eq!(
        as_reader(&["--json", "show", &id]).expect_ok().json()["id"],
        id.as_str()
    );
    let metrics = as_reader(&["metrics"]).expect_ok();
    assert!(metrics.stdout.lines().any(|l| l == "coffer_up 1"), "{metrics}");
    let audit = as_reader(&["--json", "audit"]).expect_ok().json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "backup" && e["target"] == id.as_str()),
        "{audit}"
    );
    let health = as_reader(&["health"]);
    assert_eq!(health.code, 0, "{health}");
    assert!(health.stdout.starts_with("COFFER OK"), "{health}");

    // ...but not touch.
    assert_denied(as_reader(&["backup", "app"]), READER, "take backups", "admin");
    assert_denied(
        as_reader(&["delete", &id, "--yes"]),
        READER,
        "delete backups",
        "admin",
    );
    assert_denied(as_reader(&["pin", &id]), READER, "pin or unpin backups", "admin");
    assert_denied(
        as_reader(&["unpin", &id]),
        READER,
        "pin or unpin backups",
        "admin",
    );
    assert_denied(as_reader(&["prune"]), READER, "prune backups", "admin");
    assert_denied(
        as_reader(&["prune", "--dry-run"]),
        READER,
        "prune backups",
        "admin",
    );
    assert_denied(as_reader(&["verify", &id]), READER, "verify backups", "admin");
    assert_denied(
        as_reader(&["restore", &id, "--to", out_dir.path().join("r").to_str().unwrap()]),
        READER,
        "restore backups",
        "admin",
    );
    assert_denied(
        as_reader(&["download", &id, "-o", download_to]),
        READER,
        "download backups",
        "admin",
    );
    assert_denied(
        as_reader(&["export", "app", "any", "-o", download_to]),
        READER,
        "export data",
        "admin",
    );
    assert_denied(
        as_reader(&[
            "import",
            "/dev/null",
            "--job",
            "app",
            "--on-conflict",
            "skip",
            "--dry-run",
        ]),
        READER,
        "import data",
        "admin",
    );
    assert!(!Path::new(download_to).exists());
    assert!(!out_dir.path().join("r").exists());

    // Nothing the refused calls asked for happened.
    let list = d.list(None);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["protected"], false);
    assert!(d.paths.archive("app", &id).exists());

    // An admin may do everything.
    let as_admin = |args: &[&str]| ctl_as(&setpriv, &d, ADMIN, ADMIN, args);
    let second = as_admin(&["--json", "backup", "app"]).expect_ok().json();
    let second = second["id"].as_str().unwrap().to_owned();
    assert!(d.paths.archive("app", &second).exists());
    as_admin(&["pin", &id]).expect_ok();
    assert_eq!(d.ctl_json(&["show", &id])["protected"], true);
    as_admin(&["unpin", &id]).expect_ok();
    as_admin(&["verify", &second]).expect_ok();
    as_admin(&["download", &second, "-o", download_to]).expect_ok();
    assert_eq!(
        fs::metadata(download_to).unwrap().uid(),
        ADMIN,
        "the download is written by the client, as its uid"
    );
    as_admin(&["delete", &id, "--yes"]).expect_ok();
    let ids: Vec<Value> = d.list(None).iter().map(|b| b["id"].clone()).collect();
    assert_eq!(ids, [Value::from(second)]);

    // The audit log names the real uid of each admin action.
    let audit = d.ctl_json(&["audit", "--limit", "100"]);
    let by_admin: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("uid={ADMIN} pid=")))
        })
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_admin,
        ["delete", "download", "verify", "unpin", "pin", "backup"],
        "{audit}"
    );
}

/// Groups and users made for one test, removed on drop (users first).
struct Accounts {
    groups: Vec<String>,
    users: Vec<String>,
}

impl Accounts {
    fn new() -> Accounts {
        Accounts {
            groups: Vec::new(),
            users: Vec::new(),
        }
    }

    /// Adds a system group and returns its gid; `None` (with a message) if it cannot.
    fn group(&mut self, name: &str) -> Option<u32> {
        let out = Command::new("groupadd").arg(name).output();
        match out {
            Ok(out) if out.status.success() => self.groups.push(name.to_owned()),
            Ok(out) => {
                eprintln!("groupadd {name} failed: {}", String::from_utf8_lossy(&out.stderr));
                return None;
            }
            Err(e) => {
                eprintln!("cannot run groupadd: {e}");
                return None;
            }
        }
        let out = Command::new("getent").args(["group", name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)?
            .trim()
            .parse()
            .ok()
    }

    /// Adds a user with primary group `gid` and supplementary `groups`; returns its uid.
    fn user(&mut self, name: &str, gid: u32, groups: &str) -> Option<u32> {
        let out = Command::new("useradd")
            .args([
                "--no-create-home",
                "--no-user-group",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(format!("--gid={gid}"))
            .arg(format!("--groups={groups}"))
            .arg(name)
            .output();
        match out {
            Ok(out) if out.status.success() => self.users.push(name.to_owned()),
            Ok(out) => {
                eprintln!("useradd {name} failed: {}", String::from_utf8_lossy(&out.stderr));
                return None;
            }
            Err(e) => {
                eprintln!("cannot run useradd: {e}");
                return None;
            }
        }
        let out = Command::new("id").args(["-u", name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = Command::new("userdel").arg(user).output();
        }
        for group in &self.groups {
            let _ = Command::new("groupdel").arg(group).output();
        }
    }
}

#[test]
fn groups_grant_roles_as_primary_or_supplementary_group() {
    let test = "groups_grant_roles_as_primary_or_supplementary_group";
    let Some(setpriv) = setpriv(test) else {
        return;
    };
    // Unique names: tests may run concurrently on one machine.
    let tag = std::process::id();
    let (readers, admins, user) = (
        format!("coffrd{tag}"),
        format!("coffad{tag}"),
        format!("coffus{tag}"),
    );
    let mut accounts = Accounts::new();
    let (Some(read_gid), Some(admin_gid)) = (accounts.group(&readers), accounts.group(&admins)) else {
        eprintln!("SKIPPED {test}: cannot add groups");
        return;
    };
    let Some(user_uid) = accounts.user(&user, 65534, &readers) else {
        eprintln!("SKIPPED {test}: cannot add a user");
        return;
    };

    let app = App::new(true);
    let d = start(
        &format!("read-groups = [\"{readers}\"]\nadmin-groups = [\"{admins}\"]"),
        &app.job("app", ""),
    );
    let id = d.backup("app")["id"].as_str().unwrap().to_owned();
    let outsider = 4545;

    // Primary gid in read-groups: a reader.
    let list = ctl_as(&setpriv, &d, outsider, read_gid, &["--json", "list"])
        .expect_ok()
        .json();
    assert_eq!(list[0]["id"], id.as_str());
    let health = ctl_as(&setpriv, &d, outsider, read_gid, &["health"]);
    assert_eq!(health.code, 0, "{health}");
    assert_denied(
        ctl_as(&setpriv, &d, outsider, read_gid, &["backup", "app"]),
        outsider,
        "take backups",
        "admin",
    );
    // The same uid with another gid: a stranger.
    assert_denied(
        ctl_as(&setpriv, &d, outsider, outsider, &["list"]),
        outsider,
        "list backups",
        "reader",
    );

    // A user whose supplementary group (in the user database) is a read group: a
    // reader, although the process carries no supplementary groups itself.
    let list = ctl_as(&setpriv, &d, user_uid, 65534, &["--json", "list"])
        .expect_ok()
        .json();
    assert_eq!(list[0]["id"], id.as_str());
    assert_denied(
        ctl_as(&setpriv, &d, user_uid, 65534, &["delete", &id, "--yes"]),
        user_uid,
        "delete backups",
        "admin",
    );

    // Primary gid in admin-groups: an admin.
    let created = ctl_as(&setpriv, &d, outsider, admin_gid, &["--json", "backup", "app"])
        .expect_ok()
        .json();
    assert!(d.paths.archive("app", created["id"].as_str().unwrap()).exists());
    assert_eq!(d.list(None).len(), 2);
}

#[test]
fn denied_calls_are_audited() {
    let Some(setpriv) = setpriv("denied_calls_are_audited") else {
        return;
    };
    let app = App::new(true);
    let d = start(&format!("read-uids = [{READER}]"), &app.job("app", ""));
    let id = d.backup("app")["id"].as_str().unwrap().to_owned();
    assert_denied(
        ctl_as(&setpriv, &d, READER, READER, &["delete", &id, "--yes"]),
        READER,
        "delete backups",
        "admin",
    );
    assert_denied(
        ctl_as(&setpriv, &d, STRANGER, STRANGER, &["backup", "app"]),
        STRANGER,
        "take backups",
        "admin",
    );
    let audit = d.ctl_json(&["audit"]);
    let entries = audit.as_array().unwrap();
    for (uid, action) in [(READER, "delete"), (STRANGER, "backup")] {
        let entry = entries
            .iter()
            .find(|e| {
                e["actor"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("uid={uid} ")))
            })
            .unwrap_or_else(|| panic!("no audit entry for the refused {action} of uid {uid}: {audit}"));
        assert_eq!(entry["action"], action, "{entry}");
        assert_eq!(entry["result"], "failed", "{entry}");
        assert!(
            entry["error"]
                .as_str()
                .unwrap_or_default()
                .contains("needs the admin role"),
            "{entry}"
        );
    }
}
