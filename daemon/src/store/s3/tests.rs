//! Tests against a real S3 server: the harness's SeaweedFS (`weed mini`, started per
//! test in a temp dir on free ports; `SKIPPED` with the reason when it is missing, a
//! failure under `COFFER_TEST_NO_SKIP=1`), inspected independently with boto3 where it
//! matters. Each test runs the async client on a runtime of its own (`block_on` on the
//! test thread, as cofferd's blocking ops do through [`S3Backend`]).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use coffer_tests::require;
use coffer_tests::servers::S3Server;
use futures_util::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use tokio_util::sync::CancellationToken;

use super::config::{LockMode, ObjectLock};
use super::testutil::{FlakyProxy, config, runtime, store, test_config, write_test_file};
use super::{Deleted, Phase, Progress, S3Backend, S3Error, S3ErrorKind, S3Store, layout};
use crate::store::Store;

fn no_progress() -> impl FnMut(Progress) + Send {
    |_| {}
}

#[test]
fn objects_round_trip_list_page_group_and_delete() {
    let s3 = require!(S3Server::start("s3_objects"));
    let rt = runtime();
    let bucket = s3.bucket();
    rt.block_on(async {
        let store = store(&s3, bucket, "coffer/h1");
        store.check().await.unwrap();
        let key = layout::sidecar_key(store.prefix(), "app", "app-20260101T000000Z");
        let body = Bytes::from_static(br#"{"id":"app-20260101T000000Z"}"#);
        let out = store.put_bytes(&key, body.clone()).await.unwrap();
        assert_eq!((out.size, out.retain_until), (body.len() as u64, None));
        assert_eq!(store.get_bytes(&key, 1 << 20).await.unwrap(), body.to_vec());
        let head = store.head(&key).await.unwrap().unwrap();
        assert_eq!(head.size, body.len() as u64);
        assert!(!head.is_locked_at(Utc::now()));
        let e = store.get_bytes(&key, 4).await.unwrap_err();
        assert!(matches!(e, S3Error::TooLarge { .. }), "{e}");

        // An independent look: boto3 sees the same bytes under the same key.
        assert_eq!(s3.client().get_object(bucket, &key).unwrap(), body.to_vec());

        let listing = store
            .list(&layout::job_prefix(store.prefix(), "app"))
            .await
            .unwrap();
        assert_eq!(listing.requests, 1);
        assert_eq!(listing.objects.len(), 1);
        assert_eq!(listing.objects[0].key, key);

        assert_eq!(store.delete(&key).await.unwrap(), Deleted::Removed);
        assert_eq!(store.head(&key).await.unwrap(), None);
        assert_eq!(store.delete(&key).await.unwrap(), Deleted::Absent);
        let e = store.get_bytes(&key, 1 << 20).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("object '{key}' does not exist in the store 'offsite'")
        );
        assert_eq!(e.kind(), S3ErrorKind::NotFound);

        // 30 keys in pages of 7: one logical LIST, five requests.
        let client = store.client();
        let keys: Vec<String> = (0..30)
            .map(|i| format!("coffer/h1/app/app-{i:05}.json"))
            .collect();
        futures_util::stream::iter(keys.iter())
            .map(|k| async move {
                let path = object_store::path::Path::parse(k).unwrap();
                client.put(&path, PutPayload::from_static(b"{}")).await.unwrap();
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        for k in [
            "coffer/h2/db/db-1.tar.zst",
            "coffer/h2/db/db-1.json",
            "coffer/h1/media/m-1.json",
        ] {
            store.put_bytes(k, Bytes::from_static(b"{}")).await.unwrap();
        }
        let mut cfg = config(&s3, bucket, "coffer/h1");
        cfg.tuning.list_page_size = 7;
        let small = S3Store::new(cfg).unwrap();
        let l = small.list("coffer/h1/app/").await.unwrap();
        assert_eq!((l.objects.len(), l.requests), (30, 5));
        let groups = layout::group_backups("coffer/h1", &l.objects);
        assert_eq!(groups.len(), 30);
        assert!(
            groups.iter().all(|b| !b.is_complete()),
            "sidecars alone are not backups"
        );
        assert_eq!(small.list_children("coffer/").await.unwrap(), ["h1", "h2"]);
        assert_eq!(store.list_children("coffer/h1/").await.unwrap(), ["app", "media"]);
    });

    backend_and_store_trait(&s3, &rt);
}

/// The blocking backend and the Store trait over what the test above left in the
/// bucket, called from the test's thread as cofferd's ops call it.
fn backend_and_store_trait(s3: &S3Server, rt: &tokio::runtime::Runtime) {
    let bucket = s3.bucket();
    let backend = S3Backend::new(
        config(s3, bucket, "coffer/h2"),
        "coffer/{host}",
        rt.handle().clone(),
        CancellationToken::new(),
    )
    .unwrap();
    let listed = Store::list(&backend, None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].job.as_str(), listed[0].id.as_str(), listed[0].size),
        ("db", "db-1", 2)
    );
    let fleet = backend.list_fleet("h2").unwrap();
    let hosts: Vec<(&str, &str, bool)> = fleet
        .iter()
        .map(|f| (f.host.as_str(), f.backup.id.as_str(), f.backup.is_complete()))
        .collect();
    assert!(hosts.contains(&("h2", "db-1", true)), "{hosts:?}");
    assert!(hosts.iter().filter(|h| h.0 == "h1").all(|h| !h.2), "{hosts:?}");
    let mut archive = Vec::new();
    backend
        .open_archive("db", "db-1")
        .unwrap()
        .read_to_end(&mut archive)
        .unwrap();
    assert_eq!(archive, b"{}");
    let e = backend.sidecar("db", "db-1").unwrap_err().to_string();
    assert!(e.starts_with("backup db-1 cannot be read: its sidecar 'coffer/h2/db/db-1.json' in the store 'offsite' is unreadable"), "{e}");
    assert!(backend.open_archive("db", "db-9").is_err());
    backend.remove("db", "db-1").unwrap();
    assert!(Store::list(&backend, None).unwrap().is_empty());
    assert!(s3.client().list_objects(bucket, "coffer/h2/").unwrap().is_empty());
}

