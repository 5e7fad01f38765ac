#!/usr/bin/env bash
# A local S3 server that really verifies SigV4 signatures, for the tests and
# benchmarks of the S3/R2 storage: single-node OpenStack Swift with its s3api
# middleware on 127.0.0.1, all state (rings, configuration, objects, logs,
# pid files) under one directory.
#
#   scripts/s3-testbed.sh install          apt-get what is missing (Debian)
#   scripts/s3-testbed.sh start DIR [PORT] start (proxy on PORT, else a free
#                                          port, the previous one if free)
#   scripts/s3-testbed.sh stop DIR         stop everything started in DIR
#   scripts/s3-testbed.sh env DIR          print the AWS_* export lines
#   scripts/s3-testbed.sh status DIR       exit 0 when running and healthy
#
# Credentials: access key test:tester, secret testing, region auto.
# DIR must be on a filesystem with user extended attributes (ext4 /tmp is).
# Swift always reads /etc/swift/swift.conf (hash prefix/suffix, storage
# policy 0), which Debian's swift package installs; nothing else outside DIR.
# Objects survive stop/start in the same DIR, and so does the proxy port
# unless another PORT is given: a test can stop the server mid-upload and
# start it again at the same endpoint.
set -euo pipefail

PY=/usr/bin/python3          # Debian's python3-swift lives here, not in pyenv
PKGS=(swift swift-proxy swift-account swift-container swift-object python3-swift memcached awscli)
SERVERS=(account container object)
ACCESS_KEY=test:tester
SECRET_KEY=testing
REGION=auto

die() { echo "s3-testbed: $*" >&2; exit 1; }
say() { echo "s3-testbed: $*"; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

cmd_install() {
  local missing=() p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing packages: ${missing[*]}; run as root or: apt-get install ${missing[*]}"
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- processes -------------------------------------------------------------

# alive PID: the process exists and is not a zombie (the servers outlive
# this script, and whoever inherits them may reap them late).
alive() {
  local st
  { read -r st < "/proc/$1/stat"; } 2>/dev/null || return 1
  st=${st##*) }
  st=${st%% *}
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# ours NAME PID: PID is still the process this bed started as NAME (guards
# against a recycled pid): its command line names its config file in DIR,
# or for memcached, the port it was given.
ours() {
  local args cmdline
  { mapfile -d '' args < "/proc/$2/cmdline"; } 2>/dev/null || return 1
  cmdline="${args[*]-} "
  case "$1" in
    memcached) [[ "$cmdline" == *memcached*"-p ${MEMCACHED_PORT:-x} "* ]] ;;
    *) [[ "$cmdline" == *"$DIR/etc/$1-server.conf"* ]] ;;
  esac
}

# running: every name whose pid file points at a live process of ours
running() {
  local f name pid
  for f in "$DIR"/run/*.pid; do
    [ -e "$f" ] || continue
    name=${f##*/}
    name=${name%.pid}
    { read -r pid < "$f"; } 2>/dev/null || continue
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" && ours "$name" "$pid" && echo "$name:$pid"
  done
  return 0
}

load_ports() {
  [ -r "$DIR/ports" ] || return 1
  # shellcheck disable=SC1091
  . "$DIR/ports"
}

healthy() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "${1:-2}" \
         "http://127.0.0.1:$PROXY_PORT/healthcheck" 2>/dev/null) || return 1
  [ "$code" = 200 ]
}

# set_dir DIR [create]: DIR as an absolute path, its ports loaded if any
set_dir() {
  [ -n "${1:-}" ] || usage
  if [ "${2:-}" = create ]; then
    mkdir -p "$1"
  elif [ ! -d "$1" ]; then
    return 1
  fi
  DIR=$(cd "$1" && pwd -P)
  load_ports 2>/dev/null || true
}

