//! Smoke tests of the server harness: each server starts, takes data, survives a
//! SIGKILL and a clean stop with its data, and is reachable the way Coffer will reach
//! it (libpq URI + passfile, MariaDB options file, S3 credentials file). Run them
//! side by side (`cargo test -- --test-threads=4`) to show instances do not clash.
//! Start-up times are printed as `TIMING ...` lines (`--nocapture` to see them).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use coffer_tests::require;
use coffer_tests::servers::{
    MariaDb, PgCluster, S3Client, S3Server, age_decrypt, age_encrypt, age_keygen, ssh_ed25519_keygen,
};

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("cannot run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

#[test]
fn postgres_serves_coffer_and_survives_kill9() {
    let mut pg = require!(PgCluster::start("pg_smoke"));
    println!(
        "TIMING postgres {} start {:?} (server user {:?})",
        pg.version(),
        pg.startup_time(),
        pg.server_user()
    );
    assert!(
        !pg.uri("shop").contains(pg.password()),
        "the URI must not hold the password"
    );
    assert_eq!(
        fs::metadata(pg.passfile()).unwrap().permissions().mode() & 0o777,
        0o600
    );

    pg.create_database("shop");
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text);\n\
         INSERT INTO items VALUES (1, 'one'), (2, 'two; it''s');",
    );
    assert_eq!(
        pg.psql("shop", "SELECT id, name FROM items ORDER BY id;"),
        "1|one\n2|two; it's"
    );
    assert!(pg.databases().contains(&"shop".to_owned()));

    // What Coffer does, with only the URI and PGPASSFILE: dump, validate, restore
    // into a scratch database, swap by renames, drop.
    let dump = pg.dir().join("shop.pgdump");
    ok(Command::new(pg.tool("pg_dump"))
        .env("PGPASSFILE", pg.passfile())
        .arg("--format=custom")
        .arg(format!("--file={}", dump.display()))
        .arg(format!("--dbname={}", pg.uri("shop"))));
    let list = ok(Command::new(pg.tool("pg_restore")).arg("--list").arg(&dump));
    assert!(list.contains("TABLE public items"), "{list}");
    pg.psql_as_coffer("postgres", "CREATE DATABASE shop__coffer_restore;")
        .unwrap();
    ok(Command::new(pg.tool("pg_restore"))
        .env("PGPASSFILE", pg.passfile())
        .args(["--exit-on-error", "--no-owner"])
        .arg(format!("--dbname={}", pg.uri("shop__coffer_restore")))
        .arg(&dump));
    pg.psql_as_coffer(
        "postgres",
        "ALTER DATABASE shop RENAME TO shop__coffer_old;\n\
         ALTER DATABASE shop__coffer_restore RENAME TO shop;\n\
         DROP DATABASE shop__coffer_old;",
    )
    .unwrap();
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM items;"), "2");

    // Other sessions are visible and the Coffer role may end them.
    let session = pg.open_session("shop");
    let ended = pg
        .psql_as_coffer(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = 'shop' AND pid <> pg_backend_pid();",
        )
        .unwrap();
    assert_eq!(ended, "1");
    drop(session);

    // Wrong password: refused.
    let bad = pg.dir().join("bad.pgpass");
    fs::write(&bad, "*:*:*:coffer:wrong\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(pg.tool("psql"))
        .env("PGPASSFILE", &bad)
        .args(["-X", "-w", "-c", "SELECT 1", "-d", &pg.uri("shop")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));

    let pid = pg.pid();
    let began = Instant::now();
    pg.kill9();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    pg.start_again();
    println!("TIMING postgres restart after kill9 {:?}", began.elapsed());
    assert_ne!(pg.pid(), pid);
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM items;"), "2");

    pg.psql("shop", "INSERT INTO items VALUES (3, 'three');");
    pg.stop();
    assert!(!pg.is_running());
    assert!(pg.try_psql("shop", "SELECT 1;").is_err());
    pg.start_again();
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM items;"), "3");
    pg.drop_database("shop");
    assert!(!pg.databases().contains(&"shop".to_owned()));
}

