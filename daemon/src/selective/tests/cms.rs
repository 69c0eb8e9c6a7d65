//! The multi-site CMS: sites, pages, blocks (with an undeclared `page_ref` link to
//! another page), menu_items (a tree: `parent_id` references its own table), users;
//! uploads under `sites/<id>/`.

use super::*;
use crate::selective::import::RowAction;
use crate::selective::media::ParamFate;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL);
CREATE TABLE sites (id INTEGER PRIMARY KEY, slug TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
                    owner_id INTEGER NOT NULL REFERENCES users(id));
CREATE TABLE pages (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
                    slug TEXT NOT NULL, title TEXT NOT NULL, author_id INTEGER REFERENCES users(id),
                    UNIQUE (site_id, slug));
CREATE TABLE blocks (id INTEGER PRIMARY KEY, page_id INTEGER NOT NULL REFERENCES pages(id) ON DELETE CASCADE,
                     position INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('text', 'image', 'html')),
                     body TEXT, page_ref INTEGER, image TEXT);
CREATE TABLE menu_items (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id),
                         parent_id INTEGER REFERENCES menu_items(id), page_id INTEGER REFERENCES pages(id),
                         label TEXT NOT NULL, position INTEGER NOT NULL);
CREATE INDEX pages_site ON pages(site_id);
CREATE INDEX blocks_page ON blocks(page_id);
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);
CREATE TRIGGER pages_audit AFTER INSERT ON pages BEGIN INSERT INTO audit(what) VALUES ('page ' || NEW.id); END;
CREATE VIEW site_pages AS SELECT s.slug AS site, p.slug AS page FROM sites s JOIN pages p ON p.site_id = s.id;
"#;

pub(crate) const PROFILE: &str = r#"
name = "site"
params = ["site"]
follow-foreign-keys = true
references = ["blocks.page_ref -> pages.id"]
[tables]
sites = "id = :site"
pages = "site_id = :site"
blocks = "page_id IN (SELECT id FROM pages WHERE site_id = :site)"
menu_items = "site_id = :site"
[media]
include = ["sites/{site}/**"]
"#;

const SEED: &str = r#"
INSERT INTO users VALUES (1, 'ann@a', 'Ann'), (2, 'bob@a', 'Bob'), (3, 'cid@a', 'Cid'), (4, 'dee@a', 'Dee');
INSERT INTO sites VALUES (1, 'alpha', 'Alpha', 1), (2, 'beta', 'Beta', 2), (3, 'gamma', 'Gamma', 4);
INSERT INTO pages VALUES (1, 1, 'home', 'Home', 1), (2, 1, 'about', 'About', 3), (3, 1, 'blog', 'Blog', NULL),
                         (4, 2, 'home', 'Beta home', 2), (5, 2, 'about', 'About beta', 2), (6, 3, 'home', 'Gamma', 4);
INSERT INTO blocks VALUES
  (1, 1, 1, 'text', 'Welcome to alpha', NULL, NULL),
  (2, 1, 2, 'image', NULL, NULL, 'sites/1/uploads/hero.jpg'),
  (3, 2, 1, 'text', 'About alpha', 1, NULL),
  (4, 3, 1, 'html', '<p>blog</p>', 2, NULL),
  (5, 4, 1, 'text', 'Welcome to beta', NULL, NULL),
  (6, 5, 1, 'text', 'About beta', 4, NULL),
  (7, 6, 1, 'text', 'gamma', NULL, NULL);
INSERT INTO menu_items VALUES (1, 1, NULL, 1, 'Home', 1), (2, 1, NULL, NULL, 'More', 2), (3, 1, 2, 2, 'About', 1),
                              (4, 1, 2, 3, 'Blog', 2), (5, 2, NULL, 4, 'Home', 1), (6, 2, 5, 5, 'About', 1);
"#;

