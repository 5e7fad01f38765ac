#ifndef CAP_SIGV4_H
#define CAP_SIGV4_H

#include "buf.h"

#include <stddef.h>
#include <time.h>

/* AWS Signature Version 4 for S3 and S3-compatible stores (R2: region
 * "auto", service "s3"), in the Authorization header.  S3 rules apply: the
 * path is percent-encoded once and never normalized, so "a//b" and "a/./b"
 * are distinct keys.  The payload is either hashed by the caller (small
 * bodies) or "UNSIGNED-PAYLOAD" (streamed parts); streaming aws-chunked
 * signing is not offered because R2 rejects it. */

/* The literal that signs a request without hashing its body. */
#define CAP_SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* The hex SHA-256 of no bytes, for requests without a body. */
#define CAP_SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct cap_sigv4_creds {
  const char *access_key;
  const char *secret_key;
  const char *region;
  const char *service;
};

/* A header to sign besides the three always signed; the name in any case. */
struct cap_sigv4_header {
  const char *name;
  const char *value;
};

/* A query parameter, raw (not encoded); value may be "" ("uploads" is
 * {"uploads", ""}). */
struct cap_sigv4_query {
  const char *name;
  const char *value;
};

/* Signs one request: writes the Authorization header value into
 * authorization and, when not NULL, the canonical request and string to
 * sign into the debugging buffers (each buffer's old contents replaced).
 * host carries ":port" when the port is not the scheme's default; path is
 * the raw object path ("/bucket/key with spaces"), which the URL must carry
 * encoded by cap_sigv4_uri_encode(keep_slash 1); q is the raw query, which
 * the URL must carry as cap_sigv4_url_query writes it; h are extra
 * headers to sign (in any order), sent with the same values.  Host, x-amz-date (amz_date,
 * "YYYYMMDDTHHMMSSZ") and x-amz-content-sha256 (payload_hash: 64 lowercase
 * hex digits or CAP_SIGV4_UNSIGNED_PAYLOAD) are always signed and must be
 * sent too, so h may not name them.  Returns 0, or -EINVAL (outputs
 * untouched) on a malformed argument or a header given twice. */
int cap_sigv4_sign(const struct cap_sigv4_creds *c, const char *method, const char *host,
                   const char *path, const struct cap_sigv4_query *q, size_t nq,
                   const struct cap_sigv4_header *h, size_t nh, const char *payload_hash,
                   const char *amz_date, struct cap_buf *authorization,
                   struct cap_buf *canonical_request, struct cap_buf *string_to_sign);
/* Appends the n bytes at s percent-encoded (every byte outside A-Za-z0-9-._~
 * as %XX, uppercase), keeping '/' when keep_slash (a path) and encoding it
 * otherwise (a query name or value). */
void cap_sigv4_uri_encode(struct cap_buf *out, const char *s, size_t n, int keep_slash);
/* Writes the lowercase hex SHA-256 of the n bytes at data and a NUL into out. */
void cap_sigv4_sha256_hex(const void *data, size_t n, char out[65]);
/* Appends the canonical query exactly as it is signed (names and values
 * encoded, sorted by name then value, "name=value" joined by '&').
 * Appends nothing when nq is 0. */
void cap_sigv4_query_string(struct cap_buf *out, const struct cap_sigv4_query *q, size_t nq);
/* Appends the query for the URL: as cap_sigv4_query_string, except that a
 * parameter with an empty value is its name alone ("uploads", the form the
 * SDKs send; the store signs it as "uploads="), so that URL and signature
 * cannot otherwise disagree. */
void cap_sigv4_url_query(struct cap_buf *out, const struct cap_sigv4_query *q, size_t nq);
/* Writes t as an amz_date (YYYYMMDDTHHMMSSZ, UTC) and a NUL into out. */
void cap_sigv4_amz_date(time_t t, char out[17]);

#endif
