//! Offsite copies against a real S3 server (the harness's SeaweedFS, started per test),
//! looked at independently with boto3: every new backup lands in the bucket byte for
//! byte (archive, then sidecar); a store that goes away during a copy, or a cofferd
//! killed in the middle of one, never costs the local backup, leaves no multipart
//! upload behind and ends with the copy made; a new machine with only the config lists
//! the lost machine's backups in the store and restores one in place; two hosts share
//! a bucket without touching each other's objects; retention runs per location (and
//! never deletes a locked object); a copy changed behind cofferd's back is reported by
//! `verify --store`; wrong credentials, an endpoint that does not answer and a missing
//! bucket are one sentence each and never hold up a backup. Credentials never appear
//! in the log, the audit log or cofferctl's output.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_tests::servers::S3Server;
use coffer_tests::{
    App, Daemon, Output, Rng, assert_same_db, assert_tree_eq, require, short_tempdir, toml_str, wait_until,
};
use serde_json::Value;

use crate::restore::{assert_error_sentence, backup_id, save_app, str_of};

/// How long a test waits for a background copy.
const COPY_TIMEOUT: Duration = Duration::from_secs(90);

/// A `[[store]]` named `name` on `s3` (its plain bucket unless `extra` says otherwise),
/// with quick retries so failing tests fail fast.
fn store_toml(s3: &S3Server, name: &str, credentials: &Path, extra: &str) -> String {
    let has = |key: &str| extra.lines().any(|l| l.trim_start().starts_with(key));
    let mut text = format!("[[store]]\nname = {}\nkind = \"s3\"\n", toml_str(name));
    for (key, value) in [
        ("endpoint", toml_str(&s3.endpoint())),
        ("bucket", toml_str(s3.bucket())),
        ("credentials-file", toml_str(&credentials.display().to_string())),
        ("retries", "1".to_owned()),
        ("copy-retry", "\"1s\"".to_owned()),
    ] {
        if !has(key) {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text.push_str(extra);
    text.push('\n');
    text
}

/// The server's credentials in a file (mode 0600) in `dir`.
fn credentials(s3: &S3Server, dir: &Path) -> PathBuf {
    let path = dir.join("offsite.credentials");
    s3.write_credentials_file(&path);
    path
}

/// `[job.offsite]` lines copying to `stores` (goes last in a job's extra lines).
fn offsite(stores: &[&str]) -> String {
    let names: Vec<String> = stores.iter().map(|s| toml_str(s)).collect();
    format!("[job.offsite]\nstores = [{}]\n", names.join(", "))
}

/// The location of `show --json`'s backup in `store`.
fn location(shown: &Value, store: &str) -> Option<Value> {
    shown["locations"]
        .as_array()?
        .iter()
        .find(|l| l["store"] == store)
        .cloned()
}

/// Waits until backup `id` is in `store` in state `state`; returns the location.
#[track_caller]
fn wait_location(d: &Daemon, id: &str, store: &str, state: &str) -> Value {
    let mut found = Value::Null;
    wait_until(&format!("{id} is {state} in {store}"), COPY_TIMEOUT, || {
        let out = d.ctl(&["--json", "show", id]);
        if !out.success() {
            return false;
        }
        found = location(&out.json(), store).unwrap_or(Value::Null);
        found["state"] == state
    });
    found
}

/// The keys under `prefix` in the bucket, as boto3 lists them.
fn keys(s3: &S3Server, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = s3
        .client()
        .list_objects(bucket, prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    keys
}

/// `ids` of the JSON array `list`.
fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|b| str_of(b, "id").to_owned())
        .collect()
}

/// Adds an incompressible file of `mib` MiB to the app's media, so that a copy takes
/// long enough to be interrupted.
fn add_big_file(app: &App, mib: usize) {
    let mut rng = Rng::new(42);
    fs::write(app.media.join("big.bin"), rng.bytes(mib << 20)).unwrap();
}

/// The machine is lost: the daemon stops and its state dir, backup dir and the app's
/// data (database with its WAL files, media) are gone.
fn lose_the_machine(mut lost: Daemon, app: &App) {
    lost.stop();
    fs::remove_dir_all(&lost.paths.state_dir).unwrap();
    fs::remove_dir_all(&lost.paths.backup_dir).unwrap();
    fs::remove_file(&app.db).unwrap();
    let _ = fs::remove_file(app.db.with_extension("db-wal"));
    let _ = fs::remove_file(app.db.with_extension("db-shm"));
    fs::remove_dir_all(&app.media).unwrap();
}

/// Asserts that none of `secrets` appears in the daemon's log, its audit log or `outputs`.
#[track_caller]
fn assert_no_secrets(d: &Daemon, s3: &S3Server, outputs: &[&Output]) {
    let audit = d.ctl(&["--json", "audit", "--limit", "1000"]).expect_ok().stdout;
    let mut texts = vec![d.log(), audit];
    texts.extend(outputs.iter().map(|o| format!("{}{}", o.stdout, o.stderr)));
    for text in &texts {
        assert!(!text.contains(s3.secret_key()), "the secret key leaked: {text}");
        assert!(
            !text.contains(s3.access_key()),
            "the access key id leaked: {text}"
        );
    }
}

#[test]
fn copy_after_backup_puts_byte_equal_objects_and_reports_them() {
    let s3 = require!(S3Server::start("offsite_copy"));
    let app = App::new(true);
    let creds = credentials(&s3, app.dir.path());
    let d = Daemon::start(
        "host-name = \"web1\"",
        &format!(
            "{}{}",
            store_toml(&s3, "s3", &creds, ""),
            app.job("app", &offsite(&["s3"]))
        ),
    );
    let id = backup_id(&d, "app");
    let copied = wait_location(&d, &id, "s3", "copied");
    assert!(copied["verified-at"].is_string(), "{copied}");

    // boto3, independently: both objects, byte for byte the local files.
    let prefix = "coffer/web1/app/";
    let archive_key = format!("{prefix}{id}.tar.zst");
    let sidecar_key = format!("{prefix}{id}.json");
    assert_eq!(
        keys(&s3, s3.bucket(), "coffer/"),
        [sidecar_key.clone(), archive_key.clone()]
    );
    let c = s3.client();
    assert_eq!(
        c.get_object(s3.bucket(), &archive_key).unwrap(),
        fs::read(d.paths.archive("app", &id)).unwrap()
    );
    assert_eq!(
        c.get_object(s3.bucket(), &sidecar_key).unwrap(),
        fs::read(d.paths.sidecar("app", &id)).unwrap()
    );
    assert!(c.list_multipart_uploads(s3.bucket()).unwrap().is_empty());
    assert_eq!(copied["size"], d.list(None)[0]["size"]);

    // list, show, list --store, stores, status, metrics, audit say so.
    let listed = d.list(None);
    assert_eq!(location(&listed[0], "s3").unwrap()["state"], "copied");
    let text = d.ctl(&["list"]).expect_ok();
    assert!(text.stdout.contains("OFFSITE"), "{text}");
    assert!(
        text.stdout
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .any(|w| w == "s3"),
        "{text}"
    );
    let shown = d.ctl(&["show", &id]).expect_ok();
    assert!(
        shown.stdout.contains("in s3:") && shown.stdout.contains("copied "),
        "{shown}"
    );
    let in_store = d.ctl_json(&["list", "--store", "s3"]);
    assert_eq!(ids(&in_store), std::slice::from_ref(&id));
    assert_eq!(in_store[0]["host"], "web1");
    assert_eq!(in_store[0]["local"], true);
    assert_eq!(in_store[0]["size"], copied["size"]);
    let stores = d.ctl_json(&["stores"]);
    let s = &stores[0];
    assert_eq!(
        (s["name"].as_str(), s["reachable"].as_bool()),
        (Some("s3"), Some(true)),
        "{s}"
    );
    assert_eq!(
        (s["objects"].as_u64(), s["lag-seconds"].as_i64()),
        (Some(2), Some(0)),
        "{s}"
    );
    assert_eq!(s["newest"]["id"], id.as_str());
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["stores"][0]["state"], "ok", "{status}");
    assert_eq!(status["jobs"][0]["warnings"], serde_json::json!([]));
    let metrics = d.ctl(&["metrics"]).expect_ok().stdout;
    assert!(
        metrics.contains("coffer_offsite_lag_seconds{job=\"app\",store=\"s3\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("coffer_offsite_copy_failures_total{job=\"app\",store=\"s3\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("coffer_offsite_copied_bytes_total{job=\"app\",store=\"s3\"} 0\n"),
        "{metrics}"
    );
    let audit = d.ctl_json(&["audit"]);
    let copy = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "copy")
        .unwrap_or_else(|| panic!("no copy in the audit log: {audit}"));
    assert_eq!(
        (copy["actor"].as_str(), copy["result"].as_str()),
        (Some("offsite"), Some("ok"))
    );
    assert_eq!(copy["target"], format!("{id} to s3"));

    // Asked again, the copy is read back and found good, not uploaded again.
    let again = d.ctl_json(&["copy", &id, "--store", "s3"]);
    assert_eq!(again["already"], true, "{again}");
    assert_eq!(keys(&s3, s3.bucket(), "coffer/").len(), 2);
    let verified = d.ctl_json(&["verify", &id, "--store", "s3", "--deep"]);
    assert_eq!(
        (verified["ok"].as_bool(), verified["store"].as_str()),
        (Some(true), Some("s3"))
    );

    let outputs = [&text, &shown];
    assert_no_secrets(&d, &s3, &outputs);
}

#[test]
fn server_down_during_a_copy_then_retried_without_orphans() {
    let mut s3 = require!(S3Server::start("offsite_down"));
    let app = App::new(true);
    add_big_file(&app, 64);
    let creds = credentials(&s3, app.dir.path());
    let job = app.job("app", &format!("{}stale-after = \"1s\"\n", offsite(&["s3"])));
    let d = Daemon::start(
        "host-name = \"web1\"",
        &format!("{}{job}", store_toml(&s3, "s3", &creds, "")),
    );
    let id = backup_id(&d, "app");
    // The backup is done and local; the copy runs in the background. Take the server
    // away while its multipart upload is under way.
    let c = s3.client();
    wait_until("the copy's multipart upload started", COPY_TIMEOUT, || {
        !c.list_multipart_uploads(s3.bucket()).unwrap().is_empty()
    });
    s3.kill9();
    let failed = wait_location(&d, &id, "s3", "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.starts_with("cannot reach the store 's3' at http://127.0.0.1:")
            || error.starts_with("the store 's3' failed to upload"),
        "{failed}"
    );
    assert!(!error.contains('\n'), "{error}");
    d.ctl_json(&["verify", &id]);
    // Not offsite after the offsite stale-after: a WARNING, not a CRITICAL.
    std::thread::sleep(Duration::from_millis(1100));
    let health = d.ctl(&["health", "app"]);
    assert_eq!(health.code, 1, "{health}");
    assert!(health.stdout.contains("not in the store 's3'"), "{health}");
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["stores"][0]["state"], "failing", "{status}");

    s3.start_again();
    wait_location(&d, &id, "s3", "copied");
    assert!(
        c.list_multipart_uploads(s3.bucket()).unwrap().is_empty(),
        "an orphan upload is left"
    );
    let archive_key = format!("coffer/web1/app/{id}.tar.zst");
    let back = app.dir.path().join("back.tar.zst");
    c.get_object_to_file(s3.bucket(), &archive_key, &back).unwrap();
    assert_eq!(
        fs::read(&back).unwrap(),
        fs::read(d.paths.archive("app", &id)).unwrap()
    );
    assert_eq!(d.ctl(&["health", "app"]).code, 0);
    let metrics = d.ctl(&["metrics"]).expect_ok().stdout;
    assert!(
        !metrics.contains("coffer_offsite_copy_failures_total{job=\"app\",store=\"s3\"} 0\n"),
        "{metrics}"
    );
    assert_no_secrets(&d, &s3, &[&health]);
}

