#!/usr/bin/env bash
# Checks the systemd units in this directory with systemd-analyze:
#   1. `systemd-analyze verify` of cofferd.service + cofferd.socket, as shipped,
#      with the example drop-in (cofferd.service.d/app-paths.conf.example) applied,
#      with the database jobs' drop-in (database-servers.conf.example, network to
#      the database server) added to that, and with the offsite drop-in
#      (offsite.conf.example: network for S3 stores) instead; any warning counts as a
#      failure;
#   2. `systemd-analyze security --offline=true`: the overall exposure score must
#      not exceed the threshold (default 2.5), for each of the four.
#
# Works without systemd as PID 1 (containers, CI): everything runs offline on a
# copy of the units in a temporary directory, where /usr/local/bin/cofferd is
# rewritten to $COFFERD_BIN (verify insists that the ExecStart= binary exists).
#
# Usage: systemd/check.sh [--threshold X] [--verbose]
#   --threshold X  highest acceptable exposure (0.0 - 10.0), default 2.5
#   --verbose      print the full security table, not only the items that count
# Environment:
#   COFFERD_BIN    the binary to verify against; default: target/release/cofferd or
#                  target/debug/cofferd if built, else /bin/true as a stand-in
# Exit: 0 passed (or SKIP: systemd-analyze unavailable), 1 failed, 2 usage error.
#
# If systemd-analyze is missing, it installs the `systemd` package with apt-get
# (Debian/Ubuntu; needs root); if that fails it prints SKIP and exits 0.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
threshold="2.5"
verbose=0

usage() {
    sed -n '/^# Usage:/,/^# Exit:/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --threshold)
            [ $# -ge 2 ] || usage
            threshold="$2"
            shift 2
            ;;
        --threshold=*)
            threshold="${1#--threshold=}"
            shift
            ;;
        --verbose | -v)
            verbose=1
            shift
            ;;
        -h | --help) usage ;;
        *)
            echo "check.sh: unknown argument '$1'" >&2
            usage
            ;;
    esac
done
if ! [[ "$threshold" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    echo "check.sh: --threshold wants a number such as 2.5, not '$threshold'" >&2
    exit 2
fi

skip() {
    echo "SKIP: systemd-analyze unavailable: $*"
    exit 0
}

# --- 1. systemd-analyze -------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd-analyze not found; installing it (package 'systemd'):"
    echo "  apt-get update && apt-get install -y --no-install-recommends systemd"
    command -v apt-get >/dev/null 2>&1 || skip "not found, and there is no apt-get to install it"
    [ "$(id -u)" -eq 0 ] || skip "not found, and installing it needs root"
    log="$(mktemp)"
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends systemd; } >"$log" 2>&1; then
        reason="$(grep -E '^(E|W):' "$log" | tail -n 1)"
        rm -f "$log"
        skip "apt-get failed: ${reason:-see apt-get output}"
    fi
    rm -f "$log"
    command -v systemd-analyze >/dev/null 2>&1 || skip "package 'systemd' installed, but no systemd-analyze on PATH"
fi
version="$(systemd-analyze --version | awk 'NR == 1 { print $2 }')"
echo "systemd-analyze: systemd $version"

# --- the binary ExecStart= points at ------------------------------------------------
if [ -n "${COFFERD_BIN:-}" ]; then
    bin="$COFFERD_BIN"
    if ! [ -f "$bin" ] || ! [ -x "$bin" ]; then
        echo "check.sh: COFFERD_BIN=$bin is not an executable file" >&2
        exit 2
    fi
elif [ -x "$repo/target/release/cofferd" ]; then
    bin="$repo/target/release/cofferd"
elif [ -x "$repo/target/debug/cofferd" ]; then
    bin="$repo/target/debug/cofferd"
else
    bin=/bin/true
    echo "note: no built cofferd (target/{release,debug}/cofferd) and no COFFERD_BIN; using /bin/true as a stand-in"
fi
bin="$(realpath "$bin")"
echo "ExecStart binary: $bin (in place of /usr/local/bin/cofferd)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Copies a unit, pointing /usr/local/bin/cofferd at $bin.
stage() {
    local src="$1" dst="$2" line
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "${line//\/usr\/local\/bin\/cofferd/"$bin"}"
    done <"$src" >"$dst"
}

mkdir -p "$work/shipped" "$work/dropin/cofferd.service.d" "$work/database/cofferd.service.d" \
    "$work/offsite/cofferd.service.d"
for unit in cofferd.service cofferd.socket; do
    stage "$here/$unit" "$work/shipped/$unit"
    stage "$here/$unit" "$work/dropin/$unit"
    stage "$here/$unit" "$work/database/$unit"
    stage "$here/$unit" "$work/offsite/$unit"
done
stage "$here/cofferd.service.d/app-paths.conf.example" "$work/dropin/cofferd.service.d/app-paths.conf"
stage "$here/cofferd.service.d/app-paths.conf.example" "$work/database/cofferd.service.d/app-paths.conf"
stage "$here/cofferd.service.d/database-servers.conf.example" \
    "$work/database/cofferd.service.d/database-servers.conf"
stage "$here/cofferd.service.d/app-paths.conf.example" "$work/offsite/cofferd.service.d/app-paths.conf"
stage "$here/cofferd.service.d/offsite.conf.example" "$work/offsite/cofferd.service.d/offsite.conf"

# The label of a variant.
describe() {
    case "$1" in
        shipped) echo "as shipped" ;;
        dropin) echo "with the app-paths.conf drop-in" ;;
        database) echo "with the app-paths.conf and database-servers.conf drop-ins" ;;
        offsite) echo "with the app-paths.conf and offsite.conf drop-ins" ;;
    esac
}

