#!/usr/bin/env python3
"""Limits and timeouts of cap-server: 431 (header bytes / count), 414, 413
(Content-Length, chunked, body on a body-less route), max connections (503),
header / body / idle timeouts, and a slowloris run showing that slow clients
neither block other clients nor stay connected past the header timeout.

Run: python3 test/integration/test_limits.py
"""
import os
import selectors
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capsrv import (TOKEN, Server, build_request, check_common_headers, chunked,  # noqa: E402
                    exchange, read_response, wait_closed)

RL = ["--rate-limit", "100000", "--rate-limit-token", "100000"]
VALID_EXEC = b'{"capability":"ffprobe","input_key":"uploads/raw.mp4"}'
PARTIAL = b"GET /health HTTP/1.1\r\nHost: localhost\r\n"   # headers never finished


def get(path, extra=(), close=True, method="GET"):
    h = [("Host", "localhost")] + list(extra)
    if close:
        h.append(("Connection", "close"))
    return build_request(method, path, h)


def exec_headers(length=None, chunked_te=False, extra=()):
    h = [("Host", "localhost"), ("Authorization", "Bearer " + TOKEN),
         ("Content-Type", "application/json")]
    if chunked_te:
        h.append(("Transfer-Encoding", "chunked"))
    if length is not None:
        h.append(("Content-Length", str(length)))
    return build_request("POST", "/exec", h + list(extra))


def exec_body_of_size(n):
    """A valid ffprobe body of exactly n bytes."""
    base = b'{"capability":"ffprobe","input_key":"' + b'"}'
    return base[:-2] + b"k" * (n - len(base)) + b'"}'


class StoppingServerMixin:
    def finish(self, srv):
        self.assertIsNone(srv.proc.poll(), "cap-server died")
        self.assertEqual(srv.stop(), 0)


class SizeLimits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(args=RL + ["--max-header-bytes", "2048", "--max-headers", "16",
                                    "--max-url-bytes", "256", "--max-body-bytes", "1024",
                                    "--header-timeout-ms", "3000", "--body-timeout-ms", "3000"])

    @classmethod
    def tearDownClass(cls):
        alive = cls.srv.proc.poll() is None
        code = cls.srv.stop() if alive else cls.srv.proc.returncode
        if not alive or code != 0:
            raise AssertionError("cap-server died or bad exit: alive=%s code=%r" % (alive, code))

    def rejected(self, raw, status, code, head=False):
        r, closed, extra = exchange(self.srv, raw, timeout=3, head=head)
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.code, code, r)
        check_common_headers(self, r)
        self.assertTrue(r.closing, "Connection: close expected: %r" % r)
        self.assertTrue(closed, "connection must be closed after %d" % status)
        self.assertEqual(extra, b"")
        return r

    def ok(self, raw, status=200):
        r, _, _ = exchange(self.srv, raw, timeout=3)
        self.assertEqual(r.status, status, r)
        return r

    # 431 -----------------------------------------------------------------
    def test_431_header_bytes(self):
        self.rejected(get("/health", [("X-Pad", "p" * 3000)]), 431, "headers_too_large")

    def test_431_header_bytes_many_headers_under_count(self):
        # 10 headers (under the count of 16) of 300 bytes: 3000 bytes > 2048.
        self.rejected(get("/health", [("X-P%d" % i, "p" * 300) for i in range(10)]),
                      431, "headers_too_large")

    def test_431_huge_header_far_over(self):
        self.rejected(get("/health", [("X-Pad", "p" * 60000)]), 431, "headers_too_large")

    def test_header_bytes_under_limit_ok(self):
        self.ok(get("/health", [("X-Pad", "p" * 1500)]))

    def test_431_header_count(self):
        self.rejected(get("/health", [("X-H%d" % i, "v") for i in range(30)]), 431, "headers_too_large")

    def test_431_header_count_just_over(self):
        # Host + 16 + Connection = 18 > 16
        self.rejected(get("/health", [("X-H%d" % i, "v") for i in range(16)]), 431, "headers_too_large")

    def test_header_count_under_limit_ok(self):
        self.ok(get("/health", [("X-H%d" % i, "v") for i in range(10)]))

    # 414 -----------------------------------------------------------------
    def test_414_query(self):
        self.rejected(get("/health?x=" + "q" * 400), 414, "uri_too_long")

    def test_414_path(self):
        # a long unknown path is 414, not 404: the URL limit comes first
        self.rejected(get("/" + "a" * 400), 414, "uri_too_long")

    def test_414_exec(self):
        raw = build_request("POST", "/exec?" + "q" * 400,
                            [("Host", "x"), ("Authorization", "Bearer " + TOKEN),
                             ("Content-Type", "application/json"), ("Content-Length", "0")])
        self.rejected(raw, 414, "uri_too_long")

    def test_url_under_limit_ok(self):
        self.ok(get("/health?x=" + "q" * 150))

    # 413 -----------------------------------------------------------------
    def test_413_content_length_with_body(self):
        body = exec_body_of_size(2000)
        self.rejected(exec_headers(len(body)) + body, 413, "body_too_large")

    def test_413_content_length_at_once(self):
        # Only headers are sent: the answer must not wait for the body.
        s = self.srv.connect()
        try:
            t0 = time.time()
            s.sendall(exec_headers(5000))
            r = read_response(s, timeout=2)
            self.assertLess(time.time() - t0, 1.0)
            self.assertEqual((r.status, r.code), (413, "body_too_large"), r)
            self.assertTrue(wait_closed(s, 2)[0])
        finally:
            s.close()

    def test_body_exactly_at_limit_ok(self):
        body = exec_body_of_size(1024)
        self.assertEqual(len(body), 1024)
        self.ok(exec_headers(len(body), extra=[("Connection", "close")]) + body, 404)

    def test_413_one_byte_over(self):
        body = exec_body_of_size(1025)
        self.rejected(exec_headers(len(body)) + body, 413, "body_too_large")

    def test_413_chunked(self):
        self.rejected(exec_headers(chunked_te=True) + chunked(exec_body_of_size(2000), 200),
                      413, "body_too_large")

    def test_chunked_at_limit_ok(self):
        self.ok(exec_headers(chunked_te=True, extra=[("Connection", "close")])
                + chunked(exec_body_of_size(1024), 100), 404)

    def test_413_chunked_one_byte_over(self):
        self.rejected(exec_headers(chunked_te=True) + chunked(exec_body_of_size(1025), 100),
                      413, "body_too_large")

    def test_413_body_on_health(self):
        raw = build_request("GET", "/health", [("Host", "x"), ("Content-Length", "5")], b"hello")
        self.rejected(raw, 413, "body_too_large")

    def test_413_chunked_body_on_health(self):
        raw = build_request("GET", "/health", [("Host", "x"), ("Transfer-Encoding", "chunked")],
                            chunked(b"hello"))
        self.rejected(raw, 413, "body_too_large")

    def test_zero_length_body_on_health_ok(self):
        raw = build_request("GET", "/health", [("Host", "x"), ("Content-Length", "0"),
                                               ("Connection", "close")])
        self.ok(raw)


