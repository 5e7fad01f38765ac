#include "netaddr.h"

#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

/* Fills ss with the IPv4 or IPv6 literal s. */
static const struct sockaddr *addr(struct sockaddr_storage *ss, const char *s) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *in = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(1234);
  } else if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(1234);
  } else {
    fprintf(stderr, "test bug: bad literal %s\n", s);
  }
  return (const struct sockaddr *)ss;
}

static void test_parse_good(void) {
  struct cap_netaddr_set set = {0};
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, "10.0.0.0/8"), 0);
  CHECK_EQ_INT(set.n, 1);
  if (set.n == 1) {
    CHECK_EQ_INT(set.v[0].family, AF_INET);
    CHECK_EQ_INT(set.v[0].prefix, 8);
    CHECK_EQ_MEM(set.v[0].addr, 4, "\x0a\x00\x00\x00", 4);
  }
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, "127.0.0.1"), 0);
  CHECK_EQ_INT(set.n, 1); /* Replaces what the set held. */
  if (set.n == 1)
    CHECK_EQ_INT(set.v[0].prefix, 32);
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, "::1"), 0);
  if (CHECK_EQ_INT(set.n, 1)) {
    CHECK_EQ_INT(set.v[0].family, AF_INET6);
    CHECK_EQ_INT(set.v[0].prefix, 128);
  }
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, "2001:db8::/32"), 0);
  if (CHECK_EQ_INT(set.n, 1)) {
    CHECK_EQ_INT(set.v[0].family, AF_INET6);
    CHECK_EQ_INT(set.v[0].prefix, 32);
  }
  /* An IPv4-mapped literal is kept as IPv4. */
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, "::ffff:10.1.2.3"), 0);
  if (CHECK_EQ_INT(set.n, 1)) {
    CHECK_EQ_INT(set.v[0].family, AF_INET);
    CHECK_EQ_INT(set.v[0].prefix, 32);
    CHECK_EQ_MEM(set.v[0].addr, 4, "\x0a\x01\x02\x03", 4);
  }
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, "127.0.0.0/8,::1"), 0);
  CHECK_EQ_INT(set.n, 2);
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, " 10.0.0.1 , 10.0.0.2,,192.168.0.0/16 ,"), 0);
  CHECK_EQ_INT(set.n, 3);
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, "0.0.0.0/0,::/0"), 0);
  if (CHECK_EQ_INT(set.n, 2)) {
    CHECK_EQ_INT(set.v[0].prefix, 0);
    CHECK_EQ_INT(set.v[1].prefix, 0);
  }
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, ""), 0);
  CHECK_EQ_INT(set.n, 0);
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, " , "), 0);
  CHECK_EQ_INT(set.n, 0);
  cap_netaddr_set_free(&set);
  CHECK(set.v == NULL);
  CHECK_EQ_INT(set.n, 0);
}

static void test_parse_bad(void) {
  static const char *const bad[] = {
      "10.0.0.0/33",
      "::/129",
      "10.0.0.0/",
      "10.0.0.0/-1",
      "10.0.0.0/8x",
      "10.0.0.0/8/8",
      "10.0.0",
      "10.0.0.256",
      "hello",
      "10.0.0.1,hello",
      "10.0.0.1,10.0.0.0/40",
      "/8",
      "1.2.3.4/ 8",
      "[::1]",
      "::1%lo",
      "1111:2222:3333:4444:5555:6666:7777:8888:9999",
      "1111:2222:3333:4444:5555:6666:7777:8888/128000000000000000000000000000000000000000000000",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct cap_netaddr_set set = {0};
    cap_netaddr_set_parse(&set, "10.0.0.1"); /* Something to throw away. */
    if (!CHECK_EQ_INT(cap_netaddr_set_parse(&set, bad[i]), -EINVAL))
      fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
    CHECK_EQ_INT(set.n, 0);
    CHECK(set.v == NULL);
    cap_netaddr_set_free(&set);
  }
}

struct contains_case {
  const char *set;
  const char *ip;
  int in;
};

