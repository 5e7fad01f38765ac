#!/usr/bin/env bash
# bench/jobs-bench.sh: what running ffprobe/ffmpeg through cap-server's job
# system costs next to running the same command directly, measured in one run
# on the same machine, with the same input files.
#
# What it measures
#   1. Dispatch overhead: one synchronous ffprobe job (curl POST /exec) against
#      `ffprobe -v error -print_format json -show_format -show_streams FILE` run
#      directly on the same file.  hyperfine (-N, no shell), warm-up runs and
#      DISPATCH_RUNS runs each, in DISPATCH_ROUNDS alternating rounds; the
#      medians and their ratio (goal <= 1.10).
#      `curl GET /health` is timed too, as the cost of a curl process plus one
#      HTTP exchange without a job, to show how much of the gap is the client.
#   2. Throughput: TP_JOBS ffprobe jobs (one per file, TP_JOBS copies of the
#      probe clip) through the server with a cpu pool of POOL_CPU slots, sent by
#      a small Python client that keeps TP_CONC keep-alive connections busy,
#      against `xargs -P POOL_CPU -n1 ffprobe ...` over the same files.
#      TP_REPEAT runs each; jobs/s from the median wall time, and the ratio
#      server / direct (goal >= 0.90).
#   3. Render: one synchronous 1080p render (POST /exec, preset 1080p) of a
#      RENDER_SECONDS s RENDER_SIZE clip against the same ffmpeg command line run
#      directly into a local file, with the exact preset arguments read from
#      packaging/presets.json.  RENDER_RUNS runs each, the medians and their
#      ratio (goal <= 1.03).  The server also runs an ffprobe (duration)
#      before ffmpeg; that is part of what the job costs and is not subtracted.
#   4. Sandbox cost: the job of part 1 (ffprobe through POST /exec, curl) and the
#      render of part 3 (1080p), each sent to two more servers started for this
#      part with the same flags but `--sandbox best-effort` and `--sandbox off`
#      (every child then starts through, or without, the sandbox helper
#      cap-sandbox: Landlock, rlimits, no_new_privs, parent-death signal).  Medians,
#      the difference per job in ms (goal: the sandbox adds <= 2 ms to a job)
#      and the render ratio sandboxed / unsandboxed (goal <= 1.02, i.e.
#      unchanged within noise), plus CPU per job on both.  The two servers
#      alternate round by round like the other parts.  Skipped with a note
#      when the binary has no --sandbox option.
#   5. Cancel to slot free: a server of its own with a cpu pool of one slot
#      runs a CANCEL_PRESET render (4k-h265: libx265 at 2160 lines, the case
#      of issue 11) with an ffprobe job queued behind it; CANCEL_RUNUP_S after
#      the render's ffmpeg started, DELETE /jobs/{id}.  Measured: from the
#      DELETE answer to the queued job reporting "running" (GET /jobs/{id},
#      polled every 2 ms), and from sending the DELETE to the ffmpeg being
#      gone (/proc).  Baseline:
#      the old graceful path, i.e. the same ffmpeg command run directly,
#      SIGTERM after the same CANCEL_RUNUP_S, and the time it takes to exit,
#      capped at CANCEL_GRACE_MS (the old server's SIGKILL; the uncapped
#      wind-down is reported too).  CANCEL_RUNS runs each, alternating;
#      medians and their ratio (goal <= 0.10).  Run it with CAP_SERVER_BIN
#      set to a build from before the change to see the old server itself.
#   6. Journal on vs off (issue 15): two more servers, identical but for
#      `--journal on` / `--journal off`, each with its own data directory
#      holding the same clips (hard links).  (a) Dispatch: POST /exec of an
#      async ffprobe job on a keep-alive connection (journal_bench.py
#      dispatch), the time to the 202 answer (the journal writes the queued
#      row before it), each job awaited before the next, JOURNAL_DISPATCH_RUNS
#      per side in JOURNAL_DISPATCH_ROUNDS alternating rounds; medians and the
#      difference (goal: on - off <= 1 ms).  (b) Throughput: part 2's workload
#      (TP_JOBS ffprobe jobs, TP_CONC connections) on both, TP_REPEAT runs
#      each, alternating; jobs/s and the ratio on/off (goal >= 0.95).  (c)
#      Journal write latency: the journal-on server's cap_journal_write_seconds
#      histogram after (a) and (b), p50 and p99 interpolated within its
#      buckets.  (d) Database size: a fourth server, journal on,
#      --job-ttl-s 3600, --jobs-max 1000000, runs JOURNAL_SIZE_JOBS (100,000)
#      synchronous ffprobe jobs, each with an Idempotency-Key; its --ffprobe is
#      a tiny stub that prints the real ffprobe's JSON for the probe clip
#      (captured at start), so that 100,000 jobs take minutes instead of the
#      hours real ffprobe runs would (every other part of a job is the real
#      server: HTTP, queue, pool, child spawn, journal writes, result JSON of
#      the real size); --sandbox off for the same reason.  The journal's files
#      and rows are sampled every 10%; at the end the server is stopped
#      (checkpoint) and the size at rest is measured, then it is started again
#      on that journal to time loading it.  JOURNAL_SIZE_MAX_S stops the run
#      early; the report then says how many jobs ran and extrapolates
#      linearly (rows do not expire within the 1 h TTL).
#   Server and direct runs alternate round by round (parts 2 and 3: one run
#   per round; part 1: DISPATCH_RUNS / DISPATCH_ROUNDS runs per round), so that
#   background load changing over the minutes hits both sides alike.
#   Before each part the script samples /proc/stat for 1 s and counts other
#   ffmpeg/ffprobe processes; a busy machine is warned about and noted in the
#   report (QUIET_WAIT makes it wait for a calm machine).  After each timed
#   hyperfine call it computes how much CPU other programs used meanwhile
#   (/proc/stat busy time minus the CPU of what was measured and of the
#   server) and, above NOISE_MAX %, makes the call again (NOISE_RETRIES).
#   CPU time per job is reported next to the wall times: for the server the
#   user+system time of the children it reaped (cutime+cstime in
#   /proc/<server>/stat, i.e. the ffprobe/ffmpeg it ran) and its own, for the
#   direct runs hyperfine's user+system.  It shows whether a server-run ffmpeg
#   does more work than a direct one, separately from waiting and scheduling.
#   After each part the server's JSON log is read for where the time went:
#   http.request dur_ms, job.finished dur_ms, queue wait (job.queued ->
#   job.started), the duration-probe phase of renders, and every /exec answer is
#   checked to be 200 / every job to have succeeded.
#
# Environment (defaults in brackets; BENCH_QUICK=1 switches to the values in
# braces, for a smoke run of about a minute)
#   CAP_SERVER_BIN   cap-server binary                 [<repo>/build/cap-server]
#   BENCH_QUICK      1 = quick smoke run               [0]
#   DISPATCH_RUNS    runs per side, part 1             [50] {10}
#   DISPATCH_ROUNDS  ... split into this many rounds   [5]  {2}
#   DISPATCH_WARMUP  warm-up runs per side, part 1     [5]  {2}
#   PROBE_SECONDS    length of the probe clip (s)      [2]
#   PROBE_SIZE       size of the probe clip            [640x360]
#   TP_JOBS          jobs per throughput run           [200] {40}
#   TP_REPEAT        throughput runs per side          [3]   {1}
#   TP_WARMUP        throughput warm-up runs per side  [1]   {0}
#   TP_CONC          client connections, part 2        [4]
#   POOL_CPU         server --pool-cpu and xargs -P    [2]
#   RENDER_SECONDS   length of the render clip (s)     [10]  {3}
#   RENDER_SIZE      size of the render clip           [1280x720]
#   RENDER_RUNS      render runs per side              [5]   {2}
#   RENDER_WARMUP    render warm-up runs per side      [1]   {0}
#   SANDBOX_RUNS     ffprobe jobs per side, part 4     [40]  {10}
#   SANDBOX_ROUNDS   ... split into this many rounds   [4]   {2}
#   SANDBOX_RENDER_RUNS  renders per side, part 4      [3]   {1}
#   CANCEL_PRESET    preset of the canceled render     [4k-h265]
#   CANCEL_RUNS      cancels per side, part 5          [5]   {2}
#   CANCEL_RUNUP_S   how long the render runs first    [3]
#   CANCEL_GRACE_MS  the baseline's cap (the old cancel_grace_ms default) [5000]
#   JOURNAL_DISPATCH_RUNS   async dispatches per side, part 6  [200] {40}
#   JOURNAL_DISPATCH_ROUNDS ... split into this many rounds    [10]  {2}
#   JOURNAL_SIZE_JOBS       jobs for the database size, part 6 [100000] {5000}
#   JOURNAL_SIZE_CONC       client connections for it          [8]
#   JOURNAL_SIZE_POOL       that server's --pool-cpu           [4]
#   JOURNAL_SIZE_MAX_S      stop it after this many seconds    [2400] {300}
#   BENCH_PARTS      which parts to run                ["1 2 3 4 5 6"]
#   OUT_DIR          hyperfine JSON exports, server log, summary.txt
#                    [bench/results/jobs-<UTC timestamp>/, git-ignored]
#   KEEP_TMP         1 = keep the temporary data dir   [0]
#   QUIET_WAIT       on a shared machine: before each part and each round of
#                    parts 2-3, wait up to this many seconds for the other
#                    programs to calm down (< 10% CPU busy over 0.5 s and no
#                    foreign ffmpeg/ffprobe); 0 = do not wait   [0]
#   NOISE_MAX        a timed hyperfine call during which other programs used
#                    more than this % of the CPUs is run again ...   [10]
#   NOISE_RETRIES    ... at most this many times (then kept, and counted) [2]
#
# Usage: bench/jobs-bench.sh            (from anywhere; needs no build step)
#        BENCH_QUICK=1 bench/jobs-bench.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
PRESETS_JSON=$REPO_DIR/packaging/presets.json

CAP_SERVER_BIN=${CAP_SERVER_BIN:-$REPO_DIR/build/cap-server}
BENCH_QUICK=${BENCH_QUICK:-0}
if [[ $BENCH_QUICK == 1 ]]; then
  q() { printf '%s' "$2"; }
else
  q() { printf '%s' "$1"; }
fi
DISPATCH_RUNS=${DISPATCH_RUNS:-$(q 50 10)}
DISPATCH_WARMUP=${DISPATCH_WARMUP:-$(q 5 2)}
DISPATCH_ROUNDS=${DISPATCH_ROUNDS:-$(q 5 2)}
PROBE_SECONDS=${PROBE_SECONDS:-2}
PROBE_SIZE=${PROBE_SIZE:-640x360}
TP_JOBS=${TP_JOBS:-$(q 200 40)}
TP_REPEAT=${TP_REPEAT:-$(q 3 1)}
TP_WARMUP=${TP_WARMUP:-$(q 1 0)}
TP_CONC=${TP_CONC:-4}
POOL_CPU=${POOL_CPU:-2}
RENDER_SECONDS=${RENDER_SECONDS:-$(q 10 3)}
RENDER_SIZE=${RENDER_SIZE:-1280x720}
RENDER_RUNS=${RENDER_RUNS:-$(q 5 2)}
RENDER_WARMUP=${RENDER_WARMUP:-$(q 1 0)}
SANDBOX_RUNS=${SANDBOX_RUNS:-$(q 40 10)}
SANDBOX_ROUNDS=${SANDBOX_ROUNDS:-$(q 4 2)}
SANDBOX_RENDER_RUNS=${SANDBOX_RENDER_RUNS:-$(q 3 1)}
CANCEL_PRESET=${CANCEL_PRESET:-4k-h265}
CANCEL_RUNS=${CANCEL_RUNS:-$(q 5 2)}
CANCEL_RUNUP_S=${CANCEL_RUNUP_S:-3}
CANCEL_GRACE_MS=${CANCEL_GRACE_MS:-5000}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/results/jobs-$(date -u +%Y%m%dT%H%M%SZ)}
KEEP_TMP=${KEEP_TMP:-0}
BENCH_PARTS_GIVEN=${BENCH_PARTS+1}
BENCH_PARTS=${BENCH_PARTS:-1 2 3 4 5 6}
JOURNAL_DISPATCH_RUNS=${JOURNAL_DISPATCH_RUNS:-$(q 200 40)}
JOURNAL_DISPATCH_ROUNDS=${JOURNAL_DISPATCH_ROUNDS:-$(q 10 2)}
JOURNAL_SIZE_JOBS=${JOURNAL_SIZE_JOBS:-$(q 100000 5000)}
JOURNAL_SIZE_CONC=${JOURNAL_SIZE_CONC:-8}
JOURNAL_SIZE_POOL=${JOURNAL_SIZE_POOL:-4}
JOURNAL_SIZE_MAX_S=${JOURNAL_SIZE_MAX_S:-$(q 2400 300)}
QUIET_WAIT=${QUIET_WAIT:-0}
NOISE_MAX=${NOISE_MAX:-10}
NOISE_RETRIES=${NOISE_RETRIES:-2}

