#ifndef CAP_CLIMITS_H
#define CAP_CLIMITS_H

#include <stddef.h>

/* Limits for the children of one resource class (class_limits in the
 * config): how nice they run, their I/O priority, their memory ceiling and
 * their thread count.  A preset may override nice, memory_mb and threads. */
struct cap_climit {
  char name[32];
  int nice;             /* 0..19; 0 leaves the server's priority. */
  int ionice_class;     /* 0 unchanged, 2 best-effort, 3 idle. */
  int ionice_level;     /* 0..7 for best-effort. */
  int memory_mb;        /* RLIMIT_DATA; 0: no limit. */
  int address_space_mb; /* RLIMIT_AS; 0: no limit. */
  int threads;          /* ffmpeg -threads / -filter_threads; 0: ffmpeg decides. */
};

struct cap_climits {
  struct cap_climit *v;
  size_t n;
};

/* Parses class_limits JSON ({"cpu":{"nice":10,"ionice":"best-effort:7",
 * "memory_mb":8192,"address_space_mb":0,"threads":0},...}) into out, which
 * the caller frees with cap_climits_free.  Returns 0 or -EINVAL with one
 * line in err. */
int cap_climits_parse(const char *json, struct cap_climits *out, char *err, size_t errlen);
void cap_climits_free(struct cap_climits *l);
/* Returns the limits of class cls; a class that was not configured gets
 * all zeros (no limit, normal priority). */
struct cap_climit cap_climits_get(const struct cap_climits *l, const char *cls);

#endif
