#include "httpparse.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

static const struct cap_httpparse_limits default_limits = {
    .max_header_bytes = 8192, .max_headers = 64, .max_url_bytes = 2048};

/* What a complete request looked like when MESSAGE was returned. */
struct msg {
  int method, major, minor;
  char url[4096];
  size_t url_len, path_len;
  char body[4096];
  size_t body_len;
  char host[64];
  int has_host;
  size_t nhdr;
  int keep_alive, chunked, has_cl, expect_continue, expect_other, upgrade;
  uint64_t content_length;
};

struct result {
  char seq[64]; /* One letter per event: H(eaders), M(essage), E(rror). */
  size_t nseq;
  int nmsg;
  int err_status;
  const char *err_code;
  size_t consumed;
  struct msg msgs[4];
};

static void record(struct result *r, char c) {
  if (r->nseq < sizeof(r->seq) - 1)
    r->seq[r->nseq++] = c;
}

static void snapshot(struct msg *m, const struct cap_request *req) {
  memset(m, 0, sizeof(*m));
  m->method = req->method;
  m->major = req->http_major;
  m->minor = req->http_minor;
  m->url_len = req->url_len;
  m->path_len = req->path_len;
  if (req->url_len < sizeof(m->url))
    memcpy(m->url, cap_request_url(req), req->url_len);
  m->body_len = req->body.len;
  if (req->body.len < sizeof(m->body) && req->body.len)
    memcpy(m->body, req->body.data, req->body.len);
  size_t len;
  const char *h = cap_request_header(req, "host", &len);
  if (h && len < sizeof(m->host)) {
    memcpy(m->host, h, len);
    m->has_host = 1;
  }
  m->nhdr = req->nhdr;
  m->keep_alive = req->keep_alive;
  m->chunked = req->chunked;
  m->has_cl = req->has_content_length;
  m->content_length = req->content_length;
  m->expect_continue = req->expect_continue;
  m->expect_other = req->expect_other;
  m->upgrade = req->upgrade;
}

/* Feeds len bytes the way a connection does: after HEADERS it sets
 * max_body and feeds on (with what is left, possibly nothing); after
 * MESSAGE it records the request and readies the next one.  Returns when
 * the parser wants more bytes or failed. */
static void drive(struct cap_httpparse *p, const char *data, size_t len, size_t max_body,
                  struct result *r) {
  for (int guard = 0; guard < 1000; guard++) {
    size_t used = 0;
    enum cap_httpparse_event ev = cap_httpparse_feed(p, data, len, &used);
    if (used > len) {
      CHECK(used <= len);
      return;
    }
    data += used;
    len -= used;
    r->consumed += used;
    switch (ev) {
    case CAP_HTTPPARSE_MORE:
      CHECK_EQ_INT(len, 0); /* MORE means everything was used. */
      return;
    case CAP_HTTPPARSE_HEADERS:
      record(r, 'H');
      p->max_body = max_body;
      break;
    case CAP_HTTPPARSE_MESSAGE:
      record(r, 'M');
      if (r->nmsg < 4)
        snapshot(&r->msgs[r->nmsg], &p->req);
      r->nmsg++;
      cap_httpparse_next(p);
      break;
    case CAP_HTTPPARSE_ERROR:
      record(r, 'E');
      r->err_status = p->err_status;
      r->err_code = p->err_code;
      return;
    }
  }
  CHECK(!"drive loops");
}

/* Runs text through a fresh parser, whole or one byte at a time. */
static struct result *run(const char *text, size_t len, const struct cap_httpparse_limits *lim,
                          size_t max_body, int bytewise) {
  struct result *r = calloc(1, sizeof(*r));
  struct cap_httpparse p;
  cap_httpparse_init(&p, lim ? lim : &default_limits);
  if (bytewise) {
    for (size_t i = 0; i < len && !strchr(r->seq, 'E'); i++)
      drive(&p, text + i, 1, max_body, r);
  } else {
    drive(&p, text, len, max_body, r);
  }
  cap_httpparse_free(&p);
  return r;
}

#define RUN(lit, max_body, bytewise) run(lit, sizeof(lit) - 1, NULL, max_body, bytewise)

