#include "curlloop.h"

#include "alloc.h"
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* A tiny HTTP/1.1 server on the test's own loop.  It reads a request up to
 * the blank line and its Content-Length body, then answers by path:
 *   /ok/N   200 with N bytes ('a' + i % 26)
 *   /slow   200 "slow", two seconds later
 *   /close  200 "closed" with Connection: close, then closes
 *   /echo   200 with the request body
 * Connections are kept alive otherwise.  "Expect: 100-continue" gets a
 * 100 Continue. */

struct srv;

struct sconn {
  uv_tcp_t tcp;
  uv_timer_t slow;
  struct srv *srv;
  char *buf;
  size_t len, cap;
  int waiting; /* A /slow answer is due. */
  int closing;
  int pending_closes;
  int sent_continue;
  struct sconn *prev, *next;
};

struct srv {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  int listener_closed;
  int accepted;
  int requests;
  int continues;
  int slow_waiting; /* /slow requests read and not answered yet. */
  int open;         /* Connections not closed yet. */
  struct sconn *conns;
};

struct wreq {
  uv_write_t req;
  struct sconn *c;
  char *data;
  int close_after;
};

static void conn_close(struct sconn *c);

static void on_conn_handle_closed(uv_handle_t *h) {
  struct sconn *c = h->data;
  if (--c->pending_closes > 0)
    return;
  c->srv->open--;
  free(c->buf);
  free(c);
}

static void conn_close(struct sconn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->waiting) {
    c->waiting = 0;
    c->srv->slow_waiting--;
  }
  if (c->prev)
    c->prev->next = c->next;
  else
    c->srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->pending_closes = 2;
  uv_timer_stop(&c->slow);
  uv_close((uv_handle_t *)&c->slow, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_written(uv_write_t *req, int status) {
  struct wreq *w = (struct wreq *)req;
  struct sconn *c = w->c;
  int close_after = w->close_after;
  free(w->data);
  free(w);
  if (close_after || status < 0)
    conn_close(c);
}

static void conn_write(struct sconn *c, char *data, size_t len, int close_after) {
  struct wreq *w = xcalloc(1, sizeof(*w));
  w->c = c;
  w->data = data;
  w->close_after = close_after;
  uv_buf_t b = uv_buf_init(data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    free(data);
    free(w);
    conn_close(c);
  }
}

static void respond(struct sconn *c, int status, const char *body, size_t len, int close_after) {
  char head[160];
  int n =
      snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", status,
               status == 200 ? "OK" : "Not Found", len, close_after ? "Connection: close\r\n" : "");
  char *data = xmalloc((size_t)n + len);
  memcpy(data, head, (size_t)n);
  if (len)
    memcpy(data + n, body, len);
  conn_write(c, data, (size_t)n + len, close_after);
}

static void on_slow(uv_timer_t *t) {
  struct sconn *c = t->data;
  c->waiting = 0;
  c->srv->slow_waiting--;
  respond(c, 200, "slow", 4, 0);
}

/* Offset of the first "\r\n\r\n" in p, or -1. */
static long find_blank_line(const char *p, size_t n) {
  for (size_t i = 0; i + 4 <= n; i++)
    if (memcmp(p + i, "\r\n\r\n", 4) == 0)
      return (long)i;
  return -1;
}

