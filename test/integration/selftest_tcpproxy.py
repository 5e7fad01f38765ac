"""Self-check of tcpproxy.py (not part of ctest): a small threaded HTTP/1.1
server (keep-alive, a 20 MB deterministic body with Range and HEAD, a
chunked answer, a 204, PUT uploads) behind TcpProxy, then the response
bookkeeping, reset_response, stall_response, set_rate and respond_request.

    python3 test/integration/selftest_tcpproxy.py [-v]

TCPPROXY_LONG=1 adds a 10 s transfer of 250 MB at 25 MB/s (rate accuracy
and the proxy thread's CPU use)."""
import hashlib
import http.client
import http.server
import os
import random
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tcpproxy import TcpProxy  # noqa: E402

MIB = 1 << 20
SIZE = 20_000_000
BODY = random.Random(20240601).randbytes(SIZE)
BODY_SHA1 = hashlib.sha1(BODY).hexdigest()
CHUNKED = [b"first chunk\n", b"x" * 100000, b"last\n"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _range(self):
        """(start, end exclusive, status) of the body part asked for."""
        total = SIZE
        if self.path.startswith("/size/"):
            total = int(self.path[6:])
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a)
            end = min(total, int(b) + 1) if b else total
            return start, end, total, 206
        return 0, total, total, 200

    def _send_head(self):
        start, end, total, status = self._range()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, total))
        self.send_header("ETag", '"selftest"')
        self.end_headers()
        return start, end

    def do_HEAD(self):
        self._send_head()

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for c in CHUNKED:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/empty":
            self.send_response(204)
            self.end_headers()
            return
        if self.path == "/small":
            body = b"small body\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        start, end = self._send_head()
        view = memoryview(BODY)
        pos = start
        while pos < end:
            # /size/N repeats the 20 MB body.
            off = pos % SIZE
            n = min(end - pos, SIZE - off, MIB)
            self.wfile.write(view[off:off + n])
            pos += n

    def do_PUT(self):
        left = int(self.headers.get("Content-Length", "0"))
        got = 0
        while left:
            d = self.rfile.read(min(left, MIB))
            if not d:
                break
            got += len(d)
            left -= len(d)
        body = b"%d\n" % got
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, OSError)):
            return      # the proxy reset the connection: expected
        super().handle_error(request, client_address)


def thread_cpu(thread):
    """CPU seconds (user + system) a thread used so far (Linux)."""
    with open("/proc/self/task/%d/stat" % thread.native_id) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_all(resp, size=MIB):
    parts = []
    while True:
        d = resp.read(size)
        if not d:
            return b"".join(parts)
        parts.append(d)


