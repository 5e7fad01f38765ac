#include "job.h"

#include "check.h"
#include "container.h"
#include "jobtest.h"
#include "log.h"
#include "metrics.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* A waiter that counts its calls; the job is unlinked before each. */
struct waited {
  struct cap_job_waiter w;
  int calls;
  int linked; /* w.job was still set when it was called. */
};

static void on_waited(struct cap_job_waiter *w) {
  struct waited *d = container_of(w, struct waited, w);
  d->calls++;
  d->linked = w->job != NULL;
}

static double gauge(const char *state) {
  return cap_metrics_value(CAP_M_JOBS, CAP_LABELS(state));
}

/* The table of transitions: the arrows of job.h, and nothing else. */
static void test_transitions(void) {
  static const struct {
    enum cap_job_stage from, to;
  } allowed[] = {
      {CAP_JOB_S_NEW, CAP_JOB_S_QUEUED},         {CAP_JOB_S_QUEUED, CAP_JOB_S_FETCHING},
      {CAP_JOB_S_QUEUED, CAP_JOB_S_PROBING},     {CAP_JOB_S_QUEUED, CAP_JOB_S_MEASURING},
      {CAP_JOB_S_QUEUED, CAP_JOB_S_CANCELED},    {CAP_JOB_S_FETCHING, CAP_JOB_S_MEASURING},
      {CAP_JOB_S_FETCHING, CAP_JOB_S_FAILED},    {CAP_JOB_S_PROBING, CAP_JOB_S_DETECTING},
      {CAP_JOB_S_PROBING, CAP_JOB_S_SUCCEEDED},  {CAP_JOB_S_MEASURING, CAP_JOB_S_RENDERING},
      {CAP_JOB_S_DETECTING, CAP_JOB_S_FAILED},   {CAP_JOB_S_RENDERING, CAP_JOB_S_STORING},
      {CAP_JOB_S_RENDERING, CAP_JOB_S_CANCELED}, {CAP_JOB_S_STORING, CAP_JOB_S_SUCCEEDED},
      {CAP_JOB_S_STORING, CAP_JOB_S_FAILED},     {CAP_JOB_S_SUCCEEDED, CAP_JOB_S_CLOSED},
      {CAP_JOB_S_FAILED, CAP_JOB_S_CLOSED},      {CAP_JOB_S_CANCELED, CAP_JOB_S_CLOSED},
  };
  static const struct {
    enum cap_job_stage from, to;
  } refused[] = {
      {CAP_JOB_S_NEW, CAP_JOB_S_RENDERING},     /* Not before the table has it. */
      {CAP_JOB_S_NEW, CAP_JOB_S_CANCELED},      /* Nothing to cancel yet. */
      {CAP_JOB_S_QUEUED, CAP_JOB_S_SUCCEEDED},  /* Success needs a child. */
      {CAP_JOB_S_QUEUED, CAP_JOB_S_RENDERING},  /* A render is measured first. */
      {CAP_JOB_S_PROBING, CAP_JOB_S_RENDERING}, /* A probe never renders. */
      {CAP_JOB_S_DETECTING, CAP_JOB_S_SUCCEEDED},
      {CAP_JOB_S_RENDERING, CAP_JOB_S_SUCCEEDED}, /* The output is stored first. */
      {CAP_JOB_S_STORING, CAP_JOB_S_RENDERING},
      {CAP_JOB_S_SUCCEEDED, CAP_JOB_S_FAILED}, /* The first outcome stands. */
      {CAP_JOB_S_CANCELED, CAP_JOB_S_SUCCEEDED},
      {CAP_JOB_S_FAILED, CAP_JOB_S_QUEUED},
      {CAP_JOB_S_RENDERING, CAP_JOB_S_CLOSED}, /* Only an ended job closes. */
      {CAP_JOB_S_CLOSED, CAP_JOB_S_CLOSED},
      {CAP_JOB_S_CLOSED, CAP_JOB_S_QUEUED},
      {CAP_JOB_S_QUEUED, CAP_JOB_S__COUNT},
  };
  for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
    if (!CHECK(cap_jobstage_may_move(allowed[i].from, allowed[i].to)))
      fprintf(stderr, "  %s -> %s refused\n", cap_jobstage_name(allowed[i].from),
              cap_jobstage_name(allowed[i].to));
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
    if (!CHECK(!cap_jobstage_may_move(refused[i].from, refused[i].to)))
      fprintf(stderr, "  %s -> %d allowed\n", cap_jobstage_name(refused[i].from),
              (int)refused[i].to);
  /* Every stage before an outcome may fail or be canceled, but NEW. */
  for (int s = CAP_JOB_S_QUEUED; s < CAP_JOB_S_SUCCEEDED; s++) {
    CHECK(cap_jobstage_may_move((enum cap_job_stage)s, CAP_JOB_S_FAILED));
    CHECK(cap_jobstage_may_move((enum cap_job_stage)s, CAP_JOB_S_CANCELED));
  }
  CHECK_EQ_STR(cap_jobstage_name(CAP_JOB_S_MEASURING), "measuring");
  CHECK_EQ_STR(cap_jobstage_state_name(CAP_JOB_UPLOADING), "uploading");
}

