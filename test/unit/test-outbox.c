#include "outbox.h"

#include "check.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static void test_backoff(void) {
  /* The first retry: [base/2, base]. */
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 1, 0), 500);
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 1, 500), 1000);
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 1, 501), 500);
  /* Doubling per attempt. */
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 2, 0), 1000);
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 2, 1000), 2000);
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 5, 0), 8000);
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 5, 8000), 16000);
  /* At most an hour, however many attempts. */
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 13, 1800000), 3600000);
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 1000, 0), 1800000);
  CHECK_EQ_INT(cap_outbox_backoff_ms(1000, 1000, 1800000), 3600000);
  CHECK_EQ_INT(cap_outbox_backoff_ms(3600000, 1, 0), 1800000);
  /* Every value lies in range. */
  for (int a = 1; a < 30; a++)
    for (uint32_t r = 0; r < 5000000; r += 99991) {
      int64_t d = cap_outbox_backoff_ms(10, a, r);
      int64_t full = (int64_t)10 << (a - 1 > 30 ? 30 : a - 1);
      if (full > 3600000)
        full = 3600000;
      if (!CHECK(d >= full - full / 2 && d <= full)) {
        fprintf(stderr, "  attempt %d rnd %u: %lld\n", a, r, (long long)d);
        return;
      }
    }
}

static void test_body(void) {
  size_t len;
  char *b = cap_outbox_body("job.succeeded", 1765058400123LL, "{\"id\":\"j1\",\"n\":[1,2]}", &len);
  const char *want = "{\"type\":\"job.succeeded\",\"timestamp\":\"2025-12-06T22:00:00.123Z\","
                     "\"data\":{\"id\":\"j1\",\"n\":[1,2]}}";
  CHECK_EQ_STR(b, want);
  CHECK_EQ_INT(len, strlen(want));
  free(b);
  b = cap_outbox_body("job.failed", 5, "{}", &len);
  CHECK_EQ_STR(b,
               "{\"type\":\"job.failed\",\"timestamp\":\"1970-01-01T00:00:00.005Z\",\"data\":{}}");
  free(b);
}

/* One test set-up: a loop, the curl multi, secrets and a policy. */
struct env {
  uv_loop_t loop;
  struct cap_curlloop cl;
  struct cap_config cfg;
  struct cap_whsecret secrets;
  struct cap_callback policy;
  struct cap_outbox ob;
  uv_timer_t tick; /* Keeps the loop turning while a test waits. */
  char ends[64][16];
  int nends;
};

static void on_end(void *arg, const char *job_id, const char *outcome) {
  struct env *e = arg;
  (void)job_id;
  if (e->nends < 64)
    snprintf(e->ends[e->nends++], sizeof(e->ends[0]), "%s", outcome);
}

static void on_tick(uv_timer_t *t) {
  (void)t;
}

static void env_init(struct env *e, const char *allow, int retry_s) {
  char err[256], path[] = "/tmp/test-outbox-XXXXXX";
  int loose;
  memset(e, 0, sizeof(*e));
  uv_loop_init(&e->loop);
  CHECK_EQ_INT(cap_curlloop_init(&e->cl, &e->loop), 0);
  e->cfg.callback_retry_s = retry_s;
  e->cfg.callback_backoff_ms = 10;
  e->cfg.callback_timeout_ms = 2000;
  e->cfg.callback_concurrency = 2;
  int fd = mkstemp(path);
  if (fd < 0 || write(fd, "worker:" SECRET "\n", strlen("worker:" SECRET "\n")) < 0)
    perror(path);
  close(fd);
  cap_whsecret_init(&e->secrets);
  CHECK_EQ_INT(cap_whsecret_load_file(&e->secrets, path, &loose, err, sizeof(err)), 0);
  unlink(path);
  CHECK_EQ_INT(cap_callback_init(&e->policy, "127.0.0.1", allow, err, sizeof(err)), 0);
  cap_outbox_init(&e->ob, &e->loop, &e->cl, &e->cfg, NULL, &e->secrets, &e->policy);
  e->ob.on_end = on_end;
  e->ob.end_arg = e;
  uv_timer_init(&e->loop, &e->tick);
  uv_timer_start(&e->tick, on_tick, 5, 5);
}

