/* A job table on a private loop for test-job and test-jobs: a temp data
 * directory as the local store, and stand-in ffmpeg / ffprobe shell
 * scripts whose behaviour each test picks through the input's name, so
 * that jobs run real, short-lived children. */
#ifndef CAP_TEST_JOBTEST_H
#define CAP_TEST_JOBTEST_H

#include "check.h"
#include "config.h"
#include "execreq.h"
#include "job.h"
#include "jobs.h"
#include "preset.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

/* ffprobe: the file "mode" next to the script says what to do (children
 * get a filtered environment, so a file it is). */
#define JOBTEST_FFPROBE                                                                            \
  "#!/bin/sh\n"                                                                                    \
  "case \"$(cat \"${0%/*}/mode\" 2>/dev/null)\" in\n"                                              \
  "  sleep) exec sleep 30 ;;\n"                                                                    \
  "  fail) echo 'probe went wrong' >&2; exit 3 ;;\n"                                               \
  "esac\n"                                                                                         \
  "for a; do [ \"$a\" = format=duration ] && { echo 2.0; exit 0; }; done\n"                        \
  "echo '{\"format\":{\"filename\":\"pipe:3\",\"duration\":\"2.0\"},\"streams\":[]}'\n"

/* ffmpeg: writes a few bytes into the file its last argument names. */
#define JOBTEST_FFMPEG                                                                             \
  "#!/bin/sh\n"                                                                                    \
  "case \"$(cat \"${0%/*}/mode\" 2>/dev/null)\" in\n"                                              \
  "  render_sleep) exec sleep 30 ;;\n"                                                             \
  "  render_fail) echo 'render went wrong' >&2; exit 1 ;;\n"                                       \
  "esac\n"                                                                                         \
  "for a; do last=$a; done\n"                                                                      \
  "printf 'rendered' > \"${last#file:}\"\n"

struct jobtest {
  uv_loop_t loop;
  char dir[64];
  char ffmpeg[128], ffprobe[128];
  struct cap_config cfg;
  struct cap_store store;
  struct cap_jobs t;
  int quiet_calls;
};

static void jobtest_script(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!CHECK(f != NULL))
    return;
  fputs(text, f);
  fclose(f);
  chmod(path, 0700);
}

/* Picks what the stand-in programs do from now on: "" (succeed), "sleep",
 * "fail", "render_sleep" or "render_fail". */
static void jobtest_mode(struct jobtest *x, const char *mode) {
  char path[128];
  snprintf(path, sizeof(path), "%s/mode", x->dir);
  jobtest_script(path, mode);
}

/* Sets up the table with pool slots, timeout_s per job and ttl_s. */
static int jobtest_init(struct jobtest *x, int slots, int timeout_s, int ttl_s) {
  char err[256], path[128];
  memset(x, 0, sizeof(*x));
  snprintf(x->dir, sizeof(x->dir), "/tmp/test-job-XXXXXX");
  if (!CHECK(mkdtemp(x->dir) != NULL) || !CHECK_EQ_INT(uv_loop_init(&x->loop), 0))
    return -1;
  snprintf(x->ffmpeg, sizeof(x->ffmpeg), "%s/ffmpeg.sh", x->dir);
  snprintf(x->ffprobe, sizeof(x->ffprobe), "%s/ffprobe.sh", x->dir);
  jobtest_script(x->ffmpeg, JOBTEST_FFMPEG);
  jobtest_script(x->ffprobe, JOBTEST_FFPROBE);
  snprintf(path, sizeof(path), "%s/in.mp4", x->dir);
  jobtest_script(path, "not really a video\n");
  x->cfg.ffmpeg = x->ffmpeg;
  x->cfg.ffprobe = x->ffprobe;
  x->cfg.pool_cpu = slots;
  x->cfg.queue_max = 16;
  x->cfg.jobs_max = 8;
  x->cfg.job_timeout_s = timeout_s;
  x->cfg.job_ttl_s = ttl_s;
  x->cfg.output_max_mb = 64;
  x->cfg.input_max_mb = 64;
  x->cfg.parts_in_flight = 1;
  if (!CHECK_EQ_INT(cap_store_open(&x->store, x->dir, err, sizeof(err)), 0))
    return -1;
  cap_jobs_init(&x->t, &x->loop, &x->cfg, &x->store);
  struct cap_presets *set = NULL;
  const char *json = "{\"t\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}";
  if (!CHECK_EQ_INT(cap_preset_parse(json, strlen(json), &set, err, sizeof(err)), 0))
    return -1;
  cap_jobs_set_presets(&x->t, set);
  return 0;
}

/* Makes and submits a probe (preset NULL) or a render of in.mp4. */
static struct cap_job *jobtest_submit(struct jobtest *x, const char *preset, const char *idem,
                                      const char *owner) {
  char in[] = "in.mp4", out[] = "out/o.mp4";
  struct cap_execreq r = {.capability = preset ? CAP_CAP_FFMPEG_RENDER : CAP_CAP_FFPROBE,
                          .input_key = in,
                          .output_key = preset ? out : NULL,
                          .preset = (char *)preset,
                          .wait_s = -1,
                          .idempotency_key = (char *)idem};
  struct cap_job *j = cap_job_new(&x->t, &r, owner ? owner : "tok", "req-1");
  if (!CHECK_EQ_INT(cap_jobs_submit(&x->t, j), 0)) {
    cap_job_free(j);
    return NULL;
  }
  return j;
}

/* Runs the loop until j is CLOSED or max_ms pass; returns 1 when it is. */
static int jobtest_run_until_closed(struct jobtest *x, struct cap_job *j, int max_ms) {
  uint64_t end = uv_now(&x->loop) + (uint64_t)max_ms;
  while (!cap_job_quiescent(j) && uv_now(&x->loop) < end)
    uv_run(&x->loop, UV_RUN_ONCE);
  return cap_job_quiescent(j);
}

static void jobtest_on_quiet(void *arg) {
  ((struct jobtest *)arg)->quiet_calls++;
}

/* Stops the table, runs the loop out, and checks that nothing was left. */
static void jobtest_free(struct jobtest *x) {
  char cmd[128];
  x->t.on_quiet = jobtest_on_quiet;
  x->t.quiet_arg = x;
  cap_jobs_stop(&x->t);
  uv_run(&x->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(x->quiet_calls, 1);
  CHECK_EQ_INT(uv_loop_close(&x->loop), 0);
  cap_jobs_free(&x->t);
  cap_store_close(&x->store);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", x->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "  could not remove %s\n", x->dir);
}

#endif
