#!/usr/bin/env bash
# Start (or reuse) an sshd on 127.0.0.1 that stands in for a remote training VM; print its KEY=VALUE lines.
#
# The "VM" is the unprivileged user mltrain-vm with its own home. The sshd has its own host key and
# config under $STATE/sshd; the client key pair and a known_hosts entry for it are made here too.
# Installs Debian's openssh-server (and python3-numpy, python3-venv: what a training box has) when
# missing (needs root).
set -euo pipefail
PORT="${MLTRAIN_TEST_SSH_PORT:-22022}"
STATE="${MLTRAIN_TEST_STATE:-/var/tmp/mltrain-test-services}"
DIR="$STATE/sshd"
VM_USER="${MLTRAIN_TEST_SSH_USER:-mltrain-vm}"

log() { echo "sshd.sh: $*" >&2; }
# shellcheck source=lib.bash
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ]; then
  log "needs root (it creates the user $VM_USER and starts sshd)"
  exit 1
fi

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
/usr/bin/python3 -c 'import numpy' 2>/dev/null || missing+=(python3-numpy)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} from Debian"
  apt_install "${missing[@]}"
  # Debian's package may start a system sshd on port 22; the tests use their own.
  if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
    service ssh stop >/dev/null 2>&1 || true
  fi
fi

if ! id "$VM_USER" >/dev/null 2>&1; then
  log "creating user $VM_USER"
  useradd --create-home --shell /bin/bash "$VM_USER"
fi
HOME_DIR="$(getent passwd "$VM_USER" | cut -d: -f6)"
# A locked account ('!' in shadow) is refused by sshd even for key logins: make it key-only instead.
usermod -p '*' "$VM_USER"

mkdir -p "$DIR" /run/sshd
chmod 700 "$DIR"
[ -f "$DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C mltrain-test-host -f "$DIR/host_ed25519"
[ -f "$DIR/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C mltrain-test-client -f "$DIR/client_ed25519"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$DIR/host_ed25519.pub")" >"$DIR/known_hosts"

install -d -m 700 -o "$VM_USER" -g "$VM_USER" "$HOME_DIR/.ssh"
install -m 600 -o "$VM_USER" -g "$VM_USER" "$DIR/client_ed25519.pub" "$HOME_DIR/.ssh/authorized_keys"

cat >"$DIR/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $DIR/host_ed25519
PidFile $DIR/sshd.pid
AllowUsers $VM_USER
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
StrictModes yes
MaxStartups 100:30:200
MaxSessions 50
ClientAliveInterval 30
Subsystem sftp internal-sftp
EOF

answers() { ssh-keyscan -T 3 -p "$PORT" 127.0.0.1 2>/dev/null | grep -q ssh-ed25519; }
running() { [ -f "$DIR/sshd.pid" ] && kill -0 "$(cat "$DIR/sshd.pid")" 2>/dev/null; }

if running && answers; then
  log "reusing the sshd on 127.0.0.1:$PORT (pid $(cat "$DIR/sshd.pid"))"
else
  if running; then kill "$(cat "$DIR/sshd.pid")" || true; sleep 0.5; fi
  /usr/sbin/sshd -t -f "$DIR/sshd_config"
  /usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log"
  for _ in $(seq 50); do answers && break; sleep 0.1; done
  answers || { log "sshd did not answer on 127.0.0.1:$PORT; see $DIR/sshd.log"; exit 1; }
  log "started sshd on 127.0.0.1:$PORT (pid $(cat "$DIR/sshd.pid"))"
fi

echo "MLTRAIN_TEST_SSH_HOST=127.0.0.1"
echo "MLTRAIN_TEST_SSH_PORT=$PORT"
echo "MLTRAIN_TEST_SSH_USER=$VM_USER"
echo "MLTRAIN_TEST_SSH_KEY_FILE=$DIR/client_ed25519"
echo "MLTRAIN_TEST_SSH_KNOWN_HOSTS=$DIR/known_hosts"
echo "MLTRAIN_TEST_SSH_HOST_KEY_FILE=$DIR/host_ed25519.pub"
echo "MLTRAIN_TEST_SSH_CONFIG=$DIR/sshd_config"
