#!/usr/bin/env bash
# Start (or reuse) a Redis server on 127.0.0.1, the Celery broker of the multi-worker deployment
# tests (tests/deployment/); print MLTRAIN_TEST_REDIS_URL=<URL>.
# Installs Debian's redis-server when missing (needs root); runs an instance of its own at a high
# port with its data under $STATE/redis, never the system service.
set -euo pipefail
PORT="${MLTRAIN_TEST_REDIS_PORT:-16379}"
STATE="${MLTRAIN_TEST_STATE:-/var/tmp/mltrain-test-services}"
DIR="$STATE/redis"

log() { echo "redis.sh: $*" >&2; }
# shellcheck source=lib.bash
source "$(dirname "$0")/lib.bash"

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  log "installing Debian's redis-server"
  apt_install redis-server
  # Debian's package starts a system server on 6379; the tests use their own.
  service redis-server stop >/dev/null 2>&1 || true
fi

answers() { [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = PONG ]; }

if answers; then
  log "reusing the server on 127.0.0.1:$PORT"
else
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  # No persistence: a broker for tests, emptied with the machine.
  redis-server --bind 127.0.0.1 --port "$PORT" --protected-mode yes --save '' --appendonly no \
    --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --daemonize yes >&2
  for _ in $(seq 100); do answers && break; sleep 0.1; done
  answers || { log "redis did not answer on 127.0.0.1:$PORT; see $DIR/redis.log"; exit 1; }
  log "started redis on 127.0.0.1:$PORT (pid $(cat "$DIR/redis.pid"))"
fi
echo "MLTRAIN_TEST_REDIS_URL=redis://127.0.0.1:$PORT/0"
