//! The import journal, `<dir>/<id>.json`: where an import's media changes are, on
//! disk, so that start-up can undo or finish them after a crash.
//!
//! The database part of an import is one SQLite transaction, which a crash rolls
//! back by itself. The media part is many renames: each new file is written to a
//! `.partial` beside its destination and linked into place, each replaced file is
//! first renamed aside (`.coffer-import-<tag>-<n>.orig`). Before the first of them
//! the journal lists every step and every directory the import will create
//! ([`Journal::begin`], state `applying`). Just before the database commits, the
//! journal records a *commit probe* ([`Probe`]: one written row, and how many rows
//! of the target held exactly its values before and after the import) and turns
//! `committing`; after the commit it turns `committed`, the originals are removed,
//! and the journal with them.
//!
//! [`recover`] (at start-up, before anything else touches the app's paths) reads
//! each journal left behind: `applying` is rolled back (originals renamed back, new
//! files and created directories removed); `committed` is finished (originals
//! removed); `committing` asks the probe whether the database holds the import:
//! the `after` count means committed (finish), the `before` count means rolled back
//! (roll the media back too), anything else — the app changed that row since — is
//! left for the admin with an error in the log, the originals still beside their
//! files. An import that writes no media files needs no journal: SQLite's own
//! journal makes it all or nothing.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params_from_iter};
use serde::{Deserialize, Serialize};

use super::ImportError;
use super::plan::TableCtx;
use crate::fsutil;
use crate::selective::media::MediaStep;
use crate::selective::sql::{Real, SqlValue, quote_ident};

/// Rows whose counts are taken as probe candidates (the first ones written).
const PROBE_CANDIDATES: usize = 4;

/// The largest row (encoded) kept as a probe: the journal stays small.
const MAX_PROBE_BYTES: usize = 64 << 10;

/// Where an import's journal goes and what it is about.
#[derive(Clone, Debug)]
pub struct JournalTarget {
    /// The journal directory (`<state-dir>/import-journal`).
    pub dir: PathBuf,
    /// The import's id: the journal's file name and the tag of its temporary files.
    pub id: String,
    /// The target database, which a recovery asks whether the import committed.
    pub database: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum State {
    /// Media being written, the database not committed: a crash is rolled back.
    Applying,
    /// The database commit is under way: the probe decides.
    Committing,
    /// The database committed: only the originals set aside are left to remove.
    Committed,
}

/// One file step, as [`MediaStep`] names it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Step {
    #[serde(with = "path_text")]
    dest: PathBuf,
    #[serde(with = "path_text")]
    partial: PathBuf,
    #[serde(with = "opt_path_text")]
    aside: Option<PathBuf>,
}

/// Paths in the journal: as text when they are UTF-8 (readable by the admin who is
/// told to look), else as `{"hex": "<bytes>"}` — media names need not be UTF-8.
mod path_text {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    pub(super) enum Text {
        Utf8(String),
        Bytes { hex: String },
    }

    pub(super) fn text(path: &Path) -> Text {
        match path.to_str() {
            Some(s) => Text::Utf8(s.to_owned()),
            None => Text::Bytes {
                hex: super::hex(path.as_os_str().as_bytes()),
            },
        }
    }

    pub(super) fn path<E: serde::de::Error>(text: Text) -> Result<PathBuf, E> {
        match text {
            Text::Utf8(s) => Ok(PathBuf::from(s)),
            Text::Bytes { hex } => super::unhex(&hex)
                .map(|b| PathBuf::from(OsStr::from_bytes(&b)))
                .ok_or_else(|| E::custom("a path's hex is not valid")),
        }
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        text(p).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        path(Text::deserialize(d)?)
    }
}

/// [`path_text`] for a list of paths.
mod paths_text {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::path_text::{Text, path, text};

    pub fn serialize<S: Serializer>(p: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        p.iter().map(|p| text(p)).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Vec::<Text>::deserialize(d)?.into_iter().map(path).collect()
    }
}

