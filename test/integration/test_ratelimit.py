#!/usr/bin/env python3
"""Integration tests: per-client and per-token rate limits on POST /exec,
trusted proxies and X-Forwarded-For, bounded client table."""
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from capsrv import TOKEN, TOKEN2, Server  # noqa: E402
from captools import (err_body, exec_post, http, vm_rss_kib, wait_http_line,  # noqa: E402
                      write_file)

WRONG = "wrong-token-0123456789abcdef01234567"


class RateAssertions:
    def assert_not_limited(self, resp, what=""):
        st, h, b = resp
        self.assertNotEqual(st, 429, "%s: rate limited too early: %r" % (what, b))
        return resp

    def assert_limited(self, resp, what=""):
        st, h, b = resp
        self.assertEqual(st, 429, "%s: expected 429, got %d %r" % (what, st, b))
        j = err_body(b)
        self.assertEqual(j.get("code"), "rate_limited", what)
        self.assertEqual(j.get("error"), "Rate limit exceeded", what)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        ra = h.get("retry-after")
        self.assertIsNotNone(ra, "%s: no Retry-After" % what)
        self.assertRegex(ra, r"^[0-9]+$", "%s: Retry-After not an integer: %r" % (what, ra))
        self.assertGreater(int(ra), 0, what)
        self.assertLessEqual(int(ra), 60, what)
        return resp

    def burst(self, srv, n, what, **kw):
        """n requests that must all pass the limiter (done quickly so that the
        bucket cannot refill meanwhile)."""
        t0 = time.monotonic()
        for i in range(n):
            self.assert_not_limited(exec_post(srv, **kw), "%s #%d" % (what, i + 1))
        self.assertLess(time.monotonic() - t0, 1.8, "burst too slow for the test to be meaningful")


class TestDefaultLimit(RateAssertions, unittest.TestCase):
    def test_30_pass_31st_limited(self):
        with Server() as srv:
            self.burst(srv, 30, "default limit")
            resp = self.assert_limited(exec_post(srv), "31st request")
            # per-client check comes before auth
            self.assert_limited(exec_post(srv, token=WRONG), "limited client with a wrong token")
            # another client (another source address, no proxy header) is unaffected
            st, h, b = exec_post(srv, source="127.0.0.3")
            self.assertEqual(st, 404, b)
            # the limiter applies to /exec only
            st, h, b = http(srv, "GET", "/health", token=None)
            self.assertEqual(st, 200, b)
            # the 429 is logged with the client address
            line = wait_http_line(srv, resp[1]["x-request-id"])
            self.assertEqual(line.get("status"), 429, line)
            self.assertEqual(line.get("remote"), "127.0.0.1", line)

    def test_default_trusted_proxies_include_loopback(self):
        with Server() as srv:
            self.burst(srv, 30, "client A", xff="203.0.113.1")
            self.assert_limited(exec_post(srv, xff="203.0.113.1"), "client A 31st")
            # 127.0.0.1 is a trusted proxy by default: another forwarded client is another bucket
            st, h, b = exec_post(srv, xff="203.0.113.2")
            self.assertEqual(st, 404, b)
            line = wait_http_line(srv, h["x-request-id"])
            self.assertEqual(line.get("remote"), "203.0.113.2", line)


