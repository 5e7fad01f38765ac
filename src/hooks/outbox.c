#include "outbox.h"

#include "alloc.h"
#include "buf.h"
#include "jsonw.h"
#include "log.h"
#include "metrics.h"
#include "version.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* An event's life.  Only move() changes it, along these arrows:
 *
 *   WAITING -> SENDING -> WAITING (a retry is due later; or abandoned at stop)
 *   WAITING -> DONE (expired while waiting, no secret, overflow)
 *   SENDING -> DONE (delivered, gone, refused, expired)
 *
 *   WAITING  in the list until next_at
 *   SENDING  an attempt is under way in the curl multi
 *   DONE     out of the list and the journal; freed right after */
enum ev_state { E_WAITING, E_SENDING, E_DONE };

static const char *const state_names[] = {"waiting", "sending", "done"};

struct cap_outbox_ev {
  struct cap_outbox *ob;
  enum ev_state state;
  char id[CAP_OUTBOX_ID_LEN + 1];
  char *job_id, *owner, *url, *type;
  char *body;
  size_t body_len;
  char host[CAP_CALLBACK_HOST_MAX + 1]; /* For logs: the URL may carry a secret. */
  int attempts;                         /* Attempts made (finished). */
  int64_t created_at, next_at;          /* Wall clock, ms. */
  CURL *easy;                           /* While SENDING. */
  struct curl_slist *headers;
  uint64_t started_ns;
  const char *refused; /* The class of an address the attempt refused to reach. */
  struct cap_outbox_ev *prev, *next;
};

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void move(struct cap_outbox_ev *ev, enum ev_state to) {
  enum ev_state from = ev->state;
  int ok = (from == E_WAITING && (to == E_SENDING || to == E_DONE)) ||
           (from == E_SENDING && (to == E_WAITING || to == E_DONE));
  struct cap_log_rec *l = cap_log_begin(ok ? CAP_LOG_DEBUG : CAP_LOG_ERROR,
                                        ok ? "webhook.state" : "webhook.bad_transition");
  cap_log_str(l, "webhook_id", ev->id);
  cap_log_str(l, "from", state_names[from]);
  cap_log_str(l, "to", state_names[to]);
  cap_log_end(l);
  if (ok)
    ev->state = to;
}

int64_t cap_outbox_backoff_ms(int base_ms, int attempt, uint32_t rnd) {
  int64_t d = base_ms > 0 ? base_ms : 1;
  for (int i = 1; i < attempt && d < CAP_OUTBOX_BACKOFF_MAX_MS; i++)
    d *= 2;
  if (d > CAP_OUTBOX_BACKOFF_MAX_MS)
    d = CAP_OUTBOX_BACKOFF_MAX_MS;
  /* Full jitter over the upper half: receivers that came back are not hit
   * by every sender at once, and no retry comes much sooner than asked. */
  int64_t half = d / 2;
  return d - half + (int64_t)(rnd % (uint64_t)(half + 1));
}

char *cap_outbox_body(const char *type, int64_t now_ms, const char *data_json, size_t *len) {
  struct cap_buf b;
  struct tm tm;
  time_t secs = (time_t)(now_ms / 1000);
  char ts[40];
  gmtime_r(&secs, &tm);
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  cap_buf_init(&b);
  cap_buf_puts(&b, "{\"type\":");
  cap_jsonw_str(&b, type, strlen(type));
  cap_buf_printf(&b, ",\"timestamp\":\"%s.%03dZ\",\"data\":", ts, (int)(now_ms % 1000));
  cap_buf_puts(&b, data_json);
  cap_buf_putc(&b, '}');
  *len = b.len;
  return cap_buf_steal(&b);
}

static void set_pending(const struct cap_outbox *ob) {
  cap_metrics_set(CAP_M_WEBHOOK_PENDING, NULL, (double)ob->n);
}

static void unlink_ev(struct cap_outbox *ob, struct cap_outbox_ev *ev) {
  if (ev->prev)
    ev->prev->next = ev->next;
  else
    ob->head = ev->next;
  if (ev->next)
    ev->next->prev = ev->prev;
  else
    ob->tail = ev->prev;
  ev->prev = ev->next = NULL;
  ob->n--;
  set_pending(ob);
}

