#include "metrics.h"

#include "check.h"
#include "version.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Returns one family's exposition; the caller frees it. */
static char *render_one(enum cap_metric_id id) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_metrics_render_family(id, &b);
  return cap_buf_steal(&b);
}

/* Returns the value of the sample line that starts with series (a name and
 * its braces) in text, or NAN when there is no such line. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, series, n) == 0 && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  }
  return NAN;
}

/* Returns how many lines of text start with prefix. */
static int count_lines(const char *text, const char *prefix) {
  int c = 0;
  size_t n = strlen(prefix);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp(p, prefix, n) == 0)
      c++;
  return c;
}

static void test_counters(void) {
  cap_metrics_init();
  CHECK(cap_metrics_value(CAP_M_HTTP_REQUESTS, CAP_LABELS("exec", "200")) == 0);
  cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS("exec", "200"));
  cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS("exec", "200"));
  cap_metrics_add(CAP_M_HTTP_REQUESTS, CAP_LABELS("exec", "429"), 5);
  cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS("health", "200"));
  CHECK(cap_metrics_value(CAP_M_HTTP_REQUESTS, CAP_LABELS("exec", "200")) == 2);
  CHECK(cap_metrics_value(CAP_M_HTTP_REQUESTS, CAP_LABELS("exec", "429")) == 5);
  CHECK(cap_metrics_value(CAP_M_HTTP_REQUESTS, CAP_LABELS("health", "200")) == 1);
  /* Label order matters: this set was never used. */
  CHECK(cap_metrics_value(CAP_M_HTTP_REQUESTS, CAP_LABELS("200", "exec")) == 0);
  CHECK_EQ_INT(cap_metrics_series(CAP_M_HTTP_REQUESTS), 3);

  /* A label-less counter has its one series from the start. */
  CHECK_EQ_INT(cap_metrics_series(CAP_M_AUTH_FAILURES), 1);
  CHECK(cap_metrics_value(CAP_M_AUTH_FAILURES, NULL) == 0);
  cap_metrics_inc(CAP_M_AUTH_FAILURES, NULL);
  cap_metrics_add(CAP_M_STORAGE_BYTES_UPLOADED, NULL, 1e9);
  cap_metrics_add(CAP_M_STORAGE_BYTES_UPLOADED, NULL, 1e9);
  CHECK(cap_metrics_value(CAP_M_AUTH_FAILURES, NULL) == 1);
  char *r = render_one(CAP_M_STORAGE_BYTES_UPLOADED);
  CHECK(strstr(r, "\ncap_storage_bytes_uploaded_total 2000000000\n") != NULL);
  free(r);

  /* Large counters stay exact up to 2^53. */
  cap_metrics_add(CAP_M_STORAGE_BYTES_DOWNLOADED, NULL, 9007199254740991.0);
  cap_metrics_inc(CAP_M_STORAGE_BYTES_DOWNLOADED, NULL);
  r = render_one(CAP_M_STORAGE_BYTES_DOWNLOADED);
  CHECK(strstr(r, "\ncap_storage_bytes_downloaded_total 9007199254740992\n") != NULL);
  free(r);
  cap_metrics_free();
}

