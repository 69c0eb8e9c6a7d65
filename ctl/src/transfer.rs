//! Moving archives between the daemon and local files, and asking for confirmation.
//!
//! Download writes `FILE.partial`, checks size and sha256 against what the daemon
//! announced in the first chunk, then renames it to FILE; an existing FILE is never
//! overwritten without `--force`. Upload streams FILE in 1 MiB chunks; the daemon
//! verifies it fully before cataloguing it.

use std::io::{IsTerminal, Write};
use std::path::Path;

use coffer_common::proto;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Client, Failure, Result};

const CHUNK: usize = 1 << 20;

/// What a download received.
pub struct Downloaded {
    pub id: String,
    pub size: u64,
    pub sha256: String,
}

fn failed(message: String) -> Failure {
    Failure { code: 1, message }
}

fn bar(total: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    Some(bar)
}

/// Asks a yes/no question on the terminal; false when stdin is not a terminal.
pub fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| failed(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Downloads backup `id` to `file`.
pub async fn download(c: &mut Client, id: &str, file: &Path, force: bool) -> Result<Downloaded> {
    if file.exists() && !force {
        return Err(Failure::usage(format!(
            "{} exists; add --force to overwrite it",
            file.display()
        )));
    }
    let mut partial_name = file.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = std::path::PathBuf::from(partial_name);
    let result = receive(c, id, &partial).await;
    match result {
        Ok(done) => {
            if let Err(e) = tokio::fs::rename(&partial, file).await {
                // E.g. FILE is a directory (--force): no full copy left behind.
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(failed(format!(
                    "cannot rename {} to {}: {e}",
                    partial.display(),
                    file.display()
                )));
            }
            Ok(done)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(e)
        }
    }
}

async fn receive(c: &mut Client, id: &str, partial: &Path) -> Result<Downloaded> {
    let mut stream = c
        .download_backup(proto::DownloadBackupRequest { id: id.to_owned() })
        .await?
        .into_inner();
    let mut out = tokio::fs::File::create(partial)
        .await
        .map_err(|e| failed(format!("cannot create {}: {e}", partial.display())))?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut announced: Option<Downloaded> = None;
    let mut progress = None;
    while let Some(chunk) = stream.message().await? {
        if announced.is_none() {
            progress = bar(chunk.size, &format!("downloading {}", chunk.id));
            announced = Some(Downloaded {
                id: chunk.id,
                size: chunk.size,
                sha256: chunk.sha256,
            });
        }
        hasher.update(&chunk.data);
        got += chunk.data.len() as u64;
        out.write_all(&chunk.data)
            .await
            .map_err(|e| failed(format!("cannot write {}: {e}", partial.display())))?;
        if let Some(bar) = &progress {
            bar.set_position(got);
        }
    }
    out.sync_all()
        .await
        .map_err(|e| failed(format!("cannot write {}: {e}", partial.display())))?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let announced = announced.ok_or_else(|| failed("the daemon sent no data".into()))?;
    let sha256: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != announced.size || sha256 != announced.sha256 {
        return Err(failed(format!(
            "the download of {} is damaged ({got} bytes with sha256 {sha256}, expected {} bytes with sha256 {})",
            announced.id, announced.size, announced.sha256
        )));
    }
    Ok(announced)
}

/// Uploads `file`; returns the catalogued backup.
pub async fn upload(c: &mut Client, file: &Path, job: Option<&str>) -> Result<proto::Backup> {
    let mut input = tokio::fs::File::open(file)
        .await
        .map_err(|e| Failure::usage(format!("cannot open {}: {e}", file.display())))?;
    let size = input.metadata().await.map(|m| m.len()).unwrap_or(0);
    let progress = bar(size, &format!("uploading {}", file.display()));
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::UploadChunk>(4);
    let name = file.display().to_string();
    let mut job = job.unwrap_or_default().to_owned();
    let reader = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            let mut data = vec![0u8; CHUNK];
            let n = match input.read(&mut data).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => return Err(failed(format!("cannot read {name}: {e}"))),
            };
            data.truncate(n);
            sent += n as u64;
            if let Some(bar) = &progress {
                bar.set_position(sent);
            }
            if tx
                .send(proto::UploadChunk {
                    data,
                    job: std::mem::take(&mut job),
                })
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    });
    let response = c
        .upload_backup(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let read = reader
        .await
        .map_err(|e| failed(format!("the upload task failed: {e}")))?;
    read?;
    Ok(response?.into_inner())
}
