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

use coffer_tests::servers::postgres::{ident, literal};
use coffer_tests::servers::{PgCluster, Skip};
use coffer_tests::{
    Daemon, archive_entries, assert_tree_eq, extract_archive, make_media, names_in, require, short_tempdir,
    source_job_toml, toml_str, wait_until,
};
use serde_json::Value;

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
