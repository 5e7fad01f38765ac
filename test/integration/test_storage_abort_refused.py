#!/usr/bin/env python3
"""Integration tests (issue 11): an AbortMultipartUpload the store refuses
is tried once and logged once; one it cannot answer now is retried.

cap-server talks to the Swift s3api bed (s3bed.py) through a recording TCP
proxy (tcpproxy.py) that answers chosen aborts itself (403 AccessDenied,
405 MethodNotAllowed, 503, 429) and passes every other request, and every
abort it lets through, to Swift unchanged.  A job's upload is made to need
an abort once its first part is on the way (raw frames held to the clip's
pace): by DELETE /jobs/{id} (reason "canceled") or by killing its ffmpeg
(reason "failed").

- 503 and 429 are retried: the request's own retries, then the deferred
  retry, until the abort goes through and the upload is gone.
- 503 five times and then 403: the deferred retry that meets the 403 is the
  last attempt (the old code retried it for ever, every minute at most).
- 403 and 405, from a job's abort and from the orphan sweep's: each upload
  gets exactly one abort and one `storage.abort_refused` line (with its key,
  upload id and status, no credentials) while the sweep runs every second
  for many cycles with the uploads older than orphan_age_s; the refusals
  are counted in cap_storage_multipart_abort_refusals_total{reason}.

Server settings: --part-size 5 MiB, --storage-backoff-ms 100,
--storage-retries 4 (five attempts per request), --orphan-sweep-s 1,
--orphan-age-s 60 (the least it takes).
"""
import datetime
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402
from s3bed import AwsError, S3Bed  # noqa: E402
from tcpproxy import TcpProxy  # noqa: E402

BUCKET = "aborts"
PART = 5 * st.MIB
AGE = 60            # --orphan-age-s: the smallest the server takes
ATTEMPTS = 5        # one request with --storage-retries 4

BED = None
TMP = None
PRESETS = None


def setUpModule():
    global BED, TMP, PRESETS
    if not st.have_bed():
        raise unittest.SkipTest("S3 bed not installed (scripts/s3-testbed.sh install): "
                                "the abort tests need a real S3 server")
    TMP = tempfile.mkdtemp(prefix="capsrv-abort-refused-")
    BED = S3Bed().start()
    BED.make_bucket(BUCKET)
    # raw-paced: raw frames at the clip's pace.  On the fast clip (640x360,
    # about 8.6 MB/s) a part every 0.6 s for 8 s; on the small one (320x180)
    # a part every 2.4 s for 30 s, so its job still runs when the test
    # cancels it 20 s in.
    fast = mt.clip(duration=8.0, size="640x360", audio=False)
    small = mt.clip(duration=30.0, size="320x180", audio=False)
    PRESETS = mt.presets_file(TMP, {"raw-paced": st.raw_preset(vf="realtime")})
    for prefix in ("retry", "late", "refused"):
        BED.put_object(BUCKET, prefix + "/in/fast.mp4", path=fast)
        BED.put_object(BUCKET, prefix + "/in/small.mp4", path=small)


def tearDownModule():
    if BED is not None:
        BED.stop()
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def jtime(ts):
    """Seconds since the epoch of an ISO 8601 time (awscli's
    2026-11-25T16:29:56+00:00 or 2026-11-25T16:29:56.000Z)."""
    d = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return d.timestamp()


