#!/usr/bin/env python3
"""Process lifecycle of cap-server: SIGTERM / SIGINT drain (in-flight requests
finished with Connection: close, idle keep-alive connections closed, listener
closed, exit 0 within the grace period, last log line server.stop), forced
stop when the grace period runs out, and SIGUSR1 log reopening.

Run: python3 test/integration/test_lifecycle.py
"""
import json
import os
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capsrv import TOKEN, Server, build_request, exchange, read_response, wait_closed  # noqa: E402

RL = ["--rate-limit", "100000", "--rate-limit-token", "100000"]
BODY = b'{"capability":"ffprobe","input_key":"uploads/raw.mp4"}'


def exec_headers(length, extra=()):
    return build_request("POST", "/exec", [
        ("Host", "localhost"), ("Authorization", "Bearer " + TOKEN),
        ("Content-Type", "application/json"), ("Content-Length", str(length))] + list(extra))


def health(rid, close=False):
    h = [("Host", "localhost"), ("X-Request-Id", rid)]
    if close:
        h.append(("Connection", "close"))
    return build_request("GET", "/health", h)


def read_log(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f.read().splitlines() if l.strip()]


class Drain(unittest.TestCase):
    GRACE_MS = 5000

    def connect_refused_within(self, port, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
            except ConnectionRefusedError:
                return True
            s.close()
            time.sleep(0.05)
        return False

    def check_stop_line(self, srv, min_requests, min_connections):
        lines = read_log(srv.log_path)
        self.assertTrue(lines, "empty log")
        last = lines[-1]
        self.assertEqual(last.get("event"), "server.stop", "last log line: %r" % last)
        for k, minimum in (("requests", min_requests), ("connections", min_connections)):
            self.assertIn(k, last)
            self.assertIsInstance(last[k], int)
            self.assertFalse(isinstance(last[k], bool))
            self.assertGreaterEqual(last[k], minimum, "%s count in %r" % (k, last))
        self.assertEqual(sum(1 for l in lines if l.get("event") == "server.stop"), 1)

    def drain(self, sig):
        srv = Server(args=RL + ["--shutdown-grace-ms", str(self.GRACE_MS), "--body-timeout-ms", "20000",
                                "--idle-timeout-ms", "30000", "--header-timeout-ms", "20000"])
        socks = []
        try:
            # an idle keep-alive connection
            idle = srv.connect()
            socks.append(idle)
            idle.sendall(health("idle-1"))
            r = read_response(idle)
            self.assertEqual(r.status, 200)
            self.assertFalse(r.closing)
            # in flight: headers + half the body
            half = len(BODY) // 2
            partial = srv.connect()
            socks.append(partial)
            partial.sendall(exec_headers(len(BODY), [("X-Request-Id", "partial")]) + BODY[:half])
            # in flight: 100-continue received, body not yet sent
            cont = srv.connect()
            socks.append(cont)
            cont.sendall(exec_headers(len(BODY), [("X-Request-Id", "cont"), ("Expect", "100-continue")]))
            r = read_response(cont, timeout=3)
            self.assertEqual(r.status, 100, r)
            time.sleep(0.3)
            self.assertIsNone(srv.proc.poll())

            t0 = time.time()
            srv.proc.send_signal(sig)

            closed, extra = wait_closed(idle, 2)
            self.assertTrue(closed, "idle keep-alive connection must be closed on stop")
            self.assertEqual(extra, b"", "idle connection got bytes: %r" % extra[:200])

            self.assertTrue(self.connect_refused_within(srv.port, 2),
                            "new connections must be refused after the stop signal")
            self.assertIsNone(srv.proc.poll(), "server exited with requests still in flight")

            partial.sendall(BODY[half:])
            r = read_response(partial, timeout=3)
            # An in-flight /exec is answered, not dropped: during the drain a
            # new job would only be canceled, so the answer is 503 draining.
            self.assertEqual((r.status, r.headers.get("x-request-id"), r.code),
                             (503, "partial", "draining"), r)
            self.assertIn("retry-after", r.headers, r)
            self.assertTrue(r.closing, "in-flight response during drain needs Connection: close: %r" % r)
            self.assertTrue(wait_closed(partial, 2)[0])

            cont.sendall(BODY)
            r = read_response(cont, timeout=3)
            # An in-flight /exec is answered, not dropped: during the drain a
            # new job would only be canceled, so the answer is 503 draining.
            self.assertEqual((r.status, r.headers.get("x-request-id"), r.code),
                             (503, "cont", "draining"), r)
            self.assertIn("retry-after", r.headers, r)
            self.assertTrue(r.closing, r)
            self.assertTrue(wait_closed(cont, 2)[0])

            code = srv.proc.wait(self.GRACE_MS / 1000 + 3)
            elapsed = time.time() - t0
            self.assertEqual(code, 0)
            self.assertLess(elapsed, self.GRACE_MS / 1000, "exit took %.2fs" % elapsed)
            self.check_stop_line(srv, 3, 3)
            # the in-flight requests were logged
            ids = {l.get("req_id") for l in read_log(srv.log_path) if l.get("event") == "http.request"}
            self.assertTrue({"idle-1", "partial", "cont"} <= ids, ids)
        finally:
            for s in socks:
                s.close()
            srv.__exit__()

    def test_sigterm_drain(self):
        self.drain(signal.SIGTERM)

    def test_sigint_drain(self):
        self.drain(signal.SIGINT)

    def test_sigterm_idle_server_exits_fast(self):
        srv = Server(args=RL + ["--shutdown-grace-ms", "5000"])
        try:
            idle = srv.connect()
            idle.sendall(health("x"))
            self.assertEqual(read_response(idle).status, 200)
            t0 = time.time()
            code = srv.stop(signal.SIGTERM, timeout=8)
            self.assertEqual(code, 0)
            self.assertLess(time.time() - t0, 1.5, "nothing in flight: exit must not wait for the grace period")
            self.assertTrue(wait_closed(idle, 1)[0])
            idle.close()
            self.check_stop_line(srv, 1, 1)
        finally:
            srv.__exit__()

    def test_sigint_fresh_server(self):
        srv = Server(args=RL)
        try:
            self.assertEqual(srv.stop(signal.SIGINT, timeout=8), 0)
            self.check_stop_line(srv, 0, 0)
            lines = read_log(srv.log_path)
            self.assertEqual(lines[-1]["requests"], 0)
        finally:
            srv.__exit__()

    def test_grace_expires_forces_exit(self):
        grace = 1.0
        srv = Server(args=RL + ["--shutdown-grace-ms", str(int(grace * 1000)), "--body-timeout-ms", "30000"])
        try:
            stuck = srv.connect()
            stuck.sendall(exec_headers(len(BODY)) + BODY[:5])   # never completed
            time.sleep(0.2)
            t0 = time.time()
            srv.proc.send_signal(signal.SIGTERM)
            try:
                srv.proc.wait(grace + 3)
            except Exception:  # noqa: BLE001
                self.fail("server still running %.1fs after SIGTERM with grace %.1fs" % (grace + 3, grace))
            elapsed = time.time() - t0
            self.assertGreaterEqual(elapsed, grace * 0.8, "did not wait for the in-flight request")
            self.assertLess(elapsed, grace + 1.5)
            closed, _ = wait_closed(stuck, 1)
            self.assertTrue(closed)
            stuck.close()
            lines = read_log(srv.log_path)
            self.assertEqual(lines[-1].get("event"), "server.stop", lines[-1])
        finally:
            srv.__exit__()


class LogReopen(unittest.TestCase):
    def test_sigusr1_reopens_log(self):
        srv = Server(args=RL)
        try:
            path = srv.log_path
            r, _, _ = exchange(srv, health("before-rotate", close=True), close_wait=0)
            self.assertEqual(r.status, 200)
            srv.wait_log(lambda l: l.get("req_id") == "before-rotate")
            rotated = path + ".1"
            os.rename(path, rotated)
            self.assertFalse(os.path.exists(path))
            # written after the rename but before SIGUSR1: still goes to the old file
            r, _, _ = exchange(srv, health("between", close=True), close_wait=0)
            self.assertEqual(r.status, 200)
            deadline = time.time() + 3
            while time.time() < deadline and not any(
                    l.get("req_id") == "between" for l in read_log(rotated)):
                time.sleep(0.02)
            self.assertTrue(any(l.get("req_id") == "between" for l in read_log(rotated)),
                            "before SIGUSR1 the server must still write to the renamed file")

            srv.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            r, _, _ = exchange(srv, health("after-rotate", close=True), close_wait=0)
            self.assertEqual(r.status, 200)
            deadline = time.time() + 3
            while time.time() < deadline and not os.path.exists(path):
                time.sleep(0.02)
            self.assertTrue(os.path.exists(path), "no new log file at the original path")
            line = srv.wait_log(lambda l: l.get("req_id") == "after-rotate", timeout=3)
            self.assertEqual(line.get("event"), "http.request")
            new_ids = {l.get("req_id") for l in read_log(path)}
            old_ids = {l.get("req_id") for l in read_log(rotated)}
            self.assertNotIn("before-rotate", new_ids)
            self.assertNotIn("after-rotate", old_ids)
            self.assertIn("before-rotate", old_ids)
            events = [l.get("event") for l in read_log(path) + read_log(rotated)]
            self.assertIn("log.reopen", events)
            # a second rotation works as well
            os.rename(path, path + ".2")
            srv.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            r, _, _ = exchange(srv, health("after-second", close=True), close_wait=0)
            self.assertEqual(r.status, 200)
            srv.wait_log(lambda l: l.get("req_id") == "after-second", timeout=3)
            self.assertNotIn("after-second", {l.get("req_id") for l in read_log(path + ".2")})
            self.assertIsNone(srv.proc.poll())
            self.assertEqual(srv.stop(), 0)
            self.assertEqual(read_log(path)[-1].get("event"), "server.stop")
        finally:
            srv.__exit__()

    def test_sigusr1_without_rename_keeps_logging(self):
        srv = Server(args=RL)
        try:
            srv.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            srv.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.2)
            r, _, _ = exchange(srv, health("no-rename", close=True), close_wait=0)
            self.assertEqual(r.status, 200)
            srv.wait_log(lambda l: l.get("req_id") == "no-rename", timeout=3)
            # reopening appends; nothing logged before is lost
            self.assertTrue(any(l.get("event") == "server.start" for l in srv.log_lines()))
            self.assertIsNone(srv.proc.poll())
        finally:
            srv.__exit__()


if __name__ == "__main__":
    unittest.main(verbosity=2)