#[test]
fn postgres_pgbench_database_has_about_the_asked_size() {
    let pg = require!(PgCluster::start("pg_bench"));
    let began = Instant::now();
    let size = pg.pgbench_database("bench", 40);
    let mib = size as f64 / (1024.0 * 1024.0);
    println!(
        "TIMING pgbench 40 MiB asked: {mib:.1} MiB in {:?}",
        began.elapsed()
    );
    assert!((25.0..60.0).contains(&mib), "{mib} MiB");
    // Owned by the Coffer role, so a dump as that role sees everything.
    assert_eq!(
        pg.psql_as_coffer("bench", "SELECT count(*) FROM pgbench_branches;")
            .unwrap(),
        "2"
    );
}

#[test]
fn postgres_start_again_while_running_is_refused() {
    // start_again on a running server is a bug in the test, and says so.
    let mut pg = require!(PgCluster::start("pg_double"));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pg.start_again()));
    assert!(result.is_err());
    assert!(pg.is_running());
}

// ---------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------

#[test]
fn mariadb_serves_coffer_and_survives_kill9() {
    let mut db = require!(MariaDb::start("my_smoke"));
    println!("TIMING mariadb {} start {:?}", db.version(), db.startup_time());
    let opts = fs::read_to_string(db.options_file()).unwrap();
    assert!(opts.starts_with("[client]\n") && opts.contains(db.password()));
    assert_eq!(
        fs::metadata(db.options_file()).unwrap().permissions().mode() & 0o777,
        0o600
    );

    db.create_database("shop");
    db.sql(
        "shop",
        "CREATE TABLE items (id INT PRIMARY KEY, name TEXT) ENGINE=InnoDB;\n\
         INSERT INTO items VALUES (1, 'one'), (2, 'zwei ü');\n\
         CREATE VIEW v AS SELECT name FROM items;\n\
         CREATE TRIGGER t BEFORE INSERT ON items FOR EACH ROW SET NEW.name = NEW.name;\n\
         CREATE PROCEDURE p() SELECT 1;",
    );
    assert_eq!(
        db.sql("shop", "SELECT id, name FROM items ORDER BY id;"),
        "1\tone\n2\tzwei ü"
    );

    // What Coffer does with only the options file: dump, validate, load into a
    // scratch schema, swap tables in with RENAME TABLE, drop the scratch schema.
    let dump = ok(Command::new(db.tool("mariadb-dump"))
        .arg(format!("--defaults-extra-file={}", db.options_file().display()))
        .args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "shop",
        ]));
    assert!(
        dump.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("-- Dump completed")
    );
    db.sql_as_coffer("", "CREATE DATABASE shop__coffer_restore;")
        .unwrap();
    db.sql_as_coffer("shop__coffer_restore", &dump).unwrap();
    // RENAME TABLE across schemas refuses tables with triggers ("Trigger in wrong
    // schema"): triggers are dropped before the swap and recreated after it.
    let err = db
        .sql_as_coffer("", "RENAME TABLE shop.items TO shop__coffer_restore.items_old;")
        .unwrap_err();
    assert!(err.contains("Trigger in wrong schema"), "{err}");
    db.sql_as_coffer(
        "",
        "CREATE DATABASE shop__coffer_old;\n\
         DROP TRIGGER shop.t; DROP TRIGGER shop__coffer_restore.t;\n\
         RENAME TABLE shop.items TO shop__coffer_old.items, shop__coffer_restore.items TO shop.items;\n\
         CREATE TRIGGER shop.t BEFORE INSERT ON shop.items FOR EACH ROW SET NEW.name = NEW.name;\n\
         DROP DATABASE shop__coffer_old; DROP DATABASE shop__coffer_restore;",
    )
    .unwrap();
    assert_eq!(db.sql("shop", "SELECT count(*) FROM items;"), "2");

    // Other sessions are visible and the Coffer account may end them.
    let session = db.open_session("shop");
    let id = db
        .sql_as_coffer(
            "",
            "SELECT id FROM information_schema.processlist WHERE db = 'shop' LIMIT 1;",
        )
        .unwrap();
    db.sql_as_coffer("", &format!("KILL {id};")).unwrap();
    drop(session);

    // Wrong password: refused.
    let bad = db.dir().join("bad.cnf");
    fs::write(
        &bad,
        format!(
            "[client]\nsocket={}\nuser=coffer\npassword=wrong\n",
            db.socket().display()
        ),
    )
    .unwrap();
    let out = Command::new(db.tool("mariadb"))
        .arg(format!("--defaults-file={}", bad.display()))
        .args(["-e", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Access denied"));

    let pid = db.pid();
    let began = Instant::now();
    db.sql(
        "shop",
        "INSERT INTO items VALUES (3, 'committed just before the crash');",
    );
    db.kill9();
    db.start_again();
    println!("TIMING mariadb restart after kill9 {:?}", began.elapsed());
    assert_ne!(db.pid(), pid);
    assert_eq!(db.sql("shop", "SELECT count(*) FROM items;"), "3");
    db.stop();
    assert!(!db.is_running());
    db.start_again();
    assert_eq!(db.databases(), vec!["shop".to_owned()]);
    db.drop_database("shop");
    assert!(db.databases().is_empty());
}

// ---------------------------------------------------------------------------
// S3
// ---------------------------------------------------------------------------

#[test]
fn s3_authenticates_stores_and_survives_kill9() {
    let mut s3 = require!(S3Server::start("s3_smoke"));
    println!(
        "TIMING seaweedfs {} start {:?} at {}",
        s3.version(),
        s3.startup_time(),
        s3.endpoint()
    );
    let c = s3.client();
    let buckets = c.list_buckets().unwrap();
    assert!(buckets.contains(&s3.bucket().to_owned()) && buckets.contains(&s3.locked_bucket().to_owned()));

    let b = s3.bucket();
    c.put_object(b, "coffer/host/app/1.tar.zst", b"archive bytes")
        .unwrap();
    c.put_object(b, "coffer/host/app/1.json", b"{}").unwrap();
    c.put_object(b, "other/x", b"x").unwrap();
    let listed = c.list_objects(b, "coffer/host/").unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.key.as_str(), o.size))
            .collect::<Vec<_>>(),
        [("coffer/host/app/1.json", 2), ("coffer/host/app/1.tar.zst", 13)]
    );
    assert_eq!(listed[1].etag, md5_of(b"archive bytes"));
    assert_eq!(
        c.get_object(b, "coffer/host/app/1.tar.zst").unwrap(),
        b"archive bytes"
    );
    let file = s3.dir().join("got");
    c.get_object_to_file(b, "coffer/host/app/1.tar.zst", &file)
        .unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"archive bytes");
    assert_eq!(c.get_object(b, "missing").unwrap_err().code, "NoSuchKey");
    c.delete_object(b, "other/x").unwrap();
    assert!(c.list_objects(b, "other/").unwrap().is_empty());

    // Wrong credentials are refused.
    let wrong_secret = S3Client::new(&s3.endpoint(), s3.access_key(), "not-the-secret");
    assert_eq!(
        wrong_secret.list_objects(b, "").unwrap_err().code,
        "SignatureDoesNotMatch"
    );
    let wrong_key = S3Client::new(&s3.endpoint(), "AKNOTAKEY", s3.secret_key());
    assert_eq!(
        wrong_key.list_objects(b, "").unwrap_err().code,
        "InvalidAccessKeyId"
    );

    // The credentials file, as Coffer reads it.
    let creds = s3.dir().join("offsite.credentials");
    s3.write_credentials_file(&creds);
    let text = fs::read_to_string(&creds).unwrap();
    assert!(text.starts_with("[default]\naws_access_key_id = "));
    assert_eq!(fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);

    // An orphan multipart upload is visible.
    let upload = c
        .start_multipart_upload(b, "coffer/host/app/2.tar.zst", 1, 5 << 20)
        .unwrap();
    let uploads = c.list_multipart_uploads(b).unwrap();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        (uploads[0].key.as_str(), uploads[0].upload_id.as_str()),
        ("coffer/host/app/2.tar.zst", upload.as_str())
    );

    let pid = s3.pid();
    let began = Instant::now();
    s3.kill9();
    assert!(c.list_buckets().is_err());
    s3.start_again();
    println!("TIMING seaweedfs restart after kill9 {:?}", began.elapsed());
    assert_ne!(s3.pid(), pid);
    assert_eq!(
        c.get_object(b, "coffer/host/app/1.tar.zst").unwrap(),
        b"archive bytes"
    );
    assert_eq!(c.list_multipart_uploads(b).unwrap().len(), 1);

    s3.stop();
    assert!(!s3.is_running());
    s3.start_again();
    assert_eq!(c.list_objects(b, "coffer/").unwrap().len(), 2);
}

