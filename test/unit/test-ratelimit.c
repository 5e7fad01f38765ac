#include "ratelimit.h"

#include "check.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int take(struct cap_ratelimit *rl, const char *key, uint64_t now, unsigned *retry) {
  unsigned dummy;
  return cap_ratelimit_take(rl, key, now, retry ? retry : &dummy);
}

static void test_burst_then_limited(void) {
  struct cap_ratelimit *rl = cap_ratelimit_new(5, 100);
  unsigned retry = 0;
  for (int i = 0; i < 5; i++)
    if (!CHECK_EQ_INT(take(rl, "1.2.3.4", 1000, NULL), 0))
      fprintf(stderr, "  take %d refused\n", i);
  CHECK_EQ_INT(take(rl, "1.2.3.4", 1000, &retry), -EAGAIN);
  /* 5 a minute: one token every 12 s. */
  CHECK_EQ_INT(retry, 12);
  retry = 0;
  CHECK_EQ_INT(take(rl, "1.2.3.4", 1000, &retry), -EAGAIN);
  CHECK(retry >= 1);
  CHECK_EQ_INT(cap_ratelimit_size(rl), 1);
  cap_ratelimit_free(rl);

  /* 1 a minute: a minute to wait. */
  rl = cap_ratelimit_new(1, 10);
  CHECK_EQ_INT(take(rl, "k", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "k", 0, &retry), -EAGAIN);
  CHECK_EQ_INT(retry, 60);
  cap_ratelimit_free(rl);

  /* Many a minute: the wait is still at least one second. */
  rl = cap_ratelimit_new(600000, 10);
  int allowed = 0;
  while (take(rl, "k", 5, &retry) == 0 && allowed < 700000)
    allowed++;
  CHECK_EQ_INT(allowed, 600000);
  CHECK_EQ_INT(retry, 1);
  cap_ratelimit_free(rl);
}

static void test_refill(void) {
  struct cap_ratelimit *rl = cap_ratelimit_new(5, 100);
  unsigned retry = 0;
  uint64_t t = 1000000;
  for (int i = 0; i < 5; i++)
    take(rl, "c", t, NULL);
  CHECK_EQ_INT(take(rl, "c", t, NULL), -EAGAIN);
  /* Not yet: 11.999 s later. */
  CHECK_EQ_INT(take(rl, "c", t + 11999, &retry), -EAGAIN);
  CHECK_EQ_INT(retry, 1);
  /* 12 s after the bucket ran dry one token is back (1 ms of slack for
   * floating point). */
  CHECK_EQ_INT(take(rl, "c", t + 12001, NULL), 0);
  CHECK_EQ_INT(take(rl, "c", t + 12001, &retry), -EAGAIN);
  CHECK_EQ_INT(retry, 12);
  /* Over half a token 6.5 s later: 5.5 s to go, rounded up. */
  CHECK_EQ_INT(take(rl, "c", t + 18500, &retry), -EAGAIN);
  CHECK_EQ_INT(retry, 6);
  /* A long pause refills only up to the capacity. */
  t += 3600 * 1000;
  int allowed = 0;
  for (int i = 0; i < 20; i++)
    if (take(rl, "c", t, NULL) == 0)
      allowed++;
  CHECK_EQ_INT(allowed, 5);
  /* Time going backwards neither refills nor breaks anything. */
  CHECK_EQ_INT(take(rl, "c", t - 50000, &retry), -EAGAIN);
  CHECK(retry >= 1);
  CHECK_EQ_INT(take(rl, "c", t + 12000, NULL), 0);
  cap_ratelimit_free(rl);
}

static void test_independent_keys(void) {
  struct cap_ratelimit *rl = cap_ratelimit_new(3, 100);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(take(rl, "10.0.0.1", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "10.0.0.1", 0, NULL), -EAGAIN);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(take(rl, "10.0.0.2", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "10.0.0.2", 0, NULL), -EAGAIN);
  CHECK_EQ_INT(take(rl, "10.0.0.10", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "10.0.0.1", 0, NULL), -EAGAIN);
  CHECK_EQ_INT(take(rl, "", 0, NULL), 0);
  CHECK_EQ_INT(cap_ratelimit_size(rl), 4);
  cap_ratelimit_free(rl);
}

