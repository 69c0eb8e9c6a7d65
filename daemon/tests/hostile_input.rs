//! Hostile input, property-based: whatever bytes, JSON, TOML or ids come in, cofferd's
//! parsers and the verifying archive reader never panic, never write outside the
//! staging directory they were given, and fail with one clear line.
//!
//! - **Archives.** A small valid archive is written once with the real
//!   [`ArchiveWriter`]; each case then either mutates its bytes (flip, truncate,
//!   insert, delete, splice, append — on the compressed file or on the tar inside it,
//!   recompressed) or builds a tar from a random entry list (paths with `..`, absolute,
//!   `./`, empty, 100+ bytes, not UTF-8; symlinks and hard links with random targets;
//!   devices, fifos, unknown types, pax headers; sizes that lie; sometimes with a
//!   manifest that truthfully lists the entries). Every input goes through
//!   [`read_archive`] with an [`Extractor`] into `<case>/x/y/staging`, once with the
//!   valid sidecar as [`Expected`] (restore's path) and once without (upload's path).
//!   Properties: no panic; with the sidecar the result is `Ok` only for the original
//!   bytes; without it `Ok` means the staging tree is exactly what the returned
//!   manifest lists (and for mutations, exactly the original content); the case
//!   directory outside staging is unchanged; every error, as clients see it
//!   ([`error_chain`]), is one non-empty line without Rust debug output. The same
//!   archive encrypted with age, mutated, is refused whatever changed (age
//!   authenticates the header and every chunk), with the key and the sidecar or not.
//! - **Manifests and sidecars.** Random JSON and mutations of a valid sidecar (fields
//!   dropped, duplicated, retyped, huge or negative numbers, bad hashes, `..` paths)
//!   through `serde_json` + [`Manifest::validate`]: no panic, mutations that break the
//!   contract are refused with one line. [`check_entry_path`] agrees with a
//!   spec written out here from the rule, and admits only paths that stay below
//!   their root.
//! - **Config.** Random text, random bytes, a valid config with one value retyped or
//!   an unknown key inserted anywhere: [`Config::parse`] never panics, retyped values
//!   and unknown keys are always refused, and errors name the file in one line.
//! - **Ids.** [`IdRef::parse`], [`split_backup_id`], [`is_valid_job_name`] on arbitrary
//!   strings: no panic, and what is accepted is canonical (see each test).
//!
//! Case counts keep the file under a minute in a debug build; `COFFER_STRESS=1`
//! multiplies them by 20. Failing cases found so far are kept as explicit tests at the
//! end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use coffer_common::format::error_chain;
use coffer_common::ids::{self, IdRef};
use coffer_daemon::archive::crypt::{EncryptWriter, Identities, Recipients};
use coffer_daemon::archive::{ArchiveError, ArchiveWriter, Expected, read_archive, read_archive_keyed};
use coffer_daemon::archive::{Extractor, Layout};
use coffer_daemon::config::Config;
use coffer_daemon::manifest::{
    self, ArchiveKind, EntryKind, Manifest, Sidecar, SourceInfo, SqliteInfo, Totals, check_entry_path,
    is_sha256_hex,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tar::EntryType;

const JOB: &str = "app";
const ID: &str = "app-20260101T000000Z";
/// Media roots the valid manifest (and the random ones) declare.
const ROOTS: usize = 2;

/// `base` cases from a fixed seed, so that CI is repeatable; `COFFER_STRESS=1` runs
/// 20× the cases from a new seed each run. The seed is printed; `COFFER_SEED=N`
/// replays it.
fn cases(base: u32) -> ProptestConfig {
    let stress = std::env::var_os("COFFER_STRESS").is_some_and(|v| v != "0");
    let seed = std::env::var("COFFER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            if stress {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(42, |d| d.as_nanos() as u64)
            } else {
                42
            }
        });
    eprintln!("proptest seed {seed} (replay with COFFER_SEED={seed})");
    ProptestConfig {
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..ProptestConfig::with_cases(if stress { base * 20 } else { base })
    }
}

fn sha256(bytes: &[u8]) -> String {
    coffer_daemon::archive::hex(&Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------
// Error text
// ---------------------------------------------------------------------------

/// Debug formatting that must never reach a person.
const DEBUG_NOISE: &[&str] = &[
    "Some(",
    "None",
    "Os {",
    "Custom {",
    "kind: ",
    "Error {",
    "__Nonexhaustive",
    "UnexpectedEof",
    "InvalidData",
];

/// Asserts that `text` (an error as a client sees it) is one clear line.
#[track_caller]
fn assert_one_clear_line(text: &str) {
    assert!(!text.trim().is_empty(), "empty error message");
    assert!(
        !text.chars().any(|c| c.is_control()),
        "error message is not one printable line: {text:?}"
    );
    for noise in DEBUG_NOISE {
        assert!(!text.contains(noise), "debug output {noise:?} in error: {text:?}");
    }
}

// ---------------------------------------------------------------------------
// The valid archive
// ---------------------------------------------------------------------------

/// One valid archive, written once by the real writer.
struct Valid {
    bytes: Vec<u8>,
    /// The tar inside (decompressed), for tar-level mutations.
    tar: Vec<u8>,
    sidecar: Sidecar,
    /// What extraction must produce, relative to staging.
    tree: BTreeMap<String, Node>,
}

/// One node of an extracted tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File { sha256: String, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

fn blank_manifest() -> Manifest {
    Manifest {
        format_version: manifest::FORMAT_VERSION,
        kind: ArchiveKind::Backup,
        id: ID.into(),
        job: JOB.into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        coffer_version: "0.1.0".into(),
        hostname: "host".into(),
        source: SourceInfo::Sqlite(SqliteInfo {
            path: "/var/lib/app/app.db".into(),
            sqlite_version: "3.50.0".into(),
            page_size: 4096,
            page_count: 5,
            user_version: 0,
            application_id: 0,
            journal_mode: "wal".into(),
            snapshot_method: "vacuum-into".into(),
        }),
        media_roots: (0..ROOTS).map(|n| format!("/srv/media{n}")).collect(),
        entries: Vec::new(),
        skipped: Vec::new(),
        totals: Totals::default(),
        export: None,
    }
}

fn valid() -> &'static Valid {
    static VALID: OnceLock<Valid> = OnceLock::new();
    VALID.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        let db = src.join("app.db");
        // Not SQLite: the reader checks bytes against hashes, not the database.
        let db_bytes: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(&db, &db_bytes).unwrap();
        let m0 = src.join("m0");
        fs::create_dir_all(m0.join("sub")).unwrap();
        fs::write(m0.join("a.txt"), b"hello\n").unwrap();
        fs::write(m0.join("empty"), b"").unwrap();
        fs::write(m0.join("sub/ü ñ.bin"), vec![7u8; 3000]).unwrap();
        fs::set_permissions(m0.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("sub/ü ñ.bin", m0.join("link")).unwrap();
        let m1 = src.join("m1");
        fs::create_dir_all(&m1).unwrap();
        fs::write(m1.join("x"), b"x").unwrap();

        let out = src.join("valid.tar.zst");
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut writer = ArchiveWriter::new(fs::File::create(&out).unwrap(), 3, 1, cancel).unwrap();
        writer
            .add_file(b"db/app.db", &db, &fs::metadata(&db).unwrap(), &mut |_| {})
            .unwrap();
        for (n, root) in [&m0, &m1].into_iter().enumerate() {
            let walked = coffer_daemon::source::media::walk_media(n, root, &Default::default()).unwrap();
            assert!(walked.skipped.is_empty());
            for item in &walked.items {
                coffer_daemon::source::media::add_to_archive(&mut writer, item, &mut |_| {}).unwrap();
            }
        }
        let coffer_daemon::archive::Finished {
            manifest,
            size,
            sha256: sha,
            ..
        } = writer.finish(blank_manifest()).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, size);
        let tar = zstd::decode_all(bytes.as_slice()).unwrap();
        let tree = tree_of_manifest(&manifest);
        let sidecar = Sidecar {
            manifest,
            size,
            sha256: sha.expect("a writer nothing follows hashes its archive"),
            note: String::new(),
            protected: false,
            duration_ms: 1,
            filed_under: None,
            encryption: None,
        };
        Valid {
            bytes,
            tar,
            sidecar,
            tree,
        }
    })
}

