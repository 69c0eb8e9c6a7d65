#!/usr/bin/env bash
# Coffer benchmark: cofferd backup/restore against the plain-tools baseline
#   sqlite3 "VACUUM INTO" + tar | zstd -3 -T0        (backup)
#   zstd -d | tar -x                                 (restore)
# on a generated, realistic data set (bench/gen_data.py). See bench/README.md.
#
# Usage: bash bench/run.sh [options]        (--help for the list)
#
# Progress goes to stderr; the Markdown report goes to stdout and to
# <work>/results.md. Exits non-zero if any step fails; the daemon is always stopped.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# ----------------------------------------------------------------------------- options

SIZE_MIB=1024        # database size
FILES=3000           # number of media files
MEDIA_MIB=400        # total media size
SEED=1               # data set seed
WORK=/tmp/coffer-bench
ROUNDS=3             # measured rounds per operation; the median is reported
RESTORE=1            # also measure restore
BASELINE_ONLY=0      # skip everything that needs the Coffer binaries
FSYNC_BASELINE=1     # the baseline syncs its output, as cofferd fsyncs its archive
VERIFY=true          # cofferd's verify-after-backup (true is its default)
KEEP=0               # keep archives and restored trees at the end
STRICT=0             # exit 3 if a target is missed
METHOD=vacuum-into   # cofferd's snapshot-method
ENCRYPT=0            # also back up (and restore) an age-encrypted job

usage() {
    cat <<EOF
Usage: bash bench/run.sh [options]

  --size-mib N       database size in MiB (default $SIZE_MIB)
  --files N          number of media files (default $FILES)
  --media-mib N      total media size in MiB (default $MEDIA_MIB)
  --seed S           data set seed (default $SEED)
  --work DIR         work directory (default $WORK); the data set is kept there
                     and reused by later runs with the same parameters
  --rounds N         measured rounds per operation, median reported (default $ROUNDS)
  --restore          measure restore too (default)
  --no-restore       do not measure restore
  --baseline-only    only the baseline (no cargo build, no cofferd)
  --fsync-baseline   the baseline syncs what it writes, like cofferd does (default)
  --no-fsync-baseline  the baseline leaves flushing to the kernel
  --no-verify        cofferd with verify-after-backup = false (default: true, cofferd's
                     own default; every other setting is the default config too)
  --keep             keep archives and restored trees in the work dir
  --strict           exit 3 if a target in bench/README.md is missed
  --snapshot-method M  cofferd's snapshot method: vacuum-into (default) or page-stream
  --encryption       also back up and restore the same data as an age-encrypted job
                     (a key made with age-keygen), side by side with the plain job
  -h, --help         this text

Environment:
  COFFER_BIN_DIR     directory with cofferd and cofferctl; if unset, the script runs
                     'cargo build --release --bins' in $REPO_ROOT and uses
                     \${CARGO_TARGET_DIR:-target}/release
EOF
}

die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }
need_int() { [[ $2 =~ ^[0-9]+$ && $2 -ge ${3:-0} ]] || die "$1: expected an integer >= ${3:-0}, got '$2'"; }

while [[ $# -gt 0 ]]; do
    # Accept both "--opt value" and "--opt=value".
    if [[ $1 == --*=* ]]; then
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case $1 in
        --size-mib)  need_value "$@"; need_int "$1" "$2" 1; SIZE_MIB=$2; shift 2 ;;
        --files)     need_value "$@"; need_int "$1" "$2" 1; FILES=$2; shift 2 ;;
        --media-mib) need_value "$@"; need_int "$1" "$2" 0; MEDIA_MIB=$2; shift 2 ;;
        --seed)      need_value "$@"; SEED=$2; shift 2 ;;
        --work)      need_value "$@"; WORK=$2; shift 2 ;;
        --rounds)    need_value "$@"; need_int "$1" "$2" 1; ROUNDS=$2; shift 2 ;;
        --restore)   RESTORE=1; shift ;;
        --no-restore) RESTORE=0; shift ;;
        --baseline-only) BASELINE_ONLY=1; shift ;;
        --fsync-baseline) FSYNC_BASELINE=1; shift ;;
        --no-fsync-baseline) FSYNC_BASELINE=0; shift ;;
        --no-verify) VERIFY=false; shift ;;
        --keep)      KEEP=1; shift ;;
        --strict)    STRICT=1; shift ;;
        --snapshot-method) need_value "$@"; METHOD=$2; shift 2 ;;
        --encryption) ENCRYPT=1; shift ;;
        -h|--help)   usage; exit 0 ;;
        *)           usage >&2; die "unknown argument: $1" ;;
    esac
