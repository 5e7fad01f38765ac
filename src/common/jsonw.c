#include "jsonw.h"

#include <stdint.h>

/* Returns the length of the valid UTF-8 sequence at s (1..4), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return (n >= 2 && (s[1] & 0xc0) == 0x80) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
      return 0;
    if (c == 0xe0 && s[1] < 0xa0)
      return 0; /* overlong */
    if (c == 0xed && s[1] >= 0xa0)
      return 0; /* surrogate */
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
      return 0;
    if (c == 0xf0 && s[1] < 0x90)
      return 0; /* overlong */
    if (c == 0xf4 && s[1] >= 0x90)
      return 0; /* above U+10FFFF */
    return 4;
  }
  return 0;
}

int cap_jsonw_utf8_valid(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t k = utf8_seq(p + i, n - i);
    if (k == 0)
      return 0;
    i += k;
  }
  return 1;
}

void cap_jsonw_str(struct cap_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;

  cap_buf_reserve(b, n + 2);
  cap_buf_putc(b, '"');
  while (i < n) {
    unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      /* Copy the longest plain ASCII run at once; this is the common case. */
      size_t j = i + 1;
      while (j < n && p[j] >= 0x20 && p[j] < 0x7f && p[j] != '"' && p[j] != '\\')
        j++;
      cap_buf_append(b, p + i, j - i);
      i = j;
      continue;
    }
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      cap_buf_append(b, esc, 2);
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      cap_buf_append(b, esc, 6);
      i++;
    } else {
      size_t k = utf8_seq(p + i, n - i);
      if (k == 0) {
        cap_buf_puts(b, "\\ufffd");
        i++;
      } else {
        cap_buf_append(b, p + i, k);
        i += k;
      }
    }
  }
  cap_buf_putc(b, '"');
}
