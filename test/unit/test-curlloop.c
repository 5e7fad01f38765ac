#include "curlloop.h"

#include "alloc.h"
#include "check.h"
#include "httpsrv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* The test server answers by path:
 *   /ok/N   200 with N bytes ('a' + i % 26)
 *   /slow   200 "slow", two seconds later
 *   /close  200 "closed" with Connection: close, then closes
 *   /echo   200 with the request body
 * and 404 otherwise. */
static void handle(struct sconn *c, const struct srv_req *rq) {
  if (strncmp(rq->path, "/ok/", 4) == 0) {
    size_t n = strtoul(rq->path + 4, NULL, 10);
    char *out = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
      out[i] = (char)('a' + i % 26);
    srv_respond(c, 200, out, n, 0);
    free(out);
  } else if (strcmp(rq->path, "/slow") == 0) {
    srv_respond_later(c, 2000, 200, NULL, "slow", 4);
  } else if (strcmp(rq->path, "/close") == 0) {
    srv_respond(c, 200, "closed", 6, 1);
  } else if (strcmp(rq->path, "/echo") == 0) {
    srv_respond(c, 200, rq->body, rq->body_len, 0);
  } else {
    srv_respond(c, 404, "", 0, 0);
  }
}

/* The loop, the server and the curl loop under test. */
struct env {
  uv_loop_t loop;
  struct srv srv;
  struct cap_curlloop cl;
  uv_timer_t watchdog;
  int timed_out;
  int closed; /* on_closed calls. */
  int done_total;
};

/* One transfer and what came of it. */
struct req {
  struct env *env;
  CURL *easy;
  char *body;
  size_t len, cap;
  int done;
  CURLcode result;
  long code;
  long connects;
  uint64_t started, ended;
  /* Upload source. */
  const unsigned char *up;
  size_t up_len, up_off;
};

static void on_watchdog(uv_timer_t *t) {
  struct env *e = t->data;
  e->timed_out = 1;
  uv_stop(&e->loop);
}

static void on_closed(struct cap_curlloop *cl) {
  struct env *e = (struct env *)((char *)cl - offsetof(struct env, cl));
  e->closed++;
}

static int env_init(struct env *e) {
  memset(e, 0, sizeof(*e));
  if (!CHECK_EQ_INT(uv_loop_init(&e->loop), 0))
    return -1;
  if (!CHECK_EQ_INT(srv_start(&e->srv, &e->loop, handle), 0))
    return -1;
  if (!CHECK_EQ_INT(cap_curlloop_init(&e->cl, &e->loop), 0))
    return -1;
  uv_timer_init(&e->loop, &e->watchdog);
  e->watchdog.data = e;
  return 0;
}

/* Runs the loop until *count reaches want or ms pass; returns whether it did. */
static int run_until(struct env *e, const int *count, int want, uint64_t ms) {
  e->timed_out = 0;
  uv_timer_start(&e->watchdog, on_watchdog, ms, 0);
  while (*count < want && !e->timed_out)
    uv_run(&e->loop, UV_RUN_ONCE);
  uv_timer_stop(&e->watchdog);
  return *count >= want;
}

/* Runs the loop for ms, whatever happens. */
static void run_for(struct env *e, uint64_t ms) {
  int never = 0;
  run_until(e, &never, 1, ms);
}

/* Runs the loop until nothing keeps it alive; returns 0, or -1 when it was
 * still busy after ms. */
static int run_to_end(struct env *e, uint64_t ms) {
  e->timed_out = 0;
  uv_unref((uv_handle_t *)&e->watchdog);
  uv_timer_start(&e->watchdog, on_watchdog, ms, 0);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  uv_timer_stop(&e->watchdog);
  uv_ref((uv_handle_t *)&e->watchdog);
  return e->timed_out ? -1 : 0;
}

