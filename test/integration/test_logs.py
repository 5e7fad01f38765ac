#!/usr/bin/env python3
"""Integration tests: the JSON log.  Runs a varied session (good and bad
tokens, credentials in query strings, malformed requests, hostile bytes in
paths and headers) and then checks every log line."""
import datetime
import json
import os
import re
import signal
import socket
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from capsrv import TOKEN, TOKEN2, Server, recv_response  # noqa: E402
from captools import SEED_BODY, TS_RE, build_request, write_file  # noqa: E402

WRONG1 = "wrong-token-Kx7pQ2mV9rT4wZ8nB3cF6hJ1"
WRONG2 = "Zq8!wrong~token-with-punct#0123456"
QTOKEN1 = "query-token-Lm4Nq8Rs2Tv6Wx0Yz3Ab7Cd"
QTOKEN2 = "query-token-Ef5Gh9Ij1Kl3Mn7Op2Qr6St"
MALTOKEN = "malformed-req-token-Uv4Wx8Yz2Ab6Cd0E"
SENTINEL = "sentinel-authz-value-Fg3Hi7Jk1Lm5No9"
BASIC_B64 = "dXNlcjpzZWNyZXQtYmFzaWMtcGFzc3dvcmQ="  # user:secret-basic-password
ALL_SECRETS = [TOKEN, TOKEN2, WRONG1, WRONG2, QTOKEN1, QTOKEN2, MALTOKEN, SENTINEL, BASIC_B64,
               TOKEN + "x", TOKEN[:-1]]
HEX32 = re.compile(r"^[0-9a-f]{32}$", re.I)
VALID_RID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def exchange(srv, raw, source=None):
    """Sends raw bytes on a new connection; returns the response tuple or None."""
    s = srv.connect(source=source)
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return recv_response(s)
        except (ConnectionError, socket.timeout, ValueError, IndexError):
            return None
    finally:
        s.close()