#[test]
fn kill9_mid_copy_then_the_restart_completes_it() {
    let s3 = require!(S3Server::start("offsite_kill9"));
    let app = App::new(true);
    add_big_file(&app, 64);
    let creds = credentials(&s3, app.dir.path());
    let mut d = Daemon::start(
        "host-name = \"web1\"",
        &format!(
            "{}{}",
            store_toml(&s3, "s3", &creds, ""),
            app.job("app", &offsite(&["s3"]))
        ),
    );
    let id = backup_id(&d, "app");
    let c = s3.client();
    wait_until("the copy's multipart upload started", COPY_TIMEOUT, || {
        !c.list_multipart_uploads(s3.bucket()).unwrap().is_empty()
    });
    // While it is under way, nothing is offsite.
    assert_eq!(d.ctl_json(&["list", "--store", "s3"]), serde_json::json!([]));
    d.kill();
    assert!(
        !keys(&s3, s3.bucket(), "coffer/")
            .iter()
            .any(|k| k.ends_with(".json")),
        "no sidecar may be in the store"
    );
    d.start_again();
    wait_location(&d, &id, "s3", "copied");
    assert!(
        c.list_multipart_uploads(s3.bucket()).unwrap().is_empty(),
        "the killed upload is left behind"
    );
    assert_eq!(
        ids(&d.ctl_json(&["list", "--store", "s3"])),
        std::slice::from_ref(&id)
    );
    let archive_key = format!("coffer/web1/app/{id}.tar.zst");
    let back = app.dir.path().join("back.tar.zst");
    c.get_object_to_file(s3.bucket(), &archive_key, &back).unwrap();
    assert_eq!(
        fs::read(&back).unwrap(),
        fs::read(d.paths.archive("app", &id)).unwrap()
    );
}

