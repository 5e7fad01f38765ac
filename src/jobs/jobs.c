#include "jobs.h"

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "container.h"
#include "jobjson.h"
#include "journal.h"
#include "log.h"
#include "outbox.h"
#include "preset.h"
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Finished jobs past their TTL are dropped by a sweep this often. */
#define SWEEP_MS 30000

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  while (*s) {
    h ^= (unsigned char)*s++;
    h *= 1099511628211ULL;
  }
  return h;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void journal_flush(struct cap_jobs *t);

static void unlink_job(struct cap_jobs *t, struct cap_job *j) {
  struct cap_job **pp = &t->slots[hash(j->id) & (t->nslots - 1)];
  while (*pp != j)
    pp = &(*pp)->hnext;
  *pp = j->hnext;
  if (j->prev)
    j->prev->next = j->next;
  else
    t->head = j->next;
  if (j->next)
    j->next->prev = j->prev;
  else
    t->tail = j->prev;
  t->n--;
}

/* Drops finished, quiescent jobs: those past the TTL, and with need > 0
 * that many more of the oldest.  Returns how many were dropped. */
static size_t sweep(struct cap_jobs *t, size_t need) {
  int64_t cutoff = wall_ms() - (int64_t)t->cfg->job_ttl_s * 1000;
  size_t dropped = 0;
  for (struct cap_job *j = t->head, *next; j; j = next) {
    next = j->next;
    if (!cap_job_quiescent(j) || j->waiters)
      continue;
    if (j->finished_at <= cutoff || dropped < need) {
      if (j->jr_dirty)
        journal_flush(t);
      unlink_job(t, j);
      cap_job_free(j);
      dropped++;
    }
  }
  return dropped;
}

/* Writes the rows of the jobs changed since the last flush, in one
 * transaction. */
static void journal_flush(struct cap_jobs *t) {
  if (t->jr_head == NULL)
    return;
  cap_journal_begin(t->jr);
  for (struct cap_job *j = t->jr_head, *next; j; j = next) {
    next = j->jr_next;
    j->jr_next = NULL;
    j->jr_dirty = 0;
    cap_jobjournal_put(t->jr, j);
  }
  t->jr_head = NULL;
  cap_journal_commit(t->jr);
  if (t->jr_open) {
    uv_check_stop(&t->jr_check);
    uv_idle_stop(&t->jr_idle);
  }
}

static void on_journal_check(uv_check_t *h) {
  journal_flush(h->data);
}

static void on_idle_tick(uv_idle_t *h);

/* Notes that j's row must be written this loop turn.  Once the table's
 * handles are closed (stopping), it is written at once. */
static void journal_mark(struct cap_jobs *t, struct cap_job *j) {
  if (t->jr == NULL || j->jr_dirty)
    return;
  j->jr_dirty = 1;
  j->jr_next = t->jr_head;
  t->jr_head = j;
  if (!t->jr_open) {
    journal_flush(t);
    return;
  }
  uv_check_start(&t->jr_check, on_journal_check);
  /* The idle handle keeps a change made in a timer callback from waiting
   * in poll for the next event. */
  uv_idle_start(&t->jr_idle, on_idle_tick);
}

/* Puts j in the hash and at the end of the list. */
static void link_job(struct cap_jobs *t, struct cap_job *j) {
  size_t slot = hash(j->id) & (t->nslots - 1);
  j->hnext = t->slots[slot];
  t->slots[slot] = j;
  j->prev = t->tail;
  j->next = NULL;
  if (t->tail)
    t->tail->next = j;
  else
    t->head = j;
  t->tail = j;
  t->n++;
}

static void on_sweep(uv_timer_t *timer) {
  struct cap_jobs *t = timer->data;
  sweep(t, 0);
  /* The journal forgets what the table has forgotten by age, so that the
   * file stays as large as a TTL's worth of jobs. */
  if (t->jr)
    cap_journal_job_purge(t->jr, wall_ms() - (int64_t)t->cfg->job_ttl_s * 1000);
}

