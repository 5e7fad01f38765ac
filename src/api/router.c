#include "router.h"

#include "exec.h"
#include "health.h"
#include "jobroutes.h"
#include "metricsroute.h"

#include <llhttp.h>
#include <string.h>

#define M(m) (1u << (m))

/* HEAD is served wherever GET is; the connection drops the body. */
static const struct cap_route routes[] = {
    {"health", "/health", M(HTTP_GET) | M(HTTP_HEAD), CAP_ROUTE_PRIVATE, 0, cap_health_handle,
     "GET, HEAD"},
    {"exec", "/exec", M(HTTP_POST), CAP_ROUTE_AUTH | CAP_ROUTE_RATELIMIT | CAP_ROUTE_JSON_BODY, 1,
     cap_exec_handle, "POST"},
    {"jobs", "/jobs/", M(HTTP_GET) | M(HTTP_HEAD) | M(HTTP_DELETE),
     CAP_ROUTE_AUTH | CAP_ROUTE_PREFIX, 0, cap_jobroutes_handle, "GET, HEAD, DELETE"},
    {"metrics", "/metrics", M(HTTP_GET) | M(HTTP_HEAD), CAP_ROUTE_METRICS | CAP_ROUTE_PRIVATE, 0,
     cap_metricsroute_handle, "GET, HEAD"},
};

const struct cap_route *cap_router_find(const char *path, size_t len, int method, int *status,
                                        const char **allow) {
  for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
    const struct cap_route *r = &routes[i];
    size_t rl = strlen(r->path);
    if (r->flags & CAP_ROUTE_PREFIX) {
      /* One non-empty segment after the prefix: /jobs/{id}. */
      if (len <= rl || memcmp(r->path, path, rl) != 0 || memchr(path + rl, '/', len - rl))
        continue;
    } else if (rl != len || memcmp(r->path, path, len) != 0) {
      continue;
    }
    if (method >= 0 && method < 32 && (r->methods & M(method)))
      return r;
    *status = 405;
    *allow = r->allow;
    return NULL;
  }
  *status = 404;
  *allow = NULL;
  return NULL;
}
