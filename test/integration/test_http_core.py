#!/usr/bin/env python3
"""HTTP core behaviour of cap-server: /health (GET/HEAD), 404, 405 + Allow,
required response headers, X-Request-Id handling, keep-alive, pipelining,
chunked request bodies, Expect: 100-continue, and a few checks with real curl.

Run: python3 test/integration/test_http_core.py
"""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capsrv import (TOKEN, Server, build_request, check_common_headers, chunked,  # noqa: E402
                    exchange, read_response, request, wait_closed, HEX32)

# Generous rate limits so that the many POST /exec requests here never hit 429.
BASE_ARGS = ["--rate-limit", "100000", "--rate-limit-token", "100000",
             "--header-timeout-ms", "3000", "--body-timeout-ms", "3000",
             "--idle-timeout-ms", "5000", "--shutdown-grace-ms", "2000"]

VALID_EXEC = b'{"capability":"ffprobe","input_key":"uploads/raw.mp4"}'
VALID_RENDER = b'{"input_key":"uploads/raw.mp4","output_key":"renders/final.mp4","preset":"1080p"}'


def get(path, extra=(), method="GET", close=False):
    h = [("Host", "localhost")] + list(extra)
    if close:
        h.append(("Connection", "close"))
    return build_request(method, path, h)


def exec_req(body=VALID_EXEC, token=TOKEN, ctype="application/json", extra=(), te_chunked=False,
             close=False, path="/exec", prechunked=False):
    """POST /exec.  te_chunked: body is sent chunk-encoded (already encoded
    when prechunked)."""
    h = [("Host", "localhost")]
    if token is not None:
        h.append(("Authorization", "Bearer " + token))
    if ctype is not None:
        h.append(("Content-Type", ctype))
    if te_chunked:
        h.append(("Transfer-Encoding", "chunked"))
        payload = body if prechunked else chunked(body)
    else:
        h.append(("Content-Length", str(len(body))))
        payload = body
    h += list(extra)
    if close:
        h.append(("Connection", "close"))
    return build_request("POST", path, h, payload)


