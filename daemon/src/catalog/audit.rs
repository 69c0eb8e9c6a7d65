//! The audit trail: who did what, when, with what result.

use super::{Catalog, CatalogError};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub error: String,
}

impl Catalog {
    /// Appends an audit entry.
    pub fn audit(&self, entry: &AuditRecord) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO audit (at, actor, action, target, result, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                entry.at,
                entry.actor,
                entry.action,
                entry.target,
                entry.result,
                entry.error
            ],
        )?;
        Ok(())
    }

    /// The newest audit entries, newest first.
    pub fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, target, result, error FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                result: r.get(5)?,
                error: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