/// [`path_text`] for an optional path.
mod opt_path_text {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::path_text::{Text, path, text};

    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        p.as_deref().map(text).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Option::<Text>::deserialize(d)?.map(path).transpose()
    }
}

/// A value of the probe row, lossless (text may be any bytes, reals any bits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "value")]
enum ProbeValue {
    Null,
    Integer(i64),
    /// The IEEE-754 bits.
    Real(u64),
    /// Hex.
    Text(String),
    /// Hex.
    Blob(String),
}

impl ProbeValue {
    fn of(v: &SqlValue) -> ProbeValue {
        match v {
            SqlValue::Null => ProbeValue::Null,
            SqlValue::Integer(i) => ProbeValue::Integer(*i),
            SqlValue::Real(r) => ProbeValue::Real(r.0.to_bits()),
            SqlValue::Text(t) => ProbeValue::Text(hex(t)),
            SqlValue::Blob(b) => ProbeValue::Blob(hex(b)),
        }
    }

    fn value(&self) -> Option<SqlValue> {
        Some(match self {
            ProbeValue::Null => SqlValue::Null,
            ProbeValue::Integer(i) => SqlValue::Integer(*i),
            ProbeValue::Real(bits) => SqlValue::Real(Real(f64::from_bits(*bits))),
            ProbeValue::Text(h) => SqlValue::Text(unhex(h)?),
            ProbeValue::Blob(h) => SqlValue::Blob(unhex(h)?),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One written row and how many target rows held exactly its values before the
/// import and after it (inside the import's transaction).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Probe {
    table: String,
    columns: Vec<String>,
    values: Vec<ProbeValue>,
    before: i64,
    after: i64,
}

/// `SELECT count(*)` of the rows of `table` holding exactly `values` in `columns`.
fn count_exact(
    conn: &Connection,
    table: &str,
    columns: &[String],
    values: &[SqlValue],
) -> rusqlite::Result<i64> {
    let cond = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} IS ?{}", quote_ident(c), i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!("SELECT count(*) FROM main.{} WHERE {cond}", quote_ident(table));
    conn.query_row(&sql, params_from_iter(values.iter()), |r| r.get(0))
}

/// Collects probe candidates while the import writes, and picks one at the end.
#[derive(Debug, Default)]
pub(crate) struct ProbeRecorder {
    candidates: Vec<(String, Vec<String>, Vec<SqlValue>, i64)>,
    /// Whether any row was written at all.
    pub(crate) wrote: bool,
}

impl ProbeRecorder {
    /// Called before each row is written with the values the columns `pos` will
    /// hold: counts the rows holding them now, for the first few rows.
    pub(crate) fn before_write(
        &mut self,
        conn: &Connection,
        ctx: &TableCtx,
        row: &[SqlValue],
        pos: &[usize],
    ) -> Result<(), ImportError> {
        self.wrote = true;
        if self.candidates.len() >= PROBE_CANDIDATES || pos.is_empty() {
            return Ok(());
        }
        let values: Vec<SqlValue> = pos.iter().map(|&p| row[p].clone()).collect();
        let size: usize = values.iter().map(|v| v.render().len() * 2 + 16).sum();
        if size > MAX_PROBE_BYTES {
            return Ok(());
        }
        let columns: Vec<String> = pos.iter().map(|&p| ctx.columns[p].clone()).collect();
        let before =
            count_exact(conn, &ctx.name, &columns, &values).map_err(|source| ImportError::Target {
                table: ctx.name.clone(),
                source,
            })?;
        self.candidates.push((ctx.name.clone(), columns, values, before));
        Ok(())
    }

    /// The first candidate whose count the import changed, counted again now (at
    /// the end of the import's transaction); `None` if none did.
    pub(crate) fn choose(&self, conn: &Connection) -> Result<Option<Probe>, ImportError> {
        for (table, columns, values, before) in &self.candidates {
            let after = count_exact(conn, table, columns, values).map_err(|source| ImportError::Target {
                table: table.clone(),
                source,
            })?;
            if after != *before {
                return Ok(Some(Probe {
                    table: table.clone(),
                    columns: columns.clone(),
                    values: values.iter().map(ProbeValue::of).collect(),
                    before: *before,
                    after,
                }));
            }
        }
        Ok(None)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Record {
    id: String,
    database: PathBuf,
    state: State,
    steps: Vec<Step>,
    /// Directories the import creates, parents first.
    #[serde(with = "paths_text")]
    dirs: Vec<PathBuf>,
    probe: Option<Probe>,
}

/// The journal of one running import; removed when dropped unless [`Journal::keep`]
/// was called (a failed undo leaves work for start-up).
pub(crate) struct Journal {
    path: PathBuf,
    record: Record,
    keep: bool,
}

impl Journal {
    /// Writes the journal (state `applying`) before any media file is touched.
    pub(crate) fn begin(
        target: &JournalTarget,
        steps: &[MediaStep],
        dirs: &[PathBuf],
    ) -> Result<Journal, ImportError> {
        std::fs::create_dir_all(&target.dir).map_err(|source| ImportError::Journal {
            path: target.dir.display().to_string(),
            source,
        })?;
        let journal = Journal {
            path: target.dir.join(format!("{}.json", target.id)),
            record: Record {
                id: target.id.clone(),
                database: target.database.clone(),
                state: State::Applying,
                steps: steps
                    .iter()
                    .map(|s| Step {
                        dest: s.dest.clone(),
                        partial: s.partial.clone(),
                        aside: s.aside.clone(),
                    })
                    .collect(),
                dirs: dirs.to_vec(),
                probe: None,
            },
            keep: false,
        };
        journal.write()?;
        Ok(journal)
    }

    fn write(&self) -> Result<(), ImportError> {
        let json = serde_json::to_vec_pretty(&self.record).map_err(|e| ImportError::Journal {
            path: self.path.display().to_string(),
            source: e.into(),
        })?;
        fsutil::write_atomic(&self.path, &json).map_err(|source| ImportError::Journal {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// Just before the database commits: the probe that tells, after a crash,
    /// whether it did. Without a probe (the import wrote no row, or none whose
    /// count changed) the commit cannot be told apart; with no row written it does
    /// not matter, and the journal goes straight to `committed`.
    pub(crate) fn committing(&mut self, probe: Option<Probe>, wrote_rows: bool) -> Result<(), ImportError> {
        self.record.state = if wrote_rows {
            State::Committing
        } else {
            State::Committed
        };
        self.record.probe = probe;
        self.write()
    }

    /// After the database committed.
    pub(crate) fn committed(&mut self) -> Result<(), ImportError> {
        self.record.state = State::Committed;
        self.write()
    }

    /// Leaves the journal on disk for start-up.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether the database of an interrupted import holds it, by its probe:
/// `Some(true)` committed, `Some(false)` not, `None` cannot tell.
fn committed_by_probe(database: &Path, probe: &Probe) -> Option<bool> {
    let values: Vec<SqlValue> = probe
        .values
        .iter()
        .map(ProbeValue::value)
        .collect::<Option<_>>()?;
    // Read-write: a rollback-journal database interrupted mid-commit has a hot
    // journal, which SQLite rolls back on the first read.
    let conn = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
    let now = count_exact(&conn, &probe.table, &probe.columns, &values).ok()?;
    if now == probe.after {
        Some(true)
    } else if now == probe.before {
        Some(false)
    } else {
        None
    }
}

/// Puts the media back as they were before the import (see the module doc).
fn roll_back(record: &Record) -> std::io::Result<()> {
    for step in record.steps.iter().rev() {
        fsutil::remove_any(&step.partial)?;
        match &step.aside {
            Some(aside) if std::fs::symlink_metadata(aside).is_ok() => std::fs::rename(aside, &step.dest)?,
            Some(_) => {}
            None => fsutil::remove_any(&step.dest)?,
        }
        if let Some(parent) = step.dest.parent() {
            let _ = fsutil::sync_dir(parent);
        }
    }
    for dir in record.dirs.iter().rev() {
        // Only if empty: anything in it now was put there by someone else.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// Removes the originals set aside: the import stands.
fn finish(record: &Record) -> std::io::Result<()> {
    for step in &record.steps {
        fsutil::remove_any(&step.partial)?;
        if let Some(aside) = &step.aside {
            fsutil::remove_any(aside)?;
        }
    }
    Ok(())
}

/// Undoes or finishes the media changes of imports that a crash interrupted (see
/// the module doc). Returns the ids handled; journals it cannot decide are left
/// in place and logged.
pub fn recover(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut handled = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            if path.to_string_lossy().ends_with(fsutil::PARTIAL_SUFFIX) {
                fsutil::remove_any(&path)?;
            }
            continue;
        }
        let record: Record = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(record)) => record,
            _ => {
                tracing::error!(journal = %path.display(), "unreadable import journal; left for inspection");
                continue;
            }
        };
        let commit = match (record.state, &record.probe) {
            (State::Applying, _) => false,
            (State::Committed, _) => true,
            (State::Committing, Some(probe)) => match committed_by_probe(&record.database, probe) {
                Some(done) => done,
                None => {
                    undecided(&path, &record);
                    continue;
                }
            },
            (State::Committing, None) => {
                undecided(&path, &record);
                continue;
            }
        };
        if commit {
            finish(&record)?;
            tracing::info!(id = record.id, "finished an import interrupted after its commit");
        } else {
            roll_back(&record)?;
            tracing::warn!(
                id = record.id,
                "rolled back the media of an import interrupted before its commit"
            );
        }
        std::fs::remove_file(&path)?;
        handled.push(record.id);
    }
    Ok(handled)
}

fn undecided(path: &Path, record: &Record) {
    tracing::error!(
        id = record.id,
        journal = %path.display(),
        "an import was interrupted while its database committed, and the database no longer \
         shows whether it did; its replaced media files are still beside their originals \
         as .coffer-import-*.orig (see the journal) — check and remove the journal by hand"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_values_round_trip_losslessly() {
        for v in [
            SqlValue::Null,
            SqlValue::Integer(-7),
            SqlValue::Real(Real(f64::NAN)),
            SqlValue::Real(Real(0.1)),
            SqlValue::Text(vec![0xff, 0, b'a']),
            SqlValue::Blob(vec![1, 2, 3]),
        ] {
            let json = serde_json::to_string(&ProbeValue::of(&v)).unwrap();
            let back: ProbeValue = serde_json::from_str(&json).unwrap();
            assert_eq!(back.value(), Some(v), "{json}");
        }
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn paths_that_are_not_utf8_round_trip() {
        use std::os::unix::ffi::OsStrExt;
        let latin1 = PathBuf::from(std::ffi::OsStr::from_bytes(b"/m/caf\xe9.txt"));
        let step = Step {
            dest: latin1.clone(),
            partial: PathBuf::from("/m/p"),
            aside: Some(latin1.clone()),
        };
        let json = serde_json::to_string(&step).unwrap();
        assert!(
            json.contains(r#""partial":"/m/p""#) && json.contains(r#"{"hex":"2f6d2f636166e92e747874"}"#),
            "{json}"
        );
        let back: Step = serde_json::from_str(&json).unwrap();
        assert_eq!((back.dest, back.aside), (latin1.clone(), Some(latin1)));
    }

    fn record(dir: &Path, state: State, probe: Option<Probe>, database: &Path) -> Record {
        Record {
            id: "imp".into(),
            database: database.to_owned(),
            state,
            steps: vec![
                Step {
                    dest: dir.join("media/old.txt"),
                    partial: dir.join("media/.coffer-import-imp-0.partial"),
                    aside: Some(dir.join("media/.coffer-import-imp-0.orig")),
                },
                Step {
                    dest: dir.join("media/new/x.txt"),
                    partial: dir.join("media/new/.coffer-import-imp-1.partial"),
                    aside: None,
                },
            ],
            dirs: vec![dir.join("media/new")],
            probe,
        }
    }

    /// The media as a crash in the middle of the second step leaves them: the
    /// original set aside, the new content in place, the new file's partial.
    fn crashed_media(dir: &Path) {
        std::fs::create_dir_all(dir.join("media/new")).unwrap();
        std::fs::write(dir.join("media/.coffer-import-imp-0.orig"), b"original").unwrap();
        std::fs::write(dir.join("media/old.txt"), b"imported").unwrap();
        std::fs::write(dir.join("media/new/.coffer-import-imp-1.partial"), b"new").unwrap();
    }

    fn write_journal(jdir: &Path, record: &Record) {
        std::fs::create_dir_all(jdir).unwrap();
        std::fs::write(jdir.join("imp.json"), serde_json::to_vec(record).unwrap()).unwrap();
    }

    fn db_with_row(path: &Path, present: bool) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        if present {
            conn.execute_batch("INSERT INTO t VALUES (9, 'new')").unwrap();
        }
    }

    fn probe() -> Probe {
        Probe {
            table: "t".into(),
            columns: vec!["id".into(), "v".into()],
            values: vec![ProbeValue::Integer(9), ProbeValue::Text(hex(b"new"))],
            before: 0,
            after: 1,
        }
    }

    #[test]
    fn an_interrupted_apply_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        crashed_media(dir.path());
        let jdir = dir.path().join("journal");
        write_journal(
            &jdir,
            &record(dir.path(), State::Applying, None, Path::new("/none")),
        );
        assert_eq!(recover(&jdir).unwrap(), ["imp"]);
        assert_eq!(
            std::fs::read(dir.path().join("media/old.txt")).unwrap(),
            b"original"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("media")).unwrap().collect();
        assert_eq!(left.len(), 1, "only old.txt is left: {left:?}");
        assert_eq!(std::fs::read_dir(&jdir).unwrap().count(), 0);
    }

    #[test]
    fn the_probe_decides_an_interrupted_commit() {
        for (committed, want) in [(true, &b"imported"[..]), (false, &b"original"[..])] {
            let dir = tempfile::tempdir().unwrap();
            crashed_media(dir.path());
            std::fs::write(dir.path().join("media/new/x.txt"), b"new").unwrap();
            let db = dir.path().join("app.db");
            db_with_row(&db, committed);
            let jdir = dir.path().join("journal");
            write_journal(&jdir, &record(dir.path(), State::Committing, Some(probe()), &db));
            assert_eq!(recover(&jdir).unwrap(), ["imp"]);
            assert_eq!(std::fs::read(dir.path().join("media/old.txt")).unwrap(), want);
            assert_eq!(dir.path().join("media/new/x.txt").exists(), committed);
            assert!(!dir.path().join("media/.coffer-import-imp-0.orig").exists());
        }
    }

    #[test]
    fn an_undecidable_commit_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        crashed_media(dir.path());
        let db = dir.path().join("app.db");
        db_with_row(&db, true);
        Connection::open(&db)
            .unwrap()
            .execute_batch("INSERT INTO t VALUES (10, 'new'); UPDATE t SET id = 11 WHERE id = 10; INSERT INTO t SELECT 12, 'new'")
            .unwrap();
        let mut p = probe();
        p.columns = vec!["v".into()];
        p.values = vec![ProbeValue::Text(hex(b"new"))];
        let jdir = dir.path().join("journal");
        write_journal(&jdir, &record(dir.path(), State::Committing, Some(p), &db));
        assert!(recover(&jdir).unwrap().is_empty());
        assert!(jdir.join("imp.json").exists(), "the journal stays for the admin");
        assert!(dir.path().join("media/.coffer-import-imp-0.orig").exists());
    }
}