/// Where an archive path lands in staging under [`layout`] (mirrors `Layout::target`).
fn staged_path(archive_path: &str) -> Option<String> {
    let mut parts = archive_path.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("db"), Some(_), None) => Some("db/app.db".into()),
        (Some("media"), Some(n), rest) if n.parse::<usize>().is_ok_and(|n| n < ROOTS) => Some(match rest {
            Some(rest) => format!("media/{n}/{rest}"),
            None => format!("media/{n}"),
        }),
        _ => None,
    }
}

/// The tree an extraction of `manifest`'s entries must produce.
fn tree_of_manifest(manifest: &Manifest) -> BTreeMap<String, Node> {
    let mut tree = BTreeMap::new();
    for entry in &manifest.entries {
        let Some(path) = staged_path(&entry.path) else {
            continue;
        };
        let node = match entry.kind {
            EntryKind::File => Node::File {
                sha256: entry.sha256.clone(),
                mode: entry.mode & 0o1777,
            },
            EntryKind::Dir => Node::Dir {
                mode: entry.mode & 0o1777,
            },
            EntryKind::Symlink => Node::Symlink {
                target: entry.target.clone().unwrap_or_default(),
            },
        };
        tree.insert(path, node);
    }
    tree
}

/// The staging layout: the database to `db/app.db`, media roots to `media/<n>`.
fn layout(staging: &Path) -> Layout {
    Layout {
        db: Some(staging.join("db/app.db")),
        media: (0..ROOTS)
            .map(|n| Some(staging.join(format!("media/{n}"))))
            .collect(),
    }
}

/// Asserts that `disk` is `listed` plus, at most, unlisted parent directories.
#[track_caller]
fn assert_tree_matches(disk: &BTreeMap<String, Node>, listed: &BTreeMap<String, Node>) {
    for (path, node) in listed {
        assert_eq!(
            disk.get(path),
            Some(node),
            "{path} in staging differs from the manifest"
        );
    }
    for (path, node) in disk {
        let parent_of_listed = || listed.keys().any(|l| l.starts_with(&format!("{path}/")));
        assert!(
            listed.contains_key(path) || (matches!(node, Node::Dir { .. }) && parent_of_listed()),
            "{path} in staging is not in the manifest"
        );
    }
}

/// Everything under `dir` (not following symlinks), by relative path, skipping the
/// directories created only as parents (`db`, `media`).
fn tree_on_disk(dir: &Path) -> BTreeMap<String, Node> {
    let mut tree = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let node = if meta.file_type().is_symlink() {
                Node::Symlink {
                    target: fs::read_link(&path).unwrap().to_string_lossy().into_owned(),
                }
            } else if meta.is_dir() {
                stack.push(path);
                if rel == "db" || rel == "media" {
                    continue;
                }
                Node::Dir {
                    mode: meta.mode() & 0o1777,
                }
            } else {
                Node::File {
                    sha256: sha256(&fs::read(&path).unwrap()),
                    mode: meta.mode() & 0o1777,
                }
            };
            tree.insert(rel, node);
        }
    }
    tree
}

/// Every path under `root` with its type and size (not following symlinks), except
/// what lies under `skip`.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, (u32, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.starts_with(skip) {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, (meta.mode(), meta.len()));
        }
    }
    out
}

/// What one read of an archive came to.
struct Outcome {
    result: Result<(Manifest, u64, String), ArchiveError>,
    /// The staging tree after the read.
    tree: BTreeMap<String, Node>,
}

/// Reads `bytes` as an archive (with `expected` or not) and extracts into a fresh
/// staging dir, checking that nothing outside staging changed and that any error is
/// one clear line.
fn read_and_extract(bytes: &[u8], expected: Option<&Sidecar>) -> Outcome {
    read_and_extract_keyed(bytes, expected, None)
}

/// [`read_and_extract`] with keys for an age-encrypted archive.
fn read_and_extract_keyed(bytes: &[u8], expected: Option<&Sidecar>, keys: Option<&Identities>) -> Outcome {
    let case = tempfile::tempdir().unwrap();
    let root = case.path();
    let staging = root.join("x/y/staging");
    fs::create_dir_all(&staging).unwrap();
    fs::create_dir_all(root.join("x/y/neighbour")).unwrap();
    let archive = root.join("archive.tar.zst");
    fs::write(&archive, bytes).unwrap();
    let before = snapshot(root, &staging);

    let layout = layout(&staging);
    let mut extractor = Extractor::new(&layout);
    let expected = expected.map(|s| Expected {
        manifest: &s.manifest,
        size: s.size,
        sha256: &s.sha256,
    });
    let result = read_archive_keyed(&archive, keys, expected, &mut extractor, &mut |_| {}, &|| false)
        .and_then(|ok| extractor.finish().map(|()| ok));

    let after = snapshot(root, &staging);
    assert_eq!(before, after, "something changed outside staging ({result:?})");
    if let Err(e) = &result {
        assert_one_clear_line(&error_chain(e));
    }
    Outcome {
        result,
        tree: tree_on_disk(&staging),
    }
}

