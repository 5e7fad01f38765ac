#include "jobio.h"

#include "alloc.h"
#include "config.h"
#include "job.h"
#include "jobs.h"
#include "s3.h"
#include "storage.h"
#include "store.h"
#include "upload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void free_req(struct cap_s3_req *r) {
  free(r);
}

static void on_fetch_done(struct cap_s3_req *r) {
  struct cap_job *j = r->data;
  j->fetch = NULL;
  j->io_live--;
  if (cap_s3_ok(r)) {
    lseek(j->in_fd, 0, SEEK_SET);
    cap_s3_req_free(r, free_req);
    cap_job_input_ready(j, 0, NULL, 0, NULL);
    return;
  }
  char msg[400];
  const char *code = "storage_error";
  int status = 502;
  if (r->status == 404 || strcmp(r->err_code, "NoSuchKey") == 0) {
    code = "input_not_found";
    status = 404;
    snprintf(msg, sizeof(msg), "The input object does not exist");
  } else if (r->status == 403) {
    code = "storage_denied";
    snprintf(msg, sizeof(msg), "The object store refused the request: %s: %s", r->err_code,
             r->err_msg);
  } else if (strcmp(r->err_code, "too_large") == 0) {
    code = "input_too_large";
    status = 413;
    snprintf(msg, sizeof(msg), "The input is larger than input_max_mb");
  } else {
    snprintf(msg, sizeof(msg), "Downloading the input failed: %s: %s", r->err_code, r->err_msg);
  }
  cap_s3_req_free(r, free_req);
  cap_job_input_ready(j, -EIO, code, status, msg);
}

void cap_jobio_fetch(struct cap_job *j) {
  struct cap_jobs *t = j->jobs;
  snprintf(j->in_tmp, sizeof(j->in_tmp), "%s.in", j->id);
  int fd = cap_store_tmp_create(t->store, j->in_tmp);
  if (fd < 0) {
    j->in_tmp[0] = '\0';
    cap_job_input_ready(j, fd, "storage_error", 502, "Could not create the input's temp file");
    return;
  }
  j->in_fd = fd;
  struct cap_s3_req *r = xmalloc(sizeof(*r));
  cap_s3_req_init(r, &t->storage->s3);
  r->method = "GET";
  r->key = xstrdup(j->input_key);
  r->out_fd = fd;
  r->out_max = (uint64_t)t->cfg->input_max_mb * 1024 * 1024;
  r->done = on_fetch_done;
  r->data = j;
  j->fetch = r;
  j->io_live++;
  cap_s3_start(r);
}

static void close_out(struct cap_job *j) {
  if (!j->out_open)
    return;
  uv_read_stop((uv_stream_t *)&j->proc.out);
  cap_proc_close_out(&j->proc);
  j->out_open = 0;
  j->out_paused = 0;
}

static void on_upload_done(struct cap_upload *u, int ok) {
  struct cap_job *j = u->data;
  j->io_live--;
  if (!ok)
    close_out(j); /* ffmpeg is killed by the job; nobody reads its output any more. */
  else
    j->bytes = u->bytes;
  snprintf(j->etag, sizeof(j->etag), "%s", u->etag);
  j->parts = u->nparts ? u->nparts : 1; /* A single PUT is one piece. */
  cap_job_output_done(j, ok, ok ? NULL : u->err_code, ok ? NULL : u->err_msg);
}

static void on_out_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct cap_proc *p = h->data;
  struct cap_job *j = p->data;
  char *ptr = NULL;
  size_t n = cap_upload_space(j->upload, &ptr);
  /* No room: libuv reports UV_ENOBUFS and we stop reading, so ffmpeg
   * blocks on a full pipe until a part has gone out. */
  *buf = uv_buf_init(n ? ptr : NULL, (unsigned)(n > 1 << 30 ? 1 << 30 : n));
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct cap_proc *p = s->data;
  struct cap_job *j = p->data;
  if (n > 0) {
    cap_upload_commit(j->upload, (size_t)n);
    return;
  }
  if (n == UV_ENOBUFS) {
    uv_read_stop(s);
    j->out_paused = 1;
    return;
  }
  if (n < 0) {
    close_out(j);
    /* At EOF the last part (or the single PUT) and the Complete wait for
     * ffmpeg's exit status (cap_jobio_finish): a killed ffmpeg also ends
     * its output, and a truncated object must never be stored. */
    if (n != UV_EOF)
      cap_upload_abort(j->upload, "storage_error", "Reading ffmpeg's output failed");
  }
}

static void on_space(struct cap_upload *u) {
  struct cap_job *j = u->data;
  if (j->out_open && j->out_paused) {
    j->out_paused = 0;
    uv_read_start((uv_stream_t *)&j->proc.out, on_out_alloc, on_out_read);
  }
}

static void new_upload(struct cap_job *j) {
  struct cap_jobs *t = j->jobs;
  j->upload = xmalloc(sizeof(*j->upload));
  cap_upload_init(j->upload, &t->storage->s3, &t->storage->pool, t->cfg->parts_in_flight,
                  j->output_key);
  /* The job's copies of its preset's headers live until cap_jobio_free. */
  j->upload->content_type = j->content_type;
  j->upload->cache_control = j->cache_control;
  j->upload->on_space = on_space;
  j->upload->on_done = on_upload_done;
  j->upload->data = j;
  j->io_live++;
}

void cap_jobio_stream(struct cap_job *j) {
  new_upload(j);
  j->out_open = 1;
  uv_read_start((uv_stream_t *)&j->proc.out, on_out_alloc, on_out_read);
}

void cap_jobio_finish(struct cap_job *j) {
  if (j->upload && !j->upload->done_called)
    cap_upload_finish(j->upload);
}

void cap_jobio_upload_file(struct cap_job *j, int fd, uint64_t size) {
  new_upload(j);
  cap_upload_file(j->upload, fd, size);
}

void cap_jobio_abort(struct cap_job *j, const char *code, const char *msg) {
  if (j->fetch) {
    cap_s3_req_cancel(j->fetch, free_req);
    j->fetch = NULL;
    j->io_live--;
  }
  close_out(j);
  if (j->upload && !j->upload->done_called)
    cap_upload_abort(j->upload, code, msg);
}

void cap_jobio_free(struct cap_job *j) {
  if (j->upload) {
    cap_upload_free(j->upload);
    free(j->upload);
    j->upload = NULL;
  }
}
