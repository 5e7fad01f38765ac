#include "ladderspec.h"

#include "check.h"
#include "preset.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char good[] =
    "{\"package\":\"hls\",\"segment_type\":\"mpegts\",\"segment_s\":6,"
    "\"video_args\":[\"-c:v\",\"libx264\"],\"audio_args\":[\"-c:a\",\"aac\"],"
    "\"rungs\":[{\"name\":\"720p\",\"height\":720,\"bitrate\":\"2800k\",\"maxrate\":\"3000k\","
    "\"bufsize\":\"4200k\"},{\"name\":\"360p\",\"height\":360,\"bitrate\":\"800k\"}]}";

static int parse(const char *text, struct cap_ladderspec **out) {
  char err[400];
  cJSON *o = cJSON_Parse(text);
  int rc = cap_ladderspec_parse(o, out, err, sizeof(err));
  cJSON_Delete(o);
  return rc;
}

static void test_parse(void) {
  struct cap_ladderspec *s = NULL;
  CHECK_EQ_INT(parse(good, &s), 0);
  if (s == NULL)
    return;
  CHECK_EQ_INT(s->segtype, CAP_LADDER_TS);
  CHECK_EQ_STR(cap_ladderspec_segext(s), "ts");
  CHECK_EQ_INT(s->segment_s, 6);
  CHECK_EQ_INT(s->nrungs, 2);
  CHECK_EQ_STR(s->rungs[1].maxrate, "800k"); /* Defaults to the bitrate. */
  CHECK_EQ_STR(s->scale, "scale");
  CHECK_EQ_STR(s->segment_cache_control, "public, max-age=31536000, immutable");
  CHECK_EQ_STR(s->playlist_cache_control, "public, max-age=60");
  CHECK(s->decode_args != NULL && s->decode_args[0] == NULL);
  CHECK_EQ_INT(s->package, CAP_LADDER_HLS);
  struct cap_ladderspec *c = cap_ladderspec_dup(s);
  cap_ladderspec_free(s);
  CHECK_EQ_STR(c->video_args[1], "libx264");
  CHECK_EQ_STR(c->rungs[0].name, "720p");
  cap_ladderspec_free(c);
}

/* Nothing in a ladder may set what the server sets: input, output, maps,
 * filters, the muxer's options, the allow-lists. */
static void test_refused(void) {
  static const char *const bad[] = {
      "{\"package\":\"smooth\",\"rungs\":[{\"name\":\"a\",\"height\":360,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"dash\",\"segment_type\":\"mpegts\",\"rungs\":[{\"name\":\"a\",\"height\":360,"
      "\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"rungs\":[]}",
      "{\"package\":\"hls\",\"rungs\":[{\"name\":\"audio\",\"height\":360,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"rungs\":[{\"name\":\"../x\",\"height\":360,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"rungs\":[{\"name\":\"a\",\"height\":361,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"rungs\":[{\"name\":\"a\",\"height\":360,\"bitrate\":\"1k;x\"}]}",
      "{\"package\":\"hls\",\"rungs\":[{\"name\":\"a\",\"height\":360,\"bitrate\":\"1k\"},"
      "{\"name\":\"b\",\"height\":720,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"rungs\":[{\"name\":\"a\",\"height\":360,\"bitrate\":\"1k\"},"
      "{\"name\":\"a\",\"height\":240,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"segment_s\":0,\"rungs\":[{\"name\":\"a\",\"height\":360,"
      "\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"scale\":\"zscale\",\"rungs\":[{\"name\":\"a\",\"height\":360,"
      "\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"video_args\":[\"-i\",\"x\"],\"rungs\":[{\"name\":\"a\","
      "\"height\":360,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"video_args\":[\"-filter_complex\",\"x\"],\"rungs\":[{\"name\":"
      "\"a\",\"height\":360,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"audio_args\":[\"-map\",\"0\"],\"rungs\":[{\"name\":\"a\","
      "\"height\":360,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"video_args\":[\"-hls_flags\",\"x\"],\"rungs\":[{\"name\":\"a\","
      "\"height\":360,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"decode_args\":[\"-protocol_whitelist\",\"http\"],\"rungs\":"
      "[{\"name\":\"a\",\"height\":360,\"bitrate\":\"1k\"}]}",
      "{\"package\":\"hls\",\"segment_cache_control\":\"x\\ny\",\"rungs\":[{\"name\":\"a\","
      "\"height\":360,\"bitrate\":\"1k\"}]}",
      NULL};
  for (size_t i = 0; bad[i]; i++) {
    struct cap_ladderspec *s = NULL;
    int rc = parse(bad[i], &s);
    if (rc == 0)
      fprintf(stderr, "accepted: %s\n", bad[i]);
    CHECK_EQ_INT(rc, -EINVAL);
    CHECK(s == NULL);
  }
}

