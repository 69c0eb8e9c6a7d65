//! Names of the databases Coffer creates beside a live one, and SQL quoting.
//!
//! The scratch databases are named after the live one so an admin looking at the
//! server sees whose they are: `<db>__coffer_restore` (restore before swap),
//! `<db>__coffer_old` (the previous live copy until the swap commits),
//! `<db>__coffer_verify` (deep verify) and `<db>__coffer_drill` (restore drills).
//! They are Coffer's by name: one left over by an interrupted run is dropped. Servers cap identifier length
//! (PostgreSQL 63 bytes, silently truncating longer ones; MariaDB 64 characters), so
//! a name that would not fit keeps a prefix of the live name plus 8 hex digits of
//! its SHA-256: still recognisable, still unique per live database.

use sha2::{Digest, Sha256};

use super::error::DbError;
use crate::config::ServerKind;

/// The role a derived database plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scratch {
    /// `<db>__coffer_restore`: the restored copy before the swap.
    Restore,
    /// `<db>__coffer_old`: the previous live copy during the swap.
    Old,
    /// `<db>__coffer_verify`: deep verify.
    Verify,
    /// `<db>__coffer_drill`: restore drills.
    Drill,
}

impl Scratch {
    fn suffix(self) -> &'static str {
        match self {
            Scratch::Restore => "__coffer_restore",
            Scratch::Old => "__coffer_old",
            Scratch::Verify => "__coffer_verify",
            Scratch::Drill => "__coffer_drill",
        }
    }
}

/// The name of the `role` database of `live` on a server of `flavor`.
pub fn derived(live: &str, role: Scratch, flavor: ServerKind) -> String {
    let simple = format!("{live}{}", role.suffix());
    if flavor.fits(&simple) {
        return simple;
    }
    let hash = Sha256::digest(live.as_bytes());
    let tag: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    let mut prefix = String::new();
    for c in live.chars() {
        prefix.push(c);
        let candidate = format!("{prefix}_{tag}{}", role.suffix());
        if !flavor.fits(&candidate) {
            prefix.pop();
            break;
        }
    }
    format!("{prefix}_{tag}{}", role.suffix())
}

/// Checks a database name given in a job or on the command line.
pub fn check_name(name: &str, flavor: ServerKind, what: &str) -> Result<(), DbError> {
    match flavor.name_problem(name) {
        Some(problem) => Err(DbError::Config(format!("the {what} '{name}' {problem}"))),
        None => Ok(()),
    }
}

/// A PostgreSQL identifier: `"name"` with inner quotes doubled.
pub(crate) fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal (`standard_conforming_strings` is on in every script
/// we send): `'text'` with inner quotes doubled.
pub(crate) fn pg_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A MariaDB identifier: `` `name` `` with inner backticks doubled.
pub(crate) fn my_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A MariaDB string literal, safe whatever `sql_mode` (backslashes are escaped
/// and NO_BACKSLASH_ESCAPES is switched off in every script we send).
pub(crate) fn my_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_get_plain_suffixes() {
        assert_eq!(
            derived("shop", Scratch::Restore, ServerKind::Postgres),
            "shop__coffer_restore"
        );
        assert_eq!(
            derived("shop", Scratch::Old, ServerKind::Mariadb),
            "shop__coffer_old"
        );
        assert_eq!(
            derived("shop", Scratch::Verify, ServerKind::Postgres),
            "shop__coffer_verify"
        );
    }

    #[test]
    fn long_names_are_shortened_uniquely_and_fit() {
        let a = "a".repeat(60);
        let b = format!("{}b", "a".repeat(59));
        for role in [Scratch::Restore, Scratch::Old, Scratch::Verify, Scratch::Drill] {
            let da = derived(&a, role, ServerKind::Postgres);
            let db = derived(&b, role, ServerKind::Postgres);
            assert!(da.len() <= 63 && db.len() <= 63, "{da} {db}");
            assert_ne!(da, db);
            assert!(da.starts_with("aaaa") && da.ends_with(role.suffix()));
        }
        // Multi-byte characters: never split inside one, and bytes count for PostgreSQL.
        let long = "ä".repeat(40);
        let d = derived(&long, Scratch::Restore, ServerKind::Postgres);
        assert!(d.len() <= 63, "{d}");
        let d = derived(&long, Scratch::Restore, ServerKind::Mariadb);
        assert!(d.chars().count() <= 64 && d.len() > 64, "{d}");
    }

    #[test]
    fn quoting() {
        assert_eq!(pg_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(pg_literal("it's"), "'it''s'");
        assert_eq!(my_ident("a`b"), "`a``b`");
        assert_eq!(my_literal("a\\'b"), "'a\\\\''b'");
    }

    #[test]
    fn bad_names_are_refused_with_a_sentence() {
        let e = check_name("-rf", ServerKind::Mariadb, "database name").unwrap_err();
        assert_eq!(e.to_string(), "the database name '-rf' starts with '-'");
        assert!(check_name(&"x".repeat(64), ServerKind::Postgres, "database name").is_err());
        assert!(check_name("shop", ServerKind::Postgres, "database name").is_ok());
    }
}
