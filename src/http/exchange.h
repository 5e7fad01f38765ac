#ifndef CAP_EXCHANGE_H
#define CAP_EXCHANGE_H

#include "buf.h"
#include "errcode.h"
#include "httpparse.h"
#include "netaddr.h"
#include "reqid.h"

#include <stdint.h>

struct cap_app;
struct cap_route;

/* One request and the response being built for it: what a handler gets.
 * The connection owns it and fills the request side; the handler answers
 * through cap_exchange_reply*, now or later (a handler that waits sets
 * abort_cb to hear when the connection goes away first). */
struct cap_exchange {
  struct cap_app *app;
  const struct cap_request *req;
  const struct cap_route *route;
  char req_id[CAP_REQID_MAX + 1];
  char client[CAP_NETADDR_STRLEN]; /* The address rate limits and logs use. */
  const char *token_name;          /* Set once authenticated. */
  int head_only;
  int private_listener; /* Came in on the metrics listener, not the public port. */
  uint64_t start_ms;    /* Loop time when the request's headers were complete. */
  uint64_t start_ns;    /* The same, in uv_hrtime() nanoseconds, for durations. */

  int status;
  const char *code; /* The error code of an error response, for the log (static). */
  const char *content_type;
  struct cap_buf headers; /* Extra header lines, each ending CRLF. */
  struct cap_buf body;
  int close_after; /* The connection must close after this response. */
  int finished;

  void (*finish_cb)(struct cap_exchange *x); /* Set by the connection. */
  void (*abort_cb)(struct cap_exchange *x);  /* Set by a handler that waits. */
  void *handler_data;
};

void cap_exchange_init(struct cap_exchange *x);
/* Clears the response side for the next request; keeps buffers. */
void cap_exchange_reset(struct cap_exchange *x);
void cap_exchange_free(struct cap_exchange *x);
/* Adds a response header line. */
void cap_exchange_header(struct cap_exchange *x, const char *name, const char *value);
/* Answers with status and a JSON body (copied), then hands the exchange back. */
void cap_exchange_reply(struct cap_exchange *x, int status, const char *json, size_t len);
/* Answers with status and the JSON already written into x->body. */
void cap_exchange_send(struct cap_exchange *x, int status);
/* Sets the error response e without finishing, for checks before a
 * handler runs: e's status and code from the error table and the body
 * {"error":msg,"code":code}, with e's default message when msg is NULL.
 * msg is copied. */
void cap_exchange_set_error(struct cap_exchange *x, enum cap_err e, const char *msg);
/* Answers with the error e as cap_exchange_set_error does, then hands the
 * exchange back. */
void cap_exchange_fail(struct cap_exchange *x, enum cap_err e, const char *msg);

#endif