/// The source instance, with several sites.
pub(crate) fn source() -> App {
    let app = App::new(SCHEMA);
    app.exec(SEED);
    app.file("sites/1/logo.png", b"alpha logo");
    app.file("sites/1/uploads/hero.jpg", b"hero");
    app.file("sites/1/uploads/2024/post.jpg", b"post");
    app.file("sites/2/logo.png", b"beta logo");
    app.file("sites/11/logo.png", b"eleven");
    app.file("shared/favicon.ico", b"icon");
    std::os::unix::fs::symlink("/etc/passwd", app.media.join("sites/1/uploads/passwd.jpg")).unwrap();
    app
}

/// Another instance whose ids and slugs collide with the source's site 1.
fn conflicting_instance() -> App {
    let app = App::new(SCHEMA);
    app.exec(
        r#"
INSERT INTO users VALUES (1, 'zed@b', 'Zed'), (2, 'ann@a', 'Ann on B'), (3, 'cid@a', 'Cid');
INSERT INTO sites VALUES (1, 'other', 'Other', 1), (2, 'alpha', 'Alpha on B', 2);
INSERT INTO pages VALUES (1, 1, 'home', 'Other home', 1), (2, 2, 'home', 'B alpha home', 2), (3, 2, 'contact', 'Contact', NULL);
INSERT INTO blocks VALUES (1, 1, 1, 'text', 'Other welcome', NULL, NULL), (2, 2, 1, 'text', 'B alpha', 3, NULL);
INSERT INTO menu_items VALUES (1, 1, NULL, 1, 'Home', 1);
"#,
    );
    app.file("sites/1/logo.png", b"other logo");
    app.file("sites/2/logo.png", b"alpha on B logo");
    app
}

fn export_site(app: &App, site: &str) -> (ExportProfile, Exported) {
    let p = profile(PROFILE);
    let exp = export(app, &p, &[("site", site)]);
    (p, exp)
}

#[test]
fn export_of_one_site_holds_exactly_its_rows_and_files() {
    let app = source();
    let (_, exp) = export_site(&app, "1");
    let src = |sql: &str| app.query(sql);
    assert_eq!(
        exp.query("SELECT * FROM sites"),
        src("SELECT * FROM sites WHERE id = 1")
    );
    assert_eq!(
        exp.query("SELECT * FROM pages"),
        src("SELECT * FROM pages WHERE site_id = 1")
    );
    assert_eq!(
        exp.query("SELECT * FROM blocks"),
        src("SELECT * FROM blocks WHERE page_id IN (SELECT id FROM pages WHERE site_id = 1)")
    );
    assert_eq!(
        exp.query("SELECT * FROM menu_items"),
        src("SELECT * FROM menu_items WHERE site_id = 1")
    );
    // Followed: the owner (1) and the authors (1, 3) — not Bob or Dee.
    assert_eq!(
        exp.query("SELECT * FROM users"),
        src("SELECT * FROM users WHERE id IN (1, 3)")
    );
    assert_eq!(
        exp.summary.rows,
        BTreeMap::from([
            ("blocks".to_owned(), 4),
            ("menu_items".to_owned(), 4),
            ("pages".to_owned(), 3),
            ("sites".to_owned(), 1),
            ("users".to_owned(), 2)
        ])
    );
    assert_eq!(exp.summary.followed, BTreeMap::from([("users".to_owned(), 2)]));
    assert_eq!(exp.summary.dangling_references, 0);
    // The source's schema for those tables only: no triggers, views or other tables.
    let objects = exp.query("SELECT type, name FROM sqlite_schema ORDER BY type, name");
    let names: Vec<String> = objects
        .iter()
        .map(|r| format!("{}:{}", r[0].render(), r[1].render()))
        .collect();
    assert_eq!(
        names,
        [
            "index:blocks_page",
            "index:pages_site",
            "index:sqlite_autoindex_pages_1",
            "index:sqlite_autoindex_sites_1",
            "index:sqlite_autoindex_users_1",
            "table:blocks",
            "table:menu_items",
            "table:pages",
            "table:sites",
            "table:users"
        ]
    );
    assert_eq!(
        exp.query("SELECT sql FROM sqlite_schema WHERE name = 'pages'"),
        src("SELECT sql FROM sqlite_schema WHERE name = 'pages'")
    );
    // Exactly site 1's regular files: not sites/11, not the symlink, not shared/.
    assert_eq!(
        exp.rels(),
        [
            "sites/1/logo.png",
            "sites/1/uploads/2024/post.jpg",
            "sites/1/uploads/hero.jpg"
        ]
    );
}

