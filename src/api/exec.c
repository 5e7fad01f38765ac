#include "exec.h"

#include "alloc.h"
#include "app.h"
#include "callback.h"
#include "errcode.h"
#include "exchange.h"
#include "execreq.h"
#include "jobjson.h"
#include "jobs.h"
#include "jobwait.h"
#include "keypolicy.h"
#include "preset.h"
#include "store.h"
#include "whsecret.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* When a class queue is full, clients are told to come back this much later. */
#define QUEUE_FULL_RETRY_S 10

/* Answers for a job: its result or error when it has ended, else 202 with
 * where to poll. */
static void reply_job(struct cap_exchange *x, struct cap_job *j, int timed_out) {
  cap_buf_reset(&x->body);
  if (!cap_job_done(j)) {
    char loc[64];
    snprintf(loc, sizeof(loc), "/jobs/%s", j->id);
    cap_exchange_header(x, "Location", loc);
    cap_jobjson_accepted(j, &x->body);
    cap_exchange_send(x, 202);
    return;
  }
  cap_jobs_note_delivered(&x->app->jobs, j);
  if (j->state == CAP_JOB_SUCCEEDED) {
    cap_jobjson_result(j, &x->body);
    cap_exchange_send(x, 200);
    return;
  }
  /* A failed or canceled job always holds its error; a job without one
   * would be a bug, answered as such. */
  enum cap_err e = j->err != CAP_E_NONE ? j->err : CAP_E_INTERNAL;
  x->code = cap_err_code(e);
  cap_jobjson_error(j, &x->body);
  cap_exchange_send(x, cap_err_status(e));
}

/* The digest that tells whether a retry with the same idempotency key is
 * the same request. */
static void body_hash(const struct cap_execreq *r, unsigned char out[32]) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  const char *parts[] = {cap_execreq_capabilities[r->capability], r->input_key,
                         r->output_key ? r->output_key : "", r->preset ? r->preset : "",
                         r->output_prefix ? r->output_prefix : ""};
  unsigned int len = 32;
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  for (size_t i = 0; i < 5; i++)
    EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1); /* NUL separates fields. */
  EVP_DigestFinal_ex(ctx, out, &len);
  EVP_MD_CTX_free(ctx);
}

/* Reads "Prefer: wait=N".  Returns N, or -1 when absent or unusable. */
static int prefer_wait(const struct cap_request *req) {
  size_t len;
  const char *v = cap_request_header(req, "prefer", &len);
  for (size_t i = 0; v && i + 5 <= len; i++) {
    if (strncasecmp(v + i, "wait=", 5) != 0 || (i > 0 && v[i - 1] != ' ' && v[i - 1] != ','))
      continue;
    long n = 0;
    size_t k = i + 5;
    if (k >= len || v[k] < '0' || v[k] > '9')
      return -1;
    while (k < len && v[k] >= '0' && v[k] <= '9' && n < 100000)
      n = n * 10 + (v[k++] - '0');
    return (int)n;
  }
  return -1;
}

/* Reads the body into r.  Returns 0, or answers the exchange and returns
 * -1; r is to be freed either way. */
static int parse(struct cap_exchange *x, struct cap_execreq *r) {
  const struct cap_request *req = x->req;
  enum cap_err code = CAP_E_NONE;
  char msg[256];

  if (cap_execreq_parse(r, req->body.data ? req->body.data : "", req->body.len, &code, msg,
                        sizeof(msg)) == 0)
    return 0;
  cap_exchange_fail(x, code, msg);
  return -1;
}

/* The Idempotency-Key header: sane, the same as the body's field if both
 * are given, and copied into r when only the header is.  Returns 0 or
 * answers the exchange and returns -1. */
static int check_idempotency_key(struct cap_exchange *x, struct cap_execreq *r) {
  size_t len;
  const char *idem = cap_request_header(x->req, "idempotency-key", &len);

  if (idem == NULL)
    return 0;
  if (len == 0 || len > CAP_IDEMPOTENCY_KEY_MAX) {
    cap_exchange_fail(x, CAP_E_INVALID_FIELD, "Idempotency-Key must be 1 to 255 bytes");
    return -1;
  }
  if (r->idempotency_key &&
      (strlen(r->idempotency_key) != len || memcmp(r->idempotency_key, idem, len) != 0)) {
    cap_exchange_fail(x, CAP_E_INVALID_FIELD,
                      "Idempotency-Key header and idempotency_key field differ");
    return -1;
  }
  if (r->idempotency_key == NULL)
    r->idempotency_key = xstrndup(idem, len);
  return 0;
}

