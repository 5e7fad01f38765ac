#include "m3u8.h"

#include "check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char media[] = "#EXTM3U\n"
                            "#EXT-X-VERSION:7\n"
                            "#EXT-X-TARGETDURATION:4\n"
                            "#EXT-X-MEDIA-SEQUENCE:0\n"
                            "#EXT-X-PLAYLIST-TYPE:EVENT\n"
                            "#EXT-X-MAP:URI=\"init_0.mp4\"\n"
                            "#EXTINF:4.000000,\n"
                            "seg_00000.m4s\n"
                            "#EXTINF:3.5,\r\n"
                            "seg_00001.m4s\r\n"
                            "#EXT-X-ENDLIST\n";

struct seen {
  size_t n, first;
  char last[64];
  double dur;
};

static void on_seg(void *arg, size_t index, const char *uri, double duration) {
  struct seen *s = arg;
  if (s->n++ == 0)
    s->first = index;
  snprintf(s->last, sizeof(s->last), "%s", uri);
  s->dur += duration;
}

static void test_media(void) {
  struct cap_m3u8_media info;
  struct seen s = {0};
  CHECK_EQ_INT(cap_m3u8_parse_media(media, strlen(media), 0, on_seg, &s, &info), 0);
  CHECK_EQ_INT(info.nsegs, 2);
  CHECK_EQ_INT(s.n, 2);
  CHECK_EQ_STR(s.last, "seg_00001.m4s");
  CHECK(s.dur > 7.49 && s.dur < 7.51);
  CHECK_EQ_STR(info.map, "init_0.mp4");
  CHECK_EQ_INT(info.endlist, 1);
  CHECK_EQ_INT(info.version, 7);
  /* From an index on: only the new ones. */
  memset(&s, 0, sizeof(s));
  CHECK_EQ_INT(cap_m3u8_parse_media(media, strlen(media), 1, on_seg, &s, &info), 0);
  CHECK_EQ_INT(s.n, 1);
  CHECK_EQ_INT(s.first, 1);
  /* A playlist still being written: no ENDLIST. */
  CHECK_EQ_INT(cap_m3u8_parse_media(media, strlen(media) - 15, 0, on_seg, &s, &info), 0);
  CHECK_EQ_INT(info.endlist, 0);
}

/* Anything that could name a file outside the rendition's directory, or
 * is not a playlist at all, is refused. */
static void test_media_refused(void) {
  static const char *const bad[] = {"not a playlist\n",
                                    "#EXTM3U\n#EXTINF:4,\n../../etc/passwd\n",
                                    "#EXTM3U\n#EXTINF:4,\n/abs.m4s\n",
                                    "#EXTM3U\n#EXTINF:4,\nhttp://x/y.m4s\n",
                                    "#EXTM3U\n#EXTINF:4,\n.hidden\n",
                                    "#EXTM3U\nseg_without_extinf.m4s\n",
                                    "#EXTM3U\n#EXT-X-MAP:URI=\"../init.mp4\"\n",
                                    "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\n",
                                    "#EXTM3U\n#EXT-X-VERSION:x\n",
                                    "#EXTM3U\n#EXT-X-VERSION:7junk\n",
                                    NULL};
  struct cap_m3u8_media info;
  struct seen s = {0};
  for (size_t i = 0; bad[i]; i++)
    CHECK_EQ_INT(cap_m3u8_parse_media(bad[i], strlen(bad[i]), 0, on_seg, &s, &info), -EINVAL);
  CHECK_EQ_INT(s.n, 0);
  /* A line longer than any ffmpeg writes. */
  char *big = malloc(5000);
  memcpy(big, "#EXTM3U\n", 8);
  memset(big + 8, 'a', 4990);
  big[4998] = '\n';
  CHECK_EQ_INT(cap_m3u8_parse_media(big, 4999, 0, on_seg, &s, &info), -EINVAL);
  free(big);
}

