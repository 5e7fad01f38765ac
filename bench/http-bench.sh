#!/usr/bin/env bash
# bench/http-bench.sh: HTTP throughput/latency of cap-server next to the
# "seed stack" (Node + express + express-rate-limit, bench/seed-stack/, the
# server the design article sketches), measured in the same run, side by side.
#
# What it does
#   1. installs what it needs: wrk (apt-get, quietly) if missing, npm if missing,
#      and the seed stack's node_modules (`npm ci` from the committed
#      package-lock.json; skipped when already installed from the same lock);
#   2. starts cap-server ($CAP_SERVER_BIN, default build/cap-server) and the seed
#      stack on free loopback ports with the same random token;
#   3. checks correctness with curl before measuring (GET /health -> 200 and the
#      health JSON; POST /exec without Authorization -> 401
#      {"error":"Unauthorized","code":"unauthorized"}; with the token -> not 401);
#   4. warms both up (wrk with a status-counting Lua hook, so a wrong status such
#      as 429 during the warm-up is reported);
#   5. runs wrk --latency against GET /health (bench/health.lua) and against
#      unauthenticated POST /exec with a JSON body (bench/exec-unauth.lua) at each
#      connection count, REPEAT times, alternating the two servers run by run
#      (odd repeats cap-server first, even repeats seed first), and prints the
#      medians (req/s, p50, p99) and the cap-server / seed req/s ratio;
#   6. prints errors seen by wrk (socket errors; responses with an unexpected
#      status class: any non-2xx on /health, any 2xx/3xx on /exec, where wrk's
#      "Non-2xx or 3xx responses" line is expected to count every request), and
#      VmRSS / VmHWM of both servers after start and after the load;
#   7. stops both servers on exit (trap), also on Ctrl-C / errors.
#
# Rate limiting: both servers enforce their /exec per-client rate limit as in
# production, but with a limit so high (RATE_LIMIT, default 100000000 per minute,
# cap-server --rate-limit, express-rate-limit `limit`) that it never rejects: both
# do the bookkeeping work on every /exec request and neither answers 429. The
# warm-up status counts verify that.
#
# CPU pinning: the bench machine may have only 2 cores, and wrk and the server
# compete for them. When at least 2 CPUs are available (PIN=auto, the default),
# each server runs pinned to SERVER_CPUS (default: CPU 0) and wrk to WRK_CPUS
# (default: CPU 1), identically for both stacks, so the load generator never
# steals the server's core and each server gets exactly one core (cap-server is
# a single libuv loop; node runs JS on one thread, its helper threads - GC,
# libuv pool - share the same pinned core). Only one server is under load at a
# time; the other sits idle. PIN=0 disables pinning.
#
# Environment
#   CAP_SERVER_BIN   cap-server binary            (default: <repo>/build/cap-server)
#   BASELINE_BIN     another cap-server binary (say, a build of the previous
#                    commit) to run in the seed stack's place: the "seed"
#                    columns and the ratio then compare two builds
#   BENCH_DURATION   seconds per measured wrk run (default: 10; "10s" also accepted)
#   REPEAT           measured runs per cell; medians are reported (default: 3)
#   CONNECTIONS      connection counts            (default: "64 256")
#   WRK_THREADS      wrk threads                  (default: 2)
#   WRK_TIMEOUT      wrk --timeout in seconds     (default: 10; wrk's own default of
#                    2 s drops slower responses from the latency percentiles and
#                    counts them as socket "timeout" errors instead)
#   WARMUP_DURATION  seconds of warm-up per server and route (default: 5)
#   RATE_LIMIT       /exec limit per minute for both servers (default: 100000000)
#   PIN              auto | 0                     (default: auto)
#   SERVER_CPUS, WRK_CPUS   taskset CPU lists     (default: 0 and 1)
#   OUT_DIR          where raw wrk outputs and summary.txt go
#                    (default: bench/results/<UTC timestamp>/, git-ignored)
#
# Usage: bench/http-bench.sh            (from anywhere; needs no build step)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
SEED_DIR=$BENCH_DIR/seed-stack

