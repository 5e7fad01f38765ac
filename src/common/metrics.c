#include "metrics.h"

#include "alloc.h"
#include "jsonw.h"
#include "version.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The most label names any family has; raise it when a row needs more. */
#define MAX_LABELS 2

#define STR_(x) #x
#define STR(x)  STR_(x)

enum kind { COUNTER, GAUGE, HISTOGRAM };

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

struct family_def {
  const char *name;
  enum kind kind;
  const char *labels[MAX_LABELS]; /* Unused slots stay NULL. */
  const double *bounds;           /* Histogram upper bounds, ascending; +Inf is implied. */
  size_t nbounds;
  const char *help;
};

static const double http_bounds[] = {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
                                     1,      5,     15,    30,   60,   100};
static const double journal_bounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                        0.0025,  0.005,  0.01,    0.05,   0.25};
static const double webhook_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double job_bounds[] = {0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};

#define OVERFLOW_HELP                                                                              \
  "Metric updates folded into the series labelled \"other\" because their family already "         \
  "held " STR(CAP_METRICS_MAX_SERIES) " label sets."

#define BOUNDS(b) b, sizeof(b) / sizeof((b)[0])
#define NO_BOUNDS NULL, 0
#define NAMES(...)                                                                                 \
  { __VA_ARGS__ }
#define NO_LABELS                                                                                  \
  { NULL }

/* One row per family: adding a family is one row here and one id in
 * metrics.h.  Rows are rendered in id order. */
