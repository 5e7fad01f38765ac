"""The registry client in cap-server (issue 6): registration of every
capability with the server's public name and port, heartbeats carrying the
load, registering again when the registry forgot the server, deregistering
on drain; an outage never blocks serving or jobs and is logged once when it
starts and once when it ends.

The registry here is a real HTTP listener (a Python http.server thread
speaking the registry API of packaging/cloudflare/README.md) that records
what it receives and can be told to fail; the reference registry itself,
on workerd, is exercised by test_cloudflare.py and test_fleet.py.
"""
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
from capsrv import TOKEN  # noqa: E402

REG_TOKEN = "registry-token-0123456789abcdef0123456789"
PROVIDER = "box.tailnet-test.ts.net"


class Registry:
    """A registry listener: records requests; mode says how it answers."""

    def __init__(self, port=0):
        self.requests = []
        self.mode = "ok"          # ok | fail | forget
        self.lock = threading.Lock()
        reg = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with reg.lock:
                    reg.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                         "type": self.headers.get("Content-Type"), "body": body,
                                         "t": time.time()})
                    mode = reg.mode
                if mode == "fail":
                    status, out = 500, {"error": "broken", "code": "internal"}
                elif mode == "forget" and self.path == "/capabilities/heartbeat":
                    status, out = 404, {"error": "unknown provider", "code": "not_registered"}
                    reg.mode = "ok"
                else:
                    status, out = 200, {"ok": True, "ttl_s": 30}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def of(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def wait(self, path, count, timeout=15):
        deadline = time.time() + timeout
        while len(self.of(path)) < count:
            if time.time() > deadline:
                raise AssertionError("%d %s requests after %ss: %r"
                                     % (len(self.of(path)), path, timeout, self.requests[-5:]))
            time.sleep(0.05)
        return self.of(path)


def lines(srv, event):
    return [l for l in captools.complete_log_lines(srv.log_text()) if l.get("event") == event]


class RegistryClient(unittest.TestCase):
    def start(self, reg, extra=(), env=None):
        e = {"REGISTRY_TOKEN": REG_TOKEN}
        e.update(env or {})
        srv = mt.start(["--registry-url", reg.url, "--public-host", PROVIDER, "--heartbeat-s", "1"]
                       + list(extra), env=e)
        self.addCleanup(mt.stop, srv)
        return srv

    def registry(self):
        reg = Registry()
        self.addCleanup(reg.stop)
        return reg

    def test_register_heartbeat_deregister(self):
        reg = self.registry()
        srv = self.start(reg)
        caps = mt.health(srv)["capabilities"]
        regs = reg.wait("/capabilities/register", len(caps))
        self.assertEqual(sorted(r["body"]["capability"] for r in regs), sorted(caps))
        presets = sorted(mt.preset_names(mt.health(srv)["presets"]["available"]))
        for r in regs:
            self.assertEqual(r["auth"], "Bearer " + REG_TOKEN)
            self.assertEqual(r["type"], "application/json")
            b = r["body"]
            self.assertEqual((b["provider"], b["port"]), (PROVIDER, 443), b)
            self.assertEqual(b["version"], mt.health(srv)["version"])
            self.assertEqual(sorted(b["presets"]), presets)
            self.assertGreaterEqual(b["pools"]["cpu"]["slots"], 1)
        beats = reg.wait("/capabilities/heartbeat", 2)
        b = beats[-1]["body"]
        self.assertEqual((b["provider"], b["port"]), (PROVIDER, 443))
        load = b["load"]
        self.assertEqual((load["running"], load["queued"], load["draining"]), (0, 0, False), load)
        self.assertEqual(load["free"], load["slots"])
        self.assertEqual(load["classes"]["cpu"]["running"], 0)
        # Heartbeats come about every second, not faster.
        t = [r["t"] for r in reg.wait("/capabilities/heartbeat", 3)]
        self.assertGreater(t[-1] - t[-2], 0.7)
        self.assertEqual(len(lines(srv, "registry.registered")), 1)

        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        dereg = reg.wait("/capabilities/deregister", 1)
        self.assertEqual(dereg[0]["body"], {"provider": PROVIDER, "port": 443})
        self.assertEqual(dereg[0]["auth"], "Bearer " + REG_TOKEN)
        self.assertEqual(srv.proc.wait(10), 0)
        self.assertLess(time.time() - t0, 5)
        self.assertIs(lines(srv, "registry.deregistered")[0].get("ok"), True)
        n = len(reg.of("/capabilities/heartbeat"))
        time.sleep(1.5)
        self.assertEqual(len(reg.of("/capabilities/heartbeat")), n, "heartbeats after deregistering")
        text = srv.log_text()
        self.assertNotIn(REG_TOKEN, text)
        self.assertNotIn(TOKEN, json.dumps(reg.requests))

    def test_load_follows_jobs(self):
        reg = self.registry()
        tmp = tempfile.mkdtemp(prefix="registry-test-")
        presets = mt.presets_file(tmp, {"slow": mt.small_preset(realtime=True)})
        srv = self.start(reg, ["--presets", presets, "--pool-cpu", "1"])
        mt.put(srv, "uploads/clip.mp4", src=mt.clip(duration=4.0))
        reg.wait("/capabilities/heartbeat", 1)
        ids = []
        for i in range(2):
            st, h, j = mt.exec_(srv, mt.render_body("uploads/clip.mp4", "out/%d.mp4" % i, "slow",
                                                    **{"async": True}))
            self.assertEqual(st, 202, j)
            ids.append(j["job_id"])
        mt.wait_status(srv, ids[0], ("running",))
        n = len(reg.of("/capabilities/heartbeat"))
        beat = reg.wait("/capabilities/heartbeat", n + 2)[-1]["body"]["load"]
        self.assertEqual((beat["running"], beat["queued"], beat["slots"], beat["free"]), (1, 1, 1, 0), beat)
        self.assertEqual(beat["classes"]["cpu"],
                         {"slots": 1, "running": 1, "queued": 1, "free": 0, "usable": True})
        # NVENC is listed by Debian's ffmpeg but cannot run here: its slots
        # are not offered.
        self.assertIs(beat["classes"]["nvenc"]["usable"], False)

    def test_outage_logged_once_and_never_blocks(self):
        reg = self.registry()
        srv = self.start(reg)
        reg.wait("/capabilities/heartbeat", 1)
        reg.mode = "fail"
        n = len(reg.requests)
        deadline = time.time() + 20
        # Backoff starts at 1 s and doubles: three failed attempts take ~3 s.
        while len(reg.requests) < n + 3:
            self.assertLess(time.time(), deadline, "no retries during the outage")
            # Serving goes on meanwhile.
            st, h, j = mt.call(srv, "GET", "/health", token=None, timeout=2)
            self.assertEqual(st, 200)
            time.sleep(0.2)
        mt.put(srv, "uploads/clip.mp4", src=mt.clip(duration=1.0))
        st, h, j = mt.exec_(srv, mt.probe_body("uploads/clip.mp4"), timeout=20)
        self.assertEqual(st, 200, j)
        down = lines(srv, "registry.unavailable")
        self.assertEqual(len(down), 1, down)
        self.assertEqual((down[0]["status"], down[0]["level"]), (500, "warn"), down[0])
        reg.mode = "ok"
        n = len(reg.of("/capabilities/heartbeat"))
        reg.wait("/capabilities/heartbeat", n + 2, timeout=40)
        up = captools.wait_for(srv, lambda l: l.get("event") == "registry.available", timeout=5)
        self.assertGreaterEqual(up["failed_attempts"], 3, up)
        self.assertEqual(len(lines(srv, "registry.unavailable")), 1)
        self.assertEqual(len(lines(srv, "registry.available")), 1)

    def test_registry_down_then_back(self):
        reg = self.registry()
        port = reg.port
        srv = self.start(reg)
        reg.wait("/capabilities/heartbeat", 1)
        reg.stop()
        captools.wait_for(srv, lambda l: l.get("event") == "registry.unavailable", timeout=10)
        line = lines(srv, "registry.unavailable")[0]
        self.assertIn("error", line)
        time.sleep(2.5)
        self.assertEqual(len(lines(srv, "registry.unavailable")), 1)
        back = Registry(port)
        self.addCleanup(back.stop)
        back.wait("/capabilities/heartbeat", 1, timeout=40)
        captools.wait_for(srv, lambda l: l.get("event") == "registry.available", timeout=5)
        # Down at shutdown: the deregistration fails fast and the exit is clean.
        back.stop()
        t0 = time.time()
        self.assertEqual(srv.stop(signal.SIGTERM, timeout=15), 0)
        self.assertLess(time.time() - t0, 6)

    def test_forgotten_registers_again(self):
        reg = self.registry()
        srv = self.start(reg)
        caps = mt.health(srv)["capabilities"]
        reg.wait("/capabilities/heartbeat", 1)
        reg.mode = "forget"
        reg.wait("/capabilities/register", 2 * len(caps))
        captools.wait_for(srv, lambda l: l.get("event") == "registry.forgotten")
        self.assertEqual(len(lines(srv, "registry.unavailable")), 0)
        reg.wait("/capabilities/heartbeat", len(reg.of("/capabilities/heartbeat")) + 1)

    def test_preset_reload_registers_again(self):
        reg = self.registry()
        tmp = tempfile.mkdtemp(prefix="registry-test-")
        presets = mt.presets_file(tmp, {"tiny-a": mt.small_preset()})
        srv = self.start(reg, ["--presets", presets])
        caps = mt.health(srv)["capabilities"]
        reg.wait("/capabilities/register", len(caps))
        mt.presets_file(tmp, {"tiny-b": mt.small_preset()})
        srv.proc.send_signal(signal.SIGHUP)
        regs = reg.wait("/capabilities/register", 2 * len(caps))
        self.assertEqual(regs[-1]["body"]["presets"], ["tiny-b"])

    def test_token_file_and_public_port(self):
        reg = self.registry()
        tmp = tempfile.mkdtemp(prefix="registry-test-")
        path = os.path.join(tmp, "registry-token")
        captools.write_file(path, "\n  %s  \n" % REG_TOKEN, 0o600)
        srv = mt.start(["--registry-url", reg.url + "/", "--public-host", PROVIDER,
                        "--public-port", "8443", "--registry-token-file", path])
        self.addCleanup(mt.stop, srv)
        r = reg.wait("/capabilities/register", 1)[0]
        self.assertEqual((r["auth"], r["body"]["port"]), ("Bearer " + REG_TOKEN, 8443))

    def test_bad_settings_exit_2(self):
        url = "http://127.0.0.1:9"
        cases = [
            (["--registry-url", url, "--public-host", PROVIDER], {}, "registry_token_file"),
            (["--registry-url", url], {"REGISTRY_TOKEN": REG_TOKEN}, "public_host"),
            (["--registry-url", "ftp://x", "--public-host", PROVIDER], {"REGISTRY_TOKEN": REG_TOKEN},
             "registry_url"),
            (["--registry-url", url, "--public-host", PROVIDER, "--registry-token-file",
              "/nonexistent/token"], {}, "registry_token_file"),
            (["--registry-url", url, "--public-host", PROVIDER, "--heartbeat-s", "0"],
             {"REGISTRY_TOKEN": REG_TOKEN}, "heartbeat_s"),
        ]
        for args, env, key in cases:
            with self.subTest(args=args):
                r = captools.run_bin(args, env=env, token=TOKEN)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(key, r.stderr.decode())
                self.assertNotIn(REG_TOKEN, r.stderr.decode())


if __name__ == "__main__":
    unittest.main(verbosity=2)
