//! Encryption at rest: archives of a job with `[job.encryption]` are `.tar.zst.age`,
//! checked against the real tools only — `age-keygen`/`ssh-keygen` make the keys,
//! `age -d` decrypts, the `tar` and `zstd` crates (or `tar --zstd`) unpack — never
//! against Coffer's own reader.
//!
//! - a backup decrypts with an age key and with an SSH ed25519 key into a tar equal to
//!   the source, and `age -d -i KEY FILE | tar --zstd -x` restores it by hand; while
//!   it runs and after, no file in staging or the backup dir holds plaintext of a
//!   marker row or a media file (bytes scanned; the same scan finds them in the
//!   decrypted stream, so it would notice);
//! - deep verify and an in-place restore work with the identity; without it they are
//!   refused in one sentence saying how to provide one, and nothing changes, while
//!   shallow verification checks the ciphertext; a flipped ciphertext byte is caught;
//! - `rekey` to a new recipient: the old key no longer decrypts, the new one does;
//! - kill -9 during an encrypted backup and during a rekey: no partial, no loss.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coffer_tests::servers::{age_decrypt, age_keygen, ssh_ed25519_keygen};
use coffer_tests::{
    App, Daemon, Rng, assert_same_db, assert_tree_eq, extract_archive, partial_files, require, short_tempdir,
    toml_str, wait_timeout, wait_until,
};
use rusqlite::Connection;
use serde_json::Value;

use super::restore::{
    LiveState, assert_error_sentence, assert_no_restore_leftovers, change_db, save_app, str_of,
};

/// A random marker: incompressible, so it would stand verbatim in a plain `.tar.zst`
/// (zstd stores random bytes raw) and in any page or file copy.
struct Markers {
    /// In a row of the database.
    row: Vec<u8>,
    /// In a media file.
    media: Vec<u8>,
}

impl Markers {
    /// 64-byte windows to look for.
    fn needles(&self) -> [&[u8]; 2] {
        [
            &self.row[3000..3064],
            &self.media[(1 << 20) + 77..(1 << 20) + 141],
        ]
    }
}

