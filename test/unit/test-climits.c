#include "climits.h"

#include "config.h"
#include "check.h"

#include <errno.h>
#include <string.h>

static void test_default(void) {
  struct cap_climits l;
  char err[300];
  if (!CHECK_EQ_INT(cap_climits_parse(CAP_DEFAULT_CLASS_LIMITS, &l, err, sizeof(err)), 0))
    return;
  struct cap_climit cpu = cap_climits_get(&l, "cpu");
  CHECK_EQ_INT(cpu.nice, 10);
  CHECK_EQ_INT(cpu.ionice_class, 2);
  CHECK_EQ_INT(cpu.ionice_level, 7);
  CHECK_EQ_INT(cpu.memory_mb, 8192);
  CHECK_EQ_INT(cpu.address_space_mb, 0);
  CHECK_EQ_INT(cpu.threads, 0);
  struct cap_climit nv = cap_climits_get(&l, "nvenc");
  CHECK_EQ_INT(nv.nice, 0);
  CHECK_EQ_INT(nv.memory_mb, 0);
  /* A class nobody configured runs without limits. */
  struct cap_climit other = cap_climits_get(&l, "vaapi");
  CHECK_EQ_STR(other.name, "vaapi");
  CHECK_EQ_INT(other.nice + other.memory_mb + other.ionice_class + other.threads, 0);
  cap_climits_free(&l);
  other = cap_climits_get(NULL, "cpu");
  CHECK_EQ_INT(other.nice, 0);
}

static void test_values(void) {
  struct cap_climits l;
  char err[300];
  if (!CHECK_EQ_INT(cap_climits_parse("{\"cpu\":{\"ionice\":\"idle\",\"threads\":4,"
                                      "\"address_space_mb\":16384},\"gpu\":{\"ionice\":\"none\"}}",
                                      &l, err, sizeof(err)),
                    0))
    return;
  struct cap_climit cpu = cap_climits_get(&l, "cpu");
  CHECK_EQ_INT(cpu.ionice_class, 3);
  CHECK_EQ_INT(cpu.threads, 4);
  CHECK_EQ_INT(cpu.address_space_mb, 16384);
  CHECK_EQ_INT(cpu.nice, 0);
  CHECK_EQ_INT(cap_climits_get(&l, "gpu").ionice_class, 0);
  cap_climits_free(&l);
  CHECK_EQ_INT(cap_climits_parse(NULL, &l, err, sizeof(err)), 0);
  CHECK_EQ_INT(l.n, 0);
  cap_climits_free(&l);
}

static void test_errors(void) {
  static const char *const bad[] = {
      "[]",
      "{\"cpu\":1}",
      "{\"cpu\":{\"nice\":20}}",
      "{\"cpu\":{\"nice\":-1}}",
      "{\"cpu\":{\"nice\":1.5}}",
      "{\"cpu\":{\"ionice\":\"best-effort:8\"}}",
      "{\"cpu\":{\"ionice\":\"realtime:0\"}}",
      "{\"cpu\":{\"ionice\":\"best-effort:1x\"}}",
      "{\"cpu\":{\"memory_mb\":\"1\"}}",
      "{\"cpu\":{\"threads\":2000}}",
      "{\"cpu\":{\"nicety\":1}}",
      "{\"\":{}}",
      "{\"a-very-long-class-name-over-31-chars\":{}}",
      NULL,
  };
  for (size_t i = 0; bad[i]; i++) {
    struct cap_climits l;
    char err[300] = "";
    if (!CHECK_EQ_INT(cap_climits_parse(bad[i], &l, err, sizeof(err)), -EINVAL))
      fprintf(stderr, "  accepted: %s\n", bad[i]);
    CHECK(strncmp(err, "class_limits:", 13) == 0);
    CHECK(l.v == NULL && l.n == 0);
  }
}

int main(void) {
  test_default();
  test_values();
  test_errors();
  return check_report();
}
