//! `[job.drill]`: scheduled restore drills and the SQL checks they run.
//!
//! ```toml
//! [job.drill]
//! schedule = "0 0 4 * * 0"
//! checks = ["SELECT count(*) > 0 FROM users"]
//! ```
//! Without `schedule` drills run only on demand (`cofferctl drill JOB`). Every check
//! is an admin's query that must return exactly one truthy value; they are checked for
//! shape here and run against the restored copy by the drill.

use serde::Deserialize;

use super::{ConfigError, Validator};
use crate::policy::schedule::Schedule;

/// The raw `[job.drill]` table.
#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawDrill {
    schedule: Option<String>,
    #[serde(default)]
    checks: Vec<String>,
}

/// A job's drills: when they run on their own, and what they check.
#[derive(Debug, Clone, Default)]
pub struct DrillConfig {
    /// `None`: on demand only.
    pub schedule: Option<Schedule>,
    pub checks: Vec<String>,
}

impl Validator<'_> {
    /// Validates `[job.drill]` of job `name` (time zone `timezone`).
    pub(super) fn drill(
        &self,
        name: &str,
        raw: RawDrill,
        timezone: &str,
    ) -> Result<DrillConfig, ConfigError> {
        let key = |k: &str| format!("job '{name}': drill.{k}");
        let schedule = match raw.schedule.as_deref().map(str::trim) {
            None | Some(super::MANUAL_SCHEDULE) => None,
            Some(text) => {
                Some(Schedule::parse(text, timezone).map_err(|e| self.err(key("schedule"), e.to_string()))?)
            }
        };
        for (i, check) in raw.checks.iter().enumerate() {
            if check.trim().is_empty() {
                return Err(self.err(
                    format!("{}[{i}]", key("checks")),
                    "is empty; write a query that returns one value",
                ));
            }
        }
        Ok(DrillConfig {
            schedule,
            checks: raw.checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(drill: &str) -> Result<Config, String> {
        let text = format!("[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\n[job.drill]\n{drill}\n");
        Config::parse(Path::new("/c.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn drills_parse_and_bad_ones_are_named() {
        let c = parse("schedule = \"@weekly\"\nchecks = [\"SELECT 1\"]").unwrap();
        assert_eq!(c.jobs[0].drill.checks, ["SELECT 1"]);
        assert!(c.jobs[0].drill.schedule.is_some());
        let err = parse("schedule = \"every tuesday\"").unwrap_err();
        assert!(err.contains("job 'app': drill.schedule"), "{err}");
        let err = parse("checks = [\"  \"]").unwrap_err();
        assert!(err.contains("drill.checks[0]"), "{err}");
        let err = parse("chekcs = []").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        let c = Config::parse(
            Path::new("/c.toml"),
            "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\n",
        )
        .unwrap();
        assert!(c.jobs[0].drill.schedule.is_none() && c.jobs[0].drill.checks.is_empty());
    }
}
