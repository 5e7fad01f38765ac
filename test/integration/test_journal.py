#!/usr/bin/env python3
"""Integration tests (issue 15): the SQLite journal.  Jobs survive a
restart, a crash leaves nothing behind, a broken journal is a clear error.

- Restart: jobs finished before a SIGTERM, and before a SIGKILL, answer
  GET /jobs/{id} with the same JSON afterwards; an Idempotency-Key retry
  (same body) of a succeeded job answers the stored result and starts no
  child (no job.started line, cap_child_exits_total unchanged, no child
  seen by a 10 ms /proc sampler); a different body under the key is
  409 idempotency_conflict, as before the restart.
- Crash matrix (S3 bed): 50 jobs (probes, renders, raw multipart uploads,
  downloads, hls-ladder and dash-ladder packages) and more than 20 SIGKILLs of cap-server
  spread over every phase (queued, probing, downloading, rendering,
  multipart uploading, ladder segments going up, idle, and during the
  start-up recovery itself), restarting on the same data directory each
  time.  After each restart: every job id answers with a terminal state
  (the ones in flight at the kill: failed, code interrupted, retryable);
  no open multipart upload once the recovery ran; the bucket holds exactly
  the outputs of the succeeded jobs (an interrupted ladder's objects are
  deleted); nothing in DATA/.cap-tmp; no child of the killed server alive;
  idempotent retries of the succeeded jobs start no child.  Interrupted
  jobs are retried under the same key (some get killed again) and all
  succeed in the end.
- Journal faults: a truncated database, a garbage file, a state directory
  that cannot be written (a read-only tmpfs: root ignores mode bits, not a
  read-only mount; and a path whose parent is a regular file), a full disk
  (a 2 MiB tmpfs) at start and while serving; --journal-reset moves the
  broken file aside; --journal off creates no file.
- TTL: rows older than job_ttl_s are gone after a restart; under a steady
  stream of jobs the database stops growing.
"""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import captools  # noqa: E402
import capsrv  # noqa: E402
import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402
from s3bed import S3Bed  # noqa: E402

PART = 5 * 1024 * 1024
BUCKET = "journal"
TERMINAL = mt.TERMINAL


# ---------------------------------------------------------------------------
# Small helpers

def log_lines(srv):
    return captools.complete_log_lines(srv.log_text())


def events(srv, name):
    return [l for l in log_lines(srv) if l.get("event") == name]


def metrics_text(srv):
    status, _, body = captools.http(srv, "GET", "/metrics", timeout=10)
    if status != 200:
        raise AssertionError("/metrics -> %d %r" % (status, body[:200]))
    return body.decode()


def metric_sum(text, name, **labels):
    """Sum of every series of a metric whose labels include the given ones."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def proc_alive(pid, argv=None):
    """True when pid runs (not a zombie) and, if argv is given, still runs
    that command line (so a reused pid is not taken for the old child)."""
    s = mt._stat(pid)
    if s is None or s[1] == "Z":
        return False
    return argv is None or mt.cmdline(pid) == argv


def live_children(pid):
    """{pid: argv} of the live children of pid (any program)."""
    return {p: mt.cmdline(p) for p, s in mt.children(pid).items() if s[1] != "Z"}


def procs_mentioning(text):
    """{pid: argv} of live ffmpeg/ffprobe processes anywhere whose command
    line contains text."""
    out = {}
    for p, s in mt.all_procs().items():
        if s[0] in mt.MEDIA_COMMS and s[1] != "Z":
            argv = mt.cmdline(p)
            if any(text in a for a in argv):
                out[p] = argv
    return out


def tmp_entries(data):
    return mt.tmp_entries_in(data)


def kill9(srv):
    """SIGKILL the server; returns {pid: argv} of the children it had just
    before (taken as close to the kill as /proc allows)."""
    kids = live_children(srv.proc.pid)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(15)
    srv._close_pipes()
    # A child that was starting (between fork and exec) may not have been
    # listed; list again: the dead server's children are reparented, so
    # look for its leftovers by command line below as well.
    return kids


def wait_gone(kids, timeout=5.0):
    """Waits until none of kids ({pid: argv}) runs; returns those that do."""
    deadline = time.time() + timeout
    while True:
        left = {p: a for p, a in kids.items() if proc_alive(p, a)}
        if not left or time.time() >= deadline:
            return left
        time.sleep(0.05)


def reap_orphans(kids):
    """Kills children of one of our servers that outlived it (a finding
    already reported by the caller), so that they do not load the machine."""
    for p, a in kids.items():
        if proc_alive(p, a):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def file_sizes(path):
    """{suffix: size} of the journal's files (database, -wal, -shm)."""
    out = {}
    for suf in ("", "-wal", "-shm"):
        try:
            out[suf] = os.path.getsize(path + suf)
        except FileNotFoundError:
            pass
    return out


def db_stats(path):
    """Reads the journal (read-only, beside the running server: WAL mode
    allows readers) and returns (rows per table, page_count, freelist_count,
    page_size)."""
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        rows = {t: con.execute('SELECT count(*) FROM "%s"' % t.replace('"', '""')).fetchone()[0]
                for t in tables}
        pc = con.execute("PRAGMA page_count").fetchone()[0]
        fl = con.execute("PRAGMA freelist_count").fetchone()[0]
        ps = con.execute("PRAGMA page_size").fetchone()[0]
        return rows, pc, fl, ps
    finally:
        con.close()


def start(data, args=(), env=None, log=None, token=capsrv.TOKEN):
    """A cap-server on data (a later --data-dir wins over capsrv's own)."""
    srv = capsrv.Server(mt.HIGH + ["--data-dir", data] + list(args), env=env, log_file=log,
                        token=token)
    srv.data = data
    return srv


def run_server_to_exit(args, log, timeout=20, env=None):
    """Runs cap-server expecting it to refuse to start; returns
    (returncode, stderr text, log lines)."""
    r = captools.run_bin(["--port", "0", "--host", "127.0.0.1", "--log-file", log] + mt.HIGH
                         + list(args), env=env, token=capsrv.TOKEN, timeout=timeout)
    lines = []
    if os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as f:
            for raw in f.read().splitlines():
                if raw.strip():
                    lines.append(json.loads(raw))
    return r.returncode, r.stderr.decode(errors="replace"), lines


