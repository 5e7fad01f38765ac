#ifndef CAP_JOBIO_H
#define CAP_JOBIO_H

#include <stdint.h>

struct cap_jobio;
struct cap_proc;
struct cap_s3_req;
struct cap_storage;
struct cap_upload;

/* A job's traffic with S3/R2: the input downloaded into a private temp
 * file, and the output streamed from ffmpeg's stdout (or uploaded from a
 * temp file for outputs that need seeking) in uniform parts.  Results go
 * back to the job through its cap_jobio_ops; nothing here knows a job. */

struct cap_jobio_ops {
  /* The input is downloaded into the fd given to cap_jobio_fetch (status
   * 0, the fd rewound), or not (status < 0 with an API code, an HTTP
   * status and a message). */
  void (*input_ready)(struct cap_jobio *io, int status, const char *code, int http_status,
                      const char *msg);
  /* The output upload has completed (ok: io->bytes, etag and parts say
   * what was stored) or failed (code and msg from the store or ours). */
  void (*output_done)(struct cap_jobio *io, int ok, const char *code, const char *msg);
};

/* Where the job's objects go and what they are; the owner fills these in
 * before the first call and keeps the strings alive until cap_jobio_free. */
struct cap_jobio_spec {
  struct cap_storage *storage;
  uint64_t input_max; /* Bytes; a larger input fails with input_too_large. */
  int parts_in_flight;
  const char *input_key, *output_key;
  const char *content_type, *cache_control; /* Sent with the output; may be NULL. */
};

struct cap_jobio {
  const struct cap_jobio_ops *ops;
  struct cap_jobio_spec spec;
  int live; /* Storage requests still under way (the download, the upload). */
  struct cap_s3_req *fetch;
  int fetch_fd;
  struct cap_upload *upload;
  struct cap_proc *source; /* ffmpeg, while its stdout is read into the upload. */
  int source_paused;       /* Reading stopped: no part buffer was free. */
  /* What the upload stored. */
  uint64_t bytes;
  char etag[130];
  int parts;
};

/* Sets io up to report through ops with spec (copied; its strings are not). */
void cap_jobio_init(struct cap_jobio *io, const struct cap_jobio_ops *ops,
                    const struct cap_jobio_spec *spec);
/* Downloads the input into fd (a temp file the caller owns). */
void cap_jobio_fetch(struct cap_jobio *io, int fd);
/* Starts uploading what p (spawned with stream_out) writes to its stdout.
 * p->data must point at io while it is read: the pipe's callbacks find io
 * through it. */
void cap_jobio_stream(struct cap_jobio *io, struct cap_proc *p);
/* ffmpeg exited 0 after a streamed output: send the rest and complete. */
void cap_jobio_finish(struct cap_jobio *io);
/* Uploads size bytes of the finished output in fd (kept open by the caller). */
void cap_jobio_upload_file(struct cap_jobio *io, int fd, uint64_t size);
/* Stops the traffic: the download is dropped, ffmpeg's pipe closed and
 * the multipart upload aborted (output_done follows). */
void cap_jobio_abort(struct cap_jobio *io, const char *code, const char *msg);
/* Releases the upload; only once live is 0, never from inside output_done. */
void cap_jobio_free(struct cap_jobio *io);

#endif