static const struct family_def defs[] = {
    [CAP_M_BUILD_INFO] = {"cap_build_info", GAUGE, NAMES("version"), NO_BOUNDS,
                          "Build of the running server; always 1, the version label names it."},
    [CAP_M_UPTIME] = {"cap_uptime_seconds", GAUGE, NO_LABELS, NO_BOUNDS,
                      "Seconds since the server started."},
    [CAP_M_DRAINING] = {"cap_draining", GAUGE, NO_LABELS, NO_BOUNDS,
                        "1 while the server drains for shutdown, else 0."},
    [CAP_M_CONNECTIONS_OPEN] = {"cap_http_connections_open", GAUGE, NO_LABELS, NO_BOUNDS,
                                "HTTP connections open now."},
    [CAP_M_CONNECTIONS_SHED] =
        {"cap_http_connections_shed_total", COUNTER, NAMES("listener", "reason"), NO_BOUNDS,
         "Connections closed or refused to keep room for others, by listener (public or "
         "metrics) and reason (idle_evicted, refused_body, connection_limit, client_limit, "
         "slow_body)."},
    [CAP_M_HTTP_REQUESTS] = {"cap_http_requests_total", COUNTER, NAMES("route", "status"),
                             NO_BOUNDS, "HTTP requests answered, by route and status code."},
    [CAP_M_HTTP_DURATION] = {"cap_http_request_duration_seconds", HISTOGRAM, NAMES("route"),
                             BOUNDS(http_bounds), "Time taken to answer HTTP requests, by route."},
    [CAP_M_RATE_LIMITED] = {"cap_rate_limited_total", COUNTER, NAMES("scope"), NO_BOUNDS,
                            "Requests refused by a rate limit, by scope (client or token)."},
    [CAP_M_AUTH_FAILURES] = {"cap_auth_failures_total", COUNTER, NO_LABELS, NO_BOUNDS,
                             "Requests refused for a missing or wrong capability token."},
    [CAP_M_JOBS] = {"cap_jobs", GAUGE, NAMES("state"), NO_BOUNDS,
                    "Jobs not finished yet, by state."},
    [CAP_M_JOBS_FINISHED] =
        {"cap_jobs_finished_total", COUNTER, NAMES("preset", "state"), NO_BOUNDS,
         "Jobs finished, by preset (ffprobe for the ffprobe capability) and final state."},
    [CAP_M_JOB_DURATION] = {"cap_job_duration_seconds", HISTOGRAM, NAMES("preset"),
                            BOUNDS(job_bounds), "Time from queued to finished of jobs, by preset."},
    [CAP_M_POOL_SLOTS] = {"cap_pool_slots", GAUGE, NAMES("class"), NO_BOUNDS,
                          "Concurrent job slots of each pool class."},
    [CAP_M_POOL_RUNNING] = {"cap_pool_running", GAUGE, NAMES("class"), NO_BOUNDS,
                            "Jobs holding a slot of each pool class."},
    [CAP_M_POOL_QUEUED] = {"cap_pool_queued", GAUGE, NAMES("class"), NO_BOUNDS,
                           "Jobs waiting for a slot of each pool class."},
    [CAP_M_CHILD_EXITS] = {"cap_child_exits_total", COUNTER, NAMES("program", "status"), NO_BOUNDS,
                           "Child processes ended, by program and exit code or signal name."},
    [CAP_M_STORAGE_BYTES_DOWNLOADED] = {"cap_storage_bytes_downloaded_total", COUNTER, NO_LABELS,
                                        NO_BOUNDS, "Bytes downloaded from object storage."},
    [CAP_M_STORAGE_BYTES_UPLOADED] = {"cap_storage_bytes_uploaded_total", COUNTER, NO_LABELS,
                                      NO_BOUNDS, "Bytes uploaded to object storage."},
    [CAP_M_STORAGE_REQUESTS] = {"cap_storage_requests_total", COUNTER,
                                NAMES("operation", "outcome"), NO_BOUNDS,
                                "Object storage requests, by operation and outcome."},
    [CAP_M_STORAGE_RETRIES] = {"cap_storage_retries_total", COUNTER, NAMES("operation"), NO_BOUNDS,
                               "Object storage requests retried, by operation."},
    [CAP_M_STORAGE_MULTIPART_ABORTS] = {"cap_storage_multipart_aborts_total", COUNTER,
                                        NAMES("reason"), NO_BOUNDS,
                                        "Multipart uploads aborted, by reason."},
    [CAP_M_STORAGE_ABORT_REFUSALS] = {"cap_storage_multipart_abort_refusals_total", COUNTER,
                                      NAMES("reason"), NO_BOUNDS,
                                      "Multipart upload aborts the store refused (403, 405 and "
                                      "other answers a retry cannot change), by reason."},
    [CAP_M_STORAGE_DELETES] = {"cap_storage_deletes_total", COUNTER, NAMES("result"), NO_BOUNDS,
                               "Stored objects deleted (ok) or left behind after every retry "
                               "(failed), by result."},
    [CAP_M_LADDER_OBJECTS] = {"cap_ladder_objects_stored_total", COUNTER, NO_LABELS, NO_BOUNDS,
                              "Objects of ladder packages stored (segments, playlists, masters)."},
    [CAP_M_LADDER_PAUSES] = {"cap_ladder_pauses_total", COUNTER, NO_LABELS, NO_BOUNDS,
                             "Times a ladder's ffmpeg was paused because uploads fell behind."},
    [CAP_M_LADDER_DELETES] = {"cap_ladder_cleanup_deletes_total", COUNTER, NO_LABELS, NO_BOUNDS,
                              "Deletes sent to remove a failed ladder's objects."},
    [CAP_M_INPUT_REQUESTS] = {"cap_input_range_requests_total", COUNTER, NO_LABELS, NO_BOUNDS,
                              "Reads (GET, HEAD) children made of streamed inputs through the "
                              "loopback input endpoint."},
    [CAP_M_INPUT_BYTES] = {"cap_input_bytes_total", COUNTER, NO_LABELS, NO_BOUNDS,
                           "Bytes of streamed inputs sent to children."},
    [CAP_M_INPUT_RESUMES] = {"cap_input_resumes_total", COUNTER, NO_LABELS, NO_BOUNDS,
                             "Store reads of streamed inputs resumed from the byte reached "
                             "after a reset, 5xx or stall."},
    [CAP_M_INPUT_SEEKS] = {"cap_input_seeks_total", COUNTER, NO_LABELS, NO_BOUNDS,
                           "Reads of streamed inputs that did not start where the last one "
                           "stopped (a moov at the end, cues, seeking)."},
    [CAP_M_INPUT_REFUSED] = {"cap_input_refused_total", COUNTER, NAMES("reason"), NO_BOUNDS,
                             "Connections and requests the loopback input endpoint refused, by "
                             "reason (peer, not_found, method, bad_request, connections)."},
    [CAP_M_JOURNAL_WRITES] = {"cap_journal_writes_total", COUNTER, NAMES("result"), NO_BOUNDS,
                              "Journal writes (one transaction each), by result (ok, error)."},
    [CAP_M_JOURNAL_WRITE_SECONDS] = {"cap_journal_write_seconds", HISTOGRAM, NO_LABELS,
                                     BOUNDS(journal_bounds),
                                     "Time the loop spent in one journal write."},
    [CAP_M_JOURNAL_BYTES] = {"cap_journal_bytes", GAUGE, NO_LABELS, NO_BOUNDS,
                             "Size of the journal's database and WAL files."},
    [CAP_M_WEBHOOK_ATTEMPTS] = {"cap_webhook_attempts_total", COUNTER, NAMES("outcome"), NO_BOUNDS,
                                "Webhook delivery attempts, by outcome (delivered, retry, gone, "
                                "refused, expired)."},
    [CAP_M_WEBHOOK_PENDING] = {"cap_webhook_pending", GAUGE, NO_LABELS, NO_BOUNDS,
                               "Webhook events waiting in the outbox."},
    [CAP_M_WEBHOOK_SECONDS] = {"cap_webhook_delivery_seconds", HISTOGRAM, NO_LABELS,
                               BOUNDS(webhook_bounds), "Time one webhook attempt took."},
    [CAP_M_LABEL_OVERFLOW] = {"cap_metrics_label_overflow_total", COUNTER, NO_LABELS, NO_BOUNDS,
                              OVERFLOW_HELP},
};

