#include "pool.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each test item records the order in which the pool started it. */
struct titem {
  struct cap_pool_item it; /* First, so a start callback can cast back. */
  int id;
  int started;
};

static int order[64];
static int norder;

static void on_start(struct cap_pool_item *it) {
  struct titem *t = (struct titem *)it;
  t->started++;
  if (norder < (int)(sizeof(order) / sizeof(order[0])))
    order[norder++] = t->id;
}

static void items_init(struct titem *v, int n) {
  memset(v, 0, (size_t)n * sizeof(*v));
  for (int i = 0; i < n; i++) {
    v[i].id = i;
    v[i].it.start = on_start;
  }
  norder = 0;
}

static void check_totals(struct cap_pool *p, int running, size_t queued, int line) {
  int r = -1;
  size_t q = 99;
  cap_pool_totals(p, &r, &q);
  if (!CHECK_EQ_INT(r, running) || !CHECK_EQ_INT(q, queued))
    fprintf(stderr, "  (totals checked at line %d)\n", line);
}
#define TOTALS(p, r, q) check_totals((p), (r), (q), __LINE__)

static void test_classes(void) {
  struct cap_pool p;
  cap_pool_init(&p);
  CHECK_EQ_INT(p.n, 0);
  CHECK(cap_pool_find(&p, "cpu") == NULL);
  cap_pool_set_class(&p, "cpu", 2, 3);
  cap_pool_set_class(&p, "nvenc", 1, 0);
  CHECK_EQ_INT(p.n, 2);
  struct cap_pool_class *c = cap_pool_find(&p, "cpu");
  if (CHECK(c != NULL)) {
    CHECK_EQ_STR(c->name, "cpu");
    CHECK_EQ_INT(c->slots, 2);
    CHECK_EQ_INT(c->queue_max, 3);
    CHECK_EQ_INT(c->busy, 0);
    CHECK_EQ_INT(c->queued, 0);
  }
  /* Resizing keeps the class, it does not add another. */
  cap_pool_set_class(&p, "cpu", 4, 5);
  CHECK_EQ_INT(p.n, 2);
  c = cap_pool_find(&p, "cpu");
  if (CHECK(c != NULL)) {
    CHECK_EQ_INT(c->slots, 4);
    CHECK_EQ_INT(c->queue_max, 5);
  }
  CHECK(cap_pool_find(&p, "nvenc") != NULL);
  CHECK(cap_pool_find(&p, "cp") == NULL);
  CHECK(cap_pool_find(&p, "cpux") == NULL);
  TOTALS(&p, 0, 0);
  cap_pool_free(&p);
  CHECK_EQ_INT(p.n, 0);
  CHECK(p.v == NULL);
}

static void test_slots_and_fifo(void) {
  struct cap_pool p;
  struct titem v[8];
  items_init(v, 8);
  cap_pool_init(&p);
  cap_pool_set_class(&p, "cpu", 2, 3);

  /* Two slots: the first two start at once, before submit returns. */
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[0].it), 0);
  CHECK_EQ_INT(v[0].started, 1);
  CHECK_EQ_INT(v[0].it.state, 2);
  CHECK(v[0].it.cls == cap_pool_find(&p, "cpu"));
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[1].it), 0);
  CHECK_EQ_INT(v[1].started, 1);
  TOTALS(&p, 2, 0);

  /* The next three queue. */
  for (int i = 2; i < 5; i++) {
    CHECK_EQ_INT(cap_pool_can_take(&p, "cpu"), 0);
    CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[i].it), 0);
    CHECK_EQ_INT(v[i].started, 0);
    CHECK_EQ_INT(v[i].it.state, 1);
  }
  TOTALS(&p, 2, 3);
  struct cap_pool_class *c = cap_pool_find(&p, "cpu");
  CHECK_EQ_INT(c->busy, 2);
  CHECK_EQ_INT(c->queued, 3);
  CHECK(c->head == &v[2].it);
  CHECK(c->tail == &v[4].it);

  /* The queue is full: the sixth is refused and nothing changes. */
  CHECK_EQ_INT(cap_pool_can_take(&p, "cpu"), -EAGAIN);
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[5].it), -EAGAIN);
  CHECK_EQ_INT(v[5].started, 0);
  CHECK(v[5].it.state != 1 && v[5].it.state != 2);
  TOTALS(&p, 2, 3);

  /* Releasing a running item starts the oldest queued one. */
  cap_pool_release(&p, &v[1].it);
  CHECK_EQ_INT(v[1].it.state, 0);
  CHECK_EQ_INT(v[2].started, 1);
  CHECK_EQ_INT(v[2].it.state, 2);
  CHECK_EQ_INT(v[3].started, 0);
  TOTALS(&p, 2, 2);
  CHECK_EQ_INT(cap_pool_can_take(&p, "cpu"), 0);

  cap_pool_release(&p, &v[0].it);
  CHECK_EQ_INT(v[3].started, 1);
  CHECK_EQ_INT(v[4].started, 0);
  TOTALS(&p, 2, 1);

  cap_pool_release(&p, &v[2].it);
  CHECK_EQ_INT(v[4].started, 1);
  TOTALS(&p, 2, 0);

  cap_pool_release(&p, &v[3].it);
  TOTALS(&p, 1, 0);
  cap_pool_release(&p, &v[4].it);
  TOTALS(&p, 0, 0);

  /* Started in submit order, each exactly once. */
  int want[] = {0, 1, 2, 3, 4};
  CHECK_EQ_INT(norder, 5);
  CHECK_EQ_MEM(order, sizeof(int) * (size_t)norder, want, sizeof(want));
  for (int i = 0; i < 5; i++)
    CHECK_EQ_INT(v[i].started, 1);
  CHECK(c->head == NULL && c->tail == NULL);

  /* Releasing an idle item again changes nothing. */
  cap_pool_release(&p, &v[4].it);
  TOTALS(&p, 0, 0);
  CHECK_EQ_INT(c->busy, 0);
  cap_pool_free(&p);
}

