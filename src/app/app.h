#ifndef CAP_APP_H
#define CAP_APP_H

#include "auth.h"
#include "climits.h"
#include "config.h"
#include "curlloop.h"
#include "jobs.h"
#include "keypolicy.h"
#include "netaddr.h"
#include "ratelimit.h"
#include "sandbox.h"
#include "registry.h"
#include "objstore.h"
#include "outbox.h"
#include "whsecret.h"
#include "callback.h"
#include "storage.h"
#include "store.h"

#include <uv.h>

#include <stddef.h>
#include <stdint.h>

/* The state every request handler may read: configuration, accepted
 * tokens, rate limiters and counters.  main() owns it; the server, the
 * connections and the handlers borrow it. */
struct cap_app {
  const struct cap_config *cfg;
  struct cap_auth auth;
  struct cap_netaddr_set trusted;
  struct cap_ratelimit *rl_client;
  struct cap_ratelimit *rl_token;
  struct cap_store store;
  /* One curl multi for every outgoing request: storage and registry. */
  struct cap_curlloop curl;
  int curl_open;
  struct cap_storage storage;
  /* The jobs' way to objects, over storage and store. */
  struct cap_objstore objstore;
  struct cap_registry registry;
  int has_registry;
  int storage_stopped;
  int registry_stopped;
  struct cap_jobs jobs;
  /* Jobs and pending webhooks on disk (NULL with journal off). */
  struct cap_journal *journal;
  /* Webhooks: the signing secrets per token (re-read with the tokens on
   * SIGHUP), where callbacks may go, and the outbox that delivers them. */
  struct cap_whsecret whsecrets;
  struct cap_callback callback;
  struct cap_outbox outbox;
  /* What every child runs in, and the limits of each resource class. */
  struct cap_sandbox sandbox;
  struct cap_climits climits;
  struct cap_keypolicy *keypolicy;
  uv_loop_t *loop;
  int presets_probing;
  /* The command line, read again on SIGHUP for the log level. */
  int argc;
  char **argv;
  /* A SIGHUP reload waiting for its preset probe; it takes effect whole. */
  struct cap_auth reload_auth;
  struct cap_whsecret reload_whsecrets;
  int reload_wh_loose;
  enum cap_log_level reload_level;
  int reload_loose;
  int reload_pending;
  int reload_again;
  uint64_t start_ms;
  int draining;
  uint64_t requests;
  uint64_t rate_limited;
  uint64_t auth_failures;
};

/* Sets up app from cfg (which must outlive it) on loop: loads tokens,
 * parses the trusted proxies and key policies, opens the object store and
 * the job table.  Returns 0 or -EINVAL with "key: reason" in err. */
int cap_app_init(struct cap_app *app, const struct cap_config *cfg, uv_loop_t *loop, char *err,
                 size_t errlen);
/* Loads the presets and starts probing ffmpeg for them; the job table gets
 * them when the probe is done (run the loop).  Returns 0 or -EINVAL. */
int cap_app_load_presets(struct cap_app *app, char *err, size_t errlen);
/* SIGHUP: reads the config (for the log level), tokens and presets again
 * and, after a new ffmpeg probe, puts all three in place at once; a broken
 * file keeps the whole old state.  Every outcome is logged. */
void cap_app_reload(struct cap_app *app);
/* Says where the registry client gets the load and the description it
 * reports (the /health handler's builders, from the layer above); set it
 * before cap_app_start.  Both are called with app. */
void cap_app_report(struct cap_app *app, void (*load)(void *app, struct cap_buf *out),
                    void (*describe)(void *app, struct cap_buf *out));
/* Starts the storage (bucket check, orphan sweep) and the registry client
 * once the server listens. */
void cap_app_start(struct cap_app *app);
/* Starts draining: /exec is refused from now on, the server deregisters;
 * cb runs as for cap_jobs_drain. */
void cap_app_drain(struct cap_app *app, void (*cb)(void *arg, size_t undelivered), void *arg);
/* Cancels every job and, once their uploads are aborted, closes the
 * storage's handles, so that the loop can end. */
void cap_app_stop(struct cap_app *app);
void cap_app_free(struct cap_app *app);

#endif
