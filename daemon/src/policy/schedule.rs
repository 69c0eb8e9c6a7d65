//! Schedules: when a job's backups fire, computed (never waited for) from a cron expression
//! and an IANA time zone.
//!
//! The daemon parses each job's `schedule` and `timezone` once with [`Schedule::parse`], then
//! asks [`Schedule::next_after`] for the next fire instant to sleep until, and
//! [`Schedule::prev_at_or_before`] whether a run was missed since the last backup (catch-up).
//! Everything is pure: the functions take and return UTC instants and never read the clock.
//!
//! Expressions have 6 fields, `seconds minutes hours day-of-month month day-of-week`, with the
//! usual cron syntax (`*`, `a-b`, `a,b`, `*/n`, `a-b/n`, month and weekday names, and croner's
//! extensions `L`, `W`, `#`, `?`); day-of-month and day-of-week combine with OR when both are
//! restricted, as in Vixie cron. Shorthands (case-insensitive): `@hourly` = `0 0 * * * *`,
//! `@daily` = `0 0 0 * * *`, `@weekly` = `0 0 0 * * 0` (Sunday), `@monthly` = `0 0 0 1 * *`,
//! `@yearly` / `@annually` = `0 0 0 1 1 *`. The time zone defaults to UTC when empty.
//!
//! How fire times are computed: croner is used only as a calendar engine over *wall-clock*
//! (naive local) times — it is run on naive times dressed as UTC, where no DST exists. Each
//! matching wall-clock time is then mapped to instants here with chrono-tz, because croner 3's
//! own DST handling starts from the naive local time of the query and can return instants
//! before it during a fall-back. The mapping follows cronie's model:
//!
//! * A schedule whose hours field starts with `*` (`*`, `*/2`, `@hourly`) *follows the clock*:
//!   it runs whenever the local clock shows a matching time. A wall-clock time skipped by
//!   spring-forward does not run; one shown twice by fall-back runs twice. So an hourly job
//!   fires 23 times on the spring-forward day and 25 times on the fall-back day, i.e. once per
//!   elapsed hour.
//! * Any other schedule (specific hours, e.g. `0 30 2 * * *`) is tied to a time of day and runs
//!   once per matching local time: a time skipped by spring-forward runs once at the first
//!   instant after the gap (02:30 in Europe/Berlin → 03:00 CEST, like cronie), and a time shown
//!   twice by fall-back runs only at its first occurrence (02:30 CEST, not 02:30 CET). Several
//!   skipped times collapse into that single instant. So a daily 02:30 job runs exactly once
//!   per local day across both DST switches.
//!
//! Fire times are whole seconds; a query instant with a sub-second part works as expected
//! (strictly after / at or before the exact instant).

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// How far back [`Schedule::prev_at_or_before`] looks before giving up.
const PREV_WINDOW_DAYS: i64 = 400;

/// Hours around a query searched for a fall-back that reorders wall-clock times; longer
/// than any real offset change, shorter than the distance between two transitions.
const SHIFT_WINDOW_HOURS: i64 = 24;

/// Shorthands and the 6-field expressions they stand for.
const SHORTHANDS: [(&str, &str); 6] = [
    ("@hourly", "0 0 * * * *"),
    ("@daily", "0 0 0 * * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@monthly", "0 0 0 1 * *"),
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
];

/// A parsed schedule: a cron expression evaluated in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as the user wrote it (trimmed), for messages and display.
    expr: String,
    tz: Tz,
    /// The 6-field expression (shorthands expanded), parsed by croner.
    cron: Cron,
    /// Whether the hours field starts with `*`; see the module docs for what changes.
    follows_clock: bool,
}

