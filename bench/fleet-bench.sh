#!/usr/bin/env bash
# bench/fleet-bench.sh: what the fleet chain costs next to a direct call.
#
# One synchronous ffprobe job (a 2 s 640x360 clip in the S3 test bed) is
# timed three ways, alternating request by request:
#   direct  POST /exec to a cap-server's own port (plain HTTP)
#   caddy   POST /exec through Caddy with tls internal (HTTPS), standing in
#           for Tailscale Funnel
#   chain   the example pipeline Worker on workerd: registry resolve through
#           the Durable Object, then POST /exec over HTTPS through Caddy
# and the medians, 90th percentiles, overhead over direct (ms) and ratios
# are printed.  The set-up is test/integration/test_fleet.py's: two
# cap-servers registered with heartbeats, Caddy in front of each.
#
# Environment (defaults in brackets)
#   CAP_SERVER_BIN  cap-server binary          [<repo>/build/cap-server]
#   FLEET_RUNS      timed runs per path        [40]
#   FLEET_WARMUP    untimed runs per path      [5]
set -euo pipefail
BENCH_NAME=fleet-bench
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

scripts/setup-deps.sh build test
if [[ -z ${CAP_SERVER_BIN:-} ]]; then
  scripts/build.sh build
  CAP_SERVER_BIN=$PWD/build/cap-server
fi
export CAP_SERVER_BIN PYTHONDONTWRITEBYTECODE=1
log "$BENCH_NAME: $(nproc) cores; $("$CAP_SERVER_BIN" --version)"
exec python3 bench/fleet_bench.py
