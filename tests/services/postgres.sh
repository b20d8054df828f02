#!/usr/bin/env bash
# Start (or reuse) a PostgreSQL server on 127.0.0.1 for the run-store tests; print MLTRAIN_TEST_POSTGRES_URL=<URL>.
# Installs Debian's postgresql when missing (needs root). Data lives in $STATE/pg, reused across runs.
set -euo pipefail
PORT="${MLTRAIN_TEST_PG_PORT:-54329}"
STATE="${MLTRAIN_TEST_STATE:-/var/tmp/mltrain-test-services}"
DATA="$STATE/pg"
URL="postgresql+psycopg://mltrain@127.0.0.1:$PORT/mltrain_test"

log() { echo "postgres.sh: $*" >&2; }
# shellcheck source=lib.bash
source "$(dirname "$0")/lib.bash"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "$(bindir)" ]; then
  log "installing Debian's postgresql"
  apt_install postgresql
  # Debian's package starts a cluster on 5432; the tests use their own.
  service postgresql stop >&2 2>&1 || true
fi
BIN="$(bindir)"

run_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  log "reusing the server on 127.0.0.1:$PORT"
else
  mkdir -p "$STATE"
  if [ "$(id -u)" = 0 ]; then chown postgres "$STATE"; fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    run_as_pg "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
  fi
  run_as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $PORT -k $DATA" start >&2
fi

psql_pg() { "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
[ "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname='mltrain'")" = 1 ] || psql_pg -c "CREATE ROLE mltrain LOGIN"
[ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname='mltrain_test'")" = 1 ] \
  || psql_pg -c "CREATE DATABASE mltrain_test OWNER mltrain"
echo "MLTRAIN_TEST_POSTGRES_URL=$URL"