/// Why a schedule or time zone was rejected; messages are complete sentences for the user.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is blank.
    #[error(
        "schedule is empty; expected 6 fields (seconds minutes hours day-of-month month \
         day-of-week) or @hourly/@daily/@weekly/@monthly"
    )]
    Empty,
    /// The expression does not have exactly 6 fields.
    #[error(
        "schedule '{expr}' has {count} fields; expected 6 (seconds minutes hours day-of-month \
         month day-of-week) or @hourly/@daily/@weekly/@monthly"
    )]
    FieldCount {
        /// The expression as given.
        expr: String,
        /// How many whitespace-separated fields it has.
        count: usize,
    },
    /// An `@name` that is not one of the supported shorthands.
    #[error(
        "schedule '{expr}' is not a known shorthand; expected @hourly, @daily, @weekly, \
         @monthly or @yearly"
    )]
    UnknownShorthand {
        /// The expression as given.
        expr: String,
    },
    /// A field has a value or syntax croner rejects.
    #[error("schedule '{expr}' is not a valid cron expression: {reason}")]
    Invalid {
        /// The expression as given.
        expr: String,
        /// croner's description of the problem.
        reason: String,
    },
    /// The fields are valid but no date ever matches (e.g. 30 February).
    #[error(
        "schedule '{expr}' never fires: no date matches its day-of-month, month and \
         day-of-week fields"
    )]
    NeverFires {
        /// The expression as given.
        expr: String,
    },
    /// The time zone is not an IANA name chrono-tz knows.
    #[error("unknown timezone '{name}'")]
    UnknownTimezone {
        /// The name as given.
        name: String,
    },
}

impl Schedule {
    /// Parses a 6-field cron expression or shorthand, evaluated in the IANA `timezone`
    /// (empty means UTC).
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let expr = expr.trim();
        let timezone = timezone.trim();
        let tz = if timezone.is_empty() {
            Tz::UTC
        } else {
            Tz::from_str(timezone).map_err(|_| ScheduleError::UnknownTimezone {
                name: timezone.to_owned(),
            })?
        };

