#include "inputsrv.h"

#include "alloc.h"
#include "buf.h"
#include "container.h"
#include "errcode.h"
#include "httpparse.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Bytes of copies held for one child (written or queued, their callbacks
 * not yet run) before its store read pauses; it resumes at
 * half.  With curl's own receive buffer this bounds a connection's memory. */
#define WQ_MAX (256 * 1024)
/* The socket send buffer asked for each connection. */
#define SNDBUF (256 * 1024)
/* Connections the endpoint holds at once; children open one per range. */
#define MAX_CONNS 256
/* A connection that has sent no complete request for this long is closed.
 * A response in progress has no such limit: the child may stop reading
 * while its output is backpressured. */
#define IDLE_MS 30000
/* Bytes a child may send while a response is in progress (a request
 * pipelined behind it). */
#define PENDING_MAX 8192

/* A connection's life.  Only move() changes it, along these arrows:
 *
 *   READING -> SENDING -> FLUSHING -> READING (keep-alive) | CLOSING
 *   READING -> CLOSING (a refusal, EOF, a bad request, the idle timer)
 *   SENDING, FLUSHING -> CLOSING (the child left, the store failed, stop)
 *
 *   READING   waiting for (the rest of) a request
 *   SENDING   the answer's body is coming from the store
 *   FLUSHING  the answer is complete and queued; waiting for the writes
 *   CLOSING   the handles (and a store read) are closing; freed at the end */
enum conn_state { C_READING, C_SENDING, C_FLUSHING, C_CLOSING };

static const char *const state_names[] = {"reading", "sending", "flushing", "closing"};

struct cap_inconn {
  uv_tcp_t tcp;
  uv_timer_t idle;
  uv_shutdown_t shut;
  struct cap_inputsrv *srv;
  struct cap_insrc *src; /* While a request for it is answered; NULL otherwise. */
  enum conn_state state;
  struct cap_httpparse parser;
  char pending[PENDING_MAX]; /* Bytes read while a response was under way. */
  size_t npending;
  int keep_alive;
  int close_after; /* Close once the current answer is flushed. */
  struct cap_s3_req req;
  int req_live;     /* req holds a transfer or a timer (cancel before freeing). */
  int req_paused;   /* The sink said pause: resume once the queue drains. */
  int nwrites;      /* Writes whose callback has not run yet. */
  size_t held;      /* Bytes of those writes: copies this connection holds. */
  int resumes_seen; /* req.resumes already counted. */
  int child_gone;   /* A write to the child failed inside the sink. */
  uint64_t first;   /* The range being sent. */
  uint64_t want;    /* Its length. */
  int closes;       /* Handles and the store read still closing. */
  struct cap_inconn *prev, *next;
};

struct wreq {
  uv_write_t w;
  struct cap_inconn *c;
  size_t len;
  char data[];
};

static void conn_close(struct cap_inconn *c);
static void conn_process(struct cap_inconn *c);

static void move(struct cap_inconn *c, enum conn_state to) {
  enum conn_state from = c->state;
  int ok = (from == C_READING && (to == C_SENDING || to == C_FLUSHING || to == C_CLOSING)) ||
           (from == C_SENDING && (to == C_FLUSHING || to == C_CLOSING)) ||
           (from == C_FLUSHING && (to == C_READING || to == C_CLOSING));
  if (!ok) {
    struct cap_log_rec *l = cap_log_begin(CAP_LOG_ERROR, "input.bad_transition");
    cap_log_str(l, "from", state_names[from]);
    cap_log_str(l, "to", state_names[to]);
    cap_log_end(l);
    return;
  }
  c->state = to;
}

/* ---- Sources ---- */

