/* A fake S3 bucket on the in-loop test server (httpsrv.h), path style
 * (/BUCKET/KEY), enough for the S3 client, the multipart upload and the
 * storage backends: objects (PUT, GET, HEAD, DELETE), multipart uploads
 * (create, parts, complete, abort, list) and the bucket's HEAD.  It counts
 * every operation, keeps each upload's part sizes, and answers the next N
 * requests of one operation with a chosen error (fake_fail).
 *
 * Every stored object has the ETag FAKE_ETAG (or f->etag when set).  A GET
 * honours "Range: bytes=a-b" and "bytes=a-" (206 with Content-Range, 416
 * past the end) and any GET or HEAD of an object honours If-Match (412
 * PreconditionFailed when it names another ETag).  fake_cut makes the next
 * GETs of an object send only the first bytes of their body, then drop the
 * connection: a store failing mid-body. */
#ifndef CAP_TEST_FAKES3_H
#define CAP_TEST_FAKES3_H

#include "curlloop.h"
#include "httpsrv.h"
#include "s3.h"

enum fake_op {
  OP_GET,
  OP_PUT,
  OP_HEAD,
  OP_DELETE,
  OP_CREATE,
  OP_PART,
  OP_COMPLETE,
  OP_ABORT,
  OP_LIST,
  OP_COUNT
};

#define FAKE_MAX_OBJECTS 16
#define FAKE_MAX_PARTS   64
/* The ETag of every stored object unless fake_s3.etag says otherwise. */
#define FAKE_ETAG "\"e1\""

struct fake_obj {
  char key[256];
  char *data;
  size_t len;
  char content_type[128];
};

struct fake_s3 {
  struct srv srv;
  struct fake_obj objs[FAKE_MAX_OBJECTS];
  int count[OP_COUNT];
  /* The multipart upload (one at a time is enough here). */
  int upload_open;
  char upload_key[256];
  char *parts[FAKE_MAX_PARTS];
  size_t part_len[FAKE_MAX_PARTS];
  int nparts;
  /* Failure injection. */
  enum fake_op fail_op;
  int fail_n;
  int fail_status;
  const char *fail_code;
  /* Extra XML for the multipart listing. */
  const char *list_xml;
  char last_content_type[128];
  /* Objects' ETag when not NULL (FAKE_ETAG otherwise). */
  const char *etag;
  /* The next cut_n GETs of an object send cut_after body bytes, then close. */
  int cut_n;
  size_t cut_after;
  /* What the last GET or HEAD of an object asked ("" when absent), and the
   * answers given to ranges and preconditions. */
  char last_range[128];
  char last_if_match[130];
  int ranges, unsatisfiable, precondition_failed;
};

/* Makes the next n GETs of an object stop after `after` body bytes and drop
 * the connection (the head announces the whole length). */
static inline void fake_cut(struct fake_s3 *f, int n, size_t after) {
  f->cut_n = n;
  f->cut_after = after;
}

static inline void fake_fail(struct fake_s3 *f, enum fake_op op, int n, int status,
                             const char *code) {
  f->fail_op = op;
  f->fail_n = n;
  f->fail_status = status;
  f->fail_code = code;
}

static inline struct fake_obj *fake_find(struct fake_s3 *f, const char *key, int create) {
  for (int i = 0; i < FAKE_MAX_OBJECTS; i++)
    if (f->objs[i].key[0] && strcmp(f->objs[i].key, key) == 0)
      return &f->objs[i];
  if (!create)
    return NULL;
  for (int i = 0; i < FAKE_MAX_OBJECTS; i++)
    if (!f->objs[i].key[0]) {
      snprintf(f->objs[i].key, sizeof(f->objs[i].key), "%s", key);
      return &f->objs[i];
    }
  return NULL;
}

/* Stores (a copy of) data as key. */
static inline void fake_put(struct fake_s3 *f, const char *key, const char *data, size_t len) {
  struct fake_obj *o = fake_find(f, key, 1);
  free(o->data);
  o->data = xmalloc(len ? len : 1);
  memcpy(o->data, data, len);
  o->len = len;
}