static void append_ev(struct cap_outbox *ob, struct cap_outbox_ev *ev) {
  ev->prev = ob->tail;
  if (ob->tail)
    ob->tail->next = ev;
  else
    ob->head = ev;
  ob->tail = ev;
  ob->n++;
  set_pending(ob);
}

static void free_ev(struct cap_outbox_ev *ev) {
  if (ev->easy)
    curl_easy_cleanup(ev->easy);
  curl_slist_free_all(ev->headers);
  free(ev->job_id);
  free(ev->owner);
  free(ev->url);
  free(ev->type);
  free(ev->body);
  free(ev);
}

static struct cap_outbox_ev *new_ev(struct cap_outbox *ob, const char *id, const char *owner,
                                    const char *url, const char *job_id, const char *type) {
  struct cap_outbox_ev *ev = xcalloc(1, sizeof(*ev));
  ev->ob = ob;
  ev->state = E_WAITING;
  snprintf(ev->id, sizeof(ev->id), "%s", id);
  ev->owner = xstrdup(owner);
  ev->url = xstrdup(url);
  ev->job_id = xstrdup(job_id);
  ev->type = xstrdup(type);
  cap_callback_host(url, ev->host, sizeof(ev->host));
  return ev;
}

/* Removes ev for good (a WAITING one; a SENDING one's transfer is over):
 * from the list, the journal and memory.  reason says why for the log
 * (NULL: delivered, nothing to warn about). */
static void finish(struct cap_outbox_ev *ev, const char *outcome, int warn) {
  struct cap_outbox *ob = ev->ob;
  move(ev, E_DONE);
  if (warn) {
    struct cap_log_rec *l = cap_log_begin(CAP_LOG_WARN, "webhook.dropped");
    cap_log_str(l, "webhook_id", ev->id);
    cap_log_str(l, "job_id", ev->job_id);
    cap_log_str(l, "type", ev->type);
    cap_log_str(l, "host", ev->host);
    cap_log_str(l, "reason", outcome);
    cap_log_int(l, "attempts", ev->attempts);
    cap_log_end(l);
  }
  if (ob->jr)
    cap_journal_event_delete(ob->jr, ev->id);
  unlink_ev(ob, ev);
  if (ob->on_end)
    ob->on_end(ob->end_arg, ev->job_id, outcome);
  free_ev(ev);
}

static void on_timer(uv_timer_t *t);

/* Asks for a scheduling pass on the next loop iteration: never from inside
 * curl's callbacks or a caller's state change. */
static void poke(struct cap_outbox *ob) {
  if (ob->started && !ob->stopped && ob->timer_open)
    uv_timer_start(&ob->timer, on_timer, 0, 0);
}

static size_t discard(char *p, size_t size, size_t n, void *arg) {
  (void)p;
  (void)arg;
  return size * n;
}

/* Checks every address an attempt is about to connect to. */
static int allow_addr(void *arg, const struct sockaddr *sa) {
  struct cap_outbox_ev *ev = arg;
  const char *why = NULL;
  if (cap_callback_addr_allowed(sa, ev->ob->policy ? &ev->ob->policy->allow : NULL, &why))
    return 1;
  ev->refused = why;
  return 0;
}

static void on_done(CURL *easy, CURLcode result, void *arg);

static void log_attempt(const struct cap_outbox_ev *ev, long status, const char *outcome,
                        double dur_ms, int64_t next_in_ms, const char *error) {
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "webhook.attempt");
  cap_log_str(l, "webhook_id", ev->id);
  cap_log_str(l, "job_id", ev->job_id);
  cap_log_str(l, "type", ev->type);
  cap_log_str(l, "host", ev->host);
  cap_log_int(l, "attempt", ev->attempts);
  cap_log_int(l, "status", status);
  cap_log_str(l, "outcome", outcome);
  cap_log_int(l, "dur_ms", (long long)dur_ms);
  if (next_in_ms >= 0)
    cap_log_int(l, "next_in_ms", (long long)next_in_ms);
  if (error)
    cap_log_str(l, "error", error);
  cap_log_end(l);
  cap_metrics_inc(CAP_M_WEBHOOK_ATTEMPTS, CAP_LABELS(outcome));
  cap_metrics_observe(CAP_M_WEBHOOK_SECONDS, NULL, dur_ms / 1000.0);
}