def can_mount():
    if os.geteuid() != 0:
        return False
    d = tempfile.mkdtemp(prefix="jt-mnt-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                           capture_output=True)
        if r.returncode != 0:
            return False
        subprocess.run(["umount", d], capture_output=True)
        return True
    finally:
        os.rmdir(d)


CAN_MOUNT = can_mount()


class Tmpfs:
    """A small tmpfs mounted for one test (root only)."""

    def __init__(self, size="2m"):
        self.dir = tempfile.mkdtemp(prefix="jt-tmpfs-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs",
                        self.dir], check=True, capture_output=True)

    def remount(self, opts):
        subprocess.run(["mount", "-o", "remount,%s" % opts, self.dir], check=True,
                       capture_output=True)

    def fill(self):
        """Writes filler files until the file system is full (big writes,
        then small ones down to the last block); returns the first path
        (the second is PATH2)."""
        path = os.path.join(self.dir, "filler")
        for p, size in ((path, 65536), (path + "2", 512)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
            finally:
                os.close(fd)
        return path

    def close(self):
        subprocess.run(["umount", "-l", self.dir], capture_output=True)
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# 1. Restart on the file store

PRESETS_FS = {"small": mt.small_preset(), "slow": mt.small_preset(realtime=True)}


class Restart(unittest.TestCase):
    """Finished jobs survive SIGTERM and SIGKILL with the same JSON, and
    their idempotent retries start no child."""
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsrv-journal-restart-")
        cls.data = os.path.join(cls.tmp, "data")
        os.makedirs(os.path.join(cls.data, "uploads"))
        cls.presets = mt.presets_file(cls.tmp, PRESETS_FS)
        shutil.copyfile(mt.clip(1.0, "160x120"), os.path.join(cls.data, "uploads/short.mp4"))
        shutil.copyfile(mt.clip(3.0, "160x120", audio=False), os.path.join(cls.data, "uploads/mid.mp4"))
        with open(os.path.join(cls.data, "uploads/garbage.mp4"), "wb") as f:
            f.write(os.urandom(20000))
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def start(self):
        Restart.n += 1
        srv = start(self.data, ["--presets", self.presets, "--pool-cpu", "2"],
                    log=os.path.join(self.tmp, "server-%d.log" % self.n))
        self.addCleanup(lambda: capsrv.terminate(srv.proc) if srv.proc.poll() is None else None)
        return srv

    def retry_runs_nothing(self, srv, body, key, want):
        """An idempotent retry answers want (the stored /exec answer) and no
        child starts."""
        before = metric_sum(metrics_text(srv), "cap_child_exits_total")
        started = len(mt.job_started_lines(srv))
        sampler = mt.ChildSampler(srv.proc.pid, 0.01)
        sampler.start()
        try:
            status, _, j = mt.exec_(srv, body, headers={"Idempotency-Key": key})
        finally:
            sampler.stop()
        self.assertEqual(status, 200, j)
        self.assertEqual(j, want, "the retry must answer the stored result")
        time.sleep(0.3)
        self.assertEqual(sampler.seen, {}, "a retry of a succeeded job started a child")
        self.assertEqual(len(mt.job_started_lines(srv)), started, "a retry logged job.started")
        self.assertEqual(metric_sum(metrics_text(srv), "cap_child_exits_total"), before)

    def test_restart_keeps_finished_jobs(self):
        srv = self.start()
        k_render, k_probe = "r-" + uuid.uuid4().hex, "p-" + uuid.uuid4().hex
        render = mt.render_body("uploads/short.mp4", "renders/r1.mp4", "small")
        probe = mt.probe_body("uploads/short.mp4")
        s, _, a_render = mt.exec_(srv, dict(render, wait=60), headers={"Idempotency-Key": k_render})
        self.assertEqual(s, 200, a_render)
        s, _, a_probe = mt.exec_(srv, dict(probe, wait=60), headers={"Idempotency-Key": k_probe})
        self.assertEqual(s, 200, a_probe)
        # A failed job: the input is no media file.
        s, _, a_bad = mt.exec_(srv, mt.render_body("uploads/garbage.mp4", "renders/bad.mp4", "small",
                                                    wait=60))
        self.assertGreaterEqual(s, 400, a_bad)
        ids = [a_render["job_id"], a_probe["job_id"]]
        # The error body may not name the job: the last job.queued line does.
        ids.append(a_bad.get("job_id") or events(srv, "job.queued")[-1]["job_id"])
        # A canceled job.
        s, _, a_c = mt.exec_(srv, mt.render_body("uploads/mid.mp4", "renders/c.mp4", "slow",
                                                  **{"async": True}))
        self.assertEqual(s, 202, a_c)
        mt.wait_status(srv, a_c["job_id"], ("running",))
        s, _, _ = mt.delete_job(srv, a_c["job_id"])
        self.assertEqual(s, 200)
        mt.poll_job(srv, a_c["job_id"])
        # Canceled at once, but final only once its killed child has been
        # reaped: its error then shows the signal (docs/API.md, DELETE), and
        # that is the job the journal keeps.
        deadline = time.time() + 10
        while "signal" not in (mt.get_job(srv, a_c["job_id"])[2].get("error") or {}):
            self.assertLess(time.time(), deadline, "the canceled job's child was not reaped")
            time.sleep(0.05)
        ids.append(a_c["job_id"])
        before = {}
        for i in ids:
            s, _, j = mt.get_job(srv, i)
            self.assertEqual(s, 200, j)
            self.assertIn(j["status"], TERMINAL, j)
            before[i] = j
        self.assertEqual([before[i]["status"] for i in ids],
                         ["succeeded", "succeeded", "failed", "canceled"])
        path = os.path.join(self.data, ".cap-state", "journal.db")
        self.assertEqual(srv.stop(signal.SIGTERM), 0)
        self.assertTrue(os.path.exists(path), "no journal at %s" % path)

        # SIGTERM, restart: the same JSON.
        srv = self.start()
        captools.wait_event(srv, "journal.recovered", timeout=10)
        for i in ids:
            s, _, j = mt.get_job(srv, i)
            self.assertEqual(s, 200, (i, j))
            self.assertEqual(j, before[i], "GET /jobs/%s changed across a SIGTERM restart" % i)
        self.retry_runs_nothing(srv, dict(render, wait=30), k_render, a_render)
        self.retry_runs_nothing(srv, dict(probe, **{"async": True}), k_probe, a_probe)
        s, _, e = mt.exec_(srv, mt.render_body("uploads/short.mp4", "renders/other.mp4", "small"),
                           headers={"Idempotency-Key": k_render})
        self.assertEqual((s, (e or {}).get("code")), (409, "idempotency_conflict"), e)
        s, _, e = mt.exec_(srv, mt.render_body("uploads/mid.mp4", "renders/r1.mp4", "small"),
                           headers={"Idempotency-Key": k_render})
        self.assertEqual((s, (e or {}).get("code")), (409, "idempotency_conflict"), e)
        # A job of the second run.
        k2 = "r2-" + uuid.uuid4().hex
        render2 = mt.render_body("uploads/short.mp4", "renders/r2.mp4", "small")
        s, _, a_r2 = mt.exec_(srv, dict(render2, wait=60), headers={"Idempotency-Key": k2})
        self.assertEqual(s, 200, a_r2)
        s, _, before[a_r2["job_id"]] = mt.get_job(srv, a_r2["job_id"])
        ids.append(a_r2["job_id"])
        mtime = os.stat(os.path.join(self.data, "renders/r1.mp4")).st_mtime_ns

        # SIGKILL, restart: the same again (the journal's commits are in
        # the WAL, synchronous=NORMAL loses nothing on a process crash).
        kids = kill9(srv)
        self.assertEqual(kids, {}, "no job was running")
        srv = self.start()
        captools.wait_event(srv, "journal.recovered", timeout=10)
        for i in ids:
            s, _, j = mt.get_job(srv, i)
            self.assertEqual(s, 200, (i, j))
            self.assertEqual(j, before[i], "GET /jobs/%s changed across a SIGKILL restart" % i)
        self.retry_runs_nothing(srv, dict(render, wait=30), k_render, a_render)
        self.retry_runs_nothing(srv, dict(render2, wait=30), k2, a_r2)
        s, _, e = mt.exec_(srv, mt.probe_body("uploads/short.mp4"), headers={"Idempotency-Key": k2})
        self.assertEqual((s, (e or {}).get("code")), (409, "idempotency_conflict"), e)
        self.assertEqual(os.stat(os.path.join(self.data, "renders/r1.mp4")).st_mtime_ns, mtime,
                         "the output was rewritten")
        # A job canceled or failed is not run again by a retry either: the
        # key still maps to it (only an interrupted job runs anew).
        self.assertEqual(capsrv.terminate(srv.proc), 0)

    def test_log_lines(self):
        """journal.opened {path, jobs, events, size_bytes} and
        journal.recovered {interrupted, aborted_uploads, deleted_objects},
        as the spec names them."""
        tmp = tempfile.mkdtemp(prefix="capsrv-journal-lines-", dir=self.tmp)
        data = os.path.join(tmp, "data")
        os.makedirs(os.path.join(data, "uploads"))
        shutil.copyfile(mt.clip(1.0, "160x120"), os.path.join(data, "uploads/short.mp4"))
        path = os.path.join(data, ".cap-state", "journal.db")
        srv = start(data, [], log=os.path.join(tmp, "a.log"))
        for _ in range(3):
            s, _, a = mt.exec_(srv, mt.probe_body("uploads/short.mp4"))
            self.assertEqual(s, 200, a)
        self.assertEqual(capsrv.terminate(srv.proc), 0)
        srv._close_pipes()
        srv = start(data, [], log=os.path.join(tmp, "b.log"))
        try:
            opened = captools.wait_event(srv, "journal.opened", timeout=10)
            self.assertEqual(opened.get("path"), path, opened)
            self.assertEqual(opened.get("jobs"), 3, opened)
            self.assertEqual(opened.get("events"), 0, opened)
            self.assertGreater(opened.get("size_bytes", 0), 0, opened)
            rec = captools.wait_event(srv, "journal.recovered", timeout=10)
            for f in ("interrupted", "aborted_uploads", "deleted_objects"):
                self.assertEqual(rec.get(f), 0, (f, rec))
        finally:
            self.assertEqual(capsrv.terminate(srv.proc), 0)
            srv._close_pipes()

    def test_journal_off_creates_no_file(self):
        tmp = tempfile.mkdtemp(prefix="capsrv-journal-off-", dir=self.tmp)
        data = os.path.join(tmp, "data")
        os.makedirs(os.path.join(data, "uploads"))
        shutil.copyfile(mt.clip(1.0, "160x120"), os.path.join(data, "uploads/short.mp4"))
        srv = start(data, ["--journal", "off"], log=os.path.join(tmp, "a.log"))
        s, _, a = mt.exec_(srv, mt.probe_body("uploads/short.mp4"))
        self.assertEqual(s, 200, a)
        self.assertEqual(capsrv.terminate(srv.proc), 0)
        srv._close_pipes()
        left = [n for n in os.listdir(data) if "journal" in n or n.endswith((".db", "-wal", "-shm"))]
        self.assertEqual(left, [], "--journal off wrote %r" % left)
        self.assertEqual(events(srv, "journal.opened"), [])
        srv = start(data, ["--journal", "off"], log=os.path.join(tmp, "b.log"))
        s, _, e = mt.get_job(srv, a["job_id"])
        self.assertEqual((s, (e or {}).get("code")), (404, "job_not_found"), e)
        self.assertEqual(capsrv.terminate(srv.proc), 0)
        srv._close_pipes()
        left = [n for n in os.listdir(data) if "journal" in n or n.endswith((".db", "-wal", "-shm"))]
        self.assertEqual(left, [])


# ---------------------------------------------------------------------------
# 2. Journal faults

class Faults(unittest.TestCase):
    """A journal that cannot be read or written: a clear start-up error
    (exit status 1-125, one JSON error line naming the file, and for a
    corrupt one the recovery --journal-reset), never a crash; at run time
    logged errors and the server goes on."""
    maxDiff = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="capsrv-journal-faults-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")
        os.makedirs(os.path.join(self.data, "uploads"))
        shutil.copyfile(mt.clip(1.0, "160x120"), os.path.join(self.data, "uploads/short.mp4"))
        self.n = 0

    def log(self):
        self.n += 1
        return os.path.join(self.tmp, "server-%d.log" % self.n)

    def make_journal(self, jobs=6):
        """Runs a server that leaves a journal with a few jobs; returns its
        path and the job ids."""
        srv = start(self.data, ["--pool-cpu", "2"], log=self.log())
        ids = []
        for i in range(jobs):
            s, _, a = mt.exec_(srv, mt.probe_body("uploads/short.mp4"),
                               headers={"Idempotency-Key": "k%d-%s" % (i, uuid.uuid4().hex)})
            self.assertEqual(s, 200, a)
            ids.append(a["job_id"])
        self.assertEqual(capsrv.terminate(srv.proc), 0)
        srv._close_pipes()
        path = os.path.join(self.data, ".cap-state", "journal.db")
        self.assertTrue(os.path.exists(path))
        return path, ids

    def assert_refused(self, args, path, reset_hint=True):
        """The server refuses to start: a plain exit status (not a signal, not
        a timeout), an error-level JSON line naming path (and
        --journal-reset); returns that line."""
        log = self.log()
        rc, err, lines = run_server_to_exit(["--data-dir", self.data] + list(args), log)
        self.assertIsNotNone(rc, "the server did not exit (it started on a broken journal?)\n%s"
                             % "\n".join(map(json.dumps, lines[-10:])))
        self.assertGreater(rc, 0, "exit status %r (a negative one is a signal: a crash)\n%s" % (rc, err))
        self.assertLess(rc, 126, "exit status %r\n%s" % (rc, err))
        self.assertNotIn("AddressSanitizer", err)
        self.assertIn(path, err, "stderr must name the file")
        if reset_hint:
            self.assertIn("--journal-reset", err, "stderr must name the recovery")
        named = [l for l in lines if l.get("level") in ("error", "fatal") and path in json.dumps(l)]
        self.assertEqual(len(named), 1, "want one JSON error line naming %s; log: %r; stderr: %r"
                         % (path, lines, err))
        if reset_hint:
            self.assertIn("--journal-reset", json.dumps(named[0]),
                          "the error line must name the recovery")
        self.assertEqual([l for l in lines if l.get("event") == "server.start"], [],
                         "it must not listen")
        return named[0]

    def assert_reset_recovers(self, path, content):
        t0 = int(time.time())
        srv = start(self.data, ["--journal-reset"], log=self.log())
        try:
            s, _, a = mt.exec_(srv, mt.probe_body("uploads/short.mp4"))
            self.assertEqual(s, 200, a)
            aside = [n for n in os.listdir(os.path.dirname(path))
                     if n.startswith(os.path.basename(path) + ".broken-")]
            self.assertEqual(len(aside), 1, os.listdir(os.path.dirname(path)))
            stamp = aside[0].rsplit("-", 1)[1]
            self.assertTrue(stamp.isdigit() and t0 - 5 <= int(stamp) <= time.time() + 5, aside)
            with open(os.path.join(os.path.dirname(path), aside[0]), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(),
                                 hashlib.sha256(content).hexdigest(), "the broken file was changed")
            self.assertTrue(os.path.exists(path), "no new journal")
        finally:
            self.assertEqual(capsrv.terminate(srv.proc), 0)
            srv._close_pipes()
        # And the new journal is a good one.
        srv = start(self.data, [], log=self.log())
        try:
            s, _, j = mt.get_job(srv, a["job_id"])
            self.assertEqual((s, j.get("status")), (200, "succeeded"), j)
        finally:
            self.assertEqual(capsrv.terminate(srv.proc), 0)
            srv._close_pipes()

    def test_truncated(self):
        path, _ = self.make_journal(jobs=12)
        # A clean stop checkpoints: what is cut off is really gone.
        self.assertEqual(os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0, 0,
                         "a clean stop must leave the WAL checkpointed")
        size = os.path.getsize(path)
        self.assertGreaterEqual(size, 4 * 4096, "the journal should span several pages")
        with open(path, "r+b") as f:
            f.truncate(size // 2 + 100)
        with open(path, "rb") as f:
            content = f.read()
        self.assert_refused([], path)
        self.assert_reset_recovers(path, content)

    def test_garbage(self):
        path = os.path.join(self.data, ".cap-state", "journal.db")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        content = os.urandom(65536)
        with open(path, "wb") as f:
            f.write(content)
        self.assert_refused([], path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), content, "a refused start must not touch the file")
        self.assert_reset_recovers(path, content)

    def test_garbage_at_explicit_path(self):
        d = os.path.join(self.tmp, "state")
        os.makedirs(d)
        path = os.path.join(d, "j.sqlite")
        content = b"SQLite format 3\0" + os.urandom(8192)
        with open(path, "wb") as f:
            f.write(content)
        self.assert_refused(["--journal-path", path], path)

    def test_parent_is_a_file(self):
        # Root ignores mode bits (a chmod 0555 directory does not stop it);
        # a path through a regular file fails for everyone (ENOTDIR).
        f = os.path.join(self.tmp, "plainfile")
        with open(f, "w") as fh:
            fh.write("x")
        path = os.path.join(f, "journal.db")
        self.assert_refused(["--journal-path", path], path, reset_hint=False)

    def test_path_is_a_directory(self):
        path = os.path.join(self.tmp, "adir.db")
        os.makedirs(path)
        self.assert_refused(["--journal-path", path], path, reset_hint=False)

    @unittest.skipUnless(CAN_MOUNT, "needs root and mount -t tmpfs")
    def test_read_only_state_dir(self):
        # A read-only mount refuses root too (EROFS).
        fs = Tmpfs("4m")
        self.addCleanup(fs.close)
        fs.remount("ro")
        path = os.path.join(fs.dir, "journal.db")
        self.assert_refused(["--journal-path", path], path, reset_hint=False)
        # An existing journal in a directory that became read-only: SQLite
        # cannot create its -wal and -shm beside it.
        fs.remount("rw")
        srv = start(self.data, ["--journal-path", path], log=self.log())
        s, _, a = mt.exec_(srv, mt.probe_body("uploads/short.mp4"))
        self.assertEqual(s, 200, a)
        self.assertEqual(capsrv.terminate(srv.proc), 0)
        srv._close_pipes()
        for suf in ("-wal", "-shm"):
            if os.path.exists(path + suf):
                os.unlink(path + suf)
        fs.remount("ro")
        self.assert_refused(["--journal-path", path], path, reset_hint=False)

    @unittest.skipUnless(CAN_MOUNT, "needs root and mount -t tmpfs")
    def test_disk_full_at_start(self):
        fs = Tmpfs("2m")
        self.addCleanup(fs.close)
        fs.fill()
        path = os.path.join(fs.dir, "journal.db")
        log = self.log()
        rc, err, lines = run_server_to_exit(["--data-dir", self.data, "--journal-path", path], log,
                                            timeout=8)
        if rc is None:
            # It started (the open may need no new page): then it must
            # serve and say that the journal fails.
            self.fail("the server started on a full disk without its journal?\n%s"
                      % "\n".join(map(json.dumps, lines[-8:])))
        self.assertGreater(rc, 0, err)
        self.assertLess(rc, 126, err)
        named = [l for l in lines if l.get("level") in ("error", "fatal") and path in json.dumps(l)]
        self.assertEqual(len(named), 1, (lines, err))

    @unittest.skipUnless(CAN_MOUNT, "needs root and mount -t tmpfs")
    def test_disk_full_while_serving(self):
        fs = Tmpfs("2m")
        self.addCleanup(fs.close)
        path = os.path.join(fs.dir, "journal.db")
        srv = start(self.data, ["--journal-path", path, "--pool-cpu", "2"], log=self.log())
        try:
            ids = []
            for _ in range(2):
                s, _, a = mt.exec_(srv, mt.probe_body("uploads/short.mp4"))
                self.assertEqual(s, 200, a)
                ids.append(a["job_id"])
            text = metrics_text(srv)
            ok0 = metric_sum(text, "cap_journal_writes_total", result="ok")
            self.assertGreater(ok0, 0, "no journal write counted")
            filler = fs.fill()
            # Jobs with big results (probe JSON) until the journal fails.
            for i in range(8):
                s, _, a = mt.exec_(srv, mt.probe_body("uploads/short.mp4"),
                                   headers={"Idempotency-Key": "full-%d-%s" % (i, uuid.uuid4().hex)})
                self.assertEqual((s, a.get("status")), (200, "succeeded"), a)
                ids.append(a["job_id"])
            self.assertIsNone(srv.proc.poll(), "the server died on a full disk")
            mt.health(srv)
            errs = [l for l in log_lines(srv) if l.get("event") == "journal.error"]
            self.assertTrue(errs, "no journal.error line while the disk is full")
            self.assertLessEqual(len(errs), 3, "journal.error must not flood the log: %d lines"
                                 % len(errs))
            self.assertGreater(metric_sum(metrics_text(srv), "cap_journal_writes_total",
                                          result="error"), 0)
            for i in ids:
                s, _, j = mt.get_job(srv, i)
                self.assertEqual((s, j.get("status")), (200, "succeeded"), j)
            # Space again: the journal writes again.
            os.unlink(filler)
            os.unlink(filler + "2")
            ok1 = metric_sum(metrics_text(srv), "cap_journal_writes_total", result="ok")
            s, _, a = mt.exec_(srv, mt.probe_body("uploads/short.mp4"))
            self.assertEqual(s, 200, a)
            late = a["job_id"]
            time.sleep(0.3)
            self.assertGreater(metric_sum(metrics_text(srv), "cap_journal_writes_total", result="ok"),
                               ok1, "the journal did not write again once there was space")
        finally:
            rc = capsrv.terminate(srv.proc)
            srv._close_pipes()
        self.assertEqual(rc, 0, "exit status after a disk-full episode")
        srv = start(self.data, ["--journal-path", path], log=self.log())
        try:
            s, _, j = mt.get_job(srv, late)
            self.assertEqual((s, j.get("status")), (200, "succeeded"), j)
        finally:
            self.assertEqual(capsrv.terminate(srv.proc), 0)
            srv._close_pipes()


