//! Retention policy: decides which of a job's backups to keep and which to remove.
//!
//! This is a pure function with no I/O. The daemon hands [`apply`] the job's [`Policy`], the
//! job's time zone and every backup it knows ([`Candidate`]s, in any order); it gets back one
//! [`Decision`] per backup, newest first, saying whether to keep it and why. Deleting the
//! removed backups is the caller's business.
//!
//! The semantics follow restic's `forget` (`ApplyPolicy` in restic's
//! `internal/restic/snapshot_policy.go`, 0.17 or later):
//!
//! 1. Backups are sorted newest first (equal times: id descending). The reference time for
//!    `keep-within` is the newest backup, never the wall clock, so the result does not depend
//!    on when the function is called.
//! 2. A backup is kept if ANY rule keeps it, and every rule that keeps it adds a reason.
//!    Counters are independent: a backup kept by `daily` still uses up a `weekly` slot if it
//!    is also the first of its week.
//! 3. `keep-last N` keeps the N newest backups.
//! 4. `keep-within D` keeps backups strictly newer than `newest - D` (restic: `t.After(latest -
//!    within)`); a backup exactly `D` older than the newest is not kept by this rule. `D` is an
//!    exact duration (30d = 30 × 24 h), unlike restic's calendar arithmetic, so across a DST
//!    switch it may differ from restic by the size of the shift.
//! 5. Bucket rules (`hourly`, `daily`, `weekly`, `monthly`, `yearly`): walking newest to
//!    oldest, a rule with slots left keeps a backup whose bucket differs from the bucket of the
//!    last backup that rule kept, and uses up one slot. So the newest backup of each bucket is
//!    kept, for the N newest buckets that contain backups (gaps without backups use no slots).
//!    Buckets are computed in the job's time zone: hourly = local date and hour (the hour
//!    repeated when DST ends is one bucket), daily = local date, weekly = ISO 8601 week-based
//!    year and week of the local date, monthly = local year and month, yearly = local year.
//! 6. Oldest rule (restic ≥ 0.17): if a bucket rule still has slots left when it reaches the
//!    oldest backup, that backup is kept even when its bucket was already kept, so the history
//!    reaches back as far as possible.
//! 7. Safety: protected (pinned) backups are always kept; the newest backup is always kept; an
//!    empty policy (every count zero and no, or a zero, `keep-within`) keeps everything. A zero
//!    `keep-within` counts as unset, as in restic.
//!
//! Protection does not exempt a backup from the rules: a protected backup still occupies the
//! bucket slots it wins, exactly like restic's `--keep-tag` snapshots, so pinning an old
//! backup never changes which other backups are kept.
//!
//! Reason strings (stable, shown to users), in the order they are recorded:
//!
//! | reason                     | rule                                                      |
//! |----------------------------|-----------------------------------------------------------|
//! | `policy keeps everything`  | the policy is empty                                       |
//! | `keep-last`                | among the `keep-last` newest                              |
//! | `keep-within 30d`          | within `keep-within` of the newest (duration as `1d12h`) |
//! | `hourly` … `yearly`        | newest backup of one of the rule's buckets                |
//! | `oldest hourly` … `oldest yearly` | the oldest backup, kept because the rule had slots left |
//! | `protected`                | the backup is pinned                                      |
//! | `newest`                   | the newest backup                                         |
//!
//! Bucket reasons appear in the order hourly, daily, weekly, monthly, yearly. A removed backup
//! has an empty reason list.

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

/// Reason recorded for every backup when the policy is empty.
const REASON_EVERYTHING: &str = "policy keeps everything";
/// Reason for the backups inside the `keep-last` window.
const REASON_LAST: &str = "keep-last";
/// Reason for pinned backups.
const REASON_PROTECTED: &str = "protected";
/// Reason for the newest backup.
const REASON_NEWEST: &str = "newest";

/// A job's retention policy; every field at zero / `None` means "keep everything".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest backups.
    pub keep_last: u32,
    /// Keep backups strictly newer than `newest - keep_within`; zero counts as unset.
    pub keep_within: Option<Duration>,
    /// Keep the newest backup of each of the N newest local hours that have backups.
    pub keep_hourly: u32,
    /// Keep the newest backup of each of the N newest local days that have backups.
    pub keep_daily: u32,
    /// Keep the newest backup of each of the N newest ISO weeks that have backups.
    pub keep_weekly: u32,
    /// Keep the newest backup of each of the N newest local months that have backups.
    pub keep_monthly: u32,
    /// Keep the newest backup of each of the N newest local years that have backups.
    pub keep_yearly: u32,
}

