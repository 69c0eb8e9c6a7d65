//! PostgreSQL jobs against a real server the test starts itself (`PgCluster`): a
//! backup under a ledger writer restores a consistent copy with every kind of object;
//! in-place restores (after changes, refused while a session is connected, `--force`,
//! a failure injected mid-restore, `kill -9` during the swap); `--to-database`; the
//! failures that must archive nothing (wrong password, unreachable server, missing
//! database, dump killed mid-way); passwords never in argv, logs or errors; a missing
//! tool is a per-job problem, not a start-up failure.
//!
//! The shop database is owned by the application role `app` and Coffer's role is a
//! member of it (`GRANT app TO coffer`), as the README tells a deployment to do.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coffer_tests::servers::{PgCluster, Skip};
use coffer_tests::{
    Daemon, archive_entries, assert_tree_eq, extract_archive, make_media, names_in, require, short_tempdir,
    source_job_toml, toml_str, wait_until,
};

use crate::restore::{backup_id, copy_tree, list_ids, str_of};

/// The shop: a ledger whose total is invariant (100 accounts of 1000; `meta.n`
/// counts the moves), a sequence, a view, functions, a trigger, and `BULK` rows of
/// filler so that a dump takes a moment.
const SCHEMA: &str = r#"
SET ROLE app;
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 100) g;
CREATE TABLE moves (id bigserial PRIMARY KEY, src int, dst int, amount int);
CREATE TABLE meta (n bigint NOT NULL);
INSERT INTO meta VALUES (0);
CREATE SEQUENCE invoice_no START 1000 INCREMENT 7;
SELECT setval('invoice_no', 1042);
CREATE TABLE product (id serial PRIMARY KEY, name text NOT NULL UNIQUE, price numeric(10,2));
CREATE TABLE audit (id serial PRIMARY KEY, what text);
CREATE FUNCTION product_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (what) VALUES ('product ' || NEW.name); RETURN NEW; END $$;
CREATE TRIGGER product_audit AFTER INSERT ON product FOR EACH ROW EXECUTE FUNCTION product_audit();
CREATE FUNCTION total_balance() RETURNS bigint LANGUAGE sql AS 'SELECT sum(balance)::bigint FROM accounts';
CREATE VIEW rich AS SELECT id, balance FROM accounts WHERE balance > 1000;
INSERT INTO product (name, price) VALUES ('tea', 3.50), ('cake', 2.25);
CREATE TABLE bulk (id int PRIMARY KEY, payload text);
INSERT INTO bulk SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, BULK) g;
RESET ROLE;
"#;

/// A query whose output fingerprints the whole shop (rows of every table, the
/// sequence, the view, the functions and the trigger's existence).
const FINGERPRINT: &str = "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (
  SELECT 'a' || id || ':' || balance AS t FROM accounts
  UNION ALL SELECT 'm' || id || ':' || src || ':' || dst || ':' || amount FROM moves
  UNION ALL SELECT 'n' || n FROM meta
  UNION ALL SELECT 'p' || id || ':' || name || ':' || price FROM product
  UNION ALL SELECT 'u' || id || ':' || what FROM audit
  UNION ALL SELECT 'b' || count(*) || ':' || md5(string_agg(payload, '' ORDER BY id)) FROM bulk
  UNION ALL SELECT 's' || last_value FROM invoice_no
  UNION ALL SELECT 'v' || count(*) FROM rich
  UNION ALL SELECT 'f' || total_balance()
  UNION ALL SELECT 't' || tgname FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT 'c' || column_name FROM information_schema.columns WHERE table_schema = 'public'
) x;";

/// A server with the shop database `db` (owned by `app`, Coffer a member of `app`).
pub(crate) fn shop(name: &str, db: &str, bulk: u32) -> Result<PgCluster, Skip> {
    let pg = PgCluster::start(name)?;
    pg.create_database_owned_by(db, "app");
    pg.psql("postgres", "GRANT app TO coffer;");
    pg.psql(db, &SCHEMA.replace("BULK", &bulk.to_string()));
    Ok(pg)
}

