//! Export profiles (`[[job.export]]`): the raw config structs and their syntax
//! validation into a typed [`ExportProfile`], plus validated parameter values.
//!
//! Data flow: the config loader deserialises [`RawExportProfile`] (kebab-case,
//! unknown keys refused) inside a job, then calls [`ExportProfile::from_raw`], which
//! checks syntax only (names, `:param` usage, `references`, media globs) — the live
//! schema is checked at export time by `select` and at import time by `import`.
//! At run time [`ParamValues::new`] checks the `--param name=value` pairs (or the
//! params recorded in an export file's manifest) against the profile.
//!
//! Conditions are SQL written by the admin and trusted as such; only parameter
//! *values* come from users, and those are always bound, never spliced.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Errors in a profile or in parameter values: one sentence naming the profile and key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error(
        "export profile name {name:?} is invalid: use lowercase letters, digits, '_' and '-', starting with a letter or digit"
    )]
    InvalidName { name: String },
    #[error(
        "export profile {profile}: params entry {param:?} is not a valid parameter name (letters, digits and '_', not starting with a digit)"
    )]
    InvalidParamName { profile: String, param: String },
    #[error("export profile {profile}: parameter {param} is declared twice in params")]
    DuplicateParam { profile: String, param: String },
    #[error(
        "export profile {profile}: parameter {param} is declared in params but used by no table condition and no media glob"
    )]
    UnusedParam { profile: String, param: String },
    #[error("export profile {profile}: tables is empty; name at least one table and its condition")]
    NoTables { profile: String },
    #[error("export profile {profile}: tables has an entry with an invalid table name {table:?}")]
    InvalidTableName { profile: String, table: String },
    #[error(
        "export profile {profile}: tables.{table} has an empty condition; write \"1\" to export every row"
    )]
    EmptyCondition { profile: String, table: String },
    #[error("export profile {profile}: the condition in tables.{table} {reason}")]
    ConditionSyntax {
        profile: String,
        table: String,
        reason: String,
    },
    #[error("export profile {profile}: {key} uses parameter {param}, which params does not declare")]
    UnknownParam {
        profile: String,
        key: String,
        param: String,
    },
    #[error(
        "export profile {profile}: references entry {reference:?} is not of the form \"table.column -> table.column\""
    )]
    InvalidReference { profile: String, reference: String },
    #[error("export profile {profile}: media.include glob {glob:?} is invalid: {reason}")]
    InvalidGlob {
        profile: String,
        glob: String,
        reason: String,
    },
    #[error("export profile {profile} needs parameter {param}; pass it as --param {param}=VALUE")]
    MissingParamValue { profile: String, param: String },
    #[error("export profile {profile} has no parameter {param}")]
    UnexpectedParamValue { profile: String, param: String },
    #[error("parameter {param} of export profile {profile} was given twice")]
    DuplicateParamValue { profile: String, param: String },
    #[error("the value of parameter {param} of export profile {profile} {reason}")]
    UnsafeParamValue {
        profile: String,
        param: String,
        reason: String,
    },
}

/// `[[job.export]]` as written in the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawExportProfile {
    pub name: String,
    #[serde(default)]
    pub params: Vec<String>,
    /// Off by default: an export holds exactly what the conditions select unless
    /// the admin asks for the parents too.
    #[serde(default)]
    pub follow_foreign_keys: bool,
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    #[serde(default)]
    pub media: RawExportMedia,
}

/// `[job.export.media]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawExportMedia {
    #[serde(default)]
    pub include: Vec<String>,
}

/// A foreign key the schema does not declare, named by the profile
/// (`"blocks.page_ref -> pages.id"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reference {
    pub child_table: String,
    pub child_column: String,
    pub parent_table: String,
    pub parent_column: String,
}

/// One `tables` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSelection {
    pub table: String,
    /// SQL expression over the table, from the admin's config.
    pub condition: String,
    /// Parameters the condition uses.
    pub params: BTreeSet<String>,
}

