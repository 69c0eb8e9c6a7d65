//! Selective export and import through the real daemon and cofferctl, with three
//! apps built here (`coffer_tests::selective`): a multi-site CMS, a package registry
//! and a media server's configuration.
//!
//! - an export of one site holds exactly its rows (checked by SQL against the
//!   source) and its files, is not catalogued, is audited, leaves nothing behind;
//! - an import into an empty instance reproduces the site; into one with
//!   conflicting ids and slugs `skip` changes nothing that existed, `overwrite` makes
//!   the rows equal to the file, `rename` keeps both with every reference and media
//!   path consistent; a `--dry-run` report equals what the import then does;
//! - an import failing midway (a CHECK constraint) leaves database and media
//!   exactly as before;
//! - hostile export files (path traversal, SQL in a table name, a trigger writing
//!   elsewhere, files outside the profile, hostile parameters, links) are refused
//!   and change nothing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use coffer_tests::selective::{SqlApp, cms, int, mediaserver, query, registry, tree, txt};
use coffer_tests::{Daemon, extract_archive, names_in, sha256_file, short_tempdir};
use rusqlite::Connection;
use serde_json::Value;

use crate::hostile::{Item, pack, unpack};
use crate::restore::assert_error_sentence;

/// `cofferctl --json export JOB PROFILE --param ... -o FILE`.
#[track_caller]
fn export(d: &Daemon, job: &str, profile: &str, params: &[&str], file: &Path) -> Value {
    let mut args = vec!["export", job, profile];
    for p in params {
        args.extend(["--param", p]);
    }
    args.extend(["-o", file.to_str().unwrap()]);
    d.ctl_json(&args)
}

fn import_args<'a>(file: &'a Path, job: &'a str, policy: &'a str, dry_run: bool) -> Vec<&'a str> {
    let mut args = vec![
        "import",
        file.to_str().unwrap(),
        "--job",
        job,
        "--on-conflict",
        policy,
    ];
    args.push(if dry_run { "--dry-run" } else { "--yes" });
    args
}

/// The report of a dry run, then of the real import (both asserted successful),
/// after checking that the dry run changed nothing and that they agree.
#[track_caller]
fn dry_run_then_import(d: &Daemon, file: &Path, app: &SqlApp, job: &str, policy: &str) -> Value {
    let (dump, files) = (app.dump(), app.tree());
    let mut dry = d.ctl_json(&import_args(file, job, policy, true));
    assert_eq!(app.dump(), dump, "a dry run wrote to the database");
    assert_eq!(app.tree(), files, "a dry run wrote media");
    assert_eq!(dry["dry-run"], true);
    assert_eq!(dry["safety-backup-id"], Value::Null);
    let mut real = d.ctl_json(&import_args(file, job, policy, false));
    assert_eq!(real["dry-run"], false);
    assert!(real["safety-backup-id"].is_string(), "{real}");
    for report in [&mut dry, &mut real] {
        let map = report.as_object_mut().unwrap();
        map.remove("dry-run");
        map.remove("safety-backup-id");
    }
    assert_eq!(dry, real, "the dry run's report differs from the import's");
    assert_clean(d, app);
    real
}

/// No temporary or set-aside media files, no journal, empty staging.
#[track_caller]
fn assert_clean(d: &Daemon, app: &SqlApp) {
    let leftovers: Vec<String> = app
        .tree()
        .into_keys()
        .filter(|k| k.contains(".coffer-import-"))
        .collect();
    assert!(leftovers.is_empty(), "import leftovers: {leftovers:?}");
    assert_eq!(names_in(&d.paths.staging), Vec::<String>::new(), "staging");
    let journal = d.paths.state_dir.join("import-journal");
    if journal.exists() {
        assert_eq!(names_in(&journal), Vec::<String>::new(), "import journals");
    }
}

/// The report's entry for `table`.
fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report}"))
}

