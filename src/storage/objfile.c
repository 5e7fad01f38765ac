#include "objstore.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* The file store backend: objects are files under the store's root, so
 * every operation is a system call that finishes at once.  Its callbacks
 * run from inside the call that started the operation, as its last
 * action. */

static enum cap_storage_errc file_precheck(struct cap_objstore *os, const char *key) {
  int fd;
  uint64_t size;
  int rc = cap_store_open_input(os->local, key, &fd, &size);
  if (rc == 0)
    close(fd);
  /* Only a missing input is answered early; any other trouble is the
   * job's to report when it opens the input. */
  return rc == -ENOENT ? CAP_STORAGE_E_NOT_FOUND : CAP_STORAGE_OK;
}

static int file_output_key_usable(const struct cap_objstore *os, const char *key) {
  (void)os;
  return cap_store_key_usable(key);
}

static void file_open_input(struct cap_objin *in) {
  int rc = cap_store_open_input(in->os->local, in->key, &in->fd, &in->size);
  in->busy = 0;
  if (rc == 0) {
    in->on_ready(in, NULL);
    return;
  }
  in->fd = -1;
  if (rc == -ENOENT) {
    cap_storage_err_set(&in->err, CAP_STORAGE_E_NOT_FOUND, CAP_STORAGE_INPUT,
                        "The input object does not exist");
  } else {
    cap_storage_err_set(&in->err, CAP_STORAGE_E_FAILED, CAP_STORAGE_INPUT,
                        "Could not open the input: %s", strerror(-rc));
  }
  in->err.sys_errno = -rc;
  in->on_ready(in, &in->err);
}

static void file_cancel_input(struct cap_objin *in) {
  (void)in; /* Nothing is ever under way. */
}

static void file_close_input(struct cap_objin *in) {
  if (in->fd >= 0)
    close(in->fd);
  in->fd = -1;
}

static void file_put_file(struct cap_objout *out, const char *tmp_name, uint64_t size) {
  int rc = cap_store_commit(out->os->local, tmp_name, out->key);
  out->done_called = 1;
  if (rc != 0) {
    cap_storage_err_set(&out->err, CAP_STORAGE_E_LOCAL, CAP_STORAGE_OUTPUT,
                        "Could not store the output: %s", strerror(-rc));
    out->err.sys_errno = -rc;
    out->on_done(out, &out->err);
    return;
  }
  out->bytes = size;
  out->on_done(out, NULL);
}

static void file_abort(struct cap_objout *out, enum cap_storage_errc why, const char *msg) {
  /* put_file ends before it returns: there is never anything to stop. */
  (void)out;
  (void)why;
  (void)msg;
}

static void file_delete_object(struct cap_objdel *d) {
  int rc = cap_store_remove(d->os->local, d->key);
  /* A missing object is what the caller wants: it is gone. */
  if (rc == 0 || rc == -ENOENT) {
    cap_objstore_end_delete(d, NULL);
    return;
  }
  cap_storage_err_set(&d->err, CAP_STORAGE_E_LOCAL, CAP_STORAGE_OUTPUT,
                      "Could not delete the output: %s", strerror(-rc));
  d->err.sys_errno = -rc;
  cap_objstore_end_delete(d, &d->err);
}

const struct cap_objstore_ops cap_objstore_file_ops = {
    .name = "file",
    .can_stream = 0,
    .precheck = file_precheck,
    .output_key_usable = file_output_key_usable,
    .open_input = file_open_input,
    .cancel_input = file_cancel_input,
    .close_input = file_close_input,
    .put_file = file_put_file,
    .abort = file_abort,
    .delete_object = file_delete_object,
};