// ---------------------------------------------------------------------------
// Mutations of the valid archive
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Copies `len` bytes from one offset over another.
    Splice(Index, Index, usize),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..600)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..2000).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..1500).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        if let Mutation::Insert(_, b) | Mutation::Append(b) = m {
            bytes.extend_from_slice(b);
        }
        return;
    }
    let len = bytes.len();
    match m {
        Mutation::Flip(i, x) => bytes[i.index(len)] ^= x,
        Mutation::Truncate(i) => bytes.truncate(i.index(len)),
        Mutation::Insert(i, b) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = i.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Splice(from, to, n) => {
            let (from, to) = (from.index(len), to.index(len));
            let n = (*n).min(len - from).min(len - to);
            let chunk = bytes[from..from + n].to_vec();
            bytes[to..to + n].copy_from_slice(&chunk);
        }
        Mutation::Append(b) => bytes.extend_from_slice(b),
    }
}

/// How an archive case ended, for the figures each test prints.
#[derive(Default)]
struct Tally {
    cases: std::cell::Cell<usize>,
    /// Accepted without a sidecar (the upload path).
    accepted: std::cell::Cell<usize>,
    /// Accepted although the bytes differ from what was written (don't-care bytes).
    benign: std::cell::Cell<usize>,
}

/// Runs `test` on `base` (×20 under `COFFER_STRESS=1`) inputs from `strategy` and
/// prints how many were tried, accepted and refused.
fn run_archive_cases<S: Strategy>(
    name: &str,
    base: u32,
    strategy: S,
    test: impl Fn(S::Value, &Tally) -> TestCaseResult,
) {
    let tally = Tally::default();
    let started = std::time::Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(cases(base));
    if let Err(e) = runner.run(&strategy, |value| {
        tally.cases.set(tally.cases.get() + 1);
        test(value, &tally)
    }) {
        panic!("{name}: {e}");
    }
    eprintln!(
        "{name}: {} inputs (incl. shrinking) in {:.1?}: {} accepted without a sidecar ({} with don't-care bytes changed), {} refused",
        tally.cases.get(),
        started.elapsed(),
        tally.accepted.get(),
        tally.benign.get(),
        tally.cases.get() - tally.accepted.get(),
    );
}

/// Checks one mutated archive against the properties in the module doc.
fn check_mutated(bytes: &[u8], tally: &Tally) -> TestCaseResult {
    let valid = valid();
    let identical = bytes == valid.bytes.as_slice();

    let with_sidecar = read_and_extract(bytes, Some(&valid.sidecar));
    prop_assert_eq!(
        with_sidecar.result.is_ok(),
        identical,
        "verified against its sidecar: {:?}",
        with_sidecar
            .result
            .as_ref()
            .map(|_| ())
            .map_err(|e| error_chain(e))
    );
    if identical {
        prop_assert_eq!(&with_sidecar.tree, &valid.tree);
    }

    let alone = read_and_extract(bytes, None);
    if let Ok((manifest, size, sha)) = &alone.result {
        // A don't-care byte (tar padding, an unchecked header field): same content.
        // Without a sidecar (an upload) the archive's own manifest is the only record,
        // so an edit of its descriptive fields (say `source.path`) that still validates
        // is a different but self-consistent archive; its entries — what gets
        // extracted, and their hashes — must be exactly the original ones.
        prop_assert_eq!(
            &manifest.entries,
            &valid.sidecar.manifest.entries,
            "accepted different entries"
        );
        prop_assert_eq!(&alone.tree, &valid.tree, "accepted different content");
        prop_assert_eq!(*size, bytes.len() as u64);
        prop_assert_eq!(sha, &sha256(bytes));
        tally.accepted.set(tally.accepted.get() + 1);
        if !identical {
            tally.benign.set(tally.benign.get() + 1);
        }
    }
    Ok(())
}

/// Mutations of the compressed file.
#[test]
fn mutated_archives() {
    run_archive_cases(
        "mutated archives",
        600,
        prop::collection::vec(mutation(), 1..4),
        |mutations, tally| {
            let mut bytes = valid().bytes.clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            check_mutated(&bytes, tally)
        },
    );
}

/// The valid archive encrypted with age, its sidecar (ciphertext size and sha256) and
/// the key.
struct Encrypted {
    bytes: Vec<u8>,
    sidecar: Sidecar,
    keys: Identities,
    _dir: tempfile::TempDir,
}

fn encrypted() -> &'static Encrypted {
    static ENCRYPTED: OnceLock<Encrypted> = OnceLock::new();
    ENCRYPTED.get_or_init(|| {
        use age::secrecy::ExposeSecret;
        let identity = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        fs::write(&key, identity.to_string().expose_secret()).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let to = Recipients::parse(&[identity.to_public().to_string()]).unwrap();
        let mut writer = EncryptWriter::new(Vec::new(), &to).unwrap();
        std::io::Write::write_all(&mut writer, &valid().bytes).unwrap();
        let bytes = writer.finish().unwrap();
        let mut sidecar = valid().sidecar.clone();
        sidecar.size = bytes.len() as u64;
        sidecar.sha256 = sha256(&bytes);
        Encrypted {
            keys: Identities::load(&key).unwrap(),
            bytes,
            sidecar,
            _dir: dir,
        }
    })
}

/// Mutations of an encrypted archive: age authenticates header and every chunk, so
/// whatever changes is refused, with the sidecar (restore) and without (upload), in
/// one line, with nothing written outside staging.
#[test]
fn mutated_encrypted_archives() {
    let valid_tree = &valid().tree;
    let e = encrypted();
    let original = read_and_extract_keyed(&e.bytes, Some(&e.sidecar), Some(&e.keys));
    assert!(original.result.is_ok(), "{:?}", original.result.map(|_| ()));
    assert_eq!(&original.tree, valid_tree);
    run_archive_cases(
        "mutated encrypted archives",
        150,
        prop::collection::vec(mutation(), 1..3),
        |mutations, tally| {
            let mut bytes = e.bytes.clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            let identical = bytes == e.bytes;
            for expected in [Some(&e.sidecar), None] {
                let outcome = read_and_extract_keyed(&bytes, expected, Some(&e.keys));
                prop_assert_eq!(
                    outcome.result.is_ok(),
                    identical,
                    "{:?}",
                    outcome.result.map(|_| ())
                );
            }
            if identical {
                tally.accepted.set(tally.accepted.get() + 1);
            }
            Ok(())
        },
    );
    // And without a key it is refused, saying how to provide one.
    let no_key = read_and_extract_keyed(&e.bytes, Some(&e.sidecar), None);
    let err = error_chain(&no_key.result.unwrap_err());
    assert!(err.contains("set identity-file in [job.encryption]"), "{err}");
}

