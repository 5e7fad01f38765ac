#include "jobcmd.h"

#include "alloc.h"
#include "buf.h"
#include "ladderspec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INPUT           "file:/dev/fd/3"
#define INPUT_PROTOCOLS "file"
#define URL_PROTOCOLS   "http,tcp"

static size_t push(char **argv, size_t a, const char *const *words) {
  for (size_t i = 0; words[i]; i++)
    argv[a++] = (char *)words[i];
  return a;
}

/* Appends the input options every child gets: the allow-lists, then the
 * input itself. */
static size_t input_args(const struct cap_jobcmd *c, char **argv, size_t a) {
  /* A streamed input is the only URL: http for the endpoint and the tcp
   * under it, nothing that could fetch elsewhere (no https, no file).
   * The sandbox lets the child connect to that one port only. */
  const char *const in[] = {"-protocol_whitelist",
                            c->input_url ? URL_PROTOCOLS : INPUT_PROTOCOLS,
                            "-format_whitelist",
                            c->input_formats,
                            "-i",
                            c->input_url ? c->input_url : INPUT,
                            NULL};
  return push(argv, a, in);
}

char **cap_jobcmd_probe(const struct cap_jobcmd *c, enum cap_jobcmd_probe kind) {
  static const char *const ffprobe[] = {
      "-v", "error", "-print_format", "json", "-show_format", "-show_streams", NULL};
  static const char *const duration[] = {"-v",
                                         "error",
                                         "-show_entries",
                                         "format=duration",
                                         "-of",
                                         "default=noprint_wrappers=1:nokey=1",
                                         NULL};
  /* The debug log names the detected format just before the refusal, so
   * this child reads no more of the input than the refused one did. */
  static const char *const detect[] = {"-v", "debug", NULL};
  /* A ladder drops the rungs above the source's height, and maps audio
   * only when there is some. */
  static const char *const streams[] = {
      "-v",
      "error",
      "-show_entries",
      "format=duration:stream=codec_type,width,height:stream_side_data=rotation",
      "-of",
      "json",
      NULL};
  const char *const *opts = kind == CAP_JOBCMD_FFPROBE    ? ffprobe
                            : kind == CAP_JOBCMD_DURATION ? duration
                            : kind == CAP_JOBCMD_STREAMS  ? streams
                                                          : detect;
  char **argv = xcalloc(24, sizeof(char *));
  size_t a = 0;
  argv[a++] = (char *)c->ffprobe;
  a = push(argv, a, opts);
  input_args(c, argv, a);
  return argv;
}

char **cap_jobcmd_render(struct cap_jobcmd *c, const char *out_arg) {
  static const char *const head[] = {"-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
                                     "-progress",    "pipe:4",   "-y",       NULL};
  size_t nargs = 0;
  while (c->preset_args[nargs])
    nargs++;
  char **argv = xcalloc(nargs + 32, sizeof(char *));
  size_t a = 0;
  argv[a++] = (char *)c->ffmpeg;
  a = push(argv, a, head);
  snprintf(c->threads_arg, sizeof(c->threads_arg), "%d", c->threads);
  if (c->threads > 0) {
    argv[a++] = "-threads"; /* The decoder's. */
    argv[a++] = c->threads_arg;
  }
  a = input_args(c, argv, a);
  for (size_t i = 0; i < nargs; i++)
    argv[a++] = c->preset_args[i];
  if (c->threads > 0) {
    const char *const enc[] = {"-threads", c->threads_arg, "-filter_threads", c->threads_arg, NULL};
    a = push(argv, a, enc); /* The encoders' and the filters'. */
  }
  const char *const tail[] = {"-f", c->format, out_arg, NULL};
  push(argv, a, tail);
  return argv;
}

/* Keeps a string the ladder's argv points at until cap_jobcmd_release. */
static char *own(struct cap_jobcmd *c, struct cap_buf *b) {
  c->owned = xrealloc(c->owned, (c->nowned + 1) * sizeof(char *));
  c->owned[c->nowned] = cap_buf_steal(b);
  return c->owned[c->nowned++];
}

__attribute__((format(printf, 2, 3))) static char *ownf(struct cap_jobcmd *c, const char *fmt,
                                                        ...) {
  struct cap_buf b;
  va_list ap;
  char tmp[512];
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  cap_buf_init(&b);
  cap_buf_puts(&b, tmp);
  return own(c, &b);
}

/* "[0:v:0]split=N[s0]...;[s0]scale=-2:H[v0];...": one decode feeds every rung. */
static char *filter_graph(struct cap_jobcmd *c, const struct cap_ladderspec *s,
                          const struct cap_ladder_pick *pick) {
  struct cap_buf b;
  cap_buf_init(&b);
  if (pick->nrungs == 1) {
    cap_buf_printf(&b, "[0:v:0]%s=-2:%d[v0]", s->scale, pick->rungs[0].height);
    return own(c, &b);
  }
  cap_buf_printf(&b, "[0:v:0]split=%zu", pick->nrungs);
  for (size_t i = 0; i < pick->nrungs; i++)
    cap_buf_printf(&b, "[s%zu]", i);
  for (size_t i = 0; i < pick->nrungs; i++)
    cap_buf_printf(&b, ";[s%zu]%s=-2:%d[v%zu]", i, s->scale, pick->rungs[i].height, i);
  return own(c, &b);
}

static char *stream_map(struct cap_jobcmd *c, const struct cap_ladder_pick *pick, int audio) {
  struct cap_buf b;
  cap_buf_init(&b);
  for (size_t i = 0; i < pick->nrungs; i++)
    cap_buf_printf(&b, "%sv:%zu,%sname:%s", i ? " " : "", i, audio ? "agroup:aud," : "",
                   pick->rungs[i].name);
  if (audio)
    cap_buf_puts(&b, " a:0,agroup:aud,name:audio");
  return own(c, &b);
}

