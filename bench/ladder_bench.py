"""What a ladder job (one ffmpeg, one decode, every rung) costs next to its
alternatives, measured in one run on the same machine (driven by
bench/ladder-bench.sh, which documents the parts and the settings; every
setting arrives here through the environment).

  1. one decode vs four: one LADDER_PRESET job (4 rungs + one AAC, HLS
     CMAF) against the same renditions as four single-output jobs (presets
     made here from the ladder's own rungs and arguments: the same scale,
     rates, x264 settings, keyframe rule and AAC, fragmented MP4), on the
     local file store, every job through POST /exec of one cap-server.
  2. into the bucket vs bare ffmpeg: the ladder job with cap-server on the
     S3 bed (test/integration/s3bed.py) against the same ffmpeg argv run
     directly, writing the package to a local directory; plus time to the
     first segment in the bucket, peak temp disk (DATA/.cap-tmp), peak RSS
     of cap-server and of ffmpeg.

Sides alternate round by round (the order rotates), medians are reported.
For every timed run the share of the CPUs other programs used meanwhile is
worked out (/proc/stat busy time minus what was measured) and reported; a
run above NOISE_MAX % is made again (NOISE_RETRIES, while TIME_BUDGET_S
lasts).  Output: OUT_DIR/summary.txt (the table), results.jsonl (one record
per run), meta.json, the server logs, the bed's proxy log, the ffmpeg argv
of every kind of run.
"""
import datetime
import gzip
import http.client
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "test", "integration"))

E = os.environ
BIN = E.get("CAP_SERVER_BIN") or os.path.join(REPO, "build", "cap-server")
PRESETS_JSON = os.path.join(REPO, "packaging", "presets.json")
RUNS = int(E.get("RUNS", "3"))
WARMUP = int(E.get("WARMUP", "1"))
WARM_SECONDS = 6
PARTS = [int(x) for x in E.get("BENCH_PARTS", "1 2").split()]
SRC_SECONDS = int(E.get("SOURCE_SECONDS", "20"))
SRC_SIZE = E.get("SOURCE_SIZE", "1920x1080")
SRC_RATE = int(E.get("SOURCE_RATE", "30"))
SRC_PRESET = E.get("SOURCE_PRESET", "medium")
SRC_CRF = E.get("SOURCE_CRF", "18")
SRC_FILE = E.get("SOURCE_FILE", "")
LADDER = E.get("LADDER_PRESET", "hls-ladder")
POOL_CPU = int(E.get("POOL_CPU", "1"))
BARE_NICE = int(E.get("BARE_NICE", "10"))
BARE_IONICE = E.get("BARE_IONICE", "best-effort:7")
SAMPLE_MS = int(E.get("SAMPLE_MS", "50"))
POLL_MS = int(E.get("POLL_MS", "25"))
QUIET_WAIT = int(E.get("QUIET_WAIT", "0"))
NOISE_MAX = float(E.get("NOISE_MAX", "15"))
NOISE_RETRIES = int(E.get("NOISE_RETRIES", "1"))
TIME_BUDGET_S = float(E.get("TIME_BUDGET_S", "480"))
OUT_DIR = E["OUT_DIR"]
KEEP_TMP = E.get("KEEP_TMP", "0") == "1"
QUICK = E.get("BENCH_QUICK", "0") == "1"
FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
TOKEN = "ladder-bench-" + os.urandom(12).hex()
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count()
BUCKET, PREFIX = "bench", "cap"
T_START = time.time()


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def die(msg):
    raise SystemExit("ladder-bench: " + msg)


def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else float("nan")


def iso_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


# ------------------------------------------------------------------ /proc ---

