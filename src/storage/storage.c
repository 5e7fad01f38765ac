#include "storage.h"

#include "alloc.h"
#include "config.h"
#include "jsonw.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Delays between retries of a failed abort. */
#define RETRY_FIRST_MS 2000
#define RETRY_MAX_MS   60000

static void on_abort_failed(struct cap_s3 *s3, const struct cap_s3_req *r, const char *key,
                            const char *upload_id, const char *reason);

static const char *env_get(char **envp, const char *name) {
  size_t n = strlen(name);
  for (char **e = envp; e && *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=' && (*e)[n + 1] != '\0')
      return *e + n + 1;
  return NULL;
}

/* Reads KEY=VALUE lines for the AWS credentials; only those keys are taken. */
static int read_credentials(const char *path, struct cap_s3_conf *c, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  char line[1024];
  struct stat st;
  if (f == NULL) {
    snprintf(err, errlen, "storage_credentials_file: cannot open %s: %s", path, strerror(errno));
    return -EINVAL;
  }
  if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "storage.credentials_mode");
    cap_log_str(r, "path", path);
    cap_log_str(r, "hint", "the credentials file is readable by group or others; chmod 600 it");
    cap_log_end(r);
  }
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\r\n")] = '\0';
    char *eq = strchr(line, '=');
    if (line[0] == '#' || eq == NULL)
      continue;
    *eq = '\0';
    char **slot = strcmp(line, "AWS_ACCESS_KEY_ID") == 0       ? &c->access_key
                  : strcmp(line, "AWS_SECRET_ACCESS_KEY") == 0 ? &c->secret_key
                                                               : NULL;
    if (slot) {
      free(*slot);
      *slot = xstrdup(eq + 1);
    }
  }
  memset(line, 0, sizeof(line));
  fclose(f);
  return 0;
}

/* Reads s3://BUCKET[/PREFIX] or r2://...: the bucket, and the prefix
 * ending in '/' (or "").  Returns 0 or -EINVAL with err set. */
static int parse_bucket_url(struct cap_s3_conf *c, const char *url, char *err, size_t errlen) {
  const char *b = url + 5, *slash = strchr(b, '/');
  c->bucket = slash ? xstrndup(b, (size_t)(slash - b)) : xstrdup(b);
  const char *prefix = slash ? slash + 1 : "";
  size_t pl = strlen(prefix);
  c->prefix = xmalloc(pl + 2);
  snprintf(c->prefix, pl + 2, "%s%s", prefix, pl && prefix[pl - 1] != '/' ? "/" : "");
  if (c->bucket[0] == '\0' || strlen(c->bucket) > 63) {
    snprintf(err, errlen, "storage: the bucket name must be 1 to 63 characters");
    return -EINVAL;
  }
  return 0;
}

/* Picks the region and the endpoint: R2's from R2_ACCOUNT_ID, otherwise
 * AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL.  Returns 0 or -EINVAL. */
static int read_endpoint(struct cap_s3_conf *c, char **envp, int r2, char *err, size_t errlen) {
  const char *region = env_get(envp, "AWS_REGION");
  c->region = xstrdup(region ? region : "auto");
  if (r2) {
    const char *acct = env_get(envp, "R2_ACCOUNT_ID");
    if (acct == NULL) {
      snprintf(err, errlen, "storage: r2:// needs R2_ACCOUNT_ID");
      return -EINVAL;
    }
    size_t n = strlen(acct) + 64;
    c->endpoint = xmalloc(n);
    snprintf(c->endpoint, n, "https://%s.r2.cloudflarestorage.com", acct);
    return 0;
  }
  const char *ep = env_get(envp, "AWS_ENDPOINT_URL_S3");
  if (ep == NULL)
    ep = env_get(envp, "AWS_ENDPOINT_URL");
  if (ep == NULL) {
    snprintf(err, errlen, "storage: s3:// needs AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3)");
    return -EINVAL;
  }
  c->endpoint = xstrdup(ep);
  size_t el = strlen(c->endpoint);
  while (el > 0 && c->endpoint[el - 1] == '/')
    c->endpoint[--el] = '\0';
  return 0;
}

