#include "jobwait.h"

#include "alloc.h"
#include "app.h"
#include "container.h"
#include "exchange.h"
#include "job.h"

#include <stdlib.h>
#include <uv.h>

struct jobwait {
  struct cap_job_waiter w;
  uv_timer_t timer;
  struct cap_exchange *x;
  struct cap_job *job;
  cap_jobwait_fn fn;
  int cancel_on_abort;
};

static void on_timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void end(struct jobwait *jw) {
  cap_job_remove_waiter(&jw->w);
  jw->x->abort_cb = NULL;
  jw->x->handler_data = NULL;
  uv_close((uv_handle_t *)&jw->timer, on_timer_closed);
}

static void on_job_done(struct cap_job_waiter *w) {
  struct jobwait *jw = container_of(w, struct jobwait, w);
  struct cap_exchange *x = jw->x;
  struct cap_job *j = jw->job;
  cap_jobwait_fn fn = jw->fn;
  end(jw);
  fn(x, j, 0);
}

static void on_timeout(uv_timer_t *t) {
  struct jobwait *jw = t->data;
  struct cap_exchange *x = jw->x;
  struct cap_job *j = jw->job;
  cap_jobwait_fn fn = jw->fn;
  end(jw);
  fn(x, j, 1);
}

static void on_abort(struct cap_exchange *x) {
  struct jobwait *jw = x->handler_data;
  struct cap_job *j = jw->job;
  int cancel = jw->cancel_on_abort;
  end(jw);
  if (cancel)
    cap_job_cancel(j, CAP_E_CANCELED);
}

void cap_jobwait_start(struct cap_exchange *x, struct cap_job *j, int seconds, cap_jobwait_fn fn,
                       int cancel_on_abort) {
  if (seconds <= 0 || cap_job_done(j)) {
    fn(x, j, !cap_job_done(j));
    return;
  }
  struct jobwait *jw = xcalloc(1, sizeof(*jw));
  jw->x = x;
  jw->job = j;
  jw->fn = fn;
  jw->cancel_on_abort = cancel_on_abort;
  jw->w.cb = on_job_done;
  uv_timer_init(x->app->jobs.loop, &jw->timer);
  jw->timer.data = jw;
  uv_timer_start(&jw->timer, on_timeout, (uint64_t)seconds * 1000, 0);
  cap_job_add_waiter(j, &jw->w);
  x->handler_data = jw;
  x->abort_cb = on_abort;
}