impl TableSelection {
    /// `Some((column, param))` when the condition is exactly `column = :param`
    /// (or `:param = column`). When that column alone is a key of the table (the
    /// primary key, or a single-column UNIQUE index — checked on the schema at
    /// import time), the parameter names that one row: media paths built from
    /// `{param}` then move with the row when an import renames it, and are skipped
    /// when the row is skipped.
    pub fn key_binding(&self) -> Option<(String, String)> {
        let (left, right) = self.condition.split_once('=')?;
        if right.contains('=') || left.ends_with(['!', '<', '>']) {
            return None;
        }
        let (left, right) = (left.trim(), right.trim());
        let as_param = |s: &str| s.strip_prefix(':').filter(|p| is_ident(p)).map(str::to_owned);
        let (column, param) = match (as_param(left), as_param(right)) {
            (None, Some(p)) => (left, p),
            (Some(p), None) => (right, p),
            _ => return None,
        };
        let column = unquote_ident(column)?;
        Some((column, param))
    }
}

/// One part of a media glob template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GlobPart {
    /// Glob syntax, used as written.
    Literal(String),
    /// `{param}`: the parameter's value, escaped.
    Param(String),
}

/// A `media.include` glob with `{param}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPattern {
    /// The glob as written in the config.
    pub template: String,
    /// Per `/`-separated segment, its parts.
    segments: Vec<Vec<GlobPart>>,
}

impl MediaPattern {
    /// The glob with every placeholder replaced by its (glob-escaped) value.
    pub fn instantiate(&self, values: &ParamValues) -> String {
        self.segments
            .iter()
            .map(|seg| render_segment(seg, |p| globset::escape(values.get(p).unwrap_or(""))))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Parameters used by this glob.
    pub fn params(&self) -> BTreeSet<String> {
        self.segments
            .iter()
            .flatten()
            .filter_map(|p| match p {
                GlobPart::Param(p) => Some(p.clone()),
                GlobPart::Literal(_) => None,
            })
            .collect()
    }

    /// The leading segments that are plain names once instantiated (no glob
    /// syntax): the directory a walk can start from.
    pub fn literal_prefix(&self, values: &ParamValues) -> Vec<String> {
        let mut out = Vec::new();
        for seg in &self.segments {
            match literal_segment(seg, values) {
                Some(s) => out.push(s),
                None => break,
            }
        }
        // The last segment names files, not a directory to start from.
        if out.len() == self.segments.len() {
            out.pop();
        }
        out
    }

    /// For path rewriting on import: per leading segment (up to the first `**`),
    /// `Some((old, new))` when the segment is a plain name built from parameters
    /// and the two parameter sets render it differently.
    pub fn segment_rewrites(&self, old: &ParamValues, new: &ParamValues) -> Vec<Option<(String, String)>> {
        let mut out = Vec::new();
        for seg in &self.segments {
            if seg
                .iter()
                .any(|p| matches!(p, GlobPart::Literal(l) if l.contains("**")))
            {
                break;
            }
            let has_param = seg.iter().any(|p| matches!(p, GlobPart::Param(_)));
            match (has_param, literal_segment(seg, old), literal_segment(seg, new)) {
                (true, Some(o), Some(n)) if o != n => out.push(Some((o, n))),
                _ => out.push(None),
            }
        }
        out
    }
}

fn render_segment(seg: &[GlobPart], value: impl Fn(&str) -> String) -> String {
    seg.iter()
        .map(|p| match p {
            GlobPart::Literal(l) => l.clone(),
            GlobPart::Param(name) => value(name),
        })
        .collect()
}

fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// The segment as a plain name, or `None` when it holds glob syntax.
fn literal_segment(seg: &[GlobPart], values: &ParamValues) -> Option<String> {
    if seg
        .iter()
        .any(|p| matches!(p, GlobPart::Literal(l) if has_glob_meta(l)))
    {
        return None;
    }
    Some(render_segment(seg, |p| values.get(p).unwrap_or("").to_owned()))
}

/// A validated export profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportProfile {
    pub name: String,
    pub params: Vec<String>,
    pub follow_foreign_keys: bool,
    pub references: Vec<Reference>,
    pub tables: Vec<TableSelection>,
    pub media_include: Vec<MediaPattern>,
    /// The profile as configured, for the export manifest.
    pub raw: RawExportProfile,
}

