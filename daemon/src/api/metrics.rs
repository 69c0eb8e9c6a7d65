//! The Prometheus text exposition served by `GetMetrics` (`cofferctl metrics`),
//! including the offsite families (`coffer_offsite_*`).
//!
//! Everything is computed on request from the catalog and the engine's counters, so
//! an idle daemon does no metrics work. Format: text exposition 0.0.4 — `# HELP` and
//! `# TYPE` once per family, label values escaped.

use std::fmt::Write;

use crate::engine::Engine;
use crate::error::Error;
use crate::run::RunKind;

/// Escapes a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Renders all metrics.
pub fn render(engine: &Engine) -> Result<String, Error> {
    let config = engine.config();
    let mut out = String::new();

    Family::new(&mut out, "coffer_up", "gauge", "Whether cofferd is running.").sample("coffer_up", &[], 1);
    Family::new(&mut out, "coffer_build_info", "gauge", "Build information.").sample(
        "coffer_build_info",
        &[
            ("version", coffer_common::VERSION),
            ("sqlite_version", crate::source::sqlite::sqlite_version()),
        ],
        1,
    );

    job_families(engine, &mut out)?;
    drill_and_skip_families(engine, &mut out)?;
    let counters = engine.counters();
    let (removed, verify_failures) = (counters.retention_removed, counters.verify_failures);
    for (name, help, counts) in [
        (
            "coffer_retention_removed_total",
            "Backups removed by retention since cofferd started.",
            &removed,
        ),
        (
            "coffer_verify_failures_total",
            "Failed verifications since cofferd started.",
            &verify_failures,
        ),
    ] {
        let mut f = Family::new(&mut out, name, "counter", help);
        for job in &config.jobs {
            f.sample(
                name,
                &[("job", &job.name)],
                counts.get(&job.name).copied().unwrap_or(0),
            );
        }
    }
    offsite_families(engine, &mut out)?;
    let free = engine.store().free_space().unwrap_or(0);
    Family::new(
        &mut out,
        "coffer_backup_dir_free_bytes",
        "gauge",
        "Free bytes on the backup directory's filesystem.",
    )
    .sample("coffer_backup_dir_free_bytes", &[], free);
    Ok(out)
}

/// The per-job families from the catalog: counts, bytes, newest backup, the last
/// successful run's duration and size, and finished runs by kind and result.
fn job_families(engine: &Engine, out: &mut String) -> Result<(), Error> {
    let config = engine.config();
    let catalog = engine.catalog();
    let mut stats = Vec::new();
    for job in &config.jobs {
        let s = engine.job_stats(&job.name)?;
        let last = catalog.last_successful_run(&job.name, RunKind::Backup)?;
        stats.push((job.name.as_str(), s, last));
    }
    let mut f = Family::new(
        out,
        "coffer_job_source_info",
        "gauge",
        "What each job backs up: source kind, database name and the server version its newest backup saw.",
    );
    for job in &config.jobs {
        let newest = catalog.latest(Some(&job.name))?;
        let server_version = newest
            .as_ref()
            .and_then(|b| b.summary.source.dump().map(|d| d.server_version.clone()))
            .unwrap_or_default();
        f.sample(
            "coffer_job_source_info",
            &[
                ("job", &job.name),
                ("kind", job.source.kind()),
                ("database", job.source.database_name().unwrap_or_default()),
                ("server_version", &server_version),
            ],
            1,
        );
    }
    let mut f = Family::new(out, "coffer_backups", "gauge", "Catalogued backups per job.");
    for (job, s, _) in &stats {
        f.sample("coffer_backups", &[("job", job)], s.count);
    }
    let mut f = Family::new(
        out,
        "coffer_backup_bytes",
        "gauge",
        "Bytes of all archives per job.",
    );
    for (job, s, _) in &stats {
        f.sample("coffer_backup_bytes", &[("job", job)], s.bytes);
    }
    let mut f = Family::new(
        out,
        "coffer_backup_last_success_timestamp_seconds",
        "gauge",
        "Creation time of the newest backup per job (0 if none).",
    );
    for (job, s, _) in &stats {
        f.sample(
            "coffer_backup_last_success_timestamp_seconds",
            &[("job", job)],
            s.newest_at,
        );
    }
    let mut f = Family::new(
        out,
        "coffer_backup_last_duration_seconds",
        "gauge",
        "Duration of the last successful backup run per job.",
    );
    for (job, _, last) in &stats {
        let seconds = last.as_ref().map_or(0, |r| (r.finished_at - r.started_at).max(0));
        f.sample("coffer_backup_last_duration_seconds", &[("job", job)], seconds);
    }
    let mut f = Family::new(
        out,
        "coffer_backup_last_size_bytes",
        "gauge",
        "Archive size of the last successful backup run per job.",
    );
    for (job, _, last) in &stats {
        f.sample(
            "coffer_backup_last_size_bytes",
            &[("job", job)],
            last.as_ref().map_or(0, |r| r.bytes),
        );
    }
    let mut f = Family::new(
        out,
        "coffer_runs_total",
        "counter",
        "Finished runs by job, kind and result.",
    );
    for (job, kind, status, n) in catalog.run_counts()? {
        f.sample(
            "coffer_runs_total",
            &[("job", &job), ("kind", &kind), ("result", &status)],
            n,
        );
    }
    Ok(())
}

