//! Removing secrets from text before it reaches an error, a log or the audit log.
//!
//! Tools and servers sometimes echo what they were given: a libpq URI with its
//! userinfo, a `password=...` pair from a connection string, a `CREATE ROLE ...
//! PASSWORD '...'` statement from a dump that failed to restore. Every piece of
//! tool output that this crate keeps goes through [`Scrubber::scrub`], which
//! replaces, in this order:
//!
//! 1. every known secret (the passwords found in the job's passfile or options
//!    file) wherever it occurs, longest first;
//! 2. the password part of URI userinfo (`scheme://user:SECRET@host`);
//! 3. the value of any `...password=`, `...passwd=`, `...pwd=` pair (any case,
//!    quoted or not, as in `PGPASSWORD=x`, `password = 'x y'`, `?password=x&`);
//! 4. the literal after SQL `PASSWORD`, `PASSWORD(` and `IDENTIFIED BY`.
//!
//! The replacement is [`MASK`]. Over-scrubbing is accepted: a message that lost a
//! word is better than one that leaked a password.

/// What replaces a secret.
pub const MASK: &str = "***";

/// Removes passwords from text. Cheap to clone; build one per source.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Known secrets, longest first so a secret containing another is masked whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    // Never print the secrets themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} known secrets)", self.secrets.len())
    }
}

impl Scrubber {
    /// A scrubber that also masks each of `secrets` (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Scrubber {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber { secrets }
    }

    /// Adds one more known secret.
    pub fn add_secret(&mut self, secret: &str) {
        if !secret.is_empty() && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every secret it can recognise replaced by [`MASK`].
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        let out = scrub_uri_userinfo(&out);
        let out = scrub_pairs(&out);
        scrub_sql_literals(&out)
    }
}