impl ExportProfile {
    /// Checks the profile's syntax. Nothing here looks at a database.
    pub fn from_raw(raw: &RawExportProfile) -> Result<Self, ProfileError> {
        let profile = raw.name.clone();
        if !is_job_like_name(&raw.name) {
            return Err(ProfileError::InvalidName {
                name: raw.name.clone(),
            });
        }
        let mut declared = BTreeSet::new();
        for p in &raw.params {
            if !is_ident(p) {
                return Err(ProfileError::InvalidParamName {
                    profile,
                    param: p.clone(),
                });
            }
            if !declared.insert(p.clone()) {
                return Err(ProfileError::DuplicateParam {
                    profile,
                    param: p.clone(),
                });
            }
        }
        if raw.tables.is_empty() {
            return Err(ProfileError::NoTables { profile });
        }
        let mut used = BTreeSet::new();
        let mut tables = Vec::new();
        for (table, condition) in &raw.tables {
            if table.trim().is_empty() || table.contains('\0') || table != table.trim() {
                return Err(ProfileError::InvalidTableName {
                    profile,
                    table: table.clone(),
                });
            }
            if condition.trim().is_empty() {
                return Err(ProfileError::EmptyCondition {
                    profile,
                    table: table.clone(),
                });
            }
            let params = scan_condition(condition).map_err(|reason| ProfileError::ConditionSyntax {
                profile: profile.clone(),
                table: table.clone(),
                reason,
            })?;
            if let Some(p) = params.iter().find(|p| !declared.contains(*p)) {
                return Err(ProfileError::UnknownParam {
                    profile,
                    key: format!("tables.{table}"),
                    param: format!(":{p}"),
                });
            }
            used.extend(params.iter().cloned());
            tables.push(TableSelection {
                table: table.clone(),
                condition: condition.clone(),
                params,
            });
        }
        let mut references = Vec::new();
        for r in &raw.references {
            let parsed = parse_reference(r).ok_or_else(|| ProfileError::InvalidReference {
                profile: profile.clone(),
                reference: r.clone(),
            })?;
            references.push(parsed);
        }
        let mut media_include = Vec::new();
        for glob in &raw.media.include {
            let pattern = parse_media_glob(glob, &declared).map_err(|reason| ProfileError::InvalidGlob {
                profile: profile.clone(),
                glob: glob.clone(),
                reason,
            })?;
            used.extend(pattern.params());
            media_include.push(pattern);
        }
        if let Some(p) = declared.iter().find(|p| !used.contains(*p)) {
            return Err(ProfileError::UnusedParam {
                profile,
                param: p.clone(),
            });
        }
        Ok(ExportProfile {
            name: raw.name.clone(),
            params: raw.params.clone(),
            follow_foreign_keys: raw.follow_foreign_keys,
            references,
            tables,
            media_include,
            raw: raw.clone(),
        })
    }

    /// The selection for `table`, matched case-insensitively like SQLite names.
    pub fn table(&self, table: &str) -> Option<&TableSelection> {
        self.tables.iter().find(|t| t.table.eq_ignore_ascii_case(table))
    }

    /// Parameters that end up in file paths (used by a media glob).
    pub fn path_params(&self) -> BTreeSet<String> {
        self.media_include.iter().flat_map(|m| m.params()).collect()
    }
}

/// Parameter values checked against a profile: every declared parameter present,
/// nothing else, and values that reach file paths are single safe path components.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ParamValues(BTreeMap<String, String>);

