/* Connections end to end: a real server (cap_server_start on port 0) and
 * real client sockets, all on one libuv loop.  The clients are uv_tcp_t
 * handles on the same loop as the server, so every step is driven by
 * running the loop until a condition holds; a guard timer fails the test
 * if one never does.  No threads, no sleeps. */
#define _GNU_SOURCE /* nftw */
#include "app.h"
#include "config.h"
#include "connset.h"
#include "container.h"
#include "log.h"
#include "metrics.h"
#include "reqid.h"
#include "server.h"

#include "check.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define TOKEN "test-token-0123456789abcdef"
/* The connection budget of the server under test: small, so that the
 * limit and the idle reuse (from max - max/16 = 15 live on) are reached
 * with a handful of sockets. */
#define MAX_CONNS 16
/* How long one wait may take before the test fails. */
#define GUARD_MS 10000

static char data_dir[64];
static uv_loop_t loop;
static struct cap_config cfg;
static struct cap_app app;
static struct cap_server srv;

/* ---- Running the loop until something holds ------------------------ */

static uv_timer_t guard;
static int guard_fired;

static void on_guard(uv_timer_t *t) {
  guard_fired = 1;
}

/* Runs the loop until pred(arg) holds; fails the whole test, naming what
 * was awaited, when that takes longer than GUARD_MS. */
#define RUN_UNTIL(pred, arg) run_until((pred), (arg), #pred, __LINE__)
static void run_until(int (*pred)(void *), void *arg, const char *what, int line) {
  guard_fired = 0;
  uv_timer_start(&guard, on_guard, GUARD_MS, 0);
  while (!pred(arg)) {
    if (guard_fired) {
      fprintf(stderr, "%s:%d: timed out waiting for %s\n", __FILE__, line, what);
      check_result_(0);
      exit(check_report() | 1); /* The summary still ends the output. */
    }
    uv_run(&loop, UV_RUN_ONCE);
  }
  uv_timer_stop(&guard);
}

/* ---- A client on the loop ------------------------------------------- */

struct client {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  uv_timer_t drip; /* Sends the bytes of `slow` one per loop turn. */
  char *slow;
  size_t slow_len, slow_off;
  struct cap_buf in; /* Everything received. */
  int connected;     /* 1 connected, -1 failed. */
  int eof;           /* The server closed (EOF) or reset (error). */
  int reset;
  int closed; /* Both handles closed: the client may be freed. */
};

struct send_req {
  uv_write_t req;
  char data[];
};

static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char space[64 * 1024];
  *buf = uv_buf_init(space, sizeof(space));
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct client *c = s->data;
  if (n > 0) {
    cap_buf_append(&c->in, buf->base, (size_t)n);
  } else if (n < 0) {
    c->eof = 1;
    c->reset = n != UV_EOF;
    uv_read_stop(s);
  }
}

static void on_client_connect(uv_connect_t *req, int status) {
  struct client *c = req->data;
  c->connected = status == 0 ? 1 : -1;
  if (status == 0)
    uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read);
}

static int is_connected(void *arg) {
  return ((struct client *)arg)->connected != 0;
}

/* Connects a client to the server's public port and waits until the
 * server has it in its set. */
static struct client *client_open(void) {
  struct client *c = calloc(1, sizeof(*c));
  struct sockaddr_in addr;
  cap_buf_init(&c->in);
  uv_tcp_init(&loop, &c->tcp);
  uv_timer_init(&loop, &c->drip);
  c->tcp.data = c;
  c->drip.data = c;
  c->connect_req.data = c;
  /* Each small write is its own segment, so a request sent byte by byte
   * really arrives in pieces. */
  uv_tcp_nodelay(&c->tcp, 1);
  uv_ip4_addr("127.0.0.1", srv.port, &addr);
  uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&addr, on_client_connect);
  RUN_UNTIL(is_connected, c);
  CHECK_EQ_INT(c->connected, 1);
  return c;
}