static void test_variant_info(void) {
  static const char master[] =
      "#EXTM3U\n#EXT-X-VERSION:7\n"
      "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"group_aud\",NAME=\"audio_2\",URI=\"audio/index.m3u8\"\n"
      "#EXT-X-STREAM-INF:BANDWIDTH=3220800,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\","
      "AUDIO=\"group_aud\"\n720p/index.m3u8\n\n"
      "#EXT-X-STREAM-INF:BANDWIDTH=140800,CODECS=\"mp4a.40.2\",AUDIO=\"group_aud\"\n"
      "audio/index.m3u8\n";
  int w = -1, h = -1;
  char codecs[64];
  CHECK_EQ_INT(cap_m3u8_variant_info(master, strlen(master), "720p/index.m3u8", &w, &h, codecs,
                                     sizeof(codecs)),
               0);
  CHECK_EQ_INT(w, 1280);
  CHECK_EQ_INT(h, 720);
  CHECK_EQ_STR(codecs, "avc1.64001f,mp4a.40.2");
  CHECK_EQ_INT(cap_m3u8_variant_info(master, strlen(master), "audio/index.m3u8", &w, &h, codecs,
                                     sizeof(codecs)),
               0);
  CHECK_EQ_INT(w, 0);
  CHECK_EQ_STR(codecs, "mp4a.40.2");
  CHECK_EQ_INT(cap_m3u8_variant_info(master, strlen(master), "480p/index.m3u8", &w, &h, codecs,
                                     sizeof(codecs)),
               -ENOENT);
}

static void test_to_vod(void) {
  size_t n;
  char *v = cap_m3u8_to_vod(media, strlen(media), &n);
  CHECK_EQ_INT(n, strlen(v));
  CHECK(strstr(v, "#EXT-X-PLAYLIST-TYPE:VOD\n") != NULL);
  CHECK(strstr(v, "EVENT") == NULL);
  CHECK(strstr(v, "seg_00001.m4s\r\n#EXT-X-ENDLIST\n") != NULL);
  CHECK_EQ_INT(n, strlen(media) - 2);
  free(v);
}

static void test_master(void) {
  struct cap_buf b;
  struct cap_m3u8_variant v[2] = {
      {"720p/index.m3u8", 3000000, 2500000, 1280, 720, "avc1.64001f,mp4a.40.2", 30000, 1001},
      {"360p/index.m3u8", 900000, 800000, 640, 360, "avc1.64001e,mp4a.40.2", 0, 0}};
  cap_buf_init(&b);
  cap_m3u8_write_master(&b, 7, v, 2, "audio/index.m3u8", 2);
  cap_buf_putc(&b, '\0');
  /* A frame rate only where it is known; the audio's channel count. */
  CHECK_EQ_STR(b.data,
               "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"
               "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"audio\",DEFAULT=YES,"
               "AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\"\n"
               "#EXT-X-STREAM-INF:BANDWIDTH=3000000,AVERAGE-BANDWIDTH=2500000,RESOLUTION=1280x720,"
               "FRAME-RATE=29.970,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aud\"\n720p/index.m3u8\n"
               "#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=800000,RESOLUTION=640x360,"
               "CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"aud\"\n360p/index.m3u8\n");
  cap_buf_free(&b);
  /* Channels unknown: no CHANNELS. */
  cap_buf_init(&b);
  cap_m3u8_write_master(&b, 7, v, 1, "audio/index.m3u8", 0);
  cap_buf_putc(&b, '\0');
  CHECK(strstr(b.data, "AUTOSELECT=YES,URI=") != NULL && strstr(b.data, "CHANNELS") == NULL);
  cap_buf_free(&b);
  /* Without audio: no group, no AUDIO attribute. */
  cap_buf_init(&b);
  cap_m3u8_write_master(&b, 6, v, 1, NULL, 0);
  cap_buf_putc(&b, '\0');
  CHECK(strstr(b.data, "EXT-X-MEDIA") == NULL && strstr(b.data, "AUDIO=") == NULL);
  CHECK(strstr(b.data, "#EXT-X-VERSION:6\n") != NULL);
  cap_buf_free(&b);
}

int main(void) {
  test_media();
  test_media_refused();
  test_variant_info();
  test_to_vod();
  test_master();
  return check_report();
}