#[test]
fn multipart_is_verified_and_any_failure_aborts_it() {
    let s3 = require!(S3Server::start("s3_multipart"));
    let rt = runtime();
    let bucket = s3.bucket();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.tar.zst");
    let size = 40u64 << 20;
    let sha = write_test_file(&src, size, 7);
    rt.block_on(async {
        let store = store(&s3, bucket, "coffer/h1");
        let key = layout::archive_key(store.prefix(), "app", "app-1", false);
        let mut seen: Vec<Progress> = Vec::new();
        let mut record = |p: Progress| seen.push(p);
        let out = store
            .put_file(&key, &src, &sha, &mut record, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            (out.size, out.sha256.as_str(), out.parts),
            (size, sha.as_str(), 5)
        );
        for phase in [Phase::Upload, Phase::Verify] {
            let ps: Vec<_> = seen.iter().filter(|p| p.phase == phase).collect();
            assert!(
                ps.windows(2).all(|w| w[0].done <= w[1].done),
                "{phase:?} not monotonic"
            );
            assert_eq!(
                ps.last().map(|p| (p.done, p.total)),
                Some((size, size)),
                "{phase:?}"
            );
        }
        // boto3, independently: the object equals the file, no upload is left open.
        let back = dir.path().join("back");
        s3.client().get_object_to_file(bucket, &key, &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
        assert!(s3.client().list_multipart_uploads(bucket).unwrap().is_empty());

        mismatches_store_nothing(&store, dir.path()).await;
        cancel_and_drop_abort(&store, &src, &sha).await;

        // A stored object that does not match: detected on read-back and removed.
        let bad = "coffer/h1/app/bad.tar.zst";
        s3.client().put_object(bucket, bad, b"not the archive").unwrap();
        let e = store
            .verify_upload(
                bad,
                15,
                &"1".repeat(64),
                None,
                0,
                &mut no_progress(),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, S3Error::RemoteMismatch { removed: true, .. }), "{e}");
        assert_eq!(e.kind(), S3ErrorKind::DataLoss);
        assert_eq!(store.head(bad).await.unwrap(), None, "the bad copy is gone");
    });
}

