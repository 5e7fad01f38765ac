"""Helpers for the jobs integration tests (test_jobs_*.py): generate real
media clips with ffmpeg's lavfi sources, put them into a running server's
data directory, call POST /exec and the /jobs routes, inspect the server's
child processes, file descriptors and temp directory through /proc, and
read MP4 box order.

Builds on capsrv / captools (does not change them).
"""
import atexit
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time

import capsrv
import captools
from capsrv import TOKEN, Server, terminate

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe") or "ffprobe"

# Rate limits high enough that no test trips them by accident.
HIGH = ["--rate-limit", "100000", "--rate-limit-token", "100000"]

JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
TS_RE = captools.TS_RE
TERMINAL = ("succeeded", "failed", "canceled")
MEDIA_COMMS = ("ffmpeg", "ffprobe")

BUILTIN_PRESETS_PATH = os.path.join(capsrv.ROOT, "packaging", "presets.json")

_CLIP_DIR = tempfile.mkdtemp(prefix="capclips-")
atexit.register(shutil.rmtree, _CLIP_DIR, True)
_CLIPS = {}
_CLIP_LOCK = threading.Lock()


# ---------------------------------------------------------------------------
# Media

def clip(duration=1.0, size="320x240", rate=25, audio=True):
    """Path of a cached H.264 (+ AAC 48 kHz) MP4 clip made by ffmpeg lavfi
    (testsrc2 + sine).  48 kHz keeps the AAC re-encode padding of the
    fragmented-MP4 presets well under 0.1 s."""
    key = (float(duration), size, rate, audio)
    with _CLIP_LOCK:
        if key in _CLIPS:
            return _CLIPS[key]
        path = os.path.join(_CLIP_DIR, "clip-%s-%s-%d-%d.mp4" % (duration, size, rate, int(audio)))
        argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", "testsrc2=size=%s:rate=%d:duration=%s" % (size, rate, duration)]
        if audio:
            argv += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=%s" % duration]
        argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", str(rate)]
        if audio:
            argv += ["-c:a", "aac", "-b:a", "64k", "-shortest"]
        argv += ["-movflags", "+faststart", path]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        _CLIPS[key] = path
        return path


def data_dir(server):
    return os.path.join(server.tmp, "data")


def put(server, key, src=None, content=None):
    """Copies src (or writes content bytes) to the object key in the
    server's data dir; returns the file path."""
    path = os.path.join(data_dir(server), key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if content is not None:
        with open(path, "wb") as f:
            f.write(content)
    else:
        shutil.copyfile(src, path)
    return path


def ffprobe(path):
    """ffprobe's own JSON (-show_format -show_streams) for path."""
    out = subprocess.run([FFPROBE, "-v", "error", "-print_format", "json", "-show_format",
                          "-show_streams", path], check=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=60).stdout
    return json.loads(out.decode("utf-8"))


def streams_of(probe, kind):
    return [s for s in probe.get("streams", []) if s.get("codec_type") == kind]


def top_boxes(path):
    """Types of the top-level ISO BMFF boxes of path, in file order."""
    out = []
    with open(path, "rb") as f:
        while True:
            hdr = f.read(8)
            if len(hdr) < 8:
                break
            size, typ = struct.unpack(">I4s", hdr)
            hdrlen = 8
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
                hdrlen = 16
            out.append(typ.decode("latin-1"))
            if size == 0:
                break
            if size < hdrlen:
                out.append("<bad size %d>" % size)
                break
            f.seek(size - hdrlen, 1)
    return out


def presets_file(directory, extra, include_builtin=False, name="presets.json"):
    """Writes a presets JSON file: extra (dict name -> preset), optionally
    on top of the built-in set from packaging/presets.json."""
    d = {}
    if include_builtin:
        with open(BUILTIN_PRESETS_PATH, "r", encoding="utf-8") as f:
            d.update(json.load(f))
    d.update(extra)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, indent=1)
    return path


