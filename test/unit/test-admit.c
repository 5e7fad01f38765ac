#define _GNU_SOURCE /* nftw */
#include "admit.h"

#include "app.h"
#include "config.h"
#include "exchange.h"
#include "httpparse.h"
#include "router.h"

#include "check.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define TOKEN "test-token-0123456789abcdef"

/* cap_app_init used to take the start time and now takes the loop (whose
 * time it reads); call it the way this tree declares it.  Only the branch
 * that matches is evaluated. */
typedef int (*app_init_loop_fn)(struct cap_app *, const struct cap_config *, uv_loop_t *, char *,
                                size_t);
typedef int (*app_init_ms_fn)(struct cap_app *, const struct cap_config *, uint64_t, char *,
                              size_t);
/* Through a pointer the compiler cannot see into, so the branch that does
 * not match this tree's declaration compiles without a warning. */
static void (*volatile app_init_any)(void) = (void (*)(void))cap_app_init;
#define APP_INIT(app, cfg, loop, err, n)                                                           \
  _Generic(&cap_app_init, app_init_loop_fn                                                         \
           : ((app_init_loop_fn)app_init_any)(app, cfg, loop, err, n), default                     \
           : ((app_init_ms_fn)app_init_any)(app, cfg, uv_now(loop), err, n))

static char data_dir[64];
static char data_env[128]; /* "CAP_DATA_DIR=<data_dir>" */

/* A configured app: the config, the app and its loop live together. */
struct env {
  struct cap_config cfg;
  struct cap_app app;
  uv_loop_t loop;
};

/* An app may leave handles in its loop (the job table's timer); the
 * memory of a freed app is kept so nothing dangles. */
static struct env *retired[64];
static size_t nretired;

/* Builds an app from envp (CAPABILITY_TOKEN plus extra settings); the
 * object store goes to a temporary directory. */
static struct env *env_new(char **envp) {
  struct env *e = calloc(1, sizeof(*e));
  char err[512];
  char *argv[] = {"cap-server", NULL};
  char *full[16];
  size_t n = 0;
  while (envp[n] && n < 14) {
    full[n] = envp[n];
    n++;
  }
  full[n++] = data_env;
  full[n] = NULL;
  int rc = cap_config_load(&e->cfg, 1, argv, full, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  config: %s\n", err);
    exit(check_report() | 1); /* The summary still ends the output. */
  }
  uv_loop_init(&e->loop);
  rc = APP_INIT(&e->app, &e->cfg, &e->loop, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  app: %s\n", err);
    exit(check_report() | 1); /* The summary still ends the output. */
  }
  return e;
}

static void env_free(struct env *e) {
  cap_app_free(&e->app);
  if (nretired < sizeof(retired) / sizeof(retired[0]))
    retired[nretired++] = e;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

/* One request through the parser (up to HEADERS) and admission. */
struct trial {
  struct cap_httpparse p;
  struct cap_exchange x;
  int rc;
};

static void peer_addr(struct sockaddr_storage *ss, const char *ip) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *in = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
  } else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(40000);
  } else {
    fprintf(stderr, "test bug: bad peer %s\n", ip);
    exit(check_report() | 1); /* The summary still ends the output. */
  }
}

static struct trial *admit(struct env *e, const char *raw, const char *peer, uint64_t now) {
  struct trial *t = calloc(1, sizeof(*t));
  struct cap_httpparse_limits lim = {.max_header_bytes = (size_t)e->cfg.max_header_bytes,
                                     .max_headers = (size_t)e->cfg.max_headers,
                                     .max_url_bytes = (size_t)e->cfg.max_url_bytes};
  size_t used = 0;
  cap_httpparse_init(&t->p, &lim);
  enum cap_httpparse_event ev = cap_httpparse_feed(&t->p, raw, strlen(raw), &used);
  if (!CHECK_EQ_INT(ev, CAP_HTTPPARSE_HEADERS)) {
    fprintf(stderr, "  test request does not parse: %s\n", raw);
    exit(check_report() | 1); /* The summary still ends the output. */
  }
  cap_exchange_init(&t->x);
  t->x.app = &e->app;
  t->x.req = &t->p.req;
  struct sockaddr_storage ss;
  peer_addr(&ss, peer);
  t->rc = cap_admit_request(&t->x, (const struct sockaddr *)&ss, now);
  return t;
}

static void trial_free(struct trial *t) {
  cap_exchange_free(&t->x);
  cap_httpparse_free(&t->p);
  free(t);
}

