//! Pure policies: functions of their inputs (time is passed in), tested with tables of
//! cases.
//!
//! - [`retention`]: which backups to keep (restic `forget` semantics).
//! - [`schedule`]: cron schedules in a time zone, computed fire times.

pub mod retention;
pub mod schedule;
