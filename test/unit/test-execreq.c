#include "execreq.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char msg[256];
static const char *code;

static int parse(struct cap_execreq *r, const char *body, size_t len) {
  enum cap_err e = CAP_E_NONE;
  msg[0] = '\0';
  int rc = cap_execreq_parse(r, body, len, &e, msg, sizeof(msg));
  code = cap_err_code(e); /* NULL when it parsed. */
  return rc;
}

static int parse_str(struct cap_execreq *r, const char *body) {
  return parse(r, body, strlen(body));
}

static void test_capability_names(void) {
  CHECK_EQ_STR(cap_execreq_capabilities[CAP_CAP_FFMPEG_RENDER], "ffmpeg-render");
  CHECK_EQ_STR(cap_execreq_capabilities[CAP_CAP_FFPROBE], "ffprobe");
  CHECK(cap_execreq_capabilities[2] == NULL);
}

static void test_valid(void) {
  struct cap_execreq r;
  /* A package: the prefix gets its trailing slash. */
  CHECK_EQ_INT(parse_str(&r, "{\"input_key\":\"in.mp4\",\"output_prefix\":\"vod/abc\","
                             "\"preset\":\"hls-ladder\"}"),
               0);
  CHECK_EQ_STR(r.output_prefix, "vod/abc/");
  CHECK(r.output_key == NULL);
  cap_execreq_free(&r);
  CHECK_EQ_INT(parse_str(&r, "{\"input_key\":\"in.mp4\",\"output_prefix\":\"vod/abc/\","
                             "\"preset\":\"hls-ladder\"}"),
               0);
  CHECK_EQ_STR(r.output_prefix, "vod/abc/");
  cap_execreq_free(&r);

  /* The seed's body: no capability, a preset means ffmpeg-render. */
  CHECK_EQ_INT(parse_str(&r, "{\"input_key\":\"in/clip.mp4\",\"output_key\":\"out/clip.webm\","
                             "\"preset\":\"webm-720p\"}"),
               0);
  CHECK_EQ_INT(r.capability, CAP_CAP_FFMPEG_RENDER);
  CHECK_EQ_STR(r.input_key, "in/clip.mp4");
  CHECK_EQ_STR(r.output_key, "out/clip.webm");
  CHECK_EQ_STR(r.preset, "webm-720p");
  CHECK_EQ_INT(r.wait_s, -1);
  CHECK_EQ_INT(r.async, 0);
  CHECK(r.idempotency_key == NULL);
  cap_execreq_free(&r);
  CHECK(r.input_key == NULL);

  CHECK_EQ_INT(parse_str(&r, " {\"capability\":\"ffprobe\",\"input_key\":\"a.mp4\"} \r\n\t"), 0);
  CHECK_EQ_INT(r.capability, CAP_CAP_FFPROBE);
  CHECK_EQ_STR(r.input_key, "a.mp4");
  CHECK(r.output_key == NULL);
  CHECK(r.preset == NULL);
  CHECK_EQ_INT(r.wait_s, -1);
  cap_execreq_free(&r);

  CHECK_EQ_INT(parse_str(&r, "{\"capability\":\"ffmpeg-render\",\"input_key\":\"caf\xc3\xa9.mov\","
                             "\"output_key\":\"o\",\"preset\":\"p\",\"wait\":30,\"async\":true,"
                             "\"idempotency_key\":\"job-42\"}"),
               0);
  CHECK_EQ_INT(r.capability, CAP_CAP_FFMPEG_RENDER);
  CHECK_EQ_STR(r.input_key, "caf\xc3\xa9.mov");
  CHECK_EQ_INT(r.wait_s, 30);
  CHECK_EQ_INT(r.async, 1);
  CHECK_EQ_STR(r.idempotency_key, "job-42");
  cap_execreq_free(&r);

  /* Escapes in strings are decoded. */
  CHECK_EQ_INT(parse_str(&r, "{\"capability\":\"ffprobe\",\"input_key\":\"a\\/b\\u00e9\"}"), 0);
  CHECK_EQ_STR(r.input_key, "a/b\xc3\xa9");
  cap_execreq_free(&r);

  /* Wait bounds. */
  static const char *const waits_ok[] = {"0", "1", "90", "90.0", "0.0", "-0", "9e1"};
  static const int waits_val[] = {0, 1, 90, 90, 0, 0, 90};
  for (size_t i = 0; i < sizeof(waits_ok) / sizeof(waits_ok[0]); i++) {
    char body[128];
    snprintf(body, sizeof(body), "{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":%s}",
             waits_ok[i]);
    if (CHECK_EQ_INT(parse_str(&r, body), 0))
      CHECK_EQ_INT(r.wait_s, waits_val[i]);
    else
      fprintf(stderr, "  (wait %s: %s %s)\n", waits_ok[i], code, msg);
    cap_execreq_free(&r);
  }
  CHECK_EQ_INT(parse_str(&r, "{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"async\":false}"),
               0);
  CHECK_EQ_INT(r.async, 0);
  cap_execreq_free(&r);

  /* Limits at their edge. */
  char big[2048];
  char body[4096];
  memset(big, 'k', sizeof(big));
  snprintf(body, sizeof(body),
           "{\"input_key\":\"%.1024s\",\"output_key\":\"o\",\"preset\":\"%.64s\","
           "\"idempotency_key\":\"%.255s\"}",
           big, big, big);
  CHECK_EQ_INT(parse_str(&r, body), 0);
  CHECK_EQ_INT(r.input_key ? strlen(r.input_key) : 0, 1024);
  CHECK_EQ_INT(r.preset ? strlen(r.preset) : 0, 64);
  CHECK_EQ_INT(r.idempotency_key ? strlen(r.idempotency_key) : 0, 255);
  cap_execreq_free(&r);
}

