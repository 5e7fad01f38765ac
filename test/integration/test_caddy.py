#!/usr/bin/env python3
"""Integration test of packaging/caddy/Caddyfile, the WSL2 bridge's proxy.

On Windows, Tailscale Funnel hands requests to Caddy on 127.0.0.1:3001 and
Caddy passes them to cap-server inside WSL2.  Here the same file runs under
Debian's caddy in front of a real cap-server: the upstream line is rewritten
exactly as scripts/windows/wsl-bridge.ps1 rewrites it (same regular
expression), and for the test only the listen and admin ports are moved to
free ones.  Requests go through Caddy with curl.

What must hold, and why:
- the file is valid and formatted, its admin API listens on loopback only,
  and its timeouts leave room for a 90 s long-poll;
- /health, /exec, a 202 with Location and a long-poll on it all work through
  Caddy, and X-Request-Id crosses it both ways;
- the client address tailscaled writes into X-Forwarded-For reaches
  cap-server unchanged, so every Funnel client has its own rate-limit bucket
  (Caddy's default would replace it with 127.0.0.1 and put every client in
  one bucket: the control case shows that this test would catch it);
- Tailscale-Funnel-Request crosses Caddy, so cap-server still refuses
  /metrics without a token to Funnel requests;
- `caddy reload` through the admin API switches to a new upstream, the way
  the PowerShell script follows a new WSL2 address.

Needs Debian's caddy package.  When it is missing the test installs it
(as root, with apt-get) and skips with a message only if that fails.
"""
import contextlib
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

import mediatools as mt  # noqa: E402
from capsrv import ROOT, TOKEN, Server, terminate  # noqa: E402
from captools import complete_log_lines, free_port, run_bin, wait_for  # noqa: E402

CADDYFILE = os.path.join(ROOT, "packaging", "caddy", "Caddyfile")

# The one line wsl-bridge.ps1 rewrites: "to ADDRESS:PORT # cap-upstream".
# The PowerShell script uses this same pattern; keep the two in step.
UPSTREAM_RE = re.compile(r"^([ \t]*to[ \t]+)(\S+)([ \t]+#[ \t]*cap-upstream\b.*)$", re.M)
# Test-only substitutions: the listen port and the admin address.
LISTEN_RE = re.compile(r"^http://:3001 \{$", re.M)
ADMIN_RE = re.compile(r"^(\s*admin\s+)localhost:2019$", re.M)

SECONDS = 1_000_000_000  # Caddy's JSON durations are nanoseconds.


def find_caddy():
    """Path of caddy, installing Debian's package first when it is missing
    and we may.  Returns (path or None, why not)."""
    path = shutil.which("caddy")
    if path:
        return path, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "caddy is not installed and this is not root: apt-get install caddy"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "caddy"]
    p = subprocess.run(install, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=600)
    if p.returncode != 0:
        # The package lists may be stale or absent (a fresh container).
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)
        p = subprocess.run(install, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=600)
    path = shutil.which("caddy")
    if path:
        return path, ""
    return None, ("caddy is not installed and `apt-get install caddy` failed: %s"
                  % p.stdout.decode(errors="replace")[-500:])


CADDY, CADDY_MISSING = find_caddy()


def render(text, upstream, listen_port=None, admin_port=None):
    """The packaging Caddyfile with its upstream set (what wsl-bridge.ps1
    does) and, for the test, its listen and admin ports moved."""
    out, n = UPSTREAM_RE.subn(lambda m: m.group(1) + upstream + m.group(3), text)
    assert n == 1, "expected exactly one '# cap-upstream' line in the Caddyfile, found %d" % n
    if listen_port is not None:
        out, n = LISTEN_RE.subn("http://:%d {" % listen_port, out)
        assert n == 1, "expected one 'http://:3001 {' site line, found %d" % n
    if admin_port is not None:
        out, n = ADMIN_RE.subn(lambda m: m.group(1) + "localhost:%d" % admin_port, out)
        assert n == 1, "expected one 'admin localhost:2019' line, found %d" % n
    return out


def read_caddyfile():
    with open(CADDYFILE, "r", encoding="utf-8") as f:
        return f.read()


