#define _GNU_SOURCE /* memmem */
#include "auth.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOK_A "alpha-token-0123456789"
#define TOK_B "bravo-token-ABCDEFGHIJ"
#define TOK_C "charlie.token_~!@#$%^&*()"

static char dir[64];
static char path[128];
static char err[512];

static void write_file(const char *text, mode_t mode) {
  unlink(path); /* The last one may be read-only. */
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    perror(path);
    exit(check_report() | 1); /* The summary still ends the output. */
  }
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
}

static const char *check_hdr(const struct cap_auth *a, const char *hdr) {
  return cap_auth_check(a, hdr, strlen(hdr));
}

static void test_add_and_check(void) {
  struct cap_auth a;
  cap_auth_init(&a);
  CHECK_EQ_INT(a.n, 0);
  CHECK(check_hdr(&a, "Bearer " TOK_A) == NULL); /* Nothing configured. */
  CHECK_EQ_INT(cap_auth_add(&a, "alpha", TOK_A, strlen(TOK_A), err, sizeof(err)), 0);
  CHECK_EQ_INT(cap_auth_add(&a, "bravo", TOK_B, strlen(TOK_B), err, sizeof(err)), 0);
  CHECK_EQ_INT(cap_auth_add(&a, "c_3.x-y", TOK_C, strlen(TOK_C), err, sizeof(err)), 0);
  CHECK_EQ_INT(a.n, 3);
  /* Only a digest is kept. */
  CHECK(memmem(a.v, a.n * sizeof(*a.v), TOK_A, strlen(TOK_A)) == NULL);

  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_A), "alpha");
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_B), "bravo");
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_C), "c_3.x-y");
  CHECK_EQ_STR(check_hdr(&a, "bearer " TOK_A), "alpha");
  CHECK_EQ_STR(check_hdr(&a, "BEARER " TOK_A), "alpha");
  CHECK_EQ_STR(check_hdr(&a, "BeArEr " TOK_A), "alpha");
  CHECK_EQ_STR(check_hdr(&a, "Bearer    " TOK_A), "alpha");
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_A "   "), "alpha");
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_A " \t"), "alpha");

  CHECK(check_hdr(&a, "Bearer wrong-token-0123456789") == NULL);
  CHECK(check_hdr(&a, "Bearer alpha-token-012345678") == NULL);   /* prefix */
  CHECK(check_hdr(&a, "Bearer alpha-token-01234567890") == NULL); /* one more */
  CHECK(check_hdr(&a, "Bearer lpha-token-0123456789") == NULL);   /* suffix */
  CHECK(check_hdr(&a, "Bearer Alpha-token-0123456789") == NULL);  /* case matters */
  CHECK(check_hdr(&a, "Bearer " TOK_A TOK_B) == NULL);
  CHECK(check_hdr(&a, "Bearer " TOK_A " x") == NULL);
  CHECK(check_hdr(&a, "") == NULL);
  CHECK(cap_auth_check(&a, NULL, 0) == NULL);
  CHECK(check_hdr(&a, "Bearer") == NULL);
  CHECK(check_hdr(&a, "Bearer ") == NULL);
  CHECK(check_hdr(&a, "Bearer      ") == NULL);
  CHECK(check_hdr(&a, TOK_A) == NULL);
  CHECK(check_hdr(&a, "Basic " TOK_A) == NULL);
  CHECK(check_hdr(&a, "Token " TOK_A) == NULL);
  CHECK(check_hdr(&a, "Bearer:" TOK_A) == NULL);
  CHECK(check_hdr(&a, "Bearer" TOK_A) == NULL);
  CHECK(check_hdr(&a, "XBearer " TOK_A) == NULL);
  /* len bounds the header: the token cut short does not match. */
  const char *h = "Bearer " TOK_A;
  CHECK(cap_auth_check(&a, h, strlen(h) - 1) == NULL);
  CHECK_EQ_STR(cap_auth_check(&a, h, strlen(h)), "alpha");
  /* A very long header is refused, not hashed. */
  char big[600];
  memcpy(big, "Bearer ", 7);
  memset(big + 7, 'x', sizeof(big) - 8);
  big[sizeof(big) - 1] = '\0';
  CHECK(check_hdr(&a, big) == NULL);

  cap_auth_free(&a);
  CHECK_EQ_INT(a.n, 0);
  CHECK(a.v == NULL);
}

