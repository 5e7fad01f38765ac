#include "app.h"

#include "execreq.h"
#include "journal.h"
#include "ffcaps.h"
#include "log.h"
#include "preset.h"
#include "proc.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

extern char **environ;

/* Builds the token set from the config: the token file plus a token given
 * by flag or environment. */
static int load_tokens(const struct cap_config *cfg, struct cap_auth *out, int *loose_mode,
                       char *err, size_t errlen) {
  char why[512];
  int rc;
  *loose_mode = 0;
  if (cfg->token &&
      cap_auth_add(out, "default", cfg->token, strlen(cfg->token), why, sizeof(why)) != 0) {
    snprintf(err, errlen, "token: %s", why);
    return -EINVAL;
  }
  if (cfg->token_file &&
      (rc = cap_auth_load_file(out, cfg->token_file, loose_mode, why, sizeof(why))) != 0) {
    snprintf(err, errlen, "token_file: %s", why);
    return rc;
  }
  return 0;
}

/* Loads the webhook secrets file (when set) into out. */
static int load_whsecrets(const struct cap_config *cfg, struct cap_whsecret *out, int *loose_mode,
                          char *err, size_t errlen) {
  char why[512];
  *loose_mode = 0;
  if (cfg->webhook_secrets_file == NULL)
    return 0;
  int rc = cap_whsecret_load_file(out, cfg->webhook_secrets_file, loose_mode, why, sizeof(why));
  if (rc != 0)
    snprintf(err, errlen, "webhook_secrets_file: %s", why);
  return rc;
}

static void warn_whsecrets_mode(const struct cap_config *cfg) {
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "webhook.secrets_file_mode");
  cap_log_str(r, "path", cfg->webhook_secrets_file);
  cap_log_str(r, "hint", "the webhook secrets file is readable by group or others; chmod 600 it");
  cap_log_end(r);
}

/* Reads a one-line secret (the first non-empty line, trimmed) from path. */
static int read_secret(const char *path, char *out, size_t outlen, char *err, size_t errlen) {
  char line[1024];
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    snprintf(err, errlen, "registry_token_file: cannot open %s: %s", path, strerror(errno));
    return -errno;
  }
  out[0] = '\0';
  while (out[0] == '\0' && fgets(line, sizeof(line), f)) {
    char *s = line, *e = line + strlen(line);
    while (*s == ' ' || *s == '\t')
      s++;
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
      *--e = '\0';
    snprintf(out, outlen, "%s", s);
  }
  fclose(f);
  memset(line, 0, sizeof(line));
  if (out[0] == '\0') {
    snprintf(err, errlen, "registry_token_file: %s holds no token", path);
    return -EINVAL;
  }
  return 0;
}

static int init_registry(struct cap_app *app, char *err, size_t errlen) {
  const struct cap_config *cfg = app->cfg;
  char token[600];
  int rc;
  if (cfg->registry_token_file) {
    if ((rc = read_secret(cfg->registry_token_file, token, sizeof(token), err, errlen)) != 0)
      return rc;
  } else {
    snprintf(token, sizeof(token), "%s", cfg->registry_token);
  }
  struct cap_registry_settings s = {
      .url = cfg->registry_url,
      .token = token,
      .provider = cfg->public_host,
      .port = cfg->public_port,
      .heartbeat_ms = cfg->heartbeat_s * 1000,
      .capabilities = cap_execreq_capabilities,
  };
  /* What the registry reports comes from a layer above (cap_app_report). */
  struct cap_registry_hooks hooks = {NULL, NULL, app};
  rc = cap_registry_init(&app->registry, app->loop, &app->curl, &s, &hooks, err, errlen);
  memset(token, 0, sizeof(token));
  if (rc == 0)
    app->has_registry = 1;
  return rc;
}

void cap_app_report(struct cap_app *app, void (*load)(void *app, struct cap_buf *out),
                    void (*describe)(void *app, struct cap_buf *out)) {
  app->registry.hooks.load = load;
  app->registry.hooks.describe = describe;
}

