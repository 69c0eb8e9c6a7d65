//! The tables a profile involves and the references between them, read from a
//! live schema.
//!
//! Export and import both start here: the profile's tables are resolved against
//! the database (unknown or non-table names refused in one sentence), the
//! declared foreign keys and the profile's extra `references` become [`Edge`]s, and
//! with `follow-foreign-keys` the set grows to every table reachable through a
//! reference from child to parent. Import computes the same closure on the
//! *target*, which is what decides which tables an export file may carry.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rusqlite::Connection;

use crate::selective::profile::ExportProfile;
use crate::selective::sql::{DeclaredForeignKey, TableKind, TableSchema, display_name, load_table};

/// Errors resolving a profile against a schema.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("export profile {profile} names table {table}, which the database does not have")]
    UnknownTable { profile: String, table: String },
    #[error(
        "export profile {profile} names {table}, which is a {kind} and not a table; only tables can be exported"
    )]
    NotATable {
        profile: String,
        table: String,
        kind: &'static str,
    },
    #[error(
        "export profile {profile}: references entry \"{reference}\" names column {column}, which table {table} does not have"
    )]
    UnknownReferenceColumn {
        profile: String,
        reference: String,
        table: String,
        column: String,
    },
    #[error(
        "export profile {profile}: references entry \"{reference}\" names table {table}, which the database does not have"
    )]
    UnknownReferenceTable {
        profile: String,
        reference: String,
        table: String,
    },
    #[error("the schema of the database could not be read")]
    Sqlite(#[source] rusqlite::Error),
}

/// Where a reference comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeOrigin {
    /// A `REFERENCES` clause in the schema.
    Declared,
    /// A `references` entry of the profile.
    Profile,
}

/// A reference from child columns to parent columns (by canonical table names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub child: String,
    pub child_columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    pub origin: EdgeOrigin,
}

/// The involved tables (keyed by lowercase name) and the edges among them.
#[derive(Clone, Debug)]
pub struct Graph {
    pub tables: BTreeMap<String, TableSchema>,
    /// Canonical names of the tables the profile names itself.
    pub profile_tables: Vec<String>,
    /// Only edges whose child and parent are both involved.
    pub edges: Vec<Edge>,
}

impl Graph {
    /// A table by any spelling of its name.
    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.get(&name.to_ascii_lowercase())
    }

    /// Involved tables ordered parents first (Tarjan's strongly connected
    /// components; the tables of one cycle stay together, in name order).
    pub fn dependency_order(&self) -> Vec<Vec<String>> {
        let names: Vec<&String> = self.tables.values().map(|t| &t.name).collect();
        let index: BTreeMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_ascii_lowercase(), i))
            .collect();
        // child -> parents: a child must come after its parents.
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); names.len()];
        for e in &self.edges {
            if let (Some(&c), Some(&p)) = (
                index.get(&e.child.to_ascii_lowercase()),
                index.get(&e.parent.to_ascii_lowercase()),
            ) {
                deps[c].insert(p);
            }
        }
        // Tarjan emits components in reverse topological order of the edges it
        // follows; following child -> parent yields parents first.
        struct State {
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on_stack: Vec<bool>,
            stack: Vec<usize>,
            next: usize,
            out: Vec<Vec<usize>>,
        }
        fn visit(v: usize, deps: &[BTreeSet<usize>], s: &mut State) {
            s.index[v] = Some(s.next);
            s.low[v] = s.next;
            s.next += 1;
            s.stack.push(v);
            s.on_stack[v] = true;
            for &w in &deps[v] {
                match s.index[w] {
                    None => {
                        visit(w, deps, s);
                        s.low[v] = s.low[v].min(s.low[w]);
                    }
                    Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(s.low[v]) == s.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                comp.sort_unstable();
                s.out.push(comp);
            }
        }
        let mut s = State {
            index: vec![None; names.len()],
            low: vec![0; names.len()],
            on_stack: vec![false; names.len()],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..names.len() {
            if s.index[v].is_none() {
                visit(v, &deps, &mut s);
            }
        }
        s.out
            .into_iter()
            .map(|comp| comp.into_iter().map(|i| names[i].clone()).collect())
            .collect()
    }

    /// Edges whose child is `table`.
    pub fn edges_from<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges
            .iter()
            .filter(move |e| e.child.eq_ignore_ascii_case(table))
    }

    /// Edges whose parent is `table`.
    pub fn edges_to<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges
            .iter()
            .filter(move |e| e.parent.eq_ignore_ascii_case(table))
    }
}

fn load(conn: &Connection, name: &str) -> Result<Option<TableSchema>, GraphError> {
    load_table(conn, name).map_err(GraphError::Sqlite)
}

fn kind_name(kind: TableKind) -> &'static str {
    match kind {
        TableKind::Table => "table",
        TableKind::View => "view",
        TableKind::Virtual => "virtual table",
        TableKind::Shadow => "internal table of a virtual table",
    }
}

