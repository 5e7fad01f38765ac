#!/usr/bin/env bash
# bench/input-bench.sh: what streamed inputs (--input-mode stream: ffmpeg
# reads the S3 input by range through cap-server's loopback endpoint while
# the output streams into the bucket as a multipart upload) gain over a
# throttled link, measured in one run on the same machine against
# cap-server's download mode and against the seed's sequential pipeline.
#
# What it measures
#   The link: the S3 bed (test/integration/s3bed.py: Swift + s3api on
#   127.0.0.1) is reached through a rate-limiting TCP proxy
#   (test/integration/tcpproxy.py, TcpProxy.set_rate(RATE, "both"): one
#   token bucket per direction shared by all connections; 25 MB/s =
#   200 Mbit/s each way, as a home connection might give).  cap-server's
#   AWS_ENDPOINT_URL and the aws cli's --endpoint-url are the proxy, so all
#   the pipelines below see the same link.  What the script itself does to
#   the bed (putting the source, polling for the first output part,
#   checking and deleting outputs) goes to the bed directly.
#   The input: SOURCE_SECONDS of 1080p30 testsrc2 + temporal noise (so that
#   it does not compress away), x264 ultrafast (CAVLC, no deblocking: cheap
#   to decode) at SOURCE_BITRATE, AAC, MP4 with the moov first.  The
#   preset (written by this script, OUT_DIR/presets.json): x264 ultrafast
#   at OUT_BITRATE (= SOURCE_BITRATE), the audio copied, MPEG-TS,
#   streamable; so the output is about as large as the input, and download
#   time D, encode time E and upload time U come out comparable on 2 cores
#   (x264's cost here is per pixel, hardly per bit: the bit rate sets D and
#   U, the length all three).  Measured on 2 idle AMD EPYC cores, RATE
#   25000000, 12 s at 90 Mbit/s = 139.6 MB in, 142.1 MB out: D 6.7 s, E
#   6.5 s, U 7.1 s (medians; the link alone: 5.6 and 5.7 s, the rest of D
#   and U is the aws cli's start-up).  The report says how comparable they
#   came out in its own run (E / D, U / D).
#   Sides, one of each per round, the order turned round every round:
#     stream      cap-server, preset ib-stream ("input_mode": "stream"):
#                 POST /exec with wait 90 (the most a request waits), then
#                 GET /jobs/{id}?wait=90 until done; wall time from the
#                 request to the result
#     download    the same with preset ib-download ("input_mode":
#                 "download": the whole input into DATA/.cap-tmp first)
#     sequential  the seed's pipeline: aws s3 cp down, the very ffmpeg argv
#                 cap-server runs (checked word for word against the
#                 server's ffmpeg, /proc/PID/cmdline, but for the input, its
#                 protocol allow-list and the output) on local files, aws s3
#                 cp up; total wall time, and each step
#     D, E, U     each step alone: aws s3 cp down; ffmpeg local -> local;
#                 aws s3 cp up of the output
#   Both cap-server presets run on one cap-server: --storage s3://bench,
#   --part-size PART_SIZE (a part goes as soon as 5 MiB is ready),
#   --pool-cpu POOL_CPU.  Local ffmpeg runs at the cpu class's nice 10 and
#   ionice best-effort:7 like the server's (BARE_NICE, BARE_IONICE).
#   Reported: medians; streamed / max(D, E, U) (goal <= 1.10), streamed /
#   sequential (goal <= 0.6), download / streamed; the same per round.
#   Time to the first output byte in the bucket: the bed is polled directly
#   every POLL_MS (ListMultipartUploads with the output key, then
#   ListParts: a part is listed once its upload is complete), seconds from
#   the POST (for the sequential pipeline from its start, polling from its
#   upload's start), with the end of the first part's PUT in the bed's log
#   beside it.  cap-server's peak RSS (VmHWM, reset before each job through
#   /proc/PID/clear_refs) and peak temp disk (du of DATA/.cap-tmp every
#   SAMPLE_MS) for streamed vs downloaded; the sequential pipeline's local
#   files for comparison.  CPU seconds per run of cap-server, its children,
#   the bed, this script (the proxy's thread) and the local ffmpeg / aws.
#   Every job must succeed with the output the local encode makes (size
#   within 5 %), the bucket holding what the result says, the input read in
#   the mode asked for; anything else stops the run with the evidence.
#   For every timed run the share of the CPUs other programs used is worked
#   out (/proc/stat minus what was measured) and a run above NOISE_MAX % is
#   made again (NOISE_RETRIES times at most, while the whole run is still
#   expected to end within TIME_BUDGET_S).  No timed assertion: goals are
#   reported as met or MISSED, the exit status is 0 either way.
#
# Environment (defaults in brackets; QUICK=1 switches to the values in
# braces, for a smoke run of about a minute)
#   CAP_SERVER_BIN  cap-server binary, copied with the cap-sandbox beside it
#                   at the start (a rebuild meanwhile changes nothing)
#                   [<repo>/build/cap-server]
#   QUICK           1 = quick smoke run (BENCH_QUICK=1 too)   [0]
#   RUNS            rounds (one run of each side each)        [3] {1}
#   WARMUP          untimed streamed jobs (+ an aws s3 cp down) first [1] {0}
#   RATE            the link, bytes/s each way                [25000000]
#   SOURCE_SECONDS  length of the input (s)                   [12] {4}
#   SOURCE_SIZE     its size                                  [1920x1080]
#   SOURCE_RATE     its frame rate                            [30]
#   SOURCE_BITRATE  its video bit rate (x264 -b:v)            [90M]
#   SOURCE_NOISE    its noise (noise=alls=N:allf=t)           [20]
#   SOURCE_FILE     use this file (audio + video, moov first) as the input
#   OUT_BITRATE     the preset's video bit rate              [SOURCE_BITRATE]
#   X264_PRESET     the preset's x264 -preset                 [ultrafast]
#   PART_SIZE       cap-server --part-size                    [5242880]
#   POOL_CPU        cap-server --pool-cpu                     [1]
#   BARE_NICE, BARE_IONICE  the local ffmpeg's priority       [10, best-effort:7]
#   POLL_MS         first-output-byte polling period          [100]
#   SAMPLE_MS       temp disk / RSS sampling period           [50]
#   QUIET_WAIT      before each round and each run made again wait up to this many s for the
#                   machine to calm down (< 10% busy); 0 = no wait   [0]
#   NOISE_MAX       a run during which other programs used more than this %
#                   of the CPUs is made again ...             [15]
#   NOISE_RETRIES   ... at most this many times               [1] {0}
#   TIME_BUDGET_S   a disturbed run is made again only when the bench is
#                   then still expected to end within this many s  [900]
#   OUT_DIR         report.md, results.jsonl, meta.json, presets.json,
#                   argv-*.txt, cap-server.log, s3-proxy.log.gz
#                   [bench/results/input-<UTC timestamp>/, git-ignored]
#   KEEP_TMP        1 = keep the temporary directory          [0]
#   TMPDIR          where the temporary directory goes        [/tmp]
# A full run with the defaults takes about 4 minutes on 2 idle cores (much
# longer when other programs load the machine and runs are made again).
#
# Usage: bench/input-bench.sh            (from anywhere; needs no build step)
#        QUICK=1 bench/input-bench.sh
#        RUNS=5 RATE=12500000 bench/input-bench.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
TESTBED=$REPO_DIR/scripts/s3-testbed.sh

