//! What cofferctl prints: aligned tables for people, one JSON document for scripts
//! (`--json`). JSON keys are kebab-case; times are RFC 3339 UTC or null.

use coffer_common::format::{bytes, duration, timestamp, whole_seconds};
use coffer_common::proto;
use serde::Serialize;
use serde_json::{Value, json};

/// RFC 3339 for a Unix time, null for 0.
fn time_json(unix: i64) -> Value {
    if unix == 0 {
        Value::Null
    } else {
        Value::String(timestamp(unix))
    }
}

/// Writes to stdout. A reader that went away (broken pipe) ends cofferctl quietly
/// with status 0 — it chose to stop reading; any other write error is reported and
/// ends it with status 1.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        output_failed(e);
    }
}

fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("cofferctl: cannot write the output: {e}");
    std::process::exit(1);
}

pub(crate) fn print_json(value: &impl Serialize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        output_failed(e);
    }
}

/// The JSON object of a backup: borrowed from the message and serialized directly,
/// so `list --json` over 10,000 backups builds no intermediate JSON tree.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupJson<'a> {
    id: &'a str,
    job: &'a str,
    created_at: Option<String>,
    size: u64,
    sha256: &'a str,
    protected: bool,
    note: &'a str,
    verified_at: Option<String>,
    verify_result: Option<&'a str>,
    path: &'a str,
    hostname: &'a str,
    coffer_version: &'a str,
    sqlite_version: &'a str,
    database: DatabaseJson<'a>,
    media_roots: &'a [String],
    totals: TotalsJson,
    duration_ms: u64,
    /// Media entries that could not be stored: how many, the first few with reasons.
    skipped_count: u64,
    skipped: Vec<SkippedJson<'a>>,
    /// Media entries left out by the job's `exclude` globs.
    excluded_count: u64,
    source: SourceJson<'a>,
    locations: Vec<crate::offsite::LocationJson<'a>>,
    /// `null` for a plain archive.
    encryption: Option<EncryptionJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct EncryptionJson<'a> {
    format: &'static str,
    recipients: &'a [String],
}

#[derive(Serialize)]
struct SkippedJson<'a> {
    path: &'a str,
    reason: &'a str,
}

/// What the database part was taken from (server facts only for server kinds).
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct SourceJson<'a> {
    kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    server_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    tool_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    database: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct DatabaseJson<'a> {
    path: &'a str,
    size: u64,
    page_size: u64,
    page_count: u64,
    journal_mode: &'a str,
    user_version: i64,
    application_id: i64,
    snapshot_method: &'a str,
}

#[derive(Serialize)]
struct TotalsJson {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
}

/// RFC 3339 for a Unix time, None (null) for 0.
fn time_opt(unix: i64) -> Option<String> {
    (unix != 0).then(|| timestamp(unix))
}

pub fn backup_json(b: &proto::Backup) -> BackupJson<'_> {
    BackupJson {
        id: &b.id,
        job: &b.job,
        created_at: time_opt(b.created_at),
        size: b.size,
        sha256: &b.sha256,
        protected: b.protected,
        note: &b.note,
        verified_at: time_opt(b.verified_at),
        verify_result: (!b.verify_result.is_empty()).then_some(b.verify_result.as_str()),
        path: &b.path,
        hostname: &b.hostname,
        coffer_version: &b.coffer_version,
        sqlite_version: &b.sqlite_version,
        database: DatabaseJson {
            path: &b.database_path,
            size: b.database_size,
            page_size: b.page_size,
            page_count: b.page_count,
            journal_mode: &b.journal_mode,
            user_version: b.user_version,
            application_id: b.application_id,
            snapshot_method: &b.snapshot_method,
        },
        media_roots: &b.media_roots,
        totals: TotalsJson {
            files: b.file_count,
            dirs: b.dir_count,
            symlinks: b.symlink_count,
            bytes: b.total_bytes,
        },
        duration_ms: b.duration_ms,
        skipped_count: b.skipped_count,
        skipped: b
            .skipped
            .iter()
            .map(|s| SkippedJson {
                path: &s.path,
                reason: &s.reason,
            })
            .collect(),
        excluded_count: b.excluded_count,
        locations: crate::offsite::locations_json(&b.locations),
        encryption: (!b.recipients.is_empty()).then_some(EncryptionJson {
            format: "age",
            recipients: &b.recipients,
        }),
        source: SourceJson {
            kind: &b.source_kind,
            server_version: &b.server_version,
            tool_version: &b.tool_version,
            database: &b.database_name,
            size: (!b.database_name.is_empty()).then_some(b.server_database_size),
        },
    }
}

