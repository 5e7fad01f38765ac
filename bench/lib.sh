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

# Stops pid (SIGTERM, then SIGKILL after 15 s) and reaps it when it is ours.
stop_pid() { # pid name
  local pid=$1 name=$2 i
  [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "${BENCH_NAME:-bench}: $name (pid $pid) still running 15 s after SIGTERM, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Prints how busy the whole machine was (percent of all CPUs) over interval s.
background_busy() { # interval
  "${PYTHON:-python3}" - "$1" <<'PY'
import sys, time
def snap():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f[:8]) - idle, sum(f[:8])
b0, t0 = snap(); time.sleep(float(sys.argv[1])); b1, t1 = snap()
print("%.0f" % (100.0 * (b1 - b0) / max(1, t1 - t0)))
PY
}