/// Mutations of the tar inside, recompressed: they reach the tar parser and the
/// reader's own checks instead of stopping at zstd's checksum.
#[test]
fn mutated_tars() {
    run_archive_cases(
        "mutated tars",
        1000,
        prop::collection::vec(mutation(), 1..3),
        |mutations, tally| {
            let mut tar = valid().tar.clone();
            for m in &mutations {
                apply(&mut tar, m);
            }
            let bytes = zstd::encode_all(tar.as_slice(), 1).unwrap();
            check_mutated(&bytes, tally)
        },
    );
}

// ---------------------------------------------------------------------------
// Random entry lists
// ---------------------------------------------------------------------------

/// One raw tar entry: name, type, link name and data written byte for byte, and the
/// size the header claims.
#[derive(Debug, Clone)]
struct RawEntry {
    path: Vec<u8>,
    kind: EntryType,
    link: Option<Vec<u8>>,
    data: Vec<u8>,
    size: u64,
    mode: u32,
}

/// Archive paths: mostly plausible (so collisions, links and parents interact), some
/// hostile.
fn raw_path() -> impl Strategy<Value = Vec<u8>> {
    let plausible = prop::sample::select(vec![
        "db/app.db",
        "db/other.db",
        "db/x/y",
        "db",
        "media/0",
        "media/0/a",
        "media/0/a/b",
        "media/0/l",
        "media/0/l/x",
        "media/0/d/",
        "media/1",
        "media/1/x",
        "media/2/x",
        "media/00/x",
        "media/0/a\nb",
        "media/0/\u{1b}[31mred",
        "manifest.json",
        "./media/0/a",
        "media/0/./a",
        "media//0/a",
        "",
        "/",
        "..",
        "../escape",
        "media/0/../../escape",
        "media/0/../../../x/y/neighbour/n",
        "/tmp/coffer-hostile-absolute",
        "media/0\\..\\x",
    ])
    .prop_map(|s| s.as_bytes().to_vec());
    let components = prop::collection::vec(
        prop::sample::select(vec![
            "..", ".", "", "a", "b", "db", "media", "0", "1", "ü", "a b", "x\ty",
        ]),
        1..6,
    )
    .prop_map(|parts| parts.join("/").into_bytes());
    let long = (100usize..400).prop_map(|n| format!("media/0/{}", "a".repeat(n)).into_bytes());
    let deep = (30usize..80).prop_map(|n| format!("media/0/{}f", "d/".repeat(n)).into_bytes());
    let non_utf8 = prop::collection::vec(any::<u8>(), 1..20).prop_map(|mut b| {
        let mut p = b"media/0/".to_vec();
        b.push(0xff);
        p.extend(b);
        p
    });
    prop_oneof![6 => plausible, 2 => components, 1 => long, 1 => deep, 1 => non_utf8]
}

fn link_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "a",
            "b",
            "sub/x",
            ".",
            "..",
            "../..",
            "../../..",
            "/etc/passwd",
            "",
            "a/../..",
            "a/./b",
            "l",
            "../x/y/neighbour",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        raw_path(),
    ]
}

fn entry_type() -> impl Strategy<Value = EntryType> {
    prop_oneof![
        8 => Just(EntryType::Regular),
        4 => Just(EntryType::Directory),
        3 => Just(EntryType::Symlink),
        1 => Just(EntryType::Link),
        1 => Just(EntryType::Char),
        1 => Just(EntryType::Block),
        1 => Just(EntryType::Fifo),
        1 => Just(EntryType::Continuous),
        1 => Just(EntryType::GNUSparse),
        1 => Just(EntryType::XHeader),
        1 => any::<u8>().prop_map(EntryType::new),
    ]
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    (
        raw_path(),
        entry_type(),
        link_target(),
        prop::collection::vec(any::<u8>(), 0..300),
        prop_oneof![6 => Just(None), 1 => (0u64..2000).prop_map(Some), 1 => Just(Some(1 << 40))],
        prop::sample::select(vec![0o644u32, 0o755, 0o4755, 0o000, 0o7777, 0o400]),
    )
        .prop_map(|(path, kind, link, mut data, lie, mode)| {
            if kind == EntryType::XHeader && data.len() % 3 == 0 {
                // A well-formed pax record now and then, so pax paths are used.
                data = b"30 path=media/0/../../escape\n".to_vec();
            }
            let has_data = !matches!(kind, EntryType::Directory | EntryType::Symlink | EntryType::Link);
            if !has_data {
                data.clear();
            }
            let link = matches!(kind, EntryType::Symlink | EntryType::Link).then_some(link);
            RawEntry {
                size: lie.unwrap_or(data.len() as u64),
                path,
                kind,
                link,
                data,
                mode,
            }
        })
}

/// A GNU long-name (`L`) or long-link (`K`) entry for a field over 99 bytes.
fn append_long(builder: &mut tar::Builder<Vec<u8>>, kind: EntryType, value: &[u8]) {
    let mut header = tar::Header::new_gnu();
    let name = b"././@LongLink";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    let mut data = value.to_vec();
    data.push(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice()).unwrap();
}

