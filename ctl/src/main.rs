//! `cofferctl`: the thin command-line client of cofferd.
//!
//! Parse arguments, call one RPC on the daemon's Unix socket, print the answer
//! (a table for people, one JSON document with `--json`), exit with the documented
//! code: 0 ok, 1 operation failed, 2 usage or config error, 3 daemon unreachable.
//! Errors are one sentence on stderr.
//!
//! - [`health`]: the Nagios-style `health` check.
//! - [`output`]: tables and JSON documents.
//! - [`progress`]: progress bars on a TTY, plain lines otherwise.
//! - [`transfer`]: download and upload of archives, confirmation prompts.
//! - [`selective`]: selective export and import files.
//! - [`encryption`]: the `rekey` command (re-encryption to new recipients).
//! - [`offsite`]: the offsite commands (stores, copy, list --store, fetch,
//!   verify --store) and the offsite parts of list/show/status.

/// `println!` for stdout that ends cofferctl quietly when the reader has gone
/// (`cofferctl list | head`), as a program killed by SIGPIPE would, instead of
/// panicking (Rust ignores SIGPIPE; see [`output::write_out`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod encryption;
mod health;
mod offsite;
mod output;
mod progress;
mod selective;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coffer_common::client::{self, SOCKET_ENV};
use coffer_common::proto::{self, backup_event::Event};
use coffer_common::tonic::{Code, Status};

