#!/usr/bin/env bash
# Coffer benchmark: a large catalog and an idle daemon.
#
#   - `cofferctl list` (table and --json) over N backups (default 10,000), median of
#     several runs; DESIGN.md target < 100 ms;
#   - how long start-up takes to rebuild the catalog from N sidecars (catalog.db
#     deleted first, as after a disaster);
#   - the idle daemon's CPU time and RSS over an interval (target ~0 % CPU, ≤ 20 MiB).
#
# The N backups are one real backup of a small database, taken by cofferd, then
# copied N-1 times by this script under other ids (archive hard-linked, sidecar
# rewritten with the new id and time), as a catalog of N backups looks on disk.
#
# Usage: bash bench/catalog.sh [--backups N] [--idle-seconds S] [--runs R]
# Needs python3 (stdlib). Uses COFFER_BIN_DIR, or builds with cargo --release.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BACKUPS=10000
IDLE_SECONDS=30
RUNS=7

while [[ $# -gt 0 ]]; do
    case $1 in
        --backups) BACKUPS=$2; shift 2 ;;
        --idle-seconds) IDLE_SECONDS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "catalog.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*" >&2; }

if [[ -z ${COFFER_BIN_DIR:-} ]]; then
    log "building release binaries"
    (cd "$REPO_ROOT" && cargo build --release --bins --quiet)
    COFFER_BIN_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release
fi
COFFERD=$COFFER_BIN_DIR/cofferd
COFFERCTL=$COFFER_BIN_DIR/cofferctl

WORK=$(mktemp -d /tmp/coffer-catalog.XXXXXX)
SOCK=$WORK/cofferd.sock
DAEMON=
stop_daemon() {
    if [[ -n $DAEMON ]] && kill -0 "$DAEMON" 2>/dev/null; then
        kill -TERM "$DAEMON"
        wait "$DAEMON" || true
    fi
    DAEMON=
}
trap 'stop_daemon; rm -rf "$WORK"' EXIT

start_daemon() {
    "$COFFERD" --config "$WORK/cofferd.toml" 2>>"$WORK/cofferd.log" &
    DAEMON=$!
    for _ in $(seq 6000); do
        "$COFFERCTL" --socket "$SOCK" status >/dev/null 2>&1 && return 0
        sleep 0.01
    done
    cat "$WORK/cofferd.log" >&2
    echo "catalog.sh: cofferd did not start" >&2
    exit 1
}
now_ms() { date +%s%3N; }
ctl() { "$COFFERCTL" --socket "$SOCK" "$@"; }

python3 - "$WORK/app.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
db.executemany("INSERT INTO t(v) VALUES (?)", [(f"row {i}",) for i in range(1000)])
db.commit()
PY
cat > "$WORK/cofferd.toml" <<TOML
[daemon]
socket = "$SOCK"
state-dir = "$WORK/state"
backup-dir = "$WORK/backups"

[[job]]
name = "app"
database = "$WORK/app.db"
schedule = "manual"
min-free-space = "0B"
verify-after-backup = false
TOML

log "one real backup"
start_daemon
ctl backup app >/dev/null
stop_daemon

log "copying it to $BACKUPS backups"
python3 - "$WORK/backups/app" "$BACKUPS" <<'PY'
import datetime, json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
[sidecar] = [f for f in os.listdir(root) if f.endswith(".json")]
src_id = sidecar[:-5]
doc = json.load(open(os.path.join(root, sidecar)))
start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
for i in range(n - 1):
    at = start + datetime.timedelta(minutes=i)
    new_id = "app-" + at.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(doc).replace(src_id, new_id)
    copy = json.loads(text)
    copy["created-at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(os.path.join(root, new_id + ".json"), "w") as f:
        json.dump(copy, f)
    os.link(os.path.join(root, src_id + ".tar.zst"), os.path.join(root, new_id + ".tar.zst"))
PY
rm -f "$WORK/state/catalog.db" "$WORK/state/catalog.db-wal" "$WORK/state/catalog.db-shm"

log "start-up with the catalog rebuilt from $BACKUPS sidecars"
t0=$(now_ms)
start_daemon
startup_ms=$(( $(now_ms) - t0 ))
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$DAEMON/status"; }
rss_start=$(rss_mib)
listed=$(ctl --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[[ $listed -eq $BACKUPS ]] || { echo "catalog.sh: listed $listed backups, expected $BACKUPS" >&2; exit 1; }

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
time_runs() {
    local times=() t
    for _ in $(seq "$RUNS"); do
        t=$(now_ms); "$@" >/dev/null; times+=($(( $(now_ms) - t )))
    done
    median "${times[@]}"
}
log "timing list ($RUNS runs each)"
list_ms=$(time_runs ctl list)
json_ms=$(time_runs ctl --json list)
status_ms=$(time_runs ctl status)

log "idle for ${IDLE_SECONDS}s"
ticks=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$DAEMON/stat"; }
c0=$(cpu); sleep "$IDLE_SECONDS"; c1=$(cpu)
idle_cpu=$(awk -v d=$((c1 - c0)) -v t="$ticks" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.2f", 100 * d / t / s }')
rss=$(rss_mib)

cat <<EOF
| measurement | value | target |
|---|---:|---|
| \`cofferctl list\` over $BACKUPS backups (median of $RUNS) | $list_ms ms | < 100 ms |
| \`cofferctl --json list\` over $BACKUPS backups | $json_ms ms | < 100 ms |
| \`cofferctl status\` with $BACKUPS backups | $status_ms ms | |
| start-up rebuilding the catalog from $BACKUPS sidecars | $startup_ms ms | |
| idle cofferd CPU over ${IDLE_SECONDS} s | $idle_cpu % | ~0 % |
| cofferd RSS after start-up with $BACKUPS backups catalogued | $rss_start MiB | ≤ 20 MiB idle |
| cofferd RSS idle after the list runs (memory kept by malloc) | $rss MiB | |
EOF
