#include "metricsroute.h"

#include "app.h"
#include "exchange.h"
#include "jobs.h"
#include "metrics.h"

#include <uv.h>

/* Gauges of things other modules own are read here, at scrape time, so
 * that nothing has to keep them up to date on every change. */
static void refresh(struct cap_app *app) {
  const struct cap_jobs *jobs = &app->jobs;
  uint64_t now = uv_now(app->loop);
  double by_state[3] = {0, 0, 0};

  cap_metrics_set(CAP_M_UPTIME, NULL,
                  now > app->start_ms ? (double)(now - app->start_ms) / 1000 : 0);
  cap_metrics_set(CAP_M_DRAINING, NULL, app->draining ? 1 : 0);
  for (const struct cap_job *j = jobs->head; j; j = j->next) {
    if (j->state == CAP_JOB_QUEUED)
      by_state[0]++;
    else if (j->state == CAP_JOB_RUNNING)
      by_state[1]++;
    else if (j->state == CAP_JOB_UPLOADING)
      by_state[2]++;
  }
  cap_metrics_set(CAP_M_JOBS, CAP_LABELS("queued"), by_state[0]);
  cap_metrics_set(CAP_M_JOBS, CAP_LABELS("running"), by_state[1]);
  cap_metrics_set(CAP_M_JOBS, CAP_LABELS("uploading"), by_state[2]);
  /* A preset reload may drop a class: start the pool gauges afresh. */
  cap_metrics_clear(CAP_M_POOL_SLOTS);
  cap_metrics_clear(CAP_M_POOL_RUNNING);
  cap_metrics_clear(CAP_M_POOL_QUEUED);
  for (size_t i = 0; i < jobs->pool.n; i++) {
    const struct cap_pool_class *c = jobs->pool.v[i];
    cap_metrics_set(CAP_M_POOL_SLOTS, CAP_LABELS(c->name), c->slots);
    cap_metrics_set(CAP_M_POOL_RUNNING, CAP_LABELS(c->name), c->busy);
    cap_metrics_set(CAP_M_POOL_QUEUED, CAP_LABELS(c->name), (double)c->queued);
  }
}

void cap_metricsroute_handle(struct cap_exchange *x) {
  refresh(x->app);
  cap_buf_reset(&x->body);
  cap_metrics_render(&x->body);
  x->content_type = "text/plain; version=0.0.4; charset=utf-8";
  cap_exchange_send(x, 200);
}
