#ifndef CAP_LADDERSPEC_H
#define CAP_LADDERSPEC_H

#include <stddef.h>

struct cJSON;

/* What a multi-output (ladder) preset declares: its package (HLS, or DASH
 * and HLS over the same CMAF segments), the
 * segment type and length, the rungs, and the encoder arguments shared by
 * every video rung and by the one audio rendition.  It stays data: the
 * server builds ffmpeg's command line from it (jobcmd.c), and no field a
 * client sends ever reaches it. */

enum cap_ladder_segtype { CAP_LADDER_FMP4 = 0, CAP_LADDER_TS = 1 };

/* What the package's readers load: HLS playlists, or those and a DASH MPD
 * (only over fMP4 segments, which both describe). */
enum cap_ladder_package { CAP_LADDER_HLS = 0, CAP_LADDER_DASH = 1 };

#define CAP_LADDER_RUNGS_MAX 8
#define CAP_LADDER_NAME_MAX  31

struct cap_ladder_rung {
  char name[CAP_LADDER_NAME_MAX + 1]; /* Also its directory under the prefix. */
  int height;
  char bitrate[16], maxrate[16], bufsize[16]; /* ffmpeg rates, "2800k". */
};

struct cap_ladderspec {
  enum cap_ladder_package package;
  enum cap_ladder_segtype segtype;
  int segment_s;
  char *scale; /* The scaling filter: "scale", "scale_cuda" or "scale_npp". */
  char **decode_args, **video_args, **audio_args;     /* NULL-terminated. */
  struct cap_ladder_rung rungs[CAP_LADDER_RUNGS_MAX]; /* Highest first. */
  size_t nrungs;
  char *segment_cache_control, *playlist_cache_control;
};

/* The rungs a source of height src_h gets: those not above it (a ladder
 * never upscales).  When none fits, the lowest rung is kept, scaled to the
 * source's own height (rounded down to even) and named after it. */
struct cap_ladder_pick {
  struct cap_ladder_rung rungs[CAP_LADDER_RUNGS_MAX];
  size_t nrungs;
  const char *dropped[CAP_LADDER_RUNGS_MAX]; /* Names of rungs left out; borrowed from the spec. */
  size_t ndropped;
};

/* Parses the ladder fields of preset o into a new spec the caller frees
 * with cap_ladderspec_free.  Returns 0 or -EINVAL with the reason in err. */
int cap_ladderspec_parse(const struct cJSON *o, struct cap_ladderspec **out, char *err,
                         size_t errlen);
/* Returns a deep copy of s (a job keeps its own). */
struct cap_ladderspec *cap_ladderspec_dup(const struct cap_ladderspec *s);
void cap_ladderspec_free(struct cap_ladderspec *s);
/* Fills pick with the rungs for a source src_h lines high (src_h > 0). */
void cap_ladderspec_pick(const struct cap_ladderspec *s, int src_h, struct cap_ladder_pick *pick);
/* The segment files' extension: "m4s" or "ts". */
const char *cap_ladderspec_segext(const struct cap_ladderspec *s);

#endif
