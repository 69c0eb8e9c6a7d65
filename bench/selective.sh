#!/usr/bin/env bash
# Coffer benchmark: selective export and import on a multi-site CMS.
#
# Generates the CMS of the e2e tests (users, sites, pages, blocks, menu_items) with
# SITES sites of PAGES pages (4 blocks and 1 menu item each) and FILES uploads of
# 64 KiB per site under sites/<id>/, and a copy of it (job `copy`) in which site 1's
# rows were edited, then times, through the real cofferd and cofferctl:
#   - `export cms site --param site=1` (one consistent snapshot of the whole
#     database, the site's rows, its files);
#   - `import --dry-run` of that file into the copy (every row of the site conflicts);
#   - the real import into the copy with `--on-conflict rename` (safety backup of the
#     whole app included; every row and file of the site is copied under new keys);
#   - the same with `--on-conflict overwrite` into a fresh copy (rows updated in place);
# and reports cofferd's peak RSS.
#
# Usage: bash bench/selective.sh [--sites N] [--pages N] [--files N] [--work DIR]
# Needs sqlite3. Uses COFFER_BIN_DIR, or builds with cargo --release.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SITES=100
PAGES=1000
FILES=20
WORK=/tmp/coffer-bench-selective

while [[ $# -gt 0 ]]; do
    case $1 in
        --sites) SITES=$2; shift 2 ;;
        --pages) PAGES=$2; shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "selective.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*" >&2; }

if [[ -z ${COFFER_BIN_DIR:-} ]]; then
    log "building release binaries"
    (cd "$REPO_ROOT" && cargo build --release --bins --quiet)
    COFFER_BIN_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release
fi
CTL=("$COFFER_BIN_DIR/cofferctl" --socket "$WORK/cofferd.sock")

rm -rf "$WORK"
mkdir -p "$WORK/app/uploads" "$WORK/state"
DB=$WORK/app/app.db

log "generating $SITES sites x $PAGES pages (4 blocks each), $FILES files of 64 KiB per site"
# The schema is the e2e tests' CMS (tests/src/selective.rs).
sed -n '/^CREATE TABLE users/,/^CREATE VIEW/{p;/^CREATE VIEW/q}' "$REPO_ROOT/tests/src/selective.rs" | sqlite3 "$DB"
sqlite3 "$DB" > /dev/null <<SQL
PRAGMA journal_mode = WAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $SITES)
INSERT INTO users SELECT i, 'owner' || i || '@example.org', 'Owner ' || i FROM n;
INSERT INTO sites SELECT id, 'site-' || id, 'Site ' || id, id FROM users;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $SITES * $PAGES - 1)
INSERT INTO pages SELECT i + 1, i / $PAGES + 1, 'page-' || (i % $PAGES), 'Page ' || i, i / $PAGES + 1 FROM n;
INSERT INTO blocks(page_id, position, kind, body, page_ref)
  SELECT p.id, k.k, 'text', printf('%.200c', 'x'), CASE WHEN k.k = 1 AND p.id % $PAGES <> 1 THEN p.id - 1 END
  FROM pages p, (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) k;
INSERT INTO menu_items SELECT id, site_id, NULL, id, title, id % $PAGES FROM pages;
COMMIT;
SQL
for ((s = 1; s <= SITES; s++)); do
    mkdir -p "$WORK/app/uploads/sites/$s"
    for ((f = 1; f <= FILES; f++)); do
        head -c 65536 /dev/urandom > "$WORK/app/uploads/sites/$s/file-$f.bin"
    done
done
log "database $(du -h "$DB" | cut -f1), media $(du -sh "$WORK/app/uploads" | cut -f1)"
# Two copies where site 1 was edited since: its rows all conflict with the export.
for copy in copy over; do
    mkdir -p "$WORK/$copy"
    sqlite3 "$DB" "VACUUM INTO '$WORK/$copy/app.db'"
    cp -a "$WORK/app/uploads" "$WORK/$copy/uploads"
    sqlite3 "$WORK/$copy/app.db" "UPDATE sites SET title = title || ' (edited)' WHERE id = 1;
        UPDATE pages SET title = title || ' (edited)' WHERE site_id = 1;
        UPDATE blocks SET body = 'edited' WHERE page_id IN (SELECT id FROM pages WHERE site_id = 1);
        UPDATE menu_items SET label = label || ' (edited)' WHERE site_id = 1;"
done

PROFILE=$(sed -n '/^\[\[job.export\]\]/,/^include/{p;/^include/q}' "$REPO_ROOT/tests/src/selective.rs")
cat > "$WORK/cofferd.toml" <<TOML
[daemon]
socket = "$WORK/cofferd.sock"
state-dir = "$WORK/state"
backup-dir = "$WORK/backups"

[[job]]
name = "cms"
database = "$DB"
media = ["$WORK/app/uploads"]
schedule = "manual"
min-free-space = "0B"
$PROFILE

[[job]]
name = "copy"
database = "$WORK/copy/app.db"
media = ["$WORK/copy/uploads"]
schedule = "manual"
min-free-space = "0B"
$PROFILE

[[job]]
name = "over"
database = "$WORK/over/app.db"
media = ["$WORK/over/uploads"]
schedule = "manual"
min-free-space = "0B"
$PROFILE
TOML

"$COFFER_BIN_DIR/cofferd" --config "$WORK/cofferd.toml" 2> "$WORK/cofferd.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -S $WORK/cofferd.sock ]] && break; sleep 0.1; done
[[ -S $WORK/cofferd.sock ]] || { cat "$WORK/cofferd.log" >&2; exit 1; }

timed() {
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null 2>&1
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f s", e - s }'
}

EXPORT=$(timed "${CTL[@]}" export cms site --param site=1 -o "$WORK/site-1.tar.zst")
RSS_EXPORT=$(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$PID/status")
SIZE=$(du -h "$WORK/site-1.tar.zst" | cut -f1)
DRY=$(timed "${CTL[@]}" import "$WORK/site-1.tar.zst" --job copy --on-conflict rename --dry-run)
RSS_DRY=$(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$PID/status")
RENAME=$(timed "${CTL[@]}" import "$WORK/site-1.tar.zst" --job copy --on-conflict rename --yes)
OVER=$(timed "${CTL[@]}" import "$WORK/site-1.tar.zst" --job over --on-conflict overwrite --yes)
RSS=$(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$PID/status")
RENAMED=$(sqlite3 "$WORK/copy/app.db" "SELECT count(*) FROM pages WHERE site_id = $((SITES + 1))")
EQUAL=$(sqlite3 "$WORK/over/app.db" "ATTACH '$DB' AS src; SELECT count(*) FROM pages p JOIN src.pages s USING (id, title) WHERE p.site_id = 1")

printf '\n%-62s %s\n' "export of one site ($PAGES pages, $((PAGES * 4)) blocks, $FILES files)" "$EXPORT (file $SIZE)"
printf '%-62s %s\n' "import --dry-run (every row of the site conflicting)" "$DRY"
printf '%-62s %s\n' "import --on-conflict rename (incl. safety backup)" "$RENAME ($RENAMED pages now in site $((SITES + 1)))"
printf '%-62s %s\n' "import --on-conflict overwrite (incl. safety backup)" "$OVER ($EQUAL pages equal to the export again)"
printf '%-62s %s\n' "cofferd peak RSS after the export / the dry run / all" "$RSS_EXPORT / $RSS_DRY / $RSS"
printf '%-62s %s\n' "load average" "$(cut -d' ' -f1-3 /proc/loadavg)"
