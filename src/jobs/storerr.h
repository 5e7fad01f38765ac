#ifndef CAP_STORERR_H
#define CAP_STORERR_H

#include "errcode.h"
#include "objstore.h"

/* The one place where a storage failure becomes what a client sees: the
 * storage layer reports a typed error (struct cap_storage_err) and never
 * names an API error; this picks the row of the error table for it.  It
 * lives in jobs/ because a job's failure path needs it and jobs/ is the
 * lowest layer that knows both tables; api/ reads the job's code. */

/* Returns the API error for e, or CAP_E_NONE for CAP_STORAGE_OK.  A
 * missing or oversized input is the client's (input_not_found 404,
 * input_too_large 413); a refusal is storage_denied and anything else
 * storage_error (502); a canceled operation is canceled (409). */
enum cap_err cap_storerr_err(const struct cap_storage_err *e);

#endif