/* Takes the keys from the environment, then from the credentials file,
 * which wins.  Returns 0 or -EINVAL when either key is missing. */
static int read_keys(struct cap_s3_conf *c, const struct cap_config *cfg, char **envp, char *err,
                     size_t errlen) {
  const char *ak = env_get(envp, "AWS_ACCESS_KEY_ID"), *sk = env_get(envp, "AWS_SECRET_ACCESS_KEY");
  c->access_key = ak ? xstrdup(ak) : NULL;
  c->secret_key = sk ? xstrdup(sk) : NULL;
  if (cfg->storage_credentials_file &&
      read_credentials(cfg->storage_credentials_file, c, err, errlen) != 0)
    return -EINVAL;
  if (c->access_key == NULL || c->secret_key == NULL) {
    snprintf(err, errlen,
             "storage: credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
             "(or storage_credentials_file)");
    return -EINVAL;
  }
  return 0;
}

/* Starts the S3 client, the part-buffer pool and the sweep's and the abort
 * retries' timers (unreferenced: they never keep the loop alive). */
static int open_s3(struct cap_storage *st, const struct cap_config *cfg, uv_loop_t *loop,
                   struct cap_curlloop *cl, char *err, size_t errlen) {
  struct cap_s3_conf *c = &st->conf;
  c->virtual_host = cfg->s3_virtual_host;
  c->retries = cfg->storage_retries;
  c->backoff_ms = cfg->storage_backoff_ms;
  c->low_speed_s = cfg->storage_low_speed_s;
  st->cl = cl;
  if (cap_s3_init(&st->s3, cl, c) != 0) {
    snprintf(err, errlen, "storage: the endpoint must be http(s)://host[:port] (got \"%.80s\")",
             c->endpoint);
    return -EINVAL;
  }
  cap_bufpool_init(&st->pool, (size_t)cfg->part_size, (size_t)cfg->upload_budget_mb * 1024 * 1024);
  uv_timer_init(loop, &st->sweep_timer);
  st->sweep_timer.data = st;
  st->sweep_timer_open = 1;
  uv_unref((uv_handle_t *)&st->sweep_timer);
  uv_timer_init(loop, &st->retry_timer);
  st->retry_timer.data = st;
  st->retry_timer_open = 1;
  st->retry_delay_ms = RETRY_FIRST_MS;
  uv_unref((uv_handle_t *)&st->retry_timer);
  st->s3.owner = st;
  st->s3.on_abort_failed = on_abort_failed;
  return 0;
}

int cap_storage_init(struct cap_storage *st, const struct cap_config *cfg, char **envp,
                     uv_loop_t *loop, struct cap_curlloop *cl, char *err, size_t errlen) {
  const char *url = cfg->storage;
  memset(st, 0, sizeof(*st));
  st->cfg = cfg;
  st->loop = loop;
  if (url == NULL || strncmp(url, "file://", 7) == 0) {
    st->kind = CAP_STORAGE_FILE;
    st->label = xstrdup("file");
    st->file_root = xstrdup(url && url[7] ? url + 7 : cfg->data_dir);
    if (st->file_root[0] == '\0') {
      snprintf(err, errlen, "storage: file:// needs a directory (file:///srv/objects)");
      return -EINVAL;
    }
    return 0;
  }
  int r2 = strncmp(url, "r2://", 5) == 0;
  if (!r2 && strncmp(url, "s3://", 5) != 0) {
    snprintf(err, errlen,
             "storage: must be file:///DIR, s3://BUCKET[/PREFIX] or r2://BUCKET[/PREFIX]");
    return -EINVAL;
  }
  st->kind = CAP_STORAGE_S3;
  st->label = xstrdup(r2 ? "r2" : "s3");
  if (parse_bucket_url(&st->conf, url, err, errlen) != 0 ||
      read_endpoint(&st->conf, envp, r2, err, errlen) != 0 ||
      read_keys(&st->conf, cfg, envp, err, errlen) != 0)
    return -EINVAL;
  return open_s3(st, cfg, loop, cl, err, errlen);
}

