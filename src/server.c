#include "server.h"

#include "app.h"
#include "execreq.h"
#include "jsonw.h"
#include "log.h"
#include "version.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Connections over the limit that may be answered 503 at the same time;
 * past this they are closed without a word. */
#define REFUSING_MAX 64

static void on_conn_closed(struct cap_conn *c, void *arg) {
  struct cap_server *s = arg;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (c->refuse)
    s->nrefusing--;
  else
    s->nconns--;
  if (s->stopping && s->conns == NULL && !uv_is_closing((uv_handle_t *)&s->grace))
    uv_close((uv_handle_t *)&s->grace, NULL);
}

static void free_handle(uv_handle_t *h) {
  free(h);
}

static void on_connection(uv_stream_t *listener, int status) {
  struct cap_server *s = listener->data;
  if (status < 0) {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "server.accept_error");
    cap_log_str(r, "error", uv_strerror(status));
    cap_log_end(r);
    return;
  }
  int refuse = s->nconns >= (size_t)s->app->cfg->max_connections;
  if (refuse && s->nrefusing >= REFUSING_MAX) {
    /* Accept only to close: leaving it in the backlog would keep it
     * waiting for nothing. */
    uv_tcp_t *t = malloc(sizeof(*t));
    if (t == NULL)
      return;
    uv_tcp_init(s->loop, t);
    uv_accept(listener, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, free_handle);
    return;
  }
  struct cap_conn *c = cap_conn_accept(listener, &s->conn_opts, refuse);
  if (c == NULL)
    return;
  s->accepted++;
  if (refuse)
    s->nrefusing++;
  else
    s->nconns++;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  if (refuse) {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "server.connection_limit");
    cap_log_int(r, "max_connections", s->app->cfg->max_connections);
    cap_log_end(r);
  }
}

static void on_grace_expired(uv_timer_t *t) {
  struct cap_server *s = t->data;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "server.grace_expired");
  cap_log_int(r, "open_connections", (long long)(s->nconns + s->nrefusing));
  cap_log_end(r);
  s->forced = 1;
  for (struct cap_conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    cap_conn_close(c);
  }
}

void cap_server_stop(struct cap_server *s) {
  if (s->stopping) {
    /* A second signal means: now. */
    on_grace_expired(&s->grace);
    return;
  }
  s->stopping = 1;
  s->app->draining = 1;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "server.draining");
  cap_log_int(r, "open_connections", (long long)s->nconns);
  cap_log_int(r, "grace_ms", s->app->cfg->shutdown_grace_ms);
  cap_log_end(r);
  uv_close((uv_handle_t *)&s->listener, NULL);
  uv_close((uv_handle_t *)&s->sig_hup, NULL);
  uv_close((uv_handle_t *)&s->sig_usr1, NULL);
  /* SIGTERM and SIGINT stay caught (a second one forces the stop) but no
   * longer keep the loop alive. */
  uv_unref((uv_handle_t *)&s->sig_term);
  uv_unref((uv_handle_t *)&s->sig_int);
  uv_unref((uv_handle_t *)&s->log_flush);
  for (struct cap_conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    cap_conn_drain(c);
  }
  /* Jobs are canceled (their children signalled); anyone waiting for one
   * is answered, on a connection that then closes. */
  cap_app_stop(s->app);
  if (s->conns == NULL)
    uv_close((uv_handle_t *)&s->grace, NULL);
  else
    uv_timer_start(&s->grace, on_grace_expired, (uint64_t)s->app->cfg->shutdown_grace_ms, 0);
}

static void on_stop_signal(uv_signal_t *h, int signum) {
  struct cap_server *s = h->data;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "server.signal");
  cap_log_str(r, "signal", signum == SIGINT ? "SIGINT" : "SIGTERM");
  cap_log_end(r);
  cap_server_stop(s);
}

static void on_sighup(uv_signal_t *h, int signum) {
  struct cap_server *s = h->data;
  cap_app_reload(s->app);
}

