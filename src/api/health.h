#ifndef CAP_HEALTH_H
#define CAP_HEALTH_H

struct cap_app;
struct cap_buf;
struct cap_exchange;

/* GET /health: liveness and what this server offers; public, no secrets. */
void cap_health_handle(struct cap_exchange *x);
/* Appends the load object a registry heartbeat carries: running, queued,
 * slots, free, per class, draining. */
void cap_health_load(const struct cap_app *app, struct cap_buf *out);
/* Appends the fields a registration carries besides its identity, each
 * after a comma: version, available presets, pool sizes. */
void cap_health_describe(const struct cap_app *app, struct cap_buf *out);

#endif
