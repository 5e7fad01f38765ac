"""GET /metrics (issue 5): the Prometheus text exposition is parsed with a
strict parser of the 0.0.4 format, and its values are checked to move as
real requests, real ffmpeg/ffprobe jobs and real S3 transfers (the Swift +
s3api bed) happen.  Access: a capability token by default; metrics_auth
none drops it except for requests that came through Tailscale Funnel;
metrics_listen moves /metrics (and /health) to a second listener and the
public port answers 404 for it.
"""
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
from capsrv import TOKEN, Server  # noqa: E402
from s3bed import S3Bed  # noqa: E402
from storagetools import have_bed, raw_preset  # noqa: E402

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*\})? (\S+)$" % (NAME, LABEL, LABEL))
LABEL_ONE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse(text, test):
    """Parses an exposition strictly; returns {(name, frozenset(labels)): value}
    and {family: type}.  Fails the test on any deviation from the format."""
    test.assertTrue(text.endswith("\n"), "exposition must end with a newline")
    types, helps, samples = {}, set(), {}
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            test.assertNotIn(name, helps, "HELP twice: " + where)
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            test.assertEqual(len(parts), 4, where)
            test.assertIn(parts[3], ("counter", "gauge", "histogram", "summary", "untyped"), where)
            test.assertNotIn(parts[2], types, "TYPE twice: " + where)
            types[parts[2]] = parts[3]
            current = parts[2]
            continue
        test.assertFalse(line.startswith("#"), "unknown comment " + where)
        m = SAMPLE.match(line)
        test.assertIsNotNone(m, "bad sample " + where)
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = current
        test.assertIsNotNone(family, "sample before any TYPE: " + where)
        if types[family] == "histogram":
            test.assertIn(name, (family + "_bucket", family + "_sum", family + "_count"), where)
        elif types[family] == "counter":
            test.assertIn(name, (family, family + "_total"), where)
        else:
            test.assertEqual(name, family, where)
        v = float(value)  # accepts +Inf, -Inf, NaN
        lab = frozenset(LABEL_ONE.findall(labels))
        test.assertNotIn((name, lab), samples, "duplicate series " + where)
        samples[(name, lab)] = v
    # Histograms: cumulative buckets, +Inf equals _count.
    for fam, t in types.items():
        if t != "histogram":
            continue
        series = {}
        for (name, lab), v in samples.items():
            if name == fam + "_bucket":
                d = dict(lab)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), []).append((float(le), v))
        for key, buckets in series.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            test.assertEqual(counts, sorted(counts), "%s buckets not cumulative" % fam)
            test.assertTrue(math.isinf(buckets[-1][0]), "%s has no +Inf bucket" % fam)
            test.assertEqual(buckets[-1][1], samples[(fam + "_count", key)], fam)
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class At:
    """Another port of the same server (the metrics listener)."""
    def __init__(self, port):
        self.port = port

    connect = Server.connect


