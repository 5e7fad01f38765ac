#!/usr/bin/env bash
# bench/ladder-bench.sh: what a ladder job (preset hls-ladder: one ffmpeg
# decodes once and splits into every rung) costs next to its alternatives,
# measured in one run on the same machine, with the same source.
#
# What it measures
#   The source: a SOURCE_SIZE testsrc2 + sine clip of SOURCE_SECONDS s, made
#   once per run with libx264 SOURCE_PRESET crf SOURCE_CRF (medium, 18: a
#   ~10 Mb/s 1080p stream, so that decoding costs something real; the
#   report shows what decoding it alone takes), AAC audio.
#   1. One decode vs four: one LADDER_PRESET job (4 rungs 1080/720/480/360,
#      libx264 veryfast, one AAC, HLS CMAF 4 s segments) against the same
#      four renditions as four single-output jobs.  The four presets are
#      made by this script from the ladder preset itself (kept as
#      OUT_DIR/presets.json): each rung's scale, -b:v/-maxrate/-bufsize,
#      the ladder's video_args and keyframe rule, the same AAC, fragmented
#      MP4 (frag_keyframe+empty_moov+default_base_moof).  Both sides are
#      jobs of one cap-server on the local file store with --pool-cpu
#      POOL_CPU (1: what cap-server picks by itself on 2 cores, half the
#      cores): the four single jobs are sent at once and the pool runs them
#      one after another in the one slot the ladder job gets, so both sides
#      have the same capacity of the server.  Wall time from the first
#      POST /exec to the last job done; the ratio ladder / separate (goal
#      <= 0.75), and the CPU time of the jobs' children (ffprobe + ffmpeg).
#   2. Into the bucket vs bare ffmpeg: the same ladder job with cap-server
#      on --storage s3://bench/cap, the S3 bed (test/integration/s3bed.py:
#      Swift + s3api on 127.0.0.1), input in the bucket, against the very
#      ffmpeg argv cap-server runs (rebuilt from cap_jobcmd_ladder() in
#      src/jobs/jobcmd.c and the preset, and checked word for word against
#      /proc/<pid>/cmdline of the server's ffmpeg in every run of this
#      script) with the local source file instead of the input the server
#      gives its ffmpeg (file:/dev/fd/3 for a downloaded input; for a
#      bucket input read by range, input_mode stream, the server's default,
#      its loopback input endpoint with protocols http,tcp) and a
#      local directory instead of the job's temp directory, fd 4
#      (-progress pipe:4) on /dev/null, at the cpu class's nice 10 and
#      ionice best-effort:7 like the server's ffmpeg (BARE_NICE,
#      BARE_IONICE).  Ratio S3 / bare (goal <= 1.05).  The server's time
#      includes what the job costs besides ffmpeg: reading the input from
#      the bucket, the streams ffprobe, the upload tail, the playlists
#      and the master (and a dash package's MPD).  Also:
#        time to the first segment: from POST /exec to the end of the first
#          segment's PUT in the bed's proxy log (and when GET /jobs/{id},
#          polled every POLL_MS, first shows package.segments_uploaded >= 1),
#          against the bare ffmpeg's first finished segment file; and the
#          same to a first segment of every rendition (when a player can
#          start at any rung);
#        peak temp disk: du of DATA/.cap-tmp every SAMPLE_MS during the job
#          (the downloaded input copy included, and shown apart);
#        peak RSS: cap-server's VmHWM (reset before each run through
#          /proc/PID/clear_refs) and the ffmpeg's VmHWM (sampled every
#          SAMPLE_MS, and ru_maxrss for the bare one).
#   Sides alternate run by run and the order turns round every round, so
#   that background load changing over the minutes hits both alike.  Before
#   each round the load is sampled (QUIET_WAIT can wait for a calm machine);
#   for every timed run the share of the CPUs other programs used is
#   worked out (/proc/stat busy time minus cap-server and its children,
#   the bed's processes, this script and its children) and a run above
#   NOISE_MAX % is made again (NOISE_RETRIES times at most, and only when
#   the whole run, estimated from the runs so far, still fits in
#   TIME_BUDGET_S).  Every job must succeed: the
#   ladder with every rendition, the single ones at the right height, the
#   bucket listing the objects the result counts; anything else stops the
#   run with the evidence.  One exception: when the bed's processes are
#   found gone (on a shared machine other programs stop Swift and memcached
#   by name), the bed is started again at the same endpoint, the failed
#   job's clean-up is waited for and checked (package.state, objects left
#   under its prefix, both reported), and the run is made again.
#
# Environment (defaults in brackets; BENCH_QUICK=1 switches to the values in
# braces, for a smoke run of about two minutes)
#   CAP_SERVER_BIN  cap-server binary, copied with the cap-sandbox beside it
#                   at the start (a rebuild meanwhile changes nothing)
#                   [<repo>/build/cap-server]
#   BENCH_QUICK     1 = quick smoke run               [0]
#   BENCH_PARTS     which parts to run                ["1 2"]
#   RUNS            timed runs per side and part      [3] {1}
#   WARMUP          untimed ladder jobs per part first, of the source's
#                   first 6 s (caches, clocks, the bed's first requests) [1] {0}
#   SOURCE_SECONDS  length of the source (s; not SECONDS, which is bash's
#                   own clock)                        [20] {6}
#   SOURCE_SIZE     its size                          [1920x1080]
#   SOURCE_RATE     its frame rate                    [30]
#   SOURCE_PRESET, SOURCE_CRF  its x264 encoding      [medium, 18]
#   SOURCE_FILE     use this file as the source instead (audio + video)
#   LADDER_PRESET   the ladder preset (packaging/presets.json) [hls-ladder]
#   POOL_CPU        --pool-cpu of both servers         [1]
#   BARE_NICE, BARE_IONICE  the bare ffmpeg's priority  [10, best-effort:7]
#   SAMPLE_MS       temp disk / RSS sampling period    [50]
#   POLL_MS         GET /jobs/{id} polling period until the first segment [25]
#   QUIET_WAIT      before each round wait up to this many seconds for the
#                   machine to calm down (< 10% busy); 0 = no wait   [0]
#   NOISE_MAX       a run during which other programs used more than this %
#                   of the CPUs is made again ...     [15]
#   NOISE_RETRIES   ... at most this many times       [1]
#   TIME_BUDGET_S   a disturbed run is made again only when the bench is
#                   then still expected to end within this many s  [480]
#   OUT_DIR         summary.txt, results.jsonl, meta.json, logs, argv
#                   [bench/results/ladder-<UTC timestamp>/, git-ignored]
#   KEEP_TMP        1 = keep the temporary directory   [0]
#   TMPDIR          where the temporary directory goes [/tmp]
# A full run with the defaults takes about 4.5 minutes on 2 idle cores and
# about 10 when other programs keep half of them busy (nearly all of it is
# ffmpeg at nice 10: 12 timed ladder-sized encodes, 3 x 4 single-rung ones).
#
# Usage: bench/ladder-bench.sh            (from anywhere; needs no build step)
#        BENCH_QUICK=1 bench/ladder-bench.sh
#        RUNS=5 SOURCE_SECONDS=30 BENCH_PARTS=2 bench/ladder-bench.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
TESTBED=$REPO_DIR/scripts/s3-testbed.sh

