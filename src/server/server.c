#include "server.h"

#include "app.h"
#include "container.h"
#include "execreq.h"
#include "jsonw.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "version.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The metrics listener's own budget: a scraper and a health check need
 * a few, and a flood on the public port must not take them. */
#define METRICS_MAX_CONNECTIONS 64

static size_t open_connections(const struct cap_server *s) {
  return s->public_set.n + s->metrics_set.n;
}

/* Calls fn on every connection of both listeners; fn may close them. */
static void each_conn(struct cap_server *s, void (*fn)(struct cap_conn *)) {
  struct cap_connset *sets[] = {&s->public_set, &s->metrics_set};
  for (int i = 0; i < 2; i++)
    for (struct cap_connset_entry *e = sets[i]->first, *next; e; e = next) {
      next = e->next;
      fn(container_of(e, struct cap_conn, link));
    }
}

static void on_conn_closed(struct cap_conn *c, void *arg) {
  struct cap_server *s = arg;
  cap_metrics_set(CAP_M_CONNECTIONS_OPEN, NULL, (double)open_connections(s));
  if (s->stopping && open_connections(s) == 0 && !uv_is_closing((uv_handle_t *)&s->grace))
    uv_close((uv_handle_t *)&s->grace, NULL);
}

/* Closes an idle connection to make room for a new one. */
static void evict_idle(struct cap_connset_entry *e, void *arg) {
  cap_conn_evict(container_of(e, struct cap_conn, link));
}

static void free_handle(uv_handle_t *h) {
  free(h);
}

static void accept_one(struct cap_server *s, uv_stream_t *listener,
                       const struct cap_conn_opts *opts, int status) {
  if (status < 0) {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "server.accept_error");
    cap_log_str(r, "error", uv_strerror(status));
    cap_log_end(r);
    return;
  }
  struct cap_connset *set = opts->set;
  int refuse = !cap_connset_has_room(set);
  if (refuse)
    cap_metrics_inc(CAP_M_CONNECTIONS_SHED, CAP_LABELS(set->name, "connection_limit"));
  if (refuse && set->nrefused >= CAP_CONNSET_REFUSING_MAX) {
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
  struct cap_conn *c = cap_conn_accept(listener, opts, refuse);
  if (c == NULL)
    return;
  s->accepted++;
  cap_metrics_set(CAP_M_CONNECTIONS_OPEN, NULL, (double)open_connections(s));
  if (refuse) {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "server.connection_limit");
    cap_log_str(r, "listener", set->name);
    cap_log_int(r, "max_connections", (long long)set->max);
    cap_log_end(r);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  struct cap_server *s = listener->data;
  accept_one(s, listener, &s->conn_opts, status);
}

static void on_private_connection(uv_stream_t *listener, int status) {
  struct cap_server *s = listener->data;
  accept_one(s, listener, &s->private_opts, status);
}

/* How long connections get, once canceled jobs have answered their
 * waiters, before they are closed regardless. */
#define CANCEL_ANSWER_MS 1000

/* Closes every connection at once: the time for a clean stop is over. */
static void on_force_close(uv_timer_t *t) {
  struct cap_server *s = t->data;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "server.grace_expired");
  cap_log_int(r, "open_connections", (long long)open_connections(s));
  cap_log_end(r);
  s->forced = 1;
  each_conn(s, cap_conn_close);
}

/* The second half of a stop: the listener closes, idle connections close,
 * jobs still unfinished are canceled (their uploads aborted) and busy
 * connections get until the deadline to finish their answers. */
static void finish_stop(struct cap_server *s, const char *reason) {
  if (s->stopping)
    return;
  s->stopping = 1;
  uv_timer_stop(&s->grace);
  int running;
  size_t queued;
  cap_jobs_counts(&s->app->jobs, &running, &queued);
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "server.stopping");
  cap_log_str(r, "reason", reason);
  cap_log_int(r, "jobs_canceled", (long long)running + (long long)queued);
  cap_log_int(r, "open_connections", (long long)open_connections(s));
  cap_log_end(r);
  uv_close((uv_handle_t *)&s->listener, NULL);
  if (s->has_private)
    uv_close((uv_handle_t *)&s->private_listener, NULL);
  uv_close((uv_handle_t *)&s->sig_hup, NULL);
  uv_close((uv_handle_t *)&s->sig_usr1, NULL);
  /* SIGTERM and SIGINT stay caught (another one closes every connection
   * at once) but no longer keep the loop alive. */
  uv_unref((uv_handle_t *)&s->sig_term);
  uv_unref((uv_handle_t *)&s->sig_int);
  uv_unref((uv_handle_t *)&s->log_flush);
  each_conn(s, cap_conn_drain);
  /* Jobs are canceled (their children signalled); anyone waiting for one
   * is answered, on a connection that then closes. */
  cap_app_stop(s->app);
  if (open_connections(s) == 0) {
    uv_close((uv_handle_t *)&s->grace, NULL);
    return;
  }
  uint64_t now = uv_now(s->loop), left = s->deadline > now ? s->deadline - now : 0;
  if (running + (long)queued > 0 && left < CANCEL_ANSWER_MS)
    left = CANCEL_ANSWER_MS;
  uv_timer_start(&s->grace, on_force_close, left, 0);
}

static void on_drain_deadline(uv_timer_t *t) {
  struct cap_server *s = t->data;
  finish_stop(s, s->lingering ? "results_unfetched" : "grace_expired");
}

/* Every job is done.  Once every result the drain waited for has been
 * sent to a client the stop goes on; until then clients that poll get a
 * short while (within the grace) to fetch theirs. */