class Scraper:
    def __init__(self, test, srv, token=TOKEN, port=None):
        self.test, self.srv, self.token, self.port = test, srv, token, port

    def get(self, headers=None):
        srv = self.srv if self.port is None else At(self.port)
        st, h, b = captools.http(srv, "GET", "/metrics", token=self.token, headers=headers)
        return st, h, b

    def __call__(self):
        st, h, b = self.get()
        self.test.assertEqual(st, 200, b[:300])
        self.test.assertEqual(h.get("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        return parse(b.decode("utf-8"), self.test)[0]


class Access(unittest.TestCase):
    def test_token_required_by_default(self):
        with Server() as srv:
            st, h, b = captools.http(srv, "GET", "/metrics", token=None)
            self.assertEqual(st, 401, b)
            self.assertEqual(captools.err_body(b)["code"], "unauthorized")
            st, h, b = captools.http(srv, "GET", "/metrics", token="wrong-token-0123456789abcdef")
            self.assertEqual(st, 401, b)
            samples, types = parse(captools.http(srv, "GET", "/metrics")[2].decode(), self)
            self.assertEqual(types["cap_http_requests_total"], "counter")
            self.assertEqual(types["cap_http_request_duration_seconds"], "histogram")
            self.assertEqual(value(samples, "cap_http_requests_total", route="metrics", status="401"), 2)
            self.assertEqual(value(samples, "cap_auth_failures_total"), 2)
            self.assertEqual(value(samples, "cap_build_info", version=mt.health(srv)["version"]), 1)
            # Tokens never reach the exposition.
            self.assertNotIn(TOKEN, captools.http(srv, "GET", "/metrics")[2].decode())

    def test_auth_none_still_guards_funnel(self):
        with Server(args=["--metrics-auth", "none"]) as srv:
            st, h, b = captools.http(srv, "GET", "/metrics", token=None)
            self.assertEqual(st, 200, b)
            funnel = {"Tailscale-Funnel-Request": "?1"}
            st, h, b = captools.http(srv, "GET", "/metrics", token=None, headers=funnel)
            self.assertEqual(st, 401, b)
            st, h, b = captools.http(srv, "GET", "/metrics", headers=funnel)
            self.assertEqual(st, 200, b)

    def test_metrics_listener(self):
        with Server(args=["--metrics-listen", "127.0.0.1:0", "--metrics-auth", "none"]) as srv:
            start = captools.wait_for(srv, lambda l: l.get("event") == "server.start")
            mport = start.get("metrics_port")
            self.assertIsInstance(mport, int, start)
            self.assertNotEqual(mport, srv.port)
            # The public port no longer serves it, with or without a token.
            for token in (None, TOKEN):
                st, h, b = captools.http(srv, "GET", "/metrics", token=token)
                self.assertEqual((st, captools.err_body(b)["code"]), (404, "not_found"), b)
            scrape = Scraper(self, srv, token=None, port=mport)
            samples = scrape()
            self.assertEqual(value(samples, "cap_http_requests_total", route="other", status="404"), 2)
            p = At(mport)
            st, h, b = captools.http(p, "GET", "/health", token=None)
            self.assertEqual(st, 200, b)
            # Nothing else is served there, not even with a token.
            st, h, b = captools.http(p, "POST", "/exec", body=captools.SEED_BODY)
            self.assertEqual(st, 404, b)
            st, h, b = captools.http(p, "GET", "/jobs/abc")
            self.assertEqual(st, 404, b)

    def test_bad_settings_exit_2(self):
        for args in (["--metrics-auth", "maybe"], ["--metrics-listen", "localhost:9"],
                     ["--metrics-listen", "127.0.0.1"], ["--metrics-listen", "127.0.0.1:70000"],
                     ["--metrics-listen", "::1:9"]):
            with self.subTest(args=args):
                r = captools.run_bin(args, token=TOKEN)
                self.assertEqual(r.returncode, 2, r.stderr)
                key = args[0][2:].replace("-", "_")
                self.assertIn(key, r.stderr.decode())


class Values(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="metrics-test-")
        slow = mt.small_preset(realtime=True)
        cls.presets = mt.presets_file(cls.tmp, {"tiny": mt.small_preset(), "slow": slow},
                                      include_builtin=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_http_jobs_and_children(self):
        srv = mt.start(["--presets", self.presets, "--pool-cpu", "1", "--rate-limit", "8"])
        self.addCleanup(mt.stop, srv)
        scrape = Scraper(self, srv)
        mt.put(srv, "uploads/clip.mp4", src=mt.clip(duration=2.0))
        mt.put(srv, "uploads/broken.mp4", content=b"\x00\x00\x00\x18ftypisom" + b"\xde\xad" * 5000)
        before = scrape()
        for _ in range(3):
            mt.health(srv)
        self.assertEqual(captools.http(srv, "POST", "/exec", body=captools.SEED_BODY,
                                       token="bad-token-0123456789abcdef0123")[0], 401)
        st, h, j = mt.exec_(srv, mt.probe_body("uploads/clip.mp4"))
        self.assertEqual(st, 200, j)
        st, h, j = mt.exec_(srv, mt.render_body("uploads/clip.mp4", "out/a.mp4", "tiny"))
        self.assertEqual(st, 200, j)
        st, h, j = mt.exec_(srv, mt.render_body("uploads/broken.mp4", "out/b.mp4", "tiny"))
        self.assertEqual((st, j.get("code")), (502, "ffmpeg_failed"), j)
        after = scrape()

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        self.assertEqual(delta("cap_http_requests_total", route="health", status="200"), 3)
        self.assertEqual(delta("cap_http_requests_total", route="exec", status="401"), 1)
        self.assertEqual(delta("cap_http_requests_total", route="exec", status="200"), 2)
        self.assertEqual(delta("cap_http_requests_total", route="metrics", status="200"), 1)
        self.assertEqual(delta("cap_http_request_duration_seconds_count", route="health"), 3)
        self.assertGreater(delta("cap_http_request_duration_seconds_sum", route="exec"), 0)
        self.assertEqual(delta("cap_auth_failures_total"), 1)
        self.assertEqual(delta("cap_jobs_finished_total", preset="ffprobe", state="succeeded"), 1)
        self.assertEqual(delta("cap_jobs_finished_total", preset="tiny", state="succeeded"), 1)
        self.assertEqual(delta("cap_jobs_finished_total", preset="tiny", state="failed"), 1)
        self.assertEqual(delta("cap_job_duration_seconds_count", preset="tiny"), 2)
        self.assertGreater(delta("cap_job_duration_seconds_sum", preset="tiny"), 0)
        # The probe capability, the duration probe of the good render: ffprobe
        # exits 0 twice; the broken input fails in ffprobe or ffmpeg, not 0.
        self.assertGreaterEqual(delta("cap_child_exits_total", program="ffprobe", status="0"), 2)
        self.assertEqual(delta("cap_child_exits_total", program="ffmpeg", status="0"), 1)
        failed = sum(v for (n, lab), v in after.items() if n == "cap_child_exits_total"
                     and dict(lab)["status"] != "0") - \
            sum(v for (n, lab), v in before.items() if n == "cap_child_exits_total"
                and dict(lab)["status"] != "0")
        self.assertGreaterEqual(failed, 1)
        self.assertEqual(value(after, "cap_pool_slots", **{"class": "cpu"}), 1)
        self.assertEqual(value(after, "cap_pool_running", **{"class": "cpu"}), 0)

        # While a job runs: gauges show it; idle connections are counted.
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
        self.addCleanup(lambda: [s.close() for s in socks])
        st, h, j = mt.exec_(srv, mt.render_body("uploads/clip.mp4", "out/slow.mp4", "slow",
                                                **{"async": True}))
        self.assertEqual(st, 202, j)
        mt.wait_status(srv, j["job_id"], ("running",))
        st, h, j2 = mt.exec_(srv, mt.render_body("uploads/clip.mp4", "out/slow2.mp4", "slow",
                                                 **{"async": True}))
        self.assertEqual(st, 202, j2)
        now = scrape()
        self.assertEqual(value(now, "cap_jobs", state="running"), 1)
        self.assertEqual(value(now, "cap_jobs", state="queued"), 1)
        self.assertEqual(value(now, "cap_pool_running", **{"class": "cpu"}), 1)
        self.assertEqual(value(now, "cap_pool_queued", **{"class": "cpu"}), 1)
        self.assertGreaterEqual(value(now, "cap_http_connections_open"), 4)
        self.assertEqual(value(now, "cap_draining"), 0)
        # Exhaust the per-client bucket (8 per minute, 7 used): 429s follow.
        codes = [captools.exec_post(srv)[0] for _ in range(4)]
        self.assertIn(429, codes)
        self.assertEqual(value(scrape(), "cap_rate_limited_total", scope="client")
                         - value(before, "cap_rate_limited_total", scope="client"), codes.count(429))
        srv.proc.send_signal(signal.SIGTERM)
        captools.wait_for(srv, lambda l: l.get("event") == "server.draining")
        self.assertEqual(value(scrape(), "cap_draining"), 1)


@unittest.skipUnless(have_bed(), "S3 bed not installed: scripts/s3-testbed.sh install")
class Storage(unittest.TestCase):
    def test_storage_counters(self):
        tmp = tempfile.mkdtemp(prefix="metrics-s3-")
        self.addCleanup(shutil.rmtree, tmp, True)
        presets = mt.presets_file(tmp, {"raw": raw_preset(), "raw-paced": raw_preset("realtime=speed=1")})
        with S3Bed() as bed:
            bed.make_bucket("metrics")
            clip = mt.clip(duration=2.0, size="640x360", audio=False)
            bed.put_object("metrics", "p/in.mp4", path=clip)
            srv = mt.start(["--storage", "s3://metrics/p", "--presets", presets,
                            "--part-size", "5242880"], env=bed.env())
            self.addCleanup(mt.stop, srv)
            captools.wait_for(srv, lambda l: l.get("event") == "storage.ready", timeout=15)
            scrape = Scraper(self, srv)
            before = scrape()
            st, h, j = mt.exec_(srv, mt.render_body("in.mp4", "out/a.nut", "raw"))
            self.assertEqual(st, 200, j)
            size = bed.head_object("metrics", "p/out/a.nut")["ContentLength"]
            parts = -(-size // 5242880)
            # A job canceled mid-upload aborts its multipart upload.
            st, h, j = mt.exec_(srv, mt.render_body("in.mp4", "out/b.nut", "raw-paced",
                                                    **{"async": True}))
            self.assertEqual(st, 202, j)
            deadline = time.time() + 20
            while value(scrape(), "cap_storage_requests_total", operation="upload_part",
                        outcome="ok") - value(before, "cap_storage_requests_total",
                                              operation="upload_part", outcome="ok") <= parts:
                self.assertLess(time.time(), deadline, "no part of the paced job uploaded")
                time.sleep(0.1)
            st, h, _ = mt.delete_job(srv, j["job_id"])
            self.assertEqual(st, 200)
            deadline = time.time() + 20
            while value(scrape(), "cap_storage_multipart_aborts_total", reason="canceled") < 1:
                self.assertLess(time.time(), deadline, "abort not counted")
                time.sleep(0.1)
            after = scrape()

            def delta(name, **labels):
                return value(after, name, **labels) - value(before, name, **labels)

            self.assertGreaterEqual(delta("cap_storage_requests_total", operation="get", outcome="ok"), 1)
            self.assertEqual(delta("cap_storage_requests_total", operation="create_multipart",
                                   outcome="ok"), 2)
            self.assertEqual(delta("cap_storage_requests_total", operation="complete_multipart",
                                   outcome="ok"), 1)
            self.assertEqual(delta("cap_storage_requests_total", operation="abort_multipart",
                                   outcome="ok"), 1)
            self.assertEqual(delta("cap_storage_multipart_aborts_total", reason="canceled"), 1)
            self.assertGreaterEqual(delta("cap_storage_bytes_uploaded_total"), size)
            self.assertGreaterEqual(delta("cap_storage_bytes_downloaded_total"),
                                    os.path.getsize(clip))
            self.assertEqual(delta("cap_storage_retries_total", operation="upload_part"), 0)
            self.assertEqual(bed.list_multipart_uploads("metrics", prefix="p/"), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
