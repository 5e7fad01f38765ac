#include "key.h"

#include "jsonw.h"

#include <errno.h>

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
      if (c < 0x20 || c == 0x7f) {
        *why = "must not contain control characters";
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