static void on_sent(uv_write_t *req, int status) {
  free(container_of(req, struct send_req, req));
}

static void client_send(struct client *c, const char *data, size_t len) {
  struct send_req *w = malloc(sizeof(*w) + len);
  memcpy(w->data, data, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_sent) != 0)
    free(w);
}

static void client_sends(struct client *c, const char *s) {
  client_send(c, s, strlen(s));
}

static void on_drip(uv_timer_t *t) {
  struct client *c = t->data;
  client_send(c, c->slow + c->slow_off, 1);
  if (++c->slow_off == c->slow_len)
    uv_timer_stop(t);
}

static int drip_done(void *arg) {
  struct client *c = arg;
  return c->slow_off == c->slow_len;
}

/* Sends s one byte per loop turn: the server reads each byte on its own
 * and must get the request together across all those reads. */
static void client_drip(struct client *c, const char *s) {
  free(c->slow);
  c->slow = strdup(s);
  c->slow_len = strlen(s);
  c->slow_off = 0;
  uv_timer_start(&c->drip, on_drip, 0, 1);
  RUN_UNTIL(drip_done, c);
}

static void on_client_closed(uv_handle_t *h) {
  struct client *c = h->data;
  if (h == (uv_handle_t *)&c->tcp)
    c->closed = 1;
}

static int client_is_closed(void *arg) {
  return ((struct client *)arg)->closed;
}

static void client_close(struct client *c) {
  uv_close((uv_handle_t *)&c->drip, NULL);
  uv_close((uv_handle_t *)&c->tcp, on_client_closed);
  RUN_UNTIL(client_is_closed, c);
  cap_buf_free(&c->in);
  free(c->slow);
  free(c);
}

static int client_has_eof(void *arg) {
  return ((struct client *)arg)->eof;
}

/* ---- Reading the responses a client got ----------------------------- */

struct response {
  int status;
  int close; /* Connection: close */
  char req_id[64];
  char code[64]; /* The JSON error code, if any. */
};

/* Finds header name (lower case, with the colon) in the head [h, end). */
static const char *find_header(const char *h, const char *end, const char *name) {
  size_t n = strlen(name);
  for (const char *p = h; p && p < end;) {
    if ((size_t)(end - p) > n && strncasecmp(p, name, n) == 0)
      return p + n + (p[n] == ' ');
    p = memchr(p, '\n', (size_t)(end - p));
    if (p)
      p++;
  }
  return NULL;
}

static void copy_token(char *out, size_t outlen, const char *p, const char *stop) {
  size_t n = 0;
  while (p && p + n < stop && p[n] != '\r' && p[n] != '"' && n + 1 < outlen)
    n++;
  memcpy(out, p ? p : "", p ? n : 0);
  out[p ? n : 0] = '\0';
}

/* Splits what the client received into complete responses (interim 1xx
 * ones skipped); returns how many, filling at most max of out. */
static int responses(const struct client *c, struct response *out, int max) {
  const char *p = c->in.data, *end = c->in.data + c->in.len;
  int n = 0;
  while (p && p < end) {
    const char *head_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
    if (head_end == NULL || end - p < 12)
      break;
    int status = atoi(p + 9);
    const char *body = head_end + 4;
    const char *cl = find_header(p, head_end, "content-length:");
    size_t len = cl ? strtoul(cl, NULL, 10) : 0;
    if (status >= 200 && (size_t)(end - body) < len)
      break;
    if (status >= 200) {
      if (n < max) {
        struct response *r = &out[n];
        const char *conn = find_header(p, head_end, "connection:");
        memset(r, 0, sizeof(*r));
        r->status = status;
        r->close = conn && strncasecmp(conn, "close", 5) == 0;
        copy_token(r->req_id, sizeof(r->req_id), find_header(p, head_end, "x-request-id:"),
                   head_end);
        const char *code = memmem(body, len, "\"code\":\"", 8);
        copy_token(r->code, sizeof(r->code), code ? code + 8 : NULL, body + len);
      }
      n++;
      p = body + len;
    } else {
      p = body;
    }
  }
  return n;
}