_Static_assert(sizeof(defs) / sizeof(defs[0]) == CAP_M__COUNT,
               "every id in metrics.h needs a row in defs");

struct series {
  uint32_t hash;     /* Of the label values, so a lookup rarely compares strings. */
  double value;      /* A counter's or gauge's value, or a histogram's sum. */
  uint64_t count;    /* Histogram observations. */
  uint64_t *buckets; /* Per-bound counts, not cumulative; NULL but for histograms. */
  char *labels;      /* The values back to back, each NUL-terminated. */
};

struct family {
  const struct family_def *def;
  size_t nlabels;
  struct series *v;
  size_t n, cap;
};

static struct {
  int ready;
  struct family fam[CAP_M__COUNT];
} reg;

/* Label values as a family stores them: cut, cleaned and hashed, on the
 * stack so that looking a series up allocates nothing. */
struct key {
  char vals[MAX_LABELS][CAP_METRICS_LABEL_MAX + 1];
  uint32_t hash;
};

/* Returns the length a UTF-8 sequence starting with c claims, or 0. */
static size_t lead_len(unsigned char c) {
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return 2;
  if (c >= 0xe0 && c <= 0xef)
    return 3;
  if (c >= 0xf0 && c <= 0xf4)
    return 4;
  return 0;
}

/* Copies in to out, cut to CAP_METRICS_LABEL_MAX bytes without splitting a
 * character and with each byte that is not UTF-8 replaced by '?', because a
 * scraper rejects the whole page over one bad byte. */
static void norm_value(const char *in, char *out) {
  const unsigned char *p = (const unsigned char *)(in ? in : "");
  /* Reading a few bytes past the limit tells a character that straddles
   * it (cut) from a truncated one (invalid). */
  size_t n = strnlen((const char *)p, CAP_METRICS_LABEL_MAX + 4);
  size_t i = 0, o = 0;
  while (i < n && o < CAP_METRICS_LABEL_MAX) {
    size_t k = lead_len(p[i]);
    if (k == 0 || i + k > n || !cap_jsonw_utf8_valid((const char *)p + i, k)) {
      out[o++] = '?';
      i++;
      continue;
    }
    if (o + k > CAP_METRICS_LABEL_MAX)
      break;
    memcpy(out + o, p + i, k);
    o += k;
    i += k;
  }
  out[o] = '\0';
}

static void make_key(const struct family *f, const char *const *labels, struct key *k) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t j = 0; j < f->nlabels; j++) {
    norm_value(labels ? labels[j] : NULL, k->vals[j]);
    for (const unsigned char *p = (const unsigned char *)k->vals[j];; p++) {
      h = (h ^ *p) * 16777619u;
      if (*p == '\0')
        break;
    }
  }
  k->hash = h;
}

static struct series *find(struct family *f, const struct key *k) {
  for (size_t i = 0; i < f->n; i++) {
    struct series *s = &f->v[i];
    if (s->hash != k->hash)
      continue;
    const char *p = s->labels;
    size_t j = 0;
    while (j < f->nlabels && strcmp(p, k->vals[j]) == 0) {
      p += strlen(p) + 1;
      j++;
    }
    if (j == f->nlabels)
      return s;
  }
  return NULL;
}

static struct series *add_series(struct family *f, const struct key *k) {
  if (f->n == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 4;
    f->v = xrealloc(f->v, f->cap * sizeof(*f->v));
  }
  struct series *s = &f->v[f->n++];
  size_t len = 0;
  for (size_t j = 0; j < f->nlabels; j++)
    len += strlen(k->vals[j]) + 1;
  s->hash = k->hash;
  s->value = 0;
  s->count = 0;
  s->buckets = f->def->kind == HISTOGRAM ? xcalloc(f->def->nbounds, sizeof(uint64_t)) : NULL;
  s->labels = xmalloc(len ? len : 1);
  char *p = s->labels;
  for (size_t j = 0; j < f->nlabels; j++) {
    size_t n = strlen(k->vals[j]) + 1;
    memcpy(p, k->vals[j], n);
    p += n;
  }
  return s;
}

