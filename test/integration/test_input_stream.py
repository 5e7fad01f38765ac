"""Streamed inputs (issue 14): S3 inputs read by range through cap-server's
loopback input endpoint while ffmpeg decodes, against the S3 bed (Swift +
s3api) and real ffmpeg.

- Outputs are byte-identical between input_mode stream and download for a
  faststart MP4, a moov-at-end MP4, Matroska, MPEG-TS and an audio-only M4A;
  the ffprobe capability answers the same JSON either way.
- Faults on the ranges, injected by a TCP proxy between cap-server and the
  bed (resets mid-body, 503s, stalls), leave the outputs identical; the
  resumes show in the job and in the metrics.
- The object replaced during a job fails it with input_changed.
- The endpoint answers only a running job's secret path, only to 127.0.0.1.
- No input bytes reach the disk during a streamed job, and memory stays
  bounded with four concurrent 1 GiB inputs.

The outputs are raw frames / PCM in NUT (deterministic, so md5s compare),
streamed into the bucket as they are made.
"""
import hashlib
import http.client
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
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capsrv  # noqa: E402
import captools  # noqa: E402
import mediatools as mt  # noqa: E402
from s3bed import S3Bed  # noqa: E402
from storagetools import (assert_clean, have_bed, start_s3, vm_hwm_kib,  # noqa: E402
                          vm_status_kib)
from tcpproxy import TcpProxy  # noqa: E402

BUCKET = "cap-instream"
MIB = 1 << 20
BED = None
TMP = None
PRESETS = None
INPUTS = {}     # name -> (local path, key, preset)

V_RAW = ["-map", "0:v:0", "-vf", "scale=160:90", "-c:v", "rawvideo", "-pix_fmt", "yuv420p"]
A_RAW = ["-map", "0:a:0", "-c:a", "pcm_s16le"]
# The audio decoded and thrown away (the null muxer): the whole input is
# read, and the stored output is empty, so the server's memory is its reads.
A_NULL = ["-map", "0:a:0", "-c:a", "pcm_u8"]


def preset(args, mode=None, vf_extra=None):
    a = list(args)
    if vf_extra:
        a[a.index("-vf") + 1] = vf_extra + "," + a[a.index("-vf") + 1]
    p = {"description": "raw (test)", "class": "cpu", "format": "nut", "ext": "nut",
         "streamable": True, "encoders": [], "timeout_s": 600, "args": a}
    if mode:
        p["input_mode"] = mode
    return p


def ffmpeg(*args):
    subprocess.run([mt.FFMPEG, "-hide_banner", "-loglevel", "error", "-y"] + list(args),
                   check=True, stdout=subprocess.DEVNULL, timeout=300)


def make_inputs():
    """Five containers of one 12 s 640x360 clip (H.264 at about 3 Mbit/s, so
    several MB: a probe must not read them whole), plus its AAC audio."""
    src = os.path.join(TMP, "src.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=12",
           "-f", "lavfi", "-i", "anoisesrc=duration=12:sample_rate=48000:seed=7",
           "-vf", "noise=alls=30:allf=t", "-c:v", "libx264", "-preset", "ultrafast",
           "-b:v", "3M", "-g", "50", "-c:a", "aac", "-b:a", "128k", "-shortest", src)
    out = {
        "faststart.mp4": ["-c", "copy", "-movflags", "+faststart"],
        "moovend.mp4": ["-c", "copy"],
        "clip.mkv": ["-c", "copy"],
        "clip.ts": ["-c", "copy"],
        "audio.m4a": ["-vn", "-c:a", "copy"],
    }
    for name, args in out.items():
        path = os.path.join(TMP, name)
        ffmpeg("-i", src, *args, path)
        key = "in/" + name
        BED.aws("s3", "cp", path, "s3://%s/%s" % (BUCKET, key))
        INPUTS[name] = (path, key, "a" if name.endswith(".m4a") else "v")


def setUpModule():
    global BED, TMP, PRESETS
    if not have_bed():
        return
    TMP = tempfile.mkdtemp(prefix="input-stream-")
    BED = S3Bed().start()
    BED.make_bucket(BUCKET)
    make_inputs()
    PRESETS = mt.presets_file(TMP, {
        "v": preset(V_RAW), "v-dl": preset(V_RAW, "download"),
        "a": preset(A_RAW), "a-dl": preset(A_RAW, "download"), "a-null": dict(preset(A_NULL), format="null"),
        "v-paced": preset(V_RAW, vf_extra="realtime"),
    })