#[test]
fn disaster_recovery_from_the_store_restores_the_app_in_place() {
    let s3 = require!(S3Server::start("offsite_dr"));
    let app = App::new(true);
    let config_dir = short_tempdir("coffer-dr-");
    let creds = credentials(&s3, config_dir.path());
    let jobs = format!(
        "{}{}",
        store_toml(&s3, "s3", &creds, ""),
        app.job("app", &offsite(&["s3"]))
    );
    let lost = Daemon::start("host-name = \"lost\"", &jobs);
    let id = backup_id(&lost, "app");
    wait_location(&lost, &id, "s3", "copied");
    let saved = save_app(&app);
    lose_the_machine(lost, &app);

    // A new machine with the same config and an empty state dir.
    let d = Daemon::start("host-name = \"lost\"", &jobs);
    assert!(d.list(None).is_empty());
    let in_store = d.ctl_json(&["list", "--store", "s3"]);
    assert_eq!(ids(&in_store), std::slice::from_ref(&id));
    assert_eq!(
        (in_store[0]["host"].as_str(), in_store[0]["local"].as_bool()),
        (Some("lost"), Some(false))
    );
    let out = d.ctl(&["restore", &id, "--yes"]).expect_ok();
    assert!(out.stderr.contains("fetch"), "the restore shows the fetch: {out}");
    assert_same_db(&app.db, &saved.db);
    assert_tree_eq(&app.media, &saved.media);
    // The fetched backup is local again and verified; the store still has it.
    let shown = d.ctl_json(&["show", &id]);
    assert_eq!(shown["verify-result"], "ok");
    assert_eq!(location(&shown, "s3").unwrap()["state"], "copied", "{shown}");
    let runs = d.ctl_json(&["audit"]);
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "restore" && e["result"] == "ok")
    );
}

