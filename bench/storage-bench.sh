#!/usr/bin/env bash
# bench/storage-bench.sh: what streaming job outputs into S3 costs cap-server,
# next to writing the same bytes locally and to uploading them with awscli,
# measured in one run on the same machine against the same S3 server: the
# project's Swift s3api test bed (scripts/s3-testbed.sh, a real SigV4-checking
# S3 server on 127.0.0.1), started in a temporary directory for the run.
#
# What it measures (every figure is the median of REPEAT rounds; within a
# round the sides run one after the other, in an order that rotates from
# round to round, so that background load changing over the minutes hits
# every side alike)
#   1. Overlap: one render with a streamable preset (OVERLAP_PRESET, 1080p)
#      of a generated OVERLAP_SECONDS s OVERLAP_SIZE clip through POST /exec,
#      input and output in the bucket, against
#        floor: the same ffmpeg command (the exact preset arguments from
#               packaging/presets.json, `-f mp4 file:OUT`) on a local copy of
#               the clip, writing a local file;
#        seed:  the seed's sequential pipeline: that ffmpeg command, then
#               `/usr/bin/aws s3 cp OUT s3://...`.
#      Ratios cap / floor (goal <= 1.05) and cap / seed (goal < 1).  The
#      server's time includes what the job costs besides ffmpeg: the input's
#      download from the bucket and the duration ffprobe.
#   2. Throughput: one TP_MIB MiB output through cap-server: a presets file of
#      this script's own (--presets) has a streamable preset that turns a
#      one-frame RAW_SIZE clip into TP_MIB MiB of raw video in NUT
#      (loop filter, `-c:v rawvideo -f nut`, size = frames x frame size),
#      against `aws s3 cp` of a local file with the same bytes (written by the
#      same ffmpeg command).  Ratio cap / aws (goal <= 1.0).  cap-server's
#      time includes ffmpeg producing the bytes; as the floor the table also
#      shows that ffmpeg alone writing to /dev/null and to a local file.
#   3. Memory: peak RSS (VmHWM) of a cap-server started for the measurement
#      with --part-size MEM_PART_SIZE --parts-in-flight MEM_PARTS_IN_FLIGHT
#      --upload-budget-mb MEM_BUDGET_MB --pool-cpu 4 --queue-max 8 while
#        MEM_CONC outputs of MEM_SMALL_MIB MiB stream at once, against the
#        bound MEM_CONC x parts_in_flight x part_size + 16 MiB (goal <=);
#        one MEM_SMALL_MIB MiB output, and one MEM_BIG_MIB MiB output:
#        equal within 5% (goal |big / small - 1| <= 0.05).
#      A fresh server per measurement, so that VmHWM is that run's peak.
#   Parts 1 and 2 run one cap-server with the storage settings it ships with
#   (part size 8 MiB, 4 parts in flight, 128 MiB budget) unless PART_SIZE,
#   PARTS_IN_FLIGHT or UPLOAD_BUDGET_MB say otherwise.  cap-server is driven
#   by a small Python client (POST /exec async, then GET /jobs/ID?wait=90
#   until done) that times from the POST to the final answer; the local
#   sides are timed around the commands (process start-up included, also
#   awscli's, which is part of what the seed pipeline costs).
#   Between sides the outputs are deleted from the bucket and `sync` runs
#   (not timed), so that the disk neither fills nor carries one side's
#   write-back into the next.  Before starting, the free space where the bed
#   lives is checked; sizes are halved (with a message) until they fit.
#   For every timed run the script works out how much of the CPUs other
#   programs used meanwhile (/proc/stat busy time minus the CPU of what was
#   measured: this script's children, cap-server and its children, the bed's
#   processes) and reports it per side (median/max), with the CPU time
#   (user+sys) of the measured programs: on a shared machine it tells a
#   slower run from a run that did more work.  Before each round the load is
#   sampled too (QUIET_WAIT can wait for a calm machine).
#   Where the time goes is read from cap-server's JSON log (job.queued,
#   job.started, job.finished dur_ms) and from the bed's proxy log (every S3
#   request with its start, end and duration: input GET, part PUTs,
#   CompleteMultipartUpload): the details section splits a job into input
#   fetch, duration probe, ffmpeg until its last byte (the last part's PUT
#   starts at EOF) and the upload tail after it.
#
# Environment (defaults in brackets; BENCH_QUICK=1 switches to the values in
# braces, for a smoke run of a few minutes)
#   CAP_SERVER_BIN     cap-server binary (built with S3)   [<repo>/build/cap-server]
#   BENCH_QUICK        1 = quick smoke run, smaller sizes  [0]
#   REPEAT             rounds per part; medians reported   [3] {1}
#   BENCH_PARTS        which parts to run                  ["1 2 3"]
#   OVERLAP_PRESET     streamable preset of part 1         [1080p]
#   OVERLAP_SECONDS    length of the part 1 clip (s)       [15] {6}
#   OVERLAP_SIZE       size of the part 1 clip             [1280x720]
#   OVERLAP_WARMUP     untimed runs of the render (cap-server and local)
#                      before part 1's rounds (the first encode of a run is
#                      often slower: caches, CPU clocks)   [1]
#   TP_MIB             part 2 output size, MiB             [1024] {256}
#   RAW_SIZE           frame size of the raw outputs       [1920x1080]
#   PART_SIZE, PARTS_IN_FLIGHT, UPLOAD_BUDGET_MB
#                      storage settings of parts 1-2       [server defaults]
#   MEM_CONC           concurrent outputs, part 3          [4]
#   MEM_SMALL_MIB      part 3 output size, MiB             [1024] {256}
#   MEM_BIG_MIB        part 3 large output size, MiB       [4096] {1024}
#   MEM_PART_SIZE      part 3 --part-size                  [5242880]
#   MEM_PARTS_IN_FLIGHT part 3 --parts-in-flight           [2]
#   MEM_BUDGET_MB      part 3 --upload-budget-mb           [48]
#   AWS_CLI            the independent S3 client (Debian's awscli v2; another
#                      `aws` may come first on PATH)       [/usr/bin/aws]
#   QUIET_WAIT         before each round wait up to this many seconds for the
#                      machine to calm down (< 10% CPU busy); 0 = no wait [0]
#   OUT_DIR            summary.txt, results.jsonl, logs
#                      [bench/results/storage-<UTC timestamp>/, git-ignored]
#   KEEP_TMP           1 = keep the temporary directory (bed, clips)  [0]
#   TMPDIR             where the temporary directory (and the bed's objects)
#                      go; needs user xattrs (ext4 /tmp has them)  [/tmp]
# awscli runs with an empty config file (AWS_CONFIG_FILE), i.e. its default
# transfer settings (8 MiB chunks, 10 concurrent requests), and always with
# --endpoint-url (awscli 2.9 ignores AWS_ENDPOINT_URL).
#
# The report can be made again from a kept OUT_DIR (its logs are there):
#   python3 OUT_DIR/helper.py report OUT_DIR/results.jsonl OUT_DIR/meta.json
#
# Usage: bench/storage-bench.sh            (from anywhere; needs no build step)
#        BENCH_QUICK=1 bench/storage-bench.sh
#        CAP_SERVER_BIN=build-s3/cap-server BENCH_PARTS="2 3" bench/storage-bench.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
PRESETS_JSON=$REPO_DIR/packaging/presets.json
TESTBED=$REPO_DIR/scripts/s3-testbed.sh

CAP_SERVER_BIN=${CAP_SERVER_BIN:-$REPO_DIR/build/cap-server}
BENCH_QUICK=${BENCH_QUICK:-0}
if [[ $BENCH_QUICK == 1 ]]; then
  q() { printf '%s' "$2"; }
else
  q() { printf '%s' "$1"; }