def small_preset(height=120, timeout_s=600, realtime=False, ext="mp4"):
    """A cheap H.264 preset (class cpu).  realtime=True adds ffmpeg's
    realtime filter, so a render takes about as long as the clip while
    using almost no CPU (a slow job that does not load the machine)."""
    vf = ("realtime," if realtime else "") + "scale=-2:%d" % height
    return {"description": "test preset", "class": "cpu", "format": "mp4", "ext": ext,
            "streamable": False, "encoders": ["libx264"], "timeout_s": timeout_s,
            "args": ["-map", "0:v:0", "-vf", vf, "-c:v", "libx264", "-preset", "ultrafast",
                     "-pix_fmt", "yuv420p"]}


# ---------------------------------------------------------------------------
# HTTP

def call(server, method, path, body=None, headers=None, token=TOKEN, timeout=120):
    """One request on a fresh connection; returns (status, headers, json or
    None).  body: dict (sent as JSON) or bytes."""
    st, h, b = captools.http(server, method, path, body, headers, token=token, timeout=timeout)
    try:
        j = json.loads(b.decode("utf-8")) if b else None
    except ValueError:
        j = None
    return st, h, j


def exec_(server, body, headers=None, token=TOKEN, timeout=120):
    return call(server, "POST", "/exec", body, headers, token=token, timeout=timeout)


def render_body(input_key, output_key, preset, **kw):
    d = {"capability": "ffmpeg-render", "input_key": input_key, "output_key": output_key,
         "preset": preset}
    d.update(kw)
    return d


def probe_body(input_key, **kw):
    d = {"capability": "ffprobe", "input_key": input_key}
    d.update(kw)
    return d


def get_job(server, job_id, wait=None, token=TOKEN, timeout=120):
    path = "/jobs/" + job_id + ("?wait=%d" % wait if wait is not None else "")
    return call(server, "GET", path, token=token, timeout=timeout)


def delete_job(server, job_id, token=TOKEN):
    return call(server, "DELETE", "/jobs/" + job_id, token=token, timeout=30)


def poll_job(server, job_id, timeout=90, token=TOKEN):
    """Long-polls GET /jobs/{id} until the job is terminal; returns the job
    object.  Raises AssertionError on a non-200 answer or time-out."""
    deadline = time.time() + timeout
    last = None
    while True:
        left = deadline - time.time()
        if left <= 0:
            raise AssertionError("job %s not finished within %ss; last %r" % (job_id, timeout, last))
        st, h, j = get_job(server, job_id, wait=max(1, min(30, int(left))), token=token)
        if st != 200:
            raise AssertionError("GET /jobs/%s -> %d %r" % (job_id, st, j))
        last = j
        if j.get("status") in TERMINAL:
            return j


