#ifndef CAP_S3_H
#define CAP_S3_H

#include "buf.h"
#include "curlloop.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

/* An S3 (or R2) client on the shared curl multi loop: every request is
 * signed with SigV4 by cap_sigv4 (never curl's own signer), retried with
 * exponential backoff and jitter on 5xx, 429/SlowDown, connection errors
 * and stalls, and reported once through its done callback. */

struct cap_s3_conf {
  char *endpoint; /* scheme://host[:port], no trailing slash. */
  char *bucket;
  char *prefix; /* Prepended to every key; "" or ending in '/'. */
  char *region;
  char *access_key;
  char *secret_key;
  int virtual_host; /* bucket.host instead of host/bucket. */
  int retries;      /* Attempts after the first. */
  int backoff_ms;   /* First retry delay; doubles each time, with jitter. */
  int low_speed_s;  /* A transfer slower than 1 KiB/s for this long is a stall. */
};

struct cap_s3_req;

struct cap_s3 {
  struct cap_curlloop *cl;
  const struct cap_s3_conf *conf;
  char host[300];        /* As signed: host[:port], with the bucket when virtual_host. */
  char base[400];        /* URL up to the bucket path: scheme://host[:port][/bucket]. */
  char path_bucket[300]; /* "/bucket" for path style, "" for virtual host. */
  uint64_t requests, retries, failures;
  /* Told about a multipart upload whose abort failed for another reason
   * than 404 (r: the finished request), so that someone retries it later
   * or, when the store refused it, stops trying (the storage does).
   * reason says why the upload was aborted ("failed", "canceled"). */
  void (*on_abort_failed)(struct cap_s3 *s3, const struct cap_s3_req *r, const char *key,
                          const char *upload_id, const char *reason);
  void *owner;
};

typedef void (*cap_s3_done_fn)(struct cap_s3_req *r);
/* Takes all n bytes of a 2xx body and returns n, or takes none and returns
 * CAP_S3_SINK_PAUSE (curl holds them until cap_s3_req_resume), or returns 0
 * to fail the request. */
typedef size_t (*cap_s3_sink_fn)(struct cap_s3_req *r, const char *p, size_t n);
#define CAP_S3_SINK_PAUSE  CURL_WRITEFUNC_PAUSE
#define CAP_S3_RANGE_OPEN  UINT64_MAX

struct cap_s3_query {
  const char *name;
  const char *value;
};

/* One logical request (all its attempts).  The caller fills method, key,
 * query, body and done, calls cap_s3_start, and owns the struct: after done
 * it may read status / etag / resp / error and must call cap_s3_req_free. */
struct cap_s3_req {
  struct cap_s3 *s3;
  const char *method;
  char *key; /* Object key without the prefix; NULL for the bucket. */
  struct cap_s3_query query[4];
  size_t nquery;
  /* Body: memory (body, body_len), or a file range (body_fd >= 0). */
  const char *body;
  size_t body_len;
  int body_fd;
  off_t body_off;
  int signed_payload; /* Sign the body's real SHA-256 (small bodies) instead of UNSIGNED-PAYLOAD. */
  /* Sent and signed when not NULL.  Without content_type, curl's own
   * (a form type on POST) is suppressed, so the store never keeps one. */
  const char *content_type;
  const char *cache_control;
  /* A byte range of the object (GET): bytes range_start..range_end, both
   * inclusive; range_end CAP_S3_RANGE_OPEN for "to the end".  A retry
   * asks only for what the sink has not taken yet. */
  int ranged;
  uint64_t range_start, range_end;
  /* Sent (unsigned) when not NULL: pins the object to this ETag, so a
   * replaced object answers 412 instead of other bytes. */
  const char *if_match;
  /* Response: to a file (out_fd >= 0, GET), to sink (a 2xx body, handed
   * over as it arrives), or into resp (at most resp_max bytes). */
  cap_s3_sink_fn sink;
  int out_fd;
  uint64_t out_max; /* 0: no cap. */
  size_t resp_max;
  struct cap_buf resp;
  /* Results. */
  long status;
  CURLcode curl_result;
  char etag[130];
  char err_code[64]; /* S3 error code, or curl's when the request never got an answer. */
  char err_msg[256];
  int attempt;
  uint64_t bytes_out; /* Response bytes written to out_fd. */
  int64_t length;     /* The answer's Content-Length (a HEAD's object size); -1 unknown. */
  int64_t total;      /* The object's size from a Content-Range ("a-b/N", "* /N"); -1 unknown. */
  uint64_t got;       /* Body bytes the sink took, over every attempt. */
  int resumes;        /* Attempts that went on from where a failed one had stopped. */
  cap_s3_done_fn done;
  void *data;

  /* Private. */
  CURL *easy;
  struct curl_slist *headers;
  size_t body_pos;
  uint64_t got_at_attempt; /* got when the current attempt began. */
  uv_timer_t retry_timer;
  int timer_open;
  int in_flight;
  int canceled;
  void (*on_freed)(struct cap_s3_req *r);
};

/* The S3 backend (objs3.c), the storage's own requests and the registry
 * client use the client directly; jobs go through objstore.h.
 * Sets the client up; conf must outlive it.  Returns 0 or -EINVAL. */
int cap_s3_init(struct cap_s3 *s3, struct cap_curlloop *cl, const struct cap_s3_conf *conf);
/* Readies r for use with s3 (zeroes it). */
void cap_s3_req_init(struct cap_s3_req *r, struct cap_s3 *s3);
/* Sends r; done runs once when it has succeeded, failed for good, or run
 * out of retries. */
void cap_s3_start(struct cap_s3_req *r);
/* Stops r (no done callback) and releases it; on_freed (may be NULL) runs
 * when its timer handle has closed and the memory may be reused. */
void cap_s3_req_cancel(struct cap_s3_req *r, void (*on_freed)(struct cap_s3_req *r));
/* Releases what r holds after done; on_freed as for cancel. */
void cap_s3_req_free(struct cap_s3_req *r, void (*on_freed)(struct cap_s3_req *r));
/* Lets a sink that returned CAP_S3_SINK_PAUSE take bytes again; the held
 * ones may reach it before this returns.  Not from inside the sink. */
void cap_s3_req_resume(struct cap_s3_req *r);
/* Returns 1 when r ended with a 2xx answer. */
int cap_s3_ok(const struct cap_s3_req *r);
/* Returns 1 when a failed r may succeed if sent again later: it got no
 * answer (network error, stall, shutdown), or a 5xx, 429 or request
 * timeout.  Any other answer (400, 403, 405, ...) is the store refusing
 * the request itself, which sending it again does not change. */
int cap_s3_transient(const struct cap_s3_req *r);
/* Finds the text of the first <tag>...</tag> in xml (entities decoded)
 * and writes it to out.  Returns 0 or -ENOENT. */
int cap_s3_xml_text(const char *xml, size_t len, const char *tag, char *out, size_t outlen);

#endif
