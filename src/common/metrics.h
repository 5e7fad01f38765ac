#ifndef CAP_METRICS_H
#define CAP_METRICS_H

#include "buf.h"

#include <stddef.h>

/* Prometheus metrics: a process-wide registry (the server is one thread on
 * one loop, like the logger) of the families listed in metrics.c, rendered
 * in the text exposition format 0.0.4.  Call sites name a family by its id
 * and pass its label values in the order of the family's label names, e.g.
 *
 *   cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS("exec", "200"));
 *
 * or NULL for a family without labels.  Memory is bounded: a family keeps at
 * most CAP_METRICS_MAX_SERIES label sets; later new ones are folded into one
 * series whose every label is "other", and each folded update counts in
 * cap_metrics_label_overflow_total.  Label values are cut to
 * CAP_METRICS_LABEL_MAX bytes (at a UTF-8 character boundary) and bytes that
 * are not UTF-8 become '?'.  Updating a series that exists allocates
 * nothing.  Every call initialises the registry if cap_metrics_init has not
 * run, so modules with call sites work in unit tests that never set it up. */

#define CAP_METRICS_MAX_SERIES 128
#define CAP_METRICS_LABEL_MAX  64

/* Label values for one update, e.g. CAP_LABELS("exec", "200"). */
#define CAP_LABELS(...) ((const char *const[]){__VA_ARGS__})

/* One id per family, in the order they are rendered. */
enum cap_metric_id {
  CAP_M_BUILD_INFO,               /* cap_build_info{version} gauge, set by init */
  CAP_M_UPTIME,                   /* cap_uptime_seconds gauge */
  CAP_M_DRAINING,                 /* cap_draining gauge */
  CAP_M_CONNECTIONS_OPEN,         /* cap_http_connections_open gauge */
  CAP_M_CONNECTIONS_SHED,         /* cap_http_connections_shed_total{listener,reason} */
  CAP_M_HTTP_REQUESTS,            /* cap_http_requests_total{route,status} */
  CAP_M_HTTP_DURATION,            /* cap_http_request_duration_seconds{route} */
  CAP_M_RATE_LIMITED,             /* cap_rate_limited_total{scope} */
  CAP_M_AUTH_FAILURES,            /* cap_auth_failures_total */
  CAP_M_JOBS,                     /* cap_jobs{state} gauge */
  CAP_M_JOBS_FINISHED,            /* cap_jobs_finished_total{preset,state} */
  CAP_M_JOB_DURATION,             /* cap_job_duration_seconds{preset} */
  CAP_M_POOL_SLOTS,               /* cap_pool_slots{class} gauge */
  CAP_M_POOL_RUNNING,             /* cap_pool_running{class} gauge */
  CAP_M_POOL_QUEUED,              /* cap_pool_queued{class} gauge */
  CAP_M_CHILD_EXITS,              /* cap_child_exits_total{program,status} */
  CAP_M_STORAGE_BYTES_DOWNLOADED, /* cap_storage_bytes_downloaded_total */
  CAP_M_STORAGE_BYTES_UPLOADED,   /* cap_storage_bytes_uploaded_total */
  CAP_M_STORAGE_REQUESTS,         /* cap_storage_requests_total{operation,outcome} */
  CAP_M_STORAGE_RETRIES,          /* cap_storage_retries_total{operation} */
  CAP_M_STORAGE_MULTIPART_ABORTS, /* cap_storage_multipart_aborts_total{reason} */
  CAP_M_STORAGE_ABORT_REFUSALS,   /* cap_storage_multipart_abort_refusals_total{reason} */
  CAP_M_STORAGE_DELETES,          /* cap_storage_deletes_total{result} */
  CAP_M_LADDER_OBJECTS,           /* cap_ladder_objects_stored_total */
  CAP_M_LADDER_PAUSES,            /* cap_ladder_pauses_total */
  CAP_M_LADDER_DELETES,           /* cap_ladder_cleanup_deletes_total */
  CAP_M_INPUT_REQUESTS,           /* cap_input_range_requests_total */
  CAP_M_INPUT_BYTES,              /* cap_input_bytes_total */
  CAP_M_INPUT_RESUMES,            /* cap_input_resumes_total */
  CAP_M_INPUT_SEEKS,              /* cap_input_seeks_total */
  CAP_M_INPUT_REFUSED,            /* cap_input_refused_total{reason} */
  CAP_M_JOURNAL_WRITES,           /* cap_journal_writes_total{result} */
  CAP_M_JOURNAL_WRITE_SECONDS,    /* cap_journal_write_seconds */
  CAP_M_JOURNAL_BYTES,            /* cap_journal_bytes gauge */
  CAP_M_WEBHOOK_ATTEMPTS,         /* cap_webhook_attempts_total{outcome} */
  CAP_M_WEBHOOK_PENDING,          /* cap_webhook_pending gauge */
  CAP_M_WEBHOOK_SECONDS,          /* cap_webhook_delivery_seconds */
  CAP_M_LABEL_OVERFLOW,           /* cap_metrics_label_overflow_total */
  CAP_M__COUNT
};

/* Sets up every family (label-less counters and gauges start at 0) and sets
 * cap_build_info to 1; does nothing when already set up. */
void cap_metrics_init(void);
/* Drops every series; a later call starts again from zero. */
void cap_metrics_free(void);

/* Adds v to a counter or gauge series (counters only ever grow: pass v >= 0). */
void cap_metrics_add(enum cap_metric_id id, const char *const *labels, double v);
/* Adds 1 to a counter or gauge series. */
void cap_metrics_inc(enum cap_metric_id id, const char *const *labels);
/* Sets a gauge series to v (or a counter whose total another module keeps). */
void cap_metrics_set(enum cap_metric_id id, const char *const *labels, double v);
/* Records v in a histogram series; NaN is ignored. */
void cap_metrics_observe(enum cap_metric_id id, const char *const *labels, double v);
/* Drops every series of a family (a label-less one goes back to 0); meant
 * for gauges recomputed at scrape time whose label values can disappear. */
void cap_metrics_clear(enum cap_metric_id id);

/* Appends the whole registry to out in the text exposition format 0.0.4. */
void cap_metrics_render(struct cap_buf *out);
/* Appends one family to out, as cap_metrics_render writes it. */
void cap_metrics_render_family(enum cap_metric_id id, struct cap_buf *out);

/* Returns a counter's or gauge's value, or a histogram's count; 0 when the
 * series does not exist.  Meant for tests. */
double cap_metrics_value(enum cap_metric_id id, const char *const *labels);
/* Returns how many series family id holds, the "other" one included. */
size_t cap_metrics_series(enum cap_metric_id id);

#endif
