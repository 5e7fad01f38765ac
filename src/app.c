#include "app.h"

#include "ffcaps.h"
#include "log.h"
#include "preset.h"

#include <errno.h>
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
  if (cap_netaddr_set_parse(&app->trusted, cfg->trusted_proxies) != 0) {
    snprintf(err, errlen, "trusted_proxies: not a list of IPs and CIDRs (got \"%.64s\")",
             cfg->trusted_proxies);
    goto fail;
  }
  if (cap_keypolicy_parse(cfg->token_prefixes, &app->keypolicy, err, errlen) != 0)
    goto fail;
  if (cap_storage_init(&app->storage, cfg, environ, loop, err, errlen) != 0)
    goto fail;
  /* The local store holds the objects (file storage) or only the temp
   * files of jobs (S3: downloaded inputs, outputs that need seeking). */
  if (cap_store_open(&app->store,
                     app->storage.kind == CAP_STORAGE_FILE ? app->storage.file_root : cfg->data_dir,
                     err, errlen) != 0)
    goto fail;
  app->rl_client = cap_ratelimit_new((unsigned)cfg->rate_limit, (size_t)cfg->rate_limit_clients);
  app->rl_token = cap_ratelimit_new((unsigned)cfg->rate_limit_token, 1024);
  cap_jobs_init(&app->jobs, loop, cfg, &app->store);
  app->jobs.storage = &app->storage;
  return 0;
fail:
  cap_app_free(app);
  return -EINVAL;
}

void cap_app_free(struct cap_app *app) {
  if (app->jobs.slots)
    cap_jobs_free(&app->jobs);
  cap_auth_free(&app->auth);
  cap_netaddr_set_free(&app->trusted);
  cap_ratelimit_free(app->rl_client);
  cap_ratelimit_free(app->rl_token);
  app->rl_client = app->rl_token = NULL;
  cap_keypolicy_free(app->keypolicy);
  app->keypolicy = NULL;
  cap_store_close(&app->store);
  cap_storage_free(&app->storage);
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

static void on_probed(struct cap_presets *set, int status, void *arg) {
  struct cap_app *app = arg;
  app->presets_probing = 0;
  if (status != 0) {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_ERROR, "presets.ffmpeg_missing");
    cap_log_str(r, "ffmpeg", app->cfg->ffmpeg);
    cap_log_str(r, "error", uv_strerror(status));
    cap_log_end(r);
  }
  log_presets(set, "presets.probe");
  cap_jobs_set_presets(&app->jobs, set);
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_INFO, "presets.loaded");
  cap_log_int(r, "presets", (long long)set->n);
  cap_log_str(r, "source", app->cfg->presets ? app->cfg->presets : "built-in");
  cap_log_end(r);
}

int cap_app_load_presets(struct cap_app *app, char *err, size_t errlen) {
  struct cap_presets *set;
  char why[512];
  if (cap_preset_load(app->cfg->presets, &set, why, sizeof(why)) != 0) {
    snprintf(err, errlen, "presets: %s", why);
    return -EINVAL;
  }
  app->presets_probing = 1;
  return cap_ffcaps_probe(app->loop, app->cfg->ffmpeg, set, on_probed, app);
}

int cap_app_reload_tokens(struct cap_app *app, int *loose_mode, char *err, size_t errlen) {
  struct cap_auth fresh;
  int rc;
  cap_auth_init(&fresh);
  rc = load_tokens(app->cfg, &fresh, loose_mode, err, errlen);
  if (rc == 0 && fresh.n == 0 && !app->cfg->insecure_no_auth) {
    snprintf(err, errlen, "token: no token left after reload");
    rc = -EINVAL;
  }
  if (rc != 0) {
    cap_auth_free(&fresh);
    return rc;
  }
  cap_auth_replace(&app->auth, &fresh);
  return 0;
}

void cap_app_reload(struct cap_app *app) {
  char err[600];
  int loose = 0;
  int rc = cap_app_reload_tokens(app, &loose, err, sizeof(err));
  struct cap_log_rec *r = cap_log_begin(rc == 0 ? CAP_LOG_INFO : CAP_LOG_ERROR, "auth.reload");
  cap_log_bool(r, "ok", rc == 0);
  if (rc == 0)
    cap_log_int(r, "tokens", (long long)app->auth.n);
  else
    cap_log_str(r, "error", err);
  cap_log_end(r);
  if (rc == 0 && loose) {
    r = cap_log_begin(CAP_LOG_WARN, "auth.token_file_mode");
    cap_log_str(r, "path", app->cfg->token_file);
    cap_log_str(r, "hint", "chmod 600 the token file");
    cap_log_end(r);
  }
  if (app->presets_probing)
    return; /* The probe under way will install what it loaded. */
  rc = cap_app_load_presets(app, err, sizeof(err));
  if (rc != 0) {
    r = cap_log_begin(CAP_LOG_ERROR, "presets.reload");
    cap_log_bool(r, "ok", 0);
    cap_log_str(r, "error", err);
    cap_log_end(r);
  }
}

void cap_app_start(struct cap_app *app) {
  cap_storage_start(&app->storage);
}

static void on_jobs_quiet(void *arg) {
  struct cap_app *app = arg;
  cap_storage_stop(&app->storage);
}

void cap_app_stop(struct cap_app *app) {
  app->jobs.on_quiet = on_jobs_quiet;
  app->jobs.quiet_arg = app;
  cap_jobs_stop(&app->jobs);
}