#[test]
fn import_into_an_empty_instance_reproduces_the_site() {
    let app = source();
    let (p, exp) = export_site(&app, "1");
    for policy in [
        ConflictPolicy::Skip,
        ConflictPolicy::Overwrite,
        ConflictPolicy::Rename,
    ] {
        let empty = App::new(SCHEMA);
        let report = import_checked(&empty, &exp, &p, policy);
        for t in ["users", "sites", "pages", "blocks", "menu_items"] {
            assert_eq!(
                empty.query(&format!("SELECT * FROM {t}")),
                exp.query(&format!("SELECT * FROM {t}")),
                "{t} under {policy:?}"
            );
        }
        assert!(
            report
                .tables
                .iter()
                .all(|t| t.new == t.rows && t.details.is_empty())
        );
        assert_eq!(report.param_fates.get("site"), Some(&ParamFate::Unchanged));
        assert_eq!(
            empty.tree(),
            BTreeMap::from([
                ("sites/".to_owned(), String::new()),
                ("sites/1/".to_owned(), String::new()),
                ("sites/1/logo.png".to_owned(), "alpha logo".to_owned()),
                ("sites/1/uploads/".to_owned(), String::new()),
                ("sites/1/uploads/2024/".to_owned(), String::new()),
                ("sites/1/uploads/2024/post.jpg".to_owned(), "post".to_owned()),
                ("sites/1/uploads/hero.jpg".to_owned(), "hero".to_owned()),
            ])
        );
        // The target's own trigger ran for the inserted pages: rows went through
        // the target's normal write path.
        assert_eq!(empty.query("SELECT count(*) FROM audit"), vec![vec![int(3)]]);
        // Importing the same file again: everything identical, nothing written.
        let again = import_checked(&empty, &exp, &p, policy);
        assert!(again.tables.iter().all(|t| t.identical == t.rows), "{again:#?}");
        assert_eq!(again.media.identical, 3);
    }
}

#[test]
fn skip_changes_nothing_that_existed() {
    let app = source();
    let (p, exp) = export_site(&app, "1");
    let target = conflicting_instance();
    let before = target.dump();
    let tree_before = target.tree();
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Skip);
    let after = target.dump();
    for (table, rows) in &before {
        for r in rows {
            assert!(after[table].contains(r), "{table} lost {r:?}");
        }
    }
    for (path, content) in &tree_before {
        assert_eq!(target.tree().get(path), Some(content));
    }
    // Site 1 conflicts (another site has id 1 and another has slug alpha), so it
    // is skipped, and so is everything that belongs to it: attaching the file's
    // pages to the target's site 1 would hand them to another site.
    let sites = report.tables.iter().find(|t| t.table == "sites").unwrap();
    assert_eq!((sites.conflicting, sites.skipped), (1, 1));
    let pages = report.tables.iter().find(|t| t.table == "pages").unwrap();
    assert_eq!(pages.skipped, 3);
    assert!(
        matches!(&pages.details[0].action, RowAction::Skip { reason } if reason.contains("which is not imported"))
    );
    assert!(matches!(
        report.param_fates.get("site"),
        Some(ParamFate::Skipped { .. })
    ));
    assert_eq!(report.media.skipped, 3);
    assert_eq!(after, before);
}

