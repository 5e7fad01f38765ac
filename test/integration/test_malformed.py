#!/usr/bin/env python3
"""Malformed and request-smuggling-shaped requests: every one must get
400 {"code":"bad_request"} and the connection closed; afterwards the server
is alive and healthy.

Run: python3 test/integration/test_malformed.py
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capsrv import TOKEN, Server, check_common_headers, exchange, read_response, wait_closed  # noqa: E402

AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
JSON = b"Content-Type: application/json\r\n"
BODY = b'{"capability":"ffprobe","input_key":"a/b.mp4"}'
EXEC = b"POST /exec HTTP/1.1\r\nHost: localhost\r\n" + AUTH + JSON
HEALTH = b"GET /health HTTP/1.1\r\nHost: localhost\r\n"


def cl(n=len(BODY)):
    return b"Content-Length: %d\r\n" % n


def ch(body=BODY):
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


TE = b"Transfer-Encoding: chunked\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"

# (name, raw bytes).  Every request is complete (a lenient parser would answer
# it rather than wait), so a hang shows up as a timeout, not a false pass.
CASES = [
    # --- framing conflicts (smuggling) ---
    ("CL then TE", EXEC + cl() + TE + b"\r\n" + ch()),
    ("TE then CL", EXEC + TE + cl() + b"\r\n" + ch()),
    ("TE chunked + CL 0", EXEC + TE + b"Content-Length: 0\r\n\r\n" + ch()),
    ("two different CL", EXEC + cl() + cl(len(BODY) + 5) + b"\r\n" + BODY + b"xxxxx"),
    ("duplicate CL same value", EXEC + cl() + cl() + b"\r\n" + BODY),
    ("CL list in one header", EXEC + b"Content-Length: %d, %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY),
    ("CL -1", EXEC + b"Content-Length: -1\r\n\r\n" + BODY),
    ("CL 1x", EXEC + b"Content-Length: 1x\r\n\r\n" + BODY),
    ("CL +N", EXEC + b"Content-Length: +%d\r\n\r\n" % len(BODY) + BODY),
    ("CL hex", EXEC + b"Content-Length: 0x2f\r\n\r\n" + BODY),
    ("CL empty", EXEC + b"Content-Length: \r\n\r\n" + BODY),
    ("CL overflow", EXEC + b"Content-Length: 184467440737095516160\r\n\r\n" + BODY),
    ("CL with inner space", EXEC + b"Content-Length: 4 7\r\n\r\n" + BODY),
    # --- transfer-encoding ---
    ("chunk size zz", EXEC + TE + b"\r\nzz\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("chunk size overflow", EXEC + TE + b"\r\nfffffffffffffffff1\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("chunk size negative", EXEC + TE + b"\r\n-2f\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("chunk size 0x prefix", EXEC + TE + b"\r\n0x2f\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("chunk size space ext", EXEC + TE + b"\r\n2f junk\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("chunk data longer than size", EXEC + TE + b"\r\n5\r\n" + BODY + b"\r\n0\r\n\r\n"),
    ("chunk missing CRLF after data", EXEC + TE + b"\r\n%x\r\n" % len(BODY) + BODY + b"XX0\r\n\r\n"),
    ("chunk bare LF after size", EXEC + TE + b"\r\n%x\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
    ("TE chunked, gzip", EXEC + b"Transfer-Encoding: chunked, gzip\r\n\r\n" + ch()),
    ("TE xchunked", EXEC + b"Transfer-Encoding: xchunked\r\n\r\n" + ch()),
    ("TE gzip only", EXEC + b"Transfer-Encoding: gzip\r\n\r\n" + ch()),
    ("TE empty", EXEC + b"Transfer-Encoding: \r\n" + cl() + b"\r\n" + BODY),
    ("TE chunked twice", EXEC + TE + TE + b"\r\n" + ch()),
    ("very long chunk extension", EXEC + TE + b"\r\n%x;ext=" % len(BODY) + b"e" * 20000 + b"\r\n"
     + BODY + b"\r\n0\r\n\r\n"),
    ("invalid trailer line", EXEC + TE + b"\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nBad Trailer\r\n\r\n"),
    # --- header syntax ---
    ("obs-fold space", HEALTH + b"X-Foo: a\r\n b\r\n\r\n"),
    ("obs-fold tab", HEALTH + b"X-Foo: a\r\n\tb\r\n\r\n"),
    ("whitespace before first header", b"GET /health HTTP/1.1\r\n Host: localhost\r\n\r\n"),
    ("bare LF everywhere", b"GET /health HTTP/1.1\nHost: localhost\n\n"),
    ("bare LF after one header", HEALTH + b"X-Foo: a\nX-Bar: b\r\n\r\n"),
    ("bare LF after request line", b"GET /health HTTP/1.1\nHost: localhost\r\n\r\n"),
    ("bare CR in header value", HEALTH + b"X-Foo: a\rb\r\n\r\n"),
    ("bare CR as line end", b"GET /health HTTP/1.1\rHost: localhost\r\n\r\n"),
    ("space before colon", b"GET /health HTTP/1.1\r\nHost : localhost\r\n\r\n"),
    ("tab before colon", HEALTH + b"X-Foo\t: a\r\n\r\n"),
    ("space in header name", HEALTH + b"X Foo: a\r\n\r\n"),
    ("@ in header name", HEALTH + b"X@Foo: a\r\n\r\n"),
    ("( in header name", HEALTH + b"X(Foo): a\r\n\r\n"),
    ("empty header name", HEALTH + b": a\r\n\r\n"),
    ("header line without colon", HEALTH + b"NoColonHere\r\n\r\n"),
    ("NUL in header value", HEALTH + b"X-Foo: a\x00b\r\n\r\n"),
    ("NUL in header name", HEALTH + b"X-F\x00oo: a\r\n\r\n"),
    ("control char in header value", HEALTH + b"X-Foo: a\x01b\r\n\r\n"),
    ("DEL in header value", HEALTH + b"X-Foo: a\x7fb\r\n\r\n"),
    # --- request line ---
    ("method G@T", b"G@T /health HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("lowercase method", b"get /health HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("version HTTP/9.9", b"GET /health HTTP/9.9\r\nHost: localhost\r\n\r\n"),
    ("version HTTP/1", b"GET /health HTTP/1\r\nHost: localhost\r\n\r\n"),
    ("version HTTX/1.1", b"GET /health HTTX/1.1\r\nHost: localhost\r\n\r\n"),
    ("version lowercase http/1.1", b"GET /health http/1.1\r\nHost: localhost\r\n\r\n"),
    ("version HTTP/1.1x", b"GET /health HTTP/1.1x\r\nHost: localhost\r\n\r\n"),
    ("no version", b"GET /health\r\nHost: localhost\r\n\r\n"),
    ("trailing space after version", b"GET /health HTTP/1.1 \r\nHost: localhost\r\n\r\n"),
    ("space inside target", b"GET /hea lth HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("control char in target", b"GET /he\x01alth HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("DEL in target", b"GET /health\x7f HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("NUL in target", b"GET /health\x00 HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("absolute-form target", b"GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("absolute-form exec", b"POST http://localhost/exec HTTP/1.1\r\nHost: localhost\r\n" + AUTH + JSON
     + cl() + b"\r\n" + BODY),
    ("asterisk target", b"GET * HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("no leading slash", b"GET health HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("leading space before method", b" GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n"),
    # --- what llhttp 8.1 lets through even in strict mode (issue 11) ---
    # Each is followed by a pipelined request: had the first one been taken,
    # the second would be answered too, and the table refuses any byte after
    # the 400.
    ("last chunk then bare LF", EXEC + TE + b"\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\n" + SMUGGLED),
    ("trailer then bare LF", EXEC + TE + b"\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nX-T: a\r\n\n"
     + SMUGGLED),
    ("obs-fold in trailer (space)", EXEC + TE + b"\r\n%x\r\n" % len(BODY) + BODY
     + b"\r\n0\r\nX-T: a\r\n b\r\n\r\n" + SMUGGLED),
    ("obs-fold in trailer (tab)", EXEC + TE + b"\r\n%x\r\n" % len(BODY) + BODY
     + b"\r\n0\r\nX-T: a\r\n\tb\r\n\r\n" + SMUGGLED),
    ("trailer without a name", EXEC + TE + b"\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n: b\r\n\r\n"
     + SMUGGLED),
    ("two spaces after method", b"GET  /health HTTP/1.1\r\nHost: localhost\r\n\r\n" + SMUGGLED),
    ("two spaces before version", b"GET /health  HTTP/1.1\r\nHost: localhost\r\n\r\n" + SMUGGLED),
    ("two spaces in exec request line", b"POST  /exec HTTP/1.1\r\nHost: localhost\r\n" + AUTH + JSON
     + cl() + b"\r\n" + BODY + SMUGGLED),
    ("TE identity, chunked", EXEC + b"Transfer-Encoding: identity, chunked\r\n\r\n" + ch() + SMUGGLED),
    ("TE gzip, chunked", EXEC + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + ch() + SMUGGLED),
    ("TE empty element, chunked", EXEC + b"Transfer-Encoding: , chunked\r\n\r\n" + ch() + SMUGGLED),
]


class Malformed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Short timeouts so that a request the server wrongly waits on fails fast.
        cls.srv = Server(args=["--rate-limit", "100000", "--rate-limit-token", "100000",
                               "--header-timeout-ms", "1000", "--body-timeout-ms", "1000",
                               "--idle-timeout-ms", "2000"])

    @classmethod
    def tearDownClass(cls):
        if cls.srv.proc.poll() is None:
            cls.srv.stop()

    def test_table_size(self):
        self.assertGreaterEqual(len(CASES), 35)
        self.assertEqual(len({raw for _, raw in CASES}), len(CASES), "requests must be distinct")
        self.assertEqual(len({name for name, _ in CASES}), len(CASES))

    def test_malformed_table(self):
        failures = []
        for name, raw in CASES:
            with self.subTest(case=name):
                t0 = time.time()
                try:
                    r, closed, extra = exchange(self.srv, raw, timeout=2.5, close_wait=1.5)
                except Exception as e:  # noqa: BLE001
                    failures.append(name)
                    self.fail("%s: no complete response (%s: %s) after %.2fs"
                              % (name, type(e).__name__, e, time.time() - t0))
                ok = (r.status == 400 and r.code == "bad_request" and closed)
                if not ok:
                    failures.append(name)
                self.assertEqual(r.status, 400, "%s -> %r" % (name, r))
                self.assertEqual(r.code, "bad_request", "%s -> %r" % (name, r))
                check_common_headers(self, r)
                self.assertTrue(r.closing, "%s: Connection: close expected: %r" % (name, r))
                self.assertTrue(closed, "%s: connection must be closed after 400" % name)
                self.assertEqual(extra, b"", "%s: bytes after the 400: %r" % (name, extra[:200]))
                self.assertLess(time.time() - t0, 0.9, "%s: answer must not wait for a timeout" % name)
        if failures:
            print("\nmalformed cases not answered 400 bad_request + close: %s" % failures, file=sys.stderr)
        # the server survived all of it
        self.assertIsNone(self.srv.proc.poll(), "cap-server died during the malformed table")
        r, _, _ = exchange(self.srv, HEALTH + b"Connection: close\r\n\r\n", close_wait=0)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "ok")

    def test_malformed_after_good_request_on_keepalive(self):
        # A valid request, then a smuggling attempt on the same connection:
        # the first is answered normally, the second with 400 + close.
        s = self.srv.connect()
        try:
            s.sendall(HEALTH + b"X-Request-Id: first\r\n\r\n")
            r = read_response(s)
            self.assertEqual((r.status, r.headers["x-request-id"]), (200, "first"))
            s.sendall(EXEC + cl() + TE + b"\r\n" + ch())
            r = read_response(s, timeout=2.5)
            self.assertEqual((r.status, r.code), (400, "bad_request"), r)
            self.assertTrue(wait_closed(s, 2)[0])
        finally:
            s.close()

    def test_smuggled_request_is_not_executed(self):
        # CL.TE smuggling: if the server believed Content-Length, the bytes after
        # the body would be a second request (GET /smuggled) and produce a 404.
        smuggled = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
        raw = EXEC + TE + b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled
        r, closed, extra = exchange(self.srv, raw, timeout=2.5, close_wait=2)
        self.assertEqual((r.status, r.code), (400, "bad_request"), r)
        self.assertTrue(closed)
        self.assertNotIn(b"HTTP/1.1", extra, "a second response leaked: %r" % extra[:200])

    def test_te_header_does_not_frame_the_body(self):
        # TE (what the client accepts in responses) is not Transfer-Encoding:
        # whatever it says, the body is framed by Content-Length, so the
        # pipelined request after it is answered as the second request.
        raw = (EXEC + b"TE: identity, chunked\r\n" + cl() + b"\r\n" + BODY
               + HEALTH + b"X-Request-Id: after-te\r\nConnection: close\r\n\r\n")
        s = self.srv.connect()
        try:
            s.sendall(raw)
            r = read_response(s, timeout=2.5)
            self.assertEqual((r.status, r.code), (404, "input_not_found"), r)
            r = read_response(s, timeout=2.5)
            self.assertEqual((r.status, r.headers["x-request-id"]), (200, "after-te"), r)
            self.assertEqual(wait_closed(s, 2), (True, b""))
        finally:
            s.close()

    def test_pipelined_after_malformed_not_answered(self):
        # Anything pipelined after a malformed request must not be answered.
        raw = b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n" + HEALTH + b"\r\n"
        r, closed, extra = exchange(self.srv, raw, timeout=2.5, close_wait=2)
        self.assertEqual((r.status, r.code), (400, "bad_request"), r)
        self.assertTrue(closed)
        self.assertEqual(extra, b"")

    def test_zz_server_alive_at_end(self):
        self.assertIsNone(self.srv.proc.poll())
        r, _, _ = exchange(self.srv, HEALTH + b"Connection: close\r\n\r\n", close_wait=0)
        self.assertEqual(r.status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
