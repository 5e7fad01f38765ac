#!/usr/bin/env python3
"""Integration tests: the Content-Type and Cache-Control of stored objects,
and the exact headers of every S3 request, against the Swift s3api bed
(s3bed.py, a real SigV4-verifying S3 server) with --part-size 5 MiB.

- Every output is stored with its preset's type, the same whether it went
  up in one PUT or in parts: the ext defaults of the built-in presets
  (remux-mp4 -> video/mp4, audio-aac -> audio/mp4, thumbnail-jpg ->
  image/jpeg), a test preset's explicit content_type and cache_control, a
  cache_control with the ext's type, from a stream (ffmpeg's stdout) and
  from a file (non-streamable presets).  Checked with boto3's head_object
  (awscli's when boto3 is missing).
- Through a recording TCP proxy, every request cap-server sends carries
  only Host, x-amz-date, x-amz-content-sha256, Authorization, Content-Length
  (with a body) and our own Content-Type / Cache-Control, each once and
  every one but Content-Length signed: no Accept, no Expect, no form type.
  CreateMultipartUpload goes to "?uploads" with the object's headers;
  UploadPart and AbortMultipartUpload carry no type, Complete its XML type.

After every test: no open multipart upload, no temp file, no child.
"""
import concurrent.futures
import os
import re
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402
from s3bed import S3Bed  # noqa: E402
from tcpproxy import TcpProxy  # noqa: E402

try:
    import boto3
    import botocore.config
except ImportError:  # awscli (always there with the bed) checks instead
    boto3 = None

PART = 5 * st.MIB
BUCKET = "media"
CACHE = "public, max-age=31536000, immutable"
TYPED = "video/x-nut"
FORM = "application/x-www-form-urlencoded"

REMUX_ARGS = ["-map", "0", "-c", "copy", "-movflags", "+faststart"]
PRESETS = {
    # Explicit type and cache policy, streamed (raw frames: big outputs cheaply).
    "raw-typed": dict(st.raw_preset(), content_type=TYPED, cache_control=CACHE),
    # A cache policy with the ext's type, uploaded from a file.
    "remux-cached": {"description": "remux-mp4 with a cache policy (test)", "class": "cpu",
                     "format": "mp4", "ext": "mp4", "streamable": False, "encoders": [],
                     "timeout_s": 600, "args": REMUX_ARGS, "cache_control": "max-age=60"},
    # The jpg default on an output big enough for parts (thumbnail-jpg's
    # 360 lines never are).
    "still-jpg": {"description": "one full-size JPEG frame (test)", "class": "cpu",
                  "format": "image2", "ext": "jpg", "streamable": True, "encoders": ["mjpeg"],
                  "timeout_s": 600,
                  "args": ["-map", "0:v:0", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "1",
                           "-update", "1"]},
    # Held to the clip's pace and stopped by its timeout while parts are
    # under way: its upload is aborted.
    "raw-slow": dict(st.raw_preset(vf="realtime")),
}

BED = None
TMP = None
INPUTS = {}