class MaxConnections(unittest.TestCase, StoppingServerMixin):
    def test_fifth_connection_gets_503(self):
        srv = Server(args=RL + ["--max-connections", "4", "--header-timeout-ms", "20000"])
        try:
            idle = []
            for _ in range(4):
                s = srv.connect()
                s.sendall(PARTIAL)
                idle.append(s)
            time.sleep(0.3)
            fifth = srv.connect()
            try:
                fifth.settimeout(0.5)
                got = b""
                try:
                    got = fifth.recv(65536)
                except socket.timeout:
                    # the server may wait for a request before answering
                    fifth.sendall(get("/health"))
                if got:
                    from capsrv import _RBUF
                    _RBUF[fifth] = got
                r = read_response(fifth, timeout=3)
                self.assertEqual(r.status, 503, r)
                self.assertEqual(r.code, "too_many_connections", r)
                check_common_headers(self, r)
                self.assertTrue(r.closing, r)
                self.assertTrue(wait_closed(fifth, 3)[0], "503 connection must be closed")
            finally:
                fifth.close()
            # the four holders were not disturbed
            for s in idle:
                closed, extra = wait_closed(s, 0.05)
                self.assertFalse(closed)
                self.assertEqual(extra, b"")
            # one of them can still finish its request
            idle[0].sendall(b"Connection: close\r\n\r\n")
            r = read_response(idle[0], timeout=3)
            self.assertEqual(r.status, 200, r)
            for s in idle:
                s.close()
            deadline = time.time() + 3
            status = None
            while time.time() < deadline:
                r, _, _ = exchange(srv, get("/health"), close_wait=0)
                status = r.status
                if status == 200:
                    break
                time.sleep(0.1)
            self.assertEqual(status, 200, "after closing the holders /health must work")
            # and the slot count is really back: 4 concurrent connections are fine again
            # (the probe connections above close asynchronously: the server
            # counts a connection until it has seen the client's FIN)
            time.sleep(0.3)
            again = [srv.connect() for _ in range(4)]
            for i, s in enumerate(again):
                s.sendall(get("/health", [("X-Request-Id", "again-%d" % i)], close=False))
            for i, s in enumerate(again):
                r = read_response(s, timeout=3)
                self.assertEqual((r.status, r.headers["x-request-id"]), (200, "again-%d" % i))
                s.close()
            self.finish(srv)
        finally:
            srv.__exit__()


