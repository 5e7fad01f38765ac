#!/usr/bin/env python3
"""Integration tests (jobs): sync waits that overrun (202 + polling), async,
Prefer: wait, cancel (process group gone, no output, temp dir empty),
timeouts, ffmpeg killed or failing, client disconnects, per-token job
visibility, DELETE of finished jobs, and server SIGTERM with a running job."""
import json
import os
import signal
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
from capsrv import TOKEN  # noqa: E402
from captools import build_request, complete_log_lines, wait_for  # noqa: E402

BOB = "bob-token-0123456789abcdefghijklmnopq"

# "slow*" presets use ffmpeg's realtime filter: a render takes as long as
# the clip and almost no CPU.
PRESETS = {
    "slow": mt.small_preset(realtime=True),
    "slow-t1": mt.small_preset(realtime=True, timeout_s=1),
    "quick": mt.small_preset(),
}
LONG = "uploads/long.mp4"     # 12 s: a slow render of it outlives every test that uses it
MID = "uploads/mid.mp4"       # 3 s
SHORT = "uploads/short.mp4"   # 1 s


def setup_media(srv):
    mt.put(srv, LONG, mt.clip(12.0, "160x120", audio=False))
    mt.put(srv, MID, mt.clip(3.0, "160x120", audio=False))
    mt.put(srv, SHORT, mt.clip(1.0, "160x120"))


def rid():
    return "t-" + uuid.uuid4().hex[:16]


class Bg(threading.Thread):
    """Runs one request in the background; .result is (status, headers, json)."""

    def __init__(self, fn, *a, **kw):
        super().__init__(daemon=True)
        self.fn, self.a, self.kw = fn, a, kw
        self.result = None
        self.error = None
        self.t_end = None

    def run(self):
        try:
            self.result = self.fn(*self.a, **self.kw)
        except Exception as e:  # noqa: BLE001
            self.error = e
        self.t_end = time.time()


def queued_job_id(srv, req_id, timeout=15):
    line = wait_for(srv, lambda l: l.get("event") == "job.queued" and l.get("req_id") == req_id, timeout)
    return line["job_id"]


def started_pid(srv, job_id, timeout=20):
    """pid of the job's ffmpeg child (its process group id too)."""
    return mt.wait_ffmpeg_pid(srv, job_id, timeout)


