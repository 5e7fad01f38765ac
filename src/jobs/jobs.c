#include "jobs.h"

#include "alloc.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "preset.h"

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

int cap_jobs_init(struct cap_jobs *t, uv_loop_t *loop, const struct cap_config *cfg,
                  struct cap_store *store) {
  memset(t, 0, sizeof(*t));
  t->loop = loop;
  t->cfg = cfg;
  t->store = store;
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

int cap_jobs_submit(struct cap_jobs *t, struct cap_job *j) {
  int rc = cap_pool_can_take(&t->pool, j->cls);
  if (rc != 0)
    return rc;
  if (t->n >= (size_t)t->cfg->jobs_max && sweep(t, t->n + 1 - (size_t)t->cfg->jobs_max) == 0)
    return -ENOSPC;
  cap_job_attach(j, t->loop);
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

void cap_jobs_note_done(struct cap_jobs *t, struct cap_job *j) {
  const char *preset = j->preset ? j->preset : "ffprobe";
  if (j->state == CAP_JOB_SUCCEEDED)
    t->succeeded++;
  else if (j->state == CAP_JOB_FAILED)
    t->failed++;
  else
    t->canceled++;
  cap_metrics_inc(CAP_M_JOBS_FINISHED, CAP_LABELS(preset, cap_job_state_name(j->state)));
  if (j->finished_at >= j->created_at)
    cap_metrics_observe(CAP_M_JOB_DURATION, CAP_LABELS(preset),
                        (double)(j->finished_at - j->created_at) / 1000);
}

/* Returns 1 when no job has anything running; *undelivered counts the
 * watched jobs whose final state no client has been sent. */
static int all_quiet(const struct cap_jobs *t, size_t *undelivered) {
  *undelivered = 0;
  for (const struct cap_job *j = t->head; j; j = j->next) {
    if (j->proc_live || j->io_live || !cap_job_done(j))
      return 0;
    if (j->drain_watch && !j->delivered)
      (*undelivered)++;
  }
  return 1;
}

void cap_jobs_note_quiet(struct cap_jobs *t) {
  size_t undelivered;
  if (t->on_idle == NULL && (!t->stopping || t->on_quiet == NULL))
    return;
  if (!all_quiet(t, &undelivered))
    return;
  /* Each callback is taken before it runs when it is the last call: it may
   * stop the table, which comes back here. */
  if (t->on_idle) {
    void (*cb)(void *, size_t) = t->on_idle;
    if (undelivered == 0)
      t->on_idle = NULL;
    cb(t->idle_arg, undelivered);
  }
  if (t->stopping && t->on_quiet) {
    void (*cb)(void *) = t->on_quiet;
    t->on_quiet = NULL;
    cb(t->quiet_arg);
  }
}

void cap_jobs_drain(struct cap_jobs *t, void (*cb)(void *arg, size_t undelivered), void *arg) {
  for (struct cap_job *j = t->head; j; j = j->next)
    j->drain_watch = !cap_job_done(j);
  t->on_idle = cb;
  t->idle_arg = arg;
  cap_jobs_note_quiet(t);
}

void cap_jobs_note_delivered(struct cap_jobs *t, struct cap_job *j) {
  if (j->delivered || !cap_job_done(j))
    return;
  j->delivered = 1;
  if (j->drain_watch && t->on_idle)
    cap_jobs_note_quiet(t);
}

void cap_jobs_stop(struct cap_jobs *t) {
  t->stopping = 1;
  t->on_idle = NULL;
  for (struct cap_job *j = t->head; j; j = j->next)
    cap_job_cancel(j, "canceled");
  uv_close((uv_handle_t *)&t->sweep, NULL);
  cap_jobs_note_quiet(t);
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
