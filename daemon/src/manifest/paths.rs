//! Path rules for archive entries, shared by the writer, the reader and the manifest.
//!
//! Names on disk are bytes; the manifest is JSON text. [`escape`] records any name
//! losslessly: valid UTF-8 as itself, a backslash as `\\`, and every byte that is not
//! part of valid UTF-8 as `\xHH` (two lowercase hex digits). [`unescape`] turns it
//! back into the bytes, and only the canonical form is accepted, so one name has one
//! manifest path. The tar entry itself carries the raw bytes (GNU long names when
//! needed), so `tar -x` restores them byte-exact too.
//!
//! [`check_entry_path`] admits only relative, normalised paths under `db/` or
//! `media/<n>/`; [`symlink_stays_inside`] decides whether a symlink's target resolves
//! inside its media directory (the export selection uses it; backups store every
//! symlink as it is).

use std::path::{Component, Path};

/// The name of the manifest entry, always last in the archive.
pub const MANIFEST_PATH: &str = "manifest.json";

/// Whether `s` looks like a hex sha256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The manifest form of a name (see the module doc).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes of a manifest path; refuses anything but the canonical [`escape`] form.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            out.push(b);
            rest = tail;
            continue;
        }
        match tail {
            [b'\\', tail @ ..] => {
                out.push(b'\\');
                rest = tail;
            }
            [b'x', h, l, tail @ ..] => {
                let hex = |d: u8| (d as char).to_digit(16).filter(|_| !d.is_ascii_uppercase());
                let (Some(h), Some(l)) = (hex(*h), hex(*l)) else {
                    return Err(format!("'{}' has a bad \\x escape", text.escape_debug()));
                };
                out.push((h * 16 + l) as u8);
                rest = tail;
            }
            _ => return Err(format!("'{}' has a bad escape", text.escape_debug())),
        }
    }
    if escape(&out) != text {
        return Err(format!(
            "'{}' is not in canonical escaped form",
            text.escape_debug()
        ));
    }
    Ok(out)
}

/// Admits `db/<name>`, `media/<n>` and `media/<n>/<relative path>` with `n` below
/// `media_roots`, in [`escape`]d form: no absolute paths, no `.`/`..`, no empty
/// components, no NUL.
pub fn check_entry_path(path: &str, media_roots: usize) -> Result<(), String> {
    let bad = |why: &str| Err(format!("archive path '{}' {why}", path.escape_debug()));
    let Ok(bytes) = unescape(path) else {
        return bad("is not a valid path");
    };
    if bytes.is_empty() || bytes.contains(&0) {
        return bad("is not a valid path");
    }
    if bytes.starts_with(b"/") {
        return bad("is absolute");
    }
    if bytes.ends_with(b"/") || bytes.windows(2).any(|w| w == b"//") {
        return bad("is not normalised");
    }
    // Split by hand: `Path::components` silently drops interior `.` parts.
    for part in bytes.split(|b| *b == b'/') {
        match part {
            b".." => return bad("contains '..'"),
            b"." => return bad("is not normalised"),
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
            ("media/0/a\\b", "not a valid"),
            ("media/0/\\x41", "not a valid"),
            ("media/0/\\xzz", "not a valid"),
            ("media/0/\\x00", "not a valid"),
            ("media/0/\\x2e\\x2e", "not a valid"),
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
    fn names_escape_losslessly_and_canonically() {
        let cases: [(&[u8], &str); 5] = [
            (b"plain.txt", "plain.txt"),
            ("straße ü".as_bytes(), "straße ü"),
            (b"caf\xe9.txt", "caf\\xe9.txt"),
            (b"a\\b", "a\\\\b"),
            (b"\xff\xfe\\x41", "\\xff\\xfe\\\\x41"),
        ];
        for (bytes, text) in cases {
            assert_eq!(escape(bytes), text);
            assert_eq!(unescape(text).unwrap(), bytes);
        }
        assert!(check_entry_path("media/0/caf\\xe9.txt", 1).is_ok());
        assert!(check_entry_path("media/0/a\\\\b", 1).is_ok());
        // Every byte string round-trips.
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
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
