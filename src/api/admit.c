#include "admit.h"

#include "app.h"
#include "errcode.h"
#include "exchange.h"
#include "metrics.h"
#include "router.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Query parameter names that carry credentials in the wild. */
static const char *const secret_params[] = {
    "token",  "access_token", "auth", "authorization", "api_key",
    "apikey", "bearer",       "key",  "secret",        "password",
};

static int param_is_secret_name(const char *s, size_t n) {
  for (size_t i = 0; i < sizeof(secret_params) / sizeof(secret_params[0]); i++)
    if (strlen(secret_params[i]) == n && strncasecmp(secret_params[i], s, n) == 0)
      return 1;
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = (char)(c | 0x20);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Percent-decodes len bytes of s into out (n bytes at most, the rest is
 * dropped) and returns the decoded length; '+' stands for a space. */
static size_t pct_decode(const char *s, size_t len, char *out, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < len && j < n; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
        (lo = hexval(s[i + 2])) >= 0) {
      out[j++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[j++] = s[i] == '+' ? ' ' : s[i];
    }
  }
  return j;
}

/* Returns 1 when the query holds a credential: a parameter with a
 * credential's name, or any value equal to a configured token. */
static int query_has_credential(const struct cap_app *app, const char *q, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t end = i;
    while (end < n && q[end] != '&' && q[end] != ';')
      end++;
    const char *eq = memchr(q + i, '=', end - i);
    size_t name_len = eq ? (size_t)(eq - (q + i)) : end - i;
    char name[64], val[CAP_AUTH_TOKEN_MAX + 1];
    size_t nl = pct_decode(q + i, name_len, name, sizeof(name));
    if (param_is_secret_name(name, nl))
      return 1;
    if (eq) {
      size_t vl = pct_decode(eq + 1, (size_t)(q + end - (eq + 1)), val, sizeof(val));
      if (cap_auth_is_token(&app->auth, val, vl))
        return 1;
    }
    i = end + 1;
  }
  return 0;
}

static void client_address(struct cap_exchange *x, const struct sockaddr *peer) {
  size_t len;
  if (cap_netaddr_format(peer, x->client, sizeof(x->client)) != 0)
    snprintf(x->client, sizeof(x->client), "unknown");
  if (!cap_netaddr_set_contains(&x->app->trusted, peer))
    return;
  /* Several lines form one list; its rightmost entry, written by the
   * nearest proxy, is on the last line.  Entries of trusted proxies (a
   * chain such as Funnel -> Caddy -> here) are skipped from the right. */
  const char *xff = cap_request_header_last(x->req, "x-forwarded-for", &len);
  char fwd[CAP_NETADDR_STRLEN];
  if (xff && cap_netaddr_from_forwarded(xff, len, &x->app->trusted, fwd, sizeof(fwd)) == 0)
    memcpy(x->client, fwd, sizeof(fwd));
}

static int limited(struct cap_exchange *x, struct cap_ratelimit *rl, const char *key,
                   uint64_t now_ms) {
  unsigned retry = 0;
  char v[16];
  if (cap_ratelimit_take(rl, key, now_ms, &retry) == 0)
    return 0;
  x->app->rate_limited++;
  cap_metrics_inc(CAP_M_RATE_LIMITED, CAP_LABELS(rl == x->app->rl_client ? "client" : "token"));
  snprintf(v, sizeof(v), "%u", retry);
  cap_exchange_header(x, "Retry-After", v);
  cap_exchange_set_error(x, CAP_E_RATE_LIMITED, NULL);
  return 1;
}

/* Metrics need a token unless metrics_auth is none; even then a request
 * that came through Tailscale Funnel, from the internet, needs one. */
static int metrics_need_token(const struct cap_exchange *x) {
  size_t len;
  if (strcmp(x->app->cfg->metrics_auth, "none") != 0)
    return 1;
  return !x->private_listener &&
         cap_request_header(x->req, "tailscale-funnel-request", &len) != NULL;
}