static void test_gauges(void) {
  cap_metrics_init();
  cap_metrics_set(CAP_M_POOL_SLOTS, CAP_LABELS("cpu"), 4);
  cap_metrics_set(CAP_M_POOL_SLOTS, CAP_LABELS("nvenc"), 2);
  cap_metrics_set(CAP_M_POOL_SLOTS, CAP_LABELS("cpu"), 3);
  CHECK(cap_metrics_value(CAP_M_POOL_SLOTS, CAP_LABELS("cpu")) == 3);
  CHECK(cap_metrics_value(CAP_M_POOL_SLOTS, CAP_LABELS("nvenc")) == 2);
  cap_metrics_inc(CAP_M_JOBS, CAP_LABELS("running"));
  cap_metrics_inc(CAP_M_JOBS, CAP_LABELS("running"));
  cap_metrics_add(CAP_M_JOBS, CAP_LABELS("running"), -1);
  CHECK(cap_metrics_value(CAP_M_JOBS, CAP_LABELS("running")) == 1);
  cap_metrics_add(CAP_M_CONNECTIONS_OPEN, NULL, -1);
  CHECK(cap_metrics_value(CAP_M_CONNECTIONS_OPEN, NULL) == -1);

  /* Clearing drops every series; the family still renders its header. */
  cap_metrics_clear(CAP_M_POOL_SLOTS);
  CHECK_EQ_INT(cap_metrics_series(CAP_M_POOL_SLOTS), 0);
  CHECK(cap_metrics_value(CAP_M_POOL_SLOTS, CAP_LABELS("cpu")) == 0);
  char *r = render_one(CAP_M_POOL_SLOTS);
  CHECK_EQ_STR(r, "# HELP cap_pool_slots Concurrent job slots of each pool class.\n"
                  "# TYPE cap_pool_slots gauge\n");
  free(r);
  cap_metrics_set(CAP_M_POOL_SLOTS, CAP_LABELS("nvenc"), 1);
  r = render_one(CAP_M_POOL_SLOTS);
  CHECK_EQ_INT(count_lines(r, "cap_pool_slots{"), 1);
  CHECK(sample(r, "cap_pool_slots{class=\"nvenc\"}") == 1);
  free(r);

  /* A label-less gauge goes back to 0 and still shows. */
  cap_metrics_set(CAP_M_DRAINING, NULL, 1);
  cap_metrics_clear(CAP_M_DRAINING);
  CHECK(cap_metrics_value(CAP_M_DRAINING, NULL) == 0);
  r = render_one(CAP_M_DRAINING);
  CHECK(sample(r, "cap_draining") == 0);
  free(r);
  cap_metrics_free();
}

/* A value on a bound counts in that bound's bucket; buckets are cumulative. */
static void test_histogram_buckets(void) {
  cap_metrics_init();
  const char *const *l = CAP_LABELS("exec");
  cap_metrics_observe(CAP_M_HTTP_DURATION, l, 0.0005);     /* le 0.0005 */
  cap_metrics_observe(CAP_M_HTTP_DURATION, l, 0.00050001); /* le 0.001 */
  cap_metrics_observe(CAP_M_HTTP_DURATION, l, 0);          /* le 0.0005 */
  cap_metrics_observe(CAP_M_HTTP_DURATION, l, 1);          /* le 1 */
  cap_metrics_observe(CAP_M_HTTP_DURATION, l, 100);        /* le 100 */
  cap_metrics_observe(CAP_M_HTTP_DURATION, l, 100.5);      /* +Inf only */
  cap_metrics_observe(CAP_M_HTTP_DURATION, l, NAN);        /* ignored */
  CHECK(cap_metrics_value(CAP_M_HTTP_DURATION, l) == 6);
  char *r = render_one(CAP_M_HTTP_DURATION);
  static const struct {
    const char *le;
    double cum;
  } want[] = {{"0.0005", 2}, {"0.001", 3}, {"0.005", 3}, {"0.01", 3}, {"0.05", 3},
              {"0.1", 3},    {"0.5", 3},   {"1", 4},     {"5", 4},    {"15", 4},
              {"30", 4},     {"60", 4},    {"100", 5},   {"+Inf", 6}};
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    char series[128];
    snprintf(series, sizeof(series),
             "cap_http_request_duration_seconds_bucket{route=\"exec\",le=\"%s\"}", want[i].le);
    if (!CHECK(sample(r, series) == want[i].cum))
      fprintf(stderr, "  (bucket le=%s: %g)\n", want[i].le, sample(r, series));
  }
  CHECK_EQ_INT(count_lines(r, "cap_http_request_duration_seconds_bucket{"), 14);
  CHECK(sample(r, "cap_http_request_duration_seconds_count{route=\"exec\"}") == 6);
  CHECK(fabs(sample(r, "cap_http_request_duration_seconds_sum{route=\"exec\"}") - 201.50100001) <
        1e-9);
  free(r);
  /* Counter calls on a histogram are ignored in a release build (they
   * assert in a debug one), so they are not exercised here. */
  cap_metrics_free();
}