/// Restore drills (newest success, failures) and the entries the newest backup could
/// not store, per job. Drill failures are counted from the catalog's runs, so the
/// counter survives restarts.
fn drill_and_skip_families(engine: &Engine, out: &mut String) -> Result<(), Error> {
    let config = engine.config();
    let catalog = engine.catalog();
    let counts = catalog.run_counts()?;
    let mut f = Family::new(
        out,
        "coffer_drill_last_success_timestamp_seconds",
        "gauge",
        "End of the newest successful restore drill per job (0 if none).",
    );
    for job in &config.jobs {
        let last = catalog.last_successful_run(&job.name, RunKind::Drill)?;
        f.sample(
            "coffer_drill_last_success_timestamp_seconds",
            &[("job", &job.name)],
            last.map_or(0, |r| r.finished_at),
        );
    }
    let mut f = Family::new(
        out,
        "coffer_drill_failures_total",
        "counter",
        "Failed restore drills per job.",
    );
    for job in &config.jobs {
        let failed = counts
            .iter()
            .filter(|(j, kind, status, _)| j == &job.name && kind == "drill" && status == "failed")
            .map(|(_, _, _, n)| n)
            .sum::<u64>();
        f.sample("coffer_drill_failures_total", &[("job", &job.name)], failed);
    }
    let mut f = Family::new(
        out,
        "coffer_backup_skipped_entries",
        "gauge",
        "Media entries the newest backup could not store (sockets, fifos, devices) per job.",
    );
    for job in &config.jobs {
        let skipped = catalog
            .latest(Some(&job.name))?
            .map_or(0, |r| r.summary.totals.skipped);
        f.sample("coffer_backup_skipped_entries", &[("job", &job.name)], skipped);
    }
    Ok(())
}

/// The offsite families: per job and store the lag, copy failures, bytes copied and
/// copies removed by retention; per store whether it worked the last time and the
/// queued copies.
fn offsite_families(engine: &Engine, out: &mut String) -> Result<(), Error> {
    let config = engine.config();
    let offsite = engine.offsite();
    let now = chrono::Utc::now().timestamp();
    let pairs: Vec<(&str, &str)> = config
        .jobs
        .iter()
        .flat_map(|j| j.offsite_stores().iter().map(|s| (j.name.as_str(), s.as_str())))
        .collect();
    let cancel = tokio_util::sync::CancellationToken::new();
    let lags = engine.with_ctx(&cancel, |ctx| {
        pairs
            .iter()
            .map(|(job, store)| crate::ops::offsite::lag(ctx, job, store, now))
            .collect::<Result<Vec<i64>, Error>>()
    })?;
    let mut f = Family::new(
        out,
        "coffer_offsite_lag_seconds",
        "gauge",
        "How long a store has been behind with a job: age of the oldest local backup newer than its newest copy there (0 = up to date).",
    );
    for ((job, store), lag) in pairs.iter().zip(&lags) {
        f.sample(
            "coffer_offsite_lag_seconds",
            &[("job", job), ("store", store)],
            lag,
        );
    }
    let counters = engine.counters();
    for (name, help, counts) in [
        (
            "coffer_offsite_copy_failures_total",
            "Failed copy attempts to offsite stores since cofferd started.",
            &counters.copy_failures,
        ),
        (
            "coffer_offsite_copied_bytes_total",
            "Archive bytes copied to offsite stores since cofferd started.",
            &counters.copied_bytes,
        ),
        (
            "coffer_offsite_removed_total",
            "Copies deleted from offsite stores by retention since cofferd started.",
            &counters.remote_removed,
        ),
    ] {
        let mut f = Family::new(out, name, "counter", help);
        for (job, store) in &pairs {
            let n = counts
                .get(&((*job).to_owned(), (*store).to_owned()))
                .copied()
                .unwrap_or(0);
            f.sample(name, &[("job", job), ("store", store)], n);
        }
    }
    let mut f = Family::new(
        out,
        "coffer_offsite_store_up",
        "gauge",
        "Whether the last request to the store worked (1), failed (0); -1 before any.",
    );
    for slot in offsite.iter() {
        let up = match (slot.backend().is_ok(), slot.health().ok) {
            (false, _) | (true, Some(false)) => 0,
            (true, Some(true)) => 1,
            (true, None) => -1,
        };
        f.sample("coffer_offsite_store_up", &[("store", &slot.config.name)], up);
    }
    let mut f = Family::new(
        out,
        "coffer_offsite_queued_copies",
        "gauge",
        "Copies waiting to be made (or retried) per store.",
    );
    for slot in offsite.iter() {
        let name = slot.config.name.as_str();
        let queued = engine
            .catalog()
            .locations_in(name, None)?
            .iter()
            .filter(|l| {
                matches!(
                    l.state,
                    crate::catalog::LocationState::Pending | crate::catalog::LocationState::Failed
                )
            })
            .count();
        f.sample("coffer_offsite_queued_copies", &[("store", name)], queued);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_escaping() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }
}