static void log_outcome(const char *event, const struct cap_s3_req *r, enum cap_log_level lvl) {
  struct cap_log_rec *l = cap_log_begin(lvl, event);
  cap_log_int(l, "status", r->status);
  if (r->err_code[0])
    cap_log_str(l, "code", r->err_code);
  if (r->err_msg[0])
    cap_log_str(l, "message", r->err_msg);
  cap_log_end(l);
}

/* The storage's own requests (bucket check, sweep, orphan aborts), kept
 * in a list so that a shutdown can stop them and free their memory. */
struct st_req {
  struct cap_s3_req r;
  struct st_req *prev, *next;
  /* A recovery listing: the key (or prefix) whose uploads go, those
   * initiated before this time only. */
  char *match;
  int match_prefix;
  time_t before;
};

static struct st_req *own_reqs;

static struct cap_s3_req *new_req(struct cap_storage *st) {
  struct st_req *q = xcalloc(1, sizeof(*q));
  cap_s3_req_init(&q->r, &st->s3);
  q->r.data = st;
  q->next = own_reqs;
  if (own_reqs)
    own_reqs->prev = q;
  own_reqs = q;
  return &q->r;
}

static void free_req(struct cap_s3_req *r) {
  struct st_req *q = (struct st_req *)r;
  free(q->match);
  if (q->prev)
    q->prev->next = q->next;
  else
    own_reqs = q->next;
  if (q->next)
    q->next->prev = q->prev;
  free(q);
}

static void free_unlinked(struct cap_s3_req *r) {
  free(r);
}

static void on_head_done(struct cap_s3_req *r) {
  struct cap_storage *st = r->data;
  struct cap_log_rec *l;
  if (cap_s3_ok(r)) {
    l = cap_log_begin(CAP_LOG_INFO, "storage.ready");
    cap_log_str(l, "kind", st->label);
    cap_log_str(l, "bucket", st->conf.bucket);
    cap_log_str(l, "endpoint", st->conf.endpoint);
    cap_log_end(l);
  } else {
    const char *why = r->status == 403   ? "the credentials were refused"
                      : r->status == 404 ? "the bucket does not exist"
                      : r->status == 0   ? "the endpoint is unreachable"
                      : r->status == 400
                          ? "the request was refused as malformed: check AWS_REGION (R2 uses "
                            "\"auto\") and the endpoint"
                          : "the bucket check failed";
    l = cap_log_begin(CAP_LOG_ERROR, "storage.unavailable");
    cap_log_str(l, "kind", st->label);
    cap_log_str(l, "bucket", st->conf.bucket);
    cap_log_str(l, "endpoint", st->conf.endpoint);
    cap_log_str(l, "reason", why);
    cap_log_int(l, "status", r->status);
    cap_log_str(l, "code", r->err_code);
    cap_log_str(l, "message", r->err_msg);
    cap_log_end(l);
  }
  cap_s3_req_free(r, free_req);
}

/* Parses "2026-11-25T15:16:29.000Z" into seconds since the epoch. */
static time_t parse_iso(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof(tm));
  if (sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
             &tm.tm_sec) != 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return timegm(&tm);
}

static struct cap_refused_abort *find_refused(struct cap_storage *st, const char *key,
                                              const char *upload_id) {
  for (size_t i = 0; i < st->nrefused; i++)
    if (strcmp(st->refused[i].upload_id, upload_id) == 0 && strcmp(st->refused[i].key, key) == 0)
      return &st->refused[i];
  return NULL;
}

static void forget_refused(struct cap_storage *st, struct cap_refused_abort *e) {
  free(e->key);
  free(e->upload_id);
  *e = st->refused[--st->nrefused];
  memset(&st->refused[st->nrefused], 0, sizeof(st->refused[0]));
}

/* An abort the store refused (403, 405, ...) is not sent again: the same
 * request with the same credentials gets the same answer, and retrying it
 * for ever only fills the log.  It is logged and counted once, and
 * remembered so that the orphan sweep leaves the upload alone for
 * orphan_age_s, after which it tries once more (the permission may have
 * been granted meanwhile). */