/* Appends the per-rung maps and rates, then the arguments every video
 * rung shares, and the keyframe rule that aligns them. */
static size_t video_args(struct cap_jobcmd *c, char **argv, size_t a,
                         const struct cap_ladderspec *s, const struct cap_ladder_pick *pick) {
  for (size_t i = 0; i < pick->nrungs; i++) {
    argv[a++] = "-map";
    argv[a++] = ownf(c, "[v%zu]", i);
    argv[a++] = ownf(c, "-b:v:%zu", i);
    argv[a++] = (char *)pick->rungs[i].bitrate;
    argv[a++] = ownf(c, "-maxrate:v:%zu", i);
    argv[a++] = (char *)pick->rungs[i].maxrate;
    argv[a++] = ownf(c, "-bufsize:v:%zu", i);
    argv[a++] = (char *)pick->rungs[i].bufsize;
  }
  a = push(argv, a, (const char *const *)s->video_args);
  argv[a++] = "-force_key_frames:v";
  argv[a++] = ownf(c, "expr:gte(t,n_forced*%d)", s->segment_s);
  return a;
}

static size_t hls_args(struct cap_jobcmd *c, char **argv, size_t a, const struct cap_ladderspec *s,
                       const struct cap_ladder_pick *pick, int audio, const char *dir) {
  const char *ext = cap_ladderspec_segext(s);
  const char *const head[] = {"-f", "hls", "-hls_time", ownf(c, "%d", s->segment_s),
                              /* EVENT: ffmpeg rewrites each playlist after every
                               * segment, which is how we learn a segment is whole. */
                              "-hls_playlist_type", "event", "-hls_segment_type",
                              s->segtype == CAP_LADDER_TS ? "mpegts" : "fmp4", "-hls_flags",
                              "independent_segments+temp_file", "-hls_segment_filename",
                              ownf(c, "%s/%%v/seg_%%05d.%s", dir, ext), "-master_pl_name",
                              CAP_JOBCMD_FFMASTER, "-var_stream_map", stream_map(c, pick, audio),
                              NULL};
  a = push(argv, a, head);
  if (s->segtype == CAP_LADDER_FMP4) {
    argv[a++] = "-hls_fmp4_init_filename";
    argv[a++] = "init.mp4";
  }
  argv[a++] = ownf(c, "%s/%%v/index.m3u8", dir);
  return a;
}

static size_t count_args(char *const *v) {
  size_t n = 0;
  while (v && v[n])
    n++;
  return n;
}

char **cap_jobcmd_ladder(struct cap_jobcmd *c, const struct cap_ladderspec *s,
                         const struct cap_ladder_pick *pick, int audio, const char *dir) {
  static const char *const head[] = {"-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
                                     "-progress",    "pipe:4",   "-y",       NULL};
  size_t n = 64 + 8 * pick->nrungs + count_args(s->decode_args) + count_args(s->video_args) +
             count_args(s->audio_args);
  char **argv = xcalloc(n, sizeof(char *));
  size_t a = 0;
  argv[a++] = (char *)c->ffmpeg;
  a = push(argv, a, head);
  snprintf(c->threads_arg, sizeof(c->threads_arg), "%d", c->threads);
  if (c->threads > 0) {
    argv[a++] = "-threads";
    argv[a++] = c->threads_arg;
  }
  a = push(argv, a, (const char *const *)s->decode_args);
  a = input_args(c, argv, a);
  argv[a++] = "-filter_complex";
  argv[a++] = filter_graph(c, s, pick);
  a = video_args(c, argv, a, s, pick);
  if (audio) {
    argv[a++] = "-map";
    argv[a++] = "0:a:0";
    a = push(argv, a, (const char *const *)s->audio_args);
  }
  if (c->threads > 0) {
    const char *const enc[] = {"-threads", c->threads_arg, "-filter_threads", c->threads_arg, NULL};
    a = push(argv, a, enc);
  }
  hls_args(c, argv, a, s, pick, audio, dir);
  return argv;
}

void cap_jobcmd_release(struct cap_jobcmd *c) {
  for (size_t i = 0; i < c->nowned; i++)
    free(c->owned[i]);
  free(c->owned);
  c->owned = NULL;
  c->nowned = 0;
}

int cap_jobcmd_refused(const char *log) {
  return strstr(log, "Format not on whitelist") != NULL;
}

/* Copies the name before end (it follows "Format ") into out; returns its
 * length, 0 when the text there is not such a line. */
static size_t name_before(const char *log, const char *end, char *out, size_t n) {
  const char *start = end;
  size_t k = 0;
  while (start > log && start[-1] != ' ')
    start--;
  if (start - log < 7 || strncmp(start - 7, "Format ", 7) != 0)
    return 0;
  /* "Format" is a word of its own: at a line's start or after "] ". */
  if (start - 7 > log && start[-8] != ' ' && start[-8] != '\n')
    return 0;
  for (const char *p = start; p < end && k + 1 < n; p++)
    if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == ',')
      out[k++] = *p;
  out[k] = '\0';
  return k;
}

void cap_jobcmd_detected(const char *log, char *out, size_t n) {
  static const char *const marks[] = {" probed with size=", " detected only with low score", NULL};
  for (size_t m = 0; marks[m]; m++) {
    const char *end = strstr(log, marks[m]);
    if (end && name_before(log, end, out, n) > 0)
      return;
  }
  snprintf(out, n, "unknown");
}
