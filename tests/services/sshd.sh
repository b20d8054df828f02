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

# Delegate a cgroup v2 subtree to the VM user, as the admin of a training VM would (see
# docs/troubleshooting.md): the run supervisor puts each run in a cgroup of its own beneath its
# session's cgroup. The kernel lets a user move a process only between cgroups below one whose
# cgroup.procs it may write, so the user's SSH sessions must start inside the delegated cgroup: a PAM
# session hook (pam_exec, as root) moves each new session there. This sshd runs under a name of its
# own, which is its PAM service name, so the system's /etc/pam.d/sshd is left alone.
USE_PAM=no
SSHD=/usr/sbin/sshd
CGROUP2="$(awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") print $5; break } }' \
  /proc/self/mountinfo | head -n 1)"
DELEGATED=""
if [ -n "$CGROUP2" ] && [ -w "$CGROUP2" ]; then
  DELEGATED="$CGROUP2/mltrain-test-$VM_USER"
  mkdir -p "$DELEGATED"
  # The folder (to make child cgroups) and the files the kernel's delegation rules name.
  chown "$VM_USER:$VM_USER" "$DELEGATED" "$DELEGATED/cgroup.procs" "$DELEGATED/cgroup.threads" \
    "$DELEGATED/cgroup.subtree_control"
  cat >"$DIR/cgroup-session.sh" <<HOOK
#!/bin/sh
# pam_exec session hook (as root): the session's sshd process, and so all it starts, moves into the
# cgroup delegated to $VM_USER.
[ "\$PAM_TYPE" = open_session ] && [ "\$PAM_USER" = "$VM_USER" ] || exit 0
echo "\$PPID" >"$DELEGATED/cgroup.procs"
HOOK
  chmod 755 "$DIR/cgroup-session.sh"
  cat >"/etc/pam.d/mltrain-test-sshd-$PORT" <<PAM
# Written by tests/services/sshd.sh of airflow-provider-mltrain: its test sshd on port $PORT.
@include common-account
session optional pam_exec.so quiet $DIR/cgroup-session.sh
PAM
  ln -sfn /usr/sbin/sshd "$DIR/mltrain-test-sshd-$PORT"
  SSHD="$DIR/mltrain-test-sshd-$PORT"
  USE_PAM=yes
else
  log "no writable cgroup v2 hierarchy: runs on the SSH VM will carry a 'no cgroup' warning"
fi

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
UsePAM $USE_PAM
PermitRootLogin no
StrictModes yes
MaxStartups 100:30:200
MaxSessions 50
ClientAliveInterval 30
Subsystem sftp internal-sftp
EOF

answers() { ssh-keyscan -T 3 -p "$PORT" 127.0.0.1 2>/dev/null | grep -q ssh-ed25519; }
running() { [ -f "$DIR/sshd.pid" ] && kill -0 "$(cat "$DIR/sshd.pid")" 2>/dev/null; }

# An sshd started with another configuration (by an older version of this script) is restarted;
# the sessions it serves go on.
if running && answers && cmp -s "$DIR/sshd_config" "$DIR/sshd_config.running"; then
  log "reusing the sshd on 127.0.0.1:$PORT (pid $(cat "$DIR/sshd.pid"))"
else
  if running; then kill "$(cat "$DIR/sshd.pid")" || true; sleep 0.5; fi
  "$SSHD" -t -f "$DIR/sshd_config"
  "$SSHD" -f "$DIR/sshd_config" -E "$DIR/sshd.log"
  cp "$DIR/sshd_config" "$DIR/sshd_config.running"
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
echo "MLTRAIN_TEST_SSH_CGROUP=$DELEGATED"
