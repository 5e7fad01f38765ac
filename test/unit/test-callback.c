#include "callback.h"

#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static char err[512];

/* Judges the address text a (IPv4 or IPv6) against allow. */
static int addr_ok(const char *a, const struct cap_netaddr_set *allow, const char **why) {
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
  memset(&in4, 0, sizeof(in4));
  memset(&in6, 0, sizeof(in6));
  if (inet_pton(AF_INET, a, &in4.sin_addr) == 1) {
    in4.sin_family = AF_INET;
    return cap_callback_addr_allowed((struct sockaddr *)&in4, allow, why);
  }
  if (inet_pton(AF_INET6, a, &in6.sin6_addr) == 1) {
    in6.sin6_family = AF_INET6;
    return cap_callback_addr_allowed((struct sockaddr *)&in6, allow, why);
  }
  fprintf(stderr, "bad test address %s\n", a);
  return -1;
}

#define DENIED(a, cls)                                                                             \
  do {                                                                                             \
    const char *why_ = NULL;                                                                       \
    if (!CHECK_EQ_INT(addr_ok(a, NULL, &why_), 0))                                                 \
      fprintf(stderr, "  address %s\n", a);                                                        \
    else                                                                                           \
      CHECK_EQ_STR(why_, cls);                                                                     \
  } while (0)
#define ALLOWED(a)                                                                                 \
  do {                                                                                             \
    if (!CHECK_EQ_INT(addr_ok(a, NULL, NULL), 1))                                                  \
      fprintf(stderr, "  address %s\n", a);                                                        \
  } while (0)

static void test_ranges(void) {
  /* Each range at its edges, and the public addresses just outside. */
  DENIED("127.0.0.1", "loopback");
  DENIED("127.255.255.255", "loopback");
  ALLOWED("126.255.255.255");
  ALLOWED("128.0.0.0");
  DENIED("0.0.0.0", "unspecified");
  DENIED("0.255.255.255", "unspecified");
  DENIED("10.0.0.1", "private");
  DENIED("10.255.255.255", "private");
  ALLOWED("11.0.0.0");
  DENIED("172.16.0.0", "private");
  DENIED("172.31.255.255", "private");
  ALLOWED("172.15.255.255");
  ALLOWED("172.32.0.0");
  DENIED("192.168.0.1", "private");
  DENIED("192.168.255.255", "private");
  ALLOWED("192.169.0.0");
  DENIED("169.254.169.254", "link-local");
  DENIED("169.254.0.0", "link-local");
  ALLOWED("169.255.0.0");
  DENIED("100.64.0.0", "cgnat");
  DENIED("100.127.255.255", "cgnat");
  ALLOWED("100.63.255.255");
  ALLOWED("100.128.0.0");
  DENIED("224.0.0.1", "multicast");
  DENIED("239.255.255.255", "multicast");
  DENIED("240.0.0.1", "reserved");
  DENIED("255.255.255.255", "reserved");
  DENIED("192.0.0.8", "reserved");
  ALLOWED("192.0.1.0");
  DENIED("198.18.0.1", "reserved");
  DENIED("198.19.255.255", "reserved");
  ALLOWED("198.20.0.0");
  ALLOWED("198.17.255.255");
  ALLOWED("8.8.8.8");
  ALLOWED("1.1.1.1");

  DENIED("::", "unspecified");
  DENIED("::1", "loopback");
  DENIED("fc00::1", "private");
  DENIED("fdff:ffff::1", "private");
  DENIED("fe80::1", "link-local");
  DENIED("febf::1", "link-local");
  DENIED("fec0::1", "private");
  DENIED("ff02::1", "multicast");
  ALLOWED("2606:4700::1111");
  ALLOWED("2001:4860:4860::8888");
  ALLOWED("fb00::1");
  ALLOWED("::2"); /* Not loopback, not unspecified. */

  /* IPv4-mapped and NAT64 addresses reach the IPv4 address inside. */
  DENIED("::ffff:127.0.0.1", "loopback");
  DENIED("::ffff:10.1.2.3", "private");
  DENIED("::ffff:169.254.169.254", "link-local");
  ALLOWED("::ffff:8.8.8.8");
  DENIED("64:ff9b::7f00:1", "loopback");
  DENIED("64:ff9b::a9fe:a9fe", "link-local");
  DENIED("64:ff9b::100.64.0.1", "cgnat");
  ALLOWED("64:ff9b::808:808");

  /* No family we know: refused. */
  struct sockaddr other;
  memset(&other, 0, sizeof(other));
  other.sa_family = AF_UNIX;
  CHECK_EQ_INT(cap_callback_addr_allowed(&other, NULL, NULL), 0);
  CHECK_EQ_INT(cap_callback_addr_allowed(NULL, NULL, NULL), 0);
}