int cap_insrc_open(struct cap_insrc *src, struct cap_inputsrv *srv) {
  if (!srv->listening)
    return -ENOTCONN;
  unsigned char rnd[16];
  if (RAND_bytes(rnd, sizeof(rnd)) != 1)
    return -EIO;
  for (size_t i = 0; i < sizeof(rnd); i++)
    snprintf(src->secret + 2 * i, 3, "%02x", rnd[i]);
  snprintf(src->url, sizeof(src->url), "http://127.0.0.1:%d/in/%s", srv->port, src->secret);
  src->srv = srv;
  src->open = 1;
  src->fault = CAP_INSRC_OK;
  src->prev = NULL;
  src->next = srv->srcs;
  if (srv->srcs)
    srv->srcs->prev = src;
  srv->srcs = src;
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_DEBUG, "input.opened");
  cap_log_str(l, "key", src->key);
  cap_log_int(l, "size", (long long)src->size);
  cap_log_str(l, "etag", src->etag);
  cap_log_end(l);
  return 0;
}

void cap_insrc_close(struct cap_insrc *src) {
  if (!src->open)
    return;
  struct cap_inputsrv *srv = src->srv;
  src->open = 0;
  if (src->prev)
    src->prev->next = src->next;
  else
    srv->srcs = src->next;
  if (src->next)
    src->next->prev = src->prev;
  src->prev = src->next = NULL;
  /* Its path is dead from now on, and so is any read of it under way. */
  for (struct cap_inconn *c = srv->conns, *n; c; c = n) {
    n = c->next;
    if (c->src == src)
      conn_close(c);
  }
  OPENSSL_cleanse(src->secret, sizeof(src->secret));
}

/* Finds the open source whose secret is the len bytes at s, comparing
 * every candidate in constant time. */
static struct cap_insrc *find_src(struct cap_inputsrv *srv, const char *s, size_t len) {
  struct cap_insrc *found = NULL;
  if (len != 32)
    return NULL;
  for (struct cap_insrc *src = srv->srcs; src; src = src->next)
    if (CRYPTO_memcmp(src->secret, s, 32) == 0)
      found = src;
  return found;
}

int cap_inputsrv_parse_range(const char *v, size_t len, uint64_t size, uint64_t *first,
                             uint64_t *last) {
  char buf[80];
  if (v == NULL || len < 7 || len >= sizeof(buf))
    return 0;
  memcpy(buf, v, len);
  buf[len] = '\0';
  if (strncasecmp(buf, "bytes=", 6) != 0 || strchr(buf, ','))
    return 0;
  const char *p = buf + 6;
  char *end;
  if (*p == '-') {
    /* The last n bytes. */
    if (p[1] < '0' || p[1] > '9')
      return 0;
    errno = 0;
    uint64_t n = strtoull(p + 1, &end, 10);
    if (*end || errno)
      return 0;
    if (n == 0 || size == 0)
      return -1;
    *first = n >= size ? 0 : size - n;
    *last = size - 1;
    return 1;
  }
  if (*p < '0' || *p > '9')
    return 0;
  errno = 0;
  uint64_t a = strtoull(p, &end, 10);
  if (errno || *end != '-')
    return 0;
  p = end + 1;
  uint64_t b = UINT64_MAX;
  if (*p) {
    if (*p < '0' || *p > '9')
      return 0;
    b = strtoull(p, &end, 10);
    if (*end || errno || b < a)
      return 0;
  }
  if (a >= size)
    return -1;
  *first = a;
  *last = b >= size ? size - 1 : b;
  return 1;
}

/* ---- Connections: writing ---- */

/* The answer has left: read the next request, or close. */
static void conn_flushed(struct cap_inconn *c) {
  if (c->close_after) {
    conn_close(c);
    return;
  }
  move(c, C_READING);
  uv_timer_again(&c->idle);
  conn_process(c);
}

static void on_written(uv_write_t *w, int status) {
  struct wreq *wr = container_of(w, struct wreq, w);
  struct cap_inconn *c = wr->c;
  c->held -= wr->len;
  free(wr);
  c->nwrites--;
  if (c->state == C_CLOSING)
    return;
  if (status < 0) {
    /* The child went away (a seek closes its connection). */
    conn_close(c);
    return;
  }
  if (c->req_paused && c->held < c->srv->wq_max / 2) {
    c->req_paused = 0;
    cap_s3_req_resume(&c->req);
    return;
  }
  if (c->state == C_FLUSHING && c->nwrites == 0)
    conn_flushed(c);
}

