//! `export` and `import`: selective export files in and out.
//!
//! Export follows the daemon's progress, then writes the file it streams to
//! `FILE.partial`, checks its size and sha256 against what the daemon announced,
//! fsyncs it and renames it to FILE (an existing FILE only with `--force`). Import
//! streams FILE in 1 MiB chunks (the first also carrying job, policy and dry run),
//! follows the progress, and prints the daemon's report: as a table for people, or
//! with `--json` the report itself plus `dry-run` and `safety-backup-id`.

use std::path::{Path, PathBuf};

use coffer_common::format::bytes;
use coffer_common::proto::{self, export_chunk::Chunk, import_event::Event as ImportReply};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::output::{print_json, table};
use crate::progress::View;
use crate::transfer::confirm;
use crate::{Client, Failure, Result};

const CHUNK: usize = 1 << 20;

/// The largest import report accepted.
const MAX_REPORT: usize = 1 << 30;

fn failed(message: String) -> Failure {
    Failure { code: 1, message }
}

/// Parses `--param NAME=VALUE` arguments.
fn parse_params(params: &[String]) -> Result<Vec<proto::ExportParam>> {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok(proto::ExportParam {
                name: name.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(Failure::usage(format!(
                "--param {p:?} is not of the form NAME=VALUE"
            ))),
        })
        .collect()
}

