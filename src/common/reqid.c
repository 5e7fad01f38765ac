#include "reqid.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Ids are echoed to clients and stand in logs: they must not tell how many
 * requests came before, or let one client guess another's.  Each is 128
 * fresh bits from OpenSSL's generator, which costs well under a
 * microsecond and makes a collision as unlikely as a guess. */

int cap_reqid_init(void) {
  unsigned char b[16];
  return RAND_bytes(b, sizeof(b)) == 1 ? 0 : -EIO;
}

void cap_reqid_generate(char *out) {
  static const char hex[] = "0123456789abcdef";
  unsigned char b[16];
  if (RAND_bytes(b, sizeof(b)) != 1)
    abort(); /* cap_reqid_init proved the generator works; it does not stop. */
  for (size_t i = 0; i < sizeof(b); i++) {
    out[2 * i] = hex[b[i] >> 4];
    out[2 * i + 1] = hex[b[i] & 15];
  }
  out[32] = '\0';
}

void cap_reqid_generate_job(char *out) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char r[16];
  if (RAND_bytes(r, sizeof(r)) != 1)
    abort(); /* Guessable job ids would let tokens see each other's jobs. */
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < sizeof(r); i++) {
    acc = (acc << 8) | r[i];
    bits += 8;
    while (bits >= 6) {
      out[o++] = b64[(acc >> (bits - 6)) & 63];
      bits -= 6;
    }
  }
  if (bits > 0)
    out[o++] = b64[(acc << (6 - bits)) & 63];
  out[o] = '\0';
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