static void free_series(struct family *f) {
  for (size_t i = 0; i < f->n; i++) {
    free(f->v[i].buckets);
    free(f->v[i].labels);
  }
  f->n = 0;
}

static void zero_series(const struct family *f, struct series *s) {
  s->value = 0;
  s->count = 0;
  if (s->buckets)
    memset(s->buckets, 0, f->def->nbounds * sizeof(*s->buckets));
}

void cap_metrics_init(void) {
  if (reg.ready)
    return;
  /* Set first: making the label-less series below goes through find/add,
   * which must not come back here. */
  reg.ready = 1;
  for (size_t i = 0; i < CAP_M__COUNT; i++) {
    struct family *f = &reg.fam[i];
    f->def = &defs[i];
    assert(f->def->name != NULL); /* A gap in defs: an id without a row. */
    f->nlabels = 0;
    while (f->nlabels < MAX_LABELS && f->def->labels[f->nlabels])
      f->nlabels++;
    /* A label-less family has exactly one series, from the start, so it
     * renders as 0 before anything happens and never needs a lookup. */
    if (f->nlabels == 0) {
      struct key k;
      make_key(f, NULL, &k);
      add_series(f, &k);
    }
  }
  cap_metrics_set(CAP_M_BUILD_INFO, CAP_LABELS(CAP_VERSION), 1);
}

void cap_metrics_free(void) {
  for (size_t i = 0; i < CAP_M__COUNT; i++) {
    free_series(&reg.fam[i]);
    free(reg.fam[i].v);
  }
  memset(&reg, 0, sizeof(reg));
}

/* Returns the family of id, setting the registry up on first use, or NULL
 * for an id out of range. */
static struct family *family_of(enum cap_metric_id id) {
  if ((unsigned)id >= CAP_M__COUNT)
    return NULL;
  if (!reg.ready)
    cap_metrics_init();
  return &reg.fam[id];
}

/* Returns the series for labels, creating it, or the "other" one when the
 * family is full. */
static struct series *get(struct family *f, const char *const *labels) {
  if (f->nlabels == 0)
    return &f->v[0];
  struct key k;
  make_key(f, labels, &k);
  struct series *s = find(f, &k);
  if (s)
    return s;
  if (f->n < CAP_METRICS_MAX_SERIES)
    return add_series(f, &k);
  const char *other[MAX_LABELS];
  for (size_t j = 0; j < MAX_LABELS; j++)
    other[j] = "other";
  make_key(f, other, &k);
  s = find(f, &k);
  if (s == NULL)
    s = add_series(f, &k);
  reg.fam[CAP_M_LABEL_OVERFLOW].v[0].value += 1;
  return s;
}

void cap_metrics_add(enum cap_metric_id id, const char *const *labels, double v) {
  struct family *f = family_of(id);
  if (f == NULL)
    return;
  assert(f->def->kind != HISTOGRAM);
  if (f->def->kind != HISTOGRAM)
    get(f, labels)->value += v;
}

void cap_metrics_inc(enum cap_metric_id id, const char *const *labels) {
  cap_metrics_add(id, labels, 1);
}

void cap_metrics_set(enum cap_metric_id id, const char *const *labels, double v) {
  struct family *f = family_of(id);
  if (f == NULL)
    return;
  /* Counters may be set too, for totals another module already keeps. */
  assert(f->def->kind != HISTOGRAM);
  if (f->def->kind != HISTOGRAM)
    get(f, labels)->value = v;
}

void cap_metrics_observe(enum cap_metric_id id, const char *const *labels, double v) {
  struct family *f = family_of(id);
  if (f == NULL)
    return;
  assert(f->def->kind == HISTOGRAM);
  /* A NaN would turn the sum into NaN for good. */
  if (f->def->kind != HISTOGRAM || isnan(v))
    return;
  struct series *s = get(f, labels);
  /* A value on a bound belongs to that bound's bucket (le means <=). */
  for (size_t i = 0; i < f->def->nbounds; i++) {
    if (v <= f->def->bounds[i]) {
      s->buckets[i]++;
      break;
    }
  }
  s->count++;
  s->value += v;
}

void cap_metrics_clear(enum cap_metric_id id) {
  struct family *f = family_of(id);
  if (f == NULL)
    return;
  if (f->nlabels == 0)
    zero_series(f, &f->v[0]);
  else
    free_series(f);
}