class TestLogs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-logs-")
        tokfile = write_file(os.path.join(d, "tokens"), "one:%s\ntwo:%s\n" % (TOKEN, TOKEN2), 0o600)
        cls.srv = Server(args=["--log-level", "debug", "--token-file", tokfile, "--rate-limit", "5"],
                         token=None)
        cls.expect = []  # (response headers, status, method, path, sent request id, strict path)
        try:
            cls.session()
            cls.rc = cls.srv.stop(signal.SIGTERM)
        except BaseException:
            cls.srv.__exit__()
            raise
        with open(cls.srv.log_path, "rb") as f:
            cls.raw_log = f.read()

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__()

    @classmethod
    def req(cls, method, path, body=None, headers=None, token=TOKEN, log_path=None, source=None,
            content_type="application/json", strict=True):
        raw = build_request(method, path, body, headers, token, content_type)
        resp = exchange(cls.srv, raw, source)
        if resp is not None and log_path is not None:
            rid = None
            hl = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
            for k, v in hl:
                if k.lower() == "x-request-id":
                    rid = v
            cls.expect.append((resp[1], resp[0], method, log_path, rid, strict))
        return resp

    @classmethod
    def session(cls):
        r = cls.req
        n = iter(range(1, 10000))

        def xff():
            return {"X-Forwarded-For": "192.0.2.%d" % next(n)}
        # good and bad tokens
        r("POST", "/exec", SEED_BODY, xff(), TOKEN, "/exec")
        r("POST", "/exec", SEED_BODY, xff(), TOKEN2, "/exec")
        for t in (WRONG1, WRONG2, TOKEN + "x", TOKEN[:-1], None):
            r("POST", "/exec", SEED_BODY, xff(), t, "/exec")
        r("POST", "/exec", SEED_BODY, dict(xff(), Authorization="Basic " + BASIC_B64), None, "/exec")
        r("POST", "/exec", SEED_BODY, dict(xff(), Authorization="Bearer " + SENTINEL), None, "/exec")
        r("POST", "/exec", SEED_BODY, dict(xff(), Authorization=SENTINEL), None, "/exec")
        # bad bodies
        r("POST", "/exec", b"{not json", xff(), TOKEN, "/exec")
        r("POST", "/exec", SEED_BODY, xff(), TOKEN, "/exec", content_type="text/plain")
        # rate limited (same client 7 times with --rate-limit 5)
        for _ in range(7):
            r("POST", "/exec", SEED_BODY, {"X-Forwarded-For": "198.51.100.9"}, TOKEN, "/exec")
        # credentials in query strings
        r("POST", "/exec?token=" + TOKEN, SEED_BODY, xff(), TOKEN, "/exec")
        r("GET", "/health?access_token=" + QTOKEN1, None, None, None, "/health")
        r("GET", "/health?page=1&x=" + TOKEN2, None, None, None, "/health")
        r("GET", "/health?api_key=" + QTOKEN2 + "&b=2", None, None, None, "/health")
        r("GET", "/nothing/here?bearer=" + QTOKEN1, None, None, None, "/nothing/here")
        r("GET", "/health?foo=bar", None, None, None, "/health")
        # other routes and methods
        r("GET", "/health", None, None, None, "/health")
        r("HEAD", "/health", None, None, None, "/health")
        r("GET", "/exec", None, None, TOKEN, "/exec")
        r("DELETE", "/health", None, None, None, "/health")
        r("GET", "/missing", None, None, None, "/missing")
        # hostile bytes in paths
        # (the parser may reject these as malformed; if not, the path is logged as sent)
        r("GET", '/quo"te', None, None, None, '/quo"te', strict=False)
        r("GET", "/back\\slash", None, None, None, "/back\\slash", strict=False)
        r("GET", "/%22%5C%00%0A%0D", None, None, None, None)
        r("GET", "/<script>alert(1)</script>", None, None, None, None)
        r("GET", "/caf\u00e9/\u65e5\u672c".encode("utf-8"), None, None, None, None)
        r("GET", b"/bad\xff\xfe\xc0\xaf", None, None, None, None)
        r("GET", "/" + "z" * 1500, None, None, None, "/" + "z" * 1500)
        # hostile request ids
        r("GET", "/health", None, {"X-Request-Id": "ok-id.1:2_3"}, None, "/health")
        r("GET", "/health", None, {"X-Request-Id": 'has"quote'}, None, "/health")
        r("GET", "/health", None, {"X-Request-Id": "back\\slash"}, None, "/health")
        r("GET", "/health", None, {"X-Request-Id": "\u00fcn\u00efc\u00f8d\u00e9".encode("utf-8")}, None, "/health")
        r("GET", "/health", None, {"X-Request-Id": b"latin\xe9\xff"}, None, "/health")
        r("GET", "/health", None, {"X-Request-Id": "x" * 65}, None, "/health")
        r("GET", "/health", None, {"X-Request-Id": "{\"a\":1}"}, None, "/health")
        # hostile X-Forwarded-For
        for v in ['1.2.3.4", "evil":"x', "\\\"\\\\", "\u00fcn\u00efc\u00f8d\u00e9".encode("utf-8"),
                  b"\xff\xfe 10.0.0.1", "a" * 500, "203.0.113.5\tx", "not an ip, 203.0.113.6",
                  "{\"level\":\"error\"}"]:
            r("POST", "/exec", SEED_BODY, {"X-Forwarded-For": v}, TOKEN, "/exec")
        # control characters in header values / request line (malformed)
        cls.ctl_resp = r("GET", "/health", None, {"X-Request-Id": b"ctl\x01x"}, None, None)
        cls.ctl_resp2 = r("GET", "/health", None, {"X-Request-Id": b"abc\x00def"}, None, None)
        r("GET", "/health", None, {"X-Forwarded-For": b"1.2.3.4\x1b[31m"}, None, None)
        r("GET", b"/a\x01b", None, None, None, None)
        r("GET", b"/a\x7fb", None, None, None, None)
        # malformed requests, some carrying credentials
        auth = b"Authorization: Bearer " + MALTOKEN.encode() + b"\r\n"
        for raw in [
            b"GARBAGE\r\n\r\n",
            b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
            b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://evil/health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /exec HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /exec HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            b"POST /exec HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n",
            b"GET /health HTTP/1.1\nHost: x\n" + auth.replace(b"\r\n", b"\n") + b"\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n" + auth + b"\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n  folded " + MALTOKEN.encode() + b"\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n" + auth + b"\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\n" + auth[:-2] + b"\x00\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHo st: x\r\n" + auth + b"\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),
            b"GET /exec?token=" + MALTOKEN.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Bad\r\n\r\n",
        ]:
            exchange(cls.srv, raw)
        # a token as a path segment is logged as [token], never as itself
        r("GET", "/jobs/" + TOKEN2, None, None, TOKEN, "/jobs/[token]")
        r("GET", "/x/" + TOKEN + "/y", None, None, None, "/x/[token]/y")
        # a trusted proxy's very long X-Forwarded-For is cut in the log
        r("GET", "/health", None, {"X-Forwarded-For": "b" * 2000}, None, "/health")
        # a final well-formed request, so that the log is surely up to date
        r("GET", "/health", None, {"X-Request-Id": "final-request"}, None, "/health")

    # ---- checks -----------------------------------------------------------

    def lines(self):
        text = self.raw_log.decode("utf-8")  # must be valid UTF-8
        out = []
        for i, raw in enumerate(text.split("\n")):
            if raw == "":
                continue
            try:
                obj = json.loads(raw)
            except ValueError as e:
                self.fail("log line %d is not JSON (%s): %r" % (i + 1, e, raw))
            self.assertIsInstance(obj, dict, raw)
            out.append(obj)
        return out

    def test_server_exited_cleanly(self):
        self.assertEqual(self.rc, 0)

    def test_log_is_utf8_and_newline_terminated(self):
        try:
            self.raw_log.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail("log is not valid UTF-8: %s near %r" % (e, self.raw_log[max(0, e.start - 60):e.end + 20]))
        self.assertTrue(self.raw_log.endswith(b"\n"))
        self.assertNotIn(b"\r", self.raw_log)

    def test_every_line_parses(self):
        ls = self.lines()
        self.assertGreater(len(ls), 40)

    def test_common_fields(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        for obj in self.lines():
            ts = obj.get("ts")
            self.assertIsInstance(ts, str, obj)
            self.assertRegex(ts, TS_RE, obj)
            t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
            self.assertLess(abs((now - t).total_seconds()), 600, "ts not UTC/now: %r" % ts)
            self.assertIn(obj.get("level"), ("debug", "info", "warn", "error"), obj)
            self.assertIsInstance(obj.get("event"), str, obj)
            self.assertRegex(obj["event"], r"^[a-z0-9_.]+$", obj)

    def test_ts_monotonic(self):
        ts = [o["ts"] for o in self.lines()]
        self.assertEqual(ts, sorted(ts))

    def test_start_and_stop_lines(self):
        ls = self.lines()
        start = [o for o in ls if o.get("event") == "server.start"]
        self.assertEqual(len(start), 1)
        s = start[0]
        for k in ("version", "host", "port", "listen", "limits", "capabilities"):
            self.assertIn(k, s)
        self.assertEqual(s["port"], self.srv.port)
        self.assertIsInstance(s["port"], int)
        self.assertEqual(sorted(s["capabilities"]), ["ffmpeg-render", "ffprobe"])
        self.assertIsInstance(s["limits"], dict)
        last = ls[-1]
        self.assertEqual(last.get("event"), "server.stop", last)
        for k in ("requests", "connections"):
            self.assertIsInstance(last.get(k), int, last)
            self.assertNotIsInstance(last.get(k), bool, last)
        self.assertGreaterEqual(last["requests"], len(self.expect))
        self.assertGreaterEqual(last["connections"], len(self.expect))

    def test_http_request_fields(self):
        reqs = [o for o in self.lines() if o.get("event") == "http.request"]
        self.assertGreaterEqual(len(reqs), len(self.expect))
        for o in reqs:
            with self.subTest(o.get("req_id")):
                for k in ("req_id", "remote", "peer"):
                    self.assertIsInstance(o.get(k), str, (k, o))
                # a request whose request line could not be parsed has no method/path:
                # null is accepted there (and only there)
                for k in ("method", "path"):
                    self.assertIn(k, o)
                    if not (o.get("status") == 400 and o.get("code") == "bad_request" and o[k] is None):
                        self.assertIsInstance(o.get(k), str, (k, o))
                for k in ("status", "bytes_in", "bytes_out"):
                    self.assertIsInstance(o.get(k), int, (k, o))
                    self.assertNotIsInstance(o.get(k), bool, (k, o))
                    self.assertGreaterEqual(o[k], 0, (k, o))
                self.assertTrue(100 <= o["status"] <= 599, o)
                self.assertIsInstance(o.get("dur_ms"), (int, float), o)
                self.assertNotIsInstance(o.get("dur_ms"), bool, o)
                self.assertGreaterEqual(o["dur_ms"], 0, o)
                self.assertIn("forwarded_for", o)
                self.assertTrue(o["forwarded_for"] is None or isinstance(o["forwarded_for"], str), o)
                self.assertNotIn("?", o["path"] or "", o)
                self.assertTrue(HEX32.match(o["req_id"]) or VALID_RID.match(o["req_id"]), o)

    def test_each_response_logged(self):
        by_id = {}
        for o in self.lines():
            if o.get("event") == "http.request":
                by_id.setdefault(o["req_id"], []).append(o)
        for h, status, method, path, sent_rid, strict in self.expect:
            rid = h.get("x-request-id")
            with self.subTest("%s %r" % (method, path[:40])):
                self.assertIsNotNone(rid)
                if sent_rid is not None and isinstance(sent_rid, str) and VALID_RID.match(sent_rid):
                    self.assertEqual(rid, sent_rid)
                else:
                    self.assertRegex(rid, HEX32)
                self.assertIn(rid, by_id, "no http.request line for %s %r (status %d)" % (method, path, status))
                o = by_id[rid][0]
                self.assertEqual(o["status"], status, o)
                self.assertEqual(o["method"], method, o)
                if strict or status != 400:
                    self.assertEqual(o["path"], path, o)
                if method != "HEAD":
                    self.assertGreater(o["bytes_out"], 0, o)

    def test_generated_request_ids_unique(self):
        ids = [h.get("x-request-id") for h, *_ in self.expect]
        gen = [i for i in ids if HEX32.match(i or "")]
        self.assertEqual(len(gen), len(set(gen)))

    def test_forwarded_for_logged_verbatim(self):
        lines = [o for o in self.lines() if o.get("event") == "http.request"]
        ffs = [o.get("forwarded_for") for o in lines]
        for v in ['1.2.3.4", "evil":"x', "\\\"\\\\", "{\"level\":\"error\"}", "not an ip, 203.0.113.6"]:
            self.assertIn(v, ffs)
        for o in lines:
            if o.get("forwarded_for") == "not an ip, 203.0.113.6":
                self.assertEqual(o.get("remote"), "203.0.113.6", o)

    def test_forwarded_for_bounded(self):
        ffs = [o.get("forwarded_for") or "" for o in self.lines() if o.get("event") == "http.request"]
        self.assertIn("b" * 256, ffs)
        self.assertLessEqual(max(len(f) for f in ffs), 256)

    def test_no_secret_in_log(self):
        text = self.raw_log.decode("utf-8", "replace")
        for s in ALL_SECRETS:
            with self.subTest(s):
                self.assertNotIn(s, text)
                for i in range(0, len(s) - 16 + 1):
                    self.assertNotIn(s[i:i + 16], text, "16-byte piece of a secret in the log")
                self.assertNotIn(json.dumps(s)[1:-1], text)
        for h in ("Bearer " + TOKEN, "Basic " + BASIC_B64, "Bearer " + SENTINEL):
            self.assertNotIn(h, text)
        self.assertNotIn("Bearer ", text)
        self.assertNotIn("access_token=", text)
        self.assertNotIn("api_key=", text)
        self.assertNotIn("?", "".join(o.get("path") or "" for o in self.lines() if o.get("event") == "http.request"))

    def test_invalid_request_id_in_malformed_request_not_echoed(self):
        # X-Request-Id "ctl\x01x" / "abc\x00def" do not match [A-Za-z0-9._:-]{1,64}: the
        # response and the log must carry a generated id, not a truncated prefix
        ids = [o.get("req_id") for o in self.lines() if o.get("event") == "http.request"]
        for resp, prefix in ((self.ctl_resp, "ctl"), (self.ctl_resp2, "abc")):
            with self.subTest(prefix):
                self.assertNotIn(prefix, ids)
                if resp is not None:
                    self.assertRegex(resp[1].get("x-request-id", ""), HEX32)


class TestUntrustedForwardedFor(unittest.TestCase):
    """X-Forwarded-For from a peer that is not a trusted proxy is whatever
    the client wrote: it is not logged at all."""

    def test_not_logged(self):
        with Server(args=["--trusted-proxies", "192.0.2.1"]) as srv:
            raw = build_request("GET", "/health", None, {"X-Forwarded-For": "203.0.113.7, " + TOKEN2},
                                None, "application/json")
            resp = exchange(srv, raw, None)
            self.assertEqual(resp[0], 200, resp)
            srv.stop(signal.SIGTERM)
            with open(srv.log_path, "rb") as f:
                text = f.read().decode("utf-8")
        self.assertNotIn(TOKEN2, text)
        self.assertNotIn("203.0.113.7", text)
        lines = [json.loads(x) for x in text.splitlines() if x]
        reqs = [o for o in lines if o.get("event") == "http.request"]
        self.assertEqual(len(reqs), 1, reqs)
        self.assertIsNone(reqs[0].get("forwarded_for"), reqs[0])
        self.assertEqual(reqs[0].get("remote"), "127.0.0.1", reqs[0])


if __name__ == "__main__":
    unittest.main()