CAP_SERVER_BIN=${CAP_SERVER_BIN:-$REPO_DIR/build/cap-server}
BENCH_DURATION=${BENCH_DURATION:-10}
BENCH_DURATION=${BENCH_DURATION%s}
REPEAT=${REPEAT:-3}
CONNECTIONS=${CONNECTIONS:-"64 256"}
WRK_THREADS=${WRK_THREADS:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-10}
WRK_TIMEOUT=${WRK_TIMEOUT%s}
WARMUP_DURATION=${WARMUP_DURATION:-5}
WARMUP_DURATION=${WARMUP_DURATION%s}
RATE_LIMIT=${RATE_LIMIT:-100000000}
PIN=${PIN:-auto}
SERVER_CPUS=${SERVER_CPUS:-0}
WRK_CPUS=${WRK_CPUS:-1}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)}

UNAUTH_BODY='{"error":"Unauthorized","code":"unauthorized"}'
HEALTH_RE='^\{"status":"ok","capabilities":\["ffmpeg-render","ffprobe"\],"version":"[^"]+","uptime_s":[0-9]+(,.*)?\}$'
EXEC_JSON='{"capability":"ffmpeg-render","input_key":"uploads/raw.mp4","output_key":"renders/final.mp4","preset":"1080p"}'

BENCH_NAME=http-bench
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in BENCH_DURATION REPEAT WRK_THREADS WRK_TIMEOUT WARMUP_DURATION RATE_LIMIT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "$v must be a positive integer (got '${!v}')"
done
for c in $CONNECTIONS; do
  [[ $c =~ ^[0-9]+$ && $c -ge $WRK_THREADS ]] || die "CONNECTIONS: '$c' must be an integer >= WRK_THREADS"
done

# ---------------------------------------------------------------- processes ---
CAP_PID=""
SEED_PID=""
WRK_PID=""


cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$WRK_PID" wrk
  stop_pid "$CAP_PID" cap-server
  stop_pid "$SEED_PID" seed-stack
  wait 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'log "http-bench: interrupted"; exit 130' INT TERM

# -------------------------------------------------------------------- tools ---

command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
if [[ $PIN != 0 ]] && ! command -v taskset >/dev/null; then apt_install util-linux; fi

BASELINE_BIN=${BASELINE_BIN:-}
# Seed stack dependencies: npm ci from the lock file, once per lock-file content.
[[ -n $BASELINE_BIN ]] || {
LOCK_SUM=$(sha256sum "$SEED_DIR/package-lock.json" | cut -d' ' -f1)
STAMP=$SEED_DIR/node_modules/.http-bench-lock.sha256
if [[ ! -f $STAMP || $(cat "$STAMP") != "$LOCK_SUM" ]]; then
  log "http-bench: installing seed-stack dependencies (npm ci)"
  (cd "$SEED_DIR" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >&2) \
    || die "npm ci failed in $SEED_DIR"
  printf '%s\n' "$LOCK_SUM" >"$STAMP"
fi
}

[[ -x $CAP_SERVER_BIN ]] || die "cap-server binary not found or not executable: $CAP_SERVER_BIN (build it, or set CAP_SERVER_BIN)"

# ------------------------------------------------------------------ pinning ---
NCPU=$(nproc)
if [[ $PIN == auto && $NCPU -ge 2 ]]; then
  SRV_PIN=(taskset -c "$SERVER_CPUS")
  WRK_PIN=(taskset -c "$WRK_CPUS")
  PIN_DESC="servers on CPU $SERVER_CPUS, wrk on CPU $WRK_CPUS (taskset)"
else
  SRV_PIN=()
  WRK_PIN=()
  PIN_DESC="none ($NCPU CPU(s) available, PIN=$PIN)"
fi

