"""Helpers for the S3/R2 storage integration tests (test_storage_*.py):
start cap-server against the Swift s3api bed (s3bed.S3Bed), check that no
path leaves an open multipart upload, a temp file or a child behind, look for
credential text in logs and /health, and compute what S3 should hold for a
local file (MD5, multipart ETag, part sizes).

Builds on capsrv / captools / mediatools / s3bed (does not change them).
"""
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import captools
import mediatools as mt
from s3bed import AWS, S3Bed  # noqa: F401  (re-exported for the tests)

MIB = 1024 * 1024
MIN_PART = 5 * MIB


def have_bed():
    """True when the Swift bed and awscli v2 are installed."""
    return bool(os.path.exists(AWS) and shutil.which("swift-proxy-server")
                and shutil.which("memcached"))


# ---------------------------------------------------------------------------
# Raw-video outputs: large, deterministic and cheap to make, so the storage
# path (multipart, aborts, memory) is what a test measures.

RAW_ARGS = ["-map", "0:v:0", "-c:v", "rawvideo", "-pix_fmt", "yuv420p"]


def raw_preset(vf=None, timeout_s=300, description="raw 4:2:0 video in NUT (test)"):
    """A streamable preset writing raw frames in NUT; vf (e.g. the realtime
    filter, to hold ffmpeg to the clip's pace) goes before the encoder."""
    args = list(RAW_ARGS)
    if vf:
        args[2:2] = ["-vf", vf]
    return {"description": description, "class": "cpu", "format": "nut", "ext": "nut",
            "streamable": True, "encoders": ["rawvideo"], "timeout_s": timeout_s, "args": args}


