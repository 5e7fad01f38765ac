#include "conn.h"

#include "admit.h"
#include "alloc.h"
#include "app.h"
#include "httpresp.h"
#include "log.h"
#include "metrics.h"
#include "router.h"

#include <assert.h>
#include <llhttp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Pipelined requests wait while this much of our output is still unsent, so
 * a client that never reads cannot make us buffer without bound. */
#define WRITE_QUEUE_MAX (256 * 1024)
/* After answering with Connection: close we keep reading (and discarding)
 * for a moment, so unread request bytes do not turn our close into a reset
 * that destroys the answer before the client has read it. */
#define LINGER_MS 1000
/* Input kept while a handler holds the exchange (pipelined requests). */
#define PENDING_MAX      (64 * 1024)
#define LINGER_MAX_BYTES (1024 * 1024)

enum phase {
  PHASE_HEAD,     /* Waiting for (the rest of) a request head. */
  PHASE_BODY,     /* Headers in, body arriving. */
  PHASE_DISPATCH, /* A handler has the request. */
  PHASE_IDLE,     /* Keep-alive, between requests. */
  PHASE_LINGER,   /* Final answer sent, write side shut, draining input. */
};

struct write_req {
  uv_write_t req;
  size_t len;
  char data[];
};

/* Reads land here; everything is parsed or copied out before the next read,
 * so one buffer serves every connection of the loop. */
static char read_buf[64 * 1024];

static void process(struct cap_conn *c, const char *data, size_t len);
static void resume(struct cap_conn *c);

static void arm_timer(struct cap_conn *c, int phase);
static void start_reading(struct cap_conn *c);

static void on_handle_closed(uv_handle_t *h) {
  struct cap_conn *c = h->data;
  if (--c->handles_open > 0)
    return;
  if (c->opts->on_closed)
    c->opts->on_closed(c, c->opts->arg);
  cap_httpparse_free(&c->parser);
  cap_exchange_free(&c->x);
  cap_buf_free(&c->pending);
  cap_buf_free(&c->out);
  free(c);
}

void cap_conn_close(struct cap_conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->waiting && c->x.abort_cb) {
    /* The handler keeps its work going and must not answer any more. */
    void (*abort_cb)(struct cap_exchange *) = c->x.abort_cb;
    c->x.abort_cb = NULL;
    c->x.finish_cb = NULL;
    abort_cb(&c->x);
  }
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_linger_timeout(uv_timer_t *t) {
  cap_conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct cap_conn *c = req->data;
  if (c->closing)
    return;
  if (status < 0) {
    cap_conn_close(c);
    return;
  }
  c->phase = PHASE_LINGER;
  uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
  start_reading(c);
}

/* Ends the connection after what was written so far has gone out. */
static void close_after_write(struct cap_conn *c) {
  if (c->closing || c->phase == PHASE_LINGER)
    return;
  c->phase = PHASE_LINGER;
  uv_timer_stop(&c->timer);
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
    cap_conn_close(c);
}

static void on_write(uv_write_t *req, int status) {
  struct write_req *w = container_of(req, struct write_req, req);
  struct cap_conn *c = req->data;
  free(w);
  if (c->closing)
    return;
  if (status < 0) {
    cap_conn_close(c);
    return;
  }
  /* A pipeline held back by a full write queue may go on now. */
  if (!c->waiting && c->phase != PHASE_LINGER && c->phase != PHASE_DISPATCH &&
      c->tcp.write_queue_size <= WRITE_QUEUE_MAX)
    resume(c);
}

/* Sends len bytes, without a copy when the socket takes them at once. */
static void send_bytes(struct cap_conn *c, const char *data, size_t len) {
  if (c->closing)
    return;
  if (c->tcp.write_queue_size == 0) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len)
      return;
    if (n > 0) {
      data += n;
      len -= (size_t)n;
    } else if (n != UV_EAGAIN) {
      cap_conn_close(c);
      return;
    }
  }
  struct write_req *w = xmalloc(sizeof(*w) + len);
  memcpy(w->data, data, len);
  w->len = len;
  w->req.data = c;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    free(w);
    cap_conn_close(c);
  }
}

/* The most of X-Forwarded-For a log line carries. */
#define LOG_FORWARDED_MAX 256

/* Writes the request path into out with every segment that is a
 * configured token replaced by "[token]": a client that put its token in
 * the path (by mistake or to probe) must not find it in the logs. */