static const struct contains_case contains_cases[] = {
    {"10.0.0.0/8", "10.0.0.0", 1},
    {"10.0.0.0/8", "10.255.255.255", 1},
    {"10.0.0.0/8", "11.0.0.0", 0},
    {"10.0.0.0/8", "9.255.255.255", 0},
    {"10.1.2.3/8", "10.200.0.1", 1}, /* Host bits in the network are ignored. */
    {"1.2.3.4/32", "1.2.3.4", 1},
    {"1.2.3.4/32", "1.2.3.5", 0},
    {"1.2.3.4", "1.2.3.4", 1},
    {"1.2.3.4", "1.2.3.3", 0},
    {"0.0.0.0/0", "1.2.3.4", 1},
    {"0.0.0.0/0", "255.255.255.255", 1},
    {"0.0.0.0/0", "::ffff:8.8.8.8", 1},
    {"0.0.0.0/0", "::1", 0},
    {"::/0", "2001:db8::1", 1},
    {"::/0", "::1", 1},
    {"::/0", "1.2.3.4", 0},
    {"::/0", "::ffff:1.2.3.4", 0}, /* Mapped counts as IPv4. */
    {"10.0.0.0/9", "10.127.255.255", 1},
    {"10.0.0.0/9", "10.128.0.0", 0},
    {"10.128.0.0/9", "10.128.0.0", 1},
    {"10.128.0.0/9", "10.127.0.0", 0},
    {"128.0.0.0/1", "200.1.1.1", 1},
    {"128.0.0.0/1", "127.255.255.255", 0},
    {"192.168.1.0/31", "192.168.1.1", 1},
    {"192.168.1.0/31", "192.168.1.2", 0},
    {"172.16.0.0/12", "172.31.255.255", 1},
    {"172.16.0.0/12", "172.32.0.0", 0},
    {"::1", "::1", 1},
    {"::1/128", "::2", 0},
    {"::1", "::", 0},
    {"2001:db8::/32", "2001:db8:ffff::1", 1},
    {"2001:db8::/32", "2001:db9::1", 0},
    {"2001:db8::/121", "2001:db8::7f", 1},
    {"2001:db8::/121", "2001:db8::80", 0},
    {"2001:db8::80/121", "2001:db8::ff", 1},
    {"2001:db8::/127", "2001:db8::1", 1},
    {"2001:db8::/127", "2001:db8::2", 0},
    {"fe80::/10", "febf::1", 1},
    {"fe80::/10", "fec0::1", 0},
    {"10.0.0.0/8", "::ffff:10.1.2.3", 1},
    {"10.0.0.0/8", "::ffff:11.1.2.3", 0},
    {"::ffff:10.0.0.1", "10.0.0.1", 1},
    {"::ffff:10.0.0.1", "::ffff:10.0.0.1", 1},
    {"127.0.0.0/8,::1", "::1", 1},
    {"127.0.0.0/8,::1", "127.0.0.2", 1},
    {"127.0.0.0/8,::1", "10.0.0.1", 0},
    {"127.0.0.0/8,::1", "::2", 0},
    {"10.0.0.1", "::a00:1", 0}, /* IPv4-compatible is not mapped. */
    {"", "127.0.0.1", 0},
};

static void test_contains(void) {
  for (size_t i = 0; i < sizeof(contains_cases) / sizeof(contains_cases[0]); i++) {
    const struct contains_case *c = &contains_cases[i];
    struct cap_netaddr_set set = {0};
    struct sockaddr_storage ss;
    if (!CHECK_EQ_INT(cap_netaddr_set_parse(&set, c->set), 0)) {
      fprintf(stderr, "  cannot parse \"%s\"\n", c->set);
      continue;
    }
    if (!CHECK_EQ_INT(cap_netaddr_set_contains(&set, addr(&ss, c->ip)), c->in))
      fprintf(stderr, "  contains(\"%s\", %s) should be %d\n", c->set, c->ip, c->in);
    cap_netaddr_set_free(&set);
  }
  /* A socket family without an IP is never contained. */
  struct cap_netaddr_set set = {0};
  cap_netaddr_set_parse(&set, "0.0.0.0/0,::/0");
  struct sockaddr_un un;
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  CHECK_EQ_INT(cap_netaddr_set_contains(&set, (const struct sockaddr *)&un), 0);
  cap_netaddr_set_free(&set);
}

