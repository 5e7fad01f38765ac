#include "upload.h"

#include "alloc.h"
#include "container.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* S3 allows at most this many parts in one upload. */
#define MAX_PARTS 10000

enum ctl_kind { CTL_NONE, CTL_CREATE, CTL_PUT, CTL_COMPLETE, CTL_ABORT };

struct cap_upload_part {
  struct cap_s3_req req;
  struct cap_upload *u;
  int no;
  char no_str[16];
  char *buf; /* NULL for a part read from the file. */
  size_t len;
  uint64_t off;
  struct cap_upload_part *prev, *next;
};

void cap_bufpool_init(struct cap_bufpool *p, size_t part_size, size_t budget) {
  memset(p, 0, sizeof(*p));
  p->part_size = part_size;
  p->max = budget / part_size;
  if (p->max == 0)
    p->max = 1;
  p->free_bufs = xcalloc(p->max, sizeof(char *));
}

void cap_bufpool_free(struct cap_bufpool *p) {
  for (size_t i = 0; i < p->nfree; i++)
    free(p->free_bufs[i]);
  free(p->free_bufs);
  memset(p, 0, sizeof(*p));
}

static char *pool_get(struct cap_bufpool *p) {
  if (p->used >= p->max)
    return NULL;
  p->used++;
  if (p->nfree)
    return p->free_bufs[--p->nfree];
  return xmalloc(p->part_size);
}

static void pool_wait(struct cap_bufpool *p, struct cap_upload *u) {
  if (u->waiting)
    return;
  u->waiting = 1;
  u->wait_next = NULL;
  struct cap_upload **pp = &p->waiters;
  while (*pp)
    pp = &(*pp)->wait_next;
  *pp = u;
}

static void pool_unwait(struct cap_bufpool *p, struct cap_upload *u) {
  if (!u->waiting)
    return;
  for (struct cap_upload **pp = &p->waiters; *pp; pp = &(*pp)->wait_next)
    if (*pp == u) {
      *pp = u->wait_next;
      break;
    }
  u->waiting = 0;
}

/* Takes a buffer back (kept for reuse) and wakes the longest-waiting upload. */
static void pool_put(struct cap_bufpool *p, char *buf) {
  p->used--;
  p->free_bufs[p->nfree++] = buf;
  struct cap_upload *w = p->waiters;
  if (w) {
    pool_unwait(p, w);
    if (w->on_space && !w->failed)
      w->on_space(w);
  }
}

void cap_upload_init(struct cap_upload *u, struct cap_s3 *s3, struct cap_bufpool *pool,
                     int max_in_flight, const char *key) {
  memset(u, 0, sizeof(*u));
  u->s3 = s3;
  u->pool = pool;
  u->max_in_flight = max_in_flight > 0 ? max_in_flight : 1;
  u->key = xstrdup(key);
  u->file_fd = -1;
}

static void dispatch(struct cap_upload *u);

static void maybe_done(struct cap_upload *u) {
  if (u->done_called || u->in_flight || u->ctl_busy)
    return;
  if (u->failed && (u->mp_state != 2 || u->aborted)) {
    u->done_called = 1;
    u->on_done(u, 0);
  } else if (!u->failed && u->completed) {
    u->done_called = 1;
    u->on_done(u, 1);
  }
}

static void release(struct cap_upload *u, char *buf) {
  pool_put(u->pool, buf);
  u->held--;
}

static void fail(struct cap_upload *u, const char *code, const char *msg) {
  if (u->failed)
    return;
  u->failed = 1;
  snprintf(u->err_code, sizeof(u->err_code), "%s", code);
  snprintf(u->err_msg, sizeof(u->err_msg), "%s", msg);
  pool_unwait(u->pool, u);
  /* Filled parts that were never sent give their buffers back now. */
  while (u->ready_head) {
    struct cap_upload_part *p = u->ready_head;
    u->ready_head = p->next;
    if (p->buf)
      release(u, p->buf);
    free(p);
  }
  u->ready_tail = NULL;
  if (u->cur) {
    release(u, u->cur);
    u->cur = NULL;
  }
}

/* Fails u with what the failed request r said. */
static void fail_req(struct cap_upload *u, const struct cap_s3_req *r) {
  if (u->failed)
    return;
  u->err_status = r->status;
  u->err_transient = cap_s3_transient(r);
  fail(u, r->err_code, r->err_msg);
}

static void part_freed(struct cap_s3_req *r) {
  free(container_of(r, struct cap_upload_part, req));
}