/// A file that does not match the sha256 it should have, or is missing: nothing is
/// stored.
async fn mismatches_store_nothing(store: &S3Store, dir: &std::path::Path) {
    // A file that does not match the sha256 it should have: nothing is stored.
    for (name, len) in [("small", 1u64 << 20), ("big", 20u64 << 20)] {
        let f = dir.join(name);
        write_test_file(&f, len, 3);
        let k = format!("coffer/h1/app/{name}.tar.zst");
        let e = store
            .put_file(
                &k,
                &f,
                &"0".repeat(64),
                &mut no_progress(),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("does not match its recorded sha256"),
            "{e}"
        );
        assert_eq!(
            store.head(&k).await.unwrap(),
            None,
            "{name}: nothing may be stored"
        );
    }
    let e = store
        .put_file(
            "coffer/h1/app/x.tar.zst",
            &dir.join("missing"),
            &"0".repeat(64),
            &mut no_progress(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("cannot read "), "{e}");
}

/// A cancelled upload, and a dropped one, are aborted: no parts are left.
async fn cancel_and_drop_abort(store: &S3Store, src: &std::path::Path, sha: &str) {
    // Cancelled after the first part: aborted.
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let mut on_progress = move |p: Progress| {
        if p.done > 0 {
            c2.cancel();
        }
    };
    let key = "coffer/h1/app/cancelled.tar.zst";
    let e = store
        .put_file(key, src, sha, &mut on_progress, &cancel)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), S3ErrorKind::Cancelled, "{e}");
    assert!(
        store
            .list_incomplete_uploads("coffer/h1/")
            .await
            .unwrap()
            .is_empty(),
        "cancel must abort"
    );
    assert_eq!(store.head(key).await.unwrap(), None);

    // The future dropped mid-way (a task aborted at shutdown): the guard aborts.
    let done = Arc::new(AtomicU64::new(0));
    let d2 = done.clone();
    let mut on_progress = move |p: Progress| d2.store(p.done, Ordering::SeqCst);
    let never = CancellationToken::new();
    let mut fut = Box::pin(store.put_file(
        "coffer/h1/app/dropped.tar.zst",
        src,
        sha,
        &mut on_progress,
        &never,
    ));
    loop {
        tokio::select! {
            r = &mut fut => panic!("finished before being dropped: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {
                if done.load(Ordering::SeqCst) > 0 { break; }
            }
        }
    }
    drop(fut);
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = store.list_incomplete_uploads("coffer/h1/").await.unwrap().len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "dropping the upload must abort it");
}

#[test]
fn server_killed_mid_upload_then_sweep_leaves_no_orphans() {
    let mut s3 = require!(S3Server::start("s3_killed"));
    let rt = runtime();
    let bucket = s3.bucket();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    let size = 120u64 << 20;
    let sha = write_test_file(&src, size, 11);
    let key = "coffer/h1/app/killed.tar.zst";
    let store = store(&s3, bucket, "coffer/h1");
    let done = Arc::new(AtomicU64::new(0));
    let d2 = done.clone();
    let s2 = store.clone();
    let (src2, sha2) = (src.clone(), sha.clone());
    let upload = rt.spawn(async move {
        let mut on_progress = move |p: Progress| d2.store(p.done, Ordering::SeqCst);
        s2.put_file(key, &src2, &sha2, &mut on_progress, &CancellationToken::new())
            .await
    });
    while done.load(Ordering::SeqCst) < size / 4 {
        assert!(!upload.is_finished(), "upload finished before the kill");
        std::thread::sleep(Duration::from_millis(2));
    }
    s3.kill9();
    let e = rt.block_on(upload).unwrap().unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string()
            .starts_with("cannot reach the store 'offsite' at http://127.0.0.1:")
            || e.to_string().starts_with("the store 'offsite' failed to upload"),
        "{e}"
    );
    s3.start_again();
    let store = super::testutil::store(&s3, bucket, "coffer/h1");
    rt.block_on(async {
        let before = store.list_incomplete_uploads("coffer/h1/").await.unwrap();
        assert_eq!(
            before.len(),
            1,
            "the killed upload is left over (its abort could not reach the server)"
        );
        assert_eq!(before[0].key, key);
        assert_eq!(store.head(key).await.unwrap(), None);
        // Trying again first drops the earlier attempt's parts, then succeeds.
        let out = store
            .put_file(key, &src, &sha, &mut no_progress(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out.sha256, sha);
        assert!(
            store
                .list_incomplete_uploads("coffer/h1/")
                .await
                .unwrap()
                .is_empty(),
            "orphans remain"
        );
    });
    startup_sweep(&s3, &rt);
}

