#include "whsecret.h"

#include "alloc.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PREFIX     "whsec_"
#define PREFIX_LEN 6

void cap_whsecret_init(struct cap_whsecret *s) {
  s->v = NULL;
  s->n = 0;
}

void cap_whsecret_free(struct cap_whsecret *s) {
  if (s->v)
    OPENSSL_cleanse(s->v, s->n * sizeof(*s->v));
  free(s->v);
  cap_whsecret_init(s);
}

void cap_whsecret_replace(struct cap_whsecret *dst, struct cap_whsecret *src) {
  cap_whsecret_free(dst);
  *dst = *src;
  cap_whsecret_init(src);
}

/* The same names the token file allows. */
static int valid_name(const char *s, size_t n) {
  if (n == 0 || n > CAP_WHSECRET_NAME_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-' || c == '.'))
      return 0;
  }
  return 1;
}

static int b64_value(char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

/* Decodes standard base64 (padding optional, nothing else allowed) into
 * out.  Returns the byte count, or -1 when s is not base64 or does not fit. */
static long b64_decode(const char *s, size_t n, unsigned char *out, size_t outlen) {
  size_t len = 0;
  unsigned acc = 0;
  int bits = 0;
  while (n > 0 && s[n - 1] == '=')
    n--;
  for (size_t i = 0; i < n; i++) {
    int v = b64_value(s[i]);
    if (v < 0)
      return -1;
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (len == outlen)
        return -1;
      out[len++] = (unsigned char)(acc >> bits);
    }
  }
  /* A lone trailing character carries fewer than eight bits. */
  if (bits >= 6)
    return -1;
  return (long)len;
}

/* Parses one "whsec_<base64>" word into key.  Returns 0 or -EINVAL with a
 * reason that does not repeat the secret. */
static int parse_key(const char *w, size_t n, struct cap_whsecret_key *key, char *why,
                     size_t whylen) {
  if (n < PREFIX_LEN || memcmp(w, PREFIX, PREFIX_LEN) != 0) {
    snprintf(why, whylen, "a secret must start with \"whsec_\"");
    return -EINVAL;
  }
  unsigned char tmp[CAP_WHSECRET_KEY_MAX + 3];
  long len = b64_decode(w + PREFIX_LEN, n - PREFIX_LEN, tmp, sizeof(tmp));
  if (len < 0) {
    snprintf(why, whylen, "the part after \"whsec_\" is not base64");
    return -EINVAL;
  }
  if (len < CAP_WHSECRET_KEY_MIN || len > CAP_WHSECRET_KEY_MAX) {
    OPENSSL_cleanse(tmp, sizeof(tmp));
    snprintf(why, whylen, "a secret must decode to %d to %d bytes (it has %ld)",
             CAP_WHSECRET_KEY_MIN, CAP_WHSECRET_KEY_MAX, len);
    return -EINVAL;
  }
  memcpy(key->k, tmp, (size_t)len);
  key->n = (size_t)len;
  OPENSSL_cleanse(tmp, sizeof(tmp));
  return 0;
}

/* Parses one non-comment line "name:whsec_A [whsec_B]" into t. */
static int parse_line(char *p, struct cap_whsecret_token *t, char *why, size_t whylen) {
  char *colon = strchr(p, ':');
  if (colon == NULL || !valid_name(p, (size_t)(colon - p))) {
    snprintf(why, whylen, "expected \"token-name:whsec_...\" (a name of 1-64 [A-Za-z0-9_.-])");
    return -EINVAL;
  }
  memset(t, 0, sizeof(*t));
  snprintf(t->name, sizeof(t->name), "%.*s", (int)(colon - p), p);
  const char *s = colon + 1;
  for (;;) {
    while (*s == ' ' || *s == '\t')
      s++;
    if (*s == '\0')
      break;
    size_t n = strcspn(s, " \t");
    if (t->nkeys == CAP_WHSECRET_PER_TOKEN) {
      snprintf(why, whylen, "token \"%s\" has more than %d secrets", t->name,
               CAP_WHSECRET_PER_TOKEN);
      return -EINVAL;
    }
    if (parse_key(s, n, &t->keys[t->nkeys], why, whylen) != 0)
      return -EINVAL;
    t->nkeys++;
    s += n;
  }
  if (t->nkeys == 0) {
    snprintf(why, whylen, "token \"%s\" has no secret", t->name);
    return -EINVAL;
  }
  return 0;
}

