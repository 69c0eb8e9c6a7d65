//! Where each backup is besides the local backup directory: one row per backup and
//! offsite store ([`LocationRecord`]), and the copy queue those rows make.
//!
//! A row's life: `pending` (queued after a backup, or by `cofferctl copy`) → `copied`
//! once the archive and then the sidecar are in the store and read back; a failed
//! attempt makes it `failed` with the error sentence and a `next_attempt_at`, and the
//! copier tries again then (the queue is every `pending` or `failed` row, oldest due
//! first; it is in the catalog, so it survives restarts). Remote retention marks a row
//! `deleting` before it deletes the objects and drops the row after. A row outlives the
//! local backup: local retention removes local files, never remote copies.
//!
//! [`Catalog::reconcile_store`] makes the rows of one store agree with one listing of
//! this host's prefix: complete backups found there are recorded (a rebuilt catalog
//! finds its remote copies again), copies that vanished are dropped or queued again.

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, CatalogError};

/// The state of a backup in one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocationState {
    /// Queued, not copied yet.
    Pending,
    /// Archive and sidecar are in the store, verified.
    Copied,
    /// The last attempt failed; tried again at `next_attempt_at`.
    Failed,
    /// Retention is deleting it from the store.
    Deleting,
}

impl LocationState {
    pub const ALL: [LocationState; 4] = [
        LocationState::Pending,
        LocationState::Copied,
        LocationState::Failed,
        LocationState::Deleting,
    ];

    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationState::Pending => "pending",
            LocationState::Copied => "copied",
            LocationState::Failed => "failed",
            LocationState::Deleting => "deleting",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<LocationState> {
        LocationState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A backup in one offsite store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationRecord {
    pub backup_id: String,
    pub job: String,
    pub store: String,
    /// The backup's creation time (Unix seconds), for retention in the store.
    pub created_at: i64,
    /// Pinned when it was copied (the local row's pin wins while there is one).
    pub protected: bool,
    pub encrypted: bool,
    pub state: LocationState,
    pub copied_at: i64,
    pub verified_at: i64,
    /// "", "ok" or the error sentence of the last `verify --store`.
    pub verify_result: String,
    /// The archive object's size.
    pub size: u64,
    /// The archive object's ETag when it was copied (a changed object has another).
    pub etag: String,
    /// Object Lock: not deletable before this (Unix seconds; 0 = not locked).
    pub retain_until: i64,
    /// The last failure's sentence.
    pub error: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
}

/// What a finished copy established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopiedFacts {
    pub copied_at: i64,
    pub verified_at: i64,
    pub size: u64,
    pub etag: String,
    pub retain_until: i64,
    pub encrypted: bool,
}

/// A complete backup found in a store listing (for [`Catalog::reconcile_store`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRemote {
    pub job: String,
    pub id: String,
    pub created_at: i64,
    pub size: u64,
    pub etag: String,
    pub copied_at: i64,
    pub encrypted: bool,
}

/// What [`Catalog::reconcile_store`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StoreReconciled {
    /// Copies found in the store that the catalog did not know.
    pub found: Vec<String>,
    /// Copies the catalog knew that are gone from the store, queued again (the backup
    /// is still local) or forgotten.
    pub requeued: Vec<String>,
    pub forgotten: Vec<String>,
}

const COLUMNS: &str = "backup_id, job, store, created_at, protected, encrypted, state, copied_at, \
     verified_at, verify_result, size, etag, retain_until, error, attempts, next_attempt_at";

fn location_row(r: &Row<'_>) -> rusqlite::Result<LocationRecord> {
    let state: String = r.get(6)?;
    Ok(LocationRecord {
        backup_id: r.get(0)?,
        job: r.get(1)?,
        store: r.get(2)?,
        created_at: r.get(3)?,
        protected: r.get(4)?,
        encrypted: r.get(5)?,
        // An unknown state (a newer cofferd's) reads as failed: retried, never trusted.
        state: LocationState::parse(&state).unwrap_or(LocationState::Failed),
        copied_at: r.get(7)?,
        verified_at: r.get(8)?,
        verify_result: r.get(9)?,
        size: r.get::<_, i64>(10)? as u64,
        etag: r.get(11)?,
        retain_until: r.get(12)?,
        error: r.get(13)?,
        attempts: r.get::<_, i64>(14)? as u32,
        next_attempt_at: r.get(15)?,
    })
}

