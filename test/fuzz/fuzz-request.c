/* libFuzzer target for the request path: bytes from the network through
 * the HTTP parser, admission (routing, auth, rate limits, sizes), the route
 * handlers and the /exec JSON validation, exactly as a connection drives
 * them, minus the socket. */
#include "admit.h"
#include "app.h"
#include "config.h"
#include "exchange.h"
#include "execreq.h"
#include "httpparse.h"
#include "log.h"
#include "preset.h"
#include "reqid.h"
#include "router.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static struct cap_config cfg;
static struct cap_app app;
static struct sockaddr_in peer;
static uv_loop_t loop;

static void on_finish(struct cap_exchange *x) {
  /* Every answer must be a complete status with a JSON body. */
  if (x->status < 100 || x->status > 599 || x->body.len == 0)
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[512];
  /* An empty object store: no key exists, so /exec never starts a job and
   * no child is spawned while fuzzing. */
  static char data_dir[] = "/tmp/cap-fuzz-XXXXXX";
  if (mkdtemp(data_dir) == NULL)
    abort();
  char *args[] = {"cap-server", "--rate-limit",
                  "1000000000", "--rate-limit-token",
                  "1000000000", "--max-body-bytes",
                  "4096",       "--data-dir",
                  data_dir,     NULL};
  char *envp[] = {"CAPABILITY_TOKEN=fuzz-token-0123456789abcdef", NULL};
  struct cap_presets *presets;
  uv_loop_init(&loop);
  if (cap_config_load(&cfg, 9, args, envp, err, sizeof(err)) != 0 ||
      cap_app_init(&app, &cfg, &loop, err, sizeof(err)) != 0 ||
      cap_preset_load(NULL, &presets, err, sizeof(err)) != 0)
    abort();
  cap_jobs_set_presets(&app.jobs, presets);
  cap_log_open("/dev/null");
  cap_log_set_level(CAP_LOG_ERROR);
  cap_reqid_init();
  peer.sin_family = AF_INET;
  peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct cap_httpparse p;
  struct cap_httpparse_limits lim = {.max_header_bytes = (size_t)cfg.max_header_bytes,
                                     .max_headers = (size_t)cfg.max_headers,
                                     .max_url_bytes = (size_t)cfg.max_url_bytes};
  struct cap_exchange x;
  const char *buf = (const char *)data;
  size_t off = 0;
  int admitted = 0;

  cap_httpparse_init(&p, &lim);
  cap_exchange_init(&x);
  /* Feed in two pieces split at a point the input chooses, so requests
   * that straddle reads are covered too. */
  size_t split = size ? data[0] % (size + 1) : 0;
  for (int guard = 0; guard < 10000; guard++) {
    size_t end = off < split ? split : size;
    size_t used = 0;
    enum cap_httpparse_event ev = cap_httpparse_feed(&p, buf + off, end - off, &used);
    off += used;
    if (ev == CAP_HTTPPARSE_ERROR) {
      if (p.err_status < 400 || p.err_code == NULL)
        abort();
      break;
    }
    if (ev == CAP_HTTPPARSE_HEADERS) {
      cap_exchange_reset(&x);
      x.app = &app;
      x.req = &p.req;
      x.finish_cb = on_finish;
      admitted = cap_admit_request(&x, (const struct sockaddr *)&peer, 0) == 0;
      p.max_body = admitted && x.route->has_body ? (size_t)cfg.max_body_bytes : 0;
    } else if (ev == CAP_HTTPPARSE_MESSAGE) {
      if (admitted)
        x.route->handler(&x);
      cap_httpparse_next(&p);
      admitted = 0;
    } else if (off >= size) {
      break;
    }
  }
  cap_exchange_free(&x);
  cap_httpparse_free(&p);

  /* The JSON validation also sees the raw bytes as a body. */
  struct cap_execreq r;
  enum cap_err code;
  char msg[256];
  cap_execreq_parse(&r, buf, size, &code, msg, sizeof(msg));
  cap_execreq_free(&r);
  return 0;
}
