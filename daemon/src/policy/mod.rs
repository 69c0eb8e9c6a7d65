//! Pure policies: functions of their inputs (time is passed in), tested with tables of
//! cases.
//!
//! - [`exclude`]: the `exclude` globs of a job's media.
//! - [`retention`]: which backups to keep (restic `forget` semantics).
//! - [`schedule`]: cron schedules in a time zone, computed fire times.

pub mod exclude;
pub mod retention;
pub mod schedule;
