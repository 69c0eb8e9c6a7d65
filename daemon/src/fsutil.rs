//! Crash-safe file handling shared by every writer in the daemon.
//!
//! The rule everywhere: write `<name>.partial`, fsync it, rename it over `<name>`,
//! fsync the directory. A `.partial` is never listed and is swept at start-up, so a
//! crash at any point leaves either the old file or the new one, never half of one.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The suffix of files being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// `path` with `.partial` appended.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(PARTIAL_SUFFIX);
    PathBuf::from(name)
}

/// Fsyncs a directory so renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` crash-safely (partial, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let partial = partial_path(path);
    let result = (|| {
        let mut file = File::create(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
        sync_dir(path.parent().unwrap_or(Path::new("/")))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Renames a finished, fsynced `.partial` into place and fsyncs the directory.
pub fn commit_partial(partial: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(partial, path)?;
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Removes `*.partial` files one level below `backup_dir` (in the job directories)
/// and everything inside `staging`. Returns what was removed.
pub fn sweep_leftovers(backup_dir: &Path, staging: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if let Ok(jobs) = std::fs::read_dir(backup_dir) {
        for job in jobs.flatten() {
            if !job.file_type().is_ok_and(|t| t.is_dir()) {
                // Uploads are received at the top level of the backup dir.
                if job.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX) {
                    std::fs::remove_file(job.path())?;
                    removed.push(job.path());
                }
                continue;
            }
            for file in std::fs::read_dir(job.path())?.flatten() {
                if file.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX) {
                    std::fs::remove_file(file.path())?;
                    removed.push(file.path());
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(staging) {
        for entry in entries.flatten() {
            remove_any(&entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// Removes a file, symlink or whole directory tree; missing is fine.
pub fn remove_any(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes a path when dropped unless disarmed: cleans up after failed runs.
pub struct Cleanup {
    paths: Vec<PathBuf>,
}

impl Cleanup {
    pub fn new() -> Self {
        Cleanup { paths: Vec::new() }
    }

    /// Removes `path` on drop.
    pub fn add(&mut self, path: impl Into<PathBuf>) {
        self.paths.push(path.into());
    }

    /// The paths removed on drop.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Keeps `path` after all (it was committed).
    pub fn keep(&mut self, path: &Path) {
        self.paths.retain(|p| p != path);
    }
}

impl Default for Cleanup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in self.paths.iter().rev() {
            if let Err(e) = remove_any(path) {
                tracing::warn!(path = %path.display(), "cannot clean up: {e}");
            }
        }
    }
}

/// Bytes per writeback step of a [`StreamedFile`].
const WRITEBACK_STEP: u64 = 16 << 20;

/// A file written front to back (an archive) whose finished parts are handed to the
/// kernel as it goes: every [`WRITEBACK_STEP`] bytes, `posix_fadvise(DONTNEED)` on the
/// step before the newest starts its writeback (and drops it from the page cache
/// once clean). The disk then writes while the CPU compresses, the final fsync has
/// little left to flush, and a backup does not push the app's data out of the cache.
/// The advice is only advice: its errors are ignored.
pub struct StreamedFile {
    file: Option<File>,
    written: u64,
    handed: u64,
    /// Tells a [`Follower`] how far the file has been written.
    front: Option<Front>,
}

impl StreamedFile {
    pub fn new(file: File) -> Self {
        StreamedFile {
            file: Some(file),
            written: 0,
            handed: 0,
            front: None,
        }
    }

    /// Lets [`Follower`]s of `front` read the file while it is written.
    pub fn followed(mut self, front: Front) -> Self {
        self.front = Some(front);
        self
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The file, e.g. to fsync it; followers now see its end.
    pub fn into_inner(mut self) -> File {
        if let Some(front) = self.front.take() {
            front.end(true);
        }
        // `file` is only ever taken here, and `self` is consumed.
        self.file
            .take()
            .unwrap_or_else(|| unreachable!("the file is taken once"))
    }
}

impl Drop for StreamedFile {
    fn drop(&mut self) {
        // Abandoned before `into_inner`: a follower must not wait for more.
        if let Some(front) = self.front.take() {
            front.end(false);
        }
    }
}

impl Write for StreamedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the file was already finished"));
        };
        let n = file.write(buf)?;
        self.written += n as u64;
        if let Some(front) = &self.front {
            front.advance(self.written);
        }
        if self.written - self.handed >= 2 * WRITEBACK_STEP {
            let (Ok(offset), Ok(len)) = (i64::try_from(self.handed), i64::try_from(WRITEBACK_STEP)) else {
                return Ok(n);
            };
            let _ = nix::fcntl::posix_fadvise(
                &*file,
                offset,
                len,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            self.handed += WRITEBACK_STEP;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// How far a file being written has got, shared between its writer and a
/// [`Follower`]: bytes written so far, and whether the writer finished or gave up.
#[derive(Debug, Clone, Default)]
pub struct Front(std::sync::Arc<(std::sync::Mutex<FrontState>, std::sync::Condvar)>);

#[derive(Debug, Default)]
struct FrontState {
    written: u64,
    /// `Some(true)`: complete; `Some(false)`: abandoned.
    ended: Option<bool>,
}

impl Front {
    fn state(&self) -> std::sync::MutexGuard<'_, FrontState> {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn advance(&self, written: u64) {
        self.state().written = written;
        self.0.1.notify_all();
    }

    fn end(&self, complete: bool) {
        self.state().ended = Some(complete);
        self.0.1.notify_all();
    }
}

/// Reads a file while another thread writes it through a [`StreamedFile`] with the
/// same [`Front`]: a read waits for bytes the writer has not written yet, and the end
/// of the file is the end the writer reports. The bytes come from the file itself
/// (the page cache, mostly), as any later reader would see them.
pub struct Follower {
    file: File,
    read: u64,
    front: Front,
}

impl Follower {
    /// Follows `path` (already created by the writer).
    pub fn open(path: &Path, front: Front) -> io::Result<Follower> {
        Ok(Follower {
            file: File::open(path)?,
            read: 0,
            front,
        })
    }
}

impl io::Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = {
            let mut state = self.front.state();
            loop {
                if state.written > self.read {
                    break state.written - self.read;
                }
                match state.ended {
                    Some(true) => return Ok(0),
                    Some(false) => return Err(io::Error::other("the file was abandoned by its writer")),
                    None => {}
                }
                state = self.front.0.1.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let want = buf.len().min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_file_keeps_every_byte_across_writeback_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut out = StreamedFile::new(File::create(&path).unwrap());
        // Odd-sized writes over several steps, so advice lands mid-write.
        let chunk: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        while expected.len() < (5 * WRITEBACK_STEP) as usize {
            out.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        assert!(out.handed >= 3 * WRITEBACK_STEP, "no writeback step was taken");
        out.into_inner().sync_all().unwrap();
        assert!(
            std::fs::read(&path).unwrap() == expected,
            "the file differs from what was written"
        );
    }

    #[test]
    fn a_follower_reads_exactly_what_is_written_and_stops_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let front = Front::default();
        let mut out = StreamedFile::new(File::create(&path).unwrap()).followed(front.clone());
        let mut follower = Follower::open(&path, front).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            io::Read::read_to_end(&mut follower, &mut got).map(|_| got)
        });
        let mut expected = Vec::new();
        for i in 0..200u32 {
            let chunk = vec![(i % 256) as u8; 10_007];
            out.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        out.into_inner();
        assert!(reader.join().unwrap().unwrap() == expected);

        // An abandoned file ends the follower with an error instead of a hang.
        let front = Front::default();
        let out = StreamedFile::new(File::create(&path).unwrap()).followed(front.clone());
        let mut follower = Follower::open(&path, front).unwrap();
        drop(out);
        assert!(io::Read::read_to_end(&mut follower, &mut Vec::new()).is_err());
    }

    #[test]
    fn atomic_write_and_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        let job = backups.join("app");
        std::fs::create_dir_all(&job).unwrap();
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(staging.join("run1")).unwrap();
        write_atomic(&job.join("a.json"), b"{}").unwrap();
        assert_eq!(std::fs::read(job.join("a.json")).unwrap(), b"{}");
        std::fs::write(job.join("b.tar.zst.partial"), b"x").unwrap();
        let removed = sweep_leftovers(&backups, &staging).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(job.join("a.json").exists());
        assert!(!job.join("b.tar.zst.partial").exists());
        assert!(staging.exists() && std::fs::read_dir(&staging).unwrap().next().is_none());
    }

    #[test]
    fn cleanup_removes_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"").unwrap();
        std::fs::write(&b, b"").unwrap();
        {
            let mut c = Cleanup::new();
            c.add(&a);
            c.add(&b);
            c.keep(&b);
        }
        assert!(!a.exists());
        assert!(b.exists());
    }
}
