#ifndef CAP_ROUTER_H
#define CAP_ROUTER_H

#include <stddef.h>

struct cap_exchange;

/* What a route asks of the request before its handler runs. */
enum cap_route_flags {
  CAP_ROUTE_AUTH = 1 << 0,      /* Bearer token required. */
  CAP_ROUTE_RATELIMIT = 1 << 1, /* Counts against the per-client and per-token buckets. */
  CAP_ROUTE_JSON_BODY = 1 << 2, /* Content-Type must be application/json. */
  CAP_ROUTE_PREFIX = 1 << 3,    /* path is a prefix followed by one more segment. */
  CAP_ROUTE_METRICS = 1 << 4,   /* Token as metrics_auth says; only where metrics are served. */
  CAP_ROUTE_PRIVATE = 1 << 5,   /* Also served on the metrics listener. */
};

typedef void (*cap_handler_fn)(struct cap_exchange *x);

struct cap_route {
  const char *name; /* The route label of metrics. */
  const char *path;
  unsigned methods; /* Bit (1 << llhttp method) for each method served. */
  unsigned flags;
  int has_body; /* 0: any body byte is refused with 413. */
  cap_handler_fn handler;
  const char *allow; /* The Allow header value for 405. */
};

/* Finds the route for path (len bytes) and llhttp method.  Returns the
 * route, or NULL with *status 404 or 405 (then *allow is the Allow value). */
const struct cap_route *cap_router_find(const char *path, size_t len, int method, int *status,
                                        const char **allow);

#endif
