#ifndef CAP_JOBPROGRESS_H
#define CAP_JOBPROGRESS_H

#include <stdint.h>

/* ffmpeg's -progress reports for a job: each key=value block updates the
 * job's progress (out_time_us, frame, fps, speed, total_size), and a
 * block's end ("progress=continue|end") logs job.progress at most every
 * ten seconds. */

struct cap_job_progress {
  double input_duration_s; /* From a probe of the input; 0 when unknown. */
  int64_t out_time_us;
  int64_t frame;
  int64_t total_size;
  double fps;
  char speed[16];
  uint64_t last_log; /* Loop time (ms) of the last job.progress line. */
};

/* Takes one key=value of ffmpeg's progress report into g; at a block's
 * end, logs job.progress for job_id and req_id when the last line is ten
 * seconds older than now (the loop's clock, ms). */
void cap_jobprogress_note(struct cap_job_progress *g, const char *job_id, const char *req_id,
                          uint64_t now, const char *key, const char *val);
/* Returns how far the render is, 0 to 100, from ffmpeg's out_time against
 * the input's duration (0 when either is unknown; 100 once succeeded). */
double cap_jobprogress_percent(const struct cap_job_progress *g, int succeeded);

#endif