static void test_format(void) {
  struct sockaddr_storage ss;
  char out[CAP_NETADDR_STRLEN];
  CHECK_EQ_INT(cap_netaddr_format(addr(&ss, "192.0.2.1"), out, sizeof(out)), 0);
  CHECK_EQ_STR(out, "192.0.2.1");
  CHECK_EQ_INT(cap_netaddr_format(addr(&ss, "2001:db8:0:0:0:0:0:1"), out, sizeof(out)), 0);
  CHECK_EQ_STR(out, "2001:db8::1");
  CHECK_EQ_INT(cap_netaddr_format(addr(&ss, "::ffff:192.0.2.1"), out, sizeof(out)), 0);
  CHECK_EQ_STR(out, "192.0.2.1");
  CHECK_EQ_INT(cap_netaddr_format(addr(&ss, "::1"), out, sizeof(out)), 0);
  CHECK_EQ_STR(out, "::1");
  CHECK_EQ_INT(
      cap_netaddr_format(addr(&ss, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), out, sizeof(out)),
      0);
  CHECK_EQ_STR(out, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  char small[8];
  CHECK_EQ_INT(cap_netaddr_format(addr(&ss, "192.168.100.200"), small, sizeof(small)), -EINVAL);
  struct sockaddr_un un;
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  CHECK_EQ_INT(cap_netaddr_format((const struct sockaddr *)&un, out, sizeof(out)), -EINVAL);
}

struct fwd_case {
  const char *in;
  int rc;
  const char *out;
};

static const struct fwd_case fwd_cases[] = {
    {"1.2.3.4", 0, "1.2.3.4"},
    {"1.1.1.1, 2.2.2.2", 0, "2.2.2.2"},
    {"1.1.1.1,2.2.2.2", 0, "2.2.2.2"},
    {"1.1.1.1 ,  2.2.2.2   ", 0, "2.2.2.2"},
    {"  2.2.2.2", 0, "2.2.2.2"},
    {"\t2.2.2.2\t", 0, "2.2.2.2"},
    {"garbage, 3.3.3.3", 0, "3.3.3.3"}, /* Only the rightmost entry counts. */
    {"1.1.1.1, garbage", -EINVAL, NULL},
    {"1.1.1.1, ", -EINVAL, NULL},
    {"1.1.1.1,", -EINVAL, NULL},
    {"", -EINVAL, NULL},
    {"   ", -EINVAL, NULL},
    {",", -EINVAL, NULL},
    {"unknown", -EINVAL, NULL},
    {"1.2.3.4:5678", -EINVAL, NULL},
    {"1.2.3.4 5.6.7.8", -EINVAL, NULL},
    {"010.1.1.1", -EINVAL, NULL},
    {"1.2.3", -EINVAL, NULL},
    {"[2001:db8::1]", -EINVAL, NULL},
    {"2001:db8::1", 0, "2001:db8::1"},
    {"1.1.1.1, 2001:DB8:0:0:0:0:0:1", 0, "2001:db8::1"},
    {"::ffff:1.2.3.4", 0, "1.2.3.4"},
    {"::1", 0, "::1"},
    {"1.1.1.1, 0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:1", -EINVAL, NULL},
};

static void test_from_forwarded(void) {
  for (size_t i = 0; i < sizeof(fwd_cases) / sizeof(fwd_cases[0]); i++) {
    const struct fwd_case *c = &fwd_cases[i];
    char out[CAP_NETADDR_STRLEN] = "untouched";
    int rc = cap_netaddr_from_forwarded(c->in, strlen(c->in), NULL, out, sizeof(out));
    int ok = CHECK_EQ_INT(rc, c->rc);
    if (c->out)
      ok &= CHECK_EQ_STR(out, c->out);
    if (!ok)
      fprintf(stderr, "  (forwarded case %zu: \"%s\")\n", i, c->in);
  }
  /* Only n bytes are read. */
  char out[CAP_NETADDR_STRLEN];
  CHECK_EQ_INT(cap_netaddr_from_forwarded("1.2.3.4, 5.6.7.8", 7, NULL, out, sizeof(out)), 0);
  CHECK_EQ_STR(out, "1.2.3.4");
  CHECK_EQ_INT(cap_netaddr_from_forwarded("9.9.9.9garbage", 7, NULL, out, sizeof(out)), 0);
  CHECK_EQ_STR(out, "9.9.9.9");
  CHECK_EQ_INT(cap_netaddr_from_forwarded("1.2.3.4", 0, NULL, out, sizeof(out)), -EINVAL);
  /* Too small an output buffer. */
  char small[6];
  CHECK_EQ_INT(cap_netaddr_from_forwarded("10.20.30.40", 11, NULL, small, sizeof(small)), -EINVAL);
}

/* Behind a chain of trusted proxies, their own entries are skipped from
 * the right; the first untrusted one is the client. */
static void test_forwarded_chain(void) {
  struct cap_netaddr_set set;
  static const struct fwd_case cases[] = {
      {"203.0.113.9, 127.0.0.1", 0, "203.0.113.9"},
      {"203.0.113.9,127.0.0.1, 10.1.2.3", 0, "203.0.113.9"},
      {"198.51.100.1, 203.0.113.9, 127.0.0.1", 0, "203.0.113.9"}, /* Left of it: forgeable. */
      {"127.0.0.1", 0, "127.0.0.1"},                              /* All trusted: leftmost. */
      {"10.0.0.1, 127.0.0.2", 0, "10.0.0.1"},
      {"garbage, 127.0.0.1", 0, "127.0.0.1"}, /* Junk ends the walk at the last good hop. */
      {"::1, 2001:db8::7", 0, "2001:db8::7"},
      {"2001:db8::7, ::1", 0, "2001:db8::7"},
      {"203.0.113.9, garbage", -EINVAL, NULL},
  };
  CHECK_EQ_INT(cap_netaddr_set_parse(&set, "127.0.0.0/8,10.1.2.3,::1"), 0);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char out[CAP_NETADDR_STRLEN] = "untouched";
    int rc = cap_netaddr_from_forwarded(cases[i].in, strlen(cases[i].in), &set, out, sizeof(out));
    int ok = CHECK_EQ_INT(rc, cases[i].rc);
    if (cases[i].out)
      ok &= CHECK_EQ_STR(out, cases[i].out);
    if (!ok)
      fprintf(stderr, "  (chain case %zu: \"%s\")\n", i, cases[i].in);
  }
  cap_netaddr_set_free(&set);
}

int main(void) {
  test_forwarded_chain();
  test_parse_good();
  test_parse_bad();
  test_contains();
  test_format();
  test_from_forwarded();
  return check_report();
}
