"""Part 6 of bench/jobs-bench.sh: the journal on against off (issue 15).
jobs-bench.sh starts the servers and calls the subcommands below; it
documents the measurements.  Every subcommand prints one line of
space-separated figures for the shell to read, and writes its raw data as
JSON where it has any.

  dispatch PORT_ON PORT_OFF TOKEN_FILE RUNS ROUNDS WARMUP OUT
      POST /exec of an async ffprobe job on one keep-alive connection per
      server: time from sending the request to the whole 202 answer read
      (the journal writes the queued row before the answer).  The job is
      then awaited (GET /jobs/{id}?wait=60) before the next one, so every
      request meets an idle server.  ROUNDS rounds of RUNS/ROUNDS per side,
      the order turning round every round; WARMUP jobs per side first.
      Prints: median_on median_off diff_ms p90_on p90_off n  (ms)
  histq PORT TOKEN_FILE OUT
      cap_journal_write_seconds from /metrics: p50 and p99 interpolated
      linearly inside the histogram's buckets, count and mean, and
      cap_journal_writes_total by result.
      Prints: p50_ms p99_ms count mean_ms ok error
  size PORT TOKEN_FILE JOBS CONC DB OUT MAX_S
      JOBS synchronous ffprobe jobs (each with its own Idempotency-Key) over
      CONC keep-alive connections; every JOBS/10 jobs the journal's files
      (DB, -wal, -shm) and its rows and pages (read-only SQLite beside the
      server) are sampled.  Stops early after MAX_S seconds.
      Prints: jobs seconds db wal shm rows pages page_size
"""
import http.client
import json
import os
import sqlite3
import statistics
import sys
import threading
import time


def headers(token_file):
    token = open(token_file).read().strip()
    return {"Authorization": "Bearer " + token, "Content-Type": "application/json"}


class Conn:
    """One keep-alive connection that reconnects when the server closes."""

    def __init__(self, port, hdrs):
        self.port = port
        self.hdrs = hdrs
        self.c = None

    def req(self, method, path, body=None, extra=None):
        h = dict(self.hdrs)
        h.update(extra or {})
        for attempt in (0, 1):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                    self.c.connect()
                t0 = time.perf_counter()
                self.c.request(method, path, body=json.dumps(body) if body is not None else None,
                               headers=h)
                r = self.c.getresponse()
                data = r.read()
                dt = time.perf_counter() - t0
                if (r.getheader("Connection") or "").lower() == "close":
                    self.c.close()
                    self.c = None
                return r.status, (json.loads(data) if data else None), dt
            except (http.client.HTTPException, OSError):
                if self.c is not None:
                    self.c.close()
                self.c = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def dispatch(port_on, port_off, token_file, runs, rounds, warmup, out):
    runs, rounds, warmup = int(runs), int(rounds), int(warmup)
    h = headers(token_file)
    conns = {"on": Conn(int(port_on), h), "off": Conn(int(port_off), h)}
    body = {"capability": "ffprobe", "input_key": "uploads/probe.mp4", "async": True}
    times = {"on": [], "off": []}

    def one(side, keep):
        c = conns[side]
        st, a, dt = c.req("POST", "/exec", body)
        if st != 202:
            raise SystemExit("journal-bench: POST /exec async (%s) answered %d %r" % (side, st, a))
        while True:
            st, j, _ = c.req("GET", "/jobs/%s?wait=60" % a["job_id"])
            if st != 200:
                raise SystemExit("journal-bench: GET /jobs answered %d %r" % (st, j))
            if j["status"] in ("succeeded", "failed", "canceled"):
                break
        if j["status"] != "succeeded":
            raise SystemExit("journal-bench: job %r" % j)
        if keep:
            times[side].append(dt * 1000.0)

    for _ in range(warmup):
        one("on", False)
        one("off", False)
    per = max(1, (runs + rounds - 1) // rounds)
    for r in range(rounds):
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        for side in order:
            for _ in range(per):
                one(side, True)
        sys.stderr.write("  round %d/%d: median so far on %.2f ms, off %.2f ms\n"
                         % (r + 1, rounds, statistics.median(times["on"]),
                            statistics.median(times["off"])))
    json.dump(times, open(out, "w"))
    mon, moff = statistics.median(times["on"]), statistics.median(times["off"])
    print("%.3f %.3f %.3f %.3f %.3f %d" % (mon, moff, mon - moff, pct(times["on"], 0.9),
                                           pct(times["off"], 0.9), len(times["on"])))


def metrics(port, token_file):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    try:
        c.request("GET", "/metrics", headers=headers(token_file))
        r = c.getresponse()
        text = r.read().decode()
    finally:
        c.close()
    if r.status != 200:
        raise SystemExit("journal-bench: /metrics answered %d" % r.status)
    return text


def histq(port, token_file, out):
    import re
    text = metrics(port, token_file)
    buckets, count, total, writes = [], 0, 0.0, {}
    for line in text.splitlines():
        m = re.match(r'^cap_journal_write_seconds_bucket\{le="([^"]+)"\} (\S+)$', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, float(m.group(2))))
        m = re.match(r"^cap_journal_write_seconds_count (\S+)$", line)
        if m:
            count = float(m.group(1))
        m = re.match(r"^cap_journal_write_seconds_sum (\S+)$", line)
        if m:
            total = float(m.group(1))
        m = re.match(r'^cap_journal_writes_total\{result="([^"]+)"\} (\S+)$', line)
        if m:
            writes[m.group(1)] = float(m.group(2))
    buckets.sort()
    open(out, "w").write(text)
    if not buckets or count == 0:
        print("NA NA 0 NA %d %d" % (writes.get("ok", 0), writes.get("error", 0)))
        return

    def q(p):
        want = p * count
        prev_le, prev_c = 0.0, 0.0
        for le, c in buckets:
            if c >= want:
                if le == float("inf"):
                    return prev_le
                frac = (want - prev_c) / (c - prev_c) if c > prev_c else 0.0
                return prev_le + (le - prev_le) * frac
            prev_le, prev_c = le, c
        return prev_le

    print("%.4f %.4f %d %.4f %d %d" % (q(0.5) * 1000, q(0.99) * 1000, count, total / count * 1000,
                                       writes.get("ok", 0), writes.get("error", 0)))


