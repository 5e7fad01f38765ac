#include "httpresp.h"

#include "check.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static void check_write(const struct cap_httpresp *r, const char *want) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_httpresp_write(&b, r);
  CHECK_EQ_MEM(b.data, b.len, want, strlen(want));
  cap_buf_free(&b);
}

static void test_basic(void) {
  struct cap_httpresp r = {
      .status = 200, .body = "{}", .body_len = 2, .req_id = "abc123", .keep_alive = 1};
  check_write(&r, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 2\r\n"
                  "X-Request-Id: abc123\r\n"
                  "Cache-Control: no-store\r\n"
                  "\r\n"
                  "{}");
}

static void test_close(void) {
  struct cap_httpresp r = {
      .status = 404, .body = "{\"a\":1}", .body_len = 7, .req_id = "id", .keep_alive = 0};
  check_write(&r, "HTTP/1.1 404 Not Found\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 7\r\n"
                  "X-Request-Id: id\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "{\"a\":1}");
}

static void test_head(void) {
  struct cap_httpresp r = {.status = 200,
                           .body = "{\"ok\":true}",
                           .body_len = 11,
                           .req_id = "h",
                           .keep_alive = 1,
                           .head_only = 1};
  check_write(&r, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 11\r\n"
                  "X-Request-Id: h\r\n"
                  "Cache-Control: no-store\r\n"
                  "\r\n");
}

static void test_extra_and_type(void) {
  const char extra[] = "Allow: GET, HEAD\r\nRetry-After: 5\r\n";
  struct cap_httpresp r = {.status = 405,
                           .content_type = "text/plain; charset=utf-8",
                           .extra = extra,
                           .extra_len = sizeof(extra) - 1,
                           .body = "no",
                           .body_len = 2,
                           .req_id = NULL,
                           .keep_alive = 0};
  check_write(&r, "HTTP/1.1 405 Method Not Allowed\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 2\r\n"
                  "X-Request-Id: -\r\n"
                  "Cache-Control: no-store\r\n"
                  "Connection: close\r\n"
                  "Allow: GET, HEAD\r\n"
                  "Retry-After: 5\r\n"
                  "\r\n"
                  "no");
  /* extra_len bounds extra. */
  r.extra_len = strlen("Allow: GET, HEAD\r\n");
  r.keep_alive = 1;
  r.content_type = NULL;
  r.req_id = "r";
  check_write(&r, "HTTP/1.1 405 Method Not Allowed\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 2\r\n"
                  "X-Request-Id: r\r\n"
                  "Cache-Control: no-store\r\n"
                  "Allow: GET, HEAD\r\n"
                  "\r\n"
                  "no");
}

static void test_empty_and_large(void) {
  struct cap_httpresp r = {.status = 204, .req_id = "e", .keep_alive = 1};
  check_write(&r, "HTTP/1.1 204 No Content\r\n"
                  "Content-Type: application/json\r\n"
                  "Content-Length: 0\r\n"
                  "X-Request-Id: e\r\n"
                  "Cache-Control: no-store\r\n"
                  "\r\n");

  /* A large body with NUL bytes is copied whole, after what the buffer holds. */
  size_t n = 200000;
  char *body = malloc(n);
  for (size_t i = 0; i < n; i++)
    body[i] = (char)(i % 251);
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_puts(&b, "PREVIOUS");
  r.status = 200;
  r.body = body;
  r.body_len = n;
  cap_httpresp_write(&b, &r);
  const char *head = "PREVIOUSHTTP/1.1 200 OK\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: 200000\r\n"
                     "X-Request-Id: e\r\n"
                     "Cache-Control: no-store\r\n"
                     "\r\n";
  size_t hl = strlen(head);
  CHECK_EQ_INT(b.len, hl + n);
  CHECK_EQ_MEM(b.data, hl, head, hl);
  CHECK(b.len == hl + n && memcmp(b.data + hl, body, n) == 0);
  cap_buf_free(&b);
  free(body);
}

static void test_reasons(void) {
  static const struct {
    int status;
    const char *reason;
  } t[] = {
      {100, "Continue"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {204, "No Content"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {413, "Content Too Large"},
      {414, "URI Too Long"},
      {415, "Unsupported Media Type"},
      {417, "Expectation Failed"},
      {422, "Unprocessable Content"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
      {0, "Unknown"},
      {299, "Unknown"},
      {418, "Unknown"},
      {-1, "Unknown"},
      {999, "Unknown"},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
    if (!CHECK_EQ_STR(cap_httpresp_reason(t[i].status), t[i].reason))
      fprintf(stderr, "  (status %d)\n", t[i].status);

  /* The status line uses the phrase. */
  struct cap_httpresp r = {.status = 429, .req_id = "x", .keep_alive = 1};
  struct cap_buf b;
  cap_buf_init(&b);
  cap_httpresp_write(&b, &r);
  CHECK(strncmp(b.data, "HTTP/1.1 429 Too Many Requests\r\n", 32) == 0);
  cap_buf_free(&b);
}

static void test_error_json(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_httpresp_error_json(&b, "No such route", "not_found");
  CHECK_EQ_STR(b.data, "{\"error\":\"No such route\",\"code\":\"not_found\"}");
  cap_buf_reset(&b);
  cap_httpresp_error_json(&b, "bad \"field\"\n\\ \xff", "c\"d");
  cJSON *j = cJSON_Parse(b.data);
  if (CHECK(cJSON_IsObject(j))) {
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "error")),
                 "bad \"field\"\n\\ \xef\xbf\xbd");
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "code")), "c\"d");
    CHECK_EQ_INT(cJSON_GetArraySize(j), 2);
  }
  cJSON_Delete(j);
  cap_buf_free(&b);
}

int main(void) {
  test_basic();
  test_close();
  test_head();
  test_extra_and_type();
  test_empty_and_large();
  test_reasons();
  test_error_json();
  return check_report();
}
