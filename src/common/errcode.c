#include "errcode.h"

#include <stddef.h>
#include <string.h>

struct row {
  const char *code;
  int status;
  const char *message;
};

static const struct row rows[CAP_E_COUNT] = {
    [CAP_E_NONE] = {NULL, 0, NULL},
#define CAP_ERR(name, code, status, message) [CAP_E_##name] = {code, status, message},
#include "errcode.def"
#undef CAP_ERR
};

static const struct row *row(enum cap_err e) {
  if ((int)e <= (int)CAP_E_NONE || (int)e >= (int)CAP_E_COUNT)
    return &rows[CAP_E_NONE];
  return &rows[e];
}

const char *cap_err_code(enum cap_err e) {
  return row(e)->code;
}

int cap_err_status(enum cap_err e) {
  return row(e)->status;
}

const char *cap_err_message(enum cap_err e) {
  return row(e)->message;
}

enum cap_err cap_err_find(const char *code) {
  for (int e = CAP_E_NONE + 1; code && e < CAP_E_COUNT; e++)
    if (strcmp(rows[e].code, code) == 0)
      return (enum cap_err)e;
  return CAP_E_NONE;
}
