//! The package registry: users, packages owned by users, releases with tarballs
//! on disk under `tarballs/<login>/`.

use super::*;
use crate::selective::import::RowAction;
use crate::selective::media::ParamFate;

const SCHEMA: &str = r#"
CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, login TEXT NOT NULL UNIQUE, email TEXT NOT NULL);
CREATE TABLE packages (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, owner_id INTEGER NOT NULL REFERENCES users(id),
                       description TEXT);
CREATE TABLE releases (id INTEGER PRIMARY KEY, package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
                       version TEXT NOT NULL, tarball TEXT NOT NULL, sha256 TEXT NOT NULL, UNIQUE (package_id, version));
CREATE TABLE downloads (release_id INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE, day TEXT NOT NULL,
                        count INTEGER NOT NULL, PRIMARY KEY (release_id, day)) WITHOUT ROWID;
"#;

const PROFILE: &str = r#"
name = "publisher"
params = ["login"]
follow-foreign-keys = true
[tables]
users = "login = :login"
packages = "owner_id IN (SELECT id FROM users WHERE login = :login)"
releases = "package_id IN (SELECT p.id FROM packages p JOIN users u ON u.id = p.owner_id WHERE u.login = :login)"
downloads = "release_id IN (SELECT r.id FROM releases r JOIN packages p ON p.id = r.package_id JOIN users u ON u.id = p.owner_id WHERE u.login = :login)"
[media]
include = ["tarballs/{login}/*.tgz"]
"#;

fn source() -> App {
    let app = App::new(SCHEMA);
    app.exec(
        r#"
INSERT INTO users VALUES (1, 'alice', 'alice@example.org'), (2, 'bob', 'bob@example.org');
INSERT INTO packages VALUES (1, 'left-pad', 1, 'pads left'), (2, 'right-pad', 1, 'pads right'), (3, 'bobs-lib', 2, 'bob');
INSERT INTO releases VALUES
  (1, 1, '1.0.0', 'tarballs/alice/left-pad-1.0.0.tgz', 'aa'),
  (2, 1, '1.1.0', 'tarballs/alice/left-pad-1.1.0.tgz', 'ab'),
  (3, 2, '0.1.0', 'tarballs/alice/right-pad-0.1.0.tgz', 'ac'),
  (4, 3, '2.0.0', 'tarballs/bob/bobs-lib-2.0.0.tgz', 'ba');
INSERT INTO downloads VALUES (1, '2024-01-01', 10), (2, '2024-01-01', 5), (4, '2024-01-01', 7);
"#,
    );
    app.file("tarballs/alice/left-pad-1.0.0.tgz", b"lp100");
    app.file("tarballs/alice/left-pad-1.1.0.tgz", b"lp110");
    app.file("tarballs/alice/right-pad-0.1.0.tgz", b"rp010");
    app.file("tarballs/alice/notes.txt", b"not a tarball");
    app.file("tarballs/bob/bobs-lib-2.0.0.tgz", b"bl200");
    app
}

/// Another registry: bob has id 1 there, and a package called left-pad.
fn other_registry() -> App {
    let app = App::new(SCHEMA);
    app.exec(
        r#"
INSERT INTO users VALUES (1, 'bob', 'bob@other.org'), (2, 'carol', 'carol@other.org');
INSERT INTO packages VALUES (1, 'left-pad', 1, 'another left-pad'), (2, 'carols-lib', 2, NULL);
INSERT INTO releases VALUES (1, 1, '1.0.0', 'tarballs/bob/left-pad-1.0.0.tgz', 'xx');
INSERT INTO downloads VALUES (1, '2024-01-01', 99);
"#,
    );
    app.file("tarballs/bob/left-pad-1.0.0.tgz", b"bob's left-pad");
    app
}

fn export_alice(app: &App) -> (ExportProfile, Exported) {
    let p = profile(PROFILE);
    let exp = export(app, &p, &[("login", "alice")]);
    (p, exp)
}

#[test]
fn export_holds_the_user_their_packages_and_tarballs() {
    let app = source();
    let (_, exp) = export_alice(&app);
    assert_eq!(
        exp.query("SELECT * FROM users"),
        app.query("SELECT * FROM users WHERE login = 'alice'")
    );
    assert_eq!(
        exp.query("SELECT * FROM packages"),
        app.query("SELECT * FROM packages WHERE owner_id = 1")
    );
    assert_eq!(
        exp.query("SELECT * FROM releases"),
        app.query("SELECT * FROM releases WHERE id IN (1, 2, 3)")
    );
    assert_eq!(
        exp.query("SELECT * FROM downloads"),
        app.query("SELECT * FROM downloads WHERE release_id IN (1, 2)")
    );
    assert_eq!(
        exp.rels(),
        [
            "tarballs/alice/left-pad-1.0.0.tgz",
            "tarballs/alice/left-pad-1.1.0.tgz",
            "tarballs/alice/right-pad-0.1.0.tgz"
        ]
    );
}

