"""Runs the Cloudflare side of cap-server (packaging/cloudflare) on workerd,
the open-source Workers runtime, for the integration tests.

One workerd process serves two Workers, each on its own 127.0.0.1 port:
- the registry Worker (registry/worker.js) with its SQLite-backed Durable
  Object, stored on local disk so that it survives a restart;
- the example pipeline Worker (example/pipeline.js + capkit.js), bound to the
  registry through a service binding, with a global outbound network that may
  reach loopback addresses (where the test's cap-servers listen) and that
  trusts an extra CA when given one (Caddy's `tls internal` root).

The config is generated (Cap'n Proto text) into a temp dir together with a
copy of the sources, so a test always runs the current files.  Python binds
the listening sockets and hands them to workerd (--socket-fd): the ports are
known before workerd starts and stay the same across a restart.

Stdlib only.  workerd comes from npm (packaging/cloudflare/setup.sh).
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CF_DIR = os.path.join(ROOT, "packaging", "cloudflare")
WORKERD = os.path.join(CF_DIR, "node_modules", ".bin", "workerd")
SETUP = os.path.join(CF_DIR, "setup.sh")

REGISTER_TOKEN = "register-token-0123456789abcdefghij"
RESOLVE_TOKEN = "resolve-token-abcdefghij0123456789"
PIPELINE_TOKEN = "pipeline-token-9876543210zyxwvuts"

# The compatibility date of the Workers in the tests; the same as the
# wrangler.toml files, so the tests see the behaviour a deployment gets.
COMPAT_DATE = "2025-11-01"


def ensure_workerd():
    """Returns (path, None) when workerd can run, else (None, why).  Installs
    it with setup.sh (npm ci) when node_modules is missing."""
    if os.access(WORKERD, os.X_OK):
        return WORKERD, None
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None, "node and npm are needed to install workerd (apt-get install nodejs npm)"
    r = subprocess.run([SETUP], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if r.returncode != 0 or not os.access(WORKERD, os.X_OK):
        raise RuntimeError("packaging/cloudflare/setup.sh failed:\n" + r.stdout.decode(errors="replace"))
    return WORKERD, None


def _capnp_str(s):
    """A Cap'n Proto text literal (its escapes are C's, which JSON's are a
    subset of for printable text)."""
    return json.dumps(s)


def _listen():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


class Workerd:
    """A running workerd with the registry and the pipeline Workers.

    ttl_s: the registry's PROVIDER_TTL_S.  capability_token: what the pipeline
    sends to cap-servers.  provider_scheme: how the kit reaches providers
    ("http" for plain test servers, "https" behind Caddy).  ca_pem: path of a
    PEM CA certificate the pipeline's outbound TLS trusts.  The registry's
    storage is on disk in the temp dir, so it survives restart()."""

    def __init__(self, ttl_s=30, capability_token=None, provider_scheme="http", ca_pem=None,
                 poll_wait_s=60, register_token=REGISTER_TOKEN,
                 resolve_token=RESOLVE_TOKEN, pipeline_token=PIPELINE_TOKEN):
        self.bin, why = ensure_workerd()
        if self.bin is None:
            raise RuntimeError(why)
        self.tmp = tempfile.mkdtemp(prefix="workerd-test-")
        self.log_path = os.path.join(self.tmp, "workerd.log")
        self.opts = dict(ttl_s=ttl_s, capability_token=capability_token or "",
                         provider_scheme=provider_scheme, poll_wait_s=poll_wait_s,
                         register_token=register_token, resolve_token=resolve_token,
                         pipeline_token=pipeline_token)
        self._copy_sources(ca_pem)
        self.config_path = os.path.join(self.tmp, "config.capnp")
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(self.config_text(ca_pem is not None))
        self.sockets = {"registry": _listen(), "pipeline": _listen()}
        self.registry_port = self.sockets["registry"].getsockname()[1]
        self.pipeline_port = self.sockets["pipeline"].getsockname()[1]
        self.proc = None
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    # -- config -------------------------------------------------------------

    def _copy_sources(self, ca_pem):
        src = os.path.join(self.tmp, "src")
        for rel in ("capkit.js", "registry/worker.js", "example/pipeline.js"):
            dst = os.path.join(src, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(CF_DIR, rel), dst)
        os.makedirs(os.path.join(self.tmp, "do-storage"), exist_ok=True)
        if ca_pem:
            shutil.copyfile(ca_pem, os.path.join(self.tmp, "ca.pem"))

    def config_text(self, with_ca):
        o = self.opts
        q = _capnp_str
        # Always on disk: workerd's inMemory storage has no SQLite, which the
        # registry needs.
        storage = '(localDisk = "registry-storage")'
        # TLS to providers: the usual public CAs, plus the test's own CA.
        extra_ca = ', trustedCertificates = [embed "ca.pem"]' if with_ca else ""
        tls = ", tlsOptions = (trustBrowserCas = true%s)" % extra_ca
        return """# Generated by test/integration/workerdtools.py.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "registry", worker = .registryWorker),
    (name = "pipeline", worker = .pipelineWorker),
    # The Durable Object's SQLite files (one directory per uniqueKey).
    (name = "registry-storage", disk = (path = %(storage_dir)s, writable = true)),
    # Workers may not fetch private or loopback addresses unless their
    # outbound network allows it: "local" is 127.0.0.0/8 and ::1, where the
    # test's cap-servers (or Caddy in front of them) listen.
    (name = "internet", network = (allow = ["public", "local"]%(tls)s)),
    # The registry needs no outbound network at all.
    (name = "nowhere", network = (allow = [])),
  ],
  sockets = [
    (name = "registry", http = (), service = "registry"),
    (name = "pipeline", http = (), service = "pipeline"),
  ],
);