static void on_jobs_idle(void *arg, size_t undelivered) {
  struct cap_server *s = arg;
  if (undelivered == 0) {
    finish_stop(s, "jobs_done");
    return;
  }
  if (s->lingering || s->stopping)
    return;
  s->lingering = 1;
  uint64_t now = uv_now(s->loop), left = s->deadline > now ? s->deadline - now : 0;
  if ((uint64_t)s->app->cfg->drain_linger_ms < left)
    left = (uint64_t)s->app->cfg->drain_linger_ms;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "server.jobs_done");
  cap_log_int(r, "results_unfetched", (long long)undelivered);
  cap_log_int(r, "linger_ms", (long long)left);
  cap_log_end(r);
  uv_timer_start(&s->grace, on_drain_deadline, left, 0);
}

void cap_server_stop(struct cap_server *s) {
  if (s->stopping) {
    /* A signal during the second half means: now. */
    on_force_close(&s->grace);
    return;
  }
  if (s->draining) {
    /* A second signal cancels the jobs without waiting for the grace. */
    finish_stop(s, "signal");
    return;
  }
  s->draining = 1;
  s->deadline = uv_now(s->loop) + (uint64_t)s->app->cfg->shutdown_grace_ms;
  int running;
  size_t queued;
  cap_jobs_counts(&s->app->jobs, &running, &queued);
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "server.draining");
  cap_log_int(r, "open_connections", (long long)open_connections(s));
  cap_log_int(r, "jobs_running", running);
  cap_log_int(r, "jobs_queued", (long long)queued);
  cap_log_int(r, "grace_ms", s->app->cfg->shutdown_grace_ms);
  cap_log_end(r);
  char status[128];
  snprintf(status, sizeof(status), "STOPPING=1\nSTATUS=Draining: %d running, %zu queued", running,
           queued);
  cap_notify_send(status);
  /* Until the jobs are done the server keeps listening: /exec answers 503
   * draining, /health says draining, and job polls are served as usual. */
  uv_timer_start(&s->grace, on_drain_deadline, (uint64_t)s->app->cfg->shutdown_grace_ms, 0);
  cap_app_drain(s->app, on_jobs_idle, s);
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
  if (s->has_private)
    cap_log_int(r, "metrics_port", s->private_port);
  cap_log_int(r, "pid", (long long)uv_os_getpid());
  cap_log_json(r, "limits", limits);
  cap_log_json(r, "capabilities", caps.data);
  cap_log_int(r, "tokens", (long long)s->app->auth.n);
  cap_log_end(r);
  free(limits);
  cap_buf_free(&caps);
}

/* Binds host:port and listens on t with cb; *bound gets the port (for
 * port 0, the one the kernel picked).  Returns 0 or a UV_E* code, with t
 * closed. */
static int listen_on(struct cap_server *s, uv_tcp_t *t, const char *host, int port,
                     uv_connection_cb cb, int *bound) {
  struct sockaddr_storage addr;
  int rc, len = sizeof(addr);

  if (strchr(host, ':'))
    rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
  else
    rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    return rc;
  uv_tcp_init(s->loop, t);
  t->data = s;
  if ((rc = uv_tcp_bind(t, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)t, 511, cb)) != 0) {
    uv_close((uv_handle_t *)t, NULL);
    return rc;
  }
  uv_tcp_getsockname(t, (struct sockaddr *)&addr, &len);
  *bound = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                            : ((struct sockaddr_in *)&addr)->sin_port);
  return 0;
}

int cap_server_start(struct cap_server *s, uv_loop_t *loop, struct cap_app *app) {
  const struct cap_config *cfg = app->cfg;
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
      .min_body_rate = (uint64_t)cfg->min_body_rate,
      .set = &s->public_set,
      .on_closed = on_conn_closed,
      .arg = s,
  };
  cap_connset_init(&s->public_set, "public", (size_t)cfg->max_connections,
                   (size_t)cfg->max_connections_per_client, evict_idle, &s->public_set);
  cap_connset_init(&s->metrics_set, "metrics", METRICS_MAX_CONNECTIONS,
                   (size_t)cfg->max_connections_per_client, evict_idle, &s->metrics_set);
  if ((rc = listen_on(s, &s->listener, cfg->host, cfg->port, on_connection, &s->port)) != 0)
    goto fail;
  if (cfg->metrics_listen) {
    char host[64];
    int port;
    /* The config checked the syntax already. */
    cap_config_split_hostport(cfg->metrics_listen, host, sizeof(host), &port);
    s->private_opts = s->conn_opts;
    s->private_opts.private_listener = 1;
    s->private_opts.set = &s->metrics_set;
    rc = listen_on(s, &s->private_listener, host, port, on_private_connection, &s->private_port);
    if (rc != 0) {
      uv_close((uv_handle_t *)&s->listener, NULL);
      goto fail;
    }
    s->has_private = 1;
  }

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
  char ready[160];
  snprintf(ready, sizeof(ready), "READY=1\nSTATUS=Listening on port %d\nMAINPID=%d", s->port,
           (int)uv_os_getpid());
  cap_notify_send(ready);
  return 0;
fail:
  cap_connset_free(&s->public_set);
  cap_connset_free(&s->metrics_set);
  return rc;
}

void cap_server_close(struct cap_server *s) {
  uv_handle_t *hs[] = {(uv_handle_t *)&s->sig_term, (uv_handle_t *)&s->sig_int,
                       (uv_handle_t *)&s->log_flush, (uv_handle_t *)&s->grace};
  for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
    if (!uv_is_closing(hs[i]))
      uv_close(hs[i], NULL);
  /* Every connection has closed by now: uv_run returned. */
  cap_connset_free(&s->public_set);
  cap_connset_free(&s->metrics_set);
}
