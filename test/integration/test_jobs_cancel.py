#!/usr/bin/env python3
"""Integration tests (jobs): a canceled or timed-out job is killed at once
and frees its pool slot as soon as its child is reaped (issue 11).

A canceled job's output is thrown away, so nothing is gained by letting
ffmpeg finish the file after SIGTERM; yet ffmpeg treats SIGTERM as "finish
properly" and may keep working for seconds (libx265 at 4K flushing its
lookahead).  These tests need a child that does exactly that without
loading the machine: the "linger" preset runs ffmpeg's realtime filter on a
clip with one frame every FRAME_GAP_S seconds, so ffmpeg spends its time
asleep inside the filter; on SIGTERM it completes that pause and flushes
the frames its decoder still holds, each after another pause, i.e. it lives
on for tens of seconds at almost no CPU.  test_00 checks that this is still
what ffmpeg does (run directly, no server), so that the other tests cannot
pass merely because ffmpeg stopped lingering.

Every server runs one cpu slot and cancel_grace_ms 30000, so that a job
still holding its slot for a graceful wind-down is unmistakable: each path
must have the ffmpeg process group gone within CHILD_GONE_S and the next
queued job started within SLOT_FREE_S, far below the 30 s grace:
- DELETE /jobs/{id} of a running render;
- the job timeout (a preset's timeout_s);
- cancel_on_disconnect (the waiting client closes its connection);
- the server's drain ending (SIGTERM, shutdown_grace_ms runs out): the
  server exits within shutdown_grace_ms plus a little.
After each: no output, nothing left in the temp directory, no zombie."""
import atexit
import calendar
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
from captools import build_request, complete_log_lines, wait_for  # noqa: E402

FRAME_GAP_S = 20          # one frame every 20 s: ffmpeg sleeps between them
CLIP_FRAMES = 30          # 600 s of clip, far longer than any test
GRACE_MS = 30000          # cancel_grace_ms: a graceful path would wait this long
CHILD_GONE_S = 1.5        # the job's process group is gone this soon
SLOT_FREE_S = 2.0         # and the next queued job has started this soon
LINGER_CHECK_S = 3.0      # test_00: ffmpeg alone is still alive this long after SIGTERM

LINGER_VF = "realtime=limit=3600,scale=-2:120"


def linger_preset(timeout_s=600):
    p = mt.small_preset(timeout_s=timeout_s)
    p["args"] = ["-map", "0:v:0", "-vf", LINGER_VF, "-c:v", "libx264", "-preset", "ultrafast",
                 "-pix_fmt", "yuv420p"]
    return p


PRESETS = {"linger": linger_preset(), "linger-t2": linger_preset(timeout_s=2)}
SPARSE = "uploads/sparse.mp4"
PROBE_IN = "uploads/probe.mp4"

_SPARSE_PATH = None


