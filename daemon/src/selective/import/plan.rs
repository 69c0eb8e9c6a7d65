//! Import planning: decide, for every row of the export file, what the import does.
//!
//! Data flow: the target's profile is resolved on the target schema (that closure
//! is the set of tables a file may carry); the file's tables are checked against it
//! and for identical column sets; tables are visited parents first. Each row of a
//! table is read from the file, its references to already-renamed parent rows are
//! rewritten, then it is matched against the target by primary key and by every
//! complete UNIQUE index (and against rows this import already placed), classified
//! new / identical / conflicting, and given an action under the policy:
//!
//! * `skip`: a conflicting row is not written. Rows that reference a skipped row
//!   are skipped too (with a reason): attaching them to the *existing* row of that
//!   key would hand them to a different site or user.
//! * `overwrite`: the existing row is UPDATEd in place to the file's values (its
//!   own primary key kept). Nothing is ever deleted, so no `ON DELETE CASCADE` of
//!   the target fires and rows the file does not carry (children of the
//!   overwritten row included) stay. The file's dependent rows are imported under
//!   the same policy, so they too end up equal to the file. A row that matches two
//!   different existing rows (by id one, by a unique name another) cannot be
//!   overwritten without deleting one: the plan marks it blocked and the real
//!   import refuses to start.
//! * `rename`: a conflicting row is inserted under new keys: a conflicting INTEGER
//!   PRIMARY KEY (or other single integer key) becomes max+1, a conflicting UNIQUE
//!   text value gets `-2`, `-3`... until free. Every change is entered in the key
//!   map, through which children's declared and profile references are rewritten.
//!   A key with neither (e.g. a composite key of two references) cannot be renamed:
//!   the row is skipped, with that reason.
//!
//! The plan keeps one byte per row plus details only for rows that are updated or
//! renamed; the apply step re-reads the file in the same order. Limits, documented
//! because they are deliberate: partial and expression UNIQUE indexes are left to
//! SQLite's own check at write time (a violation aborts the import cleanly); in a
//! reference cycle (including a table referencing itself) a row is matched before
//! the renames of rows later in the same cycle are known, and skips do not
//! cascade along such references — the rewrite itself still uses the final key map.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{Connection, params_from_iter};

use super::ImportError;
use super::report::{ColumnChange, RowAction, RowReport, RowStatus, TableReport};
use super::source::ExportDb;
use crate::selective::ConflictPolicy;
use crate::selective::graph::{self, Graph};
use crate::selective::media::ParamFate;
use crate::selective::profile::{ExportProfile, ParamValues};
use crate::selective::sql::{SqlValue, TableSchema, display_name, quote_ident};

pub(crate) const OP_INSERT: u8 = 0;
pub(crate) const OP_NOTHING: u8 = 1;
pub(crate) const OP_DETAIL: u8 = 2;

/// What to do with a row beyond a plain insert.
#[derive(Debug)]
pub(crate) enum Detail {
    /// Insert with these row positions set to new values.
    Rename(Vec<(usize, SqlValue)>),
    /// Update the target row `ident`, setting these positions to the file's values.
    Update { ident: Vec<SqlValue>, set: Vec<usize> },
}

#[derive(Debug)]
pub(crate) struct KeyCtx {
    pub name: String,
    pub pos: Vec<usize>,
    pub primary: bool,
    pub lookup_sql: String,
}

#[derive(Debug)]
pub(crate) struct EdgeCtx {
    pub child_pos: Vec<usize>,
    pub parent: String,
    pub parent_set: usize,
}

/// Everything about one carried table the planner and the apply step need.
#[derive(Debug)]
pub(crate) struct TableCtx {
    pub name: String,
    pub lower: String,
    /// Writable columns of the target table: the order of every row vector.
    pub columns: Vec<String>,
    pub pk_pos: Vec<usize>,
    /// `rowid` (or an unshadowed alias), or the primary key columns.
    pub ident_expr: String,
    pub ident_len: usize,
    /// Reads the file's rows, always in the same order.
    pub select_export: String,
    pub keys: Vec<KeyCtx>,
    /// Column sets other rows may reference (keys, and the targets of references):
    /// the key map and the skipped set are kept per such set.
    pub tracked: Vec<Vec<usize>>,
    pub parents: Vec<EdgeCtx>,
    pub fk_child_pos: HashSet<usize>,
}

