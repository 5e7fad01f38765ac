"""Helpers for test_install.py: a scratch machine (a root directory for
scripts/install.sh --root, the tailscale and systemctl stand-ins on PATH, their
state and call log) and a real HTTP listener that plays the registry and
serves the stand-in of Tailscale's network installer.

The stand-ins live in standins/; see the docstring at the top of each.
"""
import ctypes
import http.server
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading

from captools import free_port  # noqa: F401  (the tests import it from here)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STANDINS = os.path.join(HERE, "standins")
INSTALL_SH = os.environ.get("INSTALL_SH", os.path.join(REPO, "scripts", "install.sh"))
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Commands that change the state of tailscale or of the service manager; the
# others (status, is-enabled, is-active, funnel status) only read it.
TS_CHANGING = {"up", "set", "down", "logout", "login", "serve", "cert"}
SYSTEMCTL_CHANGING = {"daemon-reload", "enable", "disable", "start", "stop", "restart", "reload",
                      "mask", "unmask", "try-restart", "reload-or-restart"}


def changes_state(call):
    cmd, argv = call["cmd"], call["argv"]
    if cmd == "installer":
        return True
    if cmd == "tailscale":
        if argv[:1] == ["funnel"]:
            return argv[1:2] != ["status"]
        return bool(argv) and argv[0] in TS_CHANGING
    if cmd == "systemctl":
        verbs = [a for a in argv if not a.startswith("-")]
        return bool(verbs) and verbs[0] in SYSTEMCTL_CHANGING
    return True


def become_subreaper():
    """Orphaned service processes (their systemctl stand-in has exited) are
    re-parented to this process, so they can be reaped instead of lingering
    as zombies under a PID 1 that may not reap."""
    PR_SET_CHILD_SUBREAPER = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return




class Registry:
    """A real HTTP listener on 127.0.0.1: records every request (method,
    path, headers, body parsed as JSON when it is JSON) and answers `status`
    with a small JSON body.  GET /install.sh serves the installer stand-in."""

    def __init__(self):
        self.requests = []
        self.status = 200
        self.lock = threading.Lock()
        with open(os.path.join(STANDINS, "tailscale-install.sh"), "rb") as f:
            installer = f.read()
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with reg.lock:
                    reg.requests.append({"method": "GET", "path": self.path,
                                         "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": None})
                if self.path == "/install.sh":
                    self._answer(200, installer, "text/x-shellscript")
                else:
                    self._answer(404, b'{"error":"not found"}')

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with reg.lock:
                    reg.requests.append({"method": "POST", "path": self.path,
                                         "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": body, "raw": raw})
                    code = reg.status
                self._answer(code, b'{"ok":true}' if code < 300 else b'{"error":"registry is down"}')

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def take(self):
        """The requests recorded so far (the list is emptied)."""
        with self.lock:
            out, self.requests = self.requests, []
        return out

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def wrapper(path, script):
    """An executable that runs a stand-in with this Python (no PATH lookup)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (sys.executable, os.path.join(STANDINS, script)))
    os.chmod(path, 0o755)


class Scratch:
    """One scratch machine: T/root is install.sh's --root, T/bin is first on
    PATH (systemctl stand-in; tailscale only once installed), T/state holds
    the stand-ins' state and T/calls.jsonl their call log."""

    def __init__(self, tailscale_installed=False):
        self.dir = tempfile.mkdtemp(prefix="install-test-")
        # The service runs as `nobody` and must reach files under the root.
        os.chmod(self.dir, 0o755)
        self.root = os.path.join(self.dir, "root")
        self.bin = os.path.join(self.dir, "bin")
        self.state = os.path.join(self.dir, "state")
        self.log = os.path.join(self.dir, "calls.jsonl")
        self.tmp = os.path.join(self.dir, "tmp")
        for d in (self.root, self.bin, self.state, self.tmp):
            os.mkdir(d)
            os.chmod(d, 0o755)
        wrapper(os.path.join(self.bin, "systemctl"), "systemctl")
        self.tailscale_wrapper = os.path.join(self.dir, "tailscale-standin")
        wrapper(self.tailscale_wrapper, "tailscale")
        if tailscale_installed:
            shutil.copy(self.tailscale_wrapper, os.path.join(self.bin, "tailscale"))
        self.port = free_port()
        self.secrets = []

    def secret_file(self, name, content):
        path = os.path.join(self.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
        return path

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith(("AWS_", "R2_", "CAP_", "STANDIN_"))
                       or k in ("CAPABILITY_TOKEN", "TS_AUTHKEY", "TAILSCALE_AUTH_KEY",
                                "REGISTER_TOKEN", "REGISTRY_URL"))}
        env.update({"PATH": self.bin + ":" + SYSTEM_PATH, "STANDIN_LOG": self.log,
                    "STANDIN_STATE": self.state, "STANDIN_ROOT": self.root,
                    "STANDIN_BIN": self.bin, "STANDIN_TAILSCALE": self.tailscale_wrapper,
                    # install.sh's temporary files (the auth key, the
                    # installer) land here and go with the scratch.
                    "TMPDIR": self.tmp})
        env.update(extra or {})
        return env

    def run(self, args, env=None, timeout=120):
        """Runs install.sh; returns CompletedProcess (text).  The call log is
        cut so that calls() returns only this run's calls."""
        self.mark = self.log_len()
        p = subprocess.run([INSTALL_SH] + list(args), env=self.env(env), cwd=self.dir,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
        reap()
        return p

    def log_len(self):
        try:
            return os.path.getsize(self.log)
        except FileNotFoundError:
            return 0

    def calls(self, all_runs=False):
        try:
            with open(self.log, encoding="utf-8") as f:
                if not all_runs:
                    f.seek(self.mark)
                return [json.loads(l) for l in f.read().splitlines() if l.strip()]
        except FileNotFoundError:
            return []

    def ts_state(self):
        with open(os.path.join(self.state, "tailscale.json"), encoding="utf-8") as f:
            return json.load(f)

    def systemd_state(self):
        try:
            with open(os.path.join(self.state, "systemd.json"), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {"loaded": {}, "enabled": [], "pid": {}}

    def service_pid(self):
        return self.systemd_state()["pid"].get("cap-server.service")

    def journal(self):
        try:
            with open(os.path.join(self.state, "cap-server.journal"), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def p(self, path):
        """The scratch equivalent of an installed absolute path."""
        return self.root + path

    def snapshot(self):
        """Every file and directory under the root: bytes, mtime, mode, owner."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                data = None
                if stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        data = f.read()
                out[os.path.relpath(path, self.root)] = (data, st.st_mtime_ns, st.st_mode,
                                                         st.st_uid, st.st_gid)
        return out

    def service_pids(self):
        """Every live process running the binary installed under this root."""
        pids = []
        exe = self.p("/usr/local/bin/cap-server")
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                target = os.readlink("/proc/%s/exe" % d)
                with open("/proc/%s/stat" % d, encoding="utf-8") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if (target == exe or target.startswith(exe + " ")) and state != "Z":
                pids.append(int(d))
        return pids

    def cleanup(self):
        for pid in self.service_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap()
        shutil.rmtree(self.dir, ignore_errors=True)
