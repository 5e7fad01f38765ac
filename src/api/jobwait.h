#ifndef CAP_JOBWAIT_H
#define CAP_JOBWAIT_H

struct cap_exchange;
struct cap_job;

/* Called when the job ended (timed_out 0) or the wait ran out (1); the
 * callback answers the exchange. */
typedef void (*cap_jobwait_fn)(struct cap_exchange *x, struct cap_job *j, int timed_out);

/* Holds the exchange until j ends or seconds pass, then calls fn.  With
 * seconds 0, or a job already done, fn runs before this returns.  When the
 * client goes away first, the wait is dropped (and with cancel_on_abort
 * the job canceled). */
void cap_jobwait_start(struct cap_exchange *x, struct cap_job *j, int seconds, cap_jobwait_fn fn,
                       int cancel_on_abort);

#endif
