#ifndef CAP_KEY_H
#define CAP_KEY_H

#include <stddef.h>

#define CAP_KEY_MAX 1024

/* Checks an object key from a client: 1-1024 bytes of valid UTF-8, no
 * control characters, no leading '/', no empty, "." or ".." segment, so that
 * a key can never name anything outside the store's root.  Returns 0, or
 * -EINVAL with a static reason in *why. */
int cap_key_validate(const char *s, size_t n, const char **why);

#endif
