#!/usr/bin/env python3
"""Webhooks (callback_url on POST /exec) against real HTTPS receivers.

A Python HTTPS receiver with a certificate from a private CA (made with the
openssl CLI; cap-server gets --callback-ca-file) records every request's raw
body, headers and arrival time, and can be scripted: not listening, slow,
500 then 200, 410.  Every delivery captured is judged by two
implementations independent of cap-server's: the npm `standardwebhooks`
library (node) and capkit.verifyWebhook on workerd; both must accept it
with the token's secret(s) and refuse it with a tampered body or another
secret.

- Verifiers (no cap-server): deliveries signed here by hand to the spec are
  accepted by both verifiers and refused when tampered, signed with another
  secret, stale, or missing a header; the example receiver Worker
  (packaging/cloudflare/example/receiver.js, on workerd) stores a delivery
  replayed twice once (Durable Object, keyed by webhook-id) and passes a
  final event, once, to a Workflow instance waiting in step.waitForEvent
  (workerd's bundled Workflows engine, webhook_flow.js).
- Deliveries: a succeeded render sends job.succeeded once, data = the job
  object; a failed job job.failed; a canceled one job.canceled;
  callback_events ["started","progress","succeeded"] sends those; a rotation
  (two secrets) signs with both; 500, 500, 200 is delivered on attempt 3
  with one webhook-id; 410 ends the attempts; a receiver down for 30 s gets
  the event once when it is back, with the id every attempt carried; the
  log names the host only (never the URL's query, a secret or a signature);
  cap-server -> example receiver over HTTPS -> the waiting Workflow gets the
  job's result.
- Refusals (SSRF): loopback without callback_allow_cidrs, http, 10/8,
  100.64/10, 169.254.169.254, [::1], user@host, a host not listed, a token
  without a secret are 400 callback_forbidden; a listed name resolving to
  loopback is accepted but refused at connect (logged, counted, never
  reaching the receiver).
- Slow receiver: deliveries that take 20 s (past the attempt time-out)
  slow nothing: /health p99, other jobs, cancel, drain.
- Restart: an event pending while cap-server is stopped (journal on) is
  delivered after the restart with the same webhook-id.
"""
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import mediatools as mt  # noqa: E402
import webhooktools as wh  # noqa: E402
import workerdtools as wt  # noqa: E402
from capsrv import Server, terminate  # noqa: E402

WHY_SKIP = None
if shutil.which("node") is None or shutil.which("openssl") is None:
    WHY_SKIP = "node and openssl are needed"
else:
    try:
        _bin, WHY_SKIP = wt.ensure_workerd()
    except RuntimeError as e:  # setup.sh failed: that is a failure, not a skip
        raise SystemExit(str(e))
    if WHY_SKIP is None and not os.path.exists(
            os.path.join(wt.CF_DIR, "node_modules", "standardwebhooks", "package.json")):
        raise SystemExit("packaging/cloudflare/node_modules lacks standardwebhooks: run packaging/cloudflare/setup.sh")

ALICE = "alice-token-0123456789abcdefghijklmn"
ROT = "rotating-token-0123456789abcdefghijkl"
NOSECRET = "nosecret-token-0123456789abcdefghijk"
ALICE_SECRET = wh.new_secret()
ROT_SECRETS = [wh.new_secret(), wh.new_secret()]
PRESETS = {"quick": mt.small_preset(), "slow": mt.small_preset(realtime=True)}
SHORT = "uploads/short.mp4"
MID = "uploads/mid.mp4"
GARBAGE = "uploads/garbage.mp4"
EVENT_TYPES = ("job.started", "job.progress", "job.succeeded", "job.failed", "job.canceled")
MSG_ID_RE = re.compile(r"^msg_[A-Za-z0-9]{26,}$")
SIG_RE = re.compile(r"^v1,[A-Za-z0-9+/]{43}=$")

TMP = None
TLS = None
WORKERD = None


def setUpModule():
    global TMP, TLS, WORKERD
    if WHY_SKIP:
        return
    TMP = tempfile.mkdtemp(prefix="capsrv-webhooks-")
    TLS = wh.make_ca(TMP)
    # The example receiver Worker knows alice's secret.
    WORKERD = wh.WebhookWorkerd([ALICE_SECRET], TLS)


def tearDownModule():
    if WORKERD is not None:
        WORKERD.close()
    if TMP is not None:
        shutil.rmtree(TMP, ignore_errors=True)


def skip_without_tools(cls):
    return unittest.skipIf(WHY_SKIP is not None, WHY_SKIP or "")(cls)


def server_files(directory):
    """The token file and the webhook secrets file (mode 0600)."""
    tokens = mt.write_token_file(directory, [("alice", ALICE), ("rot", ROT), ("nosecret", NOSECRET)])
    secrets = captools.write_file(
        os.path.join(directory, "webhook-secrets"),
        "# webhook secrets per token name\nalice:%s\nrot:%s %s\n" % (ALICE_SECRET, *ROT_SECRETS), 0o600)
    presets = mt.presets_file(directory, PRESETS, include_builtin=False)
    return ["--token-file", tokens, "--webhook-secrets-file", secrets, "--presets", presets]