#[test]
fn rename_into_another_registry() {
    let app = source();
    let (p, exp) = export_alice(&app);
    let target = other_registry();
    let before = target.dump();
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Rename);
    println!("{report}");
    let after = target.dump();
    for (t, rows) in &before {
        for r in rows {
            assert!(after[t].contains(r), "{t} lost {r:?}");
        }
    }
    // alice's id was taken (by bob): new id; her login was free, so the
    // `login = :login` key is unchanged and so are her tarball paths.
    assert_eq!(
        target.query("SELECT id, email FROM users WHERE login = 'alice'"),
        vec![vec![int(3), txt("alice@example.org")]]
    );
    assert_eq!(report.param_fates.get("login"), Some(&ParamFate::Unchanged));
    // Her left-pad collides by name with bob's: suffixed; ids were taken: new ones.
    assert_eq!(
        target.query("SELECT p.name, p.description FROM packages p JOIN users u ON u.id = p.owner_id WHERE u.login = 'alice'"),
        vec![vec![txt("left-pad-2"), txt("pads left")], vec![txt("right-pad"), txt("pads right")]]
    );
    // Releases and their downloads (a WITHOUT ROWID table keyed by release) follow their package.
    assert_eq!(
        target.query(
            "SELECT p.name, r.version, r.tarball, d.count FROM releases r JOIN packages p ON p.id = r.package_id \
             JOIN users u ON u.id = p.owner_id LEFT JOIN downloads d ON d.release_id = r.id WHERE u.login = 'alice'"
        ),
        vec![
            vec![txt("left-pad-2"), txt("1.0.0"), txt("tarballs/alice/left-pad-1.0.0.tgz"), int(10)],
            vec![txt("left-pad-2"), txt("1.1.0"), txt("tarballs/alice/left-pad-1.1.0.tgz"), int(5)],
            vec![txt("right-pad"), txt("0.1.0"), txt("tarballs/alice/right-pad-0.1.0.tgz"), SqlValue::Null],
        ]
    );
    assert_eq!(target.tree()["tarballs/alice/left-pad-1.1.0.tgz"], "lp110");
    assert_eq!(target.tree()["tarballs/bob/left-pad-1.0.0.tgz"], "bob's left-pad");
    // AUTOINCREMENT bookkeeping moved past the imported id.
    assert_eq!(
        target.query("SELECT seq FROM sqlite_sequence WHERE name = 'users'"),
        vec![vec![int(3)]]
    );
    let downloads = report.tables.iter().find(|t| t.table == "downloads").unwrap();
    assert_eq!(
        (downloads.rows, downloads.inserted, downloads.references_rewritten),
        (2, 2, 1)
    );
}

#[test]
fn skip_into_another_registry_keeps_everything_and_attaches_nothing_to_bob() {
    let app = source();
    let (p, exp) = export_alice(&app);
    let target = other_registry();
    let before = target.dump();
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Skip);
    // alice (id 1) conflicts with bob (id 1): skipped, and so is everything she
    // owns — inserting right-pad with owner_id 1 would give it to bob.
    assert_eq!(target.dump(), before);
    let packages = report.tables.iter().find(|t| t.table == "packages").unwrap();
    assert!(
        packages
            .details
            .iter()
            .all(|d| matches!(&d.action, RowAction::Skip { reason } if reason.contains("users row id=1")))
    );
    // Her tarballs are not tied to a key column here (login is UNIQUE, but the
    // user row is skipped, so they are skipped too).
    assert_eq!(report.media.skipped, 3);
}

#[test]
fn overwrite_restores_a_publisher_into_the_same_registry() {
    let app = source();
    let (p, exp) = export_alice(&app);
    let target = source();
    target.exec(
        "UPDATE users SET email = 'new@example.org' WHERE id = 1;
         UPDATE packages SET description = 'changed' WHERE id = 2;
         DELETE FROM releases WHERE id = 3;
         UPDATE downloads SET count = 11 WHERE release_id = 1;",
    );
    std::fs::remove_file(target.media.join("tarballs/alice/right-pad-0.1.0.tgz")).unwrap();
    import_checked(&target, &exp, &p, ConflictPolicy::Overwrite);
    assert_eq!(target.dump(), app.dump());
    assert_eq!(target.tree(), app.tree());
}

#[test]
fn a_login_that_is_renamed_moves_its_tarballs() {
    let app = source();
    let (p, exp) = export_alice(&app);
    // Another registry where the login alice is taken by someone else.
    let target = App::new(SCHEMA);
    target.exec("INSERT INTO users VALUES (7, 'alice', 'other-alice@example.org');");
    target.file("tarballs/alice/left-pad-1.0.0.tgz", b"other alice's file");
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Rename);
    assert_eq!(
        report.param_fates.get("login"),
        Some(&ParamFate::Renamed {
            to: "alice-2".to_owned()
        })
    );
    let tree = target.tree();
    assert_eq!(tree["tarballs/alice/left-pad-1.0.0.tgz"], "other alice's file");
    assert_eq!(tree["tarballs/alice-2/left-pad-1.0.0.tgz"], "lp100");
    assert_eq!(tree["tarballs/alice-2/right-pad-0.1.0.tgz"], "rp010");
    assert_eq!(
        target.query(
            "SELECT count(*) FROM packages p JOIN users u ON u.id = p.owner_id WHERE u.login = 'alice-2'"
        ),
        vec![vec![int(2)]]
    );
}
