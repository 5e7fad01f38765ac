#ifndef CAP_JOB_H
#define CAP_JOB_H

#include "climits.h"
#include "execreq.h"
#include "pool.h"
#include "proc.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct cap_jobs;
struct cap_job;
struct cap_s3_req;
struct cap_upload;

enum cap_job_state {
  CAP_JOB_QUEUED,
  CAP_JOB_RUNNING,
  CAP_JOB_UPLOADING,
  CAP_JOB_SUCCEEDED,
  CAP_JOB_FAILED,
  CAP_JOB_CANCELED,
};

#define CAP_JOB_ID_LEN 22

/* Someone waiting for a job to end (a request or a long-poll).  The job
 * calls cb once when it ends, after unlinking the waiter. */
struct cap_job_waiter {
  struct cap_job_waiter *prev, *next;
  struct cap_job *job;
  void (*cb)(struct cap_job_waiter *w);
};

struct cap_job_progress {
  double input_duration_s; /* From a probe of the input; 0 when unknown. */
  int64_t out_time_us;
  int64_t frame;
  int64_t total_size;
  double fps;
  char speed[16];
};

/* One run of a capability: its request, the preset's arguments copied at
 * submission (a preset reload never changes a job), its children, timers,
 * progress, and its result or error. */
struct cap_job {
  struct cap_jobs *jobs;
  char id[CAP_JOB_ID_LEN + 1];
  char owner[65];  /* The token name that created it. */
  char req_id[65]; /* The request that created it. */
  enum cap_capability capability;
  char *input_key, *output_key, *preset;
  char *idem_key;
  unsigned char body_hash[32];
  /* The preset as it was when the job was created. */
  char **args;
  char *format, *ext, *cls;
  char *content_type;  /* The stored output's Content-Type; NULL without a preset. */
  char *cache_control; /* Its Cache-Control, or NULL. */
  int timeout_s;
  int streamable;
  char *input_formats;      /* The demuxers its input may have. */
  struct cap_climit limits; /* The class's limits with the preset's overrides. */

  enum cap_job_state state;
  int64_t created_at, started_at, finished_at; /* Wall clock, ms. */
  uint64_t started_mono;                       /* Loop time, ms. */
  struct cap_job_progress progress;
  uint64_t last_progress_log;

  /* Result. */
  uint64_t bytes;
  char *probe_json;
  /* Draining: the job was unfinished when the drain began, and whether a
   * client has been sent its final state since. */
  int drain_watch;
  int delivered;
  /* Error. */
  const char *err_code;
  char *err_msg;
  int http_status;
  int64_t exit_status;
  int term_signal;
  char *stderr_tail;
  char detected_format[64]; /* For input_format_refused: what ffmpeg saw. */

  struct cap_proc proc;
  int phase;
  int proc_live;
  int in_fd;
  char tmp_name[64]; /* The output's temp file, "<id>/out.<ext>". */
  char tmp_dir[32];  /* The job's own temp directory: all its child may write. */
  uv_timer_t timeout_timer;
  int handles_open;
  int cancel_requested;
  const char *cancel_code; /* "canceled" or "timeout". */
  struct cap_pool_item pool_item;
  struct cap_job_waiter *waiters;

  /* Object storage I/O (jobio.c), for S3/R2. */
  struct cap_s3_req *fetch;  /* Input download under way. */
  struct cap_upload *upload; /* Output upload. */
  int io_live;               /* Storage requests of the job still running. */
  int out_open, out_paused;  /* ffmpeg's stdout, read into the upload. */
  int ff_ok;                 /* ffmpeg exited 0. */
  int upload_ok;             /* The upload completed. */
  char in_tmp[64];           /* The downloaded input's temp file. */
  int out_fd;                /* The finished temp output being uploaded. */
  char etag[130];
  int parts;

  struct cap_job *hnext;       /* Hash chain by id. */
  struct cap_job *prev, *next; /* The table's list, oldest first. */
};

/* Returns a new queued job for r owned by owner (r's strings are copied);
 * the table takes it over through cap_jobs_add. */
struct cap_job *cap_job_new(struct cap_jobs *jobs, const struct cap_execreq *r, const char *owner,
                            const char *req_id);
/* Gives the job its timers on loop; done when the table takes it. */
void cap_job_attach(struct cap_job *j, uv_loop_t *loop);
/* Frees a job that was never attached, or has ended with its handles closed. */
void cap_job_free(struct cap_job *j);
/* The pool calls this when the job gets a slot. */
void cap_job_start(struct cap_pool_item *it);
/* Cancels the job: takes it out of the queue, or kills its process group
 * at once (SIGKILL: the output is thrown away, so there is nothing for the
 * child to finish); the pool slot is released when the child has been
 * reaped.  code is "canceled" or "timeout". */
void cap_job_cancel(struct cap_job *j, const char *code);
/* Returns 1 once the job has reached a final state. */
int cap_job_done(const struct cap_job *j);
/* Returns 1 when the job may be freed: ended, no child, no open handle. */
int cap_job_quiescent(const struct cap_job *j);
void cap_job_add_waiter(struct cap_job *j, struct cap_job_waiter *w);
void cap_job_remove_waiter(struct cap_job_waiter *w);
const char *cap_job_state_name(enum cap_job_state s);
/* For jobio.c: the input is downloaded (status 0, j->in_fd set) or not. */
void cap_job_input_ready(struct cap_job *j, int status, const char *code, int http_status,
                         const char *msg);
/* For jobio.c: the output upload has completed (ok) or failed. */
void cap_job_output_done(struct cap_job *j, int ok, const char *code, const char *msg);

#endif
