//! Odd requests: empty, huge and hostile ids, job names and paths, sent to a real
//! `cofferd` that holds real backups — once through `cofferctl` (exit code 1 or 2 and
//! one clear sentence on stderr) and once with a raw gRPC client that goes around
//! cofferctl's own checks, so the *server's* validation answers (INVALID_ARGUMENT or
//! NOT_FOUND — never INTERNAL or UNKNOWN — with a short, one-line message).
//!
//! Afterwards the daemon is still healthy and nothing changed: `cofferctl status`
//! answers, the backups and their files are byte-for-byte the same, and nothing new
//! appeared in the backup dir, the state dir or staging.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use coffer_common::proto::{self, coffer_client::CofferClient};
use coffer_common::tonic::{Code, Status, transport::Channel};
use coffer_tests::{
    App, COMMAND_TIMEOUT, Daemon, Output, files_under, names_in, run, sha256_file, short_tempdir,
};

/// Debug formatting that must never reach a person.
const DEBUG_NOISE: &[&str] = &[
    "Some(", "Os {", "Custom {", "kind: ", "Error {", "Status {", "panicked",
];

/// Asserts one clear sentence on stderr and exit code 1 or 2 (DESIGN.md).
#[track_caller]
fn assert_refused(out: &Output, code: i32) {
    assert_eq!(out.code, code, "wrong exit code from {out}");
    let mut text = out.stderr.trim_end();
    if code == 2 && text.starts_with("error: ") {
        // clap's own usage error: its sentence, then a hint to try --help.
        text = text.lines().next().unwrap_or_default();
    } else {
        assert_eq!(text.lines().count(), 1, "not one line on stderr: {out}");
        assert!(text.starts_with("cofferctl: "), "unclear error: {out}");
    }
    assert!(text.len() > 20, "unclear error: {out}");
    assert!(
        text.len() < 2000,
        "error of {} bytes: {}...",
        text.len(),
        &text[..200]
    );
    assert!(
        !text.chars().any(|c| c.is_control()),
        "control characters on stderr: {out}"
    );
    for noise in DEBUG_NOISE {
        assert!(!text.contains(noise), "debug output on stderr: {out}");
    }
}

/// Asserts a status code and a clear one-line message.
#[track_caller]
fn assert_status(what: &str, result: Result<(), Status>, codes: &[Code]) {
    let status = result.expect_err(what);
    assert!(
        codes.contains(&status.code()),
        "{what}: got {:?} ({}), want one of {codes:?}",
        status.code(),
        status.message()
    );
    let message = status.message();
    assert!(
        message.len() > 10 && message.len() < 2000,
        "{what}: message {message:?}"
    );
    assert!(!message.chars().any(|c| c.is_control()), "{what}: {message:?}");
    for noise in DEBUG_NOISE {
        assert!(!message.contains(noise), "{what}: debug output in {message:?}");
    }
}

/// What must not change: every file under the backup dir with its sha256, and the
/// names under the state dir except the catalog itself (the audit log grows).
fn state(d: &Daemon) -> (BTreeMap<PathBuf, String>, Vec<PathBuf>) {
    let backups = files_under(&d.paths.backup_dir)
        .into_iter()
        .map(|f| (f.clone(), sha256_file(&f)))
        .collect();
    let state = files_under(&d.paths.state_dir)
        .into_iter()
        .filter(|f| {
            !f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("catalog.db"))
        })
        .collect();
    (backups, state)
}

fn odd_ids(other_job_id: &str) -> Vec<(String, Code)> {
    let mut ids: Vec<(String, Code)> = [
        "",
        "   ",
        "../../etc/passwd",
        "app-20260101T000000Z/../x",
        "/etc/passwd",
        "app\0-20260101T000000Z",
        "app-\t0260101T000000Z",
        "\u{1b}[2Japp",
        "äpp-20260101T000000Z",
        "app-20260101T000000Z-0",
        ":latest",
        "app:",
        "App:latest",
        "../x:latest",
    ]
    .into_iter()
    .map(|s| (s.to_owned(), Code::InvalidArgument))
    .collect();
    // Ids are trimmed: a well-formed id with a trailing newline is simply not there.
    ids.push(("app-20260101T000000Z\n".into(), Code::NotFound));
    ids.push(("nojob:latest".into(), Code::NotFound));
    ids.push(("app-19990101T000000Z".into(), Code::NotFound));
    ids.push((other_job_id.to_owned(), Code::NotFound));
    ids.push(("a".repeat(1 << 20), Code::InvalidArgument));
    ids.push(("../".repeat(350_000), Code::InvalidArgument));
    ids
}

