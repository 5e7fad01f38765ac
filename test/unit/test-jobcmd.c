#include "jobcmd.h"

#include "check.h"
#include "ladderspec.h"

#include <stdlib.h>
#include <string.h>

/* The index of word in argv, or -1. */
static int at(char **argv, const char *word) {
  for (int i = 0; argv[i]; i++)
    if (strcmp(argv[i], word) == 0)
      return i;
  return -1;
}

static int count(char **argv) {
  int n = 0;
  while (argv[n])
    n++;
  return n;
}

/* Every child: both allow-lists, then the server's descriptor as input. */
static void check_input(char **argv, const char *formats) {
  int p = at(argv, "-protocol_whitelist"), f = at(argv, "-format_whitelist"), i = at(argv, "-i");
  CHECK(p > 0 && f > 0 && i > p && i > f);
  if (p > 0 && f > 0 && i > 0) {
    CHECK_EQ_STR(argv[p + 1], "file");
    CHECK_EQ_STR(argv[f + 1], formats);
    CHECK_EQ_STR(argv[i + 1], "file:/dev/fd/3");
  }
}

static void test_probes(void) {
  char *preset[] = {NULL};
  struct cap_jobcmd c = {.ffmpeg = "/opt/ff/ffmpeg",
                         .ffprobe = "/opt/ff/ffprobe",
                         .input_formats = "mov,matroska",
                         .preset_args = preset,
                         .format = "mp4"};
  char **d = cap_jobcmd_probe(&c, CAP_JOBCMD_DURATION);
  CHECK_EQ_STR(d[0], "/opt/ff/ffprobe");
  CHECK(at(d, "format=duration") > 0);
  check_input(d, "mov,matroska");
  CHECK_EQ_STR(d[count(d) - 1], "file:/dev/fd/3");
  free(d);
  char **p = cap_jobcmd_probe(&c, CAP_JOBCMD_FFPROBE);
  CHECK(at(p, "-show_streams") > 0 && at(p, "json") > 0);
  check_input(p, "mov,matroska");
  free(p);
  char **x = cap_jobcmd_probe(&c, CAP_JOBCMD_DETECT);
  CHECK(at(x, "debug") == 2);
  check_input(x, "mov,matroska");
  CHECK_EQ_INT(count(x), 9);
  free(x);
}

static void test_render(void) {
  char *preset[] = {"-map", "0:v:0", "-c:v", "libx264", NULL};
  struct cap_jobcmd c = {.ffmpeg = "ffmpeg",
                         .ffprobe = "ffprobe",
                         .input_formats = "mpegts",
                         .preset_args = preset,
                         .format = "mp4"};
  char **r = cap_jobcmd_render(&c, "pipe:1");
  CHECK_EQ_STR(r[0], "ffmpeg");
  check_input(r, "mpegts");
  CHECK_EQ_INT(at(r, "-threads"), -1); /* threads 0: ffmpeg decides. */
  int n = count(r);
  CHECK_EQ_STR(r[n - 3], "-f");
  CHECK_EQ_STR(r[n - 2], "mp4");
  CHECK_EQ_STR(r[n - 1], "pipe:1");
  CHECK(at(r, "-map") > at(r, "-i"));
  CHECK_EQ_STR(r[at(r, "-progress") + 1], "pipe:4");
  free(r);

  /* Threads bound the decoder (before -i), the encoders and the filters. */
  c.threads = 3;
  r = cap_jobcmd_render(&c, "file:/tmp/x/out.mp4");
  int first = at(r, "-threads");
  CHECK(first > 0 && first < at(r, "-i"));
  CHECK_EQ_STR(r[first + 1], "3");
  int later = at(r + first + 1, "-threads") + first + 1;
  CHECK(later > at(r, "libx264"));
  CHECK_EQ_STR(r[at(r, "-filter_threads") + 1], "3");
  CHECK_EQ_STR(r[count(r) - 1], "file:/tmp/x/out.mp4");
  free(r);
}

static void test_logs(void) {
  char out[64];
  CHECK(cap_jobcmd_refused("[hls @ 0x5] Format not on whitelist 'mov,matroska'\n"));
  CHECK(!cap_jobcmd_refused("file:/dev/fd/3: Invalid data found when processing input\n"));
  cap_jobcmd_detected("[NULL @ 0x55] Opening 'file:/dev/fd/3' for reading\n"
                      "[hls @ 0x55] Format hls probed with size=2048 and score=100\n"
                      "[hls @ 0x55] Format not on whitelist 'mov'\n",
                      out, sizeof(out));
  CHECK_EQ_STR(out, "hls");
  cap_jobcmd_detected("[x] Format mov,mp4,m4a,3gp,3g2,mj2 probed with size=2048 and score=100\n",
                      out, sizeof(out));
  CHECK_EQ_STR(out, "mov,mp4,m4a,3gp,3g2,mj2");
  cap_jobcmd_detected("Format srt detected only with low score of 25, misdetection possible!\n",
                      out, sizeof(out));
  CHECK_EQ_STR(out, "srt");
  /* Nothing usable: never a fragment of someone else's text. */
  cap_jobcmd_detected("file:/dev/fd/3: Invalid argument\n", out, sizeof(out));
  CHECK_EQ_STR(out, "unknown");
  cap_jobcmd_detected("NoFormat x probed with size=1\n", out, sizeof(out));
  CHECK_EQ_STR(out, "unknown");
  cap_jobcmd_detected("Format \"<b>\" probed with size=1\n", out, sizeof(out));
  CHECK_EQ_STR(out, "b");
  /* A long name is cut to the buffer. */
  char small[4];
  cap_jobcmd_detected("Format matroska,webm probed with size=1\n", small, sizeof(small));
  CHECK_EQ_STR(small, "mat");
}

