"""A real S3 server for the storage tests: OpenStack Swift with its s3api
middleware (it verifies SigV4 signatures), started by scripts/s3-testbed.sh
in a fresh temporary directory.

    with S3Bed() as bed:                      # ~3-5 s to start
        bed.make_bucket("media")
        env = bed.env()                       # AWS_* for a cap-server child
        bed.put_object("media", "in/a.mp4", path="/tmp/a.mp4")
        info = bed.head_object("media", "out/a.mp4")
        assert bed.list_multipart_uploads("media") == []

As a fixture shared by a module or a class:

    BED = S3Bed()
    def setUpModule(): BED.start()
    def tearDownModule(): BED.stop()

    class T(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.bed = S3Bed().start()
            cls.addClassCleanup(cls.bed.stop)

API (all on S3Bed):
  start() -> self, stop(), restart() (same dir and endpoint: objects and
  open uploads survive), running(), pids(), log(name), start_seconds;
  dir, port, endpoint, access_key, secret_key, region; env() -> AWS_* dict;
  aws(*args, check=True, secret=, access_key=, region=) -> CompletedProcess
  (raises AwsError with .code), aws_json(*args) -> parsed output;
  make_bucket, list_objects, put_object(bucket, key, path=|body=),
  get_object(bucket, key, path), head_object(bucket, key, part_number=),
  delete_object, list_multipart_uploads(bucket, prefix=),
  create_multipart_upload, upload_part, complete_multipart_upload,
  abort_multipart_upload, list_parts, part_sizes(bucket, key) (from the
  Swift SLO manifest); request(method, bucket, key, query=, headers=,
  body=, payload="hash"|"unsigned"|literal, secret=, region=, now=) ->
  Response(status, headers, body, code, message), signed by
  sigv4_headers(), an independent SigV4 implementation (hashlib/hmac).

Checks go through the real awscli v2 at /usr/bin/aws (Debian's package; the
first `aws` on PATH may be a pyenv shim), always with --endpoint-url: this
awscli (2.9) ignores AWS_ENDPOINT_URL.  request() is for what awscli cannot
do: UNSIGNED-PAYLOAD, a chosen payload hash, a wrong region without
awscli's silent retry (botocore re-signs for the region the error names).

The bed is stopped by stop()/__exit__, at interpreter exit, and by a small
watchdog process if this process dies without either (a test killed by the
ctest timeout must not leave Swift running).  S3BED_KEEP=1 keeps the
directory (logs in DIR/log/) after stop.
"""
import atexit
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "s3-testbed.sh")
AWS = "/usr/bin/aws"

ACCESS_KEY = "test:tester"
SECRET_KEY = "testing"
REGION = "auto"

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class AwsError(Exception):
    """awscli exited non-zero.  .code is the S3 error code when awscli
    printed one ("An error occurred (NoSuchKey) when calling ...")."""

    def __init__(self, args, returncode, stdout, stderr):
        self.argv = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        m = re.search(r"An error occurred \(([^)]+)\)", stderr)
        self.code = m.group(1) if m else None
        super().__init__("aws %s -> exit %d: %s" % (" ".join(args), returncode, stderr.strip()))