/// The `[[job]]` of a PostgreSQL job `name` on database `db` with `media`.
pub(crate) fn pg_job(pg: &PgCluster, name: &str, db: &str, media: &[&Path], extra: &str) -> String {
    let source = format!(
        "postgres = {}\npostgres-passfile = {}\npg-bin-dir = {}",
        toml_str(&pg.uri(db)),
        toml_str(&pg.passfile().display().to_string()),
        toml_str(&pg.tool("pg_dump").parent().unwrap().display().to_string()),
    );
    source_job_toml(name, &source, media, extra)
}

/// The shop's fingerprint in `db`.
fn fingerprint(pg: &PgCluster, db: &str) -> String {
    pg.psql(db, FINGERPRINT)
}

/// The databases Coffer made beside `db` (scratch copies left behind would be a bug).
fn scratch_databases(pg: &PgCluster, db: &str) -> Vec<String> {
    pg.databases()
        .into_iter()
        .filter(|d| d.starts_with(&format!("{db}__coffer")))
        .collect()
}

/// A psql session as `app` on `db`, fed statements on stdin.
struct AppSession {
    child: Child,
}

impl AppSession {
    fn open(pg: &PgCluster, db: &str) -> AppSession {
        let child = Command::new(pg.tool("psql"))
            .env("PGPASSFILE", pg.dir().join("admin.pgpass"))
            .args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(pg.uri(db).replace("user=coffer", "user=app"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start psql");
        AppSession { child }
    }

    fn send(&mut self, sql: &str) {
        let stdin = self.child.stdin.as_mut().expect("psql has no stdin");
        writeln!(stdin, "{sql}").expect("psql went away");
        stdin.flush().unwrap();
    }

    /// Closes stdin and checks that psql ended without an error.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the app session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Moves money in `db` every ~2 ms until `stop`; returns the number of moves sent.
fn ledger_writer(pg: &PgCluster, db: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut session = AppSession::open(pg, db);
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (a, b, amount) = (n % 100 + 1, (n * 7 + 3) % 100 + 1, n % 50 + 1);
            session.send(&format!(
                "BEGIN; UPDATE accounts SET balance = balance - {amount} WHERE id = {a}; \
                 UPDATE accounts SET balance = balance + {amount} WHERE id = {b}; \
                 INSERT INTO moves (src, dst, amount) VALUES ({a}, {b}, {amount}); \
                 UPDATE meta SET n = n + 1; COMMIT;"
            ));
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        session.finish();
        n
    })
}

/// Asserts the ledger in `db` is one consistent state; returns its move count.
fn check_ledger(pg: &PgCluster, db: &str) -> u64 {
    let row = pg.psql(
        db,
        "SELECT sum(balance), (SELECT n FROM meta), (SELECT count(*) FROM moves) FROM accounts;",
    );
    let v: Vec<u64> = row.split('|').map(|x| x.parse().unwrap()).collect();
    assert_eq!(v[0], 100_000, "the ledger in {db} does not balance: {row}");
    assert_eq!(v[1], v[2], "moves and their counter disagree in {db}: {row}");
    v[1]
}

#[test]
fn backup_under_a_writer_restores_a_consistent_copy_with_every_object() {
    let pg = require!(shop("pg_ledger", "shop", 60_000));
    let dir = short_tempdir("coffer-pg-");
    let media = dir.path().join("uploads");
    make_media(&media);
    let d = Daemon::start("", &pg_job(&pg, "shop", "shop", &[&media], ""));

    let stop = Arc::new(AtomicBool::new(false));
    let writer = ledger_writer(&pg, "shop", stop.clone());
    wait_until("the writer has committed", Duration::from_secs(30), || {
        pg.psql("shop", "SELECT n FROM meta;").parse::<u64>().unwrap() >= 20
    });
    let backup = d.backup("shop");
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    let id = str_of(&backup, "id").to_owned();

    // What the catalog and the manifest say.
    let source = &backup["source"];
    assert_eq!(source["kind"], "postgres", "{backup}");
    assert_eq!(source["database"], "shop");
    assert!(
        str_of(source, "server-version").starts_with(pg.version()),
        "{source}"
    );
    assert!(str_of(source, "tool-version").contains("pg_dump"), "{source}");
    let shown = d.ctl(&["show", &id]).expect_ok();
    assert!(shown.stdout.contains("shop on PostgreSQL"), "{shown}");
    let listed = d.ctl(&["list"]).expect_ok();
    assert!(listed.stdout.contains("postgres shop ("), "{listed}");
    let status = d.job_status("shop");
    assert_eq!(status["source-kind"], "postgres");
    assert_eq!(status["database-name"], "shop");
    assert!(str_of(&status, "server-version").starts_with(pg.version()));
    let jobs = d.ctl(&["jobs"]).expect_ok();
    assert!(jobs.stdout.contains("postgres postgresql:///shop"), "{jobs}");
    let metrics = d.ctl(&["metrics"]).expect_ok().stdout;
    assert!(
        metrics.contains("coffer_job_source_info{job=\"shop\",kind=\"postgres\",database=\"shop\""),
        "{metrics}"
    );

    // The archive, read by hand: the dump, the media, a manifest with the facts.
    let archive = d.paths.archive("shop", &id);
    let entries: Vec<String> = archive_entries(&archive).into_iter().map(|e| e.path).collect();
    assert!(entries.contains(&"db/shop.pgdump".to_owned()), "{entries:?}");
    assert!(entries.iter().any(|e| e.starts_with("media/0/")), "{entries:?}");
    let unpacked = dir.path().join("unpacked");
    let manifest = extract_archive(&archive, &unpacked);
    assert_eq!(manifest["format-version"], 2);
    assert_eq!(manifest["source"]["kind"], "postgres");
    assert!(manifest["source"]["size"].as_u64().unwrap() > 0);
    assert_tree_eq(&media, &unpacked.join("media/0"));

    // `restore --to DIR` writes the same dump file and the media.
    let to = dir.path().join("to");
    d.ctl_json(&["restore", &id, "--to", to.to_str().unwrap()]);
    assert_eq!(
        coffer_tests::sha256_file(&to.join("db/shop.pgdump")),
        coffer_tests::sha256_file(&unpacked.join("db/shop.pgdump"))
    );
    assert_tree_eq(&media, &to.join("media/0"));

    // Restored by hand with pg_restore, as the README says.
    pg.psql("postgres", "CREATE DATABASE byhand OWNER app;");
    let restored = Command::new(pg.tool("pg_restore"))
        .env("PGPASSFILE", pg.dir().join("admin.pgpass"))
        .args(["-w", "--exit-on-error", "-d"])
        .arg(pg.uri("byhand").replace("user=coffer", "user=postgres"))
        .arg(unpacked.join("db/shop.pgdump"))
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "pg_restore by hand: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let by_hand = check_ledger(&pg, "byhand");

    // Restored by Coffer into a new database: the same consistent state.
    let out = d.ctl_json(&["restore", &id, "--to-database", "copy"]);
    assert_eq!(out["database-name"], "copy");
    let moves = check_ledger(&pg, "copy");
    assert_eq!(moves, by_hand, "both restores hold the snapshot");
    assert!(
        moves >= 20 && moves < sent,
        "snapshot not taken mid-stream: {moves} of {sent}"
    );
    assert_eq!(fingerprint(&pg, "copy"), fingerprint(&pg, "byhand"));
    assert_eq!(pg.psql("copy", "SELECT last_value FROM invoice_no;"), "1042");
    assert_eq!(pg.psql("copy", "SELECT total_balance();"), "100000");
    assert_eq!(pg.psql("copy", "SELECT count(*) FROM bulk;"), "60000");
    pg.psql("copy", "INSERT INTO product (name, price) VALUES ('bread', 4);");
    assert_eq!(
        pg.psql("copy", "SELECT what FROM audit ORDER BY id DESC LIMIT 1;"),
        "product bread",
        "the trigger was restored"
    );
    assert_eq!(
        pg.psql(
            "copy",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'copy';"
        ),
        "app",
        "the owner was restored"
    );

    // Deep verify restores into a scratch database and drops it.
    let verified = d.ctl_json(&["verify", &id, "--deep"]);
    assert_eq!(verified["ok"], true);
    assert!(scratch_databases(&pg, "shop").is_empty(), "{:?}", pg.databases());
    assert!(names_in(&d.paths.staging).is_empty());
}

/// Changes the shop (rows, schema, the sequence) and its media, deterministically:
/// applied to the backed-up state it always gives the same state.
fn change_shop(pg: &PgCluster, db: &str, media: &Path) {
    pg.psql(
        db,
        "SET ROLE app;
         UPDATE accounts SET balance = balance + 5 WHERE id = 1;
         UPDATE accounts SET balance = balance - 5 WHERE id = 2;
         DELETE FROM product WHERE name = 'tea';
         ALTER TABLE product ADD COLUMN extra int;
         SELECT setval('invoice_no', 2000);
         CREATE TABLE newer (x int);
         RESET ROLE;",
    );
    std::fs::write(media.join("added-later.txt"), "after the backup").unwrap();
    std::fs::remove_file(media.join("empty")).unwrap();
}

/// The files of the restore journal (empty when no restore is half-done).
fn journal(d: &Daemon) -> Vec<String> {
    names_in(&d.paths.state_dir.join("journal"))
}

/// A shop with media, its daemon, a backup of state A (returned with A's fingerprint
/// and a copy of A's media), then the changes that make state B.
struct Scene {
    pg: PgCluster,
    d: Daemon,
    media: PathBuf,
    id: String,
    a: String,
    a_media: PathBuf,
    b: String,
    _dir: tempfile::TempDir,
}

fn scene(name: &str, bulk: u32) -> Result<Scene, Skip> {
    let pg = shop(name, "shop", bulk)?;
    let dir = short_tempdir("coffer-pg-");
    let media = dir.path().join("uploads");
    make_media(&media);
    let d = Daemon::start("", &pg_job(&pg, "shop", "shop", &[&media], ""));
    let a = fingerprint(&pg, "shop");
    let a_media = dir.path().join("media-a");
    copy_tree(&media, &a_media);
    let id = backup_id(&d, "shop");
    change_shop(&pg, "shop", &media);
    let b = fingerprint(&pg, "shop");
    assert_ne!(a, b);
    Ok(Scene {
        pg,
        d,
        media,
        id,
        a,
        a_media,
        b,
        _dir: dir,
    })
}

#[test]
fn in_place_restore_brings_back_the_backup_and_keeps_a_pinned_safety_backup() {
    let s = require!(scene("pg_in_place", 2_000));
    let out = s.d.ctl_json(&["restore", &s.id, "--yes"]);
    assert_eq!(
        fingerprint(&s.pg, "shop"),
        s.a,
        "the live database equals the backup"
    );
    assert_eq!(s.pg.psql("shop", "SELECT to_regclass('newer') IS NULL;"), "t");
    assert_eq!(
        s.pg.psql(
            "shop",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop';"
        ),
        "app"
    );
    assert_tree_eq(&s.a_media, &s.media);
    assert_eq!(out["database-name"], "shop");
    assert!(
        scratch_databases(&s.pg, "shop").is_empty(),
        "{:?}",
        s.pg.databases()
    );
    assert!(journal(&s.d).is_empty(), "{:?}", journal(&s.d));
    assert!(names_in(&s.d.paths.staging).is_empty());

    // The safety backup is pinned and holds state B.
    let safety = str_of(&out, "safety-backup-id");
    let listed = s.d.list(Some("shop"));
    let entry = listed
        .iter()
        .find(|b| b["id"] == safety)
        .expect("the safety backup is listed");
    assert_eq!(entry["protected"], true);
    assert_eq!(entry["note"], "pre-restore");
    s.d.ctl_json(&["restore", safety, "--to-database", "before_restore"]);
    assert_eq!(fingerprint(&s.pg, "before_restore"), s.b);
}

#[test]
fn in_place_restore_is_refused_while_a_session_is_connected_and_force_ends_it() {
    let s = require!(scene("pg_in_use", 2_000));
    let session = s.pg.open_session("shop");
    let before = list_ids(&s.d);
    let out = s.d.ctl(&["restore", &s.id, "--yes"]);
    let sentence = out.error_sentence();
    assert_eq!(out.code, 1, "{out}");
    assert!(
        sentence.contains("database 'shop' is in use by 1 other session(s)") && sentence.contains("--force"),
        "{sentence}"
    );
    assert_eq!(fingerprint(&s.pg, "shop"), s.b, "the live database is untouched");
    assert!(s.media.join("added-later.txt").exists());
    assert!(
        scratch_databases(&s.pg, "shop").is_empty(),
        "{:?}",
        s.pg.databases()
    );
    assert_eq!(list_ids(&s.d), before, "no safety backup was taken");

    s.d.ctl_json(&["restore", &s.id, "--yes", "--force"]);
    assert_eq!(fingerprint(&s.pg, "shop"), s.a);
    assert_eq!(
        s.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' AND usename = 'app';"
        ),
        "0",
        "--force ended the session"
    );
    drop(session);
}

