#include "inputsrv.h"

#include "alloc.h"
#include "check.h"
#include "fakes3.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- The Range parser ---- */

static void test_parse_range(void) {
  static const struct {
    const char *v;
    uint64_t size;
    int rc;
    uint64_t first, last;
  } cases[] = {
      {"bytes=0-", 100, 1, 0, 99},
      {"bytes=10-19", 100, 1, 10, 19},
      {"bytes=10-", 100, 1, 10, 99},
      {"bytes=-5", 100, 1, 95, 99},
      {"bytes=-500", 100, 1, 0, 99},
      {"bytes=5-1000000", 100, 1, 5, 99},
      {"bytes=99-99", 100, 1, 99, 99},
      {"BYTES=1-2", 100, 1, 1, 2},
      {"bytes=100-", 100, -1, 0, 0},
      {"bytes=100-200", 100, -1, 0, 0},
      {"bytes=-0", 100, -1, 0, 0},
      {"bytes=0-", 0, -1, 0, 0},
      {"bytes=-5", 0, -1, 0, 0},
      {"bytes=0-1,5-6", 100, 0, 0, 0},
      {"items=0-1", 100, 0, 0, 0},
      {"bytes=a-", 100, 0, 0, 0},
      {"bytes=5-2", 100, 0, 0, 0},
      {"bytes=-", 100, 0, 0, 0},
      {"bytes=", 100, 0, 0, 0},
      {"bytes=1-2x", 100, 0, 0, 0},
      {"bytes=1-x", 100, 0, 0, 0},
      {"bytes=99999999999999999999-", 100, 0, 0, 0},
      {NULL, 100, 0, 0, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint64_t first = 12345, last = 12345;
    const char *v = cases[i].v;
    int rc = cap_inputsrv_parse_range(v, v ? strlen(v) : 0, cases[i].size, &first, &last);
    if (!CHECK_EQ_INT(rc, cases[i].rc)) {
      fprintf(stderr, "  case %zu: %s (size %llu)\n", i, v ? v : "NULL",
              (unsigned long long)cases[i].size);
      continue;
    }
    if (rc == 1) {
      CHECK_EQ_INT(first, cases[i].first);
      CHECK_EQ_INT(last, cases[i].last);
    }
  }
  /* Only len bytes are read: the rest of the buffer is not the header's. */
  uint64_t first = 0, last = 0;
  CHECK_EQ_INT(cap_inputsrv_parse_range("bytes=10-19junk", 11, 100, &first, &last), 1);
  CHECK_EQ_INT(first, 10);
  CHECK_EQ_INT(last, 19);
}

/* ---- A raw HTTP client on the test's loop ---- */

struct client {
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_write_t w;
  char *req;
  char *data; /* Everything read, NUL-terminated. */
  size_t len, cap;
  int connect_status;
  int read_status;   /* What ended the reading (UV_EOF, a reset). */
  int pause_on_data; /* Stop reading as soon as some bytes arrived. */
  int paused;
  int closed;
  /* Filled by client_parse. */
  int status;
  char head[4096];
  const char *body;
  size_t body_len;
};

static void client_on_close(uv_handle_t *h) {
  ((struct client *)h->data)->closed = 1;
}

static void client_close(struct client *cl) {
  if (!uv_is_closing((uv_handle_t *)&cl->tcp))
    uv_close((uv_handle_t *)&cl->tcp, client_on_close);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct client *cl = h->data;
  (void)suggested;
  if (cl->cap - cl->len < 65537) {
    cl->cap = cl->cap * 2 + 65537;
    cl->data = xrealloc(cl->data, cl->cap);
  }
  *buf = uv_buf_init(cl->data + cl->len, (unsigned)(cl->cap - cl->len - 1));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct client *cl = s->data;
  (void)buf;
  if (n < 0) {
    cl->read_status = (int)n;
    client_close(cl);
    return;
  }
  cl->len += (size_t)n;
  cl->data[cl->len] = '\0';
  if (cl->pause_on_data && cl->len > 0 && !cl->paused) {
    cl->paused = 1;
    uv_read_stop(s);
  }
}

static void client_written(uv_write_t *w, int status) {
  (void)w;
  (void)status;
}

static void client_connected(uv_connect_t *req, int status) {
  struct client *cl = req->data;
  cl->connect_status = status;
  if (status < 0) {
    client_close(cl);
    return;
  }
  uv_buf_t b = uv_buf_init(cl->req, (unsigned)strlen(cl->req));
  uv_write(&cl->w, (uv_stream_t *)&cl->tcp, &b, 1, client_written);
  uv_read_start((uv_stream_t *)&cl->tcp, client_alloc, client_read);
}

/* Connects to 127.0.0.1:port and sends the request printed from fmt.  A
 * small receive buffer keeps the kernel from absorbing a paused body. */
static void client_open(struct client *cl, uv_loop_t *loop, int port, int small_rcvbuf,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void client_open(struct client *cl, uv_loop_t *loop, int port, int small_rcvbuf,
                        const char *fmt, ...) {
  memset(cl, 0, sizeof(*cl));
  va_list ap;
  va_start(ap, fmt);
  char tmp[1024];
  vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  cl->req = xstrdup(tmp);
  cl->data = xmalloc(1);
  cl->cap = 1;
  cl->data[0] = '\0';
  uv_tcp_init_ex(loop, &cl->tcp, AF_INET);
  cl->tcp.data = cl;
  cl->conn.data = cl;
  if (small_rcvbuf) {
    int v = 4096;
    uv_recv_buffer_size((uv_handle_t *)&cl->tcp, &v);
  }
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  uv_tcp_connect(&cl->conn, &cl->tcp, (const struct sockaddr *)&a, client_connected);
}

static void client_free(struct client *cl) {
  free(cl->req);
  free(cl->data);
  cl->req = cl->data = NULL;
}

/* Splits what was read into status, head and body. */
static void client_parse(struct client *cl) {
  cl->status = 0;
  cl->head[0] = '\0';
  cl->body = NULL;
  cl->body_len = 0;
  long blank = srv_blank_line(cl->data, cl->len);
  if (blank < 0)
    return;
  snprintf(cl->head, sizeof(cl->head), "%.*s", (int)blank + 4, cl->data);
  if (strncmp(cl->head, "HTTP/1.1 ", 9) == 0)
    cl->status = atoi(cl->head + 9);
  cl->body = cl->data + blank + 4;
  cl->body_len = cl->len - (size_t)blank - 4;
}

/* The value of a response header, or "" (static buffer). */
static const char *client_header(const struct client *cl, const char *name) {
  static char v[256];
  size_t vl;
  const char *p = srv_header(cl->head, name, &vl);
  snprintf(v, sizeof(v), "%.*s", p ? (int)vl : 0, p ? p : "");
  return v;
}

/* Sends one request and reads the answer until the connection closes. */
static int exchange(struct s3env *e, struct client *cl, int port, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int exchange(struct s3env *e, struct client *cl, int port, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[1024];
  vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  client_open(cl, &e->loop, port, 0, "%s", tmp);
  int ok = s3env_run(e, &cl->closed, 10000);
  if (!ok) {
    client_close(cl);
    s3env_run(e, &cl->closed, 1000);
  }
  client_parse(cl);
  return ok;
}

/* ---- The endpoint against the fake store ---- */

struct call {
  struct cap_s3_req r;
  int done, freed;
};

static void call_done(struct cap_s3_req *r) {
  ((struct call *)r)->done++;
}

static void call_freed(struct cap_s3_req *r) {
  ((struct call *)r)->freed++;
}

/* Sends one request of the client to the fake and waits for it. */
static void call_run(struct s3env *e, struct call *c, const char *method, const char *key,
                     uint64_t first, uint64_t last, const char *if_match) {
  memset(c, 0, sizeof(*c));
  cap_s3_req_init(&c->r, &e->s3);
  c->r.method = method;
  c->r.key = xstrdup(key);
  c->r.ranged = last != 0;
  c->r.range_start = first;
  c->r.range_end = last;
  c->r.if_match = if_match;
  c->r.done = call_done;
  cap_s3_start(&c->r);
  CHECK(s3env_run(e, &c->done, 3000));
}

static void call_free(struct s3env *e, struct call *c) {
  cap_s3_req_free(&c->r, call_freed);
  CHECK(s3env_run(e, &c->freed, 1000));
}

/* What the endpoint relies on in the fake: HEAD's length and ETag, ranges
 * and If-Match. */
static void test_fake_store(void) {
  struct s3env e;
  if (!CHECK_EQ_INT(s3env_init(&e, 0), 0))
    return;
  fake_put(&e.fake, "k", "0123456789", 10);
  struct call c;
  call_run(&e, &c, "HEAD", "k", 0, 0, NULL);
  CHECK_EQ_INT(c.r.status, 200);
  CHECK_EQ_INT(c.r.length, 10);
  CHECK_EQ_STR(c.r.etag, FAKE_ETAG);
  call_free(&e, &c);
  call_run(&e, &c, "GET", "k", 2, 5, FAKE_ETAG);
  CHECK_EQ_INT(c.r.status, 206);
  CHECK_EQ_MEM(c.r.resp.data, c.r.resp.len, "2345", 4);
  CHECK_EQ_STR(e.fake.last_range, "bytes=2-5");
  call_free(&e, &c);
  call_run(&e, &c, "GET", "k", 7, CAP_S3_RANGE_OPEN, NULL);
  CHECK_EQ_INT(c.r.status, 206);
  CHECK_EQ_MEM(c.r.resp.data, c.r.resp.len, "789", 3);
  call_free(&e, &c);
  call_run(&e, &c, "GET", "k", 10, CAP_S3_RANGE_OPEN, NULL);
  CHECK_EQ_INT(c.r.status, 416);
  CHECK_EQ_STR(c.r.err_code, "InvalidRange");
  call_free(&e, &c);
  call_run(&e, &c, "GET", "k", 0, 3, "\"x\"");
  CHECK_EQ_INT(c.r.status, 412);
  CHECK_EQ_STR(c.r.err_code, "PreconditionFailed");
  call_free(&e, &c);
  call_run(&e, &c, "HEAD", "k", 0, 0, "\"x\"");
  CHECK_EQ_INT(c.r.status, 412);
  call_free(&e, &c);
  CHECK_EQ_INT(e.fake.precondition_failed, 2);
  CHECK_EQ_INT(e.fake.unsatisfiable, 1);
  CHECK_EQ_INT(e.fake.ranges, 2);
  CHECK_EQ_INT(s3env_fini(&e), 0);
}

#define OBJ_SIZE (300 * 1024)
#define BIG_SIZE (4 * 1024 * 1024)

static void pattern(char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    p[i] = (char)((i * 131 + seed) ^ (i >> 9));
}

struct fault_seen {
  int n;
  enum cap_insrc_fault why;
  long status;
  char code[64];
  int close_src; /* Close the source from on_fault, as a job does. */
};

static void on_fault(struct cap_insrc *src, enum cap_insrc_fault why, const struct cap_s3_req *r) {
  struct fault_seen *f = src->data;
  f->n++;
  f->why = why;
  f->status = r->status;
  snprintf(f->code, sizeof(f->code), "%s", r->err_code);
  if (f->close_src)
    cap_insrc_close(src);
}

static int stopped;

static void on_stopped(struct cap_inputsrv *srv) {
  (void)srv;
  stopped++;
}

#define GET_FMT "GET /in/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n"

/* Runs the loop until srv has sent some body bytes and its counter has
 * not moved for 200 ms (at most 10 s); returns the counter. */
static uint64_t settle(struct s3env *e, struct cap_inputsrv *srv) {
  uint64_t before = srv->stats.bytes;
  for (int i = 0; i < 50; i++) {
    s3env_run_for(e, 200);
    if (srv->stats.bytes == before && before > 0)
      break;
    before = srv->stats.bytes;
  }
  return before;
}

static void test_endpoint(void) {
  struct s3env e;
  if (!CHECK_EQ_INT(s3env_init(&e, 3), 0))
    return;
  struct cap_inputsrv srv;
  if (!CHECK_EQ_INT(cap_inputsrv_start(&srv, &e.loop, &e.s3), 0)) {
    s3env_fini(&e);
    return;
  }
  CHECK(srv.port > 0);
  char *obj = xmalloc(OBJ_SIZE);
  pattern(obj, OBJ_SIZE, 7);
  fake_put(&e.fake, "in/video.mp4", obj, OBJ_SIZE);

  struct fault_seen fault;
  memset(&fault, 0, sizeof(fault));
  struct cap_insrc src;
  memset(&src, 0, sizeof(src));
  src.key = "in/video.mp4";
  snprintf(src.etag, sizeof(src.etag), "%s", FAKE_ETAG);
  src.size = OBJ_SIZE;
  src.on_fault = on_fault;
  src.data = &fault;
  /* A source is opened only on a listening endpoint. */
  CHECK_EQ_INT(cap_insrc_open(&src, &srv), 0);
  CHECK_EQ_INT(strlen(src.secret), 32);
  char url[96];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/in/%s", srv.port, src.secret);
  CHECK_EQ_STR(src.url, url);

  struct client cl;
  /* (a) A range: 206, its Content-Range, the slice; the store was asked
   * for that range, pinned to the ETag. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=1000-200999\r\n"));
  CHECK_EQ_INT(cl.status, 206);
  CHECK_EQ_STR(client_header(&cl, "Content-Range"), "bytes 1000-200999/307200");
  CHECK_EQ_STR(client_header(&cl, "Content-Length"), "200000");
  CHECK_EQ_STR(client_header(&cl, "Accept-Ranges"), "bytes");
  CHECK_EQ_MEM(cl.body, cl.body_len, obj + 1000, 200000);
  CHECK_EQ_STR(e.fake.last_range, "bytes=1000-200999");
  CHECK_EQ_STR(e.fake.last_if_match, FAKE_ETAG);
  CHECK_EQ_INT(e.fake.count[OP_GET], 1);
  client_free(&cl);
  /* (g) The first read is a seek (it does not start at 0). */
  CHECK_EQ_INT(src.requests, 1);
  CHECK_EQ_INT(src.bytes, 200000);
  CHECK_EQ_INT(src.seeks, 1);
  CHECK_EQ_INT(srv.stats.requests, 1);
  CHECK_EQ_INT(srv.stats.bytes, 200000);
  CHECK_EQ_INT(srv.stats.seeks, 1);

  /* A read going on where the last one stopped is no seek. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=201000-\r\n"));
  CHECK_EQ_INT(cl.status, 206);
  CHECK_EQ_STR(client_header(&cl, "Content-Range"), "bytes 201000-307199/307200");
  CHECK_EQ_MEM(cl.body, cl.body_len, obj + 201000, OBJ_SIZE - 201000);
  client_free(&cl);
  CHECK_EQ_INT(src.requests, 2);
  CHECK_EQ_INT(src.seeks, 1);
  CHECK_EQ_INT(srv.stats.seeks, 1);
  CHECK_EQ_INT(src.bytes, 200000 + OBJ_SIZE - 201000);

  /* (b) No Range: 200 and the whole object; from 0 after the end: a seek. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, ""));
  CHECK_EQ_INT(cl.status, 200);
  CHECK_EQ_STR(client_header(&cl, "Content-Range"), "");
  CHECK_EQ_STR(client_header(&cl, "Content-Length"), "307200");
  CHECK_EQ_MEM(cl.body, cl.body_len, obj, OBJ_SIZE);
  CHECK_EQ_STR(e.fake.last_range, "bytes=0-307199");
  client_free(&cl);
  CHECK_EQ_INT(src.requests, 3);
  CHECK_EQ_INT(src.seeks, 2);
  uint64_t bytes = 200000 + (OBJ_SIZE - 201000) + OBJ_SIZE;
  CHECK_EQ_INT(src.bytes, bytes);
  CHECK_EQ_INT(srv.stats.bytes, bytes);

  /* (c) HEAD: the length, no body, no store read. */
  int gets = e.fake.count[OP_GET];
  CHECK(exchange(&e, &cl, srv.port,
                 "HEAD /in/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 src.secret));
  CHECK_EQ_INT(cl.status, 200);
  CHECK_EQ_STR(client_header(&cl, "Content-Length"), "307200");
  CHECK_EQ_INT(cl.body_len, 0);
  client_free(&cl);
  CHECK_EQ_INT(e.fake.count[OP_GET], gets);
  CHECK_EQ_INT(src.requests, 4);
  CHECK_EQ_INT(srv.stats.requests, 4);
  CHECK_EQ_INT(src.seeks, 2);
  CHECK_EQ_INT(src.bytes, bytes);

  /* (d) Another secret: 404 with the error's code. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, "0123456789abcdef0123456789abcdef", ""));
  CHECK_EQ_INT(cl.status, 404);
  CHECK_EQ_STR(client_header(&cl, "Content-Type"), "application/json");
  CHECK(cl.body && strstr(cl.body, "\"not_found\"") != NULL);
  client_free(&cl);
  /* Not the secret's length, and outside /in/. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, "abc", ""));
  CHECK_EQ_INT(cl.status, 404);
  client_free(&cl);
  CHECK(exchange(&e, &cl, srv.port,
                 "GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", src.secret));
  CHECK_EQ_INT(cl.status, 404);
  client_free(&cl);
  CHECK_EQ_INT(srv.stats.refused, 3);

  /* (e) Any other method: 405, even on the right path. */
  CHECK(exchange(&e, &cl, srv.port,
                 "DELETE /in/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 src.secret));
  CHECK_EQ_INT(cl.status, 405);
  CHECK(cl.body && strstr(cl.body, "method_not_allowed") != NULL);
  client_free(&cl);
  CHECK_EQ_INT(srv.stats.refused, 4);
  CHECK_EQ_INT(srv.stats.requests, 4);
  CHECK_EQ_INT(e.fake.count[OP_GET], gets);
  CHECK_EQ_INT(e.fake.count[OP_DELETE], 0);

  /* (f) Past the end: 416 with the size, no store read. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=307200-\r\n"));
  CHECK_EQ_INT(cl.status, 416);
  CHECK_EQ_STR(client_header(&cl, "Content-Range"), "bytes */307200");
  CHECK_EQ_INT(cl.body_len, 0);
  client_free(&cl);
  CHECK_EQ_INT(e.fake.count[OP_GET], gets);
  CHECK_EQ_INT(srv.stats.requests, 5);
  CHECK_EQ_INT(srv.stats.bytes, bytes);

  /* A malformed Range is ignored: the whole object. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=0-1,5-6\r\n"));
  CHECK_EQ_INT(cl.status, 200);
  CHECK_EQ_MEM(cl.body, cl.body_len, obj, OBJ_SIZE);
  client_free(&cl);
  bytes += OBJ_SIZE;

  /* A bad request line: 400 and closed. */
  CHECK(exchange(&e, &cl, srv.port, "NOT HTTP AT ALL\r\n\r\n"));
  CHECK_EQ_INT(cl.status, 400);
  client_free(&cl);

  /* (l) Keep-alive: two requests on one connection, the second pipelined
   * behind the first, answered in turn. */
  CHECK(exchange(&e, &cl, srv.port,
                 "GET /in/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=0-9\r\n\r\n" GET_FMT,
                 src.secret, src.secret, "Range: bytes=10-19\r\n"));
  CHECK_EQ_INT(cl.status, 206);
  CHECK_EQ_STR(client_header(&cl, "Content-Range"), "bytes 0-9/307200");
  if (CHECK(cl.body_len > 10)) {
    CHECK_EQ_MEM(cl.body, 10, obj, 10);
    const char *second = cl.body + 10;
    CHECK(strncmp(second, "HTTP/1.1 206", 12) == 0);
    long blank = srv_blank_line(second, cl.body_len - 10);
    if (CHECK(blank > 0)) {
      CHECK(strstr(second, "Content-Range: bytes 10-19/307200\r\n") != NULL);
      CHECK_EQ_MEM(second + blank + 4, cl.body_len - 10 - (size_t)blank - 4, obj + 10, 10);
    }
  }
  client_free(&cl);
  bytes += 20;
  CHECK_EQ_INT(srv.stats.bytes, bytes);

  /* (m) The store fails before answering, then mid-body: the child sees one
   * intact body; the read went on from the byte reached (a resume). */
  fake_fail(&e.fake, OP_GET, 1, 503, "SlowDown");
  gets = e.fake.count[OP_GET];
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=100-100099\r\n"));
  CHECK_EQ_INT(cl.status, 206);
  CHECK_EQ_MEM(cl.body, cl.body_len, obj + 100, 100000);
  client_free(&cl);
  CHECK_EQ_INT(e.fake.count[OP_GET], gets + 2);
  CHECK_EQ_INT(srv.stats.resumes, 0); /* No byte had come: a retry, no resume. */
  fake_cut(&e.fake, 1, 30000);
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=100-100099\r\n"));
  CHECK_EQ_INT(cl.status, 206);
  CHECK_EQ_MEM(cl.body, cl.body_len, obj + 100, 100000);
  client_free(&cl);
  CHECK_EQ_INT(e.fake.count[OP_GET], gets + 4);
  CHECK_EQ_STR(e.fake.last_range, "bytes=30100-100099");
  CHECK_EQ_INT(srv.stats.resumes, 1);
  CHECK_EQ_INT(src.resumes, 1);
  CHECK_EQ_INT(fault.n, 0);
  bytes += 200000;
  CHECK_EQ_INT(srv.stats.bytes, bytes);

  /* (h) The object is no longer the one opened: the child gets the head,
   * then the connection closes short; on_fault runs once. */
  snprintf(src.etag, sizeof(src.etag), "\"other\"");
  int failed = e.fake.precondition_failed;
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=0-999\r\n"));
  CHECK_EQ_INT(cl.status, 206);
  CHECK_EQ_STR(client_header(&cl, "Content-Length"), "1000");
  CHECK_EQ_INT(cl.body_len, 0);
  client_free(&cl);
  CHECK_EQ_INT(e.fake.precondition_failed, failed + 1);
  CHECK_EQ_STR(e.fake.last_if_match, "\"other\"");
  CHECK_EQ_INT(fault.n, 1);
  CHECK_EQ_INT(fault.why, CAP_INSRC_CHANGED);
  CHECK_EQ_INT(fault.status, 412);
  CHECK_EQ_STR(fault.code, "PreconditionFailed");
  CHECK_EQ_INT(src.fault, CAP_INSRC_CHANGED);
  /* A second failed read tells no one again. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=0-999\r\n"));
  CHECK_EQ_INT(cl.body_len, 0);
  client_free(&cl);
  CHECK_EQ_INT(fault.n, 1);
  snprintf(src.etag, sizeof(src.etag), "%s", FAKE_ETAG);

  /* A source whose object is gone (404), closed from inside on_fault with
   * its connection still reading. */
  struct fault_seen gone_fault;
  memset(&gone_fault, 0, sizeof(gone_fault));
  gone_fault.close_src = 1;
  struct cap_insrc gone;
  memset(&gone, 0, sizeof(gone));
  gone.key = "in/missing";
  snprintf(gone.etag, sizeof(gone.etag), "%s", FAKE_ETAG);
  gone.size = 5000;
  gone.on_fault = on_fault;
  gone.data = &gone_fault;
  CHECK_EQ_INT(cap_insrc_open(&gone, &srv), 0);
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, gone.secret, ""));
  CHECK_EQ_INT(cl.status, 200);
  CHECK_EQ_INT(cl.body_len, 0);
  client_free(&cl);
  CHECK_EQ_INT(gone_fault.n, 1);
  CHECK_EQ_INT(gone_fault.why, CAP_INSRC_CHANGED);
  CHECK_EQ_INT(gone_fault.status, 404);
  CHECK_EQ_INT(gone.open, 0);
  CHECK(srv.srcs == &src);
  CHECK_EQ_INT(srv.nconns, 0);

  /* (i) Closed: its path answers 404; closing twice is harmless. */
  cap_insrc_close(&src);
  cap_insrc_close(&src);
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, ""));
  CHECK_EQ_INT(cl.status, 404);
  client_free(&cl);
  CHECK(srv.srcs == NULL);
  /* The old secret was wiped, so the URL kept is what must 404. */
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, url + strlen(url) - 32, ""));
  CHECK_EQ_INT(cl.status, 404);
  client_free(&cl);

  /* An object of 0 bytes: 200 with no body, and no store read. */
  fake_put(&e.fake, "in/empty", "", 0);
  struct cap_insrc empty;
  memset(&empty, 0, sizeof(empty));
  empty.key = "in/empty";
  snprintf(empty.etag, sizeof(empty.etag), "%s", FAKE_ETAG);
  CHECK_EQ_INT(cap_insrc_open(&empty, &srv), 0);
  gets = e.fake.count[OP_GET];
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, empty.secret, ""));
  CHECK_EQ_INT(cl.status, 200);
  CHECK_EQ_STR(client_header(&cl, "Content-Length"), "0");
  CHECK_EQ_INT(cl.body_len, 0);
  client_free(&cl);
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, empty.secret, "Range: bytes=0-\r\n"));
  CHECK_EQ_INT(cl.status, 416);
  client_free(&cl);
  CHECK_EQ_INT(e.fake.count[OP_GET], gets);
  cap_insrc_close(&empty);

  stopped = 0;
  cap_inputsrv_stop(&srv, on_stopped);
  CHECK(s3env_run(&e, &stopped, 2000));
  CHECK_EQ_INT(srv.nconns, 0);
  /* Stopped: no source opens. */
  CHECK_EQ_INT(cap_insrc_open(&empty, &srv), -ENOTCONN);
  free(obj);
  CHECK_EQ_INT(s3env_fini(&e), 0);
}

