#include "reqid.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>

/* A random 64-bit prefix per process and a counter: ids need to be unique,
 * not secret, and this costs no entropy per request. */
static uint64_t prefix, counter;

int cap_reqid_init(void) {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof(b)) != 1)
    return -EIO;
  prefix = counter = 0;
  for (int i = 0; i < 8; i++) {
    prefix = (prefix << 8) | b[i];
    counter = (counter << 8) | b[8 + i];
  }
  return 0;
}

void cap_reqid_generate(char *out) {
  counter++;
  snprintf(out, 33, "%016llx%016llx", (unsigned long long)prefix, (unsigned long long)counter);
}

int cap_reqid_valid(const char *s, size_t n) {
  if (n == 0 || n > CAP_REQID_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == ':' || c == '-'))
      return 0;
  }
  return 1;
}