static void test_unknown_class(void) {
  struct cap_pool p;
  struct titem v[1];
  items_init(v, 1);
  cap_pool_init(&p);
  CHECK_EQ_INT(cap_pool_can_take(&p, "cpu"), -ENOENT);
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[0].it), -ENOENT);
  cap_pool_set_class(&p, "cpu", 1, 1);
  CHECK_EQ_INT(cap_pool_can_take(&p, "gpu"), -ENOENT);
  CHECK_EQ_INT(cap_pool_submit(&p, "gpu", &v[0].it), -ENOENT);
  CHECK_EQ_INT(v[0].started, 0);
  CHECK(v[0].it.cls == NULL);
  TOTALS(&p, 0, 0);
  cap_pool_free(&p);
}

static void test_zero_queue_and_zero_slots(void) {
  struct cap_pool p;
  struct titem v[4];
  items_init(v, 4);
  cap_pool_init(&p);
  /* No queue at all: one runs, the next is refused. */
  cap_pool_set_class(&p, "a", 1, 0);
  CHECK_EQ_INT(cap_pool_can_take(&p, "a"), 0);
  CHECK_EQ_INT(cap_pool_submit(&p, "a", &v[0].it), 0);
  CHECK_EQ_INT(v[0].started, 1);
  CHECK_EQ_INT(cap_pool_can_take(&p, "a"), -EAGAIN);
  CHECK_EQ_INT(cap_pool_submit(&p, "a", &v[1].it), -EAGAIN);
  cap_pool_release(&p, &v[0].it);
  CHECK_EQ_INT(cap_pool_can_take(&p, "a"), 0);

  /* No slots (no GPU configured): items only queue. */
  cap_pool_set_class(&p, "b", 0, 2);
  CHECK_EQ_INT(cap_pool_submit(&p, "b", &v[2].it), 0);
  CHECK_EQ_INT(v[2].started, 0);
  CHECK_EQ_INT(cap_pool_submit(&p, "b", &v[3].it), 0);
  CHECK_EQ_INT(v[3].started, 0);
  CHECK_EQ_INT(cap_pool_can_take(&p, "b"), -EAGAIN);
  TOTALS(&p, 0, 2);
  cap_pool_release(&p, &v[2].it);
  cap_pool_release(&p, &v[3].it);
  TOTALS(&p, 0, 0);
  cap_pool_free(&p);
}

/* cap_pool_can_take must predict cap_pool_submit in every state. */
static void test_can_take_agrees(void) {
  for (int slots = 0; slots <= 3; slots++)
    for (size_t qmax = 0; qmax <= 3; qmax++) {
      struct cap_pool p;
      struct titem v[10];
      items_init(v, 10);
      cap_pool_init(&p);
      cap_pool_set_class(&p, "c", slots, qmax);
      int accepted = 0;
      for (int i = 0; i < 10; i++) {
        int pred = cap_pool_can_take(&p, "c");
        int rc = cap_pool_submit(&p, "c", &v[i].it);
        if (!CHECK_EQ_INT(pred, rc))
          fprintf(stderr, "  slots %d queue_max %zu item %d\n", slots, qmax, i);
        if (rc == 0)
          accepted++;
      }
      CHECK_EQ_INT(accepted, slots + (int)qmax);
      int running;
      size_t queued;
      cap_pool_totals(&p, &running, &queued);
      CHECK_EQ_INT(running, slots);
      CHECK_EQ_INT(queued, qmax);
      cap_pool_free(&p);
    }
}

