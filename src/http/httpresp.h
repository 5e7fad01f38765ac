#ifndef CAP_HTTPRESP_H
#define CAP_HTTPRESP_H

#include "buf.h"

#include <stddef.h>

/* Serialization of HTTP/1.1 responses.  Every response carries
 * Content-Type, Content-Length, X-Request-Id and Cache-Control: no-store. */

struct cap_httpresp {
  int status;
  const char *content_type; /* NULL means application/json. */
  const char *extra;        /* Extra header lines, each ending CRLF; may be NULL. */
  size_t extra_len;
  const char *body;
  size_t body_len;
  const char *req_id;
  int keep_alive; /* 0 adds Connection: close. */
  int head_only;  /* HEAD: headers as for GET, no body. */
};

/* Appends the serialized response to out. */
void cap_httpresp_write(struct cap_buf *out, const struct cap_httpresp *r);
/* Returns the reason phrase of status ("Unknown" when not known). */
const char *cap_httpresp_reason(int status);
/* Appends {"error":msg,"code":code} to out. */
void cap_httpresp_error_json(struct cap_buf *out, const char *msg, const char *code);

#endif