static int has_header(const struct trial *t, const char *line) {
  return t->x.headers.data && strstr(t->x.headers.data, line) != NULL;
}

/* Checks a refusal: status, code and a JSON error body carrying the code. */
static int check_refused(struct trial *t, int status, const char *code) {
  int ok = CHECK_EQ_INT(t->rc, -1);
  ok &= CHECK_EQ_INT(t->x.status, status);
  ok &= CHECK_EQ_STR(t->x.code, code);
  cJSON *j = cJSON_ParseWithLength(t->x.body.data ? t->x.body.data : "", t->x.body.len);
  ok &= CHECK(cJSON_IsObject(j));
  ok &= CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "code")), code);
  ok &= CHECK(cJSON_IsString(cJSON_GetObjectItem(j, "error")));
  cJSON_Delete(j);
  return ok;
}

#define EXEC_OK                                                                                    \
  "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n"                          \
  "Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"

static void test_admitted(void) {
  struct env *e = env_new((char *[]){"CAPABILITY_TOKEN=" TOKEN, NULL});
  struct trial *t = admit(e, EXEC_OK, "192.0.2.7", 1000);
  CHECK_EQ_INT(t->rc, 0);
  CHECK_EQ_INT(t->x.status, 0);
  CHECK(t->x.route != NULL && strcmp(t->x.route->path, "/exec") == 0);
  CHECK_EQ_STR(t->x.token_name, "default");
  CHECK_EQ_STR(t->x.client, "192.0.2.7");
  CHECK_EQ_INT(t->x.headers.len, 0);
  trial_free(t);

  /* /health needs no token. */
  t = admit(e, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "192.0.2.7", 1000);
  CHECK_EQ_INT(t->rc, 0);
  CHECK(t->x.route != NULL && strcmp(t->x.route->path, "/health") == 0);
  CHECK(t->x.token_name == NULL);
  trial_free(t);
  t = admit(e, "HEAD /health?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", "192.0.2.7", 1000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);

  /* Content-Type variants that are JSON. */
  static const char *const types[] = {"application/json", "Application/JSON",
                                      "application/json; charset=utf-8",
                                      "application/json ;charset=utf-8", "application/json  "};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    char raw[512];
    snprintf(raw, sizeof(raw),
             "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Type: %s\r\nContent-Length: 2\r\n\r\n",
             types[i]);
    t = admit(e, raw, "192.0.2.8", 1000 + i);
    if (!CHECK_EQ_INT(t->rc, 0))
      fprintf(stderr, "  Content-Type \"%s\" refused (%d)\n", types[i], t->x.status);
    trial_free(t);
  }
  /* The scheme is case-insensitive. */
  t = admit(e,
            "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: bearer " TOKEN
            "\r\nContent-Type: application/json\r\n\r\n",
            "192.0.2.9", 1000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  env_free(e);
}

static void test_token_in_url(void) {
  struct env *e = env_new((char *[]){"CAPABILITY_TOKEN=" TOKEN, NULL});
  static const char *const urls[] = {
      "/exec?token=abc",
      "/exec?x=1&access_token=abc",
      "/health?Api_Key=1",
      "/health?APIKEY",
      "/health?a=1;password=2",
      "/health?t%6Fken=x",
      "/health?bearer=",
      "/health?q=" TOKEN,
      "/health?x=1&q=" TOKEN "&y=2",
      "/nope?secret=1", /* Before routing: even a 404 path. */
      "/health?q=test-token-0123456789abcde%66",
      "/health?q=test%2Dtoken%2D0123456789abcdef",
  };
  for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
    char raw[512];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", urls[i]);
    struct trial *t = admit(e, raw, "192.0.2.1", 1000);
    if (!check_refused(t, 400, "token_in_url"))
      fprintf(stderr, "  (url %s)\n", urls[i]);
    trial_free(t);
  }
  static const char *const fine[] = {
      "/health?tokens=1", "/health?q=test-token", "/health?mytoken=1",
      "/health?x=token",  "/health?q=" TOKEN "x", "/health?",
      "/health?&&;;==",
  };
  for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
    char raw[512];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", fine[i]);
    struct trial *t = admit(e, raw, "192.0.2.1", 1000);
    if (!CHECK_EQ_INT(t->rc, 0))
      fprintf(stderr, "  (url %s refused with %d %s)\n", fine[i], t->x.status, t->x.code);
    trial_free(t);
  }
  env_free(e);
}

