//! Reading a custom-format dump's table of contents: [`TocScan`] follows
//! `pg_restore --list` output line by line (the format, the database it was taken
//! from, the entry count, and the database-level entries), and
//! [`parse_database_entry`] reads what `pg_restore --create` prints for those
//! entries, so a restore can create the database under another name with the dump's
//! own encoding, locale, owner, settings, grants and comment.

use std::io::Write;

/// The database-level entries of a dump (`pg_restore --create` of only those).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct DatabaseEntry {
    /// The options of `CREATE DATABASE x WITH <options>` (template, encoding, locale).
    pub(super) create_options: Option<String>,
    /// The owner identifier as the dump quotes it.
    pub(super) owner: Option<String>,
    /// Settings, grants and comment, as statements on `DATABASE <ident>` with the
    /// identifier replaced by the placeholder [`TARGET`].
    pub(super) properties: Vec<String>,
}

/// Placeholder for the target database's identifier in [`DatabaseEntry::properties`].
pub(super) const TARGET: &str = "\u{0}TARGET\u{0}";

/// Reads one identifier as pg_dump prints it (`name` or `"quoted ""name"""`) at the
/// start of `text`; returns it and the rest.
fn split_ident(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('"') {
        let mut i = 0;
        let bytes = rest.as_bytes();
        while i < bytes.len() {
            if bytes[i] == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return Some((&text[..i + 2], &rest[i + 1..]));
            }
            i += 1;
        }
        None
    } else {
        let end = text
            .find(|c: char| c.is_whitespace() || c == ';')
            .unwrap_or(text.len());
        (end > 0).then(|| (&text[..end], &text[end..]))
    }
}