failed=0

# --- 2. verify ----------------------------------------------------------------------
# systemd-analyze puts the directory of the given units first on the unit path, so
# cofferd.socket finds cofferd.service and the service picks up its drop-in there.
for variant in shipped dropin database offsite; do
    label="cofferd.service + cofferd.socket, $(describe "$variant")"
    set +e
    out="$(cd "$work/$variant" && systemd-analyze verify ./cofferd.service ./cofferd.socket 2>&1)"
    rc=$?
    set -e
    if [ $rc -eq 0 ] && [ -z "$out" ]; then
        echo "PASS: systemd-analyze verify ($label): no errors, no warnings"
    else
        echo "FAIL: systemd-analyze verify ($label) (exit $rc):"
        printf '%s\n' "$out" | sed "s|$work/$variant/||g; s/^/  /"
        failed=1
    fi
done

# --- 3. security --------------------------------------------------------------------
if [ "${version%%[!0-9]*}" -lt 252 ] 2>/dev/null; then
    echo "SKIP: systemd-analyze security --offline needs systemd >= 252 (this is $version)"
    exit "$failed"
fi
for variant in shipped dropin database offsite; do
    label="$(describe "$variant")"
    set +e
    out="$(cd "$work/$variant" && LC_ALL=C systemd-analyze security --offline=true --no-pager ./cofferd.service 2>&1)"
    rc=$?
    set -e
    score="$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' | tail -n 1)"
    if [ -z "$score" ]; then
        echo "FAIL: systemd-analyze security --offline=true ($label) gave no score (exit $rc):"
        printf '%s\n' "$out" | sed 's/^/  /'
        failed=1
        continue
    fi
    if [ "$verbose" -eq 1 ]; then
        printf '%s\n' "$out" | sed 's/^/  /'
    else
        # Only the items that add to the score (their last column is a number).
        printf '%s\n' "$out" | awk '$NF ~ /^[0-9]+\.[0-9]+$/ && !/Overall exposure/ {
            sub(/^[-+] /, ""); print "  " $0 }' | sed 's/  \{2,\}/  /g'
    fi
    if awk -v s="$score" -v t="$threshold" 'BEGIN { exit !(s + 0 <= t + 0) }'; then
        echo "PASS: exposure $score <= $threshold ($label)"
    else
        echo "FAIL: exposure $score > $threshold ($label)"
        failed=1
    fi
done

exit "$failed"