static void test_escaping(void) {
  cap_metrics_init();
  cap_metrics_inc(CAP_M_JOBS_FINISHED, CAP_LABELS("a\"b\\c\nd", "failed"));
  char *r = render_one(CAP_M_JOBS_FINISHED);
  CHECK(sample(r, "cap_jobs_finished_total{preset=\"a\\\"b\\\\c\\nd\",state=\"failed\"}") == 1);
  free(r);
  /* The stored value is the raw one: the same raw value finds the series. */
  CHECK(cap_metrics_value(CAP_M_JOBS_FINISHED, CAP_LABELS("a\"b\\c\nd", "failed")) == 1);

  /* HELP escapes backslash and newline only, so its quotes stay as they are. */
  r = render_one(CAP_M_LABEL_OVERFLOW);
  CHECK(strstr(r, "# HELP cap_metrics_label_overflow_total Metric updates folded into the "
                  "series labelled \"other\" because their family already held 128 label "
                  "sets.\n") == r);
  free(r);

  /* Bytes that are not UTF-8 become '?'; valid characters pass. */
  cap_metrics_inc(CAP_M_JOBS_FINISHED, CAP_LABELS("x\xff\xc3y\xc3\xa9", "ok"));
  CHECK(cap_metrics_value(CAP_M_JOBS_FINISHED, CAP_LABELS("x??y\xc3\xa9", "ok")) == 1);
  /* A NULL value counts as the empty string. */
  cap_metrics_inc(CAP_M_JOBS_FINISHED, CAP_LABELS(NULL, "ok"));
  CHECK(cap_metrics_value(CAP_M_JOBS_FINISHED, CAP_LABELS("", "ok")) == 1);
  cap_metrics_free();
}

/* Values longer than CAP_METRICS_LABEL_MAX bytes are cut, never inside a
 * character, and values equal after the cut share a series. */
static void test_truncation(void) {
  cap_metrics_init();
  char a[100], b[100], want[100];
  memset(a, 'a', 99);
  a[99] = '\0';
  memcpy(b, a, sizeof(b));
  b[80] = 'b';
  cap_metrics_inc(CAP_M_STORAGE_RETRIES, CAP_LABELS(a));
  cap_metrics_inc(CAP_M_STORAGE_RETRIES, CAP_LABELS(b));
  CHECK_EQ_INT(cap_metrics_series(CAP_M_STORAGE_RETRIES), 1);
  memset(want, 'a', 64);
  want[64] = '\0';
  CHECK(cap_metrics_value(CAP_M_STORAGE_RETRIES, CAP_LABELS(want)) == 2);
  char *r = render_one(CAP_M_STORAGE_RETRIES);
  char line[160];
  snprintf(line, sizeof(line), "\ncap_storage_retries_total{operation=\"%s\"} 2\n", want);
  CHECK(strstr(r, line) != NULL);
  free(r);

  /* 63 ASCII bytes and a 2-byte character: the character does not fit. */
  char c[100];
  memset(c, 'c', 63);
  memcpy(c + 63, "\xc3\xa9zz", 5);
  cap_metrics_inc(CAP_M_STORAGE_RETRIES, CAP_LABELS(c));
  c[63] = '\0';
  CHECK(cap_metrics_value(CAP_M_STORAGE_RETRIES, CAP_LABELS(c)) == 1);
  /* A value of exactly 64 bytes is kept whole. */
  memset(c, 'd', 64);
  c[64] = '\0';
  cap_metrics_inc(CAP_M_STORAGE_RETRIES, CAP_LABELS(c));
  r = render_one(CAP_M_STORAGE_RETRIES);
  snprintf(line, sizeof(line), "\ncap_storage_retries_total{operation=\"%s\"} 1\n", c);
  CHECK(strstr(r, line) != NULL);
  free(r);
  cap_metrics_free();
}