#[test]
fn s3_object_lock_refuses_deleting_a_locked_version() {
    let s3 = require!(S3Server::start("s3_lock"));
    let c = s3.client();
    let lb = s3.locked_bucket();
    let until = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + 86_400;

    let version = c
        .put_object_locked(lb, "k", b"locked", "COMPLIANCE", until)
        .unwrap();
    assert!(!version.is_empty());
    let head = c.head_object(lb, "k", None).unwrap();
    assert_eq!(head.lock_mode.as_deref(), Some("COMPLIANCE"));
    assert!(head.lock_retain_until.is_some(), "{head:?}");
    assert_eq!(head.version_id.as_deref(), Some(version.as_str()));

    let refused = c.delete_object_version(lb, "k", &version, false).unwrap_err();
    assert_eq!(refused.code, "AccessDenied");
    let refused = c.delete_object_version(lb, "k", &version, true).unwrap_err();
    assert_eq!(
        refused.code, "AccessDenied",
        "COMPLIANCE ignores the governance bypass"
    );
    // Without a version id: only a delete marker; the locked version stays.
    c.delete_object(lb, "k").unwrap();
    let versions = c.list_object_versions(lb, "k").unwrap();
    assert!(versions.iter().any(|v| v.is_delete_marker));
    assert!(
        versions
            .iter()
            .any(|v| v.version_id == version && !v.is_delete_marker)
    );

    let gov = c.put_object_locked(lb, "g", b"gov", "GOVERNANCE", until).unwrap();
    assert_eq!(
        c.delete_object_version(lb, "g", &gov, false).unwrap_err().code,
        "AccessDenied"
    );
    c.delete_object_version(lb, "g", &gov, true).unwrap();

    // Lock headers on a bucket without Object Lock are refused.
    let plain = c
        .put_object_locked(s3.bucket(), "p", b"p", "COMPLIANCE", until)
        .unwrap_err();
    assert_eq!(plain.code, "InvalidRequest");
}

