//! Media files of an export and an import.
//!
//! Export: [`select_media`] walks each media directory from the literal prefix of
//! each `media.include` glob (`sites/3/` for `sites/{site}/**`), never following a
//! symbolic link, and returns the regular files the instantiated globs match.
//!
//! Import: [`plan_media_import`] decides, for every file the export carries, where it
//! goes and what happens to it (new, identical, conflicting → write, keep, skip,
//! overwrite, or a suffixed name), moving files whose path embeds a renamed key
//! (`sites/3/` → `sites/9/`). [`apply_media`] then writes the plan crash-safely (a
//! temporary file renamed into place) and returns a [`MediaTxn`] that keeps every
//! replaced original aside, so the whole import can be undone until
//! [`MediaTxn::commit`] — which the caller calls only once the database committed.
//!
//! Every path the export file supplies is hostile input: it must be relative and
//! plain (no `..`, no root), must match one of the profile's globs for the
//! export's parameters, and is written only under directories that are real
//! directories of the media root (a symbolic link on the way is refused).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::selective::ConflictPolicy;
use crate::selective::profile::{ExportProfile, ParamValues, compile_glob};

/// Errors of the media part of an export or an import.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media glob {glob:?} of export profile {profile} does not compile for these parameters")]
    Glob { profile: String, glob: String },
    #[error("reading media directory {path} failed")]
    Walk {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the export file holds a media file for media directory #{root}, but the job has only {roots} media directories"
    )]
    UnknownRoot { root: usize, roots: usize },
    #[error("the export file holds media path {path:?}, which is not a plain relative path")]
    UnsafePath { path: String },
    #[error(
        "the export file holds media file {path:?}, which the media globs of export profile {profile} do not select"
    )]
    NotSelected { path: String, profile: String },
    #[error("media path {path} cannot be written: {reason}")]
    Destination { path: String, reason: String },
    #[error("no free name was found for media file {path} after 10000 tries")]
    NoFreeName { path: String },
    #[error("writing media file {path} failed")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("undoing the media changes failed at {path}; the file set aside is still there")]
    Rollback {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the operation was cancelled")]
    Cancelled,
}

/// A media file chosen for an export.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SelectedMedia {
    /// Index of the media directory (the `<n>` in `media/<n>/...`).
    pub root: usize,
    /// Path relative to that directory.
    pub rel: PathBuf,
    pub size: u64,
}

/// What [`select_media`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaSelection {
    /// Sorted by root, then path; no duplicates.
    pub files: Vec<SelectedMedia>,
    /// Symbolic links and special files under the selected directories, left out:
    /// an export carries regular files only, so an import never creates links.
    pub skipped: u64,
}

/// Lists the regular files under `roots` that `profile`'s media globs select for
/// `params`. Symbolic links are never followed, also not on the way to the
/// directory a glob starts from.
pub fn select_media(
    roots: &[PathBuf],
    profile: &ExportProfile,
    params: &ParamValues,
    cancelled: &dyn Fn() -> bool,
) -> Result<MediaSelection, MediaError> {
    let mut files = BTreeSet::new();
    let mut skipped = BTreeSet::new();
    for (n, root) in roots.iter().enumerate() {
        for pattern in &profile.media_include {
            let glob = pattern.instantiate(params);
            let matcher = compile_glob(&glob).map_err(|_| MediaError::Glob {
                profile: profile.name.clone(),
                glob: pattern.template.clone(),
            })?;
            let prefix: PathBuf = pattern.literal_prefix(params).iter().collect();
            // The starting directory must be reached through real directories only.
            let mut start = root.clone();
            let mut reachable = true;
            for comp in prefix.components() {
                start.push(comp);
                match fs::symlink_metadata(&start) {
                    Ok(m) if m.file_type().is_dir() => {}
                    _ => {
                        reachable = false;
                        break;
                    }
                }
            }
            if !reachable {
                continue;
            }
            let mut stack = vec![prefix];
            while let Some(rel_dir) = stack.pop() {
                if cancelled() {
                    return Err(MediaError::Cancelled);
                }
                let dir = root.join(&rel_dir);
                let walk_err = |source| MediaError::Walk {
                    path: dir.display().to_string(),
                    source,
                };
                let mut entries = fs::read_dir(&dir)
                    .map_err(walk_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(walk_err)?;
                entries.sort_by_key(|e| e.file_name());
                for entry in entries {
                    let rel = rel_dir.join(entry.file_name());
                    let ft = entry.file_type().map_err(walk_err)?;
                    if ft.is_dir() {
                        stack.push(rel);
                    } else if matcher.is_match(&rel) {
                        if ft.is_file() {
                            let size = entry.metadata().map_err(walk_err)?.len();
                            files.insert(SelectedMedia { root: n, rel, size });
                        } else {
                            skipped.insert((n, rel));
                        }
                    }
                }
            }
        }
    }
    Ok(MediaSelection {
        files: files.into_iter().collect(),
        skipped: skipped.len() as u64,
    })
}

/// A media file of an export file, extracted into staging by the archive reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedMedia {
    /// The `<n>` of `media/<n>/...`.
    pub root: usize,
    /// The path after `media/<n>/`, as the export file says (untrusted).
    pub rel: PathBuf,
    /// Where the verified content lies in staging.
    pub staged: PathBuf,
}

