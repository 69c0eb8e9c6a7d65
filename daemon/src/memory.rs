//! The C allocator, tuned once at start-up for a long-running daemon.
//!
//! zstd and SQLite (C code, so glibc's malloc, not Rust's allocator) take buffers of
//! several MiB during a run. glibc serves large blocks with `mmap` and returns them on
//! `free`, but its mmap threshold is dynamic: after the first such block is freed,
//! the threshold rises to its size (up to 32 MiB), later large blocks come from the
//! heap arenas, and the arenas keep them resident. Measured with the 1 GiB bench data
//! set and three backups: the default left cofferd at 58 MiB idle (peak 58 MiB); a
//! fixed 256 KiB threshold gives 13 MiB idle (peak 42 MiB), at the cost of one
//! `mmap`/`munmap` pair per large buffer — a handful per run.
//!
//! This is the only `unsafe` in Coffer: `mallopt` is a plain libc call.

/// The fixed mmap threshold: blocks from 256 KiB up go straight to the system.
const MMAP_THRESHOLD: i32 = 256 << 10;

/// Fixes glibc's mmap threshold (see the module docs). Call first thing in `main`,
/// before any other thread exists. A no-op on other C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // SAFETY: `mallopt` takes two integers and has no memory-safety preconditions;
    // it runs before any other thread is started, so no allocation races with it.
    let ok = unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if ok == 0 {
        // Only a memory footprint is at stake; keep going with glibc's defaults.
        eprintln!("cofferd: warning: could not set the allocator's mmap threshold");
    }
}

/// Fixes glibc's mmap threshold (see the module docs). A no-op on other C libraries.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}
