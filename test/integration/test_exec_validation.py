#!/usr/bin/env python3
"""Integration tests: POST /exec request validation (content type, body size,
JSON shape, fields, object keys)."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from capsrv import TOKEN, Server, is_closed, recv_response  # noqa: E402
from captools import PROBE_BODY, SEED_BODY, err_body, http  # noqa: E402

HIGH = ["--rate-limit", "10000", "--rate-limit-token", "10000"]


def j(obj):
    return json.dumps(obj).encode()


def render(**kw):
    d = {"capability": "ffmpeg-render", "input_key": "uploads/raw.mp4",
         "output_key": "renders/final.mp4", "preset": "1080p"}
    d.update(kw)
    return j({k: v for k, v in d.items() if v is not DROP})


def probe(**kw):
    d = {"capability": "ffprobe", "input_key": "uploads/raw.mp4"}
    d.update(kw)
    return j({k: v for k, v in d.items() if v is not DROP})


DROP = object()

INVALID_JSON = [
    ("not JSON", b"not json"),
    # A field twice: the server would read the first, JavaScript the last.
    ("duplicate input_key",
     b'{"capability":"ffprobe","input_key":"uploads/small.mp4","input_key":"../../etc/passwd"}'),
    ("JSON array", b'[{"input_key":"uploads/raw.mp4","output_key":"renders/final.mp4","preset":"1080p"}]'),
    ("truncated", b'{"input_key":"uploads/raw.mp4","output_key":"renders/fin'),
    ("truncated after brace", b"{"),
    ("empty body", b""),
    ("null", b"null"),
    ("number", b"42"),
    ("string", b'"input_key"'),
    ("trailing garbage", SEED_BODY + b" x"),
    ("two objects", SEED_BODY + SEED_BODY),
    ("trailing comma", b'{"capability":"ffprobe","input_key":"a",}'),
    ("single quotes", b"{'capability':'ffprobe','input_key':'a'}"),
    ("unquoted name", b'{capability:"ffprobe","input_key":"a"}'),
    ("raw control char in string", b'{"capability":"ffprobe","input_key":"a\x01b"}'),
    ("bad escape", b'{"capability":"ffprobe","input_key":"a\\qb"}'),
    # JSON text must be UTF-8 (RFC 8259), and a string with an escaped NUL
    # is not the string it appears to be: both are refused as JSON.
    ("NUL inside (\\u0000)", probe(capability="ffprobe\u0000junk")),
    ("NUL", probe(input_key="a\u0000b")),
    ("NUL then traversal", probe(input_key="a\u0000/../../etc/passwd")),
    ("output_key NUL", render(output_key="renders/x\u0000.mp4")),
    ("invalid UTF-8 0xff", b'{"capability":"ffprobe","input_key":"a\xffb"}'),
    ("invalid UTF-8 lone continuation", b'{"capability":"ffprobe","input_key":"a\x80b"}'),
    ("overlong UTF-8 '/'", b'{"capability":"ffprobe","input_key":"a\xc0\xafb"}'),
    ("truncated UTF-8", b'{"capability":"ffprobe","input_key":"a\xc3"}'),
    ("UTF-8 encoded surrogate", b'{"capability":"ffprobe","input_key":"a\xed\xa0\x80b"}'),
    ("NUL inside (\\u0000)", probe(capability="ffprobe\u0000junk")),
]

INVALID_FIELD = [
    ("input_key 42", render(input_key=42)),
    ("input_key object", probe(input_key={})),
    ("output_key array", render(output_key=[])),
    ("preset empty", render(preset="")),
    ("preset number", render(preset=1080)),
    ("capability number", probe(capability=7)),
    ("idempotency_key number", probe(idempotency_key=12)),
    ("wait string", probe(wait="yes")),
    ("async string", probe(**{"async": "no"})),
]

MISSING_FIELD = [
    ("render without input_key", render(capability=DROP, input_key=DROP)),
    ("render without output_key", render(output_key=DROP)),
    ("render without preset", render(preset=DROP)),
    ("ffprobe without input_key", probe(input_key=DROP)),
    ("empty object", b"{}"),
    ("no capability and no preset", b'{"input_key":"uploads/raw.mp4"}'),
]

UNKNOWN_CAPABILITY = [
    ("rm", probe(capability="rm")),
    ("upper case", probe(capability="FFPROBE")),
    ("ffmpeg", render(capability="ffmpeg")),
]

UNKNOWN_FIELD = [
    ("extra", probe(extra=1)),
    ("Preset (case)", render(Preset="720p")),
    ("command", render(command="rm -rf /")),
]

INVALID_KEY = [
    ("input_key of 1025 bytes", probe(input_key="a" * 1025)),
    ("C1 control U+0085 in a key", probe(input_key="uploads/\u0085x")),
    ("right-to-left override in a key", probe(input_key="uploads/small.mp4\u202e4pm")),
    ("line separator in a key", render(output_key="renders/a\u2028b.mp4")),
    ("output_key of 1025 bytes", render(output_key="k/" + "b" * 1023)),
    ("input_key of 1026 bytes in 513 chars", probe(input_key="\u00e9" * 513)),
    ("/abs", probe(input_key="/abs")),
    ("a/../b", probe(input_key="a/../b")),
    ("a/./b", probe(input_key="a/./b")),
    ("a//b", probe(input_key="a//b")),
    ("..", probe(input_key="..")),
    (".", probe(input_key=".")),
    ("../x", probe(input_key="../x")),
    ("./x", probe(input_key="./x")),
    ("x/..", probe(input_key="x/..")),
    ("trailing slash", probe(input_key="a/")),
    ("ctl \\u0001", probe(input_key="ctl\u0001x")),
    ("tab", probe(input_key="a\tb")),
    ("newline", probe(input_key="a\nb")),
    ("DEL", probe(input_key="a\u007fb")),
    ("empty", probe(input_key="")),
    ("output_key ../", render(output_key="renders/../../etc/passwd")),
    ("output_key abs", render(output_key="/etc/passwd")),
    ("render input_key ..", render(input_key="uploads/..")),
    ("seed body with bad key", b'{"input_key":"uploads//raw.mp4","output_key":"renders/final.mp4","preset":"1080p"}'),
]

VALID = [
    ("seed body (no capability)", SEED_BODY),
    ("ffprobe", PROBE_BODY),
    ("explicit ffmpeg-render", render()),
    ("raw UTF-8 key", '{"capability":"ffprobe","input_key":"uploads/caf\u00e9.mp4"}'.encode("utf-8")),
    ("unicode key", probe(input_key="uploads/caf\u00e9/\u65e5\u672c.mp4")),
    ("key of 1024 bytes", probe(input_key="a" * 1024)),
    ("key of 1024 bytes in 512 chars", probe(input_key="\u00e9" * 512)),
    ("dots inside names", probe(input_key="a/.hidden/b..c/...d")),
    ("idempotency_key", render(idempotency_key="abc-123")),
    ("whitespace around", b"  \r\n\t" + SEED_BODY + b"\n "),
]


class TestExecValidation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(args=HIGH)
        cls.small = Server(args=HIGH + ["--max-body-bytes", "1000"])

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__()
        cls.small.__exit__()

    def assert_error(self, resp, status, code, what):
        st, h, b = resp
        self.assertEqual(st, status, "%s: expected %d %s, got %d %r" % (what, status, code, st, b))
        self.assertTrue(h.get("content-type", "").startswith("application/json"), (what, h))
        self.assertEqual(h.get("cache-control"), "no-store", (what, h))
        self.assertIn("x-request-id", h)
        self.assertEqual(int(h.get("content-length", -1)), len(b), what)
        body = err_body(b)
        self.assertEqual(body.get("code"), code, "%s: %r" % (what, body))
        self.assertIsInstance(body.get("error"), str, what)
        self.assertTrue(body["error"], what)

    def table(self, cases, status, code):
        for name, body in cases:
            with self.subTest(name):
                self.assert_error(http(self.srv, "POST", "/exec", body), status, code, name)

    def test_invalid_json(self):
        self.table(INVALID_JSON, 400, "invalid_json")

    def test_invalid_field(self):
        self.table(INVALID_FIELD, 400, "invalid_field")

    def test_missing_field(self):
        self.table(MISSING_FIELD, 400, "missing_field")

    def test_unknown_capability(self):
        self.table(UNKNOWN_CAPABILITY, 400, "unknown_capability")

    def test_unknown_field(self):
        self.table(UNKNOWN_FIELD, 400, "unknown_field")

    def test_invalid_key(self):
        self.table(INVALID_KEY, 400, "invalid_key")

    def test_escaped_lone_surrogate_rejected(self):
        st, h, b = http(self.srv, "POST", "/exec", b'{"capability":"ffprobe","input_key":"a\\ud800b"}')
        self.assertEqual(st, 400, b)
        self.assertIn(err_body(b).get("code"), ("invalid_key", "invalid_json"))

    def test_valid_bodies_reach_job_runner(self):
        self.table(VALID, 404, "input_not_found")

    def test_seed_body_exact(self):
        body = b'{"input_key":"uploads/raw.mp4","output_key":"renders/final.mp4","preset":"1080p"}'
        self.assert_error(http(self.srv, "POST", "/exec", body), 404, "input_not_found", "seed")

    def test_content_type(self):
        for ct in ("text/plain", "application/jsonx", "application/json-patch+json",
                   "application/x-www-form-urlencoded", "json", None):
            with self.subTest(ct):
                self.assert_error(http(self.srv, "POST", "/exec", SEED_BODY, content_type=ct),
                                  415, "unsupported_media_type", "Content-Type %r" % ct)
        for ct in ("application/json; charset=utf-8", "application/json;charset=UTF-8"):
            with self.subTest(ct):
                self.assert_error(http(self.srv, "POST", "/exec", SEED_BODY, content_type=ct),
                                  404, "input_not_found", "Content-Type %r" % ct)

    def test_415_before_413(self):
        raw = (b"POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
               b"\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
        s = self.srv.connect()
        try:
            s.sendall(raw)
            self.assert_error(recv_response(s), 415, "unsupported_media_type", "text/plain + oversize")
        finally:
            s.close()

    def oversize_headers_only(self, srv, n):
        raw = (b"POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
               b"\r\nContent-Type: application/json\r\nContent-Length: " + str(n).encode() + b"\r\n\r\n")
        s = srv.connect()
        try:
            s.sendall(raw)
            resp = recv_response(s)
            self.assert_error(resp, 413, "body_too_large", "Content-Length %d" % n)
            self.assertEqual(resp[1].get("connection", "").lower(), "close")
            self.assertTrue(is_closed(s), "connection not closed after 413")
        finally:
            s.close()

    def test_413_content_length_answered_before_body(self):
        self.oversize_headers_only(self.srv, 65537)
        self.oversize_headers_only(self.srv, 10 ** 9)
        self.oversize_headers_only(self.small, 1001)

    def test_body_size_boundary(self):
        body = SEED_BODY + b" " * (65536 - len(SEED_BODY))
        self.assert_error(http(self.srv, "POST", "/exec", body), 404, "input_not_found", "65536 bytes")
        body = SEED_BODY + b" " * (1000 - len(SEED_BODY))
        self.assert_error(http(self.small, "POST", "/exec", body), 404, "input_not_found", "1000 bytes")

    def chunked(self, srv, body, pieces=3):
        n = max(1, len(body) // pieces)
        raw = (b"POST /exec HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " +
               TOKEN.encode() + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), n):
            part = body[i:i + n]
            raw += b"%x\r\n" % len(part) + part + b"\r\n"
        raw += b"0\r\n\r\n"
        s = srv.connect()
        try:
            try:
                s.sendall(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return recv_response(s)
        finally:
            s.close()

    def test_chunked_bodies(self):
        self.assert_error(self.chunked(self.srv, SEED_BODY), 404, "input_not_found", "chunked seed")
        self.assert_error(self.chunked(self.srv, b"[1,2,3]"), 400, "invalid_json", "chunked array")
        self.assert_error(self.chunked(self.small, SEED_BODY + b" " * 1500, pieces=4), 413,
                          "body_too_large", "chunked over max_body_bytes")


if __name__ == "__main__":
    unittest.main()
