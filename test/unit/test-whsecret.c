#define _GNU_SOURCE /* strcasestr */
#include "whsecret.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The Standard Webhooks specification's own example. */
#define SPEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_ID     "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TS     1614265330
#define SPEC_BODY   "{\"test\": 2432232314}"
#define SPEC_SIG    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* bytes 0..31, and the signature Python's hmac module gives for
 * "msg_abc.1700000000.{"a":1}" under it. */
#define SEQ_SECRET "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define SEQ_SIG    "v1,DZ0IdnohQvppHQvmirwlcqEUIiuAHRnAoD1dPAWBFXg="

static char dir[64];
static char path[128];
static char err[512];

static void write_file(const char *text, mode_t mode) {
  unlink(path);
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    perror(path);
    exit(check_report() | 1);
  }
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
}

/* Loads text as a secrets file into s; returns load's result. */
static int load(struct cap_whsecret *s, const char *text, int *loose) {
  write_file(text, 0600);
  err[0] = '\0';
  return cap_whsecret_load_file(s, path, loose, err, sizeof(err));
}

static void test_spec_vector(void) {
  struct cap_whsecret s;
  int loose = 1;
  char sig[CAP_WHSECRET_SIG_MAX];
  cap_whsecret_init(&s);
  CHECK_EQ_INT(load(&s, "# a comment\n\n  worker:" SPEC_SECRET "  \n", &loose), 0);
  CHECK_EQ_INT(loose, 0);
  CHECK_EQ_INT(s.n, 1);
  const struct cap_whsecret_token *t = cap_whsecret_find(&s, "worker");
  CHECK(t != NULL);
  CHECK(cap_whsecret_find(&s, "other") == NULL);
  CHECK(cap_whsecret_find(&s, NULL) == NULL);
  CHECK(cap_whsecret_find(NULL, "worker") == NULL);
  if (t) {
    CHECK_EQ_INT(t->nkeys, 1);
    CHECK_EQ_INT(t->keys[0].n, 24);
    CHECK_EQ_INT(
        cap_whsecret_sign(t, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), sig, sizeof(sig)), 0);
    CHECK_EQ_STR(sig, SPEC_SIG);
    /* Every byte of the body counts. */
    CHECK_EQ_INT(
        cap_whsecret_sign(t, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY) - 1, sig, sizeof(sig)),
        0);
    CHECK(strcmp(sig, SPEC_SIG) != 0);
    CHECK_EQ_INT(cap_whsecret_sign(t, SPEC_ID, SPEC_TS, SPEC_BODY, 3, sig, 10), -ENOSPC);
  }
  cap_whsecret_free(&s);
  CHECK_EQ_INT(s.n, 0);
  CHECK(s.v == NULL);
}

static void test_rotation(void) {
  struct cap_whsecret s;
  int loose;
  char sig[CAP_WHSECRET_SIG_MAX];
  const char *body = "{\"a\":1}";
  cap_whsecret_init(&s);
  CHECK_EQ_INT(load(&s,
                    "old:" SEQ_SECRET "\n"
                    "rot:" SEQ_SECRET "\t" SPEC_SECRET "\n"
                    "spec:" SPEC_SECRET "\r\n",
                    &loose),
               0);
  CHECK_EQ_INT(s.n, 3);
  const struct cap_whsecret_token *t = cap_whsecret_find(&s, "old");
  CHECK(t &&
        cap_whsecret_sign(t, "msg_abc", 1700000000, body, strlen(body), sig, sizeof(sig)) == 0);
  CHECK_EQ_STR(sig, SEQ_SIG);
  /* Two secrets: one signature each, in the file's order, one space apart. */
  t = cap_whsecret_find(&s, "rot");
  CHECK(t && t->nkeys == 2);
  CHECK(t && cap_whsecret_sign(t, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), sig,
                               sizeof(sig)) == 0);
  char want[2 * CAP_WHSECRET_SIG_MAX + 2], one[CAP_WHSECRET_SIG_MAX];
  const struct cap_whsecret_token *a = cap_whsecret_find(&s, "old");
  cap_whsecret_sign(a, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), one, sizeof(one));
  snprintf(want, sizeof(want), "%s %s", one, SPEC_SIG);
  CHECK_EQ_STR(sig, want);

  /* A reload replaces the whole set. */
  struct cap_whsecret fresh;
  cap_whsecret_init(&fresh);
  CHECK_EQ_INT(load(&fresh, "spec:" SPEC_SECRET "\n", &loose), 0);
  cap_whsecret_replace(&s, &fresh);
  CHECK_EQ_INT(s.n, 1);
  CHECK_EQ_INT(fresh.n, 0);
  CHECK(cap_whsecret_find(&s, "old") == NULL);
  CHECK(cap_whsecret_find(&s, "spec") != NULL);
  cap_whsecret_free(&s);

  /* Padding is optional. */
  cap_whsecret_init(&s);
  CHECK_EQ_INT(load(&s, "np:whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n", &loose), 0);
  t = cap_whsecret_find(&s, "np");
  CHECK(t && t->keys[0].n == 32);
  cap_whsecret_free(&s);
  /* An empty file is no error: no token may send callbacks. */
  cap_whsecret_init(&s);
  CHECK_EQ_INT(load(&s, "# nothing yet\n", &loose), 0);
  CHECK_EQ_INT(s.n, 0);
  cap_whsecret_free(&s);
}

