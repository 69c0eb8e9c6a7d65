//! Export, database side: select a profile's rows from a consistent snapshot and
//! write them into a new SQLite file with the source's schema for those tables.
//!
//! Data flow: [`export_database`] resolves the profile against the live schema
//! ([`crate::selective::graph`]), checks every condition by preparing it, creates the output
//! file with the source's `CREATE TABLE` and `CREATE INDEX` statements for the
//! involved tables only (no triggers, no views), copies the rows each condition
//! selects (parameter values bound, never spliced), then — with
//! `follow-foreign-keys` — adds the parent rows the copied rows reference,
//! repeating until a pass adds nothing (so chains are followed transitively and
//! cycles end). Rows stream from one connection to the other; the missing parent
//! keys of one reference are staged in a TEMP table of the output connection, so
//! memory stays flat whatever the size.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OpenFlags, params_from_iter};
use serde::Serialize;

use crate::selective::graph::{self, Edge, Graph, GraphError};
use crate::selective::profile::{ExportProfile, ParamValues};
use crate::selective::sql::{SqlValue, TableSchema, quote_ident};

/// Errors of an export's database part.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Schema(#[from] GraphError),
    #[error(
        "export profile {profile}: the condition for table {table} does not work on this database: {message}"
    )]
    BadCondition {
        profile: String,
        table: String,
        message: String,
    },
    #[error(
        "export profile {profile}: the condition for table {table} uses parameter :{param}, which has no value"
    )]
    UnboundParam {
        profile: String,
        table: String,
        param: String,
    },
    #[error("the export database {path} already exists; refusing to overwrite it")]
    OutputExists { path: String },
    #[error("the schema of table {table} could not be copied into the export database")]
    CopySchema {
        table: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("reading rows of table {table} from the source database failed")]
    Read {
        table: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("writing rows of table {table} into the export database failed")]
    Write {
        table: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the export database {path} could not be created")]
    Output {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the export was cancelled")]
    Cancelled,
}

/// What an export selected, for the manifest and the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ExportSummary {
    /// Rows per table in the export database (canonical table names).
    pub rows: BTreeMap<String, u64>,
    /// Of those, rows added because selected rows reference them.
    pub followed: BTreeMap<String, u64>,
    /// References (foreign key values) whose parent row the source does not
    /// have: left as they are, reported so the admin knows.
    pub dangling_references: u64,
}

/// Rolls back a read transaction this module opened, however it ends.
struct ReadTxn<'a> {
    conn: &'a Connection,
    active: bool,
}