/// `scheme://user:pass@host` -> `scheme://user:***@host`.
fn scrub_uri_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first character that cannot be part of it.
        let end = tail
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\'' || c == '>'
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(MASK);
                        out.push_str(&authority[at..]);
                    }
                    None => out.push_str(authority),
                }
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether an identifier names a password (`password`, `PGPASSWORD`, `MYSQL_PWD`,
/// `--password`, `sslpassword`, `passwd`).
fn is_password_key(key: &str) -> bool {
    let key = key.trim_start_matches('-').to_ascii_lowercase();
    key.ends_with("password") || key.ends_with("passwd") || key.ends_with("pwd")
}

/// Masks the value of `key=value` / `key = 'value'` pairs whose key
/// names a password.
fn scrub_pairs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // Find an identifier starting here (only at a word start).
        if is_key_char(chars[i]) && (i == 0 || !is_key_char(chars[i - 1])) {
            let start = i;
            while i < chars.len() && is_key_char(chars[i]) {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            out.push_str(&key);
            if !is_password_key(&key) {
                continue;
            }
            // Optional spaces, '=', optional spaces, the value. (Not ':': MariaDB's
            // "(using password: YES)" is worth keeping.)
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            if j >= chars.len() || chars[j] != '=' {
                continue;
            }
            j += 1;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let (value_end, quoted) = value_end(&chars, j);
            if value_end == j && !quoted {
                continue;
            }
            out.extend(&chars[i..j]);
            if quoted {
                out.push(chars[j]);
                out.push_str(MASK);
                out.push(chars[j]);
            } else {
                out.push_str(MASK);
            }
            i = value_end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Where a value starting at `start` ends: a quoted value runs to its closing quote
/// (doubled quotes and backslash escapes allowed), a bare one to whitespace, `&`,
/// `;`, `,` or a closing bracket.
fn value_end(chars: &[char], start: usize) -> (usize, bool) {
    if start >= chars.len() {
        return (start, false);
    }
    let first = chars[start];
    if first == '\'' || first == '"' {
        let mut k = start + 1;
        while k < chars.len() {
            if chars[k] == '\\' {
                k += 2;
                continue;
            }
            if chars[k] == first {
                if k + 1 < chars.len() && chars[k + 1] == first {
                    k += 2;
                    continue;
                }
                return (k + 1, true);
            }
            k += 1;
        }
        return (chars.len(), true);
    }
    let mut k = start;
    while k < chars.len()
        && !chars[k].is_whitespace()
        && !matches!(chars[k], '&' | ';' | ',' | ')' | ']' | '}')
    {
        k += 1;
    }
    (k, false)
}

/// Masks the quoted literal after SQL `PASSWORD`, `PASSWORD(` and `IDENTIFIED BY
/// [PASSWORD]`.
fn scrub_sql_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let lower: Vec<char> = chars.iter().map(|c| c.to_ascii_lowercase()).collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let word_at = |pos: usize, word: &str| -> bool {
        let w: Vec<char> = word.chars().collect();
        pos + w.len() <= lower.len()
            && lower[pos..pos + w.len()] == w[..]
            && (pos == 0 || !is_key_char(lower[pos - 1]))
            && (pos + w.len() == lower.len() || !is_key_char(lower[pos + w.len()]))
    };
    let skip_space = |mut pos: usize| -> usize {
        while pos < chars.len() && chars[pos].is_whitespace() {
            pos += 1;
        }
        pos
    };
    while i < chars.len() {
        let mut literal_at = None;
        if word_at(i, "password") {
            let mut j = skip_space(i + "password".len());
            if j < chars.len() && chars[j] == '(' {
                j = skip_space(j + 1);
            }
            literal_at = Some(j);
        } else if word_at(i, "identified") {
            let j = skip_space(i + "identified".len());
            if word_at(j, "by") {
                let mut k = skip_space(j + 2);
                if word_at(k, "password") {
                    k = skip_space(k + "password".len());
                }
                literal_at = Some(k);
            }
        }
        if let Some(j) = literal_at
            && j < chars.len()
            && (chars[j] == '\'' || chars[j] == '"')
        {
            let (end, _) = value_end(&chars, j);
            out.extend(&chars[i..j]);
            out.push(chars[j]);
            out.push_str(MASK);
            out.push(chars[j]);
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_known_secrets_uris_pairs_and_sql() {
        let s = Scrubber::new(["hunter2".to_owned(), "S3cr:et pw".to_owned()]);
        let cases = [
            ("FATAL: bad hunter2 here", "FATAL: bad *** here"),
            ("auth S3cr:et pw failed", "auth *** failed"),
            (
                "postgresql://app:pa55@db.example/shop",
                "postgresql://app:***@db.example/shop",
            ),
            ("postgres://app@db/shop ok", "postgres://app@db/shop ok"),
            ("mysql://u:p%40ss@h:3306/x", "mysql://u:***@h:3306/x"),
            (
                "host=/run password=abc dbname=x",
                "host=/run password=*** dbname=x",
            ),
            ("PGPASSWORD=xyz pg_dump", "PGPASSWORD=*** pg_dump"),
            ("MYSQL_PWD='a b' x", "MYSQL_PWD='***' x"),
            (
                "?sslmode=require&password=q1&user=a",
                "?sslmode=require&password=***&user=a",
            ),
            ("password = 'it''s'", "password = '***'"),
            ("--password=top", "--password=***"),
            (
                "CREATE ROLE app LOGIN PASSWORD 'pw1';",
                "CREATE ROLE app LOGIN PASSWORD '***';",
            ),
            (
                "CREATE USER 'a'@'%' IDENTIFIED BY 'pw2'",
                "CREATE USER 'a'@'%' IDENTIFIED BY '***'",
            ),
            ("IDENTIFIED BY PASSWORD '*ABCDEF'", "IDENTIFIED BY PASSWORD '***'"),
            ("SET PASSWORD = PASSWORD('pw3')", "SET PASSWORD = ***)"),
            (
                "Access denied for user 'coffer'@'localhost' (using password: YES)",
                "Access denied for user 'coffer'@'localhost' (using password: YES)",
            ),
            (
                "password authentication failed for user \"coffer\"",
                "password authentication failed for user \"coffer\"",
            ),
            ("no secrets here", "no secrets here"),
        ];
        for (input, expected) in cases {
            assert_eq!(s.scrub(input), expected, "input: {input}");
        }
    }

    #[test]
    fn longest_secret_first_and_debug_hides_secrets() {
        let s = Scrubber::new(["abc".to_owned(), "abcdef".to_owned()]);
        assert_eq!(s.scrub("x abcdef y abc"), "x *** y ***");
        assert!(!format!("{s:?}").contains("abc"));
    }
}
