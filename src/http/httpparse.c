#include "httpparse.h"

#include "alloc.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PARSER(lp) ((struct cap_httpparse *)((char *)(lp)-offsetof(struct cap_httpparse, parser)))

static int fail(struct cap_httpparse *p, enum cap_err e, const char *msg) {
  p->err = e;
  p->err_status = cap_err_status(e);
  p->err_code = cap_err_code(e);
  p->err_msg = msg;
  return HPE_USER;
}

static int head_full(struct cap_httpparse *p, size_t add) {
  return p->req.head.len + add > p->limits.max_header_bytes;
}

/* Chunk extensions are legal but useless to us; more than this is abuse. */
#define CHUNK_EXT_MAX 1024

enum { HS_NONE, HS_FIELD, HS_VALUE, HS_DONE };

/* Where the raw-byte scan is relative to the request line. */
enum { LS_BEFORE, LS_IN, LS_AFTER };

static int on_message_begin(llhttp_t *lp) {
  struct cap_httpparse *p = PARSER(lp);
  p->last_was_value = 0;
  p->header_state = HS_NONE;
  p->chunk_ext_bytes = 0;
  return 0;
}

static int on_header_field_complete(llhttp_t *lp) {
  struct cap_httpparse *p = PARSER(lp);
  /* llhttp lets an empty field name (": v") through, in the headers and in
   * the trailers alike; a trailer's name bytes set HS_FIELD only when there
   * are some, since trailers are not stored. */
  if (p->header_state != HS_FIELD ||
      (!p->in_body && (p->req.nhdr == 0 || p->req.hdr[p->req.nhdr - 1].name_len == 0)))
    return fail(p, CAP_E_BAD_REQUEST, "Header without a name");
  p->header_state = HS_VALUE;
  return 0;
}

static int on_header_value_complete(llhttp_t *lp) {
  PARSER(lp)->header_state = HS_DONE;
  return 0;
}

/* The last chunk (size 0) is followed by the trailer section, whose lines
 * llhttp checks less strictly than the head's (it takes a bare LF ending the
 * section, and obs-fold).  Pausing here lets cap_httpparse_feed scan the
 * trailers' raw bytes as it scans the head's. */
static int on_chunk_header(llhttp_t *lp) {
  struct cap_httpparse *p = PARSER(lp);
  if (lp->content_length != 0)
    return 0;
  p->in_trailers = 1;
  p->header_state = HS_NONE;
  /* The last-chunk line has just ended with CRLF (llhttp refuses a bare LF
   * there), so a first trailer byte of SP, HTAB or LF is caught as such. */
  p->prev[0] = '\r';
  p->prev[1] = '\n';
  p->line_state = LS_AFTER;
  return HPE_PAUSED;
}

static int on_chunk_ext(llhttp_t *lp, const char *at, size_t n) {
  struct cap_httpparse *p = PARSER(lp);
  p->chunk_ext_bytes += n;
  if (p->chunk_ext_bytes > CHUNK_EXT_MAX)
    return fail(p, CAP_E_BAD_REQUEST, "Chunk extensions are too long");
  return 0;
}

static int on_url(llhttp_t *lp, const char *at, size_t n) {
  struct cap_httpparse *p = PARSER(lp);
  if (p->req.url_len + n > p->limits.max_url_bytes)
    return fail(p, CAP_E_URI_TOO_LONG, "Request URL is too long");
  if (head_full(p, n))
    return fail(p, CAP_E_HEADERS_TOO_LARGE, "Request headers are too large");
  cap_buf_append(&p->req.head, at, n);
  p->req.url_len += n;
  return 0;
}

/* Header bytes must be visible ASCII or obs-text and HTAB/SP in values; a
 * CR, LF or NUL that reached here would mean a folded or smuggled line. */
static int bad_value_byte(const char *at, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)at[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return 1;
  }
  return 0;
}

static int trailer_bytes(struct cap_httpparse *p, size_t n) {
  p->chunk_ext_bytes += n;
  if (p->chunk_ext_bytes > p->limits.max_header_bytes)
    return fail(p, CAP_E_HEADERS_TOO_LARGE, "Request trailers are too large");
  return 0;
}

