//! Three realistic apps for the selective export and import tests, built by the
//! tests: a multi-site CMS ([`cms`]), a package registry ([`registry`]) and a media
//! server's configuration ([`mediaserver`]). Each is an SQLite schema, seed data,
//! media files and the `[[job.export]]` profile its admins would write; [`SqlApp`]
//! is one instance of such an app (database + one media directory) with the
//! queries the tests compare with.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use tempfile::TempDir;

use crate::{job_toml, short_tempdir};

/// One instance of an app: `app.db` and the media directory `uploads/` in a
/// directory of its own.
pub struct SqlApp {
    dir: TempDir,
    pub db: PathBuf,
    pub media: PathBuf,
}

impl SqlApp {
    /// A new instance with `schema` (and nothing else) in its database.
    pub fn new(schema: &str) -> SqlApp {
        let dir = short_tempdir("coffer-app-");
        let db = dir.path().join("app.db");
        let media = dir.path().join("uploads");
        fs::create_dir(&media).unwrap();
        Connection::open(&db).unwrap().execute_batch(schema).unwrap();
        SqlApp { dir, db, media }
    }

    /// The directory holding database and media (and nothing else of the test's).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn conn(&self) -> Connection {
        let conn = Connection::open(&self.db).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        conn
    }

    pub fn exec(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }

    /// Writes a media file (creating its directories).
    pub fn file(&self, rel: &str, content: &[u8]) {
        let path = self.media.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// The rows `sql` returns, sorted (so comparisons ignore order).
    pub fn query(&self, sql: &str) -> Vec<Vec<SqlValue>> {
        query(&self.conn(), sql)
    }

    /// Every row of every table (SQLite's own included), for before/after checks.
    pub fn dump(&self) -> BTreeMap<String, Vec<Vec<SqlValue>>> {
        dump(&self.db)
    }

    /// Every entry under the media directory: files with their content, `/` after
    /// directories, `-> target` for links.
    pub fn tree(&self) -> BTreeMap<String, String> {
        tree(&self.media)
    }

    /// `PRAGMA foreign_key_check` of the whole database.
    pub fn fk_violations(&self) -> Vec<Vec<SqlValue>> {
        self.query("SELECT * FROM pragma_foreign_key_check")
    }

    /// A `[[job]]` section over this instance with `profiles` (`[[job.export]]`
    /// sections) appended.
    pub fn job(&self, name: &str, profiles: &str) -> String {
        job_toml(name, &self.db, &[self.media.as_path()], profiles)
    }
}

/// Sorts rows by their text form (values are not `Ord`).
fn sorted(mut rows: Vec<Vec<SqlValue>>) -> Vec<Vec<SqlValue>> {
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// The rows `sql` returns on `conn`, sorted.
pub fn query(conn: &Connection, sql: &str) -> Vec<Vec<SqlValue>> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| (0..n).map(|i| r.get::<_, SqlValue>(i)).collect())
        .unwrap()
        .collect::<Result<Vec<Vec<SqlValue>>, _>>()
        .unwrap();
    sorted(rows)
}

/// Every row of every table of the database at `db`.
pub fn dump(db: &Path) -> BTreeMap<String, Vec<Vec<SqlValue>>> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<String> = query(&conn, "SELECT name FROM sqlite_master WHERE type = 'table'")
        .into_iter()
        .map(|r| match &r[0] {
            SqlValue::Text(t) => t.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let rows = query(&conn, &format!("SELECT * FROM \"{}\"", t.replace('"', "\"\"")));
            (t, rows)
        })
        .collect()
}

/// Every entry under `root` (see [`SqlApp::tree`]).
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&path).unwrap().display()));
            } else if meta.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                stack.push(path);
            } else {
                out.insert(
                    rel,
                    String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned(),
                );
            }
        }
    }
    out
}

pub fn int(i: i64) -> SqlValue {
    SqlValue::Integer(i)
}

pub fn txt(s: &str) -> SqlValue {
    SqlValue::Text(s.to_owned())
}

/// The multi-site CMS: sites, pages, blocks (with an undeclared `page_ref` link to
/// another page), menu_items (a tree: `parent_id` references its own table), users;
/// uploads under `sites/<id>/`; an audit table filled by a trigger, and a view.
pub mod cms {
    use std::os::unix::ffi::OsStrExt;

    use super::SqlApp;

    pub const SCHEMA: &str = r#"
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

    /// "Everything of my site", as the README shows it.
    pub const PROFILE: &str = r#"
[[job.export]]
name = "site"
params = ["site"]
follow-foreign-keys = true
references = ["blocks.page_ref -> pages.id"]
[job.export.tables]
sites = "id = :site"
pages = "site_id = :site"
blocks = "page_id IN (SELECT id FROM pages WHERE site_id = :site)"
menu_items = "site_id = :site"
[job.export.media]
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

