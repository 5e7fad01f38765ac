#ifndef CAP_CALLBACK_H
#define CAP_CALLBACK_H

#include "netaddr.h"

#include <stddef.h>
#include <sys/socket.h>

/* Where a job's callback_url may point.  A public endpoint must not become
 * a way to send requests into the operator's network: the URL must be
 * https, carry no user name, and name a host the operator listed
 * (callback_hosts); the address a delivery connects to must not be
 * loopback, private, link-local, CGNAT, unspecified, multicast or reserved
 * unless it lies in callback_allow_cidrs.  The address is judged again at
 * connect time (see cap_callback_addr_allowed), so a name that resolves
 * elsewhere later gains nothing. */

#define CAP_CALLBACK_URL_MAX  2048
#define CAP_CALLBACK_HOST_MAX 256

struct cap_callback {
  char **hosts; /* Lowercase patterns: "host.example" or "*.suffix". */
  size_t nhosts;
  struct cap_netaddr_set allow;
};

/* Sets p up from the comma-separated host patterns (NULL or empty: every
 * callback refused) and allowed CIDRs (may be NULL).  Returns 0, or
 * -EINVAL with "key: reason" in err and p empty. */
int cap_callback_init(struct cap_callback *p, const char *hosts, const char *allow_cidrs, char *err,
                      size_t errlen);
void cap_callback_free(struct cap_callback *p);
/* Checks url against the policy.  Returns 0, or -EPERM with the rule it
 * breaks, a sentence for the client, in why. */
int cap_callback_check_url(const struct cap_callback *p, const char *url, char *why, size_t whylen);
/* Writes url's host (lowercase; an IPv6 literal without brackets) into
 * out, for logs: unlike the URL it carries no query that may hold a
 * secret.  Returns 0 or -EINVAL ("?" written). */
int cap_callback_host(const char *url, char *out, size_t outlen);
/* Returns 1 when host matches one of p's patterns: equal, or for
 * "*.suffix" any name ending in ".suffix" (not suffix itself); case does
 * not matter and one trailing dot of host is ignored.  Else 0. */
int cap_callback_host_allowed(const struct cap_callback *p, const char *host);
/* Returns 1 when a delivery may connect to sa: a public address, or one
 * inside allow (may be NULL).  IPv4-mapped (::ffff:0:0/96) and NAT64
 * (64:ff9b::/96) addresses are judged by the IPv4 address they carry.
 * Else 0, with the class of the address ("loopback", "private", ...) in
 * *why when why is not NULL. */
int cap_callback_addr_allowed(const struct sockaddr *sa, const struct cap_netaddr_set *allow,
                              const char **why);

#endif
