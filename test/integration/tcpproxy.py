"""A small TCP proxy with switchable faults, for the storage fault tests:
cap-server talks to the proxy (AWS_ENDPOINT_URL = proxy.endpoint), the
proxy forwards every byte unchanged to the S3 bed (so SigV4 signatures,
which cover the Host header cap-server sends, still verify).

    proxy = TcpProxy(bed.port).start()
    proxy.reset_next(1, after_bytes=100000)    # RST the next new connection mid-request
    proxy.reset_request(lambda r: r.is_part, count=2, after_body=1 << 20)
    proxy.set_delay(200, direction="s2c")      # every response chunk held 200 ms
    proxy.stall_request(lambda r: r.is_part, seconds=5, after_body=1 << 20)
    proxy.refuse(); ...; proxy.accept()        # close / reopen the listener
    proxy.respond_request(lambda r: r.kind == "abort", 403)  # answer it here
    proxy.reset_response(lambda r: r.kind == "get", after_body=1 << 20)
    proxy.stall_response(lambda r: r.kind == "get", seconds=5, after_body=100000)
    proxy.set_rate(25_000_000, direction="s2c")  # a 200 Mbit/s home link down
    proxy.clear()                              # no rules, no delay, no rate
    proxy.stop()

Standard library only: one asyncio loop in a daemon thread; the control
methods are thread-safe (they take a lock; the loop reads the settings as
it forwards).  A reset sets SO_LINGER {on, 0} on the socket to cap-server
and aborts it, so cap-server sees a real RST (ECONNRESET), and drops the
upstream connection too.

The client-to-server stream is parsed as HTTP/1.1 requests (request line,
headers, Content-Length body; curl sends no chunked bodies here), so
faults can hit a chosen request at a chosen body offset, and every request
is recorded (self.requests: Request objects, in order).

A request matched by respond_request never reaches the server: the proxy
drops its bytes and answers it itself (a canned S3 error), on the same
keep-alive connection, which then carries on to the server as before.
While such a rule is set, the bytes of a request head are held until the
head is complete, so that a head split across reads is never half sent.

The server-to-client stream is parsed as HTTP/1.1 responses too (status
line, headers, then a Content-Length or chunked body, or one that runs to
the close; none for HEAD, 1xx, 204 and 304; interim 1xx answers such as
100 Continue are skipped).  Responses come in the order of the requests
the server got on the connection (curl does not pipeline), so each is
recorded on its Request: .status (None until its head is seen),
.response_headers (lowercase name -> value), .response_length (its
Content-Length, None without one), .response_forwarded (body bytes
forwarded to the client so far) and .response_complete.  A request the
proxy answered itself gets its canned answer recorded the same way.

reset_response / stall_response hit a response at an offset of its body
(for a chunked body, an offset in the raw chunked bytes): the rule is
matched against the request when its head goes by, and fires once exactly
after_body body bytes have been forwarded (a read is split if needed).  A
response reset first waits (up to 5 s without progress) until the client
has acknowledged every byte written to it, so that the client really got
after_body bytes before its RST (an RST discards unsent data); then it
resets the client connection as above and drops the upstream.  A response
stall holds only the server-to-client direction.

set_rate(bytes_per_s, direction) is a token bucket per direction shared by
every connection, with asyncio.sleep for the deficit (no busy wait): at
most BURST = 64 KiB go ahead of the link's schedule (writes are cut into
pieces that size while it is on); a link idle for a while starts again
with 64 KiB of credit.  Time the proxy's own thread lost while it had
bytes queued (a busy machine: the scheduler, the GIL) is made up for, up
to 0.1 s, as a real link would have kept sending from its queue; time the
server or the client kept it waiting is not.  The reader from the server
may run UPSTREAM_BUFFER = 2 MiB ahead (the link's queue).  Measured on 2
cores: 250 MB at 25 MB/s through the Swift bed to curl took 10.00-10.05 s
by curl's clock from the first byte, the proxy thread using ~6-8% of a
core.  Reads are CHUNK = 256 KiB (64 KiB while a set_delay applies, so
that a delay per chunk slows a transfer as it always did).
"""
import asyncio
import collections
import fcntl
import socket
import struct
import termios
import threading
import time
import urllib.parse

CHUNK = 262144          # read size
DELAY_CHUNK = 65536     # read size while a set_delay applies (the chunk it holds)
BURST = 65536           # most bytes a throttled direction sends at once
UPSTREAM_BUFFER = 2 << 20  # bytes read ahead from the server at most (asyncio's buffer)