/* After a failed attempt: schedules the next one, or drops ev when that
 * would fall past callback_retry_s. */
static void retry_or_expire(struct cap_outbox_ev *ev, long status, double dur_ms,
                            const char *error) {
  struct cap_outbox *ob = ev->ob;
  uint32_t rnd = 0;
  RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
  int64_t now = wall_ms();
  int64_t delay = cap_outbox_backoff_ms(ob->cfg->callback_backoff_ms, ev->attempts, rnd);
  if (now + delay > ev->created_at + (int64_t)ob->cfg->callback_retry_s * 1000) {
    log_attempt(ev, status, "expired", dur_ms, -1, error);
    finish(ev, "expired", 1);
    return;
  }
  log_attempt(ev, status, "retry", dur_ms, delay, error);
  ev->next_at = now + delay;
  if (ob->jr)
    cap_journal_event_update(ob->jr, ev->id, ev->attempts, ev->next_at);
  /* An attempt that could not even start never left WAITING. */
  if (ev->state == E_SENDING)
    move(ev, E_WAITING);
}

static void end_transfer(struct cap_outbox_ev *ev) {
  if (ev->easy)
    curl_easy_cleanup(ev->easy);
  ev->easy = NULL;
  curl_slist_free_all(ev->headers);
  ev->headers = NULL;
  ev->ob->inflight--;
}

static void on_done(CURL *easy, CURLcode result, void *arg) {
  struct cap_outbox_ev *ev = arg;
  struct cap_outbox *ob = ev->ob;
  long status = 0;
  double dur_ms = (double)(uv_hrtime() - ev->started_ns) / 1e6;
  (void)easy;
  if (result == CURLE_OK)
    curl_easy_getinfo(ev->easy, CURLINFO_RESPONSE_CODE, &status);
  end_transfer(ev);
  ev->attempts++;
  if (result == CURLE_OK && status >= 200 && status < 300) {
    log_attempt(ev, status, "delivered", dur_ms, -1, NULL);
    finish(ev, "delivered", 0);
  } else if (result == CURLE_OK && status == 410) {
    log_attempt(ev, status, "gone", dur_ms, -1, NULL);
    finish(ev, "gone", 1);
  } else if (result != CURLE_OK && ev->refused) {
    char why[96];
    snprintf(why, sizeof(why), "the receiver's address is %s", ev->refused);
    log_attempt(ev, 0, "refused", dur_ms, -1, why);
    finish(ev, "refused", 1);
  } else {
    retry_or_expire(ev, status, dur_ms, result == CURLE_OK ? NULL : curl_easy_strerror(result));
  }
  poke(ob);
}

static struct curl_slist *header(struct curl_slist *h, const char *name, const char *value) {
  char line[CAP_WHSECRET_SIG_MAX + 64];
  snprintf(line, sizeof(line), "%s: %s", name, value);
  struct curl_slist *n = curl_slist_append(h, line);
  if (n == NULL)
    abort(); /* libcurl fails here only when out of memory. */
  return n;
}