#[test]
fn a_failure_mid_restore_leaves_the_live_database_untouched() {
    let s = require!(scene("pg_mid_fail", 100_000));
    let before = list_ids(&s.d);
    let mut child = s.d.ctl_spawn(&["restore", &s.id, "--yes"]);
    // Cut the restore into the scratch database off, as a crashing server would.
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = 'shop__coffer_restore' AND backend_type = 'client backend';";
    wait_until("the scratch restore was cut off", Duration::from_secs(60), || {
        s.pg.psql("postgres", terminate) != "0"
    });
    let status = coffer_tests::wait_timeout(&mut child, Duration::from_secs(60)).expect("restore hangs");
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the restore into database 'shop__coffer_restore' failed"),
        "{stderr}"
    );
    assert_eq!(fingerprint(&s.pg, "shop"), s.b, "the live database is untouched");
    assert!(
        s.media.join("added-later.txt").exists(),
        "the media are untouched"
    );
    assert!(
        scratch_databases(&s.pg, "shop").is_empty(),
        "{:?}",
        s.pg.databases()
    );
    assert_eq!(list_ids(&s.d), before);
    assert!(journal(&s.d).is_empty() && names_in(&s.d.paths.staging).is_empty());
}

/// The live shop must be exactly state A or exactly B, database and media alike.
fn a_or_b(s: &Scene) -> char {
    let live = fingerprint(&s.pg, "shop");
    let media_a = coffer_tests::tree_difference(&s.a_media, &s.media).is_none();
    if live == s.a {
        assert!(media_a, "database A with media B");
        'A'
    } else {
        assert_eq!(
            live, s.b,
            "the live database is neither the backup nor the state before"
        );
        assert!(
            !media_a && s.media.join("added-later.txt").exists(),
            "database B with media A"
        );
        'B'
    }
}