/// A backup's source in one cell: `sqlite`, or `postgres shop (15.18 ...)`.
fn source_cell(kind: &str, database: &str, server_version: &str) -> String {
    let mut text = if kind.is_empty() {
        "sqlite".to_owned()
    } else {
        kind.to_owned()
    };
    if !database.is_empty() {
        text.push(' ');
        text.push_str(database);
    }
    if let Some(version) = server_version.split_whitespace().next() {
        text.push_str(&format!(" ({version})"));
    }
    text
}

/// The server kind's name for people.
fn server_name(kind: &str) -> &str {
    match kind {
        "postgres" => "PostgreSQL",
        "mariadb" => "MariaDB",
        other => other,
    }
}

/// "; 2 entries could not be stored: media/0/run.sock (socket), ..." or "".
fn skipped_text(b: &proto::Backup) -> String {
    let mut text = String::new();
    if b.skipped_count > 0 {
        let named: Vec<String> = b
            .skipped
            .iter()
            .map(|s| format!("{} ({})", s.path, s.reason))
            .collect();
        let more = b.skipped_count.saturating_sub(b.skipped.len() as u64);
        text = format!(
            "; {} media entr{} could not be stored: {}{}",
            b.skipped_count,
            if b.skipped_count == 1 { "y" } else { "ies" },
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    if b.excluded_count > 0 {
        text.push_str(&format!(
            "; {} excluded by the job's exclude globs",
            b.excluded_count
        ));
    }
    text
}

/// Prints rows as columns separated by two spaces, the first row a header.
pub(crate) fn table(rows: &[Vec<String>]) {
    let Some(width) = rows.iter().map(Vec::len).max() else {
        return;
    };
    let widths: Vec<usize> = (0..width)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        outln!("{}", line.trim_end());
    }
}

fn verification(b: &proto::Backup) -> String {
    match b.verify_result.as_str() {
        "" => "never".to_owned(),
        "ok" => format!("ok {}", timestamp(b.verified_at)),
        _ => format!("FAILED {}", timestamp(b.verified_at)),
    }
}

pub fn backups(list: &[proto::Backup], json: bool) {
    if json {
        print_json(&list.iter().map(backup_json).collect::<Vec<_>>());
        return;
    }
    if list.is_empty() {
        outln!("no backups");
        return;
    }
    let mut rows = vec![vec![
        "ID".into(),
        "CREATED".into(),
        "SIZE".into(),
        "PINNED".into(),
        "VERIFIED".into(),
        "SOURCE".into(),
        "OFFSITE".into(),
        "NOTE".into(),
    ]];
    for b in list {
        rows.push(vec![
            b.id.clone(),
            timestamp(b.created_at),
            bytes(b.size),
            if b.protected { "yes".into() } else { "-".into() },
            verification(b),
            source_cell(&b.source_kind, &b.database_name, &b.server_version),
            crate::offsite::locations_cell(&b.locations),
            b.note.clone(),
        ]);
    }
    table(&rows);
}

pub fn backup(b: &proto::Backup, json: bool) {
    if json {
        print_json(&backup_json(b));
        return;
    }
    let rows = [
        ("id", b.id.clone()),
        ("job", b.job.clone()),
        ("created", timestamp(b.created_at)),
        ("archive", format!("{} ({})", b.path, bytes(b.size))),
        ("sha256", b.sha256.clone()),
        ("protected", if b.protected { "yes".into() } else { "no".into() }),
        ("note", b.note.clone()),
        (
            "verified",
            if b.verify_result.is_empty() || b.verify_result == "ok" {
                verification(b)
            } else {
                format!("{}: {}", verification(b), b.verify_result)
            },
        ),
        ("database", database_text(b)),
        (
            "snapshot",
            if b.database_name.is_empty() {
                b.snapshot_method.clone()
            } else {
                b.tool_version.clone()
            },
        ),
        (
            "media",
            if b.media_roots.is_empty() {
                "-".into()
            } else {
                b.media_roots.join(", ")
            },
        ),
        (
            "contents",
            format!(
                "{} files, {} dirs, {} symlinks, {} uncompressed",
                b.file_count,
                b.dir_count,
                b.symlink_count,
                bytes(b.total_bytes)
            ),
        ),
        ("took", duration(std::time::Duration::from_millis(b.duration_ms))),
        (
            "left out",
            match skipped_text(b) {
                t if t.is_empty() => "nothing".into(),
                t => t.trim_start_matches("; ").replace("; ", "\n           "),
            },
        ),
        (
            "made by",
            if b.database_name.is_empty() {
                format!(
                    "coffer {} on {}, SQLite {}",
                    b.coffer_version, b.hostname, b.sqlite_version
                )
            } else {
                format!("coffer {} on {}", b.coffer_version, b.hostname)
            },
        ),
        (
            "encrypted",
            if b.recipients.is_empty() {
                "no".into()
            } else {
                format!("age, to {}", b.recipients.join(", "))
            },
        ),
    ];
    for (key, value) in rows {
        outln!("{:<10} {value}", format!("{key}:"));
    }
    for (key, value) in crate::offsite::locations_lines(&b.locations) {
        outln!("{:<10} {value}", format!("{key}:"));
    }
}

/// The `database:` line of `show`: the SQLite file's facts, or the server's.
fn database_text(b: &proto::Backup) -> String {
    if b.database_name.is_empty() {
        return format!(
            "{} ({}, {} pages of {} B, journal {}, user_version {})",
            b.database_path,
            bytes(b.database_size),
            b.page_count,
            b.page_size,
            b.journal_mode,
            b.user_version
        );
    }
    format!(
        "{} on {} {} ({} on the server; {} as {})",
        b.database_name,
        server_name(&b.source_kind),
        b.server_version,
        bytes(b.server_database_size),
        bytes(b.database_size),
        b.database_path
    )
}

pub fn created(b: &proto::Backup, json: bool) {
    if json {
        print_json(&backup_json(b));
    } else {
        outln!(
            "backup {} created: {} ({} files, {} uncompressed) in {}{}",
            b.id,
            bytes(b.size),
            b.file_count,
            bytes(b.total_bytes),
            duration(std::time::Duration::from_millis(b.duration_ms)),
            skipped_text(b)
        );
    }
}

pub fn deleted(id: &str, json: bool) {
    if json {
        print_json(&json!({ "deleted": id }));
    } else {
        outln!("backup {id} deleted");
    }
}

pub fn verified(v: &proto::VerifyResult, json: bool) {
    if json {
        print_json(&json!({
            "id": v.id, "ok": v.ok, "entries": v.entries, "deep": v.deep, "error": v.error,
            "ciphertext-only": v.ciphertext_only,
            "store": (!v.store.is_empty()).then_some(&v.store),
        }));
    } else if v.ciphertext_only {
        outln!(
            "backup {} verified: the encrypted archive's size and sha256 match its sidecar (no identity-file to check its {} entries)",
            v.id,
            v.entries
        );
    } else {
        let depth = if v.deep {
            ", database integrity checked"
        } else {
            ""
        };
        let place = if v.store.is_empty() {
            String::new()
        } else {
            format!(" (the copy in {})", v.store)
        };
        outln!(
            "backup {}{place} verified: {} entries match the manifest{depth}",
            v.id,
            v.entries
        );
    }
}

fn run_text(run: Option<&proto::RunSummary>) -> String {
    match run {
        None => "never".into(),
        Some(r) => {
            let took = (r.finished_at - r.started_at).max(0) as u64;
            let mut text = format!(
                "{} {} ({})",
                r.status().short_name(),
                timestamp(r.started_at),
                whole_seconds(took)
            );
            if !r.error.is_empty() {
                text.push_str(": ");
                text.push_str(&r.error);
            }
            text
        }
    }
}

pub fn status(s: &proto::GetStatusResponse, json: bool) {
    if json {
        let jobs: Vec<Value> = s
            .jobs
            .iter()
            .map(|j| {
                json!({
                    "name": j.name,
                    "running": j.running,
                    "last-run": j.last_run.as_ref().map(|r| json!({
                        "status": r.status().short_name(),
                        "started-at": time_json(r.started_at),
                        "finished-at": time_json(r.finished_at),
                        "error": r.error,
                        "backup-id": r.backup_id,
                    })),
                    "next-run-at": time_json(j.next_run_at),
                    "backup-count": j.backup_count,
                    "backup-bytes": j.backup_bytes,
                    "last-success-at": time_json(j.last_success_at),
                    "problem": if j.problem.is_empty() { Value::Null } else { Value::String(j.problem.clone()) },
                    "warnings": j.warnings,
                    "last-drill": j.last_drill.as_ref().map(|r| json!({
                        "status": r.status().short_name(),
                        "started-at": time_json(r.started_at),
                        "finished-at": time_json(r.finished_at),
                        "error": r.error,
                        "backup-id": r.backup_id,
                    })),
                    "source-kind": j.source_kind,
                    "database-name": if j.database_name.is_empty() { Value::Null } else { Value::String(j.database_name.clone()) },
                    "server-version": if j.server_version.is_empty() { Value::Null } else { Value::String(j.server_version.clone()) },
                })
            })
            .collect();
        print_json(&json!({
            "version": s.version,
            "uptime-seconds": s.uptime_seconds,
            "started-at": time_json(s.started_at),
            "backup-dir": s.backup_dir,
            "backup-dir-free-bytes": s.backup_dir_free_bytes,
            "state-dir": s.state_dir,
            "jobs": jobs,
            "stores": crate::offsite::status_stores_json(&s.stores),
        }));
        return;
    }
    outln!("cofferd {} up {}", s.version, whole_seconds(s.uptime_seconds));
    outln!(
        "backup dir {} ({} free)",
        s.backup_dir,
        bytes(s.backup_dir_free_bytes)
    );
    let mut rows = vec![vec![
        "JOB".into(),
        "SOURCE".into(),
        "BACKUPS".into(),
        "SIZE".into(),
        "LAST RUN".into(),
        "NEXT RUN".into(),
        "LAST DRILL".into(),
    ]];
    for j in &s.jobs {
        let mut last = if j.running {
            "running".to_owned()
        } else {
            run_text(j.last_run.as_ref())
        };
        if !j.problem.is_empty() {
            last = format!("{last} [problem: {}]", j.problem);
        }
        rows.push(vec![
            j.name.clone(),
            source_cell(&j.source_kind, &j.database_name, &j.server_version),
            j.backup_count.to_string(),
            bytes(j.backup_bytes),
            last,
            timestamp(j.next_run_at),
            run_text(j.last_drill.as_ref()),
        ]);
    }
    table(&rows);
    for j in &s.jobs {
        for warning in &j.warnings {
            outln!("warning: {}: {warning}", j.name);
        }
    }
    crate::offsite::status_stores(&s.stores);
}

pub fn jobs(jobs: &[proto::Job], json: bool) {
    if json {
        let list: Vec<Value> = jobs
            .iter()
            .map(|j| {
                json!({
                    "name": j.name,
                    "source-kind": j.source_kind,
                    "database": j.database,
                    "media": j.media,
                    "schedule": j.schedule,
                    "timezone": j.timezone,
                    "compression-level": j.compression_level,
                    "verify-after-backup": j.verify_after_backup,
                    "min-free-space": j.min_free_space,
                    "stale-after-seconds": j.stale_after_seconds,
                    "catch-up": j.catch_up,
                    "next-run-at": time_json(j.next_run_at),
                    "retention": j.retention,
                    "drill": {"schedule": j.drill_schedule, "checks": j.drill_checks},
                    "exclude": j.exclude,
                })
            })
            .collect();
        print_json(&list);
        return;
    }
    let mut rows = vec![vec![
        "JOB".into(),
        "SOURCE".into(),
        "MEDIA".into(),
        "SCHEDULE".into(),
        "NEXT RUN".into(),
        "RETENTION".into(),
    ]];
    for j in jobs {
        rows.push(vec![
            j.name.clone(),
            format!(
                "{} {}",
                if j.source_kind.is_empty() {
                    "sqlite"
                } else {
                    &j.source_kind
                },
                j.database
            ),
            if j.media.is_empty() {
                "-".into()
            } else {
                j.media.join(",")
            },
            format!("{} ({})", j.schedule, j.timezone),
            timestamp(j.next_run_at),
            j.retention.clone(),
        ]);
    }
    table(&rows);
}

pub fn drilled(d: &proto::DrillResult, json: bool) {
    if json {
        let checks: Vec<Value> = d
            .checks
            .iter()
            .map(|c| json!({"query": c.query, "value": c.value}))
            .collect();
        print_json(&json!({
            "job": d.job,
            "backup-id": d.backup_id,
            "checks": checks,
            "duration-ms": d.duration_ms,
        }));
        return;
    }
    outln!(
        "restore drill of {} passed: backup {} restored, verified and checked in {}",
        d.job,
        d.backup_id,
        duration(std::time::Duration::from_millis(d.duration_ms))
    );
    for c in &d.checks {
        outln!("  ok  {} -> {}", c.query, c.value);
    }
}

pub fn pinned(b: &proto::Backup, json: bool) {
    if json {
        print_json(&backup_json(b));
    } else if b.protected {
        outln!("backup {} is pinned: retention and delete will keep it", b.id);
    } else {
        outln!("backup {} is no longer pinned", b.id);
    }
}

pub fn pruned(decisions: &[proto::PruneDecision], dry_run: bool, json: bool) {
    if json {
        let list: Vec<Value> = decisions
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "job": d.job,
                    "created-at": time_json(d.created_at),
                    "keep": d.keep,
                    "reasons": d.reasons,
                    "removed": d.removed,
                    "location": d.location,
                })
            })
            .collect();
        print_json(&json!({ "dry-run": dry_run, "decisions": list }));
        return;
    }
    if decisions.is_empty() {
        outln!("no backups");
        return;
    }
    let mut rows = vec![vec![
        "ID".into(),
        "LOCATION".into(),
        "CREATED".into(),
        "ACTION".into(),
        "REASONS".into(),
    ]];
    for d in decisions {
        let action = match (d.keep, d.removed, dry_run) {
            (true, _, _) => "keep",
            (false, true, _) => "removed",
            (false, false, true) => "would remove",
            (false, false, false) => "remove failed",
        };
        rows.push(vec![
            d.id.clone(),
            d.location.clone(),
            timestamp(d.created_at),
            action.into(),
            d.reasons.join(", "),
        ]);
    }
    table(&rows);
    let removable = decisions.iter().filter(|d| !d.keep).count();
    if dry_run {
        outln!("dry run: {removable} backup(s) would be removed, nothing was changed");
    } else {
        outln!(
            "{} backup(s) removed",
            decisions.iter().filter(|d| d.removed).count()
        );
    }
}