#[test]
fn rename_keeps_both_and_every_reference_follows() {
    let app = source();
    let (p, exp) = export_site(&app, "1");
    let target = conflicting_instance();
    let before = target.dump();
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Rename);
    println!("{report}");

    // Nothing that existed changed.
    let after = target.dump();
    for (table, rows) in &before {
        for r in rows {
            assert!(after[table].contains(r), "{table} lost {r:?}");
        }
    }
    // The site got a new id and a suffixed slug; its owner (Ann, whose id and
    // email were both taken) too.
    assert_eq!(
        report.param_fates.get("site"),
        Some(&ParamFate::Renamed { to: "3".to_owned() })
    );
    assert_eq!(
        target.query("SELECT s.id, s.slug, s.title, u.email, u.name FROM sites s JOIN users u ON u.id = s.owner_id WHERE s.id = 3"),
        vec![vec![int(3), txt("alpha-2"), txt("Alpha"), txt("ann@a-2"), txt("Ann")]]
    );
    // Cid was identical: not duplicated, and the About page points at the existing row.
    assert_eq!(
        target.query("SELECT count(*) FROM users WHERE email LIKE 'cid@a%'"),
        vec![vec![int(1)]]
    );
    assert_eq!(
        target.query("SELECT u.id FROM pages p JOIN users u ON u.id = p.author_id WHERE p.site_id = 3 AND p.slug = 'about'"),
        vec![vec![int(3)]]
    );
    // Same pages (by slug and title) under the new site; each page's blocks followed it.
    let page_sql = |site: i64| format!("SELECT slug, title FROM pages WHERE site_id = {site}");
    assert_eq!(target.query(&page_sql(3)), app.query(&page_sql(1)));
    let blocks_sql = |site: i64| {
        format!(
            "SELECT p.slug, b.position, b.kind, b.body, b.image, r.slug FROM blocks b JOIN pages p ON p.id = b.page_id \
             LEFT JOIN pages r ON r.id = b.page_ref WHERE p.site_id = {site}"
        )
    };
    assert_eq!(target.query(&blocks_sql(3)), app.query(&blocks_sql(1)));
    // page_ref (a profile reference, not declared) points into the new site.
    assert_eq!(
        target.query("SELECT count(*) FROM blocks b JOIN pages p ON p.id = b.page_id JOIN pages r ON r.id = b.page_ref WHERE p.site_id = 3 AND r.site_id <> 3"),
        vec![vec![int(0)]]
    );
    // The menu tree (self-reference) and its page links followed too.
    let menu_sql = |site: i64| {
        format!(
            "SELECT m.label, m.position, parent.label, p.slug FROM menu_items m LEFT JOIN menu_items parent ON parent.id = m.parent_id \
             LEFT JOIN pages p ON p.id = m.page_id WHERE m.site_id = {site}"
        )
    };
    assert_eq!(target.query(&menu_sql(3)), app.query(&menu_sql(1)));
    // Media moved with the renamed key; the target's own site 1 files untouched.
    let tree = target.tree();
    assert_eq!(tree["sites/3/logo.png"], "alpha logo");
    assert_eq!(tree["sites/3/uploads/hero.jpg"], "hero");
    assert_eq!(tree["sites/3/uploads/2024/post.jpg"], "post");
    assert_eq!(tree["sites/1/logo.png"], "other logo");
    assert_eq!(report.media.renamed, 3);
    // The report says what happened to each conflicting row.
    let pages = report.tables.iter().find(|t| t.table == "pages").unwrap();
    assert_eq!((pages.conflicting, pages.renamed), (3, 3));
    let RowAction::Rename { changes } = &pages.details[0].action else {
        panic!("{:?}", pages.details[0])
    };
    assert_eq!(changes[0].column, "id");
    assert_eq!((changes[0].from.clone(), changes[0].to.clone()), (int(1), int(4)));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["param-fates"]["site"],
        serde_json::json!({"fate": "renamed", "to": "3"})
    );
    assert_eq!(json["tables"][1]["table"], "sites");
    assert_eq!(json["tables"][1]["details"][0]["action"], "rename");
    assert_eq!(
        json["tables"][1]["details"][0]["changes"][1],
        serde_json::json!({"column": "slug", "from": "alpha", "to": "alpha-2"})
    );
}