/* Starts one attempt of ev (WAITING and due). */
static void attempt(struct cap_outbox_ev *ev) {
  struct cap_outbox *ob = ev->ob;
  const struct cap_config *cfg = ob->cfg;
  char sig[CAP_WHSECRET_SIG_MAX], ts[24];
  int64_t now_s = wall_ms() / 1000;

  /* The token's secrets as they are now: a rotation or a removal on
   * SIGHUP applies to events already waiting. */
  const struct cap_whsecret_token *t = cap_whsecret_find(ob->secrets, ev->owner);
  if (t == NULL) {
    finish(ev, "no_secret", 1);
    return;
  }
  snprintf(ts, sizeof(ts), "%" PRId64, now_s);
  if (cap_whsecret_sign(t, ev->id, now_s, ev->body, ev->body_len, sig, sizeof(sig)) != 0) {
    /* Only a broken OpenSSL gets here; try again later. */
    ev->attempts++;
    retry_or_expire(ev, 0, 0, "signing failed");
    return;
  }
  ev->headers = header(NULL, "content-type", "application/json");
  ev->headers = header(ev->headers, "webhook-id", ev->id);
  ev->headers = header(ev->headers, "webhook-timestamp", ts);
  ev->headers = header(ev->headers, "webhook-signature", sig);
  /* No "Expect: 100-continue" round trip for a body that is sent anyway. */
  ev->headers = curl_slist_append(ev->headers, "Expect:");
  memset(sig, 0, sizeof(sig));

  CURL *e = curl_easy_init();
  if (e == NULL)
    abort(); /* libcurl fails here only when out of memory. */
  curl_easy_setopt(e, CURLOPT_URL, ev->url);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
  /* Redirects are not followed (curl wants some list here; https is the
   * narrowest). */
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  /* No proxy from the environment: the address checked is the receiver's. */
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, ev->body);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)ev->body_len);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, ev->headers);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "cap-server/" CAP_VERSION);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->callback_timeout_ms);
  if (cfg->callback_ca_file)
    curl_easy_setopt(e, CURLOPT_CAINFO, cfg->callback_ca_file);
  ev->easy = e;
  ev->refused = NULL;
  ev->started_ns = uv_hrtime();
  ob->inflight++;
  move(ev, E_SENDING);
  if (cap_curlloop_add_guarded(ob->cl, e, on_done, ev, allow_addr) != 0) {
    end_transfer(ev);
    ev->attempts++;
    retry_or_expire(ev, 0, 0, "the curl multi refused the transfer");
  }
}

/* One scheduling pass: drops what expired, starts what is due while
 * there is room, and sets the timer for the next event to come due. */
static void schedule(struct cap_outbox *ob) {
  int64_t now = wall_ms(), next = INT64_MAX;
  int64_t retry_ms = (int64_t)ob->cfg->callback_retry_s * 1000;
  int room = ob->cfg->callback_concurrency > 0 ? ob->cfg->callback_concurrency : 1;
  struct cap_outbox_ev *ev = ob->head;
  while (ev) {
    struct cap_outbox_ev *after = ev->next;
    if (ev->state == E_WAITING) {
      if (now >= ev->created_at + retry_ms) {
        /* Left waiting past its time (the server was down, say). */
        finish(ev, "expired", 1);
      } else if (ev->next_at <= now && ob->inflight < room) {
        attempt(ev);
      } else if (ev->next_at > now && ev->next_at < next) {
        next = ev->next_at;
      }
    }
    ev = after;
  }
  /* A due event without room is started when an attempt ends (poke). */
  if (next != INT64_MAX)
    uv_timer_start(&ob->timer, on_timer, (uint64_t)(next - now), 0);
  else
    uv_timer_stop(&ob->timer);
}

static void on_timer(uv_timer_t *t) {
  struct cap_outbox *ob = t->data;
  if (!ob->stopped)
    schedule(ob);
}

int cap_outbox_init(struct cap_outbox *ob, uv_loop_t *loop, struct cap_curlloop *cl,
                    const struct cap_config *cfg, struct cap_journal *jr,
                    const struct cap_whsecret *secrets, const struct cap_callback *policy) {
  memset(ob, 0, sizeof(*ob));
  ob->loop = loop;
  ob->cl = cl;
  ob->cfg = cfg;
  ob->jr = jr;
  ob->secrets = secrets;
  ob->policy = policy;
  set_pending(ob);
  return 0;
}

/* Makes room for one more event: the oldest waiting one goes. */
static void make_room(struct cap_outbox *ob) {
  struct cap_outbox_ev *ev = ob->head;
  while (ob->n >= CAP_OUTBOX_MAX && ev) {
    struct cap_outbox_ev *after = ev->next;
    if (ev->state == E_WAITING)
      finish(ev, "overflow", 1);
    ev = after;
  }
}

static struct cap_outbox_ev *find(const struct cap_outbox *ob, const char *id) {
  for (struct cap_outbox_ev *ev = ob->head; ev; ev = ev->next)
    if (strcmp(ev->id, id) == 0)
      return ev;
  return NULL;
}

static void on_loaded(void *arg, const struct cap_journal_event *e) {
  struct cap_outbox *ob = arg;
  if (e->id == NULL || e->job_id == NULL || e->owner == NULL || e->url == NULL || e->type == NULL ||
      e->body == NULL || find(ob, e->id))
    return;
  make_room(ob);
  struct cap_outbox_ev *ev = new_ev(ob, e->id, e->owner, e->url, e->job_id, e->type);
  ev->body = xstrdup(e->body);
  ev->body_len = strlen(e->body);
  ev->attempts = e->attempts;
  ev->created_at = e->created_at;
  ev->next_at = e->next_at;
  append_ev(ob, ev);
}