def proc_stat(pid):
    """(utime+stime, cutime+cstime) of pid in ticks, or (0, 0)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            x = f.read().rsplit(")", 1)[1].split()
        return int(x[11]) + int(x[12]), int(x[13]) + int(x[14])
    except (OSError, IndexError, ValueError):
        return 0, 0


def status_kib(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def children(pid):
    """Child pids of every thread of pid."""
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode() for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return None


def machine_ticks():
    with open("/proc/stat") as f:
        x = [int(v) for v in f.readline().split()[1:]]
    return x[0] + x[1] + x[2] + x[5] + x[6] + x[7]  # user nice system irq softirq steal


def busy_pct(interval):
    def snap():
        with open("/proc/stat") as f:
            x = [int(v) for v in f.readline().split()[1:9]]
        return sum(x) - x[3] - x[4], sum(x)
    b0, t0 = snap()
    time.sleep(interval)
    b1, t1 = snap()
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


def du(root):
    """(bytes on disk (st_blocks), of which in top-level *.in files, apparent bytes)."""
    total = inp = app = 0
    stack = [(root, True)]
    while stack:
        d, top = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, False))
                    continue
                b = st.st_blocks * 512
                total += b
                app += st.st_size
                if top and e.name.endswith(".in"):
                    inp += b
    return total, inp, app


# ------------------------------------------------------------------ noise ---

class Noise:
    """Share (%) of all CPUs used by programs other than the measured ones
    (cap-server and its children, the bed, this process and its children)
    between begin() and end()."""

    def __init__(self):
        self.pids = []

    def _measured(self):
        n = 0
        for p in self.pids:
            a, b = proc_stat(p)
            n += a + b
        t = os.times()
        return n + (t.user + t.system + t.children_user + t.children_system) * CLK_TCK

    def begin(self):
        self.t0, self.m0, self.p0 = time.time(), machine_ticks(), self._measured()

    def end(self):
        dt = time.time() - self.t0
        o = (machine_ticks() - self.m0 - (self._measured() - self.p0)) / CLK_TCK / (dt * NCPU) * 100
        return max(0.0, o)


NOISE = Noise()


def before_round(label, notes):
    deadline = time.time() + QUIET_WAIT
    said = False
    while True:
        b = busy_pct(0.5)
        if b < 10 or time.time() >= deadline:
            break
        if not said:
            log("  (waiting for the machine to calm down: %.0f%% CPU busy)" % b)
            said = True
    notes.append("%s %.0f%%" % (label, b))
    if b >= 25:
        log("  WARNING: %.0f%% CPU busy before %s (other programs); results will be noisy" % (b, label))


# ----------------------------------------------------------------- server ---

class Server:
    def __init__(self, tag, data, args, env=None, storage_ready=False):
        self.tag = tag
        self.data = data
        self.log_path = os.path.join(TMP, "cap-%s.log" % tag)
        os.makedirs(data, exist_ok=True)
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("CAP_") and not k.startswith("AWS_") and k != "CAPABILITY_TOKEN"}
        e["CAPABILITY_TOKEN"] = TOKEN
        e.update(env or {})
        argv = [BIN, "--port", "0", "--host", "127.0.0.1", "--data-dir", data,
                "--log-file", self.log_path, "--log-level", "debug",
                "--rate-limit", "100000000", "--rate-limit-token", "100000000",
                "--ffmpeg", FFMPEG, "--ffprobe", FFPROBE, "--pool-cpu", str(POOL_CPU),
                "--shutdown-grace-ms", "5000"] + list(args)
        self.argv = argv
        self.out = open(os.path.join(TMP, "cap-%s.out" % tag), "wb")
        self.proc = subprocess.Popen(argv, env=e, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.port = None
        deadline = time.time() + 20
        ready = not storage_ready
        while time.time() < deadline:
            if self.proc.poll() is not None:
                die("cap-server (%s) exited at start: %s" % (tag, open(self.out.name).read()[-2000:]))
            for line in self.lines():
                ev = line.get("event")
                if ev == "server.start":
                    self.port = int(line["port"])
                elif ev == "storage.unavailable":
                    die("cap-server (%s): storage.unavailable: %s" % (tag, json.dumps(line)))
                elif ev == "storage.ready":
                    ready = True
            if self.port and ready:
                break
            time.sleep(0.05)
        else:
            die("cap-server (%s) did not start in 20 s (log %s)" % (tag, self.log_path))
        self.rss_start_kib = status_kib(self.pid, "VmRSS")

    def lines(self):
        out = []
        try:
            with open(self.log_path) as f:
                for raw in f:
                    if raw.endswith("\n") and raw.strip():
                        try:
                            out.append(json.loads(raw))
                        except ValueError:
                            pass
        except OSError:
            pass
        return out

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)

    def request(self, conn, method, path, body=None):
        h = {"Authorization": "Bearer " + TOKEN}
        if body is not None:
            h["Content-Type"] = "application/json"
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        try:
            j = json.loads(data)
        except ValueError:
            j = {"raw": data[:300].decode(errors="replace")}
        return r.status, j

    def submit(self, conn, body):
        body = dict(body, **{"async": True})
        st, j = self.request(conn, "POST", "/exec", body)
        if st not in (200, 202) or "job_id" not in j:
            die("POST /exec %s: HTTP %d %s" % (json.dumps(body), st, json.dumps(j)[:600]))
        return j

    def wait(self, conn, j):
        while j.get("status") not in ("succeeded", "failed", "canceled"):
            st, j2 = self.request(conn, "GET", "/jobs/%s?wait=90" % j["job_id"])
            if st != 200:
                die("GET /jobs/%s: HTTP %d %s" % (j["job_id"], st, json.dumps(j2)[:600]))
            j = j2
        return j

    def ticks(self):
        return proc_stat(self.pid)

    def reset_hwm(self):
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def ffmpeg_kids(self):
        return [c for c in children(self.pid) if comm(c) == "ffmpeg"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                log("ladder-bench: cap-server (%s) still running 20 s after SIGTERM, SIGKILL" % self.tag)
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def job_phases(srv, job_id):
    """Seconds spent in each job state (job.state debug lines), the render
    start (job.started phase render) and the finish, from the server log."""
    trans, started, finished = [], None, None
    for l in srv.lines():
        if l.get("job_id") != job_id:
            continue
        ev = l.get("event")
        if ev == "job.state":
            trans.append((iso_ts(l["ts"]), l["from"], l["to"]))
        elif ev == "job.started" and l.get("phase") == "render":
            started = iso_ts(l["ts"])
        elif ev == "job.finished":
            finished = (iso_ts(l["ts"]), l.get("dur_ms"))
    spent = {}
    for (t0, _, to), (t1, _, _) in zip(trans, trans[1:]):
        spent[to] = spent.get(to, 0.0) + (t1 - t0)
    ff_end = next((t for t, f, to in trans if f == "rendering"), None)
    return {"states": spent, "render_start": started, "ffmpeg_end": ff_end,
            "finished": finished[0] if finished else None,
            "dur_ms": finished[1] if finished else None,
            "queued": trans[0][0] if trans else None}


# ---------------------------------------------------------------- sampler ---

class Sampler(threading.Thread):
    """Every SAMPLE_MS: disk use under root (du), and VmHWM of the ffmpeg
    processes pids() names (server children or the bare one); the first
    moment a finished segment file (seg_*, no .tmp) is under root."""

    def __init__(self, root, pids):
        super().__init__(daemon=True)
        self.root, self.pids = root, pids
        self.stop_ev = threading.Event()
        self.peak = self.peak_in = self.peak_app = 0
        self.ff_hwm = {}
        self.ff_argv = {}
        self.first_seg = None
        self.first_all = None
        self.expect = None  # renditions to wait for; None: no segment scan
        self.n = 0

    def run(self):
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(SAMPLE_MS / 1000.0)
        self.sample()

    def sample(self):
        self.n += 1
        tot, inp, app = du(self.root)
        if tot > self.peak:
            self.peak, self.peak_in = tot, inp
        self.peak_app = max(self.peak_app, app)
        for p in self.pids():
            h = status_kib(p, "VmHWM")
            if h is not None:
                self.ff_hwm[p] = max(self.ff_hwm.get(p, 0), h)
                if p not in self.ff_argv:
                    a = cmdline(p)
                    if a and os.path.basename(a[0]).startswith("ffmpeg"):
                        self.ff_argv[p] = a
        if self.expect and self.first_all is None:
            self.seg_scan()

    def seg_scan(self):
        """Finished segments (seg_*, not *.tmp) in root's subdirectories
        (the bare run's package: one directory per rendition)."""
        now, have = time.time(), 0
        try:
            for e in os.scandir(self.root):
                if e.is_dir() and any(f.startswith("seg_") and not f.endswith(".tmp")
                                      for f in os.listdir(e.path)):
                    have += 1
        except OSError:
            return
        if have and self.first_seg is None:
            self.first_seg = now
        if have >= self.expect:
            self.first_all = now


# ---------------------------------------------------------- presets, argv ---

def ladder_spec():
    p = json.load(open(PRESETS_JSON))
    if LADDER not in p:
        die("preset %s is not in %s" % (LADDER, PRESETS_JSON))
    s = p[LADDER]
    # A dash package runs the same ffmpeg; cap-server adds the MPD at the end.
    if s.get("package") not in ("hls", "dash") or s.get("scale", "scale") != "scale":
        die("%s is not a CPU HLS or DASH ladder preset" % LADDER)
    return p, s


def pick_rungs(s, src_h):
    r = [x for x in s["rungs"] if x["height"] <= src_h]
    if not r:
        die("SOURCE_SIZE %s is below every rung of %s" % (SRC_SIZE, LADDER))
    return r


def server_input_formats():
    """The default of --input-formats, from cap-server --help."""
    h = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
    m = re.search(r"--input-formats VALUE.*?\[([^\]]*)\]", h, re.S)
    if not m:
        die("no --input-formats default in %s --help" % BIN)
    return m.group(1)


def ladder_argv(s, rungs, audio, inp, out_dir, formats, protocols="file"):
    """cap_jobcmd_ladder() (src/jobs/jobcmd.c) for preset s: the same words
    in the same order.  The cpu class runs with threads 0 (no -threads).
    protocols: "file" for a downloaded input, "http,tcp" for one streamed
    through the server's input endpoint (input_mode stream)."""
    seg = s["segment_s"]
    segtype = s.get("segment_type", "fmp4")
    ext = "ts" if segtype == "mpegts" else "m4s"
    n = len(rungs)
    if n == 1:
        graph = "[0:v:0]scale=-2:%d[v0]" % rungs[0]["height"]
    else:
        graph = "[0:v:0]split=%d" % n + "".join("[s%d]" % i for i in range(n)) + "".join(
            ";[s%d]scale=-2:%d[v%d]" % (i, r["height"], i) for i, r in enumerate(rungs))
    a = [FFMPEG, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
         "-progress", "pipe:4", "-y"]
    a += s.get("decode_args", [])
    a += ["-protocol_whitelist", protocols, "-format_whitelist", formats, "-i", inp]
    a += ["-filter_complex", graph]
    for i, r in enumerate(rungs):
        a += ["-map", "[v%d]" % i, "-b:v:%d" % i, r["bitrate"], "-maxrate:v:%d" % i, r["maxrate"],
              "-bufsize:v:%d" % i, r["bufsize"]]
    a += s["video_args"]
    a += ["-force_key_frames:v", "expr:gte(t,n_forced*%d)" % seg]
    if audio:
        a += ["-map", "0:a:0"] + s["audio_args"]
    vmap = " ".join("v:%d,%sname:%s" % (i, "agroup:aud," if audio else "", r["name"])
                    for i, r in enumerate(rungs))
    if audio:
        vmap += " a:0,agroup:aud,name:audio"
    a += ["-f", "hls", "-hls_time", str(seg), "-hls_playlist_type", "event",
          "-hls_segment_type", "mpegts" if segtype == "mpegts" else "fmp4",
          "-hls_flags", "independent_segments+temp_file",
          "-hls_segment_filename", "%s/%%v/seg_%%05d.%s" % (out_dir, ext),
          "-master_pl_name", "ffmaster.m3u8", "-var_stream_map", vmap]
    if segtype != "mpegts":
        a += ["-hls_fmp4_init_filename", "init.mp4"]
    a += ["%s/%%v/index.m3u8" % out_dir]
    return a


def single_presets(s, rungs):
    """One fragmented-MP4 preset per rung: the rung's scale and rates, the
    ladder's x264 arguments and keyframe rule, the same AAC."""
    out = {}
    for r in rungs:
        args = ["-map", "0:v:0", "-map", "0:a:0", "-vf", "scale=-2:%d" % r["height"],
                "-b:v", r["bitrate"], "-maxrate", r["maxrate"], "-bufsize", r["bufsize"]]
        args += s["video_args"]
        args += ["-force_key_frames:v", "expr:gte(t,n_forced*%d)" % s["segment_s"]]
        args += s["audio_args"]
        args += ["-movflags", "frag_keyframe+empty_moov+default_base_moof"]
        out["rung-" + r["name"]] = {
            "description": "ladder-bench: the %s rung of %s alone, fragmented MP4" % (r["name"], LADDER),
            "class": "cpu", "format": "mp4", "ext": "mp4", "streamable": True,
            "encoders": ["libx264", "aac"], "timeout_s": 7200, "args": args}
    return out


def check_argv(got, want, what):
    if got == want:
        return
    diff = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w][:5]
    die("%s: the ffmpeg cap-server ran differs from cap_jobcmd_ladder() as reconstructed here "
        "(len %d vs %d; first differences (index, ran, expected): %s)\n ran: %s"
        % (what, len(got), len(want), diff, " ".join(got)))