/// A tar of `entries`, byte for byte (the `tar` crate's setters would refuse `..`).
fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(e.kind);
        header.set_size(e.size);
        header.set_mode(e.mode);
        header.set_mtime(1_767_225_600);
        let old = header.as_old_mut();
        if e.path.len() < 100 {
            old.name[..e.path.len()].copy_from_slice(&e.path);
        } else {
            append_long(&mut builder, EntryType::GNULongName, &e.path);
            old.name[..10].copy_from_slice(b"long-name!");
        }
        if let Some(link) = &e.link {
            if link.len() < 100 {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            } else {
                append_long(&mut builder, EntryType::GNULongLink, link);
            }
        }
        header.set_cksum();
        builder.append(&header, e.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A manifest that truthfully lists `entries` (as the reader would see them), as the
/// archive's last entry.
fn truthful_manifest(entries: &[RawEntry]) -> RawEntry {
    let listed: Vec<Value> = entries
        .iter()
        .filter_map(|e| {
            let path = String::from_utf8(e.path.clone()).ok()?;
            let path = path.trim_end_matches('/').to_owned();
            let mut entry = json!({
                "path": path,
                "kind": match e.kind {
                    EntryType::Directory => "dir",
                    EntryType::Symlink => "symlink",
                    _ => "file",
                },
                "size": if matches!(e.kind, EntryType::Directory | EntryType::Symlink) { 0 } else { e.size },
                "mode": e.mode & 0o7777,
                "mtime": 1_767_225_600,
            });
            match e.kind {
                EntryType::Directory => {}
                EntryType::Symlink => {
                    entry["target"] = json!(String::from_utf8_lossy(e.link.as_deref().unwrap_or_default()))
                }
                _ => entry["sha256"] = json!(sha256(&e.data)),
            }
            Some(entry)
        })
        .collect();
    let mut manifest = serde_json::to_value(blank_manifest()).unwrap();
    manifest["entries"] = json!(listed);
    let data = serde_json::to_vec(&manifest).unwrap();
    RawEntry {
        path: b"manifest.json".to_vec(),
        kind: EntryType::Regular,
        link: None,
        size: data.len() as u64,
        data,
        mode: 0o644,
    }
}

/// Entry lists that are plausible (a database, media dirs, files, inside symlinks) so
/// that some are accepted and the success path is checked too.
fn plausible_entries() -> impl Strategy<Value = Vec<RawEntry>> {
    let file = |path: &'static str| {
        prop::collection::vec(any::<u8>(), 0..200).prop_map(move |data| RawEntry {
            path: path.as_bytes().to_vec(),
            kind: EntryType::Regular,
            link: None,
            size: data.len() as u64,
            data,
            mode: 0o640,
        })
    };
    let dir = |path: &'static str| RawEntry {
        path: path.as_bytes().to_vec(),
        kind: EntryType::Directory,
        link: None,
        data: Vec::new(),
        size: 0,
        mode: 0o750,
    };
    let symlink = |path: &'static str, target: &'static str| RawEntry {
        path: path.as_bytes().to_vec(),
        kind: EntryType::Symlink,
        link: Some(target.as_bytes().to_vec()),
        data: Vec::new(),
        size: 0,
        mode: 0o777,
    };
    (
        file("db/app.db"),
        file("media/0/f"),
        file("media/1/g"),
        prop::sample::subsequence(
            vec![
                dir("media/0/d"),
                dir("media/0/d/e"),
                symlink("media/0/l", "d/e"),
                symlink("media/0/d/up", ".."),
                symlink("media/1/bad", "../0/f"),
                dir("media/1/../x"),
            ],
            0..=3,
        ),
        any::<bool>(),
    )
        .prop_map(move |(db, f, g, extra, drop_db)| {
            let mut entries = vec![dir("media/0"), f, dir("media/1"), g];
            entries.extend(extra);
            if !drop_db {
                entries.insert(0, db);
            }
            entries
        })
}

/// Random entry lists, with or without a manifest that tells the truth about them.
#[test]
fn random_entry_lists() {
    let strategy = (
        prop_oneof![
            2 => prop::collection::vec(raw_entry(), 0..8),
            1 => plausible_entries(),
        ],
        any::<bool>(),
        prop::bool::weighted(0.9),
    );
    run_archive_cases(
        "random entry lists",
        1500,
        strategy,
        |(entries, with_manifest, compress), tally| {
            let mut all = entries.clone();
            if with_manifest {
                all.push(truthful_manifest(&entries));
            }
            let tar = raw_tar(&all);
            let bytes = if compress {
                zstd::encode_all(tar.as_slice(), 1).unwrap()
            } else {
                tar
            };

            let with_sidecar = read_and_extract(&bytes, Some(&valid().sidecar));
            prop_assert!(
                with_sidecar.result.is_err(),
                "random archive accepted as the valid one"
            );

            let alone = read_and_extract(&bytes, None);
            if let Ok((manifest, _, _)) = &alone.result {
                // Accepted: staging holds exactly what the manifest lists, plus parent
                // directories the archive did not list.
                assert_tree_matches(&alone.tree, &tree_of_manifest(manifest));
                tally.accepted.set(tally.accepted.get() + 1);
            }
            Ok(())
        },
    );
}

