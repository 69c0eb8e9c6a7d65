//! Scenario tests over three realistic apps (a multi-site CMS, a package registry,
//! a media server's configuration), driving the library the way the daemon will:
//! export from a read-only snapshot connection into a staging dir (database file
//! plus media copied to `media/<n>/...`), then dry-run and import into other
//! instances, asserting on rows and files.

mod cms;
mod hostile;
mod mediaserver;
mod registry;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::selective::ConflictPolicy;
use crate::selective::import::{self, ImportError, ImportReport, ImportRequest};
use crate::selective::media::{ImportedMedia, select_media};
use crate::selective::profile::{ExportProfile, ParamValues, RawExportProfile};
use crate::selective::select::{ExportSummary, export_database};
use crate::selective::sql::SqlValue;

pub(crate) fn profile(toml_text: &str) -> ExportProfile {
    let raw: RawExportProfile = toml::from_str(toml_text).unwrap();
    ExportProfile::from_raw(&raw).unwrap()
}

/// An app instance: its database file and one media directory.
pub(crate) struct App {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub media: PathBuf,
}

impl App {
    pub fn new(schema: &str) -> App {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let media = dir.path().join("uploads");
        fs::create_dir(&media).unwrap();
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(schema).unwrap();
        App { dir, db, media }
    }

    pub fn conn(&self) -> Connection {
        let c = Connection::open(&self.db).unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        c
    }

    pub fn exec(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }

    pub fn file(&self, rel: &str, content: &[u8]) {
        let p = self.media.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    pub fn roots(&self) -> Vec<PathBuf> {
        vec![self.media.clone()]
    }

    /// Every row of every table, sorted, for before/after comparisons.
    pub fn dump(&self) -> BTreeMap<String, Vec<Vec<SqlValue>>> {
        dump(&self.conn())
    }

    /// Every entry under the media directory with its content (links as targets).
    pub fn tree(&self) -> BTreeMap<String, String> {
        tree(&self.media)
    }

    pub fn query(&self, sql: &str) -> Vec<Vec<SqlValue>> {
        query(&self.conn(), sql)
    }

    /// Where a real import into this instance keeps its journal.
    pub fn journal(&self) -> import::JournalTarget {
        import::JournalTarget {
            dir: self.dir.path().join("journal"),
            id: "test".to_owned(),
            database: self.db.clone(),
        }
    }

    pub fn fk_violations(&self) -> Vec<Vec<SqlValue>> {
        self.query("SELECT * FROM pragma_foreign_key_check")
    }
}

pub(crate) fn query(conn: &Connection, sql: &str) -> Vec<Vec<SqlValue>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let mut rows: Vec<Vec<SqlValue>> = stmt
        .query_map([], |r| {
            (0..n).map(|i| r.get_ref(i).map(SqlValue::from_ref)).collect()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

pub(crate) fn dump(conn: &Connection) -> BTreeMap<String, Vec<Vec<SqlValue>>> {
    crate::selective::sql::user_tables(conn)
        .unwrap()
        .into_iter()
        .map(|t| {
            let rows = query(
                conn,
                &format!("SELECT * FROM {}", crate::selective::sql::quote_ident(&t)),
            );
            (t, rows)
        })
        .collect()
}

pub(crate) fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&p).unwrap().display()));
            } else if ft.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                stack.push(p);
            } else {
                out.insert(rel, String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned());
            }
        }
    }
    out
}

pub(crate) fn int(i: i64) -> SqlValue {
    SqlValue::Integer(i)
}
pub(crate) fn txt(s: &str) -> SqlValue {
    SqlValue::text(s)
}

/// An export file as the daemon would have extracted it into staging.
pub(crate) struct Exported {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub media: Vec<ImportedMedia>,
    pub params: BTreeMap<String, String>,
    pub summary: ExportSummary,
}