class Timeouts(unittest.TestCase, StoppingServerMixin):
    def assert_408_close(self, s, t0, timeout_s):
        r = read_response(s, timeout=timeout_s + 3)
        elapsed = time.time() - t0
        self.assertEqual(r.status, 408, r)
        self.assertEqual(r.code, "request_timeout", r)
        check_common_headers(self, r)
        self.assertTrue(r.closing, r)
        self.assertGreaterEqual(elapsed, timeout_s * 0.8, "408 came too early (%.2fs)" % elapsed)
        self.assertLess(elapsed, timeout_s + 1.5, "408 came too late (%.2fs)" % elapsed)
        closed, extra = wait_closed(s, 2)
        self.assertTrue(closed, "connection must be closed after 408")
        self.assertEqual(extra, b"")

    def test_header_timeout_408(self):
        with Server(args=RL + ["--header-timeout-ms", "1000", "--idle-timeout-ms", "10000"]) as srv:
            s = srv.connect()
            try:
                t0 = time.time()
                s.sendall(PARTIAL)
                self.assert_408_close(s, t0, 1.0)
            finally:
                s.close()
            self.finish(srv)

    def test_header_timeout_no_bytes_silent_close(self):
        with Server(args=RL + ["--header-timeout-ms", "1000", "--idle-timeout-ms", "10000"]) as srv:
            s = srv.connect()
            try:
                t0 = time.time()
                closed, extra = wait_closed(s, 4)
                elapsed = time.time() - t0
                self.assertTrue(closed, "a connection that never sends must be closed")
                self.assertEqual(extra, b"", "silent close expected, got %r" % extra)
                self.assertGreaterEqual(elapsed, 0.8)
                self.assertLess(elapsed, 2.5)
            finally:
                s.close()
            self.finish(srv)

    def test_body_timeout_408_content_length(self):
        with Server(args=RL + ["--header-timeout-ms", "5000", "--body-timeout-ms", "1000"]) as srv:
            s = srv.connect()
            try:
                s.sendall(exec_headers(100) + b'{"capabil')
                t0 = time.time()
                self.assert_408_close(s, t0, 1.0)
            finally:
                s.close()
            self.finish(srv)

    def test_body_timeout_408_chunked(self):
        with Server(args=RL + ["--header-timeout-ms", "5000", "--body-timeout-ms", "1000"]) as srv:
            s = srv.connect()
            try:
                s.sendall(exec_headers(chunked_te=True) + b"5\r\n{\"cap\r\n")
                t0 = time.time()
                self.assert_408_close(s, t0, 1.0)
            finally:
                s.close()
            self.finish(srv)

    def test_body_timeout_not_extended_by_trickle(self):
        # One body byte every 0.2 s: the deadline runs from headers complete.
        with Server(args=RL + ["--header-timeout-ms", "5000", "--body-timeout-ms", "1000"]) as srv:
            s = srv.connect()
            try:
                s.sendall(exec_headers(200))
                t0 = time.time()
                got = None
                s.settimeout(0.2)
                while time.time() - t0 < 4:
                    try:
                        s.send(b" ")
                    except OSError:
                        break
                    try:
                        data = s.recv(65536)
                    except socket.timeout:
                        continue
                    except ConnectionResetError:
                        break
                    got = data
                    break
                elapsed = time.time() - t0
                self.assertIsNotNone(got, "no answer to a trickled body")
                self.assertTrue(got.startswith(b"HTTP/1.1 408"), got[:200])
                self.assertLess(elapsed, 2.5, "trickling extended the body timeout (%.2fs)" % elapsed)
            finally:
                s.close()
            self.finish(srv)

    def test_idle_keepalive_timeout_silent_close(self):
        with Server(args=RL + ["--header-timeout-ms", "5000", "--idle-timeout-ms", "1000"]) as srv:
            s = srv.connect()
            try:
                s.sendall(get("/health", close=False))
                r = read_response(s)
                self.assertEqual(r.status, 200)
                self.assertFalse(r.closing)
                t0 = time.time()
                closed, extra = wait_closed(s, 4)
                elapsed = time.time() - t0
                self.assertTrue(closed, "idle keep-alive connection must be closed")
                self.assertEqual(extra, b"", "idle close must be silent, got %r" % extra)
                self.assertGreaterEqual(elapsed, 0.8)
                self.assertLess(elapsed, 2.5)
            finally:
                s.close()
            self.finish(srv)

    def test_idle_uses_idle_timeout_not_header_timeout(self):
        # header timeout 1 s, idle 4 s: a keep-alive connection idle for 2 s
        # between requests is still usable.
        with Server(args=RL + ["--header-timeout-ms", "1000", "--idle-timeout-ms", "4000"]) as srv:
            s = srv.connect()
            try:
                s.sendall(get("/health", close=False))
                self.assertEqual(read_response(s).status, 200)
                time.sleep(2.0)
                s.sendall(get("/health", [("X-Request-Id", "second")]))
                r = read_response(s, timeout=3)
                self.assertEqual((r.status, r.headers["x-request-id"]), (200, "second"))
            finally:
                s.close()
            self.finish(srv)


