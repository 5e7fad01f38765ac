#!/usr/bin/env python3
"""Integration tests (storage, issue 4): cap-server with --storage s3://...
against a real S3 server that verifies SigV4 (OpenStack Swift + s3api, see
s3bed.py), awscli v2 as the independent checker, real ffmpeg/ffprobe.

- round trips of keys with spaces, unicode, '+', '=', '%', '~' (input
  download, single PUT, multipart from a file) land under exactly those keys;
- a 720p render streamed into the bucket plays (ffprobe of the downloaded
  object) and the result carries r2_key, bytes, etag, parts;
- remux-mp4 (stream copy) equals byte for byte the same ffmpeg command
  writing a local file, uploaded as uniform multipart;
- /health shows the storage kind/bucket/prefix, never credentials, and no
  log line carries credential material;
- a missing input fails 404 input_not_found before any child and leaves no
  temp file; a wrong secret and a wrong region fail fast and clearly (no
  retry storm) and are reported at start-up as storage.unavailable;
- the orphan sweep aborts an upload left open on purpose once it is older
  than --orphan-age-s, not before, and never one outside its prefix.

After every test: no open multipart upload, nothing in DATA/.cap-tmp, no
child of the server.
"""
import datetime
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402
from s3bed import S3Bed  # noqa: E402

PART = 5 * st.MIB
WRONG_SECRET = "wrong-Secret-3c9f1a7e55"
BUCKETS = ("media", "denied", "region", "sweep")

# Keys (relative to the server's prefix) whose bytes fall outside SigV4's
# unreserved set, plus one that looks already percent-encoded.
KEYS = [
    "with space/clip one.mp4",
    "unicodé/видео 📼.mp4",
    "plus+sign/a+b.mp4",
    "equals=/a=b=c.mp4",
    "percent%/100%25 done%.mp4",
    "tilde~/~x~y.mp4",
    "mix/a b+c=d%e~f é😀.mp4",
    "enc/a%20b%2Fc+%2B.mp4",
]
MIX = "mix/a b+c=d%e~f é😀.mp4"

# The orphan sweep: a server started at module set-up with a 60 s age and a
# 1 s period; the upload is created just before it.
SWEEP_AGE = 60
ORPHAN_KEY = "sw/orphan é+=%~ part.mp4"
FOREIGN_KEYS = ["sw-other/keep.mp4", "other/keep é.mp4"]

BED = None
SWEEP = {}
TMP = None


def parse_ts(s):
    """ISO 8601 (awscli's Initiated, the server's log ts) -> epoch seconds."""
    s = s.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(s).timestamp()


def setUpModule():
    global BED, TMP
    if not st.have_bed():
        raise unittest.SkipTest("S3 bed not installed: scripts/s3-testbed.sh install")
    TMP = tempfile.mkdtemp(prefix="capsrv-storage-basic-")
    BED = S3Bed().start()
    for b in BUCKETS:
        BED.make_bucket(b)
    # Left open on purpose: one under the sweep server's prefix (with a
    # part, as a crashed upload would have), two outside it ("sw-other/"
    # shares the characters "sw" but not the prefix "sw/").
    up = BED.create_multipart_upload("sweep", ORPHAN_KEY)
    BED.upload_part("sweep", ORPHAN_KEY, up, 1, body=b"o" * 4096)
    foreign = {}
    for k in FOREIGN_KEYS:
        foreign[k] = BED.create_multipart_upload("sweep", k)
        BED.upload_part("sweep", k, foreign[k], 1, body=b"f" * 4096)
    listed = {u["Key"]: u for u in BED.list_multipart_uploads("sweep")}
    SWEEP.update(upload_id=up, foreign=foreign, initiated=parse_ts(listed[ORPHAN_KEY]["Initiated"]),
                 created=time.time())
    SWEEP["srv"] = st.start_s3(BED, "sweep", "sw", ["--orphan-age-s", str(SWEEP_AGE),
                                                     "--orphan-sweep-s", "1", "--log-level", "debug"])


def tearDownModule():
    srv = SWEEP.get("srv")
    if srv is not None:
        mt.stop(srv)
    if BED is not None:
        try:
            for u in BED.list_multipart_uploads("sweep"):
                BED.abort_multipart_upload("sweep", u["Key"], u["UploadId"])
        finally:
            BED.stop()
    if TMP:
        shutil.rmtree(TMP, True)


