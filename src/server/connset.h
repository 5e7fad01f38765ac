#ifndef CAP_CONNSET_H
#define CAP_CONNSET_H

#include "netaddr.h"

#include <stddef.h>
#include <stdint.h>

/* The open connections of one listener and the budget they share.
 *
 * Three rules keep one client from taking every connection:
 *  - at most max connections are served at once (beyond, the listener's
 *    owner answers 503 and closes);
 *  - once fewer than max/16 are left, idle connections (keep-alive between
 *    requests, open with nothing sent yet, or only waiting for the body of
 *    a request already refused) are closed, oldest first, to make room, as
 *    nginx and h2o reuse theirs;
 *  - at most per_client connections are counted against one client
 *    address: the peer's, or for a trusted proxy's connection the address
 *    its X-Forwarded-For names, known once a request's headers are in.
 *
 * The set knows nothing of HTTP: each connection embeds a cap_connset_entry,
 * and the set closes one through the evict callback given at init. */

struct cap_connset_client;

/* Connections refused that may be answered 503 at the same time; past
 * this they are closed without a word. */
#define CAP_CONNSET_REFUSING_MAX 64

/* The part of a connection that the set links and counts. */
struct cap_connset_entry {
  struct cap_connset_entry *prev, *next;           /* Every entry. */
  struct cap_connset_entry *idle_prev, *idle_next; /* Idle ones, oldest first. */
  struct cap_connset_client *client;               /* Counted against; NULL if none. */
  unsigned in_set : 1;
  unsigned refused : 1; /* Added only to be answered 503: takes no room. */
  unsigned idle : 1;
  unsigned closing : 1;
};

struct cap_connset {
  const char *name; /* "public" or "metrics", for logs and metrics. */
  size_t max;
  size_t per_client; /* 0: no per-client cap. */
  size_t n;          /* Entries in the set, closing and refused ones included. */
  size_t nrefused;
  size_t nclosing; /* Served entries (not refused) that are closing. */
  size_t nidle;
  struct cap_connset_entry *first;
  struct cap_connset_entry *idle_first, *idle_last;
  struct cap_connset_client **buckets;
  size_t nbuckets;
  uint64_t seed;
  size_t nclients;
  /* Closes an idle connection to make room; the entry must leave the set
   * (cap_connset_remove) once the connection is gone. */
  void (*evict)(struct cap_connset_entry *e, void *arg);
  void *arg;
};

/* Prepares an empty set; free it with cap_connset_free once it is empty. */
void cap_connset_init(struct cap_connset *s, const char *name, size_t max, size_t per_client,
                      void (*evict)(struct cap_connset_entry *, void *), void *arg);
void cap_connset_free(struct cap_connset *s);
/* Says whether a new connection can be served now (one more would not pass
 * max, counting connections that are closing as gone), after evicting
 * idle ones if the set is nearly full.  Returns 1 or 0. */
int cap_connset_has_room(struct cap_connset *s);
/* Adds e (zeroed by the caller) to the set; it starts idle, or with
 * refused set, as a connection that is only told to go away. */
void cap_connset_add(struct cap_connset *s, struct cap_connset_entry *e, int refused);
/* Returns how many connections are served (neither refused nor closing). */
size_t cap_connset_live(const struct cap_connset *s);
/* Counts e against client (an address in text form), in place of what it
 * was counted against before.  Returns 0, or -EUSERS when the client
 * already has per_client connections (e stays counted as before). */
int cap_connset_attribute(struct cap_connset *s, struct cap_connset_entry *e, const char *client);
/* Marks e idle (queued as the newest idle one) or busy. */
void cap_connset_idle(struct cap_connset *s, struct cap_connset_entry *e);
void cap_connset_busy(struct cap_connset *s, struct cap_connset_entry *e);
/* Marks e as closing: it no longer takes room, nor is it evicted again. */
void cap_connset_closing(struct cap_connset *s, struct cap_connset_entry *e);
/* Takes e out of the set, releasing its client count. */
void cap_connset_remove(struct cap_connset *s, struct cap_connset_entry *e);
/* Returns how many connections client holds. */
size_t cap_connset_client_count(const struct cap_connset *s, const char *client);

#endif
