#include "exec.h"

#include "exchange.h"
#include "execreq.h"

void cap_exec_handle(struct cap_exchange *x) {
  struct cap_execreq r;
  const char *code;
  char msg[256];

  if (cap_execreq_parse(&r, x->req->body.data ? x->req->body.data : "", x->req->body.len, &code,
                        msg, sizeof(msg)) != 0) {
    cap_execreq_free(&r);
    cap_exchange_reply_error(x, 400, code, msg);
    return;
  }
  cap_execreq_free(&r);
  /* The job runner arrives with the jobs issue; until then a valid request
   * is accepted by every check and answered honestly. */
  cap_exchange_reply_error(x, 501, "not_implemented", "Job execution is not implemented yet");
}