cmd_stop() {
  set_dir "$1" || return 0
  local order=(proxy object container account memcached) name pid f pids=()
  for name in "${order[@]}"; do
    f="$DIR/run/$name.pid"
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" && ours "$name" "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local deadline=$((SECONDS + 10)) left killed=""
  while :; do
    left=()
    for pid in "${pids[@]+"${pids[@]}"}"; do alive "$pid" && left+=("$pid"); done
    [ "${#left[@]}" -eq 0 ] && break
    if [ $SECONDS -ge $deadline ]; then
      if [ -n "$killed" ]; then
        echo "s3-testbed: still alive after SIGKILL: ${left[*]}" >&2
        break
      fi
      kill -KILL "${left[@]}" 2>/dev/null || true
      killed=1
      deadline=$((SECONDS + 5))
    fi
    sleep 0.05
  done
  rm -f "$DIR"/run/*.pid
  [ "${#pids[@]}" -gt 0 ] && say "stopped (${#pids[@]} processes) in $DIR"
  return 0
}

check_xattr() {
  "$PY" - "$1" <<'PYEOF' || die "$1 does not support user extended attributes (Swift stores object metadata in them); use a directory on ext4/xfs, e.g. under /tmp"
import os, sys
p = os.path.join(sys.argv[1], ".xattr-probe")
open(p, "w").close()
try:
    os.setxattr(p, "user.s3testbed", b"1")
    ok = os.getxattr(p, "user.s3testbed") == b"1"
except OSError:
    ok = False
finally:
    os.unlink(p)
sys.exit(0 if ok else 1)
PYEOF
}

# One python call: choose the ports and build the three rings (1 replica,
# 1 device each).  Writes DIR/ports, a shell fragment.  WANT is "=PORT"
# (the proxy must get PORT), "PORT" (preferred) or empty.  On a restart
# the previous ports and rings are kept when all the ports are still free
# (saves importing swift: most of this call's time).
make_rings() {
  local want="$1"
  "$PY" - "$DIR" "$want" <<'PYEOF'
import os, socket, sys

d, want = sys.argv[1], sys.argv[2]
explicit = want.startswith("=")
want = int(want.strip("=")) if want.strip("=") else None
names = ("account", "container", "object")
ports_file = os.path.join(d, "ports")

def bindable(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()

# Reuse the previous layout?
try:
    old = dict(l.strip().split("=", 1) for l in open(ports_file) if "=" in l)
    old = {k: int(v) for k, v in old.items()}
    keys = ("PROXY_PORT", "ACCOUNT_PORT", "CONTAINER_PORT", "OBJECT_PORT", "MEMCACHED_PORT")
    if (all(k in old for k in keys)
            and all(os.path.exists(os.path.join(d, "etc", n + ".ring.gz")) for n in names)
            and (want is None or want == old["PROXY_PORT"])
            and all(bindable(old[k]) for k in keys)):
        sys.exit(0)
except (OSError, ValueError):
    pass

from swift.common.ring import RingBuilder

held, ports = [], []
for _ in range(4):                      # account, container, object, memcached
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    ports.append(s.getsockname()[1])
proxy = None
if want is not None:
    if bindable(want) and want not in ports:
        proxy = want
    elif explicit:
        sys.exit("s3-testbed: port %d is in use" % want)
if proxy is None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    proxy = s.getsockname()[1]
for s in held:
    s.close()

for name, port in zip(names, ports):
    b = RingBuilder(6, 1, 0)            # 64 partitions, 1 replica
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1",
               "port": port, "device": "d1", "weight": 100.0})
    b.rebalance()
    b.get_ring().save(os.path.join(d, "etc", name + ".ring.gz"))

with open(ports_file + ".tmp", "w") as f:
    f.write("PROXY_PORT=%d\nACCOUNT_PORT=%d\nCONTAINER_PORT=%d\n"
            "OBJECT_PORT=%d\nMEMCACHED_PORT=%d\n" % ((proxy,) + tuple(ports)))
os.rename(ports_file + ".tmp", ports_file)
PYEOF
}

write_configs() {
  local user name port
  user=$(id -un)
  for name in "${SERVERS[@]}"; do
    case $name in
      account) port=$ACCOUNT_PORT ;;
      container) port=$CONTAINER_PORT ;;
      object) port=$OBJECT_PORT ;;
    esac
    cat > "$DIR/etc/$name-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
devices = $DIR/srv
mount_check = false
disable_fallocate = true
workers = 0
user = $user
swift_dir = $DIR/etc
log_name = $name-server
log_level = INFO

[pipeline:main]
pipeline = $name-server

[app:$name-server]
use = egg:swift#$name
EOF
  done
  cat > "$DIR/etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PROXY_PORT
workers = 0
user = $user
swift_dir = $DIR/etc
log_name = proxy-server
log_level = INFO

[pipeline:main]
# slo must come after s3api, or multipart uploads silently break
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:s3api]
use = egg:swift#s3api
# the one region accepted in a SigV4 credential scope
location = $REGION
# S3's limit (Swift's default is 1000); parts under 5 MiB but the last are
# refused with EntityTooSmall (min_segment_size, default 5242880)
max_upload_part_num = 10000

[filter:tempauth]
use = egg:swift#tempauth
# S3 access key "test:tester", secret "testing"
user_test_tester = testing .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEMCACHED_PORT

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
EOF
}

# launch NAME CMD...: start in the background, detached from our stdio,
# record the pid.  The swift servers call setsid() themselves; memcached is
# put in a session of its own by setsid(1) (which execs, as we are not a
# process group leader, so $! is memcached itself).
launch() {
  local name="$1"; shift
  setsid "$@" </dev/null >>"$DIR/log/$name.log" 2>&1 &
  echo $! > "$DIR/run/$name.pid"
}

# boot TRY: launch the five processes and wait until ready.  Returns 2 when
# one of them exited (logs kept as *.failed-TRY), 1 on timeout; stops
# whatever it started on failure.
boot() {
  launch memcached memcached -u "$(id -un)" -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 64
  local name
  for name in "${SERVERS[@]}"; do
    launch "$name" "swift-$name-server" "$DIR/etc/$name-server.conf" -v
  done
  # The proxy starts once the backends accept connections.  A proxy up
  # before its account server answers a container request with 404, which
  # s3api turns into NoSuchBucket: a client retrying through a restart
  # would take a store coming back for a bucket that is gone.
  local wait_until=$((SECONDS + 20)) q ready
  while [ $SECONDS -lt $wait_until ]; do
    ready=1
    for q in "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT" "$MEMCACHED_PORT"; do
      { exec 3<>"/dev/tcp/127.0.0.1/$q"; } 2>/dev/null || { ready=0; break; }
      exec 3>&-
    done
    [ $ready = 1 ] && break
    sleep 0.1
  done
  launch proxy swift-proxy-server "$DIR/etc/proxy-server.conf" -v

  # Ready: /healthcheck answers 200 and every backend accepts connections.
  # The loop forks little: it shares two CPUs with four Pythons starting up.
  local deadline=$((SECONDS + 20)) name pid dead=() p up
  while :; do
    for name in memcached account container object proxy; do
      { read -r pid < "$DIR/run/$name.pid"; } 2>/dev/null || pid=x
      alive "$pid" || dead+=("$name")
    done
    if [ "${#dead[@]}" -gt 0 ]; then
      cmd_stop "$DIR" >/dev/null
      for name in "${dead[@]}"; do
        echo "--- $DIR/log/$name.log (last lines)" >&2
        tail -n 20 "$DIR/log/$name.log" >&2 || true
        mv -f "$DIR/log/$name.log" "$DIR/log/$name.log.failed-$1" 2>/dev/null || true
      done
      echo "s3-testbed: failed to start: ${dead[*]} exited" >&2
      return 2
    fi
    if healthy 1; then
      up=1
      for p in "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT" "$MEMCACHED_PORT"; do
        { exec 3<>"/dev/tcp/127.0.0.1/$p"; } 2>/dev/null || { up=0; break; }
        exec 3>&-
      done
      [ $up = 1 ] && break
    fi
    if [ $SECONDS -ge $deadline ]; then
      cmd_stop "$DIR" >/dev/null
      echo "s3-testbed: not ready after 20 s; logs in $DIR/log/" >&2
      return 1
    fi
    sleep 0.1
  done
}

cmd_start() {
  set_dir "$1" create
  local port_arg="${2:-}"
  [ -z "$port_arg" ] || [[ "$port_arg" =~ ^[0-9]+$ ]] || die "PORT must be a number"
  local b
  for b in swift-proxy-server swift-account-server swift-container-server \
           swift-object-server memcached curl; do
    command -v "$b" >/dev/null 2>&1 || die "$b not found; run: $0 install"
  done
  "$PY" -c 'import swift' 2>/dev/null || die "python3-swift missing; run: $0 install"
  [ -r /etc/swift/swift.conf ] || die "/etc/swift/swift.conf missing (package swift); run: $0 install"

  if [ -n "$(running)" ]; then
    if [ -n "${PROXY_PORT:-}" ] && healthy &&
       { [ -z "$port_arg" ] || [ "$port_arg" = "$PROXY_PORT" ]; } &&
       [ "$(running | wc -l)" -eq 5 ]; then
      say "already running at http://127.0.0.1:$PROXY_PORT (logs: $DIR/log/)"
      return 0
    fi
    say "restarting the bed in $DIR"
    cmd_stop "$DIR" >/dev/null
  fi

  mkdir -p "$DIR/etc" "$DIR/srv/d1" "$DIR/log" "$DIR/run"
  check_xattr "$DIR/srv/d1"

  # Keep the previous proxy port when none is given, if it is still free.
  local want=""
  if [ -n "$port_arg" ]; then
    want="=$port_arg"
  elif [ -n "${PROXY_PORT:-}" ]; then
    want="$PROXY_PORT"
  fi
  # A chosen port can be taken by someone else before the server binds it:
  # then try once more with new ones.
  local try rc
  for try in 1 2; do
    make_rings "$want" || exit 1
    load_ports
    want="=$PROXY_PORT"
    [ -n "$port_arg" ] || want="${want#=}"
    write_configs
    rc=0
    boot "$try" || rc=$?
    [ $rc -eq 0 ] && break
    if [ $rc -eq 2 ] && [ "$try" = 1 ]; then
      say "a server failed to start; trying new ports"
      rm -f "$DIR/etc/"*.ring.gz
      continue
    fi
    exit 1
  done
  say "ready at http://127.0.0.1:$PROXY_PORT (access key $ACCESS_KEY, secret $SECRET_KEY, region $REGION)"
  say "logs: $DIR/log/{proxy,account,container,object,memcached}.log; stop: $0 stop $DIR"
}

cmd_env() {
  set_dir "$1" || die "no bed in $1"
  load_ports || die "no bed in $DIR (start it first)"
  cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$PROXY_PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=$REGION
EOF
}

cmd_status() {
  set_dir "$1" || die "no bed in $1"
  load_ports || die "no bed in $DIR"
  local n
  n=$(running | wc -l)
  if [ "$n" -eq 5 ] && healthy; then
    say "running at http://127.0.0.1:$PROXY_PORT"
  else
    say "not running ($n of 5 processes up)"
    return 1
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) { [ $# -ge 2 ] && [ $# -le 3 ]; } || usage; cmd_start "$2" "${3:-}" ;;
  stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  env) [ $# -eq 2 ] || usage; cmd_env "$2" ;;
  status) [ $# -eq 2 ] || usage; cmd_status "$2" ;;
  *) usage ;;
esac
