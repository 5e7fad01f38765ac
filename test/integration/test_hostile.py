#!/usr/bin/env python3
"""Integration tests: hostile inputs must not make ffmpeg/ffprobe read files
outside the data directory or open network connections.

An input object whose bytes are an HLS playlist (or a DASH manifest, an
ffconcat script, an SDP file, ...) stored under an innocent name such as
uploads/evil.mp4 used to make the render child open a local file named in
it (or a URL) and render it into the output.  The corpus of such inputs is
test/integration/hostile/ (templates; see its README.md): each file is
filled in at test time with the absolute path of a canary clip planted
OUTSIDE the server's data directory (a solid magenta MPEG-TS), and with the
port of a recording TCP listener / UDP sockets on 127.0.0.1.

- shows_canary(video) decodes a video to 8x8 RGB frames and says whether
  a frame is (almost all) magenta; it is True for a direct ffmpeg render of
  the canary with the 720p preset (so the check can fail) and must be False
  for every output made from a hostile input;
- default server (file store): for every corpus entry a 720p render and an
  ffprobe request answer 422 input_format_refused (with the detected
  format: hls, dash, concat where ffmpeg detects them so; another non-empty
  name otherwise) or succeed without the canary; the listener sees nothing;
  nothing new appears outside the data directory; no ffmpeg/ffprobe child
  is left; the issue's exact reproduction is 422 input_format_refused;
- widened allow-list (--input-formats with hls, dash, concat, mpegts, ...)
  with the default sandbox: the canary cases fail or render without the
  canary, no TCP connection reaches the listener (Landlock ABI >= 4);
- CONTROL: widened allow-list with --sandbox off: the issue's reproduction
  DOES leak the canary, which proves the corpus and the detector work;
- a benign input renders and probes as before;
- the key cases again on the S3 bed (skipped when it is not installed),
  with no object or multipart upload left behind for refused jobs.
"""
import base64
import ctypes
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile")

# Formats the widened servers allow on purpose (so that only the sandbox
# stands between a playlist and the canary).
WIDE_FORMATS = "hls,dash,concat,mpegts,mov,matroska,mp3,aac,wav"

REFUSED = "input_format_refused"
PLACEHOLDER_RE = re.compile(r"@(CANARY|CANARY_DIR|PORT|UDP_PORT|BASE64:[^@]*)@")

# The corpus: file -> how it is stored and what is expected of it.
#   key       object key it is stored under (innocent names)
#   format    the detected_format the server must report when it refuses
#             the entry (ffmpeg 5.1's own name for what it probes through
#             file:/dev/fd/3); None: any non-empty name
#   canary    reads the canary file (or a sibling) when nothing stops it
#   tcp       makes ffmpeg connect to the recording listener when nothing
#             stops it
#   unknown   ffmpeg detects no format at all through a descriptor (the tty
#             demuxer needs a file extension): a failed job is accepted too
MANIFEST = {
    "hls_file_url.m3u8": dict(key="uploads/evil.mp4", format="hls", canary=True),
    "hls_abs_path.m3u8": dict(key="uploads/holiday.mp4", format="hls", canary=True),
    "hls_rel_input.m3u8": dict(key="uploads/clip-rel.mp4", format="hls", canary=True),
    "hls_rel_deep.m3u8": dict(key="uploads/clip-deep.mp4", format="hls", canary=True),
    "hls_http.m3u8": dict(key="uploads/clip-http.mp4", format="hls", tcp=True),
    "hls_data_variant.m3u8": dict(key="uploads/clip-data.mp4", format="hls", canary=True),
    "dash_file.mpd": dict(key="uploads/dash.mp4", format="dash", canary=True),
    "dash_http.mpd": dict(key="uploads/dash-http.mp4", format="dash", tcp=True),
    "concat.ffconcat": dict(key="uploads/concat.mp4", format="concat", canary=True),
    "img_pattern.jpg": dict(key="uploads/img%03d.jpg", format=None, canary=True),
    "vobsub.idx": dict(key="uploads/movie.idx", format=None),
    "subtitle.ass": dict(key="uploads/subs.mp4", format=None),
    "subtitle.srt": dict(key="uploads/captions.mp4", format=None),
    "ffmetadata.txt": dict(key="uploads/meta.mp4", format=None),
    "rtp.sdp": dict(key="uploads/live.mp4", format=None, udp=True),
    "ansi.ans": dict(key="uploads/readme.mp4", format=None, unknown=True),
}
BINARY = ("img_pattern.jpg",)
# Siblings of the image2-style key: magenta JPEGs that a pattern reader
# would pick up (they live inside the data dir, next to the input).
IMG_SIBLINGS = ("uploads/img001.jpg", "uploads/img002.jpg")

