#include "callback.h"

#include "alloc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The IPv4 networks no callback may reach unless allowed, and why. */
static const struct {
  uint32_t net;
  int prefix;
  const char *why;
} v4_denied[] = {
    {0x00000000, 8, "unspecified"}, /* 0.0.0.0/8 */
    {0x0a000000, 8, "private"},     /* 10.0.0.0/8 */
    {0x64400000, 10, "cgnat"},      /* 100.64.0.0/10 */
    {0x7f000000, 8, "loopback"},    /* 127.0.0.0/8 */
    {0xa9fe0000, 16, "link-local"}, /* 169.254.0.0/16 */
    {0xac100000, 12, "private"},    /* 172.16.0.0/12 */
    {0xc0000000, 24, "reserved"},   /* 192.0.0.0/24 */
    {0xc0a80000, 16, "private"},    /* 192.168.0.0/16 */
    {0xc6120000, 15, "reserved"},   /* 198.18.0.0/15, benchmarking */
    {0xe0000000, 4, "multicast"},   /* 224.0.0.0/4 */
    {0xf0000000, 4, "reserved"},    /* 240.0.0.0/4, and 255.255.255.255 */
};

/* The IPv6 networks, by their leading bytes. */
static const struct {
  unsigned char net[16];
  int prefix;
  const char *why;
} v6_denied[] = {
    {{0}, 128, "unspecified"},                                           /* :: */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"}, /* ::1 */
    {{0xfc}, 7, "private"},                                              /* fc00::/7 */
    {{0xfe, 0x80}, 10, "link-local"},                                    /* fe80::/10 */
    {{0xfe, 0xc0}, 10, "private"},                                       /* fec0::/10, site-local */
    {{0xff}, 8, "multicast"},                                            /* ff00::/8 */
};

static const unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
static const unsigned char nat64_prefix[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

static int prefix_match(const unsigned char *a, const unsigned char *net, int prefix) {
  int full = prefix / 8, rest = prefix % 8;
  if (memcmp(a, net, (size_t)full) != 0)
    return 0;
  if (rest == 0)
    return 1;
  unsigned char mask = (unsigned char)(0xff << (8 - rest));
  return (a[full] & mask) == (net[full] & mask);
}

static const char *v4_class(uint32_t ip) {
  for (size_t i = 0; i < sizeof(v4_denied) / sizeof(v4_denied[0]); i++) {
    uint32_t mask = v4_denied[i].prefix ? 0xffffffffu << (32 - v4_denied[i].prefix) : 0;
    if ((ip & mask) == v4_denied[i].net)
      return v4_denied[i].why;
  }
  return NULL;
}

int cap_callback_addr_allowed(const struct sockaddr *sa, const struct cap_netaddr_set *allow,
                              const char **why) {
  const char *cls = NULL;
  struct sockaddr_in v4;
  if (why)
    *why = NULL;
  if (sa == NULL)
    return 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    cls = v4_class(ntohl(in->sin_addr.s_addr));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    const unsigned char *a = in6->sin6_addr.s6_addr;
    if (memcmp(a, mapped_prefix, 12) == 0 || memcmp(a, nat64_prefix, 12) == 0) {
      /* Whoever connects there reaches the IPv4 address inside: judge
       * (and allow) that one. */
      memset(&v4, 0, sizeof(v4));
      v4.sin_family = AF_INET;
      memcpy(&v4.sin_addr.s_addr, a + 12, 4);
      v4.sin_port = in6->sin6_port;
      return cap_callback_addr_allowed((const struct sockaddr *)&v4, allow, why);
    }
    for (size_t i = 0; cls == NULL && i < sizeof(v6_denied) / sizeof(v6_denied[0]); i++)
      if (prefix_match(a, v6_denied[i].net, v6_denied[i].prefix))
        cls = v6_denied[i].why;
  } else {
    cls = "not an IP address";
  }
  if (cls == NULL)
    return 1;
  if (allow && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) &&
      cap_netaddr_set_contains(allow, sa))
    return 1;
  if (why)
    *why = cls;
  return 0;
}