/// What happens to a key-derived parameter of the export on import, decided by
/// the database plan; media paths built from that parameter follow it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "fate")]
pub enum ParamFate {
    /// The row keeps its key.
    Unchanged,
    /// The row is imported under a new key.
    Renamed { to: String },
    /// The row is not imported, so neither are its files.
    Skipped { reason: String },
}

/// How a file of the export compares with what is at its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaStatus {
    New,
    Identical,
    Conflicting,
}

/// What the import does with one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum MediaAction {
    /// Write it at `dest` (nothing is there).
    Write,
    /// The same bytes are already there.
    Keep,
    /// Replace the existing file.
    Overwrite,
    /// Leave the existing file; the export's file is not written.
    Skip { reason: String },
}

/// One file of the media plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MediaFilePlan {
    pub root: usize,
    /// The path in the export file.
    #[serde(serialize_with = "ser_path")]
    pub rel: PathBuf,
    /// Where it goes, relative to the media directory (differs from `rel` when a
    /// key in the path was renamed or the file got a suffixed name).
    #[serde(serialize_with = "ser_path")]
    pub dest: PathBuf,
    pub status: MediaStatus,
    #[serde(flatten)]
    pub action: MediaAction,
    #[serde(skip)]
    pub staged: PathBuf,
    #[serde(skip)]
    pub size: u64,
}

fn ser_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// Counts and the files whose outcome is worth showing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MediaReport {
    pub files: u64,
    pub new: u64,
    pub identical: u64,
    pub conflicting: u64,
    pub written: u64,
    pub overwritten: u64,
    pub renamed: u64,
    pub skipped: u64,
    /// Every file that is not simply written where the export had it.
    pub details: Vec<MediaFilePlan>,
}

/// The media part of an import plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaPlan {
    pub files: Vec<MediaFilePlan>,
}

impl MediaPlan {
    pub fn report(&self) -> MediaReport {
        let mut r = MediaReport {
            files: self.files.len() as u64,
            ..MediaReport::default()
        };
        for f in &self.files {
            match f.status {
                MediaStatus::New => r.new += 1,
                MediaStatus::Identical => r.identical += 1,
                MediaStatus::Conflicting => r.conflicting += 1,
            }
            match &f.action {
                MediaAction::Write if f.dest != f.rel => r.renamed += 1,
                MediaAction::Write => r.written += 1,
                MediaAction::Keep => {}
                MediaAction::Overwrite => r.overwritten += 1,
                MediaAction::Skip { .. } => r.skipped += 1,
            }
            let plain = matches!(f.action, MediaAction::Write | MediaAction::Keep) && f.dest == f.rel;
            if !plain {
                r.details.push(f.clone());
            }
        }
        r
    }