#[test]
fn two_hosts_share_a_bucket_without_touching_each_other() {
    let s3 = require!(S3Server::start("offsite_fleet"));
    let (app1, app2) = (App::new(true), App::new(false));
    let creds = credentials(&s3, app1.dir.path());
    let store = store_toml(&s3, "s3", &creds, "");
    // h1 keeps one copy in the store; h2 keeps everything (its job has no retention).
    let h1 = Daemon::start(
        "host-name = \"h1\"",
        &format!(
            "{store}{}",
            app1.job(
                "app",
                &format!("{}[job.offsite.retention]\nkeep-last = 1\n", offsite(&["s3"]))
            )
        ),
    );
    let h2 = Daemon::start(
        "host-name = \"h2\"",
        &format!("{store}{}", app2.job("app", &offsite(&["s3"]))),
    );
    let mut all = Vec::new();
    for d in [&h1, &h2] {
        for _ in 0..2 {
            let id = backup_id(d, "app");
            wait_location(d, &id, "s3", "copied");
            all.push(id);
        }
    }
    // h1's retention removed its older copy; h2's objects are all there.
    wait_until("h1's retention ran", COPY_TIMEOUT, || {
        keys(&s3, s3.bucket(), "coffer/h1/").len() == 2
    });
    assert_eq!(keys(&s3, s3.bucket(), "coffer/h2/").len(), 4);
    let fleet = h1.ctl_json(&["list", "--store", "s3", "--all-hosts"]);
    let seen: Vec<(String, String, bool)> = fleet
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                str_of(b, "host").to_owned(),
                str_of(b, "id").to_owned(),
                b["local"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("h1".to_owned(), all[1].clone(), true),
            ("h2".to_owned(), all[3].clone(), false),
            ("h2".to_owned(), all[2].clone(), false),
        ]
    );
    let text = h2.ctl(&["list", "--store", "s3", "--all-hosts"]).expect_ok();
    assert!(
        text.stdout.contains("HOST") && text.stdout.contains("h1"),
        "{text}"
    );
    // Without --all-hosts, each sees its own.
    assert_eq!(
        ids(&h2.ctl_json(&["list", "--store", "s3"])),
        [all[3].clone(), all[2].clone()]
    );
    // A prune on h2 touches nothing of h1.
    h2.ctl_json(&["prune"]);
    assert_eq!(keys(&s3, s3.bucket(), "coffer/h1/").len(), 2);
}