/* Opens the journal (journal on): cfg->journal_path, or journal.db in the
 * data directory, which is made when missing. */
static int open_journal(struct cap_app *app, char *err, size_t errlen) {
  const struct cap_config *cfg = app->cfg;
  char path[4096];
  if (strcmp(cfg->journal, "off") == 0)
    return 0;
  if (strcmp(cfg->journal, "on") != 0) {
    snprintf(err, errlen, "journal: must be on or off (got \"%.32s\")", cfg->journal);
    return -EINVAL;
  }
  if (cfg->journal_path) {
    snprintf(path, sizeof(path), "%s", cfg->journal_path);
  } else {
    snprintf(path, sizeof(path), "%s/%s", cfg->data_dir, CAP_STORE_STATE_DIR);
    if ((mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) ||
        (mkdir(path, 0700) != 0 && errno != EEXIST)) {
      snprintf(err, errlen, "journal: cannot create %s: %s (or set journal_path / --journal off)",
               path, strerror(errno));
      return -EINVAL;
    }
    snprintf(path, sizeof(path), "%s/%s/journal.db", cfg->data_dir, CAP_STORE_STATE_DIR);
  }
  int rc = cap_journal_open(path, cfg->journal_reset, &app->journal, err, errlen);
  if (rc != 0)
    return rc;
  int64_t jobs, events;
  struct cap_journal_stats st;
  cap_journal_counts(app->journal, &jobs, &events);
  cap_journal_stats(app->journal, &st);
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "journal.opened");
  cap_log_str(r, "path", path);
  cap_log_int(r, "jobs", (long long)jobs);
  cap_log_int(r, "events", (long long)events);
  cap_log_int(r, "size_bytes", (long long)st.size_bytes);
  cap_log_end(r);
  rc = cap_journal_attach(app->journal, app->loop);
  if (rc != 0) {
    snprintf(err, errlen, "journal: %s", uv_strerror(rc));
    return rc;
  }
  return 0;
}