    /// The source instance, with three sites, their uploads (one with a name that is
    /// not UTF-8), a shared file, another site whose id starts with 1 (`sites/11`) and
    /// a symlink out of the media dir.
    pub fn source() -> SqlApp {
        let app = SqlApp::new(SCHEMA);
        app.exec(SEED);
        app.file("sites/1/logo.png", b"alpha logo");
        app.file("sites/1/uploads/hero.jpg", b"hero");
        app.file("sites/1/uploads/2024/post.jpg", b"post");
        // A Latin-1 name, not UTF-8: it travels byte for byte.
        let latin1 = std::ffi::OsStr::from_bytes(b"sites/1/caf\xe9.txt");
        std::fs::write(app.media.join(latin1), b"cafe").unwrap();
        app.file("sites/2/logo.png", b"beta logo");
        app.file("sites/11/logo.png", b"eleven");
        app.file("shared/favicon.ico", b"icon");
        std::os::unix::fs::symlink("/etc/passwd", app.media.join("sites/1/uploads/passwd.jpg")).unwrap();
        app
    }

    /// Another instance whose ids and slugs collide with the source's site 1.
    pub fn conflicting() -> SqlApp {
        let app = SqlApp::new(SCHEMA);
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

    /// The source instance after the site's owner edited things (overwrite puts the
    /// exported state back).
    pub fn edited() -> SqlApp {
        let app = source();
        app.exec(
            "UPDATE pages SET title = 'Home (edited)' WHERE id = 1;
             UPDATE blocks SET body = 'edited' WHERE id = 1;
             DELETE FROM blocks WHERE id = 2;
             INSERT INTO blocks VALUES (8, 1, 3, 'text', 'only in the target', NULL, NULL);
             UPDATE sites SET title = 'Alpha (edited)' WHERE id = 1;
             UPDATE sites SET title = 'Beta (edited)' WHERE id = 2;",
        );
        app.file("sites/1/logo.png", b"edited logo");
        std::fs::remove_file(app.media.join("sites/1/uploads/hero.jpg")).unwrap();
        app.file("sites/1/extra.txt", b"only in the target");
        app
    }
}

/// The package registry: users, packages owned by users, releases with tarballs on
/// disk under `tarballs/<login>/`, download counts (a WITHOUT ROWID table).
pub mod registry {
    use super::SqlApp;

    pub const SCHEMA: &str = r#"
CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, login TEXT NOT NULL UNIQUE, email TEXT NOT NULL);
CREATE TABLE packages (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, owner_id INTEGER NOT NULL REFERENCES users(id),
                       description TEXT);
CREATE TABLE releases (id INTEGER PRIMARY KEY, package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
                       version TEXT NOT NULL, tarball TEXT NOT NULL, sha256 TEXT NOT NULL, UNIQUE (package_id, version));
CREATE TABLE downloads (release_id INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE, day TEXT NOT NULL,
                        count INTEGER NOT NULL, PRIMARY KEY (release_id, day)) WITHOUT ROWID;
"#;

    /// A publisher and everything they published.
    pub const PROFILE: &str = r#"
[[job.export]]
name = "publisher"
params = ["login"]
follow-foreign-keys = true
[job.export.tables]
users = "login = :login"
packages = "owner_id IN (SELECT id FROM users WHERE login = :login)"
releases = "package_id IN (SELECT p.id FROM packages p JOIN users u ON u.id = p.owner_id WHERE u.login = :login)"
downloads = "release_id IN (SELECT r.id FROM releases r JOIN packages p ON p.id = r.package_id JOIN users u ON u.id = p.owner_id WHERE u.login = :login)"
[job.export.media]
include = ["tarballs/{login}/*.tgz"]
"#;

    pub fn source() -> SqlApp {
        let app = SqlApp::new(SCHEMA);
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

    /// Another registry: the login alice belongs to someone else there, bob has id 1,
    /// and a package called left-pad exists.
    pub fn other() -> SqlApp {
        let app = SqlApp::new(SCHEMA);
        app.exec(
            r#"
INSERT INTO users VALUES (1, 'bob', 'bob@other.org'), (7, 'alice', 'other-alice@example.org');
INSERT INTO packages VALUES (1, 'left-pad', 1, 'another left-pad');
INSERT INTO releases VALUES (1, 1, '1.0.0', 'tarballs/bob/left-pad-1.0.0.tgz', 'xx');
INSERT INTO downloads VALUES (1, '2024-01-01', 99);
"#,
        );
        app.file("tarballs/bob/left-pad-1.0.0.tgz", b"bob's left-pad");
        app.file("tarballs/alice/left-pad-1.0.0.tgz", b"other alice's file");
        app
    }
}

/// A media server's configuration: sources, filters, rules referencing filters (and
/// optionally a source), unique names everywhere; the library itself is not
/// configuration and is never exported.
pub mod mediaserver {
    use super::SqlApp;

    pub const SCHEMA: &str = r#"
CREATE TABLE sources (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, path TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1);
CREATE TABLE filters (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, expression TEXT NOT NULL);
CREATE TABLE rules (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, source_id INTEGER REFERENCES sources(id),
                    filter_id INTEGER NOT NULL REFERENCES filters(id), action TEXT NOT NULL);
CREATE TABLE library (id INTEGER PRIMARY KEY, source_id INTEGER NOT NULL REFERENCES sources(id), file TEXT NOT NULL);
"#;

    /// The whole configuration; no parameters, no media.
    pub const PROFILE: &str = r#"
[[job.export]]
name = "config"
[job.export.tables]
sources = "1"
filters = "1"
rules = "1"
"#;

    pub fn source() -> SqlApp {
        let app = SqlApp::new(SCHEMA);
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

    /// Another server: the same names with other ids and expressions.
    pub fn other() -> SqlApp {
        let app = SqlApp::new(SCHEMA);
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
}
