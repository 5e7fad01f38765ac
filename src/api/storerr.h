#ifndef CAP_STORERR_H
#define CAP_STORERR_H

#include "objstore.h"

/* The one place where a storage failure becomes what a client sees: the
 * storage layer reports a typed error (struct cap_storage_err), and the
 * API answers with the HTTP status and API error code picked here. */

/* Returns the HTTP status for e and points *code at the API error code
 * (a static string, e.g. "input_not_found").  A missing or oversized
 * input is the client's (404, 413); a refusal is "storage_denied" and
 * anything else "storage_error" (502); a canceled operation is 409
 * "canceled". */
int cap_storerr_status(const struct cap_storage_err *e, const char **code);

#endif