# -------------------------------------------------------------------- ports ---
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' && return
  fi
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    [[ -z $(ss -Htln "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return; }
  done
}

mkdir -p "$OUT_DIR/raw"
CAP_PORT=$(free_port)
SEED_PORT=$(free_port)
while [[ $SEED_PORT == "$CAP_PORT" ]]; do SEED_PORT=$(free_port); done
CAP_URL=http://127.0.0.1:$CAP_PORT
SEED_URL=http://127.0.0.1:$SEED_PORT
TOKEN=bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# Drop CAP_* settings inherited from the caller's environment so that only the
# flags below configure cap-server (CAP_SERVER_BIN is ours, not the server's).
ENV_CLEAN=(env)
while IFS= read -r v; do ENV_CLEAN+=(-u "$v"); done < <(compgen -e | grep '^CAP_' || true)

# ------------------------------------------------------------------ servers ---
wait_ready() { # pid url name
  local pid=$1 url=$2 name=$3 i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || die "$name exited during start-up (see $OUT_DIR/$name.stderr): $(tail -n 3 "$OUT_DIR/$name.stderr" 2>/dev/null)"
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/health" 2>/dev/null) == 200 ]] && return 0
    sleep 0.1
  done
  die "$name did not answer GET /health with 200 within 10 s"
}

"${ENV_CLEAN[@]}" CAPABILITY_TOKEN="$TOKEN" "${SRV_PIN[@]}" "$CAP_SERVER_BIN" \
  --port "$CAP_PORT" --host 127.0.0.1 --log-file /dev/null --rate-limit "$RATE_LIMIT" \
  >"$OUT_DIR/cap-server.stdout" 2>"$OUT_DIR/cap-server.stderr" &
CAP_PID=$!
if [[ -n $BASELINE_BIN ]]; then
  # Another build of cap-server (an earlier commit) in the seed stack's seat.
  "${ENV_CLEAN[@]}" CAPABILITY_TOKEN="$TOKEN" "${SRV_PIN[@]}" "$BASELINE_BIN" \
    --port "$SEED_PORT" --host 127.0.0.1 --log-file /dev/null --rate-limit "$RATE_LIMIT" \
    >"$OUT_DIR/seed-stack.stdout" 2>"$OUT_DIR/seed-stack.stderr" &
else
  (cd "$SEED_DIR" && exec "${ENV_CLEAN[@]}" NODE_ENV=production CAPABILITY_TOKEN="$TOKEN" "${SRV_PIN[@]}" \
    node capability-server.js --port "$SEED_PORT" --host 127.0.0.1 --rate-limit "$RATE_LIMIT") \
    >"$OUT_DIR/seed-stack.stdout" 2>"$OUT_DIR/seed-stack.stderr" &
fi
SEED_PID=$!
wait_ready "$CAP_PID" "$CAP_URL" cap-server
wait_ready "$SEED_PID" "$SEED_URL" seed-stack

proc_kb() { # pid field -> kB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"
}
CAP_RSS_START=$(proc_kb "$CAP_PID" VmRSS)
SEED_RSS_START=$(proc_kb "$SEED_PID" VmRSS)

# -------------------------------------------------------------- correctness ---
WARN=()
NOTES=()
CHECK_FAIL=0
check() { # name url
  local name=$1 url=$2 body code
  body=$(curl -s --max-time 5 -w '\n%{http_code}' "$url/health")
  code=${body##*$'\n'}; body=${body%$'\n'*}
  if [[ $code == 200 && $body =~ $HEALTH_RE ]]; then
    log "  $name GET /health                -> $code $body"
  elif [[ $code == 200 && $body == *'"status":"ok"'* ]]; then
    log "  $name GET /health                -> $code $body   (warning: not exactly the contract's JSON)"
    WARN+=("$name GET /health body is not exactly the contract's shape: $body")
  else
    log "  $name GET /health                -> $code $body   ** expected 200 and the health JSON"
    CHECK_FAIL=1
  fi
  body=$(curl -s --max-time 5 -D "$OUT_DIR/$name.401-headers" -w '\n%{http_code}' -X POST \
    -H 'Content-Type: application/json' --data "$EXEC_JSON" "$url/exec")
  code=${body##*$'\n'}; body=${body%$'\n'*}
  if [[ $code == 401 && $body == "$UNAUTH_BODY" ]]; then
    log "  $name POST /exec (no token)      -> $code $body"
    if grep -qi '^connection: *close' "$OUT_DIR/$name.401-headers"; then
      NOTES+=("$name closes the connection after the unauthenticated 401 (Connection: close), so wrk opens a new TCP connection for every POST /exec request to it")
    else
      NOTES+=("$name keeps the connection alive after the unauthenticated 401 (the POST /exec runs reuse connections)")
    fi
  else
    log "  $name POST /exec (no token)      -> $code $body   ** expected 401 $UNAUTH_BODY"
    CHECK_FAIL=1
  fi
  code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $TOKEN" --data "$EXEC_JSON" "$url/exec")
  if [[ $code != 401 && $code != 429 && $code != 000 ]]; then
    log "  $name POST /exec (valid token)   -> $code (token accepted)"
  else
    log "  $name POST /exec (valid token)   -> $code   ** the valid token was not accepted"
    CHECK_FAIL=1
  fi
}
log "http-bench: correctness checks"
check cap-server "$CAP_URL"
check seed-stack "$SEED_URL"
[[ $CHECK_FAIL == 0 ]] || die "correctness checks failed; not measuring"

# --------------------------------------------------------------------- wrk ---
ROUTES=(health exec)
declare -A ROUTE_NAME=([health]="GET /health" [exec]="POST /exec 401")
declare -A ROUTE_PATH=([health]=/health [exec]=/exec)
declare -A ROUTE_LUA=([health]=$BENCH_DIR/health.lua [exec]=$BENCH_DIR/exec-unauth.lua)
declare -A ROUTE_STATUS=([health]=200 [exec]=401)
SERVERS=(cap seed)
declare -A SRV_URL=([cap]=$CAP_URL [seed]=$SEED_URL)
declare -A SRV_PIDS=([cap]=$CAP_PID [seed]=$SEED_PID)
declare -A SRV_NAME=([cap]=cap-server [seed]=seed-stack)

run_wrk() { # out-file count-status(0/1) args...
  local out=$1 count=$2
  shift 2
  BENCH_DIR=$BENCH_DIR BENCH_COUNT_STATUS=$count "${WRK_PIN[@]}" wrk --timeout "${WRK_TIMEOUT}s" "$@" >"$out" 2>&1 &
  WRK_PID=$!
  local rc=0
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  return "$rc"
}

alive_or_die() { # srv
  kill -0 "${SRV_PIDS[$1]}" 2>/dev/null \
    || die "${SRV_NAME[$1]} died under load (see $OUT_DIR/${SRV_NAME[$1]}.stderr): $(tail -n 3 "$OUT_DIR/${SRV_NAME[$1]}.stderr" 2>/dev/null)"
}

# Warm-up: JIT for node, page faults / allocator pools for both. Counts statuses.
log "http-bench: warm-up (${WARMUP_DURATION}s per server and route, ${WRK_THREADS} threads, 64 connections)"
for srv in "${SERVERS[@]}"; do
  for route in "${ROUTES[@]}"; do
    f=$OUT_DIR/raw/warmup-$route-$srv.txt
    run_wrk "$f" 1 -t"$WRK_THREADS" -c64 -d"${WARMUP_DURATION}s" --latency \
      -s "${ROUTE_LUA[$route]}" "${SRV_URL[$srv]}${ROUTE_PATH[$route]}" \
      || die "wrk failed (warm-up ${SRV_NAME[$srv]} $route): $(tail -n 5 "$f")"
    alive_or_die "$srv"
    counts=$(awk '/^STATUS_COUNTS/ { $1 = ""; sub(/^ /, ""); print }' "$f")
    log "  ${SRV_NAME[$srv]} ${ROUTE_NAME[$route]}: statuses ${counts:-none}"
    for kv in $counts; do
      [[ ${kv%%=*} == "${ROUTE_STATUS[$route]}" ]] \
        || WARN+=("warm-up: ${SRV_NAME[$srv]} ${ROUTE_NAME[$route]} answered status ${kv%%=*} ${kv#*=} times (expected only ${ROUTE_STATUS[$route]})")
    done
  done
done

# wrk duration string -> milliseconds
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v == "") { print ""; exit }
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000
    printf "%.3f", n }'
}

median() { # values...
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) { print ""; exit }
    if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

declare -A RPS P50 P99 REQS NON2XX SOCKERR
TOTAL_RUNS=$((REPEAT * ${#ROUTES[@]} * $(wc -w <<<"$CONNECTIONS") * ${#SERVERS[@]}))
run_no=0
log "http-bench: measuring (${BENCH_DURATION}s per run, ${REPEAT} repeats, $TOTAL_RUNS runs, ~$((TOTAL_RUNS * (BENCH_DURATION + 1))) s)"
for ((rep = 1; rep <= REPEAT; rep++)); do
  # Alternate which server goes first in each pair, so neither always runs
  # right after the other's load (or always first) in every repeat.
  if ((rep % 2)); then ORDER=(cap seed); else ORDER=(seed cap); fi
  for route in "${ROUTES[@]}"; do
    for c in $CONNECTIONS; do
      for srv in "${ORDER[@]}"; do
        run_no=$((run_no + 1))
        key=$route/$c/$srv
        f=$OUT_DIR/raw/$route-c$c-$srv-r$rep.txt
        run_wrk "$f" 0 -t"$WRK_THREADS" -c"$c" -d"${BENCH_DURATION}s" --latency \
          -s "${ROUTE_LUA[$route]}" "${SRV_URL[$srv]}${ROUTE_PATH[$route]}" \
          || die "wrk failed (${SRV_NAME[$srv]} $route c=$c): $(tail -n 5 "$f")"
        alive_or_die "$srv"
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
        reqs=$(awk '/ requests in / { print $1 }' "$f")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
        sock=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$f")
        [[ -n $rps && -n $p50 && -n $p99 && -n $reqs ]] || die "could not parse wrk output $f"
        RPS[$key]+="$rps "
        P50[$key]+="$p50 "
        P99[$key]+="$p99 "
        REQS[$key]=$(( ${REQS[$key]:-0} + reqs ))
        NON2XX[$key]=$(( ${NON2XX[$key]:-0} + ${non2xx:-0} ))
        SOCKERR[$key]="${SOCKERR[$key]:-}$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' "$f")${sock:+; }"
        log "  [$run_no/$TOTAL_RUNS] rep $rep ${ROUTE_NAME[$route]} c=$c ${SRV_NAME[$srv]}: ${rps} req/s p50 ${p50} ms p99 ${p99} ms${non2xx:+ non-2xx/3xx $non2xx}${sock:+ socket-errors $sock}"
        sleep 1
      done
    done
  done
done

CAP_RSS_LOAD=$(proc_kb "$CAP_PID" VmRSS)
CAP_HWM=$(proc_kb "$CAP_PID" VmHWM)
SEED_RSS_LOAD=$(proc_kb "$SEED_PID" VmRSS)
SEED_HWM=$(proc_kb "$SEED_PID" VmHWM)
sleep 2
CAP_RSS_IDLE2=$(proc_kb "$CAP_PID" VmRSS)
SEED_RSS_IDLE2=$(proc_kb "$SEED_PID" VmRSS)

# ------------------------------------------------------------------- report ---
fmt_ms() { awk -v v="$1" 'BEGIN { if (v < 10) printf "%.2fms", v; else if (v < 100) printf "%.1fms", v; else printf "%.0fms", v }'; }
fmt_rps() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }
mb() { awk -v v="$1" 'BEGIN { if (v ~ /^[0-9]+$/) printf "%.1f MB", v / 1024; else print v }'; }

CAP_VERSION=$("$CAP_SERVER_BIN" --version 2>/dev/null | head -n 1 || echo "?")
EXPRESS_V=$(node -p 'require(process.argv[1]).version' "$SEED_DIR/node_modules/express/package.json" 2>/dev/null || echo "?")
ERL_V=$(node -p 'require(process.argv[1]).version' "$SEED_DIR/node_modules/express-rate-limit/package.json" 2>/dev/null || echo "?")
GIT_REV=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo "no commit")
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo "?")

{
  echo "cap-server HTTP benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "  cap-server : $CAP_VERSION ($CAP_SERVER_BIN, repo $GIT_REV), --log-file /dev/null"
  if [[ -n $BASELINE_BIN ]]; then
    echo "  baseline   : $("$BASELINE_BIN" --version 2>/dev/null | head -n 1) ($BASELINE_BIN) in the \"seed\" columns"
  else
    echo "  seed stack : node $(node --version), express $EXPRESS_V, express-rate-limit $ERL_V (bench/seed-stack, NODE_ENV=production, no request log)"
  fi
  echo "  load       : wrk $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }'), $WRK_THREADS threads, ${BENCH_DURATION}s per run, median of $REPEAT runs, warm-up ${WARMUP_DURATION}s, --timeout ${WRK_TIMEOUT}s"
  echo "  machine    : $CPU_MODEL, $NCPU CPUs; pinning: $PIN_DESC"
  echo "  rate limit : /exec limit set to $RATE_LIMIT/min on BOTH servers (cap-server --rate-limit, express-rate-limit limit):"
  echo "               the limiter runs on every /exec request but never rejects (no 429s)"
  echo "  /exec      : POST with a JSON body, no Authorization -> 401 {\"error\":\"Unauthorized\",\"code\":\"unauthorized\"}"
  echo
  printf '%-16s %5s | %10s %9s %9s | %10s %9s %9s | %9s\n' \
    route conns "cap req/s" "cap p50" "cap p99" "seed req/s" "seed p50" "seed p99" "cap÷seed"
  printf '%s\n' "-----------------------------------------------------------------------------------------------------"
  for route in "${ROUTES[@]}"; do
    for c in $CONNECTIONS; do
      # shellcheck disable=SC2086
      {
        crps=$(median ${RPS[$route/$c/cap]}); cp50=$(median ${P50[$route/$c/cap]}); cp99=$(median ${P99[$route/$c/cap]})
        srps=$(median ${RPS[$route/$c/seed]}); sp50=$(median ${P50[$route/$c/seed]}); sp99=$(median ${P99[$route/$c/seed]})
      }
      ratio=$(awk -v a="$crps" -v b="$srps" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }')
      printf '%-16s %5s | %10s %9s %9s | %10s %9s %9s | %9s\n' "${ROUTE_NAME[$route]}" "$c" \
        "$(fmt_rps "$crps")" "$(fmt_ms "$cp50")" "$(fmt_ms "$cp99")" \
        "$(fmt_rps "$srps")" "$(fmt_ms "$sp50")" "$(fmt_ms "$sp99")" "$ratio"
    done
  done
  echo
  echo "Per-run req/s (all repeats, in run order):"
  for route in "${ROUTES[@]}"; do
    for c in $CONNECTIONS; do
      for srv in "${SERVERS[@]}"; do
        printf '  %-16s c=%-4s %-10s %s\n' "${ROUTE_NAME[$route]}" "$c" "${SRV_NAME[$srv]}" "${RPS[$route/$c/$srv]}"
      done
    done
  done
  echo
  echo "Errors (summed over the $REPEAT measured runs of each cell):"
  errs=0
  for route in "${ROUTES[@]}"; do
    for c in $CONNECTIONS; do
      for srv in "${SERVERS[@]}"; do
        key=$route/$c/$srv
        total=${REQS[$key]}
        non=${NON2XX[$key]}
        if [[ $route == health ]]; then unexpected=$non; what="non-2xx"
        else unexpected=$((total - non)); what="2xx/3xx (expected all 401)"; fi
        sockline=${SOCKERR[$key]}
        line="  ${ROUTE_NAME[$route]} c=$c ${SRV_NAME[$srv]}: $total requests, unexpected $what: $unexpected"
        [[ $route == exec ]] && line+=", Non-2xx or 3xx (expected): $non"
        if [[ -n $sockline ]]; then line+=", socket errors: ${sockline%; }"; errs=1; fi
        [[ $unexpected -gt 0 ]] && errs=1
        echo "$line"
      done
    done
  done
  [[ $errs == 0 ]] && echo "  (no socket errors, no unexpected statuses)"
  if [[ ${#NOTES[@]} -gt 0 ]]; then
    echo
    echo "Notes:"
    printf '  %s\n' "${NOTES[@]}"
  fi
  if [[ ${#WARN[@]} -gt 0 ]]; then
    echo
    echo "Warnings:"
    printf '  %s\n' "${WARN[@]}"
  fi
  echo
  echo "Memory (VmRSS from /proc/<pid>/status):"
  printf '  %-11s after start: %-9s  right after the load: %-9s  2 s later: %-9s  peak (VmHWM): %s\n' \
    cap-server "$(mb "$CAP_RSS_START")" "$(mb "$CAP_RSS_LOAD")" "$(mb "$CAP_RSS_IDLE2")" "$(mb "$CAP_HWM")"
  printf '  %-11s after start: %-9s  right after the load: %-9s  2 s later: %-9s  peak (VmHWM): %s\n' \
    seed-stack "$(mb "$SEED_RSS_START")" "$(mb "$SEED_RSS_LOAD")" "$(mb "$SEED_RSS_IDLE2")" "$(mb "$SEED_HWM")"
  echo
  echo "Raw wrk output: $OUT_DIR/raw/"
} | tee "$OUT_DIR/summary.txt"

# Stop the servers here (not only in the trap) to report how they exited.
stop_pid "$CAP_PID" cap-server
cap_rc=0; wait "$CAP_PID" 2>/dev/null || cap_rc=$?
CAP_PID=""
stop_pid "$SEED_PID" seed-stack
wait "$SEED_PID" 2>/dev/null || true
SEED_PID=""
[[ $cap_rc == 0 ]] || log "http-bench: note: cap-server exited with status $cap_rc after SIGTERM"
if [[ -s $OUT_DIR/cap-server.stderr ]]; then
  log "http-bench: cap-server stderr:"
  sed 's/^/  /' "$OUT_DIR/cap-server.stderr" | head -n 20 >&2
fi