void cap_callback_free(struct cap_callback *p) {
  for (size_t i = 0; i < p->nhosts; i++)
    free(p->hosts[i]);
  free(p->hosts);
  p->hosts = NULL;
  p->nhosts = 0;
  cap_netaddr_set_free(&p->allow);
}

/* A pattern: a host name or IP literal, or "*." and a name; no ports,
 * paths or other wildcards. */
static int valid_pattern(const char *s, size_t n) {
  if (n >= 2 && s[0] == '*' && s[1] == '.') {
    s += 2;
    n -= 2;
  }
  if (n == 0 || n > CAP_CALLBACK_HOST_MAX)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '.' || s[i] == ':' || s[i] == '_'))
      return 0;
  return 1;
}

/* Lowercases the host *h and writes an IPv6 literal in its one canonical
 * text form, so that "::FFFF:7f00:1" in callback_hosts matches
 * "[::ffff:127.0.0.1]" in a URL. */
static void canonical_ip6(char **h) {
  struct in6_addr a;
  char text[INET6_ADDRSTRLEN];
  for (char *c = *h; *c; c++)
    *c = (char)tolower((unsigned char)*c);
  if (inet_pton(AF_INET6, *h, &a) == 1 && inet_ntop(AF_INET6, &a, text, sizeof(text))) {
    free(*h);
    *h = xstrdup(text);
  }
}

int cap_callback_init(struct cap_callback *p, const char *hosts, const char *allow_cidrs, char *err,
                      size_t errlen) {
  memset(p, 0, sizeof(*p));
  const char *s = hosts ? hosts : "";
  while (*s) {
    size_t n = strcspn(s, ",");
    const char *w = s;
    size_t wn = n;
    while (wn > 0 && (*w == ' ' || *w == '\t')) {
      w++;
      wn--;
    }
    while (wn > 0 && (w[wn - 1] == ' ' || w[wn - 1] == '\t'))
      wn--;
    if (wn > 0) {
      if (!valid_pattern(w, wn)) {
        snprintf(err, errlen, "callback_hosts: \"%.*s\" is not a host name or \"*.\" and a domain",
                 (int)wn > 80 ? 80 : (int)wn, w);
        goto fail;
      }
      char *h = xstrndup(w, wn);
      canonical_ip6(&h);
      p->hosts = xrealloc(p->hosts, (p->nhosts + 1) * sizeof(*p->hosts));
      p->hosts[p->nhosts++] = h;
    }
    s += n;
    if (*s == ',')
      s++;
  }
  if (allow_cidrs && cap_netaddr_set_parse(&p->allow, allow_cidrs) != 0) {
    snprintf(err, errlen, "callback_allow_cidrs: not a list of IPs and CIDRs (got \"%.64s\")",
             allow_cidrs);
    goto fail;
  }
  return 0;
fail:
  cap_callback_free(p);
  return -EINVAL;
}

int cap_callback_host_allowed(const struct cap_callback *p, const char *host) {
  size_t n = strlen(host);
  if (n > 0 && host[n - 1] == '.')
    n--;
  if (n == 0)
    return 0;
  for (size_t i = 0; i < p->nhosts; i++) {
    const char *pat = p->hosts[i];
    size_t pn = strlen(pat);
    if (pn >= 2 && pat[0] == '*' && pat[1] == '.') {
      /* "*.example.com": "a.example.com" and "a.b.example.com", not
       * "example.com" nor "badexample.com". */
      size_t sn = pn - 1; /* ".example.com" */
      if (n > sn && strncasecmp(host + n - sn, pat + 1, sn) == 0)
        return 1;
    } else if (pn == n && strncasecmp(host, pat, n) == 0) {
      return 1;
    }
  }
  return 0;
}

/* Gets one part of u into a malloc'ed string (NULL when absent). */
static char *url_part(CURLU *u, CURLUPart what) {
  char *v = NULL;
  if (curl_url_get(u, what, &v, 0) != CURLUE_OK)
    return NULL;
  char *copy = xstrdup(v);
  curl_free(v);
  return copy;
}

