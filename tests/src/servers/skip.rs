//! Skipping a test visibly. A server that cannot run here (binary missing, no root,
//! no network for pip...) is not a test failure, but it must never look like a pass:
//! [`require!`](crate::require) prints `SKIPPED <test>: <reason>` straight to the
//! process's stderr and returns from the test. With `COFFER_TEST_NO_SKIP=1` in the
//! environment the skip panics instead, for CI runs where everything is installed.

use std::fmt;
use std::io::Write;

/// Why a test cannot run here: one line naming what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl Skip {
    /// A skip reason, folded onto one line.
    pub fn new(reason: impl AsRef<str>) -> Skip {
        Skip(one_line(reason.as_ref()))
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// The environment variable that turns skips into failures.
pub const NO_SKIP_ENV: &str = "COFFER_TEST_NO_SKIP";

/// Collapses whitespace runs (newlines included) into single spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The running test's name: libtest runs each test on a thread named after it.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("<test>")
        .to_owned()
}

/// Reports that the current test is skipped (used by [`require!`](crate::require)).
///
/// Written with `io::stderr()` directly rather than `eprintln!`, which libtest
/// captures: a skip must show in a normal `cargo test` run. Panics instead when
/// [`NO_SKIP_ENV`] is set to anything but `0` or empty.
#[track_caller]
pub fn report(reason: &dyn fmt::Display) {
    let test = test_name();
    let line = format!("SKIPPED {test}: {}", one_line(&reason.to_string()));
    if std::env::var(NO_SKIP_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("{line} ({NO_SKIP_ENV} is set, so skipping counts as a failure)");
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// `Ok(())` when running as root, else a skip naming `what` needs root.
pub fn require_root(what: &str) -> Result<(), Skip> {
    if super::process::is_root() {
        Ok(())
    } else {
        Err(Skip::new(format!("{what} needs root")))
    }
}

/// Unwraps `Ok(value)`; on `Err(reason)` reports `SKIPPED <test>: <reason>` and
/// returns from the enclosing test function (which must return `()`).
///
/// ```ignore
/// let pg = require!(PgCluster::start("restore_in_place"));
/// ```
#[macro_export]
macro_rules! require {
    ($result:expr) => {
        match $result {
            ::std::result::Result::Ok(value) => value,
            ::std::result::Result::Err(reason) => {
                $crate::servers::skip::report(&reason);
                return;
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line() {
        assert_eq!(Skip::new("a\n  b\tc ").0, "a b c");
    }

    #[test]
    fn test_name_is_the_thread_name() {
        assert_eq!(test_name(), "servers::skip::tests::test_name_is_the_thread_name");
    }

    #[test]
    fn require_returns_early_on_skip() {
        fn body(reached: &mut bool) {
            let _: u8 = require!(Err::<u8, _>(Skip::new(
                "deliberate skip: this test checks that require! returns"
            )));
            *reached = true;
        }
        let mut reached = false;
        if std::env::var(NO_SKIP_ENV).is_err() {
            body(&mut reached);
            assert!(!reached);
        }
    }
}
