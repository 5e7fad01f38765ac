#ifndef CAP_CONN_H
#define CAP_CONN_H

#include "buf.h"
#include "connset.h"
#include "exchange.h"
#include "httpparse.h"
#include "netaddr.h"

#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct cap_app;
struct cap_conn;

/* What every connection of a server shares; owned by the server. */
struct cap_conn_opts {
  struct cap_app *app;
  struct cap_httpparse_limits limits;
  uint64_t header_timeout_ms;
  uint64_t body_timeout_ms;
  uint64_t idle_timeout_ms;
  uint64_t min_body_rate;  /* Bytes a second a body must average; 0: no minimum. */
  int private_listener;    /* The metrics listener: /health and /metrics only. */
  struct cap_connset *set; /* The listener's connections and their budget. */
  /* Called once, when the connection's last handle has closed and just
   * before it is freed: the owner unlinks and counts it here. */
  void (*on_closed)(struct cap_conn *c, void *arg);
  void *arg;
};

/* One client connection: reads and parses requests, admits them, hands
 * them to route handlers one at a time, writes the answers in order and
 * enforces the per-connection timeouts. */
struct cap_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown_req;
  const struct cap_conn_opts *opts;
  struct sockaddr_storage peer;
  char peer_str[CAP_NETADDR_STRLEN];
  struct cap_httpparse parser;
  struct cap_exchange x;
  struct cap_buf pending; /* Received bytes not parsed yet (parser paused). */
  struct cap_buf out;     /* Scratch space for serializing a response. */
  int phase;
  int handles_open;
  unsigned reading : 1;
  unsigned in_dispatch : 1;
  unsigned waiting : 1;  /* A handler holds the exchange. */
  unsigned rejected : 1; /* The error response in x waits for the body-less message to end. */
  unsigned draining : 1;
  unsigned peer_eof : 1;
  unsigned closing : 1;
  unsigned refuse : 1;  /* Over a connection limit: answer 503 and close. */
  unsigned begun : 1;   /* The exchange holds the current request's id and start. */
  unsigned probing : 1; /* Half-closed while a handler works: is the client still there? */
  uint64_t requests;
  size_t lingered; /* Bytes discarded after the final answer. */
  /* The body's deadline, and the bytes received in the current window of
   * the minimum data rate check (which started at window_start). */
  uint64_t body_deadline, window_start;
  size_t window_bytes;
  int probes;
  struct cap_connset_entry link; /* In opts->set. */
};

/* Accepts a pending connection from listener and starts serving it; with
 * refuse set (no room in opts->set), or when its peer, not a trusted proxy,
 * holds too many connections already, it answers 503 too_many_connections
 * and closes instead.  Returns the connection (freed by itself after it
 * closes, once it has left opts->set) or NULL. */
struct cap_conn *cap_conn_accept(uv_stream_t *listener, const struct cap_conn_opts *opts,
                                 int refuse);
/* Asks the connection to close once its current request is answered
 * (at once when it is idle); the answer carries Connection: close. */
void cap_conn_drain(struct cap_conn *c);
/* Makes room in the connection's set: an idle connection closes, one that
 * only waits for the body of a refused request gets its refusal now and
 * closes.  Called by the set's evict callback. */
void cap_conn_evict(struct cap_conn *c);
/* Closes the connection now, whatever it is doing. */
void cap_conn_close(struct cap_conn *c);

#endif