/* A probe that succeeds: the waiter hears of it on a later loop turn,
 * and the job closes once its timer has. */
static void test_probe_succeeds(void) {
  struct jobtest x;
  if (jobtest_init(&x, 1, 30, 600) != 0)
    return;
  jobtest_mode(&x, "");
  struct cap_job *j = jobtest_submit(&x, NULL, NULL, NULL);
  if (!j)
    return;
  CHECK_EQ_INT(j->stage, CAP_JOB_S_PROBING);
  CHECK_EQ_INT(j->state, CAP_JOB_RUNNING);
  CHECK(strlen(j->id) == CAP_JOB_ID_LEN);
  struct waited d = {.w.cb = on_waited};
  cap_job_add_waiter(j, &d.w);
  CHECK(jobtest_run_until_closed(&x, j, 10000));
  CHECK_EQ_INT(d.calls, 1);
  CHECK_EQ_INT(d.linked, 0);
  CHECK_EQ_INT(j->state, CAP_JOB_SUCCEEDED);
  CHECK(j->probe_json != NULL && strstr(j->probe_json, "\"filename\":\"in.mp4\"") != NULL);
  CHECK_EQ_INT(j->err, CAP_E_NONE);
  CHECK_EQ_INT(x.t.succeeded, 1);
  CHECK_EQ_INT(j->pool_item.state, 0);
  jobtest_free(&x);
}

/* A render on the local store: measured, rendered, stored, succeeded. */
static void test_render_succeeds(void) {
  struct jobtest x;
  char path[160];
  if (jobtest_init(&x, 1, 30, 600) != 0)
    return;
  jobtest_mode(&x, "");
  struct cap_job *j = jobtest_submit(&x, "t", NULL, NULL);
  if (!j)
    return;
  CHECK_EQ_INT(j->stage, CAP_JOB_S_MEASURING);
  CHECK(jobtest_run_until_closed(&x, j, 10000));
  CHECK_EQ_INT(j->state, CAP_JOB_SUCCEEDED);
  CHECK_EQ_INT((long long)j->bytes, 8);
  CHECK(j->progress.input_duration_s > 1.9 && j->progress.input_duration_s < 2.1);
  snprintf(path, sizeof(path), "%s/out/o.mp4", x.dir);
  CHECK(access(path, F_OK) == 0);
  jobtest_free(&x);
}

