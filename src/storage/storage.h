#ifndef CAP_STORAGE_H
#define CAP_STORAGE_H

#include "curlloop.h"
#include "inputsrv.h"
#include "s3.h"
#include "upload.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

struct cap_config;

/* Where objects live: the local file store (the embedded default) or an
 * S3-compatible bucket (S3, R2).  For S3 this owns the curl loop, the
 * client, the part-buffer pool, the start-up bucket check and the sweep
 * that aborts multipart uploads left behind. */

/* Which backend cap_objstore_init picks; outside src/storage only the
 * app's set-up reads it (to place the local store). */
enum cap_storage_kind { CAP_STORAGE_FILE, CAP_STORAGE_S3 };

struct cap_pending_abort {
  char *key; /* Without the prefix. */
  char *upload_id;
  struct cap_pending_abort *next;
};

/* How many refused aborts are remembered; past that the oldest refusal is
 * forgotten, and the sweep may try that upload again early. */
#define CAP_STORAGE_REFUSED_MAX 256

/* An abort the store refused (403, 405, ...): retrying soon cannot help, so
 * the orphan sweep leaves the upload alone until orphan_age_s after this. */
struct cap_refused_abort {
  char *key; /* Without the prefix. */
  char *upload_id;
  uint64_t at_ms; /* Loop time of the refusal. */
};

struct cap_storage {
  enum cap_storage_kind kind;
  char *label;     /* "s3" or "r2" for /health. */
  char *file_root; /* For file:///DIR. */
  struct cap_s3_conf conf;
  struct cap_curlloop *cl; /* The app's, shared with the registry client. */
  struct cap_s3 s3;
  /* The loopback endpoint children read S3 inputs through (stream mode). */
  struct cap_inputsrv insrv;
  struct cap_bufpool pool;
  uv_timer_t sweep_timer;
  int sweep_timer_open;
  int sweep_running;
  const struct cap_config *cfg;
  uv_loop_t *loop;
  uint64_t orphans_aborted;
  /* Aborts that failed, retried with growing delays until they succeed. */
  struct cap_pending_abort *pending;
  uv_timer_t retry_timer;
  int retry_timer_open;
  uint64_t retry_delay_ms;
  /* Aborts refused, tried no more until the sweep's turn comes again. */
  struct cap_refused_abort refused[CAP_STORAGE_REFUSED_MAX];
  size_t nrefused;
};

/* Reads the storage settings (cfg->storage, the AWS_* / R2_ACCOUNT_ID
 * variables of envp, the credentials file); S3 requests go through cl,
 * which the caller owns and closes after cap_storage_stop.  Returns 0 or
 * -EINVAL with "storage: reason" in err; secrets never appear in err. */
int cap_storage_init(struct cap_storage *st, const struct cap_config *cfg, char **envp,
                     uv_loop_t *loop, struct cap_curlloop *cl, char *err, size_t errlen);
/* Checks the bucket once (HEAD) and starts the orphan sweep; outcomes are
 * logged.  cap_objstore_start calls it. */
void cap_storage_start(struct cap_storage *st);
/* Stops the sweep and every transfer, closing handles (for shutdown).
 * cap_objstore_stop calls it. */
void cap_storage_stop(struct cap_storage *st);
/* Aborts the multipart uploads a job left behind when the process died:
 * upload_id (may be NULL) at once, and every upload listed for key (or,
 * with prefix set, under key) initiated before before (the process's
 * start) or in the same second, so that an upload whose id never reached the journal goes too
 * while a new job's upload of the same key is left alone.  Aborts are
 * retried until the store confirms them.  Nothing for the file store. */
void cap_storage_recover_uploads(struct cap_storage *st, const char *key, int prefix,
                                 const char *upload_id, time_t before);
/* Releases memory after the loop has ended. */
void cap_storage_free(struct cap_storage *st);
/* Appends the /health description ({"kind":...,"bucket":...}) to out. */
void cap_storage_health(const struct cap_storage *st, struct cap_buf *out);

#endif
