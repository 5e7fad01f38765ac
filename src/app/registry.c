#include "registry.h"

#include "alloc.h"
#include "jsonw.h"
#include "log.h"
#include "version.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Retries of a failed request start here and double up to the maximum. */
#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS   60000
/* A registry that does not answer in time counts as down. */
#define REQUEST_TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 5000
/* Deregistering must not hold a shutdown for long. */
#define DEREGISTER_TIMEOUT_MS 3000
/* Answers are short JSON; anything longer is cut (only logs read it). */
#define RESP_MAX 4096

enum step { STEP_REGISTER, STEP_HEARTBEAT, STEP_DEREGISTER };

static const char *const step_names[] = {"register", "heartbeat", "deregister"};

static size_t on_write(char *p, size_t size, size_t n, void *arg) {
  struct cap_buf *b = arg;
  size_t len = size * n;
  if (b->len < RESP_MAX)
    cap_buf_append(b, p, len < RESP_MAX - b->len ? len : RESP_MAX - b->len);
  return len;
}

static void send_step(struct cap_registry *r);

static void on_timer(uv_timer_t *t) {
  send_step(t->data);
}

static void schedule(struct cap_registry *r, uint64_t ms) {
  uv_timer_start(&r->timer, on_timer, ms, 0);
}

static void on_timer_closed(uv_handle_t *h) {
  struct cap_registry *r = h->data;
  r->timer_open = 0;
  if (r->on_stopped)
    r->on_stopped(r->stopped_arg);
}

static void finish_stop(struct cap_registry *r) {
  if (r->timer_open && !uv_is_closing((uv_handle_t *)&r->timer))
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

/* A failure: the first after a success starts an outage, which is logged
 * once; the retry waits longer each time, with jitter. */
static void note_failure(struct cap_registry *r, long status, CURLcode result) {
  unsigned char rnd;
  r->backoff_ms = r->failing == 0 ? BACKOFF_FIRST_MS : r->backoff_ms * 2;
  if (r->backoff_ms > BACKOFF_MAX_MS)
    r->backoff_ms = BACKOFF_MAX_MS;
  if (r->failing++ == 0) {
    r->down_since = uv_now(r->loop);
    struct cap_log_rec *l = cap_log_begin(CAP_LOG_WARN, "registry.unavailable");
    cap_log_str(l, "url", r->url);
    cap_log_str(l, "step", step_names[r->step]);
    if (result != CURLE_OK)
      cap_log_str(l, "error", curl_easy_strerror(result));
    else
      cap_log_int(l, "status", status);
    if (r->resp.len)
      cap_log_strn(l, "answer", r->resp.data, r->resp.len < 200 ? r->resp.len : 200);
    cap_log_str(l, "hint", "serving and jobs go on; retrying with growing delays");
    cap_log_end(l);
  }
  RAND_bytes(&rnd, 1);
  schedule(r, r->backoff_ms / 2 + r->backoff_ms * rnd / 510);
}

static void note_success(struct cap_registry *r) {
  if (r->failing == 0)
    return;
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "registry.available");
  cap_log_str(l, "url", r->url);
  cap_log_int(l, "failed_attempts", r->failing);
  cap_log_int(l, "down_ms", (long long)(uv_now(r->loop) - r->down_since));
  cap_log_end(l);
  r->failing = 0;
  r->backoff_ms = 0;
}

static void identity(struct cap_registry *r, struct cap_buf *b) {
  cap_buf_puts(b, "\"provider\":");
  cap_jsonw_str(b, r->provider, strlen(r->provider));
  cap_buf_printf(b, ",\"port\":%d", r->port);
}

static void on_done(CURL *easy, CURLcode result, void *arg) {
  struct cap_registry *r = arg;
  long status = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(easy);
  r->easy = NULL;
  int ok = result == CURLE_OK && status >= 200 && status < 300;

  if (r->step == STEP_DEREGISTER) {
    struct cap_log_rec *l =
        cap_log_begin(ok ? CAP_LOG_INFO : CAP_LOG_WARN, "registry.deregistered");
    cap_log_bool(l, "ok", ok);
    if (result != CURLE_OK)
      cap_log_str(l, "error", curl_easy_strerror(result));
    else
      cap_log_int(l, "status", status);
    cap_log_end(l);
    finish_stop(r);
    return;
  }
  if (!ok && r->step == STEP_HEARTBEAT && status == 404) {
    /* The registry lost us (restart, TTL after an outage): register again. */
    note_success(r);
    struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "registry.forgotten");
    cap_log_str(l, "url", r->url);
    cap_log_end(l);
    r->step = STEP_REGISTER;
    r->next = 0;
    schedule(r, 0);
    return;
  }
  if (!ok) {
    note_failure(r, status, result);
    return;
  }
  note_success(r);
  if (r->step == STEP_REGISTER) {
    if (r->capabilities[++r->next] != NULL) {
      schedule(r, 0);
      return;
    }
    r->registrations++;
    struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "registry.registered");
    cap_log_str(l, "url", r->url);
    cap_log_str(l, "provider", r->provider);
    cap_log_int(l, "port", r->port);
    cap_log_int(l, "capabilities", (long long)r->next);
    cap_log_end(l);
    r->step = STEP_HEARTBEAT;
  } else {
    r->heartbeats++;
  }
  if (r->want_register) {
    r->want_register = 0;
    r->step = STEP_REGISTER;
    r->next = 0;
    schedule(r, 0);
    return;
  }
  schedule(r, (uint64_t)r->heartbeat_ms);
}

