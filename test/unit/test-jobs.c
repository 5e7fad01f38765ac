#include "jobs.h"

#include "check.h"
#include "jobtest.h"
#include "metrics.h"
#include "reqid.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Job ids: 22 characters of base64url, different every time. */
static void test_job_ids(void) {
  char a[CAP_REQID_JOB_LEN + 2], b[CAP_REQID_JOB_LEN + 2];
  memset(a, 'Z', sizeof(a));
  cap_reqid_generate_job(a);
  cap_reqid_generate_job(b);
  CHECK_EQ_INT((long long)strlen(a), CAP_REQID_JOB_LEN);
  CHECK_EQ_INT(a[CAP_REQID_JOB_LEN + 1], 'Z');
  CHECK(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
        CAP_REQID_JOB_LEN);
  CHECK(strcmp(a, b) != 0);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* Lookups by id and by idempotency key, and how finished jobs expire. */
static void test_lookups_and_ttl(void) {
  struct jobtest x;
  if (jobtest_init(&x, 2, 30, 1) != 0)
    return;
  jobtest_mode(&x, "");
  struct cap_job *a = jobtest_submit(&x, NULL, "k1", "alice");
  struct cap_job *b = jobtest_submit(&x, NULL, "k1", "bob");
  if (!a || !b)
    return;
  CHECK(cap_jobs_find(&x.t, a->id) == a);
  CHECK(cap_jobs_find(&x.t, b->id) == b);
  CHECK(cap_jobs_find(&x.t, "no-such-job") == NULL);
  /* A key belongs to its token. */
  CHECK(cap_jobs_find_idem(&x.t, "alice", "k1") == a);
  CHECK(cap_jobs_find_idem(&x.t, "bob", "k1") == b);
  CHECK(cap_jobs_find_idem(&x.t, "carol", "k1") == NULL);
  CHECK(cap_jobs_find_idem(&x.t, "alice", "k2") == NULL);
  int running;
  size_t queued;
  cap_jobs_counts(&x.t, &running, &queued);
  CHECK_EQ_INT(running, 2);
  CHECK_EQ_INT((long long)queued, 0);
  CHECK(jobtest_run_until_closed(&x, a, 10000));
  CHECK(jobtest_run_until_closed(&x, b, 10000));
  /* Finished jobs stay visible for the TTL, then are gone. */
  CHECK(cap_jobs_find(&x.t, a->id) == a);
  CHECK(cap_jobs_find_idem(&x.t, "alice", "k1") == a);
  sleep_ms(1100);
  CHECK(cap_jobs_find(&x.t, a->id) == NULL);
  CHECK(cap_jobs_find_idem(&x.t, "alice", "k1") == NULL);
  CHECK_EQ_INT((long long)x.t.n, 2); /* Until the sweep or a submission drops them. */
  jobtest_free(&x);
}

/* A full table drops its oldest finished job for a new one, and refuses
 * when every job is unfinished. */
static void test_full_table(void) {
  struct jobtest x;
  if (jobtest_init(&x, 2, 30, 600) != 0)
    return;
  x.cfg.jobs_max = 2;
  jobtest_mode(&x, "");
  struct cap_job *a = jobtest_submit(&x, NULL, NULL, NULL);
  if (!a || !CHECK(jobtest_run_until_closed(&x, a, 10000)))
    return;
  char a_id[CAP_JOB_ID_LEN + 1];
  snprintf(a_id, sizeof(a_id), "%s", a->id);
  jobtest_mode(&x, "sleep");
  struct cap_job *b = jobtest_submit(&x, NULL, NULL, NULL);
  struct cap_job *c = jobtest_submit(&x, NULL, NULL, NULL); /* a goes. */
  if (!b || !c)
    return;
  CHECK(cap_jobs_find(&x.t, a_id) == NULL);
  CHECK_EQ_INT((long long)x.t.n, 2);
  char in[] = "in.mp4";
  struct cap_execreq r = {.capability = CAP_CAP_FFPROBE, .input_key = in, .wait_s = -1};
  struct cap_job *d = cap_job_new(&x.t, &r, "tok", "req-2");
  CHECK_EQ_INT(cap_jobs_submit(&x.t, d), -ENOSPC);
  cap_job_free(d);
  CHECK_EQ_INT(x.t.submitted, 3);
  jobtest_free(&x);
}

struct drained {
  int calls;
  size_t last;
};

static void on_drained(void *arg, size_t undelivered) {
  struct drained *d = arg;
  d->calls++;
  d->last = undelivered;
}

/* A drain waits for the jobs unfinished when it began, then counts those
 * whose result no client has been sent yet. */
static void test_drain(void) {
  struct jobtest x;
  struct drained d = {0, 99};
  if (jobtest_init(&x, 2, 30, 600) != 0)
    return;
  jobtest_mode(&x, "");
  struct cap_job *done = jobtest_submit(&x, NULL, NULL, NULL);
  if (!done || !CHECK(jobtest_run_until_closed(&x, done, 10000)))
    return;
  jobtest_mode(&x, "sleep");
  struct cap_job *a = jobtest_submit(&x, NULL, NULL, NULL);
  struct cap_job *b = jobtest_submit(&x, NULL, NULL, NULL);
  if (!a || !b)
    return;
  cap_jobs_drain(&x.t, on_drained, &d);
  CHECK_EQ_INT(d.calls, 0);
  CHECK_EQ_INT(done->drain_watch, 0);
  CHECK_EQ_INT(a->drain_watch, 1);
  cap_job_cancel(a, CAP_E_CANCELED);
  CHECK(jobtest_run_until_closed(&x, a, 5000));
  CHECK_EQ_INT(d.calls, 0); /* b still runs. */
  cap_job_cancel(b, CAP_E_CANCELED);
  CHECK(jobtest_run_until_closed(&x, b, 5000));
  CHECK_EQ_INT(d.calls, 1);
  CHECK_EQ_INT((long long)d.last, 2);
  cap_jobs_note_delivered(&x.t, done); /* Not watched: no call. */
  CHECK_EQ_INT(d.calls, 1);
  cap_jobs_note_delivered(&x.t, a);
  CHECK_EQ_INT(d.calls, 2);
  CHECK_EQ_INT((long long)d.last, 1);
  cap_jobs_note_delivered(&x.t, a); /* Once per job. */
  CHECK_EQ_INT(d.calls, 2);
  cap_jobs_note_delivered(&x.t, b);
  CHECK_EQ_INT(d.calls, 3);
  CHECK_EQ_INT((long long)d.last, 0);
  CHECK(x.t.on_idle == NULL);

  /* With nothing unfinished, a drain is over at once. */
  struct drained e = {0, 99};
  cap_jobs_drain(&x.t, on_drained, &e);
  CHECK_EQ_INT(e.calls, 1);
  CHECK_EQ_INT((long long)e.last, 0);
  jobtest_free(&x);
}

/* Stopping with a job queued and one running: both end, the table's
 * handles close, and on_quiet runs once (jobtest_free checks). */
static void test_stop(void) {
  struct jobtest x;
  if (jobtest_init(&x, 1, 30, 600) != 0)
    return;
  jobtest_mode(&x, "sleep");
  struct cap_job *a = jobtest_submit(&x, NULL, NULL, NULL);
  struct cap_job *b = jobtest_submit(&x, NULL, NULL, NULL);
  if (!a || !b)
    return;
  CHECK_EQ_INT(b->stage, CAP_JOB_S_QUEUED);
  jobtest_free(&x);
  /* The server stopped them, no client canceled them: both fail as
   * interrupted, which a retry with the same key runs again. */
  CHECK_EQ_INT(x.t.canceled, 0);
  CHECK_EQ_INT(x.t.failed, 2);
}

int main(void) {
  test_job_ids();
  test_lookups_and_ttl();
  test_full_table();
  test_drain();
  test_stop();
  cap_metrics_free();
  return check_report();
}