/* (j) A child that stops reading: the store read pauses (the bytes sent
 * stall far short of the body), and goes on when it reads again. */
static void test_backpressure(void) {
  struct s3env e;
  if (!CHECK_EQ_INT(s3env_init(&e, 3), 0))
    return;
  struct cap_inputsrv srv;
  if (!CHECK_EQ_INT(cap_inputsrv_start(&srv, &e.loop, &e.s3), 0)) {
    s3env_fini(&e);
    return;
  }
  srv.wq_max = 4096;
  char *obj = xmalloc(BIG_SIZE);
  pattern(obj, BIG_SIZE, 3);
  fake_put(&e.fake, "big", obj, BIG_SIZE);
  struct cap_insrc src;
  memset(&src, 0, sizeof(src));
  src.key = "big";
  snprintf(src.etag, sizeof(src.etag), "%s", FAKE_ETAG);
  src.size = BIG_SIZE;
  CHECK_EQ_INT(cap_insrc_open(&src, &srv), 0);

  struct client cl;
  client_open(&cl, &e.loop, srv.port, 1, GET_FMT, src.secret, "");
  cl.pause_on_data = 1;
  CHECK(s3env_run(&e, &cl.paused, 5000));
  uint64_t stalled = settle(&e, &srv);
  /* The kernel's buffers hold some, the queue 4 KiB: far from 2 MiB. */
  CHECK(stalled > 0);
  CHECK(stalled < BIG_SIZE / 2);
  /* Still held back a while later, the connection open. */
  s3env_run_for(&e, 300);
  CHECK(srv.stats.bytes < BIG_SIZE / 2);
  CHECK_EQ_INT(cl.closed, 0);
  CHECK_EQ_INT(srv.nconns, 1);
  /* It reads again: the rest arrives, intact, from the same store read. */
  cl.pause_on_data = 0;
  uv_read_start((uv_stream_t *)&cl.tcp, client_alloc, client_read);
  CHECK(s3env_run(&e, &cl.closed, 10000));
  client_parse(&cl);
  CHECK_EQ_INT(cl.status, 200);
  CHECK_EQ_MEM(cl.body, cl.body_len, obj, BIG_SIZE);
  CHECK_EQ_INT(srv.stats.bytes, BIG_SIZE);
  CHECK_EQ_INT(e.fake.count[OP_GET], 1);
  CHECK_EQ_INT(srv.stats.resumes, 0);
  client_free(&cl);

  /* A child that leaves in the middle of a body (ffmpeg seeks so): its
   * connection and store read end, and the next read is served. */
  client_open(&cl, &e.loop, srv.port, 1, GET_FMT, src.secret, "");
  cl.pause_on_data = 1;
  CHECK(s3env_run(&e, &cl.paused, 5000));
  settle(&e, &srv);
  CHECK_EQ_INT(srv.nconns, 1);
  client_close(&cl);
  CHECK(s3env_run(&e, &cl.closed, 2000));
  client_free(&cl);
  for (int i = 0; i < 100 && srv.nconns > 0; i++)
    s3env_run_for(&e, 20);
  CHECK_EQ_INT(srv.nconns, 0);
  CHECK(exchange(&e, &cl, srv.port, GET_FMT, src.secret, "Range: bytes=4000000-\r\n"));
  CHECK_EQ_INT(cl.status, 206);
  CHECK_EQ_MEM(cl.body, cl.body_len, obj + 4000000, BIG_SIZE - 4000000);
  client_free(&cl);
  CHECK_EQ_INT(src.seeks, 2);
  CHECK_EQ_INT(e.fake.count[OP_GET], 3);

  /* (k) Stopped with a child connected in the middle of a paused body:
   * everything closes and is freed, the store read canceled. */
  client_open(&cl, &e.loop, srv.port, 1, GET_FMT, src.secret, "");
  cl.pause_on_data = 1;
  CHECK(s3env_run(&e, &cl.paused, 5000));
  uint64_t before = srv.stats.bytes;
  CHECK(settle(&e, &srv) - before < BIG_SIZE / 2);
  CHECK_EQ_INT(srv.nconns, 1);
  /* And one more connected that has sent nothing yet. */
  struct client idle;
  client_open(&idle, &e.loop, srv.port, 0, "GET /in/");
  s3env_run_for(&e, 50);
  CHECK_EQ_INT(srv.nconns, 2);
  stopped = 0;
  cap_inputsrv_stop(&srv, on_stopped);
  CHECK(s3env_run(&e, &stopped, 2000));
  CHECK_EQ_INT(stopped, 1);
  CHECK_EQ_INT(srv.nconns, 0);
  CHECK(srv.conns == NULL);
  CHECK(s3env_run(&e, &idle.closed, 2000));
  client_close(&cl);
  CHECK(s3env_run(&e, &cl.closed, 2000));
  client_free(&cl);
  client_free(&idle);
  /* The source stays the caller's; closing it now is harmless. */
  cap_insrc_close(&src);
  free(obj);
  CHECK_EQ_INT(s3env_fini(&e), 0);
}

int main(void) {
  alarm(120);
  test_parse_range();
  test_fake_store();
  test_endpoint();
  test_backpressure();
  return check_report();
}