static int on_header_field(llhttp_t *lp, const char *at, size_t n) {
  struct cap_httpparse *p = PARSER(lp);
  struct cap_request *r = &p->req;
  /* Chunked trailers carry nothing we use: they are checked, counted and
   * dropped. */
  if (p->in_body) {
    if (n > 0)
      p->header_state = HS_FIELD;
    return trailer_bytes(p, n);
  }
  if (head_full(p, n))
    return fail(p, CAP_E_HEADERS_TOO_LARGE, "Request headers are too large");
  p->header_state = HS_FIELD;
  if (r->nhdr == 0 || p->last_was_value) {
    if (r->nhdr >= p->limits.max_headers)
      return fail(p, CAP_E_HEADERS_TOO_LARGE, "Too many request headers");
    if (r->nhdr == r->hdr_cap) {
      r->hdr_cap = r->hdr_cap ? r->hdr_cap * 2 : 16;
      r->hdr = xrealloc(r->hdr, r->hdr_cap * sizeof(*r->hdr));
    }
    struct cap_header *h = &r->hdr[r->nhdr++];
    h->name_off = (uint32_t)r->head.len;
    h->name_len = 0;
    h->value_off = 0;
    h->value_len = 0;
    p->last_was_value = 0;
  }
  cap_buf_append(&r->head, at, n);
  r->hdr[r->nhdr - 1].name_len += (uint32_t)n;
  return 0;
}

static int on_header_value(llhttp_t *lp, const char *at, size_t n) {
  struct cap_httpparse *p = PARSER(lp);
  struct cap_request *r = &p->req;
  if (p->in_body) {
    if (p->header_state != HS_VALUE)
      return fail(p, CAP_E_BAD_REQUEST, "Trailer without a name");
    if (bad_value_byte(at, n))
      return fail(p, CAP_E_BAD_REQUEST, "Invalid character in a trailer value");
    return trailer_bytes(p, n);
  }
  /* A value must follow a field name; llhttp lets ": v" through. */
  if (r->nhdr == 0 || p->header_state == HS_DONE || p->header_state == HS_NONE)
    return fail(p, CAP_E_BAD_REQUEST, "Header without a name");
  if (head_full(p, n))
    return fail(p, CAP_E_HEADERS_TOO_LARGE, "Request headers are too large");
  if (bad_value_byte(at, n))
    return fail(p, CAP_E_BAD_REQUEST, "Invalid character in a header value");
  struct cap_header *h = &r->hdr[r->nhdr - 1];
  if (!p->last_was_value) {
    h->value_off = (uint32_t)r->head.len;
    p->last_was_value = 1;
  }
  cap_buf_append(&r->head, at, n);
  h->value_len += (uint32_t)n;
  return 0;
}

/* Returns 1 when a Transfer-Encoding value is the single coding chunked
 * (case-insensitive, optional whitespace around it). */
static int is_chunked_alone(const char *v, size_t n) {
  while (n > 0 && (v[0] == ' ' || v[0] == '\t')) {
    v++;
    n--;
  }
  while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
    n--;
  return n == 7 && strncasecmp(v, "chunked", 7) == 0;
}