static void abort_refused(struct cap_storage *st, const struct cap_s3_req *r, const char *key,
                          const char *upload_id, const char *reason) {
  struct cap_refused_abort *e = find_refused(st, key, upload_id);
  if (e == NULL) {
    if (st->nrefused == CAP_STORAGE_REFUSED_MAX) {
      /* Memory stays bounded: the oldest refusal makes room. */
      size_t oldest = 0;
      for (size_t i = 1; i < st->nrefused; i++)
        if (st->refused[i].at_ms < st->refused[oldest].at_ms)
          oldest = i;
      forget_refused(st, &st->refused[oldest]);
    }
    e = &st->refused[st->nrefused++];
    e->key = xstrdup(key);
    e->upload_id = xstrdup(upload_id);
  }
  e->at_ms = uv_now(st->loop);
  cap_metrics_inc(CAP_M_STORAGE_ABORT_REFUSALS, CAP_LABELS(reason));
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_WARN, "storage.abort_refused");
  cap_log_str(l, "key", key);
  cap_log_str(l, "upload_id", upload_id);
  cap_log_str(l, "reason", reason);
  cap_log_int(l, "status", r->status);
  if (r->err_code[0])
    cap_log_str(l, "code", r->err_code);
  if (r->err_msg[0])
    cap_log_str(l, "message", r->err_msg);
  if (r->status == 403)
    cap_log_str(l, "hint",
                "the credentials may not abort multipart uploads "
                "(s3:AbortMultipartUpload)");
  /* Without periodic sweeps only the next start tries it again. */
  if (st->cfg->orphan_sweep_s > 0)
    cap_log_int(l, "sweep_after_s", st->cfg->orphan_age_s);
  cap_log_end(l);
}

/* Returns 1 while the store's refusal to abort this upload is younger than
 * orphan_age_s, so that the sweep does not send the same abort every cycle;
 * an older refusal is forgotten and the sweep tries again. */
static int refused_recently(struct cap_storage *st, const char *key, const char *upload_id) {
  struct cap_refused_abort *e = find_refused(st, key, upload_id);
  if (e == NULL)
    return 0;
  if (uv_now(st->loop) - e->at_ms < (uint64_t)st->cfg->orphan_age_s * 1000)
    return 1;
  forget_refused(st, e);
  return 0;
}

/* Whether a failed abort is the store refusing it, not an outage: 404
 * means the upload is gone, and 5xx, 429 and network errors may pass. */
static int is_refusal(const struct cap_s3_req *r) {
  return !cap_s3_ok(r) && r->status != 404 && !cap_s3_transient(r);
}

static void on_abort_done(struct cap_s3_req *r) {
  struct cap_storage *st = r->data;
  if (is_refusal(r)) {
    abort_refused(st, r, r->key, r->query[0].value, "orphan");
    free((char *)r->query[0].value);
    cap_s3_req_free(r, free_req);
    return;
  }
  /* Anything else that failed is tried again by the next sweep. */
  struct cap_log_rec *l =
      cap_log_begin(cap_s3_ok(r) ? CAP_LOG_INFO : CAP_LOG_WARN, "storage.orphan_aborted");
  cap_log_str(l, "key", r->key);
  cap_log_bool(l, "ok", cap_s3_ok(r));
  if (!cap_s3_ok(r))
    cap_log_str(l, "code", r->err_code);
  cap_log_end(l);
  if (cap_s3_ok(r)) {
    st->orphans_aborted++;
    cap_metrics_inc(CAP_M_STORAGE_MULTIPART_ABORTS, CAP_LABELS("orphan"));
  }
  free((char *)r->query[0].value);
  cap_s3_req_free(r, free_req);
}

/* key: without the prefix. */
static void abort_orphan(struct cap_storage *st, const char *key, const char *id) {
  struct cap_s3_req *r = new_req(st);
  r->method = "DELETE";
  r->key = xstrdup(key);
  r->query[0].name = "uploadId";
  r->query[0].value = xstrdup(id);
  r->nquery = 1;
  r->done = on_abort_done;
  cap_s3_start(r);
}