static void test_lru_eviction(void) {
  const size_t max = 100;
  struct cap_ratelimit *rl = cap_ratelimit_new(1, max);
  char key[32];
  size_t biggest = 0;
  int refused = 0;
  for (int i = 0; i < 10000; i++) {
    snprintf(key, sizeof(key), "client-%d", i);
    if (take(rl, key, 0, NULL) != 0)
      refused++;
    if (cap_ratelimit_size(rl) > biggest)
      biggest = cap_ratelimit_size(rl);
  }
  CHECK_EQ_INT(refused, 0); /* Every new key starts full. */
  CHECK_EQ_INT(biggest, max);
  CHECK_EQ_INT(cap_ratelimit_size(rl), max);
  /* The last 100 keys are the ones kept: each is still empty. */
  for (int i = 9900; i < 10000; i++) {
    snprintf(key, sizeof(key), "client-%d", i);
    if (!CHECK_EQ_INT(take(rl, key, 0, NULL), -EAGAIN))
      fprintf(stderr, "  %s was evicted\n", key);
  }
  CHECK_EQ_INT(cap_ratelimit_size(rl), max);
  cap_ratelimit_free(rl);

  /* Using a key makes it recent: the least recently used one goes. */
  rl = cap_ratelimit_new(1, 3);
  CHECK_EQ_INT(take(rl, "a", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "b", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "c", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "a", 0, NULL), -EAGAIN); /* a is now the most recent. */
  CHECK_EQ_INT(take(rl, "d", 0, NULL), 0);       /* evicts b */
  CHECK_EQ_INT(cap_ratelimit_size(rl), 3);
  CHECK_EQ_INT(take(rl, "a", 0, NULL), -EAGAIN); /* a kept, still empty */
  CHECK_EQ_INT(take(rl, "c", 0, NULL), -EAGAIN); /* c kept */
  CHECK_EQ_INT(take(rl, "b", 0, NULL), 0);       /* b was evicted: full again; evicts d */
  CHECK_EQ_INT(take(rl, "a", 0, NULL), -EAGAIN);
  CHECK_EQ_INT(take(rl, "c", 0, NULL), -EAGAIN);
  CHECK_EQ_INT(take(rl, "d", 0, NULL), 0); /* d had been evicted. */
  CHECK_EQ_INT(cap_ratelimit_size(rl), 3);
  cap_ratelimit_free(rl);

  /* max_entries 0 still keeps one bucket. */
  rl = cap_ratelimit_new(1, 0);
  CHECK_EQ_INT(take(rl, "a", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "a", 0, NULL), -EAGAIN);
  CHECK_EQ_INT(cap_ratelimit_size(rl), 1);
  CHECK_EQ_INT(take(rl, "b", 0, NULL), 0);
  CHECK_EQ_INT(cap_ratelimit_size(rl), 1);
  cap_ratelimit_free(rl);
  cap_ratelimit_free(NULL);
}

static void test_set_rate(void) {
  struct cap_ratelimit *rl = cap_ratelimit_new(2, 10);
  unsigned retry = 0;
  CHECK_EQ_INT(take(rl, "k", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "k", 0, NULL), 0);
  CHECK_EQ_INT(take(rl, "k", 0, &retry), -EAGAIN);
  CHECK_EQ_INT(retry, 30);
  cap_ratelimit_set_rate(rl, 60);
  /* One a second now. */
  CHECK_EQ_INT(take(rl, "k", 0, &retry), -EAGAIN);
  CHECK_EQ_INT(retry, 1);
  CHECK_EQ_INT(take(rl, "k", 1000, NULL), 0);
  CHECK_EQ_INT(take(rl, "k", 1000, NULL), -EAGAIN);
  /* And the capacity is 60. */
  int allowed = 0;
  for (int i = 0; i < 100; i++)
    if (take(rl, "k", 10 * 60 * 1000, NULL) == 0)
      allowed++;
  CHECK_EQ_INT(allowed, 60);
  /* New buckets start with the new capacity. */
  allowed = 0;
  for (int i = 0; i < 100; i++)
    if (take(rl, "fresh", 10 * 60 * 1000, NULL) == 0)
      allowed++;
  CHECK_EQ_INT(allowed, 60);
  /* Lowering the rate caps what refills. */
  cap_ratelimit_set_rate(rl, 1);
  allowed = 0;
  for (int i = 0; i < 100; i++)
    if (take(rl, "k", 20 * 60 * 1000, NULL) == 0)
      allowed++;
  CHECK_EQ_INT(allowed, 1);
  cap_ratelimit_free(rl);
}

