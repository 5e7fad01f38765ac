#include "reqid.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

static int is_hex_id(const char *s) {
  if (strlen(s) != 32)
    return 0;
  for (int i = 0; i < 32; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return 1;
}

static int cmp(const void *a, const void *b) {
  return strcmp(a, b);
}

static void test_generate(void) {
  enum { N = 10000 };
  static char ids[N][33];
  CHECK_EQ_INT(cap_reqid_init(), 0);
  int bad = 0;
  for (int i = 0; i < N; i++) {
    char out[40];
    memset(out, 'Z', sizeof(out));
    cap_reqid_generate(out);
    if (!is_hex_id(out) || out[32] != '\0' || out[33] != 'Z')
      bad++;
    memcpy(ids[i], out, 33);
    /* Every id is also a valid id to echo. */
    if (!cap_reqid_valid(out, strlen(out)))
      bad++;
  }
  CHECK_EQ_INT(bad, 0);
  qsort(ids, N, sizeof(ids[0]), cmp);
  int dups = 0;
  for (int i = 1; i < N; i++)
    if (strcmp(ids[i - 1], ids[i]) == 0)
      dups++;
  CHECK_EQ_INT(dups, 0);

  /* Consecutive ids share no prefix and no suffix: they are not a counter
   * (which would tell how many requests came before, and let one client
   * guess the next). */
  char p[33], q[33];
  cap_reqid_generate(p);
  cap_reqid_generate(q);
  CHECK(memcmp(p, q, 8) != 0);
  CHECK(memcmp(p + 24, q + 24, 8) != 0);

  /* A new run (a new seed) gives ids unlike the old ones. */
  char a[33], b[33];
  cap_reqid_generate(a);
  CHECK_EQ_INT(cap_reqid_init(), 0);
  cap_reqid_generate(b);
  CHECK(strcmp(a, b) != 0);
  CHECK(memcmp(a, b, 16) != 0);
  CHECK(is_hex_id(b));
}

struct valid_case {
  const char *s;
  size_t n;
  int valid;
};

static void test_valid(void) {
  char max[CAP_REQID_MAX + 2];
  memset(max, 'a', sizeof(max));
  const struct valid_case cases[] = {
      {"a", 1, 1},
      {"abc-DEF_012.xyz:9", 17, 1},
      {"0123456789abcdef0123456789abcdef", 32, 1},
      {"...", 3, 1},
      {max, CAP_REQID_MAX, 1},
      {max, CAP_REQID_MAX + 1, 0},
      {"", 0, 0},
      {"a b", 3, 0},
      {"a/b", 3, 0},
      {"a\nb", 3, 0},
      {"a\rb", 3, 0},
      {"a\"b", 3, 0},
      {"a\\b", 3, 0},
      {"a,b", 3, 0},
      {"a;b", 3, 0},
      {"a=b", 3, 0},
      {"a\0b", 3, 0},
      {"caf\xc3\xa9", 5, 0},
      {"a\x7f", 2, 0},
      {"ok\xff", 2, 1}, /* Only n bytes count. */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    if (!CHECK_EQ_INT(cap_reqid_valid(cases[i].s, cases[i].n), cases[i].valid))
      fprintf(stderr, "  (reqid case %zu)\n", i);
}

int main(void) {
  test_generate();
  test_valid();
  return check_report();
}