def raw_get(port, path, timeout=30):
    """GET on a new socket; (head bytes, body bytes, exception or None).  It
    reads until the close or an error."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: selftest\r\nConnection: close\r\n\r\n" % path.encode())
    buf = bytearray()
    err = None
    try:
        while True:
            d = s.recv(262144)
            if not d:
                break
            buf += d
    except OSError as e:
        err = e
    finally:
        s.close()
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    return head, body, err


def timed_raw_get(port, path, conn=None):
    """GET read the cheap way (recv_into one 1 MiB buffer, hashed as it
    comes: a client in this process slow to read, sharing the GIL with the
    proxy and the server, would measure itself rather than the proxy).
    (seconds, status, body length, body sha1 hex, socket); the socket
    stays open for more requests."""
    s = conn or socket.create_connection(("127.0.0.1", port), timeout=30)
    t0 = time.monotonic()
    s.sendall(b"GET %s HTTP/1.1\r\nHost: selftest\r\n\r\n" % path.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(65536)
        if not d:
            raise AssertionError("closed in the head: %r" % head)
        head += d
    head, _, rest = head.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int([l.split(b":", 1)[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length:")][0])
    h = hashlib.sha1(rest)
    got = len(rest)
    buf = bytearray(MIB)
    view = memoryview(buf)
    while got < length:
        n = s.recv_into(view[:min(MIB, length - got)])
        if not n:
            raise AssertionError("closed after %d of %d body bytes" % (got, length))
        h.update(view[:n])
        got += n
    return time.monotonic() - t0, status, got, h.hexdigest(), s


class ProxySelfTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.httpd = Server(("127.0.0.1", 0), Handler)
        cls.httpd_thread = threading.Thread(target=cls.httpd.serve_forever, daemon=True)
        cls.httpd_thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.httpd.shutdown()
        cls.httpd.server_close()

    def setUp(self):
        self.proxy = TcpProxy(self.httpd.server_address[1]).start()
        self.addCleanup(self.proxy.stop)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=30)

    def get(self, path, headers=None, conn=None):
        c = conn or self.conn()
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), read_all(r)
        finally:
            if conn is None:
                c.close()

    # (a) ---------------------------------------------------------------------

    def test_a_passthrough_and_records(self):
        c = self.conn()
        # One keep-alive connection: GET, Range GET, HEAD, chunked, 204, PUT.
        st, h, body = self.get("/big", conn=c)
        self.assertEqual((st, len(body)), (200, SIZE))
        self.assertTrue(body == BODY, "body changed on the way")
        st, h, body = self.get("/big", {"Range": "bytes=1000-1999999"}, conn=c)
        self.assertEqual(st, 206)
        self.assertTrue(body == BODY[1000:2000000])
        c.request("HEAD", "/big")
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b""))
        st, h, body = self.get("/chunked", conn=c)
        self.assertEqual((st, body), (200, b"".join(CHUNKED)))
        st, h, body = self.get("/empty", conn=c)
        self.assertEqual((st, body), (204, b""))
        c.request("PUT", "/up", body=BODY[:3 * MIB])
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b"%d\n" % (3 * MIB)))
        st, h, body = self.get("/small", conn=c)
        self.assertEqual((st, body), (200, b"small body\n"))
        c.close()

        reqs = self.proxy.requests_of()
        self.assertEqual(len(reqs), 7, reqs)
        self.assertEqual({r.conn for r in reqs}, {reqs[0].conn}, "not one keep-alive connection")
        g, rg, hd, ch, em, put, sm = reqs
        self.assertEqual((g.status, g.response_length, g.response_forwarded, g.response_complete),
                         (200, SIZE, SIZE, True))
        self.assertEqual(g.response_headers["etag"], '"selftest"')
        self.assertEqual(g.response_headers["content-length"], str(SIZE))
        self.assertEqual((rg.status, rg.response_length, rg.response_forwarded),
                         (206, 1999000, 1999000))
        self.assertEqual(rg.response_headers["content-range"], "bytes 1000-1999999/%d" % SIZE)
        # HEAD: the Content-Length of the object, no body.
        self.assertEqual((hd.method, hd.status, hd.response_length, hd.response_forwarded,
                          hd.response_complete), ("HEAD", 200, SIZE, 0, True))
        # Chunked: no length; the body counted in raw (chunked) bytes.
        raw = sum(len(b"%x\r\n" % len(x)) + len(x) + 2 for x in CHUNKED) + len(b"0\r\n\r\n")
        self.assertEqual((ch.status, ch.response_length, ch.response_forwarded,
                          ch.response_complete), (200, None, raw, True))
        self.assertEqual((em.status, em.response_forwarded, em.response_complete), (204, 0, True))
        self.assertEqual((put.kind, put.body_forwarded, put.complete, put.status,
                          put.response_complete), ("put", 3 * MIB, True, 200, True))
        self.assertEqual((sm.status, sm.response_length, sm.response_complete), (200, 11, True))
        self.assertTrue(all(r.fault is None for r in reqs), reqs)
        self.assertEqual(self.proxy.wait_response(lambda r: r.path == "/small", complete=True), sm)

    # (b) ---------------------------------------------------------------------

    def test_b_reset_response(self):
        self.proxy.reset_response(lambda r: r.path == "/big", after_body=MIB)
        head, body, err = raw_get(self.proxy.port, "/big")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
        self.assertEqual(len(body), MIB, "client got %d body bytes, wanted 1 MiB" % len(body))
        self.assertTrue(body == BODY[:MIB])
        self.assertIsInstance(err, ConnectionResetError, "no ECONNRESET: %r" % (err,))
        r = self.proxy.requests_of()[0]
        self.assertEqual((r.fault, r.status, r.response_forwarded, r.response_complete),
                         ("reset", 200, MIB, False))
        self.assertEqual(self.proxy.summary()["resets"], 1)
        # The rule was for one request: the next connection goes through.
        head, body, err = raw_get(self.proxy.port, "/big")
        self.assertIsNone(err)
        self.assertTrue(body == BODY)
        # Offsets inside a read, several at once, and at 0 (head only).
        self.proxy.reset_response(lambda r: r.path == "/big", count=2, after_body=12345)
        for _ in range(2):
            head, body, err = raw_get(self.proxy.port, "/big")
            self.assertEqual(len(body), 12345)
            self.assertIsInstance(err, ConnectionResetError)
        self.proxy.reset_response(lambda r: r.path == "/big", after_body=0)
        head, body, err = raw_get(self.proxy.port, "/big")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"))
        self.assertEqual((len(body), type(err)), (0, ConnectionResetError))
        # On a keep-alive connection: the second response is the one hit.
        self.proxy.reset_response(lambda r: r.query.get("n") == "2", after_body=5000)
        c = self.conn()
        st, h, body = self.get("/big?n=1", {"Range": "bytes=0-99999"}, conn=c)
        self.assertEqual((st, len(body)), (206, 100000))
        c.request("GET", "/big?n=2")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.read(5000), BODY[:5000])
        with self.assertRaises((ConnectionResetError, http.client.IncompleteRead)):
            r.read(10)
        c.close()
        hit = [q for q in self.proxy.requests_of() if q.fault]
        self.assertEqual([q.query.get("n") for q in hit if q.query], ["2"])

    # (c) ---------------------------------------------------------------------

    def test_c_stall_response(self):
        self.proxy.stall_response(lambda r: r.path == "/big", seconds=2, after_body=100 * 1024)
        c = self.conn()
        t0 = time.monotonic()
        c.request("GET", "/big")
        r = c.getresponse()
        first = r.read(100 * 1024)
        t1 = time.monotonic()
        rest = read_all(r)
        t2 = time.monotonic()
        self.assertTrue(first + rest == BODY, "body damaged by the stall")
        self.assertLess(t1 - t0, 1.0, "the first 100 KiB came late")
        self.assertGreaterEqual(t2 - t0, 2.0)
        self.assertLess(t2 - t0, 5.0)
        req = self.proxy.requests_of()[0]
        self.assertEqual((req.fault, req.response_complete, self.proxy.summary()["stalls"]),
                         ("stall", True, 1))
        # The connection stayed usable.
        st, h, body = self.get("/small", conn=c)
        self.assertEqual(st, 200)
        self.assertEqual(len(self.proxy.requests_of()), 2)
        self.assertEqual({q.conn for q in self.proxy.requests_of()}, {req.conn})
        c.close()

    # (d) ---------------------------------------------------------------------

    def timed_get(self, path):
        """(seconds, status, body length, sha1) of a GET on a new connection."""
        dt, st, n, sha, sock = timed_raw_get(self.proxy.port, path)
        sock.close()
        return dt, st, n, sha

    def test_d_rate(self):
        self.proxy.set_rate(10_000_000, direction="s2c")
        cpu0 = thread_cpu(self.proxy.thread)
        dt, st, n, sha = self.timed_get("/big")
        cpu = thread_cpu(self.proxy.thread) - cpu0
        self.assertEqual((st, n, sha), (200, SIZE, BODY_SHA1))
        rate = SIZE / dt
        print("\n  s2c 10 MB/s: 20 MB in %.3f s = %.3f MB/s (%+.2f%%), proxy thread CPU %.2f s (%.0f%%)"
              % (dt, rate / 1e6, (rate / 10e6 - 1) * 100, cpu, 100 * cpu / dt), file=sys.stderr)
        self.assertAlmostEqual(dt, 2.0, delta=0.2)
        # Shared by every connection: two at once take as long as one twice as big.
        out = []

        def one(path):
            out.append(self.timed_get(path))
        t0 = time.monotonic()
        ts = [threading.Thread(target=one, args=("/size/10000000",)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.monotonic() - t0
        print("  s2c 10 MB/s, 2 connections x 10 MB: %.3f s" % dt, file=sys.stderr)
        want = hashlib.sha1(BODY[:10_000_000]).hexdigest()
        self.assertEqual([o[1:] for o in out], [(200, 10_000_000, want)] * 2)
        # The throttle's promise is a ceiling: never faster than the rate
        # (the tight lower bound).  A busy machine may only make it slower;
        # the upper bound catches a throttle that stalls, not a slow CPU.
        self.assertGreaterEqual(dt, 1.8)
        self.assertLess(dt, 3.0)
        # c2s: an upload of 10 MB at 5 MB/s, the download direction free.
        self.proxy.set_rate(0, "s2c")
        self.proxy.set_rate(5_000_000, "c2s")
        c = self.conn()
        t0 = time.monotonic()
        c.request("PUT", "/up", body=BODY[:10_000_000])
        r = c.getresponse()
        self.assertEqual(r.read(), b"10000000\n")
        dt = time.monotonic() - t0
        print("  c2s 5 MB/s: 10 MB up in %.3f s" % dt, file=sys.stderr)
        self.assertGreaterEqual(dt, 1.8)
        self.assertLess(dt, 3.0)
        c.close()
        dt, st, n, sha, sock = timed_raw_get(self.proxy.port, "/big")
        self.assertLess(dt, 1.0, "s2c still throttled")
        # clear() drops the rate.
        self.proxy.set_rate(1_000_000)
        self.proxy.clear()
        dt, st, n, sha, sock = timed_raw_get(self.proxy.port, "/big", sock)
        self.assertLess(dt, 1.0, "clear() left a rate")
        self.assertEqual((st, n, sha), (200, SIZE, BODY_SHA1))
        self.assertEqual(self.proxy.summary()["rate"], {"c2s": None, "s2c": None})
        sock.close()

    def test_d1_rate_burst(self):
        """At 1 MB/s: 64 KiB at once, then the rate, no more."""
        self.proxy.set_rate(1_000_000, direction="s2c")
        s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=10)
        self.addCleanup(s.close)
        t0 = time.monotonic()
        s.sendall(b"GET /big HTTP/1.1\r\nHost: selftest\r\nRange: bytes=0-1999999\r\n\r\n")
        got = 0
        marks = {}
        while True:
            n = len(s.recv(1 << 20))
            got += n
            dt = time.monotonic() - t0
            for m in (0.05, 0.5, 1.0):
                if dt < m:
                    marks[m] = got
            if dt >= 1.0:
                break
        head = 200      # about that much is the response head
        print("\n  s2c 1 MB/s: by 0.05 s %d bytes, by 0.5 s %d, by 1 s %d"
              % (marks[0.05], marks[0.5], marks[1.0]), file=sys.stderr)
        self.assertLessEqual(marks[0.05], 65536 + 50000 + head)
        self.assertLessEqual(marks[0.5], 65536 + 500000 + head)
        self.assertGreaterEqual(marks[1.0], 1000000 - 100000)
        self.assertLessEqual(marks[1.0], 65536 + 1000000 + head)

    def test_d2_rate_25mb(self):
        """200 Mbit/s down: accuracy and the proxy thread's CPU use."""
        long = os.environ.get("TCPPROXY_LONG")
        size = 250_000_000 if long else 100_000_000
        self.proxy.set_rate(25_000_000, direction="s2c")
        cpu0 = thread_cpu(self.proxy.thread)
        dt, st, n, sha = self.timed_get("/size/%d" % size)
        cpu = thread_cpu(self.proxy.thread) - cpu0
        self.assertEqual((st, n), (200, size))
        rate = size / dt
        print("\n  s2c 25 MB/s: %d MB in %.3f s = %.3f MB/s (%+.2f%%), proxy thread CPU %.2f s (%.0f%%)"
              % (size // 1000000, dt, rate / 1e6, (rate / 25e6 - 1) * 100, cpu, 100 * cpu / dt),
              file=sys.stderr)
        self.assertLess(abs(rate / 25e6 - 1), 0.03)
        self.assertLess(cpu / dt, 0.5, "the proxy eats too much CPU")

    # (e) ---------------------------------------------------------------------

    def test_e_respond_request(self):
        self.proxy.respond_request(lambda r: r.path == "/deny", 403)
        c = self.conn()
        st, h, body = self.get("/deny", conn=c)
        self.assertEqual(st, 403)
        self.assertIn(b"<Code>AccessDenied</Code>", body)
        # Same keep-alive connection carries on to the server, and the
        # answers still pair with their requests.
        st, h, body = self.get("/small", conn=c)
        self.assertEqual((st, body), (200, b"small body\n"))
        st, h, body = self.get("/deny", conn=c)
        self.assertEqual(st, 403)
        st, h, body = self.get("/big", {"Range": "bytes=0-9"}, conn=c)
        self.assertEqual((st, body), (206, BODY[:10]))
        c.close()
        reqs = self.proxy.requests_of()
        self.assertEqual([(r.path, r.status, r.fault, r.answered) for r in reqs],
                         [("/deny", 403, "answered", 403), ("/small", 200, None, None),
                          ("/deny", 403, "answered", 403), ("/big", 206, None, None)])
        self.assertTrue(all(r.response_complete for r in reqs), reqs)
        self.assertEqual(reqs[0].response_headers["x-amz-request-id"], "tcpproxy")
        self.assertEqual(reqs[3].response_length, 10)
        self.assertEqual(self.proxy.summary()["answered"], 2)

    def test_f_clear_drops_response_rules(self):
        self.proxy.reset_response(lambda r: True, after_body=10)
        self.proxy.stall_response(lambda r: True, seconds=30)
        self.proxy.clear()
        head, body, err = raw_get(self.proxy.port, "/big")
        self.assertIsNone(err)
        self.assertEqual(len(body), SIZE)
        self.assertIsNone(self.proxy.requests_of()[0].fault)


class ResponseParserSplits(unittest.TestCase):
    """The response parser fed a keep-alive stream cut at every kind of
    place: heads, chunk-size lines and CRLFs split across reads."""

    def test_random_splits(self):
        import tcpproxy
        chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(x), x) for x in CHUNKED) + \
            b"0\r\nX-Trailer: y\r\n\r\n"
        msgs = [("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                 b"hello", 200, 5),
                ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", b"", 200, 999),
                ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunked, 200, None),
                ("DELETE", b"HTTP/1.1 204 No Content\r\n\r\n", b"", 204, None),
                ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", b"", 304, 7),
                ("PUT", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"e\"\r\n\r\n", b"", 200, 0),
                ("GET", b"HTTP/1.1 206 Partial\r\ncontent-length: 300000\r\n\r\n",
                 BODY[:300000], 206, 300000)]
        stream = b"".join(h + b for _, h, b, _, _ in msgs)
        rnd = random.Random(7)
        for trial in range(200):
            proxy = TcpProxy(1)
            c = tcpproxy._Conn(proxy, 1, None, None)
            reqs = []
            for i, (m, *_rest) in enumerate(msgs):
                r = tcpproxy.Request(1, i + 1, m, "/k%d" % i, {})
                c.awaiting.append(r)
                reqs.append(r)
            pos = 0
            while pos < len(stream):
                n = rnd.choice([1, 2, 3, 5, 17, 100, 4096, 65536, 300000])
                proxy._parse_response(c, stream[pos:pos + n])
                pos += n
                c.s2c_bytes = min(pos, len(stream))
                proxy._account_s2c(c)
            self.assertIsNone(c.rmode)
            for r, (m, h, b, st, ln) in zip(reqs, msgs):
                self.assertEqual((r.status, r.response_length, r.response_forwarded,
                                  r.response_complete), (st, ln, len(b), True), (trial, r))
            self.assertEqual(reqs[2].response_headers["transfer-encoding"], "chunked")
            self.assertEqual(reqs[5].response_headers["etag"], '"e"')


if __name__ == "__main__":
    unittest.main()