def db_sample(db):
    sizes = []
    for suf in ("", "-wal", "-shm"):
        try:
            sizes.append(os.path.getsize(db + suf))
        except FileNotFoundError:
            sizes.append(0)
    rows = pages = psize = -1
    try:
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
        try:
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
            rows = sum(con.execute('SELECT count(*) FROM "%s"' % t).fetchone()[0] for t in tables)
            pages = con.execute("PRAGMA page_count").fetchone()[0]
            psize = con.execute("PRAGMA page_size").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as e:
        sys.stderr.write("journal-bench: cannot read %s: %s\n" % (db, e))
    return sizes, rows, pages, psize


def size(port, token_file, jobs, conc, db, out, max_s):
    port, jobs, conc, max_s = int(port), int(jobs), int(conc), float(max_s)
    h = headers(token_file)
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "bad": []}
    samples = []
    step = max(1, jobs // 10)
    t0 = time.time()
    stop = threading.Event()
    tag = "%x" % int(t0)

    def worker():
        c = Conn(port, h)
        while not stop.is_set():
            with lock:
                i = state["next"]
                if i >= jobs:
                    return
                state["next"] = i + 1
            body = {"capability": "ffprobe", "input_key": "uploads/probe.mp4"}
            st = None
            try:
                st, a, _ = c.req("POST", "/exec", body, {"Idempotency-Key": "bench-%s-%07d" % (tag, i)})
                ok = st == 200 and a.get("status") == "succeeded"
            except Exception as e:  # noqa: BLE001 - reported
                ok, a = False, repr(e)
            with lock:
                if not ok:
                    state["bad"].append((i, st, str(a)[:200]))
                state["done"] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(conc)]
    for t in threads:
        t.start()
    next_mark = step
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        with lock:
            done = state["done"]
            bad = len(state["bad"])
        if bad:
            stop.set()
            break
        if done >= next_mark:
            sizes, rows, pages, psize = db_sample(db)
            el = time.time() - t0
            samples.append({"jobs": done, "s": el, "db": sizes[0], "wal": sizes[1], "shm": sizes[2],
                            "rows": rows, "pages": pages, "page_size": psize})
            sys.stderr.write("  %7d jobs %6.0f s  db %10d  wal %9d  shm %7d  rows %7d  %6.0f jobs/s\n"
                             % (done, el, sizes[0], sizes[1], sizes[2], rows, done / el))
            next_mark = (done // step + 1) * step
        if time.time() - t0 > max_s:
            sys.stderr.write("journal-bench: MAX_S %.0f s reached after %d jobs; stopping\n"
                             % (max_s, done))
            stop.set()
            break
    for t in threads:
        t.join(120)
    if state["bad"]:
        raise SystemExit("journal-bench: %d jobs failed, first %r" % (len(state["bad"]), state["bad"][0]))
    sizes, rows, pages, psize = db_sample(db)
    el = time.time() - t0
    samples.append({"jobs": state["done"], "s": el, "db": sizes[0], "wal": sizes[1], "shm": sizes[2],
                    "rows": rows, "pages": pages, "page_size": psize, "final": True})
    json.dump(samples, open(out, "w"), indent=1)
    print("%d %.1f %d %d %d %d %d %d" % (state["done"], el, sizes[0], sizes[1], sizes[2], rows,
                                         pages, psize))


if __name__ == "__main__":
    {"dispatch": dispatch, "histq": histq, "size": size}[sys.argv[1]](*sys.argv[2:])