def tearDownModule():
    if BED is not None:
        BED.stop()
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def md5_object(key):
    path = os.path.join(TMP, "got")
    BED.get_object(BUCKET, key, path)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return len(data), hashlib.md5(data).hexdigest()


def metric(srv, name):
    _st, _h, body = captools.http(srv, "GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def render(srv, key, out, p, wait=90):
    st, _h, b = mt.exec_(srv, mt.render_body(key, out, p, wait=wait), timeout=wait + 30)
    return st, b


class Base(unittest.TestCase):
    def setUp(self):
        if BED is None:
            self.skipTest("the S3 bed (swift, awscli v2) is not installed")
        self.servers = []
        self.proxy = None

    def tearDown(self):
        for s in self.servers:
            s.stop()
        if self.proxy:
            self.proxy.stop()

    def server(self, args=(), via_proxy=False):
        env = None
        if via_proxy:
            self.proxy = TcpProxy(BED.port).start()
            env = {"AWS_ENDPOINT_URL": self.proxy.endpoint}
        srv = start_s3(BED, BUCKET, args=["--presets", PRESETS, "--part-size", "5242880",
                                           "--storage-backoff-ms", "100"] + list(args), env=env)
        self.servers.append(srv)
        return srv

    def job(self, srv, job_id):
        st, _h, b = mt.get_job(srv, job_id)
        self.assertEqual(st, 200, b)
        return b


class Identical(Base):
    def test_outputs_identical_stream_and_download(self):
        """Every container: the streamed job's output equals, byte for byte,
        the downloaded job's; the streamed one read the input through the
        endpoint (with seeks for the moov at the end) and left no temp file."""
        srv = self.server()
        for name, (path, key, kind) in sorted(INPUTS.items()):
            with self.subTest(input=name):
                got = {}
                for p in (kind, kind + "-dl"):
                    out = "out/ident/%s.%s.nut" % (name, p)
                    st, b = render(srv, key, out, p)
                    self.assertEqual(st, 200, b)
                    got[p] = md5_object(out)
                    job = self.job(srv, b["job_id"])
                    mode = job["input"]["mode"]
                    self.assertEqual(mode, "download" if p.endswith("-dl") else "stream", job)
                self.assertEqual(got[kind], got[kind + "-dl"])
                self.assertGreater(got[kind][0], 10000)
                inp = self.job(srv, b["job_id"])  # the -dl one, for its size
                self.assertEqual(inp["input"]["size"], os.path.getsize(path))
        # The streamed moov-at-end MP4 needed a seek (its index is at the end).
        st, b = render(srv, INPUTS["moovend.mp4"][1], "out/ident/seek.nut", "v")
        self.assertEqual(st, 200, b)
        i = self.job(srv, b["job_id"])["input"]
        self.assertGreaterEqual(i["seeks"], 1, i)
        self.assertGreaterEqual(i["requests"], 2, i)
        self.assertGreaterEqual(i["bytes_read"], i["size"] * 0.9, i)
        self.assertGreaterEqual(metric(srv, "cap_input_seeks_total"), 1)
        assert_clean(self, srv, BED, [BUCKET])

    def test_probe_identical_and_reads_little(self):
        """The ffprobe capability answers the same JSON streamed and
        downloaded; streamed, it reads a small part of the object."""
        s_stream = self.server()
        s_dl = self.server(["--input-mode", "download"])
        for name, (path, key, _kind) in sorted(INPUTS.items()):
            with self.subTest(input=name):
                st1, _h, a = mt.exec_(s_stream, mt.probe_body(key))
                st2, _h, b = mt.exec_(s_dl, mt.probe_body(key))
                self.assertEqual((st1, st2), (200, 200), (a, b))
                self.assertEqual(a["probe"], b["probe"])
                i = self.job(s_stream, a["job_id"])["input"]
                self.assertEqual(i["mode"], "stream")
                self.assertEqual(self.job(s_dl, b["job_id"])["input"]["mode"], "download")
                if name == "faststart.mp4":
                    size = os.path.getsize(path)
                    self.assertGreater(size, 4 * MIB)
                    # A few hundred kilobytes plus what the socket buffers
                    # hold, not the object.
                    self.assertLess(i["bytes_read"], 1.5 * MIB, i)


class Faults(Base):
    def ref(self, srv):
        st, b = render(srv, INPUTS["clip.ts"][1], "out/faults/ref.nut", "v-dl")
        self.assertEqual(st, 200, b)
        return md5_object("out/faults/ref.nut")

    def test_resets_5xx_and_stalls_mid_body_are_resumed(self):
        srv = self.server(["--storage-low-speed-s", "1"], via_proxy=True)
        ref = self.ref(srv)
        # MPEG-TS is read front to back in one range, so each fault hits a
        # read ffmpeg is still waiting on.
        key = INPUTS["clip.ts"][1]

        def is_range(r):
            # Not the job's first GET of byte 0 (its size and ETag).
            return (r.method == "GET" and r.path.endswith("/" + key)
                    and r.headers.get("range") != "bytes=0-0")

        cases = [
            ("reset", lambda: self.proxy.reset_response(is_range, count=2, after_body=1 * MIB)),
            ("503", lambda: self.proxy.respond_request(is_range, 503, count=2, code="SlowDown")),
            # Early, while ffmpeg waits for bytes (a read paused because
            # ffmpeg is busy is not a stall), and longer than curl's speed
            # window of about 5 s plus the 1 s limit.
            ("stall", lambda: self.proxy.stall_response(is_range, 12, count=2,
                                                        after_body=65536)),
        ]
        resumes_before = metric(srv, "cap_input_resumes_total")
        for name, arm in cases:
            with self.subTest(fault=name):
                self.proxy.clear()
                n0 = len(self.proxy.requests)
                arm()
                out = "out/faults/%s.nut" % name
                st, b = render(srv, key, out, "v")
                self.assertEqual(st, 200, b)
                self.assertEqual(md5_object(out), ref)
                reqs = [r for r in self.proxy.requests[n0:] if is_range(r)]
                hit = [r for r in reqs if r.fault or r.answered]
                self.assertTrue(hit, reqs)
                # Every range is pinned to the object's ETag.
                for r in reqs:
                    self.assertTrue(r.headers.get("if-match"), r)
                    self.assertTrue(r.headers.get("range", "").startswith("bytes="), r)
                i = self.job(srv, b["job_id"])["input"]
                if name != "503":
                    # A read cut mid-body goes on from the byte it reached.
                    self.assertGreaterEqual(i["resumes"], 1, (i, reqs))
                    starts = [int(re.match(r"bytes=(\d+)-", r.headers["range"]).group(1))
                              for r in reqs]
                    self.assertTrue(any(0 < s <= 2 * MIB for s in starts[1:]), starts)
        self.assertGreaterEqual(metric(srv, "cap_input_resumes_total") - resumes_before, 2)
        assert_clean(self, srv, BED, [BUCKET])

    def test_object_replaced_mid_job_is_input_changed(self):
        srv = self.server(via_proxy=True)
        path, _key, _ = INPUTS["clip.mkv"]
        key = "in/replaced.mkv"
        BED.aws("s3", "cp", path, "s3://%s/%s" % (BUCKET, key))
        # Slow the link so the job is still reading when the object changes.
        self.proxy.set_rate(500_000, "s2c")
        st, _h, b = mt.exec_(srv, mt.render_body(key, "out/changed.nut", "v", wait=0))
        self.assertIn(st, (200, 202), b)
        job_id = b["job_id"]
        # A range is flowing (slowly) when the object is replaced; cutting
        # it makes the store read go on with a new request.
        self.proxy.wait_response(lambda r: r.method == "GET" and r.path.endswith(key)
                                 and r.response_forwarded > 512 * 1024
                                 and not r.response_complete, timeout=60)
        BED.aws("s3", "cp", INPUTS["clip.ts"][0], "s3://%s/%s" % (BUCKET, key))
        self.assertGreater(self.proxy.reset_open(), 0)
        job = mt.poll_job(srv, job_id, timeout=60)
        self.assertEqual(job["status"], "failed", job)
        self.assertEqual(job["error"]["code"], "input_changed", job)
        # The new object reads cleanly.
        self.proxy.set_rate(0)
        st, _h, b = mt.exec_(srv, mt.render_body(key, "out/changed2.nut", "v"))
        self.assertEqual(st, 200, b)
        assert_clean(self, srv, BED, [BUCKET])


class Endpoint(Base):
    def test_secret_paths_and_peers(self):
        srv = self.server()
        path, key, _ = INPUTS["clip.mkv"]
        st, _h, b = mt.exec_(srv, mt.render_body(key, "out/paced.nut", "v-paced", wait=0))
        self.assertIn(st, (200, 202), b)
        job_id = b["job_id"]
        pid = mt.wait_ffmpeg_pid(srv, job_id)
        url = [a for a in mt.cmdline(pid) if a.startswith("http://127.0.0.1:")][0]
        m = re.match(r"http://127\.0\.0\.1:(\d+)/in/([0-9a-f]{32})$", url)
        self.assertIsNotNone(m, url)
        port, secret = int(m.group(1)), m.group(2)
        self.assertNotEqual(port, srv.port)
        # The running job's path answers ranges with the object's bytes.
        with open(path, "rb") as f:
            head = f.read(1000)
        req = urllib.request.Request(url, headers={"Range": "bytes=10-999"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 206)
            self.assertEqual(r.headers["Content-Range"],
                             "bytes 10-999/%d" % os.path.getsize(path))
            self.assertEqual(r.read(), head[10:1000])
        # A wrong secret, another path, another method: refused with JSON.
        wrong = secret[:-1] + ("0" if secret[-1] != "0" else "1")
        for method, p, status, code in (
                ("GET", "/in/" + wrong, 404, "not_found"),
                ("GET", "/in/" + secret[:16], 404, "not_found"),
                ("GET", "/health", 404, "not_found"),
                ("DELETE", "/in/" + secret, 405, "method_not_allowed")):
            with self.subTest(method=method, path=p):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, p)).encode())
                resp = capsrv.read_response(s)
                s.close()
                self.assertEqual(resp.status, status)
                self.assertEqual(json.loads(resp.body)["code"], code)
        # Another loopback address is not where children connect from.
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(("GET /in/%s HTTP/1.1\r\nHost: x\r\n\r\n" % secret).encode())
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        s.close()
        self.assertEqual(data, b"")
        # The endpoint listens on loopback only.
        with open("/proc/net/tcp") as f:
            out = f.read()
        listen = [l.split() for l in out.splitlines()[1:] if l.split()[3] == "0A"]
        mine = [l[1] for l in listen if int(l[1].split(":")[1], 16) == port]
        self.assertEqual(mine, ["0100007F:%04X" % port])
        # Once the job is over (its child reaped), its path is dead.
        mt.delete_job(srv, job_id)
        mt.poll_job(srv, job_id, timeout=30)
        deadline = time.time() + 10
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        url, headers={"Range": "bytes=0-9"}), timeout=10) as r:
                    r.read()
                self.assertLess(time.time(), deadline, "the path still answers")
                time.sleep(0.1)
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, 404)
                break
            except (http.client.IncompleteRead, ConnectionError):
                # Asked as the job let go of its input: cut off.
                time.sleep(0.1)
        self.assertGreaterEqual(metric(srv, "cap_input_refused_total"), 5)
        assert_clean(self, srv, BED, [BUCKET])

    def test_each_sandbox_branch_reads_the_endpoint(self):
        """With Landlock's network rules (ABI 4+) the child may connect to
        the endpoint's port only; below ABI 4 (Debian's own 6.1 kernel) and
        with the sandbox off there is no such rule, and streaming works the
        same."""
        ref = None
        for args in ([], ["--sandbox-abi", "3"], ["--sandbox", "off"]):
            with self.subTest(args=args):
                srv = self.server(args)
                ready = captools.wait_event(srv, "sandbox.ready")
                if args == []:
                    self.assertIn("landlock_tcp", ready["enforced"], ready)
                else:
                    self.assertNotIn("landlock_tcp", ready["enforced"], ready)
                st, b = render(srv, INPUTS["clip.ts"][1], "out/sb.nut", "v")
                self.assertEqual(st, 200, b)
                got = md5_object("out/sb.nut")
                ref = ref or got
                self.assertEqual(got, ref)
                srv.stop()

    def test_no_input_bytes_on_disk(self):
        """While a streamed job runs (paced to real time), nothing of the
        input is in the server's temp directory or open as a file."""
        srv = self.server()
        path, key, _ = INPUTS["moovend.mp4"]
        st, _h, b = mt.exec_(srv, mt.render_body(key, "out/nodisk.nut", "v-paced", wait=0))
        job_id = b["job_id"]
        tmp = os.path.join(mt.data_dir(srv), ".cap-tmp")
        seen, samples = [], 0
        while True:
            job = self.job(srv, job_id)
            for root, _dirs, files in os.walk(tmp):
                for f in files:
                    seen.append(os.path.join(root, f))
            files = [p for p in mt.fd_targets(srv.proc.pid).values() if p.startswith("/")
                     and not p.startswith(("/dev", "/proc")) and os.path.isfile(p)]
            seen += [p for p in files if "cap-tmp" in p]
            samples += 1
            if job["status"] in mt.TERMINAL:
                break
            time.sleep(0.05)
        self.assertEqual(job["status"], "succeeded", job)
        self.assertGreater(samples, 20)
        self.assertEqual(seen, [])
        self.assertGreaterEqual(job["input"]["bytes_read"], os.path.getsize(path) * 0.9)


