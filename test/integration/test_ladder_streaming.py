#!/usr/bin/env python3
"""Integration tests (issue 13): ladder jobs, streaming into the bucket
and failures, against the S3 bed (Swift + s3api) with real ffmpeg.

- the first segment is in the bucket long before ffmpeg exits;
- the bed stopped mid-job: ffmpeg is paused (process state T), the local
  backlog stays within its bound, and on the bed's restart the job
  completes with a valid package;
- cancel, and ffmpeg killed, mid-ladder: no object under the prefix, no
  open upload, no temp file, no child.
"""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import laddertools as lt  # noqa: E402
import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402
from laddertools import LadderCase, bucket_objects  # noqa: E402


def setUpModule():
    lt.setup_module()


def tearDownModule():
    lt.teardown_module()


class LadderStreaming(LadderCase):
    # --- streaming --------------------------------------------------------

    def test_first_segment_long_before_ffmpeg_exits(self):
        """The first segment is in the bucket while the job still renders."""
        t0 = time.time()
        status, _, j = mt.exec_(self.srv, {"input_key": "in/long.mp4", "output_prefix": "vod/early/",
                                           "preset": "hls-ladder", "async": True})
        self.assertEqual(status, 202, j)
        first = None
        while time.time() - t0 < 120:
            keys = bucket_objects("vod/early/")
            if any(k.endswith(".m4s") for k in keys):
                first = time.time() - t0
                _, _, job = mt.get_job(self.srv, j["job_id"])
                break
            time.sleep(0.1)
        self.assertIsNotNone(first, "no segment reached the bucket")
        self.assertEqual(job["status"], "running", "the segment must arrive while ffmpeg runs")
        self.assertGreater(job["package"]["segments_uploaded"], 0, job)
        # "Long before": measured in media, not in seconds of a machine
        # that other tests share.  When the first segment was in the
        # bucket, ffmpeg had encoded less than half of the 60 s input.
        pct = job["progress"]["percent"]
        self.assertIsNotNone(pct, job)
        self.assertLess(pct, 50, "the first segment came only after %.1f%% of the encode" % pct)
        done = mt.poll_job(self.srv, j["job_id"], timeout=180)
        total = time.time() - t0
        self.assertEqual(done["status"], "succeeded", done)
        print("time to first segment %.2f s of %.2f s (%.1f%% encoded)" % (first, total, pct),
              file=sys.stderr)
        self.check_package("vod/early/", done["result"], "m4s", source=60.0)

    def test_bed_stopped_pauses_ffmpeg_within_backlog(self):
        """With the bed stopped, ffmpeg is stopped (state T) once the backlog
        reaches its bound, the backlog never passes it, and the job completes
        after the bed's restart."""
        # The input is downloaded: this test is about the output side.  Read
        # by range, the input stops with the bed too, and ffmpeg would wait
        # for bytes (state S) before its backlog could fill.
        srv = st.start_s3(lt.BED, lt.BUCKET, lt.PREFIX, ["--ladder-backlog-segments", "4",
                                                "--ladder-uploads", "2", "--storage-retries", "14",
                                                "--storage-backoff-ms", "20",
                                                "--input-mode", "download"])
        try:
            self.assertEqual(st.storage_event(srv).get("event"), "storage.ready")
            # Three rungs of 720p: ffmpeg must still be encoding once the
            # bed's stop (a few seconds) is over, even on a fast machine.
            lt.BED.put_object(lt.BUCKET, "%s/in/long720.mp4" % lt.PREFIX,
                              path=mt.clip(30.0, "1280x720", rate=25))
            status, _, j = mt.exec_(srv, {"input_key": "in/long720.mp4", "output_prefix": "vod/pause/",
                                          "preset": "hls-ladder", "async": True})
            self.assertEqual(status, 202, j)
            pid = mt.wait_ffmpeg_pid(srv, j["job_id"])
            self.wait_some_segments(j["job_id"], n=1, srv=srv)
            lt.BED.stop(keep_dir=True)
            try:
                # Pauses may come and go while the bed is up (the bound is
                # small); with the bed down no upload ends, so once paused
                # ffmpeg must stay stopped.
                state, job = None, None
                deadline = time.time() + 60
                while time.time() < deadline:
                    _, _, job = mt.get_job(srv, j["job_id"])
                    st_ = mt._stat(pid)
                    state = st_[1] if st_ else None
                    if job["package"]["paused"] and state == "T":
                        break
                    self.assertEqual(job["status"], "running",
                                     "ffmpeg must still be encoding: %r" % job)
                    time.sleep(0.05)
                self.assertEqual(state, "T", "ffmpeg is not stopped while uploads cannot go on")
                peak = 0
                for _ in range(10):
                    _, _, job = mt.get_job(srv, j["job_id"])
                    peak = max(peak, job["package"]["backlog_files"])
                    self.assertTrue(job["package"]["paused"], job)
                    self.assertEqual(mt._stat(pid)[1], "T", "ffmpeg went on with the bed down")
                    time.sleep(0.1)
                # Bounded: the limit, plus what ffmpeg finished for each
                # rendition (720p, 480p, 360p, audio) between the bound
                # being passed and the stop.
                self.assertLessEqual(peak, 4 + 4, "backlog %d over its bound" % peak)
                for ev in st.log_events(srv, "ladder.paused"):
                    self.assertLessEqual(ev["backlog_files"], 4 + 4, ev)
            finally:
                lt.BED.start()
            done = mt.poll_job(srv, j["job_id"], timeout=240)
            self.assertEqual(done["status"], "succeeded", done)
            self.assertTrue(st.log_events(srv, "ladder.resumed"), "ffmpeg was never let go on")
            self.check_package("vod/pause/", done["result"], "m4s", source=30.0)
        finally:
            mt.stop(srv)

    # --- failures leave nothing -------------------------------------------

    def wait_some_segments(self, job_id, n=2, timeout=60, srv=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            _, _, job = mt.get_job(srv or self.srv, job_id)
            if job.get("package", {}).get("segments_uploaded", 0) >= n:
                return job
            self.assertEqual(job["status"], "running", job)
            time.sleep(0.05)
        self.fail("no segments were stored")

    def wait_removed(self, job_id, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            _, _, job = mt.get_job(self.srv, job_id)
            if job.get("package", {}).get("state") == "removed":
                return job
            if "package" not in job and job["status"] in mt.TERMINAL:
                return job  # Ended before its ffmpeg started: nothing was stored.
            time.sleep(0.05)
        self.fail("cleanup did not finish: %r" % job)

    def test_cancel_mid_ladder_leaves_nothing(self):
        status, _, j = mt.exec_(self.srv, {"input_key": "in/long.mp4", "output_prefix": "vod/cancel/",
                                           "preset": "hls-ladder", "async": True})
        self.assertEqual(status, 202, j)
        self.wait_some_segments(j["job_id"])
        self.assertTrue(bucket_objects("vod/cancel/"), "segments were stored")
        status, _, c = mt.delete_job(self.srv, j["job_id"])
        self.assertEqual(c["status"], "canceled", c)
        job = self.wait_removed(j["job_id"])
        self.assertEqual(bucket_objects("vod/cancel/"), {}, job)

    def test_prefix_busy_while_a_ladder_writes_or_cleans_up(self):
        """Two packages under one prefix would overwrite, and a failed one
        delete, each other's objects: 409 prefix_busy until the first has
        let go of it; a retry with the same idempotency key still joins."""
        body = {"input_key": "in/long.mp4", "output_prefix": "vod/busy/", "preset": "hls-ladder",
                "async": True, "idempotency_key": "busy-1"}
        status, _, j = mt.exec_(self.srv, body)
        self.assertEqual(status, 202, j)
        for prefix in ("vod/busy/", "vod/busy/inner/", "vod/"):
            other = {k: v for k, v in body.items() if k != "idempotency_key"}
            s, _, e = mt.exec_(self.srv, dict(other, output_prefix=prefix))
            self.assertEqual((s, e.get("code")), (409, "prefix_busy"), e)
            self.assertIn(j["job_id"], e["error"])
        s, _, again = mt.exec_(self.srv, body)
        self.assertEqual((s, again.get("job_id")), (202, j["job_id"]), again)
        self.wait_some_segments(j["job_id"], n=1)
        mt.delete_job(self.srv, j["job_id"])
        self.wait_removed(j["job_id"])
        s, _, k = mt.exec_(self.srv, dict(body, idempotency_key="busy-2"))
        self.assertEqual(s, 202, k)
        self.assertEqual(mt.delete_job(self.srv, k["job_id"])[0], 200)
        self.wait_removed(k["job_id"])
        self.assertEqual(bucket_objects("vod/busy/"), {})

    def test_ffmpeg_killed_mid_ladder_leaves_nothing(self):
        status, _, j = mt.exec_(self.srv, {"input_key": "in/long.mp4", "output_prefix": "vod/kill/",
                                           "preset": "hls-ladder", "async": True})
        self.assertEqual(status, 202, j)
        pid = mt.wait_ffmpeg_pid(self.srv, j["job_id"])
        self.wait_some_segments(j["job_id"])
        os.kill(pid, signal.SIGKILL)
        done = mt.poll_job(self.srv, j["job_id"])
        self.assertEqual(done["status"], "failed", done)
        self.assertEqual(done["error"]["code"], "ffmpeg_failed", done)
        self.wait_removed(j["job_id"])
        self.assertEqual(bucket_objects("vod/kill/"), {})


if __name__ == "__main__":
    unittest.main(verbosity=2)