impl Drop for ReadTxn<'_> {
    fn drop(&mut self) {
        if self.active {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Writes the rows `profile` selects for `params` from `src` into a new SQLite
/// file at `out` and returns the row counts.
///
/// `src` should be a snapshot file or a connection the caller holds in a read
/// transaction; if it is in autocommit mode this function opens (and ends) one
/// read transaction itself, so everything is read from one consistent state.
/// `progress` gets (rows written, rows known so far).
pub fn export_database(
    src: &Connection,
    profile: &ExportProfile,
    params: &ParamValues,
    out: &Path,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportSummary, SelectError> {
    let _txn = if src.is_autocommit() {
        src.execute_batch("BEGIN DEFERRED").map_err(GraphError::Sqlite)?;
        Some(ReadTxn {
            conn: src,
            active: true,
        })
    } else {
        None
    };
    let graph = graph::resolve(src, profile)?;
    // Every condition is checked (and its rows counted) before anything is written.
    let base_total = count_selected(src, &graph, profile, params)?;
    let dst = create_output(out)?;
    copy_schema(src, &dst, &graph)?;

    let mut done = 0u64;
    let mut total = base_total;
    let mut base_rows: BTreeMap<String, u64> = BTreeMap::new();
    for table in &graph.profile_tables {
        let sql = select_sql(&graph, profile, table)?;
        let mut stmt = prepare_condition(src, profile, table, &sql)?;
        bind_params(&mut stmt, profile, table, params)?;
        let n = copy_rows(&mut stmt, &dst, &graph, table, cancelled, &mut |k| {
            done += k;
            progress(done, total);
        })?;
        *base_rows.entry(table.clone()).or_default() += n;
    }
    let dangling = if profile.follow_foreign_keys {
        follow_all(src, &dst, &graph, cancelled, &mut |added| {
            total += added;
            done += added;
            progress(done, total);
        })?
    } else {
        0
    };
    let summary = summarize(&dst, &graph, &base_rows, dangling)?;
    let out_err = |source| SelectError::Output {
        path: out.display().to_string(),
        source,
    };
    dst.execute_batch("COMMIT").map_err(out_err)?;
    dst.close().map_err(|(_, e)| out_err(e))?;
    Ok(summary)
}

/// Prepares every profile condition and counts the rows it selects.
fn count_selected(
    src: &Connection,
    graph: &Graph,
    profile: &ExportProfile,
    params: &ParamValues,
) -> Result<u64, SelectError> {
    let mut total = 0u64;
    for table in &graph.profile_tables {
        let sql = format!("SELECT count(*) FROM ({})", select_sql(graph, profile, table)?);
        let mut stmt = prepare_condition(src, profile, table, &sql)?;
        bind_params(&mut stmt, profile, table, params)?;
        let rerr = |source| SelectError::Read {
            table: table.clone(),
            source,
        };
        let mut rows = stmt.raw_query();
        let n: i64 = match rows.next().map_err(rerr)? {
            Some(r) => r.get(0).map_err(rerr)?,
            None => 0,
        };
        total += u64::try_from(n).unwrap_or(0);
    }
    Ok(total)
}

/// Creates the export database at `out` (which must not exist) inside a transaction.
fn create_output(out: &Path) -> Result<Connection, SelectError> {
    if out.exists() {
        return Err(SelectError::OutputExists {
            path: out.display().to_string(),
        });
    }
    let out_err = |source| SelectError::Output {
        path: out.display().to_string(),
        source,
    };
    let dst = Connection::open_with_flags(
        out,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(out_err)?;
    // The file is scratch until the daemon packs it: a crash leaves a staging file
    // that is swept, so durability here buys nothing. Foreign keys are off (the
    // bundled SQLite turns them on by default): rows arrive in selection order, and
    // an export without follow-foreign-keys legitimately lacks parents.
    dst.execute_batch(
        "PRAGMA foreign_keys = OFF; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; BEGIN",
    )
    .map_err(out_err)?;
    Ok(dst)
}

/// Adds parent rows until a pass over every reference adds nothing (chains are
/// followed transitively, cycles end). `added` gets the rows of each step; returns
/// the references whose parent the source does not have.
fn follow_all(
    src: &Connection,
    dst: &Connection,
    graph: &Graph,
    cancelled: &dyn Fn() -> bool,
    added: &mut dyn FnMut(u64),
) -> Result<u64, SelectError> {
    loop {
        let mut added_this_pass = 0;
        let mut missing_this_pass = 0;
        for edge in &graph.edges {
            if cancelled() {
                return Err(SelectError::Cancelled);
            }
            let (a, m) = follow_edge(src, dst, graph, edge)?;
            added_this_pass += a;
            missing_this_pass += m;
            added(a);
        }
        if added_this_pass == 0 {
            return Ok(missing_this_pass);
        }
    }
}

/// Row counts of the export database.
fn summarize(
    dst: &Connection,
    graph: &Graph,
    base_rows: &BTreeMap<String, u64>,
    dangling: u64,
) -> Result<ExportSummary, SelectError> {
    let mut summary = ExportSummary {
        dangling_references: dangling,
        ..ExportSummary::default()
    };
    for schema in graph.tables.values() {
        let n: i64 = dst
            .query_row(
                &format!("SELECT count(*) FROM main.{}", quote_ident(&schema.name)),
                [],
                |r| r.get(0),
            )
            .map_err(|source| SelectError::Write {
                table: schema.name.clone(),
                source,
            })?;
        let n = u64::try_from(n).unwrap_or(0);
        let base = base_rows.get(&schema.name).copied().unwrap_or(0);
        summary.rows.insert(schema.name.clone(), n);
        if n > base {
            summary.followed.insert(schema.name.clone(), n - base);
        }
    }
    Ok(summary)
}

fn column_list(schema: &TableSchema, alias: Option<&str>) -> String {
    schema
        .writable_columns()
        .iter()
        .map(|&i| match alias {
            Some(a) => format!("{a}.{}", quote_ident(&schema.columns[i].name)),
            None => quote_ident(&schema.columns[i].name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn select_sql(graph: &Graph, profile: &ExportProfile, table: &str) -> Result<String, SelectError> {
    let schema = graph.table(table).ok_or_else(|| GraphError::UnknownTable {
        profile: profile.name.clone(),
        table: table.to_owned(),
    })?;
    let cond = profile.table(table).map(|s| s.condition.as_str()).unwrap_or("0");
    // The condition is the admin's SQL from the config (trusted); the newline
    // keeps a trailing `-- comment` in it from swallowing the closing parenthesis.
    Ok(format!(
        "SELECT {} FROM main.{} WHERE ({}\n)",
        column_list(schema, None),
        quote_ident(&schema.name),
        cond
    ))
}

fn prepare_condition<'c>(
    src: &'c Connection,
    profile: &ExportProfile,
    table: &str,
    sql: &str,
) -> Result<rusqlite::Statement<'c>, SelectError> {
    src.prepare(sql).map_err(|e| SelectError::BadCondition {
        profile: profile.name.clone(),
        table: table.to_owned(),
        message: sqlite_message(&e),
    })
}

/// SQLite's own message ("no such column: x") without Rust decoration.
pub(crate) fn sqlite_message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

fn bind_params(
    stmt: &mut rusqlite::Statement<'_>,
    profile: &ExportProfile,
    table: &str,
    params: &ParamValues,
) -> Result<(), SelectError> {
    for i in 1..=stmt.parameter_count() {
        let name = stmt
            .parameter_name(i)
            .unwrap_or("")
            .trim_start_matches(':')
            .to_owned();
        let value = params.get(&name).ok_or_else(|| SelectError::UnboundParam {
            profile: profile.name.clone(),
            table: table.to_owned(),
            param: name.clone(),
        })?;
        stmt.raw_bind_parameter(i, SqlValue::from_param(value))
            .map_err(|source| SelectError::Read {
                table: table.to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// Creates the involved tables and their indexes with the source's own SQL.
fn copy_schema(src: &Connection, dst: &Connection, graph: &Graph) -> Result<(), SelectError> {
    for schema in graph.tables.values() {
        let err = |source| SelectError::CopySchema {
            table: schema.name.clone(),
            source,
        };
        let mut stmt = src
            .prepare(
                "SELECT sql FROM main.sqlite_schema WHERE tbl_name = ?1 AND sql IS NOT NULL \
                 AND type IN ('table', 'index') ORDER BY type = 'index', rowid",
            )
            .map_err(err)?;
        let sqls: Vec<String> = stmt
            .query_map([&schema.name], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        for sql in sqls {
            // `execute` refuses more than one statement, so a schema entry can
            // only ever create the one object it describes.
            dst.execute(&sql, []).map_err(err)?;
        }
    }
    Ok(())
}

fn insert_sql(schema: &TableSchema, verb: &str) -> String {
    let cols = schema.writable_columns();
    format!(
        "{verb} INTO main.{}({}) VALUES ({})",
        quote_ident(&schema.name),
        column_list(schema, None),
        vec!["?"; cols.len()].join(", ")
    )
}

fn copy_rows(
    stmt: &mut rusqlite::Statement<'_>,
    dst: &Connection,
    graph: &Graph,
    table: &str,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, SelectError> {
    let Some(schema) = graph.table(table) else {
        return Ok(0);
    };
    let n_cols = schema.writable_columns().len();
    let mut ins = dst
        .prepare_cached(&insert_sql(schema, "INSERT"))
        .map_err(|source| SelectError::Write {
            table: table.to_owned(),
            source,
        })?;
    let mut rows = stmt.raw_query();
    let mut n = 0u64;
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(source) => {
                return Err(SelectError::Read {
                    table: table.to_owned(),
                    source,
                });
            }
        };
        let values = (0..n_cols)
            .map(|i| row.get_ref(i).map(ToSqlOutput::Borrowed))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| SelectError::Read {
                table: table.to_owned(),
                source,
            })?;
        ins.execute(params_from_iter(values))
            .map_err(|source| SelectError::Write {
                table: table.to_owned(),
                source,
            })?;
        n += 1;
        if n.is_multiple_of(1024) {
            if cancelled() {
                return Err(SelectError::Cancelled);
            }
            progress(1024);
        }
    }
    progress(n % 1024);
    Ok(n)
}

/// Adds to the output the parent rows that rows of `edge.child` reference but the
/// output lacks. Returns (rows added, distinct keys that were missing).
fn follow_edge(
    src: &Connection,
    dst: &Connection,
    graph: &Graph,
    edge: &Edge,
) -> Result<(u64, u64), SelectError> {
    let (Some(child), Some(parent)) = (graph.table(&edge.child), graph.table(&edge.parent)) else {
        return Ok((0, 0));
    };
    let werr = |source| SelectError::Write {
        table: parent.name.clone(),
        source,
    };
    let keys: Vec<String> = (0..edge.child_columns.len()).map(|i| format!("k{i}")).collect();
    let select_keys = edge
        .child_columns
        .iter()
        .zip(&keys)
        .map(|(c, k)| format!("c.{} AS {k}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let not_null = edge
        .child_columns
        .iter()
        .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let matches = edge
        .child_columns
        .iter()
        .zip(&edge.parent_columns)
        .map(|(c, p)| format!("p.{} = c.{}", quote_ident(p), quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    dst.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp.coffer_missing_keys;
         CREATE TEMP TABLE coffer_missing_keys AS SELECT DISTINCT {select_keys} FROM main.{child} c \
         WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM main.{parent} p WHERE {matches});",
        child = quote_ident(&child.name),
        parent = quote_ident(&parent.name),
    ))
    .map_err(werr)?;

    let fetch_sql = format!(
        "SELECT {} FROM main.{} WHERE {}",
        column_list(parent, None),
        quote_ident(&parent.name),
        edge.parent_columns
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{} = ?{}", quote_ident(p), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    let rerr = |source| SelectError::Read {
        table: parent.name.clone(),
        source,
    };
    let mut fetch = src.prepare_cached(&fetch_sql).map_err(rerr)?;
    // OR IGNORE: a parent reached through two different keys (id and slug) is
    // added once; source rows already satisfy every other constraint.
    let mut ins = dst
        .prepare_cached(&insert_sql(parent, "INSERT OR IGNORE"))
        .map_err(werr)?;
    let mut scan = dst
        .prepare(&format!(
            "SELECT {} FROM temp.coffer_missing_keys",
            keys.join(", ")
        ))
        .map_err(werr)?;
    let n_cols = parent.writable_columns().len();
    let mut added = 0u64;
    let mut missing = 0u64;
    let mut key_rows = scan.raw_query();
    while let Some(k) = key_rows.next().map_err(werr)? {
        missing += 1;
        let key: Vec<SqlValue> = (0..keys.len())
            .map(|i| k.get_ref(i).map(SqlValue::from_ref))
            .collect::<Result<_, _>>()
            .map_err(werr)?;
        let mut found = fetch.query(params_from_iter(key.iter())).map_err(rerr)?;
        while let Some(row) = found.next().map_err(rerr)? {
            let values = (0..n_cols)
                .map(|i| row.get_ref(i).map(ToSqlOutput::Borrowed))
                .collect::<Result<Vec<_>, _>>()
                .map_err(rerr)?;
            added += u64::try_from(ins.execute(params_from_iter(values)).map_err(werr)?).unwrap_or(0);
        }
    }
    drop(key_rows);
    drop(scan);
    dst.execute_batch("DROP TABLE temp.coffer_missing_keys")
        .map_err(werr)?;
    Ok((added, missing))
}
