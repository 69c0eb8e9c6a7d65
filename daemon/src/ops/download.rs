//! Downloading a backup: which file to stream, and what the client checks it against.

use std::path::PathBuf;

use super::Ctx;
use crate::catalog::BackupRecord;
use crate::error::Error;

/// The catalogued backup `id_text` names and the path of its archive.
pub fn open(ctx: &Ctx, id_text: &str) -> Result<(BackupRecord, PathBuf), Error> {
    let record = ctx.resolve(id_text)?;
    let path = ctx.archive_path(&record);
    Ok((record, path))
}
