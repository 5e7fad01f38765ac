#include "key.h"

#include "jsonw.h"

#include <errno.h>

/* Returns the length of a UTF-8 sequence at s (valid UTF-8, n bytes left)
 * that must not be in a key: C1 controls (U+0080-U+009F), and the marks
 * and overrides that reorder text for display (U+061C, U+200E, U+200F,
 * U+202A-U+202E, U+2066-U+2069) or break lines (U+2028, U+2029), which
 * make a key look like another in a log, a listing or a console.  0 when
 * the character is fine. */
static size_t bad_char(const unsigned char *s, size_t n) {
  if (n >= 2 && s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
    return 2;
  if (n >= 2 && s[0] == 0xd8 && s[1] == 0x9c)
    return 2;
  if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 &&
      (s[2] == 0x8e || s[2] == 0x8f || (s[2] >= 0xa8 && s[2] <= 0xae)))
    return 3;
  if (n >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9)
    return 3;
  return 0;
}

int cap_key_validate(const char *s, size_t n, const char **why) {
  if (n == 0 || n > CAP_KEY_MAX) {
    *why = "must be 1 to 1024 bytes long";
    return -EINVAL;
  }
  if (!cap_jsonw_utf8_valid(s, n)) {
    *why = "must be valid UTF-8";
    return -EINVAL;
  }
  if (s[0] == '/') {
    *why = "must not start with '/'";
    return -EINVAL;
  }
  size_t seg = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n) {
      unsigned char c = (unsigned char)s[i];
      if (c < 0x20 || c == 0x7f || bad_char((const unsigned char *)s + i, n - i)) {
        *why = "must not contain control, bidirectional-override or line-separator characters";
        return -EINVAL;
      }
      if (c == '\\') {
        *why = "must not contain '\\'";
        return -EINVAL;
      }
      if (c != '/')
        continue;
    }
    size_t len = i - seg;
    if (len == 0 || (len == 1 && s[seg] == '.') ||
        (len == 2 && s[seg] == '.' && s[seg + 1] == '.')) {
      *why = "must not have empty, '.' or '..' segments";
      return -EINVAL;
    }
    seg = i + 1;
  }
  return 0;
}
