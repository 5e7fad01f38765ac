#include "netaddr.h"

#include "alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Parses text as an IPv4 or IPv6 literal into family and addr. */
static int parse_ip(const char *s, int *family, unsigned char addr[16]) {
  if (inet_pton(AF_INET, s, addr) == 1) {
    *family = AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, s, addr) == 1) {
    if (memcmp(addr, v4mapped, 12) == 0) {
      memmove(addr, addr + 12, 4);
      *family = AF_INET;
    } else {
      *family = AF_INET6;
    }
    return 0;
  }
  return -EINVAL;
}

static int parse_cidr(const char *s, size_t n, struct cap_netaddr_cidr *c) {
  char text[64];
  if (n == 0 || n >= sizeof(text))
    return -EINVAL;
  memcpy(text, s, n);
  text[n] = '\0';
  char *slash = strchr(text, '/');
  long prefix = -1;
  if (slash) {
    char *end;
    *slash = '\0';
    prefix = strtol(slash + 1, &end, 10);
    if (end == slash + 1 || *end != '\0' || prefix < 0)
      return -EINVAL;
  }
  memset(c->addr, 0, sizeof(c->addr));
  if (parse_ip(text, &c->family, c->addr) != 0)
    return -EINVAL;
  long max = c->family == AF_INET ? 32 : 128;
  if (prefix > max)
    return -EINVAL;
  c->prefix = (int)(prefix < 0 ? max : prefix);
  return 0;
}

int cap_netaddr_set_parse(struct cap_netaddr_set *set, const char *list) {
  cap_netaddr_set_free(set);
  const char *p = list;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    if (*p == '\0')
      break;
    const char *end = p;
    while (*end && *end != ',' && *end != ' ')
      end++;
    set->v = xrealloc(set->v, (set->n + 1) * sizeof(*set->v));
    if (parse_cidr(p, (size_t)(end - p), &set->v[set->n]) != 0) {
      cap_netaddr_set_free(set);
      return -EINVAL;
    }
    set->n++;
    p = end;
  }
  return 0;
}

void cap_netaddr_set_free(struct cap_netaddr_set *set) {
  free(set->v);
  set->v = NULL;
  set->n = 0;
}

/* Reduces sa to family and raw bytes, unwrapping IPv4-mapped IPv6. */
static int sockaddr_raw(const struct sockaddr *sa, int *family, unsigned char addr[16]) {
  if (sa->sa_family == AF_INET) {
    memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    *family = AF_INET;
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    if (memcmp(a, v4mapped, 12) == 0) {
      memcpy(addr, a + 12, 4);
      *family = AF_INET;
    } else {
      memcpy(addr, a, 16);
      *family = AF_INET6;
    }
    return 0;
  }
  return -EINVAL;
}

static int prefix_match(const unsigned char *a, const unsigned char *b, int bits) {
  int bytes = bits / 8, rest = bits % 8;
  if (memcmp(a, b, (size_t)bytes) != 0)
    return 0;
  if (rest == 0)
    return 1;
  unsigned char mask = (unsigned char)(0xff << (8 - rest));
  return (a[bytes] & mask) == (b[bytes] & mask);
}

static int raw_contains(const struct cap_netaddr_set *set, int family, const unsigned char *addr) {
  for (size_t i = 0; i < set->n; i++)
    if (set->v[i].family == family && prefix_match(set->v[i].addr, addr, set->v[i].prefix))
      return 1;
  return 0;
}

int cap_netaddr_set_contains(const struct cap_netaddr_set *set, const struct sockaddr *sa) {
  int family;
  unsigned char addr[16];
  if (sockaddr_raw(sa, &family, addr) != 0)
    return 0;
  return raw_contains(set, family, addr);
}

int cap_netaddr_format(const struct sockaddr *sa, char *out, size_t n) {
  int family;
  unsigned char addr[16];
  if (sockaddr_raw(sa, &family, addr) != 0 || inet_ntop(family, addr, out, (socklen_t)n) == NULL)
    return -EINVAL;
  return 0;
}

/* Parses the list entry that ends at end (exclusive) into family/addr;
 * *start gets where it begins.  Returns 0 or -EINVAL. */
static int forwarded_entry(const char *v, size_t end, size_t *start, int *family,
                           unsigned char addr[16]) {
  size_t s;
  char text[64];
  while (end > 0 && (v[end - 1] == ' ' || v[end - 1] == '\t'))
    end--;
  s = end;
  while (s > 0 && v[s - 1] != ',')
    s--;
  *start = s;
  while (s < end && (v[s] == ' ' || v[s] == '\t'))
    s++;
  if (end == s || end - s >= sizeof(text))
    return -EINVAL;
  memcpy(text, v + s, end - s);
  text[end - s] = '\0';
  return parse_ip(text, family, addr);
}

int cap_netaddr_from_forwarded(const char *v, size_t n, const struct cap_netaddr_set *trusted,
                               char *out, size_t outlen) {
  size_t end = n, start;
  int family, found = 0, ffam = 0;
  unsigned char addr[16], faddr[16];

  /* Right to left: each entry was written by the hop to its right, so it
   * is believed as long as that hop is trusted. */
  while (forwarded_entry(v, end, &start, &family, addr) == 0) {
    found = 1;
    ffam = family;
    memcpy(faddr, addr, sizeof(faddr));
    if (trusted == NULL || !raw_contains(trusted, family, addr) || start == 0)
      break;
    end = start - 1; /* Before the comma. */
  }
  if (!found || inet_ntop(ffam, faddr, out, (socklen_t)outlen) == NULL)
    return -EINVAL;
  return 0;
}