double cap_metrics_value(enum cap_metric_id id, const char *const *labels) {
  struct family *f = family_of(id);
  if (f == NULL)
    return 0;
  struct key k;
  make_key(f, labels, &k);
  const struct series *s = f->nlabels == 0 ? &f->v[0] : find(f, &k);
  if (s == NULL)
    return 0;
  return f->def->kind == HISTOGRAM ? (double)s->count : s->value;
}

size_t cap_metrics_series(enum cap_metric_id id) {
  struct family *f = family_of(id);
  return f ? f->n : 0;
}

/* Appends s with backslash and newline escaped, and the double quote too
 * inside a label value, as the exposition format asks. */
static void put_escaped(struct cap_buf *b, const char *s, int quote) {
  for (; *s; s++) {
    if (*s == '\\')
      cap_buf_puts(b, "\\\\");
    else if (*s == '\n')
      cap_buf_puts(b, "\\n");
    else if (*s == '"' && quote)
      cap_buf_puts(b, "\\\"");
    else
      cap_buf_putc(b, *s);
  }
}

/* Appends v in the shortest form that reads back as v: integers (up to
 * 2^53, where doubles stop being exact) as plain digits, so counters read
 * naturally, and the special values as Prometheus spells them. */
static void put_num(struct cap_buf *b, double v) {
  char s[40];
  if (isnan(v)) {
    cap_buf_puts(b, "NaN");
  } else if (isinf(v)) {
    cap_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
  } else if (v == 0) {
    cap_buf_putc(b, '0'); /* Not "-0". */
  } else if (fabs(v) <= 9007199254740992.0 && v == trunc(v)) {
    cap_buf_printf(b, "%.0f", v);
  } else {
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(s, sizeof(s), "%.*g", prec, v);
      if (strtod(s, NULL) == v)
        break;
    }
    cap_buf_puts(b, s);
  }
}

/* Appends a series' label set, with le last for histogram buckets (le NULL
 * otherwise; no braces when there is nothing to put in them). */
static void put_labels(struct cap_buf *b, const struct family *f, const struct series *s,
                       const double *le) {
  if (f->nlabels == 0 && le == NULL)
    return;
  cap_buf_putc(b, '{');
  const char *p = s->labels;
  for (size_t j = 0; j < f->nlabels; j++) {
    if (j)
      cap_buf_putc(b, ',');
    cap_buf_printf(b, "%s=\"", f->def->labels[j]);
    put_escaped(b, p, 1);
    cap_buf_putc(b, '"');
    p += strlen(p) + 1;
  }
  if (le) {
    cap_buf_puts(b, f->nlabels ? ",le=\"" : "le=\"");
    put_num(b, *le);
    cap_buf_putc(b, '"');
  }
  cap_buf_putc(b, '}');
}

static void put_sample(struct cap_buf *b, const struct family *f, const char *suffix,
                       const struct series *s, const double *le, double v) {
  cap_buf_puts(b, f->def->name);
  cap_buf_puts(b, suffix);
  put_labels(b, f, s, le);
  cap_buf_putc(b, ' ');
  put_num(b, v);
  cap_buf_putc(b, '\n');
}

void cap_metrics_render_family(enum cap_metric_id id, struct cap_buf *out) {
  struct family *f = family_of(id);
  if (f == NULL)
    return;
  const struct family_def *d = f->def;
  cap_buf_printf(out, "# HELP %s ", d->name);
  put_escaped(out, d->help, 0);
  cap_buf_printf(out, "\n# TYPE %s %s\n", d->name, kind_names[d->kind]);
  static const double inf = INFINITY;
  for (size_t i = 0; i < f->n; i++) {
    const struct series *s = &f->v[i];
    if (d->kind != HISTOGRAM) {
      put_sample(out, f, "", s, NULL, s->value);
      continue;
    }
    uint64_t cum = 0;
    for (size_t j = 0; j < d->nbounds; j++) {
      cum += s->buckets[j];
      put_sample(out, f, "_bucket", s, &d->bounds[j], (double)cum);
    }
    put_sample(out, f, "_bucket", s, &inf, (double)s->count);
    put_sample(out, f, "_sum", s, NULL, s->value);
    put_sample(out, f, "_count", s, NULL, (double)s->count);
  }
}

void cap_metrics_render(struct cap_buf *out) {
  for (size_t i = 0; i < CAP_M__COUNT; i++)
    cap_metrics_render_family((enum cap_metric_id)i, out);
}
