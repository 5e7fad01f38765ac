#!/usr/bin/env python3
"""The Cloudflare side (packaging/cloudflare) on a real Workers runtime.

workerd (the open-source Workers runtime, pinned in
packaging/cloudflare/package.json) serves the reference registry Worker with
its SQLite-backed Durable Object and the example pipeline Worker, which uses
capkit.js to run jobs on real cap-servers.  Everything is real HTTP; the only
thing done by hand is what cap-server's own registrar would do (register and
heartbeat), so that each test chooses the loads it needs.

Registry (the API of packaging/cloudflare/README.md):
- /health needs no token; every other route answers 401 with
  WWW-Authenticate: Bearer without the right token, and the register token
  does not open resolve, nor the resolve token register;
- register answers the normalised identity and ttl_s, upserts (one row per
  capability, provider, port), and resolve returns the provider with its
  https URL and every live candidate;
- resolve orders by load (most free slots, then fewest queued), follows each
  heartbeat, honours exclude, and drops a draining provider at once;
- deregister removes one or all capabilities and is idempotent;
- a provider that stops heartbeating expires after PROVIDER_TTL_S: resolve
  drops it, its heartbeat answers 404 not_registered, and the Durable
  Object's alarm deletes it even if nobody asks for its capability;
- bad JSON is 400 invalid_json, bad fields 400 bad_request, a body over
  16 KiB 413 (with and without Content-Length), unknown routes 404, wrong
  methods 405 with Allow;
- registrations survive a workerd restart (localDisk storage).

Kit (pipeline Worker -> capkit -> two real cap-servers over plain HTTP):
- a probe and a render run on the least loaded provider and return its
  result; with wait 0 the server answers 202 and the kit long-polls the
  Location to the result;
- a request the server refuses (invalid key, unknown preset) and a job that
  fails (ffmpeg cannot read the input) surface at once: exactly one
  POST /exec reached the servers;
- queue_full on the best provider, a draining provider (SIGTERM with a job
  running) and an unreachable one each move the job to the next provider,
  and the Idempotency-Key is the same on every provider;
- no live provider is 503 no_provider; the pipeline refuses callers without
  its token.

Needs node and npm (workerd is installed by packaging/cloudflare/setup.sh
when missing); skips with a message when they are not there.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
import workerdtools as wt  # noqa: E402
from capsrv import TOKEN, Server  # noqa: E402

WHY_SKIP = None
try:
    _bin, WHY_SKIP = wt.ensure_workerd()
except RuntimeError as e:  # setup.sh failed: that is a failure, not a skip
    raise SystemExit(str(e))


def skip_without_workerd(cls):
    return unittest.skipIf(WHY_SKIP is not None, WHY_SKIP or "")(cls)


def wait_until(pred, timeout, what, interval=0.2):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("not within %ss: %s" % (timeout, what))
        time.sleep(interval)


class Checks(unittest.TestCase):
    def assertError(self, answer, status, code):
        """answer: (status, headers, json) of an error in the registry's shape."""
        st, h, j = answer
        self.assertEqual(st, status, answer)
        self.assertIsInstance(j, dict, answer)
        self.assertEqual(j.get("code"), code, answer)
        self.assertIsInstance(j.get("error"), str, answer)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), answer)


# ---------------------------------------------------------------------------
# Registry

