"""The cost of the fleet chain next to a direct call (driven by
bench/fleet-bench.sh).

It sets up what test/integration/test_fleet.py runs (the S3 bed, Caddy
with tls internal in front of two cap-servers, workerd with the registry
Durable Object and the example pipeline Worker) and times one synchronous
ffprobe job (a 2 s 640x360 clip held in the bucket) three ways, alternating
request by request so that background load hits all alike:

  direct  POST /exec to a cap-server's own port (plain HTTP, new connection)
  caddy   POST /exec through Caddy (HTTPS, new TLS connection), as a client
          on the tailnet would reach Funnel
  chain   POST /probe to the pipeline Worker: registry resolve (service
          binding), then POST /exec over HTTPS through Caddy, as a Worker
          reaches a workstation through Funnel

It prints the medians and 90th percentiles, the overhead of each path
over direct in ms, and the ratios.  Every answer must be 200.
"""
import http.client
import json
import os
import ssl
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))

import test_fleet as fleet  # noqa: E402
from capsrv import TOKEN  # noqa: E402

RUNS = int(os.environ.get("FLEET_RUNS", "40"))
WARMUP = int(os.environ.get("FLEET_WARMUP", "5"))
BODY = json.dumps({"capability": "ffprobe", "input_key": "uploads/raw.mp4"}).encode()
HEADERS = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"}


def post_exec(conn):
    """One /exec on conn, a fresh connection; returns the status."""
    try:
        conn.request("POST", "/exec", body=BODY, headers=HEADERS)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def direct(srv):
    return post_exec(http.client.HTTPConnection(fleet.HOST, srv.port, timeout=60))


def through_caddy(port, ctx):
    return post_exec(http.client.HTTPSConnection("localhost", port, timeout=60, context=ctx))


def chain():
    st, h, j = fleet.WD.post_pipeline("/probe", {"input_key": "uploads/raw.mp4"})
    return st


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    why = fleet.missing()
    if why:
        sys.exit("fleet-bench: " + why)
    fleet.setUpModule()
    try:
        # Wait until both servers are registered and live.
        deadline = time.time() + 20
        while len(fleet.candidates("ffprobe")) < 2:
            if time.time() > deadline:
                sys.exit("fleet-bench: the servers did not register")
            time.sleep(0.1)
        srv = fleet.SERVERS["a"]
        ctx = ssl.create_default_context(cafile=fleet.CAD.ca)
        port = fleet.pub("a")
        sides = {"direct": lambda: direct(srv), "caddy": lambda: through_caddy(port, ctx),
                 "chain": chain}
        times = {k: [] for k in sides}
        for i in range(WARMUP + RUNS):
            for name, fn in sides.items():
                t0 = time.perf_counter()
                st = fn()
                dt = (time.perf_counter() - t0) * 1000
                if st != 200:
                    sys.exit("fleet-bench: %s answered %d" % (name, st))
                if i >= WARMUP:
                    times[name].append(dt)
        base = statistics.median(times["direct"])
        print("ffprobe job, %d runs per path after %d warm-up runs (ms):" % (RUNS, WARMUP))
        print("  %-7s %9s %9s %12s %7s" % ("path", "median", "p90", "overhead", "ratio"))
        for name in sides:
            med = statistics.median(times[name])
            print("  %-7s %9.1f %9.1f %+12.1f %7.3f"
                  % (name, med, pct(times[name], 90), med - base, med / base))
    finally:
        fleet.tearDownModule()


if __name__ == "__main__":
    main()