/* One upload of a ListMultipartUploads answer: its key without the
 * storage prefix (requests and refusals name keys that way), its id, and
 * when it began (whole seconds). */
struct listed_upload {
  const char *rel;
  const char *id;
  time_t initiated;
};

/* Calls fn(st, u, arg) for each upload the listing r holds; returns how
 * many it held. */
static int each_upload(struct cap_storage *st, const struct cap_s3_req *r,
                       void (*fn)(struct cap_storage *st, const struct listed_upload *u, void *arg),
                       void *arg) {
  size_t pl = strlen(st->conf.prefix);
  const char *p = r->resp.data, *end = p ? p + r->resp.len : NULL;
  int seen = 0;
  while (p && (p = strstr(p, "<Upload>")) != NULL) {
    const char *close = strstr(p, "</Upload>");
    if (close == NULL)
      break;
    char key[1100], id[512], initiated[64];
    size_t len = (size_t)(close - p);
    if (cap_s3_xml_text(p, len, "Key", key, sizeof(key)) == 0 &&
        cap_s3_xml_text(p, len, "UploadId", id, sizeof(id)) == 0 &&
        cap_s3_xml_text(p, len, "Initiated", initiated, sizeof(initiated)) == 0) {
      seen++;
      struct listed_upload u = {.rel = strncmp(key, st->conf.prefix, pl) == 0 ? key + pl : key,
                                .id = id,
                                .initiated = parse_iso(initiated)};
      fn(st, &u, arg);
    }
    p = close;
    if (p >= end)
      break;
  }
  return seen;
}

static void sweep_upload(struct cap_storage *st, const struct listed_upload *u, void *arg) {
  time_t cutoff = *(const time_t *)arg;
  if (u->initiated > 0 && u->initiated < cutoff && !refused_recently(st, u->rel, u->id))
    abort_orphan(st, u->rel, u->id);
}

static void on_list_done(struct cap_s3_req *r) {
  struct cap_storage *st = r->data;
  st->sweep_running = 0;
  if (!cap_s3_ok(r)) {
    log_outcome("storage.sweep_failed", r, CAP_LOG_WARN);
    cap_s3_req_free(r, free_req);
    return;
  }
  time_t cutoff = time(NULL) - st->cfg->orphan_age_s;
  int seen = each_upload(st, r, sweep_upload, &cutoff);
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "storage.sweep");
  cap_log_int(l, "uploads_open", seen);
  cap_log_end(l);
  cap_s3_req_free(r, free_req);
}

static void schedule_retries(struct cap_storage *st);

/* Queues an abort of key's upload id, sent by the retry timer and retried
 * with growing delays until the store says it is gone. */
static void queue_abort(struct cap_storage *st, const char *key, const char *upload_id) {
  struct cap_pending_abort *p = xcalloc(1, sizeof(*p));
  p->key = xstrdup(key);
  p->upload_id = xstrdup(upload_id);
  p->next = st->pending;
  st->pending = p;
  schedule_retries(st);
}

static void recover_upload(struct cap_storage *st, const struct listed_upload *u, void *arg) {
  const struct st_req *q = arg;
  int match = q->match_prefix ? strncmp(u->rel, q->match, strlen(q->match)) == 0
                              : strcmp(u->rel, q->match) == 0;
  /* Initiated has whole seconds (the fraction, when sent, is dropped): an
   * upload begun in the second this process started may be a dead job's,
   * and is taken for one.  A new job's upload of the same key within its
   * first second is not a case that arises: an upload is multipart only
   * past a part's worth of output. */
  if (!match || u->initiated <= 0 || u->initiated > q->before)
    return;
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "storage.recover_abort");
  cap_log_str(l, "key", u->rel);
  cap_log_end(l);
  queue_abort(st, u->rel, u->id);
}

static void on_recover_list_done(struct cap_s3_req *r) {
  struct cap_storage *st = r->data;
  if (!cap_s3_ok(r))
    /* The orphan sweep finds these uploads later. */
    log_outcome("storage.recover_list_failed", r, CAP_LOG_WARN);
  else
    each_upload(st, r, recover_upload, r);
  free((char *)r->query[1].value);
  cap_s3_req_free(r, free_req);
}

