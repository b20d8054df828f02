# Shared by the service scripts (sourced, not run). Logs go to stderr; stdout carries KEY=VALUE lines.

# apt_install PKG...: install Debian packages, waiting for dpkg's lock (services start in parallel).
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "need root to install $* (apt-get install $*)" >&2
    return 1
  fi
  mkdir -p /var/tmp/mltrain-test-services
  # Services start in parallel: one apt at a time. dpkg's own lock timeout does not cover
  # `apt-get update`'s lists lock, and two updates at once leave half-written lists behind.
  (
    flock -w 1800 9 || { echo "apt lock not free after 30 minutes" >&2; exit 1; }
    _apt_install_locked "$@"
  ) 9>/var/tmp/mltrain-test-services/apt.lock
}

_apt_install_locked() {
  export DEBIAN_FRONTEND=noninteractive
  local opts=(-o DPkg::Lock::Timeout=900 -qq)
  # One `apt-get update` per boot is enough for every service.
  if [ ! -f /var/tmp/mltrain-test-services/.apt-updated ] \
    || [ /var/tmp/mltrain-test-services/.apt-updated -ot /proc/1 ]; then
    apt-get "${opts[@]}" update >&2 && touch /var/tmp/mltrain-test-services/.apt-updated
  fi
  apt-get "${opts[@]}" install -y --no-install-recommends "$@" >&2
}
