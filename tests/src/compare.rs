//! Comparing what came out with what went in: databases table by table, trees
//! entry by entry (content, modes, links).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;

use crate::*;

fn open_ro(db: &Path) -> Connection {
    Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()))
}

/// Every row of `table`, ordered by rowid.
pub fn table_rows(db: &Path, table: &str) -> Vec<Vec<SqlValue>> {
    let conn = open_ro(db);
    rows_of(&conn, table)
}

fn rows_of(conn: &Connection, table: &str) -> Vec<Vec<SqlValue>> {
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {quoted} ORDER BY rowid"))
        .unwrap();
    let columns = stmt.column_count();
    stmt.query_map([], |row| {
        (0..columns).map(|i| row.get::<_, SqlValue>(i)).collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The schema (type, name, table, sql) without root pages, which `VACUUM` renumbers.
fn schema_of(conn: &Connection) -> Vec<(String, String, String, Option<String>)> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Asserts that two databases have the same schema, `user_version`, `application_id`
/// and, table by table (from `sqlite_master`), the same rows in rowid order.
#[track_caller]
pub fn assert_same_db(a: &Path, b: &Path) {
    if let Some(difference) = db_difference(a, b) {
        panic!("{difference}");
    }
}

/// The first difference [`assert_same_db`] would report, or `None` if the databases
/// agree (for tests that accept one of several states).
pub fn db_difference(a: &Path, b: &Path) -> Option<String> {
    let (ca, cb) = (open_ro(a), open_ro(b));
    let (sa, sb) = (schema_of(&ca), schema_of(&cb));
    if sa != sb {
        return Some(format!(
            "schemas differ between {} and {}: {sa:?} != {sb:?}",
            a.display(),
            b.display()
        ));
    }
    for pragma in ["user_version", "application_id"] {
        let get = |c: &Connection| {
            c.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        let (x, y) = (get(&ca), get(&cb));
        if x != y {
            return Some(format!("PRAGMA {pragma} differs: {x} != {y}"));
        }
    }
    let tables: Vec<&String> = sa.iter().filter(|s| s.0 == "table").map(|s| &s.1).collect();
    if tables.is_empty() {
        return Some(format!("{} has no tables", a.display()));
    }
    for table in tables {
        let (ra, rb) = (rows_of(&ca, table), rows_of(&cb, table));
        if ra.len() != rb.len() {
            return Some(format!(
                "table {table}: row counts differ: {} != {}",
                ra.len(),
                rb.len()
            ));
        }
        for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
            if x != y {
                return Some(format!("table {table}: row {i} differs: {x:?} != {y:?}"));
            }
        }
    }
    None
}

/// What [`assert_tree_eq`] compares for each path.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, sha256: String, size: u64 },
    Symlink { target: PathBuf },
}

fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
        let rel = path.strip_prefix(root).unwrap().to_owned();
        let mode = meta.mode() & 0o7777;
        let node = if meta.file_type().is_symlink() {
            Node::Symlink {
                target: fs::read_link(&path).unwrap(),
            }
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            Node::Dir { mode }
        } else if meta.is_file() {
            Node::File {
                mode,
                sha256: sha256_file(&path),
                size: meta.len(),
            }
        } else {
            panic!("{} is neither a file, a directory nor a symlink", path.display());
        };
        out.insert(rel, node);
    }
    out
}

/// Asserts that two directory trees hold the same names, file bytes, permission bits
/// (directories included) and symlink targets. Symlinks are compared, never followed.
#[track_caller]
pub fn assert_tree_eq(a: &Path, b: &Path) {
    if let Some(difference) = tree_difference(a, b) {
        panic!("{difference}");
    }
}

/// The first difference [`assert_tree_eq`] would report, or `None` if the trees
/// agree (for tests that accept one of several states).
pub fn tree_difference(a: &Path, b: &Path) -> Option<String> {
    let (ta, tb) = (tree(a), tree(b));
    let names_a: Vec<&PathBuf> = ta.keys().collect();
    let names_b: Vec<&PathBuf> = tb.keys().collect();
    if names_a != names_b {
        return Some(format!(
            "{} and {} hold different names: {names_a:?} != {names_b:?}",
            a.display(),
            b.display()
        ));
    }
    ta.iter()
        .find(|(path, node)| tb.get(*path) != Some(*node))
        .map(|(path, node)| {
            format!(
                "{} differs between {} and {}: {node:?} != {:?}",
                path.display(),
                a.display(),
                b.display(),
                tb.get(path)
            )
        })
}
