//! `exclude` globs: what an admin leaves out of a job's media on purpose. Pure: paths
//! in, yes/no out.

use std::path::Path;

use globset::{GlobSet, GlobSetBuilder};

/// A job's `exclude` globs, relative to each media directory. A pattern without a `/`
/// matches a name at any depth (`*.tmp`), one with a `/` the path from the media
/// directory (`cache/**`); `*` stays within one name, `**` crosses directories. An
/// excluded directory leaves out everything beneath it.
#[derive(Debug, Clone, Default)]
pub struct Exclude {
    set: Option<GlobSet>,
    patterns: Vec<String>,
}

impl Exclude {
    /// Compiles `patterns`; the error names the bad pattern.
    pub fn new(patterns: &[String]) -> Result<Exclude, String> {
        if patterns.is_empty() {
            return Ok(Exclude::default());
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let full = if pattern.contains('/') {
                pattern.trim_start_matches('/').to_owned()
            } else {
                format!("**/{pattern}")
            };
            let glob = globset::GlobBuilder::new(&full)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("'{pattern}' is not a valid glob ({e})"))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| format!("the exclude globs cannot be compiled ({e})"))?;
        Ok(Exclude {
            set: Some(set),
            patterns: patterns.to_vec(),
        })
    }

    /// The patterns as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether the path relative to a media directory is excluded.
    pub fn matches(&self, relative: &Path) -> bool {
        self.set.as_ref().is_some_and(|s| s.is_match(relative))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_without_a_slash_match_names_at_any_depth() {
        let ex = Exclude::new(&["*.tmp".into(), "cache/**".into(), "/top.log".into()]).unwrap();
        for yes in ["a.tmp", "x/y/a.tmp", "cache/a", "cache/a/b", "top.log"] {
            assert!(ex.matches(Path::new(yes)), "{yes}");
        }
        for no in ["a.tmpx", "cache", "x/cache/a", "x/top.log", "a/b.txt"] {
            assert!(!ex.matches(Path::new(no)), "{no}");
        }
        assert!(!Exclude::default().matches(Path::new("anything")));
    }

    #[test]
    fn a_bad_glob_is_named() {
        let err = Exclude::new(&["a[".into()]).unwrap_err();
        assert!(err.starts_with("'a[' is not a valid glob"), "{err}");
    }
}
