#include "router.h"

#include "check.h"

#include <llhttp.h>
#include <string.h>

static const struct cap_route *find(const char *path, int method, int *status, const char **allow) {
  *status = -1;
  *allow = "untouched";
  return cap_router_find(path, strlen(path), method, status, allow);
}

static void test_found(void) {
  int status;
  const char *allow;
  const struct cap_route *r = find("/health", HTTP_GET, &status, &allow);
  if (CHECK(r != NULL)) {
    CHECK_EQ_STR(r->path, "/health");
    CHECK(r->handler != NULL);
    /* Public, and also served on the metrics listener. */
    CHECK_EQ_INT(r->flags, CAP_ROUTE_PRIVATE);
    CHECK_EQ_INT(r->has_body, 0);
    CHECK_EQ_STR(r->allow, "GET, HEAD");
    CHECK_EQ_STR(r->name, "health");
  }
  const struct cap_route *h = find("/health", HTTP_HEAD, &status, &allow);
  CHECK(h == r); /* HEAD is served wherever GET is. */
  r = find("/metrics", HTTP_GET, &status, &allow);
  if (CHECK(r != NULL)) {
    CHECK_EQ_STR(r->name, "metrics");
    CHECK_EQ_INT(r->flags, CAP_ROUTE_METRICS | CAP_ROUTE_PRIVATE);
    CHECK_EQ_INT(r->has_body, 0);
  }
  CHECK(find("/metrics", HTTP_POST, &status, &allow) == NULL && status == 405);

  r = find("/exec", HTTP_POST, &status, &allow);
  if (CHECK(r != NULL)) {
    CHECK_EQ_STR(r->path, "/exec");
    CHECK(r->handler != NULL);
    CHECK_EQ_INT(r->flags, CAP_ROUTE_AUTH | CAP_ROUTE_RATELIMIT | CAP_ROUTE_JSON_BODY);
    CHECK_EQ_INT(r->has_body, 1);
    CHECK_EQ_STR(r->allow, "POST");
    CHECK(r->handler != h->handler);
  }
  /* Only len bytes of the path count (the query is not part of it). */
  const char *with_query = "/health?verbose=1";
  r = cap_router_find(with_query, 7, HTTP_GET, &status, &allow);
  CHECK(r != NULL && strcmp(r->path, "/health") == 0);
}

static void test_404(void) {
  static const char *const paths[] = {"/",       "",           "/nope",  "/health/", "/healthz",
                                      "/HEALTH", "/exe",       "/exec/", "/exec/x",  "//health",
                                      "health",  "/health%20", "/Exec"};
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    int status;
    const char *allow;
    const struct cap_route *r = find(paths[i], HTTP_GET, &status, &allow);
    int ok = CHECK(r == NULL);
    ok &= CHECK_EQ_INT(status, 404);
    ok &= CHECK(allow == NULL);
    if (!ok)
      fprintf(stderr, "  (path \"%s\")\n", paths[i]);
  }
  /* The method does not matter for 404. */
  int status;
  const char *allow;
  CHECK(find("/nope", HTTP_POST, &status, &allow) == NULL);
  CHECK_EQ_INT(status, 404);
  /* A prefix of a route given by length. */
  CHECK(cap_router_find("/health", 4, HTTP_GET, &status, &allow) == NULL);
  CHECK_EQ_INT(status, 404);
}

static void test_405(void) {
  static const struct {
    const char *path;
    int method;
    const char *allow;
  } t[] = {
      {"/health", HTTP_POST, "GET, HEAD"},
      {"/health", HTTP_PUT, "GET, HEAD"},
      {"/health", HTTP_DELETE, "GET, HEAD"},
      {"/health", HTTP_OPTIONS, "GET, HEAD"},
      {"/exec", HTTP_GET, "POST"},
      {"/exec", HTTP_HEAD, "POST"},
      {"/exec", HTTP_PUT, "POST"},
      {"/exec", HTTP_PATCH, "POST"},
      {"/exec", HTTP_DELETE, "POST"},
      {"/exec", -1, "POST"},
      {"/exec", 40, "POST"},
      {"/health", 1000, "GET, HEAD"},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    int status;
    const char *allow;
    const struct cap_route *r = find(t[i].path, t[i].method, &status, &allow);
    int ok = CHECK(r == NULL);
    ok &= CHECK_EQ_INT(status, 405);
    ok &= CHECK_EQ_STR(allow, t[i].allow);
    if (!ok)
      fprintf(stderr, "  (%s method %d)\n", t[i].path, t[i].method);
  }
}

int main(void) {
  test_found();
  test_404();
  test_405();
  return check_report();
}