static inline void fake_reset_parts(struct fake_s3 *f) {
  for (int i = 0; i < FAKE_MAX_PARTS; i++) {
    free(f->parts[i]);
    f->parts[i] = NULL;
    f->part_len[i] = 0;
  }
  f->nparts = 0;
  f->upload_open = 0;
}

static inline void fake_free(struct fake_s3 *f) {
  for (int i = 0; i < FAKE_MAX_OBJECTS; i++)
    free(f->objs[i].data);
  fake_reset_parts(f);
}

static inline void fake_error(struct sconn *c, int status, const char *code, int head) {
  char body[256];
  int n = snprintf(body, sizeof(body), "<Error><Code>%s</Code><Message>fake %d</Message></Error>",
                   code, status);
  srv_respond_h(c, status, NULL, body, (size_t)n, 0, head);
}

/* Parses a Range value for an object of len bytes: "bytes=a-b" or
 * "bytes=a-" (b clamped to the end).  Returns 1 with the inclusive range,
 * -1 when it starts past the end, 0 when it is not one of those (ignored:
 * the whole object is sent). */
static inline int fake_range(const char *v, size_t vl, size_t len, size_t *a, size_t *b) {
  char buf[128];
  if (vl >= sizeof(buf))
    return 0;
  memcpy(buf, v, vl);
  buf[vl] = '\0';
  if (strncmp(buf, "bytes=", 6) != 0 || buf[6] < '0' || buf[6] > '9')
    return 0;
  char *end;
  unsigned long long first = strtoull(buf + 6, &end, 10), last = ~0ULL;
  if (*end != '-')
    return 0;
  if (end[1]) {
    if (end[1] < '0' || end[1] > '9')
      return 0;
    last = strtoull(end + 1, &end, 10);
    if (*end || last < first)
      return 0;
  }
  if (first >= len)
    return -1;
  *a = (size_t)first;
  *b = last >= len ? len - 1 : (size_t)last;
  return 1;
}

/* Answers a GET or HEAD of o (NULL: the bucket) after If-Match and Range. */
static inline void fake_get(struct fake_s3 *f, struct sconn *c, const struct srv_req *rq,
                            struct fake_obj *o, int head) {
  const char *etag = f->etag ? f->etag : FAKE_ETAG;
  size_t vl;
  char hdrs[512];
  if (o == NULL) {
    srv_respond_h(c, 200, "ETag: \"e1\"\r\n", "", 0, 0, head);
    return;
  }
  const char *im = srv_header(rq->head, "If-Match", &vl);
  snprintf(f->last_if_match, sizeof(f->last_if_match), "%.*s", im ? (int)vl : 0, im ? im : "");
  if (im && !(vl == 1 && im[0] == '*') && !(vl == strlen(etag) && memcmp(im, etag, vl) == 0)) {
    f->precondition_failed++;
    fake_error(c, 412, "PreconditionFailed", head);
    return;
  }
  const char *rg = head ? NULL : srv_header(rq->head, "Range", &vl);
  snprintf(f->last_range, sizeof(f->last_range), "%.*s", rg ? (int)vl : 0, rg ? rg : "");
  size_t a = 0, b = o->len ? o->len - 1 : 0;
  int ranged = rg ? fake_range(rg, vl, o->len, &a, &b) : 0;
  if (ranged < 0) {
    f->unsatisfiable++;
    static const char body[] =
        "<Error><Code>InvalidRange</Code><Message>fake 416</Message></Error>";
    snprintf(hdrs, sizeof(hdrs), "Content-Range: bytes */%zu\r\n", o->len);
    srv_respond_h(c, 416, hdrs, body, sizeof(body) - 1, 0, 0);
    return;
  }
  int n = snprintf(hdrs, sizeof(hdrs), "ETag: %s\r\nAccept-Ranges: bytes\r\n", etag);
  if (ranged) {
    f->ranges++;
    snprintf(hdrs + n, sizeof(hdrs) - (size_t)n, "Content-Range: bytes %zu-%zu/%zu\r\n", a, b,
             o->len);
  }
  size_t len = o->len ? b - a + 1 : 0;
  if (!head && f->cut_n > 0 && f->cut_after < len) {
    /* The head promises len bytes; the body stops short and the
     * connection drops. */
    f->cut_n--;
    size_t total;
    char *data = srv_format(ranged ? 206 : 200, hdrs, o->data + a, len, 1, 0, &total);
    c->stop_reading = 1;
    srv_write(c, data, total - (len - f->cut_after), 1);
    return;
  }
  srv_respond_h(c, ranged ? 206 : 200, hdrs, o->data + a, len, 0, head);
}