void cap_storage_recover_uploads(struct cap_storage *st, const char *key, int prefix,
                                 const char *upload_id, time_t before) {
  if (st->kind != CAP_STORAGE_S3)
    return;
  if (upload_id && upload_id[0])
    queue_abort(st, key, upload_id);
  struct cap_s3_req *r = new_req(st);
  struct st_req *q = (struct st_req *)r;
  q->match = xstrdup(key);
  q->match_prefix = prefix;
  q->before = before;
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_puts(&b, st->conf.prefix);
  cap_buf_puts(&b, key);
  r->method = "GET";
  r->query[0].name = "uploads";
  r->query[0].value = "";
  r->query[1].name = "prefix";
  r->query[1].value = cap_buf_steal(&b);
  r->nquery = 2;
  r->resp_max = 8 << 20;
  r->done = on_recover_list_done;
  cap_s3_start(r);
}

static void on_deferred_abort_done(struct cap_s3_req *r) {
  struct cap_storage *st = r->data;
  /* 404: the upload is gone already (aborted or completed meanwhile). */
  int gone = cap_s3_ok(r) || r->status == 404;
  int refused = is_refusal(r);
  if (refused) {
    abort_refused(st, r, r->key, r->query[0].value, "deferred");
  } else {
    struct cap_log_rec *l =
        cap_log_begin(gone ? CAP_LOG_INFO : CAP_LOG_WARN, "storage.abort_retry");
    cap_log_str(l, "key", r->key);
    cap_log_bool(l, "ok", gone);
    if (!gone)
      cap_log_str(l, "code", r->err_code);
    cap_log_end(l);
  }
  if (cap_s3_ok(r))
    cap_metrics_inc(CAP_M_STORAGE_MULTIPART_ABORTS, CAP_LABELS("deferred"));
  if (!gone && !refused) {
    struct cap_pending_abort *p = xcalloc(1, sizeof(*p));
    p->key = xstrdup(r->key);
    p->upload_id = xstrdup(r->query[0].value);
    p->next = st->pending;
    st->pending = p;
    st->retry_delay_ms =
        st->retry_delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : st->retry_delay_ms * 2;
    schedule_retries(st);
  } else if (st->pending == NULL) {
    st->retry_delay_ms = RETRY_FIRST_MS;
  }
  free((char *)r->query[0].value);
  cap_s3_req_free(r, free_req);
}

static void on_retry_timer(uv_timer_t *t) {
  struct cap_storage *st = t->data;
  struct cap_pending_abort *p = st->pending;
  st->pending = NULL;
  while (p) {
    struct cap_pending_abort *next = p->next;
    struct cap_s3_req *r = new_req(st);
    r->method = "DELETE";
    r->key = p->key; /* Handed over. */
    r->query[0].name = "uploadId";
    r->query[0].value = p->upload_id;
    r->nquery = 1;
    r->done = on_deferred_abort_done;
    cap_s3_start(r);
    free(p);
    p = next;
  }
}

static void schedule_retries(struct cap_storage *st) {
  if (st->retry_timer_open && !uv_is_active((uv_handle_t *)&st->retry_timer))
    uv_timer_start(&st->retry_timer, on_retry_timer, st->retry_delay_ms, 0);
}

static void on_abort_failed(struct cap_s3 *s3, const struct cap_s3_req *r, const char *key,
                            const char *upload_id, const char *reason) {
  struct cap_storage *st = s3->owner;
  if (is_refusal(r)) {
    abort_refused(st, r, key, upload_id, reason);
    return;
  }
  struct cap_pending_abort *p = xcalloc(1, sizeof(*p));
  p->key = xstrdup(key);
  p->upload_id = xstrdup(upload_id);
  p->next = st->pending;
  st->pending = p;
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_WARN, "storage.abort_deferred");
  cap_log_str(l, "key", key);
  cap_log_int(l, "retry_in_ms", (long long)st->retry_delay_ms);
  cap_log_end(l);
  schedule_retries(st);
}

