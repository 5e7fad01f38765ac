#!/usr/bin/env python3
"""Integration tests: bearer-token auth on POST /exec, token files, tokens in
query strings, SIGHUP token rotation, start-up auth configuration."""
import os
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from capsrv import TOKEN, TOKEN2, Server, recv_response  # noqa: E402
from captools import (SEED_BODY, PROBE_BODY, complete_log_lines, err_body, exec_post,  # noqa: E402
                      http, run_bin, send_on, wait_event, wait_for, wait_http_line, write_file)

TOKEN3 = "third-token-ZYXWVUTSRQPONMLKJIHGFEDCBA"
ROTATED = "rotated-token-9876543210fedcba98765"
COMMENTED = "#commented-out-token-0123456789abc"
WRONG = "wrong-token-0123456789abcdef01234567"
HIGH = ["--rate-limit", "10000", "--rate-limit-token", "10000"]


class AuthAssertions:
    def assert_json(self, headers):
        self.assertTrue(headers.get("content-type", "").startswith("application/json"), headers)
        self.assertEqual(headers.get("cache-control"), "no-store", headers)
        self.assertIn("x-request-id", headers)

    def assert_passes(self, resp, what=""):
        st, h, b = resp
        self.assertEqual(st, 404, "%s: %r" % (what, b))
        self.assertEqual(err_body(b)["code"], "input_not_found", what)
        self.assert_json(h)

    def assert_unauthorized(self, resp, what=""):
        st, h, b = resp
        self.assertEqual(st, 401, "%s: %r" % (what, b))
        j = err_body(b)
        self.assertEqual(j.get("code"), "unauthorized", what)
        self.assertEqual(j.get("error"), "Unauthorized", what)
        self.assertRegex(h.get("www-authenticate", ""), r"^Bearer\b", what)
        self.assert_json(h)

    def assert_token_in_url(self, resp, what=""):
        st, h, b = resp
        self.assertEqual(st, 400, "%s: %r" % (what, b))
        self.assertEqual(err_body(b).get("code"), "token_in_url", what)
        self.assert_json(h)