static void test_release_queued(void) {
  struct cap_pool p;
  struct titem v[5];
  items_init(v, 5);
  cap_pool_init(&p);
  cap_pool_set_class(&p, "cpu", 1, 4);
  for (int i = 0; i < 5; i++)
    CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[i].it), 0);
  TOTALS(&p, 1, 4);
  struct cap_pool_class *c = cap_pool_find(&p, "cpu");

  /* Cancel from the middle, the head and the tail of the queue: none of
   * them starts, and nothing else does either (no slot was freed). */
  cap_pool_release(&p, &v[2].it);
  CHECK_EQ_INT(v[2].started, 0);
  CHECK_EQ_INT(v[2].it.state, 0);
  CHECK(v[2].it.cls == NULL);
  TOTALS(&p, 1, 3);
  CHECK(v[1].it.next == &v[3].it);
  CHECK(v[3].it.prev == &v[1].it);
  cap_pool_release(&p, &v[1].it);
  CHECK(c->head == &v[3].it);
  CHECK(v[3].it.prev == NULL);
  cap_pool_release(&p, &v[4].it);
  CHECK(c->tail == &v[3].it);
  CHECK(v[3].it.next == NULL);
  TOTALS(&p, 1, 1);
  CHECK_EQ_INT(norder, 1);

  /* A freed queue place can be taken again (queue_max counts the queue). */
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[1].it), 0);
  TOTALS(&p, 1, 2);

  /* The running one finishes: v[3] (queued before v[1]) goes first. */
  cap_pool_release(&p, &v[0].it);
  cap_pool_release(&p, &v[3].it);
  cap_pool_release(&p, &v[1].it);
  int want[] = {0, 3, 1};
  CHECK_EQ_MEM(order, sizeof(int) * (size_t)norder, want, sizeof(want));
  CHECK_EQ_INT(v[2].started + v[4].started, 0);
  TOTALS(&p, 0, 0);
  CHECK(c->head == NULL && c->tail == NULL);
  cap_pool_free(&p);
}

static void test_grow_pumps(void) {
  struct cap_pool p;
  struct titem v[6];
  items_init(v, 6);
  cap_pool_init(&p);
  cap_pool_set_class(&p, "nvenc", 0, 10);
  for (int i = 0; i < 5; i++)
    CHECK_EQ_INT(cap_pool_submit(&p, "nvenc", &v[i].it), 0);
  CHECK_EQ_INT(norder, 0);
  TOTALS(&p, 0, 5);

  /* Two slots appear: the two oldest start, in order. */
  cap_pool_set_class(&p, "nvenc", 2, 10);
  CHECK_EQ_INT(norder, 2);
  CHECK_EQ_INT(v[0].started, 1);
  CHECK_EQ_INT(v[1].started, 1);
  CHECK_EQ_INT(v[2].started, 0);
  TOTALS(&p, 2, 3);

  /* Shrinking starts nothing and stops nothing... */
  cap_pool_set_class(&p, "nvenc", 1, 10);
  TOTALS(&p, 2, 3);
  /* ...and a release then still leaves the class full. */
  cap_pool_release(&p, &v[0].it);
  TOTALS(&p, 1, 3);
  CHECK_EQ_INT(v[2].started, 0);
  cap_pool_release(&p, &v[1].it);
  TOTALS(&p, 1, 2);
  CHECK_EQ_INT(v[2].started, 1);

  /* Growing a lot starts everything queued. */
  cap_pool_set_class(&p, "nvenc", 10, 10);
  TOTALS(&p, 3, 0);
  int want[] = {0, 1, 2, 3, 4};
  CHECK_EQ_MEM(order, sizeof(int) * (size_t)norder, want, sizeof(want));
  /* A free slot with an empty queue runs a new item at once. */
  CHECK_EQ_INT(cap_pool_submit(&p, "nvenc", &v[5].it), 0);
  CHECK_EQ_INT(v[5].started, 1);
  TOTALS(&p, 4, 0);
  for (int i = 2; i < 6; i++)
    cap_pool_release(&p, &v[i].it);
  TOTALS(&p, 0, 0);
  cap_pool_free(&p);
}

