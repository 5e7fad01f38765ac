#include "objstore.h"

#include "config.h"
#include "log.h"
#include "metrics.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const errc_names[] = {
    [CAP_STORAGE_OK] = "ok",
    [CAP_STORAGE_E_NOT_FOUND] = "not_found",
    [CAP_STORAGE_E_DENIED] = "denied",
    [CAP_STORAGE_E_TOO_LARGE] = "too_large",
    [CAP_STORAGE_E_UNAVAILABLE] = "unavailable",
    [CAP_STORAGE_E_LOCAL] = "local",
    [CAP_STORAGE_E_CANCELED] = "canceled",
    [CAP_STORAGE_E_FAILED] = "failed",
    [CAP_STORAGE_E_CHANGED] = "changed",
};

const char *cap_storage_errc_name(enum cap_storage_errc code) {
  if ((size_t)code >= sizeof(errc_names) / sizeof(errc_names[0]) || errc_names[code] == NULL)
    return "unknown";
  return errc_names[code];
}

void cap_storage_err_set(struct cap_storage_err *e, enum cap_storage_errc code,
                         enum cap_storage_side side, const char *fmt, ...) {
  va_list ap;
  memset(e, 0, sizeof(*e));
  e->code = code;
  e->side = side;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
  va_end(ap);
}

void cap_objstore_init_ops(struct cap_objstore *os, const struct cap_objstore_ops *ops,
                           struct cap_storage *st, struct cap_store *local) {
  memset(os, 0, sizeof(*os));
  os->ops = ops;
  os->st = st;
  os->local = local;
  os->parts_in_flight = 1;
  if (st && st->cfg) {
    os->input_max = (uint64_t)st->cfg->input_max_mb * 1024 * 1024;
    os->parts_in_flight = st->cfg->parts_in_flight;
  }
}

void cap_objstore_init(struct cap_objstore *os, struct cap_storage *st, struct cap_store *local) {
  cap_objstore_init_ops(
      os, st->kind == CAP_STORAGE_S3 ? &cap_objstore_s3_ops : &cap_objstore_file_ops, st, local);
}

void cap_objstore_start(struct cap_objstore *os) {
  if (os->ops->start)
    os->ops->start(os);
}

void cap_objstore_stop(struct cap_objstore *os) {
  if (os->ops->stop)
    os->ops->stop(os);
}

int cap_objstore_can_stream(const struct cap_objstore *os) {
  return os->ops->can_stream;
}

enum cap_storage_errc cap_objstore_precheck(struct cap_objstore *os, const char *key) {
  return os->ops->precheck ? os->ops->precheck(os, key) : CAP_STORAGE_OK;
}

int cap_objstore_output_key_usable(const struct cap_objstore *os, const char *key) {
  return os->ops->output_key_usable ? os->ops->output_key_usable(os, key) : 1;
}

void cap_objstore_input_init(struct cap_objin *in, struct cap_objstore *os, const char *key,
                             const char *tmp_name) {
  memset(in, 0, sizeof(*in));
  in->os = os;
  in->key = key;
  in->tmp_name = tmp_name;
  in->fd = -1;
}

void cap_objstore_open_input(struct cap_objin *in) {
  assert(!in->busy && in->fd < 0);
  in->busy = 1;
  in->os->ops->open_input(in);
}

void cap_objstore_cancel_input(struct cap_objin *in) {
  if (!in->busy)
    return;
  in->os->ops->cancel_input(in);
  in->busy = 0;
}

int cap_objstore_input_busy(const struct cap_objin *in) {
  return in->busy;
}

void cap_objstore_close_input(struct cap_objin *in) {
  cap_objstore_cancel_input(in);
  in->os->ops->close_input(in);
}

void cap_objstore_output_init(struct cap_objout *out, struct cap_objstore *os, const char *key) {
  memset(out, 0, sizeof(*out));
  out->os = os;
  out->key = key;
  out->fd = -1;
}

void cap_objstore_start_stream(struct cap_objout *out) {
  assert(out->os->ops->can_stream && !out->started);
  out->started = 1;
  out->os->ops->start_stream(out);
}

size_t cap_objstore_space(struct cap_objout *out, char **ptr) {
  return out->done_called ? 0 : out->os->ops->space(out, ptr);
}

void cap_objstore_commit(struct cap_objout *out, size_t n) {
  if (!out->done_called)
    out->os->ops->commit(out, n);
}

void cap_objstore_finish(struct cap_objout *out) {
  if (out->started && !out->done_called)
    out->os->ops->finish(out);
}

void cap_objstore_put_file(struct cap_objout *out, const char *tmp_name, uint64_t size) {
  assert(!out->started);
  out->started = 1;
  out->os->ops->put_file(out, tmp_name, size);
}

void cap_objstore_abort(struct cap_objout *out, enum cap_storage_errc why, const char *msg) {
  if (out->started && !out->done_called)
    out->os->ops->abort(out, why, msg);
}

int cap_objstore_output_done(const struct cap_objout *out) {
  return out->done_called;
}

void cap_objstore_free_output(struct cap_objout *out) {
  if (out->os && out->os->ops->free_output)
    out->os->ops->free_output(out);
}

void cap_objstore_delete_init(struct cap_objdel *d, struct cap_objstore *os, const char *key) {
  memset(d, 0, sizeof(*d));
  d->os = os;
  d->key = key;
}

void cap_objstore_delete(struct cap_objdel *d) {
  assert(!d->busy && d->on_done);
  d->busy = 1;
  d->os->ops->delete_object(d);
}

void cap_objstore_cancel_delete(struct cap_objdel *d) {
  if (!d->busy)
    return;
  if (d->os->ops->cancel_delete)
    d->os->ops->cancel_delete(d);
  d->busy = 0;
}

int cap_objstore_delete_busy(const struct cap_objdel *d) {
  return d->busy;
}

/* One line per object a delete left behind, so that an operator can find
 * (and remove) what a failed job could not. */
static void log_delete_failed(const struct cap_objdel *d, const struct cap_storage_err *err) {
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_WARN, "storage.delete_failed");
  cap_log_str(l, "backend", d->os->ops->name);
  cap_log_str(l, "key", d->key);
  cap_log_str(l, "error", cap_storage_errc_name(err->code));
  cap_log_int(l, "status", err->status);
  if (err->detail[0])
    cap_log_str(l, "code", err->detail);
  if (err->detail_msg[0])
    cap_log_str(l, "message", err->detail_msg);
  if (err->sys_errno)
    cap_log_int(l, "errno", err->sys_errno);
  cap_log_end(l);
}

void cap_objstore_end_delete(struct cap_objdel *d, const struct cap_storage_err *err) {
  d->busy = 0;
  cap_metrics_inc(CAP_M_STORAGE_DELETES, CAP_LABELS(err ? "failed" : "ok"));
  if (err)
    log_delete_failed(d, err);
  d->on_done(d, err);
}

void cap_objstore_recover_uploads(struct cap_objstore *os, const char *key, int prefix,
                                  const char *upload_id, time_t before) {
  if (os->st && os->ops == &cap_objstore_s3_ops)
    cap_storage_recover_uploads(os->st, key, prefix, upload_id, before);
}
