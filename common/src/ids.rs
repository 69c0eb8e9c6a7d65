//! Backup ids and references to them.
//!
//! An id is `<job>-<UTC yyyymmddThhmmssZ>`, with a `-2`, `-3`, ... suffix when two
//! backups of a job start in the same second. Ids sort by time within a job, name the
//! archive file, and are safe as file names because job names are restricted to
//! `[a-z0-9][a-z0-9_-]*`.
//!
//! Wherever an id is accepted, `latest` (the newest backup of any job) and `JOB:latest`
//! (the newest of one job) are too; [`IdRef::parse`] tells them apart.

use chrono::{DateTime, Utc};

/// The timestamp format inside ids.
const ID_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Longest accepted job name; keeps ids and paths well inside file-name limits.
pub const MAX_JOB_NAME_LEN: usize = 64;

/// Whether `name` is a valid job name: `[a-z0-9][a-z0-9_-]*`, at most 64 bytes.
pub fn is_valid_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= MAX_JOB_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The id of a backup of `job` taken at `at`, with `attempt` 1 for the first choice
/// and 2, 3, ... for the collision suffixes.
pub fn backup_id(job: &str, at: DateTime<Utc>, attempt: u32) -> String {
    let stamp = at.format(ID_TIME_FORMAT);
    if attempt <= 1 {
        format!("{job}-{stamp}")
    } else {
        format!("{job}-{stamp}-{attempt}")
    }
}

/// Orders backup ids of equal creation time: by length, then byte-wise, so that the
/// collision suffixes count up (`app-…Z` < `app-…Z-2` < `app-…Z-9` < `app-…Z-10`). The
/// catalog's SQL sorts the same way (`length(id)`, then `id`).
pub fn cmp_ids(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Whether `id` has the shape of a backup id (job name, timestamp, optional suffix).
/// Used to reject hostile ids before they reach a path.
pub fn is_valid_backup_id(id: &str) -> bool {
    split_backup_id(id).is_some()
}

/// Splits a backup id into its job name and creation time.
pub fn split_backup_id(id: &str) -> Option<(&str, DateTime<Utc>)> {
    // The timestamp is 16 characters: yyyymmddThhmmssZ. Try without and with suffix.
    let (rest, _suffix) = match id.rsplit_once('-') {
        Some((rest, suffix))
            if !suffix.is_empty()
                && suffix.len() <= 6
                && suffix.chars().all(|c| c.is_ascii_digit())
                && !suffix.starts_with('0') =>
        {
            (rest, Some(suffix))
        }
        _ => (id, None),
    };
    let (job, stamp) = rest.rsplit_once('-')?;
    // Exactly yyyymmddThhmmssZ: chrono alone would also take signs and whitespace.
    let canonical = stamp.len() == 16
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !is_valid_job_name(job) || !canonical {
        return None;
    }
    let at = chrono::NaiveDateTime::parse_from_str(stamp, ID_TIME_FORMAT).ok()?;
    Some((job, at.and_utc()))
}

/// What an id argument refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdRef {
    /// The newest backup of any job.
    Latest,
    /// The newest backup of one job.
    LatestOf(String),
    /// One backup by id.
    Id(String),
}

/// Why an id argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("no backup id given")]
    Empty,
    #[error("'{0}' is not a valid backup id (expected JOB-yyyymmddThhmmssZ, latest or JOB:latest)")]
    Invalid(String),
}

impl IdRef {
    /// Parses an id argument: `latest`, `JOB:latest` or a backup id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s == "latest" {
            return Ok(IdRef::Latest);
        }
        if let Some(job) = s.strip_suffix(":latest") {
            return if is_valid_job_name(job) {
                Ok(IdRef::LatestOf(job.to_owned()))
            } else {
                Err(IdError::Invalid(s.chars().take(200).collect()))
            };
        }
        if is_valid_backup_id(s) {
            Ok(IdRef::Id(s.to_owned()))
        } else {
            Err(IdError::Invalid(s.chars().take(200).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn collision_suffixes_order_numerically() {
        let stamp = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut ids: Vec<String> = (1..=12).rev().map(|n| backup_id("app", stamp, n)).collect();
        ids.sort_by(|a, b| cmp_ids(a, b));
        let expected: Vec<String> = (1..=12).map(|n| backup_id("app", stamp, n)).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn job_names() {
        for ok in ["app", "a", "0", "my-app_2", "x".repeat(64).as_str()] {
            assert!(is_valid_job_name(ok), "{ok}");
        }
        for bad in [
            "",
            "App",
            "-app",
            "_a",
            "a b",
            "a/b",
            "..",
            "a.b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_job_name(bad), "{bad}");
        }
    }

    #[test]
    fn ids_round_trip() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 2, 0, 5).unwrap();
        assert_eq!(backup_id("app", at, 1), "app-20261123T020005Z");
        assert_eq!(backup_id("app", at, 3), "app-20261123T020005Z-3");
        assert_eq!(split_backup_id("app-20261123T020005Z"), Some(("app", at)));
        assert_eq!(
            split_backup_id("my-app-20261123T020005Z-12"),
            Some(("my-app", at))
        );
        assert_eq!(split_backup_id("app-20261123T020005Z-0"), None);
        assert_eq!(split_backup_id("app-20261323T020005Z"), None);
        assert_eq!(split_backup_id("../etc-20261123T020005Z"), None);
        assert_eq!(split_backup_id("app"), None);
        assert_eq!(split_backup_id("app-\t0260101T000000Z"), None);
    }

    #[test]
    fn id_refs() {
        assert_eq!(IdRef::parse("latest"), Ok(IdRef::Latest));
        assert_eq!(IdRef::parse("app:latest"), Ok(IdRef::LatestOf("app".into())));
        assert_eq!(
            IdRef::parse("app-20261123T020005Z"),
            Ok(IdRef::Id("app-20261123T020005Z".into()))
        );
        assert_eq!(IdRef::parse(""), Err(IdError::Empty));
        assert!(matches!(IdRef::parse("../../x"), Err(IdError::Invalid(_))));
        assert!(matches!(IdRef::parse("Bad:latest"), Err(IdError::Invalid(_))));
    }
}
