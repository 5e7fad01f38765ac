#include "keypolicy.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum { IN = 0, OUT = 1 };

static void test_no_policy(void) {
  struct cap_keypolicy *kp = (struct cap_keypolicy *)&kp;
  char err[256] = "";
  CHECK_EQ_INT(cap_keypolicy_parse(NULL, &kp, err, sizeof(err)), 0);
  CHECK(kp == NULL);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "anything/at/all"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", OUT, "x"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, NULL, OUT, "x"), 1);
  cap_keypolicy_free(kp);
  cap_keypolicy_free(NULL);
}

static void test_prefixes(void) {
  struct cap_keypolicy *kp = NULL;
  char err[256] = "";
  int rc = cap_keypolicy_parse("{\"render\":{\"input\":[\"uploads/\",\"shared/in/\"],"
                               "\"output\":[\"renders/\"]},"
                               "\"reader\":{\"input\":[\"public/\"]},"
                               "\"writer\":{\"output\":[\"drop/\"]},"
                               "\"nothing\":{},"
                               "\"emptylists\":{\"input\":[],\"output\":[]}}",
                               &kp, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  CHECK(kp != NULL);

  /* A token the policy does not list may use any key, either way. */
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "admin", IN, "secret/x.mp4"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "admin", OUT, "renders/x.mp4"), 1);
  /* Names are exact and case-sensitive. */
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "Render", IN, "secret/x.mp4"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "rende", IN, "secret/x.mp4"), 1);
  /* An unauthenticated caller (no token name) is not restricted here. */
  CHECK_EQ_INT(cap_keypolicy_allows(kp, NULL, IN, "secret/x.mp4"), 1);

  /* A listed token: inputs under its input prefixes only. */
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "uploads/a.mp4"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "uploads/deep/er/a.mp4"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "shared/in/b.mov"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "shared/out/b.mov"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "renders/a.mp4"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "uploads"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "uploadsX/a.mp4"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "Uploads/a.mp4"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, "x/uploads/a.mp4"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", IN, ""), 0);
  /* Outputs under its output prefixes only. */
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", OUT, "renders/a.mp4"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", OUT, "uploads/a.mp4"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", OUT, "render/a.mp4"), 0);

  /* One side missing: that side is denied, the other works. */
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "reader", IN, "public/a.mp4"), 1);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "reader", OUT, "public/a.mp4"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "writer", IN, "drop/a.mp4"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "writer", OUT, "drop/a.mp4"), 1);
  /* Both missing or empty: nothing allowed. */
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "nothing", IN, "a"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "nothing", OUT, "a"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "emptylists", IN, "a"), 0);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "emptylists", OUT, "a"), 0);
  cap_keypolicy_free(kp);

  /* An empty policy object lists nobody. */
  kp = NULL;
  CHECK_EQ_INT(cap_keypolicy_parse("{}", &kp, err, sizeof(err)), 0);
  CHECK(kp != NULL);
  CHECK_EQ_INT(cap_keypolicy_allows(kp, "render", OUT, "x"), 1);
  cap_keypolicy_free(kp);
}

static void test_bad_shapes(void) {
  static const char *bad[] = {
      "",
      "   ",
      "{",
      "not json",
      "null",
      "true",
      "42",
      "\"render\"",
      "[]",
      "[{\"render\":{}}]",
      "{\"render\":null}",
      "{\"render\":true}",
      "{\"render\":[\"uploads/\"]}",
      "{\"render\":\"uploads/\"}",
      "{\"render\":{\"input\":\"uploads/\"}}",
      "{\"render\":{\"output\":\"renders/\"}}",
      "{\"render\":{\"input\":{\"a\":\"uploads/\"}}}",
      "{\"render\":{\"input\":[1]}}",
      "{\"render\":{\"input\":[\"uploads/\",null]}}",
      "{\"render\":{\"output\":[[\"renders/\"]]}}",
      "{\"render\":{\"input\":[\"\"]}}",
      "{\"render\":{\"output\":[\"renders/\",\"\"]}}",
      "{\"ok\":{\"input\":[\"a/\"]},\"bad\":{\"input\":[2]}}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct cap_keypolicy *kp = (struct cap_keypolicy *)&kp;
    char err[256] = "";
    int rc = cap_keypolicy_parse(bad[i], &kp, err, sizeof(err));
    if (!CHECK_EQ_INT(rc, -EINVAL)) {
      fprintf(stderr, "  case %zu: %s\n", i, bad[i]);
      if (rc == 0)
        cap_keypolicy_free(kp);
      continue;
    }
    CHECK(kp == NULL);
    if (!CHECK(strstr(err, "token_prefixes") != NULL))
      fprintf(stderr, "  case %zu: message \"%s\"\n", i, err);
  }
}

int main(void) {
  test_no_policy();
  test_prefixes();
  test_bad_shapes();
  return check_report();
}