export CAP_SERVER_BIN=${CAP_SERVER_BIN:-$REPO_DIR/build/cap-server}
export QUICK=${QUICK:-${BENCH_QUICK:-0}}
if [[ $QUICK == 1 ]]; then
  q() { printf '%s' "$2"; }
else
  q() { printf '%s' "$1"; }
fi
export RUNS=${RUNS:-$(q 3 1)}
export WARMUP=${WARMUP:-$(q 1 0)}
export RATE=${RATE:-25000000}
export SOURCE_SECONDS=${SOURCE_SECONDS:-$(q 12 4)}
export SOURCE_SIZE=${SOURCE_SIZE:-1920x1080}
export SOURCE_RATE=${SOURCE_RATE:-30}
export SOURCE_BITRATE=${SOURCE_BITRATE:-90M}
export SOURCE_NOISE=${SOURCE_NOISE:-20}
export SOURCE_FILE=${SOURCE_FILE:-}
export OUT_BITRATE=${OUT_BITRATE:-$SOURCE_BITRATE}
export X264_PRESET=${X264_PRESET:-ultrafast}
export PART_SIZE=${PART_SIZE:-5242880}
export POOL_CPU=${POOL_CPU:-1}
export BARE_NICE=${BARE_NICE:-10}
export BARE_IONICE=${BARE_IONICE:-best-effort:7}
export POLL_MS=${POLL_MS:-100}
export SAMPLE_MS=${SAMPLE_MS:-50}
export QUIET_WAIT=${QUIET_WAIT:-0}
export NOISE_MAX=${NOISE_MAX:-15}
export NOISE_RETRIES=${NOISE_RETRIES:-$(q 1 0)}
export TIME_BUDGET_S=${TIME_BUDGET_S:-900}
export OUT_DIR=${OUT_DIR:-$BENCH_DIR/results/input-$(date -u +%Y%m%dT%H%M%SZ)}
export KEEP_TMP=${KEEP_TMP:-0}