pub fn restored(r: &proto::RestoreResult, json: bool) {
    if json {
        print_json(&json!({
            "id": r.id,
            "safety-backup-id": if r.safety_backup_id.is_empty() { Value::Null } else { Value::String(r.safety_backup_id.clone()) },
            "database-path": r.database_path,
            "database-name": if r.database_name.is_empty() { Value::Null } else { Value::String(r.database_name.clone()) },
            "media-paths": r.media_paths,
        }));
        return;
    }
    outln!("backup {} restored", r.id);
    if !r.database_path.is_empty() {
        outln!("database: {}", r.database_path);
    }
    if !r.database_name.is_empty() {
        outln!("database: {} (on the job's server)", r.database_name);
    }
    for path in &r.media_paths {
        outln!("media:    {path}");
    }
    if !r.safety_backup_id.is_empty() {
        outln!(
            "the previous state is kept as pinned backup {}",
            r.safety_backup_id
        );
    }
}

pub fn downloaded(d: &crate::transfer::Downloaded, file: &std::path::Path, json: bool) {
    if json {
        print_json(
            &json!({ "id": d.id, "file": file.display().to_string(), "size": d.size, "sha256": d.sha256 }),
        );
    } else {
        outln!(
            "backup {} downloaded to {} ({}, sha256 {} checked)",
            d.id,
            file.display(),
            bytes(d.size),
            d.sha256
        );
    }
}

pub fn audit(entries: &[proto::AuditEntry], json: bool) {
    if json {
        let list: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "at": time_json(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "result": e.result,
                    "error": if e.error.is_empty() { Value::Null } else { Value::String(e.error.clone()) },
                })
            })
            .collect();
        print_json(&list);
        return;
    }
    if entries.is_empty() {
        outln!("no audit entries");
        return;
    }
    let mut rows = vec![vec![
        "TIME".into(),
        "ACTOR".into(),
        "ACTION".into(),
        "TARGET".into(),
        "RESULT".into(),
    ]];
    for e in entries {
        let result = if e.error.is_empty() {
            e.result.clone()
        } else {
            format!("{}: {}", e.result, e.error)
        };
        rows.push(vec![
            timestamp(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            result,
        ]);
    }
    table(&rows);
}

pub fn rekeyed(b: &proto::Backup, json: bool) {
    if json {
        print_json(&backup_json(b));
    } else {
        outln!(
            "backup {} is encrypted to: {} ({}, sha256 {})",
            b.id,
            b.recipients.join(", "),
            bytes(b.size),
            b.sha256
        );
    }
}
