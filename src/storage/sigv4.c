#include "sigv4.h"

#include "alloc.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#define ALGORITHM "AWS4-HMAC-SHA256"
/* A bound on the secret so that the HMAC key length fits OpenSSL's int;
 * real secrets are 40 (AWS) or 64 (R2) characters. */
#define SECRET_MAX 1024

/* One canonical query parameter or header: both strings owned. */
struct pair {
  char *name;
  char *value;
};

static int is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

void cap_sigv4_uri_encode(struct cap_buf *out, const char *s, size_t n, int keep_slash) {
  static const char hex[] = "0123456789ABCDEF";
  /* Reserving on an empty buffer allocates without writing the NUL, so
   * reserve only when bytes will follow. */
  if (n)
    cap_buf_reserve(out, n);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      cap_buf_putc(out, (char)c);
    } else {
      char e[3] = {'%', hex[c >> 4], hex[c & 15]};
      cap_buf_append(out, e, sizeof(e));
    }
  }
}

static void hex_lower(const unsigned char *p, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[p[i] >> 4];
    out[2 * i + 1] = hex[p[i] & 15];
  }
  out[2 * n] = '\0';
}

void cap_sigv4_sha256_hex(const void *data, size_t n, char out[65]) {
  unsigned char d[32];
  unsigned int len = sizeof(d);
  if (EVP_Digest(data, n, d, &len, EVP_sha256(), NULL) != 1)
    abort(); /* SHA-256 cannot fail short of a broken OpenSSL. */
  hex_lower(d, sizeof(d), out);
}

static void hmac_sha256(const void *key, size_t keylen, const char *data, size_t n,
                        unsigned char out[32]) {
  unsigned int len = 32;
  if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data, n, out, &len) == NULL)
    abort(); /* Like SHA-256 itself, HMAC fails only with a broken OpenSSL. */
}

static int pair_cmp(const void *a, const void *b) {
  const struct pair *x = a, *y = b;
  int r = strcmp(x->name, y->name);
  return r ? r : strcmp(x->value, y->value);
}

static void pairs_free(struct pair *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].name);
    free(v[i].value);
  }
  free(v);
}

static char *encode_dup(const char *s) {
  struct cap_buf b;
  cap_buf_init(&b);
  if (s)
    cap_sigv4_uri_encode(&b, s, strlen(s), 0);
  return cap_buf_steal(&b);
}

/* Writes the canonical query; bare_empty writes a parameter with an empty
 * value as its name alone (the URL form), not "name=" (the signed form). */
static void write_query(struct cap_buf *out, const struct cap_sigv4_query *q, size_t nq,
                        int bare_empty) {
  if (nq == 0)
    return;
  /* Sorting the encoded pairs, not the raw ones and not the joined
   * "name=value" strings, is what the spec asks: raw "\xe1..." sorts after
   * "X" but its encoding "%E1" before it, and joined, "a-b=1" would sort
   * before "a=2" although name "a" comes first. */
  struct pair *v = xcalloc(nq, sizeof(*v));
  for (size_t i = 0; i < nq; i++) {
    v[i].name = encode_dup(q[i].name);
    v[i].value = encode_dup(q[i].value);
  }
  qsort(v, nq, sizeof(*v), pair_cmp);
  for (size_t i = 0; i < nq; i++) {
    if (i)
      cap_buf_putc(out, '&');
    cap_buf_puts(out, v[i].name);
    if (bare_empty && v[i].value[0] == '\0')
      continue;
    cap_buf_putc(out, '=');
    cap_buf_puts(out, v[i].value);
  }
  pairs_free(v, nq);
}

void cap_sigv4_query_string(struct cap_buf *out, const struct cap_sigv4_query *q, size_t nq) {
  write_query(out, q, nq, 0);
}

void cap_sigv4_url_query(struct cap_buf *out, const struct cap_sigv4_query *q, size_t nq) {
  write_query(out, q, nq, 1);
}