impl TableCtx {
    fn tuple(row: &[SqlValue], pos: &[usize]) -> Option<Vec<SqlValue>> {
        let t: Vec<SqlValue> = pos
            .iter()
            .map(|&p| row.get(p).cloned().unwrap_or(SqlValue::Null))
            .collect();
        (!t.iter().any(SqlValue::is_null)).then_some(t)
    }

    fn key_map(&self, row: &[SqlValue]) -> BTreeMap<String, SqlValue> {
        let pos = if !self.pk_pos.is_empty() {
            self.pk_pos.clone()
        } else {
            self.keys.first().map(|k| k.pos.clone()).unwrap_or_default()
        };
        pos.iter()
            .map(|&p| {
                (
                    self.columns[p].clone(),
                    row.get(p).cloned().unwrap_or(SqlValue::Null),
                )
            })
            .collect()
    }
}

pub(crate) type SetKey = (String, usize);

/// The planned actions of one table.
#[derive(Debug)]
pub(crate) struct TablePlan {
    pub lower: String,
    pub ops: Vec<u8>,
    pub details: HashMap<u64, Detail>,
    pub report: TableReport,
}

/// The database part of an import plan.
#[derive(Debug)]
pub(crate) struct DbPlan {
    pub ctxs: BTreeMap<String, TableCtx>,
    /// Parents first.
    pub tables: Vec<TablePlan>,
    /// (table, tracked set) → file values → new values, for every row whose
    /// referenced values change.
    pub remap: HashMap<SetKey, HashMap<Vec<SqlValue>, Vec<SqlValue>>>,
    /// (table, tracked set) → file values of rows not imported → why.
    pub skipped: HashMap<SetKey, HashMap<Vec<SqlValue>, String>>,
    pub blocked: Vec<String>,
    pub param_fates: BTreeMap<String, ParamFate>,
}

/// Rewrites `row`'s references to rows whose keys the import changes. Returns
/// whether anything changed.
pub(crate) fn rewrite(
    row: &mut [SqlValue],
    ctx: &TableCtx,
    remap: &HashMap<SetKey, HashMap<Vec<SqlValue>, Vec<SqlValue>>>,
) -> bool {
    let mut changed = false;
    for e in &ctx.parents {
        let Some(t) = TableCtx::tuple(row, &e.child_pos) else {
            continue;
        };
        if let Some(new) = remap
            .get(&(e.parent.clone(), e.parent_set))
            .and_then(|m| m.get(&t))
        {
            for (i, &p) in e.child_pos.iter().enumerate() {
                if let (Some(slot), Some(v)) = (row.get_mut(p), new.get(i)) {
                    *slot = v.clone();
                }
            }
            changed = true;
        }
    }
    changed
}

/// Streams the file's rows of one table in plan order.
pub(crate) fn for_each_export_row(
    export: &ExportDb,
    ctx: &TableCtx,
    mut f: impl FnMut(u64, Vec<SqlValue>) -> Result<(), ImportError>,
) -> Result<u64, ImportError> {
    let rerr = |source| ImportError::ReadExport {
        table: ctx.name.clone(),
        source,
    };
    let mut stmt = export.conn.prepare(&ctx.select_export).map_err(rerr)?;
    let mut rows = stmt.raw_query();
    let n = ctx.columns.len();
    let mut ordinal = 0u64;
    while let Some(r) = rows.next().map_err(rerr)? {
        let row = (0..n)
            .map(|i| r.get_ref(i).map(SqlValue::from_ref))
            .collect::<Result<Vec<_>, _>>()
            .map_err(rerr)?;
        f(ordinal, row)?;
        ordinal += 1;
    }
    Ok(ordinal)
}

fn rowid_name(columns: &[String]) -> Option<&'static str> {
    ["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|n| !columns.iter().any(|c| c.eq_ignore_ascii_case(n)))
}

