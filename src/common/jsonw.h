#ifndef CAP_JSONW_H
#define CAP_JSONW_H

#include "buf.h"

#include <stddef.h>

/* Appends s (n bytes) to b as a quoted JSON string.  Control characters are
 * escaped and bytes that are not valid UTF-8 become U+FFFD, so the output is
 * always valid JSON whatever a client sent. */
void cap_jsonw_str(struct cap_buf *b, const char *s, size_t n);

/* Returns 1 when the n bytes at s are valid UTF-8 (no overlongs, no
 * surrogates, nothing above U+10FFFF), else 0. */
int cap_jsonw_utf8_valid(const char *s, size_t n);

#endif
