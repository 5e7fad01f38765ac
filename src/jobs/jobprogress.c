#include "jobprogress.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often job.progress lines are logged at most: often enough to follow
 * a long render, rarely enough not to flood the journal. */
#define PROGRESS_LOG_MS 10000

static void log_progress(const struct cap_job_progress *g, const char *job_id, const char *req_id) {
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "job.progress");
  cap_log_str(r, "job_id", job_id);
  cap_log_str(r, "req_id", req_id);
  cap_log_int(r, "out_time_us", g->out_time_us);
  if (g->input_duration_s > 0)
    cap_log_double(r, "percent", cap_jobprogress_percent(g, 0));
  cap_log_double(r, "fps", g->fps);
  cap_log_str(r, "speed", g->speed);
  cap_log_int(r, "total_size", g->total_size);
  cap_log_end(r);
}

void cap_jobprogress_note(struct cap_job_progress *g, const char *job_id, const char *req_id,
                          uint64_t now, const char *key, const char *val) {
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
  else if (strcmp(key, "progress") == 0 && now - g->last_log >= PROGRESS_LOG_MS) {
    g->last_log = now;
    log_progress(g, job_id, req_id);
  }
}

double cap_jobprogress_percent(const struct cap_job_progress *g, int succeeded) {
  if (succeeded)
    return 100.0;
  if (g->input_duration_s <= 0 || g->out_time_us <= 0)
    return 0.0;
  double pct = (double)g->out_time_us / (g->input_duration_s * 1e6) * 100.0;
  return pct > 100.0 ? 100.0 : pct;
}
