#!/usr/bin/env bash
# Docker Engine for the Docker target's tests; prints MLTRAIN_TEST_DOCKER_HOST and _IMAGE.
#
# Installs Debian's docker.io and debootstrap when missing, starts `dockerd --bridge=none
# --iptables=false` when no daemon answers (containers here use network_mode none or host, never a
# bridge), and builds the base test image (python3, python3-venv, numpy) from a debootstrap root
# filesystem with `docker import`: no image can be pulled here. Everything is reused when present.
set -euo pipefail
# shellcheck source=lib.bash
source "$(dirname "$0")/lib.bash"
STATE="${MLTRAIN_TEST_STATE:-/var/tmp/mltrain-test-services}"
IMAGE="mltrain-test-base:bookworm"
SOCKET="unix:///var/run/docker.sock"
log() { echo "docker.sh: $*" >&2; }
mkdir -p "$STATE"

command -v dockerd >/dev/null || { log "installing Debian's docker.io"; apt_install docker.io; }
command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }

if ! docker -H "$SOCKET" info >/dev/null 2>&1; then
  log "starting dockerd (log: $STATE/dockerd.log)"
  setsid dockerd --bridge=none --iptables=false --ip6tables=false \
    >"$STATE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    docker -H "$SOCKET" info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker -H "$SOCKET" info >/dev/null 2>&1 || { tail -n 20 "$STATE/dockerd.log" >&2; exit 1; }
fi

# The image trusts what this machine trusts (an egress proxy's CA, say), as a company base image
# would: pip inside image builds reaches the package index through the same proxy.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CA_SUM="$(sha256sum "$CA_BUNDLE" 2>/dev/null | cut -c1-16 || echo none)"
current="$(docker -H "$SOCKET" image inspect -f '{{ index .Config.Labels "mltrain.ca" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$current" != "$CA_SUM" ]; then
  rootfs="$STATE/docker-rootfs"
  if [ ! -x "$rootfs/usr/bin/python3" ]; then
    log "debootstrap of Debian bookworm with python3 into $rootfs (a minute or so)"
    rm -rf "$rootfs.tmp"
    # No mirror argument: debootstrap's default Debian mirror.
    debootstrap --variant=minbase --include=python3,python3-venv,python3-numpy,ca-certificates \
      bookworm "$rootfs.tmp" >&2
    rm -rf "$rootfs" && mv "$rootfs.tmp" "$rootfs"
  fi
  if [ -f "$CA_BUNDLE" ]; then
    mkdir -p "$rootfs/etc/ssl/certs" && cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
  log "importing $IMAGE"
  tar -C "$rootfs" -c . | docker -H "$SOCKET" import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    -c "LABEL mltrain.ca=$CA_SUM" - "$IMAGE" >&2
fi

echo "MLTRAIN_TEST_DOCKER_HOST=$SOCKET"
echo "MLTRAIN_TEST_DOCKER_IMAGE=$IMAGE"
