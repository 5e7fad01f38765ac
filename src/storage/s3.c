/* For memmem. */
#define _GNU_SOURCE
#include "s3.h"

#include "alloc.h"
#include "log.h"
#include "metrics.h"
#include "sigv4.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The longest wait between two attempts. */
#define BACKOFF_MAX_MS 30000

int cap_s3_init(struct cap_s3 *s3, struct cap_curlloop *cl, const struct cap_s3_conf *conf) {
  const char *ep = conf->endpoint;
  const char *hostpart;
  memset(s3, 0, sizeof(*s3));
  s3->cl = cl;
  s3->conf = conf;
  if (strncmp(ep, "https://", 8) == 0)
    hostpart = ep + 8;
  else if (strncmp(ep, "http://", 7) == 0)
    hostpart = ep + 7;
  else
    return -EINVAL;
  size_t hl = strcspn(hostpart, "/");
  if (hl == 0 || hl >= 200 || hostpart[hl] != '\0')
    return -EINVAL;
  int scheme_len = (int)(hostpart - ep);
  if (conf->virtual_host) {
    snprintf(s3->host, sizeof(s3->host), "%s.%.*s", conf->bucket, (int)hl, hostpart);
    snprintf(s3->base, sizeof(s3->base), "%.*s%s", scheme_len, ep, s3->host);
    s3->path_bucket[0] = '\0';
  } else {
    snprintf(s3->host, sizeof(s3->host), "%.*s", (int)hl, hostpart);
    snprintf(s3->base, sizeof(s3->base), "%.*s%s", scheme_len, ep, s3->host);
    snprintf(s3->path_bucket, sizeof(s3->path_bucket), "/%s", conf->bucket);
  }
  return 0;
}

void cap_s3_req_init(struct cap_s3_req *r, struct cap_s3 *s3) {
  memset(r, 0, sizeof(*r));
  r->s3 = s3;
  r->body_fd = -1;
  r->out_fd = -1;
  r->length = -1;
  r->total = -1;
  r->resp_max = 1 << 20;
  cap_buf_init(&r->resp);
}

int cap_s3_ok(const struct cap_s3_req *r) {
  return r->curl_result == CURLE_OK && r->status >= 200 && r->status < 300;
}

int cap_s3_transient(const struct cap_s3_req *r) {
  if (r->curl_result != CURLE_OK || r->status == 0)
    return 1;
  /* S3 reports a connection it gave up reading as 400 RequestTimeout: the
   * network's fault, not the request's. */
  return r->status >= 500 || r->status == 429 || r->status == 408 ||
         strcmp(r->err_code, "RequestTimeout") == 0;
}

static size_t on_write(char *ptr, size_t size, size_t n, void *arg) {
  struct cap_s3_req *r = arg;
  size_t len = size * n;
  long status = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  if (r->sink && status >= 200 && status < 300) {
    /* A store that ignored the Range of a resumed read would send the
     * object from its first byte again: fail rather than repeat bytes. */
    if (r->ranged && status == 200 && r->range_start + r->got > 0) {
      snprintf(r->err_code, sizeof(r->err_code), "range_ignored");
      snprintf(r->err_msg, sizeof(r->err_msg), "The store answered a range with the whole object");
      return 0;
    }
    size_t took = r->sink(r, ptr, len);
    if (took == len)
      r->got += len;
    return took;
  }
  if (r->out_fd >= 0 && status >= 200 && status < 300) {
    if (r->out_max && r->bytes_out + len > r->out_max) {
      snprintf(r->err_code, sizeof(r->err_code), "too_large");
      return 0; /* Aborts the transfer with CURLE_WRITE_ERROR. */
    }
    size_t off = 0;
    while (off < len) {
      ssize_t w = write(r->out_fd, ptr + off, len - off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        snprintf(r->err_code, sizeof(r->err_code), "local_write");
        return 0;
      }
      off += (size_t)w;
    }
    r->bytes_out += len;
    return len;
  }
  if (r->resp.len < r->resp_max)
    cap_buf_append(&r->resp, ptr,
                   len < r->resp_max - r->resp.len ? len : r->resp_max - r->resp.len);
  return len;
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg) {
  struct cap_s3_req *r = arg;
  size_t len = size * n;
  if (len > 5 && strncasecmp(buf, "etag:", 5) == 0) {
    size_t i = 5, end = len;
    while (i < end && (buf[i] == ' ' || buf[i] == '\t'))
      i++;
    while (end > i && (buf[end - 1] == '\r' || buf[end - 1] == '\n' || buf[end - 1] == ' '))
      end--;
    snprintf(r->etag, sizeof(r->etag), "%.*s", (int)(end - i), buf + i);
  } else if (len > 14 && strncasecmp(buf, "content-range:", 14) == 0) {
    /* "bytes a-b/N" or "bytes * /N" (no space before the slash). */
    const char *slash = memchr(buf, '/', len);
    if (slash && slash + 1 < buf + len && slash[1] >= '0' && slash[1] <= '9')
      r->total = (int64_t)strtoll(slash + 1, NULL, 10);
  }
  return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *arg) {
  struct cap_s3_req *r = arg;
  size_t want = size * n, left = r->body_len - r->body_pos;
  if (want > left)
    want = left;
  if (want == 0)
    return 0;
  if (r->body_fd >= 0) {
    ssize_t got = pread(r->body_fd, buf, want, r->body_off + (off_t)r->body_pos);
    if (got <= 0)
      return CURL_READFUNC_ABORT;
    want = (size_t)got;
  } else {
    memcpy(buf, r->body + r->body_pos, want);
  }
  r->body_pos += want;
  return want;
}

