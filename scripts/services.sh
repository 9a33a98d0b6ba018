#!/usr/bin/env bash
# Install (when absent) and start (when stopped) the native services that the
# tests, CI and the demo need. Idempotent; never restarts a service that runs.
# Usage: scripts/services.sh {all|ensure-venv|ensure-postgres|ensure-rabbitmq|
#                             ensure-softhsm|ensure-openbao|ensure-openssl|
#                             ensure-db NAME}
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

PG_HOST="${POSTGRES_HOSTNAME:-127.0.0.1}"
PG_PORT="${POSTGRES_PORT:-5432}"
PG_USER="${POSTGRES_USERNAME:-postgres}"
if [[ -n "${POSTGRES_PASSWORD:-}" ]]; then export PGPASSWORD="$POSTGRES_PASSWORD"; fi
MQ_HOST=127.0.0.1
MQ_PORT=5672
APT_UPDATED=0

die() { echo "services: $*" >&2; exit 1; }

# Run a command with its output kept in a log; show the log only on failure.
quiet() {
    local log rc=0
    log="$(mktemp)"
    "$@" >"$log" 2>&1 || rc=$?
    if ((rc != 0)); then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "failed ($rc): $*"
    fi
    rm -f "$log"
}

apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    if ((APT_UPDATED == 0)); then
        quiet env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

is_local() { [[ "$1" == 127.0.0.1 || "$1" == localhost || "$1" == ::1 ]]; }

pg_ready() {
    if command -v pg_isready >/dev/null; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
    else
        port_open "$PG_HOST" "$PG_PORT"
    fi
}

pg_versions() { find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V; }

pg_login_ok() {
    psql -X -w -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres \
        -tAc 'select 1' >/dev/null 2>&1
}

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every second until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || die "$what not ready after timeout; giving up"
        sleep 1
    done
}

ensure_venv() {
    local py="" cand
    if [[ ! -x .venv/bin/python ]]; then
        for cand in python3 python3.13 python3.12 python3.11; do
            if command -v "$cand" >/dev/null &&
                "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
                py="$cand"
                break
            fi
        done
        [[ -n "$py" ]] || die "no python3 >= 3.11 found"
        quiet "$py" -m venv .venv
    fi
    if [[ ! -f .venv/.installed || pyproject.toml -nt .venv/.installed ||
        requirements.lock -nt .venv/.installed ]]; then
        # The runtime dependencies at the versions the image uses (scripts/lock.sh).
        quiet .venv/bin/python -m pip install -q --disable-pip-version-check \
            -c requirements.lock -e '.[dev]'
        touch .venv/.installed
        echo "venv: installed .[dev] into .venv"
    else
        echo "venv: up to date"
    fi
}

ensure_postgres() {
    if pg_ready; then
        echo "postgres: already running on $PG_HOST:$PG_PORT"
        return
    fi
    is_local "$PG_HOST" || die "postgres: nothing answers on $PG_HOST:$PG_PORT (not a local host, not starting one)"
    local did="started"
    if ! command -v pg_ctlcluster >/dev/null || [[ -z "$(pg_versions)" ]]; then
        apt_install postgresql
        did="installed and started"
    fi
    local ver conf
    ver="$(pg_versions | tail -n 1)"
    conf="/etc/postgresql/$ver/main"
    [[ -d "$conf" ]] || quiet pg_createcluster "$ver" main
    # Exit code 2 means "already running" (e.g. just started by the package's postinst).
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 || true
    wait_for 60 "postgres on $PG_HOST:$PG_PORT" pg_ready
    if ! pg_login_ok; then
        if ! grep -q '^host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; then
            local tmp
            tmp="$(mktemp)"
            printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' >"$tmp"
            cat "$conf/pg_hba.conf" >>"$tmp"
            cat "$tmp" >"$conf/pg_hba.conf" # keeps owner and mode of the original
            rm -f "$tmp"
        fi
        quiet pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
        wait_for 15 "postgres trust login as $PG_USER" pg_login_ok
        did="$did (TCP trust auth enabled)"
    fi
    echo "postgres: $did cluster $ver/main on $PG_HOST:$PG_PORT"
}

ensure_rabbitmq() {
    if port_open "$MQ_HOST" "$MQ_PORT"; then
        echo "rabbitmq: already running on $MQ_HOST:$MQ_PORT"
        return
    fi
    local did="started"
    if ! command -v rabbitmq-server >/dev/null; then
        apt_install rabbitmq-server
        did="installed and started"
    fi
    # The package's postinst may have started it already.
    port_open "$MQ_HOST" "$MQ_PORT" || quiet rabbitmq-server -detached
    wait_for 90 "rabbitmq on $MQ_HOST:$MQ_PORT" port_open "$MQ_HOST" "$MQ_PORT"
    quiet timeout 60 rabbitmqctl -q await_startup
    echo "rabbitmq: $did on $MQ_HOST:$MQ_PORT"
}

ensure_softhsm() {
    if [[ -e /usr/lib/softhsm/libsofthsm2.so ]] && command -v softhsm2-util >/dev/null; then
        echo "softhsm: already installed (/usr/lib/softhsm/libsofthsm2.so)"
        return
    fi
    apt_install softhsm2
    echo "softhsm: installed softhsm2 (/usr/lib/softhsm/libsofthsm2.so)"
}

ensure_openbao() {
    [[ -x .venv/bin/bao ]] || die "openbao: .venv/bin/bao missing; run: $0 ensure-venv"
    local v
    v="$(.venv/bin/bao version 2>&1)" || die "openbao: '.venv/bin/bao version' failed: $v"
    echo "openbao: ${v%% (*} at .venv/bin/bao"
}

# The tests check the EST wire format against the openssl command line.
ensure_openssl() {
    if command -v openssl >/dev/null; then
        echo "openssl: already installed ($(openssl version))"
        return
    fi
    apt_install openssl
    echo "openssl: installed ($(openssl version))"
}

ensure_db() {
    local name="${1:-}"
    [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "ensure-db: need a plain database name, got '${name}'"
    local psql=(psql -X -w -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tA)
    local exists
    exists="$("${psql[@]}" -c "select 1 from pg_database where datname = '$name'")" ||
        die "ensure-db: cannot connect to postgres on $PG_HOST:$PG_PORT as $PG_USER"
    if [[ "$exists" == 1 ]]; then
        echo "db: $name already exists"
        return
    fi
    # A concurrent creator may win the race; that is fine as long as the database exists.
    if ! "${psql[@]}" -c "create database \"$name\"" >/dev/null 2>&1 &&
        [[ "$("${psql[@]}" -c "select 1 from pg_database where datname = '$name'")" != 1 ]]; then
        die "ensure-db: could not create database $name"
    fi
    echo "db: created $name"
}

case "${1:-}" in
ensure-venv) ensure_venv ;;
ensure-postgres) ensure_postgres ;;
ensure-rabbitmq) ensure_rabbitmq ;;
ensure-softhsm) ensure_softhsm ;;
ensure-openbao) ensure_openbao ;;
ensure-openssl) ensure_openssl ;;
ensure-db) ensure_db "${2:-}" ;;
all)
    ensure_venv
    ensure_postgres
    ensure_rabbitmq
    ensure_softhsm
    ensure_openbao
    ensure_openssl
    ;;
*)
    echo "usage: $0 {all|ensure-venv|ensure-postgres|ensure-rabbitmq|ensure-softhsm|ensure-openbao|ensure-openssl|ensure-db NAME}" >&2
    exit 2
    ;;
esac