static void unlink_sending(struct cap_upload *u, struct cap_upload_part *p) {
  if (p->prev)
    p->prev->next = p->next;
  else
    u->sending = p->next;
  if (p->next)
    p->next->prev = p->prev;
  p->prev = p->next = NULL;
  u->in_flight--;
  if (p->buf) {
    release(u, p->buf);
    p->buf = NULL;
  }
}

static void store_etag(struct cap_upload *u, int no, const char *etag) {
  if ((size_t)no > u->etags_cap) {
    size_t cap = u->etags_cap ? u->etags_cap * 2 : 64;
    while (cap < (size_t)no)
      cap *= 2;
    u->etags = xrealloc(u->etags, cap * sizeof(*u->etags));
    memset(u->etags + u->etags_cap, 0, (cap - u->etags_cap) * sizeof(*u->etags));
    u->etags_cap = cap;
  }
  snprintf(u->etags[no - 1], sizeof(u->etags[0]), "%s", etag);
}

static void on_part_done(struct cap_s3_req *r) {
  struct cap_upload_part *p = container_of(r, struct cap_upload_part, req);
  struct cap_upload *u = p->u;
  unlink_sending(u, p);
  if (!cap_s3_ok(r))
    fail_req(u, r);
  else if (r->etag[0] == '\0')
    fail(u, "storage_error", "UploadPart answered without an ETag");
  else {
    store_etag(u, p->no, r->etag);
    u->parts_done++;
  }
  cap_s3_req_free(r, part_freed);
  /* The source may fill again now that this upload holds one buffer less. */
  if (!u->failed && u->starved && u->on_space) {
    u->starved = 0;
    u->on_space(u);
  }
  dispatch(u);
  maybe_done(u);
}

static void send_part(struct cap_upload *u, struct cap_upload_part *p) {
  struct cap_s3_req *r = &p->req;
  snprintf(p->no_str, sizeof(p->no_str), "%d", p->no);
  cap_s3_req_init(r, u->s3);
  r->method = "PUT";
  r->key = xstrdup(u->key);
  r->query[0].name = "partNumber";
  r->query[0].value = p->no_str;
  r->query[1].name = "uploadId";
  r->query[1].value = u->upload_id;
  r->nquery = 2;
  if (p->buf) {
    r->body = p->buf;
  } else {
    r->body_fd = u->file_fd;
    r->body_off = (off_t)p->off;
  }
  r->body_len = p->len;
  r->done = on_part_done;
  p->next = u->sending;
  if (u->sending)
    u->sending->prev = p;
  u->sending = p;
  u->in_flight++;
  cap_s3_start(r);
}

static struct cap_upload_part *next_part(struct cap_upload *u) {
  struct cap_upload_part *p = u->ready_head;
  if (p) {
    u->ready_head = p->next;
    if (u->ready_head == NULL)
      u->ready_tail = NULL;
    p->next = NULL;
    return p;
  }
  if (u->file_fd < 0 || u->file_next >= u->file_size)
    return NULL;
  p = xcalloc(1, sizeof(*p));
  p->u = u;
  p->no = ++u->nparts;
  p->off = u->file_next;
  uint64_t left = u->file_size - u->file_next;
  p->len = left < u->pool->part_size ? (size_t)left : u->pool->part_size;
  u->file_next += p->len;
  return p;
}

static void push_ready(struct cap_upload *u, char *buf, size_t len) {
  struct cap_upload_part *p = xcalloc(1, sizeof(*p));
  p->u = u;
  p->no = ++u->nparts;
  p->buf = buf;
  p->len = len;
  if (u->ready_tail)
    u->ready_tail->next = p;
  else
    u->ready_head = p;
  u->ready_tail = p;
}

static void on_ctl_done(struct cap_s3_req *r);

static void free_req(struct cap_s3_req *r) {
  free(r);
}

static void start_ctl(struct cap_upload *u, enum ctl_kind kind, const char *method,
                      const char *qname, const char *qvalue, const char *body, size_t len,
                      int body_fd) {
  struct cap_s3_req *r = xmalloc(sizeof(*r));
  cap_s3_req_init(r, u->s3);
  r->data = u;
  u->ctl = r;
  r->method = method;
  r->key = xstrdup(u->key);
  if (qname) {
    r->query[0].name = qname;
    r->query[0].value = qvalue;
    r->nquery = 1;
  }
  r->body = body;
  r->body_len = len;
  r->body_fd = body_fd;
  r->signed_payload = body_fd < 0;
  /* The object's metadata goes with the request that creates the object
   * (the single PUT) or the upload (Create); S3 ignores it on Complete,
   * whose body is XML, and it means nothing on Abort. */
  if (kind == CTL_PUT || kind == CTL_CREATE) {
    r->content_type = u->content_type;
    r->cache_control = u->cache_control;
  } else if (kind == CTL_COMPLETE) {
    r->content_type = "application/xml";
  }
  r->done = on_ctl_done;
  u->ctl_kind = kind;
  u->ctl_busy = 1;
  cap_s3_start(r);
}

