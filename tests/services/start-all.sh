#!/usr/bin/env bash
# Start every service the tests use, in parallel, and print `export KEY=VALUE` lines for the shell.
#
# Each tests/services/<name>.sh installs (from Debian when missing) and starts one service on
# 127.0.0.1, reusing it when it already answers, and prints KEY=VALUE lines on stdout (logs go to
# stderr). In CI (CI set) a service that cannot start fails this script; elsewhere its variables are
# left unset and its tests skip with a reason.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${MLTRAIN_TEST_STATE:-/var/tmp/mltrain-test-services}"
mkdir -p "$STATE/out"
# apt/dpkg take one lock: services that install packages wait for it instead of failing.
export DEBIAN_FRONTEND=noninteractive

pids=() names=()
for script in "$HERE"/*.sh; do
  name="$(basename "$script" .sh)"
  [ "$name" = start-all ] && continue
  bash "$script" >"$STATE/out/$name.env" 2>"$STATE/out/$name.log" &
  pids+=($!) names+=("$name")
done

failed=0
for i in "${!pids[@]}"; do
  name="${names[$i]}"
  if wait "${pids[$i]}"; then
    echo "service $name: up" >&2
    while IFS='=' read -r key value; do
      [[ "$key" =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
      printf 'export %s=%q\n' "$key" "$value"
    done <"$STATE/out/$name.env"
  else
    echo "service $name could not start; its log ($STATE/out/$name.log) ends with:" >&2
    tail -n 20 "$STATE/out/$name.log" | sed 's/^/    /' >&2
    failed=1
  fi
done
if [ "$failed" = 1 ] && [ -n "${CI:-}" ]; then
  echo "In CI every service must start (tests/services/)." >&2
  exit 1
fi
exit 0