class HttpCore(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(args=BASE_ARGS)

    @classmethod
    def tearDownClass(cls):
        alive = cls.srv.proc.poll() is None
        code = cls.srv.stop() if alive else cls.srv.proc.returncode
        if not alive:
            raise AssertionError("cap-server died during the tests (exit %r)" % code)
        if code != 0:
            raise AssertionError("cap-server exited %r on SIGTERM" % code)

    def ex(self, raw, **kw):
        return exchange(self.srv, raw, **kw)

    # ------------------------------------------------------------ /health
    def test_get_health(self):
        r, closed, extra = self.ex(get("/health", close=True))
        self.assertEqual(r.status, 200, r)
        check_common_headers(self, r)
        self.assertTrue(r.headers["content-type"].lower().startswith("application/json"), r)
        self.assertEqual(int(r.headers["content-length"]), len(r.body))
        d = r.json()
        self.assertEqual(d["status"], "ok")
        self.assertEqual(d["capabilities"], ["ffmpeg-render", "ffprobe"])
        self.assertEqual(d["version"], "0.1.0")
        self.assertIsInstance(d["uptime_s"], int)
        self.assertFalse(isinstance(d["uptime_s"], bool))
        self.assertGreaterEqual(d["uptime_s"], 0)
        self.assertLess(d["uptime_s"], 3600)
        self.assertTrue(r.closing, "Connection: close requested, response must say close: %r" % r)
        self.assertTrue(closed)
        self.assertEqual(extra, b"")

    def test_health_ignores_query_string(self):
        r, _, _ = self.ex(get("/health?verbose=1&x=y", close=True))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "ok")

    def test_head_health_has_length_but_no_body(self):
        s = self.srv.connect()
        try:
            # HEAD then GET on one keep-alive connection: if HEAD carried a body,
            # those bytes would be parsed as the start of the GET response.
            s.sendall(get("/health", method="HEAD"))
            h = read_response(s, head=True)
            self.assertEqual(h.status, 200, h)
            check_common_headers(self, h)
            self.assertGreater(int(h.headers["content-length"]), 0)
            s.sendall(get("/health"))
            g = read_response(s)
            self.assertEqual(g.status, 200, g)
            self.assertTrue(g.body.startswith(b"{"), g)
            self.assertLessEqual(abs(int(h.headers["content-length"]) - len(g.body)), 2,
                                 "HEAD Content-Length should be the GET body length")
            self.assertEqual(h.headers["content-type"], g.headers["content-type"])
        finally:
            s.close()

    def test_head_health_connection_close_no_body_bytes(self):
        r, closed, extra = self.ex(get("/health", method="HEAD", close=True), head=True)
        self.assertEqual(r.status, 200, r)
        self.assertGreater(int(r.headers["content-length"]), 0)
        self.assertEqual(r.body, b"")
        self.assertTrue(closed)
        self.assertEqual(extra, b"", "HEAD response must not carry body bytes")

    # ------------------------------------------------------------ 404 / 405
    def test_unknown_paths_404(self):
        for path in ["/nope", "/", "/healthz", "/health/x", "/exec/run", "/HEALTH", "/exec2"]:
            with self.subTest(path=path):
                r, _, _ = self.ex(get(path, close=True))
                self.assertEqual(r.status, 404, r)
                self.assertEqual(r.code, "not_found", r)
                check_common_headers(self, r)

    def test_unknown_path_post_404(self):
        r, _, _ = self.ex(exec_req(path="/nope", close=True))
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.code, "not_found")

    def _allow(self, r):
        self.assertIn("allow", r.headers, "405 without Allow: %r" % r)
        return {t.strip().upper() for t in r.headers["allow"].split(",") if t.strip()}

    def test_405_on_health(self):
        for method in ["DELETE", "PUT", "PATCH", "OPTIONS"]:
            with self.subTest(method=method):
                r, _, _ = self.ex(get("/health", method=method, close=True))
                self.assertEqual(r.status, 405, r)
                self.assertEqual(r.code, "method_not_allowed")
                check_common_headers(self, r)
                allow = self._allow(r)
                self.assertIn("GET", allow)
                self.assertIn("HEAD", allow)
                self.assertNotIn(method, allow)

    def test_405_post_health(self):
        raw = build_request("POST", "/health", [("Host", "x"), ("Content-Length", "0"),
                                                ("Connection", "close")])
        r, _, _ = self.ex(raw)
        self.assertEqual(r.status, 405, r)
        self.assertIn("GET", self._allow(r))

    def test_405_on_exec(self):
        for method in ["GET", "DELETE", "PUT"]:
            with self.subTest(method=method):
                r, _, _ = self.ex(get("/exec", method=method, extra=[("Authorization", "Bearer " + TOKEN)],
                                      close=True))
                self.assertEqual(r.status, 405, r)
                self.assertEqual(r.code, "method_not_allowed")
                check_common_headers(self, r)
                allow = self._allow(r)
                self.assertIn("POST", allow)
                self.assertNotIn(method, allow)

    def test_405_head_exec_has_no_body(self):
        r, closed, extra = self.ex(get("/exec", method="HEAD", close=True), head=True)
        self.assertEqual(r.status, 405, r)
        self.assertIn("POST", self._allow(r))
        self.assertTrue(closed)
        self.assertEqual(extra, b"", "HEAD error response must not carry a body")

    # ------------------------------------------------------------ headers on every response
    def test_required_headers_on_every_response(self):
        cases = [
            ("200 health", get("/health", close=True), 200),
            ("404", get("/missing", close=True), 404),
            ("405", get("/exec", close=True), 405),
            ("401 no token", exec_req(token=None, close=True), 401),
            ("401 bad token", exec_req(token="wrong-token-0123456789abcdef", close=True), 401),
            ("415", exec_req(ctype="text/plain", close=True), 415),
            ("400 invalid_json", exec_req(body=b"{nope", close=True), 400),
            ("400 unknown_capability", exec_req(body=b'{"capability":"rm","input_key":"a"}',
                                                close=True), 400),
            ("404", exec_req(close=True), 404),
            ("404 render", exec_req(body=VALID_RENDER, close=True), 404),
            ("400 malformed", b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("413", exec_req(body=b"x" * 70000, close=True), 413),
            ("431", get("/health", extra=[("X-Big", "a" * 9000)], close=True), 431),
            ("414", get("/health?q=" + "a" * 3000, close=True), 414),
            ("400 token_in_url", get("/health?access_token=abc", close=True), 400),
        ]
        for name, raw, status in cases:
            with self.subTest(case=name):
                r, _, _ = self.ex(raw, close_wait=0)
                self.assertEqual(r.status, status, r)
                check_common_headers(self, r)
                self.assertEqual(int(r.headers["content-length"]), len(r.body))
                self.assertRegex(r.headers["x-request-id"], r"^[A-Za-z0-9._:-]{1,64}$")

    def test_401_details(self):
        r, _, _ = self.ex(exec_req(token=None, close=True))
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json(), {"error": "Unauthorized", "code": "unauthorized"})
        self.assertTrue(r.headers.get("www-authenticate", "").startswith("Bearer"), r)

    def test_valid_exec_reaches_job_runner(self):
        for body in (VALID_EXEC, VALID_RENDER):
            r, _, _ = self.ex(exec_req(body=body, close=True))
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.code, "input_not_found", r)
            self.assertTrue(r.headers["content-type"].lower().startswith("application/json"))

    # ------------------------------------------------------------ X-Request-Id
    def test_request_id_echoed_when_sane(self):
        for rid in ["abc", "A.b_c:d-e", "0", "x" * 64, "req-2026-11-25T15:16:29.123"]:
            with self.subTest(rid=rid):
                r, _, _ = self.ex(get("/health", extra=[("X-Request-Id", rid)], close=True))
                self.assertEqual(r.status, 200)
                self.assertEqual(r.headers["x-request-id"], rid)
                r, _, _ = self.ex(get("/missing", extra=[("X-Request-Id", rid)], close=True))
                self.assertEqual(r.headers["x-request-id"], rid)

    def test_request_id_replaced_when_insane(self):
        bad = ["x" * 65, "abc def", "abc/def", "abc$", 'ab"c', "a,b", "caf\xe9", "<script>",
               "abc;def", "a" * 200]
        for rid in bad:
            with self.subTest(rid=rid):
                r, _, _ = self.ex(get("/health", extra=[("X-Request-Id", rid)], close=True))
                self.assertEqual(r.status, 200, r)
                got = r.headers["x-request-id"]
                self.assertNotEqual(got, rid)
                self.assertNotEqual(got, rid.strip())
                self.assertRegex(got, HEX32)

    def test_request_id_empty_value_replaced(self):
        r, _, _ = self.ex(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id:\r\nConnection: close\r\n\r\n")
        self.assertEqual(r.status, 200, r)
        self.assertRegex(r.headers["x-request-id"], HEX32)

    def test_request_id_generated_unique(self):
        ids = set()
        for _ in range(10):
            r, _, _ = self.ex(get("/health", close=True))
            self.assertRegex(r.headers["x-request-id"], HEX32)
            ids.add(r.headers["x-request-id"])
        self.assertEqual(len(ids), 10, "generated request ids must differ")

    # ------------------------------------------------------------ keep-alive / pipelining
    def test_keep_alive_sequential(self):
        s = self.srv.connect()
        try:
            for i in range(6):
                s.sendall(get("/health", extra=[("X-Request-Id", "ka-%d" % i)]))
                r = read_response(s)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers["x-request-id"], "ka-%d" % i)
                self.assertFalse(r.closing, "HTTP/1.1 default must keep the connection: %r" % r)
            s.sendall(get("/missing", extra=[("X-Request-Id", "ka-404")]))
            r = read_response(s)
            self.assertEqual(r.status, 404)
            s.sendall(exec_req(extra=[("X-Request-Id", "ka-404")]))
            r = read_response(s)
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.headers["x-request-id"], "ka-404")
            s.sendall(get("/health", extra=[("X-Request-Id", "ka-last")], close=True))
            r = read_response(s)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers["x-request-id"], "ka-last")
            self.assertTrue(r.closing, r)
            closed, extra = wait_closed(s, 3)
            self.assertTrue(closed, "server must close after Connection: close")
            self.assertEqual(extra, b"")
        finally:
            s.close()

    def test_upgrade_is_ignored_and_pipeline_goes_on(self):
        # An Upgrade request is answered as plain HTTP and the connection
        # stays HTTP: the request after it is parsed and answered in order.
        # (Once, this sequence crashed the server.)
        up = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
        s = self.srv.connect()
        try:
            s.sendall(get("/nope", extra=up + [("X-Request-Id", "up-1")]) +
                      get("/health", extra=[("X-Request-Id", "up-2")]))
            r1 = read_response(s)
            r2 = read_response(s)
            self.assertEqual((r1.status, r1.headers["x-request-id"]), (404, "up-1"), r1)
            self.assertEqual((r2.status, r2.headers["x-request-id"]), (200, "up-2"), r2)
        finally:
            s.close()
        self.assertIsNone(self.srv.proc.poll(), "server must survive an Upgrade request")
        st, _, _ = request(self.srv, "GET", "/health")
        self.assertEqual(st, 200)

    def test_rejected_small_body_keeps_connection(self):
        # Without Expect, a body /exec would accept anyway is read and
        # dropped, so a 401 (or 404, 415) keeps the connection for the next
        # request, as a Worker reusing its connection expects.
        s = self.srv.connect()
        try:
            s.sendall(exec_req(token="wrong-token-0123456789abcdef", extra=[("X-Request-Id", "rej-1")]))
            r = read_response(s)
            self.assertEqual((r.status, r.code, r.headers["x-request-id"]), (401, "unauthorized", "rej-1"), r)
            self.assertFalse(r.closing, r)
            s.sendall(exec_req(path="/nope", extra=[("X-Request-Id", "rej-2")]) +
                      exec_req(ctype="text/plain", te_chunked=True, extra=[("X-Request-Id", "rej-3")]) +
                      get("/health", extra=[("X-Request-Id", "rej-4")]))
            for rid, status in (("rej-2", 404), ("rej-3", 415), ("rej-4", 200)):
                r = read_response(s)
                self.assertEqual((r.status, r.headers["x-request-id"]), (status, rid), r)
                self.assertFalse(r.closing, r)
        finally:
            s.close()

    def test_http10_closes_by_default(self):
        r, closed, extra = self.ex(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(closed, "HTTP/1.0 without keep-alive must be closed")
        self.assertEqual(extra, b"")

    def test_pipelining_20_in_one_write(self):
        reqs, expect = [], []
        for i in range(20):
            rid = "pipe-%02d" % i
            if i == 7:
                reqs.append(exec_req(extra=[("X-Request-Id", rid)]))
                expect.append((rid, 404, False))
            elif i == 11:
                reqs.append(exec_req(body=VALID_RENDER, te_chunked=True, extra=[("X-Request-Id", rid)]))
                expect.append((rid, 404, False))
            elif i == 13:
                reqs.append(get("/health", method="HEAD", extra=[("X-Request-Id", rid)]))
                expect.append((rid, 200, True))
            elif i == 19:
                reqs.append(get("/health", extra=[("X-Request-Id", rid)], close=True))
                expect.append((rid, 200, False))
            else:
                reqs.append(get("/health", extra=[("X-Request-Id", rid)]))
                expect.append((rid, 200, False))
        s = self.srv.connect()
        try:
            s.sendall(b"".join(reqs))
            for rid, status, head in expect:
                r = read_response(s, head=head)
                self.assertEqual((r.headers.get("x-request-id"), r.status), (rid, status),
                                 "pipelined responses out of order or wrong: %r" % r)
                check_common_headers(self, r)
            closed, extra = wait_closed(s, 3)
            self.assertTrue(closed)
            self.assertEqual(extra, b"", "nothing may follow the last pipelined response")
        finally:
            s.close()

    def test_pipelining_bytes_split_awkwardly(self):
        # The same pipeline, trickled in small pieces crossing request boundaries.
        data = b"".join(get("/health", extra=[("X-Request-Id", "split-%d" % i)]) for i in range(5))
        data += exec_req(extra=[("X-Request-Id", "split-x")], close=True)
        s = self.srv.connect()
        try:
            for i in range(0, len(data), 37):
                s.sendall(data[i:i + 37])
                time.sleep(0.002)
            for i in range(5):
                r = read_response(s)
                self.assertEqual((r.status, r.headers["x-request-id"]), (200, "split-%d" % i))
            r = read_response(s)
            self.assertEqual((r.status, r.headers["x-request-id"]), (404, "split-x"))
        finally:
            s.close()

    # ------------------------------------------------------------ chunked bodies
    def test_chunked_valid_json_404_and_keepalive(self):
        s = self.srv.connect()
        try:
            s.sendall(exec_req(body=VALID_RENDER, te_chunked=True))
            r = read_response(s)
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.code, "input_not_found")
            s.sendall(get("/health", extra=[("X-Request-Id", "after-chunked")]))
            r = read_response(s)
            self.assertEqual((r.status, r.headers["x-request-id"]), (200, "after-chunked"))
        finally:
            s.close()

    def test_chunked_one_byte_chunks_ext_and_trailer(self):
        body = b"".join(b"1;ext=v\r\n" + VALID_EXEC[i:i + 1] + b"\r\n" for i in range(len(VALID_EXEC)))
        body += b"0\r\nX-Trailer: yes\r\n\r\n"
        r, _, _ = self.ex(exec_req(body=body, te_chunked=True, prechunked=True, close=True))
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.code, "input_not_found")

    def test_chunked_body_is_really_decoded(self):
        # Chunk framing must not leak into the JSON: a broken JSON split over
        # chunks must be invalid_json, a good one 404 (above).
        r, _, _ = self.ex(exec_req(body=b'{"capability":"ffprobe",', te_chunked=True, close=True))
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.code, "invalid_json")

    def test_chunked_over_max_body_413(self):
        with Server(args=BASE_ARGS + ["--max-body-bytes", "1024"]) as srv:
            big = b'{"capability":"ffprobe","input_key":"' + b"a" * 1500 + b'"}'
            r, closed, _ = exchange(srv, exec_req(body=chunked(big, 100), te_chunked=True,
                                                prechunked=True))
            self.assertEqual(r.status, 413, r)
            self.assertEqual(r.code, "body_too_large")
            self.assertTrue(r.closing, r)
            self.assertTrue(closed)
            # One chunk larger than the limit, its data only partly sent (the
            # terminating chunk never comes): 413 as soon as the limit is passed.
            s = srv.connect()
            try:
                s.sendall(exec_req(body=b"", te_chunked=True, prechunked=True)
                          + b"800\r\n" + b"a" * 1100)
                r = read_response(s, timeout=2.5)
                self.assertEqual(r.status, 413, r)
                self.assertTrue(wait_closed(s, 3)[0])
            finally:
                s.close()
            # Under the limit is fine on the same server.
            r, _, _ = exchange(srv, exec_req(body=chunked(VALID_EXEC, 5), te_chunked=True,
                                                prechunked=True, close=True))
            self.assertEqual(r.status, 404, r)
            self.assertIsNone(srv.proc.poll())

    # ------------------------------------------------------------ Expect: 100-continue
    def _expect_headers(self, body_len=len(VALID_EXEC), token=TOKEN, ctype="application/json",
                        path="/exec", expect="100-continue"):
        h = [("Host", "localhost")]
        if token is not None:
            h.append(("Authorization", "Bearer " + token))
        h += [("Content-Type", ctype), ("Content-Length", str(body_len)), ("Expect", expect)]
        return build_request("POST", path, h)

    def test_expect_100_accepted(self):
        s = self.srv.connect()
        try:
            s.sendall(self._expect_headers())
            r = read_response(s, timeout=2)
            self.assertEqual(r.status, 100, "expected 100 Continue before the body: %r" % r)
            self.assertTrue(r.raw_head.startswith(b"HTTP/1.1 100"), r.raw_head)
            s.sendall(VALID_EXEC)
            r = read_response(s, timeout=3)
            self.assertEqual(r.status, 404, r)
            check_common_headers(self, r)
            # keep-alive continues after it
            s.sendall(get("/health", extra=[("X-Request-Id", "after-100")]))
            r = read_response(s)
            self.assertEqual((r.status, r.headers["x-request-id"]), (200, "after-100"))
        finally:
            s.close()

    def test_expect_100_chunked(self):
        h = [("Host", "x"), ("Authorization", "Bearer " + TOKEN), ("Content-Type", "application/json"),
             ("Transfer-Encoding", "chunked"), ("Expect", "100-continue"), ("Connection", "close")]
        s = self.srv.connect()
        try:
            s.sendall(build_request("POST", "/exec", h))
            r = read_response(s, timeout=2)
            self.assertEqual(r.status, 100, r)
            s.sendall(chunked(VALID_EXEC, 10))
            r = read_response(s, timeout=3)
            self.assertEqual(r.status, 404, r)
        finally:
            s.close()

    def _expect_rejected(self, raw, status, code):
        """Sends only the headers (the body is never sent) and requires the
        final answer at once, no 100 Continue, and the connection closed."""
        s = self.srv.connect()
        try:
            t0 = time.time()
            s.sendall(raw)
            r = read_response(s, timeout=2)
            elapsed = time.time() - t0
            self.assertNotEqual(r.status, 100, "100 Continue must not be sent when the request fails")
            self.assertEqual(r.status, status, r)
            self.assertEqual(r.code, code, r)
            self.assertLess(elapsed, 1.0, "final answer must come at once, not after a timeout")
            check_common_headers(self, r)
            self.assertTrue(r.closing, "Connection: close expected: %r" % r)
            closed, extra = wait_closed(s, 2)
            self.assertTrue(closed, "connection must be closed after a rejected Expect")
            self.assertNotIn(b"100 Continue", extra)
            self.assertEqual(extra, b"")
            return r
        finally:
            s.close()

    def test_expect_rejected_no_token(self):
        r = self._expect_rejected(self._expect_headers(token=None), 401, "unauthorized")
        self.assertTrue(r.headers.get("www-authenticate", "").startswith("Bearer"))

    def test_expect_rejected_wrong_token(self):
        self._expect_rejected(self._expect_headers(token="not-the-right-token-0123456789"),
                              401, "unauthorized")

    def test_expect_rejected_too_large(self):
        self._expect_rejected(self._expect_headers(body_len=70000), 413, "body_too_large")

    def test_expect_rejected_body_never_needed_huge(self):
        # A 1 GB body announced: the answer must come without any body byte.
        self._expect_rejected(self._expect_headers(body_len=1 << 30, token=None), 401, "unauthorized")

    def test_expect_rejected_bad_content_type(self):
        self._expect_rejected(self._expect_headers(ctype="text/plain"), 415, "unsupported_media_type")

    def test_expect_rejected_unknown_path(self):
        self._expect_rejected(self._expect_headers(path="/nothing-here"), 404, "not_found")

    def test_expect_other_value_417(self):
        r, _, _ = self.ex(self._expect_headers(expect="200-ok"), close_wait=0)
        self.assertEqual(r.status, 417, r)
        self.assertEqual(r.code, "expectation_failed")
        check_common_headers(self, r)

    # ------------------------------------------------------------ real curl
    def curl(self, *args, timeout=20):
        p = subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args),
                           capture_output=True, timeout=timeout)
        return p

    def test_curl_include(self):
        p = self.curl("-i", self.srv.url("/health"))
        self.assertEqual(p.returncode, 0, p.stderr)
        head, body = p.stdout.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.assertRegex(lines[0], r"^HTTP/1\.1 200")
        hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        for h in ("content-type", "content-length", "x-request-id", "cache-control"):
            self.assertIn(h, hdrs)
        self.assertEqual(int(hdrs["content-length"]), len(body))
        self.assertEqual(json.loads(body)["status"], "ok")

    def test_curl_head(self):
        p = self.curl("-I", self.srv.url("/health"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode("latin-1"), r"^HTTP/1\.1 200")
        self.assertRegex(p.stdout.decode("latin-1").lower(), r"content-length: [1-9][0-9]*")

    def test_curl_keepalive_two_urls(self):
        p = self.curl("-o", "/dev/null", "-o", "/dev/null",
                      "-w", "%{http_code} %{num_connects}\\n",
                      self.srv.url("/health"), self.srv.url("/nope"))
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().split()
        self.assertEqual(lines, ["200", "1", "404", "0"],
                         "second transfer must reuse the first connection")

    def test_curl_post_chunked_and_expect(self):
        p = self.curl("-v", "-o", "-", "-w", "\\n%{http_code}",
                      "-H", "Authorization: Bearer " + TOKEN,
                      "-H", "Content-Type: application/json",
                      "-H", "Transfer-Encoding: chunked",
                      "-H", "Expect: 100-continue",
                      "--expect100-timeout", "5",
                      "--data-binary", VALID_EXEC.decode(), self.srv.url("/exec"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.endswith(b"404"), p.stdout)
        self.assertIn(b"HTTP/1.1 100", p.stderr, "curl should have seen 100 Continue")
        self.assertIn(b"input_not_found", p.stdout)

    def test_curl_unauthorized(self):
        p = self.curl("-o", "/dev/null", "-w", "%{http_code}",
                      "-H", "Content-Type: application/json",
                      "--data-binary", VALID_EXEC.decode(), self.srv.url("/exec"))
        self.assertEqual(p.stdout, b"401")


if __name__ == "__main__":
    unittest.main(verbosity=2)