# ---------------------------------------------------------- proxy log (S3) ---

def proxy_puts(path, key_prefix, t0, t1):
    """Successful PUTs under /BUCKET/PREFIX/key_prefix in [t0, t1]: list of
    (key relative to key_prefix, start, end, bytes)."""
    want = "/%s/%s/%s" % (BUCKET, PREFIX, key_prefix)
    out = []
    import urllib.parse
    try:
        f = open(path, errors="replace")
    except OSError:
        return out
    with f:
        for line in f:
            if not line.startswith("proxy-server: "):
                continue
            x = line[len("proxy-server: "):].split()
            if len(x) < 21 or x[0] == "-" or x[3] != "PUT":
                continue
            p = urllib.parse.unquote(x[4]).partition("?")[0]
            try:
                st, start, end = int(x[6]), float(x[18]), float(x[19])
                nb = 0 if x[10] == "-" else int(x[10])
            except (ValueError, IndexError):
                continue
            if p.startswith(want) and st < 300 and t0 - 1 <= start <= t1 + 1:
                out.append((p[len(want):], start, end, nb))
    return out


# ------------------------------------------------------------------- runs ---

RESULTS = []


def emit(rec):
    RESULTS.append(rec)
    with open(os.path.join(OUT_DIR, "results.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")


def timed(fn, label):
    """Runs fn() (which returns a record) until other programs used at most
    NOISE_MAX % of the CPUs meanwhile: NOISE_RETRIES more times at most, and
    only when the run, with what is still planned (estimated from the runs
    so far), still fits in TIME_BUDGET_S; returns the record kept."""
    attempt = 0
    while attempt <= NOISE_RETRIES:
        t = time.time()
        rec = fn()
        el = time.time() - t
        if rec.get("bed_killed"):
            rec["discarded"] = True
            emit(rec)
            continue
        BUDGET["elapsed"].append(el)
        rec["attempt"] = attempt
        over = rec["others"] > NOISE_MAX
        mean = statistics.mean(BUDGET["elapsed"])
        later = BUDGET["planned"] - BUDGET["kept"] - 1
        if 2 in PARTS and not BUDGET["part2_started"]:
            extra = 20.0 + 10.0 * WARMUP  # the bed's start, the uploads, part 2's warm-up
        else:
            extra = 0.0
        est = time.time() - T_START + el + later * mean + extra
        left = attempt < NOISE_RETRIES and est <= TIME_BUDGET_S
        log("  %s: %.3f s (other programs: %.0f%% CPU)%s" % (
            label, rec["wall_s"], rec["others"], ", made again" if over and left else (
                ", kept: no time left to make it again (TIME_BUDGET_S)" if over and attempt < NOISE_RETRIES else "")))
        if not (over and left):
            BUDGET["kept"] += 1
            return rec
        REDONE.append(label)
        rec["discarded"] = True
        emit(rec)
        attempt += 1
    BUDGET["kept"] += 1
    return rec


BUDGET = {"planned": RUNS * 2 * len(PARTS), "kept": 0, "elapsed": [], "part2_started": False}
REDONE = []


def bed_ticks():
    if BED is None or BED.dir is None:
        return 0
    return sum(sum(proc_stat(p)) for p in BED.pids().values())


def srv_job_run(srv, bodies, poll_package=False, fail_ok=False):
    """Submits the jobs in bodies at once (async, one connection each, in
    order) and waits for all; returns (run record, sampler, what polling
    GET /jobs saw of the first job's package when poll_package)."""
    ff = lambda: srv.ffmpeg_kids()
    smp = Sampler(os.path.join(srv.data, ".cap-tmp"), ff)
    s0, k0 = srv.ticks()
    conns = [srv.conn() for _ in bodies]
    smp.start()
    NOISE.begin()
    b0 = bed_ticks()
    t0 = time.time()
    jobs = [srv.submit(c, b) for c, b in zip(conns, bodies)]
    pk = {"first_seg_poll": None, "max_backlog_files": 0, "max_backlog_bytes": 0, "paused": False}
    stop_poll = threading.Event()

    def poller(jid):
        c = srv.conn()
        while not stop_poll.is_set():
            st, j = srv.request(c, "GET", "/jobs/%s" % jid)
            p = j.get("package") or {}
            if pk["first_seg_poll"] is None and p.get("segments_uploaded", 0) >= 1:
                pk["first_seg_poll"] = time.time()
            pk["max_backlog_files"] = max(pk["max_backlog_files"], p.get("backlog_files", 0))
            pk["max_backlog_bytes"] = max(pk["max_backlog_bytes"], p.get("backlog_bytes", 0))
            pk["paused"] = pk["paused"] or bool(p.get("paused"))
            if j.get("status") in ("succeeded", "failed", "canceled"):
                break
            stop_poll.wait((POLL_MS if pk["first_seg_poll"] is None else 4 * POLL_MS) / 1000.0)
        c.close()

    pt = None
    if poll_package:
        pt = threading.Thread(target=poller, args=(jobs[0]["job_id"],), daemon=True)
        pt.start()
    done, t_done = [None] * len(jobs), [None] * len(jobs)

    def waiter(i):
        done[i] = srv.wait(conns[i], jobs[i])
        t_done[i] = time.time()

    ws = [threading.Thread(target=waiter, args=(i,)) for i in range(len(jobs))]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    t1 = max(t for t in t_done if t)
    others = round(NOISE.end(), 1)
    bed_cpu = (bed_ticks() - b0) / CLK_TCK
    stop_poll.set()
    if pt:
        pt.join()
    smp.stop_ev.set()
    smp.join()
    s1, k1 = srv.ticks()
    for c in conns:
        c.close()
    for j in done:
        if j is None or j.get("status") != "succeeded":
            if fail_ok and j is not None:
                return {"t0": t0, "t1": t1, "wall_s": t1 - t0, "others": others, "failed": j}, smp, pk
            die("job %s: %s (server log: %s after exit)%s" % (j and j.get("job_id"), json.dumps(j)[:1500],
                                                            os.path.join(OUT_DIR, os.path.basename(srv.log_path)),
                                                            bed_state()))
    return {"t0": t0, "t1": t1, "wall_s": t1 - t0, "jobs": done, "t_done": t_done, "others": others,
            "bed_cpu_s": bed_cpu,
            "cpu_self_s": (s1 - s0) / CLK_TCK, "cpu_kids_s": (k1 - k0) / CLK_TCK}, smp, pk


def bare_run(argv, out_dir, nice, ionice):
    """The ladder's ffmpeg run directly: fd 4 (-progress pipe:4) on /dev/null,
    the cpu class's nice/ionice; returns (record, sampler)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    cls, _, lvl = ionice.partition(":")
    pre = []
    if cls and cls != "none":
        pre = ["ionice", "-c", {"idle": "3", "best-effort": "2", "realtime": "1"}[cls]] + (
            ["-n", lvl] if lvl and cls != "idle" else [])
    if nice:
        pre += ["nice", "-n", str(nice)]
    full = ["/bin/bash", "-c", 'exec 4>/dev/null; exec "$@"', "bare-ffmpeg"] + pre + argv
    holder = {}
    smp = Sampler(out_dir, lambda: [holder["pid"]] if "pid" in holder else [])
    smp.expect = EXPECT_DIRS
    errf = open(os.path.join(TMP, "bare.err"), "w+")
    NOISE.begin()
    b0 = bed_ticks()
    t0 = time.time()
    p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
    holder["pid"] = p.pid
    smp.start()
    _, status, ru = os.wait4(p.pid, 0)
    t1 = time.time()
    others = round(NOISE.end(), 1)
    bed_cpu = (bed_ticks() - b0) / CLK_TCK
    p.returncode = os.waitstatus_to_exitcode(status)
    errf.seek(0)
    err = errf.read()
    errf.close()
    smp.stop_ev.set()
    smp.join()
    if p.returncode != 0:
        die("bare ffmpeg exited %d: %s" % (p.returncode, err[-1500:]))
    size = du(out_dir)[2]
    return {"t0": t0, "t1": t1, "wall_s": t1 - t0, "others": others, "bed_cpu_s": bed_cpu,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "maxrss_kib": ru.ru_maxrss, "package_bytes": size,
            "first_seg_s": (smp.first_seg - t0) if smp.first_seg else None,
            "first_all_s": (smp.first_all - t0) if smp.first_all else None,
            "ff_hwm_kib": max(smp.ff_hwm.values()) if smp.ff_hwm else None,
            "out_peak_bytes": smp.peak, "samples": smp.n}, smp


def bed_state():
    """For a failure message: whether the S3 bed is still up."""
    if BED is None or BED.dir is None:
        return ""
    gone = []
    for name, pid in BED.pids().items():
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    gone.append("%s %d (zombie)" % (name, pid))
        except OSError:
            gone.append("%s %d" % (name, pid))
    if gone:
        return ("\n  the S3 bed's processes are gone: %s (this script did not stop them: killed from outside?);"
                " its logs: %s" % (", ".join(gone), os.path.join(OUT_DIR, "s3-proxy.log.gz")))
    return "\n  the S3 bed (%s) is still up: %s" % (BED.endpoint, "healthy" if BED.running() else "NOT healthy")


BED_KILLS = []


def bed_killed(srv, res, pfx, r):
    """A ladder job into S3 failed.  When the bed's processes are gone (other
    programs on a shared machine stop Swift and memcached by name), this is
    not cap-server's doing: start the bed again (same directory and port),
    wait for the failed job to delete what it stored (package.state
    "removed"), check that nothing is left under its prefix, and have the
    run made again.  A failure with the bed up stops the bench."""
    j = res["failed"]
    hint = bed_state()
    if "are gone" not in hint:
        die("job %s failed with the S3 bed up: %s (server log: %s after exit)%s"
            % (j.get("job_id"), json.dumps(j)[:1500], os.path.join(OUT_DIR, "cap-s3.log"), hint))
    if len(BED_KILLS) >= 3:
        die("the S3 bed was killed from outside %d times; giving up. Last job: %s%s"
            % (len(BED_KILLS) + 1, json.dumps(j)[:800], hint))
    log("  round %d: job %s failed (%s): the S3 bed's processes were killed from outside;%s"
        % (r, j["job_id"], (j.get("error") or {}).get("message"), hint.replace("\n  ", " ")))
    log("  starting the bed again at the same endpoint, waiting for the job's clean-up, then the run is made again")
    t_fail = time.time()
    BED.restart()
    NOISE.pids = [srv.pid] + list(BED.pids().values())
    c = srv.conn()
    state, deadline = None, time.time() + 300
    while time.time() < deadline:
        st, jj = srv.request(c, "GET", "/jobs/%s" % j["job_id"])
        state = (jj.get("package") or {}).get("state")
        if st != 200 or state in ("removed", "stored") or (state is None and jj.get("status") in ("failed", "canceled")):
            break
        time.sleep(0.5)
    c.close()
    left = len(bed_do("listing what the failed job left", BED.list_objects, BUCKET, "%s/%s" % (PREFIX, pfx)))
    rec = {"part": 2, "side": "s3", "round": r, "bed_killed": True, "wall_s": res["wall_s"], "others": res["others"],
           "job_id": j["job_id"], "error": j.get("error"), "package": j.get("package"),
           "cleanup_state": state, "cleanup_s": round(time.time() - t_fail, 1), "objects_left": left}
    BED_KILLS.append(rec)
    log("  bed up again; the failed job's package: %s %.1f s after the failure, %d object(s) left under %s%s"
        % (state, rec["cleanup_s"], left, pfx, "" if left == 0 and state == "removed" else "  <-- NOT cleaned up"))
    bed_do("deleting what the failed job left", BED.aws, "s3", "rm", "s3://%s/%s/%s" % (BUCKET, PREFIX, pfx),
           "--recursive", "--quiet")
    return rec


def bed_do(what, fn, *args, **kw):
    """fn(*args) against the bed (awscli); when it fails because the bed's
    processes were killed from outside, start the bed again and retry once."""
    try:
        return fn(*args, **kw)
    except Exception:  # noqa: BLE001 - AwsError, timeouts
        hint = bed_state()
        if "are gone" not in hint or len(BED_KILLS) >= 3:
            raise
        log("  the S3 bed's processes were killed from outside (found at: %s);%s" % (what, hint.replace("\n  ", " ")))
        BED.restart()
        NOISE.pids = [p for p in NOISE.pids if os.path.exists("/proc/%d" % p)] + list(BED.pids().values())
        BED_KILLS.append({"found_at": what})
        log("  bed up again at %s" % BED.endpoint)
        return fn(*args, **kw)


def save_proxy_log():
    if BED is None or BED.dir is None:
        return
    try:
        with open(os.path.join(BED.dir, "log", "proxy.log"), "rb") as fi, \
                gzip.open(os.path.join(OUT_DIR, "s3-proxy.log.gz"), "wb") as fo:
            shutil.copyfileobj(fi, fo)
    except OSError:
        pass


def ffprobe_height(path):
    r = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
                        "stream=height", "-of", "csv=p=0", path], capture_output=True, text=True)
    return r.stdout.strip()


# ------------------------------------------------------------------- main ---

TMP = None
SERVERS = []
BED = None
EXPECT_DIRS = 5


def snapshot_binary():
    """Copies cap-server (and the cap-sandbox helper it looks for beside
    itself) into TMP/bin, so that one build serves the whole run even when
    the build tree is rebuilt meanwhile; returns a description of it."""
    global BIN
    import hashlib
    d = os.path.join(TMP, "bin")
    os.makedirs(d)
    src = BIN
    st = os.stat(src)
    shutil.copy2(src, os.path.join(d, "cap-server"))
    helper = os.path.join(os.path.dirname(src), "cap-sandbox")
    if os.path.exists(helper):
        shutil.copy2(helper, os.path.join(d, "cap-sandbox"))
    BIN = os.path.join(d, "cap-server")
    h = hashlib.sha256(open(BIN, "rb").read()).hexdigest()[:16]
    return "%s, built %s, sha256 %s%s" % (
        src, datetime.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M:%S"), h,
        "" if os.path.exists(helper) else ", no cap-sandbox beside it")


def main():
    global TMP, BED, EXPECT_DIRS
    os.makedirs(OUT_DIR, exist_ok=True)
    open(os.path.join(OUT_DIR, "results.jsonl"), "w").close()
    TMP = tempfile.mkdtemp(prefix="ladder-bench.")
    server_desc = snapshot_binary()
    log("ladder-bench: cap-server %s (copied for this run)" % server_desc)
    bg = []
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "runs": RUNS, "warmup": WARMUP, "parts": PARTS, "pool_cpu": POOL_CPU, "server": server_desc,
            "version": subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip(),
            "ffmpeg": subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.split("\n")[0],
            "cpu": next((l.split(": ", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
            "ncpu": NCPU, "quick": QUICK, "bare_nice": BARE_NICE, "bare_ionice": BARE_IONICE,
            "sample_ms": SAMPLE_MS, "poll_ms": POLL_MS, "noise_max": NOISE_MAX, "out_dir": OUT_DIR,
            "ladder": LADDER,
            "git": subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %s"], capture_output=True,
                                  text=True).stdout.strip()[:80]}

    # Other S3 beds, ffmpeg: foreign load, only reported (never stopped here).
    foreign = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            c = " ".join(cmdline(int(p)) or [])
            if not c:
                continue
            if "swift-proxy-server" in c or c.startswith("memcached") or (
                    comm(int(p)) in ("ffmpeg", "ffprobe", "x264")):
                foreign.append("%s %s" % (p, c[:90]))
    meta["foreign"] = foreign
    if foreign:
        log("ladder-bench: other programs that load the machine are running (not ours, left alone):")
        for f in foreign:
            log("  " + f)

    # ---- source
    src = os.path.join(TMP, "src.mp4")
    t = time.time()
    if SRC_FILE:
        os.link(SRC_FILE, src) if os.stat(SRC_FILE).st_dev == os.stat(TMP).st_dev else shutil.copy(SRC_FILE, src)
        meta["source_made"] = "given: %s" % SRC_FILE
    else:
        log("ladder-bench: making the source: %s %d fps %d s testsrc2 + sine, libx264 %s crf %s, AAC"
            % (SRC_SIZE, SRC_RATE, SRC_SECONDS, SRC_PRESET, SRC_CRF))
        r = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                            "-f", "lavfi", "-i", "testsrc2=size=%s:rate=%d:duration=%d" % (SRC_SIZE, SRC_RATE, SRC_SECONDS),
                            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=%d" % SRC_SECONDS,
                            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-preset", SRC_PRESET,
                            "-crf", SRC_CRF, "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "160k",
                            "-shortest", "-movflags", "+faststart", src], capture_output=True, text=True)
        if r.returncode != 0:
            die("making the source failed: " + r.stderr[-1000:])
        meta["source_made"] = "libx264 %s crf %s, %.0f s to make" % (SRC_PRESET, SRC_CRF, time.time() - t)
    pr = json.loads(subprocess.run([FFPROBE, "-v", "error", "-show_entries",
                                    "format=duration,bit_rate:stream=codec_type,width,height",
                                    "-of", "json", src], capture_output=True, text=True).stdout)
    vs = next(s for s in pr["streams"] if s["codec_type"] == "video")
    audio = any(s["codec_type"] == "audio" for s in pr["streams"])
    src_bytes = os.path.getsize(src)
    t = time.time()
    subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", src,
                    "-map", "0:v:0", "-f", "null", "-"], check=True)
    # The warm-up jobs' input: the source's first WARM_SECONDS, copied.
    warm = os.path.join(TMP, "warm.mp4")
    subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", src, "-t", str(WARM_SECONDS),
                    "-map", "0", "-c", "copy", "-movflags", "+faststart", warm], check=True)
    meta["source"] = {"width": vs["width"], "height": vs["height"], "bytes": src_bytes,
                      "duration": float(pr["format"]["duration"]), "bit_rate": int(pr["format"]["bit_rate"]),
                      "audio": audio, "decode_s": round(time.time() - t, 3)}
    log("ladder-bench: source %dx%d %.1f s, %.1f MB, %.1f Mb/s; decoding it alone (-f null): %.2f s"
        % (vs["width"], vs["height"], meta["source"]["duration"], src_bytes / 1e6,
           meta["source"]["bit_rate"] / 1e6, meta["source"]["decode_s"]))

    # ---- presets, argv
    allp, spec = ladder_spec()
    rungs = pick_rungs(spec, vs["height"])
    EXPECT_DIRS = len(rungs) + (1 if audio else 0)
    formats = server_input_formats()
    presets = {LADDER: spec}
    singles = single_presets(spec, rungs)
    presets.update(singles)
    ppath = os.path.join(TMP, "presets.json")
    json.dump(presets, open(ppath, "w"), indent=1)
    shutil.copy(ppath, os.path.join(OUT_DIR, "presets.json"))
    meta["rungs"] = ["%s %s (max %s, buf %s)" % (r["name"], r["bitrate"], r["maxrate"], r["bufsize"]) for r in rungs]
    meta["segment"] = "%s %d s" % (spec.get("segment_type", "fmp4"), spec["segment_s"])
    meta["audio_args"] = " ".join(spec["audio_args"])
    meta["video_args"] = " ".join(spec["video_args"])
    argv_saved = {}

    def save_argv(name, a):
        argv_saved[name] = a
        with open(os.path.join(OUT_DIR, "argv-%s.txt" % name), "w") as f:
            f.write(" ".join(_q(x) for x in a) + "\n")

    def verify_ladder(smp, srv, job_id, what):
        ran = [a for a in smp.ff_argv.values()]
        if not ran:
            die("%s: no ffmpeg child of cap-server seen by the sampler (SAMPLE_MS %d)" % (what, SAMPLE_MS))
        got = ran[0]
        inp, protocols = "file:/dev/fd/3", "file"
        # A bucket input is read by range through the server's own input
        # endpoint (input_mode stream, the default): one loopback URL per job.
        streamed = [a for a in got if re.fullmatch(r"http://127\.0\.0\.1:\d+/in/[0-9a-f]{32}", a)]
        if streamed:
            inp, protocols = streamed[0], "http,tcp"
        want = ladder_argv(spec, rungs, audio, inp, os.path.join(srv.data, ".cap-tmp", job_id), formats,
                           protocols)
        check_argv(got, want, what)
        save_argv("server-" + srv.tag, got)

    # ---------------------------------------------------------- part 1
    if 1 in PARTS:
        log("")
        log("== 1. one decode vs four: %s job (%d rungs) vs %d single-rung jobs, local file store, pool_cpu %d, %d run(s) each =="
            % (LADDER, len(rungs), len(rungs), POOL_CPU, RUNS))
        d = os.path.join(TMP, "fs-data")
        os.makedirs(os.path.join(d, "in"))
        os.link(src, os.path.join(d, "in", "src.mp4"))
        os.link(warm, os.path.join(d, "in", "warm.mp4"))
        srv = Server("fs", d, ["--presets", ppath])
        SERVERS.append(srv)
        NOISE.pids = [srv.pid]
        log("  cap-server pid %d port %d" % (srv.pid, srv.port))
        n = [0]

        def ladder_side(r, tag):
            n[0] += 1
            pfx = "vod/p1-%s-%d/" % (tag, n[0])
            key = "in/warm.mp4" if tag == "w" else "in/src.mp4"
            res, smp, _ = srv_job_run(srv, [{"input_key": key, "output_prefix": pfx, "preset": LADDER}])
            j = res["jobs"][0]
            rr = j["result"]
            if len(rr["renditions"]) != len(rungs):
                die("ladder job %s: %d renditions, expected %d: %s" % (j["job_id"], len(rr["renditions"]), len(rungs), json.dumps(rr)[:800]))
            if n[0] == 1:
                verify_ladder(smp, srv, j["job_id"], "part 1 ladder")
            ph = job_phases(srv, j["job_id"])
            shutil.rmtree(os.path.join(d, pfx), ignore_errors=True)
            return {"part": 1, "side": "ladder", "round": r, "wall_s": res["wall_s"], "others": res["others"],
                    "cpu_kids_s": res["cpu_kids_s"], "cpu_self_s": res["cpu_self_s"],
                    "job_dur_ms": j["result"]["duration_ms"], "objects": rr["objects"], "bytes": rr["bytes"],
                    "phases": ph["states"], "tmp_peak": smp.peak,
                    "ff_hwm_kib": max(smp.ff_hwm.values()) if smp.ff_hwm else None,
                    "renditions": [(x["name"], x["bytes"], x["average_bandwidth"]) for x in rr["renditions"]]}

        def separate_side(r, tag):
            n[0] += 1
            bodies = [{"input_key": "in/src.mp4", "output_key": "out/p1-%s-%d-%s.mp4" % (tag, n[0], name),
                       "preset": name} for name in singles]
            res, smp, _ = srv_job_run(srv, bodies)
            heights = []
            if r == 1 and tag == "t":
                for b in bodies:
                    heights.append(ffprobe_height(os.path.join(d, b["output_key"])))
                want = [str(x["height"]) for x in rungs]
                if heights != want:
                    die("single-rung outputs have heights %s, expected %s" % (heights, want))
                # The pool runs them in the order sent: pids ascend with it.
                for name, (_, a) in zip(singles, sorted(smp.ff_argv.items())):
                    if "server-fs-" + name not in argv_saved:
                        save_argv("server-fs-" + name, a)
            info = []
            for j in res["jobs"]:
                ph = job_phases(srv, j["job_id"])
                info.append({"preset": j["preset"], "dur_ms": j["result"].get("duration_ms") or ph["dur_ms"],
                             "bytes": j["result"].get("bytes"), "queued_s": ph["states"].get("queued"),
                             "measuring_s": ph["states"].get("measuring")})
            for b in bodies:
                try:
                    os.unlink(os.path.join(d, b["output_key"]))
                except OSError:
                    pass
            return {"part": 1, "side": "separate", "round": r, "wall_s": res["wall_s"], "others": res["others"],
                    "cpu_kids_s": res["cpu_kids_s"], "cpu_self_s": res["cpu_self_s"], "jobs": info,
                    "tmp_peak": smp.peak, "ff_hwm_kib": max(smp.ff_hwm.values()) if smp.ff_hwm else None}

        for w in range(WARMUP):
            log("  warm-up %d/%d (a ladder job of the source's first %d s, not timed)" % (w + 1, WARMUP, WARM_SECONDS))
            ladder_side(0, "w")
        for r in range(1, RUNS + 1):
            before_round("part 1 round %d" % r, bg)
            order = ["ladder", "separate"] if r % 2 else ["separate", "ladder"]
            for side in order:
                os.sync()
                fn = ladder_side if side == "ladder" else separate_side
                rec = timed(lambda: fn(r, "t"), "round %d/%d: %s" % (r, RUNS, side))
                emit(rec)
        srv.stop()
        SERVERS.remove(srv)

    # ---------------------------------------------------------- part 2
    if 2 in PARTS:
        log("")
        log("== 2. %s job into S3 vs the same ffmpeg -> local dir, %d run(s) each ==" % (LADDER, RUNS))
        BUDGET["part2_started"] = True
        from s3bed import S3Bed
        log("  starting the S3 bed (test/integration/s3bed.py)")
        BED = S3Bed().start()
        meta["bed_start_s"] = round(BED.start_seconds, 1)
        BED.make_bucket(BUCKET)
        BED.put_object(BUCKET, "%s/in/src.mp4" % PREFIX, path=src)
        BED.put_object(BUCKET, "%s/in/warm.mp4" % PREFIX, path=warm)
        proxy_log = os.path.join(BED.dir, "log", "proxy.log")
        d = os.path.join(TMP, "s3-data")
        srv = Server("s3", d, ["--presets", ppath, "--storage", "s3://%s/%s" % (BUCKET, PREFIX),
                               "--orphan-sweep-s", "0"], env=BED.env(), storage_ready=True)
        SERVERS.append(srv)
        NOISE.pids = [srv.pid] + list(BED.pids().values())
        log("  cap-server pid %d port %d; bed %s (%s)" % (srv.pid, srv.port, BED.endpoint, BED.dir))
        bare_dir = os.path.join(TMP, "bare")
        bare_argv = ladder_argv(spec, rungs, audio, "file:" + src, bare_dir, formats)
        save_argv("bare", bare_argv)
        n = [0]

        def s3_side(r, tag):
            n[0] += 1
            pfx = "vod/p2-%s-%d/" % (tag, n[0])
            reset = srv.reset_hwm()
            key = "in/warm.mp4" if tag == "w" else "in/src.mp4"
            res, smp, pk = srv_job_run(srv, [{"input_key": key, "output_prefix": pfx,
                                              "preset": LADDER}], poll_package=True, fail_ok=True)
            if "failed" in res:
                return bed_killed(srv, res, pfx, r)
            hwm = status_kib(srv.pid, "VmHWM")
            j = res["jobs"][0]
            rr = j["result"]
            if n[0] == 1:
                verify_ladder(smp, srv, j["job_id"], "part 2 ladder (S3)")
            if len(rr["renditions"]) != len(rungs):
                die("ladder job %s: %d renditions, expected %d" % (j["job_id"], len(rr["renditions"]), len(rungs)))
            ph = job_phases(srv, j["job_id"])
            time.sleep(0.3)  # the proxy logs a request when it has answered it
            puts = proxy_puts(proxy_log, pfx, res["t0"], res["t1"])
            segs = [p for p in puts if os.path.basename(p[0]).startswith("seg_")]
            first_seg = min((p[2] for p in segs), default=None)
            per_rend = {}
            for k, s0, e0, _ in segs:
                per_rend[k.split("/")[0]] = min(per_rend.get(k.split("/")[0], 1e18), e0)
            first_all = max(per_rend.values()) if len(per_rend) >= EXPECT_DIRS else None
            listed = None
            if r == 1 and tag == "t":
                listed = len(bed_do("listing the package", BED.list_objects, BUCKET, "%s/%s" % (PREFIX, pfx)))
                if listed != rr["objects"]:
                    die("job %s reports %d objects, the bucket lists %d under %s"
                        % (j["job_id"], rr["objects"], listed, pfx))
            bed_do("deleting the package", BED.aws, "s3", "rm", "s3://%s/%s/%s" % (BUCKET, PREFIX, pfx),
                   "--recursive", "--quiet")
            t0 = res["t0"]
            return {"part": 2, "side": "s3", "round": r, "wall_s": res["wall_s"], "others": res["others"], "job_id": j["job_id"],
                    "cpu_kids_s": res["cpu_kids_s"], "cpu_self_s": res["cpu_self_s"], "bed_cpu_s": res["bed_cpu_s"],
                    "job_dur_ms": rr["duration_ms"], "objects": rr["objects"], "bytes": rr["bytes"],
                    "listed": listed, "puts": len(puts), "put_bytes": sum(p[3] for p in puts),
                    "first_seg_s": (first_seg - t0) if first_seg else None,
                    "first_all_s": (first_all - t0) if first_all else None,
                    "first_seg_poll_s": (pk["first_seg_poll"] - t0) if pk["first_seg_poll"] else None,
                    "render_start_s": (ph["render_start"] - t0) if ph["render_start"] else None,
                    "ffmpeg_end_s": (ph["ffmpeg_end"] - t0) if ph["ffmpeg_end"] else None,
                    "last_put_end_s": (max(p[2] for p in puts) - t0) if puts else None,
                    "phases": ph["states"], "tmp_peak": smp.peak, "tmp_peak_input": smp.peak_in,
                    "tmp_samples": smp.n, "backlog_files_max": pk["max_backlog_files"],
                    "backlog_bytes_max": pk["max_backlog_bytes"], "paused": pk["paused"],
                    "srv_hwm_kib": hwm, "hwm_reset": reset,
                    "ff_hwm_kib": max(smp.ff_hwm.values()) if smp.ff_hwm else None}

        def bare_side(r, tag):
            rec, smp = bare_run(bare_argv, bare_dir, BARE_NICE, BARE_IONICE)
            rec.update({"part": 2, "side": "bare", "round": r})
            shutil.rmtree(bare_dir, ignore_errors=True)
            return rec

        for w in range(WARMUP):
            log("  warm-up %d/%d (an S3 ladder job of the source's first %d s, not timed)" % (w + 1, WARMUP, WARM_SECONDS))
            s3_side(0, "w")
        for r in range(1, RUNS + 1):
            before_round("part 2 round %d" % r, bg)
            order = ["s3", "bare"] if r % 2 else ["bare", "s3"]
            for side in order:
                os.sync()
                fn = s3_side if side == "s3" else bare_side
                rec = timed(lambda: fn(r, "t"), "round %d/%d: %s" % (r, RUNS, side))
                emit(rec)
        left = bed_do("listing open multipart uploads", BED.list_multipart_uploads, BUCKET)
        meta["leftover_uploads"] = len(left)
        meta["srv_rss_start_kib"] = srv.rss_start_kib
        srv.stop()
        SERVERS.remove(srv)

    meta["bg"] = bg
    meta["redone"] = REDONE
    meta["bed_kills"] = BED_KILLS
    lw = {}
    for f in sorted(os.listdir(TMP)):
        if f.startswith("cap-") and f.endswith(".log"):
            for line in open(os.path.join(TMP, f), errors="replace"):
                if '"level":"warn"' in line or '"level":"error"' in line:
                    try:
                        ev = json.loads(line).get("event", "?")
                    except ValueError:
                        ev = "?"
                    k = "%s %s" % (f[4:-4], ev)
                    lw[k] = lw.get(k, 0) + 1
    meta["log_warns"] = lw
    meta["wall_s"] = round(time.time() - T_START, 1)
    json.dump(meta, open(os.path.join(OUT_DIR, "meta.json"), "w"), indent=1)
    text = report(RESULTS, meta)
    with open(os.path.join(OUT_DIR, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)


def _q(s):
    return s if re.fullmatch(r"[A-Za-z0-9_./:=+,%@-]+", s) else "'" + s.replace("'", "'\\''") + "'"


# ----------------------------------------------------------------- report ---

def report(recs, meta):
    recs = [r for r in recs if not r.get("discarded")]
    P = lambda part, side: [r for r in recs if r["part"] == part and r["side"] == side]
    L = []
    w = L.append
    src = meta["source"]
    w("cap-server ladder benchmark  %s" % meta["date"])
    w("machine: %d CPU(s) %s; %s" % (meta["ncpu"], meta["cpu"], " ".join(meta["ffmpeg"].split()[:3])))
    w("server: %s (%s), pool_cpu %d" % (meta["server"], meta["version"], meta["pool_cpu"]))
    w("tree: %s" % meta.get("git", "?"))
    w("source: %dx%d %.0f s testsrc2 + sine (%s), %.1f MB = %.1f Mb/s; decoding it alone: %.2f s"
      % (src["width"], src["height"], src["duration"], meta["source_made"], src["bytes"] / 1e6,
         src["bit_rate"] / 1e6, src["decode_s"]))
    w("ladder: %s: %s; %s segments; video %s; audio %s"
      % (meta["ladder"], ", ".join(meta["rungs"]), meta["segment"], meta["video_args"], meta["audio_args"]))
    if meta.get("quick"):
        w("[BENCH_QUICK=1: smoke run, numbers are rough]")
    w("")
    W = 54
    head = "%-" + str(W) + "s %12s %12s %8s %8s  %s"
    w(head % ("measurement (median of %d run%s)" % (meta["runs"], "s" if meta["runs"] != 1 else ""),
              "cap-server", "baseline", "ratio", "goal", "verdict"))
    w(head % ("-" * W, "-" * 12, "-" * 12, "-" * 8, "-" * 8, "-------"))
    fnum = lambda x, u: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else (
        "%.3f %s" % (x, u) if u == "s" else "%.1f %s" % (x, u))

    def row(label, a, b, u, goal="", g=None):
        ratio = a / b if a == a and b == b and b else float("nan")
        v = "-" if math.isnan(ratio) or g is None else ("met" if ratio <= g else "MISSED")
        w(head % (label, fnum(a, u), fnum(b, u), "-" if math.isnan(ratio) else "%.3f" % ratio,
                  goal, v if g is not None else "(info)"))

    def info(label, a, b, u):
        w(head % (label, "" if a is None else fnum(a, u), "" if b is None else fnum(b, u), "", "", "(info)"))

    det = []
    d = det.append
    others = lambda rs: "%.0f%%/%.0f%%" % (med([r["others"] for r in rs]), max(r["others"] for r in rs)) if rs else "-"
    mib = lambda b: b / 1048576.0 if b is not None else None

    if 1 in meta["parts"]:
        La, Se = P(1, "ladder"), P(1, "separate")
        w("1. one decode vs four (local file store, pool_cpu %d: the four jobs run one after another)" % meta["pool_cpu"])
        row("   %d-rung ladder job vs %d single-rung jobs, wall" % (len(meta["rungs"]), len(meta["rungs"])),
            med([r["wall_s"] for r in La]), med([r["wall_s"] for r in Se]), "s", "<= 0.75", 0.75)
        row("   CPU (user+sys) of the jobs' ffmpeg/ffprobe", med([r["cpu_kids_s"] for r in La]),
            med([r["cpu_kids_s"] for r in Se]), "s")
        d("  1. median of the per-round ratios ladder/separate: %.3f" % med(
            [r["wall_s"] / x["wall_s"] for r in La for x in Se if x["round"] == r["round"]]))
        d("     per round (s): " + "; ".join(
            "r%d ladder %.3f separate %.3f" % (r["round"], r["wall_s"],
                                               next((x["wall_s"] for x in Se if x["round"] == r["round"]), float("nan")))
            for r in La))
        if Se:
            by = {}
            for r in Se:
                for j in r["jobs"]:
                    by.setdefault(j["preset"], []).append(j["dur_ms"])
            d("     single-rung jobs, duration_ms (median): " + ", ".join(
                "%s %.0f ms" % (k, med(v)) for k, v in by.items())
              + "; sum %.0f ms; each job's duration probe (state measuring) %.0f ms (median)"
              % (sum(med(v) for v in by.values()),
                 med([j.get("measuring_s") for r in Se for j in r["jobs"]]) * 1000))
        if La:
            d("     ladder job duration_ms (median) %.0f ms; time per state (median): %s"
              % (med([r["job_dur_ms"] for r in La]), ", ".join(
                  "%s %.0f ms" % (k, med([r["phases"].get(k) for r in La]) * 1000)
                  for k in La[0]["phases"])))
            d("     ladder output: %d objects, %.1f MB; renditions (bytes, average bandwidth): %s"
              % (La[0]["objects"], La[0]["bytes"] / 1e6,
                 ", ".join("%s %.1f MB %.0f kb/s" % (n, b / 1e6, bw / 1e3) for n, b, bw in La[0]["renditions"])))
            d("     peak ffmpeg RSS (VmHWM, sampled): ladder %.1f MiB, single-rung jobs (largest) %.1f MiB"
              % (mib(med([r["ff_hwm_kib"] for r in La]) * 1024), mib(med([r["ff_hwm_kib"] for r in Se]) * 1024) if Se else float("nan")))
            d("     cap-server's own CPU per run: ladder %.2f s, separate %.2f s"
              % (med([r["cpu_self_s"] for r in La]), med([r["cpu_self_s"] for r in Se])))
        d("     other programs' share of the CPUs during the timed runs (median/max): ladder %s, separate %s"
          % (others(La), others(Se)))

    if 2 in meta["parts"]:
        S3, Ba = P(2, "s3"), P(2, "bare")
        w("2. %s into S3 (the Swift s3api bed) vs the same ffmpeg argv -> local dir" % meta["ladder"])
        row("   wall: POST /exec -> done vs ffmpeg start -> exit", med([r["wall_s"] for r in S3]),
            med([r["wall_s"] for r in Ba]), "s", "<= 1.05", 1.05)
        row("   CPU (user+sys): server + its ffprobe/ffmpeg vs bare", med([r["cpu_kids_s"] + r["cpu_self_s"] for r in S3]),
            med([r["cpu_s"] for r in Ba]), "s")
        row("   time to the first segment (bucket vs local dir)", med([r["first_seg_s"] for r in S3]),
            med([r["first_seg_s"] for r in Ba]), "s")
        row("   ... to a first segment of every rendition", med([r["first_all_s"] for r in S3]),
            med([r["first_all_s"] for r in Ba]), "s")
        info("   peak temp disk, DATA/.cap-tmp (max of runs)", mib(max([r["tmp_peak"] for r in S3], default=None)),
             None, "MiB")
        info("   peak RSS cap-server (VmHWM, median of runs)", mib(med([r["srv_hwm_kib"] for r in S3]) * 1024), None, "MiB")
        info("   peak RSS ffmpeg (VmHWM, median of runs)", mib(med([r["ff_hwm_kib"] for r in S3]) * 1024),
             mib(med([r["ff_hwm_kib"] for r in Ba]) * 1024), "MiB")
        d("  2. median of the per-round ratios s3/bare: %.3f" % med(
            [r["wall_s"] / x["wall_s"] for r in S3 for x in Ba if x["round"] == r["round"]]))
        d("     per round (s): " + "; ".join(
            "r%d s3 %.3f bare %.3f" % (r["round"], r["wall_s"],
                                       next((x["wall_s"] for x in Ba if x["round"] == r["round"]), float("nan")))
            for r in S3))
        if S3:
            d("     S3 job (medians, from POST /exec): render (ffmpeg) started %.0f ms, first segment PUT done %.0f ms"
              " (GET /jobs saw segments_uploaded >= 1 at %.0f ms), ffmpeg exited %.0f ms, last PUT done %.0f ms, done %.0f ms"
              % tuple(med([r[k] for r in S3]) * 1000 for k in ("render_start_s", "first_seg_s", "first_seg_poll_s",
                                                               "ffmpeg_end_s", "last_put_end_s", "wall_s")))
            d("     time per job state (median): " + ", ".join(
                "%s %.0f ms" % (k, med([r["phases"].get(k) for r in S3]) * 1000) for k in S3[0]["phases"]))
            d("     ffmpeg start -> first segment stored: server %.0f ms (bucket) vs bare %.0f ms (local file)"
              % ((med([r["first_seg_s"] - r["render_start_s"] for r in S3 if r["first_seg_s"] and r["render_start_s"]])) * 1000,
                 med([r["first_seg_s"] for r in Ba]) * 1000))
            d("     ffmpeg exit -> job done (upload tail + playlists + master): %.0f ms; bare ffmpeg vs server's ffmpeg run: %.3f s vs %.3f s"
              % (med([r["wall_s"] - r["ffmpeg_end_s"] for r in S3 if r["ffmpeg_end_s"]]) * 1000,
                 med([r["wall_s"] for r in Ba]), med([r["ffmpeg_end_s"] - r["render_start_s"] for r in S3
                                                      if r["ffmpeg_end_s"] and r["render_start_s"]])))
            d("     objects %d (%.1f MB) in %d PUTs; bucket listing after round 1: %s objects; multipart uploads left open: %s"
              % (S3[0]["objects"], S3[0]["bytes"] / 1e6, S3[0]["puts"], next((r["listed"] for r in S3 if r["listed"] is not None), "-"),
                 meta.get("leftover_uploads", "?")))
            d("     temp disk peak per run (MiB): %s (of it the downloaded input: %s); bare package size %.1f MiB; sampled every %d ms (%s samples/run)"
              % (" ".join("%.1f" % mib(r["tmp_peak"]) for r in S3), " ".join("%.1f" % mib(r["tmp_peak_input"]) for r in S3),
                 mib(med([r["package_bytes"] for r in Ba])) or 0, meta["sample_ms"], "/".join(str(r["tmp_samples"]) for r in S3)))
            d("     backlog (GET /jobs package, polled): max %s files / %.1f MiB; ffmpeg paused: %s"
              % (max(r["backlog_files_max"] for r in S3), mib(max(r["backlog_bytes_max"] for r in S3)),
                 "yes" if any(r["paused"] for r in S3) else "never"))
            d("     cap-server RSS at start %.1f MiB; VmHWM per run (reset before each via clear_refs: %s): %s MiB"
              % (mib((meta.get("srv_rss_start_kib") or 0) * 1024), "yes" if all(r["hwm_reset"] for r in S3) else "NO (lifetime peak)",
                 " ".join("%.1f" % mib(r["srv_hwm_kib"] * 1024) for r in S3)))
            d("     ffmpeg VmHWM per run (MiB): server %s; bare %s (ru_maxrss %s)"
              % (" ".join("%.1f" % mib(r["ff_hwm_kib"] * 1024) for r in S3 if r["ff_hwm_kib"]),
                 " ".join("%.1f" % mib(r["ff_hwm_kib"] * 1024) for r in Ba if r["ff_hwm_kib"]),
                 " ".join("%.1f" % mib(r["maxrss_kib"] * 1024) for r in Ba)))
            d("     CPU user+sys (s): server's children (ffprobe + ffmpeg) %.2f + cap-server %.2f; bare ffmpeg %.2f"
              % (med([r["cpu_kids_s"] for r in S3]), med([r["cpu_self_s"] for r in S3]), med([r["cpu_s"] for r in Ba])))
            d("     the S3 bed's own CPU during the run (Swift + memcached, on the same cores, at nice 0 while ffmpeg"
              " runs at nice %d): s3 %.2f s, bare %.2f s" % (meta["bare_nice"], med([r.get("bed_cpu_s") for r in S3]),
                                                      med([r.get("bed_cpu_s") for r in Ba])))
            d("     bare side: %s; ionice %s, nice %d (the cpu class's defaults, as the server's ffmpeg runs)"
              % ("argv-bare.txt", meta["bare_ionice"], meta["bare_nice"]))
        d("     other programs' share of the CPUs during the timed runs (median/max): s3 %s, bare %s"
          % (others(S3), others(Ba)))
    w("")
    w("details")
    L.extend(det)
    lw = meta.get("log_warns", {})
    w("  server logs: %d warn/error line(s)%s" % (sum(lw.values()), (" (" + ", ".join(
        "%s x%d" % kv for kv in sorted(lw.items())) + ")") if lw else ""))
    w("  CPU busy before the rounds (sampled 0.5 s): %s" % (", ".join(meta["bg"]) or "-"))
    w("  runs made again (other programs above %.0f%% CPU): %s" % (meta["noise_max"], ", ".join(meta["redone"]) or "none"))
    for k in meta.get("bed_kills", []):
        if "job_id" not in k:
            w("  S3 bed killed from outside between jobs (found at: %s); restarted at the same endpoint" % k["found_at"])
            continue
        w("  S3 bed killed from outside during part 2 round %d: job %s failed (%s: %s) after %s segments were stored;"
          " bed restarted, the job's clean-up reached package.state %s %.1f s after the failure, %d object(s) left; run made again"
          % (k["round"], k["job_id"], (k["error"] or {}).get("code"), (k["error"] or {}).get("message"),
             (k["package"] or {}).get("segments_uploaded"), k["cleanup_state"], k["cleanup_s"], k["objects_left"]))
    if meta.get("foreign"):
        w("  other load-making programs running at the start (left alone): %d (%s)"
          % (len(meta["foreign"]), "; ".join(x.split(" ", 1)[1][:40] for x in meta["foreign"][:4])))
    w("  bench wall time %.0f s" % meta["wall_s"])
    w("")
    w("raw: %s (results.jsonl, meta.json, presets.json, argv-*.txt, cap-*.log, s3-proxy.log.gz)" % meta["out_dir"])
    return "\n".join(L)


def cleanup():
    for s in list(SERVERS):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001
            log("ladder-bench: stopping cap-server: %s" % e)
    if BED is not None:
        save_proxy_log()
        try:
            BED.stop()
        except Exception as e:  # noqa: BLE001
            log("ladder-bench: stopping the S3 bed: %s" % e)
    if TMP and os.path.isdir(TMP):
        for f in os.listdir(TMP):
            if f.startswith("cap-") and (f.endswith(".log") or f.endswith(".out")):
                try:
                    shutil.copy(os.path.join(TMP, f), OUT_DIR)
                except OSError:
                    pass
        if KEEP_TMP:
            log("ladder-bench: kept %s" % TMP)
        else:
            shutil.rmtree(TMP, ignore_errors=True)


def _sig(signum, frame):
    raise SystemExit("ladder-bench: interrupted (signal %d)" % signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGINT, _sig)
    try:
        main()
    finally:
        cleanup()
