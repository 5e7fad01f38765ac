#include "ffcaps.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

struct result {
  int calls;
  int status;
  struct cap_presets *set;
};

static void on_probed(struct cap_presets *set, int status, void *arg) {
  struct result *r = arg;
  r->calls++;
  r->status = status;
  r->set = set;
}

/* Probes set with ffmpeg on a private loop until done; checks that the
 * callback ran once with set and that no handle was left open. */
static void probe(const char *ffmpeg, struct cap_presets *set, struct result *r) {
  uv_loop_t loop;
  memset(r, 0, sizeof(*r));
  r->status = 12345;
  if (!CHECK_EQ_INT(uv_loop_init(&loop), 0))
    return;
  CHECK_EQ_INT(cap_ffcaps_probe(&loop, ffmpeg, NULL, set, on_probed, r), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(r->calls, 1);
  CHECK(r->set == set);
  if (!CHECK_EQ_INT(uv_loop_close(&loop), 0))
    fprintf(stderr, "  handles left open after probing with %s\n", ffmpeg);
}

static struct cap_presets *parse(const char *json) {
  struct cap_presets *set = NULL;
  char err[512];
  if (!CHECK_EQ_INT(cap_preset_parse(json, strlen(json), &set, err, sizeof(err)), 0)) {
    fprintf(stderr, "  %s\n", err);
    return NULL;
  }
  return set;
}

static void check_available(const struct cap_presets *set, const char *name, int want) {
  const struct cap_preset *p = cap_preset_find(set, name);
  if (!CHECK(p != NULL)) {
    fprintf(stderr, "  no preset %s\n", name);
    return;
  }
  if (!CHECK_EQ_INT(p->available, want))
    fprintf(stderr, "  preset %s: reason %s\n", name,
            p->unavailable_reason ? p->unavailable_reason : "(none)");
  if (want)
    CHECK(p->unavailable_reason == NULL);
  else
    CHECK(p->unavailable_reason != NULL && p->unavailable_reason[0] != '\0');
}

static void check_reason_has(const struct cap_presets *set, const char *name, const char *what) {
  const struct cap_preset *p = cap_preset_find(set, name);
  if (p == NULL || p->unavailable_reason == NULL)
    return; /* Already reported by check_available. */
  if (!CHECK(strstr(p->unavailable_reason, what) != NULL))
    fprintf(stderr, "  preset %s: reason \"%s\" does not mention %s\n", name, p->unavailable_reason,
            what);
}

static void test_builtin_real_ffmpeg(void) {
  struct cap_presets *set = parse(cap_preset_builtin_json);
  if (set == NULL)
    return;
  struct result r;
  probe("ffmpeg", set, &r);
  CHECK_EQ_INT(r.status, 0);
  check_available(set, "1080p", 1);
  check_available(set, "720p", 1);
  check_available(set, "4k-h265", 1);
  check_available(set, "audio-aac", 1);
  check_available(set, "thumbnail-jpg", 1);
  check_available(set, "remux-mp4", 1);
  /* No GPU here: NVENC is listed by Debian's ffmpeg but cannot encode. */
  check_available(set, "1080p-nvenc", 0);
  check_available(set, "4k-h265-nvenc", 0);
  check_reason_has(set, "1080p-nvenc", "h264_nvenc");
  check_reason_has(set, "4k-h265-nvenc", "hevc_nvenc");
  cap_preset_set_free(set);
}

static void test_missing_ffmpeg(void) {
  struct cap_presets *set = parse(cap_preset_builtin_json);
  if (set == NULL)
    return;
  struct result r;
  probe("/nonexistent/ffmpeg", set, &r);
  CHECK(r.status != 0);
  CHECK(r.status < 0);
  CHECK_EQ_INT(r.status, UV_ENOENT);
  for (size_t i = 0; i < set->n; i++) {
    if (!CHECK_EQ_INT(set->v[i].available, 0))
      fprintf(stderr, "  preset %s still available\n", set->v[i].name);
    CHECK(set->v[i].unavailable_reason != NULL);
  }
  cap_preset_set_free(set);

  /* A binary that runs but is no ffmpeg (fails on these arguments). */
  set = parse(cap_preset_builtin_json);
  if (set == NULL)
    return;
  probe("/bin/false", set, &r);
  CHECK(r.status != 0);
  for (size_t i = 0; i < set->n; i++)
    CHECK_EQ_INT(set->v[i].available, 0);
  cap_preset_set_free(set);
}

static void test_missing_parts(void) {
  struct cap_presets *set =
      parse("{\"badmux\":{\"class\":\"cpu\",\"format\":\"nosuchmux\",\"ext\":\"bin\","
            "\"encoders\":[\"aac\"],\"args\":[]},"
            "\"badenc\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
            "\"encoders\":[\"aac\",\"nosuchenc\"],\"args\":[]},"
            "\"badhw\":{\"class\":\"gpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
            "\"encoders\":[\"nosuch_hwenc\"],\"hw_encoder\":\"nosuch_hwenc\",\"args\":[]},"
            /* A prefix or a description word of a listed name is no name. */
            "\"prefix\":{\"class\":\"cpu\",\"format\":\"mp\",\"ext\":\"mp4\",\"args\":[]},"
            "\"descword\":{\"class\":\"cpu\",\"format\":\"mp4\",\"ext\":\"mp4\","
            "\"encoders\":[\"Advanced\"],\"args\":[]},"
            "\"ok-null\":{\"class\":\"cpu\",\"format\":\"null\",\"ext\":\"bin\","
            "\"encoders\":[\"rawvideo\",\"pcm_s16le\"],\"args\":[]},"
            "\"ok-image2\":{\"class\":\"cpu\",\"format\":\"image2\",\"ext\":\"png\","
            "\"encoders\":[\"png\"],\"args\":[]},"
            /* Both names of a comma-separated pair count ("stream_segment,ssegment"). */
            "\"ok-comma1\":{\"class\":\"cpu\",\"format\":\"stream_segment\",\"ext\":\"ts\","
            "\"args\":[]},"
            "\"ok-comma2\":{\"class\":\"cpu\",\"format\":\"ssegment\",\"ext\":\"ts\","
            "\"args\":[]},"
            /* The header words of the listings are no names. */
            "\"header\":{\"class\":\"cpu\",\"format\":\"formats\",\"ext\":\"ts\","
            "\"args\":[]}}");
  if (set == NULL)
    return;
  struct result r;
  probe("ffmpeg", set, &r);
  CHECK_EQ_INT(r.status, 0);
  check_available(set, "badmux", 0);
  check_reason_has(set, "badmux", "nosuchmux");
  check_reason_has(set, "badmux", "muxer");
  check_available(set, "badenc", 0);
  check_reason_has(set, "badenc", "nosuchenc");
  check_available(set, "badhw", 0);
  check_reason_has(set, "badhw", "nosuch_hwenc");
  check_available(set, "prefix", 0);
  check_available(set, "descword", 0);
  check_available(set, "ok-null", 1);
  check_available(set, "ok-image2", 1);
  check_available(set, "ok-comma1", 1);
  check_available(set, "ok-comma2", 1);
  check_available(set, "header", 0);
  cap_preset_set_free(set);
}

int main(void) {
  alarm(60);
  test_builtin_real_ffmpeg();
  test_missing_ffmpeg();
  test_missing_parts();
  return check_report();
}