/// The raw-gRPC half: every id-taking RPC with every odd id, odd job names, odd
/// restore targets and odd uploads. Returns the number of requests sent.
async fn raw_requests(
    c: &mut CofferClient<Channel>,
    real_id: &str,
    other_job_id: &str,
    scratch: &Path,
) -> usize {
    let mut sent = 0;
    for (id, code) in odd_ids(other_job_id) {
        let label = |rpc: &str| format!("{rpc} {:?}", id.chars().take(40).collect::<String>());
        let codes = [code];
        let get = c.get_backup(proto::GetBackupRequest { id: id.clone() }).await;
        assert_status(&label("GetBackup"), get.map(drop), &codes);
        let delete = c
            .delete_backup(proto::DeleteBackupRequest { id: id.clone() })
            .await;
        assert_status(&label("DeleteBackup"), delete.map(drop), &codes);
        let pin = c
            .set_protected(proto::SetProtectedRequest {
                id: id.clone(),
                protected: true,
            })
            .await;
        assert_status(&label("SetProtected"), pin.map(drop), &codes);
        let verify = c
            .verify_backup(proto::VerifyBackupRequest {
                id: id.clone(),
                deep: true,
                ..Default::default()
            })
            .await;
        assert_status(&label("VerifyBackup"), verify.map(drop), &codes);
        let download = c
            .download_backup(proto::DownloadBackupRequest { id: id.clone() })
            .await;
        assert_status(&label("DownloadBackup"), download.map(drop), &codes);
        let restore = restore(c, &id, &scratch.join("never").display().to_string()).await;
        assert_status(&label("RestoreBackup"), restore, &codes);
        sent += 6;
    }

    for job in [
        "",
        "..",
        "../x",
        "a/b",
        "App",
        "app\n",
        "\u{1b}[2J",
        &"j".repeat(1 << 20),
    ] {
        let label = |rpc: &str| format!("{rpc} job {:?}", job.chars().take(40).collect::<String>());
        let backup = c
            .create_backup(proto::CreateBackupRequest {
                job: job.to_owned(),
                note: String::new(),
            })
            .await;
        assert_status(
            &label("CreateBackup"),
            backup.map(drop),
            &[Code::NotFound, Code::InvalidArgument],
        );
        if !job.is_empty() {
            let list = c
                .list_backups(proto::ListBackupsRequest { job: job.to_owned() })
                .await;
            assert_status(
                &label("ListBackups"),
                list.map(drop),
                &[Code::NotFound, Code::InvalidArgument],
            );
            let prune = c
                .prune(proto::PruneRequest {
                    job: job.to_owned(),
                    dry_run: false,
                })
                .await;
            assert_status(
                &label("Prune"),
                prune.map(drop),
                &[Code::NotFound, Code::InvalidArgument],
            );
            sent += 2;
        }
        sent += 1;
    }

    // Restore targets the server must refuse itself (cofferctl makes paths absolute).
    let a_file = scratch.join("a-file");
    fs::write(&a_file, "mine").unwrap();
    let not_empty = scratch.join("not-empty");
    fs::create_dir_all(&not_empty).unwrap();
    fs::write(not_empty.join("keep"), "mine").unwrap();
    let long = format!("/{}", "d".repeat(1 << 20));
    for to in [
        "relative/dir",
        "./x",
        "..",
        a_file.to_str().unwrap(),
        not_empty.to_str().unwrap(),
        &long,
    ] {
        let label = format!("RestoreBackup --to {:?}", to.chars().take(60).collect::<String>());
        assert_status(&label, restore(c, real_id, to).await, &[Code::InvalidArgument]);
        sent += 1;
    }
    let bad_only = c
        .restore_backup(proto::RestoreBackupRequest {
            id: real_id.to_owned(),
            to: scratch.join("never").display().to_string(),
            only: "everything".into(),
            ..Default::default()
        })
        .await;
    assert_status(
        "RestoreBackup --only everything",
        bad_only.map(drop),
        &[Code::InvalidArgument],
    );
    // A new database for an SQLite backup, or a directory and a database at once.
    for (to, to_database) in [("", "copy"), ("/tmp/x", "copy"), ("", "-rf")] {
        let label = format!("RestoreBackup --to {to:?} --to-database {to_database:?}");
        let result = restore_target(c, real_id, to, to_database).await;
        assert_status(&label, result, &[Code::InvalidArgument]);
        sent += 1;
    }
    assert_eq!(fs::read_to_string(&a_file).unwrap(), "mine");
    assert_eq!(names_in(&not_empty), ["keep"]);

    // Uploads: nothing, an empty chunk, 1 MiB of zeros, garbage filed under an odd job.
    let uploads: Vec<Vec<proto::UploadChunk>> = vec![
        vec![],
        vec![proto::UploadChunk::default()],
        vec![proto::UploadChunk {
            data: vec![0; 1 << 20],
            job: String::new(),
        }],
        vec![proto::UploadChunk {
            data: b"(\xb5/\xfd garbage".to_vec(),
            job: "../../etc".into(),
        }],
    ];
    for chunks in uploads {
        let label = format!(
            "UploadBackup of {} bytes",
            chunks.iter().map(|c| c.data.len()).sum::<usize>()
        );
        let result = c.upload_backup(tokio_stream::iter(chunks)).await;
        // An archive that does not verify is DATA_LOSS (the one mapping for invalid
        // archives); never INTERNAL.
        assert_status(&label, result.map(drop), &[Code::DataLoss, Code::InvalidArgument]);
        sent += 1;
    }
    sent + 1
}