static void on_sigusr1(uv_signal_t *h, int signum) {
  int rc = cap_log_reopen();
  struct cap_log_rec *r = cap_log_begin(rc == 0 ? CAP_LOG_INFO : CAP_LOG_ERROR, "log.reopen");
  cap_log_bool(r, "ok", rc == 0);
  if (rc != 0)
    cap_log_str(r, "error", uv_strerror(rc));
  cap_log_end(r);
}

static void on_prepare(uv_prepare_t *p) {
  cap_log_flush();
}

static void log_start(struct cap_server *s) {
  const struct cap_config *cfg = s->app->cfg;
  char listen[128], *limits = cap_config_limits_json(cfg);
  struct cap_buf caps;
  cap_buf_init(&caps);
  cap_buf_putc(&caps, '[');
  for (size_t i = 0; cap_execreq_capabilities[i]; i++) {
    if (i)
      cap_buf_putc(&caps, ',');
    cap_jsonw_str(&caps, cap_execreq_capabilities[i], strlen(cap_execreq_capabilities[i]));
  }
  cap_buf_putc(&caps, ']');
  int v6 = strchr(cfg->host, ':') != NULL;
  snprintf(listen, sizeof(listen), v6 ? "[%s]:%d" : "%s:%d", cfg->host, s->port);
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "server.start");
  cap_log_str(r, "version", CAP_VERSION);
  cap_log_str(r, "host", cfg->host);
  cap_log_int(r, "port", s->port);
  cap_log_str(r, "listen", listen);
  cap_log_int(r, "pid", (long long)uv_os_getpid());
  cap_log_json(r, "limits", limits);
  cap_log_json(r, "capabilities", caps.data);
  cap_log_int(r, "tokens", (long long)s->app->auth.n);
  cap_log_end(r);
  free(limits);
  cap_buf_free(&caps);
}

int cap_server_start(struct cap_server *s, uv_loop_t *loop, struct cap_app *app) {
  const struct cap_config *cfg = app->cfg;
  struct sockaddr_storage addr;
  int rc;

  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->app = app;
  s->conn_opts = (struct cap_conn_opts){
      .app = app,
      .limits = {.max_header_bytes = (size_t)cfg->max_header_bytes,
                 .max_headers = (size_t)cfg->max_headers,
                 .max_url_bytes = (size_t)cfg->max_url_bytes},
      .header_timeout_ms = (uint64_t)cfg->header_timeout_ms,
      .body_timeout_ms = (uint64_t)cfg->body_timeout_ms,
      .idle_timeout_ms = (uint64_t)cfg->idle_timeout_ms,
      .on_closed = on_conn_closed,
      .arg = s,
  };
  if (strchr(cfg->host, ':'))
    rc = uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr);
  else
    rc = uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    return rc;

  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection)) != 0) {
    uv_close((uv_handle_t *)&s->listener, NULL);
    return rc;
  }
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);

  uv_signal_t *sigs[] = {&s->sig_term, &s->sig_int, &s->sig_hup, &s->sig_usr1};
  uv_signal_cb cbs[] = {on_stop_signal, on_stop_signal, on_sighup, on_sigusr1};
  int nums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
  for (int i = 0; i < 4; i++) {
    uv_signal_init(loop, sigs[i]);
    sigs[i]->data = s;
    uv_signal_start(sigs[i], cbs[i], nums[i]);
  }
  uv_timer_init(loop, &s->grace);
  s->grace.data = s;
  uv_prepare_init(loop, &s->log_flush);
  uv_prepare_start(&s->log_flush, on_prepare);
  log_start(s);
  return 0;
}

void cap_server_close(struct cap_server *s) {
  uv_handle_t *hs[] = {(uv_handle_t *)&s->sig_term, (uv_handle_t *)&s->sig_int,
                       (uv_handle_t *)&s->log_flush, (uv_handle_t *)&s->grace};
  for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
    if (!uv_is_closing(hs[i]))
      uv_close(hs[i], NULL);
}
