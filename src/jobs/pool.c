#include "pool.h"

#include "alloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ITEM_IDLE = 0, ITEM_QUEUED = 1, ITEM_RUNNING = 2 };

void cap_pool_init(struct cap_pool *p) {
  p->v = NULL;
  p->n = 0;
}

void cap_pool_free(struct cap_pool *p) {
  for (size_t i = 0; i < p->n; i++)
    free(p->v[i]);
  free(p->v);
  cap_pool_init(p);
}

struct cap_pool_class *cap_pool_find(struct cap_pool *p, const char *name) {
  for (size_t i = 0; i < p->n; i++)
    if (strcmp(p->v[i]->name, name) == 0)
      return p->v[i];
  return NULL;
}

static void unqueue(struct cap_pool_class *c, struct cap_pool_item *it) {
  if (it->prev)
    it->prev->next = it->next;
  else
    c->head = it->next;
  if (it->next)
    it->next->prev = it->prev;
  else
    c->tail = it->prev;
  it->prev = it->next = NULL;
  c->queued--;
}

/* Starts queued items while slots are free. */
static void pump(struct cap_pool_class *c) {
  while (c->busy < c->slots && c->head) {
    struct cap_pool_item *it = c->head;
    unqueue(c, it);
    it->state = ITEM_RUNNING;
    c->busy++;
    it->start(it);
  }
}

void cap_pool_set_class(struct cap_pool *p, const char *name, int slots, size_t queue_max) {
  struct cap_pool_class *c = cap_pool_find(p, name);
  if (c == NULL) {
    /* Items point at their class, so a class never moves: the array holds
     * pointers and may grow while jobs run (a preset reload adds classes). */
    p->v = xrealloc(p->v, (p->n + 1) * sizeof(*p->v));
    c = xcalloc(1, sizeof(*c));
    p->v[p->n++] = c;
    snprintf(c->name, sizeof(c->name), "%s", name);
  }
  c->slots = slots;
  c->queue_max = queue_max;
  pump(c);
}

int cap_pool_submit(struct cap_pool *p, const char *cls, struct cap_pool_item *it) {
  struct cap_pool_class *c = cap_pool_find(p, cls);
  if (c == NULL)
    return -ENOENT;
  it->cls = c;
  it->prev = it->next = NULL;
  if (c->busy < c->slots && c->head == NULL) {
    it->state = ITEM_RUNNING;
    c->busy++;
    it->start(it);
    return 0;
  }
  if (c->queued >= c->queue_max)
    return -EAGAIN;
  it->state = ITEM_QUEUED;
  it->prev = c->tail;
  if (c->tail)
    c->tail->next = it;
  else
    c->head = it;
  c->tail = it;
  c->queued++;
  return 0;
}

int cap_pool_can_take(struct cap_pool *p, const char *cls) {
  struct cap_pool_class *c = cap_pool_find(p, cls);
  if (c == NULL)
    return -ENOENT;
  if (c->busy < c->slots && c->head == NULL)
    return 0;
  return c->queued >= c->queue_max ? -EAGAIN : 0;
}

void cap_pool_release(struct cap_pool *p, struct cap_pool_item *it) {
  struct cap_pool_class *c = it->cls;
  if (c == NULL)
    return;
  if (it->state == ITEM_QUEUED)
    unqueue(c, it);
  else if (it->state == ITEM_RUNNING)
    c->busy--;
  it->state = ITEM_IDLE;
  it->cls = NULL;
  pump(c);
}

void cap_pool_totals(const struct cap_pool *p, int *running, size_t *queued) {
  *running = 0;
  *queued = 0;
  for (size_t i = 0; i < p->n; i++) {
    *running += p->v[i]->busy;
    *queued += p->v[i]->queued;
  }
}