class TestBearer(AuthAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(args=HIGH)

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__()

    def test_right_token_passes_auth(self):
        self.assert_passes(exec_post(self.srv, token=TOKEN), "seed body")
        self.assert_passes(exec_post(self.srv, token=TOKEN, body=PROBE_BODY), "ffprobe body")

    def test_bad_credentials_get_401(self):
        cases = [
            ("missing header", {}),
            ("wrong token", {"Authorization": "Bearer " + WRONG}),
            ("basic scheme", {"Authorization": "Basic " + TOKEN}),
            ("token scheme", {"Authorization": "Token " + TOKEN}),
            ("no scheme", {"Authorization": TOKEN}),
            ("one extra char", {"Authorization": "Bearer " + TOKEN + "x"}),
            ("prefix (all but last)", {"Authorization": "Bearer " + TOKEN[:-1]}),
            ("prefix (16 chars)", {"Authorization": "Bearer " + TOKEN[:16]}),
            ("last char changed", {"Authorization": "Bearer " + TOKEN[:-1] + "X"}),
            ("scheme only", {"Authorization": "Bearer"}),
            ("scheme and space", {"Authorization": "Bearer "}),
            ("empty header", {"Authorization": ""}),
            ("token twice", {"Authorization": "Bearer " + TOKEN + TOKEN}),
        ]
        for name, hdrs in cases:
            with self.subTest(name):
                self.assert_unauthorized(exec_post(self.srv, token=None, headers=hdrs), name)

    def test_auth_checked_before_body_and_content_type(self):
        self.assert_unauthorized(http(self.srv, "POST", "/exec", b"{not json", token=WRONG),
                                 "bad token + bad body")
        self.assert_unauthorized(http(self.srv, "POST", "/exec", SEED_BODY, token=None,
                                      content_type="text/plain"), "no token + text/plain")

    def test_health_needs_no_auth(self):
        st, h, b = http(self.srv, "GET", "/health", token=None)
        self.assertEqual(st, 200, b)

    def test_tokens_never_logged(self):
        exec_post(self.srv, token=TOKEN)
        exec_post(self.srv, token=WRONG)
        st, h, _ = exec_post(self.srv, token=TOKEN + "x")
        wait_http_line(self.srv, h["x-request-id"])
        text = self.srv.log_text()
        for t in (TOKEN, WRONG, TOKEN[:16]):
            self.assertNotIn(t, text)


class TestTokenFile(AuthAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="capsrv-auth-")
        cls.path = write_file(os.path.join(cls.dir, "tokens"), (
            "# cap-server tokens\n"
            "\n"
            "   \n"
            "alice:%s\n"
            "# bob is the render farm\n"
            "bob.render-farm_2:%s\n"
            "%s\n"
            "%s\n" % (TOKEN, TOKEN2, TOKEN3, COMMENTED)), 0o600)
        cls.srv = Server(args=HIGH + ["--token-file", cls.path], token=None)

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__()

    def test_all_tokens_work(self):
        for t in (TOKEN, TOKEN2, TOKEN3):
            with self.subTest(t):
                self.assert_passes(exec_post(self.srv, token=t), t)

    def test_name_prefix_and_comment_are_not_tokens(self):
        for t in ("alice:" + TOKEN, "bob.render-farm_2:" + TOKEN2, COMMENTED,
                  COMMENTED[1:], "alice", WRONG):
            with self.subTest(t):
                self.assert_unauthorized(exec_post(self.srv, token=t), t)

    def test_mode_0600_gives_no_mode_warning(self):
        self.assert_passes(exec_post(self.srv, token=TOKEN))
        events = [l.get("event") for l in complete_log_lines(self.srv.log_text())]
        self.assertNotIn("auth.token_file_mode", events)

    def test_token_file_content_not_logged(self):
        st, h, _ = exec_post(self.srv, token=TOKEN2)
        wait_http_line(self.srv, h["x-request-id"])
        text = self.srv.log_text()
        for t in (TOKEN, TOKEN2, TOKEN3, COMMENTED[1:]):
            self.assertNotIn(t, text)


class TestTokenInUrl(AuthAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(args=HIGH)

    @classmethod
    def tearDownClass(cls):
        cls.srv.__exit__()

    def check(self, method, target, body=None, token=TOKEN):
        resp = http(self.srv, method, target, body, token=token)
        self.assert_token_in_url(resp, target)
        line = wait_http_line(self.srv, resp[1]["x-request-id"])
        self.assertEqual(line.get("status"), 400, line)
        self.assertEqual(line.get("path"), target.split("?", 1)[0], line)
        self.assertNotIn("?", line.get("path"), line)
        return line

    def test_exec_token_param(self):
        self.check("POST", "/exec?token=" + TOKEN, SEED_BODY)

    def test_health_access_token_param(self):
        self.check("GET", "/health?access_token=x", token=None)

    def test_innocent_name_with_configured_token_value(self):
        self.check("GET", "/health?page=2&q=" + TOKEN, token=None)
        self.check("POST", "/exec?q=" + TOKEN, SEED_BODY)

    def test_other_credential_names(self):
        for name in ("token", "access_token", "auth", "authorization", "api_key", "apikey", "bearer"):
            with self.subTest(name):
                self.check("GET", "/health?a=1&%s=abc" % name, token=None)

    def test_any_path(self):
        self.check("GET", "/no/such/path?token=abc", token=None)

    def test_innocent_query_is_fine(self):
        st, h, b = http(self.srv, "GET", "/health?foo=bar&page=2", token=None)
        self.assertEqual(st, 200, b)

    def test_query_never_logged(self):
        self.check("GET", "/health?access_token=" + WRONG, token=None)
        self.check("POST", "/exec?token=" + TOKEN, SEED_BODY)
        text = self.srv.log_text()
        self.assertNotIn(WRONG, text)
        self.assertNotIn(TOKEN, text)
        self.assertNotIn("access_token=", text)
        self.assertNotIn("token=", text)


class TestSighupRotation(AuthAssertions, unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="capsrv-hup-")
        self.path = write_file(os.path.join(self.dir, "tokens"), "old:%s\n" % TOKEN, 0o600)
        self.srv = Server(args=HIGH + ["--token-file", self.path], token=None)

    def tearDown(self):
        self.srv.__exit__()

    def reload(self, content=None, remove=False):
        """Changes the token file, sends SIGHUP, returns the new auth.reload line."""
        def reloads():
            return [l for l in complete_log_lines(self.srv.log_text()) if l.get("event") == "auth.reload"]
        n = len(reloads())
        if remove:
            os.unlink(self.path)
        elif content is not None:
            write_file(self.path, content, 0o600)
        self.srv.proc.send_signal(signal.SIGHUP)
        # A reload waits for a new ffmpeg probe of the presets, which can
        # take seconds on a loaded machine.
        deadline = time.time() + 30
        lines = reloads()
        while len(lines) <= n and time.time() < deadline:
            time.sleep(0.02)
            lines = reloads()
        self.assertGreater(len(lines), n, "no new auth.reload line after SIGHUP")
        self.assertIsNone(self.srv.proc.poll(), "server died on SIGHUP")
        return lines[n]

    def test_rotation_keeps_keepalive_connection(self):
        s = self.srv.connect()
        try:
            self.assert_passes(send_on(s, "POST", "/exec", SEED_BODY, token=TOKEN), "old token before")
            line = self.reload("# rotated\nnew:%s\n" % ROTATED)
            self.assertIs(line.get("ok"), True, line)
            # same connection, still open
            self.assert_passes(send_on(s, "POST", "/exec", SEED_BODY, token=ROTATED),
                               "new token on pre-existing keep-alive connection")
            self.assert_unauthorized(send_on(s, "POST", "/exec", SEED_BODY, token=TOKEN),
                                     "old token on pre-existing keep-alive connection")
        finally:
            s.close()
        self.assert_passes(exec_post(self.srv, token=ROTATED), "new token, new connection")
        self.assert_unauthorized(exec_post(self.srv, token=TOKEN), "old token, new connection")
        self.assertNotIn(ROTATED, self.srv.log_text())

    def test_broken_file_keeps_old_tokens(self):
        cases = [
            ("file removed", None, True),
            ("token too short", "short:abc123\n", False),
            ("valid token plus a too short one", "new:%s\nx:tooshort\n" % ROTATED, False),
            ("token with a space", "new:%s\nbad:has space 0123456789abcdef\n" % ROTATED, False),
            ("token too long", "new:%s\nlong:%s\n" % (ROTATED, "a" * 257), False),
        ]
        for name, content, remove in cases:
            with self.subTest(name):
                if not os.path.exists(self.path):
                    write_file(self.path, "old:%s\n" % TOKEN, 0o600)
                line = self.reload(content, remove)
                self.assertIs(line.get("ok"), False, line)
                self.assertIsInstance(line.get("error"), str, line)
                self.assertTrue(line["error"], line)
                self.assert_passes(exec_post(self.srv, token=TOKEN), name + ": old token")
                self.assert_unauthorized(exec_post(self.srv, token=ROTATED), name + ": token from broken file")
        # and a good file afterwards still reloads
        line = self.reload("new:%s\n" % ROTATED)
        self.assertIs(line.get("ok"), True, line)
        self.assert_passes(exec_post(self.srv, token=ROTATED))
        self.assert_unauthorized(exec_post(self.srv, token=TOKEN))
        text = self.srv.log_text()
        self.assertNotIn(ROTATED, text)
        self.assertNotIn(TOKEN, text)


class TestStartupAuthConfig(AuthAssertions, unittest.TestCase):
    def test_token_file_mode_0644_warns(self):
        d = tempfile.mkdtemp(prefix="capsrv-auth-")
        p = write_file(os.path.join(d, "tokens"), TOKEN + "\n", 0o644)
        with Server(args=["--token-file", p], token=None) as srv:
            line = wait_event(srv, "auth.token_file_mode")
            self.assertEqual(line.get("level"), "warn", line)
            self.assert_passes(exec_post(srv, token=TOKEN))
            self.assertNotIn(TOKEN, srv.log_text())

    def test_token_in_argv_warns(self):
        with Server(args=["--token", TOKEN], token=None) as srv:
            line = wait_event(srv, "config.token_in_argv")
            self.assertEqual(line.get("level"), "warn", line)
            self.assert_passes(exec_post(srv, token=TOKEN))
            self.assertNotIn(TOKEN, srv.log_text())

    def test_token_in_env_does_not_warn_argv(self):
        with Server(token=TOKEN) as srv:
            st, h, _ = exec_post(srv, token=TOKEN)
            self.assertEqual(st, 404)
            wait_http_line(srv, h["x-request-id"])
            events = [l.get("event") for l in complete_log_lines(srv.log_text())]
            self.assertNotIn("config.token_in_argv", events)

    def check_exit2_token(self, args, env=None):
        d = tempfile.mkdtemp(prefix="capsrv-auth-")
        r = run_bin(["--port", "0", "--log-file", os.path.join(d, "log")] + args, env=env, token=None)
        self.assertEqual(r.returncode, 2, r)
        err = r.stderr.decode("utf-8", "replace")
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, "stderr must be exactly one line: %r" % err)
        self.assertTrue(lines[0].startswith("cap-server: token"), lines[0])
        return lines[0]

    def test_no_token_exits_2(self):
        self.check_exit2_token([])

    def test_token_file_with_only_comments_exits_2(self):
        d = tempfile.mkdtemp(prefix="capsrv-auth-")
        p = write_file(os.path.join(d, "tokens"), "# nothing here\n\n", 0o600)
        self.check_exit2_token(["--token-file", p])

    def check_insecure(self, args, env):
        with Server(args=args, env=env, token=None) as srv:
            line = wait_event(srv, "auth.disabled")
            self.assertEqual(line.get("level"), "warn", line)
            self.assert_passes(exec_post(srv, token=None), "no Authorization header")

    def test_insecure_no_auth_flag(self):
        self.check_insecure(["--insecure-no-auth"], None)

    def test_insecure_no_auth_env(self):
        self.check_insecure([], {"CAP_INSECURE_NO_AUTH": "1"})


if __name__ == "__main__":
    unittest.main()
