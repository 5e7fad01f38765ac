#include "log.h"

#include "alloc.h"
#include "buf.h"
#include "jsonw.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Buffered output is flushed past this size even inside one loop turn. */
#define LOG_FLUSH_AT (64 * 1024)

struct cap_log_rec {
  struct cap_buf line;
  enum cap_log_level level;
};

static struct {
  int fd;
  char *path;
  enum cap_log_level level;
  struct cap_buf out;
  struct cap_log_rec rec;
} logger = {.fd = STDOUT_FILENO, .level = CAP_LOG_INFO};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int cap_log_open(const char *path) {
  if (path == NULL) {
    cap_log_flush();
    if (logger.fd != STDOUT_FILENO)
      close(logger.fd);
    logger.fd = STDOUT_FILENO;
    free(logger.path);
    logger.path = NULL;
    return 0;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0)
    return -errno;
  cap_log_flush();
  if (logger.fd != STDOUT_FILENO)
    close(logger.fd);
  logger.fd = fd;
  if (logger.path != path) {
    free(logger.path);
    logger.path = xstrdup(path);
  }
  return 0;
}

int cap_log_reopen(void) {
  if (logger.path == NULL)
    return 0;
  char *path = logger.path;
  return cap_log_open(path);
}

void cap_log_close(void) {
  cap_log_flush();
  if (logger.fd != STDOUT_FILENO)
    close(logger.fd);
  logger.fd = STDOUT_FILENO;
  free(logger.path);
  logger.path = NULL;
  cap_buf_free(&logger.out);
  cap_buf_free(&logger.rec.line);
}

void cap_log_set_level(enum cap_log_level level) {
  logger.level = level;
}

enum cap_log_level cap_log_get_level(void) {
  return logger.level;
}

const char *cap_log_level_name(enum cap_log_level level) {
  return level_names[level];
}

int cap_log_parse_level(const char *s, enum cap_log_level *out) {
  for (int i = 0; i < 4; i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (enum cap_log_level)i;
      return 0;
    }
  }
  return -EINVAL;
}

void cap_log_timestamp(char *out, size_t n) {
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
}

static void key(struct cap_log_rec *r, const char *k) {
  cap_buf_putc(&r->line, ',');
  cap_jsonw_str(&r->line, k, strlen(k));
  cap_buf_putc(&r->line, ':');
}

struct cap_log_rec *cap_log_begin(enum cap_log_level level, const char *event) {
  if (level < logger.level)
    return NULL;
  struct cap_log_rec *r = &logger.rec;
  char ts[32];
  cap_log_timestamp(ts, sizeof(ts));
  cap_buf_reset(&r->line);
  r->level = level;
  cap_buf_printf(&r->line, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, level_names[level]);
  cap_log_str(r, "event", event);
  return r;
}

void cap_log_str(struct cap_log_rec *r, const char *k, const char *val) {
  if (r == NULL)
    return;
  if (val == NULL) {
    key(r, k);
    cap_buf_puts(&r->line, "null");
    return;
  }
  cap_log_strn(r, k, val, strlen(val));
}

void cap_log_strn(struct cap_log_rec *r, const char *k, const char *val, size_t n) {
  if (r == NULL)
    return;
  key(r, k);
  cap_jsonw_str(&r->line, val, n);
}

void cap_log_int(struct cap_log_rec *r, const char *k, long long val) {
  if (r == NULL)
    return;
  key(r, k);
  cap_buf_printf(&r->line, "%lld", val);
}

void cap_log_double(struct cap_log_rec *r, const char *k, double val) {
  if (r == NULL)
    return;
  key(r, k);
  if (isfinite(val))
    cap_buf_printf(&r->line, "%.3f", val);
  else
    cap_buf_puts(&r->line, "null"); /* JSON has no NaN or infinity. */
}

void cap_log_bool(struct cap_log_rec *r, const char *k, int val) {
  if (r == NULL)
    return;
  key(r, k);
  cap_buf_puts(&r->line, val ? "true" : "false");
}

void cap_log_json(struct cap_log_rec *r, const char *k, const char *json) {
  if (r == NULL)
    return;
  key(r, k);
  cap_buf_puts(&r->line, json);
}

void cap_log_end(struct cap_log_rec *r) {
  if (r == NULL)
    return;
  cap_buf_append(&r->line, "}\n", 2);
  cap_buf_append(&logger.out, r->line.data, r->line.len);
  /* Warnings and errors are rare and matter most when the process is about
   * to die, so they go out at once. */
  if (logger.out.len >= LOG_FLUSH_AT || r->level >= CAP_LOG_WARN)
    cap_log_flush();
}

void cap_log_flush(void) {
  size_t off = 0;
  while (off < logger.out.len) {
    ssize_t n = write(logger.fd, logger.out.data + off, logger.out.len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* A broken log sink must not take the server down. */
    off += (size_t)n;
  }
  cap_buf_reset(&logger.out);
}
