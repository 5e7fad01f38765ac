#!/usr/bin/env bash
# Installs the Debian packages cap-server needs, and nothing when they are
# all present already.  Usage: scripts/setup-deps.sh [build|test|bench]...
#   build  compiler, CMake and the libraries (always included)
#   test   what the test suite drives: ffmpeg, curl, python3, clang for
#          the fuzzer and sanitizers, OpenStack Swift with s3api (a real
#          SigV4-verifying S3 server) and awscli as an independent client,
#          jq and openssl (scripts/install.sh), systemd-analyze, dpkg-deb,
#          man and groff (packaging checks), Caddy (the TLS front), Node.js
#          and npm (workerd, the Worker runtime, from packaging/cloudflare),
#          slowhttptest (slow-client attacks on the connection budget),
#          Chromium and a font for it (the player tests drive hls.js and
#          dash.js in headless Chromium through playwright-core, from
#          test/player)
#   bench  wrk, hyperfine, Node.js and npm for the comparison stack
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config libuv1-dev libcjson-dev libcurl4-openssl-dev libsqlite3-dev
            libssl-dev node-llhttp ca-certificates)
run_pkgs=(ffmpeg curl)
test_pkgs=(ffmpeg curl python3 clang libclang-rt-14-dev procps
           swift swift-proxy swift-account swift-container swift-object python3-swift memcached
           awscli attr jq openssl systemd util-linux man-db groff-base caddy nodejs npm
           slowhttptest chromium fonts-liberation)
bench_pkgs=(wrk hyperfine nodejs npm procps curl)

want=("${build_pkgs[@]}" "${run_pkgs[@]}")
want_workerd=0
want_player=0
for set in "$@"; do
  case "$set" in
    build) ;;
    test) want+=("${test_pkgs[@]}"); want_workerd=1; want_player=1 ;;
    bench) want+=("${bench_pkgs[@]}"); want_workerd=1 ;;
    *) echo "setup-deps: unknown set '$set' (build, test, bench)" >&2; exit 2 ;;
  esac
done

install_missing() {
  local missing=() p
  for p in "${want[@]}"; do
    # A package counts as present when dpkg has it installed, whatever its
    # origin (Node.js may come from another repository than Debian's).
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
      missing+=("$p")
    fi
  done
  # npm ships inside some nodejs builds; do not fight them over the name.
  if [[ " ${missing[*]-} " == *" npm "* ]] && command -v npm >/dev/null 2>&1; then
    missing=("${missing[@]/npm}")
  fi
  read -r -a missing <<< "${missing[*]-}"
  [ "${#missing[@]}" -eq 0 ] && return 0

  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-deps: missing packages: ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_missing
# workerd, the Workers runtime the Cloudflare tests and the fleet benchmark
# run on, comes from npm, pinned by packaging/cloudflare/package-lock.json.
if [ "$want_workerd" = 1 ]; then
  "$(dirname "$0")/../packaging/cloudflare/setup.sh"
fi
# hls.js, dash.js and playwright-core (no browser download: it drives the Debian
# chromium above), pinned by test/player/package-lock.json.
if [ "$want_player" = 1 ]; then
  "$(dirname "$0")/../test/player/setup.sh"
fi