        if expr.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let expanded = if expr.starts_with('@') {
            SHORTHANDS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(expr))
                .map(|(_, fields)| *fields)
                .ok_or_else(|| ScheduleError::UnknownShorthand {
                    expr: expr.to_owned(),
                })?
        } else {
            expr
        };

        // Counted here rather than left to croner, which would silently accept 5 fields (no
        // seconds) or 7 (with years) and so change the meaning of a mistyped schedule.
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 6 {
            return Err(ScheduleError::FieldCount {
                expr: expr.to_owned(),
                count: fields.len(),
            });
        }
        let follows_clock = fields.get(2).is_some_and(|hours| hours.starts_with('*'));

        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .build()
            .parse(expanded)
            .map_err(|e| ScheduleError::Invalid {
                expr: expr.to_owned(),
                reason: e.to_string(),
            })?;

        let schedule = Schedule {
            expr: expr.to_owned(),
            tz,
            cron,
            follows_clock,
        };
        // Rejecting impossible dates now turns a silent "never runs" into a config error.
        // croner searches up to year 5000, far beyond the 400-year cycle of the Gregorian
        // calendar, so a miss from 1970 means never.
        let epoch = DateTime::<Utc>::UNIX_EPOCH.naive_utc();
        if schedule.next_naive(epoch, true).is_none() {
            return Err(ScheduleError::NeverFires {
                expr: expr.to_owned(),
            });
        }
        Ok(schedule)
    }

    /// The expression as given (trimmed; shorthands are not expanded).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone the expression is evaluated in.
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.tz
    }

    /// First fire time strictly after `after`.
    ///
    /// `None` only if there is none before croner's search limit (year 5000).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Wall-clock times are searched in order, but right after a fall-back the clock shows
        // times lower than at `after`; those instants are still in the future, so the search
        // starts at the lowest wall-clock time shown after `after`.
        let mut cursor = whole_seconds(self.local(after));
        if let Some(fall) = self.fall_back(after, self.plus(after, SHIFT_WINDOW_HOURS)) {
            cursor = cursor.min(fall.wall_after);
        }
        let mut inclusive = true;
        // Best instant so far, and the wall-clock time past which no candidate can beat it.
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        while let Some(naive) = self.next_naive(cursor, inclusive) {
            if best.is_some_and(|(_, stop)| naive > stop) {
                break;
            }
            for instant in self.instants(naive).into_iter().flatten() {
                if instant > after && best.is_none_or(|(b, _)| instant < b) {
                    // Wall-clock order and instant order only disagree across a fall-back:
                    // an earlier instant may show a later wall-clock time, up to the time the
                    // clock was turned back at.
                    let mut stop = self.local(instant);
                    let behind = self.plus(instant, -SHIFT_WINDOW_HOURS);
                    if let Some(fall) = self.fall_back(behind, instant) {
                        stop = stop.max(fall.wall_before);
                    }
                    best = Some((instant, stop));
                }
            }
            cursor = naive;
            inclusive = false;
        }
        best.map(|(instant, _)| instant)
    }

    /// Latest fire time at or before `at` (for catch-up: "was a run missed since the last
    /// backup?").
    ///
    /// Looks back at most 400 days; `None` if the schedule did not fire in that window.
    pub fn prev_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let earliest = at
            .checked_sub_signed(TimeDelta::days(PREV_WINDOW_DAYS))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // Wall-clock bound for the backward search, padded by a day so that no offset change
        // can hide a candidate inside the window.
        let floor = self
            .local(earliest)
            .checked_sub_signed(TimeDelta::hours(SHIFT_WINDOW_HOURS))
            .unwrap_or(NaiveDateTime::MIN);
        // Mirror image of `next_after`: just before a fall-back the clock showed times higher
        // than at `at`.
        let mut cursor = whole_seconds(self.local(at));
        if let Some(fall) = self.fall_back(self.plus(at, -SHIFT_WINDOW_HOURS), at) {
            cursor = cursor.max(fall.wall_before);
        }
        let mut inclusive = true;
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        while let Some(naive) = self.prev_naive(cursor, inclusive) {
            if naive < floor || best.is_some_and(|(_, stop)| naive < stop) {
                break;
            }
            for instant in self.instants(naive).into_iter().flatten() {
                if instant <= at && instant >= earliest && best.is_none_or(|(b, _)| instant > b) {
                    let mut stop = self.local(instant);
                    if let Some(fall) = self.fall_back(instant, self.plus(instant, SHIFT_WINDOW_HOURS)) {
                        stop = stop.min(fall.wall_after);
                    }
                    best = Some((instant, stop));
                }
            }
            cursor = naive;
            inclusive = false;
        }
        best.map(|(instant, _)| instant)
    }

    /// The instants a matching wall-clock time fires at (see the module docs for the rules).
    fn instants(&self, naive: NaiveDateTime) -> [Option<DateTime<Utc>>; 2] {
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => [Some(t.to_utc()), None],
            LocalResult::Ambiguous(first, second) => {
                let again = self.follows_clock.then(|| second.to_utc());
                [Some(first.to_utc()), again]
            }
            LocalResult::None if self.follows_clock => [None, None],
            LocalResult::None => [self.gap_end(naive), None],
        }
    }

    /// First instant after the DST gap that swallowed the wall-clock time `naive`.
    fn gap_end(&self, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
        let exists = |secs: i64| {
            naive
                .checked_add_signed(TimeDelta::seconds(secs))
                .and_then(|t| self.tz.from_local_datetime(&t).earliest())
        };
        // Binary search for the first existing second: `lo` is inside the gap, `hi` is not.
        let mut lo = 0_i64;
        let mut hi = SHIFT_WINDOW_HOURS * 3600;
        exists(hi)?;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if exists(mid).is_some() {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        exists(hi).map(|t| t.to_utc())
    }

    /// The fall-back (offset decrease) between instants `from` and `to`, if any; assumes at
    /// most one offset change in between, which holds for windows of a day.
    fn fall_back(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<FallBack> {
        let offset = |t: DateTime<Utc>| {
            self.tz
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        };
        let (before, after) = (offset(from), offset(to));
        if after >= before {
            return None;
        }
        // Binary search over whole seconds (tz transitions are at whole seconds) for the first
        // instant with the new offset.
        let at = |secs: i64| DateTime::<Utc>::from_timestamp(secs, 0);
        let (mut lo, mut hi) = (from.timestamp(), to.timestamp());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if at(mid).is_some_and(|t| offset(t) == before) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let wall = |offset: i32| {
            at(hi)?
                .naive_utc()
                .checked_add_signed(TimeDelta::seconds(i64::from(offset)))
        };
        Some(FallBack {
            wall_before: wall(before)?,
            wall_after: wall(after)?,
        })
    }

    /// `t` moved by `hours`, saturating at the ends of the representable range.
    fn plus(&self, t: DateTime<Utc>, hours: i64) -> DateTime<Utc> {
        t.checked_add_signed(TimeDelta::hours(hours)).unwrap_or(t)
    }

    /// Wall-clock time of `t` in the schedule's zone.
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.tz).naive_local()
    }

    /// Next wall-clock time matching the expression, from `from` (inclusive or not).
    fn next_naive(&self, from: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        self.cron
            .find_next_occurrence(&Utc.from_utc_datetime(&from), inclusive)
            .ok()
            .map(|t| t.naive_utc())
    }

    /// Previous wall-clock time matching the expression, from `from` (inclusive or not).
    fn prev_naive(&self, from: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        self.cron
            .find_previous_occurrence(&Utc.from_utc_datetime(&from), inclusive)
            .ok()
            .map(|t| t.naive_utc())
    }
}

