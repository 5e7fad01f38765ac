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
  cap_buf_putc(b, '}');
  cap_exchange_send(x, 200);
}