void cap_sigv4_amz_date(time_t t, char out[17]) {
  struct tm tm;
  /* A time beyond year 9999 cannot be written in 16 characters; an
   * impossible date makes the store refuse the request loudly instead. */
  if (gmtime_r(&t, &tm) == NULL || strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
    memcpy(out, "00000000T000000Z", 17);
}

/* Returns 1 when s is a non-empty word that fits between the '/' of a
 * credential scope and the ',' of the Authorization header. */
static int valid_scope_part(const char *s) {
  if (s == NULL || *s == '\0')
    return 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= 0x20 || c >= 0x7f || c == '/' || c == ',' || c == '=')
      return 0;
  }
  return 1;
}

static int valid_amz_date(const char *s) {
  if (s == NULL || strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
    return 0;
  for (int i = 0; i < 15; i++)
    if (i != 8 && (s[i] < '0' || s[i] > '9'))
      return 0;
  return 1;
}

static int valid_payload_hash(const char *s) {
  if (s == NULL)
    return 0;
  if (strcmp(s, CAP_SIGV4_UNSIGNED_PAYLOAD) == 0)
    return 1;
  if (strlen(s) != 64)
    return 0;
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return 1;
}

static int valid_method(const char *s) {
  if (s == NULL || *s == '\0')
    return 0;
  for (; *s; s++)
    if (*s < 'A' || *s > 'Z')
      return 0;
  return 1;
}

/* Lowercases a header name into a new string, or returns NULL when it is
 * not an HTTP token (which also keeps ':' and line breaks out). */
static char *header_name(const char *s) {
  if (s == NULL || *s == '\0')
    return NULL;
  size_t n = strlen(s);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c))
      return NULL;
  }
  char *r = xstrndup(s, n);
  for (size_t i = 0; i < n; i++)
    if (r[i] >= 'A' && r[i] <= 'Z')
      r[i] = (char)(r[i] - 'A' + 'a');
  return r;
}

/* Canonicalizes a header value: leading and trailing blanks dropped, each
 * inner run of blanks one space.  Tabs count as blanks like spaces, as
 * botocore and Swift's s3api treat them, so both sides agree.  Returns NULL
 * for a control character, which no header line can carry. */
static char *header_value(const char *s) {
  if (s == NULL)
    return NULL;
  struct cap_buf b;
  cap_buf_init(&b);
  int gap = 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == ' ' || c == '\t') {
      gap = b.len > 0;
      continue;
    }
    if (c < 0x20 || c == 0x7f) {
      cap_buf_free(&b);
      return NULL;
    }
    if (gap)
      cap_buf_putc(&b, ' ');
    gap = 0;
    cap_buf_putc(&b, (char)c);
  }
  return cap_buf_steal(&b);
}

/* Builds the sorted canonical header list: h plus host, x-amz-date and
 * x-amz-content-sha256.  Returns 0 or -EINVAL for a malformed header or a
 * name given twice (which includes h naming one of the three). */
static int canonical_headers(const char *host, const struct cap_sigv4_header *h, size_t nh,
                             const char *payload_hash, const char *amz_date, struct pair **out,
                             size_t *nout) {
  size_t n = nh + 3;
  struct pair *v = xcalloc(n, sizeof(*v));
  v[0].name = xstrdup("host");
  v[0].value = header_value(host);
  v[1].name = xstrdup("x-amz-content-sha256");
  v[1].value = xstrdup(payload_hash);
  v[2].name = xstrdup("x-amz-date");
  v[2].value = xstrdup(amz_date);
  int bad = v[0].value == NULL || v[0].value[0] == '\0';
  for (size_t i = 0; i < nh; i++) {
    v[3 + i].name = header_name(h[i].name);
    v[3 + i].value = header_value(h[i].value);
    if (v[3 + i].name == NULL || v[3 + i].value == NULL)
      bad = 1;
  }
  if (!bad) {
    qsort(v, n, sizeof(*v), pair_cmp);
    for (size_t i = 1; i < n; i++)
      if (strcmp(v[i - 1].name, v[i].name) == 0)
        bad = 1;
  }
  if (bad) {
    pairs_free(v, n);
    return -EINVAL;
  }
  *out = v;
  *nout = n;
  return 0;
}

/* Derives the day's signing key and signs sts with it into 64 hex digits.
 * Every intermediate key is wiped: each one signs for a whole day. */
