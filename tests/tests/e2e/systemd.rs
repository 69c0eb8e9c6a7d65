//! The shipped systemd units: `systemd/check.sh` runs `systemd-analyze verify` on
//! `cofferd.service` + `cofferd.socket` (as shipped, with the app-paths drop-in, with
//! the database jobs' drop-in added, and with the offsite drop-in instead) and
//! `systemd-analyze security --offline=true`, failing above an exposure of 2.5 for any
//! of the four. The
//! script installs systemd's tools with apt when they are missing, and says SKIP when
//! it cannot; this test then skips with that reason.

use std::path::Path;
use std::process::Command;

use coffer_tests::cofferd_bin;

#[test]
fn units_verify_and_exposure_is_at_most_2_5() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("systemd/check.sh"))
        .env("COFFERD_BIN", cofferd_bin())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stdout
        .lines()
        .chain(stderr.lines())
        .find(|l| l.starts_with("SKIP:"))
    {
        eprintln!("SKIPPED units_verify_and_exposure_is_at_most_2_5: {line}");
        return;
    }
    assert!(out.status.success(), "check.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("PASS: systemd-analyze verify"), "{stdout}");
    let scores: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS: exposure "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .collect();
    assert_eq!(
        scores.len(),
        4,
        "four exposure scores (unit, + app-paths, + database-servers, + offsite):\n{stdout}"
    );
    assert!(stdout.contains("database-servers.conf"), "{stdout}");
    assert!(
        stdout.contains("offsite.conf"),
        "the offsite drop-in is not scored:\n{stdout}"
    );
    for score in &scores {
        assert!(*score <= 2.5, "exposure {score} > 2.5");
    }
    eprintln!("systemd-analyze security exposure: {scores:?}");
}