/* Sends the request of the current step. */
static void send_step(struct cap_registry *r) {
  static const char *const paths[] = {"/capabilities/register", "/capabilities/heartbeat",
                                      "/capabilities/deregister"};
  char url[1024];
  struct cap_buf *b = &r->body;

  cap_buf_reset(b);
  cap_buf_putc(b, '{');
  if (r->step == STEP_REGISTER) {
    const char *cap = r->capabilities[r->next];
    cap_buf_puts(b, "\"capability\":");
    cap_jsonw_str(b, cap, strlen(cap));
    cap_buf_putc(b, ',');
    identity(r, b);
    r->hooks.describe(r->hooks.arg, b);
  } else if (r->step == STEP_HEARTBEAT) {
    identity(r, b);
    cap_buf_puts(b, ",\"load\":");
    r->hooks.load(r->hooks.arg, b);
  } else {
    identity(r, b);
  }
  cap_buf_putc(b, '}');
  cap_buf_reset(&r->resp);
  snprintf(url, sizeof(url), "%s%s", r->url, paths[r->step]);

  CURL *e = curl_easy_init();
  if (e == NULL)
    abort(); /* libcurl fails here only when out of memory. */
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, b->data);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)b->len);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "cap-server/" CAP_VERSION);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &r->resp);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                   (long)(r->step == STEP_DEREGISTER ? DEREGISTER_TIMEOUT_MS : REQUEST_TIMEOUT_MS));
  r->easy = e;
  if (cap_curlloop_add(r->cl, e, on_done, r) != 0) {
    curl_easy_cleanup(e);
    r->easy = NULL;
    if (r->step == STEP_DEREGISTER)
      finish_stop(r);
    else
      note_failure(r, 0, CURLE_FAILED_INIT);
  }
}

int cap_registry_init(struct cap_registry *r, uv_loop_t *loop, struct cap_curlloop *cl,
                      const struct cap_registry_settings *s, const struct cap_registry_hooks *hooks,
                      char *err, size_t errlen) {
  char auth[600];
  size_t n;

  memset(r, 0, sizeof(*r));
  if (strncmp(s->url, "http://", 7) != 0 && strncmp(s->url, "https://", 8) != 0) {
    snprintf(err, errlen, "registry_url: must start with https:// (or http:// for a local one)");
    return -EINVAL;
  }
  if (strlen(s->token) > 512 || strpbrk(s->token, "\r\n") != NULL) {
    snprintf(err, errlen, "registry token: must be one line of at most 512 bytes");
    return -EINVAL;
  }
  r->loop = loop;
  r->cl = cl;
  r->hooks = *hooks;
  r->url = xstrdup(s->url);
  /* The paths are appended to the base: no trailing slash. */
  n = strlen(r->url);
  while (n > 0 && r->url[n - 1] == '/')
    r->url[--n] = '\0';
  r->token = xstrdup(s->token);
  r->provider = xstrdup(s->provider);
  r->port = s->port;
  r->heartbeat_ms = s->heartbeat_ms;
  r->capabilities = s->capabilities;
  cap_buf_init(&r->body);
  cap_buf_init(&r->resp);
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s", r->token);
  r->headers = curl_slist_append(NULL, "Content-Type: application/json");
  r->headers = curl_slist_append(r->headers, auth);
  /* A registry answers small bodies at once; 100-continue only adds a
   * round trip. */
  r->headers = curl_slist_append(r->headers, "Expect:");
  if (r->headers == NULL)
    abort();
  memset(auth, 0, sizeof(auth));
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->timer_open = 1;
  return 0;
}

void cap_registry_start(struct cap_registry *r) {
  r->started = 1;
  r->step = STEP_REGISTER;
  r->next = 0;
  schedule(r, 0);
}

void cap_registry_refresh(struct cap_registry *r) {
  if (!r->started || r->stopping)
    return;
  if (r->easy == NULL && r->step == STEP_HEARTBEAT && r->failing == 0) {
    r->step = STEP_REGISTER;
    r->next = 0;
    schedule(r, 0);
    return;
  }
  /* A request is under way, or the registry is down: register again once
   * the current exchange succeeds. */
  r->want_register = r->step == STEP_HEARTBEAT;
}

void cap_registry_stop(struct cap_registry *r, void (*done)(void *arg), void *arg) {
  if (r->stopping)
    return;
  r->stopping = 1;
  r->on_stopped = done;
  r->stopped_arg = arg;
  if (!r->timer_open) {
    if (done)
      done(arg);
    return;
  }
  uv_timer_stop(&r->timer);
  if (r->easy) {
    cap_curlloop_remove(r->cl, r->easy);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
  }
  if (!r->started) {
    finish_stop(r);
    return;
  }
  r->step = STEP_DEREGISTER;
  send_step(r);
}

void cap_registry_free(struct cap_registry *r) {
  free(r->url);
  if (r->token) {
    memset(r->token, 0, strlen(r->token));
    free(r->token);
  }
  free(r->provider);
  curl_slist_free_all(r->headers);
  cap_buf_free(&r->body);
  cap_buf_free(&r->resp);
  memset(r, 0, sizeof(*r));
}