BENCH_NAME=jobs-bench
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in DISPATCH_RUNS DISPATCH_ROUNDS PROBE_SECONDS TP_JOBS TP_REPEAT TP_CONC POOL_CPU RENDER_SECONDS RENDER_RUNS \
  SANDBOX_RUNS SANDBOX_ROUNDS SANDBOX_RENDER_RUNS CANCEL_RUNS CANCEL_RUNUP_S CANCEL_GRACE_MS \
  JOURNAL_DISPATCH_RUNS JOURNAL_DISPATCH_ROUNDS JOURNAL_SIZE_JOBS JOURNAL_SIZE_CONC JOURNAL_SIZE_POOL \
  JOURNAL_SIZE_MAX_S; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "$v must be a positive integer (got '${!v}')"
done
for v in DISPATCH_WARMUP TP_WARMUP RENDER_WARMUP QUIET_WAIT NOISE_MAX NOISE_RETRIES; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
for v in PROBE_SIZE RENDER_SIZE; do
  [[ ${!v} =~ ^[0-9]+x[0-9]+$ ]] || die "$v must look like WIDTHxHEIGHT (got '${!v}')"
done
# Runs per round, rounded up so that at least DISPATCH_RUNS runs are made.
D_PER_ROUND=$(((DISPATCH_RUNS + DISPATCH_ROUNDS - 1) / DISPATCH_ROUNDS))
DISPATCH_RUNS=$((D_PER_ROUND * DISPATCH_ROUNDS))
S_PER_ROUND=$(((SANDBOX_RUNS + SANDBOX_ROUNDS - 1) / SANDBOX_ROUNDS))
SANDBOX_RUNS=$((S_PER_ROUND * SANDBOX_ROUNDS))
for p in $BENCH_PARTS; do [[ $p == [123456] ]] || die "BENCH_PARTS: '$p' is not one of 1 2 3 4 5 6"; done
[[ -n ${BENCH_PARTS// /} ]] || die "BENCH_PARTS is empty"
want() { [[ " $BENCH_PARTS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- processes ---
CAP_PID=""
SB_ON_PID=""
SB_OFF_PID=""
CANCEL_SRV_PID=""
J_ON_PID=""
J_OFF_PID=""
J_SIZE_PID=""
# Every cap-server this script runs: their CPU is not "other programs".
SRV_PIDS=()
TMP=""


cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$SB_ON_PID" "cap-server (sandbox on)"
  stop_pid "$SB_OFF_PID" "cap-server (sandbox off)"
  stop_pid "$CANCEL_SRV_PID" "cap-server (pool of 1)"
  stop_pid "$J_ON_PID" "cap-server (journal on)"
  stop_pid "$J_OFF_PID" "cap-server (journal off)"
  stop_pid "$J_SIZE_PID" "cap-server (journal size)"
  stop_pid "$CAP_PID" cap-server
  wait 2>/dev/null || true
  if [[ -n $TMP && -d $TMP ]]; then
    # Keep the server log next to the results; the clips are not worth keeping.
    [[ -f $TMP/server.log && -d $OUT_DIR ]] && cp "$TMP/server.log" "$OUT_DIR/server.log" 2>/dev/null
    for f in "$TMP"/server-sandbox-*.log "$TMP"/server-cancel.log "$TMP"/server-journal-*.log; do
      [[ -f $f && -d $OUT_DIR ]] && cp "$f" "$OUT_DIR/" 2>/dev/null
    done
    if [[ $KEEP_TMP == 1 ]]; then log "jobs-bench: kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "jobs-bench: interrupted"; exit 130' INT TERM

# -------------------------------------------------------------------- tools ---

command -v hyperfine >/dev/null || apt_install hyperfine
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || apt_install python3
command -v xargs >/dev/null || apt_install findutils
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then apt_install ffmpeg; fi

[[ -x $CAP_SERVER_BIN ]] || die "cap-server binary not found or not executable: $CAP_SERVER_BIN (build it, or set CAP_SERVER_BIN)"
[[ -f $PRESETS_JSON ]] || die "presets file not found: $PRESETS_JSON"
SANDBOX_NOTE=""
if want 4 && ! "$CAP_SERVER_BIN" --help 2>/dev/null | grep -q -- '--sandbox '; then
  [[ -z $BENCH_PARTS_GIVEN ]] || die "BENCH_PARTS has 4 but $CAP_SERVER_BIN has no --sandbox option"
  SANDBOX_NOTE="part 4 (sandbox on/off) skipped: $CAP_SERVER_BIN has no --sandbox option"
  log "jobs-bench: $SANDBOX_NOTE"
  BENCH_PARTS=${BENCH_PARTS//4/}
fi
JOURNAL_NOTE=""
if want 6 && ! "$CAP_SERVER_BIN" --help 2>/dev/null | grep -q -- '--journal '; then
  [[ -z $BENCH_PARTS_GIVEN ]] || die "BENCH_PARTS has 6 but $CAP_SERVER_BIN has no --journal option"
  JOURNAL_NOTE="part 6 (journal on/off) skipped: $CAP_SERVER_BIN has no --journal option"
  log "jobs-bench: $JOURNAL_NOTE"
  BENCH_PARTS=${BENCH_PARTS//6/}
fi

FFMPEG=$(command -v ffmpeg)
FFPROBE=$(command -v ffprobe)
CURL=$(command -v curl)
PYTHON=$(command -v python3)

mkdir -p "$OUT_DIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jobs-bench.XXXXXX")
DATA=$TMP/data
mkdir -p "$DATA/uploads/tp" "$DATA/renders" "$TMP/direct"
SERVER_LOG=$TMP/server.log

# ------------------------------------------------------------------ helpers ---
# One Python file for the throughput client, hyperfine JSON and the server log.
HELPER=$TMP/helper.py
cat >"$HELPER" <<'PY'
import http.client, json, statistics, sys, threading

def client(port, token_file, n, conc, prefix):
    """Sends n synchronous ffprobe jobs (keys prefix%04d.mp4) over conc keep-alive
    connections; exits 1 unless every answer is 200 with status succeeded."""
    port, n, conc = int(port), int(n), int(conc)
    token = open(token_file).read().strip()
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    lock = threading.Lock()
    state = {"next": 0, "bad": []}

    def worker():
        conn = None
        while True:
            with lock:
                i = state["next"]
                if i >= n:
                    break
                state["next"] = i + 1
            body = json.dumps({"capability": "ffprobe", "input_key": "%s%04d.mp4" % (prefix, i)})
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                conn.request("POST", "/exec", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200 or json.loads(data).get("status") != "succeeded":
                    with lock:
                        state["bad"].append("job %d: HTTP %d %s" % (i, resp.status, data[:200]))
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close(); conn = None
            except Exception as e:  # noqa: BLE001 - any failure is reported
                with lock:
                    state["bad"].append("job %d: %r" % (i, e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads: t.start()
    for t in threads: t.join()
    if state["bad"]:
        sys.stderr.write("jobs-bench client: %d of %d jobs failed, first: %s\n"
                         % (len(state["bad"]), n, state["bad"][0]))
        sys.exit(1)

def medians(path):
    """One line per hyperfine result: median mean stddev min max (seconds)."""
    for r in json.load(open(path))["results"]:
        print("%.6f %.6f %.6f %.6f %.6f" % (r["median"], r["mean"], r["stddev"] or 0.0, r["min"], r["max"]))

def merge(*paths):
    """Times of the first result of every file together: median mean stddev min max (s)."""
    ts = []
    for p in paths:
        ts.extend(json.load(open(p))["results"][0]["times"])
    sd = statistics.stdev(ts) if len(ts) > 1 else 0.0
    print("%.6f %.6f %.6f %.6f %.6f" % (statistics.median(ts), statistics.mean(ts), sd, min(ts), max(ts)))

def cpu(*paths):
    """Median over files of user+system of the first result (s), for 1-run files."""
    xs = []
    for p in paths:
        r = json.load(open(p))["results"][0]
        xs.append(r["user"] + r["system"])
    print("%.6f" % statistics.median(xs))

def usedcpu(path):
    """CPU time (ms) of everything the hyperfine call ran: mean user+system x runs."""
    r = json.load(open(path))["results"][0]
    print("%.0f" % ((r["user"] + r["system"]) * len(r["times"]) * 1000))

def ts_ms(ts):
    # 2026-11-25T15:16:29.123Z -> ms since midnight-ish epoch (only differences used)
    from datetime import datetime, timezone
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1000.0

def med(xs):
    return statistics.median(xs) if xs else float("nan")

def logstats(path, first, last, expect):
    """Summarises log lines first..last (1-based, inclusive): /exec statuses,
    http.request and job.finished dur_ms, queue waits, render phases.  Prints
    key=value lines.  Exits 1 if an /exec answer was not 200, a job did not
    succeed, or the number of /exec requests differs from expect."""
    first, last, expect = int(first), int(last), int(expect)
    lines = open(path).read().splitlines()[first - 1:last]
    http_dur, job_dur, statuses, bad = [], [], {}, []
    queued, started_probe, started_ff, finished = {}, {}, {}, {}
    http_by_req, job_req = {}, {}
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            bad.append("unparsable log line: " + line[:120]); continue
        ev = e.get("event")
        if ev == "http.request" and e.get("path") == "/exec":
            statuses[e["status"]] = statuses.get(e["status"], 0) + 1
            http_dur.append(e["dur_ms"])
            http_by_req[e["req_id"]] = e["dur_ms"]
        elif ev == "job.queued":
            queued[e["job_id"]] = ts_ms(e["ts"])
            job_req[e["job_id"]] = e.get("req_id")
        elif ev == "job.started":
            if e.get("phase") == "render":
                started_ff[e["job_id"]] = ts_ms(e["ts"])
            else:
                started_probe[e["job_id"]] = ts_ms(e["ts"])
        elif ev == "job.finished":
            finished[e["job_id"]] = ts_ms(e["ts"])
            job_dur.append(e["dur_ms"])
            if e.get("state") != "succeeded":
                bad.append("job %s finished %s" % (e["job_id"], e.get("state")))
        elif e.get("level") in ("warn", "error"):
            bad.append("log %s: %s" % (e.get("level"), line[:200]))
    n = sum(statuses.values())
    if any(s != 200 for s in statuses):
        bad.append("/exec statuses %s" % statuses)
    if n != expect:
        bad.append("expected %d /exec requests in the log, saw %d" % (expect, n))
    waits = [started_probe[j] - queued[j] for j in queued if j in started_probe]
    probe_phase = [started_ff[j] - started_probe[j] for j in started_ff if j in started_probe]
    ff_phase = [finished[j] - started_ff[j] for j in started_ff if j in finished]
    # Renders: what the request took beyond ffmpeg's own run (queueing, the
    # duration probe, storing the output, answering), per job.
    around = [http_by_req[job_req[j]] - (finished[j] - started_ff[j])
              for j in started_ff if j in finished and job_req.get(j) in http_by_req]
    busy = sum(job_dur)
    span = (max(finished.values()) - min(queued.values())) if finished and queued else float("nan")
    print("requests=%d" % n)
    print("http_ms=%.1f" % med(http_dur))
    print("job_ms=%.1f" % med(job_dur))
    print("wait_ms=%.1f" % med(waits))
    print("probe_phase_ms=%.1f" % med(probe_phase))
    print("ffmpeg_phase_ms=%.1f" % med(ff_phase))
    print("around_ms=%.1f" % med(around))
    print("busy_ms=%.0f" % busy)
    print("span_ms=%.0f" % span)
    for b in bad[:5]:
        sys.stderr.write("jobs-bench: server log: %s\n" % b)
    sys.exit(1 if bad else 0)

def sandboxinfo(path, want):
    """How many children the server's log shows started with and without the
    sandbox (job.started "sandbox"); exits 1 unless every one matches want
    (true or false), so that part 4 compares what it says it compares."""
    counts = {}
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "job.started":
            k = "sandboxed" if e.get("sandbox") else "unsandboxed"
            counts[k] = counts.get(k, 0) + 1
    print(", ".join("%d %s" % (v, k) for k, v in sorted(counts.items())) or "no job.started lines")
    other = "unsandboxed" if want == "true" else "sandboxed"
    sys.exit(1 if counts.get(other) or not counts else 0)

def cancel(port, token_file, log_path, server_pid, preset, runs, runup_s, cap_ms, argv_file, out):
    """Part 5: runs times each, alternating, (a) on the server: a render job
    with preset and an ffprobe job queued behind it (one slot), DELETE of
    the render runup_s after its ffmpeg started, then the time from the
    DELETE answer to the queued job reporting running and to the ffmpeg
    being gone; (b) directly: the ffmpeg command in argv_file (one argument
    a line), SIGTERM after runup_s, and the time until it exits (waited for
    up to 60 s; the old server's slot was held min(that, cap_ms)).  Writes
    every run to out (JSON) and a line per run to stderr."""
    import os, signal, subprocess, time
    port, server_pid, runs = int(port), int(server_pid), int(runs)
    runup, cap = float(runup_s), int(cap_ms) / 1000.0
    token = open(token_file).read().strip()
    argv = open(argv_file).read().splitlines()
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    conn = [None]

    def req(method, path, body=None):
        for attempt in (0, 1):
            try:
                if conn[0] is None:
                    conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                conn[0].request(method, path, body=json.dumps(body) if body else None, headers=headers)
                r = conn[0].getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    conn[0].close(); conn[0] = None
                return r.status, (json.loads(data) if data else None)
            except (http.client.HTTPException, OSError):
                if conn[0] is not None:
                    conn[0].close()
                conn[0] = None
                if attempt:
                    raise

    def stat(pid):
        try:
            raw = open("/proc/%d/stat" % pid).read()
        except OSError:
            return None
        f = raw[raw.rfind(")") + 2:].split()
        return f[0], int(f[1])  # state, ppid

    def alive(pid):
        st = stat(pid)
        return st is not None and st[0] != "Z"

    def server_children():
        return [int(n) for n in os.listdir("/proc") if n.isdigit()
                and (stat(int(n)) or ("", 0))[1] == server_pid and alive(int(n))]

    def log_event(event, job_id, timeout, **fields):
        deadline = time.time() + timeout
        while True:
            for line in open(log_path).read().splitlines():
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("event") == event and e.get("job_id") == job_id and \
                        all(e.get(k) == v for k, v in fields.items()):
                    return e
            if time.time() >= deadline:
                raise SystemExit("jobs-bench: no %s line for job %s in %s" % (event, job_id, log_path))
            time.sleep(0.005)

    def server_run():
        deadline = time.time() + 30
        while server_children() and time.time() < deadline:
            time.sleep(0.05)
        st, a = req("POST", "/exec", {"capability": "ffmpeg-render", "input_key": "uploads/render.mp4",
                                       "output_key": "renders/cancel.mp4", "preset": preset, "async": True})
        if st != 202:
            raise SystemExit("jobs-bench: POST /exec (%s, async) answered %d %r" % (preset, st, a))
        pid = log_event("job.started", a["job_id"], 60, phase="render")["pid"]
        t_spawn = time.monotonic()
        st, b = req("POST", "/exec", {"capability": "ffprobe", "input_key": "uploads/probe.mp4", "async": True})
        if st != 202 or b.get("status") != "queued":
            raise SystemExit("jobs-bench: the probe should wait for the one slot: %d %r" % (st, b))
        time.sleep(max(0.0, t_spawn + runup - time.monotonic()))
        if not alive(pid):
            raise SystemExit("jobs-bench: the %s render ended before its cancel; use a longer clip" % preset)
        t_sent = time.monotonic()
        st, j = req("DELETE", "/jobs/" + a["job_id"])
        t_del = time.monotonic()
        if st != 200 or j.get("status") != "canceled":
            raise SystemExit("jobs-bench: DELETE answered %d %r" % (st, j))
        gone = free = None
        while (gone is None or free is None) and time.monotonic() - t_del < 120:
            now = time.monotonic()
            if gone is None and not alive(pid):
                gone = now - t_sent
            if free is None:
                st, jb = req("GET", "/jobs/" + b["job_id"])
                if st != 200:
                    raise SystemExit("jobs-bench: GET /jobs/%s answered %d %r" % (b["job_id"], st, jb))
                if jb.get("status") != "queued":
                    free = time.monotonic() - t_del
            time.sleep(0.002)
        st, jb = req("GET", "/jobs/%s?wait=60" % b["job_id"])
        if st != 200 or jb.get("status") != "succeeded":
            raise SystemExit("jobs-bench: the queued probe ended %r" % jb)
        fin = ts_ms(log_event("job.finished", a["job_id"], 10)["ts"])
        nxt = ts_ms(log_event("job.started", b["job_id"], 10)["ts"])
        return {"slot_free_s": free, "ffmpeg_gone_s": gone, "log_free_s": (nxt - fin) / 1000.0,
                "delete_s": t_del - t_sent}

    def direct_run():
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(runup)
        if p.poll() is not None:
            raise SystemExit("jobs-bench: the direct %s ffmpeg ended before SIGTERM (status %s)"
                             % (preset, p.returncode))
        p.send_signal(signal.SIGTERM)
        t = time.monotonic()
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        wind = time.monotonic() - t
        return {"winddown_s": wind, "held_s": min(wind, cap)}

    res = {"server": [], "direct": []}
    for r in range(1, runs + 1):
        for side in (("server", "direct") if r % 2 else ("direct", "server")):
            if side == "server":
                x = server_run()
                sys.stderr.write("  round %d/%d: server: next job running %.1f ms after the DELETE answer, "
                                 "ffmpeg gone %.1f ms after the DELETE was sent\n"
                                 % (r, runs, x["slot_free_s"] * 1000, x["ffmpeg_gone_s"] * 1000))
            else:
                x = direct_run()
                sys.stderr.write("  round %d/%d: direct: ffmpeg exited %.3f s after SIGTERM\n"
                                 % (r, runs, x["winddown_s"]))
            res[side].append(x)
    json.dump(res, open(out, "w"), indent=1)

def cancelsummary(path):
    """Part 5 medians (ms): slot free, ffmpeg gone, slot free per the log,
    max slot free, old path (held), wind-down median, min, max, and how
    many wind-downs ran past the cap."""
    r = json.load(open(path))
    s, d = r["server"], r["direct"]
    ms = lambda xs: 1000.0 * statistics.median(xs)
    held = [x["held_s"] for x in d]
    wind = [x["winddown_s"] for x in d]
    capped = sum(1 for x in d if x["winddown_s"] > x["held_s"])
    print("%.1f %.1f %.1f %.1f %.1f %.1f %.1f %.1f %d" % (
        ms([x["slot_free_s"] for x in s]), ms([x["ffmpeg_gone_s"] for x in s]),
        ms([x["log_free_s"] for x in s]), 1000.0 * max(x["slot_free_s"] for x in s),
        ms(held), ms(wind), 1000.0 * min(wind), 1000.0 * max(wind), capped))

def preset_args(path, name):
    """The preset's args, one per line (the script reads them with mapfile)."""
    p = json.load(open(path))[name]
    for a in p["args"]:
        print(a)
    print("--format=" + p["format"])

if __name__ == "__main__":
    {"client": client, "medians": medians, "merge": merge, "cpu": cpu, "usedcpu": usedcpu, "logstats": logstats, "sandboxinfo": sandboxinfo, "preset_args": preset_args, "cancel": cancel, "cancelsummary": cancelsummary}[sys.argv[1]](*sys.argv[2:])
PY

# Share of all CPUs busy over INTERVAL seconds while this script is idle
# (other processes on the machine), in percent, from /proc/stat.
# Other ffmpeg/ffprobe processes (not our server's children) that compete for
# the CPUs.
foreign_procs() {
  local pid n=0
  local ppid
  for pid in $(pgrep -x 'ffmpeg|ffprobe' || true); do
    ppid=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')
    [[ " ${SRV_PIDS[*]-} " == *" $ppid "* ]] && continue
    n=$((n + 1))
  done
  echo "$n"
}
# wait_quiet: with QUIET_WAIT > 0, waits (at most QUIET_WAIT s) until the
# machine looks idle.  Counts the waits that timed out in NOISY_WAITS.
NOISY_WAITS=0
wait_quiet() {
  [[ $QUIET_WAIT -gt 0 ]] || return 0
  local deadline=$((SECONDS + QUIET_WAIT)) busy procs said=0
  while :; do
    busy=$(background_busy 0.5)
    procs=$(foreign_procs)
    [[ $busy -lt 10 && $procs -eq 0 ]] && return 0
    if [[ $SECONDS -ge $deadline ]]; then
      log "  (machine still busy after ${QUIET_WAIT} s: ${busy}% CPU, $procs foreign ffmpeg/ffprobe; going on)"
      NOISY_WAITS=$((NOISY_WAITS + 1))
      return 0
    fi
    [[ $said == 1 ]] || { log "  (waiting for the machine to calm down: ${busy}% CPU busy, $procs foreign ffmpeg/ffprobe)"; said=1; }
    sleep 0.5
  done
}

BG_NOTES=()
check_background() { # part-name
  local busy procs
  wait_quiet
  busy=$(background_busy 1)
  procs=$(foreign_procs)
  BG_NOTES+=("$1: ${busy}% CPU busy, $procs foreign ffmpeg/ffprobe")
  if [[ $busy -gt 10 || $procs -gt 0 ]]; then
    log "jobs-bench: WARNING: before $1 the machine is not idle (${busy}% CPU busy, $procs other ffmpeg/ffprobe processes); results will be noisy"
  fi
}

# Lines in the server log so far (after a moment, so that the lines of the
# request just answered are written).
log_lines() { sleep 0.2; wc -l <"${1:-$SERVER_LOG}" | tr -d ' '; }

# logstats FIRST_LINE EXPECTED_REQUESTS PREFIX [LOG]: sets PREFIX_<key>
# variables from LOG (default: the main server's).
logstats() {
  local first=$1 expect=$2 prefix=$3 file=${4:-$SERVER_LOG} out k v
  out=$("$PYTHON" "$HELPER" logstats "$file" "$first" "$(log_lines "$file")" "$expect") \
    || die "server log check failed (see above; log kept in $OUT_DIR/server.log)"
  while IFS='=' read -r k v; do printf -v "${prefix}_$k" '%s' "$v"; done <<<"$out"
}

# medians JSON: prints "median mean stddev min max" (s) per command, in order.
medians() { "$PYTHON" "$HELPER" medians "$1"; }

fmt_ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { # value op goal
  awk -v x="$1" -v op="$2" -v g="$3" 'BEGIN { ok = (op == "<=") ? (x <= g) : (x >= g); print ok ? "met" : "MISSED" }'
}

HF_COMMON=(-N)

# CPU time the servers have used themselves and what their reaped children
# (the ffprobe/ffmpeg they ran) used, from /proc/PID/stat, summed over every
# server of SRV_PIDS (only the one being measured is busy): "self_ms
# children_ms".  /proc counts in clock ticks (CLK_TCK, usually 100 Hz): sums
# over many runs.
CLK_TCK=$(getconf CLK_TCK)
srv_cpu() {
  local pid
  for pid in "${SRV_PIDS[@]}"; do sed 's/^.*) //' "/proc/$pid/stat"; done \
    | awk -v hz="$CLK_TCK" '{ s += $12 + $13; c += $14 + $15 } END { printf "%.0f %.0f\n", s * 1000 / hz, c * 1000 / hz }'
}

# CPU time (ms, all CPUs) the whole machine has spent busy so far, /proc/stat.
stat_busy_ms() {
  awk -v hz="$CLK_TCK" '/^cpu / { printf "%.0f\n", ($2 + $3 + $4 + $7 + $8 + $9) * 1000 / hz; exit }' /proc/stat
}
NCPU=$(nproc)

# run_side FILE NAME CMD PER SERVER_SIDE(0|1)
# One hyperfine call of PER runs.  Checks how much CPU other programs used
# meanwhile: the machine's busy time (/proc/stat) minus what hyperfine's
# children used (their user+system) minus the server's own and its children's
# CPU.  If that exceeds NOISE_MAX % of the CPUs' capacity, the call is made
# again (at most NOISE_RETRIES times).  Sets RUN_FOREIGN (percent) and, for the
# server side, RUN_SELF_MS / RUN_CHILD_MS, and counts the runs (redone ones
# too) in ALT_A_RUNS (server side) or ALT_B_RUNS.
NOISE_RUNS_REDONE=0
NOISE_RUNS_KEPT=0
run_side() {
  local file=$1 name=$2 cmd=$3 per=$4 srv=$5 tries=0 b0 b1 s0 c0 s1 c1 t0 t1 used
  while :; do
    wait_quiet
    read -r s0 c0 < <(srv_cpu)
    b0=$(stat_busy_ms)
    t0=$EPOCHREALTIME
    hyperfine "${HF_COMMON[@]}" --style none --runs "$per" --export-json "$file" -n "$name" "$cmd" >&2
    t1=$EPOCHREALTIME
    b1=$(stat_busy_ms)
    read -r s1 c1 < <(srv_cpu)
    if [[ $srv == 1 ]]; then ALT_A_RUNS=$((ALT_A_RUNS + per)); else ALT_B_RUNS=$((ALT_B_RUNS + per)); fi
    used=$("$PYTHON" "$HELPER" usedcpu "$file")
    RUN_SELF_MS=$((s1 - s0))
    RUN_CHILD_MS=$((c1 - c0))
    RUN_FOREIGN=$(awk -v b=$((b1 - b0)) -v u="$used" -v s=$((RUN_SELF_MS + RUN_CHILD_MS)) \
      -v t0="$t0" -v t1="$t1" -v n="$NCPU" 'BEGIN { f = 100 * (b - u - s) / ((t1 - t0) * 1000 * n); printf "%.0f", f < 0 ? 0 : f }')
    [[ $RUN_FOREIGN -le $NOISE_MAX ]] && return 0
    if [[ $tries -ge $NOISE_RETRIES ]]; then
      NOISE_RUNS_KEPT=$((NOISE_RUNS_KEPT + 1))
      log "  ($name: other programs used ${RUN_FOREIGN}% of the CPUs during the run; kept after $tries retries)"
      return 0
    fi
    tries=$((tries + 1))
    NOISE_RUNS_REDONE=$((NOISE_RUNS_REDONE + 1))
    log "  ($name: other programs used ${RUN_FOREIGN}% of the CPUs during the run; running it again)"
  done
}

# alternate TAG ROUNDS PER_ROUND WARMUP NAME_A CMD_A NAME_B CMD_B
# Runs A and B ROUNDS x PER_ROUND times each: one hyperfine call of PER_ROUND
# runs per side and round, alternating the order round by round (odd rounds A
# first, even rounds B first), so that a change of background load over the
# minutes hits both sides alike.  The warm-up runs go before the first round.
# Exports OUT_DIR/TAG-{a,b}-<round>.json.
# A is the server side: sets ALT_SELF_MS / ALT_CHILD_MS, the server's own and
# its children's CPU time summed over the A runs kept, and ALT_A_RUNS, how many
# times A ran in all (warm-up and redone runs included; for the log check).
# ALT_B_SELF_MS / ALT_B_CHILD_MS / ALT_B_RUNS: the same for B, for part 4
# where B is a server too.
alternate() {
  local tag=$1 runs=$2 per=$3 warmup=$4 na=$5 ca=$6 nb=$7 cb=$8 r side t
  ALT_SELF_MS=0 ALT_CHILD_MS=0 ALT_A_RUNS=$warmup
  ALT_B_SELF_MS=0 ALT_B_CHILD_MS=0 ALT_B_RUNS=$warmup
  if [[ $warmup -gt 0 ]]; then
    log "  warm-up: $warmup run(s) each"
    hyperfine "${HF_COMMON[@]}" --style none --runs "$warmup" -n "$na" "$ca" -n "$nb" "$cb" >&2
  fi
  for ((r = 1; r <= runs; r++)); do
    local order=(a b)
    ((r % 2 == 0)) && order=(b a)
    for side in "${order[@]}"; do
      if [[ $side == a ]]; then
        run_side "$OUT_DIR/$tag-a-$r.json" "$na" "$ca" "$per" 1
        ALT_SELF_MS=$((ALT_SELF_MS + RUN_SELF_MS))
        ALT_CHILD_MS=$((ALT_CHILD_MS + RUN_CHILD_MS))
      else
        run_side "$OUT_DIR/$tag-b-$r.json" "$nb" "$cb" "$per" 0
        ALT_B_SELF_MS=$((ALT_B_SELF_MS + RUN_SELF_MS))
        ALT_B_CHILD_MS=$((ALT_B_CHILD_MS + RUN_CHILD_MS))
      fi
      t=$("$PYTHON" "$HELPER" merge "$OUT_DIR/$tag-$side-$r.json" | cut -d' ' -f1)
      log "  round $r/$runs: $([[ $side == a ]] && echo "$na" || echo "$nb"): $(awk -v t="$t" -v n="$per" \
        'BEGIN { if (t < 1) printf "%.1f ms", t * 1000; else printf "%.3f s", t; if (n > 1) printf " (median of %d)", n }') (others: ${RUN_FOREIGN}% CPU)"
    done
  done
}

# -------------------------------------------------------------------- clips ---
gen_clip() { # seconds size out
  "$FFMPEG" -hide_banner -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=$2:rate=30:duration=$1" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$1" \
    -map 0:v:0 -map 1:a:0 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
    -c:a aac -b:a 128k -shortest -movflags +faststart "$3"
}
log "jobs-bench: generating clips in $DATA"
gen_clip "$PROBE_SECONDS" "$PROBE_SIZE" "$DATA/uploads/probe.mp4"
if want 3 || want 4 || want 5; then gen_clip "$RENDER_SECONDS" "$RENDER_SIZE" "$DATA/uploads/render.mp4"; fi
if want 2 || want 6; then
  for ((i = 0; i < TP_JOBS; i++)); do
    cp "$DATA/uploads/probe.mp4" "$(printf '%s/uploads/tp/%04d.mp4' "$DATA" "$i")"
  done
  printf '%s\n' "$DATA"/uploads/tp/*.mp4 >"$TMP/tp-files.txt"
fi

# ------------------------------------------------------------------- server ---
TOKEN=bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$TOKEN" >"$TMP/token"
# curl reads the headers from a file (-H @file): the token stays out of argv
# and out of hyperfine's JSON exports.
printf 'Authorization: Bearer %s\nContent-Type: application/json\n' "$TOKEN" >"$TMP/headers"
chmod 600 "$TMP/token" "$TMP/headers"

# Drop CAP_* settings inherited from the caller's environment so that only the
# flags below configure cap-server (CAP_SERVER_BIN is ours, not the server's).
ENV_CLEAN=(env)
while IFS= read -r v; do ENV_CLEAN+=(-u "$v"); done < <(compgen -e | grep '^CAP_' || true)

# start_server DATA_DIR LOG OUT [extra flags...]: starts a cap-server on a free
# port and waits for its server.start line; sets STARTED_PID and STARTED_PORT.
start_server() {
  local data=$1 slog=$2 out=$3 i
  shift 3
  CAPABILITY_TOKEN=$TOKEN "${ENV_CLEAN[@]}" "$CAP_SERVER_BIN" --port 0 --host 127.0.0.1 \
    --data-dir "$data" --log-file "$slog" \
    --rate-limit 100000000 --rate-limit-token 100000000 \
    --pool-cpu "$POOL_CPU" --queue-max 10000 \
    --ffmpeg "$FFMPEG" --ffprobe "$FFPROBE" "$@" >"$out" 2>&1 &
  STARTED_PID=$!
  SRV_PIDS+=("$STARTED_PID")
  STARTED_PORT=""
  for ((i = 0; i < 300; i++)); do
    kill -0 "$STARTED_PID" 2>/dev/null || { cat "$out" >&2; die "cap-server exited at start"; }
    if [[ -f $slog ]]; then
      STARTED_PORT=$({ grep -m1 '"event":"server.start"' "$slog" || true; } \
        | "$PYTHON" -c 'import json, sys; l = sys.stdin.readline(); print(json.loads(l)["port"] if l else "")')
      [[ -n $STARTED_PORT ]] && return 0
    fi
    sleep 0.1
  done
  die "no server.start line in $slog after 30 s"
}

log "jobs-bench: starting cap-server (pool_cpu $POOL_CPU)"
start_server "$DATA" "$SERVER_LOG" "$TMP/server.out"
CAP_PID=$STARTED_PID
PORT=$STARTED_PORT
URL=http://127.0.0.1:$PORT
CURL_BASE=("$CURL" --noproxy '*' -sS -f -o /dev/null)
log "jobs-bench: cap-server pid $CAP_PID on $URL"

# --------------------------------------------------------------- sanity ------
printf '{"capability":"ffprobe","input_key":"uploads/probe.mp4"}' >"$TMP/probe.json"
printf '{"capability":"ffmpeg-render","input_key":"uploads/render.mp4","output_key":"renders/out.mp4","preset":"1080p","wait":90}' \
  >"$TMP/render.json"

"$CURL" --noproxy '*' -sS -H @"$TMP/headers" --data-binary @"$TMP/probe.json" "$URL/exec" >"$TMP/probe-answer.json" \
  || die "POST /exec (ffprobe) failed"
"$FFPROBE" -v error -print_format json -show_format -show_streams "$DATA/uploads/probe.mp4" >"$TMP/probe-direct.json"
"$PYTHON" - "$TMP/probe-answer.json" "$TMP/probe-direct.json" <<'PY' || die "ffprobe job answer does not match ffprobe run directly"
import json, sys
a, d = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert a.get("status") == "succeeded", a
assert a["probe"]["streams"] == d["streams"], "streams differ"
fa, fd = dict(a["probe"]["format"]), dict(d["format"])
fa.pop("filename"); fd.pop("filename")
assert fa == fd, "format differs"
PY

# ------------------------------------------------------- 1. dispatch overhead ---
if want 1; then
  log ""
  check_background "part 1"
  log "== 1. dispatch overhead: ffprobe job via POST /exec (curl) vs ffprobe directly, $DISPATCH_ROUNDS rounds of $D_PER_ROUND =="
  first=$(($(log_lines) + 1))
  alternate dispatch "$DISPATCH_ROUNDS" "$D_PER_ROUND" "$DISPATCH_WARMUP" \
    "server: curl POST /exec ffprobe" \
    "${CURL_BASE[*]} -H @$TMP/headers --data-binary @$TMP/probe.json $URL/exec" \
    "direct: ffprobe" \
    "$FFPROBE -v error -print_format json -show_format -show_streams $DATA/uploads/probe.mp4"
  logstats "$first" "$ALT_A_RUNS" D
  hyperfine "${HF_COMMON[@]}" --style none --warmup "$DISPATCH_WARMUP" --runs "$DISPATCH_RUNS" \
    --export-json "$OUT_DIR/dispatch-health.json" \
    -n "client baseline: curl GET /health" \
    "${CURL_BASE[*]} $URL/health" >&2
  read -r D_SRV D_SRV_MEAN D_SRV_SD _ _ < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/dispatch-a-*.json)
  read -r D_DIR D_DIR_MEAN D_DIR_SD _ _ < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/dispatch-b-*.json)
  read -r D_HEALTH _ _ _ _ < <(medians "$OUT_DIR/dispatch-health.json")
  log "  client baseline: curl GET /health: $(fmt_ms "$D_HEALTH") ms (median of $DISPATCH_RUNS)"
  # CPU per job: the server's children (ffprobe) and the server itself, over
  # the timed server runs; direct: hyperfine's user + system (median round).
  D_JOBS=$((DISPATCH_ROUNDS * D_PER_ROUND))
  D_CPU_CHILD=$(awk -v c="$ALT_CHILD_MS" -v n=$D_JOBS 'BEGIN { printf "%.1f", c / n }')
  D_CPU_SELF=$(awk -v c="$ALT_SELF_MS" -v n=$D_JOBS 'BEGIN { printf "%.2f", c / n }')
  D_CPU_DIR=$(awk -v c="$("$PYTHON" "$HELPER" cpu "$OUT_DIR"/dispatch-b-*.json)" 'BEGIN { printf "%.1f", c * 1000 }')
  D_RATIO=$(ratio "$D_SRV" "$D_DIR")
  # The same, without what the curl client itself costs (process start-up, one
  # HTTP exchange: the GET /health median), i.e. what the server adds.
  D_NET=$(awk -v a="$D_SRV" -v h="$D_HEALTH" 'BEGIN { printf "%.6f", a - h }')
  D_NET_RATIO=$(ratio "$D_NET" "$D_DIR")
fi

# -------------------------------------------------------------- 2. throughput ---
if want 2; then
  log ""
  check_background "part 2"
  log "== 2. throughput: $TP_JOBS ffprobe jobs, server pool $POOL_CPU (client $TP_CONC connections) vs xargs -P$POOL_CPU ffprobe =="
  first=$(($(log_lines) + 1))
  alternate throughput "$TP_REPEAT" 1 "$TP_WARMUP" \
    "server: $TP_JOBS jobs, $TP_CONC connections" \
    "$PYTHON $HELPER client $PORT $TMP/token $TP_JOBS $TP_CONC uploads/tp/" \
    "direct: xargs -P$POOL_CPU ffprobe, $TP_JOBS files" \
    "xargs -a $TMP/tp-files.txt -P $POOL_CPU -n 1 $FFPROBE -v error -print_format json -show_format -show_streams"
  logstats "$first" $((ALT_A_RUNS * TP_JOBS)) T
  read -r T_SRV _ _ T_SRV_MIN T_SRV_MAX < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/throughput-a-*.json)
  read -r T_DIR _ _ T_DIR_MIN T_DIR_MAX < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/throughput-b-*.json)
  T_CPU_CHILD=$(awk -v c="$ALT_CHILD_MS" -v n=$((TP_REPEAT * TP_JOBS)) 'BEGIN { printf "%.1f", c / n }')
  T_CPU_SELF=$(awk -v c="$ALT_SELF_MS" -v n=$((TP_REPEAT * TP_JOBS)) 'BEGIN { printf "%.2f", c / n }')
  T_CPU_DIR=$(awk -v c="$("$PYTHON" "$HELPER" cpu "$OUT_DIR"/throughput-b-*.json)" -v n="$TP_JOBS" 'BEGIN { printf "%.1f", c * 1000 / n }')
  T_SRV_JPS=$(awk -v n="$TP_JOBS" -v t="$T_SRV" 'BEGIN { printf "%.2f", n / t }')
  T_DIR_JPS=$(awk -v n="$TP_JOBS" -v t="$T_DIR" 'BEGIN { printf "%.2f", n / t }')
  T_RATIO=$(ratio "$T_SRV_JPS" "$T_DIR_JPS")
  # Rough share of the pool's slot time with a child running during a server run:
  # median job time x jobs / (slots x median wall time).
  T_BUSY=$(awk -v j="$T_job_ms" -v n="$TP_JOBS" -v w="$T_SRV" -v p="$POOL_CPU" 'BEGIN { printf "%.0f", 100 * j * n / (1000 * w * p) }')
fi

# ------------------------------------------------------------------ 3. render ---
if want 3; then
  log ""
  check_background "part 3"
  log "== 3. render: 1080p job via POST /exec vs the same ffmpeg command directly =="
  mapfile -t PRESET < <("$PYTHON" "$HELPER" preset_args "$PRESETS_JSON" 1080p)
  FORMAT=${PRESET[-1]#--format=}
  unset 'PRESET[-1]'
  # hyperfine -N splits the command like a POSIX shell: quote every argument.
  quote_all() { local a out=(); for a in "$@"; do out+=("$(printf '%q' "$a")"); done; printf '%s' "${out[*]}"; }
  DIRECT_RENDER=$(quote_all "$FFMPEG" -hide_banner -nostdin -nostats -loglevel error -y \
    -i "file:$DATA/uploads/render.mp4" "${PRESET[@]}" -f "$FORMAT" "file:$TMP/direct/out.mp4")
  printf '%s\n' "$DIRECT_RENDER" >"$OUT_DIR/render-direct-command.txt"
  first=$(($(log_lines) + 1))
  alternate render "$RENDER_RUNS" 1 "$RENDER_WARMUP" \
    "server: curl POST /exec 1080p" \
    "${CURL_BASE[*]} -H @$TMP/headers --data-binary @$TMP/render.json $URL/exec" \
    "direct: ffmpeg 1080p preset" \
    "$DIRECT_RENDER"
  logstats "$first" "$ALT_A_RUNS" R
  read -r R_SRV _ _ R_SRV_MIN R_SRV_MAX < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/render-a-*.json)
  read -r R_DIR _ _ R_DIR_MIN R_DIR_MAX < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/render-b-*.json)
  R_RATIO=$(ratio "$R_SRV" "$R_DIR")
  R_CPU_CHILD=$(awk -v c="$ALT_CHILD_MS" -v n="$RENDER_RUNS" 'BEGIN { printf "%.1f", c / n }')
  R_CPU_SELF=$(awk -v c="$ALT_SELF_MS" -v n="$RENDER_RUNS" 'BEGIN { printf "%.2f", c / n }')
  R_CPU_DIR=$(awk -v c="$("$PYTHON" "$HELPER" cpu "$OUT_DIR"/render-b-*.json)" 'BEGIN { printf "%.1f", c * 1000 }')

  # Both outputs must be the same kind of file: 1080 lines, same duration.
  for f in "$DATA/renders/out.mp4" "$TMP/direct/out.mp4"; do
    h=$("$FFPROBE" -v error -select_streams v:0 -show_entries stream=height -of csv=p=0 "$f")
    [[ $h == 1080 ]] || die "render output $f has height '$h', expected 1080"
  done
fi

# ------------------------------------------------------- 4. sandbox on / off ---
if want 4; then
  log ""
  check_background "part 4"
  log "== 4. sandbox cost: the same ffprobe job and 1080p render, --sandbox best-effort vs --sandbox off =="
  # Two more servers, identical but for --sandbox, each with its own data
  # directory holding the same clips (hard links).
  for mode in best-effort off; do
    d=$TMP/sb-$mode
    mkdir -p "$d/uploads" "$d/renders"
    ln "$DATA/uploads/probe.mp4" "$DATA/uploads/render.mp4" "$d/uploads/"
    start_server "$d" "$TMP/server-sandbox-$mode.log" "$TMP/server-sandbox-$mode.out" --sandbox "$mode"
    if [[ $mode == off ]]; then SB_OFF_PID=$STARTED_PID SB_OFF_PORT=$STARTED_PORT
    else SB_ON_PID=$STARTED_PID SB_ON_PORT=$STARTED_PORT; fi
  done
  SB_ON_LOG=$TMP/server-sandbox-best-effort.log
  SB_OFF_LOG=$TMP/server-sandbox-off.log
  log "jobs-bench: sandbox best-effort: pid $SB_ON_PID port $SB_ON_PORT; sandbox off: pid $SB_OFF_PID port $SB_OFF_PORT"
  for port in "$SB_ON_PORT" "$SB_OFF_PORT"; do
    "${CURL_BASE[@]}" -H @"$TMP/headers" --data-binary @"$TMP/probe.json" "http://127.0.0.1:$port/exec" \
      || die "POST /exec (ffprobe) to the server on port $port failed"
  done

  log "  -- ffprobe job, $SANDBOX_ROUNDS rounds of $S_PER_ROUND"
  on_first=$(($(log_lines "$SB_ON_LOG") + 1))
  off_first=$(($(log_lines "$SB_OFF_LOG") + 1))
  alternate sbdispatch "$SANDBOX_ROUNDS" "$S_PER_ROUND" "$DISPATCH_WARMUP" \
    "sandbox best-effort: curl POST /exec ffprobe" \
    "${CURL_BASE[*]} -H @$TMP/headers --data-binary @$TMP/probe.json http://127.0.0.1:$SB_ON_PORT/exec" \
    "sandbox off: curl POST /exec ffprobe" \
    "${CURL_BASE[*]} -H @$TMP/headers --data-binary @$TMP/probe.json http://127.0.0.1:$SB_OFF_PORT/exec"
  logstats "$on_first" "$ALT_A_RUNS" SDON "$SB_ON_LOG"
  logstats "$off_first" "$ALT_B_RUNS" SDOFF "$SB_OFF_LOG"
  read -r SD_ON SD_ON_MEAN SD_ON_SD _ _ < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/sbdispatch-a-*.json)
  read -r SD_OFF SD_OFF_MEAN SD_OFF_SD _ _ < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/sbdispatch-b-*.json)
  SD_DIFF=$(awk -v a="$SD_ON" -v b="$SD_OFF" 'BEGIN { printf "%.1f", (a - b) * 1000 }')
  SD_RATIO=$(ratio "$SD_ON" "$SD_OFF")
  SD_CPU_ON=$(awk -v c=$((ALT_CHILD_MS + ALT_SELF_MS)) -v n="$SANDBOX_RUNS" 'BEGIN { printf "%.1f", c / n }')
  SD_CPU_OFF=$(awk -v c=$((ALT_B_CHILD_MS + ALT_B_SELF_MS)) -v n="$SANDBOX_RUNS" 'BEGIN { printf "%.1f", c / n }')

  log "  -- 1080p render, $SANDBOX_RENDER_RUNS run(s) each"
  on_first=$(($(log_lines "$SB_ON_LOG") + 1))
  off_first=$(($(log_lines "$SB_OFF_LOG") + 1))
  alternate sbrender "$SANDBOX_RENDER_RUNS" 1 0 \
    "sandbox best-effort: curl POST /exec 1080p" \
    "${CURL_BASE[*]} -H @$TMP/headers --data-binary @$TMP/render.json http://127.0.0.1:$SB_ON_PORT/exec" \
    "sandbox off: curl POST /exec 1080p" \
    "${CURL_BASE[*]} -H @$TMP/headers --data-binary @$TMP/render.json http://127.0.0.1:$SB_OFF_PORT/exec"
  logstats "$on_first" "$ALT_A_RUNS" SRON "$SB_ON_LOG"
  logstats "$off_first" "$ALT_B_RUNS" SROFF "$SB_OFF_LOG"
  read -r SR_ON _ _ SR_ON_MIN SR_ON_MAX < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/sbrender-a-*.json)
  read -r SR_OFF _ _ SR_OFF_MIN SR_OFF_MAX < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/sbrender-b-*.json)
  SR_RATIO=$(ratio "$SR_ON" "$SR_OFF")
  SR_DIFF=$(awk -v a="$SR_ON" -v b="$SR_OFF" 'BEGIN { printf "%.0f", (a - b) * 1000 }')
  SR_CPU_ON=$(awk -v c=$((ALT_CHILD_MS + ALT_SELF_MS)) -v n="$SANDBOX_RENDER_RUNS" 'BEGIN { printf "%.0f", c / n }')
  SR_CPU_OFF=$(awk -v c=$((ALT_B_CHILD_MS + ALT_B_SELF_MS)) -v n="$SANDBOX_RENDER_RUNS" 'BEGIN { printf "%.0f", c / n }')
  # best-effort must really have sandboxed every child (Landlock present),
  # and off none, or the comparison means nothing.
  SB_ON_INFO=$("$PYTHON" "$HELPER" sandboxinfo "$SB_ON_LOG" true) \
    || die "--sandbox best-effort did not sandbox every child ($SB_ON_INFO; Landlock missing?)"
  SB_OFF_INFO=$("$PYTHON" "$HELPER" sandboxinfo "$SB_OFF_LOG" false) \
    || die "--sandbox off sandboxed children ($SB_OFF_INFO)"
  log "  children: best-effort server $SB_ON_INFO; off server $SB_OFF_INFO"
  for mode in best-effort off; do
    f=$TMP/sb-$mode/renders/out.mp4
    h=$("$FFPROBE" -v error -select_streams v:0 -show_entries stream=height -of csv=p=0 "$f")
    [[ $h == 1080 ]] || die "render output $f has height '$h', expected 1080"
  done
  stop_pid "$SB_ON_PID" "cap-server (sandbox on)"
  stop_pid "$SB_OFF_PID" "cap-server (sandbox off)"
  SRV_PIDS=("$CAP_PID")

  # The helper's own start-up, which the job figures above cannot resolve
  # below the noise of a 150 ms job: /bin/true, run through cap-sandbox and
  # through cap-server --sandbox-exec with the server's default rules and
  # limits, against /bin/true alone (HELPER_RUNS runs, interleaved by
  # hyperfine's order; medians).
  SB_HELPER=$(dirname "$CAP_SERVER_BIN")/cap-sandbox
  HELPER_RUNS=${HELPER_RUNS:-$(q 400 100)}
  rules=(--abi 7)
  for p in /usr /lib /lib64 /lib32 /libx32 /bin /sbin /etc/ld.so.cache /etc/ld.so.conf \
    /etc/ld.so.conf.d /etc/fonts /etc/localtime /var/cache/fontconfig /sys/devices/system/cpu \
    /sys/devices/system/node /proc/cpuinfo /dev/urandom /dev/random; do rules+=(--ro "$p"); done
  rules+=(--rw /dev/null --data-mb 8192 --cpu-s 100000 --fsize-mb 262144 --nofile 1024 --nproc 8192)
  SH_TRUE=NA SH_SMALL=NA SH_SELF=NA
  if [[ -x $SB_HELPER ]]; then
    hyperfine -N --style none -w 20 -r "$HELPER_RUNS" --export-json "$OUT_DIR/sandbox-helper.json" \
      -n true /bin/true -n cap-sandbox "$SB_HELPER ${rules[*]} -- /bin/true" \
      -n self "$CAP_SERVER_BIN --sandbox-exec ${rules[*]} -- /bin/true" >&2
    read -r SH_TRUE SH_SMALL SH_SELF < <("$PYTHON" - "$OUT_DIR/sandbox-helper.json" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"]
print(" ".join("%.2f" % (statistics.median(x["times"]) * 1000) for x in r))
PY
)
    log "  helper start-up (median of $HELPER_RUNS): /bin/true $SH_TRUE ms, via cap-sandbox $SH_SMALL ms, via cap-server --sandbox-exec $SH_SELF ms"
  else
    log "  no $SB_HELPER: helper start-up not measured"
  fi
fi

# ----------------------------------------------------- 5. cancel to slot free ---
if want 5; then
  log ""
  check_background "part 5"
  log "== 5. cancel to slot free: DELETE of a running $CANCEL_PRESET job (pool of 1) vs SIGTERM to the same ffmpeg run directly (the old graceful path, capped at $CANCEL_GRACE_MS ms) =="
  # A server of its own: one cpu slot, so that the queued job waits for
  # exactly the slot the canceled one holds (a later --pool-cpu wins).
  d=$TMP/cancel
  mkdir -p "$d/uploads" "$d/renders"
  ln "$DATA/uploads/probe.mp4" "$DATA/uploads/render.mp4" "$d/uploads/"
  start_server "$d" "$TMP/server-cancel.log" "$TMP/server-cancel.out" --pool-cpu 1
  CANCEL_SRV_PID=$STARTED_PID
  mapfile -t PRESET5 < <("$PYTHON" "$HELPER" preset_args "$PRESETS_JSON" "$CANCEL_PRESET")
  FORMAT5=${PRESET5[-1]#--format=}
  unset 'PRESET5[-1]'
  printf '%s\n' "$FFMPEG" -hide_banner -nostdin -nostats -loglevel error -y \
    -i "file:$DATA/uploads/render.mp4" "${PRESET5[@]}" -f "$FORMAT5" "file:$TMP/direct/cancel.out" \
    >"$OUT_DIR/cancel-direct-command.txt"
  "$PYTHON" "$HELPER" cancel "$STARTED_PORT" "$TMP/token" "$TMP/server-cancel.log" "$CANCEL_SRV_PID" \
    "$CANCEL_PRESET" "$CANCEL_RUNS" "$CANCEL_RUNUP_S" "$CANCEL_GRACE_MS" "$OUT_DIR/cancel-direct-command.txt" \
    "$OUT_DIR/cancel.json" || die "part 5 failed (server log: $OUT_DIR/server-cancel.log)"
  read -r C_SRV C_GONE C_LOGFREE C_SRV_MAX C_OLD C_WIND C_WIND_MIN C_WIND_MAX C_CAPPED \
    < <("$PYTHON" "$HELPER" cancelsummary "$OUT_DIR/cancel.json")
  C_RATIO=$(ratio "$C_SRV" "$C_OLD")
  stop_pid "$CANCEL_SRV_PID" "cap-server (pool of 1)"
  CANCEL_SRV_PID=""
  SRV_PIDS=("$CAP_PID")
fi

# ------------------------------------------------------ 6. journal on / off ---
if want 6; then
  log ""
  check_background "part 6"
  log "== 6. journal on vs off: async dispatch, throughput, write latency; database size after $JOURNAL_SIZE_JOBS jobs =="
  JB=$BENCH_DIR/journal_bench.py
  # Two servers, identical but for --journal, each with its own data
  # directory holding the same clips (hard links).
  for mode in on off; do
    d=$TMP/journal-$mode
    mkdir -p "$d/uploads/tp"
    ln "$DATA/uploads/probe.mp4" "$d/uploads/"
    ln "$DATA"/uploads/tp/*.mp4 "$d/uploads/tp/"
    start_server "$d" "$TMP/server-journal-$mode.log" "$TMP/server-journal-$mode.out" --journal "$mode"
    if [[ $mode == on ]]; then J_ON_PID=$STARTED_PID J_ON_PORT=$STARTED_PORT
    else J_OFF_PID=$STARTED_PID J_OFF_PORT=$STARTED_PORT; fi
  done
  [[ -f $TMP/journal-on/.cap-state/journal.db ]] || die "--journal on made no $TMP/journal-on/.cap-state/journal.db"
  [[ ! -e $TMP/journal-off/.cap-state/journal.db ]] || die "--journal off made $TMP/journal-off/.cap-state/journal.db"
  J_ON_LOG=$TMP/server-journal-on.log
  J_OFF_LOG=$TMP/server-journal-off.log
  log "jobs-bench: journal on: pid $J_ON_PID port $J_ON_PORT; journal off: pid $J_OFF_PID port $J_OFF_PORT"

  log "  -- (a) async dispatch (time to the 202), $JOURNAL_DISPATCH_ROUNDS rounds, $JOURNAL_DISPATCH_RUNS per side"
  read -r JD_ON JD_OFF JD_DIFF JD_ON90 JD_OFF90 JD_N < <("$PYTHON" "$JB" dispatch "$J_ON_PORT" "$J_OFF_PORT" \
    "$TMP/token" "$JOURNAL_DISPATCH_RUNS" "$JOURNAL_DISPATCH_ROUNDS" "$DISPATCH_WARMUP" "$OUT_DIR/journal-dispatch.json") \
    || die "part 6 dispatch failed"
  [[ -n ${JD_N:-} ]] || die "part 6 dispatch printed nothing"
  log "  dispatch medians: on $JD_ON ms, off $JD_OFF ms (on - off $JD_DIFF ms); p90 $JD_ON90 / $JD_OFF90 ms"

  log "  -- (b) throughput: $TP_JOBS ffprobe jobs, $TP_CONC connections, $TP_REPEAT run(s) each"
  on_first=$(($(log_lines "$J_ON_LOG") + 1))
  off_first=$(($(log_lines "$J_OFF_LOG") + 1))
  alternate jthroughput "$TP_REPEAT" 1 "$TP_WARMUP" \
    "journal on: $TP_JOBS jobs, $TP_CONC connections" \
    "$PYTHON $HELPER client $J_ON_PORT $TMP/token $TP_JOBS $TP_CONC uploads/tp/" \
    "journal off: $TP_JOBS jobs, $TP_CONC connections" \
    "$PYTHON $HELPER client $J_OFF_PORT $TMP/token $TP_JOBS $TP_CONC uploads/tp/"
  logstats "$on_first" $((ALT_A_RUNS * TP_JOBS)) JTON "$J_ON_LOG"
  logstats "$off_first" $((ALT_B_RUNS * TP_JOBS)) JTOFF "$J_OFF_LOG"
  read -r JT_ON _ _ JT_ON_MIN JT_ON_MAX < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/jthroughput-a-*.json)
  read -r JT_OFF _ _ JT_OFF_MIN JT_OFF_MAX < <("$PYTHON" "$HELPER" merge "$OUT_DIR"/jthroughput-b-*.json)
  JT_ON_JPS=$(awk -v n="$TP_JOBS" -v t="$JT_ON" 'BEGIN { printf "%.2f", n / t }')
  JT_OFF_JPS=$(awk -v n="$TP_JOBS" -v t="$JT_OFF" 'BEGIN { printf "%.2f", n / t }')
  JT_RATIO=$(ratio "$JT_ON_JPS" "$JT_OFF_JPS")
  JT_CPU_ON=$(awk -v c="$ALT_SELF_MS" -v n=$((TP_REPEAT * TP_JOBS)) 'BEGIN { printf "%.2f", c / n }')
  JT_CPU_OFF=$(awk -v c="$ALT_B_SELF_MS" -v n=$((TP_REPEAT * TP_JOBS)) 'BEGIN { printf "%.2f", c / n }')

  log "  -- (c) journal write latency (cap_journal_write_seconds)"
  read -r JW_P50 JW_P99 JW_N JW_MEAN JW_OK JW_ERR < <("$PYTHON" "$JB" histq "$J_ON_PORT" "$TMP/token" \
    "$OUT_DIR/journal-on-metrics.txt") || die "part 6: reading /metrics failed"
  [[ -n ${JW_ERR:-} ]] || die "part 6: no journal figures in /metrics"
  log "  journal writes: $JW_N (ok $JW_OK, error $JW_ERR), p50 $JW_P50 ms, p99 $JW_P99 ms, mean $JW_MEAN ms"
  [[ $JW_ERR == 0 ]] || die "part 6: the journal counted $JW_ERR failed writes"
  JB_ON_FILES=$(for f in "$TMP/journal-on/.cap-state"/journal.db*; do [[ -e $f ]] && printf '%s %s B; ' "${f##*/}" "$(stat -c %s "$f")"; done)
  stop_pid "$J_ON_PID" "cap-server (journal on)"
  stop_pid "$J_OFF_PID" "cap-server (journal off)"
  J_ON_PID="" J_OFF_PID=""
  SRV_PIDS=("$CAP_PID")

  log "  -- (d) database size: $JOURNAL_SIZE_JOBS jobs, --job-ttl-s 3600, ffprobe stub (real ffprobe JSON), at most $JOURNAL_SIZE_MAX_S s"
  # The stub prints what the real ffprobe printed for the probe clip: a
  # result of the real size, without ffprobe's ~100 ms start-up.
  STUB=$TMP/ffprobe-stub
  cat >"$TMP/ffprobe-stub.c" <<C
#include <fcntl.h>
#include <unistd.h>
int main(void) {
  char buf[65536];
  ssize_t n;
  int fd = open("$TMP/probe-direct.json", O_RDONLY);
  if (fd < 0)
    return 1;
  while ((n = read(fd, buf, sizeof(buf))) > 0)
    if (write(1, buf, (size_t)n) != n)
      return 1;
  return 0;
}
C
  cc -O2 -o "$STUB" "$TMP/ffprobe-stub.c" || die "cannot compile the ffprobe stub (cc)"
  d=$TMP/journal-size
  mkdir -p "$d/uploads"
  ln "$DATA/uploads/probe.mp4" "$d/uploads/"
  J_SIZE_ARGS=(--journal on --job-ttl-s 3600 --jobs-max 1000000 --queue-max 100000
    --pool-cpu "$JOURNAL_SIZE_POOL" --sandbox off --ffprobe "$STUB")
  start_server "$d" "$TMP/server-journal-size.log" "$TMP/server-journal-size.out" "${J_SIZE_ARGS[@]}"
  J_SIZE_PID=$STARTED_PID
  SRV_PIDS+=("$J_SIZE_PID")
  read -r JS_JOBS JS_S JS_DB JS_WAL JS_SHM JS_ROWS JS_PAGES JS_PSIZE < <("$PYTHON" "$JB" size "$STARTED_PORT" \
    "$TMP/token" "$JOURNAL_SIZE_JOBS" "$JOURNAL_SIZE_CONC" "$d/.cap-state/journal.db" "$OUT_DIR/journal-size.json" \
    "$JOURNAL_SIZE_MAX_S") || die "part 6 size run failed"
  [[ -n ${JS_PSIZE:-} ]] || die "part 6 size run printed nothing"
  JS_RSS=$(awk '/^VmRSS:/ { print $2 }' "/proc/$J_SIZE_PID/status")
  JS_LIVE=$((JS_DB + JS_WAL + JS_SHM))
  stop_pid "$J_SIZE_PID" "cap-server (journal size)"
  J_SIZE_PID=""
  SRV_PIDS=("$CAP_PID")
  JS_REST_DB=$(stat -c %s "$d/.cap-state/journal.db")
  JS_REST_WAL=$(stat -c %s "$d/.cap-state/journal.db-wal" 2>/dev/null || echo 0)
  JS_PER_JOB=$(awk -v b="$JS_REST_DB" -v n="$JS_JOBS" 'BEGIN { printf "%.0f", b / n }')
  JS_AT_100K=$(awk -v b="$JS_REST_DB" -v n="$JS_JOBS" 'BEGIN { printf "%.1f", b / n * 100000 / 1048576 }')
  # Loading that journal: from exec to the server.start line.
  t0=$EPOCHREALTIME
  start_server "$d" "$TMP/server-journal-size-2.log" "$TMP/server-journal-size-2.out" "${J_SIZE_ARGS[@]}"
  t1=$EPOCHREALTIME
  J_SIZE_PID=$STARTED_PID
  JS_LOAD_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  JS_OPENED=$(grep -m1 -E '"event":"journal.(opened|recovered)"' "$TMP/server-journal-size-2.log" || true)
  JS_LOAD_RSS=$(awk '/^VmRSS:/ { print $2 }' "/proc/$J_SIZE_PID/status")
  stop_pid "$J_SIZE_PID" "cap-server (journal size)"
  J_SIZE_PID=""
  cp "$TMP/server-journal-size.log" "$OUT_DIR/" 2>/dev/null || true
  log "  $JS_JOBS jobs in $JS_S s: live db $JS_DB + wal $JS_WAL + shm $JS_SHM bytes, $JS_ROWS rows; at rest $JS_REST_DB bytes (wal $JS_REST_WAL); start-up on it ${JS_LOAD_S} s"
fi

# ------------------------------------------------------------------- report ---
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
{
  printf 'cap-server jobs benchmark  %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf 'machine: %s CPU(s) %s; %s; hyperfine %s\n' "$(nproc)" "${CPU_MODEL:-?}" \
    "$("$FFMPEG" -version | head -1 | cut -d' ' -f1-3)" "$(hyperfine --version | cut -d' ' -f2)"
  printf 'server: %s (pool_cpu %s)%s\n' "$CAP_SERVER_BIN" "$POOL_CPU" "$([[ $BENCH_QUICK == 1 ]] && echo '   [BENCH_QUICK=1: smoke run, numbers are rough]')"
  printf '\n'
  if want 1 || want 2 || want 3; then
    printf '%-44s %12s %12s %9s %8s %s\n' "measurement" "server" "direct" "ratio" "goal" ""
    printf '%-44s %12s %12s %9s %8s %s\n' "--------------------------------------------" "------------" "------------" "---------" "--------" "------"
  fi
  if want 1; then
    printf '%-44s %9s ms %9s ms %9s %8s %s\n' \
      "1. ffprobe job, median of $DISPATCH_RUNS (${PROBE_SIZE} ${PROBE_SECONDS}s)" \
      "$(fmt_ms "$D_SRV")" "$(fmt_ms "$D_DIR")" "$D_RATIO" "<= 1.10" "$(verdict "$D_RATIO" '<=' 1.10)"
    printf '%-44s %9s ms %9s ms %9s %8s %s\n' \
      "   same, minus curl GET /health (client cost)" "$(fmt_ms "$D_NET")" "$(fmt_ms "$D_DIR")" "$D_NET_RATIO" "" "(info)"
  fi
  if want 2; then
    printf '%-44s %7s j/s %7s j/s %9s %8s %s\n' \
      "2. throughput, $TP_JOBS jobs, median of $TP_REPEAT" \
      "$T_SRV_JPS" "$T_DIR_JPS" "$T_RATIO" ">= 0.90" "$(verdict "$T_RATIO" '>=' 0.90)"
  fi
  if want 3; then
    printf '%-44s %10s s %10s s %9s %8s %s\n' \
      "3. 1080p render, median of $RENDER_RUNS (${RENDER_SIZE} ${RENDER_SECONDS}s)" \
      "$(awk -v s="$R_SRV" 'BEGIN { printf "%.3f", s }')" "$(awk -v s="$R_DIR" 'BEGIN { printf "%.3f", s }')" \
      "$R_RATIO" "<= 1.03" "$(verdict "$R_RATIO" '<=' 1.03)"
  fi
  if want 4; then
    printf '\n'
    printf '%-44s %12s %12s %9s %8s %s\n' "4. sandbox cost (same job, two servers)" "best-effort" "off" "on - off" "goal" ""
    printf '%-44s %12s %12s %9s %8s %s\n' "--------------------------------------------" "------------" "------------" "---------" "--------" "------"
    printf '%-44s %9s ms %9s ms %6s ms %8s %s\n' \
      "   ffprobe job, median of $SANDBOX_RUNS" "$(fmt_ms "$SD_ON")" "$(fmt_ms "$SD_OFF")" "$SD_DIFF" "<= 2 ms" \
      "$(verdict "$SD_DIFF" '<=' 2)"
    printf '%-44s %10s s %10s s %9s %8s %s\n' \
      "   1080p render, median of $SANDBOX_RENDER_RUNS (ratio on/off)" \
      "$(awk -v s="$SR_ON" 'BEGIN { printf "%.3f", s }')" "$(awk -v s="$SR_OFF" 'BEGIN { printf "%.3f", s }')" \
      "$SR_RATIO" "<= 1.02" "$(verdict "$SR_RATIO" '<=' 1.02)"
    if [[ $SH_SMALL != NA ]]; then
      SH_ADD=$(awk -v a="$SH_SMALL" -v b="$SH_TRUE" 'BEGIN { printf "%.2f", a - b }')
      printf '%-44s %9s ms %9s ms %6s ms %8s %s\n' \
        "   helper start-up per child, median of $HELPER_RUNS" "$SH_SMALL" "$SH_TRUE" "$SH_ADD" "<= 2 ms" \
        "$(verdict "$SH_ADD" '<=' 2)"
      printf '%-44s %9s ms %9s ms %6s ms\n' "   (cap-server --sandbox-exec instead)" "$SH_SELF" "$SH_TRUE" \
        "$(awk -v a="$SH_SELF" -v b="$SH_TRUE" 'BEGIN { printf "%.2f", a - b }')"
    fi
  fi
  if want 5; then
    printf '\n'
    printf '%-44s %12s %12s %9s %8s %s\n' "5. cancel to slot free (pool of 1)" "server" "old path" "ratio" "goal" ""
    printf '%-44s %12s %12s %9s %8s %s\n' "--------------------------------------------" "------------" "------------" "---------" "--------" "------"
    printf '%-44s %9s ms %9s ms %9s %8s %s\n' \
      "   $CANCEL_PRESET, DELETE -> next job, median of $CANCEL_RUNS" "$C_SRV" "$C_OLD" "$C_RATIO" "<= 0.10" \
      "$(verdict "$C_RATIO" '<=' 0.10)"
  fi
  if want 6; then
    printf '\n'
    printf '%-44s %12s %12s %9s %8s %s\n' "6. journal (same jobs, two servers)" "on" "off" "on - off" "goal" ""
    printf '%-44s %12s %12s %9s %8s %s\n' "--------------------------------------------" "------------" "------------" "---------" "--------" "------"
    printf '%-44s %9s ms %9s ms %6s ms %8s %s\n' \
      "   POST /exec async -> 202, median of $JD_N" "$JD_ON" "$JD_OFF" "$JD_DIFF" "<= 1 ms" \
      "$(verdict "$JD_DIFF" '<=' 1)"
    printf '%-44s %7s j/s %7s j/s %9s %8s %s\n' \
      "   throughput, $TP_JOBS jobs, median of $TP_REPEAT (ratio)" "$JT_ON_JPS" "$JT_OFF_JPS" "$JT_RATIO" ">= 0.95" \
      "$(verdict "$JT_RATIO" '>=' 0.95)"
    printf '%-44s %9s ms %9s ms\n' "   journal write latency p50 / p99" "$JW_P50" "$JW_P99"
    printf '%-44s %12s\n' "   database at rest after $JS_JOBS jobs" "$(awk -v b="$JS_REST_DB" 'BEGIN { printf "%.1f MiB", b / 1048576 }')"
  fi
  if [[ -n $SANDBOX_NOTE ]]; then printf '\n%s\n' "$SANDBOX_NOTE"; fi
  if [[ -n $JOURNAL_NOTE ]]; then printf '\n%s\n' "$JOURNAL_NOTE"; fi
  printf '\n'
  if want 1 || want 2 || want 3; then
    printf '%-44s %12s %12s %12s %9s\n' "CPU time (user+sys) per job" "server kids" "server self" "direct" "ratio"
    printf '%-44s %12s %12s %12s %9s\n' "--------------------------------------------" "------------" "------------" "------------" "---------"
    cpu_row() { # label child self direct (ms)
      printf '%-44s %9s ms %9s ms %9s ms %9s\n' "$1" "$2" "$3" "$4" \
        "$(awk -v c="$2" -v s="$3" -v d="$4" 'BEGIN { if (d > 0) printf "%.3f", (c + s) / d; else print "-" }')"
    }
    if want 1; then cpu_row "1. ffprobe job" "$D_CPU_CHILD" "$D_CPU_SELF" "$D_CPU_DIR"; fi
    if want 2; then cpu_row "2. throughput, per ffprobe" "$T_CPU_CHILD" "$T_CPU_SELF" "$T_CPU_DIR"; fi
    if want 3; then cpu_row "3. 1080p render (kids incl. duration probe)" "$R_CPU_CHILD" "$R_CPU_SELF" "$R_CPU_DIR"; fi
    printf '%s\n' "   (server kids: the ffprobe/ffmpeg the server ran, /proc/<server>/stat cutime+cstime, mean per job;" \
      "    server self: cap-server's own CPU, mean per job; direct: hyperfine's user+system (median" \
      "    round); ratio: (kids + self) / direct.  /proc counts in ${CLK_TCK} Hz ticks.)"
    printf '\n'
  fi
  printf 'details\n'
  if want 1; then
    printf '  1. mean +- sd: server %s +- %s ms, direct %s +- %s ms; curl GET /health alone: %s ms (median)\n' \
      "$(fmt_ms "$D_SRV_MEAN")" "$(fmt_ms "$D_SRV_SD")" "$(fmt_ms "$D_DIR_MEAN")" "$(fmt_ms "$D_DIR_SD")" "$(fmt_ms "$D_HEALTH")"
    printf '     server log (medians): http.request %s ms, job.finished %s ms, queue wait %s ms\n' \
      "$D_http_ms" "$D_job_ms" "$D_wait_ms"
  fi
  if want 2; then
    printf '  2. wall per run: server %s s (min %s, max %s), direct %s s (min %s, max %s)\n' \
      "$(awk -v s="$T_SRV" 'BEGIN { printf "%.2f", s }')" "$(awk -v s="$T_SRV_MIN" 'BEGIN { printf "%.2f", s }')" \
      "$(awk -v s="$T_SRV_MAX" 'BEGIN { printf "%.2f", s }')" "$(awk -v s="$T_DIR" 'BEGIN { printf "%.2f", s }')" \
      "$(awk -v s="$T_DIR_MIN" 'BEGIN { printf "%.2f", s }')" "$(awk -v s="$T_DIR_MAX" 'BEGIN { printf "%.2f", s }')"
    printf '     server log: job.finished %s ms (median), pool slots busy ~%s%% of a run, %s /exec all 200\n' \
      "$T_job_ms" "$T_BUSY" "$T_requests"
  fi
  if want 3; then
    printf '  3. range: server %s..%s s, direct %s..%s s\n' \
      "$(awk -v s="$R_SRV_MIN" 'BEGIN { printf "%.3f", s }')" "$(awk -v s="$R_SRV_MAX" 'BEGIN { printf "%.3f", s }')" \
      "$(awk -v s="$R_DIR_MIN" 'BEGIN { printf "%.3f", s }')" "$(awk -v s="$R_DIR_MAX" 'BEGIN { printf "%.3f", s }')"
    printf '     server log (medians over every server run, redone ones too): http.request %s ms, ffmpeg %s ms;\n' \
      "$R_http_ms" "$R_ffmpeg_phase_ms"
    printf '     per job, the request beyond ffmpeg itself: %s ms (duration ffprobe %s ms) = %s of the direct median\n' \
      "$R_around_ms" "$R_probe_phase_ms" "$(awk -v a="$R_around_ms" -v d="$R_DIR" 'BEGIN { printf "%.1f%%", a / (d * 10) }')"
  fi
  if want 4; then
    printf '  4. ffprobe job: on/off ratio %s; mean +- sd: best-effort %s +- %s ms, off %s +- %s ms\n' \
      "$SD_RATIO" "$(fmt_ms "$SD_ON_MEAN")" "$(fmt_ms "$SD_ON_SD")" "$(fmt_ms "$SD_OFF_MEAN")" "$(fmt_ms "$SD_OFF_SD")"
    printf '     server logs (medians): http.request %s / %s ms, job.finished %s / %s ms (best-effort / off)\n' \
      "$SDON_http_ms" "$SDOFF_http_ms" "$SDON_job_ms" "$SDOFF_job_ms"
    printf '     CPU per job (server + children): best-effort %s ms, off %s ms\n' "$SD_CPU_ON" "$SD_CPU_OFF"
    printf '     render: best-effort - off = %s ms; range best-effort %s..%s s, off %s..%s s; ffmpeg phase %s / %s ms;\n' \
      "$SR_DIFF" "$(awk -v s="$SR_ON_MIN" 'BEGIN { printf "%.3f", s }')" "$(awk -v s="$SR_ON_MAX" 'BEGIN { printf "%.3f", s }')" \
      "$(awk -v s="$SR_OFF_MIN" 'BEGIN { printf "%.3f", s }')" "$(awk -v s="$SR_OFF_MAX" 'BEGIN { printf "%.3f", s }')" \
      "$SRON_ffmpeg_phase_ms" "$SROFF_ffmpeg_phase_ms"
    printf '     CPU per render (server + children): best-effort %s ms, off %s ms\n' "$SR_CPU_ON" "$SR_CPU_OFF"
    printf '     children started (job.started, whole run): best-effort server %s; off server %s\n' \
      "$SB_ON_INFO" "$SB_OFF_INFO"
  fi
  if want 5; then
    printf '  5. canceled %s s after its ffmpeg started; server: ffmpeg gone %s ms after the DELETE was sent (median),\n' \
      "$CANCEL_RUNUP_S" "$C_GONE"
    printf '     next job running at most %s ms after it; server log job.finished -> next job.started %s ms (median)\n' \
      "$C_SRV_MAX" "$C_LOGFREE"
    printf '     old path: the same ffmpeg run directly exited %s ms after SIGTERM (median; range %s..%s ms),\n' \
      "$C_WIND" "$C_WIND_MIN" "$C_WIND_MAX"
    printf '     %s of %s run(s) past cancel_grace_ms %s, where the old server sent SIGKILL: slot held %s ms (median)\n' \
      "$C_CAPPED" "$CANCEL_RUNS" "$CANCEL_GRACE_MS" "$C_OLD"
  fi
  if want 6; then
    printf '  6. dispatch p90: on %s ms, off %s ms (keep-alive connection, each job awaited before the next)\n' \
      "$JD_ON90" "$JD_OFF90"
    printf '     throughput wall per run: on %s s (%s..%s), off %s s (%s..%s); server CPU per job on %s ms, off %s ms\n' \
      "$(awk -v s="$JT_ON" 'BEGIN { printf "%.2f", s }')" "$(awk -v s="$JT_ON_MIN" 'BEGIN { printf "%.2f", s }')" \
      "$(awk -v s="$JT_ON_MAX" 'BEGIN { printf "%.2f", s }')" "$(awk -v s="$JT_OFF" 'BEGIN { printf "%.2f", s }')" \
      "$(awk -v s="$JT_OFF_MIN" 'BEGIN { printf "%.2f", s }')" "$(awk -v s="$JT_OFF_MAX" 'BEGIN { printf "%.2f", s }')" \
      "$JT_CPU_ON" "$JT_CPU_OFF"
    printf '     server logs (medians): http.request %s / %s ms, job.finished %s / %s ms (on / off)\n' \
      "$JTON_http_ms" "$JTOFF_http_ms" "$JTON_job_ms" "$JTOFF_job_ms"
    printf '     journal writes on the on server: %s (ok %s, error %s), mean %s ms; p50/p99 interpolated in the\n' \
      "$JW_N" "$JW_OK" "$JW_ERR" "$JW_MEAN"
    printf '     histogram buckets (50 us .. 250 ms); files after (a)+(b): %s\n' "$JB_ON_FILES"
    printf '     size run: %s of %s jobs in %s s (ffprobe stub printing the real JSON, %s B a result; --sandbox off,\n' \
      "$JS_JOBS" "$JOURNAL_SIZE_JOBS" "$JS_S" "$(stat -c %s "$TMP/probe-direct.json" 2>/dev/null || echo '?')"
    printf '     pool %s, %s connections, TTL 3600 s): while running db %s + wal %s + shm %s = %s bytes,\n' \
      "$JOURNAL_SIZE_POOL" "$JOURNAL_SIZE_CONC" "$JS_DB" "$JS_WAL" "$JS_SHM" "$JS_LIVE"
    printf '     %s rows, %s pages of %s B; at rest (SIGTERM, checkpoint) db %s bytes, wal %s bytes = %s bytes a job\n' \
      "$JS_ROWS" "$JS_PAGES" "$JS_PSIZE" "$JS_REST_DB" "$JS_REST_WAL" "$JS_PER_JOB"
    if [[ $JS_JOBS -lt 100000 ]]; then
      printf '     EXTRAPOLATED to 100,000 jobs (linear, no row expires within the TTL): %s MiB\n' "$JS_AT_100K"
    fi
    printf '     server RSS with them in memory: %s KiB; started again on that journal in %s s (RSS %s KiB): %s\n' \
      "$JS_RSS" "$JS_LOAD_S" "$JS_LOAD_RSS" "$JS_OPENED"
  fi
  printf '  background load just before each part (sampled 1 s): %s\n' "$(IFS=';'; echo "${BG_NOTES[*]}" | sed 's/;/; /g')"
  printf '  other programs above %s%% CPU during a timed call: %s call(s) redone, %s kept after %s retries' \
    "$NOISE_MAX" "$NOISE_RUNS_REDONE" "$NOISE_RUNS_KEPT" "$NOISE_RETRIES"
  if [[ $QUIET_WAIT -gt 0 ]]; then
    printf '; QUIET_WAIT=%s: %s wait(s) for an idle machine timed out' "$QUIET_WAIT" "$NOISY_WAITS"
  fi
  printf '\n' 
  printf '\n'
  printf 'raw: %s (hyperfine JSON, server logs, render- and cancel-direct-command.txt, cancel.json)\n' "$OUT_DIR"
} | tee "$OUT_DIR/summary.txt"