static inline enum fake_op fake_classify(const struct srv_req *rq, int has_key) {
  int uploads = strstr(rq->query, "uploads") != NULL;
  int upload_id = strstr(rq->query, "uploadId=") != NULL;
  if (strcmp(rq->method, "HEAD") == 0)
    return OP_HEAD;
  if (strcmp(rq->method, "GET") == 0)
    return has_key ? OP_GET : OP_LIST;
  if (strcmp(rq->method, "PUT") == 0)
    return strstr(rq->query, "partNumber=") ? OP_PART : OP_PUT;
  if (strcmp(rq->method, "POST") == 0)
    return uploads ? OP_CREATE : OP_COMPLETE;
  return upload_id ? OP_ABORT : OP_DELETE;
}

static inline void fake_handle(struct sconn *c, const struct srv_req *rq) {
  struct fake_s3 *f = c->srv->data;
  /* "/bucket" or "/bucket/key". */
  const char *slash = strchr(rq->path + 1, '/');
  const char *key = slash ? slash + 1 : "";
  enum fake_op op = fake_classify(rq, key[0] != '\0');
  int head = op == OP_HEAD;
  size_t vl;
  f->count[op]++;
  if (f->fail_n > 0 && f->fail_op == op) {
    f->fail_n--;
    if (f->fail_status == 0)
      srv_conn_close(c); /* A store that died: the request gets no answer. */
    else
      fake_error(c, f->fail_status, f->fail_code, head);
    return;
  }
  const char *ct = srv_header(rq->head, "Content-Type", &vl);
  if (ct && (op == OP_PUT || op == OP_CREATE))
    snprintf(f->last_content_type, sizeof(f->last_content_type), "%.*s", (int)vl, ct);
  char xml[1024];
  int n;
  struct fake_obj *o;
  switch (op) {
  case OP_HEAD:
  case OP_GET:
    o = key[0] ? fake_find(f, key, 0) : NULL;
    if (key[0] && o == NULL) {
      fake_error(c, 404, "NoSuchKey", head);
      return;
    }
    fake_get(f, c, rq, o, head);
    return;
  case OP_PUT:
    fake_put(f, key, rq->body, rq->body_len);
    srv_respond_h(c, 200, "ETag: \"put\"\r\n", "", 0, 0, 0);
    return;
  case OP_DELETE:
    if ((o = fake_find(f, key, 0)) != NULL) {
      free(o->data);
      memset(o, 0, sizeof(*o));
    }
    srv_respond(c, 204, "", 0, 0);
    return;
  case OP_CREATE:
    fake_reset_parts(f);
    f->upload_open = 1;
    snprintf(f->upload_key, sizeof(f->upload_key), "%s", key);
    n = snprintf(xml, sizeof(xml),
                 "<InitiateMultipartUploadResult><UploadId>up-1</UploadId>"
                 "</InitiateMultipartUploadResult>");
    srv_respond(c, 200, xml, (size_t)n, 0);
    return;
  case OP_PART: {
    int no = atoi(strstr(rq->query, "partNumber=") + 11);
    if (no < 1 || no > FAKE_MAX_PARTS) {
      fake_error(c, 400, "InvalidPart", 0);
      return;
    }
    free(f->parts[no - 1]);
    f->parts[no - 1] = xmalloc(rq->body_len ? rq->body_len : 1);
    memcpy(f->parts[no - 1], rq->body, rq->body_len);
    f->part_len[no - 1] = rq->body_len;
    if (no > f->nparts)
      f->nparts = no;
    char etag[64];
    snprintf(etag, sizeof(etag), "ETag: \"p%d\"\r\n", no);
    srv_respond_h(c, 200, etag, "", 0, 0, 0);
    return;
  }
  case OP_COMPLETE: {
    size_t total = 0;
    for (int i = 0; i < f->nparts; i++)
      total += f->part_len[i];
    char *all = xmalloc(total ? total : 1);
    size_t off = 0;
    for (int i = 0; i < f->nparts; i++) {
      memcpy(all + off, f->parts[i], f->part_len[i]);
      off += f->part_len[i];
    }
    fake_put(f, key, all, total);
    free(all);
    f->upload_open = 0;
    n = snprintf(xml, sizeof(xml),
                 "<CompleteMultipartUploadResult><ETag>\"done\"</ETag>"
                 "</CompleteMultipartUploadResult>");
    srv_respond(c, 200, xml, (size_t)n, 0);
    return;
  }
  case OP_ABORT:
    f->upload_open = 0;
    srv_respond(c, 204, "", 0, 0);
    return;
  case OP_LIST: {
    const char *l = f->list_xml ? f->list_xml : "";
    n = snprintf(xml, sizeof(xml), "<ListMultipartUploadsResult>%s</ListMultipartUploadsResult>",
                 l);
    srv_respond(c, 200, xml, (size_t)n, 0);
    return;
  }
  default:
    srv_respond(c, 400, "", 0, 0);
  }
}

