#include "jobprogress.h"

#include "job.h"
#include "jobs.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often job.progress lines are logged at most: often enough to follow
 * a long render, rarely enough not to flood the journal. */
#define PROGRESS_LOG_MS 10000

void cap_jobprogress_note(struct cap_job *j, const char *key, const char *val) {
  struct cap_job_progress *g = &j->progress;
  if (strcmp(key, "out_time_us") == 0)
    g->out_time_us = strtoll(val, NULL, 10);
  else if (strcmp(key, "frame") == 0)
    g->frame = strtoll(val, NULL, 10);
  else if (strcmp(key, "total_size") == 0)
    g->total_size = strtoll(val, NULL, 10);
  else if (strcmp(key, "fps") == 0)
    g->fps = strtod(val, NULL);
  else if (strcmp(key, "speed") == 0)
    snprintf(g->speed, sizeof(g->speed), "%s", val);
  else if (strcmp(key, "progress") == 0) {
    uint64_t now = uv_now(j->jobs->loop);
    if (now - j->last_progress_log < PROGRESS_LOG_MS)
      return;
    j->last_progress_log = now;
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "job.progress");
    cap_log_str(r, "job_id", j->id);
    cap_log_str(r, "req_id", j->req_id);
    cap_log_int(r, "out_time_us", g->out_time_us);
    if (g->input_duration_s > 0)
      cap_log_double(r, "percent", cap_jobprogress_percent(j));
    cap_log_double(r, "fps", g->fps);
    cap_log_str(r, "speed", g->speed);
    cap_log_int(r, "total_size", g->total_size);
    cap_log_end(r);
  }
}

double cap_jobprogress_percent(const struct cap_job *j) {
  const struct cap_job_progress *g = &j->progress;
  if (j->state == CAP_JOB_SUCCEEDED)
    return 100.0;
  if (g->input_duration_s <= 0 || g->out_time_us <= 0)
    return 0.0;
  double pct = (double)g->out_time_us / (g->input_duration_s * 1e6) * 100.0;
  return pct > 100.0 ? 100.0 : pct;
}
