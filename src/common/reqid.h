#ifndef CAP_REQID_H
#define CAP_REQID_H

#include <stddef.h>

/* Request ids: 32 hex characters of 128 random bits: unique, and telling
 * nothing about other requests. */
#define CAP_REQID_MAX 64

/* Seeds the generator from OpenSSL's RAND_bytes.  Returns 0 or -EIO. */
int cap_reqid_init(void);
/* Writes a fresh 32-character id and its NUL into out (>= 33 bytes). */
void cap_reqid_generate(char *out);
/* Job ids: the same 128 random bits written as 22 characters of
 * base64url (no padding), short enough for a URL path. */
#define CAP_REQID_JOB_LEN 22
/* Writes a fresh job id and its NUL into out (>= CAP_REQID_JOB_LEN + 1 bytes). */
void cap_reqid_generate_job(char *out);
/* Returns 1 when a client-sent id is sane to echo: 1-64 of [A-Za-z0-9._:-]. */
int cap_reqid_valid(const char *s, size_t n);

#endif