/* Parses url; on success the caller frees *host (lowercase, IPv6 without
 * brackets).  Returns 0 or -EINVAL. */
static int parse(const char *url, CURLU **out, char **host) {
  CURLU *u = curl_url();
  *host = NULL;
  *out = NULL;
  if (u == NULL)
    abort(); /* libcurl fails here only when out of memory. */
  /* No guessing of a scheme: a URL without one is refused below. */
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
    curl_url_cleanup(u);
    return -EINVAL;
  }
  char *h = url_part(u, CURLUPART_HOST);
  if (h == NULL) {
    curl_url_cleanup(u);
    return -EINVAL;
  }
  size_t n = strlen(h);
  if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
    memmove(h, h + 1, n - 2);
    h[n - 2] = '\0';
    /* A zone ("fe80::1%eth0") only applies to link-local addresses,
     * which are refused anyway; keep the address part. */
    char *pct = strchr(h, '%');
    if (pct)
      *pct = '\0';
  }
  canonical_ip6(&h);
  *out = u;
  *host = h;
  return 0;
}

int cap_callback_host(const char *url, char *out, size_t outlen) {
  CURLU *u;
  char *h;
  if (url == NULL || parse(url, &u, &h) != 0) {
    snprintf(out, outlen, "?");
    return -EINVAL;
  }
  snprintf(out, outlen, "%s", h);
  free(h);
  curl_url_cleanup(u);
  return 0;
}

__attribute__((format(printf, 3, 4))) static int deny(char *why, size_t whylen, const char *fmt,
                                                      ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
  return -EPERM;
}

int cap_callback_check_url(const struct cap_callback *p, const char *url, char *why,
                           size_t whylen) {
  CURLU *u = NULL;
  char *host = NULL, *scheme = NULL, *user = NULL, *pass = NULL;
  int rc;

  if (strlen(url) > CAP_CALLBACK_URL_MAX) {
    rc = deny(why, whylen, "callback_url must be at most %d bytes", CAP_CALLBACK_URL_MAX);
    goto fail;
  }
  if (parse(url, &u, &host) != 0) {
    rc = deny(why, whylen, "callback_url is not an absolute URL with a host");
    goto fail;
  }
  scheme = url_part(u, CURLUPART_SCHEME);
  if (scheme == NULL || strcasecmp(scheme, "https") != 0) {
    rc = deny(why, whylen, "callback_url must be an https URL");
    goto fail;
  }
  user = url_part(u, CURLUPART_USER);
  pass = url_part(u, CURLUPART_PASSWORD);
  if (user || pass) {
    rc = deny(why, whylen, "callback_url must not carry a user name or password");
    goto fail;
  }
  if (!cap_callback_host_allowed(p, host)) {
    rc = p->nhosts == 0 ? deny(why, whylen,
                               "callbacks are not enabled here (the operator lists none in "
                               "callback_hosts)")
                        : deny(why, whylen,
                               "callback_url's host %.256s is not in the operator's "
                               "callback_hosts",
                               host);
    goto fail;
  }
  /* An IP literal is judged now as well as at connect time, so that the
   * client learns at once. */
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
  const char *cls = NULL;
  memset(&in4, 0, sizeof(in4));
  memset(&in6, 0, sizeof(in6));
  if (inet_pton(AF_INET, host, &in4.sin_addr) == 1) {
    in4.sin_family = AF_INET;
    if (!cap_callback_addr_allowed((struct sockaddr *)&in4, &p->allow, &cls)) {
      rc = deny(why, whylen, "callback_url's address %s is %s", host, cls);
      goto fail;
    }
  } else if (inet_pton(AF_INET6, host, &in6.sin6_addr) == 1) {
    in6.sin6_family = AF_INET6;
    if (!cap_callback_addr_allowed((struct sockaddr *)&in6, &p->allow, &cls)) {
      rc = deny(why, whylen, "callback_url's address %s is %s", host, cls);
      goto fail;
    }
  }
  rc = 0;
fail:
  free(host);
  free(scheme);
  free(user);
  free(pass);
  curl_url_cleanup(u);
  return rc;
}
