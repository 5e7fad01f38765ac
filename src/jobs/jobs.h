#ifndef CAP_JOBS_H
#define CAP_JOBS_H

#include "job.h"
#include "jobjournal.h"
#include "pool.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct cap_config;
struct cap_store;
struct cap_presets;
struct cap_sandbox;
struct cap_climits;
struct cap_journal;
struct cap_outbox;

/* Every job the server knows: the running and queued ones and, for a
 * while, the finished ones, so that clients can poll them.  The table is
 * bounded (jobs_max); finished jobs go after job_ttl_s or when room is
 * needed, oldest first.  It owns the process pool, and the deferred queue
 * through which a job's waiters are woken and its resources let go on a
 * later loop turn than the callback that ended it (see docs/DESIGN.md). */
struct cap_jobs {
  uv_loop_t *loop;
  const struct cap_config *cfg;
  struct cap_store *store;
  /* Where inputs and outputs live: the app's, or by default file_os, the
   * file backend over store. */
  struct cap_objstore *objstore;
  struct cap_objstore file_os;
  struct cap_presets *presets;
  const struct cap_sandbox *sandbox; /* Every child runs in it. */
  const struct cap_climits *climits; /* Limits per resource class. */
  struct cap_pool pool;
  struct cap_job **slots;
  size_t nslots;
  size_t n;
  struct cap_job *head, *tail; /* Oldest first. */
  uv_timer_t sweep;
  /* Opens the loop's inotify descriptor at start-up (see open_inotify). */
  uv_fs_event_t inotify_probe;
  int stopping;
  /* What the jobs see of the table (kept current from the fields above). */
  struct cap_job_owner owner;
  /* Jobs with deferred work, oldest first.  The check handle runs it after
   * the loop's I/O callbacks; the idle handle, active with it, keeps the
   * loop from blocking in poll meanwhile. */
  struct cap_job *deferred_head, *deferred_tail;
  uv_check_t deferred_check;
  uv_idle_t deferred_idle;
  /* Jobs whose row changed this loop turn: written together, in one
   * transaction, after the turn's I/O callbacks (the answer a change
   * caused is on its way by then). */
  struct cap_job *jr_head;
  uv_check_t jr_check;
  uv_idle_t jr_idle;
  int jr_open;
  /* Called once when stopping and no job holds anything any more. */
  void (*on_quiet)(void *arg);
  void *quiet_arg;
  /* Called while draining whenever every job has finished and released
   * what it held, with how many of the jobs the drain waited for have not
   * had their final state sent to a client yet; called no more once that
   * count is 0. */
  void (*on_idle)(void *arg, size_t undelivered);
  void *idle_arg;
  uint64_t submitted, succeeded, failed, canceled;
  /* Where jobs are journaled and their webhooks queued; NULL when off. */
  struct cap_journal *jr;
  struct cap_outbox *outbox;
  /* The cleanup owed to jobs a previous process did not finish. */
  struct cap_jobrecover recover;
};

/* Sets up the table and the pools from cfg; presets must be set before
 * the first job (cap_jobs_set_presets).  Returns 0. */
int cap_jobs_init(struct cap_jobs *t, uv_loop_t *loop, const struct cap_config *cfg,
                  struct cap_store *store);
/* Gives the table its journal and outbox (either may be NULL); before
 * cap_jobs_restore and the first job. */
void cap_jobs_set_journal(struct cap_jobs *t, struct cap_journal *jr, struct cap_outbox *ob);
/* Reads the journal back: ended jobs within their TTL become pollable
 * again (with their idempotency keys); jobs that had not ended are failed
 * as interrupted, their webhooks queued, and what they left in the store
 * cleaned up (asynchronously).  Call once the object store has started.
 * Returns 0 or the journal's negative errno. */
int cap_jobs_restore(struct cap_jobs *t);
/* Replaces the preset set (the table frees the old one; running jobs keep
 * the copy of their preset they were given). */
void cap_jobs_set_presets(struct cap_jobs *t, struct cap_presets *set);
/* Returns a new job for r owned by owner (r's strings are copied), made
 * with the table's presets and limits; the caller owns it until
 * cap_jobs_submit succeeds (else it frees it with cap_job_free). */
struct cap_job *cap_job_new(struct cap_jobs *t, const struct cap_execreq *r, const char *owner,
                            const char *req_id);
/* Returns the job with id, or NULL. */
struct cap_job *cap_jobs_find(struct cap_jobs *t, const char *id);
/* Returns owner's job with idempotency key key, or NULL. */
struct cap_job *cap_jobs_find_idem(struct cap_jobs *t, const char *owner, const char *key);
/* Adds j and hands it to its class's pool (it may start before this
 * returns).  Returns 0, or -EAGAIN when the class queue is full, -ENOSPC
 * when the table is full of unfinished jobs, -ENOENT for an unknown class;
 * on error j stays the caller's (free it with cap_job_free). */
/* Returns the ladder job whose output prefix overlaps prefix (one is the
 * start of the other) and that may still write or delete under it, or
 * NULL.  A job counts while it is unfinished, and after that while its
 * package is still being stored or deleted: a failed ladder deletes its
 * objects after it settles. */
struct cap_job *cap_jobs_prefix_holder(struct cap_jobs *t, const char *prefix);
int cap_jobs_submit(struct cap_jobs *t, struct cap_job *j);
/* Starts watching the jobs unfinished now: cb(arg, undelivered) runs once
 * none is queued, running or uploading (at once when none is), and again
 * as their results are fetched, until all are.  Jobs go on as usual
 * meanwhile; only the caller stops submitting new ones. */
void cap_jobs_drain(struct cap_jobs *t, void (*cb)(void *arg, size_t undelivered), void *arg);
/* Notes that a client has been sent j's final state. */
void cap_jobs_note_delivered(struct cap_jobs *t, struct cap_job *j);
/* Cancels every job and stops the sweep; children are signalled, and once
 * every job is CLOSED the table closes its handles and calls on_quiet, so
 * that the loop can end. */
void cap_jobs_stop(struct cap_jobs *t);
/* Frees the table after the loop has ended. */
void cap_jobs_free(struct cap_jobs *t);
/* Running and queued counts over every class. */
void cap_jobs_counts(const struct cap_jobs *t, int *running, size_t *queued);

#endif
