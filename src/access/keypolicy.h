#ifndef CAP_KEYPOLICY_H
#define CAP_KEYPOLICY_H

#include <stddef.h>

/* Per-token allowed key prefixes, so that a leaked render token cannot
 * read or overwrite what it has no business with: {"render":{"input":
 * ["uploads/"],"output":["renders/"]}}.  A token not listed may use any
 * key; a listed token only keys under one of its prefixes. */
struct cap_keypolicy;

/* Parses json (may be NULL: no policy) into *out, which the caller frees
 * with cap_keypolicy_free.  Returns 0 or -EINVAL with the reason in err. */
int cap_keypolicy_parse(const char *json, struct cap_keypolicy **out, char *err, size_t errlen);
void cap_keypolicy_free(struct cap_keypolicy *kp);
/* Returns 1 when token name may read (output 0) or write (output 1) key. */
int cap_keypolicy_allows(const struct cap_keypolicy *kp, const char *name, int output,
                         const char *key);

#endif
