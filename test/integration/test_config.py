#!/usr/bin/env python3
"""Integration tests: configuration sources (flags > env > file > defaults),
invalid values, --help, --version."""
import json
import os
import re
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from capsrv import TOKEN, TOKEN2  # noqa: E402
from captools import (SEED_BODY, RawServer, complete_log_lines, err_body, exec_post,  # noqa: E402
                      free_port, http, run_bin, write_file)

TOKEN3 = "file-token-abcdefghijklmnop0123456789"
PREFIX = "/health?p="  # 10 bytes


def url_of(n):
    """A request target of exactly n bytes."""
    assert n > len(PREFIX)
    return PREFIX + "a" * (n - len(PREFIX))


class Tmp:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="capsrv-cfg-")
        self.log = os.path.join(self.dir, "server.log")
        self.data = os.path.join(self.dir, "data")

    def config(self, obj, name="config.json"):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj))
        return p


def start(tmp, args=(), env=None, token=TOKEN, file=None, port_flag=True):
    """Starts a server; file (a dict) becomes --config; logs go to tmp.log
    via the flag unless the file or env sets log_file."""
    argv = []
    if port_flag:
        argv += ["--port", "0"]
    argv += ["--log-file", tmp.log, "--data-dir", tmp.data]
    if file is not None:
        argv += ["--config", tmp.config(file)]
    return RawServer(argv + list(args), tmp.log, env=env, token=token)


