//! Opening an export file's database, which is hostile input.
//!
//! The file is opened read-only and `query_only`, with triggers and views
//! disabled at the connection level, `trusted_schema` off (no function with side
//! effects may run from its schema), defensive mode on and cell size checks on.
//! It must pass `quick_check`. Its schema may hold only tables (and their
//! indexes): a trigger or a view — which a Coffer export never contains — makes
//! the whole file refused. Nothing is ever read from it but the rows of tables
//! the target's profile allows, through quoted names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::ImportError;
use crate::selective::sql::{SchemaObject, TableKind, TableSchema, display_name, load_table, schema_objects};

/// An export file's database, opened safely, with its inventory of tables.
pub struct ExportDb {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    /// Lowercase name → canonical name of every table (except `sqlite_*`).
    pub(crate) tables: BTreeMap<String, String>,
}

impl std::fmt::Debug for ExportDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportDb")
            .field("path", &self.path)
            .field("tables", &self.tables)
            .finish()
    }
}

impl ExportDb {
    /// Opens and checks the database of an export file.
    pub fn open(path: &Path) -> Result<Self, ImportError> {
        let shown = path.display().to_string();
        let err = |source| ImportError::ExportDbUnreadable {
            path: shown.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        for (cfg, on) in [
            (DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
            (DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false),
            (DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false),
            (DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false),
        ] {
            conn.set_db_config(cfg, on).map_err(err)?;
        }
        conn.execute_batch(
            "PRAGMA trusted_schema = OFF; PRAGMA query_only = ON; \
             PRAGMA cell_size_check = ON; PRAGMA mmap_size = 0;",
        )
        .map_err(err)?;
        let check: Vec<String> = {
            let mut stmt = conn.prepare("PRAGMA quick_check").map_err(err)?;
            stmt.query_map([], |r| r.get(0))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?
        };
        if check != ["ok"] {
            return Err(ImportError::ExportDbDamaged {
                path: shown,
                detail: display_name(check.first().map(String::as_str).unwrap_or("no result")),
            });
        }
        let mut tables = BTreeMap::new();
        for SchemaObject { kind, name } in schema_objects(&conn).map_err(err)? {
            match kind.as_str() {
                "table" if name.to_ascii_lowercase().starts_with("sqlite_") => {}
                "table" => {
                    tables.insert(name.to_ascii_lowercase(), name);
                }
                "index" => {}
                other => {
                    return Err(ImportError::ForeignObject {
                        kind: other.to_owned(),
                        name: display_name(&name),
                    });
                }
            }
        }
        Ok(ExportDb {
            conn,
            path: path.to_path_buf(),
            tables,
        })
    }

    /// Rows in all of the file's tables (for progress totals).
    pub fn total_rows(&self) -> u64 {
        self.tables
            .values()
            .filter_map(|t| {
                let sql = format!(
                    "SELECT count(*) FROM main.{}",
                    crate::selective::sql::quote_ident(t)
                );
                self.conn.query_row(&sql, [], |r| r.get::<_, i64>(0)).ok()
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .sum()
    }

    /// The schema of one of the file's tables; only plain tables are accepted.
    pub(crate) fn table(&self, name: &str) -> Result<Option<TableSchema>, ImportError> {
        let Some(canonical) = self.tables.get(&name.to_ascii_lowercase()) else {
            return Ok(None);
        };
        let schema = load_table(&self.conn, canonical).map_err(|source| ImportError::ExportDbUnreadable {
            path: self.path.display().to_string(),
            source,
        })?;
        match schema {
            Some(s) if s.kind == TableKind::Table => Ok(Some(s)),
            _ => Err(ImportError::ForeignObject {
                kind: "virtual table".to_owned(),
                name: display_name(canonical),
            }),
        }
    }
}