def server_args(directory, hosts="127.0.0.1,localhost", allow="127.0.0.0/8", extra=()):
    args = server_files(directory) + ["--callback-hosts", hosts, "--callback-ca-file", TLS["ca"],
                                      "--pool-cpu", "2"]
    if allow:
        args += ["--callback-allow-cidrs", allow]
    return args + list(extra)


def put_inputs(data):
    """The test's inputs, in the data directory data."""
    for key, src, content in ((SHORT, mt.clip(1.0, "160x120"), None),
                              (MID, mt.clip(3.0, "160x120", audio=False), None),
                              (GARBAGE, None, b"this is not a media file\n" * 100)):
        path = os.path.join(data, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if content is None:
            shutil.copyfile(src, path)
        else:
            with open(path, "wb") as f:
                f.write(content)


def start_server(directory, data=None, **kw):
    """A server with the tokens, secrets and presets of this test; data:
    its data directory (default: the server's own temp one; a later
    --data-dir wins)."""
    args = server_args(directory, **kw)
    if data is not None:
        args += ["--data-dir", data]
    srv = mt.start(args, token=None)
    put_inputs(data or mt.data_dir(srv))
    return srv


def log_events(srv, event, **fields):
    return [l for l in captools.complete_log_lines(srv.log_text())
            if l.get("event") == event and all(l.get(k) == v for k, v in fields.items())]


def metrics_text(srv):
    st, h, b = captools.http(srv, "GET", "/metrics", token=ALICE)
    assert st == 200, (st, b[:300])
    return b.decode("utf-8")


def exec_cb(srv, body, url, events=None, token=ALICE, **kw):
    b = dict(body)
    b["callback_url"] = url
    if events is not None:
        b["callback_events"] = events
    b.update(kw)
    return mt.exec_(srv, b, token=token, timeout=60)


class Judge(unittest.TestCase):
    maxDiff = None
    """Checks one captured delivery with both independent verifiers."""

    def judge(self, deliveries, secrets, tamper=True):
        """Every delivery must verify with each secret alone (node) and with
        the list (workerd), and fail with a tampered body or another
        secret."""
        cases, expect = [], []
        for d in deliveries:
            for s in secrets:
                cases.append({"secret": s, "body": d.body, "headers": d.headers})
                expect.append((True, d, "secret"))
            if tamper:
                bad = d.body.replace(b'"status":"', b'"status":"x', 1)
                if bad == d.body:
                    bad = d.body + b" "
                cases.append({"secret": secrets[0], "body": bad, "headers": d.headers})
                expect.append((False, d, "tampered body"))
                cases.append({"secret": wh.new_secret(), "body": d.body, "headers": d.headers})
                expect.append((False, d, "another secret"))
        results = wh.node_verify(cases)
        for (want, d, what), got in zip(expect, results):
            self.assertEqual(got["ok"], want, "standardwebhooks on %s (%s): %r" % (d, what, got))
            if want:
                self.assertEqual(got["type"], d.event()["type"])
        for d in deliveries:
            now_ms = d.t * 1000
            st, j = WORKERD.verify(secrets, d.body, d.headers, now_ms=now_ms)
            self.assertEqual((st, j.get("ok")), (200, True), "capkit.verifyWebhook on %s: %r" % (d, j))
            self.assertEqual(j["event"], d.event())
            for s in secrets:
                st, j = WORKERD.verify([s], d.body, d.headers, now_ms=now_ms)
                self.assertEqual((st, j.get("ok")), (200, True), "capkit, one secret, on %s: %r" % (d, j))
            if tamper:
                st, j = WORKERD.verify(secrets, d.body + b" ", d.headers, now_ms=now_ms)
                self.assertEqual((st, j.get("ok"), j.get("code")), (200, False, "bad_signature"), (d, j))
                st, j = WORKERD.verify([wh.new_secret()], d.body, d.headers, now_ms=now_ms)
                self.assertEqual((st, j.get("ok"), j.get("code")), (200, False, "bad_signature"), (d, j))

    def check_shape(self, d, nsecrets=1, job_id=None, etype=None):
        """Headers and body of one delivery as the spec says."""
        h = d.headers
        self.assertEqual(h.get("content-type", "").split(";")[0].strip(), "application/json", d)
        self.assertTrue(h.get("user-agent", "").startswith("cap-server/"), h)
        self.assertRegex(h.get("webhook-id", ""), MSG_ID_RE)
        ts = h.get("webhook-timestamp", "")
        self.assertRegex(ts, r"^[0-9]+$")
        # The timestamp of this attempt: close to when it arrived.
        self.assertLess(abs(int(ts) - d.t), 5, (ts, d.t))
        sigs = h.get("webhook-signature", "").split(" ")
        self.assertEqual(len(sigs), nsecrets, h.get("webhook-signature"))
        for s in sigs:
            self.assertRegex(s, SIG_RE)
        ev = d.event()
        self.assertEqual(sorted(ev), ["data", "timestamp", "type"], ev)
        self.assertIn(ev["type"], EVENT_TYPES)
        self.assertRegex(ev["timestamp"], captools.TS_RE)
        self.assertIsInstance(ev["data"], dict)
        if job_id is not None:
            self.assertEqual(ev["data"].get("job_id"), job_id, ev)
        if etype is not None:
            self.assertEqual(ev["type"], etype, ev)
        return ev


# ---------------------------------------------------------------------------

@skip_without_tools
class Verifiers(Judge):
    """The judges themselves, on deliveries signed here to the spec: they
    must accept good ones and be able to refuse."""

    def setUp(self):
        self.recv = wh.Receiver(TLS).start()

    def tearDown(self):
        self.recv.stop()

    def post(self, headers, body, path="/hook/self"):
        import http.client
        import ssl
        ctx = ssl.create_default_context(cafile=TLS["ca"])
        c = http.client.HTTPSConnection("localhost", self.recv.port, context=ctx, timeout=10)
        try:
            c.request("POST", path, body=body, headers=headers)
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def test_hand_signed(self):
        job_id = "HandSigned0123456789ab"
        data = {"job_id": job_id, "status": "succeeded", "note": "caf\u00e9 \u2713"}
        body = json.dumps({"type": "job.succeeded", "timestamp": "2026-12-06T21:00:00.123Z", "data": data},
                          ensure_ascii=False, separators=(",", ":")).encode()
        mid = "msg_" + "0123456789abcdefghijklmnopqrstuv"[:32]
        ts = int(time.time())
        for secrets in ([ALICE_SECRET], ROT_SECRETS):
            self.recv.deliveries.clear()
            self.assertEqual(self.post(wh.signed_headers(secrets, mid, ts, body), body), 200)
            (d,) = self.recv.wait_path("/hook/self", 1, 5)
            self.assertEqual(d.body, body)
            self.check_shape_light(d, len(secrets))
            self.judge([d], secrets)
        # A stale timestamp (signed correctly), a missing header, a
        # signature of another version: refused by both.
        old = ts - 3600
        h = wh.signed_headers([ALICE_SECRET], mid, old, body)
        (r,) = wh.node_verify([{"secret": ALICE_SECRET, "body": body, "headers": h}])
        self.assertFalse(r["ok"], r)
        st, j = WORKERD.verify([ALICE_SECRET], body, h)
        self.assertEqual(j.get("code"), "stale_timestamp", j)
        st, j = WORKERD.verify([ALICE_SECRET], body, h, now_ms=old * 1000 + 1000)
        self.assertTrue(j.get("ok"), j)
        h = wh.signed_headers([ALICE_SECRET], mid, ts, body)
        del h["webhook-id"]
        (r,) = wh.node_verify([{"secret": ALICE_SECRET, "body": body, "headers": h}])
        self.assertFalse(r["ok"], r)
        st, j = WORKERD.verify([ALICE_SECRET], body, h)
        self.assertEqual(j.get("code"), "missing_headers", j)
        h = wh.signed_headers([ALICE_SECRET], mid, ts, body)
        h["webhook-signature"] = h["webhook-signature"].replace("v1,", "v2,")
        st, j = WORKERD.verify([ALICE_SECRET], body, h)
        self.assertEqual(j.get("code"), "bad_signature", j)
        # A receiver given something that is not a secret says so.
        st, j = WORKERD.verify(["whsec_***"], body, wh.signed_headers([ALICE_SECRET], mid, ts, body))
        self.assertEqual(j.get("code"), "bad_secret", j)

    def test_example_receiver_feeds_workflow(self):
        """Over HTTPS, as cap-server reaches it: a final event goes to the
        Workflow instance named in the URL, once; others are only stored."""
        import http.client
        import ssl
        job_id = "WorkflowSelf0123456789"
        inst = "self-" + os.urandom(6).hex()
        st, _, j = WORKERD.flow_create(inst)
        self.assertEqual(st, 200, j)
        ctx = ssl.create_default_context(cafile=TLS["ca"])

        def send(etype, status):
            body = json.dumps({"type": etype, "timestamp": "2026-12-06T21:00:00.123Z",
                               "data": {"job_id": job_id, "status": status,
                                        "result": {"r2_key": "renders/x.mp4"}}}).encode()
            h = wh.signed_headers([ALICE_SECRET], "msg_" + os.urandom(16).hex(), int(time.time()), body)
            out = []
            for _ in range(2):  # the second one: a retried delivery
                c = http.client.HTTPSConnection("127.0.0.1", WORKERD.receiver_tls_port, context=ctx, timeout=30)
                c.request("POST", "/cap/webhook?instance=" + inst, body=body, headers=h)
                r = c.getresponse()
                out.append((r.status, json.loads(r.read())))
                c.close()
            return out

        self.assertEqual(send("job.progress", "running"),
                         [(200, {"ok": True, "duplicate": False}), (200, {"ok": True, "duplicate": True})])
        time.sleep(0.5)
        st, _, j = WORKERD.flow_status(inst)
        self.assertEqual(j.get("status"), "waiting", "a progress event woke the Workflow: %r" % j)
        self.assertEqual(send("job.succeeded", "succeeded"),
                         [(200, {"ok": True, "duplicate": False}), (200, {"ok": True, "duplicate": True})])
        deadline = time.time() + 20
        while True:
            st, _, j = WORKERD.flow_status(inst)
            if j.get("status") == "complete" or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(j.get("status"), "complete", j)
        self.assertEqual((j["output"]["type"], j["output"]["job_id"]), ("job.succeeded", job_id), j)
        st, _, j = WORKERD.received(job_id)
        self.assertEqual([e["type"] for e in j["events"]], ["job.progress", "job.succeeded"], j)
        self.assertEqual(j["status"], "succeeded")

    def check_shape_light(self, d, n):
        self.assertRegex(d.headers["webhook-id"], MSG_ID_RE)
        self.assertEqual(len(d.headers["webhook-signature"].split(" ")), n)

    def test_example_receiver_stores_once(self):
        job_id = "ExampleRecv0123456789a"
        body = json.dumps({"type": "job.succeeded", "timestamp": "2026-12-06T21:00:00.123Z",
                           "data": {"job_id": job_id, "status": "succeeded"}}).encode()
        mid = "msg_" + os.urandom(16).hex()
        h = wh.signed_headers([ALICE_SECRET], mid, int(time.time()), body)
        st, _, j = WORKERD.receive(body, h)
        self.assertEqual((st, j), (200, {"ok": True, "duplicate": False}))
        st, _, j = WORKERD.receive(body, h)
        self.assertEqual((st, j), (200, {"ok": True, "duplicate": True}))
        st, _, j = WORKERD.received(job_id)
        self.assertEqual(st, 200, j)
        self.assertEqual([e["webhook_id"] for e in j["events"]], [mid])
        self.assertEqual(j["status"], "succeeded")
        # Another secret, a tampered body: refused, nothing stored.
        h2 = wh.signed_headers([wh.new_secret()], "msg_" + os.urandom(16).hex(), int(time.time()), body)
        st, _, j = WORKERD.receive(body, h2)
        self.assertEqual((st, j.get("code")), (401, "bad_signature"), j)
        st, _, j = WORKERD.receive(body.replace(b"succeeded", b"failed"), h)
        self.assertEqual((st, j.get("code")), (401, "bad_signature"), j)
        st, _, j = WORKERD.received(job_id)
        self.assertEqual(len(j["events"]), 1, j)


# ---------------------------------------------------------------------------

@skip_without_tools
class Deliveries(Judge):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="wh-deliveries-", dir=TMP)
        cls.recv = wh.Receiver(TLS).start()
        cls.srv = start_server(cls.dir, extra=["--callback-backoff-ms", "200", "--callback-progress-ms", "500"])

    @classmethod
    def tearDownClass(cls):
        mt.stop(cls.srv)
        cls.recv.stop()

    def attempts(self, job_id, **fields):
        return log_events(self.srv, "webhook.attempt", job_id=job_id, **fields)

    def quiet(self, path, n, seconds=3.0):
        """No more than n deliveries to path arrive within seconds."""
        time.sleep(seconds)
        self.assertEqual(len(self.recv.of(path)), n, self.recv.of(path))

    def job_now(self, job_id):
        st, h, j = mt.get_job(self.srv, job_id, token=ALICE)
        self.assertEqual(st, 200, j)
        return j

    def same_job(self, delivered, now):
        """data is the job object: what GET /jobs/{id} answers, but for the
        callback counters, which move as deliveries happen."""
        a = {k: v for k, v in delivered.items() if k != "callback"}
        b = {k: v for k, v in now.items() if k != "callback"}
        self.assertEqual(a, b)

    def test_succeeded_once(self):
        path = "/hook/succeeded"
        url = self.recv.url(path) + "?token=query-secret-abc123"
        st, h, j = exec_cb(self.srv, mt.render_body(SHORT, "renders/ok.mp4", "quick", wait=30), url)
        self.assertEqual(st, 200, j)
        job_id = j["job_id"]
        (d,) = self.recv.wait_path(path, 1, 30)
        self.assertEqual(d.query, "token=query-secret-abc123")
        ev = self.check_shape(d, 1, job_id, "job.succeeded")
        self.judge([d], [ALICE_SECRET])
        self.quiet(path, 1)
        now = self.job_now(job_id)
        self.same_job(ev["data"], now)
        self.assertEqual(ev["data"]["status"], "succeeded")
        self.assertEqual(ev["data"]["result"]["r2_key"], "renders/ok.mp4")
        # The log: one attempt, delivered, the host only.
        (a,) = self.attempts(job_id)
        self.assertEqual((a.get("outcome"), a.get("status"), a.get("attempt"), a.get("type")),
                         ("delivered", 200, 1, "job.succeeded"), a)
        self.assertEqual(a.get("webhook_id"), d.id)
        self.assertEqual(a.get("host"), "127.0.0.1", a)
        self.assertIsInstance(a.get("dur_ms"), (int, float), a)
        text = self.srv.log_text()
        self.assertNotIn("query-secret-abc123", text)
        self.assertNotIn(ALICE_SECRET[6:], text)
        self.assertNotIn(d.headers["webhook-signature"][3:], text)
        # The example receiver stores this real delivery once.
        st, _, j = WORKERD.receive(d.body, d.headers)
        self.assertEqual((st, j), (200, {"ok": True, "duplicate": False}))
        st, _, j = WORKERD.receive(d.body, d.headers)
        self.assertEqual((st, j), (200, {"ok": True, "duplicate": True}))
        st, _, j = WORKERD.received(job_id)
        self.assertEqual((st, j["status"], len(j["events"])), (200, "succeeded", 1), j)
        # GET /jobs/{id} shows the callback.
        cb = now.get("callback")
        self.assertIsInstance(cb, dict, now)
        # The URL is shown without its query, which may carry the
        # receiver's own secret (this one does).
        self.assertEqual(cb.get("url"), url.split("?")[0])
        self.assertIn("?token=", url)
        self.assertNotIn("query-secret", json.dumps(now))
        self.assertEqual(cb.get("events"), ["succeeded", "failed", "canceled"])
        if "delivered" in cb:
            self.assertEqual((cb["delivered"], cb.get("pending")), (1, 0), cb)

    def test_to_workflow_through_example_receiver(self):
        """cap-server -> the example receiver Worker (HTTPS, workerd) ->
        a Workflow instance waiting in step.waitForEvent."""
        inst = "render-" + os.urandom(6).hex()
        st, _, j = WORKERD.flow_create(inst)
        self.assertEqual(st, 200, j)
        st, h, j = exec_cb(self.srv, mt.render_body(SHORT, "renders/flow.mp4", "quick", wait=30),
                           WORKERD.receiver_url("instance=" + inst))
        self.assertEqual(st, 200, j)
        job_id = j["job_id"]
        deadline = time.time() + 30
        while True:
            st, _, w = WORKERD.flow_status(inst)
            if w.get("status") == "complete" or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(w.get("status"), "complete", (w, log_events(self.srv, "webhook.attempt", job_id=job_id),
                                                       WORKERD.log_text()[-2000:]))
        self.assertEqual((w["output"]["type"], w["output"]["job_id"], w["output"]["status"]),
                         ("job.succeeded", job_id, "succeeded"), w)
        self.assertEqual(w["output"]["result"]["r2_key"], "renders/flow.mp4")
        st, _, r = WORKERD.received(job_id)
        self.assertEqual((st, r.get("status"), len(r.get("events", []))), (200, "succeeded", 1), r)
        (a,) = log_events(self.srv, "webhook.attempt", job_id=job_id)
        self.assertEqual((a.get("outcome"), a.get("status")), ("delivered", 200), a)
        self.assertEqual(r["events"][0]["webhook_id"], a.get("webhook_id"))

    def test_failed(self):
        path = "/hook/failed"
        st, h, j = exec_cb(self.srv, mt.probe_body(GARBAGE, wait=30), self.recv.url(path))
        self.assertEqual(st, 502, j)
        job_id = j.get("job_id") or self.job_id_from_log(GARBAGE)
        (d,) = self.recv.wait_path(path, 1, 30)
        ev = self.check_shape(d, 1, job_id, "job.failed")
        self.assertEqual(ev["data"]["status"], "failed")
        self.assertEqual(ev["data"]["error"]["code"], "ffmpeg_failed")
        self.judge([d], [ALICE_SECRET])
        self.quiet(path, 1)
        self.same_job(ev["data"], self.job_now(job_id))

    def job_id_from_log(self, key):
        lines = [l for l in log_events(self.srv, "job.queued") if l.get("input_key") == key]
        self.assertTrue(lines, "no job.queued for %s" % key)
        return lines[-1]["job_id"]

    def test_canceled(self):
        path = "/hook/canceled"
        st, h, j = exec_cb(self.srv, mt.render_body(MID, "renders/cancel.mp4", "slow", **{"async": True}),
                           self.recv.url(path))
        self.assertEqual(st, 202, j)
        job_id = j["job_id"]
        mt.wait_status(self.srv, job_id, ("running",), timeout=30, token=ALICE)
        st, h, j = mt.delete_job(self.srv, job_id, token=ALICE)
        self.assertIn(st, (200, 202), j)
        (d,) = self.recv.wait_path(path, 1, 30)
        ev = self.check_shape(d, 1, job_id, "job.canceled")
        self.assertEqual(ev["data"]["status"], "canceled")
        self.judge([d], [ALICE_SECRET])
        self.quiet(path, 1)
        mt.poll_job(self.srv, job_id, token=ALICE)
        self.same_job(ev["data"], self.job_now(job_id))

    def test_chosen_events(self):
        path = "/hook/events"
        st, h, j = exec_cb(self.srv, mt.render_body(MID, "renders/events.mp4", "slow", wait=30),
                           self.recv.url(path), events=["started", "progress", "succeeded"])
        self.assertEqual(st, 200, j)
        job_id = j["job_id"]
        self.recv.wait(lambda ds: any(d.path == path and d.event()["type"] == "job.succeeded" for d in ds),
                       30, "job.succeeded at %s" % path)
        time.sleep(3)
        ds = self.recv.of(path)
        types = [d.event()["type"] for d in ds]
        self.assertEqual(types.count("job.started"), 1, types)
        self.assertEqual(types.count("job.succeeded"), 1, types)
        self.assertGreaterEqual(types.count("job.progress"), 1, types)
        self.assertEqual(set(types), {"job.started", "job.progress", "job.succeeded"}, types)
        # One webhook-id per event, each delivered once.
        self.assertEqual(len({d.id for d in ds}), len(ds), ds)
        evs = sorted((self.check_shape(d, 1, job_id) for d in ds), key=lambda e: e["timestamp"])
        self.assertEqual(evs[0]["type"], "job.started", [e["type"] for e in evs])
        self.assertEqual(evs[-1]["type"], "job.succeeded", [e["type"] for e in evs])
        self.assertEqual(evs[0]["data"]["status"], "running")
        for e in evs:
            if e["type"] == "job.progress":
                self.assertIn(e["data"]["status"], ("running", "uploading"), e)
                self.assertIsInstance(e["data"].get("progress"), dict, e)
        # At most one progress event per callback_progress_ms (500 ms).
        pts = [captools_ts(e["timestamp"]) for e in evs if e["type"] == "job.progress"]
        for a, b in zip(pts, pts[1:]):
            self.assertGreaterEqual(b - a, 0.45, pts)
        self.judge(ds, [ALICE_SECRET])
        self.assertEqual(len(log_events(self.srv, "webhook.attempt", job_id=job_id, outcome="delivered")),
                         len(ds))

    def test_rotation(self):
        path = "/hook/rotation"
        st, h, j = exec_cb(self.srv, mt.probe_body(SHORT, wait=30), self.recv.url(path), token=ROT)
        self.assertEqual(st, 200, j)
        (d,) = self.recv.wait_path(path, 1, 30)
        self.check_shape(d, 2, j["job_id"], "job.succeeded")
        # Each secret alone verifies it: a receiver on the old or the new one.
        self.judge([d], ROT_SECRETS)
        (r,) = wh.node_verify([{"secret": ALICE_SECRET, "body": d.body, "headers": d.headers}])
        self.assertFalse(r["ok"], "signed with another token's secret too")

    def test_500_500_200(self):
        path = "/hook/flaky"
        self.recv.script(path, [500, 500, 200])
        st, h, j = exec_cb(self.srv, mt.probe_body(SHORT, wait=30), self.recv.url(path))
        self.assertEqual(st, 200, j)
        job_id = j["job_id"]
        ds = self.recv.wait_path(path, 3, 30)
        self.quiet(path, 3)
        self.assertEqual([d.status for d in ds], [500, 500, 200])
        self.assertEqual(len({d.id for d in ds}), 1, "webhook-id changed between attempts: %r" % ds)
        for d in ds:
            self.check_shape(d, 1, job_id, "job.succeeded")
        # Each attempt is signed over its own timestamp, and the body is the
        # same bytes every time.
        self.assertEqual(len({d.body for d in ds}), 1)
        self.judge(ds, [ALICE_SECRET], tamper=False)
        self.judge(ds[-1:], [ALICE_SECRET])
        at = self.attempts(job_id)
        self.assertEqual([(a.get("attempt"), a.get("status"), a.get("outcome")) for a in at],
                         [(1, 500, "retry"), (2, 500, "retry"), (3, 200, "delivered")], at)
        for a in at[:2]:
            self.assertIsInstance(a.get("next_in_ms"), int, a)
        self.assertEqual({a.get("webhook_id") for a in at}, {ds[0].id})

    def test_410_stops(self):
        path = "/hook/gone"
        self.recv.script(path, [410, 200, 200, 200])
        before = wh.metric_value(metrics_text(self.srv), "cap_webhook_attempts_total", {"outcome": "gone"}) or 0
        st, h, j = exec_cb(self.srv, mt.probe_body(SHORT, wait=30), self.recv.url(path))
        self.assertEqual(st, 200, j)
        job_id = j["job_id"]
        self.recv.wait_path(path, 1, 30)
        # The backoff is 200 ms: a retry would have come by now.
        self.quiet(path, 1, seconds=4)
        (a,) = self.attempts(job_id)
        self.assertEqual((a.get("status"), a.get("outcome")), (410, "gone"), a)
        dropped = log_events(self.srv, "webhook.dropped", job_id=job_id)
        self.assertEqual(len(dropped), 1, dropped)
        self.assertEqual(dropped[0].get("level"), "warn", dropped)
        after = wh.metric_value(metrics_text(self.srv), "cap_webhook_attempts_total", {"outcome": "gone"})
        self.assertEqual(after, before + 1)

    def test_receiver_down_30s(self):
        recv = wh.Receiver(TLS)
        port = recv.reserve_port()
        path = "/hook/down"
        st, h, j = exec_cb(self.srv, mt.probe_body(SHORT, wait=30), recv.url(path))
        self.assertEqual(st, 200, j)
        job_id = j["job_id"]
        t0 = time.time()
        try:
            time.sleep(30)
            tried = self.attempts(job_id)
            self.assertGreaterEqual(len(tried), 3, tried)
            for a in tried:
                self.assertEqual(a.get("outcome"), "retry", a)
            ids = {a.get("webhook_id") for a in tried}
            self.assertEqual(len(ids), 1, "webhook-id changed between attempts: %r" % tried)
            self.assertEqual(recv.port, port)
            recv.start()
            (d,) = recv.wait_path(path, 1, 60)
            self.assertGreater(d.t - t0, 30)
            self.assertEqual(d.id, ids.pop())
            self.check_shape(d, 1, job_id, "job.succeeded")
            self.judge([d], [ALICE_SECRET])
            time.sleep(3)
            self.assertEqual(len(recv.of(path)), 1, recv.of(path))
            at = self.attempts(job_id)
            self.assertEqual([a.get("outcome") for a in at], ["retry"] * (len(at) - 1) + ["delivered"], at)
            self.assertEqual({a.get("webhook_id") for a in at}, {d.id})
            self.assertEqual([a.get("attempt") for a in at], list(range(1, len(at) + 1)), at)
        finally:
            recv.stop()


