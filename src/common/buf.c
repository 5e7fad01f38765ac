#include "buf.h"

#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cap_buf_init(struct cap_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void cap_buf_free(struct cap_buf *b) {
  free(b->data);
  cap_buf_init(b);
}

void cap_buf_reset(struct cap_buf *b) {
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

void cap_buf_reserve(struct cap_buf *b, size_t extra) {
  size_t need = b->len + extra + 1;
  if (need <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap *= 2;
  b->data = xrealloc(b->data, cap);
  b->cap = cap;
  b->data[b->len] = '\0';
}

void cap_buf_append(struct cap_buf *b, const void *p, size_t n) {
  cap_buf_reserve(b, n);
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void cap_buf_puts(struct cap_buf *b, const char *s) {
  cap_buf_append(b, s, strlen(s));
}

void cap_buf_putc(struct cap_buf *b, char c) {
  cap_buf_reserve(b, 1);
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
}

void cap_buf_printf(struct cap_buf *b, const char *fmt, ...) {
  va_list ap;
  cap_buf_reserve(b, 64);
  va_start(ap, fmt);
  int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n >= b->cap - b->len) {
    cap_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
  }
  b->len += (size_t)n;
}

void cap_buf_consume(struct cap_buf *b, size_t n) {
  if (n >= b->len) {
    cap_buf_reset(b);
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
  b->data[b->len] = '\0';
}

char *cap_buf_steal(struct cap_buf *b) {
  char *p = b->data;
  if (p == NULL)
    p = xstrdup("");
  cap_buf_init(b);
  return p;
}
