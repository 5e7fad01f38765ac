"""The seed's flow end to end, on real parts (issue 6).

workerd (from npm) runs the reference registry Durable Object and the
example pipeline Worker.  Two cap-servers register themselves with the
registry and send heartbeats.  Caddy (Debian; tls internal, bound to
127.0.0.1, admin off) terminates TLS in front of each cap-server as Funnel
would, setting X-Forwarded-For.  The S3 test server (Swift + s3api) holds
the media.  The pipeline Worker resolves ffmpeg-render, calls /exec over
HTTPS through Caddy and gets the key; the object in the bucket is checked
with ffprobe.

Then: with one server busy the registry resolves the other; a draining
server is skipped at once; a killed server drops out after the TTL and
the Worker's calls go to the survivor; the rate limit keys on the address
Caddy forwarded, not on Caddy's.

The cap-servers listen on ::1 when the machine has IPv6 loopback, so that
Caddy (dialing ::1) and the Worker (reaching Caddy on 127.0.0.1) have
different addresses; without it the rate-limit case is skipped.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
import workerdtools as wt  # noqa: E402
from capsrv import TOKEN, Server, terminate  # noqa: E402
from s3bed import S3Bed  # noqa: E402
from storagetools import have_bed  # noqa: E402

CADDY = shutil.which("caddy")
BUCKET = "fleet"
# Servers beat every second.  Five seconds of TTL drop a server that
# missed four beats: a busy two-core machine running ASan builds delays a
# beat, it does not lose four in a row.
TTL_S = 5
HEARTBEAT_S = 1


def have_v6():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


V6 = have_v6()
HOST = "::1" if V6 else "127.0.0.1"


def missing():
    if not have_bed():
        return "S3 bed not installed (scripts/setup-deps.sh test)"
    if CADDY is None:
        return "caddy not installed (scripts/setup-deps.sh test)"
    return None


class FleetServer(Server):
    """A cap-server on HOST (::1 where it exists)."""

    def connect(self, source=None, timeout=5):
        return socket.create_connection((HOST, self.port), timeout=timeout)


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Caddy:
    """Caddy in front of the cap-servers: one HTTPS site per server on
    localhost, certificates from its internal CA."""

    def __init__(self, sites):
        self.tmp = tempfile.mkdtemp(prefix="fleet-caddy-")
        self.env = dict(os.environ, HOME=self.tmp, XDG_DATA_HOME=os.path.join(self.tmp, "data"),
                        XDG_CONFIG_HOME=os.path.join(self.tmp, "config"))
        upstream = "[::1]" if V6 else "127.0.0.1"
        blocks = ["{\n\tadmin off\n\tskip_install_trust\n\tlocal_certs\n}\n"]
        for public, private in sites:
            blocks.append("https://localhost:%d {\n\tbind 127.0.0.1\n\ttls internal\n"
                          "\treverse_proxy %s:%d\n}\n" % (public, upstream, private))
        self.path = os.path.join(self.tmp, "Caddyfile")
        with open(self.path, "w", encoding="utf-8") as f:
            f.write("\n".join(blocks))
        self.log = open(os.path.join(self.tmp, "caddy.log"), "wb")
        self.proc = subprocess.Popen([CADDY, "run", "--config", self.path, "--adapter", "caddyfile"],
                                     env=self.env, cwd=self.tmp, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ca = os.path.join(self.tmp, "data", "caddy", "pki", "authorities", "local", "root.crt")
        deadline = time.time() + 30
        while not (os.path.exists(self.ca) and self.listening(sites[0][0])):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("caddy did not start:\n" + self.log_text())
            time.sleep(0.1)

    @staticmethod
    def listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.tmp, "caddy.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self):
        terminate(self.proc)
        self.log.close()
        shutil.rmtree(self.tmp, True)


BED = CAD = WD = TMP = PRESETS = CLIP = None
PORTS = {}      # name -> (public Caddy port, private cap-server port)
SERVERS = {}    # name -> FleetServer


def start_server(name, extra=()):
    public, private = PORTS[name]
    env = dict(BED.env(), REGISTRY_TOKEN=wt.REGISTER_TOKEN)
    args = mt.HIGH + ["--host", HOST, "--port", str(private), "--storage", "s3://%s/media" % BUCKET,
                      "--presets", PRESETS, "--pool-cpu", "1", "--queue-max", "4"]
    if name in ("a", "b"):
        args += ["--registry-url", WD.registry_url(), "--public-host", "localhost",
                 "--public-port", str(public), "--heartbeat-s", str(HEARTBEAT_S)]
    srv = FleetServer(args + list(extra), env=env)
    SERVERS[name] = srv
    return srv


def setUpModule():
    global BED, CAD, WD, TMP, PRESETS, CLIP
    if missing():
        return
    TMP = tempfile.mkdtemp(prefix="fleet-test-")
    try:
        BED = S3Bed().start()
        BED.make_bucket(BUCKET)
        CLIP = mt.clip(duration=2.0, size="640x360")
        BED.put_object(BUCKET, "media/uploads/raw.mp4", path=CLIP)
        PRESETS = mt.presets_file(TMP, {"slow": mt.small_preset(realtime=True)}, include_builtin=True)
        family, host = (socket.AF_INET6, "::1") if V6 else (socket.AF_INET, "127.0.0.1")
        for name in ("a", "b", "c"):
            PORTS[name] = (free_port(), free_port(family, host))
        CAD = Caddy([PORTS[n] for n in ("a", "b", "c")])
        WD = wt.Workerd(ttl_s=TTL_S, capability_token=TOKEN, provider_scheme="https", ca_pem=CAD.ca,
                        poll_wait_s=30)
        for name in ("a", "b"):
            start_server(name)
        start_server("c", ["--rate-limit", "3"])
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    for srv in SERVERS.values():
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        srv._close_pipes()
    for thing in (WD, CAD):
        if thing is not None:
            (thing.close if thing is WD else thing.stop)()
    if BED is not None:
        BED.stop()
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def lines(srv, event):
    return [l for l in captools.complete_log_lines(srv.log_text()) if l.get("event") == event]


def ran_on(job_id):
    """Names of the servers whose logs show the job starting."""
    return sorted(n for n, s in SERVERS.items()
                  if any(l.get("job_id") == job_id for l in lines(s, "job.queued")))


def candidates(capability="ffmpeg-render"):
    st, h, j = WD.resolve(capability)
    if st != 200:
        return []
    return [c["port"] for c in j["candidates"]]


def wait_candidates(want, timeout=15, capability="ffmpeg-render"):
    deadline = time.time() + timeout
    while True:
        got = candidates(capability)
        if got == want:
            return got
        if time.time() > deadline:
            raise AssertionError("candidates %r, want %r" % (got, want))
        time.sleep(0.1)


def pub(name):
    return PORTS[name][0]


@unittest.skipIf(missing(), missing() or "")
class Fleet(unittest.TestCase):
    maxDiff = None

    def render(self, out, preset="720p", **kw):
        body = {"input_key": "uploads/raw.mp4", "output_key": out, "preset": preset}
        body.update(kw)
        return WD.post_pipeline("/render", body)

    def probe(self):
        return WD.post_pipeline("/probe", {"input_key": "uploads/raw.mp4"})

    def test_1_worker_renders_through_registry_and_caddy(self):
        # Both servers registered themselves; either may win.
        wait_candidates_set = {pub("a"), pub("b")}
        deadline = time.time() + 15
        while set(candidates()) != wait_candidates_set:
            self.assertLess(time.time(), deadline, "servers did not register: %r" % candidates())
            time.sleep(0.1)
        t0 = time.time()
        st, h, res = self.render("renders/final.mp4")
        took = time.time() - t0
        self.assertEqual(st, 200, res)
        self.assertEqual(res["r2_key"], "renders/final.mp4")
        self.assertIsInstance(res["duration_ms"], int)
        where = ran_on(res["job_id"])
        self.assertEqual(len(where), 1, where)
        # The request reached cap-server through Caddy over TLS: Caddy's
        # address is the peer and it forwarded the Worker's.
        srv = SERVERS[where[0]]
        req = [l for l in lines(srv, "http.request") if l.get("path") == "/exec"][-1]
        self.assertEqual(req["status"], 200, req)
        self.assertEqual(req["peer"], HOST, req)
        self.assertEqual(req["remote"], "127.0.0.1", req)
        self.assertEqual(req["forwarded_for"], "127.0.0.1", req)
        # The object in the bucket is the render.
        path = os.path.join(TMP, "final.mp4")
        BED.get_object(BUCKET, "media/renders/final.mp4", path)
        probe = mt.ffprobe(path)
        video = mt.streams_of(probe, "video")[0]
        self.assertEqual(video["height"], 720)
        self.assertAlmostEqual(float(probe["format"]["duration"]), 2.0, delta=0.15)
        print("\n  e2e render through Worker -> registry -> Caddy -> cap-server: %.2f s" % took,
              file=sys.stderr)

    def test_2_busy_server_is_passed_over(self):
        # Fill a's only slot with a slow job sent to it directly.
        a = SERVERS["a"]
        st, h, j = mt.exec_(a, mt.render_body("uploads/raw.mp4", "renders/slow-a.mp4", "slow",
                                              **{"async": True}))
        self.assertEqual(st, 202, j)
        mt.wait_status(a, j["job_id"], ("running",))
        # Its next heartbeat says so: b resolves first.
        deadline = time.time() + 10
        while not candidates() or candidates()[0] != pub("b"):
            self.assertLess(time.time(), deadline, "busy a still resolved first: %r" % candidates())
            time.sleep(0.1)
        for i in range(3):
            st, h, res = self.probe()
            self.assertEqual(st, 200, res)
            self.assertEqual(ran_on(res["job_id"]), ["b"])
        mt.poll_job(a, j["job_id"], timeout=60)

    def test_3_draining_server_is_skipped_at_once(self):
        b = SERVERS["b"]
        wait_candidates_set = {pub("a"), pub("b")}
        deadline = time.time() + 15
        while set(candidates()) != wait_candidates_set:
            self.assertLess(time.time(), deadline, "both should be live: %r" % candidates())
            time.sleep(0.1)
        # b drains with a job running: it deregisters at once, well within
        # the TTL, and the Worker's calls go to a.
        st, h, j = mt.exec_(b, mt.render_body("uploads/raw.mp4", "renders/slow-b.mp4", "slow",
                                              **{"async": True}))
        self.assertEqual(st, 202, j)
        mt.wait_status(b, j["job_id"], ("running",))
        b.proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        wait_candidates([pub("a")], timeout=TTL_S - 0.5)
        self.assertLess(time.time() - t0, TTL_S, "draining server not dropped before the TTL")
        for i in range(2):
            st, h, res = self.probe()
            self.assertEqual(st, 200, res)
            self.assertEqual(ran_on(res["job_id"]), ["a"])
        # The drain finishes b's job and b exits cleanly.
        self.assertEqual(b.proc.wait(60), 0, b.log_text()[-2000:])
        b._close_pipes()
        fin = [l for l in lines(b, "job.finished") if l.get("job_id") == j["job_id"]]
        self.assertEqual(fin[0]["state"], "succeeded", fin)
        self.assertTrue(lines(b, "registry.deregistered")[0]["ok"])
        # b comes back.
        start_server("b")
        deadline = time.time() + 15
        while set(candidates()) != {pub("a"), pub("b")}:
            self.assertLess(time.time(), deadline, "restarted b did not register")
            time.sleep(0.1)

    def test_4_killed_server_drops_out_after_ttl(self):
        a = SERVERS["a"]
        a.proc.kill()
        a.proc.wait()
        a._close_pipes()
        t0 = time.time()
        # Until the TTL runs out a is still a candidate; the kit's attempt
        # there fails (Caddy answers 502) and the call goes to b anyway.
        st, h, res = self.probe()
        self.assertEqual(st, 200, res)
        self.assertEqual(ran_on(res["job_id"]), ["b"])
        wait_candidates([pub("b")], timeout=TTL_S + 5)
        gone = time.time() - t0
        # Its last beat came at most a period (and a slow request) before
        # the kill, so it stays at least TTL - 2 periods.
        self.assertGreater(gone, TTL_S - 2 * HEARTBEAT_S,
                           "a dropped before its heartbeats could have expired")
        for i in range(2):
            st, h, res = self.probe()
            self.assertEqual(st, 200, res)
            self.assertEqual(ran_on(res["job_id"]), ["b"])
        start_server("a")

    @unittest.skipUnless(V6, "no IPv6 loopback: Caddy and the Worker would share 127.0.0.1")
    def test_5_rate_limit_sees_forwarded_address(self):
        c = SERVERS["c"]
        public = pub("c")
        url = "https://localhost:%d/exec" % public
        body = json.dumps({"capability": "ffprobe", "input_key": "uploads/none.mp4"})

        def via_caddy():
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", CAD.ca,
                                "-H", "Authorization: Bearer " + TOKEN, "-H",
                                "Content-Type: application/json", "--data-binary", body, url],
                               stdout=subprocess.PIPE, timeout=30)
            return int(r.stdout)

        codes = [via_caddy() for _ in range(4)]
        # 3 a minute for the forwarded client: the fourth is refused...
        self.assertEqual(codes, [404, 404, 404, 429], codes)
        # ...but Caddy's own address (the TCP peer) has its own bucket.
        st, h, j = mt.exec_(c, {"capability": "ffprobe", "input_key": "uploads/none.mp4"})
        self.assertEqual((st, j.get("code")), (404, "input_not_found"), j)
        limited = [l for l in lines(c, "http.request") if l.get("status") == 429]
        self.assertEqual([(l["remote"], l["peer"]) for l in limited], [("127.0.0.1", "::1")])


if __name__ == "__main__":
    unittest.main(verbosity=2)