/* The keys against the store's rules and the token's prefixes.  Returns 0
 * or answers the exchange and returns -1. */
static int check_keys(struct cap_exchange *x, const struct cap_execreq *r) {
  struct cap_app *app = x->app;

  const char *out = r->output_key ? r->output_key : r->output_prefix;
  if (cap_store_key_reserved(r->input_key) || (out && cap_store_key_reserved(out))) {
    cap_exchange_fail(x, CAP_E_INVALID_KEY, "Keys must not name the store's temp directory");
    return -1;
  }
  if (out && !cap_objstore_output_key_usable(&app->objstore, out)) {
    cap_exchange_fail(x, CAP_E_INVALID_KEY,
                      r->output_key ? "output_key cannot be stored here (a segment over 255 bytes, "
                                      "or the store's temp directory)"
                                    : "output_prefix cannot be used here (a segment over 255 "
                                      "bytes, or the store's temp directory)");
    return -1;
  }
  /* Every key of a package starts with its prefix, so a prefix the token
   * may write under covers them all. */
  if (!cap_keypolicy_allows(app->keypolicy, x->token_name, 0, r->input_key) ||
      (out && !cap_keypolicy_allows(app->keypolicy, x->token_name, 1, out))) {
    cap_exchange_fail(x, CAP_E_KEY_FORBIDDEN, NULL);
    return -1;
  }
  return 0;
}

/* The callback_url against the operator's policy (https, no user name, a
 * listed host, no private IP literal) and the token's webhook secret,
 * without which a delivery could not be signed.  Returns 0 or answers the
 * exchange and returns -1. */
static int check_callback(struct cap_exchange *x, const struct cap_execreq *r) {
  struct cap_app *app = x->app;
  char why[400];

  if (r->callback_url == NULL)
    return 0;
  if (cap_callback_check_url(&app->callback, r->callback_url, why, sizeof(why)) != 0) {
    cap_exchange_fail(x, CAP_E_CALLBACK_FORBIDDEN, why);
    return -1;
  }
  if (cap_whsecret_find(&app->whsecrets, x->token_name) == NULL) {
    cap_exchange_fail(x, CAP_E_CALLBACK_FORBIDDEN,
                      "This token has no webhook secret, so callbacks could not be signed; ask "
                      "the operator to add one to webhook_secrets_file");
    return -1;
  }
  return 0;
}

/* A render's preset: known, and able to run here.  Returns 0 or answers
 * the exchange and returns -1. */
static int check_preset(struct cap_exchange *x, const struct cap_execreq *r) {
  char msg[256];

  if (r->capability != CAP_CAP_FFMPEG_RENDER)
    return 0;
  const struct cap_preset *p = cap_preset_find(x->app->jobs.presets, r->preset);
  if (p == NULL) {
    snprintf(msg, sizeof(msg), "Unknown preset \"%.64s\"", r->preset);
    cap_exchange_fail(x, CAP_E_UNKNOWN_PRESET, msg);
    return -1;
  }
  if (!p->available) {
    snprintf(msg, sizeof(msg), "Preset %s is unavailable here: %s", p->name,
             p->unavailable_reason ? p->unavailable_reason : "unknown reason");
    cap_exchange_fail(x, CAP_E_PRESET_UNAVAILABLE, msg);
    return -1;
  }
  if (p->ladder && r->output_key) {
    snprintf(msg, sizeof(msg),
             "Preset %s writes a package of many objects: give output_prefix, not output_key",
             p->name);
    cap_exchange_fail(x, CAP_E_INVALID_FIELD, msg);
    return -1;
  }
  if (!p->ladder && r->output_prefix) {
    snprintf(msg, sizeof(msg), "Preset %s writes one object: give output_key, not output_prefix",
             p->name);
    cap_exchange_fail(x, CAP_E_INVALID_FIELD, msg);
    return -1;
  }
  return 0;
}

/* Checks what only the server knows: idempotency key header, keys,
 * presets, the callback, and whether it still takes jobs.  Returns 0 or answers the
 * exchange and returns -1. */
static int check(struct cap_exchange *x, struct cap_execreq *r) {
  if (check_idempotency_key(x, r) != 0 || check_keys(x, r) != 0 || check_preset(x, r) != 0 ||
      check_callback(x, r) != 0)
    return -1;
  if (x->app->draining) {
    cap_exchange_header(x, "Retry-After", "30");
    cap_exchange_fail(x, CAP_E_DRAINING, NULL);
    return -1;
  }
  return 0;
}

