"""Streamed inputs against downloaded ones and against the seed's sequential
pipeline, over a throttled link to S3, measured in one run on the same
machine (driven by bench/input-bench.sh, which documents the measurements
and the settings; every setting arrives here through the environment).

The S3 bed (test/integration/s3bed.py: Swift + s3api on 127.0.0.1) is
reached only through a rate-limiting TCP proxy (test/integration/tcpproxy.py,
TcpProxy.set_rate(RATE, "both")): cap-server's AWS_ENDPOINT_URL and the aws
cli's --endpoint-url are the proxy, so every pipeline sees the same link.
What this script itself does to the bed (putting the source, polling for the
first output part, checking and deleting outputs) goes to the bed directly.

Sides, one of each per round (the order turns round every round):
  stream      cap-server, preset ib-stream ("input_mode": "stream"): POST
              /exec (wait 90, then GET /jobs/{id}?wait=90 until done)
  download    the same preset with "input_mode": "download"
  sequential  aws s3 cp down, the same ffmpeg argv locally, aws s3 cp up
  D, E, U     each step of the sequential pipeline alone
Medians; ratios stream / max(D, E, U) (goal <= 1.10), stream / sequential
(goal <= 0.6), download / stream.  Time to the first output byte in the
bucket: polled on the bed (ListMultipartUploads + ListParts) from the
request, cross-checked with the bed's own log.  cap-server's peak RSS
(VmHWM, reset before each job) and peak temp disk (DATA/.cap-tmp).

Output: OUT_DIR/report.md, results.jsonl (one record per run), meta.json,
presets.json, argv-*.txt, cap-server.log, s3-proxy.log.gz.
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
import urllib.parse
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "test", "integration"))

E = os.environ
BIN = E.get("CAP_SERVER_BIN") or os.path.join(REPO, "build", "cap-server")
QUICK = E.get("QUICK", "0") == "1"
RUNS = int(E.get("RUNS", "3"))
WARMUP = int(E.get("WARMUP", "1"))
RATE = int(E.get("RATE", "25000000"))
SRC_SECONDS = float(E.get("SOURCE_SECONDS", "12"))
SRC_SIZE = E.get("SOURCE_SIZE", "1920x1080")
SRC_RATE = int(E.get("SOURCE_RATE", "30"))
SRC_BITRATE = E.get("SOURCE_BITRATE", "90M")
SRC_NOISE = int(E.get("SOURCE_NOISE", "20"))
SRC_FILE = E.get("SOURCE_FILE", "")
OUT_BITRATE = E.get("OUT_BITRATE") or SRC_BITRATE
X264_PRESET = E.get("X264_PRESET", "ultrafast")
PART_SIZE = int(E.get("PART_SIZE", "5242880"))
POOL_CPU = int(E.get("POOL_CPU", "1"))
BARE_NICE = int(E.get("BARE_NICE", "10"))
BARE_IONICE = E.get("BARE_IONICE", "best-effort:7")
POLL_MS = int(E.get("POLL_MS", "100"))
SAMPLE_MS = int(E.get("SAMPLE_MS", "50"))
QUIET_WAIT = int(E.get("QUIET_WAIT", "0"))
NOISE_MAX = float(E.get("NOISE_MAX", "15"))
NOISE_RETRIES = int(E.get("NOISE_RETRIES", "1"))
TIME_BUDGET_S = float(E.get("TIME_BUDGET_S", "900"))
OUT_DIR = E["OUT_DIR"]
KEEP_TMP = E.get("KEEP_TMP", "0") == "1"
FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
AWS = "/usr/bin/aws"
TOKEN = "input-bench-" + os.urandom(12).hex()
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count()
BUCKET = "bench"
IN_KEY = "in/src.mp4"
SIDES = ["stream", "download", "sequential", "D", "E", "U"]
T_START = time.time()
S3NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def die(msg):
    raise SystemExit("input-bench: " + msg)


def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else float("nan")


def iso_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _q(s):
    return s if re.fullmatch(r"[A-Za-z0-9_./:=+,%@-]+", s) else "'" + s.replace("'", "'\\''") + "'"


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
    """Bytes on disk (st_blocks) under root."""
    total = 0
    stack = [root]
    while stack:
        d = stack.pop()
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
                    stack.append(e.path)
                else:
                    total += st.st_blocks * 512
    return total


def self_cpu():
    """CPU seconds of this process (the TCP proxy's thread included) and of
    its waited-for children (aws, the local ffmpeg)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


# ------------------------------------------------------------------ noise ---

class Noise:
    """Share (%) of all CPUs used by programs other than the measured ones
    (cap-server and its children, the bed, this process -- with the proxy --
    and its children) between begin() and end()."""

    def __init__(self):
        self.pids = []

    def _measured(self):
        n = 0
        for p in self.pids:
            a, b = proc_stat(p)
            n += a + b
        s, c = self_cpu()
        return n + (s + c) * CLK_TCK

    def begin(self):
        self.t0, self.m0, self.p0 = time.time(), machine_ticks(), self._measured()

    def end(self):
        dt = time.time() - self.t0
        o = (machine_ticks() - self.m0 - (self._measured() - self.p0)) / CLK_TCK / (dt * NCPU) * 100
        return max(0.0, o)


NOISE = Noise()


def quiet_wait():
    """Waits up to QUIET_WAIT s (not past TIME_BUDGET_S) for the machine to
    be under 10% busy; returns the last sample (%) and the seconds waited."""
    t0 = time.time()
    deadline = min(t0 + QUIET_WAIT, T_START + TIME_BUDGET_S)
    said = False
    while True:
        b = busy_pct(0.5)
        if b < 10 or time.time() >= deadline:
            break
        if not said:
            log("  (waiting for the machine to calm down: %.0f%% CPU busy)" % b)
            said = True
    waited = time.time() - t0
    if waited > 1:
        WAITED.append(waited)
    return b, waited


WAITED = []


def before_round(label, notes):
    b, _ = quiet_wait()
    notes.append("%s %.0f%%" % (label, b))
    if b >= 25:
        log("  WARNING: %.0f%% CPU busy before %s (other programs); results will be noisy" % (b, label))


# ----------------------------------------------------------------- server ---

class Server:
    def __init__(self, data, args, env):
        self.data = data
        self.log_path = os.path.join(TMP, "cap-server.log")
        os.makedirs(data, exist_ok=True)
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("CAP_") and not k.startswith("AWS_") and k != "CAPABILITY_TOKEN"}
        e["CAPABILITY_TOKEN"] = TOKEN
        e.update(env)
        argv = [BIN, "--port", "0", "--host", "127.0.0.1", "--data-dir", data,
                "--log-file", self.log_path, "--log-level", "debug",
                "--rate-limit", "100000000", "--rate-limit-token", "100000000",
                "--ffmpeg", FFMPEG, "--ffprobe", FFPROBE, "--pool-cpu", str(POOL_CPU),
                "--shutdown-grace-ms", "5000"] + list(args)
        self.argv = argv
        self.out = open(os.path.join(TMP, "cap-server.out"), "wb")
        self.proc = subprocess.Popen(argv, env=e, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.port = None
        ready = False
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                die("cap-server exited at start: %s" % open(self.out.name).read()[-2000:])
            for line in self.lines():
                ev = line.get("event")
                if ev == "server.start":
                    self.port = int(line["port"])
                elif ev == "storage.unavailable":
                    die("cap-server: storage.unavailable: %s" % json.dumps(line))
                elif ev == "storage.ready":
                    ready = True
            if self.port and ready:
                break
            time.sleep(0.05)
        else:
            die("cap-server did not start (and find its bucket) in 30 s (log %s)" % self.log_path)
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

    def run_sync(self, body):
        """POST /exec waiting (wait 90: the longest a request may wait),
        then GET /jobs/{id}?wait=90 until the job is done; the last answer."""
        c = self.conn()
        try:
            st, j = self.request(c, "POST", "/exec", dict(body, wait=90))
            polls = 0
            if st not in (200, 202):
                j["_http"] = st
                j.setdefault("status", "failed")
                return j
            if "job_id" not in j:
                die("POST /exec %s: HTTP %d %s" % (json.dumps(body), st, json.dumps(j)[:600]))
            while j.get("status") not in ("succeeded", "failed", "canceled"):
                polls += 1
                st, j2 = self.request(c, "GET", "/jobs/%s?wait=90" % j["job_id"])
                if st != 200:
                    die("GET /jobs/%s: HTTP %d %s" % (j["job_id"], st, json.dumps(j2)[:600]))
                j = j2
            # POST answers the result itself; GET /jobs the job, with its result.
            res = j.get("result") if isinstance(j.get("result"), dict) else j
            return {"job_id": j["job_id"], "status": j["status"], "result": res, "_polls": polls}
        finally:
            c.close()

    def job(self, job_id):
        c = self.conn()
        try:
            return self.request(c, "GET", "/jobs/%s" % job_id)[1]
        finally:
            c.close()

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
                log("input-bench: cap-server still running 20 s after SIGTERM, SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def job_phases(srv, job_id):
    """Seconds spent in each job state (job.state debug lines), the render
    start (job.started phase render) and the end of ffmpeg, from the log."""
    trans, started = [], None
    for l in srv.lines():
        if l.get("job_id") != job_id:
            continue
        ev = l.get("event")
        if ev == "job.state":
            trans.append((iso_ts(l["ts"]), l["from"], l["to"]))
        elif ev == "job.started" and l.get("phase") == "render":
            started = iso_ts(l["ts"])
    spent = {}
    for (t0, _, to), (t1, _, _) in zip(trans, trans[1:]):
        spent[to] = spent.get(to, 0.0) + (t1 - t0)
    ff_end = next((t for t, f, to in trans if f == "rendering"), None)
    return {"states": spent, "render_start": started, "ffmpeg_end": ff_end}


# ---------------------------------------------------------------- sampler ---

class Sampler(threading.Thread):
    """Every SAMPLE_MS: disk use under root (du) and the VmHWM of the
    ffmpeg processes pids() names; the argv of each ffmpeg seen."""

    def __init__(self, root, pids):
        super().__init__(daemon=True)
        self.root, self.pids = root, pids
        self.stop_ev = threading.Event()
        self.peak = 0
        self.ff_hwm = {}
        self.ff_argv = {}
        self.link = []  # (time, bytes up, bytes down) through the proxy
        self.n = 0

    def run(self):
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(SAMPLE_MS / 1000.0)
        self.sample()

    def sample(self):
        self.n += 1
        if PROXY is not None:
            self.link.append((time.time(), PROXY.bytes_c2s, PROXY.bytes_s2c))
        if self.root:
            self.peak = max(self.peak, du(self.root))
        for p in self.pids():
            h = status_kib(p, "VmHWM")
            if h is not None:
                self.ff_hwm[p] = max(self.ff_hwm.get(p, 0), h)
                if p not in self.ff_argv:
                    a = cmdline(p)
                    if a and os.path.basename(a[0]).startswith("ffmpeg"):
                        self.ff_argv[p] = a

    def finish(self):
        self.stop_ev.set()
        self.join()


# ----------------------------------------------------------- bed, direct ---

def bed_xml(resp, what):
    if resp.status // 100 != 2:
        raise RuntimeError("%s: HTTP %d %s" % (what, resp.status, resp.body[:200]))
    return ET.fromstring(resp.body)


class FirstPart(threading.Thread):
    """Polls the bed directly (not through the throttled proxy), every
    POLL_MS, for the first output byte of key in the bucket: an open
    multipart upload of key with a part listed (ListMultipartUploads with
    the key as prefix, then ListParts), or the object itself (HEAD, every
    fifth poll) should it be complete before a part was seen.  .at: the time it was first
    seen; .how: "part" or "object"; .polls: requests made."""

    def __init__(self, key):
        super().__init__(daemon=True)
        self.key = key
        self.at = None
        self.how = None
        self.polls = 0
        self.errors = []
        self.stop_ev = threading.Event()

    def run(self):
        upload = None
        rounds = 0
        while not self.stop_ev.is_set() and self.at is None:
            t = time.time()
            rounds += 1
            try:
                if upload is None:
                    self.polls += 1
                    x = bed_xml(BED.request("GET", BUCKET, query=[("uploads", ""), ("prefix", self.key)]),
                                "ListMultipartUploads")
                    for u in x.iter(S3NS + "Upload"):
                        if u.findtext(S3NS + "Key") == self.key:
                            upload = u.findtext(S3NS + "UploadId")
                if upload is not None:
                    self.polls += 1
                    r = BED.request("GET", BUCKET, self.key, query=[("uploadId", upload)])
                    if r.status == 404:      # completed (or aborted) meanwhile
                        upload = None
                    else:
                        x = bed_xml(r, "ListParts")
                        if any(True for _ in x.iter(S3NS + "Part")):
                            self.at, self.how = t, "part"
                            break
                if upload is None and rounds % 5 == 0:
                    self.polls += 1
                    if BED.request("HEAD", BUCKET, self.key).status == 200:
                        self.at, self.how = t, "object"
                        break
            except Exception as e:  # noqa: BLE001 - reported, never fatal
                if len(self.errors) < 5:
                    self.errors.append(str(e)[:200])
            self.stop_ev.wait(POLL_MS / 1000.0)

    def finish(self):
        self.stop_ev.set()
        self.join()


def link_stats(samples, a, b, window=0.5):
    """From (time, bytes up, bytes down) counter samples: per direction,
    the mean rate between a and b as a share of RATE, and the share of the
    window-long slices of [a, b] in which it ran at >= 90% of RATE."""
    out = {}
    if a is None or b is None or b - a < window:
        return out
    for i, name in ((1, "up"), (2, "down")):
        pts = [(x[0], x[i]) for x in samples]

        def at(t):  # the counter at time t, interpolated
            for k in range(1, len(pts)):
                if pts[k][0] >= t:
                    (t0, v0), (t1, v1) = pts[k - 1], pts[k]
                    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
            return pts[-1][1]
        out[name + "_mean"] = (at(b) - at(a)) / (b - a) / RATE
        n = int((b - a) / window)
        full = sum(1 for k in range(n) if (at(a + (k + 1) * window) - at(a + k * window)) / window >= 0.9 * RATE)
        out[name + "_full"] = full / n if n else None
    out["seconds"] = b - a
    return out


def bed_head_size(key):
    r = BED.request("HEAD", BUCKET, key)
    if r.status != 200:
        return None
    return int(r.headers.get("content-length", "-1"))


def bed_delete(key):
    BED.request("DELETE", BUCKET, key)


def bed_open_uploads():
    x = bed_xml(BED.request("GET", BUCKET, query=[("uploads", "")]), "ListMultipartUploads")
    return [u.findtext(S3NS + "Key") for u in x.iter(S3NS + "Upload")]


def proxy_log_parts(key, t0, t1):
    """Successful UploadPart PUTs and whole-object PUTs of key in the bed's
    proxy log between t0 and t1: list of (start, end, bytes)."""
    want = "/%s/%s" % (BUCKET, key)
    out = []
    try:
        f = open(os.path.join(BED.dir, "log", "proxy.log"), errors="replace")
    except OSError:
        return out
    with f:
        for line in f:
            if not line.startswith("proxy-server: "):
                continue
            x = line[len("proxy-server: "):].split()
            if len(x) < 21 or x[0] == "-" or x[3] != "PUT":
                continue
            path, _, query = urllib.parse.unquote(x[4]).partition("?")
            try:
                st, start, end = int(x[6]), float(x[18]), float(x[19])
                nb = 0 if x[10] == "-" else int(x[10])
            except (ValueError, IndexError):
                continue
            if path == want and st < 300 and t0 - 1 <= start <= t1 + 1 and (
                    "partNumber=" in query or query == ""):
                out.append((start, end, nb))
    return out


def bed_ticks():
    if BED is None or BED.dir is None:
        return 0
    return sum(sum(proc_stat(p)) for p in BED.pids().values())


def bed_gone():
    """Names of the bed's processes that are gone (killed from outside)."""
    gone = []
    if BED is None or BED.dir is None:
        return gone
    for name, pid in BED.pids().items():
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    gone.append(name)
        except OSError:
            gone.append(name)
    return gone


# ------------------------------------------------------------------- runs ---

RESULTS = []
REDONE = []
BUDGET = {"planned": 0, "kept": 0, "elapsed": []}


def emit(rec):
    RESULTS.append(rec)
    with open(os.path.join(OUT_DIR, "results.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")


class Meter:
    """What a run cost: wall time, the share of the CPUs other programs
    used, CPU of cap-server (self, children), of the bed, of this process
    (the proxy's thread) and its children (aws, local ffmpeg), bytes over
    the throttled link each way."""

    def begin(self):
        NOISE.begin()
        self.b0 = bed_ticks()
        self.s0 = SRV.ticks() if SRV else (0, 0)
        self.c0 = self_cpu()
        self.x0 = (PROXY.bytes_c2s, PROXY.bytes_s2c)
        self.t0 = time.time()
        return self.t0

    def end(self, rec):
        self.t1 = time.time()
        rec["wall_s"] = self.t1 - self.t0
        rec["others"] = round(NOISE.end(), 1)
        rec["bed_cpu_s"] = (bed_ticks() - self.b0) / CLK_TCK
        s1 = SRV.ticks() if SRV else (0, 0)
        rec["srv_cpu_s"] = (s1[0] - self.s0[0]) / CLK_TCK
        rec["srv_kids_cpu_s"] = (s1[1] - self.s0[1]) / CLK_TCK
        c1 = self_cpu()
        rec["driver_cpu_s"] = c1[0] - self.c0[0]
        rec["local_kids_cpu_s"] = c1[1] - self.c0[1]
        rec["link_up"] = PROXY.bytes_c2s - self.x0[0]
        rec["link_down"] = PROXY.bytes_s2c - self.x0[1]
        return rec


def timed(fn, label):
    """Runs fn() (which returns a record) until other programs used at most
    NOISE_MAX % of the CPUs meanwhile: NOISE_RETRIES more times at most, and
    only while the run, with what is still planned (estimated from the runs
    so far), fits in TIME_BUDGET_S; returns the record kept."""
    attempt = 0
    while True:
        if attempt:
            quiet_wait()
        t = time.time()
        rec = fn()
        el = time.time() - t
        BUDGET["elapsed"].append(el)
        rec["attempt"] = attempt
        over = rec["others"] > NOISE_MAX
        mean = statistics.mean(BUDGET["elapsed"])
        later = BUDGET["planned"] - BUDGET["kept"] - 1
        est = time.time() - T_START + el + later * mean
        again = over and attempt < NOISE_RETRIES and est <= TIME_BUDGET_S
        log("  %-30s %7.3f s (other programs: %.0f%% CPU)%s" % (
            label, rec["wall_s"], rec["others"], ", made again" if again else (
                ", kept: no time left to make it again (TIME_BUDGET_S)"
                if over and attempt < NOISE_RETRIES else "")))
        if not again:
            BUDGET["kept"] += 1
            return rec
        REDONE.append(label)
        rec["discarded"] = True
        emit(rec)
        attempt += 1


def run_nice_argv(argv):
    """argv at the cpu class's nice/ionice (BARE_NICE, BARE_IONICE), fd 4
    (the server's -progress pipe:4) on /dev/null."""
    cls, _, lvl = BARE_IONICE.partition(":")
    pre = []
    if cls and cls != "none":
        pre = ["ionice", "-c", {"idle": "3", "best-effort": "2", "realtime": "1"}[cls]] + (
            ["-n", lvl] if lvl and cls != "idle" else [])
    if BARE_NICE:
        pre += ["nice", "-n", str(BARE_NICE)]
    return ["/bin/bash", "-c", 'exec 4>/dev/null; exec "$@"', "local-ffmpeg"] + pre + argv


def run_proc(argv, env=None, what="", pids=None):
    """Runs argv, waits; (seconds, ru_maxrss KiB, stderr); dies on failure."""
    errf = tempfile.TemporaryFile(mode="w+", dir=TMP)
    t0 = time.time()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
                         env=env)
    if pids is not None:
        pids.append(p.pid)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.time() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    errf.seek(0)
    err = errf.read()
    errf.close()
    if p.returncode != 0:
        gone = bed_gone()
        die("%s exited %d: %s%s" % (what or argv[0], p.returncode, err[-1500:],
                                    ("\n  the S3 bed's processes are gone: %s (killed from outside?)"
                                     % ", ".join(gone)) if gone else ""))
    return dt, ru.ru_maxrss, err


def aws_cp(src, dst):
    """aws s3 cp (awscli v2, its default transfer settings: 8 MiB parts,
    10 at once) through the throttled proxy."""
    argv = [AWS, "--endpoint-url", PROXY.endpoint, "--no-cli-pager", "s3", "cp",
            "--only-show-errors", src, dst]
    return run_proc(argv, env=AWS_ENV, what="aws s3 cp %s %s" % (src, dst))[0]


def local_ffmpeg(inp, out, pids=None):
    try:
        os.unlink(out)
    except OSError:
        pass
    dt, maxrss, _ = run_proc(run_nice_argv(local_argv(inp, out)), what="local ffmpeg", pids=pids)
    return dt, maxrss


# ------------------------------------------------------------------- main ---

TMP = None
BED = None
PROXY = None
SRV = None
AWS_ENV = None
PRESET = None
FORMATS = None


def preset_args():
    return ["-map", "0:v:0", "-map", "0:a:0?", "-c:v", "libx264", "-preset", X264_PRESET,
            "-b:v", OUT_BITRATE, "-maxrate", OUT_BITRATE, "-bufsize", OUT_BITRATE,
            "-pix_fmt", "yuv420p", "-c:a", "copy"]


def local_argv(inp, out):
    """What cap-server runs for the preset (cap_jobcmd_render() in
    src/jobs/jobcmd.c: the same words in the same order, threads 0 as the
    cpu class has), with a local input and output file."""
    return [FFMPEG, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
            "-progress", "pipe:4", "-y", "-protocol_whitelist", "file", "-format_whitelist", FORMATS,
            "-i", "file:" + inp] + PRESET["args"] + ["-f", PRESET["format"], "file:" + out]


def server_input_formats():
    h = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
    m = re.search(r"--input-formats VALUE.*?\[([^\]]*)\]", h, re.S)
    if not m:
        die("no --input-formats default in %s --help" % BIN)
    return m.group(1)


def check_server_argv(got, mode):
    """The server's ffmpeg argv must be the local one but for the input
    (the loopback URL or file:/dev/fd/3), its protocol allow-list and the
    output (pipe:1)."""
    want = local_argv("IN", "OUT")
    norm = []
    for i, a in enumerate(got):
        prev = got[i - 1] if i else ""
        if prev == "-i":
            a = "file:IN"
        elif prev == "-protocol_whitelist":
            a = "file"
        elif i == len(got) - 1:
            a = "file:OUT"
        norm.append(a)
    if norm != want:
        diff = [(i, g, w) for i, (g, w) in enumerate(zip(norm, want)) if g != w][:5]
        die("%s: the ffmpeg cap-server ran differs from the local argv (len %d vs %d; first differences "
            "(index, ran, local): %s)\n ran: %s" % (mode, len(norm), len(want), diff, " ".join(got)))
    inp = got[got.index("-i") + 1]
    if mode == "stream" and not inp.startswith("http://127.0.0.1:"):
        die("stream: the server's ffmpeg reads %s, not the loopback endpoint" % inp)
    if mode == "download" and inp != "file:/dev/fd/3":
        die("download: the server's ffmpeg reads %s, not the downloaded file" % inp)


def snapshot_binary():
    """Copies cap-server (and cap-sandbox beside it) into TMP/bin, so that
    one build serves the whole run even if the tree is rebuilt meanwhile."""
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
    return "%s, built %s, sha256 %s" % (
        src, datetime.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M:%S"), h)


def make_source(path):
    """SOURCE_SECONDS of testsrc2 + temporal noise (so that it does not
    compress away) + a sine, x264 ultrafast (CAVLC, no deblocking: cheap to
    decode) at SOURCE_BITRATE, AAC, MP4 with the moov first (+faststart: a
    streamed reader needs no seek to the end)."""
    r = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc2=size=%s:rate=%d:duration=%s,noise=alls=%d:allf=t"
                        % (SRC_SIZE, SRC_RATE, SRC_SECONDS, SRC_NOISE),
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=%s" % SRC_SECONDS,
                        "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-preset", "ultrafast",
                        "-b:v", SRC_BITRATE, "-maxrate", SRC_BITRATE, "-bufsize", SRC_BITRATE,
                        "-g", str(2 * SRC_RATE), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
                        "-shortest", "-movflags", "+faststart", path], capture_output=True, text=True)
    if r.returncode != 0:
        die("making the source failed: " + r.stderr[-1000:])


def probe(path):
    pr = json.loads(subprocess.run([FFPROBE, "-v", "error", "-show_entries",
                                    "format=duration,bit_rate,format_name:stream=codec_type,codec_name,width,height",
                                    "-of", "json", path], capture_output=True, text=True).stdout)
    vs = next(s for s in pr["streams"] if s["codec_type"] == "video")
    return {"width": vs["width"], "height": vs["height"], "vcodec": vs["codec_name"],
            "audio": any(s["codec_type"] == "audio" for s in pr["streams"]),
            "duration": float(pr["format"]["duration"]), "bit_rate": int(pr["format"].get("bit_rate") or 0),
            "format": pr["format"]["format_name"], "bytes": os.path.getsize(path)}


def main():
    global TMP, BED, PROXY, SRV, AWS_ENV, PRESET, FORMATS
    os.makedirs(OUT_DIR, exist_ok=True)
    open(os.path.join(OUT_DIR, "results.jsonl"), "w").close()
    TMP = tempfile.mkdtemp(prefix="input-bench.")
    server_desc = snapshot_binary()
    log("input-bench: cap-server %s (copied for this run)" % server_desc)
    FORMATS = server_input_formats()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "runs": RUNS, "warmup": WARMUP, "quick": QUICK, "rate": RATE, "part_size": PART_SIZE,
            "pool_cpu": POOL_CPU, "server": server_desc, "poll_ms": POLL_MS, "sample_ms": SAMPLE_MS,
            "version": subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip(),
            "ffmpeg": subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.split("\n")[0],
            "aws": subprocess.run([AWS, "--version"], capture_output=True, text=True).stdout.strip(),
            "cpu": next((l.split(": ", 1)[1].strip() for l in open("/proc/cpuinfo")
                         if l.startswith("model name")), "?"),
            "ncpu": NCPU, "bare_nice": BARE_NICE, "bare_ionice": BARE_IONICE, "noise_max": NOISE_MAX,
            "out_dir": OUT_DIR,
            "git": subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %s"], capture_output=True,
                                  text=True).stdout.strip()[:80]}
    foreign = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            c = " ".join(cmdline(int(p)) or [])
            if c and ("swift-proxy-server" in c or c.startswith("memcached")
                      or comm(int(p)) in ("ffmpeg", "ffprobe", "x264", "cc1", "ctest")):
                foreign.append("%s %s" % (p, c[:90]))
    meta["foreign"] = foreign
    if foreign:
        log("input-bench: other programs that load the machine are running (not ours, left alone): %d" % len(foreign))

    # ---- the source
    src = os.path.join(TMP, "src.mp4")
    t = time.time()
    if SRC_FILE:
        shutil.copy(SRC_FILE, src)
        meta["source_made"] = "given: %s" % SRC_FILE
    else:
        log("input-bench: making the source: %s %d fps %s s testsrc2 + noise %d, x264 ultrafast %s, AAC"
            % (SRC_SIZE, SRC_RATE, SRC_SECONDS, SRC_NOISE, SRC_BITRATE))
        make_source(src)
        meta["source_made"] = "testsrc2 + noise alls=%d, x264 ultrafast %s, %.0f s to make" % (
            SRC_NOISE, SRC_BITRATE, time.time() - t)
    meta["source"] = probe(src)
    s = meta["source"]
    log("input-bench: source %dx%d %s %.1f s, %.1f MB, %.1f Mb/s"
        % (s["width"], s["height"], s["vcodec"], s["duration"], s["bytes"] / 1e6, s["bit_rate"] / 1e6))

    # ---- presets
    PRESET = {"description": "input-bench: x264 %s at %s, audio copied, MPEG-TS (streamable)"
                             % (X264_PRESET, OUT_BITRATE),
              "class": "cpu", "format": "mpegts", "ext": "ts", "streamable": True,
              "encoders": ["libx264"], "timeout_s": 3600, "args": preset_args()}
    presets = {"ib-stream": dict(PRESET, input_mode="stream"),
               "ib-download": dict(PRESET, input_mode="download")}
    ppath = os.path.join(TMP, "presets.json")
    json.dump(presets, open(ppath, "w"), indent=1)
    shutil.copy(ppath, os.path.join(OUT_DIR, "presets.json"))
    with open(os.path.join(OUT_DIR, "argv-local.txt"), "w") as f:
        f.write(" ".join(_q(x) for x in local_argv(os.path.join(TMP, "in.mp4"), os.path.join(TMP, "out.ts")))
                + "\n")
    meta["preset"] = PRESET

    # ---- the reference output (untimed): its size, and the file U uploads
    ref = os.path.join(TMP, "ref.ts")
    log("input-bench: the reference encode (local, untimed)")
    dt, _ = local_ffmpeg(src, ref)
    meta["ref_bytes"] = os.path.getsize(ref)
    meta["ref_encode_s"] = round(dt, 3)
    log("input-bench: output %.1f MB (%.2f x the input), first encode %.2f s"
        % (meta["ref_bytes"] / 1e6, meta["ref_bytes"] / s["bytes"], dt))

    # ---- bed, proxy, server
    from s3bed import S3Bed
    from tcpproxy import TcpProxy
    if not hasattr(TcpProxy, "set_rate"):
        die("test/integration/tcpproxy.py has no TcpProxy.set_rate")
    log("input-bench: starting the S3 bed (test/integration/s3bed.py)")
    BED = S3Bed().start()
    meta["bed_start_s"] = round(BED.start_seconds, 1)
    BED.make_bucket(BUCKET)
    BED.put_object(BUCKET, IN_KEY, path=src)
    PROXY = TcpProxy(BED.port).start()
    PROXY.set_rate(RATE, direction="both")
    AWS_ENV = BED._aws_env(None, None, None)
    env = BED.env()
    env["AWS_ENDPOINT_URL"] = PROXY.endpoint
    d = os.path.join(TMP, "data")
    SRV = Server(d, ["--presets", ppath, "--storage", "s3://%s" % BUCKET, "--part-size", str(PART_SIZE),
                     "--orphan-sweep-s", "0"], env)
    meta["server_argv"] = " ".join(_q(a) for a in SRV.argv)
    NOISE.pids = [SRV.pid] + list(BED.pids().values())
    log("input-bench: cap-server pid %d port %d; bed %s, throttled proxy %s at %d B/s each way"
        % (SRV.pid, SRV.port, BED.endpoint, PROXY.endpoint, RATE))
    tmp_root = d  # the whole data dir (with S3 storage only .cap-tmp is used)
    n = [0]
    seen_argv = {}

    def cap_side(mode, r, tag):
        n[0] += 1
        key = "out/%s-%s%d-%d.ts" % (mode, tag, r, n[0])
        reset = SRV.reset_hwm()
        smp = Sampler(tmp_root, SRV.ffmpeg_kids)
        fp = FirstPart(key)
        m = Meter()
        smp.start()
        t0 = m.begin()
        fp.start()
        j = SRV.run_sync({"input_key": IN_KEY, "output_key": key, "preset": "ib-" + mode})
        rec = m.end({"side": mode, "round": r, "tag": tag, "key": key})
        smp.finish()
        fp.finish()
        hwm = status_kib(SRV.pid, "VmHWM")
        if j.get("status") != "succeeded":
            gone = bed_gone()
            die("%s job %s: %s%s" % (mode, j.get("job_id"), json.dumps(j)[:1500],
                                      ("\n  the S3 bed's processes are gone: %s (killed from outside?)"
                                       % ", ".join(gone)) if gone else ""))
        res = j["result"]
        inp = SRV.job(j["job_id"]).get("input") or {}
        if inp.get("mode") != mode:
            die("%s job %s read its input in mode %s" % (mode, j["job_id"], inp.get("mode")))
        size = bed_head_size(key)
        if size is None or size != res.get("bytes"):
            die("%s job %s: result bytes %s, the bucket has %s" % (mode, j["job_id"], res.get("bytes"), size))
        if abs(size - meta["ref_bytes"]) > 0.05 * meta["ref_bytes"]:
            die("%s job %s: output %d bytes, the local encode made %d" % (mode, j["job_id"], size, meta["ref_bytes"]))
        if mode not in seen_argv:
            if not smp.ff_argv:
                die("%s: no ffmpeg child of cap-server seen by the sampler (SAMPLE_MS %d)" % (mode, SAMPLE_MS))
            got = list(smp.ff_argv.values())[0]
            check_server_argv(got, mode)
            seen_argv[mode] = got
            with open(os.path.join(OUT_DIR, "argv-server-%s.txt" % mode), "w") as f:
                f.write(" ".join(_q(x) for x in got) + "\n")
        ph = job_phases(SRV, j["job_id"])
        time.sleep(0.3)  # the bed logs a request once it has answered it
        puts = proxy_log_parts(key, t0, m.t1)
        bed_delete(key)
        rel = lambda x: (x - t0) if x else None
        rec.update({"job_id": j["job_id"], "bytes": size, "parts": res.get("parts"), "input": inp,
                    "polls_jobs": j.get("_polls"), "first_byte_s": rel(fp.at), "first_byte_how": fp.how,
                    "first_byte_polls": fp.polls, "first_byte_errors": fp.errors,
                    "first_part_log_s": rel(min((p[1] for p in puts), default=None)),
                    "last_part_log_s": rel(max((p[1] for p in puts), default=None)),
                    "render_start_s": rel(ph["render_start"]), "ffmpeg_end_s": rel(ph["ffmpeg_end"]),
                    "phases": ph["states"], "tmp_peak": smp.peak, "tmp_samples": smp.n,
                    "link_render": link_stats(smp.link, ph["render_start"], ph["ffmpeg_end"]),
                    "link_before": link_stats(smp.link, t0, ph["render_start"]),
                    "srv_hwm_kib": hwm, "hwm_reset": reset,
                    "ff_hwm_kib": max(smp.ff_hwm.values()) if smp.ff_hwm else None})
        return rec

    def seq_side(r, tag):
        """The seed's pipeline: aws s3 cp down, ffmpeg, aws s3 cp up."""
        n[0] += 1
        key = "out/seq-%s%d-%d.ts" % (tag, r, n[0])
        wd = os.path.join(TMP, "seq")
        shutil.rmtree(wd, ignore_errors=True)
        os.makedirs(wd)
        inp, out = os.path.join(wd, "in.mp4"), os.path.join(wd, "out.ts")
        fp = FirstPart(key)
        m = Meter()
        t0 = m.begin()
        d_s = aws_cp("s3://%s/%s" % (BUCKET, IN_KEY), inp)
        e_s, maxrss = local_ffmpeg(inp, out)
        fp.start()  # nothing can be in the bucket before the upload starts
        u_s = aws_cp(out, "s3://%s/%s" % (BUCKET, key))
        rec = m.end({"side": "sequential", "round": r, "tag": tag, "key": key})
        fp.finish()
        size = bed_head_size(key)
        if size != os.path.getsize(out):
            die("sequential: uploaded %s bytes, the bucket has %s" % (os.path.getsize(out), size))
        if os.path.getsize(inp) != s["bytes"]:
            die("sequential: downloaded %d bytes of %d" % (os.path.getsize(inp), s["bytes"]))
        time.sleep(0.3)
        puts = proxy_log_parts(key, t0, m.t1)
        disk = os.path.getsize(inp) + os.path.getsize(out)
        bed_delete(key)
        shutil.rmtree(wd, ignore_errors=True)
        rec.update({"d_s": d_s, "e_s": e_s, "u_s": u_s, "bytes": size, "local_disk": disk,
                    "ff_maxrss_kib": maxrss,
                    "first_byte_s": (fp.at - t0) if fp.at else None, "first_byte_how": fp.how,
                    "first_byte_polls": fp.polls, "first_byte_errors": fp.errors,
                    "first_part_log_s": (min(p[1] for p in puts) - t0) if puts else None})
        return rec

    def d_side(r, tag):
        out = os.path.join(TMP, "d-in.mp4")
        m = Meter()
        m.begin()
        aws_cp("s3://%s/%s" % (BUCKET, IN_KEY), out)
        rec = m.end({"side": "D", "round": r, "tag": tag})
        if os.path.getsize(out) != s["bytes"]:
            die("D: downloaded %d bytes of %d" % (os.path.getsize(out), s["bytes"]))
        os.unlink(out)
        return rec

    def e_side(r, tag):
        out = os.path.join(TMP, "e-out.ts")
        m = Meter()
        pids = []
        m.begin()
        _, maxrss = local_ffmpeg(src, out, pids)
        rec = m.end({"side": "E", "round": r, "tag": tag, "ff_maxrss_kib": maxrss,
                     "bytes": os.path.getsize(out)})
        os.unlink(out)
        return rec

    def u_side(r, tag):
        n[0] += 1
        key = "out/u-%s%d-%d.ts" % (tag, r, n[0])
        m = Meter()
        m.begin()
        aws_cp(ref, "s3://%s/%s" % (BUCKET, key))
        rec = m.end({"side": "U", "round": r, "tag": tag, "bytes": meta["ref_bytes"]})
        if bed_head_size(key) != meta["ref_bytes"]:
            die("U: the bucket has %s bytes of %d" % (bed_head_size(key), meta["ref_bytes"]))
        bed_delete(key)
        return rec

    fns = {"stream": lambda r, t: cap_side("stream", r, t), "download": lambda r, t: cap_side("download", r, t),
           "sequential": seq_side, "D": d_side, "E": e_side, "U": u_side}
    BUDGET["planned"] = RUNS * len(SIDES)
    bg = []
    for w in range(WARMUP):
        log("input-bench: warm-up %d/%d (a streamed job and an aws s3 cp down, not timed)" % (w + 1, WARMUP))
        cap_side("stream", 0, "w")
        d_side(0, "w")
    log("")
    log("== %d round(s): %s (the order turns round every round); link %.0f Mbit/s each way =="
        % (RUNS, ", ".join(SIDES), RATE * 8 / 1e6))
    for r in range(1, RUNS + 1):
        before_round("round %d" % r, bg)
        order = SIDES if r % 2 else list(reversed(SIDES))
        for side in order:
            os.sync()
            rec = timed(lambda: fns[side](r, "t"), "round %d/%d: %s" % (r, RUNS, side))
            emit(rec)

    meta["leftover_uploads"] = bed_open_uploads()
    meta["srv_rss_start_kib"] = SRV.rss_start_kib
    meta["proxy"] = PROXY.summary()
    meta["proxy"].pop("faulted", None)
    meta["bg"] = bg
    meta["redone"] = REDONE
    meta["waited"] = WAITED
    meta["quiet_wait"] = QUIET_WAIT
    lw = {}
    for line in open(SRV.log_path, errors="replace"):
        if '"level":"warn"' in line or '"level":"error"' in line:
            try:
                ev = json.loads(line).get("event", "?")
            except ValueError:
                ev = "?"
            lw[ev] = lw.get(ev, 0) + 1
    meta["log_warns"] = lw
    meta["wall_s"] = round(time.time() - T_START, 1)
    json.dump(meta, open(os.path.join(OUT_DIR, "meta.json"), "w"), indent=1)
    text = report(RESULTS, meta)
    with open(os.path.join(OUT_DIR, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)


# ----------------------------------------------------------------- report ---

def report(recs, meta):
    recs = [r for r in recs if not r.get("discarded") and r.get("tag") == "t"]
    P = lambda side: [r for r in recs if r["side"] == side]
    M = lambda side, k="wall_s": med([r.get(k) for r in P(side)])
    L = []
    w = L.append
    s = meta["source"]
    mib = lambda b: b / 1048576.0 if b is not None else float("nan")
    f3 = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else "%.3f" % x
    f2 = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else "%.2f" % x
    div = lambda a, b: a / b if a == a and b == b and b else float("nan")

    st, dl, sq = M("stream"), M("download"), M("sequential")
    D, Ee, U = M("D"), M("E"), M("U")
    ideal = max(D, Ee, U) if all(x == x for x in (D, Ee, U)) else float("nan")
    link_d, link_u = s["bytes"] / meta["rate"], meta["ref_bytes"] / meta["rate"]
    floor = max(link_d, Ee, link_u) if Ee == Ee else float("nan")
    w("# cap-server streamed inputs over a throttled link (input-bench)")
    w("")
    w("%s; %d round(s)%s" % (meta["date"], meta["runs"], " — **QUICK=1: smoke run, numbers are rough**"
                            if meta["quick"] else ""))
    w("")
    w("- machine: %d CPU(s) %s; %s; %s" % (meta["ncpu"], meta["cpu"], " ".join(meta["ffmpeg"].split()[:3]),
                                           meta["aws"].split()[0]))
    w("- server: %s (%s), pool_cpu %d, --part-size %d, parts in flight: the default"
      % (meta["server"], meta["version"], meta["pool_cpu"], meta["part_size"]))
    w("- tree: %s" % meta.get("git", "?"))
    w("- link: every S3 request of cap-server and of the aws cli goes through test/integration/tcpproxy.py"
      " with set_rate(%d, \"both\"): %.0f Mbit/s each way, shared by all connections; the S3 bed is Swift +"
      " s3api on the same machine" % (meta["rate"], meta["rate"] * 8 / 1e6))
    w("- input: %dx%d %.1f s %s + AAC in MP4 (+faststart), %.1f MB = %.1f Mb/s (%s)"
      % (s["width"], s["height"], s["duration"], s["vcodec"], s["bytes"] / 1e6, s["bit_rate"] / 1e6,
         meta["source_made"]))
    w("- preset: %s; output %.1f MB (%.2f x the input)" % (meta["preset"]["description"],
                                                          meta["ref_bytes"] / 1e6, meta["ref_bytes"] / s["bytes"]))
    w("  - args: `%s`" % " ".join(meta["preset"]["args"]))
    w("  - ib-stream has \"input_mode\": \"stream\", ib-download \"input_mode\": \"download\"; one cap-server")
    w("")
    w("## Results (medians of %d run%s)" % (meta["runs"], "s" if meta["runs"] != 1 else ""))
    w("")
    w("| measurement | median | per run |")
    w("|---|---:|---|")

    def per(side, k="wall_s"):
        return " ".join(f3(r.get(k)) for r in P(side))

    w("| cap-server, streamed input (POST /exec → result) | %s s | %s |" % (f3(st), per("stream")))
    w("| cap-server, downloaded input | %s s | %s |" % (f3(dl), per("download")))
    w("| sequential: aws s3 cp down, ffmpeg, aws s3 cp up | %s s | %s |" % (f3(sq), per("sequential")))
    w("| ... of it: down / ffmpeg / up | %s / %s / %s s | |" % (f3(M("sequential", "d_s")), f3(M("sequential", "e_s")),
                                                            f3(M("sequential", "u_s"))))
    w("| D alone: aws s3 cp down | %s s | %s |" % (f3(D), per("D")))
    w("| E alone: ffmpeg local → local, the preset's argv | %s s | %s |" % (f3(Ee), per("E")))
    w("| U alone: aws s3 cp up of the output | %s s | %s |" % (f3(U), per("U")))
    w("| max(D, E, U) (the ideal) | %s s | |" % f3(ideal))
    w("| D + E + U | %s s | |" % f3(D + Ee + U))
    w("| the link alone: input / RATE, output / RATE | %s / %s s | |" % (f3(link_d), f3(link_u)))
    w("")
    w("| ratio | value | goal | verdict |")
    w("|---|---:|---:|---|")

    def ratio(label, a, b, goal=None):
        x = div(a, b)
        v = "(info)" if goal is None else ("-" if x != x else ("met" if x <= goal else "MISSED"))
        w("| %s | %s | %s | %s |" % (label, f3(x), "≤ %.2f" % goal if goal else "", v))

    ratio("streamed / max(D, E, U)", st, ideal, 1.10)
    ratio("streamed / sequential", st, sq, 0.60)
    ratio("download / streamed", dl, st)
    ratio("download / sequential", dl, sq)
    ratio("sequential / (D + E + U)", sq, D + Ee + U)
    ratio("streamed / max(input / RATE, E, output / RATE)", st, floor)
    w("")
    w("D and U are what the aws cli takes (its start-up, ~1 s of Python, included); the link alone would take"
      " input / RATE and output / RATE. The last ratio holds streamed against that floor instead.")
    w("")
    # per-round ratios (each against the same round's baselines)
    rr_ideal, rr_seq = [], []
    for r in P("stream"):
        same = {x["side"]: x["wall_s"] for x in recs if x["round"] == r["round"]}
        if all(k in same for k in ("D", "E", "U")):
            rr_ideal.append(r["wall_s"] / max(same["D"], same["E"], same["U"]))
        if "sequential" in same:
            rr_seq.append(r["wall_s"] / same["sequential"])
    w("Median of the per-round ratios: streamed / max(D, E, U) %s (%s); streamed / sequential %s (%s)."
      % (f3(med(rr_ideal)), " ".join(f3(x) for x in rr_ideal), f3(med(rr_seq)), " ".join(f3(x) for x in rr_seq)))
    w("")
    C = {sd: [r["wall_s"] for r in P(sd) if r["others"] <= meta["noise_max"]] for sd in SIDES}
    cm = {sd: med(v) for sd, v in C.items()}
    c_ideal = max(cm["D"], cm["E"], cm["U"])
    w("Only the runs during which other programs used at most %.0f%% of the CPUs: %s; streamed / max(D, E, U)"
      " %s, streamed / sequential %s, download / streamed %s."
      % (meta["noise_max"], ", ".join("%s %s s (%d)" % (sd, f3(cm[sd]), len(C[sd])) for sd in SIDES),
         f3(div(cm["stream"], c_ideal)), f3(div(cm["stream"], cm["sequential"])),
         f3(div(cm["download"], cm["stream"]))))
    w("")
    spread = max(D, Ee, U) / min(D, Ee, U) if all(x == x and x for x in (D, Ee, U)) else float("nan")
    w("How comparable D, E and U came out: E / D = %s, U / D = %s; max / min = %s%s"
      % (f2(div(Ee, D)), f2(div(U, D)), f2(spread),
         "" if spread == spread and spread <= 1.3 else
         " — **not comparable** (above 1.3): the input or the preset needs calibrating for this machine"
         " (or other programs slowed some runs: see their share below)"
         + ("; with QUICK=1 the short input makes the aws cli's start-up weigh more" if meta["quick"] else "")))
    w("")
    w("## Where the jobs' time goes")
    w("")
    cpu_all = lambda r: r["srv_kids_cpu_s"] + r["srv_cpu_s"] + r["bed_cpu_s"] + r["driver_cpu_s"] + r["local_kids_cpu_s"]
    w("| | streamed | downloaded | E alone |")
    w("|---|---:|---:|---:|")
    w("| ffmpeg's run (job state rendering; E: the whole run) | %s s | %s s | %s s |"
      % (f3(med([r["phases"].get("rendering") for r in P("stream")])),
         f3(med([r["phases"].get("rendering") for r in P("download")])), f3(Ee)))
    w("| before ffmpeg: the input's download (fetching) + the duration probe (measuring) | %s s | %s s | |"
      % tuple(f3(med([r["phases"].get("fetching", 0) + r["phases"].get("measuring", 0) for r in P(sd)]))
              for sd in ("stream", "download")))
    w("| after ffmpeg: the last parts and the completion (storing) | %s s | %s s | |"
      % tuple(f3(med([r["phases"].get("storing") for r in P(sd)])) for sd in ("stream", "download")))
    w("| CPU of everything the run used (ffmpeg, ffprobe, cap-server, the bed, the proxy) | %s s | %s s | %s s |"
      % tuple(f3(med([cpu_all(r) for r in P(sd)])) for sd in ("stream", "download", "E")))
    w("| ... over %d cores: the CPU floor | %s s | %s s | %s s |"
      % ((meta["ncpu"],) + tuple(f3(med([cpu_all(r) for r in P(sd)]) / meta["ncpu"]) for sd in ("stream", "download", "E"))))
    w("| wall / CPU floor | %s | %s | %s |"
      % tuple(f3(med([r["wall_s"] / (cpu_all(r) / meta["ncpu"]) for r in P(sd)])) for sd in ("stream", "download", "E")))

    def lk(side, part, k):
        return med([(r.get(part) or {}).get(k) for r in P(side)]) * 100

    w("| the link while ffmpeg ran: down, up (mean rate; share of 0.5 s slices at >= 90%% of RATE)"
      " | %.0f%%, %.0f%% (%.0f%%, %.0f%%) | %.0f%%, %.0f%% (%.0f%%, %.0f%%) | |"
      % tuple(lk(sd, "link_render", k) for sd in ("stream", "download")
              for k in ("down_mean", "up_mean", "down_full", "up_full")))
    w("| the link down before ffmpeg (download: the input's fetch) | | %.0f%% (%.0f%%) | |"
      % (lk("download", "link_before", "down_mean"), lk("download", "link_before", "down_full")))
    w("")
    w("The CPU floor is the shortest the run could take on %d cores doing the same work; a wall time near it"
      " means the run was CPU-bound (here the bed and the proxy take their share of the cores, see Caveats)."
      % meta["ncpu"])
    w("")
    w("## Time to the first output byte in the bucket")
    w("")
    w("Polled on the bed directly (ListMultipartUploads + ListParts every %d ms: a part listed, i.e. the"
      " first part's upload is complete), seconds from the request (for the sequential pipeline from its"
      " start; its polling starts with the upload). In brackets: the end of the first part's PUT in the"
      " bed's own log." % meta["poll_ms"])
    w("")
    w("| pipeline | first output byte | (bed log) | ffmpeg started | per run |")
    w("|---|---:|---:|---:|---|")
    for side, label in (("stream", "cap-server, streamed"), ("download", "cap-server, downloaded"),
                        ("sequential", "sequential")):
        w("| %s | %s s | (%s s) | %s | %s |" % (
            label, f3(M(side, "first_byte_s")), f3(M(side, "first_part_log_s")),
            (f3(M(side, "render_start_s")) + " s") if side != "sequential" else
            f3(M(side, "d_s")) + " s", per(side, "first_byte_s")))
    w("")
    w("## cap-server's memory and temp disk")
    w("")
    w("| | streamed | downloaded | sequential (local files) |")
    w("|---|---:|---:|---:|")
    w("| peak RSS of cap-server (VmHWM, reset before each job; median) | %.1f MiB | %.1f MiB | |"
      % (mib(M("stream", "srv_hwm_kib") * 1024), mib(M("download", "srv_hwm_kib") * 1024)))
    w("| peak temp disk under cap-server's data dir (max of runs; sampled every %d ms) | %.1f MiB | %.1f MiB | %.1f MiB |"
      % (meta["sample_ms"], mib(max([r["tmp_peak"] for r in P("stream")], default=None)),
         mib(max([r["tmp_peak"] for r in P("download")], default=None)),
         mib(max([r["local_disk"] for r in P("sequential")], default=None))))
    w("| peak RSS of ffmpeg (VmHWM sampled / ru_maxrss; median) | %.1f MiB | %.1f MiB | %.1f MiB |"
      % (mib(M("stream", "ff_hwm_kib") * 1024), mib(M("download", "ff_hwm_kib") * 1024),
         mib(M("sequential", "ff_maxrss_kib") * 1024)))
    w("")
    w("cap-server's RSS at start %.1f MiB." % mib((meta.get("srv_rss_start_kib") or 0) * 1024))
    w("")
    w("## Caveats")
    w("")
    cores = lambda side, k: med([r[k] / r["wall_s"] for r in P(side)])
    w("- Everything runs on these %d cores: the S3 bed (Swift, Python) and the throttling proxy (a thread of"
      " this script) are local here, where a real S3 is remote. During the streamed runs the bed used %.2f"
      " and the proxy/script %.2f cores (median), CPU that the server's ffmpeg (nice %d) yields to; E alone"
      " had the cores to itself. A remote store would leave that CPU to ffmpeg."
      % (meta["ncpu"], cores("stream", "bed_cpu_s"), cores("stream", "driver_cpu_s"), meta["bare_nice"]))
    others = [r["others"] for r in recs]
    w("- Other programs on the machine used %.0f%% of the CPUs (median over the timed runs, max %.0f%%);"
      " the runs compared are interleaved round by round, so they share that load, but at nice %d ffmpeg"
      " suffers most from it. QUIET_WAIT waits for a calm machine before each round."
      % (med(others), max(others, default=float("nan")), meta["bare_nice"]))
    w("- D and U include the aws cli's start-up; the cap-server sides include the job's duration probe"
      " (ffprobe) and, streamed, that probe's reads through the endpoint (the input's bytes read above).")
    w("")
    w("## Details")
    w("")
    for side in ("stream", "download"):
        rs = P(side)
        if not rs:
            continue
        w("- %s job (medians, from POST /exec): ffmpeg started %s s, first part in the bucket %s s, ffmpeg exited %s s,"
          " last part stored (bed log) %s s, done %s s; time per job state: %s"
          % (side, f3(M(side, "render_start_s")), f3(M(side, "first_byte_s")), f3(M(side, "ffmpeg_end_s")),
             f3(M(side, "last_part_log_s")), f3(M(side)),
             ", ".join("%s %.0f ms" % (k, med([r["phases"].get(k) for r in rs]) * 1000) for k in rs[0]["phases"])))
        i = rs[0]["input"]
        w("  - input as the job reports it: %s" % json.dumps(i))
        w("  - output %d bytes in %s parts; bytes over the link (median): up %.1f MB, down %.1f MB;"
          " GET /jobs polls after the POST: %s"
          % (rs[0]["bytes"], rs[0].get("parts"), M(side, "link_up") / 1e6, M(side, "link_down") / 1e6,
             "/".join(str(r["polls_jobs"]) for r in rs)))
    w("- bytes over the link (median, MB up/down): sequential %.1f/%.1f, D %.1f/%.1f, U %.1f/%.1f"
      % tuple(M(sd, k) / 1e6 for sd in ("sequential", "D", "U") for k in ("link_up", "link_down")))
    w("- CPU seconds per run (medians): ffmpeg+ffprobe under cap-server / local ffmpeg+aws; cap-server;"
      " the S3 bed (Swift + memcached); this script (mostly the proxy's thread):")
    for side in SIDES:
        if P(side):
            w("  - %-10s children %.2f, cap-server %.2f, bed %.2f, proxy/script %.2f  (= %.2f cores over the wall time)"
              % (side, M(side, "srv_kids_cpu_s") + M(side, "local_kids_cpu_s"), M(side, "srv_cpu_s"),
                 M(side, "bed_cpu_s"), M(side, "driver_cpu_s"),
                 med([(r["srv_kids_cpu_s"] + r["local_kids_cpu_s"] + r["srv_cpu_s"] + r["bed_cpu_s"]
                       + r["driver_cpu_s"]) / r["wall_s"] for r in P(side)])))
    w("- other programs' share of the CPUs during the timed runs (median/max): " + ", ".join(
        "%s %.0f%%/%.0f%%" % (sd, med([r["others"] for r in P(sd)]), max(r["others"] for r in P(sd)))
        for sd in SIDES if P(sd)))
    w("- CPU busy before the rounds (sampled 0.5 s): %s; waited for calm (QUIET_WAIT %d s, before each round"
      " and each run made again): %d time(s), %.0f s in all"
      % (", ".join(meta["bg"]) or "-", meta["quiet_wait"], len(meta["waited"]), sum(meta["waited"])))
    w("- runs made again (other programs above %.0f%% CPU): %s" % (meta["noise_max"], ", ".join(meta["redone"]) or "none"))
    w("- local ffmpeg (E, the sequential pipeline) at nice %d, ionice %s, like the server's cpu class"
      % (meta["bare_nice"], meta["bare_ionice"]))
    errs = [e for r in recs for e in r.get("first_byte_errors") or []]
    w("- first-output-byte polling: %s requests per run (median)%s"
      % (f3(med([r.get("first_byte_polls") for r in recs if "first_byte_polls" in r])).rstrip("0").rstrip("."),
         "; errors: %d (%s)" % (len(errs), "; ".join(errs[:3])) if errs else ", no errors"))
    w("- multipart uploads left open in the bucket: %s" % (len(meta["leftover_uploads"]) or "none"))
    w("- server log: %d warn/error line(s)%s" % (sum(meta["log_warns"].values()), (" (" + ", ".join(
        "%s x%d" % kv for kv in sorted(meta["log_warns"].items())) + ")") if meta["log_warns"] else ""))
    if meta.get("foreign"):
        w("- other load-making programs running at the start (left alone): %d (%s)"
          % (len(meta["foreign"]), "; ".join(x.split(" ", 1)[1][:40] for x in meta["foreign"][:4])))
    w("- proxy totals: %s" % json.dumps({k: meta["proxy"][k] for k in ("connections", "requests", "bytes_c2s",
                                                                         "bytes_s2c")}))
    w("- bench wall time %.0f s" % meta["wall_s"])
    w("")
    w("raw: %s (results.jsonl, meta.json, presets.json, argv-*.txt, cap-server.log, s3-proxy.log.gz)"
      % meta["out_dir"])
    return "\n".join(L)


def cleanup():
    if SRV is not None:
        try:
            SRV.stop()
        except Exception as e:  # noqa: BLE001
            log("input-bench: stopping cap-server: %s" % e)
    if PROXY is not None:
        try:
            PROXY.stop()
        except Exception as e:  # noqa: BLE001
            log("input-bench: stopping the proxy: %s" % e)
    if BED is not None and BED.dir is not None:
        try:
            with open(os.path.join(BED.dir, "log", "proxy.log"), "rb") as fi, \
                    gzip.open(os.path.join(OUT_DIR, "s3-proxy.log.gz"), "wb") as fo:
                shutil.copyfileobj(fi, fo)
        except OSError:
            pass
        try:
            BED.stop()
        except Exception as e:  # noqa: BLE001
            log("input-bench: stopping the S3 bed: %s" % e)
    if TMP and os.path.isdir(TMP):
        for f in ("cap-server.log", "cap-server.out"):
            try:
                shutil.copy(os.path.join(TMP, f), OUT_DIR)
            except OSError:
                pass
        if KEEP_TMP:
            log("input-bench: kept %s" % TMP)
        else:
            shutil.rmtree(TMP, ignore_errors=True)


def _sig(signum, frame):
    raise SystemExit("input-bench: interrupted (signal %d)" % signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGINT, _sig)
    try:
        main()
    finally:
        cleanup()
