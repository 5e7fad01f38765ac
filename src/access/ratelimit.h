#ifndef CAP_RATELIMIT_H
#define CAP_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define CAP_RATELIMIT_KEY_MAX 80

/* Token buckets keyed by a short string (a client address or a token name).
 * Each bucket holds up to per_minute tokens and refills per_minute tokens a
 * minute.  The table never holds more than max_entries buckets: the least
 * recently used one is evicted, so forged keys cannot grow memory, and
 * buckets idle for a minute (full again) expire. */
struct cap_ratelimit;

/* Returns a new limiter; the caller frees it with cap_ratelimit_free. */
struct cap_ratelimit *cap_ratelimit_new(unsigned per_minute, size_t max_entries);
void cap_ratelimit_free(struct cap_ratelimit *rl);
/* Changes the rate of every bucket from now on. */
void cap_ratelimit_set_rate(struct cap_ratelimit *rl, unsigned per_minute);
/* Takes one token from key's bucket at time now_ms.  Returns 0 when allowed,
 * or -EAGAIN with the whole seconds until a token is back in *retry_after. */
int cap_ratelimit_take(struct cap_ratelimit *rl, const char *key, uint64_t now_ms,
                       unsigned *retry_after);
/* Returns how many buckets are kept. */
size_t cap_ratelimit_size(const struct cap_ratelimit *rl);

#endif
