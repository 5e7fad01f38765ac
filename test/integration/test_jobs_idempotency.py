#!/usr/bin/env python3
"""Integration tests (jobs): Idempotency-Key header and idempotency_key
field: concurrent duplicates share one job and one ffmpeg run, a different
body conflicts, retries after the end return the finished result."""
import os
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
from capsrv import TOKEN  # noqa: E402
from captools import complete_log_lines  # noqa: E402

BOB = "bob-token-0123456789abcdefghijklmnopq"
PRESETS = {"slow": mt.small_preset(realtime=True), "quick": mt.small_preset()}
MID = "uploads/mid.mp4"
SHORT = "uploads/short.mp4"


def key():
    return "idem-" + uuid.uuid4().hex


def log_events(srv, event):
    return [l for l in complete_log_lines(srv.log_text()) if l.get("event") == event]


class Idempotency(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-idem-")
        presets = mt.presets_file(d, PRESETS, include_builtin=True)
        tf = mt.write_token_file(d, [("alice", TOKEN), ("bob", BOB)])
        cls.srv = mt.start(["--presets", presets, "--pool-cpu", "2", "--token-file", tf], token=None)
        cls.data = mt.data_dir(cls.srv)
        mt.put(cls.srv, MID, mt.clip(3.0, "160x120", audio=False))
        mt.put(cls.srv, SHORT, mt.clip(1.0, "160x120"))

    def test_concurrent_duplicates_one_job(self):
        k = key()
        body = mt.render_body(MID, "renders/conc.mp4", "slow", wait=30)
        started_before = len(mt.job_started_lines(self.srv))
        queued_before = len(log_events(self.srv, "job.queued"))
        barrier = threading.Barrier(2)
        results = [None, None]

        def go(i):
            barrier.wait()
            results[i] = mt.exec_(self.srv, body, headers={"Idempotency-Key": k}, timeout=60)

        sampler = mt.ChildSampler(self.srv.proc.pid, 0.02)
        sampler.start()
        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sampler.stop()
        (s1, h1, j1), (s2, h2, j2) = results
        self.assertEqual((s1, s2), (200, 200), (j1, j2))
        self.assertEqual(j1["job_id"], j2["job_id"], "two jobs for one idempotency key")
        self.assertEqual(j1["bytes"], j2["bytes"])
        self.assertEqual(j1["r2_key"], j2["r2_key"])
        jid = j1["job_id"]
        self.assertEqual(len(mt.ffmpeg_started_lines(self.srv, jid)), 1, "ffmpeg started twice")
        new_started = mt.job_started_lines(self.srv)[started_before:]
        self.assertEqual(sorted({l.get("job_id") for l in new_started}), [jid], "more than one job started")
        queued = log_events(self.srv, "job.queued")[queued_before:]
        self.assertEqual(sorted({l.get("job_id") for l in queued}), [jid], queued)
        self.assertEqual(len(sampler.seen_of("ffmpeg")), 1, "ffmpeg ran %d times: %r"
                         % (len(sampler.seen_of("ffmpeg")), sampler.seen))

    def test_same_key_different_body_conflicts(self):
        k = key()
        base = dict(input_key=MID, output_key="renders/conf.mp4", preset="slow")
        st, h, j = mt.exec_(self.srv, mt.render_body(**base, **{"async": True}),
                            headers={"Idempotency-Key": k})
        self.assertEqual(st, 202, j)
        jid = j["job_id"]
        variants = [
            mt.render_body(MID, "renders/conf2.mp4", "slow"),
            mt.render_body(MID, "renders/conf.mp4", "quick"),
            mt.render_body(SHORT, "renders/conf.mp4", "slow"),
            mt.probe_body(MID),
        ]
        for v in variants:
            v["async"] = True
            st, h, e = mt.exec_(self.srv, v, headers={"Idempotency-Key": k})
            self.assertEqual(st, 409, (v, e))
            self.assertEqual(e.get("code"), "idempotency_conflict", (v, e))
        # The same body still maps to the job.
        st, h, j2 = mt.exec_(self.srv, mt.render_body(**base, **{"async": True}),
                             headers={"Idempotency-Key": k})
        self.assertEqual(st, 202, j2)
        self.assertEqual(j2["job_id"], jid)
        self.assertFalse(os.path.exists(os.path.join(self.data, "renders/conf2.mp4")))
        done = mt.poll_job(self.srv, jid, timeout=30)
        self.assertEqual(done["status"], "succeeded")
        # And still conflicts after the job finished.
        st, h, e = mt.exec_(self.srv, variants[0], headers={"Idempotency-Key": k})
        self.assertEqual((st, e.get("code")), (409, "idempotency_conflict"), e)
        self.assertEqual(len(mt.ffmpeg_started_lines(self.srv, jid)), 1)

    def test_field_key(self):
        k = key()
        body = mt.render_body(SHORT, "renders/field.mp4", "quick", wait=30, idempotency_key=k)
        st, h, j1 = mt.exec_(self.srv, body)
        self.assertEqual(st, 200, j1)
        st, h, j2 = mt.exec_(self.srv, body)
        self.assertEqual(st, 200, j2)
        self.assertEqual(j1["job_id"], j2["job_id"])
        # The header carries the same key: the same job.
        plain = mt.render_body(SHORT, "renders/field.mp4", "quick", wait=30)
        st, h, j3 = mt.exec_(self.srv, plain, headers={"Idempotency-Key": k})
        self.assertEqual(st, 200, j3)
        self.assertEqual(j3["job_id"], j1["job_id"])
        self.assertEqual(len(mt.ffmpeg_started_lines(self.srv, j1["job_id"])), 1)
        st, h, e = mt.exec_(self.srv, mt.render_body(SHORT, "renders/field-other.mp4", "quick",
                                                      idempotency_key=k))
        self.assertEqual((st, e.get("code")), (409, "idempotency_conflict"), e)
        # Probe jobs are idempotent too.
        k2 = key()
        st, h, p1 = mt.exec_(self.srv, mt.probe_body(SHORT, idempotency_key=k2))
        st2, h, p2 = mt.exec_(self.srv, mt.probe_body(SHORT, idempotency_key=k2))
        self.assertEqual((st, st2), (200, 200), (p1, p2))
        self.assertEqual(p1["job_id"], p2["job_id"])
        self.assertEqual(p1["probe"], p2["probe"])

    def test_retry_after_finish(self):
        k = key()
        body = mt.render_body(SHORT, "renders/retry.mp4", "quick", wait=30)
        st, h, j1 = mt.exec_(self.srv, body, headers={"Idempotency-Key": k})
        self.assertEqual(st, 200, j1)
        path = os.path.join(self.data, "renders/retry.mp4")
        mtime = os.stat(path).st_mtime_ns
        time.sleep(0.3)
        started = len(mt.job_started_lines(self.srv))
        st, h, j2 = mt.exec_(self.srv, body, headers={"Idempotency-Key": k})
        self.assertEqual(st, 200, j2)
        for f in ("job_id", "r2_key", "bytes", "duration_ms", "preset", "status"):
            self.assertEqual(j2.get(f), j1.get(f), f)
        self.assertEqual(len(mt.job_started_lines(self.srv)), started, "a retry ran ffmpeg again")
        self.assertEqual(os.stat(path).st_mtime_ns, mtime, "output rewritten by a retry")

    def test_async_then_wait_same_job(self):
        k = key()
        st, h, j1 = mt.exec_(self.srv, mt.render_body(MID, "renders/aw.mp4", "slow", **{"async": True}),
                             headers={"Idempotency-Key": k})
        self.assertEqual(st, 202, j1)
        t0 = time.time()
        st, h, j2 = mt.exec_(self.srv, mt.render_body(MID, "renders/aw.mp4", "slow", wait=30),
                             headers={"Idempotency-Key": k})
        self.assertEqual(st, 200, j2)
        self.assertEqual(j2["job_id"], j1["job_id"])
        self.assertEqual(j2["status"], "succeeded")
        self.assertGreater(time.time() - t0, 0.5, "the duplicate did not wait for the job")
        self.assertEqual(len(mt.ffmpeg_started_lines(self.srv, j1["job_id"])), 1)

    def test_keys_are_per_token(self):
        k = key()
        body = mt.render_body(SHORT, "renders/pertoken.mp4", "quick", wait=30)
        st, h, ja = mt.exec_(self.srv, body, headers={"Idempotency-Key": k})
        self.assertEqual(st, 200, ja)
        st, h, jb = mt.exec_(self.srv, body, headers={"Idempotency-Key": k}, token=BOB)
        self.assertEqual(st, 200, jb)
        self.assertNotEqual(jb["job_id"], ja["job_id"], "another token got alice's job")
        st, h, e = mt.get_job(self.srv, ja["job_id"], token=BOB)
        self.assertEqual(st, 404, e)
        # Bob's different body with alice's key: no conflict either.
        st, h, jc = mt.exec_(self.srv, mt.probe_body(SHORT), headers={"Idempotency-Key": k + "x"},
                             token=BOB)
        self.assertEqual(st, 200, jc)

    def test_key_length(self):
        for bad in ("", "k" * 256):
            st, h, e = mt.exec_(self.srv, mt.probe_body(SHORT, idempotency_key=bad))
            self.assertEqual((st, e.get("code")), (400, "invalid_field"), (len(bad), e))
        st, h, e = mt.exec_(self.srv, mt.probe_body(SHORT), headers={"Idempotency-Key": "k" * 256})
        self.assertEqual(st, 400, e)
        k = "k" * 254 + uuid.uuid4().hex[:1]
        st, h, j = mt.exec_(self.srv, mt.probe_body(SHORT, idempotency_key=k))
        self.assertEqual(st, 200, j)
        st, h, j = mt.exec_(self.srv, mt.probe_body(SHORT), headers={"Idempotency-Key": "h" * 254 + "x"})
        self.assertEqual(st, 200, j)


if __name__ == "__main__":
    unittest.main(verbosity=2)
