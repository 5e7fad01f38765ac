#include "jobprogress.h"

#include "check.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

/* A job as far as progress reports need one: its progress and ids. */
struct job {
  struct cap_job_progress progress;
  uv_loop_t *loop;
};

static void make_job(struct job *j) {
  memset(j, 0, sizeof(*j));
  j->loop = uv_default_loop();
}

static void note(struct job *j, const char *key, const char *val) {
  cap_jobprogress_note(&j->progress, "job-1", "req-1", uv_now(j->loop), key, val);
}

static void test_fields(void) {
  struct job j;
  make_job(&j);
  note(&j, "frame", "250");
  note(&j, "fps", "49.5");
  note(&j, "out_time_us", "5000000");
  /* out_time_ms is in microseconds too (an ffmpeg quirk); only _us counts. */
  note(&j, "out_time_ms", "999");
  note(&j, "total_size", "1048576");
  note(&j, "speed", "1.98x");
  note(&j, "unknown_key", "whatever");
  CHECK_EQ_INT(j.progress.frame, 250);
  CHECK(j.progress.fps > 49.4 && j.progress.fps < 49.6);
  CHECK_EQ_INT(j.progress.out_time_us, 5000000);
  CHECK_EQ_INT(j.progress.total_size, 1048576);
  CHECK_EQ_STR(j.progress.speed, "1.98x");
  /* A speed longer than the field is cut, not overflowed. */
  note(&j, "speed", "123456789012345678901234567890x");
  CHECK_EQ_INT((long long)strlen(j.progress.speed), (long long)sizeof(j.progress.speed) - 1);
}

static void test_percent(void) {
  struct job j;
  make_job(&j);
  /* Unknown duration or no output yet: 0. */
  CHECK(cap_jobprogress_percent(&j.progress, 0) == 0.0);
  j.progress.input_duration_s = 10.0;
  CHECK(cap_jobprogress_percent(&j.progress, 0) == 0.0);
  j.progress.out_time_us = 2500000;
  CHECK(cap_jobprogress_percent(&j.progress, 0) > 24.99 &&
        cap_jobprogress_percent(&j.progress, 0) < 25.01);
  /* ffmpeg may run past the probed duration: capped. */
  j.progress.out_time_us = 12000000;
  CHECK(cap_jobprogress_percent(&j.progress, 0) == 100.0);
  j.progress.out_time_us = 1;
  CHECK(cap_jobprogress_percent(&j.progress, 1) == 100.0);
}

/* job.progress is logged at the end of a block, at most every 10 s. */
static void test_log_rate(void) {
  char path[] = "/tmp/test-jobprogress-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  CHECK_EQ_INT(cap_log_open(path), 0);
  struct job j;
  make_job(&j);
  uv_update_time(j.loop);
  j.progress.last_log = 0;
  j.progress.input_duration_s = 4.0;
  note(&j, "out_time_us", "1000000");
  /* The loop's clock starts far above 10 s on a machine that has been up. */
  j.progress.last_log = uv_now(j.loop) - 20000;
  note(&j, "progress", "continue");
  note(&j, "progress", "continue"); /* Too soon: not logged. */
  cap_log_flush();
  cap_log_close();
  FILE *f = fopen(path, "r");
  char line[1024];
  int n = 0, pct = 0;
  while (f && fgets(line, sizeof(line), f)) {
    if (strstr(line, "\"event\":\"job.progress\"")) {
      n++;
      pct += strstr(line, "\"percent\":25") != NULL;
      CHECK(strstr(line, "\"job_id\":\"job-1\"") != NULL);
    }
  }
  if (f)
    fclose(f);
  unlink(path);
  CHECK_EQ_INT(n, 1);
  CHECK_EQ_INT(pct, 1);
}

int main(void) {
  test_fields();
  test_percent();
  test_log_rate();
  return check_report();
}
