#include "buf.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

static void test_init_empty(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  CHECK(b.data == NULL);
  CHECK_EQ_INT(b.len, 0);
  CHECK_EQ_INT(b.cap, 0);
  cap_buf_free(&b);
  CHECK(b.data == NULL);
}

static void test_append_puts_putc(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_append(&b, "abc", 3);
  CHECK_EQ_INT(b.len, 3);
  CHECK_EQ_STR(b.data, "abc");
  cap_buf_puts(&b, "de");
  cap_buf_putc(&b, 'f');
  CHECK_EQ_INT(b.len, 6);
  CHECK_EQ_STR(b.data, "abcdef");
  CHECK(b.cap > b.len);
  /* Embedded NUL bytes are kept. */
  cap_buf_append(&b, "x\0y", 3);
  CHECK_EQ_MEM(b.data, b.len, "abcdefx\0y", 9);
  CHECK_EQ_INT(b.data[b.len], 0);
  /* Appending nothing still leaves a terminated buffer. */
  cap_buf_append(&b, NULL, 0);
  CHECK_EQ_INT(b.len, 9);
  cap_buf_free(&b);
  CHECK(b.data == NULL);
  CHECK_EQ_INT(b.len, 0);

  /* Appending zero bytes to an empty buffer gives "" rather than NULL. */
  cap_buf_append(&b, "", 0);
  CHECK(b.data != NULL);
  CHECK_EQ_STR(b.data, "");
  cap_buf_free(&b);
}

static void test_growth(void) {
  struct cap_buf b;
  char expect[10000];
  cap_buf_init(&b);
  for (int i = 0; i < 10000; i++) {
    char c = (char)('a' + i % 26);
    cap_buf_putc(&b, c);
    expect[i] = c;
  }
  CHECK_EQ_INT(b.len, 10000);
  CHECK(b.cap >= 10001);
  CHECK_EQ_MEM(b.data, b.len, expect, sizeof(expect));
  CHECK_EQ_INT(b.data[10000], 0);
  cap_buf_free(&b);
}

static void test_reserve(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_reserve(&b, 1000);
  CHECK(b.cap >= 1001);
  CHECK_EQ_INT(b.len, 0);
  char *before = b.data;
  size_t cap = b.cap;
  for (int i = 0; i < 1000; i++)
    cap_buf_putc(&b, 'x');
  CHECK(b.data == before); /* No reallocation within what was reserved. */
  CHECK_EQ_INT(b.cap, cap);
  cap_buf_free(&b);
}

static void test_reset(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_reset(&b); /* On an empty buffer: no crash. */
  CHECK_EQ_INT(b.len, 0);
  cap_buf_puts(&b, "hello world");
  size_t cap = b.cap;
  char *data = b.data;
  cap_buf_reset(&b);
  CHECK_EQ_INT(b.len, 0);
  CHECK_EQ_STR(b.data, "");
  CHECK_EQ_INT(b.cap, cap);
  CHECK(b.data == data);
  cap_buf_puts(&b, "again");
  CHECK_EQ_STR(b.data, "again");
  cap_buf_free(&b);
}

static void test_printf(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_printf(&b, "%d-%s", 42, "x");
  CHECK_EQ_STR(b.data, "42-x");
  CHECK_EQ_INT(b.len, 4);
  cap_buf_printf(&b, "|%05.1f|", 3.14159);
  CHECK_EQ_STR(b.data, "42-x|003.1|");
  /* Longer than the initial reservation: must take the second pass. */
  char big[1000];
  memset(big, 'q', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  cap_buf_printf(&b, "<%s>", big);
  CHECK_EQ_INT(b.len, 11 + 1001);
  CHECK_EQ_INT(strlen(b.data), b.len);
  CHECK_EQ_INT(b.data[11], '<');
  CHECK_EQ_INT(b.data[b.len - 1], '>');
  CHECK_EQ_INT(b.data[12], 'q');
  CHECK_EQ_INT(b.data[b.len - 2], 'q');
  /* Exactly filling the free space: the NUL must still fit. */
  cap_buf_free(&b);
  for (size_t n = 50; n < 140; n++) {
    cap_buf_init(&b);
    memset(big, 'z', n);
    big[n] = '\0';
    cap_buf_printf(&b, "%s", big);
    if (!CHECK_EQ_INT(b.len, n))
      break;
    CHECK_EQ_INT(strlen(b.data), n);
    cap_buf_free(&b);
  }
  cap_buf_free(&b);
  cap_buf_printf(&b, "%s", "");
  CHECK_EQ_INT(b.len, 0);
  CHECK_EQ_STR(b.data, "");
  cap_buf_free(&b);
}

static void test_consume(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_consume(&b, 5); /* Empty: no crash. */
  CHECK_EQ_INT(b.len, 0);
  cap_buf_puts(&b, "0123456789");
  cap_buf_consume(&b, 0);
  CHECK_EQ_STR(b.data, "0123456789");
  cap_buf_consume(&b, 3);
  CHECK_EQ_STR(b.data, "3456789");
  CHECK_EQ_INT(b.len, 7);
  cap_buf_consume(&b, 6);
  CHECK_EQ_STR(b.data, "9");
  cap_buf_consume(&b, 1);
  CHECK_EQ_INT(b.len, 0);
  CHECK_EQ_STR(b.data, "");
  cap_buf_puts(&b, "abc");
  cap_buf_consume(&b, 100);
  CHECK_EQ_INT(b.len, 0);
  CHECK_EQ_STR(b.data, "");
  cap_buf_free(&b);
}

static void test_steal(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_puts(&b, "owned");
  char *p = cap_buf_steal(&b);
  CHECK_EQ_STR(p, "owned");
  CHECK(b.data == NULL);
  CHECK_EQ_INT(b.len, 0);
  CHECK_EQ_INT(b.cap, 0);
  free(p);
  /* Stealing from an empty buffer gives an empty string, not NULL. */
  p = cap_buf_steal(&b);
  CHECK(p != NULL);
  CHECK_EQ_STR(p, "");
  free(p);
  /* The buffer is usable after a steal. */
  cap_buf_puts(&b, "more");
  CHECK_EQ_STR(b.data, "more");
  cap_buf_free(&b);
}

int main(void) {
  test_init_empty();
  test_append_puts_putc();
  test_growth();
  test_reserve();
  test_reset();
  test_printf();
  test_consume();
  test_steal();
  return check_report();
}