impl Policy {
    /// True when no rule is set, in which case [`apply`] keeps every backup.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.within().is_none()
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
    }

    /// One-line summary of the set rules, e.g. `"keep-last 10, keep-within 30d, keep-daily 7"`,
    /// or `"keep everything"` for an empty policy.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.keep_last > 0 {
            parts.push(format!("keep-last {}", self.keep_last));
        }
        if let Some(within) = self.within() {
            parts.push(format!("keep-within {}", humanize(within)));
        }
        for kind in BucketKind::ALL {
            let count = kind.count(self);
            if count > 0 {
                parts.push(format!("keep-{} {count}", kind.name()));
            }
        }
        if parts.is_empty() {
            "keep everything".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// `keep_within` with a zero duration folded into "unset", as restic treats it.
    fn within(&self) -> Option<Duration> {
        self.keep_within.filter(|d| !d.is_zero())
    }
}

/// One existing backup, as the daemon knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Backup id; only used to identify the backup and to order backups with equal times.
    pub id: String,
    /// When the backup was taken.
    pub created_at: DateTime<Utc>,
    /// Pinned by the user: always kept.
    pub protected: bool,
}

/// The verdict for one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Id of the [`Candidate`] this decision is about.
    pub id: String,
    /// Creation time of that candidate.
    pub created_at: DateTime<Utc>,
    /// Whether the backup stays; false means the caller should remove it.
    pub keep: bool,
    /// Why it stays (see the module docs for the strings); empty when removed.
    pub reasons: Vec<String>,
}