/// An app (rollback journal unless `wal`) with a marker row and a marker media file,
/// and `extra_mib` MiB of incompressible rows and media so that a backup takes long
/// enough to be watched (or interrupted).
fn app_with_markers(wal: bool, extra_mib: usize) -> (App, Markers) {
    let app = App::new(wal);
    let mut rng = Rng::new(0x5EED_A6E0);
    let markers = Markers {
        row: rng.bytes(8192),
        media: rng.bytes(2 << 20),
    };
    let conn = Connection::open(&app.db).unwrap();
    conn.execute(
        "INSERT INTO blobs(name, data) VALUES ('marker', ?1)",
        [&markers.row],
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..extra_mib * 2 {
        tx.execute(
            "INSERT INTO blobs(name, data) VALUES ('filler', ?1)",
            [rng.bytes(256 << 10)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(conn);
    fs::write(app.media.join("marker.bin"), &markers.media).unwrap();
    for i in 0..extra_mib / 2 {
        fs::write(app.media.join(format!("filler-{i}.bin")), rng.bytes(1 << 20)).unwrap();
    }
    (app, markers)
}

/// The `[job.encryption]` table.
fn encryption(recipients: &[&str], identity: Option<&Path>) -> String {
    let list: Vec<String> = recipients.iter().map(|r| toml_str(r)).collect();
    let mut text = format!("[job.encryption]\nrecipients = [{}]\n", list.join(", "));
    if let Some(path) = identity {
        text.push_str(&format!(
            "identity-file = {}\n",
            toml_str(&path.display().to_string())
        ));
    }
    text
}

/// Replaces the jobs of a stopped daemon's config.
fn set_jobs(d: &Daemon, jobs: &str) {
    let text = fs::read_to_string(&d.paths.config).unwrap();
    let daemon_part = text.split("[[job]]").next().unwrap().to_owned();
    fs::write(&d.paths.config, daemon_part + jobs).unwrap();
}

/// Restarts the daemon on new jobs.
fn reconfigure(d: &mut Daemon, jobs: &str) {
    d.stop();
    set_jobs(d, jobs);
    d.start_again();
}

/// A file holding the secret keys of all `keys` (mode 0600).
fn identity_file(dir: &Path, keys: &[&Path]) -> PathBuf {
    let path = dir.join(format!("identities-{}.txt", keys.len()));
    let text: String = keys
        .iter()
        .map(|k| fs::read_to_string(k).unwrap() + "\n")
        .collect();
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Every file under `dirs` whose bytes contain one of `needles`; files that vanish
/// while being looked at (a run finishing) are skipped.
fn files_with_plaintext(dirs: &[&Path], needles: &[&[u8]]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() => {
                    let mut bytes = Vec::new();
                    if fs::File::open(&path)
                        .and_then(|mut f| f.read_to_end(&mut bytes))
                        .is_ok()
                        && needles.iter().any(|n| memchr::memmem::find(&bytes, n).is_some())
                    {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// What sampling the disk during a run saw.
#[derive(Default)]
struct Sampled {
    rounds: usize,
    /// Rounds that saw a `.partial` (the archive being written).
    with_partial: usize,
    /// Rounds that saw a file in staging.
    with_staging_file: usize,
    plaintext: Vec<PathBuf>,
}

/// Runs `run` while another thread scans the backup and staging directories for
/// `needles` over and over.
fn sampling(d: &Daemon, needles: &[&[u8]], run: impl FnOnce()) -> Sampled {
    let stop = Arc::new(AtomicBool::new(false));
    let (backups, staging) = (d.paths.backup_dir.clone(), d.paths.staging.clone());
    let needles: Vec<Vec<u8>> = needles.iter().map(|n| n.to_vec()).collect();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let needles: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
            let mut seen = Sampled::default();
            while !stop.load(Ordering::Relaxed) {
                seen.rounds += 1;
                if !partial_files(&backups).is_empty() {
                    seen.with_partial += 1;
                }
                if !coffer_tests::files_under(&staging).is_empty() {
                    seen.with_staging_file += 1;
                }
                seen.plaintext
                    .extend(files_with_plaintext(&[&backups, &staging], &needles));
            }
            seen
        })
    };
    run();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap()
}

/// Decrypts `archive` with `age -d -i identity` into `out` (a `.tar.zst`).
fn decrypt(identity: &Path, archive: &Path, out: &Path) {
    if let Err(e) = age_decrypt(identity, archive, out) {
        panic!(
            "age -d -i {} {} failed: {e}",
            identity.display(),
            archive.display()
        );
    }
}

/// The archive of backup `b` (its `path` in `list --json`).
fn archive_of(b: &Value) -> PathBuf {
    PathBuf::from(str_of(b, "path"))
}

#[test]
fn an_encrypted_backup_decrypts_with_age_and_ssh_keys_and_never_holds_plaintext() {
    let keys = short_tempdir("coffer-keys-");
    let (age_key, age_recipient) = require!(age_keygen(keys.path()));
    let (ssh_key, ssh_recipient) = require!(ssh_ed25519_keygen(keys.path()));
    // Rollback journal: its page copy goes through staging (encrypted).
    let (app, markers) = app_with_markers(false, 24);
    let d = Daemon::start(
        "",
        &app.job(
            "app",
            &encryption(&[&age_recipient, &ssh_recipient], Some(&age_key)),
        ),
    );
    let needles = markers.needles();
    let mut backup = Value::Null;
    let seen = sampling(&d, &needles, || backup = d.backup("app"));
    assert!(
        seen.with_partial > 0,
        "the sampler never saw the archive being written ({} rounds)",
        seen.rounds
    );
    assert!(
        seen.plaintext.is_empty(),
        "plaintext on disk during the backup: {:?}",
        seen.plaintext
    );
    eprintln!(
        "sampled {} rounds: {} while the archive was written, {} with a file in staging",
        seen.rounds, seen.with_partial, seen.with_staging_file
    );

    let archive = archive_of(&backup);
    assert!(archive.to_string_lossy().ends_with(".tar.zst.age"), "{backup}");
    let recipients = &backup["encryption"]["recipients"];
    assert_eq!(recipients[0], age_recipient.as_str(), "{backup}");
    let ssh_fingerprint = recipients[1].as_str().unwrap_or_default();
    assert!(ssh_fingerprint.starts_with("SHA256:"), "{backup}");
    assert_eq!(backup["database"]["snapshot-method"], "page-stream");
    let after = files_with_plaintext(
        &[&d.paths.backup_dir, &d.paths.staging, &d.paths.state_dir],
        &needles,
    );
    assert!(after.is_empty(), "plaintext on disk after the backup: {after:?}");

    // The real age CLI decrypts it with either key, into the same tar.zst ...
    let out = short_tempdir("coffer-decrypted-");
    let (by_age, by_ssh) = (out.path().join("age.tar.zst"), out.path().join("ssh.tar.zst"));
    decrypt(&age_key, &archive, &by_age);
    decrypt(&ssh_key, &archive, &by_ssh);
    assert_eq!(fs::read(&by_age).unwrap(), fs::read(&by_ssh).unwrap());
    // ... in which the scan does find the markers (so it would have above).
    let plain = files_with_plaintext(&[out.path()], &needles[..1]).len()
        + files_with_plaintext(&[out.path()], &needles[1..]).len();
    assert_eq!(plain, 4, "both markers in both decrypted streams");
    // ... whose contents equal the source.
    let manifest = extract_archive(&by_age, &out.path().join("x"));
    assert_eq!(manifest["id"], backup["id"]);
    assert_same_db(&app.db, &out.path().join("x/db/app.db"));
    assert_tree_eq(&app.media, &out.path().join("x/media/0"));

    // By hand, as the README says: age -d -i KEY FILE | tar --zstd -x.
    let by_hand = out.path().join("by-hand");
    fs::create_dir(&by_hand).unwrap();
    let status = Command::new("sh")
        .args([
            "-ec",
            "age -d -i \"$1\" \"$2\" | tar --zstd -xf - -C \"$3\"",
            "sh",
        ])
        .arg(&ssh_key)
        .arg(&archive)
        .arg(&by_hand)
        .status()
        .unwrap();
    assert!(status.success());
    assert_same_db(&app.db, &by_hand.join("db/app.db"));
    assert_tree_eq(&app.media, &by_hand.join("media/0"));
}

#[test]
fn deep_verify_and_restore_need_the_identity_and_a_flipped_byte_is_caught() {
    let keys = short_tempdir("coffer-keys-");
    let (age_key, recipient) = require!(age_keygen(keys.path()));
    let app = App::new(true);
    let with_key = app.job("app", &encryption(&[&recipient], Some(&age_key)));
    let without_key = app.job("app", &encryption(&[&recipient], None));
    let mut d = Daemon::start("", &with_key);
    let id = str_of(&d.backup("app"), "id").to_owned();
    let saved = save_app(&app);
    let deep = d.ctl_json(&["verify", &id, "--deep"]);
    assert_eq!(
        (deep["ok"].clone(), deep["deep"].clone()),
        (Value::Bool(true), Value::Bool(true))
    );
    // A restore drill decrypts it too.
    let drilled = d.ctl_json(&["drill", "app"]);
    assert_eq!(drilled["backup-id"], id.as_str(), "{drilled}");

    // In place, with the identity: the live data is the backup's again.
    change_db(&app.db);
    fs::write(app.media.join("added.txt"), b"after the backup").unwrap();
    d.ctl_json(&["restore", &id, "--yes"]);
    assert_same_db(&saved.db, &app.db);
    assert_tree_eq(&saved.media, &app.media);
    assert_no_restore_leftovers(app.dir.path());

    // Without it: refused in one sentence saying how, and nothing changes.
    reconfigure(&mut d, &without_key);
    change_db(&app.db);
    let live = LiveState::of(&app);
    let before = d.ctl_json(&["show", &id]);
    let how = "set identity-file in [job.encryption]";
    assert_error_sentence(&d.ctl(&["verify", &id, "--deep"]), 1, how);
    assert_error_sentence(&d.ctl(&["restore", &id, "--yes"]), 1, how);
    assert_error_sentence(&d.ctl(&["drill", "app"]), 1, how);
    let target = short_tempdir("coffer-to-");
    let to = target.path().join("drill");
    assert_error_sentence(&d.ctl(&["restore", &id, "--to", to.to_str().unwrap()]), 1, how);
    assert!(!to.exists(), "restore --to created its target");
    assert_eq!(LiveState::of(&app), live, "the live data changed");
    assert_eq!(d.ctl_json(&["show", &id]), before, "the backup's record changed");
    assert!(coffer_tests::names_in(&d.paths.staging).is_empty());
    // Shallow verification needs no key: it checks the ciphertext.
    let shallow = d.ctl(&["verify", &id]).expect_ok();
    assert!(shallow.stdout.contains("size and sha256 match"), "{shallow}");

    // A flipped byte in the ciphertext: caught with and without the key.
    let archive = archive_of(&before);
    let mut bytes = fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(&archive, bytes).unwrap();
    assert_error_sentence(&d.ctl(&["verify", &id]), 1, "failed verification");
    reconfigure(&mut d, &with_key);
    assert_error_sentence(&d.ctl(&["verify", &id]), 1, "failed verification");
    let listed = d.ctl_json(&["show", &id]);
    assert!(
        str_of(&listed, "verify-result").contains("failed verification"),
        "{listed}"
    );
}

#[test]
fn rekey_to_a_new_recipient_locks_the_old_key_out() {
    let keys = short_tempdir("coffer-keys-");
    let (old_key, old) = require!(age_keygen(keys.path()));
    let (new_key, new) = require!(age_keygen(keys.path()));
    let app = App::new(true);
    let mut d = Daemon::start("", &app.job("app", &encryption(&[&old], Some(&old_key))));
    let id = str_of(&d.backup("app"), "id").to_owned();
    let out = short_tempdir("coffer-decrypted-");
    let original = out.path().join("original.tar.zst");
    let archive = archive_of(&d.ctl_json(&["show", &id]));
    decrypt(&old_key, &archive, &original);

    // Rotation: the new public key in the config; the identity file still holds only
    // the old secret key (the new one is kept offline).
    reconfigure(&mut d, &app.job("app", &encryption(&[&new], Some(&old_key))));
    assert_error_sentence(&d.ctl(&["rekey", &id]), 2, "add --yes to confirm");
    let rekeyed = d.ctl_json(&["rekey", &id, "--yes"]);
    assert_eq!(rekeyed["encryption"]["recipients"], serde_json::json!([new]));
    let shown = d.ctl(&["show", &id]).expect_ok();
    assert!(shown.stdout.contains(&format!("age, to {new}")), "{shown}");
    assert!(age_decrypt(&old_key, &archive, &out.path().join("old.tar.zst")).is_err());
    let by_new = out.path().join("new.tar.zst");
    decrypt(&new_key, &archive, &by_new);
    assert_eq!(
        fs::read(&by_new).unwrap(),
        fs::read(&original).unwrap(),
        "same plaintext"
    );
    assert!(
        !coffer_tests::names_in(archive.parent().unwrap())
            .iter()
            .any(|n| n.contains(".rekey"))
    );
    // cofferd holds no key of it any more: shallow verification checks the ciphertext.
    let verified = d.ctl_json(&["verify", &id]);
    assert_eq!(verified["ciphertext-only"], true, "{verified}");
    // With the new key it reads it all again.
    let both = identity_file(keys.path(), &[&old_key, &new_key]);
    reconfigure(&mut d, &app.job("app", &encryption(&[&new], Some(&both))));
    let deep = d.ctl_json(&["verify", &id, "--deep"]);
    assert_eq!(deep["ciphertext-only"], false, "{deep}");
}

/// After a kill -9 and a restart: no partial or temp file, staging empty, every
/// listed backup has its archive and sidecar and passes `verify --deep`.
fn assert_nothing_lost(d: &Daemon, expected: &[String]) {
    assert!(
        partial_files(&d.paths.backup_dir).is_empty(),
        "a .partial was left"
    );
    assert!(
        coffer_tests::names_in(&d.paths.staging).is_empty(),
        "staging is not empty"
    );
    let leftovers: Vec<PathBuf> = coffer_tests::files_under(&d.paths.backup_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".rekey"))
        .collect();
    assert!(leftovers.is_empty(), "rekey leftovers: {leftovers:?}");
    let ids: Vec<String> = d.list(None).iter().map(|b| str_of(b, "id").to_owned()).collect();
    assert_eq!(ids, expected, "the listed backups changed");
    for id in &ids {
        d.ctl_json(&["verify", id, "--deep"]);
    }
}

/// Starts `args`, waits until `moment` holds (or the command ended), kills cofferd
/// with SIGKILL and starts it again. Returns whether the kill came before the end.
fn kill_when(d: &mut Daemon, args: &[&str], moment: impl Fn(&Daemon) -> bool) -> bool {
    let mut client = d.ctl_spawn(args);
    let mut interrupted = false;
    wait_until("the moment to kill cofferd", Duration::from_secs(120), || {
        if client.try_wait().unwrap().is_some() {
            return true;
        }
        interrupted = moment(d);
        interrupted
    });
    d.kill();
    let _ = wait_timeout(&mut client, Duration::from_secs(30));
    d.start_again();
    interrupted
}

#[test]
fn kill_9_during_an_encrypted_backup_or_a_rekey_leaves_no_partial_and_loses_nothing() {
    let keys = short_tempdir("coffer-keys-");
    let (old_key, old) = require!(age_keygen(keys.path()));
    let (new_key, new) = require!(age_keygen(keys.path()));
    let (app, _markers) = app_with_markers(true, 48);
    let mut d = Daemon::start("", &app.job("app", &encryption(&[&old], Some(&old_key))));
    let first = str_of(&d.backup("app"), "id").to_owned();

    // During a backup, while the encrypted archive is being written.
    let killed = kill_when(&mut d, &["backup", "app"], |d| {
        partial_files(&d.paths.backup_dir)
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| m.len() > (1 << 20)))
    });
    assert!(killed, "the backup finished before it could be killed");
    assert_nothing_lost(&d, std::slice::from_ref(&first));

    // During a rekey: while the new archive is written, then as late as can be caught.
    let both = identity_file(keys.path(), &[&old_key, &new_key]);
    reconfigure(&mut d, &app.job("app", &encryption(&[&new], Some(&both))));
    let archive = archive_of(&d.ctl_json(&["show", &first]));
    let temp = PathBuf::from(format!("{}.rekey-tmp", archive.display()));
    let killed = kill_when(&mut d, &["rekey", &first, "--yes"], |_| {
        fs::metadata(&temp).is_ok_and(|m| m.len() > (1 << 20))
    });
    assert!(killed, "the rekey finished before it could be killed");
    assert_nothing_lost(&d, std::slice::from_ref(&first));
    let out = short_tempdir("coffer-decrypted-");
    decrypt(&old_key, &archive, &out.path().join("still-old.tar.zst"));

    let pending = archive.with_file_name(format!("{first}.json.rekey"));
    // The pending sidecar lives for milliseconds: this kill may well come after the end.
    kill_when(&mut d, &["rekey", &first, "--yes"], |_| pending.exists());
    assert_nothing_lost(&d, std::slice::from_ref(&first));
    // Either state is whole: the sidecar matches the archive and one key reads it.
    let shown = d.ctl_json(&["show", &first]);
    let by = if shown["encryption"]["recipients"] == serde_json::json!([new]) {
        &new_key
    } else {
        &old_key
    };
    decrypt(by, &archive, &out.path().join("after.tar.zst"));
    assert_eq!(coffer_tests::sha256_file(&archive), str_of(&shown, "sha256"));
}

#[test]
fn an_encrypted_upload_is_accepted_only_when_cofferd_can_decrypt_it() {
    let keys = short_tempdir("coffer-keys-");
    let (key, recipient) = require!(age_keygen(keys.path()));
    let app = App::new(true);
    let with_key = app.job("app", &encryption(&[&recipient], Some(&key)));
    let mut d = Daemon::start("", &with_key);
    let id = str_of(&d.backup("app"), "id").to_owned();
    let files = short_tempdir("coffer-files-");
    let file = files.path().join("backup.tar.zst.age");
    d.ctl_json(&["download", &id, "-o", file.to_str().unwrap()]);
    d.ctl(&["delete", &id, "--yes"]).expect_ok();

    // Without an identity here it cannot be verified: refused, nothing kept.
    reconfigure(&mut d, &app.job("app", &encryption(&[&recipient], None)));
    let refused = d.ctl(&["upload", file.to_str().unwrap()]);
    assert_error_sentence(&refused, 1, "set identity-file in [job.encryption]");
    assert!(d.list(None).is_empty());
    assert!(
        coffer_tests::files_under(&d.paths.backup_dir).is_empty(),
        "the refused upload left files"
    );

    // With it: decrypted, verified and catalogued, still encrypted on disk.
    reconfigure(&mut d, &with_key);
    let uploaded = d.ctl_json(&["upload", file.to_str().unwrap()]);
    assert_eq!(uploaded["id"], id.as_str());
    assert_eq!(
        uploaded["encryption"]["recipients"],
        serde_json::json!([recipient])
    );
    let archive = archive_of(&uploaded);
    assert!(archive.to_string_lossy().ends_with(".tar.zst.age"), "{uploaded}");
    assert_eq!(fs::read(&archive).unwrap(), fs::read(&file).unwrap());
    d.ctl_json(&["verify", &id, "--deep"]);

    // A plain archive encrypted by hand with `age -r` is accepted the same way.
    let plain = files.path().join("plain.tar.zst");
    decrypt(&key, &file, &plain);
    d.ctl(&["delete", &id, "--yes"]).expect_ok();
    let by_hand = files.path().join("by-hand.tar.zst.age");
    coffer_tests::servers::age_encrypt(&[&recipient], &plain, &by_hand).unwrap();
    let uploaded = d.ctl_json(&["upload", by_hand.to_str().unwrap()]);
    assert_eq!(
        uploaded["encryption"]["recipients"],
        serde_json::json!([recipient])
    );

    // A tampered one is rejected.
    d.ctl(&["delete", &id, "--yes"]).expect_ok();
    let mut bytes = fs::read(&by_hand).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    fs::write(&by_hand, bytes).unwrap();
    assert_error_sentence(&d.ctl(&["upload", by_hand.to_str().unwrap()]), 1, "rejected");
    assert!(d.list(None).is_empty());
}

#[test]
fn a_readable_identity_file_or_a_bad_recipient_is_a_config_error() {
    let keys = short_tempdir("coffer-keys-");
    let (key, recipient) = require!(age_keygen(keys.path()));
    let app = App::new(true);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    for (table, phrase) in [
        (
            encryption(&[&recipient], Some(&key)),
            format!(
                "has mode 0640, so its secret keys are readable by group or others; run `chmod 600 {}`",
                key.display()
            ),
        ),
        (
            encryption(&[&recipient, "ssh-ed25519 AAAAnotbase64"], None),
            "encryption.recipients[1]: 'ssh-ed25519 AAAAnotbase6…' is not a valid age or SSH public key"
                .into(),
        ),
    ] {
        let d = Daemon::configure("", &app.job("app", &table));
        let out = coffer_tests::run(
            {
                let mut cmd = d.cofferd_command();
                cmd.arg("--check-config");
                cmd
            },
            Duration::from_secs(30),
        );
        assert_eq!(out.code, 2, "{out}");
        assert!(out.stderr.contains(&phrase), "{out}");
        assert!(
            out.stderr.contains(&d.paths.config.display().to_string()),
            "{out}"
        );
    }
}
