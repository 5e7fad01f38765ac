#!/usr/bin/env python3
"""The connection budget under attack from one client, and half-closes.

One unauthenticated client must not take every connection: idle keep-alive
connections are closed (oldest first) when the table is nearly full, each
client address (the forwarded one behind a trusted proxy) has a cap, a
body that trickles in is dropped by a minimum data rate, a refused
request's body is not waited for, and the metrics listener has its own
budget.  /health is probed on both listeners throughout, including while
slowhttptest attacks.  A client that half-closes after its request gets
its answer, and with cancel_on_disconnect its job is not canceled.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import captools  # noqa: E402
import mediatools as mt  # noqa: E402
from capsrv import Server, TOKEN, is_closed, recv_response  # noqa: E402


class At:
    """Another port of the same server (the metrics listener)."""
    def __init__(self, port):
        self.port = port

    connect = Server.connect


def metrics_port(srv):
    return captools.wait_for(srv, lambda l: l.get("event") == "server.start")["metrics_port"]


def health_status(target, timeout=3):
    try:
        return captools.http(target, "GET", "/health", token=None, timeout=timeout)[0]
    except (OSError, ConnectionError) as e:
        return repr(e)


def shed(srv, listener, reason):
    st, h, b = captools.http(srv, "GET", "/metrics")
    want = 'cap_http_connections_shed_total{listener="%s",reason="%s"} ' % (listener, reason)
    for line in b.decode().splitlines():
        if line.startswith(want):
            return float(line.split()[-1])
    return 0.0


def idle_keepalive(srv, n, source=None, headers=None):
    """n connections, each idle after one answered keep-alive request."""
    socks = []
    for _ in range(n):
        s = srv.connect(source=source)
        st, h, b = captools.send_on(s, "GET", "/health", token=None, headers=headers)
        assert st == 200, (st, b)
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class IdleEviction(unittest.TestCase):
    def test_idle_keepalive_closed_oldest_first(self):
        with Server(args=["--max-connections", "64"]) as srv:
            socks = idle_keepalive(srv, 64)
            try:
                # Before: the 65th got 503 too_many_connections for the whole
                # idle timeout.  Now the oldest idle ones make room.
                for _ in range(3):
                    self.assertEqual(health_status(srv), 200)
                self.assertTrue(is_closed(socks[0], timeout=2), "oldest idle connection kept")
                # The newest idle connections are still served.
                st, h, b = captools.send_on(socks[-1], "GET", "/health", token=None)
                self.assertEqual(st, 200, b)
                self.assertGreaterEqual(shed(srv, "public", "idle_evicted"), 4)
            finally:
                close_all(socks)

    def test_silent_connections_are_idle_too(self):
        # Connections that never send a byte are reused the same way.
        with Server(args=["--max-connections", "32"]) as srv:
            socks = [srv.connect() for _ in range(32)]
            try:
                time.sleep(0.3)
                self.assertEqual(health_status(srv), 200)
                self.assertTrue(is_closed(socks[0], timeout=2))
            finally:
                close_all(socks)

    def test_busy_connections_are_not_evicted(self):
        # A connection in the middle of a request head is not idle: with
        # only those, the limit answers 503 as before.
        with Server(args=["--max-connections", "16"]) as srv:
            socks = []
            try:
                for _ in range(16):
                    socks.append(srv.connect())
                    socks[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    time.sleep(0.01)
                time.sleep(0.3)
                st, h, b = captools.http(srv, "GET", "/health", token=None)
                self.assertEqual((st, captools.err_body(b)["code"]), (503, "too_many_connections"))
                s = socks[0]
                s.sendall(b"\r\n")
                st, h, b = recv_response(s)
                self.assertEqual(st, 200, b)
            finally:
                close_all(socks)

    def test_thousand_idle_from_one_client(self):
        # The run: 1,100 idle keep-alive connections from one
        # client, /health probed on both listeners throughout.
        with Server(args=["--metrics-listen", "127.0.0.1:0", "--metrics-auth", "none"]) as srv:
            mp = At(metrics_port(srv))
            socks = []
            failures = []
            try:
                for i in range(1100):
                    s = srv.connect()
                    s.sendall(captools.build_request("GET", "/health", token=None, close=False))
                    socks.append(s)
                    if i % 100 == 99:
                        for target in (srv, mp):
                            st = health_status(target)
                            if st != 200:
                                failures.append((i, target.port, st))
                self.assertEqual(failures, [])
                self.assertGreater(shed(mp, "public", "idle_evicted"), 0)
            finally:
                close_all(socks)


class MetricsBudget(unittest.TestCase):
    def test_metrics_listener_has_its_own_budget(self):
        with Server(args=["--max-connections", "16", "--metrics-listen", "127.0.0.1:0",
                          "--metrics-auth", "none"]) as srv:
            mp = At(metrics_port(srv))
            socks = []
            try:
                for _ in range(16):  # Busy (half a head): nothing to evict.
                    socks.append(srv.connect())
                    socks[-1].sendall(b"GET /health HTTP/1.1\r\n")
                    time.sleep(0.01)
                time.sleep(0.3)
                st, h, b = captools.http(srv, "GET", "/health", token=None)
                self.assertEqual(st, 503, b)
                self.assertEqual(health_status(mp), 200)
                st, h, b = captools.http(mp, "GET", "/metrics", token=None)
                self.assertIn(b'cap_http_connections_shed_total{listener="public",'
                              b'reason="connection_limit"} ', b)
            finally:
                close_all(socks)


class PerClientCap(unittest.TestCase):
    def test_untrusted_peer_capped_at_accept(self):
        # 127.0.0.2 is not a trusted proxy here: it is one client.
        with Server(args=["--trusted-proxies", "127.0.0.1", "--max-connections-per-client",
                          "8"]) as srv:
            socks = idle_keepalive(srv, 8, source="127.0.0.2")
            try:
                st, h, b = captools.http(srv, "GET", "/health", token=None, source="127.0.0.2")
                self.assertEqual(st, 503, b)
                err = captools.err_body(b)
                self.assertEqual(err["code"], "too_many_connections")
                self.assertIn("this client", err["error"])
                # Another client is served.
                self.assertEqual(health_status(srv), 200)
                # A connection closed gives the client its room back.
                socks.pop(0).close()
                deadline = time.time() + 3
                st = None
                while time.time() < deadline and st != 200:
                    st = captools.http(srv, "GET", "/health", token=None, source="127.0.0.2")[0]
                    time.sleep(0.05)
                self.assertEqual(st, 200)
                self.assertGreaterEqual(shed(srv, "public", "client_limit"), 1)
            finally:
                close_all(socks)

    def test_forwarded_client_capped_after_headers(self):
        # Behind Funnel every peer is loopback (trusted); the forwarded
        # address tells the clients apart.
        with Server(args=["--max-connections-per-client", "8"]) as srv:
            a = {"X-Forwarded-For": "203.0.113.7"}
            socks = idle_keepalive(srv, 8, headers=a)
            try:
                s = srv.connect()
                st, h, b = captools.send_on(s, "GET", "/health", token=None, headers=a)
                self.assertEqual((st, captools.err_body(b)["code"]), (503, "too_many_connections"))
                self.assertTrue(is_closed(s))
                s.close()
                st, h, b = captools.http(srv, "GET", "/health", token=None,
                                         headers={"X-Forwarded-For": "203.0.113.8"})
                self.assertEqual(st, 200, b)
                # The proxy's own requests (no forwarded address) are not capped.
                self.assertEqual(health_status(srv), 200)
            finally:
                close_all(socks)


class SlowBodies(unittest.TestCase):
    def trickle(self, srv, token, length, per_second, seconds):
        """Sends a POST /exec head and then length's body at per_second
        bytes a second; returns (status, code, seconds until the answer)."""
        s = srv.connect(timeout=seconds + 5)
        head = captools.build_request("POST", "/exec", None, token=token, close=False,
                                      headers={"Content-Type": "application/json",
                                               "Content-Length": str(length)})
        t0 = time.time()
        s.sendall(head)
        sent = 0
        result = {}

        def reader():
            try:
                result["r"] = recv_response(s, timeout=seconds + 5)
            except Exception as e:  # noqa: BLE001
                result["e"] = e
            result["t"] = time.time() - t0
        th = threading.Thread(target=reader)
        th.start()
        while th.is_alive() and sent < length and time.time() - t0 < seconds:
            n = min(per_second // 10 or 1, length - sent)
            try:
                s.sendall(b" " * n)
            except OSError:
                break
            sent += n
            time.sleep(0.1)
        th.join(seconds + 6)
        closed = is_closed(s, timeout=3)
        s.close()
        self.assertIn("r", result, result)
        st, h, b = result["r"]
        return st, captools.err_body(b)["code"], result["t"], closed

    def test_trickled_body_dropped_by_rate(self):
        # 10 bytes a second: before, held for the whole body timeout (60 s here).
        with Server(args=["--body-timeout-ms", "60000"]) as srv:
            st, code, t, closed = self.trickle(srv, TOKEN, 5000, 10, 20)
            self.assertEqual((st, code), (408, "request_timeout"))
            self.assertLess(t, 12)
            self.assertTrue(closed)
            self.assertGreaterEqual(shed(srv, "public", "slow_body"), 1)

    def test_body_at_a_fair_rate_is_read(self):
        with Server(args=["--body-timeout-ms", "60000"]) as srv:
            # 2,000 bytes a second for about 7 s: above the 1,024 minimum.
            st, code, t, closed = self.trickle(srv, TOKEN, 14000, 2000, 20)
            self.assertEqual((st, code), (400, "invalid_json"))
            self.assertGreater(t, 5)

    def test_rate_check_off(self):
        with Server(args=["--body-timeout-ms", "3000", "--min-body-rate", "0"]) as srv:
            st, code, t, closed = self.trickle(srv, TOKEN, 5000, 10, 10)
            self.assertEqual((st, code), (408, "request_timeout"))
            self.assertGreater(t, 2.5)

    def test_refused_body_not_waited_for(self):
        # No token: the 401 comes within about 2 s, not after the body.
        with Server(args=["--body-timeout-ms", "60000", "--min-body-rate", "0"]) as srv:
            st, code, t, closed = self.trickle(srv, None, 60000, 100, 20)
            self.assertEqual((st, code), (401, "unauthorized"))
            self.assertLess(t, 5)
            self.assertTrue(closed)

    def test_refused_small_body_keeps_connection(self):
        # A refused request whose body arrives at once is answered after it
        # and the connection is kept, as a Worker reusing it expects.
        with Server() as srv:
            s = srv.connect()
            st, h, b = captools.send_on(s, "POST", "/exec", body=captools.SEED_BODY, token=None)
            self.assertEqual(st, 401)
            st, h, b = captools.send_on(s, "GET", "/health", token=None)
            self.assertEqual(st, 200)
            s.close()


@unittest.skipUnless(shutil.which("slowhttptest"), "slowhttptest not installed")
class Slowhttptest(unittest.TestCase):
    """The issue's runs with slowhttptest itself; /health on both listeners
    must answer all the way through."""

    def attack(self, srv, mp, args, seconds):
        """Runs slowhttptest for seconds while /health is probed on both
        listeners every half second; returns (failures, probes, stats) with
        stats slowhttptest's own per-second counts."""
        out = os.path.join(srv.tmp, "slow")
        cmd = ["slowhttptest", "-u", srv.url("/exec"), "-l", str(seconds), "-g", "-o", out] + args
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        failures, probes = [], 0
        t0 = time.time()
        try:
            # Probing goes on for the whole run, also once slowhttptest has
            # given up because its connections were closed.
            while time.time() < t0 + seconds:
                for target in (srv, mp):
                    probes += 1
                    st = health_status(target)
                    if st != 200:
                        failures.append((round(time.time() - t0, 1), target.port, st))
                time.sleep(0.5)
        finally:
            p.terminate()
            p.wait(10)
        stats = []
        with open(out + ".csv") as f:
            for line in f.read().splitlines()[1:]:
                sec, closed, pending, connected, avail = (int(x) for x in line.split(","))
                stats.append({"s": sec, "closed": closed, "connected": connected})
        return failures, probes, stats

    def server(self, *args):
        return Server(args=["--metrics-listen", "127.0.0.1:0", "--metrics-auth", "none"]
                      + list(args))

    def test_slow_bodies_without_token(self):
        # 1,100 slow bodies against a table of 256, so that the table fills
        # whatever pace slowhttptest manages on a busy machine.
        with self.server("--max-connections", "256") as srv:
            mp = At(metrics_port(srv))
            failures, probes, stats = self.attack(
                srv, mp, ["-c", "1100", "-B", "-i", "10", "-r", "1000", "-s", "65536", "-t", "POST"],
                20)
            self.assertGreater(probes, 40)
            self.assertEqual(failures, [])
            # The table was full, and the refused requests' bodies were
            # given up to make room (not waited for for the 30 s body
            # timeout); slowhttptest saw its connections closed within
            # seconds (and stops on its own once most of them are).
            self.assertGreater(shed(mp, "public", "refused_body"), 0)
            peak = max(x["connected"] for x in stats)
            self.assertGreater(peak, 200, stats)
            self.assertLess(min(x["s"] for x in stats if x["closed"] > peak / 2), 10, stats)

    def test_slow_headers(self):
        # Slow heads are not idle: they fill the public table (until the
        # header timeout), yet the metrics listener still answers.
        with self.server("--max-connections", "256") as srv:
            mp = At(metrics_port(srv))
            failures, probes, stats = self.attack(
                srv, mp, ["-c", "1100", "-H", "-i", "5", "-r", "1000"], 15)
            self.assertGreater(max(x["connected"] for x in stats), 200, stats)
            self.assertTrue([f for f in failures if f[1] == srv.port],
                            "the public table never filled: the test proves nothing")
            self.assertEqual([f for f in failures if f[1] == mp.port], [])