done

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
[[ $WORK != / ]] || die "--work must not be /"

DATA=$WORK/data
DB=$DATA/app.db
MEDIA=$DATA/uploads
B=$WORK/baseline        # baseline scratch: snap/, out.tar.zst, restore/
C=$WORK/coffer          # cofferd: config, socket, state/, backups/, restore/
LOGS=$WORK/logs
SOCK=$C/cofferd.sock
REPORT=$WORK/results.md

# ----------------------------------------------------------------------------- cleanup

DAEMON_PID=

# Stops the cofferd this script started (SIGTERM, then SIGKILL after 15 s).
stop_daemon() {
    local pid=$DAEMON_PID i
    [[ -n $pid ]] || return 0
    DAEMON_PID=
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "cofferd ($pid) did not stop within 15 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

on_exit() {
    local rc=$?
    stop_daemon
    if [[ $rc -ne 0 ]]; then
        printf 'run.sh: FAILED (exit %d); logs in %s\n' "$rc" "$LOGS" >&2
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------------------- helpers

# timed LOG CMD...: runs CMD (output appended to LOG) under GNU time; sets LAST_SECS
# (wall seconds, from date +%s.%N) and LAST_RSS_KIB (peak RSS of the largest process
# CMD started, as reported by GNU time). Dies with the log's tail if CMD fails.
LAST_SECS=
LAST_RSS_KIB=
timed() {
    local logf=$1 t0 t1 rc=0
    shift
    printf '\n$ %s\n' "$*" >>"$logf"
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$LOGS/time.out" "$@" >>"$logf" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    if [[ $rc -ne 0 ]]; then
        tail -n 20 "$logf" >&2 || true
        die "command failed (exit $rc): $*  (log: $logf)"
    fi
    LAST_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    LAST_RSS_KIB=$(tail -n 1 "$LOGS/time.out")
}

# median X...: the median of the numbers, 3 decimals.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# max X...: the largest number.
max() { printf '%s\n' "$@" | sort -g | tail -n 1; }

# ratio A B: A / B, 2 decimals ("n/a" if B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

# mib BYTES / kib_mib KIB: human MiB, 1 decimal.
mib() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 1048576 }'; }
kib_mib() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 1024 }'; }

# with_mib X: "X MiB" for a number, X unchanged otherwise.
with_mib() { if [[ $1 =~ ^[0-9.]+$ ]]; then echo "$1 MiB"; else echo "$1"; fi; }

