#ifndef CAP_HASH_H
#define CAP_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* String hashing for the small chained tables whose keys come from
 * clients (connection counts, rate-limit buckets).  The table sizes are
 * fixed, so a client that picks keys (an IPv6 client has 2^64 addresses)
 * can only lengthen chains; a random seed per table keeps it from knowing
 * which keys share one. */

/* FNV-1a over the NUL-terminated s, starting from the offset basis xored
 * with seed (seed 0: plain FNV-1a). */
static inline uint64_t cap_hash_str(const char *s, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325u ^ seed;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    h ^= *p;
    h *= 0x100000001b3u;
  }
  return h;
}

/* The bucket of h in a table of nbuckets (a power of two).  FNV's low bits
 * depend only on the seed's low bits; folding the high bits in makes the
 * whole seed count. */
static inline size_t cap_hash_bucket(uint64_t h, size_t nbuckets) {
  h ^= h >> 29;
  return (size_t)(h & (nbuckets - 1));
}

/* Returns a random seed, or one derived from salt (an address) when the
 * system has no randomness to give. */
static inline uint64_t cap_hash_seed(const void *salt) {
  uint64_t seed;
  if (uv_random(NULL, NULL, &seed, sizeof(seed), 0, NULL) != 0)
    seed = (uint64_t)(uintptr_t)salt ^ 0x9e3779b97f4a7c15u;
  return seed;
}

#endif
