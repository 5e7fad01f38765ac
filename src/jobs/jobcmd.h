#ifndef CAP_JOBCMD_H
#define CAP_JOBCMD_H

#include <stddef.h>

struct cap_ladderspec;
struct cap_ladder_pick;

/* The command lines of a job's children, and what their logs say about a
 * refused input.  Every child reads its input as file:/dev/fd/3 (the
 * descriptor the server opened), or from the server's loopback input
 * endpoint, under the same two allow-lists, so that nested references
 * (playlists, concat scripts) reach nothing else. */

/* What a job's command lines are built from.  The strings are borrowed;
 * threads_arg is the builder's scratch space for the -threads value. */
struct cap_jobcmd {
  const char *ffmpeg, *ffprobe;
  const char *input_formats; /* -format_whitelist */
  /* A streamed input's loopback URL (read over http,tcp), or NULL for the
   * descriptor file:/dev/fd/3 (read over file). */
  const char *input_url;
  char *const *preset_args;  /* NULL-terminated. */
  const char *format;        /* The output muxer (-f). */
  int threads;               /* 0: ffmpeg decides. */
  char threads_arg[16];
  /* Strings a ladder's command line owns; cap_jobcmd_release frees them. */
  char **owned;
  size_t nowned;
};

enum cap_jobcmd_probe {
  CAP_JOBCMD_DURATION, /* The input's duration, before a render. */
  CAP_JOBCMD_FFPROBE,  /* The ffprobe capability: format and streams as JSON. */
  CAP_JOBCMD_DETECT,   /* Which format a refused input has (a debug log). */
  CAP_JOBCMD_STREAMS,  /* Duration and stream shapes as JSON, before a ladder. */
};

/* Returns the argv of an ffprobe child of the given kind, NULL-terminated.
 * The caller frees the array (not its strings, which are c's or static). */
char **cap_jobcmd_probe(const struct cap_jobcmd *c, enum cap_jobcmd_probe kind);
/* Returns the render's argv writing to out_arg ("pipe:1" or "file:PATH"),
 * NULL-terminated; freed as for cap_jobcmd_probe (out_arg is borrowed). */
char **cap_jobcmd_render(struct cap_jobcmd *c, const char *out_arg);
/* Returns a ladder's argv: one decode, a split into pick's rungs (each
 * scaled, encoded and keyframed at the segment length so that players can
 * switch between them), the audio once when audio is 1, and ffmpeg's hls
 * muxer writing every rendition under dir/<name>/ (dir/audio/ for the
 * audio) with atomic renames.  Freed as for cap_jobcmd_probe, plus
 * cap_jobcmd_release(c) for the strings it built. */
char **cap_jobcmd_ladder(struct cap_jobcmd *c, const struct cap_ladderspec *s,
                         const struct cap_ladder_pick *pick, int audio, const char *dir);
/* Frees the strings cap_jobcmd_ladder built. */
void cap_jobcmd_release(struct cap_jobcmd *c);
/* The file name of ffmpeg's own master playlist in a ladder's directory
 * (read for each rendition's resolution and codecs, never stored). */
#define CAP_JOBCMD_FFMASTER "ffmaster.m3u8"

/* Returns 1 when a child's log says the input's format is not on the
 * allow-list. */
int cap_jobcmd_refused(const char *log);
/* Copies the format a CAP_JOBCMD_DETECT child's log names ("Format hls
 * probed with size=...") into out, or "unknown". */
void cap_jobcmd_detected(const char *log, char *out, size_t n);

#endif