# ---------------------------------------------------------------------------
# 3. TTL

class Ttl(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="capsrv-journal-ttl-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")
        os.makedirs(os.path.join(self.data, "uploads"))
        shutil.copyfile(mt.clip(0.2, "64x64", audio=False), os.path.join(self.data, "uploads/tiny.mp4"))
        self.n = 0

    def start(self, args):
        self.n += 1
        return start(self.data, args, log=os.path.join(self.tmp, "server-%d.log" % self.n))

    def test_rows_gone_after_ttl(self):
        args = ["--job-ttl-s", "2"]
        srv = self.start(args)
        s, _, old = mt.exec_(srv, mt.probe_body("uploads/tiny.mp4"), headers={"Idempotency-Key": "old"})
        self.assertEqual(s, 200, old)
        time.sleep(2.5)
        s, _, new = mt.exec_(srv, mt.probe_body("uploads/tiny.mp4"))
        self.assertEqual(s, 200, new)
        self.assertEqual(capsrv.terminate(srv.proc), 0)
        srv._close_pipes()
        srv = self.start(args)
        try:
            s, _, e = mt.get_job(srv, old["job_id"])
            self.assertEqual((s, (e or {}).get("code")), (404, "job_not_found"), e)
            s, _, j = mt.get_job(srv, new["job_id"])
            self.assertEqual((s, j.get("status")), (200, "succeeded"),
                             "a job younger than its TTL must survive the restart")
            # The key is free again: a new job runs.
            s, _, again = mt.exec_(srv, mt.probe_body("uploads/tiny.mp4"), headers={"Idempotency-Key": "old"})
            self.assertEqual(s, 200, again)
            self.assertNotEqual(again["job_id"], old["job_id"])
            time.sleep(2.5)
        finally:
            self.assertEqual(capsrv.terminate(srv.proc), 0)
            srv._close_pipes()
        srv = self.start(args)
        try:
            for i in (new["job_id"], again["job_id"]):
                s, _, e = mt.get_job(srv, i)
                self.assertEqual((s, (e or {}).get("code")), (404, "job_not_found"), e)
            rec = captools.wait_event(srv, "journal.recovered", timeout=5)
            self.assertEqual(rec.get("interrupted"), 0, rec)
        finally:
            self.assertEqual(capsrv.terminate(srv.proc), 0)
            srv._close_pipes()
        rows, _, _, _ = db_stats(os.path.join(self.data, ".cap-state", "journal.db"))
        self.assertLessEqual(sum(rows.values()), 0, "rows left after every job expired: %r" % rows)

    def test_size_bounded_under_steady_stream(self):
        # TTL 1 s, about 3 jobs a second for 70 s (the in-memory sweep runs
        # every 30 s: two sweeps).  The row count must stay near what the
        # last TTL + sweep interval holds, and the database's pages must
        # stop growing: the second half may not need more pages than the
        # first (freed pages are reused).
        path = os.path.join(self.data, ".cap-state", "journal.db")
        srv = self.start(["--job-ttl-s", "1", "--pool-cpu", "2"])
        samples = []
        stop = threading.Event()
        errors = []
        count = [0]

        def client():
            while not stop.is_set():
                t = time.time()
                s, _, a = mt.exec_(srv, mt.probe_body("uploads/tiny.mp4"))
                if s != 200:
                    errors.append((s, a))
                count[0] += 1
                stop.wait(max(0, 0.66 - (time.time() - t)))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
        t0 = time.time()
        for t in threads:
            t.start()
        try:
            while time.time() - t0 < 70:
                time.sleep(5)
                rows, pc, fl, ps = db_stats(path)
                samples.append((time.time() - t0, count[0], sum(rows.values()), pc, fl,
                                sum(file_sizes(path).values())))
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(errors, [])
        report = "\n".join("t=%4.0fs jobs=%4d rows=%4d pages=%4d free=%4d files=%8d" % s
                           for s in samples)
        jobs = count[0]
        self.assertGreater(jobs, 120, "too few jobs for the measurement\n" + report)
        first = [s for s in samples if s[0] <= 35]
        second = [s for s in samples if s[0] > 40]
        max_rows = max(s[2] for s in samples)
        # Rows: at most the jobs of the last sweep interval + TTL (~31 s)
        # plus slack; all jobs would be `jobs`.
        rate = jobs / samples[-1][0]
        self.assertLess(max_rows, rate * 40 + 20, "rows not purged:\n" + report)
        self.assertLess(samples[-1][2], jobs * 0.6, "rows not purged:\n" + report)
        p1 = max(s[3] for s in first)
        p2 = max(s[3] for s in second)
        self.assertLessEqual(p2, p1 * 1.25 + 8, "the database keeps growing:\n" + report)
        # The files on disk too: the WAL is checkpointed while the server
        # runs (the journal checkpoints off the loop past 1 MiB of WAL),
        # so database + WAL + shm stop growing as well.
        f1 = max(s[5] for s in first)
        f2 = max(s[5] for s in second)
        self.assertLessEqual(f2, f1 * 1.25 + 2 * 1024 * 1024,
                             "the journal's files keep growing (WAL never checkpointed?):\n" + report)
        self.assertEqual(capsrv.terminate(srv.proc), 0)
        srv._close_pipes()
        at_rest = file_sizes(path)
        _, _, _, ps = db_stats(path)
        sys.stderr.write("\n[ttl] %d jobs in %.0f s; at rest %r bytes\n%s\n"
                         % (jobs, samples[-1][0], at_rest, report))
        # At rest (checkpointed): the database holds no more pages than
        # while running.
        self.assertLessEqual(at_rest.get("", 0), (p2 + 16) * ps, report)


