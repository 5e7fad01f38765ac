#ifndef CAP_INPUTSRV_H
#define CAP_INPUTSRV_H

#include "s3.h"

#include <stdint.h>
#include <uv.h>

/* The loopback input endpoint: a second HTTP listener on 127.0.0.1, at an
 * ephemeral port, through which ffmpeg and ffprobe read an S3/R2 input by
 * range instead of from a downloaded copy.  Each input being read is a
 * source with an unguessable path (/in/<32 hex digits>, 128 random bits)
 * that answers only while the source is open.  Every GET becomes a ranged
 * S3 GET on the shared curl multi, pinned to the ETag the source was opened
 * with (If-Match), streamed to the child's socket with backpressure both
 * ways, and resumed from the byte reached when the store fails mid-body;
 * the child sees a slow read, never the fault.  Nothing is buffered beyond
 * a small write queue per connection, and nothing touches the disk.
 *
 * Only peers at 127.0.0.1 are served; the listener is never the public
 * one.  It runs on the loop that serves HTTP and watches the children. */

struct cap_insrc;
struct cap_inconn;

/* Counters over the listener's life, for the metrics. */
struct cap_inputsrv_stats {
  uint64_t requests; /* Ranges asked for (GET) and HEADs answered. */
  uint64_t bytes;    /* Body bytes sent to children. */
  uint64_t resumes;  /* Store reads resumed after a failure mid-body. */
  uint64_t seeks;    /* GETs that did not start where the source's last one stopped. */
  uint64_t refused;  /* Connections or requests refused (peer, path, method, limits). */
};

struct cap_inputsrv {
  uv_loop_t *loop;
  struct cap_s3 *s3;
  uv_tcp_t listener;
  int listening; /* The listener is open (and must be closed). */
  int port;      /* The port children connect to; 0 until started. */
  size_t wq_max; /* Bytes queued to one child before the store read pauses. */
  int nconns;
  struct cap_inconn *conns;
  struct cap_insrc *srcs;
  struct cap_inputsrv_stats stats;
  void (*on_closed)(struct cap_inputsrv *srv);
};

/* Why a source can no longer be read. */
enum cap_insrc_fault {
  CAP_INSRC_OK,
  CAP_INSRC_CHANGED,     /* The object is no longer the one opened (412, 404). */
  CAP_INSRC_DENIED,      /* The store refused the read (403). */
  CAP_INSRC_UNAVAILABLE, /* No answer, 5xx or stalls after every retry. */
  CAP_INSRC_FAILED,      /* Anything else the store answered. */
};

/* One object opened for reading by one job's children.  The caller owns
 * the struct, fills key/etag/size, and calls cap_insrc_open. */
struct cap_insrc {
  struct cap_inputsrv *srv;
  const char *key; /* Borrowed until cap_insrc_close. */
  char etag[130];  /* The ETag every range is pinned to. */
  uint64_t size;   /* The object's size in bytes. */
  char url[96];    /* http://127.0.0.1:<port>/in/<secret>, what the children read. */
  /* Called once when a range failed for good (r: the failed request, for
   * its status and message); the children cannot finish reading. */
  void (*on_fault)(struct cap_insrc *src, enum cap_insrc_fault why, const struct cap_s3_req *r);
  void *data;
  /* What the children read, for /jobs/{id}. */
  uint64_t requests, bytes, resumes, seeks;
  enum cap_insrc_fault fault;
  /* Private. */
  char secret[33];
  uint64_t next_off; /* Where the last GET stopped, to count seeks. */
  int open;
  struct cap_insrc *prev, *next;
};

/* Sets srv up and starts listening on 127.0.0.1 at an ephemeral port;
 * ranges are read through s3.  Returns 0 or a negative UV_E* code. */
int cap_inputsrv_start(struct cap_inputsrv *srv, uv_loop_t *loop, struct cap_s3 *s3);
/* Stops listening and closes every connection (their store reads are
 * canceled); on_closed (may be NULL) runs when the last handle is closed.
 * Sources stay the caller's; they no longer answer. */
void cap_inputsrv_stop(struct cap_inputsrv *srv, void (*on_closed)(struct cap_inputsrv *srv));

/* Gives src a fresh secret path on srv and makes it answer there.  Returns
 * 0, or -ENOTCONN when srv is not listening. */
int cap_insrc_open(struct cap_insrc *src, struct cap_inputsrv *srv);
/* Makes src's path answer 404 from now on and closes the connections that
 * read it (their store reads are canceled).  Safe on a source never
 * opened, and twice. */
void cap_insrc_close(struct cap_insrc *src);

/* Parses a Range header value for an object of size bytes: "bytes=a-",
 * "bytes=a-b" or "bytes=-n" (the last n).  Returns 1 with the inclusive range
 * in first and last, 0 when the header should be ignored (absent, malformed, or
 * several ranges: the whole object is sent), or -1 when it cannot be
 * satisfied (416). */
int cap_inputsrv_parse_range(const char *v, size_t len, uint64_t size, uint64_t *first,
                             uint64_t *last);

#endif
