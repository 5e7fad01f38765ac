#include "jobcmd.h"

#include "alloc.h"

#include <stdio.h>
#include <string.h>

#define INPUT           "file:/dev/fd/3"
#define INPUT_PROTOCOLS "file"

static size_t push(char **argv, size_t a, const char *const *words) {
  for (size_t i = 0; words[i]; i++)
    argv[a++] = (char *)words[i];
  return a;
}

/* Appends the input options every child gets: the allow-lists, then the
 * input itself. */
static size_t input_args(const struct cap_jobcmd *c, char **argv, size_t a) {
  const char *const in[] = {"-protocol_whitelist",
                            INPUT_PROTOCOLS,
                            "-format_whitelist",
                            c->input_formats,
                            "-i",
                            INPUT,
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
  const char *const *opts = kind == CAP_JOBCMD_FFPROBE    ? ffprobe
                            : kind == CAP_JOBCMD_DURATION ? duration
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