class TestPrecedence(unittest.TestCase):
    def assert_url_limit(self, srv, ok_len, bad_len):
        st, h, b = http(srv, "GET", url_of(ok_len), token=None)
        self.assertEqual(st, 200, "target of %d bytes: %r" % (ok_len, b))
        st, h, b = http(srv, "GET", url_of(bad_len), token=None)
        self.assertEqual(st, 414, "target of %d bytes: %r" % (bad_len, b))
        self.assertEqual(err_body(b).get("code"), "uri_too_long")

    def test_default_max_url_bytes(self):
        t = Tmp()
        with start(t) as srv:
            self.assert_url_limit(srv, 2000, 2100)

    def test_default_max_url_bytes_boundary(self):
        t = Tmp()
        with start(t) as srv:
            self.assert_url_limit(srv, 2048, 2049)

    def test_file_over_default(self):
        t = Tmp()
        with start(t, file={"max_url_bytes": 200}) as srv:
            self.assert_url_limit(srv, 150, 300)

    def test_env_over_file(self):
        t = Tmp()
        with start(t, file={"max_url_bytes": 200}, env={"CAP_MAX_URL_BYTES": "400"}) as srv:
            self.assert_url_limit(srv, 300, 500)

    def test_flag_over_env_and_file(self):
        t = Tmp()
        with start(t, args=["--max-url-bytes", "600"], file={"max_url_bytes": 200},
                   env={"CAP_MAX_URL_BYTES": "400"}) as srv:
            self.assert_url_limit(srv, 500, 700)

    def test_flag_over_file(self):
        t = Tmp()
        with start(t, args=["--max-url-bytes", "600"], file={"max_url_bytes": 200}) as srv:
            self.assert_url_limit(srv, 500, 700)

    def test_env_over_default(self):
        t = Tmp()
        with start(t, env={"CAP_MAX_URL_BYTES": "300"}) as srv:
            self.assert_url_limit(srv, 250, 350)

    def test_config_flag_over_cap_config_env(self):
        t = Tmp()
        env_file = t.config({"max_url_bytes": 200}, "env.json")
        with start(t, file={"max_url_bytes": 400}, env={"CAP_CONFIG": env_file}) as srv:
            self.assert_url_limit(srv, 300, 500)

    def test_cap_config_env_alone(self):
        t = Tmp()
        env_file = t.config({"max_url_bytes": 200}, "env.json")
        with start(t, env={"CAP_CONFIG": env_file}) as srv:
            self.assert_url_limit(srv, 150, 300)

    def port_case(self, file_port=None, env_port=None, flag_port=None):
        t = Tmp()
        args, env, file = [], {}, None
        if file_port:
            file = {"port": file_port}
        if env_port:
            env["CAP_PORT"] = str(env_port)
        if flag_port:
            args = ["--port", str(flag_port)]
        return start(t, args=args, env=env, file=file, port_flag=False)

    def assert_port(self, srv, port):
        self.assertEqual(srv.port, port)
        st, h, b = http(srv, "GET", "/health", token=None)
        self.assertEqual(st, 200, b)

    def test_port_precedence(self):
        p1, p2, p3 = free_port(), free_port(), free_port()
        with self.port_case(file_port=p1) as srv:
            self.assert_port(srv, p1)
        p1, p2, p3 = free_port(), free_port(), free_port()
        with self.port_case(file_port=p1, env_port=p2) as srv:
            self.assert_port(srv, p2)
        p1, p2, p3 = free_port(), free_port(), free_port()
        with self.port_case(file_port=p1, env_port=p2, flag_port=p3) as srv:
            self.assert_port(srv, p3)

    def assert_rate(self, srv, n):
        for i in range(n):
            st, h, b = exec_post(srv)
            self.assertNotEqual(st, 429, "request %d of %d: %r" % (i + 1, n, b))
        st, h, b = exec_post(srv)
        self.assertEqual(st, 429, "request %d should be rate limited: %r" % (n + 1, b))

    def test_rate_limit_file(self):
        t = Tmp()
        with start(t, file={"rate_limit": 6}) as srv:
            self.assert_rate(srv, 6)

    def test_rate_limit_env_over_file(self):
        t = Tmp()
        with start(t, file={"rate_limit": 6}, env={"CAP_RATE_LIMIT": "4"}) as srv:
            self.assert_rate(srv, 4)

    def test_rate_limit_flag_over_env_over_file(self):
        t = Tmp()
        with start(t, args=["--rate-limit", "2"], file={"rate_limit": 6},
                   env={"CAP_RATE_LIMIT": "4"}) as srv:
            self.assert_rate(srv, 2)

    def assert_only_token(self, srv, good, bad):
        st, h, b = exec_post(srv, token=good)
        self.assertEqual(st, 404, b)
        for t in bad:
            st, h, b = exec_post(srv, token=t)
            self.assertEqual(st, 401, "token from a lower-precedence source accepted: %r" % b)

    def test_token_precedence(self):
        t = Tmp()
        with start(t, file={"token": TOKEN3}, token=None) as srv:
            self.assert_only_token(srv, TOKEN3, [TOKEN, TOKEN2])
        t = Tmp()
        with start(t, file={"token": TOKEN3}, token=TOKEN2) as srv:
            self.assert_only_token(srv, TOKEN2, [TOKEN3])
        t = Tmp()
        with start(t, args=["--token", TOKEN], file={"token": TOKEN3}, token=TOKEN2) as srv:
            self.assert_only_token(srv, TOKEN, [TOKEN2, TOKEN3])

    def test_log_file_from_config_file(self):
        t = Tmp()
        other = os.path.join(t.dir, "from-file.log")
        argv = ["--port", "0", "--data-dir", t.data, "--config", t.config({"log_file": other})]
        with RawServer(argv, other, token=TOKEN) as srv:
            st, h, b = http(srv, "GET", "/health", token=None)
            self.assertEqual(st, 200)
        self.assertTrue(os.path.exists(other))
        self.assertFalse(os.path.exists(t.log))

    def test_limits_in_server_start(self):
        t = Tmp()
        with start(t, args=["--max-url-bytes", "777"], env={"CAP_MAX_BODY_BYTES": "12345"},
                   file={"max_headers": 33}) as srv:
            start_line = [l for l in complete_log_lines(srv.log_text()) if l.get("event") == "server.start"][0]
            limits = start_line.get("limits")
            self.assertIsInstance(limits, dict, start_line)
            flat = json.dumps(limits)
            for v in (777, 12345, 33):
                self.assertRegex(flat, r"\b%d\b" % v, "limits does not show %d: %s" % (v, flat))
            if "max_url_bytes" in limits:
                self.assertEqual(limits["max_url_bytes"], 777)
            if "max_body_bytes" in limits:
                self.assertEqual(limits["max_body_bytes"], 12345)
            if "max_headers" in limits:
                self.assertEqual(limits["max_headers"], 33)
            self.assert_url_limit(srv, 700, 800)