# The entries the widened servers get (they can reach the canary or the
# listener once their demuxer is allowed).
WIDE_CASES = ("hls_file_url.m3u8", "hls_abs_path.m3u8", "hls_rel_input.m3u8",
              "hls_rel_deep.m3u8", "hls_data_variant.m3u8", "hls_http.m3u8",
              "dash_file.mpd", "dash_http.mpd", "concat.ffconcat")

# The widened cases that do render the canary when there is no sandbox
# (the others are stopped by ffmpeg itself: a relative URL resolves against
# /dev/fd/, data: and http are not on the children's protocol whitelist,
# the concat demuxer's "safe" mode refuses absolute paths).
LIVE_WITHOUT_SANDBOX = ("hls_file_url.m3u8", "hls_abs_path.m3u8", "hls_rel_deep.m3u8",
                        "dash_file.mpd")

# What the module found, printed at the end (the report's table).
FOUND = {}

TMP = None
CANARY_TS = None     # the magenta clip, made once, copied next to each server
CANARY_MP4 = None
CANARY_JPG = None
REFERENCE = None     # direct ffmpeg render of the canary with the 720p preset


# ---------------------------------------------------------------------------
# Media

def ffmpeg(*args, timeout=120):
    subprocess.run([mt.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"] + list(args),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)


def preset_args(name="720p"):
    with open(mt.BUILTIN_PRESETS_PATH, "r", encoding="utf-8") as f:
        p = json.load(f)[name]
    return p["args"], p["format"]


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def frames_rgb(path, size=8):
    """Every frame of path's first video stream as a list of (r, g, b)
    pixels, scaled to size x size."""
    out = subprocess.run([mt.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error",
                          "-i", path, "-map", "0:v:0", "-vf", "scale=%d:%d" % (size, size),
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if out.returncode != 0:
        raise AssertionError("cannot decode %s: %s" % (path, out.stderr.decode(errors="replace")))
    n = size * size * 3
    raw = out.stdout
    return [[tuple(raw[i + k:i + k + 3]) for k in range(0, n, 3)]
            for i in range(0, len(raw) - n + 1, n)]


def magenta(px):
    r, g, b = px
    return r > 180 and b > 180 and g < 90


def shows_canary(path):
    """True when some frame of the video at path is (at least 3/4) magenta."""
    for frame in frames_rgb(path):
        if sum(1 for px in frame if magenta(px)) * 4 >= len(frame) * 3:
            return True
    return False


def probe_shows_canary(probe):
    """A probe answer that describes the canary (a 320x240 H.264 stream:
    no corpus entry has one of its own)."""
    for s in (probe or {}).get("streams", []):
        if s.get("codec_name") == "h264" and s.get("width") == 320 and s.get("height") == 240:
            return True
    return False


def landlock_abi():
    """The kernel's Landlock ABI version (0: none)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        r = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
        return max(0, r)
    except (OSError, AttributeError):
        return 0


# ---------------------------------------------------------------------------
# Recording listeners

class Recorder:
    """A TCP listener and two UDP sockets (PORT, PORT+1: RTP and RTCP) on
    127.0.0.1 that record every connection and datagram."""

    def __init__(self):
        self.events = []
        self._lock = threading.Lock()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.port = self.tcp.getsockname()[1]
        self.udp = []
        for _ in range(50):
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                b.bind(("127.0.0.1", p + 1))
            except OSError:
                a.close()
                b.close()
                continue
            self.udp = [a, b]
            self.udp_port = p
            break
        if not self.udp:
            raise RuntimeError("no pair of free UDP ports")
        self._halt = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads += [threading.Thread(target=self._recv, args=(s,), daemon=True) for s in self.udp]
        for t in self._threads:
            t.start()

    def _record(self, ev):
        with self._lock:
            self.events.append(ev)

    def _accept(self):
        self.tcp.settimeout(0.2)
        while not self._halt.is_set():
            try:
                c, peer = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            data = b""
            c.settimeout(1)
            try:
                data = c.recv(4096)
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            finally:
                c.close()
            self._record(("tcp", peer, data[:200]))

    def _recv(self, s):
        s.settimeout(0.2)
        while not self._halt.is_set():
            try:
                data, peer = s.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self._record(("udp", s.getsockname()[1], peer, data[:64]))

    def count(self):
        with self._lock:
            return len(self.events)

    def since(self, n):
        with self._lock:
            return list(self.events[n:])

    def close(self):
        self._halt.set()
        for t in self._threads:
            t.join(2)
        for s in [self.tcp] + self.udp:
            s.close()


# ---------------------------------------------------------------------------
# Corpus

def corpus_files():
    return sorted(n for n in os.listdir(CORPUS) if n != "README.md")


def render_entry(name, ctx):
    """The bytes of corpus file name with its placeholders filled in:
    @CANARY@, @CANARY_DIR@, @PORT@, @UDP_PORT@, and @BASE64:<file>@ (the
    base64 of another corpus file, itself filled in)."""
    with open(os.path.join(CORPUS, name), "rb") as f:
        raw = f.read()
    if name in BINARY:
        return raw
    text = raw.decode("utf-8")
    while "@BASE64:" in text:
        i = text.index("@BASE64:")
        j = text.index("@", i + 1)
        inner = render_entry(text[i + 8:j], ctx)
        text = text[:i] + base64.b64encode(inner).decode("ascii") + text[j + 1:]
    for k, v in ctx.items():
        text = text.replace("@%s@" % k, str(v))
    left = PLACEHOLDER_RE.search(text)
    if left:
        raise AssertionError("unfilled placeholder %s in %s" % (left.group(0), name))
    return text.encode("utf-8")


def plant_canary(tmp_dir):
    """Copies the canary files to TMP_DIR/outside (a sibling of the data
    directory, outside it); returns the placeholder values."""
    out = os.path.join(tmp_dir, "outside")
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(CANARY_TS, os.path.join(out, "secret.ts"))
    shutil.copyfile(CANARY_MP4, os.path.join(out, "secret.mp4"))
    return {"CANARY": os.path.join(out, "secret.ts"), "CANARY_DIR": out}


def snapshot_outside(srv):
    """Every path under the server's temp dir but outside its data dir
    (where the canary, the server's log and the cwd of every child are)."""
    root = srv.tmp
    data = mt.data_dir(srv)
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == data or dirpath.startswith(data + os.sep):
            continue
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if p != data:
                out.add(p)
    return out


def media_children(srv):
    """ffmpeg/ffprobe children of the server, running or not yet reaped."""
    return {p: s for p, s in mt.children(srv.proc.pid).items() if s[0] in mt.MEDIA_COMMS}


def render_starts(srv, job_id):
    """job.started lines of the job's ffmpeg render (phase "render", or
    the program ffmpeg)."""
    return [l for l in mt.job_started_lines(srv, job_id)
            if l.get("phase") == "render"
            or os.path.basename(str(l.get("program", ""))) == "ffmpeg"]


def setUpModule():
    global TMP, CANARY_TS, CANARY_MP4, CANARY_JPG, REFERENCE
    TMP = tempfile.mkdtemp(prefix="capsrv-hostile-")
    CANARY_TS = os.path.join(TMP, "canary.ts")
    CANARY_MP4 = os.path.join(TMP, "canary.mp4")
    CANARY_JPG = os.path.join(TMP, "canary.jpg")
    ffmpeg("-f", "lavfi", "-i", "color=c=magenta:s=320x240:r=25:d=1",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25",
           "-f", "mpegts", CANARY_TS)
    ffmpeg("-i", CANARY_TS, "-c", "copy", "-movflags", "+faststart", CANARY_MP4)
    ffmpeg("-f", "lavfi", "-i", "color=c=magenta:s=64x48", "-frames:v", "1", "-update", "1",
           CANARY_JPG)
    args, fmt = preset_args("720p")
    REFERENCE = os.path.join(TMP, "reference.mp4")
    ffmpeg("-i", "file:" + CANARY_TS, *args, "-f", fmt, "file:" + REFERENCE)


def tearDownModule():
    if FOUND:
        sys.stderr.write("\nhostile corpus outcomes:\n")
        for k in sorted(FOUND):
            sys.stderr.write("  %-44s %s\n" % (k, FOUND[k]))
    if TMP:
        shutil.rmtree(TMP, True)


# ---------------------------------------------------------------------------
# Shared checks

class HostileBase(unittest.TestCase):
    """One server (cls.srv) with the canary planted next to its data dir and
    a recorder; subclasses say how the server starts."""

    server_args = ()
    label = "default"
    # The job.started lines' "sandbox" field (when the server logs one)
    # must be this; None: not checked.
    expect_sandbox = True

    @classmethod
    def start_server(cls):
        return mt.start(list(cls.server_args))

    @classmethod
    def precheck(cls):
        pass

    @classmethod
    def setUpClass(cls):
        cls.precheck()
        cls.rec = Recorder()
        cls.srv = None
        cls.addClassCleanup(cls.rec.close)
        cls.srv = cls.start_server()
        cls.addClassCleanup(mt.stop, cls.srv)
        cls.ctx = plant_canary(cls.srv.tmp)
        cls.ctx.update(PORT=cls.rec.port, UDP_PORT=cls.rec.udp_port)
        cls.before_outside = snapshot_outside(cls.srv)

    # --- storage: overridden by the S3 classes -----------------------------

    def put(self, key, data):
        mt.put(self.srv, key, content=data)

    def output_path(self, key):
        """A local file holding the output object, or None when there is
        no such object."""
        p = os.path.join(mt.data_dir(self.srv), key)
        return p if os.path.exists(p) else None

    def assert_no_leftovers(self, output_key):
        mt.assert_clean(self, self.srv)

    # --- helpers -------------------------------------------------------------

    def put_entry(self, name):
        m = MANIFEST[name]
        self.put(m["key"], render_entry(name, self.ctx))
        if name == "img_pattern.jpg":
            jpg = read_bytes(CANARY_JPG)
            for k in IMG_SIBLINGS:
                self.put(k, jpg)
        return m["key"]

    def wait_no_children(self, timeout=5):
        deadline = time.time() + timeout
        while True:
            kids = media_children(self.srv)
            if not kids or time.time() >= deadline:
                return kids
            time.sleep(0.05)

    def check_refusal(self, status, body, expect_format, what):
        """A 422 input_format_refused answer, the same error in the job."""
        self.assertEqual(status, 422, "%s: %r" % (what, body))
        self.assertEqual(body.get("code"), REFUSED, "%s: %r" % (what, body))
        self.assertEqual(body.get("status"), "failed", "%s: %r" % (what, body))
        det = body.get("detected_format")
        self.assertIsInstance(det, str, "%s: detected_format missing: %r" % (what, body))
        self.assertTrue(det, "%s: empty detected_format: %r" % (what, body))
        if expect_format is not None:
            self.assertEqual(det, expect_format, "%s: %r" % (what, body))
        self.assertIsInstance(body.get("error"), str, body)
        self.assertIn(det, body["error"], "%s: the message must name the detected format: %r"
                      % (what, body))
        self.assertRegex(body.get("job_id") or "", mt.JOB_ID_RE, body)
        st_, _, job = mt.get_job(self.srv, body["job_id"])
        self.assertEqual(st_, 200, job)
        self.assertEqual(job.get("status"), "failed", job)
        err = job.get("error") or {}
        self.assertEqual(err.get("code"), REFUSED, "%s: job error %r" % (what, job))
        self.assertEqual(err.get("detected_format"), det, "%s: job error %r" % (what, job))
        self.assertIsInstance(err.get("message"), str, job)
        self.assertIn(det, err["message"], job)
        # refused before any render: no ffmpeg run was started for it
        self.assertEqual(render_starts(self.srv, body["job_id"]), [],
                         "%s: an ffmpeg render was started for a refused input" % what)
        return det

    def run_one(self, name, kind, allow_failure=False, expect_refusal=True):
        """Stores the entry, sends a render (kind "render") or a probe and
        checks every promise; returns a short description of the outcome."""
        m = MANIFEST[name]
        key = self.put_entry(name)
        out_key = "renders/%s-%s.mp4" % (self.label, name.replace(".", "_"))
        body = (mt.render_body(key, out_key, "720p") if kind == "render" else mt.probe_body(key))
        what = "%s %s %s (%s)" % (self.label, kind, name, key)
        n0 = self.rec.count()
        status, _, j = mt.exec_(self.srv, body, timeout=120)
        self.assertIsNotNone(j, "%s: not JSON (%d)" % (what, status))
        self.assertNotEqual(status, 202, "%s: did not finish within the wait: %r" % (what, j))
        self.assertNotIn(j.get("code"), ("internal",), "%s: %r" % (what, j))
        if status == 200:
            self.assertEqual(j.get("status"), "succeeded", j)
            outcome = "succeeded"
            if kind == "render":
                path = self.output_path(out_key)
                self.assertIsNotNone(path, "%s: succeeded but no output object" % what)
                self.assertFalse(shows_canary(path), "%s: THE OUTPUT SHOWS THE CANARY" % what)
            else:
                self.assertFalse(probe_shows_canary(j.get("probe")),
                                 "%s: THE PROBE DESCRIBES THE CANARY: %r" % (what, j.get("probe")))
                outcome += " (format %s)" % ((j.get("probe") or {}).get("format", {})
                                             .get("format_name"))
        elif j.get("code") == REFUSED:
            det = self.check_refusal(status, j, m["format"], what)
            outcome = "422 %s detected_format=%s" % (REFUSED, det)
        else:
            outcome = "%d %s" % (status, j.get("code"))
            if not allow_failure:
                self.fail("%s: neither %s nor a success: %d %r" % (what, REFUSED, status, j))
            self.assertEqual(j.get("status"), "failed", "%s: %r" % (what, j))
            tail = j.get("stderr_tail")
            if tail:
                outcome += " [%s]" % tail.strip().splitlines()[-1][:120]
        jid = j.get("job_id")
        if jid and self.expect_sandbox is not None:
            for l in mt.job_started_lines(self.srv, jid):
                if "sandbox" in l:
                    self.assertIs(l["sandbox"], self.expect_sandbox,
                                  "%s: child started with sandbox=%r: %r"
                                  % (what, l["sandbox"], l))
        if status != 200 and kind == "render":
            self.assertIsNone(self.output_path(out_key),
                              "%s: a failed job left an output object" % what)
        # nothing reached the listener (late connections included)
        time.sleep(0.3)
        self.assertEqual(self.rec.since(n0), [], "%s: the listener was reached" % what)
        # nothing new outside the data directory
        new = snapshot_outside(self.srv) - self.before_outside
        self.assertEqual(sorted(new), [], "%s: new files outside the data dir" % what)
        # no ffmpeg/ffprobe left behind
        self.assertEqual(self.wait_no_children(), {}, "%s: media children left" % what)
        FOUND["%s %s %s" % (self.label, kind, name)] = outcome
        return status, j


# ---------------------------------------------------------------------------
# Default server, local file store

class HostileDefault(HostileBase):
    label = "default"

    def test_00_corpus_matches_manifest(self):
        """Every corpus file is exercised, every manifest entry exists, and
        the README names every file."""
        self.assertEqual(corpus_files(), sorted(MANIFEST))
        with open(os.path.join(CORPUS, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        for n in MANIFEST:
            self.assertIn("`%s`" % n, readme, "README.md does not list %s" % n)

    def test_01_detector_can_fail(self):
        """shows_canary is True for the canary rendered directly with the
        720p preset, False for an ordinary clip."""
        self.assertTrue(shows_canary(REFERENCE), "the reference render of the canary")
        self.assertTrue(shows_canary(CANARY_TS))
        self.assertFalse(shows_canary(mt.clip(1.0, "320x240")))

    def test_02_issue_reproduction_refused(self):
        """The issue's exact request answers 422 input_format_refused (hls);
        no renders/leak.mp4 appears."""
        canary = self.ctx["CANARY"]
        self.assertEqual(canary, os.path.join(self.srv.tmp, "outside", "secret.ts"))
        playlist = ("#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3.0,\nfile://%s\n#EXT-X-ENDLIST\n"
                    % canary).encode()
        self.put("uploads/evil.mp4", playlist)
        status, _, j = mt.exec_(self.srv, {"input_key": "uploads/evil.mp4",
                                           "output_key": "renders/leak.mp4", "preset": "720p"})
        self.assertIsNotNone(j)
        self.assertNotEqual((status, j.get("status")), (200, "succeeded"),
                            "THE ISSUE REPRODUCES: %r" % j)
        det = self.check_refusal(status, j, "hls", "issue reproduction")
        FOUND["default issue reproduction"] = "%d %s detected_format=%s" % (status, j["code"], det)
        self.assertIsNone(self.output_path("renders/leak.mp4"))
        self.assertEqual(self.wait_no_children(), {})

    def test_10_corpus_render(self):
        for name in sorted(MANIFEST):
            with self.subTest(entry=name):
                self.run_one(name, "render", allow_failure=MANIFEST[name].get("unknown", False))

    def test_11_corpus_probe(self):
        for name in sorted(MANIFEST):
            with self.subTest(entry=name):
                self.run_one(name, "probe", allow_failure=MANIFEST[name].get("unknown", False))

    def test_20_benign_render_and_probe(self):
        """An ordinary MP4 (testsrc2 + sine) still renders and probes."""
        self.put("uploads/benign.mp4", read_bytes(mt.clip(1.0, "320x240")))
        status, _, j = mt.exec_(self.srv, mt.render_body("uploads/benign.mp4",
                                                         "renders/benign.mp4", "720p"))
        self.assertEqual(status, 200, j)
        self.assertEqual(j.get("status"), "succeeded", j)
        path = self.output_path("renders/benign.mp4")
        self.assertIsNotNone(path)
        probe = mt.ffprobe(path)
        v = mt.streams_of(probe, "video")
        self.assertEqual((v[0]["width"], v[0]["height"]), (960, 720), probe)
        self.assertEqual(len(mt.streams_of(probe, "audio")), 1, probe)
        self.assertFalse(shows_canary(path))
        status, _, j = mt.exec_(self.srv, mt.probe_body("uploads/benign.mp4"))
        self.assertEqual(status, 200, j)
        self.assertIn("mp4", j["probe"]["format"]["format_name"], j)
        self.assertEqual(len(j["probe"]["streams"]), 2, j)

    def test_zz_clean_state(self):
        mt.assert_clean(self, self.srv)


# ---------------------------------------------------------------------------
# Widened allow-list, default sandbox: only the sandbox protects

class HostileWidenedSandboxed(HostileBase):
    label = "widened"
    server_args = ("--input-formats", WIDE_FORMATS)

    def test_00_landlock_available(self):
        """The kernel has Landlock (ABI >= 4 for the TCP rules); without it
        best-effort would run unconfined and the next tests would leak."""
        abi = landlock_abi()
        FOUND["landlock abi"] = abi
        self.assertGreaterEqual(abi, 4, "Landlock ABI %d on this kernel" % abi)

    def test_10_canary_cases(self):
        """hls/dash/concat demuxers allowed: the canary cases fail (any
        failure) or render without the canary; no TCP connection."""
        for name in WIDE_CASES:
            with self.subTest(entry=name):
                self.run_one(name, "render", allow_failure=True)

    def test_11_canary_cases_probe(self):
        for name in ("hls_file_url.m3u8", "dash_file.mpd", "hls_http.m3u8"):
            with self.subTest(entry=name):
                self.run_one(name, "probe", allow_failure=True)

    def test_20_benign_render(self):
        """The sandbox does not stop an ordinary render."""
        self.put("uploads/benign.mp4", read_bytes(mt.clip(1.0, "320x240")))
        status, _, j = mt.exec_(self.srv, mt.render_body("uploads/benign.mp4",
                                                         "renders/benign.mp4", "720p"))
        self.assertEqual(status, 200, j)
        self.assertFalse(shows_canary(self.output_path("renders/benign.mp4")))

    def test_zz_clean_state(self):
        mt.assert_clean(self, self.srv)


# ---------------------------------------------------------------------------
# CONTROL: widened allow-list and no sandbox -> the hole is open again

class HostileControlNoSandbox(HostileBase):
    label = "control"
    expect_sandbox = False
    server_args = ("--input-formats", WIDE_FORMATS, "--sandbox", "off")

    def test_control_sandbox_off_widened_list_issue_reproduction_leaks(self):
        """CONTROL (expected leak): with hls allowed and --sandbox off the
        issue's reproduction renders the canary.  This proves that the
        corpus and shows_canary() detect a leak; it is not a bug."""
        playlist = ("#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3.0,\nfile://%s\n#EXT-X-ENDLIST\n"
                    % self.ctx["CANARY"]).encode()
        self.put("uploads/evil.mp4", playlist)
        status, _, j = mt.exec_(self.srv, {"input_key": "uploads/evil.mp4",
                                           "output_key": "renders/leak.mp4", "preset": "720p"})
        self.assertEqual(status, 200, "the control did not render: %r" % j)
        path = self.output_path("renders/leak.mp4")
        self.assertIsNotNone(path)
        self.assertTrue(shows_canary(path), "the control render does not show the canary")
        FOUND["control issue reproduction (sandbox off)"] = "200 succeeded, output shows the canary"
        self.assertEqual(self.wait_no_children(), {})

    def test_control_sandbox_off_widened_list_corpus(self):
        """CONTROL (expected leaks): without the sandbox the entries in
        LIVE_WITHOUT_SANDBOX render the canary (they are live, so the
        widened+sandbox tests prove the sandbox stops them); the others
        are recorded.  No entry reaches the listener even here: the
        children's -protocol_whitelist is file only."""
        for name in WIDE_CASES:
            with self.subTest(entry=name):
                key = self.put_entry(name)
                out_key = "renders/control-%s.mp4" % name.replace(".", "_")
                n0 = self.rec.count()
                status, _, j = mt.exec_(self.srv, mt.render_body(key, out_key, "720p"))
                path = self.output_path(out_key) if status == 200 else None
                leak = bool(path) and shows_canary(path)
                FOUND["control render %s" % name] = "%d %s%s" % (
                    status, j.get("status") if status == 200 else j.get("code"),
                    ", output shows the canary" if leak else "")
                if name in LIVE_WITHOUT_SANDBOX:
                    self.assertEqual(status, 200, "%s: the control did not render: %r" % (name, j))
                    self.assertTrue(leak, "%s: the control render does not show the canary" % name)
                time.sleep(0.3)
                self.assertEqual(self.rec.since(n0), [], "%s: the listener was reached" % name)
                self.assertEqual(self.wait_no_children(), {})

    def test_zz_clean_state(self):
        mt.assert_clean(self, self.srv)


# ---------------------------------------------------------------------------
# S3 bed

BED = None
S3_BUCKET = "hostile"


def s3_bed():
    global BED
    if BED is None:
        BED = st.S3Bed().start()
        BED.make_bucket(S3_BUCKET)
    return BED


class S3Mixin:
    prefix = None

    @classmethod
    def precheck(cls):
        if not st.have_bed():
            raise unittest.SkipTest("S3 bed not installed (scripts/s3-testbed.sh install): "
                                    "the S3 hostile cases are skipped")

    @classmethod
    def start_server(cls):
        cls.bed = s3_bed()
        srv = st.start_s3(cls.bed, S3_BUCKET, cls.prefix, list(cls.server_args))
        ev = st.storage_event(srv)
        if ev.get("event") != "storage.ready":
            mt.stop(srv)
            raise AssertionError("bucket check failed: %r" % ev)
        return srv

    def full(self, key):
        return "%s/%s" % (self.prefix, key)

    # Objects go through the bed's own SigV4 client (S3Bed.request): awscli
    # costs about 1.5 s a call; st.assert_clean still asks awscli for open
    # multipart uploads after every test.

    def put(self, key, data):
        r = self.bed.request("PUT", S3_BUCKET, self.full(key), body=data)
        self.assertEqual(r.status, 200, r)

    def keys(self, prefix):
        """Keys of the objects under prefix (relative to the server's)."""
        r = self.bed.request("GET", S3_BUCKET, query=[("list-type", "2"),
                                                      ("prefix", self.full(prefix))])
        self.assertEqual(r.status, 200, r)
        root = ET.fromstring(r.body)
        return sorted(e.text for e in root.iter() if e.tag.endswith("}Key") or e.tag == "Key")

    def output_path(self, key):
        r = self.bed.request("GET", S3_BUCKET, self.full(key))
        if r.status == 404:
            return None
        self.assertEqual(r.status, 200, r)
        dl = os.path.join(TMP, "dl-%s-%s" % (self.label, key.replace("/", "_")))
        with open(dl, "wb") as f:
            f.write(r.body)
        return dl

    def tearDown(self):
        st.assert_clean(self, self.srv, self.bed, (S3_BUCKET,))


class HostileS3Default(S3Mixin, HostileBase):
    label = "s3-default"
    prefix = "dflt"

    def test_issue_reproduction(self):
        status, j = self.run_one("hls_file_url.m3u8", "render")
        self.assertEqual((status, j.get("code"), j.get("detected_format")), (422, REFUSED, "hls"), j)

    def test_issue_reproduction_probe(self):
        status, j = self.run_one("hls_file_url.m3u8", "probe")
        self.assertEqual((status, j.get("code"), j.get("detected_format")), (422, REFUSED, "hls"), j)

    def test_ffconcat(self):
        status, j = self.run_one("concat.ffconcat", "render")
        self.assertEqual((status, j.get("code"), j.get("detected_format")), (422, REFUSED, "concat"), j)

    def test_dash(self):
        for name in ("dash_file.mpd", "dash_http.mpd"):
            with self.subTest(entry=name):
                status, j = self.run_one(name, "render")
                self.assertEqual((status, j.get("code"), j.get("detected_format")),
                                 (422, REFUSED, "dash"), j)

    def test_refused_leave_no_object(self):
        """No object under renders/ for the refused jobs above or below."""
        self.run_one("hls_abs_path.m3u8", "render")
        self.assertEqual(self.keys("renders/"), [], "objects left by refused jobs")

    def test_benign(self):
        self.put("uploads/benign.mp4", read_bytes(mt.clip(1.0, "320x240")))
        status, _, j = mt.exec_(self.srv, mt.render_body("uploads/benign.mp4",
                                                         "renders-ok/benign.mp4", "720p"))
        self.assertEqual(status, 200, j)
        path = self.output_path("renders-ok/benign.mp4")
        self.assertIsNotNone(path)
        self.assertFalse(shows_canary(path))


class HostileS3WidenedSandboxed(S3Mixin, HostileBase):
    label = "s3-widened"
    prefix = "wide"
    server_args = ("--input-formats", WIDE_FORMATS)

    def test_canary_cases(self):
        for name in ("hls_file_url.m3u8", "hls_rel_deep.m3u8", "dash_file.mpd",
                     "concat.ffconcat"):
            with self.subTest(entry=name):
                self.run_one(name, "render", allow_failure=True)


def tearDownS3():
    if BED is not None:
        BED.stop()


_orig_teardown = tearDownModule


def tearDownModule():  # noqa: F811
    try:
        tearDownS3()
    finally:
        _orig_teardown()


if __name__ == "__main__":
    unittest.main(verbosity=2)
