/* cap-server: runs ffmpeg and ffprobe for authenticated HTTP clients,
 * typically Cloudflare Workers reaching a workstation through Tailscale
 * Funnel.  main() wires configuration, logging, the shared state and the
 * server together and runs the one libuv loop. */
#include "app.h"
#include "config.h"
#include "health.h"
#include "log.h"
#include "proc.h"
#include "metrics.h"
#include "reqid.h"
#include "sandbox_exec.h"
#include "server.h"
#include "version.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

extern char **environ;

static void log_warning(const char *event, const char *key, const char *msg) {
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, event);
  cap_log_str(r, key, msg);
  cap_log_end(r);
}

/* The registry reports what /health shows: the load and the offer. */
static void report_load(void *app, struct cap_buf *out) {
  cap_health_load(app, out);
}

static void report_describe(void *app, struct cap_buf *out) {
  cap_health_describe(app, out);
}

/* Reads the configuration and opens the log.  Returns 0 to go on, or -1
 * when main ends at once with *status (cfg is freed by then, except after
 * a failed randomness check, which only exits). */
static int setup_config(struct cap_config *cfg, int argc, char **argv, int *status) {
  char err[700];
  int rc = cap_config_load(cfg, argc, argv, environ, err, sizeof(err));
  if (rc == CAP_CONFIG_HELP) {
    cap_config_usage(stdout);
    cap_config_free(cfg);
    *status = 0;
    return -1;
  }
  if (rc == CAP_CONFIG_VERSION) {
    printf("cap-server %s\n", CAP_VERSION);
    cap_config_free(cfg);
    *status = 0;
    return -1;
  }
  if (rc != 0) {
    fprintf(stderr, "cap-server: %s\n", err);
    cap_config_free(cfg);
    *status = 2;
    return -1;
  }
  if ((rc = cap_log_open(cfg->log_file)) != 0) {
    fprintf(stderr, "cap-server: log_file: cannot open %s: %s\n", cfg->log_file, strerror(-rc));
    cap_config_free(cfg);
    *status = 2;
    return -1;
  }
  cap_log_set_level(cfg->log_level);
  cap_metrics_init();
  if (cap_reqid_init() != 0) {
    fprintf(stderr, "cap-server: no randomness available from OpenSSL\n");
    *status = 1;
    return -1;
  }
  return 0;
}

/* Logs what an operator should fix in the set-up: a token on the command
 * line, a token file others can read, no token at all. */
static void warn_setup(const struct cap_config *cfg, const struct cap_app *app) {
  char err[700];
  int loose = 0;
  if (cfg->token_from_argv)
    log_warning("config.token_in_argv", "hint",
                "--token is visible to every user in ps; use --token-file or CAPABILITY_TOKEN");
  if (cfg->token_file) {
    /* The load in cap_app_init succeeded; look at the mode once more. */
    struct cap_auth probe;
    cap_auth_init(&probe);
    if (cap_auth_load_file(&probe, cfg->token_file, &loose, err, sizeof(err)) == 0 && loose)
      log_warning("auth.token_file_mode", "hint",
                  "the token file is readable by group or others; chmod 600 it");
    cap_auth_free(&probe);
  }
  if (app->auth.n == 0)
    log_warning("auth.disabled", "hint",
                "INSECURE: no token configured and --insecure-no-auth given; anyone who can "
                "reach this port can run jobs. Never expose this through Funnel.");
}

/* The server could not listen: says why, lets the app's handles close and
 * frees everything.  Returns main's exit status. */
static int listen_failed(const struct cap_config *cfg, struct cap_app *app, uv_loop_t *loop,
                         int rc) {
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_ERROR, "server.listen_failed");
  cap_log_str(r, "host", cfg->host);
  cap_log_int(r, "port", cfg->port);
  cap_log_str(r, "error", uv_strerror(rc));
  cap_log_end(r);
  cap_log_flush();
  fprintf(stderr, "cap-server: cannot listen on %s:%d: %s\n", cfg->host, cfg->port,
          uv_strerror(rc));
  cap_app_stop(app);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  cap_app_free(app);
  cap_log_close();
  return 1;
}

/* The last line of the log: what the run did and how it ended. */
static void log_stop(const struct cap_app *app, const struct cap_server *srv, int loop_rc) {
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "server.stop");
  cap_log_int(r, "requests", (long long)app->requests);
  cap_log_int(r, "connections", (long long)srv->accepted);
  cap_log_int(r, "rate_limited", (long long)app->rate_limited);
  cap_log_int(r, "auth_failures", (long long)app->auth_failures);
  cap_log_int(r, "jobs_succeeded", (long long)app->jobs.succeeded);
  cap_log_int(r, "jobs_failed", (long long)app->jobs.failed);
  cap_log_int(r, "jobs_canceled", (long long)app->jobs.canceled);
  cap_log_bool(r, "forced", srv->forced);
  cap_log_bool(r, "loop_closed", loop_rc == 0);
  cap_log_end(r);
}

int main(int argc, char **argv) {
  struct cap_config cfg;
  struct cap_app app;
  struct cap_server srv;
  char err[700];
  int rc;

  /* The sandbox helper runs between fork and exec of every child: it must
   * start from a clean slate, before anything below changes signals or
   * descriptors. */
  /* It ends with _exit: exit handlers (a sanitizer's leak check reads
   * /proc) may meet a sandbox that has already been applied. */
  if (argc > 1 && strcmp(argv[1], CAP_SANDBOX_FLAG) == 0)
    _exit(cap_sandbox_exec_main(argc - 1, argv + 1));
  /* Writes to a peer that has gone must fail with EPIPE, not kill us. */
  signal(SIGPIPE, SIG_IGN);
  /* Descriptors inherited from whoever started us must not reach ffmpeg. */
  cap_proc_cloexec_all();

  if (setup_config(&cfg, argc, argv, &rc) != 0)
    return rc;

  uv_loop_t *loop = uv_default_loop();
  rc = cap_app_init(&app, &cfg, loop, err, sizeof(err));
  if (rc == 0) {
    /* SIGHUP reads the command line again, for the log level. */
    app.argc = argc;
    app.argv = argv;
    rc = cap_app_load_presets(&app, err, sizeof(err));
  }
  if (rc != 0) {
    /* Both: a terminal shows stderr, journald and a log file get the line. */
    fprintf(stderr, "cap-server: %s\n", err);
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_ERROR, "server.start_failed");
    cap_log_str(r, "error", err);
    cap_log_end(r);
    cap_log_close();
    cap_config_free(&cfg);
    return 2;
  }
  /* Before the ffmpeg probe, whose children already run in the sandbox. */
  cap_sandbox_log_ready(&app.sandbox);
  warn_setup(&cfg, &app);

  /* The ffmpeg probe runs before we listen, so the first request already
   * sees which presets can run. */
  uv_run(loop, UV_RUN_DEFAULT);

  if ((rc = cap_server_start(&srv, loop, &app)) != 0) {
    rc = listen_failed(&cfg, &app, loop, rc);
    cap_config_free(&cfg);
    return rc;
  }

  cap_app_report(&app, report_load, report_describe);
  cap_app_start(&app);
  uv_run(loop, UV_RUN_DEFAULT);
  cap_server_close(&srv);
  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);

  log_stop(&app, &srv, rc);
  cap_app_free(&app);
  cap_metrics_free();
  cap_log_close();
  cap_config_free(&cfg);
  return rc == 0 ? 0 : 1;
}