static void test_overflow(void) {
  cap_metrics_init();
  char v[32];
  for (int i = 0; i < CAP_METRICS_MAX_SERIES; i++) {
    snprintf(v, sizeof(v), "s%d", i);
    cap_metrics_inc(CAP_M_RATE_LIMITED, CAP_LABELS(v));
  }
  CHECK_EQ_INT(cap_metrics_series(CAP_M_RATE_LIMITED), 128);
  CHECK(cap_metrics_value(CAP_M_LABEL_OVERFLOW, NULL) == 0);
  CHECK(cap_metrics_value(CAP_M_RATE_LIMITED, CAP_LABELS("other")) == 0);
  /* The 129th label set goes to "other", and so does every new one after. */
  cap_metrics_inc(CAP_M_RATE_LIMITED, CAP_LABELS("s128"));
  CHECK_EQ_INT(cap_metrics_series(CAP_M_RATE_LIMITED), 129);
  CHECK(cap_metrics_value(CAP_M_RATE_LIMITED, CAP_LABELS("other")) == 1);
  CHECK(cap_metrics_value(CAP_M_RATE_LIMITED, CAP_LABELS("s128")) == 0);
  CHECK(cap_metrics_value(CAP_M_LABEL_OVERFLOW, NULL) == 1);
  cap_metrics_add(CAP_M_RATE_LIMITED, CAP_LABELS("s129"), 3);
  cap_metrics_inc(CAP_M_RATE_LIMITED, CAP_LABELS("s128"));
  CHECK_EQ_INT(cap_metrics_series(CAP_M_RATE_LIMITED), 129);
  CHECK(cap_metrics_value(CAP_M_RATE_LIMITED, CAP_LABELS("other")) == 5);
  CHECK(cap_metrics_value(CAP_M_LABEL_OVERFLOW, NULL) == 3);
  /* Label sets that already have a series keep it. */
  cap_metrics_inc(CAP_M_RATE_LIMITED, CAP_LABELS("s7"));
  CHECK(cap_metrics_value(CAP_M_RATE_LIMITED, CAP_LABELS("s7")) == 2);
  CHECK(cap_metrics_value(CAP_M_LABEL_OVERFLOW, NULL) == 3);
  char *r = render_one(CAP_M_RATE_LIMITED);
  CHECK_EQ_INT(count_lines(r, "cap_rate_limited_total{"), 129);
  CHECK(sample(r, "cap_rate_limited_total{scope=\"other\"}") == 5);
  free(r);
  r = render_one(CAP_M_LABEL_OVERFLOW);
  CHECK(sample(r, "cap_metrics_label_overflow_total") == 3);
  free(r);

  /* Every label of a multi-label family becomes "other", histograms too. */
  for (int i = 0; i <= CAP_METRICS_MAX_SERIES; i++) {
    snprintf(v, sizeof(v), "p%d", i);
    cap_metrics_observe(CAP_M_JOB_DURATION, CAP_LABELS(v), 1);
    cap_metrics_inc(CAP_M_STORAGE_REQUESTS, CAP_LABELS(v, "ok"));
  }
  CHECK_EQ_INT(cap_metrics_series(CAP_M_JOB_DURATION), 129);
  CHECK(cap_metrics_value(CAP_M_JOB_DURATION, CAP_LABELS("other")) == 1);
  CHECK(cap_metrics_value(CAP_M_STORAGE_REQUESTS, CAP_LABELS("other", "other")) == 1);
  CHECK(cap_metrics_value(CAP_M_LABEL_OVERFLOW, NULL) == 5);

  /* Clearing makes room again. */
  cap_metrics_clear(CAP_M_RATE_LIMITED);
  cap_metrics_inc(CAP_M_RATE_LIMITED, CAP_LABELS("s128"));
  CHECK(cap_metrics_value(CAP_M_RATE_LIMITED, CAP_LABELS("s128")) == 1);
  cap_metrics_free();
}

