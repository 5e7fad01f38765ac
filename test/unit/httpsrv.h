/* A tiny HTTP/1.1 server on a test's own libuv loop, for the unit tests of
 * the curl loop, S3 requests, uploads and the storage backends.  It reads
 * a request up to the blank line and its Content-Length body and hands it
 * to the test's handler, which answers with srv_respond (at once) or
 * srv_respond_later (after a delay).  Connections are kept alive unless
 * an answer says otherwise; "Expect: 100-continue" gets a 100 Continue. */
#ifndef CAP_TEST_HTTPSRV_H
#define CAP_TEST_HTTPSRV_H

#include "alloc.h"

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
#include <uv.h>

struct srv;

/* One request as the handler sees it; valid during the call only. */
struct srv_req {
  char method[16];
  char path[1024]; /* Without the query. */
  char query[1024];
  const char *head; /* The request line and headers, NUL-terminated. */
  const char *body;
  size_t body_len;
};

struct sconn {
  uv_tcp_t tcp;
  uv_timer_t slow;
  struct srv *srv;
  char *buf;
  size_t len, cap;
  int waiting; /* A delayed answer is due. */
  char *later; /* That answer, serialized. */
  size_t later_len;
  int closing;
  int stop_reading; /* An answer closed the connection. */
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
  int slow_waiting; /* Requests read and not answered yet. */
  int open;         /* Connections not closed yet. */
  struct sconn *conns;
  void (*handler)(struct sconn *c, const struct srv_req *rq);
  void *data;
};

struct srv_wreq {
  uv_write_t req;
  struct sconn *c;
  char *data;
  int close_after;
};

static inline void srv_conn_close(struct sconn *c);

static inline void srv_on_conn_closed(uv_handle_t *h) {
  struct sconn *c = h->data;
  if (--c->pending_closes > 0)
    return;
  c->srv->open--;
  free(c->later);
  free(c->buf);
  free(c);
}

static inline void srv_conn_close(struct sconn *c) {
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
  uv_close((uv_handle_t *)&c->slow, srv_on_conn_closed);
  uv_close((uv_handle_t *)&c->tcp, srv_on_conn_closed);
}

static inline void srv_on_written(uv_write_t *req, int status) {
  struct srv_wreq *w = (struct srv_wreq *)req;
  struct sconn *c = w->c;
  int close_after = w->close_after;
  free(w->data);
  free(w);
  if (close_after || status < 0)
    srv_conn_close(c);
}

/* Sends len bytes of data (taken over) on c. */
static inline void srv_write(struct sconn *c, char *data, size_t len, int close_after) {
  struct srv_wreq *w = xcalloc(1, sizeof(*w));
  w->c = c;
  w->data = data;
  w->close_after = close_after;
  uv_buf_t b = uv_buf_init(data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, srv_on_written) != 0) {
    free(data);
    free(w);
    srv_conn_close(c);
  }
}

/* Serializes an answer; headers ("Name: value\r\n"...) may be NULL. */
static inline char *srv_format(int status, const char *headers, const char *body, size_t len,
                               int close_after, int head_only, size_t *out_len) {
  char head[1024];
  int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                   status < 300 ? "OK" : "Error", len, headers ? headers : "",
                   close_after ? "Connection: close\r\n" : "");
  size_t blen = head_only ? 0 : len;
  char *data = xmalloc((size_t)n + blen + 1);
  memcpy(data, head, (size_t)n);
  if (blen)
    memcpy(data + n, body, blen);
  *out_len = (size_t)n + blen;
  return data;
}

/* Answers the request being handled on c. */
static inline void srv_respond_h(struct sconn *c, int status, const char *headers, const char *body,
                                 size_t len, int close_after, int head_only) {
  size_t n;
  char *data = srv_format(status, headers, body, len, close_after, head_only, &n);
  srv_write(c, data, n, close_after);
  if (close_after)
    c->stop_reading = 1;
}

static inline void srv_respond(struct sconn *c, int status, const char *body, size_t len,
                               int close_after) {
  srv_respond_h(c, status, NULL, body, len, close_after, 0);
}

static inline void srv_process(struct sconn *c);

static inline void srv_on_later(uv_timer_t *t) {
  struct sconn *c = t->data;
  c->waiting = 0;
  c->srv->slow_waiting--;
  char *data = c->later;
  c->later = NULL;
  srv_write(c, data, c->later_len, 0);
  srv_process(c);
}

/* Answers the request being handled on c ms from now; c reads no further
 * request until then. */
static inline void srv_respond_later(struct sconn *c, uint64_t ms, int status, const char *headers,
                                     const char *body, size_t len) {
  c->later = srv_format(status, headers, body, len, 0, 0, &c->later_len);
  c->waiting = 1;
  c->srv->slow_waiting++;
  uv_timer_start(&c->slow, srv_on_later, ms, 0);
}