ALL_FILE = {
    "host": "127.0.0.1", "log_level": "debug", "rate_limit": 50, "rate_limit_token": 100,
    "rate_limit_clients": 500, "trusted_proxies": "127.0.0.0/8,::1", "max_connections": 100,
    "max_header_bytes": 9000, "max_headers": 50, "max_url_bytes": 1000, "max_body_bytes": 10000,
    "header_timeout_ms": 5000, "body_timeout_ms": 5000, "idle_timeout_ms": 5000,
    "shutdown_grace_ms": 2000, "insecure_no_auth": False,
}


class TestAllKeysAccepted(unittest.TestCase):
    def test_every_key_in_config_file(self):
        t = Tmp()
        cfg = dict(ALL_FILE, port=0, log_file=t.log, data_dir=t.data, token=TOKEN)
        argv = ["--config", t.config(cfg)]
        with RawServer(argv, t.log, token=None) as srv:
            st, h, b = http(srv, "GET", "/health", token=None)
            self.assertEqual(st, 200, b)
            self.assertEqual(exec_post(srv)[0], 404)

    def test_every_key_as_env(self):
        t = Tmp()
        env = {"CAP_" + k.upper(): str(v) for k, v in ALL_FILE.items() if k != "insecure_no_auth"}
        env.update(CAP_PORT="0", CAP_LOG_FILE=t.log, CAP_DATA_DIR=t.data)
        with RawServer([], t.log, env=env, token=TOKEN) as srv:
            st, h, b = http(srv, "GET", "/health", token=None)
            self.assertEqual(st, 200, b)
            self.assertEqual(exec_post(srv)[0], 404)

    def test_every_key_as_flag(self):
        t = Tmp()
        args = []
        for k, v in ALL_FILE.items():
            if k != "insecure_no_auth":
                args += ["--" + k.replace("_", "-"), str(v)]
        args += ["--port", "0", "--log-file", t.log, "--data-dir", t.data]
        with RawServer(args, t.log, token=TOKEN) as srv:
            st, h, b = http(srv, "GET", "/health", token=None)
            self.assertEqual(st, 200, b)
            self.assertEqual(exec_post(srv)[0], 404)


