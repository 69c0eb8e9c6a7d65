//! Hostile export files: tampered databases, paths and parameters. Each must be
//! refused with a sentence, with nothing outside staging changed.

use super::*;
use crate::selective::media::{MediaError, apply_media, plan_media_import};
use crate::selective::tests::cms;

fn tamper(exp: &Exported, sql: &str) {
    let c = Connection::open(&exp.db).unwrap();
    c.execute_batch(sql).unwrap();
}

fn setup() -> (App, ExportProfile, Exported, App) {
    let app = cms::source();
    let p = profile(cms::PROFILE);
    let exp = export(&app, &p, &[("site", "1")]);
    let target = App::new(cms::SCHEMA);
    target.exec("INSERT INTO users VALUES (50, 'canary@x', 'Canary');");
    (app, p, exp, target)
}

#[test]
fn a_table_named_with_sql_is_refused() {
    let (_app, p, exp, target) = setup();
    tamper(
        &exp,
        r#"CREATE TABLE "pages""; DROP TABLE users; --" (x); INSERT INTO "pages""; DROP TABLE users; --" VALUES (1);"#,
    );
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Overwrite);
    assert_eq!(
        err.to_string(),
        r#"the export file holds table "pages\"; DROP TABLE users; --", which export profile site of this job does not include; the file is refused"#
    );
    // A dry run refuses it the same way.
    let roots = target.roots();
    let req = request(&exp, &target, &roots, &p, ConflictPolicy::Skip);
    assert!(matches!(
        import::dry_run(&req, &target.conn(), &|| false),
        Err(ImportError::TableNotAllowed { .. })
    ));
}

#[test]
fn a_table_the_profile_does_not_name_is_refused() {
    let (_app, p, exp, target) = setup();
    tamper(
        &exp,
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT); INSERT INTO audit VALUES (1, 'x');",
    );
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert!(matches!(err, ImportError::TableNotAllowed { .. }), "{err}");
}

#[test]
fn a_trigger_that_would_write_elsewhere_is_refused() {
    let (_app, p, exp, target) = setup();
    tamper(
        &exp,
        "CREATE TRIGGER evil AFTER INSERT ON pages BEGIN DELETE FROM users; UPDATE sites SET title = 'pwned'; END;",
    );
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert_eq!(
        err.to_string(),
        "the export file's database contains trigger \"evil\", which an export never holds; the file is refused"
    );
    // The file itself was never written to either (it is opened read-only).
    assert_eq!(exp.query("SELECT count(*) FROM users"), vec![vec![int(2)]]);
}

#[test]
fn a_view_in_place_of_a_table_is_refused() {
    let (_app, p, exp, target) = setup();
    tamper(
        &exp,
        "DROP TABLE menu_items; CREATE VIEW menu_items AS SELECT * FROM users;",
    );
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert!(
        matches!(&err, ImportError::ForeignObject { kind, .. } if kind == "view"),
        "{err}"
    );
}

#[test]
fn different_columns_are_refused_naming_table_and_column() {
    let (_app, p, exp, target) = setup();
    tamper(&exp, "ALTER TABLE pages ADD COLUMN is_admin INTEGER;");
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert_eq!(
        err.to_string(),
        "table pages of the export file has a column \"is_admin\", which the target table does not have; the schemas are not compatible"
    );
    let (_app, p, exp, target) = setup();
    tamper(&exp, "ALTER TABLE blocks DROP COLUMN image;");
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert_eq!(
        err.to_string(),
        "table blocks of the export file has no column image, which the target table has; the schemas are not compatible"
    );
}

#[test]
fn a_damaged_database_is_refused() {
    let (_app, p, exp, target) = setup();
    std::fs::write(
        &exp.db,
        b"SQLite format 3\0 but not really, just garbage bytes here",
    )
    .unwrap();
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert!(
        matches!(
            err,
            ImportError::ExportDbUnreadable { .. } | ImportError::ExportDbDamaged { .. }
        ),
        "{err}"
    );
}

#[test]
fn media_paths_that_leave_the_selection_are_refused() {
    for (rel, want) in [
        ("../../escape.txt", "not a plain relative path"),
        ("sites/1/../../../escape.txt", "not a plain relative path"),
        ("sites/1/./x", "not a plain relative path"),
        ("/etc/cron.d/evil", "not a plain relative path"),
        (
            "sites/2/logo.png",
            "which the media globs of export profile site do not select",
        ),
        (
            "shared/favicon.ico",
            "which the media globs of export profile site do not select",
        ),
    ] {
        let (_app, p, mut exp, target) = setup();
        let staged = exp.dir.path().join("evil");
        std::fs::write(&staged, b"evil").unwrap();
        exp.media.push(ImportedMedia {
            root: 0,
            rel: PathBuf::from(rel),
            staged,
        });
        let err = import_fails(&target, &exp, &p, ConflictPolicy::Overwrite);
        assert!(err.to_string().contains(want), "{rel}: {err}");
        assert!(!target.dir.path().join("escape.txt").exists());
    }
    // A media directory the job does not have.
    let (_app, p, mut exp, target) = setup();
    exp.media[0].root = 3;
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Overwrite);
    assert!(
        matches!(
            err,
            ImportError::Media(MediaError::UnknownRoot { root: 3, roots: 1 })
        ),
        "{err}"
    );
}