static struct cap_jobs *table_of(struct cap_job_owner *o) {
  return container_of(o, struct cap_jobs, owner);
}

/* Runs the deferred work of every job queued for it, those queued meanwhile
 * included.  It runs from the loop (a check handle), so nothing of the
 * child, upload or client callback that queued a job is on the stack. */
static void on_deferred(uv_check_t *h) {
  struct cap_jobs *t = h->data;
  struct cap_job *j;
  while ((j = t->deferred_head) != NULL) {
    t->deferred_head = j->defer_next;
    if (t->deferred_head == NULL)
      t->deferred_tail = NULL;
    j->defer_next = NULL;
    j->deferred = 0;
    cap_job_run_deferred(j);
  }
  uv_check_stop(&t->deferred_check);
  uv_idle_stop(&t->deferred_idle);
}

/* Does nothing: an active idle handle makes the loop poll without
 * blocking, so that deferred work queued before the poll runs this turn. */
static void on_idle_tick(uv_idle_t *h) {}

static void owner_defer(struct cap_job_owner *o, struct cap_job *j) {
  struct cap_jobs *t = table_of(o);
  if (j->deferred)
    return;
  j->deferred = 1;
  j->defer_next = NULL;
  if (t->deferred_tail)
    t->deferred_tail->defer_next = j;
  else
    t->deferred_head = j;
  t->deferred_tail = j;
  uv_check_start(&t->deferred_check, on_deferred);
  uv_idle_start(&t->deferred_idle, on_idle_tick);
}

static void owner_settled(struct cap_job_owner *o, struct cap_job *j) {
  struct cap_jobs *t = table_of(o);
  if (j->state == CAP_JOB_SUCCEEDED)
    t->succeeded++;
  else if (j->state == CAP_JOB_FAILED)
    t->failed++;
  else
    t->canceled++;
}

static void check_quiet(struct cap_jobs *t);

/* Queues the webhook of type ("job.<event>") for j when its callback asked
 * for event, with the job as GET /jobs/{id} shows it now. */
static void notify(struct cap_jobs *t, struct cap_job *j, unsigned event, const char *type) {
  if (t->outbox == NULL || j->callback_url == NULL || !(j->callback_events & event))
    return;
  struct cap_buf b;
  cap_buf_init(&b);
  cap_jobjson_job(j, &b);
  cap_buf_putc(&b, '\0');
  cap_outbox_enqueue(t->outbox, j->owner, j->callback_url, j->id, type, b.data);
  cap_buf_free(&b);
}

/* The one place a job's public state change reaches the journal and its
 * callback.  The outcome is journaled at once (a crash from here on must
 * not make the job look interrupted) and again once the job is CLOSED,
 * when nothing of it changes any more; its webhook waits for that (a
 * killed child's signal, a ladder's cleanup are part of what it says). */
static void owner_changed(struct cap_job_owner *o, struct cap_job *j) {
  struct cap_jobs *t = table_of(o);
  journal_mark(t, j);
  if (j->state == CAP_JOB_RUNNING)
    notify(t, j, CAP_CB_STARTED, "job.started");
}

/* The job's final word: its row as it will stay, and its outcome's webhook. */
static void job_final(struct cap_jobs *t, struct cap_job *j) {
  journal_mark(t, j);
  switch (j->state) {
  case CAP_JOB_SUCCEEDED:
    notify(t, j, CAP_CB_SUCCEEDED, "job.succeeded");
    break;
  case CAP_JOB_FAILED:
    notify(t, j, CAP_CB_FAILED, "job.failed");
    break;
  case CAP_JOB_CANCELED:
    notify(t, j, CAP_CB_CANCELED, "job.canceled");
    break;
  default:
    break;
  }
}

static void owner_upload(struct cap_job_owner *o, struct cap_job *j) {
  journal_mark(table_of(o), j);
}