fi
REPEAT=${REPEAT:-$(q 3 1)}
BENCH_PARTS=${BENCH_PARTS:-1 2 3}
OVERLAP_PRESET=${OVERLAP_PRESET:-1080p}
OVERLAP_SECONDS=${OVERLAP_SECONDS:-$(q 15 6)}
OVERLAP_SIZE=${OVERLAP_SIZE:-1280x720}
OVERLAP_WARMUP=${OVERLAP_WARMUP:-1}
TP_MIB=${TP_MIB:-$(q 1024 256)}
RAW_SIZE=${RAW_SIZE:-1920x1080}
PART_SIZE=${PART_SIZE:-}
PARTS_IN_FLIGHT=${PARTS_IN_FLIGHT:-}
UPLOAD_BUDGET_MB=${UPLOAD_BUDGET_MB:-}
MEM_CONC=${MEM_CONC:-4}
MEM_SMALL_MIB=${MEM_SMALL_MIB:-$(q 1024 256)}
MEM_BIG_MIB=${MEM_BIG_MIB:-$(q 4096 1024)}
MEM_PART_SIZE=${MEM_PART_SIZE:-5242880}
MEM_PARTS_IN_FLIGHT=${MEM_PARTS_IN_FLIGHT:-2}
MEM_BUDGET_MB=${MEM_BUDGET_MB:-48}
AWS_CLI=${AWS_CLI:-/usr/bin/aws}
QUIET_WAIT=${QUIET_WAIT:-0}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/results/storage-$(date -u +%Y%m%dT%H%M%SZ)}
KEEP_TMP=${KEEP_TMP:-0}

BENCH_NAME=storage-bench
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in REPEAT OVERLAP_SECONDS TP_MIB MEM_CONC MEM_SMALL_MIB MEM_BIG_MIB MEM_PART_SIZE MEM_PARTS_IN_FLIGHT MEM_BUDGET_MB; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "$v must be a positive integer (got '${!v}')"
done
for v in PART_SIZE PARTS_IN_FLIGHT UPLOAD_BUDGET_MB; do
  [[ -z ${!v} || ${!v} =~ ^[0-9]+$ ]] || die "$v must be a positive integer or empty (got '${!v}')"
done
for v in QUIET_WAIT OVERLAP_WARMUP; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
for v in OVERLAP_SIZE RAW_SIZE; do
  [[ ${!v} =~ ^[0-9]+x[0-9]+$ ]] || die "$v must look like WIDTHxHEIGHT (got '${!v}')"
