#include "preset.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse(const char *json, struct cap_presets **out, char *err, size_t errlen) {
  err[0] = '\0';
  return cap_preset_parse(json, strlen(json), out, err, errlen);
}

static int has_arg(const struct cap_preset *p, const char *a) {
  for (size_t i = 0; i < p->nargs; i++)
    if (strcmp(p->args[i], a) == 0)
      return 1;
  return 0;
}

static int has_encoder(const struct cap_preset *p, const char *e) {
  for (size_t i = 0; i < p->nencoders; i++)
    if (strcmp(p->encoders[i], e) == 0)
      return 1;
  return 0;
}

struct want {
  const char *name, *cls, *format, *ext;
  int streamable;
  const char *encoder; /* One encoder it must list, or NULL for none at all. */
  const char *hw;
};

static void test_builtin(void) {
  static const struct want wants[] = {
      {"1080p", "cpu", "mp4", "mp4", 1, "libx264", NULL},
      {"720p", "cpu", "mp4", "mp4", 1, "libx264", NULL},
      {"4k-h265", "cpu", "mp4", "mp4", 1, "libx265", NULL},
      {"audio-aac", "cpu", "ipod", "m4a", 1, "aac", NULL},
      {"thumbnail-jpg", "cpu", "image2", "jpg", 1, "mjpeg", NULL},
      {"remux-mp4", "cpu", "mp4", "mp4", 0, NULL, NULL},
      {"1080p-nvenc", "nvenc", "mp4", "mp4", 1, "h264_nvenc", "h264_nvenc"},
      {"4k-h265-nvenc", "nvenc", "mp4", "mp4", 1, "hevc_nvenc", "hevc_nvenc"},
  };
  struct cap_presets *set = NULL;
  char err[512];
  int rc = parse(cap_preset_builtin_json, &set, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  /* The single-output presets, and four ladders (test-ladderspec checks those). */
  CHECK_EQ_INT(set->n, sizeof(wants) / sizeof(wants[0]) + 4);
  for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++) {
    const struct want *w = &wants[i];
    const struct cap_preset *p = cap_preset_find(set, w->name);
    if (!CHECK(p != NULL)) {
      fprintf(stderr, "  built-in preset %s missing\n", w->name);
      continue;
    }
    CHECK_EQ_STR(p->name, w->name);
    CHECK_EQ_STR(p->cls, w->cls);
    CHECK_EQ_STR(p->format, w->format);
    CHECK_EQ_STR(p->ext, w->ext);
    if (!CHECK_EQ_INT(p->streamable, w->streamable))
      fprintf(stderr, "  preset %s\n", w->name);
    CHECK_EQ_INT(p->available, 1);
    CHECK(p->unavailable_reason == NULL);
    CHECK(p->description != NULL && p->description[0] != '\0');
    CHECK(p->timeout_s >= 600 && p->timeout_s <= 43200);
    CHECK(p->nargs > 0);
    CHECK(p->args[p->nargs] == NULL);
    CHECK(p->encoders != NULL);
    if (w->encoder) {
      if (!CHECK(has_encoder(p, w->encoder)))
        fprintf(stderr, "  preset %s lacks encoder %s\n", w->name, w->encoder);
    } else {
      CHECK_EQ_INT(p->nencoders, 0);
    }
    if (w->hw)
      CHECK_EQ_STR(p->hw_encoder, w->hw);
    else
      CHECK(p->hw_encoder == NULL);
    /* The server sets input, format and output itself. */
    CHECK(!has_arg(p, "-i") && !has_arg(p, "-f") && !has_arg(p, "-y"));
  }
  const struct cap_preset *p = cap_preset_find(set, "remux-mp4");
  if (p) {
    CHECK(has_arg(p, "copy"));
    CHECK_EQ_INT(p->timeout_s, 7200);
  }
  p = cap_preset_find(set, "4k-h265");
  if (p)
    CHECK_EQ_INT(p->timeout_s, 43200);
  cap_preset_set_free(set);

  /* cap_preset_load(NULL) is the built-in set. */
  set = NULL;
  CHECK_EQ_INT(cap_preset_load(NULL, &set, err, sizeof(err)), 0);
  if (CHECK(set != NULL)) {
    CHECK_EQ_INT(set->n, 12);
    CHECK(cap_preset_find(set, "thumbnail-jpg") != NULL);
    cap_preset_set_free(set);
  }
}

