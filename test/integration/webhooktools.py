"""Helpers for test_webhooks.py: a real HTTPS webhook receiver, a private CA
made with the openssl CLI, Standard Webhooks signing done by hand (to check
the verifiers themselves), and the two independent verifiers the deliveries
are judged by:

- the npm `standardwebhooks` library (pinned in packaging/cloudflare), run
  by node through webhook_verify.cjs;
- capkit.verifyWebhook on workerd, through webhook_verifier.js, next to the
  example receiver Worker (packaging/cloudflare/example/receiver.js) with its
  Durable Object.

Stdlib only (plus the openssl, node and workerd executables).
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

import workerdtools as wt

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_VERIFY = os.path.join(HERE, "webhook_verify.cjs")
VERIFIER_JS = os.path.join(HERE, "webhook_verifier.js")
FLOW_JS = os.path.join(HERE, "webhook_flow.js")


# ---------------------------------------------------------------------------
# Secrets and signatures (the Standard Webhooks scheme, written out)

def new_secret():
    """A fresh "whsec_<base64 of 32 random bytes>"."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sign(secret, msg_id, timestamp, body):
    """"v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>"; key is the
    base64-decoded part after "whsec_"."""
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    mac = hmac.new(key, ("%s.%s." % (msg_id, timestamp)).encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secrets, msg_id, timestamp, body):
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
            "content-type": "application/json"}


# ---------------------------------------------------------------------------
# A private CA and a server certificate for 127.0.0.1 and localhost

def _openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args), r.stdout.decode(errors="replace")))


def make_ca(directory):
    """Writes ca.pem/ca.key and server.pem/server.key (SAN IP:127.0.0.1,
    DNS:localhost, signed by the CA) into directory; returns their paths as
    {"ca", "cert", "key"}."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=cap-server webhook test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=directory)
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
             cwd=directory)
    return {"ca": os.path.join(directory, "ca.pem"), "cert": os.path.join(directory, "server.pem"),
            "key": os.path.join(directory, "server.key")}


# ---------------------------------------------------------------------------
# The receiver

class Delivery:
    """One request the receiver got: arrival time, path (without query),
    query string, headers (lowercase names), the raw body and the status it
    answered."""

    def __init__(self, t, path, query, headers, body, status):
        self.t, self.path, self.query, self.headers, self.body, self.status = t, path, query, headers, body, status

    @property
    def id(self):
        return self.headers.get("webhook-id")

    def event(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Delivery %s %s %s id=%s status=%s %r>" % (
            time.strftime("%H:%M:%S", time.localtime(self.t)), self.path, self.query, self.id,
            self.status, self.body[:120])


class Receiver:
    """An HTTPS server on 127.0.0.1 recording every request.  Behaviour per
    path: script(path, [action, ...]) answers the next requests of that path
    with the actions in turn, then 200.  An action is a status code, or
    ("sleep", seconds, status).  stop() closes the listening socket (clients
    get connection refused), start() listens on the same port again."""

    def __init__(self, tls, port=0):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tls["cert"], tls["key"])
        self.port = port
        self.deliveries = []
        self.scripts = {}
        self.cond = threading.Condition()
        self.httpd = None
        self.thread = None

    def _handler(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                t = time.time()
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                u = urllib.parse.urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                # Recorded on arrival (status None until answered), so a
                # test sees the requests a slow answer is still holding.
                d = Delivery(t, u.path, u.query, headers, body, None)
                with rec.cond:
                    actions = rec.scripts.get(u.path)
                    action = actions.pop(0) if actions else 200
                    rec.deliveries.append(d)
                    rec.cond.notify_all()
                if isinstance(action, tuple):
                    time.sleep(action[1])
                    status = action[2]
                else:
                    status = action
                with rec.cond:
                    d.status = status
                    rec.cond.notify_all()
                out = json.dumps({"status": status}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass  # the sender gave up (its attempt timed out)

            do_GET = do_POST
            do_PUT = do_POST

        return Handler

    def start(self):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler(), bind_and_activate=False)
        srv.daemon_threads = True
        srv.allow_reuse_address = True
        srv.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.server_bind()
        srv.server_activate()
        # The TLS handshake happens on the first read, in the request's own
        # thread, so one slow client cannot hold the accept loop.
        srv.socket = self.ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        self.port = srv.server_address[1]
        self.httpd = srv
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def reserve_port(self):
        """Takes a free port without listening on it (the receiver is "down"
        until start())."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def url(self, path, host="127.0.0.1"):
        return "https://%s:%d%s" % (host, self.port, path)

    def script(self, path, actions):
        with self.cond:
            self.scripts[path] = list(actions)

    def of(self, path):
        with self.cond:
            return [d for d in self.deliveries if d.path == path]

    def wait(self, pred, timeout, what):
        """Waits until pred(deliveries) is truthy; returns its value."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                v = pred(list(self.deliveries))
                if v:
                    return v
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("receiver: not within %ss: %s; got %r"
                                         % (timeout, what, self.deliveries[-10:]))
                self.cond.wait(min(left, 0.2))

    def wait_path(self, path, n, timeout):
        return self.wait(lambda ds: [d for d in ds if d.path == path][:n]
                         if len([d for d in ds if d.path == path]) >= n else None,
                         timeout, "%d deliveries to %s" % (n, path))


# ---------------------------------------------------------------------------
# Verifier 1: the npm standardwebhooks library

def node_verify(cases):
    """cases: list of {"secret", "body" (bytes), "headers" (dict)}.  Returns
    a list of {"ok": bool, "error"?: str, "type"?: str}, by the
    standardwebhooks library's Webhook(secret).verify(body, headers)."""
    payload = [{"secret": c["secret"], "body_b64": base64.b64encode(c["body"]).decode(),
                "headers": c["headers"]} for c in cases]
    r = subprocess.run(["node", NODE_VERIFY], input=json.dumps(payload).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60, cwd=wt.CF_DIR)
    if r.returncode != 0:
        raise RuntimeError("webhook_verify.cjs failed: %s" % r.stderr.decode(errors="replace"))
    out = json.loads(r.stdout.decode())
    assert len(out) == len(cases), out
    return out