struct want_responses {
  struct client *c;
  int n;
};

static int has_responses(void *arg) {
  struct want_responses *w = arg;
  struct response r[1];
  return responses(w->c, r, 0) >= w->n || w->c->eof;
}

/* Waits until c has n complete responses (or the server ended it). */
static void wait_responses(struct client *c, int n) {
  struct want_responses w = {c, n};
  RUN_UNTIL(has_responses, &w);
}

/* ---- Server-side conditions ----------------------------------------- */

static int no_connections(void *arg) {
  return srv.public_set.n == 0;
}

/* How many connections the server holds, and how many of them idle. */
struct set_state {
  size_t n, idle;
};

static int set_is(void *arg) {
  const struct set_state *want = arg;
  return srv.public_set.n == want->n && srv.public_set.nidle == want->idle;
}

/* Each test ends with every client closed; the server must let go of
 * every connection too. */
static void expect_no_connections(void) {
  RUN_UNTIL(no_connections, NULL);
  CHECK_EQ_INT(srv.public_set.n, 0);
  CHECK_EQ_INT(cap_connset_live(&srv.public_set), 0);
  CHECK_EQ_INT(srv.public_set.nidle, 0);
  CHECK_EQ_INT(srv.public_set.nclients, 0);
}

/* ---- The tests -------------------------------------------------------- */

#define AUTH "Authorization: Bearer " TOKEN "\r\n"

/* Three requests in one write are answered in order, each as its own
 * response, on the one connection. */
static void test_pipelining(void) {
  struct client *c = client_open();
  struct response r[4];
  client_sends(c,
               "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: first\r\n\r\n"
               "GET /jobs/nonexistent HTTP/1.1\r\nHost: x\r\n" AUTH "X-Request-Id: second\r\n\r\n"
               "POST /exec HTTP/1.1\r\nHost: x\r\n" AUTH "Content-Type: application/json\r\n"
               "Content-Length: 2\r\nX-Request-Id: third\r\n\r\n{}");
  wait_responses(c, 3);
  if (CHECK_EQ_INT(responses(c, r, 4), 3)) {
    CHECK_EQ_INT(r[0].status, 200);
    CHECK_EQ_STR(r[0].req_id, "first");
    CHECK_EQ_INT(r[1].status, 404);
    CHECK_EQ_STR(r[1].req_id, "second");
    CHECK_EQ_INT(r[2].status, 400);
    CHECK_EQ_STR(r[2].req_id, "third");
    CHECK_EQ_STR(r[2].code, "missing_field");
    CHECK(!r[0].close && !r[1].close && !r[2].close);
  }
  CHECK(!c->eof);
  CHECK_EQ_INT(srv.public_set.n, 1);
  client_close(c);
  expect_no_connections();
}

/* A request whose head and body arrive one byte per read, then a second
 * one the same way on the same connection. */