static void test_minimal_and_defaults(void) {
  struct cap_presets *set = NULL;
  char err[512];
  int rc = parse("{\"p1\":{\"class\":\"cpu\",\"format\":\"matroska\",\"ext\":\"mkv\","
                 "\"args\":[\"-c\",\"copy\"]},"
                 "\"P_2.x\":{\"class\":\"gpu\",\"format\":\"null\",\"ext\":\"bin\",\"args\":[],"
                 "\"streamable\":true,\"timeout_s\":1,\"description\":\"d\","
                 "\"encoders\":[\"a\",\"b\"],\"hw_encoder\":\"h264_vaapi\"}}",
                 &set, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  CHECK_EQ_INT(set->n, 2);
  const struct cap_preset *p = cap_preset_find(set, "p1");
  if (CHECK(p != NULL)) {
    CHECK_EQ_STR(p->cls, "cpu");
    CHECK_EQ_STR(p->format, "matroska");
    CHECK_EQ_STR(p->ext, "mkv");
    CHECK_EQ_STR(p->description, "");
    CHECK_EQ_INT(p->streamable, 0);
    CHECK_EQ_INT(p->timeout_s, 21600);
    CHECK_EQ_INT(p->nargs, 2);
    CHECK_EQ_STR(p->args[0], "-c");
    CHECK_EQ_STR(p->args[1], "copy");
    CHECK(p->args[2] == NULL);
    CHECK_EQ_INT(p->nencoders, 0);
    CHECK(p->encoders != NULL && p->encoders[0] == NULL);
    CHECK(p->hw_encoder == NULL);
    CHECK_EQ_INT(p->available, 1);
  }
  p = cap_preset_find(set, "P_2.x");
  if (CHECK(p != NULL)) {
    CHECK_EQ_STR(p->cls, "gpu");
    CHECK_EQ_INT(p->streamable, 1);
    CHECK_EQ_INT(p->timeout_s, 1);
    CHECK_EQ_STR(p->description, "d");
    CHECK_EQ_INT(p->nargs, 0);
    CHECK(p->args != NULL && p->args[0] == NULL);
    CHECK_EQ_INT(p->nencoders, 2);
    CHECK_EQ_STR(p->encoders[1], "b");
    CHECK_EQ_STR(p->hw_encoder, "h264_vaapi");
  }
  /* Names are case-sensitive and exact. */
  CHECK(cap_preset_find(set, "P1") == NULL);
  CHECK(cap_preset_find(set, "p") == NULL);
  CHECK(cap_preset_find(set, "") == NULL);
  CHECK(cap_preset_find(NULL, "p1") == NULL);
  cap_preset_set_free(set);
  cap_preset_set_free(NULL);

  /* The limits of timeout_s. */
  set = NULL;
  rc = parse("{\"t\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
             "\"timeout_s\":604800}}",
             &set, err, sizeof(err));
  if (CHECK_EQ_INT(rc, 0)) {
    CHECK_EQ_INT(set->v[0].timeout_s, 604800);
    cap_preset_set_free(set);
  }
}

/* Each of these must be refused with a message naming the preset. */
static void test_errors(void) {
  static const struct {
    const char *json;
    const char *in_err; /* Must appear in the message (NULL: any message). */
  } cases[] = {
      /* Not an object, or empty. */
      {"", NULL},
      {"[]", NULL},
      {"[{\"class\":\"cpu\"}]", NULL},
      {"\"x\"", NULL},
      {"null", NULL},
      {"{}", NULL},
      {"{\"a\":", NULL},
      /* Bad names. */
      {"{\"bad name\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}",
       "bad name"},
      {"{\"a/b\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}", "a/b"},
      {"{\"\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}", "preset"},
      {"{\"pcls\":{\"class\":\"c p u\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}", "pcls"},
      {"{\"pfmt\":{\"class\":\"cpu\",\"format\":\"mp4;rm\",\"ext\":\"mp4\",\"args\":[]}}", "pfmt"},
      {"{\"pext\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"m/p4\",\"args\":[]}}", "pext"},
      {"{\"pext\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"0123456789abcdef\",\"args\":[]}}",
       "pext"},
      {"{\"phw\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
       "\"hw_encoder\":\"a b\"}}",
       "phw"},
      /* Missing or mistyped fields. */
      {"{\"nocls\":{\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}", "nocls"},
      {"{\"nofmt\":{\"class\":\"cpu\",\"ext\":\"mp4\",\"args\":[]}}", "nofmt"},
      {"{\"noext\":{\"class\":\"cpu\",\"format\":\"mp4\",\"args\":[]}}", "noext"},
      {"{\"noargs\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\"}}", "noargs"},
      {"{\"strargs\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":\"-c copy\"}}",
       "strargs"},
      {"{\"notobj\":[1,2]}", "notobj"},
      {"{\"notobj2\":\"x\"}", "notobj2"},
      {"{\"clsnum\":{\"class\":1,\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}", "clsnum"},
      {"{\"strm\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
       "\"streamable\":1}}",
       "strm"},
      {"{\"encs\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
       "\"encoders\":\"aac\"}}",
       "encs"},
      /* Args that are not strings. */
      {"{\"argnum\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[\"-c\",1]}}",
       "argnum"},
      {"{\"argnull\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[null]}}",
       "argnull"},
      {"{\"argarr\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[[\"-c\"]]}}",
       "argarr"},
      {"{\"encnum\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
       "\"encoders\":[\"aac\",7]}}",
       "encnum"},
      /* Args the server must own. */
      {"{\"argi\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
       "\"args\":[\"-c\",\"copy\",\"-i\",\"/etc/passwd\"]}}",
       "argi"},
      {"{\"argf\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[\"-f\",\"mp4\"]}"
       "}",
       "argf"},
      {"{\"argy\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[\"-y\"]}}",
       "argy"},
      {"{\"argp\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
       "\"args\":[\"-progress\",\"http://x/\"]}}",
       "argp"},
      {"{\"argp2\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
       "\"args\":[\"-progress_period\"]}}",
       "argp2"},
      /* timeout_s out of range or not a number. */
      {"{\"t0\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],\"timeout_s\":0}"
       "}",
       "t0"},
      {"{\"tneg\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
       "\"timeout_s\":-5}}",
       "tneg"},
      {"{\"tbig\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
       "\"timeout_s\":604801}}",
       "tbig"},
      {"{\"thuge\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
       "\"timeout_s\":1e300}}",
       "thuge"},
      {"{\"tstr\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
       "\"timeout_s\":\"60\"}}",
       "tstr"},
      /* One bad preset spoils the set, even after good ones. */
      {"{\"good\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]},"
       "\"later\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[\"-y\"]}}",
       "later"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct cap_presets *set = (struct cap_presets *)&set; /* Must stay untouched. */
    struct cap_presets *const sentinel = set;
    char err[512];
    int rc = parse(cases[i].json, &set, err, sizeof(err));
    if (!CHECK_EQ_INT(rc, -EINVAL)) {
      fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
      if (rc == 0 && set != sentinel)
        cap_preset_set_free(set);
      continue;
    }
    CHECK(set == sentinel);
    if (!CHECK(err[0] != '\0'))
      fprintf(stderr, "  case %zu: no message\n", i);
    if (cases[i].in_err && !CHECK(strstr(err, cases[i].in_err) != NULL))
      fprintf(stderr, "  case %zu: message \"%s\" does not name %s\n", i, err, cases[i].in_err);
  }

  /* The forbidden argument is named in the message. */
  struct cap_presets *set = NULL;
  char err[512];
  parse("{\"x\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[\"-i\"]}}", &set,
        err, sizeof(err));
  CHECK(strstr(err, "-i") != NULL);
  /* A short error buffer is not overrun. */
  char small[8];
  memset(small, 'Z', sizeof(small));
  const char *bad = "{\"argy\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
                    "\"args\":[\"-y\"]}}";
  CHECK_EQ_INT(cap_preset_parse(bad, strlen(bad), &set, small, 5), -EINVAL);
  CHECK_EQ_INT(strlen(small), 4);
  CHECK_EQ_INT(small[5], 'Z');
}

/* The length argument is honoured: trailing bytes beyond len are ignored. */
static void test_length(void) {
  const char *json =
      "{\"a\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}GARBAGE";
  struct cap_presets *set = NULL;
  char err[256];
  int rc = cap_preset_parse(json, strlen(json) - strlen("GARBAGE"), &set, err, sizeof(err));
  if (CHECK_EQ_INT(rc, 0)) {
    CHECK_EQ_INT(set->n, 1);
    cap_preset_set_free(set);
  }
}

static void test_mark_unavailable(void) {
  struct cap_presets *set = NULL;
  char err[512];
  if (!CHECK_EQ_INT(parse(cap_preset_builtin_json, &set, err, sizeof(err)), 0))
    return;
  struct cap_preset *p = (struct cap_preset *)cap_preset_find(set, "1080p-nvenc");
  if (!CHECK(p != NULL))
    return;
  char reason[64];
  snprintf(reason, sizeof(reason), "no GPU");
  cap_preset_mark_unavailable(p, reason);
  /* The reason is copied. */
  reason[0] = 'X';
  CHECK_EQ_INT(p->available, 0);
  CHECK_EQ_STR(p->unavailable_reason, "no GPU");
  /* A second reason replaces the first. */
  cap_preset_mark_unavailable(p, "ffmpeg has no h264_nvenc encoder");
  CHECK_EQ_INT(p->available, 0);
  CHECK_EQ_STR(p->unavailable_reason, "ffmpeg has no h264_nvenc encoder");
  /* The others are untouched. */
  const struct cap_preset *q = cap_preset_find(set, "1080p");
  CHECK_EQ_INT(q->available, 1);
  CHECK(q->unavailable_reason == NULL);
  cap_preset_set_free(set);
}

static void test_load_file(void) {
  char path[] = "/tmp/cap-test-preset-XXXXXX";
  int fd = mkstemp(path);
  if (!CHECK(fd >= 0))
    return;
  const char *json = "{\"fromfile\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
                     "\"args\":[\"-c\",\"copy\"],\"timeout_s\":42}}\n";
  CHECK_EQ_INT(write(fd, json, strlen(json)), (long long)strlen(json));
  close(fd);
  struct cap_presets *set = NULL;
  char err[512] = "";
  int rc = cap_preset_load(path, &set, err, sizeof(err));
  if (CHECK_EQ_INT(rc, 0)) {
    CHECK_EQ_INT(set->n, 1);
    const struct cap_preset *p = cap_preset_find(set, "fromfile");
    if (CHECK(p != NULL))
      CHECK_EQ_INT(p->timeout_s, 42);
    CHECK(cap_preset_find(set, "1080p") == NULL);
    cap_preset_set_free(set);
  } else {
    fprintf(stderr, "  %s\n", err);
  }

  /* A bad file: the message names the file and the preset. */
  FILE *f = fopen(path, "w");
  if (CHECK(f != NULL)) {
    fputs("{\"broken\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[\"-i\"]}}",
          f);
    fclose(f);
  }
  set = NULL;
  rc = cap_preset_load(path, &set, err, sizeof(err));
  CHECK_EQ_INT(rc, -EINVAL);
  CHECK(set == NULL);
  CHECK(strstr(err, path) != NULL);
  CHECK(strstr(err, "broken") != NULL);

  /* An empty file. */
  f = fopen(path, "w");
  if (f)
    fclose(f);
  rc = cap_preset_load(path, &set, err, sizeof(err));
  CHECK_EQ_INT(rc, -EINVAL);
  CHECK(strstr(err, path) != NULL);
  unlink(path);

  /* A missing file. */
  err[0] = '\0';
  rc = cap_preset_load("/nonexistent/dir/presets.json", &set, err, sizeof(err));
  CHECK_EQ_INT(rc, -ENOENT);
  CHECK(set == NULL);
  CHECK(strstr(err, "/nonexistent/dir/presets.json") != NULL);
}

/* The limits and input formats a preset may set, and their defaults. */
static void test_overrides(void) {
  struct cap_presets *set = NULL;
  char err[512];
  int rc =
      parse("{\"a\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
            "\"threads\":2,\"nice\":19,\"memory_mb\":0,\"input_formats\":[\"mov\",\"mpegts\"]},"
            "\"b\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],"
            "\"input_formats\":\"matroska,wav\"},"
            "\"c\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]}}",
            &set, err, sizeof(err));
  if (!CHECK_EQ_INT(rc, 0)) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  const struct cap_preset *a = cap_preset_find(set, "a"), *b = cap_preset_find(set, "b"),
                          *c = cap_preset_find(set, "c");
  CHECK_EQ_INT(a->threads, 2);
  CHECK_EQ_INT(a->nice, 19);
  CHECK_EQ_INT(a->memory_mb, 0);
  CHECK_EQ_STR(a->input_formats, "mov,mpegts");
  CHECK_EQ_STR(b->input_formats, "matroska,wav");
  CHECK_EQ_INT(c->threads, -1);
  CHECK_EQ_INT(c->nice, -1);
  CHECK_EQ_INT(c->memory_mb, -1);
  CHECK(c->input_formats == NULL);
  cap_preset_set_free(set);

  static const char *const bad[] = {"\"nice\":20",
                                    "\"threads\":-1",
                                    "\"memory_mb\":\"1\"",
                                    "\"input_formats\":\"\"",
                                    "\"input_formats\":\"hls;x\"",
                                    "\"input_formats\":[\"a,b\"]",
                                    "\"input_formats\":[1]",
                                    "\"input_formats\":\"HLS\"",
                                    "\"input_formats\":{}",
                                    NULL};
  for (size_t i = 0; bad[i]; i++) {
    char json[300];
    snprintf(json, sizeof(json),
             "{\"x\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],%s}}",
             bad[i]);
    set = NULL;
    if (!CHECK_EQ_INT(parse(json, &set, err, sizeof(err)), -EINVAL))
      fprintf(stderr, "  accepted: %s\n", json);
    CHECK(strstr(err, "preset x") != NULL);
    CHECK(set == NULL);
  }
  /* The allow-lists are the server's to set, never a preset's arguments. */
  static const char *const args[] = {"-protocol_whitelist", "-format_whitelist", "-codec_whitelist",
                                     "-protocol_blacklist", NULL};
  for (size_t i = 0; args[i]; i++) {
    char json[300];
    snprintf(json, sizeof(json),
             "{\"x\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
             "\"args\":[\"%s\",\"file,http\"]}}",
             args[i]);
    set = NULL;
    CHECK_EQ_INT(parse(json, &set, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, args[i]) != NULL);
  }
}

/* The Content-Type and Cache-Control outputs are stored with: the preset's
 * own, or the default for its ext. */
static void test_store_headers(void) {
  static const struct {
    const char *ext, *type;
  } defaults[] = {
      {"mp4", "video/mp4"},
      {"m4a", "audio/mp4"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"png", "image/png"},
      {"ts", "video/mp2t"},
      {"m3u8", "application/vnd.apple.mpegurl"},
      {"mpd", "application/dash+xml"},
      {"m4s", "video/iso.segment"},
      {"mkv", "video/x-matroska"},
      {"webm", "video/webm"},
      {"mp3", "audio/mpeg"},
      {"MP4", "video/mp4"},
      {"Jpg", "image/jpeg"},
      {"nut", "application/octet-stream"},
      {"bin", "application/octet-stream"},
      {"mp4x", "application/octet-stream"},
      {"", "application/octet-stream"},
  };
  for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
    if (!CHECK_EQ_STR(cap_preset_content_type(defaults[i].ext), defaults[i].type))
      fprintf(stderr, "  ext %s\n", defaults[i].ext);
  CHECK_EQ_STR(cap_preset_content_type(NULL), "application/octet-stream");

  /* The built-in presets rely on their ext: none names a type or a cache
   * policy of its own. */
  static const struct {
    const char *name, *type;
  } builtin[] = {
      {"1080p", "video/mp4"},       {"720p", "video/mp4"},           {"4k-h265", "video/mp4"},
      {"audio-aac", "audio/mp4"},   {"thumbnail-jpg", "image/jpeg"}, {"remux-mp4", "video/mp4"},
      {"1080p-nvenc", "video/mp4"}, {"4k-h265-nvenc", "video/mp4"},
  };
  struct cap_presets *set = NULL;
  char err[512];
  if (CHECK_EQ_INT(parse(cap_preset_builtin_json, &set, err, sizeof(err)), 0)) {
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
      const struct cap_preset *p = cap_preset_find(set, builtin[i].name);
      if (!CHECK(p != NULL))
        continue;
      if (!CHECK_EQ_STR(p->content_type, builtin[i].type))
        fprintf(stderr, "  preset %s\n", builtin[i].name);
      CHECK(p->cache_control == NULL);
    }
    cap_preset_set_free(set);
  }

  /* Explicit values win over the ext's default; the longest allowed pass. */
  char long_type[200], long_cache[300], json[1200];
  memset(long_type, 'a', 127);
  long_type[5] = '/';
  long_type[127] = '\0';
  memset(long_cache, 'c', 256);
  long_cache[256] = '\0';
  snprintf(json, sizeof(json),
           "{\"hls\":{\"class\":\"cpu\",\"format\":\"hls\",\"ext\":\"m3u8\",\"args\":[],"
           "\"content_type\":\"application/x-mpegURL\","
           "\"cache_control\":\"public, max-age=60, stale-while-revalidate=\\\"30\\\"\"},"
           "\"seg\":{\"class\":\"cpu\",\"format\":\"mpegts\",\"ext\":\"ts\",\"args\":[],"
           "\"cache_control\":\"max-age=31536000,immutable\"},"
           "\"raw\":{\"class\":\"cpu\",\"format\":\"nut\",\"ext\":\"nut\",\"args\":[],"
           "\"content_type\":\"Video/X-NUT+raw.v1!#$&^_-\"},"
           "\"long\":{\"class\":\"cpu\",\"format\":\"nut\",\"ext\":\"nut\",\"args\":[],"
           "\"content_type\":\"%s\",\"cache_control\":\"%s\"},"
           "\"plain\":{\"class\":\"cpu\",\"format\":\"nut\",\"ext\":\"nut\",\"args\":[]}}",
           long_type, long_cache);
  set = NULL;
  if (CHECK_EQ_INT(parse(json, &set, err, sizeof(err)), 0)) {
    const struct cap_preset *p = cap_preset_find(set, "hls");
    CHECK_EQ_STR(p->content_type, "application/x-mpegURL");
    CHECK_EQ_STR(p->cache_control, "public, max-age=60, stale-while-revalidate=\"30\"");
    p = cap_preset_find(set, "seg");
    CHECK_EQ_STR(p->content_type, "video/mp2t");
    CHECK_EQ_STR(p->cache_control, "max-age=31536000,immutable");
    p = cap_preset_find(set, "raw");
    CHECK_EQ_STR(p->content_type, "Video/X-NUT+raw.v1!#$&^_-");
    CHECK(p->cache_control == NULL);
    p = cap_preset_find(set, "long");
    CHECK_EQ_STR(p->content_type, long_type);
    CHECK_EQ_STR(p->cache_control, long_cache);
    p = cap_preset_find(set, "plain");
    CHECK_EQ_STR(p->content_type, "application/octet-stream");
    CHECK(p->cache_control == NULL);
    cap_preset_set_free(set);
  } else {
    fprintf(stderr, "  %s\n", err);
  }

  /* Refused, with a message naming the preset and the key. */
  char too_long_type[200], too_long_cache[300], bad_long[2][400];
  memset(too_long_type, 'a', 128);
  too_long_type[5] = '/';
  too_long_type[128] = '\0';
  memset(too_long_cache, 'c', 257);
  too_long_cache[257] = '\0';
  snprintf(bad_long[0], sizeof(bad_long[0]), "\"content_type\":\"%s\"", too_long_type);
  snprintf(bad_long[1], sizeof(bad_long[1]), "\"cache_control\":\"%s\"", too_long_cache);
  const char *const bad[] = {"\"content_type\":\"\"",
                             "\"content_type\":\"video\"",
                             "\"content_type\":\"video/\"",
                             "\"content_type\":\"/mp4\"",
                             "\"content_type\":\"video/mp4/x\"",
                             "\"content_type\":\"video//mp4\"",
                             "\"content_type\":\"video/mp4; codecs=avc1\"",
                             "\"content_type\":\"video/mp4;a=b\"",
                             "\"content_type\":\"video /mp4\"",
                             "\"content_type\":\"video/mp4\\r\\nX-Evil: 1\"",
                             "\"content_type\":\"vid\xc3\xa9o/mp4\"",
                             "\"content_type\":\"text/(x)\"",
                             "\"content_type\":5",
                             "\"content_type\":null",
                             "\"content_type\":[\"video/mp4\"]",
                             "\"cache_control\":\"\"",
                             "\"cache_control\":\"max-age=60\\r\\nX-Evil: 1\"",
                             "\"cache_control\":\"max-age=60\\n\"",
                             "\"cache_control\":\"a\\tb\"",
                             "\"cache_control\":\"caf\xc3\xa9\"",
                             "\"cache_control\":\"a\\u007fb\"",
                             "\"cache_control\":\" max-age=1\"",
                             "\"cache_control\":\"max-age=1 \"",
                             "\"cache_control\":60",
                             "\"cache_control\":true",
                             bad_long[0],
                             bad_long[1],
                             NULL};
  for (size_t i = 0; bad[i]; i++) {
    snprintf(json, sizeof(json),
             "{\"ok\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[]},"
             "\"x\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\",\"args\":[],%s}}",
             bad[i]);
    set = NULL;
    err[0] = '\0';
    if (!CHECK_EQ_INT(parse(json, &set, err, sizeof(err)), -EINVAL)) {
      fprintf(stderr, "  accepted: %s\n", json);
      cap_preset_set_free(set);
      continue;
    }
    CHECK(set == NULL);
    if (!CHECK(strstr(err, "preset x") != NULL && strstr(err, "content_type") != NULL &&
               strstr(err, "cache_control") != NULL))
      fprintf(stderr, "  message \"%s\" for %s\n", err, bad[i]);
  }
}

int main(void) {
  test_builtin();
  test_store_headers();
  test_overrides();
  test_minimal_and_defaults();
  test_errors();
  test_length();
  test_mark_unavailable();
  test_load_file();
  return check_report();
}