int cap_outbox_load(struct cap_outbox *ob) {
  if (ob->jr == NULL)
    return 0;
  int rc = cap_journal_event_load(ob->jr, on_loaded, ob);
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "webhook.loaded");
  cap_log_int(l, "pending", (long long)ob->n);
  cap_log_end(l);
  poke(ob);
  return rc;
}

void cap_outbox_start(struct cap_outbox *ob) {
  if (ob->started || ob->stopped)
    return;
  uv_timer_init(ob->loop, &ob->timer);
  ob->timer.data = ob;
  /* A retry an hour away must not keep the loop alive at shutdown;
   * transfers under way keep it alive through the curl loop. */
  uv_unref((uv_handle_t *)&ob->timer);
  ob->timer_open = 1;
  ob->started = 1;
  poke(ob);
}

int cap_outbox_enqueue(struct cap_outbox *ob, const char *owner, const char *url,
                       const char *job_id, const char *type, const char *data_json) {
  unsigned char rnd[16];
  char id[CAP_OUTBOX_ID_LEN + 1];
  if (owner == NULL || url == NULL || job_id == NULL || type == NULL || data_json == NULL)
    return -EINVAL;
  if (RAND_bytes(rnd, sizeof(rnd)) != 1)
    abort(); /* OpenSSL's generator was seeded at start-up (cap_reqid_init). */
  memcpy(id, "msg_", 4);
  for (size_t i = 0; i < sizeof(rnd); i++)
    snprintf(id + 4 + 2 * i, 3, "%02x", rnd[i]);
  make_room(ob);
  struct cap_outbox_ev *ev = new_ev(ob, id, owner, url, job_id, type);
  ev->created_at = ev->next_at = wall_ms();
  ev->body = cap_outbox_body(type, ev->created_at, data_json, &ev->body_len);
  if (ob->jr) {
    struct cap_journal_event row = {
        .id = ev->id,
        .job_id = ev->job_id,
        .owner = ev->owner,
        .url = ev->url,
        .type = ev->type,
        .body = ev->body,
        .attempts = 0,
        .created_at = ev->created_at,
        .next_at = ev->next_at,
    };
    /* A failed write is logged by the journal; the event is still sent
     * from memory. */
    cap_journal_event_add(ob->jr, &row);
  }
  append_ev(ob, ev);
  poke(ob);
  return 0;
}

static void on_timer_closed(uv_handle_t *h) {
  struct cap_outbox *ob = h->data;
  ob->timer_open = 0;
}

void cap_outbox_stop(struct cap_outbox *ob) {
  if (ob->stopped)
    return;
  ob->stopped = 1;
  for (struct cap_outbox_ev *ev = ob->head; ev; ev = ev->next) {
    if (ev->state != E_SENDING)
      continue;
    /* Abandoned: not counted as an attempt, and the journal still says
     * when it was due, so it is made again after a restart. */
    cap_curlloop_remove(ob->cl, ev->easy);
    end_transfer(ev);
    move(ev, E_WAITING);
  }
  if (ob->timer_open && !uv_is_closing((uv_handle_t *)&ob->timer))
    uv_close((uv_handle_t *)&ob->timer, on_timer_closed);
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "webhook.stopped");
  cap_log_int(l, "pending", (long long)ob->n);
  cap_log_end(l);
}

void cap_outbox_free(struct cap_outbox *ob) {
  struct cap_outbox_ev *ev = ob->head;
  while (ev) {
    struct cap_outbox_ev *after = ev->next;
    free_ev(ev);
    ev = after;
  }
  ob->head = ob->tail = NULL;
  ob->n = 0;
}

size_t cap_outbox_pending(const struct cap_outbox *ob) {
  return ob->n;
}

size_t cap_outbox_job_pending(const struct cap_outbox *ob, const char *job_id) {
  size_t n = 0;
  for (const struct cap_outbox_ev *ev = ob->head; ev; ev = ev->next)
    if (strcmp(ev->job_id, job_id) == 0)
      n++;
  return n;
}