static void sweep(struct cap_storage *st) {
  if (st->sweep_running)
    return;
  struct cap_s3_req *r = new_req(st);
  r->method = "GET";
  r->query[0].name = "uploads";
  r->query[0].value = "";
  r->query[1].name = "prefix";
  r->query[1].value = st->conf.prefix;
  r->nquery = st->conf.prefix[0] ? 2 : 1;
  r->resp_max = 8 << 20;
  r->done = on_list_done;
  st->sweep_running = 1;
  cap_s3_start(r);
}

static void on_sweep_timer(uv_timer_t *t) {
  sweep(t->data);
}

void cap_storage_start(struct cap_storage *st) {
  if (st->kind != CAP_STORAGE_S3)
    return;
  struct cap_s3_req *r = new_req(st);
  r->method = "HEAD";
  r->done = on_head_done;
  cap_s3_start(r);
  int rc = cap_inputsrv_start(&st->insrv, st->loop, &st->s3);
  if (rc < 0) {
    /* Inputs are downloaded whole instead; the job says so. */
    struct cap_log_rec *l = cap_log_begin(CAP_LOG_WARN, "input.listen_failed");
    cap_log_str(l, "error", uv_strerror(rc));
    cap_log_end(l);
  }
  sweep(st);
  uint64_t every = (uint64_t)st->cfg->orphan_sweep_s * 1000;
  if (every)
    uv_timer_start(&st->sweep_timer, on_sweep_timer, every, every);
}

void cap_storage_stop(struct cap_storage *st) {
  if (st->kind != CAP_STORAGE_S3)
    return;
  if (st->sweep_timer_open) {
    uv_close((uv_handle_t *)&st->sweep_timer, NULL);
    st->sweep_timer_open = 0;
  }
  if (st->retry_timer_open) {
    uv_close((uv_handle_t *)&st->retry_timer, NULL);
    st->retry_timer_open = 0;
  }
  cap_inputsrv_stop(&st->insrv, NULL);
  while (own_reqs) {
    struct st_req *q = own_reqs;
    if (q->r.nquery && (q->r.done == on_abort_done || q->r.done == on_deferred_abort_done))
      free((char *)q->r.query[0].value);
    own_reqs = q->next;
    if (own_reqs)
      own_reqs->prev = NULL;
    q->next = q->prev = NULL;
    /* Unlinked already: free the memory when its timer (if any) has closed. */
    cap_s3_req_cancel(&q->r, free_unlinked);
  }
}

void cap_storage_free(struct cap_storage *st) {
  struct cap_s3_conf *c = &st->conf;
  free(st->label);
  free(st->file_root);
  free(c->endpoint);
  free(c->bucket);
  free(c->prefix);
  free(c->region);
  free(c->access_key);
  if (c->secret_key) {
    memset(c->secret_key, 0, strlen(c->secret_key));
    free(c->secret_key);
  }
  if (st->kind == CAP_STORAGE_S3)
    cap_bufpool_free(&st->pool);
  while (st->pending) {
    /* Still open at exit: the orphan sweep of a later start aborts them. */
    struct cap_pending_abort *p = st->pending;
    st->pending = p->next;
    free(p->key);
    free(p->upload_id);
    free(p);
  }
  while (st->nrefused)
    forget_refused(st, &st->refused[st->nrefused - 1]);
  memset(st, 0, sizeof(*st));
}

void cap_storage_health(const struct cap_storage *st, struct cap_buf *out) {
  cap_buf_puts(out, "{\"kind\":");
  cap_jsonw_str(out, st->label, strlen(st->label));
  if (st->kind == CAP_STORAGE_S3) {
    cap_buf_puts(out, ",\"bucket\":");
    cap_jsonw_str(out, st->conf.bucket, strlen(st->conf.bucket));
    cap_buf_puts(out, ",\"prefix\":");
    cap_jsonw_str(out, st->conf.prefix, strlen(st->conf.prefix));
    cap_buf_printf(out, ",\"part_size\":%zu,\"buffers_in_use\":%zu,\"buffers_max\":%zu",
                   st->pool.part_size, st->pool.used, st->pool.max);
  }
  cap_buf_putc(out, '}');
}
