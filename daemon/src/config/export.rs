//! `[[job.export]]`: selective export profiles of a job.
//!
//! The profile's own rules (names, `:param`s, references, media globs) live with the
//! profile in [`crate::selective::profile`]; here they are applied at config load,
//! each error keyed by the job and the profile's place, and names must be unique
//! within a job. Only syntax is checked: the live schema is checked when an export
//! runs (and an import plans), since a missing database must not stop the daemon.

use super::{ConfigError, Validator};
use crate::selective::profile::{ExportProfile, RawExportProfile};

impl Validator<'_> {
    /// Validates a job's `[[job.export]]` profiles; `key` prefixes the job's keys.
    pub(super) fn exports(
        &self,
        key: &dyn Fn(&str) -> String,
        raw: &[RawExportProfile],
    ) -> Result<Vec<ExportProfile>, ConfigError> {
        let mut profiles: Vec<ExportProfile> = Vec::with_capacity(raw.len());
        for (i, raw) in raw.iter().enumerate() {
            let at = key(&format!("export[{i}]"));
            let profile = ExportProfile::from_raw(raw).map_err(|e| self.err(&at, e.to_string()))?;
            if profiles.iter().any(|p| p.name == profile.name) {
                return Err(self.err(at, format!("export profile {} is defined twice", profile.name)));
            }
            profiles.push(profile);
        }
        Ok(profiles)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const JOB: &str = "[[job]]\nname = \"app\"\ndatabase = \"/a.db\"\n";

    const SITE: &str = r#"
[[job.export]]
name = "site"
params = ["site"]
follow-foreign-keys = true
references = ["blocks.page_ref -> pages.id"]
[job.export.tables]
sites = "id = :site"
pages = "site_id = :site"
[job.export.media]
include = ["sites/{site}/**"]
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/coffer/cofferd.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn profiles_parse_into_the_job() {
        let c = parse(&format!("{JOB}{SITE}")).unwrap();
        let p = &c.jobs[0].exports[0];
        assert_eq!(p.name, "site");
        assert_eq!(p.tables.len(), 2);
        assert!(p.follow_foreign_keys);
        assert!(parse(JOB).unwrap().jobs[0].exports.is_empty());
    }

    #[test]
    fn errors_are_one_sentence_naming_job_profile_and_key() {
        let cases: &[(String, &str)] = &[
            (
                SITE.replace("follow-foreign-keys", "follow-foreign-key"),
                "unknown field `follow-foreign-key`",
            ),
            (
                SITE.replace("sites = \"id = :site\"", "sites = \"id = :sight\""),
                "job 'app': export[0]: export profile site: tables.sites uses parameter :sight, which params does not declare",
            ),
            (
                SITE.replace("{site}", "{user}"),
                "media.include glob \"sites/{user}/**\" is invalid: it uses {user}",
            ),
            (
                SITE.replace("page_ref -> pages.id", "page_ref => pages.id"),
                "references entry \"blocks.page_ref => pages.id\"",
            ),
            (
                format!("{SITE}{SITE}"),
                "job 'app': export[1]: export profile site is defined twice",
            ),
        ];
        for (profile, want) in cases {
            let err = parse(&format!("{JOB}{profile}")).unwrap_err();
            assert!(err.contains(want), "got {err:?}, want {want:?}");
            assert!(err.starts_with("config file /etc/coffer/cofferd.toml"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