class TestTrustedProxy(RateAssertions, unittest.TestCase):
    ARGS = ["--trusted-proxies", "127.0.0.2/32", "--rate-limit-token", "100000"]

    def test_forwarded_clients_from_trusted_proxy_are_distinct(self):
        with Server(args=self.ARGS) as srv:
            for i in range(40):
                self.assert_not_limited(exec_post(srv, source="127.0.0.2", xff="198.51.100.%d" % (i + 1)),
                                        "distinct forwarded client %d" % i)
            for i in range(5):
                self.assert_not_limited(exec_post(srv, source="127.0.0.2", xff="2001:db8::%x" % (i + 1)),
                                        "distinct IPv6 forwarded client %d" % i)
            self.burst(srv, 30, "one forwarded client", source="127.0.0.2", xff="203.0.113.7")
            resp = self.assert_limited(exec_post(srv, source="127.0.0.2", xff="203.0.113.7"),
                                       "forwarded client 31st")
            line = wait_http_line(srv, resp[1]["x-request-id"])
            self.assertEqual(line.get("remote"), "203.0.113.7", line)
            self.assertEqual(line.get("forwarded_for"), "203.0.113.7", line)
            self.assertTrue(str(line.get("peer", "")).startswith("127.0.0.2"), line)
            self.assertEqual(line.get("status"), 429, line)
            # the proxy itself and other forwarded clients still pass
            self.assertEqual(exec_post(srv, source="127.0.0.2", xff="203.0.113.8")[0], 404)
            self.assertEqual(exec_post(srv, source="127.0.0.2")[0], 404)

    def test_rightmost_forwarded_entry_is_used(self):
        with Server(args=self.ARGS) as srv:
            t0 = time.monotonic()
            last = None
            for i in range(30):
                last = self.assert_not_limited(
                    exec_post(srv, source="127.0.0.2", xff="10.0.0.%d, 203.0.113.50" % (i + 1)), "#%d" % i)
            self.assertLess(time.monotonic() - t0, 1.8)
            line = wait_http_line(srv, last[1]["x-request-id"])
            self.assertEqual(line.get("remote"), "203.0.113.50", line)
            self.assertEqual(line.get("forwarded_for"), "10.0.0.30, 203.0.113.50", line)
            self.assert_limited(exec_post(srv, source="127.0.0.2", xff="10.0.0.99, 203.0.113.50"),
                                "same rightmost entry, 31st")

    def test_untrusted_peer_forwarded_for_ignored(self):
        with Server(args=self.ARGS) as srv:
            t0 = time.monotonic()
            last = None
            for i in range(30):
                last = self.assert_not_limited(
                    exec_post(srv, source="127.0.0.1", xff="198.51.100.%d" % (i + 1)), "#%d" % i)
            self.assertLess(time.monotonic() - t0, 1.8)
            resp = self.assert_limited(exec_post(srv, source="127.0.0.1", xff="198.51.100.200"),
                                       "untrusted peer with a new X-Forwarded-For, 31st")
            for r in (last, resp):
                line = wait_http_line(srv, r[1]["x-request-id"])
                self.assertEqual(line.get("remote"), "127.0.0.1", line)
                self.assertTrue(str(line.get("peer", "")).startswith("127.0.0.1"), line)
            # An untrusted peer's X-Forwarded-For is whatever the client wrote:
            # it is not logged (issue 11; test_logs checks the trusted side).
            self.assertIsNone(line.get("forwarded_for"), line)
            # the trusted proxy's forwarded clients are unaffected, and logged
            resp = exec_post(srv, source="127.0.0.2", xff="198.51.100.1")
            self.assertEqual(resp[0], 404)
            line = wait_http_line(srv, resp[1]["x-request-id"])
            self.assertEqual(line.get("forwarded_for"), "198.51.100.1", line)