static void test_byte_by_byte(void) {
  struct client *c = client_open();
  struct response r[3];
  client_drip(c, "POST /exec HTTP/1.1\r\nHost: x\r\n" AUTH "Content-Type: application/json\r\n"
                 "Content-Length: 2\r\nX-Request-Id: dripped\r\n\r\n{}");
  wait_responses(c, 1);
  client_drip(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_responses(c, 2);
  if (CHECK_EQ_INT(responses(c, r, 3), 2)) {
    CHECK_EQ_INT(r[0].status, 400);
    CHECK_EQ_STR(r[0].code, "missing_field");
    CHECK_EQ_STR(r[0].req_id, "dripped");
    CHECK_EQ_INT(r[1].status, 200);
  }
  CHECK(!c->eof);
  client_close(c);
  expect_no_connections();
}

/* Keep-alive: one connection serves request after request, each sent
 * after the previous answer, and the server counts one connection. */
static void test_keep_alive(void) {
  struct client *c = client_open();
  struct response r[6];
  uint64_t accepted = srv.accepted;
  for (int i = 1; i <= 5; i++) {
    client_sends(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_responses(c, i);
    CHECK_EQ_INT(srv.public_set.n, 1);
    /* Between requests the connection is idle (and may be reused). */
    CHECK_EQ_INT(srv.public_set.nidle, 1);
  }
  if (CHECK_EQ_INT(responses(c, r, 6), 5))
    for (int i = 0; i < 5; i++)
      CHECK(r[i].status == 200 && !r[i].close);
  CHECK_EQ_INT(srv.accepted, accepted);
  /* HTTP/1.0 without keep-alive: answered, then closed by the server. */
  client_sends(c, "GET /health HTTP/1.0\r\n\r\n");
  RUN_UNTIL(client_has_eof, c);
  if (CHECK_EQ_INT(responses(c, r, 6), 6))
    CHECK(r[5].status == 200 && r[5].close);
  CHECK(!c->reset);
  client_close(c);
  expect_no_connections();
}

/* A head larger than max_header_bytes: 431, then the server closes. */
static void test_header_too_large(void) {
  struct client *c = client_open();
  struct response r[2];
  struct cap_buf req;
  cap_buf_init(&req);
  cap_buf_puts(&req, "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ");
  for (int i = 0; i < cfg.max_header_bytes; i++)
    cap_buf_putc(&req, 'a');
  cap_buf_puts(&req, "\r\n\r\n");
  client_send(c, req.data, req.len);
  cap_buf_free(&req);
  RUN_UNTIL(client_has_eof, c);
  if (CHECK_EQ_INT(responses(c, r, 2), 1)) {
    CHECK_EQ_INT(r[0].status, 431);
    CHECK_EQ_STR(r[0].code, "headers_too_large");
    CHECK(r[0].close);
  }
  client_close(c);
  expect_no_connections();
}

/* Bodies over max_body_bytes: a Content-Length that says so is refused
 * before any body is read; a chunked body is refused once it grows past
 * the limit.  Both close the connection. */
static void test_body_too_large(void) {
  struct response r[2];
  char head[512];
  struct client *c = client_open();
  snprintf(head, sizeof(head),
           "POST /exec HTTP/1.1\r\nHost: x\r\n" AUTH "Content-Type: application/json\r\n"
           "Content-Length: %d\r\n\r\n",
           cfg.max_body_bytes + 1);
  client_sends(c, head);
  RUN_UNTIL(client_has_eof, c);
  if (CHECK_EQ_INT(responses(c, r, 2), 1)) {
    CHECK_EQ_INT(r[0].status, 413);
    CHECK_EQ_STR(r[0].code, "body_too_large");
    CHECK(r[0].close);
  }
  client_close(c);

  c = client_open();
  struct cap_buf req;
  cap_buf_init(&req);
  cap_buf_puts(&req, "POST /exec HTTP/1.1\r\nHost: x\r\n" AUTH
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
  cap_buf_printf(&req, "%x\r\n", cfg.max_body_bytes + 100);
  for (int i = 0; i < cfg.max_body_bytes + 100; i++)
    cap_buf_putc(&req, ' ');
  cap_buf_puts(&req, "\r\n0\r\n\r\n");
  client_send(c, req.data, req.len);
  cap_buf_free(&req);
  RUN_UNTIL(client_has_eof, c);
  if (CHECK_EQ_INT(responses(c, r, 2), 1)) {
    CHECK_EQ_INT(r[0].status, 413);
    CHECK_EQ_STR(r[0].code, "body_too_large");
    CHECK(r[0].close);
  }
  client_close(c);
  expect_no_connections();
}

/* With every connection busy (each has sent part of a request) nothing
 * can be reused: one more is answered 503 and closed, and the busy ones
 * are served as usual. */
static void test_too_many_connections(void) {
  struct client *c[MAX_CONNS];
  struct response r[2];
  /* One at a time: a connection the server has not read from yet is idle,
   * and the next one would take its place. */
  for (size_t i = 0; i < MAX_CONNS; i++) {
    struct set_state want = {i + 1, 0};
    c[i] = client_open();
    client_sends(c[i], "GET /health HTTP/1.1\r\n");
    RUN_UNTIL(set_is, &want);
  }
  struct client *extra = client_open();
  RUN_UNTIL(client_has_eof, extra);
  if (CHECK_EQ_INT(responses(extra, r, 2), 1)) {
    CHECK_EQ_INT(r[0].status, 503);
    CHECK_EQ_STR(r[0].code, "too_many_connections");
    CHECK(r[0].close);
  }
  client_close(extra);
  for (int i = 0; i < MAX_CONNS; i++) {
    client_sends(c[i], "Host: x\r\n\r\n");
    wait_responses(c[i], 1);
    CHECK(responses(c[i], r, 2) == 1 && r[0].status == 200 && !c[i]->eof);
  }
  for (int i = 0; i < MAX_CONNS; i++)
    client_close(c[i]);
  expect_no_connections();
}

/* Once fewer than max/16 connections are left, a new one takes the place
 * of the connection idle the longest: that one is closed, the newer idle
 * ones and the busy ones stay. */
static void test_idle_reuse(void) {
  struct client *c[MAX_CONNS];
  struct response r[2];
  size_t low_water = MAX_CONNS - MAX_CONNS / 16;
  /* The first two go idle (keep-alive after a request), the rest are busy
   * with half a request. */
  for (size_t i = 0; i < low_water; i++) {
    c[i] = client_open();
    client_sends(c[i],
                 i < 2 ? "GET /health HTTP/1.1\r\nHost: x\r\n\r\n" : "GET /health HTTP/1.1\r\n");
    if (i < 2)
      wait_responses(c[i], 1);
  }
  struct set_state want = {low_water, 2};
  RUN_UNTIL(set_is, &want);
  /* The second idle one is used again: it becomes the newest idle one. */
  client_sends(c[1], "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_responses(c[1], 2);

  struct client *fresh = client_open();
  RUN_UNTIL(client_has_eof, c[0]);
  CHECK_EQ_INT(responses(c[0], r, 2), 1); /* Closed without another word. */
  CHECK(!c[1]->eof);
  client_sends(fresh, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_responses(fresh, 1);
  CHECK(responses(fresh, r, 2) == 1 && r[0].status == 200 && !fresh->eof);
  /* Room is short again: the next newcomer evicts c[1], now the oldest
   * idle one; fresh, idle for a shorter while, stays. */
  struct client *fresh2 = client_open();
  RUN_UNTIL(client_has_eof, c[1]);
  CHECK(!fresh->eof);
  for (size_t i = 2; i < low_water; i++) {
    CHECK(!c[i]->eof);
    client_sends(c[i], "Host: x\r\n\r\n");
    wait_responses(c[i], 1);
    CHECK(responses(c[i], r, 2) == 1 && r[0].status == 200);
  }
  for (size_t i = 0; i < low_water; i++)
    client_close(c[i]);
  client_close(fresh);
  client_close(fresh2);
  expect_no_connections();
}

/* A client that shuts its sending side after a request on a sync route
 * gets the whole answer, then the server closes too (no reset). */
static void test_half_close(void) {
  struct client *c = client_open();
  struct response r[2];
  client_sends(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  c->shutdown_req.data = c;
  uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, NULL);
  RUN_UNTIL(client_has_eof, c);
  CHECK(!c->reset);
  if (CHECK_EQ_INT(responses(c, r, 2), 1))
    CHECK_EQ_INT(r[0].status, 200);
  client_close(c);
  expect_no_connections();

  /* Pipelined requests, then the half-close: every one is answered. */
  c = client_open();
  client_sends(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /jobs/nonexistent HTTP/1.1\r\nHost: x\r\n" AUTH "\r\n");
  uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, NULL);
  RUN_UNTIL(client_has_eof, c);
  CHECK(!c->reset);
  if (CHECK_EQ_INT(responses(c, r, 2), 2)) {
    CHECK_EQ_INT(r[0].status, 200);
    CHECK_EQ_INT(r[1].status, 404);
  }
  client_close(c);

  /* A half-close in the middle of a head: nothing to answer, closed. */
  c = client_open();
  client_sends(c, "GET /health HTTP/1.1\r\nHo");
  uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, NULL);
  RUN_UNTIL(client_has_eof, c);
  CHECK_EQ_INT(c->in.len, 0);
  client_close(c);
  expect_no_connections();
}

/* Clients that close (or reset) in every phase leave nothing behind. */
static void test_clients_close(void) {
  struct client *c[5];
  struct set_state want = {5, 3}; /* c[0], c[3] and c[4] idle. */
  for (int i = 0; i < 5; i++)
    c[i] = client_open();
  client_sends(c[1], "GET /health HTTP/1.1\r\n");
  client_sends(c[2], "POST /exec HTTP/1.1\r\nHost: x\r\n" AUTH
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{");
  client_sends(c[3], "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_responses(c[3], 1);
  RUN_UNTIL(set_is, &want);
  for (int i = 0; i < 5; i++)
    client_close(c[i]);
  expect_no_connections();
}

/* ---- Set-up ------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

static void start_server(void) {
  char err[512], data_env[128], max_conns[64];
  char *argv[] = {"cap-server", NULL};
  snprintf(data_env, sizeof(data_env), "CAP_DATA_DIR=%s", data_dir);
  snprintf(max_conns, sizeof(max_conns), "CAP_MAX_CONNECTIONS=%d", MAX_CONNS);
  char *envp[] = {"CAPABILITY_TOKEN=" TOKEN, "CAP_HOST=127.0.0.1", "CAP_PORT=0",
                  "CAP_LOG_LEVEL=error", max_conns,
                  /* Every client here is 127.0.0.1. */
                  "CAP_MAX_CONNECTIONS_PER_CLIENT=0", "CAP_MAX_HEADER_BYTES=1024",
                  "CAP_MAX_BODY_BYTES=1024", "CAP_RATE_LIMIT=100000", data_env, NULL};
  int rc = cap_config_load(&cfg, 1, argv, envp, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  config: %s\n", err);
    exit(check_report() | 1);
  }
  cap_log_set_level(cfg.log_level);
  cap_metrics_init();
  if (!CHECK_EQ_INT(cap_reqid_init(), 0))
    exit(check_report() | 1);
  uv_loop_init(&loop);
  uv_timer_init(&loop, &guard);
  rc = cap_app_init(&app, &cfg, &loop, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  app: %s\n", err);
    exit(check_report() | 1);
  }
  rc = cap_server_start(&srv, &loop, &app);
  if (!CHECK_EQ_INT(rc, 0))
    exit(check_report() | 1);
  CHECK(srv.port > 0);
}

static int loop_alive_only_guard(void *arg) {
  return !srv.stopping ? 0 : srv.public_set.n == 0;
}

/* Stops the server the way main does and closes everything, so that the
 * sanitizers see every allocation freed. */
static void stop_server(void) {
  cap_server_stop(&srv);
  cap_server_stop(&srv);
  RUN_UNTIL(loop_alive_only_guard, NULL);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  cap_server_close(&srv);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  cap_app_free(&app);
  cap_metrics_free();
  cap_config_free(&cfg);
}

int main(void) {
  snprintf(data_dir, sizeof(data_dir), "/tmp/cap-test-conn-XXXXXX");
  if (mkdtemp(data_dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  start_server();

  test_pipelining();
  test_byte_by_byte();
  test_keep_alive();
  test_header_too_large();
  test_body_too_large();
  test_too_many_connections();
  test_idle_reuse();
  test_half_close();
  test_clients_close();

  stop_server();
  nftw(data_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  return check_report();
}
