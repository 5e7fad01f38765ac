"""Helpers shared by the integration tests: start the real cap-server binary
on an ephemeral port, read its JSON log, and talk to it over raw sockets.

Every test imports this module.  The binary path comes from the environment
variable CAP_SERVER_BIN (ctest sets it); the default is build/cap-server.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import weakref

# Bytes read past the end of one response, kept per socket for the next call
# (socket objects have __slots__, so they cannot carry an attribute).
_RBUF = weakref.WeakKeyDictionary()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("CAP_SERVER_BIN", os.path.join(ROOT, "build", "cap-server"))

# Tokens are long enough to pass the server's minimum length check.
TOKEN = "test-token-0123456789abcdef0123456789"
TOKEN2 = "second-token-abcdefghijklmnopqrstuvwxyz"


def terminate(proc, timeout=15):
    """SIGTERM, then SIGKILL if proc is still running after timeout seconds;
    returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Server:
    """A running cap-server.  Use as a context manager; stop() checks exit."""

    def __init__(self, args=None, env=None, token=TOKEN, log_file=None, cwd=None):
        self.tmp = tempfile.mkdtemp(prefix="capsrv-test-")
        self.log_path = log_file or os.path.join(self.tmp, "server.log")
        # A short drain grace by default, so that stopping a server with a
        # job still running does not hold a test for the production default;
        # a test's own --shutdown-grace-ms comes later and wins.
        argv = [BIN, "--port", "0", "--host", "127.0.0.1", "--log-file", self.log_path,
                "--data-dir", os.path.join(self.tmp, "data"), "--shutdown-grace-ms", "5000"]
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("CAP_") and k != "CAPABILITY_TOKEN"}
        if token is not None:
            full_env["CAPABILITY_TOKEN"] = token
        if env:
            full_env.update(env)
        argv += list(args or [])
        self.argv = argv
        self.proc = subprocess.Popen(argv, env=full_env, cwd=cwd or self.tmp,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.await_start(10)

    def await_start(self, timeout):
        """Waits for the server.start log line and takes the port from it;
        raises RuntimeError (with the server's stderr) when it exits first
        or does not start in time."""
        self.port = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            # Complete lines only: the last one may still be being written.
            for raw in self.log_text().split("\n")[:-1]:
                line = json.loads(raw) if raw.strip() else {}
                if line.get("event") == "server.start":
                    self.port = int(line["port"])
                    return
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError("cap-server exited %d: %s" % (self.proc.returncode, err.decode()))
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError("cap-server did not log server.start")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        terminate(self.proc)
        self._close_pipes()

    def _close_pipes(self):
        for f in (self.proc.stdout, self.proc.stderr):
            if f and not f.closed:
                f.close()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signals the server and returns its exit code."""
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._close_pipes()
        return rc

    def log_text(self):
        try:
            with open(self.log_path, "r", encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_lines(self):
        """Every complete log line, parsed; a line that is not JSON fails."""
        out = []
        for raw in self.log_text().splitlines():
            if raw.strip():
                out.append(json.loads(raw))
        return out

    def wait_log(self, pred, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.log_lines():
                if pred(line):
                    return line
            time.sleep(0.02)
        raise AssertionError("no log line matched within %ss" % timeout)

    def connect(self, source=None, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout,
                                     source_address=(source, 0) if source else None)
        return s

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)


def recv_response(sock, timeout=5):
    """Reads exactly one HTTP response; returns (status, headers, body).
    headers is a dict of lowercase names.  Interim 1xx responses are returned
    as is; call again for the final one."""
    sock.settimeout(timeout)
    buf = _RBUF.get(sock, b"")
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before headers; got %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    if status < 200:
        n = 0
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    body, _RBUF[sock] = rest[:n], rest[n:]
    return status, headers, body


def is_closed(sock, timeout=5):
    """True when the peer closed the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
        return data == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def request(server, method, path, body=None, headers=None, token=TOKEN):
    """One request on a fresh connection; returns (status, headers, body)."""
    h = {"Host": "localhost", "Connection": "close"}
    if token:
        h["Authorization"] = "Bearer " + token
    if body is not None:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    raw = "%s %s HTTP/1.1\r\n" % (method, path)
    raw += "".join("%s: %s\r\n" % kv for kv in h.items() if kv[1] is not None)
    raw = raw.encode() + b"\r\n" + (body or b"")
    s = server.connect()
    try:
        s.sendall(raw)
        return recv_response(s)
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Raw-protocol helpers (added for test_http_core / test_limits / test_malformed
# / test_lifecycle).  They share the per-socket read buffer with recv_response,
# so the two can be mixed on one socket.

class Response:
    """One parsed HTTP response.  headers: dict of lowercase names (for a
    repeated header the values are joined with ", "); header_list keeps every
    (name, value) pair as sent; raw_head is the status line + header block."""

    def __init__(self, status, reason, header_list, body, raw_head):
        self.status = status
        self.reason = reason
        self.header_list = header_list
        self.body = body
        self.raw_head = raw_head
        self.headers = {}
        for k, v in header_list:
            k = k.lower()
            self.headers[k] = v if k not in self.headers else self.headers[k] + ", " + v

    def get_all(self, name):
        return [v for k, v in self.header_list if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def code(self):
        """The "code" field of a JSON error body, or None."""
        try:
            d = self.json()
        except ValueError:
            return None
        return d.get("code") if isinstance(d, dict) else None

    @property
    def closing(self):
        return "close" in [t.strip().lower() for t in self.headers.get("connection", "").split(",")]

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.raw_head[:400], self.body[:200])


def read_response(sock, timeout=5, head=False):
    """Reads exactly one response from sock and returns a Response.  Interim
    1xx responses are returned as is (call again for the final one).  head=True
    means the request was HEAD: no body is read whatever Content-Length says.
    Raises ConnectionError when the peer closes before a full response."""
    sock.settimeout(timeout)
    buf = _RBUF.get(sock, b"")
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            _RBUF[sock] = buf
            raise ConnectionError("closed before a complete response head; got %r" % buf[:500])
        buf += chunk
    head_bytes, rest = buf.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError("bad status line %r" % lines[0])
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    header_list = []
    for l in lines[1:]:
        k, v = l.split(":", 1)
        header_list.append((k, v.strip(" \t")))
    resp = Response(status, reason, header_list, b"", head_bytes)
    n = 0
    if status >= 200 and status not in (204, 304) and not head:
        n = int(resp.headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            _RBUF[sock] = b""
            raise ConnectionError("closed mid-body (%d of %d bytes)" % (len(rest), n))
        rest += chunk
    resp.body, _RBUF[sock] = rest[:n], rest[n:]
    return resp


def wait_closed(sock, timeout=5):
    """Waits for the peer to close.  Returns (closed, extra) where extra is
    every byte received (including bytes already buffered by read_response)
    before EOF / reset / timeout."""
    extra = _RBUF.pop(sock, b"")
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        if left <= 0:
            return False, extra
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, extra
        except socket.timeout:
            return False, extra
        if not data:
            return True, extra
        extra += data


def build_request(method, path, headers=(), body=b"", version="HTTP/1.1"):
    """Raw request bytes; headers is a list of (name, value) pairs sent in
    order (no header is added automatically)."""
    if isinstance(body, str):
        body = body.encode()
    raw = "%s %s %s\r\n" % (method, path, version)
    raw += "".join("%s: %s\r\n" % kv for kv in headers)
    return raw.encode("latin-1") + b"\r\n" + body


def chunked(body, size=7):
    """Encodes body (bytes) with chunked transfer coding, size bytes a chunk."""
    if isinstance(body, str):
        body = body.encode()
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def exchange(server, raw, timeout=5, head=False, close_wait=3):
    """Sends raw bytes on a fresh connection and reads one final response
    (skipping 1xx).  Returns (Response, closed_after, extra_bytes): whether
    the server closed the connection within close_wait seconds after the
    response (close_wait=0: do not check), and anything it sent after."""
    s = server.connect(timeout=timeout)
    try:
        s.sendall(raw)
        resp = read_response(s, timeout=timeout, head=head)
        while resp.status < 200:
            resp = read_response(s, timeout=timeout, head=head)
        closed, extra = (None, b"")
        if close_wait:
            closed, extra = wait_closed(s, close_wait)
        return resp, closed, extra
    finally:
        s.close()


HEX32 = __import__("re").compile(r"^[0-9a-fA-F]{32}$")
REQUIRED_HEADERS = ("content-type", "content-length", "x-request-id", "cache-control")


def check_common_headers(tc, resp):
    """unittest assertions every response must satisfy (tc: a TestCase)."""
    for h in REQUIRED_HEADERS:
        tc.assertIn(h, resp.headers, "missing %s in %r" % (h, resp))
    tc.assertEqual(resp.headers["cache-control"].lower(), "no-store", repr(resp))
    tc.assertEqual(len(resp.get_all("content-length")), 1, repr(resp))
    tc.assertRegex(resp.headers["content-length"], r"^[0-9]+$")
    if resp.status >= 400:
        tc.assertTrue(resp.headers["content-type"].lower().startswith("application/json"), repr(resp))
        d = resp.json()
        tc.assertIsInstance(d.get("error"), str, repr(resp))
        tc.assertIsInstance(d.get("code"), str, repr(resp))