@skip_without_workerd
class RegistryTest(Checks):
    @classmethod
    def setUpClass(cls):
        cls.w = wt.Workerd(ttl_s=30)

    @classmethod
    def tearDownClass(cls):
        cls.w.close()

    def tearDown(self):
        # Each test uses its own capability names, but clean up anyway so
        # that one failing test does not change what the next one sees.
        st, _, j = self.w.get_registry("/capabilities")
        for r in (j or {}).get("registrations", []):
            self.w.deregister(r["provider"], r["port"])

    def test_health_needs_no_token(self):
        st, h, j = self.w.get_registry("/health", token=None)
        self.assertEqual((st, j), (200, {"status": "ok"}))

    def test_tokens(self):
        w = self.w
        reg = {"capability": "auth-cap", "provider": "auth.example.ts.net", "port": 443}
        posts = [("/capabilities/register", reg), ("/capabilities/heartbeat", {"provider": "auth.example.ts.net", "port": 443}),
                 ("/capabilities/deregister", {"provider": "auth.example.ts.net", "port": 443})]
        gets = ["/capabilities/resolve?capability=auth-cap", "/capabilities"]
        wrong = [None, "", "not-the-token-at-all-0000000000", wt.REGISTER_TOKEN + "x",
                 wt.REGISTER_TOKEN[:-1], wt.RESOLVE_TOKEN]
        for path, body in posts:
            for tok in wrong:
                a = w.post_registry(path, body, token=tok)
                self.assertError(a, 401, "unauthorized")
                self.assertEqual(a[1].get("www-authenticate"), "Bearer", a)
                self.assertNotIn(wt.REGISTER_TOKEN, json.dumps(a[2]))
            # Another scheme with the right secret is not a bearer token.
            a = wt.request(w.registry_port, "POST", path, body,
                           headers={"Authorization": "Basic " + wt.REGISTER_TOKEN})
            self.assertError(a, 401, "unauthorized")
        for path in gets:
            for tok in [None, "", wt.RESOLVE_TOKEN + "x", wt.REGISTER_TOKEN]:
                a = w.get_registry(path, token=tok)
                self.assertError(a, 401, "unauthorized")
                self.assertEqual(a[1].get("www-authenticate"), "Bearer", a)
        # Nothing was registered by the refused requests...
        self.assertError(w.resolve("auth-cap"), 404, "no_provider")
        # ...and the right tokens work (the scheme name is case-insensitive).
        self.assertEqual(w.post_registry("/capabilities/register", reg)[0], 200)
        a = wt.request(w.registry_port, "GET", "/capabilities/resolve?capability=auth-cap",
                       headers={"Authorization": "bearer " + wt.RESOLVE_TOKEN})
        self.assertEqual(a[0], 200, a)

    def test_register_and_resolve(self):
        w = self.w
        st, _, j = w.register("cap-a", "Box-1.Tailnet.ts.net.", 443, version="0.1.0",
                              presets=["1080p", "720p"], pools={"cpu": {"slots": 2}})
        self.assertEqual(st, 200, j)
        self.assertEqual(j, {"ok": True, "capability": "cap-a", "provider": "box-1.tailnet.ts.net",
                             "port": 443, "ttl_s": 30})
        self.assertEqual(w.register("cap-a", "box-2.tailnet.ts.net", 8443)[0], 200)
        # Registering again refreshes: still one row per (capability, provider, port).
        self.assertEqual(w.register("cap-a", "box-1.tailnet.ts.net", 443, version="0.1.1")[0], 200)
        st, _, lst = w.get_registry("/capabilities")
        rows = [r for r in lst["registrations"] if r["capability"] == "cap-a"]
        self.assertEqual(sorted((r["provider"], r["port"]) for r in rows),
                         [("box-1.tailnet.ts.net", 443), ("box-2.tailnet.ts.net", 8443)])
        self.assertEqual([r["version"] for r in rows if r["port"] == 443], ["0.1.1"])
        self.assertTrue(all(r["live"] and not r["draining"] for r in rows), rows)

        st, _, r = w.resolve("cap-a")
        self.assertEqual(st, 200, r)
        self.assertEqual(r["capability"], "cap-a")
        urls = {c["provider"]: c["url"] for c in r["candidates"]}
        self.assertEqual(urls, {"box-1.tailnet.ts.net": "https://box-1.tailnet.ts.net",
                                "box-2.tailnet.ts.net": "https://box-2.tailnet.ts.net:8443"})
        best = r["candidates"][0]
        self.assertEqual((r["provider"], r["port"], r["url"], r["load"]),
                         (best["provider"], best["port"], best["url"], best["load"]))
        for c in r["candidates"]:
            self.assertIsInstance(c["age_s"], (int, float))
            self.assertGreaterEqual(c["age_s"], 0)
        self.assertError(w.resolve("cap-unknown"), 404, "no_provider")

    def test_least_loaded_first(self):
        w = self.w
        a, b = ("a.ts.net", 443), ("b.ts.net", 443)
        for p in (a, b):
            self.assertEqual(w.register("cap-load", *p)[0], 200)

        def order():
            st, _, r = w.resolve("cap-load")
            self.assertEqual(st, 200, r)
            self.assertEqual(r["provider"], r["candidates"][0]["provider"])
            return [c["provider"] for c in r["candidates"]]

        w.heartbeat(*a, load=wt.load(slots=2, running=2))
        w.heartbeat(*b, load=wt.load(slots=2, running=1))
        self.assertEqual(order(), ["b.ts.net", "a.ts.net"])
        w.heartbeat(*a, load=wt.load(slots=4, running=1))
        self.assertEqual(order(), ["a.ts.net", "b.ts.net"])
        # The same free slots: fewer queued wins.
        w.heartbeat(*a, load=wt.load(slots=4, running=2, queued=1))
        w.heartbeat(*b, load=wt.load(slots=3, running=2, queued=0))
        self.assertEqual(order(), ["b.ts.net", "a.ts.net"])
        st, _, r = w.resolve("cap-load")
        self.assertEqual(r["load"]["running"], 2)
        self.assertEqual(r["load"]["slots"], 3)
        # exclude drops the named providers; excluding all is no_provider.
        st, _, r = w.resolve("cap-load", exclude=["b.ts.net:443"])
        self.assertEqual([c["provider"] for c in r["candidates"]], ["a.ts.net"])
        self.assertError(w.resolve("cap-load", exclude=["b.ts.net:443", "A.ts.net:443"]), 404, "no_provider")
        self.assertError(w.resolve("cap-load", exclude=["b.ts.net"]), 400, "bad_request")

    def test_draining_drops_at_once(self):
        w = self.w
        for p in ("d1.ts.net", "d2.ts.net"):
            w.register("cap-drain", p, 443)
            w.heartbeat(p, 443, load=wt.load())
        st, _, j = w.heartbeat("d1.ts.net", 443, load=wt.load(draining=True))
        self.assertEqual((st, j), (200, {"ok": True, "ttl_s": 30}))
        st, _, r = w.resolve("cap-drain")
        self.assertEqual([c["provider"] for c in r["candidates"]], ["d2.ts.net"])
        rows = {x["provider"]: x for x in w.get_registry("/capabilities")[2]["registrations"]
                if x["capability"] == "cap-drain"}
        self.assertTrue(rows["d1.ts.net"]["draining"])
        self.assertFalse(rows["d1.ts.net"]["live"])
        self.assertFalse(rows["d2.ts.net"]["draining"])
        w.heartbeat("d2.ts.net", 443, load=wt.load(draining=True))
        self.assertError(w.resolve("cap-drain"), 404, "no_provider")
        # A heartbeat that no longer drains brings it back.
        w.heartbeat("d1.ts.net", 443, load=wt.load())
        self.assertEqual([c["provider"] for c in w.resolve("cap-drain")[2]["candidates"]], ["d1.ts.net"])

    def test_heartbeat_covers_every_capability(self):
        w = self.w
        w.register("cap-h1", "multi.ts.net", 443)
        w.register("cap-h2", "multi.ts.net", 443)
        w.heartbeat("multi.ts.net", 443, load=wt.load(slots=8, running=3))
        for cap in ("cap-h1", "cap-h2"):
            self.assertEqual(w.resolve(cap)[2]["load"]["running"], 3)
        self.assertError(w.heartbeat("unknown.ts.net", 443, load=wt.load()), 404, "not_registered")
        self.assertError(w.heartbeat("multi.ts.net", 444, load=wt.load()), 404, "not_registered")

    def test_deregister(self):
        w = self.w
        for cap in ("cap-x", "cap-y", "cap-z"):
            w.register(cap, "gone.ts.net", 443)
        w.register("cap-x", "stays.ts.net", 443)
        st, _, j = w.deregister("gone.ts.net", 443, capability="cap-x")
        self.assertEqual((st, j), (200, {"ok": True, "removed": 1}))
        self.assertEqual([c["provider"] for c in w.resolve("cap-x")[2]["candidates"]], ["stays.ts.net"])
        self.assertEqual(w.resolve("cap-y")[0], 200)
        self.assertEqual(w.deregister("gone.ts.net", 443)[2], {"ok": True, "removed": 2})
        self.assertEqual(w.deregister("gone.ts.net", 443)[2], {"ok": True, "removed": 0})
        self.assertError(w.resolve("cap-y"), 404, "no_provider")
        self.assertError(w.heartbeat("gone.ts.net", 443), 404, "not_registered")

    def test_bad_requests(self):
        w = self.w
        reg = "/capabilities/register"
        for body in (b"{", b"not json", b"", b"[1,2]", b"null", b"\xff\xfe{}"):
            self.assertError(w.post_registry(reg, body), 400, "invalid_json")
        good = {"capability": "cap-bad", "provider": "ok.ts.net", "port": 443}
        for change in ({"capability": None}, {"capability": ""}, {"capability": "Bad Cap"},
                       {"provider": None}, {"provider": "bad host!"}, {"provider": "a..b"},
                       {"provider": "x" * 300}, {"port": 0}, {"port": 70000}, {"port": "443"},
                       {"port": 443.5}, {"presets": "1080p"}, {"presets": [1]}, {"pools": [1]},
                       {"version": 1}):
            body = dict(good)
            body.update(change)
            body = {k: v for k, v in body.items() if v is not None}
            self.assertError(w.post_registry(reg, body), 400, "bad_request")
        self.assertError(w.heartbeat("ok.ts.net", 443, load="busy"), 400, "bad_request")
        self.assertError(w.get_registry("/capabilities/resolve"), 400, "bad_request")
        self.assertError(w.resolve("cap-bad", exclude=["ok.ts.net:notaport"]), 400, "bad_request")
        # Nothing invalid was stored.
        self.assertError(w.resolve("cap-bad"), 404, "no_provider")

        big = json.dumps(dict(good, version="v" * 17000)).encode()
        self.assertError(wt.request(w.registry_port, "POST", reg, big, token=wt.REGISTER_TOKEN),
                         413, "body_too_large")
        self.assertError(wt.request(w.registry_port, "POST", reg, big, token=wt.REGISTER_TOKEN,
                                    chunked=True), 413, "body_too_large")
        # The limit is on the body, not on JSON validity: 16 KiB passes the
        # size check (and is then refused for its oversized field).
        edge = json.dumps(dict(good, version="v" * 100)).encode()
        edge = edge[:-1] + b" " * (16384 - len(edge)) + b"}"
        self.assertEqual(len(edge), 16384)
        self.assertError(wt.request(w.registry_port, "POST", reg, edge, token=wt.REGISTER_TOKEN),
                         400, "bad_request")

        self.assertError(w.get_registry("/nope"), 404, "not_found")
        self.assertError(w.get_registry("/capabilities/resolvex?capability=a"), 404, "not_found")
        a = w.get_registry(reg)
        self.assertError(a, 405, "method_not_allowed")
        self.assertEqual(a[1].get("allow"), "POST")
        a = w.post_registry("/capabilities/resolve?capability=a", {}, token=wt.RESOLVE_TOKEN)
        self.assertError(a, 405, "method_not_allowed")
        self.assertEqual(a[1].get("allow"), "GET, HEAD")

    def test_state_survives_restart(self):
        w = self.w
        w.register("cap-persist", "persist.ts.net", 443, version="9.9.9")
        w.heartbeat("persist.ts.net", 443, load=wt.load(slots=5, running=1))
        w.restart()
        st, _, r = w.resolve("cap-persist")
        self.assertEqual(st, 200, r)
        self.assertEqual((r["provider"], r["load"]["slots"]), ("persist.ts.net", 5))
        self.assertEqual(r["candidates"][0]["version"], "9.9.9")
        self.assertEqual(w.heartbeat("persist.ts.net", 443, load=wt.load())[0], 200)


