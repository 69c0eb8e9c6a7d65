//! SQL plumbing shared by export and import: identifier quoting, a hashable SQLite
//! value, and schema introspection.
//!
//! Every schema fact comes from SQLite's PRAGMA table-valued functions with the
//! table name *bound* as a parameter, so a hostile name ("x; DROP TABLE y") is only
//! ever data. Every identifier that does reach SQL text goes through [`quote_ident`].
//! Callers turn the `rusqlite::Error`s returned here into their own sentences.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params};
use serde::{Serialize, Serializer};

/// Quotes an SQL identifier (`a"b` → `"a""b"`), so any name is safe in SQL text.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A name made safe for a one-line message: control characters escaped, length
/// capped, so a hostile table name cannot forge log lines.
pub fn display_name(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i >= 80 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An `f64` compared and hashed by its bits, so rows can be set members.
#[derive(Clone, Copy, Debug)]
pub struct Real(pub f64);

impl PartialEq for Real {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Real {}
impl Hash for Real {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}
impl PartialOrd for Real {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Real {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One SQLite value, owned, hashable and ordered. Text is kept as bytes because a
/// hostile or legacy database may hold text that is not UTF-8, and an import must
/// write back exactly what the file holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(Real),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl SqlValue {
    /// Copies a borrowed value out of a row.
    pub fn from_ref(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(i) => SqlValue::Integer(i),
            ValueRef::Real(f) => SqlValue::Real(Real(f)),
            ValueRef::Text(t) => SqlValue::Text(t.to_vec()),
            ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        }
    }

    /// A text value.
    pub fn text(s: &str) -> Self {
        SqlValue::Text(s.as_bytes().to_vec())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, SqlValue::Null)
    }

    /// How the value reads in a report or a media path: integers and text as
    /// themselves, blobs as an SQL hex literal.
    pub fn render(&self) -> String {
        match self {
            SqlValue::Null => "NULL".to_owned(),
            SqlValue::Integer(i) => i.to_string(),
            SqlValue::Real(r) => r.0.to_string(),
            SqlValue::Text(t) => String::from_utf8_lossy(t).into_owned(),
            SqlValue::Blob(b) => {
                let mut s = String::from("X'");
                for byte in b {
                    s.push_str(&format!("{byte:02X}"));
                }
                s.push('\'');
                s
            }
        }
    }

    /// A command-line or manifest parameter as the value SQLite would compare it
    /// as: a canonical integer becomes INTEGER (so `id = :site` also works inside
    /// expressions that apply no affinity), anything else TEXT.
    pub fn from_param(value: &str) -> Self {
        match value.parse::<i64>() {
            Ok(i) if i.to_string() == value => SqlValue::Integer(i),
            _ => SqlValue::text(value),
        }
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(i) => ValueRef::Integer(*i),
            SqlValue::Real(r) => ValueRef::Real(r.0),
            SqlValue::Text(t) => ValueRef::Text(t),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl Serialize for SqlValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SqlValue::Null => s.serialize_none(),
            SqlValue::Integer(i) => s.serialize_i64(*i),
            SqlValue::Real(r) => s.serialize_f64(r.0),
            SqlValue::Text(_) | SqlValue::Blob(_) => s.serialize_str(&self.render()),
        }
    }
}

/// What kind of object a name in `sqlite_schema` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaObject {
    /// `table`, `index`, `view` or `trigger`.
    pub kind: String,
    pub name: String,
}

/// Every object of the `main` schema (tables, indexes, views, triggers).
pub fn schema_objects(conn: &Connection) -> rusqlite::Result<Vec<SchemaObject>> {
    let mut stmt = conn.prepare("SELECT type, name FROM main.sqlite_schema ORDER BY rowid")?;
    let rows = stmt.query_map([], |r| {
        Ok(SchemaObject {
            kind: r.get(0)?,
            name: r.get(1)?,
        })
    })?;
    rows.collect()
}

