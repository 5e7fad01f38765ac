#!/usr/bin/env python3
"""Integration tests (jobs): the cpu pool bounds concurrent ffmpeg/ffprobe
children (sampled in /proc), every queued job finishes, and a full queue
answers 429 queue_full."""
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
from captools import TS_RE  # noqa: E402

N_PROBES = 30
N_RENDERS = 20
JOB_FIELDS = ("job_id", "status", "capability", "preset", "input_key", "output_key", "created_at",
              "started_at", "finished_at", "progress", "result", "error")


class Pool(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = mt.start(["--pool-cpu", "2", "--queue-max", "100"])
        mt.put(cls.srv, "uploads/clip.mp4", mt.clip(1.0, "320x240"))

    def check_job_object(self, job):
        for f in JOB_FIELDS:
            self.assertIn(f, job, job)
        self.assertRegex(job["job_id"], mt.JOB_ID_RE)
        for f in ("created_at", "started_at", "finished_at"):
            self.assertRegex(job[f], TS_RE, (f, job))
        self.assertLessEqual(job["created_at"], job["started_at"])
        self.assertLessEqual(job["started_at"], job["finished_at"])
        self.assertIsInstance(job["progress"], dict, job)
        for f in ("percent", "out_time_us", "fps", "speed", "frame", "total_size"):
            self.assertIn(f, job["progress"], job["progress"])
        pct = job["progress"]["percent"]
        self.assertTrue(pct is None or 0 <= pct <= 100, pct)
        self.assertIsNone(job["error"], job)
        self.assertIsInstance(job["result"], dict, job)

    def test_50_jobs_bounded_by_pool(self):
        pid = self.srv.proc.pid
        sampler = mt.ChildSampler(pid, 0.02)
        sampler.start()
        ids = {}
        try:
            for i in range(N_PROBES + N_RENDERS):
                if i % 5 in (1, 3):            # 20 renders among 30 probes
                    body = mt.render_body("uploads/clip.mp4", "renders/p%02d.mp4" % i, "720p",
                                          **{"async": True})
                else:
                    body = mt.probe_body("uploads/clip.mp4", **{"async": True})
                t0 = time.time()
                st, h, j = mt.exec_(self.srv, body)
                self.assertEqual(st, 202, (i, j))
                self.assertLess(time.time() - t0, 2.0, "async request did not answer at once")
                self.assertRegex(j.get("job_id", ""), mt.JOB_ID_RE, j)
                self.assertIn(j.get("status"), ("queued", "running", "uploading"), j)
                self.assertEqual(j.get("status_url"), "/jobs/" + j["job_id"])
                self.assertEqual(h.get("location"), "/jobs/" + j["job_id"])
                ids[j["job_id"]] = body
            self.assertEqual(len(ids), N_PROBES + N_RENDERS, "duplicate job ids")

            hj = mt.health(self.srv)["jobs"]
            cpu = hj["slots"]["cpu"]
            self.assertEqual((cpu["size"], cpu["queue_max"]), (2, 100), cpu)
            self.assertLessEqual(cpu["busy"], 2, hj)
            self.assertLessEqual(hj["running"], 2, hj)
            self.assertGreater(hj["running"] + hj["queued"], 0, hj)

            results = {}
            deadline = time.time() + 100
            for jid in ids:
                results[jid] = mt.poll_job(self.srv, jid, timeout=max(1, deadline - time.time()))
        finally:
            sampler.stop()

        bad = {k: (v["status"], v["error"]) for k, v in results.items() if v["status"] != "succeeded"}
        self.assertEqual(bad, {}, "jobs that did not succeed")
        self.assertGreater(sampler.samples, 50)
        self.assertLessEqual(sampler.max_live, 2,
                             "more ffmpeg/ffprobe children than --pool-cpu 2: %r" % sampler.max_snapshot)
        self.assertEqual(sampler.max_live, 2, "the pool never ran 2 jobs at once")
        self.assertEqual(sampler.not_leader, {}, "children not leading their own process group")
        for jid, body in ids.items():
            job = results[jid]
            self.check_job_object(job)
            if body["capability"] == "ffprobe":
                self.assertIn("streams", job["result"]["probe"])
            else:
                path = os.path.join(mt.data_dir(self.srv), body["output_key"])
                self.assertEqual(job["result"]["bytes"], os.path.getsize(path))
                self.assertEqual(job["result"]["r2_key"], body["output_key"])
        started = [l for l in mt.job_started_lines(self.srv) if l.get("job_id") in ids]
        self.assertEqual(sorted({l["job_id"] for l in started}), sorted(ids), "jobs that never started")
        runs = {}
        for l in started:
            runs.setdefault((l["job_id"], l.get("program"), l.get("phase")), []).append(l.get("pid"))
        self.assertEqual({k: v for k, v in runs.items() if len(v) > 1}, {}, "a job ran twice")
        renders_ff = {l["job_id"] for l in mt.ffmpeg_started_lines(self.srv) if l.get("job_id") in ids}
        self.assertEqual(renders_ff, {j for j, b in ids.items() if b["capability"] == "ffmpeg-render"})
        hj = mt.health(self.srv)["jobs"]
        self.assertEqual((hj["running"], hj["queued"], hj["slots"]["cpu"]["busy"],
                          hj["slots"]["cpu"]["queued"]), (0, 0, 0, 0), hj)


class QueueFull(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-pool-")
        presets = mt.presets_file(d, {"slow": mt.small_preset(realtime=True)}, include_builtin=True)
        cls.srv = mt.start(["--pool-cpu", "1", "--queue-max", "1", "--presets", presets])
        mt.put(cls.srv, "uploads/long.mp4", mt.clip(20.0, "160x120", audio=False))

    def submit(self, out, **kw):
        return mt.exec_(self.srv, mt.render_body("uploads/long.mp4", out, "slow", **kw))

    def test_queue_full(self):
        st, h, a = self.submit("renders/a.mp4", **{"async": True})
        self.assertEqual(st, 202, a)
        mt.wait_ffmpeg_pid(self.srv, a["job_id"], timeout=15)
        st, h, b = self.submit("renders/b.mp4", **{"async": True})
        self.assertEqual(st, 202, b)
        self.assertEqual(b["status"], "queued", b)
        cpu = mt.health(self.srv)["jobs"]["slots"]["cpu"]
        self.assertEqual(cpu, {"size": 1, "busy": 1, "queued": 1, "queue_max": 1})

        for kw in ({"async": True}, {"wait": 5}, {}):
            t0 = time.time()
            st, h, c = self.submit("renders/c.mp4", **kw)
            self.assertEqual(st, 429, (kw, c))
            self.assertLess(time.time() - t0, 3, "429 must come at once")
            self.assertEqual(c.get("code"), "queue_full", c)
            self.assertIsInstance(c.get("error"), str)
            self.assertEqual(c.get("queue_depth"), 1, c)
            self.assertRegex(h.get("retry-after", ""), r"^[1-9][0-9]*$", h)
        time.sleep(0.3)
        self.assertFalse(os.path.exists(os.path.join(mt.data_dir(self.srv), "renders/c.mp4")))
        self.assertEqual({l["job_id"] for l in mt.job_started_lines(self.srv)}, {a["job_id"]},
                         "only the running job may have started")

        # A canceled queued job never starts and frees its queue place.
        st, h, j = mt.delete_job(self.srv, b["job_id"])
        self.assertEqual((st, j.get("status")), (200, "canceled"), j)
        st, h, d = self.submit("renders/d.mp4", **{"async": True})
        self.assertEqual(st, 202, d)
        for job in (d, a):
            st, h, j = mt.delete_job(self.srv, job["job_id"])
            self.assertEqual((st, j.get("status")), (200, "canceled"), j)
        self.assertEqual(mt.job_started_lines(self.srv, b["job_id"]), [], "canceled queued job started")
        for k in ("a", "b", "c", "d"):
            self.assertFalse(os.path.exists(os.path.join(mt.data_dir(self.srv), "renders/%s.mp4" % k)), k)


if __name__ == "__main__":
    unittest.main(verbosity=2)