/* A key of CAP_RATELIMIT_KEY_MAX bytes is limited like any other. */
static void test_long_keys(void) {
  char key[CAP_RATELIMIT_KEY_MAX + 1];
  memset(key, 'k', CAP_RATELIMIT_KEY_MAX);
  key[CAP_RATELIMIT_KEY_MAX] = '\0';
  struct cap_ratelimit *rl = cap_ratelimit_new(1, 10);
  CHECK_EQ_INT(take(rl, key, 0, NULL), 0);
  CHECK_EQ_INT(take(rl, key, 0, NULL), -EAGAIN);
  cap_ratelimit_free(rl);

  /* Longer keys must neither escape the limit nor corrupt the table when
   * their bucket is evicted.  Run in a child: a crash is a failure here,
   * not the end of the test program. */
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    char longkey[200];
    memset(longkey, 'L', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    struct cap_ratelimit *r = cap_ratelimit_new(1, 2);
    int limited = take(r, longkey, 0, NULL) == 0 && take(r, longkey, 0, NULL) == -EAGAIN;
    take(r, "a", 0, NULL);
    take(r, "b", 0, NULL); /* Evicts the long key's bucket. */
    take(r, "c", 0, NULL);
    cap_ratelimit_free(r);
    _exit(limited ? 0 : 3);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    if (WIFSIGNALED(status))
      fprintf(stderr, "  key longer than %d bytes: child died of signal %d\n",
              CAP_RATELIMIT_KEY_MAX, WTERMSIG(status));
    else
      fprintf(stderr, "  key longer than %d bytes is never limited\n", CAP_RATELIMIT_KEY_MAX);
  }
}

/* Buckets idle for a minute are full again and expire as later takes
 * come by, without waiting for the table to fill. */
static void test_idle_expiry(void) {
  struct cap_ratelimit *rl = cap_ratelimit_new(10, 1000);
  unsigned retry;
  char key[32];
  for (int i = 0; i < 50; i++) {
    snprintf(key, sizeof(key), "10.0.0.%d", i);
    CHECK_EQ_INT(cap_ratelimit_take(rl, key, 1000, &retry), 0);
  }
  CHECK_EQ_INT(cap_ratelimit_size(rl), 50);
  /* Half a minute later nothing has expired yet. */
  CHECK_EQ_INT(cap_ratelimit_take(rl, "fresh", 31000, &retry), 0);
  CHECK_EQ_INT(cap_ratelimit_size(rl), 51);
  /* After a minute each take drops up to two stale buckets: 25 takes of
   * new keys clear the 50 old ones, "fresh" (30 s old) stays. */
  for (int i = 0; i < 30; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    CHECK_EQ_INT(cap_ratelimit_take(rl, key, 61001 + (uint64_t)i, &retry), 0);
  }
  CHECK_EQ_INT(cap_ratelimit_size(rl), 31);
  /* A dropped bucket comes back full. */
  for (int i = 0; i < 10; i++)
    CHECK_EQ_INT(cap_ratelimit_take(rl, "10.0.0.0", 61100, &retry), 0);
  CHECK_EQ_INT(cap_ratelimit_take(rl, "10.0.0.0", 61100, &retry), -EAGAIN);
  cap_ratelimit_free(rl);
}

int main(void) {
  test_burst_then_limited();
  test_refill();
  test_independent_keys();
  test_lru_eviction();
  test_set_rate();
  test_long_keys();
  test_idle_expiry();
  return check_report();
}