# ---------------------------------------------------------------------------
# 4. Crash matrix on the S3 bed

BED = None
TMP = None


def setUpModule():
    global TMP
    TMP = tempfile.mkdtemp(prefix="capsrv-journal-")


def tearDownModule():
    if BED is not None:
        BED.stop()
    if TMP and not os.environ.get("KEEP_TEST_DATA"):
        shutil.rmtree(TMP, True)
    elif TMP:
        sys.stderr.write("kept %s\n" % TMP)


def _xml_all(root, tag):
    return [e for e in root.iter() if e.tag == tag or e.tag.endswith("}" + tag)]


def _xml_text(e, tag):
    for c in e:
        if c.tag == tag or c.tag.endswith("}" + tag):
            return c.text
    return None


def bucket_objects(prefix=None):
    """{key: size} of the bucket (ListObjectsV2, signed here: much faster
    than awscli)."""
    out = {}
    token = None
    while True:
        q = [("list-type", "2")]
        if prefix:
            q.append(("prefix", prefix))
        if token:
            q.append(("continuation-token", token))
        r = BED.request("GET", BUCKET, query=q)
        if r.status != 200:
            raise AssertionError("ListObjectsV2: %r" % r)
        root = ET.fromstring(r.body)
        for c in _xml_all(root, "Contents"):
            out[_xml_text(c, "Key")] = int(_xml_text(c, "Size"))
        if (_xml_text(root, "IsTruncated") or "").lower() == "true":
            token = _xml_text(root, "NextContinuationToken")
        else:
            return out