static int on_headers_complete(llhttp_t *lp) {
  struct cap_httpparse *p = PARSER(lp);
  struct cap_request *r = &p->req;
  const char *url = r->head.data;
  size_t len;

  r->method = lp->method;
  r->http_major = lp->http_major;
  r->http_minor = lp->http_minor;
  if (r->http_major != 1)
    return fail(p, CAP_E_BAD_REQUEST, "Unsupported HTTP version");
  if (r->url_len == 0 || url[0] != '/')
    return fail(p, CAP_E_BAD_REQUEST, "Request target must be an absolute path");
  const char *q = memchr(url, '?', r->url_len);
  r->path_len = q ? (size_t)(q - url) : r->url_len;
  if (memchr(url, '#', r->url_len))
    return fail(p, CAP_E_BAD_REQUEST, "Request target must not hold a fragment");

  r->chunked = (lp->flags & F_CHUNKED) != 0;
  r->has_content_length = (lp->flags & F_CONTENT_LENGTH) != 0;
  r->content_length = r->has_content_length ? lp->content_length : 0;
  r->keep_alive = llhttp_should_keep_alive(lp) != 0;
  r->upgrade = lp->upgrade != 0;
  /* We speak nothing but HTTP/1.1 here and may ignore Upgrade (RFC 9110
   * 7.8); clearing the flag keeps llhttp parsing the stream as HTTP instead
   * of stopping for a protocol switch that will not come. */
  lp->upgrade = 0;
  size_t te_count = cap_request_header_count(r, "transfer-encoding");
  if (r->http_minor == 0 && te_count > 0)
    return fail(p, CAP_E_BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request");
  /* RFC 9112 6.3: a Transfer-Encoding other than a final chunked makes the
   * length unknowable; llhttp lets an empty one through.  chunked is also
   * the only coding we decode, so one before it (gzip, or identity, which
   * is no longer registered) would reach the JSON parser still encoded, and
   * a proxy in front may frame such a list differently: only chunked alone
   * is taken.  RFC 9112 6.1 suggests 501 for an unknown coding; we answer
   * 400 as for every other framing we refuse, since the body cannot be read
   * and the connection closes either way. */
  if (te_count > 0) {
    const char *te = cap_request_header(r, "transfer-encoding", &len);
    if (te_count > 1 || !is_chunked_alone(te, len) || !r->chunked || r->has_content_length)
      return fail(p, CAP_E_BAD_REQUEST, "Transfer-Encoding must be chunked, alone");
  }
  if (cap_request_header_count(r, "host") > 1)
    return fail(p, CAP_E_BAD_REQUEST, "More than one Host header");
  const char *expect = cap_request_header(r, "expect", &len);
  if (expect) {
    if (len == 12 && strncasecmp(expect, "100-continue", 12) == 0)
      r->expect_continue = 1;
    else
      r->expect_other = 1;
  }
  p->in_body = 1;
  p->pause_event = CAP_HTTPPARSE_HEADERS;
  return HPE_PAUSED;
}

static int on_body(llhttp_t *lp, const char *at, size_t n) {
  struct cap_httpparse *p = PARSER(lp);
  if (p->req.body.len + n > p->max_body)
    return fail(p, CAP_E_BODY_TOO_LARGE, "Request body is too large");
  cap_buf_append(&p->req.body, at, n);
  return 0;
}

static int on_message_complete(llhttp_t *lp) {
  struct cap_httpparse *p = PARSER(lp);
  p->pause_event = CAP_HTTPPARSE_MESSAGE;
  return HPE_PAUSED;
}

static llhttp_settings_t settings;
static int settings_ready;

void cap_httpparse_init(struct cap_httpparse *p, const struct cap_httpparse_limits *limits) {
  if (!settings_ready) {
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_chunk_header = on_chunk_header;
    settings.on_chunk_extension_name = on_chunk_ext;
    settings.on_chunk_extension_value = on_chunk_ext;
    settings_ready = 1;
  }
  memset(p, 0, sizeof(*p));
  p->limits = *limits;
  llhttp_init(&p->parser, HTTP_REQUEST, &settings);
}

void cap_httpparse_free(struct cap_httpparse *p) {
  cap_buf_free(&p->req.head);
  cap_buf_free(&p->req.body);
  free(p->req.hdr);
  p->req.hdr = NULL;
}

void cap_httpparse_next(struct cap_httpparse *p) {
  struct cap_request *r = &p->req;
  cap_buf_reset(&r->head);
  cap_buf_reset(&r->body);
  r->url_len = r->path_len = r->nhdr = 0;
  r->content_length = 0;
  r->has_content_length = r->chunked = r->keep_alive = 0;
  r->expect_continue = r->expect_other = r->upgrade = 0;
  p->in_body = 0;
  p->head_bytes = 0;
  p->max_body = 0;
  p->last_was_value = 0;
  p->header_state = HS_NONE;
  p->in_trailers = 0;
  p->line_state = LS_BEFORE;
  p->prev[0] = p->prev[1] = 0;
  p->chunk_ext_bytes = 0;
  /* Buffers that grew for one large request are given back. */
  if (r->body.cap > 64 * 1024)
    cap_buf_free(&r->body);
}

int cap_httpparse_partial(const struct cap_httpparse *p) {
  return p->in_body || p->head_bytes > 0;
}

/* Checks raw bytes of a head or of a trailer section for what llhttp
 * accepts but we refuse: a bare LF (line ends are CRLF), obs-fold (a line
 * starting with SP or HTAB continues the previous field), and more than one
 * SP between the parts of the request line (RFC 9112 3 allows exactly one;
 * a target or method cannot hold a space, so two in a row are always
 * between parts).  Empty lines before the request line are allowed (RFC 9112
 * 2.2), so the request line starts at its first byte that is not CR or LF.
 * Returns NULL or why the bytes are refused. */
static const char *scan_head(struct cap_httpparse *p, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\n' && p->prev[1] != '\r')
      return "Line ending without CR";
    if ((c == ' ' || c == '\t') && p->prev[1] == '\n' && p->prev[0] == '\r')
      return "Folded header line (obs-fold)";
    if (p->line_state == LS_BEFORE && c != '\r' && c != '\n')
      p->line_state = LS_IN;
    if (p->line_state == LS_IN) {
      if (c == ' ' && p->prev[1] == ' ')
        return "More than one space in the request line";
      if (c == '\n')
        p->line_state = LS_AFTER;
    }
    p->prev[0] = p->prev[1];
    p->prev[1] = c;
  }
  return NULL;
}