static void test_pick(void) {
  struct cap_ladderspec *s = NULL;
  struct cap_ladder_pick p;
  CHECK_EQ_INT(parse(good, &s), 0);
  if (s == NULL)
    return;
  cap_ladderspec_pick(s, 1080, &p);
  CHECK_EQ_INT(p.nrungs, 2);
  CHECK_EQ_INT(p.ndropped, 0);
  cap_ladderspec_pick(s, 720, &p);
  CHECK_EQ_INT(p.nrungs, 2); /* Equal is not upscaling. */
  cap_ladderspec_pick(s, 480, &p);
  CHECK_EQ_INT(p.nrungs, 1);
  CHECK_EQ_STR(p.rungs[0].name, "360p");
  CHECK_EQ_INT(p.ndropped, 1);
  CHECK_EQ_STR(p.dropped[0], "720p");
  /* Below every rung: one rendition at the source's own (even) height. */
  cap_ladderspec_pick(s, 241, &p);
  CHECK_EQ_INT(p.nrungs, 1);
  CHECK_EQ_INT(p.rungs[0].height, 240);
  CHECK_EQ_STR(p.rungs[0].name, "240p");
  CHECK_EQ_STR(p.rungs[0].bitrate, "800k");
  CHECK_EQ_INT(p.ndropped, 2);
  cap_ladderspec_free(s);
}

/* The built-in ladders parse, and a ladder preset needs no args or ext. */
static void test_builtin(void) {
  struct cap_presets *set = NULL;
  char err[400] = "";
  CHECK_EQ_INT(cap_preset_load(NULL, &set, err, sizeof(err)), 0);
  static const char *const names[] = {"hls-ladder", "hls-ladder-ts", "hls-ladder-nvenc",
                                      "dash-ladder", NULL};
  for (size_t i = 0; set && names[i]; i++) {
    const struct cap_preset *p = cap_preset_find(set, names[i]);
    CHECK(p != NULL && p->ladder != NULL);
    if (p && p->ladder) {
      CHECK_EQ_STR(p->format, "hls");
      CHECK_EQ_INT(p->ladder->nrungs, 4);
      CHECK_EQ_INT(p->ladder->segment_s, 4);
      CHECK_EQ_INT(p->ladder->package,
                   strcmp(names[i], "dash-ladder") == 0 ? CAP_LADDER_DASH : CAP_LADDER_HLS);
    }
  }
  const struct cap_preset *one = cap_preset_find(set, "720p");
  CHECK(one != NULL && one->ladder == NULL);
  cap_preset_set_free(set);
  /* A ladder with args is refused: its arguments come from its rungs. */
  static const char mixed[] = "{\"x\":{\"class\":\"cpu\",\"package\":\"hls\",\"args\":[],"
                              "\"rungs\":[{\"name\":\"a\",\"height\":360,\"bitrate\":\"1k\"}]}}";
  CHECK_EQ_INT(cap_preset_parse(mixed, strlen(mixed), &set, err, sizeof(err)), -EINVAL);
  CHECK(strstr(err, "rungs, not args") != NULL);
}

int main(void) {
  test_parse();
  test_refused();
  test_pick();
  test_builtin();
  return check_report();
}