static void test_routing(void) {
  struct env *e = env_new((char *[]){"CAPABILITY_TOKEN=" TOKEN, NULL});
  struct trial *t = admit(e, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "192.0.2.1", 1000);
  check_refused(t, 404, "not_found");
  CHECK(t->x.route == NULL);
  CHECK(!has_header(t, "Allow:"));
  trial_free(t);

  t = admit(e, "GET /exec HTTP/1.1\r\nHost: x\r\n\r\n", "192.0.2.1", 1000);
  check_refused(t, 405, "method_not_allowed");
  CHECK(has_header(t, "Allow: POST\r\n"));
  trial_free(t);

  t = admit(e, "DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n", "192.0.2.1", 1000);
  check_refused(t, 405, "method_not_allowed");
  CHECK_EQ_STR(t->x.headers.data, "Allow: GET, HEAD\r\n");
  trial_free(t);

  /* The path, not the query, is routed. */
  t = admit(e, "POST /health?/exec HTTP/1.1\r\nHost: x\r\n\r\n", "192.0.2.1", 1000);
  check_refused(t, 405, "method_not_allowed");
  trial_free(t);
  env_free(e);
}

static void test_expect(void) {
  struct env *e = env_new((char *[]){"CAPABILITY_TOKEN=" TOKEN, NULL});
  struct trial *t = admit(e,
                          "POST /exec HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n"
                          "Authorization: Bearer " TOKEN "\r\n"
                          "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
                          "192.0.2.1", 1000);
  check_refused(t, 417, "expectation_failed");
  trial_free(t);
  t = admit(e,
            "POST /exec HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            "Authorization: Bearer " TOKEN "\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
            "192.0.2.1", 1000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  env_free(e);
}

static void test_unauthorized(void) {
  struct env *e = env_new((char *[]){"CAPABILITY_TOKEN=" TOKEN, NULL});
  static const char *const auths[] = {
      "",
      "Authorization: Bearer wrong-token-0123456789abc\r\n",
      "Authorization: Bearer test-token-0123456789abcde\r\n",
      "Authorization: Bearer " TOKEN "f\r\n",
      "Authorization: Basic " TOKEN "\r\n",
      "Authorization: " TOKEN "\r\n",
      "Authorization:\r\n",
      "Authorization: Bearer\r\n",
  };
  for (size_t i = 0; i < sizeof(auths) / sizeof(auths[0]); i++) {
    char raw[512];
    snprintf(raw, sizeof(raw),
             "POST /exec HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
             "Content-Length: 2\r\n\r\n",
             auths[i]);
    uint64_t before = e->app.auth_failures;
    struct trial *t = admit(e, raw, "192.0.2.2", 1000 + i * 60000);
    int ok = check_refused(t, 401, "unauthorized");
    ok &= CHECK(has_header(t, "WWW-Authenticate: Bearer\r\n"));
    ok &= CHECK(t->x.token_name == NULL);
    ok &= CHECK_EQ_INT(e->app.auth_failures, before + 1);
    if (!ok)
      fprintf(stderr, "  (auth case %zu)\n", i);
    trial_free(t);
  }
  env_free(e);
}

static void test_content_type_and_size(void) {
  struct env *e = env_new((char *[]){"CAPABILITY_TOKEN=" TOKEN, "CAP_MAX_BODY_BYTES=100", NULL});
  static const char *const types[] = {"",
                                      "Content-Type: text/plain\r\n",
                                      "Content-Type: application/jsonx\r\n",
                                      "Content-Type: application/json-patch+json\r\n",
                                      "Content-Type: application/js\r\n",
                                      "Content-Type: \r\n",
                                      "Content-Type: multipart/form-data; boundary=x\r\n",
                                      "Content-Type: application/json,text/plain\r\n"};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    char raw[512];
    snprintf(raw, sizeof(raw),
             "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\n%sContent-Length: 2\r\n\r\n",
             types[i]);
    struct trial *t = admit(e, raw, "192.0.2.3", 1000 + i * 60000);
    if (!check_refused(t, 415, "unsupported_media_type"))
      fprintf(stderr, "  (content type case %zu)\n", i);
    trial_free(t);
  }

  struct trial *t = admit(e,
                          "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                          "\r\nContent-Type: application/json\r\nContent-Length: 101\r\n\r\n",
                          "192.0.2.4", 1000);
  check_refused(t, 413, "body_too_large");
  trial_free(t);
  t = admit(e,
            "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
            "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            "192.0.2.4", 2000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  t = admit(e,
            "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
            "\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n",
            "192.0.2.4", 3000);
  check_refused(t, 413, "body_too_large");
  trial_free(t);
  /* A route without a body takes none. */
  t = admit(e, "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n", "192.0.2.4", 1000);
  check_refused(t, 413, "body_too_large");
  trial_free(t);
  t = admit(e, "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "192.0.2.4", 1000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  env_free(e);
}

static void test_rate_limit(void) {
  struct env *e = env_new((char *[]){"CAPABILITY_TOKEN=" TOKEN, "CAP_RATE_LIMIT=3", NULL});
  for (int i = 0; i < 3; i++) {
    struct trial *t = admit(e, EXEC_OK, "198.51.100.1", 5000);
    if (!CHECK_EQ_INT(t->rc, 0))
      fprintf(stderr, "  request %d refused: %d\n", i, t->x.status);
    trial_free(t);
  }
  CHECK_EQ_INT(e->app.rate_limited, 0);
  struct trial *t = admit(e, EXEC_OK, "198.51.100.1", 5000);
  check_refused(t, 429, "rate_limited");
  /* 3 a minute: a token comes back every 20 s. */
  CHECK_EQ_STR(t->x.headers.data, "Retry-After: 20\r\n");
  CHECK_EQ_INT(e->app.rate_limited, 1);
  trial_free(t);
  /* Refused before authentication: a bad token gets 429 too. */
  t = admit(e, "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n",
            "198.51.100.1", 5000);
  check_refused(t, 429, "rate_limited");
  trial_free(t);
  /* Another client is not affected. */
  t = admit(e, EXEC_OK, "198.51.100.2", 5000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  /* The same address over IPv4-mapped IPv6 is the same client. */
  t = admit(e, EXEC_OK, "::ffff:198.51.100.1", 5000);
  check_refused(t, 429, "rate_limited");
  CHECK_EQ_STR(t->x.client, "198.51.100.1");
  trial_free(t);
  /* 20 s later one more is allowed. */
  t = admit(e, EXEC_OK, "198.51.100.1", 25000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  /* /health is not rate limited. */
  for (int i = 0; i < 10; i++) {
    t = admit(e, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "198.51.100.1", 25000);
    CHECK_EQ_INT(t->rc, 0);
    trial_free(t);
  }
  env_free(e);
}

static void test_token_bucket(void) {
  struct env *e = env_new(
      (char *[]){"CAPABILITY_TOKEN=" TOKEN, "CAP_RATE_LIMIT_TOKEN=2", "CAP_RATE_LIMIT=1000", NULL});
  /* Unauthenticated requests do not use the token's bucket. */
  for (int i = 0; i < 5; i++) {
    struct trial *t = admit(e,
                            "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope-"
                            "nope-nope-nope-nope\r\nContent-Type: application/json\r\n\r\n",
                            "203.0.113.1", 7000);
    check_refused(t, 401, "unauthorized");
    trial_free(t);
  }
  /* Two a minute for the token, whatever the client. */
  struct trial *t = admit(e, EXEC_OK, "203.0.113.1", 7000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  t = admit(e, EXEC_OK, "203.0.113.2", 7000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  t = admit(e, EXEC_OK, "203.0.113.3", 7000);
  check_refused(t, 429, "rate_limited");
  CHECK_EQ_STR(t->x.headers.data, "Retry-After: 30\r\n");
  CHECK_EQ_STR(t->x.token_name, "default");
  trial_free(t);
  env_free(e);
}

static void test_forwarded(void) {
  struct env *e = env_new(
      (char *[]){"CAPABILITY_TOKEN=" TOKEN, "CAP_TRUSTED_PROXIES=10.0.0.0/8,fd00::/8", NULL});
  const char *xff = "GET /health HTTP/1.1\r\nHost: x\r\n"
                    "X-Forwarded-For: 198.51.100.77, 203.0.113.9\r\n\r\n";
  struct trial *t = admit(e, xff, "10.1.2.3", 1000);
  CHECK_EQ_INT(t->rc, 0);
  CHECK_EQ_STR(t->x.client, "203.0.113.9");
  trial_free(t);
  t = admit(e, xff, "fd00::5", 1000);
  CHECK_EQ_STR(t->x.client, "203.0.113.9");
  trial_free(t);
  t = admit(e, xff, "::ffff:10.9.9.9", 1000);
  CHECK_EQ_STR(t->x.client, "203.0.113.9");
  trial_free(t);
  /* Not from a trusted proxy: the header is ignored. */
  t = admit(e, xff, "192.0.2.50", 1000);
  CHECK_EQ_STR(t->x.client, "192.0.2.50");
  trial_free(t);
  t = admit(e, xff, "127.0.0.1", 1000); /* Not in this list. */
  CHECK_EQ_STR(t->x.client, "127.0.0.1");
  trial_free(t);
  t = admit(e, xff, "2001:db8::1", 1000);
  CHECK_EQ_STR(t->x.client, "2001:db8::1");
  trial_free(t);
  /* Trusted, but the value is garbage: the peer is the client. */
  t = admit(e, "GET /health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1, evil\r\n\r\n",
            "10.1.2.3", 1000);
  CHECK_EQ_STR(t->x.client, "10.1.2.3");
  trial_free(t);
  t = admit(e, "GET /health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 2001:DB8::0:1\r\n\r\n",
            "10.1.2.3", 1000);
  CHECK_EQ_STR(t->x.client, "2001:db8::1");
  trial_free(t);
  /* No header. */
  t = admit(e, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "10.1.2.3", 1000);
  CHECK_EQ_STR(t->x.client, "10.1.2.3");
  trial_free(t);
  /* A proxy that adds its own X-Forwarded-For line (HAProxy's
   * "option forwardfor" does) after one the client sent: the fields
   * combine in order, so the nearest proxy's entry is the rightmost of the
   * last line, not of the first one the client controls. */
  t = admit(e,
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n"
            "X-Forwarded-For: 203.0.113.9\r\n\r\n",
            "10.1.2.3", 1000);
  if (!CHECK_EQ_STR(t->x.client, "203.0.113.9"))
    fprintf(stderr, "  the client picked its address with an X-Forwarded-For line of its own\n");
  trial_free(t);
  env_free(e);

  /* The per-client limit follows the forwarded address behind a proxy. */
  e = env_new((char *[]){"CAPABILITY_TOKEN=" TOKEN, "CAP_RATE_LIMIT=1",
                         "CAP_TRUSTED_PROXIES=10.0.0.1", NULL});
  const char *a = "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                  "\r\nContent-Type: application/json\r\nX-Forwarded-For: 203.0.113.1\r\n\r\n";
  const char *b = "POST /exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                  "\r\nContent-Type: application/json\r\nX-Forwarded-For: 203.0.113.2\r\n\r\n";
  t = admit(e, a, "10.0.0.1", 1000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  t = admit(e, a, "10.0.0.1", 1000);
  check_refused(t, 429, "rate_limited");
  CHECK_EQ_STR(t->x.client, "203.0.113.1");
  trial_free(t);
  t = admit(e, b, "10.0.0.1", 1000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  /* An untrusted peer cannot pick its bucket with the header. */
  t = admit(e, a, "192.0.2.99", 1000);
  CHECK_EQ_INT(t->rc, 0);
  trial_free(t);
  t = admit(e, b, "192.0.2.99", 1000);
  check_refused(t, 429, "rate_limited");
  CHECK_EQ_STR(t->x.client, "192.0.2.99");
  trial_free(t);
  env_free(e);
}

static void test_insecure_no_auth(void) {
  struct env *e = env_new((char *[]){"CAP_INSECURE_NO_AUTH=1", NULL});
  struct trial *t = admit(e,
                          "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Content-Length: 2\r\n\r\n",
                          "127.0.0.1", 1000);
  CHECK_EQ_INT(t->rc, 0);
  CHECK_EQ_STR(t->x.token_name, "insecure");
  trial_free(t);
  env_free(e);

  /* With a token configured, --insecure-no-auth does not open the door. */
  e = env_new((char *[]){"CAP_INSECURE_NO_AUTH=1", "CAPABILITY_TOKEN=" TOKEN, NULL});
  t = admit(e,
            "POST /exec HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 2\r\n\r\n",
            "127.0.0.1", 1000);
  check_refused(t, 401, "unauthorized");
  trial_free(t);
  env_free(e);
}

int main(void) {
  snprintf(data_dir, sizeof(data_dir), "/tmp/cap-test-admit-XXXXXX");
  if (mkdtemp(data_dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(data_env, sizeof(data_env), "CAP_DATA_DIR=%s", data_dir);

  test_admitted();
  test_token_in_url();
  test_routing();
  test_expect();
  test_unauthorized();
  test_content_type_and_size();
  test_rate_limit();
  test_token_bucket();
  test_forwarded();
  test_insecure_no_auth();

  nftw(data_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  return check_report();
}
