#include "exec.h"

#include "alloc.h"
#include "app.h"
#include "exchange.h"
#include "execreq.h"
#include "jobjson.h"
#include "jobs.h"
#include "jobwait.h"
#include "keypolicy.h"
#include "preset.h"
#include "store.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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
  x->code = j->err_code;
  cap_jobjson_error(j, &x->body);
  cap_exchange_send(x, j->http_status ? j->http_status : 500);
}

/* The digest that tells whether a retry with the same idempotency key is
 * the same request. */
static void body_hash(const struct cap_execreq *r, unsigned char out[32]) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  const char *parts[] = {cap_execreq_capabilities[r->capability], r->input_key,
                         r->output_key ? r->output_key : "", r->preset ? r->preset : ""};
  unsigned int len = 32;
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  for (size_t i = 0; i < 4; i++)
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

/* Checks what only the server knows: policies, presets, idempotency key
 * header.  Returns 0 or answers the exchange and returns -1. */
static int check(struct cap_exchange *x, struct cap_execreq *r) {
  struct cap_app *app = x->app;
  size_t len;
  const char *idem = cap_request_header(x->req, "idempotency-key", &len);

  if (idem) {
    if (len == 0 || len > CAP_IDEMPOTENCY_KEY_MAX) {
      cap_exchange_reply_error(x, 400, "invalid_field", "Idempotency-Key must be 1 to 255 bytes");
      return -1;
    }
    if (r->idempotency_key &&
        (strlen(r->idempotency_key) != len || memcmp(r->idempotency_key, idem, len) != 0)) {
      cap_exchange_reply_error(x, 400, "invalid_field",
                               "Idempotency-Key header and idempotency_key field differ");
      return -1;
    }
    if (r->idempotency_key == NULL)
      r->idempotency_key = xstrndup(idem, len);
  }
  if (cap_store_key_reserved(r->input_key) ||
      (r->output_key && cap_store_key_reserved(r->output_key))) {
    cap_exchange_reply_error(x, 400, "invalid_key",
                             "Keys must not name the store's temp directory");
    return -1;
  }
  if (r->output_key && x->app->storage.kind == CAP_STORAGE_FILE &&
      !cap_store_key_usable(r->output_key)) {
    cap_exchange_reply_error(x, 400, "invalid_key",
                             "output_key cannot be stored here (a segment over 255 bytes, or "
                             "the store's temp directory)");
    return -1;
  }
  if (!cap_keypolicy_allows(app->keypolicy, x->token_name, 0, r->input_key) ||
      (r->output_key && !cap_keypolicy_allows(app->keypolicy, x->token_name, 1, r->output_key))) {
    cap_exchange_reply_error(x, 403, "key_forbidden",
                             "This token may not use that key (see token_prefixes)");
    return -1;
  }
  if (r->capability == CAP_CAP_FFMPEG_RENDER) {
    const struct cap_preset *p = cap_preset_find(app->jobs.presets, r->preset);
    char msg[256];
    if (p == NULL) {
      snprintf(msg, sizeof(msg), "Unknown preset \"%.64s\"", r->preset);
      cap_exchange_reply_error(x, 400, "unknown_preset", msg);
      return -1;
    }
    if (!p->available) {
      snprintf(msg, sizeof(msg), "Preset %s is unavailable here: %s", p->name,
               p->unavailable_reason ? p->unavailable_reason : "unknown reason");
      cap_exchange_reply_error(x, 422, "preset_unavailable", msg);
      return -1;
    }
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

void cap_exec_handle(struct cap_exchange *x) {
  struct cap_app *app = x->app;
  struct cap_execreq r;
  const char *code;
  char msg[256];
  unsigned char hash[32];

  if (cap_execreq_parse(&r, x->req->body.data ? x->req->body.data : "", x->req->body.len, &code,
                        msg, sizeof(msg)) != 0) {
    cap_execreq_free(&r);
    cap_exchange_reply_error(x, 400, code, msg);
    return;
  }
  if (check(x, &r) != 0) {
    cap_execreq_free(&r);
    return;
  }
  if (app->draining) {
    cap_execreq_free(&r);
    cap_exchange_header(x, "Retry-After", "30");
    cap_exchange_reply_error(x, 503, "draining", "This server is shutting down; retry elsewhere");
    return;
  }
  int wait = wait_seconds(x, &r);
  body_hash(&r, hash);

  if (r.idempotency_key) {
    struct cap_job *old = cap_jobs_find_idem(&app->jobs, x->token_name, r.idempotency_key);
    if (old) {
      cap_execreq_free(&r);
      if (memcmp(old->body_hash, hash, sizeof(hash)) != 0) {
        cap_exchange_reply_error(x, 409, "idempotency_conflict",
                                 "This Idempotency-Key was used with a different request");
        return;
      }
      cap_jobwait_start(x, old, wait, reply_job, app->cfg->cancel_on_disconnect);
      return;
    }
  }

  /* A missing input is answered now, before a job or a child exists (in
   * S3 the job's download finds out, still before any child starts). */
  int fd, rc = 0;
  uint64_t size;
  if (app->storage.kind == CAP_STORAGE_FILE)
    rc = cap_store_open_input(&app->store, r.input_key, &fd, &size);
  if (app->storage.kind == CAP_STORAGE_FILE && rc == 0)
    close(fd);
  if (rc == -ENOENT) {
    cap_execreq_free(&r);
    cap_exchange_reply_error(x, 404, "input_not_found", "The input object does not exist");
    return;
  }

  struct cap_job *j = cap_job_new(&app->jobs, &r, x->token_name, x->req_id);
  memcpy(j->body_hash, hash, sizeof(hash));
  cap_execreq_free(&r);
  rc = cap_jobs_submit(&app->jobs, j);
  if (rc == -EAGAIN) {
    struct cap_pool_class *c = cap_pool_find(&app->jobs.pool, j->cls);
    char retry[16];
    snprintf(retry, sizeof(retry), "%d", QUEUE_FULL_RETRY_S);
    cap_exchange_header(x, "Retry-After", retry);
    cap_buf_reset(&x->body);
    x->code = "queue_full";
    cap_buf_printf(&x->body,
                   "{\"error\":\"The %s queue is full\",\"code\":\"queue_full\","
                   "\"queue_depth\":%zu}",
                   j->cls, c ? c->queued : 0);
    cap_job_free(j);
    cap_exchange_send(x, 429);
    return;
  }
  if (rc != 0) {
    cap_job_free(j);
    cap_exchange_reply_error(x, 503, "too_many_jobs", "Too many unfinished jobs; retry later");
    return;
  }
  cap_jobwait_start(x, j, wait, reply_job, app->cfg->cancel_on_disconnect);
}
