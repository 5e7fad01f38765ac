#ifndef CAP_HTTPPARSE_H
#define CAP_HTTPPARSE_H

#include "buf.h"
#include "errcode.h"

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

/* Incremental HTTP/1.1 request parsing on top of llhttp (strict, no lenient
 * flags), with the server's limits enforced as bytes arrive.  The parser
 * stops after the headers of each request (so the caller can route,
 * authenticate and size-check before any body is read) and again after each
 * complete request (so pipelined requests are answered in order).
 *
 * llhttp 8.1 lets some malformed input through even in strict mode: a bare LF
 * ending a line of the head or of the trailers, obs-fold in trailers, more
 * than one space between the parts of the request line, and transfer codings
 * before a final chunked.  This module refuses each of them itself, so that
 * what it accepts is exactly what docs/API.md says. */

struct cap_httpparse_limits {
  size_t max_header_bytes;
  size_t max_headers;
  size_t max_url_bytes;
};

struct cap_header {
  uint32_t name_off, name_len;
  uint32_t value_off, value_len;
};

/* One request.  Strings point into head, which holds the URL and then the
 * header names and values; they stay valid until cap_httpparse_next. */
struct cap_request {
  int method; /* llhttp_method_t */
  int http_major, http_minor;
  struct cap_buf head;
  size_t url_len;
  size_t path_len; /* The URL up to '?'. */
  struct cap_header *hdr;
  size_t nhdr, hdr_cap;
  struct cap_buf body;
  uint64_t content_length;
  unsigned has_content_length : 1;
  unsigned chunked : 1;
  unsigned keep_alive : 1;
  unsigned expect_continue : 1;
  unsigned expect_other : 1;
  unsigned upgrade : 1;
};

enum cap_httpparse_event {
  CAP_HTTPPARSE_MORE,    /* Everything was consumed; feed more bytes. */
  CAP_HTTPPARSE_HEADERS, /* Headers of req are complete; set max_body and feed on. */
  CAP_HTTPPARSE_MESSAGE, /* req is complete; answer it, then cap_httpparse_next. */
  CAP_HTTPPARSE_ERROR    /* Fatal: answer err with err_msg and close. */
};

struct cap_httpparse {
  llhttp_t parser;
  struct cap_httpparse_limits limits;
  size_t max_body;   /* Body bytes allowed for the current request. */
  size_t head_bytes; /* Raw bytes of the current request's head so far. */
  struct cap_request req;
  int in_body;     /* Headers of the current request are complete. */
  int pause_event; /* Why the last callback paused. */
  int last_was_value;
  int header_state;      /* Where in a header field llhttp is (field, value, between). */
  int in_trailers;       /* The last chunk is read: the trailer section is being parsed. */
  int line_state;        /* Before, in or after the request line, for the space check. */
  unsigned char prev[2]; /* The last two raw bytes of head or trailers (line ends). */
  size_t chunk_ext_bytes;
  enum cap_err err; /* Why parsing failed; CAP_E_NONE until it has. */
  /* err's status and code as the error table gives them, kept as fields
   * for readers that print or check them (tests, the fuzzer). */
  int err_status;
  const char *err_code;
  const char *err_msg; /* Static. */
};

void cap_httpparse_init(struct cap_httpparse *p, const struct cap_httpparse_limits *limits);
void cap_httpparse_free(struct cap_httpparse *p);
/* Feeds len bytes; *consumed says how many were used before the returned
 * event.  Call again with the rest after handling HEADERS or MESSAGE. */
enum cap_httpparse_event cap_httpparse_feed(struct cap_httpparse *p, const char *data, size_t len,
                                            size_t *consumed);
/* Readies the parser for the next request on the connection. */
void cap_httpparse_next(struct cap_httpparse *p);
/* Returns 1 when some byte of a request that is not complete has arrived. */
int cap_httpparse_partial(const struct cap_httpparse *p);

/* Returns the first value of header name (case-insensitive) and its length
 * in *len, or NULL.  The value points into req. */
const char *cap_request_header(const struct cap_request *req, const char *name, size_t *len);
/* Returns the last value of header name, as cap_request_header does the first. */
const char *cap_request_header_last(const struct cap_request *req, const char *name, size_t *len);
/* Counts the fields named name. */
size_t cap_request_header_count(const struct cap_request *req, const char *name);
/* Returns the URL (not NUL-terminated at path_len: use the lengths). */
static inline const char *cap_request_url(const struct cap_request *req) {
  return req->head.data;
}
/* Returns the query string after '?' (length in *len) or NULL. */
const char *cap_request_query(const struct cap_request *req, size_t *len);
const char *cap_request_method_name(const struct cap_request *req);

#endif