#[test]
fn parameters_from_the_manifest_are_checked() {
    let (_app, p, mut exp, target) = setup();
    exp.params.insert("site".to_owned(), "../..".to_owned());
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert_eq!(
        err.to_string(),
        "the value of parameter site of export profile site contains '..', which is refused in a media path"
    );
    let (_app, p, mut exp, target) = setup();
    exp.params.insert("admin".to_owned(), "1".to_owned());
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert_eq!(err.to_string(), "export profile site has no parameter admin");
}

#[test]
fn a_symlink_in_the_target_media_is_never_written_through() {
    let (_app, p, exp, target) = setup();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(target.media.join("sites")).unwrap();
    std::os::unix::fs::symlink(outside.path(), target.media.join("sites/1")).unwrap();
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Overwrite);
    assert!(err.to_string().contains("is not a real directory"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn export_never_follows_symlinks_out_of_the_media_dir() {
    let app = cms::source();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), app.media.join("sites/1/uploads/linked-dir")).unwrap();
    std::fs::create_dir_all(app.media.join("sites")).unwrap();
    std::os::unix::fs::symlink(outside.path(), app.media.join("sites/5")).unwrap();
    let p = profile(cms::PROFILE);
    for site in ["1", "5"] {
        let exp = export(&app, &p, &[("site", site)]);
        assert!(
            exp.rels()
                .iter()
                .all(|r| !r.contains("secret") && !r.contains("linked")),
            "{:?}",
            exp.rels()
        );
    }
}

#[test]
fn a_failing_media_write_undoes_the_files_already_written() {
    let (_app, p, exp, target) = setup();
    target.file("sites/1/logo.png", b"existing logo");
    let before = target.tree();
    let params = ParamValues::new(&p, [("site".to_owned(), "1".to_owned())]).unwrap();
    let plan = plan_media_import(
        &exp.media,
        &target.roots(),
        &p,
        &params,
        &BTreeMap::new(),
        ConflictPolicy::Overwrite,
        &|| false,
    )
    .unwrap();
    // logo.png (overwrite) and post.jpg get written, then hero.jpg's staged copy is gone.
    std::fs::remove_file(
        &exp.media
            .iter()
            .find(|m| m.rel.ends_with("hero.jpg"))
            .unwrap()
            .staged,
    )
    .unwrap();
    let err = apply_media(&plan, &target.roots(), "t", &|| false, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().starts_with("writing media file"), "{err}");
    assert_eq!(target.tree(), before);

    // And an explicit rollback after a successful apply restores the original.
    let plan = plan_media_import(
        &exp.media[..1],
        &target.roots(),
        &p,
        &params,
        &BTreeMap::new(),
        ConflictPolicy::Overwrite,
        &|| false,
    )
    .unwrap();
    let txn = apply_media(&plan, &target.roots(), "t", &|| false, &mut |_, _| {}).unwrap();
    assert_eq!(target.tree()["sites/1/logo.png"], "alpha logo");
    txn.rollback().unwrap();
    assert_eq!(target.tree(), before);
}

/// A crash after the media were written and before the database committed: the
/// journal written before the first file lets start-up put every file back.
#[test]
fn a_crash_after_the_media_writes_is_rolled_back_from_the_journal() {
    let (_app, p, exp, target) = setup();
    target.file("sites/1/logo.png", b"existing logo");
    let before = target.tree();
    let params = ParamValues::new(&p, [("site".to_owned(), "1".to_owned())]).unwrap();
    let plan = plan_media_import(
        &exp.media,
        &target.roots(),
        &p,
        &params,
        &BTreeMap::new(),
        ConflictPolicy::Overwrite,
        &|| false,
    )
    .unwrap();
    let at = target.journal();
    let (steps, dirs) = crate::selective::media::planned_changes(&plan, &target.roots(), &at.id).unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(
        dirs,
        [
            target.media.join("sites/1/uploads"),
            target.media.join("sites/1/uploads/2024")
        ]
    );
    let mut journal = crate::selective::import::journal::Journal::begin(&at, &steps, &dirs).unwrap();
    let txn = apply_media(&plan, &target.roots(), &at.id, &|| false, &mut |_, _| {}).unwrap();
    assert_eq!(target.tree()["sites/1/logo.png"], "alpha logo");
    assert!(
        target.tree().keys().any(|k| k.contains(".coffer-import-test-")),
        "the original is set aside"
    );
    // The process dies here: nothing in memory runs any more.
    std::mem::forget(txn);
    journal.keep();
    drop(journal);
    assert_eq!(
        crate::selective::import::journal::recover(&at.dir).unwrap(),
        ["test"]
    );
    assert_eq!(target.tree(), before);
}