/// Drive the Coffer backup daemon.
#[derive(Parser)]
#[command(name = "cofferctl", version, propagate_version = true)]
struct Cli {
    /// cofferd's socket.
    #[arg(long, global = true, env = SOCKET_ENV, default_value = client::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Machine output: one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Daemon version, uptime, jobs with last and next run, free disk.
    Status,
    /// Configured jobs.
    Jobs,
    /// Take a backup of JOB now.
    Backup {
        job: String,
        /// A note stored with the backup.
        #[arg(long)]
        note: Option<String>,
    },
    /// List backups, newest first (with --store: what an offsite store holds).
    List {
        job: Option<String>,
        /// List the backups in this offsite store instead of the local ones.
        #[arg(long)]
        store: Option<String>,
        /// With --store: every host's backups under the bucket (the fleet view).
        #[arg(long, requires = "store")]
        all_hosts: bool,
    },
    /// Show one backup (ID, `latest` or `JOB:latest`).
    Show { id: String },
    /// Delete a backup.
    Delete {
        id: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Protect a backup from retention and deletion.
    Pin { id: String },
    /// Remove a backup's protection.
    Unpin { id: String },
    /// Apply the retention policy (of JOB, or of every job).
    Prune {
        job: Option<String>,
        /// Show what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore a backup in place (needs --yes), into another directory (--to) or into
    /// a new database on the job's server (--to-database).
    Restore {
        id: String,
        /// Restore into this new or empty directory instead of the live paths.
        #[arg(long, conflicts_with = "to_database")]
        to: Option<PathBuf>,
        /// PostgreSQL and MariaDB jobs: restore the database into this new database
        /// on the job's server; the live database and the media are not touched.
        #[arg(long, value_name = "NAME")]
        to_database: Option<String>,
        /// Restore only the database or only the media directories.
        #[arg(long, value_parser = ["db", "media"])]
        only: Option<String>,
        /// Confirm an in-place restore.
        #[arg(long)]
        yes: bool,
        /// Restore even if the database is in use or the safety backup fails.
        #[arg(long)]
        force: bool,
    },
    /// Download a backup's archive to FILE.
    Download {
        id: String,
        #[arg(short, long)]
        output: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Upload an archive; the daemon verifies it fully before cataloguing it.
    Upload {
        file: PathBuf,
        /// File it under this configured job (default: the job in its manifest).
        #[arg(long)]
        job: Option<String>,
    },
    /// Nagios-style health check (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Health { job: Option<String> },
    /// Prometheus metrics (text exposition).
    Metrics,
    /// The audit log, newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Restore drill: restore JOB's newest backup into staging, verify it, run the
    /// job's checks, remove it; live data is never touched.
    Drill { job: String },
    /// Verify a backup's archive against its manifest.
    Verify {
        id: String,
        /// Also run SQLite's integrity and foreign-key checks on the database.
        #[arg(long)]
        deep: bool,
        /// Verify the copy in this offsite store instead of the local archive.
        #[arg(long)]
        store: Option<String>,
    },
    /// Offsite stores: reachable, what this host has there, the newest copy, lag.
    Stores,
    /// Copy a backup to an offsite store now (it is read back and checked).
    Copy {
        id: String,
        #[arg(long)]
        store: String,
    },
    /// Download a backup from an offsite store into the backup dir (verified, catalogued).
    Fetch {
        id: String,
        #[arg(long)]
        store: String,
    },
    /// Export the rows and files an export profile of JOB selects into FILE.
    Export {
        job: String,
        /// One of the job's [[job.export]] profiles.
        profile: String,
        /// A parameter of the profile (repeat for each).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(short, long)]
        output: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Import an export file into JOB (after a pinned safety backup).
    Import {
        file: PathBuf,
        #[arg(long)]
        job: String,
        /// What to do with rows and files that exist in another form.
        #[arg(long, value_parser = ["skip", "overwrite", "rename"])]
        on_conflict: String,
        /// Report what the import would do; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Confirm the import.
        #[arg(long)]
        yes: bool,
    },
    /// Re-encrypt an encrypted backup to its job's current recipients (key rotation).
    Rekey {
        id: String,
        /// Confirm: afterwards only the current recipients can decrypt it.
        #[arg(long)]
        yes: bool,
    },
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<client::ConnectError> for Failure {
    fn from(e: client::ConnectError) -> Failure {
        Failure {
            code: 3,
            message: format!("{e}; is cofferd running? (use --socket or ${SOCKET_ENV})"),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        let code = match status.code() {
            Code::Unavailable => 3,
            Code::InvalidArgument => 2,
            _ => 1,
        };
        let message = match status.code() {
            Code::Unavailable => format!("cofferd is unavailable: {}", status.message()),
            _ if status.message().is_empty() => format!("the daemon answered {:?}", status.code()),
            _ => status.message().to_owned(),
        };
        Failure { code, message }
    }
}

type Result<T> = std::result::Result<T, Failure>;
type Client = proto::coffer_client::CofferClient<coffer_common::tonic::transport::Channel>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cofferctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("cofferctl: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    if let Command::Delete { yes: false, id } = &cli.command {
        return Err(Failure::usage(format!(
            "deleting {id} cannot be undone; add --yes to confirm"
        )));
    }
    if let Command::Health { job } = cli.command {
        let code = health::check(&cli.socket, job, json).await;
        return if code == 0 {
            Ok(())
        } else {
            Err(Failure {
                code,
                message: String::new(),
            })
        };
    }
    let mut c = client::connect(&cli.socket).await?;
    dispatch(&mut c, cli.command, json).await
}

/// Runs one command on a connected client.
async fn dispatch(c: &mut Client, command: Command, json: bool) -> Result<()> {
    match command {
        Command::Status => {
            let status = c.get_status(proto::GetStatusRequest {}).await?.into_inner();
            output::status(&status, json);
        }
        Command::Jobs => {
            let jobs = c.list_jobs(proto::ListJobsRequest {}).await?.into_inner();
            output::jobs(&jobs.jobs, json);
        }
        Command::Backup { job, note } => backup(c, job, note, json).await?,
        Command::List {
            job,
            store: Some(store),
            all_hosts,
        } => offsite::list(c, job, store, all_hosts, json).await?,
        Command::List { job, .. } => {
            let list = c
                .list_backups(proto::ListBackupsRequest {
                    job: job.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output::backups(&list.backups, json);
        }
        Command::Show { id } => {
            let backup = c.get_backup(proto::GetBackupRequest { id }).await?.into_inner();
            output::backup(&backup, json);
        }
        Command::Delete { id, .. } => {
            let deleted = c
                .delete_backup(proto::DeleteBackupRequest { id })
                .await?
                .into_inner();
            output::deleted(&deleted.id, json);
        }
        Command::Pin { id } => set_protected(c, id, true, json).await?,
        Command::Unpin { id } => set_protected(c, id, false, json).await?,
        Command::Prune { job, dry_run } => {
            let request = proto::PruneRequest {
                job: job.unwrap_or_default(),
                dry_run,
            };
            let pruned = c.prune(request).await?.into_inner();
            output::pruned(&pruned.decisions, dry_run, json);
        }
        restore_command @ Command::Restore { .. } => restore(c, restore_command, json).await?,
        Command::Download {
            id,
            output: file,
            force,
        } => {
            let done = transfer::download(c, &id, &file, force).await?;
            output::downloaded(&done, &file, json);
        }
        Command::Upload { file, job } => {
            let backup = transfer::upload(c, &file, job.as_deref()).await?;
            output::created(&backup, json);
        }
        Command::Health { .. } => {} // answered above, before connecting
        Command::Metrics => {
            let metrics = c.get_metrics(proto::GetMetricsRequest {}).await?.into_inner();
            output::write_out(format_args!("{}", metrics.text));
        }
        Command::Audit { limit } => {
            let audit = c
                .list_audit(proto::ListAuditRequest { limit })
                .await?
                .into_inner();
            output::audit(&audit.entries, json);
        }
        Command::Drill { job } => drill(c, job, json).await?,
        Command::Verify { id, deep, store } => verify(c, id, deep, store, json).await?,
        Command::Stores => offsite::stores(c, json).await?,
        Command::Copy { id, store } => offsite::copy(c, id, store, json).await?,
        Command::Fetch { id, store } => offsite::fetch(c, id, store, json).await?,
        cmd @ (Command::Export { .. } | Command::Import { .. }) => selective_command(c, cmd, json).await?,
        Command::Rekey { id, yes } => encryption::rekey(c, id, yes, json).await?,
    }
    Ok(())
}

/// `export` and `import`.
async fn selective_command(c: &mut Client, command: Command, json: bool) -> Result<()> {
    match command {
        Command::Export {
            job,
            profile,
            params,
            output: file,
            force,
        } => selective::export(c, (job, profile, params), &file, force, json).await,
        Command::Import {
            file,
            job,
            on_conflict,
            dry_run,
            yes,
        } => {
            let options = selective::ImportOptions {
                job,
                on_conflict,
                dry_run,
                yes,
            };
            selective::import(c, &file, options, json).await
        }
        _ => Ok(()),
    }
}

/// `backup`: a backup of `job` now, following its progress.
async fn backup(c: &mut Client, job: String, note: Option<String>, json: bool) -> Result<()> {
    let request = proto::CreateBackupRequest {
        job: job.clone(),
        note: note.unwrap_or_default(),
    };
    let stream = c.create_backup(request).await?.into_inner();
    let backup = follow(stream, &format!("backing up {job}"), |e| match e {
        Event::Backup(b) => Some(b),
        _ => None,
    })
    .await?;
    output::created(&backup, json);
    Ok(())
}

/// `drill JOB`: a restore drill now.
async fn drill(c: &mut Client, job: String, json: bool) -> Result<()> {
    let stream = c
        .run_drill(proto::RunDrillRequest { job: job.clone() })
        .await?
        .into_inner();
    let drilled = follow(stream, &format!("drilling {job}"), |e| match e {
        Event::Drill(d) => Some(d),
        _ => None,
    })
    .await?;
    output::drilled(&drilled, json);
    Ok(())
}

/// `verify ID [--deep] [--store S]`: the local archive, or the copy in a store.
async fn verify(c: &mut Client, id: String, deep: bool, store: Option<String>, json: bool) -> Result<()> {
    let what = match &store {
        Some(s) => format!("verifying {id} in {s}"),
        None => format!("verifying {id}"),
    };
    let request = proto::VerifyBackupRequest {
        id,
        deep,
        store: store.unwrap_or_default(),
    };
    let stream = c.verify_backup(request).await?.into_inner();
    let verified = follow(stream, &what, |e| match e {
        Event::Verify(v) => Some(v),
        _ => None,
    })
    .await?;
    output::verified(&verified, json);
    Ok(())
}

/// `restore`: in place (after confirmation), into `--to`, or into a new database
/// (`--to-database`). `command` is the parsed `Command::Restore`.
async fn restore(c: &mut Client, command: Command, json: bool) -> Result<()> {
    let Command::Restore {
        id,
        to,
        to_database,
        only,
        yes,
        force,
    } = command
    else {
        return Ok(());
    };
    let to = match to {
        Some(dir) => {
            Some(std::path::absolute(&dir).map_err(|e| Failure::usage(format!("bad --to path: {e}")))?)
        }
        // Into a new database: nothing live is replaced, no confirmation needed.
        None if to_database.is_some() => None,
        None => {
            if !yes && !transfer::confirm(&format!("restore {id} over the live data of its job?"))? {
                return Err(Failure::usage(
                    "an in-place restore replaces the live data; add --yes to confirm",
                ));
            }
            None
        }
    };
    let request = proto::RestoreBackupRequest {
        id: id.clone(),
        to: to.map(|p| p.display().to_string()).unwrap_or_default(),
        only: only.unwrap_or_default(),
        force,
        to_database: to_database.unwrap_or_default(),
    };
    let stream = c.restore_backup(request).await?.into_inner();
    let restored = follow(stream, &format!("restoring {id}"), |e| match e {
        Event::Restore(r) => Some(r),
        _ => None,
    })
    .await?;
    output::restored(&restored, json);
    Ok(())
}

/// Follows a run's stream (progress on stderr) to its result, which `pick` takes
/// apart; any other result is the daemon's mistake.
async fn follow<T>(
    stream: coffer_common::tonic::Streaming<proto::BackupEvent>,
    what: &str,
    pick: impl FnOnce(Event) -> Option<T>,
) -> Result<T> {
    pick(progress::follow(stream, what).await?).ok_or_else(|| Failure {
        code: 1,
        message: "the daemon sent an unexpected reply".into(),
    })
}

async fn set_protected(c: &mut Client, id: String, protected: bool, json: bool) -> Result<()> {
    let backup = c
        .set_protected(proto::SetProtectedRequest { id, protected })
        .await?
        .into_inner();
    output::pinned(&backup, json);
    Ok(())
}