class Lifecycle(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-life-")
        presets = mt.presets_file(d, PRESETS, include_builtin=True)
        tf = mt.write_token_file(d, [("alice", TOKEN), ("bob", BOB)])
        cls.srv = mt.start(["--presets", presets, "--pool-cpu", "2", "--token-file", tf], token=None)
        cls.data = mt.data_dir(cls.srv)
        setup_media(cls.srv)

    def out_path(self, key):
        return os.path.join(self.data, key)

    def assert_202(self, st, h, j):
        self.assertEqual(st, 202, j)
        self.assertRegex(j.get("job_id", ""), mt.JOB_ID_RE, j)
        self.assertIn(j.get("status"), ("queued", "running", "uploading"), j)
        self.assertEqual(j.get("status_url"), "/jobs/" + j["job_id"], j)
        self.assertEqual(h.get("location"), "/jobs/" + j["job_id"], h)

    def check_child(self, pid, input_key=LONG):
        st = mt._stat(pid)
        self.assertIsNotNone(st, "job child %d not running" % pid)
        self.assertEqual(st[2], self.srv.proc.pid, "job child is not the server's child: %r" % (st,))
        self.assertEqual(st[3], pid, "job child is not its own process-group leader: %r" % (st,))
        fds = mt.fd_targets(pid)
        self.assertEqual(fds.get(0), "/dev/null", "child stdin: %r" % fds)
        leaked = mt.shared_fds(self.srv.proc.pid, pid, allow=(self.out_path(input_key),))
        self.assertEqual(leaked, {}, "server descriptors inherited by the ffmpeg child")

    def assert_group_gone(self, pgid, timeout=8):
        left = mt.wait_group_gone(pgid, timeout)
        self.assertEqual(left, {}, "processes of the job's group %d still alive" % pgid)

    def assert_tmp_empty(self, timeout=5):
        deadline = time.time() + timeout
        while mt.tmp_entries(self.srv) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(mt.tmp_entries(self.srv), [])

    # -- waiting ----------------------------------------------------------

    def test_sync_overrun_then_poll(self):
        out = "renders/overrun.mp4"
        r = rid()
        t0 = time.time()
        st, h, j = mt.exec_(self.srv, mt.render_body(MID, out, "slow", wait=1), headers={"X-Request-Id": r})
        el = time.time() - t0
        self.assert_202(st, h, j)
        self.assertGreaterEqual(el, 0.8, "answered before the 1 s wait")
        self.assertLess(el, 2.9, "wait=1 not honoured")
        t0 = time.time()
        st, h, job = mt.get_job(self.srv, j["job_id"], wait=60)
        self.assertEqual(st, 200, job)
        self.assertLess(time.time() - t0, 15)
        self.assertEqual(job["status"], "succeeded", job)
        self.assertEqual(job["result"]["r2_key"], out)
        self.assertEqual(job["result"]["bytes"], os.path.getsize(self.out_path(out)))
        self.assertEqual(job["result"]["job_id"], j["job_id"])
        # Logs: job.queued / job.started / job.finished carry job_id and the creating req_id.
        # The log is written once per loop turn, so its lines may trail the
        # answer by a moment: wait for job.finished before reading it.
        deadline = time.time() + 5
        while True:
            lines = [l for l in complete_log_lines(self.srv.log_text()) if l.get("job_id") == j["job_id"] and str(l.get("event")).startswith("job.")]
            events = [l["event"] for l in lines]
            if "job.finished" in events or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(events[0], "job.queued", events)
        self.assertIn("job.started", events)
        self.assertEqual(events.count("job.finished"), 1, events)
        for l in lines:
            if l["event"] in ("job.queued", "job.started", "job.finished", "job.progress"):
                self.assertEqual(l.get("req_id"), r, l)
        fin = [l for l in lines if l["event"] == "job.finished"][0]
        self.assertEqual(fin.get("state"), "succeeded", fin)
        self.assertEqual(fin.get("bytes"), job["result"]["bytes"], fin)
        self.assertIsInstance(fin.get("dur_ms"), int, fin)
        st_ = [l for l in lines if l["event"] == "job.started"][-1]
        self.assertIsInstance(st_.get("pid"), int, st_)
        self.assertEqual(st_.get("preset"), "slow", st_)
        self.assertEqual(st_.get("class"), "cpu", st_)
        # Long-poll of a finished job answers at once.
        t0 = time.time()
        st, h, job2 = mt.get_job(self.srv, j["job_id"], wait=60)
        self.assertEqual((st, job2["status"]), (200, "succeeded"))
        self.assertLess(time.time() - t0, 1.5)

    def test_async_answers_at_once(self):
        out = "renders/async.mp4"
        t0 = time.time()
        st, h, j = mt.exec_(self.srv, mt.render_body(LONG, out, "slow", **{"async": True}))
        self.assertLess(time.time() - t0, 1.0)
        self.assert_202(st, h, j)
        # GET with wait=1 on a running job: waits about 1 s, then 200 with the job.
        t0 = time.time()
        st, h, job = mt.get_job(self.srv, j["job_id"], wait=1)
        el = time.time() - t0
        self.assertEqual(st, 200, job)
        self.assertIn(job["status"], ("queued", "running"), job)
        self.assertGreaterEqual(el, 0.8)
        self.assertLess(el, 2.9)
        self.assertIsNone(job["result"])
        self.assertIsNone(job["finished_at"])
        st, h, job = mt.delete_job(self.srv, j["job_id"])
        self.assertEqual((st, job.get("status")), (200, "canceled"), job)
        self.assertFalse(os.path.exists(self.out_path(out)))

    def test_prefer_wait_header(self):
        t0 = time.time()
        st, h, j = mt.exec_(self.srv, mt.render_body(MID, "renders/prefer.mp4", "slow"),
                            headers={"Prefer": "wait=1"})
        el = time.time() - t0
        self.assert_202(st, h, j)
        self.assertGreaterEqual(el, 0.8)
        self.assertLess(el, 2.9, "Prefer: wait=1 not honoured")
        done = mt.poll_job(self.srv, j["job_id"], timeout=30)
        self.assertEqual(done["status"], "succeeded", done)

        t0 = time.time()
        st, h, j = mt.exec_(self.srv, mt.render_body(MID, "renders/wait0.mp4", "slow", wait=0))
        self.assert_202(st, h, j)
        self.assertLess(time.time() - t0, 1.0, "wait=0 must not wait")
        mt.delete_job(self.srv, j["job_id"])

        st, h, j = mt.exec_(self.srv, mt.render_body(SHORT, "renders/prefer30.mp4", "quick"),
                            headers={"Prefer": "wait=30"})
        self.assertEqual(st, 200, j)
        self.assertEqual(j["status"], "succeeded")

    def test_progress_reported(self):
        st, h, j = mt.exec_(self.srv, mt.render_body(LONG, "renders/progress.mp4", "slow",
                                                      **{"async": True}))
        self.assert_202(st, h, j)
        started_pid(self.srv, j["job_id"])
        deadline = time.time() + 6
        seen = []
        while time.time() < deadline:
            st, h, job = mt.get_job(self.srv, j["job_id"])
            p = job["progress"]
            seen.append(p)
            if isinstance(p.get("out_time_us"), int) and p["out_time_us"] > 1000000:
                break
            time.sleep(0.2)
        self.assertEqual(job["status"], "running", job)
        # Output is written atomically: nothing at the key while running, the temp file in .cap-tmp.
        self.assertFalse(os.path.exists(self.out_path("renders/progress.mp4")), "output visible before the end")
        self.assertNotEqual(mt.tmp_entries(self.srv), [], "running render writes nothing into .cap-tmp")
        hj = mt.health(self.srv)["jobs"]
        self.assertGreaterEqual(hj["running"], 1, hj)
        self.assertGreaterEqual(hj["slots"]["cpu"]["busy"], 1, hj)
        self.assertGreater(p.get("out_time_us") or 0, 1000000, "no progress after 6 s: %r" % seen[-3:])
        pct = p.get("percent")
        self.assertIsNotNone(pct, "input duration is known, percent should be too: %r" % p)
        self.assertTrue(0 < pct < 100, p)
        st, h, job = mt.delete_job(self.srv, j["job_id"])
        self.assertEqual(job["status"], "canceled")

    # -- cancel -----------------------------------------------------------

    def test_cancel_running(self):
        out = "renders/cancel.mp4"
        st, h, j = mt.exec_(self.srv, mt.render_body(LONG, out, "slow", **{"async": True}))
        self.assert_202(st, h, j)
        pid = started_pid(self.srv, j["job_id"])
        self.check_child(pid)
        mt.wait_status(self.srv, j["job_id"], ("running",), timeout=10)
        time.sleep(0.5)
        t0 = time.time()
        st, h, job = mt.delete_job(self.srv, j["job_id"])
        self.assertEqual(st, 200, job)
        self.assertEqual(job["status"], "canceled", job)
        self.assertEqual(job["job_id"], j["job_id"])
        self.assert_group_gone(pid, timeout=7)
        self.assertLess(time.time() - t0, 7)
        st, h, job = mt.get_job(self.srv, j["job_id"])
        self.assertEqual((st, job["status"]), (200, "canceled"), job)
        self.assertIsNone(job["result"])
        self.assertFalse(os.path.exists(self.out_path(out)), "canceled job left its output")
        self.assert_tmp_empty()
        st, h, job = mt.delete_job(self.srv, j["job_id"])
        self.assertEqual((st, job.get("code")), (409, "job_finished"), job)
        self.assertEqual(mt.zombies(self.srv.proc.pid), {})

    def test_cancel_while_client_waits(self):
        r = rid()
        bg = Bg(mt.exec_, self.srv, mt.render_body(LONG, "renders/cw.mp4", "slow", wait=30),
                headers={"X-Request-Id": r}, timeout=60)
        bg.start()
        jid = queued_job_id(self.srv, r)
        pid = started_pid(self.srv, jid)
        time.sleep(0.3)
        t0 = time.time()
        st, h, job = mt.delete_job(self.srv, jid)
        self.assertEqual((st, job.get("status")), (200, "canceled"), job)
        bg.join(15)
        self.assertFalse(bg.is_alive(), "waiting request not answered after cancel")
        self.assertIsNone(bg.error)
        st, h, j = bg.result
        self.assertEqual(st, 409, j)
        self.assertEqual(j.get("code"), "canceled", j)
        self.assertLess(bg.t_end - t0, 7)
        self.assert_group_gone(pid)
        self.assertFalse(os.path.exists(self.out_path("renders/cw.mp4")))

    # -- failures ---------------------------------------------------------

    def test_preset_timeout(self):
        out = "renders/timeout.mp4"
        r = rid()
        t0 = time.time()
        st, h, j = mt.exec_(self.srv, mt.render_body(LONG, out, "slow-t1", wait=30),
                            headers={"X-Request-Id": r})
        el = time.time() - t0
        self.assertEqual(st, 504, j)
        self.assertEqual(j.get("code"), "timeout", j)
        self.assertGreaterEqual(el, 0.9)
        self.assertLess(el, 8, "timeout_s 1 not enforced in time")
        jid = j.get("job_id") or queued_job_id(self.srv, r)
        st, h, job = mt.get_job(self.srv, jid)
        self.assertEqual((st, job["status"]), (200, "failed"), job)
        self.assertEqual(job["error"]["code"], "timeout", job)
        pid = started_pid(self.srv, jid)
        self.assert_group_gone(pid)
        self.assertFalse(os.path.exists(self.out_path(out)))
        self.assert_tmp_empty()

    def test_ffmpeg_killed(self):
        out = "renders/killed.mp4"
        r = rid()
        bg = Bg(mt.exec_, self.srv, mt.render_body(LONG, out, "slow", wait=30),
                headers={"X-Request-Id": r}, timeout=60)
        bg.start()
        jid = queued_job_id(self.srv, r)
        pid = started_pid(self.srv, jid)
        self.check_child(pid)
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        bg.join(15)
        self.assertFalse(bg.is_alive(), "no answer after ffmpeg was killed")
        self.assertIsNone(bg.error)
        st, h, j = bg.result
        self.assertEqual(st, 502, j)
        self.assertEqual(j.get("code"), "ffmpeg_failed", j)
        self.assertEqual(j.get("signal"), "SIGKILL", j)
        self.assertEqual(j.get("job_id"), jid, j)
        self.assertIsInstance(j.get("stderr_tail"), str, j)
        st, h, job = mt.get_job(self.srv, jid)
        self.assertEqual(job["status"], "failed", job)
        self.assertEqual(job["error"]["code"], "ffmpeg_failed", job)
        self.assertEqual(job["error"]["signal"], "SIGKILL", job)
        self.assertFalse(os.path.exists(self.out_path(out)))
        self.assert_tmp_empty()
        fin = wait_for(self.srv, lambda l: l.get("event") == "job.finished" and l.get("job_id") == jid)
        self.assertEqual(fin.get("req_id"), r, fin)
        self.assertIn(fin.get("signal"), ("SIGKILL", 9), fin)

    def test_ffmpeg_exit_status(self):
        mt.put(self.srv, "uploads/garbage.mp4", content=b"this is not a media file\n" * 100)
        out = "renders/garbage.mp4"
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/garbage.mp4", out, "quick", wait=30))
        self.assertEqual(st, 502, j)
        self.assertEqual(j.get("code"), "ffmpeg_failed", j)
        self.assertIsInstance(j.get("exit_status"), int, j)
        self.assertNotEqual(j["exit_status"], 0)
        self.assertIsInstance(j.get("stderr_tail"), str, j)
        self.assertGreater(len(j["stderr_tail"]), 0, j)
        self.assertRegex(j.get("job_id", ""), mt.JOB_ID_RE)
        st, h, job = mt.get_job(self.srv, j["job_id"])
        self.assertEqual(job["status"], "failed")
        self.assertEqual(job["error"]["exit_status"], j["exit_status"], job)
        self.assertFalse(os.path.exists(self.out_path(out)))

    # -- connections and tokens --------------------------------------------

    def test_client_disconnect_does_not_cancel(self):
        out = "renders/disconnect.mp4"
        r = rid()
        s = self.srv.connect()
        s.sendall(build_request("POST", "/exec", json.dumps(mt.render_body(MID, out, "slow", wait=30)),
                                {"X-Request-Id": r}, close=True))
        jid = queued_job_id(self.srv, r)
        started_pid(self.srv, jid)
        time.sleep(0.3)
        s.close()
        job = mt.poll_job(self.srv, jid, timeout=30)
        self.assertEqual(job["status"], "succeeded", job)
        self.assertEqual(job["result"]["bytes"], os.path.getsize(self.out_path(out)))

    def test_tokens_see_only_their_jobs(self):
        st, h, j = mt.exec_(self.srv, mt.render_body(SHORT, "renders/alice.mp4", "quick", wait=30))
        self.assertEqual(st, 200, j)
        jid = j["job_id"]
        for method, path in (("GET", "/jobs/" + jid), ("GET", "/jobs/%s?wait=1" % jid),
                             ("DELETE", "/jobs/" + jid)):
            st, h, e = mt.call(self.srv, method, path, token=BOB)
            self.assertEqual((st, e.get("code")), (404, "job_not_found"), (method, path, e))
        st, h, job = mt.get_job(self.srv, jid)
        self.assertEqual((st, job["status"]), (200, "succeeded"))
        # Bob's own job is Bob's, not Alice's.
        st, h, jb = mt.exec_(self.srv, mt.probe_body(SHORT), token=BOB)
        self.assertEqual(st, 200, jb)
        st, h, e = mt.get_job(self.srv, jb["job_id"])
        self.assertEqual((st, e.get("code")), (404, "job_not_found"), e)
        st, h, e = mt.get_job(self.srv, jb["job_id"], token=BOB)
        self.assertEqual(st, 200, e)
        # Unknown ids and no token.
        for bad in ("A" * 22, "not-a-job", "0" * 21 + "_"):
            st, h, e = mt.get_job(self.srv, bad)
            self.assertEqual((st, e.get("code")), (404, "job_not_found"), (bad, e))
            st, h, e = mt.delete_job(self.srv, bad)
            self.assertEqual((st, e.get("code")), (404, "job_not_found"), (bad, e))
        st, h, e = mt.get_job(self.srv, jid, token=None)
        self.assertEqual((st, e.get("code")), (401, "unauthorized"), e)
        st, h, e = mt.get_job(self.srv, jid, token="wrong-token-0123456789abcdefghij")
        self.assertEqual((st, e.get("code")), (401, "unauthorized"), e)

    def test_delete_finished_job(self):
        st, h, j = mt.exec_(self.srv, mt.render_body(SHORT, "renders/fin.mp4", "quick", wait=30))
        self.assertEqual(st, 200, j)
        st, h, e = mt.delete_job(self.srv, j["job_id"])
        self.assertEqual((st, e.get("code")), (409, "job_finished"), e)
        st, h, job = mt.get_job(self.srv, j["job_id"])
        self.assertEqual(job["status"], "succeeded")
        self.assertTrue(os.path.isfile(self.out_path("renders/fin.mp4")))
        # A failed job is finished too.
        mt.put(self.srv, "uploads/garbage2.mp4", content=b"garbage" * 50)
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/garbage2.mp4", "renders/g2.mp4", "quick"))
        self.assertEqual(st, 502, j)
        st, h, e = mt.delete_job(self.srv, j["job_id"])
        self.assertEqual((st, e.get("code")), (409, "job_finished"), e)


class JobsMax(mt.CleanCheckMixin, unittest.TestCase):
    """jobs_max: the oldest finished job is dropped first."""

    @classmethod
    def setUpClass(cls):
        cls.srv = mt.start(["--jobs-max", "16"])
        mt.put(cls.srv, SHORT, mt.clip(1.0, "160x120"))

    def test_jobs_max_drops_oldest_finished(self):
        ids = []
        for _ in range(17):
            st, h, j = mt.exec_(self.srv, mt.probe_body(SHORT))
            self.assertEqual(st, 200, j)
            ids.append(j["job_id"])
        st, h, e = mt.get_job(self.srv, ids[0])
        self.assertEqual((st, e.get("code")), (404, "job_not_found"), "jobs_max 16 kept 17 jobs")
        for jid in ids[1:]:
            st, h, job = mt.get_job(self.srv, jid)
            self.assertEqual((st, job.get("status")), (200, "succeeded"), job)


class JobTtl(mt.CleanCheckMixin, unittest.TestCase):
    """job_ttl_s: a finished job stops being pollable after the TTL."""

    @classmethod
    def setUpClass(cls):
        cls.srv = mt.start(["--job-ttl-s", "1"])
        mt.put(cls.srv, SHORT, mt.clip(1.0, "160x120"))

    def test_ttl_expires_finished_jobs(self):
        st, h, j = mt.exec_(self.srv, mt.probe_body(SHORT))
        self.assertEqual(st, 200, j)
        st, h, job = mt.get_job(self.srv, j["job_id"])
        self.assertEqual(st, 200, job)
        time.sleep(3.0)
        st, h, e = mt.get_job(self.srv, j["job_id"])
        self.assertEqual((st, e.get("code")), (404, "job_not_found"),
                         "finished job still pollable 3 s after it ended with job_ttl_s 1")


class GlobalTimeout(mt.CleanCheckMixin, unittest.TestCase):
    """job_timeout_s caps a preset's (longer) timeout_s."""

    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-life2-")
        presets = mt.presets_file(d, PRESETS)
        cls.srv = mt.start(["--presets", presets, "--job-timeout-s", "2"])
        setup_media(cls.srv)

    def test_global_job_timeout(self):
        r = rid()
        t0 = time.time()
        st, h, j = mt.exec_(self.srv, mt.render_body(LONG, "renders/gt.mp4", "slow", wait=30),
                            headers={"X-Request-Id": r})
        el = time.time() - t0
        self.assertEqual(st, 504, j)
        self.assertEqual(j.get("code"), "timeout", j)
        self.assertGreaterEqual(el, 1.9)
        self.assertLess(el, 9, "job_timeout_s 2 not enforced")
        jid = j.get("job_id") or queued_job_id(self.srv, r)
        st, h, job = mt.get_job(self.srv, jid)
        self.assertEqual(job["status"], "failed", job)
        self.assertEqual(job["error"]["code"], "timeout", job)
        self.assertFalse(os.path.exists(os.path.join(mt.data_dir(self.srv), "renders/gt.mp4")))


class Waits(mt.CleanCheckMixin, unittest.TestCase):
    """wait_default_s and wait_max_s."""

    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-life3-")
        presets = mt.presets_file(d, PRESETS)
        cls.srv = mt.start(["--presets", presets, "--pool-cpu", "2",
                            "--wait-default-s", "1", "--wait-max-s", "2"])
        setup_media(cls.srv)

    def test_wait_default_and_max(self):
        t0 = time.time()
        st, h, j = mt.exec_(self.srv, mt.render_body(MID, "renders/wd.mp4", "slow"))
        el = time.time() - t0
        self.assertEqual(st, 202, j)
        self.assertGreaterEqual(el, 0.8)
        self.assertLess(el, 1.9, "wait_default_s 1 not used")
        for name, kw, hdr in (("body", {"wait": 60}, None), ("header", {}, {"Prefer": "wait=60"})):
            t0 = time.time()
            st, h, j2 = mt.exec_(self.srv, mt.render_body(MID, "renders/wm-%s.mp4" % name, "slow", **kw),
                                 headers=hdr)
            el = time.time() - t0
            self.assertEqual(st, 202, (name, j2))
            self.assertGreaterEqual(el, 1.8, name)
            self.assertLess(el, 2.9, "%s wait not capped at wait_max_s 2" % name)
            self.assertEqual(mt.poll_job(self.srv, j2["job_id"], timeout=30)["status"], "succeeded")
        self.assertEqual(mt.poll_job(self.srv, j["job_id"], timeout=30)["status"], "succeeded")


class CancelOnDisconnect(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-life4-")
        presets = mt.presets_file(d, PRESETS)
        cls.srv = mt.start(["--presets", presets, "--cancel-on-disconnect"])
        setup_media(cls.srv)

    def test_disconnect_cancels(self):
        for close in (False, True):
            with self.subTest(connection_close=close):
                r = rid()
                out = "renders/cod-%d.mp4" % close
                s = self.srv.connect()
                s.sendall(build_request("POST", "/exec",
                                        json.dumps(mt.render_body(LONG, out, "slow", wait=30)),
                                        {"X-Request-Id": r}, close=close))
                jid = queued_job_id(self.srv, r)
                pid = started_pid(self.srv, jid)
                time.sleep(0.3)
                s.close()
                try:
                    st, h, job = mt.get_job(self.srv, jid, wait=8)
                    self.assertEqual(job["status"], "canceled",
                                     "job not canceled 8 s after its waiting client went away: %r" % job)
                    self.assertEqual(mt.wait_group_gone(pid, 8), {})
                    self.assertFalse(os.path.exists(os.path.join(mt.data_dir(self.srv), out)))
                finally:
                    mt.delete_job(self.srv, jid)

    def test_async_job_survives_disconnect(self):
        # Nobody waits for an async job, so closing the connection cancels nothing.
        st, h, j = mt.exec_(self.srv, mt.render_body(MID, "renders/cod-async.mp4", "slow",
                                                      **{"async": True}))
        self.assertEqual(st, 202, j)
        job = mt.poll_job(self.srv, j["job_id"], timeout=30)
        self.assertEqual(job["status"], "succeeded", job)


class ServerSigterm(unittest.TestCase):
    def test_sigterm_with_running_job(self):
        d = tempfile.mkdtemp(prefix="capsrv-term-")
        presets = mt.presets_file(d, PRESETS)
        srv = mt.start(["--presets", presets])
        try:
            setup_media(srv)
            st, h, j = mt.exec_(srv, mt.render_body(LONG, "renders/term.mp4", "slow", **{"async": True}))
            self.assertEqual(st, 202, j)
            pid = started_pid(srv, j["job_id"])
            st = mt._stat(pid)
            self.assertEqual((st[2], st[3]), (srv.proc.pid, pid), st)
            time.sleep(0.5)
            t0 = time.time()
            srv.proc.send_signal(signal.SIGTERM)
            rc = srv.proc.wait(30)
            self.assertEqual(rc, 0)
            self.assertLess(time.time() - t0, 12)
            # The child was killed before the server exited: nothing of its group is left.
            left = mt.group_members(pid)
            self.assertEqual(left, {}, "job processes outlived the server")
            self.assertFalse(os.path.exists(os.path.join(mt.data_dir(srv), "renders/term.mp4")))
            self.assertEqual(mt.tmp_entries(srv), [])
            last = complete_log_lines(srv.log_text())[-1]
            self.assertEqual(last.get("event"), "server.stop", last)
        finally:
            mt.stop(srv)


if __name__ == "__main__":
    unittest.main(verbosity=2)