static int wait_seconds(struct cap_exchange *x, const struct cap_execreq *r) {
  const struct cap_config *cfg = x->app->cfg;
  int wait = r->wait_s >= 0 ? r->wait_s : prefer_wait(x->req);
  if (wait < 0)
    wait = cfg->wait_default_s;
  if (wait > cfg->wait_max_s)
    wait = cfg->wait_max_s;
  return r->async ? 0 : wait;
}

/* A retry with an idempotency key already used: the same request waits
 * for the job it made then, a different one is a conflict. */
static void join_earlier(struct cap_exchange *x, struct cap_job *old, const unsigned char hash[32],
                         int wait) {
  if (memcmp(old->body_hash, hash, 32) != 0) {
    cap_exchange_fail(x, CAP_E_IDEMPOTENCY_CONFLICT, NULL);
    return;
  }
  cap_jobwait_start(x, old, wait, reply_job, x->app->cfg->cancel_on_disconnect);
}

/* Returns 1 when the store knows already that r's input is missing.  A
 * missing input is answered then, before a job or a child exists (the
 * file store looks; in S3 the job's download finds out, still before any
 * child starts). */
static int input_missing(struct cap_app *app, const struct cap_execreq *r) {
  return cap_objstore_precheck(&app->objstore, r->input_key) == CAP_STORAGE_E_NOT_FOUND;
}

/* Answers 429 queue_full for the job j that its class's queue has no room
 * for, and frees j. */
static void reply_queue_full(struct cap_exchange *x, struct cap_job *j) {
  struct cap_pool_class *c = cap_pool_find(&x->app->jobs.pool, j->cls);
  char retry[16];
  snprintf(retry, sizeof(retry), "%d", QUEUE_FULL_RETRY_S);
  cap_exchange_header(x, "Retry-After", retry);
  cap_buf_reset(&x->body);
  x->code = cap_err_code(CAP_E_QUEUE_FULL);
  cap_buf_printf(&x->body,
                 "{\"error\":\"The %s queue is full\",\"code\":\"%s\",\"queue_depth\":%zu}", j->cls,
                 x->code, c ? c->queued : 0);
  cap_job_free(j);
  cap_exchange_send(x, cap_err_status(CAP_E_QUEUE_FULL));
}

/* Hands the new job j to the table and waits for it, or answers why the
 * table has no room (and frees j). */
static void submit(struct cap_exchange *x, struct cap_job *j, int wait) {
  struct cap_app *app = x->app;
  int rc = cap_jobs_submit(&app->jobs, j);
  if (rc == -EAGAIN) {
    reply_queue_full(x, j);
    return;
  }
  if (rc != 0) {
    cap_job_free(j);
    cap_exchange_fail(x, CAP_E_TOO_MANY_JOBS, NULL);
    return;
  }
  cap_jobwait_start(x, j, wait, reply_job, app->cfg->cancel_on_disconnect);
}

void cap_exec_handle(struct cap_exchange *x) {
  struct cap_app *app = x->app;
  struct cap_execreq r;
  unsigned char hash[32];

  if (parse(x, &r) != 0 || check(x, &r) != 0) {
    cap_execreq_free(&r);
    return;
  }
  int wait = wait_seconds(x, &r);
  body_hash(&r, hash);

  struct cap_job *old =
      r.idempotency_key ? cap_jobs_find_idem(&app->jobs, x->token_name, r.idempotency_key) : NULL;
  if (old) {
    cap_execreq_free(&r);
    join_earlier(x, old, hash, wait);
    return;
  }
  /* Two packages under one prefix would overwrite each other's segments,
   * and a failed one would delete the other's.  A retry with the same
   * idempotency key has joined its job above. */
  struct cap_job *holder =
      r.output_prefix ? cap_jobs_prefix_holder(&app->jobs, r.output_prefix) : NULL;
  if (holder) {
    char msg[300];
    snprintf(msg, sizeof(msg),
             "Job %s is writing under %.200s; wait for it to end or use another prefix", holder->id,
             holder->output_prefix);
    cap_execreq_free(&r);
    cap_exchange_fail(x, CAP_E_PREFIX_BUSY, msg);
    return;
  }
  if (input_missing(app, &r)) {
    cap_execreq_free(&r);
    cap_exchange_fail(x, CAP_E_INPUT_NOT_FOUND, NULL);
    return;
  }
  struct cap_job *j = cap_job_new(&app->jobs, &r, x->token_name, x->req_id);
  memcpy(j->body_hash, hash, sizeof(hash));
  cap_execreq_free(&r);
  submit(x, j, wait);
}
