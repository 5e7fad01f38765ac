#include "log.h"

#include "check.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[64];
static char path[128];

/* Returns the whole file (NUL-terminated; *len without the NUL), or NULL. */
static char *slurp(const char *p, size_t *len) {
  FILE *f = fopen(p, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 4096, n = 0;
  char *data = malloc(cap);
  size_t got;
  while ((got = fread(data + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n - 1 == 0) {
      cap *= 2;
      data = realloc(data, cap);
    }
  }
  fclose(f);
  data[n] = '\0';
  if (len)
    *len = n;
  return data;
}

static size_t file_size(const char *p) {
  struct stat st;
  if (stat(p, &st) != 0)
    return (size_t)-1;
  return (size_t)st.st_size;
}

static int digits(const char *s, int n) {
  for (int i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

/* Checks the shape YYYY-MM-DDTHH:MM:SS.mmmZ and sane field ranges. */
static int ts_ok(const char *s) {
  if (s == NULL || strlen(s) != 24)
    return 0;
  if (!digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2) ||
      s[10] != 'T' || !digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' ||
      !digits(s + 17, 2) || s[19] != '.' || !digits(s + 20, 3) || s[23] != 'Z')
    return 0;
  int mon = atoi(s + 5), day = atoi(s + 8), hour = atoi(s + 11), min = atoi(s + 14),
      sec = atoi(s + 17);
  return mon >= 1 && mon <= 12 && day >= 1 && day <= 31 && hour < 24 && min < 60 && sec <= 60;
}

/* Seconds between the timestamp and now. */
static double ts_age(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof(tm));
  tm.tm_year = atoi(s) - 1900;
  tm.tm_mon = atoi(s + 5) - 1;
  tm.tm_mday = atoi(s + 8);
  tm.tm_hour = atoi(s + 11);
  tm.tm_min = atoi(s + 14);
  tm.tm_sec = atoi(s + 17);
  time_t t = timegm(&tm);
  return difftime(time(NULL), t);
}

/* Splits text into lines and parses each; returns the number of lines and
 * fills out[] (the caller deletes them).  Lines that do not parse are NULL. */
static int parse_lines(char *text, cJSON **out, int max) {
  int n = 0;
  char *p = text;
  while (*p && n < max) {
    char *nl = strchr(p, '\n');
    if (!CHECK(nl != NULL)) /* Every line ends with a newline. */
      nl = p + strlen(p);
    out[n] = cJSON_ParseWithLength(p, (size_t)(nl - p));
    if (!CHECK(cJSON_IsObject(out[n]))) {
      fprintf(stderr, "  line %d does not parse: %.*s\n", n + 1, (int)(nl - p), p);
    }
    n++;
    p = *nl ? nl + 1 : nl;
  }
  return n;
}

static const char *str_field(const cJSON *o, const char *k) {
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static void test_timestamp(void) {
  char ts[32];
  cap_log_timestamp(ts, sizeof(ts));
  if (!CHECK(ts_ok(ts)))
    fprintf(stderr, "  timestamp: %s\n", ts);
  else
    CHECK(fabs(ts_age(ts)) < 5);
  char small[25];
  memset(small, 'x', sizeof(small));
  cap_log_timestamp(small, sizeof(small));
  CHECK_EQ_INT(strlen(small), 24);
  CHECK(ts_ok(small));
}

static void test_levels(void) {
  enum cap_log_level lv = CAP_LOG_ERROR;
  CHECK_EQ_INT(cap_log_parse_level("debug", &lv), 0);
  CHECK_EQ_INT(lv, CAP_LOG_DEBUG);
  CHECK_EQ_INT(cap_log_parse_level("info", &lv), 0);
  CHECK_EQ_INT(lv, CAP_LOG_INFO);
  CHECK_EQ_INT(cap_log_parse_level("warn", &lv), 0);
  CHECK_EQ_INT(lv, CAP_LOG_WARN);
  CHECK_EQ_INT(cap_log_parse_level("error", &lv), 0);
  CHECK_EQ_INT(lv, CAP_LOG_ERROR);
  static const char *const bad[] = {"",        "warning", "inf",    "info ",  " info",
                                    "verbose", "err",     "errors", "debugx", "3"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    lv = CAP_LOG_WARN;
    if (!CHECK_EQ_INT(cap_log_parse_level(bad[i], &lv), -EINVAL))
      fprintf(stderr, "  level \"%s\" accepted\n", bad[i]);
  }
  CHECK_EQ_STR(cap_log_level_name(CAP_LOG_DEBUG), "debug");
  CHECK_EQ_STR(cap_log_level_name(CAP_LOG_INFO), "info");
  CHECK_EQ_STR(cap_log_level_name(CAP_LOG_WARN), "warn");
  CHECK_EQ_STR(cap_log_level_name(CAP_LOG_ERROR), "error");
  cap_log_set_level(CAP_LOG_WARN);
  CHECK_EQ_INT(cap_log_get_level(), CAP_LOG_WARN);
  cap_log_set_level(CAP_LOG_INFO);
  CHECK_EQ_INT(cap_log_get_level(), CAP_LOG_INFO);
}

static void test_fields(void) {
  CHECK_EQ_INT(cap_log_open(path), 0);
  cap_log_set_level(CAP_LOG_DEBUG);

  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "all_types");
  CHECK(r != NULL);
  cap_log_str(r, "s", "plain");
  cap_log_str(r, "q", "say \"hi\"\\ now");
  cap_log_str(r, "nl", "line1\nline2\r\n\tend");
  cap_log_str(r, "bad", "x\xff\xc0\x80y");
  cap_log_str(r, "utf8", "caf\xc3\xa9 \xf0\x9f\x98\x80");
  cap_log_str(r, "null", NULL);
  cap_log_strn(r, "sn", "abcdef", 3);
  cap_log_strn(r, "nul", "a\0b", 3);
  cap_log_int(r, "i", -42);
  cap_log_int(r, "big", 9007199254740993LL);
  cap_log_int(r, "min", -9223372036854775807LL - 1);
  cap_log_double(r, "d", 1.5);
  cap_log_double(r, "dneg", -0.25);
  cap_log_bool(r, "t", 1);
  cap_log_bool(r, "f", 0);
  cap_log_bool(r, "t7", 7);
  cap_log_json(r, "obj", "{\"a\":[1,2]}");
  cap_log_json(r, "arr", "[]");
  cap_log_str(r, "key \"quoted\"\n", "v");
  cap_log_end(r);

  r = cap_log_begin(CAP_LOG_DEBUG, "second");
  cap_log_int(r, "n", 2);
  cap_log_end(r);
  r = cap_log_begin(CAP_LOG_ERROR, "third \"ev\"");
  cap_log_end(r);
  cap_log_flush();

  size_t len;
  char *text = slurp(path, &len);
  if (!CHECK(text != NULL))
    return;
  cJSON *lines[8] = {0};
  int n = parse_lines(text, lines, 8);
  CHECK_EQ_INT(n, 3);
  cJSON *o = lines[0];
  if (cJSON_IsObject(o)) {
    /* ts, level and event come first, in that order. */
    const cJSON *c = o->child;
    CHECK_EQ_STR(c ? c->string : NULL, "ts");
    c = c ? c->next : NULL;
    CHECK_EQ_STR(c ? c->string : NULL, "level");
    c = c ? c->next : NULL;
    CHECK_EQ_STR(c ? c->string : NULL, "event");
    CHECK(ts_ok(str_field(o, "ts")));
    CHECK_EQ_STR(str_field(o, "level"), "info");
    CHECK_EQ_STR(str_field(o, "event"), "all_types");
    CHECK_EQ_STR(str_field(o, "s"), "plain");
    CHECK_EQ_STR(str_field(o, "q"), "say \"hi\"\\ now");
    CHECK_EQ_STR(str_field(o, "nl"), "line1\nline2\r\n\tend");
    CHECK_EQ_STR(str_field(o, "bad"), "x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdy");
    CHECK_EQ_STR(str_field(o, "utf8"), "caf\xc3\xa9 \xf0\x9f\x98\x80");
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "null")));
    CHECK_EQ_STR(str_field(o, "sn"), "abc");
    CHECK(strstr(text, "\"nul\":\"a\\u0000b\"") != NULL);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "i");
    CHECK(cJSON_IsNumber(v) && v->valuedouble == -42);
    CHECK(strstr(text, "\"big\":9007199254740993,") != NULL);
    CHECK(strstr(text, "\"min\":-9223372036854775808,") != NULL);
    v = cJSON_GetObjectItemCaseSensitive(o, "d");
    CHECK(cJSON_IsNumber(v) && v->valuedouble == 1.5);
    v = cJSON_GetObjectItemCaseSensitive(o, "dneg");
    CHECK(cJSON_IsNumber(v) && v->valuedouble == -0.25);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "t")));
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "f")));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "t7")));
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(o, "obj");
    CHECK(cJSON_IsObject(obj) && cJSON_GetArraySize(cJSON_GetObjectItem(obj, "a")) == 2);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "arr");
    CHECK(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 0);
    CHECK_EQ_STR(str_field(o, "key \"quoted\"\n"), "v");
  }
  if (n >= 2 && cJSON_IsObject(lines[1])) {
    CHECK_EQ_STR(str_field(lines[1], "level"), "debug");
    CHECK_EQ_STR(str_field(lines[1], "event"), "second");
  }
  if (n >= 3 && cJSON_IsObject(lines[2])) {
    CHECK_EQ_STR(str_field(lines[2], "level"), "error");
    CHECK_EQ_STR(str_field(lines[2], "event"), "third \"ev\"");
  }
  for (int i = 0; i < n; i++)
    cJSON_Delete(lines[i]);
  free(text);
  cap_log_close();
  unlink(path);
}