static void test_simple_get_exact(void) {
  static const char req[] = "GET /health HTTP/1.1\r\nHost: example.com\r\nX-Thing: a b c\r\n"
                            "Empty:\r\nUser-Agent: t\r\n\r\n";
  const size_t len = sizeof(req) - 1;
  struct cap_httpparse p;
  size_t used = 12345;
  cap_httpparse_init(&p, &default_limits);
  CHECK_EQ_INT(cap_httpparse_partial(&p), 0);

  /* A piece of the request line: MORE, everything consumed, partial. */
  CHECK_EQ_INT(cap_httpparse_feed(&p, req, 8, &used), CAP_HTTPPARSE_MORE);
  CHECK_EQ_INT(used, 8);
  CHECK_EQ_INT(cap_httpparse_partial(&p), 1);
  CHECK_EQ_INT(cap_httpparse_feed(&p, req + 8, len - 8, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(used, len - 8);
  CHECK_EQ_INT(cap_httpparse_partial(&p), 1);

  const struct cap_request *r = &p.req;
  CHECK_EQ_INT(r->method, HTTP_GET);
  CHECK_EQ_STR(cap_request_method_name(r), "GET");
  CHECK_EQ_INT(r->http_major, 1);
  CHECK_EQ_INT(r->http_minor, 1);
  CHECK_EQ_MEM(cap_request_url(r), r->url_len, "/health", 7);
  CHECK_EQ_INT(r->path_len, 7);
  CHECK_EQ_INT(r->keep_alive, 1);
  CHECK_EQ_INT(r->chunked, 0);
  CHECK_EQ_INT(r->has_content_length, 0);
  CHECK_EQ_INT(r->content_length, 0);
  CHECK_EQ_INT(r->nhdr, 4);
  size_t hl = 99;
  const char *v = cap_request_header(r, "host", &hl);
  CHECK_EQ_MEM(v, hl, "example.com", 11);
  v = cap_request_header(r, "HOST", &hl);
  CHECK_EQ_MEM(v, hl, "example.com", 11);
  v = cap_request_header(r, "hOsT", &hl);
  CHECK_EQ_MEM(v, hl, "example.com", 11);
  v = cap_request_header(r, "x-thing", &hl);
  CHECK_EQ_MEM(v, hl, "a b c", 5);
  v = cap_request_header(r, "empty", &hl);
  CHECK(v != NULL);
  CHECK_EQ_INT(hl, 0);
  hl = 99;
  CHECK(cap_request_header(r, "missing", &hl) == NULL);
  CHECK_EQ_INT(hl, 0);
  CHECK(cap_request_header(r, "hos", &hl) == NULL);
  CHECK(cap_request_header(r, "hostx", &hl) == NULL);
  CHECK_EQ_INT(cap_request_header_count(r, "HOST"), 1);
  CHECK_EQ_INT(cap_request_header_count(r, "nope"), 0);
  CHECK(cap_request_query(r, &hl) == NULL);
  CHECK_EQ_INT(hl, 0);

  /* The body-less message completes only on a feed of zero bytes. */
  used = 12345;
  CHECK_EQ_INT(cap_httpparse_feed(&p, req + len, 0, &used), CAP_HTTPPARSE_MESSAGE);
  CHECK_EQ_INT(used, 0);
  CHECK_EQ_INT(cap_httpparse_partial(&p), 1);
  /* The request is still readable until next. */
  CHECK_EQ_MEM(cap_request_url(r), r->url_len, "/health", 7);
  cap_httpparse_next(&p);
  CHECK_EQ_INT(cap_httpparse_partial(&p), 0);
  CHECK_EQ_INT(r->nhdr, 0);
  CHECK(cap_request_header(r, "host", &hl) == NULL);
  /* Nothing more is pending. */
  used = 12345;
  CHECK_EQ_INT(cap_httpparse_feed(&p, "", 0, &used), CAP_HTTPPARSE_MORE);
  CHECK_EQ_INT(used, 0);
  CHECK_EQ_INT(cap_httpparse_partial(&p), 0);

  /* The same parser takes the next request. */
  CHECK_EQ_INT(cap_httpparse_feed(&p, req, len, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(used, len);
  CHECK_EQ_INT(cap_httpparse_feed(&p, "", 0, &used), CAP_HTTPPARSE_MESSAGE);
  cap_httpparse_free(&p);
}

static void test_whole_vs_bytewise(void) {
  static const char req[] =
      "POST /exec?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
      "Content-Length: 13\r\nX-Long-Header-Name: some longer value here\r\n\r\n"
      "{\"a\":\"hello\"}";
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = RUN(req, 1000, bytewise);
    CHECK_EQ_STR(r->seq, "HM");
    CHECK_EQ_INT(r->consumed, sizeof(req) - 1);
    struct msg *m = &r->msgs[0];
    CHECK_EQ_INT(m->method, HTTP_POST);
    CHECK_EQ_STR(m->url, "/exec?x=1");
    CHECK_EQ_INT(m->path_len, 5);
    CHECK_EQ_STR(m->body, "{\"a\":\"hello\"}");
    CHECK_EQ_INT(m->body_len, 13);
    CHECK_EQ_INT(m->has_cl, 1);
    CHECK_EQ_INT(m->content_length, 13);
    CHECK_EQ_STR(m->host, "h");
    CHECK_EQ_INT(m->nhdr, 4);
    free(r);
  }

  /* Bytewise: headers, names and values split across feeds. */
  static const char get[] = "GET /a?q=%20 HTTP/1.1\r\nHost: split.example\r\nAccept: */*\r\n\r\n";
  struct cap_httpparse p;
  size_t used;
  cap_httpparse_init(&p, &default_limits);
  int headers_at = -1;
  for (size_t i = 0; i < sizeof(get) - 1; i++) {
    enum cap_httpparse_event ev = cap_httpparse_feed(&p, get + i, 1, &used);
    CHECK_EQ_INT(used, 1);
    if (ev == CAP_HTTPPARSE_HEADERS) {
      headers_at = (int)i;
      break;
    }
    CHECK_EQ_INT(ev, CAP_HTTPPARSE_MORE);
  }
  CHECK_EQ_INT(headers_at, (int)sizeof(get) - 2); /* On the very last byte. */
  size_t hl;
  const char *v = cap_request_header(&p.req, "Host", &hl);
  CHECK_EQ_MEM(v, hl, "split.example", 13);
  v = cap_request_header(&p.req, "accept", &hl);
  CHECK_EQ_MEM(v, hl, "*/*", 3);
  v = cap_request_query(&p.req, &hl);
  CHECK_EQ_MEM(v, hl, "q=%20", 5);
  CHECK_EQ_INT(cap_httpparse_feed(&p, "", 0, &used), CAP_HTTPPARSE_MESSAGE);
  cap_httpparse_free(&p);
}

static void test_query(void) {
  struct cap_httpparse p;
  size_t used, ql;
  cap_httpparse_init(&p, &default_limits);
  static const char a[] = "GET /exec?a=1&b=2 HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK_EQ_INT(cap_httpparse_feed(&p, a, sizeof(a) - 1, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(p.req.path_len, 5);
  CHECK_EQ_INT(p.req.url_len, 13);
  const char *q = cap_request_query(&p.req, &ql);
  CHECK_EQ_MEM(q, ql, "a=1&b=2", 7);
  cap_httpparse_feed(&p, "", 0, &used);
  cap_httpparse_next(&p);

  static const char b[] = "GET /exec? HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK_EQ_INT(cap_httpparse_feed(&p, b, sizeof(b) - 1, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(p.req.path_len, 5);
  q = cap_request_query(&p.req, &ql);
  CHECK(q != NULL);
  CHECK_EQ_INT(ql, 0);
  cap_httpparse_feed(&p, "", 0, &used);
  cap_httpparse_next(&p);

  static const char c[] = "GET /?x?y=1 HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK_EQ_INT(cap_httpparse_feed(&p, c, sizeof(c) - 1, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(p.req.path_len, 1);
  q = cap_request_query(&p.req, &ql);
  CHECK_EQ_MEM(q, ql, "x?y=1", 5);
  cap_httpparse_free(&p);
}

static void test_keep_alive(void) {
  struct {
    const char *text;
    int keep_alive;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1},
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", 1},
      {"GET / HTTP/1.0\r\n\r\n", 0},
      {"GET / HTTP/1.0\r\nHost: x\r\n\r\n", 0},
      {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1},
      {"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct result *r = run(cases[i].text, strlen(cases[i].text), NULL, 0, 0);
    if (CHECK_EQ_STR(r->seq, "HM")) {
      if (!CHECK_EQ_INT(r->msgs[0].keep_alive, cases[i].keep_alive))
        fprintf(stderr, "  (keep-alive case %zu)\n", i);
    }
    free(r);
  }
  struct result *r = RUN("GET / HTTP/1.0\r\n\r\n", 0, 0);
  CHECK_EQ_INT(r->msgs[0].minor, 0);
  CHECK_EQ_INT(r->msgs[0].has_host, 0);
  free(r);
}

static void test_chunked(void) {
  static const char req[] = "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\n6\r\n world\r\nA\r\n0123456789\r\n0\r\n\r\n";
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = RUN(req, 100, bytewise);
    CHECK_EQ_STR(r->seq, "HM");
    CHECK_EQ_INT(r->consumed, sizeof(req) - 1);
    CHECK_EQ_INT(r->msgs[0].chunked, 1);
    CHECK_EQ_INT(r->msgs[0].has_cl, 0);
    CHECK_EQ_MEM(r->msgs[0].body, r->msgs[0].body_len, "hello world0123456789", 21);
    free(r);
  }
  /* Exactly max_body is fine, one more byte is 413. */
  struct result *r = RUN(req, 21, 0);
  CHECK_EQ_STR(r->seq, "HM");
  free(r);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    r = RUN(req, 20, bytewise);
    CHECK_EQ_STR(r->seq, "HE");
    CHECK_EQ_INT(r->err_status, 413);
    CHECK_EQ_STR(r->err_code, "body_too_large");
    free(r);
  }
  /* A huge chunk is refused before it is all read. */
  static const char huge[] = "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "FFFFFFFF\r\nabcdefghijklmnopqrstuvwxyz";
  r = RUN(huge, 10, 0);
  CHECK_EQ_STR(r->seq, "HE");
  CHECK_EQ_INT(r->err_status, 413);
  free(r);
  /* A body-less route (max_body 0) refuses any chunk byte. */
  r = RUN(req, 0, 0);
  CHECK_EQ_STR(r->seq, "HE");
  CHECK_EQ_INT(r->err_status, 413);
  free(r);
  /* An empty chunked body is fine even then. */
  r = RUN("POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, 0);
  CHECK_EQ_STR(r->seq, "HM");
  CHECK_EQ_INT(r->msgs[0].body_len, 0);
  free(r);
}

static void test_content_length_split(void) {
  static const char head[] = "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n";
  struct cap_httpparse p;
  size_t used;
  char buf[256];
  cap_httpparse_init(&p, &default_limits);
  snprintf(buf, sizeof(buf), "%shello", head);
  size_t hlen = sizeof(head) - 1;
  CHECK_EQ_INT(cap_httpparse_feed(&p, buf, strlen(buf), &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(used, hlen);
  CHECK_EQ_INT(p.req.content_length, 11);
  CHECK_EQ_INT(p.req.has_content_length, 1);
  p.max_body = 100;
  CHECK_EQ_INT(cap_httpparse_feed(&p, buf + used, 5, &used), CAP_HTTPPARSE_MORE);
  CHECK_EQ_INT(used, 5);
  CHECK_EQ_MEM(p.req.body.data, p.req.body.len, "hello", 5);
  CHECK_EQ_INT(cap_httpparse_feed(&p, " wor", 4, &used), CAP_HTTPPARSE_MORE);
  CHECK_EQ_INT(cap_httpparse_feed(&p, "ldGET", 5, &used), CAP_HTTPPARSE_MESSAGE);
  CHECK_EQ_INT(used, 2);
  CHECK_EQ_MEM(p.req.body.data, p.req.body.len, "hello world", 11);
  cap_httpparse_next(&p);
  CHECK_EQ_INT(p.req.body.len, 0);
  CHECK_EQ_INT(cap_httpparse_feed(&p, "GET", 3, &used), CAP_HTTPPARSE_MORE);
  CHECK_EQ_INT(cap_httpparse_partial(&p), 1);
  cap_httpparse_free(&p);

  /* A Content-Length body over max_body. */
  struct result *r =
      RUN("POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", 10, 0);
  CHECK_EQ_STR(r->seq, "HE");
  CHECK_EQ_INT(r->err_status, 413);
  free(r);
  r = RUN("POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", 11, 1);
  CHECK_EQ_STR(r->seq, "HM");
  free(r);
  /* Content-Length: 0 completes without a zero-length feed in between. */
  r = RUN("POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 0, 0);
  CHECK_EQ_STR(r->seq, "HM");
  CHECK_EQ_INT(r->msgs[0].has_cl, 1);
  free(r);
}

static void test_pipelined(void) {
  static const char two[] = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
                            "GET /other?z HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
  const size_t len1 = strlen("GET /health HTTP/1.1\r\nHost: a\r\n\r\n");
  const size_t len = sizeof(two) - 1;
  struct cap_httpparse p;
  size_t used;
  cap_httpparse_init(&p, &default_limits);
  CHECK_EQ_INT(cap_httpparse_feed(&p, two, len, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(used, len1);
  size_t hl;
  const char *v = cap_request_header(&p.req, "host", &hl);
  CHECK_EQ_MEM(v, hl, "a", 1);
  /* The rest is not consumed: the first message completes at once. */
  CHECK_EQ_INT(cap_httpparse_feed(&p, two + len1, len - len1, &used), CAP_HTTPPARSE_MESSAGE);
  CHECK_EQ_INT(used, 0);
  CHECK_EQ_MEM(cap_request_url(&p.req), p.req.url_len, "/health", 7);
  cap_httpparse_next(&p);
  CHECK_EQ_INT(cap_httpparse_feed(&p, two + len1, len - len1, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(used, len - len1);
  CHECK_EQ_MEM(cap_request_url(&p.req), p.req.url_len, "/other?z", 8);
  CHECK_EQ_INT(p.req.path_len, 6);
  v = cap_request_header(&p.req, "host", &hl);
  CHECK_EQ_MEM(v, hl, "b", 1);
  CHECK_EQ_INT(p.req.nhdr, 2);
  CHECK_EQ_INT(p.req.keep_alive, 0);
  CHECK_EQ_INT(cap_httpparse_feed(&p, "", 0, &used), CAP_HTTPPARSE_MESSAGE);
  cap_httpparse_free(&p);

  /* A body and a second request in one buffer, whole and bytewise. */
  static const char mixed[] = "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                              "POST /exec HTTP/1.1\r\nHost: y\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "2\r\nde\r\n0\r\n\r\n"
                              "GET /last HTTP/1.1\r\nHost: z\r\n\r\n";
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = RUN(mixed, 100, bytewise);
    CHECK_EQ_STR(r->seq, "HMHMHM");
    CHECK_EQ_INT(r->consumed, sizeof(mixed) - 1);
    CHECK_EQ_INT(r->nmsg, 3);
    CHECK_EQ_STR(r->msgs[0].body, "abc");
    CHECK_EQ_STR(r->msgs[0].host, "x");
    CHECK_EQ_STR(r->msgs[1].body, "de");
    CHECK_EQ_STR(r->msgs[1].host, "y");
    CHECK_EQ_STR(r->msgs[2].url, "/last");
    CHECK_EQ_INT(r->msgs[2].body_len, 0);
    CHECK_EQ_STR(r->msgs[2].host, "z");
    free(r);
  }
}

static void test_url_limit(void) {
  struct cap_httpparse_limits lim = {
      .max_header_bytes = 8192, .max_headers = 64, .max_url_bytes = 32};
  char req[512];
  char url[64];
  /* Exactly 32 bytes of URL. */
  memset(url, 'a', sizeof(url));
  url[0] = '/';
  snprintf(req, sizeof(req), "GET %.*s HTTP/1.1\r\nHost: x\r\n\r\n", 32, url);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = run(req, strlen(req), &lim, 0, bytewise);
    CHECK_EQ_STR(r->seq, "HM");
    CHECK_EQ_INT(r->msgs[0].url_len, 32);
    free(r);
  }
  snprintf(req, sizeof(req), "GET %.*s HTTP/1.1\r\nHost: x\r\n\r\n", 33, url);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = run(req, strlen(req), &lim, 0, bytewise);
    CHECK_EQ_STR(r->seq, "E");
    CHECK_EQ_INT(r->err_status, 414);
    CHECK_EQ_STR(r->err_code, "uri_too_long");
    free(r);
  }
  /* The query counts too. */
  snprintf(req, sizeof(req), "GET /a?%.*s HTTP/1.1\r\nHost: x\r\n\r\n", 40, url + 1);
  struct result *r = run(req, strlen(req), &lim, 0, 0);
  CHECK_EQ_STR(r->seq, "E");
  CHECK_EQ_INT(r->err_status, 414);
  free(r);
}

static void test_header_limits(void) {
  struct cap_httpparse_limits lim = {
      .max_header_bytes = 256, .max_headers = 4, .max_url_bytes = 64};
  /* Four headers: fine; five: 431. */
  static const char four[] = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
  static const char five[] = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = run(four, sizeof(four) - 1, &lim, 0, bytewise);
    CHECK_EQ_STR(r->seq, "HM");
    CHECK_EQ_INT(r->msgs[0].nhdr, 4);
    free(r);
    r = run(five, sizeof(five) - 1, &lim, 0, bytewise);
    CHECK_EQ_STR(r->seq, "E");
    CHECK_EQ_INT(r->err_status, 431);
    CHECK_EQ_STR(r->err_code, "headers_too_large");
    free(r);
  }

  char req[2048];
  char fill[1024];
  memset(fill, 'v', sizeof(fill));
  /* A long value. */
  snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: x\r\nBig: %.*s\r\n\r\n", 300, fill);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = run(req, strlen(req), &lim, 0, bytewise);
    CHECK_EQ_STR(r->seq, "E");
    CHECK_EQ_INT(r->err_status, 431);
    free(r);
  }
  /* A long name. */
  snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: x\r\n%.*s: 1\r\n\r\n", 300, fill);
  struct result *r = run(req, strlen(req), &lim, 0, 0);
  CHECK_EQ_STR(r->seq, "E");
  CHECK_EQ_INT(r->err_status, 431);
  free(r);
  /* Many small headers adding up, under the count limit. */
  struct cap_httpparse_limits many = {
      .max_header_bytes = 256, .max_headers = 100, .max_url_bytes = 64};
  size_t n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
  for (int i = 0; i < 40; i++)
    n += (size_t)snprintf(req + n, sizeof(req) - n, "H%02d: xx\r\n", i);
  snprintf(req + n, sizeof(req) - n, "\r\n");
  r = run(req, strlen(req), &many, 0, 0);
  CHECK_EQ_STR(r->seq, "E");
  CHECK_EQ_INT(r->err_status, 431);
  free(r);

  /* Whitespace that llhttp skips counts as well: optional whitespace
   * before a value... */
  memset(fill, ' ', sizeof(fill));
  snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: x\r\nW:%.*sa\r\n\r\n", 400, fill);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    r = run(req, strlen(req), &lim, 0, bytewise);
    CHECK_EQ_STR(r->seq, "E");
    CHECK_EQ_INT(r->err_status, 431);
    free(r);
  }
  /* ...and empty lines before the request line. */
  n = 0;
  for (int i = 0; i < 200; i++)
    n += (size_t)snprintf(req + n, sizeof(req) - n, "\r\n");
  snprintf(req + n, sizeof(req) - n, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    r = run(req, strlen(req), &lim, 0, bytewise);
    if (!CHECK_EQ_STR(r->seq, "E"))
      fprintf(stderr, "  (400 bytes of CRLF before the request line, bytewise=%d)\n", bytewise);
    CHECK_EQ_INT(r->err_status, 431);
    free(r);
  }
  /* The limit is per request: a second request of the same size is fine. */
  static const char small[] = "GET / HTTP/1.1\r\nHost: x\r\nA: 0123456789012345678901234567890\r\n"
                              "B: 0123456789012345678901234567890\r\n\r\n";
  char twice[512];
  snprintf(twice, sizeof(twice), "%s%s%s", small, small, small);
  r = run(twice, strlen(twice), &lim, 0, 0);
  CHECK_EQ_STR(r->seq, "HMHMHM");
  free(r);
}

static void test_malformed(void) {
  static const char *const bad[] = {
      /* Content-Length with Transfer-Encoding. */
      "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
      "0\r\n\r\n",
      /* Bad chunk sizes. */
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
      /* Obsolete line folding. */
      "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n\ttwo\r\n\r\n",
      /* Bare LF. */
      "GET / HTTP/1.1\nHost: x\n\n",
      "GET / HTTP/1.1\r\nHost: x\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n",
      /* Bare CR. */
      "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
      /* Two Content-Lengths that disagree, and a bad one. */
      "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
      "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\nab",
      "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
      /* Transfer-Encoding other than chunked last. */
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
      /* Two Host headers. */
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      /* Space before the colon, bad name characters. */
      "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
      "GET / HTTP/1.1\r\nHo\"st: x\r\n\r\n",
      /* Request line trouble. */
      "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
      "GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
      "GET / FOO/1.1\r\nHost: x\r\n\r\n",
      "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
      "get / HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET http://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
      "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* TLS ClientHello */
      /* A header without a name. */
      "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n",
      /* Transfer-Encoding that is empty or does not end with chunked. */
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
      /* Bare LF and stray bytes in the chunked framing. */
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\n0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
      /* A CR alone on the last line, other versions. */
      "GET / HTTP/1.1\r\nHost: x\r\n\r\r\n",
      "GET / HTTP/1.2\r\nHost: x\r\n\r\n",
      "GET /\r\n\r\n",
      "CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n",
      /* A bare LF ending the chunked body, after the last chunk or a trailer
       * (llhttp takes both, even in strict mode). */
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
      "X-T: a\r\n\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
      "X-T: a\nX-U: b\r\n\r\n",
      /* Obsolete line folding and a nameless field in the trailers. */
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
      "X-T: a\r\n b\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
      "X-T: a\r\n\tb\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
      ": b\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
      "X-T: a\x01b\r\n\r\n",
      /* More than one space between the parts of the request line. */
      "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /  HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET   /health   HTTP/1.1\r\nHost: x\r\n\r\n",
      "\r\nGET  / HTTP/1.1\r\nHost: x\r\n\r\n",
      /* Transfer codings other than chunked alone, even with chunked last. */
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n",
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      struct result *r = run(bad[i], strlen(bad[i]), NULL, 100, bytewise);
      int ok = CHECK(strchr(r->seq, 'E') != NULL && strchr(r->seq, 'M') == NULL);
      ok &= CHECK_EQ_INT(r->err_status, 400);
      ok &= CHECK_EQ_STR(r->err_code, "bad_request");
      if (!ok) {
        fprintf(stderr, "  (malformed case %zu, bytewise %d, events \"%s\": ", i, bytewise, r->seq);
        check_print_mem_(bad[i], strlen(bad[i]));
        fputs(")\n", stderr);
      }
      free(r);
    }
  }

  /* NUL inside a header value (strlen cannot carry it). */
  static const char nul[] = "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n";
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = run(nul, sizeof(nul) - 1, NULL, 0, bytewise);
    CHECK_EQ_STR(r->seq, "E");
    CHECK_EQ_INT(r->err_status, 400);
    free(r);
  }
  /* DEL inside a header value. */
  struct result *r = RUN("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7f\r\n\r\n", 0, 0);
  CHECK_EQ_STR(r->seq, "E");
  CHECK_EQ_INT(r->err_status, 400);
  free(r);
  /* Chunk extensions are allowed, but not without bound. */
  r = RUN("POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
          "2;name=value\r\nab\r\n0\r\n\r\n",
          10, 0);
  CHECK_EQ_STR(r->seq, "HM");
  CHECK_EQ_STR(r->msgs[0].body, "ab");
  free(r);
  char ext[2048];
  int n = snprintf(ext, sizeof(ext),
                   "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;");
  memset(ext + n, 'e', 1100);
  snprintf(ext + n + 1100, sizeof(ext) - (size_t)n - 1100, "\r\nab\r\n0\r\n\r\n");
  r = run(ext, strlen(ext), NULL, 10, 0);
  CHECK_EQ_STR(r->seq, "HE");
  CHECK_EQ_INT(r->err_status, 400);
  free(r);
  /* chunked is a case-insensitive token with optional whitespace around. */
  r = RUN(
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  CHUNKED \r\n\r\n2\r\nab\r\n0\r\n\r\n",
      10, 0);
  CHECK_EQ_STR(r->seq, "HM");
  CHECK_EQ_INT(r->msgs[0].chunked, 1);
  CHECK_EQ_STR(r->msgs[0].body, "ab");
  free(r);
  /* TE says what the client accepts in responses; it never frames a body. */
  r = RUN("POST /exec HTTP/1.1\r\nHost: x\r\nTE: identity, chunked\r\nContent-Length: 2\r\n\r\nab",
          10, 0);
  CHECK_EQ_STR(r->seq, "HM");
  CHECK_EQ_INT(r->msgs[0].chunked, 0);
  CHECK_EQ_STR(r->msgs[0].body, "ab");
  free(r);
  /* A tab and obs-text in a value are fine. */
  r = RUN("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb \xc3\xa9\r\n\r\n", 0, 0);
  CHECK_EQ_STR(r->seq, "HM");
  free(r);
}

/* The checks on raw bytes that llhttp does not make (line endings, folding,
 * the request line's spaces) must not refuse what is well formed. */
static void test_strict_but_not_too_strict(void) {
  /* Trailers end one request; the next request on the connection parses. */
  static const char trailers[] =
      "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2;e=v\r\nab\r\n0;last\r\nX-T: a  b\r\nX-U:\r\n\r\n"
      "GET /next HTTP/1.1\r\nHost: x\r\nX-A: two  spaces \t in a value\r\n\r\n";
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = RUN(trailers, 10, bytewise);
    CHECK_EQ_STR(r->seq, "HMHM");
    CHECK_EQ_INT(r->consumed, sizeof(trailers) - 1);
    CHECK_EQ_STR(r->msgs[0].body, "ab");
    CHECK_EQ_STR(r->msgs[1].url, "/next");
    free(r);
  }
  /* A body whose bytes look like a bare LF, a fold or two spaces is data. */
  static const char data[] = "POST /exec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "6\r\n\n \t  \n\r\n0\r\n\r\n"
                             "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\n  \n";
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    struct result *r = RUN(data, 10, bytewise);
    CHECK_EQ_STR(r->seq, "HMHM");
    CHECK_EQ_STR(r->msgs[0].body, "\n \t  \n");
    CHECK_EQ_STR(r->msgs[1].body, "\n  \n");
    free(r);
  }
  /* An empty line before the request line is ignored (RFC 9112 2.2). */
  struct result *r = RUN("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 0);
  CHECK_EQ_STR(r->seq, "HM");
  free(r);
}