/* Offset of the first "\r\n\r\n" in p, or -1. */
static inline long srv_blank_line(const char *p, size_t n) {
  for (size_t i = 0; i + 4 <= n; i++)
    if (memcmp(p + i, "\r\n\r\n", 4) == 0)
      return (long)i;
  return -1;
}

/* Finds header name in a request's head; returns its value (up to the line
 * end, length in *len) or NULL. */
static inline const char *srv_header(const char *head, const char *name, size_t *len) {
  size_t nl = strlen(name);
  for (const char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
    const char *h = line + 2;
    if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
      const char *v = h + nl + 1;
      while (*v == ' ')
        v++;
      const char *end = strstr(v, "\r\n");
      *len = end ? (size_t)(end - v) : strlen(v);
      return v;
    }
  }
  return NULL;
}

/* Hands every complete request in c->buf to the handler. */
static inline void srv_process(struct sconn *c) {
  while (!c->waiting && !c->closing && !c->stop_reading) {
    long blank = srv_blank_line(c->buf, c->len);
    if (blank < 0)
      return;
    size_t hlen = (size_t)blank + 4, vlen;
    char *head = xstrndup(c->buf, hlen);
    const char *v = srv_header(head, "Content-Length", &vlen);
    size_t clen = v ? strtoul(v, NULL, 10) : 0;
    v = srv_header(head, "Expect", &vlen);
    int expect = v && vlen >= 12 && strncasecmp(v, "100-continue", 12) == 0;
    if (c->len < hlen + clen) {
      if (expect && !c->sent_continue) {
        c->sent_continue = 1;
        c->srv->continues++;
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        srv_write(c, xstrndup(cont, sizeof(cont) - 1), sizeof(cont) - 1, 0);
      }
      free(head);
      return;
    }
    c->sent_continue = 0;
    c->srv->requests++;
    struct srv_req rq;
    memset(&rq, 0, sizeof(rq));
    const char *sp = strchr(head, ' ');
    size_t ml = sp ? (size_t)(sp - head) : 0;
    snprintf(rq.method, sizeof(rq.method), "%.*s", (int)ml, head);
    if (sp) {
      const char *t = sp + 1, *end = strchr(t, ' ');
      size_t tl = end ? (size_t)(end - t) : strlen(t);
      const char *q = memchr(t, '?', tl);
      size_t pl = q ? (size_t)(q - t) : tl;
      snprintf(rq.path, sizeof(rq.path), "%.*s", (int)pl, t);
      if (q)
        snprintf(rq.query, sizeof(rq.query), "%.*s", (int)(tl - pl - 1), q + 1);
    }
    rq.head = head;
    rq.body = c->buf + hlen;
    rq.body_len = clen;
    c->srv->handler(c, &rq);
    free(head);
    if (c->stop_reading) {
      c->len = 0; /* Nothing more is read from this connection. */
      return;
    }
    memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
    c->len -= hlen + clen;
  }
}

static inline void srv_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct sconn *c = h->data;
  (void)suggested;
  if (c->cap - c->len < 65536) {
    c->cap = c->cap * 2 + 65536;
    c->buf = xrealloc(c->buf, c->cap);
  }
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static inline void srv_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct sconn *c = s->data;
  (void)buf;
  if (nread < 0) {
    srv_conn_close(c);
    return;
  }
  if (c->stop_reading)
    return;
  c->len += (size_t)nread;
  srv_process(c);
}

static inline void srv_on_accept(uv_stream_t *l, int status) {
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
    srv_conn_close(c);
    return;
  }
  s->accepted++;
  uv_read_start((uv_stream_t *)&c->tcp, srv_on_alloc, srv_on_read);
}

/* Starts listening on 127.0.0.1 (a free port, in s->port); requests go to
 * handler.  Returns 0 or -1. */
static inline int srv_start(struct srv *s, uv_loop_t *loop,
                            void (*handler)(struct sconn *c, const struct srv_req *rq)) {
  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->handler = handler;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  if (uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0) != 0 ||
      uv_listen((uv_stream_t *)&s->listener, 128, srv_on_accept) != 0)
    return -1;
  int len = sizeof(sa);
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sa, &len);
  s->port = ntohs(sa.sin_port);
  return 0;
}

static inline void srv_close_listener(struct srv *s) {
  if (s->listener_closed)
    return;
  s->listener_closed = 1;
  uv_close((uv_handle_t *)&s->listener, NULL);
}

static inline void srv_close(struct srv *s) {
  srv_close_listener(s);
  while (s->conns)
    srv_conn_close(s->conns);
}

/* A port nothing listens on: bound once, then closed. */
static inline int srv_closed_port(void) {
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

#endif
