#include "conn.h"

#include "admit.h"
#include "alloc.h"
#include "app.h"
#include "container.h"
#include "errcode.h"
#include "httpresp.h"
#include "log.h"
#include "metrics.h"
#include "reqlog.h"
#include "router.h"

#include <assert.h>
#include <errno.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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
/* The minimum body data rate is checked over windows this long, so that a
 * client's scheduling hiccup is not taken for a slow-body attack. */
#define RATE_WINDOW_MS 5000
/* A request already refused (401, 429...) is answered after its body, so
 * that the connection can be kept; that body gets this long at most. */
#define REFUSED_BODY_MS 2000
/* After a half-close during a request the client is probed (see
 * probe_peer) every PROBE_MS, PROBE_MAX times at most. */
#define PROBE_MS  100
#define PROBE_MAX 50

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
static void on_timeout(uv_timer_t *t);
static void start_reading(struct cap_conn *c);

/* Counts a connection closed or refused to keep room for others. */
static void count_shed(const struct cap_conn *c, const char *reason) {
  cap_metrics_inc(CAP_M_CONNECTIONS_SHED, CAP_LABELS(c->opts->set->name, reason));
}

static void on_handle_closed(uv_handle_t *h) {
  struct cap_conn *c = h->data;
  if (--c->handles_open > 0)
    return;
  cap_connset_remove(c->opts->set, &c->link);
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
  cap_connset_closing(c->opts->set, &c->link);
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
  struct cap_reqlog rl = {
      .x = x,
      .parser = &c->parser,
      .peer = (const struct sockaddr *)&c->peer,
      .peer_str = c->peer_str,
      .bytes_out = c->out.len,
      .now_ms = uv_now(c->tcp.loop),
  };
  cap_reqlog_write(&rl);
  if (c->out.cap > 64 * 1024)
    cap_buf_free(&c->out);
  return keep;
}

/* Answers a request that cannot be parsed further, then closes. */
static void fail_connection(struct cap_conn *c, enum cap_err e, const char *msg) {
  if (!c->begun)
    begin_exchange(c);
  cap_buf_reset(&c->x.headers);
  cap_exchange_set_error(&c->x, e, msg);
  c->x.close_after = 1;
  respond(c);
  close_after_write(c);
}

/* Sends the refusal already in the exchange without waiting for the rest
 * of the request's body, and closes. */
static void refuse_now(struct cap_conn *c) {
  c->rejected = 0;
  c->x.close_after = 1;
  respond(c);
  close_after_write(c);
}

static void start_body_window(struct cap_conn *c, uint64_t now) {
  uint64_t left = c->body_deadline > now ? c->body_deadline - now : 0;
  c->window_start = now;
  c->window_bytes = 0;
  if (c->opts->min_body_rate && left > RATE_WINDOW_MS)
    left = RATE_WINDOW_MS;
  uv_timer_start(&c->timer, on_timeout, left, 0);
}

/* A body's deadline or one of its rate windows has passed.  A body that
 * averaged less than min_body_rate over the window (or did not complete
 * when less than that was missing) is given up: slowly trickled bodies
 * would otherwise hold a connection for the whole body timeout. */
static void on_body_timer(struct cap_conn *c) {
  const struct cap_request *req = &c->parser.req;
  uint64_t now = uv_now(c->tcp.loop);
  int slow = 0;
  if (now < c->body_deadline) {
    uint64_t need = c->opts->min_body_rate * (now - c->window_start) / 1000;
    if (req->has_content_length && req->content_length - req->body.len < need)
      need = req->content_length - req->body.len;
    if (c->window_bytes >= need) {
      start_body_window(c, now);
      return;
    }
    slow = 1;
    count_shed(c, "slow_body");
  }
  if (c->rejected)
    refuse_now(c);
  else
    fail_connection(c, CAP_E_REQUEST_TIMEOUT,
                    slow ? "Request body arrives too slowly" : "Request body took too long");
}