def sparse_clip():
    """An H.264 MP4 with one 160x120 frame every FRAME_GAP_S seconds, made
    once with real ffmpeg."""
    global _SPARSE_PATH
    if _SPARSE_PATH is None:
        d = tempfile.mkdtemp(prefix="capsparse-")
        atexit.register(shutil.rmtree, d, True)
        path = os.path.join(d, "sparse.mp4")
        src = "testsrc2=size=160x120:rate=1/%d:duration=%d" % (FRAME_GAP_S, FRAME_GAP_S * CLIP_FRAMES)
        subprocess.run([mt.FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
                        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "1",
                        "-movflags", "+faststart", path],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        _SPARSE_PATH = path
    return _SPARSE_PATH


def rid():
    return "t-" + uuid.uuid4().hex[:16]


def start_server(extra=()):
    d = tempfile.mkdtemp(prefix="capsrv-cancel-")
    presets = mt.presets_file(d, PRESETS)
    srv = mt.start(["--presets", presets, "--pool-cpu", "1", "--cancel-grace-ms", str(GRACE_MS)]
                   + list(extra))
    mt.put(srv, SPARSE, sparse_clip())
    mt.put(srv, PROBE_IN, mt.clip(1.0, "160x120"))
    return srv


def ts_to_epoch(ts):
    """Seconds since the epoch of a log timestamp (2026-12-06T10:56:30.731Z)."""
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000.0


def log_ts(srv, event, job_id, timeout=15, **fields):
    """Wall-clock time (epoch s) of the server's first `event` line for
    job_id (with the given fields), waiting up to timeout s for it."""
    deadline = time.time() + timeout
    while True:
        for l in complete_log_lines(srv.log_text()):
            if l.get("event") == event and l.get("job_id") == job_id and \
                    all(l.get(k) == v for k, v in fields.items()):
                return ts_to_epoch(l["ts"])
        if time.time() >= deadline:
            return None
        time.sleep(0.02)


class KillMixin:
    """What every path checks once its job has ended."""

    def start_linger(self, preset="linger"):
        """A linger render (async) and a probe queued behind it (the render
        holds the one slot from its start, duration probe included); waits
        for the render's ffmpeg.  Returns (render job id, ffmpeg pid, probe
        job id, output key)."""
        out = "renders/%s.mp4" % uuid.uuid4().hex[:8]
        st, h, j = mt.exec_(self.srv, mt.render_body(SPARSE, out, preset, **{"async": True}))
        self.assertEqual(st, 202, j)
        st, h, q = mt.exec_(self.srv, mt.probe_body(PROBE_IN, **{"async": True}))
        self.assertEqual(st, 202, q)
        self.assertEqual(q.get("status"), "queued", "one slot: the probe must wait: %r" % q)
        pid = mt.wait_ffmpeg_pid(self.srv, j["job_id"])
        return j["job_id"], pid, q["job_id"], out

    def wait_gone(self, pid, since, what):
        """Waits (at most 10 s) for the process group pid to have no live
        member; asserts that took under CHILD_GONE_S counted from since."""
        left = mt.wait_group_gone(pid, 10)
        took = time.time() - since
        self.assertEqual(left, {}, "%s: the job's ffmpeg group %d still alive %.1f s later "
                         "(cancel_grace_ms %d)" % (what, pid, took, GRACE_MS))
        self.assertLess(took, CHILD_GONE_S, "%s: the job's ffmpeg lived on %.2f s" % (what, took))

    def assert_slot_freed(self, job_id, queued_id, what):
        """The queued probe started (job.started) within SLOT_FREE_S of the
        job's end (job.finished), both from the server's log, and then
        succeeded."""
        ended = log_ts(self.srv, "job.finished", job_id)
        self.assertIsNotNone(ended, "%s: no job.finished for %s" % (what, job_id))
        started = log_ts(self.srv, "job.started", queued_id, timeout=10)
        if started is None:
            self.fail("%s: the queued job had not started %.1f s after the job ended "
                      "(cancel_grace_ms %d)" % (what, time.time() - ended, GRACE_MS))
        self.assertLess(started - ended, SLOT_FREE_S,
                        "%s: the slot was freed %.2f s after the job ended" % (what, started - ended))
        self.assertEqual(mt.poll_job(self.srv, queued_id, timeout=30)["status"], "succeeded")

    def assert_no_leftovers(self, out):
        deadline = time.time() + 3
        while mt.tmp_entries(self.srv) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(mt.tmp_entries(self.srv), [], "temp files left behind")
        self.assertFalse(os.path.exists(os.path.join(mt.data_dir(self.srv), out)), "output stored")
        self.assertEqual(mt.zombies(self.srv.proc.pid), {})


class Cancel(KillMixin, mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = start_server(["--cancel-on-disconnect"])

    def test_00_workload_outlives_sigterm(self):
        # The model of a slow wind-down: the same ffmpeg command, run directly,
        # is still alive LINGER_CHECK_S after SIGTERM (the old server waited
        # for exactly this, up to cancel_grace_ms).
        with tempfile.TemporaryDirectory(prefix="caplinger-") as d:
            p = subprocess.Popen([mt.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                                  "-i", sparse_clip(), "-map", "0:v:0", "-vf", LINGER_VF,
                                  "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                                  "-f", "mp4", os.path.join(d, "out.mp4")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                self.assertIsNone(p.poll(), "ffmpeg ended before SIGTERM")
                p.send_signal(signal.SIGTERM)
                time.sleep(LINGER_CHECK_S)
                self.assertIsNone(p.poll(), "ffmpeg no longer lingers after SIGTERM: these "
                                  "tests would pass even with a graceful cancel")
            finally:
                p.kill()
                p.wait()

    def test_delete_kills_at_once(self):
        jid, pid, qid, out = self.start_linger()
        time.sleep(0.5)  # ffmpeg is asleep in the realtime filter now
        self.assertIsNotNone(mt._stat(pid), "ffmpeg ended before DELETE")
        t0 = time.time()
        st, h, job = mt.delete_job(self.srv, jid)
        self.assertEqual((st, job.get("status")), (200, "canceled"), job)
        self.wait_gone(pid, t0, "DELETE")
        self.assert_slot_freed(jid, qid, "DELETE")
        st, h, job = mt.get_job(self.srv, jid)
        self.assertEqual((job["status"], job["error"]["code"]), ("canceled", "canceled"), job)
        self.assertEqual(job["error"].get("signal"), "SIGKILL", job)
        fin = [l for l in complete_log_lines(self.srv.log_text())
               if l.get("event") == "job.finished" and l.get("job_id") == jid]
        self.assertEqual(len(fin), 1, fin)
        self.assertEqual(fin[0].get("state"), "canceled", fin)
        self.assert_no_leftovers(out)

    def test_timeout_kills_at_once(self):
        jid, pid, qid, out = self.start_linger("linger-t2")
        job = mt.poll_job(self.srv, jid, timeout=15)
        self.assertEqual((job["status"], job["error"]["code"]), ("failed", "timeout"), job)
        ended = log_ts(self.srv, "job.finished", jid, code="timeout")
        self.assertIsNotNone(ended)
        self.wait_gone(pid, ended, "timeout")
        self.assert_slot_freed(jid, qid, "timeout")
        self.assert_no_leftovers(out)

    def test_disconnect_kills_at_once(self):
        r = rid()
        out = "renders/cod.mp4"
        s = self.srv.connect()
        try:
            body = json.dumps(mt.render_body(SPARSE, out, "linger", wait=60))
            s.sendall(build_request("POST", "/exec", body, {"X-Request-Id": r}, close=False))
            line = wait_for(self.srv, lambda l: l.get("event") == "job.queued"
                            and l.get("req_id") == r, 15)
            jid = line["job_id"]
            pid = mt.wait_ffmpeg_pid(self.srv, jid)
            st, h, q = mt.exec_(self.srv, mt.probe_body(PROBE_IN, **{"async": True}))
            self.assertEqual((st, q.get("status")), (202, "queued"), q)
            time.sleep(0.5)
            self.assertIsNotNone(mt._stat(pid), "ffmpeg ended before the client went away")
        finally:
            t0 = time.time()
            s.close()
        self.wait_gone(pid, t0, "cancel_on_disconnect")
        self.assert_slot_freed(jid, q["job_id"], "cancel_on_disconnect")
        self.assertEqual(mt.get_job(self.srv, jid)[2]["status"], "canceled")
        self.assert_no_leftovers(out)


class DrainEnd(unittest.TestCase):
    def test_drain_end_kills_at_once(self):
        # shutdown_grace_ms 500: the drain gives up on the running job after
        # half a second; the job is canceled and the server exits right after.
        self.srv = start_server(["--shutdown-grace-ms", "500"])
        try:
            out = "renders/drain.mp4"
            st, h, j = mt.exec_(self.srv, mt.render_body(SPARSE, out, "linger", **{"async": True}))
            self.assertEqual(st, 202, j)
            pid = mt.wait_ffmpeg_pid(self.srv, j["job_id"])
            time.sleep(0.3)
            t0 = time.time()
            self.srv.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.srv.proc.wait(12)
            except subprocess.TimeoutExpired:
                rc = None
            took = time.time() - t0
            self.assertEqual(rc, 0, "server still running %.1f s after SIGTERM with "
                             "shutdown_grace_ms 500 (cancel_grace_ms %d)" % (took, GRACE_MS))
            self.assertLess(took, 0.5 + SLOT_FREE_S, "the drain took %.2f s" % took)
            self.assertEqual(mt.group_members(pid), {}, "the job's ffmpeg outlived the server")
            self.assertEqual(mt.tmp_entries(self.srv), [])
            self.assertFalse(os.path.exists(os.path.join(mt.data_dir(self.srv), out)))
            fin = [l for l in complete_log_lines(self.srv.log_text())
                   if l.get("event") == "job.finished" and l.get("job_id") == j["job_id"]]
            # Stopped by the server, not canceled by the client: retryable.
            self.assertEqual([(l.get("state"), l.get("code")) for l in fin],
                             [("failed", "interrupted")], fin)
        finally:
            mt.stop(self.srv)


if __name__ == "__main__":
    unittest.main(verbosity=2)