/* A child that exits non-zero fails the job with its stderr. */
static void test_child_fails(void) {
  struct jobtest x;
  if (jobtest_init(&x, 1, 30, 600) != 0)
    return;
  jobtest_mode(&x, "fail");
  struct cap_job *j = jobtest_submit(&x, NULL, NULL, NULL);
  if (!j)
    return;
  CHECK(jobtest_run_until_closed(&x, j, 10000));
  CHECK_EQ_INT(j->state, CAP_JOB_FAILED);
  CHECK_EQ_STR(cap_err_code(j->err), "ffmpeg_failed");
  CHECK_EQ_INT(cap_err_status(j->err), 502);
  CHECK_EQ_INT(j->exit_status, 3);
  CHECK(j->stderr_tail && strstr(j->stderr_tail, "probe went wrong"));
  CHECK_EQ_STR(j->err_msg, "ffprobe exited with status 3");

  /* A failed render names ffmpeg. */
  jobtest_mode(&x, "render_fail");
  j = jobtest_submit(&x, "t", NULL, NULL);
  if (j && CHECK(jobtest_run_until_closed(&x, j, 10000))) {
    CHECK_EQ_INT(j->state, CAP_JOB_FAILED);
    CHECK_EQ_STR(j->err_msg, "ffmpeg exited with status 1");
  }
  CHECK_EQ_INT(x.t.failed, 2);
  jobtest_free(&x);
}

/* Canceling a queued job and a running one; the canceled running job's
 * slot goes to the queued one only once its child has been reaped. */
static void test_cancel(void) {
  struct jobtest x;
  if (jobtest_init(&x, 1, 30, 600) != 0)
    return;
  jobtest_mode(&x, "render_sleep");
  double running0 = gauge("running"), queued0 = gauge("queued");
  struct cap_job *a = jobtest_submit(&x, "t", NULL, NULL);
  struct cap_job *b = jobtest_submit(&x, "t", NULL, NULL);
  struct cap_job *c = jobtest_submit(&x, "t", NULL, NULL);
  if (!a || !b || !c)
    return;
  CHECK_EQ_INT(b->stage, CAP_JOB_S_QUEUED);
  CHECK(gauge("running") == running0 + 1);
  CHECK(gauge("queued") == queued0 + 2);
  while (a->stage != CAP_JOB_S_RENDERING && !cap_job_done(a))
    uv_run(&x.loop, UV_RUN_ONCE);
  CHECK_EQ_INT(a->stage, CAP_JOB_S_RENDERING);

  /* Queued: canceled at once, its waiter told on a later turn. */
  struct waited d = {.w.cb = on_waited};
  cap_job_add_waiter(b, &d.w);
  cap_job_cancel(b, CAP_E_CANCELED);
  CHECK_EQ_INT(b->state, CAP_JOB_CANCELED);
  CHECK_EQ_STR(cap_err_code(b->err), "canceled");
  CHECK_EQ_INT(cap_err_status(b->err), 409);
  CHECK_EQ_INT(d.calls, 0);
  cap_job_cancel(b, CAP_E_TIMEOUT); /* The first outcome stands. */
  CHECK_EQ_INT(b->state, CAP_JOB_CANCELED);
  CHECK(jobtest_run_until_closed(&x, b, 5000));
  CHECK_EQ_INT(d.calls, 1);
  CHECK(gauge("queued") == queued0 + 1);

  /* Running: killed; c waits for a's child to be reaped. */
  cap_job_cancel(a, CAP_E_CANCELED);
  CHECK_EQ_INT(a->state, CAP_JOB_CANCELED);
  CHECK_EQ_INT(a->stage, CAP_JOB_S_CANCELED);
  CHECK_EQ_INT(a->child_running, 1);
  CHECK_EQ_INT(c->stage, CAP_JOB_S_QUEUED);
  /* A progress line the killed child left in its pipe changes nothing:
   * the job shows the progress it had when it was canceled. */
  CHECK(a->proc.on_progress != NULL);
  int64_t seen_us = a->progress.out_time_us;
  if (a->proc.on_progress)
    a->proc.on_progress(&a->proc, "out_time_us", "987654321");
  CHECK(a->progress.out_time_us == seen_us);
  CHECK(jobtest_run_until_closed(&x, a, 5000));
  CHECK_EQ_INT(a->term_signal, 9);
  CHECK(c->stage != CAP_JOB_S_QUEUED);
  CHECK_EQ_INT(x.t.canceled, 2);
  jobtest_free(&x); /* Stops c: it fails as interrupted, not canceled. */
  CHECK_EQ_INT(x.t.canceled, 2);
  CHECK_EQ_INT(x.t.failed, 1);
}

