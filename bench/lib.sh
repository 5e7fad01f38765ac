# Shared helpers of the bench/ scripts; source it after setting BENCH_NAME.
# shellcheck shell=bash

log() { printf '%s\n' "$*" >&2; }
die() { log "${BENCH_NAME:-bench}: $*"; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo -n "$@"
  else die "need root to run: $*"
  fi
}

# Installs Debian packages quietly, refreshing the package lists only when
# a first attempt fails.
apt_install() { # packages...
  command -v apt-get >/dev/null || die "apt-get not available; install $* yourself"
  log "${BENCH_NAME:-bench}: installing $* (apt-get)"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
      || die "apt-get install $* failed"
  fi
}
