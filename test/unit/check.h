/* A tiny unit test harness: each CHECK counts one passed or failed
 * assertion; failures print file:line and the values involved.  A test
 * program ends with `return check_report();`, which prints
 * "N passed, M failed" and returns non-zero when anything failed. */
#ifndef CAP_TEST_CHECK_H
#define CAP_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed_, check_failed_;

static inline int check_result_(int ok) {
  if (ok)
    check_passed_++;
  else
    check_failed_++;
  return ok;
}

/* Prints n bytes of p with non-printable bytes escaped. */
static inline void check_print_mem_(const void *p, size_t n) {
  const unsigned char *s = p;
  fputc('"', stderr);
  for (size_t i = 0; i < n && i < 512; i++) {
    unsigned char c = s[i];
    if (c == '\\' || c == '"')
      fprintf(stderr, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", stderr);
    else if (c == '\r')
      fputs("\\r", stderr);
    else if (c < 0x20 || c >= 0x7f)
      fprintf(stderr, "\\x%02x", c);
    else
      fputc(c, stderr);
  }
  fputc('"', stderr);
  if (n > 512)
    fprintf(stderr, "... (%zu bytes)", n);
}

static inline int check_int_(const char *file, int line, const char *ea, const char *eb,
                             long long a, long long b) {
  if (check_result_(a == b))
    return 1;
  fprintf(stderr, "%s:%d: CHECK_EQ_INT(%s, %s) failed: %lld != %lld\n", file, line, ea, eb, a, b);
  return 0;
}

static inline int check_str_(const char *file, int line, const char *ea, const char *eb,
                             const char *a, const char *b) {
  int ok = (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
  if (check_result_(ok))
    return 1;
  fprintf(stderr, "%s:%d: CHECK_EQ_STR(%s, %s) failed: ", file, line, ea, eb);
  if (a)
    check_print_mem_(a, strlen(a));
  else
    fputs("NULL", stderr);
  fputs(" != ", stderr);
  if (b)
    check_print_mem_(b, strlen(b));
  else
    fputs("NULL", stderr);
  fputc('\n', stderr);
  return 0;
}

static inline int check_mem_(const char *file, int line, const char *ea, const char *eb,
                             const void *a, size_t alen, const void *b, size_t blen) {
  int ok = alen == blen && (alen == 0 || (a != NULL && b != NULL && memcmp(a, b, alen) == 0));
  if (check_result_(ok))
    return 1;
  fprintf(stderr, "%s:%d: CHECK_EQ_MEM(%s, %s) failed: ", file, line, ea, eb);
  if (a)
    check_print_mem_(a, alen);
  else
    fputs("NULL", stderr);
  fprintf(stderr, " (%zu bytes) != ", alen);
  if (b)
    check_print_mem_(b, blen);
  else
    fputs("NULL", stderr);
  fprintf(stderr, " (%zu bytes)\n", blen);
  return 0;
}

/* Each macro evaluates to 1 when the check passed, so a test can stop
 * early: if (!CHECK(p != NULL)) return; */
#define CHECK(cond)                                                                                \
  (check_result_(!!(cond))                                                                         \
       ? 1                                                                                         \
       : (fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond), 0))
#define CHECK_EQ_INT(a, b) check_int_(__FILE__, __LINE__, #a, #b, (long long)(a), (long long)(b))
#define CHECK_EQ_STR(a, b) check_str_(__FILE__, __LINE__, #a, #b, (a), (b))
/* Compares alen bytes at a with blen bytes at b. */
#define CHECK_EQ_MEM(a, alen, b, blen)                                                             \
  check_mem_(__FILE__, __LINE__, #a, #b, (a), (size_t)(alen), (b), (size_t)(blen))

/* Prints the summary line and returns the exit status for main. */
static inline int check_report(void) {
  fflush(stdout);
  printf("%d passed, %d failed\n", check_passed_, check_failed_);
  fflush(stdout);
  return check_failed_ ? 1 : 0;
}

#endif
