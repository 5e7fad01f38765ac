#ifndef CAP_EXEC_H
#define CAP_EXEC_H

struct cap_exchange;

/* POST /exec: validates the job request and runs it. */
void cap_exec_handle(struct cap_exchange *x);

#endif