impl Catalog {
    /// Queues a copy of backup `id` to `store` (due at once). A copy already recorded is
    /// left as it is; a failed one becomes due now.
    pub fn enqueue_copy(
        &self,
        id: &str,
        job: &str,
        store: &str,
        created_at: i64,
        protected: bool,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO locations (backup_id, job, store, created_at, protected, state)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending')
             ON CONFLICT (backup_id, store) DO UPDATE SET next_attempt_at = 0
             WHERE state IN ('pending', 'failed')",
            params![id, job, store, created_at, protected],
        )?;
        Ok(())
    }

    /// The queued copies due at `now`, oldest due first, then oldest backup first.
    pub fn due_copies(&self, now: i64) -> Result<Vec<LocationRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM locations
             WHERE state IN ('pending', 'failed') AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, created_at, backup_id"
        ))?;
        let rows = stmt.query_map([now], location_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next queued copy is due (Unix seconds), if any is queued.
    pub fn next_copy_due(&self) -> Result<Option<i64>, CatalogError> {
        Ok(self.conn().query_row(
            "SELECT min(next_attempt_at) FROM locations WHERE state IN ('pending', 'failed')",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records a finished, verified copy of `id` (of `job`) in `store`.
    pub fn set_copied(
        &self,
        id: &str,
        job: &str,
        store: &str,
        created_at: i64,
        protected: bool,
        facts: &CopiedFacts,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO locations (backup_id, job, store, created_at, protected, encrypted, state,
                 copied_at, verified_at, verify_result, size, etag, retain_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'copied', ?7, ?8, 'ok', ?9, ?10, ?11)
             ON CONFLICT (backup_id, store) DO UPDATE SET state = 'copied', encrypted = ?6,
                 copied_at = ?7, verified_at = ?8, verify_result = 'ok', size = ?9, etag = ?10,
                 retain_until = ?11, error = '', attempts = 0, next_attempt_at = 0",
            params![
                id,
                job,
                store,
                created_at,
                protected,
                facts.encrypted,
                facts.copied_at,
                facts.verified_at,
                facts.size as i64,
                facts.etag,
                facts.retain_until
            ],
        )?;
        Ok(())
    }

    /// Records a failed copy attempt: the sentence, and when to try again.
    pub fn set_copy_failed(
        &self,
        id: &str,
        store: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE locations SET state = 'failed', error = ?3, attempts = attempts + 1,
                 next_attempt_at = ?4
             WHERE backup_id = ?1 AND store = ?2 AND state IN ('pending', 'failed')",
            params![id, store, error, retry_at],
        )?;
        Ok(())
    }

    /// Sets the state of a location (retention marks `deleting`, and back).
    pub fn set_location_state(
        &self,
        id: &str,
        store: &str,
        state: LocationState,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE locations SET state = ?3 WHERE backup_id = ?1 AND store = ?2",
            params![id, store, state.as_str()],
        )?;
        Ok(())
    }

    /// Records a `verify --store`: when, and "ok" or the error sentence.
    pub fn set_location_verified(
        &self,
        id: &str,
        store: &str,
        at: i64,
        result: &str,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE locations SET verified_at = ?3, verify_result = ?4 WHERE backup_id = ?1 AND store = ?2",
            params![id, store, at, result],
        )?;
        Ok(())
    }

    /// Forgets a location (deleted from the store, or never to be copied).
    pub fn remove_location(&self, id: &str, store: &str) -> Result<(), CatalogError> {
        self.conn().execute(
            "DELETE FROM locations WHERE backup_id = ?1 AND store = ?2",
            params![id, store],
        )?;
        Ok(())
    }

    /// One backup's location in one store.
    pub fn location(&self, id: &str, store: &str) -> Result<Option<LocationRecord>, CatalogError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM locations WHERE backup_id = ?1 AND store = ?2"),
                params![id, store],
                location_row,
            )
            .optional()?)
    }

    /// Every location of one backup, by store name.
    pub fn locations_of(&self, id: &str) -> Result<Vec<LocationRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM locations WHERE backup_id = ?1 ORDER BY store"
        ))?;
        let rows = stmt.query_map([id], location_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every location, grouped by backup id (for `list`).
    pub fn all_locations(&self) -> Result<HashMap<String, Vec<LocationRecord>>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM locations ORDER BY store"))?;
        let mut out: HashMap<String, Vec<LocationRecord>> = HashMap::new();
        for row in stmt.query_map([], location_row)? {
            let row = row?;
            out.entry(row.backup_id.clone()).or_default().push(row);
        }
        Ok(out)
    }

    /// The locations in `store`, of one job or all, newest backup first.
    pub fn locations_in(&self, store: &str, job: Option<&str>) -> Result<Vec<LocationRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM locations WHERE store = ?1 AND (?2 IS NULL OR job = ?2)
             ORDER BY created_at DESC, length(backup_id) DESC, backup_id DESC"
        ))?;
        let rows = stmt.query_map(params![store, job], location_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Makes the rows of `store` agree with `found`, one listing of this host's prefix
    /// (see the module doc).
    /// `requeue` says whether a vanished copy should be made again (its backup is still
    /// local and its job still copies to `store`); otherwise its row is dropped.
    pub fn reconcile_store(
        &self,
        store: &str,
        found: &[FoundRemote],
        requeue: &dyn Fn(&str) -> bool,
    ) -> Result<StoreReconciled, CatalogError> {
        let mut report = StoreReconciled::default();
        let known: HashMap<String, LocationRecord> = self
            .locations_in(store, None)?
            .into_iter()
            .map(|r| (r.backup_id.clone(), r))
            .collect();
        let listed: HashSet<&str> = found.iter().map(|f| f.id.as_str()).collect();
        for f in found {
            let done = known.get(&f.id).map(|r| r.state);
            if matches!(done, Some(LocationState::Copied | LocationState::Deleting)) {
                continue;
            }
            // A pending or failed row whose copy is in fact complete (the daemon died
            // after the sidecar went up), or a row lost with the catalog.
            let protected = self.get_backup(&f.id)?.is_some_and(|b| b.protected);
            let facts = CopiedFacts {
                copied_at: f.copied_at,
                verified_at: 0,
                size: f.size,
                etag: f.etag.clone(),
                retain_until: 0,
                encrypted: f.encrypted,
            };
            self.set_copied(&f.id, &f.job, store, f.created_at, protected, &facts)?;
            report.found.push(f.id.clone());
        }
        for (id, row) in &known {
            if listed.contains(id.as_str())
                || !matches!(row.state, LocationState::Copied | LocationState::Deleting)
            {
                continue;
            }
            if row.state == LocationState::Copied && requeue(id) {
                self.conn().execute(
                    "UPDATE locations SET state = 'pending', next_attempt_at = 0, error = ?3
                     WHERE backup_id = ?1 AND store = ?2",
                    params![id, store, "the copy was no longer in the store"],
                )?;
                report.requeued.push(id.clone());
            } else {
                self.remove_location(id, store)?;
                report.forgotten.push(id.clone());
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        (dir, c)
    }

    #[test]
    fn the_queue_survives_and_orders_and_retries() {
        let (dir, c) = catalog();
        c.enqueue_copy("app-2", "app", "s3", 20, false).unwrap();
        c.enqueue_copy("app-1", "app", "s3", 10, true).unwrap();
        let due: Vec<_> = c
            .due_copies(0)
            .unwrap()
            .into_iter()
            .map(|r| r.backup_id)
            .collect();
        assert_eq!(due, ["app-1", "app-2"], "oldest backup first");
        c.set_copy_failed("app-1", "s3", "cannot reach the store 's3'", 100)
            .unwrap();
        assert_eq!(c.due_copies(99).unwrap().len(), 1, "app-1 waits for its retry");
        assert_eq!(c.next_copy_due().unwrap(), Some(0));
        let failed = c.location("app-1", "s3").unwrap().unwrap();
        assert_eq!((failed.state, failed.attempts), (LocationState::Failed, 1));
        assert!(failed.protected);
        drop(c);
        // A restart keeps the queue.
        let c = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        assert_eq!(c.due_copies(100).unwrap().len(), 2);
        // Queueing again makes a failed copy due now; a copied one stays copied.
        c.enqueue_copy("app-1", "app", "s3", 10, true).unwrap();
        assert_eq!(c.due_copies(0).unwrap().len(), 2);
        let facts = CopiedFacts {
            copied_at: 5,
            verified_at: 5,
            size: 7,
            etag: "\"e\"".into(),
            retain_until: 0,
            encrypted: false,
        };
        c.set_copied("app-1", "app", "s3", 10, true, &facts).unwrap();
        c.enqueue_copy("app-1", "app", "s3", 10, true).unwrap();
        c.set_copy_failed("app-1", "s3", "late", 0).unwrap();
        let copied = c.location("app-1", "s3").unwrap().unwrap();
        assert_eq!(
            (copied.state, copied.size, copied.error.as_str()),
            (LocationState::Copied, 7, "")
        );
        assert_eq!(c.all_locations().unwrap().len(), 2);
        assert_eq!(c.locations_in("s3", Some("app")).unwrap()[0].backup_id, "app-2");
    }

    #[test]
    fn reconcile_finds_lost_copies_and_forgets_vanished_ones() {
        let (_dir, c) = catalog();
        let remote = |id: &str| FoundRemote {
            job: "app".into(),
            id: id.into(),
            created_at: 1,
            size: 3,
            etag: "\"x\"".into(),
            copied_at: 2,
            encrypted: false,
        };
        // A rebuilt catalog: two copies found by the listing.
        let r = c
            .reconcile_store("s3", &[remote("a"), remote("b")], &|_| false)
            .unwrap();
        assert_eq!(r.found, ["a", "b"]);
        assert_eq!(
            c.location("a", "s3").unwrap().unwrap().state,
            LocationState::Copied
        );
        // A pending copy that in fact completed is recorded as copied.
        c.enqueue_copy("c", "app", "s3", 1, false).unwrap();
        let r = c
            .reconcile_store("s3", &[remote("a"), remote("b"), remote("c")], &|_| false)
            .unwrap();
        assert_eq!(r.found, ["c"]);
        // Gone from the store: queued again when still local, else forgotten.
        let r = c.reconcile_store("s3", &[remote("c")], &|id| id == "a").unwrap();
        assert_eq!(r.requeued, ["a"]);
        assert_eq!(r.forgotten, ["b"]);
        assert_eq!(
            c.location("a", "s3").unwrap().unwrap().state,
            LocationState::Pending
        );
        assert!(c.location("b", "s3").unwrap().is_none());
    }
}