/* Each broken file fails whole, names the line and never shows a secret. */
static void expect_error(const char *text, int line, const char *words) {
  struct cap_whsecret s;
  int loose;
  char where[160];
  cap_whsecret_init(&s);
  CHECK_EQ_INT(load(&s, "good:" SPEC_SECRET "\n# comment\n", &loose), 0);
  CHECK_EQ_INT(load(&s, text, &loose), -EINVAL);
  CHECK_EQ_INT(s.n, 1); /* Unchanged. */
  snprintf(where, sizeof(where), "%s:%d: ", path, line);
  if (!CHECK(strstr(err, where) != NULL) || !CHECK(strcasestr(err, words) != NULL))
    fprintf(stderr, "  for %s got: %s\n", text, err);
  CHECK(strstr(err, "MfKQ9r8G") == NULL);
  CHECK(strstr(err, "AAECAwQF") == NULL);
  CHECK(strstr(err, "secretmaterial") == NULL);
  cap_whsecret_free(&s);
}

static void test_errors(void) {
  expect_error("\n\nnocolon " SPEC_SECRET "\n", 3, "token-name:whsec_");
  expect_error("bad name:" SPEC_SECRET "\n", 1, "token-name:whsec_");
  expect_error(":" SPEC_SECRET "\n", 1, "token-name");
  expect_error("t:secretmaterial0123456789012345\n", 1, "start with \"whsec_\"");
  expect_error("t:whsec_secretmaterial!!!!\n", 1, "not base64");
  expect_error("t:whsec_secretmaterialAAAAA\n", 1, "24 to 64 bytes");
  expect_error("t:\n", 1, "no secret");
  expect_error("t:" SPEC_SECRET " " SPEC_SECRET " " SEQ_SECRET "\n", 1, "more than 2");
  expect_error("t:" SPEC_SECRET "\n#\nt:" SEQ_SECRET "\n", 3, "listed twice");
  /* A name the set holds already (from an earlier file) counts too. */
  expect_error("good:" SEQ_SECRET "\n", 1, "listed twice");
  char longline[1200];
  memset(longline, 'A', sizeof(longline) - 2);
  memcpy(longline, "t:whsec_", 8);
  longline[sizeof(longline) - 2] = '\n';
  longline[sizeof(longline) - 1] = '\0';
  expect_error(longline, 1, "too long");

  struct cap_whsecret s;
  int loose;
  cap_whsecret_init(&s);
  CHECK(cap_whsecret_load_file(&s, "/nonexistent/secrets", &loose, err, sizeof(err)) == -ENOENT);
  CHECK(strstr(err, "/nonexistent/secrets") != NULL);
  cap_whsecret_free(&s);
}

static void test_loose_mode(void) {
  struct cap_whsecret s;
  int loose = 0;
  cap_whsecret_init(&s);
  write_file("t:" SPEC_SECRET "\n", 0640);
  CHECK_EQ_INT(cap_whsecret_load_file(&s, path, &loose, err, sizeof(err)), 0);
  CHECK_EQ_INT(loose, 1);
  cap_whsecret_free(&s);
  write_file("t:" SPEC_SECRET "\n", 0600);
  CHECK_EQ_INT(cap_whsecret_load_file(&s, path, &loose, err, sizeof(err)), 0);
  CHECK_EQ_INT(loose, 0);
  cap_whsecret_free(&s);
}

int main(void) {
  snprintf(dir, sizeof(dir), "/tmp/test-whsecret-XXXXXX");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(path, sizeof(path), "%s/secrets", dir);
  test_spec_vector();
  test_rotation();
  test_errors();
  test_loose_mode();
  unlink(path);
  rmdir(dir);
  return check_report();
}