static void test_allow_cidrs(void) {
  struct cap_netaddr_set allow = {0};
  CHECK_EQ_INT(cap_netaddr_set_parse(&allow, "127.0.0.0/8,10.1.0.0/16,fd00::/8"), 0);
  CHECK_EQ_INT(addr_ok("127.0.0.1", &allow, NULL), 1);
  CHECK_EQ_INT(addr_ok("::ffff:127.0.0.5", &allow, NULL), 1);
  CHECK_EQ_INT(addr_ok("64:ff9b::7f00:1", &allow, NULL), 1);
  CHECK_EQ_INT(addr_ok("10.1.2.3", &allow, NULL), 1);
  CHECK_EQ_INT(addr_ok("10.2.0.1", &allow, NULL), 0);
  CHECK_EQ_INT(addr_ok("fd12::1", &allow, NULL), 1);
  CHECK_EQ_INT(addr_ok("fc00::1", &allow, NULL), 0);
  CHECK_EQ_INT(addr_ok("::1", &allow, NULL), 0);
  CHECK_EQ_INT(addr_ok("169.254.169.254", &allow, NULL), 0);
  cap_netaddr_set_free(&allow);
}

static int url_ok(const struct cap_callback *p, const char *url) {
  err[0] = '\0';
  return cap_callback_check_url(p, url, err, sizeof(err));
}

#define URL_DENIED(p, url, words)                                                                  \
  do {                                                                                             \
    if (!CHECK_EQ_INT(url_ok(p, url), -EPERM) || !CHECK(strstr(err, words) != NULL))               \
      fprintf(stderr, "  url %s: %s\n", url, err);                                                 \
  } while (0)
#define URL_OK(p, url)                                                                             \
  do {                                                                                             \
    if (!CHECK_EQ_INT(url_ok(p, url), 0))                                                          \
      fprintf(stderr, "  url %s: %s\n", url, err);                                                 \
  } while (0)

