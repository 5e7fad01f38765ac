#include "connset.h"

#include "check.h"
#include "container.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A stand-in connection: the set only sees its entry. */
struct fake_conn {
  int id;
  int evicted;
  struct cap_connset_entry link;
};

static int evictions;

/* Evicting a connection closes it; the set already counts it as closing. */
static void evict(struct cap_connset_entry *e, void *arg) {
  struct fake_conn *c = container_of(e, struct fake_conn, link);
  c->evicted = 1;
  evictions++;
}

static void test_room_and_idle_eviction(void) {
  struct cap_connset s;
  struct fake_conn c[33];
  memset(c, 0, sizeof(c));
  evictions = 0;
  cap_connset_init(&s, "public", 32, 0, evict, NULL);
  /* Until a sixteenth is left (30 of 32), nothing is evicted. */
  for (int i = 0; i < 30; i++) {
    CHECK_EQ_INT(cap_connset_has_room(&s), 1);
    c[i].id = i;
    cap_connset_add(&s, &c[i].link, 0);
    cap_connset_busy(&s, &c[i].link);
  }
  CHECK_EQ_INT(evictions, 0);
  /* Three idle ones, marked in this order; the oldest idle goes first. */
  cap_connset_idle(&s, &c[5].link);
  cap_connset_idle(&s, &c[2].link);
  cap_connset_idle(&s, &c[9].link);
  CHECK_EQ_INT(s.nidle, 3);
  CHECK_EQ_INT(cap_connset_has_room(&s), 1);
  CHECK_EQ_INT(evictions, 1);
  CHECK_EQ_INT(c[5].evicted, 1);
  CHECK_EQ_INT(cap_connset_live(&s), 29);
  /* Marked idle again, c[2] moves to the back of the queue. */
  cap_connset_idle(&s, &c[2].link);
  cap_connset_add(&s, &c[30].link, 0);
  cap_connset_busy(&s, &c[30].link);
  CHECK_EQ_INT(cap_connset_has_room(&s), 1);
  CHECK_EQ_INT(c[9].evicted, 1);
  CHECK_EQ_INT(c[2].evicted, 0);
  /* Closing ones take no room; removing them keeps counts right. */
  cap_connset_remove(&s, &c[5].link);
  cap_connset_remove(&s, &c[9].link);
  CHECK_EQ_INT(s.n, 29);
  CHECK_EQ_INT(s.nclosing, 0);
  CHECK_EQ_INT(cap_connset_live(&s), 29);
  cap_connset_busy(&s, &c[2].link);
  /* 30 busy: at the low-water mark with none idle, yet room for two. */
  cap_connset_add(&s, &c[31].link, 0);
  cap_connset_busy(&s, &c[31].link);
  CHECK_EQ_INT(cap_connset_has_room(&s), 1);
  cap_connset_add(&s, &c[5].link, 0);
  cap_connset_busy(&s, &c[5].link);
  CHECK_EQ_INT(cap_connset_has_room(&s), 1);
  cap_connset_add(&s, &c[9].link, 0);
  cap_connset_busy(&s, &c[9].link);
  CHECK_EQ_INT(cap_connset_has_room(&s), 0);
  CHECK_EQ_INT(evictions, 2);
  /* A refused connection takes no room. */
  cap_connset_add(&s, &c[32].link, 1);
  CHECK_EQ_INT(s.nrefused, 1);
  CHECK_EQ_INT(cap_connset_live(&s), 32);
  CHECK_EQ_INT(s.nidle, 0);
  for (int i = 0; i < 33; i++)
    cap_connset_remove(&s, &c[i].link);
  CHECK_EQ_INT(s.n, 0);
  CHECK(s.first == NULL);
  cap_connset_free(&s);
}

static void test_per_client(void) {
  struct cap_connset s;
  struct fake_conn c[6];
  memset(c, 0, sizeof(c));
  cap_connset_init(&s, "public", 100, 2, evict, NULL);
  for (int i = 0; i < 6; i++)
    cap_connset_add(&s, &c[i].link, 0);
  CHECK_EQ_INT(cap_connset_attribute(&s, &c[0].link, "192.0.2.1"), 0);
  CHECK_EQ_INT(cap_connset_attribute(&s, &c[1].link, "192.0.2.1"), 0);
  CHECK_EQ_INT(cap_connset_attribute(&s, &c[2].link, "192.0.2.1"), -EUSERS);
  CHECK(c[2].link.client == NULL);
  /* Attributing again to the same client is no new connection. */
  CHECK_EQ_INT(cap_connset_attribute(&s, &c[1].link, "192.0.2.1"), 0);
  CHECK_EQ_INT(cap_connset_client_count(&s, "192.0.2.1"), 2);
  /* Moving a connection to another client frees a place. */
  CHECK_EQ_INT(cap_connset_attribute(&s, &c[1].link, "2001:db8::1"), 0);
  CHECK_EQ_INT(cap_connset_client_count(&s, "192.0.2.1"), 1);
  CHECK_EQ_INT(cap_connset_attribute(&s, &c[2].link, "192.0.2.1"), 0);
  /* A refused move leaves the connection counted where it was. */
  CHECK_EQ_INT(cap_connset_attribute(&s, &c[3].link, "2001:db8::1"), 0);
  CHECK_EQ_INT(cap_connset_attribute(&s, &c[3].link, "192.0.2.1"), -EUSERS);
  CHECK_EQ_INT(cap_connset_client_count(&s, "2001:db8::1"), 2);
  /* Removing releases the count; at zero the client is forgotten. */
  cap_connset_remove(&s, &c[0].link);
  cap_connset_remove(&s, &c[2].link);
  CHECK_EQ_INT(cap_connset_client_count(&s, "192.0.2.1"), 0);
  CHECK_EQ_INT(s.nclients, 1);
  for (int i = 0; i < 6; i++)
    cap_connset_remove(&s, &c[i].link);
  CHECK_EQ_INT(s.nclients, 0);
  cap_connset_free(&s);

  /* per_client 0: no cap, many clients in few buckets. */
  struct fake_conn many[500];
  memset(many, 0, sizeof(many));
  cap_connset_init(&s, "metrics", 64, 0, evict, NULL);
  char addr[32];
  for (int i = 0; i < 500; i++) {
    cap_connset_add(&s, &many[i].link, 0);
    snprintf(addr, sizeof(addr), "10.0.%d.%d", i / 7, i % 7);
    CHECK_EQ_INT(cap_connset_attribute(&s, &many[i].link, addr), 0);
  }
  CHECK_EQ_INT(cap_connset_client_count(&s, "10.0.3.4"), 1);
  for (int i = 0; i < 500; i++)
    cap_connset_remove(&s, &many[i].link);
  CHECK_EQ_INT(s.nclients, 0);
  cap_connset_free(&s);
}

int main(void) {
  test_room_and_idle_eviction();
  test_per_client();
  return check_report();
}