/* A ladder: one input, one filter graph splitting into each rung, per-rung
 * rates, the shared encoder arguments, keyframes at the segment length,
 * the audio once, and ffmpeg's hls muxer writing under the job's dir. */
static void test_ladder(void) {
  char *v[] = {"-c:v", "libx264", NULL}, *a[] = {"-c:a", "aac", NULL}, *d[] = {NULL};
  struct cap_ladderspec s = {.segtype = CAP_LADDER_FMP4,
                             .segment_s = 4,
                             .scale = "scale",
                             .decode_args = d,
                             .video_args = v,
                             .audio_args = a};
  struct cap_ladder_pick pick = {.nrungs = 2};
  pick.rungs[0] = (struct cap_ladder_rung){"720p", 720, "2800k", "3000k", "4200k"};
  pick.rungs[1] = (struct cap_ladder_rung){"360p", 360, "800k", "856k", "1200k"};
  char *preset[] = {NULL};
  struct cap_jobcmd c = {.ffmpeg = "ffmpeg", .input_formats = "mov", .preset_args = preset};
  char **argv = cap_jobcmd_ladder(&c, &s, &pick, 1, "/tmp/j/abc");
  check_input(argv, "mov");
  int fc = at(argv, "-filter_complex");
  CHECK(fc > at(argv, "-i"));
  if (fc > 0)
    CHECK_EQ_STR(argv[fc + 1], "[0:v:0]split=2[s0][s1];[s0]scale=-2:720[v0];[s1]scale=-2:360[v1]");
  CHECK(at(argv, "[v0]") > 0 && at(argv, "[v1]") > at(argv, "[v0]"));
  int b1 = at(argv, "-maxrate:v:1");
  CHECK(b1 > 0);
  if (b1 > 0)
    CHECK_EQ_STR(argv[b1 + 1], "856k");
  int k = at(argv, "-force_key_frames:v");
  CHECK(k > 0);
  if (k > 0)
    CHECK_EQ_STR(argv[k + 1], "expr:gte(t,n_forced*4)");
  CHECK(at(argv, "0:a:0") > 0 && at(argv, "aac") > at(argv, "0:a:0"));
  int m = at(argv, "-var_stream_map");
  CHECK(m > 0);
  if (m > 0)
    CHECK_EQ_STR(argv[m + 1],
                 "v:0,agroup:aud,name:720p v:1,agroup:aud,name:360p a:0,agroup:aud,name:audio");
  int f = at(argv, "-f");
  CHECK(f > 0 && strcmp(argv[f + 1], "hls") == 0);
  int fl = at(argv, "-hls_flags");
  CHECK(fl > 0 && strcmp(argv[fl + 1], "independent_segments+temp_file") == 0);
  CHECK(at(argv, "event") > 0 && at(argv, "fmp4") > 0 && at(argv, "init.mp4") > 0);
  int sf = at(argv, "-hls_segment_filename");
  CHECK(sf > 0 && strcmp(argv[sf + 1], "/tmp/j/abc/%v/seg_%05d.m4s") == 0);
  CHECK_EQ_STR(argv[count(argv) - 1], "/tmp/j/abc/%v/index.m3u8");
  free(argv);
  cap_jobcmd_release(&c);
  /* One rung, no audio, MPEG-TS: no split, no audio group, no init file. */
  s.segtype = CAP_LADDER_TS;
  pick.nrungs = 1;
  argv = cap_jobcmd_ladder(&c, &s, &pick, 0, "/d");
  fc = at(argv, "-filter_complex");
  CHECK(fc > 0 && strcmp(argv[fc + 1], "[0:v:0]scale=-2:720[v0]") == 0);
  m = at(argv, "-var_stream_map");
  CHECK(m > 0 && strcmp(argv[m + 1], "v:0,name:720p") == 0);
  CHECK(at(argv, "0:a:0") < 0 && at(argv, "init.mp4") < 0 && at(argv, "mpegts") > 0);
  sf = at(argv, "-hls_segment_filename");
  CHECK(sf > 0 && strcmp(argv[sf + 1], "/d/%v/seg_%05d.ts") == 0);
  free(argv);
  cap_jobcmd_release(&c);
}

int main(void) {
  test_probes();
  test_ladder();
  test_render();
  test_logs();
  return check_report();
}