/// Parses the SQL that `pg_restore --create` prints for the database entries.
pub(super) fn parse_database_entry(sql: &str) -> Result<DatabaseEntry, String> {
    let mut entry = DatabaseEntry::default();
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut in_literal = false;
    for line in sql.lines() {
        if !in_literal && current.is_empty() {
            let t = line.trim_start();
            if t.is_empty()
                || t.starts_with("--")
                || t.starts_with('\\')
                || t.starts_with("SET ")
                || t.starts_with("SELECT pg_catalog.set_config(")
            {
                continue;
            }
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        if line.matches('\'').count() % 2 == 1 {
            in_literal = !in_literal;
        }
        if !in_literal && line.trim_end().ends_with(';') {
            statements.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        return Err("an unterminated statement".to_owned());
    }
    let mut name: Option<String> = None;
    for statement in statements {
        if let Some(rest) = statement.strip_prefix("CREATE DATABASE ") {
            let (ident, rest) = split_ident(rest).ok_or("a CREATE DATABASE without a name")?;
            name = Some(ident.to_owned());
            let options = rest.trim().trim_end_matches(';').trim();
            let options = options.strip_prefix("WITH").unwrap_or(options).trim();
            entry.create_options = Some(options.to_owned());
            continue;
        }
        let Some(ident) = name.as_deref() else {
            return Err("database settings before its CREATE DATABASE".to_owned());
        };
        let marker = format!("DATABASE {ident}");
        if let Some(owner) = statement
            .strip_prefix(&format!("ALTER {marker} OWNER TO "))
            .map(|o| o.trim().trim_end_matches(';').to_owned())
        {
            entry.owner = Some(owner);
        } else if let Some(pos) = statement.find(&marker) {
            let after = &statement[pos + marker.len()..];
            // The identifier must end there (not a prefix of a longer name).
            if after.starts_with(|c: char| c.is_whitespace() || c == ';') {
                entry
                    .properties
                    .push(format!("{}DATABASE {TARGET}{after}", &statement[..pos]));
            }
        }
        // Anything else (e.g. template1's datistemplate update) is not ours to apply.
    }
    Ok(entry)
}

/// Follows `pg_restore --list` output line by line without keeping it: the header
/// facts, the entry count, and the database-level entries (for `-L`).
#[derive(Default)]
pub(super) struct TocScan {
    pub(super) partial: Vec<u8>,
    pub(super) custom_format: bool,
    pub(super) database: String,
    pub(super) entries: u64,
    pub(super) database_lines: Vec<String>,
}

impl TocScan {
    pub(super) fn line(&mut self, line: &str) {
        if let Some(header) = line.strip_prefix(';') {
            let header = header.trim();
            if header == "Format: CUSTOM" {
                self.custom_format = true;
            } else if let Some(db) = header.strip_prefix("dbname: ") {
                self.database = db.to_owned();
            }
            return;
        }
        if line.trim().is_empty() {
            return;
        }
        self.entries += 1;
        // "<id>; <tableoid> <oid> <desc> <schema> <tag> <owner>"
        let Some((_, rest)) = line.split_once("; ") else {
            return;
        };
        let mut parts = rest.splitn(3, ' ');
        let (_, _, desc) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
        const DATABASE_ENTRIES: &[&str] = &[
            "DATABASE - ",
            "DATABASE PROPERTIES - ",
            "COMMENT - DATABASE ",
            "ACL - DATABASE ",
            "SECURITY LABEL - DATABASE ",
        ];
        if DATABASE_ENTRIES.iter().any(|p| desc.starts_with(p)) {
            self.database_lines.push(line.to_owned());
        }
    }
}

impl Write for TocScan {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.line(&line);
        }
        // One absurdly long line must not grow memory without bound.
        if self.partial.len() > 1 << 20 {
            self.partial.clear();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_entry_is_parsed_and_retargeted() {
        let sql = r#"--
\restrict abc
SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
CREATE DATABASE "Shop ""X""" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';


ALTER DATABASE "Shop ""X""" OWNER TO app;
\connect -reuse-previous=on "dbname='Shop \"X\"'"
COMMENT ON DATABASE "Shop ""X""" IS 'the shop;
DATABASE "Shop ""X""" multi-line';
ALTER DATABASE "Shop ""X""" SET work_mem TO '8MB';
REVOKE CONNECT,TEMPORARY ON DATABASE "Shop ""X""" FROM PUBLIC;
GRANT CONNECT ON DATABASE "Shop ""X""" TO coffer;
\unrestrict abc
"#;
        let entry = parse_database_entry(sql).unwrap();
        assert_eq!(
            entry.create_options.as_deref(),
            Some("TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8'")
        );
        assert_eq!(entry.owner.as_deref(), Some("app"));
        let props: Vec<String> = entry
            .properties
            .iter()
            .map(|p| p.replace(TARGET, "\"t\""))
            .collect();
        assert_eq!(
            props,
            [
                "COMMENT ON DATABASE \"t\" IS 'the shop;\nDATABASE \"Shop \"\"X\"\"\" multi-line';",
                "ALTER DATABASE \"t\" SET work_mem TO '8MB';",
                "REVOKE CONNECT,TEMPORARY ON DATABASE \"t\" FROM PUBLIC;",
                "GRANT CONNECT ON DATABASE \"t\" TO coffer;",
            ]
        );
    }

    #[test]
    fn toc_scan_finds_header_entries_and_database_lines() {
        let text = ";\n;     dbname: shop\n;     Format: CUSTOM\n;\n3354; 1262 16386 DATABASE - shop app\n3355; 0 0 COMMENT - DATABASE shop app\n215; 1259 16388 TABLE public DATABASE - x app\n3357; 0 0 DATABASE PROPERTIES - shop app\n";
        let mut scan = TocScan::default();
        // Written in odd pieces, as a pipe delivers it.
        for chunk in text.as_bytes().chunks(7) {
            scan.write_all(chunk).unwrap();
        }
        assert!(scan.custom_format);
        assert_eq!(scan.database, "shop");
        assert_eq!(scan.entries, 4);
        assert_eq!(scan.database_lines.len(), 3);
    }
}