/* A job past its time limit fails with "timeout" and its child is killed. */
static void test_timeout(void) {
  struct jobtest x;
  if (jobtest_init(&x, 1, 1, 600) != 0)
    return;
  jobtest_mode(&x, "sleep");
  struct cap_job *j = jobtest_submit(&x, NULL, NULL, NULL);
  if (!j)
    return;
  CHECK(jobtest_run_until_closed(&x, j, 5000));
  CHECK_EQ_INT(j->state, CAP_JOB_FAILED);
  CHECK_EQ_STR(cap_err_code(j->err), "timeout");
  CHECK_EQ_INT(cap_err_status(j->err), 504);
  CHECK_EQ_INT(j->term_signal, 9);
  jobtest_free(&x);
}

/* A missing input fails the job while it starts, before any child. */
static void test_missing_input(void) {
  struct jobtest x;
  char path[160];
  if (jobtest_init(&x, 1, 30, 600) != 0)
    return;
  snprintf(path, sizeof(path), "%s/in.mp4", x.dir);
  unlink(path);
  struct cap_job *j = jobtest_submit(&x, NULL, NULL, NULL);
  if (!j)
    return;
  CHECK_EQ_INT(j->state, CAP_JOB_FAILED);
  CHECK_EQ_STR(cap_err_code(j->err), "input_not_found");
  CHECK_EQ_INT(j->child_running, 0);
  CHECK(!cap_job_quiescent(j)); /* Its slot and timer go on a later turn. */
  CHECK(jobtest_run_until_closed(&x, j, 5000));
  jobtest_free(&x);
}

/* Every move is logged at debug level as job.state with from and to. */
static void test_state_log(void) {
  char path[] = "/tmp/test-job-log-XXXXXX", line[2048];
  int fd = mkstemp(path);
  if (!CHECK(fd >= 0))
    return;
  close(fd);
  CHECK_EQ_INT(cap_log_open(path), 0);
  cap_log_set_level(CAP_LOG_DEBUG);
  struct jobtest x;
  if (jobtest_init(&x, 1, 30, 600) == 0) {
    jobtest_mode(&x, "");
    struct cap_job *j = jobtest_submit(&x, NULL, NULL, NULL);
    if (j)
      CHECK(jobtest_run_until_closed(&x, j, 10000));
    jobtest_free(&x);
  }
  cap_log_flush();
  cap_log_close();
  cap_log_set_level(CAP_LOG_INFO);
  const char *want[] = {
      "\"from\":\"new\",\"to\":\"queued\"", "\"from\":\"queued\",\"to\":\"probing\"",
      "\"from\":\"probing\",\"to\":\"succeeded\"", "\"from\":\"succeeded\",\"to\":\"closed\""};
  size_t next = 0;
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof(line), f))
    if (strstr(line, "\"event\":\"job.state\"") && next < 4 && strstr(line, want[next]))
      next++;
  if (f)
    fclose(f);
  unlink(path);
  CHECK_EQ_INT(next, 4);
}

int main(void) {
  test_transitions();
  test_probe_succeeds();
  test_render_succeeds();
  test_child_fails();
  test_cancel();
  test_timeout();
  test_missing_input();
  test_state_log();
  cap_metrics_free();
  return check_report();
}