# ---------------------------------------------------------------------------
# Verifier 2: capkit.verifyWebhook on workerd, and the example receiver

READ_TOKEN = "receiver-read-token-0123456789abcdef"


class WebhookWorkerd:
    """workerd serving the test verifier (webhook_verifier.js, which calls
    capkit.verifyWebhook with the secrets and clock it is told), the example
    receiver (example/receiver.js with its CapJobDO on local disk,
    CAP_WEBHOOK_SECRETS = receiver_secrets), and a Workflow (webhook_flow.js
    on workerd's bundled Workflows engine) the receiver is bound to as
    CAP_WORKFLOW.  The receiver listens on plain HTTP (replays) and on HTTPS
    with tls's certificate (cap-server delivers to it there)."""

    def __init__(self, receiver_secrets, tls):
        self.bin, why = wt.ensure_workerd()
        if self.bin is None:
            raise RuntimeError(why)
        self.tmp = tempfile.mkdtemp(prefix="workerd-webhooks-")
        src = os.path.join(self.tmp, "src")
        for rel, dst in (("capkit.js", "capkit.js"), ("example/receiver.js", "example/receiver.js")):
            os.makedirs(os.path.dirname(os.path.join(src, dst)), exist_ok=True)
            shutil.copyfile(os.path.join(wt.CF_DIR, rel), os.path.join(src, dst))
        shutil.copyfile(VERIFIER_JS, os.path.join(src, "webhook_verifier.js"))
        shutil.copyfile(FLOW_JS, os.path.join(src, "webhook_flow.js"))
        shutil.copyfile(tls["cert"], os.path.join(self.tmp, "server.pem"))
        shutil.copyfile(tls["key"], os.path.join(self.tmp, "server.key"))
        os.makedirs(os.path.join(self.tmp, "do-storage"), exist_ok=True)
        self.log_path = os.path.join(self.tmp, "workerd.log")
        q = json.dumps
        config = """using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "verifier", worker = .verifierWorker),
    (name = "receiver", worker = .receiverWorker),
    (name = "flow", worker = .flowWorker),
    (name = "wf-engine", worker = .engineWorker),
    (name = "storage", disk = (path = %(storage)s, writable = true)),
    (name = "nowhere", network = (allow = [])),
  ],
  sockets = [
    (name = "verifier", http = (), service = "verifier"),
    (name = "receiver", http = (), service = "receiver"),
    (name = "receiver-tls", service = "receiver", https = (options = (), tlsOptions = (
      keypair = (privateKey = embed "server.key", certificateChain = embed "server.pem")))),
    (name = "flow", http = (), service = "flow"),
  ],
);
# The Workflow's API, as bound to a Worker (the Workflow "cap-render").
const wfBinding :Workerd.ServiceDesignator = (name = "wf-engine", entrypoint = "WorkflowBinding",
  props = (json = "{\\"workflow\\":\\"cap-render\\"}"));
const flowWorker :Workerd.Worker = (
  modules = [(name = "webhook_flow.js", esModule = embed "src/webhook_flow.js")],
  compatibilityDate = %(compat)s,
  globalOutbound = "nowhere",
  workflowsEngine = (actorClass = (name = "wf-engine", entrypoint = "Engine"),
    workflows = [(className = "WaitFlow", name = "cap-render", bindingService = .wfBinding)]),
  bindings = [
    (name = "FLOW", wrapped = (moduleName = "cloudflare-internal:workflows-api",
      innerBindings = [(name = "fetcher", service = .wfBinding)])),
  ],
);
# workerd's bundled Workflows engine; instances live on local disk.
const engineWorker :Workerd.Worker = (
  modules = [(name = "workflows.js", bundled = "/workerd/workflows.js")],
  compatibilityDate = %(compat)s,
  globalOutbound = "nowhere",
  durableObjectStorage = (localDisk = "storage"),
  bindings = [
    (name = "workflow:cap-render", durableObjectNamespace = (
      className = "miniflare-workflows-cap-render", serviceName = "flow")),
  ],
);
const verifierWorker :Workerd.Worker = (
  modules = [
    (name = "webhook_verifier.js", esModule = embed "src/webhook_verifier.js"),
    (name = "capkit.js", esModule = embed "src/capkit.js"),
  ],
  compatibilityDate = %(compat)s,
  globalOutbound = "nowhere",
);
const receiverWorker :Workerd.Worker = (
  modules = [
    (name = "example/receiver.js", esModule = embed "src/example/receiver.js"),
    (name = "capkit.js", esModule = embed "src/capkit.js"),
  ],
  compatibilityDate = %(compat)s,
  globalOutbound = "nowhere",
  durableObjectNamespaces = [
    (className = "CapJobDO", uniqueKey = "cap-receiver-CapJobDO", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "storage"),
  bindings = [
    (name = "JOBS", durableObjectNamespace = "CapJobDO"),
    (name = "CAP_WEBHOOK_SECRETS", text = %(secrets)s),
    (name = "READ_TOKEN", text = %(read)s),
    (name = "CAP_WORKFLOW", wrapped = (moduleName = "cloudflare-internal:workflows-api",
      innerBindings = [(name = "fetcher", service = .wfBinding)])),
  ],
);
""" % {"storage": q(os.path.join(self.tmp, "do-storage")), "compat": q(wt.COMPAT_DATE),
       "secrets": q(" ".join(receiver_secrets)), "read": q(READ_TOKEN)}
        self.config_path = os.path.join(self.tmp, "config.capnp")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.sockets = {n: wt._listen() for n in ("verifier", "receiver", "receiver-tls", "flow")}
        self.verifier_port = self.sockets["verifier"].getsockname()[1]
        self.receiver_port = self.sockets["receiver"].getsockname()[1]
        self.receiver_tls_port = self.sockets["receiver-tls"].getsockname()[1]
        self.flow_port = self.sockets["flow"].getsockname()[1]
        self.proc = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self, timeout=60):
        fds = {n: s.fileno() for n, s in self.sockets.items()}
        # --experimental: the bundled Workflows engine is one.
        argv = [self.bin, "serve", "--experimental", self.config_path]
        for n, fd in fds.items():
            argv += ["--socket-fd", "%s=%d" % (n, fd)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                                         pass_fds=list(fds.values()), start_new_session=True)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("workerd exited %d:\n%s" % (self.proc.returncode, self.log_text()))
            try:
                if (wt.request(self.verifier_port, "GET", "/health", timeout=5)[0] == 200
                        and wt.request(self.receiver_port, "GET", "/health", timeout=5)[0] == 200):
                    return
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("workerd did not answer /health:\n" + self.log_text())
            time.sleep(0.1)

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in self.sockets.values():
            s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def verify(self, secrets, body, headers, now_ms=None):
        """capkit.verifyWebhook(request, secrets, {now}) on workerd for one
        delivery.  Returns (status, json): 200 {"ok":true,"event"} or
        {"ok":false,"code"}."""
        h = {k: v for k, v in headers.items() if k.lower().startswith("webhook-")}
        h["x-test-secrets"] = " ".join(secrets)
        if now_ms is not None:
            h["x-test-now-ms"] = str(int(now_ms))
        st, _, j = wt.request(self.verifier_port, "POST", "/verify", body, headers=h, timeout=30)
        return st, j

    def receive(self, body, headers, query=""):
        """Replays one delivery to the example receiver's POST /cap/webhook."""
        h = {k: v for k, v in headers.items() if k.lower().startswith("webhook-")}
        return wt.request(self.receiver_port, "POST", "/cap/webhook" + (("?" + query) if query else ""),
                          body, headers=h, timeout=30)

    def receiver_url(self, query=""):
        """The example receiver's HTTPS callback_url."""
        return "https://127.0.0.1:%d/cap/webhook%s" % (self.receiver_tls_port, ("?" + query) if query else "")

    def flow_create(self, instance_id):
        return wt.request(self.flow_port, "POST", "/create?id=" + instance_id, b"", timeout=30)

    def flow_status(self, instance_id):
        return wt.request(self.flow_port, "GET", "/status?id=" + instance_id, timeout=30)

    def received(self, job_id):
        return wt.request(self.receiver_port, "GET", "/cap/jobs/" + job_id, token=READ_TOKEN, timeout=30)


def metric_value(text, name, labels=None):
    """The value of one Prometheus sample (name and exactly these labels),
    or None."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name):]
        got = {}
        if rest.startswith("{"):
            inner, rest = rest[1:].split("}", 1)
            for part in inner.split(","):
                if part:
                    k, v = part.split("=", 1)
                    got[k] = v.strip('"')
        elif not rest.startswith(" "):
            continue
        if got == (labels or {}):
            return float(rest.split()[0])
    return None
