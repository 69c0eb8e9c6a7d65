//! What a run is and how it reports: run kinds and statuses (recorded in the catalog's
//! `runs`), progress phases, and the [`Event`]s a run sends while it works.
//!
//! These are domain enums; their names (`as_str`) are what the catalog stores and what
//! `cofferctl --json` prints, and `api::convert` maps them to the proto's enums.

/// The kinds of runs the catalog records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunKind {
    Backup,
    Verify,
    Restore,
    Prune,
    Upload,
    Drill,
    Copy,
    Fetch,
    Export,
    Import,
    Rekey,
}

impl RunKind {
    pub const ALL: [RunKind; 11] = [
        RunKind::Backup,
        RunKind::Verify,
        RunKind::Restore,
        RunKind::Prune,
        RunKind::Upload,
        RunKind::Drill,
        RunKind::Copy,
        RunKind::Fetch,
        RunKind::Export,
        RunKind::Import,
        RunKind::Rekey,
    ];

    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Backup => "backup",
            RunKind::Verify => "verify",
            RunKind::Restore => "restore",
            RunKind::Prune => "prune",
            RunKind::Upload => "upload",
            RunKind::Drill => "drill",
            RunKind::Copy => "copy",
            RunKind::Fetch => "fetch",
            RunKind::Export => "export",
            RunKind::Import => "import",
            RunKind::Rekey => "rekey",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<RunKind> {
        RunKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Where a run is, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Never started (a scheduled run while the previous one was still going).
    Skipped,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Skipped,
        RunStatus::Cancelled,
    ];

    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The phase a progress event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for a free run slot (`max-concurrent-runs`).
    Waiting,
    /// Taking the consistent copy of the database.
    Snapshot,
    /// Walking the media directories.
    Media,
    /// Writing the archive.
    Archive,
    /// Reading an archive back against its manifest.
    Verify,
    /// SQLite's checks (or the server's) of a copy.
    Check,
    /// Writing an archive's entries out.
    Extract,
    /// Running the job's hooks.
    Hooks,
    /// The safety backup before an in-place restore.
    Safety,
    /// Swapping restored data in.
    Swap,
    /// Sending a backup to an offsite store.
    Copy,
    /// Receiving a backup from an offsite store.
    Fetch,
    /// A restore drill's own steps (checks, clean-up).
    Drill,
    /// Selecting rows and files for an export.
    Export,
    /// Applying an export file.
    Import,
}

impl Phase {
    pub const ALL: [Phase; 15] = [
        Phase::Waiting,
        Phase::Snapshot,
        Phase::Media,
        Phase::Archive,
        Phase::Verify,
        Phase::Check,
        Phase::Extract,
        Phase::Hooks,
        Phase::Safety,
        Phase::Swap,
        Phase::Copy,
        Phase::Fetch,
        Phase::Drill,
        Phase::Export,
        Phase::Import,
    ];

    /// The printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Snapshot => "snapshot",
            Phase::Media => "media",
            Phase::Archive => "archive",
            Phase::Verify => "verify",
            Phase::Check => "check",
            Phase::Extract => "extract",
            Phase::Hooks => "hooks",
            Phase::Safety => "safety",
            Phase::Swap => "swap",
            Phase::Copy => "copy",
            Phase::Fetch => "fetch",
            Phase::Drill => "drill",
            Phase::Export => "export",
            Phase::Import => "import",
        }
    }
}

/// A progress event of a run: the phase, bytes done of total (0 total: unknown) and a
/// line for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
    pub message: String,
}

impl Event {
    /// An event that starts `phase` with a message and no byte counts.
    pub fn new(phase: Phase, message: impl Into<String>) -> Event {
        Event {
            phase,
            done: 0,
            total: 0,
            message: message.into(),
        }
    }

    /// A byte count within `phase`.
    pub fn bytes(phase: Phase, done: u64, total: u64) -> Event {
        Event {
            phase,
            done,
            total,
            message: String::new(),
        }
    }
}

/// Where progress goes (a channel to the client, or nowhere).
pub type Progress<'a> = &'a mut (dyn FnMut(Event) + Send);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in RunKind::ALL {
            assert_eq!(RunKind::parse(kind.as_str()), Some(kind));
        }
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        let mut names: Vec<_> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), Phase::ALL.len());
    }
}
