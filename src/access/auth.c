#include "auth.h"

#include "alloc.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

void cap_auth_init(struct cap_auth *a) {
  a->v = NULL;
  a->n = 0;
}

void cap_auth_free(struct cap_auth *a) {
  if (a->v)
    OPENSSL_cleanse(a->v, a->n * sizeof(*a->v));
  free(a->v);
  cap_auth_init(a);
}

void cap_auth_replace(struct cap_auth *dst, struct cap_auth *src) {
  cap_auth_free(dst);
  *dst = *src;
  cap_auth_init(src);
}

static void digest(const char *s, size_t n, unsigned char out[32]) {
  unsigned int len = 32;
  if (EVP_Digest(s, n, out, &len, EVP_sha256(), NULL) != 1)
    abort(); /* SHA-256 cannot fail short of a broken OpenSSL. */
}

static int valid_name(const char *s, size_t n) {
  if (n == 0 || n > CAP_AUTH_NAME_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-' || c == '.'))
      return 0;
  }
  return 1;
}

int cap_auth_add(struct cap_auth *a, const char *name, const char *token, size_t len, char *err,
                 size_t errlen) {
  if (len < CAP_AUTH_TOKEN_MIN || len > CAP_AUTH_TOKEN_MAX) {
    snprintf(err, errlen, "token \"%s\" must be %d to %d characters long", name, CAP_AUTH_TOKEN_MIN,
             CAP_AUTH_TOKEN_MAX);
    return -EINVAL;
  }
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)token[i] <= 0x20 || (unsigned char)token[i] >= 0x7f) {
      snprintf(err, errlen, "token \"%s\" may hold only visible ASCII characters", name);
      return -EINVAL;
    }
  if (!valid_name(name, strlen(name))) {
    snprintf(err, errlen, "token name \"%.64s\" must be 1-64 of [A-Za-z0-9_.-]", name);
    return -EINVAL;
  }
  a->v = xrealloc(a->v, (a->n + 1) * sizeof(*a->v));
  struct cap_auth_token *t = &a->v[a->n++];
  snprintf(t->name, sizeof(t->name), "%s", name);
  digest(token, len, t->digest);
  return 0;
}

int cap_auth_load_file(struct cap_auth *a, const char *path, int *loose_mode, char *err,
                       size_t errlen) {
  struct cap_auth tmp;
  struct stat st;
  char line[1024];
  int lineno = 0, rc = 0;
  FILE *f = fopen(path, "r");

  cap_auth_init(&tmp);
  if (f == NULL) {
    rc = -errno;
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    goto fail;
  }
  *loose_mode = fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0;
  while (fgets(line, sizeof(line), f)) {
    char name[CAP_AUTH_NAME_MAX + 1];
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
    char *colon = strchr(p, ':');
    const char *tok = p;
    if (colon && valid_name(p, (size_t)(colon - p))) {
      snprintf(name, sizeof(name), "%.*s", (int)(colon - p), p);
      tok = colon + 1;
    } else {
      snprintf(name, sizeof(name), "token%d", lineno);
    }
    char why[160];
    if (cap_auth_add(&tmp, name, tok, strlen(tok), why, sizeof(why)) != 0) {
      snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
      rc = -EINVAL;
      goto fail;
    }
  }
  if (ferror(f)) {
    rc = -EIO;
    snprintf(err, errlen, "cannot read %s", path);
    goto fail;
  }
  if (tmp.n == 0) {
    rc = -EINVAL;
    snprintf(err, errlen, "%s holds no token", path);
    goto fail;
  }
  a->v = xrealloc(a->v, (a->n + tmp.n) * sizeof(*a->v));
  memcpy(a->v + a->n, tmp.v, tmp.n * sizeof(*tmp.v));
  a->n += tmp.n;
fail:
  OPENSSL_cleanse(line, sizeof(line));
  if (f)
    fclose(f);
  cap_auth_free(&tmp);
  return rc;
}

/* Compares a candidate against every token; returns the last match's index or -1. */
static long find(const struct cap_auth *a, const char *s, size_t n) {
  unsigned char d[32];
  long found = -1;
  digest(s, n, d);
  for (size_t i = 0; i < a->n; i++) {
    int diff = CRYPTO_memcmp(d, a->v[i].digest, sizeof(d));
    /* Branch-free select, so timing does not tell which token matched. */
    long mask = -(long)(diff == 0);
    found = (found & ~mask) | ((long)i & mask);
  }
  return found;
}

const char *cap_auth_check(const struct cap_auth *a, const char *hdr, size_t len) {
  if (hdr == NULL || len < 7 || strncasecmp(hdr, "Bearer ", 7) != 0)
    return NULL;
  hdr += 7;
  len -= 7;
  while (len > 0 && *hdr == ' ') {
    hdr++;
    len--;
  }
  while (len > 0 && (hdr[len - 1] == ' ' || hdr[len - 1] == '\t'))
    len--;
  if (len == 0 || len > CAP_AUTH_TOKEN_MAX)
    return NULL;
  long i = find(a, hdr, len);
  return i < 0 ? NULL : a->v[i].name;
}

int cap_auth_is_token(const struct cap_auth *a, const char *s, size_t n) {
  if (n < CAP_AUTH_TOKEN_MIN || n > CAP_AUTH_TOKEN_MAX)
    return 0;
  return find(a, s, n) >= 0;
}
