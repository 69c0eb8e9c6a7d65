//! Path rules for archive entries, shared by the writer, the reader and the manifest.
//!
//! [`check_entry_path`] admits only relative, normalised paths under `db/` or
//! `media/<n>/`; [`symlink_stays_inside`] decides whether a stored symlink resolves
//! inside its media directory.

use std::path::{Component, Path};

/// The name of the manifest entry, always last in the archive.
pub const MANIFEST_PATH: &str = "manifest.json";

/// Whether `s` looks like a hex sha256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Admits `db/<name>`, `media/<n>` and `media/<n>/<relative path>` with `n` below
/// `media_roots`: no absolute paths, no `.`/`..`, no empty components, no NUL.
pub fn check_entry_path(path: &str, media_roots: usize) -> Result<(), String> {
    let bad = |why: &str| Err(format!("archive path '{}' {why}", path.escape_debug()));
    if path.is_empty() || path.contains('\0') || path.contains('\\') {
        return bad("is not a valid path");
    }
    if path.starts_with('/') {
        return bad("is absolute");
    }
    if path.ends_with('/') || path.contains("//") {
        return bad("is not normalised");
    }
    // Split by hand: `Path::components` silently drops interior `.` parts.
    for part in path.split('/') {
        match part {
            ".." => return bad("contains '..'"),
            "." => return bad("is not normalised"),
            _ => {}
        }
    }
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some("db"), Some(_)) => Ok(()),
        (Some("media"), Some(n)) => match n.parse::<usize>() {
            Ok(i) if i < media_roots && i.to_string() == n => Ok(()),
            _ => bad("names a media directory the manifest does not have"),
        },
        _ => bad("is outside db/ and media/"),
    }
}

/// Whether a symlink at `depth` directories below its media root, with `target`,
/// resolves (lexically) inside that root.
pub fn symlink_stays_inside(depth: usize, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut level = depth as isize;
    for component in Path::new(target).components() {
        match component {
            Component::ParentDir => level -= 1,
            Component::Normal(_) => level += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if level < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        let ok = ["db/app.db", "media/0", "media/0/a/b.png", "media/1/ü ñ.txt"];
        for p in ok {
            assert_eq!(check_entry_path(p, 2), Ok(()), "{p}");
        }
        let bad = [
            ("", "not a valid"),
            ("/etc/passwd", "absolute"),
            ("media/0/../../x", "'..'"),
            ("media/0/./x", "normalised"),
            ("media/0//x", "normalised"),
            ("media/0/", "normalised"),
            ("media/2/x", "media directory"),
            ("media/01/x", "media directory"),
            ("etc/x", "outside"),
            ("db", "outside"),
            ("manifest.json", "outside"),
        ];
        for (p, why) in bad {
            let err = check_entry_path(p, 2).expect_err(p);
            assert!(err.contains(why), "{p}: {err}");
        }
    }

    #[test]
    fn sha_hex() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
    }

    #[test]
    fn symlinks_inside_or_not() {
        assert!(symlink_stays_inside(0, "a/b"));
        assert!(symlink_stays_inside(1, "../x"));
        assert!(!symlink_stays_inside(0, "../x"));
        assert!(!symlink_stays_inside(3, "/etc/passwd"));
        assert!(!symlink_stays_inside(0, ""));
    }
}