static void owner_storing(struct cap_job_owner *o, struct cap_job *j, const char *key) {
  struct cap_jobs *t = table_of(o);
  if (t->jr)
    cap_journal_object_add(t->jr, j->id, key);
}

static void owner_ladder_ended(struct cap_job_owner *o, struct cap_job *j, int clean) {
  struct cap_jobs *t = table_of(o);
  if (t->jr && clean)
    cap_journal_object_clear(t->jr, j->id);
}

/* Progress webhooks go at most once per callback_progress_ms per job, and
 * only while the job runs. */
static void owner_progressed(struct cap_job_owner *o, struct cap_job *j) {
  struct cap_jobs *t = table_of(o);
  if (j->callback_url == NULL || !(j->callback_events & CAP_CB_PROGRESS) ||
      j->state != CAP_JOB_RUNNING)
    return;
  int64_t now = (int64_t)uv_now(t->loop);
  if (j->progress_event_ms && now - j->progress_event_ms < t->cfg->callback_progress_ms)
    return;
  j->progress_event_ms = now;
  notify(t, j, CAP_CB_PROGRESS, "job.progress");
}

static void owner_closed(struct cap_job_owner *o, struct cap_job *j) {
  struct cap_jobs *t = table_of(o);
  job_final(t, j);
  check_quiet(t);
}

/* Points the jobs' view of the table at what it holds now: app.c sets
 * the object store, sandbox and limits after cap_jobs_init, presets change on
 * reload. */
static void refresh_owner(struct cap_jobs *t) {
  struct cap_job_owner *o = &t->owner;
  o->loop = t->loop;
  o->cfg = t->cfg;
  o->store = t->store;
  o->objstore = t->objstore;
  o->sandbox = t->sandbox;
  o->presets = t->presets;
  o->climits = t->climits;
  o->pool = &t->pool;
  o->defer = owner_defer;
  o->settled = owner_settled;
  o->closed = owner_closed;
  o->changed = owner_changed;
  o->upload = owner_upload;
  o->storing = owner_storing;
  o->ladder_ended = owner_ladder_ended;
  o->progressed = owner_progressed;
}

struct cap_job *cap_job_new(struct cap_jobs *t, const struct cap_execreq *r, const char *owner,
                            const char *req_id) {
  refresh_owner(t);
  return cap_job_create(&t->owner, r, owner, req_id);
}

/* Ladder jobs watch their directories with inotify, and libuv keeps one
 * inotify descriptor per loop, opened at the first watch and held until
 * the loop closes.  Opening it here, with a watch started and closed at
 * once, makes it part of the server's steady state (descriptor counts do
 * not change after the first ladder) and says at start-up, not at the
 * first ladder, when the kernel refuses one (fs.inotify.max_user_instances). */
static void on_probe_event(uv_fs_event_t *h, const char *name, int events, int status) {
  (void)h, (void)name, (void)events, (void)status;
}

static void open_inotify(struct cap_jobs *t) {
  char path[4096];
  int rc = uv_fs_event_init(t->loop, &t->inotify_probe);
  if (rc == 0) {
    rc = cap_store_tmp_path(t->store, ".", path, sizeof(path));
    if (rc == 0)
      rc = uv_fs_event_start(&t->inotify_probe, on_probe_event, path, 0);
    uv_close((uv_handle_t *)&t->inotify_probe, NULL);
  }
  if (rc != 0) {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "jobs.inotify_unavailable");
    cap_log_str(r, "error", uv_strerror(rc));
    cap_log_str(r, "effect", "ladder jobs fail until the kernel allows another inotify instance");
    cap_log_end(r);
  }
}

/* How long a ladder's cleanup may go on once the server stops. */
#define LADDER_STOP_CLEANUP_MS 2000