    /// Bytes the apply step writes.
    pub fn bytes_to_write(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| matches!(f.action, MediaAction::Write | MediaAction::Overwrite))
            .map(|f| f.size)
            .sum()
    }
}

/// Checks that `rel` is a plain relative path: non-empty `/`-separated names,
/// none empty, `.` or `..`, no NUL. Checked on the raw bytes, because
/// `Path::components` silently drops `.` and doubled slashes.
pub(crate) fn is_plain_relative(rel: &Path) -> bool {
    let raw = rel.as_os_str().as_bytes();
    !raw.is_empty()
        && raw
            .split(|&b| b == b'/')
            .all(|seg| !seg.is_empty() && seg != b"." && seg != b".." && !seg.contains(&0))
}

/// What an existing destination is.
enum Existing {
    Nothing,
    File,
    /// A symbolic link or special file: replaced as an entry, never written through.
    Other,
}

/// Checks every existing directory on the way from `root` to `rel`'s parent is a
/// real directory, and says what is at `rel`.
fn inspect_destination(root: &Path, rel: &Path) -> Result<Existing, MediaError> {
    let display = || root.join(rel).display().to_string();
    let mut path = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        path.push(c);
        let last = i + 1 == comps.len();
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Nothing),
            Err(source) => {
                return Err(MediaError::Write {
                    path: display(),
                    source,
                });
            }
            Ok(m) if !last && m.file_type().is_dir() => {}
            Ok(_) if !last => {
                return Err(MediaError::Destination {
                    path: display(),
                    reason: format!("{} is not a real directory (a link or a file)", path.display()),
                });
            }
            Ok(m) if m.file_type().is_file() => return Ok(Existing::File),
            Ok(m) if m.file_type().is_dir() => {
                return Err(MediaError::Destination {
                    path: display(),
                    reason: "a directory of that name is in the way".to_owned(),
                });
            }
            Ok(_) => return Ok(Existing::Other),
        }
    }
    Ok(Existing::Nothing)
}