class HalfClose(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = mt.start(["--cancel-on-disconnect"])
        mt.put(cls.srv, "uploads/hc.mp4", mt.clip(2.0, "160x120"))

    def half_closed_exchange(self, raw):
        s = self.srv.connect(timeout=30)
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        answers = []
        while True:
            st, h, b = recv_response(s, timeout=30)
            answers.append(st)
            if st >= 200:
                break
        closed = is_closed(s)
        s.close()
        return answers, b, closed

    def test_sync_route_answered(self):
        answers, b, closed = self.half_closed_exchange(
            captools.build_request("GET", "/health", token=None, close=False))
        self.assertEqual(answers, [200])
        self.assertTrue(closed)

    def test_waiting_job_answered_not_canceled(self):
        # Before: no answer at all, and the job was canceled.
        body = mt.probe_body("uploads/hc.mp4", wait=20)
        answers, b, closed = self.half_closed_exchange(
            captools.build_request("POST", "/exec", body, close=False))
        self.assertEqual(answers[-1], 200, b)
        # The probe that tells a half-close from a close is an interim 100.
        self.assertEqual(answers[:-1], [100])
        self.assertTrue(closed)
        job = json.loads(b)
        self.assertEqual(job["status"], "succeeded", job)


if __name__ == "__main__":
    unittest.main()