int cap_jobs_init(struct cap_jobs *t, uv_loop_t *loop, const struct cap_config *cfg,
                  struct cap_store *store) {
  memset(t, 0, sizeof(*t));
  t->loop = loop;
  t->cfg = cfg;
  t->store = store;
  /* Until the app says otherwise, objects live in the local store. */
  cap_objstore_init_ops(&t->file_os, &cap_objstore_file_ops, NULL, store);
  t->objstore = &t->file_os;
  t->nslots = 64;
  while (t->nslots < (size_t)cfg->jobs_max)
    t->nslots *= 2;
  t->slots = xcalloc(t->nslots, sizeof(*t->slots));
  cap_pool_init(&t->pool);
  int cpu = cfg->pool_cpu;
  if (cpu <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cpu = (int)((cores > 0 ? cores : 1) + 1) / 2;
  }
  cap_pool_set_class(&t->pool, "cpu", cpu, (size_t)cfg->queue_max);
  cap_pool_set_class(&t->pool, "nvenc", cfg->pool_nvenc, (size_t)cfg->queue_max);
  uv_timer_init(loop, &t->sweep);
  t->sweep.data = t;
  uv_timer_start(&t->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
  uv_unref((uv_handle_t *)&t->sweep);
  uv_check_init(loop, &t->deferred_check);
  t->deferred_check.data = t;
  uv_idle_init(loop, &t->deferred_idle);
  t->deferred_idle.data = t;
  uv_check_init(loop, &t->jr_check);
  t->jr_check.data = t;
  uv_idle_init(loop, &t->jr_idle);
  t->jr_idle.data = t;
  t->jr_open = 1;
  open_inotify(t);
  refresh_owner(t);
  return 0;
}

void cap_jobs_set_journal(struct cap_jobs *t, struct cap_journal *jr, struct cap_outbox *ob) {
  t->jr = jr;
  t->outbox = ob;
}

struct restore_ctx {
  struct cap_jobs *t;
  int64_t cutoff;
  size_t restored, interrupted, skipped, leftovers;
};

/* Makes one row's job again (or drops the row of one past its TTL). */
static void restore_row(void *arg, const struct cap_journal_job *row) {
  struct restore_ctx *c = arg;
  struct cap_jobs *t = c->t;
  int ended = row->finished_at > 0;
  /* An ended job that did not succeed may have left ladder objects whose
   * deletes did not finish; an interrupted one may have left anything. */
  if (!ended || strcmp(row->state, "succeeded") != 0) {
    cap_jobrecover_add(&t->recover, row);
    c->leftovers++;
  }
  if (ended && row->finished_at <= c->cutoff) {
    c->skipped++;
    return;
  }
  int interrupted;
  struct cap_job *j = cap_jobjournal_restore(&t->owner, row, &interrupted);
  if (j == NULL) {
    c->skipped++;
    return;
  }
  if (t->n >= (size_t)t->cfg->jobs_max && sweep(t, t->n + 1 - (size_t)t->cfg->jobs_max) == 0) {
    cap_job_free(j);
    c->skipped++;
    return;
  }
  link_job(t, j);
  c->restored++;
  if (interrupted) {
    c->interrupted++;
    t->failed++;
    cap_jobjournal_put(t->jr, j);
    notify(t, j, CAP_CB_FAILED, "job.failed");
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "job.interrupted");
    cap_log_str(r, "job_id", j->id);
    cap_log_str(r, "req_id", j->req_id);
    cap_log_str(r, "was", row->state);
    cap_log_str(r, "token_name", j->owner);
    cap_log_end(r);
  }
}