/* Byte-exact output of one counter family and one histogram. */
static void test_exact_render(void) {
  cap_metrics_init();
  cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS("exec", "200"));
  cap_metrics_add(CAP_M_HTTP_REQUESTS, CAP_LABELS("health", "200"), 41);
  cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS("health", "200"));
  cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS("jobs", "404"));
  cap_metrics_observe(CAP_M_JOB_DURATION, CAP_LABELS("h264"), 2.5);
  cap_metrics_observe(CAP_M_JOB_DURATION, CAP_LABELS("h264"), 0.25);
  cap_metrics_observe(CAP_M_JOB_DURATION, CAP_LABELS("h264"), 4000);
  cap_metrics_observe(CAP_M_JOB_DURATION, CAP_LABELS("ffprobe"), 0.1);
  struct cap_buf b;
  cap_buf_init(&b);
  cap_metrics_render_family(CAP_M_HTTP_REQUESTS, &b);
  cap_metrics_render_family(CAP_M_JOB_DURATION, &b);
  static const char want[] =
      "# HELP cap_http_requests_total HTTP requests answered, by route and status code.\n"
      "# TYPE cap_http_requests_total counter\n"
      "cap_http_requests_total{route=\"exec\",status=\"200\"} 1\n"
      "cap_http_requests_total{route=\"health\",status=\"200\"} 42\n"
      "cap_http_requests_total{route=\"jobs\",status=\"404\"} 1\n"
      "# HELP cap_job_duration_seconds Time from queued to finished of jobs, by preset.\n"
      "# TYPE cap_job_duration_seconds histogram\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"0.1\"} 0\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"0.5\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"1\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"2.5\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"5\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"10\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"30\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"60\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"120\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"300\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"600\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"1800\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"3600\"} 2\n"
      "cap_job_duration_seconds_bucket{preset=\"h264\",le=\"+Inf\"} 3\n"
      "cap_job_duration_seconds_sum{preset=\"h264\"} 4002.75\n"
      "cap_job_duration_seconds_count{preset=\"h264\"} 3\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"0.1\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"0.5\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"1\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"2.5\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"5\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"10\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"30\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"60\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"120\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"300\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"600\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"1800\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"3600\"} 1\n"
      "cap_job_duration_seconds_bucket{preset=\"ffprobe\",le=\"+Inf\"} 1\n"
      "cap_job_duration_seconds_sum{preset=\"ffprobe\"} 0.1\n"
      "cap_job_duration_seconds_count{preset=\"ffprobe\"} 1\n";
  CHECK_EQ_MEM(b.data, b.len, want, sizeof(want) - 1);
  cap_buf_free(&b);
  cap_metrics_free();
}

/* Numbers read back exactly in their shortest form, without "-0". */
static void test_number_format(void) {
  static const struct {
    double v;
    const char *text;
  } cases[] = {
      {0, "0"},
      {-0.0, "0"},
      {42, "42"},
      {-5, "-5"},
      {1.5, "1.5"},
      {0.1, "0.1"},
      {1.0 / 3, "0.3333333333333333"},
      {0.1 + 0.2, "0.30000000000000004"},
      {1e-5, "1e-05"},
      {1e20, "1e+20"},
      {123456789012.25, "123456789012.25"},
      {9007199254740992.0, "9007199254740992"},
      {-9007199254740992.0, "-9007199254740992"},
      {INFINITY, "+Inf"},
      {-INFINITY, "-Inf"},
      {NAN, "NaN"},
  };
  cap_metrics_init();
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    cap_metrics_set(CAP_M_UPTIME, NULL, cases[i].v);
    char *r = render_one(CAP_M_UPTIME);
    const char *line = strstr(r, "\ncap_uptime_seconds ");
    if (CHECK(line != NULL)) {
      line += strlen("\ncap_uptime_seconds ");
      size_t n = strcspn(line, "\n");
      if (!CHECK_EQ_MEM(line, n, cases[i].text, strlen(cases[i].text)))
        fprintf(stderr, "  (number case %zu)\n", i);
    }
    free(r);
  }
  cap_metrics_free();
}

