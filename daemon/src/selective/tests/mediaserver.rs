//! A media server's configuration: sources, filters, rules referencing filters
//! (and optionally a source), unique names everywhere. No parameters, no media.

use super::*;
use crate::selective::import::{RowAction, RowStatus};

const SCHEMA: &str = r#"
CREATE TABLE sources (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, path TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1);
CREATE TABLE filters (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, expression TEXT NOT NULL);
CREATE TABLE rules (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, source_id INTEGER REFERENCES sources(id),
                    filter_id INTEGER NOT NULL REFERENCES filters(id), action TEXT NOT NULL);
CREATE TABLE library (id INTEGER PRIMARY KEY, source_id INTEGER NOT NULL REFERENCES sources(id), file TEXT NOT NULL);
"#;

const PROFILE: &str = r#"
name = "config"
[tables]
sources = "1"
filters = "1"
rules = "1"
"#;

fn source() -> App {
    let app = App::new(SCHEMA);
    app.exec(
        r#"
INSERT INTO sources VALUES (1, 'movies', '/srv/movies', 1), (2, 'music', '/srv/music', 0);
INSERT INTO filters VALUES (1, 'hd-only', 'height >= 720'), (2, 'no-samples', 'name NOT LIKE ''%sample%'''), (3, 'flac', 'codec = ''flac''');
INSERT INTO rules VALUES (1, 'movies-hd', 1, 1, 'index'), (2, 'skip-samples', NULL, 2, 'ignore'), (3, 'lossless', 2, 3, 'index');
INSERT INTO library VALUES (1, 1, 'a.mkv'), (2, 2, 'b.flac');
"#,
    );
    app
}

/// Another server: same filter names with other ids and expressions.
fn other_server() -> App {
    let app = App::new(SCHEMA);
    app.exec(
        r#"
INSERT INTO sources VALUES (5, 'movies', '/data/films', 1);
INSERT INTO filters VALUES (7, 'hd-only', 'height >= 1080'), (8, 'flac', 'codec = ''flac''');
INSERT INTO rules VALUES (1, 'movies-hd', 5, 7, 'index');
INSERT INTO library VALUES (1, 5, 'z.mkv');
"#,
    );
    app
}

fn rows_by_name(app: &App) -> Vec<Vec<SqlValue>> {
    app.query(
        "SELECT r.name, s.name, s.path, f.name, f.expression, r.action FROM rules r \
         LEFT JOIN sources s ON s.id = r.source_id JOIN filters f ON f.id = r.filter_id",
    )
}

#[test]
fn export_holds_the_whole_configuration_and_nothing_else() {
    let app = source();
    let p = profile(PROFILE);
    let exp = export(&app, &p, &[]);
    assert_eq!(exp.query("SELECT * FROM rules"), app.query("SELECT * FROM rules"));
    assert!(
        exp.query("SELECT name FROM sqlite_schema WHERE name = 'library'")
            .is_empty()
    );
    assert!(exp.media.is_empty());
}

#[test]
fn rename_keeps_both_configurations() {
    let app = source();
    let p = profile(PROFILE);
    let exp = export(&app, &p, &[]);
    let target = other_server();
    let before = target.dump();
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Rename);
    println!("{report}");
    let after = target.dump();
    for (t, rows) in &before {
        for r in rows {
            assert!(after[t].contains(r), "{t} lost {r:?}");
        }
    }
    // Every imported rule still points at the imported filter/source (by content).
    let got = rows_by_name(&target);
    for mut want in rows_by_name(&app) {
        let renamed = |v: &SqlValue, suffix: bool| {
            if suffix {
                SqlValue::text(&format!("{}-2", v.render()))
            } else {
                v.clone()
            }
        };
        // movies-hd, movies and hd-only exist on the target with other content.
        let r = want[0].render();
        want[0] = renamed(&want[0], r == "movies-hd");
        let s = want[1].render();
        want[1] = renamed(&want[1], s == "movies");
        let f = want[3].render();
        want[3] = renamed(&want[3], f == "hd-only" || f == "flac");
        assert!(got.contains(&want), "missing {want:?} in {got:?}");
    }
    // The identical filter `flac` (other id, same name, same expression) is not
    // identical by key: its id 3 is free, but the name is taken by row 8 → renamed.
    let filters = report.tables.iter().find(|t| t.table == "filters").unwrap();
    assert_eq!((filters.new, filters.conflicting, filters.renamed), (1, 2, 2));
}

#[test]
fn overwrite_matched_by_name_keeps_the_existing_id() {
    let app = source();
    let p = profile(PROFILE);
    let exp = export(&app, &p, &[]);
    let target = other_server();
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Overwrite);
    println!("{report}");
    // Filters matched by name were updated in place under the target's ids, and
    // the rules that reference them were rewritten to those ids.
    assert_eq!(
        target.query("SELECT id, name, expression FROM filters"),
        vec![
            vec![int(2), txt("no-samples"), txt("name NOT LIKE '%sample%'")],
            vec![int(7), txt("hd-only"), txt("height >= 720")],
            vec![int(8), txt("flac"), txt("codec = 'flac'")],
        ]
    );
    assert_eq!(
        target.query("SELECT id, name, path FROM sources WHERE name = 'movies'"),
        vec![vec![int(5), txt("movies"), txt("/srv/movies")]]
    );
    let mut want = rows_by_name(&app);
    want.sort();
    assert_eq!(rows_by_name(&target), want);
    // The target's library still points at its source row 5, which now holds the
    // file's values: overwrite updated it in place instead of deleting it.
    assert_eq!(target.query("SELECT source_id FROM library"), vec![vec![int(5)]]);
    let filters = report.tables.iter().find(|t| t.table == "filters").unwrap();
    let d = filters
        .details
        .iter()
        .find(|d| d.key.get("id") == Some(&int(1)))
        .unwrap();
    assert_eq!(d.status, RowStatus::Conflicting);
    assert_eq!(d.matched, ["sqlite_autoindex_filters_1"]);
    assert_eq!(
        d.action,
        RowAction::Overwrite {
            target_key: BTreeMap::from([("id".to_owned(), int(7))])
        }
    );
}

#[test]
fn skip_keeps_the_existing_configuration() {
    let app = source();
    let p = profile(PROFILE);
    let exp = export(&app, &p, &[]);
    let target = other_server();
    let before = target.dump();
    let report = import_checked(&target, &exp, &p, ConflictPolicy::Skip);
    let after = target.dump();
    for (t, rows) in &before {
        for r in rows {
            assert!(after[t].contains(r), "{t} lost {r:?}");
        }
    }
    // Only what does not collide came in: the music source, the no-samples
    // filter and the skip-samples rule (which references only that filter).
    assert_eq!(
        target.query("SELECT name FROM filters WHERE id = 2"),
        vec![vec![txt("no-samples")]]
    );
    assert_eq!(
        target.query("SELECT name FROM rules WHERE name = 'skip-samples'"),
        vec![vec![txt("skip-samples")]]
    );
    // `lossless` references the skipped `flac` filter: skipped with it.
    assert!(
        target
            .query("SELECT * FROM rules WHERE name = 'lossless'")
            .is_empty()
    );
    let rules = report.tables.iter().find(|t| t.table == "rules").unwrap();
    assert_eq!((rules.inserted, rules.skipped), (1, 2));
}