class Slowloris(unittest.TestCase, StoppingServerMixin):
    N = 200
    HEADER_TIMEOUT = 3.0

    def test_slowloris(self):
        srv = Server(args=RL + ["--header-timeout-ms", str(int(self.HEADER_TIMEOUT * 1000)),
                                "--idle-timeout-ms", "10000"])
        try:
            self._run(srv)
            self.finish(srv)
        finally:
            srv.__exit__()

    def _run(self, srv):
        payload = PARTIAL + b"X-Slow: " + b"a" * 1000
        socks, first_byte, closed_at, got = [], {}, {}, {}
        sel = selectors.DefaultSelector()
        for i in range(self.N):
            s = srv.connect()
            s.setblocking(False)
            s.send(payload[:1])
            first_byte[i] = time.time()
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, i)
        stop = threading.Event()
        lock = threading.Lock()

        def drip():
            pos = 1
            next_drip = time.time() + 0.5
            while not stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    i, s = key.data, key.fileobj
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except (ConnectionResetError, OSError):
                        data = b""
                    with lock:
                        if data:
                            got[i] = got.get(i, b"") + data
                        else:
                            closed_at[i] = time.time()
                            sel.unregister(s)
                if time.time() >= next_drip:
                    for i, s in enumerate(socks):
                        if i in closed_at:
                            continue
                        try:
                            s.send(payload[pos:pos + 1])
                        except (BlockingIOError, BrokenPipeError, ConnectionResetError, OSError):
                            pass
                    pos += 1
                    next_drip += 0.5

        t = threading.Thread(target=drip, daemon=True)
        t.start()
        durations = []
        try:
            t_end = time.time() + self.HEADER_TIMEOUT + 3.0
            while time.time() < t_end:
                t0 = time.time()
                r, _, _ = exchange(srv, get("/health"), timeout=3, close_wait=0)
                durations.append(time.time() - t0)
                self.assertEqual(r.status, 200, r)
                with lock:
                    if len(closed_at) == self.N and time.time() > t_end - 2:
                        break
                time.sleep(0.1)
        finally:
            stop.set()
            t.join(5)
            for s in socks:
                s.close()
        self.assertGreater(len(durations), 10)
        slow = [d for d in durations if d >= 1.0]
        self.assertEqual(slow, [], "/health took >= 1 s while slow clients were connected: max %.3fs"
                         % max(durations))
        self.assertEqual(len(closed_at), self.N,
                         "%d of %d slow sockets still open after header timeout + 3 s"
                         % (self.N - len(closed_at), self.N))
        early = [closed_at[i] - first_byte[i] for i in closed_at
                 if closed_at[i] - first_byte[i] < self.HEADER_TIMEOUT * 0.8]
        self.assertEqual(early, [], "slow sockets closed before the header timeout")
        late = [closed_at[i] - first_byte[i] for i in closed_at
                if closed_at[i] - first_byte[i] > self.HEADER_TIMEOUT + 2.0]
        self.assertEqual(late, [], "slow sockets closed long after the header timeout")
        # they had sent bytes, so they get a 408 (not a silent close)
        not408 = [i for i in range(self.N) if not got.get(i, b"").startswith(b"HTTP/1.1 408")]
        self.assertEqual(not408, [], "slow sockets without 408: %r" % [got.get(i, b"")[:80] for i in not408[:3]])


if __name__ == "__main__":
    unittest.main(verbosity=2)
