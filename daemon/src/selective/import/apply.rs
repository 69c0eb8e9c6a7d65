//! Import apply: execute a [`DbPlan`] inside the caller's transaction, and the
//! foreign key check that must come out clean before it commits.
//!
//! The file is read again in the same order as when planning; each row gets the
//! plan's op (insert, nothing, rename-then-insert, or update of an existing row),
//! its references rewritten through the final key map. Any statement that fails
//! (a CHECK constraint, a partial unique index) stops everything with a sentence
//! naming the table and the row; the caller rolls back.

use std::collections::BTreeSet;

use rusqlite::{Connection, params_from_iter};

use super::ImportError;
use super::plan::{DbPlan, Detail, OP_DETAIL, OP_INSERT, TableCtx, for_each_export_row, rewrite};
use super::source::ExportDb;
use crate::selective::select::sqlite_message;
use crate::selective::sql::{SqlValue, quote_ident};

fn render_row_key(ctx: &TableCtx, row: &[SqlValue]) -> String {
    let pos: Vec<usize> = if ctx.pk_pos.is_empty() {
        ctx.keys.first().map(|k| k.pos.clone()).unwrap_or_default()
    } else {
        ctx.pk_pos.clone()
    };
    if pos.is_empty() {
        return "without a key".to_owned();
    }
    pos.iter()
        .map(|&p| format!("{}={}", ctx.columns[p], row[p].render()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Called just before a row is written: its table, its final values, and the
/// positions of the columns the write stores.
pub(crate) type BeforeWrite<'a> = dyn FnMut(&TableCtx, &[SqlValue], &[usize]) -> Result<(), ImportError> + 'a;

/// Writes the plan into `conn`, which must be inside the import's transaction.
/// `before_write` is called with every row just before it is written, with the
/// positions of the columns the write stores (for the commit probe).
pub(crate) fn apply_db(
    export: &ExportDb,
    conn: &Connection,
    plan: &DbPlan,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
    before_write: &mut BeforeWrite<'_>,
) -> Result<(), ImportError> {
    let mut done = 0u64;
    for tp in &plan.tables {
        let Some(ctx) = plan.ctxs.get(&tp.lower) else {
            continue;
        };
        let mut writer = TableWriter::new(conn, ctx)?;
        let n = for_each_export_row(export, ctx, |ordinal, mut row| {
            let op = usize::try_from(ordinal)
                .ok()
                .and_then(|o| tp.ops.get(o).copied())
                .ok_or_else(|| ImportError::ExportChanged {
                    table: ctx.name.clone(),
                })?;
            if op != OP_INSERT && op != OP_DETAIL {
                return Ok(());
            }
            rewrite(&mut row, ctx, &plan.remap);
            writer.write(op, tp.details.get(&ordinal), &mut row, before_write)?;
            done += 1;
            if done.is_multiple_of(1024) {
                if cancelled() {
                    return Err(ImportError::Cancelled);
                }
                progress(done);
            }
            Ok(())
        })?;
        if usize::try_from(n).ok() != Some(tp.ops.len()) {
            return Err(ImportError::ExportChanged {
                table: ctx.name.clone(),
            });
        }
    }
    progress(done);
    Ok(())
}

/// Writes the rows of one table: its INSERT and the condition naming one row.
struct TableWriter<'c> {
    conn: &'c Connection,
    ctx: &'c TableCtx,
    insert: rusqlite::CachedStatement<'c>,
    ident_cond: String,
}

impl<'c> TableWriter<'c> {
    fn new(conn: &'c Connection, ctx: &'c TableCtx) -> Result<TableWriter<'c>, ImportError> {
        let col_list = ctx
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let insert_sql = format!(
            "INSERT INTO main.{}({col_list}) VALUES ({})",
            quote_ident(&ctx.name),
            vec!["?"; ctx.columns.len()].join(", ")
        );
        let ident_cond = if ctx.ident_len == 1 {
            format!("{} = ?", ctx.ident_expr)
        } else {
            format!("({}) = ({})", ctx.ident_expr, vec!["?"; ctx.ident_len].join(", "))
        };
        let insert = conn
            .prepare_cached(&insert_sql)
            .map_err(|source| ImportError::Target {
                table: ctx.name.clone(),
                source,
            })?;
        Ok(TableWriter {
            conn,
            ctx,
            insert,
            ident_cond,
        })
    }

    fn write_err(&self, e: &rusqlite::Error, row: &[SqlValue]) -> ImportError {
        ImportError::WriteRow {
            table: self.ctx.name.clone(),
            key: render_row_key(self.ctx, row),
            message: sqlite_message(e),
        }
    }

    /// Writes one row under its op, calling `before` first with the final values
    /// and the positions of the columns the write stores (all for an insert, the
    /// updated ones for an update).
    fn write(
        &mut self,
        op: u8,
        detail: Option<&Detail>,
        row: &mut [SqlValue],
        before: &mut BeforeWrite<'_>,
    ) -> Result<(), ImportError> {
        let all: Vec<usize> = (0..row.len()).collect();
        match (op, detail) {
            (OP_INSERT, _) => {}
            (_, Some(Detail::Rename(changes))) => {
                for (p, v) in changes {
                    if let Some(slot) = row.get_mut(*p) {
                        *slot = v.clone();
                    }
                }
            }
            (_, Some(Detail::Update { ident, set })) => {
                before(self.ctx, row, set)?;
                return self.update(ident, set, row);
            }
            _ => {
                return Err(ImportError::ExportChanged {
                    table: self.ctx.name.clone(),
                });
            }
        }
        before(self.ctx, row, &all)?;
        self.insert
            .execute(params_from_iter(row.iter()))
            .map_err(|e| self.write_err(&e, row))?;
        Ok(())
    }

    /// Sets the columns `set` of the target row `ident` to the row's values.
    fn update(&self, ident: &[SqlValue], set: &[usize], row: &[SqlValue]) -> Result<(), ImportError> {
        if set.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE main.{} SET {} WHERE {}",
            quote_ident(&self.ctx.name),
            set.iter()
                .map(|&p| format!("{} = ?", quote_ident(&self.ctx.columns[p])))
                .collect::<Vec<_>>()
                .join(", "),
            self.ident_cond
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(|source| ImportError::Target {
                table: self.ctx.name.clone(),
                source,
            })?;
        let values = set.iter().map(|&p| &row[p]).chain(ident.iter());
        stmt.execute(params_from_iter(values))
            .map_err(|e| self.write_err(&e, row))?;
        Ok(())
    }
}

/// One `PRAGMA foreign_key_check` result: (table, rowid, parent table, fk id).
pub(crate) type Violation = (String, Option<i64>, String, i64);

/// The tables whose foreign keys an import can break: the carried ones, and
/// every table with a foreign key into one of them.
pub(crate) fn fk_relevant_tables(conn: &Connection, carried: &[String]) -> Result<Vec<String>, ImportError> {
    let terr = |source| ImportError::Target {
        table: carried.join(", "),
        source,
    };
    let mut out: BTreeSet<String> = carried.iter().cloned().collect();
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT m.name FROM main.sqlite_schema m, pragma_foreign_key_list(m.name, 'main') f \
             WHERE m.type = 'table' AND f.\"table\" = ?1 COLLATE NOCASE",
        )
        .map_err(terr)?;
    for t in carried {
        let names: Vec<String> = stmt
            .query_map([t], |r| r.get(0))
            .map_err(terr)?
            .collect::<Result<_, _>>()
            .map_err(terr)?;
        out.extend(names);
    }
    Ok(out.into_iter().collect())
}

/// Foreign key violations in rows of `tables`.
pub(crate) fn fk_violations(
    conn: &Connection,
    tables: &[String],
) -> Result<BTreeSet<Violation>, ImportError> {
    let mut out = BTreeSet::new();
    for t in tables {
        let terr = |source| ImportError::Target {
            table: t.clone(),
            source,
        };
        let mut stmt = conn
            .prepare_cached("SELECT \"table\", rowid, parent, fkid FROM pragma_foreign_key_check(?1, 'main')")
            .map_err(terr)?;
        let rows = stmt
            .query_map([t], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(terr)?;
        for v in rows {
            out.insert(v.map_err(terr)?);
        }
    }
    Ok(out)
}