struct err_case {
  const char *body;
  size_t len; /* 0: strlen(body). */
  const char *code;
  const char *field; /* The message must name it; may be NULL. */
};

#define B(lit) lit, sizeof(lit) - 1

static void test_errors(void) {
  char big[2048];
  memset(big, 'k', sizeof(big));
  char long_input[1200], long_preset[200], long_idem[400];
  snprintf(long_input, sizeof(long_input), "{\"capability\":\"ffprobe\",\"input_key\":\"%.1025s\"}",
           big);
  snprintf(long_preset, sizeof(long_preset),
           "{\"input_key\":\"a\",\"output_key\":\"b\",\"preset\":\"%.65s\"}", big);
  snprintf(long_idem, sizeof(long_idem),
           "{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"idempotency_key\":\"%.256s\"}", big);

  const struct err_case cases[] = {
      /* Not a JSON object. */
      {"", 0, "invalid_json", NULL},
      {"   ", 0, "invalid_json", NULL},
      {"[]", 0, "invalid_json", NULL},
      {"[{\"capability\":\"ffprobe\",\"input_key\":\"a\"}]", 0, "invalid_json", NULL},
      {"\"ffprobe\"", 0, "invalid_json", NULL},
      {"42", 0, "invalid_json", NULL},
      {"null", 0, "invalid_json", NULL},
      {"true", 0, "invalid_json", NULL},
      {"{", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\"", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a}", 0, "invalid_json", NULL},
      {"{'capability':'ffprobe'}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\"} x", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\"}{}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\"}]", 0, "invalid_json", NULL},
      /* A field given twice: readers disagree on which value counts. */
      {"{\"capability\":\"ffprobe\",\"input_key\":\"uploads/small.mp4\","
       "\"input_key\":\"../../etc/passwd\"}",
       0, "invalid_json", "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":1,\"wait\":2}", 0, "invalid_json",
       "wait"},
      {"{\"capability\":\"ffprobe\",\"capability\":\"ffprobe\",\"input_key\":\"a\"}", 0,
       "invalid_json", "capability"},
      {B("{\"capability\":\"ffprobe\",\"input_key\":\"a\"}\0"), "invalid_json", NULL},
      {B("{\"capability\":\"ffprobe\",\"input_key\":\"a\0b\"}"), "invalid_json", NULL},
      {B("\0{\"capability\":\"ffprobe\",\"input_key\":\"a\"}"), "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"\xff\"}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"\xc0\xaf\"}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"\xed\xa0\x80\"}", 0, "invalid_json", NULL},
      /* Raw control characters and \u0000 inside strings. */
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\tb\"}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\nb\"}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\\u0000b\"}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\\\"\\u0000\"}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\\u0000\":\"a\"}", 0, "invalid_json", NULL},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"\\ud800\"}", 0, "invalid_json", NULL},
      /* Unknown fields. */
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"extra\":1}", 0, "unknown_field", "extra"},
      {"{\"Capability\":\"ffprobe\",\"input_key\":\"a\"}", 0, "unknown_field", "Capability"},
      {"{\"args\":[\"-i\",\"/etc/passwd\"],\"input_key\":\"a\"}", 0, "unknown_field", "args"},
      /* Missing fields. */
      {"{}", 0, "missing_field", "capability"},
      {"{\"input_key\":\"a\",\"output_key\":\"b\"}", 0, "missing_field", "capability"},
      {"{\"capability\":\"ffprobe\"}", 0, "missing_field", "input_key"},
      {"{\"capability\":\"ffmpeg-render\",\"input_key\":\"a\",\"preset\":\"p\"}", 0,
       "missing_field", "output_key"},
      {"{\"capability\":\"ffmpeg-render\",\"input_key\":\"a\",\"output_key\":\"b\"}", 0,
       "missing_field", "preset"},
      {"{\"preset\":\"p\",\"output_key\":\"b\"}", 0, "missing_field", "input_key"},
      /* Unknown capability. */
      {"{\"capability\":\"ffplay\",\"input_key\":\"a\"}", 0, "unknown_capability", "ffplay"},
      {"{\"capability\":\"FFPROBE\",\"input_key\":\"a\"}", 0, "unknown_capability", NULL},
      {"{\"capability\":\"ffprobe \",\"input_key\":\"a\"}", 0, "unknown_capability", NULL},
      /* Fields of the wrong type or size. */
      {"{\"capability\":5,\"input_key\":\"a\"}", 0, "invalid_field", "capability"},
      {"{\"capability\":null,\"input_key\":\"a\"}", 0, "invalid_field", "capability"},
      {"{\"capability\":\"\",\"input_key\":\"a\"}", 0, "invalid_field", "capability"},
      {"{\"capability\":\"ffprobe\",\"input_key\":5}", 0, "invalid_field", "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":[\"a\"]}", 0, "invalid_field", "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"\"}", 0, "invalid_key", "input_key"},
      {long_input, 0, "invalid_key", "input_key"},
      {long_preset, 0, "invalid_field", "preset"},
      {long_idem, 0, "invalid_field", "idempotency_key"},
      {"{\"input_key\":\"a\",\"output_key\":{},\"preset\":\"p\"}", 0, "invalid_field",
       "output_key"},
      {"{\"input_key\":\"a\",\"output_key\":\"b\",\"preset\":true}", 0, "invalid_field", "preset"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"idempotency_key\":7}", 0, "invalid_field",
       "idempotency_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"output_key\":\"b\"}", 0, "invalid_field",
       "output_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"preset\":\"p\"}", 0, "invalid_field",
       "preset"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":-1}", 0, "invalid_field", "wait"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":91}", 0, "invalid_field", "wait"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":1.5}", 0, "invalid_field", "wait"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":90.001}", 0, "invalid_field",
       "wait"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":1e300}", 0, "invalid_field",
       "wait"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":\"5\"}", 0, "invalid_field",
       "wait"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":null}", 0, "invalid_field",
       "wait"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"wait\":true}", 0, "invalid_field",
       "wait"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"async\":\"yes\"}", 0, "invalid_field",
       "async"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"async\":1}", 0, "invalid_field", "async"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"async\":null}", 0, "invalid_field",
       "async"},
      /* Keys that could leave the store. */
      {"{\"capability\":\"ffprobe\",\"input_key\":\"../etc/passwd\"}", 0, "invalid_key",
       "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"/etc/passwd\"}", 0, "invalid_key", "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a//b\"}", 0, "invalid_key", "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a/\"}", 0, "invalid_key", "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\\\\b\"}", 0, "invalid_key", "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\\nb\"}", 0, "invalid_key", "input_key"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\\u0001b\"}", 0, "invalid_key", "input_key"},
      /* An escaped backslash before "u0000" is plain text, not a NUL. */
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\\\\u0000\"}", 0, "invalid_key", "input_key"},
      {"{\"input_key\":\"a\",\"output_key\":\"../b\",\"preset\":\"p\"}", 0, "invalid_key",
       "output_key"},
      {"{\"input_key\":\"a\",\"output_key\":\"b/./c\",\"preset\":\"p\"}", 0, "invalid_key",
       "output_key"},
      /* A package's prefix: the key rules, not both outputs, not for ffprobe. */
      {"{\"input_key\":\"a\",\"output_prefix\":\"../b/\",\"preset\":\"p\"}", 0, "invalid_key",
       "output_prefix"},
      {"{\"input_key\":\"a\",\"output_prefix\":\"/b/\",\"preset\":\"p\"}", 0, "invalid_key",
       "output_prefix"},
      {"{\"input_key\":\"a\",\"output_prefix\":\"b//\",\"preset\":\"p\"}", 0, "invalid_key",
       "output_prefix"},
      {"{\"input_key\":\"a\",\"output_prefix\":\"\",\"preset\":\"p\"}", 0, "invalid_key",
       "output_prefix"},
      {"{\"input_key\":\"a\",\"output_prefix\":[],\"preset\":\"p\"}", 0, "invalid_field",
       "output_prefix"},
      {"{\"input_key\":\"a\",\"output_prefix\":\"v/\",\"output_key\":\"k\",\"preset\":\"p\"}", 0,
       "invalid_field", "not both"},
      {"{\"capability\":\"ffprobe\",\"input_key\":\"a\",\"output_prefix\":\"v/\"}", 0,
       "invalid_field", "output_prefix"},
      {"{\"input_key\":\"a\",\"preset\":\"p\"}", 0, "missing_field", "output_prefix"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct err_case *e = &cases[i];
    struct cap_execreq r;
    size_t len = e->len ? e->len : strlen(e->body);
    int rc = parse(&r, e->body, len);
    int ok = CHECK_EQ_INT(rc, -EINVAL);
    ok &= CHECK_EQ_STR(code, e->code);
    ok &= CHECK(msg[0] != '\0');
    if (e->field)
      ok &= CHECK(strstr(msg, e->field) != NULL);
    if (!ok) {
      fprintf(stderr, "  (case %zu: code %s, msg \"%s\", body ", i, code ? code : "NULL", msg);
      check_print_mem_(e->body, len < 120 ? len : 120);
      fputs(")\n", stderr);
    }
    cap_execreq_free(&r);
  }
}