static int content_type_is_json(const struct cap_request *req) {
  size_t len;
  const char *ct = cap_request_header(req, "content-type", &len);
  static const char json[] = "application/json";
  if (ct == NULL || len < sizeof(json) - 1 || strncasecmp(ct, json, sizeof(json) - 1) != 0)
    return 0;
  for (size_t i = sizeof(json) - 1; i < len; i++) {
    if (ct[i] == ';')
      return 1;
    if (ct[i] != ' ' && ct[i] != '\t')
      return 0;
  }
  return 1;
}

int cap_admit_request(struct cap_exchange *x, const struct sockaddr *peer, uint64_t now_ms) {
  struct cap_app *app = x->app;
  const struct cap_request *req = x->req;
  size_t qlen;
  int status;
  const char *allow;

  client_address(x, peer);
  const char *q = cap_request_query(req, &qlen);
  if (q && query_has_credential(app, q, qlen)) {
    cap_exchange_set_error(x, CAP_E_TOKEN_IN_URL, NULL);
    return -1;
  }
  x->route = cap_router_find(cap_request_url(req), req->path_len, req->method, &status, &allow);
  if (x->route == NULL) {
    if (status == 405) {
      cap_exchange_header(x, "Allow", allow);
      cap_exchange_set_error(x, CAP_E_METHOD_NOT_ALLOWED, NULL);
    } else {
      cap_exchange_set_error(x, CAP_E_NOT_FOUND, NULL);
    }
    return -1;
  }
  if (req->expect_other) {
    cap_exchange_set_error(x, CAP_E_EXPECTATION_FAILED, NULL);
    return -1;
  }
  unsigned flags = x->route->flags;
  /* The metrics listener serves only what is meant for it, and with one
   * configured the public port no longer serves /metrics. */
  if (x->private_listener ? !(flags & CAP_ROUTE_PRIVATE)
                          : (flags & CAP_ROUTE_METRICS) && app->cfg->metrics_listen) {
    x->route = NULL;
    cap_exchange_set_error(x, CAP_E_NOT_FOUND, NULL);
    return -1;
  }
  if ((flags & CAP_ROUTE_RATELIMIT) && limited(x, app->rl_client, x->client, now_ms))
    return -1;
  if ((flags & CAP_ROUTE_AUTH) || ((flags & CAP_ROUTE_METRICS) && metrics_need_token(x))) {
    size_t len;
    const char *hdr = cap_request_header(req, "authorization", &len);
    x->token_name = cap_auth_check(&app->auth, hdr, len);
    if (x->token_name == NULL && !(app->cfg->insecure_no_auth && app->auth.n == 0)) {
      app->auth_failures++;
      cap_metrics_inc(CAP_M_AUTH_FAILURES, NULL);
      /* A wrong token costs the client a request of its bucket on every
       * route (/exec was charged above), so that guessing tokens on
       * /jobs or /metrics is as slow as on /exec.  Right tokens there
       * cost nothing: a Worker's polls are never limited. */
      if (!(flags & CAP_ROUTE_RATELIMIT) && limited(x, app->rl_client, x->client, now_ms))
        return -1;
      cap_exchange_header(x, "WWW-Authenticate", "Bearer");
      cap_exchange_set_error(x, CAP_E_UNAUTHORIZED, NULL);
      return -1;
    }
    if (x->token_name == NULL)
      x->token_name = "insecure";
  }
  if (flags & CAP_ROUTE_RATELIMIT) {
    char key[CAP_RATELIMIT_KEY_MAX + 1];
    snprintf(key, sizeof(key), "t:%s", x->token_name ? x->token_name : "-");
    if (limited(x, app->rl_token, key, now_ms))
      return -1;
  }
  if ((flags & CAP_ROUTE_JSON_BODY) && !content_type_is_json(req)) {
    cap_exchange_set_error(x, CAP_E_UNSUPPORTED_MEDIA_TYPE, NULL);
    return -1;
  }
  size_t max_body = x->route->has_body ? (size_t)app->cfg->max_body_bytes : 0;
  if (req->content_length > max_body) {
    cap_exchange_set_error(x, CAP_E_BODY_TOO_LARGE, NULL);
    return -1;
  }
  return 0;
}
