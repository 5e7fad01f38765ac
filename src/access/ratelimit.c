#include "ratelimit.h"

#include "alloc.h"
#include "hash.h"

#include <errno.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct bucket {
  char key[CAP_RATELIMIT_KEY_MAX + 1];
  double tokens;
  uint64_t last_ms;
  struct bucket *hnext;               /* Hash chain. */
  struct bucket *lru_prev, *lru_next; /* Most recently used at the head. */
};

struct cap_ratelimit {
  double capacity;
  double per_ms;
  size_t max_entries, n;
  size_t nslots; /* A power of two. */
  struct bucket **slots;
  struct bucket *lru_head, *lru_tail;
  /* Random, like the connection set's: client addresses are the keys. */
  uint64_t seed;
};

static size_t slot_of(const struct cap_ratelimit *rl, const char *key) {
  return cap_hash_bucket(cap_hash_str(key, rl->seed), rl->nslots);
}

struct cap_ratelimit *cap_ratelimit_new(unsigned per_minute, size_t max_entries) {
  struct cap_ratelimit *rl = xcalloc(1, sizeof(*rl));
  rl->max_entries = max_entries ? max_entries : 1;
  rl->nslots = 16;
  while (rl->nslots < rl->max_entries)
    rl->nslots *= 2;
  rl->slots = xcalloc(rl->nslots, sizeof(*rl->slots));
  rl->seed = cap_hash_seed(rl);
  cap_ratelimit_set_rate(rl, per_minute);
  return rl;
}

void cap_ratelimit_set_rate(struct cap_ratelimit *rl, unsigned per_minute) {
  rl->capacity = per_minute;
  rl->per_ms = per_minute / 60000.0;
}

void cap_ratelimit_free(struct cap_ratelimit *rl) {
  if (rl == NULL)
    return;
  struct bucket *b = rl->lru_head;
  while (b) {
    struct bucket *next = b->lru_next;
    free(b);
    b = next;
  }
  free(rl->slots);
  free(rl);
}

size_t cap_ratelimit_size(const struct cap_ratelimit *rl) {
  return rl->n;
}

static void lru_unlink(struct cap_ratelimit *rl, struct bucket *b) {
  if (b->lru_prev)
    b->lru_prev->lru_next = b->lru_next;
  else
    rl->lru_head = b->lru_next;
  if (b->lru_next)
    b->lru_next->lru_prev = b->lru_prev;
  else
    rl->lru_tail = b->lru_prev;
  b->lru_prev = b->lru_next = NULL;
}

static void lru_push_front(struct cap_ratelimit *rl, struct bucket *b) {
  b->lru_prev = NULL;
  b->lru_next = rl->lru_head;
  if (rl->lru_head)
    rl->lru_head->lru_prev = b;
  rl->lru_head = b;
  if (rl->lru_tail == NULL)
    rl->lru_tail = b;
}

static void evict(struct cap_ratelimit *rl, struct bucket *b) {
  struct bucket **pp = &rl->slots[slot_of(rl, b->key)];
  while (*pp != b)
    pp = &(*pp)->hnext;
  *pp = b->hnext;
  lru_unlink(rl, b);
  free(b);
  rl->n--;
}

int cap_ratelimit_take(struct cap_ratelimit *rl, const char *long_key, uint64_t now_ms,
                       unsigned *retry_after) {
  /* Buckets keep at most CAP_RATELIMIT_KEY_MAX bytes of a key; hash and
   * compare exactly what is kept. */
  char key[CAP_RATELIMIT_KEY_MAX + 1];
  snprintf(key, sizeof(key), "%s", long_key);
  /* Expiry: a bucket untouched for a minute is full again, the same as no
   * bucket at all, so the least recently used ones are dropped as we go. */
  for (int i = 0; i < 2 && rl->lru_tail && now_ms >= rl->lru_tail->last_ms + 60000; i++)
    evict(rl, rl->lru_tail);
  size_t slot = slot_of(rl, key);
  struct bucket *b = rl->slots[slot];
  while (b && strcmp(b->key, key) != 0)
    b = b->hnext;

  if (b == NULL) {
    if (rl->n >= rl->max_entries)
      evict(rl, rl->lru_tail);
    b = xcalloc(1, sizeof(*b));
    snprintf(b->key, sizeof(b->key), "%s", key);
    b->tokens = rl->capacity;
    b->last_ms = now_ms;
    b->hnext = rl->slots[slot];
    rl->slots[slot] = b;
    rl->n++;
  } else {
    lru_unlink(rl, b);
    if (now_ms > b->last_ms) {
      b->tokens += (double)(now_ms - b->last_ms) * rl->per_ms;
      if (b->tokens > rl->capacity)
        b->tokens = rl->capacity;
    }
    b->last_ms = now_ms;
  }
  lru_push_front(rl, b);

  if (b->tokens >= 1.0) {
    b->tokens -= 1.0;
    return 0;
  }
  double wait_ms = (1.0 - b->tokens) / rl->per_ms;
  *retry_after = (unsigned)ceil(wait_ms / 1000.0);
  if (*retry_after == 0)
    *retry_after = 1;
  return -EAGAIN;
}