class TestTokenBucket(RateAssertions, unittest.TestCase):
    def setUp(self):
        d = tempfile.mkdtemp(prefix="capsrv-rl-")
        self.tokfile = write_file(os.path.join(d, "tokens"), "a:%s\nb:%s\n" % (TOKEN, TOKEN2), 0o600)
        self.srv = Server(args=["--rate-limit-token", "5", "--token-file", self.tokfile], token=None)

    def tearDown(self):
        self.srv.__exit__()

    def test_sixth_authenticated_request_limited(self):
        for i in range(5):
            st, h, b = exec_post(self.srv, xff="192.0.2.%d" % (i + 1))
            self.assertEqual(st, 404, "request %d: %r" % (i + 1, b))
        resp = self.assert_limited(exec_post(self.srv, xff="192.0.2.6"), "6th request with the token")
        line = wait_http_line(self.srv, resp[1]["x-request-id"])
        self.assertEqual(line.get("remote"), "192.0.2.6", line)
        # the bucket is per token
        st, h, b = exec_post(self.srv, token=TOKEN2, xff="192.0.2.7")
        self.assertEqual(st, 404, b)
        # auth comes before the per-token check
        st, h, b = exec_post(self.srv, token=WRONG, xff="192.0.2.8")
        self.assertEqual(st, 401, b)
        st, h, b = exec_post(self.srv, token=None, xff="192.0.2.9")
        self.assertEqual(st, 401, b)

    def test_unauthenticated_requests_do_not_consume_token_bucket(self):
        for i in range(20):
            st, h, b = exec_post(self.srv, token=WRONG if i % 2 else TOKEN + "x", xff="198.18.0.%d" % (i + 1))
            self.assertEqual(st, 401, "bad token request %d: %r" % (i + 1, b))
        for i in range(5):
            st, h, b = exec_post(self.srv, xff="198.18.1.%d" % (i + 1))
            self.assertEqual(st, 404, "good token request %d after 20 bad ones: %r" % (i + 1, b))
        self.assert_limited(exec_post(self.srv, xff="198.18.1.100"), "6th good-token request")


class TestAuthFailuresLimited(RateAssertions, unittest.TestCase):
    """Wrong tokens on /jobs, DELETE /jobs and /metrics draw from the
    client's bucket like /exec does; right tokens there never do."""

    def test_wrong_tokens_limited_on_every_route(self):
        with Server(args=["--rate-limit", "6"]) as srv:
            routes = [("GET", "/jobs/AAAAAAAAAAAAAAAAAAAAAA"), ("DELETE", "/jobs/AAAAAAAAAAAAAAAAAAAAAA"),
                      ("GET", "/metrics")]
            seen = []
            for i in range(12):
                method, path = routes[i % len(routes)]
                st, h, b = http(srv, method, path, token=WRONG)
                seen.append(st)
                if st == 429:
                    self.assert_limited((st, h, b), "%s %s with a wrong token" % (method, path))
                else:
                    self.assertEqual(st, 401, b)
            self.assertEqual(seen[:6], [401] * 6, seen)
            self.assertEqual(seen[6:], [429] * 6, seen)
            # The bucket is empty, yet the right token still polls and scrapes.
            for method, path, want in (("GET", "/jobs/AAAAAAAAAAAAAAAAAAAAAA", 404),
                                       ("GET", "/metrics", 200)):
                for _ in range(10):
                    st, h, b = http(srv, method, path)
                    self.assertEqual(st, want, (method, path, b))
            # And /exec with a right token is limited as before: the bucket is empty.
            self.assert_limited(exec_post(srv), "/exec after the guesses")


class TestClientTable(RateAssertions, unittest.TestCase):
    def test_small_table_many_clients(self):
        with Server(args=["--rate-limit-clients", "16", "--rate-limit-token", "100000"]) as srv:
            for rnd in range(2):
                for i in range(200):
                    xff = "10.%d.%d.%d" % (rnd + 1, i // 250, i % 250 + 1)
                    st, h, b = exec_post(srv, xff=xff)
                    self.assertEqual(st, 404, "client %s: %r" % (xff, b))
            self.assertIsNone(srv.proc.poll(), "server died")
            st, h, b = http(srv, "GET", "/health", token=None)
            self.assertEqual(st, 200, b)
            rss = vm_rss_kib(srv.proc.pid)
            # AddressSanitizer's shadow memory makes RSS meaningless there.
            if not os.environ.get("CAP_SANITIZED"):
                self.assertLess(rss, 20 * 1024, "VmRSS %d KiB" % rss)
            # limiting still works for an active client
            self.burst(srv, 30, "active client", xff="203.0.113.77")
            self.assert_limited(exec_post(srv, xff="203.0.113.77"), "active client 31st")


if __name__ == "__main__":
    unittest.main()
