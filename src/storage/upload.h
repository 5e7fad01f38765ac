#ifndef CAP_UPLOAD_H
#define CAP_UPLOAD_H

#include "s3.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Streaming an object into S3/R2 in uniform parts.  Every part but the
 * last has exactly part_size bytes (R2 rejects anything else).  Part
 * buffers come from one pool whose size is the configured memory budget;
 * when an upload has no buffer to fill, its source stops (the caller
 * stops reading ffmpeg's pipe, so ffmpeg blocks): memory is bounded by
 * configuration, not by the size of the output. */

/* Only the S3 backend (objs3.c) drives an upload; jobs go through
 * objstore.h. */

struct cap_upload;

struct cap_bufpool {
  size_t part_size;
  size_t max; /* Buffers allowed at once, over every upload. */
  size_t used;
  char **free_bufs;
  size_t nfree;
  struct cap_upload *waiters; /* Uploads waiting for a buffer, oldest first. */
};

/* Sets up a pool of budget bytes in part_size buffers (at least one). */
void cap_bufpool_init(struct cap_bufpool *p, size_t part_size, size_t budget);
void cap_bufpool_free(struct cap_bufpool *p);

struct cap_upload_part;

struct cap_upload {
  struct cap_s3 *s3;
  struct cap_bufpool *pool;
  int max_in_flight;
  char *key;
  /* Sent (and signed) on the single PUT or CreateMultipartUpload only, the
   * requests that make the object's metadata; NULL sends none.  The caller
   * keeps them alive until cap_upload_free. */
  const char *content_type;
  const char *cache_control;
  char upload_id[512];
  int mp_state;           /* 0 single PUT so far, 1 creating, 2 created */
  struct cap_s3_req *ctl; /* The control request under way (create, put, complete, abort). */
  int ctl_busy;
  /* Streaming source. */
  char *cur;
  size_t cur_len;
  int held;    /* Buffers this upload holds. */
  int starved; /* The source stopped for want of a buffer. */
  /* File source (non-streamable outputs). */
  int file_fd;
  uint64_t file_size, file_next;
  /* Parts. */
  struct cap_upload_part *ready_head, *ready_tail; /* Filled, not yet sent. */
  int in_flight;
  int nparts; /* Part numbers handed out. */
  int parts_done;
  char (*etags)[130];
  size_t etags_cap;
  struct cap_upload_part *sending; /* Parts under way. */
  int eof;
  int failed;
  int completed;
  int aborted;
  int done_called;
  int ctl_kind;
  char *ctl_body; /* Owned body of the control request (Complete's XML). */
  uint64_t bytes;
  char etag[130]; /* The object's, once complete. */
  char err_code[64];
  char err_msg[256];
  long err_status;              /* The failed request's HTTP status (0: no answer, or none). */
  int err_transient;            /* The failed request may succeed later (cap_s3_transient). */
  struct cap_upload *wait_next; /* In the pool's waiter list. */
  int waiting;
  /* Called when a starved source may go on (cap_upload_space will give room). */
  void (*on_space)(struct cap_upload *u);
  /* Called when CreateMultipartUpload has answered with upload_id (may be
   * NULL): from then on the store holds parts until complete or abort. */
  void (*on_created)(struct cap_upload *u);
  /* Called once when the upload has completed or failed and no request of
   * it is under way; then call cap_upload_free. */
  void (*on_done)(struct cap_upload *u, int ok);
  void *data;
};

/* Starts an upload of key through s3 with buffers from pool. */
void cap_upload_init(struct cap_upload *u, struct cap_s3 *s3, struct cap_bufpool *pool,
                     int max_in_flight, const char *key);
/* Returns room in the part being filled and points *ptr at it; 0 means
 * none for now (on_space will say when). */
size_t cap_upload_space(struct cap_upload *u, char **ptr);
/* Says n bytes were written at the pointer cap_upload_space gave. */
void cap_upload_commit(struct cap_upload *u, size_t n);
/* The source has ended: send what is left and complete. */
void cap_upload_finish(struct cap_upload *u);
/* Uploads size bytes of fd (the caller keeps it open until on_done) in
 * parallel uniform parts, without buffers. */
void cap_upload_file(struct cap_upload *u, int fd, uint64_t size);
/* Abandons the upload (cancel, timeout, ffmpeg failure): in-flight parts
 * are stopped and the multipart upload is aborted; on_done(u, 0) follows. */
void cap_upload_abort(struct cap_upload *u, const char *code, const char *msg);
/* Releases what u holds, after on_done. */
void cap_upload_free(struct cap_upload *u);

#endif
