#ifndef CAP_JOBIO_H
#define CAP_JOBIO_H

#include "objstore.h"

#include <stdint.h>

struct cap_jobio;
struct cap_proc;

/* A job's output on its way into the object store (storage/objstore.h):
 * streamed from ffmpeg's stdout when the backend can take a stream, or
 * stored from a finished temp file.  Results go back to the job through
 * its cap_jobio_ops; nothing here knows a job or a backend. */

struct cap_jobio_ops {
  /* The output is stored (err NULL: io->bytes, etag and parts say what was
   * stored) or has failed for good (err says why). */
  void (*output_done)(struct cap_jobio *io, const struct cap_storage_err *err);
  /* The store opened a multipart upload for the output (may be NULL). */
  void (*output_upload)(struct cap_jobio *io, const char *upload_id);
};

/* Where the job's output goes and what it is; the owner fills these in
 * before the first call and keeps the strings alive until cap_jobio_free. */
struct cap_jobio_spec {
  struct cap_objstore *objstore;
  const char *output_key;
  const char *content_type, *cache_control; /* Sent with the output; may be NULL. */
};

struct cap_jobio {
  const struct cap_jobio_ops *ops;
  struct cap_jobio_spec spec;
  int live; /* 1 while the output is being stored (until output_done). */
  struct cap_objout out;
  int out_init;            /* out was set up (and must be freed). */
  struct cap_proc *source; /* ffmpeg, while its stdout is read into the output. */
  int source_paused;       /* Reading stopped: the store had no room. */
  /* What was stored. */
  uint64_t bytes;
  char etag[130];
  int parts;
};

/* Sets io up to report through ops with spec (copied; its strings are not). */
void cap_jobio_init(struct cap_jobio *io, const struct cap_jobio_ops *ops,
                    const struct cap_jobio_spec *spec);
/* Starts storing what p (spawned with stream_out) writes to its stdout.
 * p->data must point at io while it is read: the pipe's callbacks find io
 * through it. */
void cap_jobio_stream(struct cap_jobio *io, struct cap_proc *p);
/* ffmpeg exited 0 after a streamed output: store the rest and complete. */
void cap_jobio_finish(struct cap_jobio *io);
/* Stores size bytes of the finished output in the scratch store's temp
 * file tmp_name (the caller removes the file afterwards).  output_done
 * may run before this returns. */
void cap_jobio_put_file(struct cap_jobio *io, const char *tmp_name, uint64_t size);
/* Stops the traffic: ffmpeg's pipe is closed and what is being stored is
 * aborted (output_done follows if anything was under way); why is
 * CAP_STORAGE_E_CANCELED for a cancel. */
void cap_jobio_abort(struct cap_jobio *io, enum cap_storage_errc why, const char *msg);
/* Releases the output; only once live is 0, never from inside output_done. */
void cap_jobio_free(struct cap_jobio *io);

#endif