static void test_patterns(void) {
  struct cap_callback p;
  CHECK_EQ_INT(cap_callback_init(&p,
                                 " hooks.Example.com , *.workers.dev,203.0.113.7,[2001:db8::5],"
                                 "10.0.0.5,127.0.0.1,localhost",
                                 "127.0.0.0/8", err, sizeof(err)),
               -EINVAL); /* "[...]" is no pattern. */
  CHECK(strstr(err, "callback_hosts") != NULL);
  CHECK_EQ_INT(cap_callback_init(&p,
                                 " hooks.Example.com , *.workers.dev,203.0.113.7,2001:db8::5,"
                                 "10.0.0.5,127.0.0.1,localhost",
                                 "127.0.0.0/8", err, sizeof(err)),
               0);
  CHECK_EQ_INT(p.nhosts, 7);

  URL_OK(&p, "https://hooks.example.com/cb");
  URL_OK(&p, "https://HOOKS.EXAMPLE.COM:8443/cb?token=abc#frag");
  URL_OK(&p, "https://hooks.example.com./cb");
  URL_OK(&p, "https://a.workers.dev/");
  URL_OK(&p, "https://deep.er.workers.dev/x");
  URL_OK(&p, "HTTPS://A.Workers.Dev/x");
  URL_DENIED(&p, "https://workers.dev/x", "not in the operator's callback_hosts");
  URL_DENIED(&p, "https://evilworkers.dev/x", "callback_hosts");
  URL_DENIED(&p, "https://workers.dev.evil.com/x", "callback_hosts");
  URL_DENIED(&p, "https://x.hooks.example.com/", "callback_hosts");
  URL_DENIED(&p, "https://example.com/", "callback_hosts");

  /* Scheme, user info, length, shape. */
  URL_DENIED(&p, "http://hooks.example.com/cb", "https");
  URL_DENIED(&p, "ftp://hooks.example.com/cb", "https");
  URL_DENIED(&p, "hooks.example.com/cb", "absolute URL");
  URL_DENIED(&p, "", "absolute URL");
  /* curl reads "path" as the host here. */
  URL_DENIED(&p, "https:///path", "callback_hosts");
  URL_DENIED(&p, "https://user@hooks.example.com/cb", "user name");
  URL_DENIED(&p, "https://user:pw@hooks.example.com/cb", "user name");
  URL_DENIED(&p, "https://:pw@hooks.example.com/cb", "user name");
  char longurl[CAP_CALLBACK_URL_MAX + 64];
  snprintf(longurl, sizeof(longurl), "https://hooks.example.com/");
  size_t n = strlen(longurl);
  memset(longurl + n, 'a', CAP_CALLBACK_URL_MAX - n);
  longurl[CAP_CALLBACK_URL_MAX] = '\0';
  URL_OK(&p, longurl);
  longurl[CAP_CALLBACK_URL_MAX] = 'a';
  longurl[CAP_CALLBACK_URL_MAX + 1] = '\0';
  URL_DENIED(&p, longurl, "at most 2048 bytes");

  /* IP literals: listed and public, listed but private, listed and
   * allowed by CIDR. */
  URL_OK(&p, "https://203.0.113.7/cb");
  URL_OK(&p, "https://[2001:db8::5]:443/cb");
  URL_DENIED(&p, "https://10.0.0.5/cb", "is private");
  URL_OK(&p, "https://127.0.0.1:9999/cb");
  URL_DENIED(&p, "https://203.0.113.8/cb", "callback_hosts");
  URL_DENIED(&p, "https://[::1]/cb", "callback_hosts");
  /* curl's parser normalises odd IPv4 forms before the list is consulted. */
  URL_OK(&p, "https://2130706433/cb");
  URL_DENIED(&p, "https://0x0a.0.0.5/cb", "is private");
  /* A name is judged at connect time, not here. */
  URL_OK(&p, "https://localhost/cb");
  cap_callback_free(&p);

  /* IPv6 literals in the list: loopback refused without an allow CIDR. */
  CHECK_EQ_INT(cap_callback_init(&p, "::1,fe80::1,::ffff:7f00:1", NULL, err, sizeof(err)), 0);
  URL_DENIED(&p, "https://[::1]/cb", "is loopback");
  URL_DENIED(&p, "https://[fe80::1]/cb", "is link-local");
  URL_DENIED(&p, "https://[::ffff:127.0.0.1]/cb", "is loopback");
  cap_callback_free(&p);

  /* No hosts: every callback refused, saying so. */
  CHECK_EQ_INT(cap_callback_init(&p, NULL, NULL, err, sizeof(err)), 0);
  URL_DENIED(&p, "https://hooks.example.com/cb", "not enabled");
  cap_callback_free(&p);
  CHECK_EQ_INT(cap_callback_init(&p, " , ", NULL, err, sizeof(err)), 0);
  CHECK_EQ_INT(p.nhosts, 0);
  cap_callback_free(&p);

  /* Broken settings. */
  CHECK_EQ_INT(cap_callback_init(&p, "a.example.com,*", NULL, err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, "callback_hosts") != NULL);
  CHECK_EQ_INT(cap_callback_init(&p, "a.*.com", NULL, err, sizeof(err)), -EINVAL);
  CHECK_EQ_INT(cap_callback_init(&p, "https://a.com", NULL, err, sizeof(err)), -EINVAL);
  CHECK_EQ_INT(cap_callback_init(&p, "a.com", "10.0.0.0/33", err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, "callback_allow_cidrs") != NULL);
  CHECK_EQ_INT(p.nhosts, 0);
}

static void test_host(void) {
  char h[CAP_CALLBACK_HOST_MAX + 1];
  CHECK_EQ_INT(cap_callback_host("https://Hooks.Example.com:8443/a?secret=1", h, sizeof(h)), 0);
  CHECK_EQ_STR(h, "hooks.example.com");
  CHECK_EQ_INT(cap_callback_host("https://[2001:DB8::1]/x", h, sizeof(h)), 0);
  CHECK_EQ_STR(h, "2001:db8::1");
  CHECK_EQ_INT(cap_callback_host("not a url", h, sizeof(h)), -EINVAL);
  CHECK_EQ_STR(h, "?");
}

int main(void) {
  test_ranges();
  test_allow_cidrs();
  test_patterns();
  test_host();
  return check_report();
}