/* An escaped NUL decodes to a NUL the key checks must still see: the key
 * "a\u0000/../../x" is not the key "a". */
static void test_escaped_nul(void) {
  struct cap_execreq r;
  int rc = parse_str(&r, "{\"capability\":\"ffprobe\",\"input_key\":\"in.mp4\\u0000.evil\"}");
  if (!CHECK_EQ_INT(rc, -EINVAL))
    fprintf(stderr, "  \\u0000 in input_key accepted as \"%s\"\n",
            r.input_key ? r.input_key : "(null)");
  CHECK_EQ_STR(code, "invalid_json");
  cap_execreq_free(&r);
  rc = parse_str(&r, "{\"capability\":\"ff\\u0000probe\",\"input_key\":\"a\"}");
  if (!CHECK_EQ_INT(rc, -EINVAL))
    fprintf(stderr, "  \\u0000 in capability accepted\n");
  cap_execreq_free(&r);
}

/* callback_url is taken as given (the policy is the caller's); its events
 * default to the terminal three and are checked here. */
static void test_callback(void) {
  struct cap_execreq r;
  char list[64];
  CHECK_EQ_INT(parse_str(&r, "{\"capability\":\"ffprobe\",\"input_key\":\"a\"}"), 0);
  CHECK(r.callback_url == NULL);
  CHECK_EQ_INT(r.callback_events, 0);
  cap_execreq_free(&r);
  CHECK_EQ_INT(parse_str(&r, "{\"capability\":\"ffprobe\",\"input_key\":\"a\","
                             "\"callback_url\":\"https://h.example/x?s=1\"}"),
               0);
  CHECK_EQ_STR(r.callback_url, "https://h.example/x?s=1");
  CHECK_EQ_INT(r.callback_events, CAP_CB_SUCCEEDED | CAP_CB_FAILED | CAP_CB_CANCELED);
  cap_execreq_free(&r);
  CHECK_EQ_INT(parse_str(&r, "{\"capability\":\"ffprobe\",\"input_key\":\"a\","
                             "\"callback_url\":\"https://h.example/\","
                             "\"callback_events\":[\"progress\",\"started\",\"canceled\"]}"),
               0);
  CHECK_EQ_INT(r.callback_events, CAP_CB_STARTED | CAP_CB_PROGRESS | CAP_CB_CANCELED);
  cap_execreq_events_format(r.callback_events, list, sizeof(list));
  CHECK_EQ_STR(list, "started,progress,canceled");
  CHECK_EQ_INT(cap_execreq_events_parse(list), r.callback_events);
  CHECK_EQ_INT(cap_execreq_events_parse("failed,bogus,,succeeded"),
               CAP_CB_FAILED | CAP_CB_SUCCEEDED);
  CHECK_EQ_INT(cap_execreq_events_parse(NULL), 0);
  cap_execreq_events_format(0, list, sizeof(list));
  CHECK_EQ_STR(list, "");
  cap_execreq_free(&r);

  static const char *const bad[] = {
      "\"callback_url\":5",
      "\"callback_url\":null",
      "\"callback_url\":[\"https://h.example/\"]",
      "\"callback_events\":[\"succeeded\"]", /* Without a callback_url. */
      "\"callback_url\":\"https://h.example/\",\"callback_events\":[]",
      "\"callback_url\":\"https://h.example/\",\"callback_events\":\"succeeded\"",
      "\"callback_url\":\"https://h.example/\",\"callback_events\":[\"done\"]",
      "\"callback_url\":\"https://h.example/\",\"callback_events\":[\"job.succeeded\"]",
      "\"callback_url\":\"https://h.example/\",\"callback_events\":[\"failed\",\"failed\"]",
      "\"callback_url\":\"https://h.example/\",\"callback_events\":[1]",
      "\"callback_url\":\"https://h.example/\",\"callback_events\":[\"Succeeded\"]",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char body[256];
    snprintf(body, sizeof(body), "{\"capability\":\"ffprobe\",\"input_key\":\"a\",%s}", bad[i]);
    if (!CHECK_EQ_INT(parse_str(&r, body), -EINVAL) || !CHECK_EQ_STR(code, "invalid_field"))
      fprintf(stderr, "  body %s: %s\n", body, msg);
    cap_execreq_free(&r);
  }
}

int main(void) {
  test_capability_names();
  test_valid();
  test_errors();
  test_escaped_nul();
  test_callback();
  return check_report();
}