int cap_jobs_restore(struct cap_jobs *t) {
  if (t->jr == NULL)
    return 0;
  refresh_owner(t);
  cap_jobrecover_init(&t->recover, t->objstore, t->jr);
  struct restore_ctx c = {.t = t, .cutoff = wall_ms() - (int64_t)t->cfg->job_ttl_s * 1000};
  int rc = cap_journal_job_load(t->jr, restore_row, &c);
  cap_journal_job_purge(t->jr, c.cutoff);
  cap_jobrecover_start(&t->recover);
  struct cap_journal_stats st;
  cap_journal_stats(t->jr, &st);
  struct cap_log_rec *r =
      cap_log_begin(c.interrupted ? CAP_LOG_WARN : CAP_LOG_INFO, "journal.recovered");
  cap_log_str(r, "path", cap_journal_path(t->jr));
  cap_log_int(r, "jobs", (long long)c.restored);
  cap_log_int(r, "interrupted", (long long)c.interrupted);
  cap_log_int(r, "expired", (long long)c.skipped);
  cap_log_int(r, "cleanups", (long long)c.leftovers);
  cap_log_int(r, "aborted_uploads", (long long)t->recover.uploads_by_id);
  cap_log_int(r, "deleted_objects", (long long)t->recover.objects_queued);
  cap_log_int(r, "size_bytes", (long long)st.size_bytes);
  cap_log_end(r);
  return rc;
}

void cap_jobs_set_presets(struct cap_jobs *t, struct cap_presets *set) {
  struct cap_presets *old = t->presets;
  t->presets = set;
  /* A preset may name a class no pool has yet: give it one slot. */
  for (size_t i = 0; i < set->n; i++)
    if (cap_pool_find(&t->pool, set->v[i].cls) == NULL)
      cap_pool_set_class(&t->pool, set->v[i].cls, 1, (size_t)t->cfg->queue_max);
  cap_preset_set_free(old);
}

/* Returns 1 when a finished job has outlived its TTL (the sweep may not
 * have come by yet). */
static int expired(const struct cap_jobs *t, const struct cap_job *j) {
  return cap_job_done(j) && j->finished_at + (int64_t)t->cfg->job_ttl_s * 1000 <= wall_ms();
}

struct cap_job *cap_jobs_find(struct cap_jobs *t, const char *id) {
  struct cap_job *j = t->slots[hash(id) & (t->nslots - 1)];
  while (j && strcmp(j->id, id) != 0)
    j = j->hnext;
  return j && !expired(t, j) ? j : NULL;
}

struct cap_job *cap_jobs_find_idem(struct cap_jobs *t, const char *owner, const char *key) {
  for (struct cap_job *j = t->tail; j; j = j->prev) {
    if (j->idem_key == NULL || strcmp(j->idem_key, key) != 0 || strcmp(j->owner, owner) != 0)
      continue;
    /* An interrupted job never finished: its key starts a new run. */
    if (j->err == CAP_E_INTERRUPTED)
      return NULL;
    return expired(t, j) ? NULL : j;
  }
  return NULL;
}

struct cap_job *cap_jobs_prefix_holder(struct cap_jobs *t, const char *prefix) {
  size_t n = strlen(prefix);
  for (struct cap_job *j = t->head; j; j = j->next) {
    if (j->output_prefix == NULL || (cap_job_done(j) && !(j->pkg && cap_ladder_live(j->pkg))))
      continue;
    size_t m = strlen(j->output_prefix);
    if (strncmp(j->output_prefix, prefix, n < m ? n : m) == 0)
      return j;
  }
  return NULL;
}

int cap_jobs_submit(struct cap_jobs *t, struct cap_job *j) {
  int rc = cap_pool_can_take(&t->pool, j->cls);
  if (rc != 0)
    return rc;
  if (t->n >= (size_t)t->cfg->jobs_max && sweep(t, t->n + 1 - (size_t)t->cfg->jobs_max) == 0)
    return -ENOSPC;
  /* Linked first, so that the journal row written as it is queued is the
   * row of a job the table holds. */
  link_job(t, j);
  cap_job_attach(j);

  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "job.queued");
  cap_log_str(r, "job_id", j->id);
  cap_log_str(r, "req_id", j->req_id);
  cap_log_str(r, "capability", cap_execreq_capabilities[j->capability]);
  if (j->preset)
    cap_log_str(r, "preset", j->preset);
  cap_log_str(r, "class", j->cls);
  cap_log_str(r, "token_name", j->owner);
  cap_log_end(r);

  t->submitted++;
  rc = cap_pool_submit(&t->pool, j->cls, &j->pool_item);
  /* cap_pool_can_take said yes and nothing ran in between. */
  assert(rc == 0);
  return 0;
}

