#ifndef CAP_REGISTRY_H
#define CAP_REGISTRY_H

#include "buf.h"
#include "curlloop.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The client of a capability registry (the reference one is a Cloudflare
 * Durable Object): it registers every capability under this server's
 * public name, sends a heartbeat with the current load every few seconds,
 * registers again when the registry has forgotten it, and deregisters when
 * the server drains.  One request at a time, through the shared curl multi
 * on the loop; failures are retried with growing delays and never touch
 * serving or jobs.  An outage is logged once when it starts and once when
 * it ends, not per attempt. */

/* What the owner tells the registry about the server. */
struct cap_registry_hooks {
  /* Appends the JSON object of the current load: running, queued, slots,
   * free, classes, draining. */
  void (*load)(void *arg, struct cap_buf *out);
  /* Appends the extra fields of a registration, each starting with a
   * comma: version, presets, pools. */
  void (*describe)(void *arg, struct cap_buf *out);
  void *arg;
};

struct cap_registry_settings {
  const char *url;      /* Base URL, http(s)://host[:port][/path], no trailing slash needed. */
  const char *token;    /* Bearer token for register/heartbeat/deregister. */
  const char *provider; /* The public host name Workers reach this server at. */
  int port;             /* Its public HTTPS port (443 through Funnel). */
  int heartbeat_ms;
  const char *const *capabilities; /* NULL-terminated. */
};

struct cap_registry {
  uv_loop_t *loop;
  struct cap_curlloop *cl;
  struct cap_registry_hooks hooks;
  char *url, *token, *provider;
  int port;
  int heartbeat_ms;
  const char *const *capabilities;
  uv_timer_t timer;
  int timer_open;
  CURL *easy; /* The request under way, or NULL. */
  struct curl_slist *headers;
  struct cap_buf body, resp;
  int step;    /* What the request under way (or the next one) does. */
  size_t next; /* The capability to register next. */
  int failing; /* Attempts that failed since the last success. */
  uint64_t down_since;
  uint64_t backoff_ms;
  int started;
  int want_register; /* Register again after the exchange under way. */
  int stopping;
  void (*on_stopped)(void *arg);
  void *stopped_arg;
  uint64_t registrations, heartbeats;
};

/* Sets r up (copying the settings' strings); nothing is sent before
 * cap_registry_start.  Returns 0 or -EINVAL with the reason in err. */
int cap_registry_init(struct cap_registry *r, uv_loop_t *loop, struct cap_curlloop *cl,
                      const struct cap_registry_settings *s, const struct cap_registry_hooks *hooks,
                      char *err, size_t errlen);
/* Registers every capability, then sends heartbeats. */
void cap_registry_start(struct cap_registry *r);
/* Registers again soon (the presets changed), keeping the heartbeats. */
void cap_registry_refresh(struct cap_registry *r);
/* Deregisters (one attempt, a few seconds at most) and closes the timer;
 * done(arg) runs once that is over.  Safe on a registry never started. */
void cap_registry_stop(struct cap_registry *r, void (*done)(void *arg), void *arg);
/* Frees what r holds once stopped (or never started) and the loop has run. */
void cap_registry_free(struct cap_registry *r);

#endif