def wait_status(server, job_id, statuses, timeout=30, token=TOKEN):
    """Polls (without long-poll) until the job's status is in statuses."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        st, h, j = get_job(server, job_id, token=token)
        if st == 200 and j.get("status") in statuses:
            return j
        last = (st, j)
        time.sleep(0.05)
    raise AssertionError("job %s never reached %r; last %r" % (job_id, statuses, last))


def health(server):
    st, h, j = call(server, "GET", "/health", token=None)
    if st != 200:
        raise AssertionError("/health -> %d %r" % (st, j))
    return j


def preset_names(entries):
    """Names from a /health presets list (entries may be names or objects
    with a name field)."""
    out = []
    for e in entries:
        if isinstance(e, str):
            out.append(e)
        elif isinstance(e, dict):
            out.append(e.get("name") or e.get("preset"))
        else:
            out.append(repr(e))
    return out


def job_started_lines(server, job_id=None):
    return [l for l in captools.complete_log_lines(server.log_text())
            if l.get("event") == "job.started" and (job_id is None or l.get("job_id") == job_id)]


def wait_started(server, job_id, timeout=30):
    return captools.wait_event(server, "job.started", timeout=timeout, job_id=job_id)


def ffmpeg_started_lines(server, job_id=None):
    """job.started lines of ffmpeg runs.  A render job may also log a
    job.started for a helper ffprobe run (field program/phase); lines
    without a program field count as ffmpeg runs."""
    return [l for l in job_started_lines(server, job_id) if l.get("program", "ffmpeg") == "ffmpeg"]


def wait_ffmpeg_pid(server, job_id, timeout=30):
    """pid of the job's ffmpeg child, from its job.started line (a line
    whose program is ffmpeg, or whose pid is a live ffmpeg child of the
    server).  Under the sandbox that pid first runs the helper, which
    confines itself and then executes ffmpeg: this returns once it has,
    so the caller reads ffmpeg's own command line and files."""
    deadline = time.time() + timeout
    while True:
        for l in job_started_lines(server, job_id):
            pid = l.get("pid")
            if not isinstance(pid, int):
                continue
            if l.get("program") == "ffmpeg":
                st = _stat(pid)
                if st is None or st[0] == "ffmpeg":
                    return pid
                continue
            st = _stat(pid)
            if "program" not in l and st and st[0] == "ffmpeg" and st[2] == server.proc.pid:
                return pid
        if time.time() >= deadline:
            raise AssertionError("no ffmpeg job.started for %s within %ss; log tail:\n%s"
                                 % (job_id, timeout, server.log_text()[-3000:]))
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# /proc

