#include "mpd.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

static const uint64_t v_dur[] = {4000000, 4000000, 4000000, 2000000};
static const uint64_t a_dur[] = {4017052, 3993832, 4010667, 2020136};

static struct cap_mpd_rep rep(const char *id, int audio, uint64_t bw, int w, int h,
                              const char *codecs, const uint64_t *dur, size_t n) {
  static char init[4][64], media[4][64];
  static int k;
  k = (k + 1) % 4;
  snprintf(init[k], sizeof(init[k]), "%s/init.mp4", id);
  snprintf(media[k], sizeof(media[k]), "%s/seg_$Number%%05d$.m4s", id);
  return (struct cap_mpd_rep){.id = id,
                              .audio = audio,
                              .bandwidth = bw,
                              .width = w,
                              .height = h,
                              .codecs = codecs,
                              .init = init[k],
                              .media = media[k],
                              .dur = dur,
                              .nsegs = n};
}

/* A whole MPD, byte for byte: two video rungs with one timeline, and the
 * audio with its own. */
static void test_write(void) {
  struct cap_mpd_rep r[3] = {rep("720p", 0, 2930199, 1280, 720, "avc1.64001f", v_dur, 4),
                             rep("360p", 0, 934561, 640, 360, "avc1.64001e", v_dur, 4),
                             rep("audio", 1, 135000, 0, 0, "mp4a.40.2", a_dur, 4)};
  struct cap_buf b;
  cap_buf_init(&b);
  cap_mpd_write(&b, 4, r, 3);
  static const char want[] =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" "
      "profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"static\" "
      "mediaPresentationDuration=\"PT14.041687S\" minBufferTime=\"PT4S\">\n"
      "  <Period id=\"0\" start=\"PT0S\">\n"
      "    <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" "
      "segmentAlignment=\"true\" startWithSAP=\"1\" maxWidth=\"1280\" maxHeight=\"720\">\n"
      "      <Representation id=\"720p\" bandwidth=\"2930199\" width=\"1280\" height=\"720\" "
      "codecs=\"avc1.64001f\">\n"
      "        <SegmentTemplate timescale=\"1000000\" startNumber=\"0\" "
      "initialization=\"720p/init.mp4\" media=\"720p/seg_$Number%05d$.m4s\">\n"
      "          <SegmentTimeline>\n"
      "            <S t=\"0\" d=\"4000000\" r=\"2\"/>\n"
      "            <S d=\"2000000\"/>\n"
      "          </SegmentTimeline>\n"
      "        </SegmentTemplate>\n"
      "      </Representation>\n"
      "      <Representation id=\"360p\" bandwidth=\"934561\" width=\"640\" height=\"360\" "
      "codecs=\"avc1.64001e\">\n"
      "        <SegmentTemplate timescale=\"1000000\" startNumber=\"0\" "
      "initialization=\"360p/init.mp4\" media=\"360p/seg_$Number%05d$.m4s\">\n"
      "          <SegmentTimeline>\n"
      "            <S t=\"0\" d=\"4000000\" r=\"2\"/>\n"
      "            <S d=\"2000000\"/>\n"
      "          </SegmentTimeline>\n"
      "        </SegmentTemplate>\n"
      "      </Representation>\n"
      "    </AdaptationSet>\n"
      "    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" "
      "segmentAlignment=\"true\" startWithSAP=\"1\">\n"
      "      <Representation id=\"audio\" bandwidth=\"135000\" codecs=\"mp4a.40.2\">\n"
      "        <SegmentTemplate timescale=\"1000000\" startNumber=\"0\" "
      "initialization=\"audio/init.mp4\" media=\"audio/seg_$Number%05d$.m4s\">\n"
      "          <SegmentTimeline>\n"
      "            <S t=\"0\" d=\"4017052\"/>\n"
      "            <S d=\"3993832\"/>\n"
      "            <S d=\"4010667\"/>\n"
      "            <S d=\"2020136\"/>\n"
      "          </SegmentTimeline>\n"
      "        </SegmentTemplate>\n"
      "      </Representation>\n"
      "    </AdaptationSet>\n"
      "  </Period>\n"
      "</MPD>\n";
  CHECK_EQ_STR(b.data, want);
  cap_buf_free(&b);
}

/* Rungs whose timelines differ are not claimed aligned; a package without
 * audio has no audio set; attribute text is escaped; a whole second's
 * duration has no fraction. */
