//! Human formatting shared by the daemon's messages and cofferctl's output.

use chrono::{DateTime, Utc};

/// Formats a byte count with binary units: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Formats a duration in whole units a person reads at a glance: `850ms`, `12.3s`,
/// `4m 05s`, `2h 03m`, `3d 04h`.
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Like [`duration`] for a time known only in whole seconds: `<1s` rather than a
/// misleading `0ms`.
pub fn whole_seconds(secs: u64) -> String {
    if secs == 0 {
        "<1s".to_owned()
    } else {
        duration(std::time::Duration::from_secs(secs))
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-23T02:00:05Z`), or `-` for 0.
pub fn timestamp(unix: i64) -> String {
    if unix == 0 {
        return "-".to_owned();
    }
    DateTime::<Utc>::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// An error's sentence followed by each of its sources that the text does not
/// already contain, joined with ": ". How every Coffer error is shown to a person.
/// Control characters (from a file name in an archive, an id in a request, a tar
/// header's raw bytes) are escaped, so the text stays one line and cannot drive the
/// reader's terminal.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    if text.contains(char::is_control) {
        text = text
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn whole_seconds_never_claim_milliseconds() {
        assert_eq!(whole_seconds(0), "<1s");
        assert_eq!(whole_seconds(5), "5.0s");
        assert_eq!(whole_seconds(3661), "1h 01m");
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h 03m");
        assert_eq!(duration(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d 04h");
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot write the archive /x: {0}")]
        struct Repeats(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("cannot write the archive /x")]
        struct Hides(#[source] std::io::Error);
        let io = || std::io::Error::other("No space left on device");
        assert_eq!(
            error_chain(&Repeats(io())),
            "cannot write the archive /x: No space left on device"
        );
        assert_eq!(
            error_chain(&Hides(io())),
            "cannot write the archive /x: No space left on device"
        );
    }

    #[test]
    fn error_chains_escape_control_characters() {
        let e = std::io::Error::other("bad name 'a\nb\u{1b}[2J'");
        assert_eq!(error_chain(&e), "bad name 'a\\nb\\u{1b}[2J'");
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(1_795_399_205), "2026-11-23T02:00:05Z");
    }
}