/// The source instance after the site's owner edited things: overwrite puts the
/// exported state back.
#[test]
fn overwrite_makes_existing_rows_equal_to_the_file() {
    let app = source();
    let (p, exp) = export_site(&app, "1");
    let target = source();
    target.exec(
        "UPDATE pages SET title = 'Home (edited)' WHERE id = 1;
         UPDATE blocks SET body = 'edited' WHERE id = 1;
         DELETE FROM blocks WHERE id = 2;
         INSERT INTO blocks VALUES (8, 1, 3, 'text', 'only in the target', NULL, NULL);
         UPDATE sites SET title = 'Alpha (edited)' WHERE id = 1;
         DELETE FROM menu_items WHERE id = 4;
         UPDATE sites SET title = 'Beta (edited)' WHERE id = 2;",
    );
    target.file("sites/1/logo.png", b"edited logo");
    std::fs::remove_file(target.media.join("sites/1/uploads/hero.jpg")).unwrap();
    target.file("sites/1/extra.txt", b"only in the target");
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Overwrite);
    for t in ["users", "sites", "pages", "menu_items"] {
        let ids: Vec<String> = exp
            .query(&format!("SELECT id FROM {t}"))
            .iter()
            .map(|r| r[0].render())
            .collect();
        assert_eq!(
            target.query(&format!("SELECT * FROM {t} WHERE id IN ({})", ids.join(","))),
            exp.query(&format!("SELECT * FROM {t}")),
            "{t}"
        );
    }
    // Blocks: the file's blocks are back as exported; the target-only block stays
    // (overwrite never deletes, so nothing cascades).
    assert_eq!(
        target.query("SELECT * FROM blocks WHERE id <> 8 AND page_id IN (1, 2, 3)"),
        exp.query("SELECT * FROM blocks")
    );
    assert_eq!(
        target.query("SELECT body FROM blocks WHERE id = 8"),
        vec![vec![txt("only in the target")]]
    );
    // Other sites are not touched.
    assert_eq!(
        target.query("SELECT title FROM sites WHERE id = 2"),
        vec![vec![txt("Beta (edited)")]]
    );
    let tree = target.tree();
    assert_eq!(tree["sites/1/logo.png"], "alpha logo");
    assert_eq!(tree["sites/1/uploads/hero.jpg"], "hero");
    assert_eq!(tree["sites/1/extra.txt"], "only in the target");
    assert_eq!(
        (
            report.media.overwritten,
            report.media.written,
            report.media.identical
        ),
        (1, 1, 1)
    );
    let sites = report.tables.iter().find(|t| t.table == "sites").unwrap();
    assert_eq!((sites.conflicting, sites.overwritten), (1, 1));
}

#[test]
fn overwrite_refuses_rows_matching_two_existing_rows() {
    let app = source();
    let (p, exp) = export_site(&app, "1");
    let target = conflicting_instance();
    let req_roots = target.roots();
    let req = request(&exp, &target, &req_roots, &p, ConflictPolicy::Overwrite);
    let dry = import::dry_run(&req, &target.conn(), &|| false).unwrap();
    // Site 1 matches site 1 (by id) and site 2 (by slug); Ann matches two users.
    assert_eq!(dry.blocked.len(), 2, "{dry}");
    assert!(
        dry.blocked[1].contains("row id=1 of table sites"),
        "{:?}",
        dry.blocked
    );
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Overwrite);
    assert!(
        err.to_string()
            .starts_with("2 row(s) conflict in a way --on-conflict overwrite cannot resolve"),
        "{err}"
    );
}