export CAP_SERVER_BIN=${CAP_SERVER_BIN:-$REPO_DIR/build/cap-server}
export BENCH_QUICK=${BENCH_QUICK:-0}
if [[ $BENCH_QUICK == 1 ]]; then
  q() { printf '%s' "$2"; }
else
  q() { printf '%s' "$1"; }
fi
export BENCH_PARTS=${BENCH_PARTS:-1 2}
export RUNS=${RUNS:-$(q 3 1)}
export WARMUP=${WARMUP:-$(q 1 0)}
export SOURCE_SECONDS=${SOURCE_SECONDS:-$(q 20 6)}
export SOURCE_SIZE=${SOURCE_SIZE:-1920x1080}
export SOURCE_RATE=${SOURCE_RATE:-30}
export SOURCE_PRESET=${SOURCE_PRESET:-medium}
export SOURCE_CRF=${SOURCE_CRF:-18}
export SOURCE_FILE=${SOURCE_FILE:-}
export LADDER_PRESET=${LADDER_PRESET:-hls-ladder}
export POOL_CPU=${POOL_CPU:-1}
export BARE_NICE=${BARE_NICE:-10}
export BARE_IONICE=${BARE_IONICE:-best-effort:7}
export SAMPLE_MS=${SAMPLE_MS:-50}
export POLL_MS=${POLL_MS:-25}
export QUIET_WAIT=${QUIET_WAIT:-0}
export NOISE_MAX=${NOISE_MAX:-15}
export NOISE_RETRIES=${NOISE_RETRIES:-1}
export TIME_BUDGET_S=${TIME_BUDGET_S:-480}
export OUT_DIR=${OUT_DIR:-$BENCH_DIR/results/ladder-$(date -u +%Y%m%dT%H%M%SZ)}
export KEEP_TMP=${KEEP_TMP:-0}