# le A B: succeeds if A <= B (floating point).
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# tree_stats DIR: "<regular files> <bytes>".
tree_stats() { find "$1" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d %d\n", n, s }'; }

# proc_kib PID FIELD: a /proc/PID/status field (VmRSS, VmHWM) in KiB.
proc_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# reset_hwm: resets cofferd's VmHWM to its current RSS (Linux >= 4.0, needs to own
# the process). Succeeds if it worked.
reset_hwm() { { echo 5 >"/proc/$DAEMON_PID/clear_refs"; } 2>/dev/null; }

# Flushes dirty pages left by the previous step (e.g. deleted or just-written files)
# so they are not written back during the next measurement. The page cache itself
# is not dropped: the data set stays warm for both sides alike.
settle() { sync; }

# ----------------------------------------------------------------------------- 1. tools

ensure_tools() {
    local pkgs=() sudo=()
    command -v sqlite3 >/dev/null || pkgs+=(sqlite3)
    command -v zstd >/dev/null || pkgs+=(zstd)
    command -v tar >/dev/null || pkgs+=(tar)
    { [[ -x /usr/bin/time ]] && /usr/bin/time --version 2>&1 | grep -q GNU; } || pkgs+=(time)
    command -v python3 >/dev/null || pkgs+=(python3)
    if [[ $ENCRYPT -eq 1 ]]; then command -v age-keygen >/dev/null || pkgs+=(age); fi
    [[ ${#pkgs[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "missing tools and no apt-get; install: ${pkgs[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "missing tools and not root; install: ${pkgs[*]}"
        sudo=(sudo)
    fi
    log "installing missing packages: ${pkgs[*]}"
    ${sudo[@]+"${sudo[@]}"} apt-get update
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"
    log "installed: ${pkgs[*]}"
}

# ----------------------------------------------------------------------------- 2. binaries

BIN=
build_binaries() {
    if [[ -n ${COFFER_BIN_DIR:-} ]]; then
        BIN=$(cd "$COFFER_BIN_DIR" && pwd)
        log "using binaries from COFFER_BIN_DIR=$BIN"
    else
        log "building: cargo build --release --bins (in $REPO_ROOT)"
        (cd "$REPO_ROOT" && cargo build --release --bins) >&2
        local target=${CARGO_TARGET_DIR:-target}
        [[ $target == /* ]] || target=$REPO_ROOT/$target
        BIN=$target/release
    fi
    [[ -x $BIN/cofferd ]] || die "$BIN/cofferd not found or not executable"
    [[ -x $BIN/cofferctl ]] || die "$BIN/cofferctl not found or not executable"
}

# ----------------------------------------------------------------------------- 4. baseline

BASE_BACKUP_S=() BASE_BACKUP_RSS=() BASE_RESTORE_S=() BASE_RESTORE_RSS=()
BASE_ARCHIVE_BYTES=0 SNAP_BYTES=0

# VACUUM INTO a snapshot, then tar the snapshot and the media through zstd -3 -T0,
# then remove the snapshot, as a backup script would (and as cofferd removes its
# staging copy within its run). All steps are timed. The previous round's outputs are removed first (untimed).
baseline_backup() {
    local snap=$B/snap out=$B/out.tar.zst
    rm -rf "$snap" "$out"
    mkdir -p "$snap"
    settle
    # The snapshot path goes into an SQL string literal: double any single quote.
    local sql="VACUUM INTO '${snap//\'/\'\'}/app.db'"
    # shellcheck disable=SC2016 # $1.. expand inside the inner bash
    timed "$LOGS/baseline.log" bash -c '
        set -euo pipefail
        sqlite3 "$1" "$2"
        tar -cf - -C "$3" app.db -C "$4" "$5" | zstd -3 -T0 -q -o "$6"
        if [ "$7" = 1 ]; then sync "$6"; fi
        stat -c %s "$3/app.db" >"$3/size"
        rm "$3/app.db"
    ' baseline-backup "$DB" "$sql" "$snap" "$(dirname "$MEDIA")" "$(basename "$MEDIA")" "$out" "$FSYNC_BASELINE"
    BASE_BACKUP_S+=("$LAST_SECS")
    BASE_BACKUP_RSS+=("$LAST_RSS_KIB")
    BASE_ARCHIVE_BYTES=$(stat -c %s "$out")
    SNAP_BYTES=$(<"$snap/size")
    log "  baseline backup   round $1: ${LAST_SECS} s, archive $(mib "$BASE_ARCHIVE_BYTES") MiB"
}

# zstd -d | tar -x of the last baseline archive into an empty directory.
baseline_restore() {
    local dir=$B/restore
    rm -rf "$dir"
    mkdir -p "$dir"
    settle
    # shellcheck disable=SC2016
    timed "$LOGS/baseline.log" bash -c '
        set -euo pipefail
        zstd -d -q -c "$1" | tar -xf - -C "$2"
        if [ "$3" = 1 ]; then find "$2" -type f -exec sync -- {} +; fi
    ' baseline-restore "$B/out.tar.zst" "$dir" "$FSYNC_BASELINE"
    BASE_RESTORE_S+=("$LAST_SECS")
    BASE_RESTORE_RSS+=("$LAST_RSS_KIB")
    log "  baseline restore  round $1: ${LAST_SECS} s"
}

# ----------------------------------------------------------------------------- 5. coffer

COF_BACKUP_S=() COF_RESTORE_S=() CTL_RSS=()
COF_ARCHIVE_BYTES=0 LAST_ID=
AGE_BACKUP_S=() AGE_RESTORE_S=() AGE_ARCHIVE_BYTES=0 LAST_AGE_ID= AGE_RECIPIENT=
IDLE_RSS_KIB=0 STARTUP_HWM_KIB=0 BACKUP_HWM_KIB=0 RESTORE_HWM_KIB=0 IDLE_AFTER_KIB=0
HWM_RESETTABLE=0 RESTORE_SUPPORTED=0

ctl() { "$BIN/cofferctl" --socket "$SOCK" "$@"; }

# TOML literal strings cannot hold a single quote.
toml_str() {
    [[ $1 != *"'"* ]] || die "path contains a single quote, not supported: $1"
    printf "'%s'" "$1"
}

# Starts cofferd with a fresh state dir and waits (up to 30 s) for its socket.
start_daemon() {
    rm -rf "$C"
    mkdir -p "$C/state" "$C/backups"
    [[ ${#SOCK} -lt 100 ]] || die "socket path too long for a Unix socket: $SOCK (use a shorter --work)"
    # schedule = "manual": the default (@daily with catch-up) could start a backup on
    # its own. admin-uids: so that a non-root run may take and delete backups.
    cat >"$C/cofferd.toml" <<EOF
[daemon]
socket = $(toml_str "$SOCK")
state-dir = $(toml_str "$C/state")
backup-dir = $(toml_str "$C/backups")
admin-uids = [$(id -u)]

[[job]]
name = "bench"
database = $(toml_str "$DB")
media = [$(toml_str "$MEDIA")]
schedule = "manual"
verify-after-backup = $VERIFY
snapshot-method = "$METHOD"
min-free-space = "0B"
EOF
    if [[ $ENCRYPT -eq 1 ]]; then
        # The same data as an encrypted job (it streams pages: encrypted jobs never
        # write a plaintext copy to staging). It backs up without its identity, as
        # recommended (the key stays offline); the restore rounds add identity-file
        # and reload (see add_identity).
        mkdir -p "$C/keys"
        age-keygen -o "$C/keys/identity.txt" 2>/dev/null
        chmod 600 "$C/keys/identity.txt"
        AGE_RECIPIENT=$(age-keygen -y "$C/keys/identity.txt")
        cat >>"$C/cofferd.toml" <<EOF

[[job]]
name = "bench-age"
database = $(toml_str "$DB")
media = [$(toml_str "$MEDIA")]
schedule = "manual"
compression-level = 3
verify-after-backup = $VERIFY
min-free-space = "0B"

[job.encryption]
recipients = ["$AGE_RECIPIENT"]
EOF
    fi
    log "starting cofferd (config $C/cofferd.toml)"
    "$BIN/cofferd" --config "$C/cofferd.toml" >"$LOGS/cofferd.log" 2>&1 &
    DAEMON_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        [[ -S $SOCK ]] && break
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            tail -n 30 "$LOGS/cofferd.log" >&2 || true
            DAEMON_PID=
            die "cofferd exited during start-up (log: $LOGS/cofferd.log)"
        fi
        sleep 0.1
    done
    [[ -S $SOCK ]] || { tail -n 30 "$LOGS/cofferd.log" >&2 || true; die "cofferd socket $SOCK did not appear within 30 s"; }
    sleep 1 # let start-up work (catalog open, sweeping) finish before sampling RSS
    IDLE_RSS_KIB=$(proc_kib "$DAEMON_PID" VmRSS)
    STARTUP_HWM_KIB=$(proc_kib "$DAEMON_PID" VmHWM)
    log "  cofferd pid $DAEMON_PID, idle RSS $(kib_mib "$IDLE_RSS_KIB") MiB"
    if reset_hwm; then HWM_RESETTABLE=1; fi
}

# "ID SIZE" of the newest backup of job $1 (default bench), from cofferctl --json list.
newest_backup() {
    local job=${1:-bench}
    ctl --json list "$job" | python3 -c '
import json, sys
job = sys.argv[1]
backups = [b for b in json.load(sys.stdin) if b.get("job", job) == job]
if not backups:
    sys.exit("cofferctl list: no backup of job " + job)
b = max(backups, key=lambda b: b.get("created-at") or "")
print(b["id"], b["size"])
' "$job"
}

# cofferctl backup bench, timed; the previous round's backup is deleted first (untimed).
coffer_backup() {
    if [[ -n $LAST_ID ]]; then
        ctl delete "$LAST_ID" --yes >>"$LOGS/cofferctl.log" 2>&1 || die "cofferctl delete $LAST_ID failed (log: $LOGS/cofferctl.log)"
        LAST_ID=
    fi
    settle
    timed "$LOGS/cofferctl.log" "$BIN/cofferctl" --socket "$SOCK" backup bench
    COF_BACKUP_S+=("$LAST_SECS")
    CTL_RSS+=("$LAST_RSS_KIB")
    local line
    line=$(newest_backup) || die "cannot read the backup list"
    LAST_ID=${line%% *}
    COF_ARCHIVE_BYTES=${line##* }
    log "  coffer backup     round $1: ${LAST_SECS} s, archive $(mib "$COF_ARCHIVE_BYTES") MiB (id $LAST_ID)"
}

# cofferctl backup bench-age (the encrypted job), timed; as coffer_backup.
coffer_backup_age() {
    if [[ -n $LAST_AGE_ID ]]; then
        ctl delete "$LAST_AGE_ID" --yes >>"$LOGS/cofferctl.log" 2>&1 || die "cofferctl delete $LAST_AGE_ID failed (log: $LOGS/cofferctl.log)"
        LAST_AGE_ID=
    fi
    settle
    timed "$LOGS/cofferctl.log" "$BIN/cofferctl" --socket "$SOCK" backup bench-age
    AGE_BACKUP_S+=("$LAST_SECS")
    local line
    line=$(newest_backup bench-age) || die "cannot read the backup list"
    LAST_AGE_ID=${line%% *}
    AGE_ARCHIVE_BYTES=${line##* }
    log "  coffer backup age round $1: ${LAST_SECS} s, archive $(mib "$AGE_ARCHIVE_BYTES") MiB (id $LAST_AGE_ID)"
}

# Gives the encrypted job its identity (the last table of the config is its
# [job.encryption]) and reloads cofferd, so that it can restore.
add_identity() {
    printf 'identity-file = %s\n' "$(toml_str "$C/keys/identity.txt")" >>"$C/cofferd.toml"
    kill -HUP "$DAEMON_PID"
    sleep 1
    ctl verify "$LAST_AGE_ID" --deep >>"$LOGS/cofferctl.log" 2>&1 || die "the reloaded identity cannot read $LAST_AGE_ID (log: $LOGS/cofferd.log)"
}

# cofferctl restore of the last encrypted backup into an empty directory, timed.
coffer_restore_age() {
    local dir=$C/restore-age
    rm -rf "$dir"
    mkdir -p "$dir"
    settle
    timed "$LOGS/cofferctl.log" "$BIN/cofferctl" --socket "$SOCK" restore "$LAST_AGE_ID" --to "$dir" --yes
    AGE_RESTORE_S+=("$LAST_SECS")
    log "  coffer restore age round $1: ${LAST_SECS} s"
}

# cofferctl restore of the last backup into an empty directory, timed.
coffer_restore() {
    local dir=$C/restore
    rm -rf "$dir"
    mkdir -p "$dir"
    settle
    timed "$LOGS/cofferctl.log" "$BIN/cofferctl" --socket "$SOCK" restore "$LAST_ID" --to "$dir" --yes
    COF_RESTORE_S+=("$LAST_SECS")
    CTL_RSS+=("$LAST_RSS_KIB")
    log "  coffer restore    round $1: ${LAST_SECS} s"
}

# ----------------------------------------------------------------------------- main

ensure_tools
rm -rf "$LOGS"
mkdir -p "$LOGS" "$B"

if [[ $BASELINE_ONLY -eq 0 ]]; then
    build_binaries
fi

log "data set: db ${SIZE_MIB} MiB, ${FILES} media files / ${MEDIA_MIB} MiB, seed ${SEED}, in $DATA"
python3 "$SCRIPT_DIR/gen_data.py" --db "$DB" --media "$MEDIA" --size-mib "$SIZE_MIB" \
    --files "$FILES" --media-mib "$MEDIA_MIB" --seed "$SEED" >&2
read -r MEDIA_FILES MEDIA_BYTES < <(tree_stats "$MEDIA")
DB_BYTES=$(stat -c %s "$DB")

if [[ $BASELINE_ONLY -eq 0 ]]; then
    start_daemon
    if ctl restore --help >/dev/null 2>&1; then
        RESTORE_SUPPORTED=1
    elif [[ $RESTORE -eq 1 ]]; then
        log "NOTE: 'cofferctl restore --help' failed: this build has no restore; only the baseline restore is measured"
    fi
fi

# Backup rounds, alternating which side goes first so neither always gets the
# colder cache or the other's leftover writeback.
log "backup: $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
    if [[ $BASELINE_ONLY -eq 1 ]]; then
        baseline_backup "$r"
    elif ((r % 2 == 1)); then
        baseline_backup "$r"
        coffer_backup "$r"
        if [[ $ENCRYPT -eq 1 ]]; then coffer_backup_age "$r"; fi
    else
        if [[ $ENCRYPT -eq 1 ]]; then coffer_backup_age "$r"; fi
        coffer_backup "$r"
        baseline_backup "$r"
    fi
done
if [[ $BASELINE_ONLY -eq 0 ]]; then
    BACKUP_HWM_KIB=$(proc_kib "$DAEMON_PID" VmHWM)
fi

# Restore rounds: both sides restore the archive of their last backup round.
COFFER_RESTORE=0
if [[ $RESTORE -eq 1 && $BASELINE_ONLY -eq 0 && $RESTORE_SUPPORTED -eq 1 ]]; then
    COFFER_RESTORE=1
    if [[ $ENCRYPT -eq 1 ]]; then add_identity; fi
    if [[ $HWM_RESETTABLE -eq 1 ]]; then reset_hwm || true; fi
fi
if [[ $RESTORE -eq 1 ]]; then
    log "restore: $ROUNDS rounds"
    for ((r = 1; r <= ROUNDS; r++)); do
        if [[ $COFFER_RESTORE -eq 0 ]]; then
            baseline_restore "$r"
        elif ((r % 2 == 1)); then
            baseline_restore "$r"
            coffer_restore "$r"
            if [[ $ENCRYPT -eq 1 ]]; then coffer_restore_age "$r"; fi
        else
            if [[ $ENCRYPT -eq 1 ]]; then coffer_restore_age "$r"; fi
            coffer_restore "$r"
            baseline_restore "$r"
        fi
    done
fi
RESTORE_CHECK=
if [[ $COFFER_RESTORE -eq 1 ]]; then
    RESTORE_HWM_KIB=$(proc_kib "$DAEMON_PID" VmHWM)
    # Sanity check (untimed): both restores should hold the same bytes.
    read -r bf bb < <(tree_stats "$B/restore")
    read -r cf cb < <(tree_stats "$C/restore")
    if [[ $bf == "$cf" && $bb == "$cb" ]]; then
        RESTORE_CHECK="coffer restore matches the baseline restore: $cf files, $(mib "$cb") MiB"
    else
        RESTORE_CHECK="WARNING: restored trees differ: baseline $bf files / $bb bytes, coffer $cf files / $cb bytes (layout or extra files?)"
        log "$RESTORE_CHECK"
    fi
fi
if [[ $BASELINE_ONLY -eq 0 ]]; then
    sleep 1
    IDLE_AFTER_KIB=$(proc_kib "$DAEMON_PID" VmRSS)
    if [[ -n $LAST_ID && $KEEP -eq 0 ]]; then
        ctl delete "$LAST_ID" --yes >>"$LOGS/cofferctl.log" 2>&1 || log "note: could not delete $LAST_ID"
    fi
    if [[ -n $LAST_AGE_ID && $KEEP -eq 0 ]]; then
        ctl delete "$LAST_AGE_ID" --yes >>"$LOGS/cofferctl.log" 2>&1 || log "note: could not delete $LAST_AGE_ID"
    fi
    stop_daemon
fi

# ----------------------------------------------------------------------------- 7. report

NA="—"
bb_med=$(median "${BASE_BACKUP_S[@]}")
cb_med=$NA backup_ratio=$NA cof_size=$NA peak_b=$NA idle=$NA peak_r=$NA
if [[ $BASELINE_ONLY -eq 0 ]]; then
    cb_med=$(median "${COF_BACKUP_S[@]}")
    backup_ratio=$(ratio "$cb_med" "$bb_med")
    cof_size="$(mib "$COF_ARCHIVE_BYTES") MiB"
    peak_b=$(kib_mib "$BACKUP_HWM_KIB")
    idle=$(kib_mib "$IDLE_RSS_KIB")
fi
br_med=$NA cr_med=$NA restore_ratio=$NA
if [[ $RESTORE -eq 1 ]]; then
    br_med=$(median "${BASE_RESTORE_S[@]}")
fi
if [[ $COFFER_RESTORE -eq 1 ]]; then
    cr_med=$(median "${COF_RESTORE_S[@]}")
    restore_ratio=$(ratio "$cr_med" "$br_med")
    peak_r=$(kib_mib "$RESTORE_HWM_KIB")
fi

MISSED=0
# verdict VAR VALUE LIMIT: sets VAR to PASS (VALUE <= LIMIT), FAIL (and MISSED=1) or n/a.
verdict() {
    local v
    if [[ $2 == "$NA" || $2 == n/a ]]; then v="n/a"
    elif le "$2" "$3"; then v="PASS"
    else v="FAIL"; MISSED=1; fi
    printf -v "$1" '%s' "$v"
}
v_backup='' v_restore='' v_peak='' v_idle=''
peak_all=$NA
if [[ $BASELINE_ONLY -eq 0 ]]; then
    peak_all=$(kib_mib "$(max "$BACKUP_HWM_KIB" "$RESTORE_HWM_KIB")")
fi
# DESIGN.md: vacuum-into ≤ 1.0× the baseline, page-stream ≤ 0.5×.
BACKUP_TARGET=1.0
if [[ $METHOD == page-stream ]]; then BACKUP_TARGET=0.5; fi
verdict v_backup "$backup_ratio" "$BACKUP_TARGET"
ab_med=$NA age_ratio=$NA ar_med=$NA age_restore_ratio=$NA v_age=''
if [[ $ENCRYPT -eq 1 && $BASELINE_ONLY -eq 0 ]]; then
    ab_med=$(median "${AGE_BACKUP_S[@]}")
    age_ratio=$(ratio "$ab_med" "$cb_med")
    if [[ $COFFER_RESTORE -eq 1 ]]; then
        ar_med=$(median "${AGE_RESTORE_S[@]}")
        age_restore_ratio=$(ratio "$ar_med" "$cr_med")
    fi
fi
# The encryption issue: an encrypted backup ≤ 1.1× the same backup without it.
verdict v_age "$age_ratio" 1.1
verdict v_restore "$restore_ratio" 1.5
verdict v_peak "$peak_all" 64
verdict v_idle "$idle" 20

if [[ $HWM_RESETTABLE -eq 1 ]]; then
    hwm_note="peak RSS is VmHWM per phase (reset via /proc/PID/clear_refs before the backup and restore rounds)"
else
    hwm_note="peak RSS is VmHWM since start-up (could not reset it); the restore figure includes the backup rounds"
fi
coffer_version=$NA
if [[ $BASELINE_ONLY -eq 0 ]]; then
    coffer_version=$("$BIN/cofferctl" --version 2>/dev/null | head -n 1 || echo "?")
fi
git_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
if [[ -n $(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | head -n 1) ]]; then git_rev="$git_rev (dirty)"; fi

{
    echo "## Coffer benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| host | $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM |"
    echo "| work dir | $WORK ($(stat -f -c %T "$WORK")) |"
    echo "| database | $(mib "$DB_BYTES") MiB on disk, $(mib "$SNAP_BYTES") MiB after VACUUM INTO (seed $SEED) |"
    echo "| media | $MEDIA_FILES files, $(mib "$MEDIA_BYTES") MiB |"
    echo "| sqlite3 | $(sqlite3 --version | cut -d' ' -f1-2) |"
    echo "| zstd | $(zstd --version | sed 's/^\*\*\* //; s/ \*\*\*$//') |"
    echo "| tar | $(tar --version | head -n 1) |"
    echo "| coffer | $coffer_version, commit $git_rev |"
    echo "| rounds | $ROUNDS per operation, median reported; baseline sync: $([[ $FSYNC_BASELINE -eq 1 ]] && echo yes || echo no); cofferd: default config$([[ $METHOD != vacuum-into ]] && echo ", snapshot-method $METHOD")$([[ $VERIFY != true ]] && echo ", verify-after-backup false") |"
    echo
    echo "| operation | baseline (s) | coffer (s) | ratio (coffer/baseline) | archive size baseline vs coffer | cofferd peak RSS (MiB) | cofferd idle RSS (MiB) |"
    echo "|---|---:|---:|---:|---|---:|---:|"
    echo "| backup | $bb_med | $cb_med | $backup_ratio | $(mib "$BASE_ARCHIVE_BYTES") MiB vs $cof_size | $peak_b | $idle |"
    if [[ $RESTORE -eq 1 ]]; then
        echo "| restore | $br_med | $cr_med | $restore_ratio | $NA | $peak_r | $NA |"
    fi
    if [[ $ENCRYPT -eq 1 && $BASELINE_ONLY -eq 0 ]]; then
        echo
        echo "| encrypted job (age, page-stream; backup without its identity, restore with it) | coffer plain (s) | coffer encrypted (s) | ratio (encrypted/plain) | archive size plain vs encrypted |"
        echo "|---|---:|---:|---:|---|"
        echo "| backup | $cb_med | $ab_med | $age_ratio | $cof_size vs $(mib "$AGE_ARCHIVE_BYTES") MiB |"
        if [[ $COFFER_RESTORE -eq 1 ]]; then
            echo "| restore | $cr_med | $ar_med | $age_restore_ratio | $NA |"
        fi
    fi
    echo
    echo "Targets:"
    echo "- backup ($METHOD) ≤ ${BACKUP_TARGET}× baseline: $v_backup ($backup_ratio)"
    echo "- restore (incl. verification) ≤ 1.5× plain extraction: $v_restore ($restore_ratio)"
    echo "- cofferd peak RSS ≤ 64 MiB: $v_peak ($(with_mib "$peak_all"))"
    echo "- cofferd idle RSS ≤ 20 MiB: $v_idle ($(with_mib "$idle"))"
    if [[ $ENCRYPT -eq 1 ]]; then
        echo "- encrypted backup ≤ 1.1× the plain one ($METHOD): $v_age ($age_ratio)"
    fi
    echo
    echo "Details:"
    echo "- baseline backup rounds (s): ${BASE_BACKUP_S[*]}; peak RSS of the largest baseline process $(kib_mib "$(max "${BASE_BACKUP_RSS[@]}")") MiB"
    if [[ $BASELINE_ONLY -eq 0 ]]; then
        echo "- coffer backup rounds (s): ${COF_BACKUP_S[*]}"
    fi
    if [[ $RESTORE -eq 1 ]]; then
        echo "- baseline restore rounds (s): ${BASE_RESTORE_S[*]}; peak RSS $(kib_mib "$(max "${BASE_RESTORE_RSS[@]}")") MiB"
    fi
    if [[ $ENCRYPT -eq 1 && $BASELINE_ONLY -eq 0 ]]; then
        echo "- coffer encrypted backup rounds (s): ${AGE_BACKUP_S[*]}; restore rounds (s): ${AGE_RESTORE_S[*]:-}"
    fi
    if [[ $COFFER_RESTORE -eq 1 ]]; then
        echo "- coffer restore rounds (s): ${COF_RESTORE_S[*]}"
        echo "- $RESTORE_CHECK"
    elif [[ $RESTORE -eq 1 && $BASELINE_ONLY -eq 0 ]]; then
        echo "- coffer restore not measured: 'cofferctl restore --help' failed (not implemented yet)"
    fi
    if [[ $BASELINE_ONLY -eq 0 ]]; then
        echo "- cofferd: idle RSS $idle MiB after start-up, $(kib_mib "$IDLE_AFTER_KIB") MiB idle after the rounds; start-up peak $(kib_mib "$STARTUP_HWM_KIB") MiB; $hwm_note"
        echo "- cofferctl peak RSS $(kib_mib "$(max "${CTL_RSS[@]}")") MiB"
    else
        echo "- baseline only (--baseline-only): Coffer was not run"
    fi
} | tee "$REPORT"

if [[ $KEEP -eq 0 ]]; then
    rm -rf "$B/snap" "$B/out.tar.zst" "$B/restore" "$C/restore" "$C/restore-age" "$C/backups"
fi
log "report written to $REPORT"
if [[ $STRICT -eq 1 && $MISSED -eq 1 ]]; then
    log "a target was missed (--strict)"
    exit 3
fi