class Request:
    """One HTTP request seen going to the server."""

    def __init__(self, conn, seq, method, target, headers):
        self.conn = conn            # connection number (1-based, in accept order)
        self.seq = seq              # request number over the whole proxy (1-based)
        self.method = method
        self.target = target
        self.headers = headers      # lowercase name -> value
        self.header_names = []      # lowercase names in order, repeats kept
        self.content_length = int(headers.get("content-length", "0") or 0)
        self.body_forwarded = 0
        self.started = time.time()
        self.complete = False       # every body byte was forwarded
        self.fault = None           # "reset" / "stall" / "answered" when a fault hit it
        self.answered = None        # the status the proxy answered it with itself
        self.fault_at = None        # when (time.time())
        self.body_start = 0         # offset of the body in the connection's c2s stream
        # The response (recorded as it goes back to the client).
        self.status = None          # int, once its status line was seen (final, not 1xx)
        self.response_headers = {}  # lowercase name -> value
        self.response_length = None  # its Content-Length (None without one)
        self.response_forwarded = 0  # body bytes forwarded to the client so far
        self.response_complete = False  # the whole response went to the client
        self.response_body_start = None  # offset of its body in the s2c stream
        self.response_body_end = None   # offset of its end there, once known
        self._resp_rule = None      # (action, after_body, seconds) from a response rule
        u = urllib.parse.urlsplit(target)
        self.path = urllib.parse.unquote(u.path)
        self.query = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))

    @property
    def part_number(self):
        n = self.query.get("partNumber")
        return int(n) if n is not None and n.isdigit() else None

    @property
    def is_part(self):
        """An UploadPart (PUT ...?partNumber=N&uploadId=...)."""
        return self.method == "PUT" and self.part_number is not None

    @property
    def kind(self):
        q = self.query
        if self.method == "POST" and "uploads" in q:
            return "create"
        if self.method == "POST" and "uploadId" in q:
            return "complete"
        if self.method == "DELETE" and "uploadId" in q:
            return "abort"
        if self.is_part:
            return "part"
        if self.method == "GET" and "uploads" in q:
            return "list_uploads"
        return self.method.lower()

    def __repr__(self):
        resp = ""
        if self.status is not None:
            resp = " -> %d %d/%s%s" % (
                self.status, self.response_forwarded,
                "?" if self.response_length is None else self.response_length,
                "" if self.response_complete else "...")
        return "<Request #%d conn %d %s %s body %d/%d%s%s>" % (
            self.seq, self.conn, self.method, self.target[:120], self.body_forwarded,
            self.content_length, resp, " " + self.fault if self.fault else "")


class _Rule:
    def __init__(self, pred, action, count, after_body, seconds, response=None):
        self.pred = pred
        # "reset", "stall" or "respond" (request side); "reset_response" or
        # "stall_response" (response side)
        self.action = action
        self.left = count
        self.after_body = after_body
        self.seconds = seconds
        self.response = response    # (status, bytes) for "respond"


# Reason phrases and S3 error codes of the answers respond_request makes up.
_S3_ERRORS = {400: ("Bad Request", "InvalidRequest"), 403: ("Forbidden", "AccessDenied"),
              404: ("Not Found", "NoSuchUpload"), 405: ("Method Not Allowed", "MethodNotAllowed"),
              429: ("Too Many Requests", "SlowDown"),
              500: ("Internal Server Error", "InternalError"),
              501: ("Not Implemented", "NotImplemented"),
              503: ("Service Unavailable", "ServiceUnavailable")}


class _Bucket:
    """A token bucket of rate bytes/s, as virtual time: t_free is when a
    link of that rate would have sent every byte admitted so far.  A caller
    takes n bytes (t_free moves on n / rate) and sleeps until t_free has
    come, so concurrent callers share the rate in turn, and at most burst
    bytes go ahead of the link's schedule.

    since is when the caller had those bytes in hand (queued in the proxy,
    ready to go).  If they came more than max(jitter, burst / rate) after
    the link went free, the link was idle: it starts again at since with
    burst bytes of credit.  Otherwise the link had a queue and would have
    kept sending it: time the proxy's own thread lost (the scheduler, the
    GIL: the bytes were there, the thread was not) is made up for, up to
    catch_up seconds, so the average rate holds on a busy machine.  Used
    only from the loop's thread."""

    def __init__(self, rate, burst=BURST, jitter=0.01, catch_up=0.1):
        self.rate = float(rate)
        self.burst = burst
        self.idle = max(jitter, burst / self.rate)
        self.catch_up = catch_up
        self.t_free = time.monotonic() - burst / self.rate

    async def take(self, n, since=None):
        now = time.monotonic()
        if since is None or since > now:
            since = now
        if since > self.t_free + self.idle:
            self.t_free = since - self.burst / self.rate
        self.t_free = max(self.t_free, now - self.catch_up) + n / self.rate
        if self.t_free > now:
            await asyncio.sleep(self.t_free - now)


