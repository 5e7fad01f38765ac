#include "objstore.h"

#include "alloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The S3 (and R2) backend: an input is downloaded into a private temp file
 * of the local store, an output is streamed in uniform multipart parts
 * (upload.c) from a pipe or a finished temp file. */

static void free_req(struct cap_s3_req *r) {
  free(r);
}

/* What a failed download means, in the words a client reads. */
static void fetch_error(struct cap_storage_err *e, const struct cap_s3_req *r) {
  if (r->status == 404 || strcmp(r->err_code, "NoSuchKey") == 0) {
    cap_storage_err_set(e, CAP_STORAGE_E_NOT_FOUND, CAP_STORAGE_INPUT,
                        "The input object does not exist");
  } else if (r->status == 403) {
    cap_storage_err_set(e, CAP_STORAGE_E_DENIED, CAP_STORAGE_INPUT,
                        "The object store refused the request: %s: %s", r->err_code, r->err_msg);
  } else if (strcmp(r->err_code, "too_large") == 0) {
    cap_storage_err_set(e, CAP_STORAGE_E_TOO_LARGE, CAP_STORAGE_INPUT,
                        "The input is larger than input_max_mb");
  } else {
    enum cap_storage_errc c = strcmp(r->err_code, "local_write") == 0 ? CAP_STORAGE_E_LOCAL
                              : cap_s3_transient(r)                   ? CAP_STORAGE_E_UNAVAILABLE
                                                                      : CAP_STORAGE_E_FAILED;
    cap_storage_err_set(e, c, CAP_STORAGE_INPUT, "Downloading the input failed: %s: %s",
                        r->err_code, r->err_msg);
  }
  e->status = r->status;
  snprintf(e->detail, sizeof(e->detail), "%s", r->err_code);
  snprintf(e->detail_msg, sizeof(e->detail_msg), "%s", r->err_msg);
}

static void on_fetch_done(struct cap_s3_req *r) {
  struct cap_objin *in = r->data;
  in->req = NULL;
  in->busy = 0;
  if (cap_s3_ok(r)) {
    lseek(in->fd, 0, SEEK_SET);
    in->size = r->bytes_out;
    cap_s3_req_free(r, free_req);
    in->on_ready(in, NULL);
    return;
  }
  fetch_error(&in->err, r);
  cap_s3_req_free(r, free_req);
  in->on_ready(in, &in->err);
}

/* ---- Streamed inputs: a HEAD pins the object, the endpoint serves it ---- */

static void on_stream_fault(struct cap_insrc *src, enum cap_insrc_fault why,
                            const struct cap_s3_req *r) {
  struct cap_objin *in = src->data;
  struct cap_storage_err *e = &in->err;
  if (why == CAP_INSRC_CHANGED) {
    cap_storage_err_set(e, CAP_STORAGE_E_CHANGED, CAP_STORAGE_INPUT,
                        "The input object was replaced or removed while the job read it");
    e->status = r->status;
    snprintf(e->detail, sizeof(e->detail), "%s", r->err_code);
    snprintf(e->detail_msg, sizeof(e->detail_msg), "%s", r->err_msg);
  } else {
    fetch_error(e, r);
  }
  if (in->on_fault)
    in->on_fault(in, e);
}

static void on_head_done(struct cap_s3_req *r) {
  struct cap_objin *in = r->data;
  in->req = NULL;
  in->busy = 0;
  /* An empty object has no byte 0: 416 with its size, 0. */
  int empty = r->status == 416 && r->total == 0;
  if (!cap_s3_ok(r) && !empty) {
    fetch_error(&in->err, r);
    cap_s3_req_free(r, free_req);
    in->on_ready(in, &in->err);
    return;
  }
  /* 206 names the size in its Content-Range; a store that ignored the
   * range sent the whole object (200). */
  uint64_t size = r->total >= 0 ? (uint64_t)r->total : r->length > 0 ? (uint64_t)r->length : 0;
  struct cap_insrc *src = &in->src;
  snprintf(src->etag, sizeof(src->etag), "%s", r->etag);
  cap_s3_req_free(r, free_req);
  if (in->os->input_max && size > in->os->input_max) {
    cap_storage_err_set(&in->err, CAP_STORAGE_E_TOO_LARGE, CAP_STORAGE_INPUT,
                        "The input is larger than input_max_mb");
    in->on_ready(in, &in->err);
    return;
  }
  src->key = in->key;
  src->size = size;
  src->on_fault = on_stream_fault;
  src->data = in;
  if (cap_insrc_open(src, &in->os->st->insrv) != 0) {
    cap_storage_err_set(&in->err, CAP_STORAGE_E_LOCAL, CAP_STORAGE_INPUT,
                        "The input endpoint is not available");
    in->on_ready(in, &in->err);
    return;
  }
  in->size = size;
  in->url = src->url;
  in->port = in->os->st->insrv.port;
  in->on_ready(in, NULL);
}

