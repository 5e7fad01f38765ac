#!/usr/bin/env python3
"""Integration tests (storage, issue 4): outputs of 200 MiB and more into a
real SigV4-verifying S3 server (Swift + s3api, s3bed.py), with a small part
pool: --part-size 5 MiB, --parts-in-flight 2, --upload-budget-mb 16.

- streamed: a custom streamable preset (raw video in NUT to ffmpeg's stdout)
  turns an 8 s 720p clip into ~276 MB;
- from a file: remux-mp4 of a ~222 MB Matroska input (downloaded from the
  bucket first);
- two streamed outputs at once share the one buffer pool.

Each object equals what the same ffmpeg command produces locally (multipart
ETag from per-part MD5s, and the downloaded bytes), its parts are uniform
(every part but the last exactly the part size, from the Swift manifest:
head-object --part-number answers 405 on this Swift) and the result's parts
count matches; cap-server's peak RSS (VmHWM) stays within its base plus the
upload budget however large the output.  After every test: no open upload,
no temp file, no child.
"""
import filecmp
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402
from s3bed import S3Bed  # noqa: E402

MIB = st.MIB
PART = 5 * MIB
IN_FLIGHT = 2
BUDGET_MB = 16
BUDGET = BUDGET_MB * MIB
SLACK = 4 * MIB          # curl/OpenSSL buffers, HTTP, allocator rounding
BASE_CAP = 20 * MIB      # the server's own footprint before any job
BIG = 200 * MIB

RAW_PRESET = st.raw_preset(timeout_s=600, description="raw 4:2:0 video in NUT (large output, cheap)")
RAW_FRAMES = 200  # 8 s at 25 fps, 1280x720: 1382400 bytes a frame