class StorageBasic(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bed = BED
        # debug: the most verbose log must not carry credentials either
        cls.srv = st.start_s3(BED, "media", "pre", ["--part-size", str(PART), "--log-level", "debug"])
        ev = st.storage_event(cls.srv)
        if ev.get("event") != "storage.ready":
            raise AssertionError("start-up bucket check failed: %r" % ev)
        cls.clip2 = mt.clip(2.0, "320x240")
        cls.clip3 = mt.clip(3.0, "640x360")
        cls.mkv = st.mjpeg_mkv(os.path.join(TMP, "source.mkv"), seconds_loops=1)  # 4 s, ~12 MB

    @classmethod
    def tearDownClass(cls):
        mt.stop(cls.srv)

    def tearDown(self):
        st.assert_clean(self, self.srv, self.bed, ("media", "denied", "region"))
        st.assert_clean(self, SWEEP["srv"])

    # --- helpers ----------------------------------------------------------

    def put(self, key, path):
        """Uploads path under the main server's prefix with awscli."""
        return self.bed.put_object("media", "pre/" + key, path=path)

    def ok(self, body, timeout=120):
        t0 = time.time()
        status, _, j = mt.exec_(self.srv, body, timeout=timeout)
        self.assertEqual(status, 200, "%r -> %d %r" % (body, status, j))
        self.assertEqual(j.get("status"), "succeeded", j)
        j["_wall"] = time.time() - t0
        return j

    def check_render_result(self, j, output_key):
        self.assertEqual(j.get("r2_key"), output_key, j)
        for f in ("bytes", "parts"):
            self.assertIsInstance(j.get(f), int, "%s not an integer: %r" % (f, j))
        self.assertGreater(j["bytes"], 0, j)
        self.assertIsInstance(j.get("etag"), str, j)
        self.assertRegex(j["etag"], r'^"?[0-9a-f]{32}(-\d+)?"?$', j)

    def check_parts(self, bucket, key, result):
        """The object's parts: single PUT (parts 0 or 1) below one part,
        else every part but the last exactly PART, the last 1..PART, and
        the result's parts count equal to theirs."""
        sizes = st.part_sizes(self.bed, bucket, key)
        if result["bytes"] < PART:
            self.assertIsNone(sizes, "output under one part must be a single PUT: %r" % sizes)
            self.assertIn(result["parts"], (0, 1), result)
            return
        self.assertIsNotNone(sizes, "an output of %d bytes (part size %d) must be multipart"
                             % (result["bytes"], PART))
        self.assertEqual(len(sizes), st.part_count(result["bytes"], PART), sizes)
        self.assertEqual(result["parts"], len(sizes), result)
        self.assertEqual(sizes[:-1], [PART] * (len(sizes) - 1), "non-uniform parts: %r" % sizes)
        self.assertGreater(sizes[-1], 0)
        self.assertLessEqual(sizes[-1], PART)
        self.assertEqual(sum(sizes), result["bytes"])

    def assert_no_child_started(self, job_id):
        self.assertEqual(st.job_lines(self.srv, job_id, "job.started"), [],
                         "a child was started for job %s" % job_id)

    # --- tests ------------------------------------------------------------

    def test_00_orphan_fresh_upload_kept_at_start_up(self):
        """The sweep server's start-up sweep (and the next periodic ones)
        sees the fresh orphan and leaves it open."""
        srv = SWEEP["srv"]
        ev = st.storage_event(srv)
        self.assertEqual(ev["event"], "storage.ready", ev)
        captools.wait_for(srv, lambda l: l.get("event") == "storage.sweep", timeout=10)
        # at least one periodic sweep after the start-up one
        deadline = time.time() + 10
        while len(st.log_events(srv, "storage.sweep")) < 3 and time.time() < deadline:
            time.sleep(0.2)
        sweeps = st.log_events(srv, "storage.sweep")
        self.assertGreaterEqual(len(sweeps), 3, "no periodic sweep with --orphan-sweep-s 1")
        self.assertEqual(sweeps[0].get("uploads_open"), 1,
                         "start-up sweep: exactly one upload is open under sw/: %r" % sweeps[0])
        age = time.time() - SWEEP["initiated"]
        self.assertLess(age, SWEEP_AGE - 5, "test set-up too slow for this check")
        self.assertEqual(st.log_events(srv, "storage.orphan_aborted"), [],
                         "an upload younger than --orphan-age-s was aborted")
        keys = sorted(u["Key"] for u in self.bed.list_multipart_uploads("sweep"))
        self.assertEqual(keys, sorted([ORPHAN_KEY] + FOREIGN_KEYS))

    def test_01_health_storage_section(self):
        st_, h, body = captools.http(self.srv, "GET", "/health", token=None)
        self.assertEqual(st_, 200)
        j = json.loads(body.decode("utf-8"))
        s = j.get("storage")
        self.assertIsInstance(s, dict, j)
        self.assertEqual(s.get("kind"), "s3", s)
        self.assertEqual(s.get("bucket"), "media", s)
        self.assertIn(s.get("prefix"), ("pre", "pre/"), s)
        self.assertEqual(s.get("part_size"), PART, s)
        self.assertIsInstance(s.get("buffers_max"), int, s)
        self.assertEqual(s.get("buffers_in_use"), 0, s)
        text = body.decode("utf-8")
        hits = st.credential_hits(text, secrets=["testing"], access_keys=["test:tester"])
        self.assertEqual(hits, [], "credential text in /health")
        for word in ("secret", "access_key", "AWS_ACCESS_KEY_ID", "password"):
            self.assertNotIn(word.lower(), text.lower(), "/health mentions %s: %s" % (word, text))

    def test_02_round_trip_keys(self):
        # inputs uploaded with awscli (one recursive copy of a local tree
        # named like the keys), then listed back
        mp_in = "mp/" + MIX.replace(".mp4", ".mkv")
        tree = os.path.join(TMP, "rt-in")
        for k, src in [(k, self.clip2) for k in KEYS] + [(mp_in, self.mkv)]:
            os.makedirs(os.path.dirname(os.path.join(tree, k)), exist_ok=True)
            shutil.copyfile(src, os.path.join(tree, k))
        self.bed.aws("s3", "cp", "--recursive", "--only-show-errors", tree, "s3://media/pre/rt/in/")
        inputs = ["rt/in/" + k for k in KEYS + [mp_in]]
        listed = sorted(o["Key"] for o in self.bed.list_objects("media", prefix="pre/rt/in/"))
        self.assertEqual(listed, sorted("pre/" + k for k in inputs), "awscli stored other keys")

        expected = {}  # output key -> result
        for k in KEYS:
            with self.subTest(key=k):
                j = self.ok(mt.probe_body("rt/in/" + k))
                probe = j.get("probe")
                self.assertIsInstance(probe, dict, j)
                self.assertEqual([s["codec_name"] for s in mt.streams_of(probe, "video")], ["h264"])
                self.assertAlmostEqual(float(probe["format"]["duration"]), 2.0, delta=0.1)
                for preset, out in (("thumbnail-jpg", "rt/out/" + k + ".jpg"),
                                    ("remux-mp4", "rt/out/" + k)):
                    j = self.ok(mt.render_body("rt/in/" + k, out, preset))
                    self.check_render_result(j, out)
                    expected[out] = j
        # a multipart output (uploaded from the file) and a multi-megabyte
        # input download under the hardest key
        out = "rt/out/mp/" + MIX
        j = self.ok(mt.render_body("rt/in/" + mp_in, out, "remux-mp4"))
        self.check_render_result(j, out)
        self.assertGreater(j["bytes"], PART, "the multipart case must exceed one part")
        expected[out] = j

        objs = {o["Key"]: o for o in self.bed.list_objects("media", prefix="pre/rt/out/")}
        self.assertEqual(sorted(objs), sorted("pre/" + k for k in expected),
                         "outputs not under exactly the requested keys")
        for k, j in expected.items():
            with self.subTest(output=k):
                o = objs["pre/" + k]
                self.assertEqual(o["Size"], j["bytes"], (o, j))
                self.assertEqual(o["ETag"].strip('"'), j["etag"].strip('"'), (o, j))
        # head-object on the hardest keys (single PUT streamed, single PUT
        # from a file, multipart)
        heads = {}
        for k in ("rt/out/" + MIX + ".jpg", "rt/out/" + KEYS[-1], out):
            heads[k] = self.bed.head_object("media", "pre/" + k)
            self.assertEqual(heads[k]["ContentLength"], expected[k]["bytes"], (k, heads[k]))
            self.assertEqual(heads[k]["ETag"].strip('"'), expected[k]["etag"].strip('"'))
        self.check_parts("media", "pre/" + out, expected[out])
        local = st.remux_locally(self.mkv, os.path.join(TMP, "rt-mp.mp4"))
        self.assertEqual(heads[out]["ETag"], st.expected_etag(local, PART),
                         "multipart object under %r differs from the local remux" % out)

    def test_03_render_720p_streamed(self):
        in_key, out_key = "r720/in/source clip.mp4", "r720/out/final 720p.mp4"
        self.put(in_key, self.clip3)
        j = self.ok(mt.render_body(in_key, out_key, "720p"))
        self.check_render_result(j, out_key)
        head = self.bed.head_object("media", "pre/" + out_key)
        self.assertEqual(head["ContentLength"], j["bytes"], (head, j))
        self.assertEqual(head["ETag"].strip('"'), j["etag"].strip('"'), (head, j))
        dl = os.path.join(TMP, "r720.mp4")
        self.bed.get_object("media", "pre/" + out_key, dl)
        self.assertEqual(os.path.getsize(dl), j["bytes"])
        self.assertEqual(head["ETag"], st.expected_etag(dl, PART))
        self.check_parts("media", "pre/" + out_key, j)

        probe = st.ffprobe_json(dl)
        src = st.ffprobe_json(self.clip3)
        vids = mt.streams_of(probe, "video")
        self.assertEqual(len(vids), 1, probe["streams"])
        self.assertEqual(vids[0]["codec_name"], "h264")
        self.assertEqual(vids[0]["height"], 720)
        self.assertEqual([a["codec_name"] for a in mt.streams_of(probe, "audio")], ["aac"])
        self.assertLessEqual(abs(float(probe["format"]["duration"]) -
                                 float(src["format"]["duration"])), 0.1,
                             (probe["format"]["duration"], src["format"]["duration"]))
        # decodes to the end without errors
        r = subprocess.run([mt.FFMPEG, "-v", "error", "-nostdin", "-i", dl, "-f", "null", "-"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual((r.returncode, r.stderr.strip()), (0, ""))
        self.assertEqual(mt.health(self.srv)["storage"].get("buffers_in_use"), 0)

    def test_04_remux_byte_identical_multipart(self):
        in_key, out_key = "remux/in/source.mkv", "remux/out/bit exact+é=%~.mp4"
        self.put(in_key, self.mkv)
        local = st.remux_locally(self.mkv, os.path.join(TMP, "remux-local.mp4"))
        size = os.path.getsize(local)
        self.assertGreater(size, 2 * PART, "test input too small for three parts")
        j = self.ok(mt.render_body(in_key, out_key, "remux-mp4"))
        self.check_render_result(j, out_key)
        self.assertEqual(j["bytes"], size)
        dl = os.path.join(TMP, "remux-dl.mp4")
        got = self.bed.get_object("media", "pre/" + out_key, dl)
        self.assertTrue(filecmp.cmp(local, dl, shallow=False),
                        "object differs from `ffmpeg -i IN -map 0 -c copy -movflags +faststart "
                        "-f mp4 OUT` (%d vs %d bytes)" % (os.path.getsize(dl), size))
        self.assertEqual(got["ETag"], st.expected_etag(local, PART))
        self.assertEqual(got["ETag"].strip('"'), j["etag"].strip('"'))
        self.check_parts("media", "pre/" + out_key, j)
        boxes = mt.top_boxes(dl)
        self.assertLess(boxes.index("moov"), boxes.index("mdat"), "not faststart: %r" % boxes)

    def test_05_input_missing(self):
        # exists in the bucket, but outside the prefix: must not be found
        self.bed.put_object("media", "outside/clip.mp4", path=self.clip2)
        sampler = mt.ChildSampler(self.srv.proc.pid, interval=0.005)
        sampler.start()
        try:
            cases = [mt.probe_body("missing/none.mp4"),
                     mt.probe_body("outside/clip.mp4"),
                     mt.render_body("missing/no such é+%.mp4", "missing/out/a.mp4", "720p"),
                     mt.render_body("missing/none.mkv", "missing/out/b.mp4", "remux-mp4"),
                     mt.render_body("missing/none.mp4", "missing/out/c.jpg", "thumbnail-jpg")]
            ids = []
            for body in cases:
                with self.subTest(body=body):
                    t0 = time.time()
                    status, _, j = mt.exec_(self.srv, body)
                    self.assertEqual((status, (j or {}).get("code")), (404, "input_not_found"), j)
                    self.assertLess(time.time() - t0, 5)
                    ids.append(j.get("job_id"))
                    deadline = time.time() + 2
                    while mt.tmp_entries(self.srv) and time.time() < deadline:
                        time.sleep(0.02)
                    self.assertEqual(mt.tmp_entries(self.srv), [], "temp file left")
        finally:
            sampler.stop()
        self.assertEqual(sampler.seen, {}, "children started for missing inputs")
        for job_id in ids:
            self.assertIsInstance(job_id, str)
            self.assert_no_child_started(job_id)
            status, _, job = mt.get_job(self.srv, job_id)
            self.assertEqual(status, 200, job)
            self.assertEqual(job.get("status"), "failed", job)
            self.assertIn("input_not_found", json.dumps(job.get("error")), job)
        self.assertEqual(self.bed.list_objects("media", prefix="pre/missing/"), [])
        self.assertEqual(self.bed.list_objects("media", prefix="pre/outside/"), [])

    def _fail_fast(self, srv, bucket, in_key, codes, texts):
        """Runs a probe, a streamed render and a file render of in_key on
        srv; each must fail at once (502, a code in codes, every text in
        texts in its message), without a child and without retries."""
        path = "/%s/pre/%s" % (bucket, in_key)
        results = []
        for body in (mt.probe_body(in_key), mt.render_body(in_key, "out/a.mp4", "720p"),
                     mt.render_body(in_key, "out/b.mp4", "remux-mp4")):
            with self.subTest(body=body):
                before = len(st.proxy_requests(self.bed, path))
                t0 = time.time()
                status, _, j = mt.exec_(srv, body, timeout=60)
                wall = time.time() - t0
                time.sleep(0.5)  # let the proxy log catch up
                n = len(st.proxy_requests(self.bed, path)) - before
                results.append(j)
                self.assertEqual(status, 502, j)
                self.assertIn(j.get("code"), codes, j)
                for t in texts:
                    self.assertIn(t, j.get("error", ""), j)
                self.assertLess(wall, 5.0, "took %.1f s: retried?" % wall)
                self.assertLessEqual(n, 2, "%d requests for the input: retry storm" % n)
                self.assertEqual(st.job_lines(srv, j.get("job_id"), "job.started"), [],
                                 "a child was started")
        self.assertEqual(self.bed.list_objects(bucket, prefix="pre/out/"), [])
        return results

    def test_06_wrong_secret(self):
        self.bed.put_object("denied", "pre/in/clip.mp4", path=self.clip2)
        srv = st.start_s3(self.bed, "denied", "pre", ["--log-level", "debug"], secret=WRONG_SECRET)
        try:
            ev = st.storage_event(srv)
            self.assertEqual(ev["event"], "storage.unavailable", ev)
            self.assertEqual(ev.get("level"), "error", ev)
            self.assertEqual(ev.get("reason"), "the credentials were refused", ev)
            self.assertEqual(ev.get("status"), 403, ev)
            for f in ("code", "message"):
                self.assertIn(f, ev)
            # storage_denied per the contract; storage_error accepted only
            # when its message names SignatureDoesNotMatch (checked for both)
            self._fail_fast(srv, "denied", "in/clip.mp4", ("storage_denied", "storage_error"),
                            ["SignatureDoesNotMatch"])
            text = srv.log_text()
            self.assertEqual(st.credential_hits(text, secrets=[WRONG_SECRET, "testing"],
                                                access_keys=["test:tester"]), [],
                             "credential material in the log")
            st_, h, body = captools.http(srv, "GET", "/health", token=None)
            self.assertNotIn(WRONG_SECRET, body.decode("utf-8"))
            st.assert_clean(self, srv, self.bed, ("denied",))
        finally:
            mt.stop(srv)

    def test_07_region_mismatch(self):
        self.bed.put_object("region", "pre/in/clip.mp4", path=self.clip2)
        srv = st.start_s3(self.bed, "region", "pre", ["--log-level", "debug"], region="us-east-1")
        try:
            ev = st.storage_event(srv)
            self.assertEqual(ev["event"], "storage.unavailable", ev)
            self.assertEqual(ev.get("level"), "error", ev)
            for f in ("reason", "status", "code", "message"):
                self.assertIn(f, ev)
            # the region problem is named at start-up (the HEAD answer has no
            # body; S3's error code must still reach the operator)
            time.sleep(0.5)
            startup = [l for l in captools.complete_log_lines(srv.log_text())
                       if str(l.get("event", "")).startswith("storage.")]
            self.assertTrue(any("AuthorizationHeaderMalformed" in json.dumps(l) for l in startup),
                            "start-up log does not name the region problem: %r" % startup)
            self._fail_fast(srv, "region", "in/clip.mp4", ("storage_error", "storage_denied"),
                            ["AuthorizationHeaderMalformed", "us-east-1"])
            st.assert_clean(self, srv, self.bed, ("region",))
        finally:
            mt.stop(srv)

    def test_98_no_credentials_in_logs(self):
        for srv in (self.srv, SWEEP["srv"]):
            text = srv.log_text()
            self.assertTrue(text)
            self.assertEqual(st.credential_hits(text, secrets=["testing"],
                                                access_keys=["test:tester"]), [],
                             "credential material in %s" % srv.log_path)

    def test_99_orphan_sweep(self):
        srv = SWEEP["srv"]
        # a fresh upload under the prefix: must survive the sweeps below
        fresh_key = "sw/fresh.mp4"
        fresh = self.bed.create_multipart_upload("sweep", fresh_key)
        try:
            wait = SWEEP["initiated"] + SWEEP_AGE - time.time()
            if wait > 0:
                # until then the orphan must stay open
                time.sleep(max(0, wait - 2))
                self.assertIn(ORPHAN_KEY, [u["Key"] for u in self.bed.list_multipart_uploads("sweep")],
                              "orphan aborted before it was %d s old" % SWEEP_AGE)
            deadline = SWEEP["initiated"] + SWEEP_AGE + 20
            while time.time() < deadline:
                if not st.log_events(srv, "storage.orphan_aborted"):
                    time.sleep(0.25)
                    continue
                break
            aborted = st.log_events(srv, "storage.orphan_aborted")
            self.assertEqual(len(aborted), 1, "orphan_aborted lines: %r" % aborted)
            a = aborted[0]
            self.assertTrue(str(a.get("key", "")).endswith("orphan é+=%~ part.mp4"), a)
            self.assertIs(a.get("ok"), True, a)
            self.assertGreaterEqual(parse_ts(a["ts"]), SWEEP["initiated"] + SWEEP_AGE - 1,
                                    "aborted when younger than %d s: %r" % (SWEEP_AGE, a))
            # gone from the bucket; a later sweep reports only the fresh one
            left = {u["Key"]: u["UploadId"] for u in self.bed.list_multipart_uploads("sweep")}
            self.assertNotIn(ORPHAN_KEY, left)
            n = len(st.log_events(srv, "storage.sweep"))
            deadline = time.time() + 5
            while len(st.log_events(srv, "storage.sweep")) < n + 2 and time.time() < deadline:
                time.sleep(0.1)
            self.assertEqual(st.log_events(srv, "storage.sweep")[-1].get("uploads_open"), 1)
            # outside the prefix: never touched (older than the age too)
            left = {u["Key"]: u["UploadId"] for u in self.bed.list_multipart_uploads("sweep")}
            for k, up in SWEEP["foreign"].items():
                self.assertEqual(left.get(k), up, "upload outside the prefix touched: %s" % k)
                self.assertEqual(len(self.bed.list_parts("sweep", k, up)), 1)
            self.assertEqual(left.get(fresh_key), fresh, "a fresh upload was aborted")
            self.assertEqual(len(st.log_events(srv, "storage.orphan_aborted")), 1)
        finally:
            self.bed.abort_multipart_upload("sweep", fresh_key, fresh)


if __name__ == "__main__":
    unittest.main(verbosity=2)