int cap_app_init(struct cap_app *app, const struct cap_config *cfg, uv_loop_t *loop, char *err,
                 size_t errlen) {
  int loose = 0;
  memset(app, 0, sizeof(*app));
  app->cfg = cfg;
  app->loop = loop;
  app->start_ms = uv_now(loop);
  app->store.root_fd = app->store.tmp_fd = -1;
  cap_auth_init(&app->auth);
  if (load_tokens(cfg, &app->auth, &loose, err, errlen) != 0)
    goto fail;
  if (app->auth.n == 0 && !cfg->insecure_no_auth) {
    snprintf(err, errlen,
             "token: no token configured; set CAPABILITY_TOKEN or --token-file "
             "(or --insecure-no-auth for local development)");
    goto fail;
  }
  if (load_whsecrets(cfg, &app->whsecrets, &loose, err, errlen) != 0)
    goto fail;
  if (loose)
    warn_whsecrets_mode(cfg);
  if (cap_callback_init(&app->callback, cfg->callback_hosts, cfg->callback_allow_cidrs, err,
                        errlen) != 0)
    goto fail;
  if (cap_netaddr_set_parse(&app->trusted, cfg->trusted_proxies) != 0) {
    snprintf(err, errlen, "trusted_proxies: not a list of IPs and CIDRs (got \"%.64s\")",
             cfg->trusted_proxies);
    goto fail;
  }
  if (cap_keypolicy_parse(cfg->token_prefixes, &app->keypolicy, err, errlen) != 0)
    goto fail;
  if (cap_climits_parse(cfg->class_limits, &app->climits, err, errlen) != 0)
    goto fail;
  if (cap_sandbox_init(&app->sandbox, cfg->sandbox, cfg->sandbox_abi, cfg->sandbox_read_paths, err,
                       errlen) != 0)
    goto fail;
  if (cap_curlloop_init(&app->curl, loop) != 0) {
    snprintf(err, errlen, "storage: libcurl could not be initialised");
    goto fail;
  }
  app->curl_open = 1;
  /* libcurl's multi handle opens a socket pair without close-on-exec. */
  cap_proc_cloexec_all();
  if (cap_storage_init(&app->storage, cfg, environ, loop, &app->curl, err, errlen) != 0)
    goto fail;
  if (cfg->registry_url && init_registry(app, err, errlen) != 0)
    goto fail;
  /* The local store holds the objects (file storage) or only the temp
   * files of jobs (S3: downloaded inputs, outputs that need seeking). */
  if (cap_store_open(&app->store,
                     app->storage.kind == CAP_STORAGE_FILE ? app->storage.file_root : cfg->data_dir,
                     err, errlen) != 0)
    goto fail;
  cap_objstore_init(&app->objstore, &app->storage, &app->store);
  app->rl_client = cap_ratelimit_new((unsigned)cfg->rate_limit, (size_t)cfg->rate_limit_clients);
  app->rl_token = cap_ratelimit_new((unsigned)cfg->rate_limit_token, 1024);
  if (open_journal(app, err, errlen) != 0)
    goto fail;
  cap_jobs_init(&app->jobs, loop, cfg, &app->store);
  app->jobs.objstore = &app->objstore;
  app->jobs.sandbox = &app->sandbox;
  app->jobs.climits = &app->climits;
  /* Webhooks go through the shared curl multi; what a previous run left
   * undelivered is read back now and sent once the server listens. */
  cap_outbox_init(&app->outbox, loop, &app->curl, cfg, app->journal, &app->whsecrets,
                  &app->callback);
  cap_outbox_load(&app->outbox);
  cap_jobs_set_journal(&app->jobs, app->journal, &app->outbox);
  return 0;
fail:
  /* The curl multi handle holds memory and a timer on the loop, and so
   * does the journal's checkpointer: close them and let the loop run
   * their close callbacks. */
  cap_journal_detach(app->journal);
  if (app->curl_open) {
    app->curl_open = 0;
    cap_curlloop_close(&app->curl, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
  }
  cap_app_free(app);
  return -EINVAL;
}

void cap_app_free(struct cap_app *app) {
  if (app->jobs.slots)
    cap_jobs_free(&app->jobs);
  cap_journal_close(app->journal);
  app->journal = NULL;
  cap_auth_free(&app->auth);
  if (app->reload_pending)
    cap_auth_free(&app->reload_auth);
  cap_netaddr_set_free(&app->trusted);
  cap_outbox_free(&app->outbox);
  cap_whsecret_free(&app->whsecrets);
  cap_whsecret_free(&app->reload_whsecrets);
  cap_callback_free(&app->callback);
  cap_ratelimit_free(app->rl_client);
  cap_ratelimit_free(app->rl_token);
  app->rl_client = app->rl_token = NULL;
  cap_keypolicy_free(app->keypolicy);
  app->keypolicy = NULL;
  cap_store_close(&app->store);
  cap_storage_free(&app->storage);
  if (app->has_registry)
    cap_registry_free(&app->registry);
  cap_sandbox_free(&app->sandbox);
  cap_climits_free(&app->climits);
}

static void log_presets(const struct cap_presets *set, const char *event) {
  for (size_t i = 0; i < set->n; i++) {
    const struct cap_preset *p = &set->v[i];
    struct cap_log_rec *r = cap_log_begin(p->available ? CAP_LOG_DEBUG : CAP_LOG_WARN, event);
    cap_log_str(r, "preset", p->name);
    cap_log_bool(r, "available", p->available);
    if (!p->available)
      cap_log_str(r, "reason", p->unavailable_reason);
    cap_log_end(r);
  }
}

static void commit_reload(struct cap_app *app) {
  cap_auth_replace(&app->auth, &app->reload_auth);
  /* Waiting webhooks are signed with the new secrets from now on. */
  cap_whsecret_replace(&app->whsecrets, &app->reload_whsecrets);
  app->reload_pending = 0;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "auth.reload");
  cap_log_bool(r, "ok", 1);
  cap_log_int(r, "tokens", (long long)app->auth.n);
  cap_log_int(r, "webhook_secrets", (long long)app->whsecrets.n);
  cap_log_end(r);
  if (app->reload_wh_loose)
    warn_whsecrets_mode(app->cfg);
  if (app->reload_loose) {
    r = cap_log_begin(CAP_LOG_WARN, "auth.token_file_mode");
    cap_log_str(r, "path", app->cfg->token_file);
    cap_log_str(r, "hint", "chmod 600 the token file");
    cap_log_end(r);
  }
  r = cap_log_begin(CAP_LOG_INFO, "config.reload");
  cap_log_bool(r, "ok", 1);
  cap_log_str(r, "log_level", cap_log_level_name(app->reload_level));
  cap_log_end(r);
  /* Last, so that the lines about the reload itself are written under the
   * level they were asked for with. */
  cap_log_set_level(app->reload_level);
}

