#ifndef CAP_JOBPROGRESS_H
#define CAP_JOBPROGRESS_H

struct cap_job;

/* ffmpeg's -progress reports for a job: each key=value block updates the
 * job's progress (out_time_us, frame, fps, speed, total_size), and a
 * block's end ("progress=continue|end") logs job.progress at most every
 * ten seconds. */

/* Takes one key=value of j's ffmpeg progress report. */
void cap_jobprogress_note(struct cap_job *j, const char *key, const char *val);
/* Returns how far j is, 0 to 100, from ffmpeg's out_time against the
 * input's duration (0 when either is unknown; 100 once it succeeded). */
double cap_jobprogress_percent(const struct cap_job *j);

#endif