static void test_totals_across_classes(void) {
  struct cap_pool p;
  struct titem v[7];
  items_init(v, 7);
  cap_pool_init(&p);
  cap_pool_set_class(&p, "cpu", 2, 5);
  cap_pool_set_class(&p, "nvenc", 1, 5);
  for (int i = 0; i < 4; i++)
    CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[i].it), 0);
  for (int i = 4; i < 7; i++)
    CHECK_EQ_INT(cap_pool_submit(&p, "nvenc", &v[i].it), 0);
  TOTALS(&p, 3, 4);
  CHECK_EQ_INT(cap_pool_find(&p, "cpu")->queued, 2);
  CHECK_EQ_INT(cap_pool_find(&p, "nvenc")->queued, 2);
  /* A release in one class never starts an item of another. */
  cap_pool_release(&p, &v[4].it);
  CHECK_EQ_INT(v[5].started, 1);
  CHECK_EQ_INT(v[2].started, 0);
  TOTALS(&p, 3, 3);
  for (int i = 0; i < 7; i++)
    cap_pool_release(&p, &v[i].it);
  TOTALS(&p, 0, 0);
  cap_pool_free(&p);
}

/* A start callback that finishes at once (say the spawn failed) releases
 * its item from inside the pool; the next queued item must still start. */
static struct cap_pool *reentrant_pool;
static void start_and_finish(struct cap_pool_item *it) {
  on_start(it);
  cap_pool_release(reentrant_pool, it);
}

static void test_release_inside_start(void) {
  struct cap_pool p;
  struct titem v[4];
  items_init(v, 4);
  cap_pool_init(&p);
  reentrant_pool = &p;
  cap_pool_set_class(&p, "cpu", 1, 4);
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[0].it), 0);
  v[1].it.start = start_and_finish;
  v[2].it.start = start_and_finish;
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[1].it), 0);
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[2].it), 0);
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[3].it), 0);
  TOTALS(&p, 1, 3);
  cap_pool_release(&p, &v[0].it);
  /* v1 and v2 ran and finished; v3 holds the slot. */
  int want[] = {0, 1, 2, 3};
  CHECK_EQ_MEM(order, sizeof(int) * (size_t)norder, want, sizeof(want));
  TOTALS(&p, 1, 0);
  CHECK_EQ_INT(v[3].it.state, 2);
  cap_pool_release(&p, &v[3].it);
  TOTALS(&p, 0, 0);
  cap_pool_free(&p);
}

/* Classes may be added while items run: cap_jobs_set_presets adds one for
 * each new class a reloaded presets file names (SIGHUP).  Items must keep
 * pointing at their live class. */
static void test_add_class_while_running(void) {
  struct cap_pool p;
  struct titem v[2];
  items_init(v, 2);
  cap_pool_init(&p);
  cap_pool_set_class(&p, "cpu", 1, 4);
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[0].it), 0);
  CHECK_EQ_INT(cap_pool_submit(&p, "cpu", &v[1].it), 0);
  /* The server allocates all the time; hold some memory after each
   * growth so the class array cannot simply grow in place. */
  void *hold[64] = {0};
  int moved = 0;
  for (int i = 0; i < 64 && !moved; i++) {
    char name[32];
    snprintf(name, sizeof(name), "extra%d", i);
    cap_pool_set_class(&p, name, 1, 4);
    hold[i] = malloc(64);
    moved = v[0].it.cls != cap_pool_find(&p, "cpu");
  }
  for (int i = 0; i < 64; i++)
    free(hold[i]);
  if (!CHECK(!moved)) {
    fprintf(stderr, "  cap_pool_set_class moved the class array under a running item: its "
                    "cls pointer dangles\n");
    /* Do not touch the dangling items; just free what the pool owns. */
    cap_pool_free(&p);
    return;
  }
  cap_pool_release(&p, &v[0].it);
  CHECK_EQ_INT(v[1].started, 1);
  cap_pool_release(&p, &v[1].it);
  TOTALS(&p, 0, 0);
  cap_pool_free(&p);
}

int main(void) {
  test_classes();
  test_slots_and_fifo();
  test_unknown_class();
  test_zero_queue_and_zero_slots();
  test_can_take_agrees();
  test_release_queued();
  test_grow_pumps();
  test_totals_across_classes();
  test_release_inside_start();
  test_add_class_while_running();
  return check_report();
}