/* Runs the loop until n events have ended or ms have passed. */
static void run_until_ends(struct env *e, int n, uint64_t ms) {
  uint64_t end = uv_now(&e->loop) + ms;
  while (e->nends < n && uv_now(&e->loop) < end)
    uv_run(&e->loop, UV_RUN_ONCE);
}

static void env_free(struct env *e) {
  cap_outbox_stop(&e->ob);
  cap_curlloop_close(&e->cl, NULL);
  uv_close((uv_handle_t *)&e->tick, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&e->loop), 0);
  cap_outbox_free(&e->ob);
  cap_whsecret_free(&e->secrets);
  cap_callback_free(&e->policy);
}

/* A port on 127.0.0.1: with listening set, a socket that listens but
 * never accepts (the handshake completes, TLS never answers); else a
 * closed port (connection refused).  Returns the port, *fd the socket. */
static int local_port(int listening, int *fd) {
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  *fd = socket(AF_INET, SOCK_STREAM, 0);
  bind(*fd, (struct sockaddr *)&a, sizeof(a));
  getsockname(*fd, (struct sockaddr *)&a, &len);
  if (listening)
    listen(*fd, 16);
  else
    close(*fd);
  return ntohs(a.sin_port);
}

/* The address check runs at connect time: 127.0.0.1 is listed in
 * callback_hosts, but without an allow CIDR the connection is refused and
 * never retried. */
static void test_refused(void) {
  struct env e;
  char url[64];
  int fd;
  env_init(&e, NULL, 60);
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/hook", local_port(1, &fd));
  double before = cap_metrics_value(CAP_M_WEBHOOK_ATTEMPTS, CAP_LABELS("refused"));
  cap_outbox_start(&e.ob);
  CHECK_EQ_INT(cap_outbox_enqueue(&e.ob, "worker", url, "job1", "job.succeeded", "{}"), 0);
  CHECK_EQ_INT(cap_outbox_pending(&e.ob), 1);
  CHECK_EQ_INT(cap_outbox_job_pending(&e.ob, "job1"), 1);
  CHECK_EQ_INT(cap_outbox_job_pending(&e.ob, "job2"), 0);
  run_until_ends(&e, 1, 5000);
  CHECK_EQ_INT(e.nends, 1);
  CHECK_EQ_STR(e.ends[0], "refused");
  CHECK_EQ_INT(cap_outbox_pending(&e.ob), 0);
  CHECK(cap_metrics_value(CAP_M_WEBHOOK_ATTEMPTS, CAP_LABELS("refused")) == before + 1);
  CHECK(cap_metrics_value(CAP_M_WEBHOOK_PENDING, NULL) == 0);
  close(fd);
  env_free(&e);
}

/* Allowed but nobody listens: retried with backoff until callback_retry_s
 * runs out, then expired. */
static void test_retry_then_expire(void) {
  struct env e;
  char url[64];
  int fd;
  env_init(&e, "127.0.0.0/8", 1);
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/hook", local_port(0, &fd));
  double retries = cap_metrics_value(CAP_M_WEBHOOK_ATTEMPTS, CAP_LABELS("retry"));
  double expired = cap_metrics_value(CAP_M_WEBHOOK_ATTEMPTS, CAP_LABELS("expired"));
  cap_outbox_start(&e.ob);
  CHECK_EQ_INT(cap_outbox_enqueue(&e.ob, "worker", url, "job1", "job.failed", "{}"), 0);
  run_until_ends(&e, 1, 5000);
  CHECK_EQ_INT(e.nends, 1);
  CHECK_EQ_STR(e.ends[0], "expired");
  /* 10 ms doubling within a second: a handful of retries, not hundreds. */
  double n = cap_metrics_value(CAP_M_WEBHOOK_ATTEMPTS, CAP_LABELS("retry")) - retries;
  if (!CHECK(n >= 3 && n <= 10))
    fprintf(stderr, "  %g retries\n", n);
  CHECK(cap_metrics_value(CAP_M_WEBHOOK_ATTEMPTS, CAP_LABELS("expired")) == expired + 1);
  env_free(&e);
}

