#ifndef CAP_JOB_H
#define CAP_JOB_H

#include "climits.h"
#include "errcode.h"
#include "execreq.h"
#include "jobstage.h"
#include "jobio.h"
#include "ladder.h"
#include "jobprogress.h"
#include "objstore.h"
#include "pool.h"
#include "proc.h"
#include "reqid.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct cap_job;
struct cap_config;
struct cap_store;
struct cap_sandbox;
struct cap_presets;
struct cap_climits;

#define CAP_JOB_ID_LEN CAP_REQID_JOB_LEN

/* Someone waiting for a job to end (a request or a long-poll).  The job
 * calls cb once, on a later loop turn than the one it ended in (never from
 * inside a child's, an upload's or a client's callback), after unlinking
 * the waiter. */
struct cap_job_waiter {
  struct cap_job_waiter *prev, *next;
  struct cap_job *job;
  void (*cb)(struct cap_job_waiter *w);
};

/* What a job needs from the table that owns it.  The table keeps the
 * pointers current; the job never reaches the table otherwise. */
struct cap_job_owner {
  uv_loop_t *loop;
  const struct cap_config *cfg;
  struct cap_store *store;
  struct cap_objstore *objstore; /* Where inputs and outputs live. */
  const struct cap_sandbox *sandbox;
  const struct cap_presets *presets;
  const struct cap_climits *climits;
  struct cap_pool *pool;
  /* Runs cap_job_run_deferred(j) on a later loop turn. */
  void (*defer)(struct cap_job_owner *o, struct cap_job *j);
  /* j has reached its outcome (SUCCEEDED, FAILED or CANCELED). */
  void (*settled)(struct cap_job_owner *o, struct cap_job *j);
  /* j is CLOSED: it holds nothing any more. */
  void (*closed)(struct cap_job_owner *o, struct cap_job *j);
  /* j was queued or its public state changed (after settled for an
   * outcome): the table journals it and tells its callback. */
  void (*changed)(struct cap_job_owner *o, struct cap_job *j);
  /* j's output has a multipart upload under way, with this id. */
  void (*upload)(struct cap_job_owner *o, struct cap_job *j);
  /* j's ladder is about to store key. */
  void (*storing)(struct cap_job_owner *o, struct cap_job *j, const char *key);
  /* j's ladder has ended; clean: nothing it stored is left to delete. */
  void (*ladder_ended)(struct cap_job_owner *o, struct cap_job *j, int clean);
  /* j's progress moved (a child's progress report). */
  void (*progressed)(struct cap_job_owner *o, struct cap_job *j);
};

/* One run of a capability: its request, the preset's arguments copied at
 * submission (a preset reload never changes a job), its child, timer,
 * storage traffic, progress, and its result or error. */
struct cap_job {
  struct cap_job_owner *owner_ops;
  char id[CAP_JOB_ID_LEN + 1];
  char owner[65];  /* The token name that created it. */
  char req_id[65]; /* The request that created it. */
  enum cap_capability capability;
  char *input_key, *output_key, *preset;
  char *output_prefix; /* A ladder's, ending in '/'; NULL otherwise. */
  char *idem_key;
  unsigned char body_hash[32];
  /* Where its webhooks go, and which (CAP_CB_* bits); NULL and 0
   * without a callback. */
  char *callback_url;
  unsigned callback_events;
  int64_t progress_event_ms; /* Loop time of the last progress webhook. */
  /* The output's multipart upload while under way (journaled, so that a
   * restart can abort it), or NULL. */
  char *upload_id;
  /* A job restored from the journal holds what it answered then: the
   * GET /jobs/{id} object and the /exec answer.  NULL for live jobs. */
  char *saved_job, *saved_answer;
  /* The preset as it was when the job was created. */
  char **args;
  char *format, *ext, *cls;
  char *content_type;  /* The stored output's Content-Type; NULL without a preset. */
  char *cache_control; /* Its Cache-Control, or NULL. */
  int timeout_s;
  int streamable;
  char *input_formats;           /* The demuxers its input may have. */
  struct cap_climit limits;      /* The class's limits with the preset's overrides. */
  struct cap_ladderspec *ladder; /* A multi-output preset's ladder (the job's copy), or NULL. */

