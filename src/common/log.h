#ifndef CAP_LOG_H
#define CAP_LOG_H

#include <stddef.h>

/* Structured logging: one JSON object per line with ts, level and event
 * first.  The logger is process-wide (like a server's log in valkey): every
 * module logs, none owns it.  Lines are buffered and written out once per
 * loop iteration by cap_log_flush, so logging never costs a syscall per
 * request. */

enum cap_log_level { CAP_LOG_DEBUG = 0, CAP_LOG_INFO, CAP_LOG_WARN, CAP_LOG_ERROR };

struct cap_log_rec;

/* Opens path for appending (NULL means stdout).  Returns 0 or -errno. */
int cap_log_open(const char *path);
/* Reopens the log file after logrotate moved it.  Returns 0 or -errno. */
int cap_log_reopen(void);
void cap_log_close(void);
void cap_log_set_level(enum cap_log_level level);
enum cap_log_level cap_log_get_level(void);
/* Parses "debug", "info", "warn" or "error".  Returns 0 or -EINVAL. */
int cap_log_parse_level(const char *s, enum cap_log_level *out);
const char *cap_log_level_name(enum cap_log_level level);

/* Starts a line; returns NULL when level is filtered out (every cap_log_*
 * call accepts NULL and does nothing).  The record is the logger's own. */
struct cap_log_rec *cap_log_begin(enum cap_log_level level, const char *event);
void cap_log_str(struct cap_log_rec *r, const char *key, const char *val);
void cap_log_strn(struct cap_log_rec *r, const char *key, const char *val, size_t n);
void cap_log_int(struct cap_log_rec *r, const char *key, long long val);
void cap_log_double(struct cap_log_rec *r, const char *key, double val);
void cap_log_bool(struct cap_log_rec *r, const char *key, int val);
/* Adds a value that is already valid JSON text (an object or array). */
void cap_log_json(struct cap_log_rec *r, const char *key, const char *json);
void cap_log_end(struct cap_log_rec *r);

/* Writes buffered lines out; called once per loop iteration and at exit. */
void cap_log_flush(void);

/* Formats now as RFC 3339 UTC with milliseconds into out (>= 25 bytes). */
void cap_log_timestamp(char *out, size_t n);

#endif
