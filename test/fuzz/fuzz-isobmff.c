/* libFuzzer target for isobmff.c: the fMP4 files a ladder stores are an
 * encode of a client's file, and the manifests are written from what this
 * parser reads of them.  The input is read as an init segment and as a
 * media segment's head, with the track it gave or a plain one. */
#include "isobmff.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct cap_isobmff_track t;
  uint32_t num = 0, den = 0;
  if (cap_isobmff_init(data, size, &t) == 0) {
    /* What it says must be usable as it is. */
    if (t.timescale == 0 || (t.video == t.audio) || t.sar_w == 0 || t.sar_h == 0)
      abort();
  } else {
    t = (struct cap_isobmff_track){.video = 1, .timescale = 30000, .sar_w = 1, .sar_h = 1};
  }
  if (cap_isobmff_frame_rate(data, size, &t, &num, &den) == 0 && (num == 0 || den == 0))
    abort();
  return 0;
}