/// The start-up sweep: uploads a killed daemon left behind (made here with boto3) are
/// aborted; other hosts' uploads and recent ones are not.
fn startup_sweep(s3: &S3Server, rt: &tokio::runtime::Runtime) {
    let bucket = s3.bucket();
    let c = s3.client();
    for k in [
        "coffer/h1/app/o1.tar.zst",
        "coffer/h1/db/o2.tar.zst",
        "coffer/h2/app/other-host.tar.zst",
    ] {
        c.start_multipart_upload(bucket, k, 1, 5 << 20).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100)); // Initiated has one-second resolution
    let backend = S3Backend::new(
        config(s3, bucket, "coffer/h1"),
        "coffer/{host}",
        rt.handle().clone(),
        CancellationToken::new(),
    )
    .unwrap();
    assert_eq!(backend.incomplete_uploads().unwrap().len(), 2);
    assert_eq!(backend.abort_incomplete_uploads(Utc::now()).unwrap(), 2);
    assert!(backend.incomplete_uploads().unwrap().is_empty());
    let left: Vec<String> = c
        .list_multipart_uploads(bucket)
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    assert_eq!(
        left,
        ["coffer/h2/app/other-host.tar.zst"],
        "other hosts' uploads are not touched"
    );
    // Uploads started after the cut-off are left alone (another process may be writing).
    let other = S3Backend::new(
        config(s3, bucket, "coffer/h2"),
        "coffer/{host}",
        rt.handle().clone(),
        CancellationToken::new(),
    )
    .unwrap();
    assert_eq!(
        other
            .abort_incomplete_uploads(Utc::now() - chrono::Duration::minutes(10))
            .unwrap(),
        0
    );
}

#[test]
fn error_sentences_for_credentials_endpoint_and_bucket() {
    let s3 = require!(S3Server::start("s3_errors"));
    let rt = runtime();
    let (access, secret) = (s3.access_key().to_owned(), s3.secret_key().to_owned());
    rt.block_on(async {
        let mut messages = Vec::new();
        let bad = S3Store::new(test_config(&s3.endpoint(), s3.bucket(), "coffer/h1", &access, "not-the-secret")).unwrap();
        let e = bad.check().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the store 'offsite' rejected the credentials (check credentials-file /etc/coffer/test.credentials)"
        );
        assert_eq!(e.kind(), S3ErrorKind::Auth);
        messages.push(e.to_string());
        let e = bad.put_bytes("coffer/h1/x.json", Bytes::from_static(b"{}")).await.unwrap_err();
        assert_eq!(e.kind(), S3ErrorKind::Auth, "{e}");
        messages.push(e.to_string());
        let e = bad.head("coffer/h1/x.json").await.unwrap_err();
        assert_eq!(e.kind(), S3ErrorKind::Auth, "{e}");
        messages.push(e.to_string());
        // an unknown access key
        let mut cfg = config(&s3, s3.bucket(), "coffer/h1");
        cfg.credentials.access_key_id = "NOSUCHKEY".into();
        let e = S3Store::new(cfg).unwrap().check().await.unwrap_err();
        assert_eq!(e.kind(), S3ErrorKind::Auth, "{e}");
        messages.push(e.to_string());
        // nothing listening
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let gone = S3Store::new(test_config(&endpoint, "backups", "coffer/h1", &access, &secret)).unwrap();
        let e = gone.check().await.unwrap_err();
        assert_eq!(e.to_string(), format!("cannot reach the store 'offsite' at {endpoint}: connection refused"));
        messages.push(e.to_string());
        // a host name that does not resolve
        let nohost = S3Store::new(test_config("http://no-such-host.invalid:1", "backups", "p", &access, &secret)).unwrap();
        let e = nohost.check().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot reach the store 'offsite' at http://no-such-host.invalid:1: the host name does not resolve"
        );
        // a bucket that does not exist
        let e = store(&s3, "nosuchbucket", "coffer/h1").check().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("bucket 'nosuchbucket' does not exist at {} (store 'offsite')", s3.endpoint())
        );
        messages.push(e.to_string());
        for msg in &messages {
            assert!(!msg.contains(&secret) && !msg.contains("not-the-secret") && !msg.contains(&access), "{msg}");
        }
    });
}

