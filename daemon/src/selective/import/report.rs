//! The import report: what a dry run says and what a real import then did.
//!
//! Both are the same value, built by the same planning code, so they cannot
//! disagree. It serialises (kebab-case) for `cofferctl import --json` and prints
//! as a short text for humans.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::selective::ConflictPolicy;
use crate::selective::media::{MediaAction, MediaReport, ParamFate};
use crate::selective::sql::SqlValue;

/// How a row of the file compares with the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowStatus {
    /// No existing row shares its primary key or any UNIQUE value.
    New,
    /// An existing row has the same key and exactly the same values.
    Identical,
    /// It shares a key with an existing row (or another imported row) but differs.
    Conflicting,
}

/// A column whose value the import changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ColumnChange {
    pub column: String,
    pub from: SqlValue,
    pub to: SqlValue,
}

/// What the import does with one row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum RowAction {
    /// Inserted as it is (references to renamed rows rewritten).
    Insert,
    /// Not written; the existing row stays.
    Skip { reason: String },
    /// The existing row (with key `target-key`) takes the file's values.
    Overwrite { target_key: BTreeMap<String, SqlValue> },
    /// Inserted under new keys.
    Rename { changes: Vec<ColumnChange> },
    /// The policy cannot resolve this conflict; the import is refused.
    Blocked { reason: String },
}

/// One row worth showing (every conflicting row, and rows skipped with a parent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RowReport {
    /// The row's primary key (or first UNIQUE key) as the file has it.
    pub key: BTreeMap<String, SqlValue>,
    pub status: RowStatus,
    /// Which keys matched: `primary key`, an index name, or `another row of the export`.
    pub matched: Vec<String>,
    #[serde(flatten)]
    pub action: RowAction,
}

/// Per table: counts by status and by action, and the rows worth showing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TableReport {
    pub table: String,
    pub rows: u64,
    pub new: u64,
    pub identical: u64,
    pub conflicting: u64,
    pub inserted: u64,
    pub overwritten: u64,
    pub renamed: u64,
    pub skipped: u64,
    /// Rows written with at least one reference rewritten to a renamed row.
    pub references_rewritten: u64,
    pub details: Vec<RowReport>,
}

/// The whole import: tables in the order they are written, then media.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImportReport {
    pub profile: String,
    pub policy: ConflictPolicy,
    pub params: BTreeMap<String, String>,
    pub tables: Vec<TableReport>,
    /// What happens to the rows the parameters name (and so to their media paths).
    pub param_fates: BTreeMap<String, ParamFate>,
    pub media: MediaReport,
    /// Conflicts the policy cannot resolve; a real import refuses to start if any.
    pub blocked: Vec<String>,
}

fn fmt_key(key: &BTreeMap<String, SqlValue>) -> String {
    key.iter()
        .map(|(k, v)| format!("{k}={}", v.render()))
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "import of export profile {} with --on-conflict {}",
            self.profile, self.policy
        )?;
        for t in &self.tables {
            writeln!(
                f,
                "  {}: {} rows: {} new, {} identical, {} conflicting -> {} inserted, {} overwritten, {} renamed, {} skipped",
                t.table,
                t.rows,
                t.new,
                t.identical,
                t.conflicting,
                t.inserted,
                t.overwritten,
                t.renamed,
                t.skipped
            )?;
            for d in &t.details {
                let what = match &d.action {
                    RowAction::Insert => "insert".to_owned(),
                    RowAction::Skip { reason } => format!("skip ({reason})"),
                    RowAction::Overwrite { target_key } => format!("overwrite {}", fmt_key(target_key)),
                    RowAction::Rename { changes } => format!(
                        "rename {}",
                        changes
                            .iter()
                            .map(|c| format!("{} {} -> {}", c.column, c.from.render(), c.to.render()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    RowAction::Blocked { reason } => format!("blocked: {reason}"),
                };
                writeln!(f, "    {} ({}): {what}", fmt_key(&d.key), d.matched.join(", "))?;
            }
        }
        let m = &self.media;
        writeln!(
            f,
            "  media: {} files: {} new, {} identical, {} conflicting -> {} written, {} overwritten, {} renamed, {} skipped",
            m.files, m.new, m.identical, m.conflicting, m.written, m.overwritten, m.renamed, m.skipped
        )?;
        for d in &m.details {
            let what = match &d.action {
                MediaAction::Write => format!("write as {}", d.dest.display()),
                MediaAction::Keep => "keep".to_owned(),
                MediaAction::Overwrite => "overwrite".to_owned(),
                MediaAction::Skip { reason } => format!("skip ({reason})"),
            };
            writeln!(f, "    media/{}/{}: {what}", d.root, d.rel.display())?;
        }
        for b in &self.blocked {
            writeln!(f, "  blocked: {b}")?;
        }
        Ok(())
    }
}
