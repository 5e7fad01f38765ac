#ifndef CAP_JOBJSON_H
#define CAP_JOBJSON_H

#include "buf.h"

struct cap_job;

/* The JSON shapes a job is shown in.  Each appends to out. */

/* The 200 answer of a succeeded job: r2_key, duration_ms, bytes, job_id,
 * preset (render) or probe, duration_ms, job_id (ffprobe). */
void cap_jobjson_result(const struct cap_job *j, struct cap_buf *out);
/* The error answer of a failed or canceled job: error, code, job_id and
 * exit_status / signal / stderr_tail where they apply. */
void cap_jobjson_error(const struct cap_job *j, struct cap_buf *out);
/* The 202 answer: job_id, status, status_url. */
void cap_jobjson_accepted(const struct cap_job *j, struct cap_buf *out);
/* A job restored from the journal answers with the texts it saved: the
 * result or error answer and the whole job are what they were when it
 * ended. */
/* The whole job, for GET /jobs/{id}. */
void cap_jobjson_job(const struct cap_job *j, struct cap_buf *out);

#endif