def raw_reference(clip):
    """(size, md5) of what the raw preset makes of clip: the command the
    server runs, writing to a pipe as it does."""
    out = subprocess.run([mt.FFMPEG, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
                          "-y", "-i", "file:" + clip] + RAW_ARGS + ["-f", "nut", "pipe:1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True,
                         timeout=120).stdout
    return len(out), hashlib.md5(out).hexdigest()


# ---------------------------------------------------------------------------
# Server

def start_s3(bed, bucket, prefix=None, args=(), env=None, secret=None, region=None):
    """Starts cap-server with --storage s3://bucket[/prefix] and the bed's
    AWS_* environment (secret / region overridable, env merged on top)."""
    url = "s3://%s" % bucket + ("/%s" % prefix if prefix else "")
    e = bed.env(secret=secret, region=region)
    e.update(env or {})
    srv = mt.start(["--storage", url] + list(args), env=e)
    srv.bucket = bucket
    srv.prefix = prefix
    return srv


def storage_event(srv, timeout=10):
    """The start-up bucket check's log line (storage.ready or
    storage.unavailable)."""
    return captools.wait_for(srv, lambda l: l.get("event") in ("storage.ready",
                                                                 "storage.unavailable"),
                             timeout=timeout)


def log_events(srv, event):
    return [l for l in captools.complete_log_lines(srv.log_text()) if l.get("event") == event]


def job_lines(srv, job_id, event=None):
    return [l for l in captools.complete_log_lines(srv.log_text())
            if l.get("job_id") == job_id and (event is None or l.get("event") == event)]


def vm_status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


def vm_hwm_kib(pid):
    """Peak resident set size (VmHWM) of pid, KiB."""
    return vm_status_kib(pid, "VmHWM")


# ---------------------------------------------------------------------------
# Clean state: no open upload, no temp file, no child

def tmp_fds(srv):
    """The server's open descriptors to files in DATA/.cap-tmp (including
    deleted ones; the directory itself may stay open)."""
    root = os.path.join(mt.data_dir(srv), ".cap-tmp")
    try:
        t = mt.fd_targets(srv.proc.pid)
    except FileNotFoundError:
        return {}
    return {n: p for n, p in t.items() if p.startswith(root + "/")}


def clean_problems(srv, bed=None, buckets=()):
    """What is left behind: children of the server (running or zombie),
    entries in DATA/.cap-tmp, descriptors into it, open multipart uploads
    in the given buckets (whole bucket)."""
    problems = []
    if srv is not None and srv.proc.poll() is None:
        kids = mt.children(srv.proc.pid)
        if kids:
            problems.append("children of the server: %r" % kids)
        t = mt.tmp_entries(srv)
        if t:
            problems.append("left in .cap-tmp: %r" % t)
        fds = tmp_fds(srv)
        if fds:
            problems.append("descriptors into .cap-tmp still open: %r" % fds)
    listed = []
    if buckets:
        with concurrent.futures.ThreadPoolExecutor(len(buckets)) as ex:
            listed = list(ex.map(bed.list_multipart_uploads, buckets))
    for b, ups in zip(buckets, listed):
        if ups:
            problems.append("open multipart uploads in %s: %r"
                            % (b, [(u["Key"], u["UploadId"], u.get("Initiated")) for u in ups]))
    return problems


def assert_clean(tc, srv, bed=None, buckets=(), timeout=5):
    """Retries for timeout seconds (a job's clean-up may finish just after
    its answer), then fails with everything that is left."""
    deadline = time.time() + timeout
    while True:
        problems = clean_problems(srv, bed, buckets)
        if not problems:
            return
        if time.time() >= deadline:
            tc.fail("not clean: " + "; ".join(problems))
        time.sleep(0.2)


# ---------------------------------------------------------------------------
# Credentials must never show

FORBIDDEN_ALWAYS = ("Signature=", "Credential=", "AWS4-HMAC-SHA256", "X-Amz-Signature",
                    "AWS_SECRET")


def credential_hits(text, secrets=(), access_keys=()):
    """Lines of text that contain credential material: an Authorization
    header's parts, a secret (as a whole word: the bed's secret "testing"
    must not match e.g. "attestings"), an access key id."""
    hits = []
    words = [re.compile(r"(?<![A-Za-z0-9])%s(?![A-Za-z0-9])" % re.escape(s)) for s in secrets]
    for line in text.splitlines():
        if any(f in line for f in FORBIDDEN_ALWAYS) or any(a in line for a in access_keys) \
                or any(w.search(line) for w in words):
            hits.append(line)
    return hits


# ---------------------------------------------------------------------------
# Objects

def md5_file(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(MIB)
            if not b:
                return h.hexdigest()
            h.update(b)


def expected_etag(path, part_size):
    """The ETag S3 gives the object holding path's bytes when it is uploaded
    in uniform parts of part_size (MD5 of the part MD5s + "-N"), or as one
    PUT (plain MD5) when it is smaller than one part."""
    size = os.path.getsize(path)
    if size < part_size:
        return '"%s"' % md5_file(path)
    digests = []
    with open(path, "rb") as f:
        while True:
            b = f.read(part_size)
            if not b:
                break
            digests.append(hashlib.md5(b).digest())
    return '"%s-%d"' % (hashlib.md5(b"".join(digests)).hexdigest(), len(digests))


def part_count(size, part_size):
    return (size + part_size - 1) // part_size


def part_sizes(bed, bucket, key):
    """Sizes of the parts of a completed multipart object, in order, or None
    for an object from a single PUT.  `aws s3api head-object --part-number N`
    answers 405 on this Swift (checked here once per call), so the sizes come
    from the Swift SLO manifest s3api made of the parts."""
    r = bed.aws("s3api", "head-object", "--bucket", bucket, "--key", key, "--part-number", "1",
                check=False)
    if r.returncode == 0:
        sizes = []
        n = json.loads(r.stdout).get("PartsCount")
        if not n:
            return None
        for i in range(1, n + 1):
            sizes.append(bed.head_object(bucket, key, part_number=i)["ContentLength"])
        return sizes
    if "(405)" not in r.stderr and "MethodNotAllowed" not in r.stderr:
        raise AssertionError("head-object --part-number: %s" % r.stderr)
    return bed.part_sizes(bucket, key)


def proxy_requests(bed, path, methods=None):
    """Swift proxy access-log lines of requests for exactly this (encoded)
    path, e.g. "/bucket/pre/in/clip.mp4"; optionally only these methods."""
    out = []
    for line in bed.log("proxy").splitlines():
        m = re.search(r" (GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.[01] (\d{3}) ", line)
        if not m:
            continue
        p = m.group(2).split("%3F", 1)[0].split("?", 1)[0]
        if p == path and (methods is None or m.group(1) in methods):
            out.append((m.group(1), m.group(2), int(m.group(3))))
    return out


def ffprobe_json(path, *extra):
    out = subprocess.run([mt.FFPROBE, "-v", "error", "-print_format", "json", "-show_format",
                          "-show_streams"] + list(extra) + [path], check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120).stdout
    return json.loads(out.decode("utf-8"))


def ffmpeg(*args, stdout=None, timeout=300):
    """Runs ffmpeg (loglevel error); stdout: a path to receive its stdout
    (for outputs written to pipe:1, as the server's streamed presets do)."""
    argv = [mt.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"] + list(args)
    if stdout:
        with open(stdout, "wb") as f:
            subprocess.run(argv, check=True, stdout=f, stderr=subprocess.PIPE, timeout=timeout)
    else:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=timeout)


def mjpeg_mkv(path, seconds_loops=0, size="1920x1080"):
    """A Matroska clip (MJPEG q1 + AAC, 2 s) repeated seconds_loops extra
    times with stream copy: many megabytes cheaply (about 3 MB/s at
    1080p), and remuxing it to MP4 changes every byte (not a no-op)."""
    seg = path + ".seg.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=%s:rate=25:duration=2" % size,
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2",
           "-c:v", "mjpeg", "-q:v", "1", "-pix_fmt", "yuvj420p", "-c:a", "aac", "-b:a", "64k",
           "-shortest", seg)
    ffmpeg("-stream_loop", str(seconds_loops), "-i", seg, "-map", "0", "-c", "copy", path)
    os.unlink(seg)
    return path


def remux_locally(src, dst):
    """The remux-mp4 preset as a plain ffmpeg command writing a local file."""
    subprocess.run([mt.FFMPEG, "-hide_banner", "-nostdin", "-y", "-i", src, "-map", "0",
                    "-c", "copy", "-movflags", "+faststart", "-f", "mp4", dst],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    return dst
