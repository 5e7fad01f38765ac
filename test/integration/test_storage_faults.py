"""Fault injection for the S3 storage (issue 4, "Faults"): a render whose
output spans ten 5 MiB parts is streamed into the S3 bed (Swift + s3api)
while the bed is stopped and restarted, while a TCP proxy between
cap-server and the bed resets, delays or stalls requests, while ffmpeg is
killed, while the job is canceled, and while the server is told to stop.

The render: a 6 s 640x360 testsrc2 clip (H.264) turned into raw YUV frames
in NUT (51,845,660 bytes, deterministic: the object must equal, byte for
byte, the output of the same ffmpeg command run here).  "raw-fast" makes it
in well under a second; "raw-paced" holds ffmpeg to real time (the realtime
filter: about 8.6 MB/s, a part every 0.6 s) so faults land mid-upload.

After every case: no open multipart upload under the test's prefix, nothing
in DATA/.cap-tmp, no ffmpeg/ffprobe child and no zombie, and (except after
SIGTERM) /health answers with every part buffer back in the pool.

Server settings unless a test says otherwise: --part-size 5242880
--storage-backoff-ms 100 --storage-retries 4.
"""
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
from s3bed import AwsError, S3Bed  # noqa: E402
from storagetools import have_bed, raw_preset, raw_reference  # noqa: E402
from tcpproxy import TcpProxy  # noqa: E402

MIB = 1 << 20
PART = 5 * MIB
BUCKET = "cap-faults"
FRAMES = 150

BED = None
TMP = None
CLIP = None
REF = None          # (size, md5) of the reference output
PRESETS = None


def note(*args):
    """Diagnostics for a run by hand (FAULTS_VERBOSE=1)."""
    if os.environ.get("FAULTS_VERBOSE"):
        print(*args, file=sys.stderr)


def setUpModule():
    global BED, TMP, CLIP, REF, PRESETS
    if not have_bed():
        return
    TMP = tempfile.mkdtemp(prefix="storage-faults-")
    BED = S3Bed().start()
    BED.make_bucket(BUCKET)
    CLIP = mt.clip(duration=6.0, size="640x360", rate=25, audio=False)
    REF = raw_reference(CLIP)
    PRESETS = mt.presets_file(TMP, {"raw-fast": raw_preset(),
                                    "raw-paced": raw_preset("realtime=speed=1")})


def tearDownModule():
    if BED is not None:
        BED.stop()
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def jtime(ts):
    """Seconds since the epoch of an ISO 8601 time (the server's
    2026-11-25T16:29:56.475Z, awscli's 2026-11-25T16:29:56+00:00)."""
    d = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return d.timestamp()