/// Resolves `profile` against the schema of `conn`: its tables, plus with
/// `follow-foreign-keys` every parent reachable through declared foreign keys
/// and profile references, transitively.
pub fn resolve(conn: &Connection, profile: &ExportProfile) -> Result<Graph, GraphError> {
    let mut tables: BTreeMap<String, TableSchema> = BTreeMap::new();
    let mut profile_tables = Vec::new();
    for sel in &profile.tables {
        let schema = load(conn, &sel.table)?.ok_or_else(|| GraphError::UnknownTable {
            profile: profile.name.clone(),
            table: display_name(&sel.table),
        })?;
        if schema.kind != TableKind::Table {
            return Err(GraphError::NotATable {
                profile: profile.name.clone(),
                table: display_name(&sel.table),
                kind: kind_name(schema.kind),
            });
        }
        profile_tables.push(schema.name.clone());
        tables.insert(schema.name.to_ascii_lowercase(), schema);
    }
    let references = profile_references(conn, profile)?;
    let mut edges = walk(conn, profile, &references, &mut tables)?;
    edges.retain(|e| {
        tables.contains_key(&e.child.to_ascii_lowercase())
            && tables.contains_key(&e.parent.to_ascii_lowercase())
    });
    Ok(Graph {
        tables,
        profile_tables,
        edges,
    })
}

/// The profile's `references` as edges; each must name real tables and columns.
fn profile_references(conn: &Connection, profile: &ExportProfile) -> Result<Vec<Edge>, GraphError> {
    let mut references = Vec::new();
    for r in &profile.references {
        let text = format!(
            "{}.{} -> {}.{}",
            r.child_table, r.child_column, r.parent_table, r.parent_column
        );
        let mut sides = Vec::new();
        for (t, c) in [
            (&r.child_table, &r.child_column),
            (&r.parent_table, &r.parent_column),
        ] {
            let schema = load(conn, t)?
                .filter(|s| s.kind == TableKind::Table)
                .ok_or_else(|| GraphError::UnknownReferenceTable {
                    profile: profile.name.clone(),
                    reference: text.clone(),
                    table: t.clone(),
                })?;
            let col = schema
                .column_index(c)
                .ok_or_else(|| GraphError::UnknownReferenceColumn {
                    profile: profile.name.clone(),
                    reference: text.clone(),
                    table: schema.name.clone(),
                    column: c.clone(),
                })?;
            sides.push((schema.name.clone(), schema.columns[col].name.clone()));
        }
        let (parent, parent_col) = sides.pop().unwrap_or_default();
        let (child, child_col) = sides.pop().unwrap_or_default();
        references.push(Edge {
            child,
            child_columns: vec![child_col],
            parent,
            parent_columns: vec![parent_col],
            origin: EdgeOrigin::Profile,
        });
    }
    Ok(references)
}

/// Walks child -> parent from the tables already in `tables`, returning every edge
/// seen. Without follow-foreign-keys the walk adds no table, but edges among the
/// profile's own tables still count (for import renames).
fn walk(
    conn: &Connection,
    profile: &ExportProfile,
    references: &[Edge],
    tables: &mut BTreeMap<String, TableSchema>,
) -> Result<Vec<Edge>, GraphError> {
    let mut queue: VecDeque<String> = tables.keys().cloned().collect();
    let mut edges = Vec::new();
    while let Some(key) = queue.pop_front() {
        let Some(child) = tables.get(&key).cloned() else {
            continue;
        };
        for fk in &child.foreign_keys {
            let Some(parent) = (match tables.get(&fk.parent_table.to_ascii_lowercase()) {
                Some(p) => Some(p.clone()),
                None => load(conn, &fk.parent_table)?.filter(|p| p.kind == TableKind::Table),
            }) else {
                // A dangling REFERENCES clause: SQLite ignores it, so do we.
                continue;
            };
            let Some(edge) = declared_edge(&child, fk, &parent) else {
                continue;
            };
            edges.push(edge);
            if profile.follow_foreign_keys && !tables.contains_key(&parent.name.to_ascii_lowercase()) {
                queue.push_back(parent.name.to_ascii_lowercase());
                tables.insert(parent.name.to_ascii_lowercase(), parent);
            }
        }
        for r in references
            .iter()
            .filter(|r| r.child.eq_ignore_ascii_case(&child.name))
        {
            edges.push(r.clone());
            let key = r.parent.to_ascii_lowercase();
            if profile.follow_foreign_keys
                && !tables.contains_key(&key)
                && let Some(p) = load(conn, &r.parent)?
            {
                tables.insert(key.clone(), p);
                queue.push_back(key);
            }
        }
    }
    Ok(edges)
}

/// The edge of a declared foreign key (a clause naming no columns means the
/// parent's primary key); `None` when its columns do not line up.
fn declared_edge(child: &TableSchema, fk: &DeclaredForeignKey, parent: &TableSchema) -> Option<Edge> {
    let parent_columns: Vec<String> = if fk.parent_columns.is_empty() {
        parent
            .pk
            .iter()
            .map(|&i| parent.columns[i].name.clone())
            .collect()
    } else {
        fk.parent_columns
            .iter()
            .filter_map(|c| parent.column_index(c).map(|i| parent.columns[i].name.clone()))
            .collect()
    };
    (parent_columns.len() == fk.child_columns.len()).then(|| Edge {
        child: child.name.clone(),
        child_columns: fk.child_columns.clone(),
        parent: parent.name.clone(),
        parent_columns,
        origin: EdgeOrigin::Declared,
    })
}
