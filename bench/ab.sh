#!/usr/bin/env bash
# A/B benchmark of two cofferd builds on the same data: both daemons run side by side
# (an idle daemon costs nothing), and their backups alternate (A B, B A, A B, ...), so
# drift of a shared VM falls on both alike. Used to check that a change is no slower
# than the build before it. The data set is bench/run.sh's (run that once first).
#
# Usage: bash bench/ab.sh BIN_DIR_A BIN_DIR_B [--rounds N] [--verify true|false] [--work DIR]
#   BIN_DIR_*   directories holding cofferd and cofferctl (e.g. target/release)
#   --rounds    backups per build (default 10)
#   --verify    verify-after-backup of both jobs (default true, the default config)
#   --work      bench/run.sh's work directory (default /tmp/coffer-bench)
#
# Prints each backup's wall time and the CPU seconds cofferd spent on it (user + system,
# from /proc/PID/stat), then the medians of both and their ratios (B / A).
set -euo pipefail

die() { printf 'ab.sh: error: %s\n' "$*" >&2; exit 1; }
[[ $# -ge 2 ]] || die "usage: bash bench/ab.sh BIN_DIR_A BIN_DIR_B [--rounds N] [--verify true|false] [--work DIR]"
A=$(cd "$1" && pwd) B=$(cd "$2" && pwd)
shift 2
ROUNDS=10 VERIFY=true WORK=/tmp/coffer-bench
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--rounds needs a positive integer"; ROUNDS=$2; shift 2 ;;
        --verify) [[ ${2:-} == true || ${2:-} == false ]] || die "--verify needs true or false"; VERIFY=$2; shift 2 ;;
        --work) [[ -n ${2:-} ]] || die "--work needs a directory"; WORK=$2; shift 2 ;;
        *) die "unknown argument: $1" ;;
    esac
done
for bin in "$A" "$B"; do
    [[ -x $bin/cofferd && -x $bin/cofferctl ]] || die "$bin has no cofferd and cofferctl"
done
[[ -f $WORK/data/app.db && -d $WORK/data/uploads ]] ||
    die "no data set in $WORK/data (run bash bench/run.sh --rounds 1 --no-restore once)"

AB=$WORK/ab
declare -A PID=() LAST=()
stop() {
    for side in "${!PID[@]}"; do kill "${PID[$side]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT

bin_of() { if [[ $1 == a ]]; then echo "$A"; else echo "$B"; fi; }

for side in a b; do
    dir=$AB/$side
    rm -rf "$dir"
    mkdir -p "$dir/state" "$dir/backups"
    cat >"$dir/cofferd.toml" <<EOF
[daemon]
socket = '$dir/cofferd.sock'
state-dir = '$dir/state'
backup-dir = '$dir/backups'

[[job]]
name = "bench"
database = '$WORK/data/app.db'
media = ['$WORK/data/uploads']
schedule = "manual"
verify-after-backup = $VERIFY
min-free-space = "0B"
EOF
    "$(bin_of $side)/cofferd" --config "$dir/cofferd.toml" >"$dir/cofferd.log" 2>&1 &
    PID[$side]=$!
done
for side in a b; do
    for ((i = 0; i < 100; i++)); do [[ -S $AB/$side/cofferd.sock ]] && break; sleep 0.1; done
    [[ -S $AB/$side/cofferd.sock ]] || die "cofferd $side did not start (log: $AB/$side/cofferd.log)"
done

TIMES_a=() TIMES_b=() CPU_a=() CPU_b=()
TICKS=$(getconf CLK_TCK)
# CPU seconds (user + system) the daemon of side $1 has used so far, its threads that
# ended included.
cpu_of() {
    awk -v hz="$TICKS" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/${PID[$1]}/stat"
}
backup() {
    local side=$1 bin t0 t1 c0 c1
    bin=$(bin_of "$side")
    if [[ -n ${LAST[$side]:-} ]]; then
        "$bin/cofferctl" --socket "$AB/$side/cofferd.sock" delete "${LAST[$side]}" --yes >/dev/null
    fi
    sync
    c0=$(cpu_of "$side")
    t0=$(date +%s.%N)
    "$bin/cofferctl" --socket "$AB/$side/cofferd.sock" backup bench >"$AB/$side/out.txt" 2>&1 ||
        die "backup $side failed: $(tail -n 3 "$AB/$side/out.txt")"
    t1=$(date +%s.%N)
    c1=$(cpu_of "$side")
    LAST[$side]=$(grep -o 'bench-[0-9TZ]*' "$AB/$side/out.txt" | tail -n 1)
    local secs cpu
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
    if [[ $side == a ]]; then TIMES_a+=("$secs") CPU_a+=("$cpu"); else TIMES_b+=("$secs") CPU_b+=("$cpu"); fi
    printf '%s %s s, CPU %s s\n' "$side" "$secs" "$cpu"
}
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then backup a; backup b; else backup b; backup a; fi
done
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b / a }'; }
ma=$(median "${TIMES_a[@]}") mb=$(median "${TIMES_b[@]}")
ca=$(median "${CPU_a[@]}") cb=$(median "${CPU_b[@]}")
printf 'median A %s s, B %s s, B / A %s (%d backups each, verify-after-backup %s)\n' \
    "$ma" "$mb" "$(ratio "$ma" "$mb")" "$ROUNDS" "$VERIFY"
printf 'median CPU A %s s, B %s s, B / A %s\n' "$ca" "$cb" "$(ratio "$ca" "$cb")"