/// Applies `policy` to `backups`, bucketing times in `tz`.
///
/// Input in any order; output newest first (ties broken by id descending, in the order of
/// [`coffer_common::ids::cmp_ids`]), one Decision per candidate.
pub fn apply(policy: &Policy, tz: Tz, backups: &[Candidate]) -> Vec<Decision> {
    let mut order: Vec<&Candidate> = backups.iter().collect();
    order.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| coffer_common::ids::cmp_ids(&b.id, &a.id))
    });

    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); order.len()];
    if policy.is_empty() {
        for list in &mut reasons {
            list.push(REASON_EVERYTHING.to_owned());
        }
    } else {
        apply_rules(policy, tz, &order, &mut reasons);
    }

    // The safety nets are recorded even when a rule already keeps the backup, so the user can
    // see that deleting e.g. the pin would not change the outcome.
    for (nr, (candidate, list)) in order.iter().zip(reasons.iter_mut()).enumerate() {
        if candidate.protected {
            list.push(REASON_PROTECTED.to_owned());
        }
        if nr == 0 {
            list.push(REASON_NEWEST.to_owned());
        }
    }

    order
        .into_iter()
        .zip(reasons)
        .map(|(candidate, reasons)| Decision {
            id: candidate.id.clone(),
            created_at: candidate.created_at,
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

/// Runs the counting rules over `order` (newest first), appending reasons per backup.
fn apply_rules(policy: &Policy, tz: Tz, order: &[&Candidate], reasons: &mut [Vec<String>]) {
    let Some(newest) = order.first().map(|c| c.created_at) else {
        return;
    };

    // `None` cutoff with a set rule means the duration reaches past the representable range,
    // so every backup is within it.
    let within = policy.within().map(|d| {
        let cutoff = TimeDelta::from_std(d)
            .ok()
            .and_then(|delta| newest.checked_sub_signed(delta));
        (format!("keep-within {}", humanize(d)), cutoff)
    });

    let mut rules: Vec<BucketRule> = BucketKind::ALL
        .into_iter()
        .map(|kind| BucketRule {
            kind,
            remaining: kind.count(policy),
            last: None,
        })
        .collect();

    // A count that does not fit usize exceeds any possible list length anyway.
    let keep_last = usize::try_from(policy.keep_last).unwrap_or(usize::MAX);
    let oldest = order.len() - 1;
    for (nr, (candidate, list)) in order.iter().zip(reasons.iter_mut()).enumerate() {
        if nr < keep_last {
            list.push(REASON_LAST.to_owned());
        }
        if let Some((reason, cutoff)) = &within
            && cutoff.is_none_or(|cutoff| candidate.created_at > cutoff)
        {
            list.push(reason.clone());
        }

        let local = candidate.created_at.with_timezone(&tz);
        for rule in &mut rules {
            if rule.remaining == 0 {
                continue;
            }
            let bucket = rule.kind.bucket(&local);
            if rule.last != Some(bucket) {
                list.push(rule.kind.name().to_owned());
            } else if nr == oldest {
                list.push(format!("oldest {}", rule.kind.name()));
            } else {
                continue;
            }
            rule.remaining -= 1;
            rule.last = Some(bucket);
        }
    }
}

/// State of one bucket rule during the newest-to-oldest walk.
struct BucketRule {
    kind: BucketKind,
    /// Slots left; the rule is inert at zero.
    remaining: u32,
    /// Bucket of the last backup this rule kept; buckets only advance on a keep, as in restic.
    last: Option<i64>,
}

/// The calendar bucket rules, in the order their reasons are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BucketKind {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl BucketKind {
    const ALL: [BucketKind; 5] = [
        BucketKind::Hourly,
        BucketKind::Daily,
        BucketKind::Weekly,
        BucketKind::Monthly,
        BucketKind::Yearly,
    ];

    /// Name used in reasons and (prefixed with `keep-`) in summaries.
    fn name(self) -> &'static str {
        match self {
            BucketKind::Hourly => "hourly",
            BucketKind::Daily => "daily",
            BucketKind::Weekly => "weekly",
            BucketKind::Monthly => "monthly",
            BucketKind::Yearly => "yearly",
        }
    }

    /// The policy's count for this rule.
    fn count(self, policy: &Policy) -> u32 {
        match self {
            BucketKind::Hourly => policy.keep_hourly,
            BucketKind::Daily => policy.keep_daily,
            BucketKind::Weekly => policy.keep_weekly,
            BucketKind::Monthly => policy.keep_monthly,
            BucketKind::Yearly => policy.keep_yearly,
        }
    }

    /// Bucket key of a local time, shaped like restic's (`YYYYMMDDHH`, `YYYYMMDD`, `YYYYWW`,
    /// `YYYYMM`, `YYYY`); only equality between keys matters.
    fn bucket(self, local: &DateTime<Tz>) -> i64 {
        let year = i64::from(local.year());
        let month = i64::from(local.month());
        let day = i64::from(local.day());
        match self {
            BucketKind::Hourly => year * 1_000_000 + month * 10_000 + day * 100 + i64::from(local.hour()),
            BucketKind::Daily => year * 10_000 + month * 100 + day,
            BucketKind::Weekly => {
                // ISO week-based year, not the calendar year: 2021-01-03 is 2020-W53.
                let week = local.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            BucketKind::Monthly => year * 100 + month,
            BucketKind::Yearly => year,
        }
    }
}

/// Formats a duration compactly like restic does (`30d`, `1d12h`, `1h30m`, `45s`); sub-second
/// parts are shown as milliseconds and anything finer is dropped, as this is only for display.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    let units = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(d.subsec_millis()), "ms"),
    ];
    let text: String = units
        .iter()
        .filter(|(value, _)| *value > 0)
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect();
    if text.is_empty() { "0s".to_owned() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamps are RFC 3339")
    }

    fn cand(id: &str, at: &str) -> Candidate {
        Candidate {
            id: id.to_owned(),
            created_at: utc(at),
            protected: false,
        }
    }

    fn pinned(id: &str, at: &str) -> Candidate {
        Candidate {
            protected: true,
            ..cand(id, at)
        }
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const UTC: Tz = chrono_tz::UTC;

    /// One backup a day at 10:00 UTC, ids `dMMDD`, from `first` to `last` inclusive.
    fn daily_series(first: &str, last: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        let mut day = utc(first);
        let end = utc(last);
        while day <= end {
            out.push(Candidate {
                id: day.format("d%m%d").to_string(),
                created_at: day,
                protected: false,
            });
            day += TimeDelta::days(1);
        }
        out
    }

    struct Case {
        name: &'static str,
        policy: Policy,
        tz: Tz,
        backups: Vec<Candidate>,
        /// Every kept backup, newest first, with its exact reasons; all others must be removed.
        kept: Vec<(&'static str, Vec<&'static str>)>,
    }

    fn days(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n * 86_400))
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "empty input",
                policy: Policy {
                    keep_daily: 7,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![],
                kept: vec![],
            },
            Case {
                name: "empty input, empty policy",
                policy: Policy::default(),
                tz: UTC,
                backups: vec![],
                kept: vec![],
            },
            Case {
                name: "all-zero policy keeps everything",
                policy: Policy::default(),
                tz: UTC,
                backups: vec![
                    cand("a", "2026-01-01T00:00:00Z"),
                    pinned("b", "2026-01-02T00:00:00Z"),
                    cand("c", "2026-01-03T00:00:00Z"),
                ],
                kept: vec![
                    ("c", vec!["policy keeps everything", "newest"]),
                    ("b", vec!["policy keeps everything", "protected"]),
                    ("a", vec!["policy keeps everything"]),
                ],
            },
            Case {
                name: "zero keep-within counts as unset, so the policy is empty",
                policy: Policy {
                    keep_within: Some(Duration::ZERO),
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2025-01-01T00:00:00Z"),
                    cand("b", "2026-01-01T00:00:00Z"),
                ],
                kept: vec![
                    ("b", vec!["policy keeps everything", "newest"]),
                    ("a", vec!["policy keeps everything"]),
                ],
            },
            Case {
                name: "keep-last alone, equal times ordered by id descending",
                policy: Policy {
                    keep_last: 3,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2026-01-02T00:00:00Z"),
                    cand("e", "2026-01-01T00:00:00Z"),
                    cand("b", "2026-01-03T00:00:00Z"),
                    cand("d", "2026-01-04T00:00:00Z"),
                    cand("c", "2026-01-03T00:00:00Z"),
                ],
                kept: vec![
                    ("d", vec!["keep-last", "newest"]),
                    ("c", vec!["keep-last"]),
                    ("b", vec!["keep-last"]),
                ],
            },
            Case {
                // Ten backups in one second: the collision suffix counts, `-10` is newest.
                name: "equal times: collision suffixes ordered numerically",
                policy: Policy {
                    keep_last: 2,
                    ..Policy::default()
                },
                tz: UTC,
                backups: (1..=10)
                    .map(|n| {
                        let id = if n == 1 {
                            "j-20260101T000000Z".to_owned()
                        } else {
                            format!("j-20260101T000000Z-{n}")
                        };
                        cand(&id, "2026-01-01T00:00:00Z")
                    })
                    .collect(),
                kept: vec![
                    ("j-20260101T000000Z-10", vec!["keep-last", "newest"]),
                    ("j-20260101T000000Z-9", vec!["keep-last"]),
                ],
            },
            Case {
                name: "keep-last larger than the number of backups",
                policy: Policy {
                    keep_last: 10,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2026-01-01T00:00:00Z"),
                    cand("b", "2026-01-02T00:00:00Z"),
                ],
                kept: vec![("b", vec!["keep-last", "newest"]), ("a", vec!["keep-last"])],
            },
            Case {
                name: "keep-within alone: strictly newer than newest - D",
                policy: Policy {
                    keep_within: days(1),
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("newest", "2026-06-30T00:00:00Z"),
                    cand("inside", "2026-06-29T00:00:01Z"),
                    cand("boundary", "2026-06-29T00:00:00Z"),
                    cand("outside", "2026-06-28T12:00:00Z"),
                ],
                kept: vec![
                    ("newest", vec!["keep-within 1d", "newest"]),
                    ("inside", vec!["keep-within 1d"]),
                ],
            },
            Case {
                name: "keep-within beyond the representable range keeps everything",
                policy: Policy {
                    keep_within: Some(Duration::from_secs(u64::MAX)),
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "1970-01-01T00:00:00Z"),
                    cand("b", "2026-01-01T00:00:00Z"),
                ],
                kept: vec![
                    ("b", vec!["keep-within 213503982334601d7h15s", "newest"]),
                    ("a", vec!["keep-within 213503982334601d7h15s"]),
                ],
            },
            Case {
                // Daily backups 2026-01-01 (Thu) .. 2026-02-18 (Wed): the 7 newest days, then
                // the newest backup of each of the 5 newest ISO weeks (W08 .. W04). The two
                // counters overlap on 02-18 and 02-15, as in restic's documentation.
                name: "restic docs: --keep-daily 7 --keep-weekly 5",
                policy: Policy {
                    keep_daily: 7,
                    keep_weekly: 5,
                    ..Policy::default()
                },
                tz: UTC,
                backups: daily_series("2026-01-01T10:00:00Z", "2026-02-18T10:00:00Z"),
                kept: vec![
                    ("d0218", vec!["daily", "weekly", "newest"]),
                    ("d0217", vec!["daily"]),
                    ("d0216", vec!["daily"]),
                    ("d0215", vec!["daily", "weekly"]),
                    ("d0214", vec!["daily"]),
                    ("d0213", vec!["daily"]),
                    ("d0212", vec!["daily"]),
                    ("d0208", vec!["weekly"]),
                    ("d0201", vec!["weekly"]),
                    ("d0125", vec!["weekly"]),
                ],
            },
            Case {
                name: "days without backups use no daily slots",
                policy: Policy {
                    keep_daily: 3,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("may01", "2026-05-01T09:00:00Z"),
                    cand("may02", "2026-05-02T09:00:00Z"),
                    cand("may10", "2026-05-10T09:00:00Z"),
                    cand("may20", "2026-05-20T09:00:00Z"),
                ],
                kept: vec![
                    ("may20", vec!["daily", "newest"]),
                    ("may10", vec!["daily"]),
                    ("may02", vec!["daily"]),
                ],
            },
            Case {
                name: "several backups in one day: only the newest of the day",
                policy: Policy {
                    keep_daily: 2,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2026-05-01T20:00:00Z"),
                    cand("b", "2026-05-02T08:00:00Z"),
                    cand("c", "2026-05-02T12:00:00Z"),
                    cand("d", "2026-05-02T18:00:00Z"),
                ],
                kept: vec![("d", vec!["daily", "newest"]), ("a", vec!["daily"])],
            },
            Case {
                name: "oldest is kept when a rule has slots left",
                policy: Policy {
                    keep_daily: 5,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("b", "2026-05-02T08:00:00Z"),
                    cand("c", "2026-05-02T12:00:00Z"),
                    cand("d", "2026-05-02T18:00:00Z"),
                ],
                kept: vec![("d", vec!["daily", "newest"]), ("b", vec!["oldest daily"])],
            },
            Case {
                name: "oldest in a new bucket is a plain keep, not an 'oldest' one",
                policy: Policy {
                    keep_daily: 5,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2026-05-01T20:00:00Z"),
                    cand("c", "2026-05-02T12:00:00Z"),
                    cand("d", "2026-05-02T18:00:00Z"),
                ],
                kept: vec![("d", vec!["daily", "newest"]), ("a", vec!["daily"])],
            },
            Case {
                name: "oldest is not kept once every rule is used up",
                policy: Policy {
                    keep_monthly: 1,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2026-01-01T00:00:00Z"),
                    cand("b", "2026-03-01T00:00:00Z"),
                    cand("c", "2026-03-02T00:00:00Z"),
                ],
                kept: vec![("c", vec!["monthly", "newest"])],
            },
            Case {
                // 2020 has 53 ISO weeks: 2020-12-28 .. 2021-01-03 is 2020-W53 and 2021-01-04
                // starts 2021-W01.
                name: "ISO week across the year boundary",
                policy: Policy {
                    keep_weekly: 3,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("1221", "2020-12-21T12:00:00Z"),
                    cand("1228", "2020-12-28T12:00:00Z"),
                    cand("1231", "2020-12-31T12:00:00Z"),
                    cand("0101", "2021-01-01T12:00:00Z"),
                    cand("0103", "2021-01-03T12:00:00Z"),
                    cand("0104", "2021-01-04T12:00:00Z"),
                    cand("0105", "2021-01-05T12:00:00Z"),
                ],
                kept: vec![
                    ("0105", vec!["weekly", "newest"]),
                    ("0103", vec!["weekly"]),
                    ("1221", vec!["weekly"]),
                ],
            },
            Case {
                name: "weekly and yearly counted independently, with oldest yearly",
                policy: Policy {
                    keep_weekly: 3,
                    keep_yearly: 5,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("1221", "2020-12-21T12:00:00Z"),
                    cand("1228", "2020-12-28T12:00:00Z"),
                    cand("1231", "2020-12-31T12:00:00Z"),
                    cand("0101", "2021-01-01T12:00:00Z"),
                    cand("0103", "2021-01-03T12:00:00Z"),
                    cand("0104", "2021-01-04T12:00:00Z"),
                    cand("0105", "2021-01-05T12:00:00Z"),
                ],
                kept: vec![
                    ("0105", vec!["weekly", "yearly", "newest"]),
                    ("0103", vec!["weekly"]),
                    ("1231", vec!["yearly"]),
                    ("1221", vec!["weekly", "oldest yearly"]),
                ],
            },
            Case {
                name: "combination records every rule that keeps a backup",
                policy: Policy {
                    keep_last: 2,
                    keep_daily: 3,
                    keep_monthly: 2,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("m1", "2026-01-15T10:00:00Z"),
                    cand("m2a", "2026-02-20T10:00:00Z"),
                    cand("m2b", "2026-02-27T10:00:00Z"),
                    cand("d1", "2026-03-01T10:00:00Z"),
                    cand("d2a", "2026-03-02T08:00:00Z"),
                    cand("d2b", "2026-03-02T20:00:00Z"),
                    cand("d3", "2026-03-03T10:00:00Z"),
                ],
                kept: vec![
                    ("d3", vec!["keep-last", "daily", "monthly", "newest"]),
                    ("d2b", vec!["keep-last", "daily"]),
                    ("d1", vec!["daily"]),
                    ("m2b", vec!["monthly"]),
                ],
            },
            Case {
                name: "every rule at once",
                policy: Policy {
                    keep_last: 1,
                    keep_within: Some(Duration::from_secs(36 * 3600)),
                    keep_hourly: 1,
                    keep_daily: 1,
                    keep_weekly: 1,
                    keep_monthly: 1,
                    keep_yearly: 2,
                },
                tz: UTC,
                backups: vec![
                    cand("old", "2025-06-01T00:00:00Z"),
                    cand("mid", "2026-03-02T00:00:00Z"),
                    cand("new", "2026-03-02T12:00:00Z"),
                ],
                kept: vec![
                    (
                        "new",
                        vec![
                            "keep-last",
                            "keep-within 1d12h",
                            "hourly",
                            "daily",
                            "weekly",
                            "monthly",
                            "yearly",
                            "newest",
                        ],
                    ),
                    ("mid", vec!["keep-within 1d12h"]),
                    ("old", vec!["yearly"]),
                ],
            },
            Case {
                name: "protected backups are always kept",
                policy: Policy {
                    keep_last: 1,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    pinned("p", "2020-01-01T00:00:00Z"),
                    cand("x", "2026-01-01T00:00:00Z"),
                    cand("y", "2026-01-02T00:00:00Z"),
                ],
                kept: vec![("y", vec!["keep-last", "newest"]), ("p", vec!["protected"])],
            },
            Case {
                name: "protected backups still use their bucket slots",
                policy: Policy {
                    keep_daily: 2,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2026-01-01T00:00:00Z"),
                    pinned("b", "2026-01-02T00:00:00Z"),
                    pinned("c", "2026-01-03T00:00:00Z"),
                ],
                kept: vec![
                    ("c", vec!["daily", "protected", "newest"]),
                    ("b", vec!["daily", "protected"]),
                ],
            },
            Case {
                name: "newest is kept under any policy",
                policy: Policy {
                    keep_within: Some(Duration::from_secs(1)),
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2026-01-01T00:00:00Z"),
                    cand("b", "2026-01-02T00:00:00Z"),
                ],
                kept: vec![("b", vec!["keep-within 1s", "newest"])],
            },
            Case {
                // 2026-03-29 is the spring-forward day in Berlin. b is 00:30 CET and c is
                // 23:30 CEST on that local day; d (23:30 UTC) is already 03-30 locally.
                name: "DST spring forward: Berlin buckets by local date",
                policy: Policy {
                    keep_daily: 10,
                    ..Policy::default()
                },
                tz: BERLIN,
                backups: vec![
                    cand("a", "2026-03-28T12:00:00Z"),
                    cand("b", "2026-03-28T23:30:00Z"),
                    cand("c", "2026-03-29T21:30:00Z"),
                    cand("d", "2026-03-29T23:30:00Z"),
                ],
                kept: vec![
                    ("d", vec!["daily", "newest"]),
                    ("c", vec!["daily"]),
                    ("a", vec!["daily"]),
                ],
            },
            Case {
                name: "DST spring forward: same backups bucketed in UTC",
                policy: Policy {
                    keep_daily: 10,
                    ..Policy::default()
                },
                tz: UTC,
                backups: vec![
                    cand("a", "2026-03-28T12:00:00Z"),
                    cand("b", "2026-03-28T23:30:00Z"),
                    cand("c", "2026-03-29T21:30:00Z"),
                    cand("d", "2026-03-29T23:30:00Z"),
                ],
                kept: vec![
                    ("d", vec!["daily", "newest"]),
                    ("b", vec!["daily"]),
                    ("a", vec!["oldest daily"]),
                ],
            },
            Case {
                // 2026-10-25 is the fall-back day: b is 00:30 CEST, c is 23:30 CET, d (23:30
                // UTC) is 00:30 CET on 10-26.
                name: "DST fall back: Berlin buckets by local date",
                policy: Policy {
                    keep_daily: 10,
                    ..Policy::default()
                },
                tz: BERLIN,
                backups: vec![
                    cand("a", "2026-10-24T12:00:00Z"),
                    cand("b", "2026-10-24T22:30:00Z"),
                    cand("c", "2026-10-25T22:30:00Z"),
                    cand("d", "2026-10-25T23:30:00Z"),
                ],
                kept: vec![
                    ("d", vec!["daily", "newest"]),
                    ("c", vec!["daily"]),
                    ("a", vec!["daily"]),
                ],
            },
            Case {
                // b (02:30 CEST) and c (02:30 CET) show the same local hour: one bucket.
                name: "DST fall back: the repeated hour is one hourly bucket",
                policy: Policy {
                    keep_hourly: 10,
                    ..Policy::default()
                },
                tz: BERLIN,
                backups: vec![
                    cand("a", "2026-10-24T23:30:00Z"),
                    cand("b", "2026-10-25T00:30:00Z"),
                    cand("c", "2026-10-25T01:30:00Z"),
                    cand("d", "2026-10-25T02:30:00Z"),
                ],
                kept: vec![
                    ("d", vec!["hourly", "newest"]),
                    ("c", vec!["hourly"]),
                    ("a", vec!["hourly"]),
                ],
            },
            Case {
                // 23:30 UTC on 2025-12-31 is already 2026 in Berlin.
                name: "yearly buckets use the local year",
                policy: Policy {
                    keep_yearly: 2,
                    ..Policy::default()
                },
                tz: BERLIN,
                backups: vec![
                    cand("a", "2025-06-01T00:00:00Z"),
                    cand("b", "2025-12-31T12:00:00Z"),
                    cand("c", "2025-12-31T23:30:00Z"),
                ],
                kept: vec![("c", vec!["yearly", "newest"]), ("b", vec!["yearly"])],
            },
        ]
    }

    #[test]
    fn apply_table() {
        for case in cases() {
            let decisions = apply(&case.policy, case.tz, &case.backups);
            assert_eq!(decisions.len(), case.backups.len(), "{}", case.name);

            // Newest first, ties by id descending (collision suffixes numerically).
            for pair in decisions.windows(2) {
                let ordered = pair[0].created_at > pair[1].created_at
                    || (pair[0].created_at == pair[1].created_at
                        && coffer_common::ids::cmp_ids(&pair[0].id, &pair[1].id).is_gt());
                assert!(ordered, "{}: order {:?}", case.name, decisions);
            }
            for d in &decisions {
                assert_eq!(d.keep, !d.reasons.is_empty(), "{}: {d:?}", case.name);
                let input = case.backups.iter().find(|c| c.id == d.id);
                assert_eq!(input.map(|c| c.created_at), Some(d.created_at), "{}", case.name);
            }

            let kept: Vec<(&str, Vec<&str>)> = decisions
                .iter()
                .filter(|d| d.keep)
                .map(|d| (d.id.as_str(), d.reasons.iter().map(String::as_str).collect()))
                .collect();
            assert_eq!(kept, case.kept, "{}", case.name);
            if let Some(first) = decisions.first() {
                assert!(first.keep, "{}: newest removed", case.name);
            }
        }
    }

    #[test]
    fn bucket_keys() {
        let cases: &[(BucketKind, Tz, &str, i64)] = &[
            (BucketKind::Weekly, UTC, "2020-12-28T12:00:00Z", 202053),
            (BucketKind::Weekly, UTC, "2020-12-31T12:00:00Z", 202053),
            (BucketKind::Weekly, UTC, "2021-01-01T12:00:00Z", 202053),
            (BucketKind::Weekly, UTC, "2021-01-03T23:59:59Z", 202053),
            (BucketKind::Weekly, UTC, "2021-01-04T00:00:00Z", 202101),
            // 23:30 UTC on Sunday 2021-01-03 is Monday 00:30 in Berlin: next ISO week.
            (BucketKind::Weekly, BERLIN, "2021-01-03T23:30:00Z", 202101),
            (BucketKind::Daily, BERLIN, "2026-03-28T23:30:00Z", 20260329),
            (BucketKind::Daily, BERLIN, "2026-03-29T21:30:00Z", 20260329),
            (BucketKind::Daily, BERLIN, "2026-03-29T23:30:00Z", 20260330),
            (BucketKind::Daily, BERLIN, "2026-10-24T22:30:00Z", 20261025),
            (BucketKind::Daily, BERLIN, "2026-10-25T22:30:00Z", 20261025),
            (BucketKind::Daily, BERLIN, "2026-10-25T23:30:00Z", 20261026),
            (BucketKind::Hourly, BERLIN, "2026-10-25T00:30:00Z", 2026102502),
            (BucketKind::Hourly, BERLIN, "2026-10-25T01:30:00Z", 2026102502),
            (BucketKind::Hourly, BERLIN, "2026-03-29T01:30:00Z", 2026032903),
            (BucketKind::Monthly, BERLIN, "2026-01-31T23:30:00Z", 202602),
            (BucketKind::Yearly, BERLIN, "2025-12-31T23:30:00Z", 2026),
        ];
        for (kind, tz, at, want) in cases {
            let local = utc(at).with_timezone(tz);
            assert_eq!(kind.bucket(&local), *want, "{kind:?} {tz} {at}");
        }
    }

    #[test]
    fn summaries() {
        let cases: &[(Policy, bool, &str)] = &[
            (Policy::default(), true, "keep everything"),
            (
                Policy {
                    keep_within: Some(Duration::ZERO),
                    ..Policy::default()
                },
                true,
                "keep everything",
            ),
            (
                Policy {
                    keep_last: 10,
                    keep_within: days(30),
                    keep_daily: 7,
                    ..Policy::default()
                },
                false,
                "keep-last 10, keep-within 30d, keep-daily 7",
            ),
            (
                Policy {
                    keep_last: 1,
                    keep_within: Some(Duration::from_secs(36 * 3600 + 90)),
                    keep_hourly: 24,
                    keep_daily: 7,
                    keep_weekly: 5,
                    keep_monthly: 12,
                    keep_yearly: 3,
                },
                false,
                "keep-last 1, keep-within 1d12h1m30s, keep-hourly 24, keep-daily 7, \
                 keep-weekly 5, keep-monthly 12, keep-yearly 3",
            ),
            (
                Policy {
                    keep_within: Some(Duration::from_millis(1500)),
                    ..Policy::default()
                },
                false,
                "keep-within 1s500ms",
            ),
            (
                Policy {
                    keep_yearly: 1,
                    ..Policy::default()
                },
                false,
                "keep-yearly 1",
            ),
        ];
        for (policy, empty, want) in cases {
            assert_eq!(policy.is_empty(), *empty, "{policy:?}");
            assert_eq!(policy.summary(), *want, "{policy:?}");
        }
    }

    #[test]
    fn humanized_durations() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(86_400 + 1), "1d1s"),
        ];
        for (d, want) in cases {
            assert_eq!(humanize(*d), *want, "{d:?}");
        }
    }
}