/// Every row the instance had is still there (SQLite's AUTOINCREMENT bookkeeping
/// moves on, as it should).
#[track_caller]
fn assert_nothing_lost(before: &BTreeMap<String, Vec<Vec<rusqlite::types::Value>>>, app: &SqlApp) {
    let after = app.dump();
    for (t, rows) in before.iter().filter(|(t, _)| *t != "sqlite_sequence") {
        for r in rows {
            assert!(after[t].contains(r), "{t} lost {r:?}");
        }
    }
}

fn export_db_rows(dir: &Path, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
    query(&Connection::open(dir.join("db/app.db")).unwrap(), sql)
}

#[test]
fn an_export_of_one_site_holds_exactly_its_rows_and_files() {
    let src = cms::source();
    let bad = "[[job.export]]\nname = \"bad\"\n[job.export.tables]\nnosuch = \"1\"\n";
    let d = Daemon::start("", &src.job("cms", &format!("{}{bad}", cms::PROFILE)));
    let dir = short_tempdir("coffer-exp-");
    let file = dir.path().join("site-1.tar.zst");
    let summary = export(&d, "cms", "site", &["site=1"], &file);
    assert_eq!(
        summary["rows"],
        serde_json::json!({"blocks": 4, "menu_items": 4, "pages": 3, "sites": 1, "users": 2})
    );
    assert_eq!(summary["followed"], serde_json::json!({"users": 2}));
    assert_eq!(summary["params"], serde_json::json!({"site": "1"}));
    assert_eq!(
        (summary["media-files"].as_u64(), summary["media-skipped"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(summary["sha256"], sha256_file(&file));
    assert_eq!(summary["size"], fs::metadata(&file).unwrap().len());
    assert_eq!(names_in(dir.path()), ["site-1.tar.zst"], "no .partial left");

    // Read by hand, as plain tar and zstd.
    let x = dir.path().join("x");
    let manifest = extract_archive(&file, &x);
    assert_eq!(manifest["format-version"], 2);
    assert_eq!(manifest["kind"], "export");
    assert_eq!(manifest["export"]["profile"]["name"], "site");
    assert_eq!(manifest["export"]["params"], serde_json::json!({"site": "1"}));
    assert_eq!(manifest["export"]["rows"], summary["rows"]);
    for (t, condition) in [
        ("sites", "id = 1"),
        ("pages", "site_id = 1"),
        ("blocks", "page_id IN (SELECT id FROM pages WHERE site_id = 1)"),
        ("menu_items", "site_id = 1"),
        // The owner and the authors of the site's pages, not Bob or Dee.
        (
            "users",
            "id IN (SELECT owner_id FROM sites WHERE id = 1 UNION SELECT author_id FROM pages WHERE site_id = 1)",
        ),
    ] {
        assert_eq!(
            export_db_rows(&x, &format!("SELECT * FROM {t}")),
            src.query(&format!("SELECT * FROM {t} WHERE {condition}")),
            "{t}"
        );
    }
    // The source's schema for those tables only: no audit table, trigger or view.
    let objects = export_db_rows(
        &x,
        "SELECT type || ':' || name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
    );
    assert_eq!(objects.len(), 7, "{objects:?}");
    assert!(!format!("{objects:?}").contains("audit") && !format!("{objects:?}").contains("site_pages"));
    // Exactly site 1's regular files: not sites/11, not the symlink, not shared/.
    let files: Vec<String> = tree(&x.join("media/0"))
        .into_keys()
        .filter(|k| !k.ends_with('/'))
        .collect();
    assert_eq!(
        files,
        [
            "sites/1/caf\u{fffd}.txt",
            "sites/1/logo.png",
            "sites/1/uploads/2024/post.jpg",
            "sites/1/uploads/hero.jpg"
        ]
    );
    // The name that is not UTF-8 is in the archive byte for byte.
    let latin1 = x.join(std::ffi::OsStr::from_bytes(b"media/0/sites/1/caf\xe9.txt"));
    assert_eq!(fs::read(latin1).unwrap(), b"cafe");

    // Not a backup: not listed; nothing left in staging; audited with its rows.
    assert!(d.list(None).is_empty());
    assert_eq!(names_in(&d.paths.staging), Vec::<String>::new());
    let audit = d.ctl_json(&["audit", "--limit", "1"]);
    assert_eq!(audit[0]["action"], "export");
    let target = audit[0]["target"].as_str().unwrap();
    assert!(
        target.contains("cms profile site (site=1): rows blocks=4"),
        "{target}"
    );

    // Text output and progress on stderr.
    let text_file = dir.path().join("text.tar.zst");
    let out = d
        .ctl(&[
            "export",
            "cms",
            "site",
            "--param",
            "site=2",
            "-o",
            text_file.to_str().unwrap(),
        ])
        .expect_ok();
    assert!(
        out.stdout.contains("exported profile site of job cms (site=2)"),
        "{out}"
    );
    for phase in ["snapshot", "export", "media", "archive"] {
        assert!(out.stderr.contains(&format!(": {phase}")), "{phase}: {out}");
    }

    // Refusals: one sentence each, no file.
    let refused = dir.path().join("refused.tar.zst");
    let r = refused.to_str().unwrap();
    for (args, code, phrase) in [
        (
            vec!["export", "cms", "nope", "-o", r],
            2,
            "job 'cms' has no export profile 'nope' (configured: site, bad)",
        ),
        (
            vec!["export", "cms", "site", "-o", r],
            2,
            "export profile site needs parameter site; pass it as --param site=VALUE",
        ),
        (
            vec!["export", "cms", "site", "--param", "site", "-o", r],
            2,
            "is not of the form NAME=VALUE",
        ),
        (
            vec!["export", "cms", "site", "--param", "site=../1", "-o", r],
            2,
            "contains '..'",
        ),
        (
            vec!["export", "cms", "bad", "-o", r],
            2,
            "export profile bad names table nosuch, which the database does not have",
        ),
        (
            vec![
                "export",
                "cms",
                "site",
                "--param",
                "site=1",
                "-o",
                file.to_str().unwrap(),
            ],
            2,
            "--force",
        ),
    ] {
        assert_error_sentence(&d.ctl(&args), code, phrase);
        assert!(!refused.exists());
    }
    assert_eq!(names_in(&d.paths.staging), Vec::<String>::new());
}

/// A daemon over the CMS source (job `cms`) and `targets` (job name, instance),
/// with the site profile everywhere, and the export of site 1.
fn cms_setup(targets: &[(&str, &SqlApp)]) -> (SqlApp, Daemon, tempfile::TempDir, PathBuf) {
    cms_setup_with(cms::source(), targets)
}

/// [`cms_setup`] over a given source instance.
fn cms_setup_with(src: SqlApp, targets: &[(&str, &SqlApp)]) -> (SqlApp, Daemon, tempfile::TempDir, PathBuf) {
    let mut jobs = src.job("cms", cms::PROFILE);
    for (name, app) in targets {
        jobs.push_str(&app.job(name, cms::PROFILE));
    }
    let d = Daemon::start("", &jobs);
    let dir = short_tempdir("coffer-exp-");
    let file = dir.path().join("site-1.tar.zst");
    export(&d, "cms", "site", &["site=1"], &file);
    (src, d, dir, file)
}

#[test]
fn an_import_into_an_empty_instance_reproduces_the_site() {
    let empty = SqlApp::new(cms::SCHEMA);
    let (_src, d, dir, file) = cms_setup(&[("fresh", &empty)]);
    let report = dry_run_then_import(&d, &file, &empty, "fresh", "skip");
    let x = dir.path().join("x");
    extract_archive(&file, &x);
    for t in ["users", "sites", "pages", "blocks", "menu_items"] {
        let sql = format!("SELECT * FROM {t}");
        assert_eq!(empty.query(&sql), export_db_rows(&x, &sql), "{t}");
        assert_eq!(table(&report, t)["inserted"], table(&report, t)["rows"]);
    }
    assert_eq!(empty.tree(), tree(&x.join("media/0")));
    assert!(empty.fk_violations().is_empty());
    // The rows went through the target's own write path: its trigger ran.
    assert_eq!(empty.query("SELECT count(*) FROM audit"), vec![vec![int(3)]]);
    // The safety backup: pinned, noted, of the state before.
    let backups = d.list(Some("fresh"));
    assert_eq!(backups.len(), 1);
    assert_eq!(
        (backups[0]["protected"].as_bool(), backups[0]["note"].as_str()),
        (Some(true), Some("pre-import"))
    );
    assert_eq!(backups[0]["id"], report_safety(&d));
    let audit = d.ctl_json(&["audit", "--limit", "1"]);
    assert_eq!(audit[0]["action"], "import");
    let target = audit[0]["target"].as_str().unwrap();
    assert!(
        target.starts_with("fresh from export profile site (site=1), --on-conflict skip: rows inserted 14,"),
        "{target}"
    );

    // Again: everything is identical now, nothing is written.
    let again = dry_run_then_import(&d, &file, &empty, "fresh", "rename");
    for t in again["tables"].as_array().unwrap() {
        assert_eq!(t["identical"], t["rows"], "{t}");
    }
    assert_eq!(again["media"]["identical"], 4);
}

/// The safety backup named by the newest audit entry of an import.
fn report_safety(d: &Daemon) -> Value {
    let audit = d.ctl_json(&["audit", "--limit", "1"]);
    let target = audit[0]["target"].as_str().unwrap();
    Value::String(target.rsplit("safety backup ").next().unwrap().to_owned())
}

#[test]
fn conflicts_skip_keeps_overwrite_replaces_rename_keeps_both() {
    let (skip, rename, edited, blocked) = (
        cms::conflicting(),
        cms::conflicting(),
        cms::edited(),
        cms::conflicting(),
    );
    let (src, d, dir, file) = cms_setup(&[
        ("skip", &skip),
        ("rename", &rename),
        ("overwrite", &edited),
        ("blocked", &blocked),
    ]);

    // skip: nothing that existed changes. Site 1 conflicts (another site has id 1,
    // another the slug alpha), so it is skipped with everything that belongs to it.
    let (dump, files) = (skip.dump(), skip.tree());
    let report = dry_run_then_import(&d, &file, &skip, "skip", "skip");
    assert_eq!((skip.dump(), skip.tree()), (dump, files));
    assert_eq!(
        (
            table(&report, "sites")["conflicting"].as_u64(),
            table(&report, "sites")["skipped"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(table(&report, "pages")["skipped"], 3);
    assert_eq!(report["param-fates"]["site"]["fate"], "skipped");
    assert_eq!(report["media"]["skipped"], 4);

    // rename: both kept, every reference and media path follows the new keys.
    let before = rename.dump();
    let report = dry_run_then_import(&d, &file, &rename, "rename", "rename");
    assert_nothing_lost(&before, &rename);
    assert!(rename.fk_violations().is_empty());
    assert_eq!(
        report["param-fates"]["site"],
        serde_json::json!({"fate": "renamed", "to": "3"})
    );
    assert_eq!(
        rename.query(
            "SELECT s.slug, s.title, u.email FROM sites s JOIN users u ON u.id = s.owner_id WHERE s.id = 3"
        ),
        vec![vec![txt("alpha-2"), txt("Alpha"), txt("ann@a-2")]]
    );
    let pages = |site: i64| format!("SELECT slug, title FROM pages WHERE site_id = {site}");
    assert_eq!(rename.query(&pages(3)), src.query(&pages(1)));
    // Each renamed page's blocks followed it, and page_ref (a profile reference)
    // points into the new site.
    let blocks = |site: i64| {
        format!(
            "SELECT p.slug, b.position, b.kind, b.body, r.slug FROM blocks b JOIN pages p ON p.id = b.page_id \
             LEFT JOIN pages r ON r.id = b.page_ref WHERE p.site_id = {site}"
        )
    };
    assert_eq!(rename.query(&blocks(3)), src.query(&blocks(1)));
    assert_eq!(
        rename.query("SELECT count(*) FROM blocks b JOIN pages p ON p.id = b.page_id JOIN pages r ON r.id = b.page_ref WHERE p.site_id = 3 AND r.site_id <> 3"),
        vec![vec![int(0)]]
    );
    let menu = |site: i64| {
        format!(
            "SELECT m.label, parent.label, p.slug FROM menu_items m LEFT JOIN menu_items parent ON parent.id = m.parent_id \
             LEFT JOIN pages p ON p.id = m.page_id WHERE m.site_id = {site}"
        )
    };
    assert_eq!(rename.query(&menu(3)), src.query(&menu(1)));
    let files = rename.tree();
    assert_eq!(files["sites/3/logo.png"], "alpha logo");
    assert_eq!(files["sites/3/uploads/2024/post.jpg"], "post");
    assert_eq!(files["sites/1/logo.png"], "other logo");
    assert_eq!(report["media"]["renamed"], 4);
    let latin1 = rename
        .media
        .join(std::ffi::OsStr::from_bytes(b"sites/3/caf\xe9.txt"));
    assert_eq!(fs::read(latin1).unwrap(), b"cafe");

    // overwrite: the rows the file carries become equal to it; nothing is deleted.
    let report = dry_run_then_import(&d, &file, &edited, "overwrite", "overwrite");
    let x = dir.path().join("x");
    extract_archive(&file, &x);
    for t in ["users", "sites", "pages", "menu_items", "blocks"] {
        let ids = format!("SELECT id FROM {t}");
        let ids: Vec<String> = export_db_rows(&x, &ids)
            .iter()
            .map(|r| match r[0] {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            edited.query(&format!("SELECT * FROM {t} WHERE id IN ({})", ids.join(","))),
            export_db_rows(&x, &format!("SELECT * FROM {t}")),
            "{t}"
        );
    }
    assert_eq!(
        edited.query("SELECT body FROM blocks WHERE id = 8"),
        vec![vec![txt("only in the target")]]
    );
    assert_eq!(
        edited.query("SELECT title FROM sites WHERE id = 2"),
        vec![vec![txt("Beta (edited)")]]
    );
    let files = edited.tree();
    assert_eq!(
        (
            files["sites/1/logo.png"].as_str(),
            files["sites/1/uploads/hero.jpg"].as_str()
        ),
        ("alpha logo", "hero")
    );
    assert_eq!(files["sites/1/extra.txt"], "only in the target");
    assert_eq!(
        (
            report["media"]["overwritten"].as_u64(),
            report["media"]["written"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // overwrite where a row matches two existing rows (by id one site, by slug
    // another): refused before anything is written, no safety backup either.
    let (dump, files) = (blocked.dump(), blocked.tree());
    let out = d.ctl(&import_args(&file, "blocked", "overwrite", false));
    assert_error_sentence(
        &out,
        1,
        "2 row(s) conflict in a way --on-conflict overwrite cannot resolve",
    );
    assert_eq!((blocked.dump(), blocked.tree()), (dump, files));
    assert!(d.list(Some("blocked")).is_empty());
    let dry = d.ctl_json(&import_args(&file, "blocked", "overwrite", true));
    assert_eq!(dry["blocked"].as_array().unwrap().len(), 2, "{dry}");
}

#[test]
fn an_import_failing_midway_leaves_database_and_media_exactly_as_before() {
    // The target's blocks do not allow 'html' (block 4 of the file is html); the
    // media are written before the rows, so they must be undone.
    let target = SqlApp::new(&cms::SCHEMA.replace("('text', 'image', 'html')", "('text', 'image')"));
    target.exec("INSERT INTO users VALUES (9, 'x@y', 'X');");
    target.file("sites/9/keep.txt", b"keep");
    let (_src, d, _dir, file) = cms_setup(&[("strict", &target)]);
    let (dump, files) = (target.dump(), target.tree());
    let out = d.ctl(&import_args(&file, "strict", "rename", false));
    assert_error_sentence(
        &out,
        1,
        "row id=4 of table blocks could not be written (CHECK constraint failed: kind IN ('text', 'image')); nothing was imported",
    );
    assert_eq!(target.dump(), dump);
    assert_eq!(target.tree(), files);
    assert_clean(&d, &target);
    let audit = d.ctl_json(&["audit", "--limit", "1"]);
    assert_eq!(
        (audit[0]["action"].as_str(), audit[0]["result"].as_str()),
        (Some("import"), Some("failed"))
    );
    assert!(
        audit[0]["error"]
            .as_str()
            .unwrap()
            .contains("CHECK constraint failed"),
        "{audit}"
    );
}

#[test]
fn a_publisher_moves_between_registries_with_their_tarballs() {
    let (other_skip, other_rename) = (registry::other(), registry::other());
    let src = registry::source();
    let jobs = [
        src.job("reg", registry::PROFILE),
        other_skip.job("skip", registry::PROFILE),
        other_rename.job("rename", registry::PROFILE),
    ];
    let d = Daemon::start("", &jobs.concat());
    let dir = short_tempdir("coffer-exp-");
    let file = dir.path().join("alice.tar.zst");
    let summary = export(&d, "reg", "publisher", &["login=alice"], &file);
    assert_eq!(
        summary["rows"],
        serde_json::json!({"downloads": 2, "packages": 2, "releases": 3, "users": 1})
    );
    assert_eq!(summary["media-files"], 3, "the .tgz files only, not notes.txt");

    // skip: alice's login is taken, so she and all she owns are skipped —
    // nothing is attached to the other registry's users.
    let (dump, files) = (other_skip.dump(), other_skip.tree());
    dry_run_then_import(&d, &file, &other_skip, "skip", "skip");
    assert_eq!((other_skip.dump(), other_skip.tree()), (dump, files));

    // rename: alice becomes alice-2, her packages (left-pad is taken) follow her,
    // and her tarballs move to tarballs/alice-2/.
    let before = other_rename.dump();
    let report = dry_run_then_import(&d, &file, &other_rename, "rename", "rename");
    assert_nothing_lost(&before, &other_rename);
    assert!(other_rename.fk_violations().is_empty());
    assert_eq!(
        report["param-fates"]["login"],
        serde_json::json!({"fate": "renamed", "to": "alice-2"})
    );
    assert_eq!(
        other_rename.query(
            "SELECT p.name, r.version, d.count FROM releases r JOIN packages p ON p.id = r.package_id \
             JOIN users u ON u.id = p.owner_id LEFT JOIN downloads d ON d.release_id = r.id WHERE u.login = 'alice-2'"
        ),
        vec![
            vec![txt("left-pad-2"), txt("1.0.0"), int(10)],
            vec![txt("left-pad-2"), txt("1.1.0"), int(5)],
            vec![txt("right-pad"), txt("0.1.0"), rusqlite::types::Value::Null],
        ]
    );
    let files = other_rename.tree();
    assert_eq!(files["tarballs/alice/left-pad-1.0.0.tgz"], "other alice's file");
    assert_eq!(files["tarballs/alice-2/left-pad-1.0.0.tgz"], "lp100");
    assert_eq!(files["tarballs/alice-2/right-pad-0.1.0.tgz"], "rp010");
}

#[test]
fn a_media_server_configuration_moves_with_its_references() {
    let (src, other) = (mediaserver::source(), mediaserver::other());
    let d = Daemon::start(
        "",
        &[
            src.job("media", mediaserver::PROFILE),
            other.job("other", mediaserver::PROFILE),
        ]
        .concat(),
    );
    let dir = short_tempdir("coffer-exp-");
    let file = dir.path().join("config.tar.zst");
    let summary = export(&d, "media", "config", &[], &file);
    assert_eq!(
        summary["rows"],
        serde_json::json!({"filters": 3, "rules": 3, "sources": 2})
    );
    let report = dry_run_then_import(&d, &file, &other, "other", "overwrite");
    // Filters and sources matched by name are updated under the target's ids, and
    // the rules referencing them were rewritten to those ids.
    assert_eq!(
        other.query("SELECT id, name, expression FROM filters"),
        vec![
            vec![int(2), txt("no-samples"), txt("name NOT LIKE '%sample%'")],
            vec![int(7), txt("hd-only"), txt("height >= 720")],
            vec![int(8), txt("flac"), txt("codec = 'flac'")],
        ]
    );
    let by_name = "SELECT r.name, s.name, s.path, f.name, f.expression, r.action FROM rules r \
                   LEFT JOIN sources s ON s.id = r.source_id JOIN filters f ON f.id = r.filter_id";
    assert_eq!(other.query(by_name), src.query(by_name));
    // The library (not configuration) still points at its source row 5.
    assert_eq!(other.query("SELECT source_id FROM library"), vec![vec![int(5)]]);
    assert!(other.fk_violations().is_empty());
    assert_eq!(table(&report, "filters")["overwritten"], 2);
}

/// Re-packs an export file's `items` after `change`, with a manifest that lists the
/// changed entries with their real hashes (so only the content is hostile).
fn repack(items: &[Item], change: impl FnOnce(&mut Vec<Item>, &mut Value)) -> Vec<u8> {
    let mut items: Vec<Item> = items.to_vec();
    let at = items.iter().position(|i| i.path == "manifest.json").unwrap();
    let mut manifest: Value = serde_json::from_slice(&items.remove(at).data).unwrap();
    change(&mut items, &mut manifest);
    manifest["entries"] = items.iter().map(Item::manifest_entry).collect();
    let files: Vec<&Item> = items
        .iter()
        .filter(|i| i.kind == tar::EntryType::Regular)
        .collect();
    manifest["totals"]["files"] = files.len().into();
    manifest["totals"]["bytes"] = files.iter().map(|i| i.data.len()).sum::<usize>().into();
    items.push(Item::file(
        "manifest.json",
        serde_json::to_vec_pretty(&manifest).unwrap(),
    ));
    pack(&items)
}

/// Runs `sql` on the database of an export file's items.
fn tamper_db(items: &mut [Item], sql: &str) {
    let dir = short_tempdir("coffer-tamper-");
    let path = dir.path().join("t.db");
    let db = items.iter_mut().find(|i| i.path.starts_with("db/")).unwrap();
    fs::write(&path, &db.data).unwrap();
    Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    db.data = fs::read(&path).unwrap();
}

#[test]
fn hostile_export_files_are_refused_and_change_nothing() {
    let target = SqlApp::new(cms::SCHEMA);
    target.exec("INSERT INTO users VALUES (50, 'canary@x', 'Canary');");
    target.file("sites/7/keep.txt", b"keep");
    // The archive builders here take UTF-8 names only.
    let src = cms::source();
    fs::remove_file(
        src.media
            .join(std::ffi::OsStr::from_bytes(b"sites/1/caf\xe9.txt")),
    )
    .unwrap();
    let (_src, d, dir, file) = cms_setup_with(src, &[("target", &target)]);
    let items = unpack(&file);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            repack(&items, |items, _| {
                items.push(Item::file("media/0/../../escape.txt", "x"))
            }),
            "the export file was rejected",
        ),
        (
            "absolute",
            repack(&items, |items, _| {
                items.push(Item::file("/tmp/coffer-escape.txt", "x"))
            }),
            "the export file was rejected",
        ),
        (
            "sql-table-name",
            repack(&items, |items, _| {
                tamper_db(
                    items,
                    r#"CREATE TABLE "pages""; DROP TABLE users; --" (x); INSERT INTO "pages""; DROP TABLE users; --" VALUES (1);"#,
                )
            }),
            r#"the export file holds table "pages\"; DROP TABLE users; --", which export profile site of this job does not include; the file is refused"#,
        ),
        (
            "trigger",
            repack(&items, |items, _| {
                tamper_db(
                    items,
                    "CREATE TRIGGER evil AFTER INSERT ON pages BEGIN DELETE FROM users; UPDATE sites SET title = 'pwned'; END;",
                )
            }),
            "the export file's database contains trigger \"evil\", which an export never holds; the file is refused",
        ),
        (
            "outside-selection",
            repack(&items, |items, _| {
                items.push(Item::file("media/0/shared/evil.txt", "evil"))
            }),
            "which the media globs of export profile site do not select",
        ),
        (
            "param",
            repack(&items, |_, m| m["export"]["params"]["site"] = "..".into()),
            "the value of parameter site of export profile site contains '..'",
        ),
        (
            "symlink",
            repack(&items, |items, _| {
                items.push(Item::symlink("media/0/sites/1/link", "logo.png"))
            }),
            "which an export never does",
        ),
    ];
    let root_before = names_in(target.root());
    for (name, bytes, phrase) in cases {
        let path = dir.path().join(format!("{name}.tar.zst"));
        fs::write(&path, &bytes).unwrap();
        let (dump, files) = (target.dump(), target.tree());
        for dry_run in [true, false] {
            let out = d.ctl(&import_args(&path, "target", "overwrite", dry_run));
            assert_error_sentence(&out, 1, phrase);
        }
        assert_eq!(target.dump(), dump, "{name}");
        assert_eq!(target.tree(), files, "{name}");
        assert_eq!(names_in(target.root()), root_before, "{name}");
        assert!(!Path::new("/tmp/coffer-escape.txt").exists());
        assert_clean(&d, &target);
    }
    assert!(
        d.list(Some("target")).is_empty(),
        "no safety backup for refused files"
    );

    // A backup is not an export file, and an export file is not a backup.
    let backup = d.backup("cms");
    let backup_file = dir.path().join("backup.tar.zst");
    d.ctl(&[
        "download",
        backup["id"].as_str().unwrap(),
        "-o",
        backup_file.to_str().unwrap(),
    ])
    .expect_ok();
    assert_error_sentence(
        &d.ctl(&import_args(&backup_file, "target", "skip", true)),
        2,
        "the file is a backup, not an export file",
    );
    let out = d.ctl(&["upload", file.to_str().unwrap()]);
    assert_error_sentence(&out, 2, "is an export file, not a backup");
    assert_eq!(d.list(None).len(), 1);
}

#[test]
fn profile_errors_name_the_key_at_load_and_the_table_at_export() {
    let src = cms::source();
    let broken = cms::PROFILE.replace(
        "sites = \"id = :site\"",
        "sites = \"id = :site; DROP TABLE users\"",
    );
    let d = Daemon::configure("", &src.job("cms", &broken));
    let mut cmd = d.cofferd_command();
    cmd.arg("--check-config");
    let out = coffer_tests::run(cmd, coffer_tests::COMMAND_TIMEOUT);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("job 'cms': export[0]: export profile site: the condition in tables.sites contains ';'; a condition is one SQL expression"),
        "{out}"
    );
}

/// What a crash between the media writes and the database commit leaves: a
/// journal naming every step. Start-up puts the media back (the database
/// transaction was never committed, so SQLite already has).
#[test]
fn start_up_rolls_back_the_media_of_an_interrupted_import() {
    let target = cms::conflicting();
    let (dump, files) = (target.dump(), target.tree());
    let d = Daemon::configure("", &target.job("target", cms::PROFILE));
    let site = target.media.join("sites/1");
    fs::rename(site.join("logo.png"), site.join(".coffer-import-x-0.orig")).unwrap();
    fs::write(site.join("logo.png"), b"imported").unwrap();
    fs::create_dir_all(site.join("uploads")).unwrap();
    fs::write(site.join("uploads/new.jpg"), b"new").unwrap();
    fs::write(site.join("uploads/.coffer-import-x-1.partial"), b"ne").unwrap();
    let journal = serde_json::json!({
        "id": "x",
        "database": target.db,
        "state": "applying",
        "steps": [
            {"dest": site.join("logo.png"), "partial": site.join(".coffer-import-x-0.partial"), "aside": site.join(".coffer-import-x-0.orig")},
            {"dest": site.join("uploads/new.jpg"), "partial": site.join("uploads/.coffer-import-x-1.partial"), "aside": null},
            {"dest": site.join("uploads/later.jpg"), "partial": site.join("uploads/.coffer-import-x-2.partial"), "aside": null},
        ],
        "dirs": [site.join("uploads")],
        "probe": null,
    });
    let dir = d.paths.state_dir.join("import-journal");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("x.json"), serde_json::to_vec(&journal).unwrap()).unwrap();
    let d = d.started();
    assert_eq!((target.dump(), target.tree()), (dump, files));
    assert_eq!(names_in(&dir), Vec::<String>::new());
    assert!(
        d.log().contains("rolled back the media of an import"),
        "{}",
        d.log()
    );
}
