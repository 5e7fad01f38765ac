#ifndef CAP_NETADDR_H
#define CAP_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest text form of an address we produce (an IPv6 literal). */
#define CAP_NETADDR_STRLEN 46

/* One IPv4 or IPv6 network in CIDR form. */
struct cap_netaddr_cidr {
  int family; /* AF_INET or AF_INET6 */
  unsigned char addr[16];
  int prefix;
};

/* A list of networks, such as the trusted proxies. */
struct cap_netaddr_set {
  struct cap_netaddr_cidr *v;
  size_t n;
};

/* Parses a comma-separated list of IPs and CIDRs into set (replacing what
 * it held).  Returns 0 or -EINVAL and leaves set empty. */
int cap_netaddr_set_parse(struct cap_netaddr_set *set, const char *list);
void cap_netaddr_set_free(struct cap_netaddr_set *set);
/* Returns 1 when sa (IPv4-mapped IPv6 counts as IPv4) is inside one of the
 * networks of set, else 0. */
int cap_netaddr_set_contains(const struct cap_netaddr_set *set, const struct sockaddr *sa);
/* Writes the IP of sa as text (IPv4-mapped IPv6 as plain IPv4). Returns 0 or -EINVAL. */
int cap_netaddr_format(const struct sockaddr *sa, char *out, size_t n);
/* Picks the client from an X-Forwarded-For value: the rightmost entry (the
 * one the nearest proxy wrote) or, while that is an address in trusted
 * (may be NULL), the one left of it.  An entry that does not parse as an IP
 * ends the walk.  Writes the address in canonical text.  Returns 0, or
 * -EINVAL when the rightmost entry is not an IP. */
int cap_netaddr_from_forwarded(const char *v, size_t n, const struct cap_netaddr_set *trusted,
                               char *out, size_t outlen);

#endif