@skip_without_workerd
class ExpiryTest(Checks):
    """PROVIDER_TTL_S=2: expiry is observable in seconds.  Deadlines are
    generous (the machine may be loaded); what is asserted is the order of
    events, not their timing."""

    @classmethod
    def setUpClass(cls):
        cls.w = wt.Workerd(ttl_s=2)

    @classmethod
    def tearDownClass(cls):
        cls.w.close()

    def test_silent_provider_expires(self):
        w = self.w
        self.assertEqual(w.register("cap-ttl", "silent.ts.net", 443)[2]["ttl_s"], 2)
        w.register("cap-ttl", "alive.ts.net", 443)
        names = lambda: [c["provider"] for c in w.resolve("cap-ttl")[2]["candidates"]]  # noqa: E731
        self.assertEqual(sorted(names()), ["alive.ts.net", "silent.ts.net"])

        def keep_alive():
            # What cap-server does: heartbeat, and register again when the
            # registry has forgotten it (a stalled test machine may let even
            # this provider expire; that must not fail the test).
            if w.heartbeat("alive.ts.net", 443, load=wt.load())[0] == 404:
                self.assertEqual(w.register("cap-ttl", "alive.ts.net", 443)[0], 200)

        def silent_gone():
            keep_alive()
            return "silent.ts.net" not in names()
        wait_until(silent_gone, 30, "the silent provider to expire", interval=0.5)
        self.assertError(w.heartbeat("silent.ts.net", 443, load=wt.load()), 404, "not_registered")
        # Registering again revives it.
        keep_alive()
        self.assertEqual(w.register("cap-ttl", "silent.ts.net", 443)[0], 200)
        self.assertEqual(sorted(names()), ["alive.ts.net", "silent.ts.net"])

    def test_alarm_deletes_without_any_request(self):
        w = self.w
        w.register("cap-alarm", "forgotten.ts.net", 443)

        def listed():
            rows = w.get_registry("/capabilities")[2]["registrations"]
            return [r for r in rows if r["capability"] == "cap-alarm"]
        self.assertEqual(len(listed()), 1)
        # Nothing resolves cap-alarm or heartbeats for it: only the Durable
        # Object's alarm can remove the row (listing does not delete).
        wait_until(lambda: listed() == [], 30, "the alarm to delete the expired row", interval=0.5)


