#include "app.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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

int cap_app_init(struct cap_app *app, const struct cap_config *cfg, uint64_t now_ms, char *err,
                 size_t errlen) {
  int loose = 0;
  memset(app, 0, sizeof(*app));
  app->cfg = cfg;
  app->start_ms = now_ms;
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
  app->rl_client = cap_ratelimit_new((unsigned)cfg->rate_limit, (size_t)cfg->rate_limit_clients);
  app->rl_token = cap_ratelimit_new((unsigned)cfg->rate_limit_token, 1024);
  return 0;
fail:
  cap_app_free(app);
  return -EINVAL;
}

void cap_app_free(struct cap_app *app) {
  cap_auth_free(&app->auth);
  cap_netaddr_set_free(&app->trusted);
  cap_ratelimit_free(app->rl_client);
  cap_ratelimit_free(app->rl_token);
  app->rl_client = app->rl_token = NULL;
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