static void test_add_rejects(void) {
  struct cap_auth a;
  cap_auth_init(&a);
  char tok[300];

  memset(tok, 'a', sizeof(tok));
  CHECK_EQ_INT(cap_auth_add(&a, "min", tok, CAP_AUTH_TOKEN_MIN, err, sizeof(err)), 0);
  CHECK_EQ_INT(cap_auth_add(&a, "max", tok + 1, CAP_AUTH_TOKEN_MAX, err, sizeof(err)), 0);
  CHECK_EQ_INT(a.n, 2);
  err[0] = '\0';
  CHECK_EQ_INT(cap_auth_add(&a, "short", tok, CAP_AUTH_TOKEN_MIN - 1, err, sizeof(err)), -EINVAL);
  CHECK(strlen(err) > 0);
  CHECK_EQ_INT(cap_auth_add(&a, "long", tok, CAP_AUTH_TOKEN_MAX + 1, err, sizeof(err)), -EINVAL);
  CHECK_EQ_INT(cap_auth_add(&a, "empty", "", 0, err, sizeof(err)), -EINVAL);

  /* The 16 and 256 byte tokens work through the header too. */
  char hdr[300];
  snprintf(hdr, sizeof(hdr), "Bearer %.*s", CAP_AUTH_TOKEN_MIN, tok);
  CHECK_EQ_STR(check_hdr(&a, hdr), "min");
  snprintf(hdr, sizeof(hdr), "Bearer %.*s", CAP_AUTH_TOKEN_MAX, tok);
  CHECK_EQ_STR(check_hdr(&a, hdr), "max");

  static const char *const bad_tokens[] = {
      "has space in it 0123",   "has\ttab-0123456789",      "del\x7f-0123456789abc",
      "high\x80-0123456789abc", "utf8-\xc3\xa9-0123456789", "newline\n0123456789",
      "cr\r-0123456789abcdef",
  };
  for (size_t i = 0; i < sizeof(bad_tokens) / sizeof(bad_tokens[0]); i++) {
    err[0] = '\0';
    if (!CHECK_EQ_INT(
            cap_auth_add(&a, "bad", bad_tokens[i], strlen(bad_tokens[i]), err, sizeof(err)),
            -EINVAL))
      fprintf(stderr, "  accepted token case %zu\n", i);
    CHECK(strlen(err) > 0);
    /* The reason never repeats the token. */
    CHECK(strstr(err, bad_tokens[i]) == NULL);
  }
  /* NUL inside the given length. */
  CHECK_EQ_INT(cap_auth_add(&a, "nul", "abcdefgh\0ijklmnopq", 18, err, sizeof(err)), -EINVAL);

  static const char *const bad_names[] = {"",        "has space", "slash/name",
                                          "colon:x", "quo\"te",   "\xc3\xa9t\xc3\xa9"};
  for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
    if (!CHECK_EQ_INT(cap_auth_add(&a, bad_names[i], TOK_A, strlen(TOK_A), err, sizeof(err)),
                      -EINVAL))
      fprintf(stderr, "  accepted name \"%s\"\n", bad_names[i]);
  char name[80];
  memset(name, 'n', sizeof(name));
  name[CAP_AUTH_NAME_MAX + 1] = '\0';
  CHECK_EQ_INT(cap_auth_add(&a, name, TOK_A, strlen(TOK_A), err, sizeof(err)), -EINVAL);
  name[CAP_AUTH_NAME_MAX] = '\0';
  CHECK_EQ_INT(cap_auth_add(&a, name, TOK_A, strlen(TOK_A), err, sizeof(err)), 0);
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_A), name);

  CHECK_EQ_INT(a.n, 3); /* No rejected token was added. */
  cap_auth_free(&a);
}