/// Starts `restore ID --yes` and returns the client once it reports the swap phase,
/// with the time it did so.
fn restore_until_swap(d: &Daemon, id: &str) -> (Child, Instant) {
    let mut child = d.ctl_spawn(&["restore", id, "--yes"]);
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
        if line.contains(": swap") {
            break;
        }
    }
    (child, Instant::now())
}

#[test]
fn kill9_during_the_swap_leaves_the_live_database_exactly_old_or_new() {
    let mut s = require!(scene("pg_kill9", 2_000));
    // How long a clean swap takes, from the moment the client reports it.
    let (mut child, began) = restore_until_swap(&s.d, &s.id);
    let status = coffer_tests::wait_timeout(&mut child, Duration::from_secs(60)).expect("restore hangs");
    let swap = began.elapsed();
    assert!(status.success());
    assert_eq!(a_or_b(&s), 'A');
    change_shop(&s.pg, "shop", &s.media);
    let mut seen = Vec::new();
    for fraction in [0.0, 0.1, 0.2, 0.4, 1.1] {
        let delay = swap.mul_f64(fraction);
        let (mut child, _) = restore_until_swap(&s.d, &s.id);
        std::thread::sleep(delay);
        s.d.kill();
        let _ = coffer_tests::wait_timeout(&mut child, Duration::from_secs(30));
        s.d.start_again();
        let state = a_or_b(&s);
        seen.push(state);
        assert!(
            scratch_databases(&s.pg, "shop").is_empty(),
            "after a kill {delay:?} into the swap: {:?}",
            s.pg.databases()
        );
        assert!(journal(&s.d).is_empty(), "{:?}", journal(&s.d));
        if state == 'A' {
            change_shop(&s.pg, "shop", &s.media);
            assert_eq!(fingerprint(&s.pg, "shop"), s.b);
        }
    }
    let log = s.d.log();
    println!(
        "a clean swap took {swap:?}; states after kill -9 during it: {seen:?}; database swaps recovered: {} rolled back, {} finished",
        log.matches("rolled back the database swap").count(),
        log.matches("finished the database swap").count()
    );
    for backup in s.d.list(Some("shop")) {
        if backup["note"] == "pre-restore" {
            assert_eq!(backup["protected"], true);
        }
    }
}