BENCH_NAME=ladder-bench
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

for v in RUNS SOURCE_SECONDS SOURCE_RATE POOL_CPU SAMPLE_MS POLL_MS; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "$v must be a positive integer (got '${!v}')"
done
for v in WARMUP QUIET_WAIT NOISE_MAX NOISE_RETRIES TIME_BUDGET_S BARE_NICE SOURCE_CRF; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
[[ $SOURCE_SIZE =~ ^[0-9]+x[0-9]+$ ]] || die "SOURCE_SIZE must look like WIDTHxHEIGHT (got '$SOURCE_SIZE')"
[[ $BARE_IONICE =~ ^(none|idle|best-effort(:[0-7])?|realtime(:[0-7])?)$ ]] \
  || die "BARE_IONICE must be none, idle, best-effort[:0-7] or realtime[:0-7] (got '$BARE_IONICE')"
[[ -z $SOURCE_FILE || -f $SOURCE_FILE ]] || die "SOURCE_FILE $SOURCE_FILE is not a file"
for p in $BENCH_PARTS; do [[ $p == [12] ]] || die "BENCH_PARTS: '$p' is not one of 1 2"; done
[[ -n ${BENCH_PARTS// /} ]] || die "BENCH_PARTS is empty"

# -------------------------------------------------------------------- tools ---
command -v python3 >/dev/null || apt_install python3
command -v ionice >/dev/null || apt_install util-linux
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then apt_install ffmpeg; fi
if [[ " $BENCH_PARTS " == *" 2 "* ]]; then
  if [[ ! -x /usr/bin/aws ]] || ! command -v swift-proxy-server >/dev/null || ! command -v memcached >/dev/null; then
    log "ladder-bench: installing the S3 test bed's packages (scripts/s3-testbed.sh install)"
    inst_log=$(mktemp)
    if ! as_root "$TESTBED" install >"$inst_log" 2>&1; then
      cat "$inst_log" >&2; rm -f "$inst_log"; die "installing the S3 test bed's packages failed"
    fi
    rm -f "$inst_log"
  fi
fi

[[ -x $CAP_SERVER_BIN ]] || die "cap-server binary not found or not executable: $CAP_SERVER_BIN (scripts/build.sh build, or set CAP_SERVER_BIN)"
cap_help=$("$CAP_SERVER_BIN" --help 2>&1 || true)
[[ $cap_help == *--ladder-uploads* ]] \
  || die "$CAP_SERVER_BIN has no ladder jobs (--ladder-uploads missing from --help); build the current tree"

mkdir -p "$OUT_DIR"
log "$BENCH_NAME: $(nproc) cores; $("$CAP_SERVER_BIN" --version); results in $OUT_DIR"
export PYTHONDONTWRITEBYTECODE=1
exec python3 "$BENCH_DIR/ladder_bench.py"
