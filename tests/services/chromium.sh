#!/usr/bin/env bash
# Make Debian's headless Chromium available for the UI tests; print MLTRAIN_TEST_CHROMIUM=<path>.
#
# Nothing is started here: each test launches its own browser through Playwright with this
# executable (Playwright's own browser download is never used). Installs Debian's chromium when
# missing (needs root); a second run only checks that the binary answers.
set -euo pipefail
BIN="${MLTRAIN_TEST_CHROMIUM:-/usr/bin/chromium}"

log() { echo "chromium.sh: $*" >&2; }
# shellcheck source=lib.bash
source "$(dirname "$0")/lib.bash"

if [ ! -x "$BIN" ]; then
  log "installing Debian's chromium (and fonts for readable screenshots)"
  apt_install chromium fonts-dejavu-core
fi
if ! "$BIN" --headless --no-sandbox --disable-gpu --version >/dev/null 2>&1 \
  && ! "$BIN" --version >/dev/null 2>&1; then
  log "$BIN does not run"
  exit 1
fi
log "using $("$BIN" --version 2>/dev/null || echo "$BIN")"
echo "MLTRAIN_TEST_CHROMIUM=$BIN"