/* Lets curl send the body again on its own, as it does when a reused
 * connection turns out dead (the store closed it, or restarted) after some
 * of the body had gone: without it that attempt ends in
 * CURLE_SEND_FAIL_REWIND. The body is memory or a file range, so any
 * offset inside it can be served again. */
static int on_seek(void *arg, curl_off_t offset, int origin) {
  struct cap_s3_req *r = arg;
  if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > (uint64_t)r->body_len)
    return CURL_SEEKFUNC_CANTSEEK;
  r->body_pos = (size_t)offset;
  return CURL_SEEKFUNC_OK;
}

/* Curl errors worth another attempt: the network, not the request. A failed
 * rewind is one too: the next attempt starts the body from its first byte. */
static int retriable_curl(CURLcode rc) {
  switch (rc) {
  case CURLE_SEND_FAIL_REWIND:
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return 1;
  default:
    return 0;
  }
}

static void attempt(struct cap_s3_req *r);

static void on_retry_timer(uv_timer_t *t) {
  attempt(t->data);
}

static void finish(struct cap_s3_req *r) {
  if (!cap_s3_ok(r)) {
    r->s3->failures++;
    if (r->curl_result != CURLE_OK && r->err_code[0] == '\0') {
      snprintf(r->err_code, sizeof(r->err_code), "network");
      snprintf(r->err_msg, sizeof(r->err_msg), "%s", curl_easy_strerror(r->curl_result));
    } else if (r->err_code[0] == '\0') {
      if (cap_s3_xml_text(r->resp.data, r->resp.len, "Code", r->err_code, sizeof(r->err_code)) != 0)
        snprintf(r->err_code, sizeof(r->err_code), "HTTP%ld", r->status);
      if (cap_s3_xml_text(r->resp.data, r->resp.len, "Message", r->err_msg, sizeof(r->err_msg)) !=
          0)
        snprintf(r->err_msg, sizeof(r->err_msg), "HTTP status %ld", r->status);
    }
  }
  r->done(r);
}

static int has_query(const struct cap_s3_req *r, const char *name) {
  for (size_t i = 0; i < r->nquery; i++)
    if (strcmp(r->query[i].name, name) == 0)
      return 1;
  return 0;
}

/* The S3 operation a request is, for the metrics. */
static const char *operation(const struct cap_s3_req *r) {
  switch (r->method[0]) {
  case 'H':
    return "head";
  case 'G':
    return has_query(r, "uploads") ? "list_multipart" : r->key ? "get" : "list";
  case 'P':
    if (r->method[1] == 'U')
      return has_query(r, "partNumber") ? "upload_part" : "put";
    return has_query(r, "uploads") ? "create_multipart" : "complete_multipart";
  case 'D':
    return has_query(r, "uploadId") ? "abort_multipart" : "delete";
  }
  return "other";
}

/* Counts one attempt: its outcome and the bytes it moved either way. */
static void count_attempt(const struct cap_s3_req *r, CURL *easy, CURLcode result) {
  curl_off_t up = 0, down = 0;
  const char *outcome = result != CURLE_OK                    ? "network"
                        : r->status >= 200 && r->status < 300 ? "ok"
                        : r->status >= 500                    ? "http_5xx"
                                                              : "http_4xx";
  curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &up);
  curl_easy_getinfo(easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
  cap_metrics_inc(CAP_M_STORAGE_REQUESTS, CAP_LABELS(operation(r), outcome));
  cap_metrics_add(CAP_M_STORAGE_BYTES_UPLOADED, NULL, (double)up);
  cap_metrics_add(CAP_M_STORAGE_BYTES_DOWNLOADED, NULL, (double)down);
}

