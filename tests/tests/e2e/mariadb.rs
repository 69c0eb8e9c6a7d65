//! MariaDB jobs against a real server the test starts itself (`MariaDb`): a backup
//! under a ledger writer restores a consistent copy with tables, auto-increment
//! values, a sequence, views, functions, procedures, triggers and events; in-place
//! restores (after changes, refused while a session is connected, `--force`, a
//! failure injected mid-restore, `kill -9` during the swap); `--to-database`; the
//! failures that must archive nothing (wrong password, unreachable server, missing
//! database, dump killed mid-way, non-transactional tables); passwords never in argv,
//! logs or errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coffer_tests::servers::{MariaDb, Skip};
use coffer_tests::{
    Daemon, archive_entries, assert_tree_eq, extract_archive, make_media, names_in, require, short_tempdir,
    source_job_toml, toml_str, wait_until,
};

use crate::postgres::{cmdlines_with, failed_cleanly, kill9};
use crate::restore::{backup_id, copy_tree, list_ids, str_of};

/// The shop: a ledger whose total is invariant (100 accounts of 1000; `meta.n`
/// counts the moves), tables with auto-increment values and a foreign key, a
/// sequence, views, a function, a procedure, a trigger, an event, and `BULK` rows
/// of filler so that a dump takes a moment.
const SCHEMA: &str = r#"
CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO accounts SELECT seq, 1000 FROM seq_1_to_100;
CREATE TABLE moves (id BIGINT AUTO_INCREMENT PRIMARY KEY, src INT, dst INT, amount INT) ENGINE=InnoDB;
CREATE TABLE meta (n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO meta VALUES (0);
CREATE TABLE parent (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) NOT NULL UNIQUE, note TEXT) ENGINE=InnoDB;
CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, parent_id INT NOT NULL, qty INT, total DECIMAL(10,2),
  CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent(id)) ENGINE=InnoDB AUTO_INCREMENT=500;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(100)) ENGINE=InnoDB;
CREATE SEQUENCE invoice_no START WITH 1000 INCREMENT BY 7 NOCACHE;
DELIMITER ;;
CREATE TRIGGER child_total BEFORE INSERT ON child FOR EACH ROW
BEGIN
  SET NEW.total = NEW.qty * 2.5;
  INSERT INTO audit (what) VALUES (CONCAT('child of ', NEW.parent_id));
END;;
CREATE FUNCTION total_balance() RETURNS BIGINT READS SQL DATA RETURN (SELECT SUM(balance) FROM accounts);;
CREATE PROCEDURE add_parent(IN n VARCHAR(40)) BEGIN INSERT INTO parent (name) VALUES (n); END;;
DELIMITER ;
CREATE VIEW totals AS SELECT p.name, SUM(c.total) AS total FROM parent p JOIN child c ON c.parent_id = p.id GROUP BY p.name;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 03:00:00' DO DELETE FROM audit WHERE id < 0;
INSERT INTO parent (name, note) VALUES ('tea', 'ünïcødé ✓'), ('cake', NULL);
INSERT INTO child (parent_id, qty) VALUES (1, 2), (2, 4), (1, 1);
SELECT NEXTVAL(invoice_no), NEXTVAL(invoice_no);
CREATE TABLE bulk (id INT PRIMARY KEY, payload TEXT) ENGINE=InnoDB;
INSERT INTO bulk SELECT seq, REPEAT(MD5(seq), 8) FROM seq_1_to_BULK;
"#;

