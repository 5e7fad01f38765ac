#include "jobio.h"

#include "alloc.h"
#include "proc.h"
#include "s3.h"
#include "storage.h"
#include "upload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void free_req(struct cap_s3_req *r) {
  free(r);
}

void cap_jobio_init(struct cap_jobio *io, const struct cap_jobio_ops *ops,
                    const struct cap_jobio_spec *spec) {
  memset(io, 0, sizeof(*io));
  io->ops = ops;
  io->spec = *spec;
  io->fetch_fd = -1;
}

/* Turns a failed download into the API's code, status and message. */
static const char *fetch_error(const struct cap_s3_req *r, int *status, char *msg, size_t n) {
  *status = 502;
  if (r->status == 404 || strcmp(r->err_code, "NoSuchKey") == 0) {
    *status = 404;
    snprintf(msg, n, "The input object does not exist");
    return "input_not_found";
  }
  if (r->status == 403) {
    snprintf(msg, n, "The object store refused the request: %s: %s", r->err_code, r->err_msg);
    return "storage_denied";
  }
  if (strcmp(r->err_code, "too_large") == 0) {
    *status = 413;
    snprintf(msg, n, "The input is larger than input_max_mb");
    return "input_too_large";
  }
  snprintf(msg, n, "Downloading the input failed: %s: %s", r->err_code, r->err_msg);
  return "storage_error";
}

static void on_fetch_done(struct cap_s3_req *r) {
  struct cap_jobio *io = r->data;
  io->fetch = NULL;
  io->live--;
  if (cap_s3_ok(r)) {
    lseek(io->fetch_fd, 0, SEEK_SET);
    cap_s3_req_free(r, free_req);
    io->ops->input_ready(io, 0, NULL, 0, NULL);
    return;
  }
  char msg[400];
  int status;
  const char *code = fetch_error(r, &status, msg, sizeof(msg));
  cap_s3_req_free(r, free_req);
  io->ops->input_ready(io, -EIO, code, status, msg);
}

void cap_jobio_fetch(struct cap_jobio *io, int fd) {
  struct cap_s3_req *r = xmalloc(sizeof(*r));
  cap_s3_req_init(r, &io->spec.storage->s3);
  r->method = "GET";
  r->key = xstrdup(io->spec.input_key);
  r->out_fd = fd;
  r->out_max = io->spec.input_max;
  r->done = on_fetch_done;
  r->data = io;
  io->fetch = r;
  io->fetch_fd = fd;
  io->live++;
  cap_s3_start(r);
}

static void close_source(struct cap_jobio *io) {
  if (io->source == NULL)
    return;
  uv_read_stop((uv_stream_t *)&io->source->out);
  cap_proc_close_out(io->source);
  io->source = NULL;
  io->source_paused = 0;
}

static void on_upload_done(struct cap_upload *u, int ok) {
  struct cap_jobio *io = u->data;
  io->live--;
  if (!ok)
    close_source(io); /* ffmpeg is killed by the job; nobody reads its output any more. */
  else
    io->bytes = u->bytes;
  snprintf(io->etag, sizeof(io->etag), "%s", u->etag);
  io->parts = u->nparts ? u->nparts : 1; /* A single PUT is one piece. */
  io->ops->output_done(io, ok, ok ? NULL : u->err_code, ok ? NULL : u->err_msg);
}

static void on_out_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct cap_proc *p = h->data;
  struct cap_jobio *io = p->data;
  char *ptr = NULL;
  size_t n = cap_upload_space(io->upload, &ptr);
  /* No room: libuv reports UV_ENOBUFS and we stop reading, so ffmpeg
   * blocks on a full pipe until a part has gone out. */
  *buf = uv_buf_init(n ? ptr : NULL, (unsigned)(n > 1 << 30 ? 1 << 30 : n));
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct cap_proc *p = s->data;
  struct cap_jobio *io = p->data;
  if (n > 0) {
    cap_upload_commit(io->upload, (size_t)n);
    return;
  }
  if (n == UV_ENOBUFS) {
    uv_read_stop(s);
    io->source_paused = 1;
    return;
  }
  if (n < 0) {
    close_source(io);
    /* At EOF the last part (or the single PUT) and the Complete wait for
     * ffmpeg's exit status (cap_jobio_finish): a killed ffmpeg also ends
     * its output, and a truncated object must never be stored. */
    if (n != UV_EOF)
      cap_upload_abort(io->upload, "storage_error", "Reading ffmpeg's output failed");
  }
}

static void on_space(struct cap_upload *u) {
  struct cap_jobio *io = u->data;
  if (io->source && io->source_paused) {
    io->source_paused = 0;
    uv_read_start((uv_stream_t *)&io->source->out, on_out_alloc, on_out_read);
  }
}

static void new_upload(struct cap_jobio *io) {
  struct cap_storage *st = io->spec.storage;
  io->upload = xmalloc(sizeof(*io->upload));
  cap_upload_init(io->upload, &st->s3, &st->pool, io->spec.parts_in_flight, io->spec.output_key);
  /* The job's copies of its preset's headers live until cap_jobio_free. */
  io->upload->content_type = io->spec.content_type;
  io->upload->cache_control = io->spec.cache_control;
  io->upload->on_space = on_space;
  io->upload->on_done = on_upload_done;
  io->upload->data = io;
  io->live++;
}

void cap_jobio_stream(struct cap_jobio *io, struct cap_proc *p) {
  new_upload(io);
  io->source = p;
  uv_read_start((uv_stream_t *)&p->out, on_out_alloc, on_out_read);
}

void cap_jobio_finish(struct cap_jobio *io) {
  if (io->upload && !io->upload->done_called)
    cap_upload_finish(io->upload);
}

void cap_jobio_upload_file(struct cap_jobio *io, int fd, uint64_t size) {
  new_upload(io);
  cap_upload_file(io->upload, fd, size);
}

void cap_jobio_abort(struct cap_jobio *io, const char *code, const char *msg) {
  if (io->fetch) {
    cap_s3_req_cancel(io->fetch, free_req);
    io->fetch = NULL;
    io->live--;
  }
  close_source(io);
  if (io->upload && !io->upload->done_called)
    cap_upload_abort(io->upload, code, msg);
}

void cap_jobio_free(struct cap_jobio *io) {
  if (io->upload) {
    cap_upload_free(io->upload);
    free(io->upload);
    io->upload = NULL;
  }
}
