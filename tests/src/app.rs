//! An application's data: a database with the awkward cases ([`make_app_db`]), a
//! media tree ([`make_media`]), both together ([`App`]); a deterministic [`Rng`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use tempfile::TempDir;

use crate::*;

/// A small fast deterministic PRNG (SplitMix64): test data, not cryptography.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Fills `dir` (created if missing) with a media tree:
///
/// ```text
/// a/b/file.bin            200 KiB of random bytes
/// a/b/c/deep.txt          nested text
/// bin/run.sh              mode 0755
/// empty                   0 bytes
/// empty-dir/              an empty directory
/// link -> a/b/file.bin    relative symlink
/// secret.key              mode 0600
/// straße ünïcødé.txt      non-ASCII name
/// ```
pub fn make_media(dir: &Path) {
    let mut rng = Rng::new(0x5EED_0001);
    fs::create_dir_all(dir.join("a/b/c")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("empty-dir")).unwrap();
    fs::write(dir.join("a/b/file.bin"), rng.bytes(200 * 1024)).unwrap();
    fs::write(dir.join("a/b/c/deep.txt"), "deep inside\n".repeat(50)).unwrap();
    fs::write(dir.join("bin/run.sh"), "#!/bin/sh\necho hello\n").unwrap();
    set_mode(&dir.join("bin/run.sh"), 0o755);
    fs::write(dir.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("a/b/file.bin", dir.join("link")).unwrap();
    fs::write(dir.join("secret.key"), rng.bytes(64)).unwrap();
    set_mode(&dir.join("secret.key"), 0o600);
    fs::write(dir.join("straße ünïcødé.txt"), "Grüße aus Köln — 東京 🎉\n").unwrap();
}

/// Texts with the awkward parts of Unicode.
const TEXTS: &[&str] = &[
    "plain ascii",
    "Zoë Ångström",
    "東京都",
    "emoji 🎉🦀",
    "straße",
    "",
    "quote ' and \" and \\",
    "new\nline",
    "right-to-left עברית",
];

/// Creates a database at `path` with tables of varied types and a few hundred rows:
/// `users` (unique index), `posts` (foreign key to users, AUTOINCREMENT so
/// `sqlite_sequence` exists), `blobs` (BLOB column incl. NULL, empty and an
/// overflow-page-sized one), `tags` (secondary and compound indexes), plus
/// `user_version` 12 and an `application_id`. `wal` selects the journal mode.
pub fn make_app_db(path: &Path, wal: bool) {
    let conn = Connection::open(path).unwrap();
    let mode = if wal { "WAL" } else { "DELETE" };
    let got: String = conn
        .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(got.to_ascii_uppercase(), mode);
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         PRAGMA user_version = 12;
         PRAGMA application_id = 1129268838;
         CREATE TABLE users(
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             email TEXT UNIQUE,
             score REAL,
             bio TEXT,
             created INTEGER
         );
         CREATE TABLE posts(
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             user_id INTEGER NOT NULL REFERENCES users(id),
             title TEXT NOT NULL,
             body TEXT,
             published INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX posts_user ON posts(user_id);
         CREATE TABLE blobs(id INTEGER PRIMARY KEY, name TEXT, data BLOB);
         CREATE TABLE tags(post_id INTEGER NOT NULL REFERENCES posts(id), tag TEXT NOT NULL, weight REAL);
         CREATE INDEX tags_tag ON tags(tag);
         CREATE UNIQUE INDEX tags_post_tag ON tags(post_id, tag);
         CREATE VIEW published AS SELECT * FROM posts WHERE published = 1;",
    )
    .unwrap();
    let mut rng = Rng::new(0x5EED_0002);
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut users = tx
            .prepare(
                "INSERT INTO users(id, name, email, score, bio, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        for i in 1..=300i64 {
            let text = TEXTS[(i as usize) % TEXTS.len()];
            let email: Option<String> = (i % 7 != 0).then(|| format!("user{i}@example.org"));
            let score: Option<f64> = match i % 5 {
                0 => None,
                1 => Some(-1.0e300),
                2 => Some(0.1 * i as f64),
                _ => Some(rng.below(1_000_000) as f64 / 3.0),
            };
            let bio: Option<String> = (i % 3 != 0).then(|| format!("{text} #{i}"));
            let created: i64 = match i {
                1 => i64::MIN,
                2 => i64::MAX,
                3 => 0,
                _ => 1_700_000_000 + rng.below(10_000_000) as i64,
            };
            users
                .execute(rusqlite::params![
                    i,
                    format!("{text} {i}"),
                    email,
                    score,
                    bio,
                    created
                ])
                .unwrap();
        }
        let mut posts = tx
            .prepare("INSERT INTO posts(user_id, title, body, published) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for i in 0..600u64 {
            let user = 1 + rng.below(300) as i64;
            let body: Option<String> =
                (i % 11 != 0).then(|| TEXTS[(i as usize) % TEXTS.len()].repeat(1 + (i % 40) as usize));
            posts
                .execute(rusqlite::params![
                    user,
                    format!("post {i} — {}", TEXTS[(i % 9) as usize]),
                    body,
                    (i % 2) as i64
                ])
                .unwrap();
        }
        // Leave a gap in the AUTOINCREMENT sequence.
        tx.execute("DELETE FROM posts WHERE id % 50 = 0", []).unwrap();
        let mut blobs = tx
            .prepare("INSERT INTO blobs(name, data) VALUES (?1, ?2)")
            .unwrap();
        for i in 0..100usize {
            let data: Option<Vec<u8>> = match i {
                0 => None,
                1 => Some(Vec::new()),
                2 => Some(rng.bytes(100 * 1024)),
                _ => {
                    let len = rng.below(8192) as usize;
                    Some(rng.bytes(len))
                }
            };
            blobs
                .execute(rusqlite::params![format!("blob-{i}"), data])
                .unwrap();
        }
        let mut tags = tx
            .prepare("INSERT OR IGNORE INTO tags(post_id, tag, weight) VALUES (?1, ?2, ?3)")
            .unwrap();
        let post_ids: Vec<i64> = tx
            .prepare("SELECT id FROM posts")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for i in 0..500usize {
            let post = post_ids[rng.below(post_ids.len() as u64) as usize];
            let weight: Option<f64> = (i % 4 != 0).then(|| rng.below(100) as f64 / 7.0);
            tags.execute(rusqlite::params![post, format!("tag-{}", i % 37), weight])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// An application's data in its own temporary directory: `app.db` and `media/`.
pub struct App {
    pub db: PathBuf,
    pub media: PathBuf,
    pub dir: TempDir,
}

impl App {
    /// A database from [`make_app_db`] and a tree from [`make_media`].
    pub fn new(wal: bool) -> App {
        let dir = short_tempdir("coffer-app-");
        let db = dir.path().join("app.db");
        let media = dir.path().join("media");
        make_app_db(&db, wal);
        make_media(&media);
        App { db, media, dir }
    }

    /// The `[[job]]` section backing this app up as `name`.
    pub fn job(&self, name: &str, extra: &str) -> String {
        job_toml(name, &self.db, &[&self.media], extra)
    }
}
