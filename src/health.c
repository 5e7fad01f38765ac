#include "health.h"

#include "app.h"
#include "exchange.h"
#include "execreq.h"
#include "jsonw.h"
#include "version.h"

#include <string.h>

void cap_health_handle(struct cap_exchange *x) {
  struct cap_buf *b = &x->body;
  uint64_t now = x->start_ms;
  uint64_t up = now > x->app->start_ms ? (now - x->app->start_ms) / 1000 : 0;

  /* Written by hand: this is the hottest route and cJSON would allocate
   * a tree per request for a fixed shape. */
  cap_buf_reset(b);
  cap_buf_puts(b, x->app->draining ? "{\"status\":\"draining\",\"capabilities\":["
                                   : "{\"status\":\"ok\",\"capabilities\":[");
  for (size_t i = 0; cap_execreq_capabilities[i]; i++) {
    if (i)
      cap_buf_putc(b, ',');
    cap_jsonw_str(b, cap_execreq_capabilities[i], strlen(cap_execreq_capabilities[i]));
  }
  cap_buf_printf(b, "],\"version\":\"%s\",\"uptime_s\":%llu,\"draining\":%s}", CAP_VERSION,
                 (unsigned long long)up, x->app->draining ? "true" : "false");
  cap_exchange_send(x, 200);
}
