#include "jobio.h"

#include "proc.h"

#include <stdio.h>
#include <string.h>

void cap_jobio_init(struct cap_jobio *io, const struct cap_jobio_ops *ops,
                    const struct cap_jobio_spec *spec) {
  memset(io, 0, sizeof(*io));
  io->ops = ops;
  io->spec = *spec;
}

static void close_source(struct cap_jobio *io) {
  if (io->source == NULL)
    return;
  uv_read_stop((uv_stream_t *)&io->source->out);
  cap_proc_close_out(io->source);
  io->source = NULL;
  io->source_paused = 0;
}

static void on_out_done(struct cap_objout *out, const struct cap_storage_err *err) {
  struct cap_jobio *io = out->data;
  io->live--;
  if (err)
    close_source(io); /* ffmpeg is killed by the job; nobody reads its output any more. */
  else
    io->bytes = out->bytes;
  snprintf(io->etag, sizeof(io->etag), "%s", out->etag);
  io->parts = out->parts;
  io->ops->output_done(io, err);
}

static void on_out_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct cap_proc *p = h->data;
  struct cap_jobio *io = p->data;
  char *ptr = NULL;
  size_t n = cap_objstore_space(&io->out, &ptr);
  (void)suggested;
  /* No room: libuv reports UV_ENOBUFS and we stop reading, so ffmpeg
   * blocks on a full pipe until a part has gone out. */
  *buf = uv_buf_init(n ? ptr : NULL, (unsigned)(n > 1 << 30 ? 1 << 30 : n));
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct cap_proc *p = s->data;
  struct cap_jobio *io = p->data;
  (void)buf;
  if (n > 0) {
    cap_objstore_commit(&io->out, (size_t)n);
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
      cap_objstore_abort(&io->out, CAP_STORAGE_E_LOCAL, "Reading ffmpeg's output failed");
  }
}

static void on_space(struct cap_objout *out) {
  struct cap_jobio *io = out->data;
  if (io->source && io->source_paused) {
    io->source_paused = 0;
    uv_read_start((uv_stream_t *)&io->source->out, on_out_alloc, on_out_read);
  }
}

static void on_upload(struct cap_objout *out, const char *upload_id) {
  struct cap_jobio *io = out->data;
  if (io->ops->output_upload)
    io->ops->output_upload(io, upload_id);
}

/* Readies the output and counts it as under way. */
static void new_output(struct cap_jobio *io) {
  struct cap_objout *out = &io->out;
  cap_objstore_output_init(out, io->spec.objstore, io->spec.output_key);
  /* The job's copies of its preset's headers live until cap_jobio_free. */
  out->content_type = io->spec.content_type;
  out->cache_control = io->spec.cache_control;
  out->on_space = on_space;
  out->on_done = on_out_done;
  out->on_upload = on_upload;
  out->data = io;
  io->out_init = 1;
  io->live++;
}

void cap_jobio_stream(struct cap_jobio *io, struct cap_proc *p) {
  new_output(io);
  cap_objstore_start_stream(&io->out);
  io->source = p;
  uv_read_start((uv_stream_t *)&p->out, on_out_alloc, on_out_read);
}

void cap_jobio_finish(struct cap_jobio *io) {
  if (io->out_init)
    cap_objstore_finish(&io->out);
}

void cap_jobio_put_file(struct cap_jobio *io, const char *tmp_name, uint64_t size) {
  new_output(io);
  cap_objstore_put_file(&io->out, tmp_name, size);
}

void cap_jobio_abort(struct cap_jobio *io, enum cap_storage_errc why, const char *msg) {
  close_source(io);
  if (io->out_init)
    cap_objstore_abort(&io->out, why, msg);
}

void cap_jobio_free(struct cap_jobio *io) {
  if (io->out_init) {
    cap_objstore_free_output(&io->out);
    io->out_init = 0;
  }
}