/// Builds the contexts of the carried tables and checks the file against the
/// target: only allowed tables, same columns.
fn build_contexts(
    export: &ExportDb,
    target: &Connection,
    profile: &ExportProfile,
) -> Result<(Graph, BTreeMap<String, TableCtx>), ImportError> {
    let graph = graph::resolve(target, profile)?;
    for (lower, name) in &export.tables {
        if !graph.tables.contains_key(lower) {
            return Err(ImportError::TableNotAllowed {
                table: display_name(name),
                profile: profile.name.clone(),
            });
        }
    }
    let mut ctxs = BTreeMap::new();
    for (lower, schema) in &graph.tables {
        let Some(exp) = export.table(lower)? else { continue };
        ctxs.insert(lower.clone(), table_ctx(&graph, lower, schema, &exp)?);
    }
    link_parents(&graph, &mut ctxs);
    Ok((graph, ctxs))
}

/// Checks that the file's table has exactly the target table's (writable) columns.
fn check_columns(schema: &TableSchema, columns: &[String], exp: &TableSchema) -> Result<(), ImportError> {
    let exp_cols: Vec<String> = exp
        .writable_columns()
        .iter()
        .map(|&i| exp.columns[i].name.clone())
        .collect();
    if let Some(c) = columns
        .iter()
        .find(|c| !exp_cols.iter().any(|e| e.eq_ignore_ascii_case(c)))
    {
        return Err(ImportError::ColumnMissing {
            table: schema.name.clone(),
            column: c.clone(),
        });
    }
    if let Some(c) = exp_cols
        .iter()
        .find(|e| !columns.iter().any(|c| c.eq_ignore_ascii_case(e)))
    {
        return Err(ImportError::ColumnExtra {
            table: schema.name.clone(),
            column: display_name(c),
        });
    }
    Ok(())
}

