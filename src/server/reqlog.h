#ifndef CAP_REQLOG_H
#define CAP_REQLOG_H

#include "exchange.h"
#include "httpparse.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One answered request, as the ops who tail the logs and scrape the
 * metrics see it. */
struct cap_reqlog {
  const struct cap_exchange *x;       /* The answer (status, code, route, timing). */
  const struct cap_httpparse *parser; /* The request (head, body size). */
  const struct sockaddr *peer;        /* The TCP peer, for trusted-proxy checks. */
  const char *peer_str;
  size_t bytes_out;
  uint64_t now_ms; /* Loop time of the answer. */
};

/* Writes the request's http.request log line (a token in the path shown as
 * "[token]", X-Forwarded-For only from a trusted proxy and at most 256
 * bytes) and counts it in cap_http_requests_total and the duration
 * histogram.  Keeps nothing of l. */
void cap_reqlog_write(const struct cap_reqlog *l);

#endif