#[test]
fn object_lock_is_written_reported_and_respected() {
    let s3 = require!(S3Server::start("s3_lock"));
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    let sha = write_test_file(&src, 20 << 20, 9);
    rt.block_on(async {
        for mode in [LockMode::Governance, LockMode::Compliance] {
            let mut cfg = config(&s3, s3.locked_bucket(), "coffer/h1");
            cfg.object_lock = Some(ObjectLock { days: 1, mode });
            let store = S3Store::new(cfg).unwrap();
            store.check().await.unwrap();
            let before = Utc::now();
            let key = format!("coffer/h1/app/{mode:?}.tar.zst");
            let out = store
                .put_file(&key, &src, &sha, &mut no_progress(), &CancellationToken::new())
                .await
                .unwrap();
            let until = out.retain_until.expect("retain-until reported");
            let expect = before + chrono::Duration::days(1);
            assert!((until - expect).num_seconds().abs() < 60, "{until} vs {expect}");
            assert!(out.version.is_some(), "a lock bucket is versioned");
            let side = store
                .put_bytes(&format!("coffer/h1/app/{mode:?}.json"), Bytes::from_static(b"{}"))
                .await
                .unwrap();
            assert!(side.retain_until.is_some(), "the sidecar is locked too");
            let head = store.head(&key).await.unwrap().unwrap();
            assert_eq!((head.lock_mode, head.retain_until), (Some(mode), Some(until)));
            // boto3 sees the same lock.
            let seen = s3.client().head_object(s3.locked_bucket(), &key, None).unwrap();
            assert_eq!(seen.lock_mode.as_deref(), Some(mode.as_header()));
            let e = store.delete(&key).await.unwrap_err();
            assert_eq!(e.kind(), S3ErrorKind::Locked);
            assert!(e.to_string().contains("is locked until"), "{e}");
            assert!(store.head(&key).await.unwrap().is_some(), "still there");
        }
        // A lock configured for a bucket without Object Lock.
        let mut cfg = config(&s3, s3.bucket(), "coffer/h1");
        cfg.object_lock = Some(ObjectLock {
            days: 1,
            mode: LockMode::Governance,
        });
        let store = S3Store::new(cfg).unwrap();
        let e = store.check().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "bucket '{}' of the store 'offsite' does not have S3 Object Lock enabled, but object-lock-days is set \
                 (create the bucket with Object Lock, or set object-lock-days = 0)",
                s3.bucket()
            )
        );
        // SeaweedFS, like AWS, refuses lock headers on such a bucket (400 InvalidRequest).
        let e = store
            .put_bytes("coffer/h1/app/nolock.json", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(matches!(e, S3Error::LockNotEnabled { .. }), "{e}");
        let e = store
            .put_file("coffer/h1/app/nolock.tar.zst", &src, &sha, &mut no_progress(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(e, S3Error::LockNotEnabled { .. }), "{e}");
        assert!(store.list_incomplete_uploads("coffer/h1/").await.unwrap().is_empty());
    });
}

#[test]
fn transient_503s_are_retried() {
    let s3 = require!(S3Server::start("s3_retries"));
    let rt = runtime();
    let (access, secret) = (s3.access_key().to_owned(), s3.secret_key().to_owned());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    let sha = write_test_file(&src, 20 << 20, 13);
    rt.block_on(async {
        // Every second connection gets 503 SlowDown on its first request.
        let proxy = FlakyProxy::start(s3.port(), 2).await;
        let endpoint = format!("http://{}", proxy.addr);
        let store = S3Store::new(test_config(&endpoint, s3.bucket(), "coffer/h1", &access, &secret)).unwrap();
        store.check().await.unwrap();
        let out = store
            .put_file(
                "coffer/h1/app/r.tar.zst",
                &src,
                &sha,
                &mut no_progress(),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(out.sha256, sha);
        assert!(
            proxy.refused.load(Ordering::SeqCst) >= 1,
            "the proxy refused nothing"
        );

        // A store that always answers 503: a transient error, after the retries.
        let always = FlakyProxy::start(s3.port(), 1).await;
        let store = S3Store::new(test_config(
            &format!("http://{}", always.addr),
            s3.bucket(),
            "coffer/h1",
            &access,
            &secret,
        ))
        .unwrap();
        let e = store
            .put_bytes("coffer/h1/x.json", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the store 'offsite' failed to upload 'coffer/h1/x.json': HTTP 503 SlowDown"
        );
        assert!(e.is_transient());
        assert_eq!(always.refused.load(Ordering::SeqCst), 4, "1 try + 3 retries");
    });
}