fn quoted_list(columns: &[String], pos: &[usize]) -> String {
    pos.iter()
        .map(|&p| quote_ident(&columns[p]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a target row is named in SQL: its rowid (under a name no column shadows) or,
/// without one, its primary key columns. Returns the expression and its arity.
fn row_identity(
    schema: &TableSchema,
    columns: &[String],
    pk_pos: &[usize],
) -> Result<(String, usize), ImportError> {
    if schema.without_rowid {
        return Ok((quoted_list(columns, pk_pos), pk_pos.len()));
    }
    match rowid_name(&schema.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>()) {
        Some(r) => Ok((r.to_owned(), 1)),
        None if !pk_pos.is_empty() => Ok((quoted_list(columns, pk_pos), pk_pos.len())),
        None => Err(ImportError::NoRowIdentity {
            table: schema.name.clone(),
        }),
    }
}

/// The context of one carried table (see [`TableCtx`]).
fn table_ctx(
    graph: &Graph,
    lower: &str,
    schema: &TableSchema,
    exp: &TableSchema,
) -> Result<TableCtx, ImportError> {
    let writable = schema.writable_columns();
    let columns: Vec<String> = writable.iter().map(|&i| schema.columns[i].name.clone()).collect();
    check_columns(schema, &columns, exp)?;
    let pos_of = |schema_idx: usize| writable.iter().position(|&w| w == schema_idx);
    let pk_pos: Vec<usize> = schema.pk.iter().filter_map(|&i| pos_of(i)).collect();
    let (ident_expr, ident_len) = row_identity(schema, &columns, &pk_pos)?;
    let all: Vec<usize> = (0..columns.len()).collect();
    let col_list = quoted_list(&columns, &all);
    let order = if pk_pos.is_empty() {
        "rowid".to_owned()
    } else {
        quoted_list(&columns, &pk_pos)
    };
    let select_export = format!(
        "SELECT {col_list} FROM main.{} ORDER BY {order}",
        quote_ident(&exp.name)
    );
    let mut keys = Vec::new();
    for k in &schema.unique_keys {
        // Keys over generated columns cannot be matched from the file's values.
        let Some(pos) = k.columns.iter().map(|&c| pos_of(c)).collect::<Option<Vec<_>>>() else {
            continue;
        };
        let cond = pos
            .iter()
            .zip(&k.collations)
            .enumerate()
            .map(|(i, (&p, coll))| match coll {
                Some(c) => format!(
                    "{} = ?{} COLLATE {}",
                    quote_ident(&columns[p]),
                    i + 1,
                    quote_ident(c)
                ),
                None => format!("{} = ?{}", quote_ident(&columns[p]), i + 1),
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        keys.push(KeyCtx {
            name: k.name.clone(),
            lookup_sql: format!(
                "SELECT {ident_expr}, {col_list} FROM main.{} WHERE {cond} LIMIT 1",
                quote_ident(&schema.name)
            ),
            pos,
            primary: k.primary,
        });
    }
    let mut tracked: Vec<Vec<usize>> = keys.iter().map(|k| k.pos.clone()).collect();
    for e in graph.edges_to(&schema.name) {
        let Some(pos) = e
            .parent_columns
            .iter()
            .map(|c| columns.iter().position(|x| x.eq_ignore_ascii_case(c)))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        if !tracked.contains(&pos) {
            tracked.push(pos);
        }
    }
    Ok(TableCtx {
        name: schema.name.clone(),
        lower: lower.to_owned(),
        columns,
        pk_pos,
        ident_expr,
        ident_len,
        select_export,
        keys,
        tracked,
        parents: Vec::new(),
        fk_child_pos: HashSet::new(),
    })
}

/// Records, in each child's context, the references among carried tables.
fn link_parents(graph: &Graph, ctxs: &mut BTreeMap<String, TableCtx>) {
    for e in &graph.edges {
        let (cl, pl) = (e.child.to_ascii_lowercase(), e.parent.to_ascii_lowercase());
        let Some(parent) = ctxs.get(&pl) else { continue };
        let Some(ppos) = e
            .parent_columns
            .iter()
            .map(|c| parent.columns.iter().position(|x| x.eq_ignore_ascii_case(c)))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let Some(set) = parent.tracked.iter().position(|t| *t == ppos) else {
            continue;
        };
        let Some(child) = ctxs.get_mut(&cl) else { continue };
        let Some(cpos) = e
            .child_columns
            .iter()
            .map(|c| child.columns.iter().position(|x| x.eq_ignore_ascii_case(c)))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        child.fk_child_pos.extend(cpos.iter().copied());
        child.parents.push(EdgeCtx {
            child_pos: cpos,
            parent: pl,
            parent_set: set,
        });
    }
}

/// Mutable planning state.
struct State<'a> {
    target: &'a Connection,
    export: &'a ExportDb,
    policy: ConflictPolicy,
    remap: HashMap<SetKey, HashMap<Vec<SqlValue>, Vec<SqlValue>>>,
    skipped: HashMap<SetKey, HashMap<Vec<SqlValue>, String>>,
    /// (table, key index) → values rows of this import will hold.
    reserved: HashMap<SetKey, HashSet<Vec<SqlValue>>>,
    /// (table, column position) → next free integer.
    next_int: HashMap<SetKey, i64>,
    blocked: Vec<String>,
}

type Found = Option<(Vec<SqlValue>, Vec<SqlValue>)>;

impl State<'_> {
    fn lookup(&self, ctx: &TableCtx, key: usize, tuple: &[SqlValue]) -> Result<Found, ImportError> {
        let terr = |source| ImportError::Target {
            table: ctx.name.clone(),
            source,
        };
        let mut stmt = self
            .target
            .prepare_cached(&ctx.keys[key].lookup_sql)
            .map_err(terr)?;
        let mut rows = stmt.query(params_from_iter(tuple.iter())).map_err(terr)?;
        let Some(r) = rows.next().map_err(terr)? else {
            return Ok(None);
        };
        let vals = (0..ctx.ident_len + ctx.columns.len())
            .map(|i| r.get_ref(i).map(SqlValue::from_ref))
            .collect::<Result<Vec<_>, _>>()
            .map_err(terr)?;
        let (ident, values) = vals.split_at(ctx.ident_len);
        Ok(Some((ident.to_vec(), values.to_vec())))
    }

    /// Whether key `key` of `row` is held by a target row or a row of this import.
    fn taken(&self, ctx: &TableCtx, key: usize, row: &[SqlValue]) -> Result<bool, ImportError> {
        let Some(t) = TableCtx::tuple(row, &ctx.keys[key].pos) else {
            return Ok(false);
        };
        if self
            .reserved
            .get(&(ctx.lower.clone(), key))
            .is_some_and(|s| s.contains(&t))
        {
            return Ok(true);
        }
        Ok(self.lookup(ctx, key, &t)?.is_some())
    }

    fn next_integer(&mut self, ctx: &TableCtx, pos: usize) -> Result<i64, ImportError> {
        let slot = (ctx.lower.clone(), pos);
        let next = match self.next_int.get(&slot) {
            Some(n) => *n,
            None => {
                let col = quote_ident(&ctx.columns[pos]);
                let sql = format!(
                    "SELECT max({col}) FROM main.{} WHERE typeof({col}) = 'integer'",
                    quote_ident(&ctx.name)
                );
                let t: Option<i64> =
                    self.target
                        .query_row(&sql, [], |r| r.get(0))
                        .map_err(|source| ImportError::Target {
                            table: ctx.name.clone(),
                            source,
                        })?;
                let e: Option<i64> =
                    self.export
                        .conn
                        .query_row(&sql, [], |r| r.get(0))
                        .map_err(|source| ImportError::ReadExport {
                            table: ctx.name.clone(),
                            source,
                        })?;
                t.unwrap_or(0)
                    .max(e.unwrap_or(0))
                    .max(0)
                    .checked_add(1)
                    .ok_or_else(|| ImportError::NoFreeValue {
                        table: ctx.name.clone(),
                        column: ctx.columns[pos].clone(),
                        value: "the largest integer".to_owned(),
                    })?
            }
        };
        self.next_int.insert(slot, next.saturating_add(1));
        Ok(next)
    }

    /// Gives `row` new key values until no key of it is taken. `Ok(Err(reason))`
    /// when a taken key has nothing that can be renamed.
    fn rename(
        &mut self,
        ctx: &TableCtx,
        row: &mut [SqlValue],
    ) -> Result<Result<Vec<ColumnChange>, String>, ImportError> {
        let mut changes: Vec<ColumnChange> = Vec::new();
        for k in 0..ctx.keys.len() {
            if !self.taken(ctx, k, row)? {
                continue;
            }
            let pos = ctx.keys[k].pos.clone();
            let text_col = pos
                .iter()
                .rev()
                .copied()
                .find(|p| !ctx.fk_child_pos.contains(p) && matches!(row[*p], SqlValue::Text(_)));
            if let Some(p) = text_col {
                let SqlValue::Text(base) = row[p].clone() else {
                    continue;
                };
                let mut found = false;
                for n in 2..10_002u32 {
                    let mut cand = base.clone();
                    cand.extend_from_slice(format!("-{n}").as_bytes());
                    row[p] = SqlValue::Text(cand);
                    let mut free = true;
                    for k2 in (0..ctx.keys.len()).filter(|&k2| ctx.keys[k2].pos.contains(&p)) {
                        if self.taken(ctx, k2, row)? {
                            free = false;
                            break;
                        }
                    }
                    if free {
                        found = true;
                        break;
                    }
                }
                if !found {
                    return Err(ImportError::NoFreeValue {
                        table: ctx.name.clone(),
                        column: ctx.columns[p].clone(),
                        value: SqlValue::Text(base).render(),
                    });
                }
                record_change(
                    &mut changes,
                    &ctx.columns[p],
                    SqlValue::Text(base),
                    row[p].clone(),
                );
            } else if pos.len() == 1
                && !ctx.fk_child_pos.contains(&pos[0])
                && matches!(row[pos[0]], SqlValue::Integer(_))
            {
                let p = pos[0];
                let old = row[p].clone();
                loop {
                    row[p] = SqlValue::Integer(self.next_integer(ctx, p)?);
                    if !self.taken(ctx, k, row)? {
                        break;
                    }
                }
                record_change(&mut changes, &ctx.columns[p], old, row[p].clone());
            } else {
                let cols: Vec<&str> = pos.iter().map(|&p| ctx.columns[p].as_str()).collect();
                return Ok(Err(format!(
                    "its {} ({}) is taken and has no integer key or text value to rename",
                    ctx.keys[k].name,
                    cols.join(", ")
                )));
            }
        }
        Ok(Ok(changes))
    }
}

fn record_change(changes: &mut Vec<ColumnChange>, column: &str, from: SqlValue, to: SqlValue) {
    match changes.iter_mut().find(|c| c.column == column) {
        Some(c) => c.to = to,
        None => changes.push(ColumnChange {
            column: column.to_owned(),
            from,
            to,
        }),
    }
}

/// Plans the database part of an import. Reads the file and the target, writes
/// nothing. `progress` is called with the number of rows planned so far.
pub(crate) fn plan_db(
    export: &ExportDb,
    target: &Connection,
    profile: &ExportProfile,
    params: &ParamValues,
    policy: ConflictPolicy,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<DbPlan, ImportError> {
    let (graph, ctxs) = build_contexts(export, target, profile)?;
    let mut st = State {
        target,
        export,
        policy,
        remap: HashMap::new(),
        skipped: HashMap::new(),
        reserved: HashMap::new(),
        next_int: HashMap::new(),
        blocked: Vec::new(),
    };
    let mut tables = Vec::new();
    let mut planned_rows = 0u64;
    for component in graph.dependency_order() {
        for name in component {
            let lower = name.to_ascii_lowercase();
            let Some(ctx) = ctxs.get(&lower) else { continue };
            let tp = plan_table(&mut st, ctx, cancelled, &mut |n| {
                planned_rows += n;
                progress(planned_rows);
            })?;
            tables.push(tp);
        }
    }
    let mut plan = DbPlan {
        ctxs,
        tables,
        remap: st.remap,
        skipped: st.skipped,
        blocked: st.blocked,
        param_fates: BTreeMap::new(),
    };
    plan.param_fates = param_fates(&plan, profile, params);
    Ok(plan)
}

fn plan_table(
    st: &mut State<'_>,
    ctx: &TableCtx,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<TablePlan, ImportError> {
    let mut tp = TablePlan {
        lower: ctx.lower.clone(),
        ops: Vec::new(),
        details: HashMap::new(),
        report: TableReport {
            table: ctx.name.clone(),
            ..TableReport::default()
        },
    };
    let export = st.export;
    for_each_export_row(export, ctx, |ordinal, original| {
        if ordinal % 1024 == 1023 {
            if cancelled() {
                return Err(ImportError::Cancelled);
            }
            progress(1024);
        }
        st.plan_row(ctx, &mut tp, ordinal, original)
    })?;
    progress(tp.report.rows % 1024);
    Ok(tp)
}

/// Which rows a row of the file matches by its keys.
struct Matched {
    /// Key names that matched (`primary key`, an index, `another row of the export`).
    names: Vec<String>,
    /// Distinct target rows matched: (identity, values, matched by the primary key).
    rows: Vec<(Vec<SqlValue>, Vec<SqlValue>, bool)>,
    /// Whether a row this import already placed holds one of its keys.
    internal: bool,
}

/// What the plan does with one row.
struct Decision {
    op: u8,
    detail: Option<Detail>,
    action: RowAction,
    /// Whether the row is written (inserted, renamed or updated).
    written: bool,
    skip_reason: Option<String>,
}

impl Decision {
    fn nothing(action: RowAction) -> Decision {
        Decision {
            op: OP_NOTHING,
            detail: None,
            action,
            written: false,
            skip_reason: None,
        }
    }

    fn skip(reason: String) -> Decision {
        Decision {
            skip_reason: Some(reason),
            ..Decision::nothing(RowAction::Insert)
        }
    }
}

impl State<'_> {
    /// Plans one row of the file: match, classify, decide, and record what later
    /// rows need to know (renamed and skipped keys, keys now taken).
    fn plan_row(
        &mut self,
        ctx: &TableCtx,
        tp: &mut TablePlan,
        ordinal: u64,
        original: Vec<SqlValue>,
    ) -> Result<(), ImportError> {
        tp.report.rows += 1;
        let mut row = original.clone();
        let rewritten = rewrite(&mut row, ctx, &self.remap);
        // A row whose parent is not imported is not imported either.
        let cascade = ctx.parents.iter().find_map(|e| {
            let t = TableCtx::tuple(&original, &e.child_pos)?;
            self.skipped
                .get(&(e.parent.clone(), e.parent_set))
                .and_then(|m| m.get(&t))
                .map(|why| format!("it references {why}"))
        });
        let matched = self.match_row(ctx, &row)?;
        let status = if matched.rows.is_empty() && !matched.internal {
            RowStatus::New
        } else if !matched.internal
            && matched.rows.len() == 1
            && (matched.rows[0].2 || ctx.pk_pos.is_empty())
            && matched.rows[0].1 == row
        {
            RowStatus::Identical
        } else {
            RowStatus::Conflicting
        };
        match status {
            RowStatus::New => tp.report.new += 1,
            RowStatus::Identical => tp.report.identical += 1,
            RowStatus::Conflicting => tp.report.conflicting += 1,
        }
        let mut decision = if status == RowStatus::Identical {
            Decision::nothing(RowAction::Insert)
        } else if let Some(reason) = cascade {
            Decision::skip(reason)
        } else if status == RowStatus::Conflicting {
            self.resolve_conflict(ctx, tp, &matched, &original, &mut row)?
        } else {
            tp.report.inserted += 1;
            Decision {
                op: OP_INSERT,
                detail: None,
                action: RowAction::Insert,
                written: true,
                skip_reason: None,
            }
        };
        if let Some(reason) = &decision.skip_reason {
            decision.action = RowAction::Skip {
                reason: reason.clone(),
            };
            tp.report.skipped += 1;
            self.mark_skipped(ctx, &original);
        }
        if decision.written {
            if rewritten {
                tp.report.references_rewritten += 1;
            }
            for (k, key) in ctx.keys.iter().enumerate() {
                if let Some(t) = TableCtx::tuple(&row, &key.pos) {
                    self.reserved.entry((ctx.lower.clone(), k)).or_default().insert(t);
                }
            }
        }
        if decision.written || status == RowStatus::Identical {
            self.map_keys(ctx, &original, &row);
        }
        if status == RowStatus::Conflicting
            || decision.skip_reason.is_some()
            || matches!(decision.action, RowAction::Blocked { .. })
        {
            tp.report.details.push(RowReport {
                key: ctx.key_map(&original),
                status,
                matched: matched.names,
                action: decision.action,
            });
        }
        if let Some(d) = decision.detail {
            tp.details.insert(ordinal, d);
        }
        tp.ops.push(decision.op);
        Ok(())
    }

    /// Matches `row` against the target and the rows this import already placed,
    /// by every key.
    fn match_row(&self, ctx: &TableCtx, row: &[SqlValue]) -> Result<Matched, ImportError> {
        let mut m = Matched {
            names: Vec::new(),
            rows: Vec::new(),
            internal: false,
        };
        for k in 0..ctx.keys.len() {
            let Some(t) = TableCtx::tuple(row, &ctx.keys[k].pos) else {
                continue;
            };
            if self
                .reserved
                .get(&(ctx.lower.clone(), k))
                .is_some_and(|s| s.contains(&t))
            {
                m.internal = true;
                m.names.push("another row of the export".to_owned());
                continue;
            }
            if let Some((ident, values)) = self.lookup(ctx, k, &t)? {
                m.names.push(ctx.keys[k].name.clone());
                match m.rows.iter_mut().find(|r| r.0 == ident) {
                    Some(r) => r.2 |= ctx.keys[k].primary,
                    None => m.rows.push((ident, values, ctx.keys[k].primary)),
                }
            }
        }
        m.names.dedup();
        Ok(m)
    }

    /// The decision for a conflicting row under the policy.
    fn resolve_conflict(
        &mut self,
        ctx: &TableCtx,
        tp: &mut TablePlan,
        matched: &Matched,
        original: &[SqlValue],
        row: &mut [SqlValue],
    ) -> Result<Decision, ImportError> {
        Ok(match self.policy {
            ConflictPolicy::Skip => Decision::skip("kept the existing row".to_owned()),
            ConflictPolicy::Overwrite if matched.internal || matched.rows.len() != 1 => {
                let reason = if matched.internal {
                    "it has the same key as another row of the export".to_owned()
                } else {
                    format!(
                        "it matches {} different existing rows ({})",
                        matched.rows.len(),
                        matched.names.join(", ")
                    )
                };
                self.blocked.push(format!(
                    "row {} of table {}: {reason}",
                    render_key(&ctx.key_map(original)),
                    ctx.name
                ));
                Decision::nothing(RowAction::Blocked { reason })
            }
            ConflictPolicy::Overwrite => {
                let (ident, values, _) = &matched.rows[0];
                // Keep the existing row's own primary key.
                for &p in &ctx.pk_pos {
                    row[p] = values[p].clone();
                }
                let set: Vec<usize> = (0..ctx.columns.len())
                    .filter(|p| !ctx.pk_pos.contains(p))
                    .collect();
                tp.report.overwritten += 1;
                Decision {
                    op: OP_DETAIL,
                    detail: Some(Detail::Update {
                        ident: ident.clone(),
                        set,
                    }),
                    action: RowAction::Overwrite {
                        target_key: if ctx.pk_pos.is_empty() {
                            BTreeMap::from([("rowid".to_owned(), ident[0].clone())])
                        } else {
                            ctx.key_map(values)
                        },
                    },
                    written: true,
                    skip_reason: None,
                }
            }
            ConflictPolicy::Rename => match self.rename(ctx, row)? {
                Ok(changes) => {
                    let positions = changes
                        .iter()
                        .filter_map(|c| {
                            let p = ctx.columns.iter().position(|x| *x == c.column)?;
                            Some((p, row[p].clone()))
                        })
                        .collect();
                    tp.report.renamed += 1;
                    Decision {
                        op: OP_DETAIL,
                        detail: Some(Detail::Rename(positions)),
                        action: RowAction::Rename { changes },
                        written: true,
                        skip_reason: None,
                    }
                }
                Err(reason) => Decision::skip(reason),
            },
        })
    }

    /// Records that the row with the file's values `original` is not imported, so
    /// rows referencing it are skipped too.
    fn mark_skipped(&mut self, ctx: &TableCtx, original: &[SqlValue]) {
        let what = format!(
            "{} row {}, which is not imported",
            ctx.name,
            render_key(&ctx.key_map(original))
        );
        for (s, pos) in ctx.tracked.iter().enumerate() {
            if let Some(t) = TableCtx::tuple(original, pos) {
                self.skipped
                    .entry((ctx.lower.clone(), s))
                    .or_default()
                    .insert(t, what.clone());
            }
        }
    }

    /// Children reference the file's values: maps them to the final ones.
    fn map_keys(&mut self, ctx: &TableCtx, original: &[SqlValue], row: &[SqlValue]) {
        for (s, pos) in ctx.tracked.iter().enumerate() {
            if let (Some(old), Some(new)) = (TableCtx::tuple(original, pos), TableCtx::tuple(row, pos))
                && old != new
            {
                self.remap
                    .entry((ctx.lower.clone(), s))
                    .or_default()
                    .insert(old, new);
            }
        }
    }
}

fn render_key(key: &BTreeMap<String, SqlValue>) -> String {
    key.iter()
        .map(|(k, v)| format!("{k}={}", v.render()))
        .collect::<Vec<_>>()
        .join(",")
}

/// For each parameter that is a key of a table (its condition is exactly
/// `column = :param` and that column alone is the primary key or UNIQUE), what
/// happens to that row. The first such table in the profile wins.
fn param_fates(plan: &DbPlan, profile: &ExportProfile, params: &ParamValues) -> BTreeMap<String, ParamFate> {
    let mut fates = BTreeMap::new();
    for sel in &profile.tables {
        let Some((column, param)) = sel.key_binding() else {
            continue;
        };
        if fates.contains_key(&param) {
            continue;
        }
        let Some(ctx) = plan.ctxs.get(&sel.table.to_ascii_lowercase()) else {
            continue;
        };
        let Some(pos) = ctx.columns.iter().position(|c| c.eq_ignore_ascii_case(&column)) else {
            continue;
        };
        // The column must be a whole key by itself (the primary key or a
        // single-column UNIQUE index), so the parameter names exactly one row.
        if !ctx.keys.iter().any(|k| k.pos == [pos]) {
            continue;
        }
        let Some(set) = ctx.tracked.iter().position(|t| *t == [pos]) else {
            continue;
        };
        let Some(value) = params.get(&param) else { continue };
        let slot = (ctx.lower.clone(), set);
        let mut fate = ParamFate::Unchanged;
        for candidate in [SqlValue::from_param(value), SqlValue::text(value)] {
            let key = vec![candidate];
            if let Some(why) = plan.skipped.get(&slot).and_then(|m| m.get(&key)) {
                fate = ParamFate::Skipped {
                    reason: format!("it belongs to {why}"),
                };
                break;
            }
            if let Some(new) = plan.remap.get(&slot).and_then(|m| m.get(&key)) {
                fate = ParamFate::Renamed {
                    to: new.first().map(SqlValue::render).unwrap_or_default(),
                };
                break;
            }
        }
        fates.insert(param, fate);
    }
    fates
}
