#include "exchange.h"

#include "httpresp.h"

#include <assert.h>
#include <string.h>

void cap_exchange_init(struct cap_exchange *x) {
  memset(x, 0, sizeof(*x));
  cap_buf_init(&x->headers);
  cap_buf_init(&x->body);
}

void cap_exchange_reset(struct cap_exchange *x) {
  x->req = NULL;
  x->route = NULL;
  x->req_id[0] = '\0';
  x->client[0] = '\0';
  x->token_name = NULL;
  x->head_only = 0;
  x->start_ms = 0;
  x->status = 0;
  x->code = NULL;
  x->content_type = NULL;
  cap_buf_reset(&x->headers);
  cap_buf_reset(&x->body);
  x->close_after = 0;
  x->finished = 0;
  x->abort_cb = NULL;
  x->handler_data = NULL;
}

void cap_exchange_free(struct cap_exchange *x) {
  cap_buf_free(&x->headers);
  cap_buf_free(&x->body);
}

void cap_exchange_header(struct cap_exchange *x, const char *name, const char *value) {
  cap_buf_puts(&x->headers, name);
  cap_buf_append(&x->headers, ": ", 2);
  cap_buf_puts(&x->headers, value);
  cap_buf_append(&x->headers, "\r\n", 2);
}

/* Both the table's rows and the legacy string form end here. */
static void set_error(struct cap_exchange *x, int status, const char *code, const char *msg) {
  x->status = status;
  x->code = code;
  cap_buf_reset(&x->body);
  cap_httpresp_error_json(&x->body, msg, code);
}

void cap_exchange_set_error(struct cap_exchange *x, enum cap_err e, const char *msg) {
  assert(cap_err_code(e) != NULL);
  set_error(x, cap_err_status(e), cap_err_code(e), msg ? msg : cap_err_message(e));
}

static void finish(struct cap_exchange *x) {
  assert(!x->finished);
  x->finished = 1;
  x->abort_cb = NULL;
  if (x->finish_cb)
    x->finish_cb(x);
}

void cap_exchange_reply(struct cap_exchange *x, int status, const char *json, size_t len) {
  x->status = status;
  cap_buf_reset(&x->body);
  cap_buf_append(&x->body, json, len);
  finish(x);
}

void cap_exchange_send(struct cap_exchange *x, int status) {
  x->status = status;
  finish(x);
}

void cap_exchange_fail(struct cap_exchange *x, enum cap_err e, const char *msg) {
  cap_exchange_set_error(x, e, msg);
  finish(x);
}
