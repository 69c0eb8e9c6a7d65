//! `cofferctl rekey ID [--yes]`: re-encrypt an encrypted backup to its job's current
//! recipients (key rotation). It asks on a terminal without `--yes` and refuses
//! without a terminal, because afterwards only the current recipients' keys can
//! decrypt the backup.

use coffer_common::proto::{self, backup_event::Event};

use crate::{Client, Failure, Result, follow, output, transfer};

/// Runs `rekey`.
pub async fn rekey(c: &mut Client, id: String, yes: bool, json: bool) -> Result<()> {
    if !yes
        && !transfer::confirm(&format!(
            "re-encrypt {id} to the current recipients of its job? Keys no longer listed there cannot decrypt it afterwards"
        ))?
    {
        return Err(Failure::usage(
            "rekey replaces the archive: only the job's current recipients can decrypt it afterwards; add --yes to confirm",
        ));
    }
    let stream = c
        .rekey_backup(proto::RekeyBackupRequest { id: id.clone() })
        .await?
        .into_inner();
    let backup = follow(stream, &format!("re-encrypting {id}"), |e| match e {
        Event::Backup(b) => Some(b),
        _ => None,
    })
    .await?;
    output::rekeyed(&backup, json);
    Ok(())
}
