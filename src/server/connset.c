#include "connset.h"

#include "alloc.h"
#include "hash.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How many connections one client address holds. */
struct cap_connset_client {
  struct cap_connset_client *next;
  size_t count;
  char addr[CAP_NETADDR_STRLEN];
};

void cap_connset_init(struct cap_connset *s, const char *name, size_t max, size_t per_client,
                      void (*evict)(struct cap_connset_entry *, void *), void *arg) {
  memset(s, 0, sizeof(*s));
  s->name = name;
  s->max = max;
  s->per_client = per_client;
  s->evict = evict;
  s->arg = arg;
  /* About four connections a bucket when the set is full; the table is
   * small and fixed, so nothing a client sends can grow it. */
  s->nbuckets = 64;
  while (s->nbuckets < max / 4 && s->nbuckets < 65536)
    s->nbuckets *= 2;
  s->buckets = xcalloc(s->nbuckets, sizeof(*s->buckets));
  /* A random seed, so that addresses chosen to collide (an IPv6 client has
   * plenty) cannot pile up in one chain. */
  s->seed = cap_hash_seed(s);
}

void cap_connset_free(struct cap_connset *s) {
  for (size_t i = 0; i < s->nbuckets; i++) {
    struct cap_connset_client *c = s->buckets[i], *next;
    for (; c; c = next) {
      next = c->next;
      free(c);
    }
  }
  free(s->buckets);
  s->buckets = NULL;
}

static size_t bucket_of(const struct cap_connset *s, const char *addr) {
  return cap_hash_bucket(cap_hash_str(addr, s->seed), s->nbuckets);
}

static struct cap_connset_client *find_client(const struct cap_connset *s, const char *addr) {
  struct cap_connset_client *c = s->buckets[bucket_of(s, addr)];
  while (c && strcmp(c->addr, addr) != 0)
    c = c->next;
  return c;
}

static void release_client(struct cap_connset *s, struct cap_connset_client *c) {
  if (c == NULL || --c->count > 0)
    return;
  struct cap_connset_client **pp = &s->buckets[bucket_of(s, c->addr)];
  while (*pp != c)
    pp = &(*pp)->next;
  *pp = c->next;
  s->nclients--;
  free(c);
}

size_t cap_connset_client_count(const struct cap_connset *s, const char *client) {
  const struct cap_connset_client *c = find_client(s, client);
  return c ? c->count : 0;
}

int cap_connset_attribute(struct cap_connset *s, struct cap_connset_entry *e, const char *client) {
  if (e->client && strcmp(e->client->addr, client) == 0)
    return 0;
  struct cap_connset_client *c = find_client(s, client);
  if (c && s->per_client && c->count >= s->per_client)
    return -EUSERS;
  if (c == NULL) {
    size_t b = bucket_of(s, client);
    c = xcalloc(1, sizeof(*c));
    snprintf(c->addr, sizeof(c->addr), "%s", client);
    c->next = s->buckets[b];
    s->buckets[b] = c;
    s->nclients++;
  }
  c->count++;
  release_client(s, e->client);
  e->client = c;
  return 0;
}

size_t cap_connset_live(const struct cap_connset *s) {
  return s->n - s->nrefused - s->nclosing;
}

void cap_connset_busy(struct cap_connset *s, struct cap_connset_entry *e) {
  if (!e->idle)
    return;
  if (e->idle_prev)
    e->idle_prev->idle_next = e->idle_next;
  else
    s->idle_first = e->idle_next;
  if (e->idle_next)
    e->idle_next->idle_prev = e->idle_prev;
  else
    s->idle_last = e->idle_prev;
  e->idle_prev = e->idle_next = NULL;
  e->idle = 0;
  s->nidle--;
}

void cap_connset_idle(struct cap_connset *s, struct cap_connset_entry *e) {
  if (e->refused || e->closing)
    return;
  /* Back to the end of the queue: idle time counts from now. */
  cap_connset_busy(s, e);
  e->idle_prev = s->idle_last;
  if (s->idle_last)
    s->idle_last->idle_next = e;
  else
    s->idle_first = e;
  s->idle_last = e;
  e->idle = 1;
  s->nidle++;
}

void cap_connset_add(struct cap_connset *s, struct cap_connset_entry *e, int refused) {
  e->next = s->first;
  if (s->first)
    s->first->prev = e;
  s->first = e;
  e->in_set = 1;
  s->n++;
  if (refused) {
    e->refused = 1;
    s->nrefused++;
  } else {
    cap_connset_idle(s, e);
  }
}

void cap_connset_closing(struct cap_connset *s, struct cap_connset_entry *e) {
  if (e->closing || !e->in_set)
    return;
  cap_connset_busy(s, e);
  e->closing = 1;
  if (!e->refused)
    s->nclosing++;
}

void cap_connset_remove(struct cap_connset *s, struct cap_connset_entry *e) {
  if (!e->in_set)
    return;
  cap_connset_busy(s, e);
  if (e->prev)
    e->prev->next = e->next;
  else
    s->first = e->next;
  if (e->next)
    e->next->prev = e->prev;
  if (e->refused)
    s->nrefused--;
  else if (e->closing)
    s->nclosing--;
  s->n--;
  release_client(s, e->client);
  e->client = NULL;
  e->in_set = 0;
}

int cap_connset_has_room(struct cap_connset *s) {
  /* Like nginx, start reusing idle connections once a sixteenth of the
   * budget is left, so that a new client rarely meets a full table. */
  size_t low_water = s->max - s->max / 16;
  while (cap_connset_live(s) >= low_water && s->idle_first) {
    struct cap_connset_entry *e = s->idle_first;
    cap_connset_closing(s, e);
    s->evict(e, s->arg);
  }
  return cap_connset_live(s) < s->max;
}
