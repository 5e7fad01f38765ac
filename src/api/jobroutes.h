#ifndef CAP_JOBROUTES_H
#define CAP_JOBROUTES_H

struct cap_exchange;

/* GET /jobs/{id}[?wait=N]: the job, long-polled until it ends or N s pass. */
void cap_jobroutes_get(struct cap_exchange *x);
/* DELETE /jobs/{id}: cancels the job. */
void cap_jobroutes_delete(struct cap_exchange *x);
/* Dispatches GET, HEAD and DELETE on /jobs/{id}. */
void cap_jobroutes_handle(struct cap_exchange *x);

#endif
