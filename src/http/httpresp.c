#include "httpresp.h"

#include "jsonw.h"

#include <stdio.h>
#include <string.h>

const char *cap_httpresp_reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 417:
    return "Expectation Failed";
  case 422:
    return "Unprocessable Content";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  default:
    return "Unknown";
  }
}

void cap_httpresp_write(struct cap_buf *out, const struct cap_httpresp *r) {
  cap_buf_reserve(out, 256 + r->extra_len + r->body_len);
  cap_buf_printf(out,
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %zu\r\n"
                 "X-Request-Id: %s\r\n"
                 "Cache-Control: no-store\r\n",
                 r->status, cap_httpresp_reason(r->status),
                 r->content_type ? r->content_type : "application/json", r->body_len,
                 r->req_id ? r->req_id : "-");
  if (!r->keep_alive)
    cap_buf_puts(out, "Connection: close\r\n");
  if (r->extra_len)
    cap_buf_append(out, r->extra, r->extra_len);
  cap_buf_append(out, "\r\n", 2);
  if (!r->head_only && r->body_len)
    cap_buf_append(out, r->body, r->body_len);
}

void cap_httpresp_error_json(struct cap_buf *out, const char *msg, const char *code) {
  cap_buf_puts(out, "{\"error\":");
  cap_jsonw_str(out, msg, strlen(msg));
  cap_buf_puts(out, ",\"code\":");
  cap_jsonw_str(out, code, strlen(code));
  cap_buf_putc(out, '}');
}