/* The whole page: a HELP and a TYPE per family, label-less counters and
 * gauges at 0 before anything happened, build_info set, and every sample
 * line after its family's TYPE. */
static void test_full_render(void) {
  cap_metrics_init();
  CHECK(cap_metrics_value(CAP_M_BUILD_INFO, CAP_LABELS(CAP_VERSION)) == 1);
  struct cap_buf b;
  cap_buf_init(&b);
  cap_metrics_render(&b);
  CHECK_EQ_INT(count_lines(b.data, "# HELP "), CAP_M__COUNT);
  CHECK_EQ_INT(count_lines(b.data, "# TYPE "), CAP_M__COUNT);
  CHECK(sample(b.data, "cap_auth_failures_total") == 0);
  CHECK(sample(b.data, "cap_uptime_seconds") == 0);
  CHECK(sample(b.data, "cap_storage_bytes_downloaded_total") == 0);
  char bi[64];
  snprintf(bi, sizeof(bi), "cap_build_info{version=\"%s\"}", CAP_VERSION);
  CHECK(sample(b.data, bi) == 1);
  /* Labelled families without series print their header only. */
  CHECK(strstr(b.data, "# TYPE cap_jobs gauge\n# HELP ") != NULL);
  CHECK(b.len > 0 && b.data[b.len - 1] == '\n');
  char family[128] = "";
  int stray = 0;
  for (char *p = b.data; *p;) {
    char *end = strchr(p, '\n');
    if (strncmp(p, "# TYPE ", 7) == 0) {
      snprintf(family, sizeof(family), "%.*s", (int)strcspn(p + 7, " "), p + 7);
    } else if (*p != '#' && (family[0] == '\0' || strncmp(p, family, strlen(family)) != 0)) {
      stray++;
    }
    p = end + 1;
  }
  CHECK_EQ_INT(stray, 0);
  /* Rendering appends. */
  size_t len = b.len;
  cap_metrics_render(&b);
  CHECK_EQ_INT(b.len, 2 * len);
  cap_buf_free(&b);
  cap_metrics_free();
}

/* Init is idempotent, free may repeat, and use after free starts afresh
 * (leaks show under the sanitizer build). */
static void test_lifecycle(void) {
  cap_metrics_init();
  cap_metrics_inc(CAP_M_CHILD_EXITS, CAP_LABELS("ffmpeg", "0"));
  cap_metrics_init();
  CHECK(cap_metrics_value(CAP_M_CHILD_EXITS, CAP_LABELS("ffmpeg", "0")) == 1);
  CHECK_EQ_INT(cap_metrics_series(CAP_M_BUILD_INFO), 1);
  CHECK_EQ_INT(cap_metrics_series(CAP_M_AUTH_FAILURES), 1);
  cap_metrics_free();
  cap_metrics_free();
  /* Without init, the first call sets the registry up. */
  cap_metrics_inc(CAP_M_CHILD_EXITS, CAP_LABELS("ffprobe", "SIGKILL"));
  CHECK(cap_metrics_value(CAP_M_CHILD_EXITS, CAP_LABELS("ffmpeg", "0")) == 0);
  CHECK(cap_metrics_value(CAP_M_CHILD_EXITS, CAP_LABELS("ffprobe", "SIGKILL")) == 1);
  CHECK(cap_metrics_value(CAP_M_BUILD_INFO, CAP_LABELS(CAP_VERSION)) == 1);
  cap_metrics_init();
  CHECK_EQ_INT(cap_metrics_series(CAP_M_CHILD_EXITS), 1);
  /* Ids out of range are ignored. */
  cap_metrics_inc(CAP_M__COUNT, NULL);
  CHECK(cap_metrics_value(CAP_M__COUNT, NULL) == 0);
  cap_metrics_free();
}

int main(void) {
  test_counters();
  test_gauges();
  test_histogram_buckets();
  test_escaping();
  test_truncation();
  test_overflow();
  test_exact_render();
  test_number_format();
  test_full_render();
  test_lifecycle();
  return check_report();
}