static void print_handle(uv_handle_t *h, void *arg) {
  fprintf(stderr, "  handle left: %s%s%s\n", uv_handle_type_name(uv_handle_get_type(h)),
          uv_is_active(h) ? " active" : "", uv_is_closing(h) ? " closing" : "");
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Closes the curl loop and the server, runs the loop to its end and checks
 * that on_closed ran once, that done ran want_done times in all and that no
 * handle was left behind. */
static void env_fini(struct env *e, int want_done) {
  cap_curlloop_close(&e->cl, on_closed);
  srv_close(&e->srv);
  if (!CHECK_EQ_INT(run_to_end(e, 3000), 0))
    fprintf(stderr, "  the loop did not end after cap_curlloop_close\n");
  CHECK_EQ_INT(e->closed, 1);
  CHECK_EQ_INT(e->done_total, want_done);
  CHECK_EQ_INT(e->srv.open, 0);
  uv_close((uv_handle_t *)&e->watchdog, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  if (!CHECK_EQ_INT(uv_loop_close(&e->loop), 0)) {
    uv_walk(&e->loop, print_handle, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
  }
}

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  struct req *r = arg;
  size_t len = size * n;
  if (r->cap - r->len < len) {
    r->cap = (r->len + len) * 2;
    r->body = xrealloc(r->body, r->cap);
  }
  memcpy(r->body + r->len, p, len);
  r->len += len;
  return len;
}

static size_t on_upload(char *p, size_t size, size_t n, void *arg) {
  struct req *r = arg;
  size_t len = size * n;
  /* Odd-sized pieces, so that curl sees short reads. */
  if (len > 10007)
    len = 10007;
  if (len > r->up_len - r->up_off)
    len = r->up_len - r->up_off;
  memcpy(p, r->up + r->up_off, len);
  r->up_off += len;
  return len;
}

static void on_done(CURL *easy, CURLcode result, void *arg) {
  struct req *r = arg;
  r->done++;
  r->env->done_total++;
  r->result = result;
  r->ended = uv_now(&r->env->loop);
  if (!CHECK(easy == r->easy))
    return;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->code);
  curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &r->connects);
}

/* Sets r up for a GET of path on e's server (or on port when not 0). */
static void req_init(struct req *r, struct env *e, const char *path, int port) {
  memset(r, 0, sizeof(*r));
  r->env = e;
  r->easy = curl_easy_init();
  char url[128];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port ? port : e->srv.port, path);
  curl_easy_setopt(r->easy, CURLOPT_URL, url);
  curl_easy_setopt(r->easy, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
}

static int req_start(struct req *r) {
  uv_update_time(&r->env->loop);
  r->started = uv_now(&r->env->loop);
  return cap_curlloop_add(&r->env->cl, r->easy, on_done, r);
}

static void req_free(struct req *r) {
  if (r->easy)
    curl_easy_cleanup(r->easy);
  free(r->body);
  r->easy = NULL;
  r->body = NULL;
}