/// How SQLite stores a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// An ordinary table.
    Table,
    /// A virtual table (FTS, R-tree...): its rows live elsewhere, never exported.
    Virtual,
    /// A view: no rows of its own.
    View,
    /// The internal storage of a virtual table.
    Shadow,
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub decl_type: String,
    /// 1-based position in the primary key, 0 when not part of it.
    pub pk: u32,
    /// Generated columns are computed by SQLite and never written.
    pub generated: bool,
}

/// A set of columns no two rows may share (primary key or UNIQUE index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueKey {
    /// `primary key` or the index name.
    pub name: String,
    /// Indexes into [`TableSchema::columns`].
    pub columns: Vec<usize>,
    /// The collation the index compares each column with (`None`: the column's own).
    pub collations: Vec<Option<String>>,
    pub primary: bool,
}

/// A declared `REFERENCES` clause, as SQLite reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredForeignKey {
    pub child_columns: Vec<String>,
    pub parent_table: String,
    /// Empty when the clause names no columns: then it means the parent's primary key.
    pub parent_columns: Vec<String>,
}

/// What the code needs to know about one table.
#[derive(Clone, Debug)]
pub struct TableSchema {
    /// The name as stored in the schema (SQLite names are case-insensitive; this
    /// is the canonical spelling).
    pub name: String,
    pub kind: TableKind,
    pub without_rowid: bool,
    /// All columns including generated ones, in declaration order.
    pub columns: Vec<Column>,
    /// Primary key columns (indexes into `columns`), in key order; empty when the
    /// table has only the implicit rowid.
    pub pk: Vec<usize>,
    /// The column that is an alias of the rowid (`INTEGER PRIMARY KEY`), if any.
    pub rowid_alias: Option<usize>,
    /// Primary key first, then every complete UNIQUE index over plain columns.
    pub unique_keys: Vec<UniqueKey>,
    pub foreign_keys: Vec<DeclaredForeignKey>,
}

impl TableSchema {
    /// Index of a column by name (case-insensitive, like SQLite).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Indexes of the columns an INSERT writes (everything but generated columns).
    pub fn writable_columns(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&i| !self.columns[i].generated)
            .collect()
    }
}

/// Finds a table-like object by name, case-insensitively, and returns its
/// canonical name and kind.
pub fn find_table(conn: &Connection, name: &str) -> rusqlite::Result<Option<(String, TableKind)>> {
    conn.query_row(
        "SELECT name, type FROM pragma_table_list WHERE schema = 'main' AND name = ?1 COLLATE NOCASE",
        params![name],
        |r| {
            let name: String = r.get(0)?;
            let kind: String = r.get(1)?;
            Ok((name, kind))
        },
    )
    .optional()
    .map(|o| {
        o.map(|(n, k)| {
            let kind = match k.as_str() {
                "view" => TableKind::View,
                "virtual" => TableKind::Virtual,
                "shadow" => TableKind::Shadow,
                _ => TableKind::Table,
            };
            (n, kind)
        })
    })
}

/// Names of all ordinary tables of `main` except SQLite's own (`sqlite_*`).
pub fn user_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Loads a table's schema; `None` when no table, view or virtual table has that name.
pub fn load_table(conn: &Connection, name: &str) -> rusqlite::Result<Option<TableSchema>> {
    let Some((name, kind)) = find_table(conn, name)? else {
        return Ok(None);
    };
    let without_rowid: bool = conn
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            params![name],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some_and(|wr| wr != 0);
    let columns = load_columns(conn, &name)?;
    let mut pk: Vec<usize> = (0..columns.len()).filter(|&i| columns[i].pk > 0).collect();
    pk.sort_by_key(|&i| columns[i].pk);
    let indexes = if kind == TableKind::Table {
        load_indexes(conn, &name)?
    } else {
        Vec::new()
    };
    let has_pk_index = indexes.iter().any(|i| i.origin == "pk");
    let rowid_alias = if !without_rowid && pk.len() == 1 && !has_pk_index && kind == TableKind::Table {
        Some(pk[0])
    } else {
        None
    };
    let unique_keys = load_unique_keys(conn, &columns, &pk, &indexes)?;
    let foreign_keys = if kind == TableKind::Table {
        load_foreign_keys(conn, &name)?
    } else {
        Vec::new()
    };
    Ok(Some(TableSchema {
        name,
        kind,
        without_rowid,
        columns,
        pk,
        rowid_alias,
        unique_keys,
        foreign_keys,
    }))
}

