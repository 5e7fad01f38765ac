#include "storerr.h"

enum cap_err cap_storerr_err(const struct cap_storage_err *e) {
  int input = e->side == CAP_STORAGE_INPUT;
  switch (e->code) {
  case CAP_STORAGE_OK:
    return CAP_E_NONE;
  case CAP_STORAGE_E_NOT_FOUND:
    if (input)
      return CAP_E_INPUT_NOT_FOUND;
    break; /* An output's upload that vanished is the store's failure. */
  case CAP_STORAGE_E_TOO_LARGE:
    if (input)
      return CAP_E_INPUT_TOO_LARGE;
    break; /* An output past 10000 parts is the configuration's. */
  case CAP_STORAGE_E_DENIED:
    return CAP_E_STORAGE_DENIED;
  case CAP_STORAGE_E_CANCELED:
    return CAP_E_CANCELED;
  case CAP_STORAGE_E_CHANGED:
    return CAP_E_INPUT_CHANGED;
  case CAP_STORAGE_E_UNAVAILABLE:
  case CAP_STORAGE_E_LOCAL:
  case CAP_STORAGE_E_FAILED:
    break;
  }
  return CAP_E_STORAGE_ERROR;
}