def counter(text, name, **labels):
    """A counter's value in a metrics exposition (0 when absent)."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{([^}]*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
    return 0.0


@unittest.skipUnless(st.have_bed(), "S3 bed not installed: scripts/s3-testbed.sh install")
class AbortRefused(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.prefix = None
        self.proxy = TcpProxy(BED.port).start()
        self.addCleanup(self.proxy.stop)

    def tearDown(self):
        # The refused uploads stay open by design; the bed is shared, so the
        # test closes them itself (directly, not through the proxy).
        if self.prefix and BED is not None:
            try:
                for u in BED.list_multipart_uploads(BUCKET, prefix=self.prefix + "/"):
                    BED.abort_multipart_upload(BUCKET, u["Key"], u["UploadId"])
            except AwsError:
                pass

    # --- helpers ------------------------------------------------------------

    def start_server(self, prefix, extra=()):
        self.prefix = prefix
        args = ["--presets", PRESETS, "--pool-cpu", "4", "--part-size", str(PART),
                "--storage-backoff-ms", "100", "--storage-retries", str(ATTEMPTS - 1)]
        srv = st.start_s3(BED, BUCKET, prefix, args + list(extra),
                          env={"AWS_ENDPOINT_URL": self.proxy.endpoint})
        self.addCleanup(mt.stop, srv)
        ev = st.storage_event(srv)
        self.assertEqual(ev.get("event"), "storage.ready", ev)
        return srv

    def start_upload(self, srv, inp, key):
        """Starts a raw-paced job writing key; returns its id once its
        first UploadPart reached the proxy (the upload exists)."""
        status, _, j = mt.exec_(srv, mt.render_body("in/" + inp, key, "raw-paced",
                                                    **{"async": True}))
        self.assertEqual(status, 202, j)
        p = self.path(key)
        self.proxy.wait_request(lambda r: r.is_part and r.path == p, timeout=30)
        return j["job_id"]

    def cancel(self, srv, jid):
        status, _, j = mt.delete_job(srv, jid)
        self.assertEqual(status, 200, j)
        job = mt.poll_job(srv, jid, timeout=30)
        self.assertEqual(job["status"], "canceled", job)

    def kill_ffmpeg(self, srv, jid):
        os.kill(mt.wait_ffmpeg_pid(srv, jid), signal.SIGKILL)
        job = mt.poll_job(srv, jid, timeout=30)
        self.assertEqual((job["status"], (job.get("error") or {}).get("code")),
                         ("failed", "ffmpeg_failed"), job)

    def path(self, key):
        """The request path of key (relative to the server's prefix)."""
        return "/%s/%s/%s" % (BUCKET, self.prefix, key)

    def aborts(self, key):
        """AbortMultipartUpload requests for key that reached the proxy."""
        p = self.path(key)
        return [r for r in self.proxy.requests_of("abort") if r.path == p]

    def abort_pred(self, *keys):
        paths = {self.path(k) for k in keys}
        return lambda r: r.kind == "abort" and r.path in paths

    def refused_lines(self, srv, key=None):
        return [l for l in st.log_events(srv, "storage.abort_refused")
                if key is None or l.get("key") == key]

    def open_uploads(self):
        return {u["Key"][len(self.prefix) + 1:]: u
                for u in BED.list_multipart_uploads(BUCKET, prefix=self.prefix + "/")}

    def wait_for(self, what, fn, timeout, srv=None):
        deadline = time.time() + timeout
        while True:
            v = fn()
            if v:
                return v
            if time.time() >= deadline:
                self.fail("%s not within %s s\nproxy: %r\nlog tail:\n%s"
                          % (what, timeout, self.proxy.summary(),
                             srv.log_text()[-3000:] if srv else ""))
            time.sleep(0.1)

    def describe(self, srv):
        lines = [l for l in captools.complete_log_lines(srv.log_text())
                 if l.get("event", "").startswith(("storage.abort", "storage.orphan"))]
        return "abort log lines:\n%s\naborts seen by the proxy:\n%s" % (
            "\n".join(repr(l) for l in lines),
            "\n".join("%.1f %r answered=%r" % (r.started, r, r.answered)
                      for r in self.proxy.requests_of("abort")))

    # --- 1. 503 and 429 are retried until the abort goes through ------------

    def test_1_5xx_and_429_answers_are_retried_until_the_abort_goes_through(self):
        srv = self.start_server("retry")
        keys = {"out/c503.nut": 503, "out/c429.nut": 429}
        for key, status in keys.items():
            # The whole first request (its five attempts): the upload's abort
            # fails and is handed to the deferred retry, which gets through.
            self.proxy.respond_request(self.abort_pred(key), status, count=ATTEMPTS)
        self.cancel(srv, self.start_upload(srv, "fast.mp4", "out/c503.nut"))
        self.kill_ffmpeg(srv, self.start_upload(srv, "fast.mp4", "out/c429.nut"))
        self.wait_for("both uploads aborted", lambda: not self.open_uploads(), 30, srv)
        for key, status in keys.items():
            seen = self.aborts(key)
            self.assertEqual([r.answered for r in seen], [status] * ATTEMPTS + [None],
                             "%s: every %d retried, then one abort reaching the store\n%s"
                             % (key, status, self.describe(srv)))
        deferred = st.log_events(srv, "storage.abort_deferred")
        self.assertEqual(sorted(l.get("key") for l in deferred), sorted(keys), deferred)
        self.assertEqual(self.refused_lines(srv), [], self.describe(srv))

    # --- 2. a deferred retry that is refused is the last ---------------------

    def test_2_a_refusal_ends_the_deferred_retries(self):
        srv = self.start_server("late")
        key = "out/d403.nut"
        self.proxy.respond_request(self.abort_pred(key), 503, count=ATTEMPTS)
        self.proxy.respond_request(self.abort_pred(key), 403)
        self.cancel(srv, self.start_upload(srv, "fast.mp4", key))
        self.wait_for("the deferred retry", lambda: len(self.aborts(key)) > ATTEMPTS, 20, srv)
        # The deferred retries come 2 s, then 4 s, 8 s ... apart: another
        # would come within 5 s.
        time.sleep(6)
        seen = self.aborts(key)
        self.assertEqual([r.answered for r in seen], [503] * ATTEMPTS + [403],
                         "the refused abort was tried again\n" + self.describe(srv))
        lines = self.refused_lines(srv)
        self.assertEqual(len(lines), 1, self.describe(srv))
        line = lines[0]
        self.assertEqual((line.get("key"), line.get("status"), line.get("reason"),
                          line.get("level")), (key, 403, "deferred", "warn"), line)
        ups = self.open_uploads()
        self.assertIn(key, ups, "the proxy answered every abort: the upload must be open")
        self.assertEqual(line.get("upload_id"), ups[key]["UploadId"], line)

    # --- 3. 403 / 405: one attempt, one log line, job and sweep alike -------

    def test_3_refused_aborts_are_tried_once_and_logged_once(self):
        self.prefix = "refused"
        orphans = {"old/o403.nut": 403, "old/o405.nut": 405}
        jobs = {"out/a403.nut": 403, "out/b405.nut": 405}
        for key, status in list(orphans.items()) + list(jobs.items()):
            self.proxy.respond_request(self.abort_pred(key), status)
        srv = self.start_server("refused", extra=["--orphan-sweep-s", "1",
                                                  "--orphan-age-s", str(AGE)])
        # a403: its upload starts first (so it is older than the orphans,
        # however slow the machine), and it is canceled 20 s after the
        # orphans were made.  Its refused abort then holds off the sweep
        # until 20 + AGE s, past the end of this test, though the upload
        # itself is older than AGE s for the last several sweeps: the sweep
        # must skip it for the refusal.
        a = self.start_upload(srv, "small.mp4", "out/a403.nut")
        # Two orphans the server never saw, old enough for the sweep AGE s
        # from now.
        for key in orphans:
            BED.create_multipart_upload(BUCKET, "refused/" + key)
        ups = self.open_uploads()
        t0 = max(jtime(ups[k]["Initiated"]) for k in orphans)
        time.sleep(max(0, t0 + 20 - time.time()))
        self.cancel(srv, a)
        # b405: fails, its ffmpeg killed.
        self.kill_ffmpeg(srv, self.start_upload(srv, "fast.mp4", "out/b405.nut"))
        self.wait_for("both jobs' aborts", lambda: all(self.aborts(k) for k in jobs), 10, srv)
        t_jobs_refused = time.time()

        # The orphans are AGE s old at t0 + AGE; fourteen sweeps after that
        # (every second) are still within the a403 hold (t0 + 20 + AGE).
        end = t0 + AGE + 14
        self.assertLess(end, t0 + 20 + AGE - 2)
        time.sleep(max(0, end - time.time()))
        sweeps = [l for l in st.log_events(srv, "storage.sweep")
                  if jtime(l["ts"]) > t0 + AGE + 1]
        self.assertGreaterEqual(len(sweeps), 10, "the sweep did not run every second")
        self.assertGreater(time.time() - t_jobs_refused, 30)

        attempts = {k: [r.answered for r in self.aborts(k)] for k in list(orphans) + list(jobs)}
        want = {k: [s] for k, s in list(orphans.items()) + list(jobs.items())}
        self.assertEqual(attempts, want, "each refused abort must be tried exactly once\n"
                         + self.describe(srv))

        lines = self.refused_lines(srv)
        got = sorted((l.get("key"), l.get("status"), l.get("reason"), l.get("level"))
                     for l in lines)
        self.assertEqual(got, sorted([("old/o403.nut", 403, "orphan", "warn"),
                                      ("old/o405.nut", 405, "orphan", "warn"),
                                      ("out/a403.nut", 403, "canceled", "warn"),
                                      ("out/b405.nut", 405, "failed", "warn")]),
                         self.describe(srv))
        ups = self.open_uploads()
        self.assertEqual(sorted(ups), sorted(list(orphans) + list(jobs)),
                         "every refused upload stays open (the proxy answered its abort)")
        # a403 was old enough for several of the sweeps above: only its
        # refusal kept them from sending its abort again.
        self.assertLess(jtime(ups["out/a403.nut"]["Initiated"]) + AGE, end - 4, ups)
        for l in lines:
            self.assertEqual(l.get("upload_id"), ups[l["key"]]["UploadId"], l)
            self.assertEqual(l.get("code"), "AccessDenied" if l["status"] == 403
                             else "MethodNotAllowed", l)
        self.assertEqual(st.log_events(srv, "storage.abort_deferred"), [],
                         "a refused abort is not deferred")
        hits = st.credential_hits("\n".join(repr(l) for l in lines), secrets=(BED.secret_key,),
                                  access_keys=(BED.access_key,))
        self.assertEqual(hits, [])

        status, _, body = captools.http(srv, "GET", "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        name = "cap_storage_multipart_abort_refusals_total"
        self.assertEqual({r: counter(text, name, reason=r)
                          for r in ("canceled", "failed", "deferred", "orphan")},
                         {"canceled": 1, "failed": 1, "deferred": 0, "orphan": 2}, text)
        self.assertEqual(counter(text, "cap_storage_multipart_aborts_total", reason="orphan"), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