/* The client shut its sending side while its request is being handled.
 * That is a half-close (it still reads, and gets its answer) or a close
 * (it is gone).  TCP tells them apart only when data is sent: a closed
 * socket answers it with a reset.  So an interim 100 Continue goes out,
 * which every HTTP/1.1 client must accept and skip, and the socket's
 * state is watched until the probe is acknowledged or reset. */
static void probe_peer(struct cap_conn *c) {
  const struct cap_request *req = &c->parser.req;
  /* HTTP/1.0 clients must not get a 1xx; the final answer will tell. */
  if (req->http_major == 1 && req->http_minor == 0)
    return;
  c->probing = 1;
  c->probes = 0;
  send_bytes(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
  uv_timer_start(&c->timer, on_timeout, PROBE_MS, PROBE_MS);
}

static void check_probe(struct cap_conn *c) {
  struct tcp_info ti;
  socklen_t len = sizeof(ti);
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
      getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || ti.tcpi_state == TCP_CLOSE) {
    /* Reset: the client is gone, and a waiting handler is told. */
    cap_conn_close(c);
    return;
  }
  if ((ti.tcpi_unacked == 0 && c->tcp.write_queue_size == 0) || ++c->probes >= PROBE_MAX) {
    c->probing = 0;
    uv_timer_stop(&c->timer);
  }
}

static void on_timeout(uv_timer_t *t) {
  struct cap_conn *c = t->data;
  switch (c->phase) {
  case PHASE_HEAD:
    if (!cap_httpparse_partial(&c->parser) && c->pending.len == 0) {
      cap_conn_close(c); /* Nothing of a request arrived: no one to answer. */
      return;
    }
    fail_connection(c, CAP_E_REQUEST_TIMEOUT, NULL);
    return;
  case PHASE_BODY:
    on_body_timer(c);
    return;
  case PHASE_DISPATCH:
    if (c->probing) {
      check_probe(c);
      return;
    }
    cap_conn_close(c);
    return;
  default:
    cap_conn_close(c);
  }
}

static void arm_timer(struct cap_conn *c, int phase) {
  uint64_t ms = 0, now = uv_now(c->tcp.loop);
  c->phase = phase;
  c->probing = 0;
  switch (phase) {
  case PHASE_HEAD:
    ms = c->opts->header_timeout_ms;
    break;
  case PHASE_BODY:
    ms = c->opts->body_timeout_ms;
    if (c->rejected && ms > REFUSED_BODY_MS)
      ms = REFUSED_BODY_MS;
    c->body_deadline = now + ms;
    start_body_window(c, now);
    return;
  case PHASE_IDLE:
    ms = c->opts->idle_timeout_ms;
    cap_connset_idle(c->opts->set, &c->link);
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
    cap_connset_busy(c->opts->set, &c->link);
    on_finish(x);
  } else if (x->route == NULL || !c->begun) {
    /* A message without its own headers: the parser lost its way. */
    c->in_dispatch = 0;
    fail_connection(c, CAP_E_BAD_REQUEST, NULL);
    return;
  } else {
    x->route->handler(x);
  }
  c->in_dispatch = 0;
}

/* Counts the connection against the client its request came from, as a
 * trusted proxy's X-Forwarded-For names it: behind Funnel every peer is
 * loopback, and only the forwarded address tells clients apart.  (An
 * untrusted peer was counted at accept; a trusted proxy's own requests,
 * without a forwarded address, are not counted.)  Returns 0, or -EUSERS
 * when that client holds too many connections already. */
static int attribute_client(struct cap_conn *c) {
  if (!c->x.client[0] || strcmp(c->x.client, c->peer_str) == 0)
    return 0;
  return cap_connset_attribute(c->opts->set, &c->link, c->x.client);
}