#[test]
fn a_check_failure_midway_leaves_database_and_media_as_before() {
    let app = source();
    let (p, exp) = export_site(&app, "1");
    // The target's blocks do not allow 'html' (block 4 of the file is html).
    let target = App::new(&SCHEMA.replace("('text', 'image', 'html')", "('text', 'image')"));
    target.exec("INSERT INTO users VALUES (9, 'x@y', 'X');");
    target.file("sites/9/keep.txt", b"keep");
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Rename);
    assert!(matches!(err, ImportError::WriteRow { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "row id=4 of table blocks could not be written (CHECK constraint failed: kind IN ('text', 'image')); nothing was imported"
    );
    // The media had been written before the rows failed: they were undone, and
    // the directories the import created are gone again.
    assert!(!target.media.join("sites/1").exists());
}

#[test]
fn a_missing_parent_fails_the_foreign_key_check_and_changes_nothing() {
    let app = source();
    // Without follow-foreign-keys, the users the site references are not exported.
    let p = profile(&PROFILE.replace("follow-foreign-keys = true", "follow-foreign-keys = false"));
    let exp = export(&app, &p, &[("site", "1")]);
    assert!(!exp.summary.rows.contains_key("users"));
    let target = App::new(SCHEMA);
    let err = import_fails(&target, &exp, &p, ConflictPolicy::Skip);
    assert!(matches!(err, ImportError::ForeignKey { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("would reference a missing row of table users"),
        "{err}"
    );
}

#[test]
fn export_validates_against_the_live_schema() {
    let app = source();
    let src = Connection::open_with_flags(&app.db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let out = app.dir.path().join("x.db");
    let run = |text: &str| {
        let p = profile(text);
        let v = ParamValues::new(&p, [("site".to_owned(), "1".to_owned())]).unwrap();
        export_database(&src, &p, &v, &out, &|| false, &mut |_, _| {})
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        run(&PROFILE.replace("sites = ", "sitez = ")),
        "export profile site names table sitez, which the database does not have"
    );
    assert_eq!(
        run(&PROFILE.replace("pages = \"site_id = :site\"", "pages = \"site = :site\"")),
        "export profile site: the condition for table pages does not work on this database: no such column: site"
    );
    assert!(
        run(&PROFILE.replace("blocks.page_ref", "blocks.page_rfe"))
            .contains("names column page_rfe, which table blocks does not have")
    );
    assert_eq!(
        run(&PROFILE.replace("sites = ", "site_pages = \"1\"\nsites = ")),
        "export profile site names site_pages, which is a view and not a table; only tables can be exported"
    );
    // SQL in a configured table name is only ever a (bound or quoted) name.
    assert_eq!(
        run(&PROFILE.replace("sites = ", "\"sites; DROP TABLE users; --\" = \"1\"\nsites = ")),
        "export profile site names table sites; DROP TABLE users; --, which the database does not have"
    );
    assert_eq!(app.query("SELECT count(*) FROM users"), vec![vec![int(4)]]);
    assert!(!out.exists(), "nothing is written when validation fails");
}

#[test]
fn parameter_values_are_bound_not_spliced() {
    let app = source();
    let p = profile(&PROFILE.replace("[media]\ninclude = [\"sites/{site}/**\"]", ""));
    // As SQL text this would select every site; bound, it matches nothing.
    let exp = export(&app, &p, &[("site", "1 OR 1=1")]);
    assert_eq!(exp.summary.rows.get("sites"), Some(&0));
    assert_eq!(exp.summary.rows.get("pages"), Some(&0));
}

#[test]
fn follow_foreign_keys_handles_cycles() {
    // A reference cycle: a page's parent and a site's home page.
    let app = App::new(
        "PRAGMA foreign_keys = OFF;
         CREATE TABLE sites (id INTEGER PRIMARY KEY, home_page INTEGER REFERENCES pages(id));
         CREATE TABLE pages (id INTEGER PRIMARY KEY, site_id INTEGER REFERENCES sites(id), parent INTEGER REFERENCES pages(id));
         INSERT INTO sites VALUES (1, 1), (2, 3);
         INSERT INTO pages VALUES (1, 1, NULL), (2, 1, 1), (3, 2, 2), (4, 2, 3);",
    );
    let p = profile(
        "name = \"p\"\nparams = [\"page\"]\nfollow-foreign-keys = true\n[tables]\npages = \"id = :page\"",
    );
    let exp = export(&app, &p, &[("page", "4")]);
    // 4 -> parent 3 -> site 2 -> home 3; 3 -> parent 2 -> site 1 -> home 1; 2 -> parent 1.
    assert_eq!(
        exp.query("SELECT id FROM pages"),
        vec![vec![int(1)], vec![int(2)], vec![int(3)], vec![int(4)]]
    );
    assert_eq!(
        exp.query("SELECT id FROM sites"),
        vec![vec![int(1)], vec![int(2)]]
    );
    // And it imports (cycle: foreign keys deferred) into an empty instance, and
    // under rename into one where every id is taken.
    let empty = App::new(
        "CREATE TABLE sites (id INTEGER PRIMARY KEY, home_page INTEGER REFERENCES pages(id));
         CREATE TABLE pages (id INTEGER PRIMARY KEY, site_id INTEGER REFERENCES sites(id), parent INTEGER REFERENCES pages(id));",
    );
    import_checked(&empty, &exp, &p, ConflictPolicy::Skip);
    assert_eq!(empty.dump(), app.dump());
    let taken = App::new(
        "PRAGMA foreign_keys = OFF;
         CREATE TABLE sites (id INTEGER PRIMARY KEY, home_page INTEGER REFERENCES pages(id));
         CREATE TABLE pages (id INTEGER PRIMARY KEY, site_id INTEGER REFERENCES sites(id), parent INTEGER REFERENCES pages(id));
         INSERT INTO sites VALUES (1, NULL), (2, NULL);
         INSERT INTO pages VALUES (1, 2, NULL), (2, 2, NULL), (3, 2, NULL), (4, 2, NULL);",
    );
    import_checked(&taken, &exp, &p, ConflictPolicy::Rename);
    // The imported copy has the same shape: page 4's chain of parents and sites.
    let chain = taken.query(
        "WITH RECURSIVE c(id, parent, home) AS (
           SELECT p.id, p.parent, s.home_page FROM pages p JOIN sites s ON s.id = p.site_id WHERE p.id = (SELECT max(id) FROM pages)
           UNION ALL SELECT p.id, p.parent, s.home_page FROM c JOIN pages p ON p.id = c.parent JOIN sites s ON s.id = p.site_id)
         SELECT count(*), count(home) FROM c",
    );
    assert_eq!(chain, vec![vec![int(4), int(4)]]);
}

#[test]
fn a_cancelled_import_changes_nothing_and_progress_reaches_its_total() {
    let app = source();
    let (p, exp) = export_site(&app, "1");
    let target = App::new(SCHEMA);
    let roots = target.roots();
    let req = request(&exp, &target, &roots, &p, ConflictPolicy::Rename);
    let before = (target.dump(), target.tree());
    let mut conn = target.conn();
    let err = import::run(&req, &mut conn, &target.journal(), &|| true, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!((target.dump(), target.tree()), before);

    let mut seen = Vec::new();
    import::run(&req, &mut conn, &target.journal(), &|| false, &mut |d, t| {
        seen.push((d, t))
    })
    .unwrap();
    let total = seen.last().unwrap().1;
    // 14 rows planned + 14 written + 3 files.
    assert_eq!(total, 31);
    assert_eq!(seen.last(), Some(&(total, total)));
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 == w[1].1),
        "{seen:?}"
    );
}

#[test]
fn rename_suffixes_past_values_the_export_itself_holds() {
    let app = source();
    app.exec("INSERT INTO pages VALUES (7, 1, 'home-2', 'Second home', 1);");
    let (p, exp) = export_site(&app, "1");
    // The same instance, where page 1 was edited since the export.
    let target = source();
    target.exec("UPDATE pages SET title = 'Home (edited)' WHERE id = 1;");
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Rename);
    println!("{report}");
    assert_eq!(
        target.query("SELECT slug, title FROM pages WHERE site_id = 1"),
        vec![
            vec![txt("about"), txt("About")],
            vec![txt("blog"), txt("Blog")],
            vec![txt("home"), txt("Home (edited)")],
            vec![txt("home-2"), txt("Home")],
            vec![txt("home-2-2"), txt("Second home")],
        ]
    );
    let pages = report.tables.iter().find(|t| t.table == "pages").unwrap();
    assert_eq!(pages.details[1].matched, ["another row of the export"]);
    // The renamed page took its blocks along (copies, next to the originals).
    assert_eq!(
        target.query("SELECT b.body FROM blocks b JOIN pages p ON p.id = b.page_id WHERE p.slug = 'home-2' ORDER BY b.position"),
        vec![vec![SqlValue::Null], vec![txt("Welcome to alpha")]]
    );
}