int cap_whsecret_load_file(struct cap_whsecret *s, const char *path, int *loose_mode, char *err,
                           size_t errlen) {
  struct cap_whsecret tmp;
  struct cap_whsecret_token t;
  struct stat st;
  char line[1024];
  int lineno = 0, rc = 0;
  FILE *f = fopen(path, "r");

  cap_whsecret_init(&tmp);
  memset(&t, 0, sizeof(t));
  *loose_mode = 0;
  if (f == NULL) {
    rc = -errno;
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    goto fail;
  }
  *loose_mode = fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0;
  while (fgets(line, sizeof(line), f)) {
    char why[160];
    size_t n = strlen(line);
    lineno++;
    if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
      snprintf(err, errlen, "%s:%d: line too long", path, lineno);
      rc = -EINVAL;
      goto fail;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
      line[--n] = '\0';
    char *p = line;
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p == '\0' || *p == '#')
      continue;
    if (parse_line(p, &t, why, sizeof(why)) != 0) {
      snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
      rc = -EINVAL;
      goto fail;
    }
    /* Two lines for one token would leave which secrets count to the
     * order of the file; rotation is two secrets on one line. */
    if (cap_whsecret_find(&tmp, t.name) || cap_whsecret_find(s, t.name)) {
      snprintf(err, errlen, "%s:%d: token \"%s\" is listed twice (put both secrets on one line)",
               path, lineno, t.name);
      rc = -EINVAL;
      goto fail;
    }
    tmp.v = xrealloc(tmp.v, (tmp.n + 1) * sizeof(*tmp.v));
    tmp.v[tmp.n++] = t;
  }
  if (ferror(f)) {
    rc = -EIO;
    snprintf(err, errlen, "cannot read %s", path);
    goto fail;
  }
  s->v = xrealloc(s->v, (s->n + tmp.n) * sizeof(*s->v));
  if (tmp.n)
    memcpy(s->v + s->n, tmp.v, tmp.n * sizeof(*tmp.v));
  s->n += tmp.n;
fail:
  OPENSSL_cleanse(line, sizeof(line));
  OPENSSL_cleanse(&t, sizeof(t));
  if (f)
    fclose(f);
  cap_whsecret_free(&tmp);
  return rc;
}

const struct cap_whsecret_token *cap_whsecret_find(const struct cap_whsecret *s, const char *name) {
  if (s == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i].name, name) == 0)
      return &s->v[i];
  return NULL;
}

/* HMAC-SHA256 of "<id>.<ts>.<body>" under key into mac (32 bytes). */
static int hmac(const struct cap_whsecret_key *key, const char *id, const char *ts,
                const char *body, size_t len, unsigned char mac[32]) {
  EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                         OSSL_PARAM_construct_end()};
  size_t out = 0;
  int rc = -EIO;
  if (ctx == NULL || EVP_MAC_init(ctx, key->k, key->n, params) != 1)
    goto fail;
  if (EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) != 1 ||
      EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
      EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) != 1 ||
      EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
      EVP_MAC_update(ctx, (const unsigned char *)body, len) != 1 ||
      EVP_MAC_final(ctx, mac, &out, 32) != 1 || out != 32)
    goto fail;
  rc = 0;
fail:
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(m);
  return rc;
}

int cap_whsecret_sign(const struct cap_whsecret_token *t, const char *id, int64_t timestamp,
                      const char *body, size_t len, char *out, size_t outlen) {
  char ts[24];
  size_t used = 0;
  if (outlen < CAP_WHSECRET_SIG_MAX)
    return -ENOSPC;
  snprintf(ts, sizeof(ts), "%" PRId64, timestamp);
  out[0] = '\0';
  for (int i = 0; i < t->nkeys; i++) {
    unsigned char mac[32];
    if (hmac(&t->keys[i], id, ts, body, len, mac) != 0)
      return -EIO;
    if (i > 0)
      out[used++] = ' ';
    memcpy(out + used, "v1,", 3);
    used += 3;
    /* 32 bytes are 44 base64 characters and a NUL. */
    used += (size_t)EVP_EncodeBlock((unsigned char *)out + used, mac, sizeof(mac));
    OPENSSL_cleanse(mac, sizeof(mac));
  }
  out[used] = '\0';
  return 0;
}