BENCH_NAME=input-bench
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

for v in RUNS RATE SOURCE_RATE PART_SIZE POOL_CPU POLL_MS SAMPLE_MS; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "$v must be a positive integer (got '${!v}')"
done
for v in WARMUP QUIET_WAIT NOISE_MAX NOISE_RETRIES TIME_BUDGET_S BARE_NICE SOURCE_NOISE; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
[[ $SOURCE_SECONDS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SOURCE_SECONDS must be a number of seconds (got '$SOURCE_SECONDS')"
[[ $SOURCE_SIZE =~ ^[0-9]+x[0-9]+$ ]] || die "SOURCE_SIZE must look like WIDTHxHEIGHT (got '$SOURCE_SIZE')"
for v in SOURCE_BITRATE OUT_BITRATE; do
  [[ ${!v} =~ ^[0-9]+[kM]?$ ]] || die "$v must be a bit rate like 100M or 80000k (got '${!v}')"
done
[[ $X264_PRESET =~ ^(ultrafast|superfast|veryfast|faster|fast|medium|slow|slower|veryslow)$ ]] \
  || die "X264_PRESET must be an x264 preset name (got '$X264_PRESET')"
(( PART_SIZE >= 5242880 )) || die "PART_SIZE must be at least 5242880 (S3's smallest part)"
[[ $BARE_IONICE =~ ^(none|idle|best-effort(:[0-7])?|realtime(:[0-7])?)$ ]] \
  || die "BARE_IONICE must be none, idle, best-effort[:0-7] or realtime[:0-7] (got '$BARE_IONICE')"
[[ -z $SOURCE_FILE || -f $SOURCE_FILE ]] || die "SOURCE_FILE $SOURCE_FILE is not a file"

# -------------------------------------------------------------------- tools ---
command -v python3 >/dev/null || apt_install python3
command -v ionice >/dev/null || apt_install util-linux
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then apt_install ffmpeg; fi
if [[ ! -x /usr/bin/aws ]] || ! command -v swift-proxy-server >/dev/null || ! command -v memcached >/dev/null; then
  log "input-bench: installing the S3 test bed's packages (scripts/s3-testbed.sh install)"
  inst_log=$(mktemp)
  if ! as_root "$TESTBED" install >"$inst_log" 2>&1; then
    cat "$inst_log" >&2; rm -f "$inst_log"; die "installing the S3 test bed's packages failed"
  fi
  rm -f "$inst_log"
fi
grep -q 'def set_rate' "$REPO_DIR/test/integration/tcpproxy.py" \
  || die "test/integration/tcpproxy.py has no TcpProxy.set_rate (the throttle this bench needs)"

[[ -x $CAP_SERVER_BIN ]] || die "cap-server binary not found or not executable: $CAP_SERVER_BIN (scripts/build.sh build, or set CAP_SERVER_BIN)"
cap_help=$("$CAP_SERVER_BIN" --help 2>&1 || true)
[[ $cap_help == *--input-mode* ]] \
  || die "$CAP_SERVER_BIN has no streamed inputs (--input-mode missing from --help); build the current tree"

mkdir -p "$OUT_DIR"
log "$BENCH_NAME: $(nproc) cores; $("$CAP_SERVER_BIN" --version); results in $OUT_DIR"
export PYTHONDONTWRITEBYTECODE=1
exec python3 "$BENCH_DIR/input_bench.py"