static void signature(const struct cap_sigv4_creds *c, const char *amz_date,
                      const struct cap_buf *sts, char out[65]) {
  size_t slen = strlen(c->secret_key);
  char *k0 = xmalloc(4 + slen);
  memcpy(k0, "AWS4", 4);
  memcpy(k0 + 4, c->secret_key, slen);
  unsigned char k[32], sig[32];
  hmac_sha256(k0, 4 + slen, amz_date, 8, k);
  OPENSSL_cleanse(k0, 4 + slen);
  free(k0);
  hmac_sha256(k, sizeof(k), c->region, strlen(c->region), k);
  hmac_sha256(k, sizeof(k), c->service, strlen(c->service), k);
  hmac_sha256(k, sizeof(k), "aws4_request", 12, k);
  hmac_sha256(k, sizeof(k), sts->data, sts->len, sig);
  OPENSSL_cleanse(k, sizeof(k));
  hex_lower(sig, sizeof(sig), out);
}

int cap_sigv4_sign(const struct cap_sigv4_creds *c, const char *method, const char *host,
                   const char *path, const struct cap_sigv4_query *q, size_t nq,
                   const struct cap_sigv4_header *h, size_t nh, const char *payload_hash,
                   const char *amz_date, struct cap_buf *authorization,
                   struct cap_buf *canonical_request, struct cap_buf *string_to_sign) {
  if (c == NULL || !valid_scope_part(c->access_key) || !valid_scope_part(c->region) ||
      !valid_scope_part(c->service) || c->secret_key == NULL || c->secret_key[0] == '\0' ||
      strlen(c->secret_key) > SECRET_MAX)
    return -EINVAL;
  if (!valid_method(method) || host == NULL || !valid_amz_date(amz_date) ||
      !valid_payload_hash(payload_hash))
    return -EINVAL;
  /* S3 paths are absolute; an empty one is the root, as in "GET ?lifecycle". */
  if (path == NULL || path[0] == '\0')
    path = "/";
  if (path[0] != '/')
    return -EINVAL;
  for (size_t i = 0; i < nq; i++)
    if (q[i].name == NULL || q[i].value == NULL)
      return -EINVAL;
  struct pair *hv;
  size_t nhv;
  int r = canonical_headers(host, h, nh, payload_hash, amz_date, &hv, &nhv);
  if (r < 0)
    return r;

  struct cap_buf signed_headers, creq, sts;
  cap_buf_init(&signed_headers);
  cap_buf_init(&creq);
  cap_buf_init(&sts);
  cap_buf_puts(&creq, method);
  cap_buf_putc(&creq, '\n');
  cap_sigv4_uri_encode(&creq, path, strlen(path), 1);
  cap_buf_putc(&creq, '\n');
  cap_sigv4_query_string(&creq, q, nq);
  cap_buf_putc(&creq, '\n');
  for (size_t i = 0; i < nhv; i++) {
    cap_buf_printf(&creq, "%s:%s\n", hv[i].name, hv[i].value);
    if (i)
      cap_buf_putc(&signed_headers, ';');
    cap_buf_puts(&signed_headers, hv[i].name);
  }
  pairs_free(hv, nhv);
  cap_buf_printf(&creq, "\n%s\n%s", signed_headers.data, payload_hash);

  char creq_hash[65], sig[65];
  cap_sigv4_sha256_hex(creq.data, creq.len, creq_hash);
  cap_buf_printf(&sts, "%s\n%s\n%.8s/%s/%s/aws4_request\n%s", ALGORITHM, amz_date, amz_date,
                 c->region, c->service, creq_hash);
  signature(c, amz_date, &sts, sig);

  /* The layout of AWS's published S3 examples: no spaces after the commas. */
  cap_buf_reset(authorization);
  cap_buf_printf(
      authorization, "%s Credential=%s/%.8s/%s/%s/aws4_request,SignedHeaders=%s,Signature=%s",
      ALGORITHM, c->access_key, amz_date, c->region, c->service, signed_headers.data, sig);
  if (canonical_request) {
    cap_buf_reset(canonical_request);
    cap_buf_append(canonical_request, creq.data, creq.len);
  }
  if (string_to_sign) {
    cap_buf_reset(string_to_sign);
    cap_buf_append(string_to_sign, sts.data, sts.len);
  }
  cap_buf_free(&signed_headers);
  cap_buf_free(&creq);
  cap_buf_free(&sts);
  return 0;
}
