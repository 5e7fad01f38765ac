#include "health.h"

#include "app.h"
#include "exchange.h"
#include "execreq.h"
#include "jobs.h"
#include "preset.h"
#include "jsonw.h"
#include "version.h"

#include <string.h>

/* Pool and queue figures and which presets can run here. */
static void jobs_json(const struct cap_app *app, struct cap_buf *b) {
  const struct cap_jobs *jobs = &app->jobs;
  const struct cap_presets *set = jobs->presets;
  int running;
  size_t queued;
  cap_jobs_counts(jobs, &running, &queued);
  cap_buf_printf(b, ",\"jobs\":{\"running\":%d,\"queued\":%zu,\"slots\":{", running, queued);
  for (size_t i = 0; i < jobs->pool.n; i++) {
    const struct cap_pool_class *c = jobs->pool.v[i];
    if (i)
      cap_buf_putc(b, ',');
    cap_jsonw_str(b, c->name, strlen(c->name));
    cap_buf_printf(b, ":{\"size\":%d,\"busy\":%d,\"queued\":%zu,\"queue_max\":%zu}", c->slots,
                   c->busy, c->queued, c->queue_max);
  }
  cap_buf_puts(b, "}},\"presets\":{\"available\":[");
  for (int want = 1; want >= 0; want--) {
    int first = 1;
    for (size_t i = 0; set && i < set->n; i++) {
      if (set->v[i].available != want)
        continue;
      if (!first)
        cap_buf_putc(b, ',');
      first = 0;
      cap_jsonw_str(b, set->v[i].name, strlen(set->v[i].name));
    }
    cap_buf_puts(b, want ? "],\"unavailable\":[" : "]}");
  }
}

/* Returns 1 when jobs can run in class c: ffprobe and the default class
 * is cpu, others only count when an available preset uses them (Debian's
 * ffmpeg lists NVENC on machines without a GPU). */
static int class_usable(const struct cap_app *app, const struct cap_pool_class *c) {
  const struct cap_presets *set = app->jobs.presets;
  if (strcmp(c->name, "cpu") == 0)
    return 1;
  for (size_t i = 0; set && i < set->n; i++)
    if (set->v[i].available && strcmp(set->v[i].cls, c->name) == 0)
      return 1;
  return 0;
}

void cap_health_load(const struct cap_app *app, struct cap_buf *out) {
  const struct cap_pool *pool = &app->jobs.pool;
  int running, slots = 0;
  size_t queued;
  cap_jobs_counts(&app->jobs, &running, &queued);
  for (size_t i = 0; i < pool->n; i++)
    if (class_usable(app, pool->v[i]))
      slots += pool->v[i]->slots;
  long long free_slots = (long long)slots - running - (long long)queued;
  cap_buf_printf(out, "{\"running\":%d,\"queued\":%zu,\"slots\":%d,\"free\":%lld,\"classes\":{",
                 running, queued, slots, free_slots > 0 ? free_slots : 0);
  for (size_t i = 0; i < pool->n; i++) {
    const struct cap_pool_class *c = pool->v[i];
    if (i)
      cap_buf_putc(out, ',');
    cap_jsonw_str(out, c->name, strlen(c->name));
    long long cfree = (long long)c->slots - c->busy - (long long)c->queued;
    cap_buf_printf(out, ":{\"slots\":%d,\"running\":%d,\"queued\":%zu,\"free\":%lld,\"usable\":%s}",
                   c->slots, c->busy, c->queued, cfree > 0 ? cfree : 0,
                   class_usable(app, c) ? "true" : "false");
  }
  cap_buf_printf(out, "},\"draining\":%s}", app->draining ? "true" : "false");
}

void cap_health_describe(const struct cap_app *app, struct cap_buf *out) {
  const struct cap_presets *set = app->jobs.presets;
  const struct cap_pool *pool = &app->jobs.pool;
  int first = 1;
  cap_buf_puts(out, ",\"version\":\"" CAP_VERSION "\",\"presets\":[");
  for (size_t i = 0; set && i < set->n; i++) {
    if (!set->v[i].available)
      continue;
    if (!first)
      cap_buf_putc(out, ',');
    first = 0;
    cap_jsonw_str(out, set->v[i].name, strlen(set->v[i].name));
  }
  cap_buf_puts(out, "],\"pools\":{");
  first = 1;
  for (size_t i = 0; i < pool->n; i++) {
    if (!class_usable(app, pool->v[i]))
      continue;
    if (!first)
      cap_buf_putc(out, ',');
    first = 0;
    cap_jsonw_str(out, pool->v[i]->name, strlen(pool->v[i]->name));
    cap_buf_printf(out, ":{\"slots\":%d}", pool->v[i]->slots);
  }
  cap_buf_putc(out, '}');
}

void cap_health_handle(struct cap_exchange *x) {
  struct cap_buf *b = &x->body;
  uint64_t now = x->start_ms;
  uint64_t up = now > x->app->start_ms ? (now - x->app->start_ms) / 1000 : 0;

  /* Written by hand: this is the hottest route and cJSON would allocate
   * a tree per request for a fixed shape. */
  cap_buf_reset(b);
  cap_buf_puts(b, x->app->draining ? "{\"status\":\"draining\",\"capabilities\":["
                                   : "{\"status\":\"ok\",\"capabilities\":[");
  for (size_t i = 0; cap_execreq_capabilities[i]; i++) {
    if (i)
      cap_buf_putc(b, ',');
    cap_jsonw_str(b, cap_execreq_capabilities[i], strlen(cap_execreq_capabilities[i]));
  }
  cap_buf_printf(b, "],\"version\":\"%s\",\"uptime_s\":%llu,\"draining\":%s", CAP_VERSION,
                 (unsigned long long)up, x->app->draining ? "true" : "false");
  jobs_json(x->app, b);
  cap_buf_puts(b, ",\"storage\":");
  cap_storage_health(&x->app->storage, b);
  cap_buf_puts(b, ",\"sandbox\":");
  cap_sandbox_json(&x->app->sandbox, b);
  cap_buf_putc(b, '}');
  cap_exchange_send(x, 200);
}
