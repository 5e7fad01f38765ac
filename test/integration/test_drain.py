"""Graceful drain, service-manager notification and atomic reload (issue 5).

Drain (real ffmpeg jobs streaming into the S3 bed, Swift + s3api):
- SIGTERM with jobs running: /exec answers 503 draining with Retry-After,
  /health says draining, job polls (new connections included) are served,
  the jobs finish and are stored whole, the server exits 0 within the grace;
- a grace shorter than the jobs: the running and the queued ones are
  stopped and fail as interrupted (retryable: the client did not cancel
  them), no multipart upload stays open, no object, no child; exit 0;
- a second SIGTERM stops them at once, the same way.
Notify: READY=1 once listening and STOPPING=1 on SIGTERM arrive as
datagrams on $NOTIFY_SOCKET (path and abstract names), as systemd expects.
Reload: SIGHUP reads the config file (log level), the token file and the
presets file again and applies them together; any broken file keeps the
whole previous state.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
from capsrv import Server  # noqa: E402
from s3bed import S3Bed  # noqa: E402
from storagetools import have_bed, raw_preset, raw_reference  # noqa: E402

BUCKET = "cap-drain"
BED = None
TMP = None
CLIP = None
REF = None
PRESETS = None


def setUpModule():
    global BED, TMP, CLIP, REF, PRESETS
    TMP = tempfile.mkdtemp(prefix="drain-test-")
    if not have_bed():
        return
    BED = S3Bed().start()
    BED.make_bucket(BUCKET)
    # 3 s of 640x360 at 25 fps: 75 raw frames, about 26 MB, so every output
    # is a multipart upload of 5 MiB parts; "raw-paced" takes 3 s of real
    # time, so a job is mid-upload when the signal comes.
    CLIP = mt.clip(duration=3.0, size="640x360", rate=25, audio=False)
    REF = raw_reference(CLIP)
    PRESETS = mt.presets_file(TMP, {"raw-paced": raw_preset("realtime=speed=1")})


def tearDownModule():
    if BED is not None:
        BED.stop()
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def lines(srv, event=None):
    out = captools.complete_log_lines(srv.log_text())
    return [l for l in out if event is None or l.get("event") == event]


@unittest.skipUnless(have_bed(), "S3 bed not installed: scripts/s3-testbed.sh install")
class DrainWithJobs(unittest.TestCase):
    def start(self, prefix, grace_ms, pool=2):
        self.prefix = prefix
        BED.put_object(BUCKET, prefix + "/in/clip.mp4", path=CLIP)
        args = ["--storage", "s3://%s/%s" % (BUCKET, prefix), "--presets", PRESETS,
                "--pool-cpu", str(pool), "--part-size", "5242880",
                "--shutdown-grace-ms", str(grace_ms)]
        srv = mt.start(args, env=BED.env())
        self.addCleanup(mt.stop, srv)
        captools.wait_for(srv, lambda l: l.get("event") == "storage.ready", timeout=15)
        return srv

    def submit(self, srv, out):
        st, h, j = mt.exec_(srv, mt.render_body("in/clip.mp4", out, "raw-paced", **{"async": True}))
        self.assertEqual(st, 202, j)
        return j["job_id"]

    def wait_running(self, srv, job_id):
        return mt.wait_ffmpeg_pid(srv, job_id, timeout=20)

    def open_uploads(self):
        return BED.list_multipart_uploads(BUCKET, prefix=self.prefix + "/")

    def objects(self, prefix):
        return {o["Key"]: o["Size"] for o in BED.list_objects(BUCKET, prefix=prefix)}

    def finished(self, srv):
        return {l["job_id"]: l for l in lines(srv, "job.finished")}

    def test_1_running_jobs_finish_within_grace(self):
        srv = self.start("finish", 60000)
        ids = [self.submit(srv, "out/a.nut"), self.submit(srv, "out/b.nut")]
        pgids = [self.wait_running(srv, j) for j in ids]
        # Uploads are under way: no storage connection (nor any other server
        # descriptor) leaks into the children.
        time.sleep(0.8)
        for pid in pgids:
            # A downloaded input is the one file handed over (as fd 3,
            # which ffmpeg opens again as /dev/fd/3); a streamed one is
            # read over loopback HTTP and nothing is shared.
            shared = {n: t for n, t in mt.shared_fds(srv.proc.pid, pid).items()
                      if not (t.startswith(os.path.join(mt.data_dir(srv), ".cap-tmp", ""))
                              and t.endswith(".in"))}
            self.assertEqual(shared, {})
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        drain = captools.wait_for(srv, lambda l: l.get("event") == "server.draining", timeout=5)
        self.assertEqual((drain.get("jobs_running"), drain.get("grace_ms")), (2, 60000), drain)

        # The server still listens: health says draining, new work is
        # refused with a hint to retry elsewhere, polls are served.
        st, h, j = mt.call(srv, "GET", "/health", token=None)
        self.assertEqual((st, j.get("status"), j.get("draining")), (200, "draining", True), j)
        st, h, j = mt.exec_(srv, mt.render_body("in/clip.mp4", "out/c.nut", "raw-paced"))
        self.assertEqual((st, j.get("code")), (503, "draining"), j)
        self.assertTrue(h.get("retry-after", "").isdigit(), h)
        st, h, j = mt.get_job(srv, ids[0])
        self.assertEqual(st, 200, j)
        self.assertIn(j.get("status"), ("running", "uploading", "succeeded"), j)
        for jid in ids:
            st, h, j = mt.get_job(srv, jid, wait=30)
            self.assertEqual((st, j.get("status")), (200, "succeeded"), j)

        rc = srv.proc.wait(30)
        took = time.time() - t0
        self.assertEqual(rc, 0, srv.log_text()[-2000:])
        self.assertLess(took, 30)
        stopping = lines(srv, "server.stopping")
        self.assertEqual([l.get("reason") for l in stopping], ["jobs_done"], stopping)
        self.assertEqual(lines(srv)[-1].get("event"), "server.stop")
        objs = self.objects(self.prefix + "/out/")
        self.assertEqual(objs, {self.prefix + "/out/a.nut": REF[0], self.prefix + "/out/b.nut": REF[0]})
        path = os.path.join(TMP, "a.nut")
        BED.get_object(BUCKET, self.prefix + "/out/a.nut", path)
        with open(path, "rb") as f:
            self.assertEqual(hashlib.md5(f.read()).hexdigest(), REF[1])
        self.assertEqual(self.open_uploads(), [])
        for g in pgids:
            self.assertEqual(mt.group_members(g), {})

    def test_2_short_grace_cancels_running_and_queued(self):
        srv = self.start("cancel", 1500)
        ids = [self.submit(srv, "out/%d.nut" % i) for i in range(3)]
        pgids = [self.wait_running(srv, j) for j in ids[:2]]
        st, h, j = mt.get_job(srv, ids[2])
        self.assertEqual(j.get("status"), "queued", j)
        # Let the first parts reach the bucket, so there is an upload to abort.
        time.sleep(1.0)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.proc.wait(20)
        took = time.time() - t0
        self.assertEqual(rc, 0, srv.log_text()[-3000:])
        self.assertGreaterEqual(took, 1.2, "exited before the grace ran out")
        self.assertLess(took, 12)
        stopping = lines(srv, "server.stopping")
        self.assertEqual([(l.get("reason"), l.get("jobs_canceled")) for l in stopping],
                         [("grace_expired", 3)], stopping)
        fin = self.finished(srv)
        self.assertEqual({jid: (fin.get(jid, {}).get("state"), fin.get(jid, {}).get("code"))
                          for jid in ids},
                         {jid: ("failed", "interrupted") for jid in ids}, fin)
        self.assertEqual(self.open_uploads(), [], srv.log_text()[-3000:])
        self.assertEqual(self.objects(self.prefix + "/out/"), {})
        for g in pgids:
            self.assertEqual(mt.group_members(g), {})
        self.assertEqual(mt.tmp_entries(srv), [])

    def test_3_second_sigterm_cancels_at_once(self):
        srv = self.start("twice", 120000, pool=1)
        jid = self.submit(srv, "out/x.nut")
        pgid = self.wait_running(srv, jid)
        srv.proc.send_signal(signal.SIGTERM)
        captools.wait_for(srv, lambda l: l.get("event") == "server.draining", timeout=5)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.proc.wait(15)
        self.assertEqual(rc, 0)
        self.assertLess(time.time() - t0, 10)
        self.assertEqual([l.get("reason") for l in lines(srv, "server.stopping")], ["signal"])
        fin = self.finished(srv)[jid]
        self.assertEqual((fin.get("state"), fin.get("code")), ("failed", "interrupted"), fin)
        self.assertEqual(self.open_uploads(), [])
        self.assertEqual(mt.group_members(pgid), {})


class Notify(unittest.TestCase):
    def listen(self, abstract):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "cap-notify-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            s.bind("\0" + name)
            addr = "@" + name
        else:
            addr = os.path.join(tempfile.mkdtemp(prefix="notify-", dir=TMP), "notify.sock")
            s.bind(addr)
        s.settimeout(15)
        self.addCleanup(s.close)
        return s, addr

    def messages(self, sock, want, timeout=15):
        got = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            sock.settimeout(max(0.1, deadline - time.time()))
            try:
                data = sock.recv(4096).decode()
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            got.append(fields)
            if want in fields:
                return fields, got
        self.fail("no %s in %r" % (want, got))

    def check(self, abstract):
        sock, addr = self.listen(abstract)
        srv = Server(env={"NOTIFY_SOCKET": addr})
        try:
            ready, _ = self.messages(sock, "READY")
            self.assertEqual(ready["READY"], "1")
            self.assertEqual(ready.get("MAINPID"), str(srv.proc.pid))
            self.assertIn(str(srv.port), ready.get("STATUS", ""))
            # READY only once the socket accepts: /health answers right away.
            st, h, j = mt.call(srv, "GET", "/health", token=None, timeout=5)
            self.assertEqual(st, 200)
            srv.proc.send_signal(signal.SIGTERM)
            stopping, _ = self.messages(sock, "STOPPING")
            self.assertEqual(stopping["STOPPING"], "1")
            self.assertEqual(srv.proc.wait(10), 0)
        finally:
            srv.__exit__()

    def test_path_socket(self):
        self.check(False)

    def test_abstract_socket(self):
        self.check(True)

    def test_absent_or_bad_socket_is_harmless(self):
        for value in ("", "relative/path", "/nonexistent/dir/sock"):
            with self.subTest(value=value):
                srv = Server(env={"NOTIFY_SOCKET": value})
                try:
                    st, h, j = mt.call(srv, "GET", "/health", token=None, timeout=5)
                    self.assertEqual(st, 200)
                    self.assertEqual(srv.stop(signal.SIGTERM, timeout=10), 0)
                finally:
                    srv.__exit__()


OLD = "old-token-0123456789abcdef0123456789"
NEW = "new-token-0123456789abcdef0123456789"
NEWER = "newer-token-0123456789abcdef01234567"


class Reload(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="reload-", dir=TMP)
        self.cfg = os.path.join(self.dir, "config.json")
        self.tokens = os.path.join(self.dir, "tokens")
        self.presets = os.path.join(self.dir, "presets.json")
        captools.write_file(self.tokens, "ops:%s\n" % OLD, 0o600)
        self.write_presets("tiny-a")
        self.write_config("info")
        self.srv = Server(args=["--config", self.cfg], token=None)
        self.addCleanup(self.srv.__exit__)
        captools.wait_for(self.srv, lambda l: l.get("event") == "presets.loaded", timeout=15)

    def write_config(self, level, raw=None):
        text = raw if raw is not None else json.dumps(
            {"log_level": level, "token_file": self.tokens, "presets": self.presets})
        with open(self.cfg, "w") as f:
            f.write(text)

    def write_presets(self, name, raw=None):
        if raw is not None:
            with open(self.presets, "w") as f:
                f.write(raw)
            return
        mt.presets_file(self.dir, {name: mt.small_preset()}, name="presets.json")

    def status(self, token):
        st, h, b = captools.exec_post(self.srv, token=token)
        return st

    def presets_now(self):
        return sorted(mt.preset_names(mt.health(self.srv)["presets"]["available"]))

    def sighup(self, event):
        n = len(lines(self.srv, event))
        self.srv.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        while len(lines(self.srv, event)) <= n:
            self.assertLess(time.time(), deadline, "no %s after SIGHUP:\n%s"
                            % (event, self.srv.log_text()[-2000:]))
            time.sleep(0.05)
        return lines(self.srv, event)[-1]

    def http_lines_now(self):
        return len(lines(self.srv, "http.request"))

    def test_reload_is_all_or_nothing(self):
        self.assertNotEqual(self.status(OLD), 401)
        self.assertEqual(self.presets_now(), ["tiny-a"])
        debug = len([l for l in lines(self.srv) if l.get("level") == "debug"])
        self.assertEqual(debug, 0, "debug lines at log level info")

        # All three good: all three change together.
        captools.write_file(self.tokens, "ops:%s\n" % NEW, 0o600)
        self.write_presets("tiny-b")
        self.write_config("debug")
        line = self.sighup("config.reload")
        self.assertEqual((line.get("ok"), line.get("log_level")), (True, "debug"), line)
        self.assertEqual(self.status(OLD), 401)
        self.assertNotEqual(self.status(NEW), 401)
        self.assertEqual(self.presets_now(), ["tiny-b"])
        # The preset probe of the reload logged at the new level.
        self.assertTrue([l for l in lines(self.srv, "presets.probe") if l.get("level") == "debug"])

        # One broken file, the others good: nothing changes.
        for broken, event in (("presets", "presets.reload"), ("config", "config.reload"),
                              ("tokens", "auth.reload")):
            with self.subTest(broken=broken):
                captools.write_file(self.tokens, "ops:%s\n" % NEWER, 0o600)
                self.write_presets("tiny-c")
                self.write_config("warn")
                if broken == "presets":
                    self.write_presets(None, raw="{not json")
                elif broken == "config":
                    self.write_config(None, raw='{"log_level": "loud"}')
                else:
                    captools.write_file(self.tokens, "ops:short\n", 0o600)
                line = self.sighup(event)
                self.assertIs(line.get("ok"), False, line)
                self.assertTrue(line.get("error"), line)
                self.assertNotEqual(self.status(NEW), 401, "old tokens must stay")
                self.assertEqual(self.status(NEWER), 401, "a partial reload let a new token in")
                self.assertEqual(self.presets_now(), ["tiny-b"])
                self.assertIsNone(self.srv.proc.poll())

        # Everything good again: the log level drops to warn, so requests
        # (logged at info) are no longer logged.
        captools.write_file(self.tokens, "ops:%s\n" % NEWER, 0o600)
        self.write_presets("tiny-c")
        self.write_config("warn")
        line = self.sighup("config.reload")
        self.assertEqual((line.get("ok"), line.get("log_level")), (True, "warn"), line)
        self.assertNotEqual(self.status(NEWER), 401)
        self.assertEqual(self.presets_now(), ["tiny-c"])
        before = self.http_lines_now()
        for _ in range(3):
            mt.call(self.srv, "GET", "/health", token=None)
        time.sleep(0.3)
        self.assertEqual(self.http_lines_now(), before, "info lines logged at level warn")


if __name__ == "__main__":
    unittest.main(verbosity=2)