def setUpModule():
    global BED, TMP
    if not st.have_bed():
        raise unittest.SkipTest("S3 bed not installed (scripts/s3-testbed.sh install): "
                                "the Content-Type tests need a real S3 server")
    TMP = tempfile.mkdtemp(prefix="capsrv-storage-ctype-")
    BED = S3Bed().start()
    BED.make_bucket(BUCKET)
    small = mt.clip(1.0, "320x240")         # every output of it is under one part
    mid = mt.clip(2.0, "640x360")           # ~17 MB of raw frames: 4 parts
    slow = mt.clip(8.0, "640x360")          # raw-slow: 8 s at its pace
    mkv = st.mjpeg_mkv(os.path.join(TMP, "big.mkv"), seconds_loops=1)  # ~12 MB remuxed
    # 300 s of noise: ~7 MB at audio-aac's 192 kb/s (2 parts), from a small input.
    noise = os.path.join(TMP, "noise.m4a")
    st.ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=300:c=pink:r=48000:a=0.5", "-c:a", "aac",
              "-b:a", "48k", "-ac", "1", noise)
    # One 3840x2160 frame of noise: ~6 MB as JPEG at q 1 (2 parts).
    still = os.path.join(TMP, "still.mkv")
    st.ffmpeg("-f", "lavfi", "-i", "nullsrc=s=3840x2160:d=0.04,geq=random(1)*255:128:128",
              "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "1", "-pix_fmt", "yuvj420p", still)
    for name, path in (("small.mp4", small), ("mid.mp4", mid), ("slow.mp4", slow),
                       ("big.mkv", mkv), ("noise.m4a", noise), ("still.mkv", still)):
        for prefix in ("ct", "hdr"):
            BED.put_object(BUCKET, "%s/in/%s" % (prefix, name), path=path)
        INPUTS[name] = path


def tearDownModule():
    if BED is not None:
        BED.stop()
    if TMP:
        shutil.rmtree(TMP, True)


def start_server(prefix, endpoint=None):
    presets = mt.presets_file(TMP, PRESETS, include_builtin=True, name="presets-%s.json" % prefix)
    env = {"AWS_ENDPOINT_URL": endpoint} if endpoint else None
    srv = st.start_s3(BED, BUCKET, prefix, ["--presets", presets, "--pool-cpu", "4",
                                            "--part-size", str(PART)], env=env)
    ev = st.storage_event(srv)
    if ev.get("event") != "storage.ready":
        mt.stop(srv)
        raise AssertionError("start-up bucket check failed: %r" % ev)
    return srv


def head(key):
    """(ContentType, CacheControl or None) of a stored object."""
    if boto3 is not None:
        s3 = boto3.client("s3", endpoint_url=BED.endpoint, aws_access_key_id=BED.access_key,
                          aws_secret_access_key=BED.secret_key, region_name=BED.region,
                          config=botocore.config.Config(s3={"addressing_style": "path"}))
        h = s3.head_object(Bucket=BUCKET, Key=key)
    else:
        h = BED.head_object(BUCKET, key)
    return h.get("ContentType"), h.get("CacheControl")


def render(srv, preset, input_name, output_key, timeout=180):
    body = mt.render_body("in/" + input_name, output_key, preset)
    return mt.exec_(srv, body, timeout=timeout)


# (preset, input, output key, multipart, Content-Type, Cache-Control)
CASES = [
    ("remux-mp4", "small.mp4", "out/remux single.mp4", False, "video/mp4", None),
    ("remux-mp4", "big.mkv", "out/remux multi.mp4", True, "video/mp4", None),
    ("audio-aac", "small.mp4", "out/audio single.m4a", False, "audio/mp4", None),
    ("audio-aac", "noise.m4a", "out/audio multi.m4a", True, "audio/mp4", None),
    ("thumbnail-jpg", "small.mp4", "out/thumb single.jpg", False, "image/jpeg", None),
    ("still-jpg", "still.mkv", "out/still multi.jpg", True, "image/jpeg", None),
    ("raw-typed", "small.mp4", "out/raw single.nut", False, TYPED, CACHE),
    ("raw-typed", "mid.mp4", "out/raw multi.nut", True, TYPED, CACHE),
    ("remux-cached", "small.mp4", "out/cached single.mp4", False, "video/mp4", "max-age=60"),
    ("remux-cached", "big.mkv", "out/cached multi.mp4", True, "video/mp4", "max-age=60"),
]


def run_cases(tc, srv, cases):
    """Renders the cases four at a time; checks each succeeded as one PUT
    or in parts, as its case says."""
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = [(c, ex.submit(render, srv, c[0], c[1], c[2])) for c in cases]
        for c, f in futs:
            status, _, j = f.result()
            tc.assertEqual(status, 200, "%s -> %d %r" % (c[2], status, j))
            tc.assertEqual(j.get("status"), "succeeded", j)
            if c[3]:
                tc.assertGreater(j["parts"], 1, "%s should have gone up in parts: %r" % (c[2], j))
            else:
                tc.assertIn(j["parts"], (0, 1), "%s should be one PUT: %r" % (c[2], j))


class StorageContentType(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.srv = start_server("ct")

    @classmethod
    def tearDownClass(cls):
        mt.stop(cls.srv)

    def tearDown(self):
        st.assert_clean(self, self.srv, BED, (BUCKET,))

    def test_objects_carry_the_presets_type_single_and_multipart(self):
        run_cases(self, self.srv, CASES)
        got = {c[2]: head("ct/" + c[2]) for c in CASES}
        want = {c[2]: (c[4], c[5]) for c in CASES}
        self.assertEqual(got, want)


class StorageRequestHeaders(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.proxy = TcpProxy(BED.port).start()
        self.addCleanup(self.proxy.stop)
        self.srv = start_server("hdr", endpoint=self.proxy.endpoint)
        self.addCleanup(mt.stop, self.srv)

    def tearDown(self):
        st.assert_clean(self, self.srv, BED, (BUCKET,), timeout=15)

    def test_each_request_carries_exactly_its_headers(self):
        cases = [c for c in CASES if c[0] in ("raw-typed", "remux-cached", "remux-mp4")]
        run_cases(self, self.srv, cases)
        # An upload stopped while its parts go out: canceled once its first
        # part has reached the store (a timeout could strike before the
        # upload began on a busy machine).
        body = mt.render_body("in/slow.mp4", "out/slow.nut", "raw-slow", **{"async": True})
        status, _, j = mt.exec_(self.srv, body)
        self.assertEqual(status, 202, j)
        self.proxy.wait_request(lambda r: r.is_part and r.path.endswith("/out/slow.nut"),
                                timeout=60)
        status, _, j = mt.delete_job(self.srv, j["job_id"])
        self.assertEqual(status, 200, j)
        self.proxy.wait_request(lambda r: r.kind == "abort", timeout=20)
        time.sleep(0.5)  # the abort's answer, before the check of open uploads

        outputs = {"/%s/hdr/%s" % (BUCKET, c[2]): (c[4], c[5]) for c in cases}
        outputs["/%s/hdr/out/slow.nut" % BUCKET] = ("application/octet-stream", None)
        reqs = self.proxy.requests_of()
        kinds = {}
        for r in reqs:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        # Every kind of request was seen at least once.
        for k in ("head", "get", "put", "create", "part", "complete", "abort"):
            self.assertIn(k, kinds, "no %s request seen: %s" % (k, self.proxy.summary()))
        self.assertEqual(kinds["create"], 1 + sum(1 for c in cases if c[3]), kinds)

        ours = {"host", "x-amz-date", "x-amz-content-sha256", "authorization"}
        for r in reqs:
            what = "%s %s %r" % (r.method, r.target, r.headers)
            h = r.headers
            self.assertEqual(len(r.header_names), len(set(r.header_names)),
                             "a header given twice: " + what)
            allowed = ours | {"content-length", "content-type", "cache-control"}
            if r.method == "GET" and r.path.startswith("/%s/hdr/in/" % BUCKET):
                # A streamed input: ranges pinned to the object's ETag.
                allowed |= {"range", "if-match"}
            self.assertLessEqual(set(r.header_names), allowed, "unexpected header: " + what)
            self.assertLessEqual(ours, set(r.header_names), what)
            self.assertNotIn("accept", h, what)
            self.assertNotIn("transfer-encoding", h, what)
            self.assertNotEqual(h.get("content-type"), FORM, what)
            # A body's length where there is a body (curl's own, legitimate).
            self.assertEqual("content-length" in h, r.method in ("PUT", "POST"), what)
            # Everything sent but the length is signed.
            m = re.search(r"SignedHeaders=([^,]+)", h["authorization"])
            self.assertIsNotNone(m, what)
            self.assertEqual(m.group(1).split(";"),
                             sorted(set(r.header_names) - {"authorization", "content-length"}),
                             what)

            want_type = want_cache = None
            if r.kind == "create":
                self.assertTrue(r.target.endswith("?uploads"), what)
                want_type, want_cache = outputs[r.path]
            elif r.kind == "put":
                want_type, want_cache = outputs[r.path]
            elif r.kind == "complete":
                want_type = "application/xml"
            self.assertEqual(h.get("content-type"), want_type, what)
            self.assertEqual(h.get("cache-control"), want_cache, what)

        # The single PUTs are the outputs under one part, one each.
        puts = sorted(r.path for r in reqs if r.kind == "put")
        self.assertEqual(puts, sorted("/%s/hdr/%s" % (BUCKET, c[2]) for c in cases if not c[3]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
