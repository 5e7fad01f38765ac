#ifndef CAP_ERRCODE_H
#define CAP_ERRCODE_H

/* The API's error codes, one table for every layer: errcode.def lists each
 * code with its HTTP status and default message, and docs/API.md lists the
 * same set (the unit test errcode checks both directions).  Code compares
 * these enum values, never code strings. */

enum cap_err {
  CAP_E_NONE = 0, /* Not an error; also what a zeroed struct holds. */
#define CAP_ERR(name, code, status, message) CAP_E_##name,
#include "errcode.def"
#undef CAP_ERR
  CAP_E_COUNT /* Not a code: the number of values above, CAP_E_NONE included. */
};

/* Returns e's code string ("unauthorized"), or NULL for CAP_E_NONE or a
 * value out of range.  The string is static. */
const char *cap_err_code(enum cap_err e);
/* Returns e's HTTP status, or 0 for CAP_E_NONE or a value out of range. */
int cap_err_status(enum cap_err e);
/* Returns e's default message, or NULL for CAP_E_NONE or a value out of
 * range.  The string is static. */
const char *cap_err_message(enum cap_err e);
/* Returns the error whose code string is code (as a journal stored it), or
 * CAP_E_NONE when there is none. */
enum cap_err cap_err_find(const char *code);

#endif