/// Restores `id` to `to`; the first error, whether the call or its stream refuses.
async fn restore(c: &mut CofferClient<Channel>, id: &str, to: &str) -> Result<(), Status> {
    restore_target(c, id, to, "").await
}

/// Restores `id` to `to` or the new database `to_database`; the first error, whether
/// the call or its stream refuses.
async fn restore_target(
    c: &mut CofferClient<Channel>,
    id: &str,
    to: &str,
    to_database: &str,
) -> Result<(), Status> {
    let mut stream = c
        .restore_backup(proto::RestoreBackupRequest {
            id: id.to_owned(),
            to: to.to_owned(),
            to_database: to_database.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        if matches!(event.event, Some(proto::backup_event::Event::Restore(_))) {
            return Ok(());
        }
    }
    Ok(())
}

#[test]
fn odd_requests_get_clear_refusals_and_change_nothing() {
    let started = Instant::now();
    let app = App::new(true);
    let other = App::new(false);
    let d = Daemon::start("", &format!("{}\n{}", app.job("app", ""), other.job("other", "")));
    let id = d.backup("app")["id"].as_str().unwrap().to_owned();
    let other_id = d.backup("other")["id"].as_str().unwrap().to_owned();
    // `other`'s backup id under `app`'s name (with a suffix: both backups may share a
    // second): well-formed, not there.
    let crossed = format!("{}-99", other_id.replacen("other", "app", 1));

    // A 100 KiB note through argv is kept whole (it is the admin's text).
    let note = "n".repeat(100 << 10);
    let noted = d.ctl_json(&["backup", "app", "--note", &note]);
    assert_eq!(noted["note"].as_str().map(str::len), Some(note.len()));

    let before = state(&d);
    let ids_before = d.list(None);
    let scratch = short_tempdir("coffer-odd-");
    let mut cli_requests = 0;

    // --- through cofferctl ---
    let mut ctl = |args: &[&str], code: i32| {
        let mut cmd = d.ctl_command(args);
        cmd.current_dir(scratch.path());
        let out = run(cmd, COMMAND_TIMEOUT);
        assert_refused(&out, code);
        cli_requests += 1;
        out
    };
    let huge = "x".repeat(100 << 10);
    for odd in [
        "",
        "../../etc/passwd",
        "app-20260101T000000Z/../x",
        "\u{1}\u{7}",
        "app -20260101T000000Z",
        "äpp-20260101T000000Z",
        ":latest",
        "app:",
        huge.as_str(),
    ] {
        for cmd in [
            &["show", odd][..],
            &["pin", odd],
            &["verify", odd],
            &["delete", odd, "--yes"],
        ] {
            ctl(cmd, 2);
        }
    }
    let out = ctl(&["show", "nojob:latest"], 1);
    assert!(out.stderr.contains("no job named 'nojob'"), "{out}");
    let out = ctl(&["show", &crossed], 1);
    assert!(out.stderr.contains("there is no backup"), "{out}");
    for job in ["a/b", "..", "App", "", huge.as_str()] {
        ctl(&["backup", job], 1);
        if !job.is_empty() {
            ctl(&["list", job], 1);
            ctl(&["prune", job], 1);
        }
    }
    // Restore targets: empty, a file, a non-empty directory.
    let a_file = scratch.path().join("a-file");
    fs::write(&a_file, "mine").unwrap();
    ctl(&["restore", &id, "--to", ""], 2);
    ctl(&["restore", &id, "--to", a_file.to_str().unwrap()], 2);
    ctl(&["restore", &id, "--to", "/dev/null"], 2);
    ctl(&["restore", &id, "--to", scratch.path().to_str().unwrap()], 2);
    // A relative --to is made absolute by cofferctl (in its working directory).
    let mut cmd = d.ctl_command(&["--json", "restore", &id, "--to", "rel/dir"]);
    cmd.current_dir(scratch.path());
    let rel = run(cmd, COMMAND_TIMEOUT);
    assert!(rel.success(), "{rel}");
    assert!(scratch.path().join("rel/dir/db/app.db").is_file(), "{rel}");
    // A --to whose parents do not exist yet: created.
    let deep = scratch.path().join("no/such/parent/dir");
    let out = d.ctl(&["restore", &id, "--to", deep.to_str().unwrap()]);
    assert!(out.success() && deep.join("db/app.db").is_file(), "{out}");
    // Downloads onto a directory, with and without --force: refused, nothing left.
    let dir = scratch.path().join("a-dir");
    fs::create_dir(&dir).unwrap();
    ctl(&["download", &id, "-o", dir.to_str().unwrap()], 2);
    ctl(&["download", &id, "-o", dir.to_str().unwrap(), "--force"], 1);
    ctl(
        &[
            "download",
            "../x",
            "-o",
            scratch.path().join("x").to_str().unwrap(),
        ],
        2,
    );
    assert!(
        names_in(scratch.path())
            .iter()
            .all(|n| !n.ends_with(".partial") && n != "x"),
        "download leftovers: {:?}",
        names_in(scratch.path())
    );
    // Uploads of an empty file, a directory, /dev/null and a missing file.
    let empty = scratch.path().join("empty.tar.zst");
    fs::write(&empty, "").unwrap();
    for file in [empty.as_path(), dir.as_path(), Path::new("/dev/null")] {
        ctl(&["upload", file.to_str().unwrap()], 1);
    }
    ctl(&["upload", scratch.path().join("missing").to_str().unwrap()], 2);
    let cli_elapsed = started.elapsed();

    // --- around cofferctl: raw gRPC ---
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw_started = Instant::now();
    let raw = runtime.block_on(async {
        let mut c = coffer_common::client::connect(&d.paths.socket)
            .await
            .expect("connect");
        raw_requests(&mut c, &id, &crossed, scratch.path()).await
    });

    // --- still healthy, nothing changed ---
    d.ctl(&["status"]).expect_ok();
    assert_eq!(d.list(None), ids_before, "the backups changed");
    assert_eq!(state(&d), before, "files changed in the backup or state dir");
    assert!(
        names_in(&d.paths.staging).is_empty(),
        "staging: {:?}",
        names_in(&d.paths.staging)
    );
    let log = d.log();
    assert!(!log.contains("panicked"), "cofferd panicked:\n{log}");
    eprintln!(
        "odd requests: {cli_requests} through cofferctl in {cli_elapsed:.1?}, {raw} raw gRPC requests in {:.1?}; all refused clearly, nothing changed",
        raw_started.elapsed()
    );
}