/// The pids and command lines of every process whose command line mentions `needle`.
pub(crate) fn cmdlines_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if line.contains(needle) {
                out.push((pid, line));
            }
        }
    }
    out
}

/// Sends SIGKILL to the process `pid`.
pub(crate) fn kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "cannot kill {pid}");
}

/// Asserts that a failed `cofferctl` said one sentence containing `phrase`, and that
/// nothing was archived for `job`.
#[track_caller]
pub(crate) fn failed_cleanly(d: &Daemon, job: &str, out: &coffer_tests::Output, phrase: &str) -> String {
    assert_eq!(out.code, 1, "{out}");
    let sentence = out.error_sentence();
    println!("{job}: {sentence}");
    assert!(sentence.contains(phrase), "want {phrase:?} in {sentence:?}");
    assert!(
        d.list(Some(job)).is_empty() || job == "shop",
        "{job} has a backup"
    );
    let dir = d.paths.backup_dir.join(job);
    assert!(
        !dir.exists() || names_in(&dir).is_empty() || job == "shop",
        "{job}: {:?}",
        names_in(&dir)
    );
    assert!(
        names_in(&d.paths.staging).is_empty(),
        "{:?}",
        names_in(&d.paths.staging)
    );
    sentence
}

#[test]
fn failures_are_one_sentence_archive_nothing_and_keep_the_password_out() {
    let pg = require!(shop("pg_failures", "shop", 100_000));
    let dir = short_tempdir("coffer-pg-");
    let wrong = dir.path().join("wrong.pgpass");
    let line = std::fs::read_to_string(pg.passfile()).unwrap();
    let real = pg.password();
    std::fs::write(&wrong, line.replace(real, "not-the-password-4711")).unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let nowhere = dir.path().join("no-server");
    std::fs::create_dir(&nowhere).unwrap();
    let jobs = [
        pg_job(&pg, "shop", "shop", &[], ""),
        pg_job(&pg, "gone", "nope", &[], ""),
        pg_job(&pg, "wrongpw", "shop", &[], "")
            .replace(&pg.passfile().display().to_string(), &wrong.display().to_string()),
        pg_job(&pg, "down", "shop", &[], "").replace(
            &pg.socket_dir().display().to_string(),
            &nowhere.display().to_string(),
        ),
    ];
    let d = Daemon::start("", &jobs.join("\n"));
    let first = backup_id(&d, "shop");

    let out = d.ctl(&["backup", "wrongpw"]);
    failed_cleanly(
        &d,
        "wrongpw",
        &out,
        "password authentication failed for user \"coffer\"",
    );
    let out = d.ctl(&["backup", "gone"]);
    failed_cleanly(&d, "gone", &out, "database 'nope' does not exist");
    let out = d.ctl(&["backup", "down"]);
    failed_cleanly(&d, "down", &out, "the server is not reachable");

    // A dump killed mid-way: no archive, the earlier backup intact. Meanwhile every
    // tool's command line is checked for the password.
    let mut child = d.ctl_spawn(&["backup", "shop"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pg_dump = loop {
        let found = cmdlines_with(&pg.uri("shop"));
        seen.extend(found.iter().map(|(_, line)| line.clone()));
        if let Some((pid, _)) = found
            .iter()
            .find(|(_, l)| l.contains("pg_dump") && l.contains("--snapshot="))
        {
            break *pid;
        }
        assert!(Instant::now() < deadline, "pg_dump never showed up");
        std::thread::sleep(Duration::from_millis(2));
    };
    kill9(pg_dump);
    let status = coffer_tests::wait_timeout(&mut child, Duration::from_secs(60)).expect("backup hangs");
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("killed dump: {}", stderr.lines().last().unwrap_or_default());
    assert!(
        stderr.contains("the dump of database 'shop' failed: pg_dump was killed (signal 9, SIGKILL)"),
        "{stderr}"
    );
    assert_eq!(list_ids(&d), vec![first.clone()], "nothing new was archived");
    assert!(names_in(&d.paths.staging).is_empty());
    assert_eq!(
        d.ctl_json(&["verify", &first])["ok"],
        true,
        "the earlier backup is intact"
    );

    assert!(seen.iter().any(|l| l.contains("psql")), "{seen:?}");
    for line in &seen {
        assert!(!line.contains(real), "the password is in a command line: {line}");
    }
    let log = d.log();
    assert!(
        !log.contains(real) && !log.contains("not-the-password-4711"),
        "the password is in the log"
    );
    assert!(
        log.contains("password authentication failed"),
        "failures are logged"
    );
}

#[test]
fn a_missing_tool_is_a_problem_of_its_job_not_of_the_daemon() {
    let empty = short_tempdir("coffer-nobin-");
    let job = source_job_toml(
        "shop",
        &format!(
            "postgres = \"postgresql:///shop?host=/nowhere\"\npg-bin-dir = {}",
            toml_str(&empty.path().display().to_string())
        ),
        &[],
        "",
    );
    let d = Daemon::start("", &job);
    let sentence = format!("pg_dump was not found in {}", empty.path().display());
    assert!(d.log().contains(&sentence), "start-up says so: {}", d.log());
    let status = d.job_status("shop");
    assert!(str_of(&status, "problem").starts_with(&sentence), "{status}");
    let health = d.ctl(&["health"]);
    assert_eq!(health.code, 2, "{health}");
    assert!(health.stdout.contains(&sentence), "{health}");
    let out = d.ctl(&["backup", "shop"]);
    assert!(out.error_sentence().contains(&sentence), "{out}");

    // Two sources in one job is a config error naming the job.
    let bad = Daemon::configure(
        "",
        "[[job]]\nname = \"shop\"\ndatabase = \"/a.db\"\npostgres = \"postgresql:///shop\"\n",
    );
    let out = coffer_tests::run(
        {
            let mut c = bad.cofferd_command();
            c.arg("--check-config");
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(
            "job 'shop': database: the job needs exactly one of database (SQLite), postgres or mariadb"
        ),
        "{out}"
    );
}

#[test]
fn a_drill_restores_into_a_scratch_database_and_runs_the_checks_there() {
    let pg = require!(shop("pg_drill", "shop", 1_000));
    let drill = |checks: &[&str]| {
        let checks: Vec<String> = checks.iter().map(|c| toml_str(c)).collect();
        pg_job(
            &pg,
            "shop",
            "shop",
            &[],
            &format!("[job.drill]\nchecks = [{}]", checks.join(", ")),
        )
    };
    let d = Daemon::start(
        "",
        &drill(&[
            "SELECT sum(balance) = 100000 FROM accounts",
            "SELECT count(*) FROM product",
        ]),
    );
    let id = backup_id(&d, "shop");
    let before = fingerprint(&pg, "shop");
    let drilled = d.ctl_json(&["drill", "shop"]);
    assert_eq!(drilled["backup-id"], id.as_str());
    assert_eq!(drilled["checks"][0]["value"], "'t'");
    assert_eq!(drilled["checks"][1]["value"], "'2'");
    assert!(scratch_databases(&pg, "shop").is_empty(), "{:?}", pg.databases());
    assert_eq!(fingerprint(&pg, "shop"), before, "the live database is untouched");

    // A false check fails the drill naming the query; nothing is left on the server.
    std::fs::write(
        &d.paths.config,
        std::fs::read_to_string(&d.paths.config)
            .unwrap()
            .replace("SELECT count(*) FROM product", "SELECT count(*) = 0 FROM product"),
    )
    .unwrap();
    let mut d = d;
    d.restart();
    let out = d.ctl(&["drill", "shop"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.error_sentence()
            .contains("check 'SELECT count(*) = 0 FROM product' returned 'f', which is false"),
        "{out}"
    );
    assert!(scratch_databases(&pg, "shop").is_empty(), "{:?}", pg.databases());
}