def open_uploads():
    """[(key, upload id)] of the bucket's open multipart uploads."""
    r = BED.request("GET", BUCKET, query=[("uploads", "")])
    if r.status != 200:
        raise AssertionError("ListMultipartUploads: %r" % r)
    root = ET.fromstring(r.body)
    return [(_xml_text(u, "Key"), _xml_text(u, "UploadId")) for u in _xml_all(root, "Upload")]


def part_count(key, upload_id):
    r = BED.request("GET", BUCKET, key, query=[("uploadId", upload_id)])
    if r.status != 200:
        return 0
    return len(_xml_all(ET.fromstring(r.body), "Part"))


class CJob:
    """One job of the matrix: its request, its key and every run of it."""

    def __init__(self, name, kind, body):
        self.name = name
        self.kind = kind
        self.body = body
        self.key = "jk-%s-%s" % (name, uuid.uuid4().hex[:8])
        self.runs = []       # job ids, oldest first
        self.final = {}      # job id -> its terminal GET /jobs JSON
        self.answer = None   # the /exec answer of the succeeded run

    @property
    def latest(self):
        return self.runs[-1] if self.runs else None

    def latest_state(self):
        j = self.final.get(self.latest)
        if j is None:
            return None
        if j["status"] == "failed" and (j.get("error") or {}).get("code") == "interrupted":
            return "interrupted"
        return j["status"]

    def output(self):
        return self.body.get("output_prefix") or self.body.get("output_key")