static void redacted_path(const struct cap_app *app, const char *path, size_t n,
                          struct cap_buf *out) {
  size_t seg = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && path[i] != '/' && path[i] != '?')
      continue;
    size_t len = i - seg;
    if (len > 0 && cap_auth_is_token(&app->auth, path + seg, len))
      cap_buf_puts(out, "[token]");
    else
      cap_buf_append(out, path + seg, len);
    if (i < n)
      cap_buf_putc(out, path[i]);
    seg = i + 1;
  }
}

static void log_request(struct cap_conn *c, size_t bytes_out) {
  struct cap_exchange *x = &c->x;
  const struct cap_request *req = &c->parser.req;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "http.request");
  size_t fwd_len = 0;
  const char *fwd = cap_request_header(req, "x-forwarded-for", &fwd_len);
  uint64_t now = uv_now(c->tcp.loop);

  cap_log_str(r, "req_id", x->req_id);
  if (c->parser.in_body) {
    struct cap_buf path;
    cap_buf_init(&path);
    redacted_path(x->app, cap_request_url(req), req->path_len, &path);
    cap_log_str(r, "method", cap_request_method_name(req));
    cap_log_strn(r, "path", path.data ? path.data : "", path.len);
    cap_buf_free(&path);
  } else {
    cap_log_str(r, "method", NULL);
    cap_log_str(r, "path", NULL);
  }
  cap_log_int(r, "status", x->status);
  if (x->code)
    cap_log_str(r, "code", x->code);
  cap_log_int(r, "bytes_in", (long long)(c->parser.head_bytes + req->body.len));
  cap_log_int(r, "bytes_out", (long long)bytes_out);
  cap_log_int(r, "dur_ms", (long long)(now >= x->start_ms ? now - x->start_ms : 0));
  cap_log_str(r, "remote", x->client[0] ? x->client : c->peer_str);
  /* Only a trusted proxy's X-Forwarded-For means anything; anyone else's
   * is whatever the client wrote (a token, a screenful), so it stays out. */
  if (fwd && cap_netaddr_set_contains(&x->app->trusted, (const struct sockaddr *)&c->peer))
    cap_log_strn(r, "forwarded_for", fwd,
                 fwd_len < LOG_FORWARDED_MAX ? fwd_len : LOG_FORWARDED_MAX);
  else
    cap_log_str(r, "forwarded_for", NULL);
  cap_log_str(r, "peer", c->peer_str);
  if (x->token_name)
    cap_log_str(r, "token_name", x->token_name);
  cap_log_end(r);
}

/* Counts the answered request in the metrics, by route and status. */
static void count_request(const struct cap_exchange *x) {
  const char *route = x->route ? x->route->name : "other";
  char status[12];
  snprintf(status, sizeof(status), "%d", x->status);
  cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS(route, status));
  cap_metrics_observe(CAP_M_HTTP_DURATION, CAP_LABELS(route),
                      (double)(uv_hrtime() - x->start_ns) / 1e9);
}

/* Fills the request side of the exchange: id, start time, head_only. */
static void begin_exchange(struct cap_conn *c) {
  struct cap_exchange *x = &c->x;
  const struct cap_request *req = &c->parser.req;
  size_t len = 0;
  /* A head that did not parse may hold half a header; its id is not used. */
  const char *id = c->parser.in_body ? cap_request_header(req, "x-request-id", &len) : NULL;

  cap_exchange_reset(x);
  c->begun = 1;
  x->app = c->opts->app;
  x->req = req;
  x->start_ms = uv_now(c->tcp.loop);
  x->start_ns = uv_hrtime();
  x->head_only = c->parser.in_body && req->method == HTTP_HEAD;
  x->private_listener = c->opts->private_listener;
  if (id && cap_reqid_valid(id, len)) {
    memcpy(x->req_id, id, len);
    x->req_id[len] = '\0';
  } else {
    cap_reqid_generate(x->req_id);
  }
}

/* Serializes and sends the response held in the exchange, logs it, and
 * says whether the connection goes on with another request. */
