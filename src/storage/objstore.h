#ifndef CAP_OBJSTORE_H
#define CAP_OBJSTORE_H

#include "storage.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

/* One interface to where objects live, whatever the backend: the local
 * file store (objfile.c) or an S3-compatible bucket (objs3.c).  A job
 * opens its input, stores its output (streamed, or from a finished local
 * temp file), aborts, and deletes what it stored when it fails, through
 * the functions below; they dispatch to the backend's ops table, so the
 * job holds no backend branches.
 *
 * Both backends share the local scratch store (struct cap_store): the
 * file backend keeps its objects there, and S3 downloads inputs into its
 * temp directory.
 *
 * Failures are reported as a struct cap_storage_err: a typed code that
 * says what went wrong (not found, denied, unavailable, ...), the message
 * a client may read, and the backend's own detail for the logs.  Storage
 * never picks an HTTP status or an API error code; one function maps the
 * typed code to the error table (jobs/storerr.c). */

/* What went wrong, whatever the backend. */
enum cap_storage_errc {
  CAP_STORAGE_OK = 0,
  CAP_STORAGE_E_NOT_FOUND,   /* The input object does not exist. */
  CAP_STORAGE_E_DENIED,      /* The store refused the credentials or the permission. */
  CAP_STORAGE_E_TOO_LARGE,   /* Over a configured or protocol limit (input_max_mb, 10000 parts). */
  CAP_STORAGE_E_UNAVAILABLE, /* No answer, 5xx or throttling after every retry. */
  CAP_STORAGE_E_LOCAL,       /* A local file (temp file, rename) failed; sys_errno says why. */
  CAP_STORAGE_E_CANCELED,    /* The caller aborted the operation. */
  CAP_STORAGE_E_FAILED,      /* Anything else the store answered. */
  CAP_STORAGE_E_CHANGED,     /* A streamed input was replaced or removed while it was read. */
};

/* Which side of a job an error happened on: a missing or oversized input
 * is the client's mistake, the same on the output side is the server's. */
enum cap_storage_side { CAP_STORAGE_INPUT, CAP_STORAGE_OUTPUT };

struct cap_storage_err {
  enum cap_storage_errc code;
  enum cap_storage_side side;
  long status;          /* The store's HTTP status, 0 when it never answered or for files. */
  int sys_errno;        /* Positive errno for CAP_STORAGE_E_LOCAL and file store errors. */
  char detail[64];      /* The backend's code: S3's <Code>, curl's, "local_write"... */
  char detail_msg[256]; /* The backend's own message, for logs. */
  char msg[400];        /* The message a client may read. */
};