/// Compares two files byte by byte, streaming.
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (ma, mb) = (fs::metadata(a)?, fs::symlink_metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(fb.read(&mut bb[..1])? == 0);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// `logo.png` → `logo-2.png`; `a.tar.gz` → `a-2.tar.gz`; `.env` → `.env-2`.
fn suffixed_name(name: &[u8], n: u32) -> Vec<u8> {
    let search_from = usize::from(name.first() == Some(&b'.'));
    let split = name[search_from..]
        .iter()
        .position(|&b| b == b'.')
        .map(|p| p + search_from)
        .unwrap_or(name.len());
    let mut out = name[..split].to_vec();
    out.extend_from_slice(format!("-{n}").as_bytes());
    out.extend_from_slice(&name[split..]);
    out
}

/// Decides what happens to every file of the export. Reads the media
/// directories, writes nothing.
///
/// `params` are the export's (from its manifest, validated against `profile`);
/// `fates` say, per parameter, what the database plan does with the row it names.
pub fn plan_media_import(
    files: &[ImportedMedia],
    roots: &[PathBuf],
    profile: &ExportProfile,
    params: &ParamValues,
    fates: &BTreeMap<String, ParamFate>,
    policy: ConflictPolicy,
    cancelled: &dyn Fn() -> bool,
) -> Result<MediaPlan, MediaError> {
    let new_params = renamed_params(params, fates)?;
    let patterns = profile
        .media_include
        .iter()
        .map(|p| {
            compile_glob(&p.instantiate(params))
                .map(|m| (p, m))
                .map_err(|_| MediaError::Glob {
                    profile: profile.name.clone(),
                    glob: p.template.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut planner = MediaPlanner {
        roots,
        profile,
        params,
        new_params: &new_params,
        fates,
        policy,
        patterns: &patterns,
        planned: BTreeSet::new(),
    };
    let mut out = Vec::new();
    let mut sorted: Vec<&ImportedMedia> = files.iter().collect();
    sorted.sort_by(|a, b| (a.root, &a.rel).cmp(&(b.root, &b.rel)));
    for f in sorted {
        if cancelled() {
            return Err(MediaError::Cancelled);
        }
        out.push(planner.plan_file(f)?);
    }
    Ok(MediaPlan { files: out })
}

/// The export's parameters with every renamed key replaced by its new value, for
/// rewriting paths. A new key becomes a path segment, so it must be as safe as the
/// parameter values themselves.
fn renamed_params(
    params: &ParamValues,
    fates: &BTreeMap<String, ParamFate>,
) -> Result<ParamValues, MediaError> {
    let mut new_params = params.clone();
    for (p, fate) in fates {
        if let ParamFate::Renamed { to } = fate {
            if let Some(reason) = crate::selective::profile::path_component_problem(to) {
                return Err(MediaError::Destination {
                    path: format!("{{{p}}} = {}", crate::selective::sql::display_name(to)),
                    reason: format!("the renamed key {reason}"),
                });
            }
            new_params = new_params.with(p, to.clone());
        }
    }
    Ok(new_params)
}

/// What [`plan_media_import`] decides file by file, and what it has placed so far.
struct MediaPlanner<'a> {
    roots: &'a [PathBuf],
    profile: &'a ExportProfile,
    params: &'a ParamValues,
    new_params: &'a ParamValues,
    fates: &'a BTreeMap<String, ParamFate>,
    policy: ConflictPolicy,
    patterns: &'a [(&'a crate::selective::profile::MediaPattern, globset::GlobMatcher)],
    /// Destinations this import writes or keeps.
    planned: BTreeSet<(usize, PathBuf)>,
}

impl MediaPlanner<'_> {
    fn plan_file(&mut self, f: &ImportedMedia) -> Result<MediaFilePlan, MediaError> {
        let shown = f.rel.to_string_lossy().into_owned();
        if !is_plain_relative(&f.rel) {
            return Err(MediaError::UnsafePath {
                path: crate::selective::sql::display_name(&shown),
            });
        }
        let Some(root) = self.roots.get(f.root) else {
            return Err(MediaError::UnknownRoot {
                root: f.root,
                roots: self.roots.len(),
            });
        };
        let Some((pattern, _)) = self.patterns.iter().find(|(_, m)| m.is_match(&f.rel)) else {
            return Err(MediaError::NotSelected {
                path: crate::selective::sql::display_name(&shown),
                profile: self.profile.name.clone(),
            });
        };
        let size = fs::symlink_metadata(&f.staged)
            .map_err(|source| MediaError::Write {
                path: f.staged.display().to_string(),
                source,
            })?
            .len();
        let skip_reason = pattern.params().iter().find_map(|p| match self.fates.get(p) {
            Some(ParamFate::Skipped { reason }) => Some(reason.clone()),
            _ => None,
        });
        let dest = self.rewritten(pattern, &f.rel);
        let existing = inspect_destination(root, &dest)?;
        let taken = self.planned.contains(&(f.root, dest.clone()));
        let status = match existing {
            Existing::Nothing if !taken => MediaStatus::New,
            Existing::File if !taken => {
                let same =
                    same_content(&f.staged, &root.join(&dest)).map_err(|source| MediaError::Write {
                        path: root.join(&dest).display().to_string(),
                        source,
                    })?;
                if same {
                    MediaStatus::Identical
                } else {
                    MediaStatus::Conflicting
                }
            }
            _ => MediaStatus::Conflicting,
        };
        let mut plan = MediaFilePlan {
            root: f.root,
            rel: f.rel.clone(),
            dest,
            status,
            action: MediaAction::Write,
            staged: f.staged.clone(),
            size,
        };
        plan.action = match skip_reason {
            Some(reason) => MediaAction::Skip { reason },
            None => self.decide(root, &mut plan, taken)?,
        };
        if matches!(
            plan.action,
            MediaAction::Write | MediaAction::Overwrite | MediaAction::Keep
        ) {
            self.planned.insert((f.root, plan.dest.clone()));
        }
        Ok(plan)
    }

    /// `rel` with the segments that embed a renamed key rewritten.
    fn rewritten(&self, pattern: &crate::selective::profile::MediaPattern, rel: &Path) -> PathBuf {
        let rewrites = pattern.segment_rewrites(self.params, self.new_params);
        if !rewrites.iter().any(Option::is_some) {
            return rel.to_path_buf();
        }
        let mut comps: Vec<OsString> = rel.iter().map(|c| c.to_os_string()).collect();
        for (i, rw) in rewrites.iter().enumerate() {
            if let (Some((old, new)), Some(c)) = (rw, comps.get_mut(i))
                && c.as_bytes() == old.as_bytes()
            {
                *c = OsString::from(new);
            }
        }
        comps.iter().collect()
    }

    /// The action for a file under the policy (a rename also picks its new name).
    fn decide(&self, root: &Path, plan: &mut MediaFilePlan, taken: bool) -> Result<MediaAction, MediaError> {
        Ok(match (plan.status, self.policy) {
            (MediaStatus::New, _) => MediaAction::Write,
            (MediaStatus::Identical, _) => MediaAction::Keep,
            (MediaStatus::Conflicting, ConflictPolicy::Skip) => MediaAction::Skip {
                reason: "kept the existing file".to_owned(),
            },
            (MediaStatus::Conflicting, ConflictPolicy::Overwrite) if !taken => MediaAction::Overwrite,
            (MediaStatus::Conflicting, ConflictPolicy::Overwrite) => MediaAction::Skip {
                reason: "another file of the export goes to the same place".to_owned(),
            },
            (MediaStatus::Conflicting, ConflictPolicy::Rename) => {
                plan.dest = free_name(root, &plan.dest, plan.root, &self.planned)?;
                MediaAction::Write
            }
        })
    }
}

fn free_name(
    root: &Path,
    dest: &Path,
    n: usize,
    planned: &BTreeSet<(usize, PathBuf)>,
) -> Result<PathBuf, MediaError> {
    let name = dest
        .file_name()
        .map(|s| s.as_bytes().to_vec())
        .unwrap_or_default();
    for i in 2..10_002u32 {
        let candidate = dest.with_file_name(OsString::from_vec(suffixed_name(&name, i)));
        if planned.contains(&(n, candidate.clone())) {
            continue;
        }
        if let Existing::Nothing = inspect_destination(root, &candidate)? {
            return Ok(candidate);
        }
    }
    Err(MediaError::NoFreeName {
        path: root.join(dest).display().to_string(),
    })
}

/// One undoable step of [`apply_media`].
#[derive(Debug)]
enum Undo {
    CreatedDir(PathBuf),
    Wrote { dest: PathBuf, aside: Option<PathBuf> },
}

/// Media changes written but not yet final: until [`commit`](Self::commit), every
/// replaced file is kept aside and [`rollback`](Self::rollback) (or dropping the
/// value) restores the directories exactly.
#[derive(Debug)]
pub struct MediaTxn {
    undo: Vec<Undo>,
    finished: bool,
}

impl MediaTxn {
    /// Makes the changes final: deletes the originals kept aside.
    pub fn commit(mut self) -> Result<(), MediaError> {
        self.finished = true;
        let mut dirs = BTreeSet::new();
        for step in &self.undo {
            if let Undo::Wrote {
                dest,
                aside: Some(aside),
            } = step
            {
                fs::remove_file(aside).map_err(|source| MediaError::Write {
                    path: aside.display().to_string(),
                    source,
                })?;
                if let Some(d) = dest.parent() {
                    dirs.insert(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            let _ = File::open(&d).and_then(|f| f.sync_all());
        }
        Ok(())
    }

    /// Undoes every change, newest first.
    pub fn rollback(mut self) -> Result<(), MediaError> {
        self.finished = true;
        undo_all(std::mem::take(&mut self.undo))
    }
}

impl Drop for MediaTxn {
    fn drop(&mut self) {
        if !self.finished {
            let _ = undo_all(std::mem::take(&mut self.undo));
        }
    }
}

fn undo_all(steps: Vec<Undo>) -> Result<(), MediaError> {
    let mut first_err = None;
    for step in steps.into_iter().rev() {
        let result = match &step {
            Undo::Wrote { dest, aside } => {
                let removed = match fs::remove_file(dest) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
                removed
                    .and_then(|()| aside.as_ref().map_or(Ok(()), |a| fs::rename(a, dest)))
                    .map_err(|source| MediaError::Rollback {
                        path: dest.display().to_string(),
                        source,
                    })
            }
            // A directory we created is removed only if empty: anything else in
            // it was put there by someone else meanwhile.
            Undo::CreatedDir(d) => {
                let _ = fs::remove_dir(d);
                Ok(())
            }
        };
        if let Err(e) = result {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Where one written file of the plan goes, and the names it uses on the way: the
/// new content is written to `partial` beside `dest`, and a replaced original is
/// kept as `aside` until the import commits. The names carry the import's `tag`,
/// so a journal can name them before anything is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaStep {
    pub dest: PathBuf,
    pub partial: PathBuf,
    pub aside: Option<PathBuf>,
}

fn step_paths(root: &Path, f: &MediaFilePlan, seq: usize, tag: &str) -> MediaStep {
    let dest = root.join(&f.dest);
    let dir = dest.parent().unwrap_or(root).to_path_buf();
    MediaStep {
        partial: dir.join(format!(".coffer-import-{tag}-{seq}.partial")),
        aside: (f.action == MediaAction::Overwrite)
            .then(|| dir.join(format!(".coffer-import-{tag}-{seq}.orig"))),
        dest,
    }
}

/// What [`apply_media`] will do, before it does it: every file step, and the
/// directories it will create (those missing now, parents first).
pub fn planned_changes(
    plan: &MediaPlan,
    roots: &[PathBuf],
    tag: &str,
) -> Result<(Vec<MediaStep>, Vec<PathBuf>), MediaError> {
    let mut steps = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, f) in plan.files.iter().enumerate() {
        if !matches!(f.action, MediaAction::Write | MediaAction::Overwrite) {
            continue;
        }
        let Some(root) = roots.get(f.root) else {
            return Err(MediaError::UnknownRoot {
                root: f.root,
                roots: roots.len(),
            });
        };
        let mut dir = root.clone();
        for c in f.dest.parent().unwrap_or(Path::new("")).components() {
            dir.push(c);
            if !dirs.contains(&dir) && fs::symlink_metadata(&dir).is_err() {
                dirs.push(dir.clone());
            }
        }
        steps.push(step_paths(root, f, i, tag));
    }
    Ok((steps, dirs))
}

/// Writes the plan's files. On any error everything already written is undone
/// before the error is returned (a failed undo is [`MediaError::Rollback`]); on
/// success the caller commits or rolls back the returned transaction together
/// with the database. `tag` names the temporary and set-aside files (see
/// [`planned_changes`]).
///
/// New files and directories get the owner of the media directory (the daemon
/// runs as root, the app usually does not); a replaced file keeps its owner and
/// mode. `progress` gets (bytes written, bytes to write).
pub fn apply_media(
    plan: &MediaPlan,
    roots: &[PathBuf],
    tag: &str,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MediaTxn, MediaError> {
    let mut txn = MediaTxn {
        undo: Vec::new(),
        finished: false,
    };
    let total = plan.bytes_to_write();
    let mut done = 0;
    for (i, f) in plan.files.iter().enumerate() {
        if !matches!(f.action, MediaAction::Write | MediaAction::Overwrite) {
            continue;
        }
        let written = if cancelled() {
            Err(MediaError::Cancelled)
        } else {
            match roots.get(f.root) {
                Some(root) => write_one(root, f, &step_paths(root, f, i, tag), &mut txn),
                None => Err(MediaError::UnknownRoot {
                    root: f.root,
                    roots: roots.len(),
                }),
            }
        };
        if let Err(e) = written {
            return Err(match txn.rollback() {
                Ok(()) => e,
                Err(undo) => undo,
            });
        }
        done += f.size;
        progress(done, total);
    }
    Ok(txn)
}

fn write_one(root: &Path, f: &MediaFilePlan, step: &MediaStep, txn: &mut MediaTxn) -> Result<(), MediaError> {
    let dest = step.dest.clone();
    let werr = |source| MediaError::Write {
        path: dest.display().to_string(),
        source,
    };
    let owner = fs::metadata(root).map_err(werr)?;

    // Directories: real ones only, created (and recorded) where missing.
    let mut dir = root.to_path_buf();
    let parent_rel = f.dest.parent().unwrap_or(Path::new(""));
    for c in parent_rel.components() {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(MediaError::Destination {
                    path: dest.display().to_string(),
                    reason: format!("{} is not a real directory (a link or a file)", dir.display()),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(werr)?;
                txn.undo.push(Undo::CreatedDir(dir.clone()));
                let _ = std::os::unix::fs::lchown(&dir, Some(owner.uid()), Some(owner.gid()));
            }
            Err(e) => return Err(werr(e)),
        }
    }

    let existing = match fs::symlink_metadata(&dest) {
        Ok(m) if m.file_type().is_dir() => {
            return Err(MediaError::Destination {
                path: dest.display().to_string(),
                reason: "a directory of that name is in the way".to_owned(),
            });
        }
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(werr(e)),
    };
    if existing.is_some() && f.action != MediaAction::Overwrite {
        // Something appeared since the plan was made: never clobber it.
        return Err(MediaError::Destination {
            path: dest.display().to_string(),
            reason: "a file appeared there after the import was planned".to_owned(),
        });
    }

    let partial = step.partial.clone();
    let result = (|| -> io::Result<Option<PathBuf>> {
        let mut src = File::open(&f.staged)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)?;
        io::copy(&mut src, &mut out)?;
        let (mode, uid, gid) = match &existing {
            Some(m) if m.file_type().is_file() => (m.mode() & 0o7777, m.uid(), m.gid()),
            _ => (fs::metadata(&f.staged)?.mode() & 0o777, owner.uid(), owner.gid()),
        };
        out.set_permissions(fs::Permissions::from_mode(mode))?;
        let _ = std::os::unix::fs::fchown(&out, Some(uid), Some(gid));
        out.sync_all()?;
        drop(out);
        let aside = if existing.is_some() {
            let aside = step
                .aside
                .clone()
                .ok_or_else(|| io::Error::other("no name to set the original aside"))?;
            fs::rename(&dest, &aside)?;
            if let Err(e) = fs::rename(&partial, &dest) {
                let _ = fs::rename(&aside, &dest);
                return Err(e);
            }
            Some(aside)
        } else {
            // hard_link fails if the name exists: a new file never replaces one
            // that appeared meanwhile.
            fs::hard_link(&partial, &dest)?;
            fs::remove_file(&partial)?;
            None
        };
        File::open(&dir)?.sync_all()?;
        Ok(aside)
    })();
    match result {
        Ok(aside) => {
            txn.undo.push(Undo::Wrote { dest, aside });
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            Err(werr(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(suffixed_name(b"logo.png", 2), b"logo-2.png");
        assert_eq!(suffixed_name(b"a.tar.gz", 3), b"a-3.tar.gz");
        assert_eq!(suffixed_name(b".env", 2), b".env-2");
        assert_eq!(suffixed_name(b"README", 2), b"README-2");
    }

    #[test]
    fn plain_relative_paths() {
        for ok in ["a", "a/b.png", "sites/3/x"] {
            assert!(is_plain_relative(Path::new(ok)), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "./a", "a/./b", "a//b", "a/"] {
            assert!(!is_plain_relative(Path::new(bad)), "{bad}");
        }
        assert!(!is_plain_relative(Path::new(OsStr::from_bytes(b"a\0b"))));
    }

    use std::ffi::OsStr;
}