enum cap_httpparse_event cap_httpparse_feed(struct cap_httpparse *p, const char *data, size_t len,
                                            size_t *consumed) {
  size_t off = 0;
  /* Right after the headers of a body-less request llhttp still owes us
   * on_message_complete, which it delivers on an empty execute. */
  int kick = p->in_body && len == 0;
  while (off < len || kick) {
    kick = 0;
    size_t n = len - off;
    /* Before the headers are complete, hand llhttp no more than the head
     * may still hold, so whitespace llhttp skips silently counts too. */
    if (!p->in_body) {
      size_t room = p->limits.max_header_bytes + 1 - p->head_bytes;
      if (n > room)
        n = room;
    }
    p->pause_event = CAP_HTTPPARSE_MORE;
    /* Once the last chunk is read, llhttp stops only at the end of the
     * message, so every byte of this call is a trailer byte. */
    int trailers = p->in_trailers;
    llhttp_errno_t err = llhttp_execute(&p->parser, data + off, n);
    size_t used = n;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
      used = (size_t)(llhttp_get_error_pos(&p->parser) - (data + off));
    int head = !p->in_body || p->pause_event == CAP_HTTPPARSE_HEADERS;
    if (head)
      p->head_bytes += used;
    if (head || trailers) {
      const char *why = scan_head(p, data + off, used);
      if (why) {
        fail(p, CAP_E_BAD_REQUEST, why);
        *consumed = off + used;
        return CAP_HTTPPARSE_ERROR;
      }
    }
    off += used;
    *consumed = off;
    if (err == HPE_OK) {
      if (!p->in_body && p->head_bytes > p->limits.max_header_bytes) {
        fail(p, CAP_E_HEADERS_TOO_LARGE, "Request headers are too large");
        return CAP_HTTPPARSE_ERROR;
      }
      continue;
    }
    if (err == HPE_PAUSED) {
      llhttp_resume(&p->parser);
      /* The pause at the last chunk is ours alone: parsing goes on. */
      if (p->pause_event == CAP_HTTPPARSE_MORE)
        continue;
      return (enum cap_httpparse_event)p->pause_event;
    }
    if (err == HPE_PAUSED_UPGRADE) {
      /* on_headers_complete clears the upgrade flag, so this cannot
       * happen; if it does, the stream is not HTTP we can follow. */
      fail(p, CAP_E_BAD_REQUEST, "Protocol upgrades are not supported");
      return CAP_HTTPPARSE_ERROR;
    }
    /* llhttp reports a failing *_complete callback as its own error code,
     * not as ours: a reason one of our callbacks gave is kept. */
    if (err != HPE_USER && p->err == CAP_E_NONE)
      fail(p, CAP_E_BAD_REQUEST, "Malformed request");
    return CAP_HTTPPARSE_ERROR;
  }
  *consumed = off;
  return CAP_HTTPPARSE_MORE;
}

const char *cap_request_header(const struct cap_request *req, const char *name, size_t *len) {
  size_t nl = strlen(name);
  for (size_t i = 0; i < req->nhdr; i++) {
    const struct cap_header *h = &req->hdr[i];
    if (h->name_len == nl && strncasecmp(req->head.data + h->name_off, name, nl) == 0) {
      *len = h->value_len;
      return h->value_len ? req->head.data + h->value_off : "";
    }
  }
  *len = 0;
  return NULL;
}

const char *cap_request_header_last(const struct cap_request *req, const char *name, size_t *len) {
  size_t nl = strlen(name);
  for (size_t i = req->nhdr; i-- > 0;) {
    const struct cap_header *h = &req->hdr[i];
    if (h->name_len == nl && strncasecmp(req->head.data + h->name_off, name, nl) == 0) {
      *len = h->value_len;
      return h->value_len ? req->head.data + h->value_off : "";
    }
  }
  *len = 0;
  return NULL;
}

size_t cap_request_header_count(const struct cap_request *req, const char *name) {
  size_t nl = strlen(name), count = 0;
  for (size_t i = 0; i < req->nhdr; i++) {
    const struct cap_header *h = &req->hdr[i];
    if (h->name_len == nl && strncasecmp(req->head.data + h->name_off, name, nl) == 0)
      count++;
  }
  return count;
}

const char *cap_request_query(const struct cap_request *req, size_t *len) {
  if (req->path_len >= req->url_len) {
    *len = 0;
    return NULL;
  }
  *len = req->url_len - req->path_len - 1;
  return req->head.data + req->path_len + 1;
}

const char *cap_request_method_name(const struct cap_request *req) {
  return llhttp_method_name((llhttp_method_t)req->method);
}