@unittest.skipUnless(have_bed(), "S3 bed not installed: scripts/s3-testbed.sh install")
class StorageFaults(unittest.TestCase):
    maxDiff = None

    # --- helpers ------------------------------------------------------------

    def setUp(self):
        self.t_start = time.time()
        self.srv = None
        self.proxy = None
        self.prefix = None

    def tearDown(self):
        note("%s: %.1f s" % (self.id().split(".")[-1], time.time() - self.t_start))
        # Whatever a failed test left open would confuse nothing else (each
        # test has its own prefix), but the bed is shared: abort it.
        if self.prefix and BED is not None and BED.running():
            try:
                for u in BED.list_multipart_uploads(BUCKET, prefix=self.prefix + "/"):
                    BED.abort_multipart_upload(BUCKET, u["Key"], u["UploadId"])
            except AwsError:
                pass

    def start_server(self, prefix, extra=(), endpoint=None, settings=None):
        """cap-server on s3://BUCKET/prefix with the input clip in place."""
        self.prefix = prefix
        BED.put_object(BUCKET, prefix + "/in/clip.mp4", path=CLIP)
        s = {"--part-size": "5242880", "--storage-backoff-ms": "100", "--storage-retries": "4"}
        s.update(settings or {})
        args = ["--storage", "s3://%s/%s" % (BUCKET, prefix), "--presets", PRESETS,
                "--pool-cpu", "2"]
        for k, v in s.items():
            args += [k, v]
        args += list(extra)
        env = BED.env()
        if endpoint:
            env["AWS_ENDPOINT_URL"] = endpoint
        srv = mt.start(args, env=env)
        self.addCleanup(mt.stop, srv)
        self.srv = srv
        captools.wait_for(srv, lambda l: l.get("event") in ("storage.ready", "storage.unavailable"),
                          timeout=15)
        ready = [l for l in captools.complete_log_lines(srv.log_text())
                 if l.get("event") == "storage.ready"]
        self.assertTrue(ready, "storage not ready:\n" + srv.log_text()[-2000:])
        return srv

    def start_proxy(self):
        proxy = TcpProxy(BED.port).start()
        self.addCleanup(proxy.stop)
        self.proxy = proxy
        return proxy

    def submit(self, srv, preset, out):
        st, h, j = mt.exec_(srv, mt.render_body("in/clip.mp4", out, preset, **{"async": True}))
        self.assertEqual(st, 202, j)
        return j["job_id"]

    def job(self, srv, job_id):
        st, h, j = mt.get_job(srv, job_id)
        self.assertEqual(st, 200, j)
        return j

    def object_key(self, out):
        return "%s/%s" % (self.prefix, out)

    def assert_object_good(self, out, job):
        """The object is the complete render: same bytes as the reference,
        ten uniform parts, and it plays (ffprobe counts every frame)."""
        res = job.get("result") or {}
        key = self.object_key(out)
        self.assertEqual(res.get("bytes"), REF[0], job)
        self.assertEqual(res.get("parts"), 10, job)
        path = os.path.join(TMP, "got-%s.nut" % self.prefix)
        info = BED.get_object(BUCKET, key, path)
        try:
            self.assertEqual(info.get("ContentLength"), REF[0], info)
            self.assertEqual(info.get("ETag"), res.get("etag"), (info, res))
            with open(path, "rb") as f:
                md5 = hashlib.md5(f.read()).hexdigest()
            self.assertEqual(md5, REF[1], "object differs from the reference render")
            sizes = BED.part_sizes(BUCKET, key)
            self.assertEqual(sizes, [PART] * 9 + [REF[0] - 9 * PART], "parts not uniform")
            out = subprocess.run([mt.FFPROBE, "-v", "error", "-count_frames", "-select_streams",
                                  "v:0", "-show_entries", "stream=codec_name,width,height,"
                                  "nb_read_frames", "-of", "json", path],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            s = json.loads(out.stdout)["streams"][0]
            self.assertEqual((s["codec_name"], s["width"], s["height"], int(s["nb_read_frames"])),
                             ("rawvideo", 640, 360, FRAMES), s)
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def assert_no_object(self, out):
        key = self.object_key(out)
        objs = [o for o in BED.list_objects(BUCKET, prefix=key) if o["Key"] == key]
        self.assertEqual(objs, [], "a failed/canceled job left an object at %s" % key)

    def open_uploads(self):
        return BED.list_multipart_uploads(BUCKET, prefix=self.prefix + "/")

    def assert_clean(self, srv, healthy=True, children_of=None, timeout=10):
        """No open upload under the prefix, no temp file, no child, no
        zombie; /health answers with no part buffer in use."""
        uploads = self.open_uploads()
        self.assertEqual(uploads, [], "multipart uploads left open:\n%s\nserver log tail:\n%s"
                         % (json.dumps(uploads, indent=1), srv.log_text()[-3000:]))
        deadline = time.time() + timeout
        while True:
            problems = []
            t = mt.tmp_entries(srv)
            if t:
                problems.append("left in .cap-tmp: %r" % t)
            if srv.proc.poll() is None:
                kids = {p: st for p, st in mt.children(srv.proc.pid).items()}
                if kids:
                    problems.append("children (incl. zombies): %r" % kids)
            if children_of:
                g = mt.group_members(children_of)
                if g:
                    problems.append("ffmpeg's group still alive: %r" % g)
            if healthy:
                h = mt.health(srv)
                if h.get("status") != "ok" or h.get("storage", {}).get("kind") != "s3":
                    problems.append("health: %r" % h)
                elif h["storage"].get("buffers_in_use") != 0:
                    problems.append("part buffers still in use: %r" % h["storage"])
            if not problems:
                return
            if time.time() >= deadline:
                self.fail("not clean: " + "; ".join(problems))
            time.sleep(0.1)

    def wait_bed_part(self, out, number, timeout=15):
        """Waits for the bed's proxy log to show UploadPart number of the
        object (Swift logs a request once it has answered it; the query
        is logged percent-encoded)."""
        pat = re.compile(r"PUT /%s/%s(\?|%%3F)partNumber(=|%%3D)%d(&|%%26)\S* HTTP/1\.[01] 200 "
                         % (re.escape(BUCKET), re.escape(self.object_key(out)), number))
        deadline = time.time() + timeout
        while True:
            text = BED.log("proxy")
            for line in text.splitlines():
                if pat.search(line):
                    return line
            if time.time() >= deadline:
                self.fail("the bed never logged part %d of %s; log tail:\n%s"
                          % (number, out, text[-2000:]))
            time.sleep(0.02)

    def wait_ffmpeg(self, srv, job_id):
        deadline = time.time() + 15
        while True:
            for l in mt.job_started_lines(srv, job_id):
                if l.get("program", "").endswith("ffmpeg") and isinstance(l.get("pid"), int):
                    return l["pid"]
            if time.time() >= deadline:
                self.fail("no ffmpeg job.started for %s:\n%s" % (job_id, srv.log_text()[-2000:]))
            time.sleep(0.02)

    def finished_line(self, srv, job_id):
        return captools.wait_for(srv, lambda l: l.get("event") == "job.finished"
                                 and l.get("job_id") == job_id, timeout=10)

    def part_pred(self, out, number):
        path = "/%s/%s" % (BUCKET, self.object_key(out))
        return lambda r: r.is_part and r.part_number == number and r.path == path

    # --- 1. the S3 server stopped mid-upload and back within the budget -----

    def test_1_outage_within_retry_budget_succeeds(self):
        # Eight retries at 100 ms doubling (with jitter 0.5x..1.5x): 12.7 s
        # at the least before a request gives up, more than the bed needs
        # to stop and start (about 5 s); four would give up after ~1.5 s.
        srv = self.start_server("outage-short", settings={"--storage-retries": "8"})
        out = "out/short.nut"
        jid = self.submit(srv, "raw-paced", out)
        self.wait_bed_part(out, 1)
        self.assertNotIn(self.job(srv, jid)["status"], mt.TERMINAL)
        port = BED.port
        t_down = time.time()
        BED.stop(keep_dir=True)
        time.sleep(1.0)
        during = self.job(srv, jid)
        self.assertNotIn(during["status"], ("failed", "canceled"), during)
        BED.start()
        t_up = time.time()
        self.assertEqual(BED.port, port, "the bed came back on another port")
        job = mt.poll_job(srv, jid, timeout=90)
        self.assertEqual(job["status"], "succeeded",
                         "job failed although the outage (%.1f s) was within the retry budget: "
                         "%r\nlog tail:\n%s" % (t_up - t_down, job, srv.log_text()[-3000:]))
        # It really went through the outage: still running when the bed was back.
        self.assertGreater(jtime(job["finished_at"]), t_up - 0.5, job)
        self.assert_object_good(out, job)
        self.assert_clean(srv)

    # --- 2. an outage longer than the budget --------------------------------

    def test_2_outage_beyond_retry_budget_fails_cleanly(self):
        # Four retries at 100 ms: a request gives up within ~2.3 s of
        # connection refusals; the bed stays down 7 s (then ~4 s to start).
        # The AbortMultipartUpload the failure calls for cannot succeed while
        # the bed is down; the upload must still be gone soon after it is
        # back.  The orphan sweep runs every 5 s and aborts uploads older
        # than 60 s (the minimum), so that an upload the server leaves open
        # is reported together with whether the sweep at least catches it.
        srv = self.start_server("outage-long", extra=["--orphan-sweep-s", "5",
                                                      "--orphan-age-s", "60"])
        out = "out/long.nut"
        jid = self.submit(srv, "raw-paced", out)
        ff = self.wait_ffmpeg(srv, jid)
        self.wait_bed_part(out, 1)
        port = BED.port
        BED.stop(keep_dir=True)
        t_down = time.time()
        try:
            job = mt.poll_job(srv, jid, timeout=10)
            t_failed = time.time()
            self.assertEqual(job["status"], "failed", job)
            err = job.get("error") or {}
            self.assertEqual(err.get("code"), "storage_error", job)
            self.assertRegex(err.get("message", ""), re.compile(r"connect|network|refused", re.I),
                             "the message does not say what went wrong: %r" % err)
            fin = self.finished_line(srv, jid)
            self.assertEqual(fin.get("code"), "storage_error", fin)
            # ffmpeg killed, temp files gone, the server answers: all while the
            # bed is still down.
            mt.wait_group_gone(ff, timeout=10)
            deadline = time.time() + 10
            while (mt.children(srv.proc.pid) or mt.tmp_entries(srv)) and time.time() < deadline:
                time.sleep(0.1)
            self.assertEqual(mt.children(srv.proc.pid), {})
            self.assertEqual(mt.tmp_entries(srv), [])
            self.assertEqual(mt.group_members(ff), {})
            h = mt.health(srv)
            self.assertEqual(h["storage"]["buffers_in_use"], 0, h)
            rest = 7 - (time.time() - t_down)
            if rest > 0:
                time.sleep(rest)
        finally:
            BED.start()
        t_up = time.time()
        self.assertEqual(BED.port, port)
        # "No path leaves an upload open": once the bed is back the upload the
        # job had started must go, without waiting for it to age into the
        # orphan sweep (whose default age is a day).
        strict = 30
        deadline = t_up + strict
        uploads = self.open_uploads()
        while uploads and time.time() < deadline:
            time.sleep(0.5)
            uploads = self.open_uploads()
        if uploads:
            report = ["job %s failed %.1f s into a %.1f s outage; %d s after the bed was back "
                      "the upload it had started is still open:" % (jid, t_failed - t_down,
                                                                     t_up - t_down, strict),
                      json.dumps(uploads, indent=1)]
            # Is the sweep at least the safety net?  Wait for the upload to be
            # 60 s old plus two sweeps.
            swept_by = None
            init = min(jtime(u["Initiated"]) for u in uploads)
            end = init + 60 + 2 * 5 + 5
            while time.time() < end:
                time.sleep(1)
                if not self.open_uploads():
                    swept_by = time.time()
                    break
            sweeps = [l for l in captools.complete_log_lines(srv.log_text())
                      if l.get("event", "").startswith("storage.")]
            if swept_by:
                report.append("the orphan sweep aborted it %.0f s after it was initiated "
                              "(--orphan-age-s 60)" % (swept_by - init))
            else:
                report.append("not even the orphan sweep (--orphan-age-s 60, every 5 s) "
                              "aborted it within %.0f s of its initiation" % (end - init))
            report.append("storage log lines:\n" + "\n".join(json.dumps(l) for l in sweeps[-12:]))
            self.fail("\n".join(report))
        # The storage works again.
        jid2 = self.submit(srv, "raw-fast", "out/after.nut")
        job2 = mt.poll_job(srv, jid2, timeout=60)
        self.assertEqual(job2["status"], "succeeded", job2)
        self.assert_no_object(out)
        self.assert_clean(srv)

    # --- 3. resets and delays through a TCP proxy ---------------------------

    def test_3_proxy_resets_and_delays_are_retried(self):
        proxy = self.start_proxy()
        srv = self.start_server("proxy-reset", endpoint=proxy.endpoint)
        out = "out/reset.nut"
        complete_path = "/%s/%s" % (BUCKET, self.object_key(out))
        # Part 2 reset 1 MiB into its body, part 5 a few bytes before its end,
        # part 7 after its whole body (before the answer); the Complete reset
        # mid-body; the first new connection after part 3 began reset 200 kB
        # in, whatever it carries.
        proxy.reset_request(self.part_pred(out, 2), after_body=MIB)
        proxy.reset_request(self.part_pred(out, 5), after_body=PART - 1000)
        proxy.reset_request(self.part_pred(out, 7), after_body=PART)
        proxy.reset_request(lambda r: r.kind == "complete" and r.path == complete_path,
                            after_body=40)
        # Every answer held 300 ms per chunk.  (Holding only every other
        # connection's made the delay depend on which connections curl
        # reused: when the resets above hit exactly those, nothing was
        # delayed and the check below failed for no fault of the server.)
        proxy.set_delay(300, direction="s2c")
        jid = self.submit(srv, "raw-fast", out)
        proxy.wait_request(self.part_pred(out, 3), timeout=20)
        proxy.reset_next(1, after_bytes=200000)
        job = mt.poll_job(srv, jid, timeout=90)
        summary = proxy.summary()
        note("\nresets:", json.dumps(summary, indent=1))
        self.assertEqual(job["status"], "succeeded",
                         "job failed under resets: %r\nproxy: %s\nlog tail:\n%s"
                         % (job, json.dumps(summary, indent=1), srv.log_text()[-3000:]))
        self.assert_object_good(out, job)
        reqs = proxy.requests_of()
        faulted = [r for r in reqs if r.fault == "reset"]
        self.assertGreaterEqual(len(faulted), 4, summary)
        # Every request hit by a reset was sent again, whole, later.
        for r in faulted:
            again = [x for x in reqs if x.seq > r.seq and x.method == r.method and
                     x.target.split("?")[0] == r.target.split("?")[0] and
                     x.part_number == r.part_number and x.kind == r.kind and x.complete]
            self.assertTrue(again, "%r was never retried; proxy: %s" % (r, summary))
        parts = [r for r in reqs if r.kind == "part"]
        self.assertGreaterEqual(len(parts) - 10, 3, "expected at least 3 part retries: %s" % summary)
        self.assertEqual(len([r for r in reqs if r.kind == "create"]), 1, summary)
        self.assertGreater(summary["delayed_chunks"], 0, summary)
        # The four resets aimed at requests (parts 2, 5, 7 and the Complete)
        # always fire; the one aimed at the next new connection fires only if
        # curl opens one, which depends on connection reuse.
        self.assertGreaterEqual(summary["resets"], 4, summary)
        self.assert_clean(srv)

    # --- 4. a stalled connection: the low-speed timeout retries it ----------

    def test_4_stall_hits_low_speed_timeout_and_is_retried(self):
        proxy = self.start_proxy()
        srv = self.start_server("proxy-stall", endpoint=proxy.endpoint,
                                settings={"--storage-low-speed-s": "2"})
        out = "out/stall.nut"
        # curl measures the speed over the last 5 s or so: a transfer that
        # stops dead is seen below 1 KiB/s only once the last burst has left
        # that window, so the stall is noticed after about 5 + 2 s.  A 15 s
        # stall tells that apart from the proxy letting go.
        stall = 15
        # Part 3 stalls 2 MiB into its body; part 6 after its whole body, so
        # its answer is what never comes.
        proxy.stall_request(self.part_pred(out, 3), seconds=stall, after_body=2 * MIB)
        proxy.stall_request(self.part_pred(out, 6), seconds=stall, after_body=PART)
        t0 = time.time()
        jid = self.submit(srv, "raw-fast", out)
        job = mt.poll_job(srv, jid, timeout=90)
        summary = proxy.summary()
        note("\nstalls:", json.dumps(summary, indent=1))
        self.assertEqual(job["status"], "succeeded",
                         "job failed under stalls: %r\nproxy: %s\nlog tail:\n%s"
                         % (job, json.dumps(summary, indent=1), srv.log_text()[-3000:]))
        self.assert_object_good(out, job)
        reqs = proxy.requests_of()
        stalled = [r for r in reqs if r.fault == "stall"]
        self.assertEqual(len(stalled), 2, summary)
        for r in stalled:
            again = [x for x in reqs if x.seq > r.seq and x.is_part and
                     x.part_number == r.part_number and x.complete]
            self.assertTrue(again, "%r never retried; %s" % (r, summary))
            waited = again[0].started - r.fault_at
            note("part %d stalled, retried %.2f s later" % (r.part_number, waited))
            # 2 s below 1 KiB/s (after curl's averaging window), then a
            # backoff of 50..150 ms: well before the stall would have ended.
            self.assertGreater(waited, 1.5, "retried before the low-speed time: %r" % r)
            self.assertLess(waited, stall - 1, "not retried by the low-speed timeout: %r %.1f s"
                            % (r, waited))
        self.assertLess(time.time() - t0, 30)
        self.assert_clean(srv)

    # --- 5. ffmpeg killed mid-stream ----------------------------------------

    def test_5_ffmpeg_killed_mid_stream_aborts_upload(self):
        proxy = self.start_proxy()
        srv = self.start_server("ffmpeg-killed", endpoint=proxy.endpoint)
        out = "out/killed.nut"
        jid = self.submit(srv, "raw-paced", out)
        ff = self.wait_ffmpeg(srv, jid)
        proxy.wait_request(self.part_pred(out, 2), timeout=20, body_at_least=MIB)
        self.assertEqual(mt._stat(ff)[0], "ffmpeg")
        t_kill = time.time()
        os.kill(ff, signal.SIGKILL)
        job = mt.poll_job(srv, jid, timeout=30)
        note("killed ffmpeg %.1f s after submit; job failed %.2f s later"
             % (t_kill - self.t_start, time.time() - t_kill))
        self.assertEqual(job["status"], "failed", job)
        self.assertEqual((job.get("error") or {}).get("code"), "ffmpeg_failed", job)
        self.finished_line(srv, jid)
        time.sleep(0.5)  # let any request the server still sends arrive
        summary = proxy.summary()
        self.assertEqual(self.open_uploads(), [],
                         "upload left open after ffmpeg was killed; proxy: %s" % summary)
        self.assertGreaterEqual(summary["by_kind"].get("abort", 0), 1, summary)
        self.assertEqual(summary["by_kind"].get("complete", 0), 0,
                         "the truncated output was completed: %s" % summary)
        self.assert_no_object(out)
        self.assert_clean(srv, children_of=ff)

    def test_5b_ffmpeg_killed_before_first_part_stores_nothing(self):
        # Killed while its output is still under one part: the output would
        # go as one PUT at EOF.  A failed job must not store what ffmpeg
        # wrote before it died (that would replace the object at the key
        # with a truncated one).  Three kills at different points of the
        # first fraction of a second.
        proxy = self.start_proxy()
        srv = self.start_server("ffmpeg-killed-early", endpoint=proxy.endpoint)
        seen = []
        for i, delay in enumerate((0.1, 0.2, 0.4)):
            out = "out/early-%d.nut" % i
            jid = self.submit(srv, "raw-paced", out)
            ff = self.wait_ffmpeg(srv, jid)
            time.sleep(delay)
            n0 = len(proxy.requests_of())
            os.kill(ff, signal.SIGKILL)
            job = mt.poll_job(srv, jid, timeout=30)
            self.assertEqual(job["status"], "failed", job)
            self.assertEqual((job.get("error") or {}).get("code"), "ffmpeg_failed", job)
            fin = self.finished_line(srv, jid)
            mt.wait_group_gone(ff, timeout=10)
            time.sleep(0.3)
            seen.append((out, delay, fin["ts"],
                         [r for r in proxy.requests_of()[n0:] if r.kind in ("put", "part",
                                                                            "create", "complete")]))
        stored = {o["Key"]: o["Size"] for o in BED.list_objects(BUCKET, prefix=self.prefix + "/out/")}
        report = "\n".join("%s (killed %.1f s after ffmpeg started; job.finished at %s): %s; "
                           "requests %r" % (out, d, ts, "STORED %d bytes" % stored[self.object_key(out)]
                                            if self.object_key(out) in stored else "no object", reqs)
                           for out, d, ts, reqs in seen)
        note("\nearly kills:\n" + report)
        self.assertEqual(stored, {}, "failed jobs (ffmpeg_failed) stored their truncated output:\n"
                         + report)
        self.assert_clean(srv)

    # --- 6. cancel mid-upload -----------------------------------------------

    def test_6a_cancel_while_parts_in_flight(self):
        proxy = self.start_proxy()
        srv = self.start_server("cancel-running", endpoint=proxy.endpoint)
        out = "out/cancel.nut"
        jid = self.submit(srv, "raw-paced", out)
        ff = self.wait_ffmpeg(srv, jid)
        proxy.wait_request(self.part_pred(out, 2), timeout=20, body_at_least=MIB)
        st, h, j = mt.delete_job(srv, jid)
        self.assertEqual((st, j.get("status")), (200, "canceled"), j)
        job = mt.poll_job(srv, jid, timeout=30)
        self.assertEqual(job["status"], "canceled", job)
        mt.wait_group_gone(ff, timeout=10)
        time.sleep(0.5)
        summary = proxy.summary()
        self.assertEqual(self.open_uploads(), [], "upload left open after cancel: %s" % summary)
        self.assertGreaterEqual(summary["by_kind"].get("abort", 0), 1, summary)
        self.assert_no_object(out)
        self.assert_clean(srv, children_of=ff)

    def test_6b_cancel_while_uploading_tail(self):
        # Parts crawl (every 64 kB chunk to the bed held 15 ms: ~1.2 s a
        # part) so ffmpeg is done long before the upload: status uploading.
        proxy = self.start_proxy()
        srv = self.start_server("cancel-uploading", endpoint=proxy.endpoint)
        out = "out/cancel-tail.nut"
        proxy.set_delay(15, direction="c2s")
        jid = self.submit(srv, "raw-fast", out)
        ff = self.wait_ffmpeg(srv, jid)
        mt.wait_status(srv, jid, ("uploading",), timeout=30)
        self.assertEqual(mt._stat(ff), None, "ffmpeg still there while uploading")
        st, h, j = mt.delete_job(srv, jid)
        self.assertEqual((st, j.get("status")), (200, "canceled"), j)
        job = mt.poll_job(srv, jid, timeout=30)
        self.assertEqual(job["status"], "canceled", job)
        proxy.set_delay(0)
        time.sleep(0.5)
        summary = proxy.summary()
        self.assertEqual(self.open_uploads(), [], "upload left open after cancel: %s" % summary)
        self.assertGreaterEqual(summary["by_kind"].get("abort", 0), 1, summary)
        self.assertEqual(summary["by_kind"].get("complete", 0), 0, summary)
        self.assert_no_object(out)
        self.assert_clean(srv)

    # --- 7. server SIGTERM mid-upload ---------------------------------------

    def test_7_sigterm_mid_upload_aborts_and_exits_0(self):
        # A grace far shorter than the render: the drain must cancel it.
        # (test_drain.py covers the other side: jobs finishing in the grace.)
        proxy = self.start_proxy()
        srv = self.start_server("sigterm", endpoint=proxy.endpoint,
                                extra=["--shutdown-grace-ms", "300"])
        out = "out/term.nut"
        jid = self.submit(srv, "raw-paced", out)
        ff = self.wait_ffmpeg(srv, jid)
        proxy.wait_request(self.part_pred(out, 2), timeout=20, body_at_least=MIB)
        t0 = time.time()
        rc = srv.stop(signal.SIGTERM, timeout=20)
        took = time.time() - t0
        summary = proxy.summary()
        note("SIGTERM to exit: %.2f s; proxy %s" % (took, summary["by_kind"]))
        self.assertEqual(rc, 0, "exit %r after SIGTERM; log tail:\n%s" % (rc, srv.log_text()[-3000:]))
        self.assertLess(took, 15)
        self.assertEqual(mt.group_members(ff), {}, "ffmpeg outlived the server")
        self.assertEqual(self.open_uploads(), [],
                         "upload left open after SIGTERM; proxy: %s\nlog tail:\n%s"
                         % (summary, srv.log_text()[-3000:]))
        self.assertGreaterEqual(summary["by_kind"].get("abort", 0), 1, summary)
        self.assertEqual(summary["by_kind"].get("complete", 0), 0, summary)
        self.assert_no_object(out)
        self.assertEqual(mt.tmp_entries(srv), [])
        fin = self.finished_line(srv, jid)
        # Stopped by the server, not by its client: failed, retryable.
        self.assertEqual((fin.get("state"), fin.get("code")), ("failed", "interrupted"), fin)
        self.assert_clean(srv, healthy=False, children_of=ff)


if __name__ == "__main__":
    unittest.main(verbosity=2)
