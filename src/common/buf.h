#ifndef CAP_BUF_H
#define CAP_BUF_H

#include <stdarg.h>
#include <stddef.h>

/* A growable byte buffer; data is always NUL-terminated for convenience. */
struct cap_buf {
  char *data;
  size_t len;
  size_t cap;
};

void cap_buf_init(struct cap_buf *b);
/* Releases the storage; the buffer may be reused after cap_buf_init. */
void cap_buf_free(struct cap_buf *b);
/* Empties the buffer but keeps its storage. */
void cap_buf_reset(struct cap_buf *b);
void cap_buf_reserve(struct cap_buf *b, size_t extra);
void cap_buf_append(struct cap_buf *b, const void *p, size_t n);
void cap_buf_puts(struct cap_buf *b, const char *s);
void cap_buf_putc(struct cap_buf *b, char c);
__attribute__((format(printf, 2, 3))) void cap_buf_printf(struct cap_buf *b, const char *fmt, ...);
/* Removes the first n bytes. */
void cap_buf_consume(struct cap_buf *b, size_t n);
/* Hands the storage to the caller (who frees it) and empties the buffer. */
char *cap_buf_steal(struct cap_buf *b);

#endif