/* Answers every complete request in c->buf. */
static void process(struct sconn *c) {
  while (!c->waiting && !c->closing) {
    long blank = find_blank_line(c->buf, c->len);
    if (blank < 0)
      return;
    size_t hlen = (size_t)blank + 4;
    char *head = xstrndup(c->buf, hlen);
    size_t clen = 0;
    int expect = 0;
    for (char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
      const char *h = line + 2;
      if (strncasecmp(h, "Content-Length:", 15) == 0)
        clen = strtoul(h + 15, NULL, 10);
      else if (strncasecmp(h, "Expect:", 7) == 0 && strstr(h, "100-continue") != NULL)
        expect = 1;
    }
    if (c->len < hlen + clen) {
      if (expect && !c->sent_continue) {
        c->sent_continue = 1;
        c->srv->continues++;
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        conn_write(c, xstrndup(cont, sizeof(cont) - 1), sizeof(cont) - 1, 0);
      }
      free(head);
      return;
    }
    c->sent_continue = 0;
    c->srv->requests++;
    char path[256] = "";
    const char *sp = strchr(head, ' ');
    if (sp) {
      size_t i = 0;
      for (sp++; *sp && *sp != ' ' && i + 1 < sizeof(path); sp++)
        path[i++] = *sp;
      path[i] = '\0';
    }
    free(head);
    const char *body = c->buf + hlen;
    if (strncmp(path, "/ok/", 4) == 0) {
      size_t n = strtoul(path + 4, NULL, 10);
      char *out = xmalloc(n ? n : 1);
      for (size_t i = 0; i < n; i++)
        out[i] = (char)('a' + i % 26);
      respond(c, 200, out, n, 0);
      free(out);
    } else if (strcmp(path, "/slow") == 0) {
      c->waiting = 1;
      c->srv->slow_waiting++;
      uv_timer_start(&c->slow, on_slow, 2000, 0);
    } else if (strcmp(path, "/close") == 0) {
      respond(c, 200, "closed", 6, 1);
      c->len = 0; /* Nothing more is read from this connection. */
      return;
    } else if (strcmp(path, "/echo") == 0) {
      respond(c, 200, body, clen, 0);
    } else {
      respond(c, 404, "", 0, 0);
    }
    memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
    c->len -= hlen + clen;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct sconn *c = h->data;
  if (c->cap - c->len < 65536) {
    c->cap = c->cap * 2 + 65536;
    c->buf = xrealloc(c->buf, c->cap);
  }
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct sconn *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)nread;
  process(c);
}

static void on_accept(uv_stream_t *l, int status) {
  struct srv *s = l->data;
  if (status < 0)
    return;
  struct sconn *c = xcalloc(1, sizeof(*c));
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->slow);
  c->tcp.data = c;
  c->slow.data = c;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->open++;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  s->accepted++;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static int srv_start(struct srv *s, uv_loop_t *loop) {
  memset(s, 0, sizeof(*s));
  s->loop = loop;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  if (uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0) != 0 ||
      uv_listen((uv_stream_t *)&s->listener, 128, on_accept) != 0)
    return -1;
  int len = sizeof(sa);
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sa, &len);
  s->port = ntohs(sa.sin_port);
  return 0;
}

static void srv_close_listener(struct srv *s) {
  if (s->listener_closed)
    return;
  s->listener_closed = 1;
  uv_close((uv_handle_t *)&s->listener, NULL);
}

static void srv_close(struct srv *s) {
  srv_close_listener(s);
  while (s->conns)
    conn_close(s->conns);
}

