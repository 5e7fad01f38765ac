#ifndef CAP_CURLLOOP_H
#define CAP_CURLLOOP_H

#include <curl/curl.h>
#include <sys/socket.h>
#include <uv.h>

/* libcurl's multi interface driven by the libuv loop that serves HTTP and
 * watches the children: one uv_poll_t per socket curl uses, one uv_timer_t
 * for curl's timeout, no threads.  Connections are kept in the multi
 * handle's pool and reused across requests. */

struct cap_curlloop;
struct xfer;

/* Called once per transfer when it ends, with curl's result; the easy
 * handle has been removed from the multi handle and is the caller's again. */
typedef void (*cap_curlloop_done_fn)(CURL *easy, CURLcode result, void *arg);

struct cap_curlloop {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  int running;   /* Transfers under way, as curl last said. */
  int in_action; /* Inside curl_multi_socket_action: callbacks must not re-enter it. */
  int closing;
  int open_socks;
  struct xfer *xfers; /* Transfers under way. */
  void (*on_closed)(struct cap_curlloop *cl);
};

/* Sets cl up on loop.  Returns 0 or a negative errno. */
int cap_curlloop_init(struct cap_curlloop *cl, uv_loop_t *loop);
/* Starts easy; done(easy, result, arg) runs when it ends.  Returns 0 or -EIO. */
int cap_curlloop_add(struct cap_curlloop *cl, CURL *easy, cap_curlloop_done_fn done, void *arg);
/* Decides whether a transfer may connect to sa (1) or not (0). */
typedef int (*cap_curlloop_allow_fn)(void *arg, const struct sockaddr *sa);
/* As cap_curlloop_add, but every address easy is about to connect to is
 * first shown to allow(arg, sa); a refused one fails that connection
 * attempt (curl tries the next address or ends with a connect error). */
int cap_curlloop_add_guarded(struct cap_curlloop *cl, CURL *easy, cap_curlloop_done_fn done,
                             void *arg, cap_curlloop_allow_fn allow);
/* Stops easy without calling its done callback; the handle is the caller's
 * again.  Not from inside one of easy's own curl callbacks. */
void cap_curlloop_remove(struct cap_curlloop *cl, CURL *easy);
/* Aborts every transfer (without callbacks) and closes the handles (not
 * from inside a curl callback);
 * on_closed (may be NULL) runs from the last close callback. */
void cap_curlloop_close(struct cap_curlloop *cl, void (*on_closed)(struct cap_curlloop *cl));

#endif