class TestInvalid(unittest.TestCase):
    def run_invalid(self, args=(), env=None, file=None, token=TOKEN, port_flag=True):
        t = Tmp()
        argv = []
        if port_flag:
            argv += ["--port", "0"]
        argv += ["--log-file", t.log, "--data-dir", t.data]
        if file is not None:
            argv += ["--config", t.config(file)]
        argv += list(args)
        r = run_bin(argv, env=env, token=token, timeout=5)
        self.assertEqual(r.returncode, 2, "argv %r env %r file %r -> %r" % (argv, env, file, r))
        err = r.stderr.decode("utf-8", "replace")
        self.assertTrue(err.endswith("\n"), "stderr: %r" % err)
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, "stderr must be exactly one line, got %r" % err)
        return lines[0]

    def assert_key(self, line, key):
        self.assertTrue(line.startswith("cap-server: %s: " % key) and len(line) > len("cap-server: %s: " % key),
                        "expected 'cap-server: %s: <what was wrong>', got %r" % (key, line))

    VALUE_CASES = [
        # (name, args, env, file, key, port_flag)
        ("port 70000 flag", ["--port", "70000"], None, None, "port", False),
        ("port -1 flag", ["--port", "-1"], None, None, "port", False),
        ("port abc flag", ["--port", "abc"], None, None, "port", False),
        ("port abc env", [], {"CAP_PORT": "abc"}, None, "port", False),
        ("port 70000 env", [], {"CAP_PORT": "70000"}, None, "port", False),
        ("port 70000 file", [], None, {"port": 70000}, "port", False),
        ("port abc file", [], None, {"port": "abc"}, "port", False),
        ("port 80x flag", ["--port", "80x"], None, None, "port", False),
        ("log_level loud flag", ["--log-level", "loud"], None, None, "log_level", True),
        ("log_level loud env", [], {"CAP_LOG_LEVEL": "loud"}, None, "log_level", True),
        ("log_level loud file", [], None, {"log_level": "loud"}, "log_level", True),
        ("max_connections 0 flag", ["--max-connections", "0"], None, None, "max_connections", True),
        ("max_connections 0 env", [], {"CAP_MAX_CONNECTIONS": "0"}, None, "max_connections", True),
        ("max_connections 0 file", [], None, {"max_connections": 0}, "max_connections", True),
        ("max_url_bytes abc env", [], {"CAP_MAX_URL_BYTES": "abc"}, None, "max_url_bytes", True),
        ("rate_limit x flag", ["--rate-limit", "x"], None, None, "rate_limit", True),
        ("host not an ip", ["--host", "not-an-ip"], None, None, "host", True),
        ("trusted_proxies bad", ["--trusted-proxies", "300.1.2.3/8"], None, None, "trusted_proxies", True),
    ]

    def test_invalid_values(self):
        for name, args, env, file, key, port_flag in self.VALUE_CASES:
            with self.subTest(name):
                self.assert_key(self.run_invalid(args, env, file, port_flag=port_flag), key)

    def test_token_too_short(self):
        for name, args, env, file in [
            ("flag", ["--token", "abc123"], None, None),
            ("env", [], {"CAPABILITY_TOKEN": "abc123"}, None),
            ("file", [], None, {"token": "abc123"}),
            ("15 bytes", ["--token", "a" * 15], None, None),
            ("257 bytes", ["--token", "a" * 257], None, None),
            ("space inside", ["--token", "abcdefgh ijklmnopqrstu"], None, None),
        ]:
            with self.subTest(name):
                self.assert_key(self.run_invalid(args, env, file, token=None), "token")

    def test_token_boundaries_accepted(self):
        for tok in ("a" * 16, "~" * 256, "!" + "x" * 15):
            with self.subTest(len(tok)):
                t = Tmp()
                with start(t, token=tok) as srv:
                    self.assertEqual(exec_post(srv, token=tok)[0], 404)

    def test_flag_missing_value(self):
        line = self.run_invalid(["--max-url-bytes"])
        self.assertTrue(line.startswith("cap-server: "), line)
        self.assertRegex(line, r"max[-_]url[-_]bytes")

    def test_unknown_flag(self):
        line = self.run_invalid(["--bogus-flag", "1"])
        self.assertTrue(line.startswith("cap-server: "), line)
        self.assertIn("bogus-flag", line)

    def test_unknown_config_key(self):
        line = self.run_invalid(file={"max_url_bytes": 100, "colour": "blue"})
        self.assertTrue(line.startswith("cap-server: "), line)
        self.assertIn("colour", line)

    def test_config_not_json(self):
        for name, content in [("text", "port = 3001\n"), ("truncated", '{"port": 30'),
                              ("array", "[1, 2]"), ("empty", "")]:
            with self.subTest(name):
                line = self.run_invalid(file=content)
                self.assertTrue(line.startswith("cap-server: "), line)
                self.assertIn("config", line)

    def test_config_missing_file(self):
        t = Tmp()
        line = self.run_invalid(["--config", os.path.join(t.dir, "nope.json")])
        self.assertTrue(line.startswith("cap-server: "), line)
        self.assertIn("config", line)


class TestHelpVersion(unittest.TestCase):
    def test_help(self):
        r = run_bin(["--help"], token=None, timeout=5)
        self.assertEqual(r.returncode, 0, r)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertTrue(out.strip(), "no usage printed")
        self.assertTrue("usage" in out.lower() or "--port" in out, out)

    def test_version(self):
        r = run_bin(["--version"], token=None, timeout=5)
        self.assertEqual(r.returncode, 0, r)
        out = r.stdout.decode("utf-8", "replace")
        self.assertRegex(out, r"^cap-server \d+\.\d+\.\d+\n?$")
        t = Tmp()
        with start(t) as srv:
            st, h, b = http(srv, "GET", "/health", token=None)
            self.assertEqual(st, 200)
            self.assertEqual(out.strip(), "cap-server " + json.loads(b)["version"])


if __name__ == "__main__":
    unittest.main()
