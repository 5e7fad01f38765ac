#include "jobs.h"

#include "alloc.h"
#include "config.h"
#include "container.h"
#include "log.h"
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
      unlink_job(t, j);
      cap_job_free(j);
      dropped++;
    }
  }
  return dropped;
}

static void on_sweep(uv_timer_t *timer) {
  sweep(timer->data, 0);
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

static void owner_closed(struct cap_job_owner *o, struct cap_job *j) {
  check_quiet(table_of(o));
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
  open_inotify(t);
  refresh_owner(t);
  return 0;
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
  for (struct cap_job *j = t->tail; j; j = j->prev)
    if (j->idem_key && strcmp(j->idem_key, key) == 0 && strcmp(j->owner, owner) == 0)
      return expired(t, j) ? NULL : j;
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
  cap_job_attach(j);
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
    cap_job_cancel(j, CAP_E_CANCELED);
    /* A failed ladder's cleanup against a bucket out of reach would hold
     * the exit for every key's retries. */
    if (j->pkg)
      cap_ladder_hurry(j->pkg, LADDER_STOP_CLEANUP_MS);
  }
  uv_close((uv_handle_t *)&t->sweep, NULL);
  check_quiet(t);
}

void cap_jobs_free(struct cap_jobs *t) {
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