def _parse_head(head):
    """(first line, lowercase header dict, lowercase names in order) of a
    message head (bytes, without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    names = []
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
        names.append(k.strip().lower())
    return lines[0], hdrs, names


def _s3_error_response(status, code=None, message=None):
    reason, default_code = _S3_ERRORS.get(status, ("Error", "Error"))
    code = code or default_code
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
            '<RequestId>tcpproxy</RequestId></Error>' % (code, message or reason)).encode()
    head = ("HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
            "x-amz-request-id: tcpproxy\r\n\r\n" % (status, reason, len(body))).encode()
    return head + body


class _Conn:
    def __init__(self, proxy, index, cr, cw):
        self.proxy = proxy
        self.index = index
        self.cr, self.cw = cr, cw
        self.ur = self.uw = None
        self.c2s_bytes = 0
        self.s2c_bytes = 0
        self.reset_at = None        # reset once c2s_bytes reaches this
        self.stall_until = 0.0
        self.dead = False
        self.opened = time.time()
        # request parser state
        self.head = b""
        self.body_left = 0
        self.cur = None
        self.parsed = 0             # client bytes fed to the parser
        self.held = b""             # client bytes of an incomplete head, not forwarded yet
        self.drop_until = 0         # client bytes before this offset are not forwarded
        self.answer = None          # (request, response bytes) once drop_until is reached
        # (absolute c2s offset, action, seconds or (status, response), request)
        self.triggers = []
        # response parser state (s2c)
        self.awaiting = collections.deque()  # requests sent to the server, no answer yet
        self.rhead = b""
        self.rmode = None           # None: in a head; "length", "chunked", "eof"
        self.rleft = 0              # bytes left of a Content-Length body or a chunk
        self.rchunk = "size"        # chunked: "size", "data", "crlf", "trailer"
        self.rline = b""            # chunked: a size or trailer line so far
        self.rcur = None            # the Request whose response body is parsed
        self.rparsed = 0            # server bytes fed to the parser
        self.rinflight = []         # responses seen, not all forwarded yet
        # [absolute s2c offset, action, seconds, request]
        self.rtriggers = []
        # Per direction, for set_rate: since when the bytes of the last
        # read were in hand, and whether that read left more waiting.
        self.since = {"c2s": 0.0, "s2c": 0.0}
        self.backlog = {"c2s": False, "s2c": False}


class TcpProxy:
    def __init__(self, target_port, target_host="127.0.0.1", listen_port=0):
        self.target = (target_host, target_port)
        self.listen_port = listen_port
        self.port = None
        self.lock = threading.Lock()
        self.loop = None
        self.thread = None
        self.server = None
        # settings
        self._reset_next = []       # list of after_bytes values, one per coming connection
        self._reset_nth = {}        # connection index -> after_bytes
        self._rules = []
        self._delay = {"c2s": 0.0, "s2c": 0.0}
        self._delay_select = None
        self._stall_next = []       # (seconds, after_bytes) per coming connection
        self._buckets = {"c2s": None, "s2c": None}  # set_rate's _Bucket per direction
        # counters
        self.connections = 0
        self.refused = False
        self.resets = 0
        self.stalls = 0
        self.delayed_chunks = 0
        self.answered = 0
        self.bytes_c2s = 0
        self.bytes_s2c = 0
        self.upstream_failures = 0
        self.requests = []
        self.events = []            # (time, text)
        self._conns = {}

    # --- life cycle ---------------------------------------------------------

    def start(self):
        ready = threading.Event()
        err = []

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._listen())
            except Exception as e:  # pragma: no cover - reported to start()
                err.append(e)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            # Drain what stop() left behind.
            pending = asyncio.all_tasks(self.loop)
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

        self.thread = threading.Thread(target=run, name="tcpproxy", daemon=True)
        self.thread.start()
        ready.wait(10)
        if err:
            raise err[0]
        if self.port is None:
            raise RuntimeError("tcpproxy did not start")
        return self

    async def _listen(self):
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1",
                                                 self.port or self.listen_port,
                                                 reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self):
        if self.loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        try:
            fut.result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop = None

    async def _shutdown(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for c in list(self._conns.values()):
            self._close(c, rst=False)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    # --- faults (thread-safe) -----------------------------------------------

    def reset_next(self, count=1, after_bytes=0):
        """The next count new connections are reset (RST) once after_bytes
        bytes from the client have been forwarded (0: as soon as the first
        request bytes arrive, before any is forwarded)."""
        with self.lock:
            self._reset_next.extend([after_bytes] * count)

    def reset_nth(self, *indices, after_bytes=0):
        """Connections number N (1-based, counted since start) are reset
        once after_bytes client bytes have been forwarded."""
        with self.lock:
            for n in indices:
                self._reset_nth[n] = after_bytes

    def reset_open(self):
        """Reset every open connection now.  Returns how many."""
        return self._call(self._reset_open_now)

    def reset_request(self, pred, count=1, after_body=0):
        """The next count requests for which pred(Request) is true get their
        connection reset once after_body bytes of their body have been
        forwarded (clamped to the body length: a fully sent request is reset
        before its response can come back)."""
        with self.lock:
            self._rules.append(_Rule(pred, "reset", count, after_body, 0))

    def stall_request(self, pred, seconds, count=1, after_body=0):
        """The next count requests matching pred stop being forwarded (both
        ways) for seconds, after after_body body bytes."""
        with self.lock:
            self._rules.append(_Rule(pred, "stall", count, after_body, seconds))

    def respond_request(self, pred, status, count=None, code=None, message=None):
        """The next count requests matching pred (every one when count is
        None) never reach the server: the proxy reads them and answers
        status itself with an S3 error body (code defaults from status, e.g.
        403 AccessDenied, 405 MethodNotAllowed, 503 ServiceUnavailable).
        The request is recorded with fault "answered" and .answered set."""
        resp = (status, _s3_error_response(status, code, message))
        with self.lock:
            self._rules.append(_Rule(pred, "respond", float("inf") if count is None else count,
                                     0, 0, resp))

    def reset_response(self, pred, count=1, after_body=0):
        """The next count requests for which pred(Request) is true (matched
        when the request head goes by) get their connection reset (RST to
        the client, upstream dropped) once exactly after_body bytes of their
        RESPONSE body have reached the client (clamped to the body length:
        after_body >= the length resets right after the whole response).
        The request is marked fault "reset"."""
        with self.lock:
            self._rules.append(_Rule(pred, "reset_response", count, after_body, 0))

    def stall_response(self, pred, seconds, count=1, after_body=0):
        """The next count requests matching pred get their response held
        (nothing more goes to the client; the connection stays open) for
        seconds once after_body bytes of its body have been forwarded; then
        it carries on.  The request is marked fault "stall"."""
        with self.lock:
            self._rules.append(_Rule(pred, "stall_response", count, after_body, seconds))

    def set_rate(self, bytes_per_s, direction="both"):
        """Throttle direction ("c2s", "s2c" or "both") to bytes_per_s over
        all connections together (one token bucket per direction, bursts of
        at most BURST bytes), like a home link: 25_000_000 is 200 Mbit/s.
        0 or None removes the throttle."""
        if direction not in ("c2s", "s2c", "both"):
            raise ValueError("direction must be c2s, s2c or both: %r" % (direction,))
        with self.lock:
            for d in ("c2s", "s2c"):
                if direction in (d, "both"):
                    self._buckets[d] = _Bucket(bytes_per_s) if bytes_per_s else None
            self._log("rate %s %s" % (direction, bytes_per_s or "off"))

    def stall_next(self, seconds, count=1, after_bytes=0):
        """The next count new connections stall for seconds once after_bytes
        client bytes have been forwarded."""
        with self.lock:
            self._stall_next.extend([(seconds, after_bytes)] * count)

    def stall_open(self, seconds):
        """Stop forwarding on every open connection for seconds."""
        until = time.time() + seconds
        with self.lock:
            n = 0
            for c in self._conns.values():
                if not c.dead:
                    c.stall_until = max(c.stall_until, until)
                    n += 1
            self.stalls += n
            self.events.append((time.time(), "stall_open %d for %.1fs" % (n, seconds)))
            return n

    def set_delay(self, ms, direction="both", select=None):
        """Hold every forwarded chunk ms milliseconds (direction c2s, s2c or
        both) on the connections for which select(index) is true (all when
        select is None).  ms=0 turns it off."""
        with self.lock:
            for d in ("c2s", "s2c"):
                if direction in (d, "both"):
                    self._delay[d] = ms / 1000.0
            self._delay_select = select

    def refuse(self):
        """Close the listener: new connections are refused (open ones stay)."""
        self._call(self._refuse_now)

    def accept(self):
        """Listen again on the same port."""
        fut = asyncio.run_coroutine_threadsafe(self._listen(), self.loop)
        fut.result(10)
        with self.lock:
            self.refused = False
            self.events.append((time.time(), "listening again"))

    def clear(self):
        """Drop every pending fault (counters stay)."""
        with self.lock:
            self._reset_next = []
            self._reset_nth = {}
            self._rules = []
            self._stall_next = []
            self._delay = {"c2s": 0.0, "s2c": 0.0}
            self._delay_select = None
            self._buckets = {"c2s": None, "s2c": None}
            # Response rules already matched to a request whose response
            # has not reached its fault point are dropped too.
            for r in self.requests:
                r._resp_rule = None

    # --- observations -------------------------------------------------------

    def open_connections(self):
        with self.lock:
            return sum(1 for c in self._conns.values() if not c.dead)

    def requests_of(self, kind=None):
        with self.lock:
            return [r for r in self.requests if kind is None or r.kind == kind]

    def wait_request(self, pred, timeout=10, body_at_least=0):
        """Waits for a request matching pred (with at least body_at_least
        body bytes forwarded); returns it."""
        deadline = time.time() + timeout
        while True:
            with self.lock:
                for r in self.requests:
                    if pred(r) and r.body_forwarded >= min(body_at_least, r.content_length):
                        return r
            if time.time() >= deadline:
                raise AssertionError("no matching request through the proxy within %ss; seen %r"
                                     % (timeout, self.requests[-10:]))
            time.sleep(0.01)

    def wait_response(self, pred, timeout=10, complete=False):
        """Waits for a request matching pred whose response status has been
        seen (and, with complete, whose whole response went to the
        client); returns it."""
        deadline = time.time() + timeout
        while True:
            with self.lock:
                for r in self.requests:
                    if r.status is not None and (r.response_complete or not complete) and pred(r):
                        return r
            if time.time() >= deadline:
                raise AssertionError("no matching response through the proxy within %ss; seen %r"
                                     % (timeout, self.requests[-10:]))
            time.sleep(0.01)

    def summary(self):
        with self.lock:
            kinds = {}
            for r in self.requests:
                kinds[r.kind] = kinds.get(r.kind, 0) + 1
            return {"connections": self.connections, "resets": self.resets,
                    "stalls": self.stalls, "delayed_chunks": self.delayed_chunks,
                    "answered": self.answered,
                    "requests": len(self.requests), "by_kind": kinds,
                    "faulted": [repr(r) for r in self.requests if r.fault],
                    "bytes_c2s": self.bytes_c2s, "bytes_s2c": self.bytes_s2c,
                    "rate": {d: b.rate if b else None for d, b in self._buckets.items()},
                    "upstream_failures": self.upstream_failures}

    # --- internals ----------------------------------------------------------

    def _call(self, fn):
        fut = asyncio.run_coroutine_threadsafe(self._wrap(fn), self.loop)
        return fut.result(10)

    async def _wrap(self, fn):
        return fn()

    def _refuse_now(self):
        if self.server is not None:
            self.server.close()
            self.server = None
        with self.lock:
            self.refused = True
            self.events.append((time.time(), "refusing"))

    def _reset_open_now(self):
        n = 0
        for c in list(self._conns.values()):
            if not c.dead:
                self._reset(c, "reset_open")
                n += 1
        return n

    def _log(self, text):
        self.events.append((time.time(), text))

    def _close(self, c, rst):
        if c.dead:
            return
        c.dead = True
        if rst:
            try:
                sock = c.cw.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            c.cw.transport.abort()
        else:
            c.cw.transport.close()
        if c.uw is not None:
            if rst:
                c.uw.transport.abort()
            else:
                c.uw.transport.close()
        with self.lock:
            self._conns.pop(c.index, None)

    def _reset(self, c, why):
        if c.dead:
            return
        with self.lock:
            self.resets += 1
            if c.cur is not None and not c.cur.complete and c.cur.fault is None:
                c.cur.fault = "reset"
                c.cur.fault_at = time.time()
            self._log("reset conn %d (%s) after %d bytes; request %r" % (c.index, why, c.c2s_bytes, c.cur))
        self._close(c, rst=True)

    async def _on_client(self, cr, cw):
        with self.lock:
            self.connections += 1
            c = _Conn(self, self.connections, cr, cw)
            self._conns[c.index] = c
            if c.index in self._reset_nth:
                c.reset_at = self._reset_nth.pop(c.index)
            elif self._reset_next:
                c.reset_at = self._reset_next.pop(0)
            if self._stall_next:
                secs, after = self._stall_next.pop(0)
                c.triggers.append((after, "stall", secs, None))
        try:
            # The reader from the server may run UPSTREAM_BUFFER ahead of what
            # went on: the queue in front of a throttled link, so that a
            # server slow for a moment does not leave the link idle.
            c.ur, c.uw = await asyncio.open_connection(*self.target,
                                                       limit=UPSTREAM_BUFFER // 2)
        except OSError as e:
            with self.lock:
                self.upstream_failures += 1
                self._log("conn %d: upstream connect failed: %s" % (c.index, e))
            # The server is down: look like it to the client.
            self._close(c, rst=True)
            return
        try:
            await asyncio.gather(self._pump_c2s(c), self._pump_s2c(c), return_exceptions=True)
        except asyncio.CancelledError:
            pass  # stop(): end quietly
        self._close(c, rst=False)

    def _delay_for(self, c, direction):
        with self.lock:
            d = self._delay[direction]
            sel = self._delay_select
        if d and (sel is None or sel(c.index)):
            return d
        return 0.0

    async def _wait_stall(self, c):
        """Waits out a stall of the connection; True if there was one."""
        waited = False
        while not c.dead:
            left = c.stall_until - time.time()
            if left <= 0:
                break
            waited = True
            await asyncio.sleep(min(left, 0.05))
        return waited

    def _got(self, c, direction, reader):
        """Notes, after a read, since when its bytes were in hand: since
        the read before if that one left bytes waiting in the reader."""
        if not c.backlog[direction]:
            c.since[direction] = time.monotonic()
        # asyncio's StreamReader keeps what it has read ahead in _buffer.
        c.backlog[direction] = bool(len(getattr(reader, "_buffer", b"")))

    def _parse(self, c, data):
        """Feeds client bytes to the request parser; adds triggers for new
        requests that match a rule.  Offsets are absolute in the c2s stream
        (data starts at c.parsed, which is c.c2s_bytes plus any bytes held)."""
        pos = 0
        base = c.parsed
        c.parsed += len(data)
        n = len(data)
        while pos < n:
            if c.body_left > 0:
                take = min(c.body_left, n - pos)
                c.body_left -= take
                pos += take
                continue
            # In headers.
            head_start = base + pos - len(c.head)
            need = data[pos:]
            buf = c.head + need
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                c.head = buf[-65536:]
                return
            consumed = end + 4 - len(c.head)
            head = buf[:end]
            c.head = b""
            pos += consumed
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 3:
                continue
            hdrs = {}
            names = []
            for l in lines[1:]:
                k, _, v = l.partition(":")
                hdrs[k.strip().lower()] = v.strip()
                names.append(k.strip().lower())
            with self.lock:
                req = Request(c.index, len(self.requests) + 1, parts[0], parts[1], hdrs)
                req.header_names = names
                self.requests.append(req)
                req.body_start = base + pos
                c.cur = req
                c.body_left = req.content_length
                if req.content_length == 0:
                    req.complete = True
                answered = reset = False
                for rule in self._rules:
                    if rule.action not in ("reset", "stall", "respond"):
                        continue
                    if rule.left > 0 and rule.pred(req):
                        rule.left -= 1
                        if rule.action == "respond":
                            # From the first byte of its head: none of it goes on.
                            c.triggers.append((head_start, "respond", rule.response, req))
                            self._log("rule respond %d armed for %r" % (rule.response[0], req))
                            answered = True
                            break
                        at = req.body_start + min(rule.after_body, req.content_length)
                        if rule.action == "reset" and rule.after_body >= req.content_length:
                            # The whole body goes, and the response never arrives.
                            at = req.body_start + req.content_length
                        c.triggers.append((at, rule.action, rule.seconds, req))
                        self._log("rule %s armed for %r at offset %d" % (rule.action, req, at))
                        reset = rule.action == "reset"
                        break
                if not answered:
                    # Its answer will come from the server, after those of
                    # the requests before it on this connection.
                    c.awaiting.append(req)
                if not answered and not reset:
                    for rule in self._rules:
                        if rule.action not in ("reset_response", "stall_response"):
                            continue
                        if rule.left > 0 and rule.pred(req):
                            rule.left -= 1
                            req._resp_rule = (rule.action, rule.after_body, rule.seconds)
                            self._log("rule %s armed for %r after %d response body bytes"
                                      % (rule.action, req, rule.after_body))
                            break

    def _responding(self):
        with self.lock:
            return any(r.action == "respond" and r.left > 0 for r in self._rules)

    def _hold_incomplete_head(self, c, data):
        """With respond rules set, returns the part of held + data that may
        go on now, keeping back the bytes of a head not complete yet (the
        parser has seen them: c.head)."""
        data = c.held + data
        c.held = b""
        if c.head and self._responding():
            keep = min(len(c.head), len(data))
            c.held = data[len(data) - keep:]
            data = data[:len(data) - keep]
        return data

    async def _drop(self, c, data):
        """Consumes what data holds of an answered request (not forwarded);
        once all of it has come, writes the proxy's answer.  Returns the rest."""
        if c.c2s_bytes < c.drop_until:
            skip = min(len(data), c.drop_until - c.c2s_bytes)
            c.c2s_bytes += skip
            data = data[skip:]
        if c.answer is not None and c.c2s_bytes >= c.drop_until:
            req, resp = c.answer
            c.answer = None
            with self.lock:
                req.body_forwarded = req.content_length
                req.complete = True
                head, _, body = resp[1].partition(b"\r\n\r\n")
                _, req.response_headers, _ = _parse_head(head)
                req.status = resp[0]
                req.response_length = len(body)
                req.response_forwarded = len(body)
                req.response_complete = True
                self._log("answered %r with %d" % (req, resp[0]))
            c.cw.write(resp[1])
            await c.cw.drain()
        return data

    def _account(self, c, upto):
        """Marks body bytes of the current request forwarded up to absolute
        offset upto."""
        r = c.cur
        if r is None:
            return
        r.body_forwarded = max(0, min(r.content_length, upto - r.body_start))
        if r.body_forwarded >= r.content_length:
            r.complete = True

    async def _pump_c2s(self, c):
        try:
            while not c.dead:
                data = await c.cr.read(self._read_size(c, "c2s"))
                self._got(c, "c2s", c.cr)
                if not data:
                    if c.uw is not None and not c.dead:
                        try:
                            c.uw.write_eof()
                        except (OSError, RuntimeError):
                            pass
                    return
                # Whole-connection reset point.
                if c.reset_at is not None and c.c2s_bytes + len(data) > c.reset_at:
                    keep = max(0, c.reset_at - c.c2s_bytes)
                    self._parse(c, data[:keep])
                    if keep:
                        await self._forward(c, data[:keep], "c2s")
                    self._account(c, c.c2s_bytes)
                    self._reset(c, "connection rule")
                    return
                self._parse(c, data)
                data = self._hold_incomplete_head(c, data)
                start = c.c2s_bytes
                end = start + len(data)
                while data and not c.dead:
                    data = await self._drop(c, data)
                    if not data:
                        break
                    trig = None
                    for t in sorted(c.triggers, key=lambda t: t[0]):
                        if t[0] <= end:
                            trig = t
                            break
                    if trig is None:
                        await self._forward(c, data, "c2s")
                        self._account(c, c.c2s_bytes)
                        break
                    c.triggers.remove(trig)
                    at, action, secs, req = trig
                    k = max(0, at - c.c2s_bytes)
                    if k:
                        await self._forward(c, data[:k], "c2s")
                        self._account(c, c.c2s_bytes)
                        data = data[k:]
                    if action == "respond":
                        with self.lock:
                            self.answered += 1
                            req.fault = "answered"
                            req.fault_at = time.time()
                            req.answered = secs[0]
                        c.drop_until = req.body_start + req.content_length
                        c.answer = (req, secs)
                        continue
                    if action == "reset":
                        if req is not None and req.fault is None:
                            req.fault = "reset"
                            req.fault_at = time.time()
                        self._reset(c, "request rule")
                        return
                    with self.lock:
                        self.stalls += 1
                        if req is not None:
                            req.fault = "stall"
                            req.fault_at = time.time()
                        c.stall_until = max(c.stall_until, time.time() + secs)
                        self._log("stall conn %d for %.1fs at offset %d; request %r"
                                  % (c.index, secs, c.c2s_bytes, req))
                    await self._wait_stall(c)
                    c.since["c2s"] = time.monotonic()
        except (ConnectionError, OSError):
            self._close(c, rst=False)

    async def _forward(self, c, data, direction):
        since = c.since[direction]
        if await self._wait_stall(c):
            since = time.monotonic()
        if c.dead:
            return
        d = self._delay_for(c, direction)
        if d:
            with self.lock:
                self.delayed_chunks += 1
            await asyncio.sleep(d)
            await self._wait_stall(c)
            since = time.monotonic()
            if c.dead:
                return
        w = c.uw if direction == "c2s" else c.cw
        # Response bytes are counted just before they go, so that a client
        # that has them finds its response recorded (request bytes, as
        # always, once written).
        early = direction == "s2c"
        if self._buckets[direction] is None:
            if early:
                self._count(c, direction, len(data))
            w.write(data)
            await w.drain()
            if not early:
                self._count(c, direction, len(data))
            return
        # Throttled: pieces of at most BURST bytes, each paid for first.
        for i in range(0, len(data), BURST):
            piece = data[i:i + BURST]
            b = self._buckets[direction]
            if b is not None:
                await b.take(len(piece), since)
                if c.dead:
                    return
            if early:
                self._count(c, direction, len(piece))
            w.write(piece)
            blocked = w.transport.get_write_buffer_size() > 0
            await w.drain()
            if blocked:
                # The receiver is the limit, not the link: no credit for
                # the time it kept the rest waiting.
                since = time.monotonic()
            if not early:
                self._count(c, direction, len(piece))

    def _count(self, c, direction, n):
        with self.lock:
            if direction == "c2s":
                c.c2s_bytes += n
                self.bytes_c2s += n
            else:
                c.s2c_bytes += n
                self.bytes_s2c += n
                self._account_s2c(c)

    def _read_size(self, c, direction):
        return DELAY_CHUNK if self._delay_for(c, direction) else CHUNK

    # --- responses ----------------------------------------------------------

    def _parse_response(self, c, data):
        """Feeds server bytes to the response parser (data starts at
        absolute s2c offset c.rparsed); records response heads on their
        requests and arms response rules as absolute s2c offsets."""
        base = c.rparsed
        c.rparsed += len(data)
        n = len(data)
        pos = 0
        while pos < n:
            mode = c.rmode
            if mode == "eof":
                return
            if mode == "length":
                take = min(c.rleft, n - pos)
                c.rleft -= take
                pos += take
                if c.rleft == 0:
                    self._response_end(c, base + pos)
                continue
            if mode == "chunked":
                if c.rchunk in ("data", "crlf"):
                    take = min(c.rleft, n - pos)
                    c.rleft -= take
                    pos += take
                    if c.rleft == 0:
                        if c.rchunk == "data":
                            c.rchunk, c.rleft = "crlf", 2
                        else:
                            c.rchunk = "size"
                    continue
                # A chunk-size line or a trailer line.
                j = data.find(b"\n", pos)
                if j < 0:
                    c.rline += data[pos:]
                    if len(c.rline) > 65536:
                        self._response_garbled(c, "chunk line too long")
                    return
                line = (c.rline + data[pos:j]).rstrip(b"\r")
                c.rline = b""
                pos = j + 1
                if c.rchunk == "size":
                    try:
                        size = int(line.split(b";")[0].strip(), 16)
                    except ValueError:
                        self._response_garbled(c, "bad chunk size %r" % line[:40])
                        return
                    if size == 0:
                        c.rchunk = "trailer"
                    else:
                        c.rchunk, c.rleft = "data", size
                elif not line:
                    self._response_end(c, base + pos)
                continue
            # In a head.
            buf = c.rhead + data[pos:pos + 65536]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) >= 65536:
                    self._response_garbled(c, "no end of head in 64 KiB")
                    return
                c.rhead = buf
                return
            pos += end + 4 - len(c.rhead)
            c.rhead = b""
            self._response_head(c, buf[:end], base + pos)

    def _response_garbled(self, c, why):
        """Not HTTP as this parser knows it: stop parsing this connection's
        responses (bytes still go through)."""
        c.rmode = "eof"
        with self.lock:
            self._log("conn %d: response parser gives up: %s" % (c.index, why))

    def _response_head(self, c, head, body_start):
        first, hdrs, _ = _parse_head(head)
        parts = first.split(" ", 2)
        status = None
        if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
            status = int(parts[1])
        if status is None:
            self._response_garbled(c, "bad status line %r" % first[:80])
            return
        if 100 <= status < 200 and status != 101:
            return              # interim (100 Continue): the real answer follows
        cl = hdrs.get("content-length")
        length = int(cl) if cl is not None and cl.isdigit() else None
        chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
        with self.lock:
            if c.awaiting:
                req = c.awaiting.popleft()
            else:
                # Nothing asked for it (e.g. a 408 before closing): parsed, not recorded.
                req = Request(c.index, 0, "?", "", {})
                self._log("conn %d: response %d to no request" % (c.index, status))
            req.status = status
            req.response_headers = hdrs
            req.response_length = None if chunked else length
            req.response_body_start = body_start
            if req.method == "HEAD" or status in (204, 304):
                body_len = 0
            elif status == 101:
                body_len = None         # a tunnel: runs to the close
            elif chunked:
                body_len = None
            else:
                body_len = length       # None: to the close
            c.rcur = req
            c.rinflight.append(req)
            rule = req._resp_rule
            if rule is not None:
                action, after, secs = rule
                at = body_start + (after if body_len is None else min(after, body_len))
                c.rtriggers.append([at, action, secs, req])
        if body_len == 0:
            self._response_end(c, body_start)
        elif body_len is not None:
            c.rmode, c.rleft = "length", body_len
        elif chunked and status != 101:
            c.rmode, c.rchunk, c.rline = "chunked", "size", b""
        else:
            c.rmode = "eof"

    def _response_end(self, c, end):
        """The current response ends at absolute s2c offset end."""
        r = c.rcur
        c.rmode = None
        c.rcur = None
        if r is None:
            return
        with self.lock:
            r.response_body_end = end
            for t in c.rtriggers:
                if t[3] is r and t[0] > end:
                    t[0] = end

    def _account_s2c(self, c):
        """Response bookkeeping after c.s2c_bytes grew (lock held)."""
        pos = c.s2c_bytes
        keep = []
        for r in c.rinflight:
            start = r.response_body_start
            if pos >= start:
                fwd = pos - start
                if r.response_body_end is not None:
                    fwd = min(fwd, r.response_body_end - start)
                    if pos >= r.response_body_end:
                        r.response_complete = True
                r.response_forwarded = fwd
            if not r.response_complete:
                keep.append(r)
        c.rinflight = keep

    async def _flush_client(self, c, patience=5.0):
        """Waits until every byte written to the client has been
        acknowledged by it (asyncio's buffer empty, then the socket's send
        queue, SIOCOUTQ), or for patience seconds without progress.  True
        when flushed."""
        sock = c.cw.get_extra_info("socket")
        last = None
        since = time.monotonic()
        while not c.dead:
            left = c.cw.transport.get_write_buffer_size()
            if sock is not None:
                try:
                    left += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                                           b"\0\0\0\0"))[0]
                except (OSError, ValueError):
                    pass
            if left == 0:
                return True
            if left != last:
                last, since = left, time.monotonic()
            elif time.monotonic() - since > patience:
                with self.lock:
                    self._log("conn %d: client not reading, %d bytes unacknowledged"
                              % (c.index, left))
                return False
            await asyncio.sleep(0.002)
        return False

    async def _response_fault(self, c, action, secs, req):
        """Fires a response rule (the bytes before its point are forwarded)."""
        if action == "reset_response":
            with self.lock:
                req.fault = "reset"
                req.fault_at = time.time()
                self._log("response reset armed on conn %d after %d body bytes; request %r"
                          % (c.index, req.response_forwarded, req))
            await self._flush_client(c)
            self._reset(c, "response rule")
            return
        with self.lock:
            self.stalls += 1
            req.fault = "stall"
            req.fault_at = time.time()
            self._log("stall response on conn %d for %.1fs after %d body bytes; request %r"
                      % (c.index, secs, req.response_forwarded, req))
        until = time.monotonic() + secs
        while not c.dead:
            left = until - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 0.05))
        c.since["s2c"] = time.monotonic()   # held on purpose: no credit for it

    async def _pump_s2c(self, c):
        try:
            while not c.dead:
                data = await c.ur.read(self._read_size(c, "s2c"))
                self._got(c, "s2c", c.ur)
                if not data:
                    if not c.dead:
                        if c.rmode == "eof" and c.rcur is not None:
                            self._response_end(c, c.rparsed)
                            with self.lock:
                                self._account_s2c(c)
                        try:
                            c.cw.write_eof()
                        except (OSError, RuntimeError):
                            pass
                        # Let the client finish reading, then close both.
                        self._close(c, rst=False)
                    return
                self._parse_response(c, data)
                end = c.s2c_bytes + len(data)
                while data and not c.dead:
                    trig = None
                    for t in c.rtriggers:
                        if t[0] <= end and (trig is None or t[0] < trig[0]):
                            trig = t
                    if trig is None:
                        await self._forward(c, data, "s2c")
                        break
                    c.rtriggers.remove(trig)
                    at, action, secs, req = trig
                    if req._resp_rule is None:
                        continue        # clear() dropped it
                    k = max(0, at - c.s2c_bytes)
                    if k:
                        await self._forward(c, data[:k], "s2c")
                        data = data[k:]
                    if c.dead:
                        return
                    await self._response_fault(c, action, secs, req)
        except (ConnectionError, OSError):
            self._close(c, rst=False)
