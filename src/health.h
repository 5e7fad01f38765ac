#ifndef CAP_HEALTH_H
#define CAP_HEALTH_H

struct cap_exchange;

/* GET /health: liveness and what this server offers; public, no secrets. */
void cap_health_handle(struct cap_exchange *x);

#endif