impl ParamValues {
    /// Validates `given` (from `--param name=value` or an export manifest).
    pub fn new<I>(profile: &ExportProfile, given: I) -> Result<Self, ProfileError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut values = BTreeMap::new();
        let path_params = profile.path_params();
        for (name, value) in given {
            if !profile.params.contains(&name) {
                return Err(ProfileError::UnexpectedParamValue {
                    profile: profile.name.clone(),
                    param: crate::selective::sql::display_name(&name),
                });
            }
            let unsafe_value = |reason: &str| ProfileError::UnsafeParamValue {
                profile: profile.name.clone(),
                param: name.clone(),
                reason: reason.to_owned(),
            };
            if value.contains('\0') {
                return Err(unsafe_value("contains a NUL byte"));
            }
            if path_params.contains(&name)
                && let Some(reason) = path_component_problem(&value)
            {
                return Err(unsafe_value(reason));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ProfileError::DuplicateParamValue {
                    profile: profile.name.clone(),
                    param: name,
                });
            }
        }
        if let Some(p) = profile.params.iter().find(|p| !values.contains_key(*p)) {
            return Err(ProfileError::MissingParamValue {
                profile: profile.name.clone(),
                param: p.clone(),
            });
        }
        Ok(ParamValues(values))
    }

    /// A value set built without a profile (for key rewriting, where values come
    /// from a validated set with some keys replaced).
    pub(crate) fn with(&self, name: &str, value: String) -> Self {
        let mut m = self.0.clone();
        m.insert(name.to_owned(), value);
        ParamValues(m)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Why `value` cannot be one path component, or `None` when it can.
pub(crate) fn path_component_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("is empty, but it is used in a media path")
    } else if value == "." || value == ".." || value.contains("..") {
        Some("contains '..', which is refused in a media path")
    } else if value.contains('/') || value.contains('\\') {
        Some("contains a slash, which is refused in a media path")
    } else if value.chars().any(char::is_control) {
        Some("contains a control character, which is refused in a media path")
    } else if value.len() > 255 {
        Some("is longer than 255 bytes, too long for a media path")
    } else {
        None
    }
}

fn is_job_like_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub(crate) fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A bare or quoted (`"x"`, `` `x` ``, `[x]`) identifier, unquoted.
fn unquote_ident(s: &str) -> Option<String> {
    if is_ident(s) {
        return Some(s.to_owned());
    }
    let pairs = [('"', '"'), ('`', '`'), ('[', ']')];
    for (open, close) in pairs {
        if let Some(inner) = s.strip_prefix(open).and_then(|r| r.strip_suffix(close))
            && !inner.is_empty()
            && !inner.contains(open)
            && !inner.contains(close)
        {
            return Some(inner.to_owned());
        }
    }
    None
}

fn parse_reference(s: &str) -> Option<Reference> {
    let (child, parent) = s.split_once("->")?;
    let split = |side: &str| -> Option<(String, String)> {
        let (t, c) = side.trim().split_once('.')?;
        (is_ident(t) && is_ident(c)).then(|| (t.to_owned(), c.to_owned()))
    };
    let (child_table, child_column) = split(child)?;
    let (parent_table, parent_column) = split(parent)?;
    Some(Reference {
        child_table,
        child_column,
        parent_table,
        parent_column,
    })
}

fn parse_media_glob(glob: &str, declared: &BTreeSet<String>) -> Result<MediaPattern, String> {
    if glob.is_empty() {
        return Err("it is empty".to_owned());
    }
    if glob.starts_with('/') {
        return Err("it is absolute; globs are relative to each media directory".to_owned());
    }
    if glob.contains('\0') {
        return Err("it contains a NUL byte".to_owned());
    }
    let mut segments = Vec::new();
    for seg in glob.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("it has an empty, '.' or '..' path segment".to_owned());
        }
        let mut parts = Vec::new();
        let mut rest = seg;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            let inner = &rest[open + 1..close];
            if is_ident(inner) {
                if !declared.contains(inner) {
                    return Err(format!("it uses {{{inner}}}, which params does not declare"));
                }
                if open > 0 {
                    parts.push(GlobPart::Literal(rest[..open].to_owned()));
                }
                parts.push(GlobPart::Param(inner.to_owned()));
                rest = &rest[close + 1..];
            } else {
                // A glob alternation such as {png,jpg}: keep it as glob syntax.
                parts.push(GlobPart::Literal(rest[..=close].to_owned()));
                rest = &rest[close + 1..];
            }
        }
        if !rest.is_empty() {
            parts.push(GlobPart::Literal(rest.to_owned()));
        }
        segments.push(parts);
    }
    let pattern = MediaPattern {
        template: glob.to_owned(),
        segments,
    };
    // Check that the glob compiles with every parameter replaced by a sample value.
    let sample = ParamValues(declared.iter().map(|p| (p.clone(), "x".to_owned())).collect());
    compile_glob(&pattern.instantiate(&sample)).map_err(|e| e.to_string())?;
    Ok(pattern)
}

/// Compiles an instantiated media glob: `*` stays within one path segment, `**`
/// crosses segments.
pub(crate) fn compile_glob(glob: &str) -> Result<globset::GlobMatcher, globset::ErrorKind> {
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().clone())
}