/* Opens in for reading by range: its first byte (a GET of bytes 0-0)
 * gives the size and ETag, no download.  Not a HEAD: a refusal's body
 * says why (SignatureDoesNotMatch, a wrong region), as a download's does. */
static void open_streamed(struct cap_objin *in) {
  struct cap_s3_req *r = xmalloc(sizeof(*r));
  cap_s3_req_init(r, &in->os->st->s3);
  r->method = "GET";
  r->ranged = 1;
  r->range_start = 0;
  r->range_end = 0;
  r->key = xstrdup(in->key);
  r->done = on_head_done;
  r->data = in;
  in->req = r;
  cap_s3_start(r);
}

static void s3_open_input(struct cap_objin *in) {
  struct cap_objstore *os = in->os;
  if (in->stream && os->st->insrv.listening) {
    open_streamed(in);
    return;
  }
  in->stream = 0;
  snprintf(in->tmp, sizeof(in->tmp), "%s", in->tmp_name);
  int fd = cap_store_tmp_create(os->local, in->tmp);
  if (fd < 0) {
    in->tmp[0] = '\0';
    in->busy = 0;
    cap_storage_err_set(&in->err, CAP_STORAGE_E_LOCAL, CAP_STORAGE_INPUT,
                        "Could not create the input's temp file");
    in->err.sys_errno = -fd;
    in->on_ready(in, &in->err);
    return;
  }
  in->fd = fd;
  struct cap_s3_req *r = xmalloc(sizeof(*r));
  cap_s3_req_init(r, &os->st->s3);
  r->method = "GET";
  r->key = xstrdup(in->key);
  r->out_fd = fd;
  r->out_max = os->input_max;
  r->done = on_fetch_done;
  r->data = in;
  in->req = r;
  cap_s3_start(r);
}

static void s3_cancel_input(struct cap_objin *in) {
  if (in->req)
    cap_s3_req_cancel(in->req, free_req);
  in->req = NULL;
}

static void s3_close_input(struct cap_objin *in) {
  cap_insrc_close(&in->src);
  in->url = NULL;
  if (in->fd >= 0)
    close(in->fd);
  in->fd = -1;
  if (in->tmp[0])
    cap_store_discard(in->os->local, in->tmp);
  in->tmp[0] = '\0';
}

/* Whether the store's error code says the credentials or the permission
 * were refused. */
static int denied(const char *code) {
  return strcmp(code, "AccessDenied") == 0 || strcmp(code, "SignatureDoesNotMatch") == 0 ||
         strcmp(code, "InvalidAccessKeyId") == 0;
}

static void upload_error(struct cap_storage_err *e, const struct cap_upload *u) {
  const char *code = u->err_code[0] ? u->err_code : "error";
  enum cap_storage_errc c = denied(code)                     ? CAP_STORAGE_E_DENIED
                            : strcmp(code, "canceled") == 0  ? CAP_STORAGE_E_CANCELED
                            : strcmp(code, "too_large") == 0 ? CAP_STORAGE_E_TOO_LARGE
                            : u->err_transient               ? CAP_STORAGE_E_UNAVAILABLE
                                                             : CAP_STORAGE_E_FAILED;
  cap_storage_err_set(e, c, CAP_STORAGE_OUTPUT, "Storing the output failed: %s: %s", code,
                      u->err_msg);
  e->status = u->err_status;
  snprintf(e->detail, sizeof(e->detail), "%s", u->err_code);
  snprintf(e->detail_msg, sizeof(e->detail_msg), "%s", u->err_msg);
}

static void on_upload_done(struct cap_upload *u, int ok) {
  struct cap_objout *out = u->data;
  if (ok)
    out->bytes = u->bytes;
  snprintf(out->etag, sizeof(out->etag), "%s", u->etag);
  out->parts = u->nparts ? u->nparts : 1; /* A single PUT is one piece. */
  out->done_called = 1;
  if (ok) {
    out->on_done(out, NULL);
    return;
  }
  upload_error(&out->err, u);
  out->on_done(out, &out->err);
}

static void on_upload_space(struct cap_upload *u) {
  struct cap_objout *out = u->data;
  if (out->on_space)
    out->on_space(out);
}

static void on_upload_created(struct cap_upload *u) {
  struct cap_objout *out = u->data;
  if (out->on_upload)
    out->on_upload(out, u->upload_id);
}