static void on_probed(struct cap_presets *set, int status, void *arg) {
  struct cap_app *app = arg;
  app->presets_probing = 0;
  if (status != 0) {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_ERROR, "presets.ffmpeg_missing");
    cap_log_str(r, "ffmpeg", app->cfg->ffmpeg);
    cap_log_str(r, "error", uv_strerror(status));
    cap_log_end(r);
  }
  /* A reload takes effect whole: tokens, log level and presets together. */
  if (app->reload_pending)
    commit_reload(app);
  log_presets(set, "presets.probe");
  cap_jobs_set_presets(&app->jobs, set);
  /* The registry learns which presets can run now. */
  if (app->has_registry)
    cap_registry_refresh(&app->registry);
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "presets.loaded");
  cap_log_int(r, "presets", (long long)set->n);
  cap_log_str(r, "source", app->cfg->presets ? app->cfg->presets : "built-in");
  cap_log_end(r);
  if (app->reload_again && !app->draining) {
    app->reload_again = 0;
    cap_app_reload(app);
  }
}

int cap_app_load_presets(struct cap_app *app, char *err, size_t errlen) {
  struct cap_presets *set;
  char why[512];
  if (cap_preset_load(app->cfg->presets, &set, why, sizeof(why)) != 0) {
    snprintf(err, errlen, "presets: %s", why);
    return -EINVAL;
  }
  app->presets_probing = 1;
  return cap_ffcaps_probe(app->loop, app->cfg->ffmpeg, &app->sandbox, set, on_probed, app);
}

/* Loads the tokens again into app->reload_auth, not yet in use; on failure
 * err says why.  Returns 0 or a negative errno. */
static int reload_tokens(struct cap_app *app, int *loose_mode, char *err, size_t errlen) {
  int rc = load_tokens(app->cfg, &app->reload_auth, loose_mode, err, errlen);
  if (rc == 0 && app->reload_auth.n == 0 && !app->cfg->insecure_no_auth) {
    snprintf(err, errlen, "token: no token left after reload");
    rc = -EINVAL;
  }
  /* The webhook secrets belong to the tokens: they change together. */
  cap_whsecret_init(&app->reload_whsecrets);
  if (rc == 0)
    rc = load_whsecrets(app->cfg, &app->reload_whsecrets, &app->reload_wh_loose, err, errlen);
  if (rc != 0) {
    cap_auth_free(&app->reload_auth);
    cap_whsecret_free(&app->reload_whsecrets);
  }
  return rc;
}

static void log_reload_failure(const char *event, const char *err) {
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_ERROR, event);
  cap_log_bool(r, "ok", 0);
  cap_log_str(r, "error", err);
  cap_log_str(r, "kept", "the previous tokens, presets and log level");
  cap_log_end(r);
}