/* A line must stay valid JSON whatever double it is given. */
static void test_double_not_finite(void) {
  CHECK_EQ_INT(cap_log_open(path), 0);
  cap_log_set_level(CAP_LOG_INFO);
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "nan");
  cap_log_double(r, "d", NAN);
  cap_log_end(r);
  r = cap_log_begin(CAP_LOG_INFO, "inf");
  cap_log_double(r, "d", -INFINITY);
  cap_log_end(r);
  cap_log_flush();
  char *text = slurp(path, NULL);
  if (CHECK(text != NULL)) {
    cJSON *lines[4] = {0};
    int n = parse_lines(text, lines, 4);
    CHECK_EQ_INT(n, 2);
    for (int i = 0; i < n; i++)
      cJSON_Delete(lines[i]);
  }
  free(text);
  cap_log_close();
  unlink(path);
}

static void test_filtering_and_buffering(void) {
  CHECK_EQ_INT(cap_log_open(path), 0);
  cap_log_set_level(CAP_LOG_WARN);
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "filtered");
  CHECK(r == NULL);
  /* Every call accepts the NULL record. */
  cap_log_str(r, "k", "v");
  cap_log_strn(r, "k", "v", 1);
  cap_log_int(r, "k", 1);
  cap_log_double(r, "k", 1.0);
  cap_log_bool(r, "k", 1);
  cap_log_json(r, "k", "{}");
  cap_log_end(r);
  CHECK(cap_log_begin(CAP_LOG_DEBUG, "filtered") == NULL);
  cap_log_flush();
  CHECK_EQ_INT(file_size(path), 0);

  /* Warnings go out at once, without a flush. */
  r = cap_log_begin(CAP_LOG_WARN, "kept");
  CHECK(r != NULL);
  cap_log_end(r);
  size_t after_warn = file_size(path);
  CHECK(after_warn > 0);

  /* Info lines wait for cap_log_flush. */
  cap_log_set_level(CAP_LOG_INFO);
  r = cap_log_begin(CAP_LOG_INFO, "buffered");
  CHECK(r != NULL);
  cap_log_end(r);
  CHECK_EQ_INT(file_size(path), after_warn);
  cap_log_flush();
  CHECK(file_size(path) > after_warn);

  char *text = slurp(path, NULL);
  if (CHECK(text != NULL)) {
    cJSON *lines[4] = {0};
    int n = parse_lines(text, lines, 4);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
      CHECK_EQ_STR(str_field(lines[0], "event"), "kept");
      CHECK_EQ_STR(str_field(lines[0], "level"), "warn");
      CHECK_EQ_STR(str_field(lines[1], "event"), "buffered");
    }
    for (int i = 0; i < n; i++)
      cJSON_Delete(lines[i]);
  }
  free(text);
  cap_log_close();
  unlink(path);
}