/// Arbitrary bytes, and arbitrary bytes behind a valid zstd frame header.
#[test]
fn random_bytes() {
    let strategy = (prop::collection::vec(any::<u8>(), 0..2000), any::<bool>());
    run_archive_cases("random bytes", 500, strategy, |(bytes, zstd_framed), _| {
        let bytes = if zstd_framed {
            zstd::encode_all(bytes.as_slice(), 1).unwrap()
        } else {
            bytes
        };
        prop_assert!(read_and_extract(&bytes, None).result.is_err());
        prop_assert!(read_and_extract(&bytes, Some(&valid().sidecar)).result.is_err());
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Manifests and sidecars
// ---------------------------------------------------------------------------

/// A sidecar through the daemon's own parse + validate (`catalog::read_sidecar`).
fn parse_sidecar(bytes: &[u8]) -> Result<Sidecar, String> {
    let case = tempfile::tempdir().unwrap();
    let path = case.path().join(format!("{ID}.json"));
    fs::write(&path, bytes).unwrap();
    coffer_daemon::manifest::sidecar::read(&path)
}

fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "format-version",
            "id",
            "job",
            "entries",
            "path",
            "kind",
            "size",
            "sha256",
            "media-roots",
            "totals",
            "source",
            "target",
            "mode",
            "mtime",
            "note",
        ])
        .prop_map(str::to_owned),
        "[a-z\\-\n\u{1b}`é]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9/.\n\u{0}é-]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Ways to break a valid sidecar, each of which the contract refuses.
#[derive(Debug, Clone)]
enum SidecarMutation {
    /// Removes a required field (by JSON pointer).
    Drop(&'static str),
    /// Replaces a field with a value of another type.
    Retype(&'static str, Value),
    /// Sets a number field to a huge or negative number (raw JSON text).
    Number(&'static str, &'static str),
    /// Sets a file entry's sha256.
    Hash(String),
    /// Sets an entry's path.
    EntryPath(String),
    /// Writes a field twice in the JSON text.
    Duplicate(&'static str),
}

const REQUIRED: &[&str] = &[
    "/format-version",
    "/id",
    "/job",
    "/created-at",
    "/source",
    "/source/page-size",
    "/media-roots",
    "/entries",
    "/entries/0/path",
    "/entries/0/kind",
    "/entries/0/size",
    "/entries/0/mode",
    "/entries/0/mtime",
    "/totals",
    "/totals/files",
    "/size",
    "/sha256",
];

const NUMBERS: &[&str] = &[
    "/format-version",
    "/size",
    "/entries/0/size",
    "/entries/0/mode",
    "/totals/bytes",
    "/source/page-size",
];

fn sidecar_mutation() -> impl Strategy<Value = SidecarMutation> {
    let retype_value = prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!("text")),
        Just(json!([1, 2])),
        Just(json!({"a": 1})),
        Just(json!(1.5)),
    ];
    prop_oneof![
        prop::sample::select(REQUIRED).prop_map(SidecarMutation::Drop),
        (prop::sample::select(REQUIRED), retype_value).prop_map(|(f, v)| SidecarMutation::Retype(f, v)),
        (
            prop::sample::select(NUMBERS),
            prop::sample::select(vec![
                "-1",
                "18446744073709551616",
                "1e400",
                "-9223372036854775809",
                "1.5"
            ]),
        )
            .prop_map(|(f, n)| SidecarMutation::Number(f, n)),
        "[0-9a-zA-Z]{0,70}"
            .prop_filter("not a valid hash", |h| !is_sha256_hex(h))
            .prop_map(SidecarMutation::Hash),
        prop::sample::select(vec![
            "../db/app.db",
            "db/../../x",
            "/db/app.db",
            "media/0/../../../etc/passwd",
            "media/9/x",
            "media/0/./x",
            "",
            "db",
            "media/0//x",
            "x\0y",
        ])
        .prop_map(|p| SidecarMutation::EntryPath(p.to_owned())),
        prop::sample::select(vec!["id", "size", "entries", "job"]).prop_map(SidecarMutation::Duplicate),
    ]
}

/// The valid sidecar's JSON with `m` applied.
fn mutate_sidecar(m: &SidecarMutation) -> Vec<u8> {
    let mut value = serde_json::to_value(&valid().sidecar).unwrap();
    // The database entry is first; make it the one mutated entry fields hit.
    let file_entry = "/entries/0";
    assert_eq!(value.pointer("/entries/0/path"), Some(&json!("db/app.db")));
    let split = |pointer: &str| {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        (parent.to_owned(), key.to_owned())
    };
    match m {
        SidecarMutation::Drop(field) => {
            let (parent, key) = split(field);
            value
                .pointer_mut(&parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(&key);
        }
        SidecarMutation::Retype(field, v) => *value.pointer_mut(field).unwrap() = v.clone(),
        SidecarMutation::Number(field, n) => {
            *value.pointer_mut(field).unwrap() = json!("@@NUMBER@@");
            let text = serde_json::to_string(&value).unwrap();
            return text.replacen("\"@@NUMBER@@\"", n, 1).into_bytes();
        }
        SidecarMutation::Hash(h) => *value.pointer_mut(&format!("{file_entry}/sha256")).unwrap() = json!(h),
        SidecarMutation::EntryPath(p) => {
            *value.pointer_mut(&format!("{file_entry}/path")).unwrap() = json!(p)
        }
        SidecarMutation::Duplicate(field) => {
            let text = serde_json::to_string(&value).unwrap();
            let again = serde_json::to_string(&value[*field]).unwrap();
            return text
                .replacen('{', &format!("{{\"{field}\":{again},"), 1)
                .into_bytes();
        }
    }
    serde_json::to_vec(&value).unwrap()
}

/// Whether `m` retypes a field to a value of the type it already has.
fn same_type(m: &SidecarMutation) -> bool {
    let SidecarMutation::Retype(field, v) = m else {
        return false;
    };
    let old = serde_json::to_value(&valid().sidecar).unwrap();
    let old = old.pointer(field).unwrap();
    std::mem::discriminant(old) == std::mem::discriminant(v)
        && !(old.is_number() && v.is_number() && old.is_u64() != v.is_u64())
}

proptest! {
    #![proptest_config(cases(512))]

    /// Random JSON never panics the sidecar parser; errors are one line.
    #[test]
    fn random_json_sidecars(value in json_value()) {
        if let Err(e) = parse_sidecar(&serde_json::to_vec(&value).unwrap()) {
            assert_one_clear_line(&error_chain(&ArchiveError::Invalid(e)));
        }
        if let Ok(m) = serde_json::from_value::<Manifest>(value)
            && let Err(e) = m.validate()
        {
            assert_one_clear_line(&error_chain(&ArchiveError::Invalid(e)));
        }
    }

    /// Each contract-breaking mutation of a valid sidecar is refused, in one line.
    #[test]
    fn mutated_sidecars(m in sidecar_mutation()) {
        prop_assume!(!same_type(&m));
        let bytes = mutate_sidecar(&m);
        match parse_sidecar(&bytes) {
            Ok(_) => prop_assert!(false, "accepted a broken sidecar ({:?})", m),
            Err(e) => assert_one_clear_line(&error_chain(&ArchiveError::Invalid(e))),
        }
    }

    /// Unlike `manifest.json` inside an archive (`deny_unknown_fields`), the sidecar
    /// ignores fields it does not know: serde's `flatten` of the manifest into the
    /// sidecar defeats `deny_unknown_fields`. Harmless — verification compares the
    /// sidecar's manifest with the archive's — but pinned here so a change is noticed.
    #[test]
    fn unknown_sidecar_fields_are_ignored(key in "x-[a-z]{1,8}", at_entry in any::<bool>()) {
        let mut value = serde_json::to_value(&valid().sidecar).unwrap();
        let target = if at_entry { value.pointer_mut("/entries/0").unwrap() } else { &mut value };
        target.as_object_mut().unwrap().insert(key, json!(1));
        let parsed = parse_sidecar(&serde_json::to_vec(&value).unwrap());
        if at_entry {
            // Entries are not flattened: there the unknown field is refused.
            prop_assert!(parsed.is_err());
        } else {
            prop_assert_eq!(parsed.ok(), Some(valid().sidecar.clone()));
        }
    }

    /// `check_entry_path` agrees with the rule written out in [`entry_path_spec`] and
    /// admits only paths that stay below where they are joined.
    #[test]
    fn entry_paths(path in prop_oneof![
        "\\PC{0,40}",
        "(db|media|/|\\.|\\.\\.|0|1|01|2|a|\\\\|\u{0}|\n|é|/){0,8}",
    ], roots in 0usize..4) {
        let got = check_entry_path(&path, roots);
        prop_assert_eq!(got.is_ok(), entry_path_spec(&path, roots), "{:?} with {} roots: {:?}", path, roots, got);
        match got {
            Ok(()) => prop_assert!(
                Path::new(&path).components().all(|c| matches!(c, Component::Normal(_)))
                    && Path::new("/base").join(&path).starts_with("/base"),
                "{:?} escapes", path
            ),
            Err(e) => assert_one_clear_line(&e),
        }
    }
}

/// The rule of `check_entry_path`, independently: non-empty; no NUL or `\`; not
/// absolute; no trailing `/`, no empty, `.` or `..` component; and either `db/<one or
/// more components>` or `media/<n>[/...]` with `n` in canonical decimal and
/// `n < roots`.
fn entry_path_spec(path: &str, roots: usize) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    if path.is_empty() || path.contains(['\0', '\\']) || parts.iter().any(|p| matches!(*p, "" | "." | "..")) {
        return false;
    }
    match parts.as_slice() {
        ["db", _, ..] => true,
        ["media", n, ..] => {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
                && n.parse::<usize>().is_ok_and(|n| n < roots)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

const CONFIG_PATH: &str = "/etc/coffer/hostile.toml";

/// A valid config using every section; each `key = value` line is a mutation point.
const VALID_CONFIG: &str = r#"[daemon]
socket = "/run/coffer/cofferd.sock"
state-dir = "/var/lib/coffer"
backup-dir = "/var/lib/coffer/backups"
socket-mode = "0660"
admin-uids = [0]
admin-groups = ["coffer-admin"]
read-uids = []
read-groups = ["coffer"]
log-format = "text"
max-concurrent-runs = 1
shutdown-grace = "30s"
max-upload-size = "1GiB"

[[job]]
name = "app"
database = "/var/lib/app/app.db"
media = ["/var/lib/app/uploads"]
schedule = "0 0 2 * * *"
timezone = "UTC"
compression-level = 3
verify-after-backup = true
min-free-space = "1GiB"
stale-after = "26h"
catch-up = true
busy-timeout = "10s"
snapshot-method = "vacuum-into"

[job.retention]
keep-last = 10
keep-within = "30d"
keep-daily = 7

[job.hooks]
before-backup = ["true"]
timeout = "5m"
"#;

fn parse_config(text: &str) -> Result<Config, String> {
    Config::parse(Path::new(CONFIG_PATH), text).map_err(|e| {
        let message = error_chain(&e);
        assert_one_clear_line(&message);
        assert!(
            message.contains(CONFIG_PATH),
            "error does not name the file: {message}"
        );
        message
    })
}

/// The value lines of [`VALID_CONFIG`]: (line index, key, value text).
fn value_lines() -> Vec<(usize, &'static str, &'static str)> {
    VALID_CONFIG
        .lines()
        .enumerate()
        .filter_map(|(i, l)| l.split_once(" = ").map(|(k, v)| (i, k, v)))
        .collect()
}

/// TOML values of other types than `original`.
fn other_type_values(original: &str) -> Vec<&'static str> {
    let kind = |v: &str| match v.as_bytes().first() {
        Some(b'"') => 's',
        Some(b'[') => 'a',
        Some(b't' | b'f') => 'b',
        Some(b'{') => 't',
        _ if v.contains('T') => 'd',
        _ if v.contains('.') => 'f',
        _ => 'i',
    };
    [
        "\"text\"",
        "42",
        "-1",
        "true",
        "[1, 2]",
        "[\"x\"]",
        "{ a = 1 }",
        "1.5",
        "1979-05-27T07:32:00Z",
    ]
    .into_iter()
    .filter(|v| kind(v) != kind(original) || (kind(v) == 'a' && v.contains('"') != original.contains('"')))
    .filter(|v| !(kind(original) == 'a' && *v == "[\"x\"]" && original.contains('"')))
    .filter(|v| !(original == "[]" && v.starts_with('[')))
    .collect()
}

proptest! {
    #![proptest_config(cases(512))]

    /// Random text and random bytes.
    #[test]
    fn random_config_text(text in prop_oneof![
        "\\PC{0,200}",
        "(\\[daemon\\]|\\[\\[job\\]\\]|\\[job\\.hooks\\]|name|database|=|\"|/x|\\n|\\{|\\}|\\[|\\]|1|,|#|'|\u{1b}){0,40}",
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        let _ = parse_config(&text);
    }

    /// One value of the valid config replaced by a value of another type: refused.
    #[test]
    fn retyped_config_values(line in any::<Index>(), pick in any::<Index>()) {
        let lines = value_lines();
        let (at, key, value) = lines[line.index(lines.len())];
        let choices = other_type_values(value);
        let replacement = choices[pick.index(choices.len())];
        let text: Vec<String> = VALID_CONFIG
            .lines()
            .enumerate()
            .map(|(i, l)| if i == at { format!("{key} = {replacement}") } else { l.to_owned() })
            .collect();
        let result = parse_config(&text.join("\n"));
        prop_assert!(result.is_err(), "{} = {} was accepted", key, replacement);
    }

    /// An unknown key anywhere: refused (unknown keys are an error).
    #[test]
    fn unknown_config_keys(at in any::<Index>(), key in "[a-z][a-z0-9-]{0,12}", value in prop::sample::select(vec!["1", "\"x\"", "true", "[]"])) {
        let key = format!("zz-{key}");
        let mut lines: Vec<String> = VALID_CONFIG.lines().map(str::to_owned).collect();
        let at = at.index(lines.len() + 1);
        lines.insert(at, format!("{key} = {value}"));
        let result = parse_config(&lines.join("\n"));
        prop_assert!(result.is_err(), "unknown key accepted at line {}", at);
        let message = result.err().unwrap_or_default();
        prop_assert!(message.contains(&key), "the error does not name the key: {}", message);
    }
}

#[test]
fn the_valid_config_parses() {
    let config = parse_config(VALID_CONFIG).expect("VALID_CONFIG is valid");
    assert_eq!(config.jobs.len(), 1);
}

// ---------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------

/// Strings near backup ids: valid ids with one character changed, inserted or removed
/// among all sorts of strings.
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[a-z0-9_-]{0,8}-[0-9]{8}T[0-9]{6}Z(-[0-9]{1,7})?",
        "([a-zA-Z0-9_-]|:|latest| |\t|\n|\u{0}|é|/|\\.\\.){0,10}",
        "[0-9+ -]{0,8}[0-9]{0,8}T[0-9 +]{0,6}Z",
        (any::<Index>(), any::<char>()).prop_map(|(i, c)| {
            let mut s: Vec<char> = ID.chars().collect();
            let at = i.index(s.len());
            s[at] = c;
            s.into_iter().collect()
        }),
    ]
}

/// The job-name rule written out: `[a-z0-9][a-z0-9_-]*`, at most 64 bytes.
fn job_name_spec(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= ids::MAX_JOB_NAME_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

proptest! {
    #![proptest_config(cases(2000))]

    /// `is_valid_job_name` is exactly its documented rule.
    #[test]
    fn job_names(s in id_like()) {
        prop_assert_eq!(ids::is_valid_job_name(&s), job_name_spec(&s));
    }

    /// An id that splits is canonical: `backup_id(job, at, 1)` followed by nothing or
    /// by `-N` (1 to 6 digits, no leading zero), so it names one file and nothing else.
    #[test]
    fn backup_ids_round_trip(s in id_like()) {
        if let Some((job, at)) = ids::split_backup_id(&s) {
            prop_assert!(job_name_spec(job));
            let base = ids::backup_id(job, at, 1);
            let rest = s.strip_prefix(&base);
            prop_assert!(rest.is_some(), "{:?} does not start with {:?}", s, base);
            let rest = rest.unwrap_or_default();
            if !rest.is_empty() {
                let n = rest.strip_prefix('-').unwrap_or_default();
                prop_assert!(
                    (1..=6).contains(&n.len()) && n.parse::<u32>().is_ok_and(|v| v.to_string() == n),
                    "suffix {:?} of {:?}", rest, s
                );
                let again = ids::backup_id(job, at, n.parse().unwrap_or(2));
                prop_assert_eq!(ids::split_backup_id(&again), Some((job, at)));
            }
            prop_assert!(ids::is_valid_backup_id(&s));
        } else {
            prop_assert!(!ids::is_valid_backup_id(&s));
        }
    }

    /// `IdRef::parse` accepts exactly `latest`, `JOB:latest` and backup ids (after
    /// trimming), and refuses the rest with one line.
    #[test]
    fn id_refs(s in id_like()) {
        let t = s.trim();
        match IdRef::parse(&s) {
            Ok(IdRef::Latest) => prop_assert_eq!(t, "latest"),
            Ok(IdRef::LatestOf(job)) => {
                prop_assert!(job_name_spec(&job));
                prop_assert_eq!(format!("{job}:latest"), t);
            }
            Ok(IdRef::Id(id)) => {
                prop_assert_eq!(id.as_str(), t);
                prop_assert!(ids::is_valid_backup_id(&id));
            }
            Err(e) => {
                prop_assert!(t != "latest" && !ids::is_valid_backup_id(t));
                assert_one_clear_line(&error_chain(&e));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Cases found by the properties above, kept explicitly
// ---------------------------------------------------------------------------

/// The valid archive verifies and extracts (the properties above rely on it).
#[test]
fn the_valid_archive_verifies_and_extracts() {
    let valid = valid();
    let outcome = read_and_extract(&valid.bytes, Some(&valid.sidecar));
    assert!(
        outcome.result.is_ok(),
        "{:?}",
        outcome.result.err().map(|e| error_chain(&e))
    );
    assert_eq!(outcome.tree, valid.tree);
    assert!(valid.tree.len() > 6, "{:?}", valid.tree);
}

/// Reads `entries` (plus a truthful manifest) without a sidecar; the error text.
fn refusal(entries: &[RawEntry]) -> String {
    let mut all = entries.to_vec();
    all.push(truthful_manifest(entries));
    let bytes = zstd::encode_all(raw_tar(&all).as_slice(), 1).unwrap();
    let outcome = read_and_extract(&bytes, None);
    error_chain(&outcome.result.expect_err("accepted"))
}

fn raw(path: &str, kind: EntryType, data: &[u8]) -> RawEntry {
    RawEntry {
        path: path.as_bytes().to_vec(),
        kind,
        link: None,
        data: data.to_vec(),
        size: data.len() as u64,
        mode: 0o644,
    }
}

/// An entry of an unknown tar type was named with Rust's debug output
/// (`__Nonexhaustive(90)`).
#[test]
fn unknown_entry_types_are_named_plainly() {
    let message = refusal(&[raw("db/app.db", EntryType::new(b'Z'), b"x")]);
    assert!(message.contains("'Z'"), "{message}");
    let message = refusal(&[raw("media/0/dev", EntryType::Char, b"")]);
    assert!(message.contains("character device"), "{message}");
}

/// A file name with a newline or an escape sequence (legal on Linux) reached error
/// messages raw: a multi-line message, or terminal control codes on the admin's
/// screen.
#[test]
fn control_characters_in_names_stay_escaped() {
    let message = refusal(&[
        raw("db/app.db", EntryType::Regular, b"x"),
        raw("media/0/a\nb\u{1b}[2J", EntryType::Char, b""),
    ]);
    assert!(message.contains("a\\nb"), "{message}");
    let id_error = IdRef::parse("app\n-20260101T000000Z\u{1b}[2J").unwrap_err();
    assert_one_clear_line(&error_chain(&id_error));
}

/// Reads a mutated archive's content: keeps `Read` in use for the extractor's
/// contract (whatever the visitor does not read is drained by the reader).
#[test]
fn a_visitor_that_reads_nothing_still_gets_everything_hashed() {
    struct Peek(u64);
    impl coffer_daemon::archive::Visitor for Peek {
        fn entry(
            &mut self,
            _entry: &coffer_daemon::archive::FoundEntry,
            content: &mut dyn Read,
        ) -> Result<(), ArchiveError> {
            let mut one = [0u8; 1];
            self.0 += content.read(&mut one).map_err(ArchiveError::Read)? as u64;
            Ok(())
        }
    }
    let valid = valid();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar.zst");
    let mut tar = valid.tar.clone();
    // Flip one content byte of the database inside the tar (first entry, after its
    // 512-byte header) and recompress: the hash check must catch it though the
    // visitor never read that byte.
    tar[512 + 100] ^= 1;
    fs::write(&path, zstd::encode_all(tar.as_slice(), 1).unwrap()).unwrap();
    let err = read_archive(&path, None, &mut Peek(0), &mut |_| {}, &|| false).unwrap_err();
    assert!(
        error_chain(&err).contains("does not match its sha256"),
        "{}",
        error_chain(&err)
    );
}
