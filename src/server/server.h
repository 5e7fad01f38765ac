#ifndef CAP_SERVER_H
#define CAP_SERVER_H

#include "conn.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct cap_app;

/* The listening socket, the set of open connections with its limit, and
 * the process signals: SIGTERM/SIGINT drain, SIGHUP reloads tokens,
 * SIGUSR1 reopens the log. */
struct cap_server {
  uv_loop_t *loop;
  struct cap_app *app;
  struct cap_conn_opts conn_opts;
  uv_tcp_t listener;
  /* The metrics listener (metrics_listen), for /metrics and /health. */
  struct cap_conn_opts private_opts;
  uv_tcp_t private_listener;
  int has_private;
  int private_port;
  uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
  uv_timer_t grace;
  uv_prepare_t log_flush;
  /* The connections of each listener, each with its own budget. */
  struct cap_connset public_set;
  struct cap_connset metrics_set;
  uint64_t accepted;
  int port;
  int draining;      /* SIGTERM came: no new jobs, the rest goes on. */
  uint64_t deadline; /* Loop time when the drain's grace runs out. */
  int lingering;     /* Jobs done; waiting for their results to be fetched. */
  int stopping;      /* Listener closed, jobs canceled, connections ending. */
  int forced;
};

/* Binds host:port from the app's config, starts listening and handling
 * signals on loop.  Returns 0 or a UV_E* code (the reason is logged). */
int cap_server_start(struct cap_server *s, uv_loop_t *loop, struct cap_app *app);
/* Starts a graceful stop in two halves.  First the drain: /exec answers
 * 503 while jobs already accepted go on and polls are served.  Once no job
 * is left, or shutdown_grace_ms has passed, the stop: the listener closes,
 * the remaining jobs are canceled, connections finish and uv_run returns.
 * Called again, it moves on to the next half (a third time closes every
 * connection at once). */
void cap_server_stop(struct cap_server *s);
/* Closes the handles that outlive the drain; call after uv_run returned,
 * then run the loop once more so their close callbacks run. */
void cap_server_close(struct cap_server *s);

#endif
