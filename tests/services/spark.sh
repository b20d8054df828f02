#!/usr/bin/env bash
# Start (or reuse) a Spark standalone cluster on 127.0.0.1: one master and two workers, from the
# project venv's own pyspark (bin/spark-class). Prints MLTRAIN_TEST_SPARK_MASTER and MLTRAIN_TEST_SPARK_UI.
#
# Installs Debian's default-jre-headless when `java` is missing (pyspark 4 needs Java 17+). Each
# worker offers 1 core and 1 GB so a 2-core machine copes. Logs and work folders: $STATE/spark.
set -euo pipefail
MASTER_PORT="${MLTRAIN_TEST_SPARK_PORT:-17077}"
UI_PORT="${MLTRAIN_TEST_SPARK_UI_PORT:-18080}"
WORKER_PORTS=(17078 17079)
WORKER_UI_PORTS=(18081 18082)
STATE="${MLTRAIN_TEST_STATE:-/var/tmp/mltrain-test-services}"
DIR="$STATE/spark"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
MASTER="spark://127.0.0.1:$MASTER_PORT"
UI="http://127.0.0.1:$UI_PORT"

log() { echo "spark.sh: $*" >&2; }
# shellcheck source=lib.bash
source "$(dirname "$0")/lib.bash"

if ! command -v java >/dev/null 2>&1; then
  log "installing Debian's default-jre-headless"
  apt_install default-jre-headless
fi

PY="$REPO/.venv/bin/python"
if ! SPARK_HOME="$("$PY" -c 'import pyspark,os;print(os.path.dirname(pyspark.__file__))' 2>/dev/null)"; then
  log "pyspark is not installed in $REPO/.venv: run make install-dev"
  exit 1
fi
export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 SPARK_NO_DAEMONIZE=1
mkdir -p "$DIR"

# The master's JSON lists its alive workers: the cluster is up when both are registered.
alive_workers() {
  "$PY" - "$UI/json/" <<'EOF' 2>/dev/null || echo 0
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    print(sum(1 for w in json.load(r).get("workers", []) if w.get("state") == "ALIVE"))
EOF
}

start() {  # start NAME CLASS ARGS...: a daemon in its own session, its pid in $DIR/NAME.pid
  local name="$1"
  shift
  if [ -f "$DIR/$name.pid" ] && kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null; then
    kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
    sleep 1
  fi
  setsid "$SPARK_HOME/bin/spark-class" "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

if [ "$(alive_workers)" = 2 ]; then
  log "reusing the cluster at $MASTER (UI $UI)"
else
  if ! "$PY" -c "import urllib.request; urllib.request.urlopen('$UI/json/', timeout=3)" 2>/dev/null; then
    log "starting the master on $MASTER"
    start master org.apache.spark.deploy.master.Master \
      --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$UI_PORT"
  fi
  for i in 0 1; do
    name="worker$((i + 1))"
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${WORKER_UI_PORTS[$i]}") 2>/dev/null; then
      log "starting $name"
      mkdir -p "$DIR/$name-work"
      start "$name" org.apache.spark.deploy.worker.Worker \
        --host 127.0.0.1 --port "${WORKER_PORTS[$i]}" --webui-port "${WORKER_UI_PORTS[$i]}" \
        --cores 1 --memory 1g --work-dir "$DIR/$name-work" "$MASTER"
    fi
  done
  for _ in $(seq 1 120); do
    [ "$(alive_workers)" = 2 ] && break
    sleep 1
  done
  if [ "$(alive_workers)" != 2 ]; then
    log "the cluster did not come up; logs in $DIR:"
    tail -n 20 "$DIR"/*.log >&2 || true
    exit 1
  fi
  log "cluster up at $MASTER with 2 workers (UI $UI)"
fi
echo "MLTRAIN_TEST_SPARK_MASTER=$MASTER"
echo "MLTRAIN_TEST_SPARK_UI=$UI"