/* A token without a secret (removed by a reload, say) drops its events
 * without an attempt. */
static void test_no_secret(void) {
  struct env e;
  env_init(&e, "127.0.0.0/8", 60);
  cap_outbox_start(&e.ob);
  CHECK_EQ_INT(
      cap_outbox_enqueue(&e.ob, "nobody", "https://127.0.0.1:9/x", "j", "job.failed", "{}"), 0);
  CHECK_EQ_INT(cap_outbox_enqueue(&e.ob, NULL, "https://127.0.0.1:9/x", "j", "job.failed", "{}"),
               -EINVAL);
  run_until_ends(&e, 1, 2000);
  CHECK_EQ_INT(e.nends, 1);
  CHECK_EQ_STR(e.ends[0], "no_secret");
  env_free(&e);
}

/* Stop abandons what is in flight: the event stays, uncounted. */
static void test_stop_abandons(void) {
  struct env e;
  char url[64];
  int fd;
  env_init(&e, "127.0.0.0/8", 60);
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/hook", local_port(1, &fd));
  cap_outbox_start(&e.ob);
  cap_outbox_enqueue(&e.ob, "worker", url, "j", "job.succeeded", "{}");
  cap_outbox_enqueue(&e.ob, "worker", url, "j", "job.progress", "{}");
  cap_outbox_enqueue(&e.ob, "worker", url, "j", "job.failed", "{}");
  uint64_t end = uv_now(&e.loop) + 300;
  while (uv_now(&e.loop) < end)
    uv_run(&e.loop, UV_RUN_ONCE);
  /* callback_concurrency is 2. */
  CHECK_EQ_INT(e.ob.inflight, 2);
  cap_outbox_stop(&e.ob);
  CHECK_EQ_INT(e.ob.inflight, 0);
  CHECK_EQ_INT(cap_outbox_pending(&e.ob), 3);
  CHECK_EQ_INT(e.nends, 0);
  /* Enqueued after stop: kept, not sent. */
  cap_outbox_enqueue(&e.ob, "worker", url, "j", "job.canceled", "{}");
  CHECK_EQ_INT(cap_outbox_pending(&e.ob), 4);
  close(fd);
  env_free(&e);
}

/* The outbox holds at most CAP_OUTBOX_MAX events: the oldest goes. */
static void test_overflow(void) {
  struct env e;
  char job[32];
  env_init(&e, NULL, 60);
  for (int i = 0; i <= CAP_OUTBOX_MAX; i++) {
    snprintf(job, sizeof(job), "job%d", i);
    cap_outbox_enqueue(&e.ob, "worker", "https://127.0.0.1:9/x", job, "job.succeeded", "{}");
  }
  CHECK_EQ_INT(cap_outbox_pending(&e.ob), CAP_OUTBOX_MAX);
  CHECK_EQ_INT(e.nends, 1);
  CHECK_EQ_STR(e.ends[0], "overflow");
  CHECK_EQ_INT(cap_outbox_job_pending(&e.ob, "job0"), 0);
  CHECK_EQ_INT(cap_outbox_job_pending(&e.ob, "job1"), 1);
  env_free(&e);
}

int main(void) {
  test_backoff();
  test_body();
  test_refused();
  test_retry_then_expire();
  test_no_secret();
  test_stop_abandons();
  test_overflow();
  return check_report();
}
