#!/usr/bin/env python3
"""Generate a realistic application data set for the Coffer benchmark.

Produces two things, both deterministic for a given --seed:

* an SQLite database (--db) of about --size-mib MiB in WAL mode: users, packages,
  versions, a downloads log, an audit log and attachments, with indexes, text
  columns of varying length (JSON-ish settings and manifests, Markdown READMEs)
  and blob columns (avatars, attachments) that mix incompressible bytes,
  partly-compressible binary and text, so zstd -3 lands at a realistic ~2-4x;
* a media tree (--media) of --files files totalling about --media-mib MiB in
  nested directories, 1 KiB to 2 MiB each (mostly small), where the bulk of the
  bytes are incompressible "images"/"videos" and the rest documents and text.

Each output gets a sibling stamp file (`<path>.gen-stamp.json`) recording the
parameters and what was written. If the stamp matches the requested parameters and
the output is unchanged, generation is skipped, so repeated benchmark runs are fast.
An existing output without a stamp is never overwritten unless --force is given.

Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sqlite3
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

# Bump when the generated content changes, so stale stamps are not trusted.
GENERATOR_VERSION = 6

KIB = 1024
MIB = 1024 * 1024

# 2019-01-01T00:00:00Z .. 2024-12-31T23:59:59Z: the app's lifetime.
T_START = 1546300800
T_END = 1735689599

# Share of the database file taken by each table (attachments fill the rest).
DB_BUDGET = {
    "users": 0.06,
    "packages": 0.03,
    "versions": 0.24,
    "downloads": 0.16,
    "audit_log": 0.05,
}

SCHEMA = """
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL,
    display_name  TEXT,
    bio           TEXT,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    settings      TEXT NOT NULL,          -- JSON
    avatar        BLOB                    -- small JPEG, NULL for most users
);
CREATE TABLE packages (
    id              INTEGER PRIMARY KEY,
    owner_id        INTEGER NOT NULL REFERENCES users(id),
    name            TEXT NOT NULL UNIQUE,
    description     TEXT,
    homepage        TEXT,
    repository      TEXT,
    license         TEXT,
    keywords        TEXT,                 -- JSON array
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    downloads_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE versions (
    id           INTEGER PRIMARY KEY,
    package_id   INTEGER NOT NULL REFERENCES packages(id),
    version      TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    yanked       INTEGER NOT NULL DEFAULT 0,
    checksum     TEXT NOT NULL,           -- sha256 hex
    size         INTEGER NOT NULL,
    manifest     TEXT NOT NULL,           -- JSON
    readme       TEXT,                    -- Markdown
    UNIQUE (package_id, version)
);
CREATE TABLE downloads (
    id         INTEGER PRIMARY KEY,
    version_id INTEGER NOT NULL REFERENCES versions(id),
    ts         INTEGER NOT NULL,
    ip         TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    country    TEXT,
    bytes      INTEGER NOT NULL
);
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    user_id INTEGER REFERENCES users(id),
    ts      INTEGER NOT NULL,
    action  TEXT NOT NULL,
    ip      TEXT,
    details TEXT                          -- JSON
);
CREATE TABLE attachments (
    id         INTEGER PRIMARY KEY,
    version_id INTEGER NOT NULL REFERENCES versions(id),
    filename   TEXT NOT NULL,
    mime       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    data       BLOB NOT NULL
);
CREATE INDEX attachments_version ON attachments(version_id);
CREATE INDEX attachments_sha256 ON attachments(sha256);
"""

# Secondary indexes built after the bulk load (much faster than maintaining them).
LATE_INDEXES = """
CREATE INDEX users_email ON users(email);
CREATE INDEX users_created ON users(created_at);
CREATE INDEX packages_owner ON packages(owner_id);
CREATE INDEX packages_updated ON packages(updated_at);
CREATE INDEX versions_published ON versions(published_at);
CREATE INDEX downloads_version_ts ON downloads(version_id, ts);
CREATE INDEX downloads_ts ON downloads(ts);
CREATE INDEX audit_log_user_ts ON audit_log(user_id, ts);
CREATE INDEX audit_log_action ON audit_log(action, ts);
"""

COMMON_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one "
    "have this from or had by hot word but what some we can out other were all there "
    "when up use your how said an each she which do their time if will way about many "
    "then them write would like so these her long make thing see him two has look more "
    "day could go come did number sound no most people my over know water than call "
    "first who may down side been now find any new work part take get place made live "
    "where after back little only round man year came show every good me give our under "
    "name very through just form sentence great think say help low line differ turn "
    "cause much mean before move right boy old too same tell does set three want air "
    "well also play small end put home read hand port large spell add even land here "
    "must big high such follow act why ask men change went light kind off need house "
    "server client request response error config build release install version update "
    "package module function return value default option file path user data cache "
    "query index table record stream buffer thread async await null true false"
).split()

SYLLABLES = (
    "ka ri to na mi ze lo su ve pa do re ti qu ba ne ly os an el ur im ex co de sta "
    "tra pro gen lin mar tor vel sin dar fer gro pla kin ust ect ion ing ent er al"
).split()

TLDS = ["com", "org", "net", "io", "dev", "co.uk", "de", "fr", "jp", "app"]
LICENSES = ["MIT", "Apache-2.0", "MIT OR Apache-2.0", "BSD-3-Clause", "GPL-3.0-only",
            "MPL-2.0", "ISC", "LGPL-2.1-or-later", "Unlicense", None]
COUNTRIES = ["US", "DE", "GB", "FR", "JP", "CN", "IN", "BR", "CA", "NL", "SE", "PL",
             "RU", "KR", "AU", "ES", "IT", "CH", "FI", "NO", "UA", "CZ", "AT", "BE",
             "SG", "TW", "MX", "AR", "ZA", "IE", None]
USER_AGENTS = (
    [f"cargo/1.{m}.{p} (x86_64-unknown-linux-gnu)" for m in range(70, 90) for p in (0, 1)]
    + [f"pip/{a}.{b} CPython/3.{c}" for a in (22, 23, 24) for b in (0, 1, 2) for c in (9, 11, 12)]
    + ["Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
       "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
       "Chrome/126.0.0.0 Safari/537.36",
       "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like "
       "Gecko) Version/17.5 Safari/605.1.15",
       "curl/8.5.0", "Wget/1.21.4", "Go-http-client/2.0", "python-requests/2.32.3",
       "bundler/2.5.11 rubygems/3.5.11 ruby/3.3.3", "npm/10.8.1 node/v20.15.0 linux x64"]
)
AUDIT_ACTIONS = ["login", "logout", "login_failed", "publish", "yank", "unyank",
                 "token_create", "token_revoke", "owner_add", "owner_remove",
                 "settings_update", "password_change", "email_verify", "2fa_enable"]


# --------------------------------------------------------------------------- content


def build_vocabulary() -> list[str]:
    """A fixed (seed-independent) Zipf-ordered vocabulary: common words, then pseudo-words."""
    rng = random.Random("coffer-bench-vocabulary")
    words = list(COMMON_WORDS)
    seen = set(words)
    while len(words) < 5000:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def build_token_table(words: list[str]) -> list[str]:
    """65536 tokens whose frequencies follow Zipf over `words`, with some punctuation,
    so that a random uint16 picks a token with realistic frequency."""
    weights = [1.0 / (i + 1) ** 1.12 for i in range(len(words))]
    total = sum(weights)
    table: list[str] = []
    for w, wt in zip(words, weights):
        table.extend([w] * max(1, int(wt / total * 60000)))
    table = table[:60000]
    # Punctuation and line breaks (~8% of tokens).
    extras = [",", ",", ".", ".", ".\n", ".\n\n", ":", "-", "(", ")", "\"", "'s", "`", "\n- "]
    i = 0
    while len(table) < 65536:
        table.append(extras[i % len(extras)])
        i += 1
    random.Random("coffer-bench-token-order").shuffle(table)
    return table


TOKENS = build_token_table(build_vocabulary())
VOCAB = build_vocabulary()

# Byte map for "partly compressible" binary: 256 byte values onto 28 symbols with
# uneven frequencies (~4.3 bits/byte of entropy, zstd -3 gets roughly 1.8x).
_SKEW_SYMBOLS = bytes(range(0x20, 0x20 + 28))
SKEW = bytes(_SKEW_SYMBOLS[min(27, int(28 * (i / 256) ** 1.6))] for i in range(256))


class Content:
    """Deterministic content source for one table or the media tree."""

    def __init__(self, seed: str):
        self.rng = random.Random(seed)
        self._buf = ""
        self._pos = 0

    def text(self, n: int) -> str:
        """The next `n` characters of an endless Zipf-distributed word stream. Slices
        never overlap, so the stream is not artificially repetitive."""
        if n <= 0:
            return ""
        if self._pos + n > len(self._buf):
            want = max(n, MIB)
            idx = memoryview(self.rng.randbytes(2 * (want // 4 + 64))).cast("H")
            self._buf = self._buf[self._pos:] + " ".join(map(TOKENS.__getitem__, idx))
            self._pos = 0
        s = self._buf[self._pos:self._pos + n]
        self._pos += n
        return s

    def random_bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def semi_bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n).translate(SKEW)

    def word(self) -> str:
        # Skewed toward frequent words.
        return VOCAB[int(len(VOCAB) * self.rng.random() ** 3)]

    def hexdigest(self) -> str:
        return self.rng.randbytes(32).hex()

    def log_uniform(self, lo: int, hi: int) -> int:
        return int(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))

    def ts(self, lo: int = T_START, hi: int = T_END) -> int:
        return self.rng.randint(lo, hi)


# --------------------------------------------------------------------------- rows


def user_rows(c: Content) -> Iterator[tuple]:
    rng = c.rng
    i = 0
    while True:
        i += 1
        name = f"{c.word()}{c.word()}{i}"
        created = c.ts()
        settings = json.dumps({
            "theme": rng.choice(["light", "dark", "system"]),
            "locale": rng.choice(["en-US", "en-GB", "de-DE", "fr-FR", "ja-JP", "pt-BR"]),
            "timezone": rng.choice(["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]),
            "notifications": {k: rng.random() < 0.6 for k in
                              ("email", "publish", "security", "newsletter", "mentions")},
            "api_tokens": [{"name": c.word(), "prefix": c.hexdigest()[:8],
                            "created_at": c.ts(created)} for _ in range(rng.randint(0, 4))],
            "profile": {"website": f"https://{c.word()}.{rng.choice(TLDS)}",
                        "about": c.text(rng.randint(0, 300))},
        })
        avatar = None
        if rng.random() < 0.15:  # a small JPEG: incompressible
            avatar = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + c.random_bytes(c.log_uniform(2 * KIB, 24 * KIB))
        yield (i, name, f"{name}@{c.word()}.{rng.choice(TLDS)}",
               f"{c.word().title()} {c.word().title()}", c.text(c.log_uniform(8, 1200)),
               created, c.ts(created) if rng.random() < 0.9 else None,
               int(rng.random() < 0.002), settings, avatar)


def package_rows(c: Content, n_users: int) -> Iterator[tuple]:
    rng = c.rng
    i = 0
    while True:
        i += 1
        name = f"{c.word()}-{c.word()}-{i}"
        created = c.ts()
        yield (i, rng.randint(1, n_users), name, c.text(c.log_uniform(20, 600)),
               f"https://{name}.{rng.choice(TLDS)}" if rng.random() < 0.6 else None,
               f"https://git.example.com/{c.word()}/{name}",
               rng.choice(LICENSES),
               json.dumps([c.word() for _ in range(rng.randint(0, 6))]),
               created, c.ts(created), int(rng.paretovariate(1.2) * 100))


def version_rows(c: Content, n_packages: int) -> Iterator[tuple]:
    rng = c.rng
    next_version: dict[int, int] = {}
    i = 0
    while True:
        i += 1
        pkg = 1 + int(n_packages * rng.random() ** 2)  # popular packages release more
        k = next_version.get(pkg, 0)
        next_version[pkg] = k + 1
        version = f"{k // 40}.{k // 8 % 5}.{k % 8}"
        size = c.log_uniform(2 * KIB, 8 * MIB)
        deps = {f"{c.word()}-{c.word()}": f"^{rng.randint(0, 3)}.{rng.randint(0, 20)}"
                for _ in range(rng.randint(0, 12))}
        files = [{"path": f"src/{c.word()}/{c.word()}.rs", "size": c.log_uniform(100, 60000),
                  "sha256": c.hexdigest()} for _ in range(rng.randint(1, 15))]
        manifest = json.dumps({
            "name": f"pkg{pkg}", "version": version, "edition": "2021",
            "description": c.text(rng.randint(20, 300)),
            "dependencies": deps,
            "features": {c.word(): [c.word() for _ in range(rng.randint(0, 3))]
                         for _ in range(rng.randint(0, 5))},
            "files": files,
        }, indent=1)
        readme = None
        if rng.random() < 0.8:
            body = c.text(c.log_uniform(200, 24 * KIB))
            readme = (f"# pkg{pkg}\n\n{body[:200]}\n\n## Usage\n\n```toml\n[dependencies]\n"
                      f"pkg{pkg} = \"{version}\"\n```\n\n{body[200:]}\n")
        yield (i, pkg, version, c.ts(), int(rng.random() < 0.02), c.hexdigest(), size,
               manifest, readme)


def download_rows(c: Content, n_versions: int, expected: int) -> Iterator[tuple]:
    rng = c.rng
    ips = [f"{a}.{b}.{x}.{y}" for a, b, x, y in
           (c.random_bytes(4) for _ in range(50000))]
    step = max(1, (T_END - T_START) // max(1, expected))
    ts = T_START
    i = 0
    while True:
        i += 1
        ts += rng.randint(0, 2 * step)
        yield (i, 1 + int(n_versions * rng.random() ** 3), ts,
               ips[int(50000 * rng.random() ** 2)],
               USER_AGENTS[int(len(USER_AGENTS) * rng.random() ** 2)],
               COUNTRIES[rng.randrange(len(COUNTRIES))],
               c.log_uniform(2 * KIB, 8 * MIB))


def audit_rows(c: Content, n_users: int) -> Iterator[tuple]:
    rng = c.rng
    i = 0
    while True:
        i += 1
        action = AUDIT_ACTIONS[int(len(AUDIT_ACTIONS) * rng.random() ** 2)]
        details = json.dumps({
            "request_id": c.hexdigest()[:32],
            "user_agent": rng.choice(USER_AGENTS),
            "result": "ok" if rng.random() < 0.95 else "denied",
            "note": c.text(rng.randint(0, 200)),
        })
        yield (i, rng.randint(1, n_users) if rng.random() < 0.97 else None, c.ts(), action,
               "%d.%d.%d.%d" % tuple(c.random_bytes(4)), details)


ATTACHMENT_KINDS = [  # (weight, extension, mime, content kind)
    (8, "tar.gz", "application/gzip", "random"),
    (4, "png", "image/png", "random"),
    (7, "pdf", "application/pdf", "pdf"),
    (8, "bin", "application/octet-stream", "semi"),
    (33, "json", "application/json", "json"),
    (20, "txt", "text/plain", "text"),
    (20, "csv", "text/csv", "csv"),
]


def make_file_content(c: Content, kind: str, size: int) -> bytes:
    if kind == "random":
        return c.random_bytes(size)
    if kind == "jpeg":
        return (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + c.random_bytes(size))[:size]
    if kind == "png":
        return (b"\x89PNG\r\n\x1a\n" + c.random_bytes(size))[:size]
    if kind == "mp4":
        return (b"\x00\x00\x00\x20ftypisom" + c.random_bytes(size))[:size]
    if kind == "semi":
        return c.semi_bytes(size)
    if kind == "pdf":
        # Text objects interleaved with compressed (random) streams.
        parts = [b"%PDF-1.7\n"]
        n = len(parts[0])
        obj = 1
        while n < size:
            chunk = (f"{obj} 0 obj\n<< /Type /Page /Font /F{obj % 7} >>\nBT "
                     f"{c.text(c.rng.randint(200, 3000))} ET\nendobj\n").encode()
            stream = c.random_bytes(c.rng.randint(500, 6000))
            parts += [chunk, b"stream\n", stream, b"\nendstream\n"]
            n += len(chunk) + len(stream) + 19
            obj += 1
        return b"".join(parts)[:size]
    if kind == "text":
        return c.text(size).encode()[:size]
    if kind == "json":
        recs = []
        n = 0
        rng = c.rng
        while n < size:
            rec = json.dumps({"id": rng.randint(1, 10**7), "name": c.word(),
                              "score": round(rng.random(), 4), "active": rng.random() < 0.7,
                              "tags": [c.word() for _ in range(rng.randint(0, 4))],
                              "updated_at": c.ts(), "comment": c.text(rng.randint(0, 120))})
            recs.append(rec)
            n += len(rec) + 2
        return ("[\n" + ",\n".join(recs) + "\n]\n").encode()[:size]
    if kind == "csv":
        rows = []
        n = 0
        rng = c.rng
        while n < size:
            line = (f"{rng.randint(1, 10**7)},{c.word()},{rng.random():.6f},"
                    f"{c.ts()},\"{c.text(rng.randint(0, 80))}\"\n")
            rows.append(line)
            n += len(line)
        return "".join(rows).encode()[:size]
    raise ValueError(kind)


def attachment_rows(c: Content, n_versions: int) -> Iterator[tuple]:
    rng = c.rng
    weights = [k[0] for k in ATTACHMENT_KINDS]
    i = 0
    while True:
        i += 1
        _, ext, mime, kind = rng.choices(ATTACHMENT_KINDS, weights)[0]
        size = c.log_uniform(4 * KIB, 1 * MIB)
        data = make_file_content(c, kind, size)
        yield (i, rng.randint(1, n_versions), f"{c.word()}-{i}.{ext}", mime, c.hexdigest(),
               len(data), c.ts(), data)


# --------------------------------------------------------------------------- database


def db_size(conn: sqlite3.Connection) -> int:
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return page_count * page_size


def fill(conn: sqlite3.Connection, table: str, ncols: int, rows: Iterator[tuple],
         budget: int, min_rows: int, max_batch: int, total_target: int | None = None) -> int:
    """Insert rows until the file has grown by `budget` bytes (or reached
    `total_target`), and at least `min_rows` were inserted. Returns the row count.

    Batches start small and are sized from the bytes per row seen so far, so small
    targets are not overshot by a whole batch."""
    sql = f"INSERT INTO {table} VALUES ({','.join('?' * ncols)})"
    start = db_size(conn)
    goal = total_target - start if total_target is not None else budget
    count = 0
    conn.execute("BEGIN")
    while True:
        grown = db_size(conn) - start
        if grown >= goal and count >= min_rows:
            break
        if count == 0 or grown <= 0:
            batch = min(max_batch, 50)
        else:
            per_row = grown / count
            batch = int(min(max_batch, max(1, (goal - grown) / per_row * 0.8 + 1)))
        batch = max(batch, min_rows - count)
        chunk = list(islice(rows, batch))
        conn.executemany(sql, chunk)
        count += len(chunk)
    conn.execute("COMMIT")
    return count


def generate_db(path: Path, size_mib: int, seed: str, log: Callable[[str], None]) -> dict:
    target = size_mib * MIB
    tmp = path.with_name(path.name + ".gen-tmp")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
        p.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    # Bulk-load settings: no journal, no fsync, big cache. Switched to WAL at the end.
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.executescript(SCHEMA)

    b = {k: int(v * target) for k, v in DB_BUDGET.items()}
    counts: dict[str, int] = {}
    t0 = time.monotonic()

    def step(name: str, n: int) -> None:
        counts[name] = n
        log(f"  {name:<12} {n:>10,} rows   db {db_size(conn) / MIB:8.1f} MiB   "
            f"{time.monotonic() - t0:6.1f} s")

    step("users", fill(conn, "users", 10, user_rows(Content(f"{seed}:users")),
                       b["users"], 20, 2000))
    step("packages", fill(conn, "packages", 11,
                          package_rows(Content(f"{seed}:packages"), counts["users"]),
                          b["packages"], 10, 2000))
    step("versions", fill(conn, "versions", 9,
                          version_rows(Content(f"{seed}:versions"), counts["packages"]),
                          b["versions"], 20, 1000))
    step("downloads", fill(conn, "downloads", 7,
                           download_rows(Content(f"{seed}:downloads"), counts["versions"],
                                         b["downloads"] // 60),
                           b["downloads"], 100, 20000))
    step("audit_log", fill(conn, "audit_log", 6,
                           audit_rows(Content(f"{seed}:audit"), counts["users"]),
                           b["audit_log"], 100, 5000))
    conn.executescript(LATE_INDEXES)
    log(f"  indexes built                db {db_size(conn) / MIB:8.1f} MiB   "
        f"{time.monotonic() - t0:6.1f} s")
    step("attachments", fill(conn, "attachments", 8,
                             attachment_rows(Content(f"{seed}:attachments"), counts["versions"]),
                             0, 5, 20, total_target=target))

    # Log rotation: the oldest 4% of downloads were pruned, leaving free pages behind,
    # as in a real, long-lived database.
    pruned = counts["downloads"] // 25
    conn.execute("DELETE FROM downloads WHERE id <= ?", (pruned,))
    conn.execute("UPDATE packages SET downloads_total = downloads_total + 1 WHERE id % 7 = 0")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    free = conn.execute("PRAGMA freelist_count").fetchone()[0] * 4096
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, path)
    for suffix in ("-wal", "-shm"):
        src = Path(f"{tmp}{suffix}")
        if src.exists():
            os.replace(src, f"{path}{suffix}")
    log(f"  pruned {pruned:,} old downloads ({free / MIB:.1f} MiB free pages), "
        f"WAL mode, {time.monotonic() - t0:.1f} s")
    return counts


# --------------------------------------------------------------------------- media


MEDIA_CATEGORIES = {  # category: [(weight, ext, kind)]
    "images": [(50, "jpg", "jpeg"), (25, "png", "png"), (10, "webp", "random")],
    "video": [(10, "mp4", "mp4")],
    "documents": [(20, "pdf", "pdf"), (6, "md", "text"), (4, "txt", "text")],
    "exports": [(8, "csv", "csv"), (6, "json", "json")],
    "misc": [(5, "svg", "text"), (3, "html", "text"), (3, "bin", "semi")],
}


def media_sizes(rng: random.Random, files: int, total: int) -> list[int]:
    """`files` sizes in [1 KiB, 2 MiB], mostly small, summing to about `total`.

    size = 1 KiB * 2048 ** (u ** k) with u uniform: k = 1 is log-uniform, larger k
    skews toward small files. k is found by bisection so the sum meets `total`."""
    lo_b, hi_b = KIB, 2 * MIB
    us = [rng.random() for _ in range(files)]

    def sizes(k: float) -> list[int]:
        return [int(lo_b * (hi_b / lo_b) ** (u ** k)) for u in us]

    lo_k, hi_k = 0.05, 60.0  # sum decreases as k grows
    if sum(sizes(lo_k)) <= total:
        return sizes(lo_k)
    if sum(sizes(hi_k)) >= total:
        return sizes(hi_k)
    for _ in range(60):
        mid = math.sqrt(lo_k * hi_k)
        if sum(sizes(mid)) > total:
            lo_k = mid
        else:
            hi_k = mid
    return sizes(hi_k)


def generate_media(root: Path, files: int, media_mib: int, seed: str,
                   log: Callable[[str], None]) -> dict:
    c = Content(f"{seed}:media")
    rng = c.rng
    tmp = root.with_name(root.name + ".gen-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sizes = media_sizes(rng, files, media_mib * MIB)
    flat = [(cat, w, ext, kind) for cat, kinds in MEDIA_CATEGORIES.items() for w, ext, kind in kinds]
    big = [x for x in flat if x[3] in ("jpeg", "png", "mp4", "random", "pdf")]
    t0 = time.monotonic()
    total = 0
    for i, size in enumerate(sizes):
        # Large files are mostly photos, videos and PDFs; small ones anything.
        pool = big if size > 256 * KIB and rng.random() < 0.9 else flat
        cat, _, ext, kind = rng.choices(pool, [x[1] for x in pool])[0]
        ts = c.ts()
        tm = time.gmtime(ts)
        d = tmp / cat / f"{tm.tm_year}" / f"{tm.tm_mon:02d}"
        if cat == "exports":
            d = d / f"{tm.tm_mday:02d}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"{c.word()}-{i:05d}.{ext}"
        data = make_file_content(c, kind, size)
        f.write_bytes(data)
        os.utime(f, (ts, ts))
        total += len(data)
    # Deterministic directory mtimes too (tar records them).
    for d, _, _ in os.walk(tmp):
        os.utime(d, (T_END, T_END))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    log(f"  {files:,} files, {total / MIB:.1f} MiB, {time.monotonic() - t0:.1f} s")
    return {"files": files, "bytes": total}


# --------------------------------------------------------------------------- stamps


def stamp_path(p: Path) -> Path:
    return p.with_name(p.name + ".gen-stamp.json")


def read_stamp(p: Path) -> dict | None:
    try:
        return json.loads(stamp_path(p).read_text())
    except (OSError, ValueError):
        return None


def write_stamp(p: Path, stamp: dict) -> None:
    tmp = stamp_path(p).with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, stamp_path(p))


def db_fingerprint(p: Path) -> dict:
    st = p.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def media_fingerprint(root: Path) -> dict:
    files = 0
    total = 0
    for d, _, names in os.walk(root):
        for n in names:
            files += 1
            total += os.lstat(os.path.join(d, n)).st_size
    return {"files": files, "bytes": total}


def check_replaceable(p: Path, force: bool) -> None:
    """Refuse to replace something this script did not generate."""
    if not p.exists() or force or read_stamp(p) is not None:
        return
    if p.is_dir() and not any(p.iterdir()):
        return
    sys.exit(f"gen_data.py: {p} exists and was not generated by this script "
             f"(no {stamp_path(p).name}); use --force to overwrite it")


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="SQLite database to create")
    ap.add_argument("--media", type=Path, required=True, help="media directory to create")
    ap.add_argument("--size-mib", type=int, default=1024, help="database size (MiB)")
    ap.add_argument("--files", type=int, default=3000, help="number of media files")
    ap.add_argument("--media-mib", type=int, default=400, help="total media size (MiB)")
    ap.add_argument("--seed", default="1", help="random seed (any string)")
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    args = ap.parse_args()
    if args.size_mib < 1 or args.files < 1 or args.media_mib < 0:
        ap.error("--size-mib and --files must be >= 1, --media-mib >= 0")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    db: Path = args.db.absolute()
    media: Path = args.media.absolute()
    db.parent.mkdir(parents=True, exist_ok=True)
    media.parent.mkdir(parents=True, exist_ok=True)

    # --- database
    want = {"generator": GENERATOR_VERSION, "seed": args.seed, "size_mib": args.size_mib}
    stamp = read_stamp(db)
    if (not args.force and stamp and stamp.get("params") == want and db.is_file()
            and stamp.get("fingerprint") == db_fingerprint(db)):
        log(f"database {db}: up to date ({db.stat().st_size / MIB:.1f} MiB), reusing")
    else:
        check_replaceable(db, args.force)
        stamp_path(db).unlink(missing_ok=True)
        log(f"database {db}: generating ~{args.size_mib} MiB (seed {args.seed})")
        counts = generate_db(db, args.size_mib, args.seed, log)
        write_stamp(db, {"params": want, "fingerprint": db_fingerprint(db), "rows": counts})

    # --- media
    want = {"generator": GENERATOR_VERSION, "seed": args.seed, "files": args.files,
            "media_mib": args.media_mib}
    stamp = read_stamp(media)
    if (not args.force and stamp and stamp.get("params") == want and media.is_dir()
            and stamp.get("fingerprint") == media_fingerprint(media)):
        fp = stamp["fingerprint"]
        log(f"media {media}: up to date ({fp['files']:,} files, {fp['bytes'] / MIB:.1f} MiB), reusing")
    else:
        check_replaceable(media, args.force)
        stamp_path(media).unlink(missing_ok=True)
        log(f"media {media}: generating {args.files:,} files, ~{args.media_mib} MiB (seed {args.seed})")
        generate_media(media, args.files, args.media_mib, args.seed, log)
        write_stamp(media, {"params": want, "fingerprint": media_fingerprint(media)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