static void on_done(CURL *easy, CURLcode result, void *arg) {
  struct cap_s3_req *r = arg;
  r->in_flight = 0;
  r->curl_result = result;
  r->status = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
  curl_off_t cl = -1;
  if (curl_easy_getinfo(easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK)
    r->length = cl;
  count_attempt(r, easy, result);
  curl_easy_cleanup(easy);
  r->easy = NULL;
  curl_slist_free_all(r->headers);
  r->headers = NULL;

  int again = (result != CURLE_OK && retriable_curl(result) && r->err_code[0] == '\0') ||
              (result == CURLE_OK && (r->status >= 500 || r->status == 429));
  /* A body cut short is not all an attempt can get wrong: a 2xx whose
   * length falls short of what was asked is resumed too. */
  if (again && r->sink && r->got > r->got_at_attempt) {
    /* This attempt moved the read on: the next goes on from there, and the
     * retry budget is for attempts that get nowhere. */
    r->attempt = 0;
    r->resumes++;
  }
  if (!again || r->attempt >= r->s3->conf->retries) {
    finish(r);
    return;
  }
  /* Exponential backoff with jitter, so that retries from many uploads
   * do not arrive together. */
  unsigned char rnd;
  RAND_bytes(&rnd, 1);
  uint64_t delay = (uint64_t)r->s3->conf->backoff_ms << (r->attempt < 10 ? r->attempt : 10);
  if (delay > BACKOFF_MAX_MS)
    delay = BACKOFF_MAX_MS;
  delay = delay / 2 + delay * rnd / 255;
  r->attempt++;
  r->s3->retries++;
  cap_metrics_inc(CAP_M_STORAGE_RETRIES, CAP_LABELS(operation(r)));
  struct cap_log_rec *l = cap_log_begin(CAP_LOG_INFO, "storage.retry");
  cap_log_str(l, "method", r->method);
  cap_log_str(l, "key", r->key);
  cap_log_int(l, "attempt", r->attempt);
  cap_log_int(l, "status", r->status);
  if (result != CURLE_OK)
    cap_log_str(l, "error", curl_easy_strerror(result));
  cap_log_int(l, "delay_ms", (long long)delay);
  cap_log_end(l);
  if (!r->timer_open) {
    uv_timer_init(r->s3->cl->loop, &r->retry_timer);
    r->retry_timer.data = r;
    r->timer_open = 1;
  }
  uv_timer_start(&r->retry_timer, on_retry_timer, delay, 0);
}

/* Writes the URL path (bucket and encoded key) the request is signed for. */
static void object_path(const struct cap_s3_req *r, struct cap_buf *raw) {
  const struct cap_s3 *s3 = r->s3;
  cap_buf_puts(raw, s3->path_bucket);
  if (r->key) {
    cap_buf_putc(raw, '/');
    cap_buf_puts(raw, s3->conf->prefix ? s3->conf->prefix : "");
    cap_buf_puts(raw, r->key);
  } else if (raw->len == 0) {
    cap_buf_putc(raw, '/');
  }
}

/* Clears what a previous attempt left in r. */
static void reset_attempt(struct cap_s3_req *r) {
  r->body_pos = 0;
  r->got_at_attempt = r->got;
  r->length = -1;
  r->total = -1;
  r->etag[0] = '\0';
  r->err_code[0] = '\0';
  r->err_msg[0] = '\0';
  cap_buf_reset(&r->resp);
  if (r->out_fd >= 0) {
    /* A retried download starts the file over. */
    if (ftruncate(r->out_fd, 0) == 0)
      lseek(r->out_fd, 0, SEEK_SET);
    r->bytes_out = 0;
  }
}

/* What one attempt sends, signed: the path, the query, the payload hash,
 * the date and the Authorization value. */
struct signed_req {
  struct cap_buf path, auth;
  struct cap_sigv4_query q[4];
  char amz_date[17], hash[65];
  char range[64]; /* "bytes=a-[b]" for a ranged GET, else "". */
};

/* Signs r with SigV4 into s (whose buffers the caller frees).  Returns 0,
 * or -EINVAL when the key or a credential cannot be signed. */
static int sign(const struct cap_s3_req *r, struct signed_req *s) {
  const struct cap_s3_conf *conf = r->s3->conf;
  struct cap_sigv4_creds creds = {conf->access_key, conf->secret_key, conf->region, "s3"};
  struct cap_sigv4_header sh[4];
  size_t nh = 0;
  for (size_t i = 0; i < r->nquery; i++) {
    s->q[i].name = r->query[i].name;
    s->q[i].value = r->query[i].value ? r->query[i].value : "";
  }
  /* Every header of ours that the store acts on is signed; cap_sigv4_sign
   * sorts them itself. */
  if (r->content_type) {
    sh[nh].name = "content-type";
    sh[nh].value = r->content_type;
    nh++;
  }
  if (r->cache_control) {
    sh[nh].name = "cache-control";
    sh[nh].value = r->cache_control;
    nh++;
  }
  s->range[0] = '\0';
  if (r->ranged) {
    /* Only what the sink has not taken yet. */
    int n = snprintf(s->range, sizeof(s->range), "bytes=%llu-",
                     (unsigned long long)(r->range_start + r->got));
    if (r->range_end != CAP_S3_RANGE_OPEN)
      snprintf(s->range + n, sizeof(s->range) - (size_t)n, "%llu",
               (unsigned long long)r->range_end);
    sh[nh].name = "range";
    sh[nh].value = s->range;
    nh++;
  }
  if (r->if_match) {
    sh[nh].name = "if-match";
    sh[nh].value = r->if_match;
    nh++;
  }
  object_path(r, &s->path);
  if (r->signed_payload || r->body_len == 0)
    cap_sigv4_sha256_hex(r->body_len ? r->body : "", r->body_len, s->hash);
  else
    snprintf(s->hash, sizeof(s->hash), "UNSIGNED-PAYLOAD");
  cap_sigv4_amz_date(time(NULL), s->amz_date);
  if (cap_sigv4_sign(&creds, r->method, r->s3->host, s->path.data, s->q, r->nquery, sh, nh, s->hash,
                     s->amz_date, &s->auth, NULL, NULL) != 0)
    return -EINVAL;
  return 0;
}

/* Appends "name: value" to r's header list. */
static void add_header(struct cap_s3_req *r, struct cap_buf *tmp, const char *name,
                       const char *value) {
  cap_buf_reset(tmp);
  cap_buf_printf(tmp, "%s: %s", name, value);
  r->headers = curl_slist_append(r->headers, tmp->data);
}

/* Builds r's request headers from the signature s. */
static void build_headers(struct cap_s3_req *r, const struct signed_req *s) {
  struct cap_buf hdr;
  cap_buf_init(&hdr);
  add_header(r, &hdr, "Host", r->s3->host);
  add_header(r, &hdr, "x-amz-date", s->amz_date);
  add_header(r, &hdr, "x-amz-content-sha256", s->hash);
  add_header(r, &hdr, "Authorization", s->auth.data);
  if (r->content_type) {
    add_header(r, &hdr, "Content-Type", r->content_type);
  } else {
    /* A POST would otherwise carry curl's form type, which the store keeps
     * as the object's (CreateMultipartUpload) or is not ours to send. */
    r->headers = curl_slist_append(r->headers, "Content-Type:");
  }
  if (r->cache_control)
    add_header(r, &hdr, "Cache-Control", r->cache_control);
  /* No header curl adds on its own reaches the store: its Accept (any
   * type) is unsigned noise, and "Expect: 100-continue" would cost every
   * part a round trip. */
  r->headers = curl_slist_append(r->headers, "Accept:");
  r->headers = curl_slist_append(r->headers, "Expect:");
  if (s->range[0])
    add_header(r, &hdr, "Range", s->range);
  if (r->if_match)
    add_header(r, &hdr, "If-Match", r->if_match);
  cap_buf_free(&hdr);
}

/* Sets the easy handle e up to send r to url. */
static void configure_easy(struct cap_s3_req *r, CURL *e, const char *url) {
  const struct cap_s3_conf *conf = r->s3->conf;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                   (long)(conf->low_speed_s > 0 ? conf->low_speed_s : 30));
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  if (strcmp(r->method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (strcmp(r->method, "PUT") == 0) {
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
  } else if (strcmp(r->method, "POST") == 0) {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
  } else if (strcmp(r->method, "GET") != 0) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
  }
}

/* Sends one attempt of r; its end comes to on_done, or to finish() when it
 * cannot start. */
static void attempt(struct cap_s3_req *r) {
  if (r->s3->cl->closing) {
    /* Shutting down: a retry that comes due now ends here. */
    r->curl_result = CURLE_ABORTED_BY_CALLBACK;
    finish(r);
    return;
  }
  struct signed_req s;
  struct cap_buf url;
  cap_buf_init(&s.path);
  cap_buf_init(&s.auth);
  cap_buf_init(&url);
  reset_attempt(r);
  if (sign(r, &s) != 0) {
    /* Only a malformed key or credential gets here; retrying cannot help. */
    snprintf(r->err_code, sizeof(r->err_code), "invalid_request");
    snprintf(r->err_msg, sizeof(r->err_msg), "The request could not be signed");
    r->curl_result = CURLE_FAILED_INIT;
    goto fail;
  }
  cap_buf_puts(&url, r->s3->base);
  cap_sigv4_uri_encode(&url, s.path.data, s.path.len, 1);
  if (r->nquery) {
    cap_buf_putc(&url, '?');
    cap_sigv4_url_query(&url, s.q, r->nquery);
  }
  CURL *e = curl_easy_init();
  if (e == NULL)
    abort(); /* curl_easy_init fails only without memory. */
  r->easy = e;
  build_headers(r, &s);
  configure_easy(r, e, url.data);
  r->s3->requests++;
  r->in_flight = 1;
  if (cap_curlloop_add(r->s3->cl, e, on_done, r) != 0) {
    r->in_flight = 0;
    curl_easy_cleanup(e);
    r->easy = NULL;
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    r->curl_result = CURLE_FAILED_INIT;
    goto fail;
  }
  cap_buf_free(&s.path);
  cap_buf_free(&s.auth);
  cap_buf_free(&url);
  return;

fail:
  cap_buf_free(&s.path);
  cap_buf_free(&s.auth);
  cap_buf_free(&url);
  finish(r);
}

void cap_s3_start(struct cap_s3_req *r) {
  r->attempt = 0;
  attempt(r);
}

static void on_timer_closed(uv_handle_t *h) {
  struct cap_s3_req *r = h->data;
  r->timer_open = 0;
  if (r->on_freed)
    r->on_freed(r);
}

void cap_s3_req_free(struct cap_s3_req *r, void (*on_freed)(struct cap_s3_req *r)) {
  if (r->in_flight && r->easy) {
    /* A transfer stopped half way (a child that seeks abandons its read)
     * still moved bytes. */
    curl_off_t up = 0, down = 0;
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
    cap_metrics_add(CAP_M_STORAGE_BYTES_UPLOADED, NULL, (double)up);
    cap_metrics_add(CAP_M_STORAGE_BYTES_DOWNLOADED, NULL, (double)down);
    cap_curlloop_remove(r->s3->cl, r->easy);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    r->in_flight = 0;
  }
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  cap_buf_free(&r->resp);
  free(r->key);
  r->key = NULL;
  r->on_freed = on_freed;
  if (r->timer_open) {
    uv_timer_stop(&r->retry_timer);
    if (!uv_is_closing((uv_handle_t *)&r->retry_timer))
      uv_close((uv_handle_t *)&r->retry_timer, on_timer_closed);
    return;
  }
  if (on_freed)
    on_freed(r);
}

void cap_s3_req_resume(struct cap_s3_req *r) {
  if (r->easy && r->in_flight)
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
}

void cap_s3_req_cancel(struct cap_s3_req *r, void (*on_freed)(struct cap_s3_req *r)) {
  r->canceled = 1;
  cap_s3_req_free(r, on_freed);
}

int cap_s3_xml_text(const char *xml, size_t len, const char *tag, char *out, size_t outlen) {
  char open[80], close[80];
  if (xml == NULL || outlen == 0)
    return -ENOENT;
  snprintf(open, sizeof(open), "<%s>", tag);
  snprintf(close, sizeof(close), "</%s>", tag);
  const char *end = xml + len;
  const char *a = memmem(xml, len, open, strlen(open));
  if (a == NULL)
    return -ENOENT;
  a += strlen(open);
  const char *b = memmem(a, (size_t)(end - a), close, strlen(close));
  if (b == NULL)
    return -ENOENT;
  size_t o = 0;
  static const struct {
    const char *ent;
    char c;
  } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  for (const char *p = a; p < b && o + 1 < outlen;) {
    size_t k;
    for (k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
      size_t el = strlen(ents[k].ent);
      if ((size_t)(b - p) >= el && memcmp(p, ents[k].ent, el) == 0) {
        out[o++] = ents[k].c;
        p += el;
        break;
      }
    }
    if (k == sizeof(ents) / sizeof(ents[0]))
      out[o++] = *p++;
  }
  out[o] = '\0';
  return 0;
}