/// Exports from `app` the way the daemon will: a read-only connection, one read
/// transaction, the media copied to `media/<n>/...` in staging.
pub(crate) fn export(app: &App, profile: &ExportProfile, params: &[(&str, &str)]) -> Exported {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("export.db");
    let src = Connection::open_with_flags(&app.db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let values = ParamValues::new(
        profile,
        params.iter().map(|(a, b)| (a.to_string(), b.to_string())),
    )
    .unwrap();
    let summary = export_database(&src, profile, &values, &db, &|| false, &mut |_, _| {}).unwrap();
    assert!(
        src.is_autocommit(),
        "the export must end its own read transaction"
    );
    let selection = select_media(&app.roots(), profile, &values, &|| false).unwrap();
    let mut media = Vec::new();
    for f in selection.files {
        let staged = dir.path().join("media").join(f.root.to_string()).join(&f.rel);
        fs::create_dir_all(staged.parent().unwrap()).unwrap();
        fs::copy(app.media.join(&f.rel), &staged).unwrap();
        media.push(ImportedMedia {
            root: f.root,
            rel: f.rel,
            staged,
        });
    }
    Exported {
        dir,
        db,
        media,
        params: values.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        summary,
    }
}

impl Exported {
    pub fn conn(&self) -> Connection {
        Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }
    pub fn query(&self, sql: &str) -> Vec<Vec<SqlValue>> {
        query(&self.conn(), sql)
    }
    pub fn rels(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .media
            .iter()
            .map(|m| m.rel.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

pub(crate) fn request<'a>(
    exp: &'a Exported,
    app: &'a App,
    roots: &'a [PathBuf],
    profile: &'a ExportProfile,
    policy: ConflictPolicy,
) -> ImportRequest<'a> {
    let _ = app;
    ImportRequest {
        export_db: &exp.db,
        media: &exp.media,
        params: &exp.params,
        profile,
        media_roots: roots,
        policy,
    }
}

/// Dry run, then the real import; asserts they report the same and that the
/// database changed exactly as reported. Returns the report.
pub(crate) fn import_checked(
    app: &App,
    exp: &Exported,
    profile: &ExportProfile,
    policy: ConflictPolicy,
) -> ImportReport {
    let roots = app.roots();
    let req = request(exp, app, &roots, profile, policy);
    let before = app.dump();
    let tree_before = app.tree();
    let dry = import::dry_run(&req, &app.conn(), &|| false).unwrap();
    assert_eq!(app.dump(), before, "a dry run wrote to the database");
    assert_eq!(app.tree(), tree_before, "a dry run wrote media");
    let mut conn = app.conn();
    let real = import::run(&req, &mut conn, &app.journal(), &|| false, &mut |_, _| {}).unwrap();
    drop(conn);
    assert_eq!(dry, real, "dry run and real import disagree");
    // The database changed exactly as the report says.
    let after = app.dump();
    for t in &real.tables {
        let n_before = before.get(&t.table).map_or(0, Vec::len) as u64;
        let n_after = after.get(&t.table).map_or(0, Vec::len) as u64;
        assert_eq!(
            n_after - n_before,
            t.inserted + t.renamed,
            "row count change of {}",
            t.table
        );
        assert_eq!(t.rows, t.new + t.identical + t.conflicting);
        assert_eq!(
            t.rows,
            t.inserted + t.renamed + t.overwritten + t.skipped + t.identical,
            "{t:?}"
        );
    }
    // Media changed exactly as reported.
    let tree_after = app.tree();
    let added_files = tree_after
        .keys()
        .filter(|k| !k.ends_with('/') && !tree_before.contains_key(*k))
        .count() as u64;
    assert_eq!(
        added_files,
        real.media.written + real.media.renamed,
        "new media files"
    );
    let changed = tree_before
        .iter()
        .filter(|(k, v)| tree_after.get(*k) != Some(v))
        .count() as u64;
    assert_eq!(changed, real.media.overwritten, "replaced media files");
    assert!(
        app.fk_violations().is_empty(),
        "foreign_key_check after import: {:?}",
        app.fk_violations()
    );
    assert!(
        tree_after.keys().all(|k| !k.contains(".coffer-import-")),
        "leftover temp files: {tree_after:?}"
    );
    assert!(
        std::fs::read_dir(app.dir.path().join("journal")).map_or(true, |mut d| d.next().is_none()),
        "a journal was left behind"
    );
    real
}

/// A real import that must fail; asserts database and media are exactly as before.
pub(crate) fn import_fails(
    app: &App,
    exp: &Exported,
    profile: &ExportProfile,
    policy: ConflictPolicy,
) -> ImportError {
    let roots = app.roots();
    let req = request(exp, app, &roots, profile, policy);
    let before = app.dump();
    let tree_before = app.tree();
    let mut conn = app.conn();
    let err = import::run(&req, &mut conn, &app.journal(), &|| false, &mut |_, _| {}).unwrap_err();
    drop(conn);
    assert_eq!(app.dump(), before, "a failed import changed the database: {err}");
    assert_eq!(app.tree(), tree_before, "a failed import changed media: {err}");
    assert!(
        std::fs::read_dir(app.dir.path().join("journal")).map_or(true, |mut d| d.next().is_none()),
        "a failed import left its journal behind"
    );
    let msg = err.to_string();
    assert!(
        !msg.contains('\n') && !msg.contains("Error {") && !msg.contains("SqliteFailure"),
        "{msg}"
    );
    err
}
