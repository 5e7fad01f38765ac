#ifndef CAP_OUTBOX_H
#define CAP_OUTBOX_H

#include "callback.h"
#include "config.h"
#include "curlloop.h"
#include "journal.h"
#include "whsecret.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The webhook outbox: job events waiting to be delivered to their
 * callback_url, the Standard Webhooks way (webhook-id, webhook-timestamp,
 * webhook-signature headers over a JSON body), through the app's curl
 * multi on the loop.  Every event is written to the journal when one is
 * given, so that what was not delivered before a restart is delivered
 * after it; without a journal the outbox lives in memory only.
 *
 * One uv_timer wakes the outbox when the next event is due; at most
 * callback_concurrency attempts run at once.  An attempt's outcome:
 *   2xx                          delivered, removed
 *   410                          gone (the receiver unsubscribed), removed
 *   refused address              refused, removed (never retried)
 *   anything else                retried after callback_backoff_ms doubled per
 *                                attempt (full jitter in [d/2, d], at most an hour)
 *   retry past callback_retry_s  expired, removed
 * Nothing here waits for a receiver: cancel, drain and /health never do. */

/* Events kept at most; beyond that the oldest waiting one is dropped. */
#define CAP_OUTBOX_MAX 10000
/* The longest retry delay. */
#define CAP_OUTBOX_BACKOFF_MAX_MS 3600000
/* webhook-id: "msg_" and 32 hex characters. */
#define CAP_OUTBOX_ID_LEN 36

struct cap_outbox_ev;

struct cap_outbox {
  uv_loop_t *loop;
  struct cap_curlloop *cl;
  const struct cap_config *cfg;
  struct cap_journal *jr;             /* NULL: memory only. */
  const struct cap_whsecret *secrets; /* Looked up at every attempt: reloads count. */
  const struct cap_callback *policy;  /* Its allow set admits private addresses. */
  uv_timer_t timer;
  int timer_open;
  int started;
  int stopped;
  struct cap_outbox_ev *head, *tail; /* Oldest first. */
  size_t n;                          /* Events held. */
  int inflight;                      /* Attempts under way. */
  /* Told when an event leaves the outbox (may be NULL; it must not call
   * back into the outbox): outcome is
   * "delivered", "gone", "refused", "expired", "no_secret" or "overflow".
   * For per-job counters kept by the caller. */
  void (*on_end)(void *arg, const char *job_id, const char *outcome);
  void *end_arg;
};

/* Sets ob up; nothing is sent before cap_outbox_start.  Every pointer is
 * borrowed and must outlive ob; jr may be NULL (journal off).  Returns 0. */
int cap_outbox_init(struct cap_outbox *ob, uv_loop_t *loop, struct cap_curlloop *cl,
                    const struct cap_config *cfg, struct cap_journal *jr,
                    const struct cap_whsecret *secrets, const struct cap_callback *policy);
/* Reads the events the journal holds (those a previous run left) into ob;
 * an id held already is skipped.  No-op without a journal.  Returns 0 or
 * the journal's negative errno. */
int cap_outbox_load(struct cap_outbox *ob);
/* Starts delivering (call once the server listens). */
void cap_outbox_start(struct cap_outbox *ob);
/* Adds one event for job_id: builds the body {"type","timestamp","data"}
 * (data_json, the job object's JSON text, is copied as is), gives it a
 * fresh webhook-id, writes it to the journal and schedules it.  type is
 * "job.started", "job.progress", ...; owner the token name whose secrets
 * sign it.  Every string is copied.  After cap_outbox_stop the event is
 * only written to the journal (it is sent after a restart).  Returns 0 or
 * -EINVAL (a NULL argument). */
int cap_outbox_enqueue(struct cap_outbox *ob, const char *owner, const char *url,
                       const char *job_id, const char *type, const char *data_json);
/* Abandons the attempts under way (they count as not made; the events
 * stay in the journal) and closes the timer.  Call before the curl loop
 * closes, not from inside a curl callback.  Idempotent. */
void cap_outbox_stop(struct cap_outbox *ob);
/* Frees every event (after cap_outbox_stop and a loop run that let the
 * timer close). */
void cap_outbox_free(struct cap_outbox *ob);
/* Events held (waiting or under way). */
size_t cap_outbox_pending(const struct cap_outbox *ob);
/* Events held for job_id (a scan: at most CAP_OUTBOX_MAX). */
size_t cap_outbox_job_pending(const struct cap_outbox *ob, const char *job_id);

/* The delay before the retry that follows attempt number attempt (1 for
 * the first): base_ms doubled attempt-1 times, at most
 * CAP_OUTBOX_BACKOFF_MAX_MS, then a point in [d/2, d] picked by rnd. */
int64_t cap_outbox_backoff_ms(int base_ms, int attempt, uint32_t rnd);
/* Builds an event's body {"type":type,"timestamp":"<ISO 8601 UTC, ms>",
 * "data":data_json}.  Returns it (the caller frees it) and its length in
 * *len. */
char *cap_outbox_body(const char *type, int64_t now_ms, const char *data_json, size_t *len);

#endif