class Caddy:
    """caddy run on a rendered Caddyfile, with its HOME and XDG directories
    in a temp dir so that nothing outside it is touched."""

    def __init__(self, text):
        self.tmp = tempfile.mkdtemp(prefix="caddy-test-")
        self.path = os.path.join(self.tmp, "Caddyfile")
        self.write(text)
        self.env = dict(os.environ, HOME=self.tmp, XDG_DATA_HOME=os.path.join(self.tmp, "data"),
                        XDG_CONFIG_HOME=os.path.join(self.tmp, "config"))
        self.log = open(os.path.join(self.tmp, "caddy.log"), "wb")
        self.proc = None

    def write(self, text):
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def run(self, *args, timeout=60, merge=True):
        """Runs a caddy subcommand; stdout holds stderr too unless merge is
        false (caddy logs warnings on stderr)."""
        return subprocess.run([CADDY] + list(args), env=self.env, cwd=self.tmp,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                              timeout=timeout)

    def start(self, port):
        self.proc = subprocess.Popen([CADDY, "run", "--config", self.path, "--adapter", "caddyfile"],
                                     env=self.env, cwd=self.tmp, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("caddy exited %d:\n%s" % (self.proc.returncode, self.log_text()))
            try:
                st, _, _ = curl("GET", "http://127.0.0.1:%d/health" % port, timeout=5)
                if st == 200:
                    return
            except AssertionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("caddy did not answer /health within 20 s:\n" + self.log_text())

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.tmp, "caddy.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self):
        if self.proc:
            terminate(self.proc)
        self.log.close()
        shutil.rmtree(self.tmp, True)


def curl(method, url, headers=(), body=None, timeout=30):
    """One request with curl; returns (status, headers dict with lowercase
    names, body bytes).  Raises AssertionError when curl itself fails."""
    fd, out = tempfile.mkstemp(prefix="caddy-test-body-")
    os.close(fd)
    try:
        # HEAD answers have no body: -I makes curl not wait for one.
        argv = ["curl", "-sS", "-I"] if method == "HEAD" else ["curl", "-sS", "-X", method]
        argv += ["-D", "-", "-o", out, "--max-time", str(timeout), url]
        for k, v in headers:
            argv += ["-H", "%s: %s" % (k, v)]
        if body is not None:
            argv += ["--data-binary", "@-"]
        p = subprocess.run(argv, input=body, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout + 10)
        if p.returncode != 0:
            raise AssertionError("curl %s %s failed (%d): %s" % (
                method, url, p.returncode, p.stderr.decode(errors="replace")))
        with open(out, "rb") as f:
            data = f.read()
    finally:
        os.unlink(out)
    # The last header block is the final response (curl prints 1xx ones too).
    blocks = [b for b in p.stdout.decode("latin-1").split("\r\n\r\n") if b.strip()]
    lines = blocks[-1].split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, data


@contextlib.contextmanager
def server(args=()):
    """A capsrv.Server that also removes its temp directory afterwards."""
    srv = Server(list(args))
    try:
        with srv:
            yield srv
    finally:
        shutil.rmtree(srv.tmp, True)


def as_json(body):
    return json.loads(body.decode("utf-8"))


def http_lines(srv):
    return [l for l in complete_log_lines(srv.log_text()) if l.get("event") == "http.request"]


def has_metrics_route():
    p = run_bin(["--help"])
    return b"--metrics-auth" in p.stdout


@unittest.skipIf(CADDY is None, CADDY_MISSING)
class CaddyfileStatic(unittest.TestCase):
    """What can be checked without running it."""

    def setUp(self):
        self.caddy = Caddy(render(read_caddyfile(), "127.0.0.1:3001"))

    def tearDown(self):
        self.caddy.stop()

    def test_valid(self):
        p = self.caddy.run("validate", "--config", self.caddy.path, "--adapter", "caddyfile")
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("Valid configuration", out)

    def test_formatted(self):
        # The file as shipped is what `caddy fmt` would write, so Caddy
        # prints no "input is not formatted" warning on Windows either.
        p = self.caddy.run("fmt", CADDYFILE)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(p.stdout.decode("utf-8"), read_caddyfile(),
                         "packaging/caddy/Caddyfile is not formatted: run caddy fmt on it")

    def test_admin_loopback_and_timeouts(self):
        p = self.caddy.run("adapt", "--config", self.caddy.path, "--adapter", "caddyfile",
                           merge=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        cfg = json.loads(p.stdout.decode("utf-8"))
        # Whoever reaches the admin API can rewrite Caddy: loopback only.
        self.assertEqual(cfg["admin"]["listen"], "localhost:2019")
        servers = cfg["apps"]["http"]["servers"]
        self.assertEqual(len(servers), 1, servers)
        srv = list(servers.values())[0]
        # Funnel connects over loopback; nothing else may reach Caddy.
        self.assertEqual(srv["listen"], ["127.0.0.1:3001"], srv)
        self.assertTrue(srv["automatic_https"]["disable"], srv)
        # A long-poll holds its response for up to 90 s (wait_max_s).
        self.assertGreaterEqual(srv["write_timeout"], 95 * SECONDS, srv)
        self.assertLessEqual(srv["read_header_timeout"], 30 * SECONDS, srv)
        handlers = [h for r in srv["routes"] for h in r["handle"]]
        self.assertEqual([h["handler"] for h in handlers], ["request_body", "reverse_proxy"])
        self.assertEqual(handlers[0]["max_size"], 1000000)
        rp = handlers[1]
        self.assertEqual([u["dial"] for u in rp["upstreams"]], ["127.0.0.1:3001"])
        self.assertGreaterEqual(rp["transport"]["response_header_timeout"], 95 * SECONDS, rp)
        self.assertEqual(rp["headers"]["request"]["set"]["X-Forwarded-For"],
                         ["{http.request.header.X-Forwarded-For}"], rp)


@unittest.skipIf(CADDY is None, CADDY_MISSING)
class ThroughCaddy(unittest.TestCase):
    """cap-server behind the packaging Caddyfile."""

    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="caddy-presets-")
        cls.presets_dir = d
        presets = mt.presets_file(d, {"slow": mt.small_preset(realtime=True)}, include_builtin=True)
        # Two /exec requests a minute per client address: the third from the
        # same forwarded address is refused, another address is not.
        cls.srv = Server(["--rate-limit", "2", "--rate-limit-token", "100000",
                          "--max-body-bytes", str(4 * 1024 * 1024), "--presets", presets])
        os.makedirs(os.path.join(mt.data_dir(cls.srv), "uploads"), exist_ok=True)
        mt.put(cls.srv, "uploads/clip.mp4", mt.clip(duration=1.0))
        mt.put(cls.srv, "uploads/slow.mp4", mt.clip(duration=4.0))
        cls.port = free_port()
        cls.admin = free_port()
        cls.text = render(read_caddyfile(), "127.0.0.1:%d" % cls.srv.port, cls.port, cls.admin)
        cls.caddy = Caddy(cls.text)
        try:
            cls.caddy.start(cls.port)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.caddy.stop()
        cls.srv.__exit__(None, None, None)
        shutil.rmtree(cls.srv.tmp, True)
        shutil.rmtree(cls.presets_dir, True)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def line_for(self, req_id):
        return wait_for(self.srv, lambda l: l.get("event") == "http.request" and
                        l.get("req_id") == req_id, timeout=10)

    def exec_via(self, body, xff=None, extra=(), token=TOKEN):
        h = [("Content-Type", "application/json")]
        if token:
            h.append(("Authorization", "Bearer " + token))
        if xff is not None:
            h.append(("X-Forwarded-For", xff))
        h += list(extra)
        return curl("POST", self.url("/exec"), h, json.dumps(body).encode())

    def test_health(self):
        st, h, b = curl("GET", self.url("/health"), [("X-Request-Id", "via-caddy-health")])
        self.assertEqual(st, 200, b)
        j = as_json(b)
        self.assertEqual(j["status"], "ok")
        self.assertIn("ffmpeg-render", j["capabilities"])
        # It went through Caddy, and cap-server's headers came back intact.
        self.assertEqual(h.get("server"), "Caddy", h)
        self.assertEqual(h.get("x-request-id"), "via-caddy-health", h)
        self.assertEqual(h.get("cache-control"), "no-store", h)
        line = self.line_for("via-caddy-health")
        self.assertEqual(line["peer"], "127.0.0.1", line)
        st, h, b = curl("HEAD", self.url("/health"))
        self.assertEqual(st, 200)

    def test_forwarded_client_address_keys_the_rate_limit(self):
        body = {"capability": "ffprobe", "input_key": "uploads/missing.mp4"}
        # What tailscaled sends: one address, the public client's.
        ids = []
        for i in range(2):
            rid = "xff-a-%d" % i
            st, h, b = self.exec_via(body, xff="203.0.113.7", extra=[("X-Request-Id", rid)])
            self.assertEqual(st, 404, b)
            self.assertEqual(as_json(b)["code"], "input_not_found")
            ids.append(rid)
        st, h, b = self.exec_via(body, xff="203.0.113.7", extra=[("X-Request-Id", "xff-a-2")])
        self.assertEqual(st, 429, b)
        self.assertEqual(as_json(b)["code"], "rate_limited")
        self.assertRegex(h.get("retry-after", ""), r"^[1-9][0-9]*$", h)
        # Another Funnel client is another bucket.  Were X-Forwarded-For
        # replaced by Caddy's peer, both would share 127.0.0.1's and this
        # would be 429 too.
        st, h, b = self.exec_via(body, xff="203.0.113.8", extra=[("X-Request-Id", "xff-b-0")])
        self.assertEqual(st, 404, b)
        for rid, addr in [("xff-a-0", "203.0.113.7"), ("xff-a-2", "203.0.113.7"),
                          ("xff-b-0", "203.0.113.8")]:
            line = self.line_for(rid)
            self.assertEqual(line["remote"], addr, line)
            self.assertEqual(line["forwarded_for"], addr, line)
            self.assertEqual(line["peer"], "127.0.0.1", line)
        self.assertEqual(self.line_for("xff-a-2")["status"], 429)

    def test_forwarded_list_passes_unchanged(self):
        # cap-server believes the rightmost entry (the nearest proxy's);
        # Caddy must neither drop nor append to what tailscaled wrote.
        body = {"capability": "ffprobe", "input_key": "uploads/missing.mp4"}
        st, h, b = self.exec_via(body, xff="198.51.100.1, 203.0.113.9",
                                 extra=[("X-Request-Id", "xff-list")])
        self.assertEqual(st, 404, b)
        line = self.line_for("xff-list")
        self.assertEqual(line["forwarded_for"], "198.51.100.1, 203.0.113.9", line)
        self.assertEqual(line["remote"], "203.0.113.9", line)

    def test_sync_exec_and_long_poll(self):
        # A probe answered within the request.
        st, h, b = self.exec_via({"capability": "ffprobe", "input_key": "uploads/clip.mp4"},
                                 xff="192.0.2.10")
        self.assertEqual(st, 200, b)
        j = as_json(b)
        self.assertEqual(j["status"], "succeeded")
        self.assertIn("streams", j["probe"])
        # A slow render (about 4 s) asked not to wait: 202 and Location.
        st, h, b = self.exec_via({"input_key": "uploads/slow.mp4", "output_key": "renders/slow.mp4",
                                  "preset": "slow", "async": True}, xff="192.0.2.11")
        self.assertEqual(st, 202, b)
        j = as_json(b)
        loc = h.get("location")
        self.assertEqual(loc, "/jobs/" + j["job_id"], h)
        self.assertEqual(j["status_url"], loc)
        # The long-poll is held through Caddy until the job ends.
        t0 = time.monotonic()
        st, h, b = curl("GET", self.url(loc + "?wait=60"),
                        [("Authorization", "Bearer " + TOKEN)], timeout=90)
        held = time.monotonic() - t0
        self.assertEqual(st, 200, b)
        j = as_json(b)
        self.assertEqual(j["status"], "succeeded", j)
        self.assertEqual(j["result"]["r2_key"], "renders/slow.mp4")
        self.assertLess(held, 60, "the long-poll ran into its own wait limit")
        self.assertTrue(os.path.exists(os.path.join(mt.data_dir(self.srv), "renders", "slow.mp4")))

    def test_body_limit(self):
        # This cap-server takes bodies up to 4 MiB (max_body_bytes), so a
        # 2 MiB body is refused by Caddy's own 1 MB limit before cap-server
        # answers.  Caddy 2.6 reports the cut-off body as 502, later
        # versions as 413; either way the answer is Caddy's: cap-server
        # puts X-Request-Id on every response it sends.
        big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
        st, h, b = curl("POST", self.url("/exec"),
                        [("Authorization", "Bearer " + TOKEN), ("Content-Type", "application/json"),
                         ("X-Forwarded-For", "192.0.2.20")], big)
        self.assertIn(st, (413, 502), b)
        self.assertNotIn("x-request-id", h, h)

    def test_funnel_marker_crosses_caddy(self):
        if not has_metrics_route():
            self.skipTest("this cap-server has no /metrics yet (no --metrics-auth)")
        # A separate server with metrics open to requests without a token:
        # only the Funnel marker, which must cross Caddy, keeps them out.
        with server(["--metrics-auth", "none"]) as srv:
            port = free_port()
            caddy = Caddy(render(read_caddyfile(), "127.0.0.1:%d" % srv.port, port, free_port()))
            try:
                caddy.start(port)
                url = "http://127.0.0.1:%d/metrics" % port
                st, h, b = curl("GET", url)
                self.assertEqual(st, 200, b)
                self.assertIn(b"cap_build_info", b)
                st, h, b = curl("GET", url, [("Tailscale-Funnel-Request", "?1")])
                self.assertNotEqual(st, 200, b)
                self.assertNotIn(b"cap_build_info", b)
            finally:
                caddy.stop()

    def test_reload_follows_a_new_upstream(self):
        # What wsl-bridge.ps1 does when the WSL2 address changes: rewrite
        # the upstream line, validate, `caddy reload` through the admin API.
        with server() as other:
            text = render(self.text, "127.0.0.1:%d" % other.port)
            self.assertNotEqual(text, self.text)
            self.caddy.write(text)
            try:
                p = self.caddy.run("validate", "--config", self.caddy.path, "--adapter", "caddyfile")
                self.assertEqual(p.returncode, 0, p.stdout)
                p = self.caddy.run("reload", "--config", self.caddy.path, "--adapter", "caddyfile")
                self.assertEqual(p.returncode, 0, p.stdout)
                st, h, b = curl("GET", self.url("/health"), [("X-Request-Id", "after-reload")])
                self.assertEqual(st, 200, b)
                wait_for(other, lambda l: l.get("req_id") == "after-reload", timeout=10)
                self.assertFalse([l for l in http_lines(self.srv)
                                  if l.get("req_id") == "after-reload"])
            finally:
                # Back to the class's own server for the other tests.
                self.caddy.write(self.text)
                p = self.caddy.run("reload", "--config", self.caddy.path, "--adapter", "caddyfile")
                self.assertEqual(p.returncode, 0, p.stdout)
                st, h, b = curl("GET", self.url("/health"), [("X-Request-Id", "reload-back")])
                self.assertEqual(st, 200, b)
                self.line_for("reload-back")


@unittest.skipIf(CADDY is None, CADDY_MISSING)
class ControlWithoutForwardingLine(unittest.TestCase):
    """Shows that the forwarding assertions above can fail: without the
    header_up line Caddy replaces the client's X-Forwarded-For with its own
    peer (127.0.0.1, which on Windows is tailscaled), and every Funnel client
    lands in one rate-limit bucket."""

    def test_clients_share_a_bucket(self):
        port = free_port()
        text = render(read_caddyfile(), "127.0.0.1:1", port, free_port())
        self.assertIn("header_up X-Forwarded-For", text, "the Caddyfile has no forwarding line")
        stripped = "\n".join(l for l in text.split("\n")
                             if not l.strip().startswith("header_up X-Forwarded-For"))
        with server(["--rate-limit", "1", "--rate-limit-token", "100000"]) as srv:
            caddy = Caddy(render(stripped, "127.0.0.1:%d" % srv.port))
            try:
                caddy.start(port)
                body = json.dumps({"capability": "ffprobe", "input_key": "uploads/x.mp4"}).encode()
                codes = []
                for addr in ("203.0.113.1", "203.0.113.2"):
                    st, h, b = curl("POST", "http://127.0.0.1:%d/exec" % port,
                                    [("Authorization", "Bearer " + TOKEN),
                                     ("Content-Type", "application/json"),
                                     ("X-Forwarded-For", addr)], body)
                    codes.append(st)
                self.assertEqual(codes, [404, 429])
                remotes = {l["remote"] for l in http_lines(srv) if l.get("path") == "/exec"}
                self.assertEqual(remotes, {"127.0.0.1"})
            finally:
                caddy.stop()

if __name__ == "__main__":
    unittest.main()