void cap_app_reload(struct cap_app *app) {
  char err[600], why[512];
  struct cap_presets *set = NULL;
  int rc;

  if (app->presets_probing) {
    /* One reload at a time: this one follows when the probe is done. */
    app->reload_again = 1;
    return;
  }
  /* Everything is read and checked before anything changes, so that a
   * broken file leaves the running state whole. */
  app->reload_level = cap_log_get_level();
  if (app->argv) {
    struct cap_config fresh;
    rc = cap_config_load(&fresh, app->argc, app->argv, environ, err, sizeof(err));
    if (rc == 0)
      app->reload_level = fresh.log_level;
    cap_config_free(&fresh);
    if (rc != 0) {
      log_reload_failure("config.reload", err);
      return;
    }
  }
  cap_auth_init(&app->reload_auth);
  rc = reload_tokens(app, &app->reload_loose, err, sizeof(err));
  if (rc != 0) {
    log_reload_failure("auth.reload", err);
    return;
  }
  if (cap_preset_load(app->cfg->presets, &set, why, sizeof(why)) != 0) {
    cap_auth_free(&app->reload_auth);
    cap_whsecret_free(&app->reload_whsecrets);
    snprintf(err, sizeof(err), "presets: %s", why);
    log_reload_failure("presets.reload", err);
    return;
  }
  app->reload_pending = 1;
  app->presets_probing = 1;
  rc = cap_ffcaps_probe(app->loop, app->cfg->ffmpeg, &app->sandbox, set, on_probed, app);
  if (rc != 0) {
    app->presets_probing = 0;
    app->reload_pending = 0;
    cap_auth_free(&app->reload_auth);
    cap_whsecret_free(&app->reload_whsecrets);
    cap_preset_set_free(set);
    snprintf(err, sizeof(err), "presets: cannot probe ffmpeg: %s", uv_strerror(rc));
    log_reload_failure("presets.reload", err);
  }
}

void cap_app_start(struct cap_app *app) {
  cap_objstore_start(&app->objstore);
  /* The journal's jobs come back once the store can take their cleanup. */
  cap_jobs_restore(&app->jobs);
  cap_outbox_start(&app->outbox);
  if (app->has_registry)
    cap_registry_start(&app->registry);
}

/* The curl multi closes last: after the storage's and the registry's
 * requests are over. */
static void maybe_close_curl(struct cap_app *app) {
  if (app->storage_stopped && (app->registry_stopped || !app->has_registry) && app->curl_open) {
    app->curl_open = 0;
    /* Webhook attempts under way are abandoned, not waited for: their
     * events stay in the journal and are sent after a restart. */
    cap_outbox_stop(&app->outbox);
    cap_curlloop_close(&app->curl, NULL);
  }
}

static void on_registry_stopped(void *arg) {
  struct cap_app *app = arg;
  app->registry_stopped = 1;
  maybe_close_curl(app);
}

static void on_jobs_quiet(void *arg) {
  struct cap_app *app = arg;
  cap_journal_detach(app->journal);
  cap_objstore_stop(&app->objstore);
  app->storage_stopped = 1;
  maybe_close_curl(app);
}

void cap_app_drain(struct cap_app *app, void (*cb)(void *arg, size_t undelivered), void *arg) {
  app->draining = 1;
  /* Leave the registry first, so that Workers stop sending work here. */
  if (app->has_registry)
    cap_registry_stop(&app->registry, on_registry_stopped, app);
  cap_jobs_drain(&app->jobs, cb, arg);
}

void cap_app_stop(struct cap_app *app) {
  if (app->has_registry)
    cap_registry_stop(&app->registry, on_registry_stopped, app);
  app->jobs.on_quiet = on_jobs_quiet;
  app->jobs.quiet_arg = app;
  cap_jobs_stop(&app->jobs);
}