class Memory(Base):
    def test_four_concurrent_1gib_inputs(self):
        """Four jobs each read a 1 GiB input whole (its audio is pulled out
        of interleaved raw video) at once: cap-server's memory stays within
        a small bound and nothing reaches its disk."""
        big = os.path.join(TMP, "big.nut")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=125",
               "-f", "lavfi", "-i", "sine=duration=125:sample_rate=48000",
               "-c:v", "rawvideo", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", big)
        size = os.path.getsize(big)
        self.assertGreater(size, 1 << 30)
        BED.aws("s3", "cp", big, "s3://%s/in/big.nut" % BUCKET)
        os.unlink(big)
        srv = self.server(["--pool-cpu", "4"])
        base_kib = vm_status_kib(srv.proc.pid, "VmRSS")
        results = [None] * 4

        def run(i):
            results[i] = mt.exec_(srv, mt.render_body("in/big.nut", "out/big%d.nut" % i, "a-null",
                                                      wait=0))
        ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ids = [r[2]["job_id"] for r in results]
        peak_tmp = 0
        while True:
            jobs = [self.job(srv, i) for i in ids]
            tmp = os.path.join(mt.data_dir(srv), ".cap-tmp")
            used = sum(os.path.getsize(os.path.join(r, f))
                       for r, _d, fs in os.walk(tmp) for f in fs)
            peak_tmp = max(peak_tmp, used)
            if os.environ.get("MEM_VERBOSE"):
                with open("/proc/%d/smaps_rollup" % srv.proc.pid) as f:
                    roll = {l.split(":")[0]: l.split()[1] for l in f if ":" in l}
                print("rss", roll.get("Rss"), "anon", roll.get("Anonymous"),
                      [j["input"]["bytes_read"] >> 20 for j in jobs], file=sys.stderr)
            if all(j["status"] in mt.TERMINAL for j in jobs):
                break
            time.sleep(0.2)
        for j in jobs:
            self.assertEqual(j["status"], "succeeded", j)
            # All of it, and the little NUT's index seeks read again.
            self.assertGreaterEqual(j["input"]["bytes_read"], size, j["input"])
            self.assertLess(j["input"]["bytes_read"], size * 1.02, j["input"])
        hwm = vm_hwm_kib(srv.proc.pid)
        print("4 x %.2f GiB streamed: server RSS %d KiB at start, peak %d KiB; peak temp %d B"
              % (size / (1 << 30), base_kib, hwm, peak_tmp), file=sys.stderr)
        # Each read holds at most 256 KiB of copies for its child (written
        # or queued, their callbacks not yet run) plus one chunk of curl's:
        # about 1 MiB for four, measured +1.4 MiB; 8 MiB is the bound, far
        # from one input's 1 GiB.  Under the sanitizers freed memory waits
        # in ASan's quarantine (256 MiB), so the figure says nothing there.
        if not os.environ.get("CAP_SANITIZED"):
            self.assertLess(hwm - base_kib, 8 * 1024)
        self.assertEqual(peak_tmp, 0)
        BED.aws("s3", "rm", "s3://%s/in/big.nut" % BUCKET)
        assert_clean(self, srv, BED, [BUCKET])


if __name__ == "__main__":
    unittest.main(verbosity=2)