/* Whether r got the /ok/n body. */
static int ok_body(const struct req *r, size_t n) {
  if (r->len != n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (r->body[i] != (char)('a' + i % 26))
      return 0;
  return 1;
}

static void test_single_get(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  struct req r;
  req_init(&r, &e, "/ok/100000", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK_EQ_INT(r.code, 200);
  CHECK_EQ_INT(r.len, 100000);
  CHECK(ok_body(&r, 100000));
  CHECK_EQ_INT(r.connects, 1);
  CHECK_EQ_INT(e.srv.accepted, 1);
  req_free(&r);

  /* An empty body. */
  req_init(&r, &e, "/ok/0", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK_EQ_INT(r.code, 200);
  CHECK_EQ_INT(r.len, 0);
  CHECK_EQ_INT(r.connects, 0);
  req_free(&r);

  /* /close reuses the kept-alive connection, then the server closes it: the
   * next request needs a new one. */
  req_init(&r, &e, "/close", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK_EQ_INT(r.code, 200);
  CHECK_EQ_MEM(r.body, r.len, "closed", 6);
  CHECK_EQ_INT(r.connects, 0);
  CHECK_EQ_INT(e.srv.accepted, 1);
  req_free(&r);
  req_init(&r, &e, "/ok/10", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK(ok_body(&r, 10));
  CHECK_EQ_INT(r.connects, 1);
  CHECK_EQ_INT(e.srv.accepted, 2);
  req_free(&r);

  /* A 404 is a completed transfer too. */
  req_init(&r, &e, "/nothing", 0);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  CHECK_EQ_INT(r.result, CURLE_OK);
  CHECK_EQ_INT(r.code, 404);
  req_free(&r);

  /* Only the server's side of the closed connection is gone by now. */
  CHECK_EQ_INT(e.srv.requests, 5);
  env_fini(&e, 5);
}

#define WAVE 50

/* Starts WAVE GETs of /ok/1000 at once and waits for all of them; returns
 * how many reused a connection. */
static int run_wave(struct env *e, struct req *rs) {
  int base = e->done_total;
  for (int i = 0; i < WAVE; i++) {
    req_init(&rs[i], e, "/ok/1000", 0);
    CHECK_EQ_INT(req_start(&rs[i]), 0);
  }
  CHECK(run_until(e, &e->done_total, base + WAVE, 5000));
  int reused = 0, bad = 0;
  for (int i = 0; i < WAVE; i++) {
    if (rs[i].done != 1 || rs[i].result != CURLE_OK || rs[i].code != 200 || !ok_body(&rs[i], 1000))
      bad++;
    if (rs[i].connects == 0)
      reused++;
  }
  if (!CHECK_EQ_INT(bad, 0))
    for (int i = 0; i < WAVE; i++)
      if (rs[i].result != CURLE_OK)
        fprintf(stderr, "  transfer %d: %s\n", i, curl_easy_strerror(rs[i].result));
  return reused;
}

static void test_concurrent_and_reuse(void) {
  struct env e;
  static struct req rs[WAVE];
  if (env_init(&e) != 0)
    return;
  /* Nothing in the pool yet: each transfer connects. */
  run_wave(&e, rs);
  int first = e.srv.accepted;
  CHECK(first >= 1 && first <= WAVE);
  for (int i = 0; i < WAVE; i++)
    req_free(&rs[i]);
  /* The second wave takes connections from the pool: what the server
   * accepted and what curl counted agree, and most were reused. */
  int reused = run_wave(&e, rs);
  int opened = e.srv.accepted - first;
  CHECK_EQ_INT(reused, WAVE - opened);
  if (!CHECK(opened <= WAVE / 2))
    fprintf(stderr, "  second wave: %d new connections for %d requests\n", opened, WAVE);
  for (int i = 0; i < WAVE; i++)
    req_free(&rs[i]);
  CHECK_EQ_INT(e.srv.requests, 2 * WAVE);
  env_fini(&e, 2 * WAVE);

  /* With at most 4 connections to the host, 50 transfers queue for them. */
  if (env_init(&e) != 0)
    return;
  curl_multi_setopt(e.cl.multi, CURLMOPT_MAX_HOST_CONNECTIONS, 4L);
  reused = run_wave(&e, rs);
  CHECK(e.srv.accepted >= 1 && e.srv.accepted <= 4);
  CHECK_EQ_INT(reused, WAVE - e.srv.accepted);
  for (int i = 0; i < WAVE; i++)
    req_free(&rs[i]);
  env_fini(&e, WAVE);
}

/* A timeout with no traffic at all ends the transfer from the timer
 * callback: the result is seen only if info is drained there too. */
static void test_timeout(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  struct req quick, slow;
  req_init(&quick, &e, "/slow", 0);
  curl_easy_setopt(quick.easy, CURLOPT_TIMEOUT_MS, 300L);
  req_init(&slow, &e, "/slow", 0);
  CHECK_EQ_INT(req_start(&quick), 0);
  CHECK_EQ_INT(req_start(&slow), 0);
  CHECK(run_until(&e, &quick.done, 1, 1500));
  CHECK_EQ_INT(quick.result, CURLE_OPERATION_TIMEDOUT);
  uint64_t took = quick.ended - quick.started;
  if (!CHECK(took >= 250 && took <= 1000))
    fprintf(stderr, "  the 300 ms timeout took %llu ms\n", (unsigned long long)took);
  CHECK_EQ_INT(slow.done, 0);
  /* The other one gets its answer two seconds in. */
  CHECK(run_until(&e, &slow.done, 1, 4000));
  CHECK_EQ_INT(slow.result, CURLE_OK);
  CHECK_EQ_INT(slow.code, 200);
  CHECK_EQ_MEM(slow.body, slow.len, "slow", 4);
  took = slow.ended - slow.started;
  if (!CHECK(took >= 1900 && took <= 3000))
    fprintf(stderr, "  /slow took %llu ms\n", (unsigned long long)took);
  CHECK_EQ_INT(quick.done, 1);
  req_free(&quick);
  req_free(&slow);
  env_fini(&e, 2);
}

#define UPLOAD_SIZE (1024 * 1024)

static void test_upload(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  unsigned char *src = xmalloc(UPLOAD_SIZE);
  uint32_t x = 12345;
  for (size_t i = 0; i < UPLOAD_SIZE; i++) {
    x = x * 1103515245u + 12345u;
    src[i] = (unsigned char)(x >> 16);
  }
  struct req put, post;
  req_init(&put, &e, "/echo", 0);
  put.up = src;
  put.up_len = UPLOAD_SIZE;
  curl_easy_setopt(put.easy, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(put.easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)UPLOAD_SIZE);
  curl_easy_setopt(put.easy, CURLOPT_READFUNCTION, on_upload);
  curl_easy_setopt(put.easy, CURLOPT_READDATA, &put);
  req_init(&post, &e, "/echo", 0);
  post.up = src;
  post.up_len = UPLOAD_SIZE;
  curl_easy_setopt(post.easy, CURLOPT_POST, 1L);
  curl_easy_setopt(post.easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)UPLOAD_SIZE);
  curl_easy_setopt(post.easy, CURLOPT_READFUNCTION, on_upload);
  curl_easy_setopt(post.easy, CURLOPT_READDATA, &post);
  CHECK_EQ_INT(req_start(&put), 0);
  CHECK_EQ_INT(req_start(&post), 0);
  CHECK(run_until(&e, &e.done_total, 2, 5000));
  CHECK_EQ_INT(put.done, 1);
  CHECK_EQ_INT(put.result, CURLE_OK);
  CHECK_EQ_INT(put.code, 200);
  CHECK_EQ_INT(put.up_off, UPLOAD_SIZE);
  CHECK_EQ_MEM(put.body, put.len, src, UPLOAD_SIZE);
  CHECK_EQ_INT(post.done, 1);
  CHECK_EQ_INT(post.result, CURLE_OK);
  CHECK_EQ_INT(post.code, 200);
  CHECK_EQ_MEM(post.body, post.len, src, UPLOAD_SIZE);
  /* Neither waited for curl's one-second Expect timeout. */
  CHECK(put.ended - put.started < 1000);
  CHECK(post.ended - post.started < 1000);
  req_free(&put);
  req_free(&post);
  free(src);
  env_fini(&e, 2);
}

static void test_refused(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  int port = srv_closed_port();
  CHECK(port > 0);
  struct req r;
  req_init(&r, &e, "/", port);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK(run_until(&e, &r.done, 1, 3000));
  /* Nothing more comes for it. */
  run_for(&e, 100);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.result, CURLE_COULDNT_CONNECT);
  CHECK_EQ_INT(r.code, 0);
  req_free(&r);
  env_fini(&e, 1);
}

/* The curl loop alone on a loop: nothing else keeps the loop alive while a
 * transfer is under way, so uv_run must not return before it ends. */
static void test_alone_on_loop(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  srv_close(&e.srv);
  run_to_end(&e, 1000);
  int port = srv_closed_port();
  struct req r;
  req_init(&r, &e, "/", port);
  CHECK_EQ_INT(req_start(&r), 0);
  CHECK_EQ_INT(run_to_end(&e, 3000), 0);
  if (!CHECK_EQ_INT(r.done, 1))
    fprintf(stderr, "  uv_run returned with the transfer under way\n");
  CHECK_EQ_INT(r.result, CURLE_COULDNT_CONNECT);
  int done = r.done;
  cap_curlloop_remove(&e.cl, r.easy);
  req_free(&r);
  env_fini(&e, done);
}

static void test_remove(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  /* Removed before the loop ever ran. */
  struct req early;
  req_init(&early, &e, "/ok/10", 0);
  CHECK_EQ_INT(req_start(&early), 0);
  cap_curlloop_remove(&e.cl, early.easy);
  /* Removed while the server sits on the request; an ordinary transfer runs
   * beside it and leaves no connection open. */
  struct req slow, other;
  req_init(&slow, &e, "/slow", 0);
  req_init(&other, &e, "/close", 0);
  CHECK_EQ_INT(req_start(&slow), 0);
  CHECK_EQ_INT(req_start(&other), 0);
  CHECK(run_until(&e, &e.srv.slow_waiting, 1, 3000));
  CHECK(run_until(&e, &other.done, 1, 3000));
  cap_curlloop_remove(&e.cl, slow.easy);
  /* Removing twice does nothing. */
  cap_curlloop_remove(&e.cl, slow.easy);
  /* The easy handle is ours again: it can go at once. */
  req_free(&slow);
  /* Once the server stops listening nothing is left to wait for: curl
   * dropped the half-done connection, so the server sees it close. */
  srv_close_listener(&e.srv);
  uint64_t t0 = uv_hrtime();
  if (!CHECK_EQ_INT(run_to_end(&e, 3000), 0))
    fprintf(stderr, "  the loop did not end after cap_curlloop_remove\n");
  CHECK(uv_hrtime() - t0 < 1000000000u);
  CHECK_EQ_INT(e.srv.slow_waiting, 0);
  CHECK_EQ_INT(slow.done, 0);
  CHECK_EQ_INT(early.done, 0);
  CHECK_EQ_INT(other.done, 1);
  CHECK_EQ_INT(other.result, CURLE_OK);
  CHECK_EQ_MEM(other.body, other.len, "closed", 6);
  CHECK_EQ_INT(e.srv.requests, 2);
  /* A handle removed before it ran can be added again. */
  srv_start(&e.srv, &e.loop, handle);
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok/10", e.srv.port);
  curl_easy_setopt(early.easy, CURLOPT_URL, url);
  CHECK_EQ_INT(req_start(&early), 0);
  CHECK(run_until(&e, &early.done, 1, 3000));
  CHECK_EQ_INT(early.result, CURLE_OK);
  CHECK(ok_body(&early, 10));
  req_free(&early);
  req_free(&other);
  env_fini(&e, 2);
}

static void test_close_in_flight(void) {
  struct env e;
  if (env_init(&e) != 0)
    return;
  /* One finished transfer leaves a connection in the pool. */
  struct req first;
  req_init(&first, &e, "/ok/10", 0);
  CHECK_EQ_INT(req_start(&first), 0);
  CHECK(run_until(&e, &first.done, 1, 3000));
  CHECK_EQ_INT(first.result, CURLE_OK);
  req_free(&first);
  struct req rs[5];
  for (int i = 0; i < 5; i++) {
    req_init(&rs[i], &e, "/slow", 0);
    CHECK_EQ_INT(req_start(&rs[i]), 0);
  }
  CHECK(run_until(&e, &e.srv.slow_waiting, 5, 3000));
  uint64_t t0 = uv_hrtime();
  /* env_fini closes the curl loop: no done, on_closed once, nothing left. */
  env_fini(&e, 1);
  CHECK(uv_hrtime() - t0 < 1000000000u);
  for (int i = 0; i < 5; i++) {
    CHECK_EQ_INT(rs[i].done, 0);
    req_free(&rs[i]);
  }

  /* Closed before the loop ever ran for them. */
  if (env_init(&e) != 0)
    return;
  for (int i = 0; i < 5; i++) {
    req_init(&rs[i], &e, "/ok/10", 0);
    CHECK_EQ_INT(req_start(&rs[i]), 0);
  }
  env_fini(&e, 0);
  for (int i = 0; i < 5; i++) {
    CHECK_EQ_INT(rs[i].done, 0);
    req_free(&rs[i]);
  }
}

int main(void) {
  alarm(30); /* A hung loop must not hang the test run. */
  test_single_get();
  test_concurrent_and_reuse();
  test_timeout();
  test_upload();
  test_refused();
  test_alone_on_loop();
  test_remove();
  test_close_in_flight();
  return check_report();
}