const registryWorker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "src/registry/worker.js")],
  compatibilityDate = %(compat)s,
  durableObjectNamespaces = [
    (className = "CapabilityRegistryDO", uniqueKey = "cap-registry-CapabilityRegistryDO", enableSql = true),
  ],
  durableObjectStorage = %(storage)s,
  globalOutbound = "nowhere",
  bindings = [
    (name = "REGISTRY", durableObjectNamespace = "CapabilityRegistryDO"),
    (name = "REGISTER_TOKEN", text = %(register_token)s),
    (name = "RESOLVE_TOKEN", text = %(resolve_token)s),
    (name = "PROVIDER_TTL_S", text = %(ttl)s),
  ],
);

const pipelineWorker :Workerd.Worker = (
  # The module names keep the relative import "../capkit.js" working.
  modules = [
    (name = "example/pipeline.js", esModule = embed "src/example/pipeline.js"),
    (name = "capkit.js", esModule = embed "src/capkit.js"),
  ],
  compatibilityDate = %(compat)s,
  globalOutbound = "internet",
  bindings = [
    (name = "REGISTRY", service = "registry"),
    (name = "RESOLVE_TOKEN", text = %(resolve_token)s),
    (name = "CAPABILITY_TOKEN", text = %(capability_token)s),
    (name = "PIPELINE_TOKEN", text = %(pipeline_token)s),
    (name = "PROVIDER_SCHEME", text = %(scheme)s),
    (name = "POLL_WAIT_S", text = %(poll)s),
  ],
);
""" % {"storage_dir": q(os.path.join(self.tmp, "do-storage")), "tls": tls, "storage": storage,
       "compat": q(COMPAT_DATE), "register_token": q(o["register_token"]),
       "resolve_token": q(o["resolve_token"]), "ttl": q(str(o["ttl_s"])),
       "capability_token": q(o["capability_token"]), "pipeline_token": q(o["pipeline_token"]),
       "scheme": q(o["provider_scheme"]), "poll": q(str(o["poll_wait_s"]))}

    # -- process ------------------------------------------------------------

    def start(self, timeout=60):
        fds = {name: s.fileno() for name, s in self.sockets.items()}
        argv = [self.bin, "serve", self.config_path, "config"]
        for name, fd in fds.items():
            argv += ["--socket-fd", "%s=%d" % (name, fd)]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                                         pass_fds=list(fds.values()), start_new_session=True)
        finally:
            log.close()
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("workerd exited %d:\n%s" % (self.proc.returncode, self.log_text()))
            try:
                if (self.get_registry("/health", token=None, timeout=5)[0] == 200
                        and self.get_pipeline("/health", timeout=5)[0] == 200):
                    return
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("workerd did not answer /health:\n" + self.log_text())
            time.sleep(0.1)

    def stop(self, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def close(self):
        self.stop()
        for s in self.sockets.values():
            s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def log_text(self):
        try:
            with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- HTTP ---------------------------------------------------------------

    def registry_url(self):
        return "http://127.0.0.1:%d" % self.registry_port

    def get_registry(self, path, token=RESOLVE_TOKEN, timeout=30):
        return request(self.registry_port, "GET", path, token=token, timeout=timeout)

    def post_registry(self, path, body, token=REGISTER_TOKEN, timeout=30, headers=None):
        return request(self.registry_port, "POST", path, body, token=token, timeout=timeout,
                       headers=headers)

    def get_pipeline(self, path, timeout=30):
        return request(self.pipeline_port, "GET", path, token=None, timeout=timeout)

    def post_pipeline(self, path, body, token=PIPELINE_TOKEN, timeout=300):
        return request(self.pipeline_port, "POST", path, body, token=token, timeout=timeout)

    # Registry conveniences (the register token; the test asserts the answers).

    def register(self, capability, provider, port, **extra):
        body = dict(capability=capability, provider=provider, port=port, **extra)
        return self.post_registry("/capabilities/register", body)

    def heartbeat(self, provider, port, load=None, **extra):
        body = dict(provider=provider, port=port, **extra)
        if load is not None:
            body["load"] = load
        return self.post_registry("/capabilities/heartbeat", body)

    def deregister(self, provider, port, capability=None):
        body = dict(provider=provider, port=port)
        if capability is not None:
            body["capability"] = capability
        return self.post_registry("/capabilities/deregister", body)

    def resolve(self, capability, exclude=(), token=RESOLVE_TOKEN):
        from urllib.parse import urlencode
        q = [("capability", capability)] + [("exclude", e) for e in exclude]
        return self.get_registry("/capabilities/resolve?" + urlencode(q), token=token)


def load(slots=2, running=0, queued=0, draining=False):
    """A heartbeat load object shaped like cap-server's."""
    return {"running": running, "queued": queued, "slots": slots,
            "free": max(0, slots - running - queued),
            "classes": {"cpu": {"slots": slots, "running": running, "queued": queued}},
            "draining": draining}


def request(port, method, path, body=None, token=None, timeout=30, headers=None, chunked=False):
    """One HTTP/1.1 request to 127.0.0.1:port.  body: dict/list (sent as
    JSON), str or bytes.  Returns (status, headers dict with lowercase names,
    parsed JSON or raw bytes)."""
    h = {}
    if token:
        h["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if chunked:
            conn.request(method, path, body=iter([data[i:i + 4096] for i in range(0, len(data), 4096)]),
                         headers=h, encode_chunked=True)
        else:
            conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        parsed = json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        parsed = raw
    return resp.status, hdrs, parsed
