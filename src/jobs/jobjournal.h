#ifndef CAP_JOBJOURNAL_H
#define CAP_JOBJOURNAL_H

#include "job.h"
#include "journal.h"

#include <time.h>

/* What ties jobs to the journal: a job's row as it is written at each
 * state change, a job made back from its row at start-up, and the cleanup
 * of what jobs left behind when the process died (their multipart uploads
 * and a ladder's objects). */

/* Writes j's row (its public state; for an ended job the JSON it answers
 * with), unless it is the row last written for j (j->jr_hash says).  Does
 * nothing when jr is NULL. */
void cap_jobjournal_put(struct cap_journal *jr, struct cap_job *j);

/* Returns a new job, CLOSED, made from row for owner o (the caller owns
 * it), or NULL when the row is not usable.  A row of a job that had not
 * ended comes back failed with CAP_E_INTERRUPTED and *interrupted set: its
 * new row must be written, its callback told, and what it left cleaned up
 * (cap_jobrecover_add). */
struct cap_job *cap_jobjournal_restore(struct cap_job_owner *o, const struct cap_journal_job *row,
                                       int *interrupted);

struct cap_jobrecover_item;

/* The deletes and aborts a start-up owes to jobs of the previous run.
 * Deletes run one at a time (the next when the last has ended), so that a
 * recovery of many ladders does not flood the store. */
struct cap_jobrecover {
  struct cap_objstore *os;
  struct cap_journal *jr;
  struct cap_jobrecover_item *head, *tail;
  struct cap_objdel del;
  time_t started; /* This process's start: uploads begun before it are left over. */
  uint64_t aborted_lists, deleted, delete_failures;
  uint64_t uploads_by_id, objects_queued; /* Cleanups queued at start-up. */
  uint64_t job_failures;                  /* Failed deletes of the job at the head. */
  int starting, ended;                    /* Inside cap_objstore_delete; its delete ended there. */
  int stopped;
};

/* Sets rc up over os and jr (both borrowed). */
void cap_jobrecover_init(struct cap_jobrecover *rc, struct cap_objstore *os,
                         struct cap_journal *jr);
/* Queues the cleanup of what the job of row left: its output's multipart
 * uploads (by the recorded id and by listing its key), and for a ladder
 * the uploads under its prefix and every object recorded for it.  The
 * job's objects are forgotten by the journal once all are deleted. */
void cap_jobrecover_add(struct cap_jobrecover *rc, const struct cap_journal_job *row);
/* Starts the deletes queued. */
void cap_jobrecover_start(struct cap_jobrecover *rc);
/* Stops a delete under way and drops the queue (shutdown). */
void cap_jobrecover_stop(struct cap_jobrecover *rc);

#endif