static inline int fake_start(struct fake_s3 *f, uv_loop_t *loop) {
  memset(f, 0, sizeof(*f));
  int rc = srv_start(&f->srv, loop, fake_handle);
  f->srv.data = f;
  return rc;
}

/* A loop with a curl loop and an S3 client talking to a fake bucket. */
struct s3env {
  uv_loop_t loop;
  struct fake_s3 fake;
  struct cap_curlloop cl;
  struct cap_s3_conf conf;
  struct cap_s3 s3;
  char endpoint[64];
  uv_timer_t watchdog;
  int timed_out;
};

static inline void s3env_on_watchdog(uv_timer_t *t) {
  struct s3env *e = t->data;
  e->timed_out = 1;
  uv_stop(&e->loop);
}

/* Sets e up with retries and a 5 ms first backoff.  Returns 0 or -1. */
static inline int s3env_init(struct s3env *e, int retries) {
  memset(e, 0, sizeof(*e));
  if (uv_loop_init(&e->loop) != 0 || fake_start(&e->fake, &e->loop) != 0 ||
      cap_curlloop_init(&e->cl, &e->loop) != 0)
    return -1;
  snprintf(e->endpoint, sizeof(e->endpoint), "http://127.0.0.1:%d", e->fake.srv.port);
  e->conf.endpoint = e->endpoint;
  e->conf.bucket = (char *)"bkt";
  e->conf.prefix = (char *)"";
  e->conf.region = (char *)"auto";
  e->conf.access_key = (char *)"AKTEST";
  e->conf.secret_key = (char *)"SKTEST";
  e->conf.retries = retries;
  e->conf.backoff_ms = 5;
  e->conf.low_speed_s = 30;
  uv_timer_init(&e->loop, &e->watchdog);
  e->watchdog.data = e;
  return cap_s3_init(&e->s3, &e->cl, &e->conf) == 0 ? 0 : -1;
}

/* Runs the loop until *flag is non-zero or ms pass; returns *flag != 0. */
static inline int s3env_run(struct s3env *e, const int *flag, uint64_t ms) {
  e->timed_out = 0;
  uv_timer_start(&e->watchdog, s3env_on_watchdog, ms, 0);
  while (!*flag && !e->timed_out)
    uv_run(&e->loop, UV_RUN_ONCE);
  uv_timer_stop(&e->watchdog);
  return *flag != 0;
}

/* Runs the loop for ms whatever happens. */
static inline void s3env_run_for(struct s3env *e, uint64_t ms) {
  int never = 0;
  s3env_run(e, &never, ms);
}

static inline void s3env_close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Closes everything and the loop; returns uv_loop_close's result. */
static inline int s3env_fini(struct s3env *e) {
  cap_curlloop_close(&e->cl, NULL);
  srv_close(&e->fake.srv);
  uv_close((uv_handle_t *)&e->watchdog, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  fake_free(&e->fake);
  int rc = uv_loop_close(&e->loop);
  if (rc != 0) {
    uv_walk(&e->loop, s3env_close_walk, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
  }
  return rc;
}

#endif
