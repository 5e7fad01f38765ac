#ifndef CAP_JOBCMD_H
#define CAP_JOBCMD_H

#include <stddef.h>

/* The command lines of a job's children, and what their logs say about a
 * refused input.  Every child reads its input as file:/dev/fd/3 (the
 * descriptor the server opened) under the same two allow-lists, so that
 * nested references (playlists, concat scripts) reach nothing else. */

/* What a job's command lines are built from.  The strings are borrowed;
 * threads_arg is the builder's scratch space for the -threads value. */
struct cap_jobcmd {
  const char *ffmpeg, *ffprobe;
  const char *input_formats; /* -format_whitelist */
  char *const *preset_args;  /* NULL-terminated. */
  const char *format;        /* The output muxer (-f). */
  int threads;               /* 0: ffmpeg decides. */
  char threads_arg[16];
};

enum cap_jobcmd_probe {
  CAP_JOBCMD_DURATION, /* The input's duration, before a render. */
  CAP_JOBCMD_FFPROBE,  /* The ffprobe capability: format and streams as JSON. */
  CAP_JOBCMD_DETECT,   /* Which format a refused input has (a debug log). */
};

/* Returns the argv of an ffprobe child of the given kind, NULL-terminated.
 * The caller frees the array (not its strings, which are c's or static). */
char **cap_jobcmd_probe(const struct cap_jobcmd *c, enum cap_jobcmd_probe kind);
/* Returns the render's argv writing to out_arg ("pipe:1" or "file:PATH"),
 * NULL-terminated; freed as for cap_jobcmd_probe (out_arg is borrowed). */
char **cap_jobcmd_render(struct cap_jobcmd *c, const char *out_arg);
/* Returns 1 when a child's log says the input's format is not on the
 * allow-list. */
int cap_jobcmd_refused(const char *log);
/* Copies the format a CAP_JOBCMD_DETECT child's log names ("Format hls
 * probed with size=...") into out, or "unknown". */
void cap_jobcmd_detected(const char *log, char *out, size_t n);

#endif