/// A query whose output fingerprints the whole shop: rows of every table, the
/// auto-increment counters, the sequence, and the views, triggers, routines and
/// events by name.
const FINGERPRINT: &str = "SET SESSION group_concat_max_len = 1073741824;
SELECT MD5(CONCAT_WS('|',
  (SELECT GROUP_CONCAT(id, ':', balance ORDER BY id) FROM accounts),
  (SELECT GROUP_CONCAT(id, ':', src, ':', dst, ':', amount ORDER BY id) FROM moves),
  (SELECT n FROM meta),
  (SELECT GROUP_CONCAT(id, ':', name, ':', IFNULL(note, '-') ORDER BY id) FROM parent),
  (SELECT GROUP_CONCAT(id, ':', parent_id, ':', qty, ':', total ORDER BY id) FROM child),
  (SELECT GROUP_CONCAT(id, ':', what ORDER BY id) FROM audit),
  (SELECT GROUP_CONCAT(MD5(payload) ORDER BY id) FROM bulk),
  (SELECT next_not_cached_value FROM invoice_no),
  (SELECT GROUP_CONCAT(TABLE_NAME, '=', IFNULL(AUTO_INCREMENT, 0) ORDER BY TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()),
  (SELECT GROUP_CONCAT(TABLE_NAME, '.', COLUMN_NAME ORDER BY TABLE_NAME, ORDINAL_POSITION) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()),
  (SELECT GROUP_CONCAT(TRIGGER_NAME ORDER BY TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()),
  (SELECT GROUP_CONCAT(ROUTINE_NAME ORDER BY ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()),
  (SELECT GROUP_CONCAT(EVENT_NAME ORDER BY EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()),
  (SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE())
));";

/// A server with the shop database `db`.
fn shop(name: &str, db: &str, bulk: u32) -> Result<MariaDb, Skip> {
    let m = MariaDb::start(name)?;
    m.create_database(db);
    m.sql(db, &SCHEMA.replace("BULK", &bulk.to_string()));
    Ok(m)
}

/// The `[[job]]` of a MariaDB job `name` on database `db` with `media`.
fn my_job(m: &MariaDb, name: &str, db: &str, media: &[&Path], extra: &str) -> String {
    let source = format!(
        "mariadb = {}\nmariadb-options-file = {}",
        toml_str(db),
        toml_str(&m.options_file().display().to_string()),
    );
    source_job_toml(name, &source, media, extra)
}

fn fingerprint(m: &MariaDb, db: &str) -> String {
    m.sql(db, FINGERPRINT)
}

/// The schemas Coffer made beside `db` (scratch copies left behind would be a bug).
fn scratch_databases(m: &MariaDb, db: &str) -> Vec<String> {
    m.databases()
        .into_iter()
        .filter(|d| d.starts_with(&format!("{db}__coffer")))
        .collect()
}

/// A client session as root on `db`, fed statements on stdin.
struct Session {
    child: Child,
}

impl Session {
    fn open(m: &MariaDb, db: &str) -> Session {
        let child = Command::new(m.tool("mariadb"))
            .arg(format!("--defaults-file={}", m.dir().join("admin.cnf").display()))
            .args(["--batch", &format!("--database={db}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the mariadb client");
        Session { child }
    }

    fn send(&mut self, sql: &str) {
        let stdin = self.child.stdin.as_mut().expect("the client has no stdin");
        writeln!(stdin, "{sql}").expect("the client went away");
        stdin.flush().unwrap();
    }

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
fn ledger_writer(m: &MariaDb, db: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut session = Session::open(m, db);
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (a, b, amount) = (n % 100 + 1, (n * 7 + 3) % 100 + 1, n % 50 + 1);
            session.send(&format!(
                "START TRANSACTION; UPDATE accounts SET balance = balance - {amount} WHERE id = {a}; \
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
fn check_ledger(m: &MariaDb, db: &str) -> u64 {
    let row = m.sql(
        db,
        "SELECT SUM(balance), (SELECT n FROM meta), (SELECT COUNT(*) FROM moves) FROM accounts;",
    );
    let v: Vec<u64> = row.split('\t').map(|x| x.parse().unwrap()).collect();
    assert_eq!(v[0], 100_000, "the ledger in {db} does not balance: {row}");
    assert_eq!(v[1], v[2], "moves and their counter disagree in {db}: {row}");
    v[1]
}

#[test]
fn backup_under_a_writer_restores_a_consistent_copy_with_every_object() {
    let m = require!(shop("my_ledger", "shop", 40_000));
    let dir = short_tempdir("coffer-my-");
    let media = dir.path().join("uploads");
    make_media(&media);
    let d = Daemon::start("", &my_job(&m, "shop", "shop", &[&media], ""));

    let stop = Arc::new(AtomicBool::new(false));
    let writer = ledger_writer(&m, "shop", stop.clone());
    wait_until("the writer has committed", Duration::from_secs(30), || {
        m.sql("shop", "SELECT n FROM meta;").parse::<u64>().unwrap() >= 20
    });
    let backup = d.backup("shop");
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    let id = str_of(&backup, "id").to_owned();
    let source = &backup["source"];
    assert_eq!(source["kind"], "mariadb", "{backup}");
    assert_eq!(source["database"], "shop");
    assert!(
        str_of(source, "server-version").starts_with(m.version()),
        "{source}"
    );
    assert!(
        d.ctl(&["show", &id])
            .expect_ok()
            .stdout
            .contains("shop on MariaDB")
    );
    assert_eq!(d.job_status("shop")["source-kind"], "mariadb");

    // The archive, read by hand, and the dump restored by hand with the client.
    let archive = d.paths.archive("shop", &id);
    let entries: Vec<String> = archive_entries(&archive).into_iter().map(|e| e.path).collect();
    assert!(entries.contains(&"db/shop.sql".to_owned()), "{entries:?}");
    let unpacked = dir.path().join("unpacked");
    let manifest = extract_archive(&archive, &unpacked);
    assert_eq!(manifest["source"]["kind"], "mariadb");
    assert_tree_eq(&media, &unpacked.join("media/0"));
    m.create_database("byhand");
    let restored = Command::new(m.tool("mariadb"))
        .arg(format!("--defaults-file={}", m.dir().join("admin.cnf").display()))
        .arg("--database=byhand")
        .stdin(std::fs::File::open(unpacked.join("db/shop.sql")).unwrap())
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "mariadb < shop.sql by hand: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let by_hand = check_ledger(&m, "byhand");

    // Restored by Coffer into a new database: the same consistent state, every object.
    d.ctl_json(&["restore", &id, "--to-database", "copy"]);
    let moves = check_ledger(&m, "copy");
    assert_eq!(moves, by_hand);
    assert!(
        moves >= 20 && moves < sent,
        "snapshot not taken mid-stream: {moves} of {sent}"
    );
    assert_eq!(fingerprint(&m, "copy"), fingerprint(&m, "byhand"));
    assert_eq!(m.sql("copy", "SELECT total_balance();"), "100000");
    assert_eq!(m.sql("copy", "SELECT NEXTVAL(invoice_no);"), "1014");
    m.sql(
        "copy",
        "CALL add_parent('bread'); INSERT INTO child (parent_id, qty) VALUES (3, 2);",
    );
    assert_eq!(
        m.sql(
            "copy",
            "SELECT (SELECT MAX(id) FROM child), (SELECT what FROM audit ORDER BY id DESC LIMIT 1);"
        ),
        "503\tchild of 3",
        "the auto-increment value and the trigger were restored"
    );
    assert_eq!(
        m.sql("copy", "SELECT name, total FROM totals WHERE name = 'bread';"),
        "bread\t5.00"
    );
    assert_eq!(
        m.sql(
            "",
            "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'copy';"
        ),
        "1"
    );

    let verified = d.ctl_json(&["verify", &id, "--deep"]);
    assert_eq!(verified["ok"], true);
    assert!(scratch_databases(&m, "shop").is_empty(), "{:?}", m.databases());
    assert!(names_in(&d.paths.staging).is_empty());
}

/// Changes the shop (rows, schema, objects) and its media, deterministically.
fn change_shop(m: &MariaDb, db: &str, media: &Path) {
    m.sql(
        db,
        "UPDATE accounts SET balance = balance + 5 WHERE id = 1;
         UPDATE accounts SET balance = balance - 5 WHERE id = 2;
         DELETE FROM child WHERE qty = 4;
         ALTER TABLE parent ADD COLUMN extra INT;
         DROP VIEW totals;
         DROP TRIGGER child_total;
         CREATE TABLE newer (x INT) ENGINE=InnoDB;",
    );
    std::fs::write(media.join("added-later.txt"), "after the backup").unwrap();
    std::fs::remove_file(media.join("empty")).unwrap();
}

fn journal(d: &Daemon) -> Vec<String> {
    names_in(&d.paths.state_dir.join("journal"))
}

/// A shop with media and its daemon, backed up in state A, then changed to state B.
struct Scene {
    m: MariaDb,
    d: Daemon,
    media: PathBuf,
    id: String,
    a: String,
    a_media: PathBuf,
    b: String,
    _dir: tempfile::TempDir,
}

fn scene(name: &str, bulk: u32) -> Result<Scene, Skip> {
    let m = shop(name, "shop", bulk)?;
    let dir = short_tempdir("coffer-my-");
    let media = dir.path().join("uploads");
    make_media(&media);
    let d = Daemon::start("", &my_job(&m, "shop", "shop", &[&media], ""));
    let a = fingerprint(&m, "shop");
    let a_media = dir.path().join("media-a");
    copy_tree(&media, &a_media);
    let id = backup_id(&d, "shop");
    change_shop(&m, "shop", &media);
    let b = fingerprint(&m, "shop");
    assert_ne!(a, b);
    Ok(Scene {
        m,
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
    let s = require!(scene("my_in_place", 2_000));
    let out = s.d.ctl_json(&["restore", &s.id, "--yes"]);
    assert_eq!(
        fingerprint(&s.m, "shop"),
        s.a,
        "the live database equals the backup"
    );
    assert_tree_eq(&s.a_media, &s.media);
    assert!(
        scratch_databases(&s.m, "shop").is_empty(),
        "{:?}",
        s.m.databases()
    );
    assert!(journal(&s.d).is_empty() && names_in(&s.d.paths.staging).is_empty());
    let safety = str_of(&out, "safety-backup-id");
    let listed = s.d.list(Some("shop"));
    let entry = listed
        .iter()
        .find(|b| b["id"] == safety)
        .expect("the safety backup is listed");
    assert_eq!(entry["protected"], true);
    assert_eq!(entry["note"], "pre-restore");
    s.d.ctl_json(&["restore", safety, "--to-database", "before_restore"]);
    assert_eq!(fingerprint(&s.m, "before_restore"), s.b);
}

#[test]
fn in_place_restore_is_refused_while_a_session_is_connected_and_force_ends_it() {
    let s = require!(scene("my_in_use", 2_000));
    let session = s.m.open_session("shop");
    let before = list_ids(&s.d);
    let out = s.d.ctl(&["restore", &s.id, "--yes"]);
    assert_eq!(out.code, 1, "{out}");
    let sentence = out.error_sentence();
    assert!(
        sentence.contains("database 'shop' is in use by 1 other session(s)") && sentence.contains("--force"),
        "{sentence}"
    );
    assert_eq!(fingerprint(&s.m, "shop"), s.b, "the live database is untouched");
    assert!(
        scratch_databases(&s.m, "shop").is_empty(),
        "{:?}",
        s.m.databases()
    );
    assert_eq!(list_ids(&s.d), before, "no safety backup was taken");

    s.d.ctl_json(&["restore", &s.id, "--yes", "--force"]);
    assert_eq!(fingerprint(&s.m, "shop"), s.a);
    drop(session);
}

#[test]
fn a_failure_mid_restore_leaves_the_live_database_untouched() {
    let s = require!(scene("my_mid_fail", 100_000));
    let before = list_ids(&s.d);
    let mut child = s.d.ctl_spawn(&["restore", &s.id, "--yes"]);
    // Cut the restore into the scratch schema off, as a crashing server would.
    wait_until("the scratch restore was cut off", Duration::from_secs(60), || {
        let ids = s.m.sql(
            "",
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = 'shop__coffer_restore';",
        );
        for id in ids.lines() {
            let _ = s.m.try_sql("", &format!("KILL CONNECTION {id};"));
        }
        !ids.is_empty()
    });
    let status = coffer_tests::wait_timeout(&mut child, Duration::from_secs(60)).expect("restore hangs");
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the restore into database 'shop__coffer_restore' failed"),
        "{stderr}"
    );
    assert_eq!(fingerprint(&s.m, "shop"), s.b, "the live database is untouched");
    assert!(
        s.media.join("added-later.txt").exists(),
        "the media are untouched"
    );
    assert!(
        scratch_databases(&s.m, "shop").is_empty(),
        "{:?}",
        s.m.databases()
    );
    assert_eq!(list_ids(&s.d), before);
    assert!(journal(&s.d).is_empty() && names_in(&s.d.paths.staging).is_empty());
}

/// The live shop must be exactly state A or exactly B, database and media alike.
fn a_or_b(s: &Scene) -> char {
    let live = fingerprint(&s.m, "shop");
    let media_a = coffer_tests::tree_difference(&s.a_media, &s.media).is_none();
    if live == s.a {
        assert!(media_a, "database A with media B");
        'A'
    } else {
        assert_eq!(
            live, s.b,
            "the live database is neither the backup nor the state before"
        );
        assert!(!media_a, "database B with media A");
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
    let mut s = require!(scene("my_kill9", 2_000));
    let (mut child, began) = restore_until_swap(&s.d, &s.id);
    let status = coffer_tests::wait_timeout(&mut child, Duration::from_secs(60)).expect("restore hangs");
    let swap = began.elapsed();
    assert!(status.success());
    assert_eq!(a_or_b(&s), 'A');
    change_shop(&s.m, "shop", &s.media);
    let mut seen = Vec::new();
    for fraction in [0.0, 0.15, 0.3, 0.5, 0.75, 1.1] {
        let delay = swap.mul_f64(fraction);
        let (mut child, _) = restore_until_swap(&s.d, &s.id);
        std::thread::sleep(delay);
        s.d.kill();
        let _ = coffer_tests::wait_timeout(&mut child, Duration::from_secs(30));
        s.d.start_again();
        let state = a_or_b(&s);
        seen.push(state);
        assert!(
            scratch_databases(&s.m, "shop").is_empty(),
            "after a kill {delay:?} into the swap: {:?}",
            s.m.databases()
        );
        assert!(journal(&s.d).is_empty(), "{:?}", journal(&s.d));
        if state == 'A' {
            change_shop(&s.m, "shop", &s.media);
            assert_eq!(fingerprint(&s.m, "shop"), s.b);
        }
    }
    let log = s.d.log();
    println!(
        "a clean swap took {swap:?}; states after kill -9 during it: {seen:?}; database swaps recovered: {} rolled back, {} finished",
        log.matches("rolled back the database swap").count(),
        log.matches("finished the database swap").count()
    );
}

#[test]
fn failures_are_one_sentence_archive_nothing_and_keep_the_password_out() {
    let m = require!(shop("my_failures", "shop", 100_000));
    m.sql("shop", "CREATE TABLE legacy (id INT) ENGINE=MyISAM;");
    let dir = short_tempdir("coffer-my-");
    let real = m.password().to_owned();
    let options = std::fs::read_to_string(m.options_file()).unwrap();
    let wrong = dir.path().join("wrong.cnf");
    std::fs::write(&wrong, options.replace(&real, "not-the-password-4711")).unwrap();
    let nowhere = dir.path().join("nowhere.cnf");
    std::fs::write(
        &nowhere,
        options.replace(&m.socket().display().to_string(), "/nonexistent/mysqld.sock"),
    )
    .unwrap();
    for file in [&wrong, &nowhere] {
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let options_path = m.options_file().display().to_string();
    let jobs = [
        my_job(&m, "shop", "shop", &[], "allow-non-transactional = true"),
        my_job(&m, "strict", "shop", &[], ""),
        my_job(&m, "gone", "nope", &[], ""),
        my_job(&m, "wrongpw", "shop", &[], "").replace(&options_path, &wrong.display().to_string()),
        my_job(&m, "down", "shop", &[], "").replace(&options_path, &nowhere.display().to_string()),
    ];
    let d = Daemon::start("", &jobs.join("\n"));
    let first = backup_id(&d, "shop");

    let out = d.ctl(&["backup", "strict"]);
    failed_cleanly(
        &d,
        "strict",
        &out,
        "has tables that are not transactional (legacy (MyISAM))",
    );
    let out = d.ctl(&["backup", "wrongpw"]);
    failed_cleanly(&d, "wrongpw", &out, "Access denied for user 'coffer'@'localhost'");
    let out = d.ctl(&["backup", "gone"]);
    failed_cleanly(&d, "gone", &out, "database 'nope' does not exist");
    let out = d.ctl(&["backup", "down"]);
    failed_cleanly(&d, "down", &out, "the server is not reachable");

    // A dump killed mid-way: no archive, the earlier backup intact; meanwhile every
    // tool's command line is checked for the password.
    let mut child = d.ctl_spawn(&["backup", "shop"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dump = loop {
        let found = cmdlines_with(&options_path);
        seen.extend(found.iter().map(|(_, line)| line.clone()));
        if let Some((pid, _)) = found
            .iter()
            .find(|(_, l)| l.contains("mariadb-dump") && l.contains("--single-transaction"))
        {
            break *pid;
        }
        assert!(Instant::now() < deadline, "mariadb-dump never showed up");
        std::thread::sleep(Duration::from_millis(2));
    };
    kill9(dump);
    let status = coffer_tests::wait_timeout(&mut child, Duration::from_secs(60)).expect("backup hangs");
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("killed dump: {}", stderr.lines().last().unwrap_or_default());
    assert!(
        stderr.contains("the dump of database 'shop' failed: mariadb-dump was killed (signal 9, SIGKILL)"),
        "{stderr}"
    );
    assert_eq!(list_ids(&d), vec![first.clone()], "nothing new was archived");
    assert!(names_in(&d.paths.staging).is_empty());
    assert_eq!(
        d.ctl_json(&["verify", &first])["ok"],
        true,
        "the earlier backup is intact"
    );

    for line in &seen {
        assert!(!line.contains(&real), "the password is in a command line: {line}");
    }
    let log = d.log();
    assert!(
        !log.contains(&real) && !log.contains("not-the-password-4711"),
        "the password is in the log"
    );
    assert!(log.contains("Access denied"), "failures are logged");
}

#[test]
fn a_drill_restores_into_a_scratch_database_and_runs_the_checks_there() {
    let m = require!(shop("my_drill", "shop", 1_000));
    let job = my_job(
        &m,
        "shop",
        "shop",
        &[],
        "[job.drill]\nchecks = [\"SELECT SUM(balance) = 100000 FROM accounts\", \"SELECT total_balance()\", \"SELECT COUNT(*) FROM nope\"]",
    );
    let d = Daemon::start("", &job);
    backup_id(&d, "shop");
    let before = fingerprint(&m, "shop");
    let out = d.ctl(&["drill", "shop"]);
    assert_eq!(out.code, 1, "{out}");
    let sentence = out.error_sentence();
    assert!(
        sentence.contains("check 'SELECT COUNT(*) FROM nope' failed:") && sentence.contains("doesn't exist"),
        "{sentence}"
    );
    assert!(scratch_databases(&m, "shop").is_empty(), "{:?}", m.databases());
    assert_eq!(fingerprint(&m, "shop"), before, "the live database is untouched");
}
