#!/usr/bin/env bash
# Coffer benchmark for PostgreSQL jobs: cofferd against the plain tools, side by side
# on one pgbench database (pgbench -i -s 70, about 1 GiB) plus a media directory:
#   backup:  cofferctl backup            vs  pg_dump -Fc   and   pg_dump | zstd -3 -T0
#   restore: cofferctl restore --to-database  vs  pg_restore into a new database
# cofferd runs with the default job settings (verify-after-backup on, zstd level 3).
# See bench/README.md ("PostgreSQL").
#
# Usage: bash bench/pg.sh [options]        (--help for the list)
#
# Progress goes to stderr; the Markdown report to stdout and <work>/results-pg.md.
# Exits non-zero if any step fails; the server and the daemon are always stopped.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

SCALE=70             # pgbench scale: 70 is about 1 GiB
FILES=3000           # media files
MEDIA_MIB=400        # media size
WORK=/tmp/coffer-bench-pg
ROUNDS=3
IN_PLACE=1           # also time one in-place restore (with its safety backup)

usage() {
    cat <<EOF
Usage: bash bench/pg.sh [options]

  --scale N        pgbench scale (default $SCALE, about 1 GiB)
  --files N        media files (default $FILES)
  --media-mib N    media size in MiB (default $MEDIA_MIB)
  --rounds N       measured rounds, median reported (default $ROUNDS)
  --work DIR       work directory (default $WORK); the cluster and media are reused
                   by later runs with the same parameters
  --no-in-place    skip the in-place restore
  -h, --help       this text

Environment:
  COFFER_BIN_DIR   directory with cofferd and cofferctl (default: cargo build --release)
  PG_BIN           PostgreSQL binaries (default: newest /usr/lib/postgresql/*/bin)
EOF
}

die() { printf 'pg.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }
need_int() { [[ $2 =~ ^[0-9]+$ && $2 -ge 1 ]] || die "$1: expected a positive integer, got '$2'"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --scale) need_int "$1" "${2:-}"; SCALE=$2; shift 2 ;;
        --files) need_int "$1" "${2:-}"; FILES=$2; shift 2 ;;
        --media-mib) need_int "$1" "${2:-}"; MEDIA_MIB=$2; shift 2 ;;
        --rounds) need_int "$1" "${2:-}"; ROUNDS=$2; shift 2 ;;
        --work) [[ -n ${2:-} ]] || die "--work needs a value"; WORK=$2; shift 2 ;;
        --no-in-place) IN_PLACE=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
PGDIR=$WORK/pg          # data/, sock/, passfiles, postgres.log
MEDIA=$WORK/data/uploads
C=$WORK/coffer          # cofferd: config, socket, state/, backups/
B=$WORK/baseline        # baseline outputs
LOGS=$WORK/logs
SOCK=$C/cofferd.sock
REPORT=$WORK/results-pg.md
PORT=54329
DB=bench

# ----------------------------------------------------------------------------- tools

if [[ -z ${PG_BIN:-} ]]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
for tool in initdb postgres pg_ctl psql pg_dump pg_restore pgbench; do
    [[ -x $PG_BIN/$tool ]] || die "$PG_BIN/$tool not found (install postgresql, or set PG_BIN)"
done
for tool in zstd python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
/usr/bin/time --version 2>&1 | grep -q GNU || die "GNU time (/usr/bin/time) is not installed"

if [[ -n ${COFFER_BIN_DIR:-} ]]; then
    BIN=$(cd "$COFFER_BIN_DIR" && pwd)
else
    log "building: cargo build --release --bins"
    (cd "$REPO_ROOT" && cargo build --release --bins) >&2
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$REPO_ROOT/$target
    BIN=$target/release
fi

# The server refuses to run as root: as root it runs as the `postgres` system user.
RUN_AS=()
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' system user"
    RUN_AS=(runuser -u postgres --)
fi
pgrun() { "${RUN_AS[@]}" "$@"; }

# ----------------------------------------------------------------------------- cleanup

DAEMON_PID=
on_exit() {
    local rc=$?
    if [[ -n $DAEMON_PID ]]; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    if [[ -f $PGDIR/data/postmaster.pid ]]; then
        pgrun "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    [[ $rc -eq 0 ]] || printf 'pg.sh: FAILED (exit %d); logs in %s\n' "$rc" "$LOGS" >&2
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------------------- helpers

LAST_SECS=
timed() {
    local logf=$1 t0 t1 rc=0
    shift
    printf '\n$ %s\n' "$*" >>"$logf"
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$LOGS/time.out" "$@" >>"$logf" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    [[ $rc -eq 0 ]] || { tail -n 20 "$logf" >&2; die "command failed (exit $rc): $*"; }
    LAST_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
mib() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 1048576 }'; }
kib_mib() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 1024 }'; }
proc_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
reset_hwm() { { echo 5 >"/proc/$DAEMON_PID/clear_refs"; } 2>/dev/null; }
# The harness's own superuser connection (peer-free: password from its passfile).
psql_admin() { PGPASSFILE=$PGDIR/admin.pgpass "$PG_BIN/psql" -X -q -t -A -w -v ON_ERROR_STOP=1 -h "$PGDIR/sock" -p "$PORT" -U postgres "$@"; }
ctl() { "$BIN/cofferctl" --socket "$SOCK" "$@"; }

# ----------------------------------------------------------------------------- cluster

start_cluster() {
    local stamp=$PGDIR/stamp want="scale=$SCALE"
    if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
        log "initdb + pgbench -i -s $SCALE (once; reused by later runs)"
        rm -rf "$PGDIR"
        mkdir -p "$PGDIR/data" "$PGDIR/sock"
        [[ ${#RUN_AS[@]} -eq 0 ]] || chown postgres: "$PGDIR" "$PGDIR/data" "$PGDIR/sock"
        local pw
        pw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
        printf '%s' "$pw" >"$PGDIR/initdb.pw"
        [[ ${#RUN_AS[@]} -eq 0 ]] || chown postgres: "$PGDIR/initdb.pw"
        pgrun "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres --auth=scram-sha-256 \
            --pwfile="$PGDIR/initdb.pw" --encoding=UTF8 --locale=C >"$LOGS/initdb.log" 2>&1
        rm -f "$PGDIR/initdb.pw"
        cat >>"$PGDIR/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$PGDIR/sock'
port = $PORT
EOF
        (umask 077 && printf '%s:%s:*:postgres:%s\n' "$PGDIR/sock" "$PORT" "$pw" >"$PGDIR/admin.pgpass")
        pgrun "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w start >/dev/null
        local cpw
        cpw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
        psql_admin -d postgres -c "CREATE ROLE coffer LOGIN CREATEDB PASSWORD '$cpw'" -c "GRANT pg_read_all_data TO coffer"
        psql_admin -d postgres -c "CREATE DATABASE $DB OWNER coffer;"
        (umask 077 && printf '%s:%s:*:coffer:%s\n' "$PGDIR/sock" "$PORT" "$cpw" >"$PGDIR/coffer.pgpass")
        PGPASSFILE=$PGDIR/coffer.pgpass "$PG_BIN/pgbench" -i -q -s "$SCALE" -h "$PGDIR/sock" -p "$PORT" \
            -U coffer "$DB" >"$LOGS/pgbench.log" 2>&1
        psql_admin -d "$DB" -c "VACUUM ANALYZE;" >/dev/null
        echo "$want" >"$stamp"
    else
        log "reusing the cluster in $PGDIR ($want)"
        if ! pgrun "$PG_BIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
            pgrun "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w start >/dev/null
        fi
    fi
    DB_BYTES=$(psql_admin -d postgres -c "SELECT pg_database_size('$DB');")
}

# ----------------------------------------------------------------------------- cofferd

start_daemon() {
    rm -rf "$C"
    mkdir -p "$C/state" "$C/backups"
    cat >"$C/cofferd.toml" <<EOF
[daemon]
socket = '$SOCK'
state-dir = '$C/state'
backup-dir = '$C/backups'

[[job]]
name = "pg"
postgres = "postgresql:///$DB?host=$PGDIR/sock&port=$PORT&user=coffer"
postgres-passfile = '$PGDIR/coffer.pgpass'
pg-bin-dir = '$PG_BIN'
media = ['$MEDIA']
schedule = "manual"
min-free-space = "0B"

# The same database without media: the like-for-like comparison with pg_dump alone.
[[job]]
name = "pgdb"
postgres = "postgresql:///$DB?host=$PGDIR/sock&port=$PORT&user=coffer"
postgres-passfile = '$PGDIR/coffer.pgpass'
pg-bin-dir = '$PG_BIN'
schedule = "manual"
min-free-space = "0B"
EOF
    "$BIN/cofferd" --config "$C/cofferd.toml" >"$LOGS/cofferd.log" 2>&1 &
    DAEMON_PID=$!
    for ((i = 0; i < 300; i++)); do
        [[ -S $SOCK ]] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || die "cofferd exited during start-up (log: $LOGS/cofferd.log)"
        sleep 0.1
    done
    [[ -S $SOCK ]] || die "cofferd did not start"
    sleep 1
    IDLE_KIB=$(proc_kib "$DAEMON_PID" VmRSS)
    reset_hwm || log "NOTE: cannot reset cofferd's VmHWM; peaks count from start-up"
}

newest_id() {
    ctl --json list "${1:-pg}" | python3 -c 'import json,sys; b=json.load(sys.stdin); print(b[0]["id"], b[0]["size"])'
}

# ----------------------------------------------------------------------------- main

rm -rf "$LOGS" "$B"
mkdir -p "$LOGS" "$B"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
start_cluster
log "media: $FILES files, $MEDIA_MIB MiB"
python3 "$SCRIPT_DIR/gen_data.py" --db "$WORK/data/unused.db" --media "$MEDIA" --size-mib 1 \
    --files "$FILES" --media-mib "$MEDIA_MIB" --seed 1 -q >&2
MEDIA_BYTES=$(du -sb "$MEDIA" | cut -f1)
start_daemon
URI="postgresql:///$DB?host=$PGDIR/sock&port=$PORT&user=coffer"
BASE_URI="postgresql:///r_base?host=$PGDIR/sock&port=$PORT&user=coffer"
export PGPASSFILE=$PGDIR/coffer.pgpass

C_BACKUP=() C_DB=() FC=() ZS=() LAST_ID= DB_ID=
log "backup: $ROUNDS rounds (cofferctl backup with and without media | pg_dump -Fc | pg_dump | zstd -3 -T0)"
for ((r = 1; r <= ROUNDS; r++)); do
    [[ -z $LAST_ID ]] || ctl delete "$LAST_ID" --yes >>"$LOGS/cofferctl.log" 2>&1
    [[ -z $DB_ID ]] || ctl delete "$DB_ID" --yes >>"$LOGS/cofferctl.log" 2>&1
    rm -f "$B/out.pgdump" "$B/out.sql.zst"
    sync
    timed "$LOGS/cofferctl.log" "$BIN/cofferctl" --socket "$SOCK" backup pg
    C_BACKUP+=("$LAST_SECS")
    read -r LAST_ID C_SIZE < <(newest_id)
    sync
    timed "$LOGS/cofferctl.log" "$BIN/cofferctl" --socket "$SOCK" backup pgdb
    C_DB+=("$LAST_SECS")
    read -r DB_ID C_DB_SIZE < <(newest_id pgdb)
    sync
    timed "$LOGS/baseline.log" "$PG_BIN/pg_dump" -w -Fc -f "$B/out.pgdump" -d "$URI"
    FC+=("$LAST_SECS")
    sync
    timed "$LOGS/baseline.log" bash -c 'set -o pipefail; "$1" -w -d "$2" | zstd -3 -T0 -q -o "$3"' \
        dump "$PG_BIN/pg_dump" "$URI" "$B/out.sql.zst"
    ZS+=("$LAST_SECS")
    log "  round $r: coffer ${C_BACKUP[-1]} s (database only ${C_DB[-1]} s), pg_dump -Fc ${FC[-1]} s, pg_dump | zstd ${ZS[-1]} s"
done
BACKUP_HWM=$(proc_kib "$DAEMON_PID" VmHWM)
reset_hwm || true

C_RESTORE=() PR=()
log "restore: $ROUNDS rounds (cofferctl restore --to-database | pg_restore into a new database)"
for ((r = 1; r <= ROUNDS; r++)); do
    psql_admin -d postgres -c "DROP DATABASE IF EXISTS r_coffer" -c "DROP DATABASE IF EXISTS r_base" >/dev/null
    sync
    timed "$LOGS/cofferctl.log" "$BIN/cofferctl" --socket "$SOCK" restore "$LAST_ID" --to-database r_coffer
    C_RESTORE+=("$LAST_SECS")
    psql_admin -d postgres -c "CREATE DATABASE r_base OWNER coffer;" >/dev/null
    sync
    timed "$LOGS/baseline.log" "$PG_BIN/pg_restore" -w --exit-on-error -d "$BASE_URI" "$B/out.pgdump"
    PR+=("$LAST_SECS")
    log "  round $r: coffer ${C_RESTORE[-1]} s, pg_restore ${PR[-1]} s"
done
ROWS_C=$(psql_admin -d r_coffer -c "SELECT count(*) FROM pgbench_accounts;")
ROWS_B=$(psql_admin -d r_base -c "SELECT count(*) FROM pgbench_accounts;")
[[ $ROWS_C == "$ROWS_B" ]] || die "the restored databases differ: $ROWS_C vs $ROWS_B accounts"
psql_admin -d postgres -c "DROP DATABASE IF EXISTS r_coffer" -c "DROP DATABASE IF EXISTS r_base" >/dev/null
IN_PLACE_S=n/a
if [[ $IN_PLACE -eq 1 ]]; then
    log "in place: cofferctl restore --yes (safety backup, scratch restore, swap)"
    sync
    timed "$LOGS/cofferctl.log" "$BIN/cofferctl" --socket "$SOCK" restore "$LAST_ID" --yes
    IN_PLACE_S=$LAST_SECS
fi
RESTORE_HWM=$(proc_kib "$DAEMON_PID" VmHWM)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

mc=$(median "${C_BACKUP[@]}") mcd=$(median "${C_DB[@]}") mfc=$(median "${FC[@]}") mzs=$(median "${ZS[@]}")
mcr=$(median "${C_RESTORE[@]}") mpr=$(median "${PR[@]}")
{
    echo "## PostgreSQL benchmark"
    echo
    echo "pgbench -i -s $SCALE: database $(mib "$DB_BYTES") MiB; media $FILES files, $(mib "$MEDIA_BYTES") MiB;" \
        "$ROUNDS rounds, medians; $("$PG_BIN/postgres" --version); $(nproc) CPUs; load average $LOAD_START at the start, $LOAD_END at the end."
    echo
    echo "| operation | time (s) | cofferctl ÷ this | output |"
    echo "|---|---:|---:|---|"
    echo "| \`cofferctl backup\`, database only (dump, archive, verify) | $mcd | | $(mib "$C_DB_SIZE") MiB archive |"
    echo "| \`cofferctl backup\`, database + media | $mc | | $(mib "$C_SIZE") MiB archive |"
    echo "| \`pg_dump -Fc\` | $mfc | $(ratio "$mcd" "$mfc") (database only), $(ratio "$mc" "$mfc") (+ media) | $(mib "$(stat -c %s "$B/out.pgdump")") MiB |"
    echo "| \`pg_dump \| zstd -3 -T0\` | $mzs | $(ratio "$mcd" "$mzs") (database only), $(ratio "$mc" "$mzs") (+ media) | $(mib "$(stat -c %s "$B/out.sql.zst")") MiB |"
    echo "| \`cofferctl restore --to-database\` | $mcr | | |"
    echo "| \`pg_restore -d\` (new database) | $mpr | $(ratio "$mcr" "$mpr") | |"
    echo "| \`cofferctl restore --yes\` (in place, with safety backup) | $IN_PLACE_S | | |"
    echo
    echo "cofferd RSS: idle $(kib_mib "$IDLE_KIB") MiB, peak during the backups $(kib_mib "$BACKUP_HWM") MiB," \
        "during the restores $(kib_mib "$RESTORE_HWM") MiB."
    echo
    echo "Rounds: coffer backup ${C_BACKUP[*]}; database only ${C_DB[*]}; pg_dump -Fc ${FC[*]}; pg_dump | zstd ${ZS[*]};" \
        "coffer restore ${C_RESTORE[*]}; pg_restore ${PR[*]}."
} | tee "$REPORT"
