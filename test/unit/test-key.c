#include "key.h"

#include "check.h"

#include <errno.h>
#include <string.h>

struct key_case {
  const char *s;
  size_t n;
  int ok;
};

#define S(lit) lit, sizeof(lit) - 1

static const struct key_case cases[] = {
    {S("a"), 1},
    {S("input.mp4"), 1},
    {S("a/b"), 1},
    {S("dir/sub/file.mp4"), 1},
    {S("a b/c d.mov"), 1},
    {S("..a"), 1},
    {S("a.."), 1},
    {S("..."), 1},
    {S(".hidden"), 1},
    {S("a/.b"), 1},
    {S("a/..b/c"), 1},
    {S("a/b.."), 1},
    {S("~user"), 1},
    {S("a:b"), 1},
    {S("%2e%2e/x"), 1}, /* Percent signs are literal. */
    {S("caf\xc3\xa9"), 1},
    {S("\xe6\x97\xa5\xe6\x9c\xac/\xe3\x83\x95\xe3\x82\xa1\xe3\x82\xa4\xe3\x83\xab.mp4"), 1},
    {S("emoji-\xf0\x9f\x98\x80"), 1},
    {S(""), 0},
    {S("."), 0},
    {S(".."), 0},
    {S("./a"), 0},
    {S("../a"), 0},
    {S("a/."), 0},
    {S("a/.."), 0},
    {S("a/./b"), 0},
    {S("a/../b"), 0},
    {S("a/../../etc/passwd"), 0},
    {S("/"), 0},
    {S("//"), 0},
    {S("/a"), 0},
    {S("//a"), 0},
    {S("/etc/passwd"), 0},
    {S("a/"), 0},
    {S("a/b/"), 0},
    {S("a//b"), 0},
    {S("a\\b"), 0},
    {S("..\\a"), 0},
    {S("a\nb"), 0},
    {S("a\rb"), 0},
    {S("a\tb"), 0},
    {S("\x01"), 0},
    {S("a\x1f"), 0},
    {S("a\x7f"), 0},
    /* C1 controls, bidirectional overrides and marks, line separators. */
    {S("uploads/\xc2\x85x"), 0}, /* U+0085 NEL */
    {S("a\xc2\x80"), 0},         /* U+0080 */
    {S("a\xc2\x9f"), 0},         /* U+009F */
    {S("small.mp4\xe2\x80\xae"
       "4pm"),
     0}, /* U+202E RLO */
    {S("a\xe2\x80\xaa"
       "b"),
     0}, /* U+202A LRE */
    {S("a\xe2\x81\xa6"
       "b"),
     0}, /* U+2066 LRI */
    {S("a\xe2\x81\xa9"
       "b"),
     0}, /* U+2069 PDI */
    {S("a\xe2\x80\x8f"
       "b"),
     0}, /* U+200F RLM */
    {S("a\xd8\x9c"
       "b"),
     0}, /* U+061C ALM */
    {S("a\xe2\x80\xa8"
       "b"),
     0}, /* U+2028 LINE SEPARATOR */
    /* Their neighbours stay allowed. */
    {S("a\xc2\xa0"
       "b"),
     1}, /* U+00A0 NO-BREAK SPACE */
    {S("a\xe2\x80\xa7"
       "b"),
     1}, /* U+2027 */
    {S("a\xe2\x80\xaf"
       "b"),
     1}, /* U+202F */
    {S("a\xe2\x81\xa5"
       "b"),
     1}, /* U+2065 (unassigned) */
    {S("a\xd8\x9b"
       "b"),
     1}, /* U+061B ARABIC SEMICOLON */
    {S("a\0b"), 0},
    {S("\xff"), 0},
    {S("a\x80"), 0},
    {S("\xc0\xaf"), 0},         /* overlong '/' */
    {S("\xc0\xae\xc0\xae"), 0}, /* overlong ".." */
    {S("\xe0\x80\xaf"), 0},     /* overlong '/' */
    {S("\xed\xa0\x80"), 0},     /* surrogate */
    {S("\xf4\x90\x80\x80"), 0},
    {S("caf\xc3"), 0},
};

static void check_key(const char *s, size_t n, int ok, const char *label) {
  const char *why = NULL;
  int rc = cap_key_validate(s, n, &why);
  int good;
  if (ok)
    good = CHECK_EQ_INT(rc, 0);
  else
    good = CHECK_EQ_INT(rc, -EINVAL) & CHECK(why != NULL && why[0] != '\0');
  if (!good) {
    fprintf(stderr, "  (%s: ", label);
    check_print_mem_(s, n < 80 ? n : 80);
    fprintf(stderr, " len %zu, why %s)\n", n, why ? why : "NULL");
  }
}

static void test_table(void) {
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    check_key(cases[i].s, cases[i].n, cases[i].ok, "table");
}

static void test_lengths(void) {
  char k[CAP_KEY_MAX + 8];
  memset(k, 'a', sizeof(k));
  check_key(k, CAP_KEY_MAX, 1, "1024 bytes");
  check_key(k, CAP_KEY_MAX + 1, 0, "1025 bytes");
  check_key(k, CAP_KEY_MAX + 7, 0, "1031 bytes");
  /* Bytes, not characters: 1022 + a two-byte character is 1024. */
  memcpy(k + CAP_KEY_MAX - 2, "\xc3\xa9", 2);
  check_key(k, CAP_KEY_MAX, 1, "1022 + 2-byte char");
  memset(k, 'a', sizeof(k));
  memcpy(k + CAP_KEY_MAX - 1, "\xc3\xa9", 2);
  check_key(k, CAP_KEY_MAX + 1, 0, "1023 + 2-byte char");
  /* A 2-byte character cut by n is invalid UTF-8. */
  check_key(k, CAP_KEY_MAX, 0, "cut character");
  /* Many segments. */
  for (int i = 0; i < CAP_KEY_MAX; i += 2) {
    k[i] = 'x';
    k[i + 1] = '/';
  }
  check_key(k, CAP_KEY_MAX - 1, 1, "512 segments");
  check_key(k, CAP_KEY_MAX, 0, "trailing slash after 512 segments");
  /* Only n bytes are looked at. */
  check_key("ab/..", 2, 1, "prefix of a bad key");
}

int main(void) {
  test_table();
  test_lengths();
  return check_report();
}