static void complete(struct cap_upload *u) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_puts(&b, "<CompleteMultipartUpload>");
  for (int i = 1; i <= u->nparts; i++)
    cap_buf_printf(&b, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", i,
                   u->etags[i - 1]);
  cap_buf_puts(&b, "</CompleteMultipartUpload>");
  free(u->ctl_body);
  u->ctl_body = cap_buf_steal(&b);
  start_ctl(u, CTL_COMPLETE, "POST", "uploadId", u->upload_id, u->ctl_body, strlen(u->ctl_body),
            -1);
}

/* Moves the upload on: create, send parts, single PUT, complete, abort. */
static void dispatch(struct cap_upload *u) {
  if (u->ctl_busy || u->done_called || u->completed)
    return;
  if (u->failed) {
    if (u->mp_state == 2 && !u->aborted && u->in_flight == 0)
      start_ctl(u, CTL_ABORT, "DELETE", "uploadId", u->upload_id, NULL, 0, -1);
    return;
  }
  if (u->mp_state == 0) {
    int file_big = u->file_fd >= 0 && u->file_size > u->pool->part_size;
    if (u->ready_head || file_big) {
      u->mp_state = 1;
      start_ctl(u, CTL_CREATE, "POST", "uploads", "", NULL, 0, -1);
      return;
    }
    if (u->eof) {
      /* Smaller than one part: one PUT. */
      if (u->file_fd >= 0)
        start_ctl(u, CTL_PUT, "PUT", NULL, NULL, NULL, (size_t)u->file_size, u->file_fd);
      else
        start_ctl(u, CTL_PUT, "PUT", NULL, NULL, u->cur ? u->cur : "", u->cur_len, -1);
    }
    return;
  }
  if (u->mp_state != 2)
    return;
  while (u->in_flight < u->max_in_flight) {
    struct cap_upload_part *p = next_part(u);
    if (p == NULL)
      break;
    send_part(u, p);
  }
  if (u->eof && u->in_flight == 0 && u->ready_head == NULL &&
      (u->file_fd < 0 || u->file_next >= u->file_size) && !u->completed)
    complete(u);
}

static void on_ctl_done(struct cap_s3_req *r) {
  struct cap_upload *u = r->data;
  int ok = cap_s3_ok(r);
  u->ctl_busy = 0;
  u->ctl = NULL;
  switch (u->ctl_kind) {
  case CTL_CREATE:
    if (ok && cap_s3_xml_text(r->resp.data, r->resp.len, "UploadId", u->upload_id,
                              sizeof(u->upload_id)) == 0) {
      u->mp_state = 2;
      if (u->on_created)
        u->on_created(u);
    } else {
      u->mp_state = 0; /* Nothing to abort. */
      if (ok)
        fail(u, "storage_error", "CreateMultipartUpload answered without an UploadId");
      else
        fail_req(u, r);
    }
    break;
  case CTL_PUT:
    if (ok) {
      u->completed = 1;
      snprintf(u->etag, sizeof(u->etag), "%s", r->etag);
      if (u->cur) {
        release(u, u->cur);
        u->cur = NULL;
        u->cur_len = 0;
      }
    } else {
      fail_req(u, r);
    }
    break;
  case CTL_COMPLETE:
    /* S3 may answer 200 and still report an error in the body. */
    if (ok && (r->resp.data == NULL || strstr(r->resp.data, "<Error>") == NULL)) {
      u->completed = 1;
      if (cap_s3_xml_text(r->resp.data, r->resp.len, "ETag", u->etag, sizeof(u->etag)) != 0)
        snprintf(u->etag, sizeof(u->etag), "%s", r->etag);
    } else {
      char code[64] = "storage_error", msg[256] = "CompleteMultipartUpload failed";
      cap_s3_xml_text(r->resp.data, r->resp.len, "Code", code, sizeof(code));
      cap_s3_xml_text(r->resp.data, r->resp.len, "Message", msg, sizeof(msg));
      if (ok)
        fail(u, code, msg);
      else
        fail_req(u, r);
    }
    break;
  case CTL_ABORT: {
    /* An abort that failed is handed on: retried later when the store was
     * down longer than the retry budget, so no upload stays open, or
     * reported once when the store refused it.  404: the upload is gone. */
    const char *reason = strcmp(u->err_code, "canceled") == 0 ? "canceled" : "failed";
    u->aborted = 1;
    if (ok)
      cap_metrics_inc(CAP_M_STORAGE_MULTIPART_ABORTS, CAP_LABELS(reason));
    if (!ok && r->status != 404 && u->s3->on_abort_failed)
      u->s3->on_abort_failed(u->s3, r, u->key, u->upload_id, reason);
    break;
  }
  default:
    break;
  }
  u->ctl_kind = CTL_NONE;
  cap_s3_req_free(r, free_req);
  dispatch(u);
  maybe_done(u);
}