/* Queues a copy of n bytes to the child.  Returns 0 or a UV_E* code. */
static int conn_write(struct cap_inconn *c, const char *p, size_t n) {
  struct wreq *wr = xmalloc(sizeof(*wr) + n);
  memcpy(wr->data, p, n);
  wr->c = c;
  wr->len = n;
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)n);
  int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
  if (rc < 0) {
    free(wr);
    return rc;
  }
  c->nwrites++;
  c->held += n;
  return 0;
}

/* The answer is queued: wait for the writes, then read on or close.  A
 * write just queued always has its callback still to come, so an answer
 * given from inside conn_process never re-enters it. */
static void conn_flush(struct cap_inconn *c) {
  move(c, C_FLUSHING);
  if (c->nwrites == 0)
    conn_flushed(c);
}

/* Counts a refusal by reason. */
static void refused(struct cap_inputsrv *srv, const char *reason) {
  srv->stats.refused++;
  cap_metrics_inc(CAP_M_INPUT_REFUSED, CAP_LABELS(reason));
}

/* Answers with an error from the table and closes the connection after;
 * reason labels the refusal in the metrics. */
static void conn_error(struct cap_inconn *c, enum cap_err e, const char *reason) {
  struct cap_buf out;
  cap_buf_init(&out);
  char body[160];
  int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"code\":\"%s\"}\n", cap_err_message(e),
                   cap_err_code(e));
  cap_buf_printf(&out,
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 "%sConnection: close\r\n\r\n%s",
                 cap_err_status(e), cap_err_status(e) == 404 ? "Not Found" : "Error", n,
                 e == CAP_E_METHOD_NOT_ALLOWED ? "Allow: GET, HEAD\r\n" : "", body);
  refused(c->srv, reason);
  c->close_after = 1;
  if (conn_write(c, out.data, out.len) < 0) {
    cap_buf_free(&out);
    conn_close(c);
    return;
  }
  cap_buf_free(&out);
  conn_flush(c);
}

/* ---- Connections: the store read ---- */

/* Counts the resumes of c's store read as they happen: a read the child
 * abandons (it seeks) never reaches on_range_done. */
static void count_resumes(struct cap_inconn *c) {
  int more = c->req.resumes - c->resumes_seen;
  if (more <= 0)
    return;
  c->resumes_seen = c->req.resumes;
  c->srv->stats.resumes += (uint64_t)more;
  if (c->src)
    c->src->resumes += (uint64_t)more;
  cap_metrics_add(CAP_M_INPUT_RESUMES, NULL, (double)more);
}

static size_t on_body(struct cap_s3_req *r, const char *p, size_t n) {
  struct cap_inconn *c = container_of(r, struct cap_inconn, req);
  if (c->state != C_SENDING)
    return 0;
  count_resumes(c);
  /* What this connection holds, not what the kernel has yet to take: a
   * write the socket took at once still holds its copy until its callback
   * runs on the next loop turn, and curl can hand over many chunks in one. */
  if (c->held >= c->srv->wq_max) {
    c->req_paused = 1;
    return CAP_S3_SINK_PAUSE;
  }
  if (r->got + n > c->want) {
    /* More than asked for: the store is not answering the range. */
    snprintf(r->err_code, sizeof(r->err_code), "range_ignored");
    return 0;
  }
  if (conn_write(c, p, n) < 0) {
    /* The child has gone; the read ends (curl cannot be stopped from
     * inside its own callback) without blaming the input. */
    c->child_gone = 1;
    return 0;
  }
  c->srv->stats.bytes += n;
  cap_metrics_add(CAP_M_INPUT_BYTES, NULL, (double)n);
  if (c->src)
    c->src->bytes += n;
  return n;
}

static enum cap_insrc_fault fault_of(const struct cap_s3_req *r) {
  if (r->status == 412 || r->status == 404)
    return CAP_INSRC_CHANGED;
  if (r->status == 403)
    return CAP_INSRC_DENIED;
  /* A store that ignored the range, or sent more than asked, is not a
   * network fault that waiting could mend. */
  if (r->err_code[0] && strcmp(r->err_code, "range_ignored") == 0)
    return CAP_INSRC_FAILED;
  return cap_s3_transient(r) ? CAP_INSRC_UNAVAILABLE : CAP_INSRC_FAILED;
}