@unittest.skipUnless(st.have_bed(), "S3 bed not installed: scripts/s3-testbed.sh install")
class StorageLarge(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsrv-storage-large-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.bed = S3Bed().start()
        cls.addClassCleanup(cls.bed.stop)
        cls.bed.make_bucket("large")

        # inputs: a small 720p clip (for the raw output) and a big MKV
        cls.small = os.path.join(cls.tmp, "in720.mp4")
        st.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25:duration=8",
                  "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25",
                  cls.small)
        cls.big_in = st.mjpeg_mkv(os.path.join(cls.tmp, "big in.mkv"), seconds_loops=36)
        cls.bed.put_object("large", "L/in/small 720p.mp4", path=cls.small)
        cls.bed.aws("s3", "cp", "--only-show-errors", cls.big_in, "s3://large/L/in/big source.mkv")

        # what ffmpeg produces from them locally
        cls.raw_local = os.path.join(cls.tmp, "raw-local.nut")
        st.ffmpeg("-i", cls.small, *st.RAW_ARGS, "-f", "nut", "pipe:1", stdout=cls.raw_local)
        cls.remux_local = st.remux_locally(cls.big_in, os.path.join(cls.tmp, "remux-local.mp4"))
        cls.raw_etag = st.expected_etag(cls.raw_local, PART)
        cls.remux_etag = st.expected_etag(cls.remux_local, PART)

        presets = mt.presets_file(cls.tmp, {"raw-nut": RAW_PRESET}, include_builtin=True)
        cls.srv = st.start_s3(cls.bed, "large", "L",
                              ["--presets", presets, "--pool-cpu", "2",
                               "--part-size", str(PART), "--parts-in-flight", str(IN_FLIGHT),
                               "--upload-budget-mb", str(BUDGET_MB)])
        cls.addClassCleanup(mt.stop, cls.srv)
        ev = st.storage_event(cls.srv)
        if ev.get("event") != "storage.ready":
            raise AssertionError("start-up bucket check failed: %r" % ev)
        time.sleep(0.5)
        cls.base_hwm = st.vm_hwm_kib(cls.srv.proc.pid) * 1024

    def setUp(self):
        self.assertGreaterEqual(os.path.getsize(self.raw_local), BIG)
        self.assertGreaterEqual(os.path.getsize(self.remux_local), BIG)

    def tearDown(self):
        st.assert_clean(self, self.srv, self.bed, ("large",))

    # --- helpers ----------------------------------------------------------

    def run_job(self, body, results=None):
        status, _, j = mt.exec_(self.srv, body, timeout=300)
        if results is not None:
            results.append((status, j))
        return status, j

    def check_object(self, key, j, local, etag):
        """Result fields, part layout and content of the object at key
        against the local file ffmpeg wrote."""
        size = os.path.getsize(local)
        self.assertEqual(j.get("status"), "succeeded", j)
        self.assertEqual(j.get("r2_key"), key, j)
        self.assertEqual(j.get("bytes"), size, "result bytes vs local ffmpeg output")
        n = st.part_count(size, PART)
        self.assertEqual(j.get("parts"), n, j)
        self.assertEqual(j.get("etag", "").strip('"'), etag.strip('"'), j)
        head = self.bed.head_object("large", "L/" + key)
        self.assertEqual(head["ContentLength"], size, head)
        # the multipart ETag is the MD5 of the parts' MD5s: equal to the
        # local file's, split at the part size, only if every part holds
        # exactly the same bytes
        self.assertEqual(head["ETag"], etag, "object differs from the local ffmpeg output")
        sizes = st.part_sizes(self.bed, "large", "L/" + key)
        self.assertIsNotNone(sizes, "a %d-byte output must be multipart" % size)
        self.assertEqual(len(sizes), n)
        bad = [(i + 1, s) for i, s in enumerate(sizes[:-1]) if s != PART]
        self.assertEqual(bad, [], "parts (number, size) not of the part size %d" % PART)
        self.assertGreater(sizes[-1], 0)
        self.assertLessEqual(sizes[-1], PART)

    def check_memory(self, what):
        hwm = st.vm_hwm_kib(self.srv.proc.pid) * 1024
        grown = hwm - self.base_hwm
        if os.environ.get("CAP_SANITIZED"):
            # AddressSanitizer's shadow memory and quarantine make RSS say
            # nothing about the server's own bounds; bench/ measures them.
            return
        self.assertLessEqual(grown, BUDGET + SLACK,
                             "%s: VmHWM grew by %.1f MiB (base %.1f MiB, now %.1f MiB); budget "
                             "%d MiB + %d MiB slack" % (what, grown / MIB, self.base_hwm / MIB,
                                                         hwm / MIB, BUDGET_MB, SLACK // MIB))
        self.assertLess(hwm, BUDGET + BASE_CAP,
                        "%s: VmHWM %.1f MiB" % (what, hwm / MIB))
        h = mt.health(self.srv)["storage"]
        self.assertEqual(h.get("part_size"), PART, h)
        self.assertLessEqual(h.get("buffers_max", 0) * PART, BUDGET, h)
        self.assertGreaterEqual(h.get("buffers_max", 0), 1, h)
        self.assertEqual(h.get("buffers_in_use"), 0, h)

    def sample_health(self, stop, seen):
        while not stop.is_set():
            try:
                s = mt.health(self.srv)["storage"]
                seen.append((s.get("buffers_in_use"), s.get("buffers_max")))
            except Exception as e:  # noqa: BLE001 - reported by the test
                seen.append(("error", repr(e)))
            stop.wait(0.05)

    # --- tests ------------------------------------------------------------

    def test_1_streamed_raw_video(self):
        key = "big/raw out é+.nut"
        stop, seen = threading.Event(), []
        t = threading.Thread(target=self.sample_health, args=(stop, seen), daemon=True)
        t.start()
        try:
            status, j = self.run_job(mt.render_body("in/small 720p.mp4", key, "raw-nut"))
        finally:
            stop.set()
            t.join(5)
        self.assertEqual(status, 200, j)
        self.check_object(key, j, self.raw_local, self.raw_etag)
        self.check_memory("streamed %d bytes" % j["bytes"])
        self.assertTrue(seen, "no /health sample during the job")
        over = [s for s in seen if s[0] == "error" or s[0] > s[1]]
        self.assertEqual(over, [], "buffers_in_use above buffers_max (or /health failed)")

        dl = os.path.join(self.tmp, "raw-dl.nut")
        try:
            self.bed.get_object("large", "L/" + key, dl)
            self.assertTrue(filecmp.cmp(dl, self.raw_local, shallow=False),
                            "downloaded object differs from the local ffmpeg output")
            probe = st.ffprobe_json(dl, "-count_packets")
            v = mt.streams_of(probe, "video")
            self.assertEqual(len(v), 1)
            self.assertEqual((v[0]["codec_name"], v[0]["width"], v[0]["height"]),
                             ("rawvideo", 1280, 720))
            self.assertEqual(int(v[0]["nb_read_packets"]), RAW_FRAMES)
        finally:
            if os.path.exists(dl):
                os.unlink(dl)

    def test_2_remux_from_file(self):
        key = "big/remux out.mp4"
        status, j = self.run_job(mt.render_body("in/big source.mkv", key, "remux-mp4"))
        self.assertEqual(status, 200, j)
        self.check_object(key, j, self.remux_local, self.remux_etag)
        self.check_memory("remuxed %d bytes from a %d-byte input"
                          % (j["bytes"], os.path.getsize(self.big_in)))
        dl = os.path.join(self.tmp, "remux-dl.mp4")
        try:
            self.bed.get_object("large", "L/" + key, dl)
            self.assertTrue(filecmp.cmp(dl, self.remux_local, shallow=False),
                            "downloaded object differs from the local remux")
        finally:
            if os.path.exists(dl):
                os.unlink(dl)

    def test_3_two_streams_share_the_budget(self):
        keys = ["big/concurrent %d.nut" % i for i in range(2)]
        results = []
        stop, seen = threading.Event(), []
        sampler = threading.Thread(target=self.sample_health, args=(stop, seen), daemon=True)
        sampler.start()
        kids = mt.ChildSampler(self.srv.proc.pid)
        kids.start()
        threads = [threading.Thread(target=self.run_job,
                                    args=(mt.render_body("in/small 720p.mp4", k, "raw-nut"), results))
                   for k in keys]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
        finally:
            stop.set()
            sampler.join(5)
            kids.stop()
        self.assertEqual(len(results), 2, results)
        self.assertGreaterEqual(len(kids.seen_of("ffmpeg")), 2)
        self.assertEqual(kids.max_live >= 2, True, "the two jobs never ran at once")
        for status, j in results:
            self.assertEqual(status, 200, j)
        by_key = {j["r2_key"]: j for _, j in results}
        for k in keys:
            self.check_object(k, by_key[k], self.raw_local, self.raw_etag)
        over = [s for s in seen if s[0] == "error" or s[0] > s[1]]
        self.assertEqual(over, [], "buffers_in_use above buffers_max (or /health failed)")
        self.check_memory("two concurrent streamed outputs")


if __name__ == "__main__":
    unittest.main(verbosity=2)