  enum cap_job_stage stage; /* Written only by job.c's move(). */
  enum cap_job_state state; /* The public view of stage; written only by move(). */
  int64_t created_at, started_at, finished_at; /* Wall clock, ms. */
  struct cap_job_progress progress;

  /* Result. */
  uint64_t bytes;
  char *probe_json;
  char etag[130]; /* The stored object's, from S3. */
  int parts;      /* Pieces it was uploaded in (a single PUT is one). */
  /* Draining: the job was unfinished when the drain began, and whether a
   * client has been sent its final state since. */
  int drain_watch;
  int delivered;
  /* Error: a row of the error table (CAP_E_NONE while there is none). */
  enum cap_err err;
  char *err_msg;
  int64_t exit_status;
  int term_signal;
  char *stderr_tail;
  char detected_format[64]; /* For input_format_refused: what ffmpeg saw. */

  /* What the job holds. */
  struct cap_proc proc;
  int child_running;              /* proc was spawned and its on_done has not run yet. */
  enum cap_job_stage child_stage; /* The stage proc was spawned in. */
  struct cap_objin in;            /* The input: in.fd once opened, else -1. */
  char in_tmp[64];                /* The name a download's temp file gets, "<id>.in". */
  char tmp_name[64];              /* The output's temp file, "<id>/out.<ext>", or "". */
  char tmp_dir[32];               /* The job's own temp directory: all its child may write. */
  uv_timer_t timeout_timer;
  struct cap_pool_item pool_item;
  struct cap_jobio io; /* Its output on the way into the store. */
  /* A ladder's package on its way into the store (NULL before the render),
   * what the source is, and the renditions it gets. */
  struct cap_ladder *pkg;
  int src_width, src_height, src_audio;
  struct cap_ladder_pick pick;
  struct cap_job_waiter *waiters;

  /* The owner's links. */
  struct cap_job *hnext;       /* Hash chain by id. */
  struct cap_job *prev, *next; /* The table's list, oldest first. */
  struct cap_job *defer_next;  /* The table's deferred queue. */
  int deferred;                /* On that queue. */
  struct cap_job *jr_next;     /* The table's list of rows to journal. */
  int jr_dirty;                /* On that list. */
  uint64_t jr_hash;            /* Of the row last written, to skip a same one. */
};

/* Returns a new job (stage NEW) for r made with what o holds (r's strings
 * are copied); the caller owns it until the table takes it. */
struct cap_job *cap_job_create(struct cap_job_owner *o, const struct cap_execreq *r,
                               const char *owner, const char *req_id);
/* Moves a NEW job to QUEUED and gives it its timer on the owner's loop;
 * the table calls this when it takes the job. */
void cap_job_attach(struct cap_job *j);
/* Frees a job that is NEW or CLOSED. */
void cap_job_free(struct cap_job *j);
/* The pool calls this when the job gets a slot. */
void cap_job_start(struct cap_pool_item *it);
/* Cancels the job: takes it out of the queue, or kills its process group
 * at once (SIGKILL: the output is thrown away, so there is nothing for the
 * child to finish); the pool slot is released when the child has been
 * reaped.  why is CAP_E_CANCELED (a client's cancel), CAP_E_TIMEOUT or
 * CAP_E_INTERRUPTED (the server is stopping: the job fails, retryable). */
void cap_job_cancel(struct cap_job *j, enum cap_err why);
/* Returns 1 once the job has reached its outcome. */
int cap_job_done(const struct cap_job *j);
/* Returns 1 when the job holds nothing and may be freed (CLOSED). */
int cap_job_quiescent(const struct cap_job *j);
void cap_job_add_waiter(struct cap_job *j, struct cap_job_waiter *w);
void cap_job_remove_waiter(struct cap_job_waiter *w);
/* The owner's deferred queue calls this on a later loop turn for each
 * cap_job_owner.defer: tells the waiters of an ended job, and releases
 * what the job no longer needs. */
void cap_job_run_deferred(struct cap_job *j);

#endif