static void test_append_and_reopen(void) {
  char rotated[160];
  snprintf(rotated, sizeof(rotated), "%s.1", path);

  /* Opening appends to what is there. */
  FILE *f = fopen(path, "w");
  fputs("{\"old\":true}\n", f);
  fclose(f);
  CHECK_EQ_INT(cap_log_open(path), 0);
  cap_log_set_level(CAP_LOG_INFO);
  cap_log_end(cap_log_begin(CAP_LOG_INFO, "before_rotate"));
  cap_log_flush();

  CHECK_EQ_INT(rename(path, rotated), 0);
  /* Until the reopen, lines still go to the moved file. */
  cap_log_end(cap_log_begin(CAP_LOG_INFO, "still_old"));
  cap_log_flush();
  CHECK_EQ_INT(cap_log_reopen(), 0);
  CHECK_EQ_INT(access(path, F_OK), 0);
  cap_log_end(cap_log_begin(CAP_LOG_INFO, "after_rotate"));
  cap_log_flush();

  char *old = slurp(rotated, NULL);
  char *cur = slurp(path, NULL);
  if (CHECK(old != NULL && cur != NULL)) {
    CHECK(strncmp(old, "{\"old\":true}\n", 13) == 0);
    CHECK(strstr(old, "\"before_rotate\"") != NULL);
    CHECK(strstr(old, "\"still_old\"") != NULL);
    CHECK(strstr(old, "\"after_rotate\"") == NULL);
    CHECK(strstr(cur, "\"after_rotate\"") != NULL);
    CHECK(strstr(cur, "\"before_rotate\"") == NULL);
    cJSON *lines[4] = {0};
    int n = parse_lines(cur, lines, 4);
    CHECK_EQ_INT(n, 1);
    for (int i = 0; i < n; i++)
      cJSON_Delete(lines[i]);
  }
  free(old);
  free(cur);
  cap_log_close();
  /* After close there is no file to reopen. */
  CHECK_EQ_INT(cap_log_reopen(), 0);
  unlink(rotated);
  unlink(path);

  /* A path that cannot be opened gives -errno and keeps the current sink. */
  char missing[160];
  snprintf(missing, sizeof(missing), "%s/no/such/dir/log", dir);
  CHECK_EQ_INT(cap_log_open(missing), -ENOENT);
}

