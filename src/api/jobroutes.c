#include "jobroutes.h"

#include "app.h"
#include "errcode.h"
#include "exchange.h"
#include "jobjson.h"
#include "jobs.h"
#include "jobwait.h"

#include <llhttp.h>
#include <string.h>

#define PREFIX "/jobs/"

/* Finds the job the path names, if the caller's token owns it; else
 * answers 404 and returns NULL. */
static struct cap_job *lookup(struct cap_exchange *x) {
  const struct cap_request *req = x->req;
  size_t plen = strlen(PREFIX);
  size_t idlen = req->path_len - plen;
  char id[CAP_JOB_ID_LEN + 1];
  struct cap_job *j = NULL;

  if (idlen == CAP_JOB_ID_LEN) {
    memcpy(id, cap_request_url(req) + plen, idlen);
    id[idlen] = '\0';
    j = cap_jobs_find(&x->app->jobs, id);
  }
  /* Another token's job is answered exactly like a missing one. */
  if (j == NULL || x->token_name == NULL || strcmp(j->owner, x->token_name) != 0) {
    cap_exchange_fail(x, CAP_E_JOB_NOT_FOUND, NULL);
    return NULL;
  }
  return j;
}

static void reply_state(struct cap_exchange *x, struct cap_job *j, int timed_out) {
  cap_buf_reset(&x->body);
  cap_jobjson_job(j, &x->body);
  cap_jobs_note_delivered(&x->app->jobs, j);
  cap_exchange_send(x, 200);
}

/* Parses wait=N from the query.  Returns N (capped), 0 when absent, -1 when bad. */
static int query_wait(const struct cap_exchange *x) {
  size_t qlen;
  const char *q = cap_request_query(x->req, &qlen);
  for (size_t i = 0; q && i < qlen;) {
    size_t end = i;
    while (end < qlen && q[end] != '&')
      end++;
    if (end - i > 5 && memcmp(q + i, "wait=", 5) == 0) {
      long n = 0;
      for (size_t k = i + 5; k < end; k++) {
        if (q[k] < '0' || q[k] > '9' || n > 100000)
          return -1;
        n = n * 10 + (q[k] - '0');
      }
      return n > x->app->cfg->wait_max_s ? x->app->cfg->wait_max_s : (int)n;
    }
    i = end + 1;
  }
  return 0;
}

void cap_jobroutes_get(struct cap_exchange *x) {
  struct cap_job *j = lookup(x);
  if (j == NULL)
    return;
  int wait = query_wait(x);
  if (wait < 0) {
    cap_exchange_fail(x, CAP_E_INVALID_FIELD, "wait must be a whole number of seconds");
    return;
  }
  cap_jobwait_start(x, j, wait, reply_state, 0);
}

void cap_jobroutes_delete(struct cap_exchange *x) {
  struct cap_job *j = lookup(x);
  if (j == NULL)
    return;
  if (cap_job_done(j)) {
    /* The answer carries the job as it ended, so it writes its own body;
     * the code, message and status come from the table. */
    x->code = cap_err_code(CAP_E_JOB_FINISHED);
    cap_buf_reset(&x->body);
    cap_buf_printf(&x->body, "{\"error\":\"%s\",\"code\":\"%s\",\"job\":",
                   cap_err_message(CAP_E_JOB_FINISHED), x->code);
    cap_jobjson_job(j, &x->body);
    cap_jobs_note_delivered(&x->app->jobs, j);
    cap_buf_putc(&x->body, '}');
    cap_exchange_send(x, cap_err_status(CAP_E_JOB_FINISHED));
    return;
  }
  cap_job_cancel(j, CAP_E_CANCELED);
  reply_state(x, j, 0);
}

void cap_jobroutes_handle(struct cap_exchange *x) {
  if (x->req->method == HTTP_DELETE)
    cap_jobroutes_delete(x);
  else
    cap_jobroutes_get(x);
}
