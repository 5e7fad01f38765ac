#ifndef CAP_AUTH_H
#define CAP_AUTH_H

#include <stddef.h>

#define CAP_AUTH_NAME_MAX  64
#define CAP_AUTH_TOKEN_MIN 16
#define CAP_AUTH_TOKEN_MAX 256

/* A configured token is kept only as its SHA-256 digest: comparing equal
 * length digests with CRYPTO_memcmp leaks neither content nor length. */
struct cap_auth_token {
  char name[CAP_AUTH_NAME_MAX + 1];
  unsigned char digest[32];
};

/* The set of accepted bearer tokens. */
struct cap_auth {
  struct cap_auth_token *v;
  size_t n;
};

void cap_auth_init(struct cap_auth *a);
void cap_auth_free(struct cap_auth *a);
/* Adds one token under name.  Returns 0 or -EINVAL with the reason in err. */
int cap_auth_add(struct cap_auth *a, const char *name, const char *token, size_t len, char *err,
                 size_t errlen);
/* Adds every token of a token file ("[name:]token" lines, # comments).  Sets
 * *loose_mode when the file is readable by group or others.  Returns 0 or a
 * negative errno with the reason in err; on failure a is unchanged. */
int cap_auth_load_file(struct cap_auth *a, const char *path, int *loose_mode, char *err,
                       size_t errlen);
/* Checks an Authorization header value ("Bearer <token>").  Returns the
 * matching token's name (owned by a) or NULL.  Every token is compared, so
 * the time taken does not depend on which one matched. */
const char *cap_auth_check(const struct cap_auth *a, const char *hdr, size_t len);
/* Returns 1 when the n bytes at s equal one of the tokens, else 0. */
int cap_auth_is_token(const struct cap_auth *a, const char *s, size_t n);
/* Moves the tokens of src into dst, freeing what dst held. */
void cap_auth_replace(struct cap_auth *dst, struct cap_auth *src);

#endif