static void test_edges(void) {
  static const uint64_t other[] = {4000000, 4000000, 4000000, 1960000};
  struct cap_mpd_rep r[2] = {rep("a&b", 0, 10, 0, 0, "avc1\"x", v_dur, 4),
                             rep("low", 0, 5, 320, 180, "", other, 4)};
  struct cap_buf b;
  cap_buf_init(&b);
  cap_mpd_write(&b, 6, r, 2);
  CHECK(strstr(b.data, "segmentAlignment=\"false\"") != NULL);
  CHECK(strstr(b.data, "contentType=\"audio\"") == NULL);
  CHECK(strstr(b.data, "id=\"a&amp;b\"") != NULL);
  CHECK(strstr(b.data, "codecs=\"avc1&quot;x\"") != NULL);
  CHECK(strstr(b.data, "mediaPresentationDuration=\"PT14S\"") != NULL);
  CHECK(strstr(b.data, "minBufferTime=\"PT6S\"") != NULL);
  /* No size from ffmpeg: no width or height, and no empty codecs. */
  CHECK(strstr(b.data, "<Representation id=\"a&amp;b\" bandwidth=\"10\" codecs") != NULL);
  CHECK(strstr(b.data, "codecs=\"\"") == NULL);
  CHECK(strstr(b.data, "maxWidth=\"320\" maxHeight=\"180\"") != NULL);
  cap_buf_free(&b);
}

/* What the streams' own files say: @sar and @frameRate on video (a whole
 * rate without a denominator), @audioSamplingRate and the channel count
 * before the SegmentTemplate, as the schema orders them. */
static void test_stream_fields(void) {
  struct cap_mpd_rep r[3] = {rep("480p", 0, 1400000, 854, 480, "avc1.64001f", v_dur, 4),
                             rep("240p", 0, 400000, 426, 240, "avc1.64001e", v_dur, 4),
                             rep("audio", 1, 135000, 0, 0, "mp4a.40.2", a_dur, 4)};
  r[0].sar_w = 32, r[0].sar_h = 27, r[0].fps_num = 30000, r[0].fps_den = 1001;
  r[1].sar_w = 1, r[1].sar_h = 1, r[1].fps_num = 25, r[1].fps_den = 1;
  r[2].sample_rate = 48000, r[2].channels = 6;
  struct cap_buf b;
  cap_buf_init(&b);
  cap_mpd_write(&b, 4, r, 3);
  cap_buf_putc(&b, '\0');
  CHECK(strstr(b.data, "width=\"854\" height=\"480\" sar=\"32:27\" frameRate=\"30000/1001\" "
                       "codecs=\"avc1.64001f\">") != NULL);
  CHECK(strstr(b.data, "sar=\"1:1\" frameRate=\"25\" codecs") != NULL);
  CHECK(strstr(b.data, "bandwidth=\"135000\" audioSamplingRate=\"48000\" codecs=\"mp4a.40.2\">\n"
                       "        <AudioChannelConfiguration schemeIdUri=\"" CAP_MPD_CHANNELS_SCHEME
                       "\" value=\"6\"/>\n        <SegmentTemplate") != NULL);
  CHECK(strstr(b.data, "audioSamplingRate=\"48000\"") <
        strstr(b.data, "AudioChannelConfiguration"));
  cap_buf_free(&b);
  /* Unknown (0): left out, never written as zero. */
  r[0].fps_num = 0, r[0].sar_w = 0, r[2].channels = 0, r[2].sample_rate = 0;
  cap_buf_init(&b);
  cap_mpd_write(&b, 4, r, 1);
  cap_buf_putc(&b, '\0');
  CHECK(strstr(b.data, "frameRate") == NULL && strstr(b.data, "sar=") == NULL);
  cap_buf_free(&b);
}

static void test_codecs_without(void) {
  char out[96];
  cap_mpd_codecs_without("avc1.64001f,mp4a.40.2", "mp4a.40.2", out, sizeof(out));
  CHECK_EQ_STR(out, "avc1.64001f");
  cap_mpd_codecs_without("mp4a.40.2,hvc1.1.6.L93.B0", "mp4a.40.2", out, sizeof(out));
  CHECK_EQ_STR(out, "hvc1.1.6.L93.B0");
  cap_mpd_codecs_without("avc1.64001f,mp4a.40.2", NULL, out, sizeof(out));
  CHECK_EQ_STR(out, "avc1.64001f,mp4a.40.2");
  cap_mpd_codecs_without("", "mp4a.40.2", out, sizeof(out));
  CHECK_EQ_STR(out, "");
  /* Too long for out: left out, never cut in the middle. */
  cap_mpd_codecs_without("avc1.64001f,mp4a.40.2", "", out, 12);
  CHECK_EQ_STR(out, "avc1.64001f");
}

int main(void) {
  test_write();
  test_edges();
  test_stream_fields();
  test_codecs_without();
  return check_report();
}