class Response:
    """What request() returns: status, headers (lowercase names), body;
    .code and .message from an S3 error document, else None."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        self.code = self.message = None
        if body.lstrip().startswith(b"<?xml") or body.lstrip().startswith(b"<Error"):
            try:
                root = ET.fromstring(body)
            except ET.ParseError:
                return
            if root.tag == "Error":
                self.code = root.findtext("Code")
                self.message = root.findtext("Message")

    def __repr__(self):
        return "<Response %d %s %r>" % (self.status, self.code, self.body[:200])


def uri_encode(s, keep_slash=False):
    """SigV4 encoding: every byte outside A-Z a-z 0-9 - _ . ~ as %XX
    (uppercase hex), '/' kept in paths."""
    return urllib.parse.quote(s.encode("utf-8") if isinstance(s, str) else s,
                              safe="-_.~" + ("/" if keep_slash else ""))


def sigv4_headers(method, host, path, query, headers, payload_hash,
                  access_key, secret_key, region, service="s3", now=None):
    """Headers to add for an AWS SigV4 header-signed request.  path is the
    already-encoded canonical URI; query a list of (name, value) pairs (raw);
    headers a dict of the other headers to sign."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    all_headers = {k.lower(): str(v).strip() for k, v in headers.items()}
    all_headers["host"] = host
    all_headers["x-amz-date"] = amz_date
    all_headers["x-amz-content-sha256"] = payload_hash
    signed = sorted(all_headers)
    canonical_query = "&".join(
        "%s=%s" % (uri_encode(k), uri_encode(v))
        for k, v in sorted((k, v or "") for k, v in query))
    canonical = "\n".join([
        method, path, canonical_query,
        "".join("%s:%s\n" % (k, all_headers[k]) for k in signed),
        ";".join(signed), payload_hash])
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = ("AWS4" + secret_key).encode("utf-8")
    for piece in (day, region, service, "aws4_request"):
        key = hmac.new(key, piece.encode("utf-8"), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out = {"x-amz-date": amz_date, "x-amz-content-sha256": payload_hash,
           "authorization": "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
                            % (access_key, scope, ";".join(signed), signature)}
    return out


class S3Bed:
    """A running Swift + s3api.  Attributes once started: dir, port,
    endpoint, access_key, secret_key, region."""

    def __init__(self, port=None, keep=None):
        self.want_port = port
        self.keep = keep if keep is not None else os.environ.get("S3BED_KEEP") == "1"
        self.dir = None
        self.port = None
        self.endpoint = None
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.start_seconds = None
        self._watchdog = None
        self._atexit = False

    # --- life cycle ---------------------------------------------------------

    def start(self):
        """Start the bed (in a new temp dir the first time; the same dir and
        proxy port after stop(keep_dir=True), i.e. restart()).  Returns self."""
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="s3bed-")
        argv = [SCRIPT, "start", self.dir]
        if self.want_port or self.port:
            argv.append(str(self.want_port or self.port))
        t0 = datetime.datetime.now()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=90)
        self.start_seconds = (datetime.datetime.now() - t0).total_seconds()
        if r.returncode != 0:
            msg = (r.stdout + r.stderr).strip()
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None
            raise RuntimeError("s3-testbed start failed (exit %d):\n%s" % (r.returncode, msg))
        ports = {}
        with open(os.path.join(self.dir, "ports")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                ports[k] = int(v)
        self.ports = ports
        self.port = ports["PROXY_PORT"]
        self.endpoint = "http://127.0.0.1:%d" % self.port
        if not self._atexit:
            atexit.register(self._at_exit)
            self._atexit = True
        self._start_watchdog()
        return self

    def stop(self, keep_dir=False):
        """Stop every process of the bed and wait for them; remove the
        directory unless keep_dir (for a restart) or S3BED_KEEP=1."""
        if self.dir is None:
            return
        self._stop_watchdog()
        r = subprocess.run([SCRIPT, "stop", self.dir], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("s3-testbed stop failed: %s" % (r.stdout + r.stderr))
        if not keep_dir:
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def restart(self):
        """Stop and start again: same directory (objects, uploads kept),
        same endpoint."""
        self.stop(keep_dir=True)
        return self.start()

    def running(self):
        if self.dir is None:
            return False
        r = subprocess.run([SCRIPT, "status", self.dir], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        return r.returncode == 0

    def pids(self):
        """{name: pid} of the running processes (proxy, account, container,
        object, memcached), e.g. to SIGSTOP the proxy for a stall."""
        out = {}
        for name in ("proxy", "account", "container", "object", "memcached"):
            try:
                with open(os.path.join(self.dir, "run", name + ".pid")) as f:
                    out[name] = int(f.read())
            except (OSError, ValueError, TypeError):
                pass
        return out

    def __enter__(self):
        if self.endpoint is None or self.dir is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _at_exit(self):
        try:
            self.stop()
        except Exception:
            pass

    def _start_watchdog(self):
        # Detached: survives this process, stops the bed if we die first.
        if self._watchdog is not None:
            return
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c",
             'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" stop "$3"',
             "s3bed-watchdog", str(os.getpid()), SCRIPT, self.dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)

    def _stop_watchdog(self):
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None

    # --- for the process under test ----------------------------------------

    def env(self, secret=None, region=None):
        """The AWS SDK environment names cap-server reads."""
        return {"AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": secret or self.secret_key,
                "AWS_REGION": region or self.region}

    def log(self, name="proxy"):
        """Text of one server log: proxy, account, container, object, memcached."""
        with open(os.path.join(self.dir, "log", name + ".log"), errors="replace") as f:
            return f.read()

    # --- awscli -------------------------------------------------------------

    def _aws_env(self, access_key, secret, region):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") and not k.startswith("PYTHON")}
        cfg = os.path.join(self.dir or tempfile.gettempdir(), "no-aws-config")
        env.update({"AWS_ACCESS_KEY_ID": access_key or self.access_key,
                    "AWS_SECRET_ACCESS_KEY": secret or self.secret_key,
                    "AWS_DEFAULT_REGION": region or self.region,
                    "AWS_REGION": region or self.region,
                    "AWS_CONFIG_FILE": cfg,
                    "AWS_SHARED_CREDENTIALS_FILE": cfg,
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_PAGER": ""})
        return env

    def aws(self, *args, check=True, secret=None, access_key=None, region=None,
            timeout=300):
        """Run /usr/bin/aws ARGS against the bed; returns the CompletedProcess
        (text).  check=True raises AwsError (with .code) on failure."""
        argv = [AWS, "--endpoint-url", self.endpoint, "--no-cli-pager",
                "--output", "json"] + [str(a) for a in args]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=self._aws_env(access_key, secret, region), timeout=timeout)
        if check and r.returncode != 0:
            raise AwsError([str(a) for a in args], r.returncode, r.stdout, r.stderr)
        return r

    def aws_json(self, *args, **kw):
        """aws(...) and its JSON output parsed ({} when there is none)."""
        out = self.aws(*args, **kw).stdout.strip()
        return json.loads(out) if out else {}

    def make_bucket(self, name):
        return self.aws_json("s3api", "create-bucket", "--bucket", name)

    def list_objects(self, bucket, prefix=None):
        args = ["s3api", "list-objects-v2", "--bucket", bucket]
        if prefix is not None:
            args += ["--prefix", prefix]
        return self.aws_json(*args).get("Contents", [])

    def put_object(self, bucket, key, path=None, body=None, extra=()):
        """Upload a file (path) or bytes (body); returns awscli's JSON (ETag).
        extra: more put-object arguments, e.g. ("--content-type", "video/mp4")."""
        tmp = None
        if path is None:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix="body-")
            with os.fdopen(fd, "wb") as f:
                f.write(body or b"")
            path = tmp
        try:
            return self.aws_json("s3api", "put-object", "--bucket", bucket, "--key", key,
                                 "--body", path, *extra)
        finally:
            if tmp:
                os.unlink(tmp)

    def get_object(self, bucket, key, path):
        """Download to path; returns awscli's JSON (ETag, ContentLength...)."""
        return self.aws_json("s3api", "get-object", "--bucket", bucket, "--key", key, path)

    def head_object(self, bucket, key, part_number=None):
        args = ["s3api", "head-object", "--bucket", bucket, "--key", key]
        if part_number is not None:
            args += ["--part-number", str(part_number)]
        return self.aws_json(*args)

    def delete_object(self, bucket, key):
        return self.aws_json("s3api", "delete-object", "--bucket", bucket, "--key", key)

    def list_multipart_uploads(self, bucket, prefix=None):
        """The open uploads: a list of {"Key", "UploadId", "Initiated", ...}."""
        args = ["s3api", "list-multipart-uploads", "--bucket", bucket]
        if prefix is not None:
            args += ["--prefix", prefix]
        return self.aws_json(*args).get("Uploads", [])

    def create_multipart_upload(self, bucket, key):
        return self.aws_json("s3api", "create-multipart-upload", "--bucket", bucket,
                             "--key", key)["UploadId"]

    def upload_part(self, bucket, key, upload_id, number, path=None, body=None):
        """Upload one part from a file or bytes; returns its ETag (quoted)."""
        tmp = None
        if path is None:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix="part-")
            with os.fdopen(fd, "wb") as f:
                f.write(body or b"")
            path = tmp
        try:
            return self.aws_json("s3api", "upload-part", "--bucket", bucket, "--key", key,
                                 "--upload-id", upload_id, "--part-number", str(number),
                                 "--body", path)["ETag"]
        finally:
            if tmp:
                os.unlink(tmp)

    def complete_multipart_upload(self, bucket, key, upload_id, etags):
        """etags: the parts' ETags in order (part numbers 1..n)."""
        doc = {"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]}
        return self.aws_json("s3api", "complete-multipart-upload", "--bucket", bucket,
                             "--key", key, "--upload-id", upload_id,
                             "--multipart-upload", json.dumps(doc))

    def abort_multipart_upload(self, bucket, key, upload_id):
        return self.aws_json("s3api", "abort-multipart-upload", "--bucket", bucket,
                             "--key", key, "--upload-id", upload_id)

    def list_parts(self, bucket, key, upload_id):
        return self.aws_json("s3api", "list-parts", "--bucket", bucket, "--key", key,
                             "--upload-id", upload_id).get("Parts", [])

    # --- Swift's own API (what S3 cannot show) ------------------------------

    def _swift(self, method, path, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def part_sizes(self, bucket, key):
        """Sizes of the parts a completed multipart object was made of, in
        order, from its Swift SLO manifest (this Swift's s3api answers 405
        to HEAD/GET with partNumber).  None for an object from a single PUT."""
        status, h, _ = self._swift("GET", "/auth/v1.0", {"X-Auth-User": self.access_key,
                                                          "X-Auth-Key": self.secret_key})
        if status // 100 != 2:
            raise RuntimeError("tempauth refused: %d" % status)
        account = urllib.parse.urlsplit(h["x-storage-url"]).path
        path = "%s/%s/%s?multipart-manifest=get" % (account, uri_encode(bucket),
                                                    uri_encode(key, keep_slash=True))
        status, h, body = self._swift("GET", path, {"X-Auth-Token": h["x-auth-token"]})
        if status == 404:
            raise KeyError(key)
        if status // 100 != 2:
            raise RuntimeError("manifest GET: %d %r" % (status, body[:200]))
        if h.get("x-static-large-object", "").lower() != "true":
            return None
        return [seg["bytes"] for seg in json.loads(body)]

    # --- an independent SigV4 client ----------------------------------------

    def request(self, method, bucket=None, key=None, query=None, headers=None, body=b"",
                payload="hash", access_key=None, secret=None, region=None, now=None,
                timeout=60):
        """One path-style request signed here.  query: dict or list of pairs
        (value None or "" for a bare name like "uploads").  payload: "hash"
        (x-amz-content-sha256 = SHA-256 of body), "unsigned"
        (UNSIGNED-PAYLOAD), or a literal value to send.  Returns a Response."""
        path = "/"
        if bucket:
            path += uri_encode(bucket)
            if key is not None:
                path += "/" + uri_encode(key, keep_slash=True)
        pairs = list(query.items()) if isinstance(query, dict) else list(query or [])
        if payload == "hash":
            payload_hash = hashlib.sha256(body).hexdigest()
        elif payload == "unsigned":
            payload_hash = "UNSIGNED-PAYLOAD"
        else:
            payload_hash = payload
        host = "127.0.0.1:%d" % self.port
        hdrs = dict(headers or {})
        hdrs.update(sigv4_headers(method, host, path, pairs, hdrs, payload_hash,
                                  access_key or self.access_key, secret or self.secret_key,
                                  region or self.region, now=now))
        url = path
        if pairs:
            url += "?" + "&".join(uri_encode(k) + ("=" + uri_encode(v) if v else "")
                                  for k, v in pairs)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            if body or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()
