#ifndef CAP_PRESET_H
#define CAP_PRESET_H

#include <stddef.h>

struct cap_ladderspec;

/* Presets are the only way arguments reach ffmpeg: each names an output
 * muxer, the ffmpeg output arguments, the resource class whose pool runs
 * it, whether its output can be streamed to a pipe, and a time limit. */
struct cap_preset {
  char *name;
  char *description;
  char *cls;        /* Resource class: "cpu", "nvenc", ... */
  char *format;     /* ffmpeg muxer (-f). */
  char *ext;        /* Output file extension. */
  char *hw_encoder; /* Hardware encoder to test-encode with at start-up, or NULL. */
  int streamable;
  int timeout_s;
  char **args;
  size_t nargs;
  char **encoders;
  size_t nencoders;
  int available;
  char *unavailable_reason; /* Set when !available. */
  /* Overrides of the class's limits (class_limits); -1 keeps the class's. */
  int threads;
  int nice;
  int memory_mb;
  /* Demuxers its inputs may have (comma-separated), or NULL for the
   * server's input_formats. */
  char *input_formats;
  /* How an S3/R2 input is read: 1 stream, 0 download, -1 as the server's
   * input_mode says. */
  int input_stream;
  /* The stored object's Content-Type: the preset's "content_type", or the
   * default for its ext (cap_preset_content_type); never NULL. */
  char *content_type;
  /* The stored object's Cache-Control, or NULL to send none. */
  char *cache_control;
  /* A multi-output preset's ladder (its "package" field), or NULL for a
   * preset that writes one object. */
  struct cap_ladderspec *ladder;
};

struct cap_presets {
  struct cap_preset *v;
  size_t n;
};

/* The presets compiled in from packaging/presets.json. */
extern const char cap_preset_builtin_json[];

/* Parses a presets JSON object ({"name":{...},...}) into a new set the
 * caller frees with cap_preset_set_free.  Returns 0 or -EINVAL with the
 * reason in err.  Every preset starts out available. */
int cap_preset_parse(const char *json, size_t len, struct cap_presets **out, char *err,
                     size_t errlen);
/* Reads and parses a presets file; NULL path means the built-in set. */
int cap_preset_load(const char *path, struct cap_presets **out, char *err, size_t errlen);
void cap_preset_set_free(struct cap_presets *set);
/* Returns the preset called name, or NULL. */
const struct cap_preset *cap_preset_find(const struct cap_presets *set, const char *name);
/* Returns the media type an output with extension ext is stored under
 * when its preset names none ("video/mp4" for "mp4", any case), and
 * "application/octet-stream" for an extension not in the table. */
const char *cap_preset_content_type(const char *ext);
/* Marks a preset unavailable with a reason (copied). */
void cap_preset_mark_unavailable(struct cap_preset *p, const char *reason);

#endif
