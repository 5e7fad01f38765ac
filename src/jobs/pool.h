#ifndef CAP_POOL_H
#define CAP_POOL_H

#include <stddef.h>

/* Bounded concurrency per resource class: each class has a number of slots
 * (jobs running at once) and a FIFO queue of bounded depth for the rest.
 * The pool only counts and orders; what "start" means is the item's. */

struct cap_pool_item;
typedef void (*cap_pool_start_fn)(struct cap_pool_item *it);

struct cap_pool_class {
  char name[32];
  int slots;
  int busy;
  size_t queued;
  size_t queue_max;
  struct cap_pool_item *head, *tail;
};

struct cap_pool_item {
  struct cap_pool_item *prev, *next;
  struct cap_pool_class *cls;
  int state; /* 0 idle, 1 queued, 2 holding a slot */
  cap_pool_start_fn start;
};

struct cap_pool {
  struct cap_pool_class **v; /* Each class allocated alone: items point at it. */
  size_t n;
};

void cap_pool_init(struct cap_pool *p);
void cap_pool_free(struct cap_pool *p);
/* Adds (or resizes) a class.  Growing the slots starts queued items. */
void cap_pool_set_class(struct cap_pool *p, const char *name, int slots, size_t queue_max);
struct cap_pool_class *cap_pool_find(struct cap_pool *p, const char *name);
/* Runs it now when cls has a free slot (it->start is called before this
 * returns), else queues it.  Returns 0, -ENOENT for an unknown class, or
 * -EAGAIN when the queue is full. */
int cap_pool_submit(struct cap_pool *p, const char *cls, struct cap_pool_item *it);
/* Returns 0 when cap_pool_submit to cls would succeed now, -ENOENT for
 * an unknown class, -EAGAIN when its queue is full. */
int cap_pool_can_take(struct cap_pool *p, const char *cls);
/* Gives back the slot an item holds, or takes it out of the queue; then
 * starts the next queued item of its class. */
void cap_pool_release(struct cap_pool *p, struct cap_pool_item *it);
/* Totals over every class. */
void cap_pool_totals(const struct cap_pool *p, int *running, size_t *queued);

#endif