/* Switching to stdout must really leave the file: a later reopen (SIGUSR1)
 * must not go back to it. */
static void test_open_null_after_file(void) {
  char out_path[160];
  snprintf(out_path, sizeof(out_path), "%s/stdout", dir);
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!CHECK(saved >= 0 && fd >= 0))
    return;
  dup2(fd, STDOUT_FILENO);
  close(fd);

  CHECK_EQ_INT(cap_log_open(path), 0);
  cap_log_set_level(CAP_LOG_INFO);
  cap_log_end(cap_log_begin(CAP_LOG_INFO, "to_file"));
  cap_log_flush();
  CHECK_EQ_INT(cap_log_open(NULL), 0);
  cap_log_end(cap_log_begin(CAP_LOG_INFO, "to_stdout_1"));
  cap_log_flush();
  CHECK_EQ_INT(cap_log_reopen(), 0);
  cap_log_end(cap_log_begin(CAP_LOG_INFO, "to_stdout_2"));
  cap_log_flush();
  cap_log_close();

  fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  close(saved);

  char *file = slurp(path, NULL);
  char *out = slurp(out_path, NULL);
  if (CHECK(file != NULL && out != NULL)) {
    CHECK(strstr(file, "to_file") != NULL);
    CHECK(strstr(out, "to_stdout_1") != NULL);
    if (!CHECK(strstr(out, "to_stdout_2") != NULL))
      fprintf(stderr, "  after cap_log_open(NULL), cap_log_reopen() went back to %s\n", path);
    CHECK(strstr(file, "to_stdout") == NULL);
  }
  free(file);
  free(out);
  unlink(out_path);
  unlink(path);
}

int main(void) {
  snprintf(dir, sizeof(dir), "/tmp/cap-test-log-XXXXXX");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(path, sizeof(path), "%s/cap.log", dir);

  test_timestamp();
  test_levels();
  test_fields();
  test_double_not_finite();
  test_filtering_and_buffering();
  test_append_and_reopen();
  test_open_null_after_file();

  rmdir(dir);
  return check_report();
}
