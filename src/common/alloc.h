#ifndef CAP_ALLOC_H
#define CAP_ALLOC_H

#include <stddef.h>

/* Allocation that cannot fail: out of memory aborts the process with a
 * message, so callers never carry an allocation error path. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
/* Returns a copy of s that the caller frees. */
char *xstrdup(const char *s);
/* Returns a NUL-terminated copy of the first n bytes of s; the caller frees it. */
char *xstrndup(const char *s, size_t n);

#endif