static void conn_maybe_free(struct cap_inconn *c);

/* The store read's memory may be used again: free a closing connection,
 * or parse a request that waited for it. */
static void on_req_freed(struct cap_s3_req *r) {
  struct cap_inconn *c = container_of(r, struct cap_inconn, req);
  c->req_live = 0;
  if (c->state == C_CLOSING)
    conn_maybe_free(c);
  else if (c->state == C_READING)
    conn_process(c);
}

static void on_range_done(struct cap_s3_req *r) {
  struct cap_inconn *c = container_of(r, struct cap_inconn, req);
  struct cap_insrc *src = c->src;
  count_resumes(c);
  if (cap_s3_ok(r) && r->got == c->want) {
    cap_s3_req_free(r, on_req_freed);
    conn_flush(c);
    return;
  }
  if (c->child_gone) {
    conn_close(c);
    return;
  }
  enum cap_insrc_fault why = cap_s3_ok(r) ? CAP_INSRC_FAILED : fault_of(r);
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_WARN, "input.range_failed");
  cap_log_str(l, "key", src ? src->key : NULL);
  cap_log_int(l, "status", r->status);
  cap_log_str(l, "error", r->err_code);
  cap_log_int(l, "offset", (long long)(c->first + r->got));
  cap_log_end(l);
  if (src && src->fault == CAP_INSRC_OK) {
    src->fault = why;
    if (src->on_fault)
      src->on_fault(src, why, r);
  }
  /* on_fault may have closed the source, and with it this connection
   * (which releases the request). */
  if (c->state != C_CLOSING)
    conn_close(c);
}

/* Starts the store read of first..last for the child. */
static void start_range(struct cap_inconn *c, struct cap_insrc *src, uint64_t first,
                        uint64_t last) {
  struct cap_s3_req *r = &c->req;
  cap_s3_req_init(r, c->srv->s3);
  r->method = "GET";
  r->key = xstrdup(src->key);
  r->ranged = 1;
  r->range_start = first;
  r->range_end = last;
  r->if_match = src->etag[0] ? src->etag : NULL;
  r->sink = on_body;
  r->done = on_range_done;
  c->req_live = 1;
  c->req_paused = 0;
  c->resumes_seen = 0;
  c->child_gone = 0;
  c->first = first;
  c->want = last - first + 1;
  move(c, C_SENDING);
  cap_s3_start(r);
}

/* ---- Connections: requests ---- */

static void answer(struct cap_inconn *c, const struct cap_request *req) {
  struct cap_inputsrv *srv = c->srv;
  const char *url = cap_request_url(req);
  int head = req->method == HTTP_HEAD;
  c->keep_alive = req->keep_alive;
  c->close_after = !req->keep_alive;
  if (req->method != HTTP_GET && !head) {
    conn_error(c, CAP_E_METHOD_NOT_ALLOWED, "method");
    return;
  }
  struct cap_insrc *src = NULL;
  if (req->path_len > 4 && memcmp(url, "/in/", 4) == 0)
    src = find_src(srv, url + 4, req->path_len - 4);
  if (src == NULL) {
    conn_error(c, CAP_E_NOT_FOUND, "not_found");
    return;
  }
  size_t rl;
  const char *rv = cap_request_header(req, "Range", &rl);
  uint64_t first = 0, last = src->size ? src->size - 1 : 0;
  int ranged = cap_inputsrv_parse_range(rv, rv ? rl : 0, src->size, &first, &last);
  struct cap_buf out;
  cap_buf_init(&out);
  srv->stats.requests++;
  src->requests++;
  cap_metrics_inc(CAP_M_INPUT_REQUESTS, NULL);
  if (ranged < 0) {
    cap_buf_printf(&out,
                   "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */%" PRIu64
                   "\r\nContent-Length: 0\r\n%s\r\n",
                   src->size, c->close_after ? "Connection: close\r\n" : "");
  } else {
    uint64_t len = src->size ? last - first + 1 : 0;
    cap_buf_printf(&out, "HTTP/1.1 %s\r\nAccept-Ranges: bytes\r\n",
                   ranged ? "206 Partial Content" : "200 OK");
    if (ranged)
      cap_buf_printf(&out, "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n", first,
                     last, src->size);
    cap_buf_printf(
        &out, "Content-Type: application/octet-stream\r\nContent-Length: %" PRIu64 "\r\n%s\r\n",
        len, c->close_after ? "Connection: close\r\n" : "");
    if (!head && len > 0) {
      if (first != src->next_off) {
        srv->stats.seeks++;
        src->seeks++;
        cap_metrics_inc(CAP_M_INPUT_SEEKS, NULL);
      }
      src->next_off = last + 1;
      c->src = src;
      if (conn_write(c, out.data, out.len) < 0) {
        cap_buf_free(&out);
        conn_close(c);
        return;
      }
      cap_buf_free(&out);
      start_range(c, src, first, last);
      return;
    }
  }
  int rc = conn_write(c, out.data, out.len);
  cap_buf_free(&out);
  if (rc < 0) {
    conn_close(c);
    return;
  }
  conn_flush(c);
}