#[test]
fn retention_runs_per_location_and_pins_hold_everywhere() {
    let s3 = require!(S3Server::start("offsite_retention"));
    let app = App::new(true);
    let creds = credentials(&s3, app.dir.path());
    // a: local keeps 1, the store 2; b: local keeps 2, the store 1.
    let policy = |local: u32, remote: u32| {
        format!(
            "[job.retention]\nkeep-last = {local}\n{}[job.offsite.retention]\nkeep-last = {remote}\n",
            offsite(&["s3"])
        )
    };
    let d = Daemon::start(
        "host-name = \"h\"",
        &format!(
            "{}{}{}",
            store_toml(&s3, "s3", &creds, ""),
            app.job("a", &policy(1, 2)),
            app.job("b", &policy(2, 1))
        ),
    );
    let mut made = std::collections::BTreeMap::new();
    for job in ["a", "b"] {
        let mut ids = Vec::new();
        for n in 0..3 {
            let id = backup_id(&d, job);
            if n == 0 {
                d.ctl_json(&["pin", &id]);
            }
            wait_location(&d, &id, "s3", "copied");
            ids.push(id);
        }
        made.insert(job, ids);
    }
    let local = |job: &str| ids(&serde_json::Value::Array(d.list(Some(job))));
    let remote = |job: &str| ids(&d.ctl_json(&["list", job, "--store", "s3"]));
    let (a, b) = (&made["a"], &made["b"]);
    wait_until("the stores' retention ran", COPY_TIMEOUT, || {
        remote("b").len() == 2
    });
    // a: the middle backup is gone locally but still in the store; the pin holds.
    assert_eq!(local("a"), [a[2].clone(), a[0].clone()]);
    assert_eq!(remote("a"), [a[2].clone(), a[1].clone(), a[0].clone()]);
    // b: the middle copy is gone from the store, the local backup is not.
    assert_eq!(local("b"), [b[2].clone(), b[1].clone(), b[0].clone()]);
    assert_eq!(remote("b"), [b[2].clone(), b[0].clone()]);
    assert!(
        d.paths.archive("b", &b[1]).exists(),
        "remote retention touched the local backup"
    );
    let audit = d.ctl_json(&["audit", "--limit", "200"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "remote-delete" && e["target"] == format!("{} in s3", b[1])),
        "{audit}"
    );
    // A prune shows both locations.
    let pruned = d.ctl_json(&["prune", "--dry-run"]);
    let locations: std::collections::BTreeSet<&str> = pruned["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["location"].as_str().unwrap())
        .collect();
    assert_eq!(locations.into_iter().collect::<Vec<_>>(), ["local", "s3"]);
    // Deleting locally leaves the copy; fetching brings it back, verified.
    d.ctl(&["delete", &a[2], "--yes"]).expect_ok();
    assert_eq!(remote("a").len(), 3);
    let fetched = d.ctl_json(&["fetch", &a[1], "--store", "s3"]);
    assert_eq!(str_of(&fetched, "id"), a[1]);
    let shown = d.ctl_json(&["show", &a[1]]);
    assert_eq!(shown["verify-result"], "ok");
    let archive = d.paths.archive("a", &a[1]);
    let key = format!("coffer/h/a/{}.tar.zst", a[1]);
    assert_eq!(
        s3.client().get_object(s3.bucket(), &key).unwrap(),
        fs::read(archive).unwrap()
    );
}

#[test]
fn object_lock_keeps_copies_until_their_date() {
    let s3 = require!(S3Server::start("offsite_lock"));
    let app = App::new(true);
    let creds = credentials(&s3, app.dir.path());
    let store = store_toml(
        &s3,
        "vault",
        &creds,
        &format!("bucket = {}\nobject-lock-days = 1", toml_str(s3.locked_bucket())),
    );
    let job = app.job(
        "app",
        &format!("{}[job.offsite.retention]\nkeep-last = 1\n", offsite(&["vault"])),
    );
    let d = Daemon::start("host-name = \"h\"", &format!("{store}{job}"));
    let first = backup_id(&d, "app");
    let copied = wait_location(&d, &first, "vault", "copied");
    assert!(copied["retain-until"].is_string(), "{copied}");
    let second = backup_id(&d, "app");
    wait_location(&d, &second, "vault", "copied");
    let head = s3
        .client()
        .head_object(s3.locked_bucket(), &format!("coffer/h/app/{first}.tar.zst"), None)
        .unwrap();
    assert_eq!(head.lock_mode.as_deref(), Some("GOVERNANCE"));
    // keep-last 1 would remove the first copy, but it is locked for a day.
    let pruned = d.ctl_json(&["prune"]);
    let decision = pruned["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["location"] == "vault" && p["id"] == first.as_str())
        .cloned()
        .unwrap();
    assert_eq!(decision["keep"], true, "{decision}");
    assert!(
        decision["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("locked until "),
        "{decision}"
    );
    assert_eq!(ids(&d.ctl_json(&["list", "--store", "vault"])), [second, first]);
}

#[test]
fn a_copy_changed_behind_cofferds_back_is_reported() {
    let s3 = require!(S3Server::start("offsite_tamper"));
    let app = App::new(true);
    let creds = credentials(&s3, app.dir.path());
    let d = Daemon::start(
        "host-name = \"h\"",
        &format!(
            "{}{}",
            store_toml(&s3, "s3", &creds, ""),
            app.job("app", &offsite(&["s3"]))
        ),
    );
    let id = backup_id(&d, "app");
    wait_location(&d, &id, "s3", "copied");
    d.ctl_json(&["verify", &id, "--store", "s3"]);
    // The same size, other bytes: only the ETag (and a deep read) can tell.
    let key = format!("coffer/h/app/{id}.tar.zst");
    let mut bytes = fs::read(d.paths.archive("app", &id)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    s3.client().put_object(s3.bucket(), &key, &bytes).unwrap();
    let out = d.ctl(&["verify", &id, "--store", "s3"]);
    assert_error_sentence(
        &out,
        1,
        &format!("the copy of backup {id} in the store 's3' changed after it was copied"),
    );
    let out = d.ctl(&["verify", &id, "--store", "s3", "--deep"]);
    assert_error_sentence(&out, 1, &format!("backup {id} in the store 's3'"));
    let shown = d.ctl_json(&["show", &id]);
    let verdict = location(&shown, "s3").unwrap()["verify-result"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        verdict.contains("failed verification") || verdict.contains("changed"),
        "{verdict}"
    );
    // A different size is caught too; the local backup is untouched by all this.
    s3.client().put_object(s3.bucket(), &key, b"tampered").unwrap();
    let out = d.ctl(&["verify", &id, "--store", "s3"]);
    assert_error_sentence(&out, 1, "bytes, but its sidecar says");
    d.ctl_json(&["verify", &id, "--deep"]);
}

#[test]
fn store_errors_are_one_sentence_and_never_block_a_backup() {
    let s3 = require!(S3Server::start("offsite_errors"));
    let app = App::new(true);
    let dir = app.dir.path();
    let wrong = dir.join("wrong.credentials");
    fs::write(
        &wrong,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = not-the-secret\n",
            s3.access_key()
        ),
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let creds = credentials(&s3, dir);
    let missing = dir.join("missing.credentials");
    let stores = [
        store_toml(&s3, "badkey", &wrong, ""),
        store_toml(
            &s3,
            "down",
            &creds,
            &format!("endpoint = \"http://127.0.0.1:{closed}\""),
        ),
        store_toml(&s3, "nobucket", &creds, "bucket = \"no-such-bucket\""),
        store_toml(&s3, "nocreds", &missing, ""),
    ]
    .concat();
    let job = app.job("app", &offsite(&["badkey", "down", "nobucket", "nocreds"]));
    let d = Daemon::start("host-name = \"h\"", &format!("{stores}{job}"));
    let started = std::time::Instant::now();
    let id = backup_id(&d, "app");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the backup waited for the stores"
    );
    let expected = [
        (
            "badkey",
            "the store 'badkey' rejected the credentials (check credentials-file ".to_owned(),
        ),
        (
            "down",
            format!("cannot reach the store 'down' at http://127.0.0.1:{closed}: connection refused"),
        ),
        (
            "nobucket",
            format!(
                "bucket 'no-such-bucket' does not exist at {} (store 'nobucket')",
                s3.endpoint()
            ),
        ),
        (
            "nocreds",
            format!("cannot read the credentials file {}", missing.display()),
        ),
    ];
    let mut outputs = Vec::new();
    for (store, sentence) in &expected {
        let failed = wait_location(&d, &id, store, "failed");
        let error = failed["error"].as_str().unwrap();
        assert!(error.starts_with(sentence.as_str()), "{store}: {error}");
        assert!(!error.contains('\n'), "{error}");
        let out = d.ctl(&["copy", &id, "--store", store]);
        assert_error_sentence(&out, 1, sentence);
        outputs.push(out);
    }
    d.ctl_json(&["verify", &id]);
    let stores = d.ctl_json(&["stores"]);
    for s in stores.as_array().unwrap() {
        assert_eq!(s["reachable"], false, "{s}");
        assert!(!s["error"].as_str().unwrap().is_empty(), "{s}");
    }
    let status = d.ctl_json(&["status"]);
    let states: Vec<&str> = status["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failing", "failing", "failing", "unusable"]);
    // An unknown store is a config error naming the job.
    let bad = short_tempdir("coffer-badcfg-");
    let config = bad.path().join("cofferd.toml");
    fs::write(&config, app.job("app", &offsite(&["elsewhere"]))).unwrap();
    let out = coffer_tests::run(
        {
            let mut cmd = coffer_tests::cofferd_command();
            cmd.arg("--config").arg(&config).arg("--check-config");
            cmd
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("job 'app' names the store 'elsewhere'"),
        "{out}"
    );
    let refs: Vec<&Output> = outputs.iter().collect();
    assert_no_secrets(&d, &s3, &refs);
}

#[test]
fn a_store_that_never_answers_holds_up_neither_backups_nor_shutdown() {
    let app = App::new(true);
    // No S3 server is needed: nothing ever answers.
    let creds = app.dir.path().join("offsite.credentials");
    fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIDTARPIT\naws_secret_access_key = s\n",
    )
    .unwrap();
    // Accepts connections and never answers (a firewall that drops, a hung proxy).
    let tarpit = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tarpit.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in tarpit.incoming().flatten() {
            held.push(stream);
        }
    });
    let store = format!(
        "[[store]]\nname = \"s3\"\nendpoint = \"http://127.0.0.1:{port}\"\nbucket = \"tarpit\"\ncredentials-file = {}\n",
        toml_str(&creds.display().to_string())
    );
    let mut d = Daemon::start(
        "host-name = \"h\"",
        &format!("{store}{}", app.job("app", &offsite(&["s3"]))),
    );
    let started = std::time::Instant::now();
    let id = backup_id(&d, "app");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the backup waited for the store"
    );
    let shown = d.ctl_json(&["show", &id]);
    assert_eq!(location(&shown, "s3").unwrap()["state"], "pending", "{shown}");
    // The copier is stuck in a request that will not end for minutes; SIGTERM still
    // stops cofferd promptly (shutdown-grace is 5 s here), and cleanly.
    let stopping = std::time::Instant::now();
    let status = d.stop();
    assert!(status.success(), "cofferd exited {status}; log:\n{}", d.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

#[test]
fn an_encrypted_backup_leaves_only_a_redacted_sidecar_and_still_recovers() {
    let s3 = require!(S3Server::start("offsite_encrypted"));
    let app = App::new(true);
    let config_dir = short_tempdir("coffer-enc-dr-");
    let (identity, recipient) = require!(coffer_tests::servers::age_keygen(config_dir.path()));
    let creds = credentials(&s3, config_dir.path());
    let encryption = format!(
        "[job.encryption]\nrecipients = [{}]\nidentity-file = {}\n",
        toml_str(&recipient),
        toml_str(&identity.display().to_string())
    );
    let jobs = format!(
        "{}{}",
        store_toml(&s3, "s3", &creds, ""),
        app.job("app", &format!("{encryption}{}", offsite(&["s3"])))
    );
    let lost = Daemon::start("host-name = \"lost\"", &jobs);
    let id = backup_id(&lost, "app");
    wait_location(&lost, &id, "s3", "copied");

    // What left the machine in clear: no file names, paths or database facts.
    let sidecar_key = format!("coffer/lost/app/{id}.json");
    let archive_key = format!("coffer/lost/app/{id}.tar.zst.age");
    assert_eq!(
        keys(&s3, s3.bucket(), "coffer/"),
        [sidecar_key.clone(), archive_key]
    );
    let remote = String::from_utf8(s3.client().get_object(s3.bucket(), &sidecar_key).unwrap()).unwrap();
    let parsed: Value = serde_json::from_str(&remote).unwrap();
    assert_eq!(parsed["redacted"], true, "{remote}");
    for secret in [
        "app.db",
        "file.bin",
        "straße",
        "entries",
        "source",
        &app.db.display().to_string(),
    ] {
        assert!(
            !remote.contains(secret),
            "the remote sidecar names {secret:?}: {remote}"
        );
    }

    // The machine is lost; a new one with the same config (and the identity) recovers.
    let saved = save_app(&app);
    lose_the_machine(lost, &app);
    let d = Daemon::start("host-name = \"lost\"", &jobs);
    d.ctl(&["verify", &id, "--store", "s3", "--deep"]).expect_ok();
    d.ctl(&["restore", &id, "--yes"]).expect_ok();
    assert_same_db(&app.db, &saved.db);
    assert_tree_eq(&app.media, &saved.media);
    // The fetched backup has its full sidecar again (recovered from the archive).
    let shown = d.ctl_json(&["show", &id]);
    assert_eq!(shown["verify-result"], "ok", "{shown}");
    assert!(shown["totals"]["files"].as_u64().unwrap() > 1, "{shown}");
}