/* Headers are complete: decide before reading any body. */
static void on_headers(struct cap_conn *c) {
  struct cap_request *req = &c->parser.req;
  struct cap_exchange *x = &c->x;
  int has_body = req->chunked || req->content_length > 0;

  begin_exchange(c);
  size_t max_body = (size_t)c->opts->app->cfg->max_body_bytes;
  int refused = cap_admit_request(x, (const struct sockaddr *)&c->peer, x->start_ms) != 0;
  if (attribute_client(c) != 0) {
    count_shed(c, "client_limit");
    cap_buf_reset(&x->headers);
    cap_exchange_set_error(x, CAP_E_TOO_MANY_CONNECTIONS,
                           "Too many open connections from this client; retry later");
    x->close_after = 1;
    respond(c);
    close_after_write(c);
    return;
  }
  if (refused) {
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
    /* Only waiting to say no: as good as idle when room is short. */
    if (c->rejected)
      cap_connset_idle(c->opts->set, &c->link);
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
      fail_connection(c, c->parser.err, c->parser.err_msg);
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

/* The client sent its last byte (UV_EOF) or the connection broke. */
static void on_read_end(struct cap_conn *c, int status) {
  stop_reading(c);
  if (status != UV_EOF || c->phase == PHASE_LINGER) {
    /* Broken: the client is gone, a waiting handler is told through
     * abort_cb. */
    cap_conn_close(c);
    return;
  }
  c->peer_eof = 1;
  if (c->waiting) {
    /* A half-close after a complete request: it gets its answer. */
    probe_peer(c);
    return;
  }
  if (c->pending.len && c->tcp.write_queue_size > WRITE_QUEUE_MAX)
    return; /* resume() answers what is pending once the queue drains. */
  if (cap_httpparse_partial(&c->parser) || c->pending.len) {
    cap_conn_close(c); /* A request cut short: nothing to answer. */
    return;
  }
  close_after_write(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct cap_conn *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    on_read_end(c, (int)nread);
    return;
  }
  /* Bytes of a new request: the connection is no longer idle.  (A refused
   * request's body does not count: it is only waited for.) */
  if (c->phase == PHASE_HEAD || c->phase == PHASE_IDLE)
    cap_connset_busy(c->opts->set, &c->link);
  if (c->phase == PHASE_BODY)
    c->window_bytes += (size_t)nread;
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

  /* A peer that is not a trusted proxy is one client: it is counted now,
   * before it sends anything. */
  if (!refuse && !cap_netaddr_set_contains(&opts->app->trusted, (struct sockaddr *)&c->peer) &&
      cap_connset_attribute(opts->set, &c->link, c->peer_str) != 0) {
    refuse = 2;
    count_shed(c, "client_limit");
    if (opts->set->nrefused >= CAP_CONNSET_REFUSING_MAX) {
      cap_conn_close(c); /* Too many are being told already. */
      return NULL;
    }
  }
  cap_connset_add(opts->set, &c->link, refuse != 0);
  if (refuse) {
    c->refuse = 1;
    begin_exchange(c);
    fail_connection(c, CAP_E_TOO_MANY_CONNECTIONS,
                    refuse == 2 ? "Too many open connections from this client; retry later" : NULL);
    return c;
  }
  arm_timer(c, PHASE_HEAD);
  start_reading(c);
  return c;
}

void cap_conn_evict(struct cap_conn *c) {
  if (c->closing)
    return;
  if (c->rejected && c->phase == PHASE_BODY) {
    count_shed(c, "refused_body");
    refuse_now(c);
    return;
  }
  count_shed(c, "idle_evicted");
  cap_conn_close(c);
}

void cap_conn_drain(struct cap_conn *c) {
  if (c->closing)
    return;
  c->draining = 1;
  if (c->phase == PHASE_IDLE ||
      (c->phase == PHASE_HEAD && !cap_httpparse_partial(&c->parser) && c->pending.len == 0))
    cap_conn_close(c);
}