static int respond(struct cap_conn *c) {
  struct cap_exchange *x = &c->x;
  int keep = c->parser.req.keep_alive && !x->close_after && !c->draining && !c->refuse;
  struct cap_httpresp r = {
      .status = x->status,
      .content_type = x->content_type,
      .extra = x->headers.data,
      .extra_len = x->headers.len,
      .body = x->body.data,
      .body_len = x->body.len,
      .req_id = x->req_id,
      .keep_alive = keep,
      .head_only = x->head_only,
  };
  cap_buf_reset(&c->out);
  cap_httpresp_write(&c->out, &r);
  send_bytes(c, c->out.data, c->out.len);
  c->requests++;
  c->opts->app->requests++;
  log_request(c, c->out.len);
  count_request(x);
  if (c->out.cap > 64 * 1024)
    cap_buf_free(&c->out);
  return keep;
}

/* Answers a request that cannot be parsed further, then closes. */
static void fail_connection(struct cap_conn *c, int status, const char *code, const char *msg) {
  if (!c->begun)
    begin_exchange(c);
  cap_buf_reset(&c->x.headers);
  cap_exchange_set_error(&c->x, status, code, msg);
  c->x.close_after = 1;
  respond(c);
  close_after_write(c);
}

static void on_timeout(uv_timer_t *t) {
  struct cap_conn *c = t->data;
  switch (c->phase) {
  case PHASE_HEAD:
    if (!cap_httpparse_partial(&c->parser) && c->pending.len == 0) {
      cap_conn_close(c); /* Nothing of a request arrived: no one to answer. */
      return;
    }
    fail_connection(c, 408, "request_timeout", "Request headers took too long");
    return;
  case PHASE_BODY:
    fail_connection(c, 408, "request_timeout", "Request body took too long");
    return;
  default:
    cap_conn_close(c);
  }
}

