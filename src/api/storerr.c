#include "storerr.h"

int cap_storerr_status(const struct cap_storage_err *e, const char **code) {
  int input = e->side == CAP_STORAGE_INPUT;
  switch (e->code) {
  case CAP_STORAGE_OK:
    *code = NULL;
    return 200;
  case CAP_STORAGE_E_NOT_FOUND:
    if (input) {
      *code = "input_not_found";
      return 404;
    }
    break; /* An output's upload that vanished is the store's failure. */
  case CAP_STORAGE_E_TOO_LARGE:
    if (input) {
      *code = "input_too_large";
      return 413;
    }
    break; /* An output past 10000 parts is the configuration's. */
  case CAP_STORAGE_E_DENIED:
    *code = "storage_denied";
    return 502;
  case CAP_STORAGE_E_CANCELED:
    *code = "canceled";
    return 409;
  case CAP_STORAGE_E_UNAVAILABLE:
  case CAP_STORAGE_E_LOCAL:
  case CAP_STORAGE_E_FAILED:
    break;
  }
  *code = "storage_error";
  return 502;
}
