#ifndef CAP_FFCAPS_H
#define CAP_FFCAPS_H

#include "preset.h"
#include "sandbox.h"

#include <uv.h>

/* Finds out which presets this machine's ffmpeg can run: it lists the
 * encoders and muxers once, and test-encodes a few frames with each
 * hardware encoder a preset names (NVENC is listed by Debian's ffmpeg even
 * where no GPU is present).  Presets that cannot run are marked
 * unavailable with a reason. */

typedef void (*cap_ffcaps_cb)(struct cap_presets *set, int status, void *arg);

/* Probes with the ffmpeg binary at path and marks set; calls cb(set, 0 or
 * a UV_E* code when ffmpeg could not be run at all, arg) when done.  set
 * stays the caller's. */
int cap_ffcaps_probe(uv_loop_t *loop, const char *ffmpeg, const struct cap_sandbox *sandbox,
                     struct cap_presets *set, cap_ffcaps_cb cb, void *arg);

#endif