size_t cap_upload_space(struct cap_upload *u, char **ptr) {
  if (u->failed || u->eof)
    return 0;
  if (u->cur == NULL) {
    /* An upload holds at most parts_in_flight buffers, the one filling
     * included: memory is uploads x parts_in_flight x part_size at most,
     * and no upload hogs the pool. */
    if (u->held >= u->max_in_flight) {
      u->starved = 1;
      return 0;
    }
    u->cur = pool_get(u->pool);
    if (u->cur == NULL) {
      pool_wait(u->pool, u);
      return 0;
    }
    u->held++;
    u->cur_len = 0;
  }
  *ptr = u->cur + u->cur_len;
  return u->pool->part_size - u->cur_len;
}

void cap_upload_commit(struct cap_upload *u, size_t n) {
  if (u->failed || n == 0)
    return;
  u->cur_len += n;
  u->bytes += n;
  if (u->cur_len < u->pool->part_size)
    return;
  if (u->nparts >= MAX_PARTS) {
    fail(u, "too_large", "The output needs more than 10000 parts; raise the part size");
    dispatch(u);
    maybe_done(u);
    return;
  }
  push_ready(u, u->cur, u->cur_len);
  u->cur = NULL;
  u->cur_len = 0;
  dispatch(u);
}

void cap_upload_finish(struct cap_upload *u) {
  u->eof = 1;
  /* With a multipart upload under way (or about to be), what is left is
   * the last part, which may be shorter; otherwise it goes as one PUT. */
  int multipart = u->mp_state != 0 || u->ready_head != NULL;
  if (!u->failed && multipart && u->cur) {
    if (u->cur_len)
      push_ready(u, u->cur, u->cur_len);
    else
      release(u, u->cur);
    u->cur = NULL;
    u->cur_len = 0;
  }
  dispatch(u);
  maybe_done(u);
}

void cap_upload_file(struct cap_upload *u, int fd, uint64_t size) {
  u->file_fd = fd;
  u->file_size = size;
  u->file_next = 0;
  u->bytes = size;
  u->eof = 1;
  dispatch(u);
  maybe_done(u);
}

void cap_upload_abort(struct cap_upload *u, const char *code, const char *msg) {
  fail(u, code, msg);
  /* Parts under way are stopped; their buffers come back at once. */
  while (u->sending) {
    struct cap_upload_part *p = u->sending;
    unlink_sending(u, p);
    cap_s3_req_cancel(&p->req, part_freed);
  }
  if (u->ctl_busy && u->ctl_kind != CTL_ABORT && u->ctl_kind != CTL_CREATE) {
    /* A single PUT or Complete under way is stopped; Create is let finish
     * so that its upload id can be aborted. */
    cap_s3_req_cancel(u->ctl, free_req);
    u->ctl = NULL;
    u->ctl_busy = 0;
    u->ctl_kind = CTL_NONE;
  }
  dispatch(u);
  maybe_done(u);
}

void cap_upload_free(struct cap_upload *u) {
  pool_unwait(u->pool, u);
  if (u->cur) {
    release(u, u->cur);
    u->cur = NULL;
  }
  if (u->ctl) {
    cap_s3_req_cancel(u->ctl, free_req);
    u->ctl = NULL;
  }
  while (u->sending) {
    struct cap_upload_part *p = u->sending;
    unlink_sending(u, p);
    cap_s3_req_cancel(&p->req, part_freed);
  }
  free(u->etags);
  u->etags = NULL;
  free(u->ctl_body);
  u->ctl_body = NULL;
  free(u->key);
  u->key = NULL;
}