/* Returns the code's name ("not_found", "denied", ...), for logs and tests. */
const char *cap_storage_errc_name(enum cap_storage_errc code);
/* Sets *e to code on side with the client message msg (printf-style). */
void cap_storage_err_set(struct cap_storage_err *e, enum cap_storage_errc code,
                         enum cap_storage_side side, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

struct cap_objstore;
struct cap_objin;
struct cap_objout;
struct cap_objdel;

/* One backend.  Synchronous backends (the file store) may call on_ready /
 * on_done from inside the call that starts the operation, as its last
 * action; asynchronous ones (S3) call them from a later loop turn. */
struct cap_objstore_ops {
  const char *name;
  /* 1 when outputs can be streamed from a pipe (start_stream). */
  int can_stream;
  /* Answers at once whether key exists, when the backend can tell without
   * a request; CAP_STORAGE_OK when it cannot (the download finds out). */
  enum cap_storage_errc (*precheck)(struct cap_objstore *os, const char *key);
  /* 1 when key can name an output here. */
  int (*output_key_usable)(const struct cap_objstore *os, const char *key);
  void (*open_input)(struct cap_objin *in);
  void (*cancel_input)(struct cap_objin *in);
  void (*close_input)(struct cap_objin *in);
  void (*start_stream)(struct cap_objout *out);
  size_t (*space)(struct cap_objout *out, char **ptr);
  void (*commit)(struct cap_objout *out, size_t n);
  void (*finish)(struct cap_objout *out);
  void (*put_file)(struct cap_objout *out, const char *tmp_name, uint64_t size);
  void (*abort)(struct cap_objout *out, enum cap_storage_errc why, const char *msg);
  void (*free_output)(struct cap_objout *out);
  /* Deletes d->key and ends through cap_objstore_end_delete. */
  void (*delete_object)(struct cap_objdel *d);
  /* Stops a delete under way, without its end (NULL: never under way). */
  void (*cancel_delete)(struct cap_objdel *d);
  /* Life of the backend itself: the S3 bucket check and orphan sweep. */
  void (*start)(struct cap_objstore *os);
  void (*stop)(struct cap_objstore *os);
};

struct cap_objstore {
  const struct cap_objstore_ops *ops;
  struct cap_storage *st;  /* Settings; for S3 the client, the part pool, the sweep. */
  struct cap_store *local; /* Scratch (and for the file backend the objects). */
  uint64_t input_max;      /* Bytes an input may have (S3 downloads); 0: no cap. */
  int parts_in_flight;
};

/* Sets os up over st (its kind picks the backend) and the local store;
 * both are borrowed and must outlive os.  Limits come from st's config. */
void cap_objstore_init(struct cap_objstore *os, struct cap_storage *st, struct cap_store *local);
/* Sets os up with the given backend (for tests and future backends). */
void cap_objstore_init_ops(struct cap_objstore *os, const struct cap_objstore_ops *ops,
                           struct cap_storage *st, struct cap_store *local);

/* The backends. */
extern const struct cap_objstore_ops cap_objstore_file_ops;
extern const struct cap_objstore_ops cap_objstore_s3_ops;

/* Starts and stops the backend (bucket check, orphan sweep, transfers). */
void cap_objstore_start(struct cap_objstore *os);
void cap_objstore_stop(struct cap_objstore *os);
/* 1 when outputs can be streamed from a pipe. */
int cap_objstore_can_stream(const struct cap_objstore *os);
/* CAP_STORAGE_E_NOT_FOUND when key is known to be missing now; else
 * CAP_STORAGE_OK (S3 does not look: the job's download finds out). */
enum cap_storage_errc cap_objstore_precheck(struct cap_objstore *os, const char *key);
/* 1 when key can name an output in this backend. */
int cap_objstore_output_key_usable(const struct cap_objstore *os, const char *key);

/* An input being opened: the caller owns the struct, fills the public
 * part, and calls cap_objstore_open_input; on_ready runs once (unless
 * canceled) with err NULL, or with the error.  Then either fd is readable
 * from offset 0 holding size bytes, or (a streamed S3 input) fd is -1 and
 * url is where children read it by range until the input is closed.
 * Close it with cap_objstore_close_input. */
struct cap_objin {
  struct cap_objstore *os;
  const char *key;      /* Borrowed until cap_objstore_close_input. */
  const char *tmp_name; /* Temp file name for a download (e.g. "<job>.in"); borrowed. */
  /* 1 to read an S3 input by range through the loopback endpoint instead
   * of downloading it; the file store always opens the file itself. */
  int stream;
  void (*on_ready)(struct cap_objin *in, const struct cap_storage_err *err);
  /* A streamed input can no longer be read (replaced, removed, the store
   * failing after every retry): the children will not finish.  Runs at
   * most once, after on_ready. */
  void (*on_fault)(struct cap_objin *in, const struct cap_storage_err *err);
  void *data;
  /* Results. */
  int fd; /* The input's, owned by in until cap_objstore_close_input. */
  uint64_t size;
  const char *url; /* A streamed input's loopback URL, or NULL. */
  int port;        /* Its port (the one children may connect to), or 0. */
  struct cap_storage_err err;
  /* What the children read of a streamed input (requests, bytes, ...). */
  struct cap_insrc src;
  /* Private. */
  struct cap_s3_req *req;
  char tmp[64]; /* The download's temp file, discarded on close. */
  int busy;
};

/* Readies in (zeroed, fd -1) for os. */
void cap_objstore_input_init(struct cap_objin *in, struct cap_objstore *os, const char *key,
                             const char *tmp_name);
/* Opens the input (file store: at once; S3: downloads it into a private
 * temp file, mode 0600, at most input_max bytes). */
void cap_objstore_open_input(struct cap_objin *in);
/* Stops an opening under way; on_ready will not run. */
void cap_objstore_cancel_input(struct cap_objin *in);
/* 1 while the opening is under way (its on_ready not yet run). */
int cap_objstore_input_busy(const struct cap_objin *in);
/* Closes the fd and removes the download's temp file, if any. */
void cap_objstore_close_input(struct cap_objin *in);

/* An output being stored: the caller owns the struct, fills the public
 * part and starts it with cap_objstore_start_stream (then space / commit /
 * finish) or cap_objstore_put_file.  on_done runs once when the object is
 * stored (err NULL) or has failed for good with nothing left under way;
 * afterwards (or to drop an output that never started) call
 * cap_objstore_free_output. */
struct cap_objout {
  struct cap_objstore *os;
  const char *key;
  /* Sent with the object; borrowed until cap_objstore_free_output; NULL sends none. */
  const char *content_type;
  const char *cache_control;
  /* Called when a starved stream may go on (space will give room again). */
  void (*on_space)(struct cap_objout *out);
  void (*on_done)(struct cap_objout *out, const struct cap_storage_err *err);
  /* Called (may be NULL) when the store has opened a multipart upload for
   * the output, with its id: the caller may record it, so that the upload
   * can be aborted by id if the process dies before it ends. */
  void (*on_upload)(struct cap_objout *out, const char *upload_id);
  void *data;
  /* Results. */
  uint64_t bytes;
  char etag[130]; /* "" when the backend has none (file store). */
  int parts;      /* Pieces sent: 1 for a single PUT; 0 for the file store. */
  struct cap_storage_err err;
  /* Private. */
  struct cap_upload *upload;
  int fd; /* The temp file put_file uploads. */
  int started;
  int done_called;
};

/* Readies out (zeroed) for key in os. */
void cap_objstore_output_init(struct cap_objout *out, struct cap_objstore *os, const char *key);
/* Starts a streamed output (backends with can_stream only). */
void cap_objstore_start_stream(struct cap_objout *out);
/* Returns room for more bytes and points *ptr at it; 0 means none for
 * now: stop the source until on_space. */
size_t cap_objstore_space(struct cap_objout *out, char **ptr);
/* Says n bytes were written at the pointer cap_objstore_space gave. */
void cap_objstore_commit(struct cap_objout *out, size_t n);
/* The stream has ended well: store what is left and complete. */
void cap_objstore_finish(struct cap_objout *out);
/* Stores size bytes of the local temp file tmp_name (in the scratch
 * store's temp directory) as the object: the file store renames it into
 * place, S3 uploads it.  The caller removes the temp file afterwards. */
void cap_objstore_put_file(struct cap_objout *out, const char *tmp_name, uint64_t size);
/* Abandons the output (cancel, timeout, a failed source): what is under
 * way stops and a multipart upload is aborted; on_done follows with an
 * error of code why (CAP_STORAGE_E_CANCELED for a cancel) and msg.  An
 * output that never started, or has ended, is left as it is. */
void cap_objstore_abort(struct cap_objout *out, enum cap_storage_errc why, const char *msg);
/* 1 once on_done has run. */
int cap_objstore_output_done(const struct cap_objout *out);
/* Releases what out holds; after on_done, or before any start. */
void cap_objstore_free_output(struct cap_objout *out);

/* A stored object being deleted: the caller owns the struct, fills the
 * public part and calls cap_objstore_delete; on_done runs once, with err
 * NULL when the object is gone (an object already missing counts as gone),
 * or the error after every retry.  Synchronous backends (file) may call
 * on_done before cap_objstore_delete returns, as its last action.
 * A job that failed after storing some of its objects (an HLS ladder)
 * deletes each of them this way; errors are on CAP_STORAGE_OUTPUT. */
struct cap_objdel {
  struct cap_objstore *os;
  const char *key; /* Borrowed until on_done. */
  void (*on_done)(struct cap_objdel *d, const struct cap_storage_err *err);
  void *data;
  struct cap_storage_err err;
  /* Private. */
  struct cap_s3_req *req;
  int busy;
};

/* After a crash: aborts the multipart uploads left for key (or under key
 * with prefix set) by a process before this one (cap_storage_recover_uploads);
 * nothing for the file store, whose temp files go at start-up. */
void cap_objstore_recover_uploads(struct cap_objstore *os, const char *key, int prefix,
                                  const char *upload_id, time_t before);
/* Readies d (zeroed) to delete key in os. */
void cap_objstore_delete_init(struct cap_objdel *d, struct cap_objstore *os, const char *key);
/* Deletes the object (file store: unlinks it and the directories it
 * leaves empty, at once; S3: a DeleteObject request, retried like every
 * request).  d must not be busy. */
void cap_objstore_delete(struct cap_objdel *d);
/* Stops a delete under way; on_done will not run. (For shutdown.) */
void cap_objstore_cancel_delete(struct cap_objdel *d);
/* 1 while the delete is under way (its on_done not yet run). */
int cap_objstore_delete_busy(const struct cap_objdel *d);
/* For the backends only: ends d with err (NULL: gone), counts it in
 * cap_storage_deletes_total, logs storage.delete_failed on an error, and
 * calls on_done as its last action. */
void cap_objstore_end_delete(struct cap_objdel *d, const struct cap_storage_err *err);

#endif