def _stat(pid):
    """(comm, state, ppid, pgrp) of pid, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            raw = f.read().decode("latin-1")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    l, r = raw.find("("), raw.rfind(")")
    comm = raw[l + 1:r]
    rest = raw[r + 2:].split()
    return comm, rest[0], int(rest[1]), int(rest[2])


def all_procs():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st:
                out[int(name)] = st
    return out


def children(pid):
    """{child pid: (comm, state, ppid, pgrp)} of every process whose parent is pid."""
    return {p: st for p, st in all_procs().items() if st[2] == pid}


def live_media_children(pid):
    return {p: st for p, st in children(pid).items()
            if st[0] in MEDIA_COMMS and st[1] != "Z"}


def zombies(pid):
    return {p: st for p, st in children(pid).items() if st[1] == "Z"}


def group_members(pgid):
    """Live (non-zombie) processes whose process group is pgid."""
    return {p: st for p, st in all_procs().items() if st[3] == pgid and st[1] != "Z"}


def wait_group_gone(pgid, timeout=10):
    deadline = time.time() + timeout
    while True:
        m = group_members(pgid)
        if not m or time.time() >= deadline:
            return m
        time.sleep(0.05)


def fd_list(pid):
    out = []
    d = "/proc/%d/fd" % pid
    for n in os.listdir(d):
        try:
            out.append(os.readlink(os.path.join(d, n)))
        except OSError:
            pass
    return sorted(out)


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def fd_targets(pid):
    """{fd number: readlink target} of pid."""
    out = {}
    d = "/proc/%d/fd" % pid
    for n in os.listdir(d):
        try:
            out[int(n)] = os.readlink(os.path.join(d, n))
        except OSError:
            pass
    return out


def shared_fds(server_pid, child_pid, allow=()):
    """Open files of the child that the server has open too (inherited
    descriptors: listening socket, client connections, log file, epoll...),
    except /dev/null and the paths in allow."""
    server = set(fd_targets(server_pid).values())
    child = fd_targets(child_pid)
    return {n: t for n, t in child.items()
            if t in server and t != "/dev/null" and t not in allow}


class ChildSampler(threading.Thread):
    """Samples the server's children every interval seconds.  Records the
    highest number of live ffmpeg/ffprobe children seen at once, every
    media child pid seen (with its cmdline), and any that was not its own
    process-group leader."""

    def __init__(self, server_pid, interval=0.02):
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self.interval = interval
        self.max_live = 0
        self.max_snapshot = {}
        self.seen = {}
        self.not_leader = {}
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            kids = live_media_children(self.server_pid)
            self.samples += 1
            if len(kids) > self.max_live:
                self.max_live = len(kids)
                self.max_snapshot = dict(kids)
            for p, st in kids.items():
                if p not in self.seen:
                    self.seen[p] = (st[0], cmdline(p))
                if st[3] != p:
                    self.not_leader[p] = st
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(5)
        return self

    def seen_of(self, comm):
        """pids seen whose command name is comm."""
        return sorted(p for p, (c, _) in self.seen.items() if c == comm)


# ---------------------------------------------------------------------------
# Server set-up and the clean-state check run after each test file

def start(args=(), token=TOKEN, env=None, settle=15):
    """Starts a server (high rate limits, data dir with uploads/) and
    returns it with .baseline_fds set once start-up work (e.g. hardware
    test encodes) is over and /health answers."""
    srv = Server(HIGH + list(args), token=token, env=env)
    os.makedirs(os.path.join(data_dir(srv), "uploads"), exist_ok=True)
    deadline = time.time() + settle
    while children(srv.proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    health(srv)
    time.sleep(0.2)
    srv.baseline_fds = fd_list(srv.proc.pid)
    return srv


def tmp_entries(server):
    return tmp_entries_in(data_dir(server))


def tmp_entries_in(data):
    """What DATA/.cap-tmp holds, relative paths, sorted."""
    root = os.path.join(data, ".cap-tmp")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def clean_state_problems(server):
    pid = server.proc.pid
    problems = []
    z = zombies(pid)
    if z:
        problems.append("zombie children: %r" % z)
    alive = {p: st for p, st in children(pid).items() if st[1] != "Z"}
    if alive:
        problems.append("children still running: %r" % alive)
    fds = fd_list(pid)
    if len(fds) != len(server.baseline_fds):
        extra = list(fds)
        for f in server.baseline_fds:
            if f in extra:
                extra.remove(f)
        missing = list(server.baseline_fds)
        for f in fds:
            if f in missing:
                missing.remove(f)
        problems.append("fd count %d != baseline %d (extra %r, missing %r)"
                        % (len(fds), len(server.baseline_fds), extra, missing))
    t = tmp_entries(server)
    if t:
        problems.append("left in .cap-tmp: %r" % t)
    return problems


def assert_clean(tc, server, timeout=10):
    """No zombie or running children, fd count back to the start-up
    baseline, nothing left in <data>/.cap-tmp (retried for timeout s)."""
    deadline = time.time() + timeout
    while True:
        problems = clean_state_problems(server)
        if not problems:
            return
        if time.time() >= deadline:
            tc.fail("server not clean after the tests: " + "; ".join(problems))
        time.sleep(0.1)


def stop(server):
    """SIGTERM; returns exit code (kills after 30 s).  The data dir (media
    files) is removed unless KEEP_TEST_DATA is set; the log stays."""
    terminate(server.proc, 30)
    server._close_pipes()
    if not os.environ.get("KEEP_TEST_DATA"):
        shutil.rmtree(data_dir(server), True)
    return server.proc.returncode


def write_token_file(directory, entries, name="tokens"):
    """entries: list of (name, token)."""
    path = os.path.join(directory, name)
    return captools.write_file(path, "".join("%s:%s\n" % e for e in entries), 0o600)


class CleanCheckMixin:
    """unittest mixin: setUpClass sets cls.srv (via start()); the test named
    test_zz_clean_state (runs last, alphabetically) checks the clean state;
    tearDownClass stops the server."""

    @classmethod
    def tearDownClass(cls):
        srv = getattr(cls, "srv", None)
        if srv is not None:
            stop(srv)

    def test_zz_clean_state(self):
        assert_clean(self, self.srv)
