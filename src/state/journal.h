#ifndef CAP_JOURNAL_H
#define CAP_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The journal: a SQLite database (WAL) in the state directory that keeps
 * what must outlive the process: every job's row (written at each state
 * change), the objects a ladder job may have stored, and the webhook
 * outbox.  Writes run on the loop's thread: in WAL mode with
 * synchronous=NORMAL a commit appends to the WAL without an fsync, and the
 * checkpoints that do fsync are taken off the loop (see journal.c). */

struct cap_journal;

/* One job as the journal keeps it.  Strings may be NULL; every pointer is
 * borrowed by cap_journal_job_put and owned by the journal's callback
 * when loading (valid during the call only). */
struct cap_journal_job {
  const char *id;
  const char *owner; /* The token name. */
  const char *req_id;
  const char *capability; /* "ffmpeg", "ffprobe". */
  const char *preset;
  const char *idem_key;
  const unsigned char *body_hash;              /* 32 bytes, or NULL. */
  const char *state;                           /* "queued", "running", ..., "succeeded". */
  const char *code;                            /* The error code once failed or canceled. */
  int64_t created_at, started_at, finished_at; /* Wall clock, ms; 0: not yet. */
  const char *input_key, *output_key, *output_prefix;
  const char *upload_id; /* The output's multipart upload under way, or NULL. */
  const char *callback_url;
  const char *callback_events; /* Comma-separated. */
  const char *job_json;        /* GET /jobs/{id}'s body once finished. */
  const char *answer_json;     /* The /exec answer's body once finished. */
};

/* One webhook delivery waiting in the outbox.  Same ownership rules. */
struct cap_journal_event {
  const char *id; /* The webhook-id, stable across attempts. */
  const char *job_id;
  const char *owner; /* The token name whose secrets sign it. */
  const char *url;
  const char *type; /* "job.succeeded", ... */
  const char *body; /* The exact bytes sent (and signed). */
  int attempts;
  int64_t created_at, next_at; /* Wall clock, ms. */
};

/* Opens (creating it when missing) the journal at path.  With reset set,
 * an existing file is first renamed aside to "<path>.broken-<unix time>"
 * (with its -wal and -shm) and a new one started.  Returns 0 and the
 * journal in *out (the caller closes it), or a negative errno with the
 * reason, a full sentence naming the file and the recovery, in err. */
int cap_journal_open(const char *path, int reset, struct cap_journal **out, char *err,
                     size_t errlen);
/* Starts the checkpointer on loop: every few seconds, when the WAL has
 * grown or waited, a passive checkpoint runs on libuv's thread pool with a
 * connection of its own.  Returns 0 or a UV_E* error. */
int cap_journal_attach(struct cap_journal *jr, uv_loop_t *loop);
/* Stops the checkpointer (closing its timer); for shutdown.  NULL is
 * allowed. */
void cap_journal_detach(struct cap_journal *jr);
/* Closes the journal after a last checkpoint that empties the WAL (after
 * the loop has ended).  NULL is allowed. */
void cap_journal_close(struct cap_journal *jr);
/* The journal's file, owned by jr. */
const char *cap_journal_path(const struct cap_journal *jr);

/* Groups the writes that follow, up to cap_journal_commit, into one
 * transaction: one WAL append for many rows.  A failed commit rolls them
 * back (logged like a failed write); returns 0 or a negative errno. */
void cap_journal_begin(struct cap_journal *jr);
int cap_journal_commit(struct cap_journal *jr);
/* Inserts or replaces the job's row.  Returns 0 or a negative errno (the
 * failure is logged once per kind; the server goes on in memory). */
int cap_journal_job_put(struct cap_journal *jr, const struct cap_journal_job *row);
/* Records that job_id's ladder may have stored key (before its upload
 * starts, so that a crash cannot hide it). */
int cap_journal_object_add(struct cap_journal *jr, const char *job_id, const char *key);
/* Calls cb for every job row, oldest first, then returns 0 or a negative
 * errno.  objects(arg, key) gets each key recorded for that job. */
int cap_journal_job_load(struct cap_journal *jr,
                         void (*cb)(void *arg, const struct cap_journal_job *row), void *arg);
/* Calls cb for each object key recorded for job_id. */
int cap_journal_object_load(struct cap_journal *jr, const char *job_id,
                            void (*cb)(void *arg, const char *key), void *arg);
/* Deletes job rows (and their objects) finished before cutoff_ms. */
int cap_journal_job_purge(struct cap_journal *jr, int64_t cutoff_ms);
/* Deletes one job's row and its objects. */
int cap_journal_job_delete(struct cap_journal *jr, const char *id);
/* Deletes the recorded objects of job_id (its package is stored or gone). */
int cap_journal_object_clear(struct cap_journal *jr, const char *job_id);

/* The webhook outbox. */
int cap_journal_event_add(struct cap_journal *jr, const struct cap_journal_event *e);
int cap_journal_event_update(struct cap_journal *jr, const char *id, int attempts, int64_t next_at);
int cap_journal_event_delete(struct cap_journal *jr, const char *id);
/* Calls cb for every waiting event, oldest first. */
int cap_journal_event_load(struct cap_journal *jr,
                           void (*cb)(void *arg, const struct cap_journal_event *e), void *arg);

/* What the journal has done, for /metrics and the benchmark. */
struct cap_journal_stats {
  uint64_t writes, write_errors, checkpoints;
  int64_t size_bytes; /* Database plus WAL, as last measured. */
};
void cap_journal_stats(const struct cap_journal *jr, struct cap_journal_stats *out);
/* The rows it holds now: jobs and outbox events (-1 when it cannot say). */
void cap_journal_counts(struct cap_journal *jr, int64_t *jobs, int64_t *events);

#endif
