#include "curlloop.h"

#include "alloc.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

/* One socket curl asked us to watch. */
struct sock {
  uv_poll_t poll;
  curl_socket_t fd;
  struct cap_curlloop *cl;
};

/* What we remember of a transfer; kept in the easy handle's CURLOPT_PRIVATE. */
struct xfer {
  cap_curlloop_done_fn done;
  void *arg;
  cap_curlloop_allow_fn allow; /* NULL: any address. */
  CURL *easy;
  struct xfer *prev, *next;
};

static void maybe_closed(struct cap_curlloop *cl) {
  if (cl->closing && cl->open_socks == 0 && uv_is_closing((uv_handle_t *)&cl->timer) &&
      cl->timer.data == NULL && cl->on_closed)
    cl->on_closed(cl);
}

static void on_sock_closed(uv_handle_t *h) {
  struct sock *s = h->data;
  struct cap_curlloop *cl = s->cl;
  free(s);
  cl->open_socks--;
  maybe_closed(cl);
}

static void unlink_xfer(struct cap_curlloop *cl, struct xfer *x) {
  if (x->prev)
    x->prev->next = x->next;
  else
    cl->xfers = x->next;
  if (x->next)
    x->next->prev = x->prev;
  /* Idle, the timer must not keep the loop alive (nor must it, while a
   * transfer only waits for curl's timeout, let the loop end). */
  if (cl->xfers == NULL)
    uv_unref((uv_handle_t *)&cl->timer);
}

/* Hands every finished transfer to its owner.  Called after every socket
 * action and every timeout, so that no completion waits for unrelated
 * traffic (the timer path is where curl's own example forgets it). */
static void drain(struct cap_curlloop *cl) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(cl->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    CURL *easy = msg->easy_handle;
    CURLcode result = msg->data.result;
    struct xfer *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(cl->multi, easy);
    if (x == NULL)
      continue; /* Removed by its owner meanwhile. */
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    unlink_xfer(cl, x);
    cap_curlloop_done_fn done = x->done;
    void *arg = x->arg;
    free(x);
    done(easy, result, arg);
  }
}

static void action(struct cap_curlloop *cl, curl_socket_t fd, int flags) {
  cl->in_action = 1;
  curl_multi_socket_action(cl->multi, fd, flags, &cl->running);
  cl->in_action = 0;
  drain(cl);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  struct sock *s = h->data;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  action(s->cl, s->fd, flags);
}

static void on_timeout(uv_timer_t *t) {
  action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  struct cap_curlloop *cl = userp;
  struct sock *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, on_sock_closed);
      curl_multi_assign(cl->multi, fd, NULL);
    }
    return 0;
  }
  if (s == NULL) {
    s = xcalloc(1, sizeof(*s));
    s->fd = fd;
    s->cl = cl;
    if (uv_poll_init_socket(cl->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    cl->open_socks++;
    curl_multi_assign(cl->multi, fd, s);
  }
  int events = 0;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

static int on_timer_set(CURLM *multi, long timeout_ms, void *userp) {
  struct cap_curlloop *cl = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&cl->timer);
  else
    /* A timeout of 0 becomes a timer due now: it fires on the next loop
     * turn, never inside this callback (which runs inside curl). */
    uv_timer_start(&cl->timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

int cap_curlloop_init(struct cap_curlloop *cl, uv_loop_t *loop) {
  static int global_done;
  if (!global_done) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return -EIO;
    global_done = 1;
  }
  cl->loop = loop;
  cl->running = 0;
  cl->in_action = 0;
  cl->closing = 0;
  cl->open_socks = 0;
  cl->xfers = NULL;
  cl->on_closed = NULL;
  cl->multi = curl_multi_init();
  if (cl->multi == NULL)
    return -ENOMEM;
  curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
  curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
  curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
  uv_timer_init(loop, &cl->timer);
  cl->timer.data = cl;
  /* The timer only serves transfers; it must not keep the loop alive. */
  uv_unref((uv_handle_t *)&cl->timer);
  return 0;
}

/* Opens curl's sockets close-on-exec, so that no ffmpeg child keeps a
 * storage or registry connection open.  A guarded transfer's address is
 * shown to its allow function first: this is the address curl connects
 * to, so no later name lookup can change it. */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a) {
  struct xfer *x = arg;
  (void)purpose;
  if (x && x->allow && !x->allow(x->arg, &a->addr))
    return CURL_SOCKET_BAD;
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

int cap_curlloop_add(struct cap_curlloop *cl, CURL *easy, cap_curlloop_done_fn done, void *arg) {
  return cap_curlloop_add_guarded(cl, easy, done, arg, NULL);
}

int cap_curlloop_add_guarded(struct cap_curlloop *cl, CURL *easy, cap_curlloop_done_fn done,
                             void *arg, cap_curlloop_allow_fn allow) {
  struct xfer *x = xcalloc(1, sizeof(*x));
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, x);
  x->done = done;
  x->arg = arg;
  x->allow = allow;
  x->easy = easy;
  curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
  if (curl_multi_add_handle(cl->multi, easy) != CURLM_OK) {
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    free(x);
    return -EIO;
  }
  x->next = cl->xfers;
  if (cl->xfers)
    cl->xfers->prev = x;
  else
    uv_ref((uv_handle_t *)&cl->timer); /* Transfers keep the loop alive. */
  cl->xfers = x;
  return 0;
}

void cap_curlloop_remove(struct cap_curlloop *cl, CURL *easy) {
  struct xfer *x = NULL;
  /* curl refuses to remove a transfer from inside its own callbacks. */
  assert(!cl->in_action);
  curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
  if (x == NULL)
    return;
  curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
  curl_multi_remove_handle(cl->multi, easy);
  unlink_xfer(cl, x);
  free(x);
}

static void on_timer_closed(uv_handle_t *h) {
  struct cap_curlloop *cl = h->data;
  h->data = NULL;
  maybe_closed(cl);
}

void cap_curlloop_close(struct cap_curlloop *cl, void (*on_closed)(struct cap_curlloop *cl)) {
  if (cl->closing)
    return;
  assert(!cl->in_action);
  cl->closing = 1;
  cl->on_closed = on_closed;
  while (cl->xfers)
    cap_curlloop_remove(cl, cl->xfers->easy);
  /* Closing the multi handle closes its cached connections, which calls
   * on_socket with CURL_POLL_REMOVE for each. */
  curl_multi_cleanup(cl->multi);
  cl->multi = NULL;
  uv_timer_stop(&cl->timer);
  uv_close((uv_handle_t *)&cl->timer, on_timer_closed);
}