/// All columns of a table, generated ones included, in declaration order.
fn load_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Column>> {
    let mut columns = Vec::new();
    let mut stmt =
        conn.prepare("SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid")?;
    let mut rows = stmt.query(params![table])?;
    while let Some(r) = rows.next()? {
        let hidden: i64 = r.get(3)?;
        let pk: i64 = r.get(2)?;
        columns.push(Column {
            name: r.get(0)?,
            decl_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            pk: u32::try_from(pk).unwrap_or(0),
            generated: hidden == 2 || hidden == 3,
        });
    }
    Ok(columns)
}

/// One index of a table, as `pragma_index_list` reports it.
struct Index {
    name: String,
    unique: bool,
    origin: String,
    partial: bool,
}

fn load_indexes(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Index>> {
    let mut indexes = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1, 'main') ORDER BY name",
    )?;
    let mut rows = stmt.query(params![table])?;
    while let Some(r) = rows.next()? {
        indexes.push(Index {
            name: r.get(0)?,
            unique: r.get::<_, i64>(1)? != 0,
            origin: r.get(2)?,
            partial: r.get::<_, i64>(3)? != 0,
        });
    }
    Ok(indexes)
}

/// The primary key, then every complete UNIQUE index over plain columns.
fn load_unique_keys(
    conn: &Connection,
    columns: &[Column],
    pk: &[usize],
    indexes: &[Index],
) -> rusqlite::Result<Vec<UniqueKey>> {
    let mut unique_keys = Vec::new();
    if !pk.is_empty() {
        unique_keys.push(UniqueKey {
            name: "primary key".to_owned(),
            columns: pk.to_vec(),
            collations: vec![None; pk.len()],
            primary: true,
        });
    }
    for index in indexes
        .iter()
        .filter(|i| i.unique && !i.partial && i.origin != "pk")
    {
        let mut stmt = conn
            .prepare("SELECT cid, coll FROM pragma_index_xinfo(?1, 'main') WHERE key = 1 ORDER BY seqno")?;
        let info: Vec<(i64, Option<String>)> = stmt
            .query_map(params![index.name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        // cid -2 is an expression, -1 the rowid: such keys cannot be compared by
        // column values, so they are left to SQLite's own constraint check.
        let Some(cols) = info
            .iter()
            .map(|(c, _)| usize::try_from(*c).ok().filter(|&c| c < columns.len()))
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        if cols.is_empty() || unique_keys.iter().any(|k: &UniqueKey| k.columns == cols) {
            continue;
        }
        unique_keys.push(UniqueKey {
            name: index.name.clone(),
            columns: cols,
            collations: info.into_iter().map(|(_, c)| c).collect(),
            primary: false,
        });
    }
    Ok(unique_keys)
}

/// The declared `REFERENCES` clauses of a table, one per foreign key.
fn load_foreign_keys(conn: &Connection, table: &str) -> rusqlite::Result<Vec<DeclaredForeignKey>> {
    let mut foreign_keys: Vec<DeclaredForeignKey> = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1, 'main') ORDER BY id, seq",
    )?;
    let mut rows = stmt.query(params![table])?;
    let mut last_id = None;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let parent: String = r.get(1)?;
        let from: String = r.get(2)?;
        let to: Option<String> = r.get(3)?;
        if last_id != Some(id) {
            foreign_keys.push(DeclaredForeignKey {
                child_columns: Vec::new(),
                parent_table: parent,
                parent_columns: Vec::new(),
            });
            last_id = Some(id);
        }
        if let Some(fk) = foreign_keys.last_mut() {
            fk.child_columns.push(from);
            if let Some(to) = to {
                fk.parent_columns.push(to);
            }
        }
    }
    Ok(foreign_keys)
}