static void test_is_token(void) {
  struct cap_auth a;
  cap_auth_init(&a);
  CHECK_EQ_INT(cap_auth_is_token(&a, TOK_A, strlen(TOK_A)), 0);
  cap_auth_add(&a, "alpha", TOK_A, strlen(TOK_A), err, sizeof(err));
  cap_auth_add(&a, "bravo", TOK_B, strlen(TOK_B), err, sizeof(err));
  CHECK_EQ_INT(cap_auth_is_token(&a, TOK_A, strlen(TOK_A)), 1);
  CHECK_EQ_INT(cap_auth_is_token(&a, TOK_B, strlen(TOK_B)), 1);
  CHECK_EQ_INT(cap_auth_is_token(&a, TOK_A, strlen(TOK_A) - 1), 0);
  CHECK_EQ_INT(cap_auth_is_token(&a, TOK_A "x", strlen(TOK_A) + 1), 0);
  CHECK_EQ_INT(cap_auth_is_token(&a, "Bearer " TOK_A, strlen(TOK_A) + 7), 0);
  CHECK_EQ_INT(cap_auth_is_token(&a, "", 0), 0);
  CHECK_EQ_INT(cap_auth_is_token(&a, "short", 5), 0);
  cap_auth_free(&a);
}

static void test_replace(void) {
  struct cap_auth dst, src;
  cap_auth_init(&dst);
  cap_auth_init(&src);
  cap_auth_add(&dst, "alpha", TOK_A, strlen(TOK_A), err, sizeof(err));
  cap_auth_add(&src, "bravo", TOK_B, strlen(TOK_B), err, sizeof(err));
  cap_auth_add(&src, "charlie", TOK_C, strlen(TOK_C), err, sizeof(err));
  cap_auth_replace(&dst, &src);
  CHECK_EQ_INT(dst.n, 2);
  CHECK_EQ_INT(src.n, 0);
  CHECK(src.v == NULL);
  CHECK(check_hdr(&dst, "Bearer " TOK_A) == NULL);
  CHECK_EQ_STR(check_hdr(&dst, "Bearer " TOK_B), "bravo");
  CHECK_EQ_STR(check_hdr(&dst, "Bearer " TOK_C), "charlie");
  /* Replacing with an empty set empties dst. */
  cap_auth_replace(&dst, &src);
  CHECK_EQ_INT(dst.n, 0);
  CHECK(check_hdr(&dst, "Bearer " TOK_B) == NULL);
  cap_auth_free(&dst);
  cap_auth_free(&src);
}