done
for p in $BENCH_PARTS; do [[ $p == [123] ]] || die "BENCH_PARTS: '$p' is not one of 1 2 3"; done
[[ -n ${BENCH_PARTS// /} ]] || die "BENCH_PARTS is empty"
want() { [[ " $BENCH_PARTS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- processes ---
CAP_PID=""
TMP=""
BED=""
BED_UP=0


cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$CAP_PID" cap-server
  CAP_PID=""
  if [[ $BED_UP == 1 ]]; then
    "$TESTBED" stop "$BED" >/dev/null 2>&1 || log "storage-bench: stopping the S3 bed in $BED failed"
  fi
  if [[ -n $TMP && -d $TMP ]]; then
    if [[ -d $OUT_DIR ]]; then
      # Server logs and the bed's proxy log (every S3 request, with timings)
      # go next to the results; objects and clips are not worth keeping.
      cp "$TMP"/cap-*.log "$OUT_DIR/" 2>/dev/null || true
      [[ -f $BED/log/proxy.log ]] && gzip -c "$BED/log/proxy.log" >"$OUT_DIR/s3-proxy.log.gz" 2>/dev/null
    fi
    if [[ $KEEP_TMP == 1 ]]; then log "storage-bench: kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "storage-bench: interrupted"; exit 130' INT TERM

# -------------------------------------------------------------------- tools ---

command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || apt_install python3
command -v gzip >/dev/null || apt_install gzip
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then apt_install ffmpeg; fi
# The bed (Swift, memcached) and awscli: the bed's own installer, quietly.
if [[ ! -x $AWS_CLI ]] || ! command -v swift-proxy-server >/dev/null || ! command -v memcached >/dev/null; then
  log "storage-bench: installing the S3 test bed's packages (scripts/s3-testbed.sh install)"
  inst_log=$(mktemp)
  if ! as_root "$TESTBED" install >"$inst_log" 2>&1; then
    cat "$inst_log" >&2; rm -f "$inst_log"; die "installing the S3 test bed's packages failed"
  fi
  rm -f "$inst_log"
fi
[[ -x $AWS_CLI ]] || die "awscli not found at $AWS_CLI (set AWS_CLI)"

[[ -x $CAP_SERVER_BIN ]] || die "cap-server binary not found or not executable: $CAP_SERVER_BIN (build it, or set CAP_SERVER_BIN)"
cap_help=$("$CAP_SERVER_BIN" --help 2>&1 || true)
[[ $cap_help == *--part-size* ]] \
  || die "$CAP_SERVER_BIN has no S3 storage (--part-size missing from --help); build the current tree"
[[ -f $PRESETS_JSON ]] || die "presets file not found: $PRESETS_JSON"

FFMPEG=$(command -v ffmpeg)
FFPROBE=$(command -v ffprobe)
CURL=$(command -v curl)
PYTHON=$(command -v python3)

mkdir -p "$OUT_DIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/storage-bench.XXXXXX")
BED=$TMP/bed
DATA=$TMP/data
mkdir -p "$DATA" "$TMP/local"
RESULTS=$OUT_DIR/results.jsonl
: >"$RESULTS"

# ------------------------------------------------------------------ helpers ---
HELPER=$TMP/helper.py
cat >"$HELPER" <<'PY'
import datetime, gzip, http.client, json, math, os, statistics, sys, threading, time, urllib.parse

OUT = "."  # the run's OUT_DIR, once report() has read meta.json

def client(port, token_file, preset, input_key, key_fmt, n):
    """Starts n render jobs at once (POST /exec async, one connection each),
    long-polls each (GET /jobs/ID?wait=90) until it is done, and prints one
    JSON line: t0, t1 (epoch s), wall_s, and per job its id, key, bytes,
    parts, t0, t1.  Exits 1 unless every job succeeded."""
    port, n = int(port), int(n)
    token = open(token_file).read().strip()
    auth = {"Authorization": "Bearer " + token}
    barrier = threading.Barrier(n)
    out, errs = [None] * n, []

    def one(i):
        key = key_fmt % i if "%" in key_fmt else key_fmt
        body = json.dumps({"capability": "ffmpeg-render", "input_key": input_key,
                           "output_key": key, "preset": preset, "async": True})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
        barrier.wait()
        t0 = time.time()
        try:
            conn.request("POST", "/exec", body=body, headers=dict(auth, **{"Content-Type": "application/json"}))
            r = conn.getresponse()
            data = r.read()
            if r.status not in (200, 202):
                raise RuntimeError("POST /exec: HTTP %d %s" % (r.status, data[:300]))
            j = json.loads(data)
            jid = j["job_id"]
            while j.get("status") not in ("succeeded", "failed", "canceled"):
                conn.request("GET", "/jobs/%s?wait=90" % jid, headers=auth)
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    raise RuntimeError("GET /jobs/%s: HTTP %d %s" % (jid, r.status, data[:300]))
                j = json.loads(data)
            t1 = time.time()
            if j["status"] != "succeeded":
                raise RuntimeError("job %s %s: %s" % (jid, j["status"], json.dumps(j.get("error"))[:400]))
            res = j.get("result") or j
            out[i] = {"job_id": jid, "key": key, "bytes": res.get("bytes"), "parts": res.get("parts"),
                      "etag": res.get("etag"), "t0": t0, "t1": t1}
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errs.append("job %d (%s): %s" % (i, key, e))
        finally:
            conn.close()

    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ths: t.start()
    for t in ths: t.join()
    if errs:
        for e in errs:
            sys.stderr.write("storage-bench client: %s\n" % e)
        sys.exit(1)
    t0 = min(o["t0"] for o in out)
    t1 = max(o["t1"] for o in out)
    print(json.dumps({"t0": t0, "t1": t1, "wall_s": t1 - t0, "jobs": out}))

def presets(src, dst, overlap, frames_spec, raw_size):
    """Writes the presets file of the run: OVERLAP copied verbatim from src,
    plus raw-NAME presets (NAME:FRAMES, comma-separated): FRAMES frames of
    the input's first frame looped, as raw video in NUT (streamable)."""
    p = json.load(open(src))
    if overlap not in p:
        sys.exit("preset %s is not in %s" % (overlap, src))
    if not p[overlap].get("streamable"):
        sys.exit("preset %s is not streamable" % overlap)
    outp = {overlap: p[overlap]}
    for spec in frames_spec.split(","):
        name, frames = spec.split(":")
        outp["raw-" + name] = {
            "description": "%s frames of raw %s video in NUT (storage benchmark)" % (frames, raw_size),
            "class": "cpu", "format": "nut", "ext": "nut", "streamable": True,
            "encoders": ["rawvideo"], "timeout_s": 7200,
            "args": ["-map", "0:v:0", "-vf", "loop=loop=-1:size=1", "-frames:v", frames,
                     "-c:v", "rawvideo", "-pix_fmt", "yuv420p"]}
    json.dump(outp, open(dst, "w"), indent=1)

def preset_args(path, name):
    """The preset's args, one per line, then --format=FORMAT."""
    p = json.load(open(path))[name]
    for a in p["args"]:
        print(a)
    print("--format=" + p["format"])

def port_of(path):
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "server.start":
            print(e["port"]); return
    print("")

def health(path, key):
    """One value of /health's storage object (JSON on stdin)."""
    print(json.load(sys.stdin)["storage"][key])

# ----------------------------------------------------------------- report ---
def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()

_proxy = {}
def proxy_reqs(path):
    """Client requests in the bed's proxy log (Swift proxy_logging): method,
    path, query, status, bytes received, request time, start, end."""
    if path in _proxy:
        return _proxy[path]
    reqs = []
    try:
        f = open(path, errors="replace")
    except OSError:
        # Reading a kept run again (report RESULTS META): the gzipped copy.
        try:
            f = gzip.open(os.path.join(OUT, "s3-proxy.log.gz"), "rt", errors="replace")
        except OSError:
            _proxy[path] = reqs; return reqs
    for line in f:
        if not line.startswith("proxy-server: "):
            continue
        x = line[len("proxy-server: "):].split()
        if len(x) < 21 or x[0] == "-":   # "-": Swift's own subrequests
            continue
        try:
            p, _, qs = urllib.parse.unquote(x[4]).partition("?")
            reqs.append({"method": x[3], "path": p, "query": qs, "status": int(x[6]),
                         "bytes": 0 if x[10] == "-" else int(x[10]), "rt": float(x[15]),
                         "start": float(x[18]), "end": float(x[19])})
        except (ValueError, IndexError):
            continue
    _proxy[path] = reqs
    return reqs

_events = {}
def job_events(path):
    """job_id -> {queued, probe, render, finished, dur_ms} from a server log."""
    if path in _events:
        return _events[path]
    ev = {}
    warns = 0
    if not os.path.exists(path):
        path = os.path.join(OUT, os.path.basename(path))
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("level") in ("warn", "error"):
            warns += 1
        j = e.get("job_id")
        if not j:
            continue
        d = ev.setdefault(j, {})
        k = e.get("event")
        if k == "job.queued":
            d["queued"] = ts(e["ts"])
        elif k == "job.started":
            d["render" if e.get("phase") == "render" else "probe"] = ts(e["ts"])
        elif k == "job.finished":
            d["finished"] = ts(e["ts"]); d["dur_ms"] = e.get("dur_ms")
    ev["_warns"] = warns
    _events[path] = ev
    return ev

def s3_of(reqs, path, t0, t1):
    """The S3 requests on one object path between t0 and t1 (epoch s)."""
    rs = [r for r in reqs if r["path"] == path and t0 - 0.5 <= r["start"] <= t1
          and r["method"] in ("GET", "PUT", "POST")]  # not the DELETEs of the clean-up
    parts = [r for r in rs if r["method"] == "PUT" and "partNumber=" in r["query"]]
    single = [r for r in rs if r["method"] == "PUT" and "partNumber=" not in r["query"]]
    complete = [r for r in rs if r["method"] == "POST" and "uploadId=" in r["query"]]
    create = [r for r in rs if r["method"] == "POST" and r["query"].startswith("uploads")]
    gets = [r for r in rs if r["method"] == "GET"]
    puts = parts + single
    s = {"n_parts": len(parts), "n_single": len(single), "gets": gets,
         "bad": [r for r in rs if r["status"] >= 300]}
    if puts:
        s["first_put"] = min(r["start"] for r in puts)
        s["last_put"] = max(r["start"] for r in puts)
        s["put_end"] = max(r["end"] for r in puts)
        s["part_rt"] = statistics.median(r["rt"] for r in puts)
        s["bytes"] = sum(r["bytes"] for r in puts)
    s["complete_rt"] = complete[-1]["rt"] if complete else None
    s["create_start"] = create[0]["start"] if create else None
    s["first"] = min(r["start"] for r in rs) if rs else None
    s["end"] = max(r["end"] for r in rs) if rs else None
    return s

def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else float("nan")

def fmt_s(x):
    return "-" if x is None or math.isnan(x) else ("%.3f" % x if x < 100 else "%.1f" % x)

def fmt_ms(x):
    return "-" if x is None or math.isnan(x) else "%.0f" % (x * 1000)

def verdict(x, op, g):
    if x is None or math.isnan(x):
        return "-"
    ok = {"<=": x <= g, "<": x < g, "~": abs(x - 1) <= g}[op]
    return "met" if ok else "MISSED"

def others(label_recs):
    """'name median%/max%' of the OTHERS share of each side's timed runs."""
    out = []
    for name, rs in label_recs:
        xs = [r["others"] for r in rs if r.get("others") is not None]
        if xs:
            out.append("%s %.0f%%/%.0f%%" % (name, statistics.median(xs), max(xs)))
    return ", ".join(out) or "-"

def cap_phases(rec, meta):
    """Phases of each job of a cap-server run: input fetch (queued ->
    duration probe; the input GET is in it), probe, ffmpeg until the last
    part's PUT started (EOF), upload tail (that PUT's start -> finished)."""
    reqs = proxy_reqs(meta["proxy_log"])
    ev = job_events(rec["server_log"])
    out = []
    run = rec["run"]
    for j in run["jobs"]:
        e = ev.get(j["job_id"], {})
        s = s3_of(reqs, "/%s/%s/%s" % (meta["bucket"], meta["prefix"], j["key"]), j["t0"], j["t1"])
        gin = s3_of(reqs, "/%s/%s/%s" % (meta["bucket"], meta["prefix"], rec["input_key"]), j["t0"], j["t1"])
        ph = {"job_s": (e["dur_ms"] / 1000.0) if e.get("dur_ms") is not None else None,
              "client_s": j["t1"] - j["t0"], "bytes": j["bytes"], "parts": j["parts"],
              "n_parts": s["n_parts"], "n_single": s["n_single"],
              "part_rt": s.get("part_rt"), "complete_rt": s.get("complete_rt"),
              "get_rt": gin["gets"][0]["rt"] if gin["gets"] else None, "bad": len(s["bad"]) + len(gin["bad"])}
        if "queued" in e and "probe" in e:
            ph["fetch_s"] = e["probe"] - e["queued"]
        if "probe" in e and "render" in e:
            ph["probe_s"] = e["render"] - e["probe"]
        if "render" in e and "last_put" in s:
            ph["ffmpeg_s"] = s["last_put"] - e["render"]
            # Time from the first part's PUT to the last byte stored.
            ph["upload_span_s"] = (s["end"] or s["put_end"]) - s["first_put"]
        if "finished" in e and "last_put" in s:
            ph["tail_s"] = e["finished"] - s["last_put"]
        if "bytes" in s and ph.get("upload_span_s"):
            ph["mbps"] = s["bytes"] / 1048576.0 / ph["upload_span_s"]
        out.append(ph)
    return out

def aws_phases(rec, meta):
    """awscli's run: start-up until its first request, requests, exit."""
    reqs = proxy_reqs(meta["proxy_log"])
    s = s3_of(reqs, "/%s/%s" % (meta["bucket"], rec["key"]), rec["aws_t0"], rec["aws_t1"])
    ph = {"n_parts": s["n_parts"], "n_single": s["n_single"], "part_rt": s.get("part_rt"),
          "complete_rt": s.get("complete_rt"), "bad": len(s["bad"])}
    if s["first"] is not None:
        ph["startup_s"] = s["first"] - rec["aws_t0"]
        ph["requests_s"] = s["end"] - s["first"]
        ph["exit_s"] = rec["aws_t1"] - s["end"]
        if "bytes" in s and ph["requests_s"] > 0:
            ph["mbps"] = s["bytes"] / 1048576.0 / ph["requests_s"]
    return ph

def report(results, metafile):
    global OUT
    meta = json.load(open(metafile))
    OUT = meta["out_dir"]
    recs = [json.loads(l) for l in open(results) if l.strip()]
    P = lambda part, **kw: [r for r in recs if r["part"] == part and all(r.get(k) == v for k, v in kw.items())]
    L = []
    w = L.append
    w("cap-server storage benchmark  %s" % meta["date"])
    w("machine: %s; %s; %s" % (meta["machine"], meta["ffmpeg"], meta["aws"]))
    w("S3: the Swift s3api test bed (scripts/s3-testbed.sh) on 127.0.0.1, objects on %s" % meta["bed_fs"])
    w("server: %s" % meta["server"])
    if meta.get("p12_settings"):
        w("parts 1-2 storage: %s" % meta["p12_settings"])
    if meta.get("quick"):
        w("[BENCH_QUICK=1: smoke run, smaller sizes, numbers are rough]")
    if meta.get("scaled"):
        w("[sizes scaled down for free disk space: %s]" % meta["scaled"])
    w("")
    W = 52
    head = "%-" + str(W) + "s %13s %13s %8s %8s  %s"
    w(head % ("measurement (median of %d round%s)" % (meta["repeat"], "s" if meta["repeat"] != 1 else ""),
              "cap-server", "baseline", "ratio", "goal", "verdict"))
    w(head % ("-" * W, "-" * 13, "-" * 13, "-" * 8, "-" * 8, "-------"))
    num = lambda x, unit: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else (
        ("%.3f %s" if unit == "s" else "%.1f %s") % (x, unit))

    def row(label, a, b, unit, goal, op, g):
        ratio = a / b if a == a and b == b and b else float("nan")
        w(head % (label, num(a, unit), num(b, unit), "-" if math.isnan(ratio) else "%.3f" % ratio, goal,
                  verdict(ratio, op, g)))

    def info(label, a, b, unit="s"):
        w(head % (label, "" if a is None else num(a, unit), "" if b is None else num(b, unit), "", "", "(info)"))

    details = []
    d = details.append
    cpu = lambda rs, k: med([r.get(k) for r in rs])

    if 1 in meta["parts"]:
        C, F, S = P(1, side="cap"), P(1, side="floor"), P(1, side="seed")
        cap = med([r["run"]["wall_s"] for r in C])
        flo = med([r["wall_s"] for r in F])
        seed = med([r["wall_s"] for r in S])
        w("1. overlap: %s render into S3, %s %s s clip" % (meta["overlap_preset"], meta["overlap_size"], meta["overlap_seconds"]))
        row("   vs the same ffmpeg -> local file (the floor)", cap, flo, "s", "<= 1.05", "<=", 1.05)
        row("   vs seed: ffmpeg -> local file, then aws s3 cp", cap, seed, "s", "< 1", "<", 1.0)
        phs = [p for r in C for p in cap_phases(r, meta)]
        ap = [aws_phases(r, meta) for r in S]
        single = phs and phs[0]["n_single"] and not phs[0]["n_parts"]
        d("  1. cap-server, per job (medians): client %s s = job.finished dur_ms %s s + HTTP/queue %s ms;"
          % (fmt_s(med([p["client_s"] for p in phs])), fmt_s(med([p.get("job_s") for p in phs])),
             fmt_ms(med([p["client_s"] - (p.get("job_s") or 0) for p in phs]))))
        d("     job = input fetch %s ms (its GET %s ms) + duration ffprobe %s ms + ffmpeg to EOF %s ms + upload tail %s ms"
          % (fmt_ms(med([p.get("fetch_s") for p in phs])), fmt_ms(med([p.get("get_rt") for p in phs])),
             fmt_ms(med([p.get("probe_s") for p in phs])), fmt_ms(med([p.get("ffmpeg_s") for p in phs])),
             fmt_ms(med([p.get("tail_s") for p in phs]))))
        if single:
            d("     output %s bytes, under one part: one PUT at EOF, %s ms" % (phs[0]["bytes"], fmt_ms(med([p.get("part_rt") for p in phs]))))
        else:
            d("     output %s bytes in %s parts: part PUT %s ms (median), CompleteMultipartUpload %s ms"
              % (phs[0]["bytes"] if phs else "-", phs[0]["parts"] if phs else "-",
                 fmt_ms(med([p.get("part_rt") for p in phs])), fmt_ms(med([p.get("complete_rt") for p in phs]))))
        d("     floor: ffmpeg %s s, output %s bytes; cap-server's ffmpeg ran %s s of it to EOF"
          % (fmt_s(flo), F[0].get("bytes", "-") if F else "-", fmt_s(med([p.get("ffmpeg_s") for p in phs]))))
        d("     seed: ffmpeg %s s + aws s3 cp %s s (start-up to first request %s ms, requests %s ms, exit %s ms)"
          % (fmt_s(med([r["ffmpeg_s"] for r in S])), fmt_s(med([r["aws_s"] for r in S])),
             fmt_ms(med([a.get("startup_s") for a in ap])), fmt_ms(med([a.get("requests_s") for a in ap])),
             fmt_ms(med([a.get("exit_s") for a in ap]))))
        d("     CPU user+sys (s): cap-server's children (ffprobe + ffmpeg) %s + cap-server %s; floor ffmpeg %s; seed ffmpeg %s + aws %s"
          % (fmt_s(cpu(C, "cpu_kids")), fmt_s(cpu(C, "cpu_self")), fmt_s(cpu(F, "cpu")),
             fmt_s(cpu(S, "cpu_ffmpeg")), fmt_s(cpu(S, "cpu_aws"))))
        d("     per round (s): " + "; ".join(
            "r%d cap %s floor %s seed %s" % (r["round"], fmt_s(r["run"]["wall_s"]),
                                             fmt_s(next((x["wall_s"] for x in F if x["round"] == r["round"]), None)),
                                             fmt_s(next((x["wall_s"] for x in S if x["round"] == r["round"]), None)))
            for r in C))
        d("     other programs' share of the CPUs during the timed runs (median/max): "
          + others((("cap", C), ("floor", F), ("seed", S))))
        if any(p["bad"] for p in phs) or any(a["bad"] for a in ap):
            d("     NOTE: the proxy log shows S3 requests answered >= 300 (retries) during part 1")

    if 2 in meta["parts"]:
        C, A, N, F = P(2, side="cap"), P(2, side="aws"), P(2, side="ffnull"), P(2, side="fffile")
        cap = med([r["run"]["wall_s"] for r in C])
        aws = med([r["wall_s"] for r in A])
        null = med([r["wall_s"] for r in N])
        ffile = med([r["wall_s"] for r in F])
        mib = meta["tp_bytes"] / 1048576.0
        w("2. throughput: %.0f MiB output (%s raw video in NUT)" % (mib, meta["raw_size"]))
        row("   cap-server (ffmpeg -> pipe -> parts) vs aws s3 cp", cap, aws, "s", "<= 1.0", "<=", 1.0)
        info("   the same, MiB/s", mib / cap, mib / aws, "MiB/s")
        info("   floor: that ffmpeg alone -> /dev/null", None, null)
        info("   floor: that ffmpeg alone -> local file", None, ffile)
        phs = [p for r in C for p in cap_phases(r, meta)]
        ap = [aws_phases(r, meta) for r in A]
        d("  2. cap-server (medians): client %s s, job.finished dur_ms %s s = fetch %s ms + probe %s ms + ffmpeg to EOF %s ms + tail %s ms"
          % (fmt_s(med([p["client_s"] for p in phs])), fmt_s(med([p.get("job_s") for p in phs])),
             fmt_ms(med([p.get("fetch_s") for p in phs])), fmt_ms(med([p.get("probe_s") for p in phs])),
             fmt_ms(med([p.get("ffmpeg_s") for p in phs])), fmt_ms(med([p.get("tail_s") for p in phs]))))
        d("     %s bytes in %s parts, part PUT %s ms (median), complete %s ms; first part PUT to stored: %s s = %.0f MiB/s"
          % (phs[0]["bytes"] if phs else "-", phs[0]["parts"] if phs else "-", fmt_ms(med([p.get("part_rt") for p in phs])),
             fmt_ms(med([p.get("complete_rt") for p in phs])), fmt_s(med([p.get("upload_span_s") for p in phs])),
             med([p.get("mbps") for p in phs])))
        d("     aws s3 cp: start-up to first request %s ms, requests %s s (%s parts, part PUT %s ms, complete %s ms, %.0f MiB/s), exit %s ms"
          % (fmt_ms(med([a.get("startup_s") for a in ap])), fmt_s(med([a.get("requests_s") for a in ap])),
             ap[0]["n_parts"] if ap else "-", fmt_ms(med([a.get("part_rt") for a in ap])),
             fmt_ms(med([a.get("complete_rt") for a in ap])), med([a.get("mbps") for a in ap]),
             fmt_ms(med([a.get("exit_s") for a in ap]))))
        d("     CPU user+sys (s): cap-server %s + its children %s; aws s3 cp %s; ffmpeg -> /dev/null %s, -> file %s"
          % (fmt_s(cpu(C, "cpu_self")), fmt_s(cpu(C, "cpu_kids")), fmt_s(cpu(A, "cpu")),
             fmt_s(cpu(N, "cpu")), fmt_s(cpu(F, "cpu"))))
        byround = lambda rs, k: fmt_s(next((x["wall_s"] for x in rs if x["round"] == k), None))
        d("     per round (s): " + "; ".join(
            "r%d cap %s aws %s null %s file %s" % (r["round"], fmt_s(r["run"]["wall_s"]), byround(A, r["round"]),
                                                   byround(N, r["round"]), byround(F, r["round"]))
            for r in C))
        d("     other programs' share of the CPUs during the timed runs (median/max): "
          + others((("cap", C), ("aws", A), ("null", N), ("file", F))))
        if any(p["bad"] for p in phs) or any(a["bad"] for a in ap):
            d("     NOTE: the proxy log shows S3 requests answered >= 300 (retries) during part 2")

    if 3 in meta["parts"]:
        conc, small, big = P(3, case="conc"), P(3, case="small"), P(3, case="big")
        bound = meta["mem_bound"] / 1048576.0
        hc = med([r["hwm_kb"] for r in conc]) / 1024
        hs = med([r["hwm_kb"] for r in small]) / 1024
        hb = med([r["hwm_kb"] for r in big]) / 1024
        base = med([r["base_kb"] for r in conc + small + big]) / 1024
        part = meta["mem_part"] / 1048576.0
        w("3. memory: peak RSS (VmHWM) of cap-server")
        row("   %d x %d MiB at once vs %d x %d x %.0f MiB + 16 MiB" % (meta["mem_conc"], meta["mem_small_mib"],
            meta["mem_conc"], meta["mem_pif"], part), hc, bound, "MiB", "<= 1.0", "<=", 1.0)
        row("   one %d MiB output vs one %d MiB output" % (meta["mem_big_mib"], meta["mem_small_mib"]),
            hb, hs, "MiB", "1+-0.05", "~", 0.05)
        bufmax = conc[0]["buffers_max"] if conc else (small[0]["buffers_max"] if small else 0)
        d("  3. server flags: %s" % meta["mem_settings"])
        d("     VmHWM per round (MiB): " + "; ".join(
            "%s: %s" % (name, " ".join("%.1f" % (r["hwm_kb"] / 1024) for r in rs))
            for name, rs in (("%d x %d MiB" % (meta["mem_conc"], meta["mem_small_mib"]), conc),
                             ("1 x %d MiB" % meta["mem_small_mib"], small), ("1 x %d MiB" % meta["mem_big_mib"], big))))
        d("     RSS right after start-up (no job yet) %.1f MiB; peak minus that: %d at once %.1f MiB, one small %.1f MiB, one big %.1f MiB"
          % (base, meta["mem_conc"], hc - base, hs - base, hb - base))
        d("     part buffers: the pool holds at most %s x %.0f MiB = %.0f MiB (upload budget %d MiB); %d uploads x %d parts in flight = %.0f MiB"
          % (bufmax, part, (bufmax or 0) * part, meta["mem_budget"], meta["mem_conc"], meta["mem_pif"],
             meta["mem_conc"] * meta["mem_pif"] * part))
        for name, rs in (("%d at once" % meta["mem_conc"], conc), ("one small", small), ("one big", big)):
            phs = [p for r in rs for p in cap_phases(r, meta)]
            d("     %s: wall %s s, per job %s s, %s parts each, part PUT %s ms, %.0f MiB/s per upload; CPU cap-server %s s, children %s s"
              % (name, fmt_s(med([r["run"]["wall_s"] for r in rs])), fmt_s(med([p.get("job_s") for p in phs])),
                 phs[0]["parts"] if phs else "-", fmt_ms(med([p.get("part_rt") for p in phs])), med([p.get("mbps") for p in phs]),
                 fmt_s(cpu(rs, "cpu_self")), fmt_s(cpu(rs, "cpu_kids"))))

        d("     other programs' share of the CPUs during the timed runs (median/max): "
          + others((("%d at once" % meta["mem_conc"], conc), ("one small", small), ("one big", big))))

    w("")
    w("details")
    L.extend(details)
    warns = sum(job_events(f)["_warns"] for f in set(r["server_log"] for r in recs if "server_log" in r))
    w("  server logs: %d warn/error line(s); multipart uploads left open in the bucket after the run: %s"
      % (warns, meta.get("leftover_uploads", "?")))
    w("  CPU busy before the rounds (sampled 0.5 s, other programs): %s" % (meta.get("bg") or "-"))
    w("")
    w("raw: %s (results.jsonl, meta.json, helper.py, cap-*.log, s3-proxy.log.gz)" % meta["out_dir"])
    print("\n".join(L))

if __name__ == "__main__":
    fns = {"client": client, "presets": presets, "preset_args": preset_args, "port_of": port_of,
           "health": health, "report": report}
    fns[sys.argv[1]](*sys.argv[2:])
PY

now() { printf '%s' "$EPOCHREALTIME"; }
# KIDS: CPU (user + system, s) of this shell's finished children so far.
# `times` must run in this shell, not in a $(...) subshell (whose children
# start at 0): call kids_cpu directly, then read KIDS.
KIDS=0
kids_cpu() {
  times >"$TMP/times"
  KIDS=$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); n += a[1] * 60 + a[2] } printf "%.3f\n", n }' "$TMP/times")
}
# cap-server's own CPU and that of the children it reaped (ffprobe, ffmpeg),
# from /proc/PID/stat in clock ticks: "self kids" (s).
CLK_TCK=$(getconf CLK_TCK)
srv_cpu() {
  sed 's/^.*) //' "/proc/$CAP_PID/stat" | awk -v hz="$CLK_TCK" '{ printf "%.2f %.2f\n", ($12 + $13) / hz, ($14 + $15) / hz }'
}
# OTHERS: the share (%) of all CPUs that programs other than the ones
# measured used during a timed run: the machine's busy time (/proc/stat)
# minus what this shell's children (ffmpeg, aws, the client), cap-server and
# its children, and the bed's processes used.  Between noise_begin and
# noise_end; noise_begin/noise_end also update KIDS.
BED_PIDS=()
NCPU=$(nproc)
proc_ticks() { # pids...: utime + stime + cutime + cstime
  local p
  for p in "$@"; do [[ -n $p ]] && sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null; done \
    | awk '{ n += $12 + $13 + $14 + $15 } END { print n + 0 }'
}
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
noise_begin() {
  kids_cpu
  N_K0=$KIDS N_P0=$(proc_ticks "$CAP_PID" "${BED_PIDS[@]}") N_M0=$(machine_ticks) N_T0=$EPOCHREALTIME
}
noise_end() {
  local t1=$EPOCHREALTIME m1 p1
  m1=$(machine_ticks)
  p1=$(proc_ticks "$CAP_PID" "${BED_PIDS[@]}")
  kids_cpu
  OTHERS=$(awk -v m=$((m1 - N_M0)) -v p=$((p1 - N_P0)) -v k0="$N_K0" -v k1="$KIDS" -v hz="$CLK_TCK" \
    -v t0="$N_T0" -v t1="$t1" -v n="$NCPU" \
    'BEGIN { o = (m - p - (k1 - k0) * hz) / hz / ((t1 - t0) * n) * 100; printf "%.0f", o < 0 ? 0 : o }')
}
OTHERS=0
# emit JSON: one record into RESULTS, with the OTHERS of its run.
emit() { printf '{"others":%s,%s\n' "$OTHERS" "${1#\{}" >>"$RESULTS"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

# Share of all CPUs busy over INTERVAL seconds (while this script waits).
BG_SAMPLES=()
before_round() { # label
  local busy deadline=$((SECONDS + QUIET_WAIT)) said=0
  while :; do
    busy=$(background_busy 0.5)
    [[ $busy -lt 10 || $SECONDS -ge $deadline ]] && break
    [[ $said == 1 ]] || { log "  (waiting for the machine to calm down: ${busy}% CPU busy)"; said=1; }
  done
  BG_SAMPLES+=("$1 ${busy}%")
  [[ $busy -lt 25 ]] || log "  WARNING: ${busy}% CPU busy before $1 (other programs); results will be noisy"
}

# ------------------------------------------------------------ disk, sizes ---
# Raw frames: yuv420p, w*h*3/2 bytes each; frames for a size of MIB MiB.
RAW_W=${RAW_SIZE%x*}
RAW_H=${RAW_SIZE#*x}
FRAME_BYTES=$((RAW_W * RAW_H * 3 / 2))
frames_for() { echo $(((($1 * 1048576) + FRAME_BYTES - 1) / FRAME_BYTES)); }

need_bytes() {
  local n=0 x
  if want 2; then x=$((2 * TP_MIB)); ((x > n)) && n=$x; fi
  if want 3; then
    x=$((MEM_CONC * MEM_SMALL_MIB)); ((x > n)) && n=$x
    ((MEM_BIG_MIB > n)) && n=$MEM_BIG_MIB
  fi
  echo $(((n + 1024) * 1048576))  # + 1 GiB for clips, the bed, logs, rounding
}
AVAIL=$(df -P -B1 "$TMP" | awk 'NR == 2 { print $4 }')
SCALED=""
if (($(need_bytes) > AVAIL)); then
  orig="TP_MIB=$TP_MIB MEM_SMALL_MIB=$MEM_SMALL_MIB MEM_BIG_MIB=$MEM_BIG_MIB"
  while (($(need_bytes) > AVAIL)); do
    ((TP_MIB > 32 || MEM_SMALL_MIB > 32)) || die "only $((AVAIL / 1048576)) MiB free in $TMP: not enough even for the smallest sizes"
    ((TP_MIB > 32)) && TP_MIB=$((TP_MIB / 2))
    if ((MEM_SMALL_MIB > 32)); then MEM_SMALL_MIB=$((MEM_SMALL_MIB / 2)); MEM_BIG_MIB=$((MEM_BIG_MIB / 2)); fi
  done
  SCALED="$orig -> TP_MIB=$TP_MIB MEM_SMALL_MIB=$MEM_SMALL_MIB MEM_BIG_MIB=$MEM_BIG_MIB ($((AVAIL / 1048576)) MiB free)"
  log "storage-bench: only $((AVAIL / 1048576)) MiB free in $(df -P "$TMP" | awk 'NR == 2 { print $6 }'), need $(($(need_bytes) / 1048576)) MiB at the original sizes;"
  log "  scaled down: $SCALED"
fi
log "storage-bench: $((AVAIL / 1048576)) MiB free where the bed lives ($TMP), this run needs about $(($(need_bytes) / 1048576)) MiB at a time"

# ------------------------------------------------------------------ the bed ---
log "storage-bench: starting the S3 test bed in $BED"
BED_UP=1
"$TESTBED" start "$BED" >"$TMP/bed-start.log" 2>&1 || { cat "$TMP/bed-start.log" >&2; die "the S3 test bed did not start"; }
eval "$("$TESTBED" env "$BED")"
for f in "$BED"/run/*.pid; do BED_PIDS+=("$(cat "$f")"); done
ENDPOINT=$AWS_ENDPOINT_URL
BED_ENV=(AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
  AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" AWS_REGION="$AWS_REGION")
unset AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
# cap-server and awscli get the bed's settings only: inherited CAP_* and
# AWS_* (a profile, a session token, another endpoint) are dropped.
ENV_CLEAN=(env)
while IFS= read -r v; do ENV_CLEAN+=(-u "$v"); done < <(compgen -e | grep -E '^(CAP_|AWS_)' || true)
BUCKET=bench
PREFIX=cap
PROXY_LOG=$BED/log/proxy.log

# awscli with the bed's credentials, its default settings (an empty config
# file), no pager, always --endpoint-url.
: >"$TMP/aws-config"
AWS_ENV=("${ENV_CLEAN[@]}" "${BED_ENV[@]}"
  AWS_CONFIG_FILE="$TMP/aws-config" AWS_SHARED_CREDENTIALS_FILE="$TMP/aws-config" AWS_PAGER=)
awsq() { "${AWS_ENV[@]}" "$AWS_CLI" --endpoint-url "$ENDPOINT" "$@"; }

awsq s3 mb "s3://$BUCKET" >/dev/null || die "could not create the bucket"

# Deletes every object but the inputs, then flushes the page cache's dirty
# pages, so that the next side starts with an empty bucket and a quiet disk.
bucket_clean() {
  awsq s3 rm "s3://$BUCKET" --recursive --quiet --exclude "$PREFIX/in/*" >/dev/null \
    || log "storage-bench: WARNING: deleting the outputs from the bucket failed"
  sync
}

# -------------------------------------------------------------- clips, presets ---
PRESETS=$TMP/presets.json
SPEC=""
want 2 && SPEC+="tp:$(frames_for "$TP_MIB"),"
want 3 && SPEC+="small:$(frames_for "$MEM_SMALL_MIB"),big:$(frames_for "$MEM_BIG_MIB"),"
SPEC=${SPEC%,}
[[ -n $SPEC ]] || SPEC="tp:1"
"$PYTHON" "$HELPER" presets "$PRESETS_JSON" "$PRESETS" "$OVERLAP_PRESET" "$SPEC" "$RAW_SIZE" \
  || die "could not write the presets file"

log "storage-bench: generating the clips"
if want 1; then
  "$FFMPEG" -hide_banner -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=$OVERLAP_SIZE:rate=30:duration=$OVERLAP_SECONDS" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$OVERLAP_SECONDS" \
    -map 0:v:0 -map 1:a:0 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
    -c:a aac -b:a 128k -shortest -movflags +faststart "$TMP/local/clip.mp4"
  awsq s3 cp --no-progress --only-show-errors "$TMP/local/clip.mp4" "s3://$BUCKET/$PREFIX/in/clip.mp4" \
    || die "could not upload the clip"
fi
if want 2 || want 3; then
  # One frame; the raw presets loop it.
  "$FFMPEG" -hide_banner -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=$RAW_SIZE:rate=25:duration=0.04" -frames:v 1 \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p "$TMP/local/frame.mp4"
  awsq s3 cp --no-progress --only-show-errors "$TMP/local/frame.mp4" "s3://$BUCKET/$PREFIX/in/frame.mp4" \
    || die "could not upload the frame clip"
fi

# ------------------------------------------------------------------- server ---
TOKEN=bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$TOKEN" >"$TMP/token"
chmod 600 "$TMP/token"

SERVER_LOG=""
PORT=""
start_cap() { # tag extra-flags...
  local tag=$1 i
  shift
  SERVER_LOG=$TMP/cap-$tag.log
  CAPABILITY_TOKEN=$TOKEN "${ENV_CLEAN[@]}" "${BED_ENV[@]}" "$CAP_SERVER_BIN" --port 0 --host 127.0.0.1 \
    --data-dir "$DATA" --log-file "$SERVER_LOG" \
    --rate-limit 100000000 --rate-limit-token 100000000 \
    --presets "$PRESETS" --storage "s3://$BUCKET/$PREFIX" --orphan-sweep-s 0 \
    --ffmpeg "$FFMPEG" --ffprobe "$FFPROBE" "$@" >"$TMP/cap-$tag.out" 2>&1 &
  CAP_PID=$!
  PORT=""
  for ((i = 0; i < 300; i++)); do
    kill -0 "$CAP_PID" 2>/dev/null || { cat "$TMP/cap-$tag.out" >&2; CAP_PID=""; die "cap-server exited at start"; }
    if [[ -f $SERVER_LOG ]]; then
      grep -q '"event":"storage.unavailable"' "$SERVER_LOG" && { cat "$SERVER_LOG" >&2; die "cap-server: storage.unavailable"; }
      if grep -q '"event":"storage.ready"' "$SERVER_LOG"; then
        PORT=$("$PYTHON" "$HELPER" port_of "$SERVER_LOG")
        [[ -n $PORT ]] && break
      fi
    fi
    sleep 0.05
  done
  [[ -n $PORT ]] || die "cap-server: no server.start / storage.ready in $SERVER_LOG after 15 s"
}
stop_cap() { stop_pid "$CAP_PID" cap-server; CAP_PID=""; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$CAP_PID/status"; }

# cap_run PART ROUND SIDE-FIELDS INPUT PRESET KEY_FMT N: N jobs at once, one
# JSON record into RESULTS.  Sets RUN_JSON.
cap_run() {
  local part=$1 round=$2 fields=$3 input=$4 preset=$5 keyfmt=$6 n=$7 s0 k0 s1 k1
  read -r s0 k0 < <(srv_cpu)
  noise_begin
  RUN_JSON=$("$PYTHON" "$HELPER" client "$PORT" "$TMP/token" "$preset" "$input" "$keyfmt" "$n") \
    || die "cap-server run failed (part $part, round $round; server log in $OUT_DIR after exit)"
  noise_end
  read -r s1 k1 < <(srv_cpu)
  emit "$(printf '{"part":%d,"round":%d,%s,"input_key":"%s","server_log":"%s","cpu_self":%s,"cpu_kids":%s,"run":%s}' \
    "$part" "$round" "$fields" "$input" "$SERVER_LOG" "$(secs "$s0" "$s1")" "$(secs "$k0" "$k1")" "$RUN_JSON")"
}
wall_of() { "$PYTHON" -c 'import json, sys; print("%.3f" % json.loads(sys.argv[1])["wall_s"])' "$1"; }
bytes_of() { "$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])["jobs"][0]["bytes"])' "$1"; }

# Rotates the list of sides by (round - 1).
rotate() { # round sides...
  local r=$1; shift
  local a=("$@") n=$# i
  for ((i = 0; i < n; i++)); do printf '%s ' "${a[$(((i + r - 1) % n))]}"; done
}

P12_FLAGS=()
[[ -n $PART_SIZE ]] && P12_FLAGS+=(--part-size "$PART_SIZE")
[[ -n $PARTS_IN_FLIGHT ]] && P12_FLAGS+=(--parts-in-flight "$PARTS_IN_FLIGHT")
[[ -n $UPLOAD_BUDGET_MB ]] && P12_FLAGS+=(--upload-budget-mb "$UPLOAD_BUDGET_MB")
P12_SETTINGS=""

# ---------------------------------------------------------------- 1. overlap ---
if want 1 || want 2; then
  start_cap p12 "${P12_FLAGS[@]}"
  P12_SETTINGS=$("$CURL" -sS "http://127.0.0.1:$PORT/health" | "$PYTHON" -c '
import json, sys
s = json.load(sys.stdin)["storage"]
print("part size %.0f MiB, %s buffers max in the pool; flags: %s" % (s["part_size"] / 1048576.0, s["buffers_max"], sys.argv[1] or "server defaults (4 parts in flight per upload, 128 MiB budget)"))
' "${P12_FLAGS[*]:-}")
  log "storage-bench: cap-server pid $CAP_PID on port $PORT ($P12_SETTINGS)"
fi

if want 1; then
  log ""
  log "== 1. overlap: $OVERLAP_PRESET render into S3 vs ffmpeg -> local file vs ffmpeg then aws s3 cp, $REPEAT round(s) =="
  mapfile -t PRESET < <("$PYTHON" "$HELPER" preset_args "$PRESETS_JSON" "$OVERLAP_PRESET")
  FORMAT=${PRESET[-1]#--format=}
  unset 'PRESET[-1]'
  ff_overlap() { # out
    "$FFMPEG" -hide_banner -nostdin -nostats -loglevel error -y \
      -i "file:$TMP/local/clip.mp4" "${PRESET[@]}" -f "$FORMAT" "file:$1"
  }
  printf '%q ' "$FFMPEG" -hide_banner -nostdin -nostats -loglevel error -y \
    -i "file:CLIP" "${PRESET[@]}" -f "$FORMAT" "file:OUT" >"$OUT_DIR/overlap-floor-command.txt"
  echo >>"$OUT_DIR/overlap-floor-command.txt"
  for ((i = 1; i <= OVERLAP_WARMUP; i++)); do
    log "  warm-up $i/$OVERLAP_WARMUP (not timed)"
    "$PYTHON" "$HELPER" client "$PORT" "$TMP/token" "$OVERLAP_PRESET" in/clip.mp4 out/warmup.mp4 1 >/dev/null \
      || die "cap-server warm-up render failed"
    ff_overlap "$TMP/local/warmup.mp4" || die "ffmpeg (warm-up) failed"
    rm -f "$TMP/local/warmup.mp4"
  done
  ((OVERLAP_WARMUP == 0)) || bucket_clean
  for ((r = 1; r <= REPEAT; r++)); do
    before_round "part 1 round $r"
    for side in $(rotate "$r" cap floor seed); do
      case $side in
        cap)
          cap_run 1 "$r" '"side":"cap"' in/clip.mp4 "$OVERLAP_PRESET" "out/overlap-$r.mp4" 1
          t=$(wall_of "$RUN_JSON")
          if [[ $r == 1 ]]; then
            # The streamed object is a playable file of the expected height.
            awsq s3 cp --no-progress --only-show-errors "s3://$BUCKET/$PREFIX/out/overlap-1.mp4" "$TMP/local/check.mp4"
            h=$("$FFPROBE" -v error -select_streams v:0 -show_entries stream=height -of csv=p=0 "$TMP/local/check.mp4")
            [[ -n $h && $h -gt 0 ]] || die "the streamed render has no video stream"
            rm -f "$TMP/local/check.mp4"
          fi
          ;;
        floor)
          noise_begin; c0=$KIDS
          t0=$(now); ff_overlap "$TMP/local/floor.mp4" || die "ffmpeg (floor) failed"; t1=$(now)
          noise_end; c1=$KIDS
          t=$(secs "$t0" "$t1")
          emit "$(printf '{"part":1,"round":%d,"side":"floor","wall_s":%s,"cpu":%s,"bytes":%s}' "$r" "$t" \
            "$(secs "$c0" "$c1")" "$(stat -c %s "$TMP/local/floor.mp4")")"
          rm -f "$TMP/local/floor.mp4"
          ;;
        seed)
          key=seed/overlap-$r.mp4
          noise_begin; c0=$KIDS
          t0=$(now); ff_overlap "$TMP/local/seed.mp4" || die "ffmpeg (seed) failed"
          ta=$(now)
          kids_cpu; c1=$KIDS
          awsq s3 cp --no-progress --only-show-errors "$TMP/local/seed.mp4" "s3://$BUCKET/$key" || die "aws s3 cp (seed) failed"
          t1=$(now)
          noise_end; c2=$KIDS
          t=$(secs "$t0" "$t1")
          emit "$(printf '{"part":1,"round":%d,"side":"seed","wall_s":%s,"ffmpeg_s":%s,"aws_s":%s,"cpu_ffmpeg":%s,"cpu_aws":%s,"aws_t0":%s,"aws_t1":%s,"key":"%s"}' \
            "$r" "$t" "$(secs "$t0" "$ta")" "$(secs "$ta" "$t1")" "$(secs "$c0" "$c1")" "$(secs "$c1" "$c2")" \
            "$ta" "$t1" "$key")"
          rm -f "$TMP/local/seed.mp4"
          ;;
      esac
      log "  round $r/$REPEAT: $side $(printf '%.3f' "$t") s (other programs: ${OTHERS}% CPU)"
    done
    bucket_clean
  done
fi

# ------------------------------------------------------------- 2. throughput ---
TP_BYTES=0
if want 2; then
  log ""
  TP_FRAMES=$(frames_for "$TP_MIB")
  log "== 2. throughput: $TP_MIB MiB ($TP_FRAMES raw $RAW_SIZE frames) through cap-server vs aws s3 cp, $REPEAT round(s) =="
  ff_raw() { # out
    "$FFMPEG" -hide_banner -nostdin -nostats -loglevel error -y -i "file:$TMP/local/frame.mp4" \
      -map 0:v:0 -vf loop=loop=-1:size=1 -frames:v "$TP_FRAMES" -c:v rawvideo -pix_fmt yuv420p -f nut "file:$1"
  }
  # The local file aws uploads: the same command's output (its size is
  # checked against what cap-server stored).
  ff_raw "$TMP/local/tp.nut" || die "ffmpeg (raw) failed"
  TP_BYTES=$(stat -c %s "$TMP/local/tp.nut")
  sync
  for ((r = 1; r <= REPEAT; r++)); do
    before_round "part 2 round $r"
    for side in $(rotate "$r" cap aws ffnull fffile); do
      case $side in
        cap)
          cap_run 2 "$r" '"side":"cap"' in/frame.mp4 raw-tp "out/tp-$r.nut" 1
          t=$(wall_of "$RUN_JSON")
          b=$(bytes_of "$RUN_JSON")
          [[ $b == "$TP_BYTES" ]] || die "cap-server stored $b bytes, the same ffmpeg command writes $TP_BYTES locally"
          ;;
        aws)
          key=aws/tp-$r.nut
          noise_begin; c0=$KIDS
          t0=$(now)
          awsq s3 cp --no-progress --only-show-errors "$TMP/local/tp.nut" "s3://$BUCKET/$key" || die "aws s3 cp failed"
          t1=$(now)
          noise_end; c1=$KIDS
          t=$(secs "$t0" "$t1")
          emit "$(printf '{"part":2,"round":%d,"side":"aws","wall_s":%s,"cpu":%s,"aws_t0":%s,"aws_t1":%s,"key":"%s"}' \
            "$r" "$t" "$(secs "$c0" "$c1")" "$t0" "$t1" "$key")"
          ;;
        ffnull)
          noise_begin; c0=$KIDS
          t0=$(now); ff_raw /dev/null || die "ffmpeg (raw, /dev/null) failed"; t1=$(now)
          noise_end; c1=$KIDS
          t=$(secs "$t0" "$t1")
          emit "$(printf '{"part":2,"round":%d,"side":"ffnull","wall_s":%s,"cpu":%s}' "$r" "$t" "$(secs "$c0" "$c1")")"
          ;;
        fffile)
          noise_begin; c0=$KIDS
          t0=$(now); ff_raw "$TMP/local/tp.nut" || die "ffmpeg (raw, local file) failed"; t1=$(now)
          noise_end; c1=$KIDS
          t=$(secs "$t0" "$t1")
          emit "$(printf '{"part":2,"round":%d,"side":"fffile","wall_s":%s,"cpu":%s}' "$r" "$t" "$(secs "$c0" "$c1")")"
          ;;
      esac
      log "  round $r/$REPEAT: $side $(printf '%.3f' "$t") s (other programs: ${OTHERS}% CPU)"
      bucket_clean
    done
  done
  rm -f "$TMP/local/tp.nut"
fi
stop_cap

# ----------------------------------------------------------------- 3. memory ---
MEM_BOUND=$((MEM_CONC * MEM_PARTS_IN_FLIGHT * MEM_PART_SIZE + 16 * 1048576))
MEM_FLAGS=(--part-size "$MEM_PART_SIZE" --parts-in-flight "$MEM_PARTS_IN_FLIGHT"
  --upload-budget-mb "$MEM_BUDGET_MB" --pool-cpu 4 --queue-max 8)
if want 3; then
  log ""
  log "== 3. memory: VmHWM with $MEM_CONC x $MEM_SMALL_MIB MiB at once, 1 x $MEM_SMALL_MIB MiB, 1 x $MEM_BIG_MIB MiB; ${MEM_FLAGS[*]}; $REPEAT round(s) =="
  for ((r = 1; r <= REPEAT; r++)); do
    before_round "part 3 round $r"
    for c in $(rotate "$r" conc small big); do
      case $c in
        conc) preset=raw-small n=$MEM_CONC ;;
        small) preset=raw-small n=1 ;;
        big) preset=raw-big n=1 ;;
      esac
      start_cap "mem-$c-$r" "${MEM_FLAGS[@]}"
      base=$(hwm_kb)
      bufmax=$("$CURL" -sS "http://127.0.0.1:$PORT/health" | "$PYTHON" "$HELPER" health - buffers_max)
      noise_begin
      RUN_JSON=$("$PYTHON" "$HELPER" client "$PORT" "$TMP/token" "$preset" in/frame.mp4 "out/mem-$c-$r-%d.nut" "$n") \
        || die "cap-server run failed (part 3, $c, round $r)"
      noise_end
      hwm=$(hwm_kb)
      read -r cs ck < <(srv_cpu)
      stop_cap
      emit "$(printf '{"part":3,"round":%d,"case":"%s","hwm_kb":%s,"base_kb":%s,"buffers_max":%s,"cpu_self":%s,"cpu_kids":%s,"input_key":"in/frame.mp4","server_log":"%s","run":%s}' \
        "$r" "$c" "$hwm" "$base" "$bufmax" "$cs" "$ck" "$SERVER_LOG" "$RUN_JSON")"
      log "  round $r/$REPEAT: $c ($n x $preset): VmHWM $(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }') MiB, $(wall_of "$RUN_JSON") s (other programs: ${OTHERS}% CPU)"
      bucket_clean
    done
  done
fi

# ------------------------------------------------------------------- report ---
LEFTOVER=$(awsq s3api list-multipart-uploads --bucket "$BUCKET" --output json \
  | "$PYTHON" -c 'import json, sys; t = sys.stdin.read().strip(); print(len(json.loads(t).get("Uploads") or []) if t else 0)' \
  || echo "?")
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
META=$TMP/meta.json
# Every value goes through argv (key=value), never through the Python source.
"$PYTHON" - "$META" \
  "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "machine=$(nproc) CPU(s) ${CPU_MODEL:-?}, $(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)" \
  "ffmpeg=$("$FFMPEG" -version | head -1 | cut -d' ' -f1-3)" \
  "aws=$("$AWS_CLI" --version 2>&1 | cut -d' ' -f1) ($AWS_CLI)" \
  "bed_fs=$(df -P "$TMP" | awk 'NR == 2 { print $1 " (" $6 ")" }')" \
  "server=$CAP_SERVER_BIN" "p12_settings=${P12_SETTINGS:-}" "quick=$BENCH_QUICK" "scaled=$SCALED" \
  "repeat=$REPEAT" "parts=$BENCH_PARTS" \
  "overlap_preset=$OVERLAP_PRESET" "overlap_size=$OVERLAP_SIZE" "overlap_seconds=$OVERLAP_SECONDS" \
  "tp_bytes=$TP_BYTES" "raw_size=$RAW_SIZE" \
  "mem_conc=$MEM_CONC" "mem_small_mib=$MEM_SMALL_MIB" "mem_big_mib=$MEM_BIG_MIB" \
  "mem_part=$MEM_PART_SIZE" "mem_pif=$MEM_PARTS_IN_FLIGHT" "mem_budget=$MEM_BUDGET_MB" "mem_bound=$MEM_BOUND" \
  "mem_settings=${MEM_FLAGS[*]}" "bucket=$BUCKET" "prefix=$PREFIX" "proxy_log=$PROXY_LOG" \
  "leftover_uploads=$LEFTOVER" "bg=$(IFS=';'; echo "${BG_SAMPLES[*]:-}" | sed 's/;/, /g')" "out_dir=$OUT_DIR" <<'PY'
import json, sys
m = dict(a.split("=", 1) for a in sys.argv[2:])
for k in ("repeat", "tp_bytes", "mem_conc", "mem_small_mib", "mem_big_mib", "mem_part", "mem_pif", "mem_budget", "mem_bound"):
    m[k] = int(m[k])
m["quick"] = m["quick"] == "1"
m["parts"] = [int(x) for x in m["parts"].split()]
json.dump(m, open(sys.argv[1], "w"), indent=1)
PY
cp "$META" "$OUT_DIR/meta.json"
cp "$HELPER" "$OUT_DIR/helper.py"
log ""
"$PYTHON" "$HELPER" report "$RESULTS" "$META" | tee "$OUT_DIR/summary.txt"
