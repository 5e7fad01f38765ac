#include "reqlog.h"

#include "app.h"
#include "log.h"
#include "metrics.h"
#include "router.h"

#include <stdio.h>
#include <uv.h>

/* The most of X-Forwarded-For a log line carries. */
#define LOG_FORWARDED_MAX 256

/* Writes the request path into out with every segment that is a
 * configured token replaced by "[token]": a client that put its token in
 * the path (by mistake or to probe) must not find it in the logs. */
static void redacted_path(const struct cap_app *app, const char *path, size_t n,
                          struct cap_buf *out) {
  size_t seg = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && path[i] != '/' && path[i] != '?')
      continue;
    size_t len = i - seg;
    if (len > 0 && cap_auth_is_token(&app->auth, path + seg, len))
      cap_buf_puts(out, "[token]");
    else
      cap_buf_append(out, path + seg, len);
    if (i < n)
      cap_buf_putc(out, path[i]);
    seg = i + 1;
  }
}

/* The http.request line. */
static void log_request(const struct cap_reqlog *l) {
  const struct cap_exchange *x = l->x;
  const struct cap_request *req = &l->parser->req;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "http.request");
  size_t fwd_len = 0;
  const char *fwd = cap_request_header(req, "x-forwarded-for", &fwd_len);
  uint64_t now = l->now_ms;

  cap_log_str(r, "req_id", x->req_id);
  if (l->parser->in_body) {
    struct cap_buf path;
    cap_buf_init(&path);
    redacted_path(x->app, cap_request_url(req), req->path_len, &path);
    cap_log_str(r, "method", cap_request_method_name(req));
    cap_log_strn(r, "path", path.data ? path.data : "", path.len);
    cap_buf_free(&path);
  } else {
    cap_log_str(r, "method", NULL);
    cap_log_str(r, "path", NULL);
  }
  cap_log_int(r, "status", x->status);
  if (x->code)
    cap_log_str(r, "code", x->code);
  cap_log_int(r, "bytes_in", (long long)(l->parser->head_bytes + req->body.len));
  cap_log_int(r, "bytes_out", (long long)l->bytes_out);
  cap_log_int(r, "dur_ms", (long long)(now >= x->start_ms ? now - x->start_ms : 0));
  cap_log_str(r, "remote", x->client[0] ? x->client : l->peer_str);
  /* Only a trusted proxy's X-Forwarded-For means anything; anyone else's
   * is whatever the client wrote (a token, a screenful), so it stays out. */
  if (fwd && cap_netaddr_set_contains(&x->app->trusted, l->peer))
    cap_log_strn(r, "forwarded_for", fwd,
                 fwd_len < LOG_FORWARDED_MAX ? fwd_len : LOG_FORWARDED_MAX);
  else
    cap_log_str(r, "forwarded_for", NULL);
  cap_log_str(r, "peer", l->peer_str);
  if (x->token_name)
    cap_log_str(r, "token_name", x->token_name);
  cap_log_end(r);
}

/* Counts the answered request in the metrics, by route and status. */
static void count_request(const struct cap_exchange *x) {
  const char *route = x->route ? x->route->name : "other";
  char status[12];
  snprintf(status, sizeof(status), "%d", x->status);
  cap_metrics_inc(CAP_M_HTTP_REQUESTS, CAP_LABELS(route, status));
  cap_metrics_observe(CAP_M_HTTP_DURATION, CAP_LABELS(route),
                      (double)(uv_hrtime() - x->start_ns) / 1e9);
}

void cap_reqlog_write(const struct cap_reqlog *l) {
  log_request(l);
  count_request(l->x);
}