static void test_load_file(void) {
  struct cap_auth a;
  int loose = -1;
  cap_auth_init(&a);
  cap_auth_add(&a, "preset", TOK_C, strlen(TOK_C), err, sizeof(err));

  write_file("# tokens for cap-server\n"
             "alpha:" TOK_A "\n"
             "\n"
             "   \t\n"
             "  # an indented comment\n"
             "bravo:" TOK_B "\r\n"
             "unnamed-token-value-0123\n"
             "   spaced:token-with-leading-space  \t\n"
             "no-newline-at-end-0123456",
             0600);
  CHECK_EQ_INT(cap_auth_load_file(&a, path, &loose, err, sizeof(err)), 0);
  CHECK_EQ_INT(loose, 0);
  CHECK_EQ_INT(a.n, 6);
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_C), "preset"); /* Kept. */
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_A), "alpha");
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_B), "bravo");
  CHECK_EQ_STR(check_hdr(&a, "Bearer unnamed-token-value-0123"), "token7");
  CHECK_EQ_STR(check_hdr(&a, "Bearer token-with-leading-space"), "spaced");
  CHECK_EQ_STR(check_hdr(&a, "Bearer no-newline-at-end-0123456"), "token9");
  CHECK(check_hdr(&a, "Bearer bravo:" TOK_B) == NULL);
  CHECK(check_hdr(&a, "Bearer " TOK_B "\r") == NULL);

  /* Group/other readable: loose. */
  write_file("alpha:" TOK_A "\n", 0644);
  struct cap_auth b;
  cap_auth_init(&b);
  loose = -1;
  CHECK_EQ_INT(cap_auth_load_file(&b, path, &loose, err, sizeof(err)), 0);
  CHECK_EQ_INT(loose, 1);
  cap_auth_free(&b);
  write_file("alpha:" TOK_A "\n", 0640);
  loose = -1;
  CHECK_EQ_INT(cap_auth_load_file(&b, path, &loose, err, sizeof(err)), 0);
  CHECK_EQ_INT(loose, 1);
  cap_auth_free(&b);
  write_file("alpha:" TOK_A "\n", 0400);
  loose = -1;
  CHECK_EQ_INT(cap_auth_load_file(&b, path, &loose, err, sizeof(err)), 0);
  CHECK_EQ_INT(loose, 0);
  cap_auth_free(&b);

  /* A bad line: error naming path:line, nothing added. */
  size_t before = a.n;
  char want[200];
  write_file("# header\n"
             "delta:delta-token-0123456789\n"
             "short:tooshort\n"
             "echo:echo-token-0123456789\n",
             0600);
  err[0] = '\0';
  CHECK_EQ_INT(cap_auth_load_file(&a, path, &loose, err, sizeof(err)), -EINVAL);
  snprintf(want, sizeof(want), "%s:3:", path);
  if (!CHECK(strncmp(err, want, strlen(want)) == 0))
    fprintf(stderr, "  err: %s\n", err);
  CHECK(strstr(err, "tooshort") == NULL); /* The token is not echoed. */
  CHECK_EQ_INT(a.n, before);
  CHECK(check_hdr(&a, "Bearer delta-token-0123456789") == NULL);
  CHECK_EQ_STR(check_hdr(&a, "Bearer " TOK_A), "alpha");

  write_file("ok:ok-token-0123456789\nbad:has a space in the token\n", 0600);
  CHECK_EQ_INT(cap_auth_load_file(&a, path, &loose, err, sizeof(err)), -EINVAL);
  snprintf(want, sizeof(want), "%s:2:", path);
  CHECK(strncmp(err, want, strlen(want)) == 0);
  CHECK_EQ_INT(a.n, before);

  /* A line longer than the reader's buffer. */
  char *longline = malloc(3000);
  memset(longline, 'x', 2999);
  longline[2999] = '\0';
  write_file(longline, 0600);
  free(longline);
  CHECK_EQ_INT(cap_auth_load_file(&a, path, &loose, err, sizeof(err)), -EINVAL);
  snprintf(want, sizeof(want), "%s:1:", path);
  CHECK(strncmp(err, want, strlen(want)) == 0);
  CHECK_EQ_INT(a.n, before);

  /* No tokens at all. */
  write_file("# only a comment\n\n", 0600);
  err[0] = '\0';
  CHECK_EQ_INT(cap_auth_load_file(&a, path, &loose, err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, path) != NULL);
  CHECK_EQ_INT(a.n, before);

  /* No file. */
  char missing[160];
  snprintf(missing, sizeof(missing), "%s/missing", dir);
  err[0] = '\0';
  CHECK_EQ_INT(cap_auth_load_file(&a, missing, &loose, err, sizeof(err)), -ENOENT);
  CHECK(strstr(err, missing) != NULL);
  CHECK_EQ_INT(a.n, before);

  cap_auth_free(&a);
  unlink(path);
}

int main(void) {
  snprintf(dir, sizeof(dir), "/tmp/cap-test-auth-XXXXXX");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(path, sizeof(path), "%s/tokens", dir);

  test_add_and_check();
  test_add_rejects();
  test_is_token();
  test_replace();
  test_load_file();

  rmdir(dir);
  return check_report();
}