static void arm_timer(struct cap_conn *c, int phase) {
  uint64_t ms = 0;
  c->phase = phase;
  switch (phase) {
  case PHASE_HEAD:
    ms = c->opts->header_timeout_ms;
    break;
  case PHASE_BODY:
    ms = c->opts->body_timeout_ms;
    break;
  case PHASE_IDLE:
    ms = c->opts->idle_timeout_ms;
    break;
  default:
    uv_timer_stop(&c->timer);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void start_reading(struct cap_conn *c) {
  if (!c->reading && !c->closing && !c->peer_eof &&
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
    c->reading = 1;
}

static void stop_reading(struct cap_conn *c) {
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* The handler's answer is ready: send it and go on with the connection. */
static void on_finish(struct cap_exchange *x) {
  struct cap_conn *c = container_of(x, struct cap_conn, x);
  c->waiting = 0;
  if (c->closing)
    return;
  int keep = respond(c);
  if (!keep || (c->peer_eof && c->pending.len == 0)) {
    close_after_write(c);
    return;
  }
  cap_httpparse_next(&c->parser);
  c->begun = 0;
  arm_timer(c, c->pending.len ? PHASE_HEAD : PHASE_IDLE);
  /* Inside dispatch the caller's loop goes on parsing; from a later
   * callback we pick the saved input up ourselves. */
  if (!c->in_dispatch)
    resume(c);
}

static void dispatch(struct cap_conn *c) {
  struct cap_exchange *x = &c->x;
  arm_timer(c, PHASE_DISPATCH);
  c->waiting = 1;
  x->finish_cb = on_finish;
  c->in_dispatch = 1;
  if (c->rejected) {
    c->rejected = 0;
    on_finish(x);
  } else if (x->route == NULL || !c->begun) {
    /* A message without its own headers: the parser lost its way. */
    c->in_dispatch = 0;
    fail_connection(c, 400, "bad_request", "Malformed request");
    return;
  } else {
    x->route->handler(x);
  }
  c->in_dispatch = 0;
}

/* Headers are complete: decide before reading any body. */
static void on_headers(struct cap_conn *c) {
  struct cap_request *req = &c->parser.req;
  struct cap_exchange *x = &c->x;
  int has_body = req->chunked || req->content_length > 0;

  begin_exchange(c);
  size_t max_body = (size_t)c->opts->app->cfg->max_body_bytes;
  if (cap_admit_request(x, (const struct sockaddr *)&c->peer, x->start_ms) != 0) {
    /* A body we would accept anyway is read and dropped, so the answer
     * keeps the connection (a Worker reuses it); a client waiting for 100
     * Continue, or a body too large, gets the answer at once and the
     * connection closes without the body ever being read. */
    int readable = !req->expect_continue && !req->expect_other && x->status != 413 &&
                   (req->chunked || req->content_length <= max_body);
    if (has_body && !readable) {
      x->close_after = 1;
      respond(c);
      close_after_write(c);
      return;
    }
    c->rejected = 1;
    c->parser.max_body = max_body;
  } else {
    c->parser.max_body = x->route->has_body ? max_body : 0;
  }
  if (has_body) {
    if (req->expect_continue && !c->rejected)
      send_bytes(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    arm_timer(c, PHASE_BODY);
  }
}

/* Parses data, dispatching every complete request; input that arrives
 * while a handler holds the exchange is kept for later. */
static void process(struct cap_conn *c, const char *data, size_t len) {
  for (;;) {
    if (c->closing || c->phase == PHASE_LINGER)
      return;
    if (c->waiting || c->tcp.write_queue_size > WRITE_QUEUE_MAX) {
      if (len)
        cap_buf_append(&c->pending, data, len);
      /* While a handler waits we keep reading, a bounded amount, so that a
       * client that goes away is noticed (and its wait dropped). */
      if (!c->waiting || c->pending.len > PENDING_MAX)
        stop_reading(c);
      return;
    }
    if (c->phase == PHASE_IDLE && len)
      arm_timer(c, PHASE_HEAD);
    size_t used = 0;
    enum cap_httpparse_event ev = cap_httpparse_feed(&c->parser, data, len, &used);
    data += used;
    len -= used;
    switch (ev) {
    case CAP_HTTPPARSE_MORE:
      if (c->peer_eof) {
        /* The client finished sending in the middle of a request. */
        cap_conn_close(c);
        return;
      }
      start_reading(c);
      return;
    case CAP_HTTPPARSE_HEADERS:
      on_headers(c);
      break;
    case CAP_HTTPPARSE_MESSAGE:
      dispatch(c);
      break;
    case CAP_HTTPPARSE_ERROR:
      fail_connection(c, c->parser.err_status, c->parser.err_code, c->parser.err_msg);
      return;
    }
  }
}

/* Continues with input saved while a handler or the write queue held us. */
static void resume(struct cap_conn *c) {
  struct cap_buf saved = c->pending;
  cap_buf_init(&c->pending);
  if (c->closing || c->waiting) {
    c->pending = saved;
    return;
  }
  if (saved.len == 0 && c->peer_eof && !cap_httpparse_partial(&c->parser)) {
    cap_buf_free(&saved);
    close_after_write(c);
    return;
  }
  process(c, saved.data ? saved.data : "", saved.len);
  cap_buf_free(&saved);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct cap_conn *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    stop_reading(c);
    c->peer_eof = 1;
    /* The client is gone (or has half-closed, which HTTP clients do not
     * rely on): a waiting handler is told through abort_cb. */
    cap_conn_close(c);
    return;
  }
  if (c->phase == PHASE_LINGER) {
    c->lingered += (size_t)nread;
    if (c->lingered > LINGER_MAX_BYTES)
      cap_conn_close(c);
    return;
  }
  process(c, buf->base, (size_t)nread);
}

struct cap_conn *cap_conn_accept(uv_stream_t *listener, const struct cap_conn_opts *opts,
                                 int refuse) {
  struct cap_conn *c = xcalloc(1, sizeof(*c));
  int len = sizeof(c->peer);

  c->opts = opts;
  c->refuse = refuse ? 1 : 0;
  cap_httpparse_init(&c->parser, &opts->limits);
  cap_exchange_init(&c->x);
  cap_buf_init(&c->pending);
  cap_buf_init(&c->out);
  uv_tcp_init(listener->loop, &c->tcp);
  uv_timer_init(listener->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles_open = 2;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    cap_conn_close(c);
    return NULL;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len) != 0 ||
      cap_netaddr_format((struct sockaddr *)&c->peer, c->peer_str, sizeof(c->peer_str)) != 0)
    snprintf(c->peer_str, sizeof(c->peer_str), "unknown");

  if (refuse) {
    begin_exchange(c);
    fail_connection(c, 503, "too_many_connections", "Too many open connections; retry later");
    return c;
  }
  arm_timer(c, PHASE_HEAD);
  start_reading(c);
  return c;
}

void cap_conn_drain(struct cap_conn *c) {
  if (c->closing)
    return;
  c->draining = 1;
  if (c->phase == PHASE_IDLE ||
      (c->phase == PHASE_HEAD && !cap_httpparse_partial(&c->parser) && c->pending.len == 0))
    cap_conn_close(c);
}