# ---------------------------------------------------------------------------
# Kit: the pipeline Worker against real cap-servers

@skip_without_workerd
class KitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cf-kit-test-")
        cls.presets = mt.presets_file(cls.tmp, {
            "tiny": mt.small_preset(height=120),
            # Takes about as long as its input plays, using almost no CPU: a
            # job that is reliably still running while the test acts.
            "slow": mt.small_preset(height=120, realtime=True),
        }, include_builtin=True)
        cls.clip = mt.clip(duration=1.0)
        cls.long_clip = mt.clip(duration=10.0, size="160x120", audio=False)
        cls.w = wt.Workerd(ttl_s=30, capability_token=TOKEN, provider_scheme="http")

    @classmethod
    def tearDownClass(cls):
        cls.w.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        # A: one cpu slot and no queue, so a second render is queue_full; a
        # long drain grace, so that SIGTERM leaves it draining for the whole
        # slow job.  B: defaults.
        self.a = Server(args=mt.HIGH + ["--presets", self.presets, "--pool-cpu", "1",
                                        "--queue-max", "0", "--shutdown-grace-ms", "60000"])
        self.b = Server(args=mt.HIGH + ["--presets", self.presets])
        self.servers = [self.a, self.b]
        for s in self.servers:
            mt.put(s, "uploads/in.mp4", self.clip)
            mt.put(s, "uploads/long.mp4", self.long_clip)
            for cap in ("ffprobe", "ffmpeg-render"):
                self.assertEqual(self.w.register(cap, "localhost", s.port)[0], 200)
        # A is the best provider unless a test says otherwise.
        self.w.heartbeat("localhost", self.a.port, load=wt.load(slots=4, running=0))
        self.w.heartbeat("localhost", self.b.port, load=wt.load(slots=4, running=2))

    def tearDown(self):
        st, _, j = self.w.get_registry("/capabilities")
        for r in (j or {}).get("registrations", []):
            self.w.deregister(r["provider"], r["port"])
        for s in self.servers:
            s.__exit__(None, None, None)

    def execs(self, server):
        return [l for l in captools.http_lines(server) if l.get("path") == "/exec"]

    def exec_log(self, expect):
        """The /exec log lines of A and B once they hold at least expect =
        (count on A, count on B) lines.  cap-server logs a request after
        answering it, so its line may come after the pipeline's answer; any
        request the kit made was answered before the pipeline answered, so
        a short grace after that covers lines still being written."""
        wait_until(lambda: len(self.execs(self.a)) >= expect[0] and len(self.execs(self.b)) >= expect[1],
                   15, "%d and %d /exec log lines" % expect)
        time.sleep(0.5)
        return self.execs(self.a), self.execs(self.b)

    def exec_statuses(self, expect):
        a, b = self.exec_log(expect)
        return [(l["status"], l.get("code")) for l in a], [(l["status"], l.get("code")) for l in b]

    def run_job(self, path, body, **kw):
        return self.w.post_pipeline(path, body, **kw)

    def test_probe_and_render_on_the_least_loaded(self):
        st, _, r = self.run_job("/probe", {"input_key": "uploads/in.mp4"})
        self.assertEqual(st, 200, r)
        self.assertEqual(r["status"], "succeeded")
        self.assertEqual([s["codec_type"] for s in r["probe"]["streams"]].count("video"), 1)
        self.assertAlmostEqual(float(r["probe"]["format"]["duration"]), 1.0, delta=0.2)

        st, _, r = self.run_job("/render", {"input_key": "uploads/in.mp4",
                                            "output_key": "renders/out.mp4", "preset": "tiny"})
        self.assertEqual(st, 200, r)
        self.assertEqual((r["r2_key"], r["preset"], r["status"]), ("renders/out.mp4", "tiny", "succeeded"))
        self.assertIsInstance(r["duration_ms"], int)
        out = os.path.join(mt.data_dir(self.a), "renders", "out.mp4")
        self.assertEqual(mt.streams_of(mt.ffprobe(out), "video")[0]["height"], 120)
        self.assertEqual(os.path.getsize(out), r["bytes"])
        self.assertEqual(self.exec_statuses((2, 0)), ([(200, None), (200, None)], []))

        # Now B is the less loaded one.
        self.w.heartbeat("localhost", self.a.port, load=wt.load(slots=4, running=4))
        st, _, r = self.run_job("/probe", {"input_key": "uploads/in.mp4"})
        self.assertEqual(st, 200, r)
        self.assertEqual(self.exec_statuses((2, 1)), ([(200, None), (200, None)], [(200, None)]))

    def test_ladder_through_the_kit(self):
        """capkit.exec takes output_prefix and returns the ladder's result."""
        st, _, r = self.run_job("/render", {"input_key": "uploads/in.mp4",
                                            "output_prefix": "vod/kit", "preset": "hls-ladder"})
        self.assertEqual(st, 200, r)
        self.assertEqual((r["status"], r["output_prefix"], r["master_key"]),
                         ("succeeded", "vod/kit/", "vod/kit/master.m3u8"))
        # A 320x240 source: every rung is above it, so one rendition at its height.
        self.assertEqual([x["name"] for x in r["renditions"]], ["240p"], r)
        self.assertEqual(r["dropped"], ["1080p", "720p", "480p", "360p"])
        self.assertEqual(r["audio"]["playlist_key"], "vod/kit/audio/index.m3u8")
        root = os.path.join(mt.data_dir(self.a), "vod", "kit")
        with open(os.path.join(root, "master.m3u8")) as f:
            master = f.read()
        self.assertIn("RESOLUTION=320x240", master)
        self.assertIn("240p/index.m3u8", master)
        files = [os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns]
        self.assertEqual(len(files), r["objects"], files)
        self.assertEqual(sum(os.path.getsize(p) for p in files), r["bytes"])
        self.assertNotIn("mpd_key", r)
        # dash-ladder through the kit: the MPD's key comes back with the master's.
        st, _, r = self.run_job("/render", {"input_key": "uploads/in.mp4",
                                            "output_prefix": "vod/kitd", "preset": "dash-ladder"})
        self.assertEqual(st, 200, r)
        self.assertEqual((r["status"], r["master_key"], r["mpd_key"]),
                         ("succeeded", "vod/kitd/master.m3u8", "vod/kitd/manifest.mpd"), r)
        with open(os.path.join(mt.data_dir(self.a), "vod", "kitd", "manifest.mpd")) as f:
            mpd = f.read()
        self.assertIn('<Representation id="240p"', mpd)
        self.assertIn('width="320" height="240"', mpd)
        # A ladder preset with output_key is the caller's mistake: passed on, not retried.
        st, _, r = self.run_job("/render", {"input_key": "uploads/in.mp4",
                                            "output_key": "vod/kit.m3u8", "preset": "hls-ladder"})
        self.assertEqual((st, r["code"]), (400, "invalid_field"), r)

    def test_accepted_then_long_poll(self):
        for n, (path, body) in enumerate( (("/probe", {"input_key": "uploads/in.mp4", "wait": 0}),
                           ("/render", {"input_key": "uploads/in.mp4", "output_key": "renders/p.mp4",
                                        "preset": "tiny", "wait": 0})), 1):
            st, _, r = self.run_job(path, body)
            self.assertEqual(st, 200, r)
            self.assertEqual(r["status"], "succeeded")
            job = r["job_id"]
            self.assertEqual(self.exec_statuses((n, 0))[0][-1], (202, None))

            def polls():
                return [l for l in captools.http_lines(self.a)
                        if l.get("path") == "/jobs/" + job and l.get("method") == "GET"]
            wait_until(lambda: polls() and polls()[-1]["status"] == 200, 15, "the successful poll's log line")
        self.assertTrue(os.path.exists(os.path.join(mt.data_dir(self.a), "renders", "p.mp4")))
        self.assertEqual(self.exec_log((2, 0))[1], [])

    def test_refused_request_is_not_retried(self):
        cases = [({"input_key": "../etc/passwd", "output_key": "renders/x.mp4", "preset": "tiny"}, 400, "invalid_key"),
                 ({"input_key": "uploads/in.mp4", "output_key": "renders/x.mp4", "preset": "nope"}, 400, "unknown_preset"),
                 ({"input_key": "uploads/missing.mp4", "output_key": "renders/x.mp4", "preset": "tiny"}, 404, "input_not_found")]
        for n, (body, status, code) in enumerate(cases, 1):
            st, _, r = self.run_job("/render", body)
            self.assertEqual((st, r.get("code")), (status, code), r)
            self.assertFalse(r["retryable"])
            self.assertEqual(r["provider"], "localhost:%d" % self.a.port)
            a, b = self.exec_log((n, 0))
            self.assertEqual((len(a), len(b)), (n, 0), (a, b))

    def test_failed_job_is_not_retried(self):
        for s in self.servers:
            mt.put(s, "uploads/bad.mp4", content=b"this is not a video\n" * 100)
        st, _, r = self.run_job("/render", {"input_key": "uploads/bad.mp4",
                                            "output_key": "renders/bad.mp4", "preset": "tiny"})
        self.assertEqual((st, r.get("code")), (502, "ffmpeg_failed"), r)
        # Through the long-poll path too: the job fails while polled.
        st, _, r = self.run_job("/render", {"input_key": "uploads/bad.mp4",
                                            "output_key": "renders/bad2.mp4", "preset": "tiny", "wait": 0})
        self.assertEqual((st, r.get("code")), (502, "ffmpeg_failed"), r)
        self.assertEqual(self.exec_statuses((2, 0)), ([(502, "ffmpeg_failed"), (202, None)], []))

    def start_slow_job(self, server, out="renders/slow.mp4"):
        st, _, j = mt.exec_(server, mt.render_body("uploads/long.mp4", out, "slow", **{"async": True}))
        self.assertEqual(st, 202, j)
        wait_until(lambda: mt.get_job(server, j["job_id"])[2]["status"] == "running", 30,
                   "the slow job to run")
        return j["job_id"]

    def test_queue_full_moves_to_the_next_provider(self):
        job = self.start_slow_job(self.a)
        st, _, r = self.run_job("/render", {"input_key": "uploads/in.mp4",
                                            "output_key": "renders/q.mp4", "preset": "tiny"})
        self.assertEqual(st, 200, r)
        self.assertEqual(self.exec_statuses((2, 1)), ([(202, None), (429, "queue_full")], [(200, None)]))
        self.assertTrue(os.path.exists(os.path.join(mt.data_dir(self.b), "renders", "q.mp4")))
        mt.delete_job(self.a, job)

    def test_draining_provider_is_skipped_with_the_same_key(self):
        self.start_slow_job(self.a)
        self.a.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: mt.call(self.a, "GET", "/health", token=None)[2]["draining"], 30, "A to drain")
        key = "pipeline-test-key-%d" % os.getpid()
        st, _, r = self.run_job("/probe", {"input_key": "uploads/in.mp4", "idempotency_key": key})
        self.assertEqual(st, 200, r)
        self.assertEqual(self.exec_statuses((2, 1)), ([(202, None), (503, "draining")], [(200, None)]))
        # B got the caller's key: the same key and body there is the same job.
        st, _, again = mt.exec_(self.b, mt.probe_body("uploads/in.mp4"), headers={"Idempotency-Key": key})
        self.assertEqual((st, again["job_id"]), (200, r["job_id"]), again)
        # A finishes its job and exits cleanly.
        self.assertEqual(self.a.proc.wait(60), 0)

    def test_unreachable_provider_is_skipped(self):
        dead = captools.free_port()
        for cap in ("ffprobe", "ffmpeg-render"):
            self.w.register(cap, "localhost", dead)
        self.w.heartbeat("localhost", dead, load=wt.load(slots=64))
        self.assertEqual(self.w.resolve("ffprobe")[2]["port"], dead)
        st, _, r = self.run_job("/probe", {"input_key": "uploads/in.mp4"})
        self.assertEqual(st, 200, r)
        self.assertEqual(self.exec_statuses((1, 0)), ([(200, None)], []))

    def test_no_provider_and_pipeline_auth(self):
        st, _, r = self.run_job("/probe", {"input_key": "uploads/in.mp4"}, token=None)
        self.assertEqual((st, r.get("code")), (401, "unauthorized"))
        st, _, r = self.run_job("/probe", {"input_key": "uploads/in.mp4"}, token=wt.RESOLVE_TOKEN)
        self.assertEqual((st, r.get("code")), (401, "unauthorized"))
        for s in self.servers:
            self.w.deregister("localhost", s.port)
        st, _, r = self.run_job("/probe", {"input_key": "uploads/in.mp4"})
        self.assertEqual((st, r.get("code"), r.get("retryable")), (503, "no_provider", True), r)
        self.assertEqual(self.exec_log((0, 0)), ([], []))


if __name__ == "__main__":
    unittest.main(verbosity=2)
