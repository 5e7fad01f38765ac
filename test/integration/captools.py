"""Extra helpers for test_auth / test_config / test_ratelimit / test_logs /
test_exec_validation.  Builds on capsrv (does not change it).

Kept in a separate module so that edits here never collide with capsrv.py.
"""
import json
import os
import re
import socket
import subprocess
import tempfile
import time

import capsrv
from capsrv import BIN, TOKEN, Server, recv_response

# A request body that passes every /exec check (the seed's body).
SEED_BODY = b'{"input_key":"uploads/raw.mp4","output_key":"renders/final.mp4","preset":"1080p"}'
PROBE_BODY = b'{"capability":"ffprobe","input_key":"uploads/raw.mp4"}'

TS_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z$")


def clean_env(token=None, extra=None):
    """os.environ without any CAP_* / CAPABILITY_TOKEN, plus what is given."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CAP_") and k != "CAPABILITY_TOKEN"}
    if token is not None:
        env["CAPABILITY_TOKEN"] = token
    if extra:
        env.update(extra)
    return env


def run_bin(args, env=None, token=None, timeout=10, cwd=None):
    """Runs cap-server to completion (for flags that exit at once or for
    start-up failures).  Returns subprocess.CompletedProcess (bytes output).
    If the server does not exit within timeout it is killed and the result
    has returncode None."""
    cwd = cwd or tempfile.mkdtemp(prefix="capsrv-run-")
    p = subprocess.Popen([BIN] + list(args), env=clean_env(token, env), cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        rc = None
    return subprocess.CompletedProcess(p.args, rc, out, err)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RawServer(Server):
    """Like capsrv.Server but the caller controls the whole command line
    (no --port/--host/--log-file/--data-dir added).  log_path must be where
    the server will write its log (however that is configured)."""

    def __init__(self, args, log_path, env=None, token=None, cwd=None, start_timeout=10):
        self.tmp = tempfile.mkdtemp(prefix="capsrv-raw-")
        self.log_path = log_path
        self.argv = [BIN] + list(args)
        self.proc = subprocess.Popen(self.argv, env=clean_env(token, env), cwd=cwd or self.tmp,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.await_start(start_timeout)


def complete_log_lines(text):
    """Parses the newline-terminated lines of text (a trailing partial line
    that is still being written is ignored)."""
    out = []
    for raw in text.split("\n")[:-1]:
        if raw.strip():
            out.append(json.loads(raw))
    return out


def build_request(method, path, body=None, headers=None, token=TOKEN,
                  content_type="application/json", close=True):
    """Raw request bytes.  path / header values may be str or bytes.
    headers: list of (name, value) pairs or a dict; a value of None drops a
    default header."""
    h = [("Host", "localhost")]
    if close:
        h.append(("Connection", "close"))
    if token is not None:
        h.append(("Authorization", "Bearer " + token))
    if body is not None:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        if content_type is not None:
            h.append(("Content-Type", content_type))
        h.append(("Content-Length", str(len(body))))
    extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    for k, v in extra:
        h = [kv for kv in h if kv[0].lower() != k.lower()]
        if v is not None:
            h.append((k, v))

    def b(x):
        return x if isinstance(x, bytes) else x.encode("utf-8")
    raw = b(method) + b" " + b(path) + b" HTTP/1.1\r\n"
    for k, v in h:
        raw += b(k) + b": " + b(v) + b"\r\n"
    return raw + b"\r\n" + (body or b"")


def http(server, method, path, body=None, headers=None, token=TOKEN, source=None,
         content_type="application/json", timeout=5):
    """One request on a fresh connection (optionally bound to a source
    address); returns (status, headers, body)."""
    raw = build_request(method, path, body, headers, token, content_type, close=True)
    s = server.connect(source=source, timeout=timeout)
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return recv_response(s, timeout=timeout)
    finally:
        s.close()


def send_on(sock, method, path, body=None, headers=None, token=TOKEN,
            content_type="application/json", timeout=5):
    """One keep-alive request on an existing connection."""
    sock.sendall(build_request(method, path, body, headers, token, content_type, close=False))
    return recv_response(sock, timeout=timeout)


def exec_post(server, token=TOKEN, body=SEED_BODY, xff=None, source=None, headers=None):
    h = dict(headers or {})
    if xff is not None:
        h["X-Forwarded-For"] = xff
    return http(server, "POST", "/exec", body, h, token=token, source=source)


def err_body(body):
    return json.loads(body.decode("utf-8"))


def write_file(path, content, mode=0o600):
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    os.chmod(path, mode)
    return path


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def http_lines(server):
    return [l for l in complete_log_lines(server.log_text()) if l.get("event") == "http.request"]


def wait_for(server, pred, timeout=5):
    """Like Server.wait_log but ignores a partially written last line."""
    deadline = time.time() + timeout
    while True:
        for line in complete_log_lines(server.log_text()):
            if pred(line):
                return line
        if time.time() >= deadline:
            raise AssertionError("no log line matched within %ss; log:\n%s"
                                 % (timeout, server.log_text()[-4000:]))
        time.sleep(0.02)


def wait_event(server, event, timeout=5, **fields):
    return wait_for(server, lambda l: l.get("event") == event and
                    all(l.get(k) == v for k, v in fields.items()), timeout)


def wait_http_line(server, req_id, timeout=5):
    return wait_for(server, lambda l: l.get("event") == "http.request" and l.get("req_id") == req_id,
                    timeout=timeout)


def wait_binary(timeout=0):
    """Waits up to timeout seconds for the binary to exist."""
    deadline = time.time() + timeout
    while not os.access(BIN, os.X_OK):
        if time.time() >= deadline:
            return False
        time.sleep(1)
    return True