def captools_ts(s):
    """Seconds since the epoch of an RFC 3339 UTC time with milliseconds."""
    import calendar
    base, ms = s[:-1].split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000.0


# ---------------------------------------------------------------------------

@skip_without_tools
class Refusals(unittest.TestCase):
    """A server without callback_allow_cidrs: private and loopback targets
    are refused, whatever callback_hosts lists."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="wh-refusals-", dir=TMP)
        cls.recv = wh.Receiver(TLS).start()
        hosts = "127.0.0.1,localhost,10.0.0.1,100.64.0.1,169.254.169.254,::1,hooks.invalid"
        cls.srv = start_server(cls.dir, hosts=hosts, allow=None, extra=["--callback-backoff-ms", "200"])

    @classmethod
    def tearDownClass(cls):
        mt.stop(cls.srv)
        cls.recv.stop()

    def refused(self, url, token=ALICE, code="callback_forbidden", **kw):
        st, h, j = exec_cb(self.srv, mt.probe_body(SHORT, **{"async": True}), url, token=token, **kw)
        self.assertEqual((st, (j or {}).get("code")), (400, code), (url, j))
        self.assertTrue((j or {}).get("error"), j)
        return j

    def test_forbidden_targets(self):
        # Each refused for its own rule (the message names it): the hosts
        # are listed, so an address refusal is the address rule's.
        p = self.recv.port
        for url, rule in (
                ("https://127.0.0.1:%d/hook" % p, "loopback"),          # no allow_cidrs
                ("https://127.0.0.2:%d/hook" % p, ""),                  # not listed either
                ("http://127.0.0.1:%d/hook" % p, "https"),
                ("http://hooks.invalid/hook", "https"),
                ("ftp://hooks.invalid/hook", "https"),
                ("https://10.0.0.1/hook", "private"),
                ("https://100.64.0.1/hook", "cgnat"),
                ("https://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata
                ("https://[::1]:%d/hook" % p, "loopback"),
                ("https://user@hooks.invalid/hook", "user"),
                ("https://user:pw@hooks.invalid/hook", "user"),
                ("https://evil.example.net/hook", "callback_hosts"),
                ("https://hooks.invalid.evil.net/hook", "callback_hosts"),  # a suffix is not the host
                ("https://hooks.invalid/" + "a" * 2100, "2048"),
                ("hooks.invalid/hook", ""),
                ("", "")):
            with self.subTest(url=url[:80]):
                j = self.refused(url)
                self.assertIn(rule, j["error"].lower(), j)
        self.assertEqual(self.recv.deliveries, [])

    def test_token_without_secret(self):
        j = self.refused("https://hooks.invalid/hook", token=NOSECRET)
        self.assertIn("secret", j["error"].lower(), j)

    def test_listed_public_name_accepted(self):
        # The control for the refusals above: a listed host with a secret is
        # taken (its delivery fails later: .invalid never resolves).
        st, h, j = exec_cb(self.srv, mt.probe_body(SHORT, **{"async": True}), "https://hooks.invalid/hook")
        self.assertEqual(st, 202, j)

    def test_bad_fields(self):
        ok = "https://hooks.invalid/hook"
        for body, why in (
                ({"callback_events": ["succeeded"]}, "events without url"),
                ({"callback_url": ok, "callback_events": []}, "empty"),
                ({"callback_url": ok, "callback_events": ["finished"]}, "unknown event"),
                ({"callback_url": ok, "callback_events": ["succeeded", "succeeded"]}, "duplicate"),
                ({"callback_url": ok, "callback_events": "succeeded"}, "not an array"),
                ({"callback_url": ok, "callback_events": [1]}, "not strings"),
                ({"callback_url": 42}, "url not a string")):
            with self.subTest(why=why):
                b = mt.probe_body(SHORT, **{"async": True})
                b.update(body)
                st, h, j = mt.exec_(self.srv, b, token=ALICE)
                self.assertEqual((st, (j or {}).get("code")), (400, "invalid_field"), (why, j))

    def test_name_resolving_to_loopback(self):
        path = "/hook/resolves-to-loopback"
        before = wh.metric_value(metrics_text(self.srv), "cap_webhook_attempts_total", {"outcome": "refused"}) or 0
        st, h, j = exec_cb(self.srv, mt.probe_body(SHORT, wait=30), self.recv.url(path, host="localhost"))
        self.assertEqual(st, 200, j)
        job_id = j["job_id"]
        deadline = time.time() + 20
        while not log_events(self.srv, "webhook.attempt", job_id=job_id) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # a retry (200 ms backoff) would have come by now
        at = log_events(self.srv, "webhook.attempt", job_id=job_id)
        self.assertEqual(len(at), 1, at)
        self.assertEqual((at[0].get("outcome"), at[0].get("host")), ("refused", "localhost"), at)
        dropped = log_events(self.srv, "webhook.dropped", job_id=job_id)
        self.assertEqual(len(dropped), 1, dropped)
        self.assertEqual(self.recv.of(path), [])
        after = wh.metric_value(metrics_text(self.srv), "cap_webhook_attempts_total", {"outcome": "refused"})
        self.assertEqual(after, before + 1)


# ---------------------------------------------------------------------------

def health_latencies(srv, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        st, h, j = mt.call(srv, "GET", "/health", token=None, timeout=10)
        out.append(time.perf_counter() - t)
        assert st == 200, (st, j)
    return out


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


@skip_without_tools
class SlowReceiver(Judge):
    def test_slow_receiver_blocks_nothing(self):
        d = tempfile.mkdtemp(prefix="wh-slow-", dir=TMP)
        recv = wh.Receiver(TLS).start()
        srv = start_server(d)
        try:
            path = "/hook/slow"
            recv.script(path, [("sleep", 20, 200)] * 100)
            base = health_latencies(srv, 200)
            # More slow deliveries than callback_concurrency (8) lets run at once.
            jobs = []
            for i in range(10):
                st, h, j = exec_cb(srv, mt.probe_body(SHORT, wait=30), recv.url(path))
                self.assertEqual(st, 200, j)
                jobs.append(j["job_id"])
            recv.wait(lambda ds: len([x for x in ds if x.path == path]) >= 8, 30, "8 slow deliveries under way")
            t0 = time.time()
            during = health_latencies(srv, 200)
            # Other jobs run as usual, and a cancel is answered at once.
            t = time.time()
            st, h, j = mt.exec_(srv, mt.render_body(SHORT, "renders/other.mp4", "quick", wait=30), token=ALICE)
            self.assertEqual(st, 200, j)
            st, h, j = mt.exec_(srv, mt.probe_body(SHORT, wait=30), token=ALICE)
            self.assertEqual(st, 200, j)
            other_s = time.time() - t
            st, h, j = exec_cb(srv, mt.render_body(MID, "renders/slowcancel.mp4", "slow", **{"async": True}),
                               recv.url(path))
            self.assertEqual(st, 202, j)
            mt.wait_status(srv, j["job_id"], ("running",), timeout=20, token=ALICE)
            t = time.time()
            st, h, c = mt.delete_job(srv, j["job_id"], token=ALICE)
            cancel_s = time.time() - t
            self.assertIn(st, (200, 202), c)
            self.assertEqual(mt.poll_job(srv, j["job_id"], timeout=20, token=ALICE)["status"], "canceled")
            # Still within the first slow round: the deliveries were in flight.
            self.assertLess(time.time() - t0, 20, "the measurement outlasted the slow deliveries")
            self.assertTrue(any(x.status is None for x in recv.of(path)))
            print("\n/health p99 %.1f ms without deliveries, %.1f ms during 8 slow ones; other jobs %.2f s; "
                  "cancel %.3f s" % (p99(base) * 1000, p99(during) * 1000, other_s, cancel_s), file=sys.stderr)
            self.assertLess(p99(during), 0.25, "health p99 %.3f s during slow deliveries" % p99(during))
            self.assertLess(other_s, 20)
            self.assertLess(cancel_s, 2)
            # The attempts time out (callback_timeout_ms 10 s) and are retried.
            deadline = time.time() + 30
            while time.time() < deadline and not log_events(srv, "webhook.attempt", outcome="retry"):
                time.sleep(0.2)
            self.assertTrue(log_events(srv, "webhook.attempt", outcome="retry"))
            # Drain is not held by deliveries under way.
            t = time.time()
            rc = srv.stop(timeout=30)
            self.assertEqual(rc, 0)
            self.assertLess(time.time() - t, 10, "stop waited for slow deliveries")
        finally:
            terminate(srv.proc)
            srv._close_pipes()
            recv.stop()


# ---------------------------------------------------------------------------

@skip_without_tools
class Restart(Judge):
    def test_pending_delivered_after_restart(self):
        d = tempfile.mkdtemp(prefix="wh-restart-", dir=TMP)
        data = os.path.join(d, "data")
        os.makedirs(os.path.join(data, "uploads"))
        extra = ["--callback-backoff-ms", "200"]
        recv = wh.Receiver(TLS)
        recv.reserve_port()
        path = "/hook/restart"
        srv = start_server(d, data=data, extra=extra)
        srv2 = None
        try:
            st, h, j = exec_cb(srv, mt.probe_body(SHORT, wait=30), recv.url(path))
            self.assertEqual(st, 200, j)
            job_id = j["job_id"]
            deadline = time.time() + 20
            while len(log_events(srv, "webhook.attempt", job_id=job_id)) < 2 and time.time() < deadline:
                time.sleep(0.1)
            tried = log_events(srv, "webhook.attempt", job_id=job_id)
            self.assertGreaterEqual(len(tried), 2, tried)
            ids = {a.get("webhook_id") for a in tried}
            self.assertEqual(len(ids), 1, tried)
            self.assertEqual(srv.stop(signal.SIGTERM, timeout=30), 0)
            # Up while the server is down: nothing arrives.
            recv.start()
            time.sleep(2)
            self.assertEqual(recv.of(path), [])
            srv2 = Server(mt.HIGH + server_args(d, extra=extra) + ["--data-dir", data], token=None)
            (dv,) = recv.wait_path(path, 1, 60)
            self.assertEqual(dv.id, ids.pop(), "another webhook-id after the restart")
            self.check_shape(dv, 1, job_id, "job.succeeded")
            self.judge([dv], [ALICE_SECRET])
            time.sleep(3)
            self.assertEqual(len(recv.of(path)), 1, recv.of(path))
            at = log_events(srv2, "webhook.attempt", job_id=job_id)
            self.assertEqual(at[-1].get("outcome"), "delivered", at)
            # The job itself is still there (journal).
            st, h, jj = mt.get_job(srv2, job_id, token=ALICE)
            self.assertEqual((st, jj.get("status")), (200, "succeeded"), jj)
        finally:
            terminate(srv.proc)
            srv._close_pipes()
            if srv2 is not None:
                terminate(srv2.proc)
                srv2._close_pipes()
            recv.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