/* A port nothing listens on: bound once, then closed. */
static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  int port = 0;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
    port = ntohs(sa.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

/* The loop, the server and the curl loop under test. */
struct env {
  uv_loop_t loop;
  struct srv srv;
  struct cap_curlloop cl;
  uv_timer_t watchdog;
  int timed_out;
  int closed; /* on_closed calls. */
  int done_total;
};

/* One transfer and what came of it. */
struct req {
  struct env *env;
  CURL *easy;
  char *body;
  size_t len, cap;
  int done;
  CURLcode result;
  long code;
  long connects;
  uint64_t started, ended;
  /* Upload source. */
  const unsigned char *up;
  size_t up_len, up_off;
};

static void on_watchdog(uv_timer_t *t) {
  struct env *e = t->data;
  e->timed_out = 1;
  uv_stop(&e->loop);
}

static void on_closed(struct cap_curlloop *cl) {
  struct env *e = (struct env *)((char *)cl - offsetof(struct env, cl));
  e->closed++;
}

static int env_init(struct env *e) {
  memset(e, 0, sizeof(*e));
  if (!CHECK_EQ_INT(uv_loop_init(&e->loop), 0))
    return -1;
  if (!CHECK_EQ_INT(srv_start(&e->srv, &e->loop), 0))
    return -1;
  if (!CHECK_EQ_INT(cap_curlloop_init(&e->cl, &e->loop), 0))
    return -1;
  uv_timer_init(&e->loop, &e->watchdog);
  e->watchdog.data = e;
  return 0;
}

/* Runs the loop until *count reaches want or ms pass; returns whether it did. */
static int run_until(struct env *e, const int *count, int want, uint64_t ms) {
  e->timed_out = 0;
  uv_timer_start(&e->watchdog, on_watchdog, ms, 0);
  while (*count < want && !e->timed_out)
    uv_run(&e->loop, UV_RUN_ONCE);
  uv_timer_stop(&e->watchdog);
  return *count >= want;
}

/* Runs the loop for ms, whatever happens. */
static void run_for(struct env *e, uint64_t ms) {
  int never = 0;
  run_until(e, &never, 1, ms);
}

/* Runs the loop until nothing keeps it alive; returns 0, or -1 when it was
 * still busy after ms. */
static int run_to_end(struct env *e, uint64_t ms) {
  e->timed_out = 0;
  uv_unref((uv_handle_t *)&e->watchdog);
  uv_timer_start(&e->watchdog, on_watchdog, ms, 0);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  uv_timer_stop(&e->watchdog);
  uv_ref((uv_handle_t *)&e->watchdog);
  return e->timed_out ? -1 : 0;
}

static void print_handle(uv_handle_t *h, void *arg) {
  fprintf(stderr, "  handle left: %s%s%s\n", uv_handle_type_name(uv_handle_get_type(h)),
          uv_is_active(h) ? " active" : "", uv_is_closing(h) ? " closing" : "");
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Closes the curl loop and the server, runs the loop to its end and checks
 * that on_closed ran once, that done ran want_done times in all and that no
 * handle was left behind. */
static void env_fini(struct env *e, int want_done) {
  cap_curlloop_close(&e->cl, on_closed);
  srv_close(&e->srv);
  if (!CHECK_EQ_INT(run_to_end(e, 3000), 0))
    fprintf(stderr, "  the loop did not end after cap_curlloop_close\n");
  CHECK_EQ_INT(e->closed, 1);
  CHECK_EQ_INT(e->done_total, want_done);
  CHECK_EQ_INT(e->srv.open, 0);
  uv_close((uv_handle_t *)&e->watchdog, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  if (!CHECK_EQ_INT(uv_loop_close(&e->loop), 0)) {
    uv_walk(&e->loop, print_handle, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
  }
}

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  struct req *r = arg;
  size_t len = size * n;
  if (r->cap - r->len < len) {
    r->cap = (r->len + len) * 2;
    r->body = xrealloc(r->body, r->cap);
  }
  memcpy(r->body + r->len, p, len);
  r->len += len;
  return len;
}

static size_t on_upload(char *p, size_t size, size_t n, void *arg) {
  struct req *r = arg;
  size_t len = size * n;
  /* Odd-sized pieces, so that curl sees short reads. */
  if (len > 10007)
    len = 10007;
  if (len > r->up_len - r->up_off)
    len = r->up_len - r->up_off;
  memcpy(p, r->up + r->up_off, len);
  r->up_off += len;
  return len;
}

static void on_done(CURL *easy, CURLcode result, void *arg) {
  struct req *r = arg;
  r->done++;
  r->env->done_total++;
  r->result = result;
  r->ended = uv_now(&r->env->loop);
  if (!CHECK(easy == r->easy))
    return;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->code);
  curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &r->connects);
}

/* Sets r up for a GET of path on e's server (or on port when not 0). */
static void req_init(struct req *r, struct env *e, const char *path, int port) {
  memset(r, 0, sizeof(*r));
  r->env = e;
  r->easy = curl_easy_init();
  char url[128];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port ? port : e->srv.port, path);
  curl_easy_setopt(r->easy, CURLOPT_URL, url);
  curl_easy_setopt(r->easy, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
}

static int req_start(struct req *r) {
  uv_update_time(&r->env->loop);
  r->started = uv_now(&r->env->loop);
  return cap_curlloop_add(&r->env->cl, r->easy, on_done, r);
}

static void req_free(struct req *r) {
  if (r->easy)
    curl_easy_cleanup(r->easy);
  free(r->body);
  r->easy = NULL;
  r->body = NULL;
}

/* Whether r got the /ok/n body. */
static int ok_body(const struct req *r, size_t n) {
  if (r->len != n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (r->body[i] != (char)('a' + i % 26))
      return 0;
  return 1;
}

static void test_single_get(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  struct req r;
  req_init(&r, &e, "/ok/100000", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK_EQ_INT(r.code, 200);
  CHECK_EQ_INT(r.len, 100000);
  CHECK(ok_body(&r, 100000));
  CHECK_EQ_INT(r.connects, 1);
  CHECK_EQ_INT(e.srv.accepted, 1);
  req_free(&r);

  /* An empty body. */
  req_init(&r, &e, "/ok/0", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK_EQ_INT(r.code, 200);
  CHECK_EQ_INT(r.len, 0);
  CHECK_EQ_INT(r.connects, 0);
  req_free(&r);

  /* /close reuses the kept-alive connection, then the server closes it: the
   * next request needs a new one. */
  req_init(&r, &e, "/close", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK_EQ_INT(r.code, 200);
  CHECK_EQ_MEM(r.body, r.len, "closed", 6);
  CHECK_EQ_INT(r.connects, 0);
  CHECK_EQ_INT(e.srv.accepted, 1);
  req_free(&r);
  req_init(&r, &e, "/ok/10", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK(ok_body(&r, 10));
  CHECK_EQ_INT(r.connects, 1);
  CHECK_EQ_INT(e.srv.accepted, 2);
  req_free(&r);

  /* A 404 is a completed transfer too. */
  req_init(&r, &e, "/nothing", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK_EQ_INT(r.code, 404);
  req_free(&r);

  /* Only the server's side of the closed connection is gone by now. */
  CHECK_EQ_INT(e.srv.requests, 5);
  env_fini(&e, 5);
}

#define WAVE 50

/* Starts WAVE GETs of /ok/1000 at once and waits for all of them; returns
 * how many reused a connection. */
static int run_wave(struct env *e, struct req *rs) {
  int base = e->done_total;
  for (int i = 0; i < WAVE; i++) {
    req_init(&rs[i], e, "/ok/1000", 0);
    CHECK_EQ_INT(req_start(&rs[i]), 0);
  }
  CHECK(run_until(e, &e->done_total, base + WAVE, 5000));
  int reused = 0, bad = 0;
  for (int i = 0; i < WAVE; i++) {
    if (rs[i].done != 1 || rs[i].result != CURLE_OK || rs[i].code != 200 || !ok_body(&rs[i], 1000))
      bad++;
    if (rs[i].connects == 0)
      reused++;
  }
  if (!CHECK_EQ_INT(bad, 0))
    for (int i = 0; i < WAVE; i++)
      if (rs[i].result != CURLE_OK)
        fprintf(stderr, "  transfer %d: %s\n", i, curl_easy_strerror(rs[i].result));
  return reused;
}

static void test_concurrent_and_reuse(void) {
  struct env e;
  static struct req rs[WAVE];
  if (env_init(&e) != 0)
    return;
  /* Nothing in the pool yet: each transfer connects. */
  run_wave(&e, rs);
  int first = e.srv.accepted;
  CHECK(first >= 1 && first <= WAVE);
  for (int i = 0; i < WAVE; i++)
    req_free(&rs[i]);
  /* The second wave takes connections from the pool: what the server
   * accepted and what curl counted agree, and most were reused. */
  int reused = run_wave(&e, rs);
  int opened = e.srv.accepted - first;
  CHECK_EQ_INT(reused, WAVE - opened);
  if (!CHECK(opened <= WAVE / 2))
    fprintf(stderr, "  second wave: %d new connections for %d requests\n", opened, WAVE);
  for (int i = 0; i < WAVE; i++)
    req_free(&rs[i]);
  CHECK_EQ_INT(e.srv.requests, 2 * WAVE);
  env_fini(&e, 2 * WAVE);

  /* With at most 4 connections to the host, 50 transfers queue for them. */
  if (env_init(&e) != 0)
    return;
  curl_multi_setopt(e.cl.multi, CURLMOPT_MAX_HOST_CONNECTIONS, 4L);
  reused = run_wave(&e, rs);
  CHECK(e.srv.accepted >= 1 && e.srv.accepted <= 4);
  CHECK_EQ_INT(reused, WAVE - e.srv.accepted);
  for (int i = 0; i < WAVE; i++)
    req_free(&rs[i]);
  env_fini(&e, WAVE);
}

/* A timeout with no traffic at all ends the transfer from the timer
 * callback: the result is seen only if info is drained there too. */
static void test_timeout(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  struct req quick, slow;
  req_init(&quick, &e, "/slow", 0);
  curl_easy_setopt(quick.easy, CURLOPT_TIMEOUT_MS, 300L);
  req_init(&slow, &e, "/slow", 0);
  CHECK_EQ_INT(req_start(&quick), 0);
  CHECK_EQ_INT(req_start(&slow), 0);
  CHECK(run_until(&e, &quick.done, 1, 1500));
  CHECK_EQ_INT(quick.result, CURLE_OPERATION_TIMEDOUT);
  uint64_t took = quick.ended - quick.started;
  if (!CHECK(took >= 250 && took <= 1000))
    fprintf(stderr, "  the 300 ms timeout took %llu ms\n", (unsigned long long)took);
  CHECK_EQ_INT(slow.done, 0);
  /* The other one gets its answer two seconds in. */
  CHECK(run_until(&e, &slow.done, 1, 4000));
  CHECK_EQ_INT(slow.result, CURLE_OK);
  CHECK_EQ_INT(slow.code, 200);
  CHECK_EQ_MEM(slow.body, slow.len, "slow", 4);
  took = slow.ended - slow.started;
  if (!CHECK(took >= 1900 && took <= 3000))
    fprintf(stderr, "  /slow took %llu ms\n", (unsigned long long)took);
  CHECK_EQ_INT(quick.done, 1);
  req_free(&quick);
  req_free(&slow);
  env_fini(&e, 2);
}

#define UPLOAD_SIZE (1024 * 1024)

static void test_upload(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  unsigned char *src = xmalloc(UPLOAD_SIZE);
  uint32_t x = 12345;
  for (size_t i = 0; i < UPLOAD_SIZE; i++) {
    x = x * 1103515245u + 12345u;
    src[i] = (unsigned char)(x >> 16);
  }
  struct req put, post;
  req_init(&put, &e, "/echo", 0);
  put.up = src;
  put.up_len = UPLOAD_SIZE;
  curl_easy_setopt(put.easy, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(put.easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)UPLOAD_SIZE);
  curl_easy_setopt(put.easy, CURLOPT_READFUNCTION, on_upload);
  curl_easy_setopt(put.easy, CURLOPT_READDATA, &put);
  req_init(&post, &e, "/echo", 0);
  post.up = src;
  post.up_len = UPLOAD_SIZE;
  curl_easy_setopt(post.easy, CURLOPT_POST, 1L);
  curl_easy_setopt(post.easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)UPLOAD_SIZE);
  curl_easy_setopt(post.easy, CURLOPT_READFUNCTION, on_upload);
  curl_easy_setopt(post.easy, CURLOPT_READDATA, &post);
  CHECK_EQ_INT(req_start(&put), 0);
  CHECK_EQ_INT(req_start(&post), 0);
  CHECK(run_until(&e, &e.done_total, 2, 5000));
  CHECK_EQ_INT(put.done, 1);
  CHECK_EQ_INT(put.result, CURLE_OK);
  CHECK_EQ_INT(put.code, 200);
  CHECK_EQ_INT(put.up_off, UPLOAD_SIZE);
  CHECK_EQ_MEM(put.body, put.len, src, UPLOAD_SIZE);
  CHECK_EQ_INT(post.done, 1);
  CHECK_EQ_INT(post.result, CURLE_OK);
  CHECK_EQ_INT(post.code, 200);
  CHECK_EQ_MEM(post.body, post.len, src, UPLOAD_SIZE);
  /* Neither waited for curl's one-second Expect timeout. */
  CHECK(put.ended - put.started < 1000);
  CHECK(post.ended - post.started < 1000);
  req_free(&put);
  req_free(&post);
  free(src);
  env_fini(&e, 2);
}

static void test_refused(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  int port = closed_port();
  CHECK(port > 0);
  struct req r;
  req_init(&r, &e, "/", port);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  /* Nothing more comes for it. */
  run_for(&e, 100);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.result, CURLE_COULDNT_CONNECT);
  CHECK_EQ_INT(r.code, 0);
  req_free(&r);
  env_fini(&e, 1);
}

/* The curl loop alone on a loop: nothing else keeps the loop alive while a
 * transfer is under way, so uv_run must not return before it ends. */
static void test_alone_on_loop(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  srv_close(&e.srv);
  run_to_end(&e, 1000);
  int port = closed_port();
  struct req r;
  req_init(&r, &e, "/", port);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK_EQ_INT(run_to_end(&e, 3000), 0);
  if (!CHECK_EQ_INT(r.done, 1))
    fprintf(stderr, "  uv_run returned with the transfer under way\n");
  CHECK_EQ_INT(r.result, CURLE_COULDNT_CONNECT);
  int done = r.done;
  cap_curlloop_remove(&e.cl, r.easy);
  req_free(&r);
  env_fini(&e, done);
}

static void test_remove(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  /* Removed before the loop ever ran. */
  struct req early;
  req_init(&early, &e, "/ok/10", 0);
  CHECK_EQ_INT(req_start(&early), 0);
  cap_curlloop_remove(&e.cl, early.easy);
  /* Removed while the server sits on the request; an ordinary transfer runs
   * beside it and leaves no connection open. */
  struct req slow, other;
  req_init(&slow, &e, "/slow", 0);
  req_init(&other, &e, "/close", 0);
  CHECK_EQ_INT(req_start(&slow), 0);
  CHECK_EQ_INT(req_start(&other), 0);
  CHECK(run_until(&e, &e.srv.slow_waiting, 1, 3000));
  CHECK(run_until(&e, &other.done, 1, 3000));
  cap_curlloop_remove(&e.cl, slow.easy);
  /* Removing twice does nothing. */
  cap_curlloop_remove(&e.cl, slow.easy);
  /* The easy handle is ours again: it can go at once. */
  req_free(&slow);
  /* Once the server stops listening nothing is left to wait for: curl
   * dropped the half-done connection, so the server sees it close. */
  srv_close_listener(&e.srv);
  uint64_t t0 = uv_hrtime();
  if (!CHECK_EQ_INT(run_to_end(&e, 3000), 0))
    fprintf(stderr, "  the loop did not end after cap_curlloop_remove\n");
  CHECK(uv_hrtime() - t0 < 1000000000u);
  CHECK_EQ_INT(e.srv.slow_waiting, 0);
  CHECK_EQ_INT(slow.done, 0);
  CHECK_EQ_INT(early.done, 0);
  CHECK_EQ_INT(other.done, 1);
  CHECK_EQ_INT(other.result, CURLE_OK);
  CHECK_EQ_MEM(other.body, other.len, "closed", 6);
  CHECK_EQ_INT(e.srv.requests, 2);
  /* A handle removed before it ran can be added again. */
  srv_start(&e.srv, &e.loop);
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok/10", e.srv.port);
  curl_easy_setopt(early.easy, CURLOPT_URL, url);
  CHECK_EQ_INT(req_start(&early), 0);
  CHECK(run_until(&e, &early.done, 1, 3000));
  CHECK_EQ_INT(early.result, CURLE_OK);
  CHECK(ok_body(&early, 10));
  req_free(&early);
  req_free(&other);
  env_fini(&e, 2);
}

static void test_close_in_flight(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  /* One finished transfer leaves a connection in the pool. */
  struct req first;
  req_init(&first, &e, "/ok/10", 0);
  CHECK_EQ_INT(req_start(&first), 0);
  CHECK(run_until(&e, &first.done, 1, 3000));
  CHECK_EQ_INT(first.result, CURLE_OK);
  req_free(&first);
  struct req rs[5];
  for (int i = 0; i < 5; i++) {
    req_init(&rs[i], &e, "/slow", 0);
    CHECK_EQ_INT(req_start(&rs[i]), 0);
  }
  CHECK(run_until(&e, &e.srv.slow_waiting, 5, 3000));
  uint64_t t0 = uv_hrtime();
  /* env_fini closes the curl loop: no done, on_closed once, nothing left. */
  env_fini(&e, 1);
  CHECK(uv_hrtime() - t0 < 1000000000u);
  for (int i = 0; i < 5; i++) {
    CHECK_EQ_INT(rs[i].done, 0);
    req_free(&rs[i]);
  }

  /* Closed before the loop ever ran for them. */
  if (env_init(&e) != 0)
    return;
  for (int i = 0; i < 5; i++) {
    req_init(&rs[i], &e, "/ok/10", 0);
    CHECK_EQ_INT(req_start(&rs[i]), 0);
  }
  env_fini(&e, 0);
  for (int i = 0; i < 5; i++) {
    CHECK_EQ_INT(rs[i].done, 0);
    req_free(&rs[i]);
  }
}

int main(void) {
  alarm(30); /* A hung loop must not hang the test run. */
  test_single_get();
  test_concurrent_and_reuse();
  test_timeout();
  test_upload();
  test_refused();
  test_alone_on_loop();
  test_remove();
  test_close_in_flight();
  return check_report();
}
