#ifndef CAP_METRICSROUTE_H
#define CAP_METRICSROUTE_H

struct cap_exchange;

/* GET /metrics: brings the gauges read from the app up to date (uptime,
 * draining, jobs by state, pool slots) and answers the whole registry in
 * the Prometheus text format. */
void cap_metricsroute_handle(struct cap_exchange *x);

#endif