/* Parses what has arrived while no answer is under way. */
static void conn_process(struct cap_inconn *c) {
  /* A request needs c->req, which a finished read may still hold. */
  while (c->state == C_READING && !c->req_live) {
    /* Fed even when empty: a request without a body completes on the
     * call after its HEADERS event. */
    size_t used = 0;
    enum cap_httpparse_event ev = cap_httpparse_feed(&c->parser, c->pending, c->npending, &used);
    memmove(c->pending, c->pending + used, c->npending - used);
    c->npending -= used;
    if (ev == CAP_HTTPPARSE_HEADERS) {
      c->parser.max_body = 0; /* Children send no bodies. */
      continue;
    }
    if (ev == CAP_HTTPPARSE_MESSAGE) {
      c->src = NULL;
      answer(c, &c->parser.req);
      if (c->state != C_CLOSING)
        cap_httpparse_next(&c->parser);
      continue;
    }
    if (ev == CAP_HTTPPARSE_ERROR) {
      conn_error(c, c->parser.err != CAP_E_NONE ? c->parser.err : CAP_E_BAD_REQUEST, "bad_request");
      return;
    }
    break; /* MORE: everything was used. */
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct cap_inconn *c = container_of((uv_tcp_t *)h, struct cap_inconn, tcp);
  (void)suggested;
  *buf = uv_buf_init(c->pending + c->npending, (unsigned)(PENDING_MAX - c->npending));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct cap_inconn *c = container_of((uv_tcp_t *)s, struct cap_inconn, tcp);
  (void)buf;
  if (c->state == C_CLOSING)
    return;
  if (n < 0) {
    /* EOF or a reset: the child is done with this connection, even in the
     * middle of a body (it seeks by opening another). */
    conn_close(c);
    return;
  }
  c->npending += (size_t)n;
  if (c->npending == PENDING_MAX && c->state != C_READING) {
    conn_close(c); /* A child does not pipeline this much. */
    return;
  }
  conn_process(c);
}

static void on_idle(uv_timer_t *t) {
  struct cap_inconn *c = container_of(t, struct cap_inconn, idle);
  if (c->state == C_READING)
    conn_close(c);
}

/* ---- Connections: life ---- */

static void conn_closed(uv_handle_t *h);

static void conn_maybe_free(struct cap_inconn *c) {
  if (c->closes > 0 || c->req_live)
    return;
  struct cap_inputsrv *srv = c->srv;
  cap_httpparse_free(&c->parser);
  free(c);
  if (--srv->nconns == 0 && !srv->listening && srv->on_closed) {
    void (*cb)(struct cap_inputsrv *) = srv->on_closed;
    srv->on_closed = NULL;
    cb(srv);
  }
}

static void conn_closed(uv_handle_t *h) {
  struct cap_inconn *c = h->data;
  c->closes--;
  conn_maybe_free(c);
}

static void conn_close(struct cap_inconn *c) {
  if (c->state == C_CLOSING)
    return;
  move(c, C_CLOSING);
  struct cap_inputsrv *srv = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->src = NULL;
  c->closes = 2;
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
  uv_close((uv_handle_t *)&c->idle, conn_closed);
  /* A store read under way (or just ended) stops here; its memory is c's,
   * so c waits for the request's timer to close too. */
  if (c->req_live)
    cap_s3_req_cancel(&c->req, on_req_freed);
}

/* 1 when the peer of the accepted connection is 127.0.0.1, where children
 * connect from. */
static int peer_is_loopback(uv_tcp_t *t) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len) != 0 || ss.ss_family != AF_INET)
    return 0;
  const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
  return in->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
}