static void test_expect_upgrade(void) {
  struct result *r =
      RUN("POST /exec HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
          10, 0);
  CHECK_EQ_STR(r->seq, "HM");
  CHECK_EQ_INT(r->msgs[0].expect_continue, 1);
  CHECK_EQ_INT(r->msgs[0].expect_other, 0);
  free(r);
  r = RUN("POST /exec HTTP/1.1\r\nHost: x\r\nExpect: 100-CONTINUE\r\nContent-Length: 0\r\n\r\n", 10,
          0);
  CHECK_EQ_INT(r->msgs[0].expect_continue, 1);
  free(r);
  r = RUN("GET / HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n", 0, 0);
  CHECK_EQ_STR(r->seq, "HM");
  CHECK_EQ_INT(r->msgs[0].expect_continue, 0);
  CHECK_EQ_INT(r->msgs[0].expect_other, 1);
  free(r);
  r = RUN("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 0);
  CHECK_EQ_INT(r->msgs[0].expect_continue, 0);
  CHECK_EQ_INT(r->msgs[0].expect_other, 0);
  CHECK_EQ_INT(r->msgs[0].upgrade, 0);
  free(r);

  /* Upgrade is ignored (RFC 9110 7.8 allows it): the request is answered
   * as plain HTTP and the stream stays HTTP, so the next request parses
   * with HEADERS before MESSAGE, never a MESSAGE on its own. */
  static const char up[] = "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                           "Upgrade: websocket\r\n\r\n";
  static const char next_req[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  struct cap_httpparse p;
  size_t used;
  cap_httpparse_init(&p, &default_limits);
  CHECK_EQ_INT(cap_httpparse_feed(&p, up, sizeof(up) - 1, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(used, sizeof(up) - 1);
  CHECK_EQ_INT(p.req.upgrade, 1);
  CHECK_EQ_INT(cap_httpparse_feed(&p, "", 0, &used), CAP_HTTPPARSE_MESSAGE);
  cap_httpparse_next(&p);
  CHECK_EQ_INT(cap_httpparse_feed(&p, next_req, sizeof(next_req) - 1, &used),
               CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(used, sizeof(next_req) - 1);
  CHECK_EQ_INT(p.req.upgrade, 0);
  CHECK_EQ_MEM(cap_request_url(&p.req), p.req.path_len, "/health", 7);
  CHECK_EQ_INT(cap_httpparse_feed(&p, "", 0, &used), CAP_HTTPPARSE_MESSAGE);
  cap_httpparse_free(&p);
}

static void test_methods_and_headers(void) {
  static const char req[] = "DELETE /x HTTP/1.1\r\nHost: x\r\nX-Dup: first\r\nx-dup: second\r\n"
                            "X-DUP: third\r\n\r\n";
  struct cap_httpparse p;
  size_t used, hl;
  cap_httpparse_init(&p, &default_limits);
  CHECK_EQ_INT(cap_httpparse_feed(&p, req, sizeof(req) - 1, &used), CAP_HTTPPARSE_HEADERS);
  CHECK_EQ_INT(p.req.method, HTTP_DELETE);
  CHECK_EQ_STR(cap_request_method_name(&p.req), "DELETE");
  CHECK_EQ_INT(cap_request_header_count(&p.req, "x-dup"), 3);
  const char *v = cap_request_header(&p.req, "X-Dup", &hl);
  CHECK_EQ_MEM(v, hl, "first", 5);
  cap_httpparse_free(&p);

  static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "OPTIONS"};
  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
    char text[128];
    snprintf(text, sizeof(text), "%s /m HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
             methods[i]);
    struct result *r = run(text, strlen(text), NULL, 0, 0);
    CHECK_EQ_STR(r->seq, "HM");
    CHECK_EQ_STR(llhttp_method_name((llhttp_method_t)r->msgs[0].method), methods[i]);
    free(r);
  }
}

int main(void) {
  test_simple_get_exact();
  test_whole_vs_bytewise();
  test_query();
  test_keep_alive();
  test_chunked();
  test_content_length_split();
  test_pipelined();
  test_url_limit();
  test_header_limits();
  test_malformed();
  test_strict_but_not_too_strict();
  test_expect_upgrade();
  test_methods_and_headers();
  return check_report();
}