MATRIX_PRESETS = {
    "small": mt.small_preset(),
    "slow": mt.small_preset(realtime=True),
    # Raw frames at the clip's pace, streamed: parts go up while ffmpeg runs.
    "raw-paced": st.raw_preset(vf="realtime"),
    # Raw frames as fast as they come, to a temp file: uploaded in parts
    # after ffmpeg ended (the job's "uploading" state).
    "raw-file": dict(st.raw_preset(), streamable=False),
    # The whole input downloaded first, then one second of it rendered.
    "dl-short": {"description": "download then 1 s", "class": "cpu", "format": "mp4", "ext": "mp4",
                 "streamable": False, "encoders": ["libx264"], "timeout_s": 600,
                 "input_mode": "download",
                 "args": ["-map", "0:v:0", "-t", "1", "-vf", "scale=-2:120", "-c:v", "libx264",
                          "-preset", "ultrafast", "-pix_fmt", "yuv420p"]},
}


@unittest.skipUnless(st.have_bed(), "S3 bed not installed: scripts/s3-testbed.sh install")
class CrashMatrix(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        global BED
        BED = S3Bed().start()
        BED.make_bucket(BUCKET)
        cls.tmp = tempfile.mkdtemp(prefix="matrix-", dir=TMP)
        cls.data = os.path.join(cls.tmp, "data")
        os.makedirs(cls.data)
        cls.presets = mt.presets_file(cls.tmp, MATRIX_PRESETS, include_builtin=True)
        big = st.mjpeg_mkv(os.path.join(cls.tmp, "big.mkv"), seconds_loops=9)
        inputs = {"in/short.mp4": mt.clip(1.0, "320x240"),
                  "in/mid.mp4": mt.clip(4.0, "320x240"),
                  "in/raw.mp4": mt.clip(6.0, "640x360", audio=False),
                  "in/ladder.mp4": mt.clip(60.0, "320x180"),
                  "in/big.mkv": big}
        for k, p in inputs.items():
            BED.put_object(BUCKET, k, path=p)
        cls.inputs = set(inputs)

    def setUp(self):
        self.jobs = []
        self.inc = 0
        self.srv = None
        self.kills = 0
        self.phases = {}
        self.orphans = []
        self.rng = random.Random(15)
        self.skip_recovered_count = False
        # What a restart left behind, as (restart, phase, problem): the
        # matrix goes on (so that one finding does not hide the others)
        # and fails at its end.  A stray object is reported once.
        self.findings = []
        self.known_stray = set()
        self.last_phase = "start"

    def tearDown(self):
        if self.srv is not None and self.srv.proc.poll() is None:
            capsrv.terminate(self.srv.proc)
            self.srv._close_pipes()

    # --- server life ---------------------------------------------------------

    def start_server(self, wait_recovery=True):
        self.inc += 1
        args = ["--storage", "s3://" + BUCKET, "--presets", self.presets, "--pool-cpu", "2",
                "--part-size", str(PART), "--queue-max", "64", "--storage-backoff-ms", "100"]
        self.srv = start(self.data, args, env=BED.env(),
                         log=os.path.join(self.tmp, "server-%02d.log" % self.inc))
        if wait_recovery:
            captools.wait_event(self.srv, "journal.recovered", timeout=30)
        return self.srv

    def kill(self, phase):
        """SIGKILL now; the server's children must die with it."""
        srv = self.srv
        kids = kill9(srv)
        self.kills += 1
        self.last_phase = phase
        self.phases[phase] = self.phases.get(phase, 0) + 1
        left = wait_gone(kids, 5)
        # Children of the dead server found by what they read: the data
        # dir (downloads, temp outputs).
        left.update({p: a for p, a in procs_mentioning(self.data).items() if p not in left})
        if left:
            self.orphans.append((phase, left))
            reap_orphans(left)
        self.srv = None

    # --- jobs -----------------------------------------------------------------

    def new_job(self, kind):
        n = len(self.jobs)
        name = "%02d-%s" % (n, kind)
        if kind == "probe":
            body = mt.probe_body("in/short.mp4")
        elif kind == "small":
            body = mt.render_body("in/short.mp4", "out/%s.mp4" % name, "small")
        elif kind == "smallmid":
            body = mt.render_body("in/mid.mp4", "out/%s.mp4" % name, "small")
        elif kind == "slow":
            body = mt.render_body("in/mid.mp4", "out/%s.mp4" % name, "slow")
        elif kind == "multipart":
            body = mt.render_body("in/raw.mp4", "out/%s.nut" % name, "raw-paced")
        elif kind == "rawfile":
            body = mt.render_body("in/raw.mp4", "out/%s.nut" % name, "raw-file")
        elif kind == "dl":
            body = mt.render_body("in/big.mkv", "out/%s.mp4" % name, "dl-short")
        elif kind == "ladder":
            # Every other ladder is a DASH package (one more object, the
            # MPD, to leave behind or not).
            ladders = sum(1 for j in self.jobs if j.kind == "ladder")
            body = {"input_key": "in/ladder.mp4", "output_prefix": "out/%s/" % name,
                    "preset": "dash-ladder" if ladders % 2 else "hls-ladder"}
        else:
            raise ValueError(kind)
        j = CJob(name, kind, body)
        self.jobs.append(j)
        return j

    def submit(self, job, sync=False):
        body = dict(job.body, wait=60) if sync else dict(job.body, **{"async": True})
        s, _, a = mt.exec_(self.srv, body, headers={"Idempotency-Key": job.key}, timeout=90)
        if sync:
            self.assertEqual(s, 200, (job.name, a))
            self.assertEqual(a.get("status"), "succeeded", a)
        else:
            self.assertIn(s, (200, 202), (job.name, a))
        jid = a["job_id"]
        if jid not in job.runs:
            job.runs.append(jid)
        if sync:
            job.answer = a
            _, _, job.final[jid] = mt.get_job(self.srv, jid)
        return jid

    def add(self, kind, sync=False):
        j = self.new_job(kind)
        self.submit(j, sync)
        return j

    def status(self, jid):
        s, _, j = mt.get_job(self.srv, jid)
        self.assertEqual(s, 200, j)
        return j

    def retry_some(self, n):
        """Resubmits up to n interrupted jobs under their keys: a new run."""
        out = []
        for job in self.jobs:
            if len(out) >= n:
                break
            if job.latest_state() == "interrupted":
                old = job.latest
                self.submit(job)
                self.assertNotEqual(job.latest, old,
                                    "a retry of an interrupted job must be a new run, not the old job")
                out.append(job)
        return out

    # --- triggers: each waits for a phase and says whether it was reached -----

    def until(self, pred, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.01)
        return False

    def started_line(self, jid, phase):
        for l in log_lines(self.srv):
            if l.get("event") == "job.started" and l.get("job_id") == jid and l.get("phase") == phase:
                return l
        return None

    def child_running(self, jid, phase):
        l = self.started_line(jid, phase)
        return bool(l and isinstance(l.get("pid"), int) and proc_alive(l["pid"]))

    def upload_parts(self, key):
        for k, u in open_uploads():
            if k == key:
                return max(1, part_count(k, u))
        return 0

    def objects_stored(self, jid):
        pkg = self.status(jid).get("package") or {}
        return pkg.get("objects_stored", 0)

    # --- checks after a restart ------------------------------------------------

    def verify(self, inflight_names=(), must_interrupt=()):
        """Every run answers a terminal state; the ones in flight at the kill
        are interrupted (or ended just before it); no open upload, no stray
        or missing object, no temp file; idempotent retries of succeeded
        jobs start nothing."""
        srv = self.srv
        newly = 0
        for job in self.jobs:
            for jid in job.runs:
                s, _, j = mt.get_job(srv, jid)
                self.assertEqual(s, 200, "job %s (%s) after restart %d: %r" % (jid, job.name, self.inc, j))
                self.assertIn(j.get("status"), TERMINAL, "%s: %r" % (job.name, j))
                if jid in job.final:
                    self.assertEqual(j, job.final[jid], "GET /jobs/%s (%s) changed across restart %d"
                                     % (jid, job.name, self.inc))
                    continue
                err = j.get("error") or {}
                if j["status"] == "failed" and err.get("code") == "interrupted":
                    self.assertIs(err.get("retryable"), True, j)
                    self.assertIsNone(j.get("result"), j)
                    self.assertIsNotNone(j.get("finished_at"), j)
                    newly += 1
                elif j["status"] == "succeeded":
                    self.assertNotIn(job.name, must_interrupt,
                                     "%s was killed mid-run but ended succeeded: %r" % (job.name, j))
                else:
                    self.fail("%s ended %s (not interrupted, not succeeded): %r"
                              % (job.name, j["status"], j))
                job.final[jid] = j
        rec = events(srv, "journal.recovered")
        self.assertEqual(len(rec), 1, rec)
        if not self.skip_recovered_count:
            self.assertEqual(rec[0].get("interrupted"), newly, "journal.recovered: %r; %d jobs found "
                             "interrupted" % (rec[0], newly))
        self.skip_recovered_count = False

        # The bucket: no open upload; exactly the succeeded outputs.
        want_keys, want_prefixes = set(), []
        for job in self.jobs:
            if job.kind == "probe":
                continue
            if any(job.final[jid]["status"] == "succeeded" for jid in job.runs):
                if job.kind == "ladder":
                    want_prefixes.append(job.output())
                else:
                    want_keys.add(job.output())

        def problems():
            p = []
            ups = open_uploads()
            if ups:
                p.append("open multipart uploads: %r" % ups)
            objs = {k for k in bucket_objects() if k not in self.inputs}
            stray = sorted(k for k in objs if k not in want_keys and k not in self.known_stray
                           and not any(k.startswith(pre) for pre in want_prefixes))
            if stray:
                p.append("stray objects: %r" % stray)
            missing = sorted(want_keys - objs)
            missing += [pre for pre in want_prefixes if not any(k.startswith(pre) for k in objs)]
            if missing:
                p.append("outputs of succeeded jobs missing: %r" % missing)
            t = tmp_entries(self.data)
            if t:
                p.append("left in .cap-tmp: %r" % t)
            return p

        deadline = time.time() + 30
        while True:
            p = problems()
            if not p:
                break
            if time.time() >= deadline:
                for x in p:
                    self.findings.append((self.inc, self.last_phase, x))
                    sys.stderr.write("\n[matrix] FINDING after restart %d (kill in %s): %s\n"
                                     % (self.inc, self.last_phase, x))
                self.known_stray.update(k for k in bucket_objects() if k not in self.inputs)
                break
            time.sleep(0.2)
        self.idempotent_retries()

    def idempotent_retries(self):
        """Every succeeded job retried under its key with the same body: the
        stored answer, and no child started."""
        srv = self.srv
        done = [j for j in self.jobs if j.latest_state() == "succeeded"]
        if not done:
            return
        before = metric_sum(metrics_text(srv), "cap_child_exits_total")
        started = len(mt.job_started_lines(srv))
        sampler = mt.ChildSampler(srv.proc.pid, 0.01)
        sampler.start()
        try:
            for job in done:
                s, _, a = mt.exec_(srv, dict(job.body, wait=30), headers={"Idempotency-Key": job.key})
                self.assertEqual(s, 200, (job.name, a))
                self.assertEqual(a.get("job_id"), job.latest, (job.name, a))
                self.assertEqual(a, job.final[job.latest]["result"], job.name)
        finally:
            sampler.stop()
        self.assertEqual(sampler.seen, {}, "idempotent retries started children")
        self.assertEqual(len(mt.job_started_lines(srv)), started)
        self.assertEqual(metric_sum(metrics_text(srv), "cap_child_exits_total"), before)

    def kill_restart_verify(self, phase, inflight=(), must=()):
        self.kill(phase)
        self.start_server()
        self.verify(inflight, must)

    # --- the matrix ----------------------------------------------------------------

    def test_crash_matrix(self):
        t_start = time.time()
        self.start_server()
        self.verify()
        hit = {}

        def phase(name, reached):
            hit[name] = hit.get(name, 0) + (1 if reached else 0)
            return reached

        # 1. Queued: two slow renders hold both slots, three jobs wait.
        a, b = self.add("slow"), self.add("slow")
        self.until(lambda: self.child_running(a.latest, "render") and
                   self.child_running(b.latest, "render"), 20)
        q = [self.add("probe"), self.add("small"), self.add("multipart")]
        reached = all(self.status(j.latest)["status"] == "queued" for j in q)
        phase("queued", reached)
        self.kill_restart_verify("queued", must=[j.name for j in q + [a, b]])

        # 2. A probe job's ffprobe running (S3 input read by range).
        self.add("small", sync=True)
        p = self.add("probe")
        phase("probe", self.until(lambda: self.child_running(p.latest, "probe"), 10))
        self.kill_restart_verify("probe")

        # 3. A render's duration probe.
        self.retry_some(2)
        r = self.add("slow")
        phase("probe_duration", self.until(lambda: self.child_running(r.latest, "probe_duration"), 10))
        self.kill_restart_verify("probe_duration")

        # 4. Rendering.
        self.add("probe", sync=True)
        r = self.add("slow")
        phase("render", self.until(lambda: self.child_running(r.latest, "render"), 15))
        time.sleep(0.5)
        self.kill_restart_verify("render", must=[r.name])

        # 5. Downloading the input (input_mode download, DATA/.cap-tmp).
        self.retry_some(2)
        d = self.add("dl")
        reached = self.until(lambda: any(os.path.getsize(os.path.join(self.data, ".cap-tmp", e)) > 0
                                         for e in tmp_entries(self.data)
                                         if os.path.isfile(os.path.join(self.data, ".cap-tmp", e)))
                             and not self.started_line(d.latest, "render"), 20)
        phase("download", reached)
        self.kill_restart_verify("download", must=[d.name] if reached else ())

        # 6. A streamed multipart upload with its first part going up.
        m = self.add("multipart")
        phase("multipart_first", self.until(lambda: self.upload_parts(m.output()) >= 1, 20))
        self.kill_restart_verify("multipart_first", must=[m.name])

        # 7. ... with several parts stored.
        self.retry_some(2)
        m = self.add("multipart")
        phase("multipart_mid", self.until(lambda: self.upload_parts(m.output()) >= 3, 30))
        self.kill_restart_verify("multipart_mid", must=[m.name])

        # 8. A ladder's ffmpeg started, nothing stored yet.
        l1 = self.add("ladder")
        phase("ladder_start", self.until(lambda: self.child_running(l1.latest, "render"), 20))
        self.kill_restart_verify("ladder_start", must=[l1.name])

        # 9. A ladder with segments stored.
        self.add("small", sync=True)
        l2 = self.add("ladder")
        phase("ladder_mid", self.until(lambda: self.objects_stored(l2.latest) >= 3, 60))
        self.kill_restart_verify("ladder_mid", must=[l2.name])

        # 10. The output uploaded after ffmpeg ended (state uploading).
        self.retry_some(2)
        u = self.add("rawfile")
        phase("uploading", self.until(lambda: self.status(u.latest)["status"] == "uploading"
                                      and self.upload_parts(u.output()) >= 1, 30))
        self.kill_restart_verify("uploading", must=[u.name])

        # 10b. The output stored (its single PUT answered) and the job not
        # yet marked succeeded: the kill must not leave the object of a job
        # that then reads as interrupted.
        s = self.add("smallmid")
        key = s.output()

        def stored_not_done():
            if key in bucket_objects(key):
                return True
            return False
        reached = self.until(stored_not_done, 30)
        reached = reached and self.status(s.latest)["status"] not in TERMINAL
        phase("stored_not_finished", reached)
        self.kill_restart_verify("stored_not_finished")

        # 11. Everything at once.
        self.add("probe", sync=True)
        mix = [self.add("multipart"), self.add("ladder"), self.add("probe"), self.add("slow")]
        reached = self.until(lambda: self.upload_parts(mix[0].output()) >= 1
                             and self.objects_stored(mix[1].latest) >= 1, 40)
        phase("mixed", reached)
        self.kill_restart_verify("mixed")

        # 12-13. Killed again during the recovery of the previous kill
        # (uploads to abort, ladder objects to delete).
        m = self.add("multipart")
        l3 = self.add("ladder")
        reached = self.until(lambda: self.upload_parts(m.output()) >= 1
                             and self.objects_stored(l3.latest) >= 2, 40)
        phase("multipart_and_ladder", reached)
        must = [j.name for j in (m, l3) if self.status(j.latest)["status"] not in TERMINAL]
        self.kill("before_recovery_kill")
        self.start_server(wait_recovery=False)
        self.until(lambda: any(l.get("event") in ("journal.opened", "journal.recovered")
                               for l in log_lines(self.srv)), 10)
        self.kill("during_recovery")
        self.skip_recovered_count = True
        self.start_server()
        self.verify(must_interrupt=must)

        # 14. Idle: nothing running.
        self.add("small", sync=True)
        self.kill_restart_verify("idle")

        # 15-24. Random mixes, killed at a random moment.
        kinds = ["probe", "small", "smallmid", "slow", "multipart", "rawfile", "dl", "ladder"]
        for i in range(10):
            self.retry_some(1)
            for k in self.rng.sample(kinds, 2 if i % 2 else 3):
                self.add(k)
            time.sleep(self.rng.uniform(0.3, 3.0))
            self.kill_restart_verify("random")
            if len(self.jobs) >= 50 and self.kills >= 22 and i >= 5:
                break
        while len(self.jobs) < 50:
            self.add(self.rng.choice(["probe", "small"]), sync=True)

        # The end: every interrupted job retried until it succeeds.
        for attempt in range(3):
            todo = [j for j in self.jobs if j.latest_state() == "interrupted"]
            if not todo:
                break
            for job in todo:
                self.submit(job)
            for job in todo:
                j = mt.poll_job(self.srv, job.latest, timeout=240)
                job.final[job.latest] = j
                self.assertEqual(j["status"], "succeeded", "retry of %s: %r" % (job.name, j))
        self.assertEqual([j.name for j in self.jobs if j.latest_state() != "succeeded"], [],
                         "every job succeeds in the end")
        self.kill_restart_verify("final")
        for job in self.jobs:
            if job.kind == "ladder":
                res = job.final[job.latest]["result"]
                objs = bucket_objects(job.output())
                self.assertEqual(res["objects"], len(objs), (job.name, res, sorted(objs)))
                self.assertIn(job.output() + "master.m3u8", objs)
                if job.body["preset"] == "dash-ladder":
                    self.assertIn(job.output() + "manifest.mpd", objs)
                    self.assertEqual(res["mpd_key"], job.output() + "manifest.mpd")

        elapsed = time.time() - t_start
        sys.stderr.write("\n[matrix] %d jobs, %d kills in %.0f s; phases reached %r; kills by phase %r\n"
                         % (len(self.jobs), self.kills, elapsed, hit, self.phases))
        self.assertEqual(self.orphans, [], "children outlived the killed server")
        self.assertEqual(self.findings, [], "left behind after restarts (restart, kill phase, what)")
        self.assertGreaterEqual(len(self.jobs), 50)
        self.assertGreaterEqual(self.kills, 20)
        for ph in ("queued", "probe", "render", "multipart_first", "multipart_mid", "ladder_start",
                   "ladder_mid"):
            self.assertGreater(hit.get(ph, 0), 0, "phase %s never reached before its kill: %r"
                               % (ph, hit))
        self.assertEqual(capsrv.terminate(self.srv.proc), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