static void on_connection(uv_stream_t *l, int status) {
  struct cap_inputsrv *srv = container_of((uv_tcp_t *)l, struct cap_inputsrv, listener);
  if (status < 0)
    return;
  struct cap_inconn *c = xcalloc(1, sizeof(*c));
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->idle);
  c->tcp.data = c;
  c->idle.data = c;
  struct cap_httpparse_limits lim = {
      .max_header_bytes = 8192, .max_headers = 32, .max_url_bytes = 256};
  cap_httpparse_init(&c->parser, &lim);
  srv->nconns++;
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || !peer_is_loopback(&c->tcp) ||
      srv->nconns > MAX_CONNS) {
    const char *why = srv->nconns > MAX_CONNS ? "connections" : "peer";
    refused(srv, why);
    struct cap_log_rec *rec = cap_log_begin(CAP_LOG_WARN, "input.refused");
    cap_log_str(rec, "reason", why);
    cap_log_end(rec);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  /* The kernel's send buffer would otherwise grow to megabytes on
   * loopback: bytes fetched from the store that the child may never read
   * (a probe reads the start and leaves). */
  int sndbuf = SNDBUF;
  uv_send_buffer_size((uv_handle_t *)&c->tcp, &sndbuf);
  uv_timer_start(&c->idle, on_idle, IDLE_MS, IDLE_MS);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int cap_inputsrv_start(struct cap_inputsrv *srv, uv_loop_t *loop, struct cap_s3 *s3) {
  memset(srv, 0, sizeof(*srv));
  srv->loop = loop;
  srv->s3 = s3;
  srv->wq_max = WQ_MAX;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  int rc = uv_tcp_init(loop, &srv->listener);
  if (rc < 0)
    return rc;
  srv->listening = 1;
  if ((rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&a, 0)) < 0 ||
      (rc = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection)) < 0)
    goto fail;
  struct sockaddr_in got;
  int len = sizeof(got);
  if ((rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&got, &len)) < 0)
    goto fail;
  srv->port = ntohs(got.sin_port);
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "input.listening");
  cap_log_str(l, "addr", "127.0.0.1");
  cap_log_int(l, "port", srv->port);
  cap_log_end(l);
  return 0;

fail:
  uv_close((uv_handle_t *)&srv->listener, NULL);
  srv->listening = 0;
  return rc;
}

static void on_listener_closed(uv_handle_t *h) {
  struct cap_inputsrv *srv = container_of((uv_tcp_t *)h, struct cap_inputsrv, listener);
  srv->nconns--;
  if (srv->nconns == 0 && srv->on_closed) {
    void (*cb)(struct cap_inputsrv *) = srv->on_closed;
    srv->on_closed = NULL;
    cb(srv);
  }
}

void cap_inputsrv_stop(struct cap_inputsrv *srv, void (*on_closed)(struct cap_inputsrv *srv)) {
  srv->on_closed = on_closed;
  if (!srv->listening) {
    if (srv->nconns == 0 && on_closed) {
      srv->on_closed = NULL;
      on_closed(srv);
    }
    return;
  }
  srv->listening = 0;
  /* The listener counts as one more handle to wait for. */
  srv->nconns++;
  while (srv->conns)
    conn_close(srv->conns);
  uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
}