/// Finds the `:name` parameters of a condition, skipping string literals, quoted
/// identifiers and comments; refuses statement separators and parameter styles we
/// do not bind (`?`, `?NNN`, `@x`, `$x`).
fn scan_condition(cond: &str) -> Result<BTreeSet<String>, String> {
    let b = cond.as_bytes();
    let mut params = BTreeSet::new();
    let mut i = 0;
    let is_ident_byte = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                let mut j = i + 1;
                loop {
                    if j >= b.len() {
                        return Err("has an unterminated quote".to_owned());
                    }
                    if b[j] == close {
                        // A doubled quote is an escaped quote inside the literal.
                        if close != b']' && j + 1 < b.len() && b[j + 1] == close {
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    j += 1;
                }
                i = j + 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match cond[i + 2..].find("*/") {
                Some(end) => i = i + 2 + end + 2,
                None => return Err("has an unterminated comment".to_owned()),
            },
            b';' => return Err("contains ';'; a condition is one SQL expression".to_owned()),
            b'?' => return Err("uses a positional parameter '?'; name parameters like :site".to_owned()),
            b'@' | b'$' => {
                return Err(format!(
                    "uses a parameter written with '{}'; write parameters like :site",
                    c as char
                ));
            }
            b':' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                let name = &cond[start..j];
                if !is_ident(name) {
                    return Err("has a ':' that does not start a parameter name".to_owned());
                }
                params.insert(name.to_owned());
                i = j;
            }
            _ if is_ident_byte(c) => {
                while i < b.len() && is_ident_byte(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawExportProfile {
        toml::from_str(toml_text).unwrap()
    }

    const SITE: &str = r#"
name = "site"
params = ["site"]
follow-foreign-keys = true
references = ["blocks.page_ref -> pages.id"]
[tables]
sites = "id = :site"
pages = "site_id = :site"
blocks = "page_id IN (SELECT id FROM pages WHERE site_id = :site)"
[media]
include = ["sites/{site}/**"]
"#;

    #[test]
    fn parses_the_design_example() {
        let p = ExportProfile::from_raw(&raw(SITE)).unwrap();
        assert_eq!(p.tables.len(), 3);
        assert!(p.follow_foreign_keys);
        assert_eq!(
            p.references,
            vec![Reference {
                child_table: "blocks".into(),
                child_column: "page_ref".into(),
                parent_table: "pages".into(),
                parent_column: "id".into()
            }]
        );
        let sites = p.table("SITES").unwrap();
        assert_eq!(sites.key_binding(), Some(("id".into(), "site".into())));
        assert_eq!(
            p.table("pages").unwrap().key_binding(),
            Some(("site_id".into(), "site".into()))
        );
        assert_eq!(p.table("blocks").unwrap().key_binding(), None);
        let v = ParamValues::new(&p, [("site".to_owned(), "3".to_owned())]).unwrap();
        assert_eq!(p.media_include[0].instantiate(&v), "sites/3/**");
        assert_eq!(p.media_include[0].literal_prefix(&v), vec!["sites", "3"]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<RawExportProfile>("name = \"x\"\nfollow-foreign-key = true").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn syntax_errors_are_one_sentence_naming_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "name = \"Site\"\n[tables]\na = \"1\"",
                "export profile name \"Site\" is invalid",
            ),
            (
                "name = \"s\"\nparams=[\"1x\"]\n[tables]\na = \"1\"",
                "params entry \"1x\"",
            ),
            (
                "name = \"s\"\nparams=[\"a\",\"a\"]\n[tables]\nt = \":a\"",
                "declared twice",
            ),
            ("name = \"s\"", "tables is empty"),
            (
                "name = \"s\"\n[tables]\nt = \" \"",
                "tables.t has an empty condition",
            ),
            (
                "name = \"s\"\n[tables]\nt = \"id = :site\"",
                "tables.t uses parameter :site, which params does not declare",
            ),
            (
                "name = \"s\"\nparams=[\"x\"]\n[tables]\nt = \"id = :x; DROP TABLE t\"",
                "contains ';'",
            ),
            ("name = \"s\"\n[tables]\nt = \"id = ?\"", "positional parameter"),
            ("name = \"s\"\n[tables]\nt = \"id = @x\"", "written with '@'"),
            (
                "name = \"s\"\n[tables]\nt = \"name = 'abc\"",
                "unterminated quote",
            ),
            (
                "name = \"s\"\nparams=[\"x\",\"y\"]\n[tables]\nt = \"id = :x\"",
                "parameter y is declared in params but used by no table condition",
            ),
            (
                "name = \"s\"\nreferences=[\"a.b => c.d\"]\n[tables]\nt = \"1\"",
                "references entry \"a.b => c.d\"",
            ),
            (
                "name = \"s\"\n[tables]\nt = \"1\"\n[media]\ninclude=[\"/abs/**\"]",
                "it is absolute",
            ),
            (
                "name = \"s\"\n[tables]\nt = \"1\"\n[media]\ninclude=[\"a/../b\"]",
                "'..' path segment",
            ),
            (
                "name = \"s\"\n[tables]\nt = \"1\"\n[media]\ninclude=[\"sites/{site}/**\"]",
                "uses {site}, which params does not declare",
            ),
            (
                "name = \"s\"\n[tables]\nt = \"1\"\n[media]\ninclude=[\"a/[b\"]",
                "media.include glob \"a/[b\" is invalid",
            ),
        ];
        for (text, want) in cases {
            let err = ExportProfile::from_raw(&raw(text)).unwrap_err().to_string();
            assert!(err.contains(want), "for {text:?}: got {err:?}, want {want:?}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn params_inside_literals_and_comments_are_ignored() {
        let p = scan_condition("a = ':nope' AND \"c:x\" = 1 -- :no\n AND b = :yes /* :no */").unwrap();
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec!["yes".to_owned()]);
        assert!(scan_condition("name = 'it''s; fine'").unwrap().is_empty());
    }

    #[test]
    fn glob_alternations_are_kept() {
        let p = ExportProfile::from_raw(&raw(
            "name = \"s\"\nparams=[\"site\"]\n[tables]\nt = \"id = :site\"\n[media]\ninclude=[\"sites/{site}/*.{png,jpg}\"]",
        ))
        .unwrap();
        let v = ParamValues::new(&p, [("site".to_owned(), "7".to_owned())]).unwrap();
        assert_eq!(p.media_include[0].instantiate(&v), "sites/7/*.{png,jpg}");
        let m = compile_glob(&p.media_include[0].instantiate(&v)).unwrap();
        assert!(m.is_match("sites/7/a.png"));
        assert!(!m.is_match("sites/7/x/a.png"));
        assert!(!m.is_match("sites/77/a.png"));
    }

    #[test]
    fn param_values_are_checked() {
        let p = ExportProfile::from_raw(&raw(SITE)).unwrap();
        let err = |pairs: &[(&str, &str)]| {
            ParamValues::new(&p, pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[]).contains("needs parameter site"));
        assert!(err(&[("site", "1"), ("x", "2")]).contains("has no parameter x"));
        assert!(err(&[("site", "../etc")]).contains("'..'"));
        assert!(err(&[("site", "..")]).contains("'..'"));
        assert!(err(&[("site", "a/b")]).contains("slash"));
        assert!(err(&[("site", "a\0")]).contains("NUL"));
        assert!(err(&[("site", "")]).contains("empty"));
        // Glob metacharacters in a value are escaped, not interpreted.
        let v = ParamValues::new(&p, [("site".to_owned(), "*".to_owned())]).unwrap();
        let m = compile_glob(&p.media_include[0].instantiate(&v)).unwrap();
        assert!(m.is_match("sites/*/a"));
        assert!(!m.is_match("sites/3/a"));
    }

    #[test]
    fn key_binding_forms() {
        let sel = |c: &str| TableSelection {
            table: "t".into(),
            condition: c.into(),
            params: BTreeSet::new(),
        };
        assert_eq!(
            sel(":site = \"id\"").key_binding(),
            Some(("id".into(), "site".into()))
        );
        assert_eq!(sel("  [id]=:s ").key_binding(), Some(("id".into(), "s".into())));
        assert_eq!(sel("id >= :s").key_binding(), None);
        assert_eq!(sel("id = :s OR id = 4").key_binding(), None);
        assert_eq!(sel("id == :s").key_binding(), None);
    }
}