/// MD5 hex via md5sum(1): the tests have no MD5 crate.
fn md5_of(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------
// Several servers at once
// ---------------------------------------------------------------------------

#[test]
fn two_of_each_are_isolated() {
    let pg1 = require!(PgCluster::start("iso_pg1"));
    let pg2 = require!(PgCluster::start("iso_pg2"));
    assert_ne!(pg1.socket_dir(), pg2.socket_dir());
    pg1.create_database("only_in_one");
    assert!(!pg2.databases().contains(&"only_in_one".to_owned()));

    let my1 = require!(MariaDb::start("iso_my1"));
    let my2 = require!(MariaDb::start("iso_my2"));
    println!(
        "TIMING mariadb second start in a process {:?}",
        my2.startup_time()
    );
    my1.create_database("only_in_one");
    assert!(my2.databases().is_empty());
    assert_ne!(my1.password(), my2.password());

    let s1 = require!(S3Server::start("iso_s3a"));
    let s2 = require!(S3Server::start("iso_s3b"));
    assert_ne!(s1.endpoint(), s2.endpoint());
    s1.client().put_object(s1.bucket(), "only-in-one", b"1").unwrap();
    assert!(s2.client().list_objects(s2.bucket(), "").unwrap().is_empty());
    // One server's credentials are not valid on the other.
    let cross = S3Client::new(&s2.endpoint(), s1.access_key(), s1.secret_key());
    assert_eq!(cross.list_buckets().unwrap_err().code, "InvalidAccessKeyId");

    let dir = pg1.dir().to_owned();
    drop(pg1);
    assert!(!dir.exists(), "the cluster's directory is removed on drop");
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

#[test]
fn age_and_ssh_keys_encrypt_and_decrypt_with_the_real_tools() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = require!(age_keygen(dir.path()));
    let (ssh_key, ssh_pub) = require!(ssh_ed25519_keygen(dir.path()));
    let (other, _) = require!(age_keygen(dir.path()));
    assert_ne!(identity, other);
    assert!(recipient.starts_with("age1"));
    assert!(ssh_pub.starts_with("ssh-ed25519 AAAA"));
    assert_eq!(
        fs::metadata(&identity).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let plain = dir.path().join("plain");
    fs::write(&plain, b"secret archive").unwrap();
    let sealed = dir.path().join("plain.age");
    age_encrypt(&[&recipient, &ssh_pub], &plain, &sealed).unwrap();
    for key in [&identity, &ssh_key] {
        let out = dir.path().join("out");
        age_decrypt(key, &sealed, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"secret archive");
    }
    let err = age_decrypt(&other, &sealed, &dir.path().join("nope")).unwrap_err();
    assert!(err.contains("no identity matched"), "{err}");
}