/* Returns 1 when every job is CLOSED; *undelivered counts the watched
 * jobs whose final state no client has been sent. */
static int all_closed(const struct cap_jobs *t, size_t *undelivered) {
  *undelivered = 0;
  for (const struct cap_job *j = t->head; j; j = j->next) {
    if (!cap_job_quiescent(j))
      return 0;
    if (j->drain_watch && !j->delivered)
      (*undelivered)++;
  }
  return 1;
}

static void close_deferred(struct cap_jobs *t) {
  if (uv_is_closing((uv_handle_t *)&t->deferred_check))
    return;
  uv_close((uv_handle_t *)&t->deferred_check, NULL);
  uv_close((uv_handle_t *)&t->deferred_idle, NULL);
  /* What is left goes now; later changes are written at once. */
  journal_flush(t);
  t->jr_open = 0;
  uv_close((uv_handle_t *)&t->jr_check, NULL);
  uv_close((uv_handle_t *)&t->jr_idle, NULL);
}

/* Calls on_idle while draining, and on_quiet (after closing the table's
 * handles) when stopping, once no job holds anything. */
static void check_quiet(struct cap_jobs *t) {
  size_t undelivered;
  if (t->on_idle == NULL && !t->stopping)
    return;
  if (!all_closed(t, &undelivered) || t->deferred_head)
    return;
  /* Each callback is taken before it runs when it is the last call: it may
   * stop the table, which comes back here. */
  if (t->on_idle) {
    void (*cb)(void *, size_t) = t->on_idle;
    if (undelivered == 0)
      t->on_idle = NULL;
    cb(t->idle_arg, undelivered);
  }
  if (t->stopping) {
    close_deferred(t);
    if (t->on_quiet) {
      void (*cb)(void *) = t->on_quiet;
      t->on_quiet = NULL;
      cb(t->quiet_arg);
    }
  }
}

void cap_jobs_drain(struct cap_jobs *t, void (*cb)(void *arg, size_t undelivered), void *arg) {
  for (struct cap_job *j = t->head; j; j = j->next)
    j->drain_watch = !cap_job_done(j);
  t->on_idle = cb;
  t->idle_arg = arg;
  check_quiet(t);
}

void cap_jobs_note_delivered(struct cap_jobs *t, struct cap_job *j) {
  if (j->delivered || !cap_job_done(j))
    return;
  j->delivered = 1;
  if (j->drain_watch && t->on_idle)
    check_quiet(t);
}

void cap_jobs_stop(struct cap_jobs *t) {
  t->stopping = 1;
  t->on_idle = NULL;
  for (struct cap_job *j = t->head; j; j = j->next) {
    /* Not the client's doing: the job fails as interrupted, which a retry
     * with the same key runs again, after the restart or elsewhere. */
    cap_job_cancel(j, CAP_E_INTERRUPTED);
    /* A failed ladder's cleanup against a bucket out of reach would hold
     * the exit for every key's retries. */
    if (j->pkg)
      cap_ladder_hurry(j->pkg, LADDER_STOP_CLEANUP_MS);
  }
  uv_close((uv_handle_t *)&t->sweep, NULL);
  cap_jobrecover_stop(&t->recover);
  check_quiet(t);
}

void cap_jobs_free(struct cap_jobs *t) {
  t->jr_open = 0;
  journal_flush(t);
  for (struct cap_job *j = t->head, *next; j; j = next) {
    next = j->next;
    cap_job_free(j);
  }
  t->head = t->tail = NULL;
  free(t->slots);
  t->slots = NULL;
  cap_pool_free(&t->pool);
  cap_preset_set_free(t->presets);
  t->presets = NULL;
}

void cap_jobs_counts(const struct cap_jobs *t, int *running, size_t *queued) {
  cap_pool_totals(&t->pool, running, queued);
}
