//! The catalog is a cache of the backup directory: deleted, it is rebuilt from the
//! sidecars at start-up with the same ids, sizes, hashes and pins; leftovers of
//! interrupted runs (`.partial` archives, staging files) are swept at start-up.

use std::fs;

use coffer_tests::{App, Daemon, names_in};
use serde_json::Value;

/// The fields a rebuilt catalog must reproduce exactly.
fn essentials(list: &[Value]) -> Vec<Value> {
    list.iter()
        .map(|b| {
            serde_json::json!({
                "id": b["id"],
                "job": b["job"],
                "created-at": b["created-at"],
                "size": b["size"],
                "sha256": b["sha256"],
                "protected": b["protected"],
                "note": b["note"],
            })
        })
        .collect()
}

#[test]
fn catalog_is_rebuilt_from_the_backup_dir() {
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", ""));
    let first = d.ctl_json(&["backup", "app", "--note", "first"]);
    d.backup("app");
    let id1 = first["id"].as_str().unwrap();
    d.ctl(&["pin", id1]).expect_ok();
    let before = d.list(None);
    assert_eq!(before.len(), 2);
    assert_eq!(before[1]["protected"], true);

    let status = d.stop();
    assert!(
        status.success(),
        "cofferd exited {status} on SIGTERM; log:\n{}",
        d.log()
    );
    let catalog = d.paths.state_dir.join("catalog.db");
    assert!(catalog.exists(), "the catalog should be {}", catalog.display());
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = d.paths.state_dir.join(format!("catalog.db{suffix}"));
        if path.exists() {
            fs::remove_file(&path).unwrap();
        }
    }

    d.start_again();
    let after = d.list(None);
    assert_eq!(essentials(&after), essentials(&before));
    assert_eq!(d.ctl_json(&["show", id1])["note"], "first");

    // The rebuilt catalog is fully usable: a new backup gets a fresh id.
    let third = d.backup("app");
    let list = d.list(None);
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["id"], third["id"]);
}

#[test]
fn leftovers_of_interrupted_runs_are_swept_at_start_up() {
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", ""));
    let id = d.backup("app")["id"].as_str().unwrap().to_owned();
    let status = d.stop();
    assert!(status.success(), "cofferd exited {status} on SIGTERM");

    let partial = d.paths.backup_dir.join("app").join("x.tar.zst.partial");
    fs::write(&partial, b"half an archive").unwrap();
    fs::write(d.paths.staging.join("junk"), b"left over").unwrap();
    let run_dir = d.paths.staging.join("app-20250101T000000Z");
    fs::create_dir_all(&run_dir).unwrap();
    fs::write(run_dir.join("app.db"), b"half a snapshot").unwrap();

    d.start_again();
    assert!(!partial.exists(), "{} was not swept", partial.display());
    assert_eq!(
        names_in(&d.paths.staging),
        Vec::<String>::new(),
        "staging was not emptied"
    );
    // Finished backups are not leftovers.
    assert_eq!(
        names_in(&d.paths.backup_dir.join("app")),
        [format!("{id}.json"), format!("{id}.tar.zst")]
    );
    let list = d.list(None);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
}