/// `export JOB PROFILE --param k=v ... -o FILE`.
pub async fn export(
    c: &mut Client,
    request: (String, String, Vec<String>),
    file: &Path,
    force: bool,
    json: bool,
) -> Result<()> {
    let (job, profile, params) = request;
    if file.exists() && !force {
        return Err(Failure::usage(format!(
            "{} exists; add --force to overwrite it",
            file.display()
        )));
    }
    let request = proto::ExportRequest {
        job: job.clone(),
        profile: profile.clone(),
        params: parse_params(&params)?,
    };
    let mut partial_name = file.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = PathBuf::from(partial_name);
    let what = format!("exporting {profile} of {job}");
    let received = receive(c, request, &partial, &what).await;
    let result = match received {
        Ok(result) => commit(&partial, file).await.map(|()| result),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    exported(&result?, file, json);
    Ok(())
}

/// Renames the checked `partial` to `file` and syncs the directory.
async fn commit(partial: &Path, file: &Path) -> Result<()> {
    tokio::fs::rename(partial, file).await.map_err(|e| {
        failed(format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            file.display()
        ))
    })?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// Follows the export's progress, then writes its bytes to `partial` and checks
/// them against the announced size and sha256.
async fn receive(
    c: &mut Client,
    request: proto::ExportRequest,
    partial: &Path,
    what: &str,
) -> Result<proto::ExportResult> {
    let mut stream = c.export(request).await?.into_inner();
    let mut view = Some(View::new(what));
    let mut out = None;
    let mut announced: Option<proto::ExportResult> = None;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let write_err = |e: std::io::Error| failed(format!("cannot write {}: {e}", partial.display()));
    while let Some(message) = stream.message().await? {
        match message.chunk {
            Some(Chunk::Progress(p)) => {
                if let Some(v) = view.as_mut() {
                    v.show(&p);
                }
            }
            Some(Chunk::Result(r)) => {
                if let Some(v) = view.take() {
                    v.finish();
                }
                out = Some(tokio::fs::File::create(partial).await.map_err(write_err)?);
                announced = Some(r);
            }
            Some(Chunk::Data(data)) => {
                let file = out
                    .as_mut()
                    .ok_or_else(|| failed("the daemon sent data before its result".into()))?;
                hasher.update(&data);
                got += data.len() as u64;
                file.write_all(&data).await.map_err(write_err)?;
            }
            None => {}
        }
    }
    if let Some(v) = view.take() {
        v.finish();
    }
    let (Some(file), Some(announced)) = (out, announced) else {
        return Err(failed("the daemon ended the export without a result".into()));
    };
    file.sync_all().await.map_err(write_err)?;
    let sha256: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != announced.size || sha256 != announced.sha256 {
        return Err(failed(format!(
            "the export file is damaged in transfer ({got} bytes with sha256 {sha256}, expected {} bytes with sha256 {})",
            announced.size, announced.sha256
        )));
    }
    Ok(announced)
}

fn exported(r: &proto::ExportResult, file: &Path, json: bool) {
    let params: serde_json::Map<String, Value> = r
        .params
        .iter()
        .map(|p| (p.name.clone(), Value::String(p.value.clone())))
        .collect();
    let sorted = |m: &std::collections::HashMap<String, u64>| -> std::collections::BTreeMap<String, u64> {
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    };
    if json {
        print_json(&json!({
            "id": r.id,
            "job": r.job,
            "profile": r.profile,
            "params": params,
            "rows": sorted(&r.rows),
            "followed": sorted(&r.followed),
            "dangling-references": r.dangling_references,
            "media-files": r.media_files,
            "media-bytes": r.media_bytes,
            "media-skipped": r.media_skipped,
            "file": file.display().to_string(),
            "size": r.size,
            "sha256": r.sha256,
        }));
        return;
    }
    let params: Vec<String> = r
        .params
        .iter()
        .map(|p| format!("{}={}", p.name, p.value))
        .collect();
    outln!(
        "exported profile {} of job {} ({}) to {} ({}, sha256 {} checked)",
        r.profile,
        r.job,
        params.join(", "),
        file.display(),
        bytes(r.size),
        r.sha256
    );
    let mut rows = vec![vec!["TABLE".to_owned(), "ROWS".to_owned(), "FOLLOWED".to_owned()]];
    for (table, n) in sorted(&r.rows) {
        let followed = r.followed.get(&table).copied().unwrap_or(0);
        rows.push(vec![table, n.to_string(), followed.to_string()]);
    }
    table(&rows);
    outln!(
        "media: {} files ({}), {} left out",
        r.media_files,
        bytes(r.media_bytes),
        r.media_skipped
    );
    if r.dangling_references > 0 {
        outln!(
            "{} references point at rows the database does not have (left as they are)",
            r.dangling_references
        );
    }
}

/// The options of `import`.
pub struct ImportOptions {
    pub job: String,
    pub on_conflict: String,
    pub dry_run: bool,
    pub yes: bool,
}

/// `import FILE --job JOB --on-conflict POLICY [--dry-run] [--yes]`.
pub async fn import(c: &mut Client, file: &Path, options: ImportOptions, json: bool) -> Result<()> {
    if !options.dry_run
        && !options.yes
        && !confirm(&format!(
            "import {} into the live data of job {}?",
            file.display(),
            options.job
        ))?
    {
        return Err(Failure::usage(
            "an import changes the live data of the job (after a safety backup); add --yes to confirm, or see what it would do with --dry-run",
        ));
    }
    let mut input = tokio::fs::File::open(file)
        .await
        .map_err(|e| Failure::usage(format!("cannot open {}: {e}", file.display())))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::ImportChunk>(4);
    let name = file.display().to_string();
    let mut first = Some(proto::ImportChunk {
        data: Vec::new(),
        job: options.job.clone(),
        on_conflict: options.on_conflict.clone(),
        dry_run: options.dry_run,
    });
    let reader = tokio::spawn(async move {
        loop {
            let mut data = vec![0u8; CHUNK];
            let n = match input.read(&mut data).await {
                Ok(n) => n,
                Err(e) => return Err(failed(format!("cannot read {name}: {e}"))),
            };
            if n == 0 && first.is_none() {
                return Ok(());
            }
            data.truncate(n);
            // The first message carries the options (even for an empty file).
            let mut chunk = first.take().unwrap_or_default();
            chunk.data = data;
            if tx.send(chunk).await.is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    let what = format!("importing {}", file.display());
    // The report lists every conflicting row: past gRPC's default 4 MiB for large
    // imports.
    let mut c = c.clone().max_decoding_message_size(MAX_REPORT);
    let response = c.import(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let result = match response {
        Ok(stream) => follow(stream.into_inner(), &what).await,
        Err(status) => Err(Failure::from(status)),
    };
    let read = reader
        .await
        .map_err(|e| failed(format!("the import's reading task failed: {e}")))?;
    let result = result?;
    read?;
    imported(&result, &options.job, json)
}

/// Follows an import's progress to its result.
async fn follow(
    mut stream: coffer_common::tonic::Streaming<proto::ImportEvent>,
    what: &str,
) -> Result<proto::ImportResult> {
    let mut view = View::new(what);
    let result = loop {
        match stream.message().await {
            Ok(Some(proto::ImportEvent {
                event: Some(ImportReply::Progress(p)),
            })) => view.show(&p),
            Ok(Some(proto::ImportEvent {
                event: Some(ImportReply::Result(r)),
            })) => break Ok(r),
            Ok(Some(_)) => {}
            Ok(None) => break Err(failed("the daemon ended the import without a result".into())),
            Err(status) => break Err(Failure::from(status)),
        }
    };
    view.finish();
    result
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn imported(r: &proto::ImportResult, job: &str, json: bool) -> Result<()> {
    let mut report: Value = serde_json::from_str(&r.report_json)
        .map_err(|e| failed(format!("the daemon sent a report that is not JSON: {e}")))?;
    if json {
        if let Some(map) = report.as_object_mut() {
            map.insert("dry-run".into(), Value::Bool(r.dry_run));
            let safety = match r.safety_backup_id.as_str() {
                "" => Value::Null,
                id => Value::String(id.to_owned()),
            };
            map.insert("safety-backup-id".into(), safety);
        }
        print_json(&report);
        return Ok(());
    }
    let params: Vec<String> = report["params"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if r.dry_run {
        outln!("dry run: nothing was changed; this is what the import would do");
    } else {
        outln!(
            "imported into job {job}; the previous state is kept as pinned backup {}",
            r.safety_backup_id
        );
    }
    outln!(
        "export profile {} ({}), --on-conflict {}",
        report["profile"].as_str().unwrap_or_default(),
        params.join(", "),
        report["policy"].as_str().unwrap_or_default()
    );
    report_tables(&report);
    Ok(())
}

/// The report's tables, media and details as text.
fn report_tables(report: &Value) {
    let mut rows = vec![
        [
            "TABLE",
            "ROWS",
            "NEW",
            "IDENTICAL",
            "CONFLICTING",
            "INSERTED",
            "OVERWRITTEN",
            "RENAMED",
            "SKIPPED",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let keys = [
        "rows",
        "new",
        "identical",
        "conflicting",
        "inserted",
        "overwritten",
        "renamed",
        "skipped",
    ];
    let tables = report["tables"].as_array().cloned().unwrap_or_default();
    for t in &tables {
        let mut row = vec![t["table"].as_str().unwrap_or_default().to_owned()];
        row.extend(keys.iter().map(|k| count(t, k).to_string()));
        rows.push(row);
    }
    let m = &report["media"];
    let mut media = vec!["(media files)".to_owned(), count(m, "files").to_string()];
    media.extend(
        ["new", "identical", "conflicting"]
            .iter()
            .map(|k| count(m, k).to_string()),
    );
    media.extend(
        ["written", "overwritten", "renamed", "skipped"]
            .iter()
            .map(|k| count(m, k).to_string()),
    );
    rows.push(media);
    table(&rows);
    for t in &tables {
        for d in t["details"].as_array().into_iter().flatten() {
            outln!(
                "  {} {}: {}",
                t["table"].as_str().unwrap_or_default(),
                key_text(&d["key"]),
                action_text(d)
            );
        }
    }
    for d in m["details"].as_array().into_iter().flatten() {
        let what = match d["action"].as_str().unwrap_or_default() {
            "write" => format!("written as {}", d["dest"].as_str().unwrap_or_default()),
            "skip" => format!("skipped ({})", d["reason"].as_str().unwrap_or_default()),
            other => other.to_owned(),
        };
        outln!(
            "  media/{}/{}: {what}",
            d["root"],
            d["rel"].as_str().unwrap_or_default()
        );
    }
    for b in report["blocked"].as_array().into_iter().flatten() {
        outln!("  blocked: {}", b.as_str().unwrap_or_default());
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".to_owned(),
        other => other.to_string(),
    }
}

fn key_text(key: &Value) -> String {
    key.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", value_text(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn action_text(d: &Value) -> String {
    match d["action"].as_str().unwrap_or_default() {
        "skip" => format!("skipped ({})", d["reason"].as_str().unwrap_or_default()),
        "overwrite" => format!("overwrites the row {}", key_text(&d["target-key"])),
        "rename" => {
            let changes: Vec<String> = d["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{} {} -> {}",
                        c["column"].as_str().unwrap_or_default(),
                        value_text(&c["from"]),
                        value_text(&c["to"])
                    )
                })
                .collect();
            format!("renamed: {}", changes.join(", "))
        }
        "blocked" => format!("blocked ({})", d["reason"].as_str().unwrap_or_default()),
        other => other.to_owned(),
    }
}