static void new_upload(struct cap_objout *out) {
  struct cap_objstore *os = out->os;
  out->upload = xmalloc(sizeof(*out->upload));
  cap_upload_init(out->upload, &os->st->s3, &os->st->pool, os->parts_in_flight, out->key);
  out->upload->content_type = out->content_type;
  out->upload->cache_control = out->cache_control;
  out->upload->on_space = on_upload_space;
  out->upload->on_done = on_upload_done;
  out->upload->on_created = on_upload_created;
  out->upload->data = out;
}

static void s3_start_stream(struct cap_objout *out) {
  new_upload(out);
}

static size_t s3_space(struct cap_objout *out, char **ptr) {
  return cap_upload_space(out->upload, ptr);
}

static void s3_commit(struct cap_objout *out, size_t n) {
  cap_upload_commit(out->upload, n);
}

static void s3_finish(struct cap_objout *out) {
  cap_upload_finish(out->upload);
}

static void s3_put_file(struct cap_objout *out, const char *tmp_name, uint64_t size) {
  int fd = cap_store_tmp_open(out->os->local, tmp_name);
  if (fd < 0) {
    out->done_called = 1;
    cap_storage_err_set(&out->err, CAP_STORAGE_E_LOCAL, CAP_STORAGE_OUTPUT,
                        "Could not open the output's temp file: %s", strerror(-fd));
    out->err.sys_errno = -fd;
    out->on_done(out, &out->err);
    return;
  }
  out->fd = fd;
  new_upload(out);
  cap_upload_file(out->upload, fd, size);
}

static void s3_abort(struct cap_objout *out, enum cap_storage_errc why, const char *msg) {
  /* The upload's own code picks the metrics label of the abort. */
  cap_upload_abort(out->upload, why == CAP_STORAGE_E_CANCELED ? "canceled" : "storage_error", msg);
}

static void s3_free_output(struct cap_objout *out) {
  if (out->upload) {
    cap_upload_free(out->upload);
    free(out->upload);
    out->upload = NULL;
  }
  if (out->fd >= 0)
    close(out->fd);
  out->fd = -1;
}

/* What a failed DeleteObject means.  The codes are the other requests'
 * (upload_error): refused credentials are DENIED, what retries could not
 * get through is UNAVAILABLE. */
static void delete_error(struct cap_storage_err *e, const struct cap_s3_req *r) {
  enum cap_storage_errc c = r->status == 403 || denied(r->err_code) ? CAP_STORAGE_E_DENIED
                            : cap_s3_transient(r)                   ? CAP_STORAGE_E_UNAVAILABLE
                                                                    : CAP_STORAGE_E_FAILED;
  cap_storage_err_set(e, c, CAP_STORAGE_OUTPUT, "Deleting the output failed: %s: %s", r->err_code,
                      r->err_msg);
  e->status = r->status;
  snprintf(e->detail, sizeof(e->detail), "%s", r->err_code);
  snprintf(e->detail_msg, sizeof(e->detail_msg), "%s", r->err_msg);
}

static void on_delete_done(struct cap_s3_req *r) {
  struct cap_objdel *d = r->data;
  /* S3 answers 204 for a key it does not hold; other stores say 404.
   * Either way the object is gone. */
  int gone = cap_s3_ok(r) || r->status == 404;
  d->req = NULL;
  if (!gone)
    delete_error(&d->err, r);
  cap_s3_req_free(r, free_req);
  cap_objstore_end_delete(d, gone ? NULL : &d->err);
}

static void s3_delete_object(struct cap_objdel *d) {
  struct cap_s3_req *r = xmalloc(sizeof(*r));
  cap_s3_req_init(r, &d->os->st->s3);
  r->method = "DELETE";
  r->key = xstrdup(d->key);
  r->done = on_delete_done;
  r->data = d;
  d->req = r;
  cap_s3_start(r);
}

static void s3_cancel_delete(struct cap_objdel *d) {
  if (d->req)
    cap_s3_req_cancel(d->req, free_req);
  d->req = NULL;
}

static void s3_start(struct cap_objstore *os) {
  cap_storage_start(os->st);
}

static void s3_stop(struct cap_objstore *os) {
  cap_storage_stop(os->st);
}

const struct cap_objstore_ops cap_objstore_s3_ops = {
    .name = "s3",
    .can_stream = 1,
    .open_input = s3_open_input,
    .cancel_input = s3_cancel_input,
    .close_input = s3_close_input,
    .start_stream = s3_start_stream,
    .space = s3_space,
    .commit = s3_commit,
    .finish = s3_finish,
    .put_file = s3_put_file,
    .abort = s3_abort,
    .free_output = s3_free_output,
    .delete_object = s3_delete_object,
    .cancel_delete = s3_cancel_delete,
    .start = s3_start,
    .stop = s3_stop,
};
