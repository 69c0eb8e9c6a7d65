#!/usr/bin/env bash
# Coffer quickstart: builds cofferd and cofferctl, creates a small demo app (an SQLite
# database and an uploads directory), starts cofferd on a temporary socket, then backs
# up, lists, shows, verifies, restores into a drill directory, checks health, and
# stops the daemon. Needs only the Rust toolchain and python3 (for the demo database;
# no sqlite3 CLI). Set KEEP=1 to keep the demo directory.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building cofferd and cofferctl"
cargo build --bins --quiet
BIN=${CARGO_TARGET_DIR:-target}/debug

DEMO=$(mktemp -d /tmp/coffer-quickstart.XXXXXX)
SOCK=$DEMO/cofferd.sock
cleanup() {
    if [[ -n ${DAEMON:-} ]] && kill -0 "$DAEMON" 2>/dev/null; then
        kill -TERM "$DAEMON"
        wait "$DAEMON" || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then echo "==> kept $DEMO"; else rm -rf "$DEMO"; fi
}
trap cleanup EXIT

echo "==> creating a demo app in $DEMO/app"
mkdir -p "$DEMO/app/uploads/2026/11"
python3 - "$DEMO/app/app.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode=WAL")
db.executescript("""
CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE);
CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), title TEXT, body TEXT);
CREATE INDEX posts_by_user ON posts(user_id);
""")
db.executemany("INSERT INTO users(name, email) VALUES (?, ?)", [(f"user{i}", f"user{i}@example.org") for i in range(100)])
db.executemany("INSERT INTO posts(user_id, title, body) VALUES (?, ?, ?)",
               [(i % 100 + 1, f"post {i}", "lorem ipsum " * 50) for i in range(2000)])
db.commit()
PY
echo "hello from the uploads dir" > "$DEMO/app/uploads/2026/11/hello.txt"
head -c 200000 /dev/urandom > "$DEMO/app/uploads/2026/11/photo.jpg"
ln -s 2026/11/photo.jpg "$DEMO/app/uploads/latest.jpg"

cat > "$DEMO/cofferd.toml" <<TOML
[daemon]
socket = "$SOCK"
state-dir = "$DEMO/state"
backup-dir = "$DEMO/backups"

[[job]]
name = "demo"
database = "$DEMO/app/app.db"
media = ["$DEMO/app/uploads"]
schedule = "manual"
min-free-space = "0B"

[job.retention]
keep-last = 5
TOML

echo "==> checking the config"
"$BIN/cofferd" --config "$DEMO/cofferd.toml" --check-config

echo "==> starting cofferd on $SOCK"
"$BIN/cofferd" --config "$DEMO/cofferd.toml" 2>"$DEMO/cofferd.log" &
DAEMON=$!
for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.1; done
[[ -S $SOCK ]] || { cat "$DEMO/cofferd.log"; echo "cofferd did not start" >&2; exit 1; }

ctl() { echo "\$ cofferctl $*"; "$BIN/cofferctl" --socket "$SOCK" "$@"; echo; }
ctl backup demo --note "quickstart"
ctl list
ctl show latest
ctl verify latest --deep
ctl restore latest --to "$DEMO/drill"
echo "\$ find $DEMO/drill"; find "$DEMO/drill" | sort; echo
ctl status
ctl health
echo "==> the archive is a plain .tar.zst:"
tar --zstd -tvf "$DEMO"/backups/demo/*.tar.zst 2>/dev/null || echo "(tar without zstd support here; see README for restoring by hand)"
echo
echo "==> stopping cofferd"
kill -TERM "$DAEMON"; wait "$DAEMON"; DAEMON=
echo "quickstart done"