/// A fall-back transition, as the wall clock shows it.
#[derive(Debug, Clone, Copy)]
struct FallBack {
    /// Wall-clock time the clock was turned back at (e.g. 03:00 in Europe/Berlin).
    wall_before: NaiveDateTime,
    /// Wall-clock time it was turned back to (e.g. 02:00).
    wall_after: NaiveDateTime,
}

/// Drops the sub-second part; croner keeps it through its search and fire times are whole
/// seconds, so searching from the truncated time is both exact and safe.
fn whole_seconds(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamps are RFC 3339")
    }

    fn sched(expr: &str, tz: &str) -> Schedule {
        Schedule::parse(expr, tz).expect("test schedules are valid")
    }

    /// All fire times in `(from, to]`, by chaining `next_after`.
    fn fires(s: &Schedule, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let (mut t, end) = (utc(from), utc(to));
        let mut out = Vec::new();
        while let Some(next) = s.next_after(t) {
            if next > end {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }

    #[test]
    fn next_after_table() {
        // (expr, tz, after, expected next)
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:00Z",
                "2026-01-01T10:00:02Z",
            ),
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:01Z",
                "2026-01-01T10:00:02Z",
            ),
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:01.5Z",
                "2026-01-01T10:00:02Z",
            ),
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:01.999999999Z",
                "2026-01-01T10:00:02Z",
            ),
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T23:59:59Z",
                "2026-01-02T00:00:00Z",
            ),
            ("@daily", "UTC", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
            (
                "@daily",
                "UTC",
                "2025-12-31T23:59:59.999Z",
                "2026-01-01T00:00:00Z",
            ),
            ("@daily", "", "2026-02-28T12:00:00Z", "2026-03-01T00:00:00Z"),
            (
                "@DAILY",
                "Etc/UTC",
                "2026-02-28T12:00:00Z",
                "2026-03-01T00:00:00Z",
            ),
            ("@hourly", "UTC", "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"),
            ("@weekly", "UTC", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
            ("@monthly", "UTC", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
            ("@yearly", "UTC", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("@annually", "UTC", "2025-06-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            (
                "0 0 2 * * *",
                "UTC",
                "2026-01-01T02:00:00Z",
                "2026-01-02T02:00:00Z",
            ),
            (
                "0 0 9 * * MON-FRI",
                "UTC",
                "2026-01-02T09:00:00Z",
                "2026-01-05T09:00:00Z",
            ),
            (
                "0 0 0 29 2 *",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2028-02-29T00:00:00Z",
            ),
            // @daily in Berlin is local midnight: 23:00 UTC in winter, 22:00 in summer.
            (
                "@daily",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                "2026-03-28T23:00:00Z",
            ),
            (
                "@daily",
                "Europe/Berlin",
                "2026-03-29T12:00:00Z",
                "2026-03-29T22:00:00Z",
            ),
            // Spring forward: 02:30 does not exist on 03-29 and runs at 03:00 CEST.
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-03-29T00:59:59Z",
                "2026-03-29T01:00:00Z",
            ),
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
            ),
            // Fall back: 02:30 runs at its first occurrence (CEST) only. The query at 01:00 UTC
            // (02:00 CET, local time before 02:30 again) must not fire 02:30 CET.
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T23:00:00Z",
                "2026-10-25T00:30:00Z",
            ),
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
            ),
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-10-25T01:00:00Z",
                "2026-10-26T01:30:00Z",
            ),
            // Clock-following schedules run in both passes of the repeated hour.
            (
                "0 30 * * * *",
                "Europe/Berlin",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:30:00Z",
            ),
            (
                "0 30 * * * *",
                "Europe/Berlin",
                "2026-10-25T00:40:00Z",
                "2026-10-25T01:30:00Z",
            ),
            (
                "0 0 * * * *",
                "Europe/Berlin",
                "2026-10-25T00:10:00Z",
                "2026-10-25T01:00:00Z",
            ),
            // ... and skip the missing hour: 01:30 CET is followed by 03:30 CEST.
            (
                "0 30 * * * *",
                "Europe/Berlin",
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:30:00Z",
            ),
            // Several times in the gap collapse into one run at 03:00 CEST.
            (
                "0 */20 2 * * *",
                "Europe/Berlin",
                "2026-03-28T23:00:00Z",
                "2026-03-29T01:00:00Z",
            ),
            (
                "0 */20 2 * * *",
                "Europe/Berlin",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:00:00Z",
            ),
            // A zone with a 30-minute DST shift (Lord Howe Island, spring forward 2026-10-04
            // 02:00 → 02:30 local, +10:30 → +11:00).
            (
                "0 15 2 * * *",
                "Australia/Lord_Howe",
                "2026-10-03T14:00:00Z",
                "2026-10-03T15:30:00Z",
            ),
        ];
        for (expr, tz, after, want) in cases {
            let got = sched(expr, tz).next_after(utc(after));
            assert_eq!(got, Some(utc(want)), "{expr} in {tz:?} after {after}");
        }
    }

    #[test]
    fn daily_0230_berlin_runs_once_per_local_day() {
        let s = sched("0 30 2 * * *", "Europe/Berlin");
        let cases: &[(&str, &str, &[&str])] = &[
            (
                // Spring forward on Sunday 03-29.
                "2026-03-26T23:00:00Z",
                "2026-04-01T22:00:00Z",
                &[
                    "2026-03-27T01:30:00Z",
                    "2026-03-28T01:30:00Z",
                    "2026-03-29T01:00:00Z",
                    "2026-03-30T00:30:00Z",
                    "2026-03-31T00:30:00Z",
                    "2026-04-01T00:30:00Z",
                ],
            ),
            (
                // Fall back on Sunday 10-25.
                "2026-10-22T22:00:00Z",
                "2026-10-28T23:00:00Z",
                &[
                    "2026-10-23T00:30:00Z",
                    "2026-10-24T00:30:00Z",
                    "2026-10-25T00:30:00Z",
                    "2026-10-26T01:30:00Z",
                    "2026-10-27T01:30:00Z",
                    "2026-10-28T01:30:00Z",
                ],
            ),
        ];
        for (from, to, want) in cases {
            let want: Vec<_> = want.iter().map(|w| utc(w)).collect();
            assert_eq!(fires(&s, from, to), want, "{from}..{to}");
        }
    }

    #[test]
    fn fires_per_local_day_across_dst() {
        // (expr, local day as UTC range, fires): hourly follows the clock (23 / 25 elapsed
        // hours), fixed times run once per local day.
        let cases: &[(&str, &str, &str, usize)] = &[
            ("@hourly", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 23),
            ("@hourly", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 25),
            ("@hourly", "2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", 24),
            (
                "0 0 0-23 * * *",
                "2026-10-24T22:00:00Z",
                "2026-10-25T23:00:00Z",
                24,
            ),
            (
                "0 0 0-23 * * *",
                "2026-03-28T23:00:00Z",
                "2026-03-29T22:00:00Z",
                23,
            ),
            ("0 0 2 * * *", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 1),
            ("0 0 2 * * *", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 1),
            ("0 59 2 * * *", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 1),
            ("0 0 3 * * *", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 1),
            (
                "0 */20 2 * * *",
                "2026-03-28T23:00:00Z",
                "2026-03-29T22:00:00Z",
                1,
            ),
            (
                "0 */20 2 * * *",
                "2026-10-24T22:00:00Z",
                "2026-10-25T23:00:00Z",
                3,
            ),
            (
                "0 */15 * * * *",
                "2026-10-24T22:00:00Z",
                "2026-10-25T23:00:00Z",
                100,
            ),
            (
                "0 */15 * * * *",
                "2026-03-28T23:00:00Z",
                "2026-03-29T22:00:00Z",
                92,
            ),
        ];
        for (expr, from, to, want) in cases {
            let s = sched(expr, "Europe/Berlin");
            // The range is (from - 1s, to - 1s]: the local day [00:00, next 00:00).
            let from = utc(from) - TimeDelta::seconds(1);
            let to = utc(to) - TimeDelta::seconds(1);
            let got = fires(&s, &from.to_rfc3339(), &to.to_rfc3339());
            assert_eq!(got.len(), *want, "{expr} {from}: {got:?}");
            assert!(got.windows(2).all(|w| w[0] < w[1]), "{expr}: not increasing");
        }
    }

    #[test]
    fn hourly_across_fall_back_is_every_elapsed_hour() {
        let s = sched("@hourly", "Europe/Berlin");
        let got = fires(&s, "2026-10-24T21:59:59Z", "2026-10-25T22:59:59Z");
        let want: Vec<_> = (0..25)
            .map(|h| utc("2026-10-24T22:00:00Z") + TimeDelta::hours(h))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn every_two_seconds() {
        let s = sched("*/2 * * * * *", "UTC");
        let got = fires(&s, "2026-01-01T10:00:00Z", "2026-01-01T10:00:10Z");
        let want: Vec<_> = (1..=5)
            .map(|i| utc("2026-01-01T10:00:00Z") + TimeDelta::seconds(2 * i))
            .collect();
        assert_eq!(got, want);
        // In a gap the clock jumps from 01:59:58 CET to 03:00:00 CEST.
        let s = sched("*/2 * * * * *", "Europe/Berlin");
        let got = fires(&s, "2026-03-29T00:59:57Z", "2026-03-29T01:00:02Z");
        let want = [
            "2026-03-29T00:59:58Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:00:02Z",
        ];
        assert_eq!(got, want.map(utc));
    }

    #[test]
    fn prev_at_or_before_table() {
        // (expr, tz, at, expected)
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:03Z",
                Some("2026-01-01T10:00:02Z"),
            ),
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:02Z",
                Some("2026-01-01T10:00:02Z"),
            ),
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:02.5Z",
                Some("2026-01-01T10:00:02Z"),
            ),
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:01.9Z",
                Some("2026-01-01T10:00:00Z"),
            ),
            (
                "@daily",
                "UTC",
                "2026-01-01T00:00:00Z",
                Some("2026-01-01T00:00:00Z"),
            ),
            (
                "@daily",
                "UTC",
                "2025-12-31T23:59:59Z",
                Some("2025-12-31T00:00:00Z"),
            ),
            (
                "@yearly",
                "UTC",
                "2026-06-01T00:00:00Z",
                Some("2026-01-01T00:00:00Z"),
            ),
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-03-29T01:00:00Z",
                Some("2026-03-29T01:00:00Z"),
            ),
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-03-29T00:59:59Z",
                Some("2026-03-28T01:30:00Z"),
            ),
            // 02:30 CET on 10-25 is not a fire time; the CEST one is.
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-10-25T01:45:00Z",
                Some("2026-10-25T00:30:00Z"),
            ),
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-10-25T00:29:59Z",
                Some("2026-10-24T00:30:00Z"),
            ),
            (
                "0 30 * * * *",
                "Europe/Berlin",
                "2026-10-25T01:45:00Z",
                Some("2026-10-25T01:30:00Z"),
            ),
            (
                "0 30 * * * *",
                "Europe/Berlin",
                "2026-10-25T01:10:00Z",
                Some("2026-10-25T00:30:00Z"),
            ),
            // Feb 29 did not occur within the 400-day window.
            ("0 0 0 29 2 *", "UTC", "2026-06-01T00:00:00Z", None),
            (
                "0 0 0 29 2 *",
                "UTC",
                "2028-06-01T00:00:00Z",
                Some("2028-02-29T00:00:00Z"),
            ),
        ];
        for (expr, tz, at, want) in cases {
            let got = sched(expr, tz).prev_at_or_before(utc(at));
            assert_eq!(got, want.map(utc), "{expr} in {tz:?} at {at}");
        }
    }

    #[test]
    fn prev_is_consistent_with_next() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-03-25T00:00:00Z",
                "2026-04-02T00:00:00Z",
            ),
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                "2026-10-21T00:00:00Z",
                "2026-10-29T00:00:00Z",
            ),
            (
                "@hourly",
                "Europe/Berlin",
                "2026-10-24T18:00:00Z",
                "2026-10-25T06:00:00Z",
            ),
            (
                "0 30 * * * *",
                "Europe/Berlin",
                "2026-03-28T20:00:00Z",
                "2026-03-29T06:00:00Z",
            ),
            (
                "0 */20 2 * * *",
                "Europe/Berlin",
                "2026-03-27T00:00:00Z",
                "2026-03-31T00:00:00Z",
            ),
            (
                "0 */20 2 * * *",
                "Europe/Berlin",
                "2026-10-23T00:00:00Z",
                "2026-10-27T00:00:00Z",
            ),
            (
                "0 */15 * * * *",
                "America/New_York",
                "2026-11-01T03:00:00Z",
                "2026-11-01T09:00:00Z",
            ),
            (
                "*/2 * * * * *",
                "UTC",
                "2026-01-01T10:00:00Z",
                "2026-01-01T10:01:00Z",
            ),
        ];
        for (expr, tz, from, to) in cases {
            let s = sched(expr, tz);
            let all = fires(&s, from, to);
            assert!(all.len() > 2, "{expr}: too few fires");
            for pair in all.windows(2) {
                let (prev, next) = (pair[0], pair[1]);
                assert_eq!(s.prev_at_or_before(next), Some(next), "{expr} at {next}");
                let just_before = next - TimeDelta::milliseconds(1);
                assert_eq!(s.prev_at_or_before(just_before), Some(prev), "{expr} {next}");
                assert_eq!(s.next_after(prev), Some(next), "{expr} after {prev}");
            }
            // Every 7 minutes through the range: prev ≤ t < next_after(prev).
            let mut t = utc(from) + TimeDelta::hours(1);
            while t < utc(to) - TimeDelta::hours(1) {
                let prev = s.prev_at_or_before(t).expect("fires in range");
                assert!(prev <= t, "{expr} at {t}");
                let next = s.next_after(prev).expect("fires again");
                assert!(next > t, "{expr} at {t}: prev {prev}, next {next}");
                t += TimeDelta::minutes(7);
            }
        }
    }

    /// Independent statement of the DST rules, minute by minute over instants, for
    /// expressions whose seconds field is 0.
    fn oracle(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let matches = |n: NaiveDateTime| {
            s.cron
                .is_time_matching(&Utc.from_utc_datetime(&n))
                .expect("matching works")
        };
        let minute = TimeDelta::minutes(1);
        let mut out: Vec<DateTime<Utc>> = Vec::new();
        let mut i = from + minute;
        while i <= to {
            let here = s.local(i);
            let before = s.local(i - minute);
            // Wall-clock minutes skipped just before `i` (spring forward).
            let mut skipped = before + minute;
            let mut gap_hit = false;
            while skipped < here {
                gap_hit |= matches(skipped);
                skipped += minute;
            }
            let second_pass = matches!(
                s.tz.from_local_datetime(&here),
                LocalResult::Ambiguous(first, _) if first.to_utc() != i
            );
            let fire = if s.follows_clock {
                matches(here)
            } else {
                gap_hit || (matches(here) && !second_pass)
            };
            if fire {
                out.push(i);
            }
            i += minute;
        }
        out
    }

    #[test]
    fn matches_brute_force_oracle() {
        let exprs = [
            "0 30 2 * * *",
            "0 0 2 * * *",
            "0 15 2 * * *",
            "0 */20 2 * * *",
            "0 */20 1-3 * * *",
            "0 0 * * * *",
            "0 30 * * * *",
            "0 */15 * * * *",
            "0 0 */2 * * *",
            "0 45 1,2,3 * * *",
            "0 0 0 * * *",
        ];
        // (zone, start of a two-day window containing a transition)
        let windows = [
            ("Europe/Berlin", "2026-03-28T00:00:00Z"),
            ("Europe/Berlin", "2026-10-24T00:00:00Z"),
            ("America/New_York", "2026-03-07T12:00:00Z"),
            ("America/New_York", "2026-10-31T12:00:00Z"),
            ("Australia/Lord_Howe", "2026-04-04T00:00:00Z"),
            ("Australia/Lord_Howe", "2026-10-03T00:00:00Z"),
            ("UTC", "2026-03-28T00:00:00Z"),
        ];
        for (tz, start) in windows {
            for expr in exprs {
                let s = sched(expr, tz);
                let from = utc(start);
                let to = from + TimeDelta::days(2);
                let want = oracle(&s, from, to);
                let got = fires(&s, &from.to_rfc3339(), &to.to_rfc3339());
                assert_eq!(got, want, "{expr} in {tz} from {start}");
                // Arbitrary query points, including ones inside DST overlaps and gaps.
                let mut t = from;
                while t < to {
                    if let Some(next) = want.iter().find(|f| **f > t) {
                        assert_eq!(s.next_after(t), Some(*next), "{expr} {tz} after {t}");
                    }
                    if let Some(prev) = want.iter().rev().find(|f| **f <= t) {
                        assert_eq!(s.prev_at_or_before(t), Some(*prev), "{expr} {tz} at {t}");
                    }
                    t += TimeDelta::seconds(7 * 60 + 13);
                }
                for pair in want.windows(2) {
                    let just_before = pair[1] - TimeDelta::seconds(1);
                    assert_eq!(s.prev_at_or_before(just_before), Some(pair[0]), "{expr} {tz}");
                    assert_eq!(s.prev_at_or_before(pair[1]), Some(pair[1]), "{expr} {tz}");
                }
            }
        }
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "0 0 2 * *",
                "UTC",
                "schedule '0 0 2 * *' has 5 fields; expected 6 (seconds minutes hours \
                 day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly",
            ),
            (
                "0 0 2 * * * 2026",
                "UTC",
                "schedule '0 0 2 * * * 2026' has 7 fields; expected 6 (seconds minutes hours \
                 day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly",
            ),
            (
                "  ",
                "UTC",
                "schedule is empty; expected 6 fields (seconds minutes hours day-of-month \
                 month day-of-week) or @hourly/@daily/@weekly/@monthly",
            ),
            (
                "@fortnightly",
                "UTC",
                "schedule '@fortnightly' is not a known shorthand; expected @hourly, @daily, \
                 @weekly, @monthly or @yearly",
            ),
            (
                "0 0 0 30 2 *",
                "UTC",
                "schedule '0 0 0 30 2 *' never fires: no date matches its day-of-month, month \
                 and day-of-week fields",
            ),
            ("0 0 2 * * *", "Europe/Berln", "unknown timezone 'Europe/Berln'"),
            ("0 0 2 * * *", "europe/berlin", "unknown timezone 'europe/berlin'"),
            ("0 0 2 * * *", "+02:00", "unknown timezone '+02:00'"),
        ];
        for (expr, tz, want) in cases {
            let err = Schedule::parse(expr, tz).expect_err(expr);
            assert_eq!(err.to_string(), *want, "{expr} {tz}");
        }

        // Field values croner rejects: the message names the expression and croner's reason.
        let invalid = [
            "0 0 25 * * *",
            "60 * * * * *",
            "0 0 2 * 13 *",
            "0 0 2 x * *",
            "a b c d e f",
        ];
        for expr in invalid {
            match Schedule::parse(expr, "UTC") {
                Err(e @ ScheduleError::Invalid { .. }) => {
                    let prefix = format!("schedule '{expr}' is not a valid cron expression: ");
                    assert!(e.to_string().starts_with(&prefix), "{e}");
                }
                other => panic!("{expr}: {other:?}"),
            }
        }
    }

    #[test]
    fn parse_accessors() {
        let cases: &[(&str, &str, &str, Tz)] = &[
            (
                "  0 30 2 * * *  ",
                "Europe/Berlin",
                "0 30 2 * * *",
                chrono_tz::Europe::Berlin,
            ),
            ("@daily", "", "@daily", chrono_tz::UTC),
            ("@Weekly", " UTC ", "@Weekly", chrono_tz::UTC),
            (
                "0 0 12 ? * SUN#2",
                "America/New_York",
                "0 0 12 ? * SUN#2",
                chrono_tz::America::New_York,
            ),
        ];
        for (expr, tz, want_expr, want_tz) in cases {
            let s = sched(expr, tz);
            assert_eq!(s.expr(), *want_expr);
            assert_eq!(s.timezone(), *want_tz);
        }
    }
}
